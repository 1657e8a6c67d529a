//! `getroutes`' planning, pure: the channel directions of gossip (active or not) with the
//! caller's layers applied in order (channels created, updates, disabled nodes, constraints
//! and impressions as liquidity bounds, biases, reservations), then [`crate::route`]'s search
//! and splitter over what is usable, then CLN's result: one entry per distinct path with
//! `amount_in_msat`/`amount_out_msat` and `cltv_in`/`cltv_out` per hop, where each hop's
//! channel charges its fee (the source's own channels too, unless `auto.sourcefree`).
//!
//! When nothing is found, the failure is explained as askrene does: the source's or the
//! destination's total capacity, else the first hop of the shortest path (by hops, ignoring
//! limits) that cannot carry the amount and why.

use std::collections::{HashMap, HashSet, VecDeque};

use fulgur_plugin_sdk::RpcError;
use fulgur_plugin_sdk::fulgur_protocol::error::codes;
use serde_json::{Value, json};

use crate::layers::{Askrene, Layer};
use crate::liquidity::{ChanKey, Liquidity};
use crate::route::{self, Edge, Graph, NoRoute, Query, Route, SplitLimits};

/// CLN's `PAY_INSUFFICIENT_FUNDS`.
const PAY_INSUFFICIENT_FUNDS: i64 = 215;
/// CLN's `PAY_DESTINATION_INSUFFICIENT_CAPACITY`.
const PAY_DESTINATION_INSUFFICIENT_CAPACITY: i64 = 220;
/// How every "no route" explanation starts, as in CLN.
const NO_PATHS: &str = "We could not find a usable set of paths.";
/// askrene's riskfactor equivalent for the search's cost.
const RISKFACTOR: f64 = 10.0;

/// A layer as `getroutes` applies it.
pub enum LayerUse<'a> {
    /// A created layer.
    Layer(&'a Layer),
    /// `auto.sourcefree`: the source's channels charge no fee and no delay.
    SourceFree,
    /// `auto.localchans`: our node (id) and its `listpeerchannels`, exact spendable amounts.
    LocalChans(&'a str, &'a Value),
}

/// A checked `getroutes` request.
#[derive(Debug, Clone)]
pub struct RouteRequest {
    /// Paying node.
    pub source: String,
    /// Paid node.
    pub destination: String,
    /// Amount to deliver, msat.
    pub amount: u64,
    /// Largest total fee, msat.
    pub maxfee: u64,
    /// CLTV the destination needs.
    pub final_cltv: u32,
    /// Largest total CLTV.
    pub maxdelay: u32,
    /// Most routes in the answer.
    pub maxparts: usize,
    /// Whether to add the fields CLN deprecated in v26.06 (`next_node_id`, `amount_msat`,
    /// `delay`).
    pub deprecated_fields: bool,
    /// UNIX seconds.
    pub now: u64,
}

/// One channel direction, usable or not, and why not.
struct Chan {
    edge: Edge<String>,
    /// Why it cannot be used (None: usable).
    off: Option<String>,
    /// The layer that created it, if any.
    created_by: Option<String>,
}

/// All channel directions, gossip then layers.
#[derive(Default)]
struct Net {
    chans: Vec<Chan>,
    by_key: HashMap<ChanKey, usize>,
}

impl Net {
    fn push(&mut self, c: Chan) {
        if self.by_key.contains_key(&c.edge.key) {
            return;
        }
        self.by_key.insert(c.edge.key.clone(), self.chans.len());
        self.chans.push(c);
    }

    fn get_mut(&mut self, key: &ChanKey) -> Option<&mut Chan> {
        let i = *self.by_key.get(key)?;
        self.chans.get_mut(i)
    }

    fn from_gossip(gossip: &Value) -> Net {
        let mut net = Net::default();
        for (spec, active) in route::gossip_edges(gossip) {
            net.push(Chan {
                edge: spec.map_nodes(|n| n.to_string()),
                off: (!active).then(|| "marked disabled by gossip message.".to_string()),
                created_by: None,
            });
        }
        net
    }

    /// Applies `layer`: disabled nodes, created channels, then channel updates.
    fn apply(&mut self, layer: &Layer) {
        let disabled = format!("marked disabled by layer {}.", layer.name);
        for n in &layer.disabled_nodes {
            for c in self.chans.iter_mut().filter(|c| c.edge.src == *n) {
                c.off = Some(disabled.clone());
            }
        }
        for cr in &layer.created {
            for dir in 0..2u8 {
                let (src, dst) = if dir == 0 {
                    (&cr.source, &cr.destination)
                } else {
                    (&cr.destination, &cr.source)
                };
                // Until an update says otherwise, as a channel without gossip: disabled,
                // nothing fits.
                self.push(Chan {
                    edge: Edge {
                        key: ChanKey::new(&cr.scid, dir),
                        src: src.clone(),
                        dst: dst.clone(),
                        base_fee: 0,
                        ppm: 0,
                        cltv_delta: 0,
                        htlc_min: 0,
                        htlc_max: 0,
                        capacity: Some(cr.capacity_msat),
                        spendable: None,
                    },
                    off: Some("has no gossip".to_string()),
                    created_by: Some(layer.name.clone()),
                });
            }
        }
        for u in &layer.updates {
            let Some(c) = ChanKey::parse(&u.scidd).and_then(|k| self.get_mut(&k)) else {
                continue;
            };
            let e = &mut c.edge;
            e.htlc_min = u.htlc_min.unwrap_or(e.htlc_min);
            e.htlc_max = u.htlc_max.unwrap_or(e.htlc_max);
            e.base_fee = u.fee_base.unwrap_or(e.base_fee);
            e.ppm = u.fee_ppm.map_or(e.ppm, u64::from);
            e.cltv_delta = u.cltv_delta.map_or(e.cltv_delta, u32::from);
            match u.enabled {
                Some(true) => c.off = None,
                Some(false) => c.off = Some(disabled.clone()),
                None if c.off.as_deref() == Some("has no gossip") => {
                    c.off = Some(disabled.clone());
                }
                None => {}
            }
        }
    }

    fn has_node(&self, id: &str) -> bool {
        self.chans
            .iter()
            .any(|c| c.edge.src == id || c.edge.dst == id)
    }
}

fn route_error(code: i64, message: impl Into<String>) -> RpcError {
    RpcError::new(code, message)
}

fn too_expensive() -> RpcError {
    route_error(
        codes::PAY_ROUTE_TOO_EXPENSIVE,
        "Could not find route without excessive cost",
    )
}

fn too_slow() -> RpcError {
    route_error(
        codes::PAY_ROUTE_TOO_EXPENSIVE,
        "Could not find route without excessive delays",
    )
}

/// What the search needs besides the graph: bounds, biases, reservations.
struct Extras {
    liquidity: Liquidity,
    biases: HashMap<ChanKey, i64>,
    reserved: HashMap<ChanKey, u64>,
}

fn extras(net: &Net, layers: &[&Layer], ask: &Askrene, names: &[&str], now: u64) -> Extras {
    let mut liquidity = Liquidity::default();
    let mut biases: HashMap<ChanKey, i64> = HashMap::new();
    let mut reserved: HashMap<ChanKey, u64> = HashMap::new();
    let mut told: HashSet<ChanKey> = HashSet::new();
    for l in layers {
        for i in &l.intel {
            if let Some(k) = ChanKey::parse(i.scidd()) {
                told.insert(ChanKey::new(&k.scid, k.dir ^ 1));
                told.insert(k);
            }
        }
        for b in &l.biases {
            if let Some(k) = ChanKey::parse(&b.scidd) {
                *biases.entry(k).or_insert(0) += b.bias;
            }
        }
        for nb in &l.node_biases {
            for c in &net.chans {
                let add = if c.edge.src == nb.node {
                    nb.out_bias
                } else if c.edge.dst == nb.node {
                    nb.in_bias
                } else {
                    continue;
                };
                *biases.entry(c.edge.key.clone()).or_insert(0) += add;
            }
        }
    }
    for key in told {
        let cap = net
            .by_key
            .get(&key)
            .and_then(|i| net.chans.get(*i))
            .and_then(|c| c.edge.capacity);
        let (mut min, mut max) = (0, cap.unwrap_or(u64::MAX));
        for l in layers {
            l.bound(&key, &mut min, &mut max);
        }
        let max = cap.map_or(max, |c| max.min(c));
        liquidity.set(&key, min.min(max), Some(max), now);
    }
    for c in &net.chans {
        let sum: u64 = ask.reserved_on(&c.edge.key, names).map(|r| r.amount).sum();
        if sum > 0 {
            reserved.insert(c.edge.key.clone(), sum);
        }
    }
    Extras {
        liquidity,
        biases,
        reserved,
    }
}

/// One hop of the answer.
struct Hop {
    key: ChanKey,
    node_in: String,
    node_out: String,
    amount_in: u64,
    amount_out: u64,
    cltv_in: u32,
    cltv_out: u32,
}

/// `delivered` over the path `keys` from `source`, amounts and CLTVs filled in backwards.
fn hops_for(
    g: &Graph,
    source: &str,
    keys: &[ChanKey],
    delivered: u64,
    final_cltv: u32,
) -> Vec<Hop> {
    let mut hops = Vec::with_capacity(keys.len());
    let (mut amount, mut cltv) = (delivered, final_cltv);
    for key in keys.iter().rev() {
        let Some(e) = g.edge(key) else { continue };
        let amount_in = amount.saturating_add(e.fee(amount));
        let cltv_in = cltv.saturating_add(e.cltv_delta);
        hops.push(Hop {
            key: key.clone(),
            node_in: g.id(e.src).to_string(),
            node_out: g.id(e.dst).to_string(),
            amount_in,
            amount_out: amount,
            cltv_in,
            cltv_out: cltv,
        });
        amount = amount_in;
        cltv = cltv_in;
    }
    hops.reverse();
    if hops.first().is_some_and(|h| h.node_in != source) {
        hops.clear();
    }
    hops
}

/// Plans `req` over `gossip` with `uses` applied; CLN's `getroutes` result or error.
pub fn solve(
    gossip: &Value,
    uses: &[LayerUse<'_>],
    ask: &Askrene,
    names: &[&str],
    req: &RouteRequest,
) -> Result<Value, RpcError> {
    let mut net = Net::from_gossip(gossip);
    let mut layers: Vec<&Layer> = vec![];
    let mut local: Option<(&str, &Value)> = None;
    for u in uses {
        match u {
            LayerUse::Layer(l) => {
                net.apply(l);
                layers.push(l);
            }
            LayerUse::SourceFree => {
                for c in net.chans.iter_mut().filter(|c| c.edge.src == req.source) {
                    c.edge.base_fee = 0;
                    c.edge.ppm = 0;
                    c.edge.cltv_delta = 0;
                }
            }
            LayerUse::LocalChans(id, v) => local = Some((id, v)),
        }
    }
    let mut g = Graph::new();
    for c in net.chans.iter().filter(|c| c.off.is_none()) {
        g.add(c.edge.map_nodes(String::as_str));
    }
    if let Some((id, v)) = local {
        g.add_local(id, v);
    }
    let known = |id: &str| net.has_node(id) || g.find(id).is_some();
    if !known(&req.source) {
        return Err(route_error(
            codes::PAY_ROUTE_NOT_FOUND,
            format!("Unknown source node {}", req.source),
        ));
    }
    if !known(&req.destination) {
        return Err(route_error(
            codes::PAY_ROUTE_NOT_FOUND,
            format!("Unknown destination node {}", req.destination),
        ));
    }
    let source = g.node(&req.source);
    let target = g.node(&req.destination);
    let ex = extras(&net, &layers, ask, names, req.now);
    let (no_chans, no_nodes) = (HashSet::new(), HashSet::new());
    let q = Query {
        source,
        target,
        amount: req.amount,
        final_cltv: req.final_cltv,
        riskfactor: RISKFACTOR,
        max_delay: req.maxdelay,
        max_fee: Some(req.maxfee),
        excluded_chans: &no_chans,
        excluded_nodes: &no_nodes,
        reserved: &ex.reserved,
        liquidity: &ex.liquidity,
        now: req.now,
        fee_only: false,
        charge_source: true,
        biases: Some(&ex.biases),
    };
    let found = if req.maxparts == 1 {
        route::find_route(&g, &q).map(|r| vec![r])
    } else {
        let limits = SplitLimits {
            fee_budget: req.maxfee,
            min_part: (req.amount / 64).max(1),
            max_parts: req.maxparts,
        };
        route::split(&g, &q, req.amount, limits)
    };
    if found.is_err()
        && let Some(e) = capacity_shortfall(&net, req)
    {
        return Err(e);
    }
    let routes = match found {
        Ok(r) => r,
        Err(NoRoute::TooExpensive { delay, .. }) if delay > req.maxdelay => {
            return Err(too_slow());
        }
        Err(NoRoute::TooExpensive { .. }) => return Err(too_expensive()),
        Err(NoRoute::Unreachable) => return Err(explain(&net, ask, names, req)),
    };
    answer(&g, &ex, routes, req)
}

/// Squashes parts that took the same path, then builds CLN's result, checking the fee and
/// delay limits on the final amounts.
fn answer(
    g: &Graph,
    ex: &Extras,
    routes: Vec<Route>,
    req: &RouteRequest,
) -> Result<Value, RpcError> {
    let mut paths: Vec<(Vec<ChanKey>, u64)> = vec![];
    for r in routes {
        let keys: Vec<ChanKey> = r.hops.iter().map(|h| h.key.clone()).collect();
        match paths.iter_mut().find(|(k, _)| *k == keys) {
            Some((_, amount)) => *amount += r.delivered(),
            None => paths.push((keys, r.delivered())),
        }
    }
    let mut reserved = ex.reserved.clone();
    let mut total_prob = 1.0;
    let (mut fees, mut worst_cltv) = (0u64, 0u32);
    let mut out = vec![];
    for (keys, delivered) in paths {
        let hops = hops_for(g, &req.source, &keys, delivered, req.final_cltv);
        let mut prob = 1.0;
        for h in &hops {
            let r = reserved.entry(h.key.clone()).or_insert(0);
            let p = g
                .edge(&h.key)
                .and_then(|e| route::edge_probability(e, h.amount_out, *r, &ex.liquidity, req.now));
            prob *= p.unwrap_or(0.0);
            *r += h.amount_out;
        }
        total_prob *= prob;
        if let Some(first) = hops.first() {
            fees += first.amount_in - delivered;
            worst_cltv = worst_cltv.max(first.cltv_in);
        }
        let path: Vec<Value> = hops
            .iter()
            .map(|h| {
                let mut v = json!({
                    "short_channel_id_dir": h.key.to_string(),
                    "node_id_in": h.node_in,
                    "node_id_out": h.node_out,
                    "amount_in_msat": h.amount_in,
                    "amount_out_msat": h.amount_out,
                    "cltv_in": h.cltv_in,
                    "cltv_out": h.cltv_out,
                });
                if req.deprecated_fields {
                    v["next_node_id"] = json!(h.node_out);
                    v["amount_msat"] = json!(h.amount_in);
                    v["delay"] = json!(h.cltv_in);
                }
                v
            })
            .collect();
        out.push(json!({
            "probability_ppm": ppm(prob),
            "amount_msat": delivered,
            "final_cltv": req.final_cltv,
            "path": path,
        }));
    }
    if fees > req.maxfee {
        return Err(too_expensive());
    }
    if worst_cltv > req.maxdelay {
        return Err(too_slow());
    }
    Ok(json!({"probability_ppm": ppm(total_prob), "routes": out}))
}

fn ppm(p: f64) -> u64 {
    (p.clamp(0.0, 1.0) * 1_000_000.0) as u64
}

/// CLN's explanation when the source's channels, or the destination's, hold less than the
/// amount altogether.
fn capacity_shortfall(net: &Net, req: &RouteRequest) -> Option<RpcError> {
    let total = |pick: &dyn Fn(&Chan) -> bool| {
        net.chans
            .iter()
            .filter(|c| pick(c))
            .fold((0u64, 0usize), |(cap, n), c| {
                (cap.saturating_add(c.edge.capacity.unwrap_or(0)), n + 1)
            })
    };
    let (cap, n) = total(&|c| c.edge.src == req.source);
    if req.amount > cap {
        return Some(route_error(
            PAY_INSUFFICIENT_FUNDS,
            format!("{NO_PATHS} Total source capacity is only {cap}msat (in {n} channels)."),
        ));
    }
    let (cap, n) = total(&|c| c.edge.dst == req.destination);
    if req.amount > cap {
        return Some(route_error(
            PAY_DESTINATION_INSUFFICIENT_CAPACITY,
            format!("{NO_PATHS} Total destination capacity is only {cap}msat (in {n} channels)."),
        ));
    }
    None
}

/// Why no route: CLN's explanations and codes.
fn explain(net: &Net, ask: &Askrene, names: &[&str], req: &RouteRequest) -> RpcError {
    if let Some(e) = capacity_shortfall(net, req) {
        return e;
    }
    let Some(path) = shortest(net, &req.source, &req.destination) else {
        return route_error(
            codes::PAY_ROUTE_NOT_FOUND,
            "There is no connection between source and destination at all",
        );
    };
    let scids: Vec<&str> = path
        .iter()
        .map(|i| net.chans[*i].edge.key.scid.as_str())
        .collect();
    let shown = scids.join("->");
    // Amounts each hop must carry, from the destination back.
    let mut amounts = vec![0u64; path.len()];
    let mut amount = req.amount;
    for (slot, i) in amounts.iter_mut().zip(&path).rev() {
        *slot = amount;
        amount = amount.saturating_add(net.chans[*i].edge.fee(amount));
    }
    for (i, amt) in path.iter().zip(amounts) {
        let c = &net.chans[*i];
        let e = &c.edge;
        let reserved: Vec<String> = ask
            .reserved_on(&e.key, names)
            .map(|r| {
                let secs = r.since.elapsed().as_secs();
                let ago = if secs > 0 {
                    format!(" ({secs} seconds ago)")
                } else {
                    String::new()
                };
                format!("{}msat by command {}{ago}", r.amount, r.command_id)
            })
            .collect();
        let reserved_sum: u64 = ask.reserved_on(&e.key, names).map(|r| r.amount).sum();
        let cap = e.capacity.unwrap_or(u64::MAX);
        let why = if let Some(off) = &c.off {
            off.clone()
        } else if amt > cap {
            match &c.created_by {
                Some(l) => format!(" (created by layer {l}) isn't big enough to carry {amt}msat."),
                None => format!("isn't big enough to carry {amt}msat."),
            }
        } else if amt > cap.saturating_sub(reserved_sum) {
            format!("already reserved {}", reserved.join(", "))
        } else if amt > e.htlc_max {
            format!("exceeds htlc_maximum_msat ~{}msat", e.htlc_max)
        } else if amt < e.htlc_min {
            format!("below htlc_minumum_msat ~{}msat", e.htlc_min)
        } else if e.spendable.is_some_and(|s| amt > s) {
            "is constrained".to_string()
        } else {
            continue;
        };
        return route_error(
            codes::PAY_ROUTE_NOT_FOUND,
            format!(
                "{NO_PATHS} The shortest path is {shown}, but {} {why}",
                e.key
            ),
        );
    }
    route_error(
        codes::PAY_ROUTE_NOT_FOUND,
        format!(
            "{NO_PATHS} The shortest path is {shown}, but the amount does not fit the liquidity \
             known or the fee and delay limits along it"
        ),
    )
}

/// The fewest-hops path from `from` to `to` over every channel direction, usable or not
/// (indices into `net.chans`).
fn shortest(net: &Net, from: &str, to: &str) -> Option<Vec<usize>> {
    let mut out: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, c) in net.chans.iter().enumerate() {
        out.entry(c.edge.src.as_str()).or_default().push(i);
    }
    let mut via: HashMap<&str, usize> = HashMap::new();
    let mut queue = VecDeque::from([from]);
    let mut seen: HashSet<&str> = HashSet::from([from]);
    while let Some(n) = queue.pop_front() {
        if n == to {
            let mut path = vec![];
            let mut at = to;
            while at != from {
                let i = *via.get(at)?;
                path.push(i);
                at = net.chans[i].edge.src.as_str();
            }
            path.reverse();
            return Some(path);
        }
        for &i in out.get(n).into_iter().flatten() {
            let d = net.chans[i].edge.dst.as_str();
            if seen.insert(d) {
                via.insert(d, i);
                queue.push_back(d);
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layers::Update;

    /// Nodes A to D, in BOLT 7 order.
    const NODES: [&str; 4] = [
        "020000000000000000000000000000000000000000000000000000000000000001",
        "020000000000000000000000000000000000000000000000000000000000000002",
        "020000000000000000000000000000000000000000000000000000000000000003",
        "020000000000000000000000000000000000000000000000000000000000000004",
    ];
    const A: &str = NODES[0];
    const B: &str = NODES[1];
    const C: &str = NODES[2];
    const D: &str = NODES[3];

    fn req(source: &str, destination: &str, amount: u64, maxfee: u64) -> RouteRequest {
        RouteRequest {
            source: source.into(),
            destination: destination.into(),
            amount,
            maxfee,
            final_cltv: 99,
            maxdelay: 2016,
            maxparts: 100,
            deprecated_fields: false,
            now: 1000,
        }
    }

    /// A layer: A-B (1% fee), B-C (2%) of 1M sat, and two parallel channels A-D of 9,000 and
    /// 10,000 sat without fee; each usable only away from A (and B to C).
    fn fixture() -> Layer {
        let mut layer = Layer::new("l", false);
        for (a, b, scid, cap, ppm) in [
            (A, B, "0x1x0", 1_000_000_000, 10_000),
            (B, C, "0x2x0", 1_000_000_000, 20_000),
            (A, D, "1x2x1", 9_000_000, 0),
            (A, D, "3x2x3", 10_000_000, 0),
        ] {
            layer.create_channel(a, b, scid, cap);
            layer.update_channel(Update {
                scidd: format!("{scid}/0"),
                enabled: Some(true),
                htlc_min: Some(0),
                htlc_max: Some(cap),
                fee_base: Some(0),
                fee_ppm: Some(ppm),
                cltv_delta: Some(6),
            });
        }
        layer
    }

    /// Fails the test unless `e`'s message says `text`.
    fn says(e: &RpcError, text: &str) {
        assert!(e.message.contains(text), "{} lacks {text}", e.message);
    }

    fn solve_over(layers: &[&Layer], ask: &Askrene, r: &RouteRequest) -> Result<Value, RpcError> {
        let uses: Vec<LayerUse<'_>> = layers.iter().map(|l| LayerUse::Layer(l)).collect();
        let names: Vec<&str> = layers.iter().map(|l| l.name.as_str()).collect();
        solve(&json!({"channels": []}), &uses, ask, &names, r)
    }

    #[test]
    fn routes_over_layer_channels_with_clns_amounts() {
        let l = fixture();
        let none = Askrene::default();
        let v = solve_over(&[&l], &none, &req(A, C, 100_000, 5000)).expect("route");
        let path = &v["routes"][0]["path"];
        assert_eq!(path[0]["amount_in_msat"], json!(103_020));
        assert_eq!(path[0]["amount_out_msat"], json!(102_000));
        assert_eq!(path[1]["amount_in_msat"], json!(102_000));
        assert_eq!(path[0]["cltv_in"], json!(111));
        assert_eq!(path[1]["cltv_out"], json!(99));
        assert_eq!(path[0]["node_id_in"], json!(A));
        assert!(v["probability_ppm"].as_u64().is_some_and(|p| p > 999_000));
        let e = solve_over(&[&l], &none, &req(A, C, 100_000, 100)).expect_err("fee");
        assert_eq!(e.code, codes::PAY_ROUTE_TOO_EXPENSIVE);
        let mut r = req(A, C, 100_000, 5000);
        r.maxdelay = 105;
        let e = solve_over(&[&l], &none, &r).expect_err("delay");
        assert_eq!(e.message, "Could not find route without excessive delays");

        // 10,000 sat fit neither A-D channel alone: two parts, one over each.
        let v = solve_over(&[&l], &none, &req(A, D, 10_000_000, 5000)).expect("split");
        let routes = v["routes"].as_array().expect("routes");
        assert_eq!(routes.len(), 2, "{v}");
        let sum: u64 = routes
            .iter()
            .filter_map(|r| r["amount_msat"].as_u64())
            .sum();
        assert_eq!(sum, 10_000_000);
        r = req(A, D, 10_000_000, 5000);
        r.maxparts = 1;
        let e = solve_over(&[&l], &none, &r).expect_err("one part");
        assert_eq!(e.code, codes::PAY_ROUTE_NOT_FOUND);
    }

    #[test]
    fn explains_failures_as_askrene() {
        let l = fixture();
        let none = Askrene::default();
        let e = solve_over(&[&l], &none, &req(A, C, 2_000_000_000, 5000)).expect_err("source");
        assert_eq!(e.code, PAY_INSUFFICIENT_FUNDS);
        says(
            &e,
            "Total source capacity is only 1019000000msat (in 3 channels).",
        );
        let e = solve_over(&[&l], &none, &req(C, A, 100, 5000)).expect_err("disabled");
        assert_eq!(e.code, codes::PAY_ROUTE_NOT_FOUND);
        says(
            &e,
            "The shortest path is 0x2x0->0x1x0, but 0x2x0/1 has no gossip",
        );
        // Disabling a node in a later layer turns off its outgoing channels (in the same
        // layer, its own updates would enable them again, as in CLN).
        let mut m = Layer::new("m", false);
        m.disabled_nodes.push(B.to_string());
        let e = solve_over(&[&l, &m], &none, &req(A, C, 100, 5000)).expect_err("node");
        says(&e, "0x2x0/0 marked disabled by layer m.");
        let e = solve_over(&[&l], &none, &req(A, "02ff", 100, 5000)).expect_err("unknown");
        says(&e, "Unknown destination node 02ff");
    }

    #[test]
    fn constraints_and_reservations_shape_the_answer() {
        let mut l = fixture();
        l.add_intel(crate::layers::Intel::Constraint {
            scidd: "3x2x3/0".into(),
            timestamp: 1,
            min: 0,
            max: Some(1000),
        });
        let mut ask = Askrene::default();
        let v = solve_over(&[&l], &ask, &req(A, D, 5_000_000, 0)).expect("route");
        assert_eq!(
            v["routes"][0]["path"][0]["short_channel_id_dir"],
            json!("1x2x1/0")
        );
        ask.reservations.push(crate::layers::Reservation {
            key: ChanKey::new("1x2x1", 0),
            amount: 8_000_000,
            layer: None,
            since: std::time::Instant::now(),
            command_id: "t".into(),
        });
        let e = solve_over(&[&l], &ask, &req(A, D, 5_000_000, 0)).expect_err("reserved");
        assert_eq!(e.code, codes::PAY_ROUTE_NOT_FOUND);
    }
}
