//! Calls from the plugin back to the node over its JSON-RPC UNIX socket
//! (`<lightning-dir>/<rpc-file>`, the socket `fulgur-cli` uses).
//!
//! One connection is shared by all callers: requests carry unique ids
//! (`<plugin>:<method>#<n>`), a reader task matches answers to callers by id, so many calls
//! can be in flight at once and complete in any order. The connection is opened on first
//! use and reopened after it breaks.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex as StdMutex};

use fulgur_protocol::codec::{JsonCodec, encode_frame};
use fulgur_protocol::jsonrpc::{Message, Request};
use futures::StreamExt;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::io::AsyncWriteExt;
use tokio::net::UnixStream;
use tokio::net::unix::OwnedWriteHalf;
use tokio::sync::{Mutex, oneshot};
use tokio_util::codec::FramedRead;

use crate::error::CallError;

type Waiters = Arc<StdMutex<Option<HashMap<String, oneshot::Sender<Result<Value, CallError>>>>>>;

struct Connection {
    writer: OwnedWriteHalf,
    /// `None` once the reader task has seen the connection end.
    waiters: Waiters,
}

struct Inner {
    path: PathBuf,
    prefix: String,
    counter: AtomicU64,
    conn: Mutex<Option<Connection>>,
}

/// A client for the node's RPC socket; cheap to clone, usable from many tasks at once.
/// Every plugin gets one as [`crate::Plugin::rpc`]; [`RpcClient::new`] makes one for any
/// socket path.
#[derive(Clone)]
pub struct RpcClient {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for RpcClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RpcClient")
            .field("path", &self.inner.path)
            .finish()
    }
}

impl RpcClient {
    /// A client for the socket at `path`, naming its requests `<prefix>:<method>#<n>`.
    /// Nothing is opened until the first call.
    pub fn new(path: impl Into<PathBuf>, prefix: impl Into<String>) -> Self {
        RpcClient {
            inner: Arc::new(Inner {
                path: path.into(),
                prefix: prefix.into(),
                counter: AtomicU64::new(0),
                conn: Mutex::new(None),
            }),
        }
    }

    /// The socket path.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Calls `method` with `params` (an object for named params, an array for positional
    /// ones) and waits for the result. A JSON-RPC error from the node is
    /// [`CallError::Rpc`] with the node's code and message.
    pub async fn call(&self, method: &str, params: Value) -> Result<Value, CallError> {
        let n = self.inner.counter.fetch_add(1, Ordering::Relaxed);
        let id = fulgur_protocol::jsonrpc::child_id(None, &self.inner.prefix, method, n);
        let frame = encode_frame(&Request::new(id.clone(), method, params).to_value());
        let (tx, rx) = oneshot::channel();
        {
            let mut guard = self.inner.conn.lock().await;
            let needs_connect = match guard.as_ref() {
                None => true,
                Some(c) => lock(&c.waiters).is_none(),
            };
            if needs_connect {
                *guard = Some(self.connect().await?);
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

    async fn connect(&self) -> Result<Connection, CallError> {
        let stream = UnixStream::connect(&self.inner.path)
            .await
            .map_err(|source| CallError::Connect {
                path: self.inner.path.display().to_string(),
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
