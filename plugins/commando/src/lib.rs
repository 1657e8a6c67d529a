//! What the `commando` plugin reads from and writes to peers, kept apart from the plugin so
//! that it can be fuzzed (`fuzz/fuzz_targets/commando.rs`): the message framing, a peer's
//! request checked before anything runs, and a peer's reply turned into a result or an
//! error. No I/O.

use fulgur_plugin_sdk::RpcError;
use serde_json::{Map, Value, json};

/// A part of a request, more to come.
pub const CMD_CONTINUES: u16 = 0x4c4d;
/// The last part of a request.
pub const CMD_TERM: u16 = 0x4c4f;
/// A part of a reply, more to come.
pub const REPLY_CONTINUES: u16 = 0x594b;
/// The last part of a reply.
pub const REPLY_TERM: u16 = 0x594d;

/// We, running `commando`, found an error.
pub const ERROR_LOCAL: i64 = 0x4c4f;
/// The peer, running the request, found an error.
pub const ERROR_REMOTE: i64 = 0x4c50;
/// The peer refused the rune.
pub const ERROR_REMOTE_AUTH: i64 = 0x4c51;

/// JSON bytes per message (the wire limit is 65535 with the headers).
pub const CHUNK: usize = 65_000;
/// The largest request gathered from a peer.
pub const MAX_REQUEST: usize = 1024 * 1024;
/// The largest reply gathered from a peer.
pub const MAX_REPLY: usize = 500 * 1024 * 1024;
/// Peers whose requests are gathered at once.
pub const MAX_INCOMING: usize = 16;

pub use fulgur_plugin_sdk::hex::{decode as unhex, encode as hex};

/// The messages carrying `body`, hex: `more` for all but the last, `last` for the last.
pub fn frames(more: u16, last: u16, id: u64, body: &[u8]) -> Vec<String> {
    let n = body.len().div_ceil(CHUNK);
    body.chunks(CHUNK)
        .enumerate()
        .map(|(i, chunk)| {
            let ty = if i + 1 == n { last } else { more };
            let mut m = Vec::with_capacity(10 + chunk.len());
            m.extend_from_slice(&ty.to_be_bytes());
            m.extend_from_slice(&id.to_be_bytes());
            m.extend_from_slice(chunk);
            hex(&m)
        })
        .collect()
}

/// A message's type, request id and JSON bytes.
pub fn parse_frame(msg: &[u8]) -> Option<(u16, u64, &[u8])> {
    let ty = u16::from_be_bytes(msg.get(..2)?.try_into().ok()?);
    let id = u64::from_be_bytes(msg.get(2..10)?.try_into().ok()?);
    Some((ty, id, &msg[10..]))
}

/// A peer's request that passed the checks made before its rune is.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// The method to run.
    pub method: String,
    /// Its params (an object or an array), if given.
    pub params: Option<Value>,
    /// CLN's `filter`, if given.
    pub filter: Option<Value>,
    /// The request's JSON id, given back in the reply.
    pub id: Value,
    /// The rune, still to be checked with `checkrune`.
    pub rune: String,
}

/// A peer's gathered request, or the error reply it gets (CLN's checks and messages).
pub fn read_request(bytes: &[u8]) -> Result<Request, (i64, &'static str)> {
    let Ok(req) = serde_json::from_slice::<Value>(bytes) else {
        return Err((ERROR_REMOTE, "Invalid JSON"));
    };
    let Value::Object(req) = req else {
        return Err((ERROR_REMOTE, "Not a JSON object"));
    };
    let Some(method) = req.get("method") else {
        return Err((ERROR_REMOTE, "No method"));
    };
    let method = match method {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let params = req.get("params").cloned();
    if params
        .as_ref()
        .is_some_and(|p| !p.is_object() && !p.is_array())
    {
        return Err((ERROR_REMOTE, "Params must be object or array"));
    }
    let Some(id) = req.get("id").cloned() else {
        return Err((ERROR_REMOTE, "missing id field"));
    };
    let Some(rune) = req.get("rune") else {
        return Err((ERROR_REMOTE, "Missing rune"));
    };
    let Some(rune) = rune.as_str().filter(|r| rune_shaped(r)) else {
        return Err((ERROR_REMOTE, "Invalid rune"));
    };
    Ok(Request {
        method,
        params,
        filter: req.get("filter").cloned(),
        id,
        rune: rune.to_string(),
    })
}

/// Whether `rune` could be a rune at all (URL-safe base64 of at least the 32-byte hash).
pub fn rune_shaped(rune: &str) -> bool {
    rune.len() >= 43
        && rune
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'='))
}

/// CLN's error reply of commando itself (no id: it may be what was missing).
pub fn error_reply(code: i64, message: &str) -> String {
    json!({"error": {"code": code, "message": message}}).to_string()
}

/// The reply to a request that ran: the node's result or error under the request's id.
pub fn reply(id: Value, outcome: Result<Value, RpcError>) -> String {
    let mut reply = Map::new();
    reply.insert("jsonrpc".into(), json!("2.0"));
    reply.insert("id".into(), id);
    match outcome {
        Ok(result) => reply.insert("result".into(), result),
        Err(e) => reply.insert(
            "error".into(),
            serde_json::to_value(&e).unwrap_or(Value::Null),
        ),
    };
    Value::Object(reply).to_string()
}

/// A peer's reply as the result or error of our `commando`, and the id it carried if that
/// is not the one we sent (`json_id`).
pub fn read_reply(reply: &[u8], json_id: &str) -> (Result<Value, RpcError>, Option<Value>) {
    let unparsable = || {
        RpcError::new(
            ERROR_LOCAL,
            format!("Reply was unparsable: '{}'", String::from_utf8_lossy(reply)),
        )
    };
    let Ok(Value::Object(obj)) = serde_json::from_slice::<Value>(reply) else {
        return (Err(unparsable()), None);
    };
    let wrong_id = obj
        .get("id")
        .filter(|id| id.as_str() != Some(json_id))
        .cloned();
    let outcome = if let Some(err) = obj.get("error") {
        match (err.get("code").and_then(Value::as_i64), err.get("message")) {
            (None, _) => Err(RpcError::new(
                ERROR_LOCAL,
                format!("Error '{err}' had no valid code"),
            )),
            (Some(_), None) => Err(RpcError::new(ERROR_LOCAL, "Error had no message")),
            (Some(code), Some(message)) => Err(RpcError {
                code,
                message: match message {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                },
                data: err.get("data").cloned(),
            }),
        }
    } else {
        obj.get("result")
            .cloned()
            .ok_or_else(|| RpcError::new(ERROR_LOCAL, "Reply had no result"))
    };
    (outcome, wrong_id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_large_body_is_split_in_65000_byte_messages_the_last_one_terminal() {
        let body = vec![b'x'; 2 * CHUNK + 1];
        let f = frames(CMD_CONTINUES, CMD_TERM, 7, &body);
        assert_eq!(f.len(), 3);
        let parts: Vec<Vec<u8>> = f.iter().map(|h| unhex(h).unwrap_or_default()).collect();
        for (i, p) in parts.iter().enumerate() {
            let (ty, id, json) = parse_frame(p).unwrap_or((0, 0, &[]));
            assert_eq!(id, 7);
            assert_eq!(ty, if i == 2 { CMD_TERM } else { CMD_CONTINUES });
            assert_eq!(json.len(), if i == 2 { 1 } else { CHUNK });
        }
        assert_eq!(frames(REPLY_CONTINUES, REPLY_TERM, 1, b"{}").len(), 1);
    }

    #[test]
    fn short_messages_are_not_frames() {
        assert!(parse_frame(&[0x4c, 0x4f, 0, 0]).is_none());
    }

    #[test]
    fn requests_are_checked_as_clns() {
        let rune = "A".repeat(43);
        let ok = format!(r#"{{"method":"getinfo","id":"x","rune":"{rune}","params":[]}}"#);
        assert_eq!(
            read_request(ok.as_bytes()).map(|r| r.method),
            Ok("getinfo".into())
        );
        for (bad, why) in [
            ("{", "Invalid JSON"),
            ("[]", "Not a JSON object"),
            (r#"{"id":1}"#, "No method"),
            (
                r#"{"method":"m","params":3}"#,
                "Params must be object or array",
            ),
            (r#"{"method":"m"}"#, "missing id field"),
            (r#"{"method":"m","id":1}"#, "Missing rune"),
            (r#"{"method":"m","id":1,"rune":"short"}"#, "Invalid rune"),
        ] {
            assert_eq!(
                read_request(bad.as_bytes()).err(),
                Some((ERROR_REMOTE, why)),
                "{bad}"
            );
        }
    }

    #[test]
    fn replies_become_results_or_the_peers_errors() {
        let (r, wrong) = read_reply(br#"{"id":"a","result":{"x":1}}"#, "a");
        assert_eq!(r.ok(), Some(json!({"x": 1})));
        assert!(wrong.is_none());
        let (r, wrong) = read_reply(
            br#"{"id":"b","error":{"code":900,"message":"m","data":{"d":1}}}"#,
            "a",
        );
        let e = r.err().unwrap_or_else(|| RpcError::new(0, ""));
        assert_eq!(
            (e.code, e.message.as_str(), e.data),
            (900, "m", Some(json!({"d": 1})))
        );
        assert_eq!(wrong, Some(json!("b")));
        for bad in [
            &b"nope"[..],
            br#"{"error":{"message":"m"}}"#,
            br#"{"error":{"code":1}}"#,
            b"{}",
        ] {
            assert_eq!(
                read_reply(bad, "a").0.err().map(|e| e.code),
                Some(ERROR_LOCAL)
            );
        }
    }

    #[test]
    fn runes_are_shape_checked_before_checkrune() {
        assert!(!rune_shaped("short"));
        assert!(!rune_shaped(&"a!".repeat(30)));
        assert!(rune_shaped(&"Ab9-_".repeat(9)));
    }
}
