//! Declaring a plugin: options, RPC methods, hooks, subscriptions and custom notification
//! topics, gathered by a [`Builder`] and checked before the manifest is sent.
//!
//! Handlers are async closures or `async fn`s taking a [`Plugin`] handle first. The builder
//! erases their types into boxed futures so the dispatcher can run each call in its own
//! task.

use std::collections::HashMap;
use std::fmt::Display;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use fulgur_protocol::RpcError;
use fulgur_protocol::hooks::{Hook, RpcCommandAction};
use fulgur_protocol::manifest::{HookDecl, Manifest, NotificationDecl, RpcMethodDecl};
use fulgur_protocol::notifications::is_builtin;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::error::BuildError;
use crate::options::OptionSpec;
use crate::params::{bind, usage_names};
use crate::plugin::{Event, Plugin};

pub(crate) type BoxFut<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;
pub(crate) type MethodFn<S> =
    Arc<dyn Fn(Plugin<S>, Value) -> BoxFut<Result<Value, RpcError>> + Send + Sync>;
pub(crate) type CheckFn = Arc<dyn Fn(&Value) -> Result<(), RpcError> + Send + Sync>;
pub(crate) type HookFn<S> =
    Arc<dyn Fn(Plugin<S>, Value) -> BoxFut<Result<Value, String>> + Send + Sync>;
pub(crate) type NotifyFn<S> = Arc<dyn Fn(Plugin<S>, Event) -> BoxFut<()> + Send + Sync>;
pub(crate) type ChangeFn<S> =
    Arc<dyn Fn(Plugin<S>, Value) -> BoxFut<Result<(), RpcError>> + Send + Sync>;

/// A typed answer to a hook call. Implemented for raw JSON ([`Value`]), for
/// [`RpcCommandAction`] (the `rpc_command` hook) and for [`Continue`].
pub trait HookAnswer: Send {
    /// The JSON `result` sent to the node.
    fn into_answer(self) -> Value;
}

impl HookAnswer for Value {
    fn into_answer(self) -> Value {
        self
    }
}

impl HookAnswer for RpcCommandAction {
    fn into_answer(self) -> Value {
        self.to_answer()
    }
}

/// `{"result":"continue"}`: "do what you would have done without me", valid for every hook.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Continue;

impl HookAnswer for Continue {
    fn into_answer(self) -> Value {
        json!({"result": "continue"})
    }
}

/// An RPC method the plugin serves. Create it with [`RpcMethod::new`] (params as raw JSON)
/// or [`RpcMethod::typed`] (params bound by name or position into a struct), describe it,
/// and register it with [`Builder::rpcmethod`].
pub struct RpcMethod<S> {
    pub(crate) name: String,
    pub(crate) usage: String,
    pub(crate) description: Option<String>,
    pub(crate) long_description: Option<String>,
    pub(crate) deprecated: bool,
    pub(crate) handler: MethodFn<S>,
    pub(crate) check: Option<CheckFn>,
    typed: bool,
}

impl<S: Send + Sync + 'static> RpcMethod<S> {
    /// A method whose handler receives the params exactly as the caller sent them: a JSON
    /// object (named) or array (positional). Use [`crate::bind`] to read them.
    /// The handler's `Err` goes back to the caller with its code and message.
    pub fn new<F, Fut, R>(name: impl Into<String>, handler: F) -> Self
    where
        F: Fn(Plugin<S>, Value) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<R, RpcError>> + Send + 'static,
        R: Serialize + Send + 'static,
    {
        let handler: MethodFn<S> = Arc::new(move |plugin, params| {
            let fut = handler(plugin, params);
            Box::pin(async move { fut.await.and_then(to_result) })
        });
        RpcMethod {
            name: name.into(),
            usage: String::new(),
            description: None,
            long_description: None,
            deprecated: false,
            handler,
            check: None,
            typed: false,
        }
    }

    /// A method whose params are bound into `P` the way pyln binds them to a function's
    /// arguments: an object by name, an array by position using the names in `usage`
    /// (`"name [greeting]"`). Params that don't fit `P` are answered with `-32602` without
    /// calling the handler.
    pub fn typed<P, F, Fut, R>(
        name: impl Into<String>,
        usage: impl Into<String>,
        handler: F,
    ) -> Self
    where
        P: DeserializeOwned + Send + 'static,
        F: Fn(Plugin<S>, P) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<R, RpcError>> + Send + 'static,
        R: Serialize + Send + 'static,
    {
        let usage = usage.into();
        let names: Arc<Vec<String>> = Arc::new(usage_names(&usage));
        let bind_names = names.clone();
        let handler = Arc::new(handler);
        let mut method = Self::new(name, move |plugin, params: Value| {
            let names: Vec<&str> = bind_names.iter().map(String::as_str).collect();
            let bound = bind::<P>(&params, &names);
            let handler = handler.clone();
            async move { handler(plugin, bound?).await }
        });
        method.usage = usage;
        method.typed = true;
        method.check = Some(Arc::new(move |params: &Value| {
            let names: Vec<&str> = names.iter().map(String::as_str).collect();
            bind::<P>(params, &names).map(|_| ())
        }));
        method
    }

    /// The parameter synopsis shown by `help`, optional ones in brackets: `"name [greeting]"`.
    /// For [`RpcMethod::typed`] this also names the positional params; setting it again
    /// changes only what `help` shows.
    pub fn usage(mut self, usage: impl Into<String>) -> Self {
        self.usage = usage.into();
        self
    }

    /// One line saying what the method does.
    pub fn description(mut self, text: impl Into<String>) -> Self {
        self.description = Some(text.into());
        self
    }

    /// A longer explanation for `help <method>`.
    pub fn long_description(mut self, text: impl Into<String>) -> Self {
        self.long_description = Some(text.into());
        self
    }

    /// Marks the method deprecated.
    pub fn deprecated(mut self) -> Self {
        self.deprecated = true;
        self
    }

    /// Whether the params are bound by [`RpcMethod::typed`].
    pub fn is_typed(&self) -> bool {
        self.typed
    }
}

fn to_result<R: Serialize>(r: R) -> Result<Value, RpcError> {
    serde_json::to_value(r).map_err(|e| RpcError::lightningd(format!("cannot encode result: {e}")))
}

/// A hook registration: the hook, its handler and its ordering constraints. Register it
/// with [`Builder::hook`].
///
/// The node waits for the answer (there is no timeout in CLN; Fulgur's core enforces HTLC
/// deadlines), so a handler may hold its answer as long as it needs while other calls are
/// served. If the handler returns `Err` or panics, the SDK answers the hook's
/// [`Hook::safe_default`] and logs the error, because CLN aborts the whole node on an error
/// answer to a hook.
pub struct HookSpec<S> {
    pub(crate) hook: Hook,
    pub(crate) before: Vec<String>,
    pub(crate) after: Vec<String>,
    pub(crate) filters: Option<Vec<Value>>,
    pub(crate) handler: HookFn<S>,
}

impl<S: Send + Sync + 'static> HookSpec<S> {
    /// A hook whose handler receives the payload as raw JSON.
    pub fn new<F, Fut, A, E>(hook: Hook, handler: F) -> Self
    where
        F: Fn(Plugin<S>, Value) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<A, E>> + Send + 'static,
        A: HookAnswer + 'static,
        E: Display + Send + 'static,
    {
        let handler: HookFn<S> = Arc::new(move |plugin, payload| {
            let fut = handler(plugin, payload);
            Box::pin(async move {
                fut.await
                    .map(HookAnswer::into_answer)
                    .map_err(|e| e.to_string())
            })
        });
        HookSpec {
            hook,
            before: Vec::new(),
            after: Vec::new(),
            filters: None,
            handler,
        }
    }

    /// A hook whose payload is deserialised into `P` first (for example
    /// [`fulgur_protocol::hooks::RpcCommandPayload`]); a payload that does not fit is
    /// answered with the safe default.
    pub fn typed<P, F, Fut, A, E>(hook: Hook, handler: F) -> Self
    where
        P: DeserializeOwned + Send + 'static,
        F: Fn(Plugin<S>, P) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<A, E>> + Send + 'static,
        A: HookAnswer + 'static,
        E: Display + Send + 'static,
    {
        let handler = Arc::new(handler);
        Self::new(hook, move |plugin, payload: Value| {
            let handler = handler.clone();
            async move {
                let typed: P = serde_json::from_value(payload)
                    .map_err(|e| format!("unexpected payload: {e}"))?;
                handler(plugin, typed).await.map_err(|e| e.to_string())
            }
        })
    }

    /// Plugins (names or paths) that must be called after this one in the chain.
    pub fn before<I: IntoIterator<Item = T>, T: Into<String>>(mut self, names: I) -> Self {
        self.before = names.into_iter().map(Into::into).collect();
        self
    }

    /// Plugins (names or paths) that must be called before this one in the chain.
    pub fn after<I: IntoIterator<Item = T>, T: Into<String>>(mut self, names: I) -> Self {
        self.after = names.into_iter().map(Into::into).collect();
        self
    }

    /// Only be called for these RPC method names (`rpc_command`), peer message types
    /// (`custommsg`), or kinds of HTLC (`htlc_accepted`: `"receive"` for payments to this
    /// node, `"forward"` for forwards; a Fulgur extension). Other hooks refuse filters.
    pub fn filters<I: IntoIterator<Item = T>, T: Into<Value>>(mut self, filters: I) -> Self {
        self.filters = Some(filters.into_iter().map(Into::into).collect());
        self
    }

    fn decl(&self) -> HookDecl {
        if self.before.is_empty() && self.after.is_empty() && self.filters.is_none() {
            HookDecl::Name(self.hook.as_str().to_string())
        } else {
            HookDecl::Full {
                name: self.hook.as_str().to_string(),
                before: self.before.clone(),
                after: self.after.clone(),
                filters: self.filters.clone(),
            }
        }
    }
}

/// Everything declared, checked and ready for dispatch.
pub(crate) struct Spec<S> {
    pub(crate) name: String,
    pub(crate) options: Vec<OptionSpec>,
    pub(crate) on_change: HashMap<String, ChangeFn<S>>,
    pub(crate) methods: HashMap<String, RpcMethod<S>>,
    pub(crate) hooks: HashMap<String, HookSpec<S>>,
    pub(crate) subscriptions: HashMap<String, Vec<NotifyFn<S>>>,
    pub(crate) topics: Vec<String>,
}

impl<S> Spec<S> {
    pub(crate) fn option(&self, name: &str) -> Option<&OptionSpec> {
        self.options.iter().find(|o| o.name == name)
    }
}

/// Collects a plugin's declarations. Chain the registration methods, then call
/// [`Builder::configure`] (or [`Builder::run`]) to do the handshake with the node.
///
/// `S` is the plugin's state, handed over later in [`crate::Configured::start`] and
/// reachable from every handler through [`Plugin::state`].
pub struct Builder<S> {
    name: String,
    options: Vec<OptionSpec>,
    on_change: Vec<(String, ChangeFn<S>)>,
    methods: Vec<RpcMethod<S>>,
    hooks: Vec<HookSpec<S>>,
    subscriptions: Vec<(String, NotifyFn<S>)>,
    topics: Vec<String>,
    dynamic: bool,
    cancheck: bool,
}

impl<S: Send + Sync + 'static> Default for Builder<S> {
    fn default() -> Self {
        Self::new()
    }
}

impl<S: Send + Sync + 'static> Builder<S> {
    /// An empty plugin named after its executable (the node names plugins by their file's
    /// base name; the name prefixes RPC ids and identifies the plugin in `before`/`after`).
    /// Plugins are `dynamic` by default, as with pyln-client.
    pub fn new() -> Self {
        let name = std::env::args_os()
            .next()
            .and_then(|a| {
                std::path::Path::new(&a)
                    .file_name()
                    .map(|f| f.to_string_lossy().into_owned())
            })
            .unwrap_or_else(|| "plugin".to_string());
        Builder {
            name,
            options: Vec::new(),
            on_change: Vec::new(),
            methods: Vec::new(),
            hooks: Vec::new(),
            subscriptions: Vec::new(),
            topics: Vec::new(),
            dynamic: true,
            cancheck: false,
        }
    }

    /// Overrides the plugin's name (used in RPC ids and logs only; the node uses the file
    /// name).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Declares an option.
    pub fn option(mut self, option: OptionSpec) -> Self {
        self.options.push(option);
        self
    }

    /// Called when `setconfig` changes the dynamic option `name`, with the new typed value
    /// (a JSON array for multi options), before it is stored. Return `Err` to refuse the
    /// change: the caller of `setconfig` gets that error and the value stays as it was.
    pub fn on_change<F, Fut>(mut self, name: impl Into<String>, callback: F) -> Self
    where
        F: Fn(Plugin<S>, Value) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), RpcError>> + Send + 'static,
    {
        let cb: ChangeFn<S> = Arc::new(move |plugin, value| Box::pin(callback(plugin, value)));
        self.on_change.push((name.into(), cb));
        self
    }

    /// Registers an RPC method built with [`RpcMethod`].
    pub fn rpcmethod(mut self, method: RpcMethod<S>) -> Self {
        self.methods.push(method);
        self
    }

    /// Shorthand for [`RpcMethod::new`] with a usage string and a description.
    pub fn method<F, Fut, R>(self, name: &str, usage: &str, description: &str, handler: F) -> Self
    where
        F: Fn(Plugin<S>, Value) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<R, RpcError>> + Send + 'static,
        R: Serialize + Send + 'static,
    {
        self.rpcmethod(
            RpcMethod::new(name, handler)
                .usage(usage)
                .description(description),
        )
    }

    /// Registers a hook built with [`HookSpec`].
    pub fn hook(mut self, hook: HookSpec<S>) -> Self {
        self.hooks.push(hook);
        self
    }

    /// Subscribes to a notification topic: a built-in one (`connect`, `block_added`, ...),
    /// a custom one emitted by another plugin, or `"*"` for all (except `log`). Handlers run
    /// one at a time, in arrival order; a handler for a topic and a `"*"` handler both see
    /// the notification.
    pub fn subscribe<F, Fut>(mut self, topic: impl Into<String>, handler: F) -> Self
    where
        F: Fn(Plugin<S>, Event) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let h: NotifyFn<S> = Arc::new(move |plugin, event| Box::pin(handler(plugin, event)));
        self.subscriptions.push((topic.into(), h));
        self
    }

    /// Declares a custom notification topic this plugin emits with [`Plugin::notify`].
    pub fn notification(mut self, topic: impl Into<String>) -> Self {
        self.topics.push(topic.into());
        self
    }

    /// Whether the plugin may be started and stopped while the node runs (default `true`).
    pub fn dynamic(mut self, dynamic: bool) -> Self {
        self.dynamic = dynamic;
        self
    }

    /// Whether the plugin answers `check` requests for its methods and dynamic options
    /// (default `false`). The SDK answers them itself: a typed method's params are bound
    /// and an option's value is parsed, without running anything.
    pub fn cancheck(mut self, cancheck: bool) -> Self {
        self.cancheck = cancheck;
        self
    }

    /// Checks every declaration and produces the manifest and the dispatch tables.
    pub(crate) fn build(self) -> Result<(Manifest, Spec<S>), BuildError> {
        let mut manifest = Manifest {
            nonnumericids: Some(true),
            dynamic: self.dynamic,
            cancheck: self.cancheck,
            ..Manifest::default()
        };
        for opt in &self.options {
            if manifest.options.iter().any(|o| o.name == opt.name) {
                return Err(BuildError::DuplicateOption(opt.name.clone()));
            }
            manifest.options.push(opt.to_decl()?);
        }
        let mut on_change = HashMap::new();
        for (name, cb) in self.on_change {
            let dynamic = self.options.iter().any(|o| o.name == name && o.dynamic);
            if !dynamic || on_change.contains_key(&name) {
                return Err(BuildError::OnChangeWithoutDynamicOption(name));
            }
            on_change.insert(name, cb);
        }
        let mut hooks = HashMap::new();
        for hook in self.hooks {
            let name = hook.hook.as_str().to_string();
            if hook.filters.is_some() && !hook.hook.accepts_filters() {
                return Err(BuildError::FiltersNotAllowed(name));
            }
            if hooks.contains_key(&name) {
                return Err(BuildError::DuplicateHook(name));
            }
            manifest.hooks.push(hook.decl());
            hooks.insert(name, hook);
        }
        let mut methods = HashMap::new();
        for m in self.methods {
            let reserved = matches!(
                m.name.as_str(),
                "getmanifest" | "init" | "setconfig" | "check"
            ) || Hook::from_name(&m.name).is_some();
            if reserved || m.name.is_empty() || methods.contains_key(&m.name) {
                return Err(BuildError::DuplicateMethod(m.name));
            }
            manifest.rpcmethods.push(RpcMethodDecl {
                name: m.name.clone(),
                usage: m.usage.clone(),
                description: m.description.clone(),
                long_description: m.long_description.clone(),
                category: None,
                deprecated: Value::Bool(m.deprecated),
            });
            methods.insert(m.name.clone(), m);
        }
        let mut subscriptions: HashMap<String, Vec<NotifyFn<S>>> = HashMap::new();
        for (topic, h) in self.subscriptions {
            if !subscriptions.contains_key(&topic) {
                manifest.subscriptions.push(topic.clone());
            }
            subscriptions.entry(topic).or_default().push(h);
        }
        for topic in &self.topics {
            if topic.is_empty()
                || is_builtin(topic)
                || manifest.notifications.iter().any(|n| &n.method == topic)
            {
                return Err(BuildError::BadNotificationTopic(topic.clone()));
            }
            manifest.notifications.push(NotificationDecl {
                method: topic.clone(),
            });
        }
        let spec = Spec {
            name: self.name,
            options: self.options,
            on_change,
            methods,
            hooks,
            subscriptions,
            topics: self.topics,
        };
        Ok((manifest, spec))
    }
}
