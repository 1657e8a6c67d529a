//! Helpers shared by devchain's tests: keys, P2WPKH and CSV-P2WSH spends signed with bitcoin's
//! sighash API.
#![allow(dead_code)]

use bitcoin::hashes::Hash;
use bitcoin::script::Builder;
use bitcoin::secp256k1::{Message, Secp256k1, SecretKey};
use bitcoin::sighash::{EcdsaSighashType, SighashCache};
use bitcoin::transaction::Version;
use bitcoin::{
    Amount, CompressedPublicKey, OutPoint, ScriptBuf, Sequence, Transaction, TxIn, TxOut,
    WPubkeyHash, Witness, absolute, opcodes,
};
use devchain::chain::{Chain, ChainOptions};
use devchain::faucet::Faucet;

pub fn key(n: u8) -> SecretKey {
    SecretKey::from_slice(&[n; 32]).expect("valid key")
}

pub fn pubkey(k: &SecretKey) -> CompressedPublicKey {
    CompressedPublicKey(k.public_key(&Secp256k1::new()))
}

pub fn p2wpkh(k: &SecretKey) -> ScriptBuf {
    ScriptBuf::new_p2wpkh(&WPubkeyHash::hash(&pubkey(k).to_bytes()))
}

/// `<csv> OP_CHECKSEQUENCEVERIFY OP_DROP <pubkey> OP_CHECKSIG`
pub fn csv_script(csv: u32, k: &SecretKey) -> ScriptBuf {
    Builder::new()
        .push_int(csv as i64)
        .push_opcode(opcodes::all::OP_CSV)
        .push_opcode(opcodes::all::OP_DROP)
        .push_key(&pubkey(k).into())
        .push_opcode(opcodes::all::OP_CHECKSIG)
        .into_script()
}

pub struct Spend {
    pub outpoint: OutPoint,
    pub value: Amount,
    pub sequence: Sequence,
}

pub fn unsigned(
    inputs: &[Spend],
    outputs: Vec<TxOut>,
    lock_time: absolute::LockTime,
) -> Transaction {
    Transaction {
        version: Version::TWO,
        lock_time,
        input: inputs
            .iter()
            .map(|s| TxIn {
                previous_output: s.outpoint,
                script_sig: ScriptBuf::new(),
                sequence: s.sequence,
                witness: Witness::new(),
            })
            .collect(),
        output: outputs,
    }
}

/// An unsigned transaction spending the coin at `outpoint` (worth `value`, input `sequence`)
/// to one output paying `out_value` to `to`.
pub fn one_output(
    outpoint: OutPoint,
    value: Amount,
    sequence: Sequence,
    lock_time: absolute::LockTime,
    out_value: Amount,
    to: ScriptBuf,
) -> Transaction {
    unsigned(
        &[Spend {
            outpoint,
            value,
            sequence,
        }],
        vec![TxOut {
            value: out_value,
            script_pubkey: to,
        }],
        lock_time,
    )
}

/// Signs every input as a P2WPKH spend of `k`.
pub fn sign_p2wpkh(tx: &mut Transaction, values: &[Amount], k: &SecretKey) {
    let secp = Secp256k1::new();
    let spk = p2wpkh(k);
    for (i, value) in values.iter().enumerate() {
        let sighash = SighashCache::new(&*tx)
            .p2wpkh_signature_hash(i, &spk, *value, EcdsaSighashType::All)
            .expect("sighash");
        let sig = bitcoin::ecdsa::Signature {
            signature: secp.sign_ecdsa(&Message::from(sighash), k),
            sighash_type: EcdsaSighashType::All,
        };
        tx.input[i].witness = Witness::p2wpkh(&sig, &pubkey(k).0);
    }
}

/// Signs input `i` as a spend of the P2WSH `witness_script` with `k`.
pub fn sign_p2wsh(
    tx: &mut Transaction,
    i: usize,
    witness_script: &ScriptBuf,
    value: Amount,
    k: &SecretKey,
) {
    let secp = Secp256k1::new();
    let sighash = SighashCache::new(&*tx)
        .p2wsh_signature_hash(i, witness_script, value, EcdsaSighashType::All)
        .expect("sighash");
    let sig = bitcoin::ecdsa::Signature {
        signature: secp.sign_ecdsa(&Message::from(sighash), k),
        sighash_type: EcdsaSighashType::All,
    };
    let mut w = Witness::new();
    w.push(sig.serialize());
    w.push(witness_script.as_bytes());
    tx.input[i].witness = w;
}

/// The faucet's key in chains built by [`new_chain`].
pub fn faucet_key() -> SecretKey {
    key(7)
}

/// An in-memory chain whose faucet key is [`faucet_key`], with 101 blocks mined to it.
pub fn new_chain() -> Chain {
    Chain::open(ChainOptions {
        datadir: None,
        initial_blocks: 101,
        faucet: Some(Faucet::from_secret(faucet_key())),
    })
    .expect("chain")
}

/// The coinbase output (vout 0) of the active block at `height`.
pub fn coinbase_at(chain: &Chain, height: u32) -> (OutPoint, Amount) {
    let hash = chain.hash_at(height).expect("height");
    let tx = &chain.entry(&hash).expect("entry").block.txdata[0];
    (
        OutPoint {
            txid: tx.compute_txid(),
            vout: 0,
        },
        tx.output[0].value,
    )
}

/// A signed spend of the faucet-owned coinbase at `height` paying `to` (value minus `fee`).
pub fn spend_coinbase(
    chain: &Chain,
    height: u32,
    to: ScriptBuf,
    fee: u64,
    sequence: Sequence,
) -> Transaction {
    spend_coinbase_locked(chain, height, to, fee, sequence, absolute::LockTime::ZERO)
}

/// [`spend_coinbase`] with the transaction's `lock_time`.
pub fn spend_coinbase_locked(
    chain: &Chain,
    height: u32,
    to: ScriptBuf,
    fee: u64,
    sequence: Sequence,
    lock_time: absolute::LockTime,
) -> Transaction {
    let (outpoint, value) = coinbase_at(chain, height);
    let mut tx = one_output(
        outpoint,
        value,
        sequence,
        lock_time,
        value - Amount::from_sat(fee),
        to,
    );
    sign_p2wpkh(&mut tx, &[value], &faucet_key());
    tx
}

/// A spend of `parent`'s first output (owned by `key(1)`) to `key(2)`, paying `fee`.
pub fn child_of(parent: &Transaction, fee: u64) -> Transaction {
    let value = parent.output[0].value;
    let mut tx = one_output(
        OutPoint {
            txid: parent.compute_txid(),
            vout: 0,
        },
        value,
        Sequence::MAX,
        absolute::LockTime::ZERO,
        value - Amount::from_sat(fee),
        p2wpkh(&key(2)),
    );
    sign_p2wpkh(&mut tx, &[value], &key(1));
    tx
}

pub fn temp_dir(name: &str) -> std::path::PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let dir = std::env::temp_dir().join(format!("devchain-{name}-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}
