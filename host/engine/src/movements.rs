//! CLN's `coin_movement` notification: every finalized movement of our funds, numbered by
//! a persistent `created_index` (the `coin_movements` counter).

use fulgur_base::hex;

use super::Lightning;
use super::port::{Notice, NumberedMovement, Topic};

/// One movement.
#[derive(Debug, Clone)]
pub struct Movement {
    /// `channel_mvt` or `chain_mvt`.
    pub kind: &'static str,
    /// The account: a channel id (hex) or `wallet`.
    pub account: String,
    /// Credited msat.
    pub credit_msat: u64,
    /// Debited msat.
    pub debit_msat: u64,
    /// CLN's primary tag (`invoice`, `routed`, `channel_open`, `channel_close`, ...).
    pub tag: &'static str,
    /// Payment hash for channel movements.
    pub payment_hash: Option<[u8; 32]>,
    /// Fees for channel movements.
    pub fees_msat: Option<u64>,
    /// The output a chain movement is about (CLN requires it for `chain_mvt`).
    pub utxo: Option<ChainOutput>,
    /// The peer for chain movements.
    pub peer_id: Option<String>,
}

/// The on-chain side of a `chain_mvt`: CLN requires all three.
#[derive(Debug, Clone)]
pub struct ChainOutput {
    /// `txid:vout`.
    pub outpoint: String,
    /// The output's whole value.
    pub output_msat: u64,
    /// The height of the block the movement happened in.
    pub blockheight: u32,
}

impl Lightning {
    /// The channel carrying an HTLC with `hash` (inbound or outbound), as a movement's
    /// account; empty when nobody listens to `coin_movement` (the lookup is skipped).
    pub(crate) fn htlc_account(&self, hash: &[u8; 32], inbound: bool) -> String {
        if !self.port.listens(Topic::CoinMovement) {
            return String::new();
        }
        self.manager
            .list_channels()
            .into_iter()
            .find(|c| {
                if inbound {
                    c.pending_inbound_htlcs
                        .iter()
                        .any(|h| h.payment_hash.0 == *hash)
                } else {
                    c.pending_outbound_htlcs
                        .iter()
                        .any(|h| h.payment_hash.0 == *hash)
                }
            })
            .map(|c| hex(&c.channel_id.0))
            .unwrap_or_else(|| "unknown".into())
    }

    /// Numbers `m` and notifies it.
    pub(crate) async fn coin_movement(&self, m: Movement) {
        // Nobody listening: no numbering, no database write on the payment path.
        if !self.port.listens(Topic::CoinMovement) {
            return;
        }
        let index = self
            .store
            .with(|c| {
                crate::store::relaxed(c, |c| {
                    Ok(super::forwards::next_updated(c, "coin_movements")?)
                })
            })
            .await
            .unwrap_or(0);
        let now = self.clock.unix_now();
        self.port.tell(Notice::CoinMovement(NumberedMovement {
            index,
            timestamp: now,
            node_id: self.keys_node_id(),
            network: self.network,
            movement: m,
        }));
    }
}
