//! `getlog [level]`: the log lines kept in memory (the log book), as CLN shows them.

use std::time::Duration;

use fulgur_base::log::{BookEntry, Level};
use fulgur_protocol::RpcError;
use serde_json::{Value, json};

use super::{Command, CommandFuture, Ctx, command};
use crate::rpc::params::{Params, opt};

pub const GETLOG: Command = Command::new("getlog", &[opt("level")], run);

/// CLN's `seconds.nanoseconds` (nine digits).
fn timestr(d: Duration) -> String {
    format!("{}.{:09}", d.as_secs(), d.subsec_nanos())
}

/// CLN's name of a level in `getlog`.
fn type_name(l: Level) -> &'static str {
    match l {
        Level::Broken => "BROKEN",
        Level::Unusual => "UNUSUAL",
        Level::Info => "INFO",
        Level::Debug => "DEBUG",
        Level::Trace => "TRACE",
        Level::Io => "IO_IN",
    }
}

fn entry_json(e: &BookEntry, created: Duration) -> Value {
    json!({
        "type": type_name(e.level),
        "time": timestr(e.at.saturating_sub(created)),
        "source": e.source,
        "log": e.message,
    })
}

fn run(ctx: Ctx, p: Params) -> CommandFuture {
    command(async move {
        let min = match p.opt_str("level")? {
            None => Level::Info,
            Some(s) => Level::parse(&s).ok_or_else(|| {
                RpcError::invalid_params(format!(
                    "level: should be 'io', 'debug', 'info', or 'unusual': invalid token '\"{s}\"'"
                ))
            })?,
        };
        let book = ctx.node.main.book(min);
        Ok(json!({
            "created_at": timestr(book.created),
            "bytes_used": book.bytes_used,
            "bytes_max": book.bytes_max,
            "log": book.entries.iter().map(|e| entry_json(e, book.created)).collect::<Vec<_>>(),
        }))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_have_nine_decimals_after_creation() {
        assert_eq!(timestr(Duration::new(12, 5)), "12.000000005");
        let e = BookEntry {
            level: Level::Unusual,
            at: Duration::new(100, 500_000_000),
            source: "lightningd".into(),
            message: "m".into(),
        };
        assert_eq!(
            entry_json(&e, Duration::new(90, 0)),
            json!({"type": "UNUSUAL", "time": "10.500000000", "source": "lightningd", "log": "m"})
        );
    }
}
