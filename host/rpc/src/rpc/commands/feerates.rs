//! `feerates`: the fee-estimate cache in CLN's shape, per kw or per kvB.

use fulgur_protocol::RpcError;

use super::{Command, CommandFuture, Ctx, command};
use crate::rpc::params::{Params, req};

pub const FEERATES: Command = Command::new("feerates", &[req("style")], run);

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
