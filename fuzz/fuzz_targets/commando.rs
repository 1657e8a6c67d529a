#![no_main]
//! What a peer sends the `commando` plugin (`plugins/commando/src/lib.rs`): a custom
//! message's framing, a gathered request checked before its rune is, and a reply to one of
//! our requests. The first byte picks which; the rest is the peer's bytes. A panic is a
//! bug; so is a frame that does not give back its bytes, a request accepted without a
//! method, an id or a rune-shaped rune, or a reply read as success while it carries an
//! error.

use fulgur_plugin_commando::{
    CMD_CONTINUES, CMD_TERM, ERROR_LOCAL, frames, parse_frame, read_reply, read_request,
    rune_shaped, unhex,
};
use serde_json::Value;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let [mode, rest @ ..] = data else {
        return;
    };
    match mode % 3 {
        0 => {
            if let Some((ty, id, body)) = parse_frame(rest) {
                // Framing it again gives the same message back.
                let again = frames(ty, ty, id, body);
                if body.is_empty() {
                    assert!(again.is_empty());
                } else {
                    assert_eq!(again.len(), 1.max(body.len().div_ceil(65_000)));
                    let first = unhex(&again[0]).unwrap_or_default();
                    assert_eq!(parse_frame(&first).map(|(t, i, _)| (t, i)), Some((ty, id)));
                }
            } else {
                assert!(rest.len() < 10);
            }
            // A body split and gathered again is the same body.
            let parts = frames(CMD_CONTINUES, CMD_TERM, 1, rest);
            let mut gathered = vec![];
            for (i, p) in parts.iter().enumerate() {
                let m = unhex(p).unwrap_or_default();
                let (ty, id, b) = parse_frame(&m).unwrap_or((0, 0, &[]));
                assert_eq!(id, 1);
                assert_eq!(ty == CMD_TERM, i + 1 == parts.len());
                gathered.extend_from_slice(b);
            }
            assert_eq!(gathered, rest);
        }
        1 => {
            if let Ok(r) = read_request(rest) {
                assert!(rune_shaped(&r.rune));
                assert!(
                    r.params
                        .as_ref()
                        .is_none_or(|p| p.is_object() || p.is_array())
                );
                let v: Value = serde_json::from_slice(rest).unwrap_or(Value::Null);
                assert!(v.get("method").is_some() && v.get("id") == Some(&r.id));
            }
        }
        _ => {
            let (outcome, _) = read_reply(rest, "commando:0");
            let v: Value = serde_json::from_slice(rest).unwrap_or(Value::Null);
            match &outcome {
                Ok(result) => {
                    assert!(v.get("error").is_none());
                    assert_eq!(v.get("result"), Some(result));
                }
                // What is not a JSON object is our own error, never the peer's.
                Err(e) if !v.is_object() => assert_eq!(e.code, ERROR_LOCAL),
                Err(_) => {}
            }
        }
    }
});
