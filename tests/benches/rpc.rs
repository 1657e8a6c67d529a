//! RPC benchmark: real `fulgurd` processes, real plugins, the real UNIX socket.
//!
//! Run with `cargo bench -p fulgur-tests --bench rpc`. It first builds the release
//! binaries it starts (`cargo build --release -j2 -p fulgur-host -p fulgur-plugin-sdk
//! --bins --examples -p fulgur-plugin-pay -p fulgur-plugin-htlc-hold -p
//! fulgur-plugin-autopilot -p fulgur-plugin-autoclean`);
//! set `FULGUR_BENCH_SKIP_BUILD=1` to use what is already in `target/release`.
//!
//! Measures, each with a fixed number of calls after a warm-up, every loop bounded in count
//! and in time:
//! 1. `getinfo` on one persistent connection (calls/s, p50, p99);
//! 2. `getinfo` on a new connection per call, as pyln-client does;
//! 3. `hello` served by the SDK example plugin `hello`;
//! 4. `hello` served by a pyln-client plugin (`tests/benches/plugins/bench_hello.py`);
//! 5. `getinfo` with one `rpc_command` hook in the path: the SDK example `hooks`, and a
//!    pyln-client plugin that always continues (`tests/benches/plugins/bench_hook.py`);
//! 6. idle `fulgurd` RSS with no plugins and with the built-in plugins.
//!
//! Plus 8 clients in parallel, and `getinfo` on a connection whose earlier call is held by
//! a hook (long-polling must not block the connection).
//!
//! pyln rows need a Python with pyln-client: `FULGUR_BENCH_PYTHON`, else
//! `<workspace>/.venv/bin/python3` (`python3 -m venv .venv && .venv/bin/pip install -r
//! tests/requirements.txt`); without it those rows are skipped and say so.
//!
//! Every process started here runs in its own process group, killed on drop (also when a
//! measurement fails or panics). Figures and how to read them: `docs/PERFORMANCE.md`.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

/// Calls per measurement on paths served inside fulgurd or by a Rust plugin.
const CALLS: usize = 20_000;
/// Calls per measurement on paths served by a Python plugin.
const CALLS_PY: usize = 3_000;
/// Warm-up calls before each measurement (not timed).
const WARMUP: usize = 1_000;
/// Warm-up calls before each Python measurement.
const WARMUP_PY: usize = 300;
/// Parallel clients for the concurrency figure, and calls made by each.
const CLIENTS: usize = 8;
const CALLS_PER_CLIENT: usize = 5_000;
/// No measurement loop runs longer than this; a cut-short run is reported as such.
const TIME_LIMIT: Duration = Duration::from_secs(60);
/// How long one reply may take before the call counts as failed.
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a node may take to start.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// Pause between "ready" and reading the idle RSS.
const SETTLE: Duration = Duration::from_secs(2);

const DISABLE_BUILTINS: [&str; 8] = [
    "--disable-plugin=pay",
    "--disable-plugin=htlc-hold",
    "--disable-plugin=autopilot",
    "--disable-plugin=autoclean",
    "--disable-plugin=bookkeeper",
    "--disable-plugin=commando",
    "--disable-plugin=sql",
    "--disable-plugin=clnrest",
];

/// The parameters of every `hello`-like call measured.
const HELLO_PARAMS: &str = r#"{"name":"bench"}"#;

type Res<T> = Result<T, String>;

// ---------------------------------------------------------------------------------------
// Environment: binaries, Python.

struct Env {
    root: PathBuf,
    release: PathBuf,
    python_bin: Option<PathBuf>,
}

impl Env {
    fn fulgurd(&self) -> PathBuf {
        self.release.join("fulgurd")
    }

    fn example(&self, name: &str) -> PathBuf {
        self.release.join("examples").join(name)
    }

    fn py_plugin(&self, name: &str) -> PathBuf {
        self.root.join("tests/benches/plugins").join(name)
    }
}

fn setup() -> Res<Env> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .map_err(|e| format!("workspace root: {e}"))?;
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    let release = target.join("release");
    if std::env::var_os("FULGUR_BENCH_SKIP_BUILD").is_none() {
        eprintln!("building release binaries (FULGUR_BENCH_SKIP_BUILD=1 skips this)...");
    }
    fulgur_tests::build_release(&[
        "-p",
        "fulgur-host",
        "-p",
        "fulgur-plugin-sdk",
        // `--examples` alone would select only examples: ask for the binaries too.
        "--bins",
        "--examples",
        "-p",
        "fulgur-plugin-pay",
        "-p",
        "fulgur-plugin-htlc-hold",
        "-p",
        "fulgur-plugin-autopilot",
        "-p",
        "fulgur-plugin-autoclean",
        "-p",
        "fulgur-plugin-bookkeeper",
        "-p",
        "cln-plugin-compat",
    ])?;
    let env = Env {
        root: root.clone(),
        release,
        python_bin: None,
    };
    for p in [env.fulgurd(), env.example("hello"), env.example("hooks")] {
        if !p.exists() {
            return Err(format!("{} is missing (build it in release)", p.display()));
        }
    }
    let python = std::env::var_os("FULGUR_BENCH_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join(".venv/bin/python3"));
    let has_pyln = Command::new(&python)
        .args(["-c", "import pyln.client"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    let python_bin = if has_pyln {
        python.parent().map(Path::to_path_buf)
    } else {
        eprintln!(
            "no pyln-client at {}: pyln rows skipped (python3 -m venv .venv && .venv/bin/pip install -r tests/requirements.txt)",
            python.display()
        );
        None
    };
    Ok(Env { python_bin, ..env })
}

// ---------------------------------------------------------------------------------------
// A fulgurd process.

struct Node {
    dir: PathBuf,
    child: Child,
}

impl Node {
    /// Starts fulgurd on regtest with `args` and waits until it is ready. With `path_first`,
    /// that directory leads `PATH` (so `#!/usr/bin/env python3` plugins find the venv).
    fn start(env: &Env, tag: &str, args: &[String], path_first: Option<&Path>) -> Res<Node> {
        let dir = std::env::temp_dir().join(format!("fulgur-bench-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let mut cmd = Command::new(env.fulgurd());
        cmd.arg(format!("--lightning-dir={}", dir.display()))
            .arg("--network=regtest")
            .arg(format!("--log-file={}", dir.join("log").display()))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // Own process group: fulgurd and its plugins are killed together on drop.
            .process_group(0);
        if let Some(first) = path_first {
            let path = std::env::var("PATH").unwrap_or_default();
            cmd.env("PATH", format!("{}:{path}", first.display()));
        }
        let child = cmd
            .spawn()
            .map_err(|e| format!("cannot start fulgurd: {e}"))?;
        let mut node = Node { dir, child };
        let end = Instant::now() + START_TIMEOUT;
        loop {
            if node.log().contains("Server started with public key") && node.socket().exists() {
                return Ok(node);
            }
            if let Ok(Some(status)) = node.child.try_wait() {
                return Err(format!("fulgurd exited ({status}); log:\n{}", node.log()));
            }
            if Instant::now() > end {
                return Err(format!(
                    "fulgurd not ready in {START_TIMEOUT:?}; log:\n{}",
                    node.log()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn socket(&self) -> PathBuf {
        self.dir.join("regtest/lightning-rpc")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("log")).unwrap_or_default()
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits (bounded) until `method` answers with a result: plugins may still be starting.
    fn wait_method(&self, method: &str, params: &str) -> Res<()> {
        let end = Instant::now() + START_TIMEOUT;
        loop {
            let mut c = Client::connect(&self.socket())?;
            match c.call(method, params) {
                Ok(_) => return Ok(()),
                Err(e) if Instant::now() > end => {
                    return Err(format!("{method} never answered: {e}"));
                }
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }

    /// Asks it to stop, and waits (bounded) for it to exit; `Drop` kills it otherwise.
    fn stop(mut self) {
        if let Ok(mut c) = Client::connect(&self.socket()) {
            let _ = c.call("stop", "{}");
        }
        let end = Instant::now() + Duration::from_secs(10);
        while Instant::now() < end {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        // The whole group (fulgurd and its plugins), then fulgurd itself, reaped.
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.child.id())])
            .stderr(Stdio::null())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `VmRSS` of a process, in KiB.
fn rss_kib(pid: u32) -> Res<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|e| format!("/proc/{pid}/status: {e}"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| format!("no VmRSS for {pid}"))
}

/// Direct children of `pid` (from `/proc/*/stat`).
fn children(pid: u32) -> Vec<u32> {
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    rd.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|p| {
            std::fs::read_to_string(format!("/proc/{p}/stat")).is_ok_and(|s| {
                // After the parenthesised name: state, then ppid.
                s.rsplit_once(')')
                    .and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<u32>().ok())
                    == Some(pid)
            })
        })
        .collect()
}

// ---------------------------------------------------------------------------------------
// A JSON-RPC client on the UNIX socket: requests without terminator, replies end "\n\n".

struct Client {
    stream: UnixStream,
    buf: Vec<u8>,
    /// Bytes of `buf` already known to hold no terminator.
    scanned: usize,
    next_id: u64,
}

impl Client {
    fn connect(path: &Path) -> Res<Client> {
        let stream =
            UnixStream::connect(path).map_err(|e| format!("connect {}: {e}", path.display()))?;
        stream
            .set_read_timeout(Some(REPLY_TIMEOUT))
            .map_err(|e| e.to_string())?;
        stream
            .set_write_timeout(Some(REPLY_TIMEOUT))
            .map_err(|e| e.to_string())?;
        Ok(Client {
            stream,
            buf: Vec::with_capacity(8192),
            scanned: 0,
            next_id: 1,
        })
    }

    /// Sends one request (params is JSON text) and returns its id.
    fn send(&mut self, method: &str, params: &str) -> Res<u64> {
        let id = self.next_id;
        self.next_id += 1;
        let req = format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"{method}","params":{params}}}"#);
        self.stream
            .write_all(req.as_bytes())
            .map_err(|e| format!("write: {e}"))?;
        Ok(id)
    }

    /// Reads the next reply (without its terminator).
    fn recv(&mut self) -> Res<Vec<u8>> {
        loop {
            let from = self.scanned.saturating_sub(1);
            if let Some(pos) = self.buf[from..].windows(2).position(|w| w == b"\n\n") {
                let end = from + pos;
                let reply = self.buf[..end].to_vec();
                self.buf.drain(..end + 2);
                self.scanned = 0;
                return Ok(reply);
            }
            self.scanned = self.buf.len();
            let mut chunk = [0u8; 16384];
            let n = self
                .stream
                .read(&mut chunk)
                .map_err(|e| format!("read: {e}"))?;
            if n == 0 {
                return Err("connection closed".into());
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// One call; `Ok(reply)` if the reply is a result for this id.
    fn call(&mut self, method: &str, params: &str) -> Res<Vec<u8>> {
        let id = self.send(method, params)?;
        let reply = self.recv()?;
        check_reply(&reply, id)?;
        Ok(reply)
    }
}

/// A cheap check that `reply` is a result (not an error) for `id`.
fn check_reply(reply: &[u8], id: u64) -> Res<()> {
    let text = String::from_utf8_lossy(reply);
    let head = &text[..text.len().min(64)];
    if head.contains(&format!("\"id\":{id},")) && head.contains("\"result\":") {
        Ok(())
    } else {
        Err(format!("unexpected reply to id {id}: {text}"))
    }
}

/// A full check (used once per measurement): valid JSON with a result and the right id.
fn check_reply_json(reply: &[u8], id: u64) -> Res<()> {
    let v: serde_json::Value =
        serde_json::from_slice(reply).map_err(|e| format!("bad JSON reply: {e}"))?;
    if v.get("id").and_then(serde_json::Value::as_u64) == Some(id) && v.get("result").is_some() {
        Ok(())
    } else {
        Err(format!("unexpected reply to id {id}: {v}"))
    }
}

// ---------------------------------------------------------------------------------------
// Measurements.

struct Measure {
    calls: usize,
    elapsed: Duration,
    /// Sorted latencies in nanoseconds.
    lat: Vec<u64>,
    /// Why the run stopped early, if it did.
    cut: Option<String>,
}

impl Measure {
    fn rate(&self) -> f64 {
        self.calls as f64 / self.elapsed.as_secs_f64()
    }

    fn pct(&self, p: usize) -> Option<f64> {
        if self.lat.is_empty() {
            return None;
        }
        let i = (self.lat.len() * p / 100).min(self.lat.len() - 1);
        Some(self.lat[i] as f64 / 1000.0)
    }

    fn new(calls: usize, elapsed: Duration, mut lat: Vec<u64>, cut: Option<String>) -> Measure {
        lat.sort_unstable();
        Measure {
            calls,
            elapsed,
            lat,
            cut,
        }
    }
}

/// Times `n` calls of `call`, one after the other, cut short at [`TIME_LIMIT`].
fn timed(n: usize, mut call: impl FnMut() -> Res<()>) -> Res<Measure> {
    let mut lat = Vec::with_capacity(n);
    let start = Instant::now();
    let mut cut = None;
    for _ in 0..n {
        if start.elapsed() > TIME_LIMIT {
            cut = Some(format!("time limit {TIME_LIMIT:?}"));
            break;
        }
        let t = Instant::now();
        call()?;
        lat.push(t.elapsed().as_nanos() as u64);
    }
    Ok(Measure::new(lat.len(), start.elapsed(), lat, cut))
}

/// `n` sequential calls of `method` on one persistent connection, after `warm` untimed ones.
fn sequential(socket: &Path, method: &str, params: &str, warm: usize, n: usize) -> Res<Measure> {
    let mut c = Client::connect(socket)?;
    let first = c.call(method, params)?;
    check_reply_json(&first, c.next_id - 1)?;
    for _ in 0..warm {
        c.call(method, params)?;
    }
    timed(n, || c.call(method, params).map(drop))
}

/// `n` calls, each on a new connection (connect, write, read the reply, close).
fn new_connection_each(socket: &Path, method: &str, n: usize) -> Res<Measure> {
    for _ in 0..WARMUP {
        Client::connect(socket)?.call(method, "{}")?;
    }
    timed(n, || Client::connect(socket)?.call(method, "{}").map(drop))
}

/// `clients` connections in parallel threads, each making `per_client` sequential calls.
fn parallel(socket: &Path, method: &str, clients: usize, per_client: usize) -> Res<Measure> {
    let barrier = Arc::new(Barrier::new(clients + 1));
    let handles: Vec<_> = (0..clients)
        .map(|_| {
            let socket = socket.to_path_buf();
            let method = method.to_string();
            let barrier = barrier.clone();
            std::thread::spawn(move || -> Res<Vec<u64>> {
                let conn = Client::connect(&socket).and_then(|mut c| {
                    for _ in 0..WARMUP / clients.max(1) {
                        c.call(&method, "{}")?;
                    }
                    Ok(c)
                });
                // Always reach the barrier, even after an error, so nobody waits forever.
                barrier.wait();
                let mut c = conn?;
                let start = Instant::now();
                let mut lat = Vec::with_capacity(per_client);
                for _ in 0..per_client {
                    if start.elapsed() > TIME_LIMIT {
                        break;
                    }
                    let t = Instant::now();
                    c.call(&method, "{}")?;
                    lat.push(t.elapsed().as_nanos() as u64);
                }
                Ok(lat)
            })
        })
        .collect();
    barrier.wait();
    let start = Instant::now();
    let mut all = Vec::with_capacity(clients * per_client);
    let mut err = None;
    for h in handles {
        match h.join() {
            Ok(Ok(l)) => all.extend(l),
            Ok(Err(e)) => err = Some(e),
            Err(_) => err = Some("client thread panicked".into()),
        }
    }
    let elapsed = start.elapsed();
    if let Some(e) = err {
        return Err(e);
    }
    let cut = (all.len() < clients * per_client).then(|| format!("time limit {TIME_LIMIT:?}"));
    Ok(Measure::new(all.len(), elapsed, all, cut))
}

/// A `hooksheld` call (held by the SDK `hooks` plugin until `hooksrelease`) is left pending
/// on a connection; `n` getinfo calls are then made on that same connection; then the call
/// is released from another connection and its reply must arrive.
fn getinfo_beside_held_call(socket: &Path, n: usize) -> Res<Measure> {
    let mut c = Client::connect(socket)?;
    let held_id = c.send("hooksheld", "{}")?;
    // Let the hook take it before timing.
    std::thread::sleep(Duration::from_millis(100));
    // A reply to the held call here would mean it was not held: check_reply refuses it.
    let measure = timed(n, || c.call("getinfo", "{}").map(drop))?;
    let released = Client::connect(socket)?.call("hooksrelease", "{}")?;
    if !String::from_utf8_lossy(&released).contains("\"released\":1") {
        return Err(format!(
            "hooksrelease did not release exactly one call: {}",
            String::from_utf8_lossy(&released)
        ));
    }
    let reply = c.recv()?;
    check_reply(&reply, held_id)?;
    Ok(measure)
}

// ---------------------------------------------------------------------------------------
// The report.

enum Fig {
    Rate(Measure),
    MiB(f64),
    Text(String),
}

struct Row {
    name: String,
    fig: Res<Fig>,
    target: String,
    /// `Some(true)` met, `Some(false)` missed, `None` no target.
    met: Option<bool>,
}

struct Report {
    rows: Vec<Row>,
}

impl Report {
    fn add(&mut self, name: &str, fig: Res<Fig>, target: &str, met: Option<bool>) {
        self.rows.push(Row {
            name: name.into(),
            fig,
            target: target.into(),
            met,
        });
    }

    /// A row with no target to meet (`target` may still say what to look for).
    fn note(&mut self, name: &str, fig: Res<Fig>, target: &str) {
        self.add(name, fig, target, None);
    }

    /// A row for a measurement that needs pyln-client when there is none.
    fn skip_pyln(&mut self, name: &str) {
        self.note(name, Err("skipped: no pyln-client".into()), "");
    }

    fn print(&self) {
        println!();
        println!(
            "{:<58} {:>7} {:>10} {:>9} {:>9}  {:<22} met",
            "measurement", "calls", "calls/s", "p50 µs", "p99 µs", "target"
        );
        println!("{}", "-".repeat(128));
        for r in &self.rows {
            let met = match r.met {
                Some(true) => "yes",
                Some(false) => "NO",
                None => "",
            };
            let cols = match &r.fig {
                Ok(Fig::Rate(m)) => {
                    let f = |p| m.pct(p).map(|v| format!("{v:.1}")).unwrap_or_default();
                    let mut s = format!(
                        "{:>7} {:>10.0} {:>9} {:>9}",
                        m.calls,
                        m.rate(),
                        f(50),
                        f(99)
                    );
                    if let Some(c) = &m.cut {
                        s.push_str(&format!(" (cut short: {c})"));
                    }
                    s
                }
                Ok(Fig::MiB(v)) => format!(
                    "{:>7} {:>10} {:>9} {:>9}",
                    "",
                    format!("{v:.1} MiB"),
                    "",
                    ""
                ),
                Ok(Fig::Text(t)) => format!("{t:>38}"),
                Err(e) => format!("FAILED: {}", e.lines().next().unwrap_or_default()),
            };
            println!("{:<58} {cols}  {:<22} {met}", r.name, r.target);
        }
        println!();
    }
}

/// The idle RSS of `node` (after [`SETTLE`]) against the 15 MiB target.
fn report_idle_rss(report: &mut Report, node: &Node, name: &str) {
    std::thread::sleep(SETTLE);
    let idle = rss_kib(node.pid()).map(|k| k as f64 / 1024.0);
    let met = idle.as_ref().ok().map(|v| *v <= 15.0);
    report.add(name, idle.map(Fig::MiB), "<= 15 MiB", met);
}

/// Starts a node whose only plugin is `plugin`, waits until `ready` answers, runs `measure`
/// on it and stops it.
fn with_plugin(
    env: &Env,
    tag: &str,
    plugin: &Path,
    path_first: Option<&Path>,
    ready: &str,
    measure: impl FnOnce(&Node) -> Res<Measure>,
) -> Res<Measure> {
    let node = Node::start(env, tag, &plugin_args(plugin), path_first)?;
    node.wait_method(ready, "{}")?;
    let m = measure(&node);
    node.stop();
    m
}

fn rate_fig(m: Res<Measure>) -> (Option<f64>, Option<f64>, Option<f64>, Res<Fig>) {
    match m {
        Ok(m) => (Some(m.rate()), m.pct(50), m.pct(99), Ok(Fig::Rate(m))),
        Err(e) => (None, None, None, Err(e)),
    }
}

fn disable_builtins() -> Vec<String> {
    DISABLE_BUILTINS.iter().map(|s| s.to_string()).collect()
}

fn plugin_args(plugin: &Path) -> Vec<String> {
    let mut a = disable_builtins();
    a.push(format!("--plugin={}", plugin.display()));
    a
}

/// `FULGUR_BENCH_ONLY=3,4` runs only those measurements (1 also gives the no-hook
/// baseline the hook measurements compare with).
fn want(tag: &str) -> bool {
    match std::env::var("FULGUR_BENCH_ONLY") {
        Ok(only) => only.split(',').any(|t| t.trim() == tag),
        Err(_) => true,
    }
}

fn run(env: &Env, report: &mut Report) -> Res<()> {
    let py = env.python_bin.as_deref();

    // Bare node: no plugins at all.
    let mut base_p50 = None;
    if want("1") {
        let node = Node::start(env, "bare", &disable_builtins(), None)?;
        report_idle_rss(report, &node, "6a. idle fulgurd RSS, no plugins");

        eprintln!("1. getinfo, one connection...");
        let (rate, p50, p99, fig) =
            rate_fig(sequential(&node.socket(), "getinfo", "{}", WARMUP, CALLS));
        base_p50 = p50.or(base_p50);
        let met = rate.zip(p99).map(|(r, p)| r >= 20_000.0 && p <= 1000.0);
        report.add(
            "1. getinfo, one connection, sequential",
            fig,
            ">= 20000/s, p99 <= 1ms",
            met,
        );

        eprintln!("2. getinfo, new connection per call...");
        let (rate, _, _, fig) = rate_fig(new_connection_each(&node.socket(), "getinfo", CALLS));
        report.add(
            "2. getinfo, new connection per call",
            fig,
            ">= 5000/s",
            rate.map(|r| r >= 5000.0),
        );

        eprintln!("   getinfo, {CLIENTS} parallel connections...");
        let (_, _, _, fig) = rate_fig(parallel(
            &node.socket(),
            "getinfo",
            CLIENTS,
            CALLS_PER_CLIENT,
        ));
        report.note(
            &format!("   getinfo, {CLIENTS} connections in parallel (total)"),
            fig,
            "",
        );

        let after = rss_kib(node.pid()).map(|k| Fig::MiB(k as f64 / 1024.0));
        report.note(
            "   fulgurd RSS after the calls above, no plugins",
            after,
            "",
        );
        node.stop();
    }

    // Default node: the built-in plugins.
    if want("6b") {
        let node = Node::start(env, "builtins", &[], None)?;
        report_idle_rss(
            report,
            &node,
            "6b. idle fulgurd RSS, built-in plugins loaded",
        );
        let kids = children(node.pid());
        let total: u64 = kids.iter().filter_map(|p| rss_kib(*p).ok()).sum();
        report.note(
            &format!(
                "    RSS of the {} built-in plugin processes (sum)",
                kids.len()
            ),
            Ok(Fig::MiB(total as f64 / 1024.0)),
            "",
        );
        node.stop();
    }

    // 3. SDK plugin method.
    if want("3") {
        eprintln!("3. hello via the SDK plugin...");
        let r = with_plugin(
            env,
            "sdk-hello",
            &env.example("hello"),
            None,
            "hello",
            |node| sequential(&node.socket(), "hello", HELLO_PARAMS, WARMUP, CALLS),
        );
        let (rate, _, _, fig) = rate_fig(r);
        report.add(
            "3. hello via SDK plugin, one connection",
            fig,
            ">= 8000/s",
            rate.map(|r| r >= 8000.0),
        );
    }

    // 3b. The same shape of method on CLN's own cln-plugin crate, for comparison.
    if want("3b") {
        let cln = env.root.join("target/release/cln-plugin-compat");
        if cln.exists() {
            eprintln!("3b. clnhello via the cln-plugin crate plugin...");
            let r = with_plugin(env, "cln-hello", &cln, None, "clnhello", |node| {
                sequential(&node.socket(), "clnhello", HELLO_PARAMS, WARMUP, CALLS)
            });
            let (_, _, _, fig) = rate_fig(r);
            report.note(
                "3b. clnhello via cln-plugin crate plugin, one connection",
                fig,
                "(none)",
            );
        }
    }

    // 4. pyln plugin method.
    if py.is_some() && want("4") {
        eprintln!("4. hello via the pyln-client plugin...");
        let plugin = env.py_plugin("bench_hello.py");
        let r = with_plugin(env, "py-hello", &plugin, py, "hello", |node| {
            sequential(&node.socket(), "hello", HELLO_PARAMS, WARMUP_PY, CALLS_PY)
        });
        report.note(
            "4. hello via pyln-client plugin, one connection",
            rate_fig(r).3,
            "(none)",
        );
    } else {
        report.skip_pyln("4. hello via pyln-client plugin");
    }

    // 5. rpc_command hook cost.
    let hook_row = |report: &mut Report, name: &str, m: Res<Measure>, target: Option<f64>| {
        let (_, p50, _, fig) = rate_fig(m);
        let added = p50.zip(base_p50).map(|(h, b)| h - b);
        let met = target.and_then(|t| added.map(|a| a <= t));
        report.note(name, fig, if target.is_some() { "" } else { "(none)" });
        let text = added
            .map(|a| format!("+{a:.1} µs at p50"))
            .ok_or_else(|| "no figure".to_string());
        let tgt = target
            .map(|t| format!("<= +{t:.0} µs at p50"))
            .unwrap_or_default();
        report.add(
            "     added by the hook vs no hook (p50)",
            text.map(Fig::Text),
            &tgt,
            met,
        );
    };
    if want("5a") {
        eprintln!("5. getinfo through the SDK hooks plugin...");
        let mut beside = Err("node did not start".to_string());
        let r = with_plugin(
            env,
            "sdk-hook",
            &env.example("hooks"),
            None,
            "hooksecho",
            |node| {
                let m = sequential(&node.socket(), "getinfo", "{}", WARMUP, CALLS);
                beside = getinfo_beside_held_call(&node.socket(), CALLS / 4);
                m
            },
        );
        hook_row(
            report,
            "5a. getinfo, SDK rpc_command hook (hooks example)",
            r,
            Some(100.0),
        );
        report.note(
            "    getinfo on a connection whose hooksheld call is held",
            rate_fig(beside).3,
            "not blocked",
        );
    }
    if py.is_some() && want("5b") {
        eprintln!("5. getinfo through a pyln-client rpc_command hook...");
        // fulgurd opens its socket only after every startup plugin answered init.
        let plugin = env.py_plugin("bench_hook.py");
        let r = with_plugin(env, "py-hook", &plugin, py, "getinfo", |node| {
            sequential(&node.socket(), "getinfo", "{}", WARMUP_PY, CALLS_PY)
        });
        hook_row(report, "5b. getinfo, pyln-client rpc_command hook", r, None);
    } else {
        report.skip_pyln("5b. pyln-client rpc_command hook");
    }
    Ok(())
}

fn main() -> ExitCode {
    // `cargo bench` passes `--bench`; a filter argument is not supported (the run is short).
    let env = match setup() {
        Ok(e) => e,
        Err(e) => {
            eprintln!("bench setup failed: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!(
        "fulgurd RPC benchmark: {} calls per in-process measurement, {} per pyln one, warm-up {}/{}",
        CALLS, CALLS_PY, WARMUP, WARMUP_PY
    );
    let mut report = Report { rows: Vec::new() };
    let result = run(&env, &mut report);
    report.print();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench aborted: {e}");
            ExitCode::FAILURE
        }
    }
}
