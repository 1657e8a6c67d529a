//! Invoices with CLN's params, results and error codes: `invoice` (plus our `payment_hash`
//! extension: an invoice for a hash whose preimage a plugin supplies later), `listinvoices`,
//! `waitinvoice`, `waitanyinvoice`, `delinvoice` and `delexpiredinvoice` (the `autoclean`
//! plugin cleans through them). The engine side is `lightning::invoices`.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use bitcoin::Address;
use fulgur_base::hex;
use fulgur_protocol::RpcError;
use fulgur_protocol::amount::Msat;
use fulgur_protocol::error::codes;
use lightning_invoice::Fallback;
use serde_json::{Map, Value, json};

use super::{Command, CommandFuture, Ctx, command};
use crate::chain::settings::bitcoin_network;
use crate::config::Network as ConfigNetwork;
use crate::lightning::Lightning;
use crate::lightning::invoices::{
    self, CreateError, DEFAULT_EXPIRY_SECS, DeleteError, Expose, InvoiceRecord, InvoiceRequest,
    InvoiceStatus, MAX_LABEL_LEN, Selector, WaitError,
};
use crate::node::Node;
use crate::rpc::params::{Params, opt, req};
use crate::store::StoreError;

pub const INVOICE: Command = Command::new(
    "invoice",
    &[
        req("amount_msat"),
        req("label"),
        req("description"),
        opt("expiry"),
        opt("fallbacks"),
        opt("preimage"),
        opt("exposeprivatechannels"),
        opt("cltv"),
        opt("deschashonly"),
        opt("payment_hash"),
    ],
    run_invoice,
);

pub const LISTINVOICES: Command = Command::new(
    "listinvoices",
    &[
        opt("label"),
        opt("invstring"),
        opt("payment_hash"),
        opt("offer_id"),
        opt("index"),
        opt("start"),
        opt("limit"),
    ],
    run_listinvoices,
);

pub const WAITINVOICE: Command = Command::new("waitinvoice", &[req("label")], run_waitinvoice);

pub const WAITANYINVOICE: Command = Command::new(
    "waitanyinvoice",
    &[opt("lastpay_index"), opt("timeout")],
    run_waitanyinvoice,
);

pub const DELINVOICE: Command = Command::new(
    "delinvoice",
    &[req("label"), req("status"), opt("desconly")],
    run_delinvoice,
);

pub const DELEXPIREDINVOICE: Command = Command::new(
    "delexpiredinvoice",
    &[opt("maxexpirytime")],
    run_delexpiredinvoice,
);

fn engine(node: &Node) -> Result<Arc<Lightning>, RpcError> {
    node.lightning.get().cloned().ok_or_else(|| {
        RpcError::new(
            codes::LIGHTNINGD,
            "The Lightning engine has not started yet (waiting for the Bitcoin backend)",
        )
    })
}

/// CLN's `command_fail_badparam`.
fn badparam(name: &str, v: &Value, why: &str) -> RpcError {
    RpcError::invalid_params(format!("{name}: {why}: invalid token '{v}'"))
}

fn db_error(e: StoreError) -> RpcError {
    RpcError::new(codes::LIGHTNINGD, format!("Database error: {e}"))
}

/// A label: a string, or a number kept as written.
fn label_param(p: &Params, name: &str) -> Result<Option<String>, RpcError> {
    match p.get(name) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(Value::Number(n)) => Ok(Some(n.to_string())),
        Some(v) => Err(badparam(name, v, "should be a string or number")),
    }
}

fn req_label(p: &Params) -> Result<String, RpcError> {
    label_param(p, "label")?
        .ok_or_else(|| RpcError::invalid_params("missing required parameter: label"))
}

/// 32 bytes of hex.
fn hex32(p: &Params, name: &str, why: &str) -> Result<Option<[u8; 32]>, RpcError> {
    match p.get(name) {
        None => Ok(None),
        Some(v @ Value::String(s)) => fulgur_base::unhex(s)
            .and_then(|b| <[u8; 32]>::try_from(b).ok())
            .map(Some)
            .ok_or_else(|| badparam(name, v, why)),
        Some(v) => Err(badparam(name, v, why)),
    }
}

fn u64_param(p: &Params, name: &str) -> Result<Option<u64>, RpcError> {
    p.opt_u64(name)
}

fn u32_param(p: &Params, name: &str) -> Result<Option<u32>, RpcError> {
    match p.opt_u64(name)? {
        None => Ok(None),
        Some(n) => u32::try_from(n).map(Some).map_err(|_| {
            badparam(
                name,
                p.get(name).unwrap_or(&Value::Null),
                "should be an unsigned 32 bit integer",
            )
        }),
    }
}

fn amount_param(p: &Params) -> Result<Option<u64>, RpcError> {
    let v = p
        .get("amount_msat")
        .ok_or_else(|| RpcError::invalid_params("missing required parameter: amount_msat"))?;
    if v == "any" {
        return Ok(None);
    }
    match Msat::from_json(v) {
        Ok(Msat(n)) if n > 0 => Ok(Some(n)),
        _ => Err(badparam(
            "amount_msat",
            v,
            "should be positive msat or 'any'",
        )),
    }
}

/// A fallback address as a BOLT 11 fallback field, with CLN's errors.
fn fallback(s: &str, network: ConfigNetwork) -> Result<Fallback, RpcError> {
    let addr = Address::from_str(s)
        .map_err(|_| RpcError::new(codes::LIGHTNINGD, "Fallback address not valid"))?
        .require_network(bitcoin_network(network))
        .map_err(|_| {
            RpcError::new(
                codes::LIGHTNINGD,
                format!(
                    "Fallback address does not match our network {}",
                    network.as_str()
                ),
            )
        })?;
    crate::lightning::invoices::fallback_of(&addr)
        .ok_or_else(|| RpcError::new(codes::LIGHTNINGD, "Fallback address not valid"))
}

fn fallbacks_param(p: &Params, network: ConfigNetwork) -> Result<Vec<Fallback>, RpcError> {
    match p.get("fallbacks") {
        None => Ok(vec![]),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| match v {
                Value::String(s) => fallback(s, network),
                other => Err(RpcError::new(
                    codes::LIGHTNINGD,
                    format!("Fallback address not valid: {other}"),
                )),
            })
            .collect(),
        Some(v) => Err(badparam("fallbacks", v, "should be an array")),
    }
}

fn scid(v: &Value) -> Option<u64> {
    v.as_str().and_then(crate::lightning::parse_scid)
}

fn expose_param(p: &Params) -> Result<Expose, RpcError> {
    let name = "exposeprivatechannels";
    match p.get(name) {
        None => Ok(Expose::Default),
        Some(Value::Bool(true)) => Ok(Expose::All),
        Some(Value::Bool(false)) => Ok(Expose::NoPrivate),
        Some(Value::String(s)) if s == "true" => Ok(Expose::All),
        Some(Value::String(s)) if s == "false" => Ok(Expose::NoPrivate),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| scid(v).ok_or_else(|| badparam(name, v, "should be a short channel id")))
            .collect::<Result<Vec<_>, _>>()
            .map(Expose::Only),
        Some(v) => scid(v)
            .map(|s| Expose::Only(vec![s]))
            .ok_or_else(|| badparam(name, v, "should be a short_channel_id")),
    }
}

pub(super) fn parse_invoice_request(
    p: &Params,
    network: ConfigNetwork,
) -> Result<InvoiceRequest, RpcError> {
    let amount_msat = amount_param(p)?;
    let label = req_label(p)?;
    let description = p.str("description")?;
    let expiry_secs = u64_param(p, "expiry")?.unwrap_or(DEFAULT_EXPIRY_SECS);
    let fallbacks = fallbacks_param(p, network)?;
    let preimage = hex32(p, "preimage", "should be 64 hex digits")?;
    let expose = expose_param(p)?;
    let cltv = u32_param(p, "cltv")?;
    let deschashonly = p.opt_bool("deschashonly")?.unwrap_or(false);
    let payment_hash = hex32(p, "payment_hash", "should be a 32 byte hex value")?;
    if preimage.is_some() && payment_hash.is_some() {
        return Err(RpcError::invalid_params(
            "Can only specify one of {preimage} or {payment_hash}",
        ));
    }
    if label.len() > MAX_LABEL_LEN {
        return Err(RpcError::invalid_params(format!(
            "Label '{label}' over {MAX_LABEL_LEN} bytes"
        )));
    }
    Ok(InvoiceRequest {
        amount_msat,
        label,
        description,
        expiry_secs,
        fallbacks,
        preimage,
        payment_hash,
        expose,
        cltv,
        deschashonly,
    })
}

fn run_invoice(ctx: Ctx, p: Params) -> CommandFuture {
    command(async move {
        let network = ctx.node.config.network;
        let mut request = parse_invoice_request(&p, network)?;
        // No `cltv`: `--cltv-final`'s, as in CLN (already raised to LDK's minimum).
        request.cltv = request.cltv.or(Some(ctx.node.config.cltv_final));
        let l = engine(&ctx.node)?;
        let created = l.create_invoice(request).await.map_err(|e| match e {
            CreateError::DuplicateLabel(label) => RpcError::new(
                codes::INVOICE_LABEL_ALREADY_EXISTS,
                format!("Duplicate label '{label}'"),
            ),
            CreateError::DuplicateHash => RpcError::new(
                codes::INVOICE_PREIMAGE_ALREADY_EXISTS,
                "preimage already used",
            ),
            CreateError::NoUsableHints => RpcError::new(
                codes::INVOICE_HINTS_GAVE_NO_ROUTES,
                "None of those hints were suitable local channels",
            ),
            CreateError::Invalid(m) => RpcError::invalid_params(m),
            CreateError::Failed(m) => RpcError::new(codes::LIGHTNINGD, m),
        })?;
        let r = &created.record;
        let mut out = Map::new();
        out.insert(
            "payment_hash".into(),
            json!(fulgur_base::hex(&r.payment_hash)),
        );
        out.insert("expires_at".into(), json!(r.expires_at));
        out.insert("bolt11".into(), json!(r.bolt11));
        out.insert(
            "payment_secret".into(),
            json!(fulgur_base::hex(&r.payment_secret)),
        );
        out.insert("created_index".into(), json!(r.created_index));
        for (k, v) in created.warnings {
            out.insert(k.into(), json!(v));
        }
        Ok(Value::Object(out))
    })
}

fn list_json(v: Vec<InvoiceRecord>) -> Value {
    json!({"invoices": v.iter().map(invoice_json).collect::<Vec<_>>()})
}

fn run_listinvoices(ctx: Ctx, p: Params) -> CommandFuture {
    command(async move {
        let label = label_param(&p, "label")?;
        let invstring = p.opt_str("invstring")?;
        let hash = hex32(&p, "payment_hash", "should be a 32 byte hex value")?;
        let offer = hex32(&p, "offer_id", "should be a 32 byte hex value")?;
        let index = match p.opt_str("index")?.as_deref() {
            None => None,
            Some("created") => Some(false),
            Some("updated") => Some(true),
            Some(_) => {
                return Err(badparam(
                    "index",
                    p.get("index").unwrap_or(&Value::Null),
                    "unknown index",
                ));
            }
        };
        let start = u64_param(&p, "start")?.unwrap_or(0);
        let limit = u32_param(&p, "limit")?;
        let given = [
            label.is_some(),
            invstring.is_some(),
            hash.is_some(),
            offer.is_some(),
        ];
        if given.iter().filter(|g| **g).count() > 1 {
            return Err(RpcError::invalid_params(
                "Can only specify one of {label}, {invstring}, {payment_hash} or {offer_id}",
            ));
        }
        crate::rpc::params::paging_needs_index(start, limit, index.is_some())?;
        let sel = if let Some(l) = label {
            Selector::Label(l)
        } else if let Some(s) = invstring {
            Selector::Hash(invstring_hash(&s)?)
        } else if let Some(h) = hash {
            Selector::Hash(h)
        } else if offer.is_some() {
            // No BOLT 12 invoices (yet): none belongs to an offer.
            return Ok(list_json(vec![]));
        } else {
            Selector::All {
                updated: index.unwrap_or(false),
                start,
                limit,
            }
        };
        let found = match ctx.node.lightning.get() {
            Some(l) => l.invoices().list(sel).await,
            // Without the engine the table still answers (nobody can be waiting).
            None => invoices::with_invoices(&ctx.node.store, &ctx.node.clock, move |c, _| {
                Ok(invoices::list(c, &sel)?)
            })
            .await
            .map(|(v, _)| v),
        }
        .map_err(db_error)?;
        Ok(list_json(found))
    })
}

/// The payment hash of a BOLT 11 string.
fn invstring_hash(s: &str) -> Result<[u8; 32], RpcError> {
    let bad = || RpcError::invalid_params("Invalid invstring");
    let s = s
        .strip_prefix("lightning:")
        .or_else(|| s.strip_prefix("LIGHTNING:"))
        .unwrap_or(s);
    let raw = lightning_invoice::SignedRawBolt11Invoice::from_str(s).map_err(|_| bad())?;
    raw.raw_invoice()
        .payment_hash()
        .map(|h| h.0)
        .ok_or_else(bad)
}

fn run_waitinvoice(ctx: Ctx, p: Params) -> CommandFuture {
    command(async move {
        let label = req_label(&p)?;
        let l = engine(&ctx.node)?;
        match l.invoices().wait(&label).await {
            Ok(inv) => Ok(invoice_json(&inv)),
            Err(e) => Err(wait_error(e)),
        }
    })
}

/// CLN's invoice object (listinvoices, waitinvoice, waitanyinvoice, delinvoice).
pub(crate) fn invoice_json(inv: &InvoiceRecord) -> Value {
    let mut m = Map::new();
    m.insert("label".into(), json!(inv.label));
    m.insert("bolt11".into(), json!(inv.bolt11));
    m.insert("payment_hash".into(), json!(hex(&inv.payment_hash)));
    if let Some(a) = inv.amount_msat {
        m.insert("amount_msat".into(), json!(a));
    }
    m.insert("status".into(), json!(inv.status.as_str()));
    if inv.status == InvoiceStatus::Paid {
        if let Some(p) = inv.pay_index {
            m.insert("pay_index".into(), json!(p));
        }
        if let Some(a) = inv.amount_received_msat {
            m.insert("amount_received_msat".into(), json!(a));
        }
        if let Some(t) = inv.paid_at {
            m.insert("paid_at".into(), json!(t));
        }
        if let Some(p) = &inv.preimage {
            m.insert("payment_preimage".into(), json!(hex(p)));
        }
        if let Some((txid, n)) = inv
            .paid_outpoint
            .as_deref()
            .and_then(|o| o.rsplit_once(':'))
            .and_then(|(t, n)| Some((t, n.parse::<u32>().ok()?)))
        {
            m.insert("paid_outpoint".into(), json!({"txid": txid, "outnum": n}));
        }
    }
    if let Some(d) = &inv.description {
        m.insert("description".into(), json!(d));
    }
    m.insert("expires_at".into(), json!(inv.expires_at));
    m.insert("created_index".into(), json!(inv.created_index));
    if let Some(u) = inv.updated_index {
        m.insert("updated_index".into(), json!(u));
    }
    Value::Object(m)
}

fn wait_error(e: WaitError) -> RpcError {
    match e {
        WaitError::NotFound => RpcError::new(codes::LIGHTNINGD, "Label not found"),
        WaitError::Deleted => RpcError::new(codes::LIGHTNINGD, "Invoice deleted during wait"),
        WaitError::Expired(inv) => RpcError::new(
            codes::INVOICE_EXPIRED_DURING_WAIT,
            "invoice expired during wait",
        )
        .with_data(invoice_json(&inv)),
        WaitError::TimedOut => RpcError::new(
            codes::INVOICE_WAIT_TIMED_OUT,
            "Timed out while waiting for invoice to be paid",
        ),
        WaitError::Stopped => RpcError::new(codes::LIGHTNINGD_SHUTDOWN, "Shutting down"),
        WaitError::Store(e) => db_error(e),
    }
}

fn run_waitanyinvoice(ctx: Ctx, p: Params) -> CommandFuture {
    command(async move {
        let last = u64_param(&p, "lastpay_index")?.unwrap_or(0);
        let timeout = u64_param(&p, "timeout")?.map(Duration::from_secs);
        let l = engine(&ctx.node)?;
        match l.invoices().wait_any(last, timeout).await {
            Ok(inv) => Ok(invoice_json(&inv)),
            Err(e) => Err(wait_error(e)),
        }
    })
}

fn run_delinvoice(ctx: Ctx, p: Params) -> CommandFuture {
    command(async move {
        let label = req_label(&p)?;
        let status = p.str("status")?;
        let desconly = p.opt_bool("desconly")?.unwrap_or(false);
        let l = engine(&ctx.node)?;
        // CLN takes any string: one that names no status matches no invoice.
        match l
            .invoices()
            .delete(&label, InvoiceStatus::parse(&status), desconly)
            .await
        {
            Ok(inv) => Ok(invoice_json(&inv)),
            Err(DeleteError::NotFound) => {
                Err(RpcError::new(codes::INVOICE_NOT_FOUND, "Unknown invoice"))
            }
            Err(DeleteError::Status(current)) => Err(RpcError::new(
                codes::INVOICE_STATUS_UNEXPECTED,
                format!("Invoice status is {current} not {status}"),
            )
            .with_data(json!({"current_status": current.as_str(), "expected_status": status}))),
            Err(DeleteError::NoDescription) => Err(RpcError::new(
                INVOICE_NO_DESCRIPTION,
                "Invoice description already removed",
            )),
            Err(DeleteError::Store(e)) => Err(db_error(e)),
        }
    })
}

/// CLN's `INVOICE_NO_DESCRIPTION` (`delinvoice desconly` on an invoice without one).
const INVOICE_NO_DESCRIPTION: i64 = 908;

fn run_delexpiredinvoice(ctx: Ctx, p: Params) -> CommandFuture {
    command(async move {
        let max = u64_param(&p, "maxexpirytime")?;
        let l = engine(&ctx.node)?;
        l.invoices().delete_expired(max).await.map_err(db_error)?;
        Ok(json!({}))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invoice_json_shows_payment_fields_only_once_paid() {
        let mut inv = InvoiceRecord {
            created_index: 2,
            updated_index: None,
            label: "l".into(),
            bolt11: "lnbcrt1".into(),
            payment_hash: [1; 32],
            payment_secret: [2; 32],
            preimage: Some([3; 32]),
            amount_msat: Some(1000),
            description: Some("d".into()),
            expires_at: 99,
            cltv: 18,
            status: InvoiceStatus::Unpaid,
            pay_index: None,
            amount_received_msat: None,
            paid_at: None,
            paid_outpoint: None,
        };
        let j = invoice_json(&inv);
        assert_eq!(j["status"], "unpaid");
        assert!(j.get("payment_preimage").is_none(), "{j}");
        assert!(j.get("updated_index").is_none(), "{j}");
        inv.status = InvoiceStatus::Paid;
        inv.pay_index = Some(1);
        inv.amount_received_msat = Some(1000);
        inv.paid_at = Some(50);
        inv.updated_index = Some(3);
        let j = invoice_json(&inv);
        assert_eq!(j["status"], "paid");
        assert_eq!(j["payment_preimage"], hex(&[3; 32]));
        assert_eq!(j["pay_index"], 1);
        assert_eq!(j["updated_index"], 3);
        assert_eq!(
            crate::rpc::schema::errors("listinvoices.json", &json!({"invoices": [j]})),
            None
        );
    }
}
