//! `listener`: counts the notifications it receives and reports them.
//!
//! Subscribes to `connect`, `disconnect`, `block_added`, the custom topic `hello_said`
//! (emitted by the `hello` example) and `*`. Method `listenerstats` returns the counts per
//! topic as seen by the specific handlers and by the `*` handler, the connected peers, the
//! last block height and the last custom notification with its origin.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

use fulgur_plugin_sdk::{Builder, Event, Plugin, RpcError};
use serde_json::{Value, json};

#[derive(Default)]
struct Seen {
    specific: BTreeMap<String, u64>,
    wildcard: BTreeMap<String, u64>,
    peers: BTreeSet<String>,
    height: Option<u64>,
    last_custom: Option<Value>,
}

type State = Mutex<Seen>;

fn seen(plugin: &Plugin<State>) -> std::sync::MutexGuard<'_, Seen> {
    plugin.state().lock().unwrap_or_else(|p| p.into_inner())
}

async fn on_event(plugin: Plugin<State>, event: Event) {
    let mut s = seen(&plugin);
    *s.specific.entry(event.topic.clone()).or_default() += 1;
    let peer = event
        .payload
        .get("id")
        .and_then(Value::as_str)
        .map(str::to_string);
    match event.topic.as_str() {
        "connect" => s.peers.extend(peer),
        "disconnect" => {
            if let Some(p) = peer {
                s.peers.remove(&p);
            }
        }
        "block_added" => s.height = event.payload.get("height").and_then(Value::as_u64),
        _ => {
            s.last_custom = Some(
                json!({"topic": event.topic, "origin": event.origin, "payload": event.payload}),
            )
        }
    }
}

async fn on_any(plugin: Plugin<State>, event: Event) {
    *seen(&plugin).wildcard.entry(event.topic).or_default() += 1;
}

async fn stats(plugin: Plugin<State>, _params: Value) -> Result<Value, RpcError> {
    let s = seen(&plugin);
    Ok(json!({
        "specific": s.specific, "wildcard": s.wildcard, "peers": s.peers,
        "blockheight": s.height, "last_custom": s.last_custom,
    }))
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    Builder::<State>::new()
        .subscribe("connect", on_event)
        .subscribe("disconnect", on_event)
        .subscribe("block_added", on_event)
        .subscribe("hello_said", on_event)
        .subscribe("*", on_any)
        .method(
            "listenerstats",
            "",
            "What notifications this plugin has seen",
            stats,
        )
        .run(Mutex::new(Seen::default()))
        .await?;
    Ok(())
}
