//! Turning the words after METHOD into the request's `params`.

use serde_json::{Map, Value};

use crate::CliError;
use crate::args::Input;

/// Whether a word is passed as JSON as it stands rather than as a string: numbers (but
/// not digit strings with a leading zero, which are usually hex), `true`, `false`,
/// `null`, and anything that looks like an object, array or quoted string.
pub fn is_literal(arg: &str) -> bool {
    let b = arg.as_bytes();
    let (Some(first), Some(last)) = (b.first(), b.last()) else {
        return false;
    };
    let all_digits = b.iter().all(u8::is_ascii_digit);
    if all_digits && b.len() > 1 && *first == b'0' {
        return false;
    }
    b.iter().all(|c| c.is_ascii_digit() || *c == b'.')
        || matches!(arg, "true" | "false" | "null")
        || (*first == b'{' && *last == b'}' && b.len() > 1)
        || (*first == b'[' && *last == b']' && b.len() > 1)
        || (*first == b'"' && *last == b'"' && b.len() > 1)
}

/// One word as a JSON value.
fn value_of(arg: &str) -> Result<Value, CliError> {
    if is_literal(arg) {
        serde_json::from_str(arg).map_err(|e| {
            CliError::Usage(format!(
                "parameter '{arg}' is not valid JSON ({e}); quote it to pass a string"
            ))
        })
    } else {
        Ok(Value::String(arg.to_string()))
    }
}

/// Builds `params` from the words after the method.
pub fn build(input: Input, args: &[String]) -> Result<Value, CliError> {
    let input = match input {
        Input::Default => match args.first() {
            Some(first) if first.contains('=') => Input::Keywords,
            _ => Input::Ordered,
        },
        other => other,
    };
    match input {
        Input::Json => {
            let [arg] = args else {
                return Err(CliError::Usage(format!(
                    "-j takes exactly one argument after the method (the params JSON), got {}",
                    args.len()
                )));
            };
            let v: Value = serde_json::from_str(arg)
                .map_err(|e| CliError::Usage(format!("-j: params are not valid JSON: {e}")))?;
            if !(v.is_object() || v.is_array()) {
                return Err(CliError::Usage(
                    "-j: params must be a JSON object or array".into(),
                ));
            }
            Ok(v)
        }
        Input::Keywords => {
            let mut obj = Map::new();
            for arg in args {
                let Some((key, value)) = arg.split_once('=') else {
                    return Err(CliError::Usage(format!("expected key=value in '{arg}'")));
                };
                obj.insert(key.to_string(), value_of(value)?);
            }
            Ok(Value::Object(obj))
        }
        Input::Ordered | Input::Default => args
            .iter()
            .map(|a| value_of(a))
            .collect::<Result<Vec<_>, _>>()
            .map(Value::Array),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn words(w: &[&str]) -> Vec<String> {
        w.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn literals_follow_lightning_cli() {
        for lit in [
            "0", "12", "1.5", "true", "false", "null", "{}", "[1]", "\"x\"",
        ] {
            assert!(is_literal(lit), "{lit}");
        }
        for s in ["", "012", "00", "abc", "1e5", "-1", "{", "\"", "True"] {
            assert!(!is_literal(s), "{s}");
        }
    }

    #[test]
    fn detects_keywords_from_the_first_word() {
        let v = build(Input::Default, &words(&["a=1", "b=x=y"])).expect("ok");
        assert_eq!(v, json!({"a":1,"b":"x=y"}));
        let v = build(Input::Default, &words(&["x", "a=1"])).expect("ok");
        assert_eq!(v, json!(["x", "a=1"]));
        assert!(build(Input::Default, &words(&["a=1", "b"])).is_err());
        assert_eq!(build(Input::Default, &[]).expect("ok"), json!([]));
        assert_eq!(build(Input::Keywords, &[]).expect("ok"), json!({}));
    }

    #[test]
    fn bad_literals_are_usage_errors() {
        assert!(matches!(
            build(Input::Ordered, &words(&["{x}"])),
            Err(CliError::Usage(_))
        ));
        assert!(matches!(
            build(Input::Ordered, &words(&["1.2.3"])),
            Err(CliError::Usage(_))
        ));
        assert!(matches!(
            build(Input::Json, &words(&["5"])),
            Err(CliError::Usage(_))
        ));
    }
}
