//! CLN's `coin_movement` notification: every finalized movement of our funds, numbered by
//! a persistent `created_index` (the `coin_movements` counter).

use fulgur_base::hex;
use serde_json::{Value, json};

use super::Lightning;

/// One movement.
pub struct Movement<'a> {
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
    pub payment_hash: Option<&'a [u8; 32]>,
    /// Fees for channel movements.
    pub fees_msat: Option<u64>,
    /// The output a chain movement is about (CLN requires it for `chain_mvt`).
    pub utxo: Option<ChainOutput>,
    /// The peer for chain movements.
    pub peer_id: Option<String>,
}

/// The on-chain side of a `chain_mvt`: CLN requires all three.
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
        if !self.plugins.has_subscriber("coin_movement") {
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
    pub(crate) async fn coin_movement(&self, m: Movement<'_>) {
        // Nobody listening: no numbering, no database write on the payment path.
        if !self.plugins.has_subscriber("coin_movement") {
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
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let coin = match self.network {
            bitcoin::Network::Bitcoin => "bc",
            bitcoin::Network::Regtest => "bcrt",
            _ => "tb",
        };
        let mut o = serde_json::Map::new();
        o.insert("version".into(), json!(2));
        o.insert("coin_type".into(), json!(coin));
        o.insert("node_id".into(), json!(self.keys_node_id().to_string()));
        o.insert("type".into(), json!(m.kind));
        o.insert("created_index".into(), json!(index));
        o.insert("account_id".into(), json!(m.account));
        o.insert("credit_msat".into(), json!(m.credit_msat));
        o.insert("debit_msat".into(), json!(m.debit_msat));
        o.insert("timestamp".into(), json!(now));
        o.insert("primary_tag".into(), json!(m.tag));
        if let Some(h) = m.payment_hash {
            o.insert("payment_hash".into(), Value::String(hex(h)));
        }
        // CLN requires fees_msat on every channel movement (0 when there are none).
        match m.fees_msat {
            Some(f) => {
                o.insert("fees_msat".into(), json!(f));
            }
            None if m.kind == "channel_mvt" => {
                o.insert("fees_msat".into(), json!(0));
            }
            None => {}
        }
        if let Some(u) = m.utxo {
            o.insert("utxo".into(), Value::String(u.outpoint));
            o.insert("output_msat".into(), json!(u.output_msat));
            o.insert("blockheight".into(), json!(u.blockheight));
        }
        if let Some(peer) = m.peer_id {
            o.insert("peer_id".into(), Value::String(peer));
        }
        let p = Value::Object(o);
        self.plugins.notify("coin_movement", p);
    }
}
