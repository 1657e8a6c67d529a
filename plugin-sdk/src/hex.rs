//! Hex as plugins meet it in CLN's JSON: node ids, hashes, custom messages, onion payloads.

/// Lower-case hex of `data`.
pub fn encode(data: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(data.len() * 2);
    for b in data {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 15)] as char);
    }
    s
}

/// The bytes of hex `s` (either case); `None` for an odd length or a non-hex character
/// (a sign included, which `u8::from_str_radix` would take).
pub fn decode(s: &str) -> Option<Vec<u8>> {
    let digit = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let b = s.as_bytes();
    if !b.len().is_multiple_of(2) {
        return None;
    }
    b.chunks(2)
        .map(|p| Some(digit(p[0])? << 4 | digit(p[1])?))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_what_is_not_hex() {
        assert_eq!(encode(&[0x4c, 0x4f, 0x00, 0xff]), "4c4f00ff");
        assert_eq!(decode("4C4f00FF"), Some(vec![0x4c, 0x4f, 0x00, 0xff]));
        assert_eq!(decode(""), Some(vec![]));
        for bad in ["4c4", "zz", "+1", "-1", " 1", "é1"] {
            assert_eq!(decode(bad), None, "{bad}");
        }
    }
}
