//! A plugin as the registry sees it, whatever its transport: its state, its manifest, the
//! frames queued for it (bounded in bytes), the calls waiting for its answers, and what it
//! sends back ([`Plugin::incoming`]). A transport (`process.rs` for child processes,
//! `wasm::runtime` for WASM modules) starts the plugin and wires it with [`Wiring`]; the
//! transports depend on this module, never on each other.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};

use bytes::Bytes;
use fulgur_protocol::codec::encode_frame;
use fulgur_protocol::jsonrpc::child_id;
use fulgur_protocol::manifest::Manifest;
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot, watch};

use super::PluginHost;
use fulgur_base::log::{Level, SourceLog};

/// Largest message a plugin may write (room for blocks passed by a Bitcoin backend).
pub const MAX_PLUGIN_MESSAGE: usize = 256 * 1024 * 1024;

/// Bytes queued for a process plugin's stdin beyond which notifications to it are
/// dropped (counted and logged) until it reads again.
pub const NOTIFICATION_QUEUE_LIMIT: usize = 8 * 1024 * 1024;

/// Bytes queued for a process plugin's stdin beyond which a request (a hook or method
/// call) is not queued: the plugin has stopped reading, so it is killed as hung.
pub const QUEUE_LIMIT: usize = 32 * 1024 * 1024;

/// The longest stderr line logged whole: the rest of a longer line is counted, not kept.
pub const MAX_STDERR_LINE: usize = 16 * 1024;

/// Frames joined into one write to a plugin's stdin, at most.
pub(crate) const WRITE_BATCH: usize = 64 * 1024;

/// Where a plugin is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// `getmanifest` sent.
    AwaitingManifest,
    /// Manifest accepted; `init` not yet sent.
    Configured,
    /// `init` sent, no answer yet.
    AwaitingInit,
    /// `init` answered: gets notifications, hooks and calls.
    Active,
    /// Gone.
    Dead,
}

/// Somebody to tell about `message` and `progress` notifications a plugin sends while it
/// works on a call (the RPC connection that made the call).
pub trait CallerSink: Send + Sync {
    /// Forwards a notification, with `params.id` already set to the caller's id.
    fn forward(&self, method: &str, params: Value);
}

/// The caller of a passthrough call.
#[derive(Clone)]
pub struct CallerLink {
    /// The caller's request id.
    pub id: Value,
    /// Where to send its notifications.
    pub sink: Arc<dyn CallerSink>,
}

/// A transport that can deliver a frame on the caller's own thread (a WASM instance that
/// is idle), sparing the hand-off to its actor thread and back. Frames it does not take go
/// through the plugin's queue, which the transport is told about so that a frame never
/// overtakes one queued before it.
pub(super) trait InlineDelivery: Send + Sync {
    /// Delivers `frame` now if nothing is queued and the instance is idle; else gives it
    /// back.
    fn try_deliver(&self, frame: Bytes) -> Result<(), Bytes>;
    /// A frame was queued (`+1`) or failed to queue (`-1`).
    fn note_queued(&self, delta: isize);
    /// Queues a frame for later delivery (answers to the guest's own requests, timers).
    #[cfg_attr(not(feature = "wasm"), allow(dead_code))]
    fn queue(&self, frame: Bytes);
}

/// The plugin died before answering.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gone;

struct Pending {
    tx: oneshot::Sender<Value>,
    caller: Option<CallerLink>,
}

/// Removes a call's pending entry when its caller is done with it, answered or not.
struct ForgetPending<'a> {
    plugin: &'a Plugin,
    id: String,
}

impl Drop for ForgetPending<'_> {
    fn drop(&mut self) {
        if let Ok(mut p) = self.plugin.pending.lock() {
            p.remove(&self.id);
        }
    }
}

/// One running plugin process.
pub struct Plugin {
    /// The file name, used in logs, `plugin stop` and hook ordering.
    pub name: String,
    /// The canonical path.
    pub path: PathBuf,
    /// Registration order (hooks are called in this order unless constrained).
    pub order: u64,
    /// Started with the node (`init.configuration.startup`).
    pub startup: bool,
    important: AtomicBool,
    state: Mutex<State>,
    manifest: OnceLock<Manifest>,
    tx: Mutex<Option<mpsc::UnboundedSender<Bytes>>>,
    pending: Mutex<HashMap<String, Pending>>,
    counter: AtomicU64,
    dead: AtomicBool,
    exited: watch::Receiver<bool>,
    kill_tx: Mutex<Option<oneshot::Sender<()>>>,
    /// Logs under `plugin-<name>`.
    pub log: SourceLog,
    /// For a WASM plugin, what it may do; `None` for a process.
    #[cfg_attr(not(feature = "wasm"), allow(dead_code))]
    pub(super) sandbox: Option<Arc<super::wasm::Sandbox>>,
    /// For a WASM plugin, delivery on the caller's thread.
    inline: Option<Arc<dyn InlineDelivery>>,
    /// For a process plugin, what its stdin queue holds (bounded).
    pub(crate) queue: OnceLock<Arc<OutQueue>>,
    /// Why the host killed the plugin itself, reported when its stdout closes.
    killed_because: Mutex<Option<String>>,
    /// Its file's modification time when it started (`plugin rescan` restarts a dynamic
    /// plugin whose file changed since).
    file_mtime: Option<std::time::SystemTime>,
}

/// What a frame is, for the queue's limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// No answer awaited: may be dropped when the queue is full.
    Notification,
    /// A hook or method call: never dropped silently.
    Request,
}

/// What to do with a frame, given the bytes already queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Admit {
    Queue,
    /// A notification over [`NOTIFICATION_QUEUE_LIMIT`].
    Drop,
    /// A request over [`QUEUE_LIMIT`].
    Overflow,
}

fn admit(queued: usize, len: usize, kind: Kind) -> Admit {
    // An empty queue always takes one frame, however large (the reader's limit applies).
    if queued == 0 {
        return Admit::Queue;
    }
    let total = queued.saturating_add(len);
    match kind {
        Kind::Notification if total > NOTIFICATION_QUEUE_LIMIT => Admit::Drop,
        Kind::Request if total > QUEUE_LIMIT => Admit::Overflow,
        _ => Admit::Queue,
    }
}

/// The accounting of a process plugin's stdin queue: bytes handed to the writer and not
/// yet written, and notifications dropped because the plugin did not read them.
#[derive(Default)]
pub(crate) struct OutQueue {
    bytes: AtomicUsize,
    /// Dropped since the queue was last below half of its notification limit.
    dropped: AtomicU64,
}

impl OutQueue {
    /// Counts `len` bytes in if `kind` may be queued.
    fn reserve(&self, len: usize, kind: Kind) -> Result<(), (Admit, usize)> {
        let mut refused = None;
        self.bytes
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |q| {
                match admit(q, len, kind) {
                    Admit::Queue => Some(q.saturating_add(len)),
                    other => {
                        refused = Some((other, q));
                        None
                    }
                }
            })
            .map(|_| ())
            .map_err(|q| refused.unwrap_or((Admit::Drop, q)))
    }

    /// `len` bytes left the queue (written, or never sent).
    pub(crate) fn release(&self, len: usize, log: &SourceLog) {
        let before = self.bytes.fetch_sub(len, Ordering::AcqRel);
        if before.saturating_sub(len) < NOTIFICATION_QUEUE_LIMIT / 2 {
            let dropped = self.dropped.swap(0, Ordering::AcqRel);
            if dropped > 0 {
                log.unusual(&format!(
                    "reads its stdin again: {dropped} notification(s) to it were dropped while its queue was full"
                ));
            }
        }
    }

    /// Counts a dropped notification; logs the 1st, 10th, 100th... of an episode.
    fn note_drop(&self, queued: usize, log: &SourceLog) {
        let n = self.dropped.fetch_add(1, Ordering::AcqRel) + 1;
        if is_power_of_ten(n) {
            log.unusual(&format!(
                "not reading its stdin: {queued} bytes queued (notification limit {NOTIFICATION_QUEUE_LIMIT}); dropped {n} notification(s) so far"
            ));
        }
    }
}

fn is_power_of_ten(mut n: u64) -> bool {
    while n >= 10 && n.is_multiple_of(10) {
        n /= 10;
    }
    n == 1
}

/// A plugin about to start: its host, its file, its place in the start order, whether it
/// starts with the node and whether the node needs it.
pub(crate) struct Birth<'a> {
    pub host: &'a Arc<PluginHost>,
    pub path: &'a Path,
    pub order: u64,
    pub startup: bool,
    pub important: bool,
}

/// The channels a transport hands to [`Plugin::assemble`].
pub(super) struct Wiring {
    pub tx: mpsc::UnboundedSender<Bytes>,
    pub exited: watch::Receiver<bool>,
    pub kill_tx: oneshot::Sender<()>,
    /// Delivery on the caller's thread, if the transport has it.
    pub inline: Option<Arc<dyn InlineDelivery>>,
}

impl std::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugin")
            .field("name", &self.name)
            .field("path", &self.path)
            .finish()
    }
}

/// The plugin's short name: its file name.
pub fn short_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string())
}

impl Plugin {
    /// A plugin on a transport's channels (`sandbox` only for WASM).
    pub(super) fn assemble(
        b: &Birth<'_>,
        wiring: Wiring,
        sandbox: Option<Arc<super::wasm::Sandbox>>,
    ) -> Arc<Plugin> {
        let name = short_name(b.path);
        Arc::new(Plugin {
            log: b.host.log.source(format!("plugin-{name}")),
            name,
            path: b.path.to_path_buf(),
            order: b.order,
            startup: b.startup,
            important: AtomicBool::new(b.important),
            state: Mutex::new(State::AwaitingManifest),
            manifest: OnceLock::new(),
            tx: Mutex::new(Some(wiring.tx)),
            pending: Mutex::new(HashMap::new()),
            counter: AtomicU64::new(0),
            dead: AtomicBool::new(false),
            exited: wiring.exited,
            kill_tx: Mutex::new(Some(wiring.kill_tx)),
            sandbox,
            inline: wiring.inline,
            queue: OnceLock::new(),
            killed_because: Mutex::new(None),
            file_mtime: file_mtime(b.path),
        })
    }

    /// Whether its file was modified (or replaced) since it started.
    pub fn file_changed(&self) -> bool {
        self.file_mtime.is_some() && file_mtime(&self.path) != self.file_mtime
    }

    /// A fresh number for an id.
    #[cfg_attr(not(feature = "wasm"), allow(dead_code))]
    pub(super) fn next_call(&self) -> u64 {
        self.counter.fetch_add(1, Ordering::Relaxed)
    }

    /// The inline transport, without keeping it alive (for answers delivered later).
    #[cfg_attr(not(feature = "wasm"), allow(dead_code))]
    pub(super) fn weak_inline(&self) -> Option<Weak<dyn InlineDelivery>> {
        self.inline.as_ref().map(Arc::downgrade)
    }

    /// Ends every call still waiting for the plugin as if the plugin had died (its caller
    /// gets [`Gone`]): a WASM instance failed and is being replaced. The registry treats
    /// this exactly like a process plugin's death: a hook chain asks the next plugin (and
    /// a payment only a plugin can settle stays held until a plugin is active again), an
    /// RPC caller gets "plugin terminated".
    #[cfg_attr(not(feature = "wasm"), allow(dead_code))]
    pub(super) fn fail_pending(&self) {
        // Dropping the senders wakes every waiter with `Gone`.
        let pending: Vec<(String, Pending)> = match self.pending.lock() {
            Ok(mut p) => p.drain().collect(),
            Err(_) => return,
        };
        drop(pending);
    }

    pub(crate) fn exit_reason(&self) -> String {
        if let Some(why) = self.killed_because.lock().ok().and_then(|mut k| k.take()) {
            return why;
        }
        match self.state() {
            State::AwaitingManifest => "exited before replying to getmanifest".into(),
            State::Configured => "exited before we sent init".into(),
            State::AwaitingInit => "exited before replying to init".into(),
            State::Active | State::Dead => "exited during normal operation".into(),
        }
    }

    /// Handles one message from the plugin; `Err` is a reason to kill it.
    pub(super) fn incoming(&self, host: &Weak<PluginHost>, v: Value) -> Result<(), String> {
        let Some(obj) = v.as_object() else {
            return Err("JSON-RPC message is not an object".into());
        };
        if obj.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
            return Err("JSON-RPC message does not contain \"jsonrpc\" field".into());
        }
        match (obj.get("id"), obj.get("method")) {
            (Some(id), None) => {
                if !obj.contains_key("result") && !obj.contains_key("error") {
                    return Err("JSON-RPC response has neither result nor error".into());
                }
                let key = match id {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                let pending = self.pending.lock().ok().and_then(|mut p| p.remove(&key));
                if let Some(p) = pending {
                    let _ = p.tx.send(v);
                } else {
                    self.log
                        .debug(&format!("ignoring response with unknown id {key}"));
                }
                Ok(())
            }
            (None, Some(Value::String(method))) => {
                let params = obj.get("params").cloned().unwrap_or(Value::Null);
                self.notification(host, method, params);
                Ok(())
            }
            (Some(id), Some(_)) => {
                self.log.unusual(
                    "sent a request on stdout: plugins call the node through the RPC socket",
                );
                let err = json!({"jsonrpc":"2.0","id":id,"error":{"code":-32601,"message":"plugins call the node through the RPC socket (rpc-file)"}});
                let _ = self.send(Bytes::from(encode_frame(&err)), Kind::Notification);
                Ok(())
            }
            _ => Err("JSON-RPC message has neither method nor id".into()),
        }
    }

    fn notification(&self, host: &Weak<PluginHost>, method: &str, params: Value) {
        match method {
            "log" => {
                let level = params
                    .get("level")
                    .and_then(Value::as_str)
                    .unwrap_or("info");
                let level = Level::parse(level)
                    .filter(|l| *l != Level::Io)
                    .unwrap_or(Level::Info);
                match params.get("message").and_then(Value::as_str) {
                    Some(m) => self.log.log(level, m),
                    None => self
                        .log
                        .unusual(&format!("malformed log notification ignored: {params}")),
                }
            }
            "message" | "progress" => {
                let Some(id) = params.get("id").and_then(Value::as_str) else {
                    self.log
                        .unusual(&format!("{method} notification without id ignored"));
                    return;
                };
                let caller = self
                    .pending
                    .lock()
                    .ok()
                    .and_then(|p| p.get(id).and_then(|e| e.caller.clone()));
                if let Some(c) = caller {
                    let mut params = params;
                    if let Some(o) = params.as_object_mut() {
                        o.insert("id".into(), c.id.clone());
                    }
                    c.sink.forward(method, params);
                }
            }
            topic => {
                if let Some(h) = host.upgrade() {
                    h.relay_custom(self, topic, params);
                }
            }
        }
    }

    /// The manifest, once accepted.
    pub fn manifest(&self) -> Option<&Manifest> {
        self.manifest.get()
    }

    pub(super) fn set_manifest(&self, m: Manifest) {
        let _ = self.manifest.set(m);
    }

    /// Current state.
    pub fn state(&self) -> State {
        self.state.lock().map(|s| *s).unwrap_or(State::Dead)
    }

    pub(super) fn set_state(&self, s: State) {
        if let Ok(mut st) = self.state.lock()
            && *st != State::Dead
        {
            *st = s;
        }
    }

    /// Whether `init` was answered and the plugin is alive.
    pub fn is_active(&self) -> bool {
        self.state() == State::Active
    }

    /// Whether the node stops if this plugin dies.
    pub fn is_important(&self) -> bool {
        self.important.load(Ordering::Relaxed)
    }

    pub(super) fn set_important(&self, v: bool) {
        self.important.store(v, Ordering::Relaxed);
    }

    /// Whether the plugin is gone.
    pub fn is_dead(&self) -> bool {
        self.dead.load(Ordering::Acquire)
    }

    /// Whether the manifest said `dynamic`.
    pub fn is_dynamic(&self) -> bool {
        self.manifest().is_some_and(|m| m.dynamic)
    }

    /// Whether the plugin subscribed to `topic` (or to everything, `log` excepted).
    pub fn subscribed(&self, topic: &str) -> bool {
        self.manifest().is_some_and(|m| {
            m.subscriptions
                .iter()
                .any(|s| s == topic || (s == "*" && topic != "log"))
        })
    }

    /// Marks the plugin dead, fails its pending calls and kills the process. Returns
    /// `false` if it was already dead.
    pub(super) fn mark_dead(&self) -> bool {
        if self.dead.swap(true, Ordering::AcqRel) {
            return false;
        }
        if let Ok(mut s) = self.state.lock() {
            *s = State::Dead;
        }
        if let Ok(mut p) = self.pending.lock() {
            p.clear();
        }
        if let Some(k) = self.kill_tx.lock().ok().and_then(|mut k| k.take()) {
            let _ = k.send(());
        }
        true
    }

    /// Waits until the process has exited.
    pub async fn wait_exit(&self) {
        let mut rx = self.exited.clone();
        let _ = rx.wait_for(|e| *e).await;
    }

    /// Closes the plugin's stdin without killing it (CLN plugins exit on EOF).
    pub(super) fn close_stdin(&self) {
        if let Ok(mut tx) = self.tx.lock() {
            tx.take();
        }
    }

    fn send(&self, frame: Bytes, kind: Kind) -> bool {
        let Ok(tx) = self.tx.lock() else {
            return false;
        };
        let Some(t) = tx.as_ref() else {
            return false;
        };
        let len = frame.len();
        let queue = self.queue.get();
        if let Some(q) = queue
            && let Err((why, queued)) = q.reserve(len, kind)
        {
            drop(tx);
            match why {
                Admit::Overflow => self.kill_hung(queued),
                _ => q.note_drop(queued, &self.log),
            }
            return false;
        }
        if let Some(i) = &self.inline {
            i.note_queued(1);
        }
        let sent = t.send(frame).is_ok();
        if !sent {
            if let Some(i) = &self.inline {
                i.note_queued(-1);
            }
            if let Some(q) = queue {
                q.release(len, &self.log);
            }
        }
        sent
    }

    /// The plugin stopped reading while requests for it pile up: kill the process; its
    /// stdout closing then runs the usual death path with this reason.
    fn kill_hung(&self, queued: usize) {
        let why = format!(
            "stopped reading its stdin: {queued} bytes queued, a request would pass the limit of {QUEUE_LIMIT}"
        );
        self.log.unusual(&why);
        if let Ok(mut k) = self.killed_because.lock()
            && k.is_none()
        {
            *k = Some(why);
        }
        if let Some(k) = self.kill_tx.lock().ok().and_then(|mut k| k.take()) {
            let _ = k.send(());
        }
    }

    /// Sends a frame, delivered on this thread when the transport can.
    fn send_or_deliver(&self, frame: Bytes) -> bool {
        let frame = match &self.inline {
            Some(i) if self.tx.lock().is_ok_and(|t| t.is_some()) => match i.try_deliver(frame) {
                Ok(()) => return true,
                Err(f) => f,
            },
            _ => frame,
        };
        self.send(frame, Kind::Request)
    }

    fn next_id(&self, parent: Option<&Value>, method: &str) -> String {
        child_id(
            parent,
            "cln",
            method,
            self.counter.fetch_add(1, Ordering::Relaxed),
        )
    }

    async fn call(
        &self,
        id: String,
        frame: Vec<u8>,
        caller: Option<CallerLink>,
    ) -> Result<Value, Gone> {
        let (tx, rx) = oneshot::channel();
        {
            let Ok(mut p) = self.pending.lock() else {
                return Err(Gone);
            };
            if self.is_dead() {
                return Err(Gone);
            }
            p.insert(id.clone(), Pending { tx, caller });
        }
        // A caller that stops waiting (a deadline passed) takes its entry with it, so
        // calls a plugin never answers do not pile up.
        let _forget = ForgetPending { plugin: self, id };
        if !self.send_or_deliver(Bytes::from(frame)) {
            return Err(Gone);
        }
        rx.await.map_err(|_| Gone)
    }

    /// Sends a request and waits for the whole response object.
    pub async fn request(
        &self,
        method: &str,
        params: &Value,
        parent: Option<&Value>,
    ) -> Result<Value, Gone> {
        #[derive(serde::Serialize)]
        struct Out<'a> {
            jsonrpc: &'static str,
            id: &'a str,
            method: &'a str,
            params: &'a Value,
        }
        let id = self.next_id(parent, method);
        let frame = encode_frame(&Out {
            jsonrpc: "2.0",
            id: &id,
            method,
            params,
        });
        self.call(id, frame, None).await
    }

    /// Forwards a caller's request object verbatim but for its id; returns the plugin's
    /// whole response object.
    pub async fn forward(&self, request: &Value, caller: CallerLink) -> Result<Value, Gone> {
        let method = request
            .get("method")
            .and_then(Value::as_str)
            .unwrap_or("unknown");
        let id = self.next_id(Some(&caller.id), method);
        let mut req = request.clone();
        if let Some(o) = req.as_object_mut() {
            o.insert("id".into(), Value::from(id.clone()));
        }
        self.call(id, encode_frame(&req), Some(caller)).await
    }

    /// Queues an already-encoded notification frame.
    pub fn send_frame(&self, frame: Bytes) {
        if !self.is_dead() {
            self.send(frame, Kind::Notification);
        }
    }
}

/// A file's modification time, if it can be read.
fn file_mtime(path: &std::path::Path) -> Option<std::time::SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_drops_notifications_first_and_refuses_requests_at_its_limit() {
        // An empty queue takes any frame, so one huge message still gets through.
        assert_eq!(admit(0, QUEUE_LIMIT * 2, Kind::Notification), Admit::Queue);
        assert_eq!(admit(0, QUEUE_LIMIT * 2, Kind::Request), Admit::Queue);
        let near = NOTIFICATION_QUEUE_LIMIT - 10;
        assert_eq!(admit(near, 10, Kind::Notification), Admit::Queue);
        assert_eq!(admit(near, 11, Kind::Notification), Admit::Drop);
        // Requests have room past the notifications' limit, up to the hard one.
        assert_eq!(admit(near, 11, Kind::Request), Admit::Queue);
        assert_eq!(admit(QUEUE_LIMIT - 1, 1, Kind::Request), Admit::Queue);
        assert_eq!(admit(QUEUE_LIMIT - 1, 2, Kind::Request), Admit::Overflow);
        assert_eq!(admit(usize::MAX, 2, Kind::Request), Admit::Overflow);
    }

    #[test]
    fn queue_accounting_counts_until_released() {
        let log = fulgur_base::log::Logger::new(vec![], Box::new(std::io::sink())).source("t");
        let q = OutQueue::default();
        assert!(
            q.reserve(NOTIFICATION_QUEUE_LIMIT, Kind::Notification)
                .is_ok()
        );
        assert_eq!(
            q.reserve(1, Kind::Notification),
            Err((Admit::Drop, NOTIFICATION_QUEUE_LIMIT))
        );
        q.note_drop(NOTIFICATION_QUEUE_LIMIT, &log);
        assert_eq!(q.dropped.load(Ordering::Acquire), 1);
        assert!(q.reserve(1, Kind::Request).is_ok());
        q.release(NOTIFICATION_QUEUE_LIMIT, &log);
        // Below half the limit again: the episode's drop count is reported and reset.
        assert_eq!(q.dropped.load(Ordering::Acquire), 0);
        assert_eq!(q.bytes.load(Ordering::Acquire), 1);
        assert!(q.reserve(1, Kind::Notification).is_ok());
    }

    #[test]
    fn powers_of_ten() {
        let got: Vec<u64> = (1..=1000).filter(|n| is_power_of_ten(*n)).collect();
        assert_eq!(got, vec![1, 10, 100, 1000]);
    }
}
