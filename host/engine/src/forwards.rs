//! Forwards: a row per HTLC we were asked to forward (`listforwards`), kept up to date from
//! LDK's events, with CLN's `forward_event` notification on every change.

use super::history::Flow;
use super::port::{Notice, Port, Topic};
use super::{Lightning, scid_string};
use crate::log::SourceLog;
use crate::store::{Store, StoreError};
use fulgur_base::clock::Clock;
use fulgur_base::hex;
use fulgur_store::sql::OptionalExtension;
use lightning::events::{
    HTLCHandlingFailureReason, HTLCHandlingFailureType, InboundHTLCLocator, OutboundHTLCLocator,
};
use lightning::ln::types::ChannelId;
use lightning::types::payment::PaymentHash;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Bumps the `updated` counter of `subsystem` and returns its new value.
pub fn next_updated(
    c: &fulgur_store::sql::Connection,
    subsystem: &str,
) -> fulgur_store::sql::Result<i64> {
    c.prepare_cached(
        "INSERT INTO index_counters (subsystem, updated) VALUES (?1, 1)
         ON CONFLICT(subsystem) DO UPDATE SET updated = index_counters.updated + 1",
    )?
    .execute([subsystem])?;
    c.prepare_cached("SELECT updated FROM index_counters WHERE subsystem = ?1")?
        .query_row([subsystem], |r| r.get(0))
}

const COLS: &str = "created_index, updated_index, payment_hash, in_channel, in_htlc_id, in_msat, out_channel, out_msat, status, failcode, failreason, received_time, resolved_time";

/// A forward as recorded (a `listforwards` entry).
#[derive(Debug, Clone, PartialEq)]
pub struct Forward {
    /// Its number in the `forwards` subsystem.
    pub created_index: i64,
    /// Bumped at each change after its creation.
    pub updated_index: Option<i64>,
    /// The incoming channel.
    pub in_channel: String,
    /// The incoming HTLC's id.
    pub in_htlc_id: Option<i64>,
    /// What came in.
    pub in_msat: i64,
    /// The outgoing channel, once known.
    pub out_channel: Option<String>,
    /// What went out, once known.
    pub out_msat: Option<i64>,
    /// `offered`, `settled`, `failed` or `local_failed`.
    pub status: String,
    /// BOLT 4's failure code, for a local failure.
    pub failcode: Option<i64>,
    /// CLN's name for it.
    pub failreason: Option<String>,
    /// When it came in (seconds, fractional).
    pub received_time: f64,
    /// When it was resolved.
    pub resolved_time: Option<f64>,
}

impl Forward {
    /// The fee earned (or that would be), once the outgoing amount is known.
    pub fn fee_msat(&self) -> Option<i64> {
        self.out_msat.map(|m| (self.in_msat - m).max(0))
    }
}

/// A forward from a row of [`COLS`].
fn row_forward(r: &fulgur_store::sql::Row<'_>) -> fulgur_store::sql::Result<Forward> {
    Ok(Forward {
        created_index: r.get(0)?,
        updated_index: r.get(1)?,
        in_channel: r.get(3)?,
        in_htlc_id: r.get(4)?,
        in_msat: r.get(5)?,
        out_channel: r.get(6)?,
        out_msat: r.get(7)?,
        status: r.get(8)?,
        failcode: r.get(9)?,
        failreason: r.get(10)?,
        received_time: r.get(11)?,
        resolved_time: r.get(12)?,
    })
}

/// The fees earned by every settled forward.
pub fn fees_collected(c: &fulgur_store::sql::Connection) -> fulgur_store::sql::Result<u64> {
    c.prepare_cached(
        "SELECT COALESCE(SUM(in_msat - out_msat), 0) FROM forwards WHERE status = 'settled'",
    )?
    .query_row([], |r| r.get::<_, i64>(0))
    .map(|v| v.max(0) as u64)
}

/// `delforward`: deletes the resolved forward that came in on `in_channel` as HTLC
/// `in_htlc_id` with `status` (`settled`, `failed` or `local_failed`), bumping the
/// subsystem's `deleted` counter; `false` when there is none.
pub fn delete(
    c: &mut fulgur_store::sql::Connection,
    in_channel: &str,
    in_htlc_id: u64,
    status: &str,
) -> fulgur_store::sql::Result<bool> {
    let tx = c.transaction()?;
    let n = tx
        .prepare_cached(
            "DELETE FROM forwards WHERE in_channel = ?1 AND in_htlc_id = ?2 AND status = ?3 \
             AND status != 'offered'",
        )?
        .execute(fulgur_store::sql::params![
            in_channel,
            in_htlc_id as i64,
            status
        ])?;
    if n > 0 {
        tx.prepare_cached(
            "INSERT INTO index_counters (subsystem, updated, deleted) VALUES ('forwards', 0, ?1) \
             ON CONFLICT (subsystem) DO UPDATE SET deleted = index_counters.deleted + ?1",
        )?
        .execute([n as i64])?;
    }
    tx.commit()?;
    Ok(n > 0)
}

/// How an offered forward ended.
struct Resolution {
    status: &'static str,
    /// What went out, when known.
    out_msat: Option<u64>,
    failcode: Option<u16>,
    failreason: Option<String>,
    /// The channel it went out on, when known (it may differ from the onion's).
    out_channel: Option<String>,
}

/// `listforwards [status] [in_channel] [out_channel] [index] [start] [limit]`.
pub fn list(
    c: &fulgur_store::sql::Connection,
    status: Option<&str>,
    in_channel: Option<&str>,
    out_channel: Option<&str>,
    index: Option<&str>,
    start: Option<i64>,
    limit: Option<i64>,
) -> fulgur_store::sql::Result<Vec<Forward>> {
    let key = if index == Some("updated") {
        "updated_index"
    } else {
        "created_index"
    };
    let sql = format!(
        "SELECT {COLS} FROM forwards WHERE (CAST(?1 AS TEXT) IS NULL OR status = ?1) AND (CAST(?2 AS TEXT) IS NULL OR in_channel = ?2)
         AND (CAST(?3 AS TEXT) IS NULL OR out_channel = ?3) AND (CAST(?4 AS BIGINT) IS NULL OR {key} >= ?4) ORDER BY {key} LIMIT ?5"
    );
    let mut st = c.prepare(&sql)?;
    let rows = st
        .query_map(
            fulgur_store::sql::params![
                status,
                in_channel,
                out_channel,
                start,
                limit.unwrap_or(i64::MAX)
            ],
            row_forward,
        )?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

/// BOLT 4's code for LDK's local failure reasons that have one CLN users know.
fn wire_code(ldk_name: &str) -> Option<u16> {
    Some(match ldk_name {
        "TemporaryChannelFailure" => 0x1007,
        "AmountBelowMinimum" => 0x100b,
        "FeeInsufficient" => 0x100c,
        "IncorrectCLTVExpiry" => 0x100d,
        "CLTVExpiryTooSoon" => 0x100e,
        "ChannelDisabled" => 0x1014,
        "TemporaryNodeFailure" => 0x2002,
        "PermanentChannelFailure" => 0x4008,
        "UnknownNextPeer" => 0x400a,
        _ => return None,
    })
}

/// CLN's name for a failure: `WIRE_` and the reason in upper snake case.
fn wire_name(ldk_name: &str) -> String {
    let mut out = String::from("WIRE_");
    let mut prev: Option<char> = None;
    for c in ldk_name.chars() {
        if c.is_uppercase() && prev.is_some_and(|p| !p.is_uppercase()) {
            out.push('_');
        }
        out.push(c.to_ascii_uppercase());
        prev = Some(c);
    }
    out
}

/// The forwards service: the `forwards` table as LDK's events change it, the
/// `forward_event` notification, and the fees earned (summed from the table at start, then
/// kept up to date as forwards settle, so `getinfo` reads no table). It takes no lock.
pub struct Forwards {
    store: Store,
    clock: Arc<dyn Clock>,
    port: Arc<dyn Port>,
    log: SourceLog,
    fees_collected_msat: AtomicU64,
}

impl Forwards {
    /// The service over `store`, its fees summed from the table.
    pub async fn open(
        store: Store,
        clock: Arc<dyn Clock>,
        port: Arc<dyn Port>,
        log: SourceLog,
    ) -> Result<Forwards, StoreError> {
        let fees = store.with(|c| Ok(fees_collected(c)?)).await?;
        Ok(Forwards {
            store,
            clock,
            port,
            log,
            fees_collected_msat: AtomicU64::new(fees),
        })
    }

    /// What every settled forward earned.
    pub fn fees_collected_msat(&self) -> u64 {
        self.fees_collected_msat.load(Ordering::Relaxed)
    }

    /// Seconds since the epoch, with milliseconds (CLN's `received_time`, `resolved_time`).
    fn now(&self) -> f64 {
        // Milliseconds fit a f64 exactly for the next 285,000 years.
        self.clock.unix_ms() as f64 / 1000.0
    }

    async fn notify(&self, created_index: i64, hash: Option<Vec<u8>>) {
        if !self.port.listens(Topic::ForwardEvent) {
            return;
        }
        let row = self
            .store
            .with(move |c| {
                Ok(c.prepare_cached(&format!(
                    "SELECT {COLS} FROM forwards WHERE created_index = ?1"
                ))?
                .query_row([created_index], row_forward)
                .optional()?)
            })
            .await;
        if let Ok(Some(f)) = row {
            let hash = hash.and_then(|h| <[u8; 32]>::try_from(h.as_slice()).ok());
            self.port.tell(Notice::Forward(f, hash));
        }
    }

    /// Records an `offered` forward: `part` is (incoming scid, HTLC id, amount, CLTV, ..),
    /// going out on `out_scid` with `outbound_msat`.
    async fn offered(
        &self,
        hash: &PaymentHash,
        part: &(u64, u64, u64, u32, String),
        out_scid: u64,
        outbound_msat: u64,
    ) {
        let (hash_v, in_ch, in_id, in_msat, out_ch) = (
            hash.0.to_vec(),
            scid_string(part.0),
            part.1 as i64,
            part.2 as i64,
            scid_string(out_scid),
        );
        let now = self.now();
        let r = self
            .store
            .with(move |c| {
                crate::store::relaxed(c, |c| {
                c.prepare_cached("INSERT INTO forwards (payment_hash, in_channel, in_htlc_id, in_msat, out_channel, out_msat, status, received_time)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'offered', ?7)")?.execute(
                    fulgur_store::sql::params![hash_v, in_ch, in_id, in_msat, out_ch, outbound_msat as i64, now],
                )?;
                Ok(c.last_insert_rowid())
                })
            })
            .await;
        match r {
            Ok(id) => self.notify(id, Some(hash.0.to_vec())).await,
            Err(e) => self.log.broken(&format!("cannot record forward: {e}")),
        }
    }

    /// Resolves the offered forward that came in on `in_channel` (with `htlc_id` if known);
    /// returns its payment hash when it has one.
    async fn resolve(
        &self,
        in_channel: String,
        htlc_id: Option<u64>,
        how: Resolution,
    ) -> Option<[u8; 32]> {
        let Resolution {
            status,
            out_msat,
            failcode,
            failreason,
            out_channel,
        } = how;
        let now = self.now();
        let r = self
            .store
            .with(move |c| {
                crate::store::relaxed(c, |c| {
                let tx = c.transaction()?;
                let found: Option<(i64, Option<Vec<u8>>)> = tx
                    .prepare_cached(
                        "SELECT created_index, payment_hash FROM forwards WHERE status = 'offered' AND in_channel = ?1
                         AND (CAST(?2 AS BIGINT) IS NULL OR in_htlc_id = ?2) ORDER BY created_index LIMIT 1",
                    )?
                    .query_row(
                        fulgur_store::sql::params![in_channel, htlc_id.map(|h| h as i64)],
                        |r| Ok((r.get(0)?, r.get(1)?)),
                    )
                    .optional()?;
                let Some((id, hash)) = found else {
                    return Ok(None);
                };
                let upd = next_updated(&tx, "forwards")?;
                tx.prepare_cached("UPDATE forwards SET status = ?2, updated_index = ?3, resolved_time = ?4,
                     out_msat = COALESCE(?5, out_msat), failcode = ?6, failreason = ?7,
                     out_channel = COALESCE(?8, out_channel) WHERE created_index = ?1")?.execute(
                    fulgur_store::sql::params![id, status, upd, now, out_msat.map(|m| m as i64), failcode, failreason, out_channel],
                )?;
                let fee: i64 = tx.prepare_cached("SELECT COALESCE(in_msat - out_msat, 0) FROM forwards WHERE created_index = ?1")?.query_row(
                    [id],
                    |r| r.get(0),
                )?;
                tx.commit()?;
                Ok(Some((id, hash, fee)))
                })
            })
            .await;
        match r {
            Ok(Some((id, hash, fee))) => {
                if status == "settled" {
                    self.fees_collected_msat
                        .fetch_add(fee.max(0) as u64, Ordering::Relaxed);
                }
                let payment_hash = hash
                    .as_ref()
                    .and_then(|h| <[u8; 32]>::try_from(h.as_slice()).ok());
                self.notify(id, hash).await;
                payment_hash
            }
            Ok(None) => None,
            Err(e) => {
                self.log.broken(&format!("cannot update forward: {e}"));
                None
            }
        }
    }
}

impl Lightning {
    fn scid_of(&self, id: &ChannelId) -> Option<String> {
        self.manager
            .list_channels()
            .into_iter()
            .find(|c| c.channel_id == *id)
            .and_then(|c| c.short_channel_id.or(c.outbound_scid_alias))
            .map(scid_string)
    }

    /// An HTLC to forward arrived (status `offered`), to go out on `out_scid` (the next
    /// channel's real scid when the onion named one of its aliases).
    pub(crate) async fn forward_offered(
        &self,
        hash: &PaymentHash,
        part: &(u64, u64, u64, u32, String),
        out_scid: u64,
        outbound_msat: u64,
    ) {
        self.forwards
            .offered(hash, part, out_scid, outbound_msat)
            .await;
    }

    /// LDK's `PaymentForwarded`: the forward settled. As CLN, two `coin_movement`s with the
    /// payment hash, tagged `routed` with the fee earned: a credit of what came in on each
    /// incoming channel and a debit of what went out on each outgoing one.
    pub(crate) async fn on_payment_forwarded(
        &self,
        prev: &[InboundHTLCLocator],
        next: &[OutboundHTLCLocator],
        outbound_msat: u64,
        fee_msat: Option<u64>,
    ) {
        let mut payment_hash = None;
        // The channel it really went out on: a plugin's `forward_to` may have chosen another
        // than the onion's.
        let out_channel = next.first().and_then(|n| self.scid_of(&n.channel_id));
        for p in prev {
            let Some(ch) = self.scid_of(&p.channel_id) else {
                continue;
            };
            let h = self
                .forwards
                .resolve(
                    ch,
                    p.htlc_id,
                    Resolution {
                        status: "settled",
                        out_msat: Some(outbound_msat),
                        failcode: None,
                        failreason: None,
                        out_channel: out_channel.clone(),
                    },
                )
                .await;
            payment_hash = payment_hash.or(h);
        }
        let routed =
            |account: &ChannelId, credit_msat: u64, debit_msat: u64| super::movements::Movement {
                kind: "channel_mvt",
                account: hex(&account.0),
                credit_msat,
                debit_msat,
                tag: "routed",
                payment_hash,
                fees_msat: fee_msat,
                utxo: None,
                peer_id: None,
                extra_tags: vec![],
            };
        let fee = fee_msat.unwrap_or(0);
        let mut counts = vec![];
        for p in prev {
            let came_in = p.amount_msat.unwrap_or_else(|| {
                // One incoming HTLC: it carried what went out plus the fee.
                outbound_msat.saturating_add(fee)
            });
            counts.push((p.channel_id, Flow::InFulfilled, came_in));
            self.coin_movement(routed(&p.channel_id, came_in, 0)).await;
        }
        for n in next {
            let went_out = n.amount_msat.unwrap_or(outbound_msat);
            counts.push((n.channel_id, Flow::OutFulfilled, went_out));
            self.coin_movement(routed(&n.channel_id, 0, went_out)).await;
        }
        self.count_htlcs(counts);
    }

    /// LDK's `HTLCHandlingFailed` for a forward.
    pub(crate) async fn on_forward_failed(
        &self,
        prev_channel_ids: &[ChannelId],
        ty: &HTLCHandlingFailureType,
        reason: Option<&HTLCHandlingFailureReason>,
    ) {
        let is_forward = matches!(
            ty,
            HTLCHandlingFailureType::Forward { .. }
                | HTLCHandlingFailureType::UnknownNextHop { .. }
                | HTLCHandlingFailureType::InvalidForward { .. }
        );
        if !is_forward {
            return;
        }
        let (status, code, why): (_, Option<u16>, _) = match reason {
            Some(HTLCHandlingFailureReason::Downstream) => ("failed", None, None),
            Some(HTLCHandlingFailureReason::Local { reason }) => {
                let name = format!("{reason:?}");
                let name = name.split([' ', '{', '(']).next().unwrap_or_default();
                ("local_failed", wire_code(name), Some(wire_name(name)))
            }
            None => ("local_failed", None, None),
        };
        for id in prev_channel_ids {
            let Some(ch) = self.scid_of(id) else { continue };
            self.forwards
                .resolve(
                    ch,
                    None,
                    Resolution {
                        status,
                        out_msat: None,
                        failcode: code,
                        failreason: why.clone(),
                        out_channel: None,
                    },
                )
                .await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{wire_code, wire_name};

    #[test]
    fn failure_names_are_clns() {
        assert_eq!(wire_name("UnknownNextPeer"), "WIRE_UNKNOWN_NEXT_PEER");
        assert_eq!(wire_name("CLTVExpiryTooSoon"), "WIRE_CLTVEXPIRY_TOO_SOON");
        assert_eq!(wire_code("UnknownNextPeer"), Some(16394));
        assert_eq!(wire_code("Whatever"), None);
    }
}
