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

use fulgur_plugin_commando::{
    CMD_CONTINUES, CMD_TERM, ERROR_LOCAL, ERROR_REMOTE, ERROR_REMOTE_AUTH, MAX_INCOMING, MAX_REPLY,
    MAX_REQUEST, REPLY_CONTINUES, REPLY_TERM, error_reply, frames, parse_frame, read_request,
    unhex,
};
use fulgur_plugin_sdk::{
    Builder, CallError, Continue, Hook, HookSpec, Plugin, RpcError, RpcMethod,
};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use tokio::sync::oneshot;

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
    let (outcome, wrong_id) = fulgur_plugin_commando::read_reply(&reply, &json_id);
    if let Some(id) = wrong_id {
        plugin.warn(format!(
            "Commando reply with wrong id: I sent \"{json_id}\", they replied with {id}!"
        ));
    }
    outcome
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

/// Checks and runs a peer's request; the JSON reply.
async fn run_request(plugin: &P, peer: &str, request: &[u8]) -> String {
    let req = match read_request(request) {
        Ok(r) => r,
        Err((code, why)) => return error_reply(code, why),
    };
    let (method, params, filter, id, rune) = (req.method, req.params, req.filter, req.id, req.rune);
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
    let outcome = match plugin.rpc().call_filtered(&method, params, filter).await {
        Ok(result) => Ok(result),
        Err(CallError::Rpc(e)) => Err(e),
        Err(e) => Err(RpcError::new(ERROR_REMOTE, e.to_string())),
    };
    fulgur_plugin_commando::reply(id, outcome)
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
