//! `listconfigs [config]`: every option with its value and where it came from, plugin
//! options included (with the plugin's path).

use fulgur_protocol::RpcError;
use serde_json::{Map, Value, json};

use super::{Command, CommandFuture, Ctx, command};
use crate::config::{CLN_PLUGIN_OPTIONS, CORE_OPTIONS, Config, CoreKind, RawOpt};
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

/// The `listconfigs` entries of the core options.
pub(crate) fn render_core(config: &Config) -> Map<String, Value> {
    let mut out = Map::new();
    for o in CORE_OPTIONS {
        let given: Vec<&RawOpt> = config
            .core_given
            .iter()
            .filter(|r| r.name == o.name)
            .collect();
        let mut obj = Map::new();
        match o.kind {
            CoreKind::Multi | CoreKind::MultiInt => {
                if given.is_empty() {
                    continue;
                }
                let text = |r: &&RawOpt| r.value.clone().unwrap_or_default();
                let (key, values): (&str, Vec<Value>) = if o.kind == CoreKind::MultiInt {
                    (
                        "values_int",
                        given
                            .iter()
                            .map(|r| {
                                text(r)
                                    .parse::<i64>()
                                    .map(Value::from)
                                    .unwrap_or(Value::Null)
                            })
                            .collect(),
                    )
                } else {
                    (
                        "values_str",
                        given.iter().map(|r| Value::from(text(r))).collect(),
                    )
                };
                obj.insert(key.into(), Value::Array(values));
                obj.insert("sources".into(), sources(&given));
            }
            CoreKind::Flag => {
                let Some(r) = given.last() else { continue };
                obj.insert("set".into(), Value::Bool(true));
                obj.insert("source".into(), Value::from(r.source.to_string()));
            }
            kind => {
                let (text, source) = match (o.name, given.last()) {
                    ("network", _) => {
                        let src = config
                            .core_given
                            .iter()
                            .rev()
                            .find(|r| {
                                matches!(
                                    r.name.as_str(),
                                    "network"
                                        | "mainnet"
                                        | "testnet"
                                        | "testnet4"
                                        | "signet"
                                        | "regtest"
                                )
                            })
                            .map(|r| r.source.to_string())
                            .unwrap_or_else(|| "default".into());
                        (config.network.as_str().to_string(), src)
                    }
                    ("lightning-dir", None) => {
                        (config.lightning_dir.display().to_string(), "default".into())
                    }
                    (_, Some(r)) => (r.value.clone().unwrap_or_default(), r.source.to_string()),
                    (_, None) => match o.default {
                        Some(d) => (d.to_string(), "default".into()),
                        None => continue,
                    },
                };
                let value = match kind {
                    CoreKind::Levels => ("value_str", Value::from(text)),
                    CoreKind::Int => (
                        "value_int",
                        text.parse::<i64>().map(Value::from).unwrap_or(Value::Null),
                    ),
                    CoreKind::Bool => (
                        "value_bool",
                        Value::Bool(matches!(text.as_str(), "true" | "yes")),
                    ),
                    CoreKind::Msat => (
                        "value_msat",
                        crate::config::parse_msat(&text)
                            .map(Value::from)
                            .unwrap_or(Value::Null),
                    ),
                    _ => ("value_str", Value::from(text)),
                };
                obj.insert(value.0.into(), value.1);
                obj.insert("source".into(), Value::from(source));
            }
        }
        out.insert(o.name.into(), Value::Object(obj));
    }
    out
}

/// The `listconfigs` entries of CLN plugin options that were given but that no plugin
/// declared (`claimed` says which ones a plugin did: those are the plugin's to show).
fn render_unclaimed_cln_plugin_options(
    config: &Config,
    claimed: impl Fn(&str) -> bool,
) -> Map<String, Value> {
    let mut out = Map::new();
    for o in CLN_PLUGIN_OPTIONS {
        if claimed(o.name) {
            continue;
        }
        let given: Vec<&RawOpt> = config
            .plugin_opts
            .iter()
            .filter(|r| r.name == o.name)
            .collect();
        let Some(last) = given.last() else { continue };
        let text = |r: &RawOpt| r.value.clone().unwrap_or_default();
        let typed = |r: &RawOpt| -> Value {
            let t = text(r);
            match o.kind {
                CoreKind::Int => t.parse::<i64>().map(Value::from).unwrap_or(Value::from(t)),
                CoreKind::Bool => match t.as_str() {
                    "true" | "yes" => Value::Bool(true),
                    "false" | "no" => Value::Bool(false),
                    _ => Value::from(t),
                },
                // A secret (string-conceal in CLN) is never shown.
                _ if o.name == "exposesecret-passphrase" => Value::from("..."),
                _ => Value::from(t),
            }
        };
        let key = |v: &Value| match v {
            Value::Number(_) => "int",
            Value::Bool(_) => "bool",
            _ => "str",
        };
        let mut obj = Map::new();
        match o.kind {
            CoreKind::Flag => {
                obj.insert("set".into(), Value::Bool(true));
                obj.insert("source".into(), Value::from(last.source.to_string()));
            }
            CoreKind::Multi => {
                obj.insert(
                    "values_str".into(),
                    given.iter().map(|r| Value::from(text(r))).collect(),
                );
                obj.insert("sources".into(), sources(&given));
            }
            _ => {
                let v = typed(last);
                obj.insert(format!("value_{}", key(&v)), v);
                obj.insert("source".into(), Value::from(last.source.to_string()));
            }
        }
        out.insert(o.name.into(), Value::Object(obj));
    }
    out
}

/// Where each occurrence of a multi option came from, in order.
fn sources(given: &[&RawOpt]) -> Value {
    given
        .iter()
        .map(|r| Value::from(r.source.to_string()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Invocation, load};

    fn config(extra: &[&str]) -> Config {
        let d = std::env::temp_dir().join(format!("fulgur-listconfigs-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(d.join("regtest")).unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(
            d.join("config"),
            "min-emergency-msat=30000sat\nfee-base=2000\n",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let mut argv = vec![
            format!("--lightning-dir={}", d.display()),
            "--network=regtest".to_string(),
        ];
        argv.extend(extra.iter().map(|a| a.to_string()));
        let c = match load(&argv) {
            Ok(Invocation::Run(c)) => *c,
            other => panic!("unexpected {other:?}"),
        };
        let _ = std::fs::remove_dir_all(&d);
        c
    }

    #[test]
    fn core_options_shown_as_clns_with_their_sources() {
        let c = config(&["--cltv-final=50", "--autoclean-cycle=60"]);
        let shown = render_core(&c);
        let file = format!("{}:1", c.lightning_dir.join("config").display());
        assert_eq!(
            shown["min-emergency-msat"],
            json!({"value_msat": 30_000_000, "source": file})
        );
        assert_eq!(shown["fee-base"]["value_int"], 2000);
        assert_eq!(
            shown["cltv-final"],
            json!({"value_int": 50, "source": "cmdline"})
        );
        assert_eq!(shown["cltv-delta"]["source"], "default");
        // A CLN plugin's option is not a core one: shown only while no plugin claims it.
        assert!(shown.get("autoclean-cycle").is_none());
        let unclaimed = render_unclaimed_cln_plugin_options(&c, |_| false);
        assert_eq!(
            unclaimed["autoclean-cycle"],
            json!({"value_int": 60, "source": "cmdline"})
        );
        assert!(render_unclaimed_cln_plugin_options(&c, |n| n == "autoclean-cycle").is_empty());
    }
}
