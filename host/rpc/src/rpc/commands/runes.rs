//! `createrune`, `checkrune`, `showrunes`, `blacklistrune`: CLN's runes with its params,
//! results, errors and codes. The runes themselves are the engine's
//! (`fulgur_engine::runes` for the format and evaluation, `runebook` for the node's runes);
//! this file reads parameters, gives `checkrune` the caller's parameters as rune fields
//! (`pnameX`, `parrN`, `pinv...`) and writes CLN's JSON.

use std::collections::HashMap;

use fulgur_protocol::RpcError;
use fulgur_protocol::error::codes;
use serde_json::{Map, Value, json};

use super::pay::{bad_param, opt_pubkey};
use super::{Command, CommandFuture, Ctx, command};
use crate::lightning::runebook::{Check, Refusal, ShownRune};
use crate::lightning::runes::{
    Alternative, Condition, FieldValue, MAX_BLACKLIST, ParamFields, Restriction, Rune, joined,
};
use crate::rpc::params::{ParamSpec, Params, opt, req};

const CREATE_PARAMS: &[ParamSpec] = &[opt("rune"), opt("restrictions")];
const CHECK_PARAMS: &[ParamSpec] = &[req("rune"), opt("nodeid"), opt("method"), opt("params")];

pub const CREATERUNE: Command = Command::new("createrune", CREATE_PARAMS, run_createrune);

pub const CHECKRUNE: Command = Command::new("checkrune", CHECK_PARAMS, run_checkrune);

pub const SHOWRUNES: Command = Command::new("showrunes", &[opt("rune")], run_showrunes);

pub const BLACKLISTRUNE: Command = Command::new(
    "blacklistrune",
    &[opt("start"), opt("end"), opt("relist")],
    run_blacklistrune,
);

const UNRESTRICTED_WARNING: &str = "WARNING: This rune has no restrictions! Anyone who has access to this rune could drain funds from your node. Be careful when giving this to apps that you don't trust. Consider using the restrictions parameter to only allow access to specific rpc methods.";

fn store_err(e: crate::store::StoreError) -> RpcError {
    RpcError::lightningd(e.to_string())
}

/// The `rune` parameter as CLN's `param_rune` reads it: its text and the rune, which must
/// have a numeric unique id.
pub(crate) fn rune_param(p: &Params, name: &str) -> Result<Option<(String, Rune)>, RpcError> {
    let Some(v) = p.get(name) else {
        return Ok(None);
    };
    let bad = |why: &str| match v {
        Value::String(s) => {
            RpcError::invalid_params(format!("{name}: {why}: invalid token '\"{s}\"'"))
        }
        other => bad_param(name, why, other),
    };
    let text = v.as_str().ok_or_else(|| bad("should be base64 string"))?;
    let rune = Rune::from_base64(text).map_err(|_| bad("should be base64 string"))?;
    if rune.unique_id_num().is_none() {
        return Err(bad("should have valid numeric unique_id"));
    }
    Ok(Some((text.to_string(), rune)))
}

/// `readonly`: `method^list|method^get|method=summary` and `method/listdatastore`.
fn readonly() -> Vec<Restriction> {
    let alt = Alternative::new;
    vec![
        Restriction {
            alternatives: vec![
                alt("method", Condition::Begins, "list"),
                alt("method", Condition::Begins, "get"),
                alt("method", Condition::Equal, "summary"),
            ],
        },
        Restriction {
            alternatives: vec![alt("method", Condition::NotEqual, "listdatastore")],
        },
    ]
}

/// The `restrictions` parameter: `"readonly"`, or an array of restrictions, each an array
/// of `fieldCONDvalue` strings (values taken as written).
pub(crate) fn restrictions_param(p: &Params) -> Result<Vec<Restriction>, RpcError> {
    let Some(v) = p.get("restrictions") else {
        return Ok(vec![]);
    };
    let invalid = |tok: &Value| {
        bad_param(
            "restrictions",
            "not a valid restriction (should be array)",
            tok,
        )
    };
    let one = |tok: &Value| -> Result<Restriction, RpcError> {
        let alts = tok
            .as_array()
            .filter(|a| !a.is_empty())
            .ok_or_else(|| invalid(tok))?;
        let alternatives = alts
            .iter()
            .map(|a| a.as_str().and_then(Alternative::from_plain))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| invalid(tok))?;
        Ok(Restriction { alternatives })
    };
    match v {
        Value::String(s) if s == "readonly" => Ok(readonly()),
        Value::Array(items) => items.iter().map(one).collect(),
        other => Ok(vec![one(other)?]),
    }
}

fn created(rune: &Rune) -> Value {
    let mut m = Map::new();
    m.insert("rune".into(), json!(rune.to_base64()));
    m.insert(
        "unique_id".into(),
        json!(rune.unique_id().unwrap_or_default()),
    );
    if rune.restrictions().len() <= 1 {
        m.insert(
            "warning_unrestricted_rune".into(),
            json!(UNRESTRICTED_WARNING),
        );
    }
    Value::Object(m)
}

/// `createrune [rune] [restrictions]`: restricts `rune` further (any rune, not stored), or
/// makes and stores a new one with the next unique id.
fn run_createrune(ctx: Ctx, p: Params) -> CommandFuture {
    command(async move {
        let given = rune_param(&p, "rune")?;
        let restrictions = restrictions_param(&p)?;
        let refused = |e: crate::lightning::runes::FormatError| {
            RpcError::invalid_params(format!("restrictions: not a valid restriction: {e}"))
        };
        match given {
            Some((_, mut rune)) => {
                for r in restrictions {
                    rune.add_restriction(r).map_err(refused)?;
                }
                Ok(created(&rune))
            }
            None => {
                let rune = ctx
                    .node
                    .runes
                    .create(restrictions)
                    .await
                    .map_err(store_err)?
                    .map_err(refused)?;
                Ok(created(&rune))
            }
        }
    })
}

/// The caller's parameters as CLN's rune fields: `pnameNAME` (also with the name's
/// punctuation removed) for an object, `parrN` for an array. A string is compared as it
/// appears in JSON (escapes kept, as CLN compares the request's text), an integer as an
/// integer, anything else as its compact JSON.
pub(crate) struct JsonFields {
    fields: HashMap<String, FieldValue>,
}

impl JsonFields {
    pub(crate) fn new(params: Option<&Value>) -> JsonFields {
        let mut fields = HashMap::new();
        match params {
            Some(Value::Object(m)) => {
                for (k, v) in m {
                    let value = field_value(v);
                    fields
                        .entry(format!("pname{k}"))
                        .or_insert_with(|| value.clone());
                    let bare: String = k.chars().filter(|c| !c.is_ascii_punctuation()).collect();
                    fields.entry(format!("pname{bare}")).or_insert(value);
                }
            }
            Some(Value::Array(items)) => {
                for (i, v) in items.iter().enumerate() {
                    fields.insert(format!("parr{i}"), field_value(v));
                }
            }
            _ => {}
        }
        JsonFields { fields }
    }

    /// `pinvPARAM_amount`, `_description`, `_node`: that field of the invoice in `pnamePARAM`.
    fn invoice_field(&self, alt: &Alternative) -> Result<FieldValue, String> {
        let field = alt.field.strip_prefix("pinv").unwrap_or_default();
        let (param, which) = ["_amount", "_description", "_node"]
            .iter()
            .find_map(|suffix| field.strip_suffix(suffix).map(|p| (p, *suffix)))
            .ok_or_else(|| format!("Unknown invoice field {field}"))?;
        let invoice = match self.fields.get(&format!("pname{param}")) {
            Some(FieldValue::Str(s)) => s.clone(),
            Some(FieldValue::Int(i)) => i.to_string(),
            _ => return Err(format!("Unknown invoice parameter {param}")),
        };
        let s = invoice
            .strip_prefix("lightning:")
            .or_else(|| invoice.strip_prefix("LIGHTNING:"))
            .unwrap_or(&invoice);
        if s.to_ascii_lowercase().starts_with("lni") {
            return Err("Invalid invoice: bolt12 invoices are not supported yet".into());
        }
        let decoded =
            super::decode::decode_bolt11(s).map_err(|e| format!("Invalid invoice: {e}"))?;
        Ok(match which {
            "_amount" => decoded
                .get("amount_msat")
                .and_then(Value::as_i64)
                .map_or(FieldValue::Missing, FieldValue::Int),
            "_description" => decoded
                .get("description")
                .and_then(Value::as_str)
                .map_or(FieldValue::Missing, |d| FieldValue::Str(d.into())),
            _ => decoded
                .get("payee")
                .and_then(Value::as_str)
                .map_or(FieldValue::Missing, |d| FieldValue::Str(d.into())),
        })
    }
}

fn field_value(v: &Value) -> FieldValue {
    match v {
        Value::Number(n) if n.as_i64().is_some() => FieldValue::Int(n.as_i64().unwrap_or(0)),
        Value::String(s) => {
            let quoted = serde_json::to_string(s).unwrap_or_default();
            let inner = quoted
                .strip_prefix('"')
                .and_then(|q| q.strip_suffix('"'))
                .unwrap_or(s);
            FieldValue::Str(inner.to_string())
        }
        other => FieldValue::Str(other.to_string()),
    }
}

impl ParamFields for JsonFields {
    fn field(&self, alt: &Alternative) -> Result<FieldValue, String> {
        if alt.field.starts_with("pinv") {
            return self.invoice_field(alt);
        }
        Ok(self
            .fields
            .get(&alt.field)
            .cloned()
            .unwrap_or(FieldValue::Missing))
    }
}

/// `checkrune`'s parameters after CLN's checks: the rune, the node id, the method and the
/// method's parameters.
pub(crate) struct CheckArgs {
    rune: Rune,
    peer: Option<String>,
    method: Option<String>,
    params: Option<Value>,
}

pub(crate) fn check_args(p: &Params) -> Result<CheckArgs, RpcError> {
    let (_, rune) = rune_param(p, "rune")?
        .ok_or_else(|| RpcError::invalid_params("missing required parameter: rune"))?;
    let peer = opt_pubkey(p, "nodeid")?.map(|k| k.to_string());
    let method = p.opt_str("method")?;
    let params = match p.get("params") {
        None => None,
        Some(v @ (Value::Object(_) | Value::Array(_))) => Some(v.clone()),
        Some(v) => return Err(bad_param("params", "must be object or array", v)),
    };
    Ok(CheckArgs {
        rune,
        peer,
        method,
        params,
    })
}

/// `checkrune rune [nodeid] [method] [params]`: `{"valid": true}` or CLN's refusal.
fn run_checkrune(ctx: Ctx, p: Params) -> CommandFuture {
    command(async move {
        let args = check_args(&p)?;
        let fields = JsonFields::new(args.params.as_ref());
        let pnum = match &args.params {
            Some(Value::Object(m)) => m.len(),
            Some(Value::Array(a)) => a.len(),
            _ => 0,
        };
        let check = Check {
            peer: args.peer.as_deref(),
            method: args.method.as_deref(),
            pnum: i64::try_from(pnum).unwrap_or(i64::MAX),
            params: &fields,
            now_nanos: ctx.node.clock.unix_nanos(),
        };
        match ctx
            .node
            .runes
            .check(&args.rune, check)
            .await
            .map_err(store_err)?
        {
            Ok(()) => Ok(json!({"valid": true})),
            Err(refusal) => Err(refusal_error(refusal)),
        }
    })
}

/// CLN's code and message for each refusal.
fn refusal_error(r: Refusal) -> RpcError {
    match r {
        Refusal::Blacklisted => {
            RpcError::new(codes::RUNE_BLACKLISTED, "Not authorized: Blacklisted rune")
        }
        Refusal::NotAuthorized(why) => {
            RpcError::new(codes::RUNE_NOT_AUTHORIZED, format!("Not authorized: {why}"))
        }
        Refusal::NotPermitted(why) => {
            RpcError::new(codes::RUNE_NOT_PERMITTED, format!("Not permitted: {why}"))
        }
    }
}

/// One rune as CLN's `showrunes` writes it: `stored`, `blacklisted` and `our_rune` only
/// when unusual, `last_used` (seconds, to the nanosecond) once used.
fn shown_json(s: &ShownRune) -> Value {
    let mut m = Map::new();
    m.insert("rune".into(), json!(s.text));
    if !s.stored {
        m.insert("stored".into(), json!(false));
    }
    if s.blacklisted {
        m.insert("blacklisted".into(), json!(true));
    }
    if !s.ours {
        m.insert("our_rune".into(), json!(false));
    }
    if let Some(n) = s.last_used_nanos.filter(|n| *n >= 1_000_000_000) {
        m.insert("last_used".into(), json!(n as f64 / 1e9));
    }
    m.insert(
        "unique_id".into(),
        json!(s.rune.unique_id().unwrap_or_default()),
    );
    let restrictions: Vec<&Restriction> = s
        .rune
        .restrictions()
        .iter()
        .enumerate()
        .filter(|(i, r)| !(*i == 0 && r.is_unique_id()))
        .map(|(_, r)| r)
        .collect();
    let list: Vec<Value> = restrictions
        .iter()
        .map(|r| {
            let alternatives: Vec<Value> = r
                .alternatives
                .iter()
                .map(|a| {
                    json!({
                        "fieldname": a.field,
                        "value": a.value,
                        "condition": a.condition.as_char().to_string(),
                        "english": a.english(),
                    })
                })
                .collect();
            json!({"alternatives": alternatives, "english": r.english()})
        })
        .collect();
    m.insert("restrictions".into(), Value::Array(list));
    let english = joined(restrictions.iter().map(|r| r.english()), " AND ");
    m.insert("restrictions_as_english".into(), json!(english));
    Value::Object(m)
}

/// `showrunes [rune]`: that rune, or every stored one.
fn run_showrunes(ctx: Ctx, p: Params) -> CommandFuture {
    command(async move {
        let given = rune_param(&p, "rune")?;
        let shown = ctx.node.runes.show(given).await.map_err(store_err)?;
        Ok(json!({"runes": shown.iter().map(shown_json).collect::<Vec<_>>()}))
    })
}

/// `blacklistrune`'s range after CLN's checks: `None` to list.
pub(crate) fn blacklist_args(p: &Params) -> Result<Option<(u64, u64, bool)>, RpcError> {
    let start = p.opt_u64("start")?;
    let end = p.opt_u64("end")?;
    let relist = p.opt_bool("relist")?.unwrap_or(false);
    let (start, end) = match (start, end) {
        (None, Some(_)) => {
            return Err(RpcError::invalid_params(
                "Can not specify end without start",
            ));
        }
        (None, None) => return Ok(None),
        (Some(s), e) => (s, e.unwrap_or(s)),
    };
    if end >= MAX_BLACKLIST {
        return Err(RpcError::invalid_params(format!(
            "Cannot blacklist beyond {MAX_BLACKLIST}"
        )));
    }
    Ok(Some((start, end, relist)))
}

/// `blacklistrune [start] [end] [relist]`: the blacklist after blacklisting (or, with
/// `relist`, un-blacklisting) `start..=end`; without `start`, the blacklist.
fn run_blacklistrune(ctx: Ctx, p: Params) -> CommandFuture {
    command(async move {
        let change = blacklist_args(&p)?;
        let ranges = ctx.node.runes.blacklist(change).await.map_err(store_err)?;
        Ok(json!({
            "blacklist": ranges
                .iter()
                .map(|(s, e)| json!({"start": s, "end": e}))
                .collect::<Vec<_>>()
        }))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rpc::params::bind;

    fn bound(spec: &Command, v: Value) -> Params {
        bind(spec.params, &v, false).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn restrictions_as_cln_reads_them() {
        let p = bound(&CREATERUNE, json!({"restrictions": "readonly"}));
        let r = restrictions_param(&p).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            r.iter().map(Restriction::encode).collect::<Vec<_>>(),
            [
                "method^list|method^get|method=summary",
                "method/listdatastore"
            ]
        );
        let p = bound(
            &CREATERUNE,
            json!({"restrictions": [["a=1", "b<2"], ["c!"]]}),
        );
        assert_eq!(restrictions_param(&p).map(|r| r.len()).ok(), Some(2));
        for bad in [
            json!([["=x"]]),
            json!([["method"]]),
            json!(["method=x"]),
            json!([[]]),
            json!([[5]]),
            json!("writeonly"),
        ] {
            let p = bound(&CREATERUNE, json!({ "restrictions": bad }));
            let e = restrictions_param(&p).err().map(|e| (e.code, e.message));
            assert!(
                e.as_ref()
                    .is_some_and(|(c, m)| *c == -32602 && m.contains("not a valid restriction")),
                "{bad}: {e:?}"
            );
        }
    }

    #[test]
    fn param_fields_as_clns_cache() {
        let f = JsonFields::new(Some(
            &json!({"amount_msat": 5, "d": "a\"b", "x": 1.5, "o": {"k": true}}),
        ));
        let get = |name: &str| {
            f.field(&Alternative::new(name, Condition::Equal, ""))
                .unwrap_or_else(|e| panic!("{e}"))
        };
        assert_eq!(get("pnameamount_msat"), FieldValue::Int(5));
        assert_eq!(get("pnameamountmsat"), FieldValue::Int(5));
        assert_eq!(get("pnamed"), FieldValue::Str("a\\\"b".into()));
        assert_eq!(get("pnamex"), FieldValue::Str("1.5".into()));
        assert_eq!(get("pnameo"), FieldValue::Str("{\"k\":true}".into()));
        assert_eq!(get("pnamey"), FieldValue::Missing);
        let a = JsonFields::new(Some(&json!(["xxx", 12000])));
        let got = a.field(&Alternative::new("parr1", Condition::Equal, ""));
        assert_eq!(got, Ok(FieldValue::Int(12000)));
        let inv = |field: &str| {
            a.field(&Alternative::new(field, Condition::Equal, ""))
                .err()
                .unwrap_or_default()
        };
        assert_eq!(inv("pinvbolt11_size"), "Unknown invoice field bolt11_size");
        assert_eq!(inv("pinvbolt11_amount"), "Unknown invoice parameter bolt11");
        let b = JsonFields::new(Some(&json!({"bolt11": "xxx"})));
        assert!(
            b.field(&Alternative::new(
                "pinvbolt11_amount",
                Condition::Equal,
                "1"
            ))
            .err()
            .is_some_and(|e| e.starts_with("Invalid invoice: "))
        );
    }

    #[test]
    fn parameter_errors_are_clns() {
        let msg = |cmd: &Command, v: Value, f: fn(&Params) -> Result<(), RpcError>| {
            f(&bound(cmd, v)).err().map(|e| (e.code, e.message))
        };
        let check = |p: &Params| check_args(p).map(drop);
        assert_eq!(
            msg(&CHECKRUNE, json!({"rune": "!!"}), check),
            Some((
                -32602,
                "rune: should be base64 string: invalid token '\"!!\"'".into()
            ))
        );
        // CLN's test_nonnumeric_uniqueid: "zero".
        assert_eq!(
            msg(
                &CHECKRUNE,
                json!({"rune": "pX1h8z05kg0WZqe0ogo_8MHOa7-8gVZNXTckyyLKuLk9emVybw=="}),
                check
            )
            .map(|(_, m)| m.contains("should have valid numeric unique_id")),
            Some(true)
        );
        let ok_rune = Rune::master(&[1; 32]).derive(0).to_base64();
        assert_eq!(
            msg(&CHECKRUNE, json!({"rune": ok_rune, "params": 5}), check),
            Some((
                -32602,
                "params: must be object or array: invalid token '5'".into()
            ))
        );
        let bl = |p: &Params| blacklist_args(p).map(drop);
        assert_eq!(
            msg(&BLACKLISTRUNE, json!({"end": 5}), bl),
            Some((-32602, "Can not specify end without start".into()))
        );
        assert_eq!(
            msg(&BLACKLISTRUNE, json!({"start": 100_000_000}), bl),
            Some((-32602, "Cannot blacklist beyond 100000000".into()))
        );
        assert_eq!(
            blacklist_args(&bound(&BLACKLISTRUNE, json!([3]))).ok(),
            Some(Some((3, 3, false)))
        );
    }

    #[test]
    fn refusals_carry_clns_codes() {
        let e = refusal_error(Refusal::Blacklisted);
        assert_eq!(
            (e.code, e.message.as_str()),
            (1503, "Not authorized: Blacklisted rune")
        );
        assert_eq!(refusal_error(Refusal::NotAuthorized("x")).code, 1501);
        let e = refusal_error(Refusal::NotPermitted("too soon".into()));
        assert_eq!(
            (e.code, e.message.as_str()),
            (1502, "Not permitted: too soon")
        );
    }

    #[test]
    fn shown_runes_skip_the_unique_id_and_say_it_in_english() {
        let mut rune = Rune::master(&[1; 32]).derive(7);
        for r in ["method^list|method^get", "time<5"] {
            rune.add_restriction(Restriction::parse(r).unwrap_or_else(|e| panic!("{e}")))
                .unwrap_or_else(|e| panic!("{e}"));
        }
        let shown = ShownRune {
            text: rune.to_base64(),
            rune,
            stored: false,
            blacklisted: true,
            ours: false,
            last_used_nanos: Some(1_700_000_000_500_000_000),
        };
        let v = shown_json(&shown);
        assert_eq!(v["unique_id"], "7");
        assert_eq!(v["stored"], false);
        assert_eq!(v["blacklisted"], true);
        assert_eq!(v["our_rune"], false);
        assert_eq!(v["last_used"], 1_700_000_000.5);
        assert_eq!(v["restrictions"].as_array().map(Vec::len), Some(2));
        assert_eq!(
            v["restrictions"][0]["alternatives"][1],
            json!({"fieldname": "method", "value": "get", "condition": "^", "english": "method starts with get"})
        );
        assert_eq!(
            v["restrictions_as_english"],
            "method starts with list OR method starts with get AND time < 5"
        );
    }
}
