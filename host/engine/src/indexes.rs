//! CLN's `created`, `updated` and `deleted` indexes of the listable tables (`wait`): the
//! highest `created_index` ever given (SQLite's `AUTOINCREMENT` sequence, so deleting the
//! newest row does not lower it) and the per-subsystem counters in `index_counters`.

use fulgur_store::sql::{Connection, Engine, OptionalExtension};

/// A table with CLN's indexes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Indexed {
    /// `listinvoices`.
    Invoices,
    /// `listsendpays`.
    Sendpays,
    /// `listforwards`.
    Forwards,
    /// `listchainmoves` (created only).
    Chainmoves,
    /// `listchannelmoves` (created only).
    Channelmoves,
    /// `listnetworkevents` (created and deleted).
    Networkevents,
}

impl Indexed {
    /// CLN's subsystem name, which is also the table's and its `index_counters` key.
    pub fn name(self) -> &'static str {
        match self {
            Indexed::Invoices => "invoices",
            Indexed::Sendpays => "sendpays",
            Indexed::Forwards => "forwards",
            Indexed::Chainmoves => "chainmoves",
            Indexed::Channelmoves => "channelmoves",
            Indexed::Networkevents => "networkevents",
        }
    }

    /// PostgreSQL's sequence for its `created_index` (its BIGSERIAL key).
    fn sequence(self) -> &'static str {
        match self {
            Indexed::Invoices => "invoices_created_index_seq",
            Indexed::Sendpays => "sendpays_created_index_seq",
            Indexed::Forwards => "forwards_created_index_seq",
            Indexed::Chainmoves => "chainmoves_id_seq",
            Indexed::Channelmoves => "channelmoves_id_seq",
            Indexed::Networkevents => "networkevents_id_seq",
        }
    }

    /// The subsystem called `name`.
    pub fn parse(name: &str) -> Option<Indexed> {
        [
            Indexed::Invoices,
            Indexed::Sendpays,
            Indexed::Forwards,
            Indexed::Chainmoves,
            Indexed::Channelmoves,
            Indexed::Networkevents,
        ]
        .into_iter()
        .find(|i| i.name() == name)
    }
}

/// The three indexes' current values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Indexes {
    /// Objects ever created.
    pub created: u64,
    /// Changes ever made.
    pub updated: u64,
    /// Objects ever deleted.
    pub deleted: u64,
}

/// The current indexes of `table`.
pub fn read(conn: &Connection, table: Indexed) -> fulgur_store::sql::Result<Indexes> {
    let created: i64 = match conn.engine() {
        Engine::Sqlite => conn
            .prepare_cached("SELECT seq FROM sqlite_sequence WHERE name = ?1")?
            .query_row([table.name()], |r| r.get(0))
            .optional()?
            .unwrap_or(0),
        // The sequence of the table's BIGSERIAL key (the migrations' AUTOINCREMENT).
        Engine::Postgres => conn
            .prepare_cached(&format!(
                "SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM {}",
                table.sequence()
            ))?
            .query_row([], |r| r.get(0))?,
    };
    let (updated, deleted): (i64, i64) = conn
        .prepare_cached("SELECT updated, deleted FROM index_counters WHERE subsystem = ?1")?
        .query_row([table.name()], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?
        .unwrap_or((0, 0));
    let u = |v: i64| u64::try_from(v).unwrap_or(0);
    Ok(Indexes {
        created: u(created),
        updated: u(updated),
        deleted: u(deleted),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_survives_deleting_the_newest_and_counters_are_read() {
        let c = Connection::open_in_memory().expect("db");
        c.execute_batch(
            "CREATE TABLE index_counters (subsystem TEXT PRIMARY KEY,
                 updated INTEGER NOT NULL DEFAULT 0, deleted INTEGER NOT NULL DEFAULT 0);
             CREATE TABLE invoices (created_index INTEGER PRIMARY KEY AUTOINCREMENT, x);",
        )
        .expect("schema");
        assert_eq!(
            read(&c, Indexed::Invoices).expect("read"),
            Indexes::default()
        );
        c.execute_batch(
            "INSERT INTO invoices (x) VALUES (1), (2), (3);
             DELETE FROM invoices WHERE created_index = 3;
             INSERT INTO index_counters VALUES ('invoices', 4, 1);",
        )
        .expect("rows");
        assert_eq!(
            read(&c, Indexed::Invoices).expect("read"),
            Indexes {
                created: 3,
                updated: 4,
                deleted: 1
            }
        );
        assert_eq!(Indexed::parse("sendpays"), Some(Indexed::Sendpays));
        assert_eq!(Indexed::parse("htlcs"), None);
    }
}
