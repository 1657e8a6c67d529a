//! [`Chain`]: the node's handle on the Bitcoin chain. It owns the backend, the single block
//! stream (lightning-block-sync: `synchronize_listeners` from each listener's own best block,
//! then `SpvClient` + `ChainPoller` polling), the fee cache and the broadcaster.
//!
//! Start-up never blocks the node: [`Chain::start`] picks the backend and spawns a task that
//! waits (logging every few seconds, `getinfo` showing `warning_bitcoind_sync`) while the
//! backend is unreachable or still syncing, refuses a backend on another network (exit 1),
//! then streams blocks. Every connected block goes to each listener, becomes a
//! `block_added` notification, and the stream's best block is persisted for restarts.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::Duration;

use bitcoin::Block;
use bitcoin::block::Header;
use bitcoin::hash_types::BlockHash;
use lightning::chain::{BlockLocator, Listen};
use lightning_block_sync::poll::{ChainPoller, ValidatedBlockHeader};
use lightning_block_sync::{HeaderCache, SpvClient, init};

use super::backend::{Backend, plugins_choose};
use super::broadcast::Broadcaster;
use super::fees::FeeCache;
use super::rpc::BitcoindRpc;
use super::settings::{self, BitcoinOptions, bitcoind_chain_name};
use super::{ChainPlugins, StopRequest};
use fulgur_base::Network;
use fulgur_base::log::SourceLog;
use fulgur_store::{Store, StoreError};

/// A chain listener as the stream sees it.
pub type SharedListener = Arc<dyn Listen + Send + Sync>;

/// CLN's `getinfo` text while the backend catches up.
pub const BITCOIND_SYNC_WARNING: &str = "Bitcoind is not up-to-date with network.";
/// CLN's `getinfo` text while we catch up with the backend.
pub const LIGHTNINGD_SYNC_WARNING: &str = "Still loading latest blocks from bitcoind.";

#[derive(Default)]
struct Status {
    tip: Option<(BlockHash, u32)>,
    bitcoind_sync: Option<String>,
    lightningd_sync: Option<String>,
    last_notified: Option<BlockHash>,
}

struct Pending {
    name: String,
    listener: SharedListener,
    best_block: Option<BlockLocator>,
    /// `--rescan` for this listener: start from this many blocks below the tip (positive)
    /// or from this height (negative), when that is below `best_block`.
    rescan: Option<i64>,
}

/// The chain handle (`Node::chain`).
pub struct Chain {
    network: Network,
    options: BitcoinOptions,
    log: SourceLog,
    store: Store,
    plugins: Arc<dyn ChainPlugins>,
    backend: Arc<OnceLock<Arc<Backend>>>,
    fees: Arc<FeeCache>,
    broadcaster: Arc<Broadcaster>,
    status: Mutex<Status>,
    /// The tip's height, for waiters (`waitblockheight`).
    heights: tokio::sync::watch::Sender<u32>,
    pending: Mutex<Vec<Pending>>,
    started: AtomicBool,
}

impl Chain {
    /// A chain handle; nothing runs until [`Chain::start`].
    pub fn new(
        network: Network,
        options: BitcoinOptions,
        store: Store,
        plugins: Arc<dyn ChainPlugins>,
        log: SourceLog,
    ) -> Arc<Chain> {
        let backend = Arc::new(OnceLock::new());
        let broadcaster = Arc::new(Broadcaster::new(
            backend.clone(),
            log.clone(),
            options.retry_timeout,
        ));
        Arc::new(Chain {
            network,
            options,
            log,
            store,
            plugins,
            backend,
            fees: Arc::new(FeeCache::new()),
            broadcaster,
            status: Mutex::new(Status {
                bitcoind_sync: Some(BITCOIND_SYNC_WARNING.into()),
                ..Default::default()
            }),
            heights: tokio::sync::watch::Sender::new(0),
            pending: Mutex::new(vec![]),
            started: AtomicBool::new(false),
        })
    }

    fn status(&self) -> std::sync::MutexGuard<'_, Status> {
        self.status.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds a listener to the block stream. `best_block` is the last block it processed
    /// (`None`: a fresh listener, started at the current tip). Blocks from there on are
    /// connected (and stale ones disconnected) before it joins the live stream. May be
    /// called before or after [`Chain::start`].
    pub fn add_listener(
        &self,
        name: &str,
        listener: SharedListener,
        best_block: Option<BlockLocator>,
    ) {
        self.add_listener_rescanning(name, listener, best_block, None);
    }

    /// [`Chain::add_listener`], but the listener is first given the blocks from the height
    /// `rescan` names (CLN's `--rescan`: `n` blocks below the tip, or height `-n`) when that
    /// is below its own best block. Only for listeners that accept blocks they have seen
    /// (the wallet); LDK's must be given blocks in order.
    pub fn add_listener_rescanning(
        &self,
        name: &str,
        listener: SharedListener,
        best_block: Option<BlockLocator>,
        rescan: Option<i64>,
    ) {
        self.pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Pending {
                name: name.to_string(),
                listener,
                best_block,
                rescan,
            });
    }

    /// The fee cache (implements [`super::FeeEstimates`] and LDK's `FeeEstimator`).
    pub fn fees(&self) -> Arc<FeeCache> {
        self.fees.clone()
    }

    /// The broadcaster (implements [`super::TxBroadcaster`] and LDK's
    /// `BroadcasterInterface`).
    pub fn broadcaster(&self) -> Arc<Broadcaster> {
        self.broadcaster.clone()
    }

    /// The backend, once the stream has started.
    pub fn backend(&self) -> Option<Arc<Backend>> {
        self.backend.get().cloned()
    }

    /// The stream's height (0 before the first sync).
    pub fn height(&self) -> u32 {
        self.status().tip.map(|t| t.1).unwrap_or(0)
    }

    /// The stream's best block.
    pub fn tip(&self) -> Option<(BlockHash, u32)> {
        self.status().tip
    }

    /// `warning_bitcoind_sync` and `warning_lightningd_sync` for `getinfo`.
    pub fn warnings(&self) -> (Option<String>, Option<String>) {
        let s = self.status();
        (s.bitcoind_sync.clone(), s.lightningd_sync.clone())
    }

    /// Picks the backend (backend plugins if they registered all five methods, bitcoind's
    /// RPC if none; an error if only some) and starts the stream in the background.
    pub fn start(self: &Arc<Self>, stop: StopRequest) -> Result<(), String> {
        if self.started.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        let use_plugins = plugins_choose(|m| self.plugins.serves(m))?;
        let backend = if use_plugins {
            Backend::plugins(self.plugins.clone())
        } else {
            let home = std::env::var_os("HOME")
                .map(std::path::PathBuf::from)
                .unwrap_or_else(|| "/".into());
            Backend::Rpc(BitcoindRpc::new(settings::endpoint(
                &self.options,
                self.network,
                &home,
            )))
        };
        let backend = Arc::new(backend);
        let _ = self.backend.set(backend.clone());
        self.log.info(&format!(
            "Using {} for the Bitcoin chain",
            backend.describe()
        ));
        let me = self.clone();
        tokio::spawn(async move { me.run(backend, stop).await });
        Ok(())
    }

    fn poll_interval(&self) -> Duration {
        if self.network == Network::Regtest {
            Duration::from_millis(250)
        } else {
            Duration::from_secs(5)
        }
    }

    /// Waits until the backend is reachable, on our network and synced. `false`: wrong
    /// network (the node is being stopped).
    async fn wait_for_backend(&self, backend: &Backend, stop: &StopRequest) -> bool {
        let expected = bitcoind_chain_name(self.network);
        let mut last_log: Option<tokio::time::Instant> = None;
        loop {
            let why = match backend.chain_info(self.height()).await {
                Ok(info) if info.chain != expected => {
                    let msg = format!(
                        "Wrong network! Our Bitcoin backend is running on '{}', but we expect '{expected}'.",
                        info.chain
                    );
                    self.log.broken(&msg);
                    eprintln!("fulgurd: {msg}");
                    let _ = stop.send(1);
                    return false;
                }
                Ok(info) if !info.syncing() => {
                    self.status().bitcoind_sync = None;
                    return true;
                }
                Ok(info) => format!(
                    "still syncing (blocks {}, headers {}, initial block download {})",
                    info.blocks, info.headers, info.ibd
                ),
                Err(e) => format!("unreachable: {e}"),
            };
            self.status().bitcoind_sync = Some(BITCOIND_SYNC_WARNING.into());
            if last_log.is_none_or(|t| t.elapsed() >= Duration::from_secs(5)) {
                self.log.info(&format!(
                    "Waiting for the Bitcoin backend ({}): {why}",
                    backend.describe()
                ));
                last_log = Some(tokio::time::Instant::now());
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    async fn refresh_fees(self: Arc<Self>, backend: Arc<Backend>) {
        let every = if self.network == Network::Regtest {
            Duration::from_secs(1)
        } else {
            Duration::from_secs(30)
        };
        let mut failing = false;
        loop {
            match backend.estimate_fees().await {
                Ok(sample) => {
                    failing = false;
                    self.fees.update(sample);
                }
                Err(e) => {
                    if !failing {
                        self.log.unusual(&format!("Fee estimation failed: {e}"));
                    }
                    failing = true;
                }
            }
            tokio::time::sleep(every).await;
        }
    }

    async fn load_tip(&self) -> Option<BlockLocator> {
        let r = self
            .store
            .with(|c| {
                use fulgur_store::sql::OptionalExtension;
                Ok(
                    c.query_row("SELECT hash, height FROM chain_tip WHERE id = 0", [], |r| {
                        Ok((r.get::<_, String>(0)?, r.get::<_, u32>(1)?))
                    })
                    .optional()?,
                )
            })
            .await;
        match r {
            Ok(Some((hash, height))) => match hash.parse::<BlockHash>() {
                Ok(h) => Some(BlockLocator::new(h, height)),
                Err(e) => {
                    self.log
                        .broken(&format!("stored chain tip {hash} is not a block hash: {e}"));
                    None
                }
            },
            Ok(None) => None,
            Err(e) => {
                self.log.broken(&format!("cannot read the chain tip: {e}"));
                None
            }
        }
    }

    async fn save_tip(&self, hash: BlockHash, height: u32) {
        let h = hash.to_string();
        let r: Result<(), StoreError> = self
            .store
            .with(move |c| {
                c.execute(
                    "INSERT INTO chain_tip (id, hash, height) VALUES (0, ?1, ?2)
                     ON CONFLICT(id) DO UPDATE SET hash = excluded.hash, height = excluded.height",
                    fulgur_store::sql::params![h, height],
                )?;
                Ok(())
            })
            .await;
        match r {
            Err(e) if e.is_storage_failure() => {
                fulgur_store::fatal(&self.log, "cannot save the chain tip", &e)
            }
            Err(e) => self.log.broken(&format!("cannot save the chain tip: {e}")),
            Ok(()) => {}
        }
    }

    fn take_pending(&self) -> Vec<Pending> {
        std::mem::take(&mut *self.pending.lock().unwrap_or_else(|p| p.into_inner()))
    }

    fn has_pending(&self) -> bool {
        !self
            .pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_empty()
    }

    /// Brings the stream (at `stream_at`) and every pending listener to the backend's tip.
    /// On failure the pending listeners are put back.
    async fn synchronize(
        &self,
        backend: &Arc<Backend>,
        fanout: &Arc<Fanout>,
        stream_at: Option<BlockLocator>,
    ) -> Result<(HeaderCache, ValidatedBlockHeader), String> {
        let best = init::validate_best_block_header(&**backend)
            .await
            .map_err(|e| format!("{:?}", e.into_inner()))?;
        let mut pending = self.take_pending();
        for p in pending.iter_mut() {
            let Some(spec) = p.rescan.take() else {
                continue;
            };
            let from = rescan_height(spec, best.height);
            let own = p.best_block.as_ref().map_or(best.height, |b| b.height);
            if from >= own {
                continue;
            }
            match backend.block_hash_at(from).await {
                Ok(hash) => {
                    self.log.info(&format!(
                        "Rescanning from block {from} for {} (--rescan={spec})",
                        p.name
                    ));
                    p.best_block = Some(BlockLocator::new(hash, from));
                }
                Err(e) => {
                    // Asked again at the next attempt.
                    p.rescan = Some(spec);
                    self.pending
                        .lock()
                        .unwrap_or_else(|q| q.into_inner())
                        .extend(pending);
                    return Err(format!("--rescan: block {from}: {e}"));
                }
            }
        }
        let mut list: Vec<(BlockLocator, &(dyn Listen + Send + Sync))> = vec![(
            stream_at.unwrap_or_else(|| best.to_block_locator()),
            &**fanout as &(dyn Listen + Send + Sync),
        )];
        for p in &pending {
            list.push((
                p.best_block.unwrap_or_else(|| best.to_block_locator()),
                &*p.listener,
            ));
        }
        let net = settings::bitcoin_network(self.network);
        match init::synchronize_listeners(&**backend, net, list).await {
            Ok((cache, tip)) => {
                for p in pending {
                    self.log
                        .debug(&format!("Listener {} joined the block stream", p.name));
                    fanout.push(p.listener);
                }
                if self.tip().map(|t| t.0) != Some(tip.to_block_locator().block_hash) {
                    self.set_tip(tip.to_block_locator().block_hash, tip.height);
                }
                Ok((cache, tip))
            }
            Err(e) => {
                self.pending
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .extend(pending);
                Err(format!("{:?}", e.into_inner()))
            }
        }
    }

    fn set_tip(&self, hash: BlockHash, height: u32) {
        self.status().tip = Some((hash, height));
        self.heights.send_replace(height);
    }

    /// The stream's height as it changes (0 before the first sync).
    pub fn watch_heights(&self) -> tokio::sync::watch::Receiver<u32> {
        self.heights.subscribe()
    }

    /// Waits until the stream's tip is at `height` or above; returns the tip's height then.
    pub async fn wait_height(&self, height: u32) -> u32 {
        let mut rx = self.heights.subscribe();
        // The sender lives as long as `self`, which this future borrows.
        match rx.wait_for(|h| *h >= height).await {
            Ok(h) => *h,
            Err(_) => self.height(),
        }
    }

    fn notify_block(&self, hash: BlockHash, height: u32) {
        {
            let mut s = self.status();
            if s.last_notified == Some(hash) {
                return;
            }
            s.last_notified = Some(hash);
        }
        self.plugins.block_added(hash, height);
    }

    async fn run(self: Arc<Self>, backend: Arc<Backend>, stop: StopRequest) {
        if !self.wait_for_backend(&backend, &stop).await {
            return;
        }
        tokio::spawn(self.clone().refresh_fees(backend.clone()));
        let fanout = Arc::new(Fanout {
            chain: Arc::downgrade(&self),
            listeners: RwLock::new(vec![]),
        });
        let mut stream_at = self.load_tip().await;
        let interval = self.poll_interval();
        self.status().lightningd_sync = Some(LIGHTNINGD_SYNC_WARNING.into());
        let mut failing = false;
        loop {
            let (cache, tip) = loop {
                match self.synchronize(&backend, &fanout, stream_at).await {
                    Ok(r) => break r,
                    Err(e) => {
                        if !failing {
                            self.log
                                .unusual(&format!("Block sync failed: {e}; retrying"));
                        }
                        failing = true;
                        tokio::time::sleep(interval).await;
                    }
                }
            };
            failing = false;
            self.status().lightningd_sync = None;
            let loc = tip.to_block_locator();
            self.save_tip(loc.block_hash, loc.height).await;
            self.notify_block(loc.block_hash, loc.height);
            self.log.info(&format!(
                "Block stream at height {} ({})",
                loc.height, loc.block_hash
            ));
            let poller = ChainPoller::new(backend.clone(), settings::bitcoin_network(self.network));
            let mut spv = SpvClient::new(tip, poller, cache, fanout.clone());
            let mut saved = loc.block_hash;
            loop {
                tokio::time::sleep(interval).await;
                match spv.poll_best_tip().await {
                    Ok(_) => failing = false,
                    Err(e) => {
                        if !failing {
                            self.log.unusual(&format!(
                                "Polling the chain tip failed: {:?}",
                                e.into_inner()
                            ));
                        }
                        failing = true;
                    }
                }
                if let Some((hash, height)) = self.tip()
                    && hash != saved
                {
                    self.save_tip(hash, height).await;
                    saved = hash;
                }
                if self.has_pending() {
                    break;
                }
            }
            // New listeners: resynchronize from the stream's own tip.
            stream_at = self.tip().map(|(h, n)| BlockLocator::new(h, n));
        }
    }
}

/// The one listener lightning-block-sync drives: updates the stream's tip, notifies
/// `block_added`, and forwards to every registered listener.
struct Fanout {
    chain: std::sync::Weak<Chain>,
    listeners: RwLock<Vec<SharedListener>>,
}

impl Fanout {
    fn push(&self, l: SharedListener) {
        self.listeners
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .push(l);
    }

    fn each(&self, f: impl Fn(&SharedListener)) {
        for l in self
            .listeners
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            f(l);
        }
    }

    fn connected(&self, hash: BlockHash, height: u32) {
        if let Some(c) = self.chain.upgrade() {
            c.set_tip(hash, height);
            c.log.debug(&format!("Block {height} connected: {hash}"));
            c.notify_block(hash, height);
        }
    }
}

impl Listen for Fanout {
    fn filtered_block_connected(
        &self,
        header: &Header,
        txdata: &lightning::chain::transaction::TransactionData,
        height: u32,
    ) {
        self.each(|l| l.filtered_block_connected(header, txdata, height));
        self.connected(header.block_hash(), height);
    }

    fn block_connected(&self, block: &Block, height: u32) {
        self.each(|l| l.block_connected(block, height));
        self.connected(block.block_hash(), height);
    }

    fn blocks_disconnected(&self, fork_point: BlockLocator) {
        self.each(|l| l.blocks_disconnected(fork_point));
        if let Some(c) = self.chain.upgrade() {
            c.log.info(&format!(
                "Reorganisation: blocks after {} ({}) disconnected",
                fork_point.height, fork_point.block_hash
            ));
            c.set_tip(fork_point.block_hash, fork_point.height);
            c.status().last_notified = None;
        }
    }
}

/// The height `--rescan=spec` starts from with the tip at `tip`: `spec` blocks below it, or
/// height `-spec` when negative (never above the tip).
pub fn rescan_height(spec: i64, tip: u32) -> u32 {
    let h = if spec < 0 {
        spec.unsigned_abs()
    } else {
        u64::from(tip).saturating_sub(spec.unsigned_abs())
    };
    u32::try_from(h).unwrap_or(u32::MAX).min(tip)
}

#[cfg(test)]
mod tests {
    #[test]
    fn rescan_counts_back_from_the_tip_or_names_a_height() {
        assert_eq!(super::rescan_height(15, 100), 85);
        assert_eq!(super::rescan_height(500, 100), 0);
        assert_eq!(super::rescan_height(-30, 100), 30);
        assert_eq!(super::rescan_height(-300, 100), 100);
        assert_eq!(super::rescan_height(0, 100), 100);
    }
}
