//! `xkeysend`: CLN's keysend with xpay's parameters and result. The node's `keysend` sends
//! it (LDK routes and retries it, and records it as a `sendpays` row); the part counts of
//! the result are read from `listsendpays` for its payment hash afterwards. Askrene layers
//! beyond the built-in ones are refused, as by `xpay`.

use std::sync::Arc;

use fulgur_plugin_sdk::{Plugin, RpcError};
use serde_json::{Value, json};

use crate::State;
use crate::params::{self, XkeysendRequest};
use crate::pay::{self, Paid};

/// `xkeysend`.
pub async fn xkeysend(plugin: Plugin<Arc<State>>, params: Value) -> Result<Value, RpcError> {
    let req = params::xkeysend_request(&params)?;
    let rpc = plugin.rpc();
    if crate::our_id(rpc).await? == req.destination {
        return Err(RpcError::invalid_params(
            "We are the destination. Keysend cannot be used to send funds to yourself",
        ));
    }
    let result = rpc.call("keysend", keysend_params(&req)?).await?;
    let hash = result
        .get("payment_hash")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let rows = pay::sendpays(rpc, hash).await?;
    let (complete, failed) = part_counts(&rows);
    let mut result = result.clone();
    result["parts"] = json!(complete.max(1));
    Ok(pay::xpay_result(&Paid {
        result,
        failed_parts: failed,
        groupid: 0,
    }))
}

/// The node's `keysend` params for `req` (its fee limit already xpay's).
fn keysend_params(req: &XkeysendRequest) -> Result<Value, RpcError> {
    serde_json::to_value(req).map_err(|e| RpcError::lightningd(format!("keysend params: {e}")))
}

/// How many of a payment's `listsendpays` records completed and failed.
fn part_counts(rows: &[Value]) -> (u64, u64) {
    let count = |s: &str| {
        rows.iter()
            .filter(|r| r.get("status").and_then(Value::as_str) == Some(s))
            .count() as u64
    };
    (count("complete"), count("failed"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_for_the_nodes_keysend() {
        let dest = format!("02{}", "ab".repeat(32));
        let req = params::xkeysend_request(&json!([dest, "10sat", "l", null, null, 5, 100,
            {"133773311": "00"}]))
        .expect("valid");
        let p = keysend_params(&req).expect("params");
        assert_eq!(p["amount_msat"], json!(10_000));
        // xpay's default fee: 1% or 5,000 msat, whichever is greater.
        assert_eq!(p["maxfee"], json!(5000));
        assert_eq!(
            (p["retry_for"].clone(), p["maxdelay"].clone()),
            (json!(5), json!(100))
        );
        assert_eq!(p["label"], json!("l"));
        assert_eq!(p["extratlvs"], json!({"133773311": "00"}));
        let req = params::xkeysend_request(&json!({"destination": dest, "amount_msat": 1}));
        let p = keysend_params(&req.expect("ok")).expect("params");
        assert!(p.get("label").is_none() && p.get("extratlvs").is_none());
        assert_eq!(p["maxdelay"], json!(2016));
    }

    #[test]
    fn counts_parts_by_status() {
        let rows = [
            json!({"status": "failed"}),
            json!({"status": "complete"}),
            json!({"status": "failed"}),
            json!({"status": "pending"}),
        ];
        assert_eq!(part_counts(&rows), (1, 2));
        assert_eq!(part_counts(&[]), (0, 0));
    }
}
