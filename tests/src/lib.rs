//! Test harness for end-to-end tests: starts real `fulgurd` processes in temporary
//! directories, talks to them over their RPC socket, waits for log lines, and kills
//! everything it started when dropped (also when a test fails).
//!
//! BROKEN gate (as pyln-testing's `broken_log`): when a [`Node`] is dropped at the end of a
//! test that otherwise passed, the test fails if the node's log holds a `**BROKEN**` line
//! that contains none of the substrings declared with [`Node::allow_broken`]. BROKEN means a
//! fault an operator must look at; a test that provokes one on purpose declares it.
//!
//! Binaries are taken from the workspace's target directory (`CARGO_TARGET_DIR` or
//! `<workspace>/target`, profile `debug` unless `FULGUR_PROFILE` says otherwise); build
//! them first with `cargo build -j2 --workspace --bins --examples`.

pub mod ln;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// The directory holding built binaries.
pub fn target_dir() -> PathBuf {
    let base = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let profile = PROFILE
        .get()
        .cloned()
        .or_else(|| std::env::var("FULGUR_PROFILE").ok())
        .unwrap_or_else(|| "debug".into());
    base.join(profile)
}

static PROFILE: std::sync::OnceLock<String> = std::sync::OnceLock::new();
static LOG_LEVEL: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// Benchmarks: start release binaries with `--log-level=info` (instead of the debug build
/// logging at debug). Call before starting anything.
/// `FULGUR_BENCH_LOG_LEVEL` overrides the level (e.g. `debug`, to see where time goes), and
/// `FULGUR_KEEP_DIRS=1` keeps the nodes' directories (and their logs) afterwards.
pub fn use_release_quietly() {
    let _ = PROFILE.set("release".into());
    let level = std::env::var("FULGUR_BENCH_LOG_LEVEL").unwrap_or_else(|_| "info".into());
    let _ = LOG_LEVEL.set(level);
}

/// Benchmarks: `cargo build --release -j2 <args>` in the workspace, unless
/// `FULGUR_BENCH_SKIP_BUILD` is set (then the binaries already in `target/release` are used).
pub fn build_release(args: &[&str]) -> Result<(), String> {
    if std::env::var_os("FULGUR_BENCH_SKIP_BUILD").is_some() {
        return Ok(());
    }
    let status = Command::new(env!("CARGO"))
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join(".."))
        .args(["build", "--release", "-j2"])
        .args(args)
        .status()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if !status.success() {
        return Err(format!("cargo build --release failed: {status}"));
    }
    Ok(())
}

/// Whether to keep test directories (`FULGUR_KEEP_DIRS=1`).
fn keep_dirs() -> bool {
    std::env::var_os("FULGUR_KEEP_DIRS").is_some_and(|v| v == "1")
}

/// A workspace binary (`fulgurd`, `fulgur-cli`, `cln-plugin-compat`, ...).
pub fn bin(name: &str) -> PathBuf {
    let p = target_dir().join(name);
    assert!(
        p.exists(),
        "{} is missing: run `cargo build -j2 --workspace --bins --examples` first",
        p.display()
    );
    p
}

/// An SDK example binary (`hello`, `listener`, `hooks`).
pub fn example(name: &str) -> PathBuf {
    let p = target_dir().join("examples").join(name);
    assert!(
        p.exists(),
        "{} is missing: run `cargo build -j2 --workspace --bins --examples` first",
        p.display()
    );
    p
}

/// A fresh, empty directory under the system temp dir.
pub fn temp_dir(tag: &str) -> PathBuf {
    static N: AtomicU64 = AtomicU64::new(0);
    let d = std::env::temp_dir().join(format!(
        "fulgur-e2e-{tag}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap_or_else(|e| panic!("cannot create {}: {e}", d.display()));
    d
}

/// A running fulgurd.
pub struct Node {
    /// Its `--lightning-dir`.
    pub dir: PathBuf,
    child: Option<Child>,
    /// Substrings of the BROKEN lines this node may log.
    broken_ok: std::sync::Mutex<Vec<String>>,
}

impl Node {
    /// Starts fulgurd on regtest with `args` added, and waits until it is ready.
    pub fn start(tag: &str, args: &[String]) -> Node {
        Node::start_in(temp_dir(tag), args)
    }

    fn start_in(dir: PathBuf, args: &[String]) -> Node {
        let mut node = Node {
            dir,
            child: None,
            broken_ok: std::sync::Mutex::new(vec![]),
        };
        node.spawn(args);
        node
    }

    /// Stops it with `stop` and starts it again in the same directory with `args`.
    pub fn restart(&mut self, args: &[String]) {
        self.shutdown();
        self.spawn(args);
    }

    /// Stops it with `stop` and waits for the process to exit (it can be started again
    /// with [`Node::start_again`]).
    pub fn shutdown(&mut self) {
        let r = self.call("stop", json!([]));
        assert_eq!(r, Ok(json!({"result": "Shutdown complete"})));
        assert!(
            self.wait_exit(Duration::from_secs(40)).is_some(),
            "fulgurd did not exit after stop"
        );
    }

    /// Starts it again in the same directory after [`Node::shutdown`]; returns once its RPC
    /// socket answers.
    pub fn start_again(&mut self, args: &[String]) {
        self.spawn(args);
    }

    /// The process id, while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    fn spawn(&mut self, args: &[String]) {
        let dir = &self.dir;
        let before = self.log().matches("Server started with public key").count();
        let mut cmd = Command::new(bin("fulgurd"));
        cmd.arg(format!("--lightning-dir={}", dir.display()))
            .arg("--network=regtest")
            .arg(format!(
                "--log-level={}",
                LOG_LEVEL.get().map(String::as_str).unwrap_or("debug")
            ))
            .arg(format!("--log-file={}", dir.join("log").display()))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start fulgurd: {e}"));
        self.child = Some(child);
        let end = Instant::now() + Duration::from_secs(30);
        while self.log().matches("Server started with public key").count() <= before {
            if Instant::now() > end {
                let status = self
                    .child
                    .as_mut()
                    .and_then(|c| c.try_wait().ok().flatten());
                panic!(
                    "fulgurd did not start (status {status:?}); log:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The RPC socket path.
    pub fn socket(&self) -> PathBuf {
        self.dir.join("regtest/lightning-rpc")
    }

    /// The whole log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("log")).unwrap_or_default()
    }

    /// Waits until the log contains `needle`.
    pub fn wait_log(&self, needle: &str, timeout: Duration) -> bool {
        let end = Instant::now() + timeout;
        while Instant::now() < end {
            if self.log().contains(needle) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// Declares BROKEN lines containing `needle` expected: they do not fail the test.
    pub fn allow_broken(&self, needle: &str) -> &Self {
        self.broken_ok
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(needle.to_string());
        self
    }

    /// Declares the BROKEN lines of a force-close the test asks for with `dev-fail` or
    /// `close`'s `unilateraltimeout` (on the closer and on its peer: LDK logs every force-close at
    /// error).
    pub fn allow_asked_force_close(&self) -> &Self {
        self.allow_broken("Force-closing channel")
            .allow_broken("Forcibly closed by `close` command timeout")
    }

    /// BROKEN lines of the log that contain none of the declared substrings.
    pub fn unexpected_broken(&self) -> Vec<String> {
        let ok = self
            .broken_ok
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        broken_lines(&self.log())
            .into_iter()
            .filter(|l| !ok.iter().any(|n| l.contains(n.as_str())))
            .map(String::from)
            .collect()
    }

    /// One call on a new connection: `Ok(result)` or `Err(error object)`.
    pub fn call(&self, method: &str, params: Value) -> Result<Value, Value> {
        let mut conn = RpcConn::connect(&self.socket());
        conn.call(method, params)
    }

    /// A call to a node that may be dying or restarting (a crash test's): `None` when its
    /// socket refuses the connection or closes before the reply.
    pub fn try_call(&self, method: &str, params: Value) -> Option<Result<Value, Value>> {
        let mut conn = RpcConn::try_connect(&self.socket())?;
        conn.try_call(method, params)
    }

    /// A call that must succeed.
    pub fn ok(&self, method: &str, params: Value) -> Value {
        self.call(method, params)
            .unwrap_or_else(|e| panic!("{method} failed: {e}"))
    }

    /// Stops it with the `stop` command and returns its exit status.
    pub fn stop(mut self) -> ExitStatus {
        let r = self.call("stop", json!([]));
        assert_eq!(r, Ok(json!({"result": "Shutdown complete"})));
        self.wait_exit(Duration::from_secs(40))
            .unwrap_or_else(|| panic!("fulgurd did not exit after stop"))
    }

    /// Waits for the process to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let end = Instant::now() + timeout;
        let child = self.child.as_mut()?;
        while Instant::now() < end {
            if let Ok(Some(s)) = child.try_wait() {
                self.child = None;
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().ok().flatten().is_none())
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if std::thread::panicking() {
            return;
        }
        let broken = self.unexpected_broken();
        if !broken.is_empty() {
            panic!(
                "{} logged {} unexpected BROKEN line(s) (declare expected ones with \
                 Node::allow_broken); directory kept:\n  {}",
                self.dir.display(),
                broken.len(),
                broken.join("\n  ")
            );
        }
        if !keep_dirs() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// The BROKEN lines of a log (CLN's `**BROKEN**` level).
pub fn broken_lines(log: &str) -> Vec<&str> {
    log.lines()
        .filter(|l| l.split_whitespace().nth(1) == Some("**BROKEN**"))
        .collect()
}

/// A client connection that reads replies terminated by a blank line.
pub struct RpcConn {
    stream: UnixStream,
    buf: Vec<u8>,
    next_id: u64,
}

impl RpcConn {
    /// Connects to a socket.
    pub fn connect(path: &Path) -> RpcConn {
        let stream =
            UnixStream::connect(path).unwrap_or_else(|e| panic!("connect {}: {e}", path.display()));
        Self::over(stream)
    }

    /// Connects to a socket, if something listens there.
    pub fn try_connect(path: &Path) -> Option<RpcConn> {
        UnixStream::connect(path).ok().map(Self::over)
    }

    fn over(stream: UnixStream) -> RpcConn {
        stream.set_read_timeout(Some(Duration::from_secs(60))).ok();
        RpcConn {
            stream,
            buf: vec![],
            next_id: 0,
        }
    }

    /// Changes how long a reply may take (60 s by default).
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.stream.set_read_timeout(Some(timeout)).ok();
    }

    /// Sends raw bytes.
    pub fn send_raw(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes)
    }

    /// Reads one reply (up to and without `\n\n`); `None` if the connection closed.
    pub fn read_reply(&mut self) -> Option<Value> {
        loop {
            if let Some(pos) = self.buf.windows(2).position(|w| w == b"\n\n") {
                let msg: Vec<u8> = self.buf.drain(..pos + 2).collect();
                return Some(serde_json::from_slice(&msg[..pos]).unwrap_or_else(|e| {
                    panic!("bad reply {e}: {}", String::from_utf8_lossy(&msg))
                }));
            }
            let mut chunk = [0u8; 65536];
            match self.stream.read(&mut chunk) {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// A call: `Ok(result)` or `Err(error object)`.
    pub fn call(&mut self, method: &str, params: Value) -> Result<Value, Value> {
        self.try_call(method, params)
            .unwrap_or_else(|| panic!("connection closed during {method}"))
    }

    /// A call, or `None` if the connection closed before the reply (the node died).
    pub fn try_call(&mut self, method: &str, params: Value) -> Option<Result<Value, Value>> {
        self.next_id += 1;
        let id = format!("e2e:{method}#{}", self.next_id);
        let req = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        self.send_raw(req.to_string().as_bytes()).ok()?;
        let reply = self.read_reply()?;
        assert_eq!(reply["id"], json!(id), "reply id must echo the request id");
        Some(match reply.get("result") {
            Some(r) => Ok(r.clone()),
            None => Err(reply.get("error").cloned().unwrap_or(Value::Null)),
        })
    }
}

/// Polls `f` until it returns `Some` or `timeout` passes.
pub fn wait_for<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let end = Instant::now() + timeout;
    while Instant::now() < end {
        if let Some(v) = f() {
            return Some(v);
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    None
}

/// `--flag=value` as an owned string.
pub fn arg(flag: &str, value: impl std::fmt::Display) -> String {
    format!("--{flag}={value}")
}

/// A free TCP port on 127.0.0.1 (free when asked; fine for tests).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("no free port: {e}"))
}

/// The Bitcoin backend for chain tests: a devchain process, or a real bitcoind (regtest)
/// when `FULGUR_TEST_BITCOIND=http://user:pass@host:port` is set.
pub struct Bitcoind {
    /// `http://host:port`.
    pub url: String,
    /// The port.
    pub port: u16,
    /// devchain's datadir (holds `.cookie`); `None` for an external bitcoind.
    pub datadir: Option<PathBuf>,
    userpass: Option<(String, String)>,
    child: Option<Child>,
}

impl Bitcoind {
    /// Whether the tests run against an external bitcoind.
    pub fn external() -> bool {
        std::env::var_os("FULGUR_TEST_BITCOIND").is_some()
    }

    /// The external bitcoind if configured, else a fresh devchain.
    pub fn start(tag: &str) -> Bitcoind {
        match std::env::var("FULGUR_TEST_BITCOIND") {
            Ok(url) => Bitcoind::from_url(&url),
            Err(_) => Bitcoind::devchain(&temp_dir(tag), 0),
        }
    }

    fn from_url(url: &str) -> Bitcoind {
        let rest = url
            .strip_prefix("http://")
            .unwrap_or_else(|| panic!("FULGUR_TEST_BITCOIND must be http://user:pass@host:port"));
        let (creds, hostport) = rest
            .trim_end_matches('/')
            .rsplit_once('@')
            .unwrap_or_else(|| panic!("FULGUR_TEST_BITCOIND needs user:pass@"));
        let (user, pass) = creds.split_once(':').unwrap_or((creds, ""));
        let port: u16 = hostport
            .rsplit_once(':')
            .and_then(|(_, p)| p.parse().ok())
            .unwrap_or_else(|| panic!("FULGUR_TEST_BITCOIND needs a port"));
        Bitcoind {
            url: format!("http://{hostport}"),
            port,
            datadir: None,
            userpass: Some((user.into(), pass.into())),
            child: None,
        }
    }

    /// Starts devchain (`target/<profile>/devchain`) in `datadir` on `port` (0: any) and
    /// waits until it answers.
    pub fn devchain(datadir: &Path, port: u16) -> Bitcoind {
        let _ = std::fs::remove_file(datadir.join("rpcport"));
        let child = Command::new(bin("devchain"))
            .arg(format!("--datadir={}", datadir.display()))
            .arg(format!("--rpcport={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start devchain: {e}"));
        let port = wait_for(Duration::from_secs(60), || {
            std::fs::read_to_string(datadir.join("rpcport"))
                .ok()
                .and_then(|s| s.trim().parse::<u16>().ok())
        })
        .unwrap_or_else(|| panic!("devchain did not write its rpcport"));
        let b = Bitcoind {
            url: format!("http://127.0.0.1:{port}"),
            port,
            datadir: Some(datadir.to_path_buf()),
            userpass: None,
            child: Some(child),
        };
        wait_for(Duration::from_secs(30), || {
            b.call("getblockcount", json!([])).ok()
        })
        .unwrap_or_else(|| panic!("devchain does not answer"));
        b
    }

    /// devchain's process id (`None` for an external bitcoind).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// fulgurd's options to use this backend.
    pub fn fulgurd_args(&self) -> Vec<String> {
        let mut a = vec![arg("bitcoin-rpcport", self.port)];
        match (&self.userpass, &self.datadir) {
            (Some((u, p)), _) => {
                a.push(arg("bitcoin-rpcuser", u));
                a.push(arg("bitcoin-rpcpassword", p));
            }
            (None, Some(d)) => a.push(arg("bitcoin-datadir", d.display())),
            (None, None) => {}
        }
        a
    }

    fn auth(&self) -> String {
        let plain = match (&self.userpass, &self.datadir) {
            (Some((u, p)), _) => format!("{u}:{p}"),
            (None, Some(d)) => std::fs::read_to_string(d.join(".cookie"))
                .unwrap_or_default()
                .trim()
                .to_string(),
            (None, None) => String::new(),
        };
        base64(plain.as_bytes())
    }

    /// A JSON-RPC call: `Ok(result)` or `Err(error object or transport error)`.
    pub fn call(&self, method: &str, params: Value) -> Result<Value, Value> {
        let body =
            json!({"jsonrpc": "1.0", "id": "test", "method": method, "params": params}).to_string();
        let hostport = self.url.trim_start_matches("http://");
        let mut s = std::net::TcpStream::connect(hostport).map_err(|e| json!(e.to_string()))?;
        s.set_read_timeout(Some(Duration::from_secs(120))).ok();
        let req = format!(
            "POST / HTTP/1.1\r\nHost: {hostport}\r\nAuthorization: Basic {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.auth(),
            body.len()
        );
        s.write_all(req.as_bytes())
            .map_err(|e| json!(e.to_string()))?;
        let mut resp = vec![];
        s.read_to_end(&mut resp).map_err(|e| json!(e.to_string()))?;
        let text = String::from_utf8_lossy(&resp);
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        let body = if head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked")
        {
            dechunk(body)
        } else {
            body.to_string()
        };
        let v: Value =
            serde_json::from_str(&body).map_err(|e| json!(format!("bad answer ({e}): {head}")))?;
        match v.get("error") {
            Some(e) if !e.is_null() => Err(e.clone()),
            _ => Ok(v.get("result").cloned().unwrap_or(Value::Null)),
        }
    }

    /// A call that must succeed.
    pub fn ok(&self, method: &str, params: Value) -> Value {
        self.call(method, params)
            .unwrap_or_else(|e| panic!("{method} failed: {e}"))
    }

    /// The block count.
    pub fn height(&self) -> u64 {
        self.ok("getblockcount", json!([])).as_u64().unwrap_or(0)
    }

    /// Mines `n` blocks (to an unspendable regtest address); returns their hashes.
    pub fn mine(&self, n: u64) -> Vec<String> {
        // P2WSH of 32 zero bytes: valid on regtest, spendable by nobody.
        self.mine_to(
            n,
            "bcrt1qqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqq3xueyj",
        )
    }

    /// Mines `n` blocks to another unspendable address (P2WSH of 32 bytes 0x01), so that a
    /// branch mined after `invalidateblock` differs from the invalidated one.
    pub fn mine_branch(&self, n: u64) -> Vec<String> {
        self.mine_to(
            n,
            "bcrt1qqyqszqgpqyqszqgpqyqszqgpqyqszqgpqyqszqgpqyqszqgpqyqs559rjs",
        )
    }

    /// Mines `n` blocks to `addr`; returns their hashes.
    pub fn mine_to(&self, n: u64, addr: &str) -> Vec<String> {
        self.ok("generatetoaddress", json!([n, addr]))
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|h| h.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Stops a devchain we started (no-op for an external bitcoind).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Bitcoind {
    fn drop(&mut self) {
        self.kill();
        if let Some(d) = &self.datadir
            && !std::thread::panicking()
            && !keep_dirs()
        {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

fn dechunk(body: &str) -> String {
    let mut out = String::new();
    let mut rest = body;
    while let Some((size, after)) = rest.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || after.len() < n {
            break;
        }
        out.push_str(&after[..n]);
        rest = after[n..].trim_start_matches("\r\n");
    }
    out
}

/// Standard base64 with padding, for HTTP basic auth.
pub fn base64(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Checks `result` against CLN's schema file `name` (e.g. `feerates.json`) with the pyln
/// suite's validator (`tests/py/clnschema.py`). `None` means valid; `Some(problems)`
/// otherwise, including when the validator is missing (`tests/run-all` creates `.venv`
/// before `cargo test`): a check that cannot run does not pass.
pub fn cln_schema_errors(name: &str, result: &Value) -> Option<String> {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let py = repo.join(".venv/bin/python");
    if !py.exists() {
        return Some(format!(
            "no schema validator at {} (run tests/run-all once, or create .venv with \
             tests/requirements.txt)",
            py.display()
        ));
    }
    let child = Command::new(py)
        .arg("-c")
        .arg("import sys, json; sys.path.insert(0, sys.argv[1]); import clnschema; e = clnschema.errors(sys.argv[2], json.load(sys.stdin)); print(e or '')")
        .arg(repo.join("tests/py"))
        .arg(name)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => return Some(format!("cannot run the schema validator: {e}")),
    };
    let sent = child
        .stdin
        .take()
        .map(|mut i| i.write_all(result.to_string().as_bytes()));
    if !matches!(sent, Some(Ok(()))) {
        return Some("cannot send the value to the schema validator".into());
    }
    let out = match child.wait_with_output() {
        Ok(o) => o,
        Err(e) => return Some(format!("schema validator: {e}")),
    };
    if !out.status.success() {
        return Some(format!(
            "validator failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (!text.is_empty() && text != "[]").then_some(text)
}

/// For benchmarks: the `p` quantile (0..=1) of `sorted` durations (zero when empty).
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// For benchmarks: a process's CPU time so far (user + system, all its threads), in clock
/// ticks (`getconf CLK_TCK`, 100 on Linux), and its parent's pid; from `/proc/<pid>/stat`.
pub fn cpu_ticks(pid: u32) -> Option<(u64, u32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields start after the last ')'.
    let rest: Vec<&str> = stat
        .get(stat.rfind(')')? + 1..)?
        .split_whitespace()
        .collect();
    let ppid = rest.get(1)?.parse().ok()?;
    let utime: u64 = rest.get(11)?.parse().ok()?;
    let stime: u64 = rest.get(12)?.parse().ok()?;
    Some((utime + stime, ppid))
}

/// For benchmarks: (steal, total) ticks of all CPUs so far, from `/proc/stat`. Steal is
/// the time a virtual machine's host gave this machine's CPUs to someone else.
pub fn steal_ticks() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let cpu = stat.lines().next()?.strip_prefix("cpu ")?;
    // user nice system idle iowait irq softirq steal (guest time is inside user).
    let v: Vec<u64> = cpu
        .split_whitespace()
        .take(8)
        .map(|f| f.parse().ok())
        .collect::<Option<_>>()?;
    Some((*v.get(7)?, v.iter().sum()))
}

/// For benchmarks: the CPU ticks of the direct children of `pid` (a node's plugins).
pub fn children_cpu_ticks(pid: u32) -> u64 {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|child| match cpu_ticks(child) {
            Some((t, parent)) if parent == pid => Some(t),
            _ => None,
        })
        .sum()
}

/// For benchmarks: a process's resident memory (VmRSS) in KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::{Node, broken_lines, temp_dir};

    const LOG: &str = "2026-12-05T09:00:00.000Z INFO    lightningd: Server started\n\
2026-12-05T09:00:00.001Z **BROKEN** lightning: Force-closing channel\n\
2026-12-05T09:00:00.002Z UNUSUAL lightning: a BROKEN word in an unusual line\n\
2026-12-05T09:00:00.003Z **BROKEN** plugin-bad: hook answered garbage\n";

    #[test]
    fn broken_gate_reports_only_undeclared_broken_lines() {
        assert_eq!(broken_lines(LOG).len(), 2);
        let dir = temp_dir("broken-gate");
        std::fs::write(dir.join("log"), LOG).unwrap();
        let node = Node {
            dir,
            child: None,
            broken_ok: std::sync::Mutex::new(vec![]),
        };
        assert_eq!(node.unexpected_broken().len(), 2);
        node.allow_broken("hook answered garbage");
        let left = node.unexpected_broken();
        assert_eq!(left.len(), 1, "{left:?}");
        assert!(left[0].contains("Force-closing channel"));
        node.allow_broken("Force-closing");
        assert!(node.unexpected_broken().is_empty());
    }
}
