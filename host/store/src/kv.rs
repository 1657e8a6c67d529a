//! LDK's key-value store on the node's SQLite database: table `ldk_kv` (migration 4 in
//! `lib.rs`), one row per `(primary_namespace, secondary_namespace, key)`.
//!
//! [`SqliteKvStore`] implements LDK's synchronous [`KVStoreSync`], which is all LDK 0.3 needs:
//! `ChainMonitor` persists monitors through the blanket `Persist` impl for any `KVStoreSync`,
//! `MonitorUpdatingPersister` and the background processor's sync variant take one, and the
//! async call sites (`process_events_async`, `MonitorUpdatingPersisterAsync`) take
//! [`AsyncKvStore`], LDK's own [`KVStoreSyncWrapper`] around it, whose futures are already
//! complete when returned (each call has written durably before the future exists).
//!
//! # Connection: the store's own, through [`Store::with_sync`]
//!
//! LDK calls the store synchronously (often while holding its own locks), so it cannot go
//! through the async [`Store::with`]. We considered a second `crate::sql::Connection` to the same
//! file and chose to share the `Store`'s connection with a synchronous accessor instead:
//! - the store's existing transactions (datastore `put`, wallet changesets) are *deferred*:
//!   they read, then write. With a second writer on the file, such a transaction fails with
//!   `SQLITE_BUSY` (a stale snapshot, which the busy timeout does not retry) whenever an LDK
//!   write commits between its read and its write. One connection serialises everything and
//!   cannot hit that;
//! - the pragmas (WAL, `synchronous=FULL`) and migrations stay in one place, and tests can use
//!   [`Store::in_memory`];
//! - the cost: an LDK write waits for whatever query holds the connection. Queries are short
//!   (no network I/O runs under the lock), and an LDK write is blocking disk I/O anyway.
//!
//! # Durability and validity
//! Each `write` and `remove` is its own `IMMEDIATE` transaction, committed (WAL fsynced, as
//! `synchronous=FULL`) before the call returns; `lazy` removes are done eagerly. Namespaces and
//! keys follow LDK's rules: at most [`KVSTORE_NAMESPACE_KEY_MAX_LEN`] characters from
//! [`KVSTORE_NAMESPACE_KEY_ALPHABET`], keys non-empty, and a secondary namespace only under a
//! primary one; anything else is `ErrorKind::InvalidInput` and touches nothing. A missing key
//! is `ErrorKind::NotFound`; database failures are `ErrorKind::Other`, except that a write or
//! removal the disk cannot take (full, I/O error) stops the node ([`Store::fatal`]): LDK
//! would otherwise carry on with its state unsaved.

use std::sync::Arc;

use crate::sql::{OptionalExtension, params};
use lightning::io;
use lightning::util::persist::{
    KVSTORE_NAMESPACE_KEY_ALPHABET, KVSTORE_NAMESPACE_KEY_MAX_LEN, KVStoreSync, KVStoreSyncWrapper,
    MigratableKVStoreSync,
};

use crate::{Store, StoreError};

/// LDK's async `KVStore` over [`SqliteKvStore`], for LDK's async call sites.
pub type AsyncKvStore = KVStoreSyncWrapper<Arc<SqliteKvStore>>;

/// LDK's key-value store in the node's database. Cheap to clone (it shares the [`Store`]).
/// Hand it to LDK as `Arc<SqliteKvStore>` (sync) or [`SqliteKvStore::into_async`] (async).
#[derive(Clone)]
pub struct SqliteKvStore {
    store: Store,
}

impl SqliteKvStore {
    /// A key-value store on `store`, whose migrations have created `ldk_kv`.
    pub fn new(store: Store) -> SqliteKvStore {
        SqliteKvStore { store }
    }

    /// This store behind LDK's async `KVStore` trait.
    pub fn into_async(self) -> AsyncKvStore {
        KVStoreSyncWrapper(Arc::new(self))
    }

    /// Like `write`, but committed without waiting for the fsync (`synchronous=NORMAL`):
    /// it survives a crash of the process, and the next synced commit makes it durable
    /// against power loss too. Only for state LDK allows to lag (the channel manager),
    /// never for monitors.
    pub fn write_relaxed(
        &self,
        namespace: (&str, &str),
        key: &str,
        buf: Vec<u8>,
    ) -> Result<(), io::Error> {
        self.put(namespace, key, &buf, true)
    }

    /// One insert-or-replace in its own transaction, synced unless `relaxed`.
    fn put(
        &self,
        (primary, secondary): (&str, &str),
        key: &str,
        buf: &[u8],
        relaxed: bool,
    ) -> Result<(), io::Error> {
        check(primary, secondary, Some(key), "write")?;
        self.store
            .with_sync(|conn| {
                if relaxed {
                    crate::relaxed(conn, |c| upsert(c, primary, secondary, key, buf))
                } else {
                    upsert(conn, primary, secondary, key, buf)
                }
            })
            .map_err(|e| self.write_failed("write", primary, secondary, key, e))
    }

    /// A write or removal the database refused: LDK's state would go unsaved (and LDK
    /// treats a failed monitor write as unrecoverable), so the node stops here
    /// ([`Store::fatal`]) for a storage failure; other errors go back to LDK.
    fn write_failed(
        &self,
        op: &str,
        primary: &str,
        secondary: &str,
        key: &str,
        e: StoreError,
    ) -> io::Error {
        if e.is_storage_failure() {
            self.store.fatal(
                &format!("cannot {op} LDK's {primary}/{secondary}/{key}"),
                &e,
            );
        }
        db_error(op, e)
    }
}

/// One durable insert-or-replace: one statement, so its own transaction on either engine
/// (an explicit BEGIN and COMMIT cost PostgreSQL two more round trips for nothing).
fn upsert(
    conn: &mut crate::sql::Connection,
    primary_namespace: &str,
    secondary_namespace: &str,
    key: &str,
    buf: &[u8],
) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO ldk_kv (primary_namespace, secondary_namespace, key, value)
         VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (primary_namespace, secondary_namespace, key)
         DO UPDATE SET value = excluded.value",
    )?
    .execute(params![primary_namespace, secondary_namespace, key, buf])?;
    Ok(())
}

/// Whether `s` is a valid LDK namespace or key (the empty string passes; callers check that
/// keys are non-empty).
fn valid_str(s: &str) -> bool {
    s.len() <= KVSTORE_NAMESPACE_KEY_MAX_LEN
        && s.chars()
            .all(|c| KVSTORE_NAMESPACE_KEY_ALPHABET.contains(c))
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg)
}

/// Checks LDK's rules for the namespaces and, for `read`/`write`/`remove`, the key.
fn check(primary: &str, secondary: &str, key: Option<&str>, op: &str) -> Result<(), io::Error> {
    if primary.is_empty() && !secondary.is_empty() {
        return Err(invalid(format!(
            "{op}: secondary namespace {secondary:?} given without a primary namespace"
        )));
    }
    for (what, s) in [
        ("primary namespace", primary),
        ("secondary namespace", secondary),
    ] {
        if !valid_str(s) {
            return Err(invalid(format!(
                "{op}: invalid {what} {s:?} (at most {KVSTORE_NAMESPACE_KEY_MAX_LEN} characters \
                 from [A-Za-z0-9_-])"
            )));
        }
    }
    if let Some(key) = key {
        if key.is_empty() {
            return Err(invalid(format!("{op}: empty key")));
        }
        if !valid_str(key) {
            return Err(invalid(format!(
                "{op}: invalid key {key:?} (at most {KVSTORE_NAMESPACE_KEY_MAX_LEN} characters \
                 from [A-Za-z0-9_-])"
            )));
        }
    }
    Ok(())
}

fn db_error(op: &str, e: StoreError) -> io::Error {
    io::Error::new(io::ErrorKind::Other, format!("{op}: {e}"))
}

impl KVStoreSync for SqliteKvStore {
    fn read(
        &self,
        primary_namespace: &str,
        secondary_namespace: &str,
        key: &str,
    ) -> Result<Vec<u8>, io::Error> {
        check(primary_namespace, secondary_namespace, Some(key), "read")?;
        let value = self
            .store
            .with_sync(|conn| {
                Ok(conn
                    .query_row(
                        "SELECT value FROM ldk_kv
                         WHERE primary_namespace = ?1 AND secondary_namespace = ?2 AND key = ?3",
                        params![primary_namespace, secondary_namespace, key],
                        |row| row.get::<_, Vec<u8>>(0),
                    )
                    .optional()?)
            })
            .map_err(|e| db_error("read", e))?;
        value.ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("read: no value at {primary_namespace}/{secondary_namespace}/{key}"),
            )
        })
    }

    fn write(
        &self,
        primary_namespace: &str,
        secondary_namespace: &str,
        key: &str,
        buf: Vec<u8>,
    ) -> Result<(), io::Error> {
        self.put((primary_namespace, secondary_namespace), key, &buf, false)
    }

    /// Removes eagerly whatever `lazy` says: one durable transaction either way.
    fn remove(
        &self,
        primary_namespace: &str,
        secondary_namespace: &str,
        key: &str,
        lazy: bool,
    ) -> Result<(), io::Error> {
        check(primary_namespace, secondary_namespace, Some(key), "remove")?;
        let delete = |conn: &mut crate::sql::Connection| {
            conn.prepare_cached(
                "DELETE FROM ldk_kv
                 WHERE primary_namespace = ?1 AND secondary_namespace = ?2 AND key = ?3",
            )?
            .execute(params![primary_namespace, secondary_namespace, key])?;
            Ok(())
        };
        // LDK marks removals it can afford to see undone (stale monitor updates after a
        // full monitor write) as lazy: those commit without an fsync.
        self.store
            .with_sync(|conn| {
                if lazy {
                    crate::relaxed(conn, delete)
                } else {
                    delete(conn)
                }
            })
            .map_err(|e| {
                self.write_failed("remove", primary_namespace, secondary_namespace, key, e)
            })
    }

    fn list(
        &self,
        primary_namespace: &str,
        secondary_namespace: &str,
    ) -> Result<Vec<String>, io::Error> {
        check(primary_namespace, secondary_namespace, None, "list")?;
        self.store
            .with_sync(|conn| {
                let mut stmt = conn.prepare_cached(
                    "SELECT key FROM ldk_kv
                     WHERE primary_namespace = ?1 AND secondary_namespace = ?2 ORDER BY key",
                )?;
                let keys = stmt
                    .query_map(params![primary_namespace, secondary_namespace], |row| {
                        row.get::<_, String>(0)
                    })?
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(keys)
            })
            .map_err(|e| db_error("list", e))
    }
}

impl MigratableKVStoreSync for SqliteKvStore {
    fn list_all_keys(&self) -> Result<Vec<(String, String, String)>, io::Error> {
        self.store
            .with_sync(|conn| {
                let mut stmt = conn.prepare_cached(
                    "SELECT primary_namespace, secondary_namespace, key FROM ldk_kv
                     ORDER BY primary_namespace, secondary_namespace, key",
                )?;
                let keys = stmt
                    .query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))?
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(keys)
            })
            .map_err(|e| db_error("list_all_keys", e))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::path::PathBuf;

    use lightning::util::persist::KVStore;

    use super::*;

    fn ok<T, E: std::fmt::Display>(r: Result<T, E>) -> T {
        r.unwrap_or_else(|e| panic!("{e}"))
    }

    fn mem() -> SqliteKvStore {
        SqliteKvStore::new(ok(Store::in_memory()))
    }

    /// A fresh directory under the system's temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(tag: &str) -> TempDir {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0);
            let dir = std::env::temp_dir()
                .join(format!("fulgur-ldkkv-{tag}-{}-{nanos}", std::process::id()));
            ok(std::fs::create_dir_all(&dir));
            TempDir(dir)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn kind<T: std::fmt::Debug>(r: Result<T, io::Error>) -> io::ErrorKind {
        match r {
            Ok(v) => panic!("expected an error, got {v:?}"),
            Err(e) => e.kind(),
        }
    }

    #[test]
    fn ldk_kv_round_trip() {
        let kv = mem();
        ok(kv.write("", "", "manager", b"channel manager".to_vec()));
        ok(kv.write("monitors", "", "aa_0", vec![1, 2, 3]));
        ok(kv.write("monitor_updates", "aa_0", "1", vec![]));
        // A value the size of a big ChannelManager.
        let big: Vec<u8> = (0..4_000_000u32).map(|i| (i % 251) as u8).collect();
        ok(kv.write("", "", "network_graph", big.clone()));
        assert_eq!(ok(kv.read("", "", "manager")), b"channel manager");
        assert_eq!(ok(kv.read("monitors", "", "aa_0")), vec![1, 2, 3]);
        assert_eq!(
            ok(kv.read("monitor_updates", "aa_0", "1")),
            Vec::<u8>::new()
        );
        assert_eq!(ok(kv.read("", "", "network_graph")), big);
        assert_eq!(ok(kv.list_all_keys()).len(), 4);
    }

    #[test]
    fn ldk_kv_overwrite_replaces_the_value() {
        let kv = mem();
        ok(kv.write("monitors", "", "k", b"first".to_vec()));
        ok(kv.write("monitors", "", "k", b"second, longer".to_vec()));
        assert_eq!(ok(kv.read("monitors", "", "k")), b"second, longer");
        assert_eq!(ok(kv.list("monitors", "")), vec!["k".to_string()]);
        ok(kv.write("monitors", "", "k", b"3".to_vec()));
        assert_eq!(ok(kv.read("monitors", "", "k")), b"3");
    }

    #[test]
    fn ldk_kv_remove_deletes_and_is_idempotent() {
        let kv = mem();
        ok(kv.write("p", "s", "a", vec![1]));
        ok(kv.write("p", "s", "b", vec![2]));
        ok(kv.write("p", "s", "c", vec![3]));
        ok(kv.remove("p", "s", "a", false));
        assert_eq!(kind(kv.read("p", "s", "a")), io::ErrorKind::NotFound);
        // Lazy removes are done at once.
        ok(kv.remove("p", "s", "b", true));
        assert_eq!(kind(kv.read("p", "s", "b")), io::ErrorKind::NotFound);
        assert_eq!(ok(kv.list("p", "s")), vec!["c".to_string()]);
        // Removing what is not there succeeds.
        ok(kv.remove("p", "s", "a", false));
        ok(kv.remove("nowhere", "", "x", true));
        assert_eq!(ok(kv.read("p", "s", "c")), vec![3]);
        // A write after a remove brings the key back.
        ok(kv.write("p", "s", "a", vec![9]));
        assert_eq!(ok(kv.read("p", "s", "a")), vec![9]);
    }

    #[test]
    fn ldk_kv_list_is_per_namespace() {
        let kv = mem();
        for (primary, secondary, key) in [
            ("", "", "manager"),
            ("", "", "scorer"),
            ("monitors", "", "m2"),
            ("monitors", "", "m1"),
            ("monitor_updates", "m1", "1"),
            ("monitor_updates", "m1", "2"),
            ("monitor_updates", "m2", "1"),
        ] {
            ok(kv.write(primary, secondary, key, vec![0]));
        }
        let set = |v: Vec<String>| v.into_iter().collect::<BTreeSet<_>>();
        let want = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
        assert_eq!(set(ok(kv.list("", ""))), want(&["manager", "scorer"]));
        assert_eq!(set(ok(kv.list("monitors", ""))), want(&["m1", "m2"]));
        assert_eq!(set(ok(kv.list("monitor_updates", "m1"))), want(&["1", "2"]));
        assert_eq!(set(ok(kv.list("monitor_updates", "m2"))), want(&["1"]));
        // The primary namespace alone lists only keys with an empty secondary namespace.
        assert!(ok(kv.list("monitor_updates", "")).is_empty());
        assert!(ok(kv.list("unknown", "")).is_empty());
        assert!(ok(kv.list("monitors", "unknown")).is_empty());
    }

    #[test]
    fn ldk_kv_missing_key_is_not_found() {
        let kv = mem();
        assert_eq!(kind(kv.read("", "", "manager")), io::ErrorKind::NotFound);
        ok(kv.write("a", "", "k", vec![1]));
        // Same key in another namespace, or the key as a namespace: still not found.
        assert_eq!(kind(kv.read("b", "", "k")), io::ErrorKind::NotFound);
        assert_eq!(kind(kv.read("a", "x", "k")), io::ErrorKind::NotFound);
        assert_eq!(kind(kv.read("", "", "k")), io::ErrorKind::NotFound);
        assert_eq!(kind(kv.read("", "", "a")), io::ErrorKind::NotFound);
    }

    #[test]
    fn ldk_kv_invalid_namespaces_and_keys_are_rejected() {
        let kv = mem();
        let max = "x".repeat(KVSTORE_NAMESPACE_KEY_MAX_LEN);
        let long = "x".repeat(KVSTORE_NAMESPACE_KEY_MAX_LEN + 1);
        let bad: Vec<(&str, &str, &str)> = vec![
            ("", "sec", "k"),   // secondary without primary
            ("", "", ""),       // empty key
            ("p", "s", ""),     // empty key
            ("a/b", "", "k"),   // path separator
            ("p", "s s", "k"),  // space
            ("p", "", "k.bin"), // dot
            ("p", "", "clé"),   // non-ASCII
            ("p", "", &long),
            (&long, "", "k"),
            ("p", &long, "k"),
        ];
        for (p, s, k) in &bad {
            let what = format!("{p:?}/{s:?}/{k:?}");
            assert_eq!(
                kind(kv.write(p, s, k, vec![1])),
                io::ErrorKind::InvalidInput,
                "write {what}"
            );
            assert_eq!(
                kind(kv.read(p, s, k)),
                io::ErrorKind::InvalidInput,
                "read {what}"
            );
            assert_eq!(
                kind(kv.remove(p, s, k, false)),
                io::ErrorKind::InvalidInput,
                "remove {what}"
            );
        }
        for (p, s) in [("", "sec"), ("a/b", ""), ("p", long.as_str())] {
            assert_eq!(
                kind(kv.list(p, s)),
                io::ErrorKind::InvalidInput,
                "list {p}/{s}"
            );
        }
        assert!(
            ok(kv.list_all_keys()).is_empty(),
            "an invalid write stored something"
        );
        // The limits themselves are fine: 120 characters, the whole alphabet.
        ok(kv.write(&max, &max, &max, vec![7]));
        assert_eq!(ok(kv.read(&max, &max, &max)), vec![7]);
        ok(kv.write("p", "", KVSTORE_NAMESPACE_KEY_ALPHABET, vec![8]));
        assert_eq!(
            ok(kv.read("p", "", KVSTORE_NAMESPACE_KEY_ALPHABET)),
            vec![8]
        );
    }

    #[test]
    fn ldk_kv_persists_across_reopening_the_database() {
        let dir = TempDir::new("reopen");
        let path = dir.0.join("fulgur.sqlite3");
        {
            let kv = SqliteKvStore::new(ok(Store::open(&path)));
            ok(kv.write("", "", "manager", b"v1".to_vec()));
            ok(kv.write("monitors", "", "m", b"mon".to_vec()));
            ok(kv.write("monitors", "", "gone", b"x".to_vec()));
            ok(kv.remove("monitors", "", "gone", true));
            ok(kv.write("", "", "manager", b"v2".to_vec()));
        }
        let kv = SqliteKvStore::new(ok(Store::open(&path)));
        assert_eq!(ok(kv.read("", "", "manager")), b"v2");
        assert_eq!(ok(kv.read("monitors", "", "m")), b"mon");
        assert_eq!(
            kind(kv.read("monitors", "", "gone")),
            io::ErrorKind::NotFound
        );
        assert_eq!(ok(kv.list("monitors", "")), vec!["m".to_string()]);
    }

    #[test]
    fn ldk_kv_concurrent_writers() {
        const THREADS: usize = 8;
        const WRITES: usize = 50;
        let dir = TempDir::new("concurrent");
        let kv = SqliteKvStore::new(ok(Store::open(&dir.0.join("fulgur.sqlite3"))));
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                let kv = kv.clone();
                std::thread::spawn(move || {
                    for i in 0..WRITES {
                        let value = format!("{t}-{i}").into_bytes();
                        ok(kv.write("conc", &format!("t{t}"), &format!("k{i}"), value.clone()));
                        ok(kv.write("conc", "", "shared", value.clone()));
                        // Each thread sees its own key at once.
                        assert_eq!(
                            ok(kv.read("conc", &format!("t{t}"), &format!("k{i}"))),
                            value
                        );
                    }
                })
            })
            .collect();
        for h in handles {
            assert!(h.join().is_ok(), "a writer thread panicked");
        }
        for t in 0..THREADS {
            let keys = ok(kv.list("conc", &format!("t{t}")));
            assert_eq!(keys.len(), WRITES, "thread {t}");
            for i in 0..WRITES {
                let v = ok(kv.read("conc", &format!("t{t}"), &format!("k{i}")));
                assert_eq!(v, format!("{t}-{i}").into_bytes());
            }
        }
        // The shared key holds the last write of some thread.
        let shared = String::from_utf8(ok(kv.read("conc", "", "shared"))).unwrap_or_default();
        let last = format!("-{}", WRITES - 1);
        assert!(shared.ends_with(&last), "shared = {shared:?}");
        assert_eq!(ok(kv.list_all_keys()).len(), THREADS * WRITES + 1);
    }

    #[tokio::test]
    async fn ldk_kv_async_wrapper_reads_what_sync_wrote() {
        let kv = mem();
        let async_kv = kv.clone().into_async();
        ok(KVStoreSync::write(&kv, "monitors", "", "m", vec![4, 2]));
        assert_eq!(
            ok(KVStore::read(&async_kv, "monitors", "", "m").await),
            vec![4, 2]
        );
        ok(KVStore::write(&async_kv, "monitors", "", "n", vec![1]).await);
        assert_eq!(ok(KVStoreSync::read(&kv, "monitors", "", "n")), vec![1]);
        let mut keys = ok(KVStore::list(&async_kv, "monitors", "").await);
        keys.sort();
        assert_eq!(keys, vec!["m".to_string(), "n".to_string()]);
        ok(KVStore::remove(&async_kv, "monitors", "", "m", true).await);
        assert_eq!(
            kind(KVStore::read(&async_kv, "monitors", "", "m").await),
            io::ErrorKind::NotFound
        );
    }
}
