//! The lease that makes exactly one of several `fulgurd` on one PostgreSQL database the
//! active node (docs/adr/0014-postgres-lease-and-fencing.md).
//!
//! - One row, `node_lease`: who holds it, until when (the database's clock, so the
//!   machines' clocks do not matter), and an **epoch** raised at every takeover.
//! - The active node renews it every [`RENEW_EVERY`] on a connection of its own. A renewal
//!   that fails or finds another epoch stops the node; so does a watchdog that sees no
//!   successful renewal for [`SELF_FENCE_AFTER`] (a paused or partitioned node stops
//!   itself before its lease can expire), and the broadcaster asks [`still_active`] before
//!   every broadcast.
//! - **Fencing**: every write of a node carries its epoch (`SET fulgur.epoch`), and a
//!   trigger on every table refuses a write whose epoch is not the lease's, holding the
//!   lease row (`FOR SHARE`) until the write's transaction ends. A takeover raises the
//!   epoch, which waits for those writes: each write of the old node either committed
//!   before the takeover (and the new node reads it) or fails.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::StoreError;
use crate::sql::{Connection, OptionalExtension, params};

/// How long a lease lasts without renewal (the database's clock).
pub const LEASE_TTL: Duration = Duration::from_secs(8);
/// How often the active node renews it.
pub const RENEW_EVERY: Duration = Duration::from_millis(1500);
/// With no successful renewal for this long, the active node stops itself: well before
/// the lease can expire and a standby take over.
pub const SELF_FENCE_AFTER: Duration = Duration::from_secs(5);
/// How often a standby tries to take the lease.
pub const STANDBY_POLL: Duration = Duration::from_millis(500);

/// The SQLSTATE of a write refused by the fence (a class of our own).
pub const FENCED_SQLSTATE: &str = "FL001";

/// What makes a PostgreSQL database leased and fenced: run at every start (idempotent),
/// after the migrations and under their lock (`Store::open_postgres`), so that every
/// table (new ones included) has the fence.
pub(crate) const SETUP: &str = "
CREATE TABLE IF NOT EXISTS node_lease (
    id BIGINT PRIMARY KEY CHECK (id = 0),
    holder TEXT NOT NULL,
    epoch BIGINT NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL
);
INSERT INTO node_lease VALUES (0, '', 0, 'epoch') ON CONFLICT DO NOTHING;
CREATE OR REPLACE FUNCTION fulgur_fence() RETURNS trigger AS $fence$
BEGIN
    IF current_setting('fulgur.migrating', true) = 'on'
       OR current_setting('fulgur.fenced', true) = 'on' THEN
        RETURN NULL;
    END IF;
    PERFORM 1 FROM node_lease
        WHERE id = 0 AND epoch = NULLIF(current_setting('fulgur.epoch', true), '')::BIGINT
        FOR SHARE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'fulgur: write refused: this node does not hold the lease (epoch %)',
            COALESCE(NULLIF(current_setting('fulgur.epoch', true), ''), 'none')
            USING ERRCODE = 'FL001';
    END IF;
    -- The lease row stays share-locked until this transaction ends (a takeover waits for
    -- it), so the transaction's other writes need no check of their own.
    PERFORM set_config('fulgur.fenced', 'on', true);
    RETURN NULL;
END
$fence$ LANGUAGE plpgsql;
DO $triggers$
DECLARE t TEXT;
BEGIN
    FOR t IN SELECT tablename FROM pg_tables
             WHERE schemaname = current_schema()
               AND tablename NOT IN ('node_lease', 'fulgur_schema')
    LOOP
        EXECUTE format('CREATE OR REPLACE TRIGGER fulgur_fence BEFORE INSERT OR UPDATE OR DELETE
                        OR TRUNCATE ON %I FOR EACH STATEMENT EXECUTE FUNCTION fulgur_fence()', t);
    END LOOP;
END
$triggers$;
";

/// Who holds the lease now.
#[derive(Debug, Clone, PartialEq)]
pub struct Holder {
    /// Its name (host and directory).
    pub holder: String,
    /// The lease's epoch.
    pub epoch: i64,
    /// Seconds until it expires (negative: expired).
    pub expires_in: f64,
}

/// The lease, held.
pub struct Lease {
    conn: Connection,
    holder: String,
    epoch: i64,
}

/// The last successful renewal, as milliseconds since [`base`]; 0 while no lease is used.
static RENEWED_MS: AtomicU64 = AtomicU64::new(0);
/// Set once a lease is used: [`still_active`] checks the renewal age from then on.
static LEASED: AtomicBool = AtomicBool::new(false);

fn base() -> Instant {
    static BASE: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *BASE.get_or_init(Instant::now)
}

fn now_ms() -> u64 {
    // At least 1, so that 0 keeps meaning "never".
    (base().elapsed().as_millis() as u64).max(1)
}

/// Whether this process may still act as the active node: true without a lease (SQLite);
/// with one, whether it was renewed within [`SELF_FENCE_AFTER`]. Asked before anything
/// that no database write precedes, such as broadcasting a transaction.
pub fn still_active() -> bool {
    if !LEASED.load(Ordering::SeqCst) {
        return true;
    }
    let last = RENEWED_MS.load(Ordering::SeqCst);
    last != 0 && now_ms().saturating_sub(last) < SELF_FENCE_AFTER.as_millis() as u64
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

impl Lease {
    /// Takes the lease if it is free (expired) or already ours (`holder`), raising its
    /// epoch; otherwise says who holds it. `dsn` is the node's database.
    pub fn try_acquire(dsn: &str, holder: &str) -> Result<Result<Lease, Holder>, StoreError> {
        let conn = Connection::postgres(dsn)?;
        // A renewal that waits on a stuck server fails instead; the watchdog does the rest.
        conn.execute_batch("SET statement_timeout = 2000")?;
        let won: Option<i64> = conn
            .prepare(
                "UPDATE node_lease SET holder = ?1, epoch = epoch + 1,
                     expires_at = clock_timestamp() + make_interval(secs => ?2)
                 WHERE id = 0 AND (expires_at < clock_timestamp() OR holder = ?1)
                 RETURNING epoch",
            )?
            .query_row(params![holder, secs(LEASE_TTL)], |r| r.get(0))
            .optional()?;
        match won {
            Some(epoch) => {
                RENEWED_MS.store(now_ms(), Ordering::SeqCst);
                LEASED.store(true, Ordering::SeqCst);
                Ok(Ok(Lease {
                    conn,
                    holder: holder.to_string(),
                    epoch,
                }))
            }
            None => Ok(Err(Self::holder_on(&conn)?)),
        }
    }

    /// Who holds the lease of the database `conn` is on.
    fn holder_on(conn: &Connection) -> Result<Holder, StoreError> {
        Ok(conn.query_row(
            "SELECT holder, epoch,
                 CAST(EXTRACT(EPOCH FROM expires_at - clock_timestamp()) AS DOUBLE PRECISION)
             FROM node_lease WHERE id = 0",
            [],
            |r| {
                Ok(Holder {
                    holder: r.get(0)?,
                    epoch: r.get(1)?,
                    expires_in: r.get(2)?,
                })
            },
        )?)
    }

    /// This lease's epoch: what the node's writes carry.
    pub fn epoch(&self) -> i64 {
        self.epoch
    }

    /// Extends it; `Ok(false)` when another node took it (its epoch moved on).
    pub fn renew(&self) -> Result<bool, StoreError> {
        let n = self.conn.execute(
            "UPDATE node_lease SET expires_at = clock_timestamp() + make_interval(secs => ?1)
             WHERE id = 0 AND epoch = ?2 AND holder = ?3",
            params![secs(LEASE_TTL), self.epoch, self.holder],
        )?;
        if n == 1 {
            RENEWED_MS.store(now_ms(), Ordering::SeqCst);
        }
        Ok(n == 1)
    }

    /// Renews it every [`RENEW_EVERY`] on a thread of its own, and watches the renewals
    /// on another: when a renewal finds the lease taken, or none succeeded for
    /// [`SELF_FENCE_AFTER`], `lost` is called (it stops the process).
    pub fn keep(self, lost: impl Fn(String) + Send + Sync + 'static) -> std::io::Result<()> {
        let lost = std::sync::Arc::new(lost);
        let on_renew = lost.clone();
        std::thread::Builder::new()
            .name("lease-renew".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(RENEW_EVERY);
                    match self.renew() {
                        Ok(true) => {}
                        Ok(false) => {
                            let who = Self::holder_on(&self.conn)
                                .map(|h| format!("{} (epoch {})", h.holder, h.epoch))
                                .unwrap_or_else(|_| "another node".into());
                            on_renew(format!(
                                "the database's lease (epoch {}) was taken over by {who}",
                                self.epoch
                            ));
                            return;
                        }
                        // The watchdog decides: a renewal may fail once and the next succeed.
                        Err(_) => {}
                    }
                }
            })?;
        std::thread::Builder::new()
            .name("lease-watchdog".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(Duration::from_millis(200));
                    if !still_active() {
                        lost(format!(
                            "the database's lease was not renewed for {} s (database \
                             unreachable, or this process was paused)",
                            SELF_FENCE_AFTER.as_secs()
                        ));
                        return;
                    }
                }
            })?;
        Ok(())
    }
}

/// Who holds the lease of the database at `dsn`, without taking it.
pub fn holder(dsn: &str) -> Result<Holder, StoreError> {
    let conn = Connection::postgres(dsn)?;
    Lease::holder_on(&conn)
}
