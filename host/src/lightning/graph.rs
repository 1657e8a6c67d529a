//! The network graph as CLN shows it (`listchannels`, `listnodes`) and CLN's `getroute` on
//! LDK's router.
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
use fulgur_protocol::RpcError;
use fulgur_protocol::error::codes;
use lightning::ln::channel_state::ChannelDetails;
use lightning::routing::gossip::{ChannelUpdateInfo, NetworkGraph, NodeId};
use lightning::routing::router::{
    CandidateRouteHop, PaymentParameters, RouteParameters, find_route,
};
use lightning::routing::scoring::{ChannelUsage, ProbabilisticScoringFeeParameters, ScoreLookUp};
use lightning::sign::EntropySource;
use lightning::util::logger::Logger;
use serde_json::{Value, json};

use super::payments::{direction, path_to_cln_route};
use super::{Lightning, features_hex, scid_string};

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

fn half_json(
    scid: u64,
    features: &str,
    capacity_sats: Option<u64>,
    from: &PublicKey,
    to: &PublicKey,
    dir: u8,
    u: &ChannelUpdateInfo,
) -> Value {
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
    json!({
        "source": from.to_string(),
        "destination": to.to_string(),
        "short_channel_id": scid_string(scid),
        "direction": dir,
        "public": true,
        "amount_msat": capacity_msat,
        "message_flags": message_flags,
        "channel_flags": channel_flags,
        "active": u.enabled,
        "last_update": u.last_update,
        "base_fee_millisatoshi": u.fees.base_msat,
        "fee_per_millionth": u.fees.proportional_millionths,
        "delay": u.cltv_expiry_delta,
        "htlc_minimum_msat": u.htlc_minimum_msat,
        "htlc_maximum_msat": u.htlc_maximum_msat,
        "features": features,
    })
}

/// `listchannels`' entries.
pub fn channels_json<L: Logger>(graph: &NetworkGraph<L>, filter: ChannelFilter) -> Vec<Value> {
    let g = graph.read_only();
    let mut out = vec![];
    for (scid, c) in g.channels().unordered_iter() {
        let (Some(one), Some(two)) = (pubkey_of(&c.node_one), pubkey_of(&c.node_two)) else {
            continue;
        };
        let features = features_hex(c.features.le_flags());
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
                out.push(half_json(
                    *scid,
                    &features,
                    c.capacity_sats,
                    &from,
                    &to,
                    dir,
                    u,
                ));
            }
        }
    }
    out.sort_by(|a, b| {
        let key = |v: &Value| {
            (
                super::parse_scid(v["short_channel_id"].as_str().unwrap_or("")),
                v["direction"].as_u64(),
            )
        };
        key(a).cmp(&key(b))
    });
    out
}

/// `listnodes`' entries: every node of the graph; the announcement's fields only for nodes
/// that sent one (as CLN does).
pub fn nodes_json<L: Logger>(graph: &NetworkGraph<L>, id: Option<PublicKey>) -> Vec<Value> {
    let g = graph.read_only();
    let mut out = vec![];
    for (node_id, n) in g.nodes().unordered_iter() {
        let Some(pk) = pubkey_of(node_id) else {
            continue;
        };
        if id.is_some_and(|i| i != pk) {
            continue;
        }
        let mut v = json!({"nodeid": pk.to_string()});
        if let Some(a) = &n.announcement_info {
            let alias_bytes = &a.alias().0;
            let end = alias_bytes.iter().position(|b| *b == 0).unwrap_or(32);
            let addresses: Vec<Value> = a
                .addresses()
                .iter()
                .map(|s| super::net::address_json(&s.to_string()))
                .filter(|v| !v.is_null())
                .collect();
            v["last_timestamp"] = json!(a.last_update());
            v["alias"] = json!(String::from_utf8_lossy(&alias_bytes[..end]));
            v["color"] = json!(fulgur_base::hex(&a.rgb()));
            v["features"] = json!(features_hex(a.features().le_flags()));
            v["addresses"] = json!(addresses);
        }
        out.push(v);
    }
    out.sort_by(|a, b| a["nodeid"].as_str().cmp(&b["nodeid"].as_str()));
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

fn no_route() -> RpcError {
    RpcError::new(codes::PAY_ROUTE_NOT_FOUND, "Could not find a route")
}

/// CLN's `getroute` over `graph`: `source` pays, `first_hops` are its channels (ours, when
/// routing from us). Errors as CLN: -32602 for a source or destination the graph does not
/// know, 205 when no route fits.
#[allow(clippy::too_many_arguments)]
pub fn getroute_json<L: Logger, S: ScoreLookUp<ScoreParams = ProbabilisticScoringFeeParameters>>(
    graph: &NetworkGraph<L>,
    source: PublicKey,
    first_hops: Option<&[&ChannelDetails]>,
    scorer: &S,
    req: &GetrouteRequest,
    random: &[u8; 32],
    logger: L,
) -> Result<Value, RpcError> {
    {
        let g = graph.read_only();
        let peers = |id: &PublicKey| {
            first_hops.is_some_and(|f| f.iter().any(|c| c.counterparty.node_id == *id))
        };
        let known = |id: &PublicKey| g.node(&NodeId::from_pubkey(id)).is_some();
        if !(known(&source) || first_hops.is_some_and(|f| !f.is_empty())) {
            return Err(RpcError::invalid_params(format!(
                "{source}: unknown source node_id (no public channels?)"
            )));
        }
        if !(known(&req.id) || peers(&req.id)) {
            return Err(RpcError::invalid_params(format!(
                "{}: unknown destination node_id (no public channels?)",
                req.id
            )));
        }
    }
    if req.maxhops == 0 {
        return Err(no_route());
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
    .map_err(|_| no_route())?;
    let Some(mut path) = route.paths.into_iter().next() else {
        return Err(no_route());
    };
    if path.hops.len() > req.maxhops as usize {
        return Err(RpcError::new(
            codes::PAY_ROUTE_NOT_FOUND,
            format!("Shortest route was {}", path.hops.len()),
        ));
    }
    // Remove LDK's random shadow offset: the final delay is what the caller asked for.
    if let Some(last) = path.hops.last_mut() {
        last.cltv_expiry_delta = req.cltv;
    }
    let mut prev = source;
    let hops: Vec<Value> = path_to_cln_route(&path)
        .into_iter()
        .map(|h| {
            let dir = direction(&prev, &h.id);
            prev = h.id;
            json!({
                "id": h.id.to_string(),
                "channel": scid_string(h.channel),
                "direction": dir,
                "amount_msat": h.amount_msat,
                "delay": h.delay,
                "style": "tlv",
            })
        })
        .collect();
    Ok(json!({"route": hops}))
}

impl Lightning {
    /// `listchannels`.
    pub fn listchannels(&self, filter: ChannelFilter) -> Vec<Value> {
        channels_json(&self.graph, filter)
    }

    /// `listnodes`.
    pub fn listnodes(&self, id: Option<PublicKey>) -> Vec<Value> {
        nodes_json(&self.graph, id)
    }

    /// `getroute`: a route from us (or `fromid`) in CLN's form, usable as `sendpay`'s route.
    pub fn getroute(&self, req: &GetrouteRequest) -> Result<Value, RpcError> {
        let us = self.manager.get_our_node_id();
        let source = req.fromid.unwrap_or(us);
        let channels = self.manager.list_usable_channels();
        let first: Vec<&ChannelDetails> = channels.iter().collect();
        let first_hops = (source == us).then_some(first.as_slice());
        let random = self.keys.get_secure_random_bytes();
        let scorer = self.scorer.read().unwrap_or_else(|p| p.into_inner());
        getroute_json(
            &self.graph,
            source,
            first_hops,
            &*scorer,
            req,
            &random,
            self.graph_logger(),
        )
    }

    fn graph_logger(&self) -> super::Log {
        std::sync::Arc::new(super::LdkLog(self.log.clone()))
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
    use crate::lightning::payments::testutil::schema_errors;
    use crate::lightning::payments::{ClnHop, cln_route_to_path};

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

    fn route(g: &NetworkGraph<Log>, req: &GetrouteRequest) -> Result<Value, RpcError> {
        let scorer = ProbabilisticScorer::new(
            ProbabilisticScoringDecayParameters::default(),
            g,
            Arc::new(Quiet),
        );
        getroute_json(g, key(1), None, &scorer, req, &[42; 32], Arc::new(Quiet))
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

    fn via(v: &Value) -> Vec<String> {
        v["route"]
            .as_array()
            .map(|r| {
                r.iter()
                    .map(|h| h["id"].as_str().unwrap_or("").to_string())
                    .collect()
            })
            .unwrap_or_default()
    }

    #[test]
    fn getroute_gives_clns_amounts_and_delays() {
        let g = graph();
        let r = route(&g, &to(4, 100_000)).unwrap_or_else(|e| panic!("{e}"));
        // C charges 10 + 1ppm on 100000 for C->D; B 1000 + 100ppm on 100010 for B->C.
        let expect = json!({"route": [
            {"id": key(2).to_string(), "channel": "1x1x0", "direction": direction(&key(1), &key(2)),
             "amount_msat": 101_020, "delay": 55, "style": "tlv"},
            {"id": key(3).to_string(), "channel": "2x1x0", "direction": direction(&key(2), &key(3)),
             "amount_msat": 100_010, "delay": 15, "style": "tlv"},
            {"id": key(4).to_string(), "channel": "3x1x0", "direction": direction(&key(3), &key(4)),
             "amount_msat": 100_000, "delay": 9, "style": "tlv"},
        ]});
        assert_eq!(r, expect);
        assert_eq!(schema_errors("getroute.json", &r), None);
        // The same route, read back as sendpay reads it, gives LDK's per-hop fees and deltas.
        let hops: Vec<ClnHop> = r["route"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|h| ClnHop {
                        id: h["id"]
                            .as_str()
                            .and_then(|s| s.parse().ok())
                            .unwrap_or(key(1)),
                        channel: crate::lightning::parse_scid(h["channel"].as_str().unwrap_or(""))
                            .unwrap_or(0),
                        amount_msat: h["amount_msat"].as_u64().unwrap_or(0),
                        delay: h["delay"].as_u64().unwrap_or(0) as u32,
                    })
                    .collect()
            })
            .unwrap_or_default();
        let p = cln_route_to_path(&hops, &[]).unwrap_or_else(|e| panic!("{e}"));
        let fees: Vec<(u64, u32)> = p
            .hops
            .iter()
            .map(|h| (h.fee_msat, h.cltv_expiry_delta))
            .collect();
        assert_eq!(fees, vec![(1010, 40), (10, 6), (100_000, 9)]);
        // The final delay is exactly cltv (LDK's random shadow offset removed).
        let mut req = to(4, 100_000);
        req.cltv = 40;
        let r = route(&g, &req).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r["route"][2]["delay"], json!(40));
        assert_eq!(r["route"][0]["delay"], json!(86));
    }

    #[test]
    fn exclusions_steer_the_route() {
        let g = graph();
        let (b, c, d, e) = (key(2), key(3), key(4), key(5));
        let bc = Exclusion::Channel(scid(2), direction(&b, &c));
        let mut req = to(4, 100_000);
        req.exclude = vec![bc];
        let r = route(&g, &req).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(via(&r), vec![b.to_string(), e.to_string(), d.to_string()]);
        // The other direction of B-C is not what the route uses.
        req.exclude = vec![Exclusion::Channel(scid(2), 1 - direction(&b, &c))];
        let r = route(&g, &req).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(via(&r)[1], c.to_string());
        req.exclude = vec![Exclusion::Node(c)];
        let r = route(&g, &req).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(via(&r)[1], e.to_string());
        req.exclude = vec![Exclusion::Node(c), Exclusion::Node(e)];
        let r = route(&g, &req);
        assert_eq!(
            r.err().map(|e| (e.code, e.message)),
            Some((205, "Could not find a route".into()))
        );
    }

    #[test]
    fn getroute_errors_are_clns() {
        let g = graph();
        let e = route(&g, &to(9, 1000)).err().map(|e| e.code);
        assert_eq!(e, Some(-32602), "unknown destination");
        let mut req = to(4, 1000);
        req.fromid = Some(key(9));
        let e = getroute_json(
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
        assert!(
            e.err()
                .is_some_and(|e| e.code == -32602 && e.message.contains("unknown source"))
        );
        // More than any channel carries.
        assert_eq!(
            route(&g, &to(4, 600_000_000)).err().map(|e| e.code),
            Some(205)
        );
        let mut short = to(4, 1000);
        short.maxhops = 2;
        assert_eq!(route(&g, &short).err().map(|e| e.code), Some(205));
        short.maxhops = 0;
        assert_eq!(route(&g, &short).err().map(|e| e.code), Some(205));
        // Probing amount 0 still finds the route.
        assert_eq!(via(&route(&g, &to(4, 0)).unwrap_or_default()).len(), 3);
    }

    #[test]
    fn listchannels_shows_each_direction_with_an_update() {
        let g = graph();
        let all = channels_json(&g, ChannelFilter::All);
        assert_eq!(all.len(), 11);
        assert_eq!(
            schema_errors("listchannels.json", &json!({"channels": all})),
            None
        );
        let ab = channels_json(&g, ChannelFilter::Scid(scid(1)));
        assert_eq!(ab.len(), 2);
        let from_a = ab
            .iter()
            .find(|c| c["source"] == json!(key(1).to_string()))
            .cloned()
            .unwrap_or_default();
        let dir = direction(&key(1), &key(2));
        assert_eq!(from_a["destination"], json!(key(2).to_string()));
        assert_eq!(from_a["direction"], json!(dir));
        assert_eq!(from_a["short_channel_id"], json!("1x1x0"));
        assert_eq!(from_a["amount_msat"], json!(1_000_000_000u64));
        assert_eq!(from_a["delay"], json!(144));
        assert_eq!(from_a["channel_flags"], json!(dir));
        assert_eq!(from_a["message_flags"], json!(1));
        assert_eq!(from_a["htlc_maximum_msat"], json!(500_000_000u64));
        assert_eq!(from_a["active"], json!(true));
        assert_eq!(from_a["public"], json!(true));
        assert_eq!(from_a["features"], json!(""));
        // Unknown capacity: the update's htlc_maximum_msat.
        let be = channels_json(&g, ChannelFilter::Scid(scid(4)));
        assert_eq!(be.len(), 2);
        let b_to_e = be
            .iter()
            .find(|c| c["source"] == json!(key(2).to_string()))
            .cloned()
            .unwrap_or_default();
        assert_eq!(b_to_e["amount_msat"], json!(500_000_000u64));
        assert_eq!(b_to_e["base_fee_millisatoshi"], json!(50_000));
        // A disabled direction, with no update the other way.
        let ce = channels_json(&g, ChannelFilter::Scid(scid(6)));
        assert_eq!(ce.len(), 1);
        assert_eq!(ce[0]["active"], json!(false));
        let dir = direction(&key(3), &key(5));
        assert_eq!(ce[0]["channel_flags"], json!(dir | 2));
        let from_b = channels_json(&g, ChannelFilter::Source(key(2)));
        assert_eq!(from_b.len(), 3, "B->A, B->C, B->E");
        let into_d = channels_json(&g, ChannelFilter::Destination(key(4)));
        let srcs: Vec<&Value> = into_d.iter().map(|c| &c["source"]).collect();
        assert_eq!(srcs.len(), 2);
        assert!(srcs.contains(&&json!(key(3).to_string())));
        assert!(channels_json(&g, ChannelFilter::Scid(scid(9))).is_empty());
    }

    #[test]
    fn listnodes_gives_announced_fields_only_to_announced_nodes() {
        let g = graph();
        let all = nodes_json(&g, None);
        assert_eq!(all.len(), 5);
        assert_eq!(
            schema_errors("listnodes.json", &json!({"nodes": all})),
            None
        );
        let b = nodes_json(&g, Some(key(2)));
        assert_eq!(b.len(), 1);
        assert_eq!(b[0]["alias"], json!("bravo"));
        assert_eq!(b[0]["color"], json!("010203"));
        assert_eq!(
            b[0]["addresses"],
            json!([{"type": "ipv4", "address": "127.0.0.1", "port": 9735}])
        );
        assert!(b[0]["last_timestamp"].is_u64());
        let c = nodes_json(&g, Some(key(3)));
        assert_eq!(c, vec![json!({"nodeid": key(3).to_string()})]);
        assert!(nodes_json(&g, Some(key(9))).is_empty());
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
