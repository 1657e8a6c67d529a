//! CLN's JSON schemas in unit tests: the replies and notifications we build, validated by
//! the same validator the Python suite uses (`tests/py/clnschema.py`, over
//! `../shared/reference/cln-schemas`). A missing validator is a failure, not a pass:
//! `tests/run-all` creates `.venv` before it runs `cargo test`.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use serde_json::Value;

/// The validator's complaints about `value` as the schema `name` (`getroute.json`,
/// `notification/sendpay_success.json`, ...) describes it; `None` when it is valid.
///
/// # Panics
/// When the validator cannot run: no `.venv` (create it with `python3 -m venv .venv &&
/// .venv/bin/pip install -r tests/requirements.txt`, or run `tests/run-all`), or no schemas.
pub fn errors(name: &str, value: &Value) -> Option<String> {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let py = repo.join(".venv/bin/python");
    assert!(
        py.exists(),
        "schema check of {name}: no validator at {} (run tests/run-all once, or create .venv \
         with tests/requirements.txt)",
        py.display()
    );
    let mut child = Command::new(&py)
        .arg("-c")
        .arg(
            "import sys, json; sys.path.insert(0, sys.argv[1]); import clnschema; \
             e = clnschema.errors(sys.argv[2], json.load(sys.stdin)); print(json.dumps(e))",
        )
        .arg(repo.join("tests/py"))
        .arg(name)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("schema check of {name}: cannot run {}: {e}", py.display()));
    child
        .stdin
        .take()
        .unwrap_or_else(|| panic!("schema check of {name}: no stdin"))
        .write_all(value.to_string().as_bytes())
        .unwrap_or_else(|e| panic!("schema check of {name}: {e}"));
    let out = child
        .wait_with_output()
        .unwrap_or_else(|e| panic!("schema check of {name}: {e}"));
    // The validator itself failing (no schema folder, no such schema) is not a pass.
    assert!(
        out.status.success(),
        "schema check of {name} could not run: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (text != "[]").then_some(text)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    #[test]
    fn the_validator_runs_and_rejects_what_the_schema_forbids() {
        assert_eq!(super::errors("getroute.json", &json!({"route": []})), None);
        assert!(super::errors("getroute.json", &json!({"route": "nope"})).is_some());
    }
}
