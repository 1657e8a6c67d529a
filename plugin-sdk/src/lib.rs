//! Write Fulgur plugins in Rust. They also run under Core Lightning: the SDK speaks CLN's
//! plugin protocol (JSON-RPC 2.0 over stdin/stdout, messages ended by a blank line).
//!
//! A plugin is declared with a [`Builder`] (options, RPC methods, hooks, subscriptions,
//! custom notification topics), answers the node's `getmanifest` and receives `init` in
//! [`Builder::configure`] (giving a [`Configured`] plugin whose options can be read), then
//! [`Configured::start`]s serving ([`Running`]). Every request runs in its own tokio task,
//! so a hook may hold its answer for minutes while other calls are served; one writer task
//! writes all output. Handlers receive a [`Plugin`] handle for state, options, logging,
//! custom notifications and calls back to the node ([`RpcClient`]).
//!
//! ```no_run
//! use fulgur_plugin_sdk::{Builder, OptionSpec, Plugin, RpcError, RpcMethod};
//! use serde::Deserialize;
//! use serde_json::{Value, json};
//!
//! #[derive(Deserialize)]
//! struct HelloParams {
//!     name: Option<String>,
//! }
//!
//! async fn hello(plugin: Plugin<()>, p: HelloParams) -> Result<Value, RpcError> {
//!     let greeting = plugin.option_str("greeting").unwrap_or_default();
//!     Ok(json!({ "message": format!("{greeting}, {}!", p.name.as_deref().unwrap_or("world")) }))
//! }
//!
//! #[tokio::main(flavor = "current_thread")]
//! async fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     Builder::<()>::new()
//!         .option(OptionSpec::string("greeting", "What hello says").default("Hello"))
//!         .rpcmethod(RpcMethod::typed("hello", "[name]", hello).description("Say hello"))
//!         .run(())
//!         .await?;
//!     Ok(())
//! }
//! ```
//!
//! Plugins are I/O-bound: a current-thread runtime (as above) answers a call in about
//! half the time of the default multi-threaded one on small machines, because a request
//! and its answer never cross threads (see `docs/PERFORMANCE.md`). Use the multi-threaded
//! runtime only for CPU-heavy handlers.
//!
//! Rules the SDK keeps for you: nothing but JSON-RPC is ever written to stdout (log with
//! [`Plugin::log`]); an error or panic in a hook handler answers the hook's safe default
//! instead of an error (CLN aborts the node on hook errors); the plugin exits when its
//! input closes or on `shutdown`.
#![deny(missing_docs)]

mod builder;
mod dispatch;
pub mod error;
pub mod hex;
mod options;
mod params;
mod plugin;
mod rpc;
mod transport;
pub mod wasm;

pub use builder::{Builder, Continue, HookAnswer, HookSpec, RpcMethod};
pub use dispatch::{Configured, Running};
pub use error::{BuildError, CallError, NotifyError, RunError};
pub use options::OptionSpec;
pub use params::{bind, usage_names};
pub use plugin::{Event, Level, Plugin};
pub use rpc::RpcClient;
pub use transport::Transport;
pub use wasm::WasmGuest;

pub use fulgur_protocol;
pub use fulgur_protocol::RpcError;
pub use fulgur_protocol::hooks::{Hook, RpcCommandAction};
pub use fulgur_protocol::manifest::InitConfiguration;
