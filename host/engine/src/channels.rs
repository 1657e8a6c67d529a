//! Opening and closing channels: `fundchannel` through the on-chain wallet, the
//! `openchannel` hook on inbound requests, cooperative and forced closes paying back into
//! the wallet, and LDK's output sweeper for what a closed channel leaves on chain.

use lightning::ln::channel_state::ChannelDetails;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bitcoin::secp256k1::PublicKey;
use bitcoin::{ScriptBuf, Transaction, TxOut};
use lightning::events::ReplayEvent;
use lightning::ln::types::ChannelId;
use lightning::sign::ChangeDestinationSourceSync;
use lightning::sign::SpendableOutputDescriptor;
use tokio::sync::oneshot;

use lightning::util::config::UserConfig;

use super::Lightning;
use super::port::{OpenOffer, Question};

/// A channel open waiting for LDK: first for the funding output, then (`fundchannel`) for
/// the peer's signature, after which LDK broadcasts the funding.
pub struct PendingOpen {
    /// The peer the channel is opened to.
    pub peer: PublicKey,
    /// Funding feerate, sat per 1000 weight (`fundchannel`).
    pub feerate_perkw: u32,
    /// The coins `fundchannel` may fund it from.
    pub source: FundFrom,
    /// Whoever waits on the next step, if anyone does.
    pub reply: Option<Waiter>,
    /// For an open funded from outside (`fundchannel_start`): the output to pay, once LDK
    /// gave it.
    pub started: Option<Ready>,
}

/// Which coins of the wallet fund a `fundchannel`.
#[derive(Debug, Clone)]
pub struct FundFrom {
    /// Least confirmations of the coins picked.
    pub minconf: u32,
    /// Exactly these coins, all of them.
    pub utxos: Option<Vec<bitcoin::OutPoint>>,
}

impl Default for FundFrom {
    fn default() -> FundFrom {
        FundFrom {
            minconf: 1,
            utxos: None,
        }
    }
}

/// Who waits on a channel open, and for what.
pub enum Waiter {
    /// `fundchannel`: the wallet funds the channel when LDK is ready; answered with the
    /// funding, then (waiting again) with an error if the channel closes before broadcast.
    Fund(oneshot::Sender<Result<Opened, OpenError>>),
    /// `fundchannel_start` and `multifundchannel`: answered with the output to pay.
    Ready(oneshot::Sender<Result<Ready, OpenError>>),
    /// `fundchannel_complete` and `multifundchannel`: answered once the peer signed the
    /// funding (the commitments are secured), with the channel id.
    Secured(oneshot::Sender<Result<ChannelId, OpenError>>),
}

impl Waiter {
    /// Tells the waiter the open failed.
    pub(crate) fn fail(self, e: OpenError) {
        match self {
            Waiter::Fund(s) => drop(s.send(Err(e))),
            Waiter::Ready(s) => drop(s.send(Err(e))),
            Waiter::Secured(s) => drop(s.send(Err(e))),
        }
    }
}

/// The funding output LDK asks for (`FundingGenerationReady`), for an open funded from
/// outside the engine's own `fundchannel`.
#[derive(Debug, Clone)]
pub struct Ready {
    /// The channel until its funding is known.
    pub temporary_channel_id: ChannelId,
    /// The peer.
    pub peer: PublicKey,
    /// The open's id.
    pub user_channel_id: u128,
    /// The script the funding output must pay.
    pub script: ScriptBuf,
    /// Its amount.
    pub value_sat: u64,
    /// The channel type negotiated.
    pub channel_type: Option<lightning::types::features::ChannelTypeFeatures>,
}

/// Why a channel open failed.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// LDK refused the open, or the funding transaction (its message).
    #[error("{0}")]
    Refused(String),
    /// The wallet could not fund it.
    #[error(transparent)]
    Wallet(#[from] crate::wallet::WalletError),
    /// The channel closed before it was funded (the peer's error, or LDK's reason).
    #[error("{0}")]
    Closed(String),
    /// The peer disconnected before accepting.
    #[error("Disconnected during the channel open")]
    Disconnected,
    /// The peer did not accept within the time allowed.
    #[error("Timed out waiting for the peer to accept the channel")]
    TimedOut,
    /// The peer did not sign the funding within the time allowed (the channel may still
    /// open if it does later; the funding transaction is not broadcast until then).
    #[error("Timed out waiting for the peer to sign the funding transaction {0}")]
    NotSigned(bitcoin::Txid),
    /// The backend refused the funding transaction (its message).
    #[error("Error broadcasting transaction: {0}")]
    NotBroadcast(String),
    /// Nothing answers for it any more (the engine is stopping).
    #[error("The channel open was abandoned")]
    Abandoned,
    /// Another open to the peer is in progress (CLN's words).
    #[error("Already funding channel")]
    Busy,
    /// `fundchannel_complete` without a `fundchannel_start`.
    #[error("No channel funding in progress.")]
    NothingInProgress,
    /// `fundchannel_cancel` with nothing to cancel (`307`).
    #[error("{0}")]
    NothingToCancel(String),
    /// Cancelling would be unsafe: the funding may be out (`308`).
    #[error("{0}")]
    CancelNotSafe(String),
    /// The funding PSBT does not fund the channel (`309`).
    #[error("{0}")]
    BadFunding(String),
}

/// What `fundchannel` returns.
#[derive(Debug, Clone)]
pub struct Opened {
    /// The signed funding transaction.
    pub tx: Transaction,
    /// Output index of the channel.
    pub outnum: u32,
    /// The channel id (from the funding outpoint).
    pub channel_id: ChannelId,
}

/// Where swept outputs go: a wallet address derived when the engine starts.
pub struct WalletDestination(pub Mutex<ScriptBuf>);

impl ChangeDestinationSourceSync for WalletDestination {
    fn get_change_destination_script(&self) -> Result<ScriptBuf, ()> {
        Ok(self.0.lock().unwrap_or_else(|p| p.into_inner()).clone())
    }
}

/// An inbound channel request (LDK's `OpenChannelRequest`), for the `openchannel` hook.
pub(crate) struct InboundOpen {
    pub temporary_channel_id: ChannelId,
    pub peer: PublicKey,
    pub funding_sat: u64,
    pub push_msat: u64,
    pub params: lightning::ln::msgs::ChannelParameters,
    pub is_announced: bool,
    pub channel_type: lightning::types::features::ChannelTypeFeatures,
}

/// The channels service: what the engine keeps of its channels beside LDK's manager (which
/// owns the channels themselves): the `fundchannel` calls in progress, the channel
/// configuration that opens use, and the wallet address closes and sweeps pay to.
///
/// Lock order: `opens` is a leaf (held for a lookup or an insert, never across an await or
/// a call into LDK).
pub struct Channels {
    /// Pending opens by `user_channel_id`.
    opens: Mutex<HashMap<u128, PendingOpen>>,
    /// Channels `fundchannel_cancel` closed before their funding went out.
    cancelled: Mutex<std::collections::HashSet<ChannelId>>,
    /// Our channel configuration (CLN's defaults where LDK's differ, and the options).
    config: UserConfig,
    /// The wallet address sweeps and cooperative closes pay to.
    destination: Arc<WalletDestination>,
}

impl Channels {
    /// The service with `config` for opens and `destination` for closes.
    pub(crate) fn new(config: UserConfig, destination: Arc<WalletDestination>) -> Channels {
        Channels {
            opens: Mutex::new(HashMap::new()),
            cancelled: Mutex::new(Default::default()),
            config,
            destination,
        }
    }

    fn opens(&self) -> std::sync::MutexGuard<'_, HashMap<u128, PendingOpen>> {
        self.opens.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The node's channel configuration.
    pub(crate) fn config(&self) -> &UserConfig {
        &self.config
    }

    /// The configuration of one open: announced or not, and its own minimum depth.
    pub(crate) fn open_config(&self, announce: bool, minconf_depth: Option<u32>) -> UserConfig {
        let mut config = self.config.clone();
        config.channel_handshake_config.announce_for_forwarding = announce;
        if let Some(d) = minconf_depth {
            config.channel_handshake_config.minimum_depth = d;
        }
        config
    }

    /// A wallet script for a close or a sweep.
    fn destination_script(&self) -> Result<ScriptBuf, ()> {
        self.destination.get_change_destination_script()
    }

    /// An open begins.
    pub(crate) fn begin(&self, user_channel_id: u128, open: PendingOpen) {
        self.opens().insert(user_channel_id, open);
    }

    /// An open ended (answered, failed or abandoned).
    pub(crate) fn end(&self, user_channel_id: u128) {
        self.opens().remove(&user_channel_id);
    }

    /// Open `user_channel_id`'s next step is awaited by `reply`.
    pub(crate) fn wait_again(&self, user_channel_id: u128, reply: Waiter) {
        if let Some(p) = self.opens().get_mut(&user_channel_id) {
            p.reply = Some(reply);
        }
    }

    /// Whoever waits on open `user_channel_id`, taken (with its funding feerate and coins).
    pub(crate) fn take_waiter(&self, user_channel_id: u128) -> Option<(u32, FundFrom, Waiter)> {
        self.opens().get_mut(&user_channel_id).and_then(|p| {
            p.reply
                .take()
                .map(|r| (p.feerate_perkw, p.source.clone(), r))
        })
    }

    /// The opens to `peer` still waiting, taken.
    fn take_waiters_to(&self, peer: PublicKey) -> Vec<(u128, Waiter)> {
        self.opens()
            .iter_mut()
            .filter(|(_, o)| o.peer == peer)
            .filter_map(|(id, o)| o.reply.take().map(|r| (*id, r)))
            .collect()
    }

    /// Whether an open to `peer` is in progress.
    pub(crate) fn opening_to(&self, peer: PublicKey) -> bool {
        self.opens().values().any(|o| o.peer == peer)
    }

    /// Records the funding output LDK gave for open `user_channel_id`.
    fn started(&self, user_channel_id: u128, ready: Ready) {
        if let Some(p) = self.opens().get_mut(&user_channel_id) {
            p.started = Some(ready);
        }
    }

    /// `channel_id` is being closed by `fundchannel_cancel`.
    pub(crate) fn cancel(&self, channel_id: ChannelId) {
        self.cancelled
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(channel_id);
    }

    /// Whether `channel_id` was closed by `fundchannel_cancel` (asked once).
    pub(crate) fn take_cancelled(&self, channel_id: &ChannelId) -> bool {
        self.cancelled
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(channel_id)
    }

    /// The open to `peer` funded from outside whose output is known, if any, and whether
    /// someone waits on it already.
    pub(crate) fn started_to(&self, peer: PublicKey) -> Option<(Ready, bool)> {
        self.opens()
            .values()
            .filter(|o| o.peer == peer)
            .find_map(|o| o.started.clone().map(|r| (r, o.reply.is_some())))
    }
}

/// Whether the broadcaster got `txid` into the backend, from its `outcomes` (subscribed
/// before the transaction could be handed to it).
pub(crate) async fn broadcast_outcome(
    outcomes: &mut tokio::sync::broadcast::Receiver<(bitcoin::Txid, bool)>,
    txid: bitcoin::Txid,
) -> bool {
    loop {
        match outcomes.recv().await {
            Ok((t, ok)) if t == txid => return ok,
            Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return false,
        }
    }
}

impl Lightning {
    /// `fundchannel`: opens the channel `open` asks for (its peer already connected), funded
    /// from the wallet at `feerate_perkw`, and returns, as CLN does, once the funding
    /// transaction is broadcast: the peer signed it and the backend has it in its mempool,
    /// so blocks mined right after the call confirm it.
    pub async fn open_channel(
        self: &Arc<Self>,
        open: &super::funding::OpenRequest,
        feerate_perkw: u32,
        source: FundFrom,
    ) -> Result<Opened, OpenError> {
        if self.channels.opening_to(open.peer) {
            return Err(OpenError::Busy);
        }
        let (tx, rx) = oneshot::channel();
        // Before LDK can broadcast anything of this channel.
        let outcomes = self.chain.broadcaster().outcomes();
        let (user_channel_id, temporary_id) =
            self.create_open(open, Waiter::Fund(tx), feerate_perkw, source)?;
        let r = match tokio::time::timeout(Duration::from_secs(60), rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(OpenError::Abandoned),
            Err(_) => Err(OpenError::TimedOut),
        };
        let r = match r {
            Ok(opened) => {
                self.until_broadcast(user_channel_id, opened, outcomes)
                    .await
            }
            Err(e) => Err(e),
        };
        self.channels.end(user_channel_id);
        self.ldk_log.funded(temporary_id);
        r
    }

    /// Waits until the funding of `opened` is in the backend's mempool: LDK broadcasts it
    /// once the peer has signed (`funding_signed`). Fails if the channel closes first (the
    /// peer refused or left), if the backend refuses the transaction, or after 60 s.
    async fn until_broadcast(
        &self,
        user_channel_id: u128,
        opened: Opened,
        mut outcomes: tokio::sync::broadcast::Receiver<(bitcoin::Txid, bool)>,
    ) -> Result<Opened, OpenError> {
        let txid = opened.tx.compute_txid();
        let (tx, closed) = oneshot::channel();
        self.channels.wait_again(user_channel_id, Waiter::Fund(tx));
        // A close between the funding and the line above found no one to tell.
        if !self
            .manager
            .list_channels()
            .iter()
            .any(|c| c.user_channel_id == user_channel_id)
        {
            return Err(OpenError::Closed(
                "the channel closed before its funding was broadcast".into(),
            ));
        }
        let broadcast = broadcast_outcome(&mut outcomes, txid);
        tokio::select! {
            ok = broadcast => {
                if ok {
                    Ok(opened)
                } else {
                    Err(OpenError::NotBroadcast(format!(
                        "the backend did not accept {txid} (see the log)"
                    )))
                }
            }
            r = closed => match r {
                Ok(Err(e)) => Err(e),
                // Nothing else is sent on it.
                Ok(Ok(_)) | Err(_) => Err(OpenError::Abandoned),
            },
            () = tokio::time::sleep(Duration::from_secs(60)) => Err(OpenError::NotSigned(txid)),
        }
    }

    /// The peer went away while `fundchannel` waited for it to accept: as CLN, the open
    /// fails now ("the uncommitted channel is killed") instead of at the timeout, and the
    /// unfunded channel is dropped rather than re-offered when the peer comes back.
    /// Opens whose funding is already being built are left to finish.
    pub(crate) fn abandon_opens_to(&self, peer: PublicKey) {
        let waiting = self.channels.take_waiters_to(peer);
        if waiting.is_empty() {
            return;
        }
        let channels = self.manager.list_channels_with_counterparty(&peer);
        for (user_channel_id, reply) in waiting {
            for c in &channels {
                if c.user_channel_id == user_channel_id && c.funding_txo.is_none() {
                    self.drop_unfunded(c.channel_id, peer, "peer disconnected during the open");
                }
            }
            self.log.info(&format!(
                "Channel open to {peer} abandoned: peer disconnected before accepting"
            ));
            reply.fail(OpenError::Disconnected);
        }
    }

    /// Our balance in an open channel: LDK's outbound capacity plus our reserve; below the
    /// reserve LDK reports no capacity at all, so the channel's monitor says it (whole
    /// satoshis, pending HTLCs not counted).
    pub fn to_us_msat(&self, c: &ChannelDetails) -> u64 {
        use lightning::chain::channelmonitor::Balance;
        if c.outbound_capacity_msat > 0 {
            return c.outbound_capacity_msat + c.unspendable_punishment_reserve.unwrap_or(0) * 1000;
        }
        let Ok(monitor) = self.monitor.get_monitor(c.channel_id) else {
            return 0;
        };
        monitor
            .get_claimable_balances()
            .iter()
            .find_map(|b| match b {
                Balance::ClaimableOnChannelClose {
                    balance_candidates,
                    confirmed_balance_candidate_index,
                    ..
                } => balance_candidates
                    .get(*confirmed_balance_candidate_index)
                    .or(balance_candidates.last())
                    .map(|h| (h.amount_satoshis + h.transaction_fee_satoshis) * 1000),
                _ => None,
            })
            .unwrap_or(0)
    }

    /// Removes an unfunded channel (nothing to broadcast, nothing at stake), telling the
    /// peer `why` if it is connected.
    pub(crate) fn drop_unfunded(&self, channel_id: ChannelId, peer: PublicKey, why: &str) {
        self.ldk_log.dropping_unfunded(channel_id, || {
            let _ =
                self.manager
                    .force_close_broadcasting_latest_txn(&channel_id, &peer, why.into());
        });
    }

    pub(crate) async fn on_funding_generation_ready(
        self: &Arc<Self>,
        temporary_channel_id: ChannelId,
        peer: PublicKey,
        value_sat: u64,
        script: ScriptBuf,
        user_channel_id: u128,
    ) {
        let pending = self.channels.take_waiter(user_channel_id);
        let (feerate, source, reply) = match pending {
            Some((feerate, source, Waiter::Fund(reply))) => (feerate, source, reply),
            Some((_, _, Waiter::Ready(reply))) => {
                // Funded from outside: the caller gets the output to pay.
                let channel_type = self
                    .manager
                    .list_channels_with_counterparty(&peer)
                    .into_iter()
                    .find(|c| c.channel_id == temporary_channel_id)
                    .and_then(|c| c.channel_type);
                let ready = Ready {
                    temporary_channel_id,
                    peer,
                    user_channel_id,
                    script,
                    value_sat,
                    channel_type,
                };
                self.channels.started(user_channel_id, ready.clone());
                if reply.send(Ok(ready)).is_err() {
                    self.channels.end(user_channel_id);
                    self.drop_unfunded(temporary_channel_id, peer, "no funding for this channel");
                }
                return;
            }
            Some((_, _, other)) => {
                other.fail(OpenError::Abandoned);
                self.drop_unfunded(temporary_channel_id, peer, "no funding for this channel");
                return;
            }
            None => {
                // Not ours, or its caller gave up (timed out, or the node restarted):
                // nothing will fund it.
                self.drop_unfunded(temporary_channel_id, peer, "no funding for this channel");
                return;
            }
        };
        let out = TxOut {
            value: bitcoin::Amount::from_sat(value_sat),
            script_pubkey: script.clone(),
        };
        // An anchor channel's closes need wallet coins: its funding keeps the reserve.
        let anchor = self
            .manager
            .list_channels_with_counterparty(&peer)
            .iter()
            .any(|c| {
                c.channel_id == temporary_channel_id
                    && c.channel_type
                        .as_ref()
                        .is_some_and(|t| t.supports_anchors_zero_fee_htlc_tx())
            });
        let result = async {
            let tx = self
                .wallet
                .fund_from(vec![out], feerate, anchor, source.minconf, source.utxos)
                .await?;
            let outnum = tx
                .output
                .iter()
                .position(|o| o.script_pubkey == script && o.value.to_sat() == value_sat)
                .ok_or_else(|| {
                    OpenError::Refused("the funding transaction lacks the channel output".into())
                })? as u32;
            let inputs: Vec<_> = tx.input.iter().map(|i| i.previous_output).collect();
            if let Err(e) =
                self.manager
                    .funding_transaction_generated(temporary_channel_id, peer, tx.clone())
            {
                self.wallet.release(&inputs);
                return Err(OpenError::Refused(super::api_error(&e)));
            }
            if let Err(e) = self.wallet.mark_broadcast(&tx).await {
                self.log
                    .unusual(&format!("wallet could not record the funding: {e}"));
            }
            let channel_id =
                ChannelId::v1_from_funding_outpoint(lightning::chain::transaction::OutPoint {
                    txid: tx.compute_txid(),
                    index: outnum as u16,
                });
            Ok(Opened {
                tx,
                outnum,
                channel_id,
            })
        }
        .await;
        if let Err(e) = &result {
            self.log
                .unusual(&format!("cannot fund channel with {peer}: {e}"));
            self.drop_unfunded(temporary_channel_id, peer, &format!("funding failed: {e}"));
        }
        self.peers.process_events();
        let _ = reply.send(result);
    }

    /// An inbound channel: asks the `openchannel` hook (CLN's payload), then accepts or
    /// rejects. Runs in its own task: a slow plugin stalls only this channel.
    pub(crate) fn on_open_channel_request(self: &Arc<Self>, req: InboundOpen) {
        let InboundOpen {
            temporary_channel_id,
            peer,
            funding_sat,
            push_msat,
            params,
            is_announced,
            channel_type,
        } = req;
        let anchors = channel_type.supports_anchors_zero_fee_htlc_tx();
        let me = self.clone();
        tokio::spawn(async move {
            let mut reject = anchors.then(|| me.short_of_emergency_reserve()).flatten();
            if let Some(why) = &reject {
                me.log.info(&format!("Channel from {peer} rejected: {why}"));
            }
            let mut terms = super::port::OpenTerms::default();
            if reject.is_none() && me.port.asks(Question::Openchannel) {
                let offer = OpenOffer {
                    peer,
                    funding_msat: funding_sat * 1000,
                    push_msat,
                    dust_limit_msat: params.dust_limit_satoshis * 1000,
                    max_htlc_value_in_flight_msat: params.max_htlc_value_in_flight_msat,
                    htlc_minimum_msat: params.htlc_minimum_msat,
                    feerate_per_kw: params.commitment_feerate_sat_per_1000_weight,
                    to_self_delay: params.to_self_delay,
                    max_accepted_htlcs: params.max_accepted_htlcs,
                    announced: is_announced,
                    channel_type,
                };
                match me.port.openchannel(offer).await {
                    Err(no) => {
                        let why = no.message.unwrap_or_else(|| "Rejected by plugin".into());
                        me.log.info(&format!(
                            "Channel from {peer} rejected by plugin {} (openchannel): {why}",
                            no.plugin
                        ));
                        reject = Some(why);
                    }
                    Ok(t) => terms = t,
                }
            }
            let close_to = match terms.close_to.as_deref().map(|a| me.close_to_script(a)) {
                Some(Err(why)) => {
                    me.log.unusual(&format!(
                        "Channel from {peer} rejected: the openchannel hook's close_to {why}"
                    ));
                    reject = Some(format!("close_to {why}"));
                    None
                }
                Some(Ok(script)) => Some(script),
                None => None,
            };
            match reject {
                Some(why) => {
                    let _ = me.manager.force_close_broadcasting_latest_txn(
                        &temporary_channel_id,
                        &peer,
                        why,
                    );
                }
                None => {
                    let uid = u128::from_be_bytes(
                        lightning::sign::EntropySource::get_secure_random_bytes(&*me.keys)[..16]
                            .try_into()
                            .unwrap_or([0; 16]),
                    );
                    // Until its funding arrives, the opener may abandon it.
                    me.ldk_log.opening(temporary_channel_id);
                    if let Some(script) = close_to
                        && let Err(e) = me.remember_close_to(uid, script).await
                    {
                        me.log.unusual(&format!(
                            "cannot keep the openchannel hook's close_to for the channel from {peer}: {e}"
                        ));
                    }
                    let (trusted, overrides) = accept_terms(&terms, funding_sat, anchors);
                    let accepted = match trusted {
                        Some(t) => me.manager.accept_inbound_channel_from_trusted_peer(
                            &temporary_channel_id,
                            &peer,
                            uid,
                            t,
                            overrides,
                        ),
                        None => me.manager.accept_inbound_channel(
                            &temporary_channel_id,
                            &peer,
                            uid,
                            overrides,
                        ),
                    };
                    if let Err(e) = accepted {
                        me.ldk_log.funded(temporary_channel_id);
                        me.log.unusual(&format!(
                            "cannot accept channel from {peer}: {}",
                            super::api_error(&e)
                        ));
                    }
                }
            }
            me.peers.process_events();
        });
    }

    /// The script of an `openchannel` hook's `close_to` address, or why it is refused.
    fn close_to_script(&self, addr: &str) -> Result<ScriptBuf, String> {
        let a: bitcoin::Address<bitcoin::address::NetworkUnchecked> = addr
            .parse()
            .map_err(|_| format!("'{addr}' is not an address"))?;
        let a = a
            .require_network(self.network)
            .map_err(|_| format!("address '{addr}' is not on network {}", self.network))?;
        Ok(a.script_pubkey())
    }

    /// Keeps a channel's `close_to` (by its user channel id) for the closes this node starts.
    async fn remember_close_to(
        &self,
        uid: u128,
        script: ScriptBuf,
    ) -> Result<(), crate::store::StoreError> {
        let key = format!("{uid:032x}");
        self.store
            .with(move |c| {
                c.prepare_cached(
                    "INSERT INTO channel_close_to (user_channel_id, script) VALUES (?1, ?2) \
                     ON CONFLICT (user_channel_id) DO UPDATE SET script = excluded.script",
                )?
                .execute(fulgur_store::sql::params![key, script.as_bytes()])?;
                Ok(())
            })
            .await
    }

    /// The `close_to` an `openchannel` hook gave the channel with user channel id `uid`.
    pub fn close_to(&self, uid: u128) -> Option<ScriptBuf> {
        let key = format!("{uid:032x}");
        self.store
            .with_sync(move |c| {
                use fulgur_store::sql::OptionalExtension;
                Ok(c.prepare_cached(
                    "SELECT script FROM channel_close_to WHERE user_channel_id = ?1",
                )?
                .query_row([key], |r| r.get::<_, Vec<u8>>(0))
                .optional()?)
            })
            .ok()
            .flatten()
            .map(ScriptBuf::from_bytes)
    }

    /// Why an inbound anchor channel must be refused now, if it must: a force close of it
    /// needs wallet coins for its fees (CPFP through the anchor, HTLC transactions), so the
    /// confirmed wallet must hold `--min-emergency-msat` (as LND and ldk-node refuse such
    /// channels without their reserve). An LDK opener then retries without anchors
    /// (static_remote_key: the commitment carries its own fee).
    fn short_of_emergency_reserve(&self) -> Option<String> {
        let need = self.wallet.emergency_sat(true);
        let have = self.wallet.spendable_sat(1);
        (have < need).then(|| {
            format!(
                "anchor channels need min-emergency-msat {need}sat confirmed in our wallet to fee-bump a force close; we have {have}sat"
            )
        })
    }

    /// Outputs of a closed channel that are ours: LDK's sweeper spends them into the wallet
    /// once their timelocks allow, rebroadcasting until they confirm.
    pub(crate) async fn on_spendable_outputs(
        &self,
        outputs: Vec<SpendableOutputDescriptor>,
        channel_id: Option<ChannelId>,
    ) -> Result<(), ReplayEvent> {
        // A cooperative close's output to a wallet address is the wallet's already: LDK
        // reports it, but cannot sign it (see `sweep.rs`).
        let owns = |s: &bitcoin::Script| self.wallet.owns_script(s);
        let (wallets, outputs): (Vec<_>, Vec<_>) = outputs
            .into_iter()
            .partition(|d| super::sweep::wallet_owned(d, &owns));
        for d in &wallets {
            self.log.info(&format!(
                "Output {} of channel {} pays to our wallet already: nothing to sweep",
                d.spendable_outpoint(),
                channel_id.map_or_else(|| "?".to_string(), |c| c.to_string())
            ));
        }
        if outputs.is_empty() {
            return Ok(());
        }
        self.sweeper
            .track_spendable_outputs(outputs, channel_id, None, false, None)
            .map_err(|()| {
                self.log
                    .broken("cannot record spendable outputs; will retry");
                ReplayEvent()
            })
    }

    /// `close`: cooperative close paying into the wallet, or after `unilateral_timeout` a
    /// force close.
    pub fn close_channel(
        &self,
        channel_id: &ChannelId,
        peer: &PublicKey,
        destination: Option<ScriptBuf>,
        force: bool,
    ) -> Result<(), String> {
        if force {
            return self
                .manager
                .force_close_broadcasting_latest_txn(
                    channel_id,
                    peer,
                    "Forcibly closed by `close` command timeout".into(),
                )
                .map_err(|e| super::api_error(&e));
        }
        // An `openchannel` hook's `close_to`, as CLN, when the caller gives no destination.
        let close_to = || {
            let uid = self
                .manager
                .list_channels()
                .into_iter()
                .find(|c| c.channel_id == *channel_id)?
                .user_channel_id;
            self.close_to(uid)
        };
        let script = match destination.or_else(close_to) {
            Some(s) => s,
            None => self
                .channels
                .destination_script()
                .map_err(|()| "no wallet address".to_string())?,
        };
        let shutdown = lightning::ln::script::ShutdownScript::try_from(script)
            .map_err(|_| "destination is not a valid shutdown script".to_string())?;
        self.manager
            .close_channel_with_feerate_and_script(channel_id, peer, None, Some(shutdown))
            .map_err(|e| super::api_error(&e))?;
        self.peers.process_events();
        Ok(())
    }
}

/// How to accept an inbound channel with the `openchannel` hook's terms: `mindepth` 0 is a
/// zero-conf channel and `reserve` 0 a zero-reserve one (LDK allows it on anchor channels
/// only; elsewhere the smallest reserve LDK keeps applies); other values override our
/// handshake settings for this channel.
fn accept_terms(
    terms: &super::port::OpenTerms,
    funding_sat: u64,
    anchors: bool,
) -> (
    Option<lightning::ln::channelmanager::TrustedChannelFeatures>,
    Option<lightning::util::config::ChannelConfigOverrides>,
) {
    use lightning::ln::channelmanager::TrustedChannelFeatures as T;
    let zero_conf = terms.mindepth == Some(0);
    let zero_reserve = terms.reserve_sat == Some(0) && anchors;
    let trusted = match (zero_conf, zero_reserve) {
        (true, true) => Some(T::ZeroConfZeroReserve),
        (true, false) => Some(T::ZeroConf),
        (false, true) => Some(T::ZeroReserve),
        (false, false) => None,
    };
    let mut h = lightning::util::config::ChannelHandshakeConfigUpdate::default();
    if let Some(d) = terms.mindepth.filter(|d| *d > 0) {
        h.minimum_depth = Some(d);
    }
    if let Some(r) = terms.reserve_sat.filter(|r| *r > 0)
        && funding_sat > 0
    {
        let ppm = (u128::from(r) * 1_000_000).div_ceil(u128::from(funding_sat));
        h.channel_reserve_proportional_millionths =
            Some(u32::try_from(ppm.min(1_000_000)).unwrap_or(1_000_000));
    }
    let changed = h.minimum_depth.is_some() || h.channel_reserve_proportional_millionths.is_some();
    let overrides = changed.then_some(lightning::util::config::ChannelConfigOverrides {
        handshake_overrides: Some(h),
        update_overrides: None,
    });
    (trusted, overrides)
}
