//! Invoices (BOLT 11) with Core Lightning's semantics, kept in the `invoices` table
//! (migration 5) beside LDK's state.
//!
//! - `created_index` is the table's AUTOINCREMENT key (never reused); `updated_index` comes from
//!   the `invoices` row of `index_counters` (`updated`), bumped on every change after creation
//!   (paid, expired, description removed); deletions bump its `deleted`.
//! - `pay_index` is assigned in payment order from the `invoice_pay_index` row of
//!   `index_counters` (its `updated` column holds the last one given), in the same transaction
//!   that marks the invoice paid, so it is never reused, even after the last paid invoice is
//!   deleted: `waitanyinvoice` is a reliable queue across restarts.
//! - An unpaid invoice whose `expires_at` has passed is expired: every read first marks such
//!   invoices `expired` (bumping their `updated_index`) in the transaction that reads, so what
//!   a caller sees is always current and persisted.
//! - The payment preimage is the caller's (`preimage`), LDK's (derived from the payment
//!   secret, [`lightning::ln::channelmanager::ChannelManager::create_inbound_payment`]), or
//!   unknown until paid (`payment_hash`, our extension for invoices settled by a plugin).
//!
//! The store functions work on a [`Connection`] and are tested here. The [`Invoices`] service
//! runs them at its clock's time and adds the notifications (`invoice_creation`,
//! `invoice_payment`) and the signal waiters follow; [`Lightning::create_invoice`] adds LDK.

use fulgur_base::clock::Clock;
use fulgur_base::hex;
use fulgur_base::log::SourceLog;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

use bitcoin::hashes::{Hash, sha256};
use fulgur_store::sql::{Connection, OptionalExtension, Row, params};
use lightning::ln::channel_state::ChannelDetails;
use lightning::ln::channelmanager::{Bolt11InvoiceParameters, MIN_FINAL_CLTV_EXPIRY_DELTA};
use lightning::sign::{NodeSigner, Recipient};
use lightning::types::payment::{PaymentHash, PaymentSecret};
use lightning_invoice::{
    Bolt11Invoice, Bolt11InvoiceDescription, Description, Fallback, PrivateRoute, RawTaggedField,
    RouteHint, RouteHintHop, RoutingFees, TaggedField,
};

use super::Lightning;
use super::port::{Notice, Port};
use crate::store::{Store, StoreError};

/// An invoice's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InvoiceStatus {
    /// Not paid yet and not expired.
    Unpaid,
    /// Paid.
    Paid,
    /// Expired unpaid.
    Expired,
}

impl InvoiceStatus {
    /// Its name, as stored and as CLN shows it.
    pub fn as_str(self) -> &'static str {
        match self {
            InvoiceStatus::Unpaid => "unpaid",
            InvoiceStatus::Paid => "paid",
            InvoiceStatus::Expired => "expired",
        }
    }

    /// The status named `s`.
    pub fn parse(s: &str) -> Option<InvoiceStatus> {
        [
            InvoiceStatus::Unpaid,
            InvoiceStatus::Paid,
            InvoiceStatus::Expired,
        ]
        .into_iter()
        .find(|v| v.as_str() == s)
    }
}

impl std::fmt::Display for InvoiceStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

fulgur_store::text_enum!(InvoiceStatus);

/// CLN's default `expiry`: one week.
pub const DEFAULT_EXPIRY_SECS: u64 = 7 * 24 * 3600;
/// CLN's limit on labels, in bytes.
pub const MAX_LABEL_LEN: usize = 128;

const COUNTERS: &str = "invoices";
const PAY_COUNTER: &str = "invoice_pay_index";
const SELECT: &str = "SELECT created_index, updated_index, label, bolt11, payment_hash, \
     payment_secret, preimage, amount_msat, description, expires_at, cltv, status, pay_index, \
     amount_received_msat, paid_at, paid_outpoint FROM invoices";

/// An invoice as stored, with its status as of the read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvoiceRecord {
    /// Creation order, from 1, never reused.
    pub created_index: u64,
    /// Order of its last change, if it changed since creation.
    pub updated_index: Option<u64>,
    /// The caller's unique label.
    pub label: String,
    /// The BOLT 11 string.
    pub bolt11: String,
    /// The payment hash.
    pub payment_hash: [u8; 32],
    /// The payment secret in the invoice.
    pub payment_secret: [u8; 32],
    /// The preimage, if known (always once paid).
    pub preimage: Option<[u8; 32]>,
    /// The amount asked; `None` for "any".
    pub amount_msat: Option<u64>,
    /// The description (also kept with `deschashonly`); `None` once removed by `delinvoice
    /// desconly`.
    pub description: Option<String>,
    /// UNIX time it expires (expired) at.
    pub expires_at: u64,
    /// The invoice's `min_final_cltv_expiry`.
    pub cltv: u32,
    /// Unpaid, paid or expired.
    pub status: InvoiceStatus,
    /// Payment order (paid invoices).
    pub pay_index: Option<u64>,
    /// What was received (paid invoices).
    pub amount_received_msat: Option<u64>,
    /// UNIX time it was paid at.
    pub paid_at: Option<u64>,
    /// The output that paid it on chain (`txid:vout`; `--invoices-onchain-fallback`).
    pub paid_outpoint: Option<String>,
}

/// Which invoices `listinvoices` shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    /// All of them (in `index` order from `start`, at most `limit`).
    All {
        /// Order by `updated_index` (only invoices that changed) instead of `created_index`.
        updated: bool,
        /// First index shown.
        start: u64,
        /// How many at most.
        limit: Option<u32>,
    },
    /// The one with this label.
    Label(String),
    /// The one with this payment hash.
    Hash([u8; 32]),
}

/// What `invoice` asks for, checked by the RPC layer.
#[derive(Debug, Clone)]
pub struct InvoiceRequest {
    /// Amount; `None` for "any".
    pub amount_msat: Option<u64>,
    /// Unique label.
    pub label: String,
    /// Description (in the invoice, or its hash with `deschashonly`).
    pub description: String,
    /// Seconds until it expires.
    pub expiry_secs: u64,
    /// On-chain fallback addresses, most preferred first.
    pub fallbacks: Vec<Fallback>,
    /// The caller's preimage.
    pub preimage: Option<[u8; 32]>,
    /// Our extension: a payment hash whose preimage the node does not know (it comes later,
    /// from a plugin, at `invoice_paid`).
    pub payment_hash: Option<[u8; 32]>,
    /// Route hints (`exposeprivatechannels`).
    pub expose: Expose,
    /// Wanted `min_final_cltv_expiry`; raised to LDK's minimum when lower.
    pub cltv: Option<u32>,
    /// Put the description's SHA256 in the invoice instead of the description.
    pub deschashonly: bool,
}

/// `exposeprivatechannels`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expose {
    /// Not given: LDK's choice (unannounced channels only when there is no announced one).
    Default,
    /// `true`: unannounced channels are always candidates.
    All,
    /// `false`: never hint unannounced channels.
    NoPrivate,
    /// Only these channels (short channel ids or aliases), announced or not.
    Only(Vec<u64>),
}

/// A created invoice.
#[derive(Debug, Clone)]
pub struct CreatedInvoice {
    /// As stored.
    pub record: InvoiceRecord,
    /// CLN's `warning_*` fields: (name, text).
    pub warnings: Vec<(&'static str, &'static str)>,
}

/// Why `invoice` failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CreateError {
    /// 900: the label is taken.
    DuplicateLabel(String),
    /// 901: an invoice with this payment hash exists.
    DuplicateHash,
    /// 902: none of the `exposeprivatechannels` channels can be a route hint.
    NoUsableHints,
    /// -32602: a parameter LDK or BOLT 11 refuses.
    Invalid(String),
    /// -1: anything else (database, signing).
    Failed(String),
}

/// Why `waitinvoice`/`waitanyinvoice` returned without a paid invoice.
#[derive(Debug)]
pub enum WaitError {
    /// No invoice with that label.
    NotFound,
    /// The invoice was deleted while waited for.
    Deleted,
    /// The invoice expired (before or while waiting).
    Expired(Box<InvoiceRecord>),
    /// The timeout passed.
    TimedOut,
    /// The engine is stopping.
    Stopped,
    /// The database failed.
    Store(StoreError),
}

/// Why `delinvoice` failed.
#[derive(Debug)]
pub enum DeleteError {
    /// 905: no invoice with that label.
    NotFound,
    /// 906: its status is this one, not the one given.
    Status(InvoiceStatus),
    /// 908: `desconly` but the description is already gone.
    NoDescription,
    /// The database failed.
    Store(StoreError),
}

/// What [`mark_paid`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paid {
    /// The invoice's pay index.
    pub pay_index: u64,
    /// Its label.
    pub label: String,
    /// Whether this call marked it (false: it was already paid, nothing changed).
    pub newly: bool,
}

fn to_sql(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn col_u64(r: &Row, i: usize) -> fulgur_store::sql::Result<u64> {
    Ok(u64::try_from(r.get::<_, i64>(i)?).unwrap_or(0))
}

fn col_opt_u64(r: &Row, i: usize) -> fulgur_store::sql::Result<Option<u64>> {
    Ok(r.get::<_, Option<i64>>(i)?
        .map(|v| u64::try_from(v).unwrap_or(0)))
}

fn col_32(r: &Row, i: usize) -> fulgur_store::sql::Result<[u8; 32]> {
    let v: Vec<u8> = r.get(i)?;
    v.try_into().map_err(|_| {
        fulgur_store::sql::Error::FromSqlConversionFailure(
            i,
            fulgur_store::sql::Type::Blob,
            "expected 32 bytes".into(),
        )
    })
}

fn read_row(r: &Row) -> fulgur_store::sql::Result<InvoiceRecord> {
    let preimage = match r.get::<_, Option<Vec<u8>>>(6)? {
        None => None,
        Some(_) => Some(col_32(r, 6)?),
    };
    Ok(InvoiceRecord {
        created_index: col_u64(r, 0)?,
        updated_index: col_opt_u64(r, 1)?,
        label: r.get(2)?,
        bolt11: r.get(3)?,
        payment_hash: col_32(r, 4)?,
        payment_secret: col_32(r, 5)?,
        preimage,
        amount_msat: col_opt_u64(r, 7)?,
        description: r.get(8)?,
        expires_at: col_u64(r, 9)?,
        cltv: u32::try_from(r.get::<_, i64>(10)?).unwrap_or(0),
        status: r.get(11)?,
        pay_index: col_opt_u64(r, 12)?,
        amount_received_msat: col_opt_u64(r, 13)?,
        paid_at: col_opt_u64(r, 14)?,
        paid_outpoint: r.get(15)?,
    })
}

/// Bumps the `invoices` counters by (updated, deleted); returns their new values.
fn bump(conn: &Connection, updated: u64, deleted: u64) -> fulgur_store::sql::Result<(u64, u64)> {
    conn.prepare_cached(
        "INSERT INTO index_counters (subsystem, updated, deleted) VALUES (?1, ?2, ?3) \
         ON CONFLICT (subsystem) DO UPDATE SET updated = index_counters.updated + ?2, deleted = index_counters.deleted + ?3 \
         RETURNING updated, deleted",
    )?
    .query_row(params![COUNTERS, to_sql(updated), to_sql(deleted)], |r| {
        Ok((col_u64(r, 0)?, col_u64(r, 1)?))
    })
}

/// The next `updated_index`.
fn next_updated(conn: &Connection) -> fulgur_store::sql::Result<u64> {
    Ok(bump(conn, 1, 0)?.0)
}

/// The next pay index: one more than any ever given (kept in `index_counters`, and never
/// below the table's own maximum).
fn next_pay_index(conn: &Connection) -> fulgur_store::sql::Result<u64> {
    let max: Option<i64> = conn
        .prepare_cached("SELECT MAX(pay_index) FROM invoices")?
        .query_row([], |r| r.get(0))?;
    let last: Option<i64> = conn
        .prepare_cached("SELECT updated FROM index_counters WHERE subsystem = ?1")?
        .query_row([PAY_COUNTER], |r| r.get(0))
        .optional()?;
    let next = max.unwrap_or(0).max(last.unwrap_or(0)).saturating_add(1);
    conn.prepare_cached(
        "INSERT INTO index_counters (subsystem, updated, deleted) VALUES (?1, ?2, 0) \
         ON CONFLICT (subsystem) DO UPDATE SET updated = excluded.updated",
    )?
    .execute(params![PAY_COUNTER, next])?;
    Ok(u64::try_from(next).unwrap_or(0))
}

/// The BOLT 11 fallback field of an address (P2PKH, P2SH or segwit), if it has one.
pub fn fallback_of(a: &bitcoin::Address) -> Option<Fallback> {
    use bitcoin::address::AddressData;
    match a.to_address_data() {
        AddressData::P2pkh { pubkey_hash } => Some(Fallback::PubKeyHash(pubkey_hash)),
        AddressData::P2sh { script_hash } => Some(Fallback::ScriptHash(script_hash)),
        AddressData::Segwit { witness_program } => Some(Fallback::SegWitProgram {
            version: witness_program.version(),
            program: witness_program.program().as_bytes().to_vec(),
        }),
        _ => None,
    }
}

/// The `invoices` counters: (updated, deleted).
#[cfg(test)]
pub fn counters(conn: &Connection) -> fulgur_store::sql::Result<(u64, u64)> {
    Ok(conn
        .query_row(
            "SELECT updated, deleted FROM index_counters WHERE subsystem = ?1",
            [COUNTERS],
            |r| Ok((col_u64(r, 0)?, col_u64(r, 1)?)),
        )
        .optional()?
        .unwrap_or((0, 0)))
}

/// Marks unpaid invoices expired at `now` (each gets its own `updated_index`); returns how many.
pub fn expire_due(conn: &Connection, now: u64) -> fulgur_store::sql::Result<usize> {
    let due: Vec<i64> = conn
        .prepare_cached(
            "SELECT created_index FROM invoices WHERE status = ?1 AND expires_at <= ?2 \
             ORDER BY created_index",
        )?
        .query_map(params![InvoiceStatus::Unpaid, to_sql(now)], |r| r.get(0))?
        .collect::<fulgur_store::sql::Result<_>>()?;
    for id in &due {
        let u = next_updated(conn)?;
        conn.prepare_cached(
            "UPDATE invoices SET status = ?1, updated_index = ?2 WHERE created_index = ?3",
        )?
        .execute(params![InvoiceStatus::Expired, to_sql(u), id])?;
    }
    Ok(due.len())
}

/// The invoice labelled `label`.
pub fn by_label(
    conn: &Connection,
    label: &str,
) -> fulgur_store::sql::Result<Option<InvoiceRecord>> {
    conn.prepare_cached(&format!("{SELECT} WHERE label = ?1"))?
        .query_row([label], read_row)
        .optional()
}

/// The invoice for `hash`.
pub fn by_hash(
    conn: &Connection,
    hash: &[u8; 32],
) -> fulgur_store::sql::Result<Option<InvoiceRecord>> {
    conn.prepare_cached(&format!("{SELECT} WHERE payment_hash = ?1"))?
        .query_row([&hash[..]], read_row)
        .optional()
}

/// The invoices `sel` designates, in index order.
pub fn list(conn: &Connection, sel: &Selector) -> fulgur_store::sql::Result<Vec<InvoiceRecord>> {
    match sel {
        Selector::Label(l) => Ok(by_label(conn, l)?.into_iter().collect()),
        Selector::Hash(h) => Ok(by_hash(conn, h)?.into_iter().collect()),
        Selector::All {
            updated,
            start,
            limit,
        } => {
            let col = if *updated {
                "updated_index"
            } else {
                "created_index"
            };
            let limit = limit.map_or(i64::MAX, i64::from);
            conn.prepare(&format!(
                "{SELECT} WHERE {col} >= ?1 ORDER BY {col} LIMIT ?2"
            ))?
            .query_map(params![to_sql(*start), limit], read_row)?
            .collect()
        }
    }
}

/// The paid invoice with the smallest pay index above `last`.
pub fn first_paid_after(
    conn: &Connection,
    last: u64,
) -> fulgur_store::sql::Result<Option<InvoiceRecord>> {
    conn.prepare_cached(&format!(
        "{SELECT} WHERE pay_index IS NOT NULL AND pay_index > ?1 ORDER BY pay_index LIMIT 1"
    ))?
    .query_row([to_sql(last)], read_row)
    .optional()
}

/// A new invoice's row.
#[derive(Debug, Clone)]
pub struct NewInvoice {
    /// Label.
    pub label: String,
    /// BOLT 11 string.
    pub bolt11: String,
    /// Payment hash.
    pub payment_hash: [u8; 32],
    /// Payment secret.
    pub payment_secret: [u8; 32],
    /// Preimage, when known.
    pub preimage: Option<[u8; 32]>,
    /// Amount, `None` for any.
    pub amount_msat: Option<u64>,
    /// Description.
    pub description: String,
    /// UNIX expiry time.
    pub expires_at: u64,
    /// `min_final_cltv_expiry`.
    pub cltv: u32,
}

/// Stores a new unpaid invoice; returns its `created_index`. Fails with
/// [`CreateError::DuplicateHash`] or [`CreateError::DuplicateLabel`] (checked in that order,
/// like CLN).
pub fn insert(conn: &mut Connection, n: &NewInvoice) -> Result<u64, CreateError> {
    let db = |e: fulgur_store::sql::Error| CreateError::Failed(format!("database error: {e}"));
    let tx = conn.transaction().map_err(db)?;
    if by_hash(&tx, &n.payment_hash).map_err(db)?.is_some() {
        return Err(CreateError::DuplicateHash);
    }
    if by_label(&tx, &n.label).map_err(db)?.is_some() {
        return Err(CreateError::DuplicateLabel(n.label.clone()));
    }
    tx.execute("INSERT INTO invoices (label, bolt11, payment_hash, payment_secret, preimage, amount_msat, \
         description, expires_at, cltv, status) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, 'unpaid')",
        params![
            n.label,
            n.bolt11,
            &n.payment_hash[..],
            &n.payment_secret[..],
            n.preimage.as_ref().map(|p| &p[..]),
            n.amount_msat.map(to_sql),
            n.description,
            to_sql(n.expires_at),
            n.cltv,
        ],
    )
    .map_err(db)?;
    let id = tx.last_insert_rowid();
    tx.commit().map_err(db)?;
    Ok(u64::try_from(id).unwrap_or(0))
}

/// Marks the invoice for `hash` paid with `amount_msat` and `preimage` at `now`, assigning the
/// next pay index, in one transaction. An invoice already paid is left as it is (its pay index
/// is returned with `newly: false`). `None`: no invoice has this hash. Whether the invoice may
/// still be paid (expired?) is the caller's decision, made before claiming the payment: this
/// records what happened.
pub fn mark_paid(
    conn: &mut Connection,
    hash: &[u8; 32],
    amount_msat: u64,
    preimage: &[u8; 32],
    now: u64,
) -> fulgur_store::sql::Result<Option<Paid>> {
    let tx = conn.transaction()?;
    let Some(inv) = by_hash(&tx, hash)? else {
        return Ok(None);
    };
    if inv.status == InvoiceStatus::Paid {
        return Ok(Some(Paid {
            pay_index: inv.pay_index.unwrap_or(0),
            label: inv.label,
            newly: false,
        }));
    }
    let u = next_updated(&tx)?;
    let p = next_pay_index(&tx)?;
    tx.prepare_cached(
        "UPDATE invoices SET status = 'paid', pay_index = ?1, amount_received_msat = ?2, \
         paid_at = ?3, preimage = ?4, updated_index = ?5 WHERE created_index = ?6",
    )?
    .execute(params![
        to_sql(p),
        to_sql(amount_msat),
        to_sql(now),
        &preimage[..],
        to_sql(u),
        to_sql(inv.created_index),
    ])?;
    tx.commit()?;
    Ok(Some(Paid {
        pay_index: p,
        label: inv.label,
        newly: true,
    }))
}

/// Remembers that `invoice` (its `created_index`) carries `script` as its on-chain fallback.
pub fn add_fallback(
    conn: &Connection,
    invoice: u64,
    script: &[u8],
) -> fulgur_store::sql::Result<()> {
    conn.prepare_cached(
        "INSERT INTO invoice_fallbacks (script, invoice) VALUES (?1, ?2) \
         ON CONFLICT (script) DO UPDATE SET invoice = excluded.invoice",
    )?
    .execute(params![script, to_sql(invoice)])?;
    Ok(())
}

/// The fallback scripts of the unpaid invoices.
pub fn unpaid_fallbacks(conn: &Connection) -> fulgur_store::sql::Result<Vec<Vec<u8>>> {
    let mut st = conn.prepare_cached(
        "SELECT f.script FROM invoice_fallbacks f JOIN invoices i ON i.created_index = f.invoice \
         WHERE i.status = 'unpaid'",
    )?;
    let rows = st.query_map([], |r| r.get(0))?;
    rows.collect()
}

/// The invoice whose on-chain fallback is `script`, if any.
pub fn by_fallback(
    conn: &Connection,
    script: &[u8],
) -> fulgur_store::sql::Result<Option<InvoiceRecord>> {
    conn.prepare_cached(&format!(
        "{SELECT} WHERE created_index = (SELECT invoice FROM invoice_fallbacks WHERE script = ?1)"
    ))?
    .query_row(params![script], read_row)
    .optional()
}

/// Marks the invoice `created_index` paid by the on-chain output `outpoint` (CLN's
/// `paid_outpoint`), if it is still unpaid; its preimage stays as it is.
pub fn mark_paid_onchain(
    conn: &mut Connection,
    created_index: u64,
    amount_msat: u64,
    outpoint: &str,
    now: u64,
) -> fulgur_store::sql::Result<Option<Paid>> {
    let tx = conn.transaction()?;
    let status: Option<InvoiceStatus> = tx
        .prepare_cached("SELECT status FROM invoices WHERE created_index = ?1")?
        .query_row(params![to_sql(created_index)], |r| r.get(0))
        .optional()?;
    if status != Some(InvoiceStatus::Unpaid) {
        return Ok(None);
    }
    let u = next_updated(&tx)?;
    let p = next_pay_index(&tx)?;
    let label: String = tx
        .prepare_cached(
            "UPDATE invoices SET status = 'paid', pay_index = ?1, amount_received_msat = ?2, \
             paid_at = ?3, paid_outpoint = ?4, updated_index = ?5 WHERE created_index = ?6 \
             RETURNING label",
        )?
        .query_row(
            params![
                to_sql(p),
                to_sql(amount_msat),
                to_sql(now),
                outpoint,
                to_sql(u),
                to_sql(created_index),
            ],
            |r| r.get(0),
        )?;
    tx.commit()?;
    Ok(Some(Paid {
        pay_index: p,
        label,
        newly: true,
    }))
}

/// A payment to us about to be claimed: what the checks before a claim look at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    /// Its payment hash.
    pub hash: [u8; 32],
    /// The preimage it would be claimed with (hashes to `hash`).
    pub preimage: [u8; 32],
    /// What its HTLCs carry in all.
    pub amount_msat: u64,
    /// The payment secret of its onion (a BOLT 11 payment); `None` for a keysend.
    pub payment_secret: Option<[u8; 32]>,
    /// The amount to check instead of the invoice's, given by a plugin's `htlc_accepted`
    /// answer (CLN's `invoice_msat`).
    pub invoice_msat: Option<u64>,
}

/// Why a payment to us is failed back instead of claimed. Every case fails with BOLT 4's
/// `incorrect_or_unknown_payment_details`, as CLN does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimRefusal {
    /// A BOLT 11 payment for which no invoice exists (never made, or deleted).
    NoInvoice,
    /// The invoice was already paid: a second payer would lose the money.
    AlreadyPaid,
    /// The invoice expired unpaid.
    Expired,
    /// Less than the invoice asks (BOLT 4: MUST fail).
    Amount {
        /// The invoice's amount.
        asked_msat: u64,
        /// What the HTLCs carry.
        got_msat: u64,
    },
    /// The onion's payment secret is not the invoice's (an invoice deleted and made again
    /// with the same payment hash).
    WrongSecret,
    /// A claim of this payment hash is already under way.
    ClaimUnderWay,
}

impl std::fmt::Display for ClaimRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClaimRefusal::NoInvoice => write!(f, "no invoice for this payment hash"),
            ClaimRefusal::AlreadyPaid => write!(f, "the invoice is already paid"),
            ClaimRefusal::Expired => write!(f, "the invoice has expired"),
            ClaimRefusal::Amount {
                asked_msat,
                got_msat,
            } => write!(
                f,
                "{got_msat}msat received for an invoice of {asked_msat}msat"
            ),
            ClaimRefusal::WrongSecret => write!(f, "the payment secret is not the invoice's"),
            ClaimRefusal::ClaimUnderWay => {
                write!(f, "a payment of this invoice is already being claimed")
            }
        }
    }
}

/// Whether `claim` may be claimed against `inv` (its invoice as read now, expiry applied):
/// CLN's checks (state, amount, payment secret) before every claim. A payment without a
/// payment secret and without an invoice is a keysend, which has none to check.
pub fn claim_refusal(inv: Option<&InvoiceRecord>, claim: &Claim) -> Option<ClaimRefusal> {
    let Some(inv) = inv else {
        return claim.payment_secret.map(|_| ClaimRefusal::NoInvoice);
    };
    match inv.status {
        InvoiceStatus::Paid => return Some(ClaimRefusal::AlreadyPaid),
        InvoiceStatus::Expired => return Some(ClaimRefusal::Expired),
        _ => {}
    }
    if let Some(asked) = claim.invoice_msat.or(inv.amount_msat)
        && claim.amount_msat < asked
    {
        return Some(ClaimRefusal::Amount {
            asked_msat: asked,
            got_msat: claim.amount_msat,
        });
    }
    if claim
        .payment_secret
        .is_some_and(|s| s != inv.payment_secret)
    {
        return Some(ClaimRefusal::WrongSecret);
    }
    None
}

/// Checks `claim` against its invoice and, when it may be claimed, stores its preimage in
/// the invoice (one synced transaction) so that `PaymentClaimed` can mark the invoice paid
/// even after a `kill -9` between the claim and that event. Run after [`expire_due`].
pub fn record_claim(
    conn: &mut Connection,
    claim: &Claim,
) -> fulgur_store::sql::Result<Option<ClaimRefusal>> {
    let tx = conn.transaction()?;
    let inv = by_hash(&tx, &claim.hash)?;
    if let Some(refusal) = claim_refusal(inv.as_ref(), claim) {
        return Ok(Some(refusal));
    }
    if let Some(inv) = inv
        && inv.preimage.is_none()
    {
        tx.prepare_cached("UPDATE invoices SET preimage = ?1 WHERE created_index = ?2")?
            .execute(params![&claim.preimage[..], to_sql(inv.created_index)])?;
    }
    tx.commit()?;
    Ok(None)
}

/// `delinvoice`: deletes the invoice `label` if its status is `status` (or with `desconly`
/// only removes its description). Returns the invoice as it was (without the description
/// after `desconly`). Run after [`expire_due`].
pub fn delete(
    conn: &mut Connection,
    label: &str,
    status: Option<InvoiceStatus>,
    desconly: bool,
) -> Result<InvoiceRecord, DeleteError> {
    let db = |e: fulgur_store::sql::Error| DeleteError::Store(e.into());
    let tx = conn.transaction().map_err(db)?;
    let mut inv = by_label(&tx, label)
        .map_err(db)?
        .ok_or(DeleteError::NotFound)?;
    if Some(inv.status) != status {
        return Err(DeleteError::Status(inv.status));
    }
    if desconly {
        if inv.description.is_none() {
            return Err(DeleteError::NoDescription);
        }
        let u = next_updated(&tx).map_err(db)?;
        tx.execute(
            "UPDATE invoices SET description = NULL, updated_index = ?1 WHERE created_index = ?2",
            params![to_sql(u), to_sql(inv.created_index)],
        )
        .map_err(db)?;
        inv.description = None;
        inv.updated_index = Some(u);
    } else {
        tx.execute(
            "DELETE FROM invoices WHERE created_index = ?1",
            [to_sql(inv.created_index)],
        )
        .map_err(db)?;
        bump(&tx, 0, 1).map_err(db)?;
    }
    tx.commit().map_err(db)?;
    Ok(inv)
}

/// Deletes the invoices with `status` and `time_column <= cutoff`; returns how many.
fn delete_where(
    conn: &Connection,
    status: InvoiceStatus,
    time_column: &str,
    cutoff: u64,
) -> fulgur_store::sql::Result<u64> {
    let n = conn.execute(
        &format!("DELETE FROM invoices WHERE status = ?1 AND {time_column} <= ?2"),
        params![status, to_sql(cutoff)],
    )?;
    let n = n as u64;
    if n > 0 {
        bump(conn, 0, n)?;
    }
    Ok(n)
}

/// `delexpiredinvoice`: deletes expired invoices that expired at or before `max_expiry`.
/// Run after [`expire_due`].
pub fn delete_expired(conn: &mut Connection, max_expiry: u64) -> fulgur_store::sql::Result<u64> {
    let tx = conn.transaction()?;
    let n = delete_where(&tx, InvoiceStatus::Expired, "expires_at", max_expiry)?;
    tx.commit()?;
    Ok(n)
}

/// Runs `f` on the invoices table at the `clock`'s now, after marking what is due as expired,
/// in one transaction. Returns `f`'s result and how many invoices just expired (a change
/// waiters must hear of).
pub async fn with_invoices<T, F>(
    store: &Store,
    clock: &Arc<dyn Clock>,
    f: F,
) -> Result<(T, usize), StoreError>
where
    T: Send + 'static,
    F: FnOnce(&mut Connection, u64) -> Result<T, StoreError> + Send + 'static,
{
    let now = clock.unix_now();
    store
        .with(move |conn| {
            let expired = expire_due(conn, now)?;
            Ok((f(conn, now)?, expired))
        })
        .await
}

/// A route hint through `c` (LDK's own recipe), if the channel can have one.
fn route_hint(c: &ChannelDetails) -> Option<RouteHint> {
    let f = c.counterparty.forwarding_info.as_ref()?;
    Some(RouteHint(vec![RouteHintHop {
        src_node_id: c.counterparty.node_id,
        short_channel_id: c.get_inbound_payment_scid()?,
        fees: RoutingFees {
            base_msat: f.fee_base_msat,
            proportional_millionths: f.fee_proportional_millionths,
        },
        cltv_expiry_delta: f.cltv_expiry_delta,
        htlc_minimum_msat: c.inbound_htlc_minimum_msat,
        htlc_maximum_msat: c.inbound_htlc_maximum_msat,
    }]))
}

/// At most this many route hints, as LDK.
const MAX_HINTS: usize = 3;

/// CLN's capacity warnings for an invoice of `amount` over `channels`.
fn warnings(channels: &[ChannelDetails], amount: Option<u64>) -> Vec<(&'static str, &'static str)> {
    let needed = amount.unwrap_or(1);
    let ready = channels.iter().filter(|c| c.is_channel_ready);
    let (mut online, mut offline, mut best) = (0u64, 0u64, 0u64);
    for c in ready {
        if c.is_usable {
            online = online.saturating_add(c.inbound_capacity_msat);
            best = best.max(c.inbound_capacity_msat);
        } else {
            offline = offline.saturating_add(c.inbound_capacity_msat);
        }
    }
    let mut w = vec![];
    if online.saturating_add(offline) < needed {
        w.push((
            "warning_capacity",
            "Insufficient incoming channel capacity to pay invoice",
        ));
    } else if online < needed {
        w.push((
            "warning_offline",
            "Insufficient incoming capacity, once offline peers were excluded",
        ));
    } else if best < needed {
        w.push((
            "warning_mpp",
            "The invoice is only payable by MPP-capable payers.",
        ));
    }
    w
}

/// The `min_final_cltv_expiry_delta` to give LDK so that the invoice says `want` (LDK adds a
/// 3-block buffer), and what the invoice will say: never below LDK's minimum.
pub fn ldk_cltv(want: Option<u32>) -> Result<(u16, u32), String> {
    let min = u32::from(MIN_FINAL_CLTV_EXPIRY_DELTA);
    let says = want.unwrap_or(min).max(min);
    let delta = u16::try_from(says - 3).map_err(|_| {
        format!(
            "cltv {says} is too large (at most {})",
            u32::from(u16::MAX) + 3
        )
    })?;
    Ok((delta, says))
}

/// The invoices service: the `invoices` table, its expiry by the clock, the
/// `invoice_creation`/`invoice_payment` notifications and the waiters (`waitinvoice`,
/// `waitanyinvoice`). Creating an invoice needs LDK ([`Lightning::create_invoice`]), which
/// stores it here with [`Invoices::add`].
///
/// An invoice [`Invoices::paid`] marked paid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PaidInvoice {
    /// Its `pay_index`.
    pub pay_index: u64,
    /// Whether this call paid it (not an earlier one: LDK may hand a claim again after a
    /// restart).
    pub newly: bool,
}

/// It takes no lock: the table is its state, and every read or write is one transaction.
pub struct Invoices {
    store: Store,
    clock: Arc<dyn Clock>,
    /// Bumped whenever an invoice changes (created, paid, deleted, expired): waiters re-read
    /// the table.
    changed: watch::Sender<u64>,
    port: Arc<dyn Port>,
    log: SourceLog,
}

impl Invoices {
    /// The service over `store`, reading time from `clock`, telling plugins through `port`.
    pub fn new(store: Store, clock: Arc<dyn Clock>, port: Arc<dyn Port>, log: SourceLog) -> Self {
        Invoices {
            store,
            clock,
            changed: watch::channel(0).0,
            port,
            log,
        }
    }

    fn bump(&self) {
        self.changed.send_modify(|v| *v += 1);
    }

    /// Runs `f` through [`with_invoices`], signalling waiters when invoices expired.
    async fn query<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection, u64) -> Result<T, StoreError> + Send + 'static,
    {
        let (v, expired) = with_invoices(&self.store, &self.clock, f).await?;
        if expired > 0 {
            self.bump();
        }
        Ok(v)
    }

    /// The invoice for `hash` with its current status (expiry applied); `None` if there is
    /// none (or the database failed, which is logged).
    pub async fn by_hash(&self, hash: [u8; 32]) -> Option<InvoiceRecord> {
        match self.query(move |c, _| Ok(by_hash(c, &hash)?)).await {
            Ok(r) => r,
            Err(e) => {
                self.log
                    .broken(&format!("reading invoice {}: {e}", hex(&hash)));
                None
            }
        }
    }

    /// The invoice labelled `label`, with its current status.
    pub async fn by_label(&self, label: &str) -> Result<Option<InvoiceRecord>, StoreError> {
        let label = label.to_string();
        self.query(move |c, _| Ok(by_label(c, &label)?)).await
    }

    /// The invoices `sel` designates.
    pub async fn list(&self, sel: Selector) -> Result<Vec<InvoiceRecord>, StoreError> {
        self.query(move |c, _| Ok(list(c, &sel)?)).await
    }

    /// Whether an invoice has payment hash `hash`, and whether one is labelled `label`.
    pub async fn taken(
        &self,
        hash: Option<[u8; 32]>,
        label: &str,
    ) -> Result<(bool, bool), StoreError> {
        let label = label.to_string();
        self.query(move |c, _| {
            let dh = match &hash {
                Some(h) => by_hash(c, h)?.is_some(),
                None => false,
            };
            Ok((dh, by_label(c, &label)?.is_some()))
        })
        .await
    }

    /// Stores a new invoice, wakes waiters and sends `invoice_creation`.
    pub async fn add(&self, row: NewInvoice) -> Result<InvoiceRecord, CreateError> {
        let db = |e: StoreError| CreateError::Failed(e.to_string());
        let (preimage, msat) = (row.preimage, row.amount_msat);
        let record = self
            .query(move |c, _| {
                let r = insert(c, &row);
                match r {
                    Ok(_) => Ok(Ok(by_label(c, &row.label)?)),
                    Err(e) => Ok(Err(e)),
                }
            })
            .await
            .map_err(db)??
            .ok_or_else(|| CreateError::Failed("the new invoice vanished".into()))?;
        self.bump();
        self.port.tell(Notice::InvoiceCreated {
            label: record.label.clone(),
            preimage,
            msat,
        });
        Ok(record)
    }

    /// Records that the invoice for `hash` was paid `amount_msat` with `preimage` (which must
    /// hash to `hash`): assigns its pay index, sets `amount_received_msat`, `paid_at`, the
    /// preimage and a new `updated_index` in one transaction, wakes waiters and sends the
    /// `invoice_payment` notification. Idempotent: an invoice already paid keeps its pay
    /// index, which is returned, and nothing else happens. `Ok(None)`: no invoice has this
    /// hash or the preimage does not match (logged). `Err`: the database failed; the caller
    /// tries again (the funds are claimed, the invoice must not stay unpaid). Call it once
    /// the payment is claimed; whether it may be claimed is [`claim_refusal`]'s decision.
    pub async fn paid(
        &self,
        hash: [u8; 32],
        amount_msat: u64,
        preimage: [u8; 32],
    ) -> Result<Option<PaidInvoice>, StoreError> {
        if sha256::Hash::hash(&preimage).to_byte_array() != hash {
            self.log.broken(&format!(
                "invoice_paid: preimage {} does not match payment hash {}",
                hex(&preimage),
                hex(&hash)
            ));
            return Ok(None);
        }
        let r = self
            .query(move |c, now| {
                super::payments::payment_path_write(c, |c| {
                    Ok(mark_paid(c, &hash, amount_msat, &preimage, now)?)
                })
            })
            .await?;
        let Some(p) = r else {
            self.log
                .unusual(&format!("invoice_paid: no invoice for {}", hex(&hash)));
            return Ok(None);
        };
        if p.newly {
            self.log.info(&format!(
                "Resolved invoice '{}' with amount {amount_msat}msat (pay_index {})",
                p.label, p.pay_index
            ));
            self.bump();
            self.port.tell(Notice::InvoicePaid {
                label: p.label.clone(),
                preimage,
                msat: amount_msat,
                outpoint: None,
            });
        }
        Ok(Some(PaidInvoice {
            pay_index: p.pay_index,
            newly: p.newly,
        }))
    }

    /// The invoice whose on-chain fallback is `script`, with its current status.
    pub async fn by_fallback(&self, script: Vec<u8>) -> Result<Option<InvoiceRecord>, StoreError> {
        self.query(move |c, _| Ok(by_fallback(c, &script)?)).await
    }

    /// The fallback scripts of the unpaid invoices (expiry applied).
    pub async fn unpaid_fallbacks(&self) -> Result<Vec<Vec<u8>>, StoreError> {
        self.query(|c, _| Ok(unpaid_fallbacks(c)?)).await
    }

    /// Keeps `script` as the on-chain fallback of invoice `created_index`.
    pub async fn add_fallback(
        &self,
        created_index: u64,
        script: Vec<u8>,
    ) -> Result<(), StoreError> {
        self.query(move |c, _| Ok(add_fallback(c, created_index, &script)?))
            .await
    }

    /// Marks invoice `inv` paid on chain by `outpoint` (`amount_msat` received), wakes its
    /// waiters and sends `invoice_payment` with the outpoint, as CLN does. Nothing when it is
    /// no longer unpaid.
    pub async fn paid_onchain(
        &self,
        inv: &InvoiceRecord,
        amount_msat: u64,
        outpoint: String,
    ) -> Result<(), StoreError> {
        let (idx, op) = (inv.created_index, outpoint.clone());
        let r = self
            .query(move |c, now| Ok(mark_paid_onchain(c, idx, amount_msat, &op, now)?))
            .await?;
        if let Some(p) = r {
            self.log.info(&format!(
                "Resolved invoice '{}' with amount {amount_msat}msat on chain ({outpoint}, pay_index {})",
                p.label, p.pay_index
            ));
            self.bump();
            self.port.tell(Notice::InvoicePaid {
                label: p.label,
                preimage: inv.preimage.unwrap_or_default(),
                msat: amount_msat,
                outpoint: Some(outpoint),
            });
        }
        Ok(())
    }

    /// Checks a payment against its invoice before it is claimed and stores the preimage
    /// it will be claimed with ([`record_claim`]): `Ok(Some(refusal))` means fail it back.
    pub async fn record_claim(&self, claim: Claim) -> Result<Option<ClaimRefusal>, StoreError> {
        self.query(move |c, _| Ok(record_claim(c, &claim)?)).await
    }

    /// `delinvoice`.
    pub async fn delete(
        &self,
        label: &str,
        status: Option<InvoiceStatus>,
        desconly: bool,
    ) -> Result<InvoiceRecord, DeleteError> {
        let label = label.to_string();
        let r = self
            .query(move |c, _| Ok(delete(c, &label, status, desconly)))
            .await
            .map_err(DeleteError::Store)?;
        if r.is_ok() {
            self.bump();
        }
        r
    }

    /// `delexpiredinvoice`: deletes expired invoices that expired at or before `max_expiry`
    /// (default: now); returns how many.
    pub async fn delete_expired(&self, max_expiry: Option<u64>) -> Result<u64, StoreError> {
        let n = self
            .query(move |c, now| Ok(delete_expired(c, max_expiry.unwrap_or(now))?))
            .await?;
        if n > 0 {
            self.bump();
        }
        Ok(n)
    }

    /// `waitinvoice`: the invoice `label` once paid; [`WaitError::Expired`] if it expires
    /// first (or already has), [`WaitError::Deleted`] if it is deleted meanwhile.
    pub async fn wait(&self, label: &str) -> Result<InvoiceRecord, WaitError> {
        let mut rx = self.changed.subscribe();
        let mut first = true;
        loop {
            rx.borrow_and_update();
            let inv = self.by_label(label).await.map_err(WaitError::Store)?;
            let inv = match inv {
                None if first => return Err(WaitError::NotFound),
                None => return Err(WaitError::Deleted),
                Some(i) => i,
            };
            match inv.status {
                InvoiceStatus::Paid => return Ok(inv),
                InvoiceStatus::Expired => return Err(WaitError::Expired(Box::new(inv))),
                _ => {}
            }
            if first {
                // From here any change wakes this waiter: callers (and tests) can act on it.
                self.log
                    .debug(&format!("waitinvoice: waiting for invoice {label}"));
            }
            first = false;
            // Wake at the expiry (re-reading then marks it expired) or at any change.
            let expiry = self.clock.sleep_until(inv.expires_at.saturating_mul(1000));
            tokio::select! {
                r = rx.changed() => if r.is_err() { return Err(WaitError::Stopped) },
                () = expiry => {}
            }
        }
    }

    /// `waitanyinvoice`: the paid invoice with the smallest pay index above `lastpay_index`,
    /// waiting for one at most `timeout` (forever without).
    pub async fn wait_any(
        &self,
        lastpay_index: u64,
        timeout: Option<Duration>,
    ) -> Result<InvoiceRecord, WaitError> {
        let mut rx = self.changed.subscribe();
        // A timeout too large for the clock is no timeout.
        let deadline = timeout.and_then(|t| tokio::time::Instant::now().checked_add(t));
        let mut first = true;
        loop {
            rx.borrow_and_update();
            let found = self
                .query(move |c, _| Ok(first_paid_after(c, lastpay_index)?))
                .await
                .map_err(WaitError::Store)?;
            if let Some(inv) = found {
                return Ok(inv);
            }
            if first {
                // From here any change wakes this waiter: callers (and tests) can act on it.
                let until = match (timeout, deadline) {
                    (Some(t), Some(_)) => format!("for up to {}s", t.as_secs()),
                    _ => "without a timeout".to_string(),
                };
                self.log.debug(&format!(
                    "waitanyinvoice: waiting for a payment after pay index {lastpay_index} {until}"
                ));
                first = false;
            }
            let changed = match deadline {
                Some(d) => match tokio::time::timeout_at(d, rx.changed()).await {
                    Ok(r) => r,
                    Err(_) => return Err(WaitError::TimedOut),
                },
                None => rx.changed().await,
            };
            if changed.is_err() {
                return Err(WaitError::Stopped);
            }
        }
    }
}

impl Lightning {
    /// The invoices service.
    pub fn invoices(&self) -> &Invoices {
        &self.invoices
    }

    /// `invoice`: asks LDK for the invoice (payment secret, signature, route hints), adds
    /// fallbacks and the route hints `exposeprivatechannels` asks for, stores it and sends
    /// `invoice_creation`.
    pub async fn create_invoice(
        &self,
        mut req: InvoiceRequest,
    ) -> Result<CreatedInvoice, CreateError> {
        let db = |e: StoreError| CreateError::Failed(e.to_string());
        let hash = match (req.preimage, req.payment_hash) {
            (Some(p), _) => Some(sha256::Hash::hash(&p).to_byte_array()),
            (None, h) => h,
        };
        // Refuse duplicates before LDK does any work (and again when storing, atomically).
        let (dup_hash, dup_label) = self.invoices.taken(hash, &req.label).await.map_err(db)?;
        if dup_hash {
            return Err(CreateError::DuplicateHash);
        }
        if dup_label {
            return Err(CreateError::DuplicateLabel(req.label));
        }

        // `--invoices-onchain-fallback`, as CLN: an invoice given no fallbacks carries a
        // fresh taproot address of the wallet, and a deposit there pays it.
        let mut tracked = None;
        if self.onchain_fallback && req.fallbacks.is_empty() {
            let (_, p2tr) = self
                .wallet
                .new_address(crate::wallet::AddrRequest::P2tr)
                .await
                .map_err(|e| CreateError::Failed(format!("no fallback address: {e}")))?;
            if let Some(fb) = p2tr.as_ref().and_then(fallback_of) {
                tracked = p2tr.map(|a| a.script_pubkey());
                req.fallbacks.push(fb);
            }
        }
        let (delta, _) = ldk_cltv(req.cltv).map_err(CreateError::Invalid)?;
        let expiry = u32::try_from(req.expiry_secs).map_err(|_| {
            CreateError::Invalid(format!(
                "expiry {} is too large (at most {})",
                req.expiry_secs,
                u32::MAX
            ))
        })?;
        let description = if req.deschashonly {
            Bolt11InvoiceDescription::Hash(lightning_invoice::Sha256(sha256::Hash::hash(
                req.description.as_bytes(),
            )))
        } else {
            Bolt11InvoiceDescription::Direct(Description::new(req.description.clone()).map_err(
                |_| {
                    CreateError::Invalid(format!(
                        "Description greater than 639 bytes invalid (description length {})",
                        req.description.len()
                    ))
                },
            )?)
        };
        let params = Bolt11InvoiceParameters {
            amount_msats: req.amount_msat,
            description,
            invoice_expiry_delta_secs: Some(expiry),
            min_final_cltv_expiry_delta: Some(delta),
            payment_hash: hash.map(PaymentHash),
            payment_metadata: None,
        };
        let mut invoice = self.manager.create_bolt11_invoice(params).map_err(|e| {
            use lightning_invoice::{CreationError as C, SignOrCreationError as S};
            match e {
                S::CreationError(C::InvalidAmount) => {
                    CreateError::Invalid("amount_msat: amount is invalid for an invoice".into())
                }
                S::CreationError(e) => CreateError::Invalid(e.to_string()),
                S::SignError(()) => CreateError::Failed("cannot sign the invoice".into()),
            }
        })?;

        let channels = self.manager.list_channels();
        let hints = match &req.expose {
            Expose::Default => None,
            Expose::NoPrivate => {
                // Keep LDK's hints through announced channels only.
                let public: Vec<u64> = channels
                    .iter()
                    .filter(|c| c.is_announced)
                    .filter_map(|c| c.get_inbound_payment_scid())
                    .collect();
                let ldk = invoice.route_hints();
                let kept: Vec<RouteHint> = ldk
                    .iter()
                    .filter(|h| h.0.iter().all(|hop| public.contains(&hop.short_channel_id)))
                    .cloned()
                    .collect();
                (kept.len() != ldk.len()).then_some(kept)
            }
            Expose::All => {
                let mut ready: Vec<&ChannelDetails> =
                    channels.iter().filter(|c| c.is_channel_ready).collect();
                let needed = req.amount_msat.unwrap_or(0);
                ready.sort_by_key(|c| {
                    (
                        !(c.is_usable && c.inbound_capacity_msat >= needed),
                        std::cmp::Reverse(c.inbound_capacity_msat),
                    )
                });
                Some(
                    ready
                        .into_iter()
                        .filter_map(route_hint)
                        .take(MAX_HINTS)
                        .collect(),
                )
            }
            Expose::Only(scids) => {
                let hs: Vec<RouteHint> = channels
                    .iter()
                    .filter(|c| c.is_channel_ready)
                    .filter(|c| {
                        [
                            c.short_channel_id,
                            c.inbound_scid_alias,
                            c.outbound_scid_alias,
                        ]
                        .iter()
                        .flatten()
                        .any(|s| scids.contains(s))
                    })
                    .filter_map(route_hint)
                    .collect();
                if hs.is_empty() {
                    return Err(CreateError::NoUsableHints);
                }
                Some(hs)
            }
        };
        // Feature bits plugins set for invoices (CLN's manifest `featurebits.invoice`).
        let [_, _, _, extra] = self.port.featurebits();
        if hints.is_some() || !req.fallbacks.is_empty() || !extra.is_empty() {
            invoice = self
                .resign(invoice, hints, &req.fallbacks, &extra)
                .map_err(CreateError::Failed)?;
        }

        let payment_hash = invoice.payment_hash().0;
        let payment_secret = invoice.payment_secret().0;
        let preimage = match (req.preimage, req.payment_hash) {
            (Some(p), _) => Some(p),
            (None, Some(_)) => None,
            (None, None) => Some(
                self.manager
                    .get_payment_preimage_decrypt_metadata(
                        PaymentHash(payment_hash),
                        PaymentSecret(payment_secret),
                        None,
                    )
                    .map_err(|e| CreateError::Failed(super::api_error(&e)))?
                    .0,
            ),
        };
        let expires_at = invoice
            .expires_at()
            .map_or(u64::MAX, |d| d.as_secs())
            .min(i64::MAX as u64);
        let row = NewInvoice {
            label: req.label.clone(),
            bolt11: invoice.to_string(),
            payment_hash,
            payment_secret,
            preimage,
            amount_msat: req.amount_msat,
            description: req.description.clone(),
            expires_at,
            cltv: u32::try_from(invoice.min_final_cltv_expiry_delta()).unwrap_or(u32::MAX),
        };
        let record = self.invoices.add(row).await?;
        if let Some(script) = tracked {
            self.invoices
                .add_fallback(record.created_index, script.to_bytes())
                .await
                .map_err(db)?;
        }
        Ok(CreatedInvoice {
            warnings: warnings(&channels, req.amount_msat),
            record,
        })
    }

    /// Replaces `inv`'s route hints (when `hints` is given), adds `fallbacks`, and signs
    /// again with the node key.
    fn resign(
        &self,
        inv: Bolt11Invoice,
        hints: Option<Vec<RouteHint>>,
        fallbacks: &[Fallback],
        extra_features: &[u8],
    ) -> Result<Bolt11Invoice, String> {
        let (mut raw, _, _) = inv.into_signed_raw().into_parts();
        if !extra_features.is_empty() {
            use lightning::types::features::Bolt11InvoiceFeatures;
            let mut all = Bolt11InvoiceFeatures::from_be_bytes(extra_features.to_vec());
            raw.data.tagged_fields.retain(|f| match f {
                RawTaggedField::KnownSemantics(TaggedField::Features(x)) => {
                    all |= x;
                    false
                }
                _ => true,
            });
            raw.data
                .tagged_fields
                .push(RawTaggedField::KnownSemantics(TaggedField::Features(all)));
        }
        if let Some(hints) = hints {
            raw.data.tagged_fields.retain(|f| {
                !matches!(
                    f,
                    RawTaggedField::KnownSemantics(TaggedField::PrivateRoute(_))
                )
            });
            for h in hints {
                let r = PrivateRoute::new(h).map_err(|e| e.to_string())?;
                raw.data
                    .tagged_fields
                    .push(RawTaggedField::KnownSemantics(TaggedField::PrivateRoute(r)));
            }
        }
        for f in fallbacks {
            raw.data
                .tagged_fields
                .push(RawTaggedField::KnownSemantics(TaggedField::Fallback(
                    f.clone(),
                )));
        }
        let sig = self
            .keys
            .sign_invoice(&raw, Recipient::Node)
            .map_err(|()| "cannot sign the invoice".to_string())?;
        let signed = raw
            .sign(|_| Ok::<_, ()>(sig))
            .map_err(|()| "cannot sign the invoice".to_string())?;
        Bolt11Invoice::from_signed(signed).map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::port::Told;
    use fulgur_base::clock::{ManualClock, SystemClock};
    use fulgur_base::log::{Level, Logger, MemoryLog};

    fn ok<T, E: std::fmt::Debug>(r: Result<T, E>) -> T {
        r.unwrap_or_else(|e| panic!("{e:?}"))
    }

    fn preimage(n: u8) -> [u8; 32] {
        [n; 32]
    }

    fn hash_of(p: &[u8; 32]) -> [u8; 32] {
        sha256::Hash::hash(p).to_byte_array()
    }

    fn new(label: &str, n: u8, expires_at: u64) -> NewInvoice {
        let p = preimage(n);
        NewInvoice {
            label: label.into(),
            bolt11: format!("lnbcrt{label}"),
            payment_hash: hash_of(&p),
            payment_secret: [n ^ 0xff; 32],
            preimage: Some(p),
            amount_msat: Some(1000 * u64::from(n)),
            description: format!("for {label}"),
            expires_at,
            cltv: 42,
        }
    }

    async fn run<T: Send + 'static>(
        store: &Store,
        f: impl FnOnce(&mut Connection, u64) -> Result<T, StoreError> + Send + 'static,
    ) -> T {
        ok(with_invoices(store, &SystemClock::shared(), f).await).0
    }

    const FAR: u64 = 4_000_000_000;

    /// SQLite's plan for `sql`, one line per step.
    fn plan(c: &Connection, sql: &str) -> String {
        let mut st = ok(c.prepare(&format!("EXPLAIN QUERY PLAN {sql}")));
        let rows = ok(st.query_map([], |r| r.get::<_, String>(3)));
        rows.map(ok).collect::<Vec<_>>().join("\n")
    }

    #[tokio::test]
    async fn payment_path_queries_use_an_index_not_a_scan() {
        let store = ok(Store::in_memory());
        let plans = ok(store
            .with(|c| {
                Ok([
                    plan(
                        c,
                        "SELECT created_index FROM invoices WHERE status = 'unpaid' \
                         AND expires_at <= 5 ORDER BY created_index",
                    ),
                    plan(c, "SELECT COUNT(*) FROM invoices WHERE status = 'paid'"),
                    plan(
                        c,
                        "SELECT created_index FROM forwards WHERE status = 'offered' \
                         AND in_channel = '1x1x1' ORDER BY created_index LIMIT 1",
                    ),
                ])
            })
            .await);
        assert!(
            plans[0].contains("invoices_by_status_expiry"),
            "{}",
            plans[0]
        );
        assert!(
            plans[1].contains("invoices_by_status_expiry"),
            "{}",
            plans[1]
        );
        assert!(plans[2].contains("forwards_by_in_channel"), "{}", plans[2]);
        for p in &plans {
            assert!(
                !p.contains("SCAN invoices") && !p.contains("SCAN forwards"),
                "{p}"
            );
        }
    }

    #[tokio::test]
    async fn pay_order_and_idempotence() {
        let store = ok(Store::in_memory());
        let ids = run(&store, |c, _| {
            let a = insert(c, &new("a", 1, FAR)).map_err(|e| StoreError::Task(format!("{e:?}")))?;
            let b = insert(c, &new("b", 2, FAR)).map_err(|e| StoreError::Task(format!("{e:?}")))?;
            let d = insert(c, &new("c", 3, FAR)).map_err(|e| StoreError::Task(format!("{e:?}")))?;
            Ok((a, b, d))
        })
        .await;
        assert_eq!(ids, (1, 2, 3));

        // Paid in the order c, a: pay indexes 1, 2.
        let (h1, h3) = (hash_of(&preimage(1)), hash_of(&preimage(3)));
        let p = run(&store, move |c, now| {
            Ok((
                mark_paid(c, &h3, 3000, &preimage(3), now)?,
                mark_paid(c, &h1, 1500, &preimage(1), now)?,
            ))
        })
        .await;
        assert_eq!(
            p.0.as_ref()
                .map(|p| (p.pay_index, p.label.as_str(), p.newly)),
            Some((1, "c", true))
        );
        assert_eq!(
            p.1.as_ref().map(|p| (p.pay_index, p.newly)),
            Some((2, true))
        );

        // Again: same pay index, nothing changes.
        let before = run(&store, move |c, _| Ok(by_hash(c, &h3)?)).await;
        let again = run(&store, move |c, now| {
            Ok(mark_paid(c, &h3, 9999, &preimage(3), now + 100)?)
        })
        .await;
        assert_eq!(again.map(|p| (p.pay_index, p.newly)), Some((1, false)));
        let after = run(&store, move |c, _| Ok(by_hash(c, &h3)?)).await;
        assert_eq!(before, after);
        let after = after.unwrap_or_else(|| panic!("c vanished"));
        assert_eq!(after.status, InvoiceStatus::Paid);
        assert_eq!(after.amount_received_msat, Some(3000));
        assert!(after.updated_index.is_some());
        assert_eq!(after.preimage, Some(preimage(3)));
        assert_eq!(after.pay_index, Some(1));

        // Unknown hash.
        assert_eq!(
            run(&store, |c, now| Ok(mark_paid(
                c, &[9; 32], 1, &[0; 32], now
            )?))
            .await,
            None
        );

        // The queue: after 0 comes c, after 1 comes a, after 2 nothing.
        let q = run(&store, |c, _| {
            Ok((
                first_paid_after(c, 0)?.map(|i| i.label),
                first_paid_after(c, 1)?.map(|i| i.label),
                first_paid_after(c, 2)?.map(|i| i.label),
            ))
        })
        .await;
        assert_eq!(q, (Some("c".into()), Some("a".into()), None));

        // Deleting the last paid invoice does not give its pay index again.
        run(&store, |c, _| {
            delete(c, "a", Some(InvoiceStatus::Paid), false)
                .map_err(|e| StoreError::Task(format!("{e:?}")))
        })
        .await;
        let h2 = hash_of(&preimage(2));
        let p = run(&store, move |c, now| {
            Ok(mark_paid(c, &h2, 2000, &preimage(2), now)?)
        })
        .await;
        assert_eq!(p.map(|p| p.pay_index), Some(3));
        assert_eq!(
            run(&store, |c, _| Ok(counters(c)?)).await,
            (3, 1),
            "three payments and one deletion"
        );
    }

    #[tokio::test]
    async fn duplicates_expiry_and_lists() {
        let store = ok(Store::in_memory());
        let now = fulgur_base::unix_now();
        let r = run(&store, move |c, _| {
            Ok((
                insert(c, &new("old", 1, now - 10)),
                insert(c, &new("new", 2, now + 3600)),
                insert(c, &new("new", 3, now + 3600)),
                insert(c, &new("other", 2, now + 3600)),
            ))
        })
        .await;
        assert_eq!(r.0, Ok(1));
        assert_eq!(r.1, Ok(2));
        assert_eq!(r.2, Err(CreateError::DuplicateLabel("new".into())));
        assert_eq!(r.3, Err(CreateError::DuplicateHash));

        // The expired one is marked (and persisted) at the next read.
        let (all, expired) = ok(with_invoices(&store, &SystemClock::shared(), |c, _| {
            Ok(list(
                c,
                &Selector::All {
                    updated: false,
                    start: 0,
                    limit: None,
                },
            )?)
        })
        .await);
        assert_eq!(expired, 1);
        let st: Vec<_> = all.iter().map(|i| (i.label.as_str(), i.status)).collect();
        assert_eq!(
            st,
            vec![
                ("old", InvoiceStatus::Expired),
                ("new", InvoiceStatus::Unpaid)
            ]
        );
        assert_eq!(all[0].updated_index, Some(1));
        assert_eq!(all[1].updated_index, None);

        let upd = run(&store, |c, _| {
            Ok(list(
                c,
                &Selector::All {
                    updated: true,
                    start: 0,
                    limit: None,
                },
            )?)
        })
        .await;
        assert_eq!(
            upd.iter().map(|i| i.label.as_str()).collect::<Vec<_>>(),
            ["old"]
        );
        let page = run(&store, |c, _| {
            Ok(list(
                c,
                &Selector::All {
                    updated: false,
                    start: 2,
                    limit: Some(1),
                },
            )?)
        })
        .await;
        assert_eq!(
            page.iter().map(|i| i.label.as_str()).collect::<Vec<_>>(),
            ["new"]
        );

        // delinvoice: status must match; desconly; delete.
        let e = run(&store, |c, _| {
            Ok(delete(c, "new", Some(InvoiceStatus::Paid), false))
        })
        .await;
        assert!(matches!(e, Err(DeleteError::Status(s)) if s == InvoiceStatus::Unpaid));
        let d = run(&store, |c, _| {
            Ok(delete(c, "new", Some(InvoiceStatus::Unpaid), true))
        })
        .await;
        assert!(matches!(&d, Ok(i) if i.description.is_none() && i.updated_index == Some(2)));
        let d = run(&store, |c, _| {
            Ok(delete(c, "new", Some(InvoiceStatus::Unpaid), true))
        })
        .await;
        assert!(matches!(d, Err(DeleteError::NoDescription)));
        let d = run(&store, |c, _| {
            Ok(delete(c, "nope", Some(InvoiceStatus::Unpaid), false))
        })
        .await;
        assert!(matches!(d, Err(DeleteError::NotFound)));

        // delexpiredinvoice by expiry: the expired one is 10 s old.
        let n = run(&store, |c, now| Ok(delete_expired(c, now - 3600)?)).await;
        assert_eq!(n, 0);
        let n = run(&store, |c, now| Ok(delete_expired(c, now - 5)?)).await;
        assert_eq!(n, 1);
        assert_eq!(run(&store, |c, _| Ok(counters(c)?)).await, (2, 1));
        let n = run(&store, |c, now| Ok(delete_expired(c, now)?)).await;
        assert_eq!(n, 0);
    }

    #[tokio::test]
    async fn paid_invoices_survive_reopening() {
        let dir = std::env::temp_dir().join(format!("fulgur-invoices-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        ok(std::fs::create_dir_all(&dir));
        let path = dir.join("db.sqlite3");
        {
            let store = ok(Store::open(&path));
            let h = hash_of(&preimage(7));
            let p = run(&store, move |c, now| {
                insert(c, &new("x", 7, FAR)).map_err(|e| StoreError::Task(format!("{e:?}")))?;
                insert(c, &new("y", 8, FAR)).map_err(|e| StoreError::Task(format!("{e:?}")))?;
                Ok(mark_paid(c, &h, 7000, &preimage(7), now)?)
            })
            .await;
            assert_eq!(p.map(|p| p.pay_index), Some(1));
        }
        let store = ok(Store::open(&path));
        let x = run(&store, |c, _| Ok(first_paid_after(c, 0)?)).await;
        let x = x.unwrap_or_else(|| panic!("the paid invoice is gone"));
        assert_eq!((x.label.as_str(), x.pay_index), ("x", Some(1)));
        assert_eq!(x.preimage, Some(preimage(7)));
        let h = hash_of(&preimage(8));
        let p = run(&store, move |c, now| {
            Ok(mark_paid(c, &h, 8000, &preimage(8), now)?)
        })
        .await;
        assert_eq!(p.map(|p| p.pay_index), Some(2));
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn claims_are_checked_against_the_invoice_and_keep_the_preimage() {
        let store = ok(Store::in_memory());
        let now = fulgur_base::unix_now();
        // "hold": made with a payment hash only (no preimage yet), 2000 msat.
        let mut hold = new("hold", 2, now + 3600);
        hold.preimage = None;
        let h2 = hash_of(&preimage(2));
        let claim = |n: u8, amount: u64, secret: Option<[u8; 32]>| Claim {
            hash: hash_of(&preimage(n)),
            preimage: preimage(n),
            amount_msat: amount,
            payment_secret: secret,
            invoice_msat: None,
        };
        let r = run(&store, move |c, _| {
            insert(c, &hold).map_err(|e| StoreError::Task(format!("{e:?}")))?;
            insert(c, &new("old", 1, now - 10)).map_err(|e| StoreError::Task(format!("{e:?}")))?;
            expire_due(c, now)?;
            Ok((
                record_claim(c, &claim(2, 1999, Some([2 ^ 0xff; 32])))?,
                record_claim(c, &claim(2, 2000, Some([7; 32])))?,
                record_claim(c, &claim(1, 1000, Some([1 ^ 0xff; 32])))?,
                record_claim(c, &claim(3, 3000, Some([3 ^ 0xff; 32])))?,
                // A keysend (no payment secret, no invoice) has nothing to check.
                record_claim(c, &claim(5, 1, None))?,
                by_hash(c, &h2)?.and_then(|i| i.preimage),
            ))
        })
        .await;
        assert_eq!(
            r.0,
            Some(ClaimRefusal::Amount {
                asked_msat: 2000,
                got_msat: 1999
            })
        );
        assert_eq!(r.1, Some(ClaimRefusal::WrongSecret));
        assert_eq!(r.2, Some(ClaimRefusal::Expired));
        assert_eq!(r.3, Some(ClaimRefusal::NoInvoice));
        assert_eq!(r.4, None);
        assert_eq!(r.5, None, "a refused claim stores nothing");

        // Accepted: the preimage is stored before the claim, the invoice still unpaid.
        let r = run(&store, move |c, _| {
            Ok((
                record_claim(c, &claim(2, 2500, Some([2 ^ 0xff; 32])))?,
                by_hash(c, &h2)?,
            ))
        })
        .await;
        assert_eq!(r.0, None);
        let inv = r.1.unwrap_or_else(|| panic!("hold vanished"));
        assert_eq!(
            (inv.preimage, inv.status),
            (Some(preimage(2)), InvoiceStatus::Unpaid)
        );

        // Once paid, a second payment of the same invoice is refused.
        let r = run(&store, move |c, now| {
            mark_paid(c, &h2, 2500, &preimage(2), now)?;
            Ok(record_claim(c, &claim(2, 2500, Some([2 ^ 0xff; 32])))?)
        })
        .await;
        assert_eq!(r, Some(ClaimRefusal::AlreadyPaid));
    }

    #[test]
    fn cltv_for_ldk() {
        let min = u32::from(MIN_FINAL_CLTV_EXPIRY_DELTA);
        assert_eq!(ldk_cltv(None), Ok(((min - 3) as u16, min)));
        assert_eq!(ldk_cltv(Some(5)), Ok(((min - 3) as u16, min)));
        assert_eq!(ldk_cltv(Some(1000)), Ok((997, 1000)));
        assert!(ldk_cltv(Some(70_000)).is_err());
    }

    /// The service on a manual clock in 2100, far from the wall clock either way.
    fn service() -> (Invoices, Arc<ManualClock>, Arc<Told>) {
        let clock = ManualClock::at(4_102_444_800_000);
        let told = Arc::new(Told::default());
        let log = Logger::at(Level::Debug, Box::new(MemoryLog::default())).source("lightning");
        let inv = Invoices::new(ok(Store::in_memory()), clock.clone(), told.clone(), log);
        (inv, clock, told)
    }

    #[tokio::test]
    async fn the_service_expires_invoices_by_its_clock_and_wakes_their_waiters() {
        let (inv, clock, told) = service();
        let now = clock.unix_now();
        let created = ok(inv.add(new("soon", 1, now + 60)).await);
        assert_eq!(created.status, InvoiceStatus::Unpaid);
        assert!(matches!(
            told.notices().as_slice(),
            [Notice::InvoiceCreated { label, msat: Some(1000), .. }] if label == "soon"
        ));
        let inv = Arc::new(inv);
        let waiter = {
            let inv = inv.clone();
            tokio::spawn(async move { inv.wait("soon").await })
        };
        // 59 s later it is still unpaid; the waiter waits on.
        clock.advance(Duration::from_secs(59));
        let read = ok(inv.by_label("soon").await).map(|i| i.status);
        assert_eq!(read, Some(InvoiceStatus::Unpaid));
        assert!(!waiter.is_finished());
        // At its expiry the waiter wakes without any other change and reports it expired.
        clock.advance(Duration::from_secs(1));
        match ok(waiter.await) {
            Err(WaitError::Expired(i)) => {
                assert_eq!(i.label, "soon");
                assert_eq!(i.status, InvoiceStatus::Expired);
            }
            other => panic!("waitinvoice gave {other:?}"),
        }
        // `delexpiredinvoice` without a time deletes up to the clock's now.
        assert_eq!(ok(inv.delete_expired(None).await), 1);
        assert_eq!(ok(inv.by_label("soon").await).map(|i| i.status), None);
    }
}
