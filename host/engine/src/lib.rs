//! The Lightning engine: LDK's `ChannelManager`, `ChainMonitor` and `PeerManager` (over
//! lightning-net-tokio), built from `hsm_secret` and the node's SQLite key-value store.
//!
//! [`Lightning::start`] waits until the block stream knows a tip (a node without a Bitcoin
//! backend keeps serving RPC, the engine simply never starts), reads the `ChannelManager` from
//! the store (or creates one at the stream's tip), registers it and the `ChainMonitor` as
//! listeners of the block stream from their own best block, then accepts peers on the bound
//! sockets. A background task processes LDK's events, ticks its timers and persists the
//! `ChannelManager` whenever it asks to be.
//!
//! Peers: [`PeerWatcher`] is LDK's custom-message handler, used only for its
//! `peer_connected`/`peer_disconnected` callbacks, which become the `connect`/`disconnect`
//! notifications and the `peer_connected` hook (a `disconnect` answer drops the peer).
//!
//! The engine knows neither CLN's JSON nor the plugin host: it returns typed values and
//! typed errors, and tells and asks the node's plugins through [`port::Port`], which
//! fulgurd implements (docs/adr/0009-host-crates.md).

// Daemon code returns errors; a panic here would stop the process (tests may unwrap:
// clippy.toml).
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::string_slice)]
#![deny(missing_docs)]

// The crates below the engine, under the names its modules use.
use fulgur_base::log;
use fulgur_chain as chain;
use fulgur_store as store;
use fulgur_wallet as wallet;

pub mod bolt12;
pub mod channels;
pub mod closed;
pub mod codex32;
pub mod discovery;
pub mod duties;
pub mod events;
pub mod forwards;
pub mod funding;
pub mod gossip;
pub mod graceful;
pub mod graph;
pub mod history;
pub mod htlcs;
pub mod indexes;
pub mod invoices;
pub mod keys;
pub mod keysend;
pub mod movements;
pub mod net;
pub mod netevents;
pub mod payments;
pub mod port;
pub mod receive;
pub mod recovery;
pub mod runebook;
pub mod runes;
pub mod socks;
pub mod sweep;
pub mod watchtower;

use fulgur_base::hex;
use std::collections::HashSet;
use std::sync::{Arc, Mutex, OnceLock, RwLock, Weak};
use std::time::{Duration, Instant};

use bitcoin::secp256k1::PublicKey;
use lightning::chain::chainmonitor::ChainMonitor;
use lightning::chain::{BlockLocator, Filter};

use lightning::ln::channelmanager::{ChainParameters, ChannelManager, ChannelManagerReadArgs};
use lightning::ln::msgs::{
    BaseMessageHandler, DecodeError, ErrorAction, Init, LightningError, MessageSendEvent,
    SendOnlyMessageHandler, WarningMessage,
};
use lightning::ln::peer_handler::{
    CustomMessageHandler, IgnoringMessageHandler, MessageHandler, PeerManager,
};
use lightning::ln::types::ChannelId;
use lightning::ln::wire::CustomMessageReader;
use lightning::onion_message::messenger::DefaultMessageRouter;
use lightning::routing::gossip::{NetworkGraph, P2PGossipSync};
use lightning::routing::router::DefaultRouter;
use lightning::routing::scoring::{ProbabilisticScorer, ProbabilisticScoringFeeParameters};
use lightning::routing::utxo::UtxoLookup;
use lightning::sign::{EntropySource, InMemorySigner, KeysManager, NodeSigner};
use lightning::types::features::{InitFeatures, NodeFeatures};
use lightning::util::config::UserConfig;
use lightning::util::logger::{Level as LdkLevel, Logger as LdkLogger, Record as LdkRecord};
use lightning::util::persist::{
    CHANNEL_MANAGER_PERSISTENCE_KEY, CHANNEL_MANAGER_PERSISTENCE_PRIMARY_NAMESPACE,
    CHANNEL_MANAGER_PERSISTENCE_SECONDARY_NAMESPACE, KVStoreSync, OUTPUT_SWEEPER_PERSISTENCE_KEY,
    OUTPUT_SWEEPER_PERSISTENCE_PRIMARY_NAMESPACE, OUTPUT_SWEEPER_PERSISTENCE_SECONDARY_NAMESPACE,
};
use lightning::util::ser::{ReadableArgs, Writeable};
use lightning_net_tokio::SocketDescriptor;

use crate::chain::Chain;
use crate::chain::broadcast::Broadcaster;
use crate::chain::fees::FeeCache;
use crate::log::{Level, SourceLog};
use crate::store::kv::SqliteKvStore;
use port::{Notice, PeerInfo, Port, Question};

/// LDK's log lines, into ours under the `lightning` source.
pub struct LdkLog {
    pub(crate) log: SourceLog,
    /// Unfunded channels the engine is dropping on purpose (their peer left before
    /// accepting, or no funding will come): LDK logs their removal as an error
    /// ("Force-closing channel"), but nothing was ever at stake.
    dropping: Mutex<HashSet<ChannelId>>,
    /// Our opens whose funding is not broadcast yet (`fundchannel` in progress), by their
    /// temporary id: a peer that refuses one (its policy, its plugin) makes LDK "force-close"
    /// a channel that never held funds; that is the refusal `fundchannel` reports, logged
    /// at `unusual`.
    opening: Mutex<HashSet<ChannelId>>,
}

impl LdkLog {
    /// LDK's lines into `log`.
    pub fn new(log: SourceLog) -> Self {
        LdkLog {
            log,
            dropping: Mutex::new(HashSet::new()),
            opening: Mutex::new(HashSet::new()),
        }
    }

    /// Marks our outbound channel `id` (temporary) as unfunded until [`LdkLog::funded`].
    pub(crate) fn opening(&self, id: ChannelId) {
        self.opening
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id);
    }

    /// The open of `id` ended: broadcast, refused or abandoned.
    pub(crate) fn funded(&self, id: ChannelId) {
        self.opening
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id);
    }

    /// Runs `drop` (which removes the unfunded channel `id`) with its LDK error lines
    /// logged at info.
    pub(crate) fn dropping_unfunded<T>(&self, id: ChannelId, drop: impl FnOnce() -> T) -> T {
        self.dropping
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id);
        let out = drop();
        self.dropping
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id);
        out
    }
}

impl LdkLogger for LdkLog {
    fn log(&self, r: LdkRecord) {
        let level = match r.level {
            LdkLevel::Gossip | LdkLevel::Trace | LdkLevel::Debug => Level::Debug,
            LdkLevel::Info => Level::Info,
            LdkLevel::Warn => Level::Unusual,
            LdkLevel::Error => Level::Broken,
        };
        // `ChainMonitor::flush` says at info that it applies the queued monitor updates,
        // which the engine loop has it do at every manager write: a debug detail here.
        let level = if level == Level::Info
            && r.channel_id.is_none()
            && r.module_path.ends_with("chainmonitor")
        {
            Level::Debug
        } else {
            level
        };
        let about = |set: &Mutex<HashSet<ChannelId>>| {
            r.channel_id
                .is_some_and(|c| set.lock().unwrap_or_else(|p| p.into_inner()).contains(&c))
        };
        let level = if level == Level::Broken && about(&self.dropping) {
            Level::Info
        } else if level == Level::Broken && about(&self.opening) {
            Level::Unusual
        } else {
            level
        };
        // LDK logs every message it handles: format only what is kept.
        if !self.log.wants(level) {
            return;
        }
        let msg = match r.peer_id {
            Some(p) => format!("{p}: {}", r.args),
            None => format!("{}", r.args),
        };
        // Races LDK reports as errors but resolves by itself: not for `broken`, which
        // operators watch for real faults.
        let level = if level == Level::Broken && BENIGN_LDK_ERRORS.iter().any(|b| msg.contains(b)) {
            Level::Unusual
        } else if level == Level::Broken && QUIET_LDK_ERRORS.iter().any(|b| msg.contains(b)) {
            Level::Debug
        } else {
            level
        };
        if level == Level::Debug && !self.log.wants(level) {
            return;
        }
        self.log.log(level, &msg);
    }
}

/// LDK errors about a peer's ordinary request that LDK declines, seen on every connection
/// to some implementations: logged at `debug`.
const QUIET_LDK_ERRORS: &[&str] = &[
    // CLN sends peer_storage to every peer that offers to keep it (option_provide_storage);
    // LDK keeps it only for peers with a funded channel and answers the others with a
    // warning, which CLN ignores.
    "Ignoring peer_storage message, as peer storage is currently supported only for peers with an active funded channel",
    "Supports only data up to",
];

/// LDK error messages that describe a harmless race or an ordinary decision (logged as
/// `unusual`).
const BENIGN_LDK_ERRORS: &[&str] = &[
    // The peer saw the sixth confirmation before us; it sends the signatures again.
    "announcement_signatures prior to the required six confirmations",
    // The peer's announcement_signatures crossed our shutdown (a close right after the
    // sixth confirmation): a closing channel is not announced, LDK ignores them.
    "Got an announcement_signatures before we were ready for it",
    // The same race on a zero-conf channel: the peer announces before we have seen the
    // funding confirm (our scid is still unknown); the signatures come again.
    "which does not match our current short_channel_id None",
    // Fulgurd refused an inbound channel (plugin veto, reserve): LDK drops the unaccepted
    // request, no channel ever existed. A real channel's force-close logs "Force-closing
    // channel" and stays broken.
    "Force-closing inbound channel request",
    // We refused a peer's open below `--min-capacity-sat`: the peer is told, nothing existed.
    "is less than the user specified limit",
    // A cooperative close, logged on both peers as "Closed channel due to close-required
    // error: Coop Closed" and "Closing channel: Coop Closed".
    ": Coop Closed",
    // A commitment or closing transaction confirmed while the channel was open here: the
    // peer force-closed while we were away (or cheated, which the monitor punishes).
    // CLN logs a peer's unilateral close at UNUSUAL ("Peer permanent failure").
    "Channel closed because commitment or closing transaction was confirmed on chain",
    // A payment sent while its first hop's peer is away (a restart, a crash): LDK fails
    // that path, and `waitsendpay`/`pay` report the failure to their caller.
    "Peer for first hop currently disconnected",
    // `sendpay` pays its caller's route once; LDK's retry finds no other and abandons the
    // payment, which is reported as failed. Nothing is wrong with the node.
    "Can't use this router to return multiple routes",
    // `keysend` asked for a payment no route can carry (unknown destination, too little
    // liquidity, fees over its limit): the caller gets CLN's "no route" error.
    "Failed to find route for payment with id",
    // A peer reestablishes a channel we do not have (our state was lost: emergency
    // recovery): LDK answers with the reestablish that makes the peer close, which is
    // what recovery wants (`recovery.rs`).
    "Got a message for a channel from the wrong node! No such channel_id",
    // The other side of it: a peer that lost our channel's state asks us to close with
    // commitment numbers 0, and LDK does (CLN logs this "bad reestablish" at UNUSUAL).
    "Peer sent an invalid channel_reestablish to force close in a non-standard way",
];

/// LDK's logger.
pub type Log = Arc<LdkLog>;
/// LDK's network graph (owned by the [`graph::Graph`] service).
pub type NetGraph = NetworkGraph<Log>;
/// Gossip: the graph fed by peers, announcements checked against the chain.
pub type Gossip = P2PGossipSync<Arc<NetGraph>, Arc<dyn UtxoLookup + Send + Sync>, Log>;
/// The payment scorer.
pub type Scorer = ProbabilisticScorer<Arc<NetGraph>, Log>;
/// LDK's router (used for its own retries; `getroute` calls `find_route` directly).
pub type Router = DefaultRouter<
    Arc<NetGraph>,
    Log,
    Arc<KeysManager>,
    Arc<RwLock<Scorer>>,
    ProbabilisticScoringFeeParameters,
    Scorer,
>;
type MsgRouter = DefaultMessageRouter<Arc<NetGraph>, Log, Arc<KeysManager>>;
/// The chain monitor.
pub type Monitor = ChainMonitor<
    InMemorySigner,
    Arc<dyn Filter + Send + Sync>,
    Arc<Broadcaster>,
    Arc<FeeCache>,
    Log,
    Arc<watchtower::Watchtower>,
    Arc<KeysManager>,
>;
/// Persists channel monitors as small updates on top of a full copy written every
/// [`MONITOR_UPDATES_PER_FULL_WRITE`] updates (LDK's `MonitorUpdatingPersister`), so a payment
/// writes a few hundred bytes per monitor update instead of the whole, ever-growing monitor.
pub type MonitorPersister = lightning::util::persist::MonitorUpdatingPersister<
    Arc<SqliteKvStore>,
    Log,
    Arc<KeysManager>,
    Arc<KeysManager>,
    Arc<Broadcaster>,
    Arc<FeeCache>,
>;
/// How many monitor updates are kept before the full monitor is written again.
pub const MONITOR_UPDATES_PER_FULL_WRITE: u64 = 100;
/// The channel manager.
pub type Manager = ChannelManager<
    Arc<Monitor>,
    Arc<Broadcaster>,
    Arc<KeysManager>,
    Arc<KeysManager>,
    Arc<KeysManager>,
    Arc<FeeCache>,
    Arc<Router>,
    Arc<MsgRouter>,
    Log,
>;
/// LDK's sweeper of closed channels' outputs into the wallet.
pub type Sweeper = lightning::util::sweep::OutputSweeperSync<
    Arc<Broadcaster>,
    Arc<channels::WalletDestination>,
    Arc<FeeCache>,
    Arc<dyn Filter + Send + Sync>,
    Arc<SqliteKvStore>,
    Log,
    Arc<KeysManager>,
>;
/// Fee bumps of anchor channels (CPFP of commitments, fees of zero-fee HTLC transactions)
/// from the wallet's confirmed coins.
pub type Bumper = lightning::events::bump_transaction::sync::BumpTransactionEventHandlerSync<
    Arc<Broadcaster>,
    Arc<crate::wallet::bump::BumpCoins<Log>>,
    Arc<KeysManager>,
    Log,
>;
/// The peer manager.
pub type Peers = PeerManager<
    SocketDescriptor,
    Arc<Manager>,
    Arc<Gossip>,
    Arc<IgnoringMessageHandler>,
    Log,
    Arc<PeerWatcher>,
    Arc<KeysManager>,
    Arc<Outbox>,
>;

/// Locks `m`, taking the data of a mutex poisoned by a panic elsewhere (a panic stops the
/// process anyway; the engine never leaves shared state half-written across one).
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// What the engine needs from the node.
pub struct Deps {
    /// The seed.
    pub seed: [u8; 32],
    /// The network.
    pub network: bitcoin::Network,
    /// The block stream.
    pub chain: Arc<Chain>,
    /// The database.
    pub store: crate::store::Store,
    /// The time of day (expiry, timestamps).
    pub clock: Arc<dyn fulgur_base::clock::Clock>,
    /// The node's plugins (notifications, hooks), as the engine sees them.
    pub port: Arc<dyn Port>,
    /// Our log under `lightning`.
    pub log: SourceLog,
    /// Announced addresses (`--addr`, `--announce-addr`).
    pub announce: Vec<net::NetAddr>,
    /// The on-chain wallet (funding, closing and swept outputs).
    pub wallet: Arc<crate::wallet::Wallet>,
    /// `--hold-safety-blocks`.
    pub hold_safety_blocks: u32,
    /// `--offline`: channel peers are not reconnected.
    pub offline: bool,
    /// `--proxy` and `--always-use-proxy`: the SOCKS5 proxy outbound connections use.
    pub proxy: Option<net::Proxy>,
    /// Whether peers' host names may be resolved here (not with `--disable-dns`).
    pub use_dns: bool,
    /// `--invoices-onchain-fallback`: invoices carry a wallet address that pays them.
    pub onchain_fallback: bool,
    /// `--announce-addr-discovered` and its port.
    pub discovery: discovery::Discovery,
    /// The channel options (`--max-concurrent-htlcs`, `--fee-base`, `--cltv-delta`...).
    pub channels: ChannelSettings,
    /// Our alias (`--alias`).
    pub alias: String,
    /// Our color, six hex digits (`--rgb`).
    pub color: String,
    /// `emergency.recover`, kept current with the channels (`None`: none kept).
    pub recover_file: Option<std::path::PathBuf>,
}

/// The running engine: LDK's objects, and the services that own the node's own state
/// ([`invoices::Invoices`], [`payments::Payments`], [`forwards::Forwards`], the closed
/// channels' [`closed::Closed`], the opens and channel configuration of
/// [`channels::Channels`], the network graph and scorer of [`graph::Graph`]). Its methods
/// are the orchestration that needs LDK:
/// creating an invoice, sending a part, handling LDK's events, opening and closing.
///
/// # Lock order
///
/// Every lock of ours is a leaf (taken alone, held for a few statements, never across an
/// await or a database call), with one exception:
///
/// 1. `persist_lock` (one manager writer at a time) is taken first, and under it
///    2. `held_resolved`, then LDK's own locks (encoding the manager, flushing the monitor).
///
/// So: never take `persist_lock` while holding any other lock of ours. LDK calls back into
/// [`LdkLog`] (its `dropping` set), the [`Outbox`] queue and [`PeerWatcher`] while holding
/// its own locks; these stay leaves, and no lock of ours is held while calling LDK's
/// `ChannelManager` or `PeerManager` (rust-lightning's `channelmanager.rs` documents the
/// order inside). The services' locks are leaves too (each service documents its own); the
/// scorer's `RwLock` in [`graph::Graph`] is LDK's router's as well, and nothing of ours is
/// locked under it.
pub struct Lightning {
    /// The channel manager.
    pub(crate) manager: Arc<Manager>,
    /// The chain monitor.
    pub(crate) monitor: Arc<Monitor>,
    /// The peer manager.
    pub(crate) peers: Arc<Peers>,
    /// Keys from `hsm_secret` (node key, signing, entropy).
    pub(crate) keys: Arc<KeysManager>,
    /// The network graph and the payment scorer, with their views, routes and upkeep.
    pub(crate) graph: graph::Graph,
    /// Gossip handling (what peers send; `addgossip` feeds it too).
    pub(crate) gossip: Arc<Gossip>,
    /// Connections made, lost and failed (`listnetworkevents`).
    pub(crate) netevents: netevents::NetworkEvents,
    /// The database (our own tables beside LDK's key-value store).
    pub(crate) store: crate::store::Store,
    /// The node's plugins: notifications and hooks.
    pub(crate) port: Arc<dyn Port>,
    /// The block stream (height, fees, broadcaster).
    pub(crate) chain: Arc<Chain>,
    /// The on-chain wallet.
    pub(crate) wallet: Arc<crate::wallet::Wallet>,
    /// The network.
    pub(crate) network: bitcoin::Network,
    /// The time of day (the services have it too).
    pub(crate) clock: Arc<dyn fulgur_base::clock::Clock>,
    /// Invoices: their table, expiry and waiters.
    pub(crate) invoices: invoices::Invoices,
    /// Outgoing payments: their table, waiters and what they keep in memory.
    pub(crate) payments: payments::Payments,
    /// Spends closed channels' outputs into the wallet.
    pub(crate) sweeper: Arc<Sweeper>,
    /// Handles `Event::BumpTransaction` with wallet coins.
    pub(crate) bumper: Bumper,
    /// Opens in progress, the channel configuration, the wallet address closes pay to.
    pub(crate) channels: channels::Channels,
    /// HTLCs waiting for `htlc_accepted`, with their deadline heights.
    pub(crate) held: htlcs::HeldMap,
    /// Held HTLCs decided since the last channel manager write: their replay records go
    /// once a manager that knows the decision is stored (`htlcs.rs`).
    held_resolved: Mutex<Vec<String>>,
    /// Preimages we claimed with, until LDK confirms the claim.
    pub(crate) claimed: Mutex<std::collections::HashMap<[u8; 32], [u8; 32]>>,
    /// `--hold-safety-blocks`.
    pub(crate) hold_safety_blocks: u32,
    /// `--offline`.
    offline: bool,
    /// `graceful` was called: no new forwards, no reconnections (`graceful.rs`).
    graceful: std::sync::atomic::AtomicBool,
    /// `--proxy`, `--always-use-proxy` ([`net::route`] says which connections use it).
    proxy: Option<net::Proxy>,
    /// Whether host names may be resolved here (`--disable-dns` clears it).
    use_dns: bool,
    /// `--invoices-onchain-fallback`.
    pub(crate) onchain_fallback: bool,
    /// `--announce-addr-discovered`, and what peers said they see us at.
    discovery: discovery::Discovery,
    discovered: discovery::Discovered,
    /// HTLC counters not written yet (`history.rs`).
    htlc_counts: history::PendingCounts,
    /// Closed channels still resolving, and snapshots of open ones (`closed.rs`).
    pub(crate) closed: closed::Closed,
    /// Static channel backups, `emergency.recover` and the channels being recovered.
    pub(crate) recovery: recovery::Recovery,
    /// Forwards: their table, notifications and the fees they earned.
    pub(crate) forwards: forwards::Forwards,
    alias: String,
    color: String,
    /// Peers we connected to: node id → address (an IP address, or a name reached through
    /// the proxy), for reconnecting channel peers.
    peer_addrs: Mutex<std::collections::HashMap<PublicKey, net::NetAddr>>,
    /// Channel peers whose reconnection failed: when to try again, and the delay that
    /// doubles at each failure (from [`RECONNECT_FIRST`] up to [`RECONNECT_MAX`]), as CLN
    /// backs off; each failed attempt is a `connect_fail` network event.
    reconnect_after: Mutex<std::collections::HashMap<PublicKey, (Instant, Duration)>>,
    kv: Arc<SqliteKvStore>,
    /// LDK's logger (for calls that take one).
    ldk_log: Log,
    outbox: Arc<Outbox>,
    watcher: Arc<PeerWatcher>,
    log: SourceLog,
    /// Where peers can reach us (`--addr`, `--announce-addr`).
    pub(crate) announce: Vec<net::NetAddr>,
    persist_lock: Mutex<()>,
    /// Set by [`Lightning::stop`] once its last writes are done: nothing is written after
    /// them (the plugins, a `db_write` backup among them, are stopped next).
    stopped: std::sync::atomic::AtomicBool,
}

impl Lightning {
    /// Waits for the block stream's tip, builds the engine and starts its background task.
    pub async fn start(deps: Deps) -> Result<Arc<Lightning>, String> {
        let tip = loop {
            if let Some(t) = deps.chain.tip() {
                break t;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        let log = Arc::new(LdkLog::new(deps.log.clone()));
        let keys = Arc::new(keys::keys_manager(&deps.seed).map_err(|e| e.to_string())?);
        // LDK's writes on a connection of their own (PostgreSQL; the same one on SQLite).
        let kv = Arc::new(SqliteKvStore::new(
            deps.store.own_connection().map_err(|e| e.to_string())?,
        ));
        let fees = deps.chain.fees();
        let broadcaster = deps.chain.broadcaster();
        let peer_storage_key = keys.get_peer_storage_key();
        let persister = Arc::new(MonitorPersister::new(
            kv.clone(),
            log.clone(),
            MONITOR_UPDATES_PER_FULL_WRITE,
            keys.clone(),
            keys.clone(),
            broadcaster.clone(),
            fees.clone(),
        ));
        // Closed channels' outputs and watchtower penalties pay to this wallet address.
        let (dest, _) = deps
            .wallet
            .new_address(crate::wallet::AddrRequest::Bech32)
            .await
            .map_err(|e| format!("wallet address for closes: {e}"))?;
        let dest = dest.ok_or("the wallet gave no address")?;
        let destination = Arc::new(channels::WalletDestination(Mutex::new(
            dest.script_pubkey(),
        )));
        let (penalties, signed_penalties) = tokio::sync::mpsc::unbounded_channel();
        for r in watchtower::undelivered(&deps.store)
            .await
            .map_err(|e| format!("reading penalty transactions: {e}"))?
        {
            let _ = penalties.send(r);
        }
        let watchtower = Arc::new(watchtower::Watchtower::new(
            persister.clone(),
            deps.store.clone(),
            deps.port.clone(),
            fees.clone(),
            dest.script_pubkey(),
            penalties,
            deps.log.clone(),
        ));
        tokio::spawn(watchtower::deliver(
            deps.store.clone(),
            deps.port.clone(),
            deps.log.clone(),
            signed_penalties,
        ));
        let monitor: Arc<Monitor> = Arc::new(ChainMonitor::new(
            None,
            broadcaster.clone(),
            log.clone(),
            fees.clone(),
            watchtower,
            keys.clone(),
            peer_storage_key,
            // Deferred: monitor updates wait in the chain monitor until the engine loop has
            // written a channel manager that knows them (`persist_manager_then_monitors`),
            // so a stored monitor is never ahead of the stored manager.
            true,
        ));
        let graph = Arc::new(duties::read_graph(&kv, deps.network, &log, &deps.log));
        let scorer = duties::read_scorer(&kv, &graph, &log, &deps.log);
        let scorer = Arc::new(RwLock::new(scorer));
        let router = Arc::new(DefaultRouter::new(
            graph.clone(),
            log.clone(),
            keys.clone(),
            scorer.clone(),
            ProbabilisticScoringFeeParameters::default(),
        ));
        let utxos: Arc<dyn UtxoLookup + Send + Sync> = Arc::new(gossip::ChainUtxos::new(
            deps.chain.clone(),
            deps.network,
            log.clone(),
        ));
        let gossip: Arc<Gossip> =
            Arc::new(P2PGossipSync::new(graph.clone(), Some(utxos), log.clone()));
        let msg_router = Arc::new(DefaultMessageRouter::new(graph.clone(), keys.clone()));
        let config = user_config(&deps.channels);

        let mut monitors = persister
            .read_all_channel_monitors_with_updates()
            .map_err(|e| format!("reading channel monitors: {e}"))?;
        let stored = match kv.read(
            CHANNEL_MANAGER_PERSISTENCE_PRIMARY_NAMESPACE,
            CHANNEL_MANAGER_PERSISTENCE_SECONDARY_NAMESPACE,
            CHANNEL_MANAGER_PERSISTENCE_KEY,
        ) {
            Ok(b) => Some(b),
            Err(e) if e.kind() == lightning::io::ErrorKind::NotFound => None,
            Err(e) => return Err(format!("reading the channel manager: {e}")),
        };
        // The channel manager's parts, whether it is read back or new.
        let manager_parts = || {
            (
                fees.clone(),
                monitor.clone(),
                broadcaster.clone(),
                router.clone(),
                msg_router.clone(),
                log.clone(),
            )
        };
        let manager: Arc<Manager> = match stored {
            Some(bytes) => {
                let (f, m, b, r, mr, l) = manager_parts();
                let args = ChannelManagerReadArgs::new(
                    keys.clone(),
                    keys.clone(),
                    keys.clone(),
                    f,
                    m,
                    b,
                    r,
                    mr,
                    l,
                    config.clone(),
                    monitors.iter().map(|(_, m)| m).collect(),
                );
                let (_, cm) =
                    <(BlockLocator, Manager)>::read(&mut lightning::io::Cursor::new(&bytes), args)
                        .map_err(|e: DecodeError| format!("reading the channel manager: {e:?}"))?;
                deps.log.info(&format!(
                    "Channel manager read from the store (best block {})",
                    cm.current_best_block().height
                ));
                Arc::new(cm)
            }
            None => {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs() as u32)
                    .unwrap_or(0);
                deps.log
                    .info(&format!("New channel manager at block {}", tip.1));
                let (f, m, b, r, mr, l) = manager_parts();
                Arc::new(ChannelManager::new(
                    f,
                    m,
                    b,
                    r,
                    mr,
                    l,
                    keys.clone(),
                    keys.clone(),
                    keys.clone(),
                    config.clone(),
                    ChainParameters {
                        network: deps.network,
                        best_block: BlockLocator::new(tip.0, tip.1),
                    },
                    now,
                ))
            }
        };
        for (_, m) in monitors.drain(..) {
            let id = m.channel_id();
            lightning::chain::Watch::watch_channel(&*monitor, id, m)
                .map_err(|()| format!("channel monitor {id} refused"))?;
        }
        // The chain monitor defers every operation until it is flushed. These monitors come
        // from the store and the manager just read knows them, so they are applied at once:
        // before the chain monitor joins the block stream, which it must not do without them.
        monitor.flush(monitor.pending_operation_count(), &log);
        let best = manager.current_best_block();
        deps.chain
            .add_listener("channel_manager", manager.clone(), Some(best));
        // No channel can exist yet (opening channels is the next slice), so the monitors
        // start where the manager is; per-monitor best blocks come with channels.
        deps.chain
            .add_listener("chain_monitor", monitor.clone(), Some(best));

        // The output sweeper's parts, whether it is read back or new.
        let sweeper_parts = || {
            (
                broadcaster.clone(),
                fees.clone(),
                None,
                keys.clone(),
                destination.clone(),
                kv.clone(),
                log.clone(),
            )
        };
        let sweeper: Arc<Sweeper> = match kv.read(
            OUTPUT_SWEEPER_PERSISTENCE_PRIMARY_NAMESPACE,
            OUTPUT_SWEEPER_PERSISTENCE_SECONDARY_NAMESPACE,
            OUTPUT_SWEEPER_PERSISTENCE_KEY,
        ) {
            Ok(mut bytes) => {
                // Outputs paying to the wallet, which LDK cannot sign (see `sweep.rs`).
                let owns = |s: &bitcoin::Script| deps.wallet.owns_script(s);
                if let Some((repaired, dropped)) = sweep::without_wallet_outputs(&bytes, &owns) {
                    for o in &dropped {
                        deps.log.info(&format!(
                            "Output {} pays to our wallet already: no longer sweeping it",
                            o.descriptor.spendable_outpoint()
                        ));
                    }
                    kv.write(
                        OUTPUT_SWEEPER_PERSISTENCE_PRIMARY_NAMESPACE,
                        OUTPUT_SWEEPER_PERSISTENCE_SECONDARY_NAMESPACE,
                        OUTPUT_SWEEPER_PERSISTENCE_KEY,
                        repaired.clone(),
                    )
                    .map_err(|e| format!("writing the output sweeper: {e}"))?;
                    bytes = repaired;
                }
                let (_, sw) = <(BlockLocator, Sweeper)>::read(
                    &mut lightning::io::Cursor::new(&bytes),
                    sweeper_parts(),
                )
                .map_err(|e| format!("reading the output sweeper: {e:?}"))?;
                Arc::new(sw)
            }
            Err(e) if e.kind() == lightning::io::ErrorKind::NotFound => {
                let (b, f, filter, k, d, store, l) = sweeper_parts();
                Arc::new(lightning::util::sweep::OutputSweeperSync::new(
                    best, b, f, filter, k, d, store, l,
                ))
            }
            Err(e) => return Err(format!("reading the output sweeper: {e}")),
        };
        let sweeper_best = sweeper.current_best_block();
        deps.chain
            .add_listener("output_sweeper", sweeper.clone(), Some(sweeper_best));

        let (custom_in, mut custom_rx) =
            tokio::sync::mpsc::unbounded_channel::<(PublicKey, u16, String)>();
        {
            let port = deps.port.clone();
            tokio::spawn(async move {
                while let Some((from, ty, payload)) = custom_rx.recv().await {
                    port.custommsg(from, ty, payload).await;
                }
            });
        }
        let watcher = Arc::new(PeerWatcher {
            engine: OnceLock::new(),
            outgoing: Mutex::new(vec![]),
            custom_in,
            port: deps.port.clone(),
            log: deps.log.clone(),
            handle: tokio::runtime::Handle::current(),
        });
        let outbox = Arc::new(Outbox {
            monitor: monitor.clone(),
            queue: Mutex::new(vec![]),
        });
        let ephemeral = keys.get_secure_random_bytes();
        let peers = Arc::new(PeerManager::new(
            MessageHandler {
                chan_handler: manager.clone(),
                route_handler: gossip.clone(),
                onion_message_handler: Arc::new(IgnoringMessageHandler {}),
                custom_message_handler: watcher.clone(),
                send_only_message_handler: outbox.clone(),
            },
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs() as u32)
                .unwrap_or(0),
            &ephemeral,
            log.clone(),
            keys.clone(),
        ));
        // What each service is built from: the database, the clock, the plugins, the log.
        let parts = || {
            (
                deps.store.clone(),
                deps.clock.clone(),
                deps.port.clone(),
                deps.log.clone(),
            )
        };
        let (store, clock, port, slog) = parts();
        let forwards = forwards::Forwards::open(store, clock, port, slog)
            .await
            .map_err(|e| format!("reading forwards: {e}"))?;
        let (store, clock, port, slog) = parts();
        let closed = closed::Closed::open(store, clock, port, slog)
            .await
            .map_err(|e| format!("reading closed channels: {e}"))?;
        let (store, clock, port, slog) = parts();
        let invoices = invoices::Invoices::new(store, clock, port, slog);
        let (store, clock, port, slog) = parts();
        let payments = payments::Payments::new(store, clock, port, slog);
        let bumper = Bumper::new(
            broadcaster.clone(),
            Arc::new(crate::wallet::bump::BumpCoins::new(
                deps.wallet.clone(),
                log.clone(),
                deps.log.clone(),
            )),
            keys.clone(),
            log.clone(),
        );
        let engine = Arc::new(Lightning {
            manager,
            monitor,
            peers,
            keys,
            graph: graph::Graph::new(graph, scorer, kv.clone(), deps.log.clone()),
            gossip: gossip.clone(),
            netevents: netevents::NetworkEvents::start(
                deps.store.clone(),
                deps.log.clone(),
                deps.clock.clone(),
            ),
            store: deps.store.clone(),
            port: deps.port.clone(),
            chain: deps.chain.clone(),
            wallet: deps.wallet.clone(),
            network: deps.network,
            clock: deps.clock.clone(),
            invoices,
            payments,
            sweeper,
            bumper,
            channels: channels::Channels::new(config, destination),
            held: Mutex::new(Default::default()),
            held_resolved: Mutex::new(Vec::new()),
            claimed: Mutex::new(Default::default()),
            hold_safety_blocks: deps.hold_safety_blocks,
            offline: deps.offline,
            graceful: std::sync::atomic::AtomicBool::new(false),
            proxy: deps.proxy.clone(),
            use_dns: deps.use_dns,
            onchain_fallback: deps.onchain_fallback,
            discovery: deps.discovery,
            discovered: discovery::Discovered::default(),
            htlc_counts: Default::default(),
            forwards,
            closed,
            recovery: recovery::Recovery::new(
                deps.recover_file.clone(),
                &keys::secret_base(&deps.seed),
            ),
            alias: deps.alias.clone(),
            color: deps.color.clone(),
            peer_addrs: Mutex::new(Default::default()),
            reconnect_after: Mutex::new(Default::default()),
            kv,
            ldk_log: log.clone(),
            outbox,
            watcher: watcher.clone(),
            log: deps.log.clone(),
            announce: deps.announce,
            persist_lock: Mutex::new(()),
            stopped: std::sync::atomic::AtomicBool::new(false),
        });
        let _ = watcher.engine.set(Arc::downgrade(&engine));
        // While an anchor channel exists (or still has funds to claim on chain), wallet
        // spends leave `--min-emergency-msat` for its fee bumps.
        let weak = Arc::downgrade(&engine);
        deps.wallet.on_anchor_channels(Box::new(move || {
            weak.upgrade().is_some_and(|e| e.has_anchor_channels())
        }));
        engine.persist_manager_then_monitors(Durability::Synced);
        engine.replay_held().await;
        engine.snapshot_channels();
        engine.watch_closing_broadcasts();
        engine.closed_catch_up();
        // From the manager's best block, so blocks mined while we were down (or before the
        // listener joins the stream) still move closed channels on and forget them.
        deps.chain.add_listener(
            "closed_channels",
            Arc::new(closed::ClosedWatch(Arc::downgrade(&engine))),
            Some(best),
        );
        // Channels being recovered from a backup: their closes, from the same block.
        engine.load_stubs();
        engine.refresh_recover_file_logged();
        deps.chain.add_listener(
            "recovery",
            Arc::new(recovery::RecoveryWatch(Arc::downgrade(&engine))),
            Some(best),
        );
        engine.resume_recovery();
        tokio::spawn(background(Arc::downgrade(&engine)));
        tokio::spawn(movements::balance_snapshots(
            Arc::downgrade(&engine),
            deps.chain.watch_heights(),
        ));
        Ok(engine)
    }

    /// Whether an anchor channel is open or opening, or a closed one still has outputs to
    /// claim on chain (its HTLC transactions and commitment may need wallet fees).
    pub fn has_anchor_channels(&self) -> bool {
        let anchors = |t: &lightning::types::features::ChannelTypeFeatures| {
            t.supports_anchors_zero_fee_htlc_tx()
        };
        self.manager
            .list_channels()
            .iter()
            .any(|c| c.channel_type.as_ref().is_some_and(anchors))
            || self.monitor.list_monitors().into_iter().any(|id| {
                self.monitor.get_monitor(id).is_ok_and(|m| {
                    anchors(&m.channel_type_features()) && !m.get_claimable_balances().is_empty()
                })
            })
    }

    /// Our node id.
    pub fn keys_node_id(&self) -> PublicKey {
        self.manager.get_our_node_id()
    }

    /// Writes the channel manager, then applies the monitor updates LDK queued before the
    /// write (the chain monitor is deferred). Returns whether the manager was written; if
    /// not, the updates stay queued (their channels wait) and the next call tries again.
    ///
    /// This order is what keeps a crash from force-closing channels: LDK force-closes at
    /// start any channel whose stored manager is behind its stored monitor
    /// (`ClosureReason::OutdatedChannelManager`), while a manager ahead of its monitor is
    /// fine (it holds the updates still in flight and replays them). A monitor update is
    /// written only after a manager that contains it, and LDK sends nothing that depends
    /// on an update before the update completes, which `flush` reports. The manager write
    /// may be [`Durability::Relaxed`]: the monitor updates that follow it are synced
    /// commits on the same SQLite WAL, which make it durable first.
    pub fn persist_manager_then_monitors(&self, durability: Durability) -> bool {
        // One writer at a time (the loop, `stop`): the count and the flush belong together.
        let _g = self.persist_lock.lock().unwrap_or_else(|p| p.into_inner());
        if self.stopped.load(std::sync::atomic::Ordering::Acquire) {
            return true;
        }
        let queued = self.monitor.pending_operation_count();
        // Decided before the manager is encoded, so the manager written knows them.
        let resolved =
            std::mem::take(&mut *self.held_resolved.lock().unwrap_or_else(|p| p.into_inner()));
        if !self.write_manager(durability) {
            self.held_resolved
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .extend(resolved);
            return false;
        }
        if queued > 0 {
            self.monitor.flush(queued, &self.ldk_log);
        }
        self.forget_resolved_held(resolved);
        true
    }

    /// Writes the channel manager; returns whether it was written (see
    /// [`Lightning::persist_manager_then_monitors`], the only caller).
    ///
    /// The engine loop writes it after a change, as LDK's background processor does (at
    /// most every [`MANAGER_WRITE_GAP`] unless monitor updates wait for it), but
    /// [`Durability::Relaxed`]: committed without waiting for an fsync. A `kill -9` or
    /// crash of fulgurd loses nothing (the commit is in the WAL), and the next monitor
    /// update, which is always synced, makes it durable against power loss too. Otherwise
    /// the loop writes it again synced when it goes idle (and at least every
    /// [`MANAGER_SYNC_WITHIN`]), and `stop` writes it synced. One fsync per manager change
    /// cost as much as the monitor updates themselves.
    fn write_manager(&self, durability: Durability) -> bool {
        let buf = self.manager.encode();
        let written = match durability {
            Durability::Synced => self.kv.write(
                CHANNEL_MANAGER_PERSISTENCE_PRIMARY_NAMESPACE,
                CHANNEL_MANAGER_PERSISTENCE_SECONDARY_NAMESPACE,
                CHANNEL_MANAGER_PERSISTENCE_KEY,
                buf,
            ),
            Durability::Relaxed => self.kv.write_relaxed(
                (
                    CHANNEL_MANAGER_PERSISTENCE_PRIMARY_NAMESPACE,
                    CHANNEL_MANAGER_PERSISTENCE_SECONDARY_NAMESPACE,
                ),
                CHANNEL_MANAGER_PERSISTENCE_KEY,
                buf,
            ),
        };
        match written {
            Ok(()) => {
                if durability == Durability::Synced {
                    self.log.debug("Channel manager stored and synced");
                }
                true
            }
            Err(e) => {
                self.log.broken(&format!(
                    "cannot persist the channel manager (monitor updates wait for it): {e}"
                ));
                false
            }
        }
    }

    /// Accepts peers on `listener` for as long as the engine lives. Peer sockets have
    /// Nagle's algorithm off (`TCP_NODELAY`, as `connect` sets too): LDK writes a
    /// commitment update as several small messages, and with Nagle on the later ones wait
    /// for the peer's delayed ACK, which added 40–120 ms to about one payment in seven.
    pub fn accept(self: &Arc<Self>, listener: tokio::net::TcpListener) {
        let me = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                let stream = match listener.accept().await {
                    Ok((s, _)) => s,
                    Err(_) => {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let Some(engine) = me.upgrade() else { return };
                let _ = stream.set_nodelay(true);
                let Ok(std_stream) = stream.into_std() else {
                    continue;
                };
                let peers = engine.peers.clone();
                tokio::spawn(lightning_net_tokio::setup_inbound(peers, std_stream));
            }
        });
    }

    /// Whether `id` is connected, or becomes so within `limit` (checked every 20 ms).
    async fn peer_connected_within(&self, id: &PublicKey, limit: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if self.peers.peer_by_node_id(id).is_some() {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The addresses to dial for `target`, in order: CLN's rules ([`net::route`]): a
    /// `.onion` through the proxy (an error without one), everything through it with
    /// `--always-use-proxy` (nothing resolved here), otherwise IP addresses as they are and
    /// names resolved here. The error is `connect`'s whole text, in CLN's words.
    pub async fn dials(&self, target: &net::NetAddr) -> Result<Vec<net::Dial>, String> {
        match net::route(target, self.proxy.as_ref()) {
            Ok(net::Route::Dial(d)) => Ok(vec![d]),
            // As CLN: `localhost` is resolved even without DNS.
            Ok(net::Route::Resolve) if !self.use_dns && target.host != "localhost" => Err(format!(
                "Unable to connect: All addresses failed: {}: dns disabled. ",
                net::Dial::Proxied(target.clone())
            )),
            Ok(net::Route::Resolve) => {
                let lookup = net::Dial::Proxied(target.clone()).to_string();
                match tokio::net::lookup_host(&lookup).await {
                    Ok(a) => Ok(a.map(net::Dial::Direct).collect()),
                    Err(e) => Err(format!(
                        "Unable to connect, could not resolve {lookup}: {e}"
                    )),
                }
            }
            Err(e) => Err(format!("Unable to connect: All addresses failed: {e}")),
        }
    }

    /// Connects to `id` at `addr` and waits until the peer is connected (init exchanged).
    ///
    /// A connection dropped before init is tried again for up to [`CONNECT_DROPPED_FOR`]: LDK keeps the first of
    /// two connections from one node and drops the second, so a peer that has not yet seen
    /// our previous connection die (we restarted a moment ago) drops the new one until it
    /// reads the old one's end. CLN replaces the old connection instead; either way the
    /// caller should end up connected. The same happens when our own reconnection and a
    /// `connect` race: the peer counts as connected whichever connection won.
    pub async fn connect(&self, id: PublicKey, addr: net::Dial) -> Result<(), String> {
        let began = Instant::now();
        let was_connected = self.peers.peer_by_node_id(&id).is_some();
        let r = self.connect_retrying(id, &addr).await;
        if !was_connected {
            match &r {
                Ok(()) => self.netevents.connected(id, Some(began.elapsed())),
                Err(why) => self
                    .netevents
                    .connect_failed(id, why.clone(), began.elapsed()),
            }
        }
        r
    }

    async fn connect_retrying(&self, id: PublicKey, addr: &net::Dial) -> Result<(), String> {
        let deadline = Instant::now() + CONNECT_DROPPED_FOR;
        let mut wait = Duration::from_millis(250);
        let mut attempt = 1;
        loop {
            let fail = match self.connect_once(id, addr).await {
                Ok(()) => break,
                Err(fail) => fail,
            };
            if !matches!(fail, ConnectFail::Dropped) {
                return Err(fail.message(addr));
            }
            // Dropped: another connection of ours (or the peer's to us) may be the one that
            // won, still exchanging init; on a loaded machine that takes a while.
            if self.peer_connected_within(&id, wait).await {
                break;
            }
            if Instant::now() >= deadline {
                return Err(fail.message(addr));
            }
            self.log.debug(&format!(
                "connect {id}: dropped before init (attempt {attempt}), trying again"
            ));
            attempt += 1;
            wait = (wait * 2).min(Duration::from_secs(2));
        }
        self.remember_peer(id, addr);
        Ok(())
    }

    /// A TCP stream to `addr`: directly, or through the SOCKS5 proxy (the exchange with it
    /// included), all within [`CONNECT_TIMEOUT_SECS`].
    async fn open_stream(&self, addr: &net::Dial) -> Result<tokio::net::TcpStream, ConnectFail> {
        let open = async {
            match addr {
                net::Dial::Direct(a) => tokio::net::TcpStream::connect(a)
                    .await
                    .map_err(|_| ConnectFail::Refused),
                net::Dial::Proxied(target) => {
                    let Some(proxy) = &self.proxy else {
                        return Err(ConnectFail::Proxy("need a proxy.".into()));
                    };
                    let at = net::Dial::Proxied(proxy.addr.clone()).to_string();
                    let mut s = tokio::net::TcpStream::connect(at.as_str())
                        .await
                        .map_err(|e| ConnectFail::Proxy(format!("proxy {at}: {e}")))?;
                    socks::connect(&mut s, &target.host, target.port)
                        .await
                        .map_err(|e| ConnectFail::Proxy(format!("proxy {at}: {e}")))?;
                    Ok(s)
                }
            }
        };
        match tokio::time::timeout(Duration::from_secs(CONNECT_TIMEOUT_SECS), open).await {
            Ok(r) => r,
            Err(_) if matches!(addr, net::Dial::Proxied(_)) => Err(ConnectFail::Proxy(
                "the proxy did not connect us in time".into(),
            )),
            Err(_) => Err(ConnectFail::Refused),
        }
    }

    /// One connection attempt: Ok once the peer is connected (by this connection or
    /// another one).
    async fn connect_once(&self, id: PublicKey, addr: &net::Dial) -> Result<(), ConnectFail> {
        if self.peers.peer_by_node_id(&id).is_some() {
            return Ok(());
        }
        let stream = self.open_stream(addr).await?;
        let _ = stream.set_nodelay(true);
        let stream = stream.into_std().map_err(|_| ConnectFail::Refused)?;
        let fut = lightning_net_tokio::setup_outbound(self.peers.clone(), id, stream);
        let mut conn = Box::pin(fut);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            tokio::select! {
                _ = &mut conn => return Err(ConnectFail::Dropped),
                _ = tokio::time::sleep(Duration::from_millis(20)) => {}
            }
            if self.peers.peer_by_node_id(&id).is_some() {
                tokio::spawn(conn);
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                return Err(ConnectFail::TimedOut);
            }
        }
    }

    /// Our channels as LDK sees them (open, opening or closing, not yet closed).
    pub fn list_channels(&self) -> Vec<lightning::ln::channel_state::ChannelDetails> {
        self.manager.list_channels()
    }

    /// The closed channels still resolving on chain (not forgotten yet).
    pub fn closed_channels(&self) -> Vec<closed::ClosedChannel> {
        self.closed.active()
    }

    /// The connected peer `id`, if it is connected.
    pub fn peer(&self, id: &PublicKey) -> Option<lightning::ln::peer_handler::PeerDetails> {
        self.peers.peer_by_node_id(id)
    }

    /// Whether `id` is connected.
    pub fn is_connected(&self, id: &PublicKey) -> bool {
        self.peers.peer_by_node_id(id).is_some()
    }

    /// Every connected peer.
    pub fn connected_peers(&self) -> Vec<lightning::ln::peer_handler::PeerDetails> {
        self.peers.list_peers()
    }

    /// Drops the connection to `id` (nothing is sent first).
    pub fn disconnect(&self, id: PublicKey) {
        self.peers.disconnect_by_node_id(id);
    }

    /// Changes the fees of channel `channel` with `peer`.
    pub fn update_channel_fees(
        &self,
        peer: &PublicKey,
        channel: ChannelId,
        update: &lightning::util::config::ChannelConfigUpdate,
    ) -> Result<(), String> {
        self.manager
            .update_partial_channel_config(peer, &[channel], update)
            .map_err(|e| api_error(&e))
    }

    /// The height of the chain's tip (0 before the first block).
    pub fn tip_height(&self) -> u32 {
        self.chain.tip().map_or(0, |(_, h)| h)
    }

    /// The network.
    pub fn network(&self) -> bitcoin::Network {
        self.network
    }

    /// The confirmations a channel opened to us or by us waits for, unless the caller says.
    pub fn default_min_depth(&self) -> u32 {
        self.channels
            .config()
            .channel_handshake_config
            .minimum_depth
    }

    /// What every settled forward earned.
    pub fn fees_collected_msat(&self) -> u64 {
        self.forwards.fees_collected_msat()
    }

    /// The addresses we announce.
    pub fn announced_addresses(&self) -> &[net::NetAddr] {
        &self.announce
    }

    /// Our feature bits (BOLT 9 contexts `init`, `node`, `channel`), little-endian as LDK
    /// keeps them.
    pub fn our_features(&self) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
        (
            self.manager.init_features().le_flags().to_vec(),
            self.manager.node_features().le_flags().to_vec(),
            self.manager.channel_features().le_flags().to_vec(),
        )
    }

    /// The node key (for `signmessage`).
    pub fn node_secret_key(&self) -> bitcoin::secp256k1::SecretKey {
        self.keys.get_node_secret_key()
    }

    /// Whether `id` is a node of the gossip graph.
    pub fn knows_node(&self, id: &PublicKey) -> bool {
        self.graph.knows_node(id)
    }

    /// Disconnects `id`, sending it `why` as a BOLT 1 warning first (when not empty).
    pub fn disconnect_with_warning(&self, id: PublicKey, why: &str) {
        if why.is_empty() {
            self.peers.disconnect_by_node_id(id);
            return;
        }
        let ev = MessageSendEvent::HandleError {
            node_id: id,
            action: ErrorAction::DisconnectPeerWithWarning {
                msg: WarningMessage {
                    channel_id: ChannelId::new_zero(),
                    data: why.to_string(),
                },
            },
        };
        self.outbox
            .queue
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(ev);
        self.peers.process_events();
    }

    /// `sendcustommsg`: queues a custom message (type and body) to a connected peer.
    pub fn send_custom(&self, peer: PublicKey, ty: u16, body: Vec<u8>) {
        self.watcher
            .outgoing
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((peer, CustomMsg { ty, body }));
        self.peers.process_events();
    }

    /// Stops the engine's network activity and persists the manager.
    pub fn stop(&self) {
        self.peers.disconnect_all_peers();
        self.write_htlc_counts();
        self.persist_manager_then_monitors(Durability::Synced);
        self.persist_graph();
        self.persist_scorer();
        // After a write the loop may be making now.
        let _g = self.persist_lock.lock().unwrap_or_else(|p| p.into_inner());
        self.stopped
            .store(true, std::sync::atomic::Ordering::Release);
    }

    /// Whether the graph has a public channel of ours but not our node announcement.
    pub(crate) fn node_announcement_missing(&self) -> bool {
        let me = lightning::routing::gossip::NodeId::from_pubkey(&self.keys_node_id());
        let graph = self.graph.network().read_only();
        graph
            .node(&me)
            .is_some_and(|n| n.announcement_info.is_none() && !n.channels.is_empty())
    }

    /// A peer told us (in `init`) the address it sees us at: when that changes the address
    /// discovered (`announce-addr-discovered`), our node is announced again with it.
    fn peer_saw_us_at(&self, peer: PublicKey, ip: std::net::IpAddr) {
        if self.discovery.mode == discovery::DiscoveryMode::Off
            || self.proxy.as_ref().is_some_and(|p| p.always)
        {
            return;
        }
        let has_channel = self
            .manager
            .list_channels()
            .iter()
            .any(|c| c.counterparty.node_id == peer);
        if self.discovered.peer_said(peer, ip, has_channel) {
            let now = self
                .discovered
                .to_announce(self.discovery, self.announce.len());
            self.log.info(&format!(
                "Update our node_announcement for discovered address: {}",
                now.iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
            self.announce_node();
        }
    }

    /// Announces our node (alias, color, addresses). LDK sends it once we have a public
    /// channel; calling it again refreshes the announcement.
    pub fn announce_node(&self) {
        let mut alias = [0u8; 32];
        let a = self.alias.as_bytes();
        alias[..a.len().min(32)].copy_from_slice(&a[..a.len().min(32)]);
        let mut rgb = [0u8; 3];
        for (i, b) in rgb.iter_mut().enumerate() {
            *b = u8::from_str_radix(self.color.get(2 * i..2 * i + 2).unwrap_or("00"), 16)
                .unwrap_or(0);
        }
        let mut addrs: Vec<lightning::ln::msgs::SocketAddress> = self
            .announce
            .iter()
            .take(100)
            .map(|a| a.to_socket_address())
            .collect();
        addrs.extend(
            self.discovered
                .to_announce(self.discovery, self.announce.len()),
        );
        self.peers.broadcast_node_announcement(rgb, alias, addrs);
    }

    const PEERS_NAMESPACE: &'static str = "fulgur_peer_addresses";

    /// Remembers where `id` was reached, for reconnecting after a restart: the address
    /// dialled (an IP address, or the name the proxy was given, never resolved here).
    pub fn remember_peer(&self, id: PublicKey, addr: &net::Dial) {
        let text = addr.to_string();
        let Ok(parsed) = net::NetAddr::parse(&text, net::DEFAULT_PORT) else {
            return;
        };
        self.peer_addrs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, parsed);
        let _ = self.kv.write(
            Self::PEERS_NAMESPACE,
            "",
            &id.to_string(),
            text.into_bytes(),
        );
    }

    /// Connects to every channel peer we are not connected to and know an address of.
    /// Nothing in offline mode (`--offline`), as CLN.
    pub async fn reconnect_channel_peers(self: &Arc<Self>) {
        if self.offline || self.is_graceful() {
            return;
        }
        let known: Vec<(PublicKey, net::NetAddr)> = {
            let mut m = self.peer_addrs.lock().unwrap_or_else(|p| p.into_inner());
            if m.is_empty()
                && let Ok(keys) = self.kv.list(Self::PEERS_NAMESPACE, "")
            {
                for k in keys {
                    let (Ok(id), Ok(v)) = (
                        k.parse::<PublicKey>(),
                        self.kv.read(Self::PEERS_NAMESPACE, "", &k),
                    ) else {
                        continue;
                    };
                    if let Some(a) = String::from_utf8(v)
                        .ok()
                        .and_then(|s| net::NetAddr::parse(&s, net::DEFAULT_PORT).ok())
                    {
                        m.insert(id, a);
                    }
                }
            }
            m.iter().map(|(k, v)| (*k, v.clone())).collect()
        };
        let mut channel_peers: std::collections::HashSet<PublicKey> = self
            .manager
            .list_channels()
            .iter()
            .map(|c| c.counterparty.node_id)
            .collect();
        // Peers of channels being recovered, until they close them.
        channel_peers.extend(self.stub_peers());
        let now = Instant::now();
        for (id, addr) in known {
            if !channel_peers.contains(&id) || self.peers.peer_by_node_id(&id).is_some() {
                lock(&self.reconnect_after).remove(&id);
                continue;
            }
            if lock(&self.reconnect_after)
                .get(&id)
                .is_some_and(|(next, _)| now < *next)
            {
                continue;
            }
            let me = self.clone();
            tokio::spawn(async move {
                // Routed again each time: `--proxy` may have changed since it was stored.
                let mut connected = false;
                for dial in me.dials(&addr).await.unwrap_or_default() {
                    if me.connect(id, dial).await.is_ok() {
                        connected = true;
                        break;
                    }
                }
                if connected {
                    lock(&me.reconnect_after).remove(&id);
                    me.log.debug(&format!("Reconnected to channel peer {id}"));
                } else {
                    let mut backoff = lock(&me.reconnect_after);
                    let delay = backoff
                        .get(&id)
                        .map_or(RECONNECT_FIRST, |(_, d)| (*d * 2).min(RECONNECT_MAX));
                    backoff.insert(id, (Instant::now() + delay, delay));
                }
            });
        }
    }
}

async fn background(engine: Weak<Lightning>) {
    // Woken by LDK as soon as it has events or needs persisting (so a payment's round trips
    // do not wait for a poll), and at least every 100 ms.
    let start = tokio::time::Instant::now();
    let dev = {
        let Some(e) = engine.upgrade() else { return };
        match duties::dev_period(std::env::var(duties::DEV_PERIOD_ENV).ok().as_deref()) {
            Ok(Some(p)) => {
                e.log.info(&format!(
                    "{}: every periodic duty runs every {} s",
                    duties::DEV_PERIOD_ENV,
                    p.as_secs()
                ));
                Some(p)
            }
            Ok(None) => None,
            Err(why) => {
                e.log.unusual(&why);
                None
            }
        }
    };
    let mut schedule = duties::Schedule::new(start, dev);
    // Since when the manager's last write has been waiting for an fsync (see
    // `Lightning::write_manager`).
    let mut unsynced_since: Option<tokio::time::Instant> = None;
    // Whether the manager changed since its last write, and when that was.
    let mut manager_dirty = false;
    let mut manager_written = start.checked_sub(MANAGER_WRITE_GAP).unwrap_or(start);
    // What the last write took: the gaps between writes grow with it.
    let mut write_cost = Duration::ZERO;
    loop {
        let (manager_wake, monitor_wake, queued) = {
            let Some(e) = engine.upgrade() else { return };
            (
                e.manager.get_event_or_persistence_needed_future(),
                e.monitor.get_update_future(),
                e.monitor.pending_operation_count() > 0,
            )
        };
        let now = tokio::time::Instant::now();
        // Something waits to be written: wake when its gap ends. Otherwise the timer firing
        // means the node is idle.
        let waiting = manager_dirty || queued;
        let wake_at = if waiting {
            manager_written + write_gap(queued, write_cost)
        } else {
            let poll = now + Duration::from_millis(100);
            schedule.next_due().map_or(poll, |t| t.min(poll))
        };
        let idle = tokio::select! {
            _ = manager_wake => false,
            _ = monitor_wake => false,
            _ = tokio::time::sleep_until(wake_at) => !waiting,
        };
        let Some(e) = engine.upgrade() else { return };
        if e.stopped.load(std::sync::atomic::Ordering::Acquire) {
            return;
        }
        // HTLCs to forward or to receive: LDK leaves the delay to us. We process them at
        // once (latency matters more here than the timing privacy a random delay adds).
        if e.manager.needs_pending_htlc_processing() {
            e.manager.process_pending_htlc_forwards();
        }
        e.manager
            .process_pending_events_async(|ev| {
                let e = e.clone();
                async move { e.handle_event(ev).await }
            })
            .await;
        e.monitor
            .process_pending_events_async(|ev| {
                let e = e.clone();
                async move { e.handle_event(ev).await }
            })
            .await;
        e.peers.process_events();
        let now = tokio::time::Instant::now();
        manager_dirty |= e.manager.get_and_clear_needs_persistence();
        let queued = e.monitor.pending_operation_count() > 0;
        if (manager_dirty || queued) && now - manager_written >= write_gap(queued, write_cost) {
            if e.persist_manager_then_monitors(Durability::Relaxed) {
                manager_dirty = false;
                unsynced_since.get_or_insert(now);
            }
            // A failed write is tried again after the gap, not at once.
            manager_written = now;
            write_cost = now.elapsed();
            if queued {
                // What the completed monitor updates released (commitment_signed,
                // revoke_and_ack...) goes out now, not at the next wake-up.
                e.peers.process_events();
            }
        }
        if unsynced_since.is_some_and(|t| idle || now - t >= MANAGER_SYNC_WITHIN)
            && e.persist_manager_then_monitors(Durability::Synced)
        {
            unsynced_since = None;
        }
        for duty in schedule.due(now) {
            e.run_duty(duty).await;
        }
    }
}

/// The gap after a manager write before the next one: [`manager_write_gap`] when only the
/// manager changed; [`monitor_flush_gap`] when monitor updates wait for it (their channels
/// are paused until then).
fn write_gap(monitor_updates_waiting: bool, last_write: Duration) -> Duration {
    if monitor_updates_waiting {
        monitor_flush_gap(last_write)
    } else {
        manager_write_gap(last_write)
    }
}

/// The gap before a manager write that monitor updates wait for: as long as the last write
/// took, and never more than [`MANAGER_WRITE_GAP`], so that under load writing the manager
/// takes at most about half of the engine loop's time while each write releases the updates
/// of every payment in flight. Every round trip of a payment waits for one such write, so
/// the gap is latency: four times the last write cost 5 ms per payment and a third of the
/// 16-in-flight rate (docs/PERFORMANCE.md, 2026-12-05).
fn monitor_flush_gap(last_write: Duration) -> Duration {
    last_write.min(MANAGER_WRITE_GAP)
}

/// Whether a write waits for its fsync.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Durable against power loss when the call returns.
    Synced,
    /// Committed (survives a crash of fulgurd), synced by the next synced commit.
    Relaxed,
}

/// Shortest time between two writes of the manager: a payment changes it at every step,
/// and it holds every payment of the last minutes (150 KB after 1,500 payments), so under
/// load it is written at most 100 times a second instead of at every step. An isolated
/// change is written at once, and the steps after it within the gap (one payment takes
/// about as long), so a crash right after a payment finds the manager as current as
/// before.
const MANAGER_WRITE_GAP: Duration = Duration::from_millis(10);

/// Longest gap between two manager writes under load.
const MANAGER_WRITE_GAP_MAX: Duration = Duration::from_millis(50);

/// The gap before the next manager write, from how long the last one took: at least
/// [`MANAGER_WRITE_GAP`], and long enough that writing the manager takes at most about 5 %
/// of the engine loop's time under load (it holds every payment of the last minutes, so a
/// busy payer's manager grows to hundreds of KB). Capped at [`MANAGER_WRITE_GAP_MAX`].
/// Under sustained load some monitor update is nearly always more recent than the last
/// manager write, whatever the gap, so a longer gap barely changes what a crash of
/// fulgurd finds stale; an isolated change is still written at once.
fn manager_write_gap(last_write: Duration) -> Duration {
    (last_write * 20).clamp(MANAGER_WRITE_GAP, MANAGER_WRITE_GAP_MAX)
}

/// Longest a relaxed manager write waits for a synced one while the node is busy.
const MANAGER_SYNC_WITHIN: Duration = Duration::from_secs(1);

/// How long `connect` waits for the TCP connection (as lightning-net-tokio's own connect).
const CONNECT_TIMEOUT_SECS: u64 = 10;

/// How long `connect` keeps trying again while the peer drops our connection before init
/// (it still holds our previous one, or another of ours won): time, not a count of
/// attempts, so that a slow machine gets as long as a fast one.
const CONNECT_DROPPED_FOR: Duration = Duration::from_secs(15);

/// Why one connection attempt failed.
enum ConnectFail {
    /// No TCP connection.
    Refused,
    /// The peer closed it before init.
    Dropped,
    /// The proxy could not be reached or would not connect us (its words).
    Proxy(String),
    /// No init within the handshake's time.
    TimedOut,
}

impl ConnectFail {
    /// What `connect` answers, with CLN's wording where it has one.
    fn message(&self, addr: &net::Dial) -> String {
        match self {
            ConnectFail::Refused => format!("All addresses failed: {addr}: Connection refused"),
            ConnectFail::Proxy(why) => format!("All addresses failed: {addr}: {why}"),
            ConnectFail::Dropped => format!("{addr}: peer disconnected during the handshake"),
            ConnectFail::TimedOut => format!("{addr}: timed out during the handshake"),
        }
    }
}

/// The first wait before reconnecting to a channel peer after a failed attempt.
const RECONNECT_FIRST: Duration = Duration::from_secs(5);
/// The longest (CLN waits up to 300 s; a minute keeps channels back sooner).
const RECONNECT_MAX: Duration = Duration::from_secs(60);

/// The smallest `cltv_expiry_delta` LDK forwards with (CLN's `cltv-delta`; LDK treats a
/// smaller value as this one).
pub const MIN_CLTV_DELTA: u16 = lightning::ln::channelmanager::MIN_CLTV_EXPIRY_DELTA;
/// The smallest `min_final_cltv_expiry` an invoice of ours can carry (CLN's `cltv-final`):
/// LDK refuses to receive a payment whose final CLTV leaves it less time than this to claim
/// on chain.
pub const MIN_FINAL_CLTV: u16 = lightning::ln::channelmanager::MIN_FINAL_CLTV_EXPIRY_DELTA;
/// The smallest `to_self_delay` LDK asks of a peer (CLN's `watchtime-blocks`).
pub const MIN_WATCHTIME_BLOCKS: u16 = lightning::ln::channelmanager::BREAKDOWN_TIMEOUT;

/// The node-wide channel settings that CLN's options set (`fulgur-config` fills them from
/// `--max-concurrent-htlcs`, `--fee-base`, `--cltv-delta`...). They apply to channels opened
/// from now on; a channel keeps the values it was opened with, as in CLN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChannelSettings {
    /// `--max-concurrent-htlcs`: HTLCs a peer may offer us at once on one channel.
    pub max_concurrent_htlcs: u16,
    /// `--fee-base`: base forwarding fee, msat.
    pub fee_base_msat: u32,
    /// `--fee-per-satoshi`: proportional forwarding fee, millionths.
    pub fee_proportional_millionths: u32,
    /// `--cltv-delta`: blocks between an incoming HTLC's expiry and the one we forward.
    pub cltv_expiry_delta: u16,
    /// `--funding-confirms`: confirmations before a channel opened to us is usable.
    pub funding_confirms: u32,
    /// `--htlc-minimum-msat`: the smallest HTLC we accept.
    pub htlc_minimum_msat: u64,
    /// `--max-dust-htlc-exposure-msat`: a fixed limit instead of LDK's feerate-based one.
    pub max_dust_htlc_exposure_msat: Option<u64>,
    /// `--min-capacity-sat`: the smallest channel a peer may open to us.
    pub min_capacity_sat: u64,
    /// `--watchtime-blocks`: the `to_self_delay` we ask of peers.
    pub watchtime_blocks: u16,
}

impl Default for ChannelSettings {
    /// What Fulgur does when no option is given: LDK's defaults, except where CLN users
    /// expect otherwise (see [`user_config`]).
    fn default() -> Self {
        let ldk = UserConfig::default();
        ChannelSettings {
            // HTLCs a peer may offer us at once on a channel: LDK's default is 50; a merchant
            // holding payments until delivery needs more, so we take BOLT 2's maximum, as LND
            // does (CLN's `max-concurrent-htlcs` option, whose default is 30).
            max_concurrent_htlcs: 483,
            fee_base_msat: ldk.channel_config.forwarding_fee_base_msat,
            fee_proportional_millionths: ldk.channel_config.forwarding_fee_proportional_millionths,
            cltv_expiry_delta: ldk.channel_config.cltv_expiry_delta,
            // CLN's default minimum depth is 3 blocks.
            funding_confirms: 3,
            htlc_minimum_msat: ldk.channel_handshake_config.our_htlc_minimum_msat,
            max_dust_htlc_exposure_msat: None,
            min_capacity_sat: ldk.channel_handshake_limits.min_funding_satoshis,
            watchtime_blocks: ldk.channel_handshake_config.our_to_self_delay,
        }
    }
}

/// The node's own feature bits (big-endian, BOLT 9) at `init`, `node`, `channel` and
/// `invoice`, as LDK sets them with `settings` and our message handlers (gossip queries);
/// plugins' bits come on top.
pub fn feature_set(settings: &ChannelSettings) -> [Vec<u8>; 4] {
    let cfg = user_config(settings);
    let mut init = lightning::ln::channelmanager::provided_init_features(&cfg);
    init.set_gossip_queries_optional();
    // LDK announces its init bits as node bits (none of them is init-only) and sets no
    // channel bits; its invoice bits are `invoice_features`.
    let init = features_be(init.le_flags());
    [
        init.clone(),
        init,
        vec![],
        features_be(invoice_features().le_flags()),
    ]
}

/// Our channel configuration: LDK's defaults, except where CLN users expect otherwise, with
/// the node's [`ChannelSettings`].
pub fn user_config(settings: &ChannelSettings) -> UserConfig {
    let mut c = UserConfig::default();
    c.channel_handshake_config.our_max_accepted_htlcs = settings.max_concurrent_htlcs;
    c.channel_config.forwarding_fee_base_msat = settings.fee_base_msat;
    c.channel_config.forwarding_fee_proportional_millionths = settings.fee_proportional_millionths;
    c.channel_config.cltv_expiry_delta = settings.cltv_expiry_delta;
    c.channel_handshake_config.our_htlc_minimum_msat = settings.htlc_minimum_msat;
    if let Some(msat) = settings.max_dust_htlc_exposure_msat {
        c.channel_config.max_dust_htlc_exposure =
            lightning::util::config::MaxDustHTLCExposure::FixedLimitMsat(msat);
    }
    c.channel_handshake_limits.min_funding_satoshis = settings.min_capacity_sat;
    c.channel_handshake_config.our_to_self_delay = settings.watchtime_blocks;
    // CLN announces channels by default (`announce` param of fundchannel).
    c.channel_handshake_config.announce_for_forwarding = true;
    // Cooperative closes pay to a fresh wallet address given at `close`, not one committed
    // at open (which would come from LDK's keys, outside the wallet).
    c.channel_handshake_config.commit_upfront_shutdown_pubkey = false;
    // Anchor channels (option_anchors_zero_fee_htlc_tx), as CLN and LND open by default: the
    // commitment pays a low fee and is bumped at close time by CPFP through its anchor, and
    // HTLC transactions get their fee from wallet inputs (`Event::BumpTransaction`, handled
    // with the wallet's coins; the wallet keeps `--min-emergency-msat` for them). Peers
    // without anchors get static_remote_key channels.
    c.channel_handshake_config
        .negotiate_anchors_zero_fee_htlc_tx = true;
    c.channel_handshake_config.minimum_depth = settings.funding_confirms;
    // Every forward passes the `htlc_accepted` hook (LDK 0.3's all-HTLC interception).
    c.htlc_interception_flags = lightning::util::config::HTLCInterceptionFlags::AllValidHTLCs as u8;
    // The opener chooses whether a channel is announced (`fundchannel announce=false`), as
    // in CLN; LDK's default refuses an inbound channel whose preference differs from ours.
    c.channel_handshake_limits
        .force_announced_channel_preference = false;
    // A peer may use the whole channel for HTLCs in flight to us, as with CLN (whose
    // `max_htlc_value_in_flight_msat` is unlimited); LDK's default of 25 % for announced
    // channels would stop a 1 M sat channel from receiving one 300 k sat payment.
    c.channel_handshake_config
        .announced_channel_max_inbound_htlc_value_in_flight_percentage = 100;
    // Route through private channels too, as CLN does.
    c.accept_forwards_to_priv_channels = true;
    c
}

/// LDK's API error as text.
pub fn api_error(e: &lightning::util::errors::APIError) -> String {
    use lightning::util::errors::APIError as E;
    match e {
        E::APIMisuseError { err } => err.clone(),
        E::FeeRateTooHigh { err, .. } => err.clone(),
        E::InvalidRoute { err } => err.clone(),
        E::ChannelUnavailable { err } => err.clone(),
        other => format!("{other:?}"),
    }
}

/// A short channel id as CLN writes it: `BLOCKxTXxOUT`.
pub fn scid_string(scid: u64) -> String {
    format!(
        "{}x{}x{}",
        scid >> 40,
        (scid >> 16) & 0xff_ffff,
        scid & 0xffff
    )
}

/// Parses `BLOCKxTXxOUT`.
pub fn parse_scid(s: &str) -> Option<u64> {
    let mut it = s.split('x');
    let b: u64 = it.next()?.parse().ok()?;
    let t: u64 = it.next()?.parse().ok()?;
    let o: u64 = it.next()?.parse().ok()?;
    if it.next().is_some() || b >= 1 << 24 || t >= 1 << 24 || o >= 1 << 16 {
        return None;
    }
    Some(b << 40 | t << 16 | o)
}

/// LDK's send-only message handler: the chain monitor's (peer storage), plus messages we
/// queue ourselves (a warning before dropping a peer a plugin refused).
pub struct Outbox {
    monitor: Arc<Monitor>,
    queue: Mutex<Vec<MessageSendEvent>>,
}

impl BaseMessageHandler for Outbox {
    fn get_and_clear_pending_msg_events(&self) -> Vec<MessageSendEvent> {
        let mut v = self.monitor.get_and_clear_pending_msg_events();
        v.append(&mut self.queue.lock().unwrap_or_else(|p| p.into_inner()));
        v
    }
    fn peer_disconnected(&self, id: PublicKey) {
        self.monitor.peer_disconnected(id)
    }
    fn provided_node_features(&self) -> NodeFeatures {
        self.monitor.provided_node_features()
    }
    fn provided_init_features(&self, id: PublicKey) -> InitFeatures {
        self.monitor.provided_init_features(id)
    }
    fn peer_connected(&self, id: PublicKey, msg: &Init, inbound: bool) -> Result<(), ()> {
        self.monitor.peer_connected(id, msg, inbound)
    }
}

impl SendOnlyMessageHandler for Outbox {}

/// Sees peers come and go (LDK's custom-message handler, handling no messages).
pub struct PeerWatcher {
    engine: OnceLock<Weak<Lightning>>,
    outgoing: Mutex<Vec<(PublicKey, CustomMsg)>>,
    custom_in: tokio::sync::mpsc::UnboundedSender<(PublicKey, u16, String)>,
    port: Arc<dyn Port>,
    log: SourceLog,
    handle: tokio::runtime::Handle,
}

/// A custom peer message (BOLT 1 type outside LDK's, CLN's `sendcustommsg`/`custommsg`).
#[derive(Debug, Clone)]
pub struct CustomMsg {
    /// Its type.
    pub ty: u16,
    /// Its body (after the type).
    pub body: Vec<u8>,
}

impl lightning::ln::wire::Type for CustomMsg {
    fn type_id(&self) -> u16 {
        self.ty
    }
}

impl Writeable for CustomMsg {
    fn write<W: lightning::util::ser::Writer>(
        &self,
        w: &mut W,
    ) -> Result<(), lightning::io::Error> {
        w.write_all(&self.body)
    }
}

impl CustomMessageReader for PeerWatcher {
    type CustomMessage = CustomMsg;
    fn read<R: lightning::util::ser::LengthLimitedRead>(
        &self,
        ty: u16,
        b: &mut R,
    ) -> Result<Option<Self::CustomMessage>, DecodeError> {
        // LDK hands us only types it does not handle itself. As CLN: odd types go to the
        // plugins, even ones only when a plugin declared them (`custommessages`); LDK
        // refuses the others.
        if ty.is_multiple_of(2) && !self.port.wants_custom_message(ty) {
            return Ok(None);
        }
        let mut body = vec![0u8; b.remaining_bytes().min(65_535) as usize];
        b.read_exact(&mut body)
            .map_err(|_| DecodeError::Io(lightning::io::ErrorKind::Other))?;
        Ok(Some(CustomMsg { ty, body }))
    }
}

impl CustomMessageHandler for PeerWatcher {
    fn handle_custom_message(
        &self,
        msg: Self::CustomMessage,
        from: PublicKey,
    ) -> Result<(), LightningError> {
        let mut payload = msg.ty.to_be_bytes().to_vec();
        payload.extend_from_slice(&msg.body);
        // One queue, one consumer: plugins see a peer's messages in the order they came.
        let _ = self.custom_in.send((from, msg.ty, hex(&payload)));
        Ok(())
    }

    fn get_and_clear_pending_msg(&self) -> Vec<(PublicKey, Self::CustomMessage)> {
        std::mem::take(&mut *self.outgoing.lock().unwrap_or_else(|p| p.into_inner()))
    }

    fn peer_disconnected(&self, id: PublicKey) {
        self.log.debug(&format!("Peer {id} disconnected"));
        self.port.tell(Notice::Disconnect { id });
        // LDK holds its peer lock here: the engine is asked in a task.
        if let Some(engine) = self.engine.get().and_then(Weak::upgrade) {
            engine.netevents.disconnected(id);
            self.handle
                .spawn(async move { engine.abandon_opens_to(id) });
        }
    }

    fn peer_connected(&self, id: PublicKey, msg: &Init, inbound: bool) -> Result<(), ()> {
        // LDK holds the peer's lock here: everything that looks at the peer manager runs in
        // a task, after this returns.
        let features = features_hex(msg.features.le_flags());
        let remote_addr = msg.remote_network_address.as_ref().map(|a| a.to_string());
        let remote_ip = msg
            .remote_network_address
            .as_ref()
            .and_then(discovery::ip_of);
        let engine = self.engine.get().and_then(Weak::upgrade);
        let port = self.port.clone();
        let log = self.log.clone();
        self.handle.spawn(async move {
            let addr = engine
                .as_ref()
                .and_then(|e| e.peers.peer_by_node_id(&id))
                .and_then(|p| p.socket_address)
                .map(|a| a.to_string())
                .unwrap_or_default();
            // Outgoing connections are recorded by `connect`, with how long they took.
            if inbound && let Some(e) = &engine {
                e.netevents.connected(id, None);
            }
            if let (Some(e), Some(ip)) = (&engine, remote_ip) {
                log.debug(&format!("Peer {id} says it sees our address as: {ip}"));
                e.peer_saw_us_at(id, ip);
            }
            let direction = if inbound { "in" } else { "out" };
            log.debug(&format!("Peer {id} connected ({direction}, {addr})"));
            port.tell(Notice::Connect {
                id,
                inbound,
                address: addr.clone(),
            });
            if !port.asks(Question::PeerConnected) {
                return;
            }
            let peer = PeerInfo {
                id,
                inbound,
                addr,
                features,
                remote_addr,
            };
            if let Some(no) = port.peer_connected(peer).await {
                let why = no.message.unwrap_or_default();
                log.info(&format!(
                    "Peer {id} disconnected by plugin {} (peer_connected): {why}",
                    no.plugin
                ));
                if let Some(e) = engine {
                    e.disconnect_with_warning(id, &why);
                }
            }
        });
        Ok(())
    }

    /// The `node` feature bits plugins set (CLN's manifest `featurebits`).
    fn provided_node_features(&self) -> NodeFeatures {
        let [_, node, _, _] = self.port.featurebits();
        NodeFeatures::from_be_bytes(node)
    }

    /// The `init` feature bits plugins set.
    fn provided_init_features(&self, _id: PublicKey) -> InitFeatures {
        let [init, _, _, _] = self.port.featurebits();
        InitFeatures::from_be_bytes(init)
    }
}

/// Feature bits as CLN shows them: big-endian hex of LDK's little-endian flags.
pub fn features_hex(le: &[u8]) -> String {
    hex(&features_be(le))
}

/// LDK's little-endian feature flags as BOLT 9 writes them: big-endian, without leading zero
/// bytes.
pub fn features_be(le: &[u8]) -> Vec<u8> {
    let mut be: Vec<u8> = le.iter().rev().copied().collect();
    while be.first() == Some(&0) {
        be.remove(0);
    }
    be
}

/// The BOLT 11 features our invoices carry (LDK's own choice, which it does not export):
/// var_onion_optin and payment_secret required, basic_mpp optional.
pub fn invoice_features() -> lightning::types::features::Bolt11InvoiceFeatures {
    let mut f = lightning::types::features::Bolt11InvoiceFeatures::empty();
    f.set_variable_length_onion_required();
    f.set_payment_secret_required();
    f.set_basic_mpp_optional();
    f
}

#[cfg(test)]
mod tests {
    use lightning::util::logger::{Level as LdkLevel, Logger as _, Record};

    use std::time::Duration;

    use super::{ChannelId, LdkLog, MANAGER_WRITE_GAP, MANAGER_WRITE_GAP_MAX, manager_write_gap};
    use crate::log::{Level, Logger, MemoryLog};

    fn record(log: &LdkLog, level: LdkLevel, text: &str) {
        log.log(Record::new(
            level,
            format_args!("{text}"),
            "test",
            "test.rs",
            1,
        ));
    }

    /// LDK's lines at info and above, kept in memory.
    fn info_log() -> (MemoryLog, LdkLog) {
        let sink = MemoryLog::default();
        let logger = Logger::at(Level::Info, Box::new(sink.clone()));
        (sink, LdkLog::new(logger.source("lightning")))
    }

    #[test]
    fn manager_write_gap_grows_with_the_write_cost_within_bounds() {
        assert_eq!(manager_write_gap(Duration::ZERO), MANAGER_WRITE_GAP);
        assert_eq!(
            manager_write_gap(Duration::from_micros(300)),
            MANAGER_WRITE_GAP
        );
        assert_eq!(
            manager_write_gap(Duration::from_micros(1500)),
            Duration::from_millis(30)
        );
        assert_eq!(
            manager_write_gap(Duration::from_millis(40)),
            MANAGER_WRITE_GAP_MAX
        );
    }

    #[test]
    fn ldk_records_keep_their_level_and_benign_races_are_not_broken() {
        let (sink, log) = info_log();
        record(&log, LdkLevel::Trace, "handled a ping");
        log.log(Record::new(
            LdkLevel::Info,
            format_args!("Flushing up to 3 monitor operations"),
            "lightning::chain::chainmonitor",
            "chainmonitor.rs",
            1,
        ));
        record(&log, LdkLevel::Info, "applied an update");
        record(&log, LdkLevel::Error, "Bad commitment_signed");
        record(
            &log,
            LdkLevel::Error,
            "Got announcement_signatures prior to the required six confirmations - we may not have received a block yet that our peer has",
        );
        record(
            &log,
            LdkLevel::Error,
            "Force-closing inbound channel request",
        );
        record(&log, LdkLevel::Error, "Force-closing channel");
        record(
            &log,
            LdkLevel::Error,
            "Closed channel due to close-required error: Coop Closed",
        );
        record(&log, LdkLevel::Error, "Closing channel: Coop Closed");
        // The peer's commitment confirmed while we were away: CLN's UNUSUAL.
        record(
            &log,
            LdkLevel::Error,
            "Closed channel due to close-required error: Channel closed because commitment or closing transaction was confirmed on chain.",
        );
        record(
            &log,
            LdkLevel::Error,
            "Failed to send along path due to error: Channel unavailable: Peer for first hop currently disconnected",
        );
        record(
            &log,
            LdkLevel::Error,
            "Failed to find a route on retry, abandoning payment 00: \"Can't use this router to return multiple routes\"",
        );
        // CLN's peer storage from a peer without a channel: below info.
        record(
            &log,
            LdkLevel::Error,
            "Got non-closing error: Ignoring peer_storage message, as peer storage is currently supported only for peers with an active funded channel.",
        );
        let text = sink.text();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 10, "{text}");
        assert!(lines[0].contains("INFO") && lines[0].contains("applied an update"));
        assert!(lines[1].contains("**BROKEN**") && lines[1].contains("Bad commitment_signed"));
        assert!(lines[2].contains("UNUSUAL") && lines[2].contains("six confirmations"));
        assert!(lines[3].contains("UNUSUAL") && lines[3].contains("inbound channel request"));
        // A real channel's force-close stays broken.
        assert!(lines[4].contains("**BROKEN**") && lines[4].ends_with("Force-closing channel"));
        for coop in &lines[5..7] {
            assert!(
                coop.contains("UNUSUAL") && coop.ends_with("Coop Closed"),
                "{coop}"
            );
        }
        assert!(lines[7].contains("UNUSUAL") && lines[7].contains("confirmed on chain"));
        // A payment failed because its peer is away, or not retried: reported to its caller.
        for failed in &lines[8..] {
            assert!(failed.contains("UNUSUAL"), "{failed}");
        }
    }
    #[test]
    fn dropping_an_unfunded_channel_is_not_broken_but_other_channels_still_are() {
        let (sink, log) = info_log();
        let dropped = ChannelId([1; 32]);
        let other = ChannelId([2; 32]);
        let force_close = |id: ChannelId| {
            let mut r = Record::new(
                LdkLevel::Error,
                format_args!("Force-closing channel"),
                "test",
                "test.rs",
                1,
            );
            r.channel_id = Some(id);
            log.log(r)
        };
        log.dropping_unfunded(dropped, || {
            force_close(dropped);
            force_close(other);
        });
        force_close(dropped);
        let text = sink.text();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(lines[0].contains("INFO"), "{text}");
        assert!(
            lines[1].contains("**BROKEN**") && lines[2].contains("**BROKEN**"),
            "{text}"
        );
    }
}
