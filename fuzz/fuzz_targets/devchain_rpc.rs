#![no_main]
//! devchain's JSON-RPC over HTTP: the request head parser, then the body through
//! `Rpc::handle_body` (JSON-RPC envelope, batches, named and positional params, amounts,
//! hashes, addresses and raw transactions) on a fresh in-memory chain per input, so that
//! every input replays alone. Mining is capped at 2 blocks per call: more is slow, not
//! interesting.
//!
//! Input: the HTTP head up to the first NUL byte, then the body.

use std::sync::OnceLock;

use devchain::chain::{Chain, ChainOptions};
use devchain::faucet::Faucet;
use devchain::rpc::Rpc;
use serde_json::Value;

fn faucet() -> Faucet {
    static KEY: OnceLock<bitcoin::secp256k1::SecretKey> = OnceLock::new();
    let key = KEY.get_or_init(|| {
        bitcoin::secp256k1::SecretKey::from_slice(&[7u8; 32]).unwrap_or_else(|e| panic!("{e}"))
    });
    Faucet::from_secret(*key)
}

/// Whether a request asks for more than 2 blocks (`generatetoaddress`'s `nblocks`).
fn too_many_blocks(v: &Value) -> bool {
    match v {
        Value::Array(items) => items.iter().any(too_many_blocks),
        Value::Object(o) => {
            let Some(m) = o.get("method").and_then(Value::as_str) else {
                return false;
            };
            if m != "generatetoaddress" {
                return false;
            }
            let n = match o.get("params") {
                Some(Value::Array(a)) => a.first(),
                Some(Value::Object(p)) => p.get("nblocks"),
                _ => None,
            };
            !n.and_then(Value::as_i64).is_some_and(|n| n <= 2)
        }
        _ => false,
    }
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let (head, body) = match data.iter().position(|b| *b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (&[][..], data),
    };
    if let Ok(text) = std::str::from_utf8(head) {
        let _ = devchain::server::parse_head(text);
    }
    if let Ok(v) = serde_json::from_slice::<Value>(body)
        && too_many_blocks(&v)
    {
        return;
    }
    let chain = match Chain::open(ChainOptions {
        datadir: None,
        initial_blocks: 0,
        faucet: Some(faucet()),
    }) {
        Ok(c) => c,
        Err(e) => panic!("an empty chain must open: {e}"),
    };
    let rpc = Rpc::new(chain);
    let (status, reply) = rpc.handle_body(body);
    assert!(matches!(status, 200 | 400 | 404 | 500), "status {status}");
    assert!(
        serde_json::from_slice::<Value>(&reply).is_ok(),
        "the reply is not JSON"
    );
});
