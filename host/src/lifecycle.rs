//! The process around the node: one node per directory, and panics that stop it.
//!
//! * [`DirLock`]: CLN's pid file (`<lightning-dir>/lightningd-<network>.pid`, or
//!   `--pid-file`), locked for the life of the process, plus a lock on the network directory
//!   itself, so that a second `fulgurd` on the same data refuses to start whatever its
//!   `--pid-file` or `--rpc-file` say. Both are `flock` locks: the kernel drops them when
//!   the process dies, however it dies, so a stale pid file never blocks a restart.
//! * [`install_panic_hook`]: a panic anywhere (a tokio worker included, where tokio would
//!   otherwise catch it and leave a node whose RPC answers while a part of it is dead) logs
//!   a `**BROKEN**` line with a backtrace to the node's log and stderr, then exits with
//!   [`EXIT_PANIC`]. The one place that knowingly survives a panic from library code runs it
//!   under [`fulgur_base::panic::contain`].
//!
//! Not here: signals and shutdown order ([`crate::node`]), reopening the log on SIGHUP
//! ([`crate::log::Logger::reopen`]).

use std::fs::{File, OpenOptions, TryLockError};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crate::log::{Level, Logger};

/// Exit code when another node holds the directory: CLN's `EXITCODE_PIDFILE_LOCK`.
pub const EXIT_PIDFILE_LOCK: i32 = 11;

/// Exit code after a panic (CLN exits 1 from `fatal()` when it cannot dump a crash log).
pub const EXIT_PANIC: i32 = 1;

/// Why the directory could not be locked.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another process holds the lock: a node is running on this directory.
    #[error("fulgurd already running? Error locking {what} {path}: {holder}")]
    Held {
        /// `PID file` or `network directory`.
        what: &'static str,
        /// The pid file or directory whose lock is taken.
        path: PathBuf,
        /// What we know of the holder ("held by pid N" or the OS error).
        holder: String,
    },
    /// The pid file or the directory could not be opened, locked or written.
    #[error("cannot use PID file {path}: {error}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        error: std::io::Error,
    },
}

impl LockError {
    /// The process exit code for this error, as CLN's.
    pub fn exit_code(&self) -> i32 {
        match self {
            LockError::Held { .. } => EXIT_PIDFILE_LOCK,
            LockError::Io { .. } => 1,
        }
    }
}

/// The pid file and directory locks, held while this value lives. Dropping it removes the
/// pid file, as CLN does at a clean shutdown (after a crash the file stays, unlocked, and
/// the next start takes it over).
#[derive(Debug)]
pub struct DirLock {
    pid_path: PathBuf,
    _pid_file: File,
    _dir: File,
}

fn held_by(pid_path: &Path) -> String {
    match std::fs::read_to_string(pid_path) {
        Ok(s) if !s.trim().is_empty() => format!("held by pid {}", s.trim()),
        _ => "locked by another process".to_string(),
    }
}

fn try_lock(
    file: &File,
    what: &'static str,
    path: &Path,
    pid_path: &Path,
) -> Result<(), LockError> {
    match file.try_lock() {
        Ok(()) => Ok(()),
        Err(TryLockError::WouldBlock) => Err(LockError::Held {
            what,
            path: path.to_path_buf(),
            holder: held_by(pid_path),
        }),
        Err(TryLockError::Error(error)) => Err(LockError::Io {
            path: path.to_path_buf(),
            error,
        }),
    }
}

impl DirLock {
    /// Locks `net_dir` and the pid file, then writes our pid into the latter. Fails with
    /// [`LockError::Held`] if another process holds either.
    pub fn acquire(pid_path: &Path, net_dir: &Path) -> Result<DirLock, LockError> {
        use std::os::unix::fs::OpenOptionsExt;
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |error| LockError::Io { path, error }
        };
        // The data itself first: a node with another `--pid-file` still finds it taken,
        // and a refused start creates no file.
        let dir = File::open(net_dir).map_err(io(net_dir))?;
        try_lock(&dir, "network directory", net_dir, pid_path)?;
        // Then CLN's pid file, whose content names the holder.
        let mut pid_file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o640)
            .open(pid_path)
            .map_err(io(pid_path))?;
        try_lock(&pid_file, "PID file", pid_path, pid_path)?;
        pid_file.set_len(0).map_err(io(pid_path))?;
        pid_file
            .write_all(format!("{}\n", std::process::id()).as_bytes())
            .map_err(io(pid_path))?;
        Ok(DirLock {
            pid_path: pid_path.to_path_buf(),
            _pid_file: pid_file,
            _dir: dir,
        })
    }
}

impl Drop for DirLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.pid_path);
    }
}

use fulgur_base::panic::contained;

static PANIC_LOG: OnceLock<Logger> = OnceLock::new();

/// The text of a panic: where and what.
fn describe(info: &std::panic::PanicHookInfo<'_>) -> String {
    let what = info
        .payload()
        .downcast_ref::<&str>()
        .map(|s| (*s).to_string())
        .or_else(|| info.payload().downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(non-string panic payload)".to_string());
    let thread = std::thread::current();
    let name = thread.name().unwrap_or("unnamed");
    match info.location() {
        Some(l) => format!(
            "thread '{name}' panicked at {}:{}: {what}",
            l.file(),
            l.line()
        ),
        None => format!("thread '{name}' panicked: {what}"),
    }
}

/// Makes every panic fatal: logs it as `**BROKEN**` (with a backtrace) to `log` and to
/// stderr, then exits with [`EXIT_PANIC`], from whichever thread panicked. Panics inside
/// [`fulgur_base::panic::contain`] are logged and left to unwind. Installed once per process; a later call
/// keeps the first logger.
pub fn install_panic_hook(log: &Logger) {
    let _ = PANIC_LOG.set(log.clone());
    std::panic::set_hook(Box::new(|info| {
        let text = describe(info);
        if contained() {
            if let Some(log) = PANIC_LOG.get() {
                log.log_if_free(
                    Level::Broken,
                    "lightningd",
                    &format!("{text} (contained; the node goes on)"),
                );
            }
            return;
        }
        let trace = std::backtrace::Backtrace::force_capture().to_string();
        eprintln!("fulgurd: FATAL: {text}\n{trace}");
        if let Some(log) = PANIC_LOG.get() {
            log.log_if_free(Level::Broken, "lightningd", &format!("FATAL: {text}"));
            log.log_if_free(Level::Broken, "lightningd", &format!("backtrace:\n{trace}"));
        }
        std::process::exit(EXIT_PANIC);
    }));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("fulgur-lifecycle-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(d.join("regtest")).unwrap_or_else(|e| panic!("{e}"));
        d
    }

    #[test]
    fn second_lock_on_the_same_directory_is_refused() {
        let d = temp("dir");
        let net = d.join("regtest");
        let first = DirLock::acquire(&d.join("lightningd-regtest.pid"), &net)
            .unwrap_or_else(|e| panic!("{e}"));
        let pid = std::fs::read_to_string(d.join("lightningd-regtest.pid")).unwrap_or_default();
        assert_eq!(pid, format!("{}\n", std::process::id()));
        // Same directory: refused, naming the holder.
        let e = DirLock::acquire(&d.join("lightningd-regtest.pid"), &net)
            .map(|_| ())
            .err();
        assert!(
            matches!(&e, Some(LockError::Held { holder, .. }) if holder.contains(&std::process::id().to_string())),
            "{e:?}"
        );
        assert_eq!(e.map(|e| e.exit_code()), Some(EXIT_PIDFILE_LOCK));
        // Another pid file: still refused, and that file is not created.
        let e = DirLock::acquire(&d.join("other.pid"), &net)
            .map(|_| ())
            .err();
        assert!(
            matches!(e, Some(LockError::Held { ref path, .. }) if *path == net),
            "{e:?}"
        );
        assert!(!d.join("other.pid").exists());
        // Same pid file, another directory: refused by the pid file's lock (CLN's rule).
        std::fs::create_dir_all(d.join("signet")).unwrap_or_else(|e| panic!("{e}"));
        let e = DirLock::acquire(&d.join("lightningd-regtest.pid"), &d.join("signet"))
            .map(|_| ())
            .err();
        assert!(
            matches!(
                e,
                Some(LockError::Held {
                    what: "PID file",
                    ..
                })
            ),
            "{e:?}"
        );
        drop(first);
        assert!(!d.join("lightningd-regtest.pid").exists());
        let again = DirLock::acquire(&d.join("other.pid"), &net);
        assert!(again.is_ok(), "{again:?}");
        let _ = std::fs::remove_dir_all(&d);
    }
}
