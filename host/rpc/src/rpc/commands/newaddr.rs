//! `newaddr [addresstype]`: a fresh receive address of the on-chain wallet.

use fulgur_protocol::RpcError;
use serde_json::json;

use super::{Command, CommandFuture, Ctx, command};
use crate::rpc::params::{Params, opt};
use crate::wallet::AddrRequest;

pub const NEWADDR: Command = Command::new("newaddr", &[opt("addresstype")], run);

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
