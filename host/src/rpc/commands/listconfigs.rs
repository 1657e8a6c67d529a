//! `listconfigs [config]`: every option with its value and where it came from, plugin
//! options included (with the plugin's path).

use fulgur_protocol::RpcError;
use serde_json::{Value, json};

use super::{Command, CommandFuture, Ctx, command};
use crate::core_options::render_core;
use crate::rpc::params::{Params, opt};

pub const LISTCONFIGS: Command = Command {
    name: "listconfigs",
    usage: "[config]",
    category: "utility",
    description: "List the node's configuration, or one {config} option.",
    verbose: "Each option shows its value (value_str, value_int, value_bool, or set for flags; \
              values_* and sources for options given several times) and its source: default, \
              cmdline, a config file and line, or pluginstart. Plugin options also name their plugin \
              and say whether setconfig can change them (dynamic).",
    params: &[opt("config")],
    extra_params: false,
    run,
};

fn run(ctx: Ctx, p: Params) -> CommandFuture {
    command(async move {
        let want = p.opt_str("config")?;
        let mut configs = render_core(&ctx.node.config);
        ctx.node.plugins.with_options(|t| {
            for name in t.plugin_names() {
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
