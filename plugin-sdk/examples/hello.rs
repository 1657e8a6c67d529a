//! `hello`: one option of every type and a method answering with the `greeting` option.
//!
//! Options: `greeting` (string, dynamic: `setconfig greeting Hi`, empty values refused),
//! `hello-secret` (string-conceal), `hello-repeat` (int), `hello-loud` (bool),
//! `hello-quiet` (flag), `hello-name` (multi string: extra names to greet).
//! Methods: `hello [name]`, `hellonode` (calls the node's `getinfo` back over RPC).
//! Emits the custom notification `hello_said` each time `hello` answers.

use fulgur_plugin_sdk::{Builder, OptionSpec, Plugin, RpcError, RpcMethod};
use serde::Deserialize;
use serde_json::{Value, json};

#[derive(Deserialize)]
struct HelloParams {
    name: Option<String>,
}

async fn hello(plugin: Plugin<()>, params: HelloParams) -> Result<Value, RpcError> {
    if plugin.option_bool("hello-quiet") {
        return Ok(json!({"message": ""}));
    }
    let greeting = plugin
        .option_str("greeting")
        .unwrap_or_else(|| "Hello".into());
    let mut names = vec![params.name.unwrap_or_else(|| "world".into())];
    names.extend(plugin.option_strs("hello-name"));
    let repeat = plugin.option_i64("hello-repeat").unwrap_or(1).clamp(1, 10) as usize;
    let mut message = vec![format!("{greeting}, {}!", names.join(" and ")); repeat].join(" ");
    if plugin.option_bool("hello-loud") {
        message = message.to_uppercase();
    }
    if let Err(e) = plugin.notify("hello_said", json!({"message": message})) {
        plugin.warn(format!("could not emit hello_said: {e}"));
    }
    plugin.debug(format!("said {message}"));
    Ok(json!({"message": message, "secret_set": plugin.option("hello-secret").is_some()}))
}

async fn hellonode(plugin: Plugin<()>, _params: Value) -> Result<Value, RpcError> {
    let info = plugin.rpc().call("getinfo", json!({})).await?;
    Ok(json!({"node_id": info.get("id"), "network": plugin.configuration().network}))
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    Builder::<()>::new()
        .option(
            OptionSpec::string("greeting", "What hello says")
                .default("Hello")
                .dynamic(),
        )
        .option(OptionSpec::string_conceal(
            "hello-secret",
            "A secret, shown as ... by listconfigs",
        ))
        .option(OptionSpec::int("hello-repeat", "How many times to say it").default(1))
        .option(OptionSpec::bool("hello-loud", "Shout").default(false))
        .option(OptionSpec::flag("hello-quiet", "Say nothing"))
        .option(OptionSpec::string("hello-name", "Also greet this name (repeatable)").multi())
        .on_change("greeting", |plugin: Plugin<()>, value: Value| async move {
            if value.as_str().is_none_or(str::is_empty) {
                return Err(RpcError::invalid_params("greeting must not be empty"));
            }
            plugin.info(format!("greeting is now {value}"));
            Ok(())
        })
        .rpcmethod(
            RpcMethod::typed("hello", "[name]", hello)
                .description("Greet someone with the configured greeting")
                .long_description("Answers `<greeting>, <name>!`, using the `greeting` option."),
        )
        .method(
            "hellonode",
            "",
            "Ask the node for its id over RPC",
            hellonode,
        )
        .notification("hello_said")
        .run(())
        .await?;
    Ok(())
}
