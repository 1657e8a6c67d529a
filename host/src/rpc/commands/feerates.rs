//! `feerates`: the fee-estimate cache in CLN's shape, per kw or per kvB.

use fulgur_protocol::RpcError;

use super::{Command, CommandFuture, Ctx, command};
use crate::rpc::params::{Params, req};

pub const FEERATES: Command = Command {
    name: "feerates",
    usage: "style",
    category: "bitcoin",
    description: "Return feerate estimates, either satoshi-per-kw ({style} perkw) or satoshi-per-kb ({style} perkb).",
    verbose: "Shows the feerates the node uses for opening, closing and penalty transactions, the \
              range it accepts from peers, the backend's floor, the backend's raw estimates for 2, \
              6, 12 and 100 blocks (with smoothed values) and the typical on-chain costs. When the \
              backend has no estimates (a fresh regtest chain, an empty mempool), documented \
              fallbacks are used and warning_missing_feerates says so.",
    params: &[req("style")],
    extra_params: false,
    run,
};

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
