//! Typed plugin options: declaration, reading the values `init` delivers, and parsing the
//! string values `setconfig` delivers.
//!
//! Values are kept as typed JSON exactly as CLN delivers them (int → number, bool →
//! boolean, string → string, flag → `true`, multi → array); [`crate::Plugin`] offers typed
//! getters over them.

use fulgur_protocol::manifest::OptionDecl;
use fulgur_protocol::options::OptionType;
use serde_json::{Map, Value};

use crate::error::BuildError;

/// One option the plugin accepts. Build it with a constructor per type, then chain
/// [`OptionSpec::default`], [`OptionSpec::multi`] and [`OptionSpec::dynamic`]; register it
/// with [`crate::Builder::option`].
///
/// Users set it as `--<name>=<value>` on the node's command line or `<name>=<value>` in its
/// config file; dynamic options also with `setconfig <name> <value>`.
#[derive(Debug, Clone, PartialEq)]
pub struct OptionSpec {
    pub(crate) name: String,
    pub(crate) kind: OptionType,
    pub(crate) description: String,
    pub(crate) default: Option<Value>,
    pub(crate) multi: bool,
    pub(crate) dynamic: bool,
    pub(crate) deprecated: bool,
}

impl OptionSpec {
    fn new(name: impl Into<String>, kind: OptionType, description: impl Into<String>) -> Self {
        OptionSpec {
            name: name.into(),
            kind,
            description: description.into(),
            default: None,
            multi: false,
            dynamic: false,
            deprecated: false,
        }
    }

    /// A `string` option.
    pub fn string(name: impl Into<String>, description: impl Into<String>) -> Self {
        Self::new(name, OptionType::String, description)
    }

    /// A `string-conceal` option: a string shown as `...` by `listconfigs` (secrets).
    pub fn string_conceal(name: impl Into<String>, description: impl Into<String>) -> Self {
        Self::new(name, OptionType::StringConceal, description)
    }

    /// An `int` option (signed 64-bit).
    pub fn int(name: impl Into<String>, description: impl Into<String>) -> Self {
        Self::new(name, OptionType::Int, description)
    }

    /// A `bool` option (`true`/`false`).
    pub fn bool(name: impl Into<String>, description: impl Into<String>) -> Self {
        Self::new(name, OptionType::Bool, description)
    }

    /// A `flag` option: given without a value, delivered as `true` only when set.
    pub fn flag(name: impl Into<String>, description: impl Into<String>) -> Self {
        Self::new(name, OptionType::Flag, description)
    }

    /// The default value, as typed JSON or as the text a user would write (`"42"` for an
    /// int is accepted). Checked against the type when the plugin is configured.
    pub fn default(mut self, value: impl Into<Value>) -> Self {
        self.default = Some(value.into());
        self
    }

    /// The option may be given several times; the plugin reads an array of values.
    /// Not allowed for `bool` and `flag`.
    pub fn multi(mut self) -> Self {
        self.multi = true;
        self
    }

    /// The option may be changed at run time with `setconfig`. Register a callback with
    /// [`crate::Builder::on_change`] to validate (and reject) new values; without one every
    /// well-typed value is accepted.
    pub fn dynamic(mut self) -> Self {
        self.dynamic = true;
        self
    }

    /// Marks the option deprecated (hidden from `--help`, refused unless deprecated APIs are
    /// enabled on the node).
    pub fn deprecated(mut self) -> Self {
        self.deprecated = true;
        self
    }

    /// The option's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The option's type.
    pub fn kind(&self) -> OptionType {
        self.kind
    }

    /// Whether the option can be changed with `setconfig`.
    pub fn is_dynamic(&self) -> bool {
        self.dynamic
    }

    /// Checks the declaration and returns the manifest entry.
    pub(crate) fn to_decl(&self) -> Result<OptionDecl, BuildError> {
        let valid_name = !self.name.is_empty()
            && self
                .name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
        if !valid_name {
            return Err(BuildError::InvalidOptionName(self.name.clone()));
        }
        if self.multi && matches!(self.kind, OptionType::Bool | OptionType::Flag) {
            return Err(BuildError::MultiNotAllowed(self.name.clone()));
        }
        let default = match (&self.default, self.kind) {
            (None, _) => None,
            (Some(Value::Bool(false)), OptionType::Flag) => Some(Value::Bool(false)),
            (Some(_), OptionType::Flag) => {
                return Err(BuildError::BadDefault {
                    option: self.name.clone(),
                    reason: "a flag's default can only be false".into(),
                });
            }
            (Some(v), kind) => {
                Some(
                    kind.parse_json(v)
                        .map_err(|reason| BuildError::BadDefault {
                            option: self.name.clone(),
                            reason,
                        })?,
                )
            }
        };
        Ok(OptionDecl {
            name: self.name.clone(),
            kind: self.kind,
            description: self.description.clone(),
            default,
            multi: self.multi,
            dynamic: self.dynamic,
            deprecated: Value::Bool(self.deprecated),
        })
    }

    /// Reads this option's value from `init.options`; `Ok(None)` when absent and no usable
    /// default. `Err` says what is wrong (the plugin then disables itself).
    pub(crate) fn read_init(&self, given: Option<&Value>) -> Result<Option<Value>, String> {
        let Some(v) = given else {
            return Ok(match (&self.default, self.kind) {
                (_, OptionType::Flag) | (None, _) => None,
                (Some(d), kind) => {
                    let d = kind.parse_json(d).ok();
                    if self.multi {
                        d.map(|d| Value::Array(vec![d]))
                    } else {
                        d
                    }
                }
            });
        };
        if self.multi {
            let items = match v {
                Value::Array(items) => items.as_slice(),
                single => std::slice::from_ref(single),
            };
            let typed: Result<Vec<Value>, String> =
                items.iter().map(|item| self.check_typed(item)).collect();
            return typed.map(|t| Some(Value::Array(t)));
        }
        match (self.kind, v) {
            (OptionType::Flag, Value::Bool(false)) => Ok(None),
            _ => self.check_typed(v).map(Some),
        }
    }

    /// A value must already have the declared JSON type (CLN rule 6); only an `int` given as
    /// a string of digits is tolerated.
    fn check_typed(&self, v: &Value) -> Result<Value, String> {
        let ok = match (self.kind, v) {
            (OptionType::String | OptionType::StringConceal, Value::String(_)) => true,
            (OptionType::Int, Value::Number(n)) => n.is_i64(),
            (OptionType::Int, Value::String(_)) => {
                return self
                    .kind
                    .parse_json(v)
                    .map_err(|e| format!("option '{}': {e}", self.name));
            }
            (OptionType::Bool, Value::Bool(_)) => true,
            (OptionType::Flag, Value::Bool(true)) => true,
            _ => false,
        };
        if ok {
            Ok(v.clone())
        } else {
            Err(format!(
                "option '{}' should be a {}, got {v}",
                self.name,
                self.kind.as_str()
            ))
        }
    }

    /// Parses `setconfig`'s `val` (a string, an array of strings for multi options, absent
    /// for flags) into the typed value.
    pub(crate) fn parse_setconfig(&self, val: Option<&Value>) -> Result<Value, String> {
        let one = |v: &Value| -> Result<Value, String> {
            match v {
                Value::String(s) => self.kind.parse(Some(s)),
                other => self.kind.parse_json(other),
            }
            .map_err(|e| format!("{}: {e}", self.name))
        };
        match (val, self.kind) {
            (None | Some(Value::Null), OptionType::Flag) => Ok(Value::Bool(true)),
            (None | Some(Value::Null), _) => Err(format!("{}: requires a value", self.name)),
            (Some(Value::Array(items)), _) if self.multi => items
                .iter()
                .map(one)
                .collect::<Result<Vec<_>, _>>()
                .map(Value::Array),
            (Some(v), _) if self.multi => one(v).map(|t| Value::Array(vec![t])),
            (Some(v), _) => one(v),
        }
    }
}

/// Reads every declared option from `init.options`.
pub(crate) fn read_all(
    specs: &[OptionSpec],
    given: &Map<String, Value>,
) -> Result<Map<String, Value>, String> {
    let mut out = Map::new();
    for spec in specs {
        if let Some(v) = spec.read_init(given.get(&spec.name))? {
            out.insert(spec.name.clone(), v);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn declarations_are_checked() {
        assert!(OptionSpec::string("Bad Name", "d").to_decl().is_err());
        assert_eq!(
            OptionSpec::flag("f", "d").multi().to_decl(),
            Err(BuildError::MultiNotAllowed("f".into()))
        );
        assert!(OptionSpec::int("n", "d").default("x").to_decl().is_err());
        assert!(OptionSpec::flag("f", "d").default(true).to_decl().is_err());
        let d = OptionSpec::int("n", "d")
            .default("42")
            .dynamic()
            .to_decl()
            .expect("valid");
        assert_eq!(d.default, Some(json!(42)));
        assert!(d.dynamic);
    }

    #[test]
    fn init_values_must_be_typed() {
        let int = OptionSpec::int("n", "d").default(3);
        assert_eq!(int.read_init(None), Ok(Some(json!(3))));
        assert_eq!(int.read_init(Some(&json!(5))), Ok(Some(json!(5))));
        assert!(int.read_init(Some(&json!(true))).is_err());
        let multi = OptionSpec::string("m", "d").multi();
        assert_eq!(
            multi.read_init(Some(&json!(["a", "b"]))),
            Ok(Some(json!(["a", "b"])))
        );
        assert!(multi.read_init(Some(&json!([1]))).is_err());
        assert_eq!(OptionSpec::flag("f", "d").read_init(None), Ok(None));
    }

    #[test]
    fn setconfig_values_are_strings() {
        let int = OptionSpec::int("n", "d").dynamic();
        assert_eq!(int.parse_setconfig(Some(&json!("12"))), Ok(json!(12)));
        assert!(int.parse_setconfig(Some(&json!("twelve"))).is_err());
        let multi = OptionSpec::string("m", "d").multi().dynamic();
        assert_eq!(
            multi.parse_setconfig(Some(&json!(["x", "y"]))),
            Ok(json!(["x", "y"]))
        );
        assert_eq!(
            OptionSpec::flag("f", "d").parse_setconfig(None),
            Ok(json!(true))
        );
    }
}
