//! Calls from the plugin back to the node, by one of two backends:
//!
//! - **the RPC socket** (`<lightning-dir>/<rpc-file>`, the socket `fulgur-cli` uses): what a
//!   process plugin uses. One connection is shared by all callers; a reader task matches
//!   answers to callers by id. The connection is opened on first use and reopened after it
//!   breaks. Not available on wasm32.
//! - **the plugin's own transport**: the request is sent as a message to the node on the
//!   plugin's output, and the node's response arrives on the plugin's input, where the
//!   dispatcher hands it to the waiting caller. This is how a WASM guest, which has no
//!   socket, calls the node (see [`crate::WasmGuest`] and `docs/WASM.md`); on wasm32 it is
//!   the only backend.
//!
//! Either way requests carry unique ids (`<plugin>:<method>#<n>`), so many calls can be in
//! flight at once and complete in any order, and failures are the same [`CallError`]s.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex as StdMutex};

use fulgur_protocol::jsonrpc::{Request, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};

use crate::error::CallError;

/// Callers waiting for an answer, by request id; `None` once no answer can come any more.
type Waiters = Arc<StdMutex<Option<HashMap<String, oneshot::Sender<Result<Value, CallError>>>>>>;

struct Inner {
    path: PathBuf,
    prefix: String,
    counter: AtomicU64,
    backend: Backend,
}

enum Backend {
    #[cfg(not(target_arch = "wasm32"))]
    Socket(socket::Socket),
    Transport {
        out: mpsc::UnboundedSender<Value>,
        waiters: Waiters,
    },
}

/// What became of a response that arrived on the plugin's input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Routed {
    /// It answered a call made through the transport.
    Delivered,
    /// Calls go through the transport but none is waiting for this id (it was cancelled,
    /// or the id is not ours).
    UnknownId,
    /// Calls go through the socket: responses on the plugin's input are not for us.
    NotOurs,
}

/// A client for calls back to the node; cheap to clone, usable from many tasks at once.
/// Every plugin gets one as [`crate::Plugin::rpc`]. It uses the node's RPC socket, unless
/// the plugin runs through a transport made with [`crate::Transport::rpc_through_transport`]
/// (as every [`crate::WasmGuest`] does, and always on wasm32): then calls are messages on
/// the plugin's own transport.
#[derive(Clone)]
pub struct RpcClient {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for RpcClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let backend = match self.inner.backend {
            #[cfg(not(target_arch = "wasm32"))]
            Backend::Socket(_) => "socket",
            Backend::Transport { .. } => "transport",
        };
        f.debug_struct("RpcClient")
            .field("path", &self.inner.path)
            .field("backend", &backend)
            .finish()
    }
}

impl RpcClient {
    /// A client for the socket at `path`, naming its requests `<prefix>:<method>#<n>`.
    /// Nothing is opened until the first call.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn new(path: impl Into<PathBuf>, prefix: impl Into<String>) -> Self {
        Self::with_backend(
            path.into(),
            prefix.into(),
            Backend::Socket(socket::Socket::default()),
        )
    }

    /// A client sending its requests on `out` (the plugin's output); the dispatcher passes
    /// the answers in with [`RpcClient::route_response`]. `path` is only reported.
    pub(crate) fn through_transport(
        path: PathBuf,
        prefix: String,
        out: mpsc::UnboundedSender<Value>,
    ) -> Self {
        let waiters: Waiters = Arc::new(StdMutex::new(Some(HashMap::new())));
        Self::with_backend(path, prefix, Backend::Transport { out, waiters })
    }

    /// The client a plugin gets after `init`: through its transport when asked to (always
    /// on wasm32, which has no sockets), else over the node's socket at `path`.
    pub(crate) fn for_plugin(
        path: PathBuf,
        prefix: String,
        out: &mpsc::UnboundedSender<Value>,
        through_transport: bool,
    ) -> Self {
        #[cfg(not(target_arch = "wasm32"))]
        if !through_transport {
            return Self::new(path, prefix);
        }
        #[cfg(target_arch = "wasm32")]
        let _ = through_transport;
        Self::through_transport(path, prefix, out.clone())
    }

    fn with_backend(path: PathBuf, prefix: String, backend: Backend) -> Self {
        RpcClient {
            inner: Arc::new(Inner {
                path,
                prefix,
                counter: AtomicU64::new(0),
                backend,
            }),
        }
    }

    /// The node's socket path (from `init`). Calls through the transport do not use it.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Whether calls go through the plugin's transport rather than the socket.
    pub fn is_through_transport(&self) -> bool {
        self.transport_waiters().is_some()
    }

    /// The callers waiting through the transport; `None` for the socket.
    fn transport_waiters(&self) -> Option<&Waiters> {
        match &self.inner.backend {
            #[cfg(not(target_arch = "wasm32"))]
            Backend::Socket(_) => None,
            Backend::Transport { waiters, .. } => Some(waiters),
        }
    }

    /// Calls `method` with `params` (an object for named params, an array for positional
    /// ones) and waits for the result. A JSON-RPC error from the node is
    /// [`CallError::Rpc`] with the node's code and message. Through the transport, a call
    /// still waiting when the plugin's input ends (or the WASM guest is closed) ends with
    /// [`CallError::Closed`].
    pub async fn call(&self, method: &str, params: Value) -> Result<Value, CallError> {
        self.call_filtered(method, params, None).await
    }

    /// Like [`RpcClient::call`], with CLN's `filter` (the fields of the result to keep) when
    /// given.
    pub async fn call_filtered(
        &self,
        method: &str,
        params: Value,
        filter: Option<Value>,
    ) -> Result<Value, CallError> {
        let n = self.inner.counter.fetch_add(1, Ordering::Relaxed);
        let id = fulgur_protocol::jsonrpc::child_id(None, &self.inner.prefix, method, n);
        let mut request = Request::new(id.clone(), method, params).to_value();
        if let (Some(f), Some(obj)) = (filter, request.as_object_mut()) {
            obj.insert("filter".into(), f);
        }
        match &self.inner.backend {
            #[cfg(not(target_arch = "wasm32"))]
            Backend::Socket(s) => s.call(&self.inner.path, id, &request).await,
            Backend::Transport { out, waiters } => call_through(out, waiters, id, request).await,
        }
    }

    /// Like [`RpcClient::call`] with typed params and result: `params` must serialise to an
    /// object or an array, the result is deserialised into `R`.
    pub async fn call_typed<P, R>(&self, method: &str, params: &P) -> Result<R, CallError>
    where
        P: Serialize + ?Sized,
        R: DeserializeOwned,
    {
        let params = serde_json::to_value(params).map_err(|e| CallError::Json(e.to_string()))?;
        let result = self.call(method, params).await?;
        serde_json::from_value(result).map_err(|e| CallError::Json(e.to_string()))
    }

    /// Hands a response that arrived on the plugin's input to the call waiting for it.
    pub(crate) fn route_response(&self, response: Response) -> Routed {
        let Some(waiters) = self.transport_waiters() else {
            return Routed::NotOurs;
        };
        let Some(id) = response.id.as_str() else {
            return Routed::UnknownId;
        };
        let waiter = lock(waiters).as_mut().and_then(|m| m.remove(id));
        match waiter {
            Some(w) => {
                // The caller may have given up meanwhile; then nobody is left to tell.
                let _ = w.send(response.outcome.map_err(CallError::Rpc));
                Routed::Delivered
            }
            None => Routed::UnknownId,
        }
    }

    /// The plugin's input ended: through the transport, every waiting call ends with
    /// [`CallError::Closed`] and later calls fail at once. No effect on the socket.
    pub(crate) fn close(&self) {
        if let Some(waiters) = self.transport_waiters() {
            lock(waiters).take();
        }
    }
}

/// Removes a caller's entry when its call ends, answered or not (a cancelled handler must
/// not leave its entry behind).
struct Pending<'a> {
    waiters: &'a Waiters,
    id: String,
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        if let Some(map) = lock(self.waiters).as_mut() {
            map.remove(&self.id);
        }
    }
}

async fn call_through(
    out: &mpsc::UnboundedSender<Value>,
    waiters: &Waiters,
    id: String,
    request: Value,
) -> Result<Value, CallError> {
    let (tx, rx) = oneshot::channel();
    match lock(waiters).as_mut() {
        Some(map) => map.insert(id.clone(), tx),
        None => return Err(CallError::Closed),
    };
    let _pending = Pending { waiters, id };
    out.send(request).map_err(|_| CallError::Closed)?;
    // The sender is dropped without an answer when the input ends: `Closed`.
    rx.await.unwrap_or(Err(CallError::Closed))
}

/// The socket backend (not on wasm32: no sockets there).
#[cfg(not(target_arch = "wasm32"))]
mod socket {
    use std::collections::HashMap;
    use std::path::Path;
    use std::sync::{Arc, Mutex as StdMutex};

    use fulgur_protocol::codec::{JsonCodec, encode_frame};
    use fulgur_protocol::jsonrpc::Message;
    use futures::StreamExt;
    use serde_json::Value;
    use tokio::io::AsyncWriteExt;
    use tokio::net::UnixStream;
    use tokio::net::unix::OwnedWriteHalf;
    use tokio::sync::{Mutex, oneshot};
    use tokio_util::codec::FramedRead;

    use super::{Waiters, lock};
    use crate::error::CallError;

    struct Connection {
        writer: OwnedWriteHalf,
        /// `None` once the reader task has seen the connection end.
        waiters: Waiters,
    }

    /// One shared connection, opened on first use.
    #[derive(Default)]
    pub(super) struct Socket {
        conn: Mutex<Option<Connection>>,
    }

    impl Socket {
        pub(super) async fn call(
            &self,
            path: &Path,
            id: String,
            request: &Value,
        ) -> Result<Value, CallError> {
            let frame = encode_frame(request);
            let (tx, rx) = oneshot::channel();
            {
                let mut guard = self.conn.lock().await;
                let needs_connect = match guard.as_ref() {
                    None => true,
                    Some(c) => lock(&c.waiters).is_none(),
                };
                if needs_connect {
                    *guard = Some(connect(path).await?);
                }
                let Some(conn) = guard.as_mut() else {
                    return Err(CallError::Closed);
                };
                match lock(&conn.waiters).as_mut() {
                    Some(map) => map.insert(id.clone(), tx),
                    None => return Err(CallError::Closed),
                };
                if let Err(e) = conn.writer.write_all(&frame).await {
                    if let Some(map) = lock(&conn.waiters).as_mut() {
                        map.remove(&id);
                    }
                    *guard = None;
                    return Err(CallError::Io(e));
                }
            }
            rx.await.unwrap_or(Err(CallError::Closed))
        }
    }

    async fn connect(path: &Path) -> Result<Connection, CallError> {
        let stream = UnixStream::connect(path)
            .await
            .map_err(|source| CallError::Connect {
                path: path.display().to_string(),
                source,
            })?;
        let (read, writer) = stream.into_split();
        let waiters: Waiters = Arc::new(StdMutex::new(Some(HashMap::new())));
        let reader_waiters = waiters.clone();
        tokio::spawn(async move {
            let mut frames = FramedRead::new(read, JsonCodec::default());
            while let Some(Ok(value)) = frames.next().await {
                // Anything but a response (a `message` notification, say) is not ours.
                let Ok(Message::Response(resp)) = Message::from_value(value) else {
                    continue;
                };
                let Some(id) = resp.id.as_str() else { continue };
                let waiter = lock(&reader_waiters).as_mut().and_then(|m| m.remove(id));
                if let Some(waiter) = waiter {
                    let _ = waiter.send(resp.outcome.map_err(CallError::Rpc));
                }
            }
            // Connection gone: every caller still waiting gets `Closed` (dropping the
            // senders does that), and the next call reconnects.
            lock(&reader_waiters).take();
        });
        Ok(Connection { writer, waiters })
    }
}

fn lock<T>(m: &StdMutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use fulgur_protocol::RpcError;
    use serde_json::json;

    use super::*;

    fn client() -> (RpcClient, mpsc::UnboundedReceiver<Value>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let c = RpcClient::through_transport("/x/rpc".into(), "me".into(), tx);
        (c, rx)
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn transport_calls_are_matched_by_id_in_any_order() {
        runtime().block_on(async {
            let (c, mut out) = client();
            assert!(c.is_through_transport());
            let a = tokio::spawn({
                let c = c.clone();
                async move { c.call("getinfo", json!({})).await }
            });
            let b = tokio::spawn({
                let c = c.clone();
                async move { c.call("listpeers", json!([])).await }
            });
            let (r1, r2) = (out.recv().await, out.recv().await);
            let reqs = [r1, r2].map(|r| r.unwrap_or_else(|| panic!("no request")));
            let ids: Vec<String> = reqs
                .iter()
                .map(|r| r["id"].as_str().unwrap_or_default().to_string())
                .collect();
            assert_ne!(ids[0], ids[1]);
            let id_of = |m: &str| {
                reqs.iter()
                    .find(|r| r["method"] == m)
                    .map(|r| r["id"].clone())
                    .unwrap_or_else(|| panic!("no {m} request in {reqs:?}"))
            };
            let (info, peers) = (id_of("getinfo"), id_of("listpeers"));
            assert!(info.as_str().is_some_and(|s| s.starts_with("me:getinfo#")));
            // Answered in the opposite order.
            let routed = c.route_response(Response::err(peers, RpcError::new(-5, "nope")));
            assert_eq!(routed, Routed::Delivered);
            assert_eq!(
                c.route_response(Response::ok(info, json!({"alias": "A"}))),
                Routed::Delivered
            );
            let a = a.await.unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(a.unwrap_or_else(|e| panic!("{e}")), json!({"alias": "A"}));
            match b.await.unwrap_or_else(|e| panic!("{e}")) {
                Err(CallError::Rpc(e)) => assert_eq!((e.code, e.message.as_str()), (-5, "nope")),
                other => panic!("expected CallError::Rpc, got {other:?}"),
            }
        });
    }

    #[test]
    fn cancelled_transport_call_leaves_no_waiter_and_close_ends_calls() {
        runtime().block_on(async {
            let (c, mut out) = client();
            let call = tokio::spawn({
                let c = c.clone();
                async move { c.call("getinfo", json!({})).await }
            });
            let id = out.recv().await.map(|r| r["id"].clone());
            let id = id.unwrap_or_else(|| panic!("no request"));
            call.abort();
            let _ = call.await;
            // The answer to a call nobody waits for any more is not delivered.
            assert_eq!(
                c.route_response(Response::ok(id, json!({}))),
                Routed::UnknownId
            );

            let waiting = tokio::spawn({
                let c = c.clone();
                async move { c.call("getinfo", json!({})).await }
            });
            assert!(out.recv().await.is_some());
            c.close();
            let r = waiting.await.unwrap_or_else(|e| panic!("{e}"));
            assert!(matches!(r, Err(CallError::Closed)), "{r:?}");
            let later = c.call("getinfo", json!({})).await;
            assert!(matches!(later, Err(CallError::Closed)), "{later:?}");
        });
    }

    #[test]
    fn socket_client_does_not_take_responses_from_the_input() {
        let c = RpcClient::new("/nonexistent/rpc", "me");
        assert!(!c.is_through_transport());
        let r = c.route_response(Response::ok(json!("me:getinfo#0"), json!({})));
        assert_eq!(r, Routed::NotOurs);
    }
}
