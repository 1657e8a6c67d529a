//! Amounts in millisatoshi, read in every form CLN accepts.
//!
//! Inputs may be a JSON integer (msat) or a string with a `msat`, `sat` or `btc` suffix
//! (`"1000msat"`, `"10sat"`, `"0.001btc"`); outputs are plain integers.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

/// An amount in millisatoshi.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Msat(pub u64);

impl Msat {
    /// Parses a string in CLN's forms; a bare number is msat.
    pub fn parse(s: &str) -> Result<Msat, String> {
        let s = s.trim();
        let bad = || format!("'{s}' is not a valid msat amount");
        if let Some(n) = s.strip_suffix("msat") {
            return n.parse::<u64>().map(Msat).map_err(|_| bad());
        }
        if let Some(n) = s.strip_suffix("sat") {
            let sat = n.parse::<u64>().map_err(|_| bad())?;
            return sat.checked_mul(1000).map(Msat).ok_or_else(bad);
        }
        if let Some(n) = s.strip_suffix("btc") {
            let (whole, frac) = n.split_once('.').unwrap_or((n, ""));
            if frac.len() > 11 || whole.is_empty() && frac.is_empty() {
                return Err(bad());
            }
            let digits = |d: &str| d.is_empty() || d.bytes().all(|b| b.is_ascii_digit());
            if !digits(whole) || !digits(frac) {
                return Err(bad());
            }
            let whole: u64 = if whole.is_empty() {
                0
            } else {
                whole.parse().map_err(|_| bad())?
            };
            let frac_msat: u64 = if frac.is_empty() {
                0
            } else {
                format!("{frac:0<11}").parse().map_err(|_| bad())?
            };
            return whole
                .checked_mul(100_000_000_000)
                .and_then(|w| w.checked_add(frac_msat))
                .map(Msat)
                .ok_or_else(bad);
        }
        s.parse::<u64>().map(Msat).map_err(|_| bad())
    }

    /// Reads a JSON value: an unsigned integer or a string in CLN's forms.
    pub fn from_json(v: &Value) -> Result<Msat, String> {
        match v {
            Value::Number(n) => n
                .as_u64()
                .map(Msat)
                .ok_or_else(|| format!("{n} is not a valid msat amount")),
            Value::String(s) => Msat::parse(s),
            other => Err(format!("{other} is not a valid msat amount")),
        }
    }
}

impl Serialize for Msat {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(self.0)
    }
}

impl<'de> Deserialize<'de> for Msat {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = Value::deserialize(d)?;
        Msat::from_json(&v).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_cln_forms() {
        assert_eq!(Msat::parse("1000msat"), Ok(Msat(1000)));
        assert_eq!(Msat::parse("5sat"), Ok(Msat(5000)));
        assert_eq!(Msat::parse("0.001btc"), Ok(Msat(100_000_000)));
        assert_eq!(Msat::parse("1btc"), Ok(Msat(100_000_000_000)));
        assert_eq!(Msat::parse("42"), Ok(Msat(42)));
        assert!(Msat::parse("1.5sat").is_err());
        assert!(Msat::parse("-1").is_err());
        assert!(Msat::parse("0.000000000001btc").is_err());
        assert_eq!(Msat::from_json(&json!(7)), Ok(Msat(7)));
        assert!(Msat::from_json(&json!(-7)).is_err());
    }
}
