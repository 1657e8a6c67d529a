//! `exposesecret passphrase [identifier]`: the node's `hsm_secret` as a BIP-93 (codex32)
//! string, for a backup on paper or metal, as CLN's `exposesecret` plugin gives it. Off
//! unless `--exposesecret-passphrase` is set, and the caller must repeat that passphrase.
//!
//! The string is CLN's: human-readable part `cl`, threshold 0 (an unshared secret), the
//! four-character identifier (by default taken from the alias, as CLN does), share index
//! `s`, the 32 bytes in bech32 characters, and BIP-93's 13-character checksum. CLN's own
//! test vectors are checked below.

use bitcoin::bip32::{ChildNumber, Xpriv};
use bitcoin::secp256k1::{PublicKey, Secp256k1};
use fulgur_protocol::RpcError;
use serde_json::json;

use super::{Command, CommandFuture, Ctx, command};
use crate::rpc::params::{Params, opt, req};

pub const EXPOSESECRET: Command =
    Command::new("exposesecret", &[req("passphrase"), opt("identifier")], run);

/// The option that enables the command (a CLN plugin option, handled by the core here).
pub const PASSPHRASE_OPTION: &str = "exposesecret-passphrase";

const CHARSET: &[u8; 32] = b"qpzry9x8gf2tvdw0s3jn54khce6mua7l";

fn fail(msg: impl Into<String>) -> RpcError {
    RpcError::new(-1, msg)
}

fn run(ctx: Ctx, p: Params) -> CommandFuture {
    command(async move {
        let (id, codex32) = expose(&ctx, &p)?;
        Ok(json!({ "identifier": id, "codex32": codex32 }))
    })
}

/// `check exposesecret ...`: every refusal the command would give, as CLN's `check`.
pub fn check(ctx: &Ctx, p: &Params) -> Result<(), RpcError> {
    expose(ctx, p).map(|_| ())
}

/// The identifier and the codex32 string, or why not.
fn expose(ctx: &Ctx, p: &Params) -> Result<(String, String), RpcError> {
    {
        let passphrase = p.str("passphrase")?;
        let identifier = p.opt_str("identifier")?;
        let Some(expected) = ctx
            .node
            .config
            .plugin_opts
            .iter()
            .rev()
            .find(|o| o.name == PASSPHRASE_OPTION)
            .and_then(|o| o.value.clone())
        else {
            return Err(fail("exposesecrets-passphrase is not set"));
        };
        if !same_secret(expected.as_bytes(), passphrase.as_bytes()) {
            return Err(fail("passphrase does not match exposesecrets-passphrase"));
        }
        let path = ctx.node.config.net_dir.join("hsm_secret");
        let seed: [u8; 32] = std::fs::read(&path)
            .map_err(|e| fail(format!("Could not open hsm_secret: {e}")))?
            .try_into()
            .map_err(|_| fail("Could not parse hsm_secret: not 32 bytes"))?;
        // Before showing it, make sure it is this node's.
        if node_id(&seed).as_deref() != Some(ctx.node.node_id.as_str()) {
            return Err(fail("This hsm_secret is not for the current node"));
        }
        let id = identifier.unwrap_or_else(|| id_from_alias(&ctx.node.alias));
        let codex32 = encode("cl", &id, &seed)
            .map_err(|e| fail(format!("Unexpected failure encoding hsm_secret: {e}")))?;
        Ok((id, codex32))
    }
}

/// Compares without stopping at the first difference.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The node id this seed gives (BIP32 m/0', as the engine derives it).
fn node_id(seed: &[u8; 32]) -> Option<String> {
    let secp = Secp256k1::new();
    let master = Xpriv::new_master(bitcoin::Network::Testnet, seed).ok()?;
    let key = master
        .derive_priv(&secp, &[ChildNumber::from_hardened_idx(0).ok()?])
        .ok()?;
    Some(PublicKey::from_secret_key(&secp, &key.private_key).to_string())
}

/// CLN's default identifier: the alias's first four characters that are bech32 characters
/// once lower-cased, padded with `x`.
fn id_from_alias(alias: &str) -> String {
    let mut id: String = alias
        .chars()
        .filter(char::is_ascii)
        .map(|c| c.to_ascii_lowercase())
        .filter(|c| CHARSET.contains(&(*c as u8)))
        .take(4)
        .collect();
    while id.len() < 4 {
        id.push('x');
    }
    id
}

/// BIP-93's checksum generator (the code's five generator terms) and target residue.
const GEN: [u128; 5] = [
    0x19dc500ce73fde210,
    0x1bfae00def77fe529,
    0x1fbd920fffe7bee52,
    0x1739640bdeee3fdad,
    0x07729a039cfc75f5a,
];
const TARGET: u128 = 0x10ce0795c2fd1e62a;

fn polymod(values: impl IntoIterator<Item = u8>) -> u128 {
    let mut residue: u128 = 1;
    for v in values {
        let top = residue >> 60;
        residue = ((residue & 0x0fff_ffff_ffff_ffff) << 5) ^ u128::from(v);
        for (i, g) in GEN.iter().enumerate() {
            if (top >> i) & 1 == 1 {
                residue ^= g;
            }
        }
    }
    residue
}

/// The codex32 string of an unshared secret (threshold 0, share index `s`) under `hrp`.
pub fn encode(hrp: &str, id: &str, secret: &[u8]) -> Result<String, String> {
    if id.chars().count() != 4 {
        return Err("Invalid id: must be 4 characters".into());
    }
    for c in id.chars() {
        if !c.is_ascii() {
            return Err("Invalid id: must be ASCII".into());
        }
        if !CHARSET.contains(&(c.to_ascii_lowercase() as u8)) {
            return Err("Invalid id: must be valid bech32 string".into());
        }
        if c.is_ascii_uppercase() {
            return Err("Invalid id: must be lower-case".into());
        }
    }
    // The data part: threshold, identifier, share index, then the secret in 5-bit groups
    // (the last one padded with zero bits).
    let mut data: Vec<u8> = vec![ch_value(b'0')];
    data.extend(id.bytes().map(ch_value));
    data.push(ch_value(b's'));
    data.extend(super::sign::five_bit_groups(secret));
    // The checksum covers the human-readable part, expanded as in BIP-173.
    let hrp_values = hrp
        .bytes()
        .map(|c| c >> 5)
        .chain([0])
        .chain(hrp.bytes().map(|c| c & 31));
    let residue = polymod(
        hrp_values
            .chain(data.iter().copied())
            .chain(std::iter::repeat_n(0, 13)),
    ) ^ TARGET;
    let mut out = format!("{hrp}1");
    out.extend(data.iter().map(|v| CHARSET[*v as usize] as char));
    out.extend((0..13).map(|i| CHARSET[((residue >> (5 * (12 - i))) & 31) as usize] as char));
    Ok(out)
}

fn ch_value(c: u8) -> u8 {
    CHARSET.iter().position(|x| *x == c).unwrap_or(0) as u8
}

#[cfg(test)]
mod tests {
    use super::*;

    /// CLN's `test_exposesecret` vectors (from `lightning-hsmtool getcodexsecret`).
    #[test]
    fn encodes_clns_vectors() {
        let mut old = [0u8; 32];
        old[..11].copy_from_slice(b"lightning-1");
        let cases = [
            (
                "junr",
                "cl10junrsd35kw6r5de5kueedxyqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqj00m675kxffh",
            ),
            (
                "junx",
                "cl10junxsd35kw6r5de5kueedxyqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqq6mdtn5lql6p8m",
            ),
            (
                "cln2",
                "cl10cln2sd35kw6r5de5kueedxyqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqq2v3y60yxxn4mq",
            ),
        ];
        for (id, want) in cases {
            assert_eq!(encode("cl", id, &old).as_deref(), Ok(want));
        }
        let seed: [u8; 32] = [
            0xde, 0xe1, 0x4e, 0x98, 0x28, 0x9e, 0xff, 0x18, 0x33, 0x6f, 0xe0, 0xec, 0x36, 0x31,
            0x58, 0xe3, 0x0d, 0xb1, 0x3c, 0xc4, 0x6c, 0x5b, 0xf4, 0xdf, 0xbf, 0x93, 0x30, 0x4a,
            0x3b, 0x9c, 0x52, 0x17,
        ];
        assert_eq!(
            encode("cl", "stra", &seed).as_deref(),
            Ok("cl10strasmms5axpgnml3svm0urkrvv2cuvxmz0xyd3dlfhaljvcy5wuu2gts07pad39rz85w6")
        );
        // BIP-93's own residue start for `ms` is this code's start after `ms` is read.
        let ms = b"ms"
            .iter()
            .map(|c| c >> 5)
            .chain([0])
            .chain(b"ms".iter().map(|c| c & 31));
        assert_eq!(polymod(ms), 0x23181b3);
    }

    #[test]
    fn refuses_identifiers_as_cln() {
        let s = [0u8; 32];
        for (id, why) in [
            ("", "must be 4 characters"),
            ("xxxxx", "must be 4 characters"),
            ("CLNX", "must be lower-case"),
            ("Clnx", "must be lower-case"),
            ("clnX", "must be lower-case"),
            ("cln1", "must be valid bech32 string"),
            ("clno", "must be valid bech32 string"),
            ("clnb", "must be valid bech32 string"),
            ("clni", "must be valid bech32 string"),
        ] {
            let e = encode("cl", id, &s).err().unwrap_or_default();
            assert!(e.contains(why), "{id}: {e}");
        }
    }

    #[test]
    fn identifier_from_the_alias_as_cln() {
        assert_eq!(id_from_alias("JUNIORBEAM"), "junr");
        assert_eq!(id_from_alias("J1U1IOBiobN"), "junx");
        assert_eq!(id_from_alias(""), "xxxx");
        assert_eq!(id_from_alias("héllo wörld"), "hllw");
    }

    #[test]
    fn passphrases_compare_whole() {
        assert!(same_secret(b"abc", b"abc"));
        assert!(!same_secret(b"abc", b"abd"));
        assert!(!same_secret(b"abc", b"abcd"));
    }
}
