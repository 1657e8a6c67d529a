//! Settling received payments: after `htlc_accepted` continued, the invoice's preimage and
//! the `invoice_payment` hook decide; `PaymentClaimed` marks the invoice paid.
//!
//! Every claim (continued by the plugins, or resolved by one with a `payment_key`, as hold
//! invoices are) first passes CLN's checks against the invoice as it is now: not paid
//! already, not expired, not deleted, enough paid, the invoice's payment secret
//! ([`invoices::claim_refusal`]). LDK itself would accept a second payment of a paid
//! invoice (its payment secrets are stateless), so without them a second payer loses the
//! money. The preimage is stored in the invoice before LDK is asked to claim, so that
//! `PaymentClaimed` finds it after a `kill -9` in between; while a claim is under way (until
//! `PaymentClaimed`) another payment of the same hash is refused. Marking the invoice paid
//! is retried (LDK hands the event again) until the database takes it.

use fulgur_base::hex;
use std::sync::Arc;

use lightning::events::ReplayEvent;
use lightning::ln::channelmanager::FailureCode;
use lightning::types::payment::{PaymentHash, PaymentPreimage};

use super::Lightning;
use super::htlcs::{failure_code, parse_failure_message};
use super::invoices::{self, Claim, ClaimRefusal};
use super::port::{Question, Refusal};

/// What is known of a payment to us when it is settled.
#[derive(Debug, Clone)]
pub(crate) struct Received {
    /// What its HTLCs carry in all (LDK's `PaymentClaimable`).
    pub amount_msat: u64,
    /// The payment secret of its onion, for a BOLT 11 payment.
    pub payment_secret: Option<[u8; 32]>,
    /// For a keysend, the description of the invoice it is recorded under.
    pub keysend: Option<String>,
    /// The amount a plugin's `htlc_accepted` answer asked to check instead of the
    /// invoice's.
    pub invoice_msat: Option<u64>,
}

/// The TLV types of a keysend onion that are not free text: BOLT 4's own (below 65536 are
/// reserved for the spec; LDK hands only the custom ones) and the keysend preimage.
pub(crate) const KEYSEND_PREIMAGE_TLV: u64 = 5_482_373_484;

/// The description CLN's keysend plugin gives the invoice it records a keysend under:
/// `keysend: ` and the longest custom TLV that is UTF-8 text (a payer's message), or just
/// `keysend`.
pub(crate) fn keysend_description(custom_tlvs: &[(u64, Vec<u8>)]) -> String {
    custom_tlvs
        .iter()
        .filter(|(t, _)| *t != KEYSEND_PREIMAGE_TLV)
        .filter_map(|(_, v)| std::str::from_utf8(v).ok())
        .filter(|t| !t.is_empty())
        .max_by_key(|t| t.len())
        .map_or_else(|| "keysend".to_string(), |t| format!("keysend: {t}"))
}

/// BOLT 11 descriptions longer than this are put in the invoice as their hash.
const BOLT11_DESCRIPTION_LIMIT: usize = 639;

impl Lightning {
    /// `htlc_accepted` let the payment through: find its preimage, check the invoice, ask
    /// `invoice_payment`, then claim or fail.
    pub(crate) async fn receive_continue(
        &self,
        hash: &PaymentHash,
        known: Option<[u8; 32]>,
        received: Received,
    ) {
        if let (Some(description), Some(preimage)) = (&received.keysend, known) {
            self.record_keysend(hash, preimage, description).await;
        }
        let inv = match self.invoice_by_hash_checked(hash.0).await {
            Ok(inv) => inv,
            Err(e) => crate::store::fatal(
                &self.log,
                &format!(
                    "cannot read the invoice of payment {} to check it",
                    hex(&hash.0)
                ),
                &e,
            ),
        };
        let Some(preimage) = known.or_else(|| inv.as_ref().and_then(|i| i.preimage)) else {
            self.log.info(&format!(
                "Payment {} continued by the plugins but its preimage is unknown: failing it",
                hex(&hash.0)
            ));
            self.manager.fail_htlc_backwards_with_reason(
                hash,
                FailureCode::IncorrectOrUnknownPaymentDetails,
            );
            return;
        };
        let claim = Claim {
            hash: hash.0,
            preimage,
            amount_msat: received.amount_msat,
            payment_secret: received.payment_secret,
            invoice_msat: received.invoice_msat,
        };
        // Refused before asking `invoice_payment`, as CLN does (and checked again, with the
        // preimage stored, when claiming).
        if let Some(refusal) = invoices::claim_refusal(inv.as_ref(), &claim) {
            self.refuse(hash, &refusal);
            return;
        }
        if let Some(inv) = &inv
            && self.port.asks(Question::InvoicePayment)
        {
            let amount = self
                .claimable_amount(hash)
                .unwrap_or(inv.amount_msat.unwrap_or(0));
            let refusal = self
                .port
                .invoice_payment(inv.label.clone(), preimage, amount)
                .await;
            if let Some(Refusal { plugin, message }) = refusal {
                let msg = message.as_deref();
                if let Some(Err(e)) = msg.map(parse_failure_message) {
                    self.log.broken(&format!(
                        "Plugin {plugin} answered invoice_payment for invoice {} with an invalid {e}: failing the payment with incorrect_or_unknown_payment_details",
                        inv.label
                    ));
                }
                self.log.info(&format!(
                    "Payment for invoice {} rejected by plugin {plugin} (invoice_payment)",
                    inv.label
                ));
                self.manager
                    .fail_htlc_backwards_with_reason(hash, failure_code(msg));
                return;
            }
        }
        self.claim(claim).await;
    }

    /// Records a keysend under an invoice of its own, as CLN's keysend plugin does
    /// (`keysend-<seconds>.<nanoseconds>`, any amount, the payer's preimage), so that it is
    /// checked, paid and listed like any invoice. Best effort, as there: an invoice with
    /// this payment hash may exist already (a second keysend of one preimage), and then
    /// that invoice decides.
    pub(crate) async fn record_keysend(
        &self,
        hash: &PaymentHash,
        preimage: [u8; 32],
        description: &str,
    ) {
        let now = std::time::Duration::from_millis(self.clock.unix_ms());
        // Two keysends in one millisecond: the second label takes the next nanosecond.
        for nanos in now.subsec_nanos()..now.subsec_nanos() + 1000 {
            let req = invoices::InvoiceRequest {
                amount_msat: None,
                label: format!("keysend-{}.{nanos:09}", now.as_secs()),
                description: description.to_string(),
                expiry_secs: 7 * 24 * 3600,
                fallbacks: vec![],
                preimage: Some(preimage),
                payment_hash: None,
                expose: invoices::Expose::Default,
                cltv: None,
                deschashonly: description.len() > BOLT11_DESCRIPTION_LIMIT,
            };
            match self.create_invoice(req).await {
                Ok(c) => {
                    self.log.info(&format!(
                        "Inserting a new invoice for keysend with payment_hash {}: {}",
                        hex(&hash.0),
                        c.record.label
                    ));
                    return;
                }
                Err(invoices::CreateError::DuplicateLabel(_)) => continue,
                Err(e) => {
                    self.log.info(&format!(
                        "Could not create invoice for keysend {}: {e:?}",
                        hex(&hash.0)
                    ));
                    return;
                }
            }
        }
    }

    /// The invoice for `hash` (expiry applied), telling a database failure from no invoice.
    async fn invoice_by_hash_checked(
        &self,
        hash: [u8; 32],
    ) -> Result<Option<invoices::InvoiceRecord>, crate::store::StoreError> {
        self.invoices
            .list(invoices::Selector::Hash(hash))
            .await
            .map(|v| v.into_iter().next())
    }

    /// Fails a payment back with `incorrect_or_unknown_payment_details`, saying why.
    fn refuse(&self, hash: &PaymentHash, why: &ClaimRefusal) {
        self.log.info(&format!(
            "Refusing payment {}: {why}; failing it back with incorrect_or_unknown_payment_details",
            hex(&hash.0)
        ));
        self.manager
            .fail_htlc_backwards_with_reason(hash, FailureCode::IncorrectOrUnknownPaymentDetails);
    }

    /// Claims a payment after checking its invoice once more and storing the preimage
    /// (durably) for `PaymentClaimed`. A database that cannot take that write stops the node
    /// ([`crate::store::fatal`]): the HTLC stays held in LDK and in `held_htlcs`, and is
    /// offered to the hooks again at the next start.
    pub(crate) async fn claim(&self, claim: Claim) {
        let hash = PaymentHash(claim.hash);
        let fresh = {
            let mut under_way = self.claimed.lock().unwrap_or_else(|p| p.into_inner());
            match under_way.entry(claim.hash) {
                std::collections::hash_map::Entry::Occupied(_) => false,
                std::collections::hash_map::Entry::Vacant(v) => {
                    v.insert(claim.preimage);
                    true
                }
            }
        };
        if !fresh {
            self.refuse(&hash, &ClaimRefusal::ClaimUnderWay);
            return;
        }
        let preimage = claim.preimage;
        match self.invoices.record_claim(claim).await {
            Ok(None) => self.manager.claim_funds(PaymentPreimage(preimage)),
            Ok(Some(refusal)) => {
                self.claimed
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&hash.0);
                self.refuse(&hash, &refusal);
            }
            Err(e) => crate::store::fatal(
                &self.log,
                &format!(
                    "cannot save the preimage of payment {} before claiming it",
                    hex(&hash.0)
                ),
                &e,
            ),
        }
    }

    fn claimable_amount(&self, hash: &PaymentHash) -> Option<u64> {
        let total: u64 = self
            .manager
            .list_channels()
            .iter()
            .flat_map(|c| c.pending_inbound_htlcs.iter())
            .filter(|h| h.payment_hash == *hash)
            .map(|h| h.amount_msat)
            .sum();
        (total > 0).then_some(total)
    }

    /// LDK's `PaymentClaimed`: the invoice is paid. The preimage comes from LDK (payments it
    /// derived), the claim under way, or the invoice (stored before claiming). A database
    /// error makes LDK hand the event again (`Err`), so the invoice never stays unpaid.
    pub(crate) async fn on_payment_claimed(
        self: &Arc<Self>,
        hash: PaymentHash,
        amount_msat: u64,
        preimage: Option<PaymentPreimage>,
    ) -> Result<(), ReplayEvent> {
        let mut pre = preimage.map(|p| p.0).or_else(|| {
            self.claimed
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(&hash.0)
                .copied()
        });
        if pre.is_none() {
            match self.invoice_by_hash_checked(hash.0).await {
                Ok(inv) => pre = inv.and_then(|i| i.preimage),
                Err(e) => return Err(self.replay(&hash, "reading its invoice", &e)),
            }
        }
        let Some(pre) = pre else {
            self.log.unusual(&format!(
                "Payment {} claimed but its preimage is not known here",
                hex(&hash.0)
            ));
            return Ok(());
        };
        self.log.info(&format!(
            "Payment {} of {amount_msat}msat received",
            hex(&hash.0)
        ));
        let newly = match self.invoices.paid(hash.0, amount_msat, pre).await {
            Ok(p) => p.is_some_and(|p| p.newly),
            Err(e) => return Err(self.replay(&hash, "marking its invoice paid", &e)),
        };
        self.claimed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&hash.0);
        // LDK hands a claim again after a restart if the manager was not written after it
        // was handled: the movement was recorded the first time.
        if !newly {
            return Ok(());
        }
        let account = self.htlc_account(&hash.0, true);
        self.coin_movement(super::movements::Movement {
            kind: "channel_mvt",
            account,
            credit_msat: amount_msat,
            debit_msat: 0,
            tag: "invoice",
            payment_hash: Some(hash.0),
            fees_msat: None,
            utxo: None,
            peer_id: None,
            extra_tags: vec![],
        })
        .await;
        Ok(())
    }

    /// A database error while handling `PaymentClaimed`: a storage failure (full disk, I/O)
    /// stops the node; anything else is logged and LDK hands the event again.
    fn replay(&self, hash: &PaymentHash, doing: &str, e: &crate::store::StoreError) -> ReplayEvent {
        let what = format!("payment {} claimed, but {doing} failed", hex(&hash.0));
        if e.is_storage_failure() {
            crate::store::fatal(&self.log, &what, e);
        }
        self.log
            .broken(&format!("{what}: {e}; LDK hands the event again"));
        ReplayEvent()
    }
}

impl Lightning {
    /// At start: deposits to unpaid invoices' fallbacks that confirmed while the engine was
    /// not running (the wallet catches up before it starts) pay them now.
    pub fn catch_up_onchain_invoices(self: &Arc<Self>) {
        let me = self.clone();
        tokio::spawn(async move {
            let scripts = match me.invoices.unpaid_fallbacks().await {
                Ok(s) => s,
                Err(e) => {
                    me.log
                        .unusual(&format!("cannot list the invoices' fallbacks: {e}"));
                    return;
                }
            };
            if scripts.is_empty() {
                return;
            }
            for f in me.wallet.list_funds(true) {
                let confirmed = f.blockheight.is_some();
                if confirmed && scripts.contains(&f.script.to_bytes()) {
                    me.on_wallet_deposit(
                        f.script.to_bytes(),
                        f.value.to_sat(),
                        f.outpoint.to_string(),
                    );
                }
            }
        });
    }

    /// A confirmed deposit to the wallet: when `script` is an invoice's on-chain fallback
    /// (`--invoices-onchain-fallback`) and the deposit covers the invoice, the invoice is paid,
    /// as CLN's `invoice_check_onchain_payment`: `invoice_payment` plugins are asked first
    /// (one refusing leaves it unpaid; the coins are the wallet's anyway).
    pub fn on_wallet_deposit(self: &Arc<Self>, script: Vec<u8>, amount_sat: u64, outpoint: String) {
        let me = self.clone();
        tokio::spawn(async move {
            let inv = match me.invoices.by_fallback(script).await {
                Ok(Some(inv)) => inv,
                Ok(None) => return,
                Err(e) => {
                    me.log.unusual(&format!(
                        "cannot look up the invoice of deposit {outpoint}: {e}"
                    ));
                    return;
                }
            };
            let msat = amount_sat * 1000;
            if inv.status != invoices::InvoiceStatus::Unpaid {
                return;
            }
            if inv.amount_msat.is_some_and(|want| msat < want) {
                me.log.info(&format!(
                    "Deposit {outpoint} of {msat}msat to invoice '{}''s fallback is below its amount: not paid",
                    inv.label
                ));
                return;
            }
            if me.port.asks(Question::InvoicePayment) {
                let refusal = me
                    .port
                    .invoice_payment(inv.label.clone(), inv.preimage.unwrap_or_default(), msat)
                    .await;
                if let Some(Refusal { plugin, .. }) = refusal {
                    me.log.info(&format!(
                        "On-chain payment {outpoint} of invoice '{}' rejected by plugin {plugin} (invoice_payment)",
                        inv.label
                    ));
                    return;
                }
            }
            if let Err(e) = me.invoices.paid_onchain(&inv, msat, outpoint.clone()).await {
                me.log.broken(&format!(
                    "cannot mark invoice '{}' paid by {outpoint}: {e}",
                    inv.label
                ));
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_keysend_is_described_by_its_longest_text_tlv_as_clns_plugin_does() {
        assert_eq!(keysend_description(&[]), "keysend");
        let tlvs = [
            (
                KEYSEND_PREIMAGE_TLV,
                b"not the preimage as text either".to_vec(),
            ),
            (133_773_311, b"short".to_vec()),
            (34_349_335, b"the longer one".to_vec()),
            (
                65_537,
                vec![
                    0xff, 0xfe, 0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08,
                ],
            ),
            (65_539, vec![]),
        ];
        assert_eq!(keysend_description(&tlvs), "keysend: the longer one");
    }
}
