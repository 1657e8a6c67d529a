//! The handle every handler receives: state, option values, the node's configuration, the
//! RPC client, logging and custom notifications.

use std::collections::HashSet;
use std::sync::{Arc, RwLock};

use fulgur_protocol::Notification;
use fulgur_protocol::manifest::InitConfiguration;
use serde_json::{Map, Value, json};
use tokio::sync::{Notify, mpsc};

use crate::error::NotifyError;
use crate::rpc::RpcClient;

/// A log level, sent in the `log` notification. The node logs the line under
/// `plugin-<name>`; [`Level::Warn`] and [`Level::Error`] also raise its `warning`
/// notification.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    /// `debug`: details for developers.
    Debug,
    /// `info`: normal operation.
    Info,
    /// `unusual` (CLN's name for warnings): something an operator may want to look at.
    Warn,
    /// `broken` (CLN's name for errors): something is wrong.
    Error,
}

impl Level {
    /// The level's name on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Debug => "debug",
            Level::Info => "info",
            Level::Warn => "unusual",
            Level::Error => "broken",
        }
    }
}

/// A notification delivered to a subscriber.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// The topic (`connect`, `block_added`, a custom topic...).
    pub topic: String,
    /// The payload. For built-in topics the object inside the `{"<topic>": ...}` wrapper;
    /// for custom topics the emitter's params (or, when the emitter also put them under a
    /// key named after the topic as pyln and this SDK do, that inner object).
    pub payload: Value,
    /// For custom notifications, the short name of the plugin that emitted it.
    pub origin: Option<String>,
}

impl Event {
    /// Builds the event from a received notification: unwraps built-in payloads and reads
    /// both the current (`origin` at top level) and the pre-v25.09 (`{origin, payload}`)
    /// custom envelopes.
    pub(crate) fn from_notification(n: Notification) -> Event {
        let Notification {
            method: topic,
            params,
            origin,
        } = n;
        let (params, origin) = match (origin, params) {
            (Some(o), params) => (params, Some(o)),
            (None, Value::Object(mut m))
                if m.get("origin").is_some_and(Value::is_string) && m.contains_key("payload") =>
            {
                let origin = m
                    .remove("origin")
                    .and_then(|o| o.as_str().map(str::to_string));
                (m.remove("payload").unwrap_or(Value::Null), origin)
            }
            (None, params) => (params, None),
        };
        let payload = match params {
            Value::Object(mut m) if m.get(&topic).is_some_and(Value::is_object) => {
                m.remove(&topic).unwrap_or(Value::Null)
            }
            other => other,
        };
        Event {
            topic,
            payload,
            origin,
        }
    }
}

pub(crate) struct Shared<S> {
    pub(crate) name: String,
    pub(crate) state: S,
    pub(crate) options: RwLock<Map<String, Value>>,
    pub(crate) configuration: InitConfiguration,
    pub(crate) out: mpsc::UnboundedSender<Value>,
    pub(crate) rpc: RpcClient,
    pub(crate) topics: HashSet<String>,
    pub(crate) stop: Notify,
}

/// A handle to the running plugin, given to every handler; cheap to clone and usable from
/// any task.
pub struct Plugin<S> {
    pub(crate) shared: Arc<Shared<S>>,
}

impl<S> Clone for Plugin<S> {
    fn clone(&self) -> Self {
        Plugin {
            shared: self.shared.clone(),
        }
    }
}

impl<S> std::fmt::Debug for Plugin<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugin")
            .field("name", &self.shared.name)
            .finish()
    }
}

impl<S> Plugin<S> {
    /// The state given to [`crate::Configured::start`].
    pub fn state(&self) -> &S {
        &self.shared.state
    }

    /// The plugin's name (prefix of its RPC ids).
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// What `init` said about the node: its directory, network, RPC file...
    pub fn configuration(&self) -> &InitConfiguration {
        &self.shared.configuration
    }

    /// The client for calls back to the node.
    pub fn rpc(&self) -> &RpcClient {
        &self.shared.rpc
    }

    /// An option's current value as typed JSON (an array for multi options); `None` when
    /// it has neither a value nor a default (and for a flag that is not set).
    pub fn option(&self, name: &str) -> Option<Value> {
        read(&self.shared.options).get(name).cloned()
    }

    /// A string (or string-conceal) option's value.
    pub fn option_str(&self, name: &str) -> Option<String> {
        self.option(name)
            .and_then(|v| v.as_str().map(str::to_string))
    }

    /// An int option's value.
    pub fn option_i64(&self, name: &str) -> Option<i64> {
        self.option(name).and_then(|v| v.as_i64())
    }

    /// A bool option's value, or whether a flag is set (`false` when absent).
    pub fn option_bool(&self, name: &str) -> bool {
        self.option(name).and_then(|v| v.as_bool()).unwrap_or(false)
    }

    /// A multi string option's values (empty when none).
    pub fn option_strs(&self, name: &str) -> Vec<String> {
        match self.option(name) {
            Some(Value::Array(items)) => items
                .iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect(),
            Some(Value::String(s)) => vec![s],
            _ => Vec::new(),
        }
    }

    pub(crate) fn set_option(&self, name: &str, value: Value) {
        let mut opts = self
            .shared
            .options
            .write()
            .unwrap_or_else(|p| p.into_inner());
        opts.insert(name.to_string(), value);
    }

    /// Sends a line to the node's log (never to stdout directly: the node would kill a
    /// plugin writing anything but JSON-RPC there).
    pub fn log(&self, level: Level, message: impl Into<String>) {
        send_log(&self.shared.out, level, message.into());
    }

    /// [`Plugin::log`] at [`Level::Debug`].
    pub fn debug(&self, message: impl Into<String>) {
        self.log(Level::Debug, message);
    }

    /// [`Plugin::log`] at [`Level::Info`].
    pub fn info(&self, message: impl Into<String>) {
        self.log(Level::Info, message);
    }

    /// [`Plugin::log`] at [`Level::Warn`] (`unusual`).
    pub fn warn(&self, message: impl Into<String>) {
        self.log(Level::Warn, message);
    }

    /// [`Plugin::log`] at [`Level::Error`] (`broken`).
    pub fn error(&self, message: impl Into<String>) {
        self.log(Level::Error, message);
    }

    /// Emits a custom notification on a topic declared with
    /// [`crate::Builder::notification`]. The node relays it to subscribers with our name as
    /// `origin`. As CLN's libplugin sends them (`plugin_notification_start`), the params
    /// hold the payload under a key named after the topic and nothing else: cln-rpc's typed
    /// notifications (`pay_part_start`...) refuse anything more, and pyln subscribers get the
    /// payload as the keyword argument named after the topic.
    pub fn notify(&self, topic: &str, payload: Value) -> Result<(), NotifyError> {
        if !self.shared.topics.contains(topic) {
            return Err(NotifyError::UndeclaredTopic(topic.to_string()));
        }
        if !payload.is_object() {
            return Err(NotifyError::NotAnObject);
        }
        let mut params = serde_json::Map::new();
        params.insert(topic.to_string(), payload);
        let n = Notification::new(topic, Value::Object(params));
        self.shared
            .out
            .send(n.to_value())
            .map_err(|_| NotifyError::OutputClosed)
    }

    /// Asks the dispatch loop to stop: [`crate::Running::join`] returns and in-flight
    /// handlers are cancelled.
    pub fn shutdown(&self) {
        self.shared.stop.notify_one();
    }
}

pub(crate) fn send_log(out: &mpsc::UnboundedSender<Value>, level: Level, message: String) {
    let n = Notification::new("log", json!({"level": level.as_str(), "message": message}));
    let _ = out.send(n.to_value());
}

fn read(lock: &RwLock<Map<String, Value>>) -> std::sync::RwLockReadGuard<'_, Map<String, Value>> {
    lock.read().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_unwrap_builtin_and_both_custom_envelopes() {
        let builtin = Notification::new("connect", json!({"connect": {"id": "02aa"}}));
        let e = Event::from_notification(builtin);
        assert_eq!(e.payload, json!({"id": "02aa"}));
        assert_eq!(e.origin, None);

        let mut current = Notification::new("ping", json!({"n": 1, "ping": {"n": 1}}));
        current.origin = Some("other".into());
        let e = Event::from_notification(current);
        assert_eq!(
            (e.payload, e.origin.as_deref()),
            (json!({"n": 1}), Some("other"))
        );

        let legacy = Notification::new("ping", json!({"origin": "old", "payload": {"n": 2}}));
        let e = Event::from_notification(legacy);
        assert_eq!(
            (e.payload, e.origin.as_deref()),
            (json!({"n": 2}), Some("old"))
        );

        let flat = Notification::new("ping", json!({"n": 3}));
        assert_eq!(Event::from_notification(flat).payload, json!({"n": 3}));
    }
}
