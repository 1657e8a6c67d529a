//! `withdraw destination satoshi [feerate] [minconf] [utxos]`: send on-chain funds;
//! `multiwithdraw outputs [feerate] [minconf] [utxos]`: to several addresses in one
//! transaction; `upgradewallet`: nothing to upgrade (the wallet never had P2SH outputs).

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

pub const MULTIWITHDRAW: Command = Command::new(
    "multiwithdraw",
    &[req("outputs"), opt("feerate"), opt("minconf"), opt("utxos")],
    run_multi,
);

pub const UPGRADEWALLET: Command = Command::new(
    "upgradewallet",
    &[opt("feerate"), opt("reservedok")],
    run_upgrade,
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

fn run_multi(ctx: Ctx, p: Params) -> CommandFuture {
    command(async move {
        let wallet = ctx.node.wallet.clone();
        let req = super::txprepare::spend_request(&p, &wallet)?;
        // CLN's multiwithdraw answers with the transaction only (no psbt).
        match wallet.withdraw(&req).await {
            Ok((_, tx)) => Ok(json!({
                "tx": bitcoin::consensus::encode::serialize_hex(&tx),
                "txid": tx.compute_txid().to_string(),
            })),
            Err(e) => Err(wallet_error(e)),
        }
    })
}

/// CLN moves P2SH-wrapped segwit outputs to native ones. Fulgur's wallet only ever had
/// native segwit and taproot outputs, so there is never anything to move; the params are
/// still checked as CLN checks them.
fn run_upgrade(ctx: Ctx, p: Params) -> CommandFuture {
    command(async move {
        onchain::feerate(p.get("feerate"), ctx.node.wallet.fees().as_ref())?;
        p.opt_bool("reservedok")?;
        Ok(json!({ "upgraded_outs": 0 }))
    })
}
