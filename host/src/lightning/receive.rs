//! Settling received payments: after `htlc_accepted` continued, the invoice's preimage and
//! the `invoice_payment` hook decide; `PaymentClaimed` marks the invoice paid.

use std::sync::Arc;

use lightning::ln::channelmanager::FailureCode;
use lightning::types::payment::{PaymentHash, PaymentPreimage};
use serde_json::{Value, json};

use super::htlcs::failure_code;
use super::{Lightning, hex};
use fulgur_protocol::hooks::Hook;

impl Lightning {
    /// `htlc_accepted` let the payment through: find its preimage, ask `invoice_payment`,
    /// then claim or fail.
    pub(crate) async fn receive_continue(&self, hash: &PaymentHash, known: Option<[u8; 32]>) {
        let inv = self.invoice_by_hash(hash.0).await;
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
        if let Some(inv) = &inv
            && self.plugins.has_hook(Hook::InvoicePayment)
        {
            let amount = self
                .claimable_amount(hash)
                .unwrap_or(inv.amount_msat.unwrap_or(0));
            let payload = json!({"payment": {
                "label": inv.label,
                "preimage": hex(&preimage),
                "msat": amount,
            }});
            let end = self
                .plugins
                .run_hook(Hook::InvoicePayment, payload, None, None, None, None)
                .await;
            if let crate::hooks::ChainEnd::Stopped { plugin, answer } = end {
                let msg = answer.get("failure_message").and_then(Value::as_str);
                self.log.info(&format!(
                    "Payment for invoice {} rejected by plugin {plugin} (invoice_payment)",
                    inv.label
                ));
                self.manager
                    .fail_htlc_backwards_with_reason(hash, failure_code(msg));
                return;
            }
        }
        self.claim(hash, preimage);
    }

    /// Claims a payment with its preimage, remembering it for `PaymentClaimed`.
    pub(crate) fn claim(&self, hash: &PaymentHash, preimage: [u8; 32]) {
        self.claimed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(hash.0, preimage);
        self.manager.claim_funds(PaymentPreimage(preimage));
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

    /// LDK's `PaymentClaimed`: the invoice is paid.
    pub(crate) async fn on_payment_claimed(
        self: &Arc<Self>,
        hash: PaymentHash,
        amount_msat: u64,
        preimage: Option<PaymentPreimage>,
    ) {
        let pre = preimage.map(|p| p.0).or_else(|| {
            self.claimed
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&hash.0)
        });
        let Some(pre) = pre else {
            self.log.unusual(&format!(
                "Payment {} claimed but its preimage is not known here",
                hex(&hash.0)
            ));
            return;
        };
        self.log.info(&format!(
            "Payment {} of {amount_msat}msat received",
            hex(&hash.0)
        ));
        self.invoice_paid(hash.0, amount_msat, pre).await;
        let account = self.htlc_account(&hash.0, true);
        self.coin_movement(super::movements::Movement {
            kind: "channel_mvt",
            account,
            credit_msat: amount_msat,
            debit_msat: 0,
            tag: "invoice",
            payment_hash: Some(&hash.0),
            fees_msat: None,
            utxo: None,
            peer_id: None,
        })
        .await;
    }
}
