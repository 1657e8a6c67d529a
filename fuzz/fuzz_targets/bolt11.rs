#![no_main]
//! BOLT 11 through `decode` (`fulgur_host::fuzzing::bolt11`). A random string almost never
//! has a valid bech32 checksum, so most inputs are built: byte 0 odd means "the rest is the
//! string as given"; even means bytes 1-2 pick the human-readable part (currency, amount,
//! multiplier) and every further byte is one 5-bit value of the data part, to which a valid
//! checksum is added. Signatures then decide: an invoice without `n` passes when its
//! signature recovers a key.

use bech32::{Bech32, Fe32, Fe32IterExt, Hrp};

const CURRENCIES: [&str; 5] = ["bc", "tb", "bcrt", "tbs", "sb"];
const MULTIPLIERS: [&str; 6] = ["", "m", "u", "n", "p", "x"];

fn build(data: &[u8]) -> Option<String> {
    let (&[cur, amt], rest) = data.split_first_chunk::<2>()?;
    let mut hrp = format!("ln{}", CURRENCIES[usize::from(cur) % CURRENCIES.len()]);
    // Bits 0-3 of `amt`: digits (none: no amount), from the following bytes; bits 4-6:
    // the multiplier.
    let digits = usize::from(amt & 0x0f).min(rest.len());
    let (amount, fes) = rest.split_at(digits);
    for d in amount {
        hrp.push(char::from(b'0' + d % 10));
    }
    if digits > 0 {
        hrp.push_str(MULTIPLIERS[usize::from(amt >> 4) % MULTIPLIERS.len()]);
    }
    let hrp = Hrp::parse(&hrp).ok()?;
    let chars: String = fes
        .iter()
        .map(|b| Fe32::try_from(b & 31).unwrap_or(Fe32::Q))
        .with_checksum::<Bech32>(&hrp)
        .chars()
        .collect();
    Some(chars)
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode & 1 == 1 {
        if let Ok(s) = std::str::from_utf8(rest) {
            fulgur_host::fuzzing::bolt11(s);
        }
    } else if let Some(s) = build(rest) {
        fulgur_host::fuzzing::bolt11(&s);
    }
});
