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

use crate::lightning::codex32::{CHARSET, encode};

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

#[cfg(test)]
mod tests {
    use super::*;

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
