//! Built-in placeholder for the `pay` plugin: paying BOLT11 invoices (route finding, retries, MPP) through the node's sendpay/waitsendpay.
//!
//! Its own issue will fill it in. Until then it is a minimal valid plugin so that `fulgurd`
//! can load it as a built-in: an empty manifest (no options, methods or hooks) with
//! `dynamic: true`, an answer to `init`, and a clean exit when the node closes stdin.

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), fulgur_plugin_sdk::RunError> {
    fulgur_plugin_sdk::Builder::<()>::new()
        .dynamic(true)
        .run(())
        .await
}
