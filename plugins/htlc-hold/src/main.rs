//! `htlc-hold`: hold invoices. The merchant creates an invoice for a payment hash whose
//! preimage only it knows (`holdinvoice`); when the payment arrives its HTLCs are held in the
//! `htlc_accepted` hook (the invoice becomes ACCEPTED) until the merchant settles with the
//! preimage (`settleholdinvoice`) or cancels (`cancelholdinvoice`). The plugin cancels by
//! itself `holdinvoice-cancel-margin-blocks` before the node's own HTLC deadline, so a held
//! payment never costs a channel.
//!
//! State lives in the node's datastore under `["htlc-hold", <payment_hash>]` (one JSON
//! string per invoice, written before anything is answered), so a restart of the node or
//! of the plugin keeps every ACCEPTED invoice: the node offers its HTLCs to the hook again
//! and they re-attach by `(short_channel_id, id)`. Every state change is sent as the custom
//! notification `holdinvoice_state`. See `docs/HOLD.md`.

// Daemon code returns errors; a panic here would stop the process (tests may unwrap:
// clippy.toml).
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::string_slice)]

mod state;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bitcoin_hashes::{Hash, sha256};
use fulgur_plugin_sdk::fulgur_protocol::error::codes;
use fulgur_plugin_sdk::{
    Builder, Configured, Event, Hook, HookSpec, OptionSpec, Plugin, RpcError, RpcMethod, Transport,
};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::{Mutex, oneshot, watch};

use state::{HoldError, HoldInvoice, INCORRECT_DETAILS, Part, PartOutcome, State};

/// Stable JSON-RPC error codes (documented in `docs/HOLD.md`).
mod errcode {
    /// No hold invoice with this payment hash.
    pub const NOT_FOUND: i64 = 2301;
    /// A hold invoice (or a node invoice) with this payment hash exists already.
    pub const DUPLICATE: i64 = 2302;
    /// The preimage does not hash to the payment hash: refused, nothing changed.
    pub const WRONG_PREIMAGE: i64 = 2303;
    /// Settling a cancelled invoice.
    pub const ALREADY_CANCELLED: i64 = 2304;
    /// Cancelling a settled invoice.
    pub const ALREADY_SETTLED: i64 = 2305;
    /// Settling an invoice with no payment held (UNPAID).
    pub const NOT_ACCEPTED: i64 = 2306;
    /// Settling an ACCEPTED invoice whose HTLCs the node has not offered again yet (just
    /// after a restart): nothing changed, try again.
    pub const NOT_ATTACHED: i64 = 2307;
    /// `waitholdinvoice` timed out.
    pub const WAIT_TIMEOUT: i64 = 2308;
    /// The datastore refused a write: nothing changed.
    pub const STORE_FAILED: i64 = 2309;
}

const TOPIC: &str = "holdinvoice_state";
const DS_ROOT: &str = "htlc-hold";
const OPT_MARGIN: &str = "holdinvoice-cancel-margin-blocks";
const OPT_REATTACH: &str = "holdinvoice-reattach-wait-secs";
const OPT_CLTV: &str = "holdinvoice-default-cltv";

/// How a held part is answered.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Answer {
    Resolve(String),
    Fail(&'static str),
}

impl Answer {
    fn to_json(&self) -> Value {
        match self {
            Answer::Resolve(p) => json!({"result": "resolve", "payment_key": p}),
            Answer::Fail(m) => json!({"result": "fail", "failure_message": m}),
        }
    }
}

type PartKey = (String, u64);

/// One invoice in memory: its record, the hook calls waiting for a decision, and a watch
/// channel for `waitholdinvoice`.
struct Entry {
    inv: HoldInvoice,
    waiters: HashMap<PartKey, Vec<oneshot::Sender<Answer>>>,
    watch: watch::Sender<(State, u64)>,
}

impl Entry {
    fn new(inv: HoldInvoice) -> Entry {
        let (watch, _) = watch::channel((inv.state, inv.updated_index));
        Entry {
            inv,
            waiters: HashMap::new(),
            watch,
        }
    }

    /// Recorded parts with no live hook call waiting (not yet offered again after a
    /// restart).
    fn detached(&self) -> Vec<PartKey> {
        self.inv
            .htlcs
            .iter()
            .map(Part::key)
            .filter(|k| {
                !self
                    .waiters
                    .get(k)
                    .is_some_and(|v| v.iter().any(|tx| !tx.is_closed()))
            })
            .collect()
    }

    /// Answers every waiting hook call.
    fn release(&mut self, answer: &Answer) -> usize {
        let mut n = 0;
        for (_, senders) in self.waiters.drain() {
            for tx in senders {
                if tx.send(answer.clone()).is_ok() {
                    n += 1;
                }
            }
        }
        n
    }
}

/// The invoices, read from the datastore on first need.
#[derive(Default)]
struct Table {
    loaded: bool,
    map: HashMap<String, Entry>,
}

impl std::ops::Deref for Table {
    type Target = HashMap<String, Entry>;
    fn deref(&self) -> &Self::Target {
        &self.map
    }
}

impl std::ops::DerefMut for Table {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.map
    }
}

/// The plugin's state.
struct Hold {
    table: Mutex<Table>,
    height: AtomicU32,
    margin: u32,
    reattach_wait: Duration,
    default_cltv: u32,
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn err(code: i64, msg: impl Into<String>) -> RpcError {
    RpcError::new(code, msg)
}

fn hold_error(e: HoldError, inv: &HoldInvoice) -> RpcError {
    let (code, msg) = match e {
        HoldError::WrongPreimage => (
            errcode::WRONG_PREIMAGE,
            "preimage does not match the payment hash".to_string(),
        ),
        HoldError::NotAccepted => (
            errcode::NOT_ACCEPTED,
            "hold invoice is UNPAID: nothing to settle".to_string(),
        ),
        HoldError::AlreadyCancelled => (
            errcode::ALREADY_CANCELLED,
            "hold invoice is CANCELLED: it cannot be settled".to_string(),
        ),
        HoldError::AlreadySettled => (
            errcode::ALREADY_SETTLED,
            "hold invoice is SETTLED: it cannot be cancelled".to_string(),
        ),
    };
    err(code, msg).with_data(json!({"payment_hash": inv.payment_hash, "state": inv.state}))
}

/// 32 bytes of hex, lower-cased.
fn hex32(name: &str, s: &str) -> Result<String, RpcError> {
    if s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(s.to_ascii_lowercase())
    } else {
        Err(RpcError::invalid_params(format!(
            "{name}: should be 32 bytes of hex: invalid token '{s}'"
        )))
    }
}

fn unhex32(s: &str) -> Option<[u8; 32]> {
    fulgur_plugin_sdk::hex::decode(s)?.try_into().ok()
}

/// sha256 of the preimage, as hex.
fn hash_of(preimage: &[u8; 32]) -> String {
    sha256::Hash::hash(preimage).to_string()
}

/// An msat amount: a number, or a string of digits with an optional `msat` suffix.
fn msat(v: &Value) -> Option<u64> {
    match v {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.strip_suffix("msat").unwrap_or(s).parse().ok(),
        _ => None,
    }
}

impl Hold {
    fn height(&self) -> u32 {
        self.height.load(Ordering::Relaxed)
    }

    fn see_height(&self, h: u32) {
        self.height.fetch_max(h, Ordering::Relaxed);
    }

    /// What listholdinvoices shows for an invoice.
    fn to_json(&self, e: &Entry) -> Value {
        let inv = &e.inv;
        let t = now();
        let htlcs: Vec<Value> = inv
            .htlcs
            .iter()
            .map(|p| {
                let attached = e
                    .waiters
                    .get(&p.key())
                    .is_some_and(|v| v.iter().any(|tx| !tx.is_closed()));
                json!({
                    "short_channel_id": p.short_channel_id,
                    "id": p.id,
                    "amount_msat": p.amount_msat,
                    "cltv_expiry": p.cltv_expiry,
                    "deadline_blockheight": p.deadline_blockheight,
                    "attached": attached,
                })
            })
            .collect();
        let mut out = json!({
            "payment_hash": inv.payment_hash,
            "state": inv.state,
            "bolt11": inv.bolt11,
            "label": inv.label,
            "amount_msat": inv.amount_msat,
            "amount_received_msat": inv.amount_received_msat(),
            "description": inv.description,
            "created_at": inv.created_at,
            "expires_at": inv.expires_at,
            "expired": t >= inv.expires_at,
            "cltv": inv.cltv,
            "htlcs": htlcs,
            "updated_index": inv.updated_index,
        });
        let put = |out: &mut Value, k: &str, v: Value| {
            if let Some(m) = out.as_object_mut() {
                m.insert(k.to_string(), v);
            }
        };
        if let Some(a) = inv.accepted_at {
            put(&mut out, "accepted_at", json!(a));
        }
        if let Some(d) = inv.htlc_deadline() {
            put(&mut out, "htlc_deadline_blockheight", json!(d));
        }
        if !inv.state.is_final()
            && let Some(c) = inv.cancel_height(self.margin)
        {
            put(&mut out, "settle_deadline_blockheight", json!(c));
            put(
                &mut out,
                "settle_blocks_left",
                json!(c.saturating_sub(self.height())),
            );
        }
        if let Some(s) = inv.settled_at {
            put(&mut out, "settled_at", json!(s));
        }
        if let Some(p) = &inv.preimage {
            put(&mut out, "payment_preimage", json!(p));
        }
        if let Some(c) = inv.cancelled_at {
            put(&mut out, "cancelled_at", json!(c));
        }
        if let Some(r) = &inv.cancel_reason {
            put(&mut out, "cancel_reason", json!(r));
        }
        out
    }
}

/// Writes the record to the datastore.
async fn persist(plugin: &Plugin<Hold>, inv: &HoldInvoice) -> Result<(), RpcError> {
    let data = serde_json::to_string(inv)
        .map_err(|e| err(errcode::STORE_FAILED, format!("cannot encode record: {e}")))?;
    plugin
        .rpc()
        .call(
            "datastore",
            json!({
                "key": [DS_ROOT, inv.payment_hash],
                "string": data,
                "mode": "create-or-replace",
            }),
        )
        .await
        .map(|_| ())
        .map_err(|e| {
            let e = RpcError::from(e);
            plugin.error(format!(
                "cannot store hold invoice {}: {}",
                inv.payment_hash, e.message
            ));
            err(
                errcode::STORE_FAILED,
                format!("cannot store the hold invoice: {}", e.message),
            )
        })
}

/// Tells subscribers and waiters about a state change.
fn announce(plugin: &Plugin<Hold>, e: &Entry, old: Option<State>) {
    let inv = &e.inv;
    let mut payload = json!({
        "payment_hash": inv.payment_hash,
        "state": inv.state,
        "old_state": old,
        "amount_msat": inv.amount_msat,
        "amount_received_msat": inv.amount_received_msat(),
        "updated_index": inv.updated_index,
    });
    if let Some(m) = payload.as_object_mut() {
        if let Some(d) = inv.htlc_deadline() {
            m.insert("htlc_deadline_blockheight".into(), json!(d));
            if inv.state == State::Accepted {
                let margin = plugin.state().margin;
                m.insert(
                    "settle_deadline_blockheight".into(),
                    json!(d.saturating_sub(margin)),
                );
            }
        }
        if let Some(r) = &inv.cancel_reason {
            m.insert("cancel_reason".into(), json!(r));
        }
    }
    if let Err(err) = plugin.notify(TOPIC, payload) {
        plugin.warn(format!("cannot send {TOPIC}: {err}"));
    }
    e.watch.send_replace((inv.state, inv.updated_index));
    plugin.info(format!(
        "hold invoice {}: {} -> {}",
        inv.payment_hash,
        old.map(State::as_str).unwrap_or("(new)"),
        inv.state.as_str()
    ));
}

/// Cancels an entry (the table lock is held by the caller) and fails its held parts.
async fn cancel_entry(
    plugin: &Plugin<Hold>,
    e: &mut Entry,
    reason: &str,
) -> Result<bool, HoldError> {
    let old = e.inv.state;
    let changed = e.inv.cancel(reason, now())?;
    if changed {
        // Failing back is always safe: do it even if the write fails (the record then
        // still says ACCEPTED, and a restart cancels it again at the same height).
        let _ = persist(plugin, &e.inv).await;
        e.release(&Answer::Fail(INCORRECT_DETAILS));
        announce(plugin, e, Some(old));
    }
    Ok(changed)
}

/// Auto-cancels what is too close to its deadline, and expired UNPAID invoices.
async fn sweep(plugin: &Plugin<Hold>) {
    let hold = plugin.state();
    let height = hold.height();
    let t = now();
    let Ok(mut table) = load_table(plugin).await else {
        return;
    };
    for e in table.values_mut() {
        if e.inv.due_for_cancel(height, hold.margin) {
            let reason = format!(
                "auto-cancelled at block {height}: settle deadline {} reached ({} blocks before the node's HTLC deadline {})",
                e.inv.cancel_height(hold.margin).unwrap_or(0),
                hold.margin,
                e.inv.htlc_deadline().unwrap_or(0)
            );
            plugin.warn(format!("hold invoice {}: {reason}", e.inv.payment_hash));
            let _ = cancel_entry(plugin, e, &reason).await;
        } else if e.inv.expired_unpaid(t) {
            let _ = cancel_entry(plugin, e, "expired unpaid").await;
        }
    }
}

/// The part described by an `htlc_accepted` payload.
fn parse_part(payload: &Value, margin_fallback: u32) -> Option<Part> {
    let htlc = payload.get("htlc")?;
    let short_channel_id = htlc.get("short_channel_id")?.as_str()?.to_string();
    let id = htlc.get("id")?.as_u64()?;
    let amount_msat = msat(htlc.get("amount_msat")?)?;
    let cltv_expiry = u32::try_from(htlc.get("cltv_expiry")?.as_u64()?).ok()?;
    // Under CLN there is no core deadline: count from the expiry itself.
    let deadline_blockheight = payload
        .get("deadline_blockheight")
        .and_then(Value::as_u64)
        .and_then(|d| u32::try_from(d).ok())
        .unwrap_or_else(|| cltv_expiry.saturating_sub(margin_fallback));
    Some(Part {
        short_channel_id,
        id,
        amount_msat,
        cltv_expiry,
        deadline_blockheight,
    })
}

/// `htlc_accepted`: hold parts of our invoices, let everything else through.
async fn on_htlc(plugin: Plugin<Hold>, payload: Value) -> Result<Value, String> {
    let cont = json!({"result": "continue"});
    // Forwards are not ours.
    if payload
        .get("onion")
        .and_then(|o| o.get("short_channel_id"))
        .is_some()
    {
        return Ok(cont);
    }
    let Some(hash) = payload
        .get("htlc")
        .and_then(|h| h.get("payment_hash"))
        .and_then(Value::as_str)
        .map(str::to_ascii_lowercase)
    else {
        return Ok(cont);
    };
    let hold = plugin.state();
    if let (Some(exp), Some(rel)) = (
        payload["htlc"].get("cltv_expiry").and_then(Value::as_u64),
        payload["htlc"]
            .get("cltv_expiry_relative")
            .and_then(Value::as_u64),
    ) && let Ok(h) = u32::try_from(exp.saturating_sub(rel))
    {
        hold.see_height(h);
    }
    let mut table = match load_table(&plugin).await {
        Ok(t) => t,
        Err(e) => {
            plugin.error(format!(
                "hold invoices unreadable ({}): letting HTLC {hash} through",
                e.message
            ));
            return Ok(cont);
        }
    };
    let Some(e) = table.get_mut(&hash) else {
        return Ok(cont);
    };
    let Some(part) = parse_part(&payload, 39) else {
        plugin.warn(format!(
            "hold invoice {hash}: unreadable htlc_accepted payload, failing the part: {payload}"
        ));
        return Ok(Answer::Fail(INCORRECT_DETAILS).to_json());
    };
    let key = part.key();
    let old = e.inv.state;
    let rx = match e.inv.on_part(part, now()) {
        PartOutcome::Resolve(p) => {
            plugin.info(format!(
                "hold invoice {hash}: part {key:?} offered again after settlement, settling it"
            ));
            return Ok(Answer::Resolve(p).to_json());
        }
        PartOutcome::Fail(m) => {
            plugin.info(format!(
                "hold invoice {hash} is {}: failing part {key:?}",
                e.inv.state.as_str()
            ));
            return Ok(Answer::Fail(m).to_json());
        }
        PartOutcome::Hold { accepted, recorded } => {
            let (tx, rx) = oneshot::channel();
            e.waiters.entry(key.clone()).or_default().push(tx);
            if recorded || accepted {
                let _ = persist(&plugin, &e.inv).await;
            }
            if accepted {
                announce(&plugin, e, Some(old));
            }
            plugin.debug(format!(
                "hold invoice {hash}: holding part {key:?} ({})",
                if recorded { "new" } else { "re-attached" }
            ));
            if e.inv.due_for_cancel(hold.height(), hold.margin) {
                let reason = format!(
                    "no time left to hold: settle deadline {} already reached at block {}",
                    e.inv.cancel_height(hold.margin).unwrap_or(0),
                    hold.height()
                );
                let _ = cancel_entry(&plugin, e, &reason).await;
            }
            rx
        }
    };
    drop(table);
    match rx.await {
        Ok(a) => Ok(a.to_json()),
        // Our sender went away without an answer (should not happen): answer from the
        // record, never `continue` (the node could not settle a hash-only invoice).
        Err(_) => {
            let table = hold.table.lock().await;
            let a = match table.get(&hash).map(|e| (&e.inv.state, &e.inv.preimage)) {
                Some((State::Settled, Some(p))) => Answer::Resolve(p.clone()),
                _ => Answer::Fail(INCORRECT_DETAILS),
            };
            Ok(a.to_json())
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateParams {
    amount_msat: Value,
    description: String,
    payment_hash: String,
    expiry: Option<u64>,
    cltv: Option<u32>,
    exposeprivatechannels: Option<Value>,
    deschashonly: Option<bool>,
}

async fn holdinvoice(plugin: Plugin<Hold>, p: CreateParams) -> Result<Value, RpcError> {
    let hash = hex32("payment_hash", &p.payment_hash)?;
    let amount = msat(&p.amount_msat).filter(|a| *a > 0).ok_or_else(|| {
        RpcError::invalid_params(format!(
            "amount_msat: should be a positive msat amount: invalid token '{}'",
            p.amount_msat
        ))
    })?;
    let hold = plugin.state();
    let mut table = load_table(&plugin).await?;
    if let Some(e) = table.get(&hash) {
        return Err(err(
            errcode::DUPLICATE,
            format!("a hold invoice with payment_hash {hash} already exists"),
        )
        .with_data(json!({"payment_hash": hash, "state": e.inv.state})));
    }
    let label = format!("{DS_ROOT}/{hash}");
    let cltv = p.cltv.unwrap_or(hold.default_cltv);
    let mut req = json!({
        "amount_msat": amount,
        "label": label,
        "description": p.description,
        "payment_hash": hash,
        "cltv": cltv,
    });
    if let Some(m) = req.as_object_mut() {
        if let Some(x) = p.expiry {
            m.insert("expiry".into(), json!(x));
        }
        if let Some(x) = p.exposeprivatechannels {
            m.insert("exposeprivatechannels".into(), x);
        }
        if let Some(x) = p.deschashonly {
            m.insert("deschashonly".into(), json!(x));
        }
    }
    let made = plugin.rpc().call("invoice", req).await.map_err(|e| {
        let e = RpcError::from(e);
        if e.code == codes::INVOICE_LABEL_ALREADY_EXISTS
            || e.code == codes::INVOICE_PREIMAGE_ALREADY_EXISTS
        {
            err(
                errcode::DUPLICATE,
                format!("the node already has an invoice for payment_hash {hash}"),
            )
        } else {
            e
        }
    })?;
    let bolt11 = made.get("bolt11").and_then(Value::as_str);
    let expires_at = made.get("expires_at").and_then(Value::as_u64);
    let (Some(bolt11), Some(expires_at)) = (bolt11, expires_at) else {
        return Err(RpcError::lightningd(format!(
            "unexpected answer from invoice: {made}"
        )));
    };
    let inv = HoldInvoice {
        payment_hash: hash.clone(),
        bolt11: bolt11.to_string(),
        label: label.clone(),
        amount_msat: amount,
        description: p.description,
        created_at: now(),
        expires_at,
        cltv,
        updated_index: 1,
        ..HoldInvoice::default()
    };
    if let Err(e) = persist(&plugin, &inv).await {
        // Without a record the payment could not be held: take the invoice back.
        let _ = plugin
            .rpc()
            .call("delinvoice", json!({"label": label, "status": "unpaid"}))
            .await;
        return Err(e);
    }
    let entry = Entry::new(inv);
    announce(&plugin, &entry, None);
    let out = hold.to_json(&entry);
    table.insert(hash, entry);
    Ok(out)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SettleParams {
    preimage: String,
    payment_hash: Option<String>,
}

async fn settleholdinvoice(plugin: Plugin<Hold>, p: SettleParams) -> Result<Value, RpcError> {
    let preimage = hex32("preimage", &p.preimage)?;
    let bytes = unhex32(&preimage).ok_or_else(|| RpcError::invalid_params("preimage: not hex"))?;
    let actual = hash_of(&bytes);
    let hash = match p.payment_hash {
        Some(h) => hex32("payment_hash", &h)?,
        None => actual.clone(),
    };
    let hold = plugin.state();
    let give_up = Instant::now() + hold.reattach_wait;
    loop {
        let mut table = load_table(&plugin).await?;
        let Some(e) = table.get_mut(&hash) else {
            return Err(err(
                errcode::NOT_FOUND,
                format!("no hold invoice with payment_hash {hash}"),
            ));
        };
        if e.inv.state == State::Accepted && actual == e.inv.payment_hash {
            // The block that passes the settle deadline may not have been swept yet: a
            // settle this late could race the node's own fail-back, so cancel instead.
            if e.inv.due_for_cancel(hold.height(), hold.margin) {
                let reason = format!(
                    "auto-cancelled at block {}: settle deadline {} reached",
                    hold.height(),
                    e.inv.cancel_height(hold.margin).unwrap_or(0)
                );
                let _ = cancel_entry(&plugin, e, &reason).await;
                return Err(hold_error(HoldError::AlreadyCancelled, &e.inv));
            }
            let missing = e.detached();
            if !missing.is_empty() {
                if Instant::now() >= give_up {
                    let parts: Vec<Value> = missing
                        .iter()
                        .map(|(s, i)| json!({"short_channel_id": s, "id": i}))
                        .collect();
                    return Err(err(
                        errcode::NOT_ATTACHED,
                        "the node has not offered this invoice's HTLCs again yet (restart in progress): still ACCEPTED, nothing changed, try again",
                    )
                    .with_data(json!({"payment_hash": hash, "state": e.inv.state, "missing": parts})));
                }
                drop(table);
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        }
        let before = e.inv.clone();
        let old = e.inv.state;
        let changed = e
            .inv
            .settle(&preimage, &actual, now())
            .map_err(|x| hold_error(x, &e.inv))?;
        if changed {
            // Durable before the HTLCs are claimed: after a crash the record must say
            // SETTLED with the preimage, so replayed parts are settled again.
            if let Err(x) = persist(&plugin, &e.inv).await {
                e.inv = before;
                return Err(x);
            }
            let n = e.release(&Answer::Resolve(preimage.clone()));
            plugin.info(format!("hold invoice {hash}: settled {n} part(s)"));
            announce(&plugin, e, Some(old));
        }
        return Ok(hold.to_json(e));
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HashParams {
    payment_hash: String,
}

async fn cancelholdinvoice(plugin: Plugin<Hold>, p: HashParams) -> Result<Value, RpcError> {
    let hash = hex32("payment_hash", &p.payment_hash)?;
    let hold = plugin.state();
    let mut table = load_table(&plugin).await?;
    let Some(e) = table.get_mut(&hash) else {
        return Err(err(
            errcode::NOT_FOUND,
            format!("no hold invoice with payment_hash {hash}"),
        ));
    };
    cancel_entry(&plugin, e, "cancelled by cancelholdinvoice")
        .await
        .map_err(|x| hold_error(x, &e.inv))?;
    Ok(hold.to_json(e))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListParams {
    payment_hash: Option<String>,
    state: Option<String>,
}

/// The optional `state` parameter of `listholdinvoices` and `waitholdinvoice`.
fn state_param(state: Option<String>) -> Result<Option<State>, RpcError> {
    state
        .map(|s| {
            State::parse(&s).ok_or_else(|| {
                RpcError::invalid_params(format!(
                    "state: should be UNPAID, ACCEPTED, SETTLED or CANCELLED: invalid token '{s}'"
                ))
            })
        })
        .transpose()
}

async fn listholdinvoices(plugin: Plugin<Hold>, p: ListParams) -> Result<Value, RpcError> {
    let hash = p
        .payment_hash
        .map(|h| hex32("payment_hash", &h))
        .transpose()?;
    let state = state_param(p.state)?;
    let hold = plugin.state();
    let table = load_table(&plugin).await?;
    let mut rows: Vec<&Entry> = table
        .values()
        .filter(|e| hash.as_deref().is_none_or(|h| e.inv.payment_hash == h))
        .filter(|e| state.is_none_or(|s| e.inv.state == s))
        .collect();
    rows.sort_by(|a, b| {
        (a.inv.created_at, &a.inv.payment_hash).cmp(&(b.inv.created_at, &b.inv.payment_hash))
    });
    let list: Vec<Value> = rows.into_iter().map(|e| hold.to_json(e)).collect();
    Ok(json!({ "holdinvoices": list }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WaitParams {
    payment_hash: String,
    state: Option<String>,
    timeout: Option<u64>,
}

async fn waitholdinvoice(plugin: Plugin<Hold>, p: WaitParams) -> Result<Value, RpcError> {
    let hash = hex32("payment_hash", &p.payment_hash)?;
    let known = state_param(p.state)?;
    let hold = plugin.state();
    let mut rx = {
        let table = load_table(&plugin).await?;
        let Some(e) = table.get(&hash) else {
            return Err(err(
                errcode::NOT_FOUND,
                format!("no hold invoice with payment_hash {hash}"),
            ));
        };
        e.watch.subscribe()
    };
    let known = known.unwrap_or(rx.borrow().0);
    let wait = async {
        loop {
            let (s, _) = *rx.borrow_and_update();
            // A final state never changes again: report it instead of waiting for nothing.
            if s != known || s.is_final() {
                return;
            }
            if rx.changed().await.is_err() {
                return;
            }
        }
    };
    let done = match p.timeout {
        Some(t) => tokio::time::timeout(Duration::from_secs(t), wait)
            .await
            .is_ok(),
        None => {
            wait.await;
            true
        }
    };
    if !done {
        return Err(err(
            errcode::WAIT_TIMEOUT,
            format!(
                "timed out waiting for hold invoice {hash} to leave {}",
                known.as_str()
            ),
        )
        .with_data(json!({"payment_hash": hash, "state": known})));
    }
    let table = hold.table.lock().await;
    table
        .get(&hash)
        .map(|e| hold.to_json(e))
        .ok_or_else(|| err(errcode::NOT_FOUND, "hold invoice disappeared"))
}

async fn on_block(plugin: Plugin<Hold>, ev: Event) {
    let h = ev
        .payload
        .get("height")
        .and_then(Value::as_u64)
        .and_then(|h| u32::try_from(h).ok());
    if let Some(h) = h {
        plugin.state().see_height(h);
        sweep(&plugin).await;
    }
}

/// The node failed our HTLCs back at its own deadline: the payment is gone, say so.
async fn on_htlc_deadline(plugin: Plugin<Hold>, ev: Event) {
    let Some(hash) = ev
        .payload
        .get("payment_hash")
        .and_then(Value::as_str)
        .map(str::to_ascii_lowercase)
    else {
        return;
    };
    let Ok(mut table) = load_table(&plugin).await else {
        return;
    };
    if let Some(e) = table.get_mut(&hash) {
        if e.inv.state == State::Settled {
            // Should not happen (settling stops `margin` blocks earlier), but never let
            // the record claim money that was given back without saying so.
            plugin.error(format!(
                "hold invoice {hash} is SETTLED but the node failed HTLCs for it back at its deadline: the payment was not received"
            ));
            return;
        }
        plugin.warn(format!(
            "hold invoice {hash}: the node failed its HTLCs back at its deadline"
        ));
        let _ = cancel_entry(
            &plugin,
            e,
            "the node failed the HTLCs back at its own deadline",
        )
        .await;
    }
}

/// The table, read from the datastore first if this is the first use. Reading on first
/// need (the first hook call, RPC or block) rather than at `init` keeps a node that never
/// uses hold invoices free of the plugin's datastore calls, and still comes before any
/// replayed HTLC is answered (every entry point goes through here). A failed read is
/// retried briefly and reported; the next use tries again.
async fn load_table(plugin: &Plugin<Hold>) -> Result<tokio::sync::MutexGuard<'_, Table>, RpcError> {
    let mut table = plugin.state().table.lock().await;
    if table.loaded {
        return Ok(table);
    }
    let mut last = None;
    for attempt in 0..10 {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        match plugin
            .rpc()
            .call("listdatastore", json!({"key": [DS_ROOT]}))
            .await
        {
            Ok(v) => {
                let rows = v
                    .get("datastore")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default();
                for row in rows {
                    let Some(s) = row.get("string").and_then(Value::as_str) else {
                        continue;
                    };
                    match serde_json::from_str::<HoldInvoice>(s) {
                        Ok(inv) => {
                            table.insert(inv.payment_hash.clone(), Entry::new(inv));
                        }
                        Err(e) => plugin.error(format!(
                            "unreadable hold invoice record {}: {e}",
                            row["key"]
                        )),
                    }
                }
                table.loaded = true;
                plugin.debug(format!("loaded {} hold invoice(s)", table.len()));
                return Ok(table);
            }
            Err(e) => last = Some(e),
        }
    }
    let msg = last.map(|e| e.to_string()).unwrap_or_default();
    plugin.error(format!(
        "cannot read hold invoices from the datastore: {msg}"
    ));
    Err(err(
        errcode::STORE_FAILED,
        format!("cannot read hold invoices from the datastore: {msg}"),
    ))
}

fn option_u32(c: &Configured<Hold>, name: &str, default: u32) -> u32 {
    c.option(name)
        .and_then(Value::as_i64)
        .and_then(|v| u32::try_from(v).ok())
        .unwrap_or(default)
}

fn builder() -> Builder<Hold> {
    Builder::<Hold>::new()
        .dynamic(true)
        .option(
            OptionSpec::int(
                OPT_MARGIN,
                "Cancel an ACCEPTED hold invoice this many blocks before the node's HTLC deadline",
            )
            .default("10"),
        )
        .option(
            OptionSpec::int(
                OPT_REATTACH,
                "After a restart, how long settleholdinvoice waits for the held HTLCs to be offered again",
            )
            .default("10"),
        )
        .option(
            OptionSpec::int(OPT_CLTV, "min_final_cltv_expiry of hold invoices without {cltv}")
                .default("144"),
        )
        .notification(TOPIC)
        // Only payments to this node: forwards keep the core's fast path (no hook round trip).
        .hook(HookSpec::new(Hook::HtlcAccepted, on_htlc).filters(["receive"]))
        .subscribe("block_added", on_block)
        .subscribe("htlc_deadline", on_htlc_deadline)
        .rpcmethod(
            RpcMethod::typed(
                "holdinvoice",
                "amount_msat description payment_hash [expiry] [cltv] [exposeprivatechannels] [deschashonly]",
                holdinvoice,
            )
            .description("Create a hold invoice for {payment_hash}: the payment is held until settleholdinvoice or cancelholdinvoice"),
        )
        .rpcmethod(
            RpcMethod::typed("settleholdinvoice", "preimage [payment_hash]", settleholdinvoice)
                .description("Settle an ACCEPTED hold invoice with its {preimage}"),
        )
        .rpcmethod(
            RpcMethod::typed("cancelholdinvoice", "payment_hash", cancelholdinvoice)
                .description("Cancel a hold invoice, failing back any held payment"),
        )
        .rpcmethod(
            RpcMethod::typed("listholdinvoices", "[payment_hash] [state]", listholdinvoices)
                .description("List hold invoices, optionally only {payment_hash} or those in {state}"),
        )
        .rpcmethod(
            RpcMethod::typed(
                "waitholdinvoice",
                "payment_hash [state] [timeout]",
                waitholdinvoice,
            )
            .description("Wait until hold invoice {payment_hash} is no longer in {state} (default: its current state), at most {timeout} seconds"),
        )
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), fulgur_plugin_sdk::RunError> {
    let Some(configured) = builder().configure(Transport::stdio()).await? else {
        return Ok(());
    };
    let hold = Hold {
        margin: option_u32(&configured, OPT_MARGIN, 10),
        reattach_wait: Duration::from_secs(u64::from(option_u32(&configured, OPT_REATTACH, 10))),
        default_cltv: option_u32(&configured, OPT_CLTV, 144),
        height: AtomicU32::new(0),
        table: Mutex::new(Table::default()),
    };
    let running = configured.start(hold)?;
    let plugin = running.plugin();
    // Expiry of UNPAID invoices is a matter of time, not blocks: sweep now and then too
    // (only once something loaded the table).
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(15)).await;
            if plugin.state().table.lock().await.loaded {
                sweep(&plugin).await;
            }
        }
    });
    running.join().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_becomes_a_part() {
        let payload = json!({
            "onion": {"total_msat": 1000},
            "htlc": {"short_channel_id": "103x1x0", "id": 7, "amount_msat": 400,
                     "cltv_expiry": 300, "cltv_expiry_relative": 150, "payment_hash": "ab"},
            "deadline_blockheight": 255,
        });
        let p = parse_part(&payload, 39).expect("part");
        assert_eq!(p.key(), ("103x1x0".to_string(), 7));
        assert_eq!((p.amount_msat, p.cltv_expiry), (400, 300));
        assert_eq!(p.deadline_blockheight, 255);
        // CLN sends no deadline: count back from the expiry.
        let mut cln = payload.clone();
        cln.as_object_mut()
            .map(|m| m.remove("deadline_blockheight"));
        cln["htlc"]["amount_msat"] = json!("400msat");
        let p = parse_part(&cln, 39).expect("part");
        assert_eq!((p.amount_msat, p.deadline_blockheight), (400, 261));
        // Missing or ill-typed fields give no part instead of a panic.
        assert_eq!(parse_part(&json!({}), 39), None);
        let mut bad = payload;
        bad["htlc"]["id"] = json!("seven");
        assert_eq!(parse_part(&bad, 39), None);
    }

    #[test]
    fn params_are_checked() {
        assert_eq!(msat(&json!(5)), Some(5));
        assert_eq!(msat(&json!("5msat")), Some(5));
        assert_eq!(msat(&json!("5")), Some(5));
        assert_eq!(msat(&json!("-5")), None);
        assert_eq!(msat(&json!(1.5)), None);
        assert_eq!(hex32("h", &"AB".repeat(32)).expect("hex"), "ab".repeat(32));
        assert!(hex32("h", "ab").is_err());
        assert!(hex32("h", &"zz".repeat(32)).is_err());
        assert_eq!(unhex32(&"0".repeat(63)), None);
        assert_eq!(unhex32(&"é".repeat(32)), None);
    }

    #[test]
    fn preimage_hash_and_answers() {
        let zero = unhex32(&"00".repeat(32)).expect("hex");
        assert_eq!(
            hash_of(&zero),
            "66687aadf862bd776c8fc18b8e9f8e20089714856ee233b3902a591d0d5f2925"
        );
        assert_eq!(
            Answer::Resolve("11".into()).to_json(),
            json!({"result": "resolve", "payment_key": "11"})
        );
        assert_eq!(
            Answer::Fail(INCORRECT_DETAILS).to_json(),
            json!({"result": "fail", "failure_message": "400f"})
        );
    }
}
