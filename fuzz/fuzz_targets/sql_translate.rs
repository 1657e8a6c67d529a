#![no_main]
//! The SQL rewrites that let one text serve SQLite and PostgreSQL
//! (`fulgur_store::sql::translate`): placeholders (`?N` → `$N`, and the literal values a
//! `db_write` plugin is given), the migrations' types, telling writes from reads, quoting.
//! None may panic on any text; a text without `?` is left as it is, replacing every
//! placeholder by nothing never makes the text longer, and a quoted text reads back.

use fulgur_store::sql::translate;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(sql) = std::str::from_utf8(data) else {
        return;
    };
    let dollars = translate::placeholders(sql);
    if !sql.contains('?') {
        assert_eq!(dollars, sql);
    }
    let stripped = translate::map_placeholders(sql, |_| String::new());
    assert!(stripped.len() <= sql.len());
    let _ = translate::ddl(sql);
    let _ = translate::is_write(sql);
    let q = translate::quote(sql);
    let inner = &q[1..q.len() - 1];
    assert_eq!(inner.replace("''", "'"), sql);
});
