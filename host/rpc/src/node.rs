//! The node as the RPC commands see it: every part they reach, and the stop controls
//! `stop` uses. `fulgurd` builds it (its `node.rs`) and owns the process's life cycle.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::{Notify, mpsc, watch};

use crate::chain::Chain;
use crate::config::Config;
use crate::log::SourceLog;
use crate::plugin::PluginHost;
use crate::store::Store;

/// Everything a running node shares.
pub struct Node {
    /// The validated configuration.
    pub config: Config,
    /// The log under `lightningd`.
    pub main: SourceLog,
    /// The database.
    pub store: Store,
    /// The plugin host.
    pub plugins: Arc<PluginHost>,
    /// The Bitcoin chain: block stream, fee cache, broadcaster.
    pub chain: Arc<Chain>,
    /// The on-chain wallet (derived from `hsm_secret`, fed by the chain's block stream).
    pub wallet: Arc<crate::wallet::Wallet>,
    /// The time of day (invoice expiry, timestamps).
    pub clock: Arc<dyn fulgur_base::clock::Clock>,
    /// The Lightning engine, once the block stream has a tip.
    pub lightning: std::sync::OnceLock<Arc<crate::lightning::Lightning>>,
    /// The sockets we listen on for peers (filled when the engine starts).
    pub bindings: std::sync::Mutex<Vec<std::net::SocketAddr>>,
    /// Hex node id.
    pub node_id: String,
    /// The base of `makesecret`'s secrets, derived from `hsm_secret`
    /// (`lightning::keys::secret_base`); the seed itself stays out of the RPC.
    pub secret_base: [u8; 32],
    /// The node's runes (`createrune`, `checkrune`, ...), from `hsm_secret`.
    pub runes: crate::lightning::runebook::RuneBook,
    /// Alias.
    pub alias: String,
    /// Color, six hex digits.
    pub color: String,
    /// How the node is asked to stop and learns that it has; used through
    /// [`Node::request_stop`], [`Node::wait_shutdown`] and [`Node::stop_replied`].
    pub stop: StopControl,
}

/// The node's side of stopping: the channel a stop request goes to, the signal that
/// shutdown is complete, and whether a `stop` reply is owed. Its fields are the node's
/// own; the runner keeps the other end, a [`ShutdownSignal`].
pub struct StopControl {
    stop_tx: mpsc::UnboundedSender<i32>,
    done: watch::Receiver<bool>,
    stop_replies: Notify,
    stop_requested: AtomicBool,
}

/// The runner's end of a [`StopControl`]: it says when shutdown is complete.
pub struct ShutdownSignal(watch::Sender<bool>);

impl StopControl {
    /// Stop requests go to `stop_tx` (the runner waits on its receiver).
    pub fn new(stop_tx: mpsc::UnboundedSender<i32>) -> (StopControl, ShutdownSignal) {
        let (done_tx, done) = watch::channel(false);
        let control = StopControl {
            stop_tx,
            done,
            stop_replies: Notify::new(),
            stop_requested: AtomicBool::new(false),
        };
        (control, ShutdownSignal(done_tx))
    }
}

impl ShutdownSignal {
    /// Shutdown is complete (plugins stopped): wakes [`Node::wait_shutdown`], then, if
    /// `stop` asked for it, waits up to 2 s for its reply to be written.
    pub async fn complete(self, node: &Node) {
        let _ = node.stop.done.has_changed();
        let _ = self.0.send(true);
        if node.stop.stop_requested.load(Ordering::Acquire) {
            let _ = tokio::time::timeout(
                std::time::Duration::from_secs(2),
                node.stop.stop_replies.notified(),
            )
            .await;
        }
    }
}

impl Node {
    /// Asks the node to stop with `code`.
    pub fn request_stop(&self, code: i32) {
        self.stop.stop_requested.store(true, Ordering::Release);
        let _ = self.stop.stop_tx.send(code);
    }

    /// Waits until shutdown is complete (plugins stopped).
    pub async fn wait_shutdown(&self) {
        let mut rx = self.stop.done.clone();
        let _ = rx.wait_for(|d| *d).await;
    }

    /// A `stop` reply has been written.
    pub fn stop_replied(&self) {
        self.stop.stop_replies.notify_one();
    }
}
