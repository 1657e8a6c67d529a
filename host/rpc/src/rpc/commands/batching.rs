//! `batching enable`: a client's promise that a burst of commands follows, so the node may
//! group their database writes. Fulgur's writes are already grouped by the store (one
//! connection, payment-path writes without their own fsync; see `payments.rs`), so the flag
//! changes nothing; the command exists because CLN clients (its `sql` and bookkeeper
//! plugins, scripts) send it.

use serde_json::json;

use super::{Command, CommandFuture, Ctx, command};
use crate::rpc::params::{Params, req};

pub const BATCHING: Command = Command::new("batching", &[req("enable")], run);

fn run(_ctx: Ctx, p: Params) -> CommandFuture {
    command(async move {
        p.opt_bool("enable")?;
        Ok(json!({}))
    })
}
