//! Binding JSON-RPC params, given by name (object) or by position (array), to a command's
//! parameter list, with CLN's error messages (`-32602`).

use fulgur_protocol::RpcError;
use serde_json::{Map, Value};

/// One parameter of a command.
#[derive(Debug, Clone, Copy)]
pub struct ParamSpec {
    /// Its name.
    pub name: &'static str,
    /// Whether it must be given.
    pub required: bool,
}

/// A required parameter.
pub const fn req(name: &'static str) -> ParamSpec {
    ParamSpec {
        name,
        required: true,
    }
}

/// An optional parameter.
pub const fn opt(name: &'static str) -> ParamSpec {
    ParamSpec {
        name,
        required: false,
    }
}

/// Bound parameters.
#[derive(Debug, Default, Clone)]
pub struct Params {
    map: Map<String, Value>,
    /// Keyword params not in the spec (commands that accept them, like `plugin start`).
    pub extra: Map<String, Value>,
    /// Positional params beyond the spec.
    pub extra_positional: Vec<Value>,
}

/// CLN's rule for paged lists (`listinvoices`, `listsendpays`): `start` and `limit` only go
/// with `index`.
pub fn paging_needs_index(start: u64, limit: Option<u32>, index: bool) -> Result<(), RpcError> {
    if start != 0 && !index {
        return Err(RpcError::invalid_params(
            "Can only specify {start} with {index}",
        ));
    }
    if limit.is_some() && !index {
        return Err(RpcError::invalid_params(
            "Can only specify {limit} with {index}",
        ));
    }
    Ok(())
}

/// Binds `params` to `spec`. With `allow_extra`, unknown keywords and surplus positions
/// are kept instead of refused.
pub fn bind(spec: &[ParamSpec], params: &Value, allow_extra: bool) -> Result<Params, RpcError> {
    let mut out = Params::default();
    match params {
        Value::Array(items) => {
            if items.len() > spec.len() && !allow_extra {
                return Err(RpcError::invalid_params(format!(
                    "too many parameters: got {}, expected {}",
                    items.len(),
                    spec.len()
                )));
            }
            for (i, v) in items.iter().enumerate() {
                match spec.get(i) {
                    Some(s) if !v.is_null() => {
                        out.map.insert(s.name.to_string(), v.clone());
                    }
                    Some(_) => {}
                    None => out.extra_positional.push(v.clone()),
                }
            }
        }
        Value::Object(obj) => {
            for (k, v) in obj {
                if spec.iter().any(|s| s.name == k) {
                    if !v.is_null() {
                        out.map.insert(k.clone(), v.clone());
                    }
                } else if allow_extra {
                    out.extra.insert(k.clone(), v.clone());
                } else {
                    return Err(RpcError::invalid_params(format!(
                        "unknown parameter: {k}, this may be caused by a failure to autodetect key=value-style parameters. Please try using the -k flag and explicit key=value pairs of parameters."
                    )));
                }
            }
        }
        _ => {
            return Err(RpcError::invalid_request(
                "Expected array or object for params",
            ));
        }
    }
    for s in spec {
        if s.required && !out.map.contains_key(s.name) {
            return Err(RpcError::invalid_params(format!(
                "missing required parameter: {}",
                s.name
            )));
        }
    }
    Ok(out)
}

impl Params {
    /// The raw value, if given.
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.map.get(name)
    }

    /// A string parameter.
    pub fn opt_str(&self, name: &str) -> Result<Option<String>, RpcError> {
        match self.map.get(name) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(v) => Err(RpcError::invalid_params(format!(
                "{name}: should be a string: invalid token '{v}'"
            ))),
        }
    }

    /// A required string parameter.
    pub fn str(&self, name: &str) -> Result<String, RpcError> {
        self.opt_str(name)?
            .ok_or_else(|| RpcError::invalid_params(format!("missing required parameter: {name}")))
    }

    /// A boolean parameter (`true`/`false`, also as strings).
    pub fn opt_bool(&self, name: &str) -> Result<Option<bool>, RpcError> {
        match self.map.get(name) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(Value::String(s)) if s == "true" => Ok(Some(true)),
            Some(Value::String(s)) if s == "false" => Ok(Some(false)),
            Some(v) => Err(RpcError::invalid_params(format!(
                "{name}: should be 'true' or 'false': invalid token '{v}'"
            ))),
        }
    }

    /// An unsigned integer parameter (also as a decimal string).
    pub fn opt_u64(&self, name: &str) -> Result<Option<u64>, RpcError> {
        match self.map.get(name) {
            None => Ok(None),
            Some(Value::Number(n)) if n.as_u64().is_some() => Ok(n.as_u64()),
            Some(Value::String(s)) if s.parse::<u64>().is_ok() => Ok(s.parse().ok()),
            Some(v) => Err(RpcError::invalid_params(format!(
                "{name}: should be an unsigned 64 bit integer: invalid token '{v}'"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const SPEC: &[ParamSpec] = &[req("key"), opt("mode"), opt("generation")];

    #[test]
    fn by_name_and_position() {
        let p = bind(SPEC, &json!(["k", null, 3]), false).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(p.opt_str("key").ok().flatten().as_deref(), Some("k"));
        assert_eq!(p.opt_str("mode").ok().flatten(), None);
        assert_eq!(p.opt_u64("generation").ok().flatten(), Some(3));
        let p = bind(SPEC, &json!({"key":"k","mode":"must-create"}), false)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(p.str("mode").ok().as_deref(), Some("must-create"));
    }

    #[test]
    fn errors_are_invalid_params() {
        let e = bind(SPEC, &json!({}), false)
            .err()
            .map(|e| (e.code, e.message));
        assert_eq!(
            e,
            Some((-32602, "missing required parameter: key".to_string()))
        );
        assert_eq!(
            bind(SPEC, &json!({"key":"k","bogus":1}), false)
                .err()
                .map(|e| e.code),
            Some(-32602)
        );
        assert_eq!(
            bind(SPEC, &json!([1, 2, 3, 4]), false)
                .err()
                .map(|e| e.code),
            Some(-32602)
        );
        let p =
            bind(SPEC, &json!({"key":"k","greeting":"x"}), true).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(p.extra.get("greeting"), Some(&json!("x")));
        let p = bind(SPEC, &json!({"key": 5}), false).unwrap_or_else(|e| panic!("{e}"));
        assert!(p.opt_str("key").is_err());
    }
}
