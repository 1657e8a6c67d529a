//! `htlc_gate`: an `htlc_accepted` hook in a few lines. Forwards below `htlc-gate-min-msat`
//! are failed with `temporary_channel_failure`; everything else continues. Used by the
//! payment benchmark to measure what a Rust plugin in the HTLC path costs.

use fulgur_plugin_sdk::{Builder, Hook, HookSpec, OptionSpec, Plugin};
use serde_json::{Value, json};

async fn on_htlc(plugin: Plugin<()>, payload: Value) -> Result<Value, String> {
    let min = plugin.option_i64("htlc-gate-min-msat").unwrap_or(0);
    let forward = payload["onion"].get("short_channel_id").is_some();
    let amount = payload["onion"]["forward_msat"].as_i64().unwrap_or(0);
    if forward && amount < min {
        return Ok(json!({"result": "fail", "failure_message": "1007"}));
    }
    Ok(json!({"result": "continue"}))
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    Builder::<()>::new()
        .option(
            OptionSpec::int("htlc-gate-min-msat", "Fail forwards smaller than this").default("0"),
        )
        .hook(HookSpec::new(Hook::HtlcAccepted, on_htlc))
        .run(())
        .await?;
    Ok(())
}
