//! Binding a request's params to a typed struct, the way pyln-client binds them to a
//! Python function's arguments: an object is matched by name, an array by position.
//!
//! CLN callers may send either form (`fulgur-cli hello world` sends `["world"]`,
//! `fulgur-cli -k hello name=world` sends `{"name":"world"}`), so a handler should accept
//! both. [`bind`] turns the positional form into the named form using the parameter names
//! in order, then deserialises.

use fulgur_protocol::RpcError;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

/// Binds `params` (object, array or `null`) into `T`, naming positional values after
/// `names` in order. A positional `null` leaves that parameter out (CLN's way of skipping
/// an optional one). Too many positional values, or values that don't fit `T`, give a
/// `-32602` (invalid params) error to return to the caller.
///
/// ```
/// use serde::Deserialize;
/// use serde_json::json;
///
/// #[derive(Deserialize)]
/// struct Hello { name: Option<String>, times: Option<u32> }
///
/// let named: Hello = fulgur_plugin_sdk::bind(&json!({"name": "bob"}), &["name", "times"]).unwrap();
/// let positional: Hello = fulgur_plugin_sdk::bind(&json!(["bob", 2]), &["name", "times"]).unwrap();
/// assert_eq!(named.name, positional.name);
/// assert_eq!(positional.times, Some(2));
/// ```
pub fn bind<T: DeserializeOwned>(params: &Value, names: &[&str]) -> Result<T, RpcError> {
    let object = match params {
        Value::Object(map) => Value::Object(map.clone()),
        Value::Null => Value::Object(Map::new()),
        Value::Array(items) => {
            if items.len() > names.len() {
                return Err(RpcError::invalid_params(format!(
                    "too many parameters: got {}, expected at most {}",
                    items.len(),
                    names.len()
                )));
            }
            let mut map = Map::new();
            for (name, value) in names.iter().zip(items) {
                if !value.is_null() {
                    map.insert((*name).to_string(), value.clone());
                }
            }
            Value::Object(map)
        }
        other => {
            return Err(RpcError::invalid_params(format!(
                "params must be an object or an array, got {other}"
            )));
        }
    };
    serde_json::from_value(object).map_err(|e| RpcError::invalid_params(e.to_string()))
}

/// The parameter names in a usage string, in order: `"name [greeting] [times]"` gives
/// `["name", "greeting", "times"]`. Brackets, braces and trailing `...` are ignored.
pub fn usage_names(usage: &str) -> Vec<String> {
    usage
        .split_whitespace()
        .map(|w| w.trim_matches(|c| matches!(c, '[' | ']' | '{' | '}' | '<' | '>' | '.')))
        .filter(|w| !w.is_empty())
        .map(str::to_string)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use serde_json::json;

    #[derive(Debug, Deserialize, PartialEq)]
    struct P {
        a: String,
        b: Option<i64>,
    }

    #[test]
    fn binds_both_forms() {
        let names = ["a", "b"];
        assert_eq!(
            bind::<P>(&json!({"a":"x","b":1}), &names),
            Ok(P {
                a: "x".into(),
                b: Some(1)
            })
        );
        assert_eq!(
            bind::<P>(&json!(["x", 1]), &names),
            Ok(P {
                a: "x".into(),
                b: Some(1)
            })
        );
        assert_eq!(
            bind::<P>(&json!(["x", null]), &names),
            Ok(P {
                a: "x".into(),
                b: None
            })
        );
        let too_many = bind::<P>(&json!(["x", 1, 2]), &names).expect_err("too many");
        assert_eq!(too_many.code, fulgur_protocol::error::codes::INVALID_PARAMS);
        assert!(bind::<P>(&json!({"b":1}), &names).is_err());
        assert!(bind::<P>(&json!("x"), &names).is_err());
    }

    #[test]
    fn names_from_usage() {
        assert_eq!(
            usage_names("name [greeting] [times]"),
            ["name", "greeting", "times"]
        );
        assert_eq!(usage_names("{id} [rest...]"), ["id", "rest"]);
        assert!(usage_names("").is_empty());
    }
}
