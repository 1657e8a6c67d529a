//! Built-in `pay` plugin: pays BOLT 11 invoices through the node's `sendpay`/`waitsendpay`,
//! finding routes itself, splitting payments into parts when one path is not enough, and
//! learning channel liquidity from every attempt (kept in the datastore across restarts).
//! Also serves `listpays` and `paystatus`. See `docs/PAY.md`.
//!
//! Notifications: `pay_success`, `pay_failure` (as CLN's pay), `pay_part_start`,
//! `pay_part_end` (as CLN's xpay; for every part, whichever command sent it).
//!
//! Methods: `pay` (CLN's parameters and errors), `xpay` (the same payment with xpay's
//! parameters and result), `listpays [bolt11] [payment_hash] [status]`,
//! `paystatus [bolt11]`.

// Daemon code returns errors; a panic here would stop the process (tests may unwrap:
// clippy.toml).
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::string_slice)]

mod liquidity;
mod listpays;
mod params;
mod pay;
mod route;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use fulgur_plugin_sdk::{Builder, Plugin, RpcError, RpcMethod};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::liquidity::Liquidity;

/// Datastore key of the learned liquidity.
const DATASTORE_KEY: [&str; 2] = ["pay", "liquidity"];
/// How many finished payments `paystatus` remembers.
pub(crate) const MAX_STATUS_ENTRIES: usize = 1000;

/// Shared by all requests; every lock is held only for a few statements, never across an
/// await.
#[derive(Default)]
pub(crate) struct State {
    /// What has been learned about channel liquidity.
    pub liquidity: Mutex<Liquidity>,
    /// Whether the datastore copy has been read.
    loaded: AtomicBool,
    /// Payment hashes being paid by a `pay` call, with a wake-up for the next caller.
    pub turns: Mutex<HashMap<String, Arc<tokio::sync::Notify>>>,
    /// `paystatus` entries, oldest first.
    pub status: Mutex<Vec<Value>>,
}

/// Locks `m`, recovering the data if a panic poisoned it.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Reads the learned liquidity from the datastore, once.
pub(crate) async fn ensure_loaded(plugin: &Plugin<Arc<State>>) {
    let state = plugin.state();
    if state.loaded.swap(true, Ordering::SeqCst) {
        return;
    }
    match plugin
        .rpc()
        .call("listdatastore", json!({"key": DATASTORE_KEY}))
        .await
    {
        Ok(v) => {
            let text = v
                .pointer("/datastore/0/string")
                .and_then(Value::as_str)
                .unwrap_or_default();
            if text.is_empty() {
                return;
            }
            match serde_json::from_str::<Value>(text) {
                Ok(stored) => {
                    let n = lock(&state.liquidity).merge_json(&stored);
                    plugin.info(format!("loaded liquidity bounds of {n} channel directions"));
                }
                Err(e) => plugin.warn(format!("ignoring unreadable stored liquidity: {e}")),
            }
        }
        Err(e) => {
            plugin.warn(format!("cannot read stored liquidity: {e}"));
            state.loaded.store(false, Ordering::SeqCst);
        }
    }
}

/// Writes the learned liquidity to the datastore.
pub(crate) async fn persist(plugin: &Plugin<Arc<State>>) {
    let text = {
        let mut liq = lock(&plugin.state().liquidity);
        liq.prune(pay::unix_now());
        plugin.debug(format!(
            "storing liquidity bounds of {} channel directions",
            liq.len()
        ));
        liq.to_json().to_string()
    };
    let r = plugin
        .rpc()
        .call(
            "datastore",
            json!({"key": DATASTORE_KEY, "string": text, "mode": "create-or-replace"}),
        )
        .await;
    if let Err(e) = r {
        plugin.warn(format!("cannot store liquidity: {e}"));
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListpaysParams {
    bolt11: Option<String>,
    payment_hash: Option<String>,
    status: Option<String>,
    index: Option<String>,
    start: Option<u64>,
    limit: Option<u32>,
}

async fn listpays_cmd(plugin: Plugin<Arc<State>>, p: ListpaysParams) -> Result<Value, RpcError> {
    if let Some(s) = p.status.as_deref()
        && !matches!(s, "pending" | "complete" | "failed")
    {
        return Err(RpcError::invalid_params(format!(
            "status: should be pending, complete or failed: invalid token '{s}'"
        )));
    }
    let mut q = json!({});
    if let Some(b) = &p.bolt11 {
        q["bolt11"] = json!(b);
    }
    if let Some(h) = &p.payment_hash {
        q["payment_hash"] = json!(h);
    }
    // Paging as CLN's listpays: over the sendpays' `created` or `updated` index.
    if let Some(i) = &p.index {
        q["index"] = json!(i);
    }
    if let Some(s) = p.start {
        q["start"] = json!(s);
    }
    if let Some(l) = p.limit {
        q["limit"] = json!(l);
    }
    let v = plugin.rpc().call("listsendpays", q).await?;
    let rows = v
        .get("payments")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    Ok(listpays::listpays(&rows, p.status.as_deref()))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PaystatusParams {
    bolt11: Option<String>,
}

async fn paystatus_cmd(plugin: Plugin<Arc<State>>, p: PaystatusParams) -> Result<Value, RpcError> {
    let all = lock(&plugin.state().status);
    let pays: Vec<Value> = all
        .iter()
        .filter(|e| {
            p.bolt11
                .as_deref()
                .is_none_or(|b| e.get("bolt11").and_then(Value::as_str) == Some(b))
        })
        .cloned()
        .collect();
    Ok(json!({ "pay": pays }))
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), fulgur_plugin_sdk::RunError> {
    Builder::<Arc<State>>::new()
        .dynamic(true)
        // CLN's pay plugin emits the first two, its xpay plugin the part notifications.
        .notification("pay_success")
        .notification("pay_failure")
        .notification("pay_part_start")
        .notification("pay_part_end")
        .rpcmethod(
            RpcMethod::new("pay", pay::pay)
                .usage(params::PAY_USAGE)
                .description("Send payment specified by {bolt11}")
                .long_description(
                    "Pays a BOLT 11 invoice: finds routes (learning channel liquidity from \
                     every attempt), splits the amount into parts when needed, and retries \
                     for up to {retry_for} seconds within {maxfeepercent}/{exemptfee} or \
                     {maxfee}. See docs/PAY.md.",
                ),
        )
        .rpcmethod(
            RpcMethod::new("xpay", pay::xpay)
                .usage(params::XPAY_USAGE)
                .description("Pay {invstring}, as CLN's xpay")
                .long_description(
                    "The same payment as pay, with xpay's parameters (fee limit {maxfee}, by \
                     default 1% or 5,000 msat, whichever is greater) and its result: the \
                     preimage, the parts that failed and succeeded, the amounts delivered and \
                     sent. Only the built-in askrene layers are accepted.",
                ),
        )
        .rpcmethod(
            RpcMethod::typed(
                "listpays",
                "[bolt11] [payment_hash] [status] [index] [start] [limit]",
                listpays_cmd,
            )
            .description("List result of payment {bolt11} or {payment_hash}, or all")
            .long_description(
                "One entry per payment attempt (payment hash and group), from listsendpays, \
                     optionally only those with {status} (pending, complete or failed); \
                     {index} (created or updated), {start} and {limit} page over the parts \
                     as listsendpays does.",
            ),
        )
        .rpcmethod(
            RpcMethod::typed("paystatus", "[bolt11]", paystatus_cmd)
                .description("Detail status of attempts to pay {bolt11}, or all")
                .long_description(
                    "The parts each pay call of this run sent, their routes and outcomes.",
                ),
        )
        .run(Arc::new(State::default()))
        .await
}
