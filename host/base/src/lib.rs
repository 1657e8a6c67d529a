//! What every crate of `fulgurd` shares, and nothing else: the node's log, the Bitcoin
//! network with CLN's names, hex and the wall clock. It depends on no crate of ours
//! (docs/adr/0009-host-crates.md).

#![deny(missing_docs)]
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::string_slice)]

pub mod clock;
pub mod log;
pub mod panic;

/// The CLN release whose interface (RPC, options, plugin protocol) Fulgur implements.
pub const CLN_INTERFACE_VERSION: &str = "v26.06";

/// The version Fulgur reports as CLN does (`getinfo.version`, plugins' `LIGHTNINGD_VERSION`):
/// the CLN release it implements, so that the version checks of pyln, clboss, BTCPay and
/// plugins parse it as that release, then Fulgur's own version, as CLN's `-modded` suffixes:
/// `v26.06-fulgur-0.1.0`.
pub const VERSION: &str = concat!("v26.06-fulgur-", env!("CARGO_PKG_VERSION"));

use std::time::{SystemTime, UNIX_EPOCH};

/// The Bitcoin network, with CLN's names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Network {
    /// Mainnet (directory `bitcoin`).
    Bitcoin,
    /// testnet3.
    Testnet,
    /// testnet4.
    Testnet4,
    /// signet.
    Signet,
    /// regtest.
    Regtest,
}

impl Network {
    /// Parses CLN's network names (`mainnet` is accepted for `bitcoin`).
    pub fn parse(s: &str) -> Option<Network> {
        match s {
            "bitcoin" | "mainnet" => Some(Network::Bitcoin),
            "testnet" => Some(Network::Testnet),
            "testnet4" => Some(Network::Testnet4),
            "signet" => Some(Network::Signet),
            "regtest" => Some(Network::Regtest),
            _ => None,
        }
    }

    /// The name used in directories, `getinfo` and `init`.
    pub fn as_str(self) -> &'static str {
        match self {
            Network::Bitcoin => "bitcoin",
            Network::Testnet => "testnet",
            Network::Testnet4 => "testnet4",
            Network::Signet => "signet",
            Network::Regtest => "regtest",
        }
    }
}

/// Lower-case hex.
pub fn hex(data: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(data.len() * 2);
    for b in data {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 15)]));
    }
    s
}

/// Parses hex (either case); `None` for an odd length or a non-hex digit.
pub fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Seconds since the UNIX epoch by the wall clock (0 if the clock is before 1970). Services
/// read their [`clock::Clock`] instead, so that tests can move it.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// `data` in 5-bit groups, most significant bit first, the last one padded with zero bits
/// (what zbase32 and bech32-style strings such as codex32 spell).
pub fn five_bit_groups(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity((data.len() * 8).div_ceil(5));
    let (mut acc, mut bits) = (0u32, 0u32);
    for b in data {
        acc = (acc << 8) | u32::from(*b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(((acc >> bits) & 31) as u8);
        }
    }
    if bits > 0 {
        out.push(((acc << (5 - bits)) & 31) as u8);
    }
    out
}

/// The inverse of [`five_bit_groups`]: 5-bit `values` (each below 32) as bytes, most
/// significant bit first, and how many bits were left over at the end (fewer than 8; they
/// are dropped).
pub fn eight_bit_groups(values: impl IntoIterator<Item = u8>) -> (Vec<u8>, u32) {
    let mut out = vec![];
    let (mut acc, mut bits) = (0u32, 0u32);
    for v in values {
        acc = ((acc << 5) | u32::from(v & 31)) & 0xfff;
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    (out, bits)
}

#[cfg(test)]
mod tests {
    #[test]
    fn five_and_eight_bit_groups_are_inverses() {
        for data in [&b""[..], b"\x00", b"\xff\x01", b"lightning-1 and more"] {
            let groups = super::five_bit_groups(data);
            let (back, left) = super::eight_bit_groups(groups.iter().copied());
            assert_eq!(back, data);
            assert!(left < 5, "{left}");
        }
    }

    #[test]
    fn hex_is_lower_case_and_two_digits_a_byte() {
        assert_eq!(super::hex(&[0, 0x0f, 0xab, 0xff]), "000fabff");
        assert_eq!(super::hex(&[]), "");
        assert_eq!(super::unhex("000FabfF"), Some(vec![0, 0x0f, 0xab, 0xff]));
        assert_eq!(super::unhex("abc"), None);
        assert_eq!(super::unhex("zz"), None);
        assert_eq!(super::unhex("é0"), None);
    }
}
