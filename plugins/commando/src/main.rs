//! `commando`, CLN's built-in plugin of that name: JSON-RPC between Lightning peers over
//! custom messages, authorised by runes.
//!
//! Outgoing: `commando peer_id method [params] [rune] [filter]` sends the request as a JSON
//! object (`method`, `id`, `params`, `rune`, `filter`) in custom messages of at most 65000
//! bytes of JSON each, `0x4c4d` while more follow and `0x4c4f` for the last, each prefixed
//! by a random 64-bit request id, then waits for the peer's reply (`0x594b`... `0x594d`)
//! and returns its result or its error (code, message and data as the peer gave them).
//!
//! Incoming: a peer's request is gathered (one per peer at a time, at most 16 peers,
//! 1 MiB each), its rune is checked with `checkrune` for that peer, method and params,
//! and the method runs on this node; the whole JSON-RPC response goes back with the
//! request's own `id`. The errors are CLN's: `0x4c50` when the request is malformed or the
//! rune does not allow it, `0x4c51` when `checkrune` refuses the rune, `0x4c4f` for what
//! goes wrong on the caller's side.
//!
//! The `custommsg` hook is answered as soon as a message is taken in: requests run in
//! their own tasks, so a slow command never holds back the peer messages behind it.

use std::collections::HashMap;
use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::{Arc, Mutex, MutexGuard};

use fulgur_plugin_sdk::{
    Builder, CallError, Continue, Hook, HookSpec, Plugin, RpcError, RpcMethod,
};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use tokio::sync::oneshot;

const CMD_CONTINUES: u16 = 0x4c4d;
const CMD_TERM: u16 = 0x4c4f;
const REPLY_CONTINUES: u16 = 0x594b;
const REPLY_TERM: u16 = 0x594d;

/// We, running `commando`, found an error.
const ERROR_LOCAL: i64 = 0x4c4f;
/// The peer, running the request, found an error.
const ERROR_REMOTE: i64 = 0x4c50;
/// The peer refused the rune.
const ERROR_REMOTE_AUTH: i64 = 0x4c51;

/// JSON bytes per message (the wire limit is 65535 with the headers).
const CHUNK: usize = 65_000;
const MAX_REQUEST: usize = 1024 * 1024;
const MAX_REPLY: usize = 500 * 1024 * 1024;
const MAX_INCOMING: usize = 16;

/// A request we sent, waiting for its reply.
struct Outgoing {
    peer: String,
    /// `None` once the reply grew over [`MAX_REPLY`].
    contents: Option<Vec<u8>>,
    done: oneshot::Sender<Option<Vec<u8>>>,
}

/// A peer's request being gathered.
struct Incoming {
    peer: String,
    id: u64,
    contents: Option<Vec<u8>>,
}

#[derive(Default)]
struct State {
    outgoing: Mutex<HashMap<u64, Outgoing>>,
    incoming: Mutex<Vec<Incoming>>,
}

type P = Plugin<Arc<State>>;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn hex(data: &[u8]) -> String {
    const D: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(data.len() * 2);
    for b in data {
        s.push(D[(b >> 4) as usize] as char);
        s.push(D[(b & 15) as usize] as char);
    }
    s
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    let digit = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let b = s.as_bytes();
    if !b.len().is_multiple_of(2) {
        return None;
    }
    b.chunks(2)
        .map(|p| Some(digit(p[0])? << 4 | digit(p[1])?))
        .collect()
}

/// The messages carrying `body`: `more` for all but the last, `last` for the last one.
fn frames(more: u16, last: u16, id: u64, body: &[u8]) -> Vec<String> {
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
fn parse_frame(msg: &[u8]) -> Option<(u16, u64, &[u8])> {
    let ty = u16::from_be_bytes(msg.get(..2)?.try_into().ok()?);
    let id = u64::from_be_bytes(msg.get(2..10)?.try_into().ok()?);
    Some((ty, id, &msg[10..]))
}

fn random_u64() -> u64 {
    RandomState::new().build_hasher().finish()
}

async fn send(plugin: &P, peer: &str, frames: Vec<String>) -> Result<(), RpcError> {
    for msg in frames {
        plugin
            .rpc()
            .call("sendcustommsg", json!({"node_id": peer, "msg": msg}))
            .await
            .map_err(RpcError::from)?;
    }
    Ok(())
}

/// `params` and `filter` may be given as JSON or as a string of JSON (CLN takes both).
fn json_param(name: &str, v: Option<Value>) -> Result<Option<Value>, RpcError> {
    match v {
        Some(Value::String(s)) => serde_json::from_str(&s)
            .map(Some)
            .map_err(|_| RpcError::invalid_params(format!("{name}: should be valid JSON"))),
        other => Ok(other),
    }
}

fn is_node_id(s: &str) -> bool {
    s.len() == 66 && (s.starts_with("02") || s.starts_with("03")) && unhex(s).is_some()
}

#[derive(Deserialize)]
struct CommandoParams {
    peer_id: String,
    method: String,
    params: Option<Value>,
    rune: Option<String>,
    filter: Option<Value>,
}

/// The `commando` command.
async fn commando(plugin: P, p: CommandoParams) -> Result<Value, RpcError> {
    if !is_node_id(&p.peer_id) {
        return Err(RpcError::invalid_params(format!(
            "peer_id: should be a node id: invalid token '{}'",
            p.peer_id
        )));
    }
    let params = json_param("params", p.params)?.unwrap_or_else(|| json!({}));
    let filter = json_param("filter", p.filter)?;
    let (tx, rx) = oneshot::channel();
    let oid = {
        let mut out = lock(&plugin.state().outgoing);
        let mut oid = random_u64();
        while out.contains_key(&oid) {
            oid = random_u64();
        }
        out.insert(
            oid,
            Outgoing {
                peer: p.peer_id.clone(),
                contents: Some(Vec::new()),
                done: tx,
            },
        );
        oid
    };
    let json_id = format!("commando:{oid:016x}");
    let mut request = Map::new();
    request.insert("method".into(), Value::from(p.method));
    request.insert("id".into(), Value::from(json_id.clone()));
    request.insert("params".into(), params);
    if let Some(r) = p.rune {
        request.insert("rune".into(), Value::from(r));
    }
    if let Some(f) = filter {
        request.insert("filter".into(), f);
    }
    let body = Value::Object(request).to_string();
    let sent = send(
        &plugin,
        &p.peer_id,
        frames(CMD_CONTINUES, CMD_TERM, oid, body.as_bytes()),
    )
    .await;
    if let Err(e) = sent {
        lock(&plugin.state().outgoing).remove(&oid);
        return Err(e);
    }
    // Dropped only if the plugin stops; then there is no answer to give.
    let reply = rx
        .await
        .map_err(|_| RpcError::new(ERROR_LOCAL, "commando stopped"))?;
    let Some(reply) = reply else {
        return Err(RpcError::new(ERROR_LOCAL, "Reply was oversize"));
    };
    read_reply(&plugin, &reply, &json_id)
}

/// The peer's reply as this command's result or error.
fn read_reply(plugin: &P, reply: &[u8], json_id: &str) -> Result<Value, RpcError> {
    let unparsable = || {
        RpcError::new(
            ERROR_LOCAL,
            format!("Reply was unparsable: '{}'", String::from_utf8_lossy(reply)),
        )
    };
    let Ok(Value::Object(obj)) = serde_json::from_slice::<Value>(reply) else {
        return Err(unparsable());
    };
    if let Some(id) = obj.get("id")
        && id.as_str() != Some(json_id)
    {
        plugin.warn(format!(
            "Commando reply with wrong id: I sent \"{json_id}\", they replied with {id}!"
        ));
    }
    if let Some(err) = obj.get("error") {
        let Some(code) = err.get("code").and_then(Value::as_i64) else {
            return Err(RpcError::new(
                ERROR_LOCAL,
                format!("Error '{err}' had no valid code"),
            ));
        };
        let Some(message) = err.get("message") else {
            return Err(RpcError::new(ERROR_LOCAL, "Error had no message"));
        };
        let message = match message {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        return Err(RpcError {
            code,
            message,
            data: err.get("data").cloned(),
        });
    }
    obj.get("result")
        .cloned()
        .ok_or_else(|| RpcError::new(ERROR_LOCAL, "Reply had no result"))
}

/// A message of a peer's request.
fn take_request_part(plugin: &P, peer: &str, id: u64, part: &[u8], last: bool) {
    let done = {
        let mut incoming = lock(&plugin.state().incoming);
        // One request per peer: a new one replaces what was being gathered.
        if let Some(i) = incoming.iter().position(|c| c.peer == peer && c.id != id) {
            plugin.debug(format!("New cmd from {peer}, replacing old"));
            incoming.remove(i);
        }
        if !incoming.iter().any(|c| c.peer == peer) {
            incoming.push(Incoming {
                peer: peer.to_string(),
                id,
                contents: Some(Vec::new()),
            });
            if incoming.len() > MAX_INCOMING {
                incoming.remove(0);
            }
        }
        let Some(i) = incoming.iter().position(|c| c.peer == peer) else {
            return;
        };
        let c = &mut incoming[i];
        if let Some(buf) = &mut c.contents {
            if buf.len() + part.len() > MAX_REQUEST {
                c.contents = None;
            } else {
                buf.extend_from_slice(part);
            }
        }
        if !last {
            return;
        }
        incoming.remove(i).contents
    };
    let Some(request) = done else {
        plugin.warn(format!("{peer}: ignoring oversize request"));
        return;
    };
    let (plugin, peer) = (plugin.clone(), peer.to_string());
    tokio::spawn(async move {
        let reply = run_request(&plugin, &peer, &request).await;
        let frames = frames(REPLY_CONTINUES, REPLY_TERM, id, reply.as_bytes());
        if let Err(e) = send(&plugin, &peer, frames).await {
            plugin.warn(format!("cannot answer {peer}'s request: {}", e.message));
        }
    });
}

/// CLN's error reply of commando itself (no id: it may be what was missing).
fn error_reply(code: i64, message: &str) -> String {
    json!({"error": {"code": code, "message": message}}).to_string()
}

/// Whether `rune` could be a rune at all (URL-safe base64 of at least the 32-byte hash).
fn rune_shaped(rune: &str) -> bool {
    rune.len() >= 43
        && rune
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'='))
}

/// Checks and runs a peer's request; the JSON reply.
async fn run_request(plugin: &P, peer: &str, request: &[u8]) -> String {
    let Ok(req) = serde_json::from_slice::<Value>(request) else {
        return error_reply(ERROR_REMOTE, "Invalid JSON");
    };
    let Value::Object(req) = req else {
        return error_reply(ERROR_REMOTE, "Not a JSON object");
    };
    let Some(method) = req.get("method") else {
        return error_reply(ERROR_REMOTE, "No method");
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
        return error_reply(ERROR_REMOTE, "Params must be object or array");
    }
    let filter = req.get("filter").cloned();
    let Some(id) = req.get("id").cloned() else {
        return error_reply(ERROR_REMOTE, "missing id field");
    };
    let Some(rune) = req.get("rune") else {
        return error_reply(ERROR_REMOTE, "Missing rune");
    };
    let Some(rune) = rune.as_str().filter(|r| rune_shaped(r)) else {
        return error_reply(ERROR_REMOTE, "Invalid rune");
    };
    let mut check = json!({"nodeid": peer, "rune": rune, "method": method});
    if let Some(p) = &params {
        check["params"] = p.clone();
    }
    match plugin.rpc().call("checkrune", check).await {
        Ok(v) if v.get("valid") == Some(&Value::Bool(true)) => {}
        Ok(_) => return error_reply(ERROR_REMOTE, "Invalid rune"),
        Err(CallError::Rpc(e)) => {
            return error_reply(ERROR_REMOTE_AUTH, &format!("Invalid rune: {}", e.message));
        }
        Err(e) => return error_reply(ERROR_REMOTE, &format!("Invalid rune: {e}")),
    }
    let params = params.unwrap_or_else(|| json!({}));
    let outcome = plugin.rpc().call_filtered(&method, params, filter).await;
    let mut reply = json!({"jsonrpc": "2.0", "id": id});
    match outcome {
        Ok(result) => reply["result"] = result,
        Err(CallError::Rpc(e)) => {
            reply["error"] = serde_json::to_value(&e).unwrap_or(Value::Null);
        }
        Err(e) => {
            reply["error"] = json!({"code": ERROR_REMOTE, "message": e.to_string()});
        }
    }
    reply.to_string()
}

/// A part of the reply to one of our requests.
fn take_reply_part(plugin: &P, peer: &str, id: u64, part: &[u8], last: bool) {
    let mut out = lock(&plugin.state().outgoing);
    let Some(o) = out.get_mut(&id).filter(|o| o.peer == peer) else {
        plugin.debug(format!(
            "Ignoring unexpected {} reply from {peer} (id {id})",
            if last { "terminal" } else { "partial" }
        ));
        return;
    };
    if let Some(buf) = &mut o.contents {
        if buf.len() + part.len() > MAX_REPLY {
            o.contents = None;
        } else {
            buf.extend_from_slice(part);
        }
    }
    if last && let Some(o) = out.remove(&id) {
        let _ = o.done.send(o.contents);
    }
}

async fn on_custommsg(plugin: P, payload: Value) -> Result<Continue, String> {
    let peer = payload.get("peer_id").and_then(Value::as_str);
    let msg = payload
        .get("payload")
        .and_then(Value::as_str)
        .and_then(unhex);
    if let (Some(peer), Some(msg)) = (peer, msg)
        && let Some((ty, id, part)) = parse_frame(&msg)
    {
        match ty {
            CMD_CONTINUES | CMD_TERM => take_request_part(&plugin, peer, id, part, ty == CMD_TERM),
            REPLY_CONTINUES | REPLY_TERM => {
                take_reply_part(&plugin, peer, id, part, ty == REPLY_TERM)
            }
            _ => {}
        }
    }
    Ok(Continue)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    Builder::<Arc<State>>::new()
        .rpcmethod(
            RpcMethod::typed(
                "commando",
                "peer_id method [params] [rune] [filter]",
                commando,
            )
            .description("Send a command to a peer over Lightning, authorised by a rune"),
        )
        .hook(HookSpec::new(Hook::Custommsg, on_custommsg).filters([
            CMD_CONTINUES,
            CMD_TERM,
            REPLY_CONTINUES,
            REPLY_TERM,
        ]))
        .dynamic(true)
        .run(Arc::new(State::default()))
        .await?;
    Ok(())
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
    fn short_or_odd_messages_are_not_frames() {
        assert!(parse_frame(&[0x4c, 0x4f, 0, 0]).is_none());
        assert_eq!(unhex("4c4"), None);
        assert_eq!(unhex("zz"), None);
        assert_eq!(hex(&[0x4c, 0x4f]), "4c4f");
    }

    #[test]
    fn runes_are_shape_checked_before_checkrune() {
        assert!(!rune_shaped("short"));
        assert!(!rune_shaped(&"a!".repeat(30)));
        assert!(rune_shaped(&"Ab9-_".repeat(9)));
    }
}
