//! The `htlc_accepted` hook, for every forward and every received payment, with the core
//! owning the deadline.
//!
//! An HTLC that waits for plugins is *held*: it is recorded in the `held_htlcs` table (so a
//! restart offers it to the hooks again once every plugin has answered `init`) and in memory
//! with its deadline height. The deadline is LDK's own point of no return (the claim deadline
//! of a received payment, the timeout of an intercepted forward) minus
//! `--hold-safety-blocks`. If the plugins have not decided when the chain reaches it, fulgurd
//! fails the HTLC back itself, logs it, and tells subscribers with the `htlc_deadline`
//! notification (a Fulgur topic). An answer that comes later is logged and ignored: each held
//! HTLC is decided exactly once, by whoever takes it out of the in-memory table first.
//!
//! The hook payload is CLN's, plus `deadline_blockheight` (a Fulgur extension). LDK does
//! not expose the raw onion: `onion.payload` is rebuilt from the fields it gives
//! ([`onion_payload`]), `onion.next_onion` is empty and `onion.shared_secret` is all zeros.

use fulgur_base::hex;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bitcoin::hashes::{Hash, sha256};
use lightning::ln::channel_state::ChannelDetails;
use lightning::ln::channelmanager::{FailureCode, InterceptId};
use lightning::types::payment::{PaymentHash, PaymentPreimage};
use serde::{Deserialize, Serialize};

use super::history::Flow;
use super::port::{HtlcAsk, HtlcKind, HtlcOnion, HtlcPart, Notice, Question};
use super::{Lightning, scid_string};

/// What plugins' `continue` answers to `htlc_accepted` replaced (CLN's `forward_to`,
/// `invoice_msat`, `payload`, `extra_tlvs`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Replacements {
    /// The channel (id, hex) to forward on instead of the one the onion names.
    pub forward_to: Option<String>,
    /// The amount to check a received payment against instead of the invoice's.
    pub invoice_msat: Option<u64>,
    /// Replacements LDK cannot carry out: `payload` and `extra_tlvs` (LDK forwards the onion
    /// it received and reads a payment's onion itself).
    pub unsupported: Vec<&'static str>,
}

/// What LDK tells of a received payment's onion beyond its amount and secret.
#[derive(Debug, Clone, Default)]
pub struct ReceivedOnion {
    /// The payment secret, for a BOLT 11 payment.
    pub payment_secret: Option<[u8; 32]>,
    /// `payment_metadata`, when the payer sent some.
    pub metadata: Option<Vec<u8>>,
    /// The custom records (types of 65536 and above).
    pub custom_tlvs: Vec<(u64, Vec<u8>)>,
}

/// What to do once the plugins have decided.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum HeldAction {
    /// A forward intercepted by LDK.
    Forward {
        /// LDK's intercept id (hex).
        intercept_id: String,
        /// The channel the onion asks for.
        next_scid: u64,
        /// What the next hop should receive.
        outbound_msat: u64,
    },
    /// A payment to us (all its parts), claimable in LDK.
    Receive {
        /// Total received.
        amount_msat: u64,
        /// The preimage when LDK knows it (an invoice it derived).
        preimage: Option<String>,
        /// The onion's payment secret (hex), for a BOLT 11 payment: checked against the
        /// invoice's before claiming. Absent in records written before it was kept.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        payment_secret: Option<String>,
        /// For a keysend, the description of the invoice it is recorded under (CLN's
        /// keysend plugin records one, so `listinvoices` and `waitanyinvoice` show it).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        keysend: Option<String>,
    },
}

/// A held HTLC (or set of parts) as stored for restart replay.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HeldRecord {
    /// The action.
    pub action: HeldAction,
    /// What `htlc_accepted` is asked, one per HTLC part.
    pub payloads: Vec<HtlcAsk>,
}

/// Held HTLCs in memory: id → deadline height. Whoever removes an entry decides it.
pub type HeldMap = Mutex<HashMap<String, u32>>;

/// How plugins decided.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Continue as the node would.
    Continue,
    /// Continue with what a plugin's `continue` replaced.
    ContinueWith(Replacements),
    /// Fail with this BOLT 4 failure message (hex) if given.
    Fail(Option<String>),
    /// Settle with this preimage.
    Resolve([u8; 32]),
}

/// Combines the answers for the parts of one payment: any failure fails it, else any
/// resolve settles it, else it continues.
pub fn combine(verdicts: &[Verdict]) -> Verdict {
    if let Some(f) = verdicts.iter().find(|v| matches!(v, Verdict::Fail(_))) {
        return f.clone();
    }
    if let Some(r) = verdicts.iter().find(|v| matches!(v, Verdict::Resolve(_))) {
        return r.clone();
    }
    if let Some(r) = verdicts
        .iter()
        .find(|v| matches!(v, Verdict::ContinueWith(_)))
    {
        return r.clone();
    }
    Verdict::Continue
}

impl HeldAction {
    /// What the HTLC is, for `htlc_accepted`'s filters.
    pub fn kind(&self) -> HtlcKind {
        match self {
            HeldAction::Forward { .. } => HtlcKind::Forward,
            HeldAction::Receive { .. } => HtlcKind::Receive,
        }
    }
}

/// 32 bytes from 64 hex digits.
pub fn parse_hash(s: &str) -> Result<[u8; 32], String> {
    let mut out = [0u8; 32];
    let bytes = s.as_bytes();
    if bytes.len() != 64 {
        return Err(format!("'{s}' is not 32 bytes of hex"));
    }
    // Byte-wise: slicing the string could split a multi-byte character and panic.
    for (b, pair) in out.iter_mut().zip(bytes.chunks_exact(2)) {
        *b = hex_byte(pair).ok_or_else(|| format!("'{s}' is not hex"))?;
    }
    Ok(out)
}

/// One byte from two ASCII hex digits.
fn hex_byte(pair: &[u8]) -> Option<u8> {
    let digit = |c: &u8| {
        char::from(*c)
            .to_digit(16)
            .and_then(|d| u8::try_from(d).ok())
    };
    match pair {
        [hi, lo] => Some(digit(hi)? << 4 | digit(lo)?),
        _ => None,
    }
}

/// A plugin's `failure_message` (BOLT 4, hex) checked: at least its two-byte code, all hex.
pub fn parse_failure_message(msg: &str) -> Result<u16, String> {
    let b = msg.as_bytes();
    if b.len() < 4 || !b.len().is_multiple_of(2) || !b.iter().all(u8::is_ascii_hexdigit) {
        return Err(format!(
            "failure_message '{msg}' is not a hex BOLT 4 message (an even number of hex digits, at least 4)"
        ));
    }
    let code = b
        .get(..4)
        .and_then(|c| Some([hex_byte(c.get(..2)?)?, hex_byte(c.get(2..)?)?]));
    code.map(u16::from_be_bytes)
        .ok_or_else(|| format!("failure_message '{msg}' is not hex"))
}

/// A hop's onion payload as BOLT 4 writes it (CLN's `onion.payload`: the length, then the
/// TLV stream), rebuilt from what LDK tells of it: `amt_to_forward` (2),
/// `outgoing_cltv_value` (4), `short_channel_id` (6) for a forward; `payment_data` (8),
/// `payment_metadata` (16) and the custom records (keysend's preimage among them) for a
/// payment to us. LDK does not hand the raw onion, so records it does not know are missing.
pub fn onion_payload(
    forward_msat: u64,
    outgoing_cltv_value: u32,
    next_scid: Option<u64>,
    payment_data: Option<([u8; 32], u64)>,
    metadata: Option<&[u8]>,
    custom: &[(u64, Vec<u8>)],
) -> String {
    use lightning::util::ser::{BigSize, Writeable};
    // A truncated integer: big-endian without leading zero bytes.
    let tu = |v: u64| {
        let b = v.to_be_bytes();
        let skip = b.iter().take_while(|x| **x == 0).count();
        b.get(skip..).unwrap_or_default().to_vec()
    };
    let mut records: Vec<(u64, Vec<u8>)> = vec![
        (2, tu(forward_msat)),
        (4, tu(u64::from(outgoing_cltv_value))),
    ];
    if let Some(scid) = next_scid {
        records.push((6, scid.to_be_bytes().to_vec()));
    }
    if let Some((secret, total)) = payment_data {
        let mut v = secret.to_vec();
        v.extend(tu(total));
        records.push((8, v));
    }
    if let Some(m) = metadata {
        records.push((16, m.to_vec()));
    }
    records.extend(custom.iter().cloned());
    records.sort_by_key(|r| r.0);
    records.dedup_by_key(|r| r.0);
    let mut stream = vec![];
    for (ty, value) in records {
        stream.extend(BigSize(ty).encode());
        stream.extend(BigSize(value.len() as u64).encode());
        stream.extend(value);
    }
    let mut out = BigSize(stream.len() as u64).encode();
    out.extend(stream);
    hex(&out)
}

/// LDK's failure codes for a plugin's `failure_message`: LDK can only send four of BOLT 4's
/// codes back for a received payment; others (and messages that are not hex, which callers
/// log) become `incorrect_or_unknown_payment_details`.
pub fn failure_code(msg: Option<&str>) -> FailureCode {
    match msg.map(parse_failure_message) {
        Some(Ok(0x2002)) => FailureCode::TemporaryNodeFailure,
        Some(Ok(0x2003)) => FailureCode::RequiredNodeFeatureMissing,
        Some(Ok(0x4016)) => FailureCode::InvalidOnionPayload(None),
        _ => FailureCode::IncorrectOrUnknownPaymentDetails,
    }
}

/// The inbound HTLCs carrying `hash` in `chans`.
fn inbound_parts_in(chans: &[ChannelDetails], hash: &PaymentHash) -> Vec<InboundPart> {
    let mut out = vec![];
    for c in chans {
        let scid = c.short_channel_id.or(c.inbound_scid_alias).unwrap_or(0);
        for h in &c.pending_inbound_htlcs {
            if h.payment_hash == *hash {
                out.push((
                    scid,
                    h.htlc_id,
                    h.amount_msat,
                    h.cltv_expiry,
                    c.counterparty.node_id.to_string(),
                ));
            }
        }
    }
    out
}

/// The channel an onion's `short_channel_id` names: by its real scid or one of its aliases
/// (an onion built from an invoice's route hint names the alias).
fn next_channel(chans: &[ChannelDetails], scid: u64) -> Option<&ChannelDetails> {
    chans.iter().find(|c| {
        c.short_channel_id == Some(scid)
            || c.outbound_scid_alias == Some(scid)
            || c.inbound_scid_alias == Some(scid)
    })
}

/// An inbound HTLC: (channel scid, htlc id, amount, cltv expiry, peer).
type InboundPart = (u64, u64, u64, u32, String);

impl Lightning {
    /// The inbound HTLCs carrying `hash`.
    fn inbound_parts(&self, hash: &PaymentHash) -> Vec<InboundPart> {
        inbound_parts_in(&self.manager.list_channels(), hash)
    }

    /// Forwards an intercepted HTLC on `next` (failing it back when there is no such
    /// channel or LDK refuses), and sends at once rather than at the engine loop's next wake.
    fn forward_intercepted(
        &self,
        intercept_id: &str,
        iid: InterceptId,
        next: Option<&ChannelDetails>,
        outbound_msat: u64,
    ) {
        match next {
            Some(c) => match self.manager.forward_intercepted_htlc(
                iid,
                &c.channel_id,
                c.counterparty.node_id,
                outbound_msat,
            ) {
                Ok(()) => {
                    self.count_htlcs(vec![(c.channel_id, Flow::OutOffered, outbound_msat)]);
                    self.manager.process_pending_htlc_forwards();
                }
                Err(e) => self.fail_intercepted(intercept_id, iid, &super::api_error(&e)),
            },
            None => self.fail_intercepted(intercept_id, iid, "unknown next channel"),
        }
        self.peers.process_events();
    }

    fn fail_intercepted(&self, intercept_id: &str, iid: InterceptId, why: &str) {
        self.log
            .debug(&format!("Failing forward {intercept_id}: {why}"));
        if let Err(e) = self.manager.fail_intercepted_htlc(iid) {
            self.log.unusual(&format!(
                "cannot fail forward {intercept_id}: {}",
                super::api_error(&e)
            ));
        }
    }

    fn htlc_ask(
        &self,
        part: &InboundPart,
        hash: &PaymentHash,
        onion: HtlcOnion,
        deadline: u32,
    ) -> HtlcAsk {
        HtlcAsk {
            peer_id: part.4.clone(),
            onion,
            htlc: HtlcPart {
                short_channel_id: scid_string(part.0),
                id: part.1,
                amount_msat: part.2,
                cltv_expiry: part.3,
                cltv_expiry_relative: part.3.saturating_sub(self.chain.height()),
                payment_hash: hex(&hash.0),
            },
            deadline_blockheight: deadline,
            forward_to: None,
        }
    }

    /// LDK intercepted a forward (all forwards are intercepted): ask `htlc_accepted`, or
    /// forward at once when no plugin registered it.
    pub(crate) async fn on_htlc_intercepted(
        self: &Arc<Self>,
        intercept_id: InterceptId,
        next_scid: u64,
        hash: PaymentHash,
        inbound_msat: u64,
        outbound_msat: u64,
        outgoing_expiry: Option<u32>,
    ) {
        // One copy of the channels serves the whole decision (each copy costs a node with
        // many channels and HTLCs).
        let chans = self.manager.list_channels();
        let part = inbound_parts_in(&chans, &hash)
            .into_iter()
            .find(|p| p.2 == inbound_msat)
            .unwrap_or((0, 0, inbound_msat, 0, String::new()));
        let next = next_channel(&chans, next_scid);
        if let Some(c) = next_channel(&chans, part.0) {
            self.count_htlcs(vec![(c.channel_id, Flow::InOffered, part.2)]);
        }
        let out_scid = next.and_then(|c| c.short_channel_id).unwrap_or(next_scid);
        self.forward_offered(&hash, &part, out_scid, outbound_msat)
            .await;
        if self.is_graceful() {
            // `graceful`: no new HTLC goes out while the node empties its channels.
            self.fail_intercepted(&hex(&intercept_id.0), intercept_id, "graceful shutdown");
            self.peers.process_events();
            return;
        }
        let action = HeldAction::Forward {
            intercept_id: hex(&intercept_id.0),
            next_scid,
            outbound_msat,
        };
        if !self.port.asks(Question::HtlcAccepted(action.kind())) {
            self.forward_intercepted(&hex(&intercept_id.0), intercept_id, next, outbound_msat);
            return;
        }
        // LDK fails an intercepted HTLC itself 39 blocks before its outgoing expiry.
        let ldk_deadline = outgoing_expiry
            .map(|e| e.saturating_sub(39))
            .unwrap_or_else(|| part.3.saturating_sub(39));
        let deadline = self.hold_deadline(ldk_deadline);
        let onion = HtlcOnion {
            short_channel_id: Some(scid_string(next_scid)),
            payload: onion_payload(
                outbound_msat,
                outgoing_expiry.unwrap_or(0),
                Some(next_scid),
                None,
                None,
                &[],
            ),
            ..HtlcOnion::opaque(outbound_msat, outgoing_expiry.unwrap_or(0))
        };
        let mut payload = self.htlc_ask(&part, &hash, onion, deadline);
        payload.forward_to = next.map(|c| hex(&c.channel_id.0));
        let id = format!("fwd:{}", hex(&intercept_id.0));
        self.hold(
            id,
            hash,
            HeldRecord {
                action,
                payloads: vec![payload],
            },
            deadline,
            true,
        )
        .await;
    }

    /// A payment to us is complete in LDK: ask `htlc_accepted` for each part, then settle or
    /// fail it.
    pub(crate) async fn on_payment_claimable(
        self: &Arc<Self>,
        hash: PaymentHash,
        amount_msat: u64,
        preimage: Option<PaymentPreimage>,
        keysend: Option<String>,
        claim_deadline: Option<u32>,
        onion: ReceivedOnion,
    ) {
        let payment_secret = onion.payment_secret;
        let id = format!("recv:{}", hex(&hash.0));
        if self.held_contains(&id) {
            return;
        }
        let chans = self.manager.list_channels();
        let parts = inbound_parts_in(&chans, &hash);
        self.count_htlcs(
            parts
                .iter()
                .filter_map(|p| Some((next_channel(&chans, p.0)?.channel_id, Flow::InOffered, p.2)))
                .collect(),
        );
        let earliest = parts.iter().map(|p| p.3).min().unwrap_or(0);
        let ldk_deadline = claim_deadline.unwrap_or_else(|| earliest.saturating_sub(39));
        let deadline = self.hold_deadline(ldk_deadline);
        let mut custom = onion.custom_tlvs.clone();
        if keysend.is_some()
            && let Some(p) = &preimage
        {
            custom.push((super::receive::KEYSEND_PREIMAGE_TLV, p.0.to_vec()));
        }
        let payloads = parts
            .iter()
            .map(|p| {
                let payload = onion_payload(
                    p.2,
                    p.3,
                    None,
                    payment_secret.map(|s| (s, amount_msat)),
                    onion.metadata.as_deref(),
                    &custom,
                );
                let onion = HtlcOnion {
                    total_msat: Some(amount_msat),
                    payment_secret: payment_secret.map(|s| hex(&s)),
                    payment_metadata: onion.metadata.as_deref().map(hex),
                    payload,
                    ..HtlcOnion::opaque(p.2, p.3)
                };
                self.htlc_ask(p, &hash, onion, deadline)
            })
            .collect();
        let action = HeldAction::Receive {
            amount_msat,
            preimage: preimage.map(|p| hex(&p.0)),
            payment_secret: payment_secret.map(|s| hex(&s)),
            keysend,
        };
        let with_hook = self.port.asks(Question::HtlcAccepted(action.kind()));
        self.hold(
            id,
            hash,
            HeldRecord { action, payloads },
            deadline,
            with_hook,
        )
        .await;
    }

    /// The height at which fulgurd decides by itself: `--hold-safety-blocks` before LDK's own
    /// deadline, but at least the next block (an HTLC whose window is shorter than the margin
    /// still gets one block), and never after LDK's deadline.
    fn hold_deadline(&self, ldk_deadline: u32) -> u32 {
        ldk_deadline
            .saturating_sub(self.hold_safety_blocks)
            .max(self.chain.height() + 1)
            .min(ldk_deadline)
    }

    fn held_contains(&self, id: &str) -> bool {
        self.held
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(id)
    }

    /// Records a held HTLC and decides it in a task (asking the hook when `ask`).
    ///
    /// The record is written whether or not a hook is asked, before LDK's event is marked
    /// handled: LDK does not hand `PaymentClaimable` or `HTLCIntercepted` again once a
    /// stored channel manager no longer holds the event, so after a `kill -9` between that
    /// write and the claim (or forward, or failure) only this record brings the HTLC back
    /// ([`Lightning::replay_held`]); without it the HTLC stayed in the channel, neither
    /// claimed nor failed, until its deadline. The record is removed once a channel manager
    /// that knows the decision is stored ([`Lightning::resolved_held`]).
    async fn hold(
        self: &Arc<Self>,
        id: String,
        hash: PaymentHash,
        rec: HeldRecord,
        deadline: u32,
        ask: bool,
    ) {
        self.held
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.clone(), deadline);
        let row = serde_json::to_string(&rec).unwrap_or_default();
        let kind = match rec.action {
            HeldAction::Forward { .. } => "forward",
            HeldAction::Receive { .. } => "receive",
        };
        let (id2, hash2, kind) = (id.clone(), hash.0.to_vec(), kind.to_string());
        let now_secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        let r = self
            .store
            .with(move |c| {
                crate::store::relaxed(c, |c| {
                    c.prepare_cached("INSERT INTO held_htlcs (id, kind, payment_hash, payload, deadline_height, created_at)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                         ON CONFLICT (id) DO UPDATE SET kind = excluded.kind,
                             payment_hash = excluded.payment_hash, payload = excluded.payload,
                             deadline_height = excluded.deadline_height,
                             created_at = excluded.created_at")?.execute(
                        fulgur_store::sql::params![id2, kind, hash2, row, deadline, now_secs],
                    )?;
                    Ok(())
                })
            })
            .await;
        if let Err(e) = r {
            // Without the record a crash before the decision is stored would strand the
            // HTLC until its deadline: stop instead (`store::fatal`).
            crate::store::fatal(
                &self.log,
                &format!("cannot record held HTLC {id} for replay"),
                &e,
            );
        }
        let me = self.clone();
        tokio::spawn(async move { me.decide(id, hash, rec, deadline, ask).await });
    }

    /// Asks the hook (for every part at once), racing the deadline, and acts once.
    async fn decide(
        self: Arc<Self>,
        id: String,
        hash: PaymentHash,
        rec: HeldRecord,
        deadline: u32,
        ask: bool,
    ) {
        let verdict = if ask {
            loop {
                let mut activations = self.port.activations();
                activations.borrow_and_update();
                let Some((verdict, abandoned_by)) =
                    self.ask_parts(&id, &hash, &rec, deadline).await
                else {
                    return;
                };
                if abandoned_by.is_empty()
                    || verdict != Verdict::Continue
                    || !self.only_a_plugin_can_settle(&hash, &rec.action).await
                {
                    break verdict;
                }
                // Continuing could only fail this payment (the node does not know its
                // preimage): the plugin that held it is gone, so keep it for the plugin's
                // return, until the deadline at most.
                self.log.info(&format!(
                    "HTLC {id}: plugin {} went away while holding it; kept held until a plugin with htlc_accepted starts, at most until block {deadline}",
                    abandoned_by.join(", ")
                ));
                if !self
                    .wait_for_htlc_plugin(&id, &hash, &rec, deadline, activations)
                    .await
                {
                    return;
                }
                self.log
                    .info(&format!("HTLC {id}: offering it to htlc_accepted again"));
            }
        } else {
            Verdict::Continue
        };
        if !self.take_held(&id) {
            self.log.unusual(&format!(
                "htlc_accepted answer for {id} ignored: already decided ({verdict:?})"
            ));
            return;
        }
        self.act(&hash, &rec.action, verdict).await;
        self.resolved_held(&id);
    }

    /// Asks the hook for every part at once, racing the deadline: the combined verdict and
    /// the plugins that died holding a part, or `None` once the deadline was reached (the
    /// HTLC is then failed back here and a late answer only logged).
    async fn ask_parts(
        self: &Arc<Self>,
        id: &str,
        hash: &PaymentHash,
        rec: &HeldRecord,
        deadline: u32,
    ) -> Option<(Verdict, Vec<String>)> {
        let kind = rec.action.kind();
        let calls = rec
            .payloads
            .iter()
            .cloned()
            .map(|p| self.port.htlc_accepted(kind, p));
        let combined = |answers: Vec<(Verdict, Vec<String>)>| {
            let (verdicts, died): (Vec<Verdict>, Vec<Vec<String>>) = answers.into_iter().unzip();
            let mut died: Vec<String> = died.into_iter().flatten().collect();
            died.sort();
            died.dedup();
            (combine(&verdicts), died)
        };
        let mut all = tokio::spawn(futures::future::join_all(calls));
        loop {
            tokio::select! {
                r = &mut all => {
                    return Some(r.map(combined).unwrap_or((Verdict::Fail(None), vec![])));
                }
                _ = tokio::time::sleep(Duration::from_millis(250)) => {
                    if self.chain.height() >= deadline && self.take_held(id) {
                        self.deadline_reached(id, hash, rec, deadline).await;
                        let log = self.log.clone();
                        let id = id.to_string();
                        tokio::spawn(async move {
                            if let Ok(v) = all.await {
                                log.unusual(&format!(
                                    "Late htlc_accepted answer for {id} ignored (already failed back at its deadline): {:?}",
                                    combined(v).0
                                ));
                            }
                        });
                        return None;
                    }
                }
            }
        }
    }

    /// Whether only a plugin can settle this: a payment to us whose preimage the node does
    /// not know (an invoice made with `payment_hash`), so `continue` would fail it.
    async fn only_a_plugin_can_settle(&self, hash: &PaymentHash, action: &HeldAction) -> bool {
        match action {
            HeldAction::Forward { .. } => false,
            HeldAction::Receive { preimage, .. } => {
                preimage.is_none()
                    && self
                        .invoices
                        .by_hash(hash.0)
                        .await
                        .is_none_or(|i| i.preimage.is_none())
            }
        }
    }

    /// Waits until a plugin becomes active while `htlc_accepted` has a registration (true),
    /// or the deadline, where the HTLC is failed back (false).
    async fn wait_for_htlc_plugin(
        &self,
        id: &str,
        hash: &PaymentHash,
        rec: &HeldRecord,
        deadline: u32,
        mut activations: tokio::sync::watch::Receiver<u64>,
    ) -> bool {
        loop {
            tokio::select! {
                changed = activations.changed() => {
                    if changed.is_err() {
                        return false;
                    }
                    if self
                        .port
                        .asks(Question::HtlcAccepted(rec.action.kind()))
                    {
                        return true;
                    }
                }
                _ = tokio::time::sleep(Duration::from_millis(250)) => {
                    if !self.held_contains(id) {
                        return false;
                    }
                    if self.chain.height() >= deadline && self.take_held(id) {
                        self.deadline_reached(id, hash, rec, deadline).await;
                        return false;
                    }
                }
            }
        }
    }

    fn take_held(&self, id: &str) -> bool {
        self.held
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id)
            .is_some()
    }

    /// A held HTLC was decided: its record goes once a stored channel manager knows the
    /// decision (LDK's claim, failure or forward is in the manager's memory only until the
    /// engine loop writes it; see [`Lightning::forget_resolved_held`]).
    fn resolved_held(&self, id: &str) {
        self.held_resolved
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(id.to_string());
    }

    /// Removes the records of held HTLCs decided before the channel manager write that just
    /// succeeded (`ids`, taken before the manager was encoded). Called with the persist lock
    /// held. A failure only leaves records that the next start offers again, where deciding
    /// an HTLC already settled does nothing.
    pub(crate) fn forget_resolved_held(&self, ids: Vec<String>) {
        if ids.is_empty() {
            return;
        }
        let r = self.store.with_sync(|c| {
            crate::store::relaxed(c, |c| {
                let tx = c.transaction()?;
                {
                    let mut st = tx.prepare_cached("DELETE FROM held_htlcs WHERE id = ?1")?;
                    for id in &ids {
                        st.execute([id])?;
                    }
                }
                tx.commit()?;
                Ok(())
            })
        });
        if let Err(e) = r {
            self.log.unusual(&format!(
                "cannot remove {} decided held HTLC record(s); they are offered again at the next start: {e}",
                ids.len()
            ));
        }
    }

    /// Removes a record that cannot be replayed.
    async fn drop_held_record(&self, id: &str) {
        let id = id.to_string();
        let _ = self
            .store
            .with(move |c| {
                crate::store::relaxed(c, |c| {
                    c.prepare_cached("DELETE FROM held_htlcs WHERE id = ?1")?
                        .execute([id])?;
                    Ok(())
                })
            })
            .await;
    }

    async fn deadline_reached(
        &self,
        id: &str,
        hash: &PaymentHash,
        rec: &HeldRecord,
        deadline: u32,
    ) {
        self.log.unusual(&format!(
            "HTLC {id} still held by a plugin at block {deadline} (its deadline): failing it back"
        ));
        self.port.tell(Notice::HtlcDeadline {
            id: id.into(),
            payment_hash: hash.0,
            deadline_blockheight: deadline,
        });
        self.act(hash, &rec.action, Verdict::Fail(Some("2002".into())))
            .await;
        self.resolved_held(id);
    }

    /// Carries out a verdict.
    async fn act(self: &Lightning, hash: &PaymentHash, action: &HeldAction, v: Verdict) {
        match action {
            HeldAction::Forward {
                intercept_id,
                next_scid,
                outbound_msat,
            } => {
                let Ok(raw) = parse_hash(intercept_id) else {
                    return;
                };
                let iid = InterceptId(raw);
                match v {
                    Verdict::Continue => {
                        let chans = self.manager.list_channels();
                        let next = next_channel(&chans, *next_scid);
                        self.forward_intercepted(intercept_id, iid, next, *outbound_msat);
                    }
                    Verdict::ContinueWith(r) if !r.unsupported.is_empty() => {
                        self.log.unusual(&format!(
                            "htlc_accepted replaced the {} of forward {intercept_id}: LDK forwards the onion it received and cannot rewrite it, failing the HTLC back",
                            r.unsupported.join(" and ")
                        ));
                        self.fail_intercepted(intercept_id, iid, "unsupported replacement");
                        self.peers.process_events();
                    }
                    Verdict::ContinueWith(r) => {
                        let chans = self.manager.list_channels();
                        let next = match &r.forward_to {
                            Some(id) => {
                                let c = chans.iter().find(|c| hex(&c.channel_id.0) == *id);
                                if c.is_none() {
                                    self.log.unusual(&format!(
                                        "htlc_accepted asked to forward {intercept_id} to channel {id}, which is not ours: failing it back"
                                    ));
                                }
                                c
                            }
                            None => next_channel(&chans, *next_scid),
                        };
                        self.forward_intercepted(intercept_id, iid, next, *outbound_msat);
                    }
                    Verdict::Fail(_) => {
                        self.fail_intercepted(intercept_id, iid, "a plugin failed it");
                        self.peers.process_events();
                    }
                    Verdict::Resolve(_) => {
                        self.log.unusual(&format!(
                            "htlc_accepted answered resolve for forward {intercept_id}: LDK cannot settle an intercepted HTLC without forwarding it, failing it back"
                        ));
                        self.fail_intercepted(
                            intercept_id,
                            iid,
                            "resolve is not possible for forwards",
                        );
                        self.peers.process_events();
                    }
                }
            }
            HeldAction::Receive {
                preimage,
                amount_msat,
                payment_secret,
                keysend,
            } => {
                let mut received = super::receive::Received {
                    amount_msat: *amount_msat,
                    payment_secret: payment_secret.as_deref().and_then(|s| parse_hash(s).ok()),
                    keysend: keysend.clone(),
                    invoice_msat: None,
                };
                let v = match v {
                    Verdict::ContinueWith(mut r) => {
                        if r.forward_to.is_some() {
                            r.unsupported.push("forward_to");
                        }
                        if r.unsupported.is_empty() {
                            received.invoice_msat = r.invoice_msat;
                            Verdict::Continue
                        } else {
                            self.log.unusual(&format!(
                                "htlc_accepted replaced the {} of payment {}: LDK reads a payment's onion itself and cannot forward a payment to us, failing it",
                                r.unsupported.join(" and "),
                                hex(&hash.0)
                            ));
                            Verdict::Fail(None)
                        }
                    }
                    v => v,
                };
                match v {
                    Verdict::Fail(msg) => {
                        self.manager
                            .fail_htlc_backwards_with_reason(hash, failure_code(msg.as_deref()));
                    }
                    Verdict::Resolve(key) => {
                        if sha256::Hash::hash(&key).to_byte_array() == hash.0 {
                            if let Some(description) = &received.keysend {
                                self.record_keysend(hash, key, description).await;
                            }
                            self.claim(super::invoices::Claim {
                                hash: hash.0,
                                preimage: key,
                                amount_msat: received.amount_msat,
                                payment_secret: received.payment_secret,
                                invoice_msat: None,
                            })
                            .await;
                        } else {
                            self.log.unusual(&format!(
                                "htlc_accepted resolved {} with a payment_key that does not match: failing it",
                                hex(&hash.0)
                            ));
                            self.manager.fail_htlc_backwards(hash);
                        }
                    }
                    Verdict::Continue | Verdict::ContinueWith(_) => {
                        let known = preimage.as_deref().and_then(|p| parse_hash(p).ok());
                        self.receive_continue(hash, known, received).await;
                    }
                }
                self.peers.process_events();
            }
        }
    }

    /// Decides again the HTLCs recorded before a restart and not known to be decided
    /// (offering them to `htlc_accepted` when a plugin registered it; called once the
    /// plugins have all answered `init`, which precedes the engine's start).
    pub(crate) async fn replay_held(self: &Arc<Self>) {
        let rows = self
            .store
            .with(|c| {
                let mut st = c.prepare(
                    "SELECT id, payment_hash, payload, deadline_height FROM held_htlcs ORDER BY created_at",
                )?;
                let rows = st
                    .query_map([], |r| {
                        Ok((
                            r.get::<_, String>(0)?,
                            r.get::<_, Vec<u8>>(1)?,
                            r.get::<_, String>(2)?,
                            r.get::<_, u32>(3)?,
                        ))
                    })?
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(rows)
            })
            .await
            .unwrap_or_default();
        for (id, hash, payload, deadline) in rows {
            let (Ok(rec), Ok(hash)) = (
                serde_json::from_str::<HeldRecord>(&payload),
                <[u8; 32]>::try_from(hash.as_slice()),
            ) else {
                self.log
                    .broken(&format!("held HTLC {id}: unreadable record, dropped"));
                self.drop_held_record(&id).await;
                continue;
            };
            let hash = PaymentHash(hash);
            // Decided and stored just before the stop, with the record still there: the
            // HTLC has left the channels, nothing to do.
            if matches!(rec.action, HeldAction::Receive { .. })
                && self.inbound_parts(&hash).is_empty()
            {
                self.drop_held_record(&id).await;
                continue;
            }
            let ask = self.port.asks(Question::HtlcAccepted(rec.action.kind()));
            self.log.info(&format!(
                "Deciding HTLC {id} again after the restart{}",
                if ask {
                    " (offered to htlc_accepted)"
                } else {
                    ""
                }
            ));
            self.held
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(id.clone(), deadline);
            let me = self.clone();
            tokio::spawn(async move { me.decide(id, hash, rec, deadline, ask).await });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_failure_fails_the_payment_else_resolve_else_continue() {
        use Verdict::*;
        assert_eq!(combine(&[Continue, Continue]), Continue);
        assert_eq!(combine(&[Continue, Resolve([1; 32])]), Resolve([1; 32]));
        assert_eq!(
            combine(&[Resolve([1; 32]), Fail(Some("2002".into()))]),
            Fail(Some("2002".into()))
        );
        assert_eq!(combine(&[]), Continue);
    }

    #[test]
    fn failure_messages_map_to_what_ldk_can_send() {
        assert!(matches!(
            failure_code(Some("2002")),
            FailureCode::TemporaryNodeFailure
        ));
        // Anything else, including a plugin's non-ASCII failure_message (invoice_payment takes
        // any string; it must not panic the payment path, as seen while writing the fuzz
        // targets), is incorrect_or_unknown_payment_details.
        for other in [
            Some("400f0000000000000001"),
            Some("zz"),
            Some("ab\u{20ac}cd"),
            None,
        ] {
            assert!(
                matches!(
                    failure_code(other),
                    FailureCode::IncorrectOrUnknownPaymentDetails
                ),
                "{other:?}"
            );
        }
    }

    #[test]
    fn non_hex_failure_messages_are_errors_not_panics() {
        // Regression: a plugin's invoice_payment answer whose failure_message is not hex
        // reached a string slice that split a multi-byte character and panicked.
        for bad in [
            "a\u{e9}\u{20ac}x",
            "\u{20ac}\u{20ac}",
            "zz",
            "20",
            "2002z",
            "",
        ] {
            assert!(parse_failure_message(bad).is_err(), "{bad:?}");
            assert!(matches!(
                failure_code(Some(bad)),
                FailureCode::IncorrectOrUnknownPaymentDetails
            ));
        }
        assert_eq!(parse_failure_message("2002"), Ok(0x2002));
        assert_eq!(parse_failure_message("400F0000"), Ok(0x400f));
        // 64 bytes that are not 64 ASCII hex digits.
        let wide = "\u{20ac}".repeat(21) + "a";
        assert_eq!(wide.len(), 64);
        assert!(parse_hash(&wide).is_err());
        assert_eq!(parse_hash(&"ab".repeat(32)), Ok([0xab; 32]));
    }
}
