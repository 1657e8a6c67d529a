//! The plugins' key-value datastore with CLN's semantics: hierarchical keys (an entry has
//! either data or children, never both), write modes, and generations for
//! compare-and-swap.

use fulgur_protocol::RpcError;
use fulgur_protocol::error::codes;
use rusqlite::{Connection, OptionalExtension, params};
use serde_json::{Map, Value};

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

impl Entry {
    /// CLN's JSON form: `key`, and with data `generation`, `hex` and `string` (if UTF-8).
    pub fn to_json(&self) -> Value {
        let mut m = Map::new();
        m.insert(
            "key".into(),
            Value::Array(self.key.iter().cloned().map(Value::from).collect()),
        );
        if let Some((data, generation)) = &self.data {
            m.insert("generation".into(), Value::from(*generation));
            m.insert("hex".into(), Value::from(hex(data)));
            if let Ok(s) = std::str::from_utf8(data) {
                m.insert("string".into(), Value::from(s));
            }
        }
        Value::Object(m)
    }
}

/// Lower-case hex.
pub fn hex(data: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(data.len() * 2);
    for b in data {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

/// Parses hex (either case).
pub fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
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

/// Errors are either an RPC answer or a database failure.
#[derive(Debug)]
pub enum DsError {
    /// Answer the caller with this.
    Rpc(RpcError),
    /// The database failed.
    Store(StoreError),
}

impl From<rusqlite::Error> for DsError {
    fn from(e: rusqlite::Error) -> Self {
        DsError::Store(StoreError::Sqlite(e))
    }
}

fn rpc(code: i64, msg: impl Into<String>) -> DsError {
    DsError::Rpc(RpcError::new(code, msg))
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
            return Err(rpc(
                codes::DATASTORE_UPDATE_NO_CHILDREN,
                format!(
                    "Parent key {} exists",
                    serde_json::to_string(&key[..i]).unwrap_or_default()
                ),
            ));
        }
    }
    if has_children(&tx, key)? {
        return Err(rpc(
            codes::DATASTORE_UPDATE_HAS_CHILDREN,
            "Key has children",
        ));
    }
    let old = get(&tx, key)?;
    let (new_data, new_gen) = match (mode, &old) {
        (Mode::MustCreate, Some(_)) => {
            return Err(rpc(
                codes::DATASTORE_UPDATE_ALREADY_EXISTS,
                "Key already exists",
            ));
        }
        (Mode::MustReplace | Mode::MustAppend, None) => {
            return Err(rpc(
                codes::DATASTORE_UPDATE_DOES_NOT_EXIST,
                "Key does not exist",
            ));
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
        return Err(rpc(
            codes::DATASTORE_UPDATE_WRONG_GENERATION,
            "generation is different",
        ));
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
        return Err(rpc(
            codes::DATASTORE_DEL_DOES_NOT_EXIST,
            "Key does not exist",
        ));
    };
    if generation.is_some_and(|want| want != g) {
        return Err(rpc(
            codes::DATASTORE_DEL_WRONG_GENERATION,
            "generation is different",
        ));
    }
    tx.execute("DELETE FROM datastore WHERE key = ?1", params![encode(key)])?;
    tx.commit()?;
    Ok(Entry {
        key: key.to_vec(),
        data: Some((data, g)),
    })
}

/// `listdatastore`: the entry at `key` (with its data) or, for a parent, its immediate
/// children (children that are themselves parents are shown by key only).
pub fn list(conn: &Connection, key: &[String]) -> Result<Vec<Entry>, DsError> {
    let prefix = encode(key);
    let mut upper = prefix.clone();
    upper.push(0xff);
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
    use crate::store::Store;

    fn k(parts: &[&str]) -> Vec<String> {
        parts.iter().map(|s| s.to_string()).collect()
    }

    fn code(r: Result<Entry, DsError>) -> i64 {
        match r {
            Err(DsError::Rpc(e)) => e.code,
            other => panic!("expected an RPC error, got {other:?}"),
        }
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
                    1202
                );
                assert_eq!(
                    code(put(c, &k(&["a", "c"]), b"y", Mode::MustReplace, None)),
                    1203
                );
                assert_eq!(
                    code(put(c, &k(&["a", "b"]), b"y", Mode::MustReplace, Some(5))),
                    1204
                );
                assert_eq!(
                    code(put(c, &k(&["a"]), b"y", Mode::CreateOrReplace, None)),
                    1205
                );
                assert_eq!(
                    code(put(c, &k(&["a", "b", "c"]), b"y", Mode::MustCreate, None)),
                    1206
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
                assert_eq!(code(delete(c, &k(&["a", "b"]), Some(0))), 1201);
                assert_eq!(code(delete(c, &k(&["zz"]), None)), 1200);
                delete(c, &k(&["a", "b"]), Some(1)).map_err(|_| StoreError::Task("del".into()))?;
                Ok(())
            })
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }

    #[test]
    fn json_form() {
        let e = Entry {
            key: k(&["p", "q"]),
            data: Some((vec![0xff, 0x00], 3)),
        };
        assert_eq!(
            e.to_json(),
            serde_json::json!({"key":["p","q"],"generation":3,"hex":"ff00"})
        );
        assert_eq!(unhex("FF00"), Some(vec![0xff, 0]));
        assert_eq!(unhex("f"), None);
    }
}
