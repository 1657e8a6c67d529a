//! `wait subsystem indexname nextvalue`: waits until one of CLN's indexes of `invoices`,
//! `sendpays`, `forwards`, `chainmoves`, `channelmoves` or `networkevents` reaches a value (`lightning::indexes` reads them).
//!
//! The indexes are read every [`POLL`] while a call waits: one small query per waiting
//! call, and a change is seen within that interval.

use std::time::Duration;

use fulgur_protocol::RpcError;
use serde_json::{Value, json};

use super::{Command, CommandFuture, Ctx, command};
use crate::lightning::indexes::{self, Indexed};
use crate::rpc::params::{Params, req};

pub const WAIT: Command = Command::new(
    "wait",
    &[req("subsystem"), req("indexname"), req("nextvalue")],
    run,
);

/// How often a waiting call reads the indexes.
const POLL: Duration = Duration::from_millis(50);

/// CLN's subsystems this node keeps no index of.
const UNKEPT: [&str; 1] = ["htlcs"];

fn bad(name: &str, what: &str, v: &Value) -> RpcError {
    RpcError::invalid_params(format!("{name}: {what}: invalid token '{v}'"))
}

fn run(ctx: Ctx, p: Params) -> CommandFuture {
    command(async move {
        let sub = p.get("subsystem").cloned().unwrap_or(Value::Null);
        let table = match sub.as_str() {
            Some(s) if UNKEPT.contains(&s) => {
                return Err(bad("subsystem", "not kept by this node", &sub));
            }
            Some(s) => Indexed::parse(s),
            None => None,
        }
        .ok_or_else(|| {
            bad(
                "subsystem",
                "should be one of invoices, sendpays, forwards, htlcs, chainmoves, channelmoves or networkevents",
                &sub,
            )
        })?;
        let index = p.get("indexname").cloned().unwrap_or(Value::Null);
        let pick: fn(&indexes::Indexes) -> u64 = match index.as_str() {
            Some("created") => |i| i.created,
            Some("updated") => |i| i.updated,
            Some("deleted") => |i| i.deleted,
            _ => {
                return Err(bad(
                    "indexname",
                    "should be created, updated or deleted",
                    &index,
                ));
            }
        };
        let next = p
            .opt_u64("nextvalue")?
            .ok_or_else(|| RpcError::invalid_params("missing required parameter: nextvalue"))?;
        loop {
            let now = ctx
                .node
                .store
                .with(move |c| Ok(indexes::read(c, table)?))
                .await
                .map_err(|e| RpcError::lightningd(format!("cannot read the indexes: {e}")))?;
            let value = pick(&now);
            if value >= next {
                let mut r = json!({ "subsystem": table.name() });
                if let Some(name) = index.as_str() {
                    r[name] = json!(value);
                }
                return Ok(r);
            }
            tokio::time::sleep(POLL).await;
        }
    })
}
