//! The parameters of `pay`, `xpay`, `sendamount` and `renepay`, by name or in CLN's
//! positional order, checked into [`PayRequest`] (and `xkeysend`'s into [`XkeysendRequest`]):
//! amounts in any of CLN's msat forms, `maxfee` exclusive with `maxfeepercent`/`exemptfee`,
//! `exclude` entries as channel directions or node ids.

use std::collections::HashSet;

use fulgur_plugin_sdk::RpcError;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::liquidity::ChanKey;

/// CLN's positional order for `pay`.
pub const PAY_USAGE: &str = "bolt11 [amount_msat] [label] [riskfactor] [maxfeepercent] [retry_for] [maxdelay] [exemptfee] [localinvreqid] [exclude] [maxfee] [description] [partial_msat]";

/// CLN's default `max-locktime-blocks`, used when `maxdelay` is not given.
pub const DEFAULT_MAX_DELAY: u32 = 2016;

/// A millisatoshi amount: a number, or a string with `msat`, `sat` or `btc`.
pub fn parse_msat(v: &Value) -> Result<u64, String> {
    if let Some(n) = v.as_u64() {
        return Ok(n);
    }
    let Some(s) = v.as_str() else {
        return Err(format!("not an amount: {v}"));
    };
    let bad = || format!("not an amount: {s}");
    if let Some(n) = s.strip_suffix("msat") {
        return n.parse::<u64>().map_err(|_| bad());
    }
    if let Some(n) = s.strip_suffix("sat") {
        return match n.split_once('.') {
            None => n
                .parse::<u64>()
                .ok()
                .and_then(|n| n.checked_mul(1000))
                .ok_or_else(bad),
            Some((whole, frac)) if frac.len() == 3 && frac.bytes().all(|b| b.is_ascii_digit()) => {
                let w = whole.parse::<u64>().map_err(|_| bad())?;
                let f = frac.parse::<u64>().map_err(|_| bad())?;
                w.checked_mul(1000)
                    .and_then(|w| w.checked_add(f))
                    .ok_or_else(bad)
            }
            Some(_) => Err(bad()),
        };
    }
    if let Some(n) = s.strip_suffix("btc") {
        let (whole, frac) = n.split_once('.').unwrap_or((n, ""));
        if frac.len() > 11 || !frac.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        let w = whole.parse::<u64>().map_err(|_| bad())?;
        let padded = format!("{frac:0<11}");
        let f = padded.parse::<u64>().map_err(|_| bad())?;
        return w
            .checked_mul(100_000_000_000)
            .and_then(|w| w.checked_add(f))
            .ok_or_else(bad);
    }
    s.parse::<u64>().map_err(|_| bad())
}

/// The raw params, as the caller sent them.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPay {
    #[serde(alias = "invstring")]
    bolt11: String,
    amount_msat: Option<Value>,
    label: Option<String>,
    riskfactor: Option<f64>,
    maxfeepercent: Option<f64>,
    retry_for: Option<u64>,
    maxdelay: Option<u32>,
    exemptfee: Option<Value>,
    localinvreqid: Option<String>,
    exclude: Option<Vec<String>>,
    maxfee: Option<Value>,
    description: Option<String>,
    partial_msat: Option<Value>,
}

/// How the fee is limited.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum FeeLimit {
    /// `maxfee`: an absolute limit.
    Absolute(u64),
    /// `maxfeepercent` of the amount, but fees up to `exempt` msat are always fine.
    Percent {
        /// Percent of the amount.
        percent: f64,
        /// `exemptfee`.
        exempt: u64,
    },
}

impl FeeLimit {
    /// The fee allowed for delivering `amount`.
    pub fn for_amount(&self, amount: u64) -> u64 {
        match *self {
            FeeLimit::Absolute(m) => m,
            FeeLimit::Percent { percent, exempt } => {
                let pct = (amount as f64 * percent / 100.0).floor();
                let pct = if pct.is_finite() && pct > 0.0 {
                    pct.min(u64::MAX as f64) as u64
                } else {
                    0
                };
                pct.max(exempt)
            }
        }
    }
}

/// A checked `pay` request.
#[derive(Debug, Clone)]
pub struct PayRequest {
    /// The invoice.
    pub bolt11: String,
    /// `amount_msat`, for invoices without an amount.
    pub amount_msat: Option<u64>,
    /// Label for the sendpay records.
    pub label: Option<String>,
    /// CLN's riskfactor (yearly percent cost of locked funds).
    pub riskfactor: f64,
    /// Fee limit.
    pub fee_limit: FeeLimit,
    /// Seconds to keep trying.
    pub retry_for: u64,
    /// Largest total CLTV delay.
    pub maxdelay: u32,
    /// Channel directions not to use.
    pub exclude_chans: HashSet<ChanKey>,
    /// Nodes not to route through.
    pub exclude_nodes: HashSet<String>,
    /// Description for invoices that carry only its hash.
    pub description: Option<String>,
    /// Whether an invoice with only a description hash needs `description` (`pay`: yes).
    pub require_description: bool,
    /// The parameter that names the invoice (`bolt11` for `pay`, `invstring` for `xpay`).
    pub invstring_param: &'static str,
    /// `sendamount`: `amount_msat` is what leaves our node, fees included; the payee gets
    /// it less the fees, in one part, on an invoice without an amount.
    pub fees_included: bool,
}

pub(crate) fn is_node_id(s: &str) -> bool {
    s.len() == 66
        && (s.starts_with("02") || s.starts_with("03"))
        && s.bytes().all(|b| b.is_ascii_hexdigit())
}

fn msat_param(name: &str, v: Option<Value>) -> Result<Option<u64>, RpcError> {
    v.map(|v| {
        parse_msat(&v).map_err(|_| {
            RpcError::invalid_params(format!(
                "{name}: should be a millisatoshi amount: invalid token '{v}'"
            ))
        })
    })
    .transpose()
}

const PARTIAL_UNSUPPORTED: &str = "partial_msat: paying part of an invoice is not supported";

/// Binds `params`, by name or in `usage`'s positional order.
fn bind_usage<T: serde::de::DeserializeOwned>(params: &Value, usage: &str) -> Result<T, RpcError> {
    let names: Vec<String> = fulgur_plugin_sdk::usage_names(usage);
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    fulgur_plugin_sdk::bind(params, &names)
}

/// An invalid-params error with `message` when `refused`.
fn refuse_if(refused: bool, message: &str) -> Result<(), RpcError> {
    if refused {
        return Err(RpcError::invalid_params(message));
    }
    Ok(())
}

/// `amount_msat`, which must not be 0.
fn positive_amount(v: Option<Value>) -> Result<Option<u64>, RpcError> {
    let amount = msat_param("amount_msat", v)?;
    refuse_if(
        amount == Some(0),
        "amount_msat: must be positive: invalid token '0'",
    )?;
    Ok(amount)
}

/// `exclude`'s entries: channel directions and node ids.
fn exclusions(
    exclude: Option<Vec<String>>,
) -> Result<(HashSet<ChanKey>, HashSet<String>), RpcError> {
    let mut chans = HashSet::new();
    let mut nodes = HashSet::new();
    for e in exclude.unwrap_or_default() {
        if let Some(k) = ChanKey::parse(&e) {
            chans.insert(k);
        } else if is_node_id(&e) {
            nodes.insert(e.to_ascii_lowercase());
        } else {
            return Err(RpcError::invalid_params(format!(
                "exclude: should be a short_channel_id/direction or a node id: invalid token '{e}'"
            )));
        }
    }
    Ok((chans, nodes))
}

/// Binds and checks `pay`'s params.
pub fn pay_request(params: &Value) -> Result<PayRequest, RpcError> {
    let raw: RawPay = bind_usage(params, PAY_USAGE)?;
    refuse_if(
        raw.localinvreqid.is_some(),
        "localinvreqid: BOLT 12 payments are not supported",
    )?;
    refuse_if(raw.partial_msat.is_some(), PARTIAL_UNSUPPORTED)?;
    let amount_msat = positive_amount(raw.amount_msat)?;
    let exemptfee = msat_param("exemptfee", raw.exemptfee)?;
    let maxfee = msat_param("maxfee", raw.maxfee)?;
    let fee_limit = match maxfee {
        Some(m) => {
            if raw.maxfeepercent.is_some() || exemptfee.is_some() {
                return Err(RpcError::invalid_params(
                    "maxfee: Cannot specify maxfee with maxfeepercent or exemptfee",
                ));
            }
            FeeLimit::Absolute(m)
        }
        None => {
            let percent = raw.maxfeepercent.unwrap_or(0.5);
            if !percent.is_finite() || percent < 0.0 {
                return Err(RpcError::invalid_params(format!(
                    "maxfeepercent: should be a non-negative number: invalid token '{percent}'"
                )));
            }
            FeeLimit::Percent {
                percent,
                exempt: exemptfee.unwrap_or(5000),
            }
        }
    };
    let riskfactor = raw.riskfactor.unwrap_or(10.0);
    if !riskfactor.is_finite() || riskfactor < 0.0 {
        return Err(RpcError::invalid_params(format!(
            "riskfactor: should be a non-negative number: invalid token '{riskfactor}'"
        )));
    }
    let (exclude_chans, exclude_nodes) = exclusions(raw.exclude)?;
    Ok(PayRequest {
        bolt11: raw.bolt11,
        amount_msat,
        label: raw.label,
        riskfactor,
        fee_limit,
        retry_for: raw.retry_for.unwrap_or(60),
        maxdelay: raw.maxdelay.unwrap_or(DEFAULT_MAX_DELAY),
        exclude_chans,
        exclude_nodes,
        description: raw.description,
        require_description: true,
        invstring_param: "bolt11",
        fees_included: false,
    })
}

/// CLN's positional order for `xpay`.
pub const XPAY_USAGE: &str =
    "invstring [amount_msat] [maxfee] [layers] [retry_for] [partial_msat] [maxdelay] [payer_note]";

/// The askrene layers xpay always applies; our planner does what they describe (local
/// channels' real balances, no fee on our own channels), so naming them changes nothing.
const BUILTIN_LAYERS: [&str; 3] = ["auto.localchans", "auto.sourcefree", "auto.no_mpp_support"];

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawXpay {
    invstring: String,
    amount_msat: Option<Value>,
    maxfee: Option<Value>,
    layers: Option<Vec<String>>,
    retry_for: Option<u64>,
    partial_msat: Option<Value>,
    maxdelay: Option<u32>,
    payer_note: Option<String>,
}

/// Binds and checks `xpay`'s params: CLN's defaults (a fee of 1% or 5,000 msat, whichever is
/// greater; 60 s), no askrene layers beyond the built-in ones.
pub fn xpay_request(params: &Value) -> Result<PayRequest, RpcError> {
    let raw: RawXpay = bind_usage(params, XPAY_USAGE)?;
    refuse_if(raw.partial_msat.is_some(), PARTIAL_UNSUPPORTED)?;
    refuse_if(
        raw.payer_note.is_some(),
        "payer_note: only for BOLT 12 offers, which are not supported",
    )?;
    check_layers(raw.layers.as_deref())?;
    let amount_msat = positive_amount(raw.amount_msat)?;
    let fee_limit = xpay_fee_limit(msat_param("maxfee", raw.maxfee)?);
    Ok(xpay_like(
        raw.invstring,
        amount_msat,
        fee_limit,
        raw.retry_for,
        raw.maxdelay,
    ))
}

/// Refuses askrene layers beyond the built-in ones (xpay's family routes without them).
fn check_layers(layers: Option<&[String]>) -> Result<(), RpcError> {
    if let Some(l) = layers
        .into_iter()
        .flatten()
        .find(|l| !BUILTIN_LAYERS.contains(&l.as_str()))
    {
        return Err(RpcError::invalid_params(format!(
            "layers: unknown layer '{l}' (askrene layers are not supported)"
        )));
    }
    Ok(())
}

/// xpay's fee limit: `maxfee`, else 1% or 5,000 msat, whichever is greater.
fn xpay_fee_limit(maxfee: Option<u64>) -> FeeLimit {
    match maxfee {
        Some(m) => FeeLimit::Absolute(m),
        None => FeeLimit::Percent {
            percent: 1.0,
            exempt: 5000,
        },
    }
}

/// A request with xpay's defaults (60 s, `maxdelay` 2016, no exclusions, a description
/// hash needs no description).
fn xpay_like(
    invstring: String,
    amount_msat: Option<u64>,
    fee_limit: FeeLimit,
    retry_for: Option<u64>,
    maxdelay: Option<u32>,
) -> PayRequest {
    PayRequest {
        bolt11: invstring,
        amount_msat,
        label: None,
        riskfactor: 10.0,
        fee_limit,
        retry_for: retry_for.unwrap_or(60),
        maxdelay: maxdelay.unwrap_or(DEFAULT_MAX_DELAY),
        exclude_chans: HashSet::new(),
        exclude_nodes: HashSet::new(),
        description: None,
        require_description: false,
        invstring_param: "invstring",
        fees_included: false,
    }
}

/// Refuses BOLT 12 offers and invoices and BIP 353 names in `invstring` (CLN's
/// `sendamount` takes them; Fulgur pays BOLT 11 only).
fn refuse_bolt12(invstring: &str) -> Result<(), RpcError> {
    let lower = invstring.to_ascii_lowercase();
    refuse_if(
        ["lno1", "lni1", "lnr1"]
            .iter()
            .any(|p| lower.starts_with(p)),
        "invstring: BOLT12 is not supported yet",
    )?;
    refuse_if(
        invstring.contains('@'),
        "invstring: BIP353 names (BOLT12 offers) are not supported yet",
    )
}

/// CLN's positional order for `sendamount`.
pub const SENDAMOUNT_USAGE: &str =
    "invstring amount_msat [maxfee] [layers] [retry_for] [maxdelay] [payer_note] [label]";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSendamount {
    invstring: String,
    amount_msat: Value,
    maxfee: Option<Value>,
    layers: Option<Vec<String>>,
    retry_for: Option<u64>,
    maxdelay: Option<u32>,
    payer_note: Option<String>,
    label: Option<String>,
}

/// `sendamount`'s fee limit for sending `send` msat, as CLN's xpay: `maxfee`, else half of
/// up to 10 sat, 5 sat up to 500 sat, 1% above; never more than half the amount (the
/// payee's invoice stands for at least half of it).
fn sendamount_fee(send: u64, maxfee: Option<u64>) -> u64 {
    let default = if send <= 10_000 {
        send / 2
    } else if send <= 500_000 {
        5000
    } else {
        send / 100
    };
    maxfee.unwrap_or(default).min(send - send.div_ceil(2))
}

/// Binds and checks `sendamount`'s params: BOLT 11 only, one part, fees out of
/// `amount_msat`.
pub fn sendamount_request(params: &Value) -> Result<PayRequest, RpcError> {
    let raw: RawSendamount = bind_usage(params, SENDAMOUNT_USAGE)?;
    refuse_bolt12(&raw.invstring)?;
    check_layers(raw.layers.as_deref())?;
    // Only BOLT 12 offers carry a payer note: ignored for a BOLT 11 invoice, as CLN does.
    let _ = raw.payer_note;
    let send = positive_amount(Some(raw.amount_msat))?.unwrap_or_default();
    let fee = sendamount_fee(send, msat_param("maxfee", raw.maxfee)?);
    Ok(PayRequest {
        label: raw.label,
        fees_included: true,
        ..xpay_like(
            raw.invstring,
            Some(send),
            FeeLimit::Absolute(fee),
            raw.retry_for,
            raw.maxdelay,
        )
    })
}

/// CLN's positional order for `renepay`.
pub const RENEPAY_USAGE: &str =
    "invstring [amount_msat] [maxfee] [maxdelay] [retry_for] [description] [label] [exclude]";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRenepay {
    invstring: String,
    amount_msat: Option<Value>,
    maxfee: Option<Value>,
    maxdelay: Option<u32>,
    retry_for: Option<u64>,
    description: Option<String>,
    label: Option<String>,
    exclude: Option<Vec<String>>,
    dev_use_shadow: Option<bool>,
}

/// Binds and checks `renepay`'s params: CLN's renepay defaults (a fee of 0.5% or 5,000
/// msat, whichever is greater; 60 s; `maxdelay` 2016).
pub fn renepay_request(params: &Value) -> Result<PayRequest, RpcError> {
    let raw: RawRenepay = bind_usage(params, RENEPAY_USAGE)?;
    refuse_bolt12(&raw.invstring)?;
    // Shadow routes only blur the final CLTV; we add none, so the flag changes nothing.
    let _ = raw.dev_use_shadow;
    let (exclude_chans, exclude_nodes) = exclusions(raw.exclude)?;
    let fee_limit = match msat_param("maxfee", raw.maxfee)? {
        Some(m) => FeeLimit::Absolute(m),
        None => FeeLimit::Percent {
            percent: 0.5,
            exempt: 5000,
        },
    };
    let amount_msat = positive_amount(raw.amount_msat)?;
    Ok(PayRequest {
        label: raw.label,
        description: raw.description,
        exclude_chans,
        exclude_nodes,
        ..xpay_like(
            raw.invstring,
            amount_msat,
            fee_limit,
            raw.retry_for,
            raw.maxdelay,
        )
    })
}

/// CLN's positional order for `xkeysend`.
pub const XKEYSEND_USAGE: &str =
    "destination amount_msat [label] [maxfee] [layers] [retry_for] [maxdelay] [extratlvs]";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawXkeysend {
    destination: String,
    amount_msat: Value,
    label: Option<String>,
    maxfee: Option<Value>,
    layers: Option<Vec<String>>,
    retry_for: Option<u64>,
    maxdelay: Option<u32>,
    extratlvs: Option<serde_json::Map<String, Value>>,
}

/// A checked `xkeysend` request, in the terms of the node's `keysend` (it serializes to
/// `keysend`'s params).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct XkeysendRequest {
    /// The payee's node id (lower case).
    pub destination: String,
    /// What the payee receives.
    pub amount_msat: u64,
    /// Label for the sendpay record.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// Most fee, msat (xpay's default when not given).
    pub maxfee: u64,
    /// Seconds to keep trying.
    pub retry_for: u64,
    /// Largest total CLTV delay.
    pub maxdelay: u32,
    /// TLVs for the payee's payload, `{"type": "hex"}`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub extratlvs: Option<serde_json::Map<String, Value>>,
}

/// Binds and checks `xkeysend`'s params.
pub fn xkeysend_request(params: &Value) -> Result<XkeysendRequest, RpcError> {
    let raw: RawXkeysend = bind_usage(params, XKEYSEND_USAGE)?;
    if !is_node_id(&raw.destination) {
        return Err(RpcError::invalid_params(format!(
            "destination: should be a node id: invalid token '{}'",
            raw.destination
        )));
    }
    check_layers(raw.layers.as_deref())?;
    let amount_msat = positive_amount(Some(raw.amount_msat))?.unwrap_or_default();
    let maxfee = xpay_fee_limit(msat_param("maxfee", raw.maxfee)?).for_amount(amount_msat);
    Ok(XkeysendRequest {
        destination: raw.destination.to_ascii_lowercase(),
        amount_msat,
        label: raw.label,
        maxfee,
        retry_for: raw.retry_for.unwrap_or(60),
        maxdelay: raw.maxdelay.unwrap_or(DEFAULT_MAX_DELAY),
        extratlvs: raw.extratlvs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const ID: &str = "02eec7245d6b7d2ccb30380bfbe2a3648cd7a942653f5aa340edcea1f283686619";

    #[test]
    fn amounts_in_clns_forms() {
        assert_eq!(parse_msat(&json!(5)), Ok(5));
        assert_eq!(parse_msat(&json!("5msat")), Ok(5));
        assert_eq!(parse_msat(&json!("5sat")), Ok(5000));
        assert_eq!(parse_msat(&json!("5.123sat")), Ok(5123));
        assert_eq!(parse_msat(&json!("0.001btc")), Ok(100_000_000));
        assert_eq!(parse_msat(&json!("7")), Ok(7));
        for bad in [
            json!("5.1sat"),
            json!(-1),
            json!("x"),
            json!(1.5),
            json!(null),
        ] {
            assert!(parse_msat(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn named_and_positional_with_defaults() {
        let r = pay_request(&json!({"bolt11": "lnbc1"})).expect("named");
        assert_eq!(r.retry_for, 60);
        assert_eq!(r.maxdelay, DEFAULT_MAX_DELAY);
        assert_eq!(
            r.fee_limit,
            FeeLimit::Percent {
                percent: 0.5,
                exempt: 5000
            }
        );
        let r = pay_request(&json!(["lnbc1", "1000sat", "lbl", 1, 2.0, 5])).expect("positional");
        assert_eq!(r.amount_msat, Some(1_000_000));
        assert_eq!(r.label.as_deref(), Some("lbl"));
        assert_eq!(r.retry_for, 5);
        assert_eq!(r.fee_limit.for_amount(1_000_000), 20_000);
        assert_eq!(r.fee_limit.for_amount(1000), 5000);
        let r = pay_request(&json!({"bolt11": "x", "maxfee": 7, "exclude": ["1x2x3/1", ID]}))
            .expect("maxfee");
        assert_eq!(r.fee_limit.for_amount(1 << 40), 7);
        assert!(r.exclude_chans.contains(&ChanKey::new("1x2x3", 1)));
        assert!(r.exclude_nodes.contains(ID));
    }

    #[test]
    fn refuses_what_cln_refuses() {
        for bad in [
            json!({}),
            json!({"bolt11": "x", "maxfee": 1, "maxfeepercent": 1}),
            json!({"bolt11": "x", "maxfee": 1, "exemptfee": 1}),
            json!({"bolt11": "x", "exclude": ["nope"]}),
            json!({"bolt11": "x", "bogus": 1}),
            json!({"bolt11": "x", "amount_msat": 0}),
            json!({"bolt11": "x", "riskfactor": -1}),
            json!({"bolt11": "x", "partial_msat": 1}),
        ] {
            let e = pay_request(&bad).expect_err("refused");
            assert_eq!(e.code, -32602, "{bad}");
        }
    }

    #[test]
    fn xpay_defaults_and_refusals() {
        let r = xpay_request(&json!(["lnbc1", null, null, ["auto.localchans"]])).expect("xpay");
        assert_eq!(r.fee_limit.for_amount(100_000), 5000);
        assert_eq!(r.fee_limit.for_amount(10_000_000), 100_000);
        assert_eq!(r.retry_for, 60);
        assert!(!r.require_description);
        let r = xpay_request(&json!({"invstring": "x", "maxfee": "2sat"})).expect("maxfee");
        assert_eq!(r.fee_limit, FeeLimit::Absolute(2000));
        for bad in [
            json!({}),
            json!({"bolt11": "x"}),
            json!({"invstring": "x", "layers": ["mine"]}),
            json!({"invstring": "x", "partial_msat": 1}),
            json!({"invstring": "x", "payer_note": "hi"}),
            json!({"invstring": "x", "maxfee": "lots"}),
        ] {
            let e = xpay_request(&bad).expect_err("refused");
            assert_eq!(e.code, -32602, "{bad}");
        }
    }

    #[test]
    fn sendamount_fee_is_clns_and_at_most_half() {
        // Defaults: half up to 10 sat, 5 sat up to 500 sat, 1% above.
        assert_eq!(sendamount_fee(10_000, None), 5000);
        assert_eq!(sendamount_fee(9_999, None), 4999);
        assert_eq!(sendamount_fee(500_000, None), 5000);
        assert_eq!(sendamount_fee(1_000_000, None), 10_000);
        // A given maxfee, capped at half the amount (rounded down).
        assert_eq!(sendamount_fee(1_000_000, Some(7)), 7);
        assert_eq!(sendamount_fee(1001, Some(10_000)), 500);
        let r = sendamount_request(&json!([
            "lnbcrt1", "100sat", null, null, 5, null, "hi", "l"
        ]))
        .expect("positional");
        assert!(r.fees_included);
        assert_eq!(r.amount_msat, Some(100_000));
        assert_eq!(r.fee_limit, FeeLimit::Absolute(5000));
        assert_eq!((r.retry_for, r.label.as_deref()), (5, Some("l")));
        for bad in [
            json!({"invstring": "lnbcrt1"}),
            json!({"invstring": "lno1qgsq", "amount_msat": 1000}),
            json!({"invstring": "LNI1qgsq", "amount_msat": 1000}),
            json!({"invstring": "bob@example.com", "amount_msat": 1000}),
            json!({"invstring": "lnbcrt1", "amount_msat": 0}),
            json!({"invstring": "lnbcrt1", "amount_msat": 1000, "layers": ["mine"]}),
            json!({"invstring": "lnbcrt1", "amount_msat": 1000, "partial_msat": 1}),
        ] {
            let e = sendamount_request(&bad).expect_err("refused");
            assert_eq!(e.code, -32602, "{bad}");
        }
    }

    #[test]
    fn renepay_defaults_and_exclusions() {
        let r = renepay_request(&json!([
            "lnbcrt1",
            null,
            null,
            100,
            7,
            "d",
            "l",
            [ID, "1x2x3/0"]
        ]))
        .expect("positional");
        assert_eq!((r.maxdelay, r.retry_for), (100, 7));
        assert_eq!(r.fee_limit.for_amount(100_000), 5000);
        assert_eq!(r.fee_limit.for_amount(10_000_000), 50_000);
        assert_eq!(
            (r.description.as_deref(), r.label.as_deref()),
            (Some("d"), Some("l"))
        );
        assert!(
            r.exclude_nodes.contains(ID) && r.exclude_chans.contains(&ChanKey::new("1x2x3", 0))
        );
        assert!(!r.require_description && !r.fees_included);
        for bad in [
            json!({"bolt11": "x"}),
            json!({"invstring": "x", "exclude": ["nope"]}),
            json!({"invstring": "x", "maxfee": "lots"}),
            json!({"invstring": "x", "riskfactor": 1}),
        ] {
            let e = renepay_request(&bad).expect_err("refused");
            assert_eq!(e.code, -32602, "{bad}");
        }
    }

    #[test]
    fn xkeysend_refusals() {
        let ok = xkeysend_request(
            &json!({"destination": ID.to_uppercase(), "amount_msat": "1sat",
                                          "maxfee": 3}),
        )
        .expect("ok");
        assert_eq!(
            (ok.destination.as_str(), ok.amount_msat, ok.maxfee),
            (ID, 1000, 3)
        );
        for bad in [
            json!({"destination": ID}),
            json!({"destination": "02ab", "amount_msat": 1}),
            json!({"destination": ID, "amount_msat": 0}),
            json!({"destination": ID, "amount_msat": 1, "layers": ["mine"]}),
            json!({"destination": ID, "amount_msat": 1, "extratlvs": "00"}),
            json!({"destination": ID, "amount_msat": 1, "maxfeepercent": 1}),
        ] {
            let e = xkeysend_request(&bad).expect_err("refused");
            assert_eq!(e.code, -32602, "{bad}");
        }
    }
}
