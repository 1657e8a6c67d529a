//! Plugins written with our SDK and with CLN's own `cln-plugin` crate, run by a real
//! fulgurd: options, methods, RPC calls back to the node, custom notifications between
//! plugins, `rpc_command` hooks (block, rewrite, hold), dynamic options.

use std::time::Duration;

use fulgur_tests::{Node, RpcConn, arg, bin, example, wait_for};
use serde_json::{Value, json};

/// How long to wait for what a test waits for (generous: the machine may be busy).
const WAIT: Duration = Duration::from_secs(30);

fn path(p: std::path::PathBuf) -> String {
    p.display().to_string()
}

#[test]
fn sdk_hello_gets_typed_options_and_calls_the_node_back() {
    let node = Node::start(
        "hello",
        &[
            arg("plugin", path(example("hello"))),
            arg("greeting", "Hey"),
            arg("hello-name", "ann"),
            arg("hello-name", "bob"),
            arg("hello-repeat", 2),
        ],
    );
    let r = node.ok("hello", json!({"name": "zed"}));
    let msg = r["message"].as_str().unwrap_or_default();
    assert!(
        msg.contains("Hey") && msg.contains("zed") && msg.contains("ann") && msg.contains("bob"),
        "{msg}"
    );
    let positional = node.ok("hello", json!(["yan"]));
    assert!(
        positional["message"]
            .as_str()
            .unwrap_or_default()
            .contains("yan")
    );

    let cfg = node.ok("listconfigs", json!({}))["configs"].clone();
    assert_eq!(cfg["hello-name"]["values_str"], json!(["ann", "bob"]));
    assert_eq!(cfg["hello-repeat"]["value_int"], json!(2));
    assert_eq!(cfg["hello-loud"]["value_bool"], json!(false));
    assert_eq!(cfg["greeting"]["source"], json!("cmdline"));
    assert!(
        cfg["greeting"]["plugin"]
            .as_str()
            .unwrap_or_default()
            .ends_with("/hello")
    );

    let info = node.ok("getinfo", json!({}));
    let back = node.ok("hellonode", json!({}));
    assert_eq!(
        back["node_id"], info["id"],
        "the plugin's getinfo over RPC must see this node"
    );

    // Dynamic option: the plugin refuses an empty greeting, accepts another.
    let refused = node.call("setconfig", json!({"config": "greeting", "val": ""}));
    assert!(
        refused.is_err(),
        "an empty greeting must be refused: {refused:?}"
    );
    let set = node.ok("setconfig", json!(["greeting", "Hi"]));
    assert_eq!(set["config"]["value_str"], json!("Hi"));
    assert_eq!(set["config"]["dynamic"], json!(true));
    assert!(
        node.ok("hello", json!({}))["message"]
            .as_str()
            .unwrap_or_default()
            .contains("Hi")
    );
    let persisted =
        std::fs::read_to_string(node.dir.join("regtest/config.setconfig")).unwrap_or_default();
    assert!(persisted.lines().any(|l| l == "greeting=Hi"), "{persisted}");
    assert!(node.stop().success());
}

#[test]
fn custom_notifications_reach_other_plugins_with_origin() {
    let node = Node::start(
        "notify",
        &[
            arg("plugin", path(example("hello"))),
            arg("plugin", path(example("listener"))),
        ],
    );
    node.ok("hello", json!({"name": "n"}));
    let stats = wait_for(Duration::from_secs(10), || {
        let s = node.ok("listenerstats", json!({}));
        (s["last_custom"]["origin"] == json!("hello")).then_some(s)
    })
    .unwrap_or_else(|| {
        panic!(
            "listener never saw hello_said: {}",
            node.ok("listenerstats", json!({}))
        )
    });
    assert_eq!(stats["last_custom"]["topic"], json!("hello_said"));
    assert!(
        stats["last_custom"]["payload"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains('n')
    );
    assert!(
        stats["wildcard"]["hello_said"].as_u64().unwrap_or(0) >= 1,
        "* subscription sees custom topics too: {stats}"
    );
}

#[test]
fn rpc_command_hook_blocks_rewrites_and_holds() {
    let node = Node::start(
        "hooks",
        &[
            arg("plugin", path(example("hooks"))),
            arg("hooks-block", "listdatastore"),
            arg("hooks-rewrite", "hooksecho"),
        ],
    );
    let blocked = node.call("listdatastore", json!({})).expect_err("blocked");
    assert_eq!(blocked["code"], json!(-32600));
    assert!(
        blocked["message"]
            .as_str()
            .unwrap_or_default()
            .contains("blocked")
    );
    let echoed = node.ok("hooksecho", json!({"a": 1}));
    assert_eq!(echoed["rewritten"], json!(true), "{echoed}");
    assert_eq!(node.ok("getinfo", json!({}))["network"], json!("regtest"));

    // A held call does not block other calls, even on the same connection.
    let sock = node.socket();
    let held = std::thread::spawn(move || RpcConn::connect(&sock).call("hooksheld", json!({})));
    assert!(
        node.wait_log("holding a hooksheld call until hooksrelease", WAIT),
        "the plugin never held the call; log:\n{}",
        node.log()
    );
    let mut conn = RpcConn::connect(&node.socket());
    for _ in 0..20 {
        assert!(conn.call("getinfo", json!([])).is_ok());
    }
    assert_eq!(node.ok("hooksrelease", json!({})), json!({"released": 1}));
    let r = held
        .join()
        .unwrap_or_else(|_| panic!("held thread panicked"));
    assert_eq!(r.map(|v| v["held"].clone()), Ok(json!(true)));
}

#[test]
fn cln_plugin_crate_plugin_runs_unmodified() {
    let node = Node::start(
        "clnplugin",
        &[
            arg("plugin", path(bin("cln-plugin-compat"))),
            arg("clngreeting", "Howdy"),
        ],
    );
    let r = node.ok("clnhello", json!({"name": "ann"}));
    assert!(
        r["message"]
            .as_str()
            .unwrap_or_default()
            .starts_with("Howdy"),
        "{r}"
    );
    assert_eq!(
        node.ok("clnhello", json!(["bo"]))["message"]
            .as_str()
            .map(|m| m.contains("bo")),
        Some(true)
    );
    assert_eq!(
        node.ok("clnblocked", json!({})),
        json!({"blocked_by": "cln-plugin-compat"})
    );
    let help = node.ok("help", json!({}));
    let cmds: Vec<&str> = help["help"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["command"].as_str())
        .collect();
    assert!(cmds.iter().any(|c| c.starts_with("clnhello")), "{cmds:?}");
    let plugins = node.ok("plugin", json!(["list"]));
    let me = plugins["plugins"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| {
            p["name"]
                .as_str()
                .is_some_and(|n| n.ends_with("cln-plugin-compat"))
        });
    assert_eq!(me.map(|p| p["active"].clone()), Some(Value::Bool(true)));
    // Dynamic stop and start of the cln-plugin plugin.
    let stopped = node.ok(
        "plugin",
        json!({"subcommand": "stop", "plugin": "cln-plugin-compat"}),
    );
    assert_eq!(
        stopped["result"],
        json!("Successfully stopped cln-plugin-compat.")
    );
    assert_eq!(
        node.call("clnhello", json!({}))
            .err()
            .map(|e| e["code"].clone()),
        Some(json!(-32601))
    );
    node.ok("plugin", json!({"subcommand": "start", "plugin": path(bin("cln-plugin-compat")), "clngreeting": "Again"}));
    assert!(
        node.ok("clnhello", json!({}))["message"]
            .as_str()
            .unwrap_or_default()
            .starts_with("Again")
    );
    assert!(node.stop().success());
}
