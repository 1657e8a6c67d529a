//! `help [command]`: every command, built-in or from a plugin, with its usage; with a
//! command, also its description and a paragraph. The built-in commands' help is
//! documentation kept as data (`help.json`, one entry per command), so that a command's
//! definition is one line beside its handler.

use std::collections::HashMap;
use std::sync::OnceLock;

use fulgur_protocol::RpcError;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::{COMMANDS, Command, CommandFuture, Ctx, command};
use crate::rpc::params::{Params, opt};

pub const HELP: Command = Command::new("help", &[opt("command")], run);

/// A built-in command's help.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HelpText {
    /// Parameter synopsis (optional ones in brackets).
    pub usage: String,
    /// CLN's category.
    pub category: String,
    /// One line.
    pub description: String,
    /// A paragraph for `help CMD`.
    pub verbose: String,
}

/// Every built-in command's help, read once from `help.json` (a unit test checks that it
/// parses and covers exactly the command table).
fn texts() -> &'static HashMap<String, HelpText> {
    static TEXTS: OnceLock<HashMap<String, HelpText>> = OnceLock::new();
    TEXTS.get_or_init(|| parse(include_str!("help.json")).unwrap_or_default())
}

fn parse(s: &str) -> Result<HashMap<String, HelpText>, serde_json::Error> {
    serde_json::from_str(s)
}

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
        let none = HelpText::default();
        for c in COMMANDS {
            let t = texts().get(c.name).unwrap_or(&none);
            let verbose = want.as_deref().map(|_| t.verbose.as_str());
            entries.push((
                c.name.to_string(),
                entry(c.name, &t.usage, &t.category, Some(&t.description), verbose),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_command_has_help_and_every_help_a_command() {
        let texts = parse(include_str!("help.json")).unwrap_or_else(|e| panic!("help.json: {e}"));
        let mut names: Vec<&str> = COMMANDS
            .iter()
            .chain(super::super::DEV_COMMANDS)
            .map(|c| c.name)
            .collect();
        names.sort_unstable();
        let mut helped: Vec<&str> = texts.keys().map(String::as_str).collect();
        helped.sort_unstable();
        assert_eq!(names, helped);
        for (name, t) in &texts {
            assert!(
                !t.category.is_empty() && !t.description.is_empty(),
                "{name}"
            );
            assert!(!t.verbose.is_empty(), "{name}: no paragraph");
        }
    }
}
