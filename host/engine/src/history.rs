//! What CLN's `listpeerchannels` tells of a channel's past, which LDK does not keep: the
//! HTLC counters (`in_payments_offered`, `in_fulfilled_msat`, `out_payments_offered`, ...)
//! and the `state_changes` list (migration 12).
//!
//! Counters are bumped as LDK's events come: an HTLC offered to us (a forward intercepted,
//! each part of a payment to us), an HTLC we offer (a forward sent on, each part of our
//! payments), and either one fulfilled (`PaymentForwarded`, `PaymentClaimed`,
//! `PaymentPathSuccessful`). They add up in memory and are written once a second (and at
//! stop), in one relaxed transaction (no fsync), so the payment path pays no database
//! write for them: a crash can lose the last second's counts, never a payment. A state change is recorded
//! wherever the node sends `channel_state_changed` (creations, which have no old state, are
//! not listed, as in CLN).

use std::collections::HashMap;

use fulgur_base::hex;
use fulgur_base::log::SourceLog;
use fulgur_store::sql::{Connection, params};
use lightning::ln::types::ChannelId;

use super::Lightning;
use super::port::StateChange;
use crate::store::{Store, StoreError};

/// Which counter an HTLC moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// The peer offered us an HTLC on this channel.
    InOffered,
    /// An HTLC the peer offered us was fulfilled.
    InFulfilled,
    /// We offered the peer an HTLC on this channel.
    OutOffered,
    /// An HTLC we offered was fulfilled.
    OutFulfilled,
}

impl Flow {
    /// Its two columns (count, msat).
    fn columns(self) -> (&'static str, &'static str) {
        match self {
            Flow::InOffered => ("in_offered", "in_offered_msat"),
            Flow::InFulfilled => ("in_fulfilled", "in_fulfilled_msat"),
            Flow::OutOffered => ("out_offered", "out_offered_msat"),
            Flow::OutFulfilled => ("out_fulfilled", "out_fulfilled_msat"),
        }
    }
}

/// A channel's HTLC counters, as CLN's `listpeerchannels` names them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HtlcCounts {
    /// `in_payments_offered`.
    pub in_payments_offered: u64,
    /// `in_offered_msat`.
    pub in_offered_msat: u64,
    /// `in_payments_fulfilled`.
    pub in_payments_fulfilled: u64,
    /// `in_fulfilled_msat`.
    pub in_fulfilled_msat: u64,
    /// `out_payments_offered`.
    pub out_payments_offered: u64,
    /// `out_offered_msat`.
    pub out_offered_msat: u64,
    /// `out_payments_fulfilled`.
    pub out_payments_fulfilled: u64,
    /// `out_fulfilled_msat`.
    pub out_fulfilled_msat: u64,
}

/// One recorded state change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateChangeRecord {
    /// When (milliseconds since the epoch).
    pub timestamp_ms: u64,
    /// The state before.
    pub old_state: String,
    /// The state after.
    pub new_state: String,
    /// CLN's cause.
    pub cause: String,
    /// Why.
    pub message: String,
}

/// A channel's past.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChannelHistory {
    /// Its HTLC counters.
    pub counts: HtlcCounts,
    /// Its state changes, oldest first.
    pub state_changes: Vec<StateChangeRecord>,
}

/// The key prefix of counts known by scid until written (`scid:<u64>`).
const SCID_KEY: &str = "scid:";

/// Counts not written yet: channel id (hex), or `scid:<n>`, → per [`Flow`], (HTLCs, msat).
pub type PendingCounts = std::sync::Mutex<HashMap<String, [(u64, u64); 4]>>;

fn flow_index(f: Flow) -> usize {
    match f {
        Flow::InOffered => 0,
        Flow::InFulfilled => 1,
        Flow::OutOffered => 2,
        Flow::OutFulfilled => 3,
    }
}

const FLOWS: [Flow; 4] = [
    Flow::InOffered,
    Flow::InFulfilled,
    Flow::OutOffered,
    Flow::OutFulfilled,
];

fn add(conn: &mut Connection, items: &[(String, Flow, u64, u64)]) -> Result<(), StoreError> {
    let tx = conn.transaction()?;
    let sql = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    for (channel, flow, count, msat) in items {
        let (n, m) = flow.columns();
        tx.prepare_cached(&format!(
            "INSERT INTO channel_htlc_counts (channel_id, {n}, {m}) VALUES (?1, ?2, ?3)
             ON CONFLICT (channel_id) DO UPDATE SET {n} = channel_htlc_counts.{n} + ?2, {m} = channel_htlc_counts.{m} + ?3"
        ))?
        .execute(params![channel, sql(*count), sql(*msat)])?;
    }
    tx.commit()?;
    Ok(())
}

/// Records `change` (unless it is a creation, without an old state) at `now_ms`, in a task.
pub(crate) fn record_state_change(
    store: &Store,
    log: &SourceLog,
    change: &StateChange,
    now_ms: u64,
) {
    let Some(old) = change.old_state.clone() else {
        return;
    };
    let row = (
        change.channel_id.clone(),
        i64::try_from(now_ms).unwrap_or(i64::MAX),
        old,
        change.new_state.clone(),
        change.cause.clone(),
        change.message.clone(),
    );
    let (store, log) = (store.clone(), log.clone());
    tokio::spawn(async move {
        let r = store
            .with(move |c| {
                c.prepare_cached(
                    "INSERT INTO channel_state_changes (channel_id, timestamp_ms, old_state, new_state, cause, message)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )?
                .execute(params![row.0, row.1, row.2, row.3, row.4, row.5])?;
                Ok(())
            })
            .await;
        if let Err(e) = r {
            log.unusual(&format!("cannot record a channel state change: {e}"));
        }
    });
}

fn read(conn: &mut Connection) -> Result<HashMap<String, ChannelHistory>, StoreError> {
    let mut out: HashMap<String, ChannelHistory> = HashMap::new();
    let u = |v: i64| u64::try_from(v).unwrap_or(0);
    let mut st = conn.prepare_cached(
        "SELECT channel_id, in_offered, in_offered_msat, in_fulfilled, in_fulfilled_msat,
                out_offered, out_offered_msat, out_fulfilled, out_fulfilled_msat
         FROM channel_htlc_counts",
    )?;
    let rows = st.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            HtlcCounts {
                in_payments_offered: u(r.get(1)?),
                in_offered_msat: u(r.get(2)?),
                in_payments_fulfilled: u(r.get(3)?),
                in_fulfilled_msat: u(r.get(4)?),
                out_payments_offered: u(r.get(5)?),
                out_offered_msat: u(r.get(6)?),
                out_payments_fulfilled: u(r.get(7)?),
                out_fulfilled_msat: u(r.get(8)?),
            },
        ))
    })?;
    for row in rows {
        let (id, counts) = row?;
        out.entry(id).or_default().counts = counts;
    }
    let mut st = conn.prepare_cached(
        "SELECT channel_id, timestamp_ms, old_state, new_state, cause, message
         FROM channel_state_changes ORDER BY id",
    )?;
    let rows = st.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            StateChangeRecord {
                timestamp_ms: u(r.get(1)?),
                old_state: r.get(2)?,
                new_state: r.get(3)?,
                cause: r.get(4)?,
                message: r.get(5)?,
            },
        ))
    })?;
    for row in rows {
        let (id, change) = row?;
        out.entry(id).or_default().state_changes.push(change);
    }
    Ok(out)
}

impl Lightning {
    /// Bumps HTLC counters: (channel, which, amount) each, in memory until the next write.
    pub(crate) fn count_htlcs(&self, items: Vec<(ChannelId, Flow, u64)>) {
        if items.is_empty() {
            return;
        }
        let mut pending = self.htlc_counts.lock().unwrap_or_else(|p| p.into_inner());
        for (c, f, msat) in items {
            let slot = &mut pending.entry(hex(&c.0)).or_default()[flow_index(f)];
            slot.0 += 1;
            slot.1 = slot.1.saturating_add(msat);
        }
    }

    /// [`Lightning::count_htlcs`] for a channel known by its scid (a route's first hop):
    /// the scid is turned into the channel's id when the counts are written, not on the
    /// payment path.
    pub(crate) fn count_htlc_by_scid(&self, scid: u64, f: Flow, msat: u64) {
        let mut pending = self.htlc_counts.lock().unwrap_or_else(|p| p.into_inner());
        let slot = &mut pending.entry(format!("{SCID_KEY}{scid}")).or_default()[flow_index(f)];
        slot.0 += 1;
        slot.1 = slot.1.saturating_add(msat);
    }

    /// Pending counts keyed by channel id: those counted by scid are moved to their
    /// channel's id (real scid or alias; dropped when no channel has it any more).
    fn pending_by_channel(
        &self,
        pending: HashMap<String, [(u64, u64); 4]>,
    ) -> HashMap<String, [(u64, u64); 4]> {
        if !pending.keys().any(|k| k.starts_with(SCID_KEY)) {
            return pending;
        }
        let chans = self.manager.list_channels();
        let mut out: HashMap<String, [(u64, u64); 4]> = HashMap::new();
        for (k, flows) in pending {
            let id = match k.strip_prefix(SCID_KEY).and_then(|s| s.parse::<u64>().ok()) {
                None => k,
                Some(scid) => match chans.iter().find(|c| {
                    c.short_channel_id == Some(scid)
                        || c.outbound_scid_alias == Some(scid)
                        || c.inbound_scid_alias == Some(scid)
                }) {
                    Some(c) => hex(&c.channel_id.0),
                    None => continue,
                },
            };
            let slot = out.entry(id).or_default();
            for (s, (n, m)) in slot.iter_mut().zip(flows) {
                s.0 += n;
                s.1 = s.1.saturating_add(m);
            }
        }
        out
    }

    /// Writes the counts added up since the last write (one transaction, relaxed). On
    /// failure they are kept for the next one.
    pub(crate) fn write_htlc_counts(&self) {
        let taken =
            std::mem::take(&mut *self.htlc_counts.lock().unwrap_or_else(|p| p.into_inner()));
        if taken.is_empty() {
            return;
        }
        let taken = self.pending_by_channel(taken);
        let items: Vec<(String, Flow, u64, u64)> = taken
            .iter()
            .flat_map(|(c, flows)| {
                FLOWS
                    .iter()
                    .zip(flows)
                    .filter(|(_, (n, _))| *n > 0)
                    .map(|(f, (n, m))| (c.clone(), *f, *n, *m))
            })
            .collect();
        let r = self
            .store
            .with_sync(|c| crate::store::relaxed(c, |c| add(c, &items)));
        if let Err(e) = r {
            self.log.unusual(&format!(
                "cannot write the HTLC counters (kept for later): {e}"
            ));
            let mut pending = self.htlc_counts.lock().unwrap_or_else(|p| p.into_inner());
            for (c, flows) in taken {
                let slot = pending.entry(c).or_default();
                for (s, (n, m)) in slot.iter_mut().zip(flows) {
                    s.0 += n;
                    s.1 = s.1.saturating_add(m);
                }
            }
        }
    }

    /// Every channel's counters and state changes, by channel id (hex): what is written,
    /// plus what is still in memory.
    pub async fn channel_histories(&self) -> Result<HashMap<String, ChannelHistory>, StoreError> {
        let mut all = self.store.with(read).await?;
        let pending = self
            .htlc_counts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        for (c, flows) in self.pending_by_channel(pending) {
            let counts = &mut all.entry(c).or_default().counts;
            let [io, ifu, oo, ofu] = flows;
            counts.in_payments_offered += io.0;
            counts.in_offered_msat += io.1;
            counts.in_payments_fulfilled += ifu.0;
            counts.in_fulfilled_msat += ifu.1;
            counts.out_payments_offered += oo.0;
            counts.out_offered_msat += oo.1;
            counts.out_payments_fulfilled += ofu.0;
            counts.out_fulfilled_msat += ofu.1;
        }
        Ok(all)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_add_up_and_state_changes_keep_their_order() {
        let store = Store::in_memory().unwrap_or_else(|e| panic!("{e}"));
        let r = store.with_sync(|c| {
            add(
                c,
                &[
                    ("aa".into(), Flow::InOffered, 1, 10),
                    ("aa".into(), Flow::InOffered, 1, 5),
                    ("aa".into(), Flow::InFulfilled, 1, 5),
                    ("bb".into(), Flow::OutOffered, 1, 7),
                ],
            )?;
            for (i, new) in ["CHANNELD_NORMAL", "CLOSINGD_COMPLETE"].iter().enumerate() {
                c.execute(
                    "INSERT INTO channel_state_changes (channel_id, timestamp_ms, old_state, new_state, cause, message)
                     VALUES ('aa', ?1, 'x', ?2, 'user', 'm')",
                    params![i as i64, new],
                )?;
            }
            read(c)
        });
        let all = r.unwrap_or_else(|e| panic!("{e}"));
        let aa = &all["aa"];
        assert_eq!(
            (aa.counts.in_payments_offered, aa.counts.in_offered_msat),
            (2, 15)
        );
        assert_eq!(
            (aa.counts.in_payments_fulfilled, aa.counts.in_fulfilled_msat),
            (1, 5)
        );
        assert_eq!(all["bb"].counts.out_offered_msat, 7);
        let states: Vec<&str> = aa
            .state_changes
            .iter()
            .map(|s| s.new_state.as_str())
            .collect();
        assert_eq!(states, ["CHANNELD_NORMAL", "CLOSINGD_COMPLETE"]);
    }
}
