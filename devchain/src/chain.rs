//! The chain state machine: block tree, active chain, UTXO set, mempool, mining, reorgs and the
//! faucet's sends. No sockets here; everything is unit-testable.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use bitcoin::block::{Header, Version as BlockVersion};
use bitcoin::consensus::serialize;
use bitcoin::hashes::Hash;
use bitcoin::pow::Work;
use bitcoin::script::Builder;
use bitcoin::transaction::Version as TxVersion;
use bitcoin::{
    Amount, Block, BlockHash, CompactTarget, Network, OutPoint, ScriptBuf, Sequence, Transaction,
    TxIn, TxMerkleNode, TxOut, Txid, Witness, Wtxid, absolute,
};

use crate::RpcError;
use crate::codes;
use crate::faucet::Faucet;
use crate::store::BlockStore;
use crate::util::format_money;

pub const COINBASE_MATURITY: u32 = 100;
pub const MAX_BLOCK_WEIGHT: u64 = 4_000_000;
/// Regtest's subsidy halving interval.
pub const HALVING_INTERVAL: u32 = 150;
/// Minimum relay fee and incremental relay fee, sat per 1000 vbytes (bitcoind's defaults).
pub const MIN_RELAY_FEE_SAT_PER_KVB: u64 = 1_000;
pub const INCREMENTAL_RELAY_FEE_SAT_PER_KVB: u64 = 1_000;
/// `sendrawtransaction`'s default `maxfeerate`: 0.10 BTC/kvB.
pub const DEFAULT_MAX_FEERATE_SAT_PER_KVB: u64 = 10_000_000;
/// Feerate the faucet pays when no test has set one (sat/vB).
pub const FAUCET_DEFAULT_SAT_PER_VB: f64 = 2.0;
pub const REGTEST_BITS: u32 = 0x207f_ffff;
/// Script flags checked by libbitcoinconsensus: P2SH, DERSIG, NULLDUMMY, CHECKLOCKTIMEVERIFY,
/// CHECKSEQUENCEVERIFY, WITNESS. The library bitcoin 0.32 links has no taproot flag, so
/// taproot spends are checked by [`verify_taproot`].
pub const SCRIPT_FLAGS: u32 = VERIFY_P2SH
    | VERIFY_DERSIG
    | VERIFY_NULLDUMMY
    | VERIFY_CHECKLOCKTIMEVERIFY
    | VERIFY_CHECKSEQUENCEVERIFY
    | VERIFY_WITNESS;
// libbitcoinconsensus's flag bits (bitcoinconsensus.h).
const VERIFY_P2SH: u32 = 1 << 0;
const VERIFY_DERSIG: u32 = 1 << 2;
const VERIFY_NULLDUMMY: u32 = 1 << 4;
const VERIFY_CHECKLOCKTIMEVERIFY: u32 = 1 << 9;
const VERIFY_CHECKSEQUENCEVERIFY: u32 = 1 << 10;
const VERIFY_WITNESS: u32 = 1 << 11;

const SEQUENCE_FINAL: u32 = 0xffff_ffff;
const SEQUENCE_LOCKTIME_DISABLE_FLAG: u32 = 1 << 31;
const SEQUENCE_LOCKTIME_TYPE_FLAG: u32 = 1 << 22;
const SEQUENCE_LOCKTIME_MASK: u32 = 0x0000_ffff;
const LOCKTIME_THRESHOLD: u32 = 500_000_000;

/// An unspent output with the height of the block that created it (tip+1 for mempool outputs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Coin {
    pub output: TxOut,
    pub height: u32,
    pub coinbase: bool,
}

pub struct BlockEntry {
    pub block: Block,
    pub hash: BlockHash,
    pub height: u32,
    pub chainwork: Work,
    /// Median time past of this block (its own time and its 10 ancestors').
    pub mtp: u32,
    /// Marked invalid by `invalidateblock` (itself or an ancestor).
    pub invalid: bool,
    seq: u64,
}

#[derive(Debug, Clone)]
pub struct MempoolEntry {
    pub tx: Transaction,
    pub txid: Txid,
    pub fee: Amount,
    pub vsize: u64,
    pub weight: u64,
    /// Unix time it entered the mempool.
    pub time: u64,
    /// Tip height when it entered the mempool.
    pub height: u32,
    seq: u64,
}

impl MempoolEntry {
    /// Fee rate in sat per 1000 vbytes, for comparisons.
    fn feerate_kvb(&self) -> u128 {
        self.fee.to_sat() as u128 * 1000 / self.vsize.max(1) as u128
    }
}

#[derive(Default, Clone)]
pub struct Mempool {
    entries: HashMap<Txid, MempoolEntry>,
    spent_by: HashMap<OutPoint, Txid>,
    next_seq: u64,
}

impl Mempool {
    pub fn get(&self, txid: &Txid) -> Option<&MempoolEntry> {
        self.entries.get(txid)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Entries in the order they were accepted (parents before children).
    pub fn entries_in_order(&self) -> Vec<&MempoolEntry> {
        let mut v: Vec<_> = self.entries.values().collect();
        v.sort_by_key(|e| e.seq);
        v
    }

    pub fn spender_of(&self, outpoint: &OutPoint) -> Option<Txid> {
        self.spent_by.get(outpoint).copied()
    }

    /// In-mempool transactions this one spends from.
    pub fn parents(&self, txid: &Txid) -> BTreeSet<Txid> {
        let Some(e) = self.entries.get(txid) else {
            return BTreeSet::new();
        };
        e.tx.input
            .iter()
            .map(|i| i.previous_output.txid)
            .filter(|t| self.entries.contains_key(t))
            .collect()
    }

    pub fn children(&self, txid: &Txid) -> BTreeSet<Txid> {
        let Some(e) = self.entries.get(txid) else {
            return BTreeSet::new();
        };
        (0..e.tx.output.len() as u32)
            .filter_map(|vout| self.spent_by.get(&OutPoint { txid: *txid, vout }).copied())
            .collect()
    }

    pub fn ancestors(&self, txid: &Txid) -> BTreeSet<Txid> {
        self.closure(txid, |m, t| m.parents(t))
    }

    pub fn descendants(&self, txid: &Txid) -> BTreeSet<Txid> {
        self.closure(txid, |m, t| m.children(t))
    }

    fn closure(
        &self,
        txid: &Txid,
        step: impl Fn(&Mempool, &Txid) -> BTreeSet<Txid>,
    ) -> BTreeSet<Txid> {
        let mut out = BTreeSet::new();
        let mut todo = vec![*txid];
        while let Some(t) = todo.pop() {
            for n in step(self, &t) {
                if out.insert(n) {
                    todo.push(n);
                }
            }
        }
        out
    }

    fn insert(&mut self, mut entry: MempoolEntry) {
        entry.seq = self.next_seq;
        self.next_seq += 1;
        for input in &entry.tx.input {
            self.spent_by.insert(input.previous_output, entry.txid);
        }
        self.entries.insert(entry.txid, entry);
    }

    fn remove(&mut self, txid: &Txid) -> Option<MempoolEntry> {
        let e = self.entries.remove(txid)?;
        for input in &e.tx.input {
            if self.spent_by.get(&input.previous_output) == Some(txid) {
                self.spent_by.remove(&input.previous_output);
            }
        }
        Some(e)
    }

    fn take_all(&mut self) -> Vec<MempoolEntry> {
        let mut v: Vec<_> = self.entries.drain().map(|(_, e)| e).collect();
        self.spent_by.clear();
        v.sort_by_key(|e| e.seq);
        v
    }
}

/// Where a transaction was found.
pub enum TxLocation<'a> {
    Mempool(&'a MempoolEntry),
    Block {
        tx: &'a Transaction,
        entry: &'a BlockEntry,
    },
}

pub struct ChainOptions {
    /// Keep blocks in this directory and replay them on start. `None`: in memory only.
    pub datadir: Option<PathBuf>,
    /// Blocks mined to the faucet when the chain is fresh (height 0).
    pub initial_blocks: u32,
    /// Use this faucet (tests); otherwise it is loaded from / created in the datadir, or random.
    pub faucet: Option<Faucet>,
}

impl Default for ChainOptions {
    fn default() -> Self {
        ChainOptions {
            datadir: None,
            initial_blocks: 101,
            faucet: None,
        }
    }
}

pub struct Chain {
    entries: HashMap<BlockHash, BlockEntry>,
    children: HashMap<BlockHash, Vec<BlockHash>>,
    active: Vec<BlockHash>,
    utxos: HashMap<OutPoint, Coin>,
    undo: HashMap<BlockHash, Vec<(OutPoint, Coin)>>,
    /// Transactions of the active chain: txid -> block.
    tx_index: HashMap<Txid, BlockHash>,
    mempool: Mempool,
    invalidated_roots: BTreeSet<BlockHash>,
    next_seq: u64,
    mock_time: Option<u64>,
    /// conf_target -> sat/vB, set by tests through `setfeerate`.
    fee_rates: BTreeMap<u16, f64>,
    /// The mempool's minimum feerate (sat/kvB), at least the minimum relay fee: raised by tests
    /// through `setmempoolminfee` to play a full mempool.
    mempool_min_fee: u64,
    store: Option<BlockStore>,
    faucet: Faucet,
}

fn wall_clock() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// bitcoind's refusal of a transaction under the mempool's minimum feerate (a child can pay
/// for it in a package).
pub const MEMPOOL_MIN_FEE_NOT_MET: &str = "mempool min fee not met";

/// How `submitpackage` treated one transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PackageTxResult {
    /// Was in the mempool already.
    InMempool {
        vsize: u64,
        fee: Amount,
    },
    /// Accepted now, at `effective_kvb` (sat/kvB) over the transactions `includes`.
    Accepted {
        vsize: u64,
        fee: Amount,
        effective_kvb: u64,
        includes: Vec<Wtxid>,
    },
    Rejected(String),
}

/// `submitpackage`'s outcome: `msg` is "success" when every transaction is in the mempool.
#[derive(Debug, Clone)]
pub struct PackageOutcome {
    pub msg: String,
    pub results: Vec<(Txid, Wtxid, PackageTxResult)>,
    pub replaced: Vec<Txid>,
}

/// bitcoind's `IsChildWithParentsTree`: the last transaction spends an output of each of the
/// others, none of which spends another, and no transaction appears twice.
fn is_child_with_parents_tree(txs: &[Transaction]) -> bool {
    let Some((child, parents)) = txs.split_last() else {
        return false;
    };
    let ids: BTreeSet<Txid> = parents.iter().map(Transaction::compute_txid).collect();
    if ids.len() != parents.len() || ids.contains(&child.compute_txid()) {
        return false;
    }
    let spent: BTreeSet<Txid> = child.input.iter().map(|i| i.previous_output.txid).collect();
    ids.is_subset(&spent)
        && parents.iter().all(|p| {
            p.input
                .iter()
                .all(|i| !ids.contains(&i.previous_output.txid))
        })
}

fn reject(reason: impl Into<String>) -> RpcError {
    RpcError::new(codes::VERIFY_REJECTED, reason)
}

fn missing_inputs() -> RpcError {
    RpcError::new(codes::VERIFY_ERROR, "bad-txns-inputs-missingorspent")
}

pub fn block_subsidy(height: u32) -> Amount {
    let halvings = height / HALVING_INTERVAL;
    if halvings >= 64 {
        Amount::ZERO
    } else {
        Amount::from_sat((50 * 100_000_000u64) >> halvings)
    }
}

fn signals_rbf(tx: &Transaction) -> bool {
    tx.input.iter().any(|i| i.sequence.0 < 0xffff_fffe)
}

/// Bitcoin Core's `CheckTransaction`: context-free checks.
fn check_transaction(tx: &Transaction) -> Result<(), RpcError> {
    if tx.input.is_empty() {
        return Err(reject("bad-txns-vin-empty"));
    }
    if tx.output.is_empty() {
        return Err(reject("bad-txns-vout-empty"));
    }
    if tx.base_size() * 4 > MAX_BLOCK_WEIGHT as usize {
        return Err(reject("bad-txns-oversize"));
    }
    let mut total: u64 = 0;
    for out in &tx.output {
        if out.value > Amount::MAX_MONEY {
            return Err(reject("bad-txns-vout-toolarge"));
        }
        total += out.value.to_sat();
        if total > Amount::MAX_MONEY.to_sat() {
            return Err(reject("bad-txns-txouttotal-toolarge"));
        }
    }
    let mut seen = HashSet::new();
    for input in &tx.input {
        if !seen.insert(input.previous_output) {
            return Err(reject("bad-txns-inputs-duplicate"));
        }
    }
    if tx.is_coinbase() {
        let len = tx.input[0].script_sig.len();
        if !(2..=100).contains(&len) {
            return Err(reject("bad-cb-length"));
        }
    } else if tx.input.iter().any(|i| i.previous_output.is_null()) {
        return Err(reject("bad-txns-prevout-null"));
    }
    Ok(())
}

/// Bitcoin Core's `IsFinalTx`.
fn is_final_tx(tx: &Transaction, height: u32, time: u32) -> bool {
    let lock = tx.lock_time.to_consensus_u32();
    if lock == 0 {
        return true;
    }
    let cutoff = if lock < LOCKTIME_THRESHOLD {
        height
    } else {
        time
    };
    if lock < cutoff {
        return true;
    }
    tx.input.iter().all(|i| i.sequence.0 == SEQUENCE_FINAL)
}

impl Chain {
    pub fn open(opts: ChainOptions) -> anyhow::Result<Chain> {
        let (store, stored_blocks) = match &opts.datadir {
            Some(dir) => {
                let (s, b) = BlockStore::open(dir)?;
                (Some(s), b)
            }
            None => (None, Vec::new()),
        };
        let faucet = match (opts.faucet, &opts.datadir) {
            (Some(f), _) => f,
            (None, Some(dir)) => Faucet::load_or_create(dir)?,
            (None, None) => Faucet::random(),
        };
        let mut chain = Chain {
            entries: HashMap::new(),
            children: HashMap::new(),
            active: Vec::new(),
            utxos: HashMap::new(),
            undo: HashMap::new(),
            tx_index: HashMap::new(),
            mempool: Mempool::default(),
            invalidated_roots: BTreeSet::new(),
            next_seq: 0,
            mock_time: None,
            fee_rates: BTreeMap::new(),
            mempool_min_fee: MIN_RELAY_FEE_SAT_PER_KVB,
            store: None,
            faucet,
        };
        let genesis = bitcoin::constants::genesis_block(Network::Regtest);
        let genesis_hash = chain
            .insert_entry(genesis)
            .map_err(|e| anyhow::anyhow!(e))?;
        chain
            .connect(genesis_hash)
            .map_err(|e| anyhow::anyhow!(e.message))?;
        let mut skipped = 0;
        for block in stored_blocks {
            if block.block_hash() == genesis_hash {
                continue;
            }
            if chain.insert_entry(block).is_err() {
                skipped += 1;
            }
        }
        if skipped > 0 {
            eprintln!("devchain: skipped {skipped} stored blocks that do not link to the chain");
        }
        if let Some(store) = &store {
            chain.invalidated_roots = store.read_invalidated();
            chain
                .invalidated_roots
                .retain(|h| chain.entries.contains_key(h));
            chain.recompute_invalid_flags();
        }
        chain.store = store;
        chain.activate_best_chain()?;
        if chain.tip_height() == 0 && opts.initial_blocks > 0 {
            let script = chain.faucet.script_pubkey().clone();
            chain.generate(opts.initial_blocks, &script)?;
        }
        Ok(chain)
    }

    // ----- accessors -----

    pub fn faucet(&self) -> &Faucet {
        &self.faucet
    }

    pub fn tip_height(&self) -> u32 {
        (self.active.len() - 1) as u32
    }

    pub fn tip_hash(&self) -> BlockHash {
        self.active[self.active.len() - 1]
    }

    pub fn tip(&self) -> &BlockEntry {
        &self.entries[&self.tip_hash()]
    }

    pub fn entry(&self, hash: &BlockHash) -> Option<&BlockEntry> {
        self.entries.get(hash)
    }

    pub fn hash_at(&self, height: u32) -> Option<BlockHash> {
        self.active.get(height as usize).copied()
    }

    pub fn is_active(&self, hash: &BlockHash) -> bool {
        self.entries
            .get(hash)
            .is_some_and(|e| self.hash_at(e.height) == Some(*hash))
    }

    pub fn block_count_known(&self) -> usize {
        self.entries.len()
    }

    pub fn mempool(&self) -> &Mempool {
        &self.mempool
    }

    pub fn utxo(&self, outpoint: &OutPoint) -> Option<&Coin> {
        self.utxos.get(outpoint)
    }

    pub fn now(&self) -> u64 {
        self.mock_time.unwrap_or_else(wall_clock)
    }

    /// `setmocktime`: 0 returns to the wall clock.
    pub fn set_mock_time(&mut self, t: u64) {
        self.mock_time = if t == 0 { None } else { Some(t) };
    }

    /// Blocks of the active chain that have more than one child-branch tip, for `getchaintips`.
    pub fn chain_tips(&self) -> Vec<&BlockEntry> {
        let mut tips: Vec<&BlockEntry> = self
            .entries
            .values()
            .filter(|e| self.children.get(&e.hash).is_none_or(|c| c.is_empty()))
            .collect();
        if !tips.iter().any(|e| e.hash == self.tip_hash()) {
            tips.push(self.tip());
        }
        tips.sort_by_key(|e| std::cmp::Reverse(e.height));
        tips
    }

    /// Finds a transaction in the mempool or the active chain.
    pub fn find_tx(&self, txid: &Txid) -> Option<TxLocation<'_>> {
        if let Some(e) = self.mempool.get(txid) {
            return Some(TxLocation::Mempool(e));
        }
        let hash = self.tx_index.get(txid)?;
        let entry = self.entries.get(hash)?;
        let tx = entry
            .block
            .txdata
            .iter()
            .find(|t| t.compute_txid() == *txid)?;
        Some(TxLocation::Block { tx, entry })
    }

    // ----- fee estimates -----

    pub fn set_fee_rates(&mut self, rates: BTreeMap<u16, f64>) {
        self.fee_rates = rates;
    }

    pub fn fee_rates(&self) -> &BTreeMap<u16, f64> {
        &self.fee_rates
    }

    /// The rate set for the largest configured target not above `target` (or the smallest
    /// configured target if all are above it), in sat/vB.
    pub fn estimate_fee(&self, target: u16) -> Option<f64> {
        self.fee_rates
            .range(..=target)
            .next_back()
            .or_else(|| self.fee_rates.iter().next())
            .map(|(_, r)| *r)
    }

    // ----- block tree -----

    fn compute_mtp(&self, prev: Option<BlockHash>, time: u32) -> u32 {
        let mut times = vec![time];
        let mut cur = prev;
        while times.len() < 11 {
            let Some(h) = cur else { break };
            let Some(e) = self.entries.get(&h) else { break };
            times.push(e.block.header.time);
            cur = if e.height == 0 {
                None
            } else {
                Some(e.block.header.prev_blockhash)
            };
        }
        times.sort_unstable();
        times[times.len() / 2]
    }

    /// Adds a block to the tree (not to the active chain). Its parent must be known.
    fn insert_entry(&mut self, block: Block) -> Result<BlockHash, String> {
        let hash = block.block_hash();
        if self.entries.contains_key(&hash) {
            return Ok(hash);
        }
        let (height, chainwork, prev) = if self.entries.is_empty() {
            (0, block.header.work(), None)
        } else {
            let prev_hash = block.header.prev_blockhash;
            let parent = self.entries.get(&prev_hash).ok_or("prev-blk-not-found")?;
            (
                parent.height + 1,
                parent.chainwork + block.header.work(),
                Some(prev_hash),
            )
        };
        let mtp = self.compute_mtp(prev, block.header.time);
        let invalid = prev.is_some_and(|p| self.entries[&p].invalid);
        if let Some(p) = prev {
            self.children.entry(p).or_default().push(hash);
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.entries.insert(
            hash,
            BlockEntry {
                block,
                hash,
                height,
                chainwork,
                mtp,
                invalid,
                seq,
            },
        );
        Ok(hash)
    }

    fn recompute_invalid_flags(&mut self) {
        let mut order: Vec<(u64, BlockHash)> =
            self.entries.values().map(|e| (e.seq, e.hash)).collect();
        order.sort();
        for (_, h) in order {
            let (prev, height) = {
                let e = &self.entries[&h];
                (e.block.header.prev_blockhash, e.height)
            };
            let parent_invalid = height > 0 && self.entries.get(&prev).is_some_and(|p| p.invalid);
            let invalid = parent_invalid || self.invalidated_roots.contains(&h);
            if let Some(e) = self.entries.get_mut(&h) {
                e.invalid = invalid;
            }
        }
    }

    fn connect(&mut self, hash: BlockHash) -> Result<(), RpcError> {
        let entry = self
            .entries
            .get(&hash)
            .ok_or_else(|| RpcError::new(codes::MISC_ERROR, "unknown block"))?;
        let height = entry.height;
        let mut undo = Vec::new();
        let mut created = Vec::new();
        for tx in &entry.block.txdata {
            let txid = tx.compute_txid();
            if !tx.is_coinbase() {
                for input in &tx.input {
                    match self.utxos.remove(&input.previous_output) {
                        Some(coin) => undo.push((input.previous_output, coin)),
                        None => {
                            // Roll back what we did so far: the block does not connect.
                            for (op, _) in created {
                                self.utxos.remove(&op);
                            }
                            for (op, coin) in undo {
                                self.utxos.insert(op, coin);
                            }
                            return Err(RpcError::new(
                                codes::VERIFY_ERROR,
                                format!(
                                    "block {hash} spends a missing coin {}",
                                    input.previous_output
                                ),
                            ));
                        }
                    }
                }
            }
            for (vout, out) in tx.output.iter().enumerate() {
                if out.script_pubkey.is_op_return() || out.script_pubkey.len() > 10_000 {
                    continue;
                }
                let op = OutPoint {
                    txid,
                    vout: vout as u32,
                };
                let coin = Coin {
                    output: out.clone(),
                    height,
                    coinbase: tx.is_coinbase(),
                };
                self.utxos.insert(op, coin);
                created.push((op, ()));
            }
        }
        for tx in &entry.block.txdata {
            self.tx_index.insert(tx.compute_txid(), hash);
        }
        self.undo.insert(hash, undo);
        self.active.push(hash);
        Ok(())
    }

    /// Disconnects the tip and returns its non-coinbase transactions.
    fn disconnect_tip(&mut self) -> Result<Vec<Transaction>, RpcError> {
        if self.active.len() <= 1 {
            return Err(RpcError::new(
                codes::MISC_ERROR,
                "cannot disconnect the genesis block",
            ));
        }
        let hash = self.tip_hash();
        let undo = self.undo.remove(&hash).unwrap_or_default();
        let entry = &self.entries[&hash];
        for tx in &entry.block.txdata {
            let txid = tx.compute_txid();
            for vout in 0..tx.output.len() as u32 {
                self.utxos.remove(&OutPoint { txid, vout });
            }
            if self.tx_index.get(&txid) == Some(&hash) {
                self.tx_index.remove(&txid);
            }
        }
        for (op, coin) in undo {
            self.utxos.insert(op, coin);
        }
        self.active.pop();
        Ok(entry
            .block
            .txdata
            .iter()
            .filter(|t| !t.is_coinbase())
            .cloned()
            .collect())
    }

    fn best_candidate(&self) -> BlockHash {
        let tip = self.tip_hash();
        let tip_entry = &self.entries[&tip];
        let mut best: &BlockEntry = tip_entry;
        let tip_valid = !tip_entry.invalid;
        for e in self.entries.values() {
            if e.invalid {
                continue;
            }
            let better = if best.invalid {
                true
            } else if e.chainwork != best.chainwork {
                e.chainwork > best.chainwork
            } else {
                // Equal work: keep the current tip, otherwise the block seen first.
                !(tip_valid && best.hash == tip) && e.seq < best.seq
            };
            if better {
                best = e;
            }
        }
        best.hash
    }

    /// Switches the active chain to the most-work valid tip, resubmitting the transactions of the
    /// disconnected blocks and the old mempool to the mempool.
    fn activate_best_chain(&mut self) -> Result<(), RpcError> {
        let best = self.best_candidate();
        if best == self.tip_hash() {
            return Ok(());
        }
        let mut path = Vec::new();
        let mut cur = best;
        while !self.is_active(&cur) {
            path.push(cur);
            cur = self.entries[&cur].block.header.prev_blockhash;
        }
        let fork_height = self.entries[&cur].height;
        let old_mempool = self.mempool.take_all();
        let mut disconnected = Vec::new();
        while self.tip_height() > fork_height {
            disconnected.push(self.disconnect_tip()?);
        }
        for h in path.into_iter().rev() {
            self.connect(h)?;
        }
        let now = self.now();
        let mut resubmit: Vec<(Transaction, u64)> = Vec::new();
        for txs in disconnected.into_iter().rev() {
            resubmit.extend(txs.into_iter().map(|t| (t, now)));
        }
        resubmit.extend(old_mempool.into_iter().map(|e| (e.tx, e.time)));
        self.resubmit(resubmit);
        Ok(())
    }

    fn resubmit(&mut self, txs: Vec<(Transaction, u64)>) {
        for (tx, time) in txs {
            // Like bitcoind after a block or a reorganisation: no mempool-minimum check.
            let _ = self.accept_inner(tx, None, Some(time), false, false);
        }
    }

    /// After a block extended the tip: drop what it confirmed or conflicts with, re-checking the
    /// rest against the new tip.
    fn refresh_mempool(&mut self) {
        let old = self.mempool.take_all();
        let keep: Vec<(Transaction, u64)> = old
            .into_iter()
            .filter(|e| !self.tx_index.contains_key(&e.txid))
            .map(|e| (e.tx, e.time))
            .collect();
        self.resubmit(keep);
    }

    pub fn invalidate_block(&mut self, hash: &BlockHash) -> Result<(), RpcError> {
        let entry = self
            .entries
            .get(hash)
            .ok_or_else(|| RpcError::new(codes::INVALID_ADDRESS_OR_KEY, "Block not found"))?;
        if entry.height == 0 {
            return Err(RpcError::new(
                codes::INVALID_PARAMETER,
                "Cannot invalidate the genesis block",
            ));
        }
        self.invalidated_roots.insert(*hash);
        self.recompute_invalid_flags();
        self.persist_invalidated();
        self.activate_best_chain()
    }

    pub fn reconsider_block(&mut self, hash: &BlockHash) -> Result<(), RpcError> {
        if !self.entries.contains_key(hash) {
            return Err(RpcError::new(
                codes::INVALID_ADDRESS_OR_KEY,
                "Block not found",
            ));
        }
        // Clear the marks on the block, its descendants and its ancestors.
        let mut related: HashSet<BlockHash> = HashSet::new();
        let mut todo = vec![*hash];
        while let Some(h) = todo.pop() {
            if related.insert(h) {
                todo.extend(self.children.get(&h).into_iter().flatten().copied());
            }
        }
        let mut cur = *hash;
        while let Some(e) = self.entries.get(&cur) {
            related.insert(cur);
            if e.height == 0 {
                break;
            }
            cur = e.block.header.prev_blockhash;
        }
        self.invalidated_roots.retain(|h| !related.contains(h));
        self.recompute_invalid_flags();
        self.persist_invalidated();
        self.activate_best_chain()
    }

    fn persist_invalidated(&self) {
        if let Some(store) = &self.store
            && let Err(e) = store.write_invalidated(&self.invalidated_roots)
        {
            eprintln!("devchain: cannot save the invalidated blocks: {e}");
        }
    }

    // ----- transaction validation -----

    fn mempool_view_coin(&self, op: &OutPoint) -> Option<Coin> {
        if let Some(c) = self.utxos.get(op) {
            return Some(c.clone());
        }
        let e = self.mempool.get(&op.txid)?;
        let out = e.tx.output.get(op.vout as usize)?;
        Some(Coin {
            output: out.clone(),
            height: self.tip_height() + 1,
            coinbase: false,
        })
    }

    /// BIP68 (`CalculateSequenceLocks` + `EvaluateSequenceLocks`) for a transaction to be
    /// included at `self.tip_height() + 1`.
    fn sequence_locks_ok(&self, tx: &Transaction, coins: &[Coin]) -> bool {
        if tx.version.0 < 2 {
            return true;
        }
        let next_height = self.tip_height() + 1;
        let tip_mtp = self.tip().mtp as i64;
        let mut min_height: i64 = -1;
        let mut min_time: i64 = -1;
        for (input, coin) in tx.input.iter().zip(coins) {
            let seq = input.sequence.0;
            if seq & SEQUENCE_LOCKTIME_DISABLE_FLAG != 0 {
                continue;
            }
            let coin_height = coin.height.min(next_height);
            if seq & SEQUENCE_LOCKTIME_TYPE_FLAG != 0 {
                let base = coin_height.saturating_sub(1);
                let coin_time = match self.hash_at(base) {
                    Some(h) => self.entries[&h].mtp as i64,
                    None => tip_mtp,
                };
                min_time =
                    min_time.max(coin_time + (((seq & SEQUENCE_LOCKTIME_MASK) as i64) << 9) - 1);
            } else {
                min_height =
                    min_height.max(coin_height as i64 + (seq & SEQUENCE_LOCKTIME_MASK) as i64 - 1);
            }
        }
        !(min_height >= next_height as i64 || min_time >= tip_mtp)
    }

    /// Consensus checks of a transaction's inputs (`Consensus::CheckTxInputs`) for inclusion at
    /// tip+1. Returns the fee.
    fn check_tx_inputs(&self, tx: &Transaction, coins: &[Coin]) -> Result<Amount, RpcError> {
        let spend_height = self.tip_height() + 1;
        let mut value_in: u64 = 0;
        for coin in coins {
            if coin.coinbase && spend_height - coin.height < COINBASE_MATURITY {
                return Err(reject(format!(
                    "bad-txns-premature-spend-of-coinbase, tried to spend coinbase at depth {}",
                    spend_height - coin.height
                )));
            }
            value_in += coin.output.value.to_sat();
            if value_in > Amount::MAX_MONEY.to_sat() {
                return Err(reject("bad-txns-inputvalues-outofrange"));
            }
        }
        let value_out: u64 = tx.output.iter().map(|o| o.value.to_sat()).sum();
        if value_in < value_out {
            return Err(reject(format!(
                "bad-txns-in-belowout, value in ({}) < value out ({})",
                format_money(value_in as i64),
                format_money(value_out as i64)
            )));
        }
        Ok(Amount::from_sat(value_in - value_out))
    }

    fn verify_scripts(tx: &Transaction, coins: &[Coin]) -> Result<(), RpcError> {
        let raw = serialize(tx);
        for (i, coin) in coins.iter().enumerate() {
            if let Err(e) = bitcoin::consensus::verify_script_with_flags(
                &coin.output.script_pubkey,
                i,
                coin.output.value,
                &raw,
                SCRIPT_FLAGS,
            ) {
                return Err(reject(format!(
                    "mandatory-script-verify-flag-failed (libbitcoinconsensus rejected input {i}: {e})"
                )));
            }
        }
        // libbitcoinconsensus 0.105 treats witness v1 as anyone-can-spend: check taproot here.
        if coins.iter().any(|c| c.output.script_pubkey.is_p2tr()) {
            let prevouts: Vec<TxOut> = coins.iter().map(|c| c.output.clone()).collect();
            for (i, coin) in coins.iter().enumerate() {
                if coin.output.script_pubkey.is_p2tr() {
                    verify_taproot(tx, i, &prevouts).map_err(|why| {
                        reject(format!("mandatory-script-verify-flag-failed ({why})"))
                    })?;
                }
            }
        }
        Ok(())
    }

    /// Validates `tx` for the mempool (`sendrawtransaction`) and adds it. `max_feerate` in sat/kvB
    /// (`None`: no limit).
    pub fn accept_tx(
        &mut self,
        tx: Transaction,
        max_feerate: Option<u64>,
    ) -> Result<Txid, RpcError> {
        self.accept_inner(tx, max_feerate, None, false, true)
            .map(|e| e.txid)
    }

    /// Runs every check `accept_tx` runs without adding the transaction (`testmempoolaccept`).
    pub fn test_accept(
        &mut self,
        tx: Transaction,
        max_feerate: Option<u64>,
    ) -> Result<MempoolEntry, RpcError> {
        self.accept_inner(tx, max_feerate, None, true, true)
    }

    /// The mempool's minimum feerate, sat/kvB (`getmempoolinfo`'s `mempoolminfee`).
    pub fn mempool_min_fee(&self) -> u64 {
        self.mempool_min_fee
    }

    /// Raises (or lowers, never under the minimum relay fee) the mempool's minimum feerate,
    /// as a full mempool would. Transactions already in stay.
    pub fn set_mempool_min_fee(&mut self, sat_per_kvb: u64) {
        self.mempool_min_fee = sat_per_kvb.max(MIN_RELAY_FEE_SAT_PER_KVB);
    }

    /// bitcoind's `submitpackage` for a child with its unconfirmed parents (or one
    /// transaction): each transaction is tried alone first, in order; those refused only for
    /// the mempool's minimum fee (and their descendants in the package) are then evaluated
    /// together, where the package's feerate must meet that minimum and each its minimum relay
    /// fee (package CPFP). What was accepted stays even if the rest is refused.
    pub fn submit_package(
        &mut self,
        txs: Vec<Transaction>,
        max_feerate: Option<u64>,
    ) -> Result<PackageOutcome, RpcError> {
        if txs.len() > 1 && !is_child_with_parents_tree(&txs) {
            return Err(RpcError::new(
                codes::VERIFY_ERROR,
                "package topology disallowed. not child-with-parents or parents depend on each other.",
            ));
        }
        let before: BTreeSet<Txid> = self.mempool.entries.keys().copied().collect();
        let mut results: Vec<Option<PackageTxResult>> = vec![None; txs.len()];
        let mut deferred: Vec<(usize, String)> = vec![];
        for (i, tx) in txs.iter().enumerate() {
            let txid = tx.compute_txid();
            if let Some(e) = self.mempool.get(&txid) {
                results[i] = Some(PackageTxResult::InMempool {
                    vsize: e.vsize,
                    fee: e.fee,
                });
                continue;
            }
            let waits_for_deferred = tx.input.iter().any(|i| {
                deferred
                    .iter()
                    .any(|(d, _)| txs[*d].compute_txid() == i.previous_output.txid)
            });
            match self.accept_inner(tx.clone(), max_feerate, None, false, true) {
                Ok(e) => {
                    results[i] = Some(PackageTxResult::Accepted {
                        vsize: e.vsize,
                        fee: e.fee,
                        effective_kvb: e.feerate_kvb() as u64,
                        includes: vec![tx.compute_wtxid()],
                    })
                }
                Err(e)
                    if e.message.starts_with(MEMPOOL_MIN_FEE_NOT_MET)
                        || (waits_for_deferred && e.code == codes::VERIFY_ERROR) =>
                {
                    deferred.push((i, e.message))
                }
                Err(e) => results[i] = Some(PackageTxResult::Rejected(e.message)),
            }
        }
        let failed_alone = results
            .iter()
            .any(|r| matches!(r, Some(PackageTxResult::Rejected(_))));
        let mut msg = "success".to_string();
        if failed_alone {
            msg = "transaction failed".into();
            for (i, why) in deferred {
                results[i] = Some(PackageTxResult::Rejected(why));
            }
        } else if !deferred.is_empty() {
            if let Err((i, why)) = self.accept_together(&txs, &deferred, max_feerate) {
                msg = "transaction failed".into();
                for (d, first) in &deferred {
                    let reason = match i {
                        Some(i) if i != *d => first.clone(),
                        _ => why.clone(),
                    };
                    results[*d] = Some(PackageTxResult::Rejected(reason));
                }
            } else {
                let (fee, vsize) = deferred.iter().fold((0u64, 0u64), |(f, v), (d, _)| {
                    let e = &self.mempool.entries[&txs[*d].compute_txid()];
                    (f + e.fee.to_sat(), v + e.vsize)
                });
                let includes: Vec<Wtxid> = deferred
                    .iter()
                    .map(|(d, _)| txs[*d].compute_wtxid())
                    .collect();
                for (d, _) in &deferred {
                    let e = &self.mempool.entries[&txs[*d].compute_txid()];
                    results[*d] = Some(PackageTxResult::Accepted {
                        vsize: e.vsize,
                        fee: e.fee,
                        effective_kvb: fee * 1000 / vsize.max(1),
                        includes: includes.clone(),
                    });
                }
            }
        }
        let after: BTreeSet<Txid> = self.mempool.entries.keys().copied().collect();
        Ok(PackageOutcome {
            msg,
            results: txs
                .iter()
                .zip(results)
                .map(|(t, r)| {
                    (
                        t.compute_txid(),
                        t.compute_wtxid(),
                        r.unwrap_or_else(|| {
                            PackageTxResult::Rejected("package-not-validated".into())
                        }),
                    )
                })
                .collect(),
            replaced: before.difference(&after).copied().collect(),
        })
    }

    /// Adds `deferred` (indices into `txs`, parents first) to the mempool as one package:
    /// each without the mempool-minimum check, then their total feerate against it and
    /// `max_feerate`. On a refusal the mempool is restored; the error names the transaction
    /// (`None`: the package as a whole).
    fn accept_together(
        &mut self,
        txs: &[Transaction],
        deferred: &[(usize, String)],
        max_feerate: Option<u64>,
    ) -> Result<(), (Option<usize>, String)> {
        let saved = self.mempool.clone();
        let (mut fee, mut vsize) = (0u64, 0u64);
        for (d, _) in deferred {
            match self.accept_inner(txs[*d].clone(), None, None, false, false) {
                Ok(e) => {
                    fee += e.fee.to_sat();
                    vsize += e.vsize;
                }
                Err(e) => {
                    self.mempool = saved;
                    return Err((Some(*d), e.message));
                }
            }
        }
        let needed = self.mempool_min_fee * vsize / 1000;
        let refusal = if fee < needed {
            Some(format!("{MEMPOOL_MIN_FEE_NOT_MET}, {fee} < {needed}"))
        } else if max_feerate
            .is_some_and(|m| m > 0 && fee as u128 * 1000 > m as u128 * vsize as u128)
        {
            Some("max feerate exceeded".to_string())
        } else {
            None
        };
        match refusal {
            Some(why) => {
                self.mempool = saved;
                Err((None, why))
            }
            None => Ok(()),
        }
    }

    /// Mempool acceptance of one transaction. `mempool_minimum`: also check the mempool's
    /// minimum feerate (not for a package's members nor for transactions coming back after a
    /// block, as in bitcoind); the minimum relay fee is always checked.
    fn accept_inner(
        &mut self,
        tx: Transaction,
        max_feerate: Option<u64>,
        time: Option<u64>,
        test_only: bool,
        mempool_minimum: bool,
    ) -> Result<MempoolEntry, RpcError> {
        let txid = tx.compute_txid();
        if let Some(e) = self.mempool.get(&txid) {
            return Ok(e.clone());
        }
        // Like sendrawtransaction: an output of it already in the UTXO set means it is mined.
        if (0..tx.output.len() as u32).any(|vout| self.utxos.contains_key(&OutPoint { txid, vout }))
        {
            return Err(RpcError::new(
                codes::VERIFY_ALREADY_IN_CHAIN,
                "Transaction already in block chain",
            ));
        }
        check_transaction(&tx)?;
        if tx.is_coinbase() {
            return Err(reject("coinbase"));
        }
        // Policy: dust outputs (bitcoind's 3 sat/vB dust relay fee).
        if tx.output.iter().any(|o| {
            !o.script_pubkey.is_op_return() && o.value < o.script_pubkey.minimal_non_dust()
        }) {
            return Err(reject("dust"));
        }
        let next_height = self.tip_height() + 1;
        if !is_final_tx(&tx, next_height, self.tip().mtp) {
            return Err(reject("non-final"));
        }
        // Conflicts with the mempool: replaceable only if the conflicting tx (or an in-mempool
        // ancestor of it) signals BIP125.
        let mut direct_conflicts: BTreeSet<Txid> = BTreeSet::new();
        for input in &tx.input {
            if let Some(other) = self.mempool.spender_of(&input.previous_output) {
                direct_conflicts.insert(other);
            }
        }
        for c in &direct_conflicts {
            let replaceable = std::iter::once(*c)
                .chain(self.mempool.ancestors(c))
                .any(|t| self.mempool.get(&t).is_some_and(|e| signals_rbf(&e.tx)));
            if !replaceable {
                return Err(reject("txn-mempool-conflict"));
            }
        }
        let mut coins = Vec::with_capacity(tx.input.len());
        for input in &tx.input {
            match self.mempool_view_coin(&input.previous_output) {
                Some(c) => coins.push(c),
                None => return Err(missing_inputs()),
            }
        }
        if !self.sequence_locks_ok(&tx, &coins) {
            return Err(reject("non-BIP68-final"));
        }
        let fee = self.check_tx_inputs(&tx, &coins)?;
        let vsize = tx.vsize() as u64;
        let weight = tx.weight().to_wu();
        let min_fee = MIN_RELAY_FEE_SAT_PER_KVB * vsize / 1000;
        if fee.to_sat() < min_fee {
            return Err(reject(format!(
                "min relay fee not met, {} < {}",
                fee.to_sat(),
                min_fee
            )));
        }
        let pool_min = self.mempool_min_fee * vsize / 1000;
        if mempool_minimum && fee.to_sat() < pool_min {
            return Err(reject(format!(
                "{MEMPOOL_MIN_FEE_NOT_MET}, {} < {pool_min}",
                fee.to_sat()
            )));
        }
        let mut all_conflicts: BTreeSet<Txid> = BTreeSet::new();
        for c in &direct_conflicts {
            all_conflicts.insert(*c);
            all_conflicts.extend(self.mempool.descendants(c));
        }
        if !all_conflicts.is_empty() {
            if tx
                .input
                .iter()
                .any(|i| all_conflicts.contains(&i.previous_output.txid))
            {
                return Err(reject(format!(
                    "bad-txns-spends-conflicting-tx, {txid} spends conflicting transaction"
                )));
            }
            let new_rate = fee.to_sat() as u128 * 1000 / vsize.max(1) as u128;
            for c in &direct_conflicts {
                let old = &self.mempool.entries[c];
                if new_rate <= old.feerate_kvb() {
                    return Err(reject(format!(
                        "insufficient fee, rejecting replacement {txid}; new feerate {} BTC/kvB <= old feerate {} BTC/kvB",
                        format_money(new_rate as i64),
                        format_money(old.feerate_kvb() as i64)
                    )));
                }
            }
            let conflict_fees: u64 = all_conflicts
                .iter()
                .map(|t| self.mempool.entries[t].fee.to_sat())
                .sum();
            if fee.to_sat() < conflict_fees {
                return Err(reject(format!(
                    "insufficient fee, rejecting replacement {txid}, less fees than conflicting txs; {} < {}",
                    format_money(fee.to_sat() as i64),
                    format_money(conflict_fees as i64)
                )));
            }
            let needed = INCREMENTAL_RELAY_FEE_SAT_PER_KVB * vsize / 1000;
            if fee.to_sat() - conflict_fees < needed {
                return Err(reject(format!(
                    "insufficient fee, rejecting replacement {txid}, not enough additional fees to relay; {} < {}",
                    format_money((fee.to_sat() - conflict_fees) as i64),
                    format_money(needed as i64)
                )));
            }
        }
        Self::verify_scripts(&tx, &coins)?;
        if let Some(max) = max_feerate
            && max > 0
            && fee.to_sat() as u128 > max as u128 * vsize as u128 / 1000
        {
            return Err(RpcError::new(
                codes::VERIFY_ERROR,
                "Fee exceeds maximum configured by user (e.g. -maxtxfee, maxfeerate)",
            ));
        }
        let entry = MempoolEntry {
            tx,
            txid,
            fee,
            vsize,
            weight,
            time: time.unwrap_or_else(|| self.now()),
            height: self.tip_height(),
            seq: 0,
        };
        if test_only {
            return Ok(entry);
        }
        for c in &all_conflicts {
            self.mempool.remove(c);
        }
        self.mempool.insert(entry.clone());
        Ok(entry)
    }

    // ----- mining -----

    /// Mempool transactions for the next block: best ancestor-package feerate first, each after its
    /// in-mempool ancestors, within the block weight limit.
    fn select_block_txs(&self) -> (Vec<Transaction>, Amount) {
        let mut scored: Vec<(u128, u64, Txid)> = self
            .mempool
            .entries
            .values()
            .map(|e| {
                let anc = self.mempool.ancestors(&e.txid);
                let (fee, size) = anc
                    .iter()
                    .map(|t| &self.mempool.entries[t])
                    .fold((e.fee.to_sat(), e.vsize), |(f, s), a| {
                        (f + a.fee.to_sat(), s + a.vsize)
                    });
                (fee as u128 * 1000 / size.max(1) as u128, e.seq, e.txid)
            })
            .collect();
        scored.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        let mut included: HashSet<Txid> = HashSet::new();
        let mut txs = Vec::new();
        let mut fees = Amount::ZERO;
        let mut weight: u64 = 4_000; // room for the header and coinbase
        for (_, _, txid) in scored {
            if included.contains(&txid) {
                continue;
            }
            let mut package: Vec<&MempoolEntry> = self
                .mempool
                .ancestors(&txid)
                .iter()
                .chain(std::iter::once(&txid))
                .filter(|t| !included.contains(*t))
                .map(|t| &self.mempool.entries[t])
                .collect();
            package.sort_by_key(|e| e.seq);
            let pw: u64 = package.iter().map(|e| e.weight).sum();
            if weight + pw > MAX_BLOCK_WEIGHT {
                continue;
            }
            weight += pw;
            for e in package {
                included.insert(e.txid);
                fees += e.fee;
                txs.push(e.tx.clone());
            }
        }
        (txs, fees)
    }

    /// `generatetoaddress`: mines `n` blocks paying `script`, each with the mempool's best
    /// transactions.
    pub fn generate(&mut self, n: u32, script: &ScriptBuf) -> Result<Vec<BlockHash>, RpcError> {
        let mut hashes = Vec::with_capacity(n as usize);
        for _ in 0..n {
            let (txs, fees) = self.select_block_txs();
            hashes.push(self.mine(script, txs, fees)?);
        }
        Ok(hashes)
    }

    /// `generateblock`: mines one block paying `script` with exactly `txs` (which need not be in
    /// the mempool, and are checked with consensus rules only).
    pub fn generate_block(
        &mut self,
        script: &ScriptBuf,
        txs: Vec<Transaction>,
    ) -> Result<BlockHash, RpcError> {
        let fees = self.check_block_txs(&txs).map_err(|r| {
            RpcError::new(
                codes::VERIFY_ERROR,
                format!("TestBlockValidity failed: {r}"),
            )
        })?;
        self.mine(script, txs, fees)
    }

    /// Consensus checks of a block's non-coinbase transactions at tip+1. Returns total fees.
    fn check_block_txs(&self, txs: &[Transaction]) -> Result<Amount, String> {
        let mut created: HashMap<OutPoint, Coin> = HashMap::new();
        let mut spent: HashSet<OutPoint> = HashSet::new();
        let mut fees = Amount::ZERO;
        let next_height = self.tip_height() + 1;
        let mut weight = 4_000u64;
        for tx in txs {
            check_transaction(tx).map_err(|e| e.message)?;
            if tx.is_coinbase() {
                return Err("bad-cb-multiple".into());
            }
            weight += tx.weight().to_wu();
            if weight > MAX_BLOCK_WEIGHT {
                return Err("bad-blk-weight".into());
            }
            if !is_final_tx(tx, next_height, self.tip().mtp) {
                return Err("bad-txns-nonfinal".into());
            }
            let txid = tx.compute_txid();
            let mut coins = Vec::new();
            for input in &tx.input {
                let op = input.previous_output;
                if !spent.insert(op) {
                    return Err("bad-txns-inputs-missingorspent".into());
                }
                match created
                    .get(&op)
                    .cloned()
                    .or_else(|| self.utxos.get(&op).cloned())
                {
                    Some(c) => coins.push(c),
                    None => return Err("bad-txns-inputs-missingorspent".into()),
                }
            }
            if !self.sequence_locks_ok(tx, &coins) {
                return Err("bad-txns-nonfinal".into());
            }
            fees += self.check_tx_inputs(tx, &coins).map_err(|e| e.message)?;
            Self::verify_scripts(tx, &coins).map_err(|e| e.message)?;
            for (vout, out) in tx.output.iter().enumerate() {
                let op = OutPoint {
                    txid,
                    vout: vout as u32,
                };
                if self.utxos.contains_key(&op) || created.contains_key(&op) {
                    return Err("bad-txns-BIP30".into());
                }
                created.insert(
                    op,
                    Coin {
                        output: out.clone(),
                        height: next_height,
                        coinbase: false,
                    },
                );
            }
        }
        Ok(fees)
    }

    /// Builds, grinds and connects a block on the tip.
    fn mine(
        &mut self,
        script: &ScriptBuf,
        txs: Vec<Transaction>,
        fees: Amount,
    ) -> Result<BlockHash, RpcError> {
        let height = self.tip_height() + 1;
        let prev = self.tip_hash();
        let time = (self.now().min(u32::MAX as u64) as u32).max(self.tip().mtp.saturating_add(1));

        let coinbase = TxIn {
            previous_output: OutPoint::null(),
            script_sig: Builder::new()
                .push_int(height as i64)
                .push_opcode(bitcoin::opcodes::OP_0)
                .into_script(),
            sequence: Sequence::MAX,
            witness: Witness::from_slice(&[[0u8; 32]]),
        };
        let coinbase_tx = Transaction {
            version: TxVersion::TWO,
            lock_time: absolute::LockTime::ZERO,
            input: vec![coinbase],
            output: vec![TxOut {
                value: block_subsidy(height) + fees,
                script_pubkey: script.clone(),
            }],
        };
        let mut txdata = Vec::with_capacity(txs.len() + 1);
        txdata.push(coinbase_tx);
        txdata.extend(txs);
        let mut block = Block {
            header: Header {
                version: BlockVersion::from_consensus(0x2000_0000),
                prev_blockhash: prev,
                merkle_root: TxMerkleNode::all_zeros(),
                time,
                bits: CompactTarget::from_consensus(REGTEST_BITS),
                nonce: 0,
            },
            txdata,
        };
        // BIP141 witness commitment in the coinbase (reserved value: 32 zero bytes).
        let witness_root = block
            .witness_root()
            .ok_or_else(|| RpcError::new(codes::MISC_ERROR, "no witness root"))?;
        let commitment = Block::compute_witness_commitment(&witness_root, &[0u8; 32]);
        let mut commitment_script = vec![0x6a, 0x24, 0xaa, 0x21, 0xa9, 0xed];
        commitment_script.extend_from_slice(commitment.as_byte_array());
        block.txdata[0].output.push(TxOut {
            value: Amount::ZERO,
            script_pubkey: ScriptBuf::from_bytes(commitment_script),
        });
        block.header.merkle_root = block
            .compute_merkle_root()
            .ok_or_else(|| RpcError::new(codes::MISC_ERROR, "no merkle root"))?;
        let target = block.header.target();
        while block.header.validate_pow(target).is_err() {
            block.header.nonce = block.header.nonce.wrapping_add(1);
            if block.header.nonce == 0 {
                block.header.time = block.header.time.wrapping_add(1);
            }
        }
        let hash = self
            .insert_entry(block)
            .map_err(|e| RpcError::new(codes::MISC_ERROR, e))?;
        self.connect(hash)?;
        if let Some(store) = &mut self.store
            && let Err(e) = store.append(&self.entries[&hash].block)
        {
            eprintln!("devchain: cannot save block {hash}: {e}");
        }
        self.refresh_mempool();
        Ok(hash)
    }

    // ----- faucet -----

    /// Coins the faucet can spend now: mature confirmed ones (largest first), then unconfirmed
    /// change, none of them spent in the mempool.
    fn faucet_coins(&self) -> Vec<(OutPoint, Coin)> {
        let spk = self.faucet.script_pubkey();
        let next = self.tip_height() + 1;
        let mut confirmed: Vec<(OutPoint, Coin)> = self
            .utxos
            .iter()
            .filter(|(op, c)| {
                &c.output.script_pubkey == spk
                    // Like bitcoind's wallet: a coinbase needs 101 confirmations.
                    && (!c.coinbase || next - c.height > COINBASE_MATURITY)
                    && self.mempool.spender_of(op).is_none()
            })
            .map(|(op, c)| (*op, c.clone()))
            .collect();
        confirmed.sort_by(|a, b| b.1.output.value.cmp(&a.1.output.value).then(a.0.cmp(&b.0)));
        let mut unconfirmed: Vec<(OutPoint, Coin)> = Vec::new();
        for e in self.mempool.entries_in_order() {
            for (vout, out) in e.tx.output.iter().enumerate() {
                let op = OutPoint {
                    txid: e.txid,
                    vout: vout as u32,
                };
                if &out.script_pubkey == spk && self.mempool.spender_of(&op).is_none() {
                    unconfirmed.push((
                        op,
                        Coin {
                            output: out.clone(),
                            height: next,
                            coinbase: false,
                        },
                    ));
                }
            }
        }
        confirmed.extend(unconfirmed);
        confirmed
    }

    /// Confirmed, mature faucet balance (what `getbalance` would show).
    pub fn faucet_balance(&self) -> Amount {
        self.faucet_coins()
            .iter()
            .map(|(_, c)| c.output.value)
            .sum()
    }

    /// `sendtoaddress` from the faucet. `sat_per_vb`: fee rate, default the estimate for 6 blocks
    /// or 2 sat/vB. The spend goes through the normal mempool validation.
    pub fn send_to_address(
        &mut self,
        script: ScriptBuf,
        amount: Amount,
        subtract_fee: bool,
        sat_per_vb: Option<f64>,
    ) -> Result<Txid, RpcError> {
        if amount == Amount::ZERO {
            return Err(RpcError::new(codes::TYPE_ERROR, "Invalid amount for send"));
        }
        if amount < script.minimal_non_dust() && !script.is_op_return() {
            return Err(RpcError::new(
                codes::WALLET_ERROR,
                "Transaction amount too small",
            ));
        }
        let rate = sat_per_vb
            .or_else(|| self.estimate_fee(6))
            .unwrap_or(FAUCET_DEFAULT_SAT_PER_VB)
            .max(self.mempool_min_fee as f64 / 1000.0);
        let change_script = self.faucet.script_pubkey().clone();
        let coins = self.faucet_coins();
        let mut selected: Vec<(OutPoint, Coin)> = Vec::new();
        let mut total = Amount::ZERO;
        // vbytes: 10.5 overhead + 68 per P2WPKH input + the outputs; round up generously.
        let out_vb = 9 + script.len() as u64 + 31;
        let fee_for = |n_inputs: u64| {
            Amount::from_sat((rate * (11 + 68 * n_inputs + out_vb) as f64).ceil() as u64)
        };
        for (op, coin) in coins {
            total += coin.output.value;
            selected.push((op, coin));
            let need = if subtract_fee {
                amount
            } else {
                amount + fee_for(selected.len() as u64)
            };
            if total >= need {
                break;
            }
        }
        let fee = fee_for(selected.len() as u64);
        let need = if subtract_fee { amount } else { amount + fee };
        if total < need || (subtract_fee && amount <= fee) {
            return Err(RpcError::new(
                codes::WALLET_INSUFFICIENT_FUNDS,
                "Insufficient funds",
            ));
        }
        let send_value = if subtract_fee { amount - fee } else { amount };
        let change = total - send_value - fee;
        let mut outputs = vec![TxOut {
            value: send_value,
            script_pubkey: script,
        }];
        if change >= change_script.minimal_non_dust() {
            outputs.push(TxOut {
                value: change,
                script_pubkey: change_script,
            });
        }
        let mut tx = Transaction {
            version: TxVersion::TWO,
            lock_time: absolute::LockTime::from_height(self.tip_height())
                .unwrap_or(absolute::LockTime::ZERO),
            input: selected
                .iter()
                .map(|(op, _)| TxIn {
                    previous_output: *op,
                    script_sig: ScriptBuf::new(),
                    sequence: Sequence::ENABLE_RBF_NO_LOCKTIME,
                    witness: Witness::new(),
                })
                .collect(),
            output: outputs,
        };
        let values: Vec<Amount> = selected.iter().map(|(_, c)| c.output.value).collect();
        self.faucet
            .sign(&mut tx, &values)
            .map_err(|e| RpcError::new(codes::WALLET_ERROR, e))?;
        self.accept_tx(tx, None)
    }
}

/// BIP341 checks of a taproot input, with Bitcoin Core's error wording. A key-path spend's
/// Schnorr signature is verified against the sighash over all prevouts (annex included); a
/// script-path spend must reveal a script and control block that commit to the output key.
/// Tapscript *execution* is not interpreted (documented in README.md): no wallet or Lightning
/// flow we test spends through a tapscript.
pub fn verify_taproot(tx: &Transaction, index: usize, prevouts: &[TxOut]) -> Result<(), String> {
    use bitcoin::key::XOnlyPublicKey;
    use bitcoin::secp256k1::{Message, Secp256k1, schnorr};
    use bitcoin::sighash::{Annex, Prevouts, SighashCache, TapSighashType};
    use bitcoin::taproot::{ControlBlock, LeafVersion};

    let spk = &prevouts[index].script_pubkey;
    let output_key = XOnlyPublicKey::from_slice(&spk.as_bytes()[2..34])
        .map_err(|_| "Witness program has incorrect length".to_string())?;
    let mut elems: Vec<&[u8]> = tx.input[index].witness.iter().collect();
    let annex = match elems.last() {
        Some(last) if elems.len() >= 2 && last.first() == Some(&0x50) => {
            let a = Annex::new(last).map_err(|_| "Invalid annex".to_string())?;
            elems.pop();
            Some(a)
        }
        _ => None,
    };
    let secp = Secp256k1::verification_only();
    match elems.len() {
        0 => Err("Witness program was passed an empty witness".into()),
        1 => {
            let sig = elems[0];
            let (bytes, hash_ty) = match sig.len() {
                64 => (sig, TapSighashType::Default),
                65 if sig[64] != 0 => (
                    &sig[..64],
                    TapSighashType::from_consensus_u8(sig[64])
                        .map_err(|_| "Invalid Schnorr signature hash type".to_string())?,
                ),
                _ => return Err("Invalid Schnorr signature size".into()),
            };
            let sighash = SighashCache::new(tx)
                .taproot_signature_hash(index, &Prevouts::All(prevouts), annex, None, hash_ty)
                .map_err(|e| format!("Invalid Schnorr signature ({e})"))?;
            let sig = schnorr::Signature::from_slice(bytes)
                .map_err(|_| "Invalid Schnorr signature".to_string())?;
            let msg = Message::from_digest(sighash.to_byte_array());
            secp.verify_schnorr(&sig, &msg, &output_key)
                .map_err(|_| "Invalid Schnorr signature".to_string())
        }
        n => {
            let control = ControlBlock::decode(elems[n - 1])
                .map_err(|_| "Invalid Taproot control block size".to_string())?;
            let script = bitcoin::Script::from_bytes(elems[n - 2]);
            if control.leaf_version != LeafVersion::TapScript {
                // Unknown leaf versions are anyone-can-spend in consensus.
                return Ok(());
            }
            if control.verify_taproot_commitment(&secp, output_key, script) {
                Ok(())
            } else {
                Err("Witness program hash mismatch".into())
            }
        }
    }
}
