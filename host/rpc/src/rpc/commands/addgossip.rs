//! `addgossip message`: one hex-encoded gossip message (`channel_announcement`,
//! `channel_update`, `node_announcement`, with its type) fed to the graph as if a peer had
//! sent it, as CLN's. Best effort: duplicates and messages waiting on a check are accepted;
//! malformed and refused ones fail with the reason (`-1`, CLN's `LIGHTNINGD`).

use fulgur_protocol::RpcError;
use serde_json::json;

use super::{Command, CommandFuture, Ctx, command};
use crate::rpc::params::{Params, req};

pub const ADDGOSSIP: Command = Command::new("addgossip", &[req("message")], run);

fn run(ctx: Ctx, p: Params) -> CommandFuture {
    command(async move {
        let s = p.str("message")?;
        let msg = fulgur_base::unhex(&s).ok_or_else(|| {
            RpcError::invalid_params(format!("message: should be hex: invalid token '{s}'"))
        })?;
        let e = super::channels::engine(&ctx.node)?;
        e.add_gossip(&msg)
            .map_err(|err| RpcError::new(-1, err.to_string()))?;
        Ok(json!({}))
    })
}
