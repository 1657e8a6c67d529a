//! `feerates`: the fee-estimate cache in CLN's shape, per kw or per kvB.

use fulgur_protocol::RpcError;

use super::{Command, CommandFuture, Ctx, command};
use crate::rpc::params::{Params, opt, req};

pub const FEERATES: Command = Command::new("feerates", &[req("style")], run);

/// CLN's schema names the parameter `feerate_str`; its implementation `feerate`. Both are
/// accepted by name.
pub const PARSEFEERATE: Command = Command::new(
    "parsefeerate",
    &[opt("feerate_str"), opt("feerate")],
    run_parse,
);

/// `parsefeerate feerate_str`: a feerate in any of CLN's forms (`urgent`, `12blocks`,
/// `253perkw`, `1000perkb`, a bare number per kvB) as sat per 1000 weight units, from the
/// same estimates `fundchannel` and `withdraw` use.
fn run_parse(ctx: Ctx, p: Params) -> CommandFuture {
    command(async move {
        let v = match (p.get("feerate_str"), p.get("feerate")) {
            (Some(_), Some(_)) => {
                return Err(RpcError::invalid_params(
                    "Cannot have both feerate_str and feerate",
                ));
            }
            (Some(v), None) | (None, Some(v)) => v.clone(),
            (None, None) => {
                return Err(RpcError::invalid_params(
                    "missing required parameter: feerate_str",
                ));
            }
        };
        let perkw = crate::rpc::onchain::feerate(Some(&v), &*ctx.node.chain.fees())?;
        Ok(serde_json::json!({ "perkw": perkw }))
    })
}

fn run(ctx: Ctx, p: Params) -> CommandFuture {
    command(async move {
        let style = p.str("style")?;
        if style != "perkw" && style != "perkb" {
            return Err(RpcError::invalid_params(format!(
                "style: should be 'perkw' or 'perkb', not '{style}'"
            )));
        }
        Ok(ctx.node.chain.fees().render(&style))
    })
}
