//! The PSBT workflow of CLN's wallet: reserving the wallet's coins named by a PSBT
//! (`reserveinputs`, `unreserveinputs`), funding a PSBT with inputs (`fundpsbt`, `utxopsbt`),
//! adding an output to us (`addpsbtoutput`), signing our inputs (`signpsbt`) and
//! broadcasting a finished one (`sendpsbt`).
//!
//! Reservations count in blocks as CLN's do: reserving a coin already reserved extends its
//! reservation by the blocks asked, unreserving shortens it, and the coin is free once the
//! end is at or below the tip.

use std::collections::HashSet;

use bdk_wallet::KeychainKind;
use bitcoin::psbt::Psbt;
use bitcoin::{Amount, OutPoint, ScriptBuf, Transaction, TxOut};

use crate::{Amt, Kind, Status, Wallet, WalletError, other};

/// CLN's dust limit for the change a PSBT may get.
const DUST_SAT: u64 = 546;
/// Weight of an input before its witness: outpoint, sequence, empty script (4 × 41).
const INPUT_BASE_WEIGHT: u64 = 164;
/// Weight of a taproot output (the change `fundpsbt` and `addpsbtoutput` add).
pub const P2TR_OUTPUT_WEIGHT: u64 = 172;

/// What reserving or unreserving did to one coin (CLN's `reservations` entry).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reservation {
    /// The coin.
    pub outpoint: OutPoint,
    /// Whether it was reserved before.
    pub was_reserved: bool,
    /// Whether it is reserved now.
    pub reserved: bool,
    /// The block its reservation ends at, when reserved.
    pub reserved_to_block: Option<u32>,
}

/// `fundpsbt` and `utxopsbt`'s question.
#[derive(Debug, Clone)]
pub struct FundRequest {
    /// What the outputs the caller will add need (`All`: every coin).
    pub amount: Amt,
    /// Sat per 1000 weight units.
    pub feerate_perkw: u32,
    /// The weight of the transaction before any input is added.
    pub startweight: u64,
    /// Minimum confirmations of picked coins (`fundpsbt`).
    pub minconf: u32,
    /// Blocks to reserve the inputs for (0: not reserved).
    pub reserve: u32,
    /// The transaction's locktime (default: the tip).
    pub locktime: Option<u32>,
    /// The least witness weight counted for each input.
    pub min_witness_weight: u64,
    /// Whether the excess becomes a change output.
    pub excess_as_change: bool,
    /// Exactly these coins (`utxopsbt`).
    pub utxos: Option<Vec<OutPoint>>,
    /// Whether coins of `utxos` may already be reserved.
    pub reserved_ok: bool,
    /// Whether a new anchor channel needs the emergency reserve kept.
    pub opening_anchor: bool,
}

/// `fundpsbt` and `utxopsbt`'s answer.
#[derive(Debug, Clone)]
pub struct Funded {
    /// Inputs, and the change output if one was made.
    pub psbt: Psbt,
    /// Sat per 1000 weight units, as asked.
    pub feerate_perkw: u32,
    /// `startweight`, the inputs and the change output.
    pub estimated_final_weight: u64,
    /// What the inputs hold beyond the amount and the fee, not turned into change.
    pub excess_sat: u64,
    /// The change output's index.
    pub change_outnum: Option<u32>,
    /// The reservations made (when `reserve` was not 0).
    pub reservations: Option<Vec<Reservation>>,
}

/// CLN's `amount_tx_fee`: the fee of `weight` at `perkw`, rounded down.
fn tx_fee(perkw: u32, weight: u64) -> u64 {
    u64::from(perkw) * weight / 1000
}

/// What a change output costs on top of a transaction of `weight`.
fn change_fee(perkw: u32, weight: u64) -> u64 {
    tx_fee(perkw, weight + P2TR_OUTPUT_WEIGHT) - tx_fee(perkw, weight)
}

/// The change `excess` can make after paying for itself (0 below dust).
fn change_amount(excess: u64, perkw: u32, weight: u64) -> u64 {
    match excess.checked_sub(change_fee(perkw, weight)) {
        Some(c) if c >= DUST_SAT => c,
        _ => 0,
    }
}

/// The weight of spending a coin of kind `k`, its witness counted at least `min_witness`.
fn spend_weight(k: Kind, min_witness: u64) -> u64 {
    let witness = match k {
        // Item count, a 64-byte signature with its length.
        Kind::P2tr => 1 + 1 + 64,
        // Item count, a 73-byte signature and a 33-byte key, with their lengths.
        Kind::P2wpkh => 1 + 1 + 73 + 1 + 33,
    };
    INPUT_BASE_WEIGHT + witness.max(min_witness)
}

impl Wallet {
    /// `reserveinputs`: reserves the coins of ours among `ops` for `blocks` more blocks.
    /// `exclusive` refuses coins already reserved; spent coins are refused.
    pub async fn reserve_inputs(
        &self,
        ops: &[OutPoint],
        exclusive: bool,
        blocks: u32,
    ) -> Result<Vec<Reservation>, WalletError> {
        let out = {
            let mut st = self.state();
            let mut ours = vec![];
            for op in ops {
                let Some((k, o)) = st.find(*op) else { continue };
                if exclusive && st.is_reserved(op).is_some() {
                    return Err(WalletError::InvalidParams(format!("{op} already reserved")));
                }
                if st.status(k, &o) == Status::Spent {
                    return Err(WalletError::InvalidParams(format!("{op} already spent")));
                }
                ours.push(*op);
            }
            ours.iter().map(|op| st.extend(*op, blocks)).collect()
        };
        self.persist().await?;
        Ok(out)
    }

    /// `unreserveinputs`: shortens the reservation of the coins of ours among `ops` by
    /// `blocks`; coins not reserved are left out of the answer.
    pub async fn unreserve_inputs(
        &self,
        ops: &[OutPoint],
        blocks: u32,
    ) -> Result<Vec<Reservation>, WalletError> {
        let out = {
            let mut st = self.state();
            ops.iter()
                .filter_map(|op| st.shorten(*op, blocks))
                .collect()
        };
        self.persist().await?;
        Ok(out)
    }

    /// `fundpsbt` (coins picked here, largest first) and `utxopsbt` (`req.utxos`): a PSBT
    /// spending enough of our coins for `req.amount` plus the fee of `req.startweight` and
    /// the inputs, with CLN's errors.
    pub async fn fund_psbt(&self, req: &FundRequest) -> Result<Funded, WalletError> {
        let keep = self.emergency_sat(req.opening_anchor);
        let funded = {
            let mut st = self.state();
            let tip = st.tip().height;
            let perkw = req.feerate_perkw;
            let mut weight = req.startweight;
            let mut input = 0u64;
            let mut chosen: Vec<(Kind, bdk_wallet::LocalOutput)> = vec![];
            let all = req.amount == Amt::All;
            let need = |input: u64, weight: u64| -> Option<u64> {
                // The excess over the amount and the fee, when there is one.
                let amount = match req.amount {
                    Amt::Sat(s) => s,
                    Amt::All => return None,
                };
                input.checked_sub(amount.checked_add(tx_fee(perkw, weight))?)
            };
            let mut excess;
            match &req.utxos {
                Some(ops) => {
                    let mut dup = HashSet::new();
                    for op in ops {
                        if !dup.insert(*op) {
                            return Err(WalletError::InvalidParams(format!(
                                "utxos: {op} given twice"
                            )));
                        }
                        let (k, o) = st.find(*op).ok_or_else(|| {
                            WalletError::InvalidParams(format!("Unknown UTXO {op}"))
                        })?;
                        if st.status(k, &o) == Status::Spent {
                            return Err(WalletError::InvalidParams(format!(
                                "Already spent UTXO {op}"
                            )));
                        }
                        if !req.reserved_ok && st.is_reserved(op).is_some() {
                            return Err(WalletError::InvalidParams(format!(
                                "UTXO {op} already reserved"
                            )));
                        }
                        input += o.txout.value.to_sat();
                        weight += spend_weight(k, req.min_witness_weight);
                        chosen.push((k, o));
                    }
                    if all {
                        excess = match input.checked_sub(tx_fee(perkw, weight)) {
                            Some(e) if e >= DUST_SAT => e,
                            _ => {
                                return Err(WalletError::CannotAfford(format!(
                                    "Could not afford anything using UTXOs totalling {input}sat with weight {weight} at feerate {perkw}"
                                )));
                            }
                        };
                    } else {
                        excess = need(input, weight).ok_or_else(|| {
                            let amount = match req.amount {
                                Amt::Sat(s) => s,
                                Amt::All => 0,
                            };
                            WalletError::CannotAfford(format!(
                                "Could not afford {amount}sat using UTXOs totalling {input}sat with weight {weight} at feerate {perkw}"
                            ))
                        })?;
                    }
                }
                None => {
                    let pool = self.candidates_largest_first(&st, req.minconf);
                    let mut found = None;
                    for (k, o) in pool {
                        if let Some(e) = need(input, weight) {
                            found = Some(e);
                            break;
                        }
                        let w = spend_weight(k, req.min_witness_weight);
                        // Uneconomic at this feerate: skipped, unless taking everything.
                        if !all && tx_fee(perkw, w) >= o.txout.value.to_sat() {
                            continue;
                        }
                        input += o.txout.value.to_sat();
                        weight += w;
                        chosen.push((k, o));
                    }
                    excess = match (found.or_else(|| need(input, weight)), all) {
                        (Some(e), false) => e,
                        (_, true) => match input.checked_sub(tx_fee(perkw, weight)) {
                            Some(e) if !chosen.is_empty() && e >= DUST_SAT => e,
                            _ => {
                                return Err(WalletError::CannotAfford(format!(
                                    "All {} inputs could not afford fees",
                                    chosen.len()
                                )));
                            }
                        },
                        (None, false) => {
                            let amount = match req.amount {
                                Amt::Sat(s) => s,
                                Amt::All => 0,
                            };
                            let short = (amount + tx_fee(perkw, weight)).saturating_sub(input);
                            return Err(WalletError::CannotAfford(format!(
                                "Could not afford {amount}sat using all {} available UTXOs: {short}sat short",
                                chosen.len()
                            )));
                        }
                    };
                }
            }
            let mut change = 0;
            if req.excess_as_change && !all {
                change = std::mem::take(&mut excess);
            }
            // The emergency reserve (anchor channels), as CLN's `change_for_emergency`.
            if keep > 0 {
                let picked: HashSet<OutPoint> = chosen.iter().map(|(_, o)| o.outpoint).collect();
                let rest: u64 = self
                    .candidates(&st, 1)
                    .iter()
                    .filter(|(_, o)| !picked.contains(&o.outpoint))
                    .map(|(_, o)| o.txout.value.to_sat())
                    .sum();
                if rest < keep && change_amount(change, perkw, weight) < keep {
                    let fee = change_fee(perkw, weight);
                    excess = excess
                        .checked_sub(fee)
                        .and_then(|e| e.checked_sub(keep))
                        .ok_or_else(|| {
                            WalletError::Emergency(format!(
                                "We would not have enough left for min-emergency-msat {keep}sat"
                            ))
                        })?;
                    change += fee + keep;
                }
            }
            let locktime = bitcoin::absolute::LockTime::from_consensus(req.locktime.unwrap_or(tip));
            let mut psbt = st.psbt_spending(&chosen, vec![], locktime)?;
            let change = change_amount(change, perkw, weight);
            let mut change_outnum = None;
            if change > 0 {
                let addr = st.tr.w.reveal_next_address(KeychainKind::Internal);
                change_outnum = Some(0);
                psbt.unsigned_tx.output.push(TxOut {
                    script_pubkey: addr.script_pubkey(),
                    value: Amount::from_sat(change),
                });
                psbt.outputs.push(Default::default());
                weight += P2TR_OUTPUT_WEIGHT;
            }
            let reservations = (req.reserve > 0).then(|| {
                chosen
                    .iter()
                    .map(|(_, o)| st.extend(o.outpoint, req.reserve))
                    .collect()
            });
            Funded {
                psbt,
                feerate_perkw: perkw,
                estimated_final_weight: weight,
                excess_sat: excess,
                change_outnum,
                reservations,
            }
        };
        // The reservations and the change address revealed must survive a restart.
        self.persist().await?;
        Ok(funded)
    }

    /// `addpsbtoutput`'s script: a fresh taproot address of ours (persisted).
    pub async fn fresh_change_script(&self) -> Result<ScriptBuf, WalletError> {
        let spk = self
            .state()
            .tr
            .w
            .reveal_next_address(KeychainKind::Internal)
            .script_pubkey();
        self.persist().await?;
        Ok(spk)
    }

    /// The coins of ours `psbt` spends (only inputs `only`, when given), with what a
    /// signer needs filled in where missing. Our coins must be reserved (CLN's rule: a PSBT
    /// is signed only for coins set aside for it).
    fn our_inputs(
        &self,
        psbt: &mut Psbt,
        only: Option<&[usize]>,
    ) -> Result<Vec<(usize, OutPoint)>, WalletError> {
        let st = self.state();
        let mut ours = vec![];
        for (i, txin) in psbt.unsigned_tx.input.iter().enumerate() {
            if only.is_some_and(|o| !o.contains(&i)) {
                continue;
            }
            let op = txin.previous_output;
            let Some((k, o)) = st.find(op) else {
                if only.is_some() {
                    return Err(WalletError::Other(format!(
                        "Aborting PSBT signing. UTXO {op} is unknown (and specified by signonly)"
                    )));
                }
                continue;
            };
            if st.is_reserved(&op).is_none() {
                return Err(WalletError::Other(format!(
                    "Aborting PSBT signing. UTXO {op} is not reserved"
                )));
            }
            let full = st.slot(k).w.get_psbt_input(o, None, false).map_err(other)?;
            let input = &mut psbt.inputs[i];
            if input.witness_utxo.is_none() {
                input.witness_utxo = full.witness_utxo;
            }
            if input.non_witness_utxo.is_none() {
                input.non_witness_utxo = full.non_witness_utxo;
            }
            if input.bip32_derivation.is_empty() {
                input.bip32_derivation = full.bip32_derivation;
            }
            if input.tap_key_origins.is_empty() {
                input.tap_key_origins = full.tap_key_origins;
            }
            if input.tap_internal_key.is_none() {
                input.tap_internal_key = full.tap_internal_key;
            }
            ours.push((i, op));
        }
        Ok(ours)
    }

    /// `signpsbt`: signs our inputs of `psbt` (only `only`, when given), leaving them
    /// unfinalized and every other input as it was.
    pub fn sign_psbt(&self, mut psbt: Psbt, only: Option<&[usize]>) -> Result<Psbt, WalletError> {
        let ours = self.our_inputs(&mut psbt, only)?;
        if ours.is_empty() {
            return Err(WalletError::Other(
                "No wallet inputs to sign. Are you sure you added inputs to this PSBT? If not, then there is no need to sign it."
                    .into(),
            ));
        }
        let mut signed = psbt.clone();
        // Errors are per input; the inputs that are not ours fail and are left alone.
        let _ = signed.sign(&self.master, &self.secp);
        for (i, _) in ours {
            if psbt.inputs[i].final_script_witness.is_some() {
                continue;
            }
            let (from, to) = (&signed.inputs[i], &mut psbt.inputs[i]);
            to.partial_sigs.extend(from.partial_sigs.clone());
            if to.tap_key_sig.is_none() {
                to.tap_key_sig = from.tap_key_sig;
            }
        }
        Ok(psbt)
    }

    /// `sendpsbt`: finalizes `psbt`, reserves our inputs `blocks` more (they must be
    /// reserved already) and broadcasts it; the reservation is undone if that fails.
    pub async fn send_psbt(&self, mut psbt: Psbt, blocks: u32) -> Result<Transaction, WalletError> {
        use bdk_wallet::miniscript::psbt::PsbtExt;
        for i in 0..psbt.inputs.len() {
            let input = &psbt.inputs[i];
            if input.final_script_witness.is_some() || input.final_script_sig.is_some() {
                continue;
            }
            if psbt.finalize_inp_mut(&self.secp, i).is_err() {
                return Err(WalletError::Other(format!("PSBT not finalizeable {psbt}")));
            }
        }
        let ours: Vec<OutPoint> = self
            .our_inputs(&mut psbt, None)?
            .into_iter()
            .map(|(_, op)| op)
            .collect();
        let tx = psbt.extract_tx_unchecked_fee_rate();
        {
            let mut st = self.state();
            for op in &ours {
                st.extend(*op, blocks);
            }
        }
        match self.send_signed(&[], tx.clone()).await {
            Ok(_) => Ok(tx),
            Err(e) => {
                let mut st = self.state();
                for op in &ours {
                    st.shorten(*op, blocks);
                }
                drop(st);
                self.persist_soon();
                Err(e)
            }
        }
    }
}

impl crate::State {
    /// Reserves `op` for `blocks` more blocks (from the tip when it was not reserved).
    fn extend(&mut self, op: OutPoint, blocks: u32) -> Reservation {
        let tip = self.tip().height;
        let before = self.is_reserved(&op);
        let until = match self.reserved.get(&op) {
            Some(u) if *u >= tip => u.saturating_add(blocks),
            _ => tip.saturating_add(blocks),
        };
        self.reserved.insert(op, until);
        self.reservations_dirty = true;
        Reservation {
            outpoint: op,
            was_reserved: before.is_some(),
            reserved: until > tip,
            reserved_to_block: (until > tip).then_some(until),
        }
    }

    /// Shortens `op`'s reservation by `blocks` (freeing it when that reaches the tip);
    /// `None` when it was not reserved.
    fn shorten(&mut self, op: OutPoint, blocks: u32) -> Option<Reservation> {
        let tip = self.tip().height;
        let until = *self.reserved.get(&op)?;
        let was = until > tip;
        if until <= tip.saturating_add(blocks) {
            self.release(&[op]);
        } else {
            self.reserved.insert(op, until - blocks);
            self.reservations_dirty = true;
        }
        let now = self.is_reserved(&op);
        Some(Reservation {
            outpoint: op,
            was_reserved: was,
            reserved: now.is_some(),
            reserved_to_block: now,
        })
    }
}

/// Why `signmessagewithkey` cannot sign.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MessageKeyError {
    /// Not a P2WPKH address (CLN signs BIP137 for those only).
    NotP2wpkh,
    /// Not an address of this wallet.
    NotOurs,
}

impl Wallet {
    /// `signmessagewithkey`: a BIP137 signature of `message` by the key of the wallet's
    /// P2WPKH output script `script`: the key, and the 65-byte signature (header
    /// `recid + 39`, P2WPKH's).
    pub fn sign_message_with_key(
        &self,
        script: &bitcoin::Script,
        message: &str,
    ) -> Result<(bitcoin::secp256k1::PublicKey, [u8; 65]), MessageKeyError> {
        use bitcoin::bip32::{ChildNumber, DerivationPath};
        use bitcoin::hashes::{Hash, sha256d};
        if !script.is_p2wpkh() {
            return Err(MessageKeyError::NotP2wpkh);
        }
        let (keychain, index) = self
            .state()
            .wpkh
            .w
            .derivation_of_spk(script.to_owned())
            .ok_or(MessageKeyError::NotOurs)?;
        let coin = if self.network == bitcoin::Network::Bitcoin {
            0
        } else {
            1
        };
        let change = match keychain {
            KeychainKind::External => 0,
            KeychainKind::Internal => 1,
        };
        let path: Vec<ChildNumber> = [
            ChildNumber::from_hardened_idx(84),
            ChildNumber::from_hardened_idx(coin),
            ChildNumber::from_hardened_idx(0),
            ChildNumber::from_normal_idx(change),
            ChildNumber::from_normal_idx(index),
        ]
        .into_iter()
        .collect::<Result<_, _>>()
        .map_err(|_| MessageKeyError::NotOurs)?;
        let key = self
            .master
            .derive_priv(&self.secp, &DerivationPath::from(path))
            .map_err(|_| MessageKeyError::NotOurs)?
            .private_key;
        // BIP137: sha256d of the prefix, the message's length (compact size) and the message.
        let mut data = b"\x18Bitcoin Signed Message:\n".to_vec();
        data.extend(bitcoin::consensus::encode::serialize(&bitcoin::VarInt(
            message.len() as u64,
        )));
        data.extend(message.as_bytes());
        let digest = sha256d::Hash::hash(&data);
        let msg = bitcoin::secp256k1::Message::from_digest(digest.to_byte_array());
        let (recid, compact) = self
            .secp
            .sign_ecdsa_recoverable(&msg, &key)
            .serialize_compact();
        let mut sig = [0u8; 65];
        sig[0] = 39 + recid.to_i32() as u8;
        sig[1..].copy_from_slice(&compact);
        Ok((key.public_key(&self.secp), sig))
    }
}
