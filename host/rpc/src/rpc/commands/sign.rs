//! `signmessage` and `checkmessage`: the node key signs and checks messages the way CLN and
//! lnd do: `zbase32(recid + 31 || sig)` over `sha256d("Lightning Signed Message:" || msg)`.

use bitcoin::hashes::{Hash, sha256d};
use bitcoin::hex::FromHex;
use bitcoin::secp256k1::ecdsa::{RecoverableSignature, RecoveryId};
use bitcoin::secp256k1::{Message, PublicKey, Secp256k1, SecretKey};
use fulgur_protocol::RpcError;
use serde_json::{Value, json};

use super::pay::{engine, opt_pubkey};
use super::{Command, CommandFuture, Ctx, command};
use crate::rpc::params::{Params, opt, req};
use fulgur_base::{five_bit_groups, hex};

pub const SIGNMESSAGE: Command = Command::new("signmessage", &[req("message")], run_signmessage);

pub const CHECKMESSAGE: Command = Command::new(
    "checkmessage",
    &[req("message"), req("zbase"), opt("pubkey")],
    run_checkmessage,
);

pub const MAKESECRET: Command =
    Command::new("makesecret", &[opt("hex"), opt("string")], run_makesecret);

/// `makesecret [hex] [string]`: a secret derived from `hsm_secret` and the data given (one of
/// the two), the same on every start: plugins use it for keys of their own.
fn run_makesecret(ctx: Ctx, p: Params) -> CommandFuture {
    command(async move {
        let data = match (p.get("hex"), p.opt_str("string")?) {
            (Some(_), Some(_)) => {
                return Err(RpcError::invalid_params("Cannot have both hex and string"));
            }
            (Some(v), None) => v
                .as_str()
                .and_then(|s| Vec::<u8>::from_hex(s).ok())
                .ok_or_else(|| super::pay::bad_param("hex", "should be a hex value", v))?,
            (None, Some(s)) => s.into_bytes(),
            (None, None) => {
                return Err(RpcError::invalid_params("Must have either hex or string"));
            }
        };
        let secret = crate::lightning::keys::derive_secret(&ctx.node.secret_base, &data);
        Ok(json!({ "secret": hex(&secret) }))
    })
}

const ZBASE32: &[u8; 32] = b"ybndrfg8ejkmcpqxot1uwisza345h769";
const PREFIX: &[u8] = b"Lightning Signed Message:";

/// zbase32 (most significant bit first, no padding).
pub fn zbase32_encode(data: &[u8]) -> String {
    five_bit_groups(data)
        .into_iter()
        .map(|v| ZBASE32[usize::from(v)] as char)
        .collect()
}

/// The inverse of [`zbase32_encode`] (bits left over at the end are dropped); `None` on a
/// character outside the alphabet.
pub fn zbase32_decode(s: &str) -> Option<Vec<u8>> {
    let values = s
        .bytes()
        .map(|c| ZBASE32.iter().position(|x| *x == c).map(|v| v as u8))
        .collect::<Option<Vec<u8>>>()?;
    Some(fulgur_base::eight_bit_groups(values).0)
}

fn digest(message: &str) -> Message {
    let h = sha256d::Hash::hash(&[PREFIX, message.as_bytes()].concat());
    Message::from_digest(h.to_byte_array())
}

/// `signmessage`'s result: the compact signature (hex), the recovery id (hex byte) and zbase.
pub fn sign_message(message: &str, key: &SecretKey) -> Value {
    let sig = Secp256k1::signing_only().sign_ecdsa_recoverable(&digest(message), key);
    let (recid, compact) = sig.serialize_compact();
    let recid = recid.to_i32() as u8;
    let mut z = vec![recid + 31];
    z.extend_from_slice(&compact);
    json!({
        "signature": hex(&compact),
        "recid": hex(&[recid]),
        "zbase": zbase32_encode(&z),
    })
}

/// Why a zbase signature cannot even be read (CLN's `-32602` messages).
pub fn parse_zbase(zbase: &str) -> Result<RecoverableSignature, String> {
    let raw = zbase32_decode(zbase).ok_or("zbase is not valid zbase32")?;
    if raw.len() != 65 {
        return Err(format!(
            "zbase is too {}",
            if raw.len() < 65 { "short" } else { "long" }
        ));
    }
    RecoveryId::from_i32(i32::from(raw[0]) - 31)
        .and_then(|id| RecoverableSignature::from_compact(&raw[1..], id))
        .map_err(|_| "cannot parse zbase signature".to_string())
}

/// The key that signed `message` with `sig`, if recovery succeeds.
pub fn recover(message: &str, sig: &RecoverableSignature) -> Option<PublicKey> {
    Secp256k1::verification_only()
        .recover_ecdsa(&digest(message), sig)
        .ok()
}

fn run_signmessage(ctx: Ctx, p: Params) -> CommandFuture {
    command(async move {
        let message = p.str("message")?;
        if message.len() > 65535 {
            return Err(RpcError::invalid_params("Message must be < 64k"));
        }
        let l = engine(&ctx.node)?;
        Ok(sign_message(&message, &l.node_secret_key()))
    })
}

fn run_checkmessage(ctx: Ctx, p: Params) -> CommandFuture {
    command(async move {
        let parsed = (|| {
            let message = p.str("message")?;
            let zbase = p.str("zbase")?;
            let pubkey = opt_pubkey(&p, "pubkey")?;
            let sig = parse_zbase(&zbase).map_err(RpcError::invalid_params)?;
            Ok::<_, RpcError>((message, pubkey, sig))
        })();
        let (message, pubkey, sig) = parsed?;
        let Some(key) = recover(&message, &sig) else {
            return Ok(json!({"verified": false}));
        };
        if let Some(given) = pubkey {
            return Ok(json!({"pubkey": key.to_string(), "verified": given == key}));
        }
        // Without a pubkey, only a key of the graph counts (it signed gossip), as in CLN.
        let known = ctx.node.lightning.get().is_some_and(|l| l.knows_node(&key));
        if known {
            Ok(json!({"pubkey": key.to_string(), "verified": true}))
        } else {
            Err(RpcError::new(1301, "pubkey not found in the graph")
                .with_data(json!({"claimed_key": key.to_string()})))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    // CLN's documented examples (doc/schemas/signmessage.json, checkmessage.json): signed by
    // node 033845...799a.
    const CLN_KEY: &str = "033845802d25b4e074ccfd7cd8b339a41dc75bf9978a034800444b51d42b07799a";
    const CLN_VECTORS: &[(&str, &str, &str, &str)] = &[
        (
            "this is a test!",
            "b313a7ef5cec27f8be4e6389d208a5646ce3fa8fde4c5a2b84cf5d92e2c997f14f1c53fd72897f2025add34939d918a2abd2e2f675c4402b106f7777b364f85b",
            "00",
            "d63t8j9xmusnx6f6j3tauwoewi1g3a94t9xrastmou8i5rzn3gm9nuahkx6zfnm9ry145w4j88ctteim4mtxc7qreyity55zq63sj6n5",
        ),
        (
            "message for you",
            "a797422126bb3ecee680e2edc8a4c5afc6ebaf2a05a03c37e5ab62214ea5edc05a7db3b45ee8db4c022e6765b7258c82d0c769c8798e0c6baeb94f6fa9275302",
            "01",
            "rnu3qotbr47u7uzgodtq51fraszhp47xfen4yxbzhsisrekqwzshysu7sq4f74g5jobnh35fsh1a3ysoa7who6cqbti47qkxp6w1qwan",
        ),
    ];

    fn key(b: u8) -> SecretKey {
        SecretKey::from_slice(&[b; 32]).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn cln_signatures_recover_clns_key_and_zbase_matches_its_parts() {
        for (msg, sig_hex, recid, zbase) in CLN_VECTORS {
            let sig = parse_zbase(zbase).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(
                recover(msg, &sig).map(|k| k.to_string()).as_deref(),
                Some(CLN_KEY)
            );
            let raw = zbase32_decode(zbase).unwrap_or_default();
            assert_eq!(hex(&raw[1..]), *sig_hex);
            assert_eq!(hex(&[raw[0] - 31]), *recid);
            assert_eq!(zbase32_encode(&raw), *zbase);
            // A different message recovers a different key.
            let other = recover(&format!("{msg}."), &sig).map(|k| k.to_string());
            assert_ne!(other.as_deref(), Some(CLN_KEY));
        }
    }

    #[test]
    fn our_signatures_match_ldk_and_round_trip() {
        let sk = key(7);
        let pk = PublicKey::from_secret_key(&Secp256k1::signing_only(), &sk);
        for msg in ["", "hello", "Lightning Signed Message:", &"x".repeat(1000)] {
            let v = sign_message(msg, &sk);
            let zbase = v["zbase"].as_str().unwrap_or_default();
            assert_eq!(
                zbase,
                lightning::util::message_signing::sign(msg.as_bytes(), &sk)
            );
            assert_eq!(v["signature"].as_str().map(str::len), Some(128));
            assert_eq!(v["recid"].as_str().map(str::len), Some(2));
            let sig = parse_zbase(zbase).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(recover(msg, &sig), Some(pk));
            assert!(lightning::util::message_signing::verify(
                msg.as_bytes(),
                zbase,
                &pk
            ));
        }
    }

    #[test]
    fn tampered_or_malformed_signatures_do_not_verify() {
        let sk = key(9);
        let pk = PublicKey::from_secret_key(&Secp256k1::signing_only(), &sk);
        let v = sign_message("pay me", &sk);
        let zbase = v["zbase"].as_str().unwrap_or_default().to_string();
        let sig = parse_zbase(&zbase).unwrap_or_else(|e| panic!("{e}"));
        assert_ne!(recover("pay me!", &sig), Some(pk));
        // Flip one character of the signature part.
        let mut chars: Vec<char> = zbase.chars().collect();
        chars[40] = if chars[40] == 'y' { 'b' } else { 'y' };
        let tampered: String = chars.into_iter().collect();
        if let Ok(s) = parse_zbase(&tampered) {
            assert_ne!(recover("pay me", &s), Some(pk));
        }
        assert_eq!(parse_zbase("0l"), Err("zbase is not valid zbase32".into()));
        assert_eq!(parse_zbase("yy"), Err("zbase is too short".into()));
        assert_eq!(
            parse_zbase(&format!("{zbase}yyyy")),
            Err("zbase is too long".into())
        );
        // Header byte 31 + 4 is no recovery id.
        let mut raw = zbase32_decode(&zbase).unwrap_or_default();
        raw[0] = 35;
        assert_eq!(
            parse_zbase(&zbase32_encode(&raw)),
            Err("cannot parse zbase signature".into())
        );
    }
}
