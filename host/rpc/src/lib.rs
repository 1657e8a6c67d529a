//! fulgurd's RPC edge, and with the plugin host the only crate that speaks CLN's JSON
//! (docs/adr/0009-host-crates.md): the `lightning-rpc` socket server ([`listen`],
//! [`serve`]) with CLN's request rules and the command table, CLN's JSON views of the
//! engine's and the wallet's typed values, each typed error mapped to CLN's code, and
//! [`PluginPort`], the engine's `Port` implemented with the plugin host (typed notices and
//! questions become CLN's notifications and hook payloads), with the chain's backend
//! plugins and the wallet's and the log's notifications ([`ChainPluginHost`],
//! [`wallet_movements`], [`notify_log`]).
//!
//! Every command gets the [`Node`]: the parts `fulgurd` built (configuration, store,
//! plugin host, chain, wallet, the engine once started) and its stop controls. `fulgurd`
//! builds and runs the node; this crate does not know how.

// Daemon code returns errors; a panic here would stop the process (tests may unwrap:
// clippy.toml).
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::string_slice)]
#![deny(missing_docs)]

// The names the code uses for the crates below, as when the RPC was a module of fulgurd.
// The Lightning engine is fulgur-engine; `crate::lightning` names it.
use fulgur_engine as lightning;
// The log lives in fulgur-base; `crate::log` names it.
use fulgur_base::log;
// The database is fulgur-store; `crate::store` names it.
use fulgur_store as store;
// The chain is fulgur-chain; `crate::chain` names it.
use fulgur_chain as chain;
// The on-chain wallet is fulgur-wallet; `crate::wallet` names it.
use fulgur_wallet as wallet;
// The plugin host is fulgur-plugins; `crate::plugin`, `crate::hooks` and `crate::options`
// name it and its modules.
use fulgur_plugins as plugin;
use fulgur_plugins::{hooks, options};
// The configuration is fulgur-config; `crate::config` and `crate::core_options` name it.
use fulgur_config as config;
use fulgur_config::core_options;

mod cln_json;
mod node;
mod plugin_feeds;
mod plugin_port;
mod rpc;

#[doc(hidden)]
pub mod fuzzing;

pub use node::{Node, ShutdownSignal, StopControl};
pub use plugin_feeds::{ChainPluginHost, DbWriteHook, notify_log, wallet_movements};
pub use plugin_port::PluginPort;
pub use rpc::standby::{StandbyInfo, serve_standby};
pub use rpc::{listen, serve};

/// The built-in command names (developer-only ones included), which plugins may not
/// register as methods.
pub fn command_names() -> impl Iterator<Item = &'static str> {
    rpc::commands::names()
}
