//! The node's log: CLN's levels and line format, per-prefix levels, and a feed of log
//! records for the `log` and `warning` notifications.
//!
//! Line format (as CLN, so tools that grep CLN logs work):
//! `2026-11-23T21:23:00.123Z INFO    plugin-hello: message`.
//!
//! Log files are opened in append mode and reopened by [`Logger::reopen`] (on SIGHUP, for
//! logrotate), as CLN does.

use std::collections::VecDeque;
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::mpsc;

/// CLN's log levels, lowest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// Raw I/O.
    Io,
    /// Very detailed tracing.
    Trace,
    /// Debugging detail.
    Debug,
    /// Normal operation.
    Info,
    /// Something odd that the operator may want to know (CLN's "warn").
    Unusual,
    /// Something is broken (CLN's "error").
    Broken,
}

impl Level {
    /// Parses a level name as CLN does (case-insensitive; `warn` and `error` are aliases).
    pub fn parse(s: &str) -> Option<Level> {
        match s.to_ascii_lowercase().as_str() {
            "io" => Some(Level::Io),
            "trace" => Some(Level::Trace),
            "debug" => Some(Level::Debug),
            "info" => Some(Level::Info),
            "unusual" | "warn" | "warning" => Some(Level::Unusual),
            "broken" | "error" => Some(Level::Broken),
            _ => None,
        }
    }

    /// The name used in notifications.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Io => "io",
            Level::Trace => "trace",
            Level::Debug => "debug",
            Level::Info => "info",
            Level::Unusual => "unusual",
            Level::Broken => "broken",
        }
    }

    fn padded(self) -> &'static str {
        match self {
            Level::Io => "IO      ",
            Level::Trace => "TRACE   ",
            Level::Debug => "DEBUG   ",
            Level::Info => "INFO    ",
            Level::Unusual => "UNUSUAL ",
            Level::Broken => "**BROKEN** ",
        }
    }
}

/// A level that applies to every source, or to sources containing a prefix
/// (`--log-level=debug:plugin-hello`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LevelFilter {
    /// The threshold.
    pub level: Level,
    /// Applies only to sources containing this string.
    pub prefix: Option<String>,
}

impl LevelFilter {
    /// Parses `LEVEL` or `LEVEL:prefix`.
    pub fn parse(s: &str) -> Result<LevelFilter, String> {
        let (lvl, prefix) = match s.split_once(':') {
            Some((l, p)) => (l, Some(p.to_string())),
            None => (s, None),
        };
        let level = Level::parse(lvl).ok_or_else(|| {
            format!("unknown log level '{lvl}' (io, trace, debug, info, unusual, broken)")
        })?;
        Ok(LevelFilter { level, prefix })
    }
}

/// One log line, as handed to the notification feed.
#[derive(Debug, Clone)]
pub struct Record {
    /// Its level.
    pub level: Level,
    /// Seconds since the epoch, with fraction.
    pub time: f64,
    /// ISO 8601 time.
    pub timestamp: String,
    /// `lightningd`, `plugin-NAME`, ...
    pub source: String,
    /// The message.
    pub message: String,
}

/// The most recent lines kept in memory for `getlog` (CLN's log book): every line written
/// and every `info` or higher one, oldest dropped first once they hold [`BOOK_MAX_BYTES`].
pub const BOOK_MAX_BYTES: usize = 2 * 1024 * 1024;
/// What one kept line counts for besides its text (so many short lines are bounded too).
const BOOK_ENTRY_OVERHEAD: usize = 48;

/// One line of the log book.
#[derive(Debug, Clone, PartialEq)]
pub struct BookEntry {
    /// Its level.
    pub level: Level,
    /// When it was logged, since the epoch.
    pub at: Duration,
    /// `lightningd`, `plugin-NAME`, ...
    pub source: String,
    /// The line.
    pub message: String,
}

impl BookEntry {
    fn size(&self) -> usize {
        self.source.len() + self.message.len() + BOOK_ENTRY_OVERHEAD
    }
}

/// What `getlog` shows.
#[derive(Debug, Clone, PartialEq)]
pub struct BookView {
    /// When logging started, since the epoch.
    pub created: Duration,
    /// Bytes the kept lines count for.
    pub bytes_used: usize,
    /// The bytes at which the oldest lines are dropped.
    pub bytes_max: usize,
    /// The kept lines at the level asked or higher, oldest first.
    pub entries: Vec<BookEntry>,
}

struct Book {
    created: Duration,
    entries: VecDeque<BookEntry>,
    bytes: usize,
}

impl Book {
    fn push(&mut self, e: BookEntry) {
        self.bytes += e.size();
        self.entries.push_back(e);
        while self.bytes > BOOK_MAX_BYTES {
            match self.entries.pop_front() {
                Some(old) => self.bytes -= old.size(),
                None => break,
            }
        }
    }
}

struct Inner {
    book: Mutex<Book>,
    default: Level,
    filters: Vec<LevelFilter>,
    out: Mutex<Box<dyn Write + Send>>,
    /// The `--log-file` destinations, for [`Logger::reopen`] (empty for other loggers).
    files: Vec<PathBuf>,
    feed: Mutex<Option<mpsc::UnboundedSender<Record>>>,
    feed_all: AtomicBool,
    format: LineFormat,
}

/// How a written line starts, as CLN's `--log-prefix` and `--log-timestamps` set it:
/// `{prefix}{timestamp }{LEVEL} {source}: {message}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineFormat {
    /// Written first on every line (`--log-prefix`, default empty).
    pub prefix: String,
    /// Whether the time comes next (`--log-timestamps`, default true).
    pub timestamps: bool,
}

impl Default for LineFormat {
    fn default() -> Self {
        LineFormat {
            prefix: String::new(),
            timestamps: true,
        }
    }
}

impl LineFormat {
    fn write(&self, out: &mut dyn Write, timestamp: &str, level: Level, source: &str, line: &str) {
        let _ = if self.timestamps {
            writeln!(
                out,
                "{}{timestamp} {}{source}: {line}",
                self.prefix,
                level.padded()
            )
        } else {
            writeln!(out, "{}{}{source}: {line}", self.prefix, level.padded())
        };
    }
}

/// A cheap-to-clone handle on the node's log.
#[derive(Clone)]
pub struct Logger {
    inner: Arc<Inner>,
}

impl Logger {
    /// A logger writing to `out`, with the given level filters (the last filter without a
    /// prefix sets the default; `info` otherwise).
    pub fn new(filters: Vec<LevelFilter>, out: Box<dyn Write + Send>) -> Logger {
        Self::build(filters, out, vec![])
    }

    /// Everything at `level` and above, from every source, to `out`.
    pub fn at(level: Level, out: Box<dyn Write + Send>) -> Logger {
        Logger::new(
            vec![LevelFilter {
                level,
                prefix: None,
            }],
            out,
        )
    }

    /// A logger writing to every file in `files` (`-` is stdout; none means stdout),
    /// appending; [`Logger::reopen`] opens them again.
    pub fn to_files(filters: Vec<LevelFilter>, files: &[PathBuf]) -> Result<Logger, String> {
        Self::to_files_as(filters, files, LineFormat::default())
    }

    /// [`Logger::to_files`], with lines written as `format` says.
    pub fn to_files_as(
        filters: Vec<LevelFilter>,
        files: &[PathBuf],
        format: LineFormat,
    ) -> Result<Logger, String> {
        let out = open_files(files)?;
        let mut logger = Self::build(filters, Box::new(out), files.to_vec());
        if let Some(inner) = Arc::get_mut(&mut logger.inner) {
            inner.format = format;
        }
        Ok(logger)
    }

    /// Closes and reopens the log files, so that a rotated file (renamed away) is replaced
    /// by a new one: the last line of the old file and the first of the new say so, as in
    /// CLN. If a file cannot be opened the old destinations are kept and the error returned.
    pub fn reopen(&self) -> Result<(), String> {
        if self.inner.files.iter().all(|f| f.as_os_str() == "-") {
            return Ok(());
        }
        self.log(Level::Info, "lightningd", "Ending log due to SIGHUP");
        let fresh = open_files(&self.inner.files)?;
        if let Ok(mut out) = self.inner.out.lock() {
            let _ = out.flush();
            *out = Box::new(fresh);
        }
        self.log(Level::Info, "lightningd", "Started log due to SIGHUP");
        Ok(())
    }

    fn build(filters: Vec<LevelFilter>, out: Box<dyn Write + Send>, files: Vec<PathBuf>) -> Logger {
        let default = filters
            .iter()
            .rev()
            .find(|f| f.prefix.is_none())
            .map(|f| f.level)
            .unwrap_or(Level::Info);
        let filters = filters.into_iter().filter(|f| f.prefix.is_some()).collect();
        Logger {
            inner: Arc::new(Inner {
                book: Mutex::new(Book {
                    created: SystemTime::now()
                        .duration_since(UNIX_EPOCH)
                        .unwrap_or_default(),
                    entries: VecDeque::new(),
                    bytes: 0,
                }),
                default,
                filters,
                out: Mutex::new(out),
                files,
                feed: Mutex::new(None),
                feed_all: AtomicBool::new(false),
                format: LineFormat::default(),
            }),
        }
    }

    /// Sends records to `tx`: every record when `all` is set (somebody subscribed to
    /// `log`), otherwise only `unusual` and `broken` ones (for `warning`).
    pub fn set_feed(&self, tx: mpsc::UnboundedSender<Record>) {
        if let Ok(mut feed) = self.inner.feed.lock() {
            *feed = Some(tx);
        }
    }

    /// Whether every record should be fed, not only warnings.
    pub fn set_feed_all(&self, all: bool) {
        self.inner.feed_all.store(all, Ordering::Relaxed);
    }

    fn threshold(&self, source: &str) -> Level {
        self.inner
            .filters
            .iter()
            .rev()
            .find(|f| f.prefix.as_deref().is_some_and(|p| source.contains(p)))
            .map(|f| f.level)
            .unwrap_or(self.inner.default)
    }

    /// Whether a record at `level` from `source` would be written.
    pub fn enabled(&self, level: Level, source: &str) -> bool {
        level >= self.threshold(source)
    }

    /// The log book's lines at `min` or higher (`getlog`).
    pub fn book(&self, min: Level) -> BookView {
        let book = self.inner.book.lock().unwrap_or_else(|p| p.into_inner());
        BookView {
            created: book.created,
            bytes_used: book.bytes,
            bytes_max: BOOK_MAX_BYTES,
            entries: book
                .entries
                .iter()
                .filter(|e| e.level >= min)
                .cloned()
                .collect(),
        }
    }

    /// Logs one message; a message with several lines becomes several log lines.
    pub fn log(&self, level: Level, source: &str, message: &str) {
        let write = self.enabled(level, source);
        let feed = level >= Level::Unusual || self.inner.feed_all.load(Ordering::Relaxed);
        let keep = write || level >= Level::Info;
        if !write && !feed && !keep {
            return;
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let timestamp = iso8601(now.as_secs(), now.subsec_millis());
        for line in message.split('\n') {
            if keep && let Ok(mut book) = self.inner.book.lock() {
                book.push(BookEntry {
                    level,
                    at: now,
                    source: source.to_string(),
                    message: line.to_string(),
                });
            }
            if write && let Ok(mut out) = self.inner.out.lock() {
                self.inner
                    .format
                    .write(&mut *out, &timestamp, level, source, line);
                let _ = out.flush();
            }
            if feed
                && let Ok(guard) = self.inner.feed.lock()
                && let Some(tx) = guard.as_ref()
            {
                let _ = tx.send(Record {
                    level,
                    time: now.as_secs_f64(),
                    timestamp: timestamp.clone(),
                    source: source.to_string(),
                    message: line.to_string(),
                });
            }
        }
    }

    /// Writes one message at `level` without waiting for the log: for the panic hook, which
    /// may run on a thread that already holds it (then the message goes only to stderr,
    /// which the hook writes anyway). Not fed to notifications: the process is ending.
    pub fn log_if_free(&self, level: Level, source: &str, message: &str) {
        if !self.enabled(level, source) {
            return;
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let timestamp = iso8601(now.as_secs(), now.subsec_millis());
        // Another thread holds the lock only for one line's write: retry a little.
        for _ in 0..1000 {
            match self.inner.out.try_lock() {
                Ok(mut out) => {
                    for line in message.split('\n') {
                        self.inner
                            .format
                            .write(&mut *out, &timestamp, level, source, line);
                    }
                    let _ = out.flush();
                    return;
                }
                Err(std::sync::TryLockError::WouldBlock) => std::thread::yield_now(),
                Err(std::sync::TryLockError::Poisoned(_)) => return,
            }
        }
    }

    /// A handle that logs under a fixed source name.
    pub fn source(&self, source: impl Into<String>) -> SourceLog {
        SourceLog {
            logger: self.clone(),
            source: source.into(),
        }
    }
}

/// A [`Logger`] bound to one source (`lightningd`, `plugin-hello`).
#[derive(Clone)]
pub struct SourceLog {
    logger: Logger,
    source: String,
}

impl SourceLog {
    /// Whether a record at `level` would go anywhere (the log file or the `log`
    /// notification feed), so callers can skip formatting it.
    pub fn wants(&self, level: Level) -> bool {
        self.logger.enabled(level, &self.source)
            || level >= Level::Unusual
            || self.logger.inner.feed_all.load(Ordering::Relaxed)
    }

    /// Logs at `level`.
    pub fn log(&self, level: Level, message: &str) {
        self.logger.log(level, &self.source, message);
    }
    /// The whole log book's lines at `min` or higher (`getlog`), every source's.
    pub fn book(&self, min: Level) -> BookView {
        self.logger.book(min)
    }
    /// Logs at `debug`.
    pub fn debug(&self, message: &str) {
        self.log(Level::Debug, message);
    }
    /// Logs at `info`.
    pub fn info(&self, message: &str) {
        self.log(Level::Info, message);
    }
    /// Logs at `unusual`.
    pub fn unusual(&self, message: &str) {
        self.log(Level::Unusual, message);
    }
    /// Logs at `broken`.
    pub fn broken(&self, message: &str) {
        self.log(Level::Broken, message);
    }
}

/// Writes log lines to every configured destination.
struct Tee(Vec<Box<dyn Write + Send>>);

impl Write for Tee {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        for w in &mut self.0 {
            w.write_all(buf)?;
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        for w in &mut self.0 {
            w.flush()?;
        }
        Ok(())
    }
}

fn open_files(files: &[PathBuf]) -> Result<Tee, String> {
    let mut outs: Vec<Box<dyn Write + Send>> = vec![];
    for f in files {
        if f.as_os_str() == "-" {
            outs.push(Box::new(std::io::stdout()));
        } else {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(f)
                .map_err(|e| format!("cannot open log file {}: {e}", f.display()))?;
            outs.push(Box::new(file));
        }
    }
    if outs.is_empty() {
        outs.push(Box::new(std::io::stdout()));
    }
    Ok(Tee(outs))
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ` for a Unix time.
pub fn iso8601(secs: u64, millis: u32) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

// Howard Hinnant's days-to-civil algorithm.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// A log destination in memory, for tests that read what was logged or wait for a line.
#[derive(Clone, Default)]
pub struct MemoryLog {
    text: Arc<Mutex<Vec<u8>>>,
    written: Arc<tokio::sync::Notify>,
}

impl Write for MemoryLog {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Ok(mut v) = self.text.lock() {
            v.extend_from_slice(buf);
        }
        self.written.notify_waiters();
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl MemoryLog {
    /// Everything logged so far.
    pub fn text(&self) -> String {
        self.text
            .lock()
            .map(|v| String::from_utf8_lossy(&v).into_owned())
            .unwrap_or_default()
    }

    /// Waits until the log contains `needle`, woken by each write; `false` if it did not
    /// appear within `limit` (a bound against hanging, not a measurement).
    pub async fn wait_for(&self, needle: &str, limit: std::time::Duration) -> bool {
        let seen = async {
            loop {
                // Registered before the check, so a write between the two is not missed.
                let next = self.written.notified();
                if self.text().contains(needle) {
                    return;
                }
                next.await;
            }
        };
        tokio::time::timeout(limit, seen).await.is_ok()
    }
}

#[cfg(test)]
mod book_tests {
    use super::*;

    #[test]
    fn the_book_keeps_info_and_written_lines_and_drops_the_oldest() {
        let log = Logger::at(Level::Unusual, Box::new(std::io::sink()));
        log.log(
            Level::Debug,
            "lightningd",
            "not kept: neither written nor info",
        );
        log.log(Level::Info, "plugin-x", "kept\nin two lines");
        log.log(Level::Broken, "lightningd", "bad");
        let all = log.book(Level::Io);
        let lines: Vec<_> = all
            .entries
            .iter()
            .map(|e| (e.level, e.source.as_str(), e.message.as_str()))
            .collect();
        assert_eq!(
            lines,
            [
                (Level::Info, "plugin-x", "kept"),
                (Level::Info, "plugin-x", "in two lines"),
                (Level::Broken, "lightningd", "bad"),
            ]
        );
        assert!(all.entries.iter().all(|e| e.at >= all.created));
        assert_eq!(log.book(Level::Unusual).entries.len(), 1);
        let big = "x".repeat(100_000);
        for _ in 0..(BOOK_MAX_BYTES / 100_000 + 5) {
            log.log(Level::Info, "lightningd", &big);
        }
        let v = log.book(Level::Io);
        assert!(v.bytes_used <= v.bytes_max && v.bytes_used > v.bytes_max / 2);
        assert!(
            v.entries.iter().all(|e| e.message == big),
            "the oldest went first"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_dates() {
        assert_eq!(iso8601(0, 0), "1970-01-01T00:00:00.000Z");
        assert_eq!(iso8601(1_795_469_000, 123), "2026-11-23T21:23:20.123Z");
        assert_eq!(iso8601(951_782_400, 5), "2000-02-29T00:00:00.005Z");
    }

    #[test]
    fn prefix_levels() {
        let f = vec![
            LevelFilter::parse("info").unwrap_or_else(|e| panic!("{e}")),
            LevelFilter::parse("debug:plugin-x").unwrap_or_else(|e| panic!("{e}")),
        ];
        let log = Logger::new(f, Box::new(std::io::sink()));
        assert!(log.enabled(Level::Debug, "plugin-x"));
        assert!(!log.enabled(Level::Debug, "lightningd"));
        assert!(LevelFilter::parse("loud").is_err());
        assert_eq!(Level::parse("WARN"), Some(Level::Unusual));
    }

    /// An empty directory for a test's log file, and the file's path.
    fn fresh_log(tag: &str) -> (PathBuf, PathBuf) {
        let d = std::env::temp_dir().join(format!("fulgur-log-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap_or_else(|e| panic!("{e}"));
        let path = d.join("log");
        (d, path)
    }

    #[test]
    fn log_prefix_and_no_timestamps_shape_lines_as_clns() {
        let (d, path) = fresh_log("format");
        let format = LineFormat {
            prefix: "node1 ".into(),
            timestamps: false,
        };
        let log = Logger::to_files_as(vec![], std::slice::from_ref(&path), format)
            .unwrap_or_else(|e| panic!("{e}"));
        log.log(Level::Unusual, "lightningd", "hello");
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(text, "node1 UNUSUAL lightningd: hello\n");
        let stamped = LineFormat {
            prefix: ">".into(),
            timestamps: true,
        };
        let mut out = vec![];
        stamped.write(&mut out, "T", Level::Info, "x", "y");
        assert_eq!(String::from_utf8_lossy(&out), ">T INFO    x: y\n");
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn reopen_starts_a_new_file_after_rotation() {
        let (d, path) = fresh_log("reopen");
        let log =
            Logger::to_files(vec![], std::slice::from_ref(&path)).unwrap_or_else(|e| panic!("{e}"));
        log.log(Level::Info, "lightningd", "before");
        std::fs::rename(&path, d.join("log.1")).unwrap_or_else(|e| panic!("{e}"));
        log.log(Level::Info, "lightningd", "still old");
        log.reopen().unwrap_or_else(|e| panic!("{e}"));
        log.log(Level::Info, "lightningd", "after");
        let old = std::fs::read_to_string(d.join("log.1")).unwrap_or_default();
        let new = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(old.contains("before") && old.contains("still old"), "{old}");
        assert!(old.contains("Ending log due to SIGHUP"), "{old}");
        assert!(!old.contains("after"), "{old}");
        assert!(
            new.contains("Started log due to SIGHUP") && new.contains("after"),
            "{new}"
        );
        assert!(!new.contains("before"), "{new}");
        // A destination that cannot be opened keeps the old one.
        std::fs::remove_dir_all(&d).unwrap_or_else(|e| panic!("{e}"));
        assert!(log.reopen().is_err());
    }

    #[test]
    fn log_if_free_writes_when_the_log_is_free() {
        let mem = MemoryLog::default();
        let log = Logger::new(vec![], Box::new(mem.clone()));
        log.log_if_free(Level::Broken, "lightningd", "FATAL: x\ny");
        let text = mem.text();
        assert!(text.contains("**BROKEN** lightningd: FATAL: x"), "{text}");
        assert!(text.contains("**BROKEN** lightningd: y"), "{text}");
    }
}
