//! `listconfigs [config]`: every option with its value and where it came from, plugin
//! options included (with the plugin's path).

use fulgur_protocol::RpcError;
use serde_json::{Value, json};

use super::{Command, CommandFuture, Ctx, command};
use crate::core_options::{render_core, render_unclaimed_cln_plugin_options};
use crate::rpc::params::{Params, opt};

pub const LISTCONFIGS: Command = Command::new("listconfigs", &[opt("config")], run);

fn run(ctx: Ctx, p: Params) -> CommandFuture {
    command(async move {
        let want = p.opt_str("config")?;
        let mut configs = render_core(&ctx.node.config);
        ctx.node.plugins.with_options(|t| {
            let names = t.plugin_names();
            // CLN plugins' options given with no plugin to take them (their values are
            // accepted, as CLN accepts them, but do nothing here).
            configs.extend(render_unclaimed_cln_plugin_options(&ctx.node.config, |n| {
                names.iter().any(|p| p == n)
            }));
            for name in names {
                if let Some(v) = t.render_plugin(&name) {
                    configs.insert(name, v);
                }
            }
        });
        if let Some(name) = want {
            return match configs.remove(&name) {
                Some(v) => Ok(json!({"configs": {name: v}})),
                None => Err(RpcError::invalid_params(format!(
                    "Unknown config option {name}"
                ))),
            };
        }
        Ok(json!({"configs": Value::Object(configs)}))
    })
}
