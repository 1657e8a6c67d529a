//! CLN's network events: connections made (`connect`, with how long an outgoing one took),
//! lost (`disconnect`, with how long it lasted) and failed attempts (`connect_fail`, with
//! why). They are written in the order they happen by one task reading a queue, so the
//! peer manager's callbacks (which hold LDK's locks) only enqueue.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bitcoin::secp256k1::PublicKey;
use tokio::sync::mpsc;

use crate::store::netevents::{self, Kind, NetworkEvent};
use crate::store::{Store, StoreError};

/// The queue to the writer, and when each connected peer connected.
pub struct NetworkEvents {
    tx: mpsc::UnboundedSender<NetworkEvent>,
    connected_at: Mutex<HashMap<PublicKey, Instant>>,
    clock: std::sync::Arc<dyn fulgur_base::clock::Clock>,
}

impl NetworkEvents {
    /// Starts the writer on `store` (on the current runtime).
    pub(crate) fn start(
        store: Store,
        log: crate::log::SourceLog,
        clock: std::sync::Arc<dyn fulgur_base::clock::Clock>,
    ) -> NetworkEvents {
        let (tx, mut rx) = mpsc::unbounded_channel::<NetworkEvent>();
        tokio::spawn(async move {
            while let Some(e) = rx.recv().await {
                if let Err(err) = store.with(move |c| netevents::add(c, &e)).await {
                    log.unusual(&format!("cannot record a network event: {err}"));
                }
            }
        });
        NetworkEvents {
            tx,
            connected_at: Mutex::new(HashMap::new()),
            clock,
        }
    }

    fn record(
        &self,
        peer: PublicKey,
        kind: Kind,
        reason: Option<String>,
        took: Option<Duration>,
        attempted: Option<bool>,
    ) {
        let _ = self.tx.send(NetworkEvent {
            timestamp: self.clock.unix_now(),
            peer_id: peer.to_string(),
            kind,
            reason,
            duration_nsec: took.map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)),
            connect_attempted: attempted,
        });
    }

    /// A connection to `peer` is up; `took`: how long our outgoing attempt took.
    pub(crate) fn connected(&self, peer: PublicKey, took: Option<Duration>) {
        super::lock(&self.connected_at).insert(peer, Instant::now());
        self.record(peer, Kind::Connect, None, took, None);
    }

    /// Our attempt to connect to `peer` failed after `took`.
    pub(crate) fn connect_failed(&self, peer: PublicKey, why: String, took: Duration) {
        self.record(peer, Kind::ConnectFail, Some(why), Some(took), Some(true));
    }

    /// The connection to `peer` is gone.
    pub(crate) fn disconnected(&self, peer: PublicKey) {
        let since = super::lock(&self.connected_at).remove(&peer);
        self.record(
            peer,
            Kind::Disconnect,
            None,
            since.map(|t| t.elapsed()),
            None,
        );
    }
}

impl super::Lightning {
    /// `listnetworkevents`: the events of `peer` (all without), from `start`, at most `limit`.
    pub async fn network_events(
        &self,
        peer: Option<PublicKey>,
        start: u64,
        limit: Option<u32>,
    ) -> Result<Vec<(u64, NetworkEvent)>, StoreError> {
        let peer = peer.map(|p| p.to_string());
        self.store
            .with(move |c| netevents::list(c, peer.as_deref(), start, limit))
            .await
    }

    /// `delnetworkevent`: whether event `created_index` existed (it is gone now).
    pub async fn delete_network_event(&self, created_index: u64) -> Result<bool, StoreError> {
        self.store
            .with(move |c| netevents::delete(c, created_index))
            .await
    }
}
