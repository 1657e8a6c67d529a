//! Channel opens funded from outside `fundchannel`'s own wallet spend, as CLN offers them:
//!
//! * `fundchannel_start` asks the peer for a channel and answers with the funding output to
//!   pay; `fundchannel_complete` takes a PSBT paying it (signed or not), gives LDK its
//!   outpoint and answers once the peer signed our first commitment, after which the caller
//!   broadcasts the PSBT (`signpsbt` + `sendpsbt`, or another wallet). LDK is told the
//!   funding is broadcast by someone else (`unsafe_manual_funding_transaction_generated`),
//!   so its monitor broadcasts nothing of the channel until the funding is seen on chain.
//! * `fundchannel_cancel` forgets such an open: before `fundchannel_complete`, or after it
//!   as long as the funding is neither ours to have sent nor seen by the backend.
//! * `multifundchannel` opens channels to several peers with one transaction from the
//!   wallet, handed to LDK as a batch: it is broadcast once every peer signed.

use std::sync::Arc;
use std::time::Duration;

use bitcoin::psbt::Psbt;
use bitcoin::secp256k1::PublicKey;
use bitcoin::{OutPoint, Transaction, TxOut};
use lightning::ln::types::ChannelId;
use tokio::sync::oneshot;

use super::Lightning;
use super::channels::{FundFrom, OpenError, PendingOpen, Ready, Waiter};

/// How long the peer has to accept, and to sign.
const STEP_TIMEOUT: Duration = Duration::from_secs(60);

/// CLN's answer to a `fundchannel_cancel` before `fundchannel_complete`.
pub const CANCELLED_BEFORE_COMPLETE: &str = "Channel open canceled by RPC";
/// CLN's answer to a `fundchannel_cancel` after `fundchannel_complete`.
pub const CANCELLED_AFTER_COMPLETE: &str =
    "Channel open canceled by RPC(after fundchannel_complete)";

/// A channel to open: one of a `multifundchannel`, or a `fundchannel`/`fundchannel_start`.
#[derive(Debug, Clone)]
pub struct OpenRequest {
    /// The peer (connected).
    pub peer: PublicKey,
    /// The channel's size.
    pub amount_sat: u64,
    /// Given to the peer at opening.
    pub push_msat: u64,
    /// Announced or not.
    pub announce: bool,
    /// Its own minimum depth.
    pub mindepth: Option<u32>,
}

/// One channel `multifundchannel` opened.
#[derive(Debug, Clone)]
pub struct BatchChannel {
    /// The peer.
    pub peer: PublicKey,
    /// The channel id (from the funding outpoint).
    pub channel_id: ChannelId,
    /// Its output in the funding transaction.
    pub outnum: u32,
    /// The channel type negotiated.
    pub channel_type: Option<lightning::types::features::ChannelTypeFeatures>,
}

/// What `multifundchannel` did.
#[derive(Debug)]
pub struct OpenRequested {
    /// The funding transaction, broadcast.
    pub tx: Transaction,
    /// The channels it opens, in the order asked.
    pub channels: Vec<BatchChannel>,
    /// The peers that refused (allowed by `minchannels`).
    pub failed: Vec<(PublicKey, OpenError)>,
}

impl Lightning {
    /// Asks `peer` for a channel; `reply` waits for its funding output.
    pub(crate) fn create_open(
        self: &Arc<Self>,
        open: &OpenRequest,
        reply: Waiter,
        feerate_perkw: u32,
        source: FundFrom,
    ) -> Result<(u128, ChannelId), OpenError> {
        let user_channel_id = u128::from_be_bytes(
            lightning::sign::EntropySource::get_secure_random_bytes(&*self.keys)[..16]
                .try_into()
                .unwrap_or([0; 16]),
        );
        self.channels.begin(
            user_channel_id,
            PendingOpen {
                peer: open.peer,
                feerate_perkw,
                source,
                reply: Some(reply),
                started: None,
            },
        );
        let config = self.channels.open_config(open.announce, open.mindepth);
        match self.manager.create_channel(
            open.peer,
            open.amount_sat,
            open.push_msat,
            user_channel_id,
            None,
            Some(config),
        ) {
            Ok(id) => {
                self.ldk_log.opening(id);
                self.peers.process_events();
                Ok((user_channel_id, id))
            }
            Err(e) => {
                self.channels.end(user_channel_id);
                Err(OpenError::Refused(super::api_error(&e)))
            }
        }
    }

    /// Asks for a channel funded from outside and waits for its funding output.
    async fn ready(self: &Arc<Self>, open: &OpenRequest) -> Result<Ready, OpenError> {
        if self.channels.opening_to(open.peer) {
            return Err(OpenError::Busy);
        }
        let (tx, rx) = oneshot::channel();
        let (user_channel_id, temporary) =
            self.create_open(open, Waiter::Ready(tx), 0, FundFrom::default())?;
        let r = match tokio::time::timeout(STEP_TIMEOUT, rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(OpenError::Abandoned),
            Err(_) => Err(OpenError::TimedOut),
        };
        if r.is_err() {
            self.channels.end(user_channel_id);
            self.drop_unfunded(temporary, open.peer, "channel open failed");
            self.ldk_log.funded(temporary);
        }
        r
    }

    /// `fundchannel_start`: the output a funding transaction must pay.
    pub async fn start_open(self: &Arc<Self>, open: &OpenRequest) -> Result<Ready, OpenError> {
        let r = self.ready(open).await?;
        self.log.info(&format!(
            "Funding channel start: awaiting funding_txid with output to {}",
            r.script.to_hex_string()
        ));
        Ok(r)
    }

    /// `fundchannel_complete`: `psbt` pays the started open to `peer`; answers with the
    /// channel id once the peer signed our first commitment (then the PSBT may be sent).
    pub async fn complete_open(
        self: &Arc<Self>,
        peer: PublicKey,
        psbt: &Psbt,
    ) -> Result<ChannelId, OpenError> {
        let (ready, waiting) = self
            .channels
            .started_to(peer)
            .ok_or(OpenError::NothingInProgress)?;
        if waiting {
            return Err(OpenError::Refused("Channel funding in progress.".into()));
        }
        let tx = &psbt.unsigned_tx;
        let paying: Vec<usize> = tx
            .output
            .iter()
            .enumerate()
            .filter(|(_, o)| o.script_pubkey == ready.script)
            .map(|(i, _)| i)
            .collect();
        let index = match paying[..] {
            [] => return Err(OpenError::BadFunding("No output to open channel".into())),
            [i] => i,
            _ => return Err(OpenError::BadFunding("Two outputs to open channel".into())),
        };
        let value = tx.output[index].value.to_sat();
        if value != ready.value_sat {
            return Err(OpenError::BadFunding(format!(
                "Output to open channel is {value}sat, should be {}sat",
                ready.value_sat
            )));
        }
        // Unsigned non-segwit inputs have malleable txids.
        if let Some(i) = psbt
            .inputs
            .iter()
            .position(|i| i.witness_utxo.is_none() && i.final_script_sig.is_none())
        {
            return Err(OpenError::BadFunding(format!(
                "Input {i} is non-segwit and unsigned: txid is unknown until signed"
            )));
        }
        let index = u16::try_from(index).map_err(|_| {
            OpenError::BadFunding(format!(
                "Invalid parameter: funding tx vout too large {index}"
            ))
        })?;
        let txid = tx.compute_txid();
        let (reply, rx) = oneshot::channel();
        self.channels
            .wait_again(ready.user_channel_id, Waiter::Secured(reply));
        if let Err(e) = self.manager.unsafe_manual_funding_transaction_generated(
            ready.temporary_channel_id,
            peer,
            lightning::chain::transaction::OutPoint { txid, index },
        ) {
            let _ = self.channels.take_waiter(ready.user_channel_id);
            return Err(OpenError::Refused(super::api_error(&e)));
        }
        self.peers.process_events();
        let r = match tokio::time::timeout(STEP_TIMEOUT, rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(OpenError::Abandoned),
            Err(_) => Err(OpenError::NotSigned(txid)),
        };
        self.channels.end(ready.user_channel_id);
        self.ldk_log.funded(ready.temporary_channel_id);
        r
    }

    /// LDK says the funding of a channel funded from outside may be broadcast: the peer
    /// signed, `fundchannel_complete` answers.
    pub(crate) fn on_funding_broadcast_safe(&self, user_channel_id: u128, channel_id: ChannelId) {
        match self.channels.take_waiter(user_channel_id) {
            Some((_, _, Waiter::Secured(s))) => drop(s.send(Ok(channel_id))),
            Some((_, _, other)) => other.fail(OpenError::Abandoned),
            None => {}
        }
    }

    /// `fundchannel_cancel`: forgets the open to `peer` whose funding is not out; answers
    /// with CLN's words.
    pub async fn cancel_open(self: &Arc<Self>, peer: PublicKey) -> Result<&'static str, OpenError> {
        if let Some((ready, _)) = self.channels.started_to(peer) {
            if let Some((_, _, w)) = self.channels.take_waiter(ready.user_channel_id) {
                w.fail(OpenError::Closed(CANCELLED_BEFORE_COMPLETE.into()));
            }
            self.channels.end(ready.user_channel_id);
            self.drop_unfunded(ready.temporary_channel_id, peer, CANCELLED_BEFORE_COMPLETE);
            self.ldk_log.funded(ready.temporary_channel_id);
            return Ok(CANCELLED_BEFORE_COMPLETE);
        }
        let channels = self.manager.list_channels_with_counterparty(&peer);
        let c = channels
            .iter()
            .find(|c| c.funding_txo.is_some() && !c.is_channel_ready)
            .ok_or_else(|| {
                OpenError::NothingToCancel(format!(
                    "No channels being opened or awaiting lock-in for peer_id {peer}"
                ))
            })?;
        if !c.is_outbound {
            return Err(OpenError::CancelNotSafe(
                "Cannot cancel channel that was initiated by peer".into(),
            ));
        }
        let Some(txo) = c.funding_txo else {
            return Err(OpenError::NothingToCancel(format!(
                "No channels being opened or awaiting lock-in for peer_id {peer}"
            )));
        };
        if self
            .wallet
            .list_transactions()
            .iter()
            .any(|t| t.tx.compute_txid() == txo.txid)
        {
            return Err(OpenError::CancelNotSafe(
                "Has the funding transaction been broadcast? Please use `close` or `dev-fail` instead."
                    .into(),
            ));
        }
        if let Some(backend) = self.chain.backend() {
            match backend.output_exists(txo.txid, u32::from(txo.index)).await {
                Ok(false) => {}
                Ok(true) => {
                    return Err(OpenError::CancelNotSafe(
                        "The funding transaction has been broadcast, please consider `close` or `dev-fail`! "
                            .into(),
                    ));
                }
                Err(e) => {
                    return Err(OpenError::CancelNotSafe(format!(
                        "Cannot tell whether the funding transaction has been broadcast: {e}"
                    )));
                }
            }
        }
        self.channels.cancel(c.channel_id);
        // Nothing was at stake: LDK's force-close lines are logged at info.
        let closed = self.ldk_log.dropping_unfunded(c.channel_id, || {
            self.manager.force_close_broadcasting_latest_txn(
                &c.channel_id,
                &peer,
                "Cancel channel by our RPC command before funding transaction broadcast.".into(),
            )
        });
        if let Err(e) = closed {
            self.channels.take_cancelled(&c.channel_id);
            return Err(OpenError::Refused(super::api_error(&e)));
        }
        Ok(CANCELLED_AFTER_COMPLETE)
    }

    /// `multifundchannel`: opens every channel of `opens` it can (at least `minchannels`)
    /// with one wallet transaction paying all of them, broadcast by LDK once every peer
    /// signed; answers once it is in the backend's mempool.
    pub async fn open_batch(
        self: &Arc<Self>,
        opens: &[OpenRequest],
        feerate_perkw: u32,
        source: FundFrom,
        minchannels: usize,
    ) -> Result<OpenRequested, OpenError> {
        let results = futures::future::join_all(opens.iter().map(|o| self.ready(o))).await;
        let mut ready = vec![];
        let mut failed = vec![];
        for (o, r) in opens.iter().zip(results) {
            match r {
                Ok(r) => ready.push(r),
                Err(e) => failed.push((o.peer, e)),
            }
        }
        let give_up = |ready: &[Ready], why: &str| {
            for r in ready {
                self.channels.end(r.user_channel_id);
                self.drop_unfunded(r.temporary_channel_id, r.peer, why);
                self.ldk_log.funded(r.temporary_channel_id);
            }
        };
        if ready.len() < minchannels.max(1) {
            give_up(&ready, "another channel of the batch failed");
            return Err(failed
                .into_iter()
                .next()
                .map_or(OpenError::Abandoned, |(_, e)| e));
        }
        let anchor = ready.iter().any(|r| {
            r.channel_type
                .as_ref()
                .is_some_and(|t| t.supports_anchors_zero_fee_htlc_tx())
        });
        let outputs: Vec<TxOut> = ready
            .iter()
            .map(|r| TxOut {
                value: bitcoin::Amount::from_sat(r.value_sat),
                script_pubkey: r.script.clone(),
            })
            .collect();
        let tx = match self
            .wallet
            .fund_from(outputs, feerate_perkw, anchor, source.minconf, source.utxos)
            .await
        {
            Ok(tx) => tx,
            Err(e) => {
                give_up(&ready, "funding failed");
                return Err(e.into());
            }
        };
        let txid = tx.compute_txid();
        let inputs: Vec<OutPoint> = tx.input.iter().map(|i| i.previous_output).collect();
        let mut channels = vec![];
        let mut closed = vec![];
        for r in &ready {
            let Some(outnum) = tx
                .output
                .iter()
                .position(|o| o.script_pubkey == r.script && o.value.to_sat() == r.value_sat)
            else {
                self.wallet.release(&inputs);
                give_up(&ready, "funding failed");
                return Err(OpenError::Refused(
                    "the funding transaction lacks a channel output".into(),
                ));
            };
            let (s, rx) = oneshot::channel();
            self.channels
                .wait_again(r.user_channel_id, Waiter::Secured(s));
            closed.push(rx);
            channels.push(BatchChannel {
                peer: r.peer,
                channel_id: ChannelId::v1_from_funding_outpoint(
                    lightning::chain::transaction::OutPoint {
                        txid,
                        index: outnum as u16,
                    },
                ),
                outnum: outnum as u32,
                channel_type: r.channel_type.clone(),
            });
        }
        // Before LDK can broadcast it.
        let mut outcomes = self.chain.broadcaster().outcomes();
        let temporary: Vec<(ChannelId, PublicKey)> = ready
            .iter()
            .map(|r| (r.temporary_channel_id, r.peer))
            .collect();
        let refs: Vec<(&ChannelId, &PublicKey)> = temporary.iter().map(|(c, p)| (c, p)).collect();
        if let Err(e) = self
            .manager
            .batch_funding_transaction_generated(&refs, tx.clone())
        {
            self.wallet.release(&inputs);
            for r in &ready {
                self.channels.end(r.user_channel_id);
            }
            return Err(OpenError::Refused(super::api_error(&e)));
        }
        if let Err(e) = self.wallet.mark_broadcast(&tx).await {
            self.log
                .unusual(&format!("wallet could not record the funding: {e}"));
        }
        self.peers.process_events();
        let broadcast = super::channels::broadcast_outcome(&mut outcomes, txid);
        // A channel of the batch closing (a peer refused to sign) fails the whole batch.
        let any_closed = async {
            let mut pending = closed;
            while !pending.is_empty() {
                let (r, _, rest) = futures::future::select_all(pending).await;
                if let Ok(Err(e)) = r {
                    return e;
                }
                pending = rest;
            }
            std::future::pending().await
        };
        let r = tokio::select! {
            ok = broadcast => if ok {
                Ok(())
            } else {
                Err(OpenError::NotBroadcast(format!("the backend did not accept {txid} (see the log)")))
            },
            e = any_closed => Err(e),
            () = tokio::time::sleep(STEP_TIMEOUT) => Err(OpenError::NotSigned(txid)),
        };
        for r in &ready {
            self.channels.end(r.user_channel_id);
            self.ldk_log.funded(r.temporary_channel_id);
        }
        r?;
        Ok(OpenRequested {
            tx,
            channels,
            failed,
        })
    }
}
