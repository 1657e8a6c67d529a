//! The chain backend end to end: fulgurd against devchain (or a real regtest bitcoind when
//! `FULGUR_TEST_BITCOIND=http://user:pass@host:port` is set; devchain-only steps such as
//! `setfeerate` are then skipped). Build first: `cargo build -j2 --workspace --bins --examples`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use fulgur_tests::{
    Bitcoind, Node, RpcConn, arg, bin, cln_schema_errors, example, free_port, temp_dir, wait_for,
};
use serde_json::json;

const T: Duration = Duration::from_secs(60);

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn proxy_plugin() -> PathBuf {
    repo().join("tests/plugins/bitcoin_backend_proxy.py")
}

/// A backend and a node on it (with the `listener` example), synced to its tip; and that
/// height.
fn synced_node(tag: &str) -> (Bitcoind, Node, u64) {
    let b = Bitcoind::start(tag);
    let mut args = b.fulgurd_args();
    args.push(arg("plugin", example("listener").display()));
    let n = Node::start(tag, &args);
    let h = b.height();
    wait_height(&n, h);
    (b, n, h)
}

fn blockheight(n: &Node) -> u64 {
    n.ok("getinfo", json!({}))["blockheight"]
        .as_u64()
        .unwrap_or(0)
}

fn wait_height(n: &Node, h: u64) {
    let got = wait_for(T, || {
        let info = n.ok("getinfo", json!({}));
        (info["blockheight"].as_u64() == Some(h) && info.get("warning_bitcoind_sync").is_none())
            .then_some(())
    });
    assert!(
        got.is_some(),
        "blockheight never reached {h} (now {}); log:\n{}",
        blockheight(n),
        n.log()
    );
}

fn listener_height(n: &Node) -> Option<u64> {
    n.ok("listenerstats", json!({}))["blockheight"].as_u64()
}

/// Waits until the `listener` example was told of the block at height `h`.
fn wait_listener_height(n: &Node, h: u64) {
    assert_eq!(
        wait_for(T, || listener_height(n).filter(|x| *x == h)),
        Some(h)
    );
}

/// The node logged that it connected `hash` at `height`.
fn assert_connected(n: &Node, height: u64, hash: &str) {
    assert!(
        n.log()
            .contains(&format!("Block {height} connected: {hash}")),
        "log:\n{}",
        n.log()
    );
}

/// Runs fulgurd in `dir` with `args` to its end: it must fail to start (exit code 1).
/// Returns its stderr.
fn fulgurd_fails(dir: &Path, args: &[String]) -> String {
    let out = Command::new(bin("fulgurd"))
        .arg(format!("--lightning-dir={}", dir.display()))
        .args(args)
        .arg(format!("--log-file={}", dir.join("log").display()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .unwrap_or_else(|e| panic!("cannot run fulgurd: {e}"));
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "stderr: {stderr}");
    stderr
}

#[test]
fn follows_the_chain_and_notifies_block_added() {
    let (b, n, h) = synced_node("chain-sync");
    // The tip after start is announced once.
    wait_listener_height(&n, h);
    let hashes = b.mine(3);
    assert_eq!(hashes.len(), 3);
    wait_height(&n, h + 3);
    wait_listener_height(&n, h + 3);
    assert_connected(&n, h + 3, &hashes[2]);
    assert_eq!(n.stop().code(), Some(0));
}

#[test]
fn feerates_follow_the_backend() {
    let (b, n, _) = synced_node("chain-fees");
    for style in ["perkw", "perkb"] {
        let f = n.ok("feerates", json!({"style": style}));
        assert!(f[style]["floor"].as_u64().unwrap_or(0) >= 253, "{f}");
        assert!(f["onchain_fee_estimates"]["opening_channel_satoshis"].is_u64());
        if let Some(e) = cln_schema_errors("feerates.json", &f) {
            panic!("feerates {style} breaks CLN's schema: {e}\n{f}");
        }
    }
    let bad = n.call("feerates", json!(["perfoo"]));
    assert_eq!(bad.err().map(|e| e["code"].clone()), Some(json!(-32602)));
    if Bitcoind::external() {
        return;
    }
    // A fresh devchain has no estimates: fallbacks and CLN's warning.
    let f = n.ok("feerates", json!(["perkw"]));
    assert_eq!(
        f["warning_missing_feerates"],
        "Some fee estimates unavailable"
    );
    assert_eq!(f["perkw"]["estimates"], json!([]));
    b.ok(
        "setfeerate",
        json!([{"2": 50, "6": 20, "12": 10, "100": 2}]),
    );
    let f = wait_for(T, || {
        let f = n.ok("feerates", json!(["perkw"]));
        f.get("warning_missing_feerates").is_none().then_some(f)
    })
    .unwrap_or_else(|| panic!("feerates never picked up setfeerate"));
    let est = f["perkw"]["estimates"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let rate = |blocks: u64| {
        est.iter()
            .find(|e| e["blockcount"] == blocks)
            .map(|e| e["feerate"].clone())
    };
    assert_eq!(rate(2), Some(json!(12500)), "{f}");
    assert_eq!(rate(100), Some(json!(500)), "{f}");
    assert_eq!(f["perkw"]["opening"], 2500, "{f}");
    assert_eq!(f["perkw"]["max_acceptable"], 125000, "{f}");
    let k = n.ok("feerates", json!(["perkb"]));
    assert_eq!(k["perkb"]["opening"], 10000, "{k}");
    if let Some(e) = cln_schema_errors("feerates.json", &f) {
        panic!("feerates breaks CLN's schema: {e}\n{f}");
    }
}

#[test]
fn waits_for_a_backend_that_starts_later() {
    if Bitcoind::external() {
        return;
    }
    let port = free_port();
    let dir = temp_dir("chain-late");
    let n = Node::start(
        "chain-late",
        &[
            arg("bitcoin-rpcport", port),
            arg("bitcoin-datadir", dir.display()),
        ],
    );
    // RPC works while the backend is missing, with CLN's warning.
    let info = n.ok("getinfo", json!({}));
    assert_eq!(
        info["warning_bitcoind_sync"], "Bitcoind is not up-to-date with network.",
        "{info}"
    );
    assert_eq!(info["blockheight"], 0);
    assert!(
        n.wait_log("Waiting for the Bitcoin backend", T),
        "{}",
        n.log()
    );
    // devchain appears (with a cookie fulgurd has never seen): fulgurd syncs.
    let b = Bitcoind::devchain(&dir, port);
    wait_height(&n, b.height());
    assert!(b.height() > 0);
}

#[test]
fn a_backend_on_another_network_is_refused() {
    let b = Bitcoind::start("chain-wrongnet");
    let mut args = b.fulgurd_args();
    args.push("--network=testnet".into());
    let dir = temp_dir("chain-wrongnet-node");
    let stderr = fulgurd_fails(&dir, &args);
    assert!(
        stderr.contains(
            "Wrong network! Our Bitcoin backend is running on 'regtest', but we expect 'test'."
        ),
        "stderr: {stderr}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn follows_a_reorg() {
    let (b, n, h) = synced_node("chain-reorg");
    let old = b.mine(2);
    wait_height(&n, h + 2);
    b.ok("invalidateblock", json!([old[0]]));
    assert_eq!(b.height(), h);
    let new = b.mine_branch(3);
    assert_ne!(new[0], old[0]);
    wait_height(&n, h + 3);
    assert!(n.wait_log("Reorganisation: blocks after", T), "{}", n.log());
    assert_connected(&n, h + 3, &new[2]);
    wait_listener_height(&n, h + 3);
}

#[test]
fn restarts_resume_from_the_stored_tip() {
    let b = Bitcoind::start("chain-restart");
    let dir = temp_dir("chain-restart-node");
    // Our own lightning-dir (the harness's holds only the log), so it survives a restart.
    let mut args = b.fulgurd_args();
    args.push(arg("lightning-dir", dir.display()));
    let sock = dir.join("regtest/lightning-rpc");
    let height_at = |sock: &Path| {
        RpcConn::connect(sock).call("getinfo", json!({})).ok()?["blockheight"].as_u64()
    };
    let h = b.height();
    {
        let mut n = Node::start("chain-restart", &args);
        assert_eq!(
            wait_for(T, || height_at(&sock).filter(|x| *x == h)),
            Some(h),
            "{}",
            n.log()
        );
        let _ = RpcConn::connect(&sock).call("stop", json!([]));
        assert!(n.wait_exit(T).is_some_and(|s| s.success()));
    }
    let hashes = b.mine(2);
    let n = Node::start("chain-restart", &args);
    assert_eq!(
        wait_for(T, || height_at(&sock).filter(|x| *x == h + 2)),
        Some(h + 2)
    );
    // Resumed from the stored tip: both blocks mined while down were connected.
    for (i, hash) in hashes.iter().enumerate() {
        let line = format!("Block {} connected: {hash}", h + 1 + i as u64);
        assert!(n.wait_log(&line, T), "no '{line}' in\n{}", n.log());
    }
    drop(n);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn backend_plugins_replace_bitcoind() {
    let b = Bitcoind::start("chain-plugin");
    let mut url = b.url.clone();
    let mut extra = vec![
        arg("plugin", proxy_plugin().display()),
        // Nothing listens here: blocks can only come through the plugin.
        arg("bitcoin-rpcport", free_port()),
    ];
    match &b.datadir {
        Some(d) => extra.push(arg("proxy-cookie", d.join(".cookie").display())),
        None => url = std::env::var("FULGUR_TEST_BITCOIND").unwrap_or(url),
    }
    extra.push(arg("proxy-url", url));
    extra.push(arg("plugin", example("listener").display()));
    let n = Node::start("chain-plugin", &extra);
    assert!(n.wait_log("Using backend plugins", T), "{}", n.log());
    let h = b.height();
    wait_height(&n, h);
    let hashes = b.mine(2);
    wait_height(&n, h + 2);
    assert_connected(&n, h + 2, &hashes[1]);
    wait_listener_height(&n, h + 2);
    if !Bitcoind::external() {
        b.ok("setfeerate", json!([{"2": 40, "6": 20, "12": 8, "100": 4}]));
        let f = wait_for(T, || {
            let f = n.ok("feerates", json!(["perkw"]));
            (f["perkw"]["opening"] == 2000).then_some(f)
        });
        assert!(f.is_some(), "{}", n.ok("feerates", json!(["perkw"])));
        // A reorg through the height-only interface.
        b.ok("invalidateblock", json!([hashes[0]]));
        let new = b.mine_branch(3);
        assert_ne!(new[0], hashes[0]);
        wait_height(&n, h + 3);
        assert!(n.wait_log("Reorganisation: blocks after", T), "{}", n.log());
        assert_connected(&n, h + 3, &new[2]);
    }
}

#[test]
fn some_backend_methods_without_the_others_are_refused() {
    let dir = temp_dir("chain-partial");
    let plugin = repo().join("tests/plugins/half_backend.py");
    let stderr = fulgurd_fails(
        &dir,
        &["--network=regtest".into(), arg("plugin", plugin.display())],
    );
    assert!(
        stderr.contains("Could not access the plugin for getrawblockbyheight, is a Bitcoin plugin (by default plugins/bcli) registered ?"),
        "stderr: {stderr}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
