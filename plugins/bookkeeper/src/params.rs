//! Reading a command's params by name or position, with CLN's wording for bad ones
//! (`name: should be ...: invalid token '...'`, code -32602).

use fulgur_plugin_sdk::RpcError;
use serde_json::{Map, Value};

/// A param that is not what it should be.
pub fn bad(name: &str, should: &str, raw: &Value) -> RpcError {
    let token = match raw {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    RpcError::invalid_params(format!("{name}: {should}: invalid token '{token}'"))
}

/// The params of one call, named.
pub struct Params(Map<String, Value>);

impl Params {
    /// Binds `params` (object, array or null) to `names`; unknown names and extra
    /// positions are refused.
    pub fn new(params: &Value, names: &[&str]) -> Result<Params, RpcError> {
        let mut map = Map::new();
        match params {
            Value::Null => {}
            Value::Object(m) => {
                for (k, v) in m {
                    if !names.contains(&k.as_str()) {
                        return Err(RpcError::invalid_params(format!("unknown parameter: {k}")));
                    }
                    if !v.is_null() {
                        map.insert(k.clone(), v.clone());
                    }
                }
            }
            Value::Array(a) => {
                if a.len() > names.len() {
                    return Err(RpcError::invalid_params(format!(
                        "too many parameters: got {}, expected at most {}",
                        a.len(),
                        names.len()
                    )));
                }
                for (k, v) in names.iter().zip(a) {
                    if !v.is_null() {
                        map.insert((*k).to_string(), v.clone());
                    }
                }
            }
            other => {
                return Err(RpcError::invalid_params(format!(
                    "params must be an object or an array, got {other}"
                )));
            }
        }
        Ok(Params(map))
    }

    /// The raw value, if given.
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.0.get(name)
    }

    /// The raw value; an error if missing.
    pub fn required(&self, name: &str) -> Result<&Value, RpcError> {
        self.get(name)
            .ok_or_else(|| RpcError::invalid_params(format!("missing required parameter: {name}")))
    }

    /// A string param.
    pub fn string(&self, name: &str) -> Result<Option<String>, RpcError> {
        self.get(name)
            .map(|v| {
                v.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| bad(name, "should be a string", v))
            })
            .transpose()
    }

    /// A required string param.
    pub fn required_string(&self, name: &str) -> Result<String, RpcError> {
        self.required(name)?;
        self.string(name)?
            .ok_or_else(|| RpcError::invalid_params(format!("missing required parameter: {name}")))
    }

    /// An unsigned integer (a number, or a string of digits as lightning-cli sends).
    pub fn u64(&self, name: &str) -> Result<Option<u64>, RpcError> {
        self.get(name)
            .map(|v| {
                v.as_u64()
                    .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
                    .ok_or_else(|| bad(name, "should be an unsigned 64 bit integer", v))
            })
            .transpose()
    }

    /// A boolean (`true`/`false`, also as strings).
    pub fn bool(&self, name: &str) -> Result<Option<bool>, RpcError> {
        self.get(name)
            .map(|v| match v {
                Value::Bool(b) => Ok(*b),
                Value::String(s) if s == "true" => Ok(true),
                Value::String(s) if s == "false" => Ok(false),
                _ => Err(bad(name, "should be 'true' or 'false'", v)),
            })
            .transpose()
    }

    /// A 32-byte hash in hex, lower-cased.
    pub fn hash(&self, name: &str) -> Result<Option<String>, RpcError> {
        self.get(name)
            .map(|v| {
                v.as_str()
                    .filter(|s| s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit()))
                    .map(str::to_ascii_lowercase)
                    .ok_or_else(|| bad(name, "should be a 32 byte hex value", v))
            })
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn binds_by_name_and_position() {
        let p = Params::new(&json!([null, "5"]), &["a", "b"]).unwrap();
        assert_eq!(p.u64("a").unwrap(), None);
        assert_eq!(p.u64("b").unwrap(), Some(5));
        assert!(Params::new(&json!([1, 2, 3]), &["a", "b"]).is_err());
        let e = Params::new(&json!({"c": 1}), &["a"]).err().unwrap();
        assert_eq!(e.code, -32602);
        let p = Params::new(&json!({"a": "x"}), &["a"]).unwrap();
        let e = p.hash("a").unwrap_err();
        assert_eq!(
            e.message,
            "a: should be a 32 byte hex value: invalid token 'x'"
        );
        assert!(p.bool("a").is_err());
        assert!(p.required("b").is_err());
    }
}
