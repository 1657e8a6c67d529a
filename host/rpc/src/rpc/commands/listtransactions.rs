//! `listtransactions`: every transaction that pays or spends the wallet's coins.

use serde_json::json;

use super::{Command, CommandFuture, Ctx, command};
use crate::rpc::params::Params;
use crate::wallet::TxEntry;

pub const LISTTRANSACTIONS: Command = Command::new("listtransactions", &[], run);

fn run(ctx: Ctx, _p: Params) -> CommandFuture {
    command(async move {
        let txs: Vec<_> = ctx
            .node
            .wallet
            .list_transactions()
            .iter()
            .map(tx_json)
            .collect();
        Ok(json!({"transactions": txs}))
    })
}

/// A `listtransactions` entry.
pub fn tx_json(t: &TxEntry) -> serde_json::Value {
    let tx = &t.tx;
    serde_json::json!({
        "hash": tx.compute_txid().to_string(),
        "rawtx": bitcoin::consensus::encode::serialize_hex(tx.as_ref()),
        "blockheight": t.blockheight.unwrap_or(0),
        "txindex": t.txindex.unwrap_or(0),
        "locktime": tx.lock_time.to_consensus_u32(),
        "version": tx.version.0,
        "inputs": tx.input.iter().map(|i| serde_json::json!({
            "txid": i.previous_output.txid.to_string(),
            "index": i.previous_output.vout,
            "sequence": i.sequence.0,
        })).collect::<Vec<_>>(),
        "outputs": tx.output.iter().enumerate().map(|(n, o)| serde_json::json!({
            "index": n,
            "amount_msat": o.value.to_sat() * 1000,
            "scriptPubKey": fulgur_base::hex(o.script_pubkey.as_bytes()),
        })).collect::<Vec<_>>(),
    })
}
