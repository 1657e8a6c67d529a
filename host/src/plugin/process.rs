//! A plugin as a child process: CLN's framing on its stdin and stdout, its stderr into the
//! node's log. This is the only module that knows about pipes.
//!
//! The same `Plugin` is the registry's unit for WASM plugins too (`super::wasm`): frames
//! queued on `tx` are then delivered into the guest by its actor thread instead of being
//! written to a pipe, and what the guest sends comes back through [`Plugin::incoming`].

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};

use bytes::Bytes;
use fulgur_protocol::codec::{FrameError, JsonCodec, encode_frame};
use fulgur_protocol::jsonrpc::child_id;
use fulgur_protocol::manifest::Manifest;
use futures::StreamExt;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::codec::FramedRead;

use super::PluginHost;
use crate::log::{Level, SourceLog};

/// Largest message a plugin may write (room for blocks passed by a Bitcoin backend).
pub const MAX_PLUGIN_MESSAGE: usize = 256 * 1024 * 1024;

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
        tokio::spawn(async move {
            let mut stdin = stdin;
            let mut buf = Vec::with_capacity(4096);
            while let Some(frame) = rx.recv().await {
                // Everything already queued goes out in one write.
                buf.extend_from_slice(&frame);
                while let Ok(more) = rx.try_recv() {
                    buf.extend_from_slice(&more);
                }
                let ok = stdin.write_all(&buf).await.is_ok();
                buf.clear();
                if !ok {
                    break;
                }
            }
        });

        // Stderr: each line into the log.
        let log = plugin.log.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                log.info(&line);
            }
        });

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
                let _ = self.send(Bytes::from(encode_frame(&err)));
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

    fn send(&self, frame: Bytes) -> bool {
        let Ok(tx) = self.tx.lock() else {
            return false;
        };
        let Some(t) = tx.as_ref() else {
            return false;
        };
        if let Some(i) = &self.inline {
            i.note_queued(1);
        }
        let sent = t.send(frame).is_ok();
        if !sent && let Some(i) = &self.inline {
            i.note_queued(-1);
        }
        sent
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
        self.send(frame)
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
        if !self.send_or_deliver(Bytes::from(frame)) {
            if let Ok(mut p) = self.pending.lock() {
                p.remove(&id);
            }
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
            self.send(frame);
        }
    }
}
