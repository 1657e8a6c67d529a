//! The rows behind CLN's runes: each rune the node created, by unique id, with when it last
//! passed `checkrune`; and the blacklisted id ranges. What a rune means is the engine's
//! (`fulgur_engine::runes`); this only stores text and numbers.

use crate::sql::{Connection, OptionalExtension, params};

use super::StoreError;

/// One stored rune: its text and when it last passed a check (nanoseconds since 1970).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRune {
    /// Its unique id.
    pub id: u64,
    /// The rune as created (base64).
    pub rune: String,
    /// When it last passed `checkrune`, if ever.
    pub last_used_nanos: Option<u64>,
}

fn row(r: &crate::sql::Row<'_>) -> crate::sql::Result<StoredRune> {
    Ok(StoredRune {
        id: r.get::<_, i64>(0)? as u64,
        rune: r.get(1)?,
        last_used_nanos: r.get::<_, Option<i64>>(2)?.map(|n| n as u64),
    })
}

/// The next unique id: one more than the highest stored, 0 when none is.
pub fn next_id(conn: &Connection) -> Result<u64, StoreError> {
    let n: i64 = conn.query_row("SELECT COALESCE(MAX(id), -1) + 1 FROM runes", [], |r| {
        r.get(0)
    })?;
    Ok(n as u64)
}

/// Stores a new rune under `id`.
pub fn insert(conn: &Connection, id: u64, rune: &str) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO runes (id, rune) VALUES (?1, ?2)",
        params![id as i64, rune],
    )?;
    Ok(())
}

/// The rune stored under `id`, if any.
pub fn get(conn: &Connection, id: u64) -> Result<Option<StoredRune>, StoreError> {
    Ok(conn
        .query_row(
            "SELECT id, rune, last_used_nsec FROM runes WHERE id = ?1",
            params![id as i64],
            row,
        )
        .optional()?)
}

/// Every stored rune, by id.
pub fn list(conn: &Connection) -> Result<Vec<StoredRune>, StoreError> {
    let mut stmt = conn.prepare("SELECT id, rune, last_used_nsec FROM runes ORDER BY id")?;
    let rows = stmt.query_map([], row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Records that the rune of `id` passed a check at `nanos` (nothing without such a rune).
pub fn set_last_used(conn: &Connection, id: u64, nanos: u64) -> Result<(), StoreError> {
    conn.execute(
        "UPDATE runes SET last_used_nsec = ?1 WHERE id = ?2",
        params![i64::try_from(nanos).unwrap_or(i64::MAX), id as i64],
    )?;
    Ok(())
}

/// The blacklisted ranges (inclusive), by start.
pub fn blacklist(conn: &Connection) -> Result<Vec<(u64, u64)>, StoreError> {
    let mut stmt =
        conn.prepare("SELECT start_index, end_index FROM runes_blacklist ORDER BY start_index")?;
    let rows = stmt.query_map([], |r| {
        Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64))
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Replaces the blacklist with `ranges`, in one transaction.
pub fn set_blacklist(conn: &mut Connection, ranges: &[(u64, u64)]) -> Result<(), StoreError> {
    let tx = conn.transaction()?;
    tx.execute("DELETE FROM runes_blacklist", [])?;
    for (start, end) in ranges {
        tx.execute(
            "INSERT INTO runes_blacklist (start_index, end_index) VALUES (?1, ?2)",
            params![*start as i64, *end as i64],
        )?;
    }
    tx.commit()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runes_and_blacklist_are_kept() {
        let store = crate::Store::in_memory().unwrap_or_else(|e| panic!("{e}"));
        store
            .with_sync(|c| {
                assert_eq!(next_id(c)?, 0);
                insert(c, 0, "a")?;
                insert(c, 1, "b")?;
                assert_eq!(next_id(c)?, 2);
                set_last_used(c, 1, 5)?;
                set_last_used(c, 7, 5)?;
                assert_eq!(
                    get(c, 1)?,
                    Some(StoredRune {
                        id: 1,
                        rune: "b".into(),
                        last_used_nanos: Some(5)
                    })
                );
                assert_eq!(get(c, 7)?, None);
                assert_eq!(list(c)?.len(), 2);
                set_blacklist(c, &[(0, 2), (5, 5)])?;
                set_blacklist(c, &[(1, 3)])?;
                assert_eq!(blacklist(c)?, vec![(1, 3)]);
                Ok(())
            })
            .unwrap_or_else(|e| panic!("{e}"));
    }
}
