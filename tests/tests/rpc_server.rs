//! The RPC socket under bad input and load: invalid JSON, oversized requests, a client
//! that stalls or vanishes mid-call, many clients at once; and fulgur-cli against the
//! real daemon.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::Duration;

use fulgur_tests::{Node, RpcConn, arg, bin, example};
use serde_json::json;

/// How long to wait for what a test waits for (generous: the machine may be busy).
const WAIT: Duration = Duration::from_secs(30);

fn bare() -> Vec<String> {
    [
        "pay",
        "htlc-hold",
        "autopilot",
        "autoclean",
        "bookkeeper",
        "commando",
        "sql",
        "clnrest",
    ]
    .iter()
    .map(|p| arg("disable-plugin", p))
    .collect()
}

#[test]
fn socket_is_private_and_errors_carry_cln_codes() {
    let node = Node::start("codes", &bare());
    let mode = std::fs::metadata(node.socket())
        .map(|m| m.permissions().mode() & 0o777)
        .unwrap_or(0);
    assert_eq!(mode, 0o600);
    let mut c = RpcConn::connect(&node.socket());
    assert_eq!(
        c.call("nosuchmethod", json!({}))
            .err()
            .map(|e| e["code"].clone()),
        Some(json!(-32601))
    );
    assert_eq!(
        c.call("datastore", json!({}))
            .err()
            .map(|e| e["code"].clone()),
        Some(json!(-32602))
    );
    assert_eq!(
        c.call("getinfo", json!({"bogus": 1}))
            .err()
            .map(|e| e["code"].clone()),
        Some(json!(-32602))
    );
    c.send_raw(br#"{"jsonrpc":"2.0","id":9,"method":"getinfo"}"#)
        .unwrap_or_else(|e| panic!("{e}"));
    let r = c.read_reply().unwrap_or_default();
    assert_eq!(
        (r["id"].clone(), r["error"]["code"].clone()),
        (json!(9), json!(-32600)),
        "missing params: {r}"
    );
    c.send_raw(b"{not json}").unwrap_or_else(|e| panic!("{e}"));
    let r = c.read_reply().unwrap_or_default();
    assert_eq!(r["error"]["code"], json!(-32700));
    assert!(
        c.read_reply().is_none(),
        "the connection is closed after a parse error"
    );
    assert_eq!(node.ok("getinfo", json!([]))["network"], json!("regtest"));
}

#[test]
fn oversized_stalled_and_vanishing_clients_do_not_hurt_others() {
    let node = Node::start(
        "abuse",
        &[arg("plugin", example("hooks").display().to_string())],
    );
    // 17 MiB of string: refused, connection closed.
    let mut big = RpcConn::connect(&node.socket());
    let mut payload = br#"{"jsonrpc":"2.0","id":1,"method":"echo","params":{"x":""#.to_vec();
    payload.extend(std::iter::repeat_n(b'a', 17 * 1024 * 1024));
    let _ = big.send_raw(&payload);
    let r = big.read_reply();
    assert_eq!(r.map(|r| r["error"]["code"].clone()), Some(json!(-32600)));
    // Half a message, then silence: others are served meanwhile.
    let mut stall = RpcConn::connect(&node.socket());
    stall
        .send_raw(br#"{"jsonrpc":"2.0","id":1,"meth"#)
        .unwrap_or_else(|e| panic!("{e}"));
    // A client that disconnects while its call is held by a plugin; the plugin then answers.
    let mut gone = RpcConn::connect(&node.socket());
    gone.send_raw(br#"{"jsonrpc":"2.0","id":"x","method":"hooksheld","params":{}}"#)
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        node.wait_log("holding a hooksheld call until hooksrelease", WAIT),
        "the plugin never held the call; log:\n{}",
        node.log()
    );
    drop(gone);
    assert_eq!(node.ok("hooksrelease", json!({})), json!({"released": 1}));
    // Many clients at once.
    let sock = node.socket();
    let threads: Vec<_> = (0..16)
        .map(|_| {
            let s = sock.clone();
            std::thread::spawn(move || {
                let mut c = RpcConn::connect(&s);
                (0..50).all(|_| c.call("getinfo", json!({})).is_ok())
            })
        })
        .collect();
    for t in threads {
        assert!(t.join().unwrap_or(false));
    }
    drop(stall);
    assert_eq!(node.ok("getinfo", json!({}))["num_peers"], json!(0));
}

#[test]
fn fulgur_cli_talks_to_the_daemon() {
    let node = Node::start("cli", &bare());
    let cli = |args: &[&str]| {
        Command::new(bin("fulgur-cli"))
            .arg(format!("--lightning-dir={}", node.dir.display()))
            .arg("--regtest")
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("fulgur-cli: {e}"))
    };
    let help = cli(&["help"]);
    assert!(help.status.success());
    let text = String::from_utf8_lossy(&help.stdout);
    assert!(
        text.contains("getinfo") && text.contains("datastore key"),
        "{text}"
    );
    let put = cli(&["-k", "datastore", "key=[\"cli\",\"k\"]", "string=v"]);
    assert!(
        put.status.success(),
        "{}",
        String::from_utf8_lossy(&put.stderr)
    );
    assert_eq!(
        node.ok("listdatastore", json!({"key": ["cli", "k"]}))["datastore"][0]["string"],
        json!("v")
    );
    let bad = cli(&["nosuchmethod"]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stdout).contains("-32601"));
    let stopped = cli(&["stop"]);
    assert!(stopped.status.success());
    assert!(String::from_utf8_lossy(&stopped.stdout).contains("Shutdown complete"));
    let none = cli(&["help"]);
    assert_eq!(none.status.code(), Some(2), "no daemon: exit 2");
    assert!(String::from_utf8_lossy(&none.stderr).contains("Is fulgurd running"));
}
