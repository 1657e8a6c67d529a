//! `fulgurd`'s side of the option table: the core options' `listconfigs` entries and the
//! `config.setconfig` file that a non-transient `setconfig` writes.

use std::path::Path;

use serde_json::{Map, Value};

use crate::config::{CORE_OPTIONS, Config, CoreKind, RawOpt, Source};

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
            CoreKind::Multi => {
                if given.is_empty() {
                    continue;
                }
                obj.insert(
                    "values_str".into(),
                    given
                        .iter()
                        .map(|r| Value::from(r.value.clone().unwrap_or_default()))
                        .collect(),
                );
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
