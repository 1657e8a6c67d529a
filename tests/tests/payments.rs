//! Payments, graph and message signing end to end, on nodes without channels: the RPCs answer
//! with CLN's shapes (checked against CLN's schemas when the venv exists) and CLN's error
//! codes. Payments over real channels are exercised where channels are opened.
//! Build first: `cargo build -j2 --workspace --bins --examples`.

use std::time::Duration;

use fulgur_tests::{Bitcoind, Node, arg, cln_schema_errors, free_port};
use serde_json::{Value, json};

const T: Duration = Duration::from_secs(60);
const STRANGER: &str = "02eec7245d6b7d2ccb30380bfbe2a3648cd7a942653f5aa340edcea1f283686619";

/// A node on `b` listening on a fresh port, with its engine running; returns it and the port.
fn start(tag: &str, b: &Bitcoind) -> (Node, u16) {
    let port = free_port();
    let mut args = b.fulgurd_args();
    args.push(arg("bind-addr", format!("127.0.0.1:{port}")));
    let n = Node::start(tag, &args);
    assert!(
        n.wait_log("Lightning engine started", T),
        "the Lightning engine never started; log:\n{}",
        n.log()
    );
    (n, port)
}

fn id(n: &Node) -> String {
    n.ok("getinfo", json!({}))["id"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

fn err(n: &Node, method: &str, params: Value) -> Value {
    n.call(method, params)
        .err()
        .unwrap_or_else(|| panic!("{method} should have failed"))
}

fn valid(name: &str, v: &Value) {
    assert_eq!(cln_schema_errors(name, v), None, "{name}: {v}");
}

#[test]
fn signmessage_and_checkmessage_speak_clns_format() {
    let b = Bitcoind::start("pay-sign");
    let (n, _) = start("pay-sign", &b);
    let me = id(&n);

    let s = n.ok("signmessage", json!({"message": "hello fulgur"}));
    valid("signmessage.json", &s);
    assert_eq!(s["signature"].as_str().map(str::len), Some(128));
    let zbase = s["zbase"].as_str().unwrap_or_default().to_string();
    // Positional params too, and the same message signs to the same (RFC 6979) signature.
    assert_eq!(n.ok("signmessage", json!(["hello fulgur"])), s);

    let c = n.ok(
        "checkmessage",
        json!({"message": "hello fulgur", "zbase": zbase, "pubkey": me}),
    );
    assert_eq!(c, json!({"pubkey": me, "verified": true}));
    valid("checkmessage.json", &c);
    // Another message: the recovered key is someone else's, so not verified.
    let c = n.ok(
        "checkmessage",
        json!({"message": "hello fulgur!", "zbase": zbase, "pubkey": me}),
    );
    assert_eq!(c["verified"], json!(false));
    assert_ne!(c["pubkey"], json!(me));
    // Without a pubkey only keys of the graph count: ours is not in it without channels.
    let e = err(
        &n,
        "checkmessage",
        json!({"message": "hello fulgur", "zbase": zbase}),
    );
    assert_eq!(e["code"], json!(1301), "{e}");
    assert_eq!(e["data"]["claimed_key"], json!(me));
    // A signature CLN made (its documentation's example) checks out here too.
    let cln = n.ok(
        "checkmessage",
        json!({
            "message": "message for you",
            "zbase": "rnu3qotbr47u7uzgodtq51fraszhp47xfen4yxbzhsisrekqwzshysu7sq4f74g5jobnh35fsh1a3ysoa7who6cqbti47qkxp6w1qwan",
            "pubkey": "033845802d25b4e074ccfd7cd8b339a41dc75bf9978a034800444b51d42b07799a",
        }),
    );
    assert_eq!(cln["verified"], json!(true));
    for bad in [
        json!({"message": "m", "zbase": "not zbase32!"}),
        json!({"message": "m", "zbase": "yyyy"}),
        json!({"message": "m", "zbase": zbase, "pubkey": "02abc"}),
        json!({"message": "m"}),
    ] {
        assert_eq!(
            err(&n, "checkmessage", bad.clone())["code"],
            json!(-32602),
            "{bad}"
        );
    }
    let e = err(&n, "signmessage", json!({"message": "x".repeat(65536)}));
    assert_eq!(e["code"], json!(-32602));
}

#[test]
fn graph_views_and_getroute_without_channels() {
    let b = Bitcoind::start("pay-graph");
    let (n, _) = start("pay-graph", &b);
    let me = id(&n);

    let ch = n.ok("listchannels", json!({}));
    assert_eq!(ch, json!({"channels": []}));
    valid("listchannels.json", &ch);
    for f in [
        json!({"short_channel_id": "103x1x0"}),
        json!({"source": me}),
        json!({"destination": STRANGER}),
    ] {
        assert_eq!(n.ok("listchannels", f), json!({"channels": []}));
    }
    let e = err(&n, "listchannels", json!({"source": me, "destination": me}));
    assert_eq!(e["code"], json!(-32602));
    let e = err(&n, "listchannels", json!({"short_channel_id": "103x1"}));
    assert_eq!(e["code"], json!(-32602));

    let nodes = n.ok("listnodes", json!({}));
    assert_eq!(nodes, json!({"nodes": []}));
    valid("listnodes.json", &nodes);
    assert_eq!(n.ok("listnodes", json!([me])), json!({"nodes": []}));
    assert_eq!(err(&n, "listnodes", json!(["xyz"]))["code"], json!(-32602));

    // No channel anywhere: CLN reports the source (us, with no channel) as unknown to the
    // graph, a parameter error; no route among known nodes is 205 (unit tests).
    let e = err(
        &n,
        "getroute",
        json!({"id": STRANGER, "amount_msat": 1000, "riskfactor": 1}),
    );
    assert_eq!(e["code"], json!(-32602), "{e}");
    assert_eq!(
        e["message"],
        json!(format!(
            "{me}: unknown source node_id (no public channels?)"
        ))
    );
    let e = err(
        &n,
        "getroute",
        json!({"id": STRANGER, "amount_msat": 1000, "riskfactor": 1, "exclude": ["1x1x1/2"]}),
    );
    assert_eq!(e["code"], json!(-32602));
    let e = err(&n, "getroute", json!([STRANGER, 1000]));
    assert_eq!(e["code"], json!(-32602), "riskfactor is required");
}

#[test]
fn sendpay_waitsendpay_listsendpays_without_channels() {
    let b = Bitcoind::start("pay-send");
    let (a, _) = start("pay-send-a", &b);
    let (bn, port_b) = start("pay-send-b", &b);
    let (ida, idb) = (id(&a), id(&bn));
    a.ok(
        "connect",
        json!({"id": format!("{idb}@127.0.0.1:{port_b}")}),
    );
    let hash = "11".repeat(32);

    let empty = a.ok("listsendpays", json!({}));
    assert_eq!(empty, json!({"payments": []}));
    valid("listsendpays.json", &empty);
    assert_eq!(
        a.ok("listsendpays", json!({"payment_hash": hash})),
        json!({"payments": []})
    );
    assert_eq!(
        a.ok(
            "listsendpays",
            json!({"index": "updated", "start": 5, "limit": 3})
        ),
        json!({"payments": []})
    );
    assert_eq!(
        err(&a, "listsendpays", json!({"start": 5}))["code"],
        json!(-32602)
    );

    let e = err(&a, "waitsendpay", json!({"payment_hash": hash}));
    assert_eq!(e["code"], json!(208), "{e}");
    assert_eq!(
        e["message"],
        json!(format!("Never attempted payment part 0 for '{hash}'"))
    );
    let e = err(
        &a,
        "waitsendpay",
        json!({"payment_hash": hash, "timeout": 0, "partid": 2, "groupid": 1}),
    );
    assert_eq!(e["code"], json!(208));

    // A route whose first hop is a connected peer without a channel, or a stranger: CLN's
    // immediate routing failure, and nothing recorded.
    for first in [idb.as_str(), STRANGER] {
        let route = json!([
            {"id": first, "channel": "103x1x0", "amount_msat": 1002, "delay": 15},
            {"id": STRANGER, "channel": "104x1x0", "amount_msat": 1000, "delay": 9},
        ]);
        let e = err(
            &a,
            "sendpay",
            json!({"route": route, "payment_hash": hash, "label": "x"}),
        );
        assert_eq!(e["code"], json!(204), "{e}");
        assert_eq!(e["message"], json!("No connection to first peer found"));
        assert_eq!(e["data"]["erring_index"], json!(0));
        assert_eq!(e["data"]["failcode"], json!(16394));
        assert_eq!(e["data"]["failcodename"], json!("WIRE_UNKNOWN_NEXT_PEER"));
        assert_eq!(e["data"]["erring_node"], json!(ida));
    }
    // The multi-part form fails the same way.
    let one = json!([{"id": idb, "channel": "103x1x0", "amount_msat": 500, "delay": 9}]);
    let e = err(
        &a,
        "sendpay",
        json!({"route": [one, one], "payment_hash": hash, "payment_secret": "22".repeat(32)}),
    );
    assert_eq!(e["code"], json!(204), "{e}");
    assert_eq!(a.ok("listsendpays", json!({})), json!({"payments": []}));

    // Parameter errors, before anything is sent.
    let route = json!([{"id": idb, "channel": "103x1x0", "amount_msat": 1000, "delay": 9}]);
    for (bad, why) in [
        (json!({"route": route, "payment_hash": "abc"}), "bad hash"),
        (
            json!({"route": route, "payment_hash": hash, "partid": 1}),
            "partid needs amount_msat",
        ),
        (
            json!({"route": route, "payment_hash": hash, "partid": 1, "amount_msat": 2000}),
            "partid needs payment_secret",
        ),
        (
            json!({"route": route, "payment_hash": hash, "amount_msat": 999}),
            "amount must equal the final amount without partid",
        ),
        (
            json!({"route": route, "payment_hash": hash, "partid": 1, "amount_msat": 500, "payment_secret": "22".repeat(32)}),
            "a part above the total",
        ),
        (
            json!({"route": [route, route], "payment_hash": hash, "partid": 1}),
            "partid with several routes",
        ),
        (
            json!({"route": [route, route], "payment_hash": hash}),
            "several routes need payment_secret",
        ),
        (json!({"route": [], "payment_hash": hash}), "self-payment"),
        (
            json!({"route": [{"id": idb, "channel": "103x1x0", "amount_msat": 10, "delay": 9},
                             {"id": STRANGER, "channel": "104x1x0", "amount_msat": 11, "delay": 8}],
                   "payment_hash": hash}),
            "amounts must not grow along the route",
        ),
        (
            json!({"route": {"id": idb}, "payment_hash": hash}),
            "route must be an array",
        ),
    ] {
        let e = err(&a, "sendpay", bad);
        assert_eq!(e["code"], json!(-32602), "{why}: {e}");
    }
    let e = err(
        &a,
        "sendpay",
        json!({"route": route, "payment_hash": hash, "localinvreqid": "33".repeat(32)}),
    );
    assert_eq!(e["code"], json!(212), "{e}");
    assert_eq!(a.ok("listsendpays", json!({})), json!({"payments": []}));

    // help knows the commands.
    let h = a.ok("help", json!({"command": "sendpay"}));
    assert!(h.to_string().contains("sendpay route payment_hash"), "{h}");
}
