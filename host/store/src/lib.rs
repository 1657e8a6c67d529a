//! The node's SQLite database: one file per node (`<network-dir>/fulgur.sqlite3`),
//! WAL journal and `synchronous=FULL`, so what a call writes is durable before it returns.
//!
//! Schema changes are numbered migrations run at start. [`kv`] is LDK's key-value store on
//! this database; [`datastore`] the plugins' datastore; [`runes`] the rows of CLN's runes.
//! This crate knows SQLite and LDK's storage traits, not the RPC or CLN's JSON
//! (docs/adr/0009-host-crates.md).

#![deny(missing_docs)]
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::string_slice)]

pub mod datastore;
pub mod moves;
pub mod netevents;
pub mod runes;
pub mod sql;

/// Stores a fieldless enum as its name: `text_enum!(Type)` implements [`sql::ToSql`]
/// and [`sql::FromSql`] for a `Type` with `fn as_str(self) -> &'static str` and
/// `fn parse(&str) -> Option<Type>`. A name the type does not know is a conversion error.
#[macro_export]
macro_rules! text_enum {
    ($t:ty) => {
        impl $crate::sql::ToSql for $t {
            fn to_sql(&self) -> $crate::sql::Result<$crate::sql::ToSqlOutput<'_>> {
                Ok(self.as_str().into())
            }
        }

        impl $crate::sql::FromSql for $t {
            fn column_result(v: $crate::sql::ValueRef<'_>) -> $crate::sql::FromSqlResult<Self> {
                let s = v.as_str()?;
                <$t>::parse(s).ok_or_else(|| {
                    $crate::sql::FromSqlError::Other(
                        format!("{}: unknown value {s:?}", stringify!($t)).into(),
                    )
                })
            }
        }
    };
}
pub mod kv;
pub mod lease;

use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};

use sql::{Connection, Engine};

use fulgur_base::log::SourceLog;

/// Migrations, applied in order; the index + 1 is the schema version.
const MIGRATIONS: &[&str] = &[
    // 1: the plugins' datastore. Keys are arrays of strings, stored with each part
    // followed by a NUL byte so that prefix order equals hierarchical order.
    "CREATE TABLE datastore (
        key BLOB PRIMARY KEY,
        data BLOB NOT NULL,
        generation INTEGER NOT NULL
    );",
    // 2: the on-chain wallet. BDK changesets as JSON rows per wallet (`p2tr`, `p2wpkh`),
    // merged in id order on load; and the position of wallet transactions in their block.
    "CREATE TABLE wallet_changesets (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        wallet TEXT NOT NULL,
        changeset TEXT NOT NULL
    );
    CREATE TABLE wallet_txindex (
        txid TEXT PRIMARY KEY,
        txindex INTEGER NOT NULL
    );",
    // 3: the block stream's best block (one row), so a restart resumes from it.
    "CREATE TABLE chain_tip (
        id INTEGER PRIMARY KEY CHECK (id = 0),
        hash TEXT NOT NULL,
        height INTEGER NOT NULL
    );",
    // 4: LDK's key-value store (`kv::SqliteKvStore`): channel manager, monitors,
    // monitor updates, graph, scorer, sweeper. A rowid table, as values can be megabytes.
    "CREATE TABLE ldk_kv (
        primary_namespace TEXT NOT NULL,
        secondary_namespace TEXT NOT NULL,
        key TEXT NOT NULL,
        value BLOB NOT NULL,
        PRIMARY KEY (primary_namespace, secondary_namespace, key)
    );",
    // 5: Lightning bookkeeping LDK does not keep. CLN's index semantics: `created_index`
    // never reused, `updated_index` bumped from one counter per subsystem on every change,
    // `pay_index` assigned in payment order (so `waitanyinvoice` is a queue).
    "CREATE TABLE index_counters (
        subsystem TEXT PRIMARY KEY,
        updated INTEGER NOT NULL DEFAULT 0,
        deleted INTEGER NOT NULL DEFAULT 0
    );
    CREATE TABLE invoices (
        created_index INTEGER PRIMARY KEY AUTOINCREMENT,
        updated_index INTEGER,
        label TEXT NOT NULL UNIQUE,
        bolt11 TEXT NOT NULL,
        payment_hash BLOB NOT NULL UNIQUE,
        payment_secret BLOB NOT NULL,
        preimage BLOB,
        amount_msat INTEGER,
        description TEXT,
        expires_at INTEGER NOT NULL,
        cltv INTEGER NOT NULL,
        status TEXT NOT NULL DEFAULT 'unpaid',
        pay_index INTEGER UNIQUE,
        amount_received_msat INTEGER,
        paid_at INTEGER
    );
    CREATE TABLE sendpays (
        created_index INTEGER PRIMARY KEY AUTOINCREMENT,
        updated_index INTEGER,
        payment_hash BLOB NOT NULL,
        groupid INTEGER NOT NULL,
        partid INTEGER NOT NULL,
        destination BLOB,
        amount_msat INTEGER,
        amount_sent_msat INTEGER NOT NULL,
        created_at INTEGER NOT NULL,
        completed_at INTEGER,
        status TEXT NOT NULL,
        preimage BLOB,
        label TEXT,
        bolt11 TEXT,
        description TEXT,
        error TEXT,
        UNIQUE (payment_hash, groupid, partid)
    );
    CREATE TABLE forwards (
        created_index INTEGER PRIMARY KEY AUTOINCREMENT,
        updated_index INTEGER,
        payment_hash BLOB,
        in_channel TEXT NOT NULL,
        in_htlc_id INTEGER,
        in_msat INTEGER NOT NULL,
        out_channel TEXT,
        out_msat INTEGER,
        status TEXT NOT NULL,
        failcode INTEGER,
        failreason TEXT,
        received_time REAL NOT NULL,
        resolved_time REAL
    );
    CREATE TABLE held_htlcs (
        id TEXT PRIMARY KEY,
        kind TEXT NOT NULL,
        payment_hash BLOB NOT NULL,
        payload TEXT NOT NULL,
        deadline_height INTEGER NOT NULL,
        created_at INTEGER NOT NULL
    );",
    // 6: closed channels (`lightning::closed`), kept forever: shown by `listpeerchannels`
    // until forgotten (resolved and 100 blocks deep), then by `listclosedchannels`.
    "CREATE TABLE closed_channels (
        channel_id TEXT PRIMARY KEY,
        peer_id TEXT,
        short_channel_id TEXT,
        funding_txid TEXT NOT NULL,
        funding_outnum INTEGER NOT NULL,
        opener TEXT NOT NULL,
        closer TEXT,
        close_cause TEXT NOT NULL,
        reason TEXT NOT NULL,
        state TEXT NOT NULL,
        total_msat INTEGER NOT NULL,
        final_to_us_msat INTEGER NOT NULL,
        min_to_us_msat INTEGER NOT NULL,
        max_to_us_msat INTEGER NOT NULL,
        closing_txid TEXT,
        closing_fee_msat INTEGER,
        closed_height INTEGER NOT NULL,
        spend_height INTEGER,
        forgotten_height INTEGER,
        closed_at INTEGER NOT NULL,
        snapshot TEXT NOT NULL
    );",
    // 7: indexes for queries on the payment path that scanned their whole table: expiring
    // invoices runs before every invoice read, and a settled or failed forward finds its
    // `offered` row by incoming channel. Both grew linearly with the node's history.
    "CREATE INDEX invoices_by_status_expiry ON invoices (status, expires_at);
     CREATE INDEX forwards_by_in_channel ON forwards (in_channel, status);",
    // 8: wallet coins reserved by a spend not confirmed yet (txprepare, channel funding, an
    // anchor channel's fee bump), until a block height, as CLN's `reserved_til`: a restart
    // must not offer a coin that a fee bump in the mempool spends to another spend.
    "CREATE TABLE wallet_reservations (
        outpoint TEXT PRIMARY KEY,
        until_height INTEGER NOT NULL,
        fee_bump INTEGER NOT NULL
    );",
    // 9: runes (`runes`), as CLN keeps them: each created rune under its unique id, with
    // when it last passed `checkrune` (nanoseconds), and the blacklisted id ranges.
    "CREATE TABLE runes (
        id INTEGER PRIMARY KEY,
        rune TEXT NOT NULL,
        last_used_nsec INTEGER
    );
    CREATE TABLE runes_blacklist (
        start_index INTEGER NOT NULL,
        end_index INTEGER NOT NULL
    );",
    // 10: CLN's record of balance changes (`listchainmoves`, `listchannelmoves`; see
    // `moves`): the row id is the move's `created_index`.
    "CREATE TABLE chainmoves (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        account_id TEXT NOT NULL,
        primary_tag TEXT NOT NULL,
        extra_tags TEXT NOT NULL,
        credit_msat INTEGER NOT NULL,
        debit_msat INTEGER NOT NULL,
        timestamp INTEGER NOT NULL,
        utxo TEXT NOT NULL,
        output_msat INTEGER NOT NULL,
        blockheight INTEGER NOT NULL,
        peer_id TEXT,
        originating_account TEXT,
        spending_txid TEXT,
        payment_hash TEXT,
        output_count INTEGER
    );
    CREATE TABLE channelmoves (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        account_id TEXT NOT NULL,
        primary_tag TEXT NOT NULL,
        credit_msat INTEGER NOT NULL,
        debit_msat INTEGER NOT NULL,
        timestamp INTEGER NOT NULL,
        fees_msat INTEGER NOT NULL,
        payment_hash TEXT,
        part_id INTEGER,
        group_id INTEGER
    );",
    // 11: CLN's log of connections (`listnetworkevents`; see `netevents`).
    "CREATE TABLE networkevents (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        timestamp INTEGER NOT NULL,
        peer_id TEXT NOT NULL,
        type TEXT NOT NULL,
        reason TEXT,
        duration_nsec INTEGER,
        connect_attempted INTEGER
    );",
    // 12: what `listpeerchannels` tells of a channel's past (`lightning::history`): its
    // HTLC counters and its state changes.
    "CREATE TABLE channel_htlc_counts (
        channel_id TEXT PRIMARY KEY,
        in_offered INTEGER NOT NULL DEFAULT 0,
        in_offered_msat INTEGER NOT NULL DEFAULT 0,
        in_fulfilled INTEGER NOT NULL DEFAULT 0,
        in_fulfilled_msat INTEGER NOT NULL DEFAULT 0,
        out_offered INTEGER NOT NULL DEFAULT 0,
        out_offered_msat INTEGER NOT NULL DEFAULT 0,
        out_fulfilled INTEGER NOT NULL DEFAULT 0,
        out_fulfilled_msat INTEGER NOT NULL DEFAULT 0
    );
    CREATE TABLE channel_state_changes (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        channel_id TEXT NOT NULL,
        timestamp_ms INTEGER NOT NULL,
        old_state TEXT NOT NULL,
        new_state TEXT NOT NULL,
        cause TEXT NOT NULL,
        message TEXT NOT NULL
    );",
    // 13: the `close_to` an `openchannel` hook gave an inbound channel, by LDK's user channel
    // id (hex), used when this node closes it without a destination.
    "CREATE TABLE channel_close_to (
        user_channel_id TEXT PRIMARY KEY,
        script BLOB NOT NULL
    );",
    // 14: `--invoices-onchain-fallback`: the wallet address each invoice carries as its
    // fallback (by script), and the output that paid an invoice on chain.
    "CREATE TABLE invoice_fallbacks (
        script BLOB PRIMARY KEY,
        invoice INTEGER NOT NULL
    );
    ALTER TABLE invoices ADD COLUMN paid_outpoint TEXT;",
    // 15: the `commitment_revocation` hook's penalties (CLN's `penalty_bases`): the unsigned
    // justice transaction for each of the peer's commitments until it is revoked, then the
    // signed one until the plugins have it (engine/watchtower.rs).
    "CREATE TABLE penalty_bases (
        channel_id TEXT NOT NULL,
        commitnum INTEGER NOT NULL,
        commitment_txid TEXT NOT NULL,
        value_sat INTEGER NOT NULL,
        tx BLOB NOT NULL,
        signed INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (channel_id, commitnum)
    );",
    // 16: the order closed channels were recorded in (SQLite's rowid, which PostgreSQL
    // has not), for listing those closed in the same second.
    "ALTER TABLE closed_channels ADD COLUMN seq INTEGER;",
    // 17: CLN's `vars`, for `data_version`: the number of transactions delivered to the
    // `db_write` hook, which a backup compares with its own.
    "CREATE TABLE vars (
        name TEXT PRIMARY KEY,
        val TEXT,
        intval INTEGER
    );
    INSERT INTO vars (name, intval) VALUES ('data_version', 0);",
];

/// Statements run on SQLite only, after the migration of that number (1-based): what
/// PostgreSQL, migrated from an empty database, has no rows for.
const SQLITE_AFTER: &[(usize, &str)] = &[(16, "UPDATE closed_channels SET seq = rowid;")];

/// Why the database could not be used.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database engine reported an error.
    #[error("database error: {0}")]
    Db(#[from] sql::Error),
    /// The database was written by a newer fulgurd.
    #[error("database schema version {found} is newer than this fulgurd knows ({known})")]
    TooNew {
        /// Version in the database.
        found: usize,
        /// Newest version we know.
        known: usize,
    },
    /// A blocking task failed.
    #[error("database task failed: {0}")]
    Task(String),
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> StoreError {
        StoreError::Db(e.into())
    }
}

impl StoreError {
    /// Whether the database or the disk under it failed (full, I/O error, read-only,
    /// corrupt; on PostgreSQL, the server gone or the connection lost), rather than a
    /// query: carrying on would leave state unsaved, so callers that cannot hand the error
    /// to a client stop the node ([`fatal`]).
    pub fn is_storage_failure(&self) -> bool {
        match self {
            StoreError::Db(e) => e.is_storage_failure(),
            _ => false,
        }
    }
}

/// The exit code of a node stopped by [`fatal`] (CLN's `fatal()` exits with 1 too).
pub const FATAL_EXIT_CODE: i32 = 1;

/// Stops fulgurd at once because `what` failed (say what could not be saved) (a full disk, an I/O error):
/// logs one BROKEN line (also on stderr, in case the log file is on the full disk) and
/// exits with [`FATAL_EXIT_CODE`]. Nothing after a failed write may act as if it had been
/// saved: LDK's state, a claim's preimage, a spend. SQLite rolls the failed transaction
/// back, and what was committed before is intact, so the next start resumes from there
/// (LDK hands unprocessed events again, held HTLCs are offered to the hooks again).
pub fn fatal(log: &SourceLog, what: &str, err: &dyn std::fmt::Display) -> ! {
    let line = format!(
        "FATAL: {what}: {err}. Stopping now rather than carry on with state unsaved (is the \
         disk full?); what was saved before is intact"
    );
    log.broken(&line);
    eprintln!("{line}");
    std::process::exit(FATAL_EXIT_CODE)
}

/// Runs `f` with `synchronous=NORMAL`. In WAL mode its commit survives a crash or `kill -9`
/// of fulgurd without waiting for an fsync (only a power loss can lose it, until the next
/// `FULL` commit syncs the log). For bookkeeping whose loss costs no funds: forwards and the
/// held-HTLC replay list.
pub fn relaxed<T>(
    c: &mut Connection,
    f: impl FnOnce(&mut Connection) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    // Prepared once per connection: parsing the two pragmas again cost more CPU on the
    // payment path than the writes between them.
    c.set_relaxed(true)?;
    let r = f(c);
    c.set_relaxed(false)?;
    r
}

/// The second file of `sqlite3://MAIN:BACKUP`: each transaction's writes, committed there
/// before the main database commits.
struct SqliteBackup(Mutex<rusqlite::Connection>);

impl sql::WriteHook for SqliteBackup {
    fn deliver(&self, _data_version: u64, writes: &[String]) -> Result<(), String> {
        let c = self
            .0
            .lock()
            .map_err(|_| "backup lock poisoned".to_string())?;
        let apply = || -> rusqlite::Result<()> {
            c.execute_batch("BEGIN")?;
            for w in writes {
                c.execute_batch(w)?;
            }
            c.execute_batch("COMMIT")
        };
        apply().map_err(|e| {
            let _ = c.execute_batch("ROLLBACK");
            format!("cannot write the backup database: {e}")
        })
    }
}

/// Waits for the connection. A runtime worker that has to wait gives its place up first
/// (`block_in_place`): the holder may be waiting for tasks to run (a `db_write` plugin's
/// answer, read by a task), and a worker blocked here would keep the tasks queued on it
/// from running.
fn lock(conn: &Mutex<Connection>) -> Result<std::sync::MutexGuard<'_, Connection>, StoreError> {
    let poisoned = |_| StoreError::Task("database lock poisoned".into());
    match conn.try_lock() {
        Ok(g) => return Ok(g),
        Err(std::sync::TryLockError::Poisoned(_)) => {
            return Err(StoreError::Task("database lock poisoned".into()));
        }
        Err(std::sync::TryLockError::WouldBlock) => {}
    }
    let multi_thread = tokio::runtime::Handle::try_current()
        .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
    if multi_thread {
        tokio::task::block_in_place(|| conn.lock().map_err(poisoned))
    } else {
        conn.lock().map_err(poisoned)
    }
}

/// A handle on the database, cheap to clone. See [`Store::with`] for where queries run.
#[derive(Clone)]
pub struct Store {
    conn: Arc<Mutex<Connection>>,
    /// Where [`Store::fatal`] logs (set once by the node; unset in unit tests).
    fatal_log: Arc<OnceLock<SourceLog>>,
    /// PostgreSQL: what another connection to the same database needs
    /// ([`Store::own_connection`]); shared by every store of the node.
    pg: Option<Arc<PgShared>>,
}

/// The node's PostgreSQL connections and what each must carry: the fence's epoch and the
/// write hooks, whenever they are set.
struct PgShared {
    dsn: String,
    epoch: Mutex<Option<i64>>,
    hooks: Mutex<Vec<Arc<dyn sql::WriteHook>>>,
    conns: Mutex<Vec<Arc<Mutex<Connection>>>>,
}

fn poisoned_lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Store {
    /// Opens (creating if needed) and migrates the SQLite database at `path`.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        Self::setup(Connection::sqlite(rusqlite::Connection::open(path)?))
    }

    /// Connects to the PostgreSQL database `dsn` names and migrates it.
    pub fn open_postgres(dsn: &str) -> Result<Store, StoreError> {
        let mut store = Self::setup(Connection::postgres(dsn)?)?;
        store.pg = Some(Arc::new(PgShared {
            dsn: dsn.to_string(),
            epoch: Mutex::new(None),
            hooks: Mutex::new(vec![]),
            conns: Mutex::new(vec![store.conn.clone()]),
        }));
        Ok(store)
    }

    /// An in-memory database, for tests.
    pub fn in_memory() -> Result<Store, StoreError> {
        Self::setup(Connection::open_in_memory()?)
    }

    /// Makes every later write carry `epoch`, the lease's (PostgreSQL): the fence refuses
    /// it once another node has taken the lease (lease.rs).
    pub fn fence(&self, epoch: i64) -> Result<(), StoreError> {
        let Some(pg) = &self.pg else {
            lock(&self.conn)?.execute_batch(&format!("SET fulgur.epoch = '{epoch}'"))?;
            return Ok(());
        };
        // Every connection of the node, and those opened later (`own_connection`).
        let mut set = poisoned_lock(&pg.epoch);
        for conn in poisoned_lock(&pg.conns).iter() {
            lock(conn)?.execute_batch(&format!("SET fulgur.epoch = '{epoch}'"))?;
        }
        *set = Some(epoch);
        Ok(())
    }

    /// A store on a connection of its own to the same database (PostgreSQL), with the
    /// fence and write hooks of this one, now and later; on SQLite, this store (one
    /// writer at a time there anyway).
    ///
    /// LDK's writes go through one: the channel manager (hundreds of KB under load) and
    /// the monitors no longer hold the connection that invoices, payments and held HTLCs
    /// queue on, and the server writes both at once (docs/PERFORMANCE.md). Each write is
    /// its own transaction on either connection, fenced in that transaction.
    pub fn own_connection(&self) -> Result<Store, StoreError> {
        let Some(pg) = &self.pg else {
            return Ok(self.clone());
        };
        let mut conn = Connection::postgres(&pg.dsn)?;
        // Held while the connection is set up and listed, so that a `fence` or a hook
        // added meanwhile reaches it.
        let epoch = poisoned_lock(&pg.epoch);
        let hooks = poisoned_lock(&pg.hooks);
        if let Some(epoch) = *epoch {
            conn.execute_batch(&format!("SET fulgur.epoch = '{epoch}'"))?;
        }
        for hook in hooks.iter() {
            conn.add_write_hook(hook.clone());
        }
        let conn = Arc::new(Mutex::new(conn));
        poisoned_lock(&pg.conns).push(conn.clone());
        Ok(Store {
            conn,
            fatal_log: self.fatal_log.clone(),
            pg: self.pg.clone(),
        })
    }

    /// Copies every row of the SQLite node database at `src` (migrated first, as a node
    /// start would) into this one, which must be PostgreSQL and hold no node yet: a node
    /// moves to PostgreSQL with its channels. The sequences continue after the copied
    /// rows' (CLN's `created_index` never goes back). One transaction: all or nothing.
    /// Returns the tables copied and their row counts.
    pub fn import_sqlite(&self, src: &Path) -> Result<Vec<(String, usize)>, StoreError> {
        let from = Store::open(src)?;
        let from = lock(&from.conn)?;
        let Some(lite) = from.as_sqlite() else {
            return Err(StoreError::Task("the source is not SQLite".into()));
        };
        let mut to = lock(&self.conn)?;
        if to.engine() != Engine::Postgres {
            return Err(StoreError::Task(
                "importing needs a PostgreSQL --wallet".into(),
            ));
        }
        let tables: Vec<String> = lite
            .prepare(
                "SELECT name FROM sqlite_master WHERE type = 'table' \
                 AND name NOT LIKE 'sqlite_%' ORDER BY name",
            )?
            .query_map([], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        let tx = to.transaction()?;
        for t in ["ldk_kv", "invoices", "sendpays", "wallet_changesets"] {
            let n: i64 = tx.query_row(&format!("SELECT COUNT(*) FROM {t}"), [], |r| r.get(0))?;
            if n > 0 {
                return Err(StoreError::Task(format!(
                    "the PostgreSQL database already holds a node ({t} has {n} rows): \
                     importing needs an empty one"
                )));
            }
        }
        let mut copied = vec![];
        for t in &tables {
            let mut st = lite.prepare(&format!("SELECT * FROM \"{t}\""))?;
            let cols: Vec<String> = st.column_names().iter().map(|c| c.to_string()).collect();
            let marks: Vec<String> = (1..=cols.len()).map(|i| format!("?{i}")).collect();
            let insert = format!(
                "INSERT INTO {t} ({}) VALUES ({})",
                cols.join(", "),
                marks.join(", ")
            );
            // The rows the migrations made (counters, `data_version`) give way to the
            // node's own.
            tx.execute_batch(&format!("DELETE FROM {t}"))?;
            let mut rows = st.query([])?;
            let mut n = 0;
            let mut ins = tx.prepare(&insert)?;
            while let Some(r) = rows.next()? {
                let values: Vec<sql::Value> = (0..cols.len())
                    .map(|i| {
                        r.get_ref(i).map(|v| match v {
                            rusqlite::types::ValueRef::Null => sql::Value::Null,
                            rusqlite::types::ValueRef::Integer(i) => sql::Value::Integer(i),
                            rusqlite::types::ValueRef::Real(f) => sql::Value::Real(f),
                            rusqlite::types::ValueRef::Text(t) => {
                                sql::Value::Text(String::from_utf8_lossy(t).into_owned())
                            }
                            rusqlite::types::ValueRef::Blob(b) => sql::Value::Blob(b.to_vec()),
                        })
                    })
                    .collect::<Result<_, _>>()?;
                ins.execute(sql::params_from_iter(values))?;
                n += 1;
            }
            copied.push((t.clone(), n));
        }
        // The BIGSERIAL sequences go on from SQLite's (which count deleted rows too).
        let seqs: Vec<(String, i64)> = lite
            .prepare("SELECT name, seq FROM sqlite_sequence")?
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<_, _>>()?;
        let serials: Vec<(String, String)> = tx
            .prepare(
                "SELECT table_name, column_name FROM information_schema.columns \
                 WHERE table_schema = current_schema() AND column_default LIKE 'nextval(%'",
            )?
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<_, _>>()?;
        for (table, column) in serials {
            let max: i64 = tx.query_row(
                &format!("SELECT COALESCE(MAX({column}), 0) FROM {table}"),
                [],
                |r| r.get(0),
            )?;
            let seq = seqs
                .iter()
                .find(|(t, _)| *t == table)
                .map_or(0, |(_, s)| *s)
                .max(max);
            if seq > 0 {
                tx.query_row(
                    &format!("SELECT setval(pg_get_serial_sequence('{table}', '{column}'), ?1)"),
                    [seq],
                    |_| Ok(()),
                )?;
            }
        }
        tx.commit()?;
        Ok(copied)
    }

    /// Whether a node's state is already here (channels, invoices, payments or a wallet).
    pub fn holds_a_node(&self) -> Result<bool, StoreError> {
        let c = lock(&self.conn)?;
        for t in ["ldk_kv", "invoices", "sendpays", "wallet_changesets"] {
            let n: i64 = c.query_row(&format!("SELECT COUNT(*) FROM {t}"), [], |r| r.get(0))?;
            if n > 0 {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Sends every write transaction to `hook` too before it commits (CLN's `db_write`).
    pub fn add_write_hook(&self, hook: Arc<dyn sql::WriteHook>) -> Result<(), StoreError> {
        let Some(pg) = &self.pg else {
            lock(&self.conn)?.add_write_hook(hook);
            return Ok(());
        };
        // On every connection of the node: each transaction bumps `data_version` (a row
        // lock held until its commit), so the hook still sees them one at a time, in order.
        let mut hooks = poisoned_lock(&pg.hooks);
        for conn in poisoned_lock(&pg.conns).iter() {
            lock(conn)?.add_write_hook(hook.clone());
        }
        hooks.push(hook);
        Ok(())
    }

    /// Writes every transaction into a second SQLite file too, before it commits here
    /// (CLN's `--wallet=sqlite3://MAIN:BACKUP`). A missing backup is made from this
    /// database first (`VACUUM INTO`); an existing one must be at this database's
    /// `data_version`, or the node does not start: one of them is behind, and which one to
    /// keep is the operator's choice.
    pub fn add_sqlite_backup(&self, path: &Path) -> Result<(), StoreError> {
        let mut c = lock(&self.conn)?;
        let Some(main) = c.as_sqlite() else {
            return Err(StoreError::Task(
                "a backup file needs an SQLite database".into(),
            ));
        };
        if !path.exists() {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)
                    .map_err(|e| StoreError::Task(format!("{}: {e}", dir.display())))?;
            }
            main.execute("VACUUM INTO ?1", [path.to_string_lossy()])?;
        }
        let backup = rusqlite::Connection::open(path)?;
        backup.pragma_update(None, "journal_mode", "WAL")?;
        backup.pragma_update(None, "synchronous", "FULL")?;
        let version = |c: &rusqlite::Connection| -> Result<i64, StoreError> {
            Ok(c.query_row(
                "SELECT intval FROM vars WHERE name = 'data_version'",
                [],
                |r| r.get(0),
            )?)
        };
        let (m, b) = (version(main)?, version(&backup)?);
        if m != b {
            return Err(StoreError::Task(format!(
                "backup database {} is at data_version {b} and the main one at {m}: one of \
                 them is behind (copy the one to keep over the other)",
                path.display()
            )));
        }
        c.add_write_hook(Arc::new(SqliteBackup(Mutex::new(backup))));
        Ok(())
    }

    /// Which engine the node's state is on.
    pub fn engine(&self) -> Result<Engine, StoreError> {
        Ok(lock(&self.conn)?.engine())
    }

    fn setup(mut conn: Connection) -> Result<Store, StoreError> {
        let version = match conn.as_sqlite() {
            Some(c) => {
                c.pragma_update(None, "journal_mode", "WAL")?;
                c.pragma_update(None, "synchronous", "FULL")?;
                c.pragma_update(None, "foreign_keys", "ON")?;
                // Hot statements (LDK writes, payment and invoice rows) are prepared once.
                c.set_prepared_statement_cache_capacity(64);
                c.pragma_query_value(None, "user_version", |r| r.get::<_, usize>(0))?
            }
            None => {
                // Nodes sharing the database (one active, standbys) may start together:
                // one migrates at a time (released when the connection closes, or below).
                conn.execute_batch("SELECT pg_advisory_lock(7092025)")?;
                // PostgreSQL has no user_version: one row of our own, created with the
                // first migration's transaction.
                conn.execute_batch(
                    "CREATE TABLE IF NOT EXISTS fulgur_schema (
                        id BIGINT PRIMARY KEY CHECK (id = 0),
                        version BIGINT NOT NULL
                    );
                    INSERT INTO fulgur_schema VALUES (0, 0) ON CONFLICT DO NOTHING;",
                )?;
                conn.query_row("SELECT version FROM fulgur_schema", [], |r| r.get(0))?
            }
        };
        if version > MIGRATIONS.len() {
            return Err(StoreError::TooNew {
                found: version,
                known: MIGRATIONS.len(),
            });
        }
        let engine = conn.engine();
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(version) {
            let tx = conn.transaction()?;
            match engine {
                Engine::Sqlite => {
                    tx.execute_batch(sql)?;
                    for (_, more) in SQLITE_AFTER.iter().filter(|(n, _)| *n == i + 1) {
                        tx.execute_batch(more)?;
                    }
                    tx.execute_batch(&format!("PRAGMA user_version = {}", i + 1))?;
                }
                Engine::Postgres => {
                    // The fence lets a migration's own rows through (lease.rs).
                    tx.execute_batch("SET LOCAL fulgur.migrating = 'on'")?;
                    tx.execute_batch(&sql::translate::ddl(sql))?;
                    tx.execute("UPDATE fulgur_schema SET version = ?1", [i + 1])?;
                }
            }
            tx.commit()?;
        }
        if engine == Engine::Postgres {
            // The lease and its fence on every table, new tables included.
            conn.execute_batch(lease::SETUP)?;
            conn.execute_batch("SELECT pg_advisory_unlock(7092025)")?;
        }
        Ok(Store {
            conn: Arc::new(Mutex::new(conn)),
            fatal_log: Arc::new(OnceLock::new()),
            pg: None,
        })
    }

    /// Runs `f` with the connection: at once on the calling thread when the connection is
    /// free, else on tokio's blocking pool (so that a worker thread never sleeps waiting
    /// for the lock).
    ///
    /// Nearly every query takes tens of microseconds, less than handing it to the blocking
    /// pool and waking the task again: running them in place cut the CPU a payment costs
    /// by 10–15 % on both ends (docs/PERFORMANCE.md). A long query (a `list*` over a big
    /// table) then occupies its worker for its duration; the connection is taken for that
    /// long anyway, whichever thread runs it.
    pub async fn with<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let f = match self.try_in_place(f) {
            Ok(result) => {
                // A loop of queries must still let the worker's other tasks run, as the
                // trip through the pool did: this yields once the task's budget is spent.
                tokio::task::coop::consume_budget().await;
                return result;
            }
            Err(f) => f,
        };
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || f(&mut *lock(&conn)?))
            .await
            .map_err(|e| StoreError::Task(e.to_string()))?
    }

    /// Runs `f` here if the connection is free (`Ok` with its result), else gives it back.
    fn try_in_place<T, F>(&self, f: F) -> Result<Result<T, StoreError>, F>
    where
        F: FnOnce(&mut Connection) -> Result<T, StoreError>,
    {
        match self.conn.try_lock() {
            Ok(mut guard) => Ok(f(&mut guard)),
            Err(_) => Err(f),
        }
    }

    /// The log [`Store::fatal`] writes to (the node's `lightningd` source). Set once.
    pub fn set_fatal_log(&self, log: SourceLog) {
        let _ = self.fatal_log.set(log);
    }

    /// [`fatal`] for holders of the store that have no log of their own (LDK's key-value
    /// store): stops the node because `what` failed.
    pub fn fatal(&self, what: &str, err: &dyn std::fmt::Display) -> ! {
        match self.fatal_log.get() {
            Some(log) => fatal(log, what, err),
            None => {
                eprintln!("FATAL: {what}: {err}");
                std::process::exit(FATAL_EXIT_CODE)
            }
        }
    }

    /// Runs `f` with the connection on the calling thread, for callers that cannot await
    /// (LDK's synchronous `KVStoreSync`, see [`kv`]). It blocks while another query
    /// holds the connection, so keep `f` short, and never call it from inside [`Store::with`]
    /// (the lock is not re-entrant).
    pub fn with_sync<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        F: FnOnce(&mut Connection) -> Result<T, StoreError>,
    {
        f(&mut *lock(&self.conn)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn synchronous(c: &Connection) -> i64 {
        c.as_sqlite()
            .expect("sqlite")
            .pragma_query_value(None, "synchronous", |r| r.get(0))
            .expect("read synchronous")
    }

    #[test]
    fn relaxed_writes_run_at_normal_and_restore_full_even_after_an_error() {
        let dir = std::env::temp_dir().join(format!("fulgur-relaxed-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        let store = Store::open(&dir.join("db.sqlite3")).expect("open");
        let mut conn = store.conn.lock().expect("lock");
        // 2 = FULL, 1 = NORMAL.
        assert_eq!(synchronous(&conn), 2);
        for _ in 0..3 {
            let inside = relaxed(&mut conn, |c| Ok(synchronous(c))).expect("relaxed");
            assert_eq!(inside, 1);
            assert_eq!(synchronous(&conn), 2);
        }
        let failed: Result<(), StoreError> = relaxed(&mut conn, |c| {
            c.execute_batch("INSERT INTO no_such_table VALUES (1)")?;
            Ok(())
        });
        assert!(failed.is_err());
        assert_eq!(synchronous(&conn), 2);
        drop(conn);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn queries_in_place_still_let_other_tasks_run() {
        use std::sync::atomic::{AtomicBool, Ordering};
        let store = Store::in_memory().expect("store");
        // A loop of queries with no other await, on one thread: the task it spawns first
        // runs only if the queries yield now and then.
        let looped = tokio::spawn(async move {
            let other_ran = Arc::new(AtomicBool::new(false));
            let flag = other_ran.clone();
            let other = tokio::spawn(async move { flag.store(true, Ordering::SeqCst) });
            let mut ran_during_loop = false;
            for _ in 0..2_000 {
                store
                    .with(|c| Ok(c.query_row("SELECT 1", [], |r| r.get::<_, i64>(0))?))
                    .await
                    .expect("query");
                if other_ran.load(Ordering::SeqCst) {
                    ran_during_loop = true;
                    break;
                }
            }
            other.await.expect("other task");
            ran_during_loop
        });
        assert!(
            looped.await.expect("loop"),
            "the other task never ran during the loop"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_query_waits_for_a_busy_connection_on_the_pool() {
        use std::sync::atomic::{AtomicBool, Ordering};
        let store = Store::in_memory().expect("store");
        let conn = store.conn.clone();
        let released = Arc::new(AtomicBool::new(false));
        let released_by_holder = released.clone();
        let (locked_tx, locked_rx) = std::sync::mpsc::channel();
        let holder = std::thread::spawn(move || {
            let g = conn.lock().expect("lock");
            locked_tx.send(()).expect("signal");
            std::thread::sleep(std::time::Duration::from_millis(50));
            released_by_holder.store(true, Ordering::SeqCst);
            drop(g);
        });
        locked_rx.recv().expect("held");
        let (v, after_release) = store
            .with(move |c| {
                let v = c.query_row("SELECT 41 + 1", [], |r| r.get::<_, i64>(0))?;
                Ok((v, released.load(Ordering::SeqCst)))
            })
            .await
            .expect("query");
        assert_eq!(v, 42);
        assert!(after_release, "ran while the connection was held");
        holder.join().expect("holder");
    }
}
