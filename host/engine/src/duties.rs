//! The periodic duties of the engine loop: what LDK's `lightning-background-processor` does on
//! its timers, done by our own loop (which keeps its own event handling and channel-manager
//! write batching, see `background` in `mod.rs`).
//!
//! | Duty | Period | First run |
//! |---|---|---|
//! | `PeerManager::timer_tick_occurred` (pings, stale peers) | 10 s | 10 s |
//! | `ChannelManager::timer_tick_occurred` (fees, stale payments) | 60 s | 60 s |
//! | `ChainMonitor::rebroadcast_pending_claims` (against pinning) | 30 s | at start |
//! | `OutputSweeper::regenerate_and_broadcast_spend_if_necessary`, then forgetting closed channels whose last claim resolved since the last block (`closed.rs`) | 10 s | 10 s |
//! | `NetworkGraph::remove_stale_channels_and_tracking`, then the graph is written | 1 h | 60 s |
//! | `ProbabilisticScorer::time_passed` (decay), then the scorer is written | 5 min | at start |
//! | `ChainMonitor::archive_fully_resolved_channel_monitors` | 10 min | 15 s |
//! | closed-channel snapshots (`closed.rs`) | 1 s | 1 s |
//! | reconnecting channel peers | 5 s | 5 s |
//!
//! The periods are LDK's background processor's, except the sweeper's (LDK: 30 s; the sweeper
//! itself spends at most once per block) and our own two. For tests, the environment variable
//! `FULGUR_DEV_DUTY_SECS=N` (read once when the engine starts) runs every duty every `N`
//! seconds, the first runs included.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use lightning::routing::scoring::{ProbabilisticScoringDecayParameters, ScoreUpdate};
use lightning::util::persist::{
    KVStoreSync, NETWORK_GRAPH_PERSISTENCE_KEY, SCORER_PERSISTENCE_KEY,
};
use lightning::util::ser::{ReadableArgs, Writeable};

use super::{Lightning, Log, NetGraph, Scorer};
use crate::log::SourceLog;
use crate::store::kv::SqliteKvStore;

/// One periodic duty.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Duty {
    /// `PeerManager::timer_tick_occurred`.
    PeerTick,
    /// `ChannelManager::timer_tick_occurred` and our node announcement.
    ManagerTick,
    /// `ChainMonitor::rebroadcast_pending_claims`.
    RebroadcastClaims,
    /// The output sweeper's (re)spend of what it tracks.
    Sweep,
    /// Network-graph pruning and persistence.
    PruneGraph,
    /// Scorer decay and persistence.
    DecayScorer,
    /// Archiving fully resolved channel monitors.
    ArchiveMonitors,
    /// Closed-channel snapshots, and writing the HTLC counters.
    SnapshotChannels,
    /// Reconnecting channel peers.
    ReconnectPeers,
}

/// Every duty, in the order the loop runs those due together.
pub const ALL: [Duty; 9] = [
    Duty::PeerTick,
    Duty::ManagerTick,
    Duty::RebroadcastClaims,
    Duty::Sweep,
    Duty::PruneGraph,
    Duty::DecayScorer,
    Duty::ArchiveMonitors,
    Duty::SnapshotChannels,
    Duty::ReconnectPeers,
];

/// A duty's timing: how long after start it first runs, then how often.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// Delay from the engine's start to the first run.
    pub first: Duration,
    /// Delay between two runs.
    pub every: Duration,
}

impl Duty {
    /// The production timing (see the module's table).
    pub fn timing(self) -> Timing {
        let s = Duration::from_secs;
        let (first, every) = match self {
            Duty::PeerTick => (s(10), s(10)),
            Duty::ManagerTick => (s(60), s(60)),
            Duty::RebroadcastClaims => (Duration::ZERO, s(30)),
            Duty::Sweep => (s(10), s(10)),
            Duty::PruneGraph => (s(60), s(3600)),
            Duty::DecayScorer => (Duration::ZERO, s(300)),
            Duty::ArchiveMonitors => (s(15), s(600)),
            Duty::SnapshotChannels => (s(1), s(1)),
            Duty::ReconnectPeers => (s(5), s(5)),
        };
        Timing { first, every }
    }
}

/// The name of the environment variable that shortens every period (tests only).
pub const DEV_PERIOD_ENV: &str = "FULGUR_DEV_DUTY_SECS";

/// The override `FULGUR_DEV_DUTY_SECS` asks for: a whole number of seconds, at least 1.
pub fn dev_period(value: Option<&str>) -> Result<Option<Duration>, String> {
    let Some(v) = value else { return Ok(None) };
    match v.trim().parse::<u64>() {
        Ok(n) if n >= 1 => Ok(Some(Duration::from_secs(n))),
        _ => Err(format!(
            "{DEV_PERIOD_ENV}={v:?} ignored: expected a whole number of seconds, at least 1"
        )),
    }
}

/// When each duty is next due.
#[derive(Debug)]
pub struct Schedule<I> {
    next: Vec<(Duty, I, Duration)>,
}

impl<I> Schedule<I>
where
    I: Copy + Ord + std::ops::Add<Duration, Output = I>,
{
    /// Every duty from `start`, at its production timing or, with `dev`, every `dev` (the
    /// first run too).
    pub fn new(start: I, dev: Option<Duration>) -> Schedule<I> {
        let next = ALL
            .iter()
            .map(|&d| {
                let t = d.timing();
                let (first, every) = dev.map_or((t.first, t.every), |p| (p, p));
                (d, start + first, every)
            })
            .collect();
        Schedule { next }
    }

    /// The duties due at `now`, each rescheduled one period after `now` (a duty that fell
    /// behind runs once, not once per missed period).
    pub fn due(&mut self, now: I) -> Vec<Duty> {
        let mut out = vec![];
        for (d, at, every) in &mut self.next {
            if *at <= now {
                out.push(*d);
                *at = now + *every;
            }
        }
        out
    }

    /// The earliest time any duty is due.
    pub fn next_due(&self) -> Option<I> {
        self.next.iter().map(|(_, at, _)| *at).min()
    }
}

/// Seconds since the Unix epoch (LDK's clock for gossip and scoring).
fn since_epoch() -> Duration {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
}

/// Removes channels whose updates are older than two weeks (LDK's rule) and stops tracking
/// long-removed ones; returns how many channels and nodes the graph has left.
pub fn prune_graph(graph: &NetGraph, now: Duration) -> (usize, usize) {
    graph.remove_stale_channels_and_tracking_with_time(now.as_secs());
    let ro = graph.read_only();
    (ro.channels().len(), ro.nodes().len())
}

/// Lets the scorer's learnt liquidity bounds decay up to `now`.
pub fn decay_scorer(scorer: &RwLock<Scorer>, now: Duration) {
    scorer
        .write()
        .unwrap_or_else(|p| p.into_inner())
        .time_passed(now);
}

/// Writes the network graph to the key-value store.
pub fn write_graph(kv: &SqliteKvStore, graph: &NetGraph) -> Result<(), lightning::io::Error> {
    kv.write("", "", NETWORK_GRAPH_PERSISTENCE_KEY, graph.encode())
}

/// Writes the scorer to the key-value store.
pub fn write_scorer(
    kv: &SqliteKvStore,
    scorer: &RwLock<Scorer>,
) -> Result<(), lightning::io::Error> {
    let bytes = scorer.read().unwrap_or_else(|p| p.into_inner()).encode();
    kv.write("", "", SCORER_PERSISTENCE_KEY, bytes)
}

/// The stored network graph, or an empty one (an unreadable graph is reported in `why`).
pub fn read_graph(
    kv: &SqliteKvStore,
    network: bitcoin::Network,
    log: &Log,
    why: &SourceLog,
) -> NetGraph {
    match kv.read("", "", NETWORK_GRAPH_PERSISTENCE_KEY) {
        Ok(bytes) => match NetGraph::read(&mut lightning::io::Cursor::new(&bytes), log.clone()) {
            Ok(g) => g,
            Err(e) => {
                why.unusual(&format!(
                    "stored network graph unreadable ({e:?}); starting empty"
                ));
                NetGraph::new(network, log.clone())
            }
        },
        Err(_) => NetGraph::new(network, log.clone()),
    }
}

/// The stored scorer (what it learnt survives restarts), or a fresh one.
pub fn read_scorer(
    kv: &SqliteKvStore,
    graph: &Arc<NetGraph>,
    log: &Log,
    why: &SourceLog,
) -> Scorer {
    let decay = ProbabilisticScoringDecayParameters::default();
    match kv.read("", "", SCORER_PERSISTENCE_KEY) {
        Ok(bytes) => Scorer::read(
            &mut lightning::io::Cursor::new(&bytes),
            (decay, graph.clone(), log.clone()),
        )
        .unwrap_or_else(|e| {
            why.unusual(&format!(
                "stored scorer unreadable ({e:?}); starting afresh"
            ));
            Scorer::new(decay, graph.clone(), log.clone())
        }),
        Err(_) => Scorer::new(decay, graph.clone(), log.clone()),
    }
}

impl Lightning {
    /// Runs one periodic duty.
    pub(crate) async fn run_duty(self: &Arc<Self>, duty: Duty) {
        match duty {
            Duty::PeerTick => {
                self.peers.timer_tick_occurred();
                // Our first public channel was just announced: the node announcement the
                // graph refused before (no public channel yet) goes out now, not at the
                // next minute's tick.
                if self.node_announcement_missing() {
                    self.announce_node();
                }
            }
            Duty::ManagerTick => {
                self.manager.timer_tick_occurred();
                self.announce_node();
            }
            Duty::RebroadcastClaims => {
                self.log.debug("Rebroadcasting pending on-chain claims");
                self.monitor.rebroadcast_pending_claims();
            }
            Duty::Sweep => {
                // LDK logs what it spends and why a spend failed.
                let _ = self.sweeper.regenerate_and_broadcast_spend_if_necessary();
                if let Some((_, height)) = self.chain.tip() {
                    self.forget_resolved_closed(height);
                }
            }
            Duty::PruneGraph => {
                self.graph.prune(since_epoch());
                self.graph.persist_graph();
            }
            Duty::DecayScorer => {
                self.graph.decay(since_epoch());
                self.graph.persist_scorer();
            }
            Duty::ArchiveMonitors => {
                let before = self.monitor.list_monitors().len();
                self.monitor.archive_fully_resolved_channel_monitors();
                let archived = before.saturating_sub(self.monitor.list_monitors().len());
                if archived > 0 {
                    self.log.info(&format!(
                        "Archived {archived} fully resolved channel monitor(s)"
                    ));
                } else {
                    self.log
                        .debug("No fully resolved channel monitor to archive");
                }
            }
            Duty::SnapshotChannels => {
                self.snapshot_channels();
                // The HTLC counters added up during the last second.
                self.write_htlc_counts();
            }
            Duty::ReconnectPeers => self.reconnect_channel_peers().await,
        }
    }

    /// Writes the network graph (after pruning, and at `stop`).
    pub fn persist_graph(&self) {
        self.graph.persist_graph();
    }

    /// Writes the scorer (after each decay, and at `stop`).
    pub fn persist_scorer(&self) {
        self.graph.persist_scorer();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn production_timings_follow_ldks_background_processor() {
        assert_eq!(Duty::RebroadcastClaims.timing().every, s(30));
        assert_eq!(Duty::RebroadcastClaims.timing().first, Duration::ZERO);
        assert_eq!(Duty::PruneGraph.timing().first, s(60));
        assert_eq!(Duty::PruneGraph.timing().every, s(3600));
        assert_eq!(Duty::DecayScorer.timing().every, s(300));
        assert_eq!(Duty::ArchiveMonitors.timing().first, s(15));
        assert_eq!(Duty::ArchiveMonitors.timing().every, s(600));
        assert_eq!(Duty::ManagerTick.timing().every, s(60));
        assert_eq!(Duty::PeerTick.timing().every, s(10));
    }

    #[test]
    fn duties_come_due_at_their_first_run_then_every_period() {
        // Times as seconds since start.
        let mut sch = Schedule::new(Duration::ZERO, None);
        let at_start = sch.due(Duration::ZERO);
        assert_eq!(at_start, vec![Duty::RebroadcastClaims, Duty::DecayScorer]);
        assert_eq!(sch.due(s(0)), vec![]);
        assert_eq!(sch.due(s(1)), vec![Duty::SnapshotChannels]);
        let at_15: Vec<Duty> = sch.due(s(15));
        for d in [
            Duty::PeerTick,
            Duty::Sweep,
            Duty::ArchiveMonitors,
            Duty::SnapshotChannels,
            Duty::ReconnectPeers,
        ] {
            assert!(at_15.contains(&d), "{d:?} not due at 15 s: {at_15:?}");
        }
        assert!(!at_15.contains(&Duty::PruneGraph));
        let at_60 = sch.due(s(60));
        assert!(at_60.contains(&Duty::PruneGraph), "{at_60:?}");
        assert!(at_60.contains(&Duty::RebroadcastClaims), "{at_60:?}");
        assert!(at_60.contains(&Duty::ManagerTick), "{at_60:?}");
        // The graph is pruned again an hour later, not a minute later.
        assert!(!sch.due(s(125)).contains(&Duty::PruneGraph));
        // The archive ran at 15 s; next at 15 + 600 s.
        assert!(!sch.due(s(600)).contains(&Duty::ArchiveMonitors));
        assert!(sch.due(s(615)).contains(&Duty::ArchiveMonitors));
        assert!(sch.due(s(3660)).contains(&Duty::PruneGraph));
    }

    #[test]
    fn a_late_duty_runs_once_and_is_rescheduled_from_now() {
        let mut sch = Schedule::new(Duration::ZERO, None);
        sch.due(Duration::ZERO);
        // The loop was stalled for ten rebroadcast periods.
        let late = sch.due(s(300));
        assert_eq!(
            late.iter()
                .filter(|d| **d == Duty::RebroadcastClaims)
                .count(),
            1
        );
        assert!(!sch.due(s(329)).contains(&Duty::RebroadcastClaims));
        assert!(sch.due(s(330)).contains(&Duty::RebroadcastClaims));
    }

    #[test]
    fn the_dev_period_applies_to_every_duty_and_its_first_run() {
        let mut sch = Schedule::new(Duration::ZERO, Some(s(2)));
        assert_eq!(sch.next_due(), Some(s(2)));
        assert_eq!(sch.due(s(1)), vec![]);
        assert_eq!(sch.due(s(2)), ALL.to_vec());
        assert_eq!(sch.due(s(3)), vec![]);
        assert_eq!(sch.due(s(4)), ALL.to_vec());
    }

    mod state {
        use std::sync::{Arc, RwLock};
        use std::time::Duration;

        use bitcoin::constants::ChainHash;
        use bitcoin::secp256k1::{PublicKey, Secp256k1, SecretKey};
        use lightning::ln::msgs::UnsignedChannelUpdate;
        use lightning::routing::gossip::NodeId;
        use lightning::routing::router::{Path, RouteHop};
        use lightning::routing::scoring::ScoreUpdate;
        use lightning::types::features::{ChannelFeatures, NodeFeatures};

        use super::super::*;
        use crate::LdkLog;
        use crate::log::{Level, Logger, MemoryLog};
        use crate::store::Store;

        const SCID: u64 = 101 << 40 | 1 << 16;

        fn log() -> Log {
            let logger = Logger::at(Level::Info, Box::new(MemoryLog::default()));
            Arc::new(LdkLog::new(logger.source("lightning")))
        }

        fn key(b: u8) -> PublicKey {
            let sk = SecretKey::from_slice(&[b; 32]).unwrap_or_else(|e| panic!("{e}"));
            PublicKey::from_secret_key(&Secp256k1::new(), &sk)
        }

        fn kv() -> SqliteKvStore {
            SqliteKvStore::new(Store::in_memory().unwrap_or_else(|e| panic!("{e}")))
        }

        /// A graph with one channel between keys 1 and 2, announced at `at`.
        fn graph(at: Duration) -> NetGraph {
            let g = NetGraph::new(bitcoin::Network::Regtest, log());
            let (a, b) = (key(1), key(2));
            let (one, two) = if a.serialize() < b.serialize() {
                (a, b)
            } else {
                (b, a)
            };
            let r = g.add_channel_from_partial_announcement(
                SCID,
                Some(1_000_000),
                at.as_secs(),
                ChannelFeatures::empty(),
                NodeId::from_pubkey(&one),
                NodeId::from_pubkey(&two),
            );
            assert!(r.is_ok(), "{r:?}");
            // Both directions, so LDK routes (and scores) over it.
            for dir in [0u8, 1] {
                let r = g.update_channel_unsigned(&UnsignedChannelUpdate {
                    chain_hash: ChainHash::using_genesis_block(bitcoin::Network::Regtest),
                    short_channel_id: SCID,
                    timestamp: at.as_secs() as u32,
                    message_flags: 1,
                    channel_flags: dir,
                    cltv_expiry_delta: 18,
                    htlc_minimum_msat: 1,
                    htlc_maximum_msat: 1_000_000_000,
                    fee_base_msat: 0,
                    fee_proportional_millionths: 0,
                    excess_data: vec![],
                });
                assert!(r.is_ok(), "{r:?}");
            }
            g
        }

        #[test]
        fn pruning_drops_stale_channels_and_the_graph_is_written_without_them() {
            let now = since_epoch();
            let g = graph(now);
            let store = kv();
            let why = Logger::new(vec![], Box::new(MemoryLog::default())).source("lightning");
            // A fresh channel stays.
            assert_eq!(prune_graph(&g, now).0, 1);
            write_graph(&store, &g).unwrap_or_else(|e| panic!("{e}"));
            let back = read_graph(&store, bitcoin::Network::Regtest, &log(), &why);
            assert_eq!(back.read_only().channels().len(), 1);
            // Two weeks without an update: gone, and gone from the stored graph too.
            let later = now + Duration::from_secs(15 * 24 * 3600);
            assert_eq!(prune_graph(&g, later), (0, 0));
            write_graph(&store, &g).unwrap_or_else(|e| panic!("{e}"));
            let back = read_graph(&store, bitcoin::Network::Regtest, &log(), &why);
            assert_eq!(back.read_only().channels().len(), 0);
        }

        #[test]
        fn the_scorer_survives_a_restart_and_decays() {
            let now = since_epoch();
            let g = Arc::new(graph(now));
            let store = kv();
            let why = Logger::new(vec![], Box::new(MemoryLog::default())).source("lightning");
            let scorer = RwLock::new(read_scorer(&store, &g, &log(), &why));
            let target = NodeId::from_pubkey(&key(2));
            let path = Path {
                hops: vec![RouteHop {
                    pubkey: key(2),
                    node_features: NodeFeatures::empty(),
                    short_channel_id: SCID,
                    channel_features: ChannelFeatures::empty(),
                    fee_msat: 600_000_000,
                    cltv_expiry_delta: 18,
                    maybe_announced_channel: true,
                }],
                blinded_tail: None,
            };
            scorer
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .payment_path_failed(&path, SCID, now);
            let learnt = |s: &RwLock<Scorer>| {
                s.read()
                    .unwrap_or_else(|p| p.into_inner())
                    .estimated_channel_liquidity_range(SCID, &target)
            };
            let failed = learnt(&scorer);
            assert!(
                failed.is_some_and(|(_, max)| max <= 600_000_000),
                "the failure taught nothing: {failed:?}"
            );
            // Written and read back (a restart): the same knowledge.
            write_scorer(&store, &scorer).unwrap_or_else(|e| panic!("{e}"));
            let again = RwLock::new(read_scorer(&store, &g, &log(), &why));
            assert_eq!(learnt(&again), failed);
            // A long time later the bounds have decayed back.
            decay_scorer(&again, now + Duration::from_secs(30 * 24 * 3600));
            assert_ne!(learnt(&again), failed);
        }
    }

    #[test]
    fn the_dev_period_is_parsed_strictly() {
        assert_eq!(dev_period(None), Ok(None));
        assert_eq!(dev_period(Some("3")), Ok(Some(s(3))));
        assert_eq!(dev_period(Some(" 1 ")), Ok(Some(s(1))));
        assert!(dev_period(Some("0")).is_err());
        assert!(dev_period(Some("fast")).is_err());
        assert!(dev_period(Some("-1")).is_err());
    }
}
