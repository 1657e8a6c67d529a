//! Lightning peers end to end: two fulgurd nodes on one devchain connect (BOLT 8 + init through
//! LDK), see each other in `listpeers` and `getinfo`, disconnect, run the `peer_connected` hook
//! and its notifications, and keep their identity and channel manager across a restart.
//! Build first: `cargo build -j2 --workspace --bins --examples`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use fulgur_tests::ln::{LnNode, wait_engine};
use fulgur_tests::{Bitcoind, Node, arg, cln_schema_errors, free_port, temp_dir, wait_for};
use serde_json::{Value, json};

const T: Duration = Duration::from_secs(60);

fn gate_plugin() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("plugins/peer_gate.py")
}

/// Nodes A and B on `b`, listening on fresh ports; B runs peer_gate.py (with the `gate`
/// options added), recording to a new file. Returns A, B and that file.
fn a_and_gated_b(tag: &str, b: &Bitcoind, gate: &[String]) -> (LnNode, LnNode, PathBuf) {
    let events = temp_dir(&format!("{tag}-events")).join("b.jsonl");
    let a = LnNode::start(&format!("{tag}-a"), b, &[]);
    let mut args = vec![
        arg("plugin", gate_plugin().display()),
        arg("peer-gate-file", events.display()),
    ];
    args.extend_from_slice(gate);
    let bn = LnNode::start(&format!("{tag}-b"), b, &args);
    (a, bn, events)
}

fn id(n: &Node) -> String {
    n.ok("getinfo", json!({}))["id"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

fn peers(n: &Node) -> Vec<Value> {
    n.ok("listpeers", json!({}))["peers"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn connected_to(n: &Node, other: &str) -> bool {
    peers(n)
        .iter()
        .any(|p| p["id"] == json!(other) && p["connected"] == json!(true))
}

/// Waits until neither `a` nor `b` is connected to the other.
fn wait_apart(a: &LnNode, b: &LnNode) {
    assert!(
        wait_for(T, || (!connected_to(a, &b.id) && !connected_to(b, &a.id))
            .then_some(()))
        .is_some(),
        "{} and {} still connected",
        a.id,
        b.id
    );
}

fn records(file: &Path) -> Vec<Value> {
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

#[test]
fn two_nodes_connect_list_and_disconnect() {
    let b = Bitcoind::start("peers-basic");
    let (a, bn, events) = a_and_gated_b("peers-basic", &b, &[]);
    let (ida, idb, port_b) = (a.id.clone(), bn.id.clone(), bn.port);
    assert_ne!(ida, idb);

    let info_b = bn.ok("getinfo", json!({}));
    assert_eq!(
        info_b["binding"],
        json!([{"type": "ipv4", "address": "127.0.0.1", "port": port_b}])
    );
    assert!(
        info_b["our_features"]["init"]
            .as_str()
            .is_some_and(|s| !s.is_empty()),
        "{info_b}"
    );

    let r = a.ok(
        "connect",
        json!({"id": format!("{idb}@127.0.0.1:{port_b}")}),
    );
    assert_eq!(r["id"], json!(idb));
    assert_eq!(r["direction"], json!("out"));
    assert_eq!(
        r["address"],
        json!({"type": "ipv4", "address": "127.0.0.1", "port": port_b})
    );
    assert!(r["features"].as_str().is_some_and(|f| !f.is_empty()));

    assert!(wait_for(T, || connected_to(&bn, &ida).then_some(())).is_some());
    assert!(connected_to(&a, &idb));
    for (name, result) in [
        ("connect.json", r.clone()),
        ("listpeers.json", a.ok("listpeers", json!({}))),
        ("getinfo.json", a.ok("getinfo", json!({}))),
        ("getinfo.json", bn.ok("getinfo", json!({}))),
    ] {
        assert_eq!(cln_schema_errors(name, &result), None, "{name}: {result}");
    }
    assert_eq!(a.ok("getinfo", json!({}))["num_peers"], json!(1));
    assert_eq!(bn.ok("getinfo", json!({}))["num_peers"], json!(1));
    let only = a.ok("listpeers", json!({"id": idb}));
    assert_eq!(only["peers"].as_array().map(Vec::len), Some(1));
    assert_eq!(only["peers"][0]["num_channels"], json!(0));

    // B saw the hook (inbound) and the connect notification.
    let seen = wait_for(T, || {
        let r = records(&events);
        (r.iter().any(|e| e["kind"] == "peer_connected")
            && r.iter().any(|e| e["kind"] == "connect"))
        .then_some(r)
    })
    .unwrap_or_else(|| panic!("no hook/notification on B: {:?}", records(&events)));
    let hook = seen
        .iter()
        .find(|e| e["kind"] == "peer_connected")
        .map(|e| e["params"]["peer"].clone())
        .unwrap_or_default();
    assert_eq!(hook["id"], json!(ida));
    assert_eq!(hook["direction"], json!("in"));
    let note = seen
        .iter()
        .find(|e| e["kind"] == "connect")
        .map(|e| e["params"].clone())
        .unwrap_or_default();
    let note = if note.get("connect").is_some() {
        note["connect"].clone()
    } else {
        note
    };
    assert_eq!(note["id"], json!(ida));
    assert_eq!(note["direction"], json!("in"));

    // Errors with CLN's codes.
    let e = a
        .call("connect", json!({"id": "nonsense"}))
        .err()
        .unwrap_or_default();
    assert_eq!(e["code"], json!(-32602), "{e}");
    let e = a
        .call("connect", json!({"id": idb}))
        .err()
        .unwrap_or_default();
    assert_eq!(e["code"], json!(400), "{e}");
    let dead = free_port();
    // Already connected: like CLN, the existing connection is the answer (no new dial, so
    // the dead port does not matter).
    let again = a.ok(
        "connect",
        json!({"id": idb, "host": "127.0.0.1", "port": dead}),
    );
    assert_eq!(again["id"], json!(idb));
    assert_eq!(again["direction"], json!("out"));
    // A node we are not connected to, on a port nobody listens on: 401.
    let stranger = "02eec7245d6b7d2ccb30380bfbe2a3648cd7a942653f5aa340edcea1f283686619";
    let e = a
        .call(
            "connect",
            json!({"id": stranger, "host": "127.0.0.1", "port": dead}),
        )
        .err()
        .unwrap_or_default();
    assert_eq!(e["code"], json!(401), "{e}");

    assert_eq!(a.ok("disconnect", json!({"id": idb})), json!({}));
    wait_apart(&a, &bn);
    assert_eq!(a.ok("getinfo", json!({}))["num_peers"], json!(0));
    assert!(
        wait_for(T, || records(&events)
            .iter()
            .any(|e| e["kind"] == "disconnect")
            .then_some(()))
        .is_some(),
        "no disconnect notification on B"
    );
    let e = a
        .call("disconnect", json!({"id": idb}))
        .err()
        .unwrap_or_default();
    assert_eq!(e["code"], json!(-1), "{e}");
}

#[test]
fn peer_connected_hook_can_disconnect() {
    let b = Bitcoind::start("peers-gate");
    let (a, bn, _) = a_and_gated_b("peers-gate", &b, &[arg("peer-gate-refuse", "true")]);
    let (idb, port_b) = (bn.id.clone(), bn.port);
    // B's plugin decides after the handshake: the peer is dropped (asserted below). A's
    // `connect` races with that drop: it returns the peer if A saw init first, else 401.
    let r = a.call(
        "connect",
        json!({"id": format!("{idb}@127.0.0.1:{port_b}")}),
    );
    match &r {
        Ok(v) => assert_eq!(v["id"], json!(idb)),
        Err(e) => {
            assert_eq!(e["code"], json!(401), "{e}");
            assert!(
                e["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("disconnected")),
                "{e}"
            );
        }
    }
    assert!(
        bn.wait_log(
            "disconnected by plugin peer_gate.py (peer_connected): go away",
            T
        ),
        "B never dropped the peer; log:\n{}",
        bn.log()
    );
    wait_apart(&a, &bn);
    assert_eq!(bn.ok("getinfo", json!({}))["num_peers"], json!(0));
    // B sent the plugin's error_message as a BOLT 1 warning before closing.
    assert!(
        a.wait_log("Got warning message: go away", T),
        "A never got the warning; log:\n{}",
        a.log()
    );
}

#[test]
fn restart_keeps_the_id_and_the_channel_manager() {
    let b = Bitcoind::start("peers-restart");
    let port = free_port();
    let mut args = b.fulgurd_args();
    args.push(arg("bind-addr", format!("127.0.0.1:{port}")));
    let mut n = Node::start("peers-restart", &args);
    wait_engine(&n);
    assert!(n.log().contains("New channel manager at block"));
    let before = id(&n);
    n.restart(&args);
    assert!(
        n.wait_log("Channel manager read from the store", T),
        "log:\n{}",
        n.log()
    );
    assert_eq!(id(&n), before);
    // The engine runs again: it listens on the same socket (bound once the channel manager
    // is read, so it may come a moment after RPC answers).
    let bound = wait_for(T, || {
        let b = n.ok("getinfo", json!({}))["binding"][0]["port"].clone();
        (!b.is_null()).then_some(b)
    });
    assert_eq!(bound, Some(json!(port)), "log:\n{}", n.log());
}
