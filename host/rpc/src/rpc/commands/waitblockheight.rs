//! `waitblockheight`: waits until the chain reaches a height, as CLN's (clboss waits with it).

use fulgur_protocol::RpcError;
use serde_json::json;

use super::{Command, CommandFuture, Ctx, command};
use crate::rpc::params::{Params, opt, req};

pub const WAITBLOCKHEIGHT: Command = Command::new(
    "waitblockheight",
    &[req("blockheight"), opt("timeout")],
    run_waitblockheight,
);

/// CLN's `WAIT_TIMEOUT`.
const WAIT_TIMEOUT: i64 = 2000;

fn run_waitblockheight(ctx: Ctx, p: Params) -> CommandFuture {
    command(async move {
        let target = p
            .opt_u64("blockheight")?
            .ok_or_else(|| RpcError::invalid_params("missing required parameter: blockheight"))?;
        let target = u32::try_from(target).map_err(|_| {
            RpcError::invalid_params(format!(
                "blockheight: should be an unsigned 32 bit integer: invalid token '{target}'"
            ))
        })?;
        let timeout = std::time::Duration::from_secs(p.opt_u64("timeout")?.unwrap_or(60));
        let chain = ctx.node.chain.clone();
        match tokio::time::timeout(timeout, chain.wait_height(target)).await {
            Ok(h) => Ok(json!({"blockheight": h})),
            Err(_) => Err(RpcError::new(WAIT_TIMEOUT, "Timed out.")),
        }
    })
}
