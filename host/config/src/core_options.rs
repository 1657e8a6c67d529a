//! `fulgurd`'s side of the option table: the core options' `listconfigs` entries and the
//! `config.setconfig` file that a non-transient `setconfig` writes.

use std::path::Path;

use serde_json::{Map, Value};

use crate::config::{CLN_PLUGIN_OPTIONS, CORE_OPTIONS, Config, CoreKind, RawOpt, Source};

/// The `listconfigs` entries of the core options.
pub fn render_core(config: &Config) -> Map<String, Value> {
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
                obj.insert(
                    "sources".into(),
                    given
                        .iter()
                        .map(|r| Value::from(r.source.to_string()))
                        .collect(),
                );
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
pub fn render_unclaimed_cln_plugin_options(
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
                obj.insert(
                    "sources".into(),
                    given
                        .iter()
                        .map(|r| Value::from(r.source.to_string()))
                        .collect(),
                );
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

/// Persists a non-transient `setconfig` to `config.setconfig`, replacing earlier lines for
/// the same option; returns the source (file and line) of the new value.
pub fn persist_setconfig(
    file: &Path,
    name: &str,
    texts: &[Option<String>],
) -> std::io::Result<Source> {
    let old = match std::fs::read_to_string(file) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e),
    };
    let mut lines: Vec<String> = old
        .lines()
        .filter(|l| {
            let key = l.split('=').next().unwrap_or("").trim();
            key != name
        })
        .map(String::from)
        .collect();
    if lines.is_empty() {
        lines.push(
            "# Written by fulgurd's setconfig: values here override the config files.".into(),
        );
    }
    for t in texts {
        lines.push(match t {
            Some(v) => format!("{name}={v}"),
            None => name.to_string(),
        });
    }
    let line = lines.len();
    let tmp = file.with_extension("setconfig.tmp");
    std::fs::write(&tmp, lines.join("\n") + "\n")?;
    std::fs::rename(&tmp, file)?;
    Ok(Source::File(file.to_path_buf(), line))
}
