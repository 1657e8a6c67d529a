//! `sendpay`, `waitsendpay` and `listsendpays`: outgoing payment parts over routes the caller
//! chose (`lightning/payments.rs` does the work).

use fulgur_base::hex;
use std::sync::Arc;

use bitcoin::hex::FromHex;
use bitcoin::secp256k1::PublicKey;
use fulgur_protocol::RpcError;
use fulgur_protocol::amount::Msat;
use fulgur_protocol::error::codes;
use serde_json::{Map, Value, json};

use super::{Command, CommandFuture, Ctx, command};
use crate::lightning::payments::{
    ClnHop, IN_PROGRESS_MESSAGE, ListFilter, PayStatus, Sendpay, SendpayError, SendpayRequest,
};
use crate::lightning::{Lightning, parse_scid};
use crate::node::Node;
use crate::rpc::params::{Params, opt, req};

pub const SENDPAY: Command = Command::new(
    "sendpay",
    &[
        req("route"),
        req("payment_hash"),
        opt("label"),
        opt("amount_msat"),
        opt("bolt11"),
        opt("payment_secret"),
        opt("partid"),
        opt("localinvreqid"),
        opt("groupid"),
        opt("payment_metadata"),
        opt("description"),
    ],
    run_sendpay,
);

pub const WAITSENDPAY: Command = Command::new(
    "waitsendpay",
    &[
        req("payment_hash"),
        opt("timeout"),
        opt("partid"),
        opt("groupid"),
    ],
    run_waitsendpay,
);

pub const LISTSENDPAYS: Command = Command::new(
    "listsendpays",
    &[
        opt("bolt11"),
        opt("payment_hash"),
        opt("status"),
        opt("index"),
        opt("start"),
        opt("limit"),
    ],
    run_listsendpays,
);

pub const DELPAY: Command = Command::new(
    "delpay",
    &[
        req("payment_hash"),
        req("status"),
        opt("partid"),
        opt("groupid"),
    ],
    run_delpay,
);

/// The running engine, or CLN's generic error while it waits for the Bitcoin backend.
pub(super) fn engine(node: &Node) -> Result<Arc<Lightning>, RpcError> {
    node.lightning.get().cloned().ok_or_else(|| {
        RpcError::new(
            -1,
            "The Lightning engine has not started yet (waiting for the Bitcoin backend)",
        )
    })
}

/// `name: why: invalid token 'v'`, CLN's bad-parameter message.
pub(super) fn bad_param(name: &str, why: &str, v: &Value) -> RpcError {
    let tok = match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    RpcError::invalid_params(format!("{name}: {why}: invalid token '{tok}'"))
}

/// A 32-byte hex parameter (hash, secret).
pub(super) fn opt_hex32(p: &Params, name: &str) -> Result<Option<[u8; 32]>, RpcError> {
    let Some(v) = p.get(name) else {
        return Ok(None);
    };
    v.as_str()
        .and_then(|s| <[u8; 32]>::from_hex(s).ok())
        .map(Some)
        .ok_or_else(|| bad_param(name, "should be a 32 byte hex value", v))
}

/// A node id parameter.
pub(super) fn opt_pubkey(p: &Params, name: &str) -> Result<Option<PublicKey>, RpcError> {
    let Some(v) = p.get(name) else {
        return Ok(None);
    };
    v.as_str()
        .and_then(|s| s.parse::<PublicKey>().ok())
        .map(Some)
        .ok_or_else(|| bad_param(name, "should be a node id", v))
}

fn opt_msat(p: &Params, name: &str) -> Result<Option<u64>, RpcError> {
    match p.get(name) {
        None => Ok(None),
        Some(v) => Msat::from_json(v)
            .map(|m| Some(m.0))
            .map_err(|_| bad_param(name, "should be a millisatoshi amount", v)),
    }
}

/// The first of `names` present in hop object `hop`.
fn either<'a>(hop: &'a Value, names: [&str; 2]) -> Result<&'a Value, RpcError> {
    names.iter().find_map(|n| hop.get(n)).ok_or_else(|| {
        bad_param(
            "route",
            &format!("must have either {} or {}", names[0], names[1]),
            hop,
        )
    })
}

/// One CLN route: hops `{id|node_id_out, channel|short_channel_id_dir,
/// amount_msat|amount_out_msat, delay|cltv_out}`.
fn parse_route(v: &Value) -> Result<Vec<ClnHop>, RpcError> {
    let Some(items) = v.as_array() else {
        return Err(bad_param("route", "must be an array", v));
    };
    let mut hops = vec![];
    for hop in items {
        let chan = either(hop, ["short_channel_id_dir", "channel"])?;
        let channel = chan
            .as_str()
            .map(|s| s.split_once('/').map_or(s, |(scid, _)| scid))
            .and_then(parse_scid)
            .ok_or_else(|| bad_param("route", "bad short_channel_id", chan))?;
        let idv = either(hop, ["node_id_out", "id"])?;
        let id = idv
            .as_str()
            .and_then(|s| s.parse::<PublicKey>().ok())
            .ok_or_else(|| bad_param("route", "bad node_id", idv))?;
        let amt = either(hop, ["amount_out_msat", "amount_msat"])?;
        let amount_msat = Msat::from_json(amt)
            .map_err(|_| bad_param("route", "bad amount", amt))?
            .0;
        let d = either(hop, ["cltv_out", "delay"])?;
        let delay = d
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .ok_or_else(|| bad_param("route", "bad cltv_out/delay", d))?;
        hops.push(ClnHop {
            id,
            channel,
            amount_msat,
            delay,
        });
    }
    Ok(hops)
}

/// `route`: one route, or (Fulgur's extension) an array of routes, one per part.
fn parse_routes(v: &Value) -> Result<Vec<Vec<ClnHop>>, RpcError> {
    match v.as_array() {
        Some(items) if items.first().is_some_and(Value::is_array) => {
            items.iter().map(parse_route).collect()
        }
        _ => Ok(vec![parse_route(v)?]),
    }
}

pub(super) fn sendpay_request(p: &Params) -> Result<SendpayRequest, RpcError> {
    let routes = parse_routes(p.get("route").unwrap_or(&Value::Null))?;
    let payment_hash = opt_hex32(p, "payment_hash")?
        .ok_or_else(|| RpcError::invalid_params("missing required parameter: payment_hash"))?;
    let payment_metadata = match p.get("payment_metadata") {
        None => None,
        Some(v) => Some(
            v.as_str()
                .and_then(|s| Vec::<u8>::from_hex(s).ok())
                .ok_or_else(|| bad_param("payment_metadata", "should be hex", v))?,
        ),
    };
    if let Some(id) = opt_hex32(p, "localinvreqid")? {
        // No invoice_request of ours exists (offers are not supported yet).
        return Err(RpcError::new(
            212,
            format!("Unknown invoice_request {}", hex(&id)),
        ));
    }
    Ok(SendpayRequest {
        routes,
        payment_hash,
        label: p.opt_str("label")?,
        amount_msat: opt_msat(p, "amount_msat")?,
        bolt11: p.opt_str("bolt11")?,
        payment_secret: opt_hex32(p, "payment_secret")?,
        partid: p.opt_u64("partid")?,
        groupid: p.opt_u64("groupid")?,
        payment_metadata,
        description: p.opt_str("description")?,
    })
}

fn run_sendpay(ctx: Ctx, p: Params) -> CommandFuture {
    command(async move {
        let req = sendpay_request(&p)?;
        let multi = req.routes.len() > 1;
        let l = engine(&ctx.node)?;
        let parts = l.sendpay(req).await.map_err(sendpay_error)?;
        let mut answers = parts.iter().map(sendpay_answer);
        if multi {
            Ok(json!({"payments": answers.collect::<Vec<_>>()}))
        } else {
            Ok(answers.next().unwrap_or(Value::Null))
        }
    })
}

fn run_waitsendpay(ctx: Ctx, p: Params) -> CommandFuture {
    command(async move {
        let parsed = (|| {
            let hash = opt_hex32(&p, "payment_hash")?.ok_or_else(|| {
                RpcError::invalid_params("missing required parameter: payment_hash")
            })?;
            Ok::<_, RpcError>((
                hash,
                p.opt_u64("timeout")?,
                p.opt_u64("partid")?.unwrap_or(0),
                p.opt_u64("groupid")?,
            ))
        })();
        let (hash, timeout, partid, groupid) = parsed?;
        let l = engine(&ctx.node)?;
        l.waitsendpay(hash, timeout, partid, groupid)
            .await
            .map(|r| sendpay_json(&r, false))
            .map_err(sendpay_error)
    })
}

/// The payment hash of a BOLT 11 invoice, for `listsendpays bolt11=`.
fn invoice_hash(s: &str) -> Result<[u8; 32], RpcError> {
    let decoded = super::decode::decode(s)
        .map_err(|e| RpcError::invalid_params(format!("Invalid invstring: {}", e.message)))?;
    decoded
        .get("payment_hash")
        .and_then(Value::as_str)
        .and_then(|h| <[u8; 32]>::from_hex(h).ok())
        .ok_or_else(|| RpcError::invalid_params("Invalid invstring: not a bolt11 invoice"))
}

pub(super) fn list_filter(p: &Params) -> Result<ListFilter, RpcError> {
    let hash = opt_hex32(p, "payment_hash")?;
    let bolt11 = p.opt_str("bolt11")?;
    let status = match p.get("status") {
        None => None,
        Some(v) => Some(v.as_str().and_then(PayStatus::parse).ok_or_else(|| {
            bad_param("status", "should be 'pending', 'complete' or 'failed'", v)
        })?),
    };
    let by_updated = match p.get("index") {
        None => None,
        Some(Value::String(s)) if s == "created" => Some(false),
        Some(Value::String(s)) if s == "updated" => Some(true),
        Some(v) => return Err(bad_param("index", "should be 'created' or 'updated'", v)),
    };
    let start = p.opt_u64("start")?.unwrap_or(0);
    let limit = match p.get("limit") {
        None => None,
        Some(v) => Some(
            v.as_u64()
                .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
                .and_then(|n| u32::try_from(n).ok())
                .ok_or_else(|| bad_param("limit", "should be an unsigned 32 bit integer", v))?,
        ),
    };
    if hash.is_some() && bolt11.is_some() {
        return Err(RpcError::invalid_params(
            "Can only specify one of {bolt11} or {payment_hash}",
        ));
    }
    crate::rpc::params::paging_needs_index(start, limit, by_updated.is_some())?;
    if (hash.is_some() || bolt11.is_some()) && start != 0 {
        return Err(RpcError::invalid_params(
            "Cannot use start with bolt11 or payment_hash",
        ));
    }
    let payment_hash = match bolt11 {
        Some(b) => Some(invoice_hash(&b)?),
        None => hash,
    };
    Ok(ListFilter {
        payment_hash,
        status,
        by_updated: by_updated.unwrap_or(false),
        start,
        limit,
    })
}

fn run_listsendpays(ctx: Ctx, p: Params) -> CommandFuture {
    command(async move {
        let f = list_filter(&p)?;
        let Some(l) = ctx.node.lightning.get().cloned() else {
            return Ok(json!({"payments": []}));
        };
        let rows = l.listsendpays(f).await.map_err(sendpay_error)?;
        let payments: Vec<Value> = rows.iter().map(|r| sendpay_json(r, true)).collect();
        Ok(json!({"payments": payments}))
    })
}

/// `delpay`: deletes a payment's complete or failed parts (one part with `partid` and
/// `groupid`) and returns them, as CLN's `delpay`.
fn run_delpay(ctx: Ctx, p: Params) -> CommandFuture {
    command(async move {
        let hash = opt_hex32(&p, "payment_hash")?
            .ok_or_else(|| RpcError::invalid_params("missing required parameter: payment_hash"))?;
        let v = p.get("status").cloned().unwrap_or(Value::Null);
        let status = match v.as_str().and_then(PayStatus::parse) {
            Some(PayStatus::Pending) => {
                return Err(bad_param("status", "Cannot delete pending status", &v));
            }
            Some(s) => s,
            None => {
                return Err(bad_param(
                    "status",
                    "should be 'pending', 'complete' or 'failed'",
                    &v,
                ));
            }
        };
        let part = match (p.opt_u64("partid")?, p.opt_u64("groupid")?) {
            (Some(partid), Some(groupid)) => Some((partid, groupid)),
            (None, None) => None,
            _ => {
                return Err(RpcError::invalid_params(
                    "Must set both partid and groupid, or neither",
                ));
            }
        };
        let rows = engine(&ctx.node)?
            .delpay(hash, status, part)
            .await
            .map_err(sendpay_error)?;
        let payments: Vec<Value> = rows.iter().map(|r| sendpay_json(r, false)).collect();
        Ok(json!({"payments": payments}))
    })
}

/// CLN's payment fields (`json_add_payment_fields`), without `description` unless asked
/// (the `sendpay` and `waitsendpay` result schemas have no `description`).
pub fn sendpay_json(r: &Sendpay, with_description: bool) -> Value {
    let mut m = Map::new();
    m.insert("created_index".into(), json!(r.created_index));
    m.insert("id".into(), json!(r.created_index));
    m.insert("payment_hash".into(), json!(hex(&r.payment_hash)));
    m.insert("groupid".into(), json!(r.groupid));
    if let Some(u) = r.updated_index {
        m.insert("updated_index".into(), json!(u));
    }
    if r.partid != 0 {
        m.insert("partid".into(), json!(r.partid));
    }
    if let Some(d) = &r.destination {
        m.insert("destination".into(), json!(d.to_string()));
    }
    if let Some(a) = r.amount_msat.filter(|a| *a > 0) {
        m.insert("amount_msat".into(), json!(a));
    }
    m.insert("amount_sent_msat".into(), json!(r.amount_sent_msat));
    m.insert("created_at".into(), json!(r.created_at));
    if let Some(c) = r.completed_at {
        m.insert("completed_at".into(), json!(c));
    }
    m.insert("status".into(), json!(r.status.as_str()));
    if let Some(p) = &r.preimage {
        m.insert("payment_preimage".into(), json!(hex(p)));
    }
    if let Some(l) = &r.label {
        m.insert("label".into(), json!(l));
    }
    if let Some(b) = &r.bolt11 {
        let key = if b.starts_with("lni") {
            "bolt12"
        } else {
            "bolt11"
        };
        m.insert(key.into(), json!(b));
    }
    if with_description && let Some(d) = &r.description {
        m.insert("description".into(), json!(d));
    }
    Value::Object(m)
}

/// `sendpay`'s answer for one part: its fields, plus CLN's message while it is in flight.
pub fn sendpay_answer(r: &Sendpay) -> Value {
    let mut v = sendpay_json(r, false);
    if r.status == PayStatus::Pending {
        v["message"] = json!(IN_PROGRESS_MESSAGE);
    }
    v
}

/// The JSON-RPC error of a failed part (`sendpay`, `waitsendpay`, `sendpay_failure`): the
/// code and message it keeps, `data` = payment fields + routing failure fields.
pub fn part_failure(r: &Sendpay) -> RpcError {
    let Some(err) = &r.error else {
        return RpcError::new(
            codes::PAY_UNSPECIFIED_ERROR,
            "Payment failure reason unknown",
        );
    };
    let mut data = sendpay_json(r, true);
    if let (Some(d), Ok(Value::Object(f))) = (data.as_object_mut(), serde_json::to_value(&err.fail))
    {
        d.extend(f);
    }
    RpcError::new(err.code, err.message.clone()).with_data(data)
}

/// Each [`SendpayError`] as CLN's error.
pub fn sendpay_error(e: SendpayError) -> RpcError {
    match e {
        SendpayError::Params(m) => RpcError::invalid_params(m),
        SendpayError::AlreadyUsed(m) => RpcError::new(codes::PAY_RHASH_ALREADY_USED, m),
        SendpayError::InProgress(m) => RpcError::new(codes::PAY_IN_PROGRESS, m),
        SendpayError::NoSuchPayment(m) => RpcError::new(codes::PAY_NO_SUCH_PAYMENT, m),
        SendpayError::Failed(row) => part_failure(&row),
        SendpayError::NoFirstPeer(ref fail) => {
            let data = serde_json::to_value(fail).unwrap_or(Value::Null);
            RpcError::new(codes::PAY_TRY_OTHER_ROUTE, e.to_string()).with_data(data)
        }
        SendpayError::TimedOut => RpcError::new(codes::PAY_IN_PROGRESS, e.to_string()),
        SendpayError::Internal(m) => RpcError::lightningd(m),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rpc::params::bind;

    const ID: &str = "02eec7245d6b7d2ccb30380bfbe2a3648cd7a942653f5aa340edcea1f283686619";

    fn params(spec: &Command, v: Value) -> Params {
        bind(spec.params, &v, false).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn routes_parse_in_both_names_and_as_several_parts() {
        let one = json!([{"id": ID, "channel": "103x1x0", "amount_msat": 1001, "delay": 15},
                         {"node_id_out": ID, "short_channel_id_dir": "104x2x1/0", "amount_out_msat": "1000msat", "cltv_out": 9}]);
        let r = parse_routes(&one).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].len(), 2);
        assert_eq!(r[0][0].channel, parse_scid("103x1x0").unwrap_or(0));
        assert_eq!((r[0][1].amount_msat, r[0][1].delay), (1000, 9));
        let two = json!([one.clone(), one]);
        assert_eq!(parse_routes(&two).map(|r| r.len()).ok(), Some(2));
        for bad in [
            json!([{"id": ID, "amount_msat": 1, "delay": 9}]),
            json!([{"id": ID, "channel": "1x1", "amount_msat": 1, "delay": 9}]),
            json!([{"id": "02zz", "channel": "1x1x1", "amount_msat": 1, "delay": 9}]),
            json!([{"id": ID, "channel": "1x1x1", "amount_msat": "lots", "delay": 9}]),
            json!([{"id": ID, "channel": "1x1x1", "amount_msat": 1, "delay": -1}]),
            json!({"id": ID}),
        ] {
            let e = parse_routes(&bad).err().map(|e| e.code);
            assert_eq!(e, Some(-32602), "{bad}");
        }
    }

    #[test]
    fn sendpay_params_are_checked_before_the_engine() {
        let h = "00".repeat(32);
        let p = params(&SENDPAY, json!({"route": [], "payment_hash": "abcd"}));
        assert_eq!(sendpay_request(&p).err().map(|e| e.code), Some(-32602));
        let p = params(
            &SENDPAY,
            json!({"route": [], "payment_hash": h, "localinvreqid": "11".repeat(32)}),
        );
        assert_eq!(sendpay_request(&p).err().map(|e| e.code), Some(212));
        let p = params(
            &SENDPAY,
            json!({"route": [], "payment_hash": h, "payment_metadata": "0x"}),
        );
        assert_eq!(sendpay_request(&p).err().map(|e| e.code), Some(-32602));
        let p = params(
            &SENDPAY,
            json!({"route": [], "payment_hash": h, "amount_msat": "10sat", "partid": 2}),
        );
        let r = sendpay_request(&p).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((r.amount_msat, r.partid), (Some(10_000), Some(2)));
    }

    #[test]
    fn listsendpays_filters_follow_cln_rules() {
        let h = "ab".repeat(32);
        let f = list_filter(&params(&LISTSENDPAYS, json!({}))).unwrap_or_else(|e| panic!("{e}"));
        assert!(f.payment_hash.is_none() && !f.by_updated && f.start == 0);
        let f = list_filter(&params(
            &LISTSENDPAYS,
            json!({"index": "updated", "start": 3, "limit": 2, "status": "failed"}),
        ))
        .unwrap_or_else(|e| panic!("{e}"));
        assert!(f.by_updated);
        assert_eq!(
            (f.start, f.limit, f.status),
            (3, Some(2), Some(PayStatus::Failed))
        );
        for bad in [
            json!({"payment_hash": h, "bolt11": "lnbc1"}),
            json!({"start": 1}),
            json!({"limit": 1}),
            json!({"index": "created", "start": 1, "payment_hash": h}),
            json!({"status": "done"}),
            json!({"index": "paid"}),
            json!({"bolt11": "lnbc1notaninvoice"}),
        ] {
            let e = list_filter(&params(&LISTSENDPAYS, bad.clone()))
                .err()
                .map(|e| e.code);
            assert_eq!(e, Some(-32602), "{bad}");
        }
    }

    #[test]
    fn records_carry_clns_fields() {
        use crate::lightning::payments::samples::sendpay as sample;
        let p = sendpay_answer(&sample(PayStatus::Pending));
        assert_eq!(p["message"], json!(IN_PROGRESS_MESSAGE));
        assert_eq!(p["id"], p["created_index"]);
        assert_eq!(p["partid"], json!(1));
        assert!(p.get("completed_at").is_none() && p.get("description").is_none());
        let c = sendpay_json(&sample(PayStatus::Complete), true);
        assert_eq!(c["payment_preimage"], json!(hex(&[3; 32])));
        assert_eq!(c["description"], json!("coffee"));
        assert!(
            sendpay_answer(&sample(PayStatus::Complete))
                .get("message")
                .is_none()
        );
        let e = part_failure(&sample(PayStatus::Failed));
        assert_eq!(e.code, 203);
        assert_eq!(
            e.message,
            "failed: WIRE_INCORRECT_OR_UNKNOWN_PAYMENT_DETAILS (reply from remote)"
        );
        let d = e.data.unwrap_or_default();
        assert_eq!(d["status"], json!("failed"));
        assert_eq!(d["erring_index"], json!(2));
        assert_eq!(d["erring_channel"], json!("1x1x0"));
        assert_eq!(d["failcode"], json!(16399));
        let mut unknown = sample(PayStatus::Failed);
        unknown.error = None;
        assert_eq!(part_failure(&unknown).code, 209);
        let mut zero = sample(PayStatus::Pending);
        zero.partid = 0;
        zero.amount_msat = Some(0);
        let z = sendpay_json(&zero, false);
        assert!(z.get("partid").is_none() && z.get("amount_msat").is_none());
    }

    #[test]
    fn each_sendpay_error_has_clns_code() {
        use crate::lightning::payments::FailFields;
        let cases = [
            (SendpayError::Params("x".into()), -32602),
            (SendpayError::AlreadyUsed("x".into()), 201),
            (SendpayError::InProgress("x".into()), 200),
            (SendpayError::NoSuchPayment("x".into()), 208),
            (SendpayError::NoFirstPeer(FailFields::default()), 204),
            (SendpayError::TimedOut, 200),
            (SendpayError::Internal("x".into()), -1),
        ];
        for (e, code) in cases {
            assert_eq!(sendpay_error(e.clone()).code, code, "{e:?}");
        }
        let first = sendpay_error(SendpayError::NoFirstPeer(FailFields {
            erring_index: Some(0),
            ..FailFields::default()
        }));
        assert_eq!(first.message, "No connection to first peer found");
        assert_eq!(first.data, Some(json!({"erring_index": 0})));
        // A failed part's row keeps CLN's code, which the RPC passes on.
        use crate::lightning::payments::{DESTINATION_REFUSED, TRY_OTHER_ROUTE};
        assert_eq!(DESTINATION_REFUSED, codes::PAY_DESTINATION_PERM_FAIL);
        assert_eq!(TRY_OTHER_ROUTE, codes::PAY_TRY_OTHER_ROUTE);
    }

    #[test]
    fn records_validate_against_clns_schemas() {
        use crate::lightning::payments::samples::sendpay as sample;
        let pending = sample(PayStatus::Pending);
        let complete = sample(PayStatus::Complete);
        let failed = sample(PayStatus::Failed);
        let e = part_failure(&failed);
        let listed: Vec<Value> = [&pending, &complete, &failed]
            .iter()
            .map(|r| sendpay_json(r, true))
            .collect();
        let checks = [
            ("sendpay.json", sendpay_answer(&pending)),
            ("sendpay.json", sendpay_answer(&complete)),
            ("waitsendpay.json", sendpay_json(&complete, false)),
            ("listsendpays.json", json!({ "payments": listed })),
            (
                "notification/sendpay_success.json",
                sendpay_json(&complete, true),
            ),
            (
                "notification/sendpay_failure.json",
                json!({"code": e.code, "message": e.message, "data": e.data}),
            ),
        ];
        for (name, v) in checks {
            assert_eq!(crate::rpc::schema::errors(name, &v), None, "{name}: {v}");
        }
    }
}
