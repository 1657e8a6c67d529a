//! Outgoing payments the CLN way: `sendpay` parts recorded in the `sendpays` table, sent over
//! the exact route the caller gave through LDK's `send_payment_with_route`, and resolved by
//! LDK's payment events (`sendpay_success` / `sendpay_failure` notifications, `waitsendpay`).
//!
//! Each CLN part (payment hash, groupid, partid) is its own LDK payment, whose [`PaymentId`] is
//! derived from that triple ([`payment_id`]), so an event finds its row again. A part of a
//! multi-part payment is sent with the whole payment's amount in the onion
//! (`RecipientOnionFields::total_mpp_amount_msat`), which LDK 0.3 supports for payments split
//! across senders: CLN's one-part-per-`sendpay` MPP works unchanged (docs/adr/0007).
//!
//! LDK's public events do not carry the BOLT 4 failure code, so the routing failure object of
//! a failed part is derived from what they do carry ([`derive_failure`]).

use fulgur_base::hex;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bitcoin::hashes::{Hash, sha256};
use bitcoin::secp256k1::PublicKey;
use fulgur_store::sql::{Connection, OptionalExtension, params};
use lightning::events::{Event, PathFailure, PaymentFailureReason, ReplayEvent};
use lightning::ln::channelmanager::PaymentId;
use lightning::ln::outbound_payment::{RecipientOnionFields, RetryableSendFailure};
use lightning::routing::gossip::{NetworkUpdate, NodeId};
use lightning::routing::router::{Path, PaymentParameters, Route, RouteHop, RouteParameters};
use lightning::types::features::{ChannelFeatures, NodeFeatures};
use lightning::types::payment::{PaymentHash, PaymentSecret};
use serde::{Deserialize, Serialize};

use super::port::{Notice, Port};
use super::{Lightning, lock};
use crate::log::SourceLog;
use crate::store::{Store, StoreError};
use fulgur_base::clock::Clock;

/// What `sendpay` answers while a part is in flight (CLN's wording).
pub const IN_PROGRESS_MESSAGE: &str = "Monitor status with listpays or waitsendpay";

/// The code a failed part's row keeps when the destination refused the payment for good
/// (the `error` column has kept CLN's numbers since the first release; the RPC passes them on).
pub const DESTINATION_REFUSED: i64 = 203;
/// The code a failed part's row keeps when another route may succeed.
pub const TRY_OTHER_ROUTE: i64 = 204;

/// LDK refuses paths longer than this.
pub const MAX_HOPS: usize = 20;

// BOLT 4 failure codes we can name (CLN's `failcodename` is `onion_wire_name`).
const UPDATE: u16 = 0x1000;
const PERM: u16 = 0x4000;
const NODE: u16 = 0x2000;
/// `temporary_channel_failure`.
pub const TEMPORARY_CHANNEL_FAILURE: u16 = UPDATE | 7;
/// `permanent_channel_failure`.
pub const PERMANENT_CHANNEL_FAILURE: u16 = PERM | 8;
/// `temporary_node_failure`.
pub const TEMPORARY_NODE_FAILURE: u16 = NODE | 2;
/// `permanent_node_failure`.
pub const PERMANENT_NODE_FAILURE: u16 = PERM | NODE | 2;
/// `unknown_next_peer`.
pub const UNKNOWN_NEXT_PEER: u16 = PERM | 10;
/// `incorrect_or_unknown_payment_details`.
pub const INCORRECT_OR_UNKNOWN_PAYMENT_DETAILS: u16 = PERM | 15;
/// `final_incorrect_cltv_expiry`.
pub const FINAL_INCORRECT_CLTV_EXPIRY: u16 = 18;
/// `mpp_timeout`.
pub const MPP_TIMEOUT: u16 = 23;

/// CLN's name for a failure code we produce.
pub fn failcode_name(code: u16) -> Option<&'static str> {
    Some(match code {
        TEMPORARY_CHANNEL_FAILURE => "WIRE_TEMPORARY_CHANNEL_FAILURE",
        PERMANENT_CHANNEL_FAILURE => "WIRE_PERMANENT_CHANNEL_FAILURE",
        TEMPORARY_NODE_FAILURE => "WIRE_TEMPORARY_NODE_FAILURE",
        PERMANENT_NODE_FAILURE => "WIRE_PERMANENT_NODE_FAILURE",
        UNKNOWN_NEXT_PEER => "WIRE_UNKNOWN_NEXT_PEER",
        INCORRECT_OR_UNKNOWN_PAYMENT_DETAILS => "WIRE_INCORRECT_OR_UNKNOWN_PAYMENT_DETAILS",
        FINAL_INCORRECT_CLTV_EXPIRY => "WIRE_FINAL_INCORRECT_CLTV_EXPIRY",
        MPP_TIMEOUT => "WIRE_MPP_TIMEOUT",
        _ => return None,
    })
}

/// The status of one part.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PayStatus {
    /// In flight.
    Pending,
    /// Preimage received.
    Complete,
    /// Failed (the row's `error` says why).
    Failed,
}

impl PayStatus {
    /// CLN's word.
    pub fn as_str(self) -> &'static str {
        match self {
            PayStatus::Pending => "pending",
            PayStatus::Complete => "complete",
            PayStatus::Failed => "failed",
        }
    }

    /// From CLN's word.
    pub fn parse(s: &str) -> Option<PayStatus> {
        match s {
            "pending" => Some(PayStatus::Pending),
            "complete" => Some(PayStatus::Complete),
            "failed" => Some(PayStatus::Failed),
            _ => None,
        }
    }
}

/// One row of `sendpays`: one part of one attempt (groupid) to pay a payment hash.
#[derive(Debug, Clone, PartialEq)]
pub struct Sendpay {
    /// Creation order (CLN's `created_index`, also `id`).
    pub created_index: u64,
    /// Order of the last change, if it changed since creation.
    pub updated_index: Option<u64>,
    /// The payment hash.
    pub payment_hash: [u8; 32],
    /// The attempt.
    pub groupid: u64,
    /// The part (0: a single-part payment).
    pub partid: u64,
    /// The last hop of the route.
    pub destination: Option<PublicKey>,
    /// What this part delivers to the destination.
    pub amount_msat: Option<u64>,
    /// What this part sends into the first channel (fees included).
    pub amount_sent_msat: u64,
    /// UNIX time of the `sendpay`.
    pub created_at: u64,
    /// UNIX time it completed or failed.
    pub completed_at: Option<u64>,
    /// Status.
    pub status: PayStatus,
    /// The preimage, once complete.
    pub preimage: Option<[u8; 32]>,
    /// The caller's label.
    pub label: Option<String>,
    /// The invoice, if the caller gave it.
    pub bolt11: Option<String>,
    /// The invoice's description, if the caller gave it.
    pub description: Option<String>,
    /// Why it failed.
    pub error: Option<PartFailure>,
}

/// Why a part failed, as its row keeps it (the `error` column holds this as JSON, the
/// format of every release so far).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PartFailure {
    /// CLN's code for the failure (203: the destination refused, 204: try another route).
    #[serde(default = "unknown_code")]
    pub code: i64,
    /// CLN's message.
    #[serde(default = "payment_failed")]
    pub message: String,
    /// The routing failure.
    #[serde(default)]
    pub fail: FailFields,
}

fn unknown_code() -> i64 {
    -1
}

fn payment_failed() -> String {
    "Payment failed".into()
}

/// CLN's routing failure fields (`json_add_routefail_info`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailFields {
    /// 0 = us, 1 = the first hop's node, ...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub erring_index: Option<u32>,
    /// The BOLT 4 failure code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failcode: Option<u16>,
    /// Its name, when we know it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failcodename: Option<String>,
    /// The node that failed it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub erring_node: Option<String>,
    /// The channel at fault.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub erring_channel: Option<String>,
    /// The direction it was used in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub erring_direction: Option<u8>,
}

/// Why `sendpay`, `waitsendpay` or `listsendpays` did not give the record asked for.
#[derive(Debug, Clone, PartialEq)]
pub enum SendpayError {
    /// The parameters break CLN's rules.
    Params(String),
    /// The payment hash was already used in a way this part contradicts.
    AlreadyUsed(String),
    /// Other parts of the payment are in flight.
    InProgress(String),
    /// No such part was ever sent.
    NoSuchPayment(String),
    /// The part failed (its row says why).
    Failed(Box<Sendpay>),
    /// No channel to the first hop's node can send now.
    NoFirstPeer(FailFields),
    /// `waitsendpay`'s timeout passed.
    TimedOut,
    /// The engine or its database failed.
    Internal(String),
}

impl std::fmt::Display for SendpayError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SendpayError::Params(m)
            | SendpayError::AlreadyUsed(m)
            | SendpayError::InProgress(m)
            | SendpayError::NoSuchPayment(m)
            | SendpayError::Internal(m) => f.write_str(m),
            SendpayError::Failed(row) => match &row.error {
                Some(e) => f.write_str(&e.message),
                None => f.write_str("Payment failure reason unknown"),
            },
            SendpayError::NoFirstPeer(_) => f.write_str("No connection to first peer found"),
            SendpayError::TimedOut => f.write_str("Timed out while waiting"),
        }
    }
}

/// A routing failure object (CLN's `struct routing_failure`) plus the RPC code it maps to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteFailure {
    /// 203 (the destination refused) or 204 (try another route).
    pub code: i64,
    /// CLN's detail in parentheses (`reply from remote`, the local reason...).
    pub detail: String,
    /// 0 = us, 1 = the first hop's node, ...
    pub erring_index: u32,
    /// The BOLT 4 failure code (derived, see [`derive_failure`]).
    pub failcode: u16,
    /// The node that failed it.
    pub erring_node: Option<PublicKey>,
    /// The channel at fault, with the direction it was used in.
    pub erring_channel: Option<(u64, u8)>,
}

impl RouteFailure {
    /// CLN's message: `failed: WIRE_NAME (detail)`.
    pub fn message(&self) -> String {
        let name = failcode_name(self.failcode).unwrap_or("WIRE_UNKNOWN");
        format!("failed: {name} ({})", self.detail)
    }

    /// The routing failure fields (`json_add_routefail_info`).
    pub fn fields(&self) -> FailFields {
        FailFields {
            erring_index: Some(self.erring_index),
            failcode: Some(self.failcode),
            failcodename: failcode_name(self.failcode).map(String::from),
            erring_node: self.erring_node.map(|n| n.to_string()),
            erring_channel: self
                .erring_channel
                .map(|(scid, _)| super::scid_string(scid)),
            erring_direction: self.erring_channel.map(|(_, dir)| dir),
        }
    }

    /// What the part's row keeps.
    pub fn to_stored(&self) -> PartFailure {
        PartFailure {
            code: self.code,
            message: self.message(),
            fail: self.fields(),
        }
    }
}

/// BOLT 7 direction of a channel used from `from` to `to`: 0 if `from` is the lesser id.
pub fn direction(from: &PublicKey, to: &PublicKey) -> u8 {
    u8::from(from.serialize() >= to.serialize())
}

/// The LDK payment id of part (`payment_hash`, `groupid`, `partid`): a tagged hash, so ids
/// never collide with other subsystems' and never repeat (CLN refuses reusing the triple).
pub fn payment_id(payment_hash: &[u8; 32], groupid: u64, partid: u64) -> PaymentId {
    let mut data = Vec::with_capacity(14 + 32 + 16);
    data.extend_from_slice(b"fulgur/sendpay");
    data.extend_from_slice(payment_hash);
    data.extend_from_slice(&groupid.to_be_bytes());
    data.extend_from_slice(&partid.to_be_bytes());
    PaymentId(sha256::Hash::hash(&data).to_byte_array())
}

/// The LDK payment id of part (`payment_hash`, `groupid`, `partid`) when LDK routes it and
/// retries its paths itself (`keysend`): a path failure is then no failure of the part, only
/// LDK's final `PaymentFailed` is.
pub fn routed_payment_id(payment_hash: &[u8; 32], groupid: u64, partid: u64) -> PaymentId {
    let mut data = Vec::with_capacity(13 + 32 + 16);
    data.extend_from_slice(b"fulgur/routed");
    data.extend_from_slice(payment_hash);
    data.extend_from_slice(&groupid.to_be_bytes());
    data.extend_from_slice(&partid.to_be_bytes());
    PaymentId(sha256::Hash::hash(&data).to_byte_array())
}

/// One hop of a CLN route: the node at the end of the hop, the channel leading to it, what it
/// receives and the CLTV delay (relative to the current block) of the HTLC it receives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClnHop {
    /// The node at the end of this hop.
    pub id: PublicKey,
    /// The channel into it.
    pub channel: u64,
    /// What it receives (its own fee for the next hop included).
    pub amount_msat: u64,
    /// CLTV blocks from now of the HTLC it receives.
    pub delay: u32,
}

/// What LDK needs to know about a hop beyond the route itself.
#[derive(Debug, Clone)]
pub struct HopInfo {
    /// The node's announced features (empty when unknown).
    pub node_features: NodeFeatures,
    /// The channel's announced features (empty when unknown).
    pub channel_features: ChannelFeatures,
    /// Whether the channel may be announced.
    pub maybe_announced: bool,
}

impl Default for HopInfo {
    fn default() -> Self {
        HopInfo {
            node_features: NodeFeatures::empty(),
            channel_features: ChannelFeatures::empty(),
            maybe_announced: false,
        }
    }
}

/// A CLN route as an LDK path. LDK's convention differs from CLN's: a hop's `fee_msat` is its
/// node's fee for the *next* channel (the last hop's is the amount delivered) and its
/// `cltv_expiry_delta` likewise (the last hop's is the final CLTV), so
/// `fee_msat[i] = amount[i] - amount[i+1]` and `cltv[i] = delay[i] - delay[i+1]`. LDK then puts
/// `amount[0]` and `height + 1 + delay[0]` in the first HTLC, exactly as CLN does.
pub fn cln_route_to_path(hops: &[ClnHop], info: &[HopInfo]) -> Result<Path, String> {
    if hops.is_empty() {
        return Err("route is empty".into());
    }
    if hops.len() > MAX_HOPS {
        return Err(format!(
            "route has {} hops, more than the {MAX_HOPS} an onion can carry",
            hops.len()
        ));
    }
    let mut out = Vec::with_capacity(hops.len());
    for (i, h) in hops.iter().enumerate() {
        let (fee_msat, cltv_expiry_delta) = match hops.get(i + 1) {
            Some(next) => {
                let fee = h.amount_msat.checked_sub(next.amount_msat).ok_or_else(|| {
                    format!(
                        "route: hop {i} receives {}msat, less than hop {} ({}msat)",
                        h.amount_msat,
                        i + 1,
                        next.amount_msat
                    )
                })?;
                let cltv = h.delay.checked_sub(next.delay).ok_or_else(|| {
                    format!(
                        "route: hop {i} has delay {}, less than hop {} ({})",
                        h.delay,
                        i + 1,
                        next.delay
                    )
                })?;
                (fee, cltv)
            }
            None => (h.amount_msat, h.delay),
        };
        let extra = info.get(i).cloned().unwrap_or_default();
        out.push(RouteHop {
            pubkey: h.id,
            node_features: extra.node_features,
            short_channel_id: h.channel,
            channel_features: extra.channel_features,
            fee_msat,
            cltv_expiry_delta,
            maybe_announced_channel: extra.maybe_announced,
        });
    }
    if hops.last().is_some_and(|h| h.amount_msat == 0) {
        return Err("route: the last hop delivers 0msat".into());
    }
    Ok(Path {
        hops: out,
        blinded_tail: None,
    })
}

/// An LDK path as a CLN route (`getroute`'s hops, without `direction`/`style`): the inverse of
/// [`cln_route_to_path`].
pub fn path_to_cln_route(path: &Path) -> Vec<ClnHop> {
    let n = path.hops.len();
    let mut out = vec![];
    let (mut amount, mut delay) = (0u64, 0u32);
    for i in (0..n).rev() {
        let h = &path.hops[i];
        amount = amount.saturating_add(h.fee_msat);
        delay = delay.saturating_add(h.cltv_expiry_delta);
        out.push(ClnHop {
            id: h.pubkey,
            channel: h.short_channel_id,
            amount_msat: amount,
            delay,
        });
    }
    out.reverse();
    out
}

/// The most hops an onion holds when the final payload carries a payment secret and
/// `metadata_len` bytes of metadata. It over-estimates payload sizes compared to LDK's own
/// estimate (`set_max_path_length`), so a route within it is never cut short by LDK.
pub fn max_onion_hops(metadata_len: usize) -> usize {
    // Intermediate payload: length, amount (tu64), cltv (tu32), scid, then the HMAC.
    const HOP: usize = 1 + (2 + 7) + (2 + 4) + (2 + 8) + 32;
    let metadata = if metadata_len > 0 {
        1 + 3 + metadata_len
    } else {
        0
    };
    // Final payload: length, amount, cltv, payment_data (secret + total), metadata, HMAC.
    let last = 3 + (2 + 4) + (2 + 4) + (2 + 32 + 4) + metadata + 32;
    1300usize.checked_sub(last).map_or(0, |rest| rest / HOP + 1)
}

/// Derives CLN's routing failure object from what LDK's `PaymentPathFailed` exposes: the path,
/// [`PathFailure`] (with LDK's `NetworkUpdate`), the blamed `short_channel_id` and
/// `payment_failed_permanently`. LDK does not expose the BOLT 4 code itself, so `failcode` is
/// the code consistent with what LDK concluded:
/// - the destination rejected the payment → 203, `incorrect_or_unknown_payment_details`;
/// - a node failure → `permanent_node_failure` / `temporary_node_failure` at that node;
/// - a channel failure → `permanent_channel_failure` / `temporary_channel_failure`, blamed
///   on the node before that channel (CLN reports the channel *after* the erring node);
/// - a failure of our own first hop → index 0, `temporary_channel_failure`;
/// - a non-permanent refusal by the destination without an update → `mpp_timeout`, or
///   `final_incorrect_cltv_expiry` when LDK blamed the last channel.
pub fn derive_failure(
    path: &Path,
    us: PublicKey,
    failure: &PathFailure,
    blamed_scid: Option<u64>,
    permanently: bool,
) -> RouteFailure {
    let hops = &path.hops;
    let n = hops.len();
    let node_before = |j: usize| if j == 0 { us } else { hops[j - 1].pubkey };
    let local = |detail: String| RouteFailure {
        code: TRY_OTHER_ROUTE,
        detail,
        erring_index: 0,
        failcode: TEMPORARY_CHANNEL_FAILURE,
        erring_node: Some(us),
        erring_channel: hops
            .first()
            .map(|h| (h.short_channel_id, direction(&us, &h.pubkey))),
    };
    if n == 0 {
        return local("empty path".into());
    }
    let at_destination = |code: i64, failcode: u16| RouteFailure {
        code,
        detail: "reply from remote".into(),
        erring_index: n as u32,
        failcode,
        erring_node: Some(hops[n - 1].pubkey),
        erring_channel: Some((
            hops[n - 1].short_channel_id,
            direction(&node_before(n - 1), &hops[n - 1].pubkey),
        )),
    };
    let network_update = match failure {
        PathFailure::InitialSend { err } => return local(super::api_error(err)),
        PathFailure::OnPath { network_update } => network_update,
    };
    if permanently {
        return at_destination(DESTINATION_REFUSED, INCORRECT_OR_UNKNOWN_PAYMENT_DETAILS);
    }
    match network_update {
        Some(NetworkUpdate::NodeFailure {
            node_id,
            is_permanent,
        }) => {
            let Some(k) = hops.iter().position(|h| h.pubkey == *node_id) else {
                return local("failure from a node not on the route".into());
            };
            // CLN blames the channel after the erring node, or the last one at the destination.
            let c = if k + 1 < n { k + 1 } else { k };
            RouteFailure {
                code: TRY_OTHER_ROUTE,
                detail: "reply from remote".into(),
                erring_index: k as u32 + 1,
                failcode: if *is_permanent {
                    PERMANENT_NODE_FAILURE
                } else {
                    TEMPORARY_NODE_FAILURE
                },
                erring_node: Some(*node_id),
                erring_channel: Some((
                    hops[c].short_channel_id,
                    direction(&node_before(c), &hops[c].pubkey),
                )),
            }
        }
        Some(NetworkUpdate::ChannelFailure {
            short_channel_id,
            is_permanent,
        }) => {
            let Some(j) = hops
                .iter()
                .position(|h| h.short_channel_id == *short_channel_id)
            else {
                return local("failure of a channel not on the route".into());
            };
            // The node before the channel failed to forward over it; a failure naming our
            // own first channel can only come from the first hop's node (a 1-hop route).
            let (index, node) = if j == 0 {
                (1, hops[0].pubkey)
            } else {
                (j as u32, hops[j - 1].pubkey)
            };
            RouteFailure {
                code: TRY_OTHER_ROUTE,
                detail: "reply from remote".into(),
                erring_index: index,
                failcode: if *is_permanent {
                    PERMANENT_CHANNEL_FAILURE
                } else {
                    TEMPORARY_CHANNEL_FAILURE
                },
                erring_node: Some(node),
                erring_channel: Some((
                    *short_channel_id,
                    direction(&node_before(j), &hops[j].pubkey),
                )),
            }
        }
        None => match blamed_scid {
            Some(s) if n >= 2 && s == hops[n - 1].short_channel_id => {
                at_destination(TRY_OTHER_ROUTE, FINAL_INCORRECT_CLTV_EXPIRY)
            }
            Some(_) => local("local failure".into()),
            None => at_destination(TRY_OTHER_ROUTE, MPP_TIMEOUT),
        },
    }
}

/// The failure of a part whose LDK payment failed without a path failure for it (abandoned,
/// or LDK gave up before sending).
fn payment_failed_failure(reason: Option<PaymentFailureReason>) -> RouteFailure {
    let detail = match reason {
        Some(r) => format!("payment failed: {r:?}"),
        None => "payment failed".into(),
    };
    // The destination refused it for good (LDK's own retries, `keysend`, end with this).
    let (code, failcode) = if reason == Some(PaymentFailureReason::RecipientRejected) {
        (DESTINATION_REFUSED, INCORRECT_OR_UNKNOWN_PAYMENT_DETAILS)
    } else {
        (TRY_OTHER_ROUTE, TEMPORARY_CHANNEL_FAILURE)
    };
    RouteFailure {
        code,
        detail,
        erring_index: 0,
        failcode,
        erring_node: None,
        erring_channel: None,
    }
}

/// A part about to be recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewPart {
    /// The payment hash.
    pub payment_hash: [u8; 32],
    /// The attempt.
    pub groupid: u64,
    /// The part.
    pub partid: u64,
    /// The last hop.
    pub destination: PublicKey,
    /// What it delivers.
    pub amount_msat: u64,
    /// What it sends into the first channel.
    pub amount_sent_msat: u64,
    /// The whole payment's amount (the onion's `total_msat`).
    pub total_msat: u64,
}

/// What to do with a new part, given the rows of its payment hash.
#[derive(Debug, Clone, PartialEq)]
pub enum Progress {
    /// Record and send it.
    Send,
    /// Do not send: answer with this existing row (already complete, or the same part in
    /// flight).
    Existing(Box<Sendpay>),
}

fn msat(v: u64) -> String {
    format!("{v}msat")
}

/// A repeated `sendpay` of a part we already have must be the same payment: same amount,
/// same destination (CLN's checks, code 201 otherwise). `state` is "succeeded" or "pending".
fn same_part(
    row: &Sendpay,
    row_amount: u64,
    part: &NewPart,
    state: &str,
) -> Result<(), SendpayError> {
    if row_amount != part.amount_msat {
        return Err(SendpayError::AlreadyUsed(format!(
            "Already {state} with amount {} (not {})",
            msat(row_amount),
            msat(part.amount_msat)
        )));
    }
    if let Some(d) = row.destination.filter(|d| *d != part.destination) {
        return Err(SendpayError::AlreadyUsed(format!("Already {state} to {d}")));
    }
    Ok(())
}

/// CLN's `check_progress`: reconciles a new part with the earlier parts of the same payment
/// hash. `group_total` is the `total_msat` the pending parts of the part's group were sent
/// with, when known.
pub fn check_progress(
    rows: &[Sendpay],
    part: &NewPart,
    group_total: Option<u64>,
) -> Result<Progress, SendpayError> {
    let mut have_complete = false;
    let mut pending = 0u64;
    for row in rows {
        let row_amount = row.amount_msat.unwrap_or(0);
        match row.status {
            PayStatus::Complete => {
                have_complete = true;
                if row.partid != part.partid {
                    continue;
                }
                same_part(row, row_amount, part, "succeeded")?;
                return Ok(Progress::Existing(Box::new(row.clone())));
            }
            PayStatus::Pending => {
                if row.groupid != part.groupid {
                    return Err(SendpayError::InProgress(format!(
                        "Payment with groupid={} still in progress, cannot retry before that completes.",
                        row.groupid
                    )));
                }
                if (row.partid == 0) != (part.partid == 0) {
                    return Err(SendpayError::InProgress(format!(
                        "Already have {} payment in progress",
                        if row.partid != 0 {
                            "parallel"
                        } else {
                            "non-parallel"
                        }
                    )));
                }
                if row.partid == part.partid {
                    same_part(row, row_amount, part, "pending")?;
                    return Ok(Progress::Existing(Box::new(row.clone())));
                }
                if let Some(t) = group_total.filter(|t| *t != part.total_msat) {
                    return Err(SendpayError::Params(format!(
                        "msatoshi was previously {}, now {}",
                        msat(t),
                        msat(part.total_msat)
                    )));
                }
                pending = pending.saturating_add(row_amount);
            }
            PayStatus::Failed => {}
        }
        if row.partid == part.partid && row.groupid == part.groupid {
            return Err(SendpayError::AlreadyUsed(format!(
                "There already is a payment with payment_hash={}, groupid={}, partid={}. Either change the partid, or wait for the payment to complete and start a new group.",
                hex(&part.payment_hash),
                part.groupid,
                part.partid
            )));
        }
    }
    if have_complete {
        return Err(SendpayError::AlreadyUsed(
            "Already succeeded other parts".into(),
        ));
    }
    if part.total_msat != 0 && pending >= part.total_msat {
        return Err(SendpayError::InProgress(format!(
            "Already have {} of {} payments in progress",
            msat(pending),
            msat(part.total_msat)
        )));
    }
    Ok(Progress::Send)
}

/// Filters of `listsendpays`.
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    /// Only this payment hash (all its parts, in creation order).
    pub payment_hash: Option<[u8; 32]>,
    /// Only this status.
    pub status: Option<PayStatus>,
    /// Order by `updated_index` instead of `created_index`.
    pub by_updated: bool,
    /// Smallest index to return.
    pub start: u64,
    /// At most this many.
    pub limit: Option<u32>,
}

const COLUMNS: &str = "created_index, updated_index, payment_hash, groupid, partid, destination, \
    amount_msat, amount_sent_msat, created_at, completed_at, status, preimage, label, bolt11, \
    description, error";

fn blob32(v: Option<Vec<u8>>) -> Option<[u8; 32]> {
    v.and_then(|b| <[u8; 32]>::try_from(b.as_slice()).ok())
}

fn read_row(r: &fulgur_store::sql::Row<'_>) -> fulgur_store::sql::Result<Sendpay> {
    let status: String = r.get(10)?;
    let error: Option<String> = r.get(15)?;
    Ok(Sendpay {
        created_index: r.get::<_, i64>(0)? as u64,
        updated_index: r.get::<_, Option<i64>>(1)?.map(|v| v as u64),
        payment_hash: blob32(r.get(2)?).unwrap_or([0; 32]),
        groupid: r.get::<_, i64>(3)? as u64,
        partid: r.get::<_, i64>(4)? as u64,
        destination: r
            .get::<_, Option<Vec<u8>>>(5)?
            .and_then(|b| PublicKey::from_slice(&b).ok()),
        amount_msat: r.get::<_, Option<i64>>(6)?.map(|v| v as u64),
        amount_sent_msat: r.get::<_, i64>(7)? as u64,
        created_at: r.get::<_, i64>(8)? as u64,
        completed_at: r.get::<_, Option<i64>>(9)?.map(|v| v as u64),
        status: PayStatus::parse(&status).unwrap_or(PayStatus::Failed),
        preimage: blob32(r.get(11)?),
        label: r.get(12)?,
        bolt11: r.get(13)?,
        description: r.get(14)?,
        error: error.and_then(|e| serde_json::from_str(&e).ok()),
    })
}

/// Every part of `payment_hash`, in creation order.
pub fn rows_by_hash(
    conn: &Connection,
    payment_hash: &[u8; 32],
) -> Result<Vec<Sendpay>, StoreError> {
    let mut st = conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM sendpays WHERE payment_hash = ? ORDER BY created_index"
    ))?;
    let rows = st
        .query_map([payment_hash.as_slice()], read_row)?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

/// One part.
pub fn row(
    conn: &Connection,
    payment_hash: &[u8; 32],
    groupid: u64,
    partid: u64,
) -> Result<Option<Sendpay>, StoreError> {
    Ok(conn
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM sendpays WHERE payment_hash = ? AND groupid = ? AND partid = ?"
        ))?
        .query_row(
            params![payment_hash.as_slice(), groupid as i64, partid as i64],
            read_row,
        )
        .optional()?)
}

/// The latest groupid used for `payment_hash`.
pub fn max_groupid(conn: &Connection, payment_hash: &[u8; 32]) -> Result<Option<u64>, StoreError> {
    let g: Option<i64> = conn
        .prepare_cached("SELECT MAX(groupid) FROM sendpays WHERE payment_hash = ?")?
        .query_row([payment_hash.as_slice()], |r| r.get(0))?;
    Ok(g.map(|g| g as u64))
}

/// Records a new pending part and returns its row.
/// Runs `f`, a write of the payment path (`sendpay`'s new parts, their completion or
/// failure, an invoice marked paid), committed with `synchronous=NORMAL`, without an fsync
/// of its own. That is safe because SQLite's WAL is a log, so a power cut loses a suffix of
/// it, never a write without the writes after it.
/// - A new part is written before LDK is asked to send it, and no HTLC leaves the node
///   before LDK's monitor update for it, which is synced: that fsync makes the row durable
///   first. If both are lost, LDK never sent the HTLC.
/// - A completion, failure or payment received is written while LDK's event is handled;
///   the event leaves LDK's queue only in a channel-manager write that comes after it in
///   the log. If the row is lost, so is that write, and LDK hands the event again.
///
/// At 16 payments in flight these rows were three fsyncs per payment on the one database
/// connection, which channel monitor updates then queued behind.
pub fn payment_path_write<T>(
    c: &mut Connection,
    f: impl FnOnce(&mut Connection) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    crate::store::relaxed(c, f)
}

/// Records `part` as pending at `created_at` (UNIX seconds) with the caller's label, invoice and
/// description; returns its row. Fails if the part's (hash, groupid, partid) exists.
pub fn insert_pending(
    conn: &Connection,
    part: &NewPart,
    created_at: u64,
    label: Option<&str>,
    bolt11: Option<&str>,
    description: Option<&str>,
) -> Result<Sendpay, StoreError> {
    conn.prepare_cached(
        "INSERT INTO sendpays (payment_hash, groupid, partid, destination, amount_msat, \
         amount_sent_msat, created_at, status, label, bolt11, description) \
         VALUES (?, ?, ?, ?, ?, ?, ?, 'pending', ?, ?, ?)",
    )?
    .execute(params![
        part.payment_hash.as_slice(),
        part.groupid as i64,
        part.partid as i64,
        part.destination.serialize().as_slice(),
        part.amount_msat as i64,
        part.amount_sent_msat as i64,
        created_at as i64,
        label,
        bolt11,
        description,
    ])?;
    row(conn, &part.payment_hash, part.groupid, part.partid)?
        .ok_or_else(|| StoreError::Task("sendpay row vanished after insert".into()))
}

/// The next `updated_index` of the sendpays subsystem.
fn next_updated_index(conn: &Connection) -> Result<u64, StoreError> {
    conn.prepare_cached("INSERT INTO index_counters (subsystem, updated, deleted) VALUES ('sendpays', 0, 0) ON CONFLICT DO NOTHING")?.execute(
        [],
    )?;
    conn.prepare_cached(
        "UPDATE index_counters SET updated = updated + 1 WHERE subsystem = 'sendpays'",
    )?
    .execute([])?;
    let v: i64 = conn
        .prepare_cached("SELECT updated FROM index_counters WHERE subsystem = 'sendpays'")?
        .query_row([], |r| r.get(0))?;
    Ok(v as u64)
}

/// Marks a part complete (from pending, or from failed: the preimage proves payment). A part
/// LDK routed learns its fee (`fee_msat`) only now: what it sent becomes its amount plus the
/// fee. Returns the new row, or `None` if there is no such part or it was already complete.
pub fn mark_complete(
    conn: &mut Connection,
    payment_hash: &[u8; 32],
    groupid: u64,
    partid: u64,
    preimage: &[u8; 32],
    fee_msat: Option<u64>,
    now: u64,
) -> Result<Option<Sendpay>, StoreError> {
    let part = (payment_hash, groupid, partid);
    resolve(
        conn,
        part,
        |s| s != PayStatus::Complete,
        |tx, idx| {
            tx.prepare_cached(
                "UPDATE sendpays SET status = 'complete', preimage = ?, \
             amount_sent_msat = COALESCE(amount_msat + ?, amount_sent_msat), completed_at = ?, \
             updated_index = ?, error = NULL WHERE payment_hash = ? AND groupid = ? AND partid = ?",
            )?
            .execute(params![
                preimage.as_slice(),
                fee_msat.map(|f| f as i64),
                now as i64,
                idx as i64,
                payment_hash.as_slice(),
                groupid as i64,
                partid as i64
            ])
        },
    )
}

/// Marks a pending part failed with `error` (see [`RouteFailure::to_stored`]). Returns the new
/// row, or `None` if there is no such part or it is not pending.
pub fn mark_failed(
    conn: &mut Connection,
    payment_hash: &[u8; 32],
    groupid: u64,
    partid: u64,
    error: &PartFailure,
    now: u64,
) -> Result<Option<Sendpay>, StoreError> {
    let error = serde_json::to_string(error).unwrap_or_default();
    let part = (payment_hash, groupid, partid);
    resolve(
        conn,
        part,
        |s| s == PayStatus::Pending,
        |tx, idx| {
            tx.prepare_cached(
                "UPDATE sendpays SET status = 'failed', error = ?, completed_at = ?, \
             updated_index = ? WHERE payment_hash = ? AND groupid = ? AND partid = ?",
            )?
            .execute(params![
                error,
                now as i64,
                idx as i64,
                payment_hash.as_slice(),
                groupid as i64,
                partid as i64
            ])
        },
    )
}

/// In one transaction: if part (hash, groupid, partid) exists and its status passes `from`,
/// numbers the change and applies `update`; returns the new row (`None`: nothing changed).
fn resolve(
    conn: &mut Connection,
    (payment_hash, groupid, partid): (&[u8; 32], u64, u64),
    from: impl FnOnce(PayStatus) -> bool,
    update: impl FnOnce(&fulgur_store::sql::Transaction<'_>, u64) -> fulgur_store::sql::Result<usize>,
) -> Result<Option<Sendpay>, StoreError> {
    let tx = conn.transaction()?;
    match row(&tx, payment_hash, groupid, partid)? {
        Some(r) if from(r.status) => {}
        _ => return Ok(None),
    }
    let idx = next_updated_index(&tx)?;
    update(&tx, idx)?;
    let r = row(&tx, payment_hash, groupid, partid)?;
    tx.commit()?;
    Ok(r)
}

/// `listsendpays`' query.
pub fn list(conn: &Connection, f: &ListFilter) -> Result<Vec<Sendpay>, StoreError> {
    let mut sql = format!("SELECT {COLUMNS} FROM sendpays WHERE TRUE");
    let mut args: Vec<fulgur_store::sql::Value> = vec![];
    if let Some(h) = &f.payment_hash {
        sql.push_str(" AND payment_hash = ?");
        args.push(h.to_vec().into());
    }
    if let Some(s) = f.status {
        sql.push_str(" AND status = ?");
        args.push(s.as_str().to_string().into());
    }
    let col = if f.by_updated {
        "updated_index"
    } else {
        "created_index"
    };
    if f.payment_hash.is_none() {
        sql.push_str(&format!(" AND {col} >= ?"));
        args.push((f.start.min(i64::MAX as u64) as i64).into());
    }
    sql.push_str(&format!(" ORDER BY {col}"));
    if let Some(l) = f.limit {
        sql.push_str(" LIMIT ?");
        args.push(i64::from(l).into());
    }
    let mut st = conn.prepare(&sql)?;
    let rows = st
        .query_map(fulgur_store::sql::params_from_iter(args), read_row)?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

/// The (groupid, partid) of the part sent as LDK payment `id`.
/// The part LDK knows as `id`: (groupid, partid, whether LDK routes and retries it).
fn part_of(
    conn: &Connection,
    payment_hash: &[u8; 32],
    id: PaymentId,
) -> Result<Option<(u64, u64, bool)>, StoreError> {
    Ok(rows_by_hash(conn, payment_hash)?.into_iter().find_map(|r| {
        if payment_id(payment_hash, r.groupid, r.partid) == id {
            Some((r.groupid, r.partid, false))
        } else if routed_payment_id(payment_hash, r.groupid, r.partid) == id {
            Some((r.groupid, r.partid, true))
        } else {
            None
        }
    }))
}

/// `total_msat` per (payment hash, groupid).
type Totals = HashMap<([u8; 32], u64), u64>;

/// How many sendpay changes a `waitsendpay` can fall behind before it re-reads its row
/// (a waiter that lags loses nothing, it only queries once more).
const CHANGES_BUFFERED: usize = 1024;

/// The outgoing payments service: the `sendpays` table, what payments keep in memory beside
/// it, the `sendpay_success`/`sendpay_failure` notifications and the waiters
/// (`waitsendpay`). Sending needs LDK ([`Lightning::sendpay`]), which records parts here.
///
/// One per engine, so two nodes in one process (tests, benchmarks) never share it. Its one
/// lock (`totals`) is never held while another is taken, nor across an await or a database
/// call.
pub struct Payments {
    store: Store,
    clock: Arc<dyn Clock>,
    port: Arc<dyn Port>,
    log: SourceLog,
    /// The payment hash of every part that changed (`waitsendpay`). Waiters re-read the
    /// table only for their own payment, so that a completion does not make every payment
    /// in flight query the database (a lagging waiter re-reads once).
    changed: tokio::sync::broadcast::Sender<[u8; 32]>,
    /// The `total_msat` pending groups were sent with, per (payment hash, groupid). The table
    /// has no column for it (CLN's `total_msat`); after a restart the check that the parts
    /// of a group agree on the total is skipped.
    totals: Arc<Mutex<Totals>>,
    /// The first `created_index` this run recorded (parts before it come from earlier runs).
    first_own_index: Arc<AtomicU64>,
    /// Set once the parts an earlier run left pending were reconciled with LDK.
    reconciled: tokio::sync::OnceCell<()>,
}

impl Payments {
    /// The service over `store`, reading time from `clock`, telling plugins through `port`.
    pub fn new(store: Store, clock: Arc<dyn Clock>, port: Arc<dyn Port>, log: SourceLog) -> Self {
        Payments {
            store,
            clock,
            port,
            log,
            changed: tokio::sync::broadcast::channel(CHANGES_BUFFERED).0,
            totals: Arc::default(),
            first_own_index: Arc::new(AtomicU64::new(u64::MAX)),
            reconciled: tokio::sync::OnceCell::new(),
        }
    }

    fn forget_total(&self, hash: [u8; 32], groupid: u64) {
        lock(&self.totals).remove(&(hash, groupid));
    }

    /// Wakes the waiters of payment `hash`.
    fn changed(&self, hash: [u8; 32]) {
        // No receiver (no `waitsendpay` running) is not an error.
        let _ = self.changed.send(hash);
    }

    /// Reconciles `parts` (one payment's new parts, numbered in group `groupid`, the next
    /// free one without) with the payment's earlier parts and records those to send as
    /// pending, in one transaction. Returns the group and, per part, its row and whether it
    /// is new (to send); the first part CLN's rules refuse ends the list.
    pub(crate) async fn record_parts(
        &self,
        hash: [u8; 32],
        groupid: Option<u64>,
        parts: Vec<NewPart>,
        total: u64,
        text: (Option<String>, Option<String>, Option<String>),
    ) -> Result<(u64, Vec<Result<(Sendpay, bool), SendpayError>>), SendpayError> {
        let (label, bolt11, description) = text;
        let now = self.clock.unix_now();
        let totals = self.totals.clone();
        let first_own = self.first_own_index.clone();
        let (groupid, outcomes) = self
            .store
            .with(move |conn| {
                payment_path_write(conn, |conn| {
                    let tx = conn.transaction()?;
                    let groupid = match groupid {
                        Some(g) => g,
                        None => max_groupid(&tx, &hash)?.map_or(1, |g| g + 1),
                    };
                    let group_total = lock(&totals).get(&(hash, groupid)).copied();
                    let mut rows = rows_by_hash(&tx, &hash)?;
                    let mut outcomes = vec![];
                    for mut part in parts {
                        part.groupid = groupid;
                        let outcome = match check_progress(&rows, &part, group_total) {
                            Ok(Progress::Send) => {
                                let r = insert_pending(
                                    &tx,
                                    &part,
                                    now,
                                    label.as_deref(),
                                    bolt11.as_deref(),
                                    description.as_deref(),
                                )?;
                                first_own.fetch_min(r.created_index, Ordering::SeqCst);
                                rows.push(r.clone());
                                Ok((r, true))
                            }
                            Ok(Progress::Existing(r)) => Ok((*r, false)),
                            Err(e) => Err(e),
                        };
                        if outcome.is_err() {
                            return Ok((groupid, vec![outcome]));
                        }
                        outcomes.push(outcome);
                    }
                    tx.commit()?;
                    Ok((groupid, outcomes))
                })
            })
            .await
            .map_err(db_error)?;
        if outcomes.iter().all(Result::is_ok) {
            lock(&self.totals).insert((hash, groupid), total);
        }
        Ok((groupid, outcomes))
    }

    /// Marks a part failed, notifies `sendpay_failure` and wakes waiters. `None` if the part
    /// was not pending.
    pub(crate) async fn record_failure(
        &self,
        hash: [u8; 32],
        groupid: u64,
        partid: u64,
        fail: &RouteFailure,
    ) -> Result<Option<Sendpay>, StoreError> {
        let stored = fail.to_stored();
        let now = self.clock.unix_now();
        let r = self
            .store
            .with(move |c| {
                payment_path_write(c, |c| mark_failed(c, &hash, groupid, partid, &stored, now))
            })
            .await?;
        if let Some(row) = &r {
            self.log.info(&format!(
                "Payment {} part {}/{} failed: {}",
                hex(&hash),
                groupid,
                partid,
                fail.message()
            ));
            self.port.tell(Notice::SendpayFailure(row.clone()));
            self.changed(hash);
        }
        Ok(r)
    }

    /// Marks the part LDK knows as `id` complete with `preimage`, notifies `sendpay_success`
    /// and wakes waiters. `None` if it is no part of ours or was no longer pending.
    async fn record_success(
        &self,
        hash: [u8; 32],
        id: PaymentId,
        preimage: [u8; 32],
        fee_msat: Option<u64>,
    ) -> Result<Option<Sendpay>, StoreError> {
        let now = self.clock.unix_now();
        let r = self
            .store
            .with(move |c| {
                payment_path_write(c, |c| match part_of(c, &hash, id)? {
                    Some((g, p, routed)) => {
                        let fee = fee_msat.filter(|_| routed);
                        mark_complete(c, &hash, g, p, &preimage, fee, now)
                    }
                    None => Ok(None),
                })
            })
            .await?;
        if let Some(row) = &r {
            self.forget_total(hash, row.groupid);
            self.port.tell(Notice::SendpaySuccess(row.clone()));
            self.changed(hash);
        }
        Ok(r)
    }

    /// Fails the part LDK knows as `id` (if it is ours and pending). A failed path (`path`)
    /// of a part LDK routes is no failure of the part: LDK tries another. The event that
    /// reported it is replayed when the database fails.
    async fn fail_part(
        &self,
        hash: [u8; 32],
        id: PaymentId,
        fail: &RouteFailure,
        path: bool,
    ) -> Result<(), ReplayEvent> {
        let part = self.store.with(move |c| part_of(c, &hash, id)).await;
        let (g, p) = match part {
            Ok(Some((_, _, true))) if path => return Ok(()),
            Ok(Some((g, p, _))) => (g, p),
            Ok(None) => return Ok(()),
            Err(e) => {
                self.log
                    .broken(&format!("cannot read payment {}: {e}", hex(&hash)));
                return Err(ReplayEvent());
            }
        };
        match self.record_failure(hash, g, p, fail).await {
            Ok(Some(_)) => {
                self.forget_total_if_idle(hash, g).await;
                Ok(())
            }
            Ok(None) => Ok(()),
            Err(e) => {
                self.log
                    .broken(&format!("cannot record payment {}: {e}", hex(&hash)));
                Err(ReplayEvent())
            }
        }
    }

    /// Forgets the `total_msat` of group `groupid` once none of its parts is in flight.
    async fn forget_total_if_idle(&self, hash: [u8; 32], groupid: u64) {
        let busy = self
            .store
            .with(move |c| {
                Ok(rows_by_hash(c, &hash)?
                    .iter()
                    .any(|r| r.groupid == groupid && r.status == PayStatus::Pending))
            })
            .await
            .unwrap_or(true);
        if !busy {
            self.forget_total(hash, groupid);
        }
    }

    /// Waits until part (`payment_hash`, `groupid`, `partid`) completes (its record) or fails
    /// (its error), or `timeout` seconds pass. `groupid` defaults to the latest one.
    pub(crate) async fn wait(
        &self,
        payment_hash: [u8; 32],
        timeout: Option<u64>,
        partid: u64,
        groupid: Option<u64>,
    ) -> Result<Sendpay, SendpayError> {
        let mut changed = self.changed.subscribe();
        let deadline =
            timeout.map(|t| tokio::time::Instant::now() + Duration::from_secs(t.min(1 << 32)));
        loop {
            let r = self
                .store
                .with(move |c| {
                    let g = match groupid {
                        Some(g) => Some(g),
                        None => max_groupid(c, &payment_hash)?,
                    };
                    match g {
                        Some(g) => row(c, &payment_hash, g, partid),
                        None => Ok(None),
                    }
                })
                .await
                .map_err(db_error)?;
            let Some(r) = r else {
                return Err(SendpayError::NoSuchPayment(format!(
                    "Never attempted payment part {partid} for '{}'",
                    hex(&payment_hash)
                )));
            };
            match r.status {
                PayStatus::Complete => return Ok(r),
                PayStatus::Failed => return Err(SendpayError::Failed(Box::new(r))),
                PayStatus::Pending => {}
            }
            let timed_out = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending().await,
                }
            };
            // Wait for a change of this payment (or a lag, after which we cannot tell).
            let ours = async {
                loop {
                    match changed.recv().await {
                        Ok(h) if h == payment_hash => return Ok(()),
                        Ok(_) => {}
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => return Ok(()),
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => return Err(()),
                    }
                }
            };
            tokio::select! {
                r = ours => {
                    if r.is_err() {
                        return Err(SendpayError::Internal("The Lightning engine stopped".into()));
                    }
                }
                _ = timed_out => {
                    return Err(SendpayError::TimedOut);
                }
            }
        }
    }

    /// The parts matching `f`.
    async fn list(&self, f: ListFilter) -> Result<Vec<Sendpay>, SendpayError> {
        self.store
            .with(move |c| list(c, &f))
            .await
            .map_err(db_error)
    }

    /// `delpay`: deletes the parts of `hash` whose status is `status` (complete or failed;
    /// only part `(partid, groupid)` when given) and returns them, with CLN's refusals: no
    /// part of that hash, parts only in another status, or no such part.
    async fn delete(
        &self,
        hash: [u8; 32],
        status: PayStatus,
        part: Option<(u64, u64)>,
    ) -> Result<Vec<Sendpay>, SendpayError> {
        if status == PayStatus::Pending {
            return Err(SendpayError::Params(
                "status: Cannot delete pending status".into(),
            ));
        }
        let r = self
            .store
            .with(move |conn| {
                let tx = conn.transaction()?;
                let rows = rows_by_hash(&tx, &hash)?;
                if rows.is_empty() {
                    return Ok(Err(SendpayError::NoSuchPayment(format!(
                        "Unknown payment with payment_hash: {}",
                        hex(&hash)
                    ))));
                }
                let chosen = |r: &&Sendpay| part.is_none_or(|(p, g)| r.partid == p && r.groupid == g);
                let gone: Vec<Sendpay> = rows
                    .iter()
                    .filter(chosen)
                    .filter(|r| r.status == status)
                    .cloned()
                    .collect();
                if gone.is_empty() {
                    return Ok(Err(match rows.iter().rfind(chosen) {
                        Some(other) => SendpayError::NoSuchPayment(format!(
                            "Payment with hash {} has {} status but it different from the one provided {}",
                            hex(&hash),
                            other.status.as_str(),
                            status.as_str()
                        )),
                        None => SendpayError::NoSuchPayment(
                            "No payment for that payment_hash with that partid and groupid".into(),
                        ),
                    }));
                }
                for r in &gone {
                    tx.prepare_cached("DELETE FROM sendpays WHERE created_index = ?1")?
                        .execute([r.created_index as i64])?;
                }
                tx.prepare_cached(
                    "INSERT INTO index_counters (subsystem, updated, deleted) VALUES ('sendpays', 0, ?1) \
                     ON CONFLICT (subsystem) DO UPDATE SET deleted = index_counters.deleted + ?1",
                )?
                .execute([gone.len() as i64])?;
                tx.commit()?;
                Ok(Ok(gone))
            })
            .await
            .map_err(db_error)??;
        for p in &r {
            self.forget_total(hash, p.groupid);
        }
        Ok(r)
    }

    /// Once per process, before the first `sendpay`, `waitsendpay` or `listsendpays` answers:
    /// fails the parts an earlier run left pending that LDK does not know (`known` lists the
    /// payments LDK knows; `us` is our node). A crash between recording a part and LDK
    /// persisting its HTLC loses the payment (see `ChannelManager::list_recent_payments`);
    /// without this its row would stay pending.
    async fn reconcile_once(
        &self,
        known: impl FnOnce() -> Vec<PaymentId>,
        us: PublicKey,
    ) -> Result<(), SendpayError> {
        self.reconciled
            .get_or_try_init(|| async {
                match self.reconcile(known(), us).await {
                    Ok(0) => Ok(()),
                    Ok(n) => {
                        self.log.unusual(&format!(
                            "{n} pending payment part(s) lost at restart, marked failed"
                        ));
                        Ok(())
                    }
                    Err(e) => Err(db_error(e)),
                }
            })
            .await
            .map(|_| ())
    }

    /// Fails the pending parts recorded before this process's first `sendpay` that LDK does
    /// not know. Returns how many it failed.
    async fn reconcile(&self, known: Vec<PaymentId>, us: PublicKey) -> Result<usize, StoreError> {
        let pending = self
            .store
            .with(|c| {
                list(
                    c,
                    &ListFilter {
                        status: Some(PayStatus::Pending),
                        ..Default::default()
                    },
                )
            })
            .await?;
        let mut n = 0;
        let ours_from = self.first_own_index.load(Ordering::SeqCst);
        for r in pending {
            if r.created_index >= ours_from
                || known.contains(&payment_id(&r.payment_hash, r.groupid, r.partid))
            {
                continue;
            }
            let fail = RouteFailure {
                code: TRY_OTHER_ROUTE,
                detail: "lost at restart: never reached a channel".into(),
                erring_index: 0,
                failcode: TEMPORARY_CHANNEL_FAILURE,
                erring_node: Some(us),
                erring_channel: None,
            };
            if self
                .record_failure(r.payment_hash, r.groupid, r.partid, &fail)
                .await?
                .is_some()
            {
                n += 1;
            }
        }
        Ok(n)
    }
}

fn db_error(e: StoreError) -> SendpayError {
    SendpayError::Internal(format!("database error: {e}"))
}

/// What `sendpay` asks for. Several `routes` is Fulgur's extension: parts 1..N of one
/// multi-part payment in one call (docs/adr/0007-mpp-sendpay.md).
#[derive(Debug, Clone, Default)]
pub struct SendpayRequest {
    /// One route per part.
    pub routes: Vec<Vec<ClnHop>>,
    /// The payment hash.
    pub payment_hash: [u8; 32],
    /// Label kept with the payment.
    pub label: Option<String>,
    /// The whole payment's amount (required with `partid`).
    pub amount_msat: Option<u64>,
    /// The invoice, kept with the payment.
    pub bolt11: Option<String>,
    /// The invoice's payment secret.
    pub payment_secret: Option<[u8; 32]>,
    /// The part (single route only).
    pub partid: Option<u64>,
    /// The attempt (default: one more than the last for this hash).
    pub groupid: Option<u64>,
    /// The invoice's payment metadata, for the final onion payload.
    pub payment_metadata: Option<Vec<u8>>,
    /// The invoice's description, kept with the payment.
    pub description: Option<String>,
}

/// What LDK's `send_payment_with_route` gets for one part: the route with parameters built
/// from itself (LDK checks the route against them, with assertions in debug builds: the
/// caller's fees, CLTV and length are the limits), and the onion fields with the whole
/// payment's amount as its total.
pub fn outgoing(
    path: &Path,
    destination: PublicKey,
    secret: Option<[u8; 32]>,
    metadata: Option<Vec<u8>>,
    total_msat: u64,
) -> (Route, RecipientOnionFields) {
    let mut onion = match secret {
        Some(s) => RecipientOnionFields::secret_only(PaymentSecret(s), total_msat),
        None => RecipientOnionFields::spontaneous_empty(total_msat),
    };
    onion.payment_metadata = metadata;
    let final_cltv = path.hops.last().map_or(0, |h| h.cltv_expiry_delta);
    let mut params = PaymentParameters::from_node_id(destination, final_cltv);
    params.max_total_cltv_expiry_delta = path.total_cltv_expiry_delta();
    params.max_path_count = 1;
    params.max_path_length = u8::try_from(path.hops.len()).unwrap_or(u8::MAX);
    let mut route_params =
        RouteParameters::from_payment_params_and_value(params, path.final_value_msat());
    // The caller chose the fees (LDK's default budget is 1% + 50 sat).
    route_params.max_total_routing_fee_msat = None;
    let route = Route {
        paths: vec![path.clone()],
        route_params: Some(route_params),
    };
    (route, onion)
}

/// What a valid `sendpay` request comes to, by CLN's parameter rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendpayPlan {
    /// The part number of each route, in order (1..N for several routes).
    pub partids: Vec<u64>,
    /// The whole payment's amount (the onion's `total_msat`).
    pub total_msat: u64,
    /// Where every route ends.
    pub destination: PublicKey,
}

/// Checks a `sendpay` request against CLN's rules (routes, `partid`, `amount_msat`,
/// `payment_secret`, what fits in an onion) without looking at channels or the table.
pub fn plan_sendpay(req: &SendpayRequest) -> Result<SendpayPlan, SendpayError> {
    let multi = req.routes.len() > 1;
    if req.routes.is_empty() || req.routes.iter().any(Vec::is_empty) {
        return Err(SendpayError::Params(
            "route: an empty route pays ourselves, which is not supported yet".into(),
        ));
    }
    let finals: Vec<u64> = req
        .routes
        .iter()
        .map(|r| r.last().map_or(0, |h| h.amount_msat))
        .collect();
    let destination = req.routes[0][req.routes[0].len() - 1].id;
    if req
        .routes
        .iter()
        .any(|r| r.last().is_some_and(|h| h.id != destination))
    {
        return Err(SendpayError::Params(
            "route: all routes must end at the same destination".into(),
        ));
    }
    let partids: Vec<u64> = if multi {
        if req.partid.is_some() {
            return Err(SendpayError::Params(
                "partid: not allowed with several routes, whose parts are numbered 1..N".into(),
            ));
        }
        if req.payment_secret.is_none() {
            return Err(SendpayError::Params(
                "several routes require payment_secret".into(),
            ));
        }
        (1..=req.routes.len() as u64).collect()
    } else {
        vec![req.partid.unwrap_or(0)]
    };
    let total = if multi {
        req.amount_msat.unwrap_or_else(|| finals.iter().sum())
    } else {
        let partid = partids[0];
        if partid != 0 && req.amount_msat.is_none() {
            return Err(SendpayError::Params(
                "Must specify msatoshi with partid".into(),
            ));
        }
        if let Some(a) = req.amount_msat
            && partid == 0
            && a != finals[0]
        {
            return Err(SendpayError::Params(format!(
                "Do not specify msatoshi ({}) without partid: if you do, it must be exactly the final amount ({})",
                msat(a),
                msat(finals[0])
            )));
        }
        if partid != 0 && req.payment_secret.is_none() {
            return Err(SendpayError::Params(
                "partid requires payment_secret".into(),
            ));
        }
        req.amount_msat.unwrap_or(finals[0])
    };
    for f in &finals {
        if *f > total {
            return Err(SendpayError::Params(format!(
                "Final amount {} is greater than {}, despite MPP",
                msat(*f),
                msat(total)
            )));
        }
    }
    let max_hops = max_onion_hops(req.payment_metadata.as_ref().map_or(0, Vec::len));

    for route in &req.routes {
        if route.len() > max_hops {
            return Err(SendpayError::Params(format!(
                "route: {} hops do not fit in an onion with this payment_metadata (at most {max_hops})",
                route.len()
            )));
        }
    }
    Ok(SendpayPlan {
        partids,
        total_msat: total,
        destination,
    })
}

/// A part ready to go.
struct Prepared {
    partid: u64,
    path: Path,
    destination: PublicKey,
    amount_msat: u64,
    sent_msat: u64,
}

impl Lightning {
    fn hop_info(&self, hops: &[ClnHop]) -> Vec<HopInfo> {
        let graph = self.graph.network().read_only();
        hops.iter()
            .map(|h| {
                let node = graph.node(&NodeId::from_pubkey(&h.id));
                let chan = graph.channel(h.channel);
                HopInfo {
                    node_features: node
                        .and_then(|n| n.announcement_info.as_ref())
                        .map(|a| a.features().clone())
                        .unwrap_or_else(NodeFeatures::empty),
                    channel_features: chan
                        .map(|c| c.features.clone())
                        .unwrap_or_else(ChannelFeatures::empty),
                    maybe_announced: chan.is_some(),
                }
            })
            .collect()
    }

    /// The channel the first hop goes out on, as CLN chooses it: the one named if it leads
    /// to that peer and can send now, else another usable channel to the same peer.
    fn first_channel(&self, hop: &ClnHop) -> Result<(u64, bool), SendpayError> {
        let ours: Vec<_> = self
            .manager
            .list_usable_channels()
            .into_iter()
            .filter(|c| c.counterparty.node_id == hop.id)
            .collect();
        let named = ours.iter().find(|c| {
            [
                c.short_channel_id,
                c.outbound_scid_alias,
                c.inbound_scid_alias,
            ]
            .contains(&Some(hop.channel))
        });
        let chosen = named.or_else(|| {
            ours.iter()
                .filter(|c| c.get_outbound_payment_scid().is_some())
                .max_by_key(|c| c.next_outbound_htlc_limit_msat)
        });
        match chosen.and_then(|c| c.get_outbound_payment_scid().map(|s| (s, c.is_announced))) {
            Some(found) => Ok(found),
            None => {
                let us = self.manager.get_our_node_id();
                Err(SendpayError::NoFirstPeer(FailFields {
                    erring_index: Some(0),
                    failcode: Some(UNKNOWN_NEXT_PEER),
                    failcodename: failcode_name(UNKNOWN_NEXT_PEER).map(String::from),
                    erring_node: Some(us.to_string()),
                    ..FailFields::default()
                }))
            }
        }
    }

    /// `sendpay`: records each part as pending, then sends it over exactly its route. Returns
    /// the record of each part, one per route (`pending`, or `complete` when that part
    /// already succeeded, or `failed` when one of several could not be sent); a single part
    /// that could not be sent is [`SendpayError::Failed`].
    pub async fn sendpay(
        self: &Arc<Self>,
        req: SendpayRequest,
    ) -> Result<Vec<Sendpay>, SendpayError> {
        self.reconcile_once().await?;
        let multi = req.routes.len() > 1;
        let SendpayPlan {
            partids,
            total_msat: total,
            destination,
        } = plan_sendpay(&req)?;
        let mut prepared = vec![];
        for (route, partid) in req.routes.iter().zip(&partids) {
            let mut path =
                cln_route_to_path(route, &self.hop_info(route)).map_err(SendpayError::Params)?;
            let (first_scid, announced) = self.first_channel(&route[0])?;
            if let Some(h) = path.hops.first_mut() {
                h.short_channel_id = first_scid;
                h.maybe_announced_channel = announced;
            }
            prepared.push(Prepared {
                partid: *partid,
                path,
                destination,
                amount_msat: route[route.len() - 1].amount_msat,
                sent_msat: route[0].amount_msat,
            });
        }

        // Reconcile with earlier parts and record the new ones, in one transaction.
        let us = self.manager.get_our_node_id();
        let hash = req.payment_hash;
        let groupid = req.groupid;
        let parts: Vec<NewPart> = prepared
            .iter()
            .map(|p| NewPart {
                payment_hash: hash,
                groupid: 0,
                partid: p.partid,
                destination: p.destination,
                amount_msat: p.amount_msat,
                amount_sent_msat: p.sent_msat,
                total_msat: total,
            })
            .collect();
        let (groupid, outcomes) = self
            .payments
            .record_parts(
                hash,
                groupid,
                parts,
                total,
                (
                    req.label.clone(),
                    req.bolt11.clone(),
                    req.description.clone(),
                ),
            )
            .await?;
        let mut recorded = vec![];
        for o in outcomes {
            recorded.push(o?);
        }

        let mut answers = vec![];
        for ((row, new), prep) in recorded.into_iter().zip(prepared) {
            if !new {
                answers.push(row);
                continue;
            }
            self.log.info(&format!(
                "Sending {}msat over {} hops to deliver {}msat (payment {} part {}/{})",
                prep.sent_msat,
                prep.path.hops.len(),
                prep.amount_msat,
                hex(&hash),
                groupid,
                prep.partid
            ));
            match self.send_part(&req, &prep, hash, groupid, total) {
                Ok(()) => answers.push(row),
                Err(why) => {
                    let fail = RouteFailure {
                        code: TRY_OTHER_ROUTE,
                        detail: format!("First peer not ready: {why}"),
                        erring_index: 0,
                        failcode: TEMPORARY_CHANNEL_FAILURE,
                        erring_node: Some(us),
                        erring_channel: prep
                            .path
                            .hops
                            .first()
                            .map(|h| (h.short_channel_id, direction(&us, &h.pubkey))),
                    };
                    let failed = self
                        .payments
                        .record_failure(hash, groupid, prep.partid, &fail)
                        .await
                        .map_err(db_error)?;
                    let Some(failed) = failed else {
                        // An event resolved it meanwhile: report what the table says.
                        answers.push(row);
                        continue;
                    };
                    if multi {
                        answers.push(failed);
                    } else {
                        return Err(SendpayError::Failed(Box::new(failed)));
                    }
                }
            }
        }
        self.payments.changed(hash);
        Ok(answers)
    }

    fn send_part(
        &self,
        req: &SendpayRequest,
        prep: &Prepared,
        hash: [u8; 32],
        groupid: u64,
        total: u64,
    ) -> Result<(), String> {
        let (route, onion) = outgoing(
            &prep.path,
            prep.destination,
            req.payment_secret,
            req.payment_metadata.clone(),
            total,
        );
        let sent = self.manager.send_payment_with_route(
            route,
            PaymentHash(hash),
            onion,
            payment_id(&hash, groupid, prep.partid),
        );
        if sent.is_ok() {
            if let Some(h) = prep.path.hops.first() {
                self.count_htlc_by_scid(
                    h.short_channel_id,
                    super::history::Flow::OutOffered,
                    prep.sent_msat,
                );
            }
            // Hand the HTLC to the peer now rather than at the engine loop's next wake.
            self.peers.process_events();
        }
        sent.map_err(|e| match e {
            RetryableSendFailure::DuplicatePayment => "duplicate payment id".to_string(),
            RetryableSendFailure::OnionPacketSizeExceeded => {
                "the onion is too large for this route".to_string()
            }
            other => format!("{other:?}"),
        })
    }

    /// `waitsendpay`: waits until part (`payment_hash`, `groupid`, `partid`) completes (its
    /// record) or fails (its error), or `timeout` seconds pass (200). `groupid` defaults to
    /// the latest one.
    pub async fn waitsendpay(
        &self,
        payment_hash: [u8; 32],
        timeout: Option<u64>,
        partid: u64,
        groupid: Option<u64>,
    ) -> Result<Sendpay, SendpayError> {
        self.reconcile_once().await?;
        self.payments
            .wait(payment_hash, timeout, partid, groupid)
            .await
    }

    /// `delpay`: deletes a payment's parts in `status` (all of them, or the one part
    /// `(partid, groupid)`) and returns them as they were.
    pub async fn delpay(
        &self,
        payment_hash: [u8; 32],
        status: PayStatus,
        part: Option<(u64, u64)>,
    ) -> Result<Vec<Sendpay>, SendpayError> {
        self.reconcile_once().await?;
        self.payments.delete(payment_hash, status, part).await
    }

    /// `listsendpays`: CLN's records of the parts matching `f`.
    pub async fn listsendpays(&self, f: ListFilter) -> Result<Vec<Sendpay>, SendpayError> {
        self.reconcile_once().await?;
        self.payments.list(f).await
    }

    /// Reconciles the parts an earlier run left pending with the payments LDK knows, once
    /// per process ([`Payments`]).
    pub(crate) async fn reconcile_once(&self) -> Result<(), SendpayError> {
        let known = || {
            self.manager
                .list_recent_payments()
                .into_iter()
                .map(|p| {
                    use lightning::ln::channelmanager::RecentPaymentDetails as R;
                    match p {
                        R::Pending { payment_id, .. }
                        | R::Fulfilled { payment_id, .. }
                        | R::Abandoned { payment_id, .. }
                        | R::AwaitingInvoice { payment_id } => payment_id,
                    }
                })
                .collect()
        };
        self.payments
            .reconcile_once(known, self.manager.get_our_node_id())
            .await
    }

    /// LDK's payment events (`PaymentSent`, `PaymentPathFailed`, `PaymentFailed`,
    /// `PaymentPathSuccessful`): resolve the part, notify, wake waiters, teach the scorer.
    /// The database write comes first; if it fails the event is replayed.
    pub(crate) async fn handle_payment_event(
        self: &Arc<Self>,
        ev: Event,
    ) -> Result<(), ReplayEvent> {
        let since_epoch = Duration::from_millis(self.clock.unix_ms());
        match ev {
            Event::PaymentSent {
                payment_id: Some(id),
                payment_preimage,
                payment_hash,
                fee_paid_msat,
                ..
            } => {
                let hash = payment_hash.0;
                let preimage = payment_preimage.0;
                let r = self
                    .payments
                    .record_success(hash, id, preimage, fee_paid_msat)
                    .await;
                match r {
                    Err(e) => {
                        self.log
                            .broken(&format!("cannot record payment {}: {e}", hex(&hash)));
                        return Err(ReplayEvent());
                    }
                    Ok(None) => {}
                    Ok(Some(row)) => {
                        self.log.info(&format!(
                            "Payment {} part {}/{} complete (fee {}msat)",
                            hex(&hash),
                            row.groupid,
                            row.partid,
                            fee_paid_msat.unwrap_or(0)
                        ));
                        let fee = fee_paid_msat.unwrap_or(0);
                        self.coin_movement(super::movements::Movement {
                            kind: "channel_mvt",
                            account: self.htlc_account(&hash, false),
                            credit_msat: 0,
                            debit_msat: row.amount_sent_msat,
                            tag: "invoice",
                            payment_hash: Some(hash),
                            fees_msat: Some(fee),
                            utxo: None,
                            peer_id: None,
                            extra_tags: vec![],
                        })
                        .await;
                    }
                }
            }
            Event::PaymentPathFailed {
                payment_id,
                payment_hash,
                payment_failed_permanently,
                failure,
                path,
                short_channel_id,
                ..
            } => {
                let update = match &failure {
                    PathFailure::OnPath {
                        network_update: Some(u),
                    } => Some(u),
                    _ => None,
                };
                self.graph.learn_failure(
                    update,
                    &path,
                    short_channel_id,
                    payment_failed_permanently,
                    since_epoch,
                );
                let Some(id) = payment_id else {
                    return Ok(());
                };
                let us = self.manager.get_our_node_id();
                let fail = derive_failure(
                    &path,
                    us,
                    &failure,
                    short_channel_id,
                    payment_failed_permanently,
                );
                self.payments
                    .fail_part(payment_hash.0, id, &fail, true)
                    .await?;
            }
            Event::PaymentFailed {
                payment_id,
                payment_hash: Some(payment_hash),
                reason,
            } => {
                // Normally the path failure came first and the part is no longer pending.
                self.payments
                    .fail_part(
                        payment_hash.0,
                        payment_id,
                        &payment_failed_failure(reason),
                        false,
                    )
                    .await?;
            }
            Event::PaymentPathSuccessful { path, .. } => {
                if let Some(h) = path.hops.first() {
                    let sent = path.final_value_msat().saturating_add(path.fee_msat());
                    self.count_htlc_by_scid(
                        h.short_channel_id,
                        super::history::Flow::OutFulfilled,
                        sent,
                    );
                }
                self.graph.learn_success(&path, since_epoch);
            }
            other => self.log.debug(&format!("LDK payment event: {other:?}")),
        }
        Ok(())
    }
}

/// Sample records for the tests of the views (the RPC's).
#[cfg(any(test, feature = "samples"))]
pub mod samples {
    use super::*;
    use bitcoin::secp256k1::{Secp256k1, SecretKey};

    /// Part 1 of group 2 in `status`, with every field CLN shows.
    pub fn sendpay(status: PayStatus) -> Sendpay {
        let key = |b: u8| {
            let sk = SecretKey::from_slice(&[b; 32]).unwrap_or_else(|e| panic!("{e}"));
            PublicKey::from_secret_key(&Secp256k1::signing_only(), &sk)
        };
        let mut r = Sendpay {
            created_index: 4,
            updated_index: None,
            payment_hash: [5; 32],
            groupid: 2,
            partid: 1,
            destination: Some(key(4)),
            amount_msat: Some(1000),
            amount_sent_msat: 1010,
            created_at: 1,
            completed_at: None,
            status,
            preimage: None,
            label: Some("lbl".into()),
            bolt11: Some("lnbcrt10n1xyz".into()),
            description: Some("coffee".into()),
            error: None,
        };
        match status {
            PayStatus::Pending => {}
            PayStatus::Complete => {
                r.updated_index = Some(7);
                r.completed_at = Some(9);
                r.preimage = Some([3; 32]);
            }
            PayStatus::Failed => {
                r.updated_index = Some(8);
                r.completed_at = Some(9);
                let f = RouteFailure {
                    code: DESTINATION_REFUSED,
                    detail: "reply from remote".into(),
                    erring_index: 2,
                    failcode: INCORRECT_OR_UNKNOWN_PAYMENT_DETAILS,
                    erring_node: Some(key(4)),
                    erring_channel: Some((0x0000_0100_0001_0000, 1)),
                };
                r.error = Some(f.to_stored());
            }
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;
    use bitcoin::secp256k1::{Secp256k1, SecretKey};
    use lightning::util::errors::APIError;

    fn key(b: u8) -> PublicKey {
        let sk = SecretKey::from_slice(&[b; 32]).unwrap_or_else(|e| panic!("{e}"));
        PublicKey::from_secret_key(&Secp256k1::signing_only(), &sk)
    }

    fn hop(id: u8, scid: u64, amount_msat: u64, delay: u32) -> ClnHop {
        ClnHop {
            id: key(id),
            channel: scid,
            amount_msat,
            delay,
        }
    }

    fn path(hops: &[ClnHop]) -> Path {
        cln_route_to_path(hops, &[]).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn one_hop_route_delivers_everything_to_the_peer() {
        let route = [hop(2, 1 << 40, 5000, 18)];
        let p = path(&route);
        assert_eq!(p.hops.len(), 1);
        assert_eq!(
            (p.hops[0].fee_msat, p.hops[0].cltv_expiry_delta),
            (5000, 18)
        );
        assert_eq!(p.hops[0].short_channel_id, 1 << 40);
        assert_eq!(p.fee_msat(), 0);
        assert_eq!(p.final_value_msat(), 5000);
        assert_eq!(p.total_cltv_expiry_delta(), 18);
        assert_eq!(path_to_cln_route(&p), route.to_vec());
    }

    #[test]
    fn three_hop_route_becomes_ldk_fees_and_cltv_deltas() {
        // CLN's getroute shape: each hop says what its node receives and the delay of the
        // HTLC it receives; B charges 11msat and 6 blocks for B->C, C 5msat and 40 blocks.
        let route = [
            hop(2, 101, 100_016, 55),
            hop(3, 102, 100_005, 49),
            hop(4, 103, 100_000, 9),
        ];
        let p = path(&route);
        let got: Vec<(u64, u32)> = p
            .hops
            .iter()
            .map(|h| (h.fee_msat, h.cltv_expiry_delta))
            .collect();
        assert_eq!(got, vec![(11, 6), (5, 40), (100_000, 9)]);
        assert_eq!(p.fee_msat(), 16);
        assert_eq!(p.final_value_msat(), 100_000);
        // What LDK puts in the first HTLC: amount[0] and height + 1 + delay[0].
        assert_eq!(p.final_value_msat() + p.fee_msat(), route[0].amount_msat);
        assert_eq!(p.total_cltv_expiry_delta(), route[0].delay);
        assert_eq!(path_to_cln_route(&p), route.to_vec());
        let ids: Vec<PublicKey> = p.hops.iter().map(|h| h.pubkey).collect();
        assert_eq!(ids, vec![key(2), key(3), key(4)]);
    }

    #[test]
    fn impossible_routes_are_refused() {
        let rising = [hop(2, 1, 100, 20), hop(3, 2, 101, 9)];
        assert!(
            cln_route_to_path(&rising, &[])
                .err()
                .is_some_and(|e| e.contains("less than hop 1"))
        );
        let later = [hop(2, 1, 101, 8), hop(3, 2, 100, 9)];
        assert!(cln_route_to_path(&later, &[]).is_err());
        assert!(cln_route_to_path(&[], &[]).is_err());
        assert!(cln_route_to_path(&[hop(2, 1, 0, 9)], &[]).is_err());
        let long: Vec<ClnHop> = (0..21)
            .map(|i| hop(2 + i as u8, i + 1, 1000 + 21 - i, 9 + 21 - i as u32))
            .collect();
        assert!(cln_route_to_path(&long, &[]).is_err());
        assert!(cln_route_to_path(&long[1..], &[]).is_ok());
    }

    #[test]
    fn onion_limit_allows_twenty_hops_without_metadata() {
        assert!(max_onion_hops(0) >= MAX_HOPS);
        assert!(max_onion_hops(300) < max_onion_hops(0));
        assert_eq!(max_onion_hops(5000), 0);
    }

    #[test]
    fn payment_ids_are_deterministic_and_distinct() {
        let h = [7u8; 32];
        assert_eq!(payment_id(&h, 1, 0), payment_id(&h, 1, 0));
        let ids = [
            payment_id(&h, 1, 0),
            payment_id(&h, 1, 1),
            payment_id(&h, 2, 0),
            payment_id(&h, 0, 1),
            payment_id(&[8u8; 32], 1, 0),
        ];
        for (i, a) in ids.iter().enumerate() {
            for b in &ids[i + 1..] {
                assert_ne!(a, b);
            }
        }
        // Never the bare payment hash (what other senders use as id).
        assert_ne!(payment_id(&h, 0, 0).0, h);
    }

    fn three_hop_path() -> Path {
        path(&[
            hop(2, 101, 1016, 55),
            hop(3, 102, 1005, 49),
            hop(4, 103, 1000, 9),
        ])
    }

    #[test]
    fn failures_at_the_destination_are_final() {
        let p = three_hop_path();
        let us = key(1);
        let on_path = PathFailure::OnPath {
            network_update: None,
        };
        let f = derive_failure(&p, us, &on_path, None, true);
        assert_eq!(f.code, 203);
        assert_eq!(f.erring_index, 3);
        assert_eq!(f.failcode, INCORRECT_OR_UNKNOWN_PAYMENT_DETAILS);
        assert_eq!(f.erring_node, Some(key(4)));
        assert_eq!(f.erring_channel, Some((103, direction(&key(3), &key(4)))));
        assert_eq!(
            f.message(),
            "failed: WIRE_INCORRECT_OR_UNKNOWN_PAYMENT_DETAILS (reply from remote)"
        );
        // Not permanent, no update, nothing blamed: the destination timed the set out.
        let f = derive_failure(&p, us, &on_path, None, false);
        assert_eq!((f.code, f.erring_index, f.failcode), (204, 3, MPP_TIMEOUT));
        // LDK blamed the last channel without an update: the final CLTV did not match.
        let f = derive_failure(&p, us, &on_path, Some(103), false);
        assert_eq!(
            (f.code, f.erring_index, f.failcode),
            (204, 3, FINAL_INCORRECT_CLTV_EXPIRY)
        );
    }

    #[test]
    fn failures_along_the_route_blame_the_forwarding_node() {
        let p = three_hop_path();
        let us = key(1);
        // C could not forward over 103 (temporary, with an update).
        let chan = PathFailure::OnPath {
            network_update: Some(NetworkUpdate::ChannelFailure {
                short_channel_id: 103,
                is_permanent: false,
            }),
        };
        let f = derive_failure(&p, us, &chan, Some(103), false);
        assert_eq!(f.code, 204);
        assert_eq!(f.erring_index, 2);
        assert_eq!(f.erring_node, Some(key(3)));
        assert_eq!(f.failcode, TEMPORARY_CHANNEL_FAILURE);
        assert_eq!(f.erring_channel, Some((103, direction(&key(3), &key(4)))));
        let v = f.fields();
        assert_eq!(
            v.failcodename.as_deref(),
            Some("WIRE_TEMPORARY_CHANNEL_FAILURE")
        );
        assert_eq!(v.erring_channel, Some(super::super::scid_string(103)));
        // B says 102 is gone for good.
        let perm = PathFailure::OnPath {
            network_update: Some(NetworkUpdate::ChannelFailure {
                short_channel_id: 102,
                is_permanent: true,
            }),
        };
        let f = derive_failure(&p, us, &perm, Some(102), false);
        assert_eq!(
            (f.erring_index, f.erring_node, f.failcode),
            (1, Some(key(2)), PERMANENT_CHANNEL_FAILURE)
        );
        // C itself failed: the channel after it is reported, as CLN does.
        let node = PathFailure::OnPath {
            network_update: Some(NetworkUpdate::NodeFailure {
                node_id: key(3),
                is_permanent: false,
            }),
        };
        let f = derive_failure(&p, us, &node, Some(102), false);
        assert_eq!(
            (f.erring_index, f.erring_node, f.failcode),
            (2, Some(key(3)), TEMPORARY_NODE_FAILURE)
        );
        assert_eq!(f.erring_channel.map(|c| c.0), Some(103));
        let node = PathFailure::OnPath {
            network_update: Some(NetworkUpdate::NodeFailure {
                node_id: key(4),
                is_permanent: true,
            }),
        };
        let f = derive_failure(&p, us, &node, Some(103), false);
        assert_eq!(
            (f.erring_index, f.failcode, f.erring_channel.map(|c| c.0)),
            (3, PERMANENT_NODE_FAILURE, Some(103))
        );
    }

    #[test]
    fn local_failures_are_ours() {
        let p = three_hop_path();
        let us = key(1);
        let first = Some((101, direction(&us, &key(2))));
        let sent = PathFailure::InitialSend {
            err: APIError::ChannelUnavailable {
                err: "peer offline".into(),
            },
        };
        let f = derive_failure(&p, us, &sent, None, false);
        assert_eq!(
            (f.code, f.erring_index, f.erring_node, f.erring_channel),
            (204, 0, Some(us), first)
        );
        assert_eq!(
            f.message(),
            "failed: WIRE_TEMPORARY_CHANNEL_FAILURE (peer offline)"
        );
        // A failure LDK decoded locally (malformed from the first peer) blames our channel.
        let local = PathFailure::OnPath {
            network_update: None,
        };
        let f = derive_failure(&p, us, &local, Some(101), false);
        assert_eq!((f.erring_index, f.erring_channel), (0, first));
    }

    fn part(groupid: u64, partid: u64, amount: u64, total: u64) -> NewPart {
        NewPart {
            payment_hash: [5; 32],
            groupid,
            partid,
            destination: key(4),
            amount_msat: amount,
            amount_sent_msat: amount + 10,
            total_msat: total,
        }
    }

    fn existing(p: &NewPart, status: PayStatus, created_index: u64) -> Sendpay {
        Sendpay {
            created_index,
            updated_index: None,
            payment_hash: p.payment_hash,
            groupid: p.groupid,
            partid: p.partid,
            destination: Some(p.destination),
            amount_msat: Some(p.amount_msat),
            amount_sent_msat: p.amount_sent_msat,
            created_at: 1,
            completed_at: None,
            status,
            preimage: None,
            label: None,
            bolt11: None,
            description: None,
            error: None,
        }
    }

    /// The refusal of `p` sent while `row` exists (no total given).
    fn against(row: &Sendpay, p: &NewPart) -> Option<Refused> {
        refused(check_progress(std::slice::from_ref(row), p, None))
    }

    /// How a part was refused.
    #[derive(Debug, PartialEq)]
    enum Refused {
        AlreadyUsed,
        InProgress,
        Params,
        Other,
    }

    fn refused(r: Result<Progress, SendpayError>) -> Option<Refused> {
        r.err().map(|e| match e {
            SendpayError::AlreadyUsed(_) => Refused::AlreadyUsed,
            SendpayError::InProgress(_) => Refused::InProgress,
            SendpayError::Params(_) => Refused::Params,
            _ => Refused::Other,
        })
    }

    #[test]
    fn sendpay_plans_follow_clns_parameter_rules() {
        let route = |to: u8, amount: u64, hops: usize| -> Vec<ClnHop> {
            (0..hops)
                .map(|i| ClnHop {
                    id: key(if i + 1 == hops { to } else { 9 }),
                    channel: 103,
                    amount_msat: amount,
                    delay: 9,
                })
                .collect()
        };
        let req = |routes: Vec<Vec<ClnHop>>| SendpayRequest {
            routes,
            ..SendpayRequest::default()
        };
        let refused = |r: SendpayRequest| match plan_sendpay(&r) {
            Err(SendpayError::Params(m)) => m,
            other => panic!("{other:?}"),
        };
        // One route: part 0, the total is what it delivers.
        let one = plan_sendpay(&req(vec![route(4, 1000, 2)])).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            one,
            SendpayPlan {
                partids: vec![0],
                total_msat: 1000,
                destination: key(4)
            }
        );
        assert!(refused(req(vec![])).contains("empty route"));
        assert!(
            refused(req(vec![route(4, 1000, 1), route(5, 1000, 1)])).contains("same destination")
        );
        // Several routes: parts 1..N, a payment secret, no partid; the total is their sum.
        let secret = Some([1; 32]);
        let two = SendpayRequest {
            payment_secret: secret,
            ..req(vec![route(4, 600, 1), route(4, 400, 2)])
        };
        let plan = plan_sendpay(&two).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((plan.partids, plan.total_msat), (vec![1, 2], 1000));
        assert!(
            refused(SendpayRequest {
                partid: Some(1),
                ..two.clone()
            })
            .contains("partid")
        );
        assert!(
            refused(SendpayRequest {
                payment_secret: None,
                ..two.clone()
            })
            .contains("payment_secret")
        );
        // A part of a bigger payment names the total and has a secret; a whole payment may
        // only repeat its amount.
        let part = SendpayRequest {
            partid: Some(2),
            amount_msat: Some(3000),
            payment_secret: secret,
            ..req(vec![route(4, 1000, 1)])
        };
        assert_eq!(plan_sendpay(&part).map(|p| p.total_msat), Ok(3000));
        assert_eq!(
            refused(SendpayRequest {
                amount_msat: None,
                ..part.clone()
            }),
            "Must specify msatoshi with partid"
        );
        assert_eq!(
            refused(SendpayRequest {
                payment_secret: None,
                ..part.clone()
            }),
            "partid requires payment_secret"
        );
        assert!(
            refused(SendpayRequest {
                amount_msat: Some(500),
                ..part
            })
            .contains("greater than")
        );
        assert!(
            refused(SendpayRequest {
                amount_msat: Some(999),
                ..req(vec![route(4, 1000, 1)])
            })
            .contains("without partid")
        );
        // What does not fit in an onion is refused before anything is recorded.
        assert!(
            refused(req(vec![route(4, 1000, max_onion_hops(0) + 1)]))
                .contains("do not fit in an onion")
        );
    }

    #[test]
    fn progress_checks_follow_cln() {
        let single = part(1, 0, 1000, 1000);
        assert_eq!(check_progress(&[], &single, None), Ok(Progress::Send));
        // Already paid: idempotent for the same amount, 201 otherwise.
        let done = existing(&single, PayStatus::Complete, 1);
        let again = part(2, 0, 1000, 1000);
        assert!(matches!(
            check_progress(std::slice::from_ref(&done), &again, None),
            Ok(Progress::Existing(_))
        ));
        assert_eq!(
            against(&done, &part(2, 0, 999, 999)),
            Some(Refused::AlreadyUsed)
        );
        let mut elsewhere = again.clone();
        elsewhere.destination = key(9);
        assert_eq!(against(&done, &elsewhere), Some(Refused::AlreadyUsed));
        assert_eq!(
            against(&done, &part(2, 1, 500, 1000)),
            Some(Refused::AlreadyUsed)
        );
        // In flight: same part answers with it, another group waits (200).
        let flying = existing(&single, PayStatus::Pending, 1);
        assert!(matches!(
            check_progress(std::slice::from_ref(&flying), &single, None),
            Ok(Progress::Existing(_))
        ));
        assert_eq!(
            against(&flying, &part(2, 0, 1000, 1000)),
            Some(Refused::InProgress)
        );
        assert_eq!(
            against(&flying, &part(1, 0, 900, 900)),
            Some(Refused::AlreadyUsed)
        );
        assert_eq!(
            against(&flying, &part(1, 2, 500, 1000)),
            Some(Refused::InProgress)
        );
        // A failed part cannot be resent under the same ids; a new group can.
        let failed = existing(&single, PayStatus::Failed, 1);
        assert_eq!(against(&failed, &single), Some(Refused::AlreadyUsed));
        assert_eq!(
            check_progress(std::slice::from_ref(&failed), &again, None),
            Ok(Progress::Send)
        );
    }

    #[test]
    fn parts_add_up_to_the_total() {
        let p1 = part(3, 1, 600, 1000);
        let rows = vec![existing(&p1, PayStatus::Pending, 1)];
        assert_eq!(
            check_progress(&rows, &part(3, 2, 400, 1000), Some(1000)),
            Ok(Progress::Send)
        );
        assert_eq!(
            refused(check_progress(&rows, &part(3, 2, 400, 1200), Some(1000))),
            Some(Refused::Params)
        );
        let mut rows = rows;
        rows.push(existing(&part(3, 2, 400, 1000), PayStatus::Pending, 2));
        let e = check_progress(&rows, &part(3, 3, 1, 1000), Some(1000)).err();
        assert_eq!(
            e,
            Some(SendpayError::InProgress(
                "Already have 1000msat of 1000msat payments in progress".into()
            ))
        );
    }

    fn store() -> Store {
        Store::in_memory().unwrap_or_else(|e| panic!("{e}"))
    }

    async fn db<T: Send + 'static>(
        s: &Store,
        f: impl FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> T {
        s.with(f).await.unwrap_or_else(|e| panic!("{e}"))
    }

    #[tokio::test]
    async fn table_keeps_clns_index_semantics_and_status_transitions() {
        let s = store();
        let a = part(1, 0, 1000, 1000);
        let b = NewPart {
            payment_hash: [6; 32],
            ..part(1, 0, 2000, 2000)
        };
        let (ra, rb) = db(&s, move |c| {
            let ra = insert_pending(c, &a, 100, Some("first"), Some("lnbcrt1x"), Some("coffee"))?;
            let rb = insert_pending(c, &b, 101, None, None, None)?;
            Ok((ra, rb))
        })
        .await;
        assert_eq!((ra.created_index, rb.created_index), (1, 2));
        assert_eq!((ra.updated_index, ra.status), (None, PayStatus::Pending));
        let dup = db(&s, |c| {
            Ok(insert_pending(c, &part(1, 0, 1000, 1000), 1, None, None, None).is_err())
        })
        .await;
        assert!(dup, "the (hash, groupid, partid) triple is unique");

        // b fails, then a completes: one updated counter for the subsystem.
        let fail = RouteFailure {
            code: 204,
            detail: "reply from remote".into(),
            erring_index: 1,
            failcode: TEMPORARY_CHANNEL_FAILURE,
            erring_node: Some(key(2)),
            erring_channel: Some((101, 0)),
        };
        let stored = fail.to_stored();
        let fb = db(&s, move |c| mark_failed(c, &[6; 32], 1, 0, &stored, 200)).await;
        let fb = fb.unwrap_or_else(|| panic!("b was pending"));
        assert_eq!(
            (fb.status, fb.updated_index, fb.completed_at),
            (PayStatus::Failed, Some(1), Some(200))
        );
        let ca = db(&s, |c| {
            mark_complete(c, &[5; 32], 1, 0, &[9; 32], None, 300)
        })
        .await;
        let ca = ca.unwrap_or_else(|| panic!("a was pending"));
        assert_eq!(
            (ca.status, ca.updated_index, ca.preimage),
            (PayStatus::Complete, Some(2), Some([9; 32]))
        );
        // Replayed events change nothing; a complete part never fails.
        let again = db(&s, |c| {
            mark_complete(c, &[5; 32], 1, 0, &[9; 32], None, 301)
        })
        .await;
        assert_eq!(again, None);
        let stored = fail.to_stored();
        let late = db(&s, move |c| mark_failed(c, &[5; 32], 1, 0, &stored, 302)).await;
        assert_eq!(late, None);
        // A failed part the preimage later proves paid becomes complete.
        let fixed = db(&s, |c| {
            mark_complete(c, &[6; 32], 1, 0, &[8; 32], None, 303)
        })
        .await;
        assert_eq!(
            fixed.map(|r| (r.status, r.updated_index)),
            Some((PayStatus::Complete, Some(3)))
        );
        let missing = db(&s, |c| {
            mark_complete(c, &[7; 32], 1, 0, &[8; 32], None, 303)
        })
        .await;
        assert_eq!(missing, None);
    }

    #[tokio::test]
    async fn listing_filters_orders_and_pages() {
        let s = store();
        db(&s, |c| {
            for (i, h) in [[1u8; 32], [2; 32], [1; 32], [3; 32]].iter().enumerate() {
                let p = NewPart {
                    payment_hash: *h,
                    ..part(i as u64 + 1, 0, 1000, 1000)
                };
                insert_pending(c, &p, 10, None, None, None)?;
            }
            // Updated in the order 4, 2.
            mark_complete(c, &[3; 32], 4, 0, &[0; 32], None, 11)?;
            let failure = PartFailure {
                code: 204,
                message: "failed".into(),
                fail: FailFields::default(),
            };
            mark_failed(c, &[2; 32], 2, 0, &failure, 12)?;
            Ok(())
        })
        .await;
        let idx = |f: ListFilter| {
            let s = s.clone();
            async move {
                db(&s, move |c| list(c, &f))
                    .await
                    .iter()
                    .map(|r| r.created_index)
                    .collect::<Vec<_>>()
            }
        };
        assert_eq!(idx(ListFilter::default()).await, vec![1, 2, 3, 4]);
        let by_hash = ListFilter {
            payment_hash: Some([1; 32]),
            ..Default::default()
        };
        assert_eq!(idx(by_hash).await, vec![1, 3]);
        let pending = ListFilter {
            status: Some(PayStatus::Pending),
            ..Default::default()
        };
        assert_eq!(idx(pending).await, vec![1, 3]);
        let updated = ListFilter {
            by_updated: true,
            ..Default::default()
        };
        assert_eq!(idx(updated).await, vec![4, 2]);
        let page = ListFilter {
            start: 2,
            limit: Some(2),
            ..Default::default()
        };
        assert_eq!(idx(page).await, vec![2, 3]);
        let updated_from_2 = ListFilter {
            by_updated: true,
            start: 2,
            ..Default::default()
        };
        assert_eq!(idx(updated_from_2).await, vec![2]);
        let (g, none, found) = db(&s, |c| {
            Ok((
                max_groupid(c, &[1; 32])?,
                max_groupid(c, &[9; 32])?,
                part_of(c, &[1; 32], payment_id(&[1; 32], 3, 0))?,
            ))
        })
        .await;
        assert_eq!((g, none, found), (Some(3), None, Some((3, 0, false))));
    }
}
