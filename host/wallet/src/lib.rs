//! The on-chain wallet (see `docs/adr/0005-onchain-wallet.md`).
//!
//! Two watch-only BDK wallets derived from `hsm_secret`'s BIP32 master key: BIP86 taproot
//! (`tr()`, `m/86'/c'/0'/{0,1}/*`) and BIP84 segwit v0 (`wpkh()`, `m/84'/c'/0'/{0,1}/*`),
//! coin type `c` 0 on mainnet and 1 elsewhere. Coin selection, fees, signing (with the
//! master key, never given to BDK) and finalization are ours and draw from both wallets,
//! so one transaction can spend taproot and segwit v0 coins; change goes to taproot.
//!
//! Blocks arrive through LDK's [`Listen`]; every BDK change is appended to the node's
//! SQLite database as a JSON changeset row ([`persist`]). Coins picked for a transaction
//! are reserved under the state lock in the same critical section that picks them, and stay
//! reserved until the broadcast succeeded (then they are spent) or failed (then released),
//! or for 72 blocks for `txprepare`.
//!
//! A crate of its own (docs/adr/0009-host-crates.md): errors are typed ([`WalletError`]);
//! the RPC turns them and the wallet's values into CLN's codes and JSON.

#![deny(missing_docs)]
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::string_slice)]

pub mod bump;
mod persist;
mod psbt;
pub mod select;
#[cfg(test)]
mod tests;

use std::collections::{HashMap, HashSet};

use std::sync::{Arc, Mutex, MutexGuard, RwLock, Weak};

use bdk_wallet::chain::{BlockId, ChainPosition, Merge};
use bdk_wallet::descriptor::IntoWalletDescriptor;
use bdk_wallet::template::{Bip84Public, Bip86Public};
use bdk_wallet::{ChangeSet, KeychainKind, LoadParams, LocalOutput, Update};
use bitcoin::bip32::{ChildNumber, DerivationPath, Xpriv, Xpub};
use bitcoin::block::Header;
use bitcoin::psbt::Psbt;
use bitcoin::secp256k1::{All, Secp256k1};
use bitcoin::{
    Address, Amount, Block, Network, OutPoint, ScriptBuf, Sequence, Transaction, TxIn, TxOut, Txid,
    Weight, Witness, absolute::LockTime, transaction::Version,
};
use lightning::chain::transaction::TransactionData;
use lightning::chain::{BlockLocator, Listen};

use fulgur_chain::{BroadcastError, FeeEstimates, TxBroadcaster};
use fulgur_store::{Store, StoreError};

pub use psbt::{FundRequest, Funded, MessageKeyError, P2TR_OUTPUT_WEIGHT, Reservation};

/// How long `txprepare` and `fund` keep coins reserved, in blocks (CLN's default).
pub const RESERVE_BLOCKS: u32 = 72;
/// CLN's default `min-emergency-msat`, in sat.
pub const DEFAULT_MIN_EMERGENCY_SAT: u64 = 25_000;
/// Confirmations before a coinbase output can be spent.
const COINBASE_MATURITY: u32 = 100;

/// Why a wallet operation failed; each maps to CLN's code.
#[derive(Debug, thiserror::Error)]
pub enum WalletError {
    /// A parameter is wrong (`-32602`).
    #[error("{0}")]
    InvalidParams(String),
    /// Not enough funds (`301`).
    #[error("{0}")]
    CannotAfford(String),
    /// Affordable, but only by spending the emergency reserve kept for anchor channels
    /// (`313`, CLN's `FUND_CANNOT_AFFORD_WITH_EMERGENCY`).
    #[error("{0}")]
    Emergency(String),
    /// An output would be dust (`302`).
    #[error("{0}")]
    Dust(String),
    /// The backend refused the transaction (`-1`, CLN's `sendpsbt` wording).
    #[error("Error broadcasting transaction: {0}. Unsent tx discarded")]
    Broadcast(BroadcastError),
    /// Something else (`-1`).
    #[error("{0}")]
    Other(String),
    /// The database failed (`-1`).
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The BDK wallet of kind `k`, its descriptors made by `template` for each keychain: new, or
/// loaded from its `changeset` (which must hold the same descriptors, on `network`).
fn bdk_wallet_of<D>(
    template: impl Fn(KeychainKind) -> D,
    changeset: Option<&ChangeSet>,
    network: Network,
    k: Kind,
) -> Result<bdk_wallet::Wallet, WalletError>
where
    D: IntoWalletDescriptor + Send + Clone + 'static,
{
    let (external, internal) = (
        template(KeychainKind::External),
        template(KeychainKind::Internal),
    );
    match changeset {
        None => bdk_wallet::Wallet::create(external, internal)
            .network(network)
            .create_wallet_no_persist()
            .map_err(other),
        Some(cs) => {
            let params = LoadParams::new()
                .check_network(network)
                .descriptor(KeychainKind::External, Some(external))
                .descriptor(KeychainKind::Internal, Some(internal));
            bdk_wallet::Wallet::load_with_params(cs.clone(), params)
                .map_err(|e| other(format!("cannot load the {} wallet: {e}", k.name())))?
                .ok_or_else(|| other("empty wallet changeset"))
        }
    }
}

fn other(e: impl std::fmt::Display) -> WalletError {
    WalletError::Other(e.to_string())
}

/// The two BDK wallets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// BIP86 taproot.
    P2tr,
    /// BIP84 segwit v0.
    P2wpkh,
}

impl Kind {
    const ALL: [Kind; 2] = [Kind::P2tr, Kind::P2wpkh];

    fn name(self) -> &'static str {
        match self {
            Kind::P2tr => "p2tr",
            Kind::P2wpkh => "p2wpkh",
        }
    }

    /// Witness of a spend of this kind, with signatures at their largest size (for fees).
    fn dummy_witness(self) -> Witness {
        match self {
            Kind::P2tr => Witness::from_slice(&[vec![0u8; 64]]),
            Kind::P2wpkh => Witness::from_slice(&[vec![0u8; 72], vec![0u8; 33]]),
        }
    }
}

/// Which addresses `newaddr` makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddrRequest {
    /// `bech32` (p2wpkh).
    Bech32,
    /// `p2tr`.
    P2tr,
    /// Both.
    All,
}

/// An amount to send: sat, or everything the selected coins hold after fees.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Amt {
    /// This many sat.
    Sat(u64),
    /// `all`.
    All,
}

/// What to spend to.
#[derive(Debug, Clone)]
pub struct SpendRequest {
    /// Destinations; at most one may be [`Amt::All`].
    pub outputs: Vec<(ScriptBuf, Amt)>,
    /// Sat per 1000 weight units.
    pub feerate_perkw: u32,
    /// Minimum confirmations of the coins used (0 allows unconfirmed ones).
    pub minconf: u32,
    /// Exactly these coins, all of them, when given.
    pub utxos: Option<Vec<OutPoint>>,
}

/// A coin's state, as `listfunds` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// In the mempool (or seen only in a block that was reorganized away).
    Unconfirmed,
    /// In the best chain.
    Confirmed,
    /// Spent by a transaction we know.
    Spent,
    /// A coinbase output younger than 100 blocks.
    Immature,
}

impl Status {
    /// CLN's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Unconfirmed => "unconfirmed",
            Status::Confirmed => "confirmed",
            Status::Spent => "spent",
            Status::Immature => "immature",
        }
    }
}

/// One of our outputs.
#[derive(Debug, Clone)]
pub struct Fund {
    /// Where it is.
    pub outpoint: OutPoint,
    /// Its value.
    pub value: Amount,
    /// Its script.
    pub script: ScriptBuf,
    /// Its address.
    pub address: Option<String>,
    /// Its state.
    pub status: Status,
    /// Block height until which it is reserved, if it is.
    pub reserved_to: Option<u32>,
    /// Height of the block that confirmed it.
    pub blockheight: Option<u32>,
}

/// A wallet transaction, as `listtransactions` shows it.
#[derive(Debug, Clone)]
pub struct TxEntry {
    /// The transaction.
    pub tx: Arc<Transaction>,
    /// Its block height, if confirmed.
    pub blockheight: Option<u32>,
    /// Its position in the block, if known.
    pub txindex: Option<u32>,
}

/// A transaction built and reserved but not yet signed and sent (`txprepare`).
#[derive(Debug, Clone)]
pub struct Prepared {
    /// The PSBT with every input's UTXO and key origin filled in.
    pub psbt: Psbt,
    /// Its inputs.
    pub inputs: Vec<OutPoint>,
}

struct Slot {
    w: bdk_wallet::Wallet,
    /// Everything ever persisted or staged (for rebuilding on reorgs).
    aggregate: ChangeSet,
    /// Not yet written.
    pending: ChangeSet,
}

impl Slot {
    /// Moves BDK's staged changes to `pending` and `aggregate`.
    fn drain(&mut self) {
        if let Some(cs) = self.w.take_staged() {
            self.aggregate.merge(cs.clone());
            self.pending.merge(cs);
        }
    }

    /// Forgets every block above `keep` (which becomes the tip) and rebuilds the wallet,
    /// so transactions confirmed only in those blocks become unconfirmed (if they were seen
    /// unconfirmed) or disappear.
    fn rewind(&mut self, keep: BlockId) -> Result<(), WalletError> {
        self.drain();
        let tip = self.w.latest_checkpoint();
        if tip.height() < keep.height || tip.block_id() == keep {
            return Ok(());
        }
        let mut delta = ChangeSet::default();
        for cp in tip.iter() {
            if cp.height() <= keep.height {
                break;
            }
            delta.local_chain.blocks.insert(cp.height(), None);
        }
        if keep.height > 0 {
            delta
                .local_chain
                .blocks
                .insert(keep.height, Some(keep.hash));
        }
        let mut full = self.aggregate.clone();
        full.merge(delta.clone());
        let w = bdk_wallet::Wallet::load_with_params(full.clone(), LoadParams::new())
            .map_err(other)?
            .ok_or_else(|| other("wallet changeset vanished"))?;
        self.w = w;
        self.aggregate = full;
        self.pending.merge(delta);
        Ok(())
    }

    /// Applies a block, filling a gap below it when our chain stops earlier (a wallet born
    /// after the blocks the stream starts from), and rewinding when its parent is not ours.
    fn connect(&mut self, block: &Block, height: u32) -> Result<(), WalletError> {
        if height == 0 {
            return Ok(());
        }
        let prev = BlockId {
            height: height - 1,
            hash: block.header.prev_blockhash,
        };
        if self.w.apply_block_connected_to(block, height, prev).is_ok() {
            return Ok(());
        }
        // Our chain disagrees at or below `prev`: drop everything from `prev` up, then
        // attach `prev` and the block.
        let tip = self.w.latest_checkpoint();
        if tip.height() >= prev.height {
            let below = tip
                .iter()
                .find(|cp| cp.height() < prev.height)
                .map(|cp| cp.block_id())
                .ok_or_else(|| other("cannot rewind below genesis"))?;
            self.rewind(below)?;
        }
        let cp = self
            .w
            .latest_checkpoint()
            .push(prev)
            .map_err(|_| other("cannot attach block"))?;
        self.w
            .apply_update(Update {
                chain: Some(cp),
                ..Default::default()
            })
            .map_err(other)?;
        self.w
            .apply_block_connected_to(block, height, prev)
            .map_err(other)
    }
}

struct State {
    tr: Slot,
    wpkh: Slot,
    /// Reserved coins and the height their reservation ends.
    reserved: HashMap<OutPoint, u32>,
    prepared: HashMap<Txid, Prepared>,
    /// Reserved coins that fee bumps of anchor channels spend (see [`bump`]): reserved for
    /// every other spend, but offered again to LDK's bump coin selection, which keeps them
    /// with the claim they were picked for.
    bumps: HashSet<OutPoint>,
    txindex: HashMap<Txid, u32>,
    txindex_pending: Vec<(Txid, u32)>,
    /// `reserved` changed since it was last written.
    reservations_dirty: bool,
}

impl State {
    /// Reserves `ops` until `until` (`bump`: for an anchor channel's fee bump).
    fn reserve(&mut self, ops: &[OutPoint], until: u32, bump: bool) {
        for op in ops {
            self.reserved.insert(*op, until);
            if bump {
                self.bumps.insert(*op);
            }
        }
        self.reservations_dirty |= !ops.is_empty();
    }

    /// The reservations as stored, when they changed since last written.
    fn take_reservations(&mut self) -> Option<Vec<persist::Reservation>> {
        if !std::mem::take(&mut self.reservations_dirty) {
            return None;
        }
        let mut all: Vec<persist::Reservation> = self
            .reserved
            .iter()
            .map(|(op, until)| (*op, *until, self.bumps.contains(op)))
            .collect();
        all.sort();
        Some(all)
    }

    fn slot(&self, k: Kind) -> &Slot {
        match k {
            Kind::P2tr => &self.tr,
            Kind::P2wpkh => &self.wpkh,
        }
    }

    fn slot_mut(&mut self, k: Kind) -> &mut Slot {
        match k {
            Kind::P2tr => &mut self.tr,
            Kind::P2wpkh => &mut self.wpkh,
        }
    }

    fn tip(&self) -> BlockId {
        self.tr.w.latest_checkpoint().block_id()
    }

    fn is_reserved(&self, op: &OutPoint) -> Option<u32> {
        let tip = self.tip().height;
        self.reserved.get(op).copied().filter(|until| *until > tip)
    }

    /// Takes the prepared transaction `txid` out of the unreleased ones.
    fn take_prepared(&mut self, txid: Txid) -> Result<Prepared, WalletError> {
        self.prepared
            .remove(&txid)
            .ok_or_else(|| WalletError::Other(format!("{txid} not an unreleased txid")))
    }

    fn release(&mut self, ops: &[OutPoint]) {
        for op in ops {
            self.reservations_dirty |= self.reserved.remove(op).is_some();
            self.bumps.remove(op);
        }
    }

    fn confirmations(&self, pos: &ChainPosition<bdk_wallet::chain::ConfirmationBlockTime>) -> u32 {
        match pos {
            ChainPosition::Confirmed { anchor, .. } => {
                (self.tip().height + 1).saturating_sub(anchor.block_id.height)
            }
            ChainPosition::Unconfirmed { .. } => 0,
        }
    }

    fn is_coinbase(&self, k: Kind, txid: Txid) -> bool {
        self.slot(k)
            .w
            .tx_graph()
            .get_tx(txid)
            .is_some_and(|t| t.is_coinbase())
    }

    fn status(&self, k: Kind, o: &LocalOutput) -> Status {
        let confs = self.confirmations(&o.chain_position);
        if o.is_spent {
            Status::Spent
        } else if confs == 0 {
            Status::Unconfirmed
        } else if confs < COINBASE_MATURITY && self.is_coinbase(k, o.outpoint.txid) {
            Status::Immature
        } else {
            Status::Confirmed
        }
    }

    /// An unsigned PSBT spending `coins` (RBF-signalling) to `outputs`, each input with
    /// what a signer needs.
    fn psbt_spending(
        &self,
        coins: &[(Kind, LocalOutput)],
        outputs: Vec<TxOut>,
        lock_time: LockTime,
    ) -> Result<Psbt, WalletError> {
        let tx = Transaction {
            version: Version::TWO,
            lock_time,
            input: coins
                .iter()
                .map(|(_, o)| TxIn {
                    previous_output: o.outpoint,
                    script_sig: ScriptBuf::new(),
                    sequence: Sequence::ENABLE_RBF_NO_LOCKTIME,
                    witness: Witness::new(),
                })
                .collect(),
            output: outputs,
        };
        let mut psbt = Psbt::from_unsigned_tx(tx).map_err(other)?;
        for (i, (k, o)) in coins.iter().enumerate() {
            psbt.inputs[i] = self
                .slot(*k)
                .w
                .get_psbt_input(o.clone(), None, false)
                .map_err(other)?;
        }
        Ok(psbt)
    }

    fn find(&self, op: OutPoint) -> Option<(Kind, LocalOutput)> {
        Kind::ALL.into_iter().find_map(|k| {
            self.slot(k)
                .w
                .list_output()
                .find(|o| o.outpoint == op)
                .map(|o| (k, o))
        })
    }
}

/// The node's on-chain wallet.
pub struct Wallet {
    network: Network,
    /// The BIP32 master key of `hsm_secret`; used only to sign, never logged or shown.
    master: Xpriv,
    secp: Secp256k1<All>,
    store: Store,
    state: Mutex<State>,
    persist_lock: tokio::sync::Mutex<()>,
    fees: RwLock<Arc<dyn FeeEstimates>>,
    broadcaster: RwLock<Option<Arc<dyn TxBroadcaster>>>,
    movements: std::sync::OnceLock<MovementSink>,
    /// `--min-emergency-msat`, in sat: what spends must leave while anchor channels need it.
    min_emergency_sat: std::sync::atomic::AtomicU64,
    /// Whether the node has anchor channels now (set by the Lightning engine).
    anchor_channels: std::sync::OnceLock<AnchorCheck>,
    me: Weak<Wallet>,
}

/// Says whether the node has (or is closing) an anchor channel, whose fee bumps need the
/// emergency reserve.
pub type AnchorCheck = Box<dyn Fn() -> bool + Send + Sync>;

/// A confirmed movement of wallet funds: an output received (deposit) or spent (withdrawal).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainMovement {
    /// `true` for an output received, `false` for one spent.
    pub deposit: bool,
    /// The wallet output concerned.
    pub utxo: OutPoint,
    /// Its value.
    pub amount_sat: u64,
    /// The spending transaction (withdrawals).
    pub spending_txid: Option<Txid>,
    /// Block height.
    pub height: u32,
    /// The output's script.
    pub script: ScriptBuf,
}

/// Receives confirmed movements (the node turns them into `coin_movement`).
pub type MovementSink = Box<dyn Fn(ChainMovement) + Send + Sync>;

impl std::fmt::Debug for Wallet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wallet")
            .field("network", &self.network)
            .finish_non_exhaustive()
    }
}

fn account_xpub(
    secp: &Secp256k1<All>,
    master: &Xpriv,
    purpose: u32,
    network: Network,
) -> Result<Xpub, WalletError> {
    let coin = if network == Network::Bitcoin { 0 } else { 1 };
    let path: DerivationPath = [purpose, coin, 0]
        .into_iter()
        .map(ChildNumber::from_hardened_idx)
        .collect::<Result<Vec<_>, _>>()
        .map_err(other)?
        .into();
    let xprv = master.derive_priv(secp, &path).map_err(other)?;
    Ok(Xpub::from_priv(secp, &xprv))
}

fn fee_for(perkw: u32, w: Weight) -> u64 {
    (u64::from(perkw) * w.to_wu()).div_ceil(1000)
}

impl Wallet {
    /// Loads the wallet from the store, creating it on first start.
    pub async fn open(
        store: Store,
        seed: &[u8; 32],
        network: Network,
        fees: Arc<dyn FeeEstimates>,
        broadcaster: Option<Arc<dyn TxBroadcaster>>,
    ) -> Result<Arc<Wallet>, WalletError> {
        let secp = Secp256k1::new();
        let master = Xpriv::new_master(network, seed).map_err(other)?;
        let fp = master.fingerprint(&secp);
        let tr_x = account_xpub(&secp, &master, 86, network)?;
        let wpkh_x = account_xpub(&secp, &master, 84, network)?;
        let loaded = store.with(|c| persist::load(c)).await?;
        let mut compact = vec![];
        let mut make = |k: Kind| -> Result<Slot, WalletError> {
            let existing = loaded.changesets.get(k.name());
            let changeset = existing.map(|(cs, _)| cs);
            let w = match k {
                Kind::P2tr => bdk_wallet_of(|kk| Bip86Public(tr_x, fp, kk), changeset, network, k)?,
                Kind::P2wpkh => {
                    bdk_wallet_of(|kk| Bip84Public(wpkh_x, fp, kk), changeset, network, k)?
                }
            };
            let aggregate = match existing {
                Some((cs, rows)) => {
                    if *rows > 1 {
                        compact.push((k.name(), cs.clone()));
                    }
                    cs.clone()
                }
                None => ChangeSet::default(),
            };
            Ok(Slot {
                w,
                aggregate,
                pending: ChangeSet::default(),
            })
        };
        let tr = make(Kind::P2tr)?;
        let wpkh = make(Kind::P2wpkh)?;
        if !compact.is_empty() {
            store
                .with(move |c| {
                    for (name, cs) in &compact {
                        persist::compact(c, name, cs)?;
                    }
                    Ok(())
                })
                .await?;
        }
        let mut reserved = HashMap::new();
        let mut bumps = HashSet::new();
        for (op, until, bump) in &loaded.reservations {
            reserved.insert(*op, *until);
            if *bump {
                bumps.insert(*op);
            }
        }
        let wallet = Arc::new_cyclic(|me| Wallet {
            network,
            master,
            secp,
            store,
            state: Mutex::new(State {
                tr,
                wpkh,
                reserved,
                prepared: HashMap::new(),
                bumps,
                txindex: loaded.txindex,
                txindex_pending: vec![],
                reservations_dirty: false,
            }),
            persist_lock: tokio::sync::Mutex::new(()),
            fees: RwLock::new(fees),
            broadcaster: RwLock::new(broadcaster),
            movements: std::sync::OnceLock::new(),
            min_emergency_sat: std::sync::atomic::AtomicU64::new(DEFAULT_MIN_EMERGENCY_SAT),
            anchor_channels: std::sync::OnceLock::new(),
            me: me.clone(),
        });
        wallet.persist().await?;
        Ok(wallet)
    }

    /// The fee estimates in use.
    pub fn fees(&self) -> Arc<dyn FeeEstimates> {
        match self.fees.read() {
            Ok(f) => f.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// The network.
    pub fn network(&self) -> Network {
        self.network
    }

    /// Sets `--min-emergency-msat` (in sat).
    pub fn set_min_emergency_sat(&self, sat: u64) {
        self.min_emergency_sat
            .store(sat, std::sync::atomic::Ordering::Relaxed);
    }

    /// Tells the wallet how to learn whether anchor channels exist (set once).
    pub fn on_anchor_channels(&self, check: AnchorCheck) {
        let _ = self.anchor_channels.set(check);
    }

    /// The emergency reserve a spend must leave now: `--min-emergency-msat` while the node
    /// has an anchor channel or `opening_anchor` (as CLN), else nothing.
    pub fn emergency_sat(&self, opening_anchor: bool) -> u64 {
        let has = opening_anchor || self.anchor_channels.get().is_some_and(|f| f());
        if has {
            self.min_emergency_sat
                .load(std::sync::atomic::Ordering::Relaxed)
        } else {
            0
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Where the block stream should start feeding the wallet: `None` for a fresh wallet
    /// (it starts at the stream's tip), else our tip with its ancestors for reorg detection.
    pub fn locator(&self) -> Option<BlockLocator> {
        let st = self.state();
        let tip = st.tr.w.latest_checkpoint();
        if tip.height() == 0 {
            return None;
        }
        let mut loc = BlockLocator::new(tip.hash(), tip.height());
        let n = loc.previous_blocks.len() as u32;
        for cp in tip.iter().skip(1) {
            let back = tip.height() - cp.height();
            if back > n {
                break;
            }
            loc.previous_blocks[(back - 1) as usize] = Some(cp.hash());
        }
        Some(loc)
    }

    /// Writes every staged change to the database, in order.
    pub async fn persist(&self) -> Result<(), WalletError> {
        let _order = self.persist_lock.lock().await;
        let (sets, txindex, reservations) = {
            let mut st = self.state();
            st.tr.drain();
            st.wpkh.drain();
            let sets = vec![
                ("p2tr", std::mem::take(&mut st.tr.pending)),
                ("p2wpkh", std::mem::take(&mut st.wpkh.pending)),
            ];
            (
                sets,
                std::mem::take(&mut st.txindex_pending),
                st.take_reservations(),
            )
        };
        if sets.iter().all(|(_, cs)| cs.is_empty()) && txindex.is_empty() && reservations.is_none()
        {
            return Ok(());
        }
        let wrote_reservations = reservations.is_some();
        let r = self
            .store
            .with(move |c| persist::append(c, &sets, &txindex, reservations.as_deref()))
            .await;
        if let Err(e) = &r {
            // The changes were taken from memory for this write: with the disk failing they
            // cannot be kept, so stop rather than go on with a wallet the store does not
            // have (addresses handed out twice, spends forgotten).
            if e.is_storage_failure() {
                self.store.fatal("cannot save the wallet", e);
            }
            if wrote_reservations {
                // Written again with the next change.
                self.state().reservations_dirty = true;
            }
        }
        Ok(r?)
    }

    /// Persists in the background (from the synchronous [`Listen`] callbacks); without a
    /// runtime the changes wait for the next [`Wallet::persist`].
    fn persist_soon(&self) {
        if let (Some(me), Ok(rt)) = (self.me.upgrade(), tokio::runtime::Handle::try_current()) {
            rt.spawn(async move {
                let _ = me.persist().await;
            });
        }
    }

    /// `newaddr`: fresh receive addresses, persisted before they are returned.
    pub async fn new_address(
        &self,
        req: AddrRequest,
    ) -> Result<(Option<Address>, Option<Address>), WalletError> {
        let (bech32, p2tr) = {
            let mut st = self.state();
            let bech32 = matches!(req, AddrRequest::Bech32 | AddrRequest::All).then(|| {
                st.wpkh
                    .w
                    .reveal_next_address(KeychainKind::External)
                    .address
            });
            let p2tr = matches!(req, AddrRequest::P2tr | AddrRequest::All)
                .then(|| st.tr.w.reveal_next_address(KeychainKind::External).address);
            (bech32, p2tr)
        };
        self.persist().await?;
        Ok((bech32, p2tr))
    }

    /// `listaddresses`: the receive addresses handed out so far, as (derivation index,
    /// address, whether it is the taproot one), by index, P2WPKH before P2TR. The two kinds
    /// come from separate keys (unlike CLN's, where one key gives both), so each is listed
    /// on its own.
    pub fn issued_addresses(&self) -> Vec<(u32, Address, bool)> {
        let st = self.state();
        let mut out = vec![];
        for (w, taproot) in [(&st.wpkh.w, false), (&st.tr.w, true)] {
            if let Some(last) = w.derivation_index(KeychainKind::External) {
                out.extend((0..=last).map(|i| {
                    (
                        i,
                        w.peek_address(KeychainKind::External, i).address,
                        taproot,
                    )
                }));
            }
        }
        out.sort_by_key(|(i, _, taproot)| (*i, *taproot));
        out
    }

    /// `listfunds`: our outputs (spent ones too with `spent`).
    pub fn list_funds(&self, spent: bool) -> Vec<Fund> {
        let st = self.state();
        let mut out = vec![];
        for k in Kind::ALL {
            for o in st.slot(k).w.list_output() {
                let status = st.status(k, &o);
                if status == Status::Spent && !spent {
                    continue;
                }
                let blockheight = match &o.chain_position {
                    ChainPosition::Confirmed { anchor, .. } => Some(anchor.block_id.height),
                    ChainPosition::Unconfirmed { .. } => None,
                };
                out.push(Fund {
                    outpoint: o.outpoint,
                    value: o.txout.value,
                    address: Address::from_script(&o.txout.script_pubkey, self.network)
                        .ok()
                        .map(|a| a.to_string()),
                    script: o.txout.script_pubkey,
                    status,
                    reserved_to: (status != Status::Spent)
                        .then(|| st.is_reserved(&o.outpoint))
                        .flatten(),
                    blockheight,
                });
            }
        }
        out.sort_by_key(|f| (f.blockheight.unwrap_or(u32::MAX), f.outpoint));
        out
    }

    /// Confirmed, spendable (mature, unreserved, unspent) balance.
    pub fn spendable_sat(&self, minconf: u32) -> u64 {
        let st = self.state();
        self.candidates(&st, minconf)
            .iter()
            .map(|(_, o)| o.txout.value.to_sat())
            .sum()
    }

    /// `listtransactions`: every transaction touching our coins, oldest first.
    pub fn list_transactions(&self) -> Vec<TxEntry> {
        let st = self.state();
        let mut seen = HashSet::new();
        let mut out = vec![];
        for k in Kind::ALL {
            for t in st.slot(k).w.transactions() {
                if !seen.insert(t.tx_node.txid) {
                    continue;
                }
                let blockheight = match &t.chain_position {
                    ChainPosition::Confirmed { anchor, .. } => Some(anchor.block_id.height),
                    ChainPosition::Unconfirmed { .. } => None,
                };
                out.push(TxEntry {
                    txindex: blockheight.and_then(|_| st.txindex.get(&t.tx_node.txid).copied()),
                    tx: t.tx_node.tx.clone(),
                    blockheight,
                });
            }
        }
        out.sort_by_key(|t| {
            (
                t.blockheight.unwrap_or(u32::MAX),
                t.txindex.unwrap_or(0),
                t.tx.compute_txid(),
            )
        });
        out
    }

    /// [`Wallet::candidates`], largest first (ties by outpoint, so the order is stable).
    fn candidates_largest_first(&self, st: &State, minconf: u32) -> Vec<(Kind, LocalOutput)> {
        let mut v = self.candidates(st, minconf);
        v.sort_by(|a, b| {
            b.1.txout
                .value
                .cmp(&a.1.txout.value)
                .then(a.1.outpoint.cmp(&b.1.outpoint))
        });
        v
    }

    /// Coins that may be spent now: unspent, mature, unreserved, with `minconf`.
    fn candidates(&self, st: &State, minconf: u32) -> Vec<(Kind, LocalOutput)> {
        let mut out = vec![];
        for k in Kind::ALL {
            for o in st.slot(k).w.list_unspent() {
                let status = st.status(k, &o);
                let confs = st.confirmations(&o.chain_position);
                if status == Status::Immature
                    || status == Status::Spent
                    || confs < minconf
                    || st.is_reserved(&o.outpoint).is_some()
                {
                    continue;
                }
                out.push((k, o));
            }
        }
        out
    }

    /// Picks coins, builds the unsigned transaction and reserves its inputs, all under the
    /// state lock so that concurrent callers never pick the same coin.
    /// `keep` is the emergency reserve to leave (0 for none).
    fn build_and_reserve(&self, req: &SpendRequest, keep: u64) -> Result<Prepared, WalletError> {
        let alls = req.outputs.iter().filter(|(_, a)| *a == Amt::All).count();
        if alls > 1 {
            return Err(WalletError::InvalidParams(
                "Only one output can be 'all'".into(),
            ));
        }
        if req.outputs.is_empty() {
            return Err(WalletError::InvalidParams(
                "outputs: must not be empty".into(),
            ));
        }
        for (i, (script, amt)) in req.outputs.iter().enumerate() {
            if let Amt::Sat(s) = amt {
                let min = script.minimal_non_dust().to_sat();
                if *s < min {
                    return Err(WalletError::Dust(format!(
                        "Output {i} would be dust: {s}sat is below the dust limit of {min}sat"
                    )));
                }
                if *s > Amount::MAX_MONEY.to_sat() {
                    return Err(WalletError::InvalidParams(format!(
                        "Output {i}: {s}sat is more than 21 million bitcoin"
                    )));
                }
            }
        }
        let mut st = self.state();
        let tip = st.tip();
        // The coins we may use, best first.
        let pool: Vec<(Kind, LocalOutput)> = match &req.utxos {
            Some(ops) => {
                let mut v = vec![];
                let mut dup = HashSet::new();
                for op in ops {
                    if !dup.insert(*op) {
                        return Err(WalletError::InvalidParams(format!(
                            "utxos: {op} given twice"
                        )));
                    }
                    let (k, o) = st
                        .find(*op)
                        .ok_or_else(|| WalletError::InvalidParams(format!("Unknown UTXO {op}")))?;
                    match st.status(k, &o) {
                        Status::Spent => {
                            return Err(WalletError::Other(format!("UTXO {op} already spent")));
                        }
                        Status::Immature => {
                            return Err(WalletError::Other(format!("UTXO {op} is immature")));
                        }
                        _ => {}
                    }
                    if st.is_reserved(op).is_some() {
                        return Err(WalletError::Other(format!("UTXO {op} already reserved")));
                    }
                    let confs = st.confirmations(&o.chain_position);
                    if confs < req.minconf {
                        return Err(WalletError::Other(format!(
                            "UTXO {op} has {confs} confirmations, {} needed",
                            req.minconf
                        )));
                    }
                    v.push((k, o));
                }
                v
            }
            None => self.candidates_largest_first(&st, req.minconf),
        };
        let use_all = req.utxos.is_some() || alls == 1;
        let lock_time = LockTime::from_height(tip.height).unwrap_or(LockTime::ZERO);
        let change_script = st
            .tr
            .w
            .peek_address(KeychainKind::Internal, 0)
            .script_pubkey();
        // The emergency reserve (anchor channels): confirmed coins this spend leaves
        // untouched, plus its change, must add up to `keep`; the change grows to make up
        // the difference, as CLN's `change_for_emergency`.
        let reserve = select::Reserve {
            keep,
            eligible: if keep > 0 {
                self.candidates(&st, 1)
                    .into_iter()
                    .map(|(_, o)| (o.outpoint, o.txout.value.to_sat()))
                    .collect()
            } else {
                HashMap::new()
            },
        };
        let coins: Vec<select::Coin> = pool
            .iter()
            .map(|(k, o)| select::Coin {
                outpoint: o.outpoint,
                value: o.txout.value.to_sat(),
                kind: *k,
            })
            .collect();
        let chosen = select::coin_select(
            &coins,
            &req.outputs,
            req.feerate_perkw,
            &reserve,
            use_all,
            &change_script,
        )?;
        let selected: Vec<(Kind, LocalOutput)> = chosen
            .coins
            .iter()
            .filter_map(|i| pool.get(*i).cloned())
            .collect();
        let (mut outputs, change) = (chosen.outputs, chosen.change);

        // Change goes to a fresh taproot change address.
        let mut change_index = None;
        if let Some(v) = change {
            let addr = st.tr.w.reveal_next_address(KeychainKind::Internal);
            change_index = Some(outputs.len());
            outputs.push(TxOut {
                script_pubkey: addr.script_pubkey(),
                value: Amount::from_sat(v),
            });
        }
        let mut psbt = st.psbt_spending(&selected, outputs, lock_time)?;
        if let Some(ci) = change_index {
            use bdk_wallet::miniscript::psbt::PsbtExt;
            let spk = psbt.unsigned_tx.output[ci].script_pubkey.clone();
            if let Some((keychain, idx)) = st.tr.w.derivation_of_spk(spk) {
                let desc = st.tr.w.public_descriptor(keychain).at_derivation_index(idx);
                if let Ok(d) = desc {
                    let _ = psbt.update_output_with_descriptor(ci, &d);
                }
            }
        }
        let inputs: Vec<OutPoint> = selected.iter().map(|(_, o)| o.outpoint).collect();
        st.reserve(&inputs, tip.height + RESERVE_BLOCKS, false);
        drop(st);
        Ok(Prepared { psbt, inputs })
    }

    /// Signs every input with the master key and finalizes the PSBT.
    fn sign(&self, psbt: &mut Psbt) -> Result<Transaction, WalletError> {
        let all: Vec<usize> = (0..psbt.inputs.len()).collect();
        self.sign_inputs(psbt, &all)
    }

    /// Signs the inputs `which` with the master key, finalizes them and extracts the
    /// transaction (other inputs are left as they are; `psbt` keeps the signatures). Fails unless every one of `which`
    /// got a signature.
    pub(crate) fn sign_inputs(
        &self,
        psbt: &mut Psbt,
        which: &[usize],
    ) -> Result<Transaction, WalletError> {
        use bdk_wallet::miniscript::psbt::PsbtExt;
        let signed = match psbt.sign(&self.master, &self.secp) {
            Ok(keys) => keys,
            Err((keys, errors)) => {
                if let Some(e) = which.iter().find_map(|i| errors.get(i)) {
                    return Err(other(format!("signing failed: {e}")));
                }
                keys
            }
        };
        for i in which {
            if signed.get(i).is_none_or(|k| match k {
                bitcoin::psbt::SigningKeys::Ecdsa(v) => v.is_empty(),
                bitcoin::psbt::SigningKeys::Schnorr(v) => v.is_empty(),
            }) {
                return Err(other(format!("no key for input {i}")));
            }
            psbt.finalize_inp_mut(&self.secp, *i)
                .map_err(|e| other(format!("cannot finalize input {i}: {e:?}")))?;
        }
        Ok(psbt.clone().extract_tx_unchecked_fee_rate())
    }

    fn broadcaster(&self) -> Option<Arc<dyn TxBroadcaster>> {
        match self.broadcaster.read() {
            Ok(b) => b.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// Records a transaction we (or the node) broadcast: its inputs become spent and its
    /// outputs to us unconfirmed coins. Persisted before returning.
    pub async fn mark_broadcast(&self, tx: &Transaction) -> Result<(), WalletError> {
        {
            let mut st = self.state();
            let now = fulgur_base::unix_now();
            st.tr.w.apply_unconfirmed_txs([(tx.clone(), now)]);
            st.wpkh.w.apply_unconfirmed_txs([(tx.clone(), now)]);
            let ins: Vec<OutPoint> = tx.input.iter().map(|i| i.previous_output).collect();
            st.release(&ins);
        }
        self.persist().await
    }

    /// Whether `script` pays to one of the wallet's own addresses (the sweeper leaves such
    /// outputs to the wallet, which already has them).
    pub fn owns_script(&self, script: &bitcoin::Script) -> bool {
        let st = self.state();
        Kind::ALL
            .iter()
            .any(|k| st.slot(*k).w.is_mine(script.to_owned()))
    }

    /// Releases the reservation of coins picked for a transaction that will not be sent.
    pub fn release(&self, inputs: &[OutPoint]) {
        self.state().release(inputs);
        self.persist_soon();
    }

    async fn send_signed(&self, inputs: &[OutPoint], tx: Transaction) -> Result<Txid, WalletError> {
        let Some(b) = self.broadcaster() else {
            self.release(inputs);
            return Err(WalletError::Other(
                "Cannot broadcast: the chain backend is not running".into(),
            ));
        };
        // The reservation of the inputs (and the change address revealed) is saved before
        // the transaction leaves: after a kill -9 between the broadcast and
        // `mark_broadcast`, a restart must not offer these coins to a second, conflicting
        // spend (they stay reserved until the spend confirms or the reservation ends).
        if let Err(e) = self.persist().await {
            self.release(inputs);
            return Err(e);
        }
        match b.send(tx.clone()).await {
            Ok(txid) => {
                self.mark_broadcast(&tx).await?;
                Ok(txid)
            }
            Err(e) => {
                self.release(inputs);
                Err(WalletError::Broadcast(e))
            }
        }
    }

    /// `withdraw`: build, sign, broadcast. Nothing stays reserved if it fails.
    pub async fn withdraw(&self, req: &SpendRequest) -> Result<(Psbt, Transaction), WalletError> {
        let p = self.build_and_reserve(req, self.emergency_sat(false))?;
        self.sign_and_send(p).await
    }

    /// `txprepare`: build and reserve (72 blocks) without signing.
    pub async fn prepare(&self, req: &SpendRequest) -> Result<Prepared, WalletError> {
        let p = self.build_and_reserve(req, self.emergency_sat(false))?;
        let txid = p.psbt.unsigned_tx.compute_txid();
        self.state().prepared.insert(txid, p.clone());
        // The revealed change address must survive a restart.
        self.persist().await?;
        Ok(p)
    }

    /// `txsend`: sign and broadcast a prepared transaction (discarded if that fails).
    pub async fn send_prepared(&self, txid: Txid) -> Result<(Psbt, Transaction), WalletError> {
        let p = self.state().take_prepared(txid)?;
        self.sign_and_send(p).await
    }

    /// Signs and broadcasts `p`; its inputs are released if either fails.
    async fn sign_and_send(&self, mut p: Prepared) -> Result<(Psbt, Transaction), WalletError> {
        let tx = match self.sign(&mut p.psbt) {
            Ok(tx) => tx,
            Err(e) => {
                self.release(&p.inputs);
                return Err(e);
            }
        };
        self.send_signed(&p.inputs, tx.clone()).await?;
        Ok((p.psbt, tx))
    }

    /// `txdiscard`: forget a prepared transaction and release its coins.
    pub fn discard(&self, txid: Txid) -> Result<Transaction, WalletError> {
        let mut st = self.state();
        let p = st.take_prepared(txid)?;
        st.release(&p.inputs);
        drop(st);
        self.persist_soon();
        Ok(p.psbt.unsigned_tx)
    }

    /// For channel funding: a signed transaction paying `outputs` at `feerate_perkw`, its
    /// inputs reserved for 72 blocks. The caller broadcasts it (or hands it to LDK) and then
    /// calls [`Wallet::mark_broadcast`], or [`Wallet::release`] with its inputs. An anchor
    /// channel (`anchor`) keeps the emergency reserve, as any spend while one exists.
    pub async fn fund(
        &self,
        outputs: Vec<TxOut>,
        feerate_perkw: u32,
        anchor: bool,
    ) -> Result<Transaction, WalletError> {
        self.fund_from(outputs, feerate_perkw, anchor, 1, None)
            .await
    }

    /// [`Wallet::fund`] from coins with `minconf` confirmations, or exactly `utxos` (all
    /// of them, as `fundchannel utxos=` and `multifundchannel` take them).
    pub async fn fund_from(
        &self,
        outputs: Vec<TxOut>,
        feerate_perkw: u32,
        anchor: bool,
        minconf: u32,
        utxos: Option<Vec<OutPoint>>,
    ) -> Result<Transaction, WalletError> {
        let req = SpendRequest {
            outputs: outputs
                .into_iter()
                .map(|o| (o.script_pubkey, Amt::Sat(o.value.to_sat())))
                .collect(),
            feerate_perkw,
            minconf,
            utxos,
        };
        let mut p = self.build_and_reserve(&req, self.emergency_sat(anchor))?;
        let signed = self.sign(&mut p.psbt);
        if signed.is_err() {
            self.release(&p.inputs);
        }
        self.persist().await?;
        signed
    }

    /// Where confirmed deposits and withdrawals are reported (set once).
    pub fn on_movement(&self, sink: MovementSink) {
        let _ = self.movements.set(sink);
    }

    /// Wallet outputs spent and received by `block`'s transactions (before the block is
    /// applied, so spent outputs are still known).
    fn movements_in(&self, st: &State, block: &Block, height: u32) -> Vec<ChainMovement> {
        let mut out = vec![];
        for tx in &block.txdata {
            let txid = tx.compute_txid();
            for i in &tx.input {
                for k in Kind::ALL {
                    let w = &st.slot(k).w;
                    if let Some(prev) = w.tx_graph().get_txout(i.previous_output)
                        && w.is_mine(prev.script_pubkey.clone())
                    {
                        out.push(ChainMovement {
                            deposit: false,
                            utxo: i.previous_output,
                            amount_sat: prev.value.to_sat(),
                            spending_txid: Some(txid),
                            height,
                            script: prev.script_pubkey.clone(),
                        });
                    }
                }
            }
            for (vout, o) in tx.output.iter().enumerate() {
                if Kind::ALL
                    .iter()
                    .any(|k| st.slot(*k).w.is_mine(o.script_pubkey.clone()))
                {
                    out.push(ChainMovement {
                        deposit: true,
                        utxo: OutPoint::new(txid, vout as u32),
                        amount_sat: o.value.to_sat(),
                        spending_txid: None,
                        height,
                        script: o.script_pubkey.clone(),
                    });
                }
            }
        }
        out
    }

    fn connect_block(&self, block: &Block, height: u32) {
        let moved = {
            let st = self.state();
            if self.movements.get().is_some() {
                self.movements_in(&st, block, height)
            } else {
                vec![]
            }
        };
        if let Some(sink) = self.movements.get() {
            for m in moved {
                sink(m);
            }
        }
        {
            let mut st = self.state();
            for k in Kind::ALL {
                let _ = st.slot_mut(k).connect(block, height);
            }
            let mut found = vec![];
            for (i, tx) in block.txdata.iter().enumerate() {
                let txid = tx.compute_txid();
                if Kind::ALL
                    .iter()
                    .any(|k| st.slot(*k).w.tx_graph().get_tx(txid).is_some())
                {
                    found.push((txid, i as u32));
                }
            }
            for (txid, i) in found {
                st.txindex.insert(txid, i);
                st.txindex_pending.push((txid, i));
            }
        }
        self.persist_soon();
    }
}

impl Listen for Wallet {
    fn filtered_block_connected(&self, header: &Header, txdata: &TransactionData, height: u32) {
        let block = Block {
            header: *header,
            txdata: txdata.iter().map(|(_, tx)| (*tx).clone()).collect(),
        };
        self.connect_block(&block, height);
    }

    fn block_connected(&self, block: &Block, height: u32) {
        self.connect_block(block, height);
    }

    fn blocks_disconnected(&self, fork_point_block: BlockLocator) {
        {
            let mut st = self.state();
            let keep = BlockId {
                height: fork_point_block.height,
                hash: fork_point_block.block_hash,
            };
            for k in Kind::ALL {
                let _ = st.slot_mut(k).rewind(keep);
            }
        }
        self.persist_soon();
    }
}
