//! `withdraw destination satoshi [feerate] [minconf] [utxos]`: send on-chain funds.

use fulgur_protocol::RpcError;
use serde_json::json;

use super::{Command, CommandFuture, Ctx, command};
use crate::rpc::onchain::{self, wallet_error};
use crate::rpc::params::{Params, opt, req};
use crate::wallet::SpendRequest;

pub const WITHDRAW: Command = Command::new(
    "withdraw",
    &[
        req("destination"),
        req("satoshi"),
        opt("feerate"),
        opt("minconf"),
        opt("utxos"),
    ],
    run,
);

/// `minconf`, CLN's u16 (default 1).
pub fn minconf(p: &Params) -> Result<u32, RpcError> {
    match p.opt_u64("minconf")? {
        None => Ok(1),
        Some(n) if n <= u64::from(u16::MAX) => Ok(n as u32),
        Some(n) => Err(RpcError::invalid_params(format!(
            "minconf: should be a 16 bit unsigned integer: invalid token '{n}'"
        ))),
    }
}

fn run(ctx: Ctx, p: Params) -> CommandFuture {
    command(async move {
        let wallet = ctx.node.wallet.clone();
        let parsed = (|| -> Result<SpendRequest, RpcError> {
            let dest = onchain::address("destination", &p.str("destination")?, wallet.network())?;
            let amount = onchain::sat_or_all(
                "satoshi",
                p.get("satoshi").ok_or_else(|| {
                    RpcError::invalid_params("missing required parameter: satoshi")
                })?,
            )?;
            Ok(SpendRequest {
                outputs: vec![(dest.script_pubkey(), amount)],
                feerate_perkw: onchain::feerate(p.get("feerate"), wallet.fees().as_ref())?,
                minconf: minconf(&p)?,
                utxos: onchain::utxos(p.get("utxos"))?,
            })
        })();
        let req = parsed?;
        match wallet.withdraw(&req).await {
            Ok((psbt, tx)) => Ok(json!({
                "tx": bitcoin::consensus::encode::serialize_hex(&tx),
                "txid": tx.compute_txid().to_string(),
                "psbt": psbt.to_string(),
            })),
            Err(e) => Err(wallet_error(e)),
        }
    })
}
