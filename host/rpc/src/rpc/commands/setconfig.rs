//! `setconfig config [val] [transient]`: change a dynamic plugin option at run time. The
//! plugin is asked first (it may refuse with an error, returned verbatim); an accepted
//! value is recorded and, unless transient, persisted in `config.setconfig`.

use fulgur_protocol::RpcError;
use fulgur_protocol::options::value_to_text;
use serde_json::{Map, Value, json};

use super::{Command, CommandFuture, Ctx, command};
use crate::config::Source;
use crate::core_options::persist_setconfig;
use crate::plugin::outcome;
use crate::rpc::params::{Params, opt, req};

pub const SETCONFIG: Command = Command::new(
    "setconfig",
    &[req("config"), opt("val"), opt("transient")],
    run,
);

fn run(ctx: Ctx, p: Params) -> CommandFuture {
    command(async move { set(&ctx, &p).await })
}

/// Validates a setconfig without applying it (for `check`): the option, the value, and
/// the plugin's own check if it declared `cancheck`.
pub async fn check(ctx: &Ctx, name: &str, val: Option<&Value>) -> Result<(), RpcError> {
    let (path, sent) = ctx.node.plugins.with_options(|t| {
        t.check_set(name, val)
            .map(|(o, _, s)| (o.plugin.clone(), s))
    })?;
    let Some(plugin) = ctx.node.plugins.find(&path.display().to_string()) else {
        return Err(RpcError::invalid_params(format!(
            "plugin for {name} is not running"
        )));
    };
    if plugin.manifest().is_some_and(|m| m.cancheck) {
        let mut params = Map::new();
        params.insert("command_to_check".into(), Value::from("setconfig"));
        params.insert("config".into(), Value::from(name));
        if let Some(s) = sent {
            params.insert("val".into(), s);
        }
        let resp = plugin
            .request("check", &Value::Object(params), Some(&ctx.id))
            .await
            .map_err(|_| RpcError::plugin_terminated())?;
        outcome(&resp)?;
    }
    Ok(())
}

async fn set(ctx: &Ctx, p: &Params) -> Result<Value, RpcError> {
    let name = p.str("config")?;
    let transient = p.opt_bool("transient")?.unwrap_or(false);
    let (path, typed, sent) = ctx.node.plugins.with_options(|t| {
        t.check_set(&name, p.get("val"))
            .map(|(o, typed, s)| (o.plugin.clone(), typed, s))
    })?;
    let Some(plugin) = ctx.node.plugins.find(&path.display().to_string()) else {
        return Err(RpcError::invalid_params(format!(
            "plugin for {name} is not running"
        )));
    };
    let mut params = Map::new();
    params.insert("config".into(), Value::from(name.clone()));
    if let Some(s) = &sent {
        params.insert("val".into(), s.clone());
    }
    let resp = plugin
        .request("setconfig", &Value::Object(params), Some(&ctx.id))
        .await
        .map_err(|_| RpcError::plugin_terminated())?;
    outcome(&resp)?;
    let source = if transient {
        Source::SetConfig
    } else {
        let texts: Vec<Option<String>> = match &sent {
            None => vec![None],
            Some(Value::Array(items)) => items.iter().map(|i| Some(value_to_text(i))).collect(),
            Some(v) => vec![Some(value_to_text(v))],
        };
        persist_setconfig(&ctx.node.config.setconfig_file, &name, &texts).map_err(|e| {
            RpcError::lightningd(format!(
                "could not write {}: {e}",
                ctx.node.config.setconfig_file.display()
            ))
        })?
    };
    let rendered = ctx.node.plugins.with_options(|t| {
        t.set(&name, typed, source);
        t.render_plugin(&name)
    });
    let mut obj = match rendered {
        Some(Value::Object(o)) => o,
        _ => Map::new(),
    };
    obj.insert("config".into(), Value::from(name));
    obj.insert("dynamic".into(), Value::Bool(true));
    Ok(json!({"config": obj}))
}
