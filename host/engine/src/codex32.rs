//! BIP-93 (codex32) strings of a 32-byte secret, as CLN writes `hsm_secret` for paper
//! backups (`exposesecret`) and reads it back (`--recover`): human-readable part `cl`,
//! threshold 0 (an unshared secret), a four-character identifier, share index `s`, the
//! secret in bech32 characters, and the 13-character checksum. Only the short checksum
//! (strings of up to 93 data characters) is read, which every 16- to 64-byte secret uses.

/// The bech32 alphabet.
pub const CHARSET: &[u8; 32] = b"qpzry9x8gf2tvdw0s3jn54khce6mua7l";

/// BIP-93's checksum generator (the code's five generator terms) and target residue.
const GEN: [u128; 5] = [
    0x19dc500ce73fde210,
    0x1bfae00def77fe529,
    0x1fbd920fffe7bee52,
    0x1739640bdeee3fdad,
    0x07729a039cfc75f5a,
];
const TARGET: u128 = 0x10ce0795c2fd1e62a;

/// BIP-93's checksum over 5-bit values.
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
    data.extend(fulgur_base::five_bit_groups(secret));
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

/// A codex32 string, read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Codex32 {
    /// The threshold, `0` for an unshared secret, else 2 to 9.
    pub threshold: u8,
    /// The four-character identifier.
    pub id: String,
    /// The share index (`s` for the secret itself).
    pub share: char,
    /// The payload (the secret, when `threshold` is 0).
    pub payload: Vec<u8>,
}

/// Reads the codex32 string `s` under the human-readable part `hrp`; the error says why
/// not (as CLN's words go, where it has some).
pub fn decode(hrp: &str, s: &str) -> Result<Codex32, String> {
    let has_lower = s.bytes().any(|c| c.is_ascii_lowercase());
    let has_upper = s.bytes().any(|c| c.is_ascii_uppercase());
    if has_lower && has_upper {
        return Err("Not a valid bech32 string: mixed case".into());
    }
    let s = s.to_ascii_lowercase();
    let Some((h, data)) = s.rsplit_once('1') else {
        return Err("Separator doesn't exist!".into());
    };
    if h != hrp {
        return Err(format!("Invalid hrp {h}!"));
    }
    let values: Vec<u8> = data
        .bytes()
        .map(|c| CHARSET.iter().position(|x| *x == c).map(|p| p as u8))
        .collect::<Option<_>>()
        .ok_or_else(|| "Invalid character in data!".to_string())?;
    if values.len() > 93 {
        return Err("Long codex32 strings are not supported".into());
    }
    if values.len() < 6 + 13 {
        return Err("Too short!".into());
    }
    let hrp_values = hrp
        .bytes()
        .map(|c| c >> 5)
        .chain([0])
        .chain(hrp.bytes().map(|c| c & 31));
    if polymod(hrp_values.chain(values.iter().copied())) != TARGET {
        return Err("Invalid checksum!".into());
    }
    let threshold_char = data.as_bytes()[0];
    let threshold = match threshold_char {
        b'0' => 0,
        b'2'..=b'9' => threshold_char - b'0',
        c => return Err(format!("Invalid threshold {}", c as char)),
    };
    let id: String = data.bytes().skip(1).take(4).map(char::from).collect();
    let share = data.as_bytes()[5] as char;
    if threshold == 0 && share != 's' {
        return Err("Expected share index s for threshold 0!".into());
    }
    // The payload's 5-bit groups as bytes; the last one's leftover bits (fewer than 5) are
    // dropped. (BIP-93's own first vector pads with non-zero bits: they are not checked.)
    let (payload, left) =
        fulgur_base::eight_bit_groups(values[6..values.len() - 13].iter().copied());
    if left >= 5 {
        return Err("Invalid payload padding!".into());
    }
    Ok(Codex32 {
        threshold,
        id,
        share,
        payload,
    })
}

/// `--recover`'s secret: a codex32 string (`cl1...`, an unshared 32-byte secret) or 64 hex
/// characters. CLN's words for what it refuses.
pub fn recover_secret(arg: &str) -> Result<[u8; 32], String> {
    match decode("cl", arg) {
        Ok(c) => {
            if c.threshold != 0 || c.share != 's' {
                return Err("This is only one share of codex32!".into());
            }
            c.payload
                .try_into()
                .map_err(|_| "Invalid length: must be 32 bytes".to_string())
        }
        Err(codex32_fail) => match fulgur_base::unhex(arg) {
            Some(b) => b
                .try_into()
                .map_err(|_| "Invalid length: must be 32 bytes".to_string()),
            None if arg.starts_with("cl") => Err(codex32_fail),
            None => Err(
                "Not a valid hex or codex32 string (this node's hsm_secret is 32 \
                         bytes: a mnemonic cannot give it)"
                    .into(),
            ),
        },
    }
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
    fn decodes_what_it_encodes_and_clns_strings() {
        let s = "cl10strasmms5axpgnml3svm0urkrvv2cuvxmz0xyd3dlfhaljvcy5wuu2gts07pad39rz85w6";
        let c = decode("cl", s).unwrap();
        assert_eq!((c.threshold, c.id.as_str(), c.share), (0, "stra", 's'));
        assert_eq!(encode("cl", "stra", &c.payload).as_deref(), Ok(s));
        assert_eq!(recover_secret(s), Ok(c.payload.clone().try_into().unwrap()));
        assert_eq!(decode("cl", &s.to_ascii_uppercase()), Ok(c));
        // BIP-93's first vector: a 16-byte secret under `ms`.
        let v = decode("ms", "ms10testsxxxxxxxxxxxxxxxxxxxxxxxxxx4nzvca9cmczlw").unwrap();
        assert_eq!(
            fulgur_base::hex(&v.payload),
            "318c6318c6318c6318c6318c6318c631"
        );
    }

    #[test]
    fn refuses_what_is_not_a_secret() {
        let s = "cl10strasmms5axpgnml3svm0urkrvv2cuvxmz0xyd3dlfhaljvcy5wuu2gts07pad39rz85w6";
        let mut flipped = s.as_bytes().to_vec();
        flipped[20] = if flipped[20] == b'q' { b'p' } else { b'q' };
        let flipped = String::from_utf8(flipped).unwrap();
        assert_eq!(
            decode("cl", &flipped).err().as_deref(),
            Some("Invalid checksum!")
        );
        assert!(decode("ms", s).is_err());
        assert!(
            decode(
                "cl",
                "Cl10strasmms5axpgnml3svm0urkrvv2cuvxmz0xyd3dlfhaljvcy5wuu2gts07pad39rz85w6"
            )
            .is_err()
        );
        assert_eq!(recover_secret(&"ab".repeat(32)), Ok([0xab; 32]));
        assert_eq!(
            recover_secret(&"ab".repeat(31)).err().as_deref(),
            Some("Invalid length: must be 32 bytes")
        );
        assert!(recover_secret("abandon abandon").is_err());
        assert_eq!(
            recover_secret(&flipped).err().as_deref(),
            Some("Invalid checksum!")
        );
    }
}
