//! What the output sweeper is given, and the repair of its stored state.
//!
//! A cooperative close pays our side to a wallet address (`close` gives LDK one as the
//! shutdown script). LDK's channel monitor then reports that output as spendable
//! (`SpendableOutputDescriptor::StaticOutput` for the monitor's shutdown script), but only
//! the wallet holds its key: `KeysManager` cannot sign it, so a sweep containing it fails
//! (`Error spending outputs: ()`, at BROKEN, every 10 s) and, since the sweeper spends all
//! its outputs in one transaction, blocks every other output it tracks too. Nothing needs
//! sweeping there: the wallet already has the coin (`listfunds` shows it). Such outputs are
//! therefore never handed to the sweeper, and those an older version stored are removed
//! from its state when the engine starts.

use lightning::chain::BlockLocator;
use lightning::sign::SpendableOutputDescriptor;
use lightning::util::ser::{BigSize, Readable, Writeable};
use lightning::util::sweep::{OutputSpendStatus, TrackedSpendableOutput};

/// Whether the wallet, not LDK's keys, owns the output `d` describes.
pub fn wallet_owned(
    d: &SpendableOutputDescriptor,
    owns: &dyn Fn(&bitcoin::Script) -> bool,
) -> bool {
    match d {
        SpendableOutputDescriptor::StaticOutput { output, .. } => owns(&output.script_pubkey),
        _ => false,
    }
}

/// The sweeper's stored state, field for field as LDK 0.3 writes it (`SweeperState`, a
/// length-prefixed TLV stream: type 0, the tracked outputs one after the other; type 2, the
/// best block).
struct StoredSweeper {
    outputs: Vec<TrackedSpendableOutput>,
    best_block: BlockLocator,
}

impl StoredSweeper {
    fn parse(bytes: &[u8]) -> Option<StoredSweeper> {
        let mut r = lightning::io::Cursor::new(bytes);
        let BigSize(total) = BigSize::read(&mut r).ok()?;
        let start = r.position();
        let end = start.checked_add(total)?;
        if end != bytes.len() as u64 {
            return None;
        }
        let (mut outputs, mut best_block) = (None, None);
        while r.position() < end {
            let BigSize(ty) = BigSize::read(&mut r).ok()?;
            let BigSize(len) = BigSize::read(&mut r).ok()?;
            let from = usize::try_from(r.position()).ok()?;
            let to = from.checked_add(usize::try_from(len).ok()?)?;
            let value = bytes.get(from..to)?;
            r.set_position(to as u64);
            match ty {
                0 => {
                    let mut v = lightning::io::Cursor::new(value);
                    let mut list = vec![];
                    while (v.position() as usize) < value.len() {
                        list.push(TrackedSpendableOutput::read(&mut v).ok()?);
                    }
                    outputs = Some(list);
                }
                2 => {
                    best_block =
                        Some(BlockLocator::read(&mut lightning::io::Cursor::new(value)).ok()?)
                }
                // An even type we do not know: not ours to rewrite.
                t if t % 2 == 0 => return None,
                _ => {}
            }
        }
        Some(StoredSweeper {
            outputs: outputs?,
            best_block: best_block?,
        })
    }

    fn encode(&self) -> Vec<u8> {
        let mut outputs = vec![];
        for o in &self.outputs {
            outputs.extend(o.encode());
        }
        let best = self.best_block.encode();
        let mut body = vec![];
        for (ty, value) in [(0u64, outputs), (2, best)] {
            body.extend(BigSize(ty).encode());
            body.extend(BigSize(value.len() as u64).encode());
            body.extend(value);
        }
        let mut out = BigSize(body.len() as u64).encode();
        out.extend(body);
        out
    }
}

/// The sweeper's stored state without the outputs the wallet owns that were never spent,
/// and those outputs; `None` when there is nothing to remove (or the state does not parse,
/// which LDK's own reader then reports).
pub fn without_wallet_outputs(
    bytes: &[u8],
    owns: &dyn Fn(&bitcoin::Script) -> bool,
) -> Option<(Vec<u8>, Vec<TrackedSpendableOutput>)> {
    let mut st = StoredSweeper::parse(bytes)?;
    let (dropped, kept): (Vec<_>, Vec<_>) = st.outputs.drain(..).partition(|o| {
        matches!(o.status, OutputSpendStatus::PendingInitialBroadcast { .. })
            && wallet_owned(&o.descriptor, owns)
    });
    if dropped.is_empty() {
        return None;
    }
    st.outputs = kept;
    Some((st.encode(), dropped))
}

#[cfg(test)]
mod tests {
    use bitcoin::hashes::Hash;
    use bitcoin::{Amount, ScriptBuf, TxOut};
    use lightning::chain::transaction::OutPoint;

    use super::*;

    fn output(script: ScriptBuf, vout: u16) -> TrackedSpendableOutput {
        TrackedSpendableOutput {
            descriptor: SpendableOutputDescriptor::StaticOutput {
                outpoint: OutPoint {
                    txid: bitcoin::Txid::all_zeros(),
                    index: vout,
                },
                output: TxOut {
                    value: Amount::from_sat(90_000),
                    script_pubkey: script,
                },
                channel_keys_id: Some([7; 32]),
            },
            channel_id: None,
            counterparty_node_id: None,
            status: OutputSpendStatus::PendingInitialBroadcast {
                delayed_until_height: None,
            },
        }
    }

    fn wallet_script() -> ScriptBuf {
        ScriptBuf::new_p2wpkh(&bitcoin::WPubkeyHash::from_byte_array([1; 20]))
    }

    fn ldk_script() -> ScriptBuf {
        ScriptBuf::new_p2wpkh(&bitcoin::WPubkeyHash::from_byte_array([2; 20]))
    }

    #[test]
    fn wallet_outputs_are_removed_from_the_stored_state_and_others_kept() {
        let st = StoredSweeper {
            outputs: vec![output(wallet_script(), 0), output(ldk_script(), 1)],
            best_block: BlockLocator::new(bitcoin::BlockHash::all_zeros(), 120),
        };
        let owns = |s: &bitcoin::Script| s == wallet_script().as_script();
        let (bytes, dropped) = without_wallet_outputs(&st.encode(), &owns)
            .unwrap_or_else(|| panic!("nothing removed"));
        assert_eq!(dropped, vec![output(wallet_script(), 0)]);
        let back = StoredSweeper::parse(&bytes).unwrap_or_else(|| panic!("unparsable"));
        assert_eq!(back.outputs, vec![output(ldk_script(), 1)]);
        assert_eq!(back.best_block.height, 120);
        // Nothing left to remove: the state is left alone.
        assert!(without_wallet_outputs(&bytes, &owns).is_none());
    }

    #[test]
    fn only_static_outputs_paying_the_wallet_count_as_the_wallets() {
        let owns = |s: &bitcoin::Script| s == wallet_script().as_script();
        assert!(wallet_owned(&output(wallet_script(), 0).descriptor, &owns));
        assert!(!wallet_owned(&output(ldk_script(), 0).descriptor, &owns));
    }
}
