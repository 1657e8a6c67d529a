//! `hooks`: an `rpc_command` hook that blocks, rewrites and holds RPC calls.
//!
//! Options: `hooks-block` (multi string: methods refused with error -32600 and a message
//! naming this plugin), `hooks-rewrite` (string, default `hooksecho`: calls to this method
//! get `"rewritten": true` added to their object params before they run).
//! Methods: `hooksecho` (returns its params), `hooksheld` (its calls are held by the hook
//! until `hooksrelease` is called: a deferred hook answer), `hooksrelease` (releases every
//! held call, returns how many).

use fulgur_plugin_sdk::fulgur_protocol::error::codes;
use fulgur_plugin_sdk::fulgur_protocol::hooks::RpcCommandPayload;
use fulgur_plugin_sdk::{Builder, Hook, HookSpec, OptionSpec, Plugin, RpcCommandAction, RpcError};
use serde_json::{Value, json};
use tokio::sync::{Mutex, oneshot};

/// Senders that release held `hooksheld` calls.
type Held = Mutex<Vec<oneshot::Sender<()>>>;

async fn on_rpc_command(
    plugin: Plugin<Held>,
    payload: RpcCommandPayload,
) -> Result<RpcCommandAction, String> {
    let request = payload.rpc_command;
    let method = request
        .get("method")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    if plugin.option_strs("hooks-block").contains(&method) {
        plugin.info(format!("blocking {method}"));
        return Ok(RpcCommandAction::ReturnError(json!({
            "code": codes::INVALID_REQUEST,
            "message": format!("{method} is blocked by the hooks plugin"),
        })));
    }
    if plugin.option_str("hooks-rewrite").as_deref() == Some(method.as_str()) {
        let mut replaced = request.clone();
        if let Some(params) = replaced.get_mut("params").and_then(Value::as_object_mut) {
            // Already rewritten (the node may run the hook again on the replacement).
            if params.contains_key("rewritten") {
                return Ok(RpcCommandAction::Continue);
            }
            params.insert("rewritten".into(), json!(true));
            return Ok(RpcCommandAction::Replace(replaced));
        }
    }
    if method == "hooksheld" {
        let (tx, rx) = oneshot::channel();
        plugin.state().lock().await.push(tx);
        plugin.info("holding a hooksheld call until hooksrelease");
        // Answer later: other requests are served meanwhile.
        let released = rx.await.is_ok();
        return Ok(RpcCommandAction::ReturnResult(
            json!({"held": true, "released": released}),
        ));
    }
    Ok(RpcCommandAction::Continue)
}

async fn echo(_plugin: Plugin<Held>, params: Value) -> Result<Value, RpcError> {
    Ok(params)
}

async fn held(_plugin: Plugin<Held>, _params: Value) -> Result<Value, RpcError> {
    // Only reached if no rpc_command hook held the call.
    Ok(json!({"held": false}))
}

async fn release(plugin: Plugin<Held>, _params: Value) -> Result<Value, RpcError> {
    let waiting: Vec<_> = plugin.state().lock().await.drain(..).collect();
    let released = waiting
        .into_iter()
        .filter_map(|tx| tx.send(()).ok())
        .count();
    Ok(json!({"released": released}))
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    Builder::<Held>::new()
        .option(
            OptionSpec::string("hooks-block", "Refuse calls to this method (repeatable)").multi(),
        )
        .option(
            OptionSpec::string(
                "hooks-rewrite",
                "Add rewritten=true to calls of this method",
            )
            .default("hooksecho"),
        )
        .hook(HookSpec::typed(Hook::RpcCommand, on_rpc_command))
        .method("hooksecho", "[...]", "Return the params as received", echo)
        .method(
            "hooksheld",
            "",
            "Held by the rpc_command hook until hooksrelease",
            held,
        )
        .method("hooksrelease", "", "Release held hooksheld calls", release)
        .run(Mutex::new(Vec::new()))
        .await?;
    Ok(())
}
