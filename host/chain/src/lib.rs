//! The node's view of the Bitcoin chain: a bitcoind JSON-RPC client (or CLN-style backend
//! plugins), one validated block stream feeding every listener (the on-chain wallet now,
//! LDK's ChannelManager and ChainMonitor later), a fee-estimate cache that never blocks,
//! and a broadcaster with retries.
//!
//! A crate of its own (docs/adr/0009-host-crates.md): it knows bitcoind's JSON-RPC and the
//! store, and reaches backend plugins only through [`ChainPlugins`].
//!
//! This file holds the contracts other modules rely on; the implementation lives in the
//! submodules. Listeners implement LDK's [`lightning::chain::Listen`] (full blocks, and
//! `blocks_disconnected` on reorgs), so the same stream can feed LDK unchanged.

#![deny(missing_docs)]
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::string_slice)]

pub mod backend;
pub mod broadcast;
pub mod fees;
pub mod plugin_source;
pub mod rpc;
pub mod settings;
pub mod stream;

use std::future::Future;
use std::pin::Pin;

use bitcoin::{Transaction, Txid};

pub use settings::BitcoinOptions;
pub use stream::Chain;

/// How urgently a transaction should confirm; mapped to a block target by the fee cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FeeTarget {
    /// CLN's `urgent`: 6 blocks (`lightningd/feerate.c`).
    Urgent,
    /// CLN's `normal`: 12 blocks (the default for withdrawals).
    Normal,
    /// CLN's `slow`: about 100 blocks.
    Slow,
    /// CLN's `minimum`: the lowest rate the backend relays.
    Minimum,
    /// A confirmation target in blocks.
    Blocks(u16),
}

/// Fee estimates from the cache. Never blocks and never fails: when the backend has no
/// estimate, a documented fallback is returned.
pub trait FeeEstimates: Send + Sync {
    /// Sat per 1000 weight units for `target` (at least the floor of 253).
    fn feerate_perkw(&self, target: FeeTarget) -> u32;
}

/// Why a broadcast failed: the backend's own error (bitcoind's code and message).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message} (code {code})")]
pub struct BroadcastError {
    /// bitcoind's error code (-25, -26, -27 ...), or -1 when the backend was unreachable.
    pub code: i64,
    /// bitcoind's message (`bad-txns-inputs-missingorspent` ...).
    pub message: String,
}

/// A boxed future, for object-safe async methods.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What the chain needs from the plugin host, which it does not know: CLN's Bitcoin
/// backend methods (`getchaininfo`, `estimatefees`, `getrawblockbyheight`, `getutxout`,
/// `sendrawtransaction`) when plugins serve them, and the `block_added` notification.
/// `fulgurd` implements it over its plugin host.
pub trait ChainPlugins: Send + Sync {
    /// Whether a plugin registered `method`.
    fn serves(&self, method: &str) -> bool;
    /// Calls `method` on the plugin that registered it: its `result`, or why there is none
    /// (no such plugin, it died, it answered with an error).
    fn call(
        &self,
        method: &str,
        params: serde_json::Value,
    ) -> BoxFuture<'_, Result<serde_json::Value, String>>;
    /// Tells the plugins that the stream reached block `hash` at `height`.
    fn block_added(&self, hash: bitcoin::BlockHash, height: u32);
}

/// Asks the node to stop with an exit code (the backend never answered, say).
pub type StopRequest = tokio::sync::mpsc::UnboundedSender<i32>;

/// Sends transactions to the network and reports the backend's verdict.
pub trait TxBroadcaster: Send + Sync {
    /// Broadcasts `tx` once and returns its txid or the backend's rejection. (LDK's
    /// fire-and-forget `BroadcasterInterface` is built on this, with retries.)
    fn send(&self, tx: Transaction) -> BoxFuture<'static, Result<Txid, BroadcastError>>;
}
