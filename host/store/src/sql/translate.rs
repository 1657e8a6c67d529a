//! The two rewrites that let one SQL text serve both engines: SQLite's `?N` and `?`
//! placeholders into PostgreSQL's `$N`, and the migrations' SQLite column types into
//! PostgreSQL's.

/// `sql` with SQLite's placeholders as PostgreSQL's: `?N` becomes `$N`, a bare `?` the
/// next number after the highest so far (SQLite's rule). Quoted strings, quoted
/// identifiers and comments are left alone.
pub fn placeholders(sql: &str) -> String {
    map_placeholders(sql, |n| format!("${n}"))
}

/// `sql` with each placeholder (`?N`, or a bare `?`: the next number after the highest so
/// far) replaced by `f(N)`; quoted strings, quoted identifiers and comments left alone.
pub fn map_placeholders(sql: &str, f: impl Fn(u32) -> String) -> String {
    let mut out = String::with_capacity(sql.len() + 8);
    let mut highest = 0u32;
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\'' | '"' => {
                out.push(c);
                for d in chars.by_ref() {
                    out.push(d);
                    if d == c {
                        break;
                    }
                }
            }
            '-' if chars.peek() == Some(&'-') => {
                out.push(c);
                for d in chars.by_ref() {
                    out.push(d);
                    if d == '\n' {
                        break;
                    }
                }
            }
            '?' => {
                let mut digits = String::new();
                while let Some(d) = chars.peek().copied().filter(char::is_ascii_digit) {
                    digits.push(d);
                    chars.next();
                }
                let n = match digits.parse::<u32>() {
                    Ok(n) => n,
                    Err(_) => highest.saturating_add(1),
                };
                highest = highest.max(n);
                out.push_str(&f(n));
            }
            c => out.push(c),
        }
    }
    out
}

/// Whether `sql` changes the database (its first word is a write), as `db_write` reports.
pub fn is_write(sql: &str) -> bool {
    let mut rest = sql.trim_start();
    while let Some(r) = rest.strip_prefix("--") {
        rest = r
            .split_once('\n')
            .map_or("", |(_, after)| after)
            .trim_start();
    }
    let word: String = rest
        .chars()
        .take_while(char::is_ascii_alphabetic)
        .collect::<String>()
        .to_ascii_uppercase();
    matches!(
        word.as_str(),
        "INSERT" | "UPDATE" | "DELETE" | "REPLACE" | "CREATE" | "DROP" | "ALTER"
    )
}

/// `text` as an SQL string literal (quotes doubled).
pub fn quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// A migration written for SQLite, for PostgreSQL: `INTEGER PRIMARY KEY` (SQLite's row id,
/// given when an INSERT leaves it out) becomes `BIGSERIAL PRIMARY KEY`, `AUTOINCREMENT` goes,
/// and the types become PostgreSQL's (`INTEGER` → `BIGINT`, as SQLite's integers are 64-bit;
/// `REAL` → `DOUBLE PRECISION`; `BLOB` → `BYTEA`). Only upper-case words are types here, as
/// the migrations write them.
pub fn ddl(sql: &str) -> String {
    let sql = sql
        .replace("INTEGER PRIMARY KEY AUTOINCREMENT", "BIGSERIAL PRIMARY KEY")
        .replace("INTEGER PRIMARY KEY", "BIGSERIAL PRIMARY KEY");
    let mut out = String::with_capacity(sql.len() + 16);
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut String| {
        out.push_str(match word.as_str() {
            "INTEGER" => "BIGINT",
            "REAL" => "DOUBLE PRECISION",
            "BLOB" => "BYTEA",
            w => w,
        });
        word.clear();
    };
    for c in sql.chars() {
        if c.is_ascii_alphanumeric() || c == '_' {
            word.push(c);
        } else {
            flush(&mut word, &mut out);
            out.push(c);
        }
    }
    flush(&mut word, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_become_dollars() {
        assert_eq!(
            placeholders("SELECT a FROM t WHERE b = ?1 AND c = ?2"),
            "SELECT a FROM t WHERE b = $1 AND c = $2"
        );
        assert_eq!(placeholders("VALUES (?, ?, ?)"), "VALUES ($1, $2, $3)");
        assert_eq!(placeholders("x = ?3 OR y = ?"), "x = $3 OR y = $4");
        assert_eq!(
            placeholders("SELECT '?1', \"a?\" -- ?2\n, ?1"),
            "SELECT '?1', \"a?\" -- ?2\n, $1"
        );
        assert_eq!(placeholders("'unterminated ?1"), "'unterminated ?1");
    }

    #[test]
    fn writes_are_told_from_reads() {
        assert!(is_write("INSERT INTO t VALUES (1)"));
        assert!(is_write("  -- why\n update t SET a = 1"));
        assert!(!is_write("SELECT 1"));
        assert!(!is_write("BEGIN"));
        assert!(!is_write("-- only a comment"));
        assert_eq!(quote("it's"), "'it''s'");
        assert_eq!(
            map_placeholders("a = ? AND b = ?5 AND c = ?", |n| format!("<{n}>")),
            "a = <1> AND b = <5> AND c = <6>"
        );
    }

    #[test]
    fn ddl_uses_postgres_types() {
        assert_eq!(
            ddl(
                "CREATE TABLE t (id INTEGER PRIMARY KEY AUTOINCREMENT, r REAL, b BLOB NOT NULL, \
                 interest INTEGER, real_name TEXT)"
            ),
            "CREATE TABLE t (id BIGSERIAL PRIMARY KEY, r DOUBLE PRECISION, b BYTEA NOT NULL, \
             interest BIGINT, real_name TEXT)"
        );
    }
}
