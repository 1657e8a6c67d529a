//! Built-in `pay` plugin: pays BOLT 11 invoices through the node's `sendpay`/`waitsendpay`,
//! finding routes itself, splitting payments into parts when one path is not enough, and
//! learning channel liquidity from every attempt (kept in the datastore across restarts).
//! Also serves `listpays` and `paystatus`. See `docs/PAY.md`.
//!
//! Notifications: `pay_success`, `pay_failure` (as CLN's pay), `pay_part_start`,
//! `pay_part_end` (as CLN's xpay; for every part, whichever command sent it).
//!
//! Methods: `pay` (CLN's parameters and errors), `xpay` (the same payment with xpay's
//! parameters and result), `sendamount` (an invoice without an amount paid so that a given
//! amount leaves the node, fees included; xpay's result), `xkeysend` (the node's keysend
//! with xpay's parameters and result), `renepay` and `renepaystatus` (CLN's renepay
//! interface over the same engine; `renepay.rs`), `listpays [bolt11] [payment_hash] [status]`,
//! `paystatus [bolt11]`, and CLN's askrene commands (`getroutes`, `askrene-create-layer`,
//! `askrene-remove-layer`, `askrene-listlayers`, `askrene-create-channel`,
//! `askrene-update-channel`, `askrene-remove-channel-update`, `askrene-inform-channel`,
//! `askrene-bias-channel`, `askrene-bias-node`, `askrene-disable-node`, `askrene-age`,
//! `askrene-reserve`, `askrene-unreserve`, `askrene-listreservations`; see `askrene.rs`).

// Daemon code returns errors; a panic here would stop the process (tests may unwrap:
// clippy.toml).
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::string_slice)]

mod askrene;
mod getroutes;
mod keysend;
mod layers;
mod liquidity;
mod listpays;
mod params;
mod pay;
mod renepay;
mod route;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
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
    /// askrene's layers and reservations.
    pub askrene: Mutex<layers::Askrene>,
    /// Set once the persistent layers have been read from the datastore.
    pub askrene_loaded: tokio::sync::OnceCell<()>,
    /// Held while a layer is changed and written, so writes land in order.
    pub askrene_writes: tokio::sync::Mutex<()>,
    /// Numbers askrene-reserve calls (their `command_id`).
    pub askrene_calls: AtomicU64,
}

/// Locks `m`, recovering the data if a panic poisoned it.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Our node id, from `getinfo`.
pub(crate) async fn our_id(rpc: &fulgur_plugin_sdk::RpcClient) -> Result<String, RpcError> {
    let info = rpc.call("getinfo", json!({})).await?;
    Ok(info
        .get("id")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string())
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
            RpcMethod::new("sendamount", pay::sendamount)
                .usage(params::SENDAMOUNT_USAGE)
                .description("Send {amount_msat} to pay {invstring}, fees included")
                .long_description(
                    "Pays a BOLT 11 invoice without an amount, in one part, so that \
                     {amount_msat} leaves this node in total: the payee receives it less the \
                     fees (at most {maxfee}, and never more than half of it). xpay's result. \
                     BOLT 12 offers are not supported yet.",
                ),
        )
        .rpcmethod(
            RpcMethod::new("xkeysend", keysend::xkeysend)
                .usage(params::XKEYSEND_USAGE)
                .description("Send {amount_msat} to {destination} without an invoice, as CLN's xkeysend")
                .long_description(
                    "A keysend (the node's, routed and retried for {retry_for} seconds) with \
                     xpay's fee limit (by default 1% or 5,000 msat, whichever is greater) and \
                     result: the preimage, the parts that failed and succeeded, the amounts \
                     delivered and sent. {extratlvs} go to the payee's payload.",
                ),
        )
        .rpcmethod(
            RpcMethod::new("renepay", renepay::renepay)
                .usage(params::RENEPAY_USAGE)
                .description("Pay {invstring}, with renepay's parameters and result")
                .long_description(
                    "CLN's (deprecated) renepay interface over this plugin's payment engine: \
                     fee limit {maxfee} (by default 0.5% or 5,000 msat, whichever is \
                     greater), {exclude}d channels and nodes, renepay's result.",
                ),
        )
        .rpcmethod(
            RpcMethod::typed("renepaystatus", "[invstring]", renepay::renepaystatus)
                .description("Status of the payment of {invstring}, or of all")
                .long_description(
                    "The payments this plugin made since it started, in renepay's shape.",
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
        .rpcmethod(
            RpcMethod::new("getroutes", askrene::getroutes)
                .usage("source destination amount_msat layers maxfee_msat final_cltv [maxdelay] [maxparts]")
                .description("Find routes from {source} to {destination} for {amount_msat}, using {layers}")
                .long_description("Plans one or more routes delivering {amount_msat} within {maxfee_msat} and {maxdelay}, over gossip with the named askrene layers applied in order (auto.localchans, auto.sourcefree and auto.no_mpp_support are built in), splitting into at most {maxparts} parts when one path cannot carry it. See docs/PAY.md."),
        )
        .rpcmethod(
            RpcMethod::new("askrene-create-layer", askrene::create_layer)
                .usage("layer [persistent]")
                .description("Create askrene {layer}")
                .long_description("A new empty layer; {persistent} layers are kept in the datastore across restarts, and creating one that exists is then no error."),
        )
        .rpcmethod(
            RpcMethod::new("askrene-remove-layer", askrene::remove_layer)
                .usage("layer")
                .description("Remove askrene {layer}")
                .long_description("Forgets the layer, its stored copy and the reservations made on it."),
        )
        .rpcmethod(
            RpcMethod::new("askrene-listlayers", askrene::listlayers)
                .usage("[layer]")
                .description("List askrene layers, or {layer}")
                .long_description("Everything each layer holds: disabled nodes, created channels, channel updates, constraints and biases."),
        )
        .rpcmethod(
            RpcMethod::new("askrene-create-channel", askrene::create_channel)
                .usage("layer source destination short_channel_id capacity_msat")
                .description("Add a channel to {layer}")
                .long_description("Tells getroutes that {short_channel_id} joins {source} and {destination}; each direction is usable once askrene-update-channel enables it."),
        )
        .rpcmethod(
            RpcMethod::new("askrene-update-channel", askrene::update_channel)
                .usage("layer short_channel_id_dir [enabled] [htlc_minimum_msat] [htlc_maximum_msat] [fee_base_msat] [fee_proportional_millionths] [cltv_expiry_delta]")
                .description("Change a channel direction in {layer}")
                .long_description("Overrides the given fields of {short_channel_id_dir} (gossip's or a created channel's) when {layer} is used."),
        )
        .rpcmethod(
            RpcMethod::new("askrene-remove-channel-update", askrene::remove_channel_update)
                .usage("layer short_channel_id_dir")
                .description("Forget {layer}'s update of a channel direction")
                .long_description("Undoes askrene-update-channel for {short_channel_id_dir}."),
        )
        .rpcmethod(
            RpcMethod::new("askrene-inform-channel", askrene::inform_channel)
                .usage("layer short_channel_id_dir amount_msat inform")
                .description("Tell {layer} what a payment learned about a channel")
                .long_description("{inform}: constrained (it could not carry {amount_msat}), unconstrained (it carried it) or succeeded (a payment of it went through)."),
        )
        .rpcmethod(
            RpcMethod::new("askrene-bias-channel", askrene::bias_channel)
                .usage("layer short_channel_id_dir bias [description] [relative]")
                .description("Prefer or avoid a channel direction in {layer}")
                .long_description("{bias} from -100 (avoid) to 100 (prefer); {relative} adds to the existing bias; 0 removes it."),
        )
        .rpcmethod(
            RpcMethod::new("askrene-bias-node", askrene::bias_node)
                .usage("layer node direction bias [description] [relative]")
                .description("Prefer or avoid a node's channels in {layer}")
                .long_description("{bias} on the channels into ({direction} in) or out of (out) {node}."),
        )
        .rpcmethod(
            RpcMethod::new("askrene-disable-node", askrene::disable_node)
                .usage("layer node")
                .description("Route around {node} when {layer} is used")
                .long_description("The node's outgoing channels are not used."),
        )
        .rpcmethod(
            RpcMethod::new("askrene-age", askrene::age)
                .usage("layer cutoff")
                .description("Forget what {layer} learned before {cutoff}")
                .long_description("Removes constraints, impressions and biases older than the UNIX time {cutoff}."),
        )
        .rpcmethod(
            RpcMethod::new("askrene-reserve", askrene::reserve)
                .usage("path")
                .description("Reserve amounts on channel directions")
                .long_description("getroutes counts the amounts as already in use on each hop of {path}."),
        )
        .rpcmethod(
            RpcMethod::new("askrene-unreserve", askrene::unreserve)
                .usage("path")
                .description("Release amounts reserved with askrene-reserve")
                .long_description("Every hop must match a reservation exactly, or nothing is released."),
        )
        .rpcmethod(
            RpcMethod::new("askrene-listreservations", askrene::listreservations)
                .usage("")
                .description("List reservations")
                .long_description("The amounts reserved on channel directions, their age and who made them."),
        )
        .run(Arc::new(State::default()))
        .await
}
