#![no_main]
//! The framing codec shared by the RPC socket, plugin pipes, the SDK and fulgur-cli
//! (`fulgur_protocol::codec`), and the JSON-RPC envelope (`fulgur_protocol::jsonrpc`).
//!
//! Byte 0 picks how the rest of the input is cut into reads (1 to 16 bytes at a time, or
//! all at once with a small size limit). Checks: decoding in pieces gives the values that
//! decoding all at once gives (for streams of objects, arrays and strings: a top-level
//! number is complete only when the stream says so); every value survives encoding and
//! decoding again; every envelope survives `to_value` and `from_value`.

use bytes::BytesMut;
use fulgur_protocol::Message;
use fulgur_protocol::codec::{JsonCodec, encode_frame};
use serde_json::Value;
use tokio_util::codec::Decoder;

const LIMIT: usize = 1 << 16;

/// Decodes `data` fed `step` bytes at a time (all at once for 0).
fn decode(data: &[u8], step: usize, limit: usize) -> (Vec<Value>, bool) {
    let mut codec = JsonCodec::new(limit);
    let mut buf = BytesMut::new();
    let mut out = vec![];
    let chunks: Vec<&[u8]> = if step == 0 {
        vec![data]
    } else {
        data.chunks(step).collect()
    };
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(v)) => out.push(v),
                Ok(None) => break,
                Err(_) => return (out, true),
            }
        }
    }
    loop {
        match codec.decode_eof(&mut buf) {
            Ok(Some(v)) => out.push(v),
            Ok(None) => return (out, false),
            Err(_) => return (out, true),
        }
    }
}

fn scalar(v: &Value) -> bool {
    matches!(v, Value::Null | Value::Bool(_) | Value::Number(_))
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some((&how, data)) = data.split_first() else {
        return;
    };
    let (whole, whole_failed) = decode(data, 0, LIMIT);
    let step = usize::from(how % 17);
    let limit = if how & 0x80 != 0 { 64 } else { LIMIT };
    let (pieces, pieces_failed) = decode(data, step, limit);
    if limit == LIMIT && !whole.iter().any(scalar) && !pieces.iter().any(scalar) {
        let n = whole.len().min(pieces.len());
        assert_eq!(whole[..n], pieces[..n], "pieces decode differently");
        if !whole_failed && !pieces_failed {
            assert_eq!(whole.len(), pieces.len(), "pieces give another count");
        }
    }
    for v in whole {
        let frame = encode_frame(&v);
        let (again, failed) = decode(&frame, 0, usize::MAX);
        assert!(!failed, "an encoded frame does not decode");
        assert_eq!(
            again,
            vec![v.clone()],
            "encode then decode changes the value"
        );
        if let Ok(m) = Message::from_value(v) {
            let back = Message::from_value(m.to_value());
            assert_eq!(back.as_ref(), Ok(&m), "envelope round trip");
        }
    }
});
