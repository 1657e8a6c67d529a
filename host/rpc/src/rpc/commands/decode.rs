//! `decode`: what a BOLT 11 invoice says, with CLN's field names and types (decode.json's
//! `bolt11 invoice` branch, the fields the old `decodepay` gave). BOLT 12 strings, runes and
//! emergency-recover blobs are not decoded yet: like anything unparsable they get CLN's
//! `-32602` "string: ...: invalid token" error.
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
    for (prefix, what) in [
        ("lno1", "bolt12 offers"),
        ("lni1", "bolt12 invoices"),
        ("lnr1", "bolt12 invoice requests"),
        ("clnemerg1", "emergency recover strings"),
    ] {
        if lower.starts_with(prefix) {
            return Err(bad(given, &format!("decoding {what} is not supported")));
        }
    }
    decode_bolt11(s).map_err(|why| bad(given, &why))
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
                            "short_channel_id": format!(
                                "{}x{}x{}",
                                scid >> 40,
                                (scid >> 16) & 0xff_ffff,
                                scid & 0xffff
                            ),
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
