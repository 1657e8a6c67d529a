//! CLN's record of balance changes (`listchainmoves`, `listchannelmoves`): every finalized
//! movement of our funds on chain (wallet deposits and withdrawals, channel opens and
//! closes) and inside channels (payments sent and received, forwards), kept in the order
//! made. The row id is the move's `created_index`, also carried by its `coin_movement`
//! notification, so a plugin (the bookkeeper) can read what it missed and follow the rest.

use crate::sql::{Connection, params};

use super::StoreError;

/// A balance change on chain (a row of `listchainmoves`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ChainMove {
    /// `wallet`, or the channel id (hex) of the channel concerned.
    pub account_id: String,
    /// CLN's primary tag (`deposit`, `withdrawal`, `channel_open`, `channel_close`, ...).
    pub primary_tag: String,
    /// CLN's extra tags (`opener`, ...).
    pub extra_tags: Vec<String>,
    /// Credited msat.
    pub credit_msat: u64,
    /// Debited msat.
    pub debit_msat: u64,
    /// Seconds since the epoch.
    pub timestamp: u64,
    /// The output concerned, `txid:vout`.
    pub utxo: String,
    /// That output's whole value.
    pub output_msat: u64,
    /// The height of the block it happened in.
    pub blockheight: u32,
    /// The channel's peer, for channel accounts.
    pub peer_id: Option<String>,
    /// Where an external deposit came from.
    pub originating_account: Option<String>,
    /// The transaction that spent `utxo` (withdrawals).
    pub spending_txid: Option<String>,
    /// The payment concerned, if any (HTLC outputs).
    pub payment_hash: Option<String>,
    /// The number of outputs of the transaction (closes).
    pub output_count: Option<u32>,
}

/// A balance change inside a channel (a row of `listchannelmoves`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ChannelMove {
    /// The channel id (hex).
    pub account_id: String,
    /// CLN's primary tag (`invoice`, `routed`, `pushed`, ...).
    pub primary_tag: String,
    /// Credited msat.
    pub credit_msat: u64,
    /// Debited msat.
    pub debit_msat: u64,
    /// Seconds since the epoch.
    pub timestamp: u64,
    /// Fees paid (sent payments) or earned (forwards).
    pub fees_msat: u64,
    /// The payment's hash (hex).
    pub payment_hash: Option<String>,
    /// The payment part.
    pub part_id: Option<u64>,
    /// The payment attempt group.
    pub group_id: Option<u64>,
}

fn msat(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn unsigned(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

/// Records `m`; its `created_index`.
pub fn add_chain(c: &Connection, m: &ChainMove) -> Result<u64, StoreError> {
    // Tags are CLN's words, never with a comma.
    let tags = m.extra_tags.join(",");
    c.prepare_cached(
        "INSERT INTO chainmoves (account_id, primary_tag, extra_tags, credit_msat, debit_msat,
            timestamp, utxo, output_msat, blockheight, peer_id, originating_account,
            spending_txid, payment_hash, output_count)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
    )?
    .execute(params![
        m.account_id,
        m.primary_tag,
        tags,
        msat(m.credit_msat),
        msat(m.debit_msat),
        msat(m.timestamp),
        m.utxo,
        msat(m.output_msat),
        m.blockheight,
        m.peer_id,
        m.originating_account,
        m.spending_txid,
        m.payment_hash,
        m.output_count,
    ])?;
    Ok(unsigned(c.last_insert_rowid()))
}

/// Records `m`; its `created_index`.
pub fn add_channel(c: &Connection, m: &ChannelMove) -> Result<u64, StoreError> {
    c.prepare_cached(
        "INSERT INTO channelmoves (account_id, primary_tag, credit_msat, debit_msat, timestamp,
            fees_msat, payment_hash, part_id, group_id)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )?
    .execute(params![
        m.account_id,
        m.primary_tag,
        msat(m.credit_msat),
        msat(m.debit_msat),
        msat(m.timestamp),
        msat(m.fees_msat),
        m.payment_hash,
        m.part_id.map(msat),
        m.group_id.map(msat),
    ])?;
    Ok(unsigned(c.last_insert_rowid()))
}

/// Chain moves from `created_index` `start` on, at most `limit`, in order.
pub fn chain_moves(
    c: &Connection,
    start: u64,
    limit: Option<u32>,
) -> Result<Vec<(u64, ChainMove)>, StoreError> {
    let mut stmt = c.prepare_cached(
        "SELECT id, account_id, primary_tag, extra_tags, credit_msat, debit_msat, timestamp,
            utxo, output_msat, blockheight, peer_id, originating_account, spending_txid,
            payment_hash, output_count
         FROM chainmoves WHERE id >= ?1 ORDER BY id LIMIT ?2",
    )?;
    let rows = stmt.query_map(
        params![msat(start), limit.map_or(i64::MAX, i64::from)],
        |r| {
            let tags: String = r.get(3)?;
            Ok((
                unsigned(r.get(0)?),
                ChainMove {
                    account_id: r.get(1)?,
                    primary_tag: r.get(2)?,
                    extra_tags: tags
                        .split(',')
                        .filter(|t| !t.is_empty())
                        .map(str::to_string)
                        .collect(),
                    credit_msat: unsigned(r.get(4)?),
                    debit_msat: unsigned(r.get(5)?),
                    timestamp: unsigned(r.get(6)?),
                    utxo: r.get(7)?,
                    output_msat: unsigned(r.get(8)?),
                    blockheight: r.get(9)?,
                    peer_id: r.get(10)?,
                    originating_account: r.get(11)?,
                    spending_txid: r.get(12)?,
                    payment_hash: r.get(13)?,
                    output_count: r.get(14)?,
                },
            ))
        },
    )?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Channel moves from `created_index` `start` on, at most `limit`, in order.
pub fn channel_moves(
    c: &Connection,
    start: u64,
    limit: Option<u32>,
) -> Result<Vec<(u64, ChannelMove)>, StoreError> {
    let mut stmt = c.prepare_cached(
        "SELECT id, account_id, primary_tag, credit_msat, debit_msat, timestamp, fees_msat,
            payment_hash, part_id, group_id
         FROM channelmoves WHERE id >= ?1 ORDER BY id LIMIT ?2",
    )?;
    let rows = stmt.query_map(
        params![msat(start), limit.map_or(i64::MAX, i64::from)],
        |r| {
            Ok((
                unsigned(r.get(0)?),
                ChannelMove {
                    account_id: r.get(1)?,
                    primary_tag: r.get(2)?,
                    credit_msat: unsigned(r.get(3)?),
                    debit_msat: unsigned(r.get(4)?),
                    timestamp: unsigned(r.get(5)?),
                    fees_msat: unsigned(r.get(6)?),
                    payment_hash: r.get(7)?,
                    part_id: r.get::<_, Option<i64>>(8)?.map(unsigned),
                    group_id: r.get::<_, Option<i64>>(9)?.map(unsigned),
                },
            ))
        },
    )?;
    Ok(rows.collect::<Result<_, _>>()?)
}
