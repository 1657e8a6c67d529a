//! `help [command]`: every command, built-in or from a plugin, with its usage; with a
//! command, also its description and a paragraph.

use fulgur_protocol::RpcError;
use serde_json::{Map, Value, json};

use super::{COMMANDS, Command, CommandFuture, Ctx, command};
use crate::rpc::params::{Params, opt};

pub const HELP: Command = Command {
    name: "help",
    usage: "[command]",
    category: "utility",
    description: "List available commands, or give verbose help on one {command}.",
    verbose: "Without a command, lists every command the node offers, its own and those registered by \
              plugins, each with its parameters (optional ones in brackets). With a command, gives its \
              usage, category, a one-line description and a longer explanation when known.",
    params: &[opt("command")],
    extra_params: false,
    run,
};

fn entry(
    name: &str,
    usage: &str,
    category: &str,
    description: Option<&str>,
    verbose: Option<&str>,
) -> Value {
    let mut m = Map::new();
    let command = if usage.is_empty() {
        name.to_string()
    } else {
        format!("{name} {usage}")
    };
    m.insert("command".into(), Value::from(command));
    m.insert("category".into(), Value::from(category));
    if let Some(d) = description.filter(|d| !d.is_empty()) {
        m.insert("description".into(), Value::from(d));
    }
    if let Some(v) = verbose.filter(|v| !v.is_empty()) {
        m.insert("verbose".into(), Value::from(v));
    }
    Value::Object(m)
}

fn run(ctx: Ctx, p: Params) -> CommandFuture {
    command(async move {
        let want = p.opt_str("command")?;
        let deprecated_ok = ctx
            .conn
            .deprecated_ok
            .load(std::sync::atomic::Ordering::Relaxed);
        let mut entries: Vec<(String, Value)> = vec![];
        for c in COMMANDS {
            let verbose = want.as_deref().map(|_| c.verbose);
            entries.push((
                c.name.to_string(),
                entry(c.name, c.usage, c.category, Some(c.description), verbose),
            ));
        }
        for m in ctx.node.plugins.method_help() {
            if m.deprecated && !deprecated_ok {
                continue;
            }
            let category = m.category.clone().unwrap_or_else(|| "plugin".into());
            let verbose = if want.is_some() {
                m.long_description.as_deref()
            } else {
                None
            };
            let mut usage = m.usage.clone();
            if m.deprecated {
                usage.push_str(" (DEPRECATED!)");
            }
            entries.push((
                m.name.clone(),
                entry(
                    &m.name,
                    usage.trim(),
                    &category,
                    m.description.as_deref(),
                    verbose,
                ),
            ));
        }
        match want {
            Some(name) => match entries.into_iter().find(|(n, _)| *n == name) {
                Some((_, e)) => Ok(json!({"help": [e], "format-hint": "simple"})),
                None => Err(RpcError::unknown_method(&name)),
            },
            None => {
                entries.sort_by(|a, b| a.0.cmp(&b.0));
                Ok(
                    json!({"help": entries.into_iter().map(|(_, e)| e).collect::<Vec<_>>(), "format-hint": "simple"}),
                )
            }
        }
    })
}
