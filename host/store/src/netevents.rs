//! CLN's log of connections (`listnetworkevents`, `delnetworkevent`): every connection made
//! or lost and every failed attempt to connect, with when, how long and why. The row id is
//! the event's `created_index`; deletions count in `index_counters` (`wait networkevents
//! deleted`).

use crate::sql::{Connection, params};

use super::StoreError;

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A connection was made (either direction).
    Connect,
    /// An attempt to connect failed.
    ConnectFail,
    /// A connection was lost.
    Disconnect,
    /// A ping's round trip.
    Ping,
}

impl Kind {
    /// CLN's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Connect => "connect",
            Kind::ConnectFail => "connect_fail",
            Kind::Disconnect => "disconnect",
            Kind::Ping => "ping",
        }
    }

    fn parse(s: &str) -> Kind {
        match s {
            "connect_fail" => Kind::ConnectFail,
            "disconnect" => Kind::Disconnect,
            "ping" => Kind::Ping,
            _ => Kind::Connect,
        }
    }
}

/// One event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkEvent {
    /// Seconds since the epoch.
    pub timestamp: u64,
    /// The peer (hex node id).
    pub peer_id: String,
    /// What happened.
    pub kind: Kind,
    /// Why, when known.
    pub reason: Option<String>,
    /// How long: the attempt (connects), or the connection (disconnects).
    pub duration_nsec: Option<u64>,
    /// For a failed connect: whether an address was tried at all.
    pub connect_attempted: Option<bool>,
}

fn signed(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn unsigned(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

/// Records `e`; its `created_index`.
pub fn add(c: &Connection, e: &NetworkEvent) -> Result<u64, StoreError> {
    c.prepare_cached(
        "INSERT INTO networkevents (timestamp, peer_id, type, reason, duration_nsec,
            connect_attempted) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![
        signed(e.timestamp),
        e.peer_id,
        e.kind.as_str(),
        e.reason,
        e.duration_nsec.map(signed),
        e.connect_attempted,
    ])?;
    Ok(unsigned(c.last_insert_rowid()))
}

/// Events of `peer` (all peers without), from `created_index` `start` on, at most `limit`.
pub fn list(
    c: &Connection,
    peer: Option<&str>,
    start: u64,
    limit: Option<u32>,
) -> Result<Vec<(u64, NetworkEvent)>, StoreError> {
    let mut stmt = c.prepare_cached(
        "SELECT id, timestamp, peer_id, type, reason, duration_nsec, connect_attempted
         FROM networkevents WHERE id >= ?1 AND (CAST(?2 AS TEXT) IS NULL OR peer_id = ?2)
         ORDER BY id LIMIT ?3",
    )?;
    let rows = stmt.query_map(
        params![signed(start), peer, limit.map_or(i64::MAX, i64::from)],
        |r| {
            let kind: String = r.get(3)?;
            Ok((
                unsigned(r.get(0)?),
                NetworkEvent {
                    timestamp: unsigned(r.get(1)?),
                    peer_id: r.get(2)?,
                    kind: Kind::parse(&kind),
                    reason: r.get(4)?,
                    duration_nsec: r.get::<_, Option<i64>>(5)?.map(unsigned),
                    connect_attempted: r.get(6)?,
                },
            ))
        },
    )?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Deletes event `created_index`; whether it existed.
pub fn delete(c: &Connection, created_index: u64) -> Result<bool, StoreError> {
    let n = c
        .prepare_cached("DELETE FROM networkevents WHERE id = ?1")?
        .execute([signed(created_index)])?;
    if n > 0 {
        c.prepare_cached(
            "INSERT INTO index_counters (subsystem, deleted) VALUES ('networkevents', 1)
             ON CONFLICT (subsystem) DO UPDATE SET deleted = index_counters.deleted + 1",
        )?
        .execute([])?;
    }
    Ok(n > 0)
}
