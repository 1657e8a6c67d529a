//! `keysend`: a payment without an invoice (the preimage travels in the onion, BOLT
//! proposal "keysend", TLV 5482373484), routed and retried by LDK's router until
//! `retry_for` passes, as CLN's keysend plugin pays through its pay machinery.
//!
//! The payment is recorded as one `sendpays` row (partid 0 of the next group), so
//! `listsendpays`, `listpays` and `waitsendpay` see it as CLN's do. Its LDK payment id is
//! [`routed_payment_id`]: the failure of one path is LDK's to retry, and only LDK's final
//! `PaymentFailed` fails the row. Its fee is known when it completes.
//!
//! Receiving a keysend is `receive.rs`'s (recorded under an invoice of its own).

use std::sync::Arc;
use std::time::Duration;

use bitcoin::hashes::{Hash, sha256};
use bitcoin::secp256k1::PublicKey;
use lightning::ln::channelmanager::MIN_FINAL_CLTV_EXPIRY_DELTA;
use lightning::ln::outbound_payment::{
    RecipientCustomTlvs, RecipientOnionFields, Retry, RetryableSendFailure,
};
use lightning::routing::router::{PaymentParameters, RouteHint, RouteParameters};
use lightning::sign::EntropySource;
use lightning::types::payment::PaymentPreimage;

use super::Lightning;
use super::payments::{
    NewPart, RouteFailure, Sendpay, SendpayError, TEMPORARY_CHANNEL_FAILURE, TRY_OTHER_ROUTE,
    routed_payment_id,
};

/// What `keysend` asks for.
#[derive(Debug, Clone)]
pub struct KeysendRequest {
    /// Who is paid.
    pub destination: PublicKey,
    /// What they receive.
    pub amount_msat: u64,
    /// The caller's label for the payment.
    pub label: Option<String>,
    /// The most the route may cost in fees.
    pub max_fee_msat: u64,
    /// How long LDK keeps finding routes and retrying.
    pub retry_for: Duration,
    /// The most blocks the payment's HTLCs may be delayed (`maxdelay`).
    pub max_delay: Option<u32>,
    /// TLVs (type ≥ 65536) added to the destination's payload (`extratlvs`).
    pub extra_tlvs: Vec<(u64, Vec<u8>)>,
    /// Routes to a destination behind unannounced channels (`routehints`).
    pub route_hints: Vec<RouteHint>,
}

/// Why a keysend did not complete.
#[derive(Debug)]
pub enum KeysendError {
    /// A parameter LDK refuses (its reason).
    Params(String),
    /// No route to the destination with the liquidity and fee asked.
    NoRoute(Box<Sendpay>),
    /// Sent, and failed: the row says how.
    Failed(Box<Sendpay>),
    /// The payment could not be recorded or waited for.
    Sendpay(SendpayError),
}

impl From<SendpayError> for KeysendError {
    fn from(e: SendpayError) -> Self {
        match e {
            SendpayError::Failed(r) => KeysendError::Failed(r),
            other => KeysendError::Sendpay(other),
        }
    }
}

impl Lightning {
    /// `keysend`: pays `amount_msat` to `destination` with a fresh preimage, and waits until
    /// the payment completes (its row, with the preimage) or fails for good.
    pub async fn keysend(self: &Arc<Self>, req: KeysendRequest) -> Result<Sendpay, KeysendError> {
        self.reconcile_once().await?;
        let tlvs = RecipientCustomTlvs::new(req.extra_tlvs.clone()).map_err(|()| {
            KeysendError::Params(
                "extratlvs: types must be unique, at least 65536, and not the keysend preimage's"
                    .into(),
            )
        })?;
        let preimage = self.keys.get_secure_random_bytes();
        let hash = sha256::Hash::hash(&preimage).to_byte_array();
        let part = NewPart {
            payment_hash: hash,
            groupid: 0,
            partid: 0,
            destination: req.destination,
            amount_msat: req.amount_msat,
            amount_sent_msat: req.amount_msat,
            total_msat: req.amount_msat,
        };
        let (groupid, outcomes) = self
            .payments
            .record_parts(
                hash,
                None,
                vec![part],
                req.amount_msat,
                (req.label.clone(), None, None),
            )
            .await?;
        let Some(recorded) = outcomes.into_iter().next() else {
            return Err(KeysendError::Sendpay(SendpayError::Internal(
                "the keysend was not recorded".into(),
            )));
        };
        recorded?;

        let final_cltv = u32::from(MIN_FINAL_CLTV_EXPIRY_DELTA);
        // One part: CLN's keysend does not split, and LDK's receivers accept a split keysend
        // only when told to.
        let mut params = PaymentParameters::for_keysend(req.destination, final_cltv, false);
        if !req.route_hints.is_empty() {
            params = params
                .with_route_hints(req.route_hints.clone())
                .map_err(|()| KeysendError::Params("routehints: not usable here".into()))?;
        }
        if let Some(d) = req.max_delay {
            params.max_total_cltv_expiry_delta = d;
        }
        let mut route = RouteParameters::from_payment_params_and_value(params, req.amount_msat);
        route.max_total_routing_fee_msat = Some(req.max_fee_msat);
        let onion = RecipientOnionFields::spontaneous_empty(req.amount_msat).with_custom_tlvs(tlvs);
        self.log.info(&format!(
            "Keysend of {}msat to {} (payment {} part {groupid}/0)",
            req.amount_msat,
            req.destination,
            fulgur_base::hex(&hash)
        ));
        let sent = self.manager.send_spontaneous_payment(
            Some(PaymentPreimage(preimage)),
            onion,
            routed_payment_id(&hash, groupid, 0),
            route,
            Retry::Timeout(req.retry_for),
        );
        if let Err(e) = sent {
            let no_route = matches!(e, RetryableSendFailure::RouteNotFound);
            let us = self.manager.get_our_node_id();
            let fail = RouteFailure {
                code: TRY_OTHER_ROUTE,
                detail: match e {
                    RetryableSendFailure::RouteNotFound => {
                        "no route with the liquidity and fees asked".to_string()
                    }
                    other => format!("{other:?}"),
                },
                erring_index: 0,
                failcode: TEMPORARY_CHANNEL_FAILURE,
                erring_node: Some(us),
                erring_channel: None,
            };
            let row = self
                .payments
                .record_failure(hash, groupid, 0, &fail)
                .await
                .map_err(|e| SendpayError::Internal(format!("database error: {e}")))?
                .ok_or_else(|| SendpayError::Internal("the keysend row vanished".into()))?;
            return Err(if no_route {
                KeysendError::NoRoute(Box::new(row))
            } else {
                KeysendError::Failed(Box::new(row))
            });
        }
        self.peers.process_events();
        Ok(self.payments.wait(hash, None, 0, Some(groupid)).await?)
    }
}
