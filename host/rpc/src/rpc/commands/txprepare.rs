//! `txprepare outputs [feerate] [minconf] [utxos]`, `txsend txid`, `txdiscard txid`: build
//! a transaction with its coins reserved, then sign and broadcast it, or drop it.

use std::str::FromStr;

use bitcoin::Txid;
use fulgur_protocol::RpcError;
use serde_json::{Value, json};

use super::withdraw::minconf;
use super::{Command, CommandFuture, Ctx, command};
use crate::rpc::onchain::{self, wallet_error};
use crate::rpc::params::{Params, opt, req};
use crate::wallet::SpendRequest;

pub const TXPREPARE: Command = Command::new(
    "txprepare",
    &[req("outputs"), opt("feerate"), opt("minconf"), opt("utxos")],
    run_prepare,
);

pub const TXSEND: Command = Command::new("txsend", &[req("txid")], run_send);

pub const TXDISCARD: Command = Command::new("txdiscard", &[req("txid")], run_discard);

fn bad_outputs() -> RpcError {
    RpcError::invalid_params(
        "outputs: should be an array of {address: amount} objects: invalid token",
    )
}

/// `outputs` (`[{address: amount}, ...]`), `feerate`, `minconf` and `utxos`, as
/// `txprepare` and `multiwithdraw` take them.
pub(super) fn spend_request(
    p: &Params,
    wallet: &crate::wallet::Wallet,
) -> Result<SpendRequest, RpcError> {
    let Some(Value::Array(items)) = p.get("outputs") else {
        return Err(bad_outputs());
    };
    if items.is_empty() {
        return Err(bad_outputs());
    }
    let mut outputs = vec![];
    for item in items {
        let Value::Object(m) = item else {
            return Err(bad_outputs());
        };
        if m.len() != 1 {
            return Err(bad_outputs());
        }
        for (addr, amount) in m {
            let a = onchain::address("outputs", addr, wallet.network())?;
            outputs.push((a.script_pubkey(), onchain::sat_or_all("outputs", amount)?));
        }
    }
    Ok(SpendRequest {
        outputs,
        feerate_perkw: onchain::feerate(p.get("feerate"), wallet.fees().as_ref())?,
        minconf: minconf(p)?,
        utxos: onchain::utxos(p.get("utxos"))?,
    })
}

fn run_prepare(ctx: Ctx, p: Params) -> CommandFuture {
    command(async move {
        let wallet = ctx.node.wallet.clone();
        let req = spend_request(&p, &wallet)?;
        match wallet.prepare(&req).await {
            Ok(prep) => Ok(json!({
                "psbt": prep.psbt.to_string(),
                "unsigned_tx": bitcoin::consensus::encode::serialize_hex(&prep.psbt.unsigned_tx),
                "txid": prep.psbt.unsigned_tx.compute_txid().to_string(),
            })),
            Err(e) => Err(wallet_error(e)),
        }
    })
}

pub(super) fn txid(p: &Params) -> Result<Txid, RpcError> {
    let s = p.str("txid")?;
    Txid::from_str(&s).map_err(|_| {
        RpcError::invalid_params(format!("txid: should be a txid: invalid token '{s}'"))
    })
}

fn run_send(ctx: Ctx, p: Params) -> CommandFuture {
    command(async move {
        let id = txid(&p)?;
        match ctx.node.wallet.send_prepared(id).await {
            Ok((psbt, tx)) => Ok(json!({
                "psbt": psbt.to_string(),
                "tx": bitcoin::consensus::encode::serialize_hex(&tx),
                "txid": tx.compute_txid().to_string(),
            })),
            Err(e) => Err(wallet_error(e)),
        }
    })
}

fn run_discard(ctx: Ctx, p: Params) -> CommandFuture {
    command(async move {
        let id = txid(&p)?;
        match ctx.node.wallet.discard(id) {
            Ok(tx) => Ok(json!({
                "unsigned_tx": bitcoin::consensus::encode::serialize_hex(&tx),
                "txid": id.to_string(),
            })),
            Err(e) => Err(wallet_error(e)),
        }
    })
}
