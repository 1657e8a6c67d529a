//! BOLT 12 strings (`lno1…` offers, `lnr1…` invoice requests, `lni1…` invoices) read as
//! CLN reads them for `decode`: the bech32 characters (no checksum, `+` and whitespace
//! between parts allowed), the TLV stream, each field of the spec's three messages, and the
//! checks whose failure CLN reports as the parameter's error. What is read but breaks a
//! rule a payer checks later (a bad invoice-request signature, an empty blinded path in an
//! invoice request) is left to the caller, which reports it beside the fields.
//!
//! LDK's parsers are stricter (they refuse what CLN still shows, as `valid: false`) and
//! name things by LDK's ids, not by the BOLT 12 merkle root CLN calls `offer_id`; hence
//! this reader. Its entry point is fuzzed (`fuzz/fuzz_targets/bolt12.rs`).

use bitcoin::hashes::{Hash, HashEngine, sha256};
use bitcoin::secp256k1::{PublicKey, Secp256k1, XOnlyPublicKey, schnorr};

use crate::codex32::CHARSET;

/// Which message a string holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `lno`: an offer.
    Offer,
    /// `lnr`: an invoice request (for an offer, or alone: a refund).
    InvoiceRequest,
    /// `lni`: an invoice.
    Invoice,
}

impl Kind {
    /// The human-readable part of the string.
    pub fn hrp(self) -> &'static str {
        match self {
            Kind::Offer => "lno",
            Kind::InvoiceRequest => "lnr",
            Kind::Invoice => "lni",
        }
    }

    /// The message's name in signature tags (BOLT 12's "Signature Calculation").
    fn message_name(self) -> &'static str {
        match self {
            Kind::Offer => "offer",
            Kind::InvoiceRequest => "invoice_request",
            Kind::Invoice => "invoice",
        }
    }

    fn data_error(self) -> &'static str {
        match self {
            Kind::Offer => "invalid offer data",
            Kind::InvoiceRequest => "invalid invreq data",
            Kind::Invoice => "invalid invoice data",
        }
    }

    /// Whether this message has the field `typ` (others are unknown fields).
    fn knows(self, typ: u64) -> bool {
        let offer = OFFER_TYPES.contains(&typ);
        let invreq = INVREQ_TYPES.contains(&typ);
        match self {
            Kind::Offer => offer,
            Kind::InvoiceRequest => offer || invreq || typ == SIGNATURE,
            Kind::Invoice => offer || invreq || INVOICE_TYPES.contains(&typ) || typ == SIGNATURE,
        }
    }
}

const OFFER_TYPES: [u64; 11] = [2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22];
const INVREQ_TYPES: [u64; 9] = [0, 80, 82, 84, 86, 88, 89, 90, 91];
const INVOICE_TYPES: [u64; 9] = [160, 162, 164, 166, 168, 170, 172, 174, 176];
const SIGNATURE: u64 = 240;

/// BOLT 12's default `invoice_relative_expiry` (seconds after `invoice_created_at`).
pub const DEFAULT_RELATIVE_EXPIRY: u32 = 7200;

/// One TLV record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Its type.
    pub typ: u64,
    /// Its value.
    pub value: Vec<u8>,
    /// The whole record as encoded (type, length, value), which the merkle tree hashes.
    encoded: Vec<u8>,
}

/// Where a blinded path starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathStart {
    /// A node.
    Node(PublicKey),
    /// An end of a channel: the node at `dir` (0 or 1) of `scid`.
    Channel {
        /// The short channel id.
        scid: u64,
        /// Which end.
        dir: u8,
    },
}

/// One hop of a blinded path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hop {
    /// The hop's blinded node id.
    pub blinded_node_id: PublicKey,
    /// What the hop decrypts.
    pub encrypted_recipient_data: Vec<u8>,
}

/// A blinded path (BOLT 4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlindedPath {
    /// Its introduction node.
    pub first: PathStart,
    /// The path key for the first hop.
    pub first_path_key: PublicKey,
    /// The hops (none is valid on the wire, but no payer may use the path).
    pub hops: Vec<Hop>,
}

/// What paying through one of an invoice's paths costs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PayInfo {
    /// Base fee of the whole path.
    pub fee_base_msat: u32,
    /// Proportional fee of the whole path.
    pub fee_proportional_millionths: u32,
    /// CLTV delta of the whole path.
    pub cltv_expiry_delta: u16,
    /// Smallest HTLC the path takes.
    pub htlc_minimum_msat: u64,
    /// Largest HTLC the path takes.
    pub htlc_maximum_msat: u64,
    /// The path's features.
    pub features: Vec<u8>,
}

/// An on-chain address an invoice offers instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fallback {
    /// The witness version.
    pub version: u8,
    /// The witness program.
    pub program: Vec<u8>,
}

/// A BIP 353 name (`₿name@domain`) the payer asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bip353Name {
    /// The user part.
    pub name: Vec<u8>,
    /// The domain.
    pub domain: Vec<u8>,
}

impl Bip353Name {
    /// Whether `s` has only BIP 353's characters (letters, digits, `-`, `_`, `.`).
    pub fn valid_part(s: &[u8]) -> bool {
        s.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
    }
}

/// A decoded BOLT 12 string: its fields, typed (strings as the bytes sent: the caller
/// checks their UTF-8, as CLN shows a bad one as a warning).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct Fields {
    pub offer_chains: Option<Vec<[u8; 32]>>,
    pub offer_metadata: Option<Vec<u8>>,
    pub offer_currency: Option<Vec<u8>>,
    pub offer_amount: Option<u64>,
    pub offer_description: Option<Vec<u8>>,
    pub offer_features: Option<Vec<u8>>,
    pub offer_absolute_expiry: Option<u64>,
    pub offer_paths: Option<Vec<BlindedPath>>,
    pub offer_issuer: Option<Vec<u8>>,
    pub offer_quantity_max: Option<u64>,
    pub offer_issuer_id: Option<PublicKey>,
    pub invreq_metadata: Option<Vec<u8>>,
    pub invreq_chain: Option<[u8; 32]>,
    pub invreq_amount: Option<u64>,
    pub invreq_features: Option<Vec<u8>>,
    pub invreq_quantity: Option<u64>,
    pub invreq_payer_id: Option<PublicKey>,
    pub invreq_payer_note: Option<Vec<u8>>,
    pub invreq_paths: Option<Vec<BlindedPath>>,
    pub invreq_bip_353_name: Option<Bip353Name>,
    pub invoice_paths: Option<Vec<BlindedPath>>,
    pub invoice_blindedpay: Option<Vec<PayInfo>>,
    pub invoice_created_at: Option<u64>,
    pub invoice_relative_expiry: Option<u32>,
    pub invoice_payment_hash: Option<[u8; 32]>,
    pub invoice_amount: Option<u64>,
    pub invoice_fallbacks: Option<Vec<Fallback>>,
    pub invoice_features: Option<Vec<u8>>,
    pub invoice_node_id: Option<PublicKey>,
    pub signature: Option<[u8; 64]>,
}

/// A BOLT 12 string, read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bolt12 {
    /// Which message.
    pub kind: Kind,
    /// Its fields.
    pub fields: Fields,
    /// Its records, in order (known and unknown).
    pub records: Vec<Record>,
}

impl Bolt12 {
    /// The message as sent (its records, each as encoded).
    pub fn bytes(&self) -> Vec<u8> {
        self.records
            .iter()
            .flat_map(|r| r.encoded.iter().copied())
            .collect()
    }

    /// The records no field above reads (odd types this message does not know).
    pub fn unknown(&self) -> impl Iterator<Item = &Record> {
        self.records.iter().filter(|r| !self.kind.knows(r.typ))
    }

    /// CLN's `offer_id`: the merkle root of the offer's fields (for an invoice request or
    /// an invoice, of the offer fields it repeats).
    pub fn offer_id(&self) -> [u8; 32] {
        merkle_root(self.records.iter().filter(|r| is_offer_range(r.typ)))
    }

    /// Whether the message has an offer in it (an invoice request or invoice for an
    /// offer, not for a refund): CLN shows `offer_id` only then.
    pub fn has_offer(&self) -> bool {
        self.fields.offer_issuer_id.is_some() || self.fields.offer_paths.is_some()
    }

    /// The merkle root of all non-signature fields (what `signature` signs).
    pub fn merkle_root(&self) -> [u8; 32] {
        merkle_root(self.records.iter().filter(|r| !is_signature_type(r.typ)))
    }

    /// Whether `signature` is `key`'s over this message (BIP 340, BOLT 12's tag).
    pub fn signature_valid(&self, key: &PublicKey) -> bool {
        let Some(sig) = self.fields.signature else {
            return false;
        };
        let Ok(sig) = schnorr::Signature::from_slice(&sig) else {
            return false;
        };
        let tag = format!("lightning{}signature", self.kind.message_name());
        let digest = tagged_hash(tag.as_bytes(), &[&self.merkle_root()]);
        let msg = bitcoin::secp256k1::Message::from_digest(digest);
        let (xonly, _): (XOnlyPublicKey, _) = key.x_only_public_key();
        Secp256k1::verification_only()
            .verify_schnorr(&sig, &msg, &xonly)
            .is_ok()
    }
}

fn is_signature_type(typ: u64) -> bool {
    (240..=1000).contains(&typ)
}

fn is_offer_range(typ: u64) -> bool {
    (1..=79).contains(&typ) || (1_000_000_000..=1_999_999_999).contains(&typ)
}

/// `H(tag, msg)` = SHA256(SHA256(tag) || SHA256(tag) || msg), BIP 340's tagged hash.
fn tagged_hash(tag: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let t = sha256::Hash::hash(tag);
    let mut e = sha256::Hash::engine();
    e.input(t.as_byte_array());
    e.input(t.as_byte_array());
    for p in parts {
        e.input(p);
    }
    sha256::Hash::from_engine(e).to_byte_array()
}

/// `H("LnBranch", lesser || greater)`.
fn branch(a: &[u8; 32], b: &[u8; 32]) -> [u8; 32] {
    let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
    tagged_hash(b"LnBranch", &[lo, hi])
}

/// BOLT 12's merkle root of `records` (in stream order): each leaf pairs
/// `H("LnLeaf", record)` with `H("LnNonce" || first record, type)`; pairs of nodes join
/// level by level, the lowest-order leaves deepest when the count is not a power of two.
fn merkle_root<'a>(records: impl Iterator<Item = &'a Record>) -> [u8; 32] {
    let records: Vec<&Record> = records.collect();
    let Some(first) = records.first() else {
        return [0; 32];
    };
    // The nonce tag: "LnNonce" followed by the first record.
    let nonce_tag = [b"LnNonce".as_slice(), &first.encoded].concat();
    let mut nodes: Vec<[u8; 32]> = records
        .iter()
        .map(|r| {
            let leaf = tagged_hash(b"LnLeaf", &[&r.encoded]);
            let nonce = tagged_hash(&nonce_tag, &[&bigsize(r.typ)]);
            branch(&leaf, &nonce)
        })
        .collect();
    let mut step = 1;
    while step < nodes.len() {
        let mut i = 0;
        while i + step < nodes.len() {
            nodes[i] = branch(&nodes[i], &nodes[i + step]);
            i += 2 * step;
        }
        step *= 2;
    }
    nodes[0]
}

fn bigsize(v: u64) -> Vec<u8> {
    match v {
        0..=0xfc => vec![v as u8],
        0xfd..=0xffff => [&[0xfd][..], &(v as u16).to_be_bytes()].concat(),
        0x1_0000..=0xffff_ffff => [&[0xfe][..], &(v as u32).to_be_bytes()].concat(),
        _ => [&[0xff][..], &v.to_be_bytes()].concat(),
    }
}

/// Reads BOLT 12 string `s` (no `lightning:` prefix) of the kind its prefix names.
/// The error is CLN's message for the parameter.
pub fn decode(s: &str) -> Result<Bolt12, String> {
    let (hrp, data) = string_to_data(s)?;
    let kind = match hrp.as_str() {
        "lno" => Kind::Offer,
        "lnr" => Kind::InvoiceRequest,
        "lni" => Kind::Invoice,
        other => return Err(format!("unexpected prefix {other}")),
    };
    let records = read_records(&data).ok_or(kind.data_error())?;
    let fields = read_fields(kind, &records).ok_or(kind.data_error())?;
    let b = Bolt12 {
        kind,
        fields,
        records,
    };
    check(&b)?;
    Ok(b)
}

/// The human-readable part and the bytes of a bech32 string without checksum, with CLN's
/// joining of parts: a `+` (not first or last) and the whitespace after it are dropped.
fn string_to_data(s: &str) -> Result<(String, Vec<u8>), String> {
    let bytes = s.as_bytes();
    let mut joined = Vec::with_capacity(bytes.len());
    let mut have_plus = false;
    for (i, &c) in bytes.iter().enumerate() {
        if i != 0 && i + 1 != bytes.len() && !have_plus && c == b'+' {
            have_plus = true;
            continue;
        }
        if have_plus && c.is_ascii_whitespace() {
            continue;
        }
        have_plus = false;
        joined.push(c);
    }
    if have_plus {
        return Err("unfinished string".into());
    }
    let invalid = || "invalid bech32 string".to_string();
    let lower = joined.iter().any(u8::is_ascii_lowercase);
    let upper = joined.iter().any(u8::is_ascii_uppercase);
    if lower && upper {
        return Err(invalid());
    }
    let joined: Vec<u8> = joined.iter().map(u8::to_ascii_lowercase).collect();
    let sep = joined
        .iter()
        .rposition(|c| *c == b'1')
        .ok_or_else(invalid)?;
    let (hrp, rest) = joined.split_at(sep);
    if hrp.is_empty() || !hrp.iter().all(|c| (33..=126).contains(c)) {
        return Err(invalid());
    }
    let values = rest[1..]
        .iter()
        .map(|c| CHARSET.iter().position(|x| x == c).map(|p| p as u8))
        .collect::<Option<Vec<u8>>>()
        .ok_or_else(invalid)?;
    let (data, left) = fulgur_base::eight_bit_groups(values.iter().copied());
    // At most 4 bits of padding, all zero.
    let pad_ok = left < 5
        && values
            .last()
            .is_none_or(|v| u32::from(*v) & ((1u32 << left) - 1) == 0);
    if !pad_ok {
        return Err(invalid());
    }
    Ok((String::from_utf8_lossy(hrp).into_owned(), data))
}

/// A reader over bytes that fails (None) past the end.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Some(a)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn u16(&mut self) -> Option<u16> {
        self.take(2)?.try_into().ok().map(u16::from_be_bytes)
    }
    fn u32(&mut self) -> Option<u32> {
        self.take(4)?.try_into().ok().map(u32::from_be_bytes)
    }
    fn u64(&mut self) -> Option<u64> {
        self.take(8)?.try_into().ok().map(u64::from_be_bytes)
    }
    fn bytes32(&mut self) -> Option<[u8; 32]> {
        self.take(32)?.try_into().ok()
    }
    fn point(&mut self) -> Option<PublicKey> {
        PublicKey::from_slice(self.take(33)?).ok()
    }
    /// BOLT 1's BigSize, minimally encoded.
    fn bigsize(&mut self) -> Option<u64> {
        let v = match self.u8()? {
            0xff => {
                let v = self.u64()?;
                (v > 0xffff_ffff).then_some(v)?
            }
            0xfe => {
                let v = u64::from(self.u32()?);
                (v > 0xffff).then_some(v)?
            }
            0xfd => {
                let v = u64::from(self.u16()?);
                (v >= 0xfd).then_some(v)?
            }
            b => u64::from(b),
        };
        Some(v)
    }
    fn done(&self) -> bool {
        self.0.is_empty()
    }
}

/// The TLV stream: types strictly increasing, lengths within the data.
fn read_records(data: &[u8]) -> Option<Vec<Record>> {
    let mut r = Reader(data);
    let mut out: Vec<Record> = vec![];
    while !r.done() {
        let start = r.0;
        let typ = r.bigsize()?;
        let len = usize::try_from(r.bigsize()?).ok()?;
        let value = r.take(len)?.to_vec();
        if out.last().is_some_and(|p| p.typ >= typ) {
            return None;
        }
        let used = start.len() - r.0.len();
        out.push(Record {
            typ,
            value,
            encoded: start[..used].to_vec(),
        });
    }
    Some(out)
}

/// A truncated integer of at most `max` bytes, minimally encoded.
fn tu(v: &[u8], max: usize) -> Option<u64> {
    if v.len() > max || v.first() == Some(&0) {
        return None;
    }
    Some(v.iter().fold(0u64, |a, b| (a << 8) | u64::from(*b)))
}

fn blinded_path(r: &mut Reader<'_>) -> Option<BlindedPath> {
    let first = match r.u8()? {
        dir @ (0 | 1) => PathStart::Channel {
            dir,
            scid: r.u64()?,
        },
        prefix @ (2 | 3) => {
            let rest = r.take(32)?;
            PathStart::Node(PublicKey::from_slice(&[&[prefix][..], rest].concat()).ok()?)
        }
        _ => return None,
    };
    let first_path_key = r.point()?;
    let n = r.u8()?;
    let mut hops = Vec::with_capacity(usize::from(n));
    for _ in 0..n {
        let blinded_node_id = r.point()?;
        let len = usize::from(r.u16()?);
        hops.push(Hop {
            blinded_node_id,
            encrypted_recipient_data: r.take(len)?.to_vec(),
        });
    }
    Some(BlindedPath {
        first,
        first_path_key,
        hops,
    })
}

/// Reads items with `one` until `v` is used up.
fn array<T>(v: &[u8], one: impl Fn(&mut Reader<'_>) -> Option<T>) -> Option<Vec<T>> {
    let mut r = Reader(v);
    let mut out = vec![];
    while !r.done() {
        out.push(one(&mut r)?);
    }
    Some(out)
}

/// Reads exactly `v` with `one`.
fn whole<T>(v: &[u8], one: impl FnOnce(&mut Reader<'_>) -> Option<T>) -> Option<T> {
    let mut r = Reader(v);
    let t = one(&mut r)?;
    r.done().then_some(t)
}

fn read_fields(kind: Kind, records: &[Record]) -> Option<Fields> {
    let mut f = Fields::default();
    for rec in records {
        let v = rec.value.as_slice();
        if !kind.knows(rec.typ) {
            // An unknown even field cannot be skipped (BOLT 1).
            if rec.typ % 2 == 0 {
                return None;
            }
            continue;
        }
        match rec.typ {
            2 => f.offer_chains = Some(array(v, |r| r.bytes32())?),
            4 => f.offer_metadata = Some(v.to_vec()),
            6 => f.offer_currency = Some(whole(v, |r| r.take(3).map(<[u8]>::to_vec))?),
            8 => f.offer_amount = Some(tu(v, 8)?),
            10 => f.offer_description = Some(v.to_vec()),
            12 => f.offer_features = Some(v.to_vec()),
            14 => f.offer_absolute_expiry = Some(tu(v, 8)?),
            16 => f.offer_paths = Some(array(v, blinded_path)?),
            18 => f.offer_issuer = Some(v.to_vec()),
            20 => f.offer_quantity_max = Some(tu(v, 8)?),
            22 => f.offer_issuer_id = Some(whole(v, |r| r.point())?),
            0 => f.invreq_metadata = Some(v.to_vec()),
            80 => f.invreq_chain = Some(whole(v, |r| r.bytes32())?),
            82 => f.invreq_amount = Some(tu(v, 8)?),
            84 => f.invreq_features = Some(v.to_vec()),
            86 => f.invreq_quantity = Some(tu(v, 8)?),
            88 => f.invreq_payer_id = Some(whole(v, |r| r.point())?),
            89 => f.invreq_payer_note = Some(v.to_vec()),
            90 => f.invreq_paths = Some(array(v, blinded_path)?),
            91 => {
                f.invreq_bip_353_name = Some(whole(v, |r| {
                    let n = usize::from(r.u8()?);
                    let name = r.take(n)?.to_vec();
                    let d = usize::from(r.u8()?);
                    let domain = r.take(d)?.to_vec();
                    Some(Bip353Name { name, domain })
                })?)
            }
            160 => f.invoice_paths = Some(array(v, blinded_path)?),
            162 => {
                f.invoice_blindedpay = Some(array(v, |r| {
                    Some(PayInfo {
                        fee_base_msat: r.u32()?,
                        fee_proportional_millionths: r.u32()?,
                        cltv_expiry_delta: r.u16()?,
                        htlc_minimum_msat: r.u64()?,
                        htlc_maximum_msat: r.u64()?,
                        features: {
                            let n = usize::from(r.u16()?);
                            r.take(n)?.to_vec()
                        },
                    })
                })?)
            }
            164 => f.invoice_created_at = Some(tu(v, 8)?),
            166 => f.invoice_relative_expiry = Some(u32::try_from(tu(v, 4)?).ok()?),
            168 => f.invoice_payment_hash = Some(whole(v, |r| r.bytes32())?),
            170 => f.invoice_amount = Some(tu(v, 8)?),
            172 => {
                f.invoice_fallbacks = Some(array(v, |r| {
                    let version = r.u8()?;
                    let n = usize::from(r.u16()?);
                    Some(Fallback {
                        version,
                        program: r.take(n)?.to_vec(),
                    })
                })?)
            }
            174 => f.invoice_features = Some(v.to_vec()),
            176 => f.invoice_node_id = Some(whole(v, |r| r.point())?),
            SIGNATURE => f.signature = Some(v.try_into().ok()?),
            _ => return None,
        }
    }
    Some(f)
}

/// The lowest even (required) feature bit of `features` (big-endian bit field) that is
/// not in `known`.
fn unknown_even_bit(features: &[u8], known: &[usize]) -> Option<usize> {
    let n = features.len();
    (0..n * 8).step_by(2).find(|&bit| {
        let set = features[n - 1 - bit / 8] & (1 << (bit % 8)) != 0;
        set && !known.contains(&bit)
    })
}

/// CLN's checks of `offer_decode`, `invrequest_decode` and `invoice_decode` (with no
/// chain required, as `decode` calls them).
fn check(b: &Bolt12) -> Result<(), String> {
    let f = &b.fields;
    // Features a reader must understand: none for offers and invoice requests; basic MPP
    // (bit 16) for invoices.
    let (features, known): (&Option<Vec<u8>>, &[usize]) = match b.kind {
        Kind::Offer => (&f.offer_features, &[]),
        Kind::InvoiceRequest => (&f.invreq_features, &[]),
        Kind::Invoice => (&f.invoice_features, &[16]),
    };
    if b.kind == Kind::Offer && f.offer_chains.as_ref().is_some_and(Vec::is_empty) {
        return Err("offer_chains with zero entries".into());
    }
    if let Some(bit) = features.as_deref().and_then(|x| unknown_even_bit(x, known)) {
        return Err(format!("unknown feature bit {bit}"));
    }
    match b.kind {
        Kind::Offer => {
            if let Some(r) = b.records.iter().find(|r| !is_offer_range(r.typ)) {
                return Err(format!("Offer {} field outside offer range", r.typ));
            }
            if f.offer_description.is_none() && f.offer_amount.is_some() {
                return Err("Offer does not contain a description, but contains an amount".into());
            }
            if f.offer_amount == Some(0) {
                return Err("Offer contains a zero amount".into());
            }
            if f.offer_currency.is_some() && f.offer_amount.is_none() {
                return Err("Offer contains a currency with no amount".into());
            }
            if f.offer_issuer_id.is_none() && f.offer_paths.is_none() {
                return Err("Offer does not contain an issuer_id or paths".into());
            }
            if f.offer_paths.iter().flatten().any(|p| p.hops.is_empty()) {
                return Err("Offer contains an empty offer_path".into());
            }
        }
        Kind::InvoiceRequest => {
            let inside =
                |t: u64| (0..=159).contains(&t) || (1_000_000_000..=2_999_999_999).contains(&t);
            if let Some(r) = b
                .records
                .iter()
                .find(|r| !is_signature_type(r.typ) && !inside(r.typ))
            {
                return Err(format!(
                    "Invoice request {} field outside invoice request range",
                    r.typ
                ));
            }
            if f.invreq_paths.iter().flatten().any(|p| p.hops.is_empty()) {
                return Err("Invoice request contains an empty invreq_path".into());
            }
        }
        Kind::Invoice => {
            let Some(node_id) = &f.invoice_node_id else {
                return Err("Missing node_id".into());
            };
            if f.signature.is_none() {
                return Err("Missing signature".into());
            }
            if !b.signature_valid(node_id) {
                return Err("Invalid signature".into());
            }
            if f.invoice_amount.is_none() {
                return Err("missing invoice_amount".into());
            }
            if f.invoice_created_at.is_none() {
                return Err("missing invoice_created_at".into());
            }
            if f.invoice_payment_hash.is_none() {
                return Err("missing invoice_payment_hash".into());
            }
            let paths = f.invoice_paths.as_deref().unwrap_or_default();
            if paths.is_empty() {
                return Err("missing/empty invoice_paths".into());
            }
            if let Some(i) = paths.iter().position(|p| p.hops.is_empty()) {
                return Err(format!("zero num_hops in path {i}/{}", paths.len()));
            }
            let pays = f.invoice_blindedpay.as_ref().map_or(0, Vec::len);
            if pays != paths.len() {
                return Err(format!("expected {} payinfo but found {pays}", paths.len()));
            }
        }
    }
    Ok(())
}

/// ISO 4217's active currencies and their minor units (decimal places), for
/// `offer_currency`; the ones not listed have two.
const CURRENCIES: &str = "AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BHD BIF BMD BND BOB \
    BOV BRL BSD BTN BWP BYN BZD CAD CDF CHE CHF CHW CLF CLP CNY COP COU CRC CUC CUP CVE CZK DJF \
    DKK DOP DZD EGP ERN ETB EUR FJD FKP GBP GEL GHS GIP GMD GNF GTQ GYD HKD HNL HTG HUF IDR ILS \
    INR IQD IRR ISK JMD JOD JPY KES KGS KHR KMF KPW KRW KWD KYD KZT LAK LBP LKR LRD LSL LYD MAD \
    MDL MGA MKD MMK MNT MOP MRU MUR MVR MWK MXN MXV MYR MZN NAD NGN NIO NOK NPR NZD OMR PAB PEN \
    PGK PHP PKR PLN PYG QAR RON RSD RUB RWF SAR SBD SCR SDG SEK SGD SHP SLE SLL SOS SRD SSP STN \
    SVC SYP SZL THB TJS TMT TND TOP TRY TTD TWD TZS UAH UGX USD USN UYI UYU UYW UZS VED VES VND \
    VUV WST XAF XCD XCG XOF XPF YER ZAR ZMW ZWG ZWL";
const MINOR_0: &str = "BIF CLP DJF GNF ISK JPY KMF KRW PYG RWF UGX UYI VND VUV XAF XOF XPF";
const MINOR_3: &str = "BHD IQD JOD KWD LYD OMR TND";
const MINOR_4: &str = "CLF UYW";

/// The minor units of ISO 4217 currency `code`, if it is one.
pub fn currency_minor_unit(code: &[u8]) -> Option<u32> {
    let code = std::str::from_utf8(code).ok()?;
    if code.len() != 3 || !CURRENCIES.split_whitespace().any(|c| c == code) {
        return None;
    }
    let in_list = |l: &str| l.split_whitespace().any(|c| c == code);
    Some(if in_list(MINOR_0) {
        0
    } else if in_list(MINOR_3) {
        3
    } else if in_list(MINOR_4) {
        4
    } else {
        2
    })
}

/// The string of `kind` for the message `bytes` (bech32 characters, no checksum).
pub fn encode(kind: Kind, bytes: &[u8]) -> String {
    let mut s = String::from(kind.hrp());
    s.push('1');
    s.extend(
        fulgur_base::five_bit_groups(bytes)
            .iter()
            .map(|v| CHARSET[usize::from(*v)] as char),
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use bitcoin::secp256k1::{Keypair, SecretKey};
    use lightning::ln::channelmanager::PaymentId;
    use lightning::ln::inbound_payment::ExpandedKey;
    use lightning::offers::nonce::Nonce;
    use lightning::offers::offer::{OfferBuilder, Quantity};
    use lightning::offers::refund::RefundBuilder;
    use lightning::util::ser::Writeable;

    fn key(b: u8) -> (SecretKey, PublicKey) {
        let sk = SecretKey::from_slice(&[b; 32]).unwrap_or_else(|e| panic!("{e}"));
        (sk, PublicKey::from_secret_key(&Secp256k1::new(), &sk))
    }

    fn ok<T, E: std::fmt::Display>(r: Result<T, E>) -> T {
        r.unwrap_or_else(|e| panic!("{e}"))
    }

    fn ldk_offer() -> lightning::offers::offer::Offer {
        let (_, issuer) = key(1);
        ok(OfferBuilder::new(issuer)
            .description("coffee".into())
            .amount_msats(10_000)
            .issuer("Fulgur café".into())
            .supported_quantity(Quantity::Bounded(
                std::num::NonZeroU64::new(5).unwrap_or(std::num::NonZeroU64::MIN),
            ))
            .absolute_expiry(std::time::Duration::from_secs(2_000_000_000))
            .build()
            .map_err(|e| format!("{e:?}")))
    }

    #[test]
    fn reads_an_ldk_offer() {
        let offer = ldk_offer();
        let b = ok(decode(&offer.to_string()));
        assert_eq!(b.kind, Kind::Offer);
        let f = &b.fields;
        assert_eq!(f.offer_description.as_deref(), Some(b"coffee".as_slice()));
        assert_eq!(f.offer_amount, Some(10_000));
        assert_eq!(f.offer_issuer.as_deref(), Some("Fulgur café".as_bytes()));
        assert_eq!(f.offer_quantity_max, Some(5));
        assert_eq!(f.offer_absolute_expiry, Some(2_000_000_000));
        assert_eq!(f.offer_issuer_id, Some(key(1).1));
        assert!(b.unknown().next().is_none());
        // Case-insensitive, and split with `+` and whitespace as BOLT 12 allows.
        let s = offer.to_string();
        let (a, z) = s.split_at(20);
        assert_eq!(ok(decode(&format!("{a}+\n  {z}"))), b);
        assert_eq!(ok(decode(&s.to_uppercase())), b);
        assert_eq!(
            decode(&format!("{s}+")).err().as_deref(),
            Some("invalid bech32 string")
        );
        assert_eq!(
            decode(&format!("{a}+ ")).err().as_deref(),
            Some("unfinished string")
        );
        // Our encoder gives LDK's string back.
        assert_eq!(encode(Kind::Offer, &offer.encode()), s);
    }

    /// LDK signs an invoice request with BOLT 12's merkle root: that our root verifies its
    /// signature shows it is computed as the spec says; and its offer fields give the
    /// offer's id.
    #[test]
    fn an_ldk_invoice_request_verifies_and_names_its_offer() {
        let offer = ldk_offer();
        let secp = Secp256k1::new();
        let expanded = ExpandedKey::new([7; 32]);
        let nonce = ok(Nonce::try_from(&[9u8; 16][..]).map_err(|_| "nonce"));
        let invreq = ok(ok(offer
            .request_invoice(&expanded, nonce, &secp, PaymentId([3; 32]))
            .map_err(|e| format!("{e:?}")))
        .quantity(2)
        .map_err(|e| format!("{e:?}")))
        .payer_note("for the office".into())
        .build_and_sign();
        let invreq = ok(invreq.map_err(|e| format!("{e:?}")));
        let s = encode(Kind::InvoiceRequest, &invreq.encode());
        let b = ok(decode(&s));
        assert_eq!(b.kind, Kind::InvoiceRequest);
        let payer = b
            .fields
            .invreq_payer_id
            .unwrap_or_else(|| panic!("no payer id"));
        assert_eq!(payer, invreq.payer_signing_pubkey());
        assert!(b.signature_valid(&payer));
        assert!(!b.signature_valid(&key(2).1));
        assert_eq!(
            b.fields.invreq_payer_note.as_deref(),
            Some(b"for the office".as_slice())
        );
        assert_eq!(b.fields.invreq_quantity, Some(2));
        assert!(b.has_offer());
        assert_eq!(b.offer_id(), ok(decode(&offer.to_string())).offer_id());
        // A changed field breaks the signature.
        let mut tampered = b.clone();
        if let Some(r) = tampered.records.iter_mut().find(|r| r.typ == 89) {
            let last = r.encoded.len() - 1;
            r.encoded[last] ^= 1;
        }
        assert!(!tampered.signature_valid(&payer));
    }

    #[test]
    fn reads_an_ldk_refund_as_an_unsigned_invoice_request() {
        let (_, payer) = key(4);
        let refund =
            ok(RefundBuilder::new(vec![1, 2, 3], payer, 50_000).map_err(|e| format!("{e:?}")))
                .description("return".into())
                .build();
        let refund = ok(refund.map_err(|e| format!("{e:?}")));
        let b = ok(decode(&refund.to_string()));
        assert_eq!(b.kind, Kind::InvoiceRequest);
        assert_eq!(b.fields.invreq_amount, Some(50_000));
        assert_eq!(b.fields.invreq_payer_id, Some(payer));
        assert_eq!(b.fields.signature, None);
        assert!(!b.has_offer());
    }

    fn record(typ: u64, value: &[u8]) -> Vec<u8> {
        [bigsize(typ), bigsize(value.len() as u64), value.to_vec()].concat()
    }

    /// A signed invoice of our making: its fields read back, and CLN's refusals.
    #[test]
    fn reads_an_invoice_and_refuses_what_cln_refuses() {
        let (node_sk, node_id) = key(5);
        let (_, blinded) = key(6);
        let path = [
            vec![2u8],
            node_id.serialize()[1..].to_vec(),
            blinded.serialize().to_vec(),
            vec![1],
            blinded.serialize().to_vec(),
            vec![0, 2, 0xaa, 0xbb],
        ]
        .concat();
        // The first path starts at node_id (0x02 or 0x03 prefix): fix the prefix byte.
        let mut path = path;
        path[0] = node_id.serialize()[0];
        let payinfo = [
            1u32.to_be_bytes().to_vec(),
            100u32.to_be_bytes().to_vec(),
            40u16.to_be_bytes().to_vec(),
            1u64.to_be_bytes().to_vec(),
            1_000_000u64.to_be_bytes().to_vec(),
            vec![0, 0],
        ]
        .concat();
        let body = |with: &[(u64, Vec<u8>)]| -> Vec<u8> {
            with.iter().flat_map(|(t, v)| record(*t, v)).collect()
        };
        let mut fields: Vec<(u64, Vec<u8>)> = vec![
            (0, vec![1; 8]),
            (10, b"tea".to_vec()),
            (22, node_id.serialize().to_vec()),
            (88, key(7).1.serialize().to_vec()),
            (160, path),
            (162, payinfo),
            (164, vec![0x65, 0x00, 0x00, 0x00]),
            (168, vec![0x42; 32]),
            (170, vec![0x27, 0x10]),
            (
                172,
                [vec![0], 20u16.to_be_bytes().to_vec(), vec![0x11; 20]].concat(),
            ),
            (176, node_id.serialize().to_vec()),
        ];
        let sign = |fields: &[(u64, Vec<u8>)]| -> Vec<u8> {
            let unsigned = Bolt12 {
                kind: Kind::Invoice,
                fields: Fields::default(),
                records: ok(read_records(&body(fields)).ok_or("records")),
            };
            let digest = tagged_hash(b"lightninginvoicesignature", &[&unsigned.merkle_root()]);
            let msg = bitcoin::secp256k1::Message::from_digest(digest);
            let kp = Keypair::from_secret_key(&Secp256k1::new(), &node_sk);
            let sig = Secp256k1::new().sign_schnorr_no_aux_rand(&msg, &kp);
            let mut all = fields.to_vec();
            all.push((SIGNATURE, sig.as_ref().to_vec()));
            body(&all)
        };
        let s = encode(Kind::Invoice, &sign(&fields));
        let b = ok(decode(&s));
        let f = &b.fields;
        assert_eq!(f.invoice_amount, Some(10_000));
        assert_eq!(f.invoice_created_at, Some(0x6500_0000));
        assert_eq!(f.invoice_payment_hash, Some([0x42; 32]));
        assert_eq!(f.invoice_node_id, Some(node_id));
        let paths = f.invoice_paths.clone().unwrap_or_default();
        assert_eq!(paths.len(), 1);
        assert_eq!(paths[0].first, PathStart::Node(node_id));
        assert_eq!(paths[0].hops[0].encrypted_recipient_data, vec![0xaa, 0xbb]);
        assert_eq!(
            f.invoice_blindedpay
                .as_ref()
                .map(|p| p[0].cltv_expiry_delta),
            Some(40)
        );
        assert_eq!(
            f.invoice_fallbacks,
            Some(vec![Fallback {
                version: 0,
                program: vec![0x11; 20]
            }])
        );
        // A byte of the signed part changed: the signature no longer holds.
        let mut bad = sign(&fields);
        let at = bad.iter().position(|x| *x == b't').unwrap_or(0);
        bad[at] = b'T';
        assert_eq!(
            decode(&encode(Kind::Invoice, &bad)).err().as_deref(),
            Some("Invalid signature")
        );
        // No amount.
        let no_amount: Vec<_> = fields.iter().filter(|(t, _)| *t != 170).cloned().collect();
        assert_eq!(
            decode(&encode(Kind::Invoice, &sign(&no_amount)))
                .err()
                .as_deref(),
            Some("missing invoice_amount")
        );
        // A non-minimal amount is not a valid field at all.
        for (t, v) in fields.iter_mut() {
            if *t == 170 {
                *v = vec![0, 0x27, 0x10];
            }
        }
        assert_eq!(
            decode(&encode(Kind::Invoice, &sign(&fields)))
                .err()
                .as_deref(),
            Some("invalid invoice data")
        );
    }

    #[test]
    fn refuses_malformed_offers_with_clns_messages() {
        let (_, issuer) = key(1);
        let id = issuer.serialize().to_vec();
        type Tlvs = Vec<(u64, Vec<u8>)>;
        let cases: Vec<(Tlvs, &str)> = vec![
            (
                vec![(8, vec![1]), (22, id.clone())],
                "Offer does not contain a description, but contains an amount",
            ),
            (
                vec![(10, b"x".to_vec())],
                "Offer does not contain an issuer_id or paths",
            ),
            (
                vec![(6, b"USD".to_vec()), (10, b"x".to_vec()), (22, id.clone())],
                "Offer contains a currency with no amount",
            ),
            (
                vec![(2, vec![]), (22, id.clone())],
                "offer_chains with zero entries",
            ),
            (
                vec![(12, vec![0x01]), (22, id.clone())],
                "unknown feature bit 0",
            ),
            (
                vec![(22, id.clone()), (81, vec![])],
                "Offer 81 field outside offer range",
            ),
            (vec![(22, id.clone()), (24, vec![])], "invalid offer data"),
            (vec![(22, id[..32].to_vec())], "invalid offer data"),
        ];
        for (fields, why) in cases {
            let bytes: Vec<u8> = fields.iter().flat_map(|(t, v)| record(*t, v)).collect();
            assert_eq!(
                decode(&encode(Kind::Offer, &bytes)).err().as_deref(),
                Some(why),
                "{fields:?}"
            );
        }
        // Out of order.
        let bytes = [record(22, &id), record(10, b"x")].concat();
        assert_eq!(
            decode(&encode(Kind::Offer, &bytes)).err().as_deref(),
            Some("invalid offer data")
        );
        // Unknown odd fields are kept.
        let bytes = [
            record(22, &id),
            record(23, b"?"),
            record(1_000_000_001, b"!"),
        ]
        .concat();
        let b = ok(decode(&encode(Kind::Offer, &bytes)));
        assert_eq!(
            b.unknown().map(|r| r.typ).collect::<Vec<_>>(),
            vec![23, 1_000_000_001]
        );
        assert_eq!(
            decode("lnx1qqqq").err().as_deref(),
            Some("unexpected prefix lnx")
        );
        assert_eq!(
            decode("lno1b").err().as_deref(),
            Some("invalid bech32 string")
        );
    }

    #[test]
    fn currencies() {
        assert_eq!(currency_minor_unit(b"USD"), Some(2));
        assert_eq!(currency_minor_unit(b"JPY"), Some(0));
        assert_eq!(currency_minor_unit(b"KWD"), Some(3));
        assert_eq!(currency_minor_unit(b"XYZ"), None);
    }
}
