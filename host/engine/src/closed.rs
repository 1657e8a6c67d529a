//! Closed channels, kept visible the way CLN keeps them.
//!
//! LDK drops a channel from `list_channels()` the moment it closes, but CLN keeps showing it
//! in `listpeerchannels` (and `listpeers`, `listfunds`, `getinfo`'s inactive count) while it
//! resolves on chain: `CLOSINGD_COMPLETE` after a mutual close until the closing transaction
//! confirms, `AWAITING_UNILATERAL` after we broadcast our commitment until it confirms, then
//! `ONCHAIN`. It forgets the channel once nothing is left to claim and 100 blocks have passed;
//! from then on the channel is listed by `listclosedchannels` only.
//!
//! So that the record is complete although LDK has already dropped the channel, the engine
//! keeps a snapshot of every open channel's LDK details (in the [`Closed`] service,
//! refreshed at start, at `ChannelPending`/`ChannelReady`, every second by the engine loop
//! and before `close`), together with the least and most we ever had in it. `Event::ChannelClosed` turns the snapshot into a row
//! of the `closed_channels` table; [`ClosedWatch`], a block listener, moves rows to `ONCHAIN`
//! when a block spends their funding output and forgets them when their monitor reports no
//! claimable balance 100 blocks after that. Closing transactions we broadcast are taken from
//! the broadcaster's feed as soon as they are handed to it (txid and fee before any block).

use fulgur_base::hex;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use bitcoin::block::Header;
use bitcoin::secp256k1::PublicKey;
use fulgur_store::sql::{Connection, params};
use lightning::chain::Listen;
use lightning::chain::transaction::TransactionData;
use lightning::events::ClosureReason;
use lightning::ln::channel_state::ChannelDetails;
use lightning::ln::types::ChannelId;
use lightning::util::ser::{Readable, Writeable};

use super::port::{Notice, Port, StateChange};
use super::{Lightning, lock};
use crate::log::SourceLog;
use crate::store::{Store, StoreError};
use fulgur_base::clock::Clock;

/// CLN forgets a resolved channel this many blocks after its close.
pub const FORGET_AFTER_BLOCKS: u32 = 100;

/// The state of a closed channel, with CLN's names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClosedState {
    /// Closed cooperatively; the closing transaction has not confirmed yet.
    ClosingdComplete,
    /// We broadcast our commitment; it has not confirmed yet.
    AwaitingUnilateral,
    /// The funding output is spent in a block; outputs are resolving.
    Onchain,
    /// Forgotten (only in `listclosedchannels`); the state `channel_state_changed` ends with.
    Closed,
}

impl ClosedState {
    const ALL: [ClosedState; 4] = [
        ClosedState::ClosingdComplete,
        ClosedState::AwaitingUnilateral,
        ClosedState::Onchain,
        ClosedState::Closed,
    ];

    /// CLN's name (as stored, and in `listpeerchannels` and `channel_state_changed`).
    pub fn as_str(self) -> &'static str {
        match self {
            ClosedState::ClosingdComplete => "CLOSINGD_COMPLETE",
            ClosedState::AwaitingUnilateral => "AWAITING_UNILATERAL",
            ClosedState::Onchain => "ONCHAIN",
            ClosedState::Closed => "CLOSED",
        }
    }

    /// The state named `s`.
    pub fn parse(s: &str) -> Option<ClosedState> {
        ClosedState::ALL.into_iter().find(|c| c.as_str() == s)
    }
}

fulgur_store::text_enum!(ClosedState);

/// One row of `closed_channels`.
#[derive(Debug, Clone, PartialEq)]
pub struct ClosedChannel {
    /// Hex channel id.
    pub channel_id: String,
    /// The peer (unknown only for channels LDK serialized before 0.0.117).
    pub peer_id: Option<String>,
    /// `BLOCKxTXxOUT`, if the channel was confirmed.
    pub short_channel_id: Option<String>,
    /// Funding transaction.
    pub funding_txid: String,
    /// Funding output.
    pub funding_outnum: u32,
    /// Whether we opened it.
    pub opener_local: bool,
    /// `local` or `remote`, when known.
    pub closer: Option<String>,
    /// CLN's `close_cause`.
    pub close_cause: String,
    /// LDK's reason, as text.
    pub reason: String,
    /// Where it is in its resolution.
    pub state: ClosedState,
    /// Capacity.
    pub total_msat: u64,
    /// Our balance when it closed.
    pub final_to_us_msat: u64,
    /// Least we ever had (as far as the snapshots saw).
    pub min_to_us_msat: u64,
    /// Most we ever had (as far as the snapshots saw).
    pub max_to_us_msat: u64,
    /// The transaction that spent the funding output (closing or commitment), once known.
    pub closing_txid: Option<String>,
    /// Its fee, when we saw the whole transaction.
    pub closing_fee_msat: Option<u64>,
    /// Our height when LDK closed it.
    pub closed_height: u32,
    /// Height of the block that spent the funding output.
    pub spend_height: Option<u32>,
    /// Height at which it was forgotten (moved to `listclosedchannels`).
    pub forgotten_height: Option<u32>,
    /// Unix time of the close.
    pub closed_at: u64,
    /// What it looked like while open.
    pub snapshot: OpenView,
}

/// A closed channel as it was last seen open: what `listpeerchannels` and
/// `listclosedchannels` keep showing of it.
#[derive(Debug, Clone, PartialEq)]
pub enum OpenView {
    /// No snapshot was taken before it closed.
    None,
    /// LDK's details of the open channel.
    Details(Box<ChannelDetails>),
    /// A `listpeerchannels` entry (JSON text) stored by fulgurd before it kept LDK's
    /// details; shown as it was.
    Legacy(String),
}

/// How [`OpenView::Details`] is stored: this prefix, then LDK's serialization in hex.
const DETAILS_PREFIX: &str = "ldk:";

impl OpenView {
    /// The `snapshot` column's text.
    pub fn to_column(&self) -> String {
        match self {
            OpenView::None => "{}".into(),
            OpenView::Details(d) => format!("{DETAILS_PREFIX}{}", hex(&d.encode())),
            OpenView::Legacy(s) => s.clone(),
        }
    }

    /// Reads the `snapshot` column; what cannot be read shows as no snapshot.
    pub fn from_column(s: &str) -> OpenView {
        if let Some(h) = s.strip_prefix(DETAILS_PREFIX) {
            return fulgur_base::unhex(h)
                .and_then(|b| ChannelDetails::read(&mut &b[..]).ok())
                .map_or(OpenView::None, |d| OpenView::Details(Box::new(d)));
        }
        match s.trim() {
            "" | "{}" => OpenView::None,
            _ => OpenView::Legacy(s.to_string()),
        }
    }
}

impl ClosedChannel {
    /// The height forgetting counts from: the spend's block, else the close.
    pub fn resolved_from(&self) -> u32 {
        self.spend_height.unwrap_or(self.closed_height)
    }

    /// CLN's rule: forgotten once nothing is left to claim and 100 blocks have passed.
    pub fn should_forget(&self, tip: u32, balances_left: bool) -> bool {
        self.forgotten_height.is_none()
            && !balances_left
            && tip >= self.resolved_from().saturating_add(FORGET_AFTER_BLOCKS)
    }

    /// The funding outpoint.
    pub fn funding_outpoint(&self) -> Option<bitcoin::OutPoint> {
        Some(bitcoin::OutPoint {
            txid: self.funding_txid.parse().ok()?,
            vout: self.funding_outnum,
        })
    }

    fn ldk_channel_id(&self) -> Option<ChannelId> {
        let b = fulgur_base::unhex(&self.channel_id)?;
        Some(ChannelId(b.try_into().ok()?))
    }
}

const COLUMNS: &str = "channel_id, peer_id, short_channel_id, funding_txid, funding_outnum, \
    opener, closer, close_cause, reason, state, total_msat, final_to_us_msat, min_to_us_msat, \
    max_to_us_msat, closing_txid, closing_fee_msat, closed_height, spend_height, \
    forgotten_height, closed_at, snapshot";

fn from_row(r: &fulgur_store::sql::Row<'_>) -> fulgur_store::sql::Result<ClosedChannel> {
    let opener: String = r.get(5)?;
    let snapshot: String = r.get(20)?;
    Ok(ClosedChannel {
        channel_id: r.get(0)?,
        peer_id: r.get(1)?,
        short_channel_id: r.get(2)?,
        funding_txid: r.get(3)?,
        funding_outnum: r.get(4)?,
        opener_local: opener == "local",
        closer: r.get(6)?,
        close_cause: r.get(7)?,
        reason: r.get(8)?,
        state: r.get(9)?,
        total_msat: r.get::<_, i64>(10)? as u64,
        final_to_us_msat: r.get::<_, i64>(11)? as u64,
        min_to_us_msat: r.get::<_, i64>(12)? as u64,
        max_to_us_msat: r.get::<_, i64>(13)? as u64,
        closing_txid: r.get(14)?,
        closing_fee_msat: r.get::<_, Option<i64>>(15)?.map(|v| v as u64),
        closed_height: r.get(16)?,
        spend_height: r.get(17)?,
        forgotten_height: r.get(18)?,
        closed_at: r.get::<_, i64>(19)? as u64,
        snapshot: OpenView::from_column(&snapshot),
    })
}

/// Records a closed channel; a second record of the same channel (LDK replaying the event)
/// is ignored. Returns whether a row was written.
pub fn insert(c: &Connection, r: &ClosedChannel) -> Result<bool, StoreError> {
    let n = c
        .prepare_cached(&format!(
            "INSERT INTO closed_channels ({COLUMNS}, seq) VALUES \
             (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, \
              ?19, ?20, ?21, (SELECT COALESCE(MAX(seq), 0) + 1 FROM closed_channels)) \
             ON CONFLICT (channel_id) DO NOTHING"
        ))?
        .execute(params![
            r.channel_id,
            r.peer_id,
            r.short_channel_id,
            r.funding_txid,
            r.funding_outnum,
            if r.opener_local { "local" } else { "remote" },
            r.closer,
            r.close_cause,
            r.reason,
            r.state,
            r.total_msat as i64,
            r.final_to_us_msat as i64,
            r.min_to_us_msat as i64,
            r.max_to_us_msat as i64,
            r.closing_txid,
            r.closing_fee_msat.map(|v| v as i64),
            r.closed_height,
            r.spend_height,
            r.forgotten_height,
            r.closed_at as i64,
            r.snapshot.to_column(),
        ])?;
    Ok(n == 1)
}

/// Writes the fields that change after the close (state, closing transaction, heights).
pub fn update(c: &Connection, r: &ClosedChannel) -> Result<(), StoreError> {
    c.prepare_cached(
        "UPDATE closed_channels SET state = ?2, closing_txid = ?3, closing_fee_msat = ?4, \
         spend_height = ?5, forgotten_height = ?6 WHERE channel_id = ?1",
    )?
    .execute(params![
        r.channel_id,
        r.state,
        r.closing_txid,
        r.closing_fee_msat.map(|v| v as i64),
        r.spend_height,
        r.forgotten_height,
    ])?;
    Ok(())
}

/// Closed channels, oldest close first: those not forgotten yet (`forgotten == false`, shown
/// by `listpeerchannels`) or forgotten ones (`listclosedchannels`), optionally of one peer.
pub fn list(
    c: &Connection,
    forgotten: bool,
    peer: Option<&str>,
) -> Result<Vec<ClosedChannel>, StoreError> {
    let sql = format!(
        "SELECT {COLUMNS} FROM closed_channels WHERE (forgotten_height IS NOT NULL) = ?1 \
         AND (CAST(?2 AS TEXT) IS NULL OR peer_id = ?2) ORDER BY closed_at, seq"
    );
    let mut st = c.prepare_cached(&sql)?;
    let rows = st.query_map(params![forgotten, peer], from_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// What kind of close LDK's reason describes: (state shown after it, closer).
pub fn close_kind(r: &ClosureReason) -> (ClosedState, Option<&'static str>) {
    use ClosureReason as R;
    match r {
        R::LocallyInitiatedCooperativeClosure => (ClosedState::ClosingdComplete, Some("local")),
        R::CounterpartyInitiatedCooperativeClosure => {
            (ClosedState::ClosingdComplete, Some("remote"))
        }
        R::LegacyCooperativeClosure => (ClosedState::ClosingdComplete, None),
        // A commitment transaction confirmed without our asking: the peer's, as ours would
        // have been broadcast after a HolderForceClosed first.
        R::CommitmentTxConfirmed => (ClosedState::Onchain, Some("remote")),
        // The funding never confirmed or was never broadcast: nothing to resolve on chain.
        R::FundingTimedOut
        | R::FundingBatchClosure
        | R::CounterpartyCoopClosedUnfundedChannel
        | R::LocallyCoopClosedUnfundedChannel
        | R::DisconnectedPeer
        | R::HolderForceClosed {
            broadcasted_latest_txn: Some(false),
            ..
        } => (ClosedState::Closed, None),
        // The peer sent an error: LDK broadcasts our commitment in answer.
        R::CounterpartyForceClosed { .. } => (ClosedState::AwaitingUnilateral, Some("remote")),
        // We (the user, or LDK protecting us) broadcast our commitment.
        _ => (ClosedState::AwaitingUnilateral, Some("local")),
    }
}

/// The fee of `tx`, a transaction spending only the funding output of `total_msat`.
fn closing_fee_msat(tx: &bitcoin::Transaction, total_msat: u64) -> Option<u64> {
    if tx.input.len() != 1 {
        return None;
    }
    let out: u64 = tx.output.iter().map(|o| o.value.to_sat()).sum();
    (total_msat / 1000).checked_sub(out).map(|f| f * 1000)
}

/// A snapshot of an open channel: its details, and the least and most we had in it.
#[derive(Clone)]
struct Snap {
    details: ChannelDetails,
    min: u64,
    max: u64,
    /// Whether it was ever seen fully open. LDK's `is_channel_ready` turns false again once
    /// a shutdown starts, so the last details alone would name a closing channel's state
    /// before the close as `CHANNELD_AWAITING_LOCKIN`.
    ready: bool,
}

/// Whether `d` shows a fully opened channel: ready now, or with its final short channel id
/// (which LDK gives only once the funding is deep enough, and keeps during a shutdown).
fn fully_open(d: &ChannelDetails) -> bool {
    d.is_channel_ready || d.short_channel_id.is_some()
}

/// The closed channels service: the `closed_channels` table, the records still resolving
/// (what `listpeerchannels` shows), the snapshots of open channels a close turns into a
/// record, the closing transactions seen before their close, and the
/// `channel_state_changed` notifications of closed channels. What needs LDK's monitors
/// (whether a record can be forgotten, spends seen while we were down) stays on
/// [`Lightning`].
///
/// Its three locks are leaves: each is taken alone, never across an await or a database
/// call.
pub struct Closed {
    store: Store,
    clock: Arc<dyn Clock>,
    port: Arc<dyn Port>,
    log: SourceLog,
    snapshots: Mutex<HashMap<ChannelId, Snap>>,
    /// Closing transactions handed to the broadcaster: funding outpoint → (txid, fee).
    spends: Mutex<HashMap<bitcoin::OutPoint, (String, Option<u64>)>>,
    /// Records not forgotten yet (what `listpeerchannels` shows), oldest first.
    active: Mutex<Vec<ClosedChannel>>,
}

/// What LDK said of a channel it closed (`Event::ChannelClosed` with a funding output).
pub(crate) struct Closure<'a> {
    pub(crate) channel_id: &'a ChannelId,
    pub(crate) peer: Option<PublicKey>,
    pub(crate) reason: &'a ClosureReason,
    pub(crate) cause: &'a str,
    pub(crate) capacity_sats: Option<u64>,
    pub(crate) balance_msat: Option<u64>,
    pub(crate) funding: bitcoin::OutPoint,
}

impl Closed {
    /// The service over `store`, showing the records not forgotten.
    pub async fn open(
        store: Store,
        clock: Arc<dyn Clock>,
        port: Arc<dyn Port>,
        log: SourceLog,
    ) -> Result<Closed, StoreError> {
        let active = store.with(|c| list(c, false, None)).await?;
        Ok(Closed {
            store,
            clock,
            port,
            log,
            snapshots: Mutex::default(),
            spends: Mutex::default(),
            active: Mutex::new(active),
        })
    }

    /// The records `listpeerchannels` shows.
    pub fn active(&self) -> Vec<ClosedChannel> {
        lock(&self.active).clone()
    }

    /// Refreshes the snapshots of open channels from `views` (details, what is ours).
    fn snapshot(&self, views: Vec<(ChannelDetails, u64)>) {
        // A channel that left the list keeps its snapshot until its `ChannelClosed` takes
        // it: LDK may close it between this refresh and the event.
        let mut snaps = lock(&self.snapshots);
        for (details, to_us) in views {
            match snaps.entry(details.channel_id) {
                std::collections::hash_map::Entry::Occupied(mut o) => {
                    let s = o.get_mut();
                    s.min = s.min.min(to_us);
                    s.max = s.max.max(to_us);
                    s.ready |= fully_open(&details);
                    s.details = details;
                }
                std::collections::hash_map::Entry::Vacant(v) => {
                    v.insert(Snap {
                        ready: fully_open(&details),
                        details,
                        min: to_us,
                        max: to_us,
                    });
                }
            }
        }
    }

    /// Forgets the snapshot of a channel whose close leaves no record (one that never had
    /// its funding, or a cancelled open).
    pub(crate) fn drop_snapshot(&self, id: &ChannelId) {
        lock(&self.snapshots).remove(id);
    }

    /// Channels that left LDK's list (`open` holds the ids still in it) but whose
    /// `ChannelClosed` has not been recorded yet, as last seen: for a moment after a close,
    /// only their snapshot knows them.
    fn unrecorded(&self, open: &[ChannelId]) -> Vec<ChannelDetails> {
        let recorded: Vec<String> = lock(&self.active)
            .iter()
            .map(|r| r.channel_id.clone())
            .collect();
        lock(&self.snapshots)
            .values()
            .filter(|s| !open.contains(&s.details.channel_id))
            .filter(|s| !recorded.contains(&hex(&s.details.channel_id.0)))
            .map(|s| s.details.clone())
            .collect()
    }

    /// A transaction handed to the broadcaster: if it spends a channel's funding output, its
    /// txid and fee go in that channel's record (or wait for it).
    fn closing_broadcast(&self, tx: &bitcoin::Transaction) {
        let [input] = tx.input.as_slice() else {
            return;
        };
        let op = input.previous_output;
        let txid = tx.compute_txid().to_string();
        // Our open channels' funding outputs (the close may not be recorded yet) ...
        let total = lock(&self.snapshots).values().find_map(|s| {
            (s.details.funding_txo.map(|f| f.into_bitcoin_outpoint()) == Some(op))
                .then_some(s.details.channel_value_satoshis * 1000)
        });
        // ... and closed ones still waiting for their closing transaction.
        let mut changed = None;
        {
            let mut active = lock(&self.active);
            if let Some(r) = active
                .iter_mut()
                .find(|r| r.funding_outpoint() == Some(op) && r.spend_height.is_none())
            {
                r.closing_txid = Some(txid.clone());
                r.closing_fee_msat = closing_fee_msat(tx, r.total_msat);
                changed = Some(r.clone());
            }
        }
        if let Some(r) = changed {
            self.update(&r);
        } else if let Some(total) = total {
            lock(&self.spends).insert(op, (txid, closing_fee_msat(tx, total)));
        }
    }

    fn update(&self, r: &ClosedChannel) {
        if let Err(err) = self.store.with_sync(|c| update(c, r)) {
            self.log.broken(&format!(
                "cannot update closed channel {}: {err}",
                r.channel_id
            ));
        }
    }

    /// Records a channel LDK closed at height `tip` and sends the `channel_state_changed`
    /// CLN would. `to_us` is what we have in a channel by its last details (when LDK gave no
    /// balance). Err: the database failed (replay the event).
    async fn record(
        &self,
        c: Closure<'_>,
        tip: u32,
        to_us: impl FnOnce(&ChannelDetails) -> u64,
    ) -> Result<(), StoreError> {
        // The snapshot stays until the record is listed, so that `listpeerchannels` shows
        // the channel all along (see `unrecorded`).
        let snap = lock(&self.snapshots).get(c.channel_id).cloned();
        let (state, closer) = close_kind(c.reason);
        let details = snap.as_ref().map(|s| &s.details);
        let total_msat = c
            .capacity_sats
            .or_else(|| details.map(|d| d.channel_value_satoshis))
            .map_or(0, |s| s * 1000);
        let final_to_us = c
            .balance_msat
            .or_else(|| details.map(to_us))
            .unwrap_or(0)
            .min(total_msat);
        let opener_local = details.is_some_and(|d| d.is_outbound);
        // The state we last announced: lock-in, or normal (LDK's shutdown steps are not
        // announced).
        let old = match &snap {
            Some(s) if !s.ready => "CHANNELD_AWAITING_LOCKIN",
            _ => "CHANNELD_NORMAL",
        };
        let spent = lock(&self.spends).remove(&c.funding);
        let r = ClosedChannel {
            channel_id: hex(&c.channel_id.0),
            peer_id: c.peer.map(|p| p.to_string()),
            short_channel_id: details
                .and_then(|d| d.short_channel_id)
                .map(super::scid_string),
            funding_txid: c.funding.txid.to_string(),
            funding_outnum: c.funding.vout,
            opener_local,
            closer: closer.map(str::to_string),
            close_cause: c.cause.to_string(),
            reason: c.reason.to_string(),
            state,
            total_msat,
            final_to_us_msat: final_to_us,
            min_to_us_msat: snap
                .as_ref()
                .map_or(final_to_us, |s| s.min.min(final_to_us)),
            max_to_us_msat: snap
                .as_ref()
                .map_or(final_to_us, |s| s.max.max(final_to_us)),
            closing_txid: spent.as_ref().map(|s| s.0.clone()),
            closing_fee_msat: spent.and_then(|s| s.1),
            closed_height: tip,
            spend_height: (state == ClosedState::Onchain).then_some(tip),
            forgotten_height: (state == ClosedState::Closed).then_some(tip),
            closed_at: self.clock.unix_now(),
            snapshot: snap.as_ref().map_or(OpenView::None, |s| {
                OpenView::Details(Box::new(s.details.clone()))
            }),
        };
        let row = r.clone();
        let fresh = self.store.with(move |c| insert(c, &row)).await?;
        if fresh && state != ClosedState::Closed {
            lock(&self.active).push(r.clone());
        }
        lock(&self.snapshots).remove(c.channel_id);
        if !fresh {
            return Ok(());
        }
        self.notify_state(&r, old, state.as_str(), c.cause, &c.reason.to_string());
        Ok(())
    }

    /// `channel_state_changed` for a closed channel (CLN's payload).
    fn notify_state(&self, r: &ClosedChannel, old: &str, new: &str, cause: &str, msg: &str) {
        let Some(peer) = &r.peer_id else { return };
        let change = StateChange {
            peer_id: peer.clone(),
            channel_id: r.channel_id.clone(),
            short_channel_id: r.short_channel_id.clone(),
            old_state: Some(old.into()),
            new_state: new.into(),
            cause: cause.into(),
            message: msg.into(),
        };
        super::history::record_state_change(&self.store, &self.log, &change, self.clock.unix_ms());
        self.port.tell(Notice::ChannelStateChanged(change));
    }

    /// The records whose funding spend has not been seen yet.
    fn awaiting_spend(&self) -> Vec<ClosedChannel> {
        lock(&self.active)
            .iter()
            .filter(|r| r.spend_height.is_none())
            .cloned()
            .collect()
    }

    /// The funding output of `channel_id` was spent (by `tx` if known) at `height`.
    fn mark_onchain(&self, channel_id: &str, tx: Option<&bitcoin::Transaction>, height: u32) {
        let changed = {
            let mut active = lock(&self.active);
            let Some(r) = active.iter_mut().find(|r| r.channel_id == channel_id) else {
                return;
            };
            if r.spend_height.is_some() {
                return;
            }
            let old = std::mem::replace(&mut r.state, ClosedState::Onchain);
            r.spend_height = Some(height);
            if let Some(tx) = tx {
                r.closing_txid = Some(tx.compute_txid().to_string());
                r.closing_fee_msat = closing_fee_msat(tx, r.total_msat);
            }
            (r.clone(), old)
        };
        let (r, old) = changed;
        self.update(&r);
        if old != ClosedState::Onchain {
            let msg = match &r.closing_txid {
                Some(t) => format!("Funding output spent by {t} at block {height}"),
                None => format!("Funding output spent (seen at block {height})"),
            };
            self.notify_state(&r, old.as_str(), "ONCHAIN", "onchain", &msg);
        }
    }

    /// Forgets `r` at `height`: it leaves `listpeerchannels` for `listclosedchannels`.
    fn forget(&self, mut r: ClosedChannel, height: u32) {
        let old = std::mem::replace(&mut r.state, ClosedState::Closed);
        r.forgotten_height = Some(height);
        lock(&self.active).retain(|x| x.channel_id != r.channel_id);
        self.update(&r);
        self.log.info(&format!(
            "Channel {} resolved {} blocks ago: forgotten (now in listclosedchannels)",
            r.channel_id,
            height - r.resolved_from()
        ));
        self.notify_state(&r, old.as_str(), "CLOSED", "onchain", "Forgetting channel");
    }
}

/// Block listener: spends of closed channels' funding outputs, and forgetting.
pub struct ClosedWatch(pub Weak<Lightning>);

impl Listen for ClosedWatch {
    fn filtered_block_connected(&self, _header: &Header, txdata: &TransactionData, height: u32) {
        if let Some(e) = self.0.upgrade() {
            e.closed_block(txdata, height);
        }
    }

    fn blocks_disconnected(&self, _fork_point: lightning::chain::BlockLocator) {
        // A reorganisation that unconfirms a closing transaction is not undone here: the
        // state stays ONCHAIN (the monitor still resolves the channel correctly).
    }
}

impl Lightning {
    /// Channels closed by LDK a moment ago, whose close is not recorded yet (so
    /// `listpeerchannels` never loses a channel between LDK's list and the closed ones),
    /// as last seen open.
    pub fn closing_unrecorded(&self, open: &[ChannelDetails]) -> Vec<ChannelDetails> {
        let ids: Vec<ChannelId> = open.iter().map(|c| c.channel_id).collect();
        self.closed.unrecorded(&ids)
    }

    /// Refreshes the snapshots of open channels.
    pub fn snapshot_channels(&self) {
        let views: Vec<(ChannelDetails, u64)> = self
            .manager
            .list_channels()
            .into_iter()
            .filter(|c| c.funding_txo.is_some())
            .map(|c| {
                let to_us = self.to_us_msat(&c);
                (c, to_us)
            })
            .collect();
        self.closed.snapshot(views);
    }

    /// Starts following the broadcaster's feed for closing transactions.
    pub fn watch_closing_broadcasts(self: &Arc<Self>) {
        let mut feed = self.chain.broadcaster().watch();
        let me = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                let tx = match feed.recv().await {
                    Ok(tx) => tx,
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(_) => return,
                };
                let Some(e) = me.upgrade() else { return };
                e.closed.closing_broadcast(&tx);
            }
        });
    }

    /// Records a channel LDK closed (`Event::ChannelClosed` with a funding output) and sends
    /// the `channel_state_changed` CLN would. Err: the database failed (replay the event).
    pub(crate) async fn record_closed(&self, c: Closure<'_>) -> Result<(), StoreError> {
        let tip = self.chain.tip().map_or(0, |(_, h)| h);
        self.closed.record(c, tip, |d| self.to_us_msat(d)).await
    }

    /// Whether the channel's monitor still reports anything to claim.
    pub fn balances_left(&self, r: &ClosedChannel) -> bool {
        let Some(id) = r.ldk_channel_id() else {
            return false;
        };
        self.monitor
            .get_monitor(id)
            .is_ok_and(|m| something_to_claim(&m.get_claimable_balances()))
    }

    /// Whether the channel's funding spend has confirmed, as its monitor sees it: balances
    /// of the resolution, none of the "if it closed now" kind. (Used at start, for spends
    /// confirmed while we were down; `None` when the monitor cannot tell.)
    fn monitor_saw_spend(&self, r: &ClosedChannel) -> Option<bool> {
        use lightning::chain::channelmonitor::Balance;
        let m = self.monitor.get_monitor(r.ldk_channel_id()?).ok()?;
        let b = m.get_claimable_balances();
        if b.is_empty() {
            return None;
        }
        Some(
            !b.iter()
                .any(|b| matches!(b, Balance::ClaimableOnChannelClose { .. })),
        )
    }

    /// At start: closes whose funding spend confirmed while the node was down.
    pub fn closed_catch_up(&self) {
        let tip = self.chain.tip().map_or(0, |(_, h)| h);
        for r in self.closed.awaiting_spend() {
            if self.monitor_saw_spend(&r) == Some(true) {
                self.closed.mark_onchain(&r.channel_id, None, tip);
            }
        }
    }

    /// A block: funding spends of closed channels, then channels to forget.
    fn closed_block(&self, txdata: &TransactionData, height: u32) {
        for r in self.closed.awaiting_spend() {
            let Some(op) = r.funding_outpoint() else {
                continue;
            };
            if let Some((_, tx)) = txdata
                .iter()
                .find(|(_, tx)| tx.input.iter().any(|i| i.previous_output == op))
            {
                self.closed.mark_onchain(&r.channel_id, Some(tx), height);
            }
        }
        self.forget_resolved_closed(height);
    }

    /// Forgets the closed channels resolved at least 100 blocks before `height` whose
    /// monitors have nothing left to claim. Run at each block and by the sweep duty, since a
    /// claim can resolve between blocks, after the last block that would have forgotten it.
    pub(crate) fn forget_resolved_closed(&self, height: u32) {
        let due: Vec<ClosedChannel> = self
            .closed
            .active()
            .into_iter()
            .filter(|r| r.should_forget(height, false))
            .filter(|r| !self.balances_left(r))
            .collect();
        for r in due {
            self.closed.forget(r, height);
        }
    }
}

/// LDK's dust limit for our own outputs (its private `MIN_CHAN_DUST_LIMIT_SATOSHIS`, which
/// every channel it opens or accepts uses as the holder's): a commitment output below it is
/// trimmed.
const HOLDER_DUST_LIMIT_SAT: u64 = 354;

/// Whether a monitor's balances still hold something to claim. When our own commitment
/// confirmed, LDK reports our main output as awaiting its CSV delay even when that output
/// was below dust and so is not on the transaction: nothing will ever be claimed there, and
/// CLN forgets such a channel 100 blocks after the spend, as we do.
pub fn something_to_claim(balances: &[lightning::chain::channelmonitor::Balance]) -> bool {
    use lightning::chain::channelmonitor::{Balance, BalanceSource};
    balances.iter().any(|b| {
        !matches!(
            b,
            Balance::ClaimableAwaitingConfirmations {
                amount_satoshis,
                source: BalanceSource::HolderForceClosed,
                ..
            } if *amount_satoshis < HOLDER_DUST_LIMIT_SAT
        )
    })
}

/// A closed channel for tests: closed cooperatively by us at height 120.
#[cfg(any(test, feature = "samples"))]
pub fn record(id: u8, peer: &str) -> ClosedChannel {
    ClosedChannel {
        channel_id: hex(&[id; 32]),
        peer_id: Some(peer.to_string()),
        short_channel_id: Some("103x1x0".into()),
        funding_txid: hex(&[0xab; 32]),
        funding_outnum: 1,
        opener_local: true,
        closer: Some("local".into()),
        close_cause: "user".into(),
        reason: "Locally initiated cooperative closure".into(),
        state: ClosedState::ClosingdComplete,
        total_msat: 500_000_000,
        final_to_us_msat: 490_000_000,
        min_to_us_msat: 490_000_000,
        max_to_us_msat: 500_000_000,
        closing_txid: None,
        closing_fee_msat: None,
        closed_height: 120,
        spend_height: None,
        forgotten_height: None,
        closed_at: 1_700_000_000 + u64::from(id),
        snapshot: OpenView::Legacy(r#"{"private": true, "alias": {"local": "1x2x3"}}"#.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_trimmed_main_output_of_our_commitment_is_nothing_to_claim() {
        use lightning::chain::channelmonitor::{Balance, BalanceSource};
        let ours = |sat: u64, source| Balance::ClaimableAwaitingConfirmations {
            amount_satoshis: sat,
            confirmation_height: 253,
            source,
        };
        assert!(!something_to_claim(&[]));
        assert!(!something_to_claim(&[ours(
            20,
            BalanceSource::HolderForceClosed
        )]));
        assert!(something_to_claim(&[ours(
            354,
            BalanceSource::HolderForceClosed
        )]));
        assert!(something_to_claim(&[ours(
            20,
            BalanceSource::CounterpartyForceClosed
        )]));
        assert!(something_to_claim(&[
            ours(20, BalanceSource::HolderForceClosed),
            ours(5_000, BalanceSource::CoopClose),
        ]));
    }

    /// `r` spent at 121 by a transaction paying 183 sat of fees, forgotten at 221.
    fn resolved(r: &ClosedChannel) -> ClosedChannel {
        ClosedChannel {
            state: ClosedState::Onchain,
            spend_height: Some(121),
            closing_txid: Some(hex(&[0xcd; 32])),
            closing_fee_msat: Some(183_000),
            forgotten_height: Some(221),
            ..r.clone()
        }
    }
    use crate::store::Store;

    const PEER_A: &str = "0279be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798";
    const PEER_B: &str = "02c6047f9441ed7d6d3045406e95c07cd85c778e4b8cef3ca7abac09b95c709ee5";

    #[tokio::test]
    async fn insert_update_list_and_reload_after_reopen() {
        let path = std::env::temp_dir().join(format!(
            "fulgur-closed-{}-{}.sqlite3",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        let a = record(1, PEER_A);
        let b = record(2, PEER_B);
        {
            let store = Store::open(&path).unwrap();
            let (a2, b2) = (a.clone(), b.clone());
            let fresh = store
                .with(move |c| Ok((insert(c, &a2)?, insert(c, &b2)?, insert(c, &a2)?)))
                .await
                .unwrap();
            // A replayed ChannelClosed writes nothing the second time.
            assert_eq!(fresh, (true, true, false));
            let a3 = resolved(&a);
            store.with(move |c| update(c, &a3)).await.unwrap();
        }
        let store = Store::open(&path).unwrap();
        let (active, gone, of_b, of_a) = store
            .with(|c| {
                Ok((
                    list(c, false, None)?,
                    list(c, true, None)?,
                    list(c, false, Some(PEER_B))?,
                    list(c, false, Some(PEER_A))?,
                ))
            })
            .await
            .unwrap();
        assert_eq!(active, vec![b.clone()]);
        assert_eq!(of_b, vec![b]);
        assert_eq!(gone, vec![resolved(&a)]);
        assert_eq!(of_a, vec![], "A's channel is forgotten");
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn snapshot_column_reads_back_what_was_written_and_old_json() {
        assert_eq!(OpenView::from_column("{}"), OpenView::None);
        assert_eq!(OpenView::from_column(""), OpenView::None);
        assert_eq!(OpenView::from_column("ldk:zz"), OpenView::None);
        let legacy = r#"{"private":false}"#;
        assert_eq!(
            OpenView::from_column(legacy),
            OpenView::Legacy(legacy.into())
        );
        assert_eq!(OpenView::from_column(legacy).to_column(), legacy);
        assert_eq!(OpenView::None.to_column(), "{}");
    }

    #[test]
    fn forget_rule_needs_resolution_and_100_blocks() {
        let mut r = record(3, PEER_A);
        // Counted from the close while the funding spend is unseen ...
        assert!(!r.should_forget(219, false));
        assert!(r.should_forget(220, false));
        assert!(!r.should_forget(400, true), "balances left: kept");
        // ... then from the block that spent the funding output.
        r.spend_height = Some(130);
        assert!(!r.should_forget(229, false));
        assert!(r.should_forget(230, false));
        r.forgotten_height = Some(230);
        assert!(!r.should_forget(500, false), "forgotten once");
    }

    #[test]
    fn close_kinds() {
        use ClosureReason as R;
        assert_eq!(
            close_kind(&R::LocallyInitiatedCooperativeClosure),
            (ClosedState::ClosingdComplete, Some("local"))
        );
        assert_eq!(
            close_kind(&R::CounterpartyInitiatedCooperativeClosure),
            (ClosedState::ClosingdComplete, Some("remote"))
        );
        assert_eq!(
            close_kind(&R::CommitmentTxConfirmed),
            (ClosedState::Onchain, Some("remote"))
        );
        assert_eq!(close_kind(&R::FundingTimedOut), (ClosedState::Closed, None));
        let held = R::HolderForceClosed {
            broadcasted_latest_txn: Some(true),
            message: "user".into(),
        };
        assert_eq!(
            close_kind(&held),
            (ClosedState::AwaitingUnilateral, Some("local"))
        );
    }

    #[tokio::test]
    async fn the_service_records_a_close_then_moves_it_onchain_and_forgets_it() {
        use crate::port::Told;
        use fulgur_base::clock::ManualClock;
        use fulgur_base::log::{Level, Logger, MemoryLog};
        let clock = ManualClock::at(1_800_000_000_000);
        let told = Arc::new(Told::default());
        let store = Store::in_memory().unwrap();
        let log = Logger::at(Level::Debug, Box::new(MemoryLog::default())).source("lightning");
        let closed = Closed::open(store.clone(), clock.clone(), told.clone(), log)
            .await
            .unwrap();
        let id = ChannelId([7; 32]);
        let peer: PublicKey = PEER_A.parse().unwrap();
        let funding = bitcoin::OutPoint {
            txid: "1111111111111111111111111111111111111111111111111111111111111111"
                .parse()
                .unwrap(),
            vout: 1,
        };
        let reason = ClosureReason::HolderForceClosed {
            broadcasted_latest_txn: Some(true),
            message: "closed by us".into(),
        };
        let close = || Closure {
            channel_id: &id,
            peer: Some(peer),
            reason: &reason,
            cause: "user",
            capacity_sats: Some(100_000),
            balance_msat: Some(40_000_000),
            funding,
        };
        closed
            .record(close(), 200, |_| panic!("LDK gave the balance"))
            .await
            .unwrap();
        // The same close again (a replayed event) records nothing new.
        closed.record(close(), 201, |_| 0).await.unwrap();
        let [r] = closed.active().try_into().unwrap();
        assert_eq!(r.state, ClosedState::AwaitingUnilateral);
        assert_eq!(
            (r.total_msat, r.final_to_us_msat),
            (100_000_000, 40_000_000)
        );
        assert_eq!(r.closed_at, 1_800_000_000, "by the service's clock");
        assert_eq!(r.closed_height, 200);

        closed.mark_onchain(&r.channel_id, None, 203);
        assert!(closed.awaiting_spend().is_empty());
        let r = closed.active().remove(0);
        closed.forget(r, 303);
        assert!(closed.active().is_empty());
        let stored = store.with(|c| list(c, true, None)).await.unwrap();
        assert_eq!(stored[0].state, ClosedState::Closed);
        assert_eq!(stored[0].forgotten_height, Some(303));

        let states: Vec<(Option<String>, String)> = told
            .notices()
            .into_iter()
            .filter_map(|n| match n {
                Notice::ChannelStateChanged(c) => Some((c.old_state, c.new_state)),
                _ => None,
            })
            .collect();
        let expect = |o: &str, n: &str| (Some(o.to_string()), n.to_string());
        assert_eq!(
            states,
            vec![
                expect("CHANNELD_NORMAL", "AWAITING_UNILATERAL"),
                expect("AWAITING_UNILATERAL", "ONCHAIN"),
                expect("ONCHAIN", "CLOSED"),
            ]
        );
    }
}
