//! `renepay` and `renepaystatus`: CLN's (deprecated) renepay plugin interface, served by
//! this plugin's own payment engine, the one `pay` and `xpay` use. `renepay` takes
//! renepay's parameters and defaults (a fee of 0.5% or 5,000 msat, whichever is greater)
//! and answers with renepay's result; `renepaystatus` shows the payments this plugin made
//! in this run (`paystatus`'s entries) in renepay's shape. Not done: renepay's own
//! min-cost-flow solver and its `dev_` tuning parameters (`dev_use_shadow` is accepted
//! and changes nothing).

use std::sync::Arc;

use fulgur_plugin_sdk::{Plugin, RpcError};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::State;
use crate::params;
use crate::pay::{self, AMOUNT_REQUIRED, AMOUNT_UNNECESSARY, Paid};

/// `renepay`.
pub async fn renepay(plugin: Plugin<Arc<State>>, params: Value) -> Result<Value, RpcError> {
    let req = params::renepay_request(&params)?;
    let paid = pay::pay_invoice(&plugin, &req)
        .await
        .map_err(renepay_error)?;
    Ok(renepay_result(&paid, &req.bolt11))
}

/// renepay's words for the amount errors pay shares with it.
fn renepay_error(e: RpcError) -> RpcError {
    let message = match e.message.as_str() {
        AMOUNT_UNNECESSARY => {
            "amount_msat parameter cannot be specified on an invoice with an amount"
        }
        AMOUNT_REQUIRED => "amount_msat parameter required",
        _ => return e,
    };
    RpcError::new(e.code, message)
}

/// renepay's fields of pay's result, with the invoice and group; `parts` counts every part
/// sent, as renepay's does.
fn renepay_result(paid: &Paid, bolt11: &str) -> Value {
    let mut out = Map::new();
    for k in [
        "payment_preimage",
        "payment_hash",
        "created_at",
        "amount_msat",
        "amount_sent_msat",
        "status",
        "destination",
    ] {
        if let Some(v) = paid.result.get(k) {
            out.insert(k.into(), v.clone());
        }
    }
    let done = paid
        .result
        .get("parts")
        .and_then(Value::as_u64)
        .unwrap_or(1);
    out.insert("parts".into(), json!(done + paid.failed_parts));
    out.insert("bolt11".into(), json!(bolt11));
    out.insert("groupid".into(), json!(paid.groupid));
    Value::Object(out)
}

/// `renepaystatus`'s params.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RenepaystatusParams {
    invstring: Option<String>,
}

/// `renepaystatus [invstring]`.
pub async fn renepaystatus(
    plugin: Plugin<Arc<State>>,
    p: RenepaystatusParams,
) -> Result<Value, RpcError> {
    let hash = match &p.invstring {
        Some(s) if s.to_ascii_lowercase().starts_with("lni1") => {
            return Err(RpcError::invalid_params(
                "BOLT12 invoices are not yet supported.",
            ));
        }
        Some(s) => Some(pay::payment_hash_of(plugin.rpc(), s, "invstring").await?),
        None => None,
    };
    let all = crate::lock(&plugin.state().status);
    let paystatus: Vec<Value> = all
        .iter()
        .filter(|e| {
            hash.as_deref()
                .is_none_or(|h| e.get("payment_hash").and_then(Value::as_str) == Some(h))
        })
        .map(status_entry)
        .collect();
    Ok(json!({ "paystatus": paystatus }))
}

/// One `paystatus` entry (the plugin's record of a payment and its parts) as renepaystatus
/// shows it: the parts sent, and once a part completed, the preimage and what was sent.
fn status_entry(e: &Value) -> Value {
    let mut out = Map::new();
    for k in [
        "bolt11",
        "payment_hash",
        "created_at",
        "groupid",
        "amount_msat",
        "status",
        "destination",
    ] {
        if let Some(v) = e.get(k) {
            out.insert(k.into(), v.clone());
        }
    }
    let attempts: &[Value] = e
        .get("attempts")
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice);
    out.insert("parts".into(), json!(attempts.len()));
    let done: Vec<&Value> = attempts
        .iter()
        .filter(|a| a.get("success").is_some())
        .collect();
    if let Some(pre) = done
        .iter()
        .find_map(|a| a.pointer("/success/payment_preimage"))
        .filter(|p| p.is_string())
    {
        out.insert("payment_preimage".into(), pre.clone());
        let sent: u64 = done
            .iter()
            .filter_map(|a| a.get("amount_sent_msat").and_then(Value::as_u64))
            .sum();
        out.insert("amount_sent_msat".into(), json!(sent));
    }
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use fulgur_plugin_sdk::fulgur_protocol::error::codes;

    #[test]
    fn result_is_renepays_shape() {
        let paid = Paid {
            result: json!({"payment_preimage": "aa", "payment_hash": "bb", "created_at": 5,
                           "parts": 2, "amount_msat": 10, "amount_sent_msat": 11,
                           "status": "complete", "destination": "02cc",
                           "warning_partial_completion": "x"}),
            failed_parts: 1,
            groupid: 3,
        };
        let r = renepay_result(&paid, "lnbcrt1");
        assert_eq!(r["parts"], json!(3));
        assert_eq!(
            (r["bolt11"].clone(), r["groupid"].clone()),
            (json!("lnbcrt1"), json!(3))
        );
        assert!(r.get("warning_partial_completion").is_none());
        assert_eq!(r.as_object().map(Map::len), Some(10));
    }

    #[test]
    fn amount_errors_in_renepays_words() {
        let e = renepay_error(RpcError::invalid_params(AMOUNT_UNNECESSARY));
        assert_eq!(e.code, -32602);
        assert!(
            e.message
                .starts_with("amount_msat parameter cannot be specified")
        );
        let other = RpcError::new(codes::PAY_ROUTE_NOT_FOUND, "Could not find a route");
        assert_eq!(renepay_error(other.clone()).message, other.message);
    }

    #[test]
    fn status_entries_count_parts_and_show_the_preimage() {
        let entry = json!({
            "bolt11": "lnbcrt1", "payment_hash": "bb", "amount_msat": 10, "destination": "02cc",
            "groupid": 1, "status": "complete", "created_at": 1.5,
            "attempts": [
                {"partid": 1, "amount_sent_msat": 12, "failure": {"code": 204}},
                {"partid": 2, "amount_sent_msat": 11, "success": {"payment_preimage": "aa"}},
            ],
        });
        let s = status_entry(&entry);
        assert_eq!(s["parts"], json!(2));
        assert_eq!(s["payment_preimage"], json!("aa"));
        assert_eq!(s["amount_sent_msat"], json!(11));
        assert!(s.get("attempts").is_none());
        let pending = status_entry(&json!({"bolt11": "x", "status": "pending", "attempts": []}));
        assert_eq!(pending["parts"], json!(0));
        assert!(pending.get("payment_preimage").is_none());
    }
}
