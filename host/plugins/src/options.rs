//! The run-time table of plugin options: as declared in manifests, with their values and
//! where each came from, their `listconfigs` entries and `setconfig` checks. (The core
//! options' entries and the `config.setconfig` file are `fulgurd`'s: `core_options.rs`.)
//!
//! Plugin option values are kept as typed JSON with their [`Source`]; a plugin that is
//! stopped loses its `plugin start` overrides but keeps its command-line and config-file
//! values for its next start, as in CLN.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};

use fulgur_protocol::RpcError;
use fulgur_protocol::manifest::OptionDecl;
use fulgur_protocol::options::OptionType;
use serde_json::{Map, Value, json};

/// Where a value came from, as `listconfigs` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// The built-in default.
    Default,
    /// The command line.
    Cmdline,
    /// A config file and line number.
    File(PathBuf, usize),
    /// A `plugin start` parameter.
    PluginStart,
    /// A transient `setconfig`.
    SetConfig,
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Default => f.write_str("default"),
            Source::Cmdline => f.write_str("cmdline"),
            Source::File(p, line) => write!(f, "{}:{line}", p.display()),
            Source::PluginStart => f.write_str("pluginstart"),
            Source::SetConfig => f.write_str("setconfig"),
        }
    }
}

/// One option occurrence before interpretation: `--name[=value]` or a config line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawOpt {
    /// The option name without dashes.
    pub name: String,
    /// The value, `None` for a bare `--name`.
    pub value: Option<String>,
    /// Where it came from.
    pub source: Source,
}

/// An option a running plugin declared.
#[derive(Debug, Clone)]
pub struct PluginOption {
    /// The declaration from the manifest.
    pub decl: OptionDecl,
    /// The plugin's path.
    pub plugin: PathBuf,
    /// Typed values in order (only the last counts unless `multi`).
    pub values: Vec<(Value, Source)>,
}

impl PluginOption {
    /// The value sent in `init.options`, if any (CLN rule 6).
    pub fn init_value(&self) -> Option<Value> {
        if self.decl.multi {
            if !self.values.is_empty() {
                return Some(Value::Array(
                    self.values.iter().map(|(v, _)| v.clone()).collect(),
                ));
            }
            return self.default().map(|d| Value::Array(vec![d]));
        }
        if let Some((v, _)) = self.values.last() {
            // A flag is present only when set.
            if self.decl.kind == OptionType::Flag && *v == Value::Bool(false) {
                return None;
            }
            return Some(v.clone());
        }
        self.default()
    }

    fn default(&self) -> Option<Value> {
        let d = self.decl.default.as_ref().filter(|d| !d.is_null())?;
        match self.decl.kind.parse_json(d) {
            Ok(Value::Bool(false)) if self.decl.kind == OptionType::Flag => None,
            Ok(v) => Some(v),
            Err(_) if self.decl.kind == OptionType::Flag => None,
            Err(_) => None,
        }
    }
}

/// Why a plugin's options cannot be registered.
#[derive(Debug, thiserror::Error)]
pub enum OptionError {
    /// The name is taken by a core option or another plugin.
    #[error("option name '{0}' is already taken")]
    Taken(String),
    /// The declaration itself is invalid.
    #[error("option '{0}': {1}")]
    Invalid(String, String),
}

/// All options with their values.
#[derive(Debug, Default)]
pub struct OptionTable {
    plugin: BTreeMap<String, PluginOption>,
    /// Values from the command line and config files for plugin options, by name, kept
    /// across plugin restarts.
    static_values: HashMap<String, Vec<RawOpt>>,
    /// The node's own option names (`--help` and `--version` too), which no plugin may take.
    core: HashSet<&'static str>,
}

fn valid_name(n: &str) -> bool {
    !n.is_empty()
        && n.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

impl OptionTable {
    /// A table holding the command-line and config-file values meant for plugins; `core`
    /// names the node's own options.
    pub fn new(plugin_raw: &[RawOpt], core: &[&'static str]) -> Self {
        let mut static_values: HashMap<String, Vec<RawOpt>> = HashMap::new();
        for r in plugin_raw {
            static_values
                .entry(r.name.clone())
                .or_default()
                .push(r.clone());
        }
        OptionTable {
            plugin: BTreeMap::new(),
            static_values,
            core: core.iter().copied().collect(),
        }
    }

    /// Registers a plugin's options, typing the values configured for them, plus the
    /// `plugin start` overrides in `extra`. On error nothing is registered.
    pub fn register(
        &mut self,
        plugin: &Path,
        decls: &[OptionDecl],
        extra: &[RawOpt],
    ) -> Result<(), OptionError> {
        let mut added: Vec<PluginOption> = vec![];
        for d in decls {
            if !valid_name(&d.name) {
                return Err(OptionError::Invalid(
                    d.name.clone(),
                    "name must be lower-case letters, digits, '-' or '_'".into(),
                ));
            }
            if self.core.contains(d.name.as_str())
                || matches!(d.name.as_str(), "help" | "version")
                || self.plugin.contains_key(&d.name)
                || added.iter().any(|a| a.decl.name == d.name)
            {
                return Err(OptionError::Taken(d.name.clone()));
            }
            if d.multi && matches!(d.kind, OptionType::Bool | OptionType::Flag) {
                return Err(OptionError::Invalid(
                    d.name.clone(),
                    "bool and flag options cannot be multi".into(),
                ));
            }
            if let Some(def) = d.default.as_ref().filter(|v| !v.is_null()) {
                let ok = if d.kind == OptionType::Flag {
                    def == &Value::Bool(false) || def == "false"
                } else {
                    d.kind.parse_json(def).is_ok()
                };
                if !ok {
                    return Err(OptionError::Invalid(
                        d.name.clone(),
                        format!("bad default {def}"),
                    ));
                }
            }
            let overrides: Vec<&RawOpt> = extra.iter().filter(|r| r.name == d.name).collect();
            let raws: Vec<&RawOpt> = if overrides.is_empty() {
                self.static_values
                    .get(&d.name)
                    .map(|v| v.iter().collect())
                    .unwrap_or_default()
            } else if d.multi {
                self.static_values
                    .get(&d.name)
                    .into_iter()
                    .flatten()
                    .chain(overrides)
                    .collect()
            } else {
                overrides
            };
            let mut values = vec![];
            for r in raws {
                let v = d
                    .kind
                    .parse(r.value.as_deref())
                    .map_err(|e| OptionError::Invalid(d.name.clone(), e))?;
                values.push((v, r.source.clone()));
            }
            added.push(PluginOption {
                decl: d.clone(),
                plugin: plugin.to_path_buf(),
                values,
            });
        }
        for a in added {
            self.plugin.insert(a.decl.name.clone(), a);
        }
        Ok(())
    }

    /// Names of configured options that no plugin has claimed (a start-up error).
    pub fn unclaimed(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .static_values
            .keys()
            .filter(|k| !self.plugin.contains_key(*k))
            .cloned()
            .collect();
        v.sort();
        v
    }

    /// Removes a stopped plugin's options.
    pub fn unregister(&mut self, plugin: &Path) {
        self.plugin.retain(|_, o| o.plugin != plugin);
    }

    /// `init.options` for a plugin.
    pub fn init_options(&self, plugin: &Path) -> Map<String, Value> {
        self.plugin
            .values()
            .filter(|o| o.plugin == plugin)
            .filter_map(|o| o.init_value().map(|v| (o.decl.name.clone(), v)))
            .collect()
    }

    /// Options of one plugin, for `--help`.
    pub fn for_plugin(&self, plugin: &Path) -> Vec<&PluginOption> {
        self.plugin
            .values()
            .filter(|o| o.plugin == plugin)
            .collect()
    }

    /// Checks a `setconfig` value for a dynamic plugin option and returns (typed values,
    /// the strings to send the plugin).
    pub fn check_set(
        &self,
        name: &str,
        val: Option<&Value>,
    ) -> Result<(&PluginOption, Vec<Value>, Option<Value>), RpcError> {
        let opt = self.plugin.get(name).ok_or_else(|| {
            if self.core.contains(name) {
                RpcError::invalid_params(format!("{name} is not a dynamic option"))
            } else {
                RpcError::invalid_params(format!("Unknown config option {name}"))
            }
        })?;
        if !opt.decl.dynamic {
            return Err(RpcError::invalid_params(format!(
                "{name} is not a dynamic option"
            )));
        }
        let as_text = |v: &Value| -> Result<String, RpcError> {
            match v {
                // config.setconfig is read back line by line, trimmed: a line break would
                // smuggle other options into it, surrounding blanks would be lost.
                Value::String(s) if s.contains(['\n', '\r']) || s.trim() != s => {
                    Err(RpcError::invalid_params(format!(
                        "{name}: value must be one line without surrounding blanks"
                    )))
                }
                Value::String(s) => Ok(s.clone()),
                Value::Number(_) | Value::Bool(_) => Ok(v.to_string()),
                _ => Err(RpcError::invalid_params(format!(
                    "{name}: value must be a string, number or bool"
                ))),
            }
        };
        let parse = |t: &str| {
            opt.decl
                .kind
                .parse(Some(t))
                .map_err(|e| RpcError::invalid_params(format!("{name}: {e}")))
        };
        match (opt.decl.kind, val) {
            (OptionType::Flag, None) => Ok((opt, vec![Value::Bool(true)], None)),
            (OptionType::Flag, Some(_)) => Err(RpcError::invalid_params(format!(
                "{name}: flag takes no value"
            ))),
            (_, None) => Err(RpcError::invalid_params(format!(
                "{name}: requires a value"
            ))),
            (_, Some(Value::Array(items))) if opt.decl.multi => {
                let texts = items.iter().map(as_text).collect::<Result<Vec<_>, _>>()?;
                let typed = texts
                    .iter()
                    .map(|t| parse(t))
                    .collect::<Result<Vec<_>, _>>()?;
                Ok((
                    opt,
                    typed,
                    Some(Value::Array(texts.into_iter().map(Value::from).collect())),
                ))
            }
            (_, Some(v)) => {
                let t = as_text(v)?;
                let typed = parse(&t)?;
                let sent = if opt.decl.multi {
                    json!([t])
                } else {
                    Value::from(t)
                };
                Ok((opt, vec![typed], Some(sent)))
            }
        }
    }

    /// Records an accepted `setconfig`.
    pub fn set(&mut self, name: &str, typed: Vec<Value>, source: Source) {
        if let Some(o) = self.plugin.get_mut(name) {
            o.values = typed.into_iter().map(|v| (v, source.clone())).collect();
        }
    }

    /// The `listconfigs` entry of a plugin option.
    pub fn render_plugin(&self, name: &str) -> Option<Value> {
        let o = self.plugin.get(name)?;
        let mut obj = Map::new();
        let values: Vec<(Value, Source)> = if o.values.is_empty() {
            o.default()
                .map(|d| vec![(d, Source::Default)])
                .unwrap_or_default()
        } else {
            o.values.clone()
        };
        if values.is_empty() {
            return None;
        }
        let key = match o.decl.kind {
            OptionType::String => "str",
            OptionType::StringConceal => "str",
            OptionType::Int => "int",
            OptionType::Bool => "bool",
            OptionType::Flag => "",
        };
        let shown = |v: &Value| {
            if o.decl.kind == OptionType::StringConceal {
                Value::from("...")
            } else {
                v.clone()
            }
        };
        if o.decl.kind == OptionType::Flag {
            obj.insert("set".into(), Value::Bool(true));
            obj.insert(
                "source".into(),
                Value::from(values[values.len() - 1].1.to_string()),
            );
        } else if o.decl.multi {
            obj.insert(
                format!("values_{key}"),
                Value::Array(values.iter().map(|(v, _)| shown(v)).collect()),
            );
            obj.insert(
                "sources".into(),
                Value::Array(
                    values
                        .iter()
                        .map(|(_, s)| Value::from(s.to_string()))
                        .collect(),
                ),
            );
        } else {
            let (v, s) = &values[values.len() - 1];
            obj.insert(format!("value_{key}"), shown(v));
            obj.insert("source".into(), Value::from(s.to_string()));
        }
        obj.insert("plugin".into(), Value::from(o.plugin.display().to_string()));
        if o.decl.dynamic {
            obj.insert("dynamic".into(), Value::Bool(true));
        }
        Some(Value::Object(obj))
    }

    /// Every plugin option name.
    pub fn plugin_names(&self) -> Vec<String> {
        self.plugin.keys().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEST_CORE: &[&str] = &["log-level", "network"];

    fn decl(v: Value) -> OptionDecl {
        serde_json::from_value(v).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn typed_init_values() {
        let raw = vec![
            RawOpt {
                name: "i".into(),
                value: Some("5".into()),
                source: Source::Cmdline,
            },
            RawOpt {
                name: "m".into(),
                value: Some("a".into()),
                source: Source::Cmdline,
            },
            RawOpt {
                name: "m".into(),
                value: Some("b".into()),
                source: Source::Cmdline,
            },
            RawOpt {
                name: "f".into(),
                value: None,
                source: Source::Cmdline,
            },
        ];
        let mut t = OptionTable::new(&raw, TEST_CORE);
        let p = Path::new("/p");
        t.register(
            p,
            &[
                decl(json!({"name":"i","type":"int","description":""})),
                decl(json!({"name":"m","type":"string","multi":true,"description":""})),
                decl(json!({"name":"f","type":"flag","description":"","default":false})),
                decl(json!({"name":"g","type":"flag","description":""})),
                decl(json!({"name":"b","type":"bool","description":"","default":"true"})),
                decl(json!({"name":"s","type":"string","description":""})),
            ],
            &[],
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let init = t.init_options(p);
        assert_eq!(
            Value::Object(init),
            json!({"b":true,"f":true,"i":5,"m":["a","b"]})
        );
        assert!(t.unclaimed().is_empty());
    }

    #[test]
    fn collisions_and_bad_values() {
        let raw = vec![RawOpt {
            name: "i".into(),
            value: Some("x".into()),
            source: Source::Cmdline,
        }];
        let mut t = OptionTable::new(&raw, TEST_CORE);
        assert!(matches!(
            t.register(
                Path::new("/p"),
                &[decl(json!({"name":"network","type":"string"}))],
                &[]
            ),
            Err(OptionError::Taken(_))
        ));
        assert!(matches!(
            t.register(
                Path::new("/p"),
                &[decl(json!({"name":"i","type":"int"}))],
                &[]
            ),
            Err(OptionError::Invalid(..))
        ));
        assert_eq!(t.unclaimed(), vec!["i".to_string()]);
    }

    #[test]
    fn setconfig_checks() {
        let mut t = OptionTable::new(&[], TEST_CORE);
        t.register(
            Path::new("/p"),
            &[
                decl(json!({"name":"d","type":"int","dynamic":true})),
                decl(json!({"name":"s","type":"string"})),
            ],
            &[],
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert!(t.check_set("s", Some(&json!("x"))).is_err());
        assert!(t.check_set("d", Some(&json!("x"))).is_err());
        let (_, typed, sent) = t
            .check_set("d", Some(&json!(7)))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((typed, sent), (vec![json!(7)], Some(json!("7"))));
        // A value that config.setconfig cannot hold as given (what fuzz/'s plugin_options
        // checks): a line break would add options, blanks would be trimmed away.
        for bad in ["7\nplugin=/tmp/x", " 7", "7\r"] {
            assert!(t.check_set("d", Some(&json!(bad))).is_err(), "{bad:?}");
        }
    }
}
