//! Coin selection as a pure decision: which coins a spend takes, what its outputs carry and
//! what change it makes, from the coins on offer, the outputs asked, the feerate and the
//! emergency reserve. No wallet state, no IO: [`crate::Wallet`] gathers the coins, calls
//! [`coin_select`], then reserves and signs what it chose.

use std::collections::HashMap;

use bitcoin::absolute::LockTime;
use bitcoin::transaction::Version;
use bitcoin::{Amount, OutPoint, Script, ScriptBuf, Sequence, Transaction, TxIn, TxOut};

use crate::{Amt, Kind, WalletError, fee_for};

/// A coin the spend may use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Coin {
    /// Where it is.
    pub outpoint: OutPoint,
    /// Its value.
    pub value: u64,
    /// Its kind (the size of the witness spending it).
    pub kind: Kind,
}

/// The emergency reserve of anchor channels (CLN's `min-emergency-msat`): the confirmed
/// coins a spend leaves untouched, plus its change, must add up to `keep`.
#[derive(Debug, Clone, Default)]
pub struct Reserve {
    /// What must remain, in sat (0: no reserve).
    pub keep: u64,
    /// The confirmed coins that count towards it, with their values.
    pub eligible: HashMap<OutPoint, u64>,
}

/// What a spend takes and makes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selection {
    /// The coins spent (indices into the pool, in the pool's order).
    pub coins: Vec<usize>,
    /// The outputs asked for, an `all` one filled in.
    pub outputs: Vec<TxOut>,
    /// The change, if the spend makes some.
    pub change: Option<u64>,
}

/// Chooses coins from `pool` (best first) for `outputs` at `feerate_perkw`, as CLN does.
/// With `use_all` every coin of the pool is spent (given `utxos`, or an `all` output);
/// otherwise coins are taken in order until the outputs and the fee are paid and the change
/// keeps the reserve. Change worth less than `change_script`'s dust limit is left to the
/// fee, unless the reserve needs it.
pub fn coin_select(
    pool: &[Coin],
    outputs: &[(ScriptBuf, Amt)],
    feerate_perkw: u32,
    reserve: &Reserve,
    use_all: bool,
    change_script: &Script,
) -> Result<Selection, WalletError> {
    let alls = outputs.iter().filter(|(_, a)| *a == Amt::All).count();
    let fixed: u64 = outputs
        .iter()
        .map(|(_, a)| match a {
            Amt::Sat(s) => *s,
            Amt::All => 0,
        })
        .sum();
    let base_outputs: Vec<TxOut> = outputs
        .iter()
        .map(|(s, a)| TxOut {
            script_pubkey: s.clone(),
            value: Amount::from_sat(match a {
                Amt::Sat(v) => *v,
                Amt::All => 0,
            }),
        })
        .collect();
    let mut with_change = base_outputs.clone();
    with_change.push(TxOut {
        script_pubkey: change_script.to_owned(),
        value: Amount::ZERO,
    });
    let change_dust = change_script.minimal_non_dust().to_sat();
    // The fee of spending `coins` into `outs` (witnesses at their largest).
    let fee = |coins: &[&Coin], outs: &[TxOut]| {
        fee_for(feerate_perkw, dummy_tx(coins, outs.to_vec()).weight())
    };
    let keep = reserve.keep;
    let eligible_total: u64 = reserve.eligible.values().sum();
    let need_change = |sel: &[&Coin]| -> u64 {
        let used: u64 = sel
            .iter()
            .filter_map(|c| reserve.eligible.get(&c.outpoint))
            .sum();
        match keep.saturating_sub(eligible_total - used) {
            0 => 0,
            n => n.max(change_dust),
        }
    };
    let short_of_reserve = || {
        WalletError::Emergency(format!(
            "We would not have enough left for min-emergency-msat {keep}sat"
        ))
    };
    let all_coins = || (0..pool.len()).collect::<Vec<_>>();

    if use_all {
        let coins: Vec<&Coin> = pool.iter().collect();
        let total: u64 = pool.iter().map(|c| c.value).sum();
        if pool.is_empty() {
            return Err(WalletError::CannotAfford(
                "Could not afford all: no available UTXOs".into(),
            ));
        }
        let need = need_change(&coins);
        if alls == 1 {
            let fee_nc = fee(&coins, &base_outputs);
            let rest = total.checked_sub(fixed + fee_nc).ok_or_else(|| {
                WalletError::CannotAfford(format!(
                    "Could not afford {fixed}sat plus a fee of {fee_nc}sat using all {} available UTXOs: {}sat short",
                    pool.len(),
                    (fixed + fee_nc) - total
                ))
            })?;
            let mut outs = base_outputs.clone();
            let i = outputs
                .iter()
                .position(|(_, a)| *a == Amt::All)
                .ok_or_else(|| WalletError::Other("no 'all' output".into()))?;
            let min = outs[i].script_pubkey.minimal_non_dust().to_sat();
            // 'all' leaves the reserve behind as change.
            let (rest, change) = if need > 0 {
                let fee_c = fee(&coins, &with_change);
                let rest = total
                    .checked_sub(fixed + fee_c + need)
                    .filter(|r| *r >= min)
                    .ok_or_else(short_of_reserve)?;
                (rest, Some(need))
            } else {
                (rest, None)
            };
            if rest < min {
                return Err(WalletError::Dust(format!(
                    "Output {i} would be dust: {rest}sat left after fees is below the dust limit of {min}sat"
                )));
            }
            outs[i].value = Amount::from_sat(rest);
            return Ok(Selection {
                coins: all_coins(),
                outputs: outs,
                change,
            });
        }
        // Exactly the given coins; change if worth it.
        let fee_nc = fee(&coins, &base_outputs);
        if total < fixed + fee_nc {
            return Err(WalletError::CannotAfford(format!(
                "Could not afford {fixed}sat plus a fee of {fee_nc}sat using the {} given UTXOs: {}sat short",
                pool.len(),
                fixed + fee_nc - total
            )));
        }
        let fee_c = fee(&coins, &with_change);
        let change = total.saturating_sub(fixed + fee_c);
        if need > 0 && (total < fixed + fee_c || change < need) {
            return Err(short_of_reserve());
        }
        let change = (total >= fixed + fee_c && change >= change_dust).then_some(change);
        return Ok(Selection {
            coins: all_coins(),
            outputs: base_outputs,
            change,
        });
    }

    let mut sel: Vec<&Coin> = vec![];
    let mut total = 0u64;
    // Affordable when the reserve is ignored (tells 313 from 301).
    let mut affordable = false;
    for c in pool {
        total += c.value;
        sel.push(c);
        if total < fixed + fee(&sel, &base_outputs) {
            continue;
        }
        affordable = true;
        let fee_c = fee(&sel, &with_change);
        let change = total.saturating_sub(fixed + fee_c);
        let need = need_change(&sel);
        let change = if need > 0 {
            // Take more coins until the change keeps the reserve.
            if total < fixed + fee_c || change < need {
                continue;
            }
            Some(change)
        } else {
            (total >= fixed + fee_c && change >= change_dust).then_some(change)
        };
        return Ok(Selection {
            coins: (0..sel.len()).collect(),
            outputs: base_outputs,
            change,
        });
    }
    if affordable {
        return Err(short_of_reserve());
    }
    let fee_all = fee(&sel, &base_outputs);
    Err(WalletError::CannotAfford(format!(
        "Could not afford {fixed}sat using all {} available UTXOs: {}sat short",
        sel.len(),
        (fixed + fee_all).saturating_sub(total)
    )))
}

/// A transaction spending `coins` into `outputs`, with the largest witnesses their kinds
/// take: what its weight, and so its fee, will be once signed.
fn dummy_tx(coins: &[&Coin], outputs: Vec<TxOut>) -> Transaction {
    Transaction {
        version: Version::TWO,
        lock_time: LockTime::ZERO,
        input: coins
            .iter()
            .map(|c| TxIn {
                previous_output: c.outpoint,
                script_sig: ScriptBuf::new(),
                sequence: Sequence::ENABLE_RBF_NO_LOCKTIME,
                witness: c.kind.dummy_witness(),
            })
            .collect(),
        output: outputs,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bitcoin::hashes::Hash;

    fn coin(n: u8, value: u64) -> Coin {
        Coin {
            outpoint: OutPoint::new(bitcoin::Txid::from_byte_array([n; 32]), 0),
            value,
            kind: Kind::P2tr,
        }
    }

    fn p2tr() -> ScriptBuf {
        ScriptBuf::new_p2tr_tweaked(bitcoin::key::TweakedPublicKey::dangerous_assume_tweaked(
            bitcoin::XOnlyPublicKey::from_slice(&[2; 32]).unwrap_or_else(|e| panic!("{e}")),
        ))
    }

    fn select(
        pool: &[Coin],
        amt: Amt,
        reserve: &Reserve,
        use_all: bool,
    ) -> Result<Selection, WalletError> {
        coin_select(pool, &[(p2tr(), amt)], 1000, reserve, use_all, &p2tr())
    }

    #[test]
    fn coins_are_taken_in_order_until_the_outputs_and_fee_are_paid() {
        let pool = [coin(1, 60_000), coin(2, 50_000), coin(3, 40_000)];
        let s = select(&pool, Amt::Sat(100_000), &Reserve::default(), false)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s.coins, vec![0, 1]);
        let change = s.change.unwrap_or_else(|| panic!("no change"));
        let fee = 110_000 - 100_000 - change;
        // Two taproot inputs, two outputs at 1 sat/wu: a few hundred sat.
        assert!((300..1000).contains(&fee), "fee {fee}");
        // Asking for all but ~100 sat of that change: the rest is below dust and goes to
        // the fee, with the same coins.
        let s2 = select(
            &pool,
            Amt::Sat(100_000 + change - 100),
            &Reserve::default(),
            false,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((s2.coins, s2.change), (vec![0, 1], None));
    }

    #[test]
    fn what_cannot_be_paid_says_by_how_much() {
        let pool = [coin(1, 10_000)];
        match select(&pool, Amt::Sat(20_000), &Reserve::default(), false) {
            Err(WalletError::CannotAfford(m)) => {
                assert!(
                    m.starts_with("Could not afford 20000sat using all 1 available UTXOs"),
                    "{m}"
                )
            }
            other => panic!("{other:?}"),
        }
        match select(&[], Amt::All, &Reserve::default(), true) {
            Err(WalletError::CannotAfford(m)) => assert!(m.contains("no available UTXOs"), "{m}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn all_spends_every_coin_and_leaves_the_reserve_as_change() {
        let pool = [coin(1, 60_000), coin(2, 50_000)];
        let s =
            select(&pool, Amt::All, &Reserve::default(), true).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((s.coins, s.change), (vec![0, 1], None));
        let sent = s.outputs[0].value.to_sat();
        assert!(sent > 109_000 && sent < 110_000, "{sent}");
        let reserve = Reserve {
            keep: 25_000,
            eligible: pool.iter().map(|c| (c.outpoint, c.value)).collect(),
        };
        let s = select(&pool, Amt::All, &reserve, true).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s.change, Some(25_000));
        assert!(s.outputs[0].value.to_sat() < sent - 25_000);
    }

    #[test]
    fn the_reserve_takes_more_coins_or_refuses() {
        let pool = [coin(1, 60_000), coin(2, 50_000), coin(3, 40_000)];
        let reserve = Reserve {
            keep: 25_000,
            eligible: pool.iter().map(|c| (c.outpoint, c.value)).collect(),
        };
        // 55,000 from the first coin would leave 90,000 untouched: no change needed.
        let s = select(&pool, Amt::Sat(55_000), &reserve, false).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s.coins, vec![0]);
        // 140,000 uses all three and leaves nothing: the reserve refuses it (313, not 301).
        assert!(matches!(
            select(&pool, Amt::Sat(140_000), &reserve, false),
            Err(WalletError::Emergency(_))
        ));
    }
}
