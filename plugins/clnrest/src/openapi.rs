//! The OpenAPI document the Swagger page shows, made from the node's `help` when asked for,
//! so that it lists every command the node and its plugins offer at that moment (CLN's
//! describes one generic `/v1/{rpc_method}`). Each command is `POST /v1/<command>` with its
//! `help` description, its parameters as named in its usage (required unless in brackets)
//! and CLN's statuses; the rune goes in the `Rune` header.

use serde_json::{Map, Value, json};

/// The parameter names of a usage string, each with whether it is required.
fn usage_params(usage: &str) -> Vec<(String, bool)> {
    let mut out = Vec::new();
    let mut depth = 0usize;
    let mut word = String::new();
    let flush = |word: &mut String, required: bool, out: &mut Vec<(String, bool)>| {
        let w = word.trim_matches(|c: char| !(c.is_alphanumeric() || c == '_' || c == '-'));
        if !w.is_empty() && !w.starts_with('-') {
            out.push((w.to_owned(), required));
        }
        word.clear();
    };
    for c in usage.chars() {
        match c {
            '[' | '{' => {
                flush(&mut word, depth == 0, &mut out);
                depth += 1;
            }
            ']' | '}' => {
                flush(&mut word, depth == 0, &mut out);
                depth = depth.saturating_sub(1);
            }
            c if c.is_whitespace() => flush(&mut word, depth == 0, &mut out),
            c => word.push(c),
        }
    }
    flush(&mut word, depth == 0, &mut out);
    out
}

fn error_response(description: &str) -> Value {
    json!({"description": description, "content": {"application/json": {"schema": {
        "type": "object",
        "properties": {"code": {"type": "integer"}, "message": {"type": "string"},
                       "data": {}}
    }}}})
}

/// The document for the commands in a `help` reply.
pub fn document(help: &Value, version: &str) -> Value {
    let mut paths = Map::new();
    paths.insert(
        "/v1/list-methods".into(),
        json!({"get": {
            "summary": "The node's commands, one per line",
            "responses": {"200": {"description": "Success",
                                  "content": {"text/html": {"schema": {"type": "string"}}}}}
        }}),
    );
    for c in help
        .get("help")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let Some(name) = c.get("command").and_then(Value::as_str) else {
            continue;
        };
        let name = name.split_whitespace().next().unwrap_or(name);
        let usage = c
            .get("command")
            .and_then(Value::as_str)
            .and_then(|s| s.split_once(' '))
            .map(|(_, u)| u)
            .unwrap_or("");
        let params = usage_params(usage);
        let mut props = Map::new();
        for (p, _) in &params {
            props.insert(p.clone(), json!({}));
        }
        let required: Vec<&String> = params.iter().filter(|(_, r)| *r).map(|(p, _)| p).collect();
        let schema = json!({"type": "object", "properties": props, "required": required});
        let description = c
            .get("description")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let category = c
            .get("category")
            .and_then(Value::as_str)
            .unwrap_or("plugin");
        paths.insert(
            format!("/v1/{name}"),
            json!({"post": {
                "summary": description,
                "description": format!("`{name} {usage}`"),
                "tags": [category],
                "security": [{"rune": []}],
                "requestBody": {"required": false, "content": {
                    "application/json": {"schema": schema.clone()},
                    "application/yaml": {"schema": schema.clone()},
                    "application/xml": {"schema": schema.clone()},
                    "application/x-www-form-urlencoded": {"schema": schema}
                }},
                "responses": {
                    "201": {"description": "The command's result",
                            "content": {"application/json": {"schema": {"type": "object"}}}},
                    "401": error_response("The rune does not allow this call"),
                    "403": error_response("No rune"),
                    "404": error_response("Unknown command"),
                    "406": error_response("Unsupported content type or accept header, or a duplicate key"),
                    "500": error_response("The command failed")
                }
            }}),
        );
    }
    json!({
        "openapi": "3.0.3",
        "info": {"title": "Fulgur clnrest", "version": version,
                 "description": "Core Lightning's clnrest interface, served by Fulgur: \
                                 every RPC command as POST /v1/{command}, authorised by the rune in the Rune header."},
        "paths": paths,
        "components": {"securitySchemes": {"rune": {"type": "apiKey", "in": "header", "name": "rune"}}}
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_gives_required_and_optional_params() {
        assert_eq!(
            usage_params("amount_msat label description [expiry] [fallbacks]"),
            vec![
                ("amount_msat".into(), true),
                ("label".into(), true),
                ("description".into(), true),
                ("expiry".into(), false),
                ("fallbacks".into(), false)
            ]
        );
        assert!(usage_params("").is_empty());
    }

    #[test]
    fn one_path_per_command() {
        let help = json!({"help": [
            {"command": "getinfo", "category": "network", "description": "Show info"},
            {"command": "invoice amount_msat label description [expiry]", "category": "payment",
             "description": "Create an invoice"}
        ]});
        let d = document(&help, "v1");
        assert_eq!(d["paths"]["/v1/getinfo"]["post"]["summary"], "Show info");
        let s = &d["paths"]["/v1/invoice"]["post"]["requestBody"]["content"]["application/json"]["schema"];
        assert_eq!(
            s["required"],
            json!(["amount_msat", "label", "description"])
        );
        assert!(s["properties"].get("expiry").is_some());
    }
}
