//! Framing of JSON-RPC messages on byte streams.
//!
//! Reading: a stream of concatenated JSON objects, with or without whitespace between them
//! (CLN's own reader works this way, and `pyln-client` and `lightning-cli` write requests
//! with no terminator). The decoder scans incrementally, so a message that arrives in many
//! pieces is scanned once, and refuses to buffer more than a configured number of bytes.
//!
//! Writing: one compact JSON object followed by `"\n\n"` — `pyln-client` and `cln-plugin`
//! split their input on that two-byte sequence and only on it.

use bytes::{BufMut, BytesMut};
use serde::Serialize;
use serde_json::Value;
use tokio_util::codec::{Decoder, Encoder};

/// The terminator written after every message.
pub const TERMINATOR: &[u8] = b"\n\n";

/// Default upper bound for one message read from a socket or a plugin: 64 MiB, room for
/// the largest blocks a Bitcoin backend plugin may pass through.
pub const DEFAULT_MAX_MESSAGE: usize = 64 * 1024 * 1024;

/// Why a stream could not be decoded. After any of these the stream cannot be
/// resynchronised: the reader should answer (if it can) and close it.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The underlying reader failed.
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// A message grew beyond the configured limit before it was complete.
    #[error("message larger than {limit} bytes")]
    TooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// The bytes are not a JSON object or array.
    #[error("invalid JSON: {0}")]
    Invalid(String),
}

/// `frame` with every raw control character inside a string (U+0000 to U+001F, which JSON
/// requires escaped) written as its `\u00XX` escape; `None` if there is none.
fn escape_raw_controls(frame: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(frame.len() + 16);
    let (mut in_string, mut escaped, mut changed) = (false, false, false);
    for &b in frame {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            } else if b < 0x20 {
                out.extend_from_slice(format!("\\u{b:04x}").as_bytes());
                changed = true;
                continue;
            }
        } else if b == b'"' {
            in_string = true;
        }
        out.push(b);
    }
    changed.then_some(out)
}

/// Incremental decoder for concatenated JSON values; implements tokio-util's [`Decoder`]
/// (and [`Encoder`], which writes compact JSON and `"\n\n"`).
#[derive(Debug, Clone)]
pub struct JsonCodec {
    max_len: usize,
    started: bool,
    scanned: usize,
    depth: usize,
    in_string: bool,
    escaped: bool,
}

impl JsonCodec {
    /// A codec that refuses messages longer than `max_len` bytes.
    pub fn new(max_len: usize) -> Self {
        JsonCodec {
            max_len,
            started: false,
            scanned: 0,
            depth: 0,
            in_string: false,
            escaped: false,
        }
    }

    fn finish(&mut self, src: &mut BytesMut, end: usize) -> Result<Option<Value>, FrameError> {
        // A message that arrived whole in one read is held to the limit too.
        if end > self.max_len {
            return Err(FrameError::TooLarge {
                limit: self.max_len,
            });
        }
        let frame = src.split_to(end);
        self.reset();
        match serde_json::from_slice(&frame) {
            Ok(v) => Ok(Some(v)),
            // CLN's parser takes raw control characters (a newline, a tab) inside strings,
            // and plugins written for it send them (CLN's own `cowsay.sh`): read them as
            // their escapes.
            Err(e) if e.is_syntax() => match escape_raw_controls(&frame) {
                Some(fixed) => serde_json::from_slice(&fixed)
                    .map(Some)
                    .map_err(|e| FrameError::Invalid(e.to_string())),
                None => Err(FrameError::Invalid(e.to_string())),
            },
            Err(e) => Err(FrameError::Invalid(e.to_string())),
        }
    }

    /// A top-level number or literal: valid JSON but never a request. A number at the
    /// very end of the buffer is taken as complete.
    fn scalar(&mut self, src: &mut BytesMut) -> Result<Option<Value>, FrameError> {
        let mut stream = serde_json::Deserializer::from_slice(src).into_iter::<Value>();
        match stream.next() {
            Some(Ok(v)) => {
                let end = stream.byte_offset();
                let _ = src.split_to(end);
                self.reset();
                Ok(Some(v))
            }
            Some(Err(e)) if e.is_eof() && src.len() <= self.max_len => Ok(None),
            Some(Err(e)) => Err(FrameError::Invalid(e.to_string())),
            None => Ok(None),
        }
    }

    fn reset(&mut self) {
        self.started = false;
        self.scanned = 0;
        self.depth = 0;
        self.in_string = false;
        self.escaped = false;
    }
}

impl Default for JsonCodec {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_MESSAGE)
    }
}

impl Decoder for JsonCodec {
    type Item = Value;
    type Error = FrameError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Value>, FrameError> {
        if !self.started {
            // Between messages: drop whitespace, then the next byte opens a value. Objects,
            // arrays and strings are scanned; any other JSON value (a number, `null`,
            // `true`) is parsed directly, so the reader can answer "not an object".
            let skip = src.iter().take_while(|b| b.is_ascii_whitespace()).count();
            let _ = src.split_to(skip);
            self.reset();
            match src.first() {
                None => return Ok(None),
                Some(b'{') | Some(b'[') => {}
                Some(b'"') => {
                    self.in_string = true;
                    self.scanned = 1;
                }
                Some(_) => return self.scalar(src),
            }
            self.started = true;
        }
        let mut i = self.scanned;
        let bytes = &src[..];
        while i < bytes.len() {
            let b = bytes[i];
            i += 1;
            if self.in_string {
                if self.escaped {
                    self.escaped = false;
                } else if b == b'\\' {
                    self.escaped = true;
                } else if b == b'"' {
                    self.in_string = false;
                    if self.depth == 0 {
                        return self.finish(src, i);
                    }
                }
                continue;
            }
            match b {
                b'"' => self.in_string = true,
                b'{' | b'[' => self.depth += 1,
                b'}' | b']' => {
                    self.depth -= 1;
                    if self.depth == 0 {
                        return self.finish(src, i);
                    }
                }
                _ => {}
            }
        }
        self.scanned = i;
        if src.len() > self.max_len {
            return Err(FrameError::TooLarge {
                limit: self.max_len,
            });
        }
        Ok(None)
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<Value>, FrameError> {
        match self.decode(src)? {
            Some(v) => Ok(Some(v)),
            None if src.iter().all(|b| b.is_ascii_whitespace()) => Ok(None),
            None => Err(FrameError::Invalid("stream ended inside a message".into())),
        }
    }
}

impl<T: Serialize> Encoder<&T> for JsonCodec {
    type Error = FrameError;

    fn encode(&mut self, item: &T, dst: &mut BytesMut) -> Result<(), FrameError> {
        let mut w = dst.writer();
        serde_json::to_writer(&mut w, item).map_err(|e| FrameError::Invalid(e.to_string()))?;
        w.into_inner().put_slice(TERMINATOR);
        Ok(())
    }
}

/// One message as bytes: compact JSON followed by `"\n\n"`.
pub fn encode_frame<T: Serialize + ?Sized>(item: &T) -> Vec<u8> {
    let mut out = serde_json::to_vec(item).unwrap_or_else(|_| b"{}".to_vec());
    out.extend_from_slice(TERMINATOR);
    out
}

/// A [`JsonCodec`] that owns its buffer, for code that receives bytes by hand (a WASM
/// guest, a blocking client).
#[derive(Debug, Default)]
pub struct FrameDecoder {
    codec: JsonCodec,
    buf: BytesMut,
}

impl FrameDecoder {
    /// A decoder refusing messages longer than `max_len` bytes.
    pub fn new(max_len: usize) -> Self {
        FrameDecoder {
            codec: JsonCodec::new(max_len),
            buf: BytesMut::new(),
        }
    }

    /// Appends received bytes.
    pub fn extend(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// The next complete value, `None` if more bytes are needed.
    pub fn next_value(&mut self) -> Option<Result<Value, FrameError>> {
        self.codec.decode(&mut self.buf).transpose()
    }

    /// Bytes received but not yet returned as a value.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn drain(dec: &mut FrameDecoder) -> Vec<Value> {
        let mut out = vec![];
        while let Some(v) = dec.next_value() {
            out.push(v.expect("valid"));
        }
        out
    }

    /// A decoder of at most `limit` bytes a message, given `bytes`.
    fn fed(limit: usize, bytes: &[u8]) -> FrameDecoder {
        let mut d = FrameDecoder::new(limit);
        d.extend(bytes);
        d
    }

    #[test]
    fn raw_control_characters_inside_strings_are_read_as_clns_parser_reads_them() {
        // A plugin's log line with a raw newline and tab (CLN's cowsay.sh), then a message
        // with an escaped quote and backslash before a raw newline.
        let mut d = fed(
            1000,
            b"{\"jsonrpc\":\"2.0\",\"method\":\"log\",\"params\":{\"message\":\"a\nb\tc\"}}\n\n\
              {\"s\":\"q\\\"\\\\\n\"}",
        );
        assert_eq!(
            drain(&mut d),
            vec![
                json!({"jsonrpc":"2.0","method":"log","params":{"message":"a\nb\tc"}}),
                json!({"s":"q\"\\\n"}),
            ]
        );
        // Outside strings a control character is whitespace or an error, as before.
        let mut d = fed(1000, b"{\"a\":\x01}");
        assert!(matches!(d.next_value(), Some(Err(FrameError::Invalid(_)))));
    }

    #[test]
    fn limit_applies_to_a_message_read_whole() {
        let mut d = fed(10, br#"{"a":"0123456789"}"#);
        assert!(matches!(
            d.next_value(),
            Some(Err(FrameError::TooLarge { limit: 10 }))
        ));
        let mut d = fed(10, br#"{"a":1}{"b":2}"#);
        assert_eq!(drain(&mut d), vec![json!({"a":1}), json!({"b":2})]);
    }

    #[test]
    fn splits_concatenated_messages() {
        let mut d = fed(1024, br#"{"a":1}{"b":"}{"}  {"c":[1,{"d":2}]}"#);
        assert_eq!(
            drain(&mut d),
            vec![json!({"a":1}), json!({"b":"}{"}), json!({"c":[1,{"d":2}]})]
        );
        assert_eq!(d.buffered(), 0);
    }

    #[test]
    fn joins_split_messages_byte_by_byte() {
        let msg = br#"{"jsonrpc":"2.0","id":"x\"y","params":{"s":"a\\"}}"#;
        let mut d = FrameDecoder::new(1024);
        let mut got = vec![];
        for b in msg.iter().chain(b"\n\n".iter()).chain(msg.iter()) {
            d.extend(&[*b]);
            got.extend(drain(&mut d));
        }
        assert_eq!(got.len(), 2);
        assert_eq!(got[0]["id"], json!("x\"y"));
        assert_eq!(got[1]["params"]["s"], json!("a\\"));
    }

    #[test]
    fn accepts_terminated_and_pretty_messages() {
        let mut d = fed(1024, b"{\n  \"a\": 1\n}\n\n\n{\"b\":2}\n\n");
        assert_eq!(drain(&mut d), vec![json!({"a":1}), json!({"b":2})]);
    }

    #[test]
    fn frames_top_level_strings() {
        let mut d = fed(1024, br#""a\"b"{"c":1}"#);
        assert_eq!(drain(&mut d), vec![json!("a\"b"), json!({"c":1})]);
    }

    #[test]
    fn refuses_garbage_and_oversize() {
        let mut d = fed(1024, b"42 null true");
        assert_eq!(drain(&mut d), vec![json!(42), json!(null), json!(true)]);
        d.extend(b"hello world\n");
        assert!(matches!(d.next_value(), Some(Err(FrameError::Invalid(_)))));

        let mut d = fed(16, br#"{"a":"0123456789012345678901234567890"#);
        assert!(matches!(
            d.next_value(),
            Some(Err(FrameError::TooLarge { limit: 16 }))
        ));

        let mut d = fed(1024, br#"{"a":tru}"#);
        assert!(matches!(d.next_value(), Some(Err(FrameError::Invalid(_)))));
    }

    #[test]
    fn relays_numbers_unchanged() {
        // Found by fuzz/frame_codec: without serde_json's `float_roundtrip` this long decimal
        // was read one ULP off the nearest double, and its re-encoding read back another
        // ULP off, so a number passed on from a plugin or a client changed on the way.
        let text = "33333333333333333333333333333333";
        let mut d = fed(1024, format!("[{text}]").as_bytes());
        let v = drain(&mut d);
        assert_eq!(v[0][0].as_f64(), text.parse::<f64>().ok());
        let mut again = FrameDecoder::new(1024);
        again.extend(&encode_frame(&v[0]));
        assert_eq!(drain(&mut again), v);
    }

    #[test]
    fn encodes_compact_with_terminator() {
        let out = encode_frame(&json!({"a":{"b":[1,2]}}));
        assert_eq!(out, b"{\"a\":{\"b\":[1,2]}}\n\n");
        let mut codec = JsonCodec::default();
        let mut buf = BytesMut::new();
        codec
            .encode(&json!({"x":"line\n\nbreak"}), &mut buf)
            .expect("encodes");
        assert_eq!(&buf[..], b"{\"x\":\"line\\n\\nbreak\"}\n\n");
    }
}
