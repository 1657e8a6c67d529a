//! `check command_to_check ...`: checks a command's parameters without running it. Plugin
//! methods are checked by their plugin if it declared `cancheck`; `setconfig` checks the
//! option and value (and asks the plugin if it can).

use fulgur_protocol::RpcError;
use serde_json::{Map, Value, json};

use super::{Command, CommandFuture, Ctx, command, find};
use crate::plugin::outcome;
use crate::rpc::params::{Params, bind, req};

pub const CHECK: Command =
    Command::new("check", &[req("command_to_check")], run).with_extra_params();

fn run(ctx: Ctx, p: Params) -> CommandFuture {
    command(async move { check(&ctx, &p).await })
}

async fn check(ctx: &Ctx, p: &Params) -> Result<Value, RpcError> {
    let cmd = p.str("command_to_check")?;
    let inner = if p.extra_positional.is_empty() {
        Value::Object(p.extra.clone())
    } else {
        Value::Array(p.extra_positional.clone())
    };
    if cmd == "setconfig" {
        let b = bind(super::setconfig::SETCONFIG.params, &inner, false)?;
        super::setconfig::check(ctx, &b.str("config")?, b.get("val")).await?;
    } else if cmd == "exposesecret" {
        let b = bind(super::exposesecret::EXPOSESECRET.params, &inner, false)?;
        super::exposesecret::check(ctx, &b)?;
    } else if let Some(c) = find(&cmd) {
        bind(c.params, &inner, c.extra_params)?;
    } else if let Some(plugin) = ctx.node.plugins.method_owner(&cmd) {
        if plugin.manifest().is_some_and(|m| m.cancheck) {
            let params = match inner {
                Value::Object(mut o) => {
                    o.insert("command_to_check".into(), Value::from(cmd.clone()));
                    Value::Object(o)
                }
                Value::Array(mut a) => {
                    a.insert(0, Value::from(cmd.clone()));
                    Value::Array(a)
                }
                _ => Value::Object(Map::new()),
            };
            let resp = plugin
                .request("check", &params, Some(&ctx.id))
                .await
                .map_err(|_| RpcError::plugin_terminated())?;
            outcome(&resp)?;
        } else {
            plugin.log.debug(&format!(
                "check {cmd}: plugin cannot check, assuming the parameters are fine"
            ));
        }
    } else {
        return Err(RpcError::unknown_method(&cmd));
    }
    Ok(json!({"command_to_check": cmd}))
}
