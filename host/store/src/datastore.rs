//! The plugins' key-value datastore with CLN's semantics: hierarchical keys (an entry has
//! either data or children, never both), write modes, and generations for
//! compare-and-swap.

use crate::sql::{Connection, OptionalExtension, params};

use super::StoreError;

/// How `datastore` treats an existing key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Fail if the key exists (the default).
    MustCreate,
    /// Fail if the key does not exist.
    MustReplace,
    /// Never fail.
    CreateOrReplace,
    /// Append to existing data; fail if none.
    MustAppend,
    /// Append if present, otherwise create.
    CreateOrAppend,
}

impl Mode {
    /// Parses CLN's mode names.
    pub fn parse(s: &str) -> Option<Mode> {
        match s {
            "must-create" => Some(Mode::MustCreate),
            "must-replace" => Some(Mode::MustReplace),
            "create-or-replace" => Some(Mode::CreateOrReplace),
            "must-append" => Some(Mode::MustAppend),
            "create-or-append" => Some(Mode::CreateOrAppend),
            _ => None,
        }
    }
}

/// One stored entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The key parts.
    pub key: Vec<String>,
    /// The data and its generation; `None` for a parent shown by `listdatastore`.
    pub data: Option<(Vec<u8>, u64)>,
}

fn encode(key: &[String]) -> Vec<u8> {
    let mut out = Vec::new();
    for part in key {
        out.extend_from_slice(part.as_bytes());
        out.push(0);
    }
    out
}

fn decode(raw: &[u8]) -> Vec<String> {
    raw.split(|b| *b == 0)
        .take(raw.iter().filter(|b| **b == 0).count())
        .map(|p| String::from_utf8_lossy(p).into_owned())
        .collect()
}

/// Why a datastore write or delete was refused, or the database failure.
#[derive(Debug)]
pub enum DsError {
    /// `datastore`: a parent of the key holds data (the key given is that parent).
    ParentHasData(Vec<String>),
    /// `datastore`: the key has children, so it cannot hold data.
    HasChildren,
    /// `datastore` with `must-create`: the key exists.
    AlreadyExists,
    /// `datastore` with `must-replace` or `must-append`: the key does not exist.
    DoesNotExist,
    /// `datastore`: the key's generation is not the one given.
    WrongGeneration,
    /// `deldatastore`: the key does not exist.
    DelDoesNotExist,
    /// `deldatastore`: the key's generation is not the one given.
    DelWrongGeneration,
    /// The database failed.
    Store(StoreError),
}

impl From<crate::sql::Error> for DsError {
    fn from(e: crate::sql::Error) -> Self {
        DsError::Store(StoreError::Db(e))
    }
}

fn get(conn: &Connection, key: &[String]) -> Result<Option<(Vec<u8>, u64)>, DsError> {
    Ok(conn
        .query_row(
            "SELECT data, generation FROM datastore WHERE key = ?1",
            params![encode(key)],
            |r| Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, i64>(1)? as u64)),
        )
        .optional()?)
}

fn has_children(conn: &Connection, key: &[String]) -> Result<bool, DsError> {
    let prefix = encode(key);
    let mut upper = prefix.clone();
    // Keys under `prefix` sort in [prefix + anything); bound with the next byte string.
    upper.push(0xff);
    let n: i64 = conn.query_row(
        "SELECT COUNT(*) FROM datastore WHERE key > ?1 AND key < ?2",
        params![prefix, upper],
        |r| r.get(0),
    )?;
    Ok(n > 0)
}

/// `datastore`: writes `data` under `key`.
pub fn put(
    conn: &mut Connection,
    key: &[String],
    data: &[u8],
    mode: Mode,
    generation: Option<u64>,
) -> Result<Entry, DsError> {
    let tx = conn.transaction()?;
    for i in 1..key.len() {
        if get(&tx, &key[..i])?.is_some() {
            return Err(DsError::ParentHasData(key[..i].to_vec()));
        }
    }
    if has_children(&tx, key)? {
        return Err(DsError::HasChildren);
    }
    let old = get(&tx, key)?;
    let (new_data, new_gen) = match (mode, &old) {
        (Mode::MustCreate, Some(_)) => {
            return Err(DsError::AlreadyExists);
        }
        (Mode::MustReplace | Mode::MustAppend, None) => {
            return Err(DsError::DoesNotExist);
        }
        (_, None) => (data.to_vec(), 0),
        (Mode::MustAppend | Mode::CreateOrAppend, Some((d, g))) => {
            let mut v = d.clone();
            v.extend_from_slice(data);
            (v, g + 1)
        }
        (_, Some((_, g))) => (data.to_vec(), g + 1),
    };
    if let (Some(want), Some((_, have))) = (generation, &old)
        && want != *have
    {
        return Err(DsError::WrongGeneration);
    }
    tx.execute(
        "INSERT INTO datastore (key, data, generation) VALUES (?1, ?2, ?3)
         ON CONFLICT(key) DO UPDATE SET data = excluded.data, generation = excluded.generation",
        params![encode(key), new_data, new_gen as i64],
    )?;
    tx.commit()?;
    Ok(Entry {
        key: key.to_vec(),
        data: Some((new_data, new_gen)),
    })
}

/// `deldatastore`: removes `key`, checking `generation` if given.
pub fn delete(
    conn: &mut Connection,
    key: &[String],
    generation: Option<u64>,
) -> Result<Entry, DsError> {
    let tx = conn.transaction()?;
    let Some((data, g)) = get(&tx, key)? else {
        return Err(DsError::DelDoesNotExist);
    };
    if generation.is_some_and(|want| want != g) {
        return Err(DsError::DelWrongGeneration);
    }
    tx.execute("DELETE FROM datastore WHERE key = ?1", params![encode(key)])?;
    tx.commit()?;
    Ok(Entry {
        key: key.to_vec(),
        data: Some((data, g)),
    })
}

/// The encoded keys of `key` and everything under it: `prefix <= k < upper`.
fn subtree(key: &[String]) -> (Vec<u8>, Vec<u8>) {
    let prefix = encode(key);
    let mut upper = prefix.clone();
    upper.push(0xff);
    (prefix, upper)
}

/// `datastoreusage`: the bytes the entries at and under `key` take, counted as CLN counts
/// them (the data, plus the key's strings and one separator between each two).
pub fn usage(conn: &Connection, key: &[String]) -> Result<u64, DsError> {
    let (prefix, upper) = subtree(key);
    let mut stmt = conn.prepare_cached(
        "SELECT length(key), length(data) FROM datastore WHERE key >= ?1 AND key < ?2",
    )?;
    let mut total = 0u64;
    for row in stmt.query_map(params![prefix, upper], |r| {
        Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?))
    })? {
        let (k, d) = row?;
        // Each part of our key ends in a NUL; CLN counts the NULs between parts only.
        total += (k.max(1) - 1) as u64 + d as u64;
    }
    Ok(total)
}

/// `listdatastore`: the entry at `key` (with its data) or, for a parent, its immediate
/// children (children that are themselves parents are shown by key only).
pub fn list(conn: &Connection, key: &[String]) -> Result<Vec<Entry>, DsError> {
    let (prefix, upper) = subtree(key);
    let mut stmt = conn.prepare_cached(
        "SELECT key, data, generation FROM datastore WHERE key >= ?1 AND key < ?2 ORDER BY key",
    )?;
    let rows = stmt.query_map(params![prefix, upper], |r| {
        Ok((
            r.get::<_, Vec<u8>>(0)?,
            r.get::<_, Vec<u8>>(1)?,
            r.get::<_, i64>(2)? as u64,
        ))
    })?;
    let mut out: Vec<Entry> = vec![];
    for row in rows {
        let (raw, data, generation) = row?;
        let full = decode(&raw);
        // The key itself, or an immediate child: shown with its data.
        if full.len() <= key.len() + 1 {
            out.push(Entry {
                key: full,
                data: Some((data, generation)),
            });
        } else {
            let child = full[..key.len() + 1].to_vec();
            if out.last().is_none_or(|e| e.key != child) {
                out.push(Entry {
                    key: child,
                    data: None,
                });
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Store;

    fn k(parts: &[&str]) -> Vec<String> {
        parts.iter().map(|s| s.to_string()).collect()
    }

    /// The refusal, as its variant's name.
    fn code(r: Result<Entry, DsError>) -> String {
        match r {
            Err(DsError::Store(e)) => panic!("expected a refusal, got {e}"),
            Err(e) => format!("{e:?}"),
            Ok(e) => panic!("expected a refusal, got {e:?}"),
        }
    }

    /// CLN's `test_datastoreusage`, its figures.
    #[tokio::test]
    async fn usage_counts_as_clns() {
        let store = Store::in_memory().unwrap_or_else(|e| panic!("{e}"));
        store
            .with(|c| {
                fn used(c: &Connection, key: &[&str]) -> u64 {
                    usage(c, &k(key)).unwrap_or_else(|e| panic!("{e:?}"))
                }
                fn add(c: &mut Connection, key: &[&str]) {
                    let data = b"somedatatostoreinthedatastore";
                    put(c, &k(key), data, Mode::MustCreate, None)
                        .unwrap_or_else(|e| panic!("{e:?}"));
                }
                assert_eq!(used(c, &[]), 0);
                add(c, &["a", "b"]);
                assert_eq!(
                    (used(c, &[]), used(c, &["a"]), used(c, &["a", "b"])),
                    (32, 32, 32)
                );
                add(c, &["a", "c"]);
                assert_eq!(
                    (used(c, &[]), used(c, &["a", "c"]), used(c, &["ab"])),
                    (64, 32, 0)
                );
                let long = "thisissomelongkeythattriestostore46bytesofdata";
                add(c, &["a", long]);
                assert_eq!(
                    (used(c, &[]), used(c, &["a", long])),
                    (29 + 1 + 1 + 46 + 64, 77)
                );
                add(c, &["a", "d", "e", "f", "g"]);
                assert_eq!(used(c, &["a", "d", "e", "f", "g"]), 29 + 5 + 4);
                Ok(())
            })
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }

    #[tokio::test]
    async fn cln_semantics() {
        let store = Store::in_memory().unwrap_or_else(|e| panic!("{e}"));
        store
            .with(|c| {
                let e = put(c, &k(&["a", "b"]), b"x", Mode::MustCreate, None)
                    .map_err(|_| StoreError::Task("put".into()))?;
                assert_eq!(e.data, Some((b"x".to_vec(), 0)));
                assert_eq!(
                    code(put(c, &k(&["a", "b"]), b"y", Mode::MustCreate, None)),
                    "AlreadyExists"
                );
                assert_eq!(
                    code(put(c, &k(&["a", "c"]), b"y", Mode::MustReplace, None)),
                    "DoesNotExist"
                );
                assert_eq!(
                    code(put(c, &k(&["a", "b"]), b"y", Mode::MustReplace, Some(5))),
                    "WrongGeneration"
                );
                assert_eq!(
                    code(put(c, &k(&["a"]), b"y", Mode::CreateOrReplace, None)),
                    "HasChildren"
                );
                assert_eq!(
                    code(put(c, &k(&["a", "b", "c"]), b"y", Mode::MustCreate, None)),
                    "ParentHasData([\"a\", \"b\"])"
                );
                let e = put(c, &k(&["a", "b"]), b"yz", Mode::MustAppend, Some(0))
                    .map_err(|_| StoreError::Task("append".into()))?;
                assert_eq!(e.data, Some((b"xyz".to_vec(), 1)));
                put(c, &k(&["a", "d", "e"]), b"1", Mode::MustCreate, None)
                    .map_err(|_| StoreError::Task("put".into()))?;
                let top = list(c, &[]).map_err(|_| StoreError::Task("list".into()))?;
                assert_eq!(
                    top,
                    vec![Entry {
                        key: k(&["a"]),
                        data: None
                    }]
                );
                let under = list(c, &k(&["a"])).map_err(|_| StoreError::Task("list".into()))?;
                assert_eq!(under.len(), 2);
                assert_eq!(under[0].data, Some((b"xyz".to_vec(), 1)));
                assert_eq!(
                    under[1],
                    Entry {
                        key: k(&["a", "d"]),
                        data: None
                    }
                );
                assert_eq!(
                    code(delete(c, &k(&["a", "b"]), Some(0))),
                    "DelWrongGeneration"
                );
                assert_eq!(code(delete(c, &k(&["zz"]), None)), "DelDoesNotExist");
                delete(c, &k(&["a", "b"]), Some(1)).map_err(|_| StoreError::Task("del".into()))?;
                Ok(())
            })
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }
}
