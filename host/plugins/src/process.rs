//! A plugin as a child process: CLN's framing on its stdin and stdout, its stderr into the
//! node's log. This is the only module that knows about pipes; the plugin itself is
//! `plugin.rs`'s [`Plugin`], which the WASM transport uses too.

use std::process::Stdio;
use std::sync::Arc;

use bytes::Bytes;
use fulgur_protocol::codec::{FrameError, JsonCodec};
use futures::StreamExt;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::codec::FramedRead;

use fulgur_base::log::SourceLog;

use crate::plugin::{
    Birth, MAX_PLUGIN_MESSAGE, MAX_STDERR_LINE, OutQueue, Plugin, WRITE_BATCH, Wiring,
};

/// Cuts a plugin's stderr into log lines: any bytes (invalid UTF-8 is replaced, not an
/// error) and at most [`MAX_STDERR_LINE`] bytes of one line kept, however long it is.
struct StderrLines {
    line: Vec<u8>,
    /// Bytes of the current line dropped past the limit.
    dropped: u64,
    max: usize,
}

impl StderrLines {
    fn new(max: usize) -> Self {
        StderrLines {
            line: Vec::new(),
            dropped: 0,
            max,
        }
    }

    /// Takes a chunk; returns the messages to log.
    fn feed(&mut self, mut chunk: &[u8]) -> Vec<String> {
        let mut out = vec![];
        loop {
            let (part, rest) = match chunk.iter().position(|b| *b == b'\n') {
                Some(i) => (&chunk[..i], Some(&chunk[i + 1..])),
                None => (chunk, None),
            };
            self.take(part, &mut out);
            match rest {
                Some(r) => {
                    out.extend(self.end_line());
                    chunk = r;
                }
                None => return out,
            }
        }
    }

    fn take(&mut self, part: &[u8], out: &mut Vec<String>) {
        let room = self.max.saturating_sub(self.line.len());
        if self.dropped == 0 && part.len() <= room {
            self.line.extend_from_slice(part);
            return;
        }
        if self.dropped == 0 {
            // The line just outgrew the limit: log its head now, count the rest.
            self.line.extend_from_slice(&part[..room]);
            out.push(format!(
                "{} [stderr line longer than {} bytes: the rest is dropped]",
                String::from_utf8_lossy(&self.line),
                self.max
            ));
            self.line.clear();
            self.dropped = (part.len() - room) as u64;
        } else {
            self.dropped = self.dropped.saturating_add(part.len() as u64);
        }
    }

    /// A newline (or the end of the stream) ends the current line.
    fn end_line(&mut self) -> Option<String> {
        if self.dropped > 0 {
            let msg = format!(
                "[end of an overlong stderr line: {} bytes of it dropped]",
                self.dropped
            );
            self.dropped = 0;
            self.line.clear();
            return Some(msg);
        }
        let text = String::from_utf8_lossy(&self.line).into_owned();
        self.line.clear();
        Some(text)
    }

    /// The stream ended: whatever is left of a line.
    fn finish(&mut self) -> Option<String> {
        if self.line.is_empty() && self.dropped == 0 {
            return None;
        }
        self.end_line()
    }
}

/// Logs a plugin's stderr line by line until it closes.
async fn pump_stderr(mut stderr: impl AsyncRead + Unpin, log: SourceLog) {
    let mut lines = StderrLines::new(MAX_STDERR_LINE);
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match stderr.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        for msg in lines.feed(&buf[..n]) {
            log.info(&msg);
        }
    }
    if let Some(msg) = lines.finish() {
        log.info(&msg);
    }
}

/// The runtime the plugins' pipes are read and written on: one thread of its own, so that a
/// plugin's answer is read even while every worker of the node's runtime is blocked (on LDK's
/// locks, say, while a `db_write` hook holds the database waiting for that very answer).
/// Falls back to the caller's runtime if a thread cannot be started.
pub fn io_handle() -> tokio::runtime::Handle {
    static IO: std::sync::OnceLock<Option<tokio::runtime::Runtime>> = std::sync::OnceLock::new();
    IO.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("plugin-io")
            .enable_all()
            .build()
            .ok()
    })
    .as_ref()
    .map_or_else(tokio::runtime::Handle::current, |rt| rt.handle().clone())
}

/// Starts the plugin at `path` as a process, with its I/O tasks (on [`io_handle`]'s
/// runtime). `Err` is CLN's "opening pipe" reason.
pub(super) fn spawn(b: &Birth<'_>) -> Result<Arc<Plugin>, String> {
    let (host, path) = (b.host, b.path);
    let io = io_handle();
    // The pipes belong to the reactor of the runtime entered when they are made.
    let _entered = io.enter();
    let mut cmd = tokio::process::Command::new(path);
    cmd.current_dir(&host.settings.net_dir)
        .env("LIGHTNINGD_PLUGIN", "1")
        .env("LIGHTNINGD_VERSION", fulgur_base::VERSION)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd.spawn().map_err(|e| format!("opening pipe: {e}"))?;
    let (Some(stdin), Some(stdout), Some(stderr)) =
        (child.stdin.take(), child.stdout.take(), child.stderr.take())
    else {
        return Err("opening pipe: missing stdio".into());
    };
    let (tx, mut rx) = mpsc::unbounded_channel::<Bytes>();
    let (exited_tx, exited) = watch::channel(false);
    let (kill_tx, kill_rx) = oneshot::channel::<()>();
    let plugin = Plugin::assemble(
        b,
        Wiring {
            tx,
            exited,
            kill_tx,
            inline: None,
        },
        None,
    );

    // Writer: frames to stdin; dropping the channel closes stdin (EOF for the plugin).
    // The queue's accounting counts a frame until it has been written.
    let queue = Arc::new(OutQueue::default());
    let _ = plugin.queue.set(queue.clone());
    let log = plugin.log.clone();
    io.spawn(async move {
        let mut stdin = stdin;
        let mut buf = Vec::with_capacity(WRITE_BATCH);
        while let Some(frame) = rx.recv().await {
            let mut batch = frame.len();
            let ok = if frame.len() >= WRITE_BATCH {
                stdin.write_all(&frame).await.is_ok()
            } else {
                // Small frames already queued go out in one write.
                buf.extend_from_slice(&frame);
                while buf.len() < WRITE_BATCH {
                    let Ok(more) = rx.try_recv() else { break };
                    batch += more.len();
                    buf.extend_from_slice(&more);
                }
                let ok = stdin.write_all(&buf).await.is_ok();
                buf.clear();
                ok
            };
            queue.release(batch, &log);
            if !ok {
                break;
            }
        }
    });

    // Stderr: each line into the log, bounded and lossy.
    io.spawn(pump_stderr(stderr, plugin.log.clone()));

    // Reader: messages from stdout.
    let weak_host = Arc::downgrade(host);
    let p = plugin.clone();
    io.spawn(async move {
        let mut frames = FramedRead::new(stdout, JsonCodec::new(MAX_PLUGIN_MESSAGE));
        let reason = loop {
            match frames.next().await {
                Some(Ok(v)) => {
                    if let Err(reason) = p.incoming(&weak_host, v) {
                        break Some(reason);
                    }
                }
                Some(Err(FrameError::Io(_))) | None => break None,
                Some(Err(FrameError::TooLarge { limit })) => {
                    break Some(format!("message larger than {limit} bytes"));
                }
                Some(Err(FrameError::Invalid(e))) => {
                    break Some(format!(
                        "JSON-RPC message does not contain \"jsonrpc\" field (invalid JSON: {e})"
                    ));
                }
            }
        };
        if let Some(host) = weak_host.upgrade() {
            let reason = reason.unwrap_or_else(|| p.exit_reason());
            host.plugin_gone(&p, &reason);
        }
    });

    // Supervisor: owns the child, kills it on request, reaps it.
    io.spawn(async move {
        let mut child = child;
        tokio::select! {
            _ = kill_rx => { let _ = child.start_kill(); let _ = child.wait().await; }
            _ = child.wait() => {}
        }
        let _ = exited_tx.send(true);
    });
    Ok(plugin)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stderr_lines_survive_invalid_utf8_and_endless_lines() {
        let mut s = StderrLines::new(8);
        assert_eq!(s.feed(b"ab\ncd"), vec!["ab".to_string()]);
        assert_eq!(
            s.feed(b"\xff\xfe\n"),
            vec!["cd\u{fffd}\u{fffd}".to_string()]
        );
        // A line over the limit: its head is logged at once, the rest only counted,
        // however many chunks it spans.
        let out = s.feed(b"0123456789");
        assert_eq!(out.len(), 1);
        assert!(
            out[0].starts_with("01234567 [stderr line longer than 8"),
            "{out:?}"
        );
        assert!(s.feed(&[b'x'; 1000]).is_empty());
        assert!(s.line.len() <= 8);
        let out = s.feed(b"yy\nnext\n");
        assert_eq!(
            out,
            vec![
                "[end of an overlong stderr line: 1004 bytes of it dropped]".to_string(),
                "next".to_string()
            ]
        );
        assert_eq!(s.feed(b"tail"), Vec::<String>::new());
        assert_eq!(s.finish(), Some("tail".to_string()));
        assert_eq!(s.finish(), None);
        // Blank lines are kept as lines.
        assert_eq!(s.feed(b"\n"), vec![String::new()]);
    }
}
