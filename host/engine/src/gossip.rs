//! Gossip validation: a channel announcement is accepted only if its funding output exists
//! on chain and is unspent (BOLT 7), looked up through the chain backend, without blocking
//! LDK's message handling (`UtxoResult::Async`). This also gives `listchannels` each
//! channel's capacity.

use std::sync::Arc;
use std::time::Duration;

use bitcoin::constants::ChainHash;
use lightning::routing::utxo::{UtxoFuture, UtxoLookup, UtxoLookupError, UtxoResult};
use lightning::util::wakers::Notifier;

use super::LdkLog;
use crate::chain::Chain;
use crate::chain::backend::Backend;

/// Delays between attempts when the backend cannot answer (busy, restarting, or a peer's
/// announcement arrived before our chain source has the block): about half a minute in all,
/// which LDK's asynchronous lookup allows without holding up other gossip.
const RETRY_DELAYS_MS: [u64; 5] = [500, 1_000, 2_000, 4_000, 8_000];

/// One lookup attempt's time limit.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);

/// Looks up channels' funding outputs on chain.
pub struct ChainUtxos {
    chain: Arc<Chain>,
    network: bitcoin::Network,
    handle: tokio::runtime::Handle,
    log: super::Log,
}

impl ChainUtxos {
    /// A lookup over `chain` (on `network`), run on the current runtime.
    pub fn new(chain: Arc<Chain>, network: bitcoin::Network, log: super::Log) -> ChainUtxos {
        ChainUtxos {
            chain,
            network,
            handle: tokio::runtime::Handle::current(),
            log,
        }
    }
}

impl UtxoLookup for ChainUtxos {
    fn get_utxo(&self, chain_hash: &ChainHash, scid: u64, notifier: Arc<Notifier>) -> UtxoResult {
        if *chain_hash != ChainHash::using_genesis_block(self.network) {
            return UtxoResult::Sync(Err(UtxoLookupError::UnknownChain));
        }
        let Some(backend) = self.chain.backend() else {
            return UtxoResult::Sync(Err(UtxoLookupError::UnknownTx));
        };
        let fut = UtxoFuture::new(notifier);
        let done = fut.clone();
        let (height, txindex, vout) = (
            (scid >> 40) as u32,
            ((scid >> 16) & 0xff_ffff) as usize,
            (scid & 0xffff) as u32,
        );
        let log = self.log.clone();
        self.handle.spawn(async move {
            done.resolve(lookup_with_retries(&backend, &log, scid, height, txindex, vout).await);
        });
        UtxoResult::Async(fut)
    }
}

/// Looks up the output, retrying when the backend fails; a definite "no such output" or
/// "spent" answer is final at once.
async fn lookup_with_retries(
    backend: &Backend,
    log: &LdkLog,
    scid: u64,
    height: u32,
    txindex: usize,
    vout: u32,
) -> Result<bitcoin::TxOut, UtxoLookupError> {
    let scid_text = super::scid_string(scid);
    let mut last_error = String::new();
    for delay in RETRY_DELAYS_MS.iter().map(|ms| Some(*ms)).chain([None]) {
        match tokio::time::timeout(ATTEMPT_TIMEOUT, backend.utxo(height, txindex, vout)).await {
            Ok(Ok(Some(out))) => return Ok(out),
            Ok(Ok(None)) => {
                log.log.debug(&format!(
                    "gossip: {scid_text} has no unspent funding output; announcement refused"
                ));
                return Err(UtxoLookupError::UnknownTx);
            }
            Ok(Err(e)) => last_error = e,
            Err(_) => last_error = format!("no answer within {ATTEMPT_TIMEOUT:?}"),
        }
        let Some(ms) = delay else { break };
        log.log.debug(&format!("gossip: looking up {scid_text}'s funding output failed ({last_error}); retrying in {ms} ms"));
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    log.log.unusual(&format!("gossip: could not look up {scid_text}'s funding output ({last_error}); announcement dropped until it is sent again"));
    Err(UtxoLookupError::UnknownTx)
}

/// Why `addgossip` refused a message.
#[derive(Debug, thiserror::Error)]
pub enum AddGossipError {
    /// Not a gossip message we can read.
    #[error("{0}")]
    Malformed(String),
    /// The graph refused it (bad signature, unknown channel, ...), with LDK's reason in
    /// CLN's words where CLN has some.
    #[error("{0}")]
    Refused(String),
}

/// LDK's words for a message taken once a check under way ends.
const PENDING: &[&str] = &[
    "Channel being checked async",
    "Awaiting channel_announcement validation",
];

/// BOLT 7 message types.
const CHANNEL_ANNOUNCEMENT: u16 = 256;
const NODE_ANNOUNCEMENT: u16 = 257;
const CHANNEL_UPDATE: u16 = 258;

impl super::Lightning {
    /// `addgossip`: feeds one gossip message (type and body, as on the wire) to the graph,
    /// as if a peer had sent it. Messages the graph already has, or takes once a pending
    /// check ends (a channel's funding output being looked up), are accepted: as CLN says,
    /// it is best effort.
    pub fn add_gossip(&self, msg: &[u8]) -> Result<(), AddGossipError> {
        use lightning::ln::msgs::{self, ErrorAction, RoutingMessageHandler};
        use lightning::util::ser::LengthReadable;
        let (ty, mut body) = match msg {
            [a, b, rest @ ..] => (u16::from_be_bytes([*a, *b]), rest),
            _ => return Err(AddGossipError::Malformed("Message too short".into())),
        };
        let bad = |what: &str, e: msgs::DecodeError| {
            AddGossipError::Malformed(format!("Malformed {what}: {e:?}"))
        };
        let outcome = match ty {
            CHANNEL_ANNOUNCEMENT => {
                let m = msgs::ChannelAnnouncement::read_from_fixed_length_buffer(&mut body)
                    .map_err(|e| bad("channel_announcement", e))?;
                self.gossip.handle_channel_announcement(None, &m).map(drop)
            }
            NODE_ANNOUNCEMENT => {
                let m = msgs::NodeAnnouncement::read_from_fixed_length_buffer(&mut body)
                    .map_err(|e| bad("node_announcement", e))?;
                self.gossip.handle_node_announcement(None, &m).map(drop)
            }
            CHANNEL_UPDATE => {
                let m = msgs::ChannelUpdate::read_from_fixed_length_buffer(&mut body)
                    .map_err(|e| bad("channel_update", e))?;
                self.gossip.handle_channel_update(None, &m).map(drop)
            }
            other => {
                return Err(AddGossipError::Malformed(format!(
                    "Unknown gossip type {other}"
                )));
            }
        };
        match outcome {
            Ok(()) => Ok(()),
            // Duplicates, and what waits for a check that is under way.
            Err(e)
                if matches!(
                    e.action,
                    ErrorAction::IgnoreError | ErrorAction::IgnoreDuplicateGossip
                ) || PENDING.iter().any(|p| e.err.starts_with(p)) =>
            {
                self.log.debug(&format!("addgossip: {}", e.err));
                Ok(())
            }
            Err(e) if e.err.starts_with("Invalid signature") => {
                Err(AddGossipError::Refused(format!("Bad signature: {}", e.err)))
            }
            Err(e) => Err(AddGossipError::Refused(e.err)),
        }
    }

    /// Every gossip message the graph keeps (channel announcements, the latest update of
    /// each direction, node announcements), as on the wire: `dev gossip`, for tests that
    /// feed them to another node with `addgossip`.
    pub fn raw_gossip(&self) -> Vec<Vec<u8>> {
        use lightning::routing::gossip::NodeAnnouncementInfo;
        use lightning::util::ser::Writeable;
        let with_type = |ty: u16, body: Vec<u8>| {
            let mut v = ty.to_be_bytes().to_vec();
            v.extend(body);
            v
        };
        let graph = self.graph.network().read_only();
        let mut out = vec![];
        for (_, c) in graph.channels().unordered_iter() {
            if let Some(a) = &c.announcement_message {
                out.push(with_type(CHANNEL_ANNOUNCEMENT, a.encode()));
            }
            for dir in [&c.one_to_two, &c.two_to_one].into_iter().flatten() {
                if let Some(u) = &dir.last_update_message {
                    out.push(with_type(CHANNEL_UPDATE, u.encode()));
                }
            }
        }
        for (_, n) in graph.nodes().unordered_iter() {
            if let Some(NodeAnnouncementInfo::Relayed(a)) = &n.announcement_info {
                out.push(with_type(NODE_ANNOUNCEMENT, a.encode()));
            }
        }
        out
    }
}
