//! `newaddr [addresstype]`: a fresh receive address of the on-chain wallet;
//! `listaddresses [address] [start] [limit]`: those handed out so far.

use fulgur_protocol::RpcError;
use serde_json::json;

use super::{Command, CommandFuture, Ctx, command};
use crate::rpc::params::{Params, opt};
use crate::wallet::AddrRequest;

pub const NEWADDR: Command = Command::new("newaddr", &[opt("addresstype")], run);

/// Issued addresses as CLN lists them, one entry per address: `keyidx` counts from 1 for
/// each kind (bech32 and p2tr come from separate keys here), `start` is the first index
/// shown, `limit` how many entries; with `address`, only its entry (none if it was never
/// issued).
fn run_list(ctx: Ctx, p: Params) -> CommandFuture {
    command(async move {
        let wallet = &ctx.node.wallet;
        let wanted = p
            .opt_str("address")?
            .map(|a| crate::rpc::onchain::address("address", &a, wallet.network()))
            .transpose()?;
        let start = p.opt_u64("start")?.unwrap_or(1);
        let limit = p.opt_u64("limit")?.unwrap_or(u64::MAX);
        let out: Vec<_> = wallet
            .issued_addresses()
            .into_iter()
            .map(|(i, a, taproot)| (u64::from(i) + 1, a, taproot))
            .filter(|(keyidx, a, _)| *keyidx >= start && wanted.as_ref().is_none_or(|w| w == a))
            .take(usize::try_from(limit).unwrap_or(usize::MAX))
            .map(|(keyidx, a, taproot)| {
                let kind = if taproot { "p2tr" } else { "bech32" };
                json!({ "keyidx": keyidx, kind: a.to_string() })
            })
            .collect();
        Ok(json!({ "addresses": out }))
    })
}

fn run(ctx: Ctx, p: Params) -> CommandFuture {
    command(async move {
        let req = match p.opt_str("addresstype")? {
            None => AddrRequest::P2tr,
            Some(s) => match s.as_str() {
                "p2tr" => AddrRequest::P2tr,
                "bech32" => AddrRequest::Bech32,
                "all" => AddrRequest::All,
                _ => {
                    return Err(RpcError::invalid_params(format!(
                        "addresstype: should be one of \"bech32\", \"p2tr\" or \"all\": invalid token '{s}'"
                    )));
                }
            },
        };
        match ctx.node.wallet.new_address(req).await {
            Ok((bech32, p2tr)) => {
                let mut r = json!({});
                if let Some(a) = p2tr {
                    r["p2tr"] = a.to_string().into();
                }
                if let Some(a) = bech32 {
                    r["bech32"] = a.to_string().into();
                }
                Ok(r)
            }
            Err(e) => Err(crate::rpc::onchain::wallet_error(e)),
        }
    })
}

pub const LISTADDRESSES: Command = Command::new(
    "listaddresses",
    &[opt("address"), opt("start"), opt("limit")],
    run_list,
);
