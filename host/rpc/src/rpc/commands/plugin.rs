//! `plugin subcommand [plugin|directory] [options]`: start, stop, startdir, rescan, list.
//! Results and errors as CLN's: `-3` when a plugin fails to start, `-32602` for bad
//! arguments, an already registered path, or a plugin that cannot be managed.

use std::path::{Path, PathBuf};

use fulgur_protocol::RpcError;
use fulgur_protocol::error::codes;
use serde_json::{Value, json};

use super::{Command, CommandFuture, Ctx, command};
use crate::config::{RawOpt, Source};
use crate::plugin::discovery;
use crate::rpc::params::{Params, opt, req};

pub const PLUGIN: Command = Command::new(
    "plugin",
    &[req("subcommand"), opt("plugin"), opt("options")],
    run,
)
.with_extra_params();

fn run(ctx: Ctx, p: Params) -> CommandFuture {
    command(async move { plugin(&ctx, p).await })
}

fn list(ctx: &Ctx, command: &str) -> Value {
    json!({"command": command, "plugins": ctx.node.plugins.list()})
}

fn target(p: &mut Params, what: &str) -> Result<String, RpcError> {
    if let Some(v) = p.opt_str("plugin")? {
        return Ok(v);
    }
    for alias in ["directory", "plugin"] {
        if let Some(v) = p.extra.remove(alias) {
            return v
                .as_str()
                .map(String::from)
                .ok_or_else(|| RpcError::invalid_params(format!("{what}: should be a string")));
        }
    }
    Err(RpcError::invalid_params(format!(
        "missing required parameter: {what}"
    )))
}

fn resolve(ctx: &Ctx, s: &str) -> PathBuf {
    let p = Path::new(s);
    if p.is_absolute() {
        return p.to_path_buf();
    }
    let in_default = ctx.node.plugins.settings.default_dir.join(p);
    if in_default.exists() {
        in_default
    } else {
        ctx.node.config.net_dir.join(p)
    }
}

pub(super) fn start_options(p: &Params) -> Result<Vec<RawOpt>, RpcError> {
    if !p.extra_positional.is_empty() {
        return Err(RpcError::invalid_params(
            "Extra parameters must be in object",
        ));
    }
    let mut out = vec![];
    if let Some(arr) = p.get("options") {
        if !p.extra.is_empty() {
            return Err(RpcError::invalid_params(
                "Cannot mix options array with keyword options",
            ));
        }
        let Value::Array(items) = arr else {
            return Err(RpcError::invalid_params(
                "options: should be an array of strings",
            ));
        };
        for it in items {
            let s = it.as_str().ok_or_else(|| {
                RpcError::invalid_params(format!("options: {it} is not a string"))
            })?;
            let (name, value) = match s.split_once('=') {
                Some((n, v)) => (n.to_string(), Some(v.to_string())),
                None => (s.to_string(), None),
            };
            out.push(RawOpt {
                name,
                value,
                source: Source::PluginStart,
            });
        }
    }
    for (k, v) in &p.extra {
        // JSON `true` is "true": a bool option needs it, a flag takes it as set (CLN).
        let value = match v {
            Value::String(s) => Some(s.clone()),
            Value::Null => None,
            other => Some(other.to_string()),
        };
        out.push(RawOpt {
            name: k.clone(),
            value,
            source: Source::PluginStart,
        });
    }
    Ok(out)
}

async fn start_many(ctx: &Ctx, paths: Vec<PathBuf>) {
    for path in paths {
        if ctx.node.plugins.is_registered(&path) || ctx.node.plugins.is_disabled(&path) {
            continue;
        }
        if let Err(reason) = ctx.node.plugins.start_dynamic(&path, &[]).await {
            ctx.node
                .main
                .unusual(&format!("{}: {reason}", path.display()));
        }
    }
}

async fn plugin(ctx: &Ctx, mut p: Params) -> Result<Value, RpcError> {
    let sub = p.str("subcommand")?;
    match sub.as_str() {
        "start" => {
            let given = target(&mut p, "plugin")?;
            let path = resolve(ctx, &given);
            if !path.exists() {
                return Err(RpcError::invalid_params(format!(
                    "{} is not executable: No such file or directory",
                    path.display()
                )));
            }
            if !discovery::eligible(&path) {
                return Err(RpcError::invalid_params(format!(
                    "{} is not executable",
                    path.display()
                )));
            }
            let path = discovery::canonical(&path);
            let opts = start_options(&p)?;
            match ctx.node.plugins.start_dynamic(&path, &opts).await {
                Ok(()) => Ok(list(ctx, "start")),
                Err(r) if r == "already registered" => Err(RpcError::invalid_params(format!(
                    "{}: already registered",
                    path.display()
                ))),
                Err(r) => Err(RpcError::new(
                    codes::PLUGIN_ERROR,
                    format!("{}: {r}", path.display()),
                )),
            }
        }
        "stop" => {
            let name = target(&mut p, "plugin")?;
            let Some(plugin) = ctx.node.plugins.find(&name) else {
                return Err(RpcError::invalid_params(format!(
                    "Could not find plugin {name}"
                )));
            };
            if !plugin.is_dynamic() {
                return Err(RpcError::invalid_params(format!(
                    "{name} cannot be managed when lightningd is up"
                )));
            }
            ctx.node.plugins.stop_plugin(&plugin).await;
            Ok(
                json!({"command": "stop", "result": format!("Successfully stopped {}.", plugin.name)}),
            )
        }
        "startdir" => {
            let dir = target(&mut p, "directory")?;
            let dir = resolve(ctx, &dir);
            let found = discovery::scan_dir(&dir, 0).map_err(|e| {
                RpcError::invalid_params(format!("Could not open directory {}: {e}", dir.display()))
            })?;
            start_many(ctx, found).await;
            Ok(list(ctx, "startdir"))
        }
        "rescan" => {
            let found =
                discovery::scan_dir(&ctx.node.plugins.settings.default_dir, 1).unwrap_or_default();
            // A dynamic plugin whose file changed since it started is restarted, so that an
            // upgrade in the plugin directory takes effect (a static one needs a restart of
            // the node, as `plugin stop` refuses it).
            for path in &found {
                if let Some(p) = ctx.node.plugins.find(&path.display().to_string())
                    && p.is_dynamic()
                    && !p.is_dead()
                    && p.file_changed()
                {
                    ctx.node.main.info(&format!(
                        "plugin rescan: {} changed since it started; restarting it",
                        p.name
                    ));
                    ctx.node.plugins.stop_plugin(&p).await;
                }
            }
            start_many(ctx, found).await;
            Ok(list(ctx, "rescan"))
        }
        "list" => Ok(list(ctx, "list")),
        other => Err(RpcError::invalid_params(format!(
            "subcommand: unknown subcommand '{other}' (start, stop, startdir, rescan, list)"
        ))),
    }
}
