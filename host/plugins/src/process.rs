//! A plugin as a child process: CLN's framing on its stdin and stdout, its stderr into the
//! node's log. This is the only module that knows about pipes.
//!
//! The same `Plugin` is the registry's unit for WASM plugins too (`super::wasm`): frames
//! queued on `tx` are then delivered into the guest by its actor thread instead of being
//! written to a pipe, and what the guest sends comes back through [`Plugin::incoming`].

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};

use bytes::Bytes;
use fulgur_protocol::codec::{FrameError, JsonCodec, encode_frame};
use fulgur_protocol::jsonrpc::child_id;
use fulgur_protocol::manifest::Manifest;
use futures::StreamExt;
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::codec::FramedRead;

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
const WRITE_BATCH: usize = 64 * 1024;

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
    queue: OnceLock<Arc<OutQueue>>,
    /// Why the host killed the plugin itself, reported when its stdout closes.
    killed_because: Mutex<Option<String>>,
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
struct OutQueue {
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
    fn release(&self, len: usize, log: &SourceLog) {
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

/// Cuts a plugin's stderr into log lines: any bytes (invalid UTF-8 is replaced, not an
/// error) and at most [`MAX_STDERR_LINE`] bytes of one line kept, however long it is.
struct StderrLines {
    line: Vec<u8>,
    /// Bytes of the current line dropped past the limit.
    dropped: u64,
    max: usize,
}

impl StderrLines {
    fn new(max: usize) -> Self {
        StderrLines {
            line: Vec::new(),
            dropped: 0,
            max,
        }
    }

    /// Takes a chunk; returns the messages to log.
    fn feed(&mut self, mut chunk: &[u8]) -> Vec<String> {
        let mut out = vec![];
        loop {
            let (part, rest) = match chunk.iter().position(|b| *b == b'\n') {
                Some(i) => (&chunk[..i], Some(&chunk[i + 1..])),
                None => (chunk, None),
            };
            self.take(part, &mut out);
            match rest {
                Some(r) => {
                    out.extend(self.end_line());
                    chunk = r;
                }
                None => return out,
            }
        }
    }

    fn take(&mut self, part: &[u8], out: &mut Vec<String>) {
        let room = self.max.saturating_sub(self.line.len());
        if self.dropped == 0 && part.len() <= room {
            self.line.extend_from_slice(part);
            return;
        }
        if self.dropped == 0 {
            // The line just outgrew the limit: log its head now, count the rest.
            self.line.extend_from_slice(&part[..room]);
            out.push(format!(
                "{} [stderr line longer than {} bytes: the rest is dropped]",
                String::from_utf8_lossy(&self.line),
                self.max
            ));
            self.line.clear();
            self.dropped = (part.len() - room) as u64;
        } else {
            self.dropped = self.dropped.saturating_add(part.len() as u64);
        }
    }

    /// A newline (or the end of the stream) ends the current line.
    fn end_line(&mut self) -> Option<String> {
        if self.dropped > 0 {
            let msg = format!(
                "[end of an overlong stderr line: {} bytes of it dropped]",
                self.dropped
            );
            self.dropped = 0;
            self.line.clear();
            return Some(msg);
        }
        let text = String::from_utf8_lossy(&self.line).into_owned();
        self.line.clear();
        Some(text)
    }

    /// The stream ended: whatever is left of a line.
    fn finish(&mut self) -> Option<String> {
        if self.line.is_empty() && self.dropped == 0 {
            return None;
        }
        self.end_line()
    }
}

/// Logs a plugin's stderr line by line until it closes.
async fn pump_stderr(mut stderr: impl AsyncRead + Unpin, log: SourceLog) {
    let mut lines = StderrLines::new(MAX_STDERR_LINE);
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match stderr.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        for msg in lines.feed(&buf[..n]) {
            log.info(&msg);
        }
    }
    if let Some(msg) = lines.finish() {
        log.info(&msg);
    }
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
    /// Starts the process and its I/O tasks. `Err` is CLN's "opening pipe" reason.
    pub(super) fn spawn(
        host: &Arc<PluginHost>,
        path: &Path,
        order: u64,
        startup: bool,
        important: bool,
    ) -> Result<Arc<Plugin>, String> {
        if super::wasm::is_wasm(path) {
            #[cfg(feature = "wasm")]
            return super::wasm::runtime::spawn(host, path, order, startup, important);
            #[cfg(not(feature = "wasm"))]
            return Err(
                "WASM plugins are not supported by this build (cargo feature `wasm` is off)".into(),
            );
        }
        let mut cmd = tokio::process::Command::new(path);
        cmd.current_dir(&host.settings.net_dir)
            .env("LIGHTNINGD_PLUGIN", "1")
            .env(
                "LIGHTNINGD_VERSION",
                concat!("v", env!("CARGO_PKG_VERSION")),
            )
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd.spawn().map_err(|e| format!("opening pipe: {e}"))?;
        let (Some(stdin), Some(stdout), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            return Err("opening pipe: missing stdio".into());
        };
        let (tx, mut rx) = mpsc::unbounded_channel::<Bytes>();
        let (exited_tx, exited) = watch::channel(false);
        let (kill_tx, kill_rx) = oneshot::channel::<()>();
        let plugin = Plugin::assemble(
            host,
            path,
            order,
            startup,
            important,
            Wiring {
                tx,
                exited,
                kill_tx,
                inline: None,
            },
            None,
        );

        // Writer: frames to stdin; dropping the channel closes stdin (EOF for the plugin).
        // The queue's accounting counts a frame until it has been written.
        let queue = Arc::new(OutQueue::default());
        let _ = plugin.queue.set(queue.clone());
        let log = plugin.log.clone();
        tokio::spawn(async move {
            let mut stdin = stdin;
            let mut buf = Vec::with_capacity(WRITE_BATCH);
            while let Some(frame) = rx.recv().await {
                let mut batch = frame.len();
                let ok = if frame.len() >= WRITE_BATCH {
                    stdin.write_all(&frame).await.is_ok()
                } else {
                    // Small frames already queued go out in one write.
                    buf.extend_from_slice(&frame);
                    while buf.len() < WRITE_BATCH {
                        let Ok(more) = rx.try_recv() else { break };
                        batch += more.len();
                        buf.extend_from_slice(&more);
                    }
                    let ok = stdin.write_all(&buf).await.is_ok();
                    buf.clear();
                    ok
                };
                queue.release(batch, &log);
                if !ok {
                    break;
                }
            }
        });

        // Stderr: each line into the log, bounded and lossy.
        tokio::spawn(pump_stderr(stderr, plugin.log.clone()));

        // Reader: messages from stdout.
        let weak_host = Arc::downgrade(host);
        let p = plugin.clone();
        tokio::spawn(async move {
            let mut frames = FramedRead::new(stdout, JsonCodec::new(MAX_PLUGIN_MESSAGE));
            let reason = loop {
                match frames.next().await {
                    Some(Ok(v)) => {
                        if let Err(reason) = p.incoming(&weak_host, v) {
                            break Some(reason);
                        }
                    }
                    Some(Err(FrameError::Io(_))) | None => break None,
                    Some(Err(FrameError::TooLarge { limit })) => {
                        break Some(format!("message larger than {limit} bytes"));
                    }
                    Some(Err(FrameError::Invalid(e))) => {
                        break Some(format!(
                            "JSON-RPC message does not contain \"jsonrpc\" field (invalid JSON: {e})"
                        ));
                    }
                }
            };
            if let Some(host) = weak_host.upgrade() {
                let reason = reason.unwrap_or_else(|| p.exit_reason());
                host.plugin_gone(&p, &reason);
            }
        });

        // Supervisor: owns the child, kills it on request, reaps it.
        tokio::spawn(async move {
            let mut child = child;
            tokio::select! {
                _ = kill_rx => { let _ = child.start_kill(); let _ = child.wait().await; }
                _ = child.wait() => {}
            }
            let _ = exited_tx.send(true);
        });
        Ok(plugin)
    }

    /// A plugin on a transport's channels (`sandbox` only for WASM).
    pub(super) fn assemble(
        host: &Arc<PluginHost>,
        path: &Path,
        order: u64,
        startup: bool,
        important: bool,
        wiring: Wiring,
        sandbox: Option<Arc<super::wasm::Sandbox>>,
    ) -> Arc<Plugin> {
        let name = short_name(path);
        Arc::new(Plugin {
            log: host.log.source(format!("plugin-{name}")),
            name,
            path: path.to_path_buf(),
            order,
            startup,
            important: AtomicBool::new(important),
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
        })
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

    fn exit_reason(&self) -> String {
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

    #[test]
    fn stderr_lines_survive_invalid_utf8_and_endless_lines() {
        let mut s = StderrLines::new(8);
        assert_eq!(s.feed(b"ab\ncd"), vec!["ab".to_string()]);
        assert_eq!(
            s.feed(b"\xff\xfe\n"),
            vec!["cd\u{fffd}\u{fffd}".to_string()]
        );
        // A line over the limit: its head is logged at once, the rest only counted,
        // however many chunks it spans.
        let out = s.feed(b"0123456789");
        assert_eq!(out.len(), 1);
        assert!(
            out[0].starts_with("01234567 [stderr line longer than 8"),
            "{out:?}"
        );
        assert!(s.feed(&[b'x'; 1000]).is_empty());
        assert!(s.line.len() <= 8);
        let out = s.feed(b"yy\nnext\n");
        assert_eq!(
            out,
            vec![
                "[end of an overlong stderr line: 1004 bytes of it dropped]".to_string(),
                "next".to_string()
            ]
        );
        assert_eq!(s.feed(b"tail"), Vec::<String>::new());
        assert_eq!(s.finish(), Some("tail".to_string()));
        assert_eq!(s.finish(), None);
        // Blank lines are kept as lines.
        assert_eq!(s.feed(b"\n"), vec![String::new()]);
    }
}
