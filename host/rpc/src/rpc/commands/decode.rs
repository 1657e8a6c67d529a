//! `decode`: what a BOLT 11 invoice or a BOLT 12 offer, invoice request or invoice says,
//! with CLN's field names and types (decode.json's branches). BOLT 12 strings are read by
//! [`fulgur_engine::bolt12`]; what CLN refuses is its `-32602` "string: ...: invalid token"
//! error with CLN's reason, and what CLN shows with `valid: false` carries CLN's
//! `warning_*` fields. Runes and emergency-recover blobs are not decoded yet: like anything
//! unparsable they get the same error.
//!
//! Parsing is lightning-invoice's [`SignedRawBolt11Invoice`] plus our own signature check,
//! not [`lightning_invoice::Bolt11Invoice`]: the latter refuses invoices without a payment
//! secret or with unknown even feature bits, which CLN's `decode` still shows (paying them
//! is refused later, by `pay`). Like CLN, a bad signature is an error, never `valid: false`
//! (decode.json has no `valid: false` branch for bolt11).

use std::str::FromStr;

use bitcoin::hashes::Hash;
use bitcoin::hex::DisplayHex;
use bitcoin::{Address, Network, ScriptBuf, WitnessVersion};
use fulgur_engine::bolt12;
use fulgur_protocol::RpcError;
use lightning_invoice::{Currency, Fallback, RawTaggedField, SignedRawBolt11Invoice};
use serde_json::{Map, Value, json};

use super::{Command, CommandFuture, Ctx, command};
use crate::rpc::params::{Params, req};

pub const DECODE: Command = Command::new("decode", &[req("string")], run_decode);

/// BOLT 11: defaults when `x` and `c` are absent.
const DEFAULT_EXPIRY: u64 = 3600;
const DEFAULT_MIN_FINAL_CLTV: u64 = 18;

fn run_decode(_ctx: Ctx, p: Params) -> CommandFuture {
    command(async move { p.str("string").and_then(|s| decode(&s)) })
}

/// CLN's `command_fail_badparam` shape for the `string` parameter.
fn bad(given: &str, why: &str) -> RpcError {
    RpcError::invalid_params(format!("string: {why}: invalid token '\"{given}\"'"))
}

/// Decodes `given` (the `string` parameter) into decode's result object.
pub fn decode(given: &str) -> Result<Value, RpcError> {
    let s = given
        .strip_prefix("lightning:")
        .or_else(|| given.strip_prefix("LIGHTNING:"))
        .unwrap_or(given);
    let lower = s.to_ascii_lowercase();
    if ["lno1", "lni1", "lnr1"]
        .iter()
        .any(|p| lower.starts_with(p))
    {
        return bolt12::decode(s)
            .map(|b| bolt12_json(&b))
            .map_err(|why| bad(given, &why));
    }
    if lower.starts_with("clnemerg1") {
        return Err(bad(
            given,
            "decoding emergency recover strings is not supported",
        ));
    }
    decode_bolt11(s).map_err(|why| bad(given, &why))
}

fn hex(b: &[u8]) -> Value {
    json!(b.to_lower_hex_string())
}

/// `field` as a string if it is UTF-8, else CLN's `warning_invalid_<field>`; whether it
/// was.
fn add_utf8(out: &mut Map<String, Value>, field: &str, v: &[u8]) -> bool {
    match std::str::from_utf8(v) {
        Ok(s) => {
            out.insert(field.into(), json!(s));
            true
        }
        Err(_) => {
            out.insert(format!("warning_invalid_{field}"), json!("invalid UTF8"));
            false
        }
    }
}

/// `offer_paths`, `invreq_paths` or `invoice_paths` (with each path's `payinfo`); whether
/// they are valid (a payinfo per path, no path without hops), with CLN's warnings.
fn add_paths(
    out: &mut Map<String, Value>,
    field: &str,
    paths: &[bolt12::BlindedPath],
    payinfo: Option<&[bolt12::PayInfo]>,
) -> bool {
    let list: Vec<Value> = paths
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let mut o = Map::new();
            match &p.first {
                bolt12::PathStart::Node(id) => {
                    o.insert("first_node_id".into(), json!(id.to_string()));
                }
                bolt12::PathStart::Channel { scid, dir } => {
                    o.insert(
                        "first_scid".into(),
                        json!(fulgur_engine::scid_string(*scid)),
                    );
                    o.insert("first_scid_dir".into(), json!(dir));
                }
            }
            o.insert("first_path_key".into(), json!(p.first_path_key.to_string()));
            if let Some(pay) = payinfo.and_then(|x| x.get(i)) {
                o.insert(
                    "payinfo".into(),
                    json!({
                        "fee_base_msat": pay.fee_base_msat,
                        "fee_proportional_millionths": pay.fee_proportional_millionths,
                        "cltv_expiry_delta": pay.cltv_expiry_delta,
                        "htlc_minimum_msat": pay.htlc_minimum_msat,
                        "htlc_maximum_msat": pay.htlc_maximum_msat,
                        "features": hex(&pay.features),
                    }),
                );
            }
            let hops: Vec<Value> = p
                .hops
                .iter()
                .map(|h| {
                    json!({
                        "blinded_node_id": h.blinded_node_id.to_string(),
                        "encrypted_recipient_data": hex(&h.encrypted_recipient_data),
                    })
                })
                .collect();
            o.insert("path".into(), Value::Array(hops));
            Value::Object(o)
        })
        .collect();
    out.insert(field.into(), Value::Array(list));
    if let Some(pay) = payinfo
        && pay.len() != paths.len()
    {
        out.insert(
            "warning_invalid_invoice_blindedpay".into(),
            json!(format!(
                "invoice has {} blinded_payinfo but {} paths",
                pay.len(),
                paths.len()
            )),
        );
        return false;
    }
    if let Some(i) = paths.iter().position(|p| p.hops.is_empty()) {
        out.insert(
            "warning_empty_blinded_path".into(),
            json!(format!("blinded path {i} has 0 hops")),
        );
        return false;
    }
    true
}

/// The offer fields CLN shows for an offer, and inside invoice requests and invoices.
fn add_offer_fields(out: &mut Map<String, Value>, f: &bolt12::Fields) -> bool {
    let mut valid = true;
    if let Some(chains) = &f.offer_chains {
        out.insert(
            "offer_chains".into(),
            Value::Array(chains.iter().map(display_hash).collect()),
        );
    }
    if let Some(m) = &f.offer_metadata {
        out.insert("offer_metadata".into(), hex(m));
    }
    if let Some(cur) = &f.offer_currency {
        valid &= add_utf8(out, "offer_currency", cur);
        if let Some(a) = f.offer_amount {
            out.insert("offer_amount".into(), json!(a));
        }
        match bolt12::currency_minor_unit(cur) {
            Some(u) => {
                out.insert("currency_minor_unit".into(), json!(u));
            }
            None => {
                out.insert(
                    "warning_unknown_offer_currency".into(),
                    json!("unknown currency code"),
                );
            }
        }
    } else if let Some(a) = f.offer_amount {
        out.insert("offer_amount_msat".into(), json!(a));
    }
    if let Some(d) = &f.offer_description {
        valid &= add_utf8(out, "offer_description", d);
    } else if f.offer_amount.is_some() {
        out.insert(
            "warning_missing_offer_description".into(),
            json!(
                "description is required if offer_amount is set (for the user to know what it was they paid for)"
            ),
        );
        valid = false;
    }
    if let Some(i) = &f.offer_issuer {
        valid &= add_utf8(out, "offer_issuer", i);
    }
    if let Some(x) = &f.offer_features {
        out.insert("offer_features".into(), hex(x));
    }
    if let Some(t) = f.offer_absolute_expiry {
        out.insert("offer_absolute_expiry".into(), json!(t));
    }
    if let Some(p) = &f.offer_paths {
        valid &= add_paths(out, "offer_paths", p, None);
    }
    if let Some(q) = f.offer_quantity_max {
        out.insert("offer_quantity_max".into(), json!(q));
    }
    if let Some(id) = &f.offer_issuer_id {
        out.insert("offer_issuer_id".into(), json!(id.to_string()));
    }
    valid
}

/// The invoice-request fields CLN shows for invoice requests and invoices.
fn add_invreq_fields(out: &mut Map<String, Value>, f: &bolt12::Fields) -> bool {
    let mut valid = true;
    match &f.invreq_metadata {
        Some(m) => {
            out.insert("invreq_metadata".into(), hex(m));
        }
        None => {
            out.insert(
                "warning_missing_invreq_metadata".into(),
                json!("invreq_metadata required"),
            );
            valid = false;
        }
    }
    if let Some(id) = &f.invreq_payer_id {
        out.insert("invreq_payer_id".into(), json!(id.to_string()));
    }
    if let Some(c) = &f.invreq_chain {
        out.insert("invreq_chain".into(), display_hash(c));
    }
    if let Some(a) = f.invreq_amount {
        out.insert("invreq_amount_msat".into(), json!(a));
    }
    if let Some(x) = &f.invreq_features {
        out.insert("invreq_features".into(), hex(x));
    }
    if let Some(q) = f.invreq_quantity {
        out.insert("invreq_quantity".into(), json!(q));
    }
    if let Some(n) = &f.invreq_payer_note {
        valid &= add_utf8(out, "invreq_payer_note", n);
    }
    if let Some(p) = &f.invreq_paths {
        valid &= add_paths(out, "invreq_paths", p, None);
    }
    if let Some(b) = &f.invreq_bip_353_name {
        out.insert(
            "invreq_bip_353_name".into(),
            json!({
                "name": String::from_utf8_lossy(&b.name),
                "domain": String::from_utf8_lossy(&b.domain),
            }),
        );
        if !bolt12::Bip353Name::valid_part(&b.name) {
            out.insert(
                "warning_invreq_bip_353_name_name_invalid".into(),
                json!("bip353 name field contains invalid characters"),
            );
            valid = false;
        }
        if !bolt12::Bip353Name::valid_part(&b.domain) {
            out.insert(
                "warning_invreq_bip_353_name_domain_invalid".into(),
                json!("bip353 domain field contains invalid characters"),
            );
            valid = false;
        }
    }
    valid
}

/// A chain hash or payment hash as CLN prints a `sha256`: the bytes in order.
fn display_hash(h: &[u8; 32]) -> Value {
    hex(h)
}

/// `unknown_<what>_tlvs`, when there are any.
fn add_unknown(out: &mut Map<String, Value>, field: &str, b: &bolt12::Bolt12) {
    let list: Vec<Value> = b
        .unknown()
        .map(|r| json!({"type": r.typ, "length": r.value.len(), "value": hex(&r.value)}))
        .collect();
    if !list.is_empty() {
        out.insert(field.into(), Value::Array(list));
    }
}

/// The address of a fallback on the invoice's chain (the first `offer_chains` entry,
/// else bitcoin), as CLN shows `invoice_fallbacks`; whether all were valid.
fn add_fallbacks(
    out: &mut Map<String, Value>,
    f: &bolt12::Fields,
    fallbacks: &[bolt12::Fallback],
) -> bool {
    let mut valid = true;
    let chain = f
        .offer_chains
        .as_ref()
        .and_then(|c| c.first())
        .map(|c| bitcoin::blockdata::constants::ChainHash::from(*c));
    let network = match chain {
        None => Some(Network::Bitcoin),
        Some(c) => Network::from_chain_hash(c),
    };
    let list: Vec<Value> = fallbacks
        .iter()
        .map(|fb| {
            let mut o = Map::new();
            o.insert("version".into(), json!(fb.version));
            o.insert("hex".into(), hex(&fb.program));
            let len = fb.program.len();
            if fb.version > 16 {
                o.insert(
                    "warning_invalid_invoice_fallbacks_version".into(),
                    json!("invoice fallback version > 16"),
                );
                valid = false;
            } else if !(2..=40).contains(&len) {
                o.insert(
                    "warning_invalid_invoice_fallbacks_address".into(),
                    json!("invoice fallback address bad length"),
                );
                valid = false;
            } else if let Some(n) = network {
                let addr = WitnessVersion::try_from(fb.version)
                    .ok()
                    .and_then(|v| bitcoin::WitnessProgram::new(v, &fb.program).ok())
                    .map(|p| Address::from_witness_program(p, n));
                match addr {
                    Some(a) => {
                        o.insert("address".into(), json!(a.to_string()));
                    }
                    None => {
                        o.insert(
                            "warning_invalid_invoice_fallbacks_address".into(),
                            json!("invalid fallback address for this version"),
                        );
                        valid = false;
                    }
                }
            }
            Value::Object(o)
        })
        .collect();
    out.insert("invoice_fallbacks".into(), Value::Array(list));
    valid
}

/// CLN's `decode` result for an offer, invoice request or BOLT 12 invoice.
fn bolt12_json(b: &bolt12::Bolt12) -> Value {
    let f = &b.fields;
    let mut out = Map::new();
    let mut valid = true;
    match b.kind {
        bolt12::Kind::Offer => {
            out.insert("type".into(), json!("bolt12 offer"));
            out.insert("offer_id".into(), hex(&b.offer_id()));
            valid &= add_offer_fields(&mut out, f);
            if f.offer_issuer_id.is_none() && f.offer_paths.is_none() {
                out.insert(
                    "warning_missing_offer_issuer_id".into(),
                    json!("offers without an issuer_id or paths are invalid"),
                );
                valid = false;
            }
            add_unknown(&mut out, "unknown_offer_tlvs", b);
        }
        bolt12::Kind::InvoiceRequest => {
            out.insert("type".into(), json!("bolt12 invoice_request"));
            if b.has_offer() {
                out.insert("offer_id".into(), hex(&b.offer_id()));
            }
            valid &= add_offer_fields(&mut out, f);
            valid &= add_invreq_fields(&mut out, f);
            if f.invreq_payer_id.is_none() {
                out.insert(
                    "warning_missing_invreq_payer_id".into(),
                    json!("invreq_payer_id required"),
                );
                valid = false;
            }
            match (&f.signature, &f.invreq_payer_id) {
                (None, _) => {
                    out.insert(
                        "warning_missing_invoice_request_signature".into(),
                        json!("Missing signature"),
                    );
                    valid = false;
                }
                (Some(_), Some(id)) if !b.signature_valid(id) => {
                    out.insert(
                        "warning_invalid_invoice_request_signature".into(),
                        json!("Bad signature"),
                    );
                    valid = false;
                }
                (Some(sig), _) => {
                    out.insert("signature".into(), hex(sig));
                }
            }
            add_unknown(&mut out, "unknown_invoice_request_tlvs", b);
        }
        bolt12::Kind::Invoice => {
            out.insert("type".into(), json!("bolt12 invoice"));
            if b.has_offer() {
                out.insert("offer_id".into(), hex(&b.offer_id()));
            }
            valid &= add_offer_fields(&mut out, f);
            valid &= add_invreq_fields(&mut out, f);
            // `decode` refused invoices without paths, payinfo, created_at, payment_hash,
            // amount or node id already (bolt12::decode).
            if let Some(p) = &f.invoice_paths {
                valid &= add_paths(
                    &mut out,
                    "invoice_paths",
                    p,
                    Some(f.invoice_blindedpay.as_deref().unwrap_or_default()),
                );
            }
            if let Some(t) = f.invoice_created_at {
                out.insert("invoice_created_at".into(), json!(t));
            }
            out.insert(
                "invoice_relative_expiry".into(),
                json!(
                    f.invoice_relative_expiry
                        .unwrap_or(bolt12::DEFAULT_RELATIVE_EXPIRY)
                ),
            );
            if let Some(h) = &f.invoice_payment_hash {
                out.insert("invoice_payment_hash".into(), hex(h));
            }
            if let Some(a) = f.invoice_amount {
                out.insert("invoice_amount_msat".into(), json!(a));
            }
            if let Some(fb) = &f.invoice_fallbacks {
                valid &= add_fallbacks(&mut out, f, fb);
            }
            if let Some(x) = &f.invoice_features {
                out.insert("invoice_features".into(), hex(x));
            }
            if let Some(id) = &f.invoice_node_id {
                out.insert("invoice_node_id".into(), json!(id.to_string()));
            }
            if let Some(sig) = &f.signature {
                out.insert("signature".into(), hex(sig));
            }
            add_unknown(&mut out, "unknown_invoice_tlvs", b);
        }
    }
    out.insert("valid".into(), json!(valid));
    Value::Object(out)
}

/// The `bolt11 invoice` result for `s`, or why it is not one.
pub(crate) fn decode_bolt11(s: &str) -> Result<Value, String> {
    if !s.get(..2).is_some_and(|p| p.eq_ignore_ascii_case("ln")) {
        return Err("Unparsable string".into());
    }
    let signed = SignedRawBolt11Invoice::from_str(s).map_err(|e| format!("Bad bolt11: {e}"))?;
    if !signed.check_signature() {
        return Err("Bad bolt11: bad signature".into());
    }
    let raw = signed.raw_invoice();

    let payee = match raw.payee_pub_key() {
        Some(pk) => pk.0,
        None => {
            signed
                .recover_payee_pub_key()
                .map_err(|e| format!("Bad bolt11: signature recovery failed: {e}"))?
                .0
        }
    };
    let payment_hash = raw
        .payment_hash()
        .ok_or("Bad bolt11: No valid 'p' field found")?;
    let amount_msat = match raw.hrp.raw_amount {
        None => None,
        Some(_) => {
            let pico = raw
                .amount_pico_btc()
                .ok_or("Bad bolt11: Invalid amount (overflow)")?;
            if pico % 10 != 0 {
                return Err("Bad bolt11: Invalid sub-millisatoshi amount".into());
            }
            Some(pico / 10)
        }
    };
    let currency = raw.currency();
    let network = match currency {
        Currency::Bitcoin => Some(Network::Bitcoin),
        Currency::BitcoinTestnet => Some(Network::Testnet),
        Currency::Regtest => Some(Network::Regtest),
        Currency::Signet => Some(Network::Signet),
        // rust-bitcoin has no simnet addresses (`sb1...`): no `addr` then.
        Currency::Simnet => None,
    };

    let mut out = Map::new();
    out.insert("type".into(), json!("bolt11 invoice"));
    out.insert("currency".into(), json!(currency.to_string()));
    out.insert(
        "created_at".into(),
        json!(raw.data.timestamp.as_unix_timestamp()),
    );
    out.insert(
        "expiry".into(),
        json!(raw.expiry_time().map_or(DEFAULT_EXPIRY, |x| x.as_seconds())),
    );
    out.insert("payee".into(), json!(payee.to_string()));
    if let Some(msat) = amount_msat {
        out.insert("amount_msat".into(), json!(msat));
    }
    if let Some(d) = raw.description() {
        out.insert("description".into(), json!(d.as_inner().0));
    }
    if let Some(h) = raw.description_hash() {
        out.insert(
            "description_hash".into(),
            json!(h.0.as_byte_array().to_lower_hex_string()),
        );
    }
    out.insert(
        "min_final_cltv_expiry".into(),
        json!(
            raw.min_final_cltv_expiry_delta()
                .map_or(DEFAULT_MIN_FINAL_CLTV, |c| c.0)
        ),
    );
    if let Some(secret) = raw.payment_secret() {
        out.insert(
            "payment_secret".into(),
            json!(secret.0.to_lower_hex_string()),
        );
    }
    if let Some(f) = raw.features() {
        // LDK keeps the bitmap little-endian and trimmed; CLN shows it big-endian.
        let be: Vec<u8> = f.le_flags().iter().rev().copied().collect();
        out.insert("features".into(), json!(be.to_lower_hex_string()));
    }
    if let Some(m) = raw.payment_metadata() {
        out.insert("payment_metadata".into(), json!(m.to_lower_hex_string()));
    }
    let fallbacks: Vec<Value> = raw
        .fallbacks()
        .into_iter()
        .map(|f| fallback_json(f, network))
        .collect();
    if !fallbacks.is_empty() {
        out.insert("fallbacks".into(), Value::Array(fallbacks));
    }
    let routes: Vec<Value> = raw
        .private_routes()
        .into_iter()
        .map(|r| {
            Value::Array(
                r.0.iter()
                    .map(|hop| {
                        let scid = hop.short_channel_id;
                        json!({
                            "pubkey": hop.src_node_id.to_string(),
                            "short_channel_id": fulgur_engine::scid_string(scid),
                            "fee_base_msat": hop.fees.base_msat,
                            "fee_proportional_millionths": hop.fees.proportional_millionths,
                            "cltv_expiry_delta": hop.cltv_expiry_delta,
                        })
                    })
                    .collect(),
            )
        })
        .collect();
    if !routes.is_empty() {
        out.insert("routes".into(), Value::Array(routes));
    }
    // Fields lightning-invoice did not understand (unknown tags, known tags of the wrong
    // length): the tag letter and the data in bech32 characters, as CLN shows them.
    let extra: Vec<Value> = raw
        .data
        .tagged_fields
        .iter()
        .filter_map(|f| match f {
            RawTaggedField::UnknownSemantics(v) if !v.is_empty() => Some(json!({
                "tag": v[0].to_char().to_string(),
                "data": v.iter().skip(3).map(|c| c.to_char()).collect::<String>(),
            })),
            _ => None,
        })
        .collect();
    if !extra.is_empty() {
        out.insert("extra".into(), Value::Array(extra));
    }
    out.insert(
        "payment_hash".into(),
        json!(payment_hash.0.to_lower_hex_string()),
    );
    out.insert(
        "signature".into(),
        json!(
            signed
                .signature()
                .0
                .to_standard()
                .serialize_der()
                .to_lower_hex_string()
        ),
    );
    out.insert("valid".into(), json!(true));
    Ok(Value::Object(out))
}

/// One `fallbacks[]` entry: the scriptPubKey in hex, its type and address when known.
fn fallback_json(f: &Fallback, network: Option<Network>) -> Value {
    let script = match f {
        Fallback::PubKeyHash(h) => ScriptBuf::new_p2pkh(h),
        Fallback::ScriptHash(h) => ScriptBuf::new_p2sh(h),
        Fallback::SegWitProgram { version, program } => witness_script(*version, program),
    };
    let mut o = Map::new();
    let kind = if script.is_p2pkh() {
        Some("P2PKH")
    } else if script.is_p2sh() {
        Some("P2SH")
    } else if script.is_p2wpkh() {
        Some("P2WPKH")
    } else if script.is_p2wsh() {
        Some("P2WSH")
    } else if script.is_p2tr() {
        Some("P2TR")
    } else {
        None
    };
    if let Some(k) = kind {
        o.insert("type".into(), json!(k));
    }
    if let Some(addr) = network.and_then(|n| Address::from_script(&script, n).ok()) {
        o.insert("addr".into(), json!(addr.to_string()));
    }
    o.insert("hex".into(), json!(script.as_bytes().to_lower_hex_string()));
    Value::Object(o)
}

/// `OP_n <program>`, built by hand so that programs of lengths a known version does not
/// allow still show as the raw script the invoice carries.
fn witness_script(version: WitnessVersion, program: &[u8]) -> ScriptBuf {
    let v = version.to_num();
    let mut b = Vec::with_capacity(program.len() + 2);
    b.push(if v == 0 { 0 } else { 0x50 + v });
    // Programs are 2 to 40 bytes in valid invoices; a longer one (a field is at most 639
    // bytes) needs a pushdata prefix.
    let len = program.len();
    if let Ok(n) = u8::try_from(len) {
        if n >= 0x4c {
            b.push(0x4c);
        }
        b.push(n);
    } else {
        b.push(0x4d);
        b.extend_from_slice(&u16::try_from(len).unwrap_or(u16::MAX).to_le_bytes());
    }
    b.extend_from_slice(program);
    ScriptBuf::from_bytes(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// BOLT 11's example "on mainnet, with fallback address 1RustyRX2oai4EYYDpQGWvEL62BBGqN9T
    /// with extra routing info".
    const ROUTED: &str = "lnbc20m1pvjluezsp5zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zygspp5qqqsyqcyq5rqwzqfqqqsyqcyq5rqwzqfqqqsyqcyq5rqwzqfqypqhp58yjmdan79s6qqdhdzgynm4zwqd5d7xmw5fk98klysy043l2ahrqsfpp3qjmp7lwpagxun9pygexvgpjdc4jdj85fr9yq20q82gphp2nflc7jtzrcazrra7wwgzxqc8u7754cdlpfrmccae92qgzqvzq2ps8pqqqqqqpqqqqq9qqqvpeuqafqxu92d8lr6fvg0r5gv0heeeqgcrqlnm6jhphu9y00rrhy4grqszsvpcgpy9qqqqqqgqqqqq7qqzq9qrsgqdfjcdk6w3ak5pca9hwfwfh63zrrz06wwfya0ydlzpgzxkn5xagsqz7x9j4jwe7yj7vaf2k9lqsdk45kts2fd0fkr28am0u4w95tt2nsq76cqw0";

    #[test]
    fn bolt11_spec_vector_field_mapping() {
        let v = decode(ROUTED).unwrap_or_else(|e| panic!("{e}"));
        let expect = json!({
            "type": "bolt11 invoice",
            "valid": true,
            "currency": "bc",
            "created_at": 1496314658,
            "expiry": 3600,
            "payee": "03e7156ae33b0a208d0744199163177e909e80176e55d97a2f221ede0f934dd9ad",
            "amount_msat": 2_000_000_000u64,
            "payment_hash": "0001020304050607080900010203040506070809000102030405060708090102",
            "payment_secret": "1111111111111111111111111111111111111111111111111111111111111111",
            "description_hash": "3925b6f67e2c340036ed12093dd44e0368df1b6ea26c53dbe4811f58fd5db8c1",
            "min_final_cltv_expiry": 18,
            "features": "4100",
            "fallbacks": [{
                "type": "P2PKH",
                "addr": "1RustyRX2oai4EYYDpQGWvEL62BBGqN9T",
                "hex": "76a91404b61f7dc1ea0dc99424464cc4064dc564d91e8988ac",
            }],
            "routes": [[
                {
                    "pubkey": "029e03a901b85534ff1e92c43c74431f7ce72046060fcf7a95c37e148f78c77255",
                    "short_channel_id": "66051x263430x1800",
                    "fee_base_msat": 1,
                    "fee_proportional_millionths": 20,
                    "cltv_expiry_delta": 3,
                },
                {
                    "pubkey": "039e03a901b85534ff1e92c43c74431f7ce72046060fcf7a95c37e148f78c77255",
                    "short_channel_id": "197637x395016x2314",
                    "fee_base_msat": 2,
                    "fee_proportional_millionths": 30,
                    "cltv_expiry_delta": 4,
                },
            ]],
            "signature": "304402206a6586db4e8f6d40e3a5bb92e4df5110c627e9ce493af237e20a046b4e86ea2002200178c59564ecf892f33a9558bf041b6ad2cb8292d7a6c351fbb7f2ae2d16b54e",
        });
        assert_eq!(v, expect);
    }

    #[test]
    fn errors_are_invalid_params() {
        // One character of the data part changed: the bech32 checksum no longer matches.
        let tampered = ROUTED.replacen("zyg3zyg3", "zyg3zyg4", 1);
        for s in [tampered.as_str(), "garbage", "lno1qgsq", ""] {
            let e = decode(s)
                .err()
                .map(|e| (e.code, e.message.starts_with("string: ")));
            assert_eq!(e, Some((-32602, true)), "{s}");
        }
        // The `lightning:` URI prefix is accepted.
        let v = decode(&format!("lightning:{ROUTED}")).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(v["created_at"], json!(1496314658));
    }
}

#[cfg(test)]
mod bolt12_tests {
    use super::*;
    use bitcoin::secp256k1::{PublicKey, Secp256k1, SecretKey};
    use lightning::offers::offer::OfferBuilder;

    /// The offer of BOLT 12's string-format examples.
    const SPEC_OFFER: &str = "lno1pqps7sjqpgtyzm3qv4uxzmtsd3jjqer9wd3hy6tsw35k7msjzfpy7nz5yqcnygrfdej82um5wf5k2uckyypwa3eyt44h6txtxquqh7lz5djge4afgfjn7k4rgrkuag0jsd5xvxg";

    #[test]
    fn the_spec_offer() {
        let v = decode(SPEC_OFFER).unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(
            v,
            json!({
                "type": "bolt12 offer",
                "offer_id": "b431fa81080dbb1fe6b33543a11ddfcc5aa0b08f0633038adc026752268dab75",
                "offer_amount_msat": 1000000,
                "offer_description": "An example description",
                "offer_issuer": "BOLT 12 industries",
                "offer_issuer_id": "02eec7245d6b7d2ccb30380bfbe2a3648cd7a942653f5aa340edcea1f283686619",
                "valid": true,
            })
        );
        // Parts joined with `+` and the `lightning:` prefix, as CLN reads them.
        let (a, b) = SPEC_OFFER.split_at(30);
        assert_eq!(decode(&format!("lightning:{a}+ \n{b}")).ok(), Some(v));
    }

    #[test]
    fn currency_offers_and_cln_refusals() {
        let sk = SecretKey::from_slice(&[1; 32]).unwrap_or_else(|e| panic!("{e}"));
        let id = PublicKey::from_secret_key(&Secp256k1::new(), &sk);
        let offer = OfferBuilder::new(id)
            .description("tea".into())
            .chain(Network::Regtest)
            .build()
            .unwrap_or_else(|e| panic!("{e:?}"));
        let v = decode(&offer.to_string()).unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(
            v["offer_chains"],
            json!([
                bitcoin::blockdata::constants::ChainHash::using_genesis_block(Network::Regtest)
                    .as_bytes()
                    .to_lower_hex_string()
            ])
        );
        assert_eq!(v["valid"], json!(true));
        // An offer without issuer id or paths: CLN's parameter error.
        let e = decode(&bolt12::encode(bolt12::Kind::Offer, &[10, 1, b'x']))
            .err()
            .map(|e| (e.code, e.message));
        assert_eq!(
            e,
            Some((
                -32602,
                "string: Offer does not contain an issuer_id or paths: invalid token \
                 '\"lno1pgqhs\"'"
                    .into()
            ))
        );
    }
}
