//! WASM plugins run by a real fulgurd: loaded with `--plugin` and `plugin start` (a module
//! needs no execute bit), their methods called over the RPC socket, their own calls to
//! the node dispatched in-process and checked against the allow-list, an endless loop cut
//! off without harm to the node. The guest is the WAT module of tests/wasm/wat_guest.rs.

use std::path::{Path, PathBuf};
use std::time::Duration;

use fulgur_tests::{Node, arg, temp_dir};
use serde_json::json;

include!("../wasm/wat_guest.rs");

fn guest(dir: &Path, name: &str) -> PathBuf {
    let bytes = wat::parse_str(guest_wat(&guest_manifest()))
        .unwrap_or_else(|e| panic!("the WAT guest does not parse: {e}"));
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap_or_else(|e| panic!("{e}"));
    p
}

#[test]
fn wasm_plugin_serves_methods_calls_the_node_and_survives_a_loop() {
    let dir = temp_dir("wasm-guests");
    let g = guest(&dir, "g.wasm");
    let node = Node::start(
        "wasm",
        &[
            arg("plugin", g.display()),
            arg("bitcoin-rpcpassword", "hunter2"),
            arg("wasm-sandbox", "*:add-hooks=htlc_accepted"),
            arg("wasm-sandbox", "g.wasm:fuel=20000000"),
            arg("wasm-sandbox", "g.wasm:add-rpc=datastore"),
        ],
    );
    // The test runs the guest into an endless loop: its fuel runs out, on purpose.
    node.allow_broken("ran out of fuel");
    assert_eq!(node.ok("hello", json!({})), json!({"greeting": "hi"}));
    let listed = node.ok("plugin", json!({"subcommand": "list"}));
    assert!(
        listed["plugins"]
            .as_array()
            .is_some_and(|ps| ps.iter().any(|p| p["name"]
                .as_str()
                .is_some_and(|n| n.ends_with("g.wasm"))
                && p["active"] == true)),
        "{listed}"
    );

    // Its calls to the node: getinfo is allowed (answered in-process), withdraw is not.
    assert_eq!(node.ok("callrpc", json!({})), json!({}));
    assert!(node.wait_log("wasm guest: rpc denied", Duration::from_secs(20)));
    assert!(node.wait_log("wasm guest: getinfo answered", Duration::from_secs(20)));

    // Secrets: listconfigs without bitcoin-rpcpassword, listdatastore with its own keys only.
    node.ok(
        "datastore",
        json!({"key": ["other", "othersecret"], "string": "s3cret"}),
    );
    node.ok("datastore", json!({"key": ["g", "mine"], "string": "ok"}));
    assert_eq!(node.ok("leak", json!({})), json!({}));
    assert!(node.wait_log("wasm guest: listconfigs clean", Duration::from_secs(20)));
    assert!(node.wait_log("wasm guest: listdatastore clean", Duration::from_secs(20)));
    assert!(!node.log().contains("wasm guest: saw"));

    // An endless loop: the instance is cut off, the caller sees what a process plugin's
    // death shows, the node and then the plugin go on.
    let err = node
        .call("spin", json!({}))
        .expect_err("a looping method cannot succeed");
    assert!(err.to_string().contains("Plugin terminated"), "{err}");
    assert!(node.wait_log("ran out of fuel", Duration::from_secs(20)));
    assert!(node.ok("getinfo", json!({}))["id"].is_string());
    assert!(node.wait_log("WASM instance restarted", Duration::from_secs(20)));
    assert_eq!(node.ok("hello", json!({})), json!({"greeting": "hi"}));

    // Stopped, then started at run time from another file.
    node.ok("plugin", json!({"subcommand": "stop", "plugin": "g.wasm"}));
    assert!(node.call("hello", json!({})).is_err());
    let h = guest(&dir, "h.wasm");
    node.ok(
        "plugin",
        json!({"subcommand": "start", "plugin": h.display().to_string()}),
    );
    assert_eq!(node.ok("hello", json!({})), json!({"greeting": "hi"}));
    node.stop();
    let _ = std::fs::remove_dir_all(&dir);
}
