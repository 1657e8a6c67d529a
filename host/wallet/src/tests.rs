//! The wallet against blocks built here: funding, listfunds states, withdraw (valid
//! signatures, amounts, change, fee), reservations, reorgs, persistence and bad input.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bitcoin::block::Version as BlockVersion;
use bitcoin::hashes::Hash;
use bitcoin::key::XOnlyPublicKey;
use bitcoin::secp256k1::Message;
use bitcoin::sighash::{Prevouts, SighashCache};
use bitcoin::{BlockHash, CompactTarget, TxMerkleNode};

use super::*;
use fulgur_chain::{BoxFuture, FeeTarget};

const FEERATE: u32 = 2000;

fn ok<T, E: std::fmt::Debug>(r: Result<T, E>) -> T {
    r.unwrap_or_else(|e| panic!("{e:?}"))
}

struct Fixed;
impl FeeEstimates for Fixed {
    fn feerate_perkw(&self, _: FeeTarget) -> u32 {
        FEERATE
    }
}

/// Records what it is asked to send; fails when told to; can hold broadcasts until as many
/// are in flight as its barrier counts.
#[derive(Default)]
struct Recorder {
    sent: Mutex<Vec<Transaction>>,
    fail: AtomicBool,
    meet: Mutex<Option<Arc<tokio::sync::Barrier>>>,
}

impl TxBroadcaster for Recorder {
    fn send(&self, tx: Transaction) -> BoxFuture<'static, Result<Txid, BroadcastError>> {
        let fail = self.fail.load(Ordering::SeqCst);
        let meet = self.meet.lock().unwrap_or_else(|p| p.into_inner()).clone();
        if !fail {
            self.sent
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(tx.clone());
        }
        Box::pin(async move {
            if let Some(b) = meet {
                b.wait().await;
            }
            if fail {
                Err(BroadcastError {
                    code: -26,
                    message: "min relay fee not met".into(),
                })
            } else {
                Ok(tx.compute_txid())
            }
        })
    }
}

struct Harness {
    store: Store,
    wallet: Arc<Wallet>,
    bc: Arc<Recorder>,
    /// Block hashes by height (index 0 = genesis).
    chain: Vec<BlockHash>,
    n: u32,
}

async fn open(store: &Store, bc: &Arc<Recorder>) -> Arc<Wallet> {
    ok(Wallet::open(
        store.clone(),
        &[7u8; 32],
        Network::Regtest,
        Arc::new(Fixed),
        Some(bc.clone() as Arc<dyn TxBroadcaster>),
    )
    .await)
}

impl Harness {
    async fn new() -> Harness {
        let store = ok(Store::in_memory());
        let bc = Arc::new(Recorder::default());
        let wallet = open(&store, &bc).await;
        let genesis = bitcoin::constants::genesis_block(Network::Regtest).block_hash();
        Harness {
            store,
            wallet,
            bc,
            chain: vec![genesis],
            n: 0,
        }
    }

    /// A wallet with one confirmed coin of `sat` paid to a new address of `kind`: the
    /// harness, that address and the paying transaction.
    async fn funded(kind: AddrRequest, sat: u64) -> (Harness, ScriptBuf, Transaction) {
        let mut h = Harness::new().await;
        let script = h.addr(kind).await;
        let tx = h.pay(&script, sat);
        h.mine(vec![tx.clone()]);
        (h, script, tx)
    }

    /// A wallet with confirmed coins of `sats`, all paid to one new P2TR address in one
    /// block; and the paying transactions.
    async fn funded_p2tr<const N: usize>(sats: [u64; N]) -> (Harness, [Transaction; N]) {
        let mut h = Harness::new().await;
        let tr = h.addr(AddrRequest::P2tr).await;
        let txs = sats.map(|sat| h.pay(&tr, sat));
        h.mine(txs.to_vec());
        (h, txs)
    }

    /// A wallet with a confirmed coin of `tr_sat` paid to a new P2TR address and one of
    /// `wpkh_sat` to a new P2WPKH address, in one block: the harness, the two addresses and
    /// the two paying transactions.
    async fn funded_both(
        tr_sat: u64,
        wpkh_sat: u64,
    ) -> (Harness, [ScriptBuf; 2], [Transaction; 2]) {
        let mut h = Harness::new().await;
        let tr = h.addr(AddrRequest::P2tr).await;
        let wpkh = h.addr(AddrRequest::Bech32).await;
        let txs = [h.pay(&tr, tr_sat), h.pay(&wpkh, wpkh_sat)];
        h.mine(txs.to_vec());
        (h, [tr, wpkh], txs)
    }

    /// A transaction from nowhere paying `value` to `script`.
    fn pay(&mut self, script: &ScriptBuf, value: u64) -> Transaction {
        self.n += 1;
        Transaction {
            version: Version::TWO,
            lock_time: LockTime::ZERO,
            input: vec![TxIn {
                previous_output: OutPoint::new(Txid::from_byte_array([self.n as u8; 32]), self.n),
                ..Default::default()
            }],
            output: vec![TxOut {
                value: Amount::from_sat(value),
                script_pubkey: script.clone(),
            }],
        }
    }

    fn block(&mut self, coinbase_to: Option<&ScriptBuf>, txs: Vec<Transaction>) -> Block {
        let height = self.chain.len() as u32;
        self.n += 1;
        let coinbase = Transaction {
            version: Version::TWO,
            lock_time: LockTime::ZERO,
            input: vec![TxIn {
                previous_output: OutPoint::null(),
                script_sig: ScriptBuf::from_bytes(vec![
                    4,
                    height as u8,
                    (height >> 8) as u8,
                    self.n as u8,
                    0,
                ]),
                ..Default::default()
            }],
            output: vec![TxOut {
                value: Amount::from_sat(50_000),
                script_pubkey: coinbase_to
                    .cloned()
                    .unwrap_or_else(|| ScriptBuf::from_bytes(vec![0x51])),
            }],
        };
        let mut txdata = vec![coinbase];
        txdata.extend(txs);
        let mut block = Block {
            header: Header {
                version: BlockVersion::TWO,
                prev_blockhash: self.chain[self.chain.len() - 1],
                merkle_root: TxMerkleNode::all_zeros(),
                time: 1_700_000_000 + height,
                bits: CompactTarget::from_consensus(0x207fffff),
                nonce: self.n,
            },
            txdata,
        };
        if let Some(root) = block.compute_merkle_root() {
            block.header.merkle_root = root;
        }
        block
    }

    /// Mines `txs` in a new block and connects it.
    fn mine(&mut self, txs: Vec<Transaction>) -> Block {
        let b = self.block(None, txs);
        let h = self.chain.len() as u32;
        self.chain.push(b.block_hash());
        self.wallet.block_connected(&b, h);
        b
    }

    fn disconnect_to(&mut self, height: u32) {
        self.chain.truncate(height as usize + 1);
        let hash = self.chain[height as usize];
        self.wallet
            .blocks_disconnected(BlockLocator::new(hash, height));
    }

    async fn addr(&self, req: AddrRequest) -> ScriptBuf {
        let (b, t) = ok(self.wallet.new_address(req).await);
        match req {
            AddrRequest::Bech32 => b.map(|a| a.script_pubkey()),
            _ => t.map(|a| a.script_pubkey()),
        }
        .unwrap_or_else(|| panic!("no address"))
    }

    /// Whether every coin of the wallet is confirmed.
    fn all_confirmed(&self) -> bool {
        self.wallet
            .list_funds(false)
            .iter()
            .all(|f| f.status == Status::Confirmed)
    }

    fn funds(&self) -> Vec<Fund> {
        self.wallet.list_funds(true)
    }

    fn reserved(&self) -> usize {
        self.wallet.state().reserved.len()
    }
}

fn external() -> ScriptBuf {
    // A p2wpkh script that is not ours.
    ScriptBuf::new_p2wpkh(&bitcoin::WPubkeyHash::from_byte_array([9u8; 20]))
}

fn req(script: ScriptBuf, amt: Amt) -> SpendRequest {
    SpendRequest {
        outputs: vec![(script, amt)],
        feerate_perkw: FEERATE,
        minconf: 1,
        utxos: None,
    }
}

/// Checks every input's signature against the output it spends.
fn verify(tx: &Transaction, prevouts: &[TxOut]) {
    let all: Vec<usize> = (0..prevouts.len()).collect();
    verify_inputs(tx, prevouts, &all);
}

/// Checks the signatures of inputs `only` (`prevouts` has every input's output).
fn verify_inputs(tx: &Transaction, prevouts: &[TxOut], only: &[usize]) {
    let secp = Secp256k1::verification_only();
    let mut cache = SighashCache::new(tx);
    for (i, p) in prevouts.iter().enumerate() {
        if !only.contains(&i) {
            continue;
        }
        let w = &tx.input[i].witness;
        if p.script_pubkey.is_p2tr() {
            assert_eq!(w.len(), 1);
            let sig = ok(bitcoin::taproot::Signature::from_slice(&w[0]));
            let msg = ok(cache.taproot_key_spend_signature_hash(
                i,
                &Prevouts::All(prevouts),
                sig.sighash_type,
            ));
            let pk = ok(XOnlyPublicKey::from_slice(
                &p.script_pubkey.as_bytes()[2..34],
            ));
            ok(secp.verify_schnorr(&sig.signature, &Message::from(msg), &pk));
        } else {
            assert!(p.script_pubkey.is_p2wpkh());
            assert_eq!(w.len(), 2);
            let sig = ok(bitcoin::ecdsa::Signature::from_slice(&w[0]));
            let pk = ok(bitcoin::PublicKey::from_slice(&w[1]));
            assert_eq!(
                ScriptBuf::new_p2wpkh(&ok(pk.wpubkey_hash())),
                p.script_pubkey
            );
            let msg =
                ok(cache.p2wpkh_signature_hash(i, &p.script_pubkey, p.value, sig.sighash_type));
            ok(secp.verify_ecdsa(&Message::from(msg), &sig.signature, &pk.inner));
        }
    }
}

#[tokio::test]
async fn funds_arrive_confirmed_from_blocks_of_both_kinds() {
    let mut h = Harness::new().await;
    let tr = h.addr(AddrRequest::P2tr).await;
    let wpkh = h.addr(AddrRequest::Bech32).await;
    assert!(tr.is_p2tr());
    assert!(wpkh.is_p2wpkh());
    h.mine(vec![]);
    let a = h.pay(&tr, 100_000_000);
    let b = h.pay(&wpkh, 50_000_000);
    h.mine(vec![a.clone(), b.clone()]);
    let f = h.funds();
    assert_eq!(f.len(), 2);
    for x in &f {
        assert_eq!(x.status, Status::Confirmed);
        assert_eq!(x.blockheight, Some(2));
        assert!(x.reserved_to.is_none());
    }
    let total: u64 = f.iter().map(|x| x.value.to_sat()).sum();
    assert_eq!(total, 150_000_000);
    assert_eq!(h.wallet.spendable_sat(1), 150_000_000);
    assert!(
        f[0].address
            .as_deref()
            .is_some_and(|s| s.starts_with("bcrt1"))
    );
    let txs = h.wallet.list_transactions();
    assert_eq!(txs.len(), 2);
    assert!(txs.iter().all(|t| t.blockheight == Some(2)));
    let idx: HashSet<u32> = txs.iter().filter_map(|t| t.txindex).collect();
    assert_eq!(idx, HashSet::from([1, 2]));
    // `all` gives one of each, different from before.
    let (b2, t2) = ok(h.wallet.new_address(AddrRequest::All).await);
    assert!(b2.is_some_and(|a| a.script_pubkey() != wpkh));
    assert!(t2.is_some_and(|a| a.script_pubkey() != tr));
}

#[tokio::test]
async fn coinbase_outputs_are_immature_for_100_blocks() {
    let mut h = Harness::new().await;
    let tr = h.addr(AddrRequest::P2tr).await;
    let b = h.block(Some(&tr), vec![]);
    h.chain.push(b.block_hash());
    h.wallet.block_connected(&b, 1);
    assert_eq!(h.funds()[0].status, Status::Immature);
    assert_eq!(h.wallet.spendable_sat(1), 0);
    let e = h.wallet.withdraw(&req(external(), Amt::Sat(10_000))).await;
    assert!(matches!(e, Err(WalletError::CannotAfford(_))));
    for _ in 0..99 {
        h.mine(vec![]);
    }
    assert_eq!(h.funds()[0].status, Status::Confirmed);
    assert_eq!(h.wallet.spendable_sat(1), 50_000);
}

#[tokio::test]
async fn withdraw_spends_both_kinds_with_valid_signatures_change_and_fee() {
    let (mut h, _, [a, b]) = Harness::funded_both(100_000_000, 50_000_000).await;
    // Needs both coins.
    let (psbt, tx) = ok(h
        .wallet
        .withdraw(&req(external(), Amt::Sat(120_000_000)))
        .await);
    assert_eq!(h.bc.sent.lock().map(|s| s.len()).unwrap_or(0), 1);
    let ins: HashSet<OutPoint> = tx.input.iter().map(|i| i.previous_output).collect();
    assert_eq!(
        ins,
        HashSet::from([
            OutPoint::new(a.compute_txid(), 0),
            OutPoint::new(b.compute_txid(), 0)
        ])
    );
    let prevouts: Vec<TxOut> = tx
        .input
        .iter()
        .map(|i| {
            if i.previous_output.txid == a.compute_txid() {
                a.output[0].clone()
            } else {
                b.output[0].clone()
            }
        })
        .collect();
    verify(&tx, &prevouts);
    assert_eq!(tx.output.len(), 2);
    assert_eq!(tx.output[0].script_pubkey, external());
    assert_eq!(tx.output[0].value.to_sat(), 120_000_000);
    assert!(tx.output[1].script_pubkey.is_p2tr());
    let change = tx.output[1].value.to_sat();
    let fee = 150_000_000 - 120_000_000 - change;
    let expected = fee_for(FEERATE, tx.weight());
    assert!(
        fee >= expected && fee <= expected + 2,
        "fee {fee} vs {expected}"
    );
    assert!(psbt.inputs.iter().all(|i| i.final_script_witness.is_some()));
    // Inputs are spent, the change is ours and unconfirmed, nothing is reserved.
    let f = h.wallet.list_funds(false);
    assert_eq!(f.len(), 1);
    assert_eq!(f[0].outpoint, OutPoint::new(tx.compute_txid(), 1));
    assert_eq!(f[0].status, Status::Unconfirmed);
    assert_eq!(h.reserved(), 0);
    assert_eq!(
        h.funds()
            .iter()
            .filter(|f| f.status == Status::Spent)
            .count(),
        2
    );
    // Unconfirmed change is not spendable with minconf 1, but is with 0.
    assert_eq!(h.wallet.spendable_sat(1), 0);
    assert_eq!(h.wallet.spendable_sat(0), change);
    h.mine(vec![tx.clone()]);
    let f = h.wallet.list_funds(false);
    assert_eq!(f[0].status, Status::Confirmed);
    assert_eq!(f[0].blockheight, Some(2));
}

#[tokio::test]
async fn withdraw_all_leaves_no_change() {
    let (h, _, _) = Harness::funded_both(30_000, 20_000).await;
    let (_, tx) = ok(h.wallet.withdraw(&req(external(), Amt::All)).await);
    assert_eq!(tx.input.len(), 2);
    assert_eq!(tx.output.len(), 1);
    let fee = 50_000 - tx.output[0].value.to_sat();
    let expected = fee_for(FEERATE, tx.weight());
    assert!(
        fee >= expected && fee <= expected + 2,
        "fee {fee} vs {expected}"
    );
    assert!(h.wallet.list_funds(false).is_empty());
    let e = h.wallet.withdraw(&req(external(), Amt::All)).await;
    assert!(matches!(e, Err(WalletError::CannotAfford(_))));
}

#[tokio::test]
async fn bad_inputs_give_cln_codes_and_reserve_nothing() {
    let (h, _, _) = Harness::funded(AddrRequest::P2tr, 100_000).await;
    // The variant, which the RPC turns into CLN's code (rpc::onchain::wallet_error).
    let code = |r: Result<(Psbt, Transaction), WalletError>| {
        r.err().map(|e| match e {
            WalletError::CannotAfford(_) => 301,
            WalletError::Dust(_) => 302,
            WalletError::InvalidParams(_) => -32602,
            other => panic!("unexpected {other:?}"),
        })
    };
    assert_eq!(
        code(h.wallet.withdraw(&req(external(), Amt::Sat(200_000))).await),
        Some(301)
    );
    assert_eq!(
        code(h.wallet.withdraw(&req(external(), Amt::Sat(100_000))).await),
        Some(301)
    );
    assert_eq!(
        code(h.wallet.withdraw(&req(external(), Amt::Sat(100))).await),
        Some(302)
    );
    let mut r = req(external(), Amt::Sat(10_000));
    r.utxos = Some(vec![OutPoint::new(Txid::from_byte_array([1; 32]), 5)]);
    assert_eq!(code(h.wallet.withdraw(&r).await), Some(-32602));
    let mut r = req(external(), Amt::Sat(10_000));
    r.minconf = 5;
    assert_eq!(code(h.wallet.withdraw(&r).await), Some(301));
    let mut r = req(external(), Amt::All);
    r.outputs.push((external(), Amt::All));
    assert_eq!(code(h.wallet.withdraw(&r).await), Some(-32602));
    // A refused broadcast: -1 with bitcoind's reason, coins free again.
    h.bc.fail.store(true, Ordering::SeqCst);
    let e = h.wallet.withdraw(&req(external(), Amt::Sat(10_000))).await;
    let Err(WalletError::Broadcast(e)) = e else {
        panic!("expected a refused broadcast, got {e:?}")
    };
    assert!(e.message.contains("min relay fee not met"));
    assert_eq!(h.reserved(), 0);
    assert_eq!(h.wallet.spendable_sat(1), 100_000);
    assert!(
        h.wallet
            .list_funds(true)
            .iter()
            .all(|f| f.status == Status::Confirmed && f.reserved_to.is_none())
    );
}

#[tokio::test]
async fn reservations_prevent_double_use() {
    let (h, _) = Harness::funded_p2tr([100_000, 100_000]).await;
    // txprepare reserves one coin for 72 blocks.
    let p = ok(h.wallet.prepare(&req(external(), Amt::Sat(50_000))).await);
    assert_eq!(p.inputs.len(), 1);
    let f = h.wallet.list_funds(false);
    let reserved: Vec<_> = f.iter().filter(|f| f.reserved_to.is_some()).collect();
    assert_eq!(reserved.len(), 1);
    assert_eq!(reserved[0].reserved_to, Some(1 + RESERVE_BLOCKS));
    // The reserved coin cannot be named nor selected.
    let mut r = req(external(), Amt::Sat(10_000));
    r.utxos = Some(p.inputs.clone());
    assert!(matches!(
        h.wallet.withdraw(&r).await,
        Err(WalletError::Other(_))
    ));
    let e = h.wallet.withdraw(&req(external(), Amt::Sat(150_000))).await;
    assert!(matches!(e, Err(WalletError::CannotAfford(_))));
    // Two withdraws in flight at once (each broadcast waits for the other's) take different
    // coins... after txdiscard frees the first one.
    let txid = p.psbt.unsigned_tx.compute_txid();
    let unsigned = ok(h.wallet.discard(txid));
    assert_eq!(unsigned.compute_txid(), txid);
    assert!(h.wallet.discard(txid).is_err());
    assert_eq!(h.reserved(), 0);
    *h.bc.meet.lock().unwrap_or_else(|p| p.into_inner()) =
        Some(Arc::new(tokio::sync::Barrier::new(2)));
    let w1 = h.wallet.clone();
    let w2 = h.wallet.clone();
    let both = tokio::time::timeout(Duration::from_secs(60), async {
        tokio::join!(
            tokio::spawn(async move { w1.withdraw(&req(external(), Amt::Sat(60_000))).await }),
            tokio::spawn(async move { w2.withdraw(&req(external(), Amt::Sat(60_000))).await }),
        )
    });
    let (r1, r2) = both.await.unwrap_or_else(|_| {
        panic!("the two withdraws never had their broadcasts in flight at once")
    });
    *h.bc.meet.lock().unwrap_or_else(|p| p.into_inner()) = None;
    let (_, t1) = ok(ok(r1));
    let (_, t2) = ok(ok(r2));
    let i1: HashSet<_> = t1.input.iter().map(|i| i.previous_output).collect();
    let i2: HashSet<_> = t2.input.iter().map(|i| i.previous_output).collect();
    assert!(i1.is_disjoint(&i2));
    // A third finds nothing confirmed left.
    let e = h.wallet.withdraw(&req(external(), Amt::Sat(10_000))).await;
    assert!(matches!(e, Err(WalletError::CannotAfford(_))));
    assert_eq!(h.reserved(), 0);
}

#[tokio::test]
async fn txprepare_then_txsend_signs_and_broadcasts() {
    let (h, _, a) = Harness::funded(AddrRequest::Bech32, 100_000).await;
    let p = ok(h.wallet.prepare(&req(external(), Amt::Sat(40_000))).await);
    let txid = p.psbt.unsigned_tx.compute_txid();
    let (_, tx) = ok(h.wallet.send_prepared(txid).await);
    assert_eq!(tx.compute_txid(), txid);
    verify(&tx, &[a.output[0].clone()]);
    assert!(h.wallet.send_prepared(txid).await.is_err());
    assert_eq!(h.reserved(), 0);
}

#[tokio::test]
async fn fund_builds_a_signed_transaction_and_keeps_inputs_reserved() {
    let (h, _, a) = Harness::funded(AddrRequest::P2tr, 1_000_000).await;
    let funding = TxOut {
        value: Amount::from_sat(500_000),
        script_pubkey: ScriptBuf::new_p2wsh(&bitcoin::WScriptHash::from_byte_array([3; 32])),
    };
    let tx = ok(h.wallet.fund(vec![funding.clone()], FEERATE, false).await);
    verify(&tx, &[a.output[0].clone()]);
    assert_eq!(tx.output[0], funding);
    assert_eq!(h.reserved(), 1);
    ok(h.wallet.mark_broadcast(&tx).await);
    assert_eq!(h.reserved(), 0);
    assert_eq!(h.wallet.list_funds(false).len(), 1);
}

#[tokio::test]
async fn reorgs_move_funds_back_and_forth() {
    let mut h = Harness::new().await;
    let tr = h.addr(AddrRequest::P2tr).await;
    h.mine(vec![]);
    let a = h.pay(&tr, 100_000);
    h.mine(vec![a.clone()]);
    h.mine(vec![]);
    assert_eq!(h.funds()[0].status, Status::Confirmed);
    // Block 2 goes away: its coin is unconfirmed again (back in the mempool, as the
    // backend does with disconnected transactions), and not spendable with minconf 1.
    h.disconnect_to(1);
    let f = h.funds();
    assert_eq!(f.len(), 1);
    assert_eq!(f[0].status, Status::Unconfirmed);
    assert_eq!(f[0].blockheight, None);
    assert_eq!(h.wallet.spendable_sat(1), 0);
    assert_eq!(h.wallet.locator().map(|l| l.height), Some(1));
    // Another branch confirms it at height 3.
    h.mine(vec![]);
    h.mine(vec![a.clone()]);
    let f = h.funds();
    assert_eq!(f.len(), 1);
    assert_eq!(f[0].blockheight, Some(3));
    // Our own broadcast, confirmed then reorged out, is unconfirmed again.
    let (_, tx) = ok(h.wallet.withdraw(&req(external(), Amt::Sat(30_000))).await);
    h.mine(vec![tx.clone()]);
    assert!(h.all_confirmed());
    h.disconnect_to(3);
    let f = h.wallet.list_funds(false);
    assert_eq!(f.len(), 1);
    assert_eq!(f[0].outpoint.txid, tx.compute_txid());
    assert_eq!(f[0].status, Status::Unconfirmed);
    // A block whose parent is not ours (no disconnect call) also converges.
    let fork_parent = h.chain[2];
    h.chain.truncate(3);
    assert_eq!(h.chain[2], fork_parent);
    h.mine(vec![tx.clone()]);
    let f = h.wallet.list_funds(false);
    assert_eq!(f[0].status, Status::Confirmed);
    assert_eq!(f[0].blockheight, Some(3));
    assert!(
        h.funds()
            .iter()
            .all(|x| x.outpoint.txid != a.compute_txid() || x.status == Status::Spent)
    );
}

#[tokio::test]
async fn reorgs_are_persisted() {
    let mut h = Harness::new().await;
    let tr = h.addr(AddrRequest::P2tr).await;
    let a = h.pay(&tr, 100_000);
    let b = h.pay(&tr, 70_000);
    h.mine(vec![a.clone()]);
    h.mine(vec![b]);
    ok(h.wallet.persist().await);
    h.disconnect_to(1);
    ok(h.wallet.persist().await);
    let wallet = open(&h.store, &h.bc).await;
    assert_eq!(wallet.locator().map(|l| l.height), Some(1));
    let f = wallet.list_funds(true);
    assert_eq!(f.len(), 2);
    assert_eq!(f[0].outpoint, OutPoint::new(a.compute_txid(), 0));
    assert_eq!(f[0].status, Status::Confirmed);
    assert_eq!(f[1].status, Status::Unconfirmed);
    // The stream continues from the fork point.
    h.wallet = wallet;
    h.mine(vec![]);
    assert_eq!(h.wallet.locator().map(|l| l.height), Some(2));
}

#[tokio::test]
async fn reload_keeps_balance_addresses_and_history() {
    let (mut h, [tr, wpkh], _) = Harness::funded_both(100_000, 70_000).await;
    let (_, tx) = ok(h.wallet.withdraw(&req(external(), Amt::Sat(20_000))).await);
    ok(h.wallet.persist().await);
    let funds = |w: &Wallet| -> Vec<_> {
        w.list_funds(true)
            .iter()
            .map(|f| (f.outpoint, f.status, f.value, f.blockheight))
            .collect()
    };
    let before = funds(&h.wallet);
    let txs = h.wallet.list_transactions().len();
    let wallet = open(&h.store, &h.bc).await;
    assert_eq!(funds(&wallet), before);
    assert_eq!(wallet.list_transactions().len(), txs);
    assert_eq!(wallet.spendable_sat(0), h.wallet.spendable_sat(0));
    assert_eq!(
        wallet.locator().map(|l| l.block_hash),
        h.wallet.locator().map(|l| l.block_hash)
    );
    // Addresses continue after the revealed ones.
    let (b2, t2) = ok(wallet.new_address(AddrRequest::All).await);
    assert!(t2.is_some_and(|a| a.script_pubkey() != tr));
    assert!(b2.is_some_and(|a| a.script_pubkey() != wpkh));
    // Blocks keep coming after the reload.
    h.wallet = wallet;
    h.mine(vec![tx.clone()]);
    assert!(h.all_confirmed());
    // A third open compacts the rows into one per wallet.
    ok(h.wallet.persist().await);
    let _w = open(&h.store, &h.bc).await;
    let rows: i64 = ok(h
        .store
        .with(|c| Ok(c.query_row("SELECT COUNT(*) FROM wallet_changesets", [], |r| r.get(0))?))
        .await);
    assert_eq!(rows, 2);
}

#[tokio::test]
async fn a_fresh_wallet_joins_the_stream_at_any_height() {
    let mut h = Harness::new().await;
    assert!(h.wallet.locator().is_none());
    let tr = h.addr(AddrRequest::P2tr).await;
    // The stream starts at its tip (height 500): the wallet fills the gap below.
    for _ in 0..499 {
        let b = h.block(None, vec![]);
        h.chain.push(b.block_hash());
    }
    let a = h.pay(&tr, 100_000);
    h.mine(vec![a]);
    let f = h.funds();
    assert_eq!(f.len(), 1);
    assert_eq!(f[0].blockheight, Some(500));
    let loc = h.wallet.locator().unwrap_or_else(|| panic!("no locator"));
    assert_eq!(loc.height, 500);
    assert_eq!(loc.previous_blocks[0], Some(h.chain[499]));
}

/// A wallet whose spends must keep `min` sat while `anchors` says anchor channels exist.
fn with_reserve(h: &Harness, min: u64) -> Arc<AtomicBool> {
    let anchors = Arc::new(AtomicBool::new(true));
    let a = anchors.clone();
    h.wallet.set_min_emergency_sat(min);
    h.wallet
        .on_anchor_channels(Box::new(move || a.load(Ordering::SeqCst)));
    anchors
}

#[tokio::test]
async fn the_emergency_reserve_refuses_spends_below_it_with_code_313() {
    let (h, _, _) = Harness::funded(AddrRequest::P2tr, 100_000).await;
    let anchors = with_reserve(&h, 25_000);

    // 90,000 sat plus fees would leave less than 25,000 sat: CLN's error, nothing reserved.
    let e = h.wallet.withdraw(&req(external(), Amt::Sat(90_000))).await;
    let Err(e @ WalletError::Emergency(_)) = e else {
        panic!("expected the emergency reserve error, got {e:?}")
    };
    assert_eq!(
        e.to_string(),
        "We would not have enough left for min-emergency-msat 25000sat"
    );
    assert_eq!(h.reserved(), 0);
    // txprepare and channel funding too.
    assert!(matches!(
        h.wallet.prepare(&req(external(), Amt::Sat(90_000))).await,
        Err(WalletError::Emergency(_))
    ));
    let out = TxOut {
        value: Amount::from_sat(90_000),
        script_pubkey: external(),
    };
    assert!(matches!(
        h.wallet.fund(vec![out.clone()], FEERATE, false).await,
        Err(WalletError::Emergency(_))
    ));
    // More than the wallet holds is still plain 301.
    assert!(matches!(
        h.wallet.withdraw(&req(external(), Amt::Sat(200_000))).await,
        Err(WalletError::CannotAfford(_))
    ));

    // 'all' leaves exactly the reserve as change.
    let (_, tx) = ok(h.wallet.withdraw(&req(external(), Amt::All)).await);
    assert_eq!(tx.output.len(), 2);
    let change: Vec<u64> = tx
        .output
        .iter()
        .filter(|o| o.script_pubkey != external())
        .map(|o| o.value.to_sat())
        .collect();
    assert_eq!(change, vec![25_000]);
    let sent = tx.output.iter().find(|o| o.script_pubkey == external());
    assert!(sent.is_some_and(|o| o.value.to_sat() > 70_000 && o.value.to_sat() < 75_000));

    // Without anchor channels the same 90,000 sat spend goes through (a fresh coin).
    let mut h2 = Harness::new().await;
    let tr2 = h2.addr(AddrRequest::P2tr).await;
    let b = h2.pay(&tr2, 100_000);
    h2.mine(vec![b]);
    let none = with_reserve(&h2, 25_000);
    none.store(false, Ordering::SeqCst);
    ok(h2.wallet.withdraw(&req(external(), Amt::Sat(90_000))).await);
    // ... but funding an anchor channel keeps it even before the channel exists.
    let c = h2.pay(&tr2, 100_000);
    h2.mine(vec![c]);
    assert!(matches!(
        h2.wallet.fund(vec![out], FEERATE, true).await,
        Err(WalletError::Emergency(_))
    ));
    anchors.store(false, Ordering::SeqCst);
}

#[tokio::test]
async fn coins_left_untouched_count_towards_the_reserve() {
    let (mut h, _) = Harness::funded_p2tr([100_000, 30_000]).await;
    with_reserve(&h, 25_000);
    // The 100,000 sat coin pays; the 30,000 sat one stays and covers the reserve.
    let (_, tx) = ok(h.wallet.withdraw(&req(external(), Amt::Sat(90_000))).await);
    assert_eq!(tx.input.len(), 1);
    ok(h.wallet.mark_broadcast(&tx).await);
    h.mine(vec![tx]);
    // Now 30,000 sat and some change: 20,000 sat more would go below 25,000.
    assert!(matches!(
        h.wallet.withdraw(&req(external(), Amt::Sat(20_000))).await,
        Err(WalletError::Emergency(_))
    ));
    ok(h.wallet.withdraw(&req(external(), Amt::Sat(5_000))).await);
}

#[tokio::test]
async fn bump_source_lists_signs_only_our_inputs_and_reserves_coins() {
    use lightning::util::wallet_utils::WalletSourceSync;
    let mut h = Harness::new().await;
    let tr = h.addr(AddrRequest::P2tr).await;
    let wpkh = h.addr(AddrRequest::Bech32).await;
    let a = h.pay(&tr, 100_000);
    let b = h.pay(&wpkh, 50_000);
    let src = bump::BumpSource(h.wallet.clone());
    // Unconfirmed coins are not offered.
    h.wallet
        .state()
        .tr
        .w
        .apply_unconfirmed_txs([(a.clone(), 1)]);
    assert!(ok(src.list_confirmed_utxos()).is_empty());
    h.mine(vec![a.clone(), b.clone()]);
    let utxos = ok(src.list_confirmed_utxos());
    assert_eq!(utxos.len(), 2);
    let w = |spk: &ScriptBuf| {
        utxos
            .iter()
            .find(|u| &u.output.script_pubkey == spk)
            .map(|u| u.satisfaction_weight)
    };
    // Empty script_sig (4 WU) plus the witness: 64-byte Schnorr signature; DER signature of
    // at most 72 bytes with its sighash byte and a 33-byte key (LDK's own figures).
    assert_eq!(w(&tr), Some(4 + 66));
    assert_eq!(w(&wpkh), Some(4 + 108));
    assert_eq!(ok(src.get_prevtx(OutPoint::new(a.compute_txid(), 0))), a);
    assert!(
        src.get_prevtx(OutPoint::new(Txid::from_byte_array([3; 32]), 0))
            .is_err()
    );
    let change = ok(src.get_change_script());
    assert!(change.is_p2tr() && h.wallet.state().tr.w.is_mine(change.clone()));

    // A transaction as LDK builds it: a foreign input first (an anchor), then our coins.
    let foreign = TxOut {
        value: Amount::from_sat(330),
        script_pubkey: ScriptBuf::new_p2wsh(&bitcoin::WScriptHash::from_byte_array([5; 32])),
    };
    let ours_a = OutPoint::new(a.compute_txid(), 0);
    let ours_b = OutPoint::new(b.compute_txid(), 0);
    let unsigned = Transaction {
        version: Version::TWO,
        lock_time: LockTime::ZERO,
        input: [
            OutPoint::new(Txid::from_byte_array([4; 32]), 1),
            ours_a,
            ours_b,
        ]
        .into_iter()
        .map(|op| TxIn {
            previous_output: op,
            sequence: Sequence::ENABLE_RBF_NO_LOCKTIME,
            ..Default::default()
        })
        .collect(),
        output: vec![TxOut {
            value: Amount::from_sat(140_000),
            script_pubkey: change,
        }],
    };
    let prevouts = vec![foreign, a.output[0].clone(), b.output[0].clone()];
    let mut psbt = ok(Psbt::from_unsigned_tx(unsigned));
    for (i, p) in prevouts.iter().enumerate() {
        psbt.inputs[i].witness_utxo = Some(p.clone());
    }
    let tx = ok(src.sign_psbt(psbt.clone()).map_err(|()| "sign"));
    assert!(
        tx.input[0].witness.is_empty(),
        "the anchor is LDK's to sign"
    );
    verify_inputs(&tx, &prevouts, &[1, 2]);
    // The witnesses fit the announced satisfaction weights (what LDK's fee maths used).
    assert!(tx.input[1].witness.size() as u64 <= 66);
    assert!(tx.input[2].witness.size() as u64 <= 108);
    // Nothing of ours: refused.
    let mut only_foreign = psbt.clone();
    only_foreign.unsigned_tx.input.truncate(1);
    only_foreign.inputs.truncate(1);
    assert!(src.sign_psbt(only_foreign).is_err());

    // Coins picked for a bump are reserved for every other spend, but LDK still sees them
    // (a later, higher-fee bump of the same claim reuses them).
    ok(h.wallet.reserve_for_bump(&[ours_a]));
    assert_eq!(ok(src.list_confirmed_utxos()).len(), 2);
    assert!(
        h.funds()
            .iter()
            .any(|f| f.outpoint == ours_a && f.reserved_to.is_some())
    );
    let (_, wtx) = ok(h.wallet.withdraw(&req(external(), Amt::All)).await);
    assert_eq!(
        wtx.input
            .iter()
            .map(|i| i.previous_output)
            .collect::<Vec<_>>(),
        vec![ours_b],
        "withdraw must not take the bump's coin"
    );
    ok(h.wallet.reserve_for_bump(&[ours_a]));
    // A coin another spend reserved cannot be taken by a bump (the race LDK's listing
    // cannot see), and one that is not ours neither.
    let c = h.pay(&tr, 70_000);
    h.mine(vec![c.clone()]);
    let ours_c = OutPoint::new(c.compute_txid(), 0);
    let p = ok(h
        .wallet
        .prepare(&SpendRequest {
            utxos: Some(vec![ours_c]),
            ..req(external(), Amt::Sat(10_000))
        })
        .await);
    assert!(h.wallet.reserve_for_bump(&[ours_c]).is_err());
    assert!(
        h.wallet
            .reserve_for_bump(&[OutPoint::new(Txid::from_byte_array([4; 32]), 1)])
            .is_err()
    );
    assert!(
        !ok(src.list_confirmed_utxos())
            .iter()
            .any(|u| u.outpoint == ours_c)
    );
    ok(h.wallet.discard(p.psbt.unsigned_tx.compute_txid()));
    // A bump that will not be sent gives its coins back.
    h.wallet.release_bump(&[ours_a]);
    assert!(
        h.funds()
            .iter()
            .all(|f| f.reserved_to.is_none() || f.outpoint != ours_a)
    );
}

#[tokio::test]
async fn reservations_survive_a_restart_and_so_does_their_release() {
    let (h, _) = Harness::funded_p2tr([100_000, 100_000, 100_000]).await;
    // One coin for txprepare, one for a fee bump.
    let p = ok(h.wallet.prepare(&req(external(), Amt::Sat(50_000))).await);
    let bump_coin = h
        .wallet
        .list_funds(false)
        .iter()
        .map(|f| f.outpoint)
        .find(|op| !p.inputs.contains(op))
        .unwrap_or_else(|| panic!("a free coin"));
    ok(h.wallet.reserve_for_bump(&[bump_coin]));
    ok(h.wallet.persist().await);
    let reserved = |w: &Wallet| -> Vec<(OutPoint, Option<u32>)> {
        let mut v: Vec<_> = w
            .list_funds(false)
            .iter()
            .filter(|f| f.reserved_to.is_some())
            .map(|f| (f.outpoint, f.reserved_to))
            .collect();
        v.sort();
        v
    };
    let before = reserved(&h.wallet);
    assert_eq!(before.len(), 2);
    let wallet = open(&h.store, &h.bc).await;
    assert_eq!(reserved(&wallet), before);
    // The bump coin is still offered to LDK's bump selection (for a re-bump of its claim),
    // and to nothing else.
    assert!(wallet.bump_utxos().iter().any(|u| u.outpoint == bump_coin));
    let e = wallet.withdraw(&req(external(), Amt::Sat(150_000))).await;
    assert!(matches!(e, Err(WalletError::CannotAfford(_))));
    // Releasing is written too.
    wallet.release_bump(&[bump_coin]);
    ok(wallet.persist().await);
    let again = open(&h.store, &h.bc).await;
    assert_eq!(reserved(&again).len(), 1);
    assert!(reserved(&again).iter().all(|(op, _)| p.inputs.contains(op)));
}

/// Takes a transaction and never answers: the node is killed while broadcasting.
#[derive(Default)]
struct Hang {
    got: tokio::sync::Notify,
}

impl TxBroadcaster for Hang {
    fn send(&self, _tx: Transaction) -> BoxFuture<'static, Result<Txid, BroadcastError>> {
        self.got.notify_one();
        Box::pin(std::future::pending())
    }
}

#[tokio::test]
async fn a_kill_during_the_broadcast_leaves_the_coins_reserved_after_a_restart() {
    let (h, _, _) = Harness::funded(AddrRequest::P2tr, 100_000).await;
    ok(h.wallet.persist().await);
    let hang = Arc::new(Hang::default());
    let wallet = ok(Wallet::open(
        h.store.clone(),
        &[7u8; 32],
        Network::Regtest,
        Arc::new(Fixed),
        Some(hang.clone() as Arc<dyn TxBroadcaster>),
    )
    .await);
    let mut spend = tokio::spawn({
        let wallet = wallet.clone();
        async move { wallet.withdraw(&req(external(), Amt::Sat(50_000))).await }
    });
    // The transaction is out; the node dies before hearing back (kill -9).
    tokio::select! {
        _ = hang.got.notified() => {}
        r = &mut spend => panic!("withdraw ended before broadcasting: {r:?}"),
    }
    spend.abort();
    let _ = spend.await;
    drop(wallet);
    // Restarted from the database alone: the only coin is reserved, so a second spend,
    // which would conflict with the first, is refused.
    let restarted = open(&h.store, &h.bc).await;
    let funds = restarted.list_funds(false);
    assert_eq!(funds.len(), 1);
    assert!(funds[0].reserved_to.is_some(), "{:?}", funds[0].reserved_to);
    let e = restarted.withdraw(&req(external(), Amt::Sat(50_000))).await;
    assert!(matches!(e, Err(WalletError::CannotAfford(_))), "{e:?}");
    assert!(h.bc.sent.lock().map(|s| s.is_empty()).unwrap_or(false));
}
