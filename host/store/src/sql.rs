//! One SQL interface over the node's two database engines: SQLite (one file, the default)
//! and PostgreSQL (`--wallet=postgres://...`).
//!
//! Its shape is rusqlite's (a [`Connection`], `prepare_cached`, `query_row`, `query_map`,
//! [`params!`](crate::params), [`OptionalExtension`], transactions that deref to the
//! connection), so the code that keeps the node's rows is written once, in the SQL both
//! engines speak: `?N` placeholders (rewritten to `$N` for PostgreSQL), `ON CONFLICT`,
//! `RETURNING`. The few statements that differ ask [`Connection::engine`]. Values travel as
//! SQLite's five storage classes ([`ValueRef`]); on PostgreSQL an integer binds to whichever
//! integer, boolean or float type the statement expects, as SQLite's affinity would take it.

use std::cell::{Cell, RefCell};
use std::fmt;
use std::sync::Arc;

mod pg;
pub mod translate;

pub use pg::PgConfigError;

/// Which engine a connection talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    /// An SQLite file (or memory).
    Sqlite,
    /// A PostgreSQL server.
    Postgres,
}

/// A value read from or bound to a statement, borrowed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ValueRef<'a> {
    /// SQL NULL.
    Null,
    /// A 64-bit integer (also PostgreSQL's smaller integers and booleans).
    Integer(i64),
    /// A float.
    Real(f64),
    /// UTF-8 text (as bytes, as rusqlite gives it).
    Text(&'a [u8]),
    /// Bytes.
    Blob(&'a [u8]),
}

/// An owned [`ValueRef`].
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// SQL NULL.
    Null,
    /// A 64-bit integer.
    Integer(i64),
    /// A float.
    Real(f64),
    /// Text.
    Text(String),
    /// Bytes.
    Blob(Vec<u8>),
}

impl Value {
    fn as_ref(&self) -> ValueRef<'_> {
        match self {
            Value::Null => ValueRef::Null,
            Value::Integer(i) => ValueRef::Integer(*i),
            Value::Real(f) => ValueRef::Real(*f),
            Value::Text(s) => ValueRef::Text(s.as_bytes()),
            Value::Blob(b) => ValueRef::Blob(b),
        }
    }
}

impl From<i64> for Value {
    fn from(i: i64) -> Value {
        Value::Integer(i)
    }
}

impl From<String> for Value {
    fn from(s: String) -> Value {
        Value::Text(s)
    }
}

impl From<Vec<u8>> for Value {
    fn from(b: Vec<u8>) -> Value {
        Value::Blob(b)
    }
}

impl<'a> ValueRef<'a> {
    /// The text, or a type error.
    pub fn as_str(&self) -> FromSqlResult<&'a str> {
        match self {
            ValueRef::Text(t) => {
                std::str::from_utf8(t).map_err(|e| FromSqlError::Other(Box::new(e)))
            }
            _ => Err(FromSqlError::InvalidType),
        }
    }

    fn type_name(&self) -> Type {
        match self {
            ValueRef::Null => Type::Null,
            ValueRef::Integer(_) => Type::Integer,
            ValueRef::Real(_) => Type::Real,
            ValueRef::Text(_) => Type::Text,
            ValueRef::Blob(_) => Type::Blob,
        }
    }
}

/// The storage class of a value, for errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Type {
    /// NULL.
    Null,
    /// Integer.
    Integer,
    /// Float.
    Real,
    /// Text.
    Text,
    /// Bytes.
    Blob,
}

impl fmt::Display for Type {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Type::Null => "Null",
            Type::Integer => "Integer",
            Type::Real => "Real",
            Type::Text => "Text",
            Type::Blob => "Blob",
        })
    }
}

/// What a parameter binds: borrowed, or made for the occasion.
#[derive(Debug, Clone, PartialEq)]
pub enum ToSqlOutput<'a> {
    /// A borrowed value.
    Borrowed(ValueRef<'a>),
    /// An owned value.
    Owned(Value),
}

impl ToSqlOutput<'_> {
    fn value(&self) -> ValueRef<'_> {
        match self {
            ToSqlOutput::Borrowed(v) => *v,
            ToSqlOutput::Owned(v) => v.as_ref(),
        }
    }
}

impl<'a> From<&'a str> for ToSqlOutput<'a> {
    fn from(s: &'a str) -> Self {
        ToSqlOutput::Borrowed(ValueRef::Text(s.as_bytes()))
    }
}

impl From<i64> for ToSqlOutput<'_> {
    fn from(i: i64) -> Self {
        ToSqlOutput::Owned(Value::Integer(i))
    }
}

/// A value that can be bound as a parameter.
pub trait ToSql {
    /// The value to bind.
    fn to_sql(&self) -> Result<ToSqlOutput<'_>>;
}

/// Why a column could not be read as the type asked for.
#[derive(Debug)]
pub enum FromSqlError {
    /// Another storage class.
    InvalidType,
    /// An integer out of the type's range.
    OutOfRange(i64),
    /// Anything else.
    Other(Box<dyn std::error::Error + Send + Sync + 'static>),
}

impl fmt::Display for FromSqlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FromSqlError::InvalidType => f.write_str("invalid type"),
            FromSqlError::OutOfRange(i) => write!(f, "value {i} out of range"),
            FromSqlError::Other(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for FromSqlError {}

/// The result of reading a column.
pub type FromSqlResult<T> = std::result::Result<T, FromSqlError>;

/// A type a column can be read as.
pub trait FromSql: Sized {
    /// Reads it from `v`.
    fn column_result(v: ValueRef<'_>) -> FromSqlResult<Self>;
}

/// A database error.
#[derive(Debug)]
pub enum Error {
    /// SQLite said so.
    Sqlite(rusqlite::Error),
    /// PostgreSQL said so (or the connection to it failed).
    Postgres(pg::PgError),
    /// `query_row` found no row.
    QueryReturnedNoRows,
    /// A column could not be read as the type asked for.
    FromSqlConversionFailure(
        usize,
        Type,
        Box<dyn std::error::Error + Send + Sync + 'static>,
    ),
    /// A column held another storage class than the type asked for.
    InvalidColumnType(usize, Type),
    /// An integer column out of the asked type's range.
    IntegralValueOutOfRange(usize, i64),
    /// No such column in the row.
    InvalidColumnIndex(usize),
    /// A parameter could not be bound.
    ToSqlConversionFailure(Box<dyn std::error::Error + Send + Sync + 'static>),
    /// A `db_write` plugin did not take a transaction's writes: it was rolled back.
    WriteHook(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Sqlite(e) => e.fmt(f),
            Error::Postgres(e) => e.fmt(f),
            Error::QueryReturnedNoRows => f.write_str("Query returned no rows"),
            Error::FromSqlConversionFailure(i, t, e) => {
                write!(f, "Conversion error from type {t} at index: {i}, {e}")
            }
            Error::InvalidColumnType(i, t) => write!(f, "Invalid column type {t} at index: {i}"),
            Error::IntegralValueOutOfRange(i, v) => {
                write!(f, "Integer {v} out of range at index {i}")
            }
            Error::InvalidColumnIndex(i) => write!(f, "Invalid column index: {i}"),
            Error::ToSqlConversionFailure(e) => e.fmt(f),
            Error::WriteHook(why) => write!(f, "db_write hook refused the write: {why}"),
        }
    }
}

impl std::error::Error for Error {}

impl From<rusqlite::Error> for Error {
    fn from(e: rusqlite::Error) -> Error {
        match e {
            rusqlite::Error::QueryReturnedNoRows => Error::QueryReturnedNoRows,
            e => Error::Sqlite(e),
        }
    }
}

impl Error {
    /// Whether the database itself failed (disk full, I/O error, read-only, corrupt, the
    /// server gone or the connection lost), as opposed to one statement being refused:
    /// the node cannot keep its state, so it stops.
    pub fn is_storage_failure(&self) -> bool {
        use rusqlite::ErrorCode as C;
        match self {
            Error::Sqlite(rusqlite::Error::SqliteFailure(e, _)) => matches!(
                e.code,
                C::DiskFull
                    | C::SystemIoFailure
                    | C::ReadOnly
                    | C::CannotOpen
                    | C::DatabaseCorrupt
                    | C::NotADatabase
                    | C::PermissionDenied
                    | C::OutOfMemory
            ),
            Error::Postgres(e) => e.is_storage_failure(),
            // CLN's rule: a backup that silently falls behind is worse than none.
            Error::WriteHook(_) => true,
            _ => false,
        }
    }

    /// Whether a UNIQUE or PRIMARY KEY constraint refused the write.
    pub fn is_unique_violation(&self) -> bool {
        match self {
            Error::Sqlite(rusqlite::Error::SqliteFailure(e, _)) => {
                e.code == rusqlite::ErrorCode::ConstraintViolation
            }
            Error::Postgres(e) => e.is_unique_violation(),
            _ => false,
        }
    }
}

/// A database result.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// `.optional()` on a `query_row` result: no row is `Ok(None)`.
pub trait OptionalExtension<T> {
    /// `Ok(None)` for [`Error::QueryReturnedNoRows`].
    fn optional(self) -> Result<Option<T>>;
}

impl<T> OptionalExtension<T> for Result<T> {
    fn optional(self) -> Result<Option<T>> {
        match self {
            Ok(v) => Ok(Some(v)),
            Err(Error::QueryReturnedNoRows) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// Parameters of a statement.
pub trait Params {
    /// The values, in order.
    fn values(&self) -> Result<Vec<ToSqlOutput<'_>>>;
}

impl Params for &[&dyn ToSql] {
    fn values(&self) -> Result<Vec<ToSqlOutput<'_>>> {
        self.iter().map(|p| p.to_sql()).collect()
    }
}

impl Params for [&(dyn ToSql + Send + Sync); 0] {
    fn values(&self) -> Result<Vec<ToSqlOutput<'_>>> {
        Ok(vec![])
    }
}

impl<T: ToSql, const N: usize> Params for &[T; N] {
    fn values(&self) -> Result<Vec<ToSqlOutput<'_>>> {
        self.iter().map(|p| p.to_sql()).collect()
    }
}

macro_rules! array_params {
    ($($n:literal)*) => {$(
        impl<T: ToSql> Params for [T; $n] {
            fn values(&self) -> Result<Vec<ToSqlOutput<'_>>> {
                self.iter().map(|p| p.to_sql()).collect()
            }
        }
    )*};
}
array_params!(1 2 3 4 5 6 7 8);

/// Parameters from an iterator of values (rusqlite's `params_from_iter`).
pub struct ParamsFromIter<T>(Vec<T>);

/// The parameters `iter` yields, in order.
pub fn params_from_iter<I>(iter: I) -> ParamsFromIter<I::Item>
where
    I: IntoIterator,
    I::Item: ToSql,
{
    ParamsFromIter(iter.into_iter().collect())
}

impl<T: ToSql> Params for ParamsFromIter<T> {
    fn values(&self) -> Result<Vec<ToSqlOutput<'_>>> {
        self.0.iter().map(|p| p.to_sql()).collect()
    }
}

/// `params![a, b]`: the parameters of a statement, of any [`ToSql`] types.
#[macro_export]
macro_rules! params {
    () => {
        &[] as &[&dyn $crate::sql::ToSql]
    };
    ($($p:expr),+ $(,)?) => {
        &[$(&$p as &dyn $crate::sql::ToSql),+] as &[&dyn $crate::sql::ToSql]
    };
}
pub use crate::params;

// ----- ToSql and FromSql for the types the node stores -----

impl<T: ToSql + ?Sized> ToSql for &T {
    fn to_sql(&self) -> Result<ToSqlOutput<'_>> {
        (**self).to_sql()
    }
}

impl<T: ToSql> ToSql for Option<T> {
    fn to_sql(&self) -> Result<ToSqlOutput<'_>> {
        match self {
            Some(v) => v.to_sql(),
            None => Ok(ToSqlOutput::Borrowed(ValueRef::Null)),
        }
    }
}

impl ToSql for str {
    fn to_sql(&self) -> Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::Borrowed(ValueRef::Text(self.as_bytes())))
    }
}

impl ToSql for String {
    fn to_sql(&self) -> Result<ToSqlOutput<'_>> {
        self.as_str().to_sql()
    }
}

impl ToSql for [u8] {
    fn to_sql(&self) -> Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::Borrowed(ValueRef::Blob(self)))
    }
}

impl ToSql for Vec<u8> {
    fn to_sql(&self) -> Result<ToSqlOutput<'_>> {
        self.as_slice().to_sql()
    }
}

impl<const N: usize> ToSql for [u8; N] {
    fn to_sql(&self) -> Result<ToSqlOutput<'_>> {
        self.as_slice().to_sql()
    }
}

impl ToSql for f64 {
    fn to_sql(&self) -> Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::Owned(Value::Real(*self)))
    }
}

impl ToSql for bool {
    fn to_sql(&self) -> Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::Owned(Value::Integer(i64::from(*self))))
    }
}

impl ToSql for Value {
    fn to_sql(&self) -> Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::Borrowed(self.as_ref()))
    }
}

impl ToSql for ToSqlOutput<'_> {
    fn to_sql(&self) -> Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::Borrowed(self.value()))
    }
}

macro_rules! int_sql {
    ($($t:ty)*) => {$(
        impl ToSql for $t {
            fn to_sql(&self) -> Result<ToSqlOutput<'_>> {
                Ok(ToSqlOutput::Owned(Value::Integer(i64::from(*self))))
            }
        }

        impl FromSql for $t {
            fn column_result(v: ValueRef<'_>) -> FromSqlResult<Self> {
                let i = i64::column_result(v)?;
                <$t>::try_from(i).map_err(|_| FromSqlError::OutOfRange(i))
            }
        }
    )*};
}
int_sql!(i8 i16 i32 u8 u16 u32);

impl ToSql for i64 {
    fn to_sql(&self) -> Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::Owned(Value::Integer(*self)))
    }
}

impl ToSql for usize {
    fn to_sql(&self) -> Result<ToSqlOutput<'_>> {
        i64::try_from(*self)
            .map(|i| ToSqlOutput::Owned(Value::Integer(i)))
            .map_err(|e| Error::ToSqlConversionFailure(Box::new(e)))
    }
}

impl FromSql for i64 {
    fn column_result(v: ValueRef<'_>) -> FromSqlResult<Self> {
        match v {
            ValueRef::Integer(i) => Ok(i),
            _ => Err(FromSqlError::InvalidType),
        }
    }
}

impl FromSql for usize {
    fn column_result(v: ValueRef<'_>) -> FromSqlResult<Self> {
        let i = i64::column_result(v)?;
        usize::try_from(i).map_err(|_| FromSqlError::OutOfRange(i))
    }
}

impl FromSql for bool {
    fn column_result(v: ValueRef<'_>) -> FromSqlResult<Self> {
        i64::column_result(v).map(|i| i != 0)
    }
}

impl FromSql for f64 {
    fn column_result(v: ValueRef<'_>) -> FromSqlResult<Self> {
        match v {
            ValueRef::Integer(i) => Ok(i as f64),
            ValueRef::Real(f) => Ok(f),
            _ => Err(FromSqlError::InvalidType),
        }
    }
}

impl FromSql for String {
    fn column_result(v: ValueRef<'_>) -> FromSqlResult<Self> {
        v.as_str().map(str::to_string)
    }
}

impl FromSql for Vec<u8> {
    fn column_result(v: ValueRef<'_>) -> FromSqlResult<Self> {
        match v {
            ValueRef::Blob(b) | ValueRef::Text(b) => Ok(b.to_vec()),
            _ => Err(FromSqlError::InvalidType),
        }
    }
}

impl<T: FromSql> FromSql for Option<T> {
    fn column_result(v: ValueRef<'_>) -> FromSqlResult<Self> {
        match v {
            ValueRef::Null => Ok(None),
            v => T::column_result(v).map(Some),
        }
    }
}

impl FromSql for Value {
    fn column_result(v: ValueRef<'_>) -> FromSqlResult<Self> {
        Ok(match v {
            ValueRef::Null => Value::Null,
            ValueRef::Integer(i) => Value::Integer(i),
            ValueRef::Real(f) => Value::Real(f),
            ValueRef::Text(t) => Value::Text(String::from_utf8_lossy(t).into_owned()),
            ValueRef::Blob(b) => Value::Blob(b.to_vec()),
        })
    }
}

// ----- SQLite binding -----

struct SqliteArg<'a>(ValueRef<'a>);

impl rusqlite::ToSql for SqliteArg<'_> {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        use rusqlite::types::ValueRef as R;
        Ok(rusqlite::types::ToSqlOutput::Borrowed(match self.0 {
            ValueRef::Null => R::Null,
            ValueRef::Integer(i) => R::Integer(i),
            ValueRef::Real(f) => R::Real(f),
            ValueRef::Text(t) => R::Text(t),
            ValueRef::Blob(b) => R::Blob(b),
        }))
    }
}

fn sqlite_bind(st: &mut rusqlite::Statement<'_>, values: &[ToSqlOutput<'_>]) -> Result<()> {
    for (i, v) in values.iter().enumerate() {
        st.raw_bind_parameter(i + 1, SqliteArg(v.value()))?;
    }
    Ok(())
}

fn from_sqlite(v: rusqlite::types::ValueRef<'_>) -> ValueRef<'_> {
    use rusqlite::types::ValueRef as R;
    match v {
        R::Null => ValueRef::Null,
        R::Integer(i) => ValueRef::Integer(i),
        R::Real(f) => ValueRef::Real(f),
        R::Text(t) => ValueRef::Text(t),
        R::Blob(b) => ValueRef::Blob(b),
    }
}

// ----- Connection -----

enum Backend {
    Sqlite(rusqlite::Connection),
    Postgres(pg::PgConn),
}

/// Where each committed transaction's writes go before the commit (CLN's `db_write`
/// hook): `Err` rolls the transaction back.
pub trait WriteHook: Send + Sync {
    /// Delivers the writes of the transaction that makes the database's `data_version`
    /// `data_version`, as SQL with the values written in.
    fn deliver(&self, data_version: u64, writes: &[String]) -> Result<(), String>;
}

/// A connection to the node's database, on either engine.
pub struct Connection {
    backend: Backend,
    /// Where each transaction's writes go before it commits, in order (the plugins'
    /// `db_write`, the `sqlite3://MAIN:BACKUP` copy).
    hooks: Vec<Arc<dyn WriteHook>>,
    /// Writes of the open transaction, for the hook.
    pending: RefCell<Vec<String>>,
    /// Whether a transaction is open.
    in_tx: Cell<bool>,
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Connection({:?})", self.engine())
    }
}

impl Connection {
    /// An SQLite connection.
    pub fn sqlite(conn: rusqlite::Connection) -> Connection {
        Connection::on(Backend::Sqlite(conn))
    }

    fn on(backend: Backend) -> Connection {
        Connection {
            backend,
            hooks: vec![],
            pending: RefCell::new(vec![]),
            in_tx: Cell::new(false),
        }
    }

    /// Sends every transaction's writes to `hook` too before it commits, from now on (the
    /// `data_version` row counts those transactions); after the hooks added before.
    pub fn add_write_hook(&mut self, hook: Arc<dyn WriteHook>) {
        self.hooks.push(hook);
    }

    /// `value` as an SQL literal of this engine (for the writes `db_write` reports).
    fn literal(&self, value: ValueRef<'_>) -> String {
        match value {
            ValueRef::Null => "NULL".into(),
            ValueRef::Integer(i) => i.to_string(),
            ValueRef::Real(f) if f.is_finite() => format!("{f:?}"),
            ValueRef::Real(_) => "NULL".into(),
            ValueRef::Text(t) => translate::quote(&String::from_utf8_lossy(t)),
            ValueRef::Blob(b) => {
                let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
                match self.engine() {
                    Engine::Sqlite => format!("X'{hex}'"),
                    Engine::Postgres => format!("'\\x{hex}'::bytea"),
                }
            }
        }
    }

    /// Records a write of the open transaction for the hook.
    fn record(&self, sql: &str, values: &[ToSqlOutput<'_>]) {
        let expanded = translate::map_placeholders(sql, |n| {
            usize::try_from(n)
                .ok()
                .and_then(|n| n.checked_sub(1))
                .and_then(|i| values.get(i))
                .map_or_else(|| "NULL".into(), |v| self.literal(v.value()))
        });
        self.pending.borrow_mut().push(expanded);
    }

    /// Runs `write` (one statement, `sql` with `values`) as the hook needs it: inside the
    /// open transaction, or in one of its own that is delivered and committed.
    fn hooked<T>(
        &self,
        sql: &str,
        values: &[ToSqlOutput<'_>],
        write: impl FnOnce() -> Result<T>,
    ) -> Result<T> {
        if self.hooks.is_empty() || !translate::is_write(sql) {
            return write();
        }
        if self.in_tx.get() {
            let r = write()?;
            self.record(sql, values);
            return Ok(r);
        }
        let tx = self.begin(TransactionBehavior::Deferred)?;
        let r = write()?;
        self.record(sql, values);
        tx.commit()?;
        Ok(r)
    }

    /// Delivers the open transaction's writes (with the `data_version` bump, as CLN's
    /// writes include it) before its commit.
    fn deliver_pending(&self) -> Result<()> {
        if self.hooks.is_empty() || self.pending.borrow().is_empty() {
            return Ok(());
        }
        const BUMP: &str = "UPDATE vars SET intval = intval + 1 WHERE name = 'data_version'";
        self.prepare_cached_raw(BUMP)?.execute_raw(&[])?;
        self.pending.borrow_mut().push(BUMP.to_string());
        let version: i64 = self
            .prepare_cached_raw("SELECT intval FROM vars WHERE name = 'data_version'")?
            .query_row([], |r| r.get(0))?;
        let writes = std::mem::take(&mut *self.pending.borrow_mut());
        let version = u64::try_from(version).unwrap_or(0);
        for hook in &self.hooks {
            hook.deliver(version, &writes).map_err(Error::WriteHook)?;
        }
        Ok(())
    }

    /// A new in-memory SQLite database.
    pub fn open_in_memory() -> Result<Connection> {
        Ok(Connection::sqlite(rusqlite::Connection::open_in_memory()?))
    }

    /// Connects to the PostgreSQL server `dsn` names (`postgres://user:pw@host:port/db`).
    pub fn postgres(dsn: &str) -> Result<Connection> {
        Ok(Connection::on(Backend::Postgres(
            pg::PgConn::connect(dsn).map_err(Error::Postgres)?,
        )))
    }

    /// Which engine this is.
    pub fn engine(&self) -> Engine {
        match self.backend {
            Backend::Sqlite(_) => Engine::Sqlite,
            Backend::Postgres(_) => Engine::Postgres,
        }
    }

    /// The SQLite connection underneath, on SQLite.
    pub fn as_sqlite(&self) -> Option<&rusqlite::Connection> {
        match &self.backend {
            Backend::Sqlite(c) => Some(c),
            Backend::Postgres(_) => None,
        }
    }

    /// A statement, prepared once per connection and kept.
    pub fn prepare_cached(&self, sql: &str) -> Result<Statement<'_>> {
        let mut st = self.prepare_cached_raw(sql)?;
        st.hooked = (!self.hooks.is_empty()).then(|| (self, sql.to_string()));
        Ok(st)
    }

    fn prepare_cached_raw(&self, sql: &str) -> Result<Statement<'_>> {
        Ok(Statement {
            inner: match &self.backend {
                Backend::Sqlite(c) => StatementInner::Sqlite(c.prepare_cached(sql)?),
                Backend::Postgres(c) => StatementInner::Postgres(c, c.prepare(sql, true)?),
            },
            hooked: None,
        })
    }

    /// A statement run once.
    pub fn prepare(&self, sql: &str) -> Result<Statement<'_>> {
        Ok(Statement {
            inner: match &self.backend {
                Backend::Sqlite(c) => StatementInner::SqliteOnce(c.prepare(sql)?),
                Backend::Postgres(c) => StatementInner::Postgres(c, c.prepare(sql, false)?),
            },
            hooked: (!self.hooks.is_empty()).then(|| (self, sql.to_string())),
        })
    }

    /// Runs one statement; the number of rows it changed.
    pub fn execute<P: Params>(&self, sql: &str, params: P) -> Result<usize> {
        self.prepare(sql)?.execute(params)
    }

    /// The first row of a query, read by `f`; [`Error::QueryReturnedNoRows`] without one.
    pub fn query_row<T, P: Params, F>(&self, sql: &str, params: P, f: F) -> Result<T>
    where
        F: FnOnce(&Row<'_>) -> Result<T>,
    {
        self.prepare(sql)?.query_row(params, f)
    }

    /// Runs statements separated by `;`, without parameters.
    pub fn execute_batch(&self, sql: &str) -> Result<()> {
        self.hooked(sql, &[], || self.batch_raw(sql))
    }

    fn batch_raw(&self, sql: &str) -> Result<()> {
        match &self.backend {
            Backend::Sqlite(c) => Ok(c.execute_batch(sql)?),
            Backend::Postgres(c) => c.batch(sql),
        }
    }

    /// The id of the row the last INSERT made (on PostgreSQL, the last value a sequence of
    /// this session gave).
    pub fn last_insert_rowid(&self) -> i64 {
        match &self.backend {
            Backend::Sqlite(c) => c.last_insert_rowid(),
            Backend::Postgres(c) => c.last_insert_id(),
        }
    }

    /// Begins a transaction (deferred).
    pub fn transaction(&mut self) -> Result<Transaction<'_>> {
        self.begin(TransactionBehavior::Deferred)
    }

    /// Begins a transaction that takes the write lock at once on SQLite.
    pub fn transaction_with_behavior(
        &mut self,
        behavior: TransactionBehavior,
    ) -> Result<Transaction<'_>> {
        self.begin(behavior)
    }

    /// A transaction on a shared connection: the caller makes sure nothing else uses the
    /// connection until it ends.
    pub fn unchecked_transaction(&self) -> Result<Transaction<'_>> {
        self.begin(TransactionBehavior::Deferred)
    }

    fn begin(&self, behavior: TransactionBehavior) -> Result<Transaction<'_>> {
        let sql = match (self.engine(), behavior) {
            (Engine::Sqlite, TransactionBehavior::Immediate) => "BEGIN IMMEDIATE",
            _ => "BEGIN",
        };
        self.batch_raw(sql)?;
        self.in_tx.set(true);
        self.pending.borrow_mut().clear();
        Ok(Transaction {
            conn: self,
            done: false,
        })
    }

    fn end(&self, sql: &str) -> Result<()> {
        self.in_tx.set(false);
        self.pending.borrow_mut().clear();
        self.batch_raw(sql)
    }

    /// Commits without waiting for the disk (SQLite's `synchronous=NORMAL`, PostgreSQL's
    /// `synchronous_commit=off`) while `relaxed` is set: a crash of the process loses
    /// nothing, a crash of the machine may lose the last commits.
    pub fn set_relaxed(&self, relaxed: bool) -> Result<()> {
        match &self.backend {
            Backend::Sqlite(c) => {
                let sql = if relaxed {
                    "PRAGMA synchronous=NORMAL"
                } else {
                    "PRAGMA synchronous=FULL"
                };
                c.prepare_cached(sql)?.execute([])?;
                Ok(())
            }
            Backend::Postgres(c) => c.set_relaxed(relaxed),
        }
    }
}

/// How a transaction begins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransactionBehavior {
    /// Locks when it first writes.
    Deferred,
    /// Takes SQLite's write lock at once.
    Immediate,
}

/// A transaction: rolled back when dropped without [`Transaction::commit`].
pub struct Transaction<'c> {
    conn: &'c Connection,
    done: bool,
}

impl Transaction<'_> {
    /// Commits it (after the `db_write` hook took its writes; rolled back if it did not).
    pub fn commit(mut self) -> Result<()> {
        self.done = true;
        if let Err(e) = self.conn.deliver_pending() {
            let _ = self.conn.end("ROLLBACK");
            return Err(e);
        }
        self.conn.end("COMMIT")
    }

    /// Rolls it back.
    pub fn rollback(mut self) -> Result<()> {
        self.done = true;
        self.conn.end("ROLLBACK")
    }
}

impl std::ops::Deref for Transaction<'_> {
    type Target = Connection;
    fn deref(&self) -> &Connection {
        self.conn
    }
}

impl Drop for Transaction<'_> {
    fn drop(&mut self) {
        if !self.done {
            let _ = self.conn.end("ROLLBACK");
        }
    }
}

// ----- Statements and rows -----

enum StatementInner<'c> {
    Sqlite(rusqlite::CachedStatement<'c>),
    SqliteOnce(rusqlite::Statement<'c>),
    Postgres(&'c pg::PgConn, pg::PgStatement),
}

/// A prepared statement.
pub struct Statement<'c> {
    inner: StatementInner<'c>,
    /// With a `db_write` hook: the connection and the statement's text, to report it.
    hooked: Option<(&'c Connection, String)>,
}

impl<'c> Statement<'c> {
    fn sqlite(&mut self) -> Option<&mut rusqlite::Statement<'c>> {
        match &mut self.inner {
            StatementInner::Sqlite(s) => Some(s),
            StatementInner::SqliteOnce(s) => Some(s),
            StatementInner::Postgres(..) => None,
        }
    }

    /// Runs it; the number of rows it changed.
    pub fn execute<P: Params>(&mut self, params: P) -> Result<usize> {
        let values = params.values()?;
        match self.hooked.take() {
            Some((conn, sql)) => {
                let r = conn.hooked(&sql, &values, || self.execute_values(&values));
                self.hooked = Some((conn, sql));
                r
            }
            None => self.execute_values(&values),
        }
    }

    fn execute_raw(&mut self, values: &[ToSqlOutput<'_>]) -> Result<usize> {
        self.execute_values(values)
    }

    fn execute_values(&mut self, values: &[ToSqlOutput<'_>]) -> Result<usize> {
        if let StatementInner::Postgres(c, st) = &self.inner {
            return c.execute(st, values);
        }
        let Some(st) = self.sqlite() else {
            return Ok(0);
        };
        sqlite_bind(st, values)?;
        Ok(st.raw_execute()?)
    }

    /// Runs it and reads every row with `f`.
    pub fn query_map<T, P: Params, F>(&mut self, params: P, mut f: F) -> Result<MappedRows<T>>
    where
        F: FnMut(&Row<'_>) -> Result<T>,
    {
        let mut out = vec![];
        self.each_row(params, |r| {
            out.push(f(r));
            true
        })?;
        Ok(MappedRows(out.into_iter()))
    }

    /// The first row, read by `f`; [`Error::QueryReturnedNoRows`] without one.
    pub fn query_row<T, P: Params, F>(&mut self, params: P, f: F) -> Result<T>
    where
        F: FnOnce(&Row<'_>) -> Result<T>,
    {
        let mut f = Some(f);
        let mut out = None;
        self.each_row(params, |r| {
            if let Some(f) = f.take() {
                out = Some(f(r));
            }
            false
        })?;
        out.unwrap_or(Err(Error::QueryReturnedNoRows))
    }

    /// Whether the query gives at least one row.
    pub fn exists<P: Params>(&mut self, params: P) -> Result<bool> {
        let mut any = false;
        self.each_row(params, |_| {
            any = true;
            false
        })?;
        Ok(any)
    }

    /// Runs it; the rows, read one at a time with [`Rows::next`].
    pub fn query<P: Params>(&mut self, params: P) -> Result<Rows> {
        let mut rows = vec![];
        self.each_row(params, |r| {
            rows.push(r.to_owned_values());
            true
        })?;
        Ok(Rows {
            rows: rows.into_iter(),
            current: None,
        })
    }

    /// Calls `f` on each row until it returns false (a write with `RETURNING` is reported
    /// to the `db_write` hook like any other).
    fn each_row<P: Params>(&mut self, params: P, f: impl FnMut(&Row<'_>) -> bool) -> Result<()> {
        let values = params.values()?;
        match self.hooked.take() {
            Some((conn, sql)) => {
                let r = conn.hooked(&sql, &values, || self.each_row_values(&values, f));
                self.hooked = Some((conn, sql));
                r
            }
            None => self.each_row_values(&values, f),
        }
    }

    fn each_row_values(
        &mut self,
        values: &[ToSqlOutput<'_>],
        mut f: impl FnMut(&Row<'_>) -> bool,
    ) -> Result<()> {
        if let StatementInner::Postgres(c, st) = &self.inner {
            for r in c.query(st, values)? {
                if !f(&Row {
                    inner: RowInner::Postgres(&r),
                }) {
                    break;
                }
            }
            return Ok(());
        }
        let Some(st) = self.sqlite() else {
            return Ok(());
        };
        sqlite_bind(st, values)?;
        let mut rows = st.raw_query();
        while let Some(r) = rows.next()? {
            if !f(&Row {
                inner: RowInner::Sqlite(r),
            }) {
                break;
            }
        }
        Ok(())
    }
}

/// The rows of [`Statement::query_map`], each read or failed.
pub struct MappedRows<T>(std::vec::IntoIter<Result<T>>);

impl<T> Iterator for MappedRows<T> {
    type Item = Result<T>;
    fn next(&mut self) -> Option<Result<T>> {
        self.0.next()
    }
}

/// The rows of [`Statement::query`].
pub struct Rows {
    rows: std::vec::IntoIter<Vec<Value>>,
    current: Option<Vec<Value>>,
}

impl Rows {
    /// The next row, if any.
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> Result<Option<Row<'_>>> {
        self.current = self.rows.next();
        Ok(self.current.as_deref().map(|v| Row {
            inner: RowInner::Owned(v),
        }))
    }
}

/// How a column is named: by its position (from 0).
pub trait RowIndex {
    /// The position.
    fn index(self) -> usize;
}

impl RowIndex for usize {
    fn index(self) -> usize {
        self
    }
}

enum RowInner<'a> {
    Sqlite(&'a rusqlite::Row<'a>),
    Postgres(&'a pg::PgRow),
    Owned(&'a [Value]),
}

/// One row of a result.
pub struct Row<'a> {
    inner: RowInner<'a>,
}

impl Row<'_> {
    /// Column `i` (from 0), as a `T`.
    pub fn get<I: RowIndex, T: FromSql>(&self, i: I) -> Result<T> {
        let i = i.index();
        let v = self.get_ref(i)?;
        T::column_result(v).map_err(|e| match e {
            FromSqlError::InvalidType => Error::InvalidColumnType(i, v.type_name()),
            FromSqlError::OutOfRange(n) => Error::IntegralValueOutOfRange(i, n),
            FromSqlError::Other(e) => Error::FromSqlConversionFailure(i, v.type_name(), e),
        })
    }

    /// Column `i` as it is stored.
    pub fn get_ref(&self, i: usize) -> Result<ValueRef<'_>> {
        match &self.inner {
            RowInner::Sqlite(r) => Ok(from_sqlite(r.get_ref(i)?)),
            RowInner::Postgres(r) => pg::column(r, i),
            RowInner::Owned(v) => v
                .get(i)
                .map(Value::as_ref)
                .ok_or(Error::InvalidColumnIndex(i)),
        }
    }

    fn column_count(&self) -> usize {
        match &self.inner {
            RowInner::Sqlite(r) => r.as_ref().column_count(),
            RowInner::Postgres(r) => r.len(),
            RowInner::Owned(v) => v.len(),
        }
    }

    fn to_owned_values(&self) -> Vec<Value> {
        (0..self.column_count())
            .map(|i| {
                self.get_ref(i)
                    .ok()
                    .and_then(|v| Value::column_result(v).ok())
                    .unwrap_or(Value::Null)
            })
            .collect()
    }
}
