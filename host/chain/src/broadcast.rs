//! The broadcaster: one-shot sends with the backend's verdict ([`TxBroadcaster`], for the
//! wallet's `withdraw`), and a fire-and-forget path with retries for LDK's
//! `BroadcasterInterface` (parents first, each retried with exponential backoff while the
//! backend is unreachable or lacks the inputs, up to `--bitcoin-retry-timeout`).
//!
//! Packages: LDK hands an anchor channel's commitment and its CPFP child together. They go
//! out one `sendrawtransaction` at a time, parent first; a child whose parent is not known
//! yet (-25) is retried like any other. If the backend refuses a parent below its mempool
//! minimum fee (-26 "mempool min fee not met": the commitment's feerate was fixed when the
//! channel last updated it, and the mempool filled since), the parent and the child spending
//! it go together through `submitpackage` (bitcoind's package CPFP: the child's fee counts for
//! both). If that is refused too, or the backend has no `submitpackage` (older bitcoind,
//! backend plugins), the child is not sent (it could only fail) and that is logged; LDK hands
//! the whole package again, with a higher fee, at the next block.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bitcoin::{Transaction, Txid};
use lightning::chain::chaininterface::{BroadcasterInterface, TransactionType};

use super::backend::Backend;
use super::{BoxFuture, BroadcastError, TxBroadcaster};
use fulgur_base::log::SourceLog;

/// Sends transactions through whichever backend the chain uses.
pub struct Broadcaster {
    backend: Arc<OnceLock<Arc<Backend>>>,
    log: SourceLog,
    retry_timeout: Duration,
    runtime: Option<tokio::runtime::Handle>,
    handed: tokio::sync::broadcast::Sender<Transaction>,
    /// What became of each transaction handed: `true` once the backend has it (accepted, or
    /// already known), `false` once it gave up.
    outcomes: tokio::sync::broadcast::Sender<(Txid, bool)>,
    /// Woken whenever the backend accepts a transaction: a child waiting for its parent
    /// (-25) tries again at once instead of at the end of its backoff.
    accepted: Arc<tokio::sync::Notify>,
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

/// bitcoind's refusal of a transaction whose feerate is under the mempool's current minimum,
/// which a child paying for it can overcome in a package (not the fixed minimum relay fee).
pub fn below_mempool_minimum(e: &BroadcastError) -> bool {
    e.code == -26 && e.message.contains("mempool min fee not met")
}

/// The backend once the chain has started; before, an unreachable-backend error (-1,
/// retried like any other).
fn ready(backend: &OnceLock<Arc<Backend>>) -> Result<&Arc<Backend>, BroadcastError> {
    // A node that may have lost its PostgreSQL lease (another node may be active, with
    // newer channel states) broadcasts nothing: its commitments could be revoked ones.
    if !fulgur_store::lease::still_active() {
        return Err(BroadcastError {
            code: -1,
            message: "this node's database lease is not current: not broadcasting".into(),
        });
    }
    backend.get().ok_or_else(|| BroadcastError {
        code: -1,
        message: "the Bitcoin backend is not ready yet".into(),
    })
}

async fn submit_package_once(
    backend: &Arc<OnceLock<Arc<Backend>>>,
    txs: &[Transaction],
) -> Result<(), BroadcastError> {
    ready(backend)?.submit_package(txs).await
}

async fn send_once(
    backend: &Arc<OnceLock<Arc<Backend>>>,
    tx: &Transaction,
) -> Result<Txid, BroadcastError> {
    ready(backend)?.send_raw(tx).await
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
            outcomes: tokio::sync::broadcast::channel(256).0,
            accepted: Arc::new(tokio::sync::Notify::new()),
        }
    }

    /// Every transaction handed to [`Broadcaster::broadcast_background`] from now on (LDK's
    /// funding, closing and sweeping transactions), so `close` can report its transaction.
    pub fn watch(&self) -> tokio::sync::broadcast::Receiver<Transaction> {
        self.handed.subscribe()
    }

    /// What becomes of every transaction handed from now on: (txid, whether the backend has
    /// it). `fundchannel` answers once its funding transaction is in the backend's mempool.
    pub fn outcomes(&self) -> tokio::sync::broadcast::Receiver<(Txid, bool)> {
        self.outcomes.subscribe()
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
        let accepted = self.accepted.clone();
        let outcomes = self.outcomes.clone();
        let handed: Vec<Txid> = txs.iter().map(Transaction::compute_txid).collect();
        rt.spawn(async move {
            let send = |tx: &Transaction| {
                let (b, tx) = (backend.clone(), tx.clone());
                async move { send_once(&b, &tx).await }
            };
            let submit = |txs: Vec<Transaction>| {
                let b = backend.clone();
                async move { submit_package_once(&b, &txs).await }
            };
            let sent = send_package(txs, send, submit, &accepted, &log, limit).await;
            for txid in handed {
                // Nobody listening is fine.
                let _ = outcomes.send((txid, sent.contains(&txid)));
            }
        });
    }
}

/// Sends `txs` parents first, each retried with backoff on [`retryable`] errors for up to
/// `limit`. A transaction spending parents refused only for being under the mempool's
/// minimum fee goes with them through `submit` (one package: those parents, then it); a
/// transaction spending one refused for good (or whose package was refused) is not sent.
/// Returns the transactions the backend now has (sent, or already known to it).
async fn send_package<F, Fut, P, PFut>(
    txs: Vec<Transaction>,
    mut send: F,
    mut submit: P,
    accepted: &tokio::sync::Notify,
    log: &SourceLog,
    limit: Duration,
) -> Vec<Txid>
where
    F: FnMut(&Transaction) -> Fut,
    Fut: std::future::Future<Output = Result<Txid, BroadcastError>>,
    P: FnMut(Vec<Transaction>) -> PFut,
    PFut: std::future::Future<Output = Result<(), BroadcastError>>,
{
    let mut sent = vec![];
    let mut refused: Vec<Txid> = vec![];
    // Refused for their feerate only: a child may still carry them in a package.
    let mut below_minimum: Vec<(Txid, Transaction)> = vec![];
    for tx in parents_first(txs) {
        let txid = tx.compute_txid();
        let spent: Vec<Txid> = tx.input.iter().map(|i| i.previous_output.txid).collect();
        let (ids, mut package): (Vec<Txid>, Vec<Transaction>) = below_minimum
            .iter()
            .filter(|(id, _)| spent.contains(id))
            .cloned()
            .unzip();
        let blocked = spent
            .iter()
            .any(|p| refused.contains(p) && !ids.contains(p));
        if !ids.is_empty() && !blocked {
            package.push(tx.clone());
            match submit(package).await {
                Ok(()) => {
                    log.info(&format!(
                        "Broadcast {} with its child {txid} as a package (submitpackage): alone it was under the mempool minimum fee",
                        join(&ids)
                    ));
                    accepted.notify_waiters();
                    refused.retain(|r| !ids.contains(r));
                    below_minimum.retain(|(id, _)| !ids.contains(id));
                    sent.extend(ids);
                    sent.push(txid);
                    continue;
                }
                Err(e) => log.unusual(&format!(
                    "Package of {} and its child {txid} refused ({e}); LDK hands it again, with a higher fee, at the next block",
                    join(&ids)
                )),
            }
        }
        if let Some(parent) = spent.iter().find(|p| refused.contains(p)) {
            log.unusual(&format!(
                "Not broadcasting {txid}: its parent {parent} was refused (sent again with the package later)"
            ));
            refused.push(txid);
            continue;
        }
        let start = tokio::time::Instant::now();
        let mut delay = Duration::from_millis(500);
        loop {
            match send(&tx).await {
                Ok(_) => {
                    accepted.notify_waiters();
                    log.debug(&format!("Broadcast {txid}"));
                    sent.push(txid);
                    break;
                }
                Err(e) if retryable(e.code) && start.elapsed() + delay < limit => {
                    log.debug(&format!(
                        "Broadcast of {txid} failed ({e}); retrying in {delay:?}"
                    ));
                    // A missing parent may be on its way in another broadcast (LDK hands
                    // funding transactions one at a time, each spending the last one's
                    // change): try again as soon as the backend accepts something.
                    if e.code == -25 {
                        tokio::select! {
                            _ = tokio::time::sleep(delay) => {}
                            _ = accepted.notified() => {}
                        }
                    } else {
                        tokio::time::sleep(delay).await;
                    }
                    delay = (delay * 2).min(Duration::from_secs(30));
                }
                Err(e) => {
                    log.unusual(&format!("Broadcast of {txid} failed: {e}"));
                    // Already in the chain (-27) or in the mempool (bitcoind's
                    // txn-already-known, or the same transaction with another witness):
                    // its children can still go.
                    let known = e.code == -27
                        || e.message.contains("already")
                        || e.message.contains("same-nonwitness-data");
                    if known {
                        sent.push(txid);
                    } else {
                        refused.push(txid);
                        if below_mempool_minimum(&e) {
                            below_minimum.push((txid, tx.clone()));
                        }
                    }
                    break;
                }
            }
        }
    }
    sent
}

fn join(ids: &[Txid]) -> String {
    ids.iter()
        .map(Txid::to_string)
        .collect::<Vec<_>>()
        .join(", ")
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

    fn quiet() -> SourceLog {
        fulgur_base::log::Logger::new(vec![], Box::new(std::io::sink())).source("chain")
    }

    /// A backend that knows which transactions it has: a child is refused (-25) until its
    /// parent was accepted; `refuse` are rejected for good (-26, below the minimum fee).
    fn fake(
        known: &std::sync::Mutex<Vec<Txid>>,
        refuse: Vec<Txid>,
        tx: &Transaction,
    ) -> Result<Txid, BroadcastError> {
        let txid = tx.compute_txid();
        let mut known = known.lock().unwrap_or_else(|p| p.into_inner());
        if refuse.contains(&txid) {
            return Err(BroadcastError {
                code: -26,
                message: "mempool min fee not met".into(),
            });
        }
        let parent = tx.input[0].previous_output.txid;
        if tx.input[0].previous_output != OutPoint::null() && !known.contains(&parent) {
            return Err(BroadcastError {
                code: -25,
                message: "bad-txns-inputs-missingorspent".into(),
            });
        }
        known.push(txid);
        Ok(txid)
    }

    fn no_packages(_: Vec<Transaction>) -> std::future::Ready<Result<(), BroadcastError>> {
        std::future::ready(Err(BroadcastError {
            code: -32601,
            message: "Method not found".into(),
        }))
    }

    /// [`send_package`] with no other broadcast to wake it, a quiet log and 60 s to go.
    async fn send_alone<F, Fut, P, PFut>(txs: Vec<Transaction>, send: F, submit: P) -> Vec<Txid>
    where
        F: FnMut(&Transaction) -> Fut,
        Fut: std::future::Future<Output = Result<Txid, BroadcastError>>,
        P: FnMut(Vec<Transaction>) -> PFut,
        PFut: std::future::Future<Output = Result<(), BroadcastError>>,
    {
        let accepted = tokio::sync::Notify::new();
        send_package(
            txs,
            send,
            submit,
            &accepted,
            &quiet(),
            Duration::from_secs(60),
        )
        .await
    }

    #[tokio::test]
    async fn a_parent_under_the_mempool_minimum_goes_with_its_child_as_a_package() {
        let parent = tx(None, 1);
        let child = tx(Some(parent.compute_txid()), 2);
        let unrelated = tx(None, 3);
        let (p, c, u) = (
            parent.compute_txid(),
            child.compute_txid(),
            unrelated.compute_txid(),
        );
        let known = std::sync::Mutex::new(vec![]);
        let packages = std::sync::Mutex::new(vec![]);
        let sent = send_alone(
            vec![child.clone(), unrelated.clone(), parent.clone()],
            |t| std::future::ready(fake(&known, vec![p], t)),
            |txs: Vec<Transaction>| {
                packages.lock().unwrap_or_else(|p| p.into_inner()).push(
                    txs.iter()
                        .map(Transaction::compute_txid)
                        .collect::<Vec<_>>(),
                );
                std::future::ready(Ok(()))
            },
        )
        .await;
        assert_eq!(sent, vec![u, p, c]);
        assert_eq!(
            packages.into_inner().unwrap_or_else(|p| p.into_inner()),
            vec![vec![p, c]]
        );
        // Refused for good (not the mempool minimum): no package is tried, the child stays.
        let known = std::sync::Mutex::new(vec![]);
        let tried = std::sync::atomic::AtomicU32::new(0);
        let sent = send_alone(
            vec![parent.clone(), child.clone()],
            |t| {
                let r = fake(&known, vec![p], t).map_err(|e| BroadcastError {
                    message: "min relay fee not met, 100 < 200".into(),
                    ..e
                });
                std::future::ready(r)
            },
            |_| {
                tried.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                std::future::ready(Ok(()))
            },
        )
        .await;
        assert!(sent.is_empty());
        assert_eq!(tried.load(std::sync::atomic::Ordering::SeqCst), 0);
        // A backend without submitpackage: the child is held back as before.
        let known = std::sync::Mutex::new(vec![]);
        let sent = send_alone(
            vec![parent, child],
            |t| std::future::ready(fake(&known, vec![p], t)),
            no_packages,
        )
        .await;
        assert!(sent.is_empty());
    }

    // Paused time: the clock moves only when every task waits on a timer, so the elapsed
    // time below is exact: 0 if the acceptance woke the child, the backoff if the timer did.
    #[tokio::test(start_paused = true)]
    async fn a_child_waiting_for_its_parent_goes_as_soon_as_the_parent_is_accepted() {
        let parent = tx(None, 1);
        let child = tx(Some(parent.compute_txid()), 2);
        let known = std::sync::Mutex::new(vec![]);
        let accepted = tokio::sync::Notify::new();
        let (first_try, tried) = tokio::sync::oneshot::channel::<()>();
        let first_try = std::sync::Mutex::new(Some(first_try));
        let log = quiet();
        let start = tokio::time::Instant::now();
        // The child is handed first (its parent in another broadcast, as LDK hands funding
        // transactions that chain on each other's change); the parent follows once the child
        // was refused for lack of it.
        let child_sent = send_package(
            vec![child.clone()],
            |t| {
                let r = fake(&known, vec![], t);
                if let Some(f) = first_try.lock().unwrap_or_else(|p| p.into_inner()).take() {
                    let _ = f.send(());
                }
                std::future::ready(r)
            },
            no_packages,
            &accepted,
            &log,
            Duration::from_secs(60),
        );
        let parent_sent = async {
            let _ = tried.await;
            send_package(
                vec![parent.clone()],
                |t| std::future::ready(fake(&known, vec![], t)),
                no_packages,
                &accepted,
                &log,
                Duration::from_secs(60),
            )
            .await
        };
        let (c, p) = tokio::join!(child_sent, parent_sent);
        assert_eq!(p, vec![parent.compute_txid()]);
        assert_eq!(c, vec![child.compute_txid()]);
        // Woken by the parent's acceptance, not at the end of its first backoff (500 ms).
        assert_eq!(start.elapsed(), Duration::ZERO);
    }

    #[tokio::test]
    async fn a_package_goes_parent_first_and_a_refused_parent_stops_its_child() {
        let parent = tx(None, 1);
        let child = tx(Some(parent.compute_txid()), 2);
        let (p, c) = (parent.compute_txid(), child.compute_txid());
        // Handed child first (as any order LDK might use): the parent goes first, both sent.
        let known = std::sync::Mutex::new(vec![]);
        let sent = send_alone(
            vec![child.clone(), parent.clone()],
            |t| std::future::ready(fake(&known, vec![], t)),
            no_packages,
        )
        .await;
        assert_eq!(sent, vec![p, c]);
        // The child alone while its parent is unknown: retried until the parent arrives
        // (another package, or the next block's rebroadcast), then sent.
        let known = std::sync::Mutex::new(vec![]);
        let attempts = std::sync::atomic::AtomicU32::new(0);
        let sent = send_alone(
            vec![child.clone()],
            |t| {
                if attempts.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 2 {
                    known.lock().unwrap_or_else(|p| p.into_inner()).push(p);
                }
                std::future::ready(fake(&known, vec![], t))
            },
            no_packages,
        )
        .await;
        assert_eq!(sent, vec![c]);
        assert_eq!(attempts.load(std::sync::atomic::Ordering::SeqCst), 3);
        // A parent refused for good: its child is not sent (it could only fail).
        let known = std::sync::Mutex::new(vec![]);
        let tries = std::sync::atomic::AtomicU32::new(0);
        let sent = send_alone(
            vec![parent, child],
            |t| {
                tries.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                std::future::ready(fake(&known, vec![p], t))
            },
            no_packages,
        )
        .await;
        assert!(sent.is_empty());
        assert_eq!(tries.load(std::sync::atomic::Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn send_before_the_backend_is_ready_is_an_error() {
        let b = Broadcaster::new(
            Arc::new(OnceLock::new()),
            fulgur_base::log::Logger::new(vec![], Box::new(std::io::sink())).source("chain"),
            Duration::from_secs(1),
        );
        let r = b.send(tx(None, 1)).await;
        assert_eq!(r.map_err(|e| e.code), Err(-1));
    }

    #[tokio::test]
    async fn a_transaction_the_backend_already_has_counts_as_sent_and_its_child_goes() {
        let parent = tx(None, 1);
        let child = tx(Some(parent.compute_txid()), 2);
        let (p, c) = (parent.compute_txid(), child.compute_txid());
        let sent = send_alone(
            vec![parent, child],
            |t| {
                let r = if t.compute_txid() == p {
                    Err(BroadcastError {
                        code: -27,
                        message: "Transaction already in block chain".into(),
                    })
                } else {
                    Ok(t.compute_txid())
                };
                std::future::ready(r)
            },
            no_packages,
        )
        .await;
        assert_eq!(sent, vec![p, c]);
    }
}
