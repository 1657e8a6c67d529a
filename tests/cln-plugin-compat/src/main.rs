//! A test-only plugin written against CLN's own `cln-plugin` crate (pinned =0.7.0), to prove
//! that `fulgurd` hosts Rust plugins built for Core Lightning unmodified.
//!
//! Registers: option `clngreeting` (string, default `Hello`); methods `clnhello [name]`
//! (answers `{"message": "<clngreeting>, <name>!", "connects": <n>}`) and `clnblocked`
//! (answers `{"blocked": false}` only if no hook intercepted it); the `rpc_command` hook
//! (answers calls to `clnblocked` itself with `{"blocked_by": "cln-plugin-compat"}`, lets
//! everything else continue); a subscription to `connect` (counted, reported by
//! `clnhello`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use cln_plugin::options::{ConfigOption, DefaultStringConfigOption};
use cln_plugin::{Builder, Error, Plugin, RpcMethodBuilder};
use serde_json::{Value, json};

const GREETING: DefaultStringConfigOption =
    ConfigOption::new_str_with_default("clngreeting", "Hello", "What clnhello says");

/// Connect notifications seen so far.
#[derive(Clone, Default)]
struct State {
    connects: Arc<AtomicU64>,
}

/// `name` by keyword or first positional param, else "world".
fn name_param(params: &Value) -> String {
    let v = match params {
        Value::Array(items) => items.first(),
        Value::Object(map) => map.get("name"),
        _ => None,
    };
    v.and_then(Value::as_str).unwrap_or("world").to_string()
}

async fn clnhello(plugin: Plugin<State>, params: Value) -> Result<Value, Error> {
    let greeting = plugin.option(&GREETING)?;
    Ok(json!({
        "message": format!("{greeting}, {}!", name_param(&params)),
        "connects": plugin.state().connects.load(Ordering::SeqCst),
    }))
}

async fn clnblocked(_plugin: Plugin<State>, _params: Value) -> Result<Value, Error> {
    Ok(json!({"blocked": false}))
}

async fn on_rpc_command(_plugin: Plugin<State>, payload: Value) -> Result<Value, Error> {
    let method = payload["rpc_command"]["method"]
        .as_str()
        .unwrap_or_default();
    if method == "clnblocked" {
        return Ok(json!({"return": {"result": {"blocked_by": "cln-plugin-compat"}}}));
    }
    Ok(json!({"result": "continue"}))
}

async fn on_connect(plugin: Plugin<State>, payload: Value) -> Result<(), Error> {
    plugin.state().connects.fetch_add(1, Ordering::SeqCst);
    log::info!("connect notification: {payload}");
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let configured = Builder::new(tokio::io::stdin(), tokio::io::stdout())
        .option(GREETING)
        .rpcmethod_from_builder(
            RpcMethodBuilder::new("clnhello", clnhello)
                .usage("[name]")
                .description("Greet with the clngreeting option"),
        )
        .rpcmethod("clnblocked", "Answered by the rpc_command hook", clnblocked)
        .hook("rpc_command", on_rpc_command)
        .subscribe("connect", on_connect)
        .dynamic()
        .start(State::default())
        .await?;
    match configured {
        Some(plugin) => plugin.join().await,
        None => Ok(()),
    }
}
