//! What the engine tells the node's plugins and what it asks them, as typed values.
//!
//! The engine knows neither CLN's JSON nor the plugin host (docs/adr/0009-host-crates.md):
//! it raises a [`Notice`] and asks through [`Port`]'s methods, and the node implements
//! [`Port`] with its plugin host, which turns each notice into CLN's notification and each
//! question into CLN's hook payload (`host/rpc/src/plugin_port.rs`).

use std::future::Future;
use std::pin::Pin;

use bitcoin::Txid;
use bitcoin::secp256k1::PublicKey;
use serde::{Deserialize, Serialize};

use super::forwards::Forward;
use super::htlcs::Verdict;
use super::movements::Movement;
use super::payments::Sendpay;

/// A future a [`Port`] answers with.
pub type Answer<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// A notification topic the engine checks before doing work only listeners would read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Topic {
    /// `forward_event`.
    ForwardEvent,
    /// `coin_movement`.
    CoinMovement,
    /// `balance_snapshot`.
    BalanceSnapshot,
}

/// Something that happened, for the plugins that subscribed to it (CLN's topics).
#[derive(Debug, Clone)]
pub enum Notice {
    /// `connect`: a peer connected (`address` as LDK saw it, empty when unknown).
    Connect {
        /// The peer.
        id: PublicKey,
        /// Whether it connected to us.
        inbound: bool,
        /// Its socket address.
        address: String,
    },
    /// `disconnect`.
    Disconnect {
        /// The peer.
        id: PublicKey,
    },
    /// `channel_opened`: a peer opened a channel to us.
    ChannelOpened {
        /// The peer.
        peer: PublicKey,
        /// The channel's value.
        funding_msat: u64,
        /// The funding transaction.
        funding_txid: Txid,
    },
    /// `channel_state_changed`.
    ChannelStateChanged(StateChange),
    /// `balance_snapshot`: the wallet's confirmed coins and our side of each usable
    /// channel, at a block.
    BalanceSnapshot(BalanceSnapshot),
    /// `forward_event`: a forward was offered or resolved (`payment_hash` when known).
    Forward(Forward, Option<[u8; 32]>),
    /// `coin_movement`, numbered.
    CoinMovement(NumberedMovement),
    /// `sendpay_success`: a part completed.
    SendpaySuccess(Sendpay),
    /// `sendpay_failure`: a part failed.
    SendpayFailure(Sendpay),
    /// `invoice_payment`: an invoice was paid.
    InvoicePaid {
        /// The invoice's label.
        label: String,
        /// The preimage released.
        preimage: [u8; 32],
        /// What was received.
        msat: u64,
        /// The output that paid it on chain (`txid:vout`), for an on-chain payment.
        outpoint: Option<String>,
    },
    /// `invoice_creation`.
    InvoiceCreated {
        /// The invoice's label.
        label: String,
        /// Its preimage, when the node knows it.
        preimage: Option<[u8; 32]>,
        /// Its amount, unless "any".
        msat: Option<u64>,
    },
    /// `htlc_deadline` (a Fulgur topic): a held HTLC reached its deadline and was failed.
    HtlcDeadline {
        /// The held HTLC's id (`fwd:…` or `recv:…`).
        id: String,
        /// Its payment hash.
        payment_hash: [u8; 32],
        /// The deadline height.
        deadline_blockheight: u32,
    },
}

/// A channel's state changed (`channel_state_changed`, in CLN's state names).
#[derive(Debug, Clone)]
pub struct StateChange {
    /// The peer.
    pub peer_id: String,
    /// The channel id, hex.
    pub channel_id: String,
    /// The short channel id, once there is one.
    pub short_channel_id: Option<String>,
    /// The state before, unless the channel is new.
    pub old_state: Option<String>,
    /// The state now.
    pub new_state: String,
    /// CLN's cause (`user`, `remote`, `onchain`, ...).
    pub cause: String,
    /// Why.
    pub message: String,
}

/// A coin movement with its persistent number.
#[derive(Debug, Clone)]
pub struct NumberedMovement {
    /// Its `created_index`.
    pub index: i64,
    /// When (seconds since the epoch).
    pub timestamp: u64,
    /// Our node id.
    pub node_id: PublicKey,
    /// The network (CLN's `coin_type`).
    pub network: bitcoin::Network,
    /// The movement.
    pub movement: Movement,
}

/// A question for the plugins: whether any plugin would answer it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Question {
    /// `peer_connected`.
    PeerConnected,
    /// `openchannel`.
    Openchannel,
    /// `invoice_payment`.
    InvoicePayment,
    /// `htlc_accepted`, for this kind of HTLC.
    HtlcAccepted(HtlcKind),
    /// `commitment_revocation`.
    CommitmentRevocation,
}

/// A commitment of the peer's that it revoked, with the penalty that spends its `to_local`
/// output, for `commitment_revocation`.
#[derive(Debug, Clone, PartialEq)]
pub struct Revocation {
    /// The channel.
    pub channel_id: [u8; 32],
    /// The revoked commitment.
    pub commitment_txid: Txid,
    /// The signed penalty transaction.
    pub penalty_tx: bitcoin::Transaction,
    /// The commitment's number, from 0 (CLN's `commitnum`).
    pub commitnum: u64,
}

/// What an HTLC is, for `htlc_accepted`'s filters (a Fulgur extension).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HtlcKind {
    /// A forward.
    Forward,
    /// A payment to us.
    Receive,
}

/// A peer that connected, for `peer_connected`.
#[derive(Debug, Clone)]
pub struct PeerInfo {
    /// The peer.
    pub id: PublicKey,
    /// Whether it connected to us.
    pub inbound: bool,
    /// Its socket address (empty when unknown).
    pub addr: String,
    /// Its init features, hex.
    pub features: String,
    /// Our address as the peer sees it (its `init`'s `remote_addr`), when it says.
    pub remote_addr: Option<String>,
}

/// A channel a peer offers, for `openchannel`.
#[derive(Debug, Clone)]
pub struct OpenOffer {
    /// The peer.
    pub peer: PublicKey,
    /// The channel's value.
    pub funding_msat: u64,
    /// What the peer pushes to us.
    pub push_msat: u64,
    /// The peer's dust limit.
    pub dust_limit_msat: u64,
    /// The peer's limit on HTLC value in flight.
    pub max_htlc_value_in_flight_msat: u64,
    /// The peer's smallest HTLC.
    pub htlc_minimum_msat: u64,
    /// The commitment feerate.
    pub feerate_per_kw: u32,
    /// The peer's `to_self_delay`.
    pub to_self_delay: u16,
    /// The peer's limit on HTLCs.
    pub max_accepted_htlcs: u16,
    /// Whether the channel is to be announced.
    pub announced: bool,
    /// The channel type.
    pub channel_type: lightning::types::features::ChannelTypeFeatures,
}

/// What `openchannel`'s plugins asked of a channel they let through (CLN's `continue`
/// fields).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OpenTerms {
    /// Where a mutual close started by this node pays our side (an address).
    pub close_to: Option<String>,
    /// Confirmations before the channel is usable (0: zero-conf).
    pub mindepth: Option<u32>,
    /// The reserve the opener must keep, in satoshis.
    pub reserve_sat: Option<u64>,
}

/// A `balance_snapshot` (CLN's bookkeeping notification).
#[derive(Debug, Clone, PartialEq)]
pub struct BalanceSnapshot {
    /// Our node id.
    pub node_id: PublicKey,
    /// The chain's height.
    pub blockheight: u32,
    /// Seconds since the epoch.
    pub timestamp: u64,
    /// (account, balance in msat): `wallet`, then each channel by its id (hex).
    pub accounts: Vec<(String, u64)>,
    /// The network's BIP 173 prefix for Lightning (`bc`, `tb`, `tbs`, `bcrt`).
    pub coin_type: &'static str,
}

/// A plugin that said no, and its message.
#[derive(Debug, Clone, PartialEq)]
pub struct Refusal {
    /// The plugin's short name.
    pub plugin: String,
    /// Its message, if it gave one.
    pub message: Option<String>,
}

/// One HTLC part as `htlc_accepted` sees it, stored with a held HTLC so that a restart asks
/// again (the stored form is CLN's payload plus `deadline_blockheight`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HtlcAsk {
    /// The peer the HTLC came from.
    pub peer_id: String,
    /// The onion as far as LDK exposes it.
    pub onion: HtlcOnion,
    /// The HTLC.
    pub htlc: HtlcPart,
    /// The height at which the core fails the HTLC itself.
    pub deadline_blockheight: u32,
    /// The channel id (hex) of the next channel, for a forward.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forward_to: Option<String>,
}

/// The onion part of [`HtlcAsk`]. LDK does not expose the raw onion: `payload` is rebuilt
/// from the fields LDK gives ([`crate::htlcs::onion_payload`]), `next_onion` is empty and
/// `shared_secret` is all zeros.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HtlcOnion {
    /// The hop's payload (length and TLV stream, hex), rebuilt.
    pub payload: String,
    /// `tlv`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The next channel, for a forward.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub short_channel_id: Option<String>,
    /// What to forward (or what this part carries).
    pub forward_msat: u64,
    /// The outgoing CLTV.
    pub outgoing_cltv_value: u32,
    /// The payment's total, for a payment to us.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_msat: Option<u64>,
    /// The next onion (empty).
    pub next_onion: String,
    /// The shared secret (zeros).
    pub shared_secret: String,
    /// The payment secret, hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payment_secret: Option<String>,
    /// The payment metadata, hex, when the payer sent some.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payment_metadata: Option<String>,
}

impl HtlcOnion {
    /// A TLV onion as far as LDK shows it: what to forward and the outgoing CLTV.
    pub fn opaque(forward_msat: u64, outgoing_cltv_value: u32) -> HtlcOnion {
        HtlcOnion {
            payload: String::new(),
            kind: "tlv".into(),
            short_channel_id: None,
            forward_msat,
            outgoing_cltv_value,
            total_msat: None,
            next_onion: String::new(),
            shared_secret: "00".repeat(32),
            payment_secret: None,
            payment_metadata: None,
        }
    }
}

/// The HTLC part of [`HtlcAsk`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HtlcPart {
    /// The incoming channel.
    pub short_channel_id: String,
    /// The HTLC's id in it.
    pub id: u64,
    /// Its amount.
    pub amount_msat: u64,
    /// Its expiry.
    pub cltv_expiry: u32,
    /// Blocks until its expiry.
    pub cltv_expiry_relative: u32,
    /// The payment hash, hex.
    pub payment_hash: String,
}

/// The node's plugins as the engine sees them. Every method returns at once or with a
/// future the engine awaits in its own task; none may block.
pub trait Port: Send + Sync + 'static {
    /// Whether any plugin subscribed to `topic`.
    fn listens(&self, topic: Topic) -> bool;
    /// Tells the subscribers of the notice's topic.
    fn tell(&self, notice: Notice);
    /// Whether any plugin would answer `question`.
    fn asks(&self, question: Question) -> bool;
    /// `peer_connected`: `Some` when a plugin wants the peer disconnected.
    fn peer_connected(&self, peer: PeerInfo) -> Answer<Option<Refusal>>;
    /// `openchannel`: accept (with what the plugins asked of the channel) or reject.
    fn openchannel(&self, offer: OpenOffer) -> Answer<Result<OpenTerms, Refusal>>;
    /// `invoice_payment`: `Some` when a plugin rejects the payment (its message is the
    /// BOLT 4 failure message, hex, if it gave one).
    fn invoice_payment(
        &self,
        label: String,
        preimage: [u8; 32],
        msat: u64,
    ) -> Answer<Option<Refusal>>;
    /// `custommsg` (the answer changes nothing: the message was already received).
    fn custommsg(&self, peer: PublicKey, ty: u16, payload: String) -> Answer<()>;
    /// `htlc_accepted` for one part: the verdict and the plugins that died holding it.
    fn htlc_accepted(&self, kind: HtlcKind, ask: HtlcAsk) -> Answer<(Verdict, Vec<String>)>;
    /// `commitment_revocation`: resolves once every plugin on the chain answered.
    fn commitment_revocation(&self, revocation: Revocation) -> Answer<()>;
    /// Bumped whenever a plugin becomes active (answered `init`).
    fn activations(&self) -> tokio::sync::watch::Receiver<u64>;
    /// The feature bits plugins' manifests set (big-endian): `init`, `node`, `channel`,
    /// `invoice`.
    fn featurebits(&self) -> [Vec<u8>; 4];
    /// Whether a plugin declared even peer message type `ty` (`custommessages`).
    fn wants_custom_message(&self, ty: u16) -> bool;
}

/// A port with no plugins that remembers what it was told (unit tests of the services).
#[cfg(test)]
#[derive(Default)]
pub(crate) struct Told(pub std::sync::Mutex<Vec<Notice>>);

#[cfg(test)]
impl Told {
    /// What it was told so far.
    pub(crate) fn notices(&self) -> Vec<Notice> {
        super::lock(&self.0).clone()
    }
}

#[cfg(test)]
impl Port for Told {
    fn listens(&self, _: Topic) -> bool {
        true
    }
    fn tell(&self, notice: Notice) {
        super::lock(&self.0).push(notice);
    }
    fn asks(&self, _: Question) -> bool {
        false
    }
    fn peer_connected(&self, _: PeerInfo) -> Answer<Option<Refusal>> {
        Box::pin(async { None })
    }
    fn openchannel(&self, _: OpenOffer) -> Answer<Result<OpenTerms, Refusal>> {
        Box::pin(async { Ok(OpenTerms::default()) })
    }
    fn invoice_payment(&self, _: String, _: [u8; 32], _: u64) -> Answer<Option<Refusal>> {
        Box::pin(async { None })
    }
    fn custommsg(&self, _: PublicKey, _: u16, _: String) -> Answer<()> {
        Box::pin(async {})
    }
    fn htlc_accepted(&self, _: HtlcKind, _: HtlcAsk) -> Answer<(Verdict, Vec<String>)> {
        Box::pin(async { (Verdict::Continue, vec![]) })
    }
    fn commitment_revocation(&self, _: Revocation) -> Answer<()> {
        Box::pin(async {})
    }
    fn featurebits(&self) -> [Vec<u8>; 4] {
        Default::default()
    }
    fn wants_custom_message(&self, _: u16) -> bool {
        false
    }
    fn activations(&self) -> tokio::sync::watch::Receiver<u64> {
        tokio::sync::watch::channel(0).1
    }
}
