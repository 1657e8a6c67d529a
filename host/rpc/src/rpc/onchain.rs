//! The on-chain commands' side of the RPC: CLN's parameter forms (feerates, `sat_or_all`
//! amounts, outpoints, destination addresses; every failure is `-32602` with CLN's wording),
//! and the wallet's errors as CLN's codes.

use std::str::FromStr;

use bitcoin::address::NetworkUnchecked;
use bitcoin::{Address, Network, OutPoint};
use fulgur_protocol::RpcError;
use fulgur_protocol::amount::Msat;
use serde_json::Value;

use crate::chain::{FeeEstimates, FeeTarget};
use crate::wallet::{Amt, WalletError};

/// CLN's code for each wallet error; a refused broadcast carries bitcoind's verdict as
/// `data`.
pub fn wallet_error(e: WalletError) -> RpcError {
    let code = match &e {
        WalletError::InvalidParams(_) => -32602,
        WalletError::CannotAfford(_) => 301,
        WalletError::Emergency(_) => 313,
        WalletError::Dust(_) => 302,
        WalletError::Broadcast(_) | WalletError::Other(_) | WalletError::Store(_) => -1,
    };
    let r = RpcError::new(code, e.to_string());
    match e {
        WalletError::Broadcast(b) => {
            r.with_data(serde_json::json!({"code": b.code, "message": b.message}))
        }
        _ => r,
    }
}

/// The lowest feerate anything relays (sat per 1000 weight units).
pub const FEERATE_FLOOR: u32 = 253;
/// Above this (4000 sat/vB) a feerate is taken for a mistake and refused.
pub const FEERATE_MAX: u32 = 1_000_000;

fn bad_feerate(v: &Value) -> RpcError {
    RpcError::invalid_params(format!(
        "feerate: should be a feerate (slow, normal, urgent, minimum, NNNperkw, NNNperkb or NNNblocks): invalid token '{}'",
        match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        }
    ))
}

/// A feerate in sat per kw, from CLN's forms: a word (`slow`, `normal`, `urgent`,
/// `minimum`, and the close/opening names), `NNNperkw`, `NNNperkb`, `NNNblocks`, or a bare
/// number meaning per kb. Rates below the floor are raised to it, as CLN does.
pub fn feerate(v: Option<&Value>, fees: &dyn FeeEstimates) -> Result<u32, RpcError> {
    let Some(v) = v else {
        return Ok(fees.feerate_perkw(FeeTarget::Normal).max(FEERATE_FLOOR));
    };
    let target = |t| Ok(fees.feerate_perkw(t).max(FEERATE_FLOOR));
    let (n, perkw) = match v {
        Value::Number(n) => (n.as_u64().ok_or_else(|| bad_feerate(v))?, false),
        Value::String(s) => match s.as_str() {
            // CLN's names and their block targets (`lightningd/feerate.c`): urgent 6,
            // normal 12, slow 100; the named uses as `feerates` shows them.
            "urgent" | "unilateral_close" | "htlc_resolution" => {
                return target(FeeTarget::Urgent);
            }
            "normal" | "opening" | "delayed_to_us" | "penalty" | "unilateral_anchor_close" => {
                return target(FeeTarget::Normal);
            }
            "slow" | "mutual_close" => return target(FeeTarget::Slow),
            "minimum" => return target(FeeTarget::Minimum),
            s => {
                if let Some(b) = s.strip_suffix("blocks") {
                    let b: u16 = b.parse().map_err(|_| bad_feerate(v))?;
                    if b == 0 {
                        return Err(bad_feerate(v));
                    }
                    return target(FeeTarget::Blocks(b));
                }
                let (num, perkw) = if let Some(n) = s.strip_suffix("perkw") {
                    (n, true)
                } else if let Some(n) = s.strip_suffix("perkb") {
                    (n, false)
                } else {
                    (s, false)
                };
                (num.parse::<u64>().map_err(|_| bad_feerate(v))?, perkw)
            }
        },
        _ => return Err(bad_feerate(v)),
    };
    let perkw = if perkw { n } else { n / 4 };
    if perkw > u64::from(FEERATE_MAX) {
        return Err(RpcError::invalid_params(format!(
            "feerate: {perkw}perkw is absurdly high (maximum {FEERATE_MAX}perkw)"
        )));
    }
    Ok(u32::try_from(perkw)
        .unwrap_or(FEERATE_MAX)
        .max(FEERATE_FLOOR))
}

/// CLN's `sat_or_all`: `all`, a whole number of sat, `NNNsat`, `NNN000msat` or `N.NNNbtc`.
pub fn sat_or_all(name: &str, v: &Value) -> Result<Amt, RpcError> {
    let bad = || {
        RpcError::invalid_params(format!(
            "{name}: should be a satoshi amount or 'all': invalid token '{}'",
            match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            }
        ))
    };
    match v {
        Value::Number(n) => n.as_u64().map(Amt::Sat).ok_or_else(bad),
        Value::String(s) if s == "all" => Ok(Amt::All),
        Value::String(s) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => {
            s.parse().map(Amt::Sat).map_err(|_| bad())
        }
        Value::String(s) => {
            let m = Msat::parse(s).map_err(|_| bad())?;
            if m.0 % 1000 != 0 {
                return Err(bad());
            }
            Ok(Amt::Sat(m.0 / 1000))
        }
        _ => Err(bad()),
    }
}

/// `txid:vout`.
pub fn outpoint(v: &Value) -> Result<OutPoint, RpcError> {
    v.as_str()
        .and_then(|s| OutPoint::from_str(s).ok())
        .ok_or_else(|| {
            RpcError::invalid_params(format!(
                "utxos: should be an array of outpoints (txid:vout): invalid token '{v}'"
            ))
        })
}

/// The optional `utxos` array.
pub fn utxos(v: Option<&Value>) -> Result<Option<Vec<OutPoint>>, RpcError> {
    match v {
        None => Ok(None),
        Some(Value::Array(a)) => {
            let ops = a.iter().map(outpoint).collect::<Result<Vec<_>, _>>()?;
            if ops.is_empty() {
                return Err(RpcError::invalid_params(
                    "utxos: should be a non-empty array of outpoints",
                ));
            }
            Ok(Some(ops))
        }
        Some(other) => Err(RpcError::invalid_params(format!(
            "utxos: should be an array of outpoints (txid:vout): invalid token '{other}'"
        ))),
    }
}

/// A destination address valid on `network`.
pub fn address(name: &str, s: &str, network: Network) -> Result<Address, RpcError> {
    let unchecked: Address<NetworkUnchecked> = s.parse().map_err(|_| {
        RpcError::invalid_params(format!(
            "Could not parse {name} address, {name} should be a valid address"
        ))
    })?;
    unchecked.require_network(network).map_err(|_| {
        RpcError::invalid_params(format!(
            "Could not parse {name} address: {s} is not an address of network {network}"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wallet_errors_get_clns_codes() {
        let code = |e| wallet_error(e).code;
        assert_eq!(code(WalletError::InvalidParams("x".into())), -32602);
        assert_eq!(code(WalletError::CannotAfford("x".into())), 301);
        assert_eq!(code(WalletError::Dust("x".into())), 302);
        assert_eq!(code(WalletError::Emergency("x".into())), 313);
        assert_eq!(code(WalletError::Other("x".into())), -1);
        let refused = wallet_error(WalletError::Broadcast(crate::chain::BroadcastError {
            code: -26,
            message: "min relay fee not met".into(),
        }));
        assert_eq!(refused.code, -1);
        assert_eq!(
            refused.message,
            "Error broadcasting transaction: min relay fee not met (code -26). Unsent tx discarded"
        );
        assert_eq!(
            refused.data,
            Some(serde_json::json!({"code": -26, "message": "min relay fee not met"}))
        );
    }
    use serde_json::json;

    struct Fixed;
    impl FeeEstimates for Fixed {
        fn feerate_perkw(&self, target: FeeTarget) -> u32 {
            match target {
                FeeTarget::Urgent => 5000,
                FeeTarget::Normal => 2000,
                FeeTarget::Slow => 500,
                FeeTarget::Minimum => 253,
                FeeTarget::Blocks(n) => 10_000 / u32::from(n),
            }
        }
    }

    #[test]
    fn feerates_in_cln_forms() {
        let f = |v: Value| feerate(Some(&v), &Fixed).map_err(|e| e.code);
        assert_eq!(feerate(None, &Fixed), Ok(2000));
        assert_eq!(f(json!("urgent")), Ok(5000));
        assert_eq!(f(json!("slow")), Ok(500));
        assert_eq!(f(json!("minimum")), Ok(253));
        assert_eq!(f(json!("4blocks")), Ok(2500));
        assert_eq!(f(json!("1000perkw")), Ok(1000));
        assert_eq!(f(json!("4000perkb")), Ok(1000));
        assert_eq!(f(json!(8000)), Ok(2000));
        assert_eq!(f(json!("8000")), Ok(2000));
        assert_eq!(f(json!("1perkw")), Ok(FEERATE_FLOOR));
        assert_eq!(f(json!(-5)), Err(-32602));
        assert_eq!(f(json!("-5perkw")), Err(-32602));
        assert_eq!(f(json!(1.5)), Err(-32602));
        assert_eq!(f(json!("fast")), Err(-32602));
        assert_eq!(f(json!("0blocks")), Err(-32602));
        assert_eq!(f(json!("99999999perkw")), Err(-32602));
        assert_eq!(f(json!(u64::MAX)), Err(-32602));
    }

    #[test]
    fn amounts_in_cln_forms() {
        let a = |v: Value| sat_or_all("satoshi", &v).map_err(|e| e.code);
        assert_eq!(a(json!(1000)), Ok(Amt::Sat(1000)));
        assert_eq!(a(json!("1000")), Ok(Amt::Sat(1000)));
        assert_eq!(a(json!("1000sat")), Ok(Amt::Sat(1000)));
        assert_eq!(a(json!("1000000msat")), Ok(Amt::Sat(1000)));
        assert_eq!(a(json!("0.001btc")), Ok(Amt::Sat(100_000)));
        assert_eq!(a(json!("all")), Ok(Amt::All));
        assert_eq!(a(json!("1001msat")), Err(-32602));
        assert_eq!(a(json!(-1)), Err(-32602));
        assert_eq!(a(json!("lots")), Err(-32602));
        assert_eq!(a(json!(true)), Err(-32602));
    }

    #[test]
    fn addresses_and_outpoints() {
        let tb = "tb1qw508d6qejxtdg4y5r3zarvary0c5xw7kxpjzsx";
        assert!(address("destination", tb, Network::Testnet).is_ok());
        assert_eq!(
            address("destination", tb, Network::Bitcoin)
                .map_err(|e| e.code)
                .err(),
            Some(-32602)
        );
        assert_eq!(
            address("destination", "nonsense", Network::Regtest)
                .map_err(|e| e.code)
                .err(),
            Some(-32602)
        );
        let txid = "a".repeat(64);
        assert!(utxos(Some(&json!([format!("{txid}:1")]))).is_ok());
        assert!(utxos(Some(&json!(["bad"]))).is_err());
        assert!(utxos(Some(&json!([]))).is_err());
        assert!(utxos(Some(&json!("x"))).is_err());
    }
}
