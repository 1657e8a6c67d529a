//! `stop`: shut the node down; the answer comes once shutdown is complete.

use serde_json::json;

use super::{Command, CommandFuture, Ctx, command};
use crate::rpc::params::Params;

pub const STOP: Command = Command {
    name: "stop",
    usage: "",
    category: "utility",
    description: "Shut down the node.",
    verbose: "Stops accepting new RPC connections, sends the shutdown notification to plugins that \
              subscribed to it and gives them a grace period to exit, stops the others, closes the \
              database, and answers \"Shutdown complete\" as the very last thing.",
    params: &[],
    extra_params: false,
    run,
};

fn run(ctx: Ctx, _p: Params) -> CommandFuture {
    command(async move {
        ctx.node.request_stop(0);
        ctx.node.wait_shutdown().await;
        Ok(json!({"result": "Shutdown complete"}))
    })
}
