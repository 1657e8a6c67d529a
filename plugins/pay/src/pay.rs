//! The `pay` command: decode the invoice, refuse or return earlier attempts of the same
//! payment hash, then rounds of "plan parts, send them, wait for one to finish, learn" until
//! the amount is delivered, a permanent failure comes back, no route is left, or `retry_for`
//! runs out. The planning itself is pure ([`crate::route`]); this module does the RPC.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use fulgur_plugin_sdk::fulgur_protocol::error::codes;
use fulgur_plugin_sdk::{CallError, Plugin, RpcClient, RpcError};
use serde_json::{Value, json};
use tokio::task::JoinSet;

use crate::State;
use crate::liquidity::ChanKey;
use crate::listpays;
use crate::params::{self, PayRequest, parse_msat};
use crate::route::{self, Graph, NoRoute, Query, Route, SplitLimits};

/// Blocks added to the invoice's `min_final_cltv_expiry`, so a block found while the HTLC
/// travels does not make it too short for the payee.
const FINAL_CLTV_MARGIN: u32 = 3;
/// Parts smaller than this are not split further (CLN's splitter stops at 100 sat).
const MIN_PART_MSAT: u64 = 100_000;
/// The most parts planned in one round.
const MAX_PARTS_PER_ROUND: usize = 16;
/// The most parts one payment sends in all.
const MAX_PARTS_TOTAL: u64 = 100;
/// How long a payment to a payee no channel is known to lead to waits for gossip. Short:
/// until a part is sent nothing of the payment is in `listpays`, and clients such as LNbits
/// give `pay` 5 s before reading `listpays` and taking an absent payment for failed (and
/// refunding it): a payment must not start after its client gave up on it.
const GOSSIP_GRACE: Duration = Duration::from_secs(4);
/// How often gossip is read meanwhile.
const GOSSIP_POLL: Duration = Duration::from_millis(250);

/// BOLT 4 failure code bits and the codes `pay` treats specially.
const NODE: u64 = 0x2000;
const TEMPORARY_CHANNEL_FAILURE: u64 = 0x1007;
const MPP_TIMEOUT: u64 = 23;

pub(crate) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn unix_now_f64() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// What the invoice says, as far as paying it needs.
struct Invoice {
    payment_hash: String,
    payment_secret: Option<String>,
    amount_msat: Option<u64>,
    destination: String,
    min_final_cltv: u32,
    expires_at: u64,
    routes: Option<Value>,
    has_description_hash: bool,
}

/// The invoice `decode` returned; `name` is the parameter that carried it.
fn invoice_of(v: &Value, name: &str) -> Result<Invoice, RpcError> {
    if v.get("type").and_then(Value::as_str) != Some("bolt11 invoice") {
        return Err(RpcError::invalid_params(format!(
            "{name}: only BOLT 11 invoices can be paid"
        )));
    }
    let s = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
    let (Some(payment_hash), Some(destination)) = (s("payment_hash"), s("payee")) else {
        return Err(RpcError::invalid_params(format!(
            "{name}: invoice lacks a payment hash or payee"
        )));
    };
    let created_at = v.get("created_at").and_then(Value::as_u64).unwrap_or(0);
    let expiry = v.get("expiry").and_then(Value::as_u64).unwrap_or(3600);
    Ok(Invoice {
        payment_hash,
        payment_secret: s("payment_secret"),
        amount_msat: v.get("amount_msat").and_then(|a| parse_msat(a).ok()),
        destination,
        min_final_cltv: v
            .get("min_final_cltv_expiry")
            .and_then(Value::as_u64)
            .and_then(|c| u32::try_from(c).ok())
            .unwrap_or(18),
        expires_at: created_at.saturating_add(expiry),
        routes: v.get("routes").cloned(),
        has_description_hash: v.get("description_hash").is_some(),
    })
}

/// Decodes `invstring` (named `name` in the caller's params) with the node's `decode`.
async fn decode_invoice(rpc: &RpcClient, invstring: &str, name: &str) -> Result<Invoice, RpcError> {
    let decoded = rpc
        .call("decode", json!({"string": invstring}))
        .await
        .map_err(|e| match e {
            CallError::Rpc(r) => RpcError::invalid_params(format!("Invalid bolt11: {}", r.message)),
            other => other.into(),
        })?;
    invoice_of(&decoded, name)
}

/// The payment hash of the BOLT 11 invoice `invstring`.
pub(crate) async fn payment_hash_of(
    rpc: &RpcClient,
    invstring: &str,
    name: &str,
) -> Result<String, RpcError> {
    Ok(decode_invoice(rpc, invstring, name).await?.payment_hash)
}

/// Lets one `pay` per payment hash run at a time in this plugin; later callers wait their
/// turn, then see the earlier attempt in `listsendpays`.
struct Turn {
    state: Arc<State>,
    hash: String,
}

impl Drop for Turn {
    fn drop(&mut self) {
        let n = crate::lock(&self.state.turns).remove(&self.hash);
        if let Some(n) = n {
            n.notify_waiters();
        }
    }
}

async fn take_turn(state: &Arc<State>, hash: &str) -> Turn {
    loop {
        let waiting;
        let notified;
        {
            let mut turns = crate::lock(&state.turns);
            match turns.get(hash) {
                None => {
                    turns.insert(hash.to_string(), Arc::new(tokio::sync::Notify::new()));
                    return Turn {
                        state: state.clone(),
                        hash: hash.to_string(),
                    };
                }
                Some(n) => waiting = n.clone(),
            }
            // Created while the lock is held, so the holder's wake-up cannot be missed.
            notified = waiting.notified();
        }
        notified.await;
    }
}

/// One part sent: its route and what became of it.
struct Part {
    partid: u64,
    route: Route,
    started: f64,
    ended: Option<f64>,
    /// None while in flight.
    outcome: Option<Result<Value, RpcError>>,
}

impl Part {
    fn json(&self) -> Value {
        let mut v = json!({
            "partid": self.partid,
            "amount_msat": self.route.delivered(),
            "amount_sent_msat": self.route.sent(),
            "route": self.route.to_json(),
            "start_time": format!("{:.3}", self.started),
        });
        match &self.outcome {
            None => v["state"] = json!("pending"),
            Some(Ok(r)) => {
                v["state"] = json!("completed");
                v["success"] = json!({
                    "id": r.get("created_index").cloned().unwrap_or(Value::Null),
                    "payment_preimage": r.get("payment_preimage").cloned().unwrap_or(Value::Null),
                });
            }
            Some(Err(e)) => {
                v["state"] = json!("completed");
                let mut f = json!({"code": e.code, "message": e.message});
                if let Some(d) = &e.data {
                    for k in [
                        "erring_index",
                        "erring_node",
                        "erring_channel",
                        "erring_direction",
                        "failcode",
                        "failcodename",
                    ] {
                        if let Some(x) = d.get(k) {
                            f[k] = x.clone();
                        }
                    }
                }
                v["failure"] = f;
            }
        }
        if let Some(end) = self.ended {
            v["end_time"] = json!(format!("{end:.3}"));
            v["age_in_seconds"] = json!((end - self.started).max(0.0).round() as u64);
        }
        v
    }
}

/// `pay`.
pub async fn pay(plugin: Plugin<Arc<State>>, params: Value) -> Result<Value, RpcError> {
    let req = params::pay_request(&params)?;
    Ok(pay_invoice(&plugin, &req).await?.result)
}

/// `xpay`: the same payment, with xpay's parameters and its shorter result.
pub async fn xpay(plugin: Plugin<Arc<State>>, params: Value) -> Result<Value, RpcError> {
    let req = params::xpay_request(&params)?;
    let paid = pay_invoice(&plugin, &req).await.map_err(xpay_error)?;
    Ok(xpay_result(&paid))
}

/// `sendamount`: pays an invoice without an amount so that `amount_msat` leaves our node,
/// the payee receiving it less the fees; xpay's result.
pub async fn sendamount(plugin: Plugin<Arc<State>>, params: Value) -> Result<Value, RpcError> {
    let req = params::sendamount_request(&params)?;
    let paid = pay_invoice(&plugin, &req).await.map_err(xpay_error)?;
    Ok(xpay_result(&paid))
}

/// xpay's result (also `sendamount`'s and `xkeysend`'s): the preimage, how many parts
/// failed and succeeded, the amounts delivered and sent.
pub(crate) fn xpay_result(paid: &Paid) -> Value {
    let r = &paid.result;
    json!({
        "payment_preimage": r.get("payment_preimage").cloned().unwrap_or(Value::Null),
        "failed_parts": paid.failed_parts,
        "successful_parts": r.get("parts").and_then(Value::as_u64).unwrap_or(1),
        "amount_msat": r.get("amount_msat").cloned().unwrap_or(Value::Null),
        "amount_sent_msat": r.get("amount_sent_msat").cloned().unwrap_or(Value::Null),
    })
}

/// xpay words the payee's refusal as CLN's xpay does; other errors are pay's.
pub(crate) fn xpay_error(e: RpcError) -> RpcError {
    let name = e
        .data
        .as_ref()
        .and_then(|d| d.get("failcodename"))
        .and_then(Value::as_str)
        .unwrap_or_default();
    if e.code == codes::PAY_DESTINATION_PERM_FAIL
        && name == "WIRE_INCORRECT_OR_UNKNOWN_PAYMENT_DETAILS"
    {
        let data = e.data.clone();
        let mut out = RpcError::new(
            e.code,
            "Destination said it doesn't know invoice: incorrect_or_unknown_payment_details",
        );
        if let Some(d) = data {
            out = out.with_data(d);
        }
        return out;
    }
    e
}

/// A paid invoice: `pay`'s result, and how many parts failed on the way.
pub struct Paid {
    /// `pay`'s result (as `listpays` shows the completed group).
    pub result: Value,
    /// Parts of this call that failed (0 when an earlier call had paid).
    pub failed_parts: u64,
    /// The sendpay group that paid.
    pub groupid: u64,
}

/// The message when an invoice carries an amount and `amount_msat` is given too.
pub(crate) const AMOUNT_UNNECESSARY: &str = "amount_msat: msatoshi parameter unnecessary";
/// The message when neither the invoice nor `amount_msat` gives an amount.
pub(crate) const AMOUNT_REQUIRED: &str = "amount_msat: msatoshi parameter required";

/// Pays `req`'s invoice (or returns the earlier payment of its hash).
pub(crate) async fn pay_invoice(
    plugin: &Plugin<Arc<State>>,
    req: &PayRequest,
) -> Result<Paid, RpcError> {
    let rpc = plugin.rpc().clone();
    let inv = decode_invoice(&rpc, &req.bolt11, req.invstring_param).await?;
    if req.fees_included && inv.amount_msat.is_some() {
        // sendamount decides what the payee gets: the invoice must leave it open.
        return Err(RpcError::invalid_params(
            "Expecting a Bolt11 invoice with no amount.",
        ));
    }
    let amount = match (inv.amount_msat, req.amount_msat) {
        (Some(_), Some(_)) => return Err(RpcError::invalid_params(AMOUNT_UNNECESSARY)),
        (None, None) => return Err(RpcError::invalid_params(AMOUNT_REQUIRED)),
        (Some(a), None) | (None, Some(a)) => a,
    };
    if inv.has_description_hash && req.description.is_none() && req.require_description {
        return Err(RpcError::invalid_params(
            "bolt11: Bolt11 uses description_hash, but you did not provide description parameter",
        ));
    }
    let now = unix_now();
    if now > inv.expires_at {
        return Err(expired(now, inv.expires_at));
    }
    let state = plugin.state().clone();
    let _turn = take_turn(&state, &inv.payment_hash).await;

    // An earlier attempt of the same hash decides whether we send at all. What a
    // sendamount delivered depends on the fees, so only a fixed amount must match.
    let fixed = (!req.fees_included).then_some(amount);
    let groupid = match earlier(&rpc, &inv, fixed, req.retry_for).await? {
        Earlier::Paid(result, groupid) => {
            return Ok(Paid {
                result,
                failed_parts: 0,
                groupid,
            });
        }
        Earlier::Next(g) => g,
    };
    crate::ensure_loaded(plugin).await;
    let mut run = Run::new(plugin, req, &inv, amount, groupid);
    run.publish("pending");
    let outcome = run.go(&rpc).await;
    crate::persist(plugin).await;
    run.publish(if outcome.is_ok() {
        "complete"
    } else {
        "failed"
    });
    // CLN's pay plugin announces the outcome (`pay_success`, `pay_failure`).
    let _ = match &outcome {
        Ok(()) => plugin.notify(
            "pay_success",
            json!({"payment_hash": inv.payment_hash, "bolt11": req.bolt11}),
        ),
        Err(e) => plugin.notify(
            "pay_failure",
            json!({"payment_hash": inv.payment_hash, "bolt11": req.bolt11,
                   "error": {"message": e.message}}),
        ),
    };
    match outcome {
        Ok(()) => {
            let rows = sendpays(&rpc, &inv.payment_hash).await?;
            let groups = listpays::groups(&rows);
            groups
                .iter()
                .find(|g| {
                    g.first()
                        .and_then(|p| p.get("groupid"))
                        .and_then(Value::as_u64)
                        == Some(groupid)
                })
                .and_then(|g| listpays::pay_result(g))
                .map(|result| Paid {
                    result,
                    failed_parts: run
                        .parts
                        .iter()
                        .filter(|p| matches!(p.outcome, Some(Err(_))))
                        .count() as u64,
                    groupid,
                })
                .ok_or_else(|| RpcError::lightningd("payment completed but its record is missing"))
        }
        Err(e) => Err(e),
    }
}

fn expired(now: u64, expiry: u64) -> RpcError {
    RpcError::new(codes::PAY_INVOICE_EXPIRED, "Invoice expired")
        .with_data(json!({"now": now, "expiry": expiry}))
}

/// The `listsendpays` records of payment hash `hash`.
pub(crate) async fn sendpays(rpc: &RpcClient, hash: &str) -> Result<Vec<Value>, RpcError> {
    let v = rpc
        .call("listsendpays", json!({"payment_hash": hash}))
        .await?;
    Ok(v.get("payments")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default())
}

enum Earlier {
    /// Already paid: this is the earlier result, and its group.
    Paid(Value, u64),
    /// Send as this group.
    Next(u64),
}

/// What earlier attempts of this payment hash mean: paid (return that result), still in
/// flight (wait up to `wait_secs`, then decide again), or failed/none (send a new group).
/// A paid `amount`, when given, must be the one paid before.
async fn earlier(
    rpc: &RpcClient,
    inv: &Invoice,
    amount: Option<u64>,
    wait_secs: u64,
) -> Result<Earlier, RpcError> {
    let mut waited = false;
    loop {
        let rows = sendpays(rpc, &inv.payment_hash).await?;
        let groups = listpays::groups(&rows);
        for g in &groups {
            if listpays::group_status(g) != "complete" {
                continue;
            }
            let Some(result) = listpays::pay_result(g) else {
                continue;
            };
            let paid = result.get("amount_msat").and_then(Value::as_u64);
            let dest = result.get("destination").and_then(Value::as_str);
            if paid.is_some_and(|p| amount.is_some_and(|a| a != p))
                || dest.is_some_and(|d| d != inv.destination)
            {
                return Err(RpcError::new(
                    codes::PAY_RHASH_ALREADY_USED,
                    "Already paid with this hash using different amount or destination",
                ));
            }
            let group = g
                .first()
                .and_then(|p| p.get("groupid"))
                .and_then(Value::as_u64)
                .unwrap_or(0);
            return Ok(Earlier::Paid(result, group));
        }
        let pending: Vec<&Value> = rows
            .iter()
            .filter(|p| p.get("status").and_then(Value::as_str) == Some("pending"))
            .collect();
        if pending.is_empty() {
            let next = rows
                .iter()
                .filter_map(|p| p.get("groupid").and_then(Value::as_u64))
                .max()
                .map_or(1, |g| g + 1);
            return Ok(Earlier::Next(next));
        }
        if waited {
            return Err(RpcError::new(
                codes::PAY_IN_PROGRESS,
                "Payment in progress: an earlier attempt of this invoice is still pending",
            ));
        }
        for p in pending {
            let partid = p.get("partid").and_then(Value::as_u64).unwrap_or(0);
            let groupid = p.get("groupid").and_then(Value::as_u64).unwrap_or(0);
            let _ = rpc
                .call(
                    "waitsendpay",
                    json!({"payment_hash": inv.payment_hash, "timeout": wait_secs.max(1),
                           "partid": partid, "groupid": groupid}),
                )
                .await;
        }
        waited = true;
    }
}

/// Waits for one part's outcome; connection hiccups are retried.
async fn wait_part(
    rpc: RpcClient,
    hash: String,
    partid: u64,
    groupid: u64,
) -> Result<Value, RpcError> {
    let mut tries = 0;
    loop {
        match rpc
            .call(
                "waitsendpay",
                json!({"payment_hash": hash, "partid": partid, "groupid": groupid}),
            )
            .await
        {
            Ok(v) => return Ok(v),
            Err(CallError::Rpc(e)) if e.code == codes::PAY_IN_PROGRESS => {}
            Err(CallError::Rpc(e)) => return Err(e),
            Err(other) => {
                tries += 1;
                if tries > 30 {
                    return Err(other.into());
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// One payment's state across rounds.
struct Run<'a> {
    plugin: &'a Plugin<Arc<State>>,
    req: &'a PayRequest,
    inv: &'a Invoice,
    amount: u64,
    groupid: u64,
    fee_limit: u64,
    parts: Vec<Part>,
    excluded_chans: HashSet<ChanKey>,
    excluded_nodes: HashSet<String>,
    started: f64,
}

impl<'a> Run<'a> {
    fn new(
        plugin: &'a Plugin<Arc<State>>,
        req: &'a PayRequest,
        inv: &'a Invoice,
        amount: u64,
        groupid: u64,
    ) -> Self {
        Run {
            plugin,
            req,
            inv,
            amount,
            groupid,
            fee_limit: req.fee_limit.for_amount(amount),
            parts: vec![],
            excluded_chans: req.exclude_chans.clone(),
            excluded_nodes: req.exclude_nodes.clone(),
            started: unix_now_f64(),
        }
    }

    fn in_flight(&self) -> impl Iterator<Item = &Part> {
        self.parts.iter().filter(|p| p.outcome.is_none())
    }

    fn succeeded(&self) -> impl Iterator<Item = &Part> {
        self.parts
            .iter()
            .filter(|p| matches!(p.outcome, Some(Ok(_))))
    }

    /// Amount delivered or on its way (for `sendamount`, sent: its amount includes fees).
    fn covered(&self) -> u64 {
        self.in_flight()
            .chain(self.succeeded())
            .map(|p| {
                if self.req.fees_included {
                    p.route.sent()
                } else {
                    p.route.delivered()
                }
            })
            .sum()
    }

    /// The payment's total as the payee's onion states it: the invoice's amount, or for
    /// `sendamount` (one part) what the part delivers.
    fn total_msat(&self, route: &Route) -> u64 {
        if self.req.fees_included {
            route.delivered()
        } else {
            self.amount
        }
    }

    fn fees_committed(&self) -> u64 {
        self.in_flight()
            .chain(self.succeeded())
            .map(|p| p.route.fee())
            .sum()
    }

    fn error_data(&self) -> Value {
        json!({
            "payment_hash": self.inv.payment_hash,
            "destination": self.inv.destination,
            "amount_msat": self.amount,
            "sendpay_tries": self.parts.len(),
            "attempts": self.parts.iter().map(Part::json).collect::<Vec<_>>(),
        })
    }

    fn with_attempts(&self, e: RpcError) -> RpcError {
        let mut data = self.error_data();
        if let (Some(extra), Some(d)) = (
            e.data.as_ref().and_then(Value::as_object),
            data.as_object_mut(),
        ) {
            for (k, v) in extra {
                d.entry(k.clone()).or_insert(v.clone());
            }
        }
        RpcError::new(e.code, e.message).with_data(data)
    }

    /// Shows this payment in `paystatus`.
    fn publish(&self, status: &str) {
        let entry = json!({
            "bolt11": self.req.bolt11,
            "payment_hash": self.inv.payment_hash,
            "amount_msat": self.amount,
            "destination": self.inv.destination,
            "groupid": self.groupid,
            "status": status,
            "created_at": self.started,
            "attempts": self.parts.iter().map(Part::json).collect::<Vec<_>>(),
        });
        let mut all = crate::lock(&self.plugin.state().status);
        all.retain(|e| {
            e.get("payment_hash") != entry.get("payment_hash")
                || e.get("groupid") != entry.get("groupid")
        });
        all.push(entry);
        let excess = all.len().saturating_sub(crate::MAX_STATUS_ENTRIES);
        all.drain(..excess);
    }

    async fn go(&mut self, rpc: &RpcClient) -> Result<(), RpcError> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(self.req.retry_for);
        let our_id = crate::our_id(rpc).await?;
        if our_id == self.inv.destination {
            return Err(RpcError::invalid_params(
                "bolt11: paying ourselves is not supported",
            ));
        }
        let mut graph = self.graph(rpc).await?;
        let mut source = graph.node(&our_id);
        let mut target = graph.node(&self.inv.destination);
        let final_cltv = self.inv.min_final_cltv.saturating_add(FINAL_CLTV_MARGIN);
        let mut waiters: JoinSet<(u64, Result<Value, RpcError>)> = JoinSet::new();
        let mut last_problem: Option<RpcError> = None;
        let mut fatal: Option<RpcError> = None;
        let mut timed_out = false;
        let mut next_partid = 1u64;
        loop {
            let done = self.succeeded().next().is_some();
            let in_flight = self.in_flight().count();
            let left = self.amount.saturating_sub(self.covered());
            if !done && fatal.is_none() && left > 0 {
                if tokio::time::Instant::now() >= deadline {
                    timed_out = true;
                } else if unix_now() > self.inv.expires_at {
                    fatal = Some(expired(unix_now(), self.inv.expires_at));
                } else if next_partid > MAX_PARTS_TOTAL {
                    fatal = Some(last_problem.clone().unwrap_or_else(|| {
                        RpcError::new(codes::PAY_STOPPED_RETRYING, "Too many attempts")
                    }));
                } else {
                    let planned = match rpc.call("listpeerchannels", json!({})).await {
                        Ok(local) => {
                            graph.add_local(&our_id, &local);
                            self.plan(&graph, source, target, final_cltv, left)
                        }
                        // Parts may be in flight: wait for them rather than leave them.
                        Err(e) => Err(e.into()),
                    };
                    match planned {
                        Ok(routes) => {
                            last_problem = None;
                            for r in routes {
                                let partid = next_partid;
                                next_partid += 1;
                                self.send(rpc, r, partid, &mut waiters, &mut fatal).await;
                            }
                            self.publish("pending");
                        }
                        Err(e) => last_problem = Some(e),
                    }
                }
            }
            if self.in_flight().count() == 0 {
                if self.succeeded().next().is_some() {
                    return Ok(());
                }
                if let Some(e) = fatal {
                    return Err(self.with_attempts(e));
                }
                if timed_out {
                    return Err(self.with_attempts(RpcError::new(
                        codes::PAY_STOPPED_RETRYING,
                        format!(
                            "Ran out of time: retry_for {}s passed without completing the payment",
                            self.req.retry_for
                        ),
                    )));
                }
                if in_flight == 0
                    && let Some(e) = last_problem.take()
                {
                    // Right after the payee's channels are announced, their gossip may not
                    // have reached us, and an invoice made before the payee heard its peer's
                    // channel_update carries no route hint: no channel leads to the payee
                    // yet. Wait a little for gossip before giving up.
                    if self.parts.is_empty()
                        && !graph.has_incoming(target)
                        && let Some(g) = self.await_payee_in_gossip(rpc, deadline).await
                    {
                        graph = g;
                        source = graph.node(&our_id);
                        target = graph.node(&self.inv.destination);
                        continue;
                    }
                    // Nothing was in flight and nothing could be planned: no point retrying.
                    return Err(self.with_attempts(e));
                }
                continue;
            }
            let Some(joined) = waiters.join_next().await else {
                continue;
            };
            let Ok((partid, outcome)) = joined else {
                continue;
            };
            self.finish(partid, outcome, &mut fatal);
            self.publish("pending");
        }
    }

    /// The payment graph: gossip and the invoice's route hints.
    async fn graph(&self, rpc: &RpcClient) -> Result<Graph, RpcError> {
        let mut graph = Graph::new();
        graph.add_gossip(&rpc.call("listchannels", json!({})).await?);
        graph.add_hints(self.inv.routes.as_ref(), &self.inv.destination);
        Ok(graph)
    }

    /// Polls gossip until a channel leads to the payee, for up to [`GOSSIP_GRACE`] (and
    /// never past `deadline`); the graph then, or `None`.
    async fn await_payee_in_gossip(
        &self,
        rpc: &RpcClient,
        deadline: tokio::time::Instant,
    ) -> Option<Graph> {
        let until = deadline.min(tokio::time::Instant::now() + GOSSIP_GRACE);
        self.plugin.log(
            fulgur_plugin_sdk::Level::Debug,
            format!(
                "No channel leads to payee {} yet: waiting for gossip",
                self.inv.destination
            ),
        );
        while tokio::time::Instant::now() < until {
            tokio::time::sleep(GOSSIP_POLL).await;
            let Ok(mut g) = self.graph(rpc).await else {
                return None;
            };
            let target = g.node(&self.inv.destination);
            if g.has_incoming(target) {
                self.plugin.log(
                    fulgur_plugin_sdk::Level::Debug,
                    format!(
                        "Payee {} appeared in gossip: planning again",
                        self.inv.destination
                    ),
                );
                return Some(g);
            }
        }
        None
    }

    fn plan(
        &self,
        graph: &Graph,
        source: usize,
        target: usize,
        final_cltv: u32,
        left: u64,
    ) -> Result<Vec<Route>, RpcError> {
        // Our own channels' spendable amounts already count our parts in flight.
        let mut reserved: HashMap<ChanKey, u64> = HashMap::new();
        for p in self.in_flight() {
            for h in &p.route.hops {
                if graph.edge(&h.key).is_some_and(|e| e.spendable.is_none()) {
                    *reserved.entry(h.key.clone()).or_insert(0) += h.amount_msat;
                }
            }
        }
        let liquidity = crate::lock(&self.plugin.state().liquidity).clone();
        let base = Query {
            source,
            target,
            amount: left,
            final_cltv,
            riskfactor: self.req.riskfactor,
            max_delay: self.req.maxdelay,
            max_fee: None,
            excluded_chans: &self.excluded_chans,
            excluded_nodes: &self.excluded_nodes,
            reserved: &reserved,
            liquidity: &liquidity,
            now: unix_now(),
            fee_only: false,
            charge_source: false,
            biases: None,
        };
        // sendamount's fees come out of the one part it sends.
        let multi = self.inv.payment_secret.is_some() && !self.req.fees_included;
        let limits = SplitLimits {
            fee_budget: self.fee_limit.saturating_sub(self.fees_committed()),
            min_part: if multi {
                MIN_PART_MSAT.max(self.amount / 64)
            } else {
                u64::MAX
            },
            max_parts: if multi { MAX_PARTS_PER_ROUND } else { 1 },
        };
        let routes = route::split(graph, &base, left, limits).map_err(|e| match e {
            NoRoute::Unreachable => RpcError::new(
                codes::PAY_ROUTE_NOT_FOUND,
                if self.parts.is_empty() {
                    "Could not find a route"
                } else {
                    "Ran out of routes to try"
                },
            ),
            NoRoute::TooExpensive { fee, delay } => RpcError::new(
                codes::PAY_ROUTE_TOO_EXPENSIVE,
                format!(
                    "Route too expensive: the cheapest has fee {fee}msat (budget {}msat) and delay {delay} (maxdelay {})",
                    self.fee_limit.saturating_sub(self.fees_committed()),
                    self.req.maxdelay
                ),
            )
            .with_data(json!({
                "fee": fee,
                "feepercent": fee as f64 * 100.0 / self.amount.max(1) as f64,
                "delay": delay,
            })),
        })?;
        if !self.req.fees_included {
            return Ok(routes);
        }
        routes
            .iter()
            .map(|r| {
                route::sending_exactly(graph, r, left).ok_or_else(|| {
                    RpcError::new(
                        codes::PAY_ROUTE_TOO_EXPENSIVE,
                        format!(
                            "Route too expensive: its fees leave nothing of {left}msat to deliver"
                        ),
                    )
                })
            })
            .collect()
    }

    async fn send(
        &mut self,
        rpc: &RpcClient,
        route: Route,
        partid: u64,
        waiters: &mut JoinSet<(u64, Result<Value, RpcError>)>,
        fatal: &mut Option<RpcError>,
    ) {
        let mut p = json!({
            "route": route.to_json(),
            "payment_hash": self.inv.payment_hash,
            "bolt11": self.req.bolt11,
            "groupid": self.groupid,
        });
        if let Some(secret) = &self.inv.payment_secret {
            p["payment_secret"] = json!(secret);
            p["partid"] = json!(partid);
            p["amount_msat"] = json!(self.total_msat(&route));
        }
        if let Some(l) = &self.req.label {
            p["label"] = json!(l);
        }
        if let Some(d) = &self.req.description {
            p["description"] = json!(d);
        }
        let partid = if self.inv.payment_secret.is_some() {
            partid
        } else {
            0
        };
        self.parts.push(Part {
            partid,
            route,
            started: unix_now_f64(),
            ended: None,
            outcome: None,
        });
        if let Some(part) = self.parts.last() {
            self.notify_part_start(part);
        }
        match rpc.call("sendpay", p).await {
            Ok(_) => {
                let (rpc, hash, groupid) =
                    (rpc.clone(), self.inv.payment_hash.clone(), self.groupid);
                waiters.spawn(async move { (partid, wait_part(rpc, hash, partid, groupid).await) });
            }
            Err(CallError::Rpc(e)) if e.code == codes::PAY_TRY_OTHER_ROUTE => {
                // Our first channel could not take it: leave it out of this payment.
                if let Some(first) = self.parts.last().and_then(|p| p.route.hops.first()) {
                    self.excluded_chans.insert(first.key.clone());
                }
                self.close_last(Err(e));
            }
            Err(e) => {
                let e: RpcError = e.into();
                *fatal = Some(e.clone());
                self.close_last(Err(e));
            }
        }
    }

    fn close_last(&mut self, outcome: Result<Value, RpcError>) {
        if let Some(last) = self.parts.last_mut() {
            last.outcome = Some(outcome);
            last.ended = Some(unix_now_f64());
        }
        if let Some(last) = self.parts.last() {
            self.notify_part_end(last);
        }
    }

    /// xpay's `pay_part_start`: the part's amount and its hops, each with the amount
    /// entering the node that forwards over it (`channel_in_msat`) and the amount the
    /// channel carries (`channel_out_msat`).
    fn notify_part_start(&self, part: &Part) {
        let hops = &part.route.hops;
        let hops: Vec<Value> = hops
            .iter()
            .enumerate()
            .map(|(i, h)| {
                let into = if i == 0 { h } else { &hops[i - 1] };
                json!({
                    "next_node": h.id,
                    "short_channel_id": h.key.scid,
                    "direction": h.key.dir,
                    "channel_in_msat": into.amount_msat,
                    "channel_out_msat": h.amount_msat,
                })
            })
            .collect();
        let _ = self.plugin.notify(
            "pay_part_start",
            json!({
                "payment_hash": self.inv.payment_hash,
                "groupid": self.groupid,
                "partid": part.partid,
                "total_payment_msat": self.total_msat(&part.route),
                "attempt_msat": part.route.delivered(),
                "hops": hops,
            }),
        );
    }

    /// xpay's `pay_part_end`: success, or the failure with the erring node and channel.
    fn notify_part_end(&self, part: &Part) {
        let mut n = json!({
            "payment_hash": self.inv.payment_hash,
            "groupid": self.groupid,
            "partid": part.partid,
            "duration": (part.ended.unwrap_or(part.started) - part.started).max(0.0),
        });
        match &part.outcome {
            Some(Ok(_)) => n["status"] = json!("success"),
            Some(Err(e)) => {
                n["status"] = json!("failure");
                n["error_message"] = json!(e.message);
                if let Some(d) = &e.data {
                    for (from, to) in [
                        ("erring_node", "failed_node_id"),
                        ("erring_channel", "failed_short_channel_id"),
                        ("erring_direction", "failed_direction"),
                        ("failcode", "error_code"),
                    ] {
                        if let Some(v) = d.get(from) {
                            n[to] = v.clone();
                        }
                    }
                }
            }
            None => return,
        }
        let _ = self.plugin.notify("pay_part_end", n);
    }

    /// Records a part's outcome and learns from it.
    fn finish(
        &mut self,
        partid: u64,
        outcome: Result<Value, RpcError>,
        fatal: &mut Option<RpcError>,
    ) {
        let Some(i) = self
            .parts
            .iter()
            .position(|p| p.partid == partid && p.outcome.is_none())
        else {
            return;
        };
        let hops = self.parts[i].route.hops.clone();
        let now = unix_now();
        match &outcome {
            Ok(_) => {
                let mut liq = crate::lock(&self.plugin.state().liquidity);
                for h in hops.iter().skip(1) {
                    liq.carried(&h.key, h.amount_msat, now);
                }
            }
            Err(e) if e.code == codes::PAY_DESTINATION_PERM_FAIL => {
                *fatal = Some(e.clone());
            }
            Err(e) => self.learn_failure(e, &hops, now),
        }
        self.plugin.debug(format!(
            "pay {} part {partid}: {}",
            self.inv.payment_hash,
            match &outcome {
                Ok(_) => "complete".to_string(),
                Err(e) => format!("{} {}", e.code, e.message),
            }
        ));
        let part = &mut self.parts[i];
        part.outcome = Some(outcome);
        part.ended = Some(unix_now_f64());
        self.notify_part_end(&self.parts[i]);
    }

    fn learn_failure(&mut self, e: &RpcError, hops: &[route::Hop], now: u64) {
        let l = lesson(
            e.data.as_ref().unwrap_or(&Value::Null),
            hops,
            &self.inv.destination,
        );
        {
            let mut liq = crate::lock(&self.plugin.state().liquidity);
            for (k, amount) in &l.carried {
                liq.carried(k, *amount, now);
            }
            if let Some((k, amount)) = &l.short {
                liq.failed(k, *amount, now);
            }
        }
        if let Some(k) = l.exclude_chan {
            self.excluded_chans.insert(k);
        }
        if let Some(n) = l.exclude_node {
            self.excluded_nodes.insert(n);
        }
    }
}

/// What a part that failed along the way teaches.
#[derive(Debug, Default, PartialEq)]
struct Lesson {
    /// Channels that carried their amount (before the failing node).
    carried: Vec<(ChanKey, u64)>,
    /// A channel that lacked the liquidity for this amount.
    short: Option<(ChanKey, u64)>,
    /// A channel to leave out for the rest of the payment.
    exclude_chan: Option<ChanKey>,
    /// A node to leave out for the rest of the payment.
    exclude_node: Option<String>,
}

/// Reads `waitsendpay`'s failure `data` (erring_index, erring_node, failcode) against the
/// part's `hops`. Node `i` (0 = us) forwards over `hops[i]`.
fn lesson(data: &Value, hops: &[route::Hop], destination: &str) -> Lesson {
    let mut l = Lesson::default();
    let failcode = data.get("failcode").and_then(Value::as_u64).unwrap_or(0);
    let Some(idx) = data
        .get("erring_index")
        .and_then(Value::as_u64)
        .and_then(|i| usize::try_from(i).ok())
    else {
        return l;
    };
    if failcode == MPP_TIMEOUT {
        return l;
    }
    // Every channel before the failing node (but our own, known exactly) carried its amount.
    l.carried = hops
        .iter()
        .take(idx)
        .skip(1)
        .map(|h| (h.key.clone(), h.amount_msat))
        .collect();
    let Some(failed) = hops.get(idx) else {
        // The destination refused without a permanent failure: stop using its last channel
        // for this payment.
        l.exclude_chan = hops.last().map(|h| h.key.clone());
        return l;
    };
    let erring_node = data.get("erring_node").and_then(Value::as_str);
    if failcode & NODE != 0
        && idx > 0
        && let Some(n) = erring_node.filter(|n| *n != destination)
    {
        l.exclude_node = Some(n.to_string());
        return l;
    }
    if failcode == TEMPORARY_CHANNEL_FAILURE && idx > 0 {
        l.short = Some((failed.key.clone(), failed.amount_msat));
    } else {
        l.exclude_chan = Some(failed.key.clone());
    }
    l
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hops() -> Vec<route::Hop> {
        ["1x1x0", "2x2x0", "3x3x0"]
            .iter()
            .enumerate()
            .map(|(i, s)| route::Hop {
                id: format!("n{}", i + 1),
                key: ChanKey::new(s, 0),
                amount_msat: 3000 - i as u64 * 1000,
                delay: 30 - i as u32 * 10,
            })
            .collect()
    }

    #[test]
    fn temporary_channel_failure_caps_that_channel_and_floors_the_ones_before() {
        let l = lesson(
            &json!({"erring_index": 2, "failcode": 0x1007, "erring_node": "n2"}),
            &hops(),
            "n3",
        );
        assert_eq!(l.carried, vec![(ChanKey::new("2x2x0", 0), 2000)]);
        assert_eq!(l.short, Some((ChanKey::new("3x3x0", 0), 1000)));
        assert_eq!(l.exclude_chan, None);
    }

    #[test]
    fn other_failures_exclude_a_channel_or_node() {
        let perm = lesson(
            &json!({"erring_index": 1, "failcode": 0x4008}),
            &hops(),
            "n3",
        );
        assert_eq!(perm.exclude_chan, Some(ChanKey::new("2x2x0", 0)));
        assert_eq!(perm.short, None);
        let node = lesson(
            &json!({"erring_index": 1, "failcode": 0x2002, "erring_node": "n1"}),
            &hops(),
            "n3",
        );
        assert_eq!(node.exclude_node.as_deref(), Some("n1"));
        // Our own first channel refusing is not a liquidity lesson.
        let local = lesson(
            &json!({"erring_index": 0, "failcode": 0x1007}),
            &hops(),
            "n3",
        );
        assert_eq!(local.exclude_chan, Some(ChanKey::new("1x1x0", 0)));
        let dest = lesson(
            &json!({"erring_index": 3, "failcode": 0x2002, "erring_node": "n3"}),
            &hops(),
            "n3",
        );
        assert_eq!(dest.exclude_chan, Some(ChanKey::new("3x3x0", 0)));
        assert_eq!(dest.exclude_node, None);
        assert_eq!(dest.carried.len(), 2);
        assert_eq!(
            lesson(&json!({"erring_index": 2, "failcode": 23}), &hops(), "n3"),
            Lesson::default()
        );
        assert_eq!(lesson(&json!({}), &hops(), "n3"), Lesson::default());
    }
}
