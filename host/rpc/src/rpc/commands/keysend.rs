//! `keysend`: pays a node without an invoice (`lightning/keysend.rs` does the work), with
//! CLN's parameters, reply and errors.

use fulgur_base::hex;

use fulgur_protocol::RpcError;
use fulgur_protocol::amount::Msat;
use fulgur_protocol::error::codes;
use lightning::routing::gossip::RoutingFees;
use lightning::routing::router::{RouteHint, RouteHintHop};
use serde_json::{Value, json};

use super::pay::{bad_param, engine, part_failure, sendpay_error};
use super::peers::parse_id;
use super::{Command, CommandFuture, Ctx, command};
use crate::lightning::keysend::{KeysendError, KeysendRequest};
use crate::lightning::parse_scid;
use crate::lightning::payments::{DESTINATION_REFUSED, Sendpay};
use crate::rpc::params::{Params, opt, req};

pub const KEYSEND: Command = Command::new(
    "keysend",
    &[
        req("destination"),
        req("amount_msat"),
        opt("label"),
        opt("maxfeepercent"),
        opt("retry_for"),
        opt("maxdelay"),
        opt("exemptfee"),
        opt("routehints"),
        opt("extratlvs"),
        opt("maxfee"),
    ],
    run_keysend,
);

/// An msat parameter (CLN's forms: `1000`, `1000msat`, `5sat`, `0.1btc`).
pub(super) fn msat(p: &Params, name: &str) -> Result<Option<u64>, RpcError> {
    match p.get(name) {
        None => Ok(None),
        Some(v) => Msat::from_json(v)
            .map(|m| Some(m.0))
            .map_err(|_| bad_param(name, "should be a millisatoshi amount", v)),
    }
}

/// The most the route may cost, by CLN's rules: `maxfee`, or whichever of `maxfeepercent`
/// (0.5 %) of the amount and `exemptfee` (5000 msat) is larger.
pub fn max_fee(
    amount_msat: u64,
    maxfee: Option<u64>,
    percent: Option<f64>,
    exempt: Option<u64>,
) -> Result<u64, RpcError> {
    if let Some(m) = maxfee {
        if percent.is_some() || exempt.is_some() {
            return Err(RpcError::invalid_params(
                "Cannot specify both maxfee and maxfeepercent/exemptfee",
            ));
        }
        return Ok(m);
    }
    let pct = percent.unwrap_or(0.5);
    if !(0.0..=100.0).contains(&pct) {
        return Err(RpcError::invalid_params(format!(
            "maxfeepercent: should be a percentage: invalid token '{pct}'"
        )));
    }
    let by_pct = (amount_msat as f64 * pct / 100.0) as u64;
    Ok(by_pct.max(exempt.unwrap_or(5000)))
}

fn percent(p: &Params) -> Result<Option<f64>, RpcError> {
    match p.get("maxfeepercent") {
        None => Ok(None),
        Some(Value::Number(n)) => Ok(n.as_f64()),
        Some(v @ Value::String(s)) => s
            .parse::<f64>()
            .map(Some)
            .map_err(|_| bad_param("maxfeepercent", "should be a number", v)),
        Some(v) => Err(bad_param("maxfeepercent", "should be a number", v)),
    }
}

/// `extratlvs`: `{"type": "hex", ...}`.
fn extra_tlvs(p: &Params) -> Result<Vec<(u64, Vec<u8>)>, RpcError> {
    let Some(v) = p.get("extratlvs") else {
        return Ok(vec![]);
    };
    let Value::Object(m) = v else {
        return Err(bad_param("extratlvs", "should be an object", v));
    };
    let mut out = vec![];
    for (k, val) in m {
        let ty = k
            .parse::<u64>()
            .map_err(|_| bad_param("extratlvs", "should have numeric keys", v))?;
        let bytes = val
            .as_str()
            .and_then(fulgur_base::unhex)
            .ok_or_else(|| bad_param("extratlvs", "should have hex values", v))?;
        out.push((ty, bytes));
    }
    out.sort_by_key(|(t, _)| *t);
    Ok(out)
}

/// `routehints`: an array of routes, each an array of `{id, scid, feebase, feeprop,
/// expirydelta}`.
fn route_hints(p: &Params) -> Result<Vec<RouteHint>, RpcError> {
    let Some(v) = p.get("routehints") else {
        return Ok(vec![]);
    };
    let bad = || bad_param("routehints", "should be an array of arrays of hops", v);
    let routes = v.as_array().ok_or_else(bad)?;
    let mut out = vec![];
    for r in routes {
        let mut hops = vec![];
        for h in r.as_array().ok_or_else(bad)? {
            let field = |k: &str| h.get(k).ok_or_else(bad);
            let id = parse_id(field("id")?.as_str().ok_or_else(bad)?)?;
            let scid = parse_scid(field("scid")?.as_str().ok_or_else(bad)?).ok_or_else(bad)?;
            let feebase = Msat::from_json(field("feebase")?).map_err(|_| bad())?.0;
            let feeprop = field("feeprop")?.as_u64().ok_or_else(bad)?;
            let delta = field("expirydelta")?.as_u64().ok_or_else(bad)?;
            hops.push(RouteHintHop {
                src_node_id: id,
                short_channel_id: scid,
                fees: RoutingFees {
                    base_msat: u32::try_from(feebase).map_err(|_| bad())?,
                    proportional_millionths: u32::try_from(feeprop).map_err(|_| bad())?,
                },
                cltv_expiry_delta: u16::try_from(delta).map_err(|_| bad())?,
                htlc_minimum_msat: None,
                htlc_maximum_msat: None,
            });
        }
        out.push(RouteHint(hops));
    }
    Ok(out)
}

fn run_keysend(ctx: Ctx, p: Params) -> CommandFuture {
    command(async move {
        let destination = parse_id(&p.str("destination")?)?;
        let amount_msat = msat(&p, "amount_msat")?
            .ok_or_else(|| RpcError::invalid_params("missing required parameter: amount_msat"))?;
        let label = p.opt_str("label")?;
        let max_fee_msat = max_fee(
            amount_msat,
            msat(&p, "maxfee")?,
            percent(&p)?,
            msat(&p, "exemptfee")?,
        )?;
        let retry_for = p.opt_u64("retry_for")?.unwrap_or(60);
        let max_delay = p
            .opt_u64("maxdelay")?
            .map(|d| u32::try_from(d).unwrap_or(u32::MAX));
        let request = KeysendRequest {
            destination,
            amount_msat,
            label,
            max_fee_msat,
            retry_for: std::time::Duration::from_secs(retry_for),
            max_delay,
            extra_tlvs: extra_tlvs(&p)?,
            route_hints: route_hints(&p)?,
        };
        let l = engine(&ctx.node)?;
        match l.keysend(request).await {
            Ok(row) => Ok(keysend_json(&row)),
            Err(e) => Err(keysend_error(e)),
        }
    })
}

/// CLN's `keysend` reply for a completed payment.
pub fn keysend_json(r: &Sendpay) -> Value {
    let mut v = json!({
        "payment_hash": hex(&r.payment_hash),
        "created_at": r.created_at,
        "parts": 1,
        "amount_msat": r.amount_msat.unwrap_or(r.amount_sent_msat),
        "amount_sent_msat": r.amount_sent_msat,
        "status": "complete",
    });
    if let Some(d) = &r.destination {
        v["destination"] = json!(d.to_string());
    }
    if let Some(p) = &r.preimage {
        v["payment_preimage"] = json!(hex(p));
    }
    v
}

/// Each [`KeysendError`] as CLN's pay errors: the destination's refusal is 203, running
/// out of routes or time 210, no route at all 205.
pub fn keysend_error(e: KeysendError) -> RpcError {
    match e {
        KeysendError::Params(m) => RpcError::invalid_params(m),
        KeysendError::NoRoute(row) => {
            let mut err = part_failure(&row);
            err.code = codes::PAY_ROUTE_NOT_FOUND;
            err.message = "Ran out of routes to try after 0 attempts: see `paystatus`".into();
            err
        }
        KeysendError::Failed(row) => {
            let refused = row
                .error
                .as_ref()
                .is_some_and(|e| e.code == DESTINATION_REFUSED);
            let mut err = part_failure(&row);
            if !refused {
                err.code = codes::PAY_STOPPED_RETRYING;
                err.message = format!("Ran out of routes to try: {}", err.message);
            }
            err
        }
        KeysendError::Sendpay(e) => sendpay_error(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fee_limits_follow_clns_rules() {
        // 0.5 % of 10 M msat is 50 000; the exemption (5000) is smaller.
        assert_eq!(max_fee(10_000_000, None, None, None).ok(), Some(50_000));
        // Small payments may pay up to the exemption.
        assert_eq!(max_fee(1000, None, None, None).ok(), Some(5000));
        assert_eq!(max_fee(1000, None, Some(1.0), Some(0)).ok(), Some(10));
        assert_eq!(max_fee(1000, Some(7), None, None).ok(), Some(7));
        assert_eq!(
            max_fee(1000, Some(7), Some(1.0), None).map_err(|e| e.code),
            Err(-32602)
        );
        assert_eq!(
            max_fee(1000, None, Some(101.0), None).map_err(|e| e.code),
            Err(-32602)
        );
    }
}
