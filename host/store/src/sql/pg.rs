//! The PostgreSQL side of [`super::Connection`]: `tokio-postgres` driven by a runtime on a
//! thread of its own, so that the store's synchronous calls work from any thread (a tokio
//! worker included) by waiting on the reply with a plain executor.

use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt;

use tokio_postgres::types::{IsNull, Type, to_sql_checked};

use super::{Error, Result, ToSqlOutput, ValueRef, translate};

/// A PostgreSQL error, or a lost connection.
#[derive(Debug)]
pub struct PgError {
    message: String,
    code: Option<String>,
    closed: bool,
}

impl fmt::Display for PgError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl PgError {
    fn from_pg(e: tokio_postgres::Error) -> PgError {
        let code = e.code().map(|c| c.code().to_string());
        let message = match e.as_db_error() {
            Some(db) => format!("{}: {}", db.severity(), db.message()),
            None => e.to_string(),
        };
        PgError {
            message,
            closed: e.is_closed() || code.is_none(),
            code,
        }
    }

    /// Lost connection, server shut down, out of resources, read-only (a standby), or
    /// an I/O error: the node cannot write.
    pub(super) fn is_storage_failure(&self) -> bool {
        if self.closed {
            return true;
        }
        let code = self.code.as_deref().unwrap_or("");
        // 08: connection exception; 53: insufficient resources; 57P: operator
        // intervention (shutdown); 58: system error; 25006: read-only transaction;
        // XX: internal error.
        ["08", "53", "57P", "58", "XX"]
            .iter()
            .any(|p| code.starts_with(p))
            || code == "25006"
            // A write refused by the lease's fence (lease.rs): another node is active.
            || code == crate::lease::FENCED_SQLSTATE
    }

    pub(super) fn is_unique_violation(&self) -> bool {
        self.code.as_deref() == Some("23505")
    }
}

/// Why a `postgres://` DSN cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct PgConfigError(String);

/// A prepared statement on the server, and whether it writes (a write may commit: it
/// carries the durability [`PgConn::set_relaxed`] asked for).
#[derive(Clone)]
pub(super) struct PgStatement {
    st: tokio_postgres::Statement,
    write: bool,
}
/// A row from the server.
pub(super) type PgRow = tokio_postgres::Row;

/// A connection: the client, and the statements prepared on it by their SQLite text.
pub(super) struct PgConn {
    client: tokio_postgres::Client,
    cache: RefCell<HashMap<String, PgStatement>>,
    /// The durability asked for (`synchronous_commit` off while relaxed)...
    relaxed_wanted: std::cell::Cell<bool>,
    /// ...and the session's: set on the server only before a write that needs the other,
    /// not around every relaxed call (two round trips each). `None` after a rollback,
    /// which undoes a `SET` made in its transaction.
    relaxed_set: std::cell::Cell<Option<bool>>,
    /// A `BEGIN` not sent yet: it goes with the transaction's first statement, in the same
    /// round trip (a transaction that runs nothing costs none).
    begin_pending: std::cell::Cell<bool>,
}

fn wait<F: std::future::Future>(f: F) -> F::Output {
    futures_executor::block_on(f)
}

impl PgConn {
    pub(super) fn connect(dsn: &str) -> Result<PgConn, PgError> {
        let config: tokio_postgres::Config = dsn.parse().map_err(PgError::from_pg)?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("postgres".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = tx.send(Err(PgError {
                            message: format!("cannot start PostgreSQL's runtime: {e}"),
                            code: None,
                            closed: true,
                        }));
                        return;
                    }
                };
                rt.block_on(async move {
                    match config.connect(tokio_postgres::NoTls).await {
                        Ok((client, connection)) => {
                            let _ = tx.send(Ok(client));
                            // Runs until the client is dropped or the server goes away;
                            // then every call fails as a storage failure.
                            let _ = connection.await;
                        }
                        Err(e) => {
                            let _ = tx.send(Err(PgError::from_pg(e)));
                        }
                    }
                });
            })
            .map_err(|e| PgError {
                message: format!("cannot start PostgreSQL's thread: {e}"),
                code: None,
                closed: true,
            })?;
        let client = rx.recv().map_err(|_| PgError {
            message: "PostgreSQL's thread ended before connecting".into(),
            code: None,
            closed: true,
        })??;
        Ok(PgConn {
            client,
            cache: RefCell::new(HashMap::new()),
            relaxed_wanted: std::cell::Cell::new(false),
            relaxed_set: std::cell::Cell::new(None),
            begin_pending: std::cell::Cell::new(false),
        })
    }

    pub(super) fn prepare(&self, sql: &str, cached: bool) -> Result<PgStatement> {
        if let Some(st) = self.cache.borrow().get(sql) {
            return Ok(st.clone());
        }
        let prepared = wait(self.client.prepare(&translate::placeholders(sql))).map_err(|e| {
            let mut e = PgError::from_pg(e);
            e.message = format!(
                "{} (in: {})",
                e.message,
                sql.split_whitespace().collect::<Vec<_>>().join(" ")
            );
            Error::Postgres(e)
        })?;
        let st = PgStatement {
            st: prepared,
            write: translate::is_write(sql),
        };
        // Every statement is kept, not only those asked to be: preparing costs PostgreSQL a
        // round trip and a parse each time, and the node's statements are few and fixed.
        // Bounded, for the few built with values in them.
        let _ = cached;
        let mut cache = self.cache.borrow_mut();
        if cache.len() >= 512 {
            cache.clear();
        }
        cache.insert(sql.to_string(), st.clone());
        Ok(st)
    }

    pub(super) fn execute(&self, st: &PgStatement, values: &[ToSqlOutput<'_>]) -> Result<usize> {
        if st.write {
            self.durability()?;
        }
        let args = args(values);
        let refs = refs(&args);
        let n = if self.begin_pending.replace(false) {
            // Pipelined: both requests go out before either answer is read.
            let (begun, n) = wait(futures::future::join(
                self.client.batch_execute("BEGIN"),
                self.client.execute(&st.st, &refs),
            ));
            begun.map_err(pg)?;
            n
        } else {
            wait(self.client.execute(&st.st, &refs))
        }
        .map_err(pg)?;
        Ok(usize::try_from(n).unwrap_or(usize::MAX))
    }

    pub(super) fn query(&self, st: &PgStatement, values: &[ToSqlOutput<'_>]) -> Result<Vec<PgRow>> {
        if st.write {
            self.durability()?;
        }
        let args = args(values);
        let refs = refs(&args);
        if self.begin_pending.replace(false) {
            let (begun, rows) = wait(futures::future::join(
                self.client.batch_execute("BEGIN"),
                self.client.query(&st.st, &refs),
            ));
            begun.map_err(pg)?;
            rows.map_err(pg)
        } else {
            wait(self.client.query(&st.st, &refs)).map_err(pg)
        }
    }

    pub(super) fn batch(&self, sql: &str) -> Result<()> {
        match sql {
            "BEGIN" => {
                self.begin_pending.set(true);
                return Ok(());
            }
            // Nothing ran in it: nothing to end on the server.
            "COMMIT" | "ROLLBACK" if self.begin_pending.replace(false) => return Ok(()),
            _ => {}
        }
        if sql == "COMMIT" || translate::is_write(sql) {
            self.durability()?;
        }
        if self.begin_pending.replace(false) {
            // One simple query, one round trip: the block begins, then runs `sql`.
            return self.batch_raw(&format!("BEGIN; {sql}"));
        }
        self.batch_raw(sql)
    }

    fn batch_raw(&self, sql: &str) -> Result<()> {
        if sql == "ROLLBACK" {
            self.relaxed_set.set(None);
        }
        wait(self.client.batch_execute(sql)).map_err(pg)
    }

    /// Puts the session's `synchronous_commit` where the next write needs it.
    fn durability(&self) -> Result<()> {
        let want = self.relaxed_wanted.get();
        if Some(want) != self.relaxed_set.get() {
            self.batch_raw(if want {
                "SET synchronous_commit TO off"
            } else {
                "SET synchronous_commit TO on"
            })?;
            self.relaxed_set.set(Some(want));
        }
        Ok(())
    }

    pub(super) fn last_insert_id(&self) -> i64 {
        wait(self.client.query_one("SELECT lastval()", &[]))
            .ok()
            .and_then(|r| r.try_get::<_, i64>(0).ok())
            .unwrap_or(0)
    }

    pub(super) fn set_relaxed(&self, relaxed: bool) -> Result<()> {
        self.relaxed_wanted.set(relaxed);
        Ok(())
    }
}

fn pg(e: tokio_postgres::Error) -> Error {
    Error::Postgres(PgError::from_pg(e))
}

/// A parameter, encoded as the type the statement expects (SQLite's affinity, roughly: an
/// integer binds to any integer, boolean or float column, text to text or bytes).
#[derive(Debug)]
struct PgArg<'a>(ValueRef<'a>);

fn args<'a>(values: &'a [ToSqlOutput<'a>]) -> Vec<PgArg<'a>> {
    values.iter().map(|v| PgArg(v.value())).collect()
}

fn refs<'a>(args: &'a [PgArg<'a>]) -> Vec<&'a (dyn tokio_postgres::types::ToSql + Sync)> {
    args.iter()
        .map(|a| a as &(dyn tokio_postgres::types::ToSql + Sync))
        .collect()
}

type BoxError = Box<dyn std::error::Error + Sync + Send>;

impl tokio_postgres::types::ToSql for PgArg<'_> {
    fn to_sql(&self, ty: &Type, out: &mut bytes::BytesMut) -> Result<IsNull, BoxError> {
        match self.0 {
            ValueRef::Null => Ok(IsNull::Yes),
            ValueRef::Integer(i) => match *ty {
                Type::INT2 => i16::try_from(i)?.to_sql(ty, out),
                Type::INT4 => i32::try_from(i)?.to_sql(ty, out),
                Type::BOOL => (i != 0).to_sql(ty, out),
                Type::FLOAT8 => (i as f64).to_sql(ty, out),
                Type::FLOAT4 => (i as f32).to_sql(ty, out),
                Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::UNKNOWN => {
                    i.to_string().as_str().to_sql(&Type::TEXT, out)
                }
                _ => i.to_sql(&Type::INT8, out),
            },
            ValueRef::Real(f) => match *ty {
                Type::FLOAT4 => (f as f32).to_sql(ty, out),
                _ => f.to_sql(&Type::FLOAT8, out),
            },
            ValueRef::Text(t) => match *ty {
                Type::BYTEA => t.to_sql(ty, out),
                _ => std::str::from_utf8(t)?.to_sql(&Type::TEXT, out),
            },
            ValueRef::Blob(b) => match *ty {
                Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::UNKNOWN => {
                    std::str::from_utf8(b)?.to_sql(&Type::TEXT, out)
                }
                _ => b.to_sql(&Type::BYTEA, out),
            },
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    to_sql_checked!();
}

/// A NUMERIC column (what `SUM` of integers gives), as an integer when it is whole.
struct Numeric(ValueRef<'static>);

impl<'a> tokio_postgres::types::FromSql<'a> for Numeric {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Numeric, BoxError> {
        let word = |i: usize| -> Result<i16, BoxError> {
            let b = raw.get(i * 2..i * 2 + 2).ok_or("short NUMERIC")?;
            Ok(i16::from_be_bytes([b[0], b[1]]))
        };
        let (ndigits, weight, sign, dscale) = (word(0)?, word(1)?, word(2)? as u16, word(3)?);
        if sign == 0xC000 {
            return Ok(Numeric(ValueRef::Real(f64::NAN)));
        }
        let mut whole: i128 = 0;
        let mut value: f64 = 0.0;
        for k in 0..usize::try_from(ndigits)? {
            let d = word(4 + k)?;
            let power = i32::from(weight) - i32::try_from(k)?;
            value += f64::from(d) * 10_000f64.powi(power);
            if power >= 0 {
                whole = whole
                    .checked_add(i128::from(d) * 10_000i128.checked_pow(power as u32).ok_or("big")?)
                    .ok_or("big")?;
            }
        }
        let negative = sign == 0x4000;
        if dscale == 0 {
            let whole = if negative { -whole } else { whole };
            return Ok(Numeric(ValueRef::Integer(i64::try_from(whole)?)));
        }
        Ok(Numeric(ValueRef::Real(if negative {
            -value
        } else {
            value
        })))
    }

    fn accepts(ty: &Type) -> bool {
        *ty == Type::NUMERIC
    }
}

/// Column `i` of `r` as one of SQLite's storage classes.
pub(super) fn column(r: &PgRow, i: usize) -> Result<ValueRef<'_>> {
    let col = r.columns().get(i).ok_or(Error::InvalidColumnIndex(i))?;
    let conv = |e: tokio_postgres::Error| Error::Postgres(PgError::from_pg(e));
    let v = match *col.type_() {
        Type::INT8 => r
            .try_get::<_, Option<i64>>(i)
            .map_err(conv)?
            .map(ValueRef::Integer),
        Type::INT4 => r
            .try_get::<_, Option<i32>>(i)
            .map_err(conv)?
            .map(|v| ValueRef::Integer(v.into())),
        Type::INT2 => r
            .try_get::<_, Option<i16>>(i)
            .map_err(conv)?
            .map(|v| ValueRef::Integer(v.into())),
        Type::BOOL => r
            .try_get::<_, Option<bool>>(i)
            .map_err(conv)?
            .map(|v| ValueRef::Integer(v.into())),
        Type::FLOAT8 => r
            .try_get::<_, Option<f64>>(i)
            .map_err(conv)?
            .map(ValueRef::Real),
        Type::FLOAT4 => r
            .try_get::<_, Option<f32>>(i)
            .map_err(conv)?
            .map(|v| ValueRef::Real(v.into())),
        Type::NUMERIC => r
            .try_get::<_, Option<Numeric>>(i)
            .map_err(conv)?
            .map(|n| n.0),
        Type::BYTEA => r
            .try_get::<_, Option<&[u8]>>(i)
            .map_err(conv)?
            .map(ValueRef::Blob),
        _ => r
            .try_get::<_, Option<&str>>(i)
            .map_err(conv)?
            .map(|s| ValueRef::Text(s.as_bytes())),
    };
    Ok(v.unwrap_or(ValueRef::Null))
}
