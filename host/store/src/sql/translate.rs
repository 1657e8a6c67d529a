//! The two rewrites that let one SQL text serve both engines: SQLite's `?N` and `?`
//! placeholders into PostgreSQL's `$N`, and the migrations' SQLite column types into
//! PostgreSQL's.

/// `sql` with SQLite's placeholders as PostgreSQL's: `?N` becomes `$N`, a bare `?` the
/// next number after the highest so far (SQLite's rule). Quoted strings, quoted
/// identifiers and comments are left alone.
pub fn placeholders(sql: &str) -> String {
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
                out.push('$');
                out.push_str(&n.to_string());
            }
            c => out.push(c),
        }
    }
    out
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
