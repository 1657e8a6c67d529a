//! `dev`: developer-only commands, available with `--developer` (as CLN's `dev`). Hidden
//! from `help`; without `--developer` it is "developer-only" (`-32601`), as in CLN.
//!
//! `dev gossip` lists every gossip message the graph keeps, hex as on the wire (for tests
//! that feed another node with `addgossip`, as CLN's read them from its io log).
//!
//! `dev-fail id` force-closes the channel with peer `id` at once (CLN's `dev-fail`; tests
//! that need a unilateral close while the peer is online, since `close` with
//! `unilateraltimeout=0` waits for a mutual close). It answers as `close` does.
//!
//! `dev crash` panics inside the command's task, on a tokio worker thread: the test that
//! a panic anywhere stops the node (`lifecycle::install_panic_hook`) instead of leaving its
//! RPC answering. (CLN's `dev crash` calls `fatal()`.)

use fulgur_protocol::RpcError;
use serde_json::json;

use super::{Command, CommandFuture, Ctx, command};
use crate::rpc::params::{Params, req};

pub const DEV: Command = Command::new("dev", &[req("subcommand")], run);
pub const DEV_FAIL: Command = Command::new("dev-fail", &[req("id")], run_fail);

fn run_fail(ctx: Ctx, p: Params) -> CommandFuture {
    command(async move {
        let e = super::channels::engine(&ctx.node)?;
        let id = p.str("id")?;
        let open: Vec<_> = super::channels::find_channels(&e, &id)
            .into_iter()
            .filter(|c| c.funding_txo.is_some())
            .collect();
        let [chan] = open.as_slice() else {
            return Err(RpcError::new(
                -1,
                format!("Peer {id} has no single open channel to fail"),
            ));
        };
        super::channels::close_waiting(&ctx, &e, chan, None, Some(std::time::Duration::ZERO)).await
    })
}

fn run(ctx: Ctx, p: Params) -> CommandFuture {
    command(async move {
        let sub = p.str("subcommand")?;
        match sub.as_str() {
            "crash" => panic!("Crash at user request"),
            "gossip" => {
                let e = super::channels::engine(&ctx.node)?;
                let all: Vec<String> = e.raw_gossip().iter().map(|m| fulgur_base::hex(m)).collect();
                Ok(json!({ "gossip": all }))
            }
            other => Err(RpcError::invalid_params(format!(
                "subcommand: should be one of crash, gossip: invalid token '{other}'"
            ))),
        }
    })
}
