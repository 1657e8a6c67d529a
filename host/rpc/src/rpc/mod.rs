//! The JSON-RPC server on the `lightning-rpc` UNIX socket, with CLN's rules: requests are
//! concatenated JSON objects (no terminator needed), answered in any order with
//! `"\n\n"` after each reply; `jsonrpc`, `id` and `params` are mandatory; errors carry
//! CLN's codes. Every request runs in its own task, so a long-polling call never blocks
//! the connection it came on, let alone others.
//!
//! Limits ([`crate::config::RpcLimits`], `--fulgur-rpc-*`; CLN has none): at most
//! `max_connections` connections at once (one more is answered with an error and closed);
//! a request may be at most `max_request` bytes (16 MiB; a bigger one is answered and its
//! connection closed); a request must arrive whole within `request_timeout` (30 s) of its
//! first byte, or its connection is closed. A connection idle between requests is kept:
//! `cln-rpc` clients and plugins hold theirs open. JSON nested deeper than 128 levels is a
//! parse error (`-32700`, serde_json's limit). None of this affects other clients.
//!
//! Back-pressure per connection: a client that sends requests without reading the replies
//! stops being read once [`MAX_UNREAD_BYTES`] of replies wait for it, or once
//! [`MAX_IN_FLIGHT`] of its requests are running; notifications for it are dropped while
//! its replies are over the limit. Its socket buffer then fills and its writes block, and
//! fulgurd's memory stays bounded.

pub mod commands;
pub mod onchain;
pub mod params;
pub mod psbt;
#[cfg(test)]
pub mod schema;
pub mod standby;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use fulgur_protocol::codec::{FrameError, JsonCodec, encode_frame};
use fulgur_protocol::hooks::{Hook, RpcCommandAction};
use fulgur_protocol::{RpcError, error::codes};
use serde::Serialize;
use serde_json::{Map, Value, json};
use tokio::io::AsyncWriteExt;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{Notify, Semaphore, mpsc, oneshot, watch};

use crate::hooks::ChainEnd;
use crate::node::Node;
use crate::plugin::{CallerLink, CallerSink, Gone};

/// What a connection's writer sends.
pub enum Out {
    /// A frame.
    Frame(Bytes),
    /// A frame, then a signal once it is written (used by `stop`).
    FrameAck(Bytes, oneshot::Sender<()>),
}

/// Replies (and notifications) queued for one connection beyond which its requests are no
/// longer read, until it reads.
pub const MAX_UNREAD_BYTES: usize = 32 * 1024 * 1024;

/// Requests of one connection running at once beyond which the next is not read until one
/// finishes (long-polling calls such as `waitanyinvoice` count).
pub const MAX_IN_FLIGHT: usize = 1024;

/// Per-connection state.
pub struct Conn {
    tx: mpsc::UnboundedSender<Out>,
    /// Bytes queued for the writer and not yet written.
    queued: AtomicUsize,
    /// Signalled when the writer wrote (or gave up).
    drained: Notify,
    /// `notifications {enable}` was called.
    pub notifications: AtomicBool,
    /// `deprecations {enable}` setting for this connection.
    pub deprecated_ok: AtomicBool,
}

impl CallerSink for Conn {
    fn forward(&self, method: &str, params: Value) {
        if self.notifications.load(Ordering::Relaxed)
            && self.queued.load(Ordering::Acquire) <= MAX_UNREAD_BYTES
        {
            self.queue(Out::Frame(Bytes::from(encode_frame(
                &json!({"jsonrpc":"2.0","method":method,"params":params}),
            ))));
        }
    }
}

impl Conn {
    fn new(tx: mpsc::UnboundedSender<Out>, deprecated_ok: bool) -> Conn {
        Conn {
            tx,
            queued: AtomicUsize::new(0),
            drained: Notify::new(),
            notifications: AtomicBool::new(false),
            deprecated_ok: AtomicBool::new(deprecated_ok),
        }
    }

    /// Queues `out` for the writer, counting its bytes until they are written.
    fn queue(&self, out: Out) -> bool {
        let len = match &out {
            Out::Frame(f) | Out::FrameAck(f, _) => f.len(),
        };
        self.queued.fetch_add(len, Ordering::AcqRel);
        self.tx.send(out).is_ok()
    }

    /// Waits while more than [`MAX_UNREAD_BYTES`] wait for the client to read them.
    async fn wait_until_read(&self) {
        loop {
            let drained = self.drained.notified();
            tokio::pin!(drained);
            drained.as_mut().enable();
            if self.queued.load(Ordering::Acquire) <= MAX_UNREAD_BYTES {
                return;
            }
            drained.await;
        }
    }
}

/// What a command produced.
pub enum Reply {
    /// A result.
    Ok(Value),
    /// An error.
    Err(RpcError),
    /// A plugin's whole response object (its `result` or `error` is passed verbatim).
    Raw(Value),
}

impl From<Result<Value, RpcError>> for Reply {
    fn from(r: Result<Value, RpcError>) -> Self {
        match r {
            Ok(v) => Reply::Ok(v),
            Err(e) => Reply::Err(e),
        }
    }
}

#[derive(Serialize)]
struct Response<'a> {
    jsonrpc: &'static str,
    id: &'a Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    result: Option<&'a Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a Value>,
}

pub(crate) fn response_frame(id: &Value, reply: &Reply) -> Bytes {
    let err_value;
    let (result, error) = match reply {
        Reply::Ok(v) => (Some(v), None),
        Reply::Err(e) => {
            err_value = serde_json::to_value(e).unwrap_or(Value::Null);
            (None, Some(&err_value))
        }
        Reply::Raw(resp) => match resp.get("result") {
            Some(r) => (Some(r), None),
            None => (None, resp.get("error")),
        },
    };
    let fallback;
    let error = match (result, error) {
        (None, None) => {
            fallback = json!({"code": codes::PLUGIN_ERROR, "message": "plugin returned neither result nor error"});
            Some(&fallback)
        }
        (_, e) => e,
    };
    Bytes::from(encode_frame(&Response {
        jsonrpc: "2.0",
        id,
        result,
        error,
    }))
}

/// Binds the socket with the configured permissions, refusing to steal it from a
/// running node.
pub async fn listen(path: &Path, mode: u32) -> std::io::Result<UnixListener> {
    use std::os::unix::fs::PermissionsExt;
    if path.exists() {
        if UnixStream::connect(path).await.is_ok() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AddrInUse,
                format!("another node answers on {}", path.display()),
            ));
        }
        std::fs::remove_file(path)?;
    }
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    Ok(listener)
}

/// Accepts connections until `stop` turns true.
pub async fn serve(node: Arc<Node>, listener: UnixListener, mut stop: watch::Receiver<bool>) {
    node.plugins
        .set_local_rpc(Arc::new(InProcess(Arc::downgrade(&node))));
    let slots = Arc::new(tokio::sync::Semaphore::new(
        node.config.rpc_limits.max_connections,
    ));
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => match slots.clone().try_acquire_owned() {
                    Ok(slot) => {
                        let node = node.clone();
                        tokio::spawn(async move {
                            connection(node, stream).await;
                            drop(slot);
                        });
                    }
                    Err(_) => {
                        let limit = node.config.rpc_limits.max_connections;
                        node.main.unusual(&format!(
                            "refusing an RPC connection: {limit} already open (--fulgur-rpc-max-connections)"
                        ));
                        tokio::spawn(refuse(stream, limit));
                    }
                },
                Err(e) => {
                    node.main.unusual(&format!("RPC accept failed: {e}"));
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            _ = async { let _ = stop.wait_for(|s| *s).await; } => break,
        }
    }
}

/// The RPC for WASM plugins, which have no socket: each request runs as if it came on a
/// connection of its own whose notifications go nowhere.
#[cfg_attr(not(feature = "wasm"), allow(dead_code))]
struct InProcess(std::sync::Weak<Node>);

impl crate::plugin::LocalRpc for InProcess {
    fn call(&self, request: Value) -> futures::future::BoxFuture<'static, Value> {
        let node = self.0.upgrade();
        Box::pin(async move {
            let Some(node) = node else {
                return json!({"error": RpcError::new(codes::LIGHTNINGD_SHUTDOWN, "lightningd is shutting down")});
            };
            let (tx, _discarded) = mpsc::unbounded_channel::<Out>();
            let conn = Arc::new(Conn::new(tx, node.config.allow_deprecated_apis));
            let id = request.get("id").cloned().unwrap_or(Value::Null);
            let method = request
                .get("method")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            match execute(&node, &conn, &request, &id, &method, true).await {
                Reply::Ok(v) => json!({ "result": v }),
                Reply::Err(e) => json!({ "error": e }),
                Reply::Raw(r) => match (r.get("result"), r.get("error")) {
                    (Some(v), _) => json!({ "result": v }),
                    (None, Some(e)) => json!({ "error": e }),
                    (None, None) => {
                        json!({"error": {"code": codes::PLUGIN_ERROR, "message": "plugin returned neither result nor error"}})
                    }
                },
            }
        })
    }
}

/// Answers a connection over the limit with an error (id `null`) and closes it.
async fn refuse(mut stream: UnixStream, limit: usize) {
    let err = RpcError::new(
        codes::LIGHTNINGD,
        format!("Too many RPC connections (limit {limit}); try again later"),
    );
    let frame = response_frame(&Value::Null, &Reply::Err(err));
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        let _ = stream.write_all(&frame).await;
        let _ = stream.shutdown().await;
    })
    .await;
}

/// Reads the next request: `None` at the end of the stream, or when the request that has
/// begun does not arrive whole by `deadline` (counted from its first byte).
async fn next_request(
    rd: &mut tokio::net::unix::OwnedReadHalf,
    codec: &mut JsonCodec,
    buf: &mut bytes::BytesMut,
    timeout: Duration,
) -> Option<Result<Value, FrameError>> {
    use tokio::io::AsyncReadExt;
    use tokio_util::codec::Decoder;
    let mut deadline = None;
    loop {
        match codec.decode(buf) {
            Ok(Some(v)) => return Some(Ok(v)),
            Ok(None) => {}
            Err(e) => return Some(Err(e)),
        }
        // Whitespace between requests is dropped by the codec: bytes left are a request.
        if deadline.is_none() && !buf.is_empty() {
            deadline = Some(tokio::time::Instant::now() + timeout);
        }
        buf.reserve(64 * 1024);
        let read = match deadline {
            None => rd.read_buf(buf).await,
            Some(d) => match tokio::time::timeout_at(d, rd.read_buf(buf)).await {
                Ok(r) => r,
                Err(_) => return None,
            },
        };
        match read {
            Ok(0) => {
                return match codec.decode_eof(buf) {
                    Ok(Some(v)) => Some(Ok(v)),
                    Ok(None) => None,
                    Err(e) => Some(Err(e)),
                };
            }
            Ok(_) => {}
            Err(e) => return Some(Err(FrameError::Io(e))),
        }
    }
}

async fn connection(node: Arc<Node>, stream: UnixStream) {
    let (rd, mut wr) = stream.into_split();
    let (tx, mut rx) = mpsc::unbounded_channel::<Out>();
    let conn = Arc::new(Conn::new(tx, node.config.allow_deprecated_apis));
    let weak = Arc::downgrade(&conn);
    let writer = tokio::spawn(async move {
        while let Some(out) = rx.recv().await {
            let (frame, ack) = match out {
                Out::Frame(f) => (f, None),
                Out::FrameAck(f, a) => (f, Some(a)),
            };
            let ok = wr.write_all(&frame).await.is_ok();
            if let Some(a) = ack {
                let _ = wr.flush().await;
                let _ = a.send(());
            }
            if let Some(c) = weak.upgrade() {
                c.queued.fetch_sub(frame.len(), Ordering::AcqRel);
                c.drained.notify_waiters();
            }
            if !ok {
                break;
            }
        }
        // Gone: nothing queued will be written, so nothing holds the reader back.
        if let Some(c) = weak.upgrade() {
            c.queued.store(0, Ordering::Release);
            c.drained.notify_waiters();
        }
    });
    let running = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let limits = node.config.rpc_limits;
    let mut rd = rd;
    let mut codec = JsonCodec::new(limits.max_request);
    let mut buf = bytes::BytesMut::new();
    loop {
        let unread = conn.queued.load(Ordering::Acquire);
        if unread > MAX_UNREAD_BYTES {
            node.main.debug(&format!(
                "RPC client not reading its replies ({unread} bytes wait for it): its next request is read once it reads"
            ));
            conn.wait_until_read().await;
        }
        let Ok(slot) = running.clone().acquire_owned().await else {
            break;
        };
        let next = next_request(&mut rd, &mut codec, &mut buf, limits.request_timeout).await;
        if next.is_none() && !buf.iter().all(u8::is_ascii_whitespace) {
            node.main.unusual(&format!(
                "closing an RPC connection whose request did not arrive within {}s of its first byte",
                limits.request_timeout.as_secs()
            ));
        }
        match next {
            Some(Ok(v)) => {
                let (node, conn) = (node.clone(), conn.clone());
                tokio::spawn(async move {
                    handle(node, conn, v).await;
                    drop(slot);
                });
            }
            Some(Err(FrameError::Invalid(e))) => {
                let err = RpcError::new(codes::PARSE_ERROR, format!("Invalid JSON: {e}"));
                conn.queue(Out::Frame(response_frame(&Value::Null, &Reply::Err(err))));
                break;
            }
            Some(Err(FrameError::TooLarge { limit })) => {
                let err = RpcError::invalid_request(format!("Request larger than {limit} bytes"));
                conn.queue(Out::Frame(response_frame(&Value::Null, &Reply::Err(err))));
                break;
            }
            Some(Err(FrameError::Io(_))) | None => break,
        }
    }
    drop(conn);
    let _ = writer.await;
}

fn invalid(id: &Value, msg: &str) -> Bytes {
    response_frame(id, &Reply::Err(RpcError::invalid_request(msg)))
}

/// CLN's checks on one request, in CLN's order: its id and method, or the id to answer
/// with and why the request is invalid.
pub(crate) fn check_request(v: &Value) -> Result<(Value, String), (Value, &'static str)> {
    let Value::Object(obj) = v else {
        return Err((Value::Null, "Expected {} for json command"));
    };
    let id = match obj.get("id") {
        None => return Err((Value::Null, "No id")),
        Some(id @ (Value::String(_) | Value::Number(_))) => id.clone(),
        Some(_) => return Err((Value::Null, "Expected string/primitive for id")),
    };
    if obj.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return Err((
            Value::Null,
            "jsonrpc: \"2.0\" must be specified in the request",
        ));
    }
    let method = match obj.get("method") {
        None => return Err((id, "No method")),
        Some(Value::String(m)) => m.clone(),
        Some(_) => return Err((id, "Expected string for method")),
    };
    match obj.get("params") {
        None => Err((id, "No params")),
        Some(Value::Object(_) | Value::Array(_)) => Ok((id, method)),
        Some(_) => Err((id, "Expected array or object for params")),
    }
}

/// Validates one request as CLN does, runs it, and queues the reply.
async fn handle(node: Arc<Node>, conn: Arc<Conn>, v: Value) {
    let (id, method) = match check_request(&v) {
        Ok(checked) => checked,
        Err((id, why)) => return send(&conn, invalid(&id, why)),
    };
    let filter = v.get("filter").cloned();
    let reply = execute(&node, &conn, &v, &id, &method, true).await;
    let reply = match (reply, filter) {
        (Reply::Ok(r), Some(f)) => Reply::Ok(apply_filter(&r, &f)),
        (r, _) => r,
    };
    let frame = response_frame(&id, &reply);
    if method == "stop" && matches!(reply, Reply::Ok(_)) {
        let (ack_tx, ack_rx) = oneshot::channel();
        if conn.queue(Out::FrameAck(frame, ack_tx)) {
            let _ = ack_rx.await;
        }
        node.stop_replied();
    } else {
        send(&conn, frame);
    }
}

fn send(conn: &Conn, frame: Bytes) {
    conn.queue(Out::Frame(frame));
}

/// The plugin that made a call, read from a CLN-style id chain (`.../NAME:method#n`).
pub(crate) fn calling_plugin(id: &Value) -> Option<&str> {
    let last = id.as_str()?.rsplit('/').next()?;
    let (prefix, _) = last.split_once(':')?;
    (prefix != "cli" && prefix != "cln").then_some(prefix)
}

/// Resolves the method, runs the `rpc_command` hook chain (once), then the command.
pub async fn execute(
    node: &Arc<Node>,
    conn: &Arc<Conn>,
    request: &Value,
    id: &Value,
    method: &str,
    run_hook: bool,
) -> Reply {
    let builtin = commands::find(method);
    let owner = if builtin.is_none() {
        node.plugins.method_owner(method)
    } else {
        None
    };
    if builtin.is_none() && owner.is_none() {
        return Reply::Err(RpcError::unknown_method(method));
    }
    if builtin.is_some() && commands::is_dev_only(method) && !node.config.developer {
        return Reply::Err(RpcError::new(
            codes::METHOD_NOT_FOUND,
            format!("Command {method} is developer-only"),
        ));
    }
    if let Some(p) = &owner {
        let deprecated = p.manifest().is_some_and(|m| {
            m.rpcmethods.iter().any(|r| {
                r.name == method && fulgur_protocol::manifest::is_deprecated(&r.deprecated)
            })
        });
        if deprecated && !conn.deprecated_ok.load(Ordering::Relaxed) {
            return Reply::Err(RpcError::new(
                codes::METHOD_NOT_FOUND,
                format!("Command {method} is deprecated"),
            ));
        }
    }
    if run_hook && node.plugins.has_hook(Hook::RpcCommand) {
        let payload = json!({"rpc_command": request});
        // `stop` and `plugin` are how an operator takes back control from a plugin: a
        // plugin may still refuse or rewrite them, but one that holds them past
        // --plugin-timeout is passed over (CLN would wait forever).
        let deadline = matches!(method, "stop" | "plugin")
            .then(|| tokio::time::Instant::now() + node.plugins.settings.timeout);
        let end = node
            .plugins
            .hook(Hook::RpcCommand, payload)
            .parent(id)
            .filter(&Value::from(method))
            .skip(calling_plugin(id))
            .deadline(deadline)
            .run()
            .await;
        if let ChainEnd::DeadlineExceeded { plugin } = &end {
            node.main.unusual(&format!(
                "plugin {plugin} held the rpc_command hook for {method} longer than --plugin-timeout: running {method} without its answer"
            ));
        }
        if let ChainEnd::Stopped { plugin, answer } = end {
            match RpcCommandAction::from_answer(&answer) {
                Ok(RpcCommandAction::ReturnResult(r)) => return Reply::Ok(r),
                Ok(RpcCommandAction::ReturnError(e)) => return Reply::Raw(json!({"error": e})),
                Ok(RpcCommandAction::Replace(mut new)) => {
                    let new_method = new
                        .get("method")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_string();
                    if commands::find(&new_method).is_none()
                        && node.plugins.method_owner(&new_method).is_none()
                    {
                        return Reply::Err(RpcError::invalid_request(format!(
                            "Bad response to 'rpc_command' hook from {plugin}: unknown method '{new_method}'"
                        )));
                    }
                    if let Some(o) = new.as_object_mut() {
                        o.insert("id".into(), id.clone());
                        o.entry("jsonrpc").or_insert_with(|| Value::from("2.0"));
                        o.entry("params")
                            .or_insert_with(|| Value::Object(Map::new()));
                    }
                    return Box::pin(execute(node, conn, &new, id, &new_method, false)).await;
                }
                Ok(RpcCommandAction::Continue) | Err(_) => {}
            }
        }
    }
    let params = request
        .get("params")
        .cloned()
        .unwrap_or(Value::Object(Map::new()));
    if let Some(cmd) = builtin {
        let bound = match params::bind(cmd.params, &params, cmd.extra_params) {
            Ok(b) => b,
            Err(e) => return Reply::Err(e),
        };
        let ctx = commands::Ctx {
            node: node.clone(),
            conn: conn.clone(),
            id: id.clone(),
        };
        return (cmd.run)(ctx, bound).await.into();
    }
    let Some(p) = owner else {
        return Reply::Err(RpcError::unknown_method(method));
    };
    match p
        .forward(
            request,
            CallerLink {
                id: id.clone(),
                sink: conn.clone(),
            },
        )
        .await
    {
        Ok(resp) => Reply::Raw(resp),
        Err(Gone) => Reply::Err(RpcError::plugin_terminated()),
    }
}

/// CLN's `filter`: keeps only members marked `true` in the template.
pub fn apply_filter(v: &Value, f: &Value) -> Value {
    match (v, f) {
        (_, Value::Bool(true)) => v.clone(),
        (Value::Object(o), Value::Object(fo)) => Value::Object(
            fo.iter()
                .filter_map(|(k, sub)| o.get(k).map(|x| (k.clone(), apply_filter(x, sub))))
                .collect(),
        ),
        (Value::Array(a), Value::Array(fa)) if fa.len() == 1 => {
            Value::Array(a.iter().map(|x| apply_filter(x, &fa[0])).collect())
        }
        (Value::Array(a), Value::Object(_)) => {
            Value::Array(a.iter().map(|x| apply_filter(x, f)).collect())
        }
        _ => v.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_keeps_marked_members() {
        let v = json!({"a":1,"b":{"c":2,"d":3},"l":[{"x":1,"y":2}]});
        let f = json!({"b":{"c":true},"l":[{"y":true}]});
        assert_eq!(apply_filter(&v, &f), json!({"b":{"c":2},"l":[{"y":2}]}));
    }

    #[test]
    fn caller_from_id_chain() {
        assert_eq!(
            calling_plugin(&json!("cli:x#1/cln:x#2/hello.py:getinfo#3")),
            Some("hello.py")
        );
        assert_eq!(calling_plugin(&json!("cli:getinfo#1")), None);
        assert_eq!(calling_plugin(&json!(5)), None);
    }

    #[test]
    fn raw_replies_pass_errors_verbatim() {
        let f = response_frame(
            &json!(7),
            &Reply::Raw(json!({"error":{"code":42,"message":"m","data":{"x":1}}})),
        );
        assert_eq!(&f[..], b"{\"jsonrpc\":\"2.0\",\"id\":7,\"error\":{\"code\":42,\"message\":\"m\",\"data\":{\"x\":1}}}\n\n");
    }
}
