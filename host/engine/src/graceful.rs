//! `graceful`, as CLN's: make the node ready to be stopped without stranding an HTLC. From
//! the first call on (until the node stops) no new forward is accepted, channel peers are
//! not reconnected, and every connected peer whose channels carry no HTLC is disconnected;
//! the command waits until no HTLC is left and no peer is connected. A peer that reconnects
//! to settle its HTLCs may (CLN lets it too), and is disconnected once idle.

use std::sync::atomic::Ordering;

use bitcoin::secp256k1::PublicKey;
use lightning::ln::channel_state::{InboundHTLCStateDetails, OutboundHTLCStateDetails};

use super::Lightning;

/// An HTLC's state as LDK reports it.
#[derive(Debug, Clone, PartialEq)]
pub enum HtlcState {
    /// Offered to us.
    In(Option<InboundHTLCStateDetails>),
    /// Offered by us.
    Out(Option<OutboundHTLCStateDetails>),
}

/// An HTLC still in a channel.
#[derive(Debug, Clone, PartialEq)]
pub struct PendingHtlc {
    /// Its CLTV expiry.
    pub expiry: u32,
    /// Its state (and so its direction).
    pub state: HtlcState,
    /// The channel's peer.
    pub peer: PublicKey,
    /// Whether that peer is connected.
    pub connected: bool,
}

/// What `graceful` still waits for.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GracefulStatus {
    /// The HTLCs in our channels.
    pub htlcs: Vec<PendingHtlc>,
    /// The peers still connected.
    pub connected: Vec<PublicKey>,
}

impl GracefulStatus {
    /// Nothing left: the node may stop.
    pub fn done(&self) -> bool {
        self.htlcs.is_empty() && self.connected.is_empty()
    }
}

impl Lightning {
    /// Whether `graceful` was called.
    pub fn is_graceful(&self) -> bool {
        self.graceful.load(Ordering::Acquire)
    }

    /// Enters the graceful state (for the rest of the process's life).
    pub fn begin_graceful(&self) {
        if !self.graceful.swap(true, Ordering::AcqRel) {
            self.log
                .unusual("JSON-RPC graceful: preventing more connections");
        }
    }

    /// Disconnects the connected peers whose channels carry no HTLC, and reports what is
    /// left (the peers connected when it was called among them).
    pub fn graceful_step(&self) -> GracefulStatus {
        let chans = self.manager.list_channels();
        let busy = |p: &PublicKey| {
            chans.iter().any(|c| {
                c.counterparty.node_id == *p
                    && (!c.pending_inbound_htlcs.is_empty() || !c.pending_outbound_htlcs.is_empty())
            })
        };
        // As CLN, peers being disconnected now still count as connected in this report.
        let mut connected = vec![];
        for p in self.peers.list_peers() {
            let id = p.counterparty_node_id;
            connected.push(id);
            if !busy(&id) {
                self.log
                    .debug(&format!("Disconnecting {id}: graceful shutdown"));
                self.peers.disconnect_by_node_id(id);
            }
        }
        let mut htlcs = vec![];
        for c in &chans {
            let peer = c.counterparty.node_id;
            let up = self.peers.peer_by_node_id(&peer).is_some();
            let ins = c
                .pending_inbound_htlcs
                .iter()
                .map(|h| (h.cltv_expiry, HtlcState::In(h.state.clone())));
            let outs = c
                .pending_outbound_htlcs
                .iter()
                .map(|h| (h.cltv_expiry, HtlcState::Out(h.state.clone())));
            htlcs.extend(ins.chain(outs).map(|(expiry, state)| PendingHtlc {
                expiry,
                state,
                peer,
                connected: up,
            }));
        }
        GracefulStatus { htlcs, connected }
    }
}
