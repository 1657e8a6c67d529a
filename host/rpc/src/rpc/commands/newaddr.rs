//! `newaddr [addresstype]`: a fresh receive address of the on-chain wallet;
//! `listaddresses [address] [start] [limit]`: those handed out so far.

use fulgur_protocol::RpcError;
use serde_json::json;

use super::{Command, CommandFuture, Ctx, command};
use crate::rpc::params::{Params, opt};
use crate::wallet::AddrRequest;

pub const NEWADDR: Command = Command::new("newaddr", &[opt("addresstype")], run);

/// Issued addresses as CLN lists them: `keyidx` counts from 1 (the first `newaddr` is 1, as
/// in CLN), `start` is the first index shown, `limit` how many; with `address`, only the
/// index that has it (none if it was never issued).
fn run_list(ctx: Ctx, p: Params) -> CommandFuture {
    command(async move {
        let wallet = &ctx.node.wallet;
        let wanted = p
            .opt_str("address")?
            .map(|a| crate::rpc::onchain::address("address", &a, wallet.network()))
            .transpose()?;
        let start = p.opt_u64("start")?.unwrap_or(1);
        let limit = p.opt_u64("limit")?.unwrap_or(u64::MAX);
        let mut out = vec![];
        for (i, bech32, p2tr) in wallet.issued_addresses() {
            let keyidx = u64::from(i) + 1;
            if keyidx < start || out.len() as u64 >= limit {
                continue;
            }
            if let Some(w) = &wanted
                && bech32.as_ref() != Some(w)
                && p2tr.as_ref() != Some(w)
            {
                continue;
            }
            let mut e = json!({ "keyidx": keyidx });
            if let Some(a) = bech32 {
                e["bech32"] = a.to_string().into();
            }
            if let Some(a) = p2tr {
                e["p2tr"] = a.to_string().into();
            }
            out.push(e);
        }
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
