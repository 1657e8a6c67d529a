//! CLN's `coin_movement` notification: every finalized movement of our funds, numbered by
//! a persistent `created_index` (the `coin_movements` counter).

use fulgur_base::hex;

use super::Lightning;
use super::port::{BalanceSnapshot, Notice, NumberedMovement, Topic};

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
    /// CLN's extra tags (`opener` on the opener's `channel_open`).
    pub extra_tags: Vec<&'static str>,
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
    /// account.
    pub(crate) fn htlc_account(&self, hash: &[u8; 32], inbound: bool) -> String {
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

    /// Records `m` (`listchainmoves`/`listchannelmoves`; its row is its `created_index`)
    /// and notifies it.
    pub(crate) async fn coin_movement(&self, m: Movement) {
        let now = self.clock.unix_now();
        let row = m.clone();
        let recorded = self
            .store
            .with(move |c| {
                crate::store::relaxed(c, |c| match &row.utxo {
                    Some(u) if row.kind == "chain_mvt" => {
                        crate::store::moves::add_chain(c, &chain_move(&row, u, now))
                    }
                    _ => crate::store::moves::add_channel(c, &channel_move(&row, now)),
                })
            })
            .await;
        let index = match recorded {
            Ok(i) => i,
            Err(e) => {
                self.log.broken(&format!(
                    "cannot record coin movement {} {} of {}: {e}",
                    m.kind, m.tag, m.account
                ));
                return;
            }
        };
        if !self.port.listens(Topic::CoinMovement) {
            return;
        }
        self.port.tell(Notice::CoinMovement(NumberedMovement {
            index: i64::try_from(index).unwrap_or(i64::MAX),
            timestamp: now,
            node_id: self.keys_node_id(),
            network: self.network,
            movement: m,
        }));
    }
}

/// `m` as a `listchainmoves` row.
fn chain_move(m: &Movement, u: &ChainOutput, now: u64) -> crate::store::moves::ChainMove {
    crate::store::moves::ChainMove {
        account_id: m.account.clone(),
        primary_tag: m.tag.into(),
        extra_tags: m.extra_tags.iter().map(|t| t.to_string()).collect(),
        credit_msat: m.credit_msat,
        debit_msat: m.debit_msat,
        timestamp: now,
        utxo: u.outpoint.clone(),
        output_msat: u.output_msat,
        blockheight: u.blockheight,
        peer_id: m.peer_id.clone(),
        payment_hash: m.payment_hash.map(|h| hex(&h)),
        ..Default::default()
    }
}

/// `m` as a `listchannelmoves` row.
fn channel_move(m: &Movement, now: u64) -> crate::store::moves::ChannelMove {
    crate::store::moves::ChannelMove {
        account_id: m.account.clone(),
        primary_tag: m.tag.into(),
        credit_msat: m.credit_msat,
        debit_msat: m.debit_msat,
        timestamp: now,
        fees_msat: m.fees_msat.unwrap_or(0),
        payment_hash: m.payment_hash.map(|h| hex(&h)),
        part_id: None,
        group_id: None,
    }
}

/// The Lightning prefix of BIP 173 for `network` (CLN's `coin_type`).
fn coin_type(network: bitcoin::Network) -> &'static str {
    match network {
        bitcoin::Network::Bitcoin => "bc",
        bitcoin::Network::Signet => "tbs",
        bitcoin::Network::Regtest => "bcrt",
        _ => "tb",
    }
}

/// Sends `balance_snapshot` as CLN does: once the chain is synced at start, then at every new
/// block, while a plugin subscribes. Ends with the engine.
pub(crate) async fn balance_snapshots(
    engine: std::sync::Weak<Lightning>,
    mut heights: tokio::sync::watch::Receiver<u32>,
) {
    loop {
        let height = *heights.borrow_and_update();
        if height > 0 {
            let Some(e) = engine.upgrade() else { return };
            if e.port.listens(Topic::BalanceSnapshot) {
                e.port
                    .tell(Notice::BalanceSnapshot(e.balance_snapshot(height)));
            }
        }
        if heights.changed().await.is_err() {
            return;
        }
    }
}

impl Lightning {
    /// The balances CLN's `balance_snapshot` reports: the wallet's confirmed coins (reserved
    /// ones too), and our side of every channel that is usable or closing cooperatively
    /// (not one still waiting for lock-in, nor one closed).
    pub fn balance_snapshot(&self, blockheight: u32) -> BalanceSnapshot {
        use lightning::ln::channel_state::ChannelShutdownState as S;
        let wallet_msat: u64 = self
            .wallet
            .list_funds(false)
            .iter()
            .filter(|f| f.status == fulgur_wallet::Status::Confirmed)
            .map(|f| f.value.to_sat() * 1000)
            .sum();
        let mut accounts = vec![("wallet".to_string(), wallet_msat)];
        for c in self.manager.list_channels() {
            let usable = c.is_channel_ready
                && !matches!(c.channel_shutdown_state, Some(S::ShutdownComplete));
            if usable {
                accounts.push((hex(&c.channel_id.0), self.to_us_msat(&c)));
            }
        }
        BalanceSnapshot {
            node_id: self.manager.get_our_node_id(),
            blockheight,
            timestamp: self.clock.unix_now(),
            accounts,
            coin_type: coin_type(self.network),
        }
    }
}
