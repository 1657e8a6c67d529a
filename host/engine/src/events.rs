//! LDK's events, turned into our bookkeeping, notifications and hook calls.
//!
//! [`Lightning::handle_event`] is called by the engine's background task for every event of
//! the `ChannelManager` and the `ChainMonitor`, one at a time. It never waits on a plugin:
//! anything that asks a plugin (an HTLC hook, `openchannel`) runs in its own task, so a slow
//! plugin never stalls channel updates. Returning `Err(ReplayEvent)` makes LDK hand the event
//! again later (used when the database is unavailable).

use fulgur_base::hex;
use std::sync::Arc;

use lightning::events::{Event, ReplayEvent};

use super::Lightning;
use super::port::{Notice, StateChange};

impl Lightning {
    /// Handles one LDK event.
    pub(crate) async fn handle_event(self: &Arc<Self>, ev: Event) -> Result<(), ReplayEvent> {
        // A channel opened, confirmed or closed: `emergency.recover` follows.
        let backups_change = matches!(
            ev,
            Event::ChannelPending { .. } | Event::ChannelReady { .. } | Event::ChannelClosed { .. }
        );
        let r = self.handle_event_inner(ev).await;
        if backups_change {
            self.refresh_recover_file_logged();
        }
        r
    }

    async fn handle_event_inner(self: &Arc<Self>, ev: Event) -> Result<(), ReplayEvent> {
        match ev {
            Event::FundingGenerationReady {
                temporary_channel_id,
                counterparty_node_id,
                channel_value_satoshis,
                output_script,
                user_channel_id,
            } => {
                self.on_funding_generation_ready(
                    temporary_channel_id,
                    counterparty_node_id,
                    channel_value_satoshis,
                    output_script,
                    user_channel_id,
                )
                .await;
            }
            Event::ChannelPending {
                channel_id,
                counterparty_node_id,
                funding_txo,
                former_temporary_channel_id,
                ..
            } => {
                if let Some(t) = former_temporary_channel_id {
                    self.ldk_log.funded(t);
                }
                // A closed channel's record is made from snapshots (closed.rs): take one as
                // soon as the channel has its funding, and again with its scid (below).
                let (details, ours) = self.channel_news(
                    &channel_id,
                    &format!("Channel {channel_id} with {counterparty_node_id} pending, funding {funding_txo}"),
                );
                let value_msat = details.map_or(0, |c| c.channel_value_satoshis) * 1000;
                // As in CLN, only the fundee hears of a channel opened to it.
                if !ours {
                    // Until it locks in, the opener abandoning it (CLN's and our
                    // `fundchannel_cancel`) is its right, not a fault: LDK's force-close
                    // lines about it are logged as `unusual`, as CLN logs a peer's
                    // permanent failure.
                    self.ldk_log.opening(channel_id);
                    self.port.tell(Notice::ChannelOpened {
                        peer: counterparty_node_id,
                        funding_msat: value_msat,
                        funding_txid: funding_txo.txid,
                    });
                }
                self.channel_state_changed(
                    &channel_id,
                    &counterparty_node_id,
                    None,
                    "CHANNELD_AWAITING_LOCKIN",
                    opener_cause(ours),
                    "new channel opened",
                );
            }
            Event::ChannelReady {
                channel_id,
                counterparty_node_id,
                funding_txo,
                ..
            } => {
                let (details, ours) = self.channel_news(
                    &channel_id,
                    &format!("Channel {channel_id} with {counterparty_node_id} is ready"),
                );
                self.ldk_log.funded(channel_id);
                self.channel_state_changed(
                    &channel_id,
                    &counterparty_node_id,
                    Some("CHANNELD_AWAITING_LOCKIN"),
                    "CHANNELD_NORMAL",
                    opener_cause(ours),
                    "Lockin complete",
                );
                // CLN records the opening once the channel is locked in, at the height the
                // funding confirmed: the opener is credited the whole funding.
                if let (Some(txo), Some(c)) = (funding_txo, details) {
                    let value = c.channel_value_satoshis * 1000;
                    let blockheight = c
                        .short_channel_id
                        .map(|s| (s >> 40) as u32)
                        .unwrap_or_else(|| self.tip_height());
                    self.coin_movement(super::movements::Movement {
                        kind: "chain_mvt",
                        account: hex(&channel_id.0),
                        credit_msat: if ours { value } else { 0 },
                        debit_msat: 0,
                        tag: "channel_open",
                        payment_hash: None,
                        fees_msat: None,
                        utxo: Some(super::movements::ChainOutput {
                            outpoint: format!("{}:{}", txo.txid, txo.vout),
                            output_msat: value,
                            blockheight,
                        }),
                        peer_id: Some(counterparty_node_id.to_string()),
                        extra_tags: if ours { vec!["opener"] } else { vec![] },
                    })
                    .await;
                }
                self.announce_node();
            }
            Event::ChannelClosed {
                channel_id,
                user_channel_id,
                reason,
                counterparty_node_id,
                channel_capacity_sats,
                last_local_balance_msat,
                channel_funding_txo,
                ..
            } => {
                self.log
                    .info(&format!("Channel {channel_id} closed: {reason}"));
                self.ldk_log.funded(channel_id);
                // A `fundchannel` still waiting for this channel fails now, with the peer's
                // reason (e.g. an `openchannel` hook's error_message), instead of timing out.
                if let Some((_, _, reply)) = self.channels.take_waiter(user_channel_id) {
                    reply.fail(super::channels::OpenError::Closed(open_failure(&reason)));
                }
                // An open funded from outside ends with its channel.
                self.channels.end(user_channel_id);
                // Cancelled before its funding went out (`fundchannel_cancel`): forgotten
                // entirely, as CLN forgets it, with nothing on chain to resolve.
                if self.channels.take_cancelled(&channel_id) {
                    self.closed.drop_snapshot(&channel_id);
                    return Ok(());
                }
                if channel_funding_txo.is_none() {
                    self.closed.drop_snapshot(&channel_id);
                }
                // A channel that never got its funding was never announced to plugins.
                if let Some(txo) = channel_funding_txo {
                    // Kept in listpeerchannels while it resolves, then in listclosedchannels;
                    // this also sends its channel_state_changed.
                    let cause = closure_cause(&reason);
                    if let Err(err) = self
                        .record_closed(super::closed::Closure {
                            channel_id: &channel_id,
                            peer: counterparty_node_id,
                            reason: &reason,
                            cause,
                            capacity_sats: channel_capacity_sats,
                            balance_msat: last_local_balance_msat,
                            funding: txo.into_bitcoin_outpoint(),
                        })
                        .await
                    {
                        self.log
                            .broken(&format!("cannot record closed channel {channel_id}: {err}"));
                        return Err(ReplayEvent());
                    }
                    self.coin_movement(super::movements::Movement {
                        kind: "chain_mvt",
                        account: hex(&channel_id.0),
                        credit_msat: 0,
                        debit_msat: last_local_balance_msat.unwrap_or(0),
                        tag: "channel_close",
                        payment_hash: None,
                        fees_msat: None,
                        utxo: Some(super::movements::ChainOutput {
                            outpoint: txo.to_string(),
                            output_msat: channel_capacity_sats.unwrap_or(0) * 1000,
                            blockheight: self.tip_height(),
                        }),
                        peer_id: counterparty_node_id.map(|p| p.to_string()),
                        extra_tags: vec![],
                    })
                    .await;
                }
            }
            Event::HTLCIntercepted {
                intercept_id,
                requested_next_hop_scid,
                payment_hash,
                inbound_amount_msat,
                expected_outbound_amount_msat,
                outgoing_htlc_expiry_block_height,
            } => {
                self.on_htlc_intercepted(
                    intercept_id,
                    requested_next_hop_scid,
                    payment_hash,
                    inbound_amount_msat,
                    expected_outbound_amount_msat,
                    outgoing_htlc_expiry_block_height,
                )
                .await;
            }
            Event::PaymentClaimable {
                payment_hash,
                amount_msat,
                purpose,
                claim_deadline,
                onion_fields,
                ..
            } => {
                let secret = match &purpose {
                    lightning::events::PaymentPurpose::Bolt11InvoicePayment {
                        payment_secret,
                        ..
                    } => Some(payment_secret.0),
                    _ => None,
                };
                let keysend = matches!(
                    purpose,
                    lightning::events::PaymentPurpose::SpontaneousPayment(_)
                )
                .then(|| {
                    super::receive::keysend_description(
                        onion_fields.as_ref().map_or(&[][..], |o| o.custom_tlvs()),
                    )
                });
                let onion = super::htlcs::ReceivedOnion {
                    payment_secret: secret,
                    metadata: onion_fields
                        .as_ref()
                        .and_then(|o| o.payment_metadata.clone()),
                    custom_tlvs: onion_fields
                        .as_ref()
                        .map(|o| o.custom_tlvs().to_vec())
                        .unwrap_or_default(),
                };
                self.on_payment_claimable(
                    payment_hash,
                    amount_msat,
                    purpose.preimage(),
                    keysend,
                    claim_deadline,
                    onion,
                )
                .await;
            }
            Event::PaymentClaimed {
                payment_hash,
                amount_msat,
                purpose,
                htlcs,
                ..
            } => {
                self.on_payment_claimed(payment_hash, amount_msat, purpose.preimage())
                    .await?;
                self.count_htlcs(
                    htlcs
                        .iter()
                        .map(|h| {
                            (
                                h.channel_id,
                                super::history::Flow::InFulfilled,
                                h.value_msat,
                            )
                        })
                        .collect(),
                );
            }
            Event::PaymentForwarded {
                prev_htlcs,
                next_htlcs,
                outbound_amount_forwarded_msat,
                total_fee_earned_msat,
                ..
            } => {
                self.on_payment_forwarded(
                    &prev_htlcs,
                    &next_htlcs,
                    outbound_amount_forwarded_msat,
                    total_fee_earned_msat,
                )
                .await;
            }
            Event::HTLCHandlingFailed {
                prev_channel_ids,
                failure_type,
                failure_reason,
            } => {
                self.on_forward_failed(&prev_channel_ids, &failure_type, failure_reason.as_ref())
                    .await;
            }
            Event::FundingTxBroadcastSafe {
                channel_id,
                user_channel_id,
                counterparty_node_id,
                funding_txo,
                ..
            } => {
                self.log.info(&format!(
                    "Channel {channel_id} with {counterparty_node_id}: commitments secured, funding {funding_txo} may be broadcast"
                ));
                self.on_funding_broadcast_safe(user_channel_id, channel_id);
            }
            Event::DiscardFunding {
                channel_id,
                funding_info,
            } => {
                self.log
                    .unusual(&format!("Funding of channel {channel_id} discarded"));
                if let lightning::events::FundingInfo::Tx { transaction } = funding_info {
                    let inputs: Vec<_> = transaction
                        .input
                        .iter()
                        .map(|i| i.previous_output)
                        .collect();
                    self.wallet.release(&inputs);
                }
            }
            Event::OpenChannelRequest {
                temporary_channel_id,
                counterparty_node_id,
                funding_satoshis,
                channel_negotiation_type,
                is_announced,
                params,
                channel_type,
                ..
            } => {
                let push_msat = match channel_negotiation_type {
                    lightning::events::InboundChannelFunds::PushMsat(p) => p,
                    _ => 0,
                };
                self.on_open_channel_request(super::channels::InboundOpen {
                    temporary_channel_id,
                    peer: counterparty_node_id,
                    funding_sat: funding_satoshis,
                    push_msat,
                    params,
                    is_announced,
                    channel_type,
                });
            }
            ev @ (Event::PaymentSent { .. }
            | Event::PaymentFailed { .. }
            | Event::PaymentPathFailed { .. }
            | Event::PaymentPathSuccessful { .. }) => {
                self.handle_payment_event(ev).await?;
            }
            Event::SpendableOutputs {
                outputs,
                channel_id,
                ..
            } => {
                self.on_spendable_outputs(outputs, channel_id).await?;
            }
            Event::BumpTransaction(bump) => self.on_bump_transaction(bump),
            other => {
                self.log.debug(&format!("LDK event: {other:?}"));
            }
        }
        Ok(())
    }

    /// An anchor channel's transaction needs fees from the wallet: the commitment we are
    /// closing with (CPFP through our anchor, unless it already pays the target), or our
    /// zero-fee HTLC transactions. LDK's handler picks confirmed wallet coins, signs and
    /// broadcasts (commitment first); it logs the transactions it sends. A failure (no
    /// coins) is logged and tried again at the next block, when LDK asks again.
    fn on_bump_transaction(&self, bump: lightning::events::bump_transaction::BumpTransactionEvent) {
        use lightning::events::bump_transaction::BumpTransactionEvent as B;
        match &bump {
            B::ChannelClose {
                channel_id,
                package_target_feerate_sat_per_1000_weight,
                commitment_tx,
                commitment_tx_fee_satoshis,
                pending_htlcs,
                ..
            } => {
                let weight = commitment_tx.weight().to_wu().max(1);
                self.log.info(&format!(
                    "Fee bump: commitment {} of channel {channel_id} pays {commitment_tx_fee_satoshis} sat ({} sat/kW) for a target of {package_target_feerate_sat_per_1000_weight} sat/kW, {} HTLC(s) pending; CPFP through our anchor if needed",
                    commitment_tx.compute_txid(),
                    commitment_tx_fee_satoshis * 1000 / weight,
                    pending_htlcs.len()
                ));
            }
            B::HTLCResolution {
                channel_id,
                target_feerate_sat_per_1000_weight,
                htlc_descriptors,
                tx_lock_time,
                ..
            } => {
                let timeouts = htlc_descriptors
                    .iter()
                    .filter(|d| d.preimage.is_none())
                    .count();
                self.log.info(&format!(
                    "Fee bump: HTLC resolution of channel {channel_id}: {} HTLC(s) ({timeouts} by timeout, {} by preimage), fee from wallet inputs at {target_feerate_sat_per_1000_weight} sat/kW, locktime {tx_lock_time}",
                    htlc_descriptors.len(),
                    htlc_descriptors.len() - timeouts
                ));
            }
        }
        // LDK's handler never blocks (our coin source is synchronous); it must not take the
        // engine down either (the only panic the node survives: see `fulgur_base::panic::contain`).
        let r = fulgur_base::panic::contain(|| self.bumper.handle_event(&bump));
        if r.is_err() {
            self.log.broken(
                "Fee bump: LDK's bump handler panicked; the bump is retried at the next block",
            );
        }
    }

    /// A channel's opening went a step further (`what`, logged): takes a snapshot of the
    /// channels and returns this one's details and whether we opened it.
    fn channel_news(
        &self,
        id: &lightning::ln::types::ChannelId,
        what: &str,
    ) -> (Option<lightning::ln::channel_state::ChannelDetails>, bool) {
        self.log.info(what);
        self.snapshot_channels();
        let details = self.channel(id);
        let ours = details.as_ref().is_some_and(|c| c.is_outbound);
        (details, ours)
    }

    /// Sends `channel_state_changed` (CLN's payload).
    pub(crate) fn channel_state_changed(
        &self,
        channel_id: &lightning::ln::types::ChannelId,
        peer: &bitcoin::secp256k1::PublicKey,
        old: Option<&str>,
        new: &str,
        cause: &str,
        message: &str,
    ) {
        let scid = self
            .manager
            .list_channels()
            .into_iter()
            .find(|c| c.channel_id == *channel_id)
            .and_then(|c| c.short_channel_id)
            .map(super::scid_string);
        let change = StateChange {
            peer_id: peer.to_string(),
            channel_id: hex(&channel_id.0),
            short_channel_id: scid,
            old_state: old.map(String::from),
            new_state: new.into(),
            cause: cause.into(),
            message: message.into(),
        };
        super::history::record_state_change(&self.store, &self.log, &change, self.clock.unix_ms());
        self.port.tell(Notice::ChannelStateChanged(change));
    }

    fn channel(
        &self,
        id: &lightning::ln::types::ChannelId,
    ) -> Option<lightning::ln::channel_state::ChannelDetails> {
        self.manager
            .list_channels()
            .into_iter()
            .find(|c| c.channel_id == *id)
    }
}

/// CLN's `cause` for a channel's opening states: `user` for the opener, `remote` for the
/// fundee.
fn opener_cause(ours: bool) -> &'static str {
    if ours { "user" } else { "remote" }
}

/// Why `fundchannel` failed, from why LDK closed the channel before it was funded.
fn open_failure(r: &lightning::events::ClosureReason) -> String {
    use lightning::events::ClosureReason as R;
    match r {
        R::CounterpartyForceClosed { peer_msg } => format!("They sent error: {peer_msg}"),
        other => format!("Channel open failed: {other}"),
    }
}

/// CLN's `cause` for a closure.
fn closure_cause(r: &lightning::events::ClosureReason) -> &'static str {
    use lightning::events::ClosureReason as R;
    match r {
        R::CounterpartyForceClosed { .. } | R::CounterpartyInitiatedCooperativeClosure => "remote",
        R::HolderForceClosed { .. } | R::LocallyInitiatedCooperativeClosure => "user",
        R::CommitmentTxConfirmed | R::FundingTimedOut => "onchain",
        _ => "protocol",
    }
}
