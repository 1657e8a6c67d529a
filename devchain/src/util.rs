//! Small helpers shared by the chain and the RPC layer: amounts, difficulty, script types.

use bitcoin::{Address, Amount, CompactTarget, Network, Script, pow::Work};

/// Bitcoin Core's `FormatMoney`: at least two decimals, trailing zeros trimmed, e.g. "1.00",
/// "0.0001".
pub fn format_money(sats: i64) -> String {
    let neg = sats < 0;
    let abs = sats.unsigned_abs();
    let mut frac = format!("{:08}", abs % 100_000_000);
    while frac.len() > 2 && frac.ends_with('0') {
        frac.pop();
    }
    format!(
        "{}{}.{}",
        if neg { "-" } else { "" },
        abs / 100_000_000,
        frac
    )
}

/// An amount as bitcoind prints it in JSON: a BTC number (serde_json prints the shortest
/// decimal that parses back to the same value).
pub fn btc_value(amount: Amount) -> serde_json::Value {
    sat_to_btc_value(amount.to_sat() as i64)
}

pub fn sat_to_btc_value(sats: i64) -> serde_json::Value {
    let f = sats as f64 / 100_000_000.0;
    serde_json::Number::from_f64(f)
        .map(serde_json::Value::Number)
        .unwrap_or(serde_json::Value::Null)
}

/// Bitcoin Core's `GetDifficulty` for compact `bits`.
pub fn difficulty(bits: CompactTarget) -> f64 {
    let bits = bits.to_consensus();
    let mut shift = (bits >> 24) & 0xff;
    let mantissa = bits & 0x00ff_ffff;
    if mantissa == 0 {
        return 0.0;
    }
    let mut diff = 0x0000_ffff as f64 / mantissa as f64;
    while shift < 29 {
        diff *= 256.0;
        shift += 1;
    }
    while shift > 29 {
        diff /= 256.0;
        shift -= 1;
    }
    diff
}

/// Chainwork as bitcoind prints it: 64 lowercase hex digits.
pub fn work_hex(work: Work) -> String {
    work.to_be_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// bitcoind's name for the type of an output script (`scriptPubKey.type`).
pub fn script_type(script: &Script) -> &'static str {
    if script.is_p2pkh() {
        "pubkeyhash"
    } else if script.is_p2sh() {
        "scripthash"
    } else if script.is_p2wpkh() {
        "witness_v0_keyhash"
    } else if script.is_p2wsh() {
        "witness_v0_scripthash"
    } else if script.is_p2tr() {
        "witness_v1_taproot"
    } else if script.is_p2pk() {
        "pubkey"
    } else if script.is_op_return() {
        "nulldata"
    } else if script.is_multisig() {
        "multisig"
    } else if script.as_bytes() == [0x51, 0x02, 0x4e, 0x73] {
        "anchor"
    } else if script.is_witness_program() {
        "witness_unknown"
    } else {
        "nonstandard"
    }
}

/// `scriptPubKey` object as bitcoind prints it (without `desc`).
pub fn script_pubkey_json(script: &Script) -> serde_json::Value {
    let mut obj = serde_json::Map::new();
    obj.insert("asm".into(), script.to_asm_string().into());
    obj.insert("hex".into(), hex(script.as_bytes()).into());
    if let Ok(addr) = Address::from_script(script, Network::Regtest) {
        obj.insert("address".into(), addr.to_string().into());
    }
    obj.insert("type".into(), script_type(script).into());
    serde_json::Value::Object(obj)
}

pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 0xf) as usize] as char);
    }
    s
}

pub fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    let digit = |c: u8| -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            b'A'..=b'F' => Some(c - b'A' + 10),
            _ => None,
        }
    };
    s.as_bytes()
        .chunks(2)
        .map(|p| Some(digit(p[0])? << 4 | digit(p[1])?))
        .collect()
}

/// Parses an amount the way bitcoind's `AmountFromValue` does: a JSON number or string in BTC with
/// at most 8 decimals. Returns satoshis.
pub fn parse_btc_amount(value: &serde_json::Value) -> Result<i64, &'static str> {
    let text = match value {
        serde_json::Value::Number(n) => n.to_string(),
        serde_json::Value::String(s) => s.clone(),
        _ => return Err("Amount is not a number or string"),
    };
    parse_fixed_point_8(&text).ok_or("Invalid amount")
}

/// Decimal (optionally with an exponent) to an integer count of 1e-8 units; `None` if it has
/// more precision than that or is out of range.
fn parse_fixed_point_8(text: &str) -> Option<i64> {
    let text = text.trim();
    let (mantissa, exp) = match text.find(['e', 'E']) {
        Some(i) => (&text[..i], text[i + 1..].parse::<i32>().ok()?),
        None => (text, 0),
    };
    let (neg, mantissa) = match mantissa.strip_prefix('-') {
        Some(m) => (true, m),
        None => (false, mantissa),
    };
    let (int_part, frac_part) = match mantissa.find('.') {
        Some(i) => (&mantissa[..i], &mantissa[i + 1..]),
        None => (mantissa, ""),
    };
    if int_part.is_empty() && frac_part.is_empty() {
        return None;
    }
    if !int_part.bytes().all(|c| c.is_ascii_digit())
        || !frac_part.bytes().all(|c| c.is_ascii_digit())
    {
        return None;
    }
    let digits: String = format!("{int_part}{frac_part}");
    let digits = digits.trim_start_matches('0');
    // value = digits * 10^(exp - frac_len); we want value * 1e8.
    // An exponent or a fraction this large can only be out of range or too precise.
    let scale = exp
        .checked_add(8)?
        .checked_sub(i32::try_from(frac_part.len()).ok()?)?;
    if !(-64..=64).contains(&scale) {
        return digits.is_empty().then_some(0);
    }
    let mut value: i128 = if digits.is_empty() {
        0
    } else {
        digits.parse().ok()?
    };
    if scale >= 0 {
        for _ in 0..scale {
            value = value.checked_mul(10)?;
            if value > 21_000_000 * 100_000_000 * 10 {
                return None;
            }
        }
    } else {
        for _ in 0..(-scale) {
            if value % 10 != 0 {
                return None;
            }
            value /= 10;
        }
    }
    let value = i64::try_from(value).ok()?;
    Some(if neg { -value } else { value })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn money_formatting_matches_bitcoind() {
        assert_eq!(format_money(100_000_000), "1.00");
        assert_eq!(format_money(10_000), "0.0001");
        assert_eq!(format_money(123_456_789), "1.23456789");
        assert_eq!(format_money(-50), "-0.0000005");
    }

    #[test]
    fn amounts_parse_like_bitcoind() {
        assert_eq!(parse_btc_amount(&serde_json::json!(1.5)), Ok(150_000_000));
        assert_eq!(parse_btc_amount(&serde_json::json!("0.00000001")), Ok(1));
        assert_eq!(parse_btc_amount(&serde_json::json!(1e-8)), Ok(1));
        assert_eq!(parse_btc_amount(&serde_json::json!(0.1)), Ok(10_000_000));
        assert!(parse_btc_amount(&serde_json::json!("0.000000001")).is_err());
        assert!(parse_btc_amount(&serde_json::json!("abc")).is_err());
        assert!(parse_btc_amount(&serde_json::json!(true)).is_err());
        // Exponents that overflowed (a panic with overflow checks) or looped for seconds.
        assert!(parse_btc_amount(&serde_json::json!("1e2147483647")).is_err());
        assert!(parse_btc_amount(&serde_json::json!("1e-2147483648")).is_err());
        assert_eq!(parse_btc_amount(&serde_json::json!("0e-2000000000")), Ok(0));
        assert_eq!(parse_btc_amount(&serde_json::json!("0e99")), Ok(0));
    }

    #[test]
    fn regtest_difficulty() {
        let d = difficulty(CompactTarget::from_consensus(0x207f_ffff));
        assert!((d - 4.656542373906925e-10).abs() < 1e-20, "{d}");
        assert_eq!(difficulty(CompactTarget::from_consensus(0x1d00_ffff)), 1.0);
    }

    #[test]
    fn hex_round_trip() {
        assert_eq!(hex(&[0, 0xab, 0xff]), "00abff");
        assert_eq!(unhex("00ABff"), Some(vec![0, 0xab, 0xff]));
        assert_eq!(unhex("0g"), None);
        assert_eq!(unhex("abc"), None);
    }
}
