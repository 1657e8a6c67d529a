//! The network graph as CLN's `listchannels` and `listnodes` see it, and CLN's `getroute` on
//! LDK's router, as typed values (`rpc/commands/graph.rs` shows them in CLN's JSON).
//!
//! `listchannels` gives one entry per channel direction that has a `channel_update`. Gossip
//! here is not checked against the chain (no UTXO lookup), so LDK rarely knows a channel's
//! capacity; `amount_msat` then falls back to the direction's `htlc_maximum_msat` (rounded
//! down to whole satoshis, as capacities are), the most the channel is known to carry.
//!
//! `getroute` runs LDK's `find_route` (one path, our usable channels as first hops, the
//! probabilistic scorer) and strips the random "shadow" CLTV offset LDK adds to the last hop,
//! so the final `delay` is exactly `cltv` as in CLN. `riskfactor` and `fuzzpercent` are
//! accepted and ignored: LDK's scorer weighs fees against success probability instead
//! (CLN ignores `fuzzpercent` too). `exclude` entries become infinite penalties for that
//! channel direction or node.

use bitcoin::secp256k1::PublicKey;
use lightning::ln::channel_state::ChannelDetails;
use lightning::routing::gossip::{ChannelUpdateInfo, NetworkGraph, NodeId};
use lightning::routing::router::{
    CandidateRouteHop, PaymentParameters, RouteParameters, find_route,
};
use lightning::routing::scoring::{
    ChannelUsage, ProbabilisticScoringFeeParameters, ScoreLookUp, ScoreUpdate,
};
use lightning::sign::EntropySource;
use lightning::util::logger::Logger;

use std::sync::{Arc, RwLock};
use std::time::Duration;

use lightning::routing::gossip::NetworkUpdate;
use lightning::routing::router::Path;

use super::payments::{direction, path_to_cln_route};
use super::{Lightning, NetGraph, Scorer, features_be};
use crate::log::SourceLog;
use crate::store::kv::SqliteKvStore;

/// CLN's default final CLTV for `getroute`.
pub const DEFAULT_CLTV: u32 = 9;
/// CLN's default `maxhops`.
pub const DEFAULT_MAXHOPS: u32 = 20;
/// CLN's `max-locktime-blocks`: the most a route may lock funds for.
pub const MAX_LOCKTIME_BLOCKS: u32 = 2016;

/// Which channels `listchannels` shows (at most one filter, as in CLN).
#[derive(Debug, Clone, Copy, Default)]
pub enum ChannelFilter {
    /// All of them.
    #[default]
    All,
    /// Both directions of one channel.
    Scid(u64),
    /// Directions leaving this node.
    Source(PublicKey),
    /// Directions arriving at this node.
    Destination(PublicKey),
}

fn pubkey_of(id: &NodeId) -> Option<PublicKey> {
    id.as_pubkey().ok()
}

/// One direction of a channel that has a `channel_update` (a `listchannels` entry).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GraphChannel {
    /// The node this direction leaves.
    pub source: PublicKey,
    /// The node it reaches.
    pub destination: PublicKey,
    /// The short channel id.
    pub scid: u64,
    /// 0 from the lesser node id, 1 from the greater.
    pub direction: u8,
    /// The capacity; the direction's `htlc_maximum_msat` (in whole satoshis) when the
    /// capacity is unknown.
    pub capacity_msat: u64,
    /// The update's `message_flags`.
    pub message_flags: u8,
    /// The update's `channel_flags` (bit 0 the direction, bit 1 disabled).
    pub channel_flags: u8,
    /// Enabled by its latest update.
    pub active: bool,
    /// The update's timestamp.
    pub last_update: u32,
    /// The base fee.
    pub base_fee_msat: u32,
    /// The proportional fee, in millionths.
    pub fee_ppm: u32,
    /// `cltv_expiry_delta`.
    pub delay: u16,
    /// The smallest HTLC it forwards.
    pub htlc_minimum_msat: u64,
    /// The largest HTLC it forwards.
    pub htlc_maximum_msat: u64,
    /// The channel's features, big-endian.
    pub features: Vec<u8>,
}

fn half(
    scid: u64,
    features: &[u8],
    capacity_sats: Option<u64>,
    from: &PublicKey,
    to: &PublicKey,
    dir: u8,
    u: &ChannelUpdateInfo,
) -> GraphChannel {
    let (message_flags, channel_flags) = match &u.last_update_message {
        Some(m) => (m.contents.message_flags, m.contents.channel_flags),
        // BOLT 7: message_flags bit 0 (must_be_one); channel_flags bit 0 the direction,
        // bit 1 disabled.
        None => (1, dir | if u.enabled { 0 } else { 2 }),
    };
    let capacity_msat = match capacity_sats {
        Some(sat) => sat.saturating_mul(1000),
        None => u.htlc_maximum_msat / 1000 * 1000,
    };
    GraphChannel {
        source: *from,
        destination: *to,
        scid,
        direction: dir,
        capacity_msat,
        message_flags,
        channel_flags,
        active: u.enabled,
        last_update: u.last_update,
        base_fee_msat: u.fees.base_msat,
        fee_ppm: u.fees.proportional_millionths,
        delay: u.cltv_expiry_delta,
        htlc_minimum_msat: u.htlc_minimum_msat,
        htlc_maximum_msat: u.htlc_maximum_msat,
        features: features.to_vec(),
    }
}

/// `listchannels`' entries, by short channel id and direction.
pub fn channels<L: Logger>(graph: &NetworkGraph<L>, filter: ChannelFilter) -> Vec<GraphChannel> {
    let g = graph.read_only();
    let mut out = vec![];
    for (scid, c) in g.channels().unordered_iter() {
        let (Some(one), Some(two)) = (pubkey_of(&c.node_one), pubkey_of(&c.node_two)) else {
            continue;
        };
        let features = features_be(c.features.le_flags());
        let halves = [
            (0u8, one, two, c.one_to_two.as_ref()),
            (1u8, two, one, c.two_to_one.as_ref()),
        ];
        for (dir, from, to, update) in halves {
            let Some(u) = update else { continue };
            let wanted = match filter {
                ChannelFilter::All => true,
                ChannelFilter::Scid(s) => s == *scid,
                ChannelFilter::Source(s) => s == from,
                ChannelFilter::Destination(d) => d == to,
            };
            if wanted {
                out.push(half(*scid, &features, c.capacity_sats, &from, &to, dir, u));
            }
        }
    }
    out.sort_by_key(|c| (c.scid, c.direction));
    out
}

/// A node of the graph (a `listnodes` entry).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GraphNode {
    /// Its id.
    pub id: PublicKey,
    /// What its `node_announcement` said, if it sent one.
    pub announced: Option<Announced>,
}

/// The fields of a `node_announcement`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Announced {
    /// Its timestamp.
    pub last_timestamp: u32,
    /// The alias, up to its first NUL byte (invalid UTF-8 replaced).
    pub alias: String,
    /// RGB.
    pub color: [u8; 3],
    /// The node's features, big-endian.
    pub features: Vec<u8>,
    /// Its addresses, as LDK renders them (`1.2.3.4:9735`, `host.onion:9735`, ...).
    pub addresses: Vec<String>,
}

/// `listnodes`' entries by node id: every node of the graph (or only `id`); the
/// announcement's fields only for nodes that sent one (as CLN does).
pub fn nodes<L: Logger>(graph: &NetworkGraph<L>, id: Option<PublicKey>) -> Vec<GraphNode> {
    let g = graph.read_only();
    let all = g.nodes();
    // One node: looked up, not searched for among all of them.
    let picked: Vec<(&NodeId, &lightning::routing::gossip::NodeInfo)> = match id {
        Some(pk) => {
            let key = NodeId::from_pubkey(&pk);
            all.get_key_value(&key).into_iter().collect()
        }
        None => all.unordered_iter().collect(),
    };
    let mut out = vec![];
    for (node_id, n) in picked {
        let Some(pk) = pubkey_of(node_id) else {
            continue;
        };
        let announced = n.announcement_info.as_ref().map(|a| {
            let alias_bytes = &a.alias().0;
            let end = alias_bytes.iter().position(|b| *b == 0).unwrap_or(32);
            Announced {
                last_timestamp: a.last_update(),
                alias: String::from_utf8_lossy(&alias_bytes[..end]).into_owned(),
                color: a.rgb(),
                features: features_be(a.features().le_flags()),
                addresses: a.addresses().iter().map(ToString::to_string).collect(),
            }
        });
        out.push(GraphNode { id: pk, announced });
    }
    out.sort_by_key(|n| n.id.to_string());
    out
}

/// Something `getroute` must avoid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exclusion {
    /// A channel in one direction (`scid/dir`).
    Channel(u64, u8),
    /// A node.
    Node(PublicKey),
}

/// Parses one `exclude` entry: `BLOCKxTXxOUT/DIR` or a node id.
pub fn parse_exclusion(s: &str) -> Option<Exclusion> {
    if let Some((scid, dir)) = s.split_once('/') {
        let scid = super::parse_scid(scid)?;
        return match dir {
            "0" => Some(Exclusion::Channel(scid, 0)),
            "1" => Some(Exclusion::Channel(scid, 1)),
            _ => None,
        };
    }
    s.parse::<PublicKey>().ok().map(Exclusion::Node)
}

/// What `getroute` asks for.
#[derive(Debug, Clone)]
pub struct GetrouteRequest {
    /// The destination.
    pub id: PublicKey,
    /// What to deliver (0: any route, probing; routed as 1msat).
    pub amount_msat: u64,
    /// The final CLTV delay.
    pub cltv: u32,
    /// The source (default: us).
    pub fromid: Option<PublicKey>,
    /// What to avoid.
    pub exclude: Vec<Exclusion>,
    /// The most hops.
    pub maxhops: u32,
}

/// A scorer that refuses excluded channel directions and nodes, and otherwise asks `inner`.
struct Excluding<'a, S> {
    inner: &'a S,
    exclude: &'a [Exclusion],
}

impl<S: ScoreLookUp> ScoreLookUp for Excluding<'_, S> {
    type ScoreParams = S::ScoreParams;
    fn channel_penalty_msat(
        &self,
        candidate: &CandidateRouteHop,
        usage: ChannelUsage,
        params: &Self::ScoreParams,
    ) -> u64 {
        let source = candidate.source();
        if let Some(target) = candidate.target() {
            for e in self.exclude {
                let hit = match e {
                    Exclusion::Node(n) => NodeId::from_pubkey(n) == target,
                    Exclusion::Channel(scid, dir) => {
                        candidate.globally_unique_short_channel_id() == Some(*scid)
                            && u8::from(source.as_slice() >= target.as_slice()) == *dir
                    }
                };
                if hit {
                    return u64::MAX;
                }
            }
        }
        self.inner.channel_penalty_msat(candidate, usage, params)
    }
}

/// One hop of a route, as CLN's `getroute` gives it (and `sendpay` takes it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteHop {
    /// The node at the end of this hop.
    pub id: PublicKey,
    /// The channel into it.
    pub channel: u64,
    /// The direction of that channel this hop uses.
    pub direction: u8,
    /// What it receives (its own fee for the next hop included).
    pub amount_msat: u64,
    /// CLTV blocks from now of the HTLC it receives.
    pub delay: u32,
}

/// Why `getroute` has no route.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    /// The graph does not know the source, and it has no channels of its own.
    #[error("{0}: unknown source node_id (no public channels?)")]
    UnknownSource(PublicKey),
    /// Neither the graph nor the source's channels know the destination.
    #[error("{0}: unknown destination node_id (no public channels?)")]
    UnknownDestination(PublicKey),
    /// No route fits the amount, the exclusions and the limits.
    #[error("Could not find a route")]
    NotFound,
    /// The route found has more hops than `maxhops`.
    #[error("Shortest route was {0}")]
    TooLong(usize),
}

/// CLN's `getroute` over `graph`: `source` pays, `first_hops` are its channels (ours, when
/// routing from us).
#[allow(clippy::too_many_arguments)]
pub fn getroute<L: Logger, S: ScoreLookUp<ScoreParams = ProbabilisticScoringFeeParameters>>(
    graph: &NetworkGraph<L>,
    source: PublicKey,
    first_hops: Option<&[&ChannelDetails]>,
    scorer: &S,
    req: &GetrouteRequest,
    random: &[u8; 32],
    logger: L,
) -> Result<Vec<RouteHop>, RouteError> {
    {
        let g = graph.read_only();
        let peers = |id: &PublicKey| {
            first_hops.is_some_and(|f| f.iter().any(|c| c.counterparty.node_id == *id))
        };
        let known = |id: &PublicKey| g.node(&NodeId::from_pubkey(id)).is_some();
        if !(known(&source) || first_hops.is_some_and(|f| !f.is_empty())) {
            return Err(RouteError::UnknownSource(source));
        }
        if !(known(&req.id) || peers(&req.id)) {
            return Err(RouteError::UnknownDestination(req.id));
        }
    }
    if req.maxhops == 0 {
        return Err(RouteError::NotFound);
    }
    let mut params = PaymentParameters::from_node_id(req.id, req.cltv);
    params.max_total_cltv_expiry_delta = MAX_LOCKTIME_BLOCKS;
    params.max_path_count = 1;
    params.max_path_length = u8::try_from(req.maxhops).unwrap_or(u8::MAX);
    let mut route_params =
        RouteParameters::from_payment_params_and_value(params, req.amount_msat.max(1));
    // CLN's getroute has no fee budget (callers judge the route's cost).
    route_params.max_total_routing_fee_msat = None;
    let excluding = Excluding {
        inner: scorer,
        exclude: &req.exclude,
    };
    let score_params = ProbabilisticScoringFeeParameters::default();
    let route = find_route(
        &source,
        &route_params,
        graph,
        first_hops,
        logger,
        &excluding,
        &score_params,
        random,
    )
    .map_err(|_| RouteError::NotFound)?;
    let Some(mut path) = route.paths.into_iter().next() else {
        return Err(RouteError::NotFound);
    };
    if path.hops.len() > req.maxhops as usize {
        return Err(RouteError::TooLong(path.hops.len()));
    }
    // Remove LDK's random shadow offset: the final delay is what the caller asked for.
    if let Some(last) = path.hops.last_mut() {
        last.cltv_expiry_delta = req.cltv;
    }
    let mut prev = source;
    Ok(path_to_cln_route(&path)
        .into_iter()
        .map(|h| {
            let dir = direction(&prev, &h.id);
            prev = h.id;
            RouteHop {
                id: h.id,
                channel: h.channel,
                direction: dir,
                amount_msat: h.amount_msat,
                delay: h.delay,
            }
        })
        .collect())
}

/// The graph service: the network graph that gossip fills and the scorer that payments
/// teach, with CLN's views of them (`listchannels`, `listnodes`), routes (`getroute`) and
/// their upkeep (pruning, decay, persistence in the key-value store). LDK's gossip sync,
/// router and message router share the two `Arc`s; the rest of the engine goes through
/// these methods.
///
/// Lock order: the scorer's `RwLock` is a leaf. LDK's router reads it while it finds a
/// route, payment events write it, and nothing is locked under it; the graph's own locks
/// are LDK's.
pub struct Graph {
    network: Arc<NetGraph>,
    scorer: Arc<RwLock<Scorer>>,
    kv: Arc<SqliteKvStore>,
    log: SourceLog,
}

impl Graph {
    /// The service over `network` and `scorer` (read from `kv` by [`super::duties`]).
    pub(crate) fn new(
        network: Arc<NetGraph>,
        scorer: Arc<RwLock<Scorer>>,
        kv: Arc<SqliteKvStore>,
        log: SourceLog,
    ) -> Graph {
        Graph {
            network,
            scorer,
            kv,
            log,
        }
    }

    /// LDK's graph, for what reads it directly (a payment's hop details).
    pub(crate) fn network(&self) -> &Arc<NetGraph> {
        &self.network
    }

    /// `listchannels`.
    pub fn channels(&self, filter: ChannelFilter) -> Vec<GraphChannel> {
        channels(&self.network, filter)
    }

    /// `listnodes`.
    pub fn nodes(&self, id: Option<PublicKey>) -> Vec<GraphNode> {
        nodes(&self.network, id)
    }

    /// Whether `id` is a node of the graph.
    pub fn knows_node(&self, id: &PublicKey) -> bool {
        self.network
            .read_only()
            .node(&NodeId::from_pubkey(id))
            .is_some()
    }

    /// A route from `source` for `req`, with our usable channels as `first_hops` when the
    /// source is us.
    pub(crate) fn route(
        &self,
        source: PublicKey,
        first_hops: Option<&[&ChannelDetails]>,
        req: &GetrouteRequest,
        random: &[u8; 32],
    ) -> Result<Vec<RouteHop>, RouteError> {
        let scorer = self.scorer.read().unwrap_or_else(|p| p.into_inner());
        getroute(
            &self.network,
            source,
            first_hops,
            &*scorer,
            req,
            random,
            Arc::new(super::LdkLog::new(self.log.clone())),
        )
    }

    /// What a failed payment path teaches: the channel update it carried, and the
    /// scorer's view of `path` (failed at `scid`, or successful up to a final failure).
    pub(crate) fn learn_failure(
        &self,
        update: Option<&NetworkUpdate>,
        path: &Path,
        scid: Option<u64>,
        failed_permanently: bool,
        now: Duration,
    ) {
        if let Some(u) = update {
            self.network.handle_network_update(u);
        }
        let mut s = self.scorer.write().unwrap_or_else(|p| p.into_inner());
        match scid {
            Some(scid) => s.payment_path_failed(path, scid, now),
            None if failed_permanently => s.payment_path_successful(path, now),
            None => {}
        }
    }

    /// A path that carried a payment.
    pub(crate) fn learn_success(&self, path: &Path, now: Duration) {
        self.scorer
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .payment_path_successful(path, now);
    }

    /// Drops stale channels (LDK's two-week rule).
    pub(crate) fn prune(&self, now: Duration) {
        let (channels, nodes) = super::duties::prune_graph(&self.network, now);
        self.log.debug(&format!(
            "Network graph pruned: {channels} channels, {nodes} nodes left"
        ));
    }

    /// Lets the scorer's learnt bounds decay up to `now`.
    pub(crate) fn decay(&self, now: Duration) {
        super::duties::decay_scorer(&self.scorer, now);
        self.log.debug("Scorer decayed");
    }

    /// Writes the network graph (after pruning, and at `stop`).
    pub(crate) fn persist_graph(&self) {
        if let Err(e) = super::duties::write_graph(&self.kv, &self.network) {
            self.log
                .unusual(&format!("cannot persist the network graph: {e}"));
        }
    }

    /// Writes the scorer (after each decay, and at `stop`).
    pub(crate) fn persist_scorer(&self) {
        if let Err(e) = super::duties::write_scorer(&self.kv, &self.scorer) {
            self.log.unusual(&format!("cannot persist the scorer: {e}"));
        }
    }
}

impl Lightning {
    /// `listchannels`.
    pub fn listchannels(&self, filter: ChannelFilter) -> Vec<GraphChannel> {
        self.graph.channels(filter)
    }

    /// `listnodes`.
    pub fn listnodes(&self, id: Option<PublicKey>) -> Vec<GraphNode> {
        self.graph.nodes(id)
    }

    /// `getroute`: a route from us (or `fromid`), usable as `sendpay`'s route.
    pub fn getroute(&self, req: &GetrouteRequest) -> Result<Vec<RouteHop>, RouteError> {
        let us = self.manager.get_our_node_id();
        let source = req.fromid.unwrap_or(us);
        let channels = self.manager.list_usable_channels();
        let first: Vec<&ChannelDetails> = channels.iter().collect();
        let first_hops = (source == us).then_some(first.as_slice());
        let random = self.keys.get_secure_random_bytes();
        self.graph.route(source, first_hops, req, &random)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::{SystemTime, UNIX_EPOCH};

    use bitcoin::constants::ChainHash;
    use bitcoin::secp256k1::{Secp256k1, SecretKey};
    use lightning::ln::msgs::{SocketAddress, UnsignedChannelUpdate, UnsignedNodeAnnouncement};
    use lightning::routing::gossip::NodeAlias;
    use lightning::routing::scoring::{ProbabilisticScorer, ProbabilisticScoringDecayParameters};
    use lightning::types::features::{ChannelFeatures, NodeFeatures};
    use lightning::util::logger::Record;

    use super::*;
    use crate::payments::{ClnHop, cln_route_to_path};

    struct Quiet;
    impl Logger for Quiet {
        fn log(&self, r: Record) {
            if std::env::var_os("GRAPH_TEST_LOG").is_some() {
                eprintln!("{:?} {}", r.level, r.args);
            }
        }
    }
    type Log = Arc<Quiet>;

    fn key(b: u8) -> PublicKey {
        let sk = SecretKey::from_slice(&[b; 32]).unwrap_or_else(|e| panic!("{e}"));
        PublicKey::from_secret_key(&Secp256k1::signing_only(), &sk)
    }

    fn scid(block: u64) -> u64 {
        block << 40 | 1 << 16
    }

    fn now() -> u32 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs() as u32)
            .unwrap_or(0)
    }

    struct Policy {
        base: u32,
        ppm: u32,
        cltv: u16,
        enabled: bool,
    }

    fn policy(base: u32, ppm: u32, cltv: u16) -> Policy {
        Policy {
            base,
            ppm,
            cltv,
            enabled: true,
        }
    }

    /// A channel `from`→`to` with an update in that direction only (or both, given `back`).
    fn channel(
        g: &NetworkGraph<Log>,
        block: u64,
        from: u8,
        to: u8,
        cap_sats: Option<u64>,
        fwd: Policy,
        back: Option<Policy>,
    ) {
        let (a, b) = (key(from), key(to));
        let (one, two) = if a.serialize() < b.serialize() {
            (a, b)
        } else {
            (b, a)
        };
        let r = g.add_channel_from_partial_announcement(
            scid(block),
            cap_sats,
            u64::from(now()),
            ChannelFeatures::empty(),
            NodeId::from_pubkey(&one),
            NodeId::from_pubkey(&two),
        );
        assert!(r.is_ok(), "{r:?}");
        let upd = |src: &PublicKey, p: Policy| {
            let dir = u8::from(*src != one);
            let r = g.update_channel_unsigned(&UnsignedChannelUpdate {
                chain_hash: ChainHash::using_genesis_block(bitcoin::Network::Regtest),
                short_channel_id: scid(block),
                timestamp: now(),
                message_flags: 1,
                channel_flags: dir | if p.enabled { 0 } else { 2 },
                cltv_expiry_delta: p.cltv,
                htlc_minimum_msat: 1,
                htlc_maximum_msat: 500_000_000,
                fee_base_msat: p.base,
                fee_proportional_millionths: p.ppm,
                excess_data: vec![],
            });
            assert!(r.is_ok(), "{r:?}");
        };
        upd(&a, fwd);
        if let Some(p) = back {
            upd(&b, p);
        }
    }

    /// A(1)-B(2)-C(3)-D(4), and an expensive detour B-E(5)-D; B announces itself. LDK routes
    /// only over channels with both directions known; C-E has one (listed, never used).
    fn graph() -> NetworkGraph<Log> {
        let g = NetworkGraph::new(bitcoin::Network::Regtest, Arc::new(Quiet));
        let back = || Some(policy(7, 7, 7));
        let cap = Some(1_000_000);
        channel(&g, 1, 1, 2, cap, policy(0, 0, 144), back());
        channel(&g, 2, 2, 3, cap, policy(1000, 100, 40), back());
        channel(&g, 3, 3, 4, cap, policy(10, 1, 6), back());
        channel(&g, 4, 2, 5, None, policy(50_000, 0, 10), back());
        channel(&g, 5, 5, 4, cap, policy(5000, 0, 10), back());
        let mut off = policy(1, 1, 1);
        off.enabled = false;
        channel(&g, 6, 3, 5, cap, off, None);
        let mut alias = [0u8; 32];
        alias[..5].copy_from_slice(b"bravo");
        let r = g.update_node_from_unsigned_announcement(&UnsignedNodeAnnouncement {
            features: NodeFeatures::empty(),
            timestamp: now(),
            node_id: NodeId::from_pubkey(&key(2)),
            rgb: [1, 2, 3],
            alias: NodeAlias(alias),
            addresses: vec![SocketAddress::TcpIpV4 {
                addr: [127, 0, 0, 1],
                port: 9735,
            }],
            excess_address_data: vec![],
            excess_data: vec![],
        });
        assert!(r.is_ok(), "{r:?}");
        g
    }

    fn route(g: &NetworkGraph<Log>, req: &GetrouteRequest) -> Result<Vec<RouteHop>, RouteError> {
        let scorer = ProbabilisticScorer::new(
            ProbabilisticScoringDecayParameters::default(),
            g,
            Arc::new(Quiet),
        );
        getroute(g, key(1), None, &scorer, req, &[42; 32], Arc::new(Quiet))
    }

    fn to(id: u8, amount_msat: u64) -> GetrouteRequest {
        GetrouteRequest {
            id: key(id),
            amount_msat,
            cltv: DEFAULT_CLTV,
            fromid: None,
            exclude: vec![],
            maxhops: DEFAULT_MAXHOPS,
        }
    }

    fn via(r: &[RouteHop]) -> Vec<PublicKey> {
        r.iter().map(|h| h.id).collect()
    }

    fn ok<T, E: std::fmt::Display>(r: Result<T, E>) -> T {
        r.unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn getroute_gives_clns_amounts_and_delays() {
        let g = graph();
        let r = ok(route(&g, &to(4, 100_000)));
        // C charges 10 + 1ppm on 100000 for C->D; B 1000 + 100ppm on 100010 for B->C.
        let hop = |id: u8, from: u8, block, amount_msat, delay| RouteHop {
            id: key(id),
            channel: scid(block),
            direction: direction(&key(from), &key(id)),
            amount_msat,
            delay,
        };
        assert_eq!(
            r,
            vec![
                hop(2, 1, 1, 101_020, 55),
                hop(3, 2, 2, 100_010, 15),
                hop(4, 3, 3, 100_000, 9)
            ]
        );
        // The same route, read back as sendpay reads it, gives LDK's per-hop fees and deltas.
        let hops: Vec<ClnHop> = r
            .iter()
            .map(|h| ClnHop {
                id: h.id,
                channel: h.channel,
                amount_msat: h.amount_msat,
                delay: h.delay,
            })
            .collect();
        let p = ok(cln_route_to_path(&hops, &[]));
        let fees: Vec<(u64, u32)> = p
            .hops
            .iter()
            .map(|h| (h.fee_msat, h.cltv_expiry_delta))
            .collect();
        assert_eq!(fees, vec![(1010, 40), (10, 6), (100_000, 9)]);
        // The final delay is exactly cltv (LDK's random shadow offset removed).
        let mut req = to(4, 100_000);
        req.cltv = 40;
        let r = ok(route(&g, &req));
        assert_eq!((r[2].delay, r[0].delay), (40, 86));
    }

    #[test]
    fn exclusions_steer_the_route() {
        let g = graph();
        let (b, c, d, e) = (key(2), key(3), key(4), key(5));
        let bc = Exclusion::Channel(scid(2), direction(&b, &c));
        let mut req = to(4, 100_000);
        req.exclude = vec![bc];
        assert_eq!(via(&ok(route(&g, &req))), vec![b, e, d]);
        // The other direction of B-C is not what the route uses.
        req.exclude = vec![Exclusion::Channel(scid(2), 1 - direction(&b, &c))];
        assert_eq!(via(&ok(route(&g, &req)))[1], c);
        req.exclude = vec![Exclusion::Node(c)];
        assert_eq!(via(&ok(route(&g, &req)))[1], e);
        req.exclude = vec![Exclusion::Node(c), Exclusion::Node(e)];
        assert_eq!(route(&g, &req), Err(RouteError::NotFound));
    }

    #[test]
    fn getroute_refuses_unknown_ends_and_routes_that_do_not_fit() {
        let g = graph();
        assert_eq!(
            route(&g, &to(9, 1000)),
            Err(RouteError::UnknownDestination(key(9)))
        );
        let mut req = to(4, 1000);
        req.fromid = Some(key(9));
        let e = getroute(
            &g,
            key(9),
            None,
            &ProbabilisticScorer::new(
                ProbabilisticScoringDecayParameters::default(),
                &g,
                Arc::new(Quiet),
            ),
            &req,
            &[1; 32],
            Arc::new(Quiet),
        );
        assert_eq!(e, Err(RouteError::UnknownSource(key(9))));
        // More than any channel carries.
        assert_eq!(route(&g, &to(4, 600_000_000)), Err(RouteError::NotFound));
        let mut short = to(4, 1000);
        short.maxhops = 2;
        assert!(matches!(
            route(&g, &short),
            Err(RouteError::NotFound | RouteError::TooLong(3))
        ));
        short.maxhops = 0;
        assert_eq!(route(&g, &short), Err(RouteError::NotFound));
        // Probing amount 0 still finds the route.
        assert_eq!(via(&ok(route(&g, &to(4, 0)))).len(), 3);
    }

    #[test]
    fn listchannels_shows_each_direction_with_an_update() {
        let g = graph();
        let all = channels(&g, ChannelFilter::All);
        assert_eq!(all.len(), 11);
        let ab = channels(&g, ChannelFilter::Scid(scid(1)));
        assert_eq!(ab.len(), 2);
        let from_a = ab
            .iter()
            .find(|c| c.source == key(1))
            .cloned()
            .unwrap_or_else(|| panic!("no A->B"));
        let dir = direction(&key(1), &key(2));
        assert_eq!(from_a.destination, key(2));
        assert_eq!(from_a.direction, dir);
        assert_eq!(from_a.scid, scid(1));
        assert_eq!(from_a.capacity_msat, 1_000_000_000);
        assert_eq!(from_a.delay, 144);
        assert_eq!(from_a.channel_flags, dir);
        assert_eq!(from_a.message_flags, 1);
        assert_eq!(from_a.htlc_maximum_msat, 500_000_000);
        assert!(from_a.active);
        assert!(from_a.features.is_empty());
        // Unknown capacity: the update's htlc_maximum_msat.
        let be = channels(&g, ChannelFilter::Scid(scid(4)));
        assert_eq!(be.len(), 2);
        let b_to_e = be
            .iter()
            .find(|c| c.source == key(2))
            .cloned()
            .unwrap_or_else(|| panic!("no B->E"));
        assert_eq!(b_to_e.capacity_msat, 500_000_000);
        assert_eq!(b_to_e.base_fee_msat, 50_000);
        // A disabled direction, with no update the other way.
        let ce = channels(&g, ChannelFilter::Scid(scid(6)));
        assert_eq!(ce.len(), 1);
        assert!(!ce[0].active);
        assert_eq!(ce[0].channel_flags, direction(&key(3), &key(5)) | 2);
        let from_b = channels(&g, ChannelFilter::Source(key(2)));
        assert_eq!(from_b.len(), 3, "B->A, B->C, B->E");
        let into_d = channels(&g, ChannelFilter::Destination(key(4)));
        let srcs: Vec<PublicKey> = into_d.iter().map(|c| c.source).collect();
        assert_eq!(srcs.len(), 2);
        assert!(srcs.contains(&key(3)));
        assert!(channels(&g, ChannelFilter::Scid(scid(9))).is_empty());
        // Sorted by channel, then direction.
        let order: Vec<(u64, u8)> = all.iter().map(|c| (c.scid, c.direction)).collect();
        let mut sorted = order.clone();
        sorted.sort_unstable();
        assert_eq!(order, sorted);
    }

    #[test]
    fn listnodes_gives_announced_fields_only_to_announced_nodes() {
        let g = graph();
        assert_eq!(nodes(&g, None).len(), 5);
        let b = nodes(&g, Some(key(2)));
        assert_eq!(b.len(), 1);
        let a = b[0]
            .announced
            .clone()
            .unwrap_or_else(|| panic!("B announced"));
        assert_eq!(a.alias, "bravo");
        assert_eq!(a.color, [1, 2, 3]);
        assert_eq!(a.addresses, vec!["127.0.0.1:9735".to_string()]);
        assert!(a.last_timestamp > 0);
        assert_eq!(
            nodes(&g, Some(key(3))),
            vec![GraphNode {
                id: key(3),
                announced: None
            }]
        );
        assert!(nodes(&g, Some(key(9))).is_empty());
    }

    #[test]
    fn exclusions_parse_like_clns() {
        assert_eq!(
            parse_exclusion("1x1x0/1"),
            Some(Exclusion::Channel(scid(1), 1))
        );
        assert_eq!(
            parse_exclusion(&key(3).to_string()),
            Some(Exclusion::Node(key(3)))
        );
        for bad in ["1x1x0", "1x1x0/2", "1x1/0", "zz"] {
            assert_eq!(parse_exclusion(bad), None, "{bad}");
        }
    }
}
