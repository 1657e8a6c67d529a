//! The protocol state machine: handshake (`getmanifest`, then `init`) and the dispatch loop
//! that runs each request in its own task.
//!
//! The typestate is [`Builder`] → [`Configured`] (manifest sent, `init` received but not yet
//! answered) → [`Running`]. Hooks, methods and notifications are only dispatched once
//! [`Configured::start`] has answered `init`; requests the node queues behind `init` are
//! buffered and served then, in order.

use std::collections::HashSet;
use std::panic::AssertUnwindSafe;
use std::path::Path;
use std::sync::{Arc, RwLock};

use fulgur_protocol::RpcError;
use fulgur_protocol::error::codes;
use fulgur_protocol::hooks::Hook;
use fulgur_protocol::jsonrpc::{Message, Notification, Request, Response};
use fulgur_protocol::manifest::{InitConfiguration, InitRequest};
use futures::FutureExt;
use serde_json::{Map, Value, json};
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::task::{JoinHandle, JoinSet};

use crate::builder::{BoxFut, Builder, Spec};
use crate::error::RunError;
use crate::plugin::{Event, Level, Plugin, Shared, send_log};
use crate::rpc::{Routed, RpcClient};
use crate::transport::Transport;

impl<S: Send + Sync + 'static> Builder<S> {
    /// Checks the declarations, answers the node's `getmanifest` with the manifest and waits
    /// for `init`.
    ///
    /// Returns `Ok(None)` when the plugin should exit quietly: the node closed the input
    /// before `init` (it may only have wanted the manifest, for `--help`), or the `init`
    /// options could not be read, in which case the SDK has answered
    /// `{"disable": "<reason>"}`. Any other deviation from the handshake is an error.
    pub async fn configure(
        self,
        mut transport: Transport,
    ) -> Result<Option<Configured<S>>, RunError> {
        let (manifest, spec) = self.build()?;
        let out = transport.outgoing.clone();

        let first = match next_message(&mut transport).await? {
            None => return Ok(None),
            Some(m) => m,
        };
        match first {
            Message::Request(req) if req.method == "getmanifest" => {
                let manifest = serde_json::to_value(&manifest)
                    .map_err(|e| RunError::Handshake(format!("cannot encode manifest: {e}")))?;
                send(&out, Response::ok(req.id, manifest))?;
            }
            other => {
                let what = describe(&other);
                if let Message::Request(req) = other {
                    let e = RpcError::invalid_request(format!(
                        "expected getmanifest first, got {what}"
                    ));
                    let _ = send(&out, Response::err(req.id, e));
                }
                transport.finish().await;
                return Err(RunError::Handshake(format!(
                    "expected getmanifest first, got {what}"
                )));
            }
        }

        let mut pending = Vec::new();
        let init = loop {
            match next_message(&mut transport).await? {
                None => {
                    transport.finish().await;
                    return Ok(None);
                }
                Some(Message::Request(req)) if req.method == "init" => break req,
                Some(Message::Request(req)) if req.method == "getmanifest" => {
                    let e = RpcError::invalid_request("getmanifest was already answered");
                    send(&out, Response::err(req.id, e))?;
                }
                // The node may queue calls behind `init` (db_write may even come first):
                // keep them for after `init` is answered.
                Some(Message::Request(req)) => pending.push(req),
                Some(_) => {}
            }
        };

        let parsed: Result<InitRequest, String> = serde_json::from_value(init.params.clone())
            .map_err(|e| format!("cannot read init: {e}"));
        let read = parsed
            .and_then(|i| crate::options::read_all(&spec.options, &i.options).map(|o| (i, o)));
        let (init_req, options) = match read {
            Ok(ok) => ok,
            Err(reason) => {
                send_log(&out, Level::Error, format!("disabling: {reason}"));
                send(&out, Response::ok(init.id, json!({ "disable": reason })))?;
                transport.finish().await;
                return Ok(None);
            }
        };
        let configuration = init_req.configuration;
        let socket = Path::new(&configuration.lightning_dir).join(&configuration.rpc_file);
        let rpc = RpcClient::for_plugin(
            socket,
            spec.name.clone(),
            &transport.outgoing,
            transport.rpc_through,
        );
        Ok(Some(Configured {
            spec,
            transport,
            init_id: init.id,
            configuration,
            options,
            pending,
            rpc,
        }))
    }

    /// Configures on stdin/stdout, starts with `state` and runs until the node closes the
    /// input or sends `shutdown`. The whole life of a typical plugin binary. Not on wasm32
    /// (a guest is driven by [`crate::WasmGuest`]).
    #[cfg(not(target_arch = "wasm32"))]
    pub async fn run(self, state: S) -> Result<(), RunError> {
        match self.configure(Transport::stdio()).await? {
            Some(configured) => configured.start(state)?.join().await,
            None => Ok(()),
        }
    }
}

/// A plugin whose manifest was sent and whose `init` arrived but is not answered yet.
/// Read the options and the configuration, then [`Configured::start`] (or
/// [`Configured::disable`]).
pub struct Configured<S> {
    spec: Spec<S>,
    transport: Transport,
    init_id: Value,
    configuration: InitConfiguration,
    options: Map<String, Value>,
    pending: Vec<Request>,
    rpc: RpcClient,
}

impl<S> std::fmt::Debug for Configured<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Configured")
            .field("name", &self.spec.name)
            .field("options", &self.options)
            .finish()
    }
}

impl<S: Send + Sync + 'static> Configured<S> {
    /// An option's value from `init` as typed JSON (`None` without value or default).
    pub fn option(&self, name: &str) -> Option<&Value> {
        self.options.get(name)
    }

    /// What `init` said about the node.
    pub fn configuration(&self) -> &InitConfiguration {
        &self.configuration
    }

    /// The RPC client (the node's socket is up once `init` arrived). Through the transport
    /// ([`Transport::rpc_through_transport`]) answers are only read once the plugin is
    /// started, so do not wait for a call before [`Configured::start`].
    pub fn rpc(&self) -> &RpcClient {
        &self.rpc
    }

    /// Sends a line to the node's log.
    pub fn log(&self, level: Level, message: impl Into<String>) {
        send_log(&self.transport.outgoing, level, message.into());
    }

    /// Answers `init` with `{"disable": reason}`: the node drops the plugin quietly.
    ///
    /// Returns once the node has closed the plugin's input (it does on reading the answer),
    /// or after 10 s: a plugin that exited at once would race the node's reading of its
    /// answer, and the node could log it as dead before seeing it disabled itself.
    pub async fn disable(mut self, reason: &str) -> Result<(), RunError> {
        let r = send(
            &self.transport.outgoing,
            Response::ok(self.init_id.clone(), json!({"disable": reason})),
        );
        #[cfg(not(target_arch = "wasm32"))]
        {
            let drain = async { while self.transport.next().await.is_some() {} };
            let _ = tokio::time::timeout(std::time::Duration::from_secs(10), drain).await;
        }
        self.transport.finish().await;
        r
    }

    /// Answers `init` and starts serving requests and notifications in a background task.
    pub fn start(self, state: S) -> Result<Running<S>, RunError> {
        let Configured {
            spec,
            transport,
            init_id,
            configuration,
            options,
            pending,
            rpc,
        } = self;
        let out = transport.outgoing.clone();
        send(&out, Response::ok(init_id, json!({})))?;
        let topics: HashSet<String> = spec.topics.iter().cloned().collect();
        let shared = Shared {
            name: spec.name.clone(),
            state,
            options: RwLock::new(options),
            configuration,
            out,
            rpc,
            topics,
            stop: Notify::new(),
        };
        let plugin = Plugin {
            shared: Arc::new(shared),
        };
        let task = tokio::spawn(run_loop(Arc::new(spec), plugin.clone(), transport, pending));
        Ok(Running { plugin, task })
    }
}

/// A plugin serving the node. [`Running::join`] waits for the end.
pub struct Running<S> {
    plugin: Plugin<S>,
    task: JoinHandle<Result<(), RunError>>,
}

impl<S> std::fmt::Debug for Running<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Running")
            .field("plugin", &self.plugin)
            .finish()
    }
}

impl<S> Running<S> {
    /// The handle handlers get, for work outside handlers (timers, background tasks).
    pub fn plugin(&self) -> Plugin<S> {
        self.plugin.clone()
    }

    /// Waits until the node closes our input, sends `shutdown` (after the subscribed
    /// handlers ran), or [`Plugin::shutdown`] is called. Everything queued for the node is
    /// written before this returns.
    pub async fn join(self) -> Result<(), RunError> {
        match self.task.await {
            Ok(r) => r,
            Err(e) => Err(RunError::Handshake(format!(
                "dispatch task ended abnormally: {e}"
            ))),
        }
    }
}

async fn next_message(t: &mut Transport) -> Result<Option<Message>, RunError> {
    loop {
        match t.next().await {
            None => return Ok(None),
            Some(Err(e)) => return Err(e.into()),
            Some(Ok(v)) => match Message::from_value(v) {
                Ok(m) => return Ok(Some(m)),
                Err(e) => {
                    send_log(
                        &t.outgoing,
                        Level::Warn,
                        format!("ignoring malformed message: {e}"),
                    );
                }
            },
        }
    }
}

fn describe(m: &Message) -> String {
    match m {
        Message::Request(r) => format!("request '{}'", r.method),
        Message::Notification(n) => format!("notification '{}'", n.method),
        Message::Response(_) => "a response".into(),
    }
}

fn send(out: &mpsc::UnboundedSender<Value>, r: Response) -> Result<(), RunError> {
    out.send(r.to_value()).map_err(|_| RunError::OutputClosed)
}

type Queued = (Event, Option<oneshot::Sender<()>>);

async fn run_loop<S: Send + Sync + 'static>(
    spec: Arc<Spec<S>>,
    plugin: Plugin<S>,
    mut transport: Transport,
    pending: Vec<Request>,
) -> Result<(), RunError> {
    let mut tasks = JoinSet::new();
    let (ntx, nrx) = mpsc::unbounded_channel::<Queued>();
    let worker = tokio::spawn(notification_worker(spec.clone(), plugin.clone(), nrx));
    for req in pending {
        dispatch_request(&spec, &plugin, &mut tasks, req);
    }
    let result = loop {
        tokio::select! {
            _ = plugin.shared.stop.notified() => break Ok(()),
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            msg = transport.next() => match msg {
                None => break Ok(()),
                Some(Err(e)) => break Err(RunError::Transport(e)),
                Some(Ok(v)) => match Message::from_value(v) {
                    Ok(Message::Request(req)) => dispatch_request(&spec, &plugin, &mut tasks, req),
                    Ok(Message::Notification(n)) => {
                        if dispatch_notification(&spec, &plugin, &ntx, n).await {
                            break Ok(());
                        }
                    }
                    Ok(Message::Response(resp)) => route_response(&plugin, resp),
                    Err(e) => plugin.warn(format!("ignoring malformed message: {e}")),
                },
            },
        }
    };
    // No answer can come any more: calls still waiting through the transport end now.
    plugin.shared.rpc.close();
    tasks.abort_all();
    worker.abort();
    transport.finish().await;
    result
}

/// A response on our input: the answer to a call made through the transport, or stray.
fn route_response<S>(plugin: &Plugin<S>, resp: Response) {
    let id = resp.id.clone();
    match plugin.shared.rpc.route_response(resp) {
        Routed::Delivered | Routed::NotOurs => {}
        Routed::UnknownId => plugin.debug(format!(
            "ignoring a response to {id}: no call is waiting for it"
        )),
    }
}

/// Runs `make` and the future it returns, turning a panic in either into `None`.
async fn guarded<T>(make: impl FnOnce() -> BoxFut<T>) -> Option<T> {
    let fut = std::panic::catch_unwind(AssertUnwindSafe(make)).ok()?;
    AssertUnwindSafe(fut).catch_unwind().await.ok()
}

fn dispatch_request<S: Send + Sync + 'static>(
    spec: &Arc<Spec<S>>,
    plugin: &Plugin<S>,
    tasks: &mut JoinSet<()>,
    req: Request,
) {
    let out = plugin.shared.out.clone();
    let Request {
        id, method, params, ..
    } = req;
    if let Some(hook) = spec.hooks.get(&method) {
        let handler = hook.handler.clone();
        let kind = hook.hook;
        let plugin = plugin.clone();
        tasks.spawn(async move {
            let answer = match guarded(|| handler(plugin.clone(), params)).await {
                Some(Ok(answer)) => answer,
                Some(Err(e)) => {
                    plugin.error(format!(
                        "{kind} hook handler failed ({e}); answering the safe default"
                    ));
                    Hook::safe_default(kind)
                }
                None => {
                    plugin.error(format!(
                        "{kind} hook handler panicked; answering the safe default"
                    ));
                    Hook::safe_default(kind)
                }
            };
            let _ = out.send(Response::ok(id, answer).to_value());
        });
        return;
    }
    if let Some(m) = spec.methods.get(&method) {
        let handler = m.handler.clone();
        let plugin = plugin.clone();
        tasks.spawn(async move {
            let outcome = guarded(|| handler(plugin, params))
                .await
                .unwrap_or_else(|| {
                    Err(RpcError::invalid_request(format!(
                        "plugin handler for '{method}' panicked"
                    )))
                });
            let _ = out.send(Response { id, outcome }.to_value());
        });
        return;
    }
    match method.as_str() {
        "setconfig" => {
            let spec = spec.clone();
            let plugin = plugin.clone();
            tasks.spawn(async move {
                let outcome = setconfig(&spec, &plugin, &params).await;
                let _ = out.send(Response { id, outcome }.to_value());
            });
        }
        "check" => {
            let outcome = check(spec, &params);
            let _ = out.send(Response { id, outcome }.to_value());
        }
        "getmanifest" | "init" => {
            let e = RpcError::invalid_request(format!("{method} was already answered"));
            let _ = out.send(Response::err(id, e).to_value());
        }
        _ => {
            let _ = out.send(Response::err(id, RpcError::unknown_method(&method)).to_value());
        }
    }
}

/// Parses `setconfig`'s value, runs the option's on-change callback and stores the value if
/// it was accepted.
async fn setconfig<S: Send + Sync + 'static>(
    spec: &Spec<S>,
    plugin: &Plugin<S>,
    params: &Value,
) -> Result<Value, RpcError> {
    let (name, value) = parse_setconfig(spec, params)?;
    if let Some(cb) = spec.on_change.get(&name) {
        let cb = cb.clone();
        let p = plugin.clone();
        let v = value.clone();
        guarded(|| cb(p, v)).await.unwrap_or_else(|| {
            Err(RpcError::lightningd(format!(
                "on_change for '{name}' panicked"
            )))
        })?;
    }
    plugin.set_option(&name, value);
    Ok(json!({}))
}

fn parse_setconfig<S>(spec: &Spec<S>, params: &Value) -> Result<(String, Value), RpcError> {
    let name = params
        .get("config")
        .and_then(Value::as_str)
        .ok_or_else(|| RpcError::invalid_params("setconfig needs 'config'"))?;
    let opt = spec
        .option(name)
        .ok_or_else(|| RpcError::invalid_params(format!("Unknown config option '{name}'")))?;
    if !opt.is_dynamic() {
        return Err(RpcError::invalid_params(format!(
            "'{name}' is not a dynamic option"
        )));
    }
    let value = opt
        .parse_setconfig(params.get("val"))
        .map_err(RpcError::invalid_params)?;
    Ok((name.to_string(), value))
}

/// Answers `check` without running anything: a `setconfig` value is parsed, a typed
/// method's params are bound.
fn check<S>(spec: &Spec<S>, params: &Value) -> Result<Value, RpcError> {
    let command = params
        .get("command_to_check")
        .and_then(Value::as_str)
        .ok_or_else(|| RpcError::invalid_params("check needs 'command_to_check'"))?;
    if command == "setconfig" {
        parse_setconfig(spec, params)?;
    } else if let Some(m) = spec.methods.get(command) {
        if let Some(check) = &m.check {
            let mut rest = params.clone();
            if let Some(obj) = rest.as_object_mut() {
                obj.remove("command_to_check");
            }
            check(&rest)?;
        }
    } else {
        return Err(RpcError::new(
            codes::METHOD_NOT_FOUND,
            format!("Unknown command '{command}'"),
        ));
    }
    Ok(json!({ "command_to_check": command }))
}

/// Queues a notification for the subscribers. Returns `true` when the plugin must stop
/// (`shutdown`, after its handlers ran).
async fn dispatch_notification<S>(
    spec: &Spec<S>,
    plugin: &Plugin<S>,
    queue: &mpsc::UnboundedSender<Queued>,
    n: Notification,
) -> bool {
    let shutdown = n.method == "shutdown";
    let subscribed = spec.subscriptions.contains_key(&n.method)
        || (n.method != "log" && spec.subscriptions.contains_key("*"));
    if !subscribed {
        if !shutdown {
            plugin.debug(format!(
                "ignoring notification '{}' we did not subscribe to",
                n.method
            ));
        }
        return shutdown;
    }
    let event = Event::from_notification(n);
    if shutdown {
        let (tx, rx) = oneshot::channel();
        if queue.send((event, Some(tx))).is_ok() {
            let _ = rx.await;
        }
        return true;
    }
    let _ = queue.send((event, None));
    false
}

async fn notification_worker<S: Send + Sync + 'static>(
    spec: Arc<Spec<S>>,
    plugin: Plugin<S>,
    mut rx: mpsc::UnboundedReceiver<Queued>,
) {
    while let Some((event, done)) = rx.recv().await {
        let specific = spec.subscriptions.get(&event.topic).into_iter().flatten();
        let wildcard = if event.topic == "log" {
            None
        } else {
            spec.subscriptions.get("*")
        };
        for handler in specific.chain(wildcard.into_iter().flatten()) {
            let (h, p, e) = (handler.clone(), plugin.clone(), event.clone());
            if guarded(|| h(p, e)).await.is_none() {
                plugin.error(format!(
                    "handler for notification '{}' panicked",
                    event.topic
                ));
            }
        }
        if let Some(done) = done {
            let _ = done.send(());
        }
    }
}
