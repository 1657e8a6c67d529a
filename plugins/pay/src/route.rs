//! The payment graph and the route search: channel directions from gossip (`listchannels`),
//! our own channels with their exact spendable amounts (`listpeerchannels`) and the invoice's
//! route hints; a Dijkstra run backwards from the destination so fees and CLTV deltas add up
//! hop by hop; and the splitter that cuts an amount into parts when one path is not enough.
//!
//! The cost of a channel for an amount is its fee, CLN's risk term for the locked-up funds
//! (`amount * cltv_delta * riskfactor / 5_259_600`) and an uncertainty penalty,
//! `-ln(P) * (PROB_BASE_MSAT + amount * PROB_PPM / 1e6)`, where `P` is the probability that the
//! channel has the liquidity, from the [`Liquidity`] model. Pure logic, no I/O.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap, HashSet};

use serde_json::{Value, json};

use crate::liquidity::{ChanKey, Liquidity};

/// Fixed part of the uncertainty penalty, msat per unit of `-ln P`.
const PROB_BASE_MSAT: f64 = 2_000.0;
/// Proportional part of the uncertainty penalty, millionths of the amount per unit of `-ln P`.
const PROB_PPM: f64 = 10_000.0;
/// Probabilities below this count as "cannot carry it".
const MIN_USABLE_PROB: f64 = 1e-4;
/// A part whose route is less likely than this is split further, if it can be.
pub const SPLIT_BELOW_PROB: f64 = 0.3;
/// The most hops a route may have (an onion carries 20 with a payment secret).
pub const MAX_HOPS: usize = 20;
/// Blocks per year times 100 (riskfactor is a yearly percentage), as CLN uses.
const RISK_DIVISOR: f64 = 5_259_600.0;

/// One channel direction `src -> dst` that can carry a payment. `N` names its nodes: their
/// indices in a [`Graph`], their ids in an [`EdgeSpec`].
#[derive(Debug, Clone)]
pub struct Edge<N = usize> {
    /// Which channel direction.
    pub key: ChanKey,
    /// The sender.
    pub src: N,
    /// The receiver.
    pub dst: N,
    /// Fee base, msat.
    pub base_fee: u64,
    /// Fee rate, millionths.
    pub ppm: u64,
    /// CLTV delta the sender asks for.
    pub cltv_delta: u32,
    /// Smallest HTLC.
    pub htlc_min: u64,
    /// Largest HTLC.
    pub htlc_max: u64,
    /// Channel capacity in msat, when known.
    pub capacity: Option<u64>,
    /// Exactly what we can send, for our own channels.
    pub spendable: Option<u64>,
}

/// The fields of an edge, before node ids become indices.
pub type EdgeSpec<'a> = Edge<&'a str>;

impl<N> Edge<N> {
    /// The same edge with its nodes named by `name`.
    pub fn map_nodes<'a, M>(&'a self, name: impl Fn(&'a N) -> M) -> Edge<M> {
        Edge {
            key: self.key.clone(),
            src: name(&self.src),
            dst: name(&self.dst),
            base_fee: self.base_fee,
            ppm: self.ppm,
            cltv_delta: self.cltv_delta,
            htlc_min: self.htlc_min,
            htlc_max: self.htlc_max,
            capacity: self.capacity,
            spendable: self.spendable,
        }
    }

    /// The fee the sender charges to forward `amount` over this edge.
    pub fn fee(&self, amount: u64) -> u64 {
        let prop = (u128::from(amount) * u128::from(self.ppm) / 1_000_000) as u64;
        self.base_fee.saturating_add(prop)
    }
}

/// Nodes (by id) and channel directions.
#[derive(Debug, Clone, Default)]
pub struct Graph {
    nodes: Vec<String>,
    index: HashMap<String, usize>,
    edges: Vec<Edge>,
    by_key: HashMap<ChanKey, usize>,
    incoming: Vec<Vec<usize>>,
}

/// A fee field of a channel in `listchannels` or a route hint (0 when absent).
fn fee_of(v: &Value, field: &str) -> u64 {
    v.get(field).and_then(Value::as_u64).unwrap_or(0)
}

/// A CLTV delta field of a channel in `listchannels` or a route hint (144 when absent).
fn cltv_of(v: &Value, field: &str) -> u32 {
    v.get(field)
        .and_then(Value::as_u64)
        .and_then(|d| u32::try_from(d).ok())
        .unwrap_or(144)
}

fn msat_of(v: Option<&Value>) -> Option<u64> {
    crate::params::parse_msat(v?).ok()
}

impl Graph {
    /// An empty graph.
    pub fn new() -> Self {
        Graph::default()
    }

    /// The index of node `id`, added if new.
    pub fn node(&mut self, id: &str) -> usize {
        if let Some(i) = self.index.get(id) {
            return *i;
        }
        let i = self.nodes.len();
        self.nodes.push(id.to_string());
        self.index.insert(id.to_string(), i);
        self.incoming.push(vec![]);
        i
    }

    /// The index of `id`, if known.
    pub fn find(&self, id: &str) -> Option<usize> {
        self.index.get(id).copied()
    }

    /// The id of node `i`.
    pub fn id(&self, i: usize) -> &str {
        self.nodes.get(i).map_or("", String::as_str)
    }

    /// Whether any channel direction leads into node `i` (gossip or a hint).
    pub fn has_incoming(&self, i: usize) -> bool {
        self.incoming.get(i).is_some_and(|e| !e.is_empty())
    }

    /// The edge for `key`, if any.
    pub fn edge(&self, key: &ChanKey) -> Option<&Edge> {
        self.by_key.get(key).and_then(|i| self.edges.get(*i))
    }

    /// Adds an edge, replacing any earlier one for the same channel direction.
    pub fn add(&mut self, spec: EdgeSpec<'_>) {
        let src = self.node(spec.src);
        let dst = self.node(spec.dst);
        let edge = spec.map_nodes(|n| if *n == spec.src { src } else { dst });
        if let Some(i) = self.by_key.get(&edge.key).copied() {
            let old_dst = self.edges[i].dst;
            self.incoming[old_dst].retain(|e| *e != i);
            self.edges[i] = edge;
            self.incoming[dst].push(i);
            return;
        }
        let i = self.edges.len();
        let edge_key = edge.key.clone();
        self.edges.push(edge);
        self.by_key.insert(edge_key, i);
        self.incoming[dst].push(i);
    }

    /// Removes every edge leaving node `id` (our gossip view of our own channels, replaced by
    /// exact local data).
    pub fn drop_outgoing(&mut self, id: &str) {
        let Some(src) = self.find(id) else { return };
        for list in &mut self.incoming {
            list.retain(|e| self.edges[*e].src != src);
        }
    }

    /// Adds `listchannels`' active channel directions.
    pub fn add_gossip(&mut self, listchannels: &Value) {
        for (spec, active) in gossip_edges(listchannels) {
            if active {
                self.add(spec);
            }
        }
    }

    /// Replaces our channels with `listpeerchannels`' usable ones (connected, normal), with
    /// their exact spendable amounts and no fee.
    pub fn add_local(&mut self, our_id: &str, listpeerchannels: &Value) {
        self.drop_outgoing(our_id);
        let Some(chans) = listpeerchannels.get("channels").and_then(Value::as_array) else {
            return;
        };
        for c in chans {
            if c.get("state").and_then(Value::as_str) != Some("CHANNELD_NORMAL")
                || c.get("peer_connected").and_then(Value::as_bool) != Some(true)
            {
                continue;
            }
            let Some(peer) = c.get("peer_id").and_then(Value::as_str) else {
                continue;
            };
            let scid = c
                .get("short_channel_id")
                .and_then(Value::as_str)
                .or_else(|| c.pointer("/alias/local").and_then(Value::as_str));
            let Some(scid) = scid else { continue };
            let dir = c
                .get("direction")
                .and_then(Value::as_u64)
                .map_or_else(|| u8::from(our_id > peer), |d| (d & 1) as u8);
            let spendable = msat_of(c.get("spendable_msat")).unwrap_or(0);
            self.add(EdgeSpec {
                key: ChanKey::new(scid, dir),
                src: our_id,
                dst: peer,
                base_fee: 0,
                ppm: 0,
                cltv_delta: 0,
                htlc_min: msat_of(c.get("minimum_htlc_out_msat")).unwrap_or(0),
                htlc_max: msat_of(c.get("maximum_htlc_out_msat")).unwrap_or(u64::MAX),
                capacity: msat_of(c.get("total_msat")),
                spendable: Some(spendable),
            });
        }
    }

    /// Adds the invoice's route hints (`decode`'s `routes`): each hop is a channel from its
    /// `pubkey` to the next hop's, the last one to `destination`. Hints for channels gossip
    /// already knows replace nothing.
    pub fn add_hints(&mut self, routes: Option<&Value>, destination: &str) {
        let Some(routes) = routes.and_then(Value::as_array) else {
            return;
        };
        for route in routes {
            let Some(hops) = route.as_array() else {
                continue;
            };
            for (i, hop) in hops.iter().enumerate() {
                let next = match hops.get(i + 1) {
                    Some(n) => n.get("pubkey").and_then(Value::as_str),
                    None => Some(destination),
                };
                let (Some(src), Some(dst), Some(scid)) = (
                    hop.get("pubkey").and_then(Value::as_str),
                    next,
                    hop.get("short_channel_id").and_then(Value::as_str),
                ) else {
                    continue;
                };
                let dir = u8::from(src > dst);
                let key = ChanKey::new(scid, dir);
                if self.edge(&key).is_some() {
                    continue;
                }
                self.add(EdgeSpec {
                    key,
                    src,
                    dst,
                    base_fee: fee_of(hop, "fee_base_msat"),
                    ppm: fee_of(hop, "fee_proportional_millionths"),
                    cltv_delta: cltv_of(hop, "cltv_expiry_delta"),
                    htlc_min: 0,
                    htlc_max: u64::MAX,
                    capacity: None,
                    spendable: None,
                });
            }
        }
    }
}

/// Every channel direction in `listchannels`, with whether it is active.
pub fn gossip_edges(listchannels: &Value) -> Vec<(EdgeSpec<'_>, bool)> {
    let Some(chans) = listchannels.get("channels").and_then(Value::as_array) else {
        return vec![];
    };
    let mut out = Vec::with_capacity(chans.len());
    for c in chans {
        let (Some(src), Some(dst), Some(scid), Some(dir)) = (
            c.get("source").and_then(Value::as_str),
            c.get("destination").and_then(Value::as_str),
            c.get("short_channel_id").and_then(Value::as_str),
            c.get("direction").and_then(Value::as_u64),
        ) else {
            continue;
        };
        let capacity = msat_of(c.get("amount_msat"));
        let spec = EdgeSpec {
            key: ChanKey::new(scid, (dir & 1) as u8),
            src,
            dst,
            base_fee: fee_of(c, "base_fee_millisatoshi"),
            ppm: fee_of(c, "fee_per_millionth"),
            cltv_delta: cltv_of(c, "delay"),
            htlc_min: msat_of(c.get("htlc_minimum_msat")).unwrap_or(0),
            htlc_max: msat_of(c.get("htlc_maximum_msat"))
                .or(capacity)
                .unwrap_or(u64::MAX),
            capacity,
            spendable: None,
        };
        out.push((
            spec,
            c.get("active").and_then(Value::as_bool) != Some(false),
        ));
    }
    out
}

/// One hop of a route in CLN's form: the node reached, the channel into it, the amount that
/// channel carries and the CLTV (blocks from now) of that HTLC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hop {
    /// Node reached.
    pub id: String,
    /// Channel used, with direction.
    pub key: ChanKey,
    /// Amount carried, msat.
    pub amount_msat: u64,
    /// CLTV delay, blocks from now.
    pub delay: u32,
}

/// A route found for one part.
#[derive(Debug, Clone, PartialEq)]
pub struct Route {
    /// Hops from us to the destination.
    pub hops: Vec<Hop>,
    /// Modelled success probability.
    pub probability: f64,
}

impl Route {
    /// Amount delivered to the destination.
    pub fn delivered(&self) -> u64 {
        self.hops.last().map_or(0, |h| h.amount_msat)
    }

    /// Amount leaving us (delivered plus fees).
    pub fn sent(&self) -> u64 {
        self.hops.first().map_or(0, |h| h.amount_msat)
    }

    /// Total fee.
    pub fn fee(&self) -> u64 {
        self.sent().saturating_sub(self.delivered())
    }

    /// Total CLTV delay.
    pub fn delay(&self) -> u32 {
        self.hops.first().map_or(0, |h| h.delay)
    }

    /// The route as `sendpay` takes it (getroute's hops).
    pub fn to_json(&self) -> Value {
        Value::Array(
            self.hops
                .iter()
                .map(|h| {
                    json!({
                        "id": h.id,
                        "channel": h.key.scid,
                        "direction": h.key.dir,
                        "amount_msat": h.amount_msat,
                        "delay": h.delay,
                        "style": "tlv",
                    })
                })
                .collect(),
        )
    }
}

/// What the search must respect.
#[derive(Debug, Clone)]
pub struct Query<'a> {
    /// Our node.
    pub source: usize,
    /// The payee.
    pub target: usize,
    /// Amount to deliver.
    pub amount: u64,
    /// CLTV the last hop must carry (min_final_cltv_expiry plus margin).
    pub final_cltv: u32,
    /// CLN's riskfactor.
    pub riskfactor: f64,
    /// Largest total CLTV delay.
    pub max_delay: u32,
    /// Largest fee for this route (None: any).
    pub max_fee: Option<u64>,
    /// Channel directions not to use.
    pub excluded_chans: &'a HashSet<ChanKey>,
    /// Nodes not to route through.
    pub excluded_nodes: &'a HashSet<String>,
    /// Amounts already on their way over channel directions (this payment's other parts).
    pub reserved: &'a HashMap<ChanKey, u64>,
    /// Learned liquidity.
    pub liquidity: &'a Liquidity,
    /// Now, UNIX seconds.
    pub now: u64,
    /// Rank by fee only (used to tell "too expensive" from "no route").
    pub fee_only: bool,
    /// Whether the source's own channels charge their fee and CLTV delta (askrene's
    /// `getroutes` without `auto.sourcefree`); `pay` pays itself nothing.
    pub charge_source: bool,
    /// askrene's biases per channel direction, -100 (avoid) to +100 (prefer), if any.
    pub biases: Option<&'a HashMap<ChanKey, i64>>,
}

/// Why no route came out.
#[derive(Debug, Clone, PartialEq)]
pub enum NoRoute {
    /// No path can carry the amount.
    Unreachable,
    /// The cheapest path costs more than the fee limit.
    TooExpensive {
        /// Its fee.
        fee: u64,
        /// Its total delay.
        delay: u32,
    },
}

#[derive(Debug, Clone, Copy)]
struct Label {
    cost: f64,
    amount: u64,
    delay: u32,
    prob: f64,
    hops: usize,
    /// Edge from this node toward the destination (None at the destination).
    next: Option<usize>,
}

#[derive(Debug, PartialEq)]
struct Entry {
    cost: f64,
    node: usize,
}

impl Eq for Entry {}

impl Ord for Entry {
    fn cmp(&self, other: &Self) -> Ordering {
        // Min-heap on cost; ties broken by node index for determinism.
        other
            .cost
            .total_cmp(&self.cost)
            .then_with(|| other.node.cmp(&self.node))
    }
}

impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// The chance that `e` carries `amount` on top of the `reserved` amount other parts already
/// rely on (None: it cannot). Our own channels carry exactly what is spendable.
pub fn edge_probability<N>(
    e: &Edge<N>,
    amount: u64,
    reserved: u64,
    liquidity: &Liquidity,
    now: u64,
) -> Option<f64> {
    let total = amount.saturating_add(reserved);
    let prob = match e.spendable {
        Some(s) => {
            if total > s {
                return None;
            }
            1.0
        }
        None => {
            if e.capacity.is_some_and(|c| total > c) {
                return None;
            }
            // The parts planned before this one already rely on `reserved`: what
            // matters is whether the channel holds this part too, given that it
            // holds them (the unconditional chance of `total` would count their
            // risk again, and a channel shared by many parts would look unable to
            // carry much more than half its capacity however the amount is split).
            let p_total = liquidity.probability(&e.key, e.capacity, total, now);
            let p_reserved = if reserved == 0 {
                1.0
            } else {
                liquidity.probability(&e.key, e.capacity, reserved, now)
            };
            if p_reserved <= 0.0 {
                0.0
            } else {
                (p_total / p_reserved).min(1.0)
            }
        }
    };
    (prob >= MIN_USABLE_PROB).then_some(prob)
}

/// Dijkstra from `q.target` back to `q.source`.
fn search(g: &Graph, q: &Query<'_>, fee_cap: Option<u64>) -> Option<Route> {
    let n = g.nodes.len();
    if q.source >= n || q.target >= n || q.amount == 0 || q.source == q.target {
        return None;
    }
    let mut labels: Vec<Option<Label>> = vec![None; n];
    let mut done = vec![false; n];
    let mut heap = BinaryHeap::new();
    labels[q.target] = Some(Label {
        cost: 0.0,
        amount: q.amount,
        delay: q.final_cltv,
        prob: 1.0,
        hops: 0,
        next: None,
    });
    heap.push(Entry {
        cost: 0.0,
        node: q.target,
    });
    while let Some(Entry { node: v, .. }) = heap.pop() {
        if done[v] {
            continue;
        }
        done[v] = true;
        if v == q.source {
            break;
        }
        let Some(lv) = labels[v] else { continue };
        if lv.hops >= MAX_HOPS {
            continue;
        }
        for &ei in &g.incoming[v] {
            let e = &g.edges[ei];
            let u = e.src;
            if done[u] || q.excluded_chans.contains(&e.key) {
                continue;
            }
            if u != q.source && q.excluded_nodes.contains(g.id(u)) {
                continue;
            }
            let amt = lv.amount;
            if amt < e.htlc_min || amt > e.htlc_max {
                continue;
            }
            let reserved = q.reserved.get(&e.key).copied().unwrap_or(0);
            let Some(prob) = edge_probability(e, amt, reserved, q.liquidity, q.now) else {
                continue;
            };
            let charged = u != q.source || q.charge_source;
            let (fee, delta) = if charged {
                (e.fee(amt), e.cltv_delta)
            } else {
                (0, 0)
            };
            let amount_u = amt.saturating_add(fee);
            let delay_u = lv.delay.saturating_add(delta);
            if charged && delay_u > q.max_delay {
                continue;
            }
            if lv.delay > q.max_delay {
                continue;
            }
            if let Some(cap) = fee_cap
                && amount_u.saturating_sub(q.amount) > cap
            {
                continue;
            }
            let mut step = fee as f64 + 1.0;
            if !q.fee_only {
                step += amt as f64 * f64::from(delta) * q.riskfactor / RISK_DIVISOR;
                step += -prob.ln() * (PROB_BASE_MSAT + amt as f64 * PROB_PPM / 1e6);
            }
            if let Some(bias) = q.biases.and_then(|b| b.get(&e.key)) {
                // As askrene: a bias of +100 makes a channel 30 times cheaper, -100 dearer.
                step *= (-(*bias as f64) * 30f64.ln() / 100.0).exp();
            }
            let cost = lv.cost + step;
            if labels[u].is_none_or(|l| cost < l.cost) {
                labels[u] = Some(Label {
                    cost,
                    amount: amount_u,
                    delay: delay_u,
                    prob: lv.prob * prob,
                    hops: lv.hops + 1,
                    next: Some(ei),
                });
                heap.push(Entry { cost, node: u });
            }
        }
    }
    let src = labels[q.source]?;
    let mut hops = vec![];
    let mut at = q.source;
    let mut next = src.next;
    while let Some(ei) = next {
        let e = &g.edges[ei];
        let l = labels[e.dst]?;
        hops.push(Hop {
            id: g.id(e.dst).to_string(),
            key: e.key.clone(),
            amount_msat: l.amount,
            delay: l.delay,
        });
        at = e.dst;
        next = l.next;
        if hops.len() > MAX_HOPS {
            return None;
        }
    }
    (at == q.target).then_some(Route {
        hops,
        probability: src.prob,
    })
}

/// The best route for `q`, or why there is none: [`NoRoute::TooExpensive`] when a route
/// exists but only above the fee limit or `max_delay`.
pub fn find_route(g: &Graph, q: &Query<'_>) -> Result<Route, NoRoute> {
    if let Some(r) = search(g, q, q.max_fee) {
        return Ok(r);
    }
    let cheap = Query {
        fee_only: true,
        ..q.clone()
    };
    if q.max_fee.is_some()
        && let Some(r) = search(g, &cheap, q.max_fee)
    {
        return Ok(r);
    }
    let unbounded = Query {
        max_delay: u32::MAX,
        ..cheap
    };
    match search(g, &unbounded, None) {
        Some(r) if q.max_fee.is_none_or(|m| r.fee() <= m) && r.delay() <= q.max_delay => Ok(r),
        Some(r) => Err(NoRoute::TooExpensive {
            fee: r.fee(),
            delay: r.delay(),
        }),
        None => Err(NoRoute::Unreachable),
    }
}

/// The route over `r`'s path that sends exactly `total` (`sendamount`): it delivers as much
/// as the hops' fees leave (the largest amount whose route costs at most `total`), and the
/// msat that fee rounding leaves over go to the first forwarding node as extra fee. Our own
/// first channel charges nothing. None if the path is not in `g` or nothing is left to
/// deliver.
pub fn sending_exactly(g: &Graph, r: &Route, total: u64) -> Option<Route> {
    let edges: Vec<&Edge> = r
        .hops
        .iter()
        .map(|h| g.edge(&h.key))
        .collect::<Option<_>>()?;
    // Amounts carried over each hop when `delivered` reaches the destination.
    let amounts = |delivered: u64| -> Vec<u64> {
        let mut out = vec![delivered; edges.len()];
        for i in (0..edges.len().saturating_sub(1)).rev() {
            out[i] = out[i + 1].saturating_add(edges[i + 1].fee(out[i + 1]));
        }
        out
    };
    let sent = |delivered: u64| amounts(delivered).first().copied().unwrap_or(0);
    // Fees grow with the amount: search the largest delivery that fits.
    let (mut lo, mut hi) = (0u64, total);
    while lo < hi {
        let mid = hi - (hi - lo) / 2;
        if sent(mid) <= total {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    if lo == 0 {
        return None;
    }
    let mut amounts = amounts(lo);
    if let Some(first) = amounts.first_mut() {
        *first = total;
    }
    let hops = r
        .hops
        .iter()
        .zip(amounts)
        .map(|(h, amount_msat)| Hop {
            amount_msat,
            ..h.clone()
        })
        .collect();
    Some(Route {
        hops,
        probability: r.probability,
    })
}

/// Limits for [`split`].
#[derive(Debug, Clone, Copy)]
pub struct SplitLimits {
    /// Fee budget left for everything [`split`] plans.
    pub fee_budget: u64,
    /// Smallest part worth sending.
    pub min_part: u64,
    /// The most parts to plan at once.
    pub max_parts: usize,
}

/// Routes delivering `amount` in total: one if a likely enough path carries it, else parts
/// found by halving, each reserving its amounts so the next one sees what is left. Each
/// part's fee stays within its share of `limits.fee_budget`. Fails with the last reason when
/// the amount cannot be covered.
pub fn split(
    g: &Graph,
    base: &Query<'_>,
    amount: u64,
    limits: SplitLimits,
) -> Result<Vec<Route>, NoRoute> {
    let mut reserved = base.reserved.clone();
    let mut routes: Vec<Route> = vec![];
    let mut left = amount;
    let mut budget = limits.fee_budget;
    let mut try_amt = amount;
    let mut last = NoRoute::Unreachable;
    while left > 0 {
        if routes.len() >= limits.max_parts {
            return Err(last);
        }
        let amt = try_amt.min(left);
        let share = (u128::from(budget) * u128::from(amt) / u128::from(left)) as u64;
        let q = Query {
            amount: amt,
            max_fee: Some(share),
            reserved: &reserved,
            ..base.clone()
        };
        let can_halve = amt / 2 >= limits.min_part;
        match find_route(g, &q) {
            Ok(r) if r.probability >= SPLIT_BELOW_PROB || !can_halve => {
                for h in &r.hops {
                    *reserved.entry(h.key.clone()).or_insert(0) += h.amount_msat;
                }
                left -= amt;
                budget = budget.saturating_sub(r.fee());
                routes.push(r);
            }
            Ok(_) => try_amt = amt / 2,
            Err(e) => {
                last = e;
                if !can_halve {
                    return Err(last);
                }
                try_amt = amt / 2;
            }
        }
    }
    Ok(routes)
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "02aa";
    const B: &str = "02bb";
    const C: &str = "02cc";
    const D: &str = "02dd";

    fn spec<'a>(scid: &str, src: &'a str, dst: &'a str, base: u64, cap: u64) -> EdgeSpec<'a> {
        EdgeSpec {
            key: ChanKey::new(scid, u8::from(src > dst)),
            src,
            dst,
            base_fee: base,
            ppm: 1000,
            cltv_delta: 6,
            htlc_min: 1,
            htlc_max: cap,
            capacity: Some(cap),
            spendable: None,
        }
    }

    /// A -> B -> D and A -> C -> D; B charges `b_fee`, C 1000 base. Our channels are local
    /// with `ab`/`ac` spendable.
    fn diamond(b_fee: u64, ab: u64, ac: u64) -> Graph {
        let mut g = Graph::new();
        g.add(EdgeSpec {
            spendable: Some(ab),
            base_fee: 0,
            ppm: 0,
            ..spec("1x1x0", A, B, 0, 1_000_000)
        });
        g.add(EdgeSpec {
            spendable: Some(ac),
            base_fee: 0,
            ppm: 0,
            ..spec("1x2x0", A, C, 0, 1_000_000)
        });
        g.add(spec("1x3x0", B, D, b_fee, 1_000_000));
        g.add(spec("1x4x0", C, D, 1000, 1_000_000));
        g
    }

    struct Ctx {
        ex_c: HashSet<ChanKey>,
        ex_n: HashSet<String>,
        ex_c_nodes_all: HashSet<String>,
        res: HashMap<ChanKey, u64>,
        liq: Liquidity,
    }

    impl Ctx {
        fn new() -> Self {
            Ctx {
                ex_c: HashSet::new(),
                ex_n: HashSet::new(),
                ex_c_nodes_all: [B, C].iter().map(|s| s.to_string()).collect(),
                res: HashMap::new(),
                liq: Liquidity::default(),
            }
        }
        fn query<'a>(&'a self, g: &Graph, amount: u64) -> Query<'a> {
            Query {
                source: g.find(A).unwrap_or(usize::MAX),
                target: g.find(D).unwrap_or(usize::MAX),
                amount,
                final_cltv: 20,
                riskfactor: 10.0,
                max_delay: 2016,
                max_fee: None,
                excluded_chans: &self.ex_c,
                excluded_nodes: &self.ex_n,
                reserved: &self.res,
                liquidity: &self.liq,
                now: 1000,
                fee_only: false,
                charge_source: false,
                biases: None,
            }
        }
    }

    #[test]
    fn fees_and_delays_add_up_backwards() {
        let g = diamond(5000, 900_000, 900_000);
        let ctx = Ctx::new();
        let r = find_route(&g, &ctx.query(&g, 100_000)).expect("route");
        // Cheaper C: 1000 + 100 (1000 ppm of 100_000).
        assert_eq!(r.hops.len(), 2);
        assert_eq!(r.hops[0].id, C);
        assert_eq!(r.hops[0].key, ChanKey::new("1x2x0", 0));
        assert_eq!(r.hops[1].amount_msat, 100_000);
        assert_eq!(r.hops[0].amount_msat, 101_100);
        assert_eq!(r.hops[1].delay, 20);
        assert_eq!(r.hops[0].delay, 26);
        assert_eq!(r.fee(), 1100);
        assert_eq!(r.to_json()[0]["channel"], json!("1x2x0"));
    }

    #[test]
    fn sending_exactly_takes_the_fees_out_of_the_amount() {
        let g = diamond(5000, 900_000, 900_000);
        let ctx = Ctx::new();
        let r = find_route(&g, &ctx.query(&g, 100_000)).expect("route");
        // C charges 1000 + 1000 ppm: 98_902 delivered costs 1000 + 98.
        let s = sending_exactly(&g, &r, 100_000).expect("fits");
        assert_eq!((s.sent(), s.delivered(), s.fee()), (100_000, 98_902, 1098));
        assert_eq!(s.delay(), r.delay());
        assert_eq!(s.hops[0].key, r.hops[0].key);
        // 98_999 costs 1098 (100_097 sent), 99_000 costs 1099 (100_099): sending 100_098
        // delivers 98_999 and C gets the msat left over.
        let s = sending_exactly(&g, &r, 100_098).expect("fits");
        assert_eq!((s.sent(), s.delivered(), s.fee()), (100_098, 98_999, 1099));
        // Less than C's base fee leaves nothing to deliver.
        assert!(sending_exactly(&g, &r, 999).is_none());
    }

    #[test]
    fn learned_failures_and_exclusions_move_the_route() {
        let g = diamond(5000, 900_000, 900_000);
        let mut ctx = Ctx::new();
        ctx.liq.failed(&ChanKey::new("1x4x0", 0), 50_000, 1000);
        let r = find_route(&g, &ctx.query(&g, 100_000)).expect("route");
        assert_eq!(r.hops[0].id, B);
        // A smaller amount still fits under the learned bound.
        let r = find_route(&g, &ctx.query(&g, 10_000)).expect("route");
        assert_eq!(r.hops[0].id, C);
        ctx.ex_n.insert(B.to_string());
        assert_eq!(
            find_route(&g, &ctx.query(&g, 100_000)),
            Err(NoRoute::Unreachable)
        );
        let mut ctx = Ctx::new();
        ctx.ex_c.insert(ChanKey::new("1x4x0", 0));
        assert_eq!(
            find_route(&g, &ctx.query(&g, 100_000)).expect("route").hops[0].id,
            B
        );
    }

    #[test]
    fn local_spendable_is_exact() {
        let g = diamond(1000, 50_000, 200_000);
        let ctx = Ctx::new();
        let r = find_route(&g, &ctx.query(&g, 100_000)).expect("route");
        assert_eq!(r.hops[0].id, C);
        let g = diamond(1000, 50_000, 50_000);
        assert_eq!(
            find_route(&g, &ctx.query(&g, 100_000)),
            Err(NoRoute::Unreachable)
        );
    }

    #[test]
    fn fee_limit_gives_too_expensive() {
        let g = diamond(5000, 900_000, 900_000);
        let ctx = Ctx::new();
        let mut q = ctx.query(&g, 100_000);
        q.max_fee = Some(1099);
        assert_eq!(
            find_route(&g, &q),
            Err(NoRoute::TooExpensive {
                fee: 1100,
                delay: 26
            })
        );
        q.max_fee = Some(1100);
        assert_eq!(find_route(&g, &q).expect("route").fee(), 1100);
        q.max_fee = None;
        q.max_delay = 25;
        assert_eq!(
            find_route(&g, &q),
            Err(NoRoute::TooExpensive {
                fee: 1100,
                delay: 26
            })
        );
        q.excluded_nodes = &ctx.ex_c_nodes_all;
        assert_eq!(find_route(&g, &q), Err(NoRoute::Unreachable));
    }

    #[test]
    fn splits_when_no_single_path_carries_it() {
        let g = diamond(1000, 600_000, 600_000);
        let ctx = Ctx::new();
        let base = ctx.query(&g, 0);
        let limits = SplitLimits {
            fee_budget: 100_000,
            min_part: 10_000,
            max_parts: 16,
        };
        let parts = split(&g, &base, 900_000, limits).expect("split");
        assert!(parts.len() >= 2, "{parts:?}");
        assert_eq!(parts.iter().map(Route::delivered).sum::<u64>(), 900_000);
        let via: HashSet<&str> = parts.iter().map(|r| r.hops[0].id.as_str()).collect();
        assert_eq!(via.len(), 2);
        // Neither local channel is asked for more than it has.
        for first in [B, C] {
            let out: u64 = parts
                .iter()
                .filter(|r| r.hops[0].id == first)
                .map(Route::sent)
                .sum();
            assert!(out <= 600_000, "{out} over {first}");
        }
        assert!(parts.iter().map(Route::fee).sum::<u64>() <= 100_000);
        // More than both paths hold together: no plan.
        assert!(split(&g, &base, 1_300_000, limits).is_err());
        // One small amount stays whole.
        assert_eq!(split(&g, &base, 10_000, limits).expect("one").len(), 1);
    }

    #[test]
    fn route_hints_add_private_channels() {
        let mut g = diamond(1000, 600_000, 600_000);
        let e = "02ee";
        let hints = json!([[{"pubkey": D, "short_channel_id": "9x9x9", "fee_base_msat": 7,
                             "fee_proportional_millionths": 0, "cltv_expiry_delta": 40}]]);
        g.add_hints(Some(&hints), e);
        let ctx = Ctx::new();
        let mut q = ctx.query(&g, 1000);
        q.target = g.find(e).expect("payee");
        let r = find_route(&g, &q).expect("route");
        assert_eq!(r.hops.len(), 3);
        assert_eq!(r.hops[2].key, ChanKey::new("9x9x9", 0));
        assert_eq!(r.hops[1].amount_msat, 1007);
        assert_eq!(r.hops[1].delay, 60);
    }

    #[test]
    fn builds_from_rpc_json() {
        let mut g = Graph::new();
        g.add_gossip(&json!({"channels": [
            {"source": A, "destination": B, "short_channel_id": "1x1x0", "direction": 0,
             "amount_msat": 1_000_000, "active": true, "base_fee_millisatoshi": 1,
             "fee_per_millionth": 2, "delay": 6, "htlc_minimum_msat": 0,
             "htlc_maximum_msat": 990_000},
            {"source": B, "destination": D, "short_channel_id": "1x3x0", "direction": 0,
             "amount_msat": 1_000_000, "active": false},
            {"bogus": true}
        ]}));
        assert!(g.edge(&ChanKey::new("1x1x0", 0)).is_some());
        assert!(g.edge(&ChanKey::new("1x3x0", 0)).is_none());
        g.add_local(
            A,
            &json!({"channels": [
                {"peer_id": C, "peer_connected": true, "state": "CHANNELD_NORMAL",
                 "short_channel_id": "1x2x0", "direction": 0, "spendable_msat": 5000,
                 "total_msat": 10000},
                {"peer_id": D, "peer_connected": false, "state": "CHANNELD_NORMAL",
                 "short_channel_id": "1x5x0", "direction": 0, "spendable_msat": 5000}
            ]}),
        );
        let a = g.find(A).expect("A");
        let out: Vec<&Edge> = g
            .incoming
            .iter()
            .flatten()
            .map(|i| &g.edges[*i])
            .filter(|e| e.src == a)
            .collect();
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].spendable, Some(5000));
        assert_eq!(out[0].key, ChanKey::new("1x2x0", 0));
    }

    /// Issue 18's layout: two 989k-sat channels A–B (979k spendable each), B–C of 1.5M sat
    /// announced with LDK's htlc_maximum (90 % of the capacity).
    #[test]
    fn splits_over_parallel_first_hops_into_one_big_channel() {
        let mut g = Graph::new();
        for scid in ["1x1x0", "1x2x0"] {
            g.add(EdgeSpec {
                spendable: Some(979_000_000),
                base_fee: 0,
                ppm: 0,
                ..spec(scid, A, B, 0, 989_000_000)
            });
        }
        g.add(EdgeSpec {
            htlc_max: 1_350_000_000,
            ppm: 0,
            base_fee: 1000,
            cltv_delta: 72,
            ..spec("1x3x0", B, D, 1000, 1_500_000_000)
        });
        let ctx = Ctx::new();
        let base = ctx.query(&g, 0);
        let limits_for = |amount: u64| SplitLimits {
            fee_budget: amount / 200,
            min_part: 100_000.max(amount / 64),
            max_parts: 16,
        };
        // More than B–C's capacity: no plan.
        assert!(split(&g, &base, 1_600_000_000, limits_for(1_600_000_000)).is_err());
        for amount in [1_100_000_000, 1_300_000_000, 1_450_000_000] {
            let parts = split(&g, &base, amount, limits_for(amount));
            let parts = parts.unwrap_or_else(|e| panic!("{amount}: {e:?}"));
            assert_eq!(parts.iter().map(Route::delivered).sum::<u64>(), amount);
            // Both A–B channels carry parts, neither more than it has.
            for first in ["1x1x0", "1x2x0"] {
                let out: u64 = parts
                    .iter()
                    .filter(|r| r.hops[0].key.scid == first)
                    .map(Route::sent)
                    .sum();
                assert!(
                    out > 0 && out <= 979_000_000,
                    "{amount}: {out} over {first}"
                );
            }
        }
    }
}
