//! The plugin host: starting plugins, the getmanifest → init handshake, the registry of
//! their methods, options, subscriptions and hooks, notifications, hook chains, death
//! handling and shutdown — CLN's plugin protocol, made safe.
//!
//! Differences from CLN, all in the direction of safety: a malformed hook answer is
//! replaced by the hook's safe default (CLN aborts); a non-important plugin that times
//! out during start-up is dropped (CLN aborts); plugin stderr goes to the node's log; a
//! plugin's own RPC calls skip its own `rpc_command` hook (the classic re-entrancy
//! deadlock of single-threaded plugins).
//!
//! A crate of its own (docs/adr/0009-host-crates.md): with the RPC, the only one that
//! speaks CLN's JSON. It knows neither LDK nor SQLite; what it needs from the node comes
//! through [`LocalRpc`] and [`HostSettings`].

#![deny(missing_docs)]
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::string_slice)]

pub mod discovery;
pub mod hooks;
pub mod options;
pub mod plugin;
pub mod process;
pub mod wasm;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use fulgur_protocol::codec::encode_frame;
use fulgur_protocol::hooks::Hook;
use fulgur_protocol::manifest::{HookDecl, Manifest, is_deprecated};
use fulgur_protocol::notifications::{is_builtin, wrap};
use serde_json::{Map, Value, json};

pub use plugin::{CallerLink, CallerSink, Gone, Plugin, State};

use crate::hooks::{ChainEnd, Interpret, Step};
use crate::options::RawOpt;
use crate::options::{OptionError, OptionTable};
use fulgur_base::log::{Logger, SourceLog};

/// What the host needs to know about the node.
#[derive(Debug, Clone)]
pub struct HostSettings {
    /// `<lightning-dir>/<network>`: plugins' cwd and `init.configuration.lightning-dir`.
    pub net_dir: PathBuf,
    /// `rpc-file` as configured.
    pub rpc_file: String,
    /// Network name.
    pub network: String,
    /// `--allow-deprecated-apis`.
    pub allow_deprecated_apis: bool,
    /// Handshake timeout (each of getmanifest and init).
    pub timeout: Duration,
    /// Grace period for plugins subscribed to `shutdown`.
    pub shutdown_grace: Duration,
    /// `<lightning-dir>/plugins`, scanned at start and by `plugin rescan`.
    pub default_dir: PathBuf,
    /// Method names of built-in commands (plugins cannot take them).
    pub reserved_methods: HashSet<&'static str>,
    /// The node's own option names (plugins cannot declare them).
    pub reserved_options: Vec<&'static str>,
    /// Options of CLN's built-in plugins: a plugin may declare them, and when none does,
    /// a value given for one is not an error but logged as having no effect.
    pub cln_plugin_options: Vec<&'static str>,
    /// Those of them the node serves itself (`exposesecret-passphrase`): no line when no
    /// plugin declares one.
    pub core_served_options: Vec<&'static str>,
    /// `--wasm-sandbox` rules: what each WASM plugin may do.
    #[cfg_attr(not(feature = "wasm"), allow(dead_code))]
    pub wasm_sandbox: Vec<wasm::SandboxRule>,
    /// The node's own feature bits (big-endian) at `init`, `node`, `channel` and
    /// `invoice` (CLN's order, [`fulgur_protocol::manifest::FEATURE_PLACES`]); plugins'
    /// bits are added to them in `init.configuration.feature_set`.
    pub features: [Vec<u8>; 4],
}

#[cfg(test)]
impl PluginHost {
    /// A host logging to `log` that has started and initialised `plugins` (none important).
    pub(crate) async fn running_for_tests(
        log: Logger,
        settings: HostSettings,
        plugins: &[PathBuf],
    ) -> Arc<PluginHost> {
        let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
        let host = PluginHost::new(log, settings, &[], vec![], tx);
        let c: Vec<discovery::Candidate> = plugins
            .iter()
            .map(|p| discovery::Candidate {
                path: p.clone(),
                important: false,
            })
            .collect();
        host.start_all(&c).await.unwrap_or_else(|e| panic!("{e}"));
        host.init_all().await.unwrap_or_else(|e| panic!("{e}"));
        host
    }
}

#[cfg(test)]
impl HostSettings {
    /// Settings for a test host in `dir` (regtest, 20 s plugin timeout, 1 s shutdown grace).
    pub(crate) fn for_tests(dir: &Path) -> HostSettings {
        HostSettings {
            net_dir: dir.to_path_buf(),
            rpc_file: "lightning-rpc".into(),
            network: "regtest".into(),
            allow_deprecated_apis: false,
            timeout: Duration::from_secs(20),
            shutdown_grace: Duration::from_secs(1),
            default_dir: dir.join("plugins"),
            reserved_methods: HashSet::new(),
            reserved_options: vec![],
            cln_plugin_options: vec![],
            core_served_options: vec![],
            wasm_sandbox: vec![],
            features: Default::default(),
        }
    }
}

/// The node's RPC, called in-process (for WASM plugins, which have no socket).
#[cfg_attr(not(feature = "wasm"), allow(dead_code))]
pub trait LocalRpc: Send + Sync {
    /// Runs one request object (`id`, `method`, `params`) as if it came over the socket;
    /// resolves to `{"result": ...}` or `{"error": ...}`.
    fn call(&self, request: Value) -> futures::future::BoxFuture<'static, Value>;
}

/// Why the node cannot start.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct FatalError(pub String);

struct HookEntry {
    plugin: Arc<Plugin>,
    decl: HookDecl,
}

#[derive(Default)]
struct Registry {
    plugins: Vec<Arc<Plugin>>,
    methods: HashMap<String, Arc<Plugin>>,
    hooks: BTreeMap<Hook, Vec<HookEntry>>,
    options: OptionTable,
    disabled: Vec<String>,
    next_order: u64,
}

/// A request for the node to stop, with its exit code.
pub type StopRequest = tokio::sync::mpsc::UnboundedSender<i32>;

/// The plugin host. One per node, shared as `Arc<PluginHost>`.
pub struct PluginHost {
    /// The node's log.
    pub log: Logger,
    main: SourceLog,
    /// Fixed settings.
    pub settings: HostSettings,
    reg: Mutex<Registry>,
    stop: StopRequest,
    shutting_down: AtomicBool,
    log_subscribers: AtomicBool,
    /// Counts plugins that became active (answered `init`), so that work waiting for a
    /// plugin to come back (an HTLC whose holder died) can wake up.
    activations: tokio::sync::watch::Sender<u64>,
    local_rpc: tokio::sync::watch::Sender<Option<Arc<dyn LocalRpc>>>,
}

/// One help entry for a plugin method.
#[derive(Debug, Clone)]
pub struct MethodHelp {
    /// Method name.
    pub name: String,
    /// Usage.
    pub usage: String,
    /// One line.
    pub description: Option<String>,
    /// A paragraph.
    pub long_description: Option<String>,
    /// Category.
    pub category: Option<String>,
    /// Deprecated.
    pub deprecated: bool,
}

impl PluginHost {
    /// A host with no plugins. `plugin_opts` are the configured values of plugin options.
    pub fn new(
        log: Logger,
        settings: HostSettings,
        plugin_opts: &[RawOpt],
        disabled: Vec<String>,
        stop: StopRequest,
    ) -> Arc<PluginHost> {
        let options = OptionTable::new(plugin_opts, &settings.reserved_options);
        Arc::new(PluginHost {
            main: log.source("lightningd"),
            log,
            settings,
            reg: Mutex::new(Registry {
                options,
                disabled,
                ..Default::default()
            }),
            stop,
            shutting_down: AtomicBool::new(false),
            log_subscribers: AtomicBool::new(false),
            activations: tokio::sync::watch::Sender::new(0),
            local_rpc: tokio::sync::watch::Sender::new(None),
        })
    }

    /// Installs the in-process RPC dispatcher (once the RPC server runs).
    pub fn set_local_rpc(&self, rpc: Arc<dyn LocalRpc>) {
        self.local_rpc.send_replace(Some(rpc));
    }

    /// The in-process RPC dispatcher, waiting until the node installs it.
    #[cfg_attr(not(feature = "wasm"), allow(dead_code))]
    pub async fn local_rpc(&self) -> Option<Arc<dyn LocalRpc>> {
        let mut rx = self.local_rpc.subscribe();
        rx.wait_for(Option::is_some).await.ok()?.clone()
    }

    /// Tells waiters that a plugin became active again (a restarted WASM instance).
    #[cfg_attr(not(feature = "wasm"), allow(dead_code))]
    pub(crate) fn note_activation(&self) {
        self.activations.send_modify(|n| *n += 1);
    }

    fn reg(&self) -> MutexGuard<'_, Registry> {
        self.reg.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `f` on the option table.
    pub fn with_options<T>(&self, f: impl FnOnce(&mut OptionTable) -> T) -> T {
        f(&mut self.reg().options)
    }

    /// Whether somebody subscribed to the `log` topic.
    pub fn has_log_subscribers(&self) -> bool {
        self.log_subscribers.load(Ordering::Relaxed)
    }

    fn refresh_log_subscribers(&self, reg: &Registry) {
        let any = reg.plugins.iter().any(|p| {
            p.manifest()
                .is_some_and(|m| m.subscriptions.iter().any(|s| s == "log"))
        });
        self.log_subscribers.store(any, Ordering::Relaxed);
        self.log.set_feed_all(any);
    }

    // ----- start-up -----------------------------------------------------------------

    /// Starts every discovered plugin and collects their manifests. Errors that CLN treats
    /// as fatal at start-up (an option name taken twice, a hook cycle, an important plugin
    /// failing, options nobody claims) stop the node.
    pub async fn start_all(
        self: &Arc<Self>,
        candidates: &[discovery::Candidate],
    ) -> Result<(), FatalError> {
        let mut spawned = vec![];
        for c in candidates {
            let order = {
                let mut r = self.reg();
                r.next_order += 1;
                r.next_order
            };
            match spawn_plugin(&plugin::Birth {
                host: self,
                path: &c.path,
                order,
                startup: true,
                important: c.important,
            }) {
                Ok(p) => spawned.push(p),
                Err(e) => {
                    self.main.broken(&format!("{}: {e}", c.path.display()));
                    if c.important {
                        return Err(FatalError(format!(
                            "important plugin {} failed to start: {e}",
                            c.path.display()
                        )));
                    }
                }
            }
        }
        let manifests =
            futures::future::join_all(spawned.iter().map(|p| self.get_manifest(p))).await;
        for (p, m) in spawned.iter().zip(manifests) {
            let result = match m {
                Ok(m) => self.register(p, m, &[], true),
                Err(reason) => Err(Reject::Plugin(reason)),
            };
            match result {
                Ok(()) => {}
                Err(Reject::Quiet(reason)) => self.kill_quietly(p, &reason),
                Err(Reject::Fatal(reason)) => {
                    self.kill(p, &reason);
                    return Err(FatalError(reason));
                }
                Err(Reject::Plugin(reason)) => self.failed_at_start(p, &reason)?,
            }
        }
        let unclaimed = self.reg().options.unclaimed();
        let (inert, unknown): (Vec<String>, Vec<String>) = unclaimed
            .into_iter()
            .partition(|n| self.settings.cln_plugin_options.contains(&n.as_str()));
        if let Some(name) = unknown.first() {
            return Err(FatalError(format!("unknown option: --{name}")));
        }
        for name in inert {
            if self.settings.core_served_options.contains(&name.as_str()) {
                continue;
            }
            self.log.source("lightningd").unusual(&format!(
                "Option --{name} has no effect in Fulgur (an option of a CLN plugin that no plugin registered)"
            ));
        }
        Ok(())
    }

    /// Sends `init` to every configured plugin and waits for all answers.
    pub async fn init_all(self: &Arc<Self>) -> Result<(), FatalError> {
        let plugins: Vec<Arc<Plugin>> = self
            .reg()
            .plugins
            .iter()
            .filter(|p| p.state() == State::Configured)
            .cloned()
            .collect();
        let results = futures::future::join_all(plugins.iter().map(|p| self.init(p))).await;
        for (p, r) in plugins.iter().zip(results) {
            if let Err(reason) = r {
                if reason.starts_with("disabled itself") {
                    self.kill_quietly(p, &reason);
                    continue;
                }
                self.failed_at_start(p, &reason)?;
            }
        }
        Ok(())
    }

    async fn get_manifest(&self, p: &Arc<Plugin>) -> Result<Manifest, String> {
        let params = json!({"allow-deprecated-apis": self.settings.allow_deprecated_apis});
        let resp = match tokio::time::timeout(
            self.settings.timeout,
            p.request("getmanifest", &params, None),
        )
        .await
        {
            Err(_) => return Err("timed out before replying to getmanifest".into()),
            Ok(Err(Gone)) => return Err("exited before replying to getmanifest".into()),
            Ok(Ok(r)) => r,
        };
        let result = outcome(&resp).map_err(|e| format!("getmanifest returned an error: {}", e))?;
        serde_json::from_value::<Manifest>(result.clone())
            .map_err(|e| format!("Invalid manifest: {e}"))
    }

    async fn init(&self, p: &Arc<Plugin>) -> Result<(), String> {
        let options = self.reg().options.init_options(&p.path);
        let plugins_bits = self.featurebits();
        let mut feature_set = Map::new();
        for (i, place) in fulgur_protocol::manifest::FEATURE_PLACES.iter().enumerate() {
            let ours = self.settings.features.get(i).cloned().unwrap_or_default();
            let theirs = plugins_bits.get(i).cloned().unwrap_or_default();
            let all = fulgur_protocol::manifest::or_featurebits(&ours, &theirs);
            feature_set.insert((*place).into(), Value::from(fulgur_base::hex(&all)));
        }
        let params = json!({
            "options": options,
            "configuration": {
                "lightning-dir": self.settings.net_dir.display().to_string(),
                "rpc-file": self.settings.rpc_file,
                "startup": p.startup,
                "network": self.settings.network,
                "feature_set": feature_set,
            }
        });
        p.set_state(State::AwaitingInit);
        let resp =
            match tokio::time::timeout(self.settings.timeout, p.request("init", &params, None))
                .await
            {
                Err(_) => return Err("timed out before replying to init".into()),
                Ok(Err(Gone)) => return Err("exited before replying to init".into()),
                Ok(Ok(r)) => r,
            };
        if let Some(why) = resp
            .get("result")
            .and_then(|r| r.get("disable"))
            .and_then(Value::as_str)
        {
            return Err(format!("disabled itself at init: {why}"));
        }
        if p.is_dead() {
            return Err("exited before replying to init".into());
        }
        p.set_state(State::Active);
        self.activations.send_modify(|n| *n += 1);
        self.notify("plugin_started", lifecycle_payload(p));
        Ok(())
    }

    /// Validates a manifest and registers everything in it, all or nothing.
    fn register(
        &self,
        p: &Arc<Plugin>,
        m: Manifest,
        extra_opts: &[RawOpt],
        startup: bool,
    ) -> Result<(), Reject> {
        if let Some(why) = &m.disable {
            return Err(Reject::Quiet(format!("disabled itself: {why}")));
        }
        if !startup && !m.dynamic {
            return Err(Reject::Plugin("Not a dynamic plugin".into()));
        }
        if m.nonnumericids == Some(false) {
            return Err(Reject::Plugin(
                "Plugin must accept string JSON ids (nonnumericids)".into(),
            ));
        }
        for place in fulgur_protocol::manifest::FEATURE_PLACES {
            m.featurebits_at(place)
                .map_err(|e| Reject::Plugin(format!("Invalid featurebits: {e}")))?;
        }
        if !startup
            && m.featurebits.as_ref().is_some_and(|f| {
                f.values()
                    .any(|v| v.as_str().is_some_and(|s| !s.is_empty()))
            })
        {
            return Err(Reject::Plugin(
                "Dynamic plugins cannot set featurebits".into(),
            ));
        }
        for n in &m.notifications {
            if is_builtin(&n.method) {
                return Err(Reject::Plugin(format!(
                    "notification topic '{}' is a built-in topic",
                    n.method
                )));
            }
        }
        let mut seen = HashSet::new();
        for h in &m.hooks {
            let Some(hook) = Hook::from_name(h.name()) else {
                return Err(Reject::Plugin(format!("Unknown hook {}", h.name())));
            };
            if let Some(why) = hook.never_fires() {
                return Err(Reject::Plugin(format!(
                    "Hook {} is never called by this node ({why})",
                    h.name()
                )));
            }
            if !seen.insert(hook) {
                return Err(Reject::Plugin(format!(
                    "Registered {} hook twice",
                    h.name()
                )));
            }
            if let Some(s) = &p.sandbox
                && !s.may_hook(h.name())
            {
                return Err(Reject::Plugin(format!(
                    "WASM plugin may not register hook {} (grant it with --wasm-sandbox={}:add-hooks={})",
                    h.name(),
                    p.name,
                    h.name()
                )));
            }
            if h.filters().is_some() && !hook.accepts_filters() {
                return Err(Reject::Plugin(format!(
                    "Hook {} does not accept filters",
                    h.name()
                )));
            }
        }
        let mut reg = self.reg();
        for r in &m.rpcmethods {
            if r.name.is_empty()
                || self.settings.reserved_methods.contains(r.name.as_str())
                || reg.methods.contains_key(&r.name)
            {
                return Err(Reject::Plugin(format!(
                    "method \"{}\" is already registered",
                    r.name
                )));
            }
        }
        // Hook order with this plugin added: a cycle rejects it.
        let mut new_hooks: BTreeMap<Hook, Vec<HookEntry>> = BTreeMap::new();
        for h in &m.hooks {
            let Some(hook) = Hook::from_name(h.name()) else {
                continue;
            };
            let mut entries: Vec<HookEntry> = reg
                .hooks
                .get(&hook)
                .map(|v| {
                    v.iter()
                        .map(|e| HookEntry {
                            plugin: e.plugin.clone(),
                            decl: e.decl.clone(),
                        })
                        .collect()
                })
                .unwrap_or_default();
            entries.push(HookEntry {
                plugin: p.clone(),
                decl: h.clone(),
            });
            entries.sort_by_key(|e| e.plugin.order);
            let regs: Vec<hooks::Registration<'_>> = entries
                .iter()
                .map(|e| hooks::Registration {
                    name: &e.plugin.name,
                    path: &e.plugin.path,
                    before: e.decl.before(),
                    after: e.decl.after(),
                })
                .collect();
            match hooks::order(&regs) {
                Ok(idx) => {
                    let mut slots: Vec<Option<HookEntry>> = entries.into_iter().map(Some).collect();
                    new_hooks.insert(
                        hook,
                        idx.into_iter().filter_map(|i| slots[i].take()).collect(),
                    );
                }
                Err(cycle) => {
                    let msg = format!(
                        "Cannot meet required hook dependencies for {}: cycle between {}",
                        h.name(),
                        cycle.join(", ")
                    );
                    return Err(if startup {
                        Reject::Fatal(msg)
                    } else {
                        Reject::Plugin(msg)
                    });
                }
            }
        }
        if let Err(e) = reg.options.register(&p.path, &m.options, extra_opts) {
            let msg = e.to_string();
            return Err(match e {
                OptionError::Taken(_) if startup => Reject::Fatal(msg),
                _ => Reject::Plugin(msg),
            });
        }
        for r in &m.rpcmethods {
            reg.methods.insert(r.name.clone(), p.clone());
        }
        for (hook, entries) in new_hooks {
            reg.hooks.insert(hook, entries);
        }
        for s in &m.subscriptions {
            if s != "*"
                && !is_builtin(s)
                && !reg.plugins.iter().any(|o| {
                    o.manifest()
                        .is_some_and(|om| om.notifications.iter().any(|n| &n.method == s))
                })
                && !m.notifications.iter().any(|n| &n.method == s)
            {
                p.log.debug(&format!("subscribes to unknown topic '{s}'"));
            }
        }
        p.set_manifest(m);
        p.set_state(State::Configured);
        reg.plugins.push(p.clone());
        self.refresh_log_subscribers(&reg);
        Ok(())
    }

    // ----- run time: plugin command ---------------------------------------------------

    /// `plugin start`: spawns, handshakes and registers a plugin; returns when `init` is
    /// answered. `Err` is the reason, without the path.
    pub async fn start_dynamic(
        self: &Arc<Self>,
        path: &Path,
        extra: &[RawOpt],
    ) -> Result<(), String> {
        if self.reg().plugins.iter().any(|p| p.path == path) {
            return Err("already registered".into());
        }
        let order = {
            let mut r = self.reg();
            r.next_order += 1;
            r.next_order
        };
        let p = spawn_plugin(&plugin::Birth {
            host: self,
            path,
            order,
            startup: false,
            important: false,
        })?;
        let m = match self.get_manifest(&p).await {
            Ok(m) => m,
            Err(reason) => {
                self.kill(&p, &reason);
                return Err(reason);
            }
        };
        if let Some(n) = extra
            .iter()
            .find(|o| !m.options.iter().any(|d| d.name == o.name))
        {
            let reason = format!("unknown parameter {}", n.name);
            self.kill(&p, &reason);
            return Err(reason);
        }
        match self.register(&p, m, extra, false) {
            Ok(()) => {}
            Err(Reject::Quiet(r)) => {
                self.kill_quietly(&p, &r);
                return Err(r);
            }
            Err(Reject::Plugin(r)) | Err(Reject::Fatal(r)) => {
                self.kill(&p, &r);
                return Err(r);
            }
        }
        if let Err(reason) = self.init(&p).await {
            if reason.starts_with("disabled itself") {
                self.kill_quietly(&p, &reason);
            } else {
                self.kill(&p, &reason);
            }
            return Err(reason);
        }
        Ok(())
    }

    /// Whether a plugin name is on the disable list.
    pub fn is_disabled(&self, path: &Path) -> bool {
        self.reg()
            .disabled
            .iter()
            .any(|n| discovery::names(n, path))
    }

    /// Finds a registered plugin by name or path (as `--disable-plugin` matches).
    pub fn find(&self, name: &str) -> Option<Arc<Plugin>> {
        self.reg()
            .plugins
            .iter()
            .find(|p| discovery::names(name, &p.path) || p.name == name)
            .cloned()
    }

    /// `plugin stop`: importance is cleared first, a `shutdown` subscriber gets the
    /// notification and the grace period, others are killed at once.
    pub async fn stop_plugin(self: &Arc<Self>, p: &Arc<Plugin>) {
        p.set_important(false);
        if p.subscribed("shutdown") && p.is_active() {
            p.send_frame(notification_frame("shutdown", json!({})));
            if tokio::time::timeout(self.settings.shutdown_grace, p.wait_exit())
                .await
                .is_err()
            {
                self.kill(p, "Timeout on shutdown: killing anyway");
                return;
            }
        }
        self.kill(p, "stopped by lightningd via RPC");
    }

    /// The `plugins` list of the `plugin` command.
    pub fn list(&self) -> Value {
        let reg = self.reg();
        Value::Array(
            reg.plugins
                .iter()
                .filter(|p| !p.is_dead())
                .map(|p| json!({"name": p.path.display().to_string(), "active": p.is_active(), "dynamic": p.is_dynamic()}))
                .collect(),
        )
    }

    /// Registered plugins whose path is `path`.
    pub fn is_registered(&self, path: &Path) -> bool {
        self.reg()
            .plugins
            .iter()
            .any(|p| p.path == path && !p.is_dead())
    }

    // ----- death --------------------------------------------------------------------

    /// A plugin failed while the node starts: it is killed, and the node cannot start
    /// without it if it is important.
    fn failed_at_start(&self, p: &Arc<Plugin>, reason: &str) -> Result<(), FatalError> {
        let important = p.is_important();
        p.set_important(false);
        self.kill(p, reason);
        if important {
            return Err(FatalError(format!(
                "important plugin {} failed: {reason}",
                p.name
            )));
        }
        Ok(())
    }

    /// Kills a plugin, logging why (CLN's "Killing plugin: ...").
    pub fn kill(&self, p: &Arc<Plugin>, reason: &str) {
        let was_active = p.is_active();
        if p.mark_dead() {
            if self.shutting_down.load(Ordering::Acquire) {
                p.log.debug(&format!("stopped at shutdown: {reason}"));
            } else {
                p.log.info(&format!("Killing plugin: {reason}"));
            }
            self.remove(p, was_active);
        }
    }

    fn kill_quietly(&self, p: &Arc<Plugin>, reason: &str) {
        p.set_important(false);
        let was_active = p.is_active();
        if p.mark_dead() {
            p.log.debug(&format!("Killing plugin: {reason}"));
            self.remove(p, was_active);
        }
    }

    /// Called when a plugin's stdout closes or it must be killed for what it wrote.
    pub fn plugin_gone(&self, p: &Arc<Plugin>, reason: &str) {
        self.kill(p, reason);
    }

    /// Drops a dead plugin's registrations; `plugin_stopped` only for one that had
    /// answered `init` (and so had its `plugin_started`).
    fn remove(&self, p: &Arc<Plugin>, was_active: bool) {
        {
            let mut reg = self.reg();
            reg.plugins.retain(|q| !Arc::ptr_eq(q, p));
            reg.methods.retain(|_, q| !Arc::ptr_eq(q, p));
            for entries in reg.hooks.values_mut() {
                entries.retain(|e| !Arc::ptr_eq(&e.plugin, p));
            }
            reg.options.unregister(&p.path);
            self.refresh_log_subscribers(&reg);
        }
        if was_active {
            self.notify("plugin_stopped", lifecycle_payload(p));
        }
        if p.is_important() && !self.shutting_down.load(Ordering::Acquire) {
            self.main
                .broken("Plugin marked as important, shutting down lightningd!");
            let _ = self.stop.send(1);
        }
    }

    // ----- notifications ------------------------------------------------------------

    /// Sends a built-in notification (payload wrapped under the topic) to every active
    /// subscriber. Never blocks.
    pub fn notify(&self, topic: &str, inner: Value) {
        self.deliver(topic, || notification_frame(topic, inner));
    }

    /// Relays a custom notification from `from` to subscribers of its topic and of `*`.
    pub fn relay_custom(&self, from: &Plugin, topic: &str, params: Value) {
        let declared = from
            .manifest()
            .is_some_and(|m| m.notifications.iter().any(|n| n.method == topic));
        if !declared {
            from.log
                .unusual(&format!("Plugin sent unknown notification topic {topic}"));
            return;
        }
        self.deliver(topic, || {
            Bytes::from(encode_frame(
                &json!({"jsonrpc": "2.0", "method": topic, "origin": from.name, "params": params}),
            ))
        });
    }

    /// Queues one frame, encoded only if somebody listens, to every active subscriber of
    /// `topic` (or of `*`).
    /// Whether any running plugin subscribed to `topic` (so callers can skip building a
    /// costly payload nobody reads).
    pub fn has_subscriber(&self, topic: &str) -> bool {
        self.reg()
            .plugins
            .iter()
            .any(|p| p.is_active() && p.subscribed(topic))
    }

    fn deliver(&self, topic: &str, frame: impl FnOnce() -> Bytes) {
        let targets: Vec<Arc<Plugin>> = self
            .reg()
            .plugins
            .iter()
            .filter(|p| p.is_active() && p.subscribed(topic))
            .cloned()
            .collect();
        if targets.is_empty() {
            return;
        }
        let frame = frame();
        for p in targets {
            p.send_frame(frame.clone());
        }
    }

    // ----- methods and hooks -----------------------------------------------------------

    /// The plugin serving `method`.
    pub fn method_owner(&self, method: &str) -> Option<Arc<Plugin>> {
        self.reg().methods.get(method).cloned()
    }

    /// Help for every plugin method, sorted by name.
    pub fn method_help(&self) -> Vec<MethodHelp> {
        let reg = self.reg();
        let mut out: Vec<MethodHelp> = reg
            .plugins
            .iter()
            .filter_map(|p| p.manifest())
            .flat_map(|m| m.rpcmethods.iter())
            .map(|r| MethodHelp {
                name: r.name.clone(),
                usage: r.usage.clone(),
                description: r.description.clone(),
                long_description: r.long_description.clone(),
                category: r.category.clone(),
                deprecated: is_deprecated(&r.deprecated),
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// Whether a live plugin registered `hook` with no filters or one matching `filter`.
    pub fn has_hook_for(&self, hook: Hook, filter: Option<&Value>) -> bool {
        self.reg().hooks.get(&hook).is_some_and(|v| {
            v.iter().any(|e| {
                !e.plugin.is_dead()
                    && match (e.decl.filters(), filter) {
                        (Some(fs), Some(f)) => fs.iter().any(|x| x == f),
                        _ => true,
                    }
            })
        })
    }

    /// The feature bits the live plugins' manifests set, per place (big-endian, in
    /// [`fulgur_protocol::manifest::FEATURE_PLACES`]' order), OR-ed together.
    pub fn featurebits(&self) -> [Vec<u8>; 4] {
        let mut out: [Vec<u8>; 4] = Default::default();
        for p in self.reg().plugins.iter().filter(|p| !p.is_dead()) {
            let Some(m) = p.manifest() else { continue };
            for (slot, place) in out
                .iter_mut()
                .zip(fulgur_protocol::manifest::FEATURE_PLACES)
            {
                if let Ok(bits) = m.featurebits_at(place) {
                    *slot = fulgur_protocol::manifest::or_featurebits(slot, &bits);
                }
            }
        }
        out
    }

    /// Whether a live plugin declared peer message type `ty` in its manifest's
    /// `custommessages` (CLN passes even message types up only then).
    pub fn wants_custom_message(&self, ty: u16) -> bool {
        self.reg()
            .plugins
            .iter()
            .filter(|p| !p.is_dead())
            .any(|p| p.manifest().is_some_and(|m| m.custommessages.contains(&ty)))
    }

    /// Whether anybody registered `hook`.
    pub fn has_hook(&self, hook: Hook) -> bool {
        self.reg()
            .hooks
            .get(&hook)
            .is_some_and(|v| v.iter().any(|e| !e.plugin.is_dead()))
    }

    /// A call of `hook`'s chain with `payload`, to refine and then run:
    /// `host.hook(Hook::Custommsg, p).filter(&ty).run().await`. `filter` is the method
    /// name (`rpc_command`) or message type (`custommsg`) matched against registrations'
    /// filters; `skip` names a plugin not to ask (the caller of an RPC, to avoid re-entrancy
    /// deadlocks). With a `deadline`, a plugin still thinking then ends the chain with
    /// [`ChainEnd::DeadlineExceeded`] and the core acts by itself.
    pub fn hook(&self, hook: Hook, payload: Value) -> HookCall<'_> {
        HookCall {
            host: self,
            hook,
            payload,
            parent: None,
            filter: None,
            skip: None,
            deadline: None,
        }
    }

    /// A receiver that changes each time a plugin becomes active (has answered `init`).
    pub fn watch_activations(&self) -> tokio::sync::watch::Receiver<u64> {
        self.activations.subscribe()
    }

    /// Runs a chain ([`HookCall`]), also naming the plugins that died (or were stopped)
    /// while they had the call: CLN asks the next plugin then, but a caller may rather wait
    /// for the plugin to come back (an HTLC only that plugin could settle).
    async fn run_hook_noting_deaths(
        &self,
        hook: Hook,
        mut payload: Value,
        parent: Option<&Value>,
        filter: Option<&Value>,
        skip: Option<&str>,
        deadline: Option<tokio::time::Instant>,
    ) -> (ChainEnd, Vec<String>) {
        let mut died = vec![];
        let interpret = hooks::semantics(hook);
        let chain: Vec<Arc<Plugin>> = {
            let reg = self.reg();
            reg.hooks
                .get(&hook)
                .map(|v| {
                    v.iter()
                        .filter(|e| match (e.decl.filters(), filter) {
                            (Some(fs), Some(f)) => fs.iter().any(|x| x == f),
                            _ => true,
                        })
                        .filter(|e| skip != Some(e.plugin.name.as_str()))
                        .map(|e| e.plugin.clone())
                        .collect()
                })
                .unwrap_or_default()
        };
        for p in chain {
            if p.is_dead() {
                continue;
            }
            let call = p.request(hook.as_str(), &payload, parent);
            let resp = match deadline {
                Some(d) => match tokio::time::timeout_at(d, call).await {
                    Ok(r) => r,
                    Err(_) => {
                        return (
                            ChainEnd::DeadlineExceeded {
                                plugin: p.name.clone(),
                            },
                            died,
                        );
                    }
                },
                None => call.await,
            };
            let resp = match resp {
                Ok(r) => r,
                Err(Gone) => {
                    died.push(p.name.clone());
                    if self.shutting_down.load(Ordering::Acquire)
                        && let Some(answer) = hooks::shutdown_answer(hook)
                    {
                        // Stopped with the call on the way out: nothing it held is let
                        // through (a held command does not run during shutdown).
                        self.main.debug(&format!(
                            "plugin {} stopped at shutdown during hook {hook}: {answer}",
                            p.name
                        ));
                        // A safe default that continues (`invoice_payment`,
                        // `peer_connected`, `custommsg`) is the chain's default, not a
                        // plugin's decision: the caller must not read it as a refusal.
                        let end = match interpret(&answer) {
                            Ok(Step::Continue(_)) => ChainEnd::Default(payload),
                            _ => ChainEnd::Stopped {
                                plugin: p.name.clone(),
                                answer,
                            },
                        };
                        return (end, died);
                    }
                    self.main.debug(&format!(
                        "plugin {} died during hook {hook}; asking the next one",
                        p.name
                    ));
                    continue;
                }
            };
            let step = match resp.get("result") {
                Some(answer) => interpret(answer).unwrap_or_else(|why| {
                    p.log.broken(&format!(
                        "malformed answer to hook {hook} ({why}): {answer}; using the safe default"
                    ));
                    safe_step(hook, interpret)
                }),
                None => {
                    let err = resp.get("error").cloned().unwrap_or(Value::Null);
                    p.log.broken(&format!(
                        "returned an error to hook {hook}: {err}; using the safe default"
                    ));
                    safe_step(hook, interpret)
                }
            };
            match step {
                Step::Continue(Some(changes)) => hooks::apply_changes(&mut payload, changes),
                Step::Continue(None) => {}
                Step::Stop(answer) => {
                    return (
                        ChainEnd::Stopped {
                            plugin: p.name.clone(),
                            answer,
                        },
                        died,
                    );
                }
            }
        }
        (ChainEnd::Default(payload), died)
    }

    // ----- shutdown -------------------------------------------------------------------

    /// Stops every plugin: `shutdown` subscribers get the notification and the grace
    /// period; the others have their stdin closed at once; stragglers are killed.
    pub async fn shutdown_all(&self) {
        self.shutting_down.store(true, Ordering::Release);
        let plugins: Vec<Arc<Plugin>> = self.reg().plugins.clone();
        for p in &plugins {
            p.set_important(false);
            if p.is_active() && p.subscribed("shutdown") {
                p.send_frame(notification_frame("shutdown", json!({})));
            } else {
                p.close_stdin();
            }
        }
        let all = futures::future::join_all(plugins.iter().map(|p| p.wait_exit()));
        if tokio::time::timeout(self.settings.shutdown_grace, all)
            .await
            .is_err()
        {
            for p in &plugins {
                if !p.is_dead() {
                    self.kill(p, "failed to self-terminate in time, killing.");
                }
            }
        }
        for p in &plugins {
            p.mark_dead();
        }
        let grace = Duration::from_secs(2);
        let _ = tokio::time::timeout(
            grace,
            futures::future::join_all(plugins.iter().map(|p| p.wait_exit())),
        )
        .await;
    }
}

enum Reject {
    /// Kill the plugin and go on (fatal if important at start-up).
    Plugin(String),
    /// The plugin disabled itself: drop it quietly, never fatal.
    Quiet(String),
    /// Stop the node (start-up only).
    Fatal(String),
}

/// The payload of `plugin_started` and `plugin_stopped`.
fn lifecycle_payload(p: &Plugin) -> Value {
    let methods: Vec<&str> = p
        .manifest()
        .map(|m| m.rpcmethods.iter().map(|r| r.name.as_str()).collect())
        .unwrap_or_default();
    json!({"plugin_name": p.name, "plugin_path": p.path.display().to_string(), "methods": methods})
}

fn safe_step(hook: Hook, interpret: Interpret) -> Step {
    let safe = hook.safe_default();
    interpret(&safe).unwrap_or(Step::Continue(None))
}

/// One call of a hook's chain being described ([`PluginHost::hook`]); nothing runs until
/// [`HookCall::run`].
pub struct HookCall<'a> {
    host: &'a PluginHost,
    hook: Hook,
    payload: Value,
    parent: Option<&'a Value>,
    filter: Option<&'a Value>,
    skip: Option<&'a str>,
    deadline: Option<tokio::time::Instant>,
}

impl<'a> HookCall<'a> {
    /// Only plugins whose registration has no filters or one matching `filter` (the
    /// method name for `rpc_command`, the message type for `custommsg`).
    pub fn filter(mut self, filter: &'a Value) -> Self {
        self.filter = Some(filter);
        self
    }

    /// The id of the request that caused the call (the plugins see it as their parent).
    pub fn parent(mut self, id: &'a Value) -> Self {
        self.parent = Some(id);
        self
    }

    /// Not the plugin named `name` (the caller of an RPC: a re-entrant call would deadlock).
    pub fn skip(mut self, name: Option<&'a str>) -> Self {
        self.skip = name;
        self
    }

    /// A plugin still thinking at `deadline` ends the chain with
    /// [`ChainEnd::DeadlineExceeded`].
    pub fn deadline(mut self, deadline: Option<tokio::time::Instant>) -> Self {
        self.deadline = deadline;
        self
    }

    /// Runs the chain.
    pub async fn run(self) -> ChainEnd {
        self.run_noting_deaths().await.0
    }

    /// Runs the chain, also naming the plugins that died (or were stopped) while they had
    /// the call.
    pub async fn run_noting_deaths(self) -> (ChainEnd, Vec<String>) {
        self.host
            .run_hook_noting_deaths(
                self.hook,
                self.payload,
                self.parent,
                self.filter,
                self.skip,
                self.deadline,
            )
            .await
    }
}

/// Starts the plugin at `path` on the transport its file asks for: a WASM module in-process,
/// anything else as a child process. `Err` is CLN's "opening pipe" reason.
fn spawn_plugin(b: &plugin::Birth<'_>) -> Result<Arc<Plugin>, String> {
    if wasm::is_wasm(b.path) {
        #[cfg(feature = "wasm")]
        return wasm::runtime::spawn(b);
        #[cfg(not(feature = "wasm"))]
        return Err(
            "WASM plugins are not supported by this build (cargo feature `wasm` is off)".into(),
        );
    }
    process::spawn(b)
}

/// `{"jsonrpc":"2.0","method":topic,"params":{topic: inner}}` encoded once.
pub fn notification_frame(topic: &str, inner: Value) -> Bytes {
    Bytes::from(encode_frame(
        &json!({"jsonrpc": "2.0", "method": topic, "params": wrap(topic, inner)}),
    ))
}

/// The `result` of a response object, or its error.
pub fn outcome(resp: &Value) -> Result<&Value, fulgur_protocol::RpcError> {
    if let Some(r) = resp.get("result") {
        return Ok(r);
    }
    let e = resp.get("error");
    Err(fulgur_protocol::RpcError {
        code: e
            .and_then(|e| e.get("code"))
            .and_then(Value::as_i64)
            .unwrap_or(fulgur_protocol::error::codes::PLUGIN_ERROR),
        message: e
            .and_then(|e| e.get("message"))
            .and_then(Value::as_str)
            .unwrap_or("malformed response")
            .to_string(),
        data: e.and_then(|e| e.get("data")).cloned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A dependency-free plugin (on the suite's `tests/plugins/rawplugin.py`) that registers
    /// `htlc_accepted` and answers it per `mode`.
    fn script(dir: &Path, name: &str, mode: &str) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let answer = match mode {
            "silent" => "pass",
            "garbage" => r#"rawplugin.reply(i, {"result": "maybe"})"#,
            "error" => {
                r#"rawplugin.send({"jsonrpc": "2.0", "id": i, "error": {"code": -1, "message": "boom"}})"#
            }
            "fail-receives" => {
                r#"rawplugin.reply(i, {"result": "fail", "failure_message": "2002"})"#
            }
            _ => r#"rawplugin.reply(i, {"result": "continue"})"#,
        };
        let hooks = if mode == "fail-receives" {
            r#"[{"name": "htlc_accepted", "filters": ["receive"]}]"#
        } else {
            r#"["htlc_accepted"]"#
        };
        let shared = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/plugins");
        let body = format!(
            r#"#!/usr/bin/env python3
import sys
sys.path.insert(0, {shared:?})
import rawplugin
for m, i, _ in rawplugin.requests():
    if m == "getmanifest":
        rawplugin.reply(i, {{"options": [], "rpcmethods": [], "hooks": {hooks}, "dynamic": True}})
    elif m == "init":
        rawplugin.reply(i, {{}})
    elif m == "htlc_accepted":
        {answer}
"#
        );
        let p = dir.join(name);
        std::fs::write(&p, body).unwrap_or_else(|e| panic!("{e}"));
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755))
            .unwrap_or_else(|e| panic!("{e}"));
        p
    }

    async fn host_with(dir: &Path, plugins: &[PathBuf]) -> Arc<PluginHost> {
        let settings = HostSettings::for_tests(dir);
        let log = Logger::new(vec![], Box::new(std::io::sink()));
        PluginHost::running_for_tests(log, settings, plugins).await
    }

    #[tokio::test]
    async fn htlc_accepted_filters_keep_forwards_away_from_a_receive_only_plugin() {
        let dir = std::env::temp_dir().join(format!("fulgur-hookfilter-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
        let host = host_with(&dir, &[script(&dir, "recv.py", "fail-receives")]).await;
        let (forward, receive) = (json!("forward"), json!("receive"));
        assert!(!host.has_hook_for(Hook::HtlcAccepted, Some(&forward)));
        assert!(host.has_hook_for(Hook::HtlcAccepted, Some(&receive)));
        let payload = json!({"htlc": {"amount_msat": 1000}});
        let end = host
            .hook(Hook::HtlcAccepted, payload.clone())
            .filter(&forward)
            .run()
            .await;
        assert_eq!(end, ChainEnd::Default(payload.clone()));
        let end = host
            .hook(Hook::HtlcAccepted, payload)
            .filter(&receive)
            .run()
            .await;
        assert!(matches!(end, ChainEnd::Stopped { ref answer, .. } if answer["result"] == "fail"));
        host.shutdown_all().await;
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn hook_deadline_malformed_answers_and_chaining() {
        let dir = std::env::temp_dir().join(format!("fulgur-hooktest-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
        let payload = json!({"htlc": {"amount_msat": 1000}});

        // A plugin that never answers: the core gets the chain back at the deadline.
        let host = host_with(
            &dir,
            &[
                script(&dir, "cont.py", "continue"),
                script(&dir, "silent.py", "silent"),
            ],
        )
        .await;
        let start = tokio::time::Instant::now();
        let deadline = start + Duration::from_millis(300);
        let end = host
            .hook(Hook::HtlcAccepted, payload.clone())
            .deadline(Some(deadline))
            .run()
            .await;
        assert_eq!(
            end,
            ChainEnd::DeadlineExceeded {
                plugin: "silent.py".into()
            }
        );
        assert!(start.elapsed() < Duration::from_secs(5));
        // Skipping the silent one, the chain completes with the default action.
        let end = host
            .hook(Hook::HtlcAccepted, payload.clone())
            .skip(Some("silent.py"))
            .deadline(Some(deadline + Duration::from_secs(5)))
            .run()
            .await;
        assert_eq!(end, ChainEnd::Default(payload.clone()));
        host.shutdown_all().await;

        // Garbage and errors become the safe default (fail the HTLC), never a crash.
        for (name, mode) in [("garbage.py", "garbage"), ("error.py", "error")] {
            let host = host_with(
                &dir,
                &[
                    script(&dir, name, mode),
                    script(&dir, "after.py", "continue"),
                ],
            )
            .await;
            let end = host.hook(Hook::HtlcAccepted, payload.clone()).run().await;
            assert_eq!(
                end,
                ChainEnd::Stopped {
                    plugin: name.into(),
                    answer: Hook::HtlcAccepted.safe_default()
                }
            );
            host.shutdown_all().await;
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
