//! Our own BDK persister: every change a BDK wallet stages is appended as one JSON row in
//! `wallet_changesets`; loading merges the rows in id order (BDK's `Merge`), and compacts
//! them to one row when there were several.

use std::collections::HashMap;
use std::str::FromStr;

use bdk_wallet::ChangeSet;
use bdk_wallet::chain::Merge;
use bitcoin::{OutPoint, Txid};
use fulgur_store::sql::{Connection, params};

use fulgur_store::StoreError;

/// What the database holds for the wallet.
#[derive(Default)]
pub struct Loaded {
    /// Merged changeset per wallet name, and how many rows it came from.
    pub changesets: HashMap<String, (ChangeSet, usize)>,
    /// Position of known transactions in their block.
    pub txindex: HashMap<Txid, u32>,
    /// Reserved coins: until which height, and whether a fee bump spends them.
    pub reservations: Vec<Reservation>,
}

/// A reserved coin, the height its reservation ends, and whether an anchor channel's fee
/// bump spends it.
pub type Reservation = (OutPoint, u32, bool);

fn corrupt(what: impl std::fmt::Display) -> StoreError {
    StoreError::Task(format!("wallet data is corrupt: {what}"))
}

/// Reads and merges every row.
pub fn load(conn: &Connection) -> Result<Loaded, StoreError> {
    let mut out = Loaded::default();
    let mut stmt = conn.prepare("SELECT wallet, changeset FROM wallet_changesets ORDER BY id")?;
    let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
    for row in rows {
        let (name, json) = row?;
        let cs: ChangeSet = serde_json::from_str(&json).map_err(corrupt)?;
        let e = out.changesets.entry(name).or_default();
        e.0.merge(cs);
        e.1 += 1;
    }
    let mut stmt = conn.prepare("SELECT txid, txindex FROM wallet_txindex")?;
    let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, u32>(1)?)))?;
    for row in rows {
        let (txid, idx) = row?;
        out.txindex
            .insert(Txid::from_str(&txid).map_err(corrupt)?, idx);
    }
    let mut stmt =
        conn.prepare("SELECT outpoint, until_height, fee_bump FROM wallet_reservations")?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, u32>(1)?,
            r.get::<_, bool>(2)?,
        ))
    })?;
    for row in rows {
        let (op, until, bump) = row?;
        out.reservations
            .push((OutPoint::from_str(&op).map_err(corrupt)?, until, bump));
    }
    Ok(out)
}

/// Replaces the rows of `name` by the single merged `cs`.
pub fn compact(conn: &mut Connection, name: &str, cs: &ChangeSet) -> Result<(), StoreError> {
    let json = serde_json::to_string(cs).map_err(corrupt)?;
    let tx = conn.transaction()?;
    tx.execute(
        "DELETE FROM wallet_changesets WHERE wallet = ?1",
        params![name],
    )?;
    tx.execute(
        "INSERT INTO wallet_changesets (wallet, changeset) VALUES (?1, ?2)",
        params![name, json],
    )?;
    tx.commit()?;
    Ok(())
}

/// Appends changesets (in order) and transaction positions, and replaces the reserved coins
/// when `reservations` is given, atomically.
pub fn append(
    conn: &mut Connection,
    sets: &[(&'static str, ChangeSet)],
    txindex: &[(Txid, u32)],
    reservations: Option<&[Reservation]>,
) -> Result<(), StoreError> {
    let tx = conn.transaction()?;
    if let Some(all) = reservations {
        tx.execute("DELETE FROM wallet_reservations", [])?;
        for (op, until, bump) in all {
            tx.execute(
                "INSERT INTO wallet_reservations (outpoint, until_height, fee_bump) VALUES (?1, ?2, ?3)",
                params![op.to_string(), until, bump],
            )?;
        }
    }
    for (name, cs) in sets {
        if cs.is_empty() {
            continue;
        }
        let json = serde_json::to_string(cs).map_err(corrupt)?;
        tx.execute(
            "INSERT INTO wallet_changesets (wallet, changeset) VALUES (?1, ?2)",
            params![name, json],
        )?;
    }
    for (txid, idx) in txindex {
        tx.execute(
            "INSERT INTO wallet_txindex (txid, txindex) VALUES (?1, ?2)
             ON CONFLICT (txid) DO UPDATE SET txindex = excluded.txindex",
            params![txid.to_string(), idx],
        )?;
    }
    tx.commit()?;
    Ok(())
}
