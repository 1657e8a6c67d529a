//! The broadcaster: one-shot sends with the backend's verdict ([`TxBroadcaster`], for the
//! wallet's `withdraw`), and a fire-and-forget path with retries for LDK's
//! `BroadcasterInterface` (parents first, each retried with exponential backoff while the
//! backend is unreachable or lacks the inputs, up to `--bitcoin-retry-timeout`).

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bitcoin::{Transaction, Txid};
use lightning::chain::chaininterface::{BroadcasterInterface, TransactionType};

use super::backend::Backend;
use super::{BoxFuture, BroadcastError, TxBroadcaster};
use crate::log::SourceLog;

/// Sends transactions through whichever backend the chain uses.
pub struct Broadcaster {
    backend: Arc<OnceLock<Arc<Backend>>>,
    log: SourceLog,
    retry_timeout: Duration,
    runtime: Option<tokio::runtime::Handle>,
    handed: tokio::sync::broadcast::Sender<Transaction>,
}

/// Errors worth retrying: unreachable backend (-1), missing inputs (-25: a parent may still
/// be on its way), and "loading" / warm-up (-28).
pub fn retryable(code: i64) -> bool {
    matches!(code, -1 | -25 | -28)
}

/// Orders a package so that parents come before the children spending them.
pub fn parents_first(mut txs: Vec<Transaction>) -> Vec<Transaction> {
    let mut out: Vec<Transaction> = Vec::with_capacity(txs.len());
    while !txs.is_empty() {
        let ids: Vec<Txid> = txs.iter().map(Transaction::compute_txid).collect();
        let pos = txs
            .iter()
            .position(|t| {
                !t.input
                    .iter()
                    .any(|i| ids.contains(&i.previous_output.txid))
            })
            .unwrap_or(0);
        out.push(txs.remove(pos));
    }
    out
}

async fn send_once(
    backend: &Arc<OnceLock<Arc<Backend>>>,
    tx: &Transaction,
) -> Result<Txid, BroadcastError> {
    match backend.get() {
        Some(b) => b.send_raw(tx).await,
        None => Err(BroadcastError {
            code: -1,
            message: "the Bitcoin backend is not ready yet".into(),
        }),
    }
}

impl Broadcaster {
    /// A broadcaster over `backend` (which is set once the chain has started).
    pub fn new(
        backend: Arc<OnceLock<Arc<Backend>>>,
        log: SourceLog,
        retry_timeout: Duration,
    ) -> Broadcaster {
        Broadcaster {
            backend,
            log,
            retry_timeout,
            runtime: tokio::runtime::Handle::try_current().ok(),
            handed: tokio::sync::broadcast::channel(64).0,
        }
    }

    /// Every transaction handed to [`Broadcaster::broadcast_background`] from now on (LDK's
    /// funding, closing and sweeping transactions), so `close` can report its transaction.
    pub fn watch(&self) -> tokio::sync::broadcast::Receiver<Transaction> {
        self.handed.subscribe()
    }

    /// Broadcasts `txs` in the background (parents first), retrying with backoff; logs the
    /// outcome. Never blocks; callable from any thread.
    pub fn broadcast_background(&self, txs: Vec<Transaction>) {
        for t in &txs {
            let _ = self.handed.send(t.clone());
        }
        let Some(rt) = self.runtime.clone() else {
            self.log
                .broken("cannot broadcast: no async runtime to run the broadcast on");
            return;
        };
        let backend = self.backend.clone();
        let log = self.log.clone();
        let limit = self.retry_timeout;
        rt.spawn(async move {
            for tx in parents_first(txs) {
                let txid = tx.compute_txid();
                let start = tokio::time::Instant::now();
                let mut delay = Duration::from_millis(500);
                loop {
                    match send_once(&backend, &tx).await {
                        Ok(_) => {
                            log.debug(&format!("Broadcast {txid}"));
                            break;
                        }
                        Err(e) if retryable(e.code) && start.elapsed() + delay < limit => {
                            log.debug(&format!(
                                "Broadcast of {txid} failed ({e}); retrying in {delay:?}"
                            ));
                            tokio::time::sleep(delay).await;
                            delay = (delay * 2).min(Duration::from_secs(30));
                        }
                        Err(e) => {
                            log.unusual(&format!("Broadcast of {txid} failed: {e}"));
                            break;
                        }
                    }
                }
            }
        });
    }
}

impl TxBroadcaster for Broadcaster {
    fn send(&self, tx: Transaction) -> BoxFuture<'static, Result<Txid, BroadcastError>> {
        let backend = self.backend.clone();
        Box::pin(async move { send_once(&backend, &tx).await })
    }
}

impl BroadcasterInterface for Broadcaster {
    fn broadcast_transactions(&self, txs: &[(&Transaction, TransactionType)]) {
        self.broadcast_background(txs.iter().map(|(t, _)| (*t).clone()).collect());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bitcoin::absolute::LockTime;
    use bitcoin::{Amount, OutPoint, ScriptBuf, Sequence, TxIn, TxOut, Witness};

    fn tx(spending: Option<Txid>, tag: u64) -> Transaction {
        Transaction {
            version: bitcoin::transaction::Version::TWO,
            lock_time: LockTime::ZERO,
            input: vec![TxIn {
                previous_output: spending
                    .map(|t| OutPoint::new(t, 0))
                    .unwrap_or_else(OutPoint::null),
                script_sig: ScriptBuf::new(),
                sequence: Sequence::MAX,
                witness: Witness::new(),
            }],
            output: vec![TxOut {
                value: Amount::from_sat(tag),
                script_pubkey: ScriptBuf::new(),
            }],
        }
    }

    #[test]
    fn packages_go_parents_first() {
        let parent = tx(None, 1);
        let child = tx(Some(parent.compute_txid()), 2);
        let grandchild = tx(Some(child.compute_txid()), 3);
        let order = parents_first(vec![grandchild.clone(), child.clone(), parent.clone()]);
        assert_eq!(order, vec![parent, child, grandchild]);
        assert!(retryable(-25) && retryable(-1) && !retryable(-26) && !retryable(-27));
    }

    #[tokio::test]
    async fn send_before_the_backend_is_ready_is_an_error() {
        let b = Broadcaster::new(
            Arc::new(OnceLock::new()),
            crate::log::Logger::new(vec![], Box::new(std::io::sink())).source("chain"),
            Duration::from_secs(1),
        );
        let r = b.send(tx(None, 1)).await;
        assert_eq!(r.map_err(|e| e.code), Err(-1));
    }
}
