//! Drives the SDK through an in-memory pipe, the test playing the node: it writes requests
//! and notifications the way CLN does and checks every byte the plugin answers.

use std::sync::Arc;
use std::time::Duration;

use fulgur_plugin_sdk::fulgur_protocol::codec::{FrameDecoder, encode_frame};
use fulgur_plugin_sdk::fulgur_protocol::error::codes;
use fulgur_plugin_sdk::{
    Builder, Continue, Event, Hook, HookSpec, Level, OptionSpec, Plugin, RpcCommandAction,
    RpcError, RpcMethod, RunError, Transport,
};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream, ReadHalf, WriteHalf};
use tokio::sync::{Mutex, Notify, mpsc};
use tokio::task::JoinHandle;

const LIMIT: Duration = Duration::from_secs(20);

/// The node's end of the pipe.
struct Node {
    w: WriteHalf<DuplexStream>,
    r: ReadHalf<DuplexStream>,
    dec: FrameDecoder,
    /// Log notifications seen while waiting for something else.
    logs: Vec<Value>,
}

impl Node {
    fn new() -> (Node, Transport) {
        let (node_side, plugin_side) = tokio::io::duplex(1 << 16);
        let (r, w) = tokio::io::split(node_side);
        let (pr, pw) = tokio::io::split(plugin_side);
        let node = Node {
            w,
            r,
            dec: FrameDecoder::new(1 << 20),
            logs: Vec::new(),
        };
        (node, Transport::from_io(pr, pw))
    }

    async fn send(&mut self, v: Value) {
        self.send_raw(&encode_frame(&v)).await;
    }

    async fn send_raw(&mut self, bytes: &[u8]) {
        self.w.write_all(bytes).await.expect("plugin reads");
    }

    async fn request(&mut self, id: &str, method: &str, params: Value) {
        self.send(json!({"jsonrpc":"2.0","id":id,"method":method,"params":params}))
            .await;
    }

    /// The next message, `None` at end of output.
    async fn next(&mut self) -> Option<Value> {
        loop {
            if let Some(v) = self.dec.next_value() {
                return Some(v.expect("plugin writes valid JSON"));
            }
            let mut buf = [0u8; 4096];
            let n = tokio::time::timeout(LIMIT, self.r.read(&mut buf))
                .await
                .expect("plugin answers in time")
                .expect("pipe readable");
            if n == 0 {
                return None;
            }
            self.dec.extend(&buf[..n]);
        }
    }

    /// The next message that is not a `log` notification.
    async fn next_non_log(&mut self) -> Value {
        loop {
            let v = self.next().await.expect("plugin still writing");
            assert_eq!(v["jsonrpc"], "2.0", "every message carries jsonrpc: {v}");
            if v["method"] == "log" {
                self.logs.push(v);
                continue;
            }
            return v;
        }
    }

    async fn response(&mut self, id: &str) -> Value {
        let v = self.next_non_log().await;
        assert_eq!(v["id"], id, "expected the answer to {id}, got {v}");
        v
    }

    /// The `result` of the answer to `id`.
    async fn result(&mut self, id: &str) -> Value {
        self.response(id).await["result"].clone()
    }

    /// Asks for the manifest (no parameters) and reads the answer.
    async fn getmanifest(&mut self) -> Value {
        self.request("cln:getmanifest#1", "getmanifest", json!({}))
            .await;
        self.response("cln:getmanifest#1").await
    }

    async fn handshake(&mut self, options: Value) -> Value {
        self.request(
            "cln:getmanifest#1",
            "getmanifest",
            json!({"allow-deprecated-apis": false}),
        )
        .await;
        let manifest = self.response("cln:getmanifest#1").await["result"].clone();
        self.request(
            "cln:init#2",
            "init",
            init_params(options, "/nonexistent", "lightning-rpc"),
        )
        .await;
        let init = self.response("cln:init#2").await;
        assert_eq!(init["result"], json!({}), "init accepted: {init}");
        manifest
    }
}

fn init_params(options: Value, dir: &str, rpc_file: &str) -> Value {
    json!({
        "options": options,
        "configuration": {
            "lightning-dir": dir, "rpc-file": rpc_file, "startup": true,
            "network": "regtest", "feature_set": {"init": "", "node": "", "channel": "", "invoice": ""}
        }
    })
}

fn spawn<S: Send + Sync + 'static>(
    b: Builder<S>,
    t: Transport,
    state: S,
) -> JoinHandle<Result<bool, RunError>> {
    tokio::spawn(async move {
        match b.configure(t).await? {
            Some(c) => {
                c.start(state)?.join().await?;
                Ok(true)
            }
            None => Ok(false),
        }
    })
}

/// The node's end of a running [`full_builder`] plugin, and the plugin's task.
fn full_plugin() -> (Node, JoinHandle<Result<bool, RunError>>) {
    let (node, t) = Node::new();
    (node, spawn(full_builder(), t, ()))
}

/// Closes the node's end (EOF for the plugin) and waits for the plugin to exit cleanly.
async fn hang_up(node: Node, h: JoinHandle<Result<bool, RunError>>) {
    drop(node);
    finished(h).await.expect("clean exit");
}

async fn finished(h: JoinHandle<Result<bool, RunError>>) -> Result<bool, RunError> {
    tokio::time::timeout(LIMIT, h)
        .await
        .expect("plugin exits in time")
        .expect("task not panicked")
}

#[derive(Deserialize)]
struct EchoParams {
    word: String,
    times: Option<usize>,
}

async fn echo(_p: Plugin<()>, params: EchoParams) -> Result<Value, RpcError> {
    Ok(json!({"echo": vec![params.word; params.times.unwrap_or(1)].join(" ")}))
}

fn full_builder() -> Builder<()> {
    Builder::new()
        .name("tester")
        .option(
            OptionSpec::string("greeting", "what to say")
                .default("Hello")
                .dynamic(),
        )
        .option(OptionSpec::string_conceal("secret", "hidden"))
        .option(OptionSpec::int("repeat", "times").default(2))
        .option(OptionSpec::bool("loud", "shout").default(false))
        .option(OptionSpec::flag("quiet", "say nothing"))
        .option(OptionSpec::string("names", "who").multi())
        .rpcmethod(RpcMethod::typed("echo", "word [times]", echo).description("repeats"))
        .hook(
            HookSpec::new(Hook::RpcCommand, |_p, _v| async {
                Ok::<_, String>(Continue)
            })
            .before(["other.py"]),
        )
        .hook(HookSpec::new(Hook::PeerConnected, |_p, _v| async {
            Ok::<_, String>(Continue)
        }))
        .subscribe("connect", |_p, _e| async {})
        .subscribe("*", |_p, _e| async {})
        .notification("tester_event")
}

#[tokio::test]
async fn manifest_declares_everything_typed() {
    let (mut node, h) = full_plugin();
    let m = node.handshake(json!({})).await;
    let opts = m["options"].as_array().expect("options array");
    let by_name = |n: &str| {
        opts.iter()
            .find(|o| o["name"] == n)
            .cloned()
            .expect("declared")
    };
    assert_eq!(by_name("greeting")["type"], "string");
    assert_eq!(by_name("greeting")["default"], "Hello");
    assert_eq!(by_name("greeting")["dynamic"], true);
    assert_eq!(by_name("secret")["type"], "string-conceal");
    assert_eq!(by_name("repeat")["type"], "int");
    assert_eq!(by_name("repeat")["default"], 2);
    assert_eq!(by_name("loud")["type"], "bool");
    assert_eq!(by_name("quiet")["type"], "flag");
    assert_eq!(by_name("names")["multi"], true);
    assert_eq!(m["rpcmethods"][0]["name"], "echo");
    assert_eq!(m["rpcmethods"][0]["usage"], "word [times]");
    assert_eq!(m["rpcmethods"][0]["description"], "repeats");
    assert_eq!(
        m["hooks"][0],
        json!({"name": "rpc_command", "before": ["other.py"]})
    );
    assert_eq!(m["hooks"][1], json!("peer_connected"));
    assert_eq!(m["subscriptions"], json!(["connect", "*"]));
    assert_eq!(m["notifications"], json!([{"method": "tester_event"}]));
    assert_eq!(m["dynamic"], true);
    assert_eq!(m["nonnumericids"], true);
    assert_eq!(m["cancheck"], false);
    drop(node);
    assert!(finished(h).await.expect("clean exit"));
}

#[tokio::test]
async fn first_message_must_be_getmanifest() {
    let (mut node, h) = full_plugin();
    node.request("cln:init#1", "init", init_params(json!({}), "/x", "rpc"))
        .await;
    let r = node.response("cln:init#1").await;
    assert_eq!(r["error"]["code"], codes::INVALID_REQUEST);
    assert!(matches!(finished(h).await, Err(RunError::Handshake(_))));
}

#[tokio::test]
async fn unreadable_init_options_disable_the_plugin() {
    let (mut node, h) = full_plugin();
    node.getmanifest().await;
    node.request(
        "cln:init#2",
        "init",
        init_params(json!({"repeat": "many"}), "/x", "rpc"),
    )
    .await;
    let r = node.response("cln:init#2").await;
    let reason = r["result"]["disable"].as_str().expect("disable reason");
    assert!(reason.contains("repeat"), "{reason}");
    assert!(!finished(h).await.expect("quiet exit"));
}

#[tokio::test]
async fn eof_before_init_and_after_start_exit_cleanly() {
    let (mut node, h) = full_plugin();
    node.getmanifest().await;
    drop(node);
    assert!(
        !finished(h)
            .await
            .expect("no error when only the manifest was wanted")
    );

    let (mut node, h) = full_plugin();
    node.handshake(json!({})).await;
    let Node { mut w, mut r, .. } = node;
    w.shutdown().await.expect("close our side of the pipe");
    assert!(finished(h).await.expect("clean exit on EOF"));
    let mut rest = Vec::new();
    r.read_to_end(&mut rest).await.expect("output closes");
}

#[tokio::test]
async fn methods_bind_named_and_positional_params() {
    let (mut node, h) = full_plugin();
    node.handshake(json!({})).await;
    node.request("a", "echo", json!({"word": "hi", "times": 2}))
        .await;
    assert_eq!(node.result("a").await, json!({"echo": "hi hi"}));
    node.request("b", "echo", json!(["yo", 3])).await;
    assert_eq!(node.result("b").await, json!({"echo": "yo yo yo"}));
    node.request("c", "echo", json!(["yo", 3, 4])).await;
    assert_eq!(
        node.response("c").await["error"]["code"],
        codes::INVALID_PARAMS
    );
    node.request("d", "echo", json!({})).await;
    assert_eq!(
        node.response("d").await["error"]["code"],
        codes::INVALID_PARAMS
    );
    node.request("e", "nosuch", json!({})).await;
    let e = node.response("e").await;
    assert_eq!(e["error"]["code"], codes::METHOD_NOT_FOUND);
    hang_up(node, h).await;
}

#[tokio::test]
async fn handler_errors_keep_their_code_and_panics_become_errors() {
    let b = Builder::<()>::new()
        .method("fails", "", "always fails", |_p, _v| async {
            Err::<Value, _>(RpcError::new(1234, "nope").with_data(json!({"why": "test"})))
        })
        .method("panics", "", "always panics", |_p, v: Value| async move {
            if v.is_object() {
                panic!("handler bug");
            }
            Ok(json!({}))
        });
    let (mut node, t) = Node::new();
    let h = spawn(b, t, ());
    node.handshake(json!({})).await;
    node.request("x", "fails", json!([])).await;
    let r = node.response("x").await;
    assert_eq!(
        r["error"],
        json!({"code": 1234, "message": "nope", "data": {"why": "test"}})
    );
    node.request("y", "panics", json!({})).await;
    assert_eq!(
        node.response("y").await["error"]["code"],
        codes::INVALID_REQUEST
    );
    // The plugin survived the panic.
    node.request("z", "fails", json!({})).await;
    assert_eq!(node.response("z").await["error"]["code"], 1234);
    hang_up(node, h).await;
}

#[tokio::test]
async fn a_held_hook_answers_after_a_later_request() {
    let release = Arc::new(Notify::new());
    let b = Builder::<Arc<Notify>>::new()
        .hook(HookSpec::new(
            Hook::RpcCommand,
            |p: Plugin<Arc<Notify>>, payload: Value| async move {
                if payload["rpc_command"]["method"] == "held" {
                    p.state().notified().await;
                    return Ok::<_, String>(RpcCommandAction::ReturnResult(
                        json!({"released": true}),
                    ));
                }
                Ok(RpcCommandAction::Continue)
            },
        ))
        .method(
            "release",
            "",
            "lets the held call go",
            |p: Plugin<Arc<Notify>>, _v| async move {
                p.state().notify_one();
                Ok(json!({"ok": true}))
            },
        );
    let (mut node, t) = Node::new();
    let h = spawn(b, t, release);
    node.handshake(json!({})).await;
    node.request(
        "cln:rpc_command#1",
        "rpc_command",
        json!({"rpc_command": {"method": "held", "params": {}}}),
    )
    .await;
    node.request(
        "cln:rpc_command#2",
        "rpc_command",
        json!({"rpc_command": {"method": "getinfo"}}),
    )
    .await;
    assert_eq!(
        node.result("cln:rpc_command#2").await,
        json!({"result": "continue"})
    );
    node.request("cli:release#3", "release", json!({})).await;
    assert_eq!(node.result("cli:release#3").await, json!({"ok": true}));
    let held = node.response("cln:rpc_command#1").await;
    assert_eq!(
        held["result"],
        json!({"return": {"result": {"released": true}}})
    );
    hang_up(node, h).await;
}

#[tokio::test]
async fn failing_or_panicking_hooks_answer_the_safe_default() {
    let b = Builder::<()>::new()
        .hook(HookSpec::new(Hook::HtlcAccepted, |_p, _v: Value| async {
            Err::<Value, _>("db down")
        }))
        .hook(HookSpec::new(
            Hook::PeerConnected,
            |_p, v: Value| async move {
                if v.is_object() {
                    panic!("hook bug");
                }
                Ok::<_, String>(json!({"result": "disconnect"}))
            },
        ))
        .hook(HookSpec::typed(
            Hook::Custommsg,
            |_p, m: fulgur_plugin_sdk::fulgur_protocol::hooks::CustommsgPayload| async move {
                Ok::<_, String>(json!({"result": "continue", "seen": m.peer_id}))
            },
        ));
    let (mut node, t) = Node::new();
    let h = spawn(b, t, ());
    node.handshake(json!({})).await;
    node.request("h1", "htlc_accepted", json!({"htlc": {}, "onion": {}}))
        .await;
    assert_eq!(
        node.result("h1").await,
        json!({"result": "fail", "failure_message": "2002"})
    );
    assert!(
        node.logs.iter().any(|l| l["params"]["level"] == "broken"),
        "the failure is logged"
    );
    node.request("h2", "peer_connected", json!({"peer": {}}))
        .await;
    assert_eq!(node.result("h2").await, json!({"result": "continue"}));
    node.request(
        "h3",
        "custommsg",
        json!({"peer_id": "02ab", "payload": "fff1"}),
    )
    .await;
    assert_eq!(node.result("h3").await["seen"], "02ab");
    node.request("h4", "custommsg", json!({"wrong": true}))
        .await;
    assert_eq!(node.result("h4").await, json!({"result": "continue"}));
    hang_up(node, h).await;
}

type Seen = mpsc::UnboundedSender<(String, Event)>;

#[tokio::test]
async fn notifications_reach_specific_and_wildcard_subscribers() {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let b = Builder::<Seen>::new()
        .subscribe("connect", |p: Plugin<Seen>, e| async move {
            let _ = p.state().send(("connect".into(), e));
        })
        .subscribe("pong", |p: Plugin<Seen>, e| async move {
            let _ = p.state().send(("pong".into(), e));
        })
        .subscribe("*", |p: Plugin<Seen>, e| async move {
            let _ = p.state().send(("*".into(), e));
        });
    let (mut node, t) = Node::new();
    let h = spawn(b, t, tx);
    node.handshake(json!({})).await;
    let connect = json!({"id": "02aa", "direction": "in", "address": {"type": "ipv4"}});
    node.send(json!({"jsonrpc":"2.0","method":"connect","params":{"connect": connect}}))
        .await;
    node.send(json!({"jsonrpc":"2.0","method":"pong","origin":"other","params":{"n": 7, "pong": {"n": 7}}}))
        .await;
    node.send(
        json!({"jsonrpc":"2.0","method":"block_added","params":{"block_added": {"height": 5}}}),
    )
    .await;
    let mut got = Vec::new();
    for _ in 0..5 {
        got.push(
            tokio::time::timeout(LIMIT, rx.recv())
                .await
                .expect("in time")
                .expect("delivered"),
        );
    }
    assert_eq!(got[0].0, "connect");
    assert_eq!(got[0].1.payload, connect);
    assert_eq!(got[1].0, "*");
    assert_eq!(got[1].1.topic, "connect");
    assert_eq!(got[2].0, "pong");
    assert_eq!(got[2].1.payload, json!({"n": 7}));
    assert_eq!(got[2].1.origin.as_deref(), Some("other"));
    assert_eq!(got[3].0, "*");
    assert_eq!(
        (got[4].0.as_str(), got[4].1.topic.as_str()),
        ("*", "block_added")
    );
    assert_eq!(got[4].1.payload, json!({"height": 5}));
    hang_up(node, h).await;
}

#[tokio::test]
async fn shutdown_runs_the_handler_then_exits() {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let b = Builder::<Seen>::new().subscribe("shutdown", |p: Plugin<Seen>, e| async move {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let _ = p.state().send(("shutdown".into(), e));
    });
    let (mut node, t) = Node::new();
    let h = spawn(b, t, tx);
    node.handshake(json!({})).await;
    node.send(json!({"jsonrpc":"2.0","method":"shutdown","params":{"shutdown": {}}}))
        .await;
    // The plugin exits although its input is still open.
    assert!(finished(h).await.expect("clean exit"));
    let (topic, _) = rx.try_recv().expect("handler ran before the exit");
    assert_eq!(topic, "shutdown");
    assert_eq!(node.next().await, None, "output closed");
}

#[tokio::test]
async fn setconfig_is_accepted_or_rejected_by_the_callback() {
    let b = full_builder()
        .option(OptionSpec::int("limit", "a number").default(1).dynamic())
        .on_change("greeting", |_p, v: Value| async move {
            if v == "" {
                return Err(RpcError::new(-32602, "greeting must not be empty"));
            }
            Ok(())
        })
        .method("getgreeting", "", "", |p, _v| async move {
            Ok(json!({"greeting": p.option_str("greeting"), "limit": p.option_i64("limit")}))
        });
    let (mut node, t) = Node::new();
    let h = spawn(b, t, ());
    node.handshake(json!({"greeting": "Hi"})).await;
    node.request(
        "s1",
        "setconfig",
        json!({"config": "greeting", "val": "Howdy"}),
    )
    .await;
    assert!(node.result("s1").await.is_object());
    node.request("s2", "setconfig", json!({"config": "greeting", "val": ""}))
        .await;
    let rejected = node.response("s2").await;
    assert_eq!(rejected["error"]["message"], "greeting must not be empty");
    node.request("s3", "setconfig", json!({"config": "limit", "val": "12"}))
        .await;
    assert!(node.result("s3").await.is_object());
    node.request(
        "s4",
        "setconfig",
        json!({"config": "limit", "val": "twelve"}),
    )
    .await;
    assert_eq!(
        node.response("s4").await["error"]["code"],
        codes::INVALID_PARAMS
    );
    node.request("s5", "setconfig", json!({"config": "repeat", "val": "3"}))
        .await;
    assert_eq!(
        node.response("s5").await["error"]["code"],
        codes::INVALID_PARAMS,
        "not dynamic"
    );
    node.request("g", "getgreeting", json!({})).await;
    assert_eq!(
        node.result("g").await,
        json!({"greeting": "Howdy", "limit": 12})
    );
    node.request(
        "c1",
        "check",
        json!({"command_to_check": "setconfig", "config": "limit", "val": "x"}),
    )
    .await;
    assert_eq!(
        node.response("c1").await["error"]["code"],
        codes::INVALID_PARAMS
    );
    node.request(
        "c2",
        "check",
        json!({"command_to_check": "echo", "word": "w"}),
    )
    .await;
    assert_eq!(node.result("c2").await, json!({"command_to_check": "echo"}));
    node.request("c3", "check", json!({"command_to_check": "echo"}))
        .await;
    assert_eq!(
        node.response("c3").await["error"]["code"],
        codes::INVALID_PARAMS
    );
    hang_up(node, h).await;
}

#[tokio::test]
async fn split_and_concatenated_messages_are_framed() {
    let (mut node, h) = full_plugin();
    // getmanifest and init in one write, with no separator at all between them.
    let gm = json!({"jsonrpc":"2.0","id":"m","method":"getmanifest","params":{}});
    let init = json!({"jsonrpc":"2.0","id":"i","method":"init","params": init_params(json!({}), "/x", "rpc")});
    let mut both = serde_json::to_vec(&gm).expect("json");
    both.extend(serde_json::to_vec(&init).expect("json"));
    node.send_raw(&both).await;
    node.response("m").await;
    node.response("i").await;
    // A request dribbled in byte by byte.
    let req = encode_frame(&json!({"jsonrpc":"2.0","id":"e","method":"echo","params":["a\n\nb"]}));
    for b in req {
        node.send_raw(&[b]).await;
        tokio::task::yield_now().await;
    }
    assert_eq!(node.result("e").await, json!({"echo": "a\n\nb"}));
    hang_up(node, h).await;
}

#[tokio::test]
async fn output_is_compact_and_terminated() {
    let b = Builder::<()>::new()
        .name("fmt")
        .notification("fmt_done")
        .method("go", "", "", |p: Plugin<()>, _v| async move {
            p.log(Level::Warn, "careful");
            p.notify("fmt_done", json!({"n": 1}))
                .map_err(|e| RpcError::lightningd(e.to_string()))?;
            let undeclared = p.notify("other", json!({})).is_err();
            let not_object = p.notify("fmt_done", json!(1)).is_err();
            Ok(json!({"undeclared_refused": undeclared, "non_object_refused": not_object}))
        });
    let (mut node, t) = Node::new();
    let h = spawn(b, t, ());
    node.request("m", "getmanifest", json!({})).await;
    // Read raw bytes: compact JSON then exactly "\n\n".
    let mut raw = Vec::new();
    while !raw.ends_with(b"\n\n") {
        let mut buf = [0u8; 1024];
        let n = node.r.read(&mut buf).await.expect("readable");
        assert!(n > 0, "output ended early");
        raw.extend(&buf[..n]);
    }
    let body = &raw[..raw.len() - 2];
    assert!(!body.contains(&b'\n'), "no newline inside a message");
    node.request("i", "init", init_params(json!({}), "/x", "rpc"))
        .await;
    node.response("i").await;
    node.request("g", "go", json!({})).await;
    let mut seen = Vec::new();
    loop {
        let v = node.next().await.expect("message");
        let done = v["id"] == "g";
        seen.push(v);
        if done {
            break;
        }
    }
    let log = seen
        .iter()
        .find(|v| v["method"] == "log")
        .expect("log sent");
    assert_eq!(
        log["params"],
        json!({"level": "unusual", "message": "careful"})
    );
    let custom = seen
        .iter()
        .find(|v| v["method"] == "fmt_done")
        .expect("custom notification sent");
    // As CLN's libplugin: the payload under the topic, nothing else.
    assert_eq!(custom["params"], json!({"fmt_done": {"n": 1}}));
    assert!(custom.get("id").is_none());
    let answer = seen.last().expect("answer");
    assert_eq!(
        answer["result"],
        json!({"undeclared_refused": true, "non_object_refused": true})
    );
    hang_up(node, h).await;
}

#[tokio::test]
async fn requests_queued_before_init_are_served_after_it() {
    let (mut node, h) = full_plugin();
    node.request("m", "getmanifest", json!({})).await;
    node.response("m").await;
    node.request("early", "echo", json!(["first"])).await;
    node.request("i", "init", init_params(json!({}), "/x", "rpc"))
        .await;
    assert_eq!(node.result("i").await, json!({}), "init is answered first");
    assert_eq!(node.result("early").await, json!({"echo": "first"}));
    hang_up(node, h).await;
}

#[tokio::test]
async fn invalid_declarations_are_refused_before_the_handshake() {
    let (_node, t) = Node::new();
    let b = Builder::<()>::new().hook(
        HookSpec::new(Hook::PeerConnected, |_p, _v| async {
            Ok::<_, String>(Continue)
        })
        .filters(["x"]),
    );
    let h = spawn(b, t, ());
    assert!(matches!(finished(h).await, Err(RunError::Build(_))));
    let (_node, t) = Node::new();
    let b = Builder::<()>::new().notification("connect");
    assert!(matches!(
        finished(spawn(b, t, ())).await,
        Err(RunError::Build(_))
    ));
    let (_node, t) = Node::new();
    let b = Builder::<()>::new()
        .option(OptionSpec::int("n", ""))
        .on_change("n", |_p, _v| async { Ok(()) });
    assert!(matches!(
        finished(spawn(b, t, ())).await,
        Err(RunError::Build(_))
    ));
}

#[tokio::test]
async fn channel_transport_needs_no_byte_stream() {
    let (in_tx, in_rx) = mpsc::channel(8);
    let (out_tx, mut out_rx) = mpsc::unbounded_channel();
    let h = spawn(full_builder(), Transport::from_channels(in_rx, out_tx), ());
    in_tx
        .send(json!({"jsonrpc":"2.0","id":"m","method":"getmanifest","params":{}}))
        .await
        .expect("open");
    in_tx
        .send(json!({"jsonrpc":"2.0","id":"i","method":"init","params": init_params(json!({}), "/x", "rpc")}))
        .await
        .expect("open");
    in_tx
        .send(json!({"jsonrpc":"2.0","id":"e","method":"echo","params":{"word":"w"}}))
        .await
        .expect("open");
    let mut ids = Vec::new();
    while ids.len() < 3 {
        let v = tokio::time::timeout(LIMIT, out_rx.recv())
            .await
            .expect("in time")
            .expect("message");
        if let Some(id) = v["id"].as_str() {
            ids.push(id.to_string());
        }
    }
    assert_eq!(ids, ["m", "i", "e"]);
    drop(in_tx);
    assert!(finished(h).await.expect("clean exit"));
}

/// A fake node RPC socket: answers each request with `{"method": .., "id": ..}`, in reverse
/// order once two have arrived on the same connection.
async fn fake_rpc_socket(path: std::path::PathBuf) -> Arc<Mutex<Vec<Value>>> {
    let listener = tokio::net::UnixListener::bind(&path).expect("bind");
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let log = log.clone();
            tokio::spawn(async move {
                let mut dec = FrameDecoder::new(1 << 20);
                let mut batch = Vec::new();
                let mut buf = [0u8; 4096];
                loop {
                    while let Some(Ok(v)) = dec.next_value() {
                        log.lock().await.push(v.clone());
                        if v["method"] == "fail" {
                            let e = json!({"jsonrpc":"2.0","id":v["id"],"error":{"code":-32601,"message":"Unknown command 'fail'"}});
                            sock.write_all(&encode_frame(&e)).await.expect("write");
                        } else {
                            batch.push(v);
                        }
                    }
                    if batch.len() >= 2 || batch.first().is_some_and(|v| v["method"] == "getinfo") {
                        for v in batch.drain(..).rev() {
                            let r = json!({"jsonrpc":"2.0","id":v["id"],"result":{"method":v["method"],"id":v["id"]}});
                            sock.write_all(&encode_frame(&r)).await.expect("write");
                        }
                    }
                    match sock.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => dec.extend(&buf[..n]),
                    }
                }
            });
        }
    });
    seen
}

fn temp_dir(tag: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("fulgur-sdk-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

#[tokio::test]
async fn rpc_client_multiplexes_concurrent_calls() {
    let dir = temp_dir("mux");
    let seen = fake_rpc_socket(dir.join("rpc")).await;
    let client = fulgur_plugin_sdk::RpcClient::new(dir.join("rpc"), "muxer");
    let (a, b) = tokio::join!(
        client.call("alpha", json!({})),
        client.call("beta", json!([]))
    );
    let (a, b) = (a.expect("alpha answered"), b.expect("beta answered"));
    assert_eq!(a["method"], "alpha");
    assert_eq!(b["method"], "beta");
    assert!(
        a["id"]
            .as_str()
            .expect("string id")
            .starts_with("muxer:alpha#")
    );
    let err = client
        .call("fail", json!({}))
        .await
        .expect_err("node error");
    let rpc: RpcError = err.into();
    assert_eq!(rpc.code, codes::METHOD_NOT_FOUND);
    #[derive(Deserialize)]
    struct Echoed {
        method: String,
    }
    let typed: Echoed = client
        .call_typed("getinfo", &json!({}))
        .await
        .expect("typed");
    assert_eq!(typed.method, "getinfo");
    assert_eq!(
        seen.lock().await.len(),
        4,
        "one connection carried every call"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn plugins_call_the_node_at_lightning_dir_and_rpc_file() {
    let dir = temp_dir("plugin-rpc");
    let seen = fake_rpc_socket(dir.join("lightning-rpc")).await;
    let b =
        Builder::<()>::new()
            .name("caller")
            .method("ask", "", "", |p: Plugin<()>, _v| async move {
                Ok(p.rpc().call("getinfo", json!({})).await?)
            });
    let (mut node, t) = Node::new();
    let h = spawn(b, t, ());
    node.request("m", "getmanifest", json!({})).await;
    node.response("m").await;
    let dir_str = dir.to_str().expect("utf-8 path").to_string();
    node.request(
        "i",
        "init",
        init_params(json!({}), &dir_str, "lightning-rpc"),
    )
    .await;
    node.response("i").await;
    node.request("q", "ask", json!({})).await;
    let r = node.response("q").await;
    assert_eq!(r["result"]["method"], "getinfo");
    assert!(
        seen.lock().await[0]["id"]
            .as_str()
            .expect("id")
            .starts_with("caller:getinfo#")
    );
    hang_up(node, h).await;
    let _ = std::fs::remove_dir_all(dir);
}
