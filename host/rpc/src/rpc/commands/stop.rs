//! `stop`: shut the node down; the answer comes once shutdown is complete.

use serde_json::json;

use super::{Command, CommandFuture, Ctx, command};
use crate::rpc::params::Params;

pub const STOP: Command = Command::new("stop", &[], run);

fn run(ctx: Ctx, _p: Params) -> CommandFuture {
    command(async move {
        ctx.node.request_stop(0);
        ctx.node.wait_shutdown().await;
        Ok(json!({"result": "Shutdown complete"}))
    })
}
