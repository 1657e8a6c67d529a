//! The processes of a devnet: one devchain and fulgurd nodes on loopback, their RPC clients,
//! and the steps that make a network of them (funding wallets, opening channels, waiting
//! for gossip). Everything it starts is stopped when the [`Devnet`] is dropped.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use serde_json::{Value, json};

/// How long one network step (a deposit, a channel, gossip) may take.
pub const STEP: Duration = Duration::from_secs(120);

/// Set by Ctrl-C or SIGTERM: every wait gives up, so that the devnet is torn down.
pub static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Polls `f` every 100 ms until it gives `Some`, or fails after `timeout` saying `what`
/// (or at once when interrupted).
pub fn wait_for<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> Result<T> {
    let end = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Ok(v);
        }
        if INTERRUPTED.load(Ordering::Relaxed) {
            bail!("interrupted while waiting for {what}");
        }
        if Instant::now() > end {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A binary next to this one (cargo's `target/<profile>`, or an install's `bin`).
pub fn sibling(name: &str) -> Result<PathBuf> {
    let exe = std::env::current_exe().context("locating fulgur-devnet")?;
    let path = exe
        .parent()
        .ok_or_else(|| anyhow!("fulgur-devnet has no directory"))?
        .join(name);
    if !path.is_file() {
        bail!(
            "{} not found: build the workspace first (cargo build --workspace --bins)",
            path.display()
        );
    }
    Ok(path)
}

fn kill(child: &mut Option<Child>) {
    if let Some(mut c) = child.take() {
        let _ = c.kill();
        let _ = c.wait();
    }
}

/// A regtest address nobody can spend (P2WSH of 32 zero bytes), to mine blocks to.
pub const BURN_ADDRESS: &str = "bcrt1qqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqq3xueyj";

/// The devchain process and a client for its bitcoind-style JSON-RPC.
pub struct Chain {
    /// Its datadir (holds `.cookie` and `rpcport`).
    pub datadir: PathBuf,
    /// Its RPC port on 127.0.0.1.
    pub port: u16,
    child: Option<Child>,
}

impl Chain {
    /// Starts devchain in `datadir` on a free port and waits until it answers.
    pub fn start(datadir: &Path) -> Result<Chain> {
        std::fs::create_dir_all(datadir)?;
        let _ = std::fs::remove_file(datadir.join("rpcport"));
        let child = Command::new(sibling("devchain")?)
            .arg(format!("--datadir={}", datadir.display()))
            .arg("--rpcport=0")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting devchain")?;
        let mut chain = Chain {
            datadir: datadir.to_path_buf(),
            port: 0,
            child: Some(child),
        };
        chain.port = wait_for(Duration::from_secs(60), "devchain's rpcport", || {
            std::fs::read_to_string(datadir.join("rpcport"))
                .ok()
                .and_then(|s| s.trim().parse().ok())
        })?;
        wait_for(Duration::from_secs(30), "devchain to answer", || {
            chain.call("getblockcount", json!([])).ok()
        })?;
        Ok(chain)
    }

    /// One JSON-RPC call (HTTP/1.1 with the cookie as basic auth).
    pub fn call(&self, method: &str, params: Value) -> Result<Value> {
        let cookie = std::fs::read_to_string(self.datadir.join(".cookie"))
            .context("reading devchain's cookie")?;
        let body = json!({"jsonrpc": "1.0", "id": "devnet", "method": method, "params": params})
            .to_string();
        let mut s = std::net::TcpStream::connect(("127.0.0.1", self.port))?;
        s.set_read_timeout(Some(Duration::from_secs(120)))?;
        write!(
            s,
            "POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Basic {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            base64(cookie.trim().as_bytes()),
            body.len()
        )?;
        let mut resp = String::new();
        s.read_to_string(&mut resp)?;
        let (_, body) = resp
            .split_once("\r\n\r\n")
            .ok_or_else(|| anyhow!("devchain sent no HTTP body"))?;
        let v: Value = serde_json::from_str(body).context("devchain's answer")?;
        match v.get("error") {
            Some(e) if !e.is_null() => bail!("devchain {method}: {e}"),
            _ => Ok(v.get("result").cloned().unwrap_or(Value::Null)),
        }
    }

    /// The block count.
    pub fn height(&self) -> Result<u64> {
        self.call("getblockcount", json!([]))?
            .as_u64()
            .ok_or_else(|| anyhow!("getblockcount is not a number"))
    }

    /// Mines `n` blocks to an address nobody can spend.
    pub fn mine(&self, n: u64) -> Result<()> {
        self.call("generatetoaddress", json!([n, BURN_ADDRESS]))?;
        Ok(())
    }
}

impl Drop for Chain {
    fn drop(&mut self) {
        kill(&mut self.child);
    }
}

/// A JSON-RPC error from a node, kept whole so that callers can check its code.
#[derive(Debug)]
pub struct NodeError {
    /// The method called.
    pub method: String,
    /// The error object.
    pub error: Value,
}

impl std::fmt::Display for NodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} failed: {}", self.method, self.error)
    }
}

impl std::error::Error for NodeError {}

/// A fulgurd process on regtest.
pub struct Node {
    /// Its name in the devnet (`alice`, `node3`, ...).
    pub name: String,
    /// Its `--lightning-dir`.
    pub dir: PathBuf,
    /// Its peer port on 127.0.0.1.
    pub port: u16,
    /// Its node id.
    pub id: String,
    child: Option<Child>,
}

impl Node {
    /// Starts fulgurd in `dir` against `chain` with `extra` options; waits for its engine.
    pub fn start(name: &str, dir: &Path, chain: &Chain, extra: &[String]) -> Result<Node> {
        std::fs::create_dir_all(dir)?;
        let port = free_port()?;
        let log = dir.join("log");
        let mut cmd = Command::new(sibling("fulgurd")?);
        cmd.arg(format!("--lightning-dir={}", dir.display()))
            .arg("--network=regtest")
            .arg(format!("--log-file={}", log.display()))
            .arg(format!("--alias={name}"))
            .arg(format!("--bind-addr=127.0.0.1:{port}"))
            .arg(format!("--bitcoin-rpcport={}", chain.port))
            .arg(format!("--bitcoin-datadir={}", chain.datadir.display()))
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                std::fs::File::create(dir.join("stderr")).context("creating stderr file")?,
            ));
        let mut node = Node {
            name: name.to_string(),
            dir: dir.to_path_buf(),
            port,
            id: String::new(),
            child: Some(cmd.spawn().context("starting fulgurd")?),
        };
        let started = wait_for(Duration::from_secs(60), "fulgurd's engine", || {
            if let Some(Ok(Some(status))) = node.child.as_mut().map(Child::try_wait) {
                return Some(Err(anyhow!(
                    "{name}'s fulgurd exited ({status}); see {}",
                    log.display()
                )));
            }
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            text.contains("Lightning engine started").then_some(Ok(()))
        });
        started??;
        node.id = node.call("getinfo", json!({}))?["id"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        Ok(node)
    }

    /// The RPC socket.
    pub fn socket(&self) -> PathBuf {
        self.dir.join("regtest").join("lightning-rpc")
    }

    /// One call on a fresh connection; a JSON-RPC error is a [`NodeError`].
    pub fn call(&self, method: &str, params: Value) -> Result<Value> {
        call_socket(&self.socket(), &self.name, method, params)
    }

    /// The command line that reaches this node.
    pub fn cli(&self) -> String {
        let cli = sibling("fulgur-cli")
            .map(|p| p.display().to_string())
            .unwrap_or_else(|_| "fulgur-cli".into());
        format!("{cli} --lightning-dir={} --regtest", self.dir.display())
    }

    /// Whether the process still runs.
    pub fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Waits up to `grace` for the process to exit after `stop`, then kills it.
    fn reap(&mut self, grace: Duration) {
        let end = Instant::now() + grace;
        while self.running() && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(50));
        }
        kill(&mut self.child);
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        kill(&mut self.child);
    }
}

/// One JSON-RPC call to the node whose socket is `socket` (named `name` in errors); a
/// JSON-RPC error is a [`NodeError`].
pub fn call_socket(socket: &Path, name: &str, method: &str, params: Value) -> Result<Value> {
    let mut s =
        UnixStream::connect(socket).with_context(|| format!("connecting to {name}'s RPC"))?;
    let req = json!({"jsonrpc": "2.0", "id": format!("devnet:{method}"), "method": method, "params": params});
    s.write_all(req.to_string().as_bytes())?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 65536];
    loop {
        if let Some(pos) = buf.windows(2).position(|w| w == b"\n\n") {
            let reply: Value = serde_json::from_slice(&buf[..pos])?;
            if let Some(r) = reply.get("result") {
                return Ok(r.clone());
            }
            return Err(NodeError {
                method: method.to_string(),
                error: reply.get("error").cloned().unwrap_or(Value::Null),
            }
            .into());
        }
        let n = s.read(&mut chunk)?;
        if n == 0 {
            bail!("{name} closed the connection during {method}");
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

pub fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

/// Standard base64 with padding, for HTTP basic auth.
fn base64(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in data.chunks(3) {
        let b = [c[0], *c.get(1).unwrap_or(&0), *c.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= c.len() {
                out.push(A[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// A chain and nodes on it.
pub struct Devnet {
    /// Where everything lives.
    pub dir: PathBuf,
    /// The nodes, in the order they were started. Dropped (killed) before the chain.
    pub nodes: Vec<Node>,
    /// The chain.
    pub chain: Chain,
    keep_dir: bool,
}

impl Devnet {
    /// Starts devchain in `dir/chain`.
    pub fn start(dir: &Path, keep_dir: bool) -> Result<Devnet> {
        std::fs::create_dir_all(dir)?;
        Ok(Devnet {
            dir: dir.to_path_buf(),
            nodes: vec![],
            chain: Chain::start(&dir.join("chain"))?,
            keep_dir,
        })
    }

    /// Starts a node named `name` with `extra` options; returns its index.
    pub fn add_node(&mut self, name: &str, extra: &[String]) -> Result<usize> {
        let node = Node::start(name, &self.dir.join(name), &self.chain, extra)?;
        self.nodes.push(node);
        Ok(self.nodes.len() - 1)
    }

    /// Waits until every node has processed the chain's tip.
    pub fn sync(&self) -> Result<()> {
        let tip = self.chain.height()?;
        for n in &self.nodes {
            wait_for(STEP, &format!("{} to reach block {tip}", n.name), || {
                let h = n.call("getinfo", json!({})).ok()?["blockheight"].as_u64()?;
                (h >= tip).then_some(())
            })?;
        }
        Ok(())
    }

    /// Mines `n` blocks and waits for every node.
    pub fn mine(&self, n: u64) -> Result<()> {
        self.chain.mine(n)?;
        self.sync()
    }

    /// Sends `btc` from devchain's faucet to node `i`'s wallet, confirmed.
    pub fn fund(&self, i: usize, btc: f64) -> Result<()> {
        let n = &self.nodes[i];
        let addr = n.call("newaddr", json!({"addresstype": "bech32"}))?["bech32"]
            .as_str()
            .map(String::from)
            .ok_or_else(|| anyhow!("newaddr gave no address"))?;
        self.chain.call("sendtoaddress", json!([addr, btc]))?;
        self.mine(1)?;
        let want = (btc * 1e11).round() as u64;
        wait_for(STEP, &format!("{}'s deposit", n.name), || {
            let funds = n.call("listfunds", json!({})).ok()?;
            let have: u64 = funds["outputs"]
                .as_array()?
                .iter()
                .filter(|o| o["status"] == "confirmed")
                .filter_map(|o| o["amount_msat"].as_u64())
                .sum();
            (have >= want).then_some(())
        })
    }

    /// Connects node `a` to node `b`.
    pub fn connect(&self, a: usize, b: usize) -> Result<()> {
        let (a, b) = (&self.nodes[a], &self.nodes[b]);
        a.call(
            "connect",
            json!({"id": b.id, "host": "127.0.0.1", "port": b.port}),
        )?;
        Ok(())
    }

    /// Funds a channel of `sat` from `a` to `b` pushing `push_msat` to `b`, without
    /// confirming it; returns the funding txid.
    pub fn fund_channel(&self, a: usize, b: usize, sat: u64, push_msat: u64) -> Result<String> {
        self.connect(a, b)?;
        let r = self.nodes[a].call(
            "fundchannel",
            json!({"id": self.nodes[b].id, "amount": sat, "push_msat": push_msat}),
        )?;
        r["txid"]
            .as_str()
            .map(String::from)
            .ok_or_else(|| anyhow!("fundchannel gave no txid: {r}"))
    }

    /// Confirms the channels funded by `txids` (6 blocks, so they are announced) and waits
    /// until both ends of each are CHANNELD_NORMAL; returns their short channel ids.
    pub fn confirm_channels(
        &self,
        pairs: &[(usize, usize)],
        txids: &[String],
    ) -> Result<Vec<String>> {
        wait_for(STEP, "the funding transactions in the mempool", || {
            let pool = self.chain.call("getrawmempool", json!([])).ok()?;
            let pool = pool.as_array()?;
            txids
                .iter()
                .all(|t| pool.iter().any(|p| p == t))
                .then_some(())
        })?;
        self.mine(6)?;
        let mut scids = vec![];
        for &(a, b) in pairs {
            let (na, nb) = (&self.nodes[a], &self.nodes[b]);
            let scid = wait_for(
                STEP,
                &format!("the {}–{} channel to be normal", na.name, nb.name),
                || {
                    let state = |n: &Node, peer: &str| -> Option<String> {
                        let r = n.call("listpeerchannels", json!({"id": peer})).ok()?;
                        let c = r["channels"]
                            .as_array()?
                            .iter()
                            .find(|c| c["state"] == "CHANNELD_NORMAL")?
                            .clone();
                        c["short_channel_id"].as_str().map(String::from)
                    };
                    state(nb, &na.id)?;
                    state(na, &nb.id)
                },
            )?;
            scids.push(scid);
        }
        Ok(scids)
    }

    /// Waits until every node knows every channel in `scids` in both directions. A node
    /// that missed an update (gossip is best effort) catches up at its next gossip sync,
    /// which a reconnection starts, or when the channel's ends rebroadcast (every six
    /// blocks): after two reconnections, six blocks are mined.
    pub fn wait_gossip(&self, scids: &[String]) -> Result<()> {
        for (i, n) in self.nodes.iter().enumerate() {
            for scid in scids {
                let known = || {
                    let r = n
                        .call("listchannels", json!({"short_channel_id": scid}))
                        .ok()?;
                    (r["channels"].as_array()?.len() == 2).then_some(())
                };
                let mut done = false;
                for attempt in 0..6 {
                    if wait_for(Duration::from_secs(15), "gossip", known).is_ok() {
                        done = true;
                        break;
                    }
                    if attempt == 2 || attempt == 4 {
                        self.mine(6)?;
                        continue;
                    }
                    let peers = n.call("listpeers", json!({}))?;
                    for p in peers["peers"].as_array().into_iter().flatten() {
                        let Some(j) = self.nodes.iter().position(|x| p["id"] == x.id) else {
                            continue;
                        };
                        let _ = n.call("disconnect", json!({"id": p["id"], "force": true}));
                        self.connect(i, j)?;
                    }
                }
                if !done {
                    bail!("{scid} never reached {}'s gossip", n.name);
                }
            }
        }
        Ok(())
    }
}

impl Drop for Devnet {
    fn drop(&mut self) {
        for n in &self.nodes {
            let _ = n.call("stop", json!([]));
        }
        for n in &mut self.nodes {
            n.reap(Duration::from_secs(30));
        }
        self.nodes.clear();
        kill(&mut self.chain.child);
        if !self.keep_dir {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
