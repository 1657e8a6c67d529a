//! CLN's `commitment_revocation` hook: for every commitment of the peer's that it revokes,
//! a signed penalty transaction a watchtower can broadcast if the peer ever publishes that
//! commitment while this node is down.
//!
//! [`Watchtower`] sits between LDK's `ChainMonitor` and the monitor persister. Each monitor
//! update that carries a new commitment of the peer's gives an unsigned justice transaction
//! (LDK's `build_to_local_justice_tx`: the commitment's revocable `to_local` output to our
//! wallet), kept in `penalty_bases` (migration 15, CLN's table name) until a later update
//! brings the revocation secret; then the monitor signs it (`sign_to_local_justice_tx`), the
//! row is marked signed and the penalty goes to the plugins. The row is deleted once the
//! hook chain has answered, so a penalty signed before a crash is delivered after the
//! restart, as CLN keeps its `penalty_base` until the hook's callback.
//!
//! Nothing is stored while no plugin registered the hook (a payment then costs no extra
//! write). A commitment whose `to_local` output is dust has no penalty, and no hook call
//! (CLN's rule too). `commitnum` counts from 0 like CLN's; LDK counts down from 2^48 - 1.

use std::sync::Arc;

use bitcoin::consensus::encode::{deserialize, serialize};
use bitcoin::{ScriptBuf, Transaction};
use fulgur_base::log::SourceLog;
use fulgur_store::sql::{Connection, params};
use lightning::chain::ChannelMonitorUpdateStatus;
use lightning::chain::chaininterface::{ConfirmationTarget, FeeEstimator};
use lightning::chain::chainmonitor::Persist;
use lightning::chain::channelmonitor::{ChannelMonitor, ChannelMonitorUpdate};
use lightning::ln::chan_utils::CommitmentTransaction;
use lightning::ln::types::ChannelId;
use lightning::sign::InMemorySigner;
use lightning::util::persist::MonitorName;
use tokio::sync::mpsc;

use super::MonitorPersister;
use super::port::{Port, Question, Revocation};
use crate::chain::fees::FeeCache;
use crate::store::{Store, StoreError};

/// LDK's commitment numbers start here and count down.
const FIRST_COMMITMENT_NUMBER: u64 = (1 << 48) - 1;

/// CLN's `commitnum` (0 for the first commitment) for LDK's commitment number.
pub fn cln_commitnum(ldk_number: u64) -> u64 {
    FIRST_COMMITMENT_NUMBER.saturating_sub(ldk_number)
}

/// The monitor persister, with penalty transactions for the `commitment_revocation` hook.
pub struct Watchtower {
    inner: Arc<MonitorPersister>,
    store: Store,
    port: Arc<dyn Port>,
    fees: Arc<FeeCache>,
    /// Where penalties pay: the wallet address the engine sweeps closed channels to.
    destination: ScriptBuf,
    signed: mpsc::UnboundedSender<Revocation>,
    log: SourceLog,
}

/// An unsigned justice transaction waiting for its commitment's revocation.
struct Pending {
    commitnum: u64,
    tx: Transaction,
    value_sat: u64,
}

impl Watchtower {
    /// Wraps `inner`; signed penalties are sent to `signed` (see [`deliver`]).
    pub fn new(
        inner: Arc<MonitorPersister>,
        store: Store,
        port: Arc<dyn Port>,
        fees: Arc<FeeCache>,
        destination: ScriptBuf,
        signed: mpsc::UnboundedSender<Revocation>,
        log: SourceLog,
    ) -> Watchtower {
        Watchtower {
            inner,
            store,
            port,
            fees,
            destination,
            signed,
            log,
        }
    }

    fn watching(&self) -> bool {
        self.port.asks(Question::CommitmentRevocation)
    }

    /// Keeps the unsigned penalty for one of the peer's commitments, if its `to_local`
    /// output is not dust.
    fn keep(&self, channel_id: &ChannelId, commitment: &CommitmentTransaction) {
        let trusted = commitment.trust();
        let Some(vout) = trusted.revokeable_output_index() else {
            return;
        };
        let value_sat = trusted.built_transaction().transaction.output[vout]
            .value
            .to_sat();
        let feerate = self
            .fees
            .get_est_sat_per_1000_weight(ConfirmationTarget::UrgentOnChainSweep);
        let Ok(tx) = trusted.build_to_local_justice_tx(feerate as u64, self.destination.clone())
        else {
            // The output cannot pay the penalty's fee: nothing worth watching.
            return;
        };
        let commitnum = cln_commitnum(commitment.commitment_number());
        let txid = trusted.txid().to_string();
        let cid = hex32(&channel_id.0);
        let bytes = serialize(&tx);
        let r = self.store.with_sync(move |c| {
            Ok(c.execute(
                "INSERT INTO penalty_bases
                     (channel_id, commitnum, commitment_txid, value_sat, tx, signed)
                 VALUES (?1, ?2, ?3, ?4, ?5, 0) ON CONFLICT DO NOTHING",
                params![cid, commitnum as i64, txid, value_sat as i64, bytes],
            )?)
        });
        if let Err(e) = r {
            self.log
                .unusual(&format!("cannot keep the penalty for {channel_id}: {e}"));
        }
    }

    /// Signs the penalties whose commitments the peer has revoked, oldest first, and sends
    /// them on.
    fn sign_revoked(&self, channel_id: &ChannelId, monitor: &ChannelMonitor<InMemorySigner>) {
        let cid = hex32(&channel_id.0);
        let pending = match self.store.with_sync({
            let cid = cid.clone();
            move |c| Ok(unsigned(c, &cid)?)
        }) {
            Ok(p) => p,
            Err(e) => {
                self.log
                    .unusual(&format!("cannot read the penalties of {channel_id}: {e}"));
                return;
            }
        };
        for p in pending {
            let commitment_txid = p.tx.input[0].previous_output.txid;
            let number = FIRST_COMMITMENT_NUMBER - p.commitnum;
            // Fails until the revocation secret of this commitment is known.
            let Ok(signed) = monitor.sign_to_local_justice_tx(p.tx, 0, p.value_sat, number) else {
                break;
            };
            let bytes = serialize(&signed);
            let (c2, n) = (cid.clone(), p.commitnum);
            if let Err(e) = self.store.with_sync(move |c| {
                Ok(c.execute(
                    "UPDATE penalty_bases SET tx = ?3, signed = 1
                     WHERE channel_id = ?1 AND commitnum = ?2",
                    params![c2, n as i64, bytes],
                )?)
            }) {
                self.log
                    .unusual(&format!("cannot keep the penalty for {channel_id}: {e}"));
                return;
            }
            let _ = self.signed.send(Revocation {
                channel_id: channel_id.0,
                commitment_txid,
                penalty_tx: signed,
                commitnum: p.commitnum,
            });
        }
    }
}

/// The unsigned penalties of a channel, oldest first.
fn unsigned(c: &Connection, channel_id: &str) -> fulgur_store::sql::Result<Vec<Pending>> {
    let mut st = c.prepare_cached(
        "SELECT commitnum, tx, value_sat FROM penalty_bases
         WHERE channel_id = ?1 AND signed = 0 ORDER BY commitnum",
    )?;
    let rows = st.query_map(params![channel_id], |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, Vec<u8>>(1)?,
            r.get::<_, i64>(2)?,
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (n, tx, v) = row?;
        // A row this node wrote always decodes; one that does not is skipped.
        if let Ok(tx) = deserialize::<Transaction>(&tx) {
            out.push(Pending {
                commitnum: n as u64,
                tx,
                value_sat: v as u64,
            });
        }
    }
    Ok(out)
}

/// The penalties signed but not yet answered by the hook (a restart in between).
pub async fn undelivered(store: &Store) -> Result<Vec<Revocation>, StoreError> {
    store
        .with(|c| {
            let mut st = c.prepare(
                "SELECT channel_id, commitnum, tx FROM penalty_bases
                 WHERE signed = 1 ORDER BY channel_id, commitnum",
            )?;
            let rows = st.query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, Vec<u8>>(2)?,
                ))
            })?;
            let mut out = Vec::new();
            for row in rows {
                let (cid, n, tx) = row?;
                let (Some(id), Ok(tx)) = (
                    fulgur_base::unhex(&cid).and_then(|b| <[u8; 32]>::try_from(b).ok()),
                    deserialize::<Transaction>(&tx),
                ) else {
                    continue;
                };
                out.push(Revocation {
                    channel_id: id,
                    commitment_txid: tx.input[0].previous_output.txid,
                    penalty_tx: tx,
                    commitnum: n as u64,
                });
            }
            Ok(out)
        })
        .await
}

/// Hands each signed penalty to the `commitment_revocation` hook, in order, and forgets it
/// once the plugins answered. Runs until the engine drops its [`Watchtower`].
pub async fn deliver(
    store: Store,
    port: Arc<dyn Port>,
    log: SourceLog,
    mut signed: mpsc::UnboundedReceiver<Revocation>,
) {
    while let Some(r) = signed.recv().await {
        let (cid, n) = (hex32(&r.channel_id), r.commitnum);
        port.commitment_revocation(r).await;
        let done = store
            .with(move |c| {
                Ok(c.execute(
                    "DELETE FROM penalty_bases WHERE channel_id = ?1 AND commitnum = ?2",
                    params![cid, n as i64],
                )?)
            })
            .await;
        if let Err(e) = done {
            log.unusual(&format!("cannot forget a delivered penalty: {e}"));
        }
    }
}

fn hex32(b: &[u8; 32]) -> String {
    fulgur_base::hex(b)
}

/// Whether a penalty of this channel is already kept (tests).
#[cfg(test)]
fn kept(
    c: &Connection,
    channel_id: &str,
    commitnum: u64,
) -> fulgur_store::sql::Result<Option<i64>> {
    c.query_row(
        "SELECT signed FROM penalty_bases WHERE channel_id = ?1 AND commitnum = ?2",
        params![channel_id, commitnum as i64],
        |r| r.get(0),
    )
    .map(Some)
    .or_else(|e| match e {
        fulgur_store::sql::Error::QueryReturnedNoRows => Ok(None),
        e => Err(e),
    })
}

impl Persist<InMemorySigner> for Watchtower {
    fn persist_new_channel(
        &self,
        name: MonitorName,
        monitor: &ChannelMonitor<InMemorySigner>,
    ) -> ChannelMonitorUpdateStatus {
        let status = self.inner.persist_new_channel(name, monitor);
        // LDK also calls this for every monitor loaded at start-up: only a monitor that never
        // had an update is a new channel. Taking the first commitment of an older one again
        // would sign and deliver its penalty a second time.
        if self.watching()
            && monitor.get_latest_update_id() == 0
            && let Some(first) = monitor.initial_counterparty_commitment_tx()
        {
            self.keep(&monitor.channel_id(), &first);
        }
        status
    }

    fn update_persisted_channel(
        &self,
        name: MonitorName,
        update: Option<&ChannelMonitorUpdate>,
        monitor: &ChannelMonitor<InMemorySigner>,
    ) -> ChannelMonitorUpdateStatus {
        let status = self.inner.update_persisted_channel(name, update, monitor);
        if let Some(update) = update
            && self.watching()
        {
            let id = monitor.channel_id();
            for commitment in monitor.counterparty_commitment_txs_from_update(update) {
                self.keep(&id, &commitment);
            }
            self.sign_revoked(&id, monitor);
        }
        status
    }

    fn archive_persisted_channel(&self, name: MonitorName) {
        <MonitorPersister as Persist<InMemorySigner>>::archive_persisted_channel(&self.inner, name)
    }

    fn get_and_clear_completed_updates(&self) -> Vec<(ChannelId, u64)> {
        <MonitorPersister as Persist<InMemorySigner>>::get_and_clear_completed_updates(&self.inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commitment_numbers_count_up_from_zero_as_clns() {
        assert_eq!(cln_commitnum(FIRST_COMMITMENT_NUMBER), 0);
        assert_eq!(cln_commitnum(FIRST_COMMITMENT_NUMBER - 7), 7);
        assert_eq!(cln_commitnum(u64::MAX), 0);
    }

    #[test]
    fn penalties_are_kept_signed_and_forgotten_in_order() {
        let store = Store::in_memory().unwrap_or_else(|e| panic!("{e}"));
        let tx = Transaction {
            version: bitcoin::transaction::Version::TWO,
            lock_time: bitcoin::absolute::LockTime::ZERO,
            input: vec![bitcoin::TxIn::default()],
            output: vec![],
        };
        let bytes = serialize(&tx);
        let r = store.with_sync(move |c| {
            for n in [2i64, 0, 1] {
                c.execute(
                    "INSERT INTO penalty_bases VALUES ('aa', ?1, 'x', 1000, ?2, ?3)",
                    params![n, bytes, (n == 2) as i64],
                )?;
            }
            let order: Vec<u64> = unsigned(c, "aa")?.iter().map(|p| p.commitnum).collect();
            assert_eq!(order, vec![0, 1]);
            assert_eq!(kept(c, "aa", 2)?, Some(1));
            assert_eq!(kept(c, "bb", 0)?, None);
            Ok(())
        });
        r.unwrap_or_else(|e| panic!("{e}"));
    }
}
