//! Built-in `autopilot` plugin: opens channels on its own, within a budget, and explains
//! every decision. Off by default (`autopilot-enable`). See `docs/AUTOPILOT.md`.
//!
//! A round reads the node's funds, channels and feerates (cheap), stops there when nothing
//! can be done (disabled, all slots used, fees above the ceiling, budget too small), and
//! otherwise reads the gossip graph, scores it off the RPC-serving task (re-scoring only
//! when the graph, the heuristic or the external scores changed, or at
//! `autopilot-interval`), picks candidates and opens channels one after the other.
//! Rounds run at `autopilot-interval`, shortly after `connect`, `disconnect`,
//! `channel_state_changed` and `block_added`, and on `autopilot-run`; they never overlap,
//! so no two opens to one peer are ever in flight. Funds arriving are seen at the
//! `block_added` that confirms them: the budget counts confirmed funds only, and not
//! subscribing to `coin_movement` spares the core from indexing every wallet movement on
//! nodes where autopilot is off.
//!
//! Methods: `autopilot-status [limit]`, `autopilot-run`, `autopilot-unmanage id [undo]`,
//! `autopilot-setscore id score`.

// Daemon code returns errors; a panic here would stop the process (tests may unwrap:
// clippy.toml).
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::string_slice)]

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use fulgur_plugin_sdk::{
    Builder, CallError, Event, OptionSpec, Plugin, RpcError, RpcMethod, Transport,
};
use serde::Deserialize;
use serde_json::{Value, json};

use fulgur_plugin_autopilot::graph::{self, Heuristic, Scored};
use fulgur_plugin_autopilot::policy::{self, Config, PeerFacts, Plan, Snapshot};
use fulgur_plugin_autopilot::store::{
    self, Action, Failure, OpenRecord, OpenStatus, Stored, is_closing,
};

const OPT_ENABLE: &str = "autopilot-enable";
const OPT_BUDGET: &str = "autopilot-budget-percent";
const OPT_RESERVE: &str = "autopilot-reserve-sat";
const OPT_MAX_CHANNELS: &str = "autopilot-max-channels";
const OPT_MIN_CHANNEL: &str = "autopilot-min-channel-sat";
const OPT_MAX_CHANNEL: &str = "autopilot-max-channel-sat";
const OPT_MAX_FEERATE: &str = "autopilot-max-feerate";
const OPT_HEURISTIC: &str = "autopilot-heuristic";
const OPT_INTERVAL: &str = "autopilot-interval";
const OPT_DRY_RUN: &str = "autopilot-dry-run";

/// Events are coalesced for this long before a round starts.
const DEBOUNCE: Duration = Duration::from_secs(2);
/// Rounds started by events are at least this far apart.
const MIN_EVENT_GAP: Duration = Duration::from_secs(10);
/// Candidates `autopilot-status` lists by default.
const DEFAULT_STATUS_LIMIT: usize = 50;
/// Rounds started by events re-read the gossip graph at most this often (and at most
/// every `autopilot-interval`): on a large graph `listchannels` is the expensive part, and
/// peers connecting or blocks arriving do not change it.
const GRAPH_REFRESH_ON_EVENTS: Duration = Duration::from_secs(300);

type Addrs = Arc<HashMap<String, (String, u16)>>;

/// Scores kept between rounds (the graph itself is dropped after scoring).
struct ScoreCache {
    fingerprint: u64,
    heuristic: Heuristic,
    external_version: u64,
    /// When the scores were computed.
    at: Instant,
    /// When the graph was last read.
    fetched: Instant,
    scores: Arc<Vec<Scored>>,
    addrs: Addrs,
}

/// What the last round saw and decided.
struct LastRound {
    at: u64,
    trigger: String,
    duration_ms: u64,
    rescored: bool,
    graph_nodes: usize,
    plan: Plan,
}

#[derive(Default)]
struct Inner {
    stored: Stored,
    loaded: bool,
    connected: HashSet<String>,
    in_flight: HashSet<String>,
    cache: Option<ScoreCache>,
    last: Option<LastRound>,
    /// Dry-run decisions (never persisted: a dry run changes nothing).
    dry_actions: Vec<Action>,
}

struct State {
    inner: Mutex<Inner>,
    /// Held for a whole round: rounds never overlap.
    round: tokio::sync::Mutex<()>,
    wake: tokio::sync::Notify,
    external_version: AtomicU64,
    last_round_end: Mutex<Option<Instant>>,
    woken_by: Mutex<String>,
    started: AtomicBool,
}

type P = Plugin<Arc<State>>;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn opt_u64(plugin: &P, name: &str, default: u64) -> Result<u64, String> {
    match plugin.option_i64(name) {
        None => Ok(default),
        Some(v) => u64::try_from(v).map_err(|_| format!("{name}: must not be negative, got {v}")),
    }
}

/// `setconfig` check for an int option: `min..=max`.
fn int_in_range(
    name: &'static str,
    min: i64,
    max: i64,
) -> impl Fn(P, Value) -> std::future::Ready<Result<(), RpcError>> + Send + Sync + 'static {
    move |_p, v| {
        std::future::ready(match v.as_i64() {
            Some(n) if (min..=max).contains(&n) => Ok(()),
            _ => Err(RpcError::invalid_params(format!(
                "{name}: should be an integer between {min} and {max}, not {v}"
            ))),
        })
    }
}

/// The options as they are now (`setconfig` may have changed them).
fn config(plugin: &P) -> Result<Config, String> {
    let d = Config::default();
    let heuristic = plugin
        .option_str(OPT_HEURISTIC)
        .unwrap_or_else(|| d.heuristic.as_str().to_string());
    let heuristic = Heuristic::parse(&heuristic).ok_or_else(|| {
        format!("{OPT_HEURISTIC}: '{heuristic}' is not preferential, centrality or external")
    })?;
    let max_channels = opt_u64(plugin, OPT_MAX_CHANNELS, u64::from(d.max_channels))?;
    let c = Config {
        enable: plugin.option_bool(OPT_ENABLE),
        budget_percent: opt_u64(plugin, OPT_BUDGET, d.budget_percent)?,
        reserve_sat: opt_u64(plugin, OPT_RESERVE, d.reserve_sat)?,
        max_channels: u32::try_from(max_channels).unwrap_or(u32::MAX),
        min_channel_sat: opt_u64(plugin, OPT_MIN_CHANNEL, d.min_channel_sat)?,
        max_channel_sat: opt_u64(plugin, OPT_MAX_CHANNEL, d.max_channel_sat)?,
        max_feerate_perkw: opt_u64(plugin, OPT_MAX_FEERATE, d.max_feerate_perkw)?,
        heuristic,
        interval_secs: opt_u64(plugin, OPT_INTERVAL, d.interval_secs)?,
        dry_run: plugin.option_bool(OPT_DRY_RUN),
    };
    c.check()?;
    Ok(c)
}

fn rpc_err(e: impl std::fmt::Display) -> RpcError {
    RpcError::lightningd(e.to_string())
}

/// Reads the persisted state once; rounds refuse to act until it is loaded, so a restart
/// never forgets what was opened.
async fn ensure_loaded(plugin: &P) -> Result<(), RpcError> {
    if lock(&plugin.state().inner).loaded {
        return Ok(());
    }
    let v = plugin
        .rpc()
        .call("listdatastore", json!({"key": store::KEY}))
        .await
        .map_err(|e| rpc_err(format!("cannot read autopilot state: {e}")))?;
    let text = v
        .pointer("/datastore/0/string")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let stored: Stored = if text.is_empty() {
        Stored::default()
    } else {
        match serde_json::from_str(&text) {
            Ok(s) => s,
            Err(e) => {
                plugin.warn(format!(
                    "autopilot: unreadable stored state, starting afresh: {e}"
                ));
                Stored::default()
            }
        }
    };
    let mut inner = lock(&plugin.state().inner);
    if !inner.loaded {
        plugin.info(format!(
            "autopilot: loaded {} opens, {} unmanaged peers, {} external scores, {} actions",
            stored.opens.len(),
            stored.unmanaged.len(),
            stored.scores.len(),
            stored.actions.len()
        ));
        inner.stored = stored;
        inner.loaded = true;
        plugin
            .state()
            .external_version
            .fetch_add(1, Ordering::SeqCst);
    }
    Ok(())
}

async fn persist(plugin: &P) {
    let text = {
        let mut inner = lock(&plugin.state().inner);
        inner.stored.prune();
        serde_json::to_string(&inner.stored).unwrap_or_default()
    };
    let r = plugin
        .rpc()
        .call(
            "datastore",
            json!({"key": store::KEY, "string": text, "mode": "create-or-replace"}),
        )
        .await;
    if let Err(e) = r {
        plugin.warn(format!("autopilot: cannot store state: {e}"));
    }
}

fn record(plugin: &P, action: &str, peer: Option<&str>, amount: Option<u64>, reason: String) {
    plugin.info(format!(
        "autopilot: {action}{}{}: {reason}",
        peer.map(|p| format!(" {p}")).unwrap_or_default(),
        amount.map(|a| format!(" {a}sat")).unwrap_or_default()
    ));
    let a = Action {
        at: now(),
        action: action.to_string(),
        peer_id: peer.map(str::to_string),
        amount_sat: amount,
        reason,
    };
    lock(&plugin.state().inner).stored.push_action(a);
}

/// Matches our open records against the node's channels (see [`store::reconcile`]) and
/// records what changed. Returns whether anything did.
fn reconcile(plugin: &P, channels: &[Value]) -> bool {
    let notes = store::reconcile(&mut lock(&plugin.state().inner).stored, channels);
    let changed = !notes.is_empty();
    for (action, peer, reason) in notes {
        record(plugin, action, Some(&peer), None, reason);
    }
    changed
}

fn sum_sat(outputs: &[Value]) -> u64 {
    outputs
        .iter()
        .filter(|o| o.get("status").and_then(Value::as_str) == Some("confirmed"))
        .filter(|o| o.get("reserved").and_then(Value::as_bool) != Some(true))
        .filter_map(|o| o.get("amount_msat").and_then(graph::msat_of))
        .sum::<u64>()
        / 1000
}

/// Moves an array out of an answer (no copy of a large `listchannels`).
fn take_array(mut v: Value, key: &str) -> Vec<Value> {
    match v.get_mut(key).map(Value::take) {
        Some(Value::Array(a)) => a,
        _ => Vec::new(),
    }
}

fn array(v: &Value, key: &str) -> Vec<Value> {
    match v.get(key) {
        Some(Value::Array(a)) => a.clone(),
        _ => Vec::new(),
    }
}

/// The node's state for one round.
async fn snapshot(plugin: &P) -> Result<(Snapshot, Vec<Value>), RpcError> {
    let rpc = plugin.rpc();
    let (info, funds, chans, fees, peers) = tokio::join!(
        rpc.call("getinfo", json!({})),
        rpc.call("listfunds", json!({})),
        rpc.call("listpeerchannels", json!({})),
        rpc.call("feerates", json!({"style": "perkw"})),
        rpc.call("listpeers", json!({})),
    );
    let (info, funds, chans, fees, peers) = (
        info.map_err(rpc_err)?,
        funds.map_err(rpc_err)?,
        chans.map_err(rpc_err)?,
        fees.map_err(rpc_err)?,
        peers.map_err(rpc_err)?,
    );
    let channels = array(&chans, "channels");
    if reconcile(plugin, &channels) {
        persist(plugin).await;
    }
    let connected: HashSet<String> = array(&peers, "peers")
        .iter()
        .filter(|p| p.get("connected").and_then(Value::as_bool) == Some(true))
        .filter_map(|p| p.get("id").and_then(Value::as_str).map(str::to_string))
        .collect();
    let inner = &mut *lock(&plugin.state().inner);
    inner.connected = connected;
    let managed: HashSet<&str> = inner
        .stored
        .opens
        .iter()
        .filter(|o| o.status == OpenStatus::Open)
        .filter_map(|o| o.channel_id.as_deref())
        .collect();
    let mut s = Snapshot {
        our_id: info
            .get("id")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
        confirmed_sat: sum_sat(&array(&funds, "outputs")),
        opening_feerate_perkw: fees
            .pointer("/perkw/opening")
            .and_then(Value::as_u64)
            .unwrap_or(0),
        fee_per_open_sat: policy::fee_per_open(
            fees.pointer("/onchain_fee_estimates/opening_channel_satoshis")
                .and_then(Value::as_u64)
                .unwrap_or(0),
        ),
        ..Snapshot::default()
    };
    for c in &channels {
        let state = c.get("state").and_then(Value::as_str).unwrap_or_default();
        if let Some(p) = c.get("peer_id").and_then(Value::as_str) {
            s.channel_peers.insert(p.to_string());
        }
        let id = c
            .get("channel_id")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if managed.contains(id) && !is_closing(state) {
            s.managed_channels += 1;
            s.managed_sat += c.get("total_msat").and_then(graph::msat_of).unwrap_or(0) / 1000;
        }
    }
    Ok((s, channels))
}

/// The graph's candidates, scored, and the nodes with an address we can connect to.
/// Re-uses the last scores while the graph, the heuristic and the external scores are
/// unchanged and they are younger than the interval; rounds started by events (`by_event`)
/// do not even re-read the graph while the last reading is recent.
async fn scored_graph(
    plugin: &P,
    cfg: &Config,
    by_event: bool,
) -> Result<(Arc<Vec<Scored>>, Addrs, bool), RpcError> {
    let state = plugin.state();
    let ext_version = state.external_version.load(Ordering::SeqCst);
    let heuristic = cfg.heuristic;
    let interval = Duration::from_secs(cfg.interval_secs);
    let refresh = GRAPH_REFRESH_ON_EVENTS.min(interval);
    let (external, cached) = {
        let inner = lock(&state.inner);
        if let Some(c) = &inner.cache
            && by_event
            && c.fetched.elapsed() < refresh
            && c.heuristic == heuristic
            && c.external_version == ext_version
        {
            return Ok((c.scores.clone(), c.addrs.clone(), false));
        }
        let external: HashMap<String, f64> = inner
            .stored
            .scores
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect();
        let cached = inner.cache.as_ref().and_then(|c| {
            (c.heuristic == heuristic
                && c.external_version == ext_version
                && c.at.elapsed() < interval)
                .then(|| (c.fingerprint, c.at, c.scores.clone()))
        });
        (external, cached)
    };
    let rpc = plugin.rpc();
    let (chans, nodes) = tokio::join!(
        rpc.call("listchannels", json!({})),
        rpc.call("listnodes", json!({})),
    );
    let (chans, nodes) = (chans.map_err(rpc_err)?, nodes.map_err(rpc_err)?);
    // Parsing, fingerprinting and scoring are CPU work: off the task serving RPC calls.
    let job = tokio::task::spawn_blocking(move || {
        let rows = take_array(chans, "channels");
        let edges = graph::edges_from_listchannels(&rows);
        drop(rows);
        let fp = fingerprint(&edges);
        let (scores, at, rescored) = match cached.filter(|(f, _, _)| *f == fp) {
            Some((_, at, s)) => (s, at, false),
            None => {
                let g = graph::Graph::build(&edges);
                let s = Arc::new(graph::score(&g, heuristic, &external));
                (s, Instant::now(), true)
            }
        };
        let addrs = Arc::new(addresses(&take_array(nodes, "nodes")));
        (fp, scores, at, rescored, addrs)
    });
    let (fp, scores, at, rescored, addrs) = job
        .await
        .map_err(|e| rpc_err(format!("scoring failed: {e}")))?;
    lock(&state.inner).cache = Some(ScoreCache {
        fingerprint: fp,
        heuristic,
        external_version: ext_version,
        at,
        fetched: Instant::now(),
        scores: scores.clone(),
        addrs: addrs.clone(),
    });
    Ok((scores, addrs, rescored))
}

/// A cheap summary of the graph's shape: changes when a channel appears or goes.
fn fingerprint(edges: &[graph::Edge]) -> u64 {
    use std::hash::{DefaultHasher, Hash, Hasher};
    let mut acc = edges.len() as u64;
    for e in edges {
        let mut h = DefaultHasher::new();
        e.scid.hash(&mut h);
        e.capacity_sat.hash(&mut h);
        // Order-independent: listchannels' order is not meaningful.
        acc = acc.wrapping_add(h.finish());
    }
    acc
}

/// `listnodes` addresses we can connect to (IPv4, IPv6, DNS), first one per node.
fn addresses(nodes: &[Value]) -> HashMap<String, (String, u16)> {
    let mut out = HashMap::new();
    for n in nodes {
        let Some(id) = n.get("nodeid").and_then(Value::as_str) else {
            continue;
        };
        let Some(Value::Array(addrs)) = n.get("addresses") else {
            continue;
        };
        let usable = addrs.iter().find_map(|a| {
            let kind = a.get("type").and_then(Value::as_str)?;
            if !matches!(kind, "ipv4" | "ipv6" | "dns") {
                return None;
            }
            let host = a.get("address").and_then(Value::as_str)?;
            let port = u16::try_from(a.get("port").and_then(Value::as_u64)?).ok()?;
            Some((host.to_string(), port))
        });
        if let Some(u) = usable {
            out.insert(id.to_string(), u);
        }
    }
    out
}

/// One round: decide, and act unless dry-run. Returns the round's report. `by_event`:
/// started by a notification rather than the interval, a restart or `autopilot-run`.
async fn round(plugin: &P, trigger: &str, by_event: bool) -> Result<Value, RpcError> {
    let state = plugin.state().clone();
    let _turn = state.round.lock().await;
    let started = Instant::now();
    ensure_loaded(plugin).await?;
    let cfg = config(plugin).map_err(RpcError::invalid_params)?;
    let (snap, _channels) = snapshot(plugin).await?;
    let b = policy::budget(&cfg, &snap);
    let (ranked, addrs, rescored) = match policy::precheck(&cfg, &snap, &b) {
        // Nothing can be done: do not even read the graph; explain with the last scores.
        Some(_) => {
            let last = lock(&state.inner)
                .cache
                .as_ref()
                .map(|c| c.scores.clone())
                .unwrap_or_default();
            (last, Addrs::default(), false)
        }
        None => scored_graph(plugin, &cfg, by_event).await?,
    };
    let facts = {
        let inner = lock(&state.inner);
        let t = now();
        let mut reachable: HashSet<String> = addrs.keys().cloned().collect();
        reachable.extend(inner.connected.iter().cloned());
        PeerFacts {
            unmanaged: inner.stored.unmanaged.iter().cloned().collect(),
            in_flight: inner
                .in_flight
                .iter()
                .cloned()
                .chain(inner.stored.live_peers().into_iter().filter(|p| {
                    // A live record without a channel is an open still being made.
                    !snap.channel_peers.contains(p)
                }))
                .collect(),
            backoff: inner
                .stored
                .failures
                .iter()
                .filter(|(_, f)| f.until > t)
                .map(|(k, f)| (k.clone(), (f.until, f.error.clone())))
                .collect(),
            reachable,
        }
    };
    let plan = policy::decide(&cfg, &snap, &facts, &ranked, now());
    let opens = plan.opens();
    let mut results = Vec::new();
    if cfg.dry_run {
        let t = now();
        let mut inner = lock(&state.inner);
        for (peer, amount) in &opens {
            let reason = reason_of(&plan, peer);
            inner.dry_actions.push(Action {
                at: t,
                action: "would_open".into(),
                peer_id: Some(peer.clone()),
                amount_sat: Some(*amount),
                reason: format!("dry run, nothing done: {reason}"),
            });
            results.push(json!({"peer_id": peer, "amount_sat": amount, "result": "dry-run"}));
        }
        let excess = inner.dry_actions.len().saturating_sub(store::MAX_ACTIONS);
        inner.dry_actions.drain(..excess);
    } else {
        for (peer, amount) in &opens {
            let addr = addrs.get(peer).cloned();
            let r = open_one(plugin, &snap, peer, *amount, addr, &reason_of(&plan, peer)).await;
            let stop = matches!(r, Err(OpenFailure::Funds(_) | OpenFailure::Unknown(_)));
            results.push(match r {
                Ok(v) => json!({"peer_id": peer, "amount_sat": amount, "result": "opened", "txid": v.get("txid"), "channel_id": v.get("channel_id")}),
                Err(e) => json!({"peer_id": peer, "amount_sat": amount, "result": "failed", "error": e.message()}),
            });
            if stop {
                break;
            }
        }
    }
    let report = json!({
        "trigger": trigger,
        "dry_run": cfg.dry_run,
        "skipped": plan.skipped,
        "budget": plan.budget,
        "opens": results,
        "rescored": rescored,
    });
    let graph_nodes = ranked.len();
    lock(&state.inner).last = Some(LastRound {
        at: now(),
        trigger: trigger.to_string(),
        duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        rescored,
        graph_nodes,
        plan,
    });
    *lock(&state.last_round_end) = Some(Instant::now());
    Ok(report)
}

fn reason_of(plan: &Plan, peer: &str) -> String {
    plan.candidates
        .iter()
        .find(|v| v.id == peer)
        .map(|v| v.reason.clone())
        .unwrap_or_default()
}

/// How an open attempt failed, which decides what happens next.
#[derive(Debug, Clone, PartialEq, Eq)]
enum OpenFailure {
    /// The peer could not be reached or refused: back off from this peer.
    Peer(String),
    /// Our wallet could not fund it now (typically: the rest is unconfirmed change). Not
    /// the peer's fault: no back-off, and the round stops opening.
    Funds(String),
    /// The connection to the node broke while `fundchannel` ran: it may or may not have
    /// opened. The record stays `opening`; the next round adopts the channel or fails it.
    Unknown(String),
}

impl OpenFailure {
    fn message(&self) -> &str {
        match self {
            OpenFailure::Peer(m) | OpenFailure::Funds(m) | OpenFailure::Unknown(m) => m,
        }
    }
}

/// `fundchannel` errors that are about our wallet, not the peer (CLN's `FUND_CANNOT_AFFORD`).
const FUND_CANNOT_AFFORD: i64 = 301;

/// Connects if needed and funds one channel, recording the intent before and the outcome
/// after, so a restart in between is recognised.
async fn open_one(
    plugin: &P,
    snap: &Snapshot,
    peer: &str,
    amount: u64,
    addr: Option<(String, u16)>,
    reason: &str,
) -> Result<Value, OpenFailure> {
    let state = plugin.state();
    {
        let mut inner = lock(&state.inner);
        if !inner.in_flight.insert(peer.to_string()) {
            return Err(OpenFailure::Unknown(
                "an open to this peer is already in flight".into(),
            ));
        }
        inner.stored.opens.push(OpenRecord {
            peer_id: peer.to_string(),
            amount_sat: amount,
            at: now(),
            status: OpenStatus::Opening,
            channel_id: None,
            txid: None,
            reason: reason.to_string(),
        });
    }
    persist(plugin).await;
    let connected = lock(&state.inner).connected.contains(peer);
    let mut result = Ok(Value::Null);
    if !connected {
        result = match &addr {
            Some((host, port)) => plugin
                .rpc()
                .call("connect", json!({"id": peer, "host": host, "port": port}))
                .await
                .map_err(|e| OpenFailure::Peer(format!("connect to {host}:{port} failed: {e}"))),
            None => Err(OpenFailure::Peer(
                "not connected and no known address".into(),
            )),
        };
    }
    if result.is_ok() {
        let feerate = format!("{}perkw", snap.opening_feerate_perkw.max(253));
        result = plugin
            .rpc()
            .call(
                "fundchannel",
                json!({"id": peer, "amount": amount, "feerate": feerate, "announce": true}),
            )
            .await
            .map_err(|e| {
                let msg = format!("fundchannel failed: {e}");
                match e {
                    CallError::Rpc(r) if r.code == FUND_CANNOT_AFFORD => OpenFailure::Funds(msg),
                    CallError::Closed | CallError::Io(_) => OpenFailure::Unknown(msg),
                    _ => OpenFailure::Peer(msg),
                }
            });
    }
    {
        let mut inner = lock(&state.inner);
        inner.in_flight.remove(peer);
        let rec = inner
            .stored
            .opens
            .iter_mut()
            .rev()
            .find(|o| o.peer_id == peer && o.status == OpenStatus::Opening);
        match (&result, rec) {
            (Ok(v), Some(r)) => {
                r.status = OpenStatus::Open;
                r.channel_id = v
                    .get("channel_id")
                    .and_then(Value::as_str)
                    .map(str::to_string);
                r.txid = v.get("txid").and_then(Value::as_str).map(str::to_string);
            }
            (Err(OpenFailure::Unknown(_)), Some(_)) => {}
            (Err(_), Some(r)) => r.status = OpenStatus::Failed,
            (_, None) => {}
        }
        match &result {
            Ok(_) => {
                inner.stored.failures.remove(peer);
            }
            Err(OpenFailure::Peer(e)) => {
                let count = inner.stored.failures.get(peer).map_or(0, |f| f.count) + 1;
                inner.stored.failures.insert(
                    peer.to_string(),
                    Failure {
                        count,
                        until: now() + policy::backoff_secs(count),
                        error: e.clone(),
                    },
                );
            }
            Err(_) => {}
        }
    }
    match &result {
        Ok(v) => record(
            plugin,
            "open",
            Some(peer),
            Some(amount),
            format!(
                "{reason}; funding txid {}",
                v.get("txid").and_then(Value::as_str).unwrap_or("?")
            ),
        ),
        Err(f) => {
            let next = match f {
                OpenFailure::Peer(_) => "backing off before retrying this peer",
                OpenFailure::Funds(_) => {
                    "the wallet cannot fund it now (unconfirmed change?): no more opens this round, no back-off for the peer"
                }
                OpenFailure::Unknown(_) => {
                    "outcome unknown: the next round adopts the channel if it was made"
                }
            };
            record(
                plugin,
                "open_failed",
                Some(peer),
                Some(amount),
                format!("{}; {next}", f.message()),
            );
        }
    }
    persist(plugin).await;
    result
}

/// Runs rounds at `autopilot-interval` and shortly after events, never overlapping.
async fn scheduler(plugin: P) {
    let state = plugin.state().clone();
    // A first round soon after start (it loads the state and explains itself).
    let mut trigger = "startup".to_string();
    let mut by_event = false;
    tokio::time::sleep(DEBOUNCE).await;
    loop {
        if plugin.option_bool(OPT_ENABLE) {
            match round(&plugin, &trigger, by_event).await {
                Ok(r) => plugin.debug(format!("autopilot round ({trigger}): {r}")),
                Err(e) => plugin.warn(format!("autopilot round ({trigger}) failed: {e}")),
            }
        }
        let interval = Duration::from_secs(
            opt_u64(&plugin, OPT_INTERVAL, Config::default().interval_secs)
                .unwrap_or(600)
                .max(1),
        );
        tokio::select! {
            _ = tokio::time::sleep(interval) => {
                trigger = "interval".into();
                by_event = false;
            }
            _ = state.wake.notified() => {
                trigger = std::mem::take(&mut *lock(&state.woken_by));
                by_event = true;
                tokio::time::sleep(DEBOUNCE).await;
                let since = lock(&state.last_round_end).map(|t| t.elapsed());
                if let Some(gap) = since.and_then(|s| MIN_EVENT_GAP.checked_sub(s)) {
                    tokio::time::sleep(gap).await;
                }
            }
        }
    }
}

fn wake(plugin: &P, why: String) {
    *lock(&plugin.state().woken_by) = why;
    plugin.state().wake.notify_one();
}

async fn on_event(plugin: P, event: Event) {
    let p = &event.payload;
    let peer = p
        .get("id")
        .or_else(|| p.get("peer_id"))
        .and_then(Value::as_str)
        .map(str::to_string);
    match event.topic.as_str() {
        "connect" => {
            if let Some(id) = &peer {
                lock(&plugin.state().inner).connected.insert(id.clone());
            }
        }
        "disconnect" => {
            if let Some(id) = &peer {
                lock(&plugin.state().inner).connected.remove(id);
            }
        }
        _ => {}
    }
    if !plugin.option_bool(OPT_ENABLE) || !plugin.state().started.load(Ordering::SeqCst) {
        return;
    }
    let what = match (&peer, event.topic.as_str()) {
        (Some(id), t) => format!("{t} {id}"),
        (None, "block_added") => format!(
            "block_added {}",
            p.get("height").and_then(Value::as_u64).unwrap_or(0)
        ),
        (None, t) => t.to_string(),
    };
    wake(&plugin, what);
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StatusParams {
    limit: Option<usize>,
}

async fn status(plugin: P, p: StatusParams) -> Result<Value, RpcError> {
    ensure_loaded(&plugin).await?;
    let cfg = config(&plugin);
    let limit = p.limit.unwrap_or(DEFAULT_STATUS_LIMIT);
    let inner = lock(&plugin.state().inner);
    let options = match &cfg {
        Ok(c) => json!({
            "enable": c.enable, "dry_run": c.dry_run, "heuristic": c.heuristic.as_str(),
            "budget_percent": c.budget_percent, "reserve_sat": c.reserve_sat,
            "max_channels": c.max_channels, "min_channel_sat": c.min_channel_sat,
            "max_channel_sat": c.max_channel_sat, "max_feerate_perkw": c.max_feerate_perkw,
            "interval": c.interval_secs,
        }),
        Err(e) => json!({"error": e}),
    };
    let managed: Vec<&OpenRecord> = inner.stored.opens.iter().filter(|o| o.is_live()).collect();
    let mut actions: Vec<&Action> = inner
        .stored
        .actions
        .iter()
        .chain(inner.dry_actions.iter())
        .collect();
    actions.sort_by_key(|a| a.at);
    let mut out = json!({
        "enabled": cfg.as_ref().map(|c| c.enable).unwrap_or(false),
        "options": options,
        "managed_channels": managed,
        "in_flight": inner.in_flight,
        "unmanaged": inner.stored.unmanaged,
        "external_scores": inner.stored.scores.len(),
        "backoff": inner.stored.failures,
        "actions": actions,
    });
    match &inner.last {
        Some(l) => {
            let b = &l.plan.budget;
            out["targets"] = json!({
                "max_channels": cfg.as_ref().map(|c| c.max_channels).unwrap_or(0),
                "managed": managed.iter().filter(|o| o.status == OpenStatus::Open).count(),
                "free_slots": b.free_slots,
                "target_this_round": b.target,
            });
            out["budget"] = serde_json::to_value(b).unwrap_or(Value::Null);
            out["budget_left_sat"] = json!(b.left_sat);
            out["last_round"] = json!({
                "at": l.at, "trigger": l.trigger, "duration_ms": l.duration_ms,
                "rescored": l.rescored, "graph_nodes": l.graph_nodes,
                "skipped": l.plan.skipped,
            });
            out["candidates_total"] = json!(l.plan.candidates.len());
            // The chosen ones always; then the best ranked up to `limit`.
            let shown: Vec<&policy::Verdict> = l
                .plan
                .candidates
                .iter()
                .enumerate()
                .filter(|(i, v)| v.chosen || *i < limit)
                .map(|(_, v)| v)
                .collect();
            out["candidates"] = serde_json::to_value(shown).unwrap_or(Value::Null);
        }
        None => {
            out["last_round"] = Value::Null;
            out["candidates"] = json!([]);
            out["note"] = json!("no round yet: autopilot-run runs one now");
        }
    }
    Ok(out)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NoParams {}

async fn run_cmd(plugin: P, _p: NoParams) -> Result<Value, RpcError> {
    round(&plugin, "autopilot-run", false).await
}

fn check_id(id: &str) -> Result<String, RpcError> {
    let ok = id.len() == 66
        && (id.starts_with("02") || id.starts_with("03"))
        && id.bytes().all(|b| b.is_ascii_hexdigit());
    if ok {
        Ok(id.to_ascii_lowercase())
    } else {
        Err(RpcError::invalid_params(format!(
            "id: should be a node id: invalid token '{id}'"
        )))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UnmanageParams {
    id: String,
    undo: Option<bool>,
}

async fn unmanage(plugin: P, p: UnmanageParams) -> Result<Value, RpcError> {
    let id = check_id(&p.id)?;
    ensure_loaded(&plugin).await?;
    let undo = p.undo.unwrap_or(false);
    let changed = {
        let mut inner = lock(&plugin.state().inner);
        if undo {
            inner.stored.unmanaged.remove(&id)
        } else {
            inner.stored.unmanaged.insert(id.clone())
        }
    };
    if changed {
        let (action, reason) = if undo {
            (
                "manage",
                "operator gave the peer back to autopilot (autopilot-unmanage undo)",
            )
        } else {
            (
                "unmanage",
                "operator opted the peer out (autopilot-unmanage): autopilot will never open to it",
            )
        };
        record(&plugin, action, Some(&id), None, reason.into());
        persist(&plugin).await;
    }
    let unmanaged = lock(&plugin.state().inner).stored.unmanaged.clone();
    Ok(json!({"id": id, "unmanaged": !undo, "changed": changed, "all_unmanaged": unmanaged}))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SetscoreParams {
    id: String,
    score: f64,
}

async fn setscore(plugin: P, p: SetscoreParams) -> Result<Value, RpcError> {
    let id = check_id(&p.id)?;
    if !(0.0..=1.0).contains(&p.score) {
        return Err(RpcError::invalid_params(format!(
            "score: should be between 0 and 1: invalid token '{}'",
            p.score
        )));
    }
    ensure_loaded(&plugin).await?;
    {
        let mut inner = lock(&plugin.state().inner);
        if p.score == 0.0 {
            inner.stored.scores.remove(&id);
        } else {
            inner.stored.scores.insert(id.clone(), p.score);
        }
    }
    plugin
        .state()
        .external_version
        .fetch_add(1, Ordering::SeqCst);
    record(
        &plugin,
        "setscore",
        Some(&id),
        None,
        format!("external score set to {} by autopilot-setscore", p.score),
    );
    persist(&plugin).await;
    let n = lock(&plugin.state().inner).stored.scores.len();
    Ok(json!({"id": id, "score": p.score, "external_scores": n}))
}

fn builder() -> Builder<Arc<State>> {
    let d = Config::default();
    Builder::<Arc<State>>::new()
        .dynamic(true)
        .option(
            OptionSpec::bool(OPT_ENABLE, "Let autopilot open channels on its own")
                .default(false)
                .dynamic(),
        )
        .option(
            OptionSpec::int(OPT_BUDGET, "Share (percent) of on-chain funds plus autopilot's channels it may put into channels")
                .default(d.budget_percent as i64)
                .dynamic(),
        )
        .option(
            OptionSpec::int(OPT_RESERVE, "On-chain satoshis autopilot never spends")
                .default(d.reserve_sat as i64)
                .dynamic(),
        )
        .option(
            OptionSpec::int(OPT_MAX_CHANNELS, "Most channels autopilot opens and keeps")
                .default(i64::from(d.max_channels))
                .dynamic(),
        )
        .option(
            OptionSpec::int(OPT_MIN_CHANNEL, "Smallest channel autopilot opens, in satoshis")
                .default(d.min_channel_sat as i64)
                .dynamic(),
        )
        .option(
            OptionSpec::int(OPT_MAX_CHANNEL, "Largest channel autopilot opens, in satoshis")
                .default(d.max_channel_sat as i64)
                .dynamic(),
        )
        .option(
            OptionSpec::int(OPT_MAX_FEERATE, "Wait while the opening feerate is above this many sat per 1000 weight (0: never wait)")
                .default(d.max_feerate_perkw as i64)
                .dynamic(),
        )
        .option(
            OptionSpec::string(OPT_HEURISTIC, "How candidates are scored: preferential, centrality or external")
                .default(d.heuristic.as_str())
                .dynamic(),
        )
        .option(
            OptionSpec::int(OPT_INTERVAL, "Seconds between rounds (and longest reuse of graph scores)")
                .default(d.interval_secs as i64)
                .dynamic(),
        )
        .option(
            OptionSpec::bool(OPT_DRY_RUN, "Decide and explain, but open nothing")
                .default(false)
                .dynamic(),
        )
        .on_change(OPT_BUDGET, int_in_range(OPT_BUDGET, 0, 100))
        .on_change(OPT_RESERVE, int_in_range(OPT_RESERVE, 0, i64::MAX))
        .on_change(OPT_MAX_CHANNELS, int_in_range(OPT_MAX_CHANNELS, 0, 10_000))
        .on_change(OPT_MIN_CHANNEL, int_in_range(OPT_MIN_CHANNEL, 1, i64::MAX))
        .on_change(OPT_MAX_CHANNEL, int_in_range(OPT_MAX_CHANNEL, 1, i64::MAX))
        .on_change(OPT_MAX_FEERATE, int_in_range(OPT_MAX_FEERATE, 0, i64::MAX))
        .on_change(OPT_INTERVAL, int_in_range(OPT_INTERVAL, 1, 7 * 24 * 3600))
        .on_change(OPT_HEURISTIC, |_p: P, v: Value| async move {
            match v.as_str().and_then(Heuristic::parse) {
                Some(_) => Ok(()),
                None => Err(RpcError::invalid_params(format!(
                    "{OPT_HEURISTIC}: should be preferential, centrality or external, not {v}"
                ))),
            }
        })
        .subscribe("connect", on_event)
        .subscribe("disconnect", on_event)
        .subscribe("channel_state_changed", on_event)
        .subscribe("block_added", on_event)
        .rpcmethod(
            RpcMethod::typed("autopilot-status", "[limit]", status)
                .description("What autopilot wants, its budget, each candidate's score and why it was or was not chosen, and its last actions"),
        )
        .rpcmethod(
            RpcMethod::typed("autopilot-run", "", run_cmd)
                .description("Run one autopilot round now (honours autopilot-dry-run)"),
        )
        .rpcmethod(
            RpcMethod::typed("autopilot-unmanage", "id [undo]", unmanage)
                .description("Never let autopilot open to peer {id} ({undo}=true gives it back)"),
        )
        .rpcmethod(
            RpcMethod::typed("autopilot-setscore", "id score", setscore)
                .description("Set node {id}'s {score} (0..1; 0 removes it) for autopilot-heuristic=external"),
        )
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), fulgur_plugin_sdk::RunError> {
    let Some(configured) = builder().configure(Transport::stdio()).await? else {
        return Ok(());
    };
    let state = Arc::new(State {
        inner: Mutex::new(Inner::default()),
        round: tokio::sync::Mutex::new(()),
        wake: tokio::sync::Notify::new(),
        external_version: AtomicU64::new(0),
        last_round_end: Mutex::new(None),
        woken_by: Mutex::new(String::new()),
        started: AtomicBool::new(false),
    });
    let running = configured.start(state)?;
    let plugin = running.plugin();
    plugin.state().started.store(true, Ordering::SeqCst);
    tokio::spawn(scheduler(plugin));
    running.join().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_take_the_first_reachable_one() {
        let nodes = vec![
            json!({"nodeid": "A", "addresses": [
                {"type": "torv3", "address": "x.onion", "port": 9735},
                {"type": "ipv4", "address": "10.0.0.1", "port": 9736}]}),
            json!({"nodeid": "B", "addresses": [{"type": "dns", "address": "b.example", "port": 70000}]}),
            json!({"nodeid": "C"}),
            json!({"addresses": []}),
        ];
        let a = addresses(&nodes);
        assert_eq!(a.get("A"), Some(&("10.0.0.1".to_string(), 9736)));
        assert!(!a.contains_key("B"), "port out of range");
        assert!(!a.contains_key("C"));
        assert_eq!(a.len(), 1);
    }

    #[test]
    fn fingerprint_ignores_order_but_sees_changes() {
        let e = graph::generate(50, 200, 3);
        let mut rev = e.clone();
        rev.reverse();
        assert_eq!(fingerprint(&e), fingerprint(&rev));
        let mut fewer = e.clone();
        fewer.pop();
        assert_ne!(fingerprint(&e), fingerprint(&fewer));
        let mut bigger = e.clone();
        bigger[0].capacity_sat += 1;
        assert_ne!(fingerprint(&e), fingerprint(&bigger));
    }

    #[test]
    fn only_confirmed_unreserved_outputs_count() {
        let outs = vec![
            json!({"status": "confirmed", "reserved": false, "amount_msat": 5_000_000}),
            json!({"status": "confirmed", "reserved": true, "amount_msat": 7_000_000}),
            json!({"status": "unconfirmed", "reserved": false, "amount_msat": 9_000_000}),
            json!({"status": "confirmed", "amount_msat": "2000000msat"}),
            json!({"status": "confirmed", "amount_msat": "junk"}),
        ];
        assert_eq!(sum_sat(&outs), 7000);
        assert!(is_closing("ONCHAIN") && !is_closing("CHANNELD_NORMAL"));
        assert!(!is_closing("CHANNELD_AWAITING_LOCKIN"));
    }

    #[test]
    fn node_ids_are_checked() {
        let id = format!("02{}", "ab".repeat(32));
        assert_eq!(check_id(&id.to_uppercase()).ok(), Some(id));
        assert!(check_id("02").is_err());
        assert!(check_id(&format!("04{}", "ab".repeat(32))).is_err());
        assert!(check_id(&format!("02{}", "zz".repeat(32))).is_err());
    }
}
