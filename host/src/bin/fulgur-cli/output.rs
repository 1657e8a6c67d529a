//! Printing answers: indented JSON, human-readable, flat, the `help` list, and locating
//! the raw text of a reply member for `-R`.

use std::io::{self, Write};

use serde::Serialize;
use serde_json::Value;

/// JSON indented by three spaces, as `lightning-cli` prints it, with a final newline.
/// Non-ASCII text is written as UTF-8, not escaped.
pub fn write_json(out: &mut impl Write, v: &Value) -> io::Result<()> {
    let fmt = serde_json::ser::PrettyFormatter::with_indent(b"   ");
    let mut ser = serde_json::Serializer::with_formatter(&mut *out, fmt);
    v.serialize(&mut ser).map_err(io::Error::other)?;
    out.write_all(b"\n")
}

/// A scalar's text: strings decoded, everything else as JSON.
fn scalar_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// `-H`: strings unquoted, single-member objects replaced by their value, other objects as
/// `key=value` lines, arrays one element per line, recursively.
pub fn write_human(out: &mut impl Write, v: &Value) -> io::Result<()> {
    human(out, v)
}

fn human(out: &mut impl Write, v: &Value) -> io::Result<()> {
    match v {
        Value::Array(items) => {
            for item in items {
                human(out, item)?;
            }
            Ok(())
        }
        Value::Object(map) if map.len() == 1 => match map.values().next() {
            Some(only) => human(out, only),
            None => Ok(()),
        },
        Value::Object(map) => {
            for (key, value) in map {
                write!(out, "{key}=")?;
                if is_empty_container(value) {
                    // Nothing follows the `=`: end the line so that the next key does not
                    // run onto it.
                    out.write_all(b"\n")?;
                } else {
                    human(out, value)?;
                }
            }
            Ok(())
        }
        scalar => writeln!(out, "{}", scalar_text(scalar)),
    }
}

fn is_empty_container(v: &Value) -> bool {
    match v {
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        _ => false,
    }
}

/// `-F`: one `path=value` line per scalar, paths like `a.b[0].c`. Strings keep their JSON
/// escapes (without the quotes) so that every value stays on one line.
pub fn write_flat(out: &mut impl Write, v: &Value) -> io::Result<()> {
    flat(out, &mut String::new(), v)
}

fn flat(out: &mut impl Write, prefix: &mut String, v: &Value) -> io::Result<()> {
    let len = prefix.len();
    match v {
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                prefix.push_str(&format!("[{i}]"));
                flat(out, prefix, item)?;
                prefix.truncate(len);
            }
        }
        Value::Object(map) => {
            for (key, value) in map {
                if !prefix.is_empty() {
                    prefix.push('.');
                }
                prefix.push_str(key);
                flat(out, prefix, value)?;
                prefix.truncate(len);
            }
        }
        Value::String(s) => {
            let quoted = serde_json::to_string(s).map_err(io::Error::other)?;
            // The JSON string without its quotes.
            let inner = quoted
                .get(1..quoted.len().saturating_sub(1))
                .unwrap_or_default();
            writeln!(out, "{prefix}={inner}")?;
        }
        scalar => writeln!(out, "{prefix}={scalar}")?,
    }
    Ok(())
}

/// The list printed by `fulgur-cli help`: entries sorted by category (`developer` last)
/// then command, each entry's `command` (name and usage) on a line, its description (if
/// the node sent one) indented below, a blank line between entries, and a closing hint.
/// Returns `false` (printing nothing) if the result has no `help` array.
pub fn write_help_list(out: &mut impl Write, result: &Value) -> io::Result<bool> {
    let Some(entries) = result.get("help").and_then(Value::as_array) else {
        return Ok(false);
    };
    let text = |e: &Value, key: &str| e.get(key).map(scalar_text).unwrap_or_default();
    let mut sorted: Vec<&Value> = entries.iter().collect();
    sorted.sort_by_cached_key(|e| {
        let category = text(e, "category");
        (category == "developer", category, text(e, "command"))
    });
    for entry in sorted {
        match entry.get("command") {
            Some(cmd) => writeln!(out, "{}", scalar_text(cmd))?,
            None => human(out, entry)?,
        }
        if let Some(Value::String(desc)) = entry.get("description")
            && !desc.is_empty()
        {
            writeln!(out, "    {desc}")?;
        }
        out.write_all(b"\n")?;
    }
    out.write_all(
        b"---\nrun `fulgur-cli help <command>` for more information on a specific command\n",
    )?;
    Ok(true)
}

/// The byte range of the value of top-level member `key` in the JSON object `text`, which
/// must already be known to be valid JSON. With duplicate keys the last one is returned,
/// as serde_json keeps the last.
pub fn member_span(text: &[u8], key: &str) -> Option<std::ops::Range<usize>> {
    let mut p = Scanner { s: text, i: 0 };
    p.ws();
    if p.peek()? != b'{' {
        return None;
    }
    p.i += 1;
    let mut found = None;
    loop {
        p.ws();
        match p.peek()? {
            b'}' => return found,
            b',' => {
                p.i += 1;
                continue;
            }
            b'"' => {}
            _ => return None,
        }
        let key_start = p.i;
        p.skip_string()?;
        let this_key: String = serde_json::from_slice(&text[key_start..p.i]).ok()?;
        p.ws();
        if p.peek()? != b':' {
            return None;
        }
        p.i += 1;
        p.ws();
        let start = p.i;
        p.skip_value()?;
        if this_key == key {
            found = Some(start..p.i);
        }
    }
}

struct Scanner<'a> {
    s: &'a [u8],
    i: usize,
}

impl Scanner<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.i += 1;
        }
    }

    /// Skips a string starting at the opening quote.
    fn skip_string(&mut self) -> Option<()> {
        self.i += 1;
        loop {
            match self.peek()? {
                b'\\' => self.i += 2,
                b'"' => {
                    self.i += 1;
                    return Some(());
                }
                _ => self.i += 1,
            }
        }
    }

    fn skip_value(&mut self) -> Option<()> {
        match self.peek()? {
            b'"' => self.skip_string(),
            b'{' | b'[' => {
                let mut depth = 0usize;
                loop {
                    match self.peek()? {
                        b'"' => {
                            self.skip_string()?;
                            continue;
                        }
                        b'{' | b'[' => depth += 1,
                        b'}' | b']' => {
                            depth -= 1;
                            if depth == 0 {
                                self.i += 1;
                                return Some(());
                            }
                        }
                        _ => {}
                    }
                    self.i += 1;
                }
            }
            _ => {
                let start = self.i;
                while !matches!(
                    self.peek(),
                    None | Some(b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r')
                ) {
                    self.i += 1;
                }
                (self.i > start).then_some(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn render(f: impl Fn(&mut Vec<u8>, &Value) -> io::Result<()>, v: &Value) -> String {
        let mut out = Vec::new();
        f(&mut out, v).expect("writes");
        String::from_utf8(out).expect("utf8")
    }

    #[test]
    fn json_uses_three_spaces() {
        let v = json!({"a":[1,{"b":"é"}],"c":{},"d":[]});
        assert_eq!(
            render(write_json, &v),
            "{\n   \"a\": [\n      1,\n      {\n         \"b\": \"é\"\n      }\n   ],\n   \"c\": {},\n   \"d\": []\n}\n"
        );
    }

    #[test]
    fn human_collapses_and_lists() {
        let v = json!({"a":1,"b":{"c":"x\ty"},"d":["p","q"],"e":[]});
        assert_eq!(render(write_human, &v), "a=1\nb=x\ty\nd=p\nq\ne=\n");
        assert_eq!(render(write_human, &json!({"only":{"x":"y"}})), "y\n");
    }

    #[test]
    fn flat_paths() {
        let v = json!({"a":{"b":[{"c":1},"s\n"]},"t":true});
        assert_eq!(render(write_flat, &v), "a.b[0].c=1\na.b[1]=s\\n\nt=true\n");
    }

    #[test]
    fn finds_raw_members() {
        let text = br#" {"id":"x","result" : {"a": 1.50, "s":"}\"{"} , "z":[1] }"#;
        let span = member_span(text, "result").expect("found");
        assert_eq!(&text[span], br#"{"a": 1.50, "s":"}\"{"}"#);
        let span = member_span(text, "z").expect("found");
        assert_eq!(&text[span], b"[1]");
        assert_eq!(member_span(text, "error"), None);
        let text = br#"{"error":null,"id":7}"#;
        assert_eq!(&text[member_span(text, "id").expect("found")], b"7");
    }
}
