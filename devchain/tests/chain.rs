//! State-machine tests of devchain's chain: mined blocks, mempool acceptance with bitcoind's error
//! codes and messages, RBF, reorgs and persistence. No sockets.

mod common;

use bitcoin::script::Instruction;
use bitcoin::{Amount, OutPoint, ScriptBuf, Sequence, TxOut, absolute};
use common::*;
use devchain::chain::{Chain, ChainOptions, block_subsidy};
use devchain::faucet::Faucet;
use devchain::{RpcError, codes};

fn err(code: i32, message: &str) -> RpcError {
    RpcError::new(code, message)
}

/// BIP34 height as Bitcoin Core encodes it (`CScript() << height`): OP_1..OP_16 for small
/// heights, a minimal little-endian push above.
fn bip34_height(block: &bitcoin::Block) -> i64 {
    let script = &block.txdata[0].input[0].script_sig;
    match script
        .instructions_minimal()
        .next()
        .expect("push")
        .expect("valid")
    {
        Instruction::Op(op) => {
            let code = op.to_u8();
            assert!((0x51..=0x60).contains(&code), "not OP_1..OP_16: {op}");
            (code - 0x50) as i64
        }
        Instruction::PushBytes(b) => {
            let h = bitcoin::script::read_scriptint(b.as_bytes()).expect("minimal number");
            assert_eq!(block.bip34_block_height().expect("bip34") as i64, h);
            h
        }
    }
}

/// `tx` fails its script: Core's `mandatory-script-verify-flag-failed (…)`.
fn assert_script_fails(chain: &mut Chain, tx: bitcoin::Transaction) {
    let e = chain.accept_tx(tx, None).unwrap_err();
    assert_eq!(e.code, codes::VERIFY_REJECTED);
    assert!(
        e.message
            .starts_with("mandatory-script-verify-flag-failed ("),
        "{}",
        e.message
    );
}

#[test]
fn mined_blocks_are_valid_and_link_up() {
    let mut chain = new_chain();
    // Add a block with a transaction so the witness commitment covers a real witness.
    let tx = spend_coinbase(&chain, 1, p2wpkh(&key(1)), 1_000, Sequence::MAX);
    chain.accept_tx(tx.clone(), None).expect("accepted");
    chain.generate(1, &p2wpkh(&key(2))).expect("mined");
    assert_eq!(chain.tip_height(), 102);
    assert_eq!(chain.tip().block.txdata.len(), 2);
    assert_eq!(
        chain.tip().block.txdata[1].compute_txid(),
        tx.compute_txid()
    );
    // The coinbase collects subsidy plus fee.
    assert_eq!(
        chain.tip().block.txdata[0].output[0].value,
        block_subsidy(102) + Amount::from_sat(1_000)
    );

    for height in 1..=chain.tip_height() {
        let e = chain.entry(&chain.hash_at(height).unwrap()).unwrap();
        let prev = chain.entry(&chain.hash_at(height - 1).unwrap()).unwrap();
        assert!(e.block.check_merkle_root(), "merkle root at {height}");
        assert!(
            e.block.check_witness_commitment(),
            "witness commitment at {height}"
        );
        assert_eq!(bip34_height(&e.block), height as i64);
        assert_eq!(e.block.header.prev_blockhash, prev.hash);
        assert_eq!(e.block.header.bits.to_consensus(), 0x207f_ffff);
        e.block
            .header
            .validate_pow(e.block.header.target())
            .expect("pow");
        assert_eq!(e.chainwork, prev.chainwork + e.block.header.work());
        assert!(
            e.block.header.time > prev.mtp,
            "time above the previous median time past"
        );
        assert_eq!(e.height, height);
    }
    // Regtest: each block adds work 2, genesis included.
    let hex = devchain::util::work_hex(chain.tip().chainwork);
    assert_eq!(u64::from_str_radix(&hex[48..], 16).unwrap(), 2 * 103);
}

#[test]
fn double_spends_are_rejected() {
    let mut chain = new_chain();
    let a = spend_coinbase(&chain, 1, p2wpkh(&key(1)), 1_000, Sequence::MAX);
    let b = spend_coinbase(&chain, 1, p2wpkh(&key(2)), 2_000, Sequence::MAX);
    chain.accept_tx(a.clone(), None).expect("first spend");
    // Resending the same transaction is fine, like bitcoind.
    assert_eq!(chain.accept_tx(a.clone(), None), Ok(a.compute_txid()));
    // `a` does not signal replaceability.
    assert_eq!(
        chain.accept_tx(b.clone(), None),
        Err(err(codes::VERIFY_REJECTED, "txn-mempool-conflict"))
    );
    chain.generate(1, &p2wpkh(&key(3))).unwrap();
    assert!(chain.mempool().is_empty());
    assert_eq!(
        chain.accept_tx(b, None),
        Err(err(codes::VERIFY_ERROR, "bad-txns-inputs-missingorspent"))
    );
    assert_eq!(
        chain.accept_tx(a, None),
        Err(err(
            codes::VERIFY_ALREADY_IN_CHAIN,
            "Transaction already in block chain"
        ))
    );
}

#[test]
fn immature_coinbase_spend_is_rejected() {
    let mut chain = new_chain();
    // Tip 101, next block 102: the coinbase of block 3 is at depth 99.
    let tx = spend_coinbase(&chain, 3, p2wpkh(&key(1)), 1_000, Sequence::MAX);
    assert_eq!(
        chain.accept_tx(tx.clone(), None),
        Err(err(
            codes::VERIFY_REJECTED,
            "bad-txns-premature-spend-of-coinbase, tried to spend coinbase at depth 99"
        ))
    );
    chain.generate(1, &p2wpkh(&key(2))).unwrap();
    assert_eq!(chain.accept_tx(tx.clone(), None), Ok(tx.compute_txid()));
}

#[test]
fn bad_signature_is_rejected() {
    let mut chain = new_chain();
    let (_, value) = coinbase_at(&chain, 1);
    let mut tx = spend_coinbase(&chain, 1, p2wpkh(&key(1)), 1_000, Sequence::MAX);
    // Signed by a key that does not own the coin: the pubkey hash does not match.
    sign_p2wpkh(&mut tx, &[value], &key(9));
    assert_script_fails(&mut chain, tx.clone());
    // Right key, but the signature commits to another amount.
    sign_p2wpkh(&mut tx, &[value + Amount::from_sat(1)], &faucet_key());
    assert_script_fails(&mut chain, tx.clone());
    // Correctly signed: accepted.
    sign_p2wpkh(&mut tx, &[value], &faucet_key());
    assert_eq!(chain.accept_tx(tx.clone(), None), Ok(tx.compute_txid()));
}

#[test]
fn value_creation_is_rejected() {
    let mut chain = new_chain();
    let (outpoint, value) = coinbase_at(&chain, 1);
    let mut tx = one_output(
        outpoint,
        value,
        Sequence::MAX,
        absolute::LockTime::ZERO,
        value + Amount::from_sat(1),
        p2wpkh(&key(1)),
    );
    sign_p2wpkh(&mut tx, &[value], &faucet_key());
    assert_eq!(
        chain.accept_tx(tx, None),
        Err(err(
            codes::VERIFY_REJECTED,
            "bad-txns-in-belowout, value in (50.00) < value out (50.00000001)"
        ))
    );
}

#[test]
fn fee_below_min_relay_and_dust_are_rejected() {
    let mut chain = new_chain();
    let tx = spend_coinbase(&chain, 1, p2wpkh(&key(1)), 50, Sequence::MAX);
    let e = chain.accept_tx(tx, None).unwrap_err();
    assert_eq!(e.code, codes::VERIFY_REJECTED);
    assert!(
        e.message.starts_with("min relay fee not met, 50 < "),
        "{}",
        e.message
    );

    let (outpoint, value) = coinbase_at(&chain, 1);
    let mut tx = unsigned(
        &[Spend {
            outpoint,
            value,
            sequence: Sequence::MAX,
        }],
        vec![
            TxOut {
                value: Amount::from_sat(293),
                script_pubkey: p2wpkh(&key(1)),
            },
            TxOut {
                value: value - Amount::from_sat(10_293),
                script_pubkey: p2wpkh(&key(1)),
            },
        ],
        absolute::LockTime::ZERO,
    );
    sign_p2wpkh(&mut tx, &[value], &faucet_key());
    assert_eq!(
        chain.accept_tx(tx, None),
        Err(err(codes::VERIFY_REJECTED, "dust"))
    );
}

#[test]
fn max_feerate_is_enforced() {
    let mut chain = new_chain();
    // 1 BTC fee on ~110 vbytes is far above 0.10 BTC/kvB.
    let tx = spend_coinbase(&chain, 1, p2wpkh(&key(1)), 100_000_000, Sequence::MAX);
    assert_eq!(
        chain.accept_tx(tx.clone(), Some(10_000_000)),
        Err(err(
            codes::VERIFY_ERROR,
            "Fee exceeds maximum configured by user (e.g. -maxtxfee, maxfeerate)"
        ))
    );
    // maxfeerate 0 means no limit.
    assert_eq!(chain.accept_tx(tx.clone(), Some(0)), Ok(tx.compute_txid()));
}

#[test]
fn locktime_must_be_final_at_next_block() {
    let mut chain = new_chain();
    let lock = chain.tip_height() + 1;
    let tx = spend_coinbase_locked(
        &chain,
        1,
        p2wpkh(&key(1)),
        1_000,
        Sequence::ENABLE_LOCKTIME_NO_RBF,
        absolute::LockTime::from_height(lock).unwrap(),
    );
    // A block at height `lock` cannot contain it yet (nLockTime must be below the height).
    assert_eq!(
        chain.accept_tx(tx.clone(), None),
        Err(err(codes::VERIFY_REJECTED, "non-final"))
    );
    chain.generate(1, &p2wpkh(&key(2))).unwrap();
    assert_eq!(chain.accept_tx(tx.clone(), None), Ok(tx.compute_txid()));
}

#[test]
fn time_locktime_uses_median_time_past() {
    let mut chain = new_chain();
    let start = chain.tip().mtp as u64 + 1_000;
    chain.set_mock_time(start);
    let lock = (start + 600) as u32;
    let tx = spend_coinbase_locked(
        &chain,
        1,
        p2wpkh(&key(1)),
        1_000,
        Sequence::ENABLE_LOCKTIME_NO_RBF,
        absolute::LockTime::from_time(lock).unwrap(),
    );
    let mut accepted = false;
    for step in 1..=40u64 {
        match chain.accept_tx(tx.clone(), None) {
            Ok(_) => {
                accepted = true;
                break;
            }
            Err(e) => {
                assert_eq!(e, err(codes::VERIFY_REJECTED, "non-final"));
                assert!(
                    chain.tip().mtp <= lock,
                    "rejected although MTP {} passed {lock}",
                    chain.tip().mtp
                );
            }
        }
        chain.set_mock_time(start + step * 100);
        chain.generate(1, &p2wpkh(&key(2))).unwrap();
    }
    assert!(accepted);
    assert!(
        chain.tip().mtp > lock,
        "accepted only once the median time past passed the lock"
    );
}

/// Funds a `csv_script(csv, key(5))` P2WSH output from the coinbase at `height` and mines it.
/// Returns the outpoint, its value and the witness script.
fn fund_csv(chain: &mut Chain, height: u32, csv: u32) -> (OutPoint, Amount, ScriptBuf) {
    let ws = csv_script(csv, &key(5));
    let fund = spend_coinbase(
        chain,
        height,
        ScriptBuf::new_p2wsh(&ws.wscript_hash()),
        1_000,
        Sequence::MAX,
    );
    let txid = chain
        .accept_tx(fund.clone(), None)
        .expect("funding accepted");
    chain.generate(1, &p2wpkh(&key(2))).unwrap();
    (OutPoint { txid, vout: 0 }, fund.output[0].value, ws)
}

fn csv_spend(
    outpoint: OutPoint,
    value: Amount,
    ws: &ScriptBuf,
    sequence: Sequence,
) -> bitcoin::Transaction {
    let mut tx = one_output(
        outpoint,
        value,
        sequence,
        absolute::LockTime::ZERO,
        value - Amount::from_sat(1_000),
        p2wpkh(&key(6)),
    );
    sign_p2wsh(&mut tx, 0, ws, value, &key(5));
    tx
}

#[test]
fn csv_height_lock_waits_for_enough_blocks() {
    let mut chain = new_chain();
    let (outpoint, value, ws) = fund_csv(&mut chain, 1, 5);
    let funded_at = chain.tip_height();
    let spend = csv_spend(outpoint, value, &ws, Sequence::from_height(5));
    // Spendable in the block at funded_at + 5, i.e. once the tip is funded_at + 4.
    for _ in 0..4 {
        assert_eq!(
            chain.accept_tx(spend.clone(), None),
            Err(err(codes::VERIFY_REJECTED, "non-BIP68-final"))
        );
        chain.generate(1, &p2wpkh(&key(2))).unwrap();
    }
    assert_eq!(chain.tip_height(), funded_at + 4);
    // A smaller relative lock than the script demands fails OP_CHECKSEQUENCEVERIFY.
    let short = csv_spend(outpoint, value, &ws, Sequence::from_height(4));
    assert_script_fails(&mut chain, short);
    assert_eq!(
        chain.accept_tx(spend.clone(), None),
        Ok(spend.compute_txid())
    );
    chain.generate(1, &p2wpkh(&key(2))).unwrap();
    assert!(
        chain
            .utxo(&OutPoint {
                txid: spend.compute_txid(),
                vout: 0
            })
            .is_some()
    );
}

#[test]
fn csv_time_lock_waits_for_median_time_past() {
    let mut chain = new_chain();
    let mut now = chain.tip().mtp as u64 + 10;
    chain.set_mock_time(now);
    // 2 units of 512 seconds.
    let seq = Sequence::from_512_second_intervals(2);
    let (outpoint, value, ws) = fund_csv(&mut chain, 1, seq.0);
    let funded_at = chain.tip_height();
    let coin_time = chain
        .entry(&chain.hash_at(funded_at - 1).unwrap())
        .unwrap()
        .mtp as i64;
    let spend = csv_spend(outpoint, value, &ws, seq);
    let mut rejected = 0;
    loop {
        match chain.accept_tx(spend.clone(), None) {
            Ok(_) => break,
            Err(e) => {
                assert_eq!(e, err(codes::VERIFY_REJECTED, "non-BIP68-final"));
                assert!((chain.tip().mtp as i64) < coin_time + 1024);
                rejected += 1;
                assert!(rejected < 100, "never became final");
            }
        }
        now += 120;
        chain.set_mock_time(now);
        chain.generate(1, &p2wpkh(&key(2))).unwrap();
    }
    assert!(
        rejected > 3,
        "was locked for a while ({rejected} rejections)"
    );
    assert!(chain.tip().mtp as i64 > coin_time + 1024 - 1);
}

#[test]
fn mempool_chains_and_mining_order() {
    let mut chain = new_chain();
    let parent = spend_coinbase(&chain, 1, p2wpkh(&key(1)), 1_000, Sequence::MAX);
    let pid = chain.accept_tx(parent.clone(), None).unwrap();
    let child = child_of(&parent, 50_000);
    let cid = chain
        .accept_tx(child, None)
        .expect("child of an unconfirmed parent");
    assert_eq!(
        chain
            .mempool()
            .parents(&cid)
            .into_iter()
            .collect::<Vec<_>>(),
        vec![pid]
    );
    chain.generate(1, &p2wpkh(&key(3))).unwrap();
    let txs: Vec<_> = chain
        .tip()
        .block
        .txdata
        .iter()
        .map(|t| t.compute_txid())
        .collect();
    // The child pays more, but its parent must come first.
    assert_eq!(&txs[1..], &[pid, cid]);
    assert!(chain.tip().block.check_merkle_root() && chain.tip().block.check_witness_commitment());
    assert!(chain.mempool().is_empty());
}

#[test]
fn rbf_replaces_on_higher_fee_only() {
    let mut chain = new_chain();
    let a = spend_coinbase(
        &chain,
        1,
        p2wpkh(&key(1)),
        1_000,
        Sequence::ENABLE_RBF_NO_LOCKTIME,
    );
    let low = spend_coinbase(
        &chain,
        1,
        p2wpkh(&key(2)),
        900,
        Sequence::ENABLE_RBF_NO_LOCKTIME,
    );
    let high = spend_coinbase(
        &chain,
        1,
        p2wpkh(&key(3)),
        5_000,
        Sequence::ENABLE_RBF_NO_LOCKTIME,
    );
    let aid = chain.accept_tx(a, None).unwrap();
    let e = chain.accept_tx(low, None).unwrap_err();
    assert_eq!(e.code, codes::VERIFY_REJECTED);
    assert!(
        e.message
            .starts_with("insufficient fee, rejecting replacement"),
        "{}",
        e.message
    );
    assert!(chain.mempool().get(&aid).is_some());
    let hid = chain
        .accept_tx(high, None)
        .expect("replacement with a higher fee");
    assert!(chain.mempool().get(&aid).is_none(), "replaced tx evicted");
    assert!(chain.mempool().get(&hid).is_some());
    assert_eq!(chain.mempool().len(), 1);
}

#[test]
fn invalidate_and_reconsider_reorg() {
    let mut chain = new_chain();
    let tx = spend_coinbase(&chain, 1, p2wpkh(&key(1)), 1_000, Sequence::MAX);
    let txid = chain.accept_tx(tx.clone(), None).unwrap();
    let spent = tx.input[0].previous_output;
    let mined = chain.generate(2, &p2wpkh(&key(2))).unwrap();
    let out = OutPoint { txid, vout: 0 };
    assert!(chain.utxo(&out).is_some() && chain.utxo(&spent).is_none());
    assert!(chain.mempool().is_empty());

    chain.invalidate_block(&mined[0]).unwrap();
    assert_eq!(chain.tip_height(), 101);
    assert!(
        chain.entry(&mined[1]).unwrap().invalid,
        "descendants are invalid too"
    );
    assert!(
        chain.utxo(&out).is_none(),
        "outputs of the disconnected tx are gone"
    );
    assert!(chain.utxo(&spent).is_some(), "the coin it spent is back");
    assert!(
        chain.mempool().get(&txid).is_some(),
        "tx back in the mempool"
    );

    // A competing branch of one block (less work than the invalidated two).
    let other = chain.generate(1, &p2wpkh(&key(3))).unwrap();
    assert!(chain.mempool().is_empty(), "re-mined on the new branch");
    assert!(chain.utxo(&out).is_some());

    chain.reconsider_block(&mined[0]).unwrap();
    assert_eq!(chain.tip_hash(), mined[1], "the longer branch wins again");
    assert!(!chain.is_active(&other[0]));
    assert!(chain.utxo(&out).is_some());
    assert_eq!(chain.utxo(&out).unwrap().height, 102);
    assert!(chain.mempool().is_empty());
    // Unknown block.
    let unknown = bitcoin::BlockHash::from_raw_hash(bitcoin::hashes::Hash::all_zeros());
    assert_eq!(
        chain.invalidate_block(&unknown),
        Err(err(codes::INVALID_ADDRESS_OR_KEY, "Block not found"))
    );
}

#[test]
fn invalidate_returns_only_still_valid_txs() {
    let mut chain = new_chain();
    // Block 102 confirms a spend of coinbase 2, which is only mature at height 102.
    let tx = spend_coinbase(&chain, 2, p2wpkh(&key(1)), 1_000, Sequence::MAX);
    chain.accept_tx(tx.clone(), None).unwrap();
    let mined = chain.generate(1, &p2wpkh(&key(2))).unwrap();
    chain.invalidate_block(&mined[0]).unwrap();
    // Back at tip 101 the spend is still valid for block 102.
    assert!(chain.mempool().get(&tx.compute_txid()).is_some());
    chain
        .invalidate_block(&chain.hash_at(101).unwrap())
        .unwrap();
    // At tip 100 the coinbase of block 2 would be immature: evicted.
    assert!(chain.mempool().is_empty());
}

#[test]
fn faucet_sends_chain_on_unconfirmed_change() {
    let mut chain = new_chain();
    let before = chain.faucet_balance();
    assert_eq!(
        before,
        Amount::from_btc(50.0).unwrap(),
        "one mature coinbase after 101 blocks"
    );
    let t1 = chain
        .send_to_address(p2wpkh(&key(1)), Amount::from_btc(1.0).unwrap(), false, None)
        .unwrap();
    let t2 = chain
        .send_to_address(p2wpkh(&key(2)), Amount::from_btc(2.0).unwrap(), false, None)
        .unwrap();
    assert!(
        chain.mempool().parents(&t2).contains(&t1),
        "second send spends the first one's change"
    );
    let e = chain
        .send_to_address(
            p2wpkh(&key(3)),
            Amount::from_btc(100.0).unwrap(),
            false,
            None,
        )
        .unwrap_err();
    assert_eq!(
        e,
        err(codes::WALLET_INSUFFICIENT_FUNDS, "Insufficient funds")
    );
    chain.generate(1, &p2wpkh(&key(4))).unwrap();
    let paid = chain
        .utxo(&OutPoint { txid: t2, vout: 0 })
        .expect("confirmed");
    assert_eq!(paid.output.value, Amount::from_btc(2.0).unwrap());
    assert_eq!(paid.output.script_pubkey, p2wpkh(&key(2)));
    // One more coinbase (block 2's) matured with the new block; 3 BTC and two small fees left.
    let expected = before + Amount::from_btc(50.0).unwrap() - Amount::from_btc(3.0).unwrap();
    let after = chain.faucet_balance();
    assert!(
        after < expected && after > expected - Amount::from_sat(100_000),
        "{after} vs {expected}"
    );
}

#[test]
fn generate_block_with_given_transactions() {
    let mut chain = new_chain();
    let in_pool = spend_coinbase(&chain, 1, p2wpkh(&key(1)), 1_000, Sequence::MAX);
    chain.accept_tx(in_pool.clone(), None).unwrap();
    // Zero fee: policy would refuse it, a block may contain it.
    let raw = spend_coinbase(&chain, 2, p2wpkh(&key(2)), 0, Sequence::MAX);
    let hash = chain
        .generate_block(&p2wpkh(&key(3)), vec![raw.clone()])
        .unwrap();
    assert_eq!(chain.tip_hash(), hash);
    assert_eq!(chain.tip().block.txdata.len(), 2);
    assert!(
        chain.mempool().get(&in_pool.compute_txid()).is_some(),
        "generateblock takes only what it is given"
    );
    // An invalid transaction fails the block.
    let bad = spend_coinbase(&chain, 2, p2wpkh(&key(2)), 0, Sequence::MAX);
    let e = chain
        .generate_block(&p2wpkh(&key(3)), vec![bad])
        .unwrap_err();
    assert_eq!(
        e,
        err(
            codes::VERIFY_ERROR,
            "TestBlockValidity failed: bad-txns-inputs-missingorspent"
        )
    );
    assert_eq!(chain.tip_hash(), hash);
}

#[test]
fn fee_estimates_by_target() {
    let mut chain = new_chain();
    assert_eq!(chain.estimate_fee(6), None);
    chain.set_fee_rates([(1, 50.0), (6, 10.0), (144, 2.0)].into_iter().collect());
    assert_eq!(chain.estimate_fee(1), Some(50.0));
    assert_eq!(chain.estimate_fee(5), Some(50.0));
    assert_eq!(chain.estimate_fee(6), Some(10.0));
    assert_eq!(chain.estimate_fee(1008), Some(2.0));
}

#[test]
fn chain_persists_across_restart() {
    let dir = temp_dir("persist");
    let open = || {
        Chain::open(ChainOptions {
            datadir: Some(dir.clone()),
            initial_blocks: 101,
            faucet: None,
        })
        .expect("open")
    };
    let (tip, txid, address, invalidated) = {
        let mut chain = open();
        let txid = chain
            .send_to_address(p2wpkh(&key(1)), Amount::from_btc(1.0).unwrap(), false, None)
            .unwrap();
        let mined = chain.generate(3, &p2wpkh(&key(2))).unwrap();
        chain.invalidate_block(&mined[2]).unwrap();
        (
            chain.tip_hash(),
            txid,
            chain.faucet().address().clone(),
            mined[2],
        )
    };
    let chain = open();
    assert_eq!(chain.tip_hash(), tip, "same tip, not re-mined");
    assert_eq!(chain.tip_height(), 103);
    assert_eq!(chain.faucet().address(), &address, "same faucet key");
    assert!(chain.utxo(&OutPoint { txid, vout: 0 }).is_some());
    assert!(
        chain.entry(&invalidated).unwrap().invalid,
        "invalidation is kept"
    );
    drop(chain);
    // A torn record at the end is dropped, the rest replays.
    let path = dir.join("blocks.dat");
    let mut data = std::fs::read(&path).unwrap();
    data.extend_from_slice(&[200, 1, 0, 0, 1, 2, 3]);
    std::fs::write(&path, data).unwrap();
    assert_eq!(open().tip_hash(), tip);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn faucet_key_is_reused_from_datadir_and_chain_starts_from_genesis() {
    let dir = temp_dir("fresh");
    let chain = Chain::open(ChainOptions {
        datadir: Some(dir.clone()),
        initial_blocks: 0,
        faucet: None,
    })
    .expect("open");
    assert_eq!(chain.tip_height(), 0);
    assert_eq!(
        chain.tip_hash(),
        bitcoin::constants::genesis_block(bitcoin::Network::Regtest).block_hash()
    );
    let f = Faucet::load_or_create(&dir).unwrap();
    assert_eq!(f.address(), chain.faucet().address());
    let _ = std::fs::remove_dir_all(&dir);
}

/// A BIP86 key-path spend: signed by the right tweaked key it is accepted; a signature by
/// another key, one over another amount, or a truncated one are rejected as Core would.
#[test]
fn taproot_key_path_spends_are_verified() {
    use bitcoin::key::{Keypair, TapTweak};
    use bitcoin::secp256k1::{Message, Secp256k1};
    use bitcoin::sighash::{Prevouts, SighashCache, TapSighashType};
    use bitcoin::{Witness, hashes::Hash};

    let secp = Secp256k1::new();
    let owner = Keypair::from_secret_key(&secp, &key(7));
    let p2tr = ScriptBuf::new_p2tr(&secp, owner.x_only_public_key().0, None);
    let mut chain = new_chain();
    let fund = spend_coinbase(&chain, 1, p2tr.clone(), 1_000, Sequence::MAX);
    let txid = chain
        .accept_tx(fund.clone(), None)
        .expect("funding accepted");
    chain.generate(1, &p2wpkh(&key(2))).unwrap();
    let value = fund.output[0].value;
    let prevout = TxOut {
        value,
        script_pubkey: p2tr,
    };

    let spend = |signer: &Keypair, signed_value: Amount, truncate: bool| {
        let mut tx = one_output(
            OutPoint { txid, vout: 0 },
            value,
            Sequence::MAX,
            absolute::LockTime::ZERO,
            value - Amount::from_sat(1_000),
            p2wpkh(&key(6)),
        );
        let signed_prevout = [TxOut {
            value: signed_value,
            ..prevout.clone()
        }];
        let sighash = SighashCache::new(&tx)
            .taproot_key_spend_signature_hash(
                0,
                &Prevouts::All(&signed_prevout),
                TapSighashType::Default,
            )
            .expect("sighash");
        let tweaked = signer.tap_tweak(&secp, None).to_keypair();
        let sig = secp.sign_schnorr(&Message::from_digest(sighash.to_byte_array()), &tweaked);
        let bytes = sig.as_ref().to_vec();
        let bytes = if truncate {
            bytes[..63].to_vec()
        } else {
            bytes
        };
        tx.input[0].witness = Witness::from_slice(&[bytes]);
        tx
    };

    let thief = Keypair::from_secret_key(&secp, &key(8));
    for (tx, why) in [
        (spend(&thief, value, false), "Invalid Schnorr signature"),
        (
            spend(&owner, value + Amount::from_sat(1), false),
            "Invalid Schnorr signature",
        ),
        (spend(&owner, value, true), "Invalid Schnorr signature size"),
    ] {
        let e = chain.accept_tx(tx, None).unwrap_err();
        assert_eq!(e.code, codes::VERIFY_REJECTED);
        assert_eq!(
            e.message,
            format!("mandatory-script-verify-flag-failed ({why})")
        );
    }
    let good = spend(&owner, value, false);
    assert_eq!(chain.accept_tx(good.clone(), None), Ok(good.compute_txid()));
}
