//! Plugin option types and the parsing of their values.
//!
//! The node parses option values from the command line, config files, `plugin start` and
//! `setconfig`, always as strings, and hands them to plugins as typed JSON in `init`
//! (CLN rule 6: int → number, bool → true/false, flag → `true` only when set, multi →
//! array). The SDK uses the same rules to read them back.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The type of a plugin option, as declared in the manifest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OptionType {
    /// Any string.
    String,
    /// A string shown as `...` in `listconfigs` (a password, for instance).
    StringConceal,
    /// A signed 64-bit integer.
    Int,
    /// `true` or `false` (also `yes`/`no`); never `1`/`0`.
    Bool,
    /// Present or absent, takes no value.
    Flag,
}

impl OptionType {
    /// The name used in manifests and `--help`.
    pub fn as_str(self) -> &'static str {
        match self {
            OptionType::String => "string",
            OptionType::StringConceal => "string-conceal",
            OptionType::Int => "int",
            OptionType::Bool => "bool",
            OptionType::Flag => "flag",
        }
    }

    /// Parses one value given as text (`None` when the option was given without `=`).
    /// Returns the typed JSON value or a message saying what is wrong.
    pub fn parse(self, raw: Option<&str>) -> Result<Value, String> {
        match (self, raw) {
            (OptionType::Flag, None) => Ok(Value::Bool(true)),
            // `plugin start` passes JSON `true`/`false` through as text, whatever the type.
            (OptionType::Flag, Some("true")) => Ok(Value::Bool(true)),
            (OptionType::Flag, Some("false")) => Ok(Value::Bool(false)),
            (OptionType::Flag, Some(v)) => Err(format!("flag takes no value, got '{v}'")),
            (_, None) => Err("requires a value".into()),
            (OptionType::String | OptionType::StringConceal, Some(v)) => Ok(Value::from(v)),
            (OptionType::Int, Some(v)) => v
                .trim()
                .parse::<i64>()
                .map(Value::from)
                .map_err(|_| format!("'{v}' is not a number")),
            (OptionType::Bool, Some(v)) => match v {
                "true" | "yes" => Ok(Value::Bool(true)),
                "false" | "no" => Ok(Value::Bool(false)),
                _ => Err(format!("'{v}' is not a bool, must be true or false")),
            },
        }
    }

    /// Checks a value given as JSON (a manifest `default`, a `plugin start` parameter) and
    /// returns it in canonical typed form. Strings are parsed as on the command line.
    pub fn parse_json(self, v: &Value) -> Result<Value, String> {
        match (self, v) {
            (_, Value::String(s)) => self.parse(Some(s)),
            (OptionType::Int, Value::Number(n)) if n.is_i64() => Ok(v.clone()),
            (OptionType::Bool, Value::Bool(_)) => Ok(v.clone()),
            (OptionType::Flag, Value::Bool(true)) => Ok(v.clone()),
            (OptionType::String | OptionType::StringConceal, Value::Number(_) | Value::Bool(_)) => {
                Ok(Value::from(v.to_string()))
            }
            _ => Err(format!("{v} is not a valid {}", self.as_str())),
        }
    }
}

/// Renders a typed value back to the text a user would write (`setconfig` sends values to
/// plugins as strings, as CLN does).
pub fn value_to_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_like_cln() {
        assert_eq!(OptionType::Int.parse(Some("-42")), Ok(json!(-42)));
        assert!(OptionType::Int.parse(Some("notok")).is_err());
        assert_eq!(OptionType::Bool.parse(Some("false")), Ok(json!(false)));
        assert!(OptionType::Bool.parse(Some("1")).is_err());
        assert!(OptionType::Bool.parse(Some("!")).is_err());
        assert_eq!(OptionType::Flag.parse(None), Ok(json!(true)));
        assert!(OptionType::Flag.parse(Some("True")).is_err());
        assert!(OptionType::String.parse(None).is_err());
        assert_eq!(OptionType::String.parse_json(&json!(5)), Ok(json!("5")));
        assert_eq!(OptionType::Int.parse_json(&json!("7")), Ok(json!(7)));
        assert!(OptionType::Int.parse_json(&json!(1.5)).is_err());
    }
}
