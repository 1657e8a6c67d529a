//! Lightning networks for end-to-end tests: nodes on one chain, funded wallets, channels
//! opened with `fundchannel` and confirmed, and waiting for gossip and balances.

use std::time::Duration;

use serde_json::{Value, json};

use crate::{Bitcoind, Node, arg, free_port, wait_for};

/// How long a network step may take before a test gives up.
pub const T: Duration = Duration::from_secs(90);

/// A fulgurd with the Lightning engine running and a peer port.
pub struct LnNode {
    /// The process.
    pub node: Node,
    /// Its peer port on 127.0.0.1.
    pub port: u16,
    /// Its node id.
    pub id: String,
    /// The arguments it was started with (for restarts).
    pub args: Vec<String>,
}

impl std::ops::Deref for LnNode {
    type Target = Node;
    fn deref(&self) -> &Node {
        &self.node
    }
}

impl std::ops::DerefMut for LnNode {
    fn deref_mut(&mut self) -> &mut Node {
        &mut self.node
    }
}

impl LnNode {
    /// Starts a node on `b` with `extra` options and waits for its engine.
    pub fn start(tag: &str, b: &Bitcoind, extra: &[String]) -> LnNode {
        let port = free_port();
        let mut args = b.fulgurd_args();
        args.push(arg("bind-addr", format!("127.0.0.1:{port}")));
        args.extend_from_slice(extra);
        let node = Node::start(tag, &args);
        wait_engine(&node);
        let id = node.ok("getinfo", json!({}))["id"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        LnNode {
            node,
            port,
            id,
            args,
        }
    }

    /// Stops and starts it again with the same options; waits for the engine.
    pub fn restart(&mut self) {
        let args = self.args.clone();
        self.node.restart(&args);
        wait_engine(&self.node);
    }

    /// Connects to `other`.
    pub fn connect(&self, other: &LnNode) {
        self.ok(
            "connect",
            json!({"id": other.id, "host": "127.0.0.1", "port": other.port}),
        );
    }

    /// Our channels (`listpeerchannels`).
    pub fn channels(&self) -> Vec<Value> {
        self.ok("listpeerchannels", json!({}))["channels"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// The channel with `peer`, if any.
    pub fn channel_with(&self, peer: &str) -> Option<Value> {
        self.channels().into_iter().find(|c| c["peer_id"] == peer)
    }
}

/// Waits until `n` logs that its Lightning engine started.
pub fn wait_engine(n: &Node) {
    assert!(
        n.wait_log("Lightning engine started", T),
        "the Lightning engine never started; log:\n{}",
        n.log()
    );
}

/// Waits until `n` has processed the chain up to `height`.
pub fn sync(n: &Node, height: u64) {
    wait_for(T, || {
        (n.ok("getinfo", json!({}))["blockheight"].as_u64() >= Some(height)).then_some(())
    })
    .unwrap_or_else(|| panic!("node never reached height {height}"));
}

/// Mines `blocks` and waits until every node in `nodes` has them.
pub fn mine_sync(b: &Bitcoind, blocks: u64, nodes: &[&LnNode]) {
    let h = b.height() + blocks;
    b.mine(blocks);
    for n in nodes {
        sync(n, h);
    }
}

/// Sends `btc` to a fresh wallet address of `n`, mines it and waits for the wallet to see it.
pub fn fund_wallet(b: &Bitcoind, n: &LnNode, btc: f64) {
    let addr = n.ok("newaddr", json!({"addresstype": "bech32"}))["bech32"]
        .as_str()
        .map(String::from)
        .unwrap_or_else(|| panic!("no address"));
    b.ok("sendtoaddress", json!([addr, btc]));
    mine_sync(b, 1, &[n]);
    let want = (btc * 1e11).round() as u64;
    wait_for(T, || {
        let funds = n.ok("listfunds", json!({}));
        let have: u64 = funds["outputs"]
            .as_array()?
            .iter()
            .filter(|o| o["status"] == "confirmed")
            .filter_map(|o| o["amount_msat"].as_u64())
            .sum();
        (have >= want).then_some(())
    })
    .unwrap_or_else(|| panic!("wallet never saw the deposit"));
}

/// Opens a channel of `sat` from `a` to `b` (connecting first), confirms it with 6 blocks
/// (so it is announced too) and waits until both sides are CHANNELD_NORMAL. Returns the
/// short channel id. `others` also wait for the blocks.
pub fn open_channel(
    chain: &Bitcoind,
    a: &LnNode,
    b: &LnNode,
    sat: u64,
    others: &[&LnNode],
) -> String {
    open_channel_push(chain, a, b, sat, 0, others)
}

/// [`open_channel`] with `push_msat` given to `b`; waits for this channel (by its id), so a
/// second channel between the same nodes is waited for too.
pub fn open_channel_push(
    chain: &Bitcoind,
    a: &LnNode,
    b: &LnNode,
    sat: u64,
    push_msat: u64,
    others: &[&LnNode],
) -> String {
    a.connect(b);
    let r = a.ok(
        "fundchannel",
        json!({"id": b.id, "amount": sat, "push_msat": push_msat}),
    );
    assert!(r["txid"].is_string(), "fundchannel: {r}");
    wait_for(T, || {
        let pool = chain.ok("getrawmempool", json!([]));
        pool.as_array()?
            .iter()
            .any(|t| t == &r["txid"])
            .then_some(())
    })
    .unwrap_or_else(|| panic!("funding transaction never reached the mempool"));
    let mut all = vec![a, b];
    all.extend_from_slice(others);
    mine_sync(chain, 6, &all);
    let this = |n: &LnNode, peer: &str| -> Option<Value> {
        n.ok("listpeerchannels", json!({"id": peer}))["channels"]
            .as_array()?
            .iter()
            .find(|c| c["channel_id"] == r["channel_id"])
            .cloned()
    };
    wait_for(T, || {
        let ca = this(a, &b.id)?;
        let cb = this(b, &a.id)?;
        (ca["state"] == "CHANNELD_NORMAL" && cb["state"] == "CHANNELD_NORMAL")
            .then(|| ca["short_channel_id"].as_str().map(String::from))
            .flatten()
    })
    .unwrap_or_else(|| {
        panic!(
            "channel never became normal: {:?} / {:?}\nlog A:\n{}",
            this(a, &b.id),
            this(b, &a.id),
            a.log()
        )
    })
}

/// Waits until `n`'s `listchannels` knows `scid` in both directions.
pub fn wait_gossip(n: &LnNode, scid: &str) {
    wait_for(T, || {
        let r = n.ok("listchannels", json!({"short_channel_id": scid}));
        (r["channels"].as_array()?.len() == 2).then_some(())
    })
    .unwrap_or_else(|| panic!("{scid} never reached the gossip of {}", n.id));
}
