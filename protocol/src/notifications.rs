//! Notification topics the node emits, and their envelopes.
//!
//! Built-in notifications wrap their payload in an object named after the topic
//! (`{"method":"connect","params":{"connect":{...}}}`, CLN rule 8). Custom notifications
//! from plugins are relayed with a top-level `origin` and the emitter's params unchanged.

use serde_json::{Map, Value};

/// Topics the node itself emits (a plugin may not declare one of these as its own).
pub const BUILTIN_TOPICS: &[&str] = &[
    "connect",
    "disconnect",
    "channel_opened",
    "channel_open_failed",
    "channel_state_changed",
    "invoice_creation",
    "invoice_payment",
    "forward_event",
    "sendpay_success",
    "sendpay_failure",
    "coin_movement",
    "balance_snapshot",
    "block_added",
    "warning",
    "log",
    "custommsg",
    "openchannel_peer_sigs",
    "onionmessage_forward_fail",
    "plugin_started",
    "plugin_stopped",
    "shutdown",
    "deprecated_oneshot",
];

/// Topics a plugin may send the node with a special meaning (not relayed as custom).
pub const PLUGIN_TO_NODE_TOPICS: &[&str] = &["log", "message", "progress"];

/// Whether `topic` is emitted by the node itself.
pub fn is_builtin(topic: &str) -> bool {
    BUILTIN_TOPICS.contains(&topic)
}

/// `{"<topic>": inner}`: the params of a built-in notification.
pub fn wrap(topic: &str, inner: Value) -> Value {
    let mut m = Map::with_capacity(1);
    m.insert(topic.to_string(), inner);
    Value::Object(m)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn wraps_under_topic() {
        assert_eq!(
            wrap("block_added", json!({"height":1})),
            json!({"block_added":{"height":1}})
        );
        assert!(is_builtin("shutdown"));
        assert!(!is_builtin("holdinvoice_state"));
    }
}
