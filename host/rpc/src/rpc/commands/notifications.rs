//! Connection-scoped switches: `notifications` (receive `message`/`progress` from the
//! commands this connection calls) and `deprecations` (deprecated APIs for this connection).

use std::sync::atomic::Ordering;

use fulgur_protocol::RpcError;
use serde_json::json;

use super::{Command, CommandFuture, Ctx, command};
use crate::rpc::params::{Params, req};

pub const NOTIFICATIONS: Command =
    Command::new("notifications", &[req("enable")], run_notifications);

pub const DEPRECATIONS: Command = Command::new("deprecations", &[req("enable")], run_deprecations);

pub(super) fn enable(p: &Params) -> Result<bool, RpcError> {
    p.opt_bool("enable")?
        .ok_or_else(|| RpcError::invalid_params("missing required parameter: enable"))
}

fn run_notifications(ctx: Ctx, p: Params) -> CommandFuture {
    command(async move {
        let on = enable(&p)?;
        ctx.conn.notifications.store(on, Ordering::Relaxed);
        Ok(json!({}))
    })
}

fn run_deprecations(ctx: Ctx, p: Params) -> CommandFuture {
    command(async move {
        let on = enable(&p)?;
        ctx.conn.deprecated_ok.store(on, Ordering::Relaxed);
        Ok(json!({}))
    })
}
