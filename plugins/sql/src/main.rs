//! `sql` and `listsqlschemas`, CLN's built-in `sql` plugin: read-only SQL over the node's
//! data, in an in-memory SQLite database whose tables and columns are CLN's.
//!
//! The tables come from CLN's schemas of the list commands (`tables.json`, written by
//! `gen-tables.py` with CLN's naming rules): `invoices` from `listinvoices`, `peerchannels`
//! from `listpeerchannels` with its arrays as related tables (`peerchannels_features`,
//! whose `row` is the channel's `rowid`), objects folded into columns
//! (`funding_local_funds_msat`), and so on. A query is prepared first under an authorizer
//! that allows only reading and CLN's list of functions and notes the tables it reads;
//! those tables are then filled afresh from their list commands, and the query runs.
//! Hex fields are BLOBs (compare with `x'...'`; results give them back as hex), booleans
//! 0 or 1, amounts integers of msat, as in CLN.
//!
//! Bounded as CLN bounds it (`sqlite3_limit`: statement length, columns, expression depth,
//! compound selects, program size), plus a time limit per query (`sql-timeout`, 10 s) and a
//! heap limit for the whole database (1 GiB).

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use fulgur_plugin_sdk::hex::{decode as unhex, encode as hex};
use fulgur_plugin_sdk::{Builder, OptionSpec, Plugin, RpcError, RpcMethod};
use rusqlite::hooks::{AuthAction, AuthContext, Authorization};
use rusqlite::limits::Limit;
use rusqlite::types::{Value as Sql, ValueRef};
use rusqlite::{Connection, params_from_iter};
use serde::Deserialize;
use serde_json::{Value, json};

/// The functions a query may call (CLN's list).
const FUNCTIONS: &[&str] = &[
    "abs",
    "avg",
    "coalesce",
    "count",
    "hex",
    "quote",
    "length",
    "like",
    "lower",
    "upper",
    "min",
    "max",
    "sum",
    "total",
    "date",
    "datetime",
    "julianday",
    "strftime",
    "time",
    "timediff",
    "unixepoch",
    "json_object",
    "json_group_array",
];

/// CLN's indices, by table.
const INDICES: &[(&str, &[&str])] = &[
    ("channels", &["short_channel_id"]),
    ("forwards", &["in_channel", "in_htlc_id"]),
    ("htlcs", &["short_channel_id", "id"]),
    ("invoices", &["payment_hash"]),
    ("nodes", &["nodeid"]),
    ("offers", &["offer_id"]),
    ("peers", &["id"]),
    ("peerchannels", &["peer_id"]),
    ("sendpays", &["payment_hash"]),
    ("transactions", &["hash"]),
    ("chainmoves", &["account_id"]),
    ("channelmoves", &["account_id"]),
    ("channelmoves", &["payment_hash"]),
];

const HEAP_LIMIT: i64 = 1 << 30;

/// A table (or a folded object's columns), as `tables.json` describes it.
#[derive(Debug, Deserialize)]
struct Table {
    /// The table's name (for a folded object: unused).
    #[serde(default)]
    name: String,
    /// The list command (top-level tables only).
    #[serde(default)]
    command: Option<String>,
    /// The JSON array this table's rows come from.
    #[serde(default)]
    json: Option<String>,
    /// An array of plain values: one column holds each value.
    #[serde(default)]
    single: bool,
    cols: Vec<Col>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Col {
    /// A column.
    Field {
        db: String,
        #[serde(default)]
        json: Option<String>,
        #[serde(rename = "type")]
        ty: String,
    },
    /// An object whose members are columns of this table.
    Object { obj: String, cols: Vec<Col> },
    /// An array: a related table.
    Array { table: Table },
}

impl Table {
    fn has_created_index(&self) -> bool {
        self.cols
            .iter()
            .any(|c| matches!(c, Col::Field { db, .. } if db == "created_index"))
    }

    /// This table's columns, folded objects included, as (name, SQL type).
    fn columns(&self) -> Vec<(&str, &'static str)> {
        fn walk<'a>(cols: &'a [Col], out: &mut Vec<(&'a str, &'static str)>) {
            for c in cols {
                match c {
                    Col::Field { db, ty, .. } => out.push((db, sql_type(ty))),
                    Col::Object { cols, .. } => walk(cols, out),
                    Col::Array { .. } => {}
                }
            }
        }
        let mut out = vec![];
        walk(&self.cols, &mut out);
        out
    }

    /// The related tables (arrays), folded objects' included.
    fn subtables(&self) -> Vec<&Table> {
        fn walk<'a>(cols: &'a [Col], out: &mut Vec<&'a Table>) {
            for c in cols {
                match c {
                    Col::Array { table } => out.push(table),
                    Col::Object { cols, .. } => walk(cols, out),
                    Col::Field { .. } => {}
                }
            }
        }
        let mut out = vec![];
        walk(&self.cols, &mut out);
        out
    }
}

fn sql_type(ty: &str) -> &'static str {
    match ty {
        "hex" | "hash" | "secret" | "pubkey" | "txid" => "BLOB",
        "msat" | "integer" | "u64" | "u32" | "u16" | "u8" | "boolean" => "INTEGER",
        "number" => "REAL",
        _ => "TEXT",
    }
}

/// The database and the table descriptions.
struct Db {
    conn: Connection,
    tables: Vec<Table>,
    next_rowid: i64,
}

struct State {
    db: Mutex<Option<Db>>,
    /// One query at a time: the tables it reads are refilled for it.
    turn: tokio::sync::Mutex<()>,
}

type P = Plugin<Arc<State>>;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn failed(msg: impl Into<String>) -> RpcError {
    RpcError::new(-1, msg)
}

/// Every table, top-level and related, with its parent's name.
fn all_tables(tables: &[Table]) -> Vec<(&Table, Option<&Table>)> {
    fn walk<'a>(
        t: &'a Table,
        parent: Option<&'a Table>,
        out: &mut Vec<(&'a Table, Option<&'a Table>)>,
    ) {
        out.push((t, parent));
        for s in t.subtables() {
            walk(s, Some(t), out);
        }
    }
    let mut out = vec![];
    for t in tables {
        walk(t, None, &mut out);
    }
    out
}

fn open(tables: Vec<Table>) -> Result<Db, rusqlite::Error> {
    let conn = Connection::open_in_memory()?;
    conn.execute_batch(&format!("PRAGMA hard_heap_limit={HEAP_LIMIT};"))?;
    for (t, parent) in all_tables(&tables) {
        let mut cols = vec![];
        if !t.has_created_index() {
            cols.push("rowid INTEGER PRIMARY KEY".to_string());
        }
        if let Some(p) = parent {
            let key = if p.has_created_index() {
                "created_index"
            } else {
                "rowid"
            };
            cols.push(format!(
                "row INTEGER REFERENCES {}({key}) ON DELETE CASCADE",
                p.name
            ));
            cols.push("arrindex INTEGER".into());
        }
        for (name, ty) in t.columns() {
            let pk = if name == "created_index" {
                " PRIMARY KEY"
            } else {
                ""
            };
            cols.push(format!("{name} {ty}{pk}"));
        }
        conn.execute_batch(&format!("CREATE TABLE {} ({});", t.name, cols.join(", ")))?;
    }
    for (i, (table, cols)) in INDICES.iter().enumerate() {
        conn.execute_batch(&format!(
            "CREATE INDEX idx_{table}_{i} ON {table} ({});",
            cols.join(", ")
        ))?;
    }
    // CLN's limits on what a query may be.
    conn.set_limit(Limit::SQLITE_LIMIT_LENGTH, 1_000_000);
    conn.set_limit(Limit::SQLITE_LIMIT_SQL_LENGTH, 10_000);
    conn.set_limit(Limit::SQLITE_LIMIT_EXPR_DEPTH, 100);
    conn.set_limit(Limit::SQLITE_LIMIT_COMPOUND_SELECT, 10);
    conn.set_limit(Limit::SQLITE_LIMIT_ATTACHED, 1);
    conn.set_limit(Limit::SQLITE_LIMIT_LIKE_PATTERN_LENGTH, 500);
    conn.set_limit(Limit::SQLITE_LIMIT_VARIABLE_NUMBER, 100);
    conn.set_limit(Limit::SQLITE_LIMIT_TRIGGER_DEPTH, 1);
    conn.set_limit(Limit::SQLITE_LIMIT_WORKER_THREADS, 1);
    Ok(Db {
        conn,
        tables,
        next_rowid: 1,
    })
}

/// What the authorizer saw while a query was prepared.
#[derive(Default)]
struct Seen {
    tables: BTreeSet<String>,
    refused: Option<String>,
}

/// Prepares `query` under the read-only authorizer: the top-level tables it reads, or why
/// not.
fn prepare(db: &Db, query: &str) -> Result<BTreeSet<String>, RpcError> {
    let known: Vec<(String, String)> = all_tables(&db.tables)
        .into_iter()
        .map(|(t, _)| (t.name.clone(), top_of(&db.tables, &t.name)))
        .collect();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let s = seen.clone();
    db.conn.authorizer(Some(move |ctx: AuthContext<'_>| {
        let mut s = lock(&s);
        match ctx.action {
            AuthAction::Select => Authorization::Allow,
            AuthAction::Read { table_name, .. } => {
                match known.iter().find(|(n, _)| n == table_name) {
                    Some((_, top)) => {
                        s.tables.insert(top.clone());
                        Authorization::Allow
                    }
                    None => {
                        s.refused = Some(format!("Unknown table {table_name}"));
                        Authorization::Deny
                    }
                }
            }
            AuthAction::Function { function_name }
                if FUNCTIONS.contains(&function_name.to_ascii_lowercase().as_str()) =>
            {
                Authorization::Allow
            }
            other => {
                s.refused = Some(format!("Unauthorized: {other:?}"));
                Authorization::Deny
            }
        }
    }));
    let r = db.conn.prepare(query).map(|_| ());
    db.conn
        .authorizer(None::<fn(AuthContext<'_>) -> Authorization>);
    let seen = std::mem::take(&mut *lock(&seen));
    match r {
        Ok(()) => Ok(seen.tables),
        Err(e) => {
            let mut msg = format!("query failed with {}", sqlite_message(&e));
            if let Some(why) = seen.refused {
                msg.push_str(&format!(" ({why})"));
            }
            Err(failed(msg))
        }
    }
}

fn sqlite_message(e: &rusqlite::Error) -> String {
    match e {
        rusqlite::Error::SqliteFailure(_, Some(m)) => m.clone(),
        other => other.to_string(),
    }
}

/// The top-level table a table belongs to.
fn top_of(tables: &[Table], name: &str) -> String {
    for t in tables {
        if t.name == name
            || all_tables(std::slice::from_ref(t))
                .iter()
                .any(|(s, _)| s.name == name)
        {
            return t.name.clone();
        }
    }
    name.to_string()
}

/// A JSON value as what the column of type `ty` stores.
fn to_sql(ty: &str, v: &Value) -> Sql {
    match (sql_type(ty), v) {
        (_, Value::Null) => Sql::Null,
        ("BLOB", Value::String(s)) => match unhex(s) {
            Some(b) => Sql::Blob(b),
            None => Sql::Text(s.clone()),
        },
        ("INTEGER", Value::Bool(b)) => Sql::Integer(i64::from(*b)),
        ("INTEGER", Value::Number(n)) => n
            .as_i64()
            .or_else(|| n.as_u64().map(|u| u as i64))
            .map(Sql::Integer)
            .unwrap_or(Sql::Real(n.as_f64().unwrap_or(0.0))),
        ("INTEGER", Value::String(s)) => s
            .trim_end_matches("msat")
            .parse::<i64>()
            .map(Sql::Integer)
            .unwrap_or_else(|_| Sql::Text(s.clone())),
        ("REAL", Value::Number(n)) => Sql::Real(n.as_f64().unwrap_or(0.0)),
        (_, Value::String(s)) => Sql::Text(s.clone()),
        (_, Value::Bool(b)) => Sql::Integer(i64::from(*b)),
        (_, Value::Number(n)) => match n.as_i64() {
            Some(i) => Sql::Integer(i),
            None => Sql::Real(n.as_f64().unwrap_or(0.0)),
        },
        (_, other) => Sql::Text(other.to_string()),
    }
}

/// The values of one row's columns (folded objects' included), in column order.
fn row_values(cols: &[Col], obj: &Value, out: &mut Vec<Sql>) {
    for c in cols {
        match c {
            Col::Field { json, ty, .. } => {
                let v = json
                    .as_deref()
                    .and_then(|j| obj.get(j))
                    .unwrap_or(&Value::Null);
                out.push(to_sql(ty, v));
            }
            Col::Object { obj: field, cols } => {
                row_values(cols, obj.get(field).unwrap_or(&Value::Null), out)
            }
            Col::Array { .. } => {}
        }
    }
}

/// The arrays of a row, folded objects' included: (table, the array).
fn row_arrays<'a>(cols: &'a [Col], obj: &'a Value, out: &mut Vec<(&'a Table, &'a Value)>) {
    for c in cols {
        match c {
            Col::Array { table } => {
                if let Some(a) = table.json.as_deref().and_then(|j| obj.get(j)) {
                    out.push((table, a));
                }
            }
            Col::Object { obj: field, cols } => {
                if let Some(o) = obj.get(field) {
                    row_arrays(cols, o, out);
                }
            }
            Col::Field { .. } => {}
        }
    }
}

/// Inserts the rows of `items` into `t` (under `parent`'s row), and their arrays.
fn insert(
    conn: &Connection,
    t: &Table,
    parent: Option<i64>,
    items: &[Value],
    next_rowid: &mut i64,
) -> Result<(), rusqlite::Error> {
    let has_created = t.has_created_index();
    for (i, item) in items.iter().enumerate() {
        let mut values = vec![];
        let rowid = if has_created {
            item.get("created_index")
                .and_then(Value::as_i64)
                .unwrap_or(0)
        } else {
            let r = *next_rowid;
            *next_rowid += 1;
            values.push(Sql::Integer(r));
            r
        };
        if let Some(p) = parent {
            values.push(Sql::Integer(p));
            values.push(Sql::Integer(i as i64));
        }
        if t.single {
            let ty = match t.cols.first() {
                Some(Col::Field { ty, .. }) => ty.as_str(),
                _ => "string",
            };
            values.push(to_sql(ty, item));
        } else {
            row_values(&t.cols, item, &mut values);
        }
        let marks = vec!["?"; values.len()].join(",");
        conn.prepare_cached(&format!("INSERT INTO {} VALUES ({marks})", t.name))?
            .execute(params_from_iter(values))?;
        if !t.single {
            let mut arrays = vec![];
            row_arrays(&t.cols, item, &mut arrays);
            for (sub, a) in arrays {
                if let Some(a) = a.as_array() {
                    insert(conn, sub, Some(rowid), a, next_rowid)?;
                }
            }
        }
    }
    Ok(())
}

/// Refills table `name` (and its related tables) with `listed`, the list command's result.
fn refill(db: &mut Db, name: &str, listed: &Value) -> Result<(), rusqlite::Error> {
    let Some(t) = db.tables.iter().find(|t| t.name == name) else {
        return Ok(());
    };
    let tx = db.conn.unchecked_transaction()?;
    for (sub, _) in all_tables(std::slice::from_ref(t)) {
        tx.execute_batch(&format!("DELETE FROM {};", sub.name))?;
    }
    let items = t
        .json
        .as_deref()
        .and_then(|j| listed.get(j))
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    insert(&tx, t, None, items, &mut db.next_rowid)?;
    tx.commit()
}

fn column_json(v: ValueRef<'_>) -> Value {
    match v {
        ValueRef::Null => Value::Null,
        ValueRef::Integer(i) => json!(i),
        ValueRef::Real(f) => json!(f),
        ValueRef::Text(t) => json!(String::from_utf8_lossy(t)),
        ValueRef::Blob(b) => json!(hex(b)),
    }
}

/// Runs the query (prepared again, under the same authorizer) within `timeout`.
fn run(db: &Db, query: &str, timeout: Duration) -> Result<Vec<Value>, RpcError> {
    prepare(db, query)?;
    let deadline = Instant::now() + timeout;
    db.conn
        .progress_handler(1000, Some(move || Instant::now() > deadline));
    let result = (|| {
        let mut st = db.conn.prepare(query)?;
        let n = st.column_count();
        let mut rows = st.query([])?;
        let mut out = vec![];
        while let Some(r) = rows.next()? {
            let mut row = Vec::with_capacity(n);
            for i in 0..n {
                row.push(column_json(r.get_ref(i)?));
            }
            out.push(Value::Array(row));
        }
        Ok::<_, rusqlite::Error>(out)
    })();
    db.conn.progress_handler(0, None::<fn() -> bool>);
    result.map_err(|e| match e {
        rusqlite::Error::SqliteFailure(f, _)
            if f.code == rusqlite::ErrorCode::OperationInterrupted =>
        {
            failed(format!(
                "query failed with interrupted (longer than {} s)",
                timeout.as_secs()
            ))
        }
        e => failed(format!("query failed with {}", sqlite_message(&e))),
    })
}

#[derive(Deserialize)]
struct SqlParams {
    query: String,
}

async fn sql(plugin: P, p: SqlParams) -> Result<Value, RpcError> {
    let _turn = plugin.state().turn.lock().await;
    let timeout = Duration::from_secs(plugin.option_i64("sql-timeout").unwrap_or(10).max(1) as u64);
    let (tables, commands) = {
        let g = lock(&plugin.state().db);
        let db = g.as_ref().ok_or_else(|| failed("sql is not ready"))?;
        let tables = prepare(db, &p.query)?;
        let commands: Vec<(String, String)> = db
            .tables
            .iter()
            .filter(|t| tables.contains(&t.name))
            .filter_map(|t| Some((t.name.clone(), t.command.clone()?)))
            .collect();
        (tables, commands)
    };
    let _ = tables;
    let mut listed = vec![];
    for (name, command) in commands {
        let v = plugin
            .rpc()
            .call(&command, json!({}))
            .await
            .map_err(RpcError::from)?;
        listed.push((name, v));
    }
    let mut g = lock(&plugin.state().db);
    let db = g.as_mut().ok_or_else(|| failed("sql is not ready"))?;
    for (name, v) in &listed {
        refill(db, name, v).map_err(|e| failed(format!("refreshing {name}: {e}")))?;
    }
    let rows = run(db, &p.query, timeout)?;
    Ok(json!({ "rows": rows }))
}

#[derive(Deserialize)]
struct SchemaParams {
    table: Option<String>,
}

async fn listsqlschemas(plugin: P, p: SchemaParams) -> Result<Value, RpcError> {
    let g = lock(&plugin.state().db);
    let db = g.as_ref().ok_or_else(|| failed("sql is not ready"))?;
    let mut names: Vec<&str> = all_tables(&db.tables)
        .into_iter()
        .map(|(t, _)| t.name.as_str())
        .collect();
    names.sort_unstable();
    if let Some(want) = &p.table {
        if !names.contains(&want.as_str()) {
            return Err(RpcError::invalid_params(format!(
                "table: Unknown table '{want}'"
            )));
        }
        names.retain(|n| n == want);
    }
    let mut schemas = vec![];
    for name in names {
        let cols = (|| {
            let mut st = db.conn.prepare(&format!("PRAGMA table_info({name})"))?;
            let rows = st.query_map([], |r| {
                Ok(json!({"name": r.get::<_, String>(1)?, "type": r.get::<_, String>(2)?}))
            })?;
            rows.collect::<Result<Vec<Value>, _>>()
        })()
        .map_err(|e| failed(e.to_string()))?;
        let mut s = json!({"tablename": name, "columns": cols});
        let idx: Vec<Value> = INDICES
            .iter()
            .filter(|(t, _)| *t == name)
            .map(|(_, c)| json!(c))
            .collect();
        if !idx.is_empty() {
            s["indices"] = Value::Array(idx);
        }
        schemas.push(s);
    }
    Ok(json!({ "schemas": schemas }))
}

fn tables() -> Result<Vec<Table>, serde_json::Error> {
    serde_json::from_str(include_str!("tables.json"))
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let db = open(tables()?)?;
    let state = Arc::new(State {
        db: Mutex::new(Some(db)),
        turn: tokio::sync::Mutex::new(()),
    });
    Builder::<Arc<State>>::new()
        .option(
            OptionSpec::int("sql-timeout", "Seconds a query may run (a Fulgur option)").default(10),
        )
        .rpcmethod(
            RpcMethod::typed("sql", "query", sql)
                .description("Run a read-only SQL query over the node's data (CLN's tables)"),
        )
        .rpcmethod(
            RpcMethod::typed("listsqlschemas", "[table]", listsqlschemas)
                .description("The tables and columns sql can query"),
        )
        .dynamic(true)
        .run(state)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db() -> Db {
        open(tables().unwrap_or_else(|e| panic!("{e}"))).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn every_table_of_clns_is_created() {
        let db = db();
        for t in [
            "invoices",
            "peerchannels",
            "peerchannels_features",
            "sendpays",
            "forwards",
            "nodes",
            "channels",
            "peers",
            "transactions_outputs",
            "chainmoves",
        ] {
            assert!(
                db.conn.prepare(&format!("SELECT * FROM {t}")).is_ok(),
                "{t}"
            );
        }
    }

    #[test]
    fn only_reads_and_clns_functions_are_allowed() {
        let db = db();
        assert_eq!(
            prepare(
                &db,
                "SELECT count(*) FROM invoices JOIN peerchannels_status"
            )
            .ok()
            .map(|t| t.into_iter().collect::<Vec<_>>()),
            Some(vec!["invoices".to_string(), "peerchannels".to_string()])
        );
        for bad in [
            "DELETE FROM invoices",
            "INSERT INTO peers (id) VALUES (1)",
            "CREATE TABLE x (a)",
            "PRAGMA table_info(invoices)",
            "SELECT load_extension('x')",
            "SELECT * FROM sqlite_master",
            "ATTACH DATABASE 'x' AS y",
        ] {
            assert!(prepare(&db, bad).is_err(), "{bad}");
        }
        let e = prepare(&db, "SELECT * FROM nosuchtable")
            .err()
            .map(|e| e.message);
        assert!(e.is_some_and(|m| m.starts_with("query failed with")));
    }

    #[test]
    fn a_query_past_its_time_is_stopped() {
        let mut db = db();
        let invoices: Vec<Value> = (0..200)
            .map(|i| json!({"label": format!("l{i}"), "created_index": i + 1}))
            .collect();
        refill(&mut db, "invoices", &json!({ "invoices": invoices }))
            .unwrap_or_else(|e| panic!("{e}"));
        let q = "SELECT count(*) FROM invoices a, invoices b, invoices c";
        let e = run(&db, q, Duration::ZERO).err().map(|e| e.message);
        assert!(e.is_some_and(|m| m.contains("interrupted")));
        assert_eq!(
            run(&db, "SELECT count(*) FROM invoices", Duration::from_secs(5)).ok(),
            Some(vec![json!([200])])
        );
    }

    #[test]
    fn rows_keep_clns_types_and_arrays_become_related_rows() {
        let mut db = db();
        let listed = json!({"channels": [{
            "peer_id": "02aa", "peer_connected": true, "state": "CHANNELD_NORMAL",
            "to_us_msat": 1000, "features": ["option_static_remotekey", "option_anchors"],
            "funding": {"local_funds_msat": 5000, "remote_funds_msat": 0},
            "status": ["one"]
        }]});
        refill(&mut db, "peerchannels", &listed).unwrap_or_else(|e| panic!("{e}"));
        let rows = run(
            &db,
            "SELECT peer_id, peer_connected, to_us_msat, funding_local_funds_msat \
                             FROM peerchannels",
            Duration::from_secs(5),
        )
        .unwrap_or_else(|e| panic!("{}", e.message));
        assert_eq!(rows, vec![json!(["02aa", 1, 1000, 5000])]);
        let rows = run(
            &db,
            "SELECT f.features, f.arrindex FROM peerchannels p JOIN \
                             peerchannels_features f ON f.row = p.rowid ORDER BY f.arrindex",
            Duration::from_secs(5),
        )
        .unwrap_or_else(|e| panic!("{}", e.message));
        assert_eq!(
            rows,
            vec![
                json!(["option_static_remotekey", 0]),
                json!(["option_anchors", 1])
            ]
        );
        // A refill replaces what was there.
        refill(&mut db, "peerchannels", &json!({"channels": []})).unwrap_or_else(|e| panic!("{e}"));
        let n = run(
            &db,
            "SELECT count(*) FROM peerchannels_features",
            Duration::from_secs(5),
        )
        .unwrap_or_else(|e| panic!("{}", e.message));
        assert_eq!(n, vec![json!([0])]);
    }
}
