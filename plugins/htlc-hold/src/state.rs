//! The hold-invoice state machine, free of I/O so it can be unit-tested.
//!
//! An invoice is `UNPAID` until HTLCs paying at least its amount are held, then `ACCEPTED`;
//! from there the merchant `settle`s (`SETTLED`) or `cancel`s (`CANCELLED`). An `UNPAID`
//! invoice can also be cancelled (by the merchant, or by the plugin once it has expired).
//! `SETTLED` and `CANCELLED` are final.
//!
//! Every HTLC part is recorded by `(short_channel_id, htlc id)`, so a part offered again
//! (after a restart of the node or of the plugin) is recognised and re-attached instead of
//! being counted twice.

use serde::{Deserialize, Serialize};

/// Where a hold invoice is in its life.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum State {
    /// Created, not (fully) paid yet.
    #[default]
    Unpaid,
    /// The whole payment is held, waiting for `settleholdinvoice` or `cancelholdinvoice`.
    Accepted,
    /// Settled with the preimage (final).
    Settled,
    /// Cancelled: held parts were failed back (final).
    Cancelled,
}

impl State {
    /// The name used on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Unpaid => "UNPAID",
            State::Accepted => "ACCEPTED",
            State::Settled => "SETTLED",
            State::Cancelled => "CANCELLED",
        }
    }

    /// Parses a state name, case-insensitively (`canceled` accepted too).
    pub fn parse(s: &str) -> Option<State> {
        match s.to_ascii_uppercase().as_str() {
            "UNPAID" | "OPEN" => Some(State::Unpaid),
            "ACCEPTED" => Some(State::Accepted),
            "SETTLED" | "PAID" => Some(State::Settled),
            "CANCELLED" | "CANCELED" => Some(State::Cancelled),
            _ => None,
        }
    }

    /// Whether no further change can happen.
    pub fn is_final(self) -> bool {
        matches!(self, State::Settled | State::Cancelled)
    }
}

/// One HTLC (part of a payment) held for an invoice.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Part {
    /// The incoming channel.
    pub short_channel_id: String,
    /// The HTLC's id in that channel.
    pub id: u64,
    /// What this part pays.
    pub amount_msat: u64,
    /// Its absolute CLTV expiry.
    pub cltv_expiry: u32,
    /// The block at which the node fails it back by itself.
    pub deadline_blockheight: u32,
}

impl Part {
    /// The key identifying the part across replays.
    pub fn key(&self) -> (String, u64) {
        (self.short_channel_id.clone(), self.id)
    }
}

/// A hold invoice as stored in the datastore. Its default is a new one: unpaid, nothing held.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HoldInvoice {
    /// The payment hash (hex), given by the merchant.
    pub payment_hash: String,
    /// The BOLT 11 invoice.
    pub bolt11: String,
    /// The node's label of the underlying invoice.
    pub label: String,
    /// Amount asked.
    pub amount_msat: u64,
    /// Description shown to the payer.
    pub description: String,
    /// Creation time (UNIX seconds).
    pub created_at: u64,
    /// Invoice expiry (UNIX seconds): after it, payers can no longer start paying. It is not
    /// the settle deadline of held HTLCs.
    pub expires_at: u64,
    /// The invoice's min_final_cltv_expiry.
    pub cltv: u32,
    /// Current state.
    pub state: State,
    /// HTLCs held (or, once final, that were held).
    #[serde(default)]
    pub htlcs: Vec<Part>,
    /// When the invoice became ACCEPTED.
    #[serde(default)]
    pub accepted_at: Option<u64>,
    /// When it was settled.
    #[serde(default)]
    pub settled_at: Option<u64>,
    /// When it was cancelled.
    #[serde(default)]
    pub cancelled_at: Option<u64>,
    /// Why it was cancelled.
    #[serde(default)]
    pub cancel_reason: Option<String>,
    /// The preimage, once settled.
    #[serde(default)]
    pub preimage: Option<String>,
    /// Incremented on every change (for `waitholdinvoice` callers and debugging).
    #[serde(default)]
    pub updated_index: u64,
}

/// What to answer for an HTLC part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PartOutcome {
    /// Hold it (wait for a decision). `accepted` is true when this part completed the
    /// payment (the invoice became ACCEPTED); `recorded` when the part was new.
    Hold {
        /// The invoice just became ACCEPTED.
        accepted: bool,
        /// The part was not known before (so the record changed).
        recorded: bool,
    },
    /// Settle it now with this preimage (a part of a set already settled, offered again).
    Resolve(String),
    /// Fail it now with `incorrect_or_unknown_payment_details`.
    Fail(&'static str),
}

/// Refusals of the RPC commands; each has a stable JSON-RPC code (see `docs/HOLD.md`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HoldError {
    /// The preimage does not hash to the payment hash.
    WrongPreimage,
    /// Settling an invoice that is not paid yet.
    NotAccepted,
    /// Settling a cancelled invoice.
    AlreadyCancelled,
    /// Cancelling a settled invoice.
    AlreadySettled,
}

impl HoldInvoice {
    /// The sum of the held parts.
    pub fn amount_received_msat(&self) -> u64 {
        self.htlcs.iter().map(|p| p.amount_msat).sum()
    }

    /// The earliest core deadline among the held parts.
    pub fn htlc_deadline(&self) -> Option<u32> {
        self.htlcs.iter().map(|p| p.deadline_blockheight).min()
    }

    /// The height at which this plugin cancels by itself, `margin` blocks before the
    /// earliest core deadline. This is the real "settle before" height for the merchant.
    pub fn cancel_height(&self, margin: u32) -> Option<u32> {
        self.htlc_deadline().map(|d| d.saturating_sub(margin))
    }

    /// Whether a part with this key is recorded.
    pub fn has_part(&self, key: &(String, u64)) -> bool {
        self.htlcs
            .iter()
            .any(|p| p.short_channel_id == key.0 && p.id == key.1)
    }

    fn bump(&mut self) {
        self.updated_index = self.updated_index.saturating_add(1);
    }

    /// An HTLC for this invoice arrived (or was offered again). Records it and says what to
    /// answer.
    pub fn on_part(&mut self, part: Part, now: u64) -> PartOutcome {
        let known = self.has_part(&part.key());
        match self.state {
            State::Settled => match (&self.preimage, known) {
                // The node offers again a part we already settled (it restarted before
                // claiming it): settle it again, the money is ours.
                (Some(p), true) => PartOutcome::Resolve(p.clone()),
                // A duplicate payment after the claim: never take it.
                _ => PartOutcome::Fail(INCORRECT_DETAILS),
            },
            State::Cancelled => PartOutcome::Fail(INCORRECT_DETAILS),
            State::Unpaid | State::Accepted => {
                if !known {
                    self.htlcs.push(part);
                    self.bump();
                }
                let accepted =
                    self.state == State::Unpaid && self.amount_received_msat() >= self.amount_msat;
                if accepted {
                    self.state = State::Accepted;
                    self.accepted_at = Some(now);
                    if known {
                        self.bump();
                    }
                }
                PartOutcome::Hold {
                    accepted,
                    recorded: !known,
                }
            }
        }
    }

    /// Settles with `preimage` (already checked to be 32 bytes) whose hash is
    /// `preimage_hash`. Returns `Ok(true)` when the state changed, `Ok(false)` when it was
    /// already settled (idempotent).
    pub fn settle(
        &mut self,
        preimage_hex: &str,
        preimage_hash: &str,
        now: u64,
    ) -> Result<bool, HoldError> {
        if !preimage_hash.eq_ignore_ascii_case(&self.payment_hash) {
            return Err(HoldError::WrongPreimage);
        }
        match self.state {
            State::Unpaid => Err(HoldError::NotAccepted),
            State::Cancelled => Err(HoldError::AlreadyCancelled),
            State::Settled => Ok(false),
            State::Accepted => {
                self.state = State::Settled;
                self.settled_at = Some(now);
                self.preimage = Some(preimage_hex.to_ascii_lowercase());
                self.bump();
                Ok(true)
            }
        }
    }

    /// Cancels. Returns `Ok(true)` when the state changed, `Ok(false)` when it was already
    /// cancelled (idempotent).
    pub fn cancel(&mut self, reason: &str, now: u64) -> Result<bool, HoldError> {
        match self.state {
            State::Settled => Err(HoldError::AlreadySettled),
            State::Cancelled => Ok(false),
            State::Unpaid | State::Accepted => {
                self.state = State::Cancelled;
                self.cancelled_at = Some(now);
                self.cancel_reason = Some(reason.to_string());
                self.bump();
                Ok(true)
            }
        }
    }

    /// Whether the plugin must cancel now: it holds parts and the chain is at or past
    /// [`HoldInvoice::cancel_height`].
    pub fn due_for_cancel(&self, height: u32, margin: u32) -> bool {
        !self.state.is_final() && self.cancel_height(margin).is_some_and(|h| height >= h)
    }

    /// Whether an UNPAID invoice with nothing held has passed its expiry.
    pub fn expired_unpaid(&self, now: u64) -> bool {
        self.state == State::Unpaid && self.htlcs.is_empty() && now >= self.expires_at
    }
}

/// BOLT 4 `incorrect_or_unknown_payment_details` (PERM|15), what a payer sees for a
/// cancelled or already settled hold invoice.
pub const INCORRECT_DETAILS: &str = "400f";

#[cfg(test)]
mod tests {
    use super::*;

    fn inv(amount: u64) -> HoldInvoice {
        HoldInvoice {
            payment_hash: "ab".repeat(32),
            bolt11: "lnbcrt1...".into(),
            label: "htlc-hold/x".into(),
            amount_msat: amount,
            description: "d".into(),
            created_at: 1,
            expires_at: 100,
            cltv: 144,
            ..HoldInvoice::default()
        }
    }

    fn part(scid: &str, id: u64, amount: u64, deadline: u32) -> Part {
        Part {
            short_channel_id: scid.into(),
            id,
            amount_msat: amount,
            cltv_expiry: deadline + 45,
            deadline_blockheight: deadline,
        }
    }

    #[test]
    fn single_part_accepts_and_settles() {
        let mut i = inv(1000);
        let out = i.on_part(part("1x1x0", 0, 1000, 300), 5);
        assert_eq!(
            out,
            PartOutcome::Hold {
                accepted: true,
                recorded: true
            }
        );
        assert_eq!(i.state, State::Accepted);
        assert_eq!(i.accepted_at, Some(5));
        let hash = i.payment_hash.clone();
        assert_eq!(i.settle(&"11".repeat(32), &hash, 6), Ok(true));
        assert_eq!(i.state, State::Settled);
        assert_eq!(i.preimage.as_deref(), Some("11".repeat(32).as_str()));
        // Settling again with the right preimage is a no-op, not an error.
        assert_eq!(i.settle(&"11".repeat(32), &hash, 7), Ok(false));
        assert_eq!(i.settled_at, Some(6));
    }

    #[test]
    fn multi_part_becomes_accepted_only_when_complete() {
        let mut i = inv(1000);
        assert_eq!(
            i.on_part(part("1x1x0", 0, 400, 300), 1),
            PartOutcome::Hold {
                accepted: false,
                recorded: true
            }
        );
        assert_eq!(i.state, State::Unpaid);
        assert_eq!(
            i.on_part(part("2x1x0", 7, 600, 290), 2),
            PartOutcome::Hold {
                accepted: true,
                recorded: true
            }
        );
        assert_eq!(i.state, State::Accepted);
        assert_eq!(i.amount_received_msat(), 1000);
        assert_eq!(i.htlc_deadline(), Some(290));
        assert_eq!(i.cancel_height(10), Some(280));
    }

    #[test]
    fn replayed_parts_reattach_without_double_counting() {
        let mut i = inv(1000);
        i.on_part(part("1x1x0", 0, 500, 300), 1);
        let before = i.updated_index;
        // Same part offered again: not counted twice, invoice not accepted by it.
        assert_eq!(
            i.on_part(part("1x1x0", 0, 500, 300), 2),
            PartOutcome::Hold {
                accepted: false,
                recorded: false
            }
        );
        assert_eq!(i.state, State::Unpaid);
        assert_eq!(i.htlcs.len(), 1);
        assert_eq!(i.updated_index, before);
        // Same id on another channel is another part.
        i.on_part(part("1x2x0", 0, 500, 300), 3);
        assert_eq!(i.state, State::Accepted);
        // Replay of an ACCEPTED invoice's part: held again, no state change.
        assert_eq!(
            i.on_part(part("1x2x0", 0, 500, 300), 4),
            PartOutcome::Hold {
                accepted: false,
                recorded: false
            }
        );
        assert_eq!(i.accepted_at, Some(3));
    }

    #[test]
    fn settled_invoice_resolves_its_own_parts_and_fails_duplicates() {
        let mut i = inv(1000);
        i.on_part(part("1x1x0", 3, 1000, 300), 1);
        let hash = i.payment_hash.clone();
        i.settle(&"22".repeat(32), &hash, 2).expect("settles");
        assert_eq!(
            i.on_part(part("1x1x0", 3, 1000, 300), 3),
            PartOutcome::Resolve("22".repeat(32))
        );
        assert_eq!(
            i.on_part(part("1x1x0", 4, 1000, 300), 3),
            PartOutcome::Fail(INCORRECT_DETAILS)
        );
        assert_eq!(i.htlcs.len(), 1);
    }

    #[test]
    fn cancelled_invoice_fails_every_part() {
        let mut i = inv(1000);
        i.on_part(part("1x1x0", 3, 1000, 300), 1);
        assert_eq!(i.cancel("merchant", 2), Ok(true));
        assert_eq!(i.cancel("again", 3), Ok(false));
        assert_eq!(i.cancel_reason.as_deref(), Some("merchant"));
        assert_eq!(
            i.on_part(part("1x1x0", 3, 1000, 300), 4),
            PartOutcome::Fail(INCORRECT_DETAILS)
        );
    }

    #[test]
    fn illegal_transitions_are_refused() {
        let hash = "ab".repeat(32);
        let mut unpaid = inv(1000);
        assert_eq!(
            unpaid.settle(&"11".repeat(32), &hash, 1),
            Err(HoldError::NotAccepted)
        );
        assert_eq!(unpaid.state, State::Unpaid);

        let mut accepted = inv(1000);
        accepted.on_part(part("1x1x0", 0, 1000, 300), 1);
        assert_eq!(
            accepted.settle(&"11".repeat(32), &"cd".repeat(32), 2),
            Err(HoldError::WrongPreimage)
        );
        assert_eq!(accepted.state, State::Accepted);

        let mut cancelled = accepted.clone();
        cancelled.cancel("x", 3).expect("cancels");
        assert_eq!(
            cancelled.settle(&"11".repeat(32), &hash, 4),
            Err(HoldError::AlreadyCancelled)
        );

        let mut settled = accepted.clone();
        settled.settle(&"11".repeat(32), &hash, 3).expect("settles");
        assert_eq!(settled.cancel("x", 4), Err(HoldError::AlreadySettled));
        assert_eq!(settled.state, State::Settled);
    }

    #[test]
    fn auto_cancel_height_and_expiry() {
        let mut i = inv(1000);
        assert!(!i.due_for_cancel(10_000, 10), "nothing held: no deadline");
        assert!(!i.expired_unpaid(99));
        assert!(i.expired_unpaid(100));
        i.on_part(part("1x1x0", 0, 1000, 300), 1);
        assert!(
            !i.expired_unpaid(1000),
            "held parts outlive the invoice expiry"
        );
        assert!(!i.due_for_cancel(289, 10));
        assert!(i.due_for_cancel(290, 10));
        i.cancel("deadline", 2).expect("cancels");
        assert!(!i.due_for_cancel(300, 10), "final states are never due");
    }

    #[test]
    fn state_names_round_trip() {
        for s in [
            State::Unpaid,
            State::Accepted,
            State::Settled,
            State::Cancelled,
        ] {
            assert_eq!(State::parse(s.as_str()), Some(s));
            assert_eq!(
                serde_json::to_value(s).expect("serialises"),
                serde_json::json!(s.as_str())
            );
        }
        assert_eq!(State::parse("canceled"), Some(State::Cancelled));
        assert_eq!(State::parse("nope"), None);
    }

    #[test]
    fn stored_record_round_trips_and_tolerates_missing_optional_fields() {
        let mut i = inv(1000);
        i.on_part(part("1x1x0", 0, 1000, 300), 1);
        let s = serde_json::to_string(&i).expect("serialises");
        let back: HoldInvoice = serde_json::from_str(&s).expect("parses");
        assert_eq!(back, i);
        let minimal = serde_json::json!({
            "payment_hash": "ab".repeat(32), "bolt11": "x", "label": "l", "amount_msat": 1,
            "description": "", "created_at": 0, "expires_at": 0, "cltv": 42, "state": "UNPAID"
        });
        let m: HoldInvoice = serde_json::from_value(minimal).expect("parses minimal record");
        assert!(m.htlcs.is_empty() && m.preimage.is_none());
    }
}
