//! Fee bumping of anchor channels from the wallet: the wallet as LDK's `WalletSourceSync`
//! (confirmed coins with their satisfaction weights, a change script, signing of our inputs
//! in a transaction LDK built), and [`BumpCoins`], LDK's coin selection over it that also
//! reserves the coins it picked so `withdraw`, `txprepare` and `fundchannel` cannot spend
//! them while the bump is in the mempool.
//!
//! Bump coins are reserved like every other spend (72 blocks, released if the spend fails),
//! but stay visible to LDK's selection, which keeps a coin with the claim it was first
//! picked for: a later, higher-fee version of the same bump (RBF) reuses its coins instead of
//! taking new ones.

use std::sync::Arc;

use bdk_wallet::KeychainKind;
use bitcoin::hashes::Hash;
use bitcoin::key::TweakedPublicKey;
use bitcoin::psbt::Psbt;
use bitcoin::{OutPoint, ScriptBuf, Transaction, TxOut, WPubkeyHash, XOnlyPublicKey};
use lightning::chain::ClaimId;
use lightning::util::logger::Logger;
use lightning::util::wallet_utils::{
    CoinSelection, CoinSelectionSourceSync, Input, Utxo, WalletSourceSync, WalletSync,
};

use super::{RESERVE_BLOCKS, Status, Wallet, WalletError, other};

impl Wallet {
    /// Confirmed, mature, unspent coins that no other spend reserved (coins already picked
    /// for a bump included), with LDK's satisfaction weight for their kind.
    pub fn bump_utxos(&self) -> Vec<Utxo> {
        let st = self.state();
        let mut out = vec![];
        for k in super::Kind::ALL {
            for o in st.slot(k).w.list_unspent() {
                let status = st.status(k, &o);
                if status != Status::Confirmed
                    || (st.is_reserved(&o.outpoint).is_some() && !st.bumps.contains(&o.outpoint))
                {
                    continue;
                }
                let spk = &o.txout.script_pubkey;
                let u = if spk.is_p2wpkh() {
                    <[u8; 20]>::try_from(&spk.as_bytes()[2..22]).ok().map(|h| {
                        Utxo::new_v0_p2wpkh(
                            o.outpoint,
                            o.txout.value,
                            &WPubkeyHash::from_byte_array(h),
                        )
                    })
                } else if spk.is_p2tr() {
                    XOnlyPublicKey::from_slice(&spk.as_bytes()[2..34])
                        .ok()
                        .map(|k| {
                            Utxo::new_v1_p2tr(
                                o.outpoint,
                                o.txout.value,
                                TweakedPublicKey::dangerous_assume_tweaked(k),
                            )
                        })
                } else {
                    None
                };
                out.extend(u);
            }
        }
        out
    }

    /// Reserves `coins` for a fee bump. Fails (reserving nothing) if another spend reserved
    /// one of them since LDK listed them, or if one is no longer an unspent coin of ours.
    pub fn reserve_for_bump(&self, coins: &[OutPoint]) -> Result<(), WalletError> {
        let mut st = self.state();
        for op in coins {
            if st.is_reserved(op).is_some() && !st.bumps.contains(op) {
                return Err(other(format!("{op} was taken by another spend")));
            }
            match st.find(*op) {
                Some((k, o)) if st.status(k, &o) == Status::Confirmed => {}
                _ => return Err(other(format!("{op} is not a confirmed coin of ours"))),
            }
        }
        let until = st.tip().height + RESERVE_BLOCKS;
        st.reserve(coins, until, true);
        drop(st);
        // Kept across a restart: the bump may sit in the mempool for many blocks.
        self.persist_soon();
        Ok(())
    }

    /// Signs the inputs of `psbt` that spend our coins (LDK's inputs, the anchor or the HTLC
    /// outputs, are left for LDK to sign) and returns the transaction. Every input needs its
    /// `witness_utxo` (LDK sets them all; taproot signatures commit to every prevout).
    pub fn sign_ours(&self, mut psbt: Psbt) -> Result<Transaction, WalletError> {
        let ours: Vec<usize> = {
            let st = self.state();
            let mut ours = vec![];
            for (i, txin) in psbt.unsigned_tx.input.iter().enumerate() {
                if let Some((k, o)) = st.find(txin.previous_output) {
                    let input = st.slot(k).w.get_psbt_input(o, None, true).map_err(other)?;
                    psbt.inputs[i] = input;
                    ours.push(i);
                }
            }
            ours
        };
        if ours.is_empty() {
            return Err(other("no input of this transaction is ours"));
        }
        self.sign_inputs(&mut psbt, &ours)
    }

    /// A fresh taproot change address, persisted in the background.
    pub fn bump_change_script(&self) -> ScriptBuf {
        let spk = self
            .state()
            .tr
            .w
            .reveal_next_address(KeychainKind::Internal)
            .script_pubkey();
        self.persist_soon();
        spk
    }

    /// The transaction that created `op`, if the wallet knows it.
    pub fn prev_tx(&self, op: OutPoint) -> Option<Transaction> {
        let st = self.state();
        super::Kind::ALL.into_iter().find_map(|k| {
            st.slot(k)
                .w
                .get_tx(op.txid)
                .map(|t| t.tx_node.tx.as_ref().clone())
        })
    }
}

/// The wallet seen by LDK (an `Arc` so that LDK's wrappers can hold it).
pub struct BumpSource(pub Arc<Wallet>);

impl WalletSourceSync for BumpSource {
    fn list_confirmed_utxos(&self) -> Result<Vec<Utxo>, ()> {
        Ok(self.0.bump_utxos())
    }

    fn get_prevtx(&self, outpoint: OutPoint) -> Result<Transaction, ()> {
        self.0.prev_tx(outpoint).ok_or(())
    }

    fn get_change_script(&self) -> Result<ScriptBuf, ()> {
        Ok(self.0.bump_change_script())
    }

    fn sign_psbt(&self, psbt: Psbt) -> Result<Transaction, ()> {
        self.0.sign_ours(psbt).map_err(|_| ())
    }
}

/// LDK's coin selection ([`WalletSync`]) over the wallet, reserving what it picks.
pub struct BumpCoins<L: Logger + Send + Sync> {
    wallet: Arc<Wallet>,
    inner: WalletSync<Arc<BumpSource>, L>,
    log: fulgur_base::log::SourceLog,
}

impl<L: Logger + Send + Sync> BumpCoins<L> {
    /// Coin selection for fee bumps from `wallet`; `ldk_log` is LDK's logger, `log` ours.
    pub fn new(wallet: Arc<Wallet>, ldk_log: L, log: fulgur_base::log::SourceLog) -> Self {
        BumpCoins {
            inner: WalletSync::new(Arc::new(BumpSource(wallet.clone())), ldk_log),
            wallet,
            log,
        }
    }
}

impl<L: Logger + Send + Sync> CoinSelectionSourceSync for BumpCoins<L> {
    fn select_confirmed_utxos(
        &self,
        claim_id: Option<ClaimId>,
        must_spend: Vec<Input>,
        must_pay_to: &[TxOut],
        target_feerate_sat_per_1000_weight: u32,
        max_tx_weight: u64,
    ) -> Result<CoinSelection, ()> {
        let sel = match self.inner.select_confirmed_utxos(
            claim_id,
            must_spend,
            must_pay_to,
            target_feerate_sat_per_1000_weight,
            max_tx_weight,
        ) {
            Ok(s) => s,
            Err(()) => {
                self.log.unusual(&format!(
                    "Fee bump: the wallet has not enough confirmed coins for {target_feerate_sat_per_1000_weight} sat/kW"
                ));
                return Err(());
            }
        };
        let coins: Vec<OutPoint> = sel.confirmed_utxos.iter().map(|u| u.outpoint()).collect();
        if let Err(e) = self.wallet.reserve_for_bump(&coins) {
            self.log.unusual(&format!(
                "Fee bump: coin selection lost a race ({e}); retried at the next block"
            ));
            return Err(());
        }
        Ok(sel)
    }

    fn sign_psbt(&self, psbt: Psbt) -> Result<Transaction, ()> {
        let inputs: Vec<OutPoint> = psbt
            .unsigned_tx
            .input
            .iter()
            .map(|i| i.previous_output)
            .collect();
        match self.wallet.sign_ours(psbt) {
            Ok(tx) => {
                let ours: Vec<String> = inputs
                    .iter()
                    .filter(|op| self.wallet.state().bumps.contains(op))
                    .map(|op| op.to_string())
                    .collect();
                self.log.info(&format!(
                    "Fee bump: wallet input(s) {} signed for {}",
                    ours.join(", "),
                    tx.compute_txid()
                ));
                Ok(tx)
            }
            Err(e) => {
                self.log
                    .broken(&format!("Fee bump: cannot sign the wallet's inputs: {e}"));
                self.wallet.release_bump(&inputs);
                Err(())
            }
        }
    }
}

impl Wallet {
    /// Releases coins reserved for a bump that will not be sent.
    pub fn release_bump(&self, coins: &[OutPoint]) {
        let mut st = self.state();
        let ours: Vec<OutPoint> = coins
            .iter()
            .filter(|op| st.bumps.contains(op))
            .copied()
            .collect();
        st.release(&ours);
        drop(st);
        self.persist_soon();
    }
}
