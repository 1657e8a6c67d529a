//! CLN's runes as pure logic: the format (ccan/rune, itself the format of the `runes` Python
//! library), restricting a rune, checking that a rune derives from the node's master rune,
//! and evaluating its restrictions. No I/O, no clock, no JSON: [`crate::runebook`] keeps the
//! node's runes and their use; the RPC turns both into CLN's JSON.
//!
//! A rune is `base64url(authcode || restrictions)` (with `=` padding, as CLN writes it; with
//! or without it on reading). `authcode` is a SHA-256 midstate: the master's is the state
//! after hashing the secret and SHA-256's end padding; each restriction added hashes its
//! encoding and the end padding again. Anyone can add a restriction; removing one needs the
//! secret. Restrictions are `&`-separated, each a `|`-separated list of alternatives
//! `field` `condition` `value` (a field is everything up to the first ASCII punctuation
//! other than `_`); `\` escapes `\`, `|` and `&` in values. The first restriction may be the
//! unique id: an empty field, `=`, the id, optionally `-version`.
//!
//! ```
//! use fulgur_engine::runes::{Rune, Restriction};
//! let master = Rune::master(&[7; 32]);
//! let mut rune = master.derive(0);
//! rune.add_restriction(Restriction::parse("method^list|method^get").unwrap()).unwrap();
//! let text = rune.to_base64();
//! let back = Rune::from_base64(&text).unwrap();
//! assert!(back.is_derived_from(&master).is_ok());
//! assert_eq!(back.unique_id(), Some("0"));
//! ```

use bitcoin::base64::{self, Engine as _};
use bitcoin::hashes::{HashEngine as _, sha256};

/// The condition of an alternative, named by its character.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Condition {
    /// `!`: the field is missing.
    Missing,
    /// `=`: equal.
    Equal,
    /// `/`: not equal.
    NotEqual,
    /// `^`: starts with.
    Begins,
    /// `$`: ends with.
    Ends,
    /// `~`: contains.
    Contains,
    /// `<`: integer less than.
    IntLess,
    /// `>`: integer greater than.
    IntGreater,
    /// `{`: sorts before (bytewise).
    LexBefore,
    /// `}`: sorts after (bytewise).
    LexAfter,
    /// `#`: a comment, always met.
    Comment,
}

impl Condition {
    /// The condition written `c`, if any.
    pub fn from_char(c: char) -> Option<Condition> {
        Some(match c {
            '!' => Condition::Missing,
            '=' => Condition::Equal,
            '/' => Condition::NotEqual,
            '^' => Condition::Begins,
            '$' => Condition::Ends,
            '~' => Condition::Contains,
            '<' => Condition::IntLess,
            '>' => Condition::IntGreater,
            '{' => Condition::LexBefore,
            '}' => Condition::LexAfter,
            '#' => Condition::Comment,
            _ => return None,
        })
    }

    /// Its character.
    pub fn as_char(self) -> char {
        match self {
            Condition::Missing => '!',
            Condition::Equal => '=',
            Condition::NotEqual => '/',
            Condition::Begins => '^',
            Condition::Ends => '$',
            Condition::Contains => '~',
            Condition::IntLess => '<',
            Condition::IntGreater => '>',
            Condition::LexBefore => '{',
            Condition::LexAfter => '}',
            Condition::Comment => '#',
        }
    }
}

/// One condition on one field; a restriction is met when any of its alternatives is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alternative {
    /// The field (empty only in the unique id).
    pub field: String,
    /// The condition.
    pub condition: Condition,
    /// The value compared with (unescaped).
    pub value: String,
}

/// Alternatives, one of which must be met.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restriction {
    /// At least one.
    pub alternatives: Vec<Alternative>,
}

/// Why a rune or a restriction could not be read or extended.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    /// Not base64url, shorter than the 32-byte authcode, or with a NUL byte in the text.
    #[error("not base64")]
    Base64,
    /// The restriction text is not UTF-8.
    #[error("restrictions are not UTF-8")]
    Utf8,
    /// An alternative has no valid condition character after its field.
    #[error("invalid condition")]
    Condition,
    /// A value ends in a lone `\`.
    #[error("escape at end")]
    Escape,
    /// Characters after a single restriction.
    #[error("trailing characters")]
    Trailing,
    /// An empty field outside the first restriction, beside other alternatives, or
    /// with a condition other than `=`.
    #[error("misplaced unique id")]
    UniqueId,
    /// A restriction without alternatives.
    #[error("empty restriction")]
    Empty,
}

/// ASCII punctuation other than `_` ends a field name (C's `ispunct`).
fn ends_field(c: char) -> bool {
    c.is_ascii_punctuation() && c != '_'
}

impl Alternative {
    /// An alternative from its parts.
    pub fn new(field: &str, condition: Condition, value: &str) -> Alternative {
        Alternative {
            field: field.to_string(),
            condition,
            value: value.to_string(),
        }
    }

    /// `field cond value` with the value as given, no unescaping (how `createrune` reads
    /// one string of its `restrictions`): `None` without a valid condition after the field
    /// or with an empty field or a NUL.
    pub fn from_plain(s: &str) -> Option<Alternative> {
        // A NUL would end the rune's text (CLN's strings end there).
        if s.contains('\0') {
            return None;
        }
        let at = s.find(ends_field).unwrap_or(s.len());
        let (field, rest) = s.split_at(at);
        let mut chars = rest.chars();
        let condition = Condition::from_char(chars.next()?)?;
        if field.is_empty() {
            return None;
        }
        Some(Alternative {
            field: field.to_string(),
            condition,
            value: chars.as_str().to_string(),
        })
    }

    fn encode_into(&self, out: &mut String) {
        out.push_str(&self.field);
        out.push(self.condition.as_char());
        for c in self.value.chars() {
            if matches!(c, '\\' | '|' | '&') {
                out.push('\\');
            }
            out.push(c);
        }
    }

    /// Reads one alternative from the front of `s`: returns it, whether a `|` (another
    /// alternative) followed, and the rest after the `|` or `&` that ended it.
    fn decode(s: &str) -> Result<(Alternative, bool, &str), FormatError> {
        let at = s.find(ends_field).unwrap_or(s.len());
        let (field, rest) = s.split_at(at);
        let mut chars = rest.chars();
        let condition = chars
            .next()
            .and_then(Condition::from_char)
            .ok_or(FormatError::Condition)?;
        let mut value = String::new();
        let mut more = false;
        while let Some(c) = chars.next() {
            match c {
                '|' => {
                    more = true;
                    break;
                }
                '&' => break,
                '\\' => value.push(chars.next().ok_or(FormatError::Escape)?),
                c => value.push(c),
            }
        }
        Ok((
            Alternative {
                field: field.to_string(),
                condition,
                value,
            },
            more,
            chars.as_str(),
        ))
    }

    /// CLN's English for it (`showrunes`).
    pub fn english(&self) -> String {
        let (f, v) = (&self.field, &self.value);
        let cond = match self.condition {
            Condition::Missing => return format!("{f} is missing"),
            Condition::Comment => return format!("comment: {f} {v}"),
            Condition::Equal => "equal to",
            Condition::NotEqual => "unequal to",
            Condition::Begins => "starts with",
            Condition::Ends => "ends with",
            Condition::Contains => "contains",
            Condition::IntLess => "<",
            Condition::IntGreater => ">",
            Condition::LexBefore => "sorts before",
            Condition::LexAfter => "sorts after",
        };
        format!("{f} {cond} {v}")
    }

    fn is_unique_id(&self) -> bool {
        self.field.is_empty()
    }

    /// Tests this alternative against the field's value: `None` when met, else why not, in
    /// CLN's words.
    pub fn test(&self, value: &FieldValue) -> Option<String> {
        let f = &self.field;
        let v = &self.value;
        let s: Option<std::borrow::Cow<'_, str>> = match value {
            FieldValue::Missing => None,
            FieldValue::Str(s) => Some(s.as_str().into()),
            FieldValue::Int(i) => Some(i.to_string().into()),
        };
        let fail = |complaint: &str, ok: bool| (!ok).then(|| format!("{f} {complaint} {v}"));
        let Some(s) = s else {
            return match self.condition {
                Condition::Missing | Condition::Comment => None,
                _ => Some(format!("{f} not present")),
            };
        };
        match self.condition {
            Condition::Missing => Some(format!("{f} is present")),
            Condition::Comment => None,
            Condition::Equal => fail("is not equal to", *s == **v),
            Condition::NotEqual => fail("is equal to", *s != **v),
            Condition::Begins => fail("does not start with", s.starts_with(v.as_str())),
            Condition::Ends => fail("does not end with", s.ends_with(v.as_str())),
            Condition::Contains => fail("does not contain", s.contains(v.as_str())),
            Condition::IntLess | Condition::IntGreater => {
                let FieldValue::Int(field) = value else {
                    return Some(format!("{f} is not an integer field"));
                };
                let Some(limit) = parse_strtol(v) else {
                    return Some(format!("{v} is not a valid integer"));
                };
                if self.condition == Condition::IntLess {
                    fail("is greater or equal to", *field < limit)
                } else {
                    fail("is less or equal to", *field > limit)
                }
            }
            Condition::LexBefore => fail("is equal to or ordered after", *s < **v),
            Condition::LexAfter => fail("is equal to or ordered before", *s > **v),
        }
    }
}

/// C's `strtol(s, &end, 10)` accepting only when all of `s` is used and in range.
fn parse_strtol(s: &str) -> Option<i64> {
    s.trim_start_matches([' ', '\t', '\n', '\x0b', '\x0c', '\r'])
        .parse::<i64>()
        .ok()
}

/// A field's value for [`Alternative::test`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FieldValue {
    /// Not present.
    Missing,
    /// A string (integer conditions fail on it).
    Str(String),
    /// An integer (compared as its decimal text by string conditions).
    Int(i64),
}

impl Restriction {
    /// Parses one encoded restriction (`a=1|b^x`), escapes and all: the whole text must
    /// be one restriction.
    pub fn parse(s: &str) -> Result<Restriction, FormatError> {
        let (r, rest) = Restriction::decode(s)?;
        if !rest.is_empty() {
            return Err(FormatError::Trailing);
        }
        Ok(r)
    }

    fn decode(mut s: &str) -> Result<(Restriction, &str), FormatError> {
        let mut alternatives = vec![];
        loop {
            let (alt, more, rest) = Alternative::decode(s)?;
            alternatives.push(alt);
            s = rest;
            if !more {
                return Ok((Restriction { alternatives }, s));
            }
        }
    }

    /// Its encoding (values escaped).
    pub fn encode(&self) -> String {
        let mut out = String::new();
        for (i, alt) in self.alternatives.iter().enumerate() {
            if i != 0 {
                out.push('|');
            }
            alt.encode_into(&mut out);
        }
        out
    }

    /// CLN's English: the alternatives' joined with `OR`.
    pub fn english(&self) -> String {
        joined(self.alternatives.iter().map(Alternative::english), " OR ")
    }

    /// Whether this is a unique-id restriction (one alternative with an empty field).
    pub fn is_unique_id(&self) -> bool {
        self.alternatives.len() == 1 && self.alternatives[0].is_unique_id()
    }

    /// Tests the alternatives with `check` (`None` when one is met): `None` if any is met,
    /// else every reason joined with ` AND `.
    pub fn test(&self, mut check: impl FnMut(&Alternative) -> Option<String>) -> Option<String> {
        let mut why = vec![];
        for alt in &self.alternatives {
            match check(alt) {
                None => return None,
                Some(w) => why.push(w),
            }
        }
        Some(why.join(" AND "))
    }
}

/// `parts` with `sep` between them.
pub fn joined(parts: impl Iterator<Item = String>, sep: &str) -> String {
    parts.collect::<Vec<_>>().join(sep)
}

/// SHA-256's block.
const BLOCK: usize = 64;

/// How many bytes SHA-256's end padding (`0x80`, zeros, the 64-bit length) adds after
/// `len` bytes: up to the next block boundary, leaving room for the length.
fn endmarker_len(len: usize) -> usize {
    1 + ((128 - 8 - (len % BLOCK) - 1) % BLOCK) + 8
}

fn add_endmarker(engine: &mut sha256::HashEngine) {
    let len = engine.n_bytes_hashed();
    let pad = endmarker_len(len);
    let mut bytes = vec![0u8; pad];
    bytes[0] = 0x80;
    let bits = (len as u64).wrapping_mul(8).to_be_bytes();
    bytes[pad - 8..].copy_from_slice(&bits);
    engine.input(&bytes);
}

/// A rune: its authcode and restrictions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rune {
    authcode: [u8; 32],
    restrictions: Vec<Restriction>,
}

impl Rune {
    /// The master rune of `secret` (at most 55 bytes, one SHA-256 block with its padding;
    /// the node's is 32).
    pub fn master(secret: &[u8]) -> Rune {
        let mut e = sha256::HashEngine::default();
        e.input(secret);
        add_endmarker(&mut e);
        Rune {
            authcode: e.midstate().to_byte_array(),
            restrictions: vec![],
        }
    }

    /// A rune from an authcode and the restrictions it covers (nothing is checked but the
    /// unique id's place).
    pub fn from_parts(
        authcode: [u8; 32],
        restrictions: Vec<Restriction>,
    ) -> Result<Rune, FormatError> {
        let mut rune = Rune {
            authcode,
            restrictions: Vec::with_capacity(restrictions.len()),
        };
        for r in restrictions {
            rune.check_placement(&r)?;
            rune.restrictions.push(r);
        }
        Ok(rune)
    }

    /// This (master) rune restricted to unique id `id` (CLN's numbering).
    pub fn derive(&self, id: u64) -> Rune {
        let mut r = self.clone();
        let id = Restriction {
            alternatives: vec![Alternative::new("", Condition::Equal, &id.to_string())],
        };
        // A master has no restrictions, so the id goes first; a rune that has some cannot
        // take an id (refused below), and stays as it was.
        let _ = r.add_restriction(id);
        r
    }

    /// The bytes hashed so far: the secret's block, then each restriction and its padding.
    fn hashed_len(&self) -> usize {
        self.restrictions.iter().fold(BLOCK, |len, r| {
            let len = len + r.encode().len();
            len + endmarker_len(len)
        })
    }

    fn check_placement(&self, r: &Restriction) -> Result<(), FormatError> {
        if r.alternatives.is_empty() {
            return Err(FormatError::Empty);
        }
        if r.alternatives.iter().any(Alternative::is_unique_id)
            && (r.alternatives.len() != 1
                || !self.restrictions.is_empty()
                || r.alternatives[0].condition != Condition::Equal)
        {
            return Err(FormatError::UniqueId);
        }
        Ok(())
    }

    fn hash_restriction(authcode: [u8; 32], len: usize, r: &Restriction) -> ([u8; 32], usize) {
        let mut e = sha256::HashEngine::from_midstate(sha256::Midstate(authcode), len);
        e.input(r.encode().as_bytes());
        add_endmarker(&mut e);
        (e.midstate().to_byte_array(), e.n_bytes_hashed())
    }

    /// Adds `r` (anyone can: the authcode moves on). Refused: an empty restriction, or a
    /// unique id that is not the first restriction, has alternatives or is not `=`.
    pub fn add_restriction(&mut self, r: Restriction) -> Result<(), FormatError> {
        self.check_placement(&r)?;
        let (authcode, _) = Rune::hash_restriction(self.authcode, self.hashed_len(), &r);
        self.authcode = authcode;
        self.restrictions.push(r);
        Ok(())
    }

    /// Its restrictions, the unique id included.
    pub fn restrictions(&self) -> &[Restriction] {
        &self.restrictions
    }

    /// The unique id's value (without the version), if the rune has one.
    pub fn unique_id(&self) -> Option<&str> {
        let first = self.restrictions.first().filter(|r| r.is_unique_id())?;
        let v = first.alternatives[0].value.as_str();
        Some(v.split_once('-').map_or(v, |(id, _)| id))
    }

    /// The version after the unique id's `-`, if any.
    pub fn version(&self) -> Option<&str> {
        let first = self.restrictions.first().filter(|r| r.is_unique_id())?;
        first.alternatives[0]
            .value
            .split_once('-')
            .map(|(_, version)| version)
    }

    /// The unique id as CLN reads it (C's `strtoull` with base 0: decimal, `0x` hex,
    /// leading-`0` octal), at most `i64::MAX`; `None` without one or when not a number.
    pub fn unique_id_num(&self) -> Option<u64> {
        parse_strtoull0(self.unique_id()?).filter(|n| i64::try_from(*n).is_ok())
    }

    /// The restrictions' text, `&`-separated.
    pub fn restrictions_text(&self) -> String {
        joined(self.restrictions.iter().map(Restriction::encode), "&")
    }

    /// Its base64url form, with padding (as CLN writes it).
    pub fn to_base64(&self) -> String {
        let mut bytes = self.authcode.to_vec();
        bytes.extend_from_slice(self.restrictions_text().as_bytes());
        base64url_encode(&bytes)
    }

    /// Reads a rune as CLN does (padding optional).
    pub fn from_base64(s: &str) -> Result<Rune, FormatError> {
        let bytes = base64url_decode(s).ok_or(FormatError::Base64)?;
        if bytes.len() < 32 || bytes[32..].contains(&0) {
            return Err(FormatError::Base64);
        }
        let mut authcode = [0u8; 32];
        authcode.copy_from_slice(&bytes[..32]);
        let text = std::str::from_utf8(&bytes[32..]).map_err(|_| FormatError::Utf8)?;
        let mut restrictions = vec![];
        let mut rest = text;
        while !rest.is_empty() {
            let (r, after) = Restriction::decode(rest)?;
            restrictions.push(r);
            rest = after;
        }
        Rune::from_parts(authcode, restrictions)
    }

    /// Whether this rune was made from `master` by adding restrictions: `Err` with CLN's
    /// reason (`Version mismatch`, `Not derived from master`, ...) when not.
    pub fn is_derived_from(&self, master: &Rune) -> Result<(), &'static str> {
        if self.version() != master.version() {
            return Err("Version mismatch");
        }
        if self.restrictions.len() < master.restrictions.len() {
            return Err("Fewer restrictions than master");
        }
        let (mut authcode, mut len) = (master.authcode, master.hashed_len());
        for (i, r) in self.restrictions.iter().enumerate() {
            if let Some(m) = master.restrictions.get(i) {
                if m != r {
                    return Err("Does not match master restrictions");
                }
            } else {
                (authcode, len) = Rune::hash_restriction(authcode, len, r);
            }
        }
        if authcode != self.authcode {
            return Err("Not derived from master");
        }
        Ok(())
    }

    /// Tests every restriction but the unique id with `check` (per alternative, `None` when
    /// met): `None` when all are met, else the first failing restriction's reasons.
    pub fn test(&self, mut check: impl FnMut(&Alternative) -> Option<String>) -> Option<String> {
        self.restrictions
            .iter()
            .enumerate()
            .filter(|(i, r)| !(*i == 0 && r.is_unique_id()))
            .find_map(|(_, r)| r.test(&mut check))
    }
}

/// C's `strtoull(s, &end, 0)` accepting only when all of `s` is used.
fn parse_strtoull0(s: &str) -> Option<u64> {
    let t = s.trim_start_matches([' ', '\t', '\n', '\x0b', '\x0c', '\r']);
    let t = t.strip_prefix('+').unwrap_or(t);
    if let Some(hex) = t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        return u64::from_str_radix(hex, 16)
            .ok()
            .filter(|_| !hex.is_empty());
    }
    if let Some(octal) = t.strip_prefix('0').filter(|o| !o.is_empty()) {
        return u64::from_str_radix(octal, 8).ok();
    }
    if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    t.parse().ok()
}

/// base64url as CLN reads and writes runes: padding written, optional on reading; bits
/// after the last byte ignored.
const BASE64URL: base64::engine::GeneralPurpose = base64::engine::GeneralPurpose::new(
    &base64::alphabet::URL_SAFE,
    base64::engine::GeneralPurposeConfig::new()
        .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true),
);

/// base64url with `=` padding.
pub fn base64url_encode(data: &[u8]) -> String {
    BASE64URL.encode(data)
}

/// base64url, with or without padding; `None` when not base64url.
pub fn base64url_decode(s: &str) -> Option<Vec<u8>> {
    BASE64URL.decode(s).ok()
}

/// What a `checkrune` call is checked against.
pub struct Request<'a> {
    /// Now, in nanoseconds since 1970 (`time` is its seconds).
    pub now_nanos: u64,
    /// `id`: the caller's node id (hex), if given.
    pub peer: Option<&'a str>,
    /// `method`, if given.
    pub method: Option<&'a str>,
    /// `pnum`: how many parameters were given (0 without any).
    pub pnum: i64,
    /// When a rune of this unique id last passed (nanoseconds), if it is stored and was
    /// used: `per` and `rate` compare with it.
    pub last_used_nanos: Option<u64>,
    /// Any other field: `pnameX`, `parrN`, `pinv...` (the caller's parameters).
    pub params: &'a dyn ParamFields,
}

/// The caller's parameters as fields.
pub trait ParamFields: Sync {
    /// The value of `field` (`pnameX`, `parrN`, ...), or `Err` with the reason the
    /// alternative fails outright (an invoice that does not parse).
    fn field(&self, alt: &Alternative) -> Result<FieldValue, String>;
}

const NANOS_PER_SEC: u64 = 1_000_000_000;

impl Request<'_> {
    /// Tests one alternative as CLN's `checkrune` does.
    pub fn check(&self, alt: &Alternative) -> Option<String> {
        let value = match alt.field.as_str() {
            "time" => {
                FieldValue::Int(i64::try_from(self.now_nanos / NANOS_PER_SEC).unwrap_or(i64::MAX))
            }
            "id" => self
                .peer
                .map_or(FieldValue::Missing, |p| FieldValue::Str(p.into())),
            "method" => self
                .method
                .map_or(FieldValue::Missing, |m| FieldValue::Str(m.into())),
            "pnum" => FieldValue::Int(self.pnum),
            "rate" => return self.rate(alt),
            "per" => return self.per(alt),
            _ => match self.params.field(alt) {
                Ok(v) => v,
                Err(why) => return Some(why),
            },
        };
        alt.test(&value)
    }

    fn too_soon(&self, window_nanos: u64) -> Option<String> {
        let last = self.last_used_nanos?;
        let since = self.now_nanos.saturating_sub(last);
        (since < window_nanos).then(|| "too soon".to_string())
    }

    /// `rate=N`: at most N uses a minute, i.e. one per 60/N seconds.
    fn rate(&self, alt: &Alternative) -> Option<String> {
        if alt.condition != Condition::Equal {
            return Some("rate operator must be =".into());
        }
        match alt.value.parse::<u64>() {
            Ok(r) if r > 0 && r < u64::from(u32::MAX) => self.too_soon(60 * NANOS_PER_SEC / r),
            _ => Some("malformed rate".into()),
        }
    }

    /// `per=N[unit]`: one use per N nsec/usec/msec/sec/min/hour/day (seconds without one).
    fn per(&self, alt: &Alternative) -> Option<String> {
        if alt.condition != Condition::Equal {
            return Some("per operator must be =".into());
        }
        let digits = alt
            .value
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(alt.value.len());
        let (num, unit) = alt.value.split_at(digits);
        let n = match num.parse::<u64>() {
            Ok(n) if n > 0 && n < u64::from(u32::MAX) => n,
            _ => return Some("malformed per".into()),
        };
        let mult = match unit {
            "" | "sec" => NANOS_PER_SEC,
            "nsec" => 1,
            "usec" => 1_000,
            "msec" => 1_000_000,
            "min" => 60 * NANOS_PER_SEC,
            "hour" => 3_600 * NANOS_PER_SEC,
            "day" => 86_400 * NANOS_PER_SEC,
            _ => return Some("malformed suffix".into()),
        };
        match n.checked_mul(mult) {
            Some(window) => self.too_soon(window),
            None => Some("per overflow".into()),
        }
    }
}

/// How CLN's `checkrune` words the fields of its reasons.
const FIELD_ENGLISH: [(&str, &str); 4] = [
    ("pname", "parameter "),
    ("parr", "parameter #"),
    ("pnum", "number of parameters"),
    ("pinv", "invoice parameter "),
];

/// CLN's reason turned into English for `checkrune`'s error (`pnamex` → `parameter x`).
pub fn anglicise(reason: &str) -> String {
    FIELD_ENGLISH
        .iter()
        .find_map(|(prefix, english)| reason.strip_prefix(prefix).map(|r| format!("{english}{r}")))
        .unwrap_or_else(|| reason.to_string())
}

/// The highest unique id a blacklist can hold, plus one (CLN's bitmap size).
pub const MAX_BLACKLIST: u64 = 100_000_000;

/// Blacklisted unique ids as sorted, disjoint, non-adjacent inclusive ranges (CLN lists
/// its bitmap this way).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Blacklist {
    ranges: Vec<(u64, u64)>,
}

impl Blacklist {
    /// From stored ranges (merged whatever their order or overlap).
    pub fn from_ranges(ranges: &[(u64, u64)]) -> Blacklist {
        let mut b = Blacklist::default();
        for (s, e) in ranges {
            b.add(*s, *e);
        }
        b
    }

    /// The ranges.
    pub fn ranges(&self) -> &[(u64, u64)] {
        &self.ranges
    }

    /// Whether `id` is blacklisted.
    pub fn contains(&self, id: u64) -> bool {
        self.ranges.iter().any(|(s, e)| *s <= id && id <= *e)
    }

    /// Blacklists `start..=end`.
    pub fn add(&mut self, start: u64, end: u64) {
        if start > end {
            return;
        }
        let (mut s, mut e) = (start, end);
        let mut out = Vec::with_capacity(self.ranges.len() + 1);
        for &(rs, re) in &self.ranges {
            if re.saturating_add(1) < s || e.saturating_add(1) < rs {
                out.push((rs, re));
            } else {
                s = s.min(rs);
                e = e.max(re);
            }
        }
        out.push((s, e));
        out.sort_unstable();
        self.ranges = out;
    }

    /// Takes `start..=end` off the list (`relist`).
    pub fn remove(&mut self, start: u64, end: u64) {
        if start > end {
            return;
        }
        let mut out = Vec::with_capacity(self.ranges.len() + 1);
        for &(rs, re) in &self.ranges {
            if re < start || rs > end {
                out.push((rs, re));
                continue;
            }
            if rs < start {
                out.push((rs, start - 1));
            }
            if re > end {
                out.push((end + 1, re));
            }
        }
        self.ranges = out;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex32(s: &str) -> [u8; 32] {
        let mut a = [0u8; 32];
        for (i, pair) in s.as_bytes().chunks(2).enumerate() {
            let pair = std::str::from_utf8(pair).unwrap_or("00");
            a[i] = u8::from_str_radix(pair, 16).unwrap_or(0);
        }
        a
    }

    /// CLN's tests/test_runes.py: "l1's master rune secret is 4ac0...".
    fn cln_master() -> Rune {
        Rune::master(&hex32(
            "4ac018131e70b044e17891e67960f59b9d602525d3aef9956e900189f456e595",
        ))
    }

    fn restricted(base: &Rune, restrs: &[&[&str]]) -> Rune {
        let mut r = base.clone();
        for alts in restrs {
            let alternatives = alts
                .iter()
                .map(|a| Alternative::from_plain(a).unwrap_or_else(|| panic!("{a}")))
                .collect();
            r.add_restriction(Restriction { alternatives })
                .unwrap_or_else(|e| panic!("{e}"));
        }
        r
    }

    #[test]
    fn clns_runes_from_clns_secret() {
        let m = cln_master();
        let r0 = m.derive(0);
        assert_eq!(
            r0.to_base64(),
            "I9TZsYEWiAwThQye-gYhpWIe1h15szWEN_qNyMSBOdE9MA=="
        );
        let readonly = restricted(
            &m.derive(1),
            &[
                &["method^list", "method^get", "method=summary"],
                &["method/listdatastore"],
            ],
        );
        assert_eq!(
            readonly.to_base64(),
            "s0IEnsikGDw76tdpAiMbqzigYhlkjqSVh0ZuvJ1Np1w9MSZtZXRob2RebGlzdHxtZXRob2ReZ2V0fG1ldGhvZD1zdW1tYXJ5Jm1ldGhvZC9saXN0ZGF0YXN0b3Jl"
        );
        let r3 = restricted(&m.derive(2), &[&["time>1656675211"]]);
        assert_eq!(
            r3.to_base64(),
            "K0c0pWvBWb3y9HF1GMy33Zx2KRg1zcEvQLr2vtWwMew9MiZ0aW1lPjE2NTY2NzUyMTE="
        );
        let r4 = restricted(
            &m.derive(3),
            &[&["id^022d223620a359a47ff7"], &["method=listpeers"]],
        );
        assert_eq!(
            r4.to_base64(),
            "ixuStVB4oewJtVNnim1P_qEL89ZU0G8Tnxg_JZgJTUk9MyZpZF4wMjJkMjIzNjIwYTM1OWE0N2ZmNyZtZXRob2Q9bGlzdHBlZXJz"
        );
        // Restricting an existing rune read back from its text.
        let r4 = Rune::from_base64(&r4.to_base64()).unwrap_or_else(|e| panic!("{e}"));
        let r5 = restricted(&r4, &[&["pnamelevel!", "pnamelevel/io"]]);
        assert_eq!(
            r5.to_base64(),
            "NUPHrMs1TEdfWbRfO_KJ4rXhJSBjmSqbdcz-W0yH9J89MyZpZF4wMjJkMjIzNjIwYTM1OWE0N2ZmNyZtZXRob2Q9bGlzdHBlZXJzJnBuYW1lbGV2ZWwhfHBuYW1lbGV2ZWwvaW8="
        );
        assert_eq!(r5.unique_id(), Some("3"));
        assert_eq!(r5.is_derived_from(&m), Ok(()));
        let per = restricted(&m.derive(0), &[&["per=2000000000nsec"]]);
        assert_eq!(
            per.to_base64(),
            "IUhHCEYyQOTSbBjJ09MNiPZMrV_tHFX0JG2U5yCUmIU9MCZwZXI9MjAwMDAwMDAwMG5zZWM="
        );
    }

    #[test]
    fn a_changed_or_dropped_restriction_is_not_derived() {
        let m = cln_master();
        let r = restricted(&m.derive(3), &[&["method=listpeers"]]);
        let mut forged = r.clone();
        forged.restrictions[1].alternatives[0].value = "pay".into();
        assert_eq!(forged.is_derived_from(&m), Err("Not derived from master"));
        let mut dropped = r.clone();
        dropped.restrictions.pop();
        assert_eq!(dropped.is_derived_from(&m), Err("Not derived from master"));
        assert_eq!(
            r.is_derived_from(&Rune::master(&[1; 32])),
            Err("Not derived from master")
        );
        let mut versioned = m.clone();
        versioned
            .add_restriction(Restriction::parse("=3-1").unwrap_or_else(|e| panic!("{e}")))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(versioned.version(), Some("1"));
        assert_eq!(versioned.is_derived_from(&m), Err("Version mismatch"));
    }

    #[test]
    fn escaping_round_trips() {
        let m = cln_master();
        let r = restricted(
            &m.derive(5),
            &[
                &["pnamedescription=@tipjar|jb55@sendsats.lol"],
                &["a=x&y\\z"],
            ],
        );
        assert_eq!(
            r.restrictions_text(),
            "=5&pnamedescription=@tipjar\\|jb55@sendsats.lol&a=x\\&y\\\\z"
        );
        let back = Rune::from_base64(&r.to_base64()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(back, r);
        assert_eq!(
            back.restrictions[1].alternatives[0].value,
            "@tipjar|jb55@sendsats.lol"
        );
        assert_eq!(back.is_derived_from(&m), Ok(()));
        assert_eq!(Restriction::parse("a=x\\"), Err(FormatError::Escape));
    }

    #[test]
    fn malformed_runes_are_refused() {
        let m = cln_master();
        let ok = m.derive(0).to_base64();
        // Without padding, too.
        assert!(Rune::from_base64(ok.trim_end_matches('=')).is_ok());
        assert_eq!(Rune::from_base64("AAAA"), Err(FormatError::Base64));
        assert_eq!(Rune::from_base64("not base64!"), Err(FormatError::Base64));
        let with = |text: &[u8]| {
            let mut b = vec![0u8; 32];
            b.extend_from_slice(text);
            Rune::from_base64(&base64url_encode(&b))
        };
        assert_eq!(with(b"=1&=2"), Err(FormatError::UniqueId));
        assert_eq!(with(b"=1|a=2"), Err(FormatError::UniqueId));
        assert_eq!(with(b"a=1&=2"), Err(FormatError::UniqueId));
        assert_eq!(with(b"!1"), Err(FormatError::UniqueId));
        assert_eq!(with(b"method"), Err(FormatError::Condition));
        assert_eq!(with(b"a,1"), Err(FormatError::Condition));
        assert_eq!(with(b"a=1\0"), Err(FormatError::Base64));
        assert_eq!(with(b"a=\xff"), Err(FormatError::Utf8));
        let none = with(b"").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(none.unique_id(), None);
        assert_eq!(none.unique_id_num(), None);
        let hexid = with(b"=0x10").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(hexid.unique_id_num(), Some(16));
        for bad in ["zero", "0andstr", "9223372036854775809", ""] {
            let r = with(format!("={bad}").as_bytes()).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(r.unique_id_num(), None, "{bad}");
        }
    }

    #[test]
    fn base64_as_ccan_reads_it() {
        for n in 0..10 {
            let data: Vec<u8> = (0..n).map(|i| (i * 37) as u8).collect();
            let enc = base64url_encode(&data);
            assert_eq!(enc.len() % 4, 0);
            assert_eq!(base64url_decode(&enc), Some(data.clone()));
            assert_eq!(
                base64url_decode(enc.trim_end_matches('=')),
                Some(data.clone())
            );
        }
        assert_eq!(base64url_decode("A"), None);
        assert_eq!(base64url_decode("AA=A"), None);
        assert_eq!(base64url_decode("AA+A"), None);
        assert_eq!(base64url_decode(""), Some(vec![]));
    }

    fn test(alt: &str, v: FieldValue) -> Option<String> {
        Alternative::from_plain(alt)
            .unwrap_or_else(|| panic!("{alt}"))
            .test(&v)
    }

    fn s(x: &str) -> FieldValue {
        FieldValue::Str(x.into())
    }

    #[test]
    fn every_condition() {
        use FieldValue::{Int, Missing};
        let cases: &[(&str, FieldValue, Option<&str>)] = &[
            ("f!", Missing, None),
            ("f!", s(""), Some("f is present")),
            ("f=a", s("a"), None),
            ("f=1", Int(1), None),
            ("f=a", s("b"), Some("f is not equal to a")),
            ("f=a", Missing, Some("f not present")),
            ("f/a", s("b"), None),
            ("f/a", s("a"), Some("f is equal to a")),
            ("f/a", Missing, Some("f not present")),
            ("f^ab", s("abc"), None),
            ("f^ab", s("cab"), Some("f does not start with ab")),
            ("f$bc", s("abc"), None),
            ("f$ab", s("abc"), Some("f does not end with ab")),
            ("f~b", s("abc"), None),
            ("f~12", Int(3123), None),
            ("f~d", s("abc"), Some("f does not contain d")),
            ("f<10", Int(9), None),
            ("f<-1", Int(-2), None),
            ("f<10", Int(10), Some("f is greater or equal to 10")),
            ("f>10", Int(11), None),
            ("f>10", Int(10), Some("f is less or equal to 10")),
            ("f<10", s("9"), Some("f is not an integer field")),
            ("f<1x", Int(0), Some("1x is not a valid integer")),
            ("f<10", Missing, Some("f not present")),
            ("f{b", s("a"), None),
            ("f{b", s("ab"), None),
            ("f{b", s("b"), Some("f is equal to or ordered after b")),
            ("f{ab", s("abc"), Some("f is equal to or ordered after ab")),
            ("f}ab", s("abc"), None),
            ("f}b", s("a"), Some("f is equal to or ordered before b")),
            ("f#anything", Missing, None),
            ("f#anything", s("x"), None),
        ];
        for (alt, value, want) in cases {
            assert_eq!(
                test(alt, value.clone()).as_deref(),
                *want,
                "{alt} on {value:?}"
            );
        }
    }

    #[test]
    fn plain_alternatives_need_a_field_and_a_condition() {
        for cond in "!=/^$~<>{}#,".chars() {
            assert_eq!(Alternative::from_plain(&format!("{cond}method")), None);
        }
        assert_eq!(Alternative::from_plain("method"), None);
        let a = Alternative::from_plain("amount_msat<10").unwrap_or_else(|| panic!());
        assert_eq!(
            (a.field.as_str(), a.condition, a.value.as_str()),
            ("amount_msat", Condition::IntLess, "10")
        );
        // No unescaping of the value.
        let a = Alternative::from_plain("d=a\\|b").unwrap_or_else(|| panic!());
        assert_eq!(a.value, "a\\|b");
    }

    #[test]
    fn english_as_cln_writes_it() {
        let r = Restriction::parse("method^list|method^get|method=summary")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            r.english(),
            "method starts with list OR method starts with get OR method equal to summary"
        );
        let eng = |s: &str| {
            Alternative::from_plain(s)
                .unwrap_or_else(|| panic!("{s}"))
                .english()
        };
        assert_eq!(eng("a!"), "a is missing");
        assert_eq!(eng("a/b"), "a unequal to b");
        assert_eq!(eng("a$b"), "a ends with b");
        assert_eq!(eng("a~b"), "a contains b");
        assert_eq!(eng("a<1"), "a < 1");
        assert_eq!(eng("a>1"), "a > 1");
        assert_eq!(eng("a{b"), "a sorts before b");
        assert_eq!(eng("a}b"), "a sorts after b");
        assert_eq!(eng("a#b"), "comment: a b");
    }

    struct NoParams;
    impl ParamFields for NoParams {
        fn field(&self, _: &Alternative) -> Result<FieldValue, String> {
            Ok(FieldValue::Missing)
        }
    }

    fn request(last: Option<u64>) -> Request<'static> {
        Request {
            now_nanos: 1_700_000_000 * NANOS_PER_SEC,
            peer: Some("02aa"),
            method: Some("getinfo"),
            pnum: 2,
            last_used_nanos: last,
            params: &NoParams,
        }
    }

    fn check(req: &Request<'_>, alt: &str) -> Option<String> {
        req.check(&Alternative::from_plain(alt).unwrap_or_else(|| panic!("{alt}")))
    }

    #[test]
    fn request_fields_and_rate_limits() {
        let req = request(None);
        assert_eq!(check(&req, "time>1600000000"), None);
        assert_eq!(
            check(&req, "time<1600000000").as_deref(),
            Some("time is greater or equal to 1600000000")
        );
        assert_eq!(check(&req, "id^02"), None);
        assert_eq!(check(&req, "method=getinfo"), None);
        assert_eq!(check(&req, "pnum=2"), None);
        assert_eq!(check(&req, "pnamex!"), None);
        // Never used: no limit applies.
        assert_eq!(check(&req, "per=1day"), None);
        assert_eq!(check(&req, "rate=1"), None);
        let now = req.now_nanos;
        let used = request(Some(now - 30 * NANOS_PER_SEC));
        // Used 30 s ago.
        let cases = [
            ("per=1min", Some("too soon")),
            ("per=29sec", None),
            ("per=29", None),
            ("per=30000msec", None),
            ("per=30000001usec", Some("too soon")),
            ("per=1hour", Some("too soon")),
            ("rate=1", Some("too soon")),
            ("rate=2", None),
            ("per=1week", Some("malformed suffix")),
            ("per=0", Some("malformed per")),
            ("per=min", Some("malformed per")),
            ("per<5", Some("per operator must be =")),
            ("rate=1x", Some("malformed rate")),
            ("rate/1", Some("rate operator must be =")),
            ("per=4294967294day", Some("per overflow")),
        ];
        for (alt, want) in cases {
            assert_eq!(check(&used, alt).as_deref(), want, "{alt}");
        }
        // A clock set back counts as used just now.
        let future = request(Some(now + NANOS_PER_SEC));
        assert_eq!(check(&future, "per=1nsec").as_deref(), Some("too soon"));
    }

    #[test]
    fn a_rune_needs_every_restriction_and_one_alternative_of_each() {
        let m = cln_master();
        let r = restricted(
            &m.derive(1),
            &[&["method^list", "method^get"], &["method/listdatastore"]],
        );
        let with_method = |method: &'static str| Request {
            method: Some(method),
            ..request(None)
        };
        assert_eq!(r.test(|a| with_method("getinfo").check(a)), None);
        assert_eq!(
            r.test(|a| with_method("pay").check(a)).as_deref(),
            Some("method does not start with list AND method does not start with get")
        );
        assert_eq!(
            r.test(|a| with_method("listdatastore").check(a)).as_deref(),
            Some("method is equal to listdatastore")
        );
        assert_eq!(anglicise("pnamex is present"), "parameter x is present");
        assert_eq!(anglicise("parr1 not present"), "parameter #1 not present");
        assert_eq!(
            anglicise("pnum is not equal to 1"),
            "number of parameters is not equal to 1"
        );
    }

    #[test]
    fn blacklist_ranges_merge_and_split_as_clns_bitmap() {
        let mut b = Blacklist::default();
        b.add(1, 1);
        b.add(2, 2);
        b.add(6, 6);
        assert_eq!(b.ranges(), &[(1, 2), (6, 6)]);
        b.add(3, 5);
        assert_eq!(b.ranges(), &[(1, 6)]);
        b.add(9, 9);
        b.add(0, 0);
        assert_eq!(b.ranges(), &[(0, 6), (9, 9)]);
        assert!(b.contains(0) && b.contains(6) && b.contains(9));
        assert!(!b.contains(7) && !b.contains(10));
        b.remove(10, 10);
        assert_eq!(b.ranges(), &[(0, 6), (9, 9)]);
        b.remove(9, 9);
        b.remove(1, 2);
        assert_eq!(b.ranges(), &[(0, 0), (3, 6)]);
        b.remove(4, 4);
        assert_eq!(b.ranges(), &[(0, 0), (3, 3), (5, 6)]);
        b.remove(0, 3);
        assert_eq!(b.ranges(), &[(5, 6)]);
        assert_eq!(
            Blacklist::from_ranges(&[(5, 6), (1, 4)]).ranges(),
            &[(1, 6)]
        );
        b.remove(0, MAX_BLACKLIST - 1);
        assert_eq!(b.ranges(), &[]);
    }
}
