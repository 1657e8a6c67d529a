//! Integration tests of `fulgur-cli` against a fake node: a UNIX socket server in a thread
//! that records what it receives and answers with canned bytes.

use std::io::{Read, Write};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const HELP_HINT: &str =
    "---\nrun `fulgur-cli help <command>` for more information on a specific command\n";

/// A directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let path = std::env::temp_dir().join(format!("fcli-{}-{n}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create temp dir");
        TempDir(path)
    }

    fn path(&self) -> &Path {
        &self.0
    }

    fn write(&self, rel: &str, text: &str) {
        let p = self.0.join(rel);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(p, text).expect("write file");
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// What the fake node writes in answer to one request: chunks, with a pause between; an
/// empty chunk makes it hang up.
type Handler = Box<dyn FnMut(&Value) -> Vec<Vec<u8>> + Send>;

struct FakeNode {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<Vec<Value>>,
}

impl FakeNode {
    /// Listens on `socket` (creating its directory) and serves one connection.
    fn start(socket: &Path, mut handler: Handler) -> Self {
        std::fs::create_dir_all(socket.parent().expect("parent")).expect("mkdir");
        let listener = UnixListener::bind(socket).expect("bind fake node");
        listener.set_nonblocking(true).expect("nonblocking");
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let thread = thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(30);
            let mut stream = loop {
                match listener.accept() {
                    Ok((s, _)) => break s,
                    Err(_) if stop2.load(Ordering::SeqCst) || Instant::now() > deadline => {
                        return Vec::new();
                    }
                    Err(_) => thread::sleep(Duration::from_millis(5)),
                }
            };
            stream.set_nonblocking(false).expect("blocking");
            stream
                .set_read_timeout(Some(Duration::from_secs(30)))
                .expect("timeout");
            let mut got = Vec::new();
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            loop {
                let n = match stream.read(&mut chunk) {
                    Ok(0) | Err(_) => return got,
                    Ok(n) => n,
                };
                buf.extend_from_slice(&chunk[..n]);
                let mut values = Vec::new();
                let mut used = 0;
                let mut stream_de = serde_json::Deserializer::from_slice(&buf).into_iter::<Value>();
                loop {
                    match stream_de.next() {
                        Some(Ok(v)) => {
                            used = stream_de.byte_offset();
                            values.push(v);
                        }
                        Some(Err(e)) if e.is_eof() => break,
                        Some(Err(_)) => return got,
                        None => break,
                    }
                }
                buf.drain(..used);
                for v in values {
                    let chunks = handler(&v);
                    got.push(v);
                    for (i, c) in chunks.iter().enumerate() {
                        if i > 0 {
                            thread::sleep(Duration::from_millis(3));
                        }
                        if c.is_empty() || stream.write_all(c).is_err() {
                            return got;
                        }
                    }
                }
            }
        });
        FakeNode { stop, thread }
    }

    /// Every request received, in order.
    fn requests(self) -> Vec<Value> {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.join().expect("fake node thread")
    }
}

fn reply(id: &Value, member: &str, text: &str) -> Vec<u8> {
    format!("{{\"jsonrpc\":\"2.0\",\"id\":{id},\"{member}\":{text}}}\n\n").into_bytes()
}

/// A node that accepts `notifications` and answers every other request with `result`
/// (JSON text, sent exactly as written).
fn answering(result: impl Into<String>) -> Handler {
    let result: String = result.into();
    Box::new(move |req| {
        if req["method"] == "notifications" {
            vec![reply(&req["id"], "result", "{}")]
        } else {
            vec![reply(&req["id"], "result", &result)]
        }
    })
}

/// Like [`answering`] but with an error object for the main request.
fn failing(error: &'static str) -> Handler {
    Box::new(move |req| {
        if req["method"] == "notifications" {
            vec![reply(&req["id"], "result", "{}")]
        } else {
            vec![reply(&req["id"], "error", error)]
        }
    })
}

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
    pid: u32,
}

/// Runs the CLI with `HOME` set to `home`.
fn run_in(home: &Path, args: &[&str]) -> Run {
    let child = Command::new(env!("CARGO_BIN_EXE_fulgur-cli"))
        .args(args)
        .env("HOME", home)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn fulgur-cli");
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let Ok(output) = rx.recv_timeout(Duration::from_secs(30)) else {
        let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
        panic!("fulgur-cli {args:?} did not finish");
    };
    let output = output.expect("wait for fulgur-cli");
    Run {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        pid,
    }
}

/// Runs the CLI with `--lightning-dir <dir>` and `HOME=<dir>`.
fn run(dir: &TempDir, args: &[&str]) -> Run {
    let d = dir.path().to_str().expect("utf8 path");
    let mut all = vec!["--lightning-dir", d];
    all.extend_from_slice(args);
    run_in(dir.path(), &all)
}

/// Starts a node at the default socket of `dir`, runs the CLI, returns both sides.
/// `text` (the CLI's output) contains `part`.
#[track_caller]
fn assert_contains(text: &str, part: &str) {
    assert!(text.contains(part), "{part:?} not in:\n{text}");
}

/// [`exchange`] with a node answering every call with `result`; the CLI must exit 0.
fn succeeds(result: impl Into<String>, args: &[&str]) -> (Run, Vec<Value>) {
    let (out, reqs) = exchange(answering(result), args);
    assert_eq!(out.code, 0, "{}", out.stderr);
    (out, reqs)
}

fn exchange(handler: Handler, args: &[&str]) -> (Run, Vec<Value>) {
    let dir = TempDir::new("x");
    let node = FakeNode::start(&dir.path().join("bitcoin/lightning-rpc"), handler);
    let out = run(&dir, args);
    (out, node.requests())
}

/// The params of the one non-`notifications` request.
fn main_request(reqs: &[Value]) -> &Value {
    let main: Vec<&Value> = reqs
        .iter()
        .filter(|r| r["method"] != "notifications")
        .collect();
    assert_eq!(main.len(), 1, "requests: {reqs:?}");
    main[0]
}

#[test]
fn ordered_params_keep_literals_raw_and_quote_the_rest() {
    let (out, reqs) = exchange(
        answering("{}"),
        &[
            "-N",
            "none",
            "foo",
            "12",
            "0",
            "012",
            "1.5",
            "true",
            "false",
            "null",
            r#"{"a":[1]}"#,
            r#"[1,"x"]"#,
            r#""quoted""#,
            "abc",
            "-5",
            "",
            "a b\"c",
        ],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(reqs.len(), 1, "-N none sends no notifications request");
    assert_eq!(reqs[0]["jsonrpc"], "2.0");
    assert_eq!(reqs[0]["method"], "foo");
    assert_eq!(
        reqs[0]["params"],
        json!([12, 0, "012", 1.5, true, false, null, {"a":[1]}, [1, "x"], "quoted", "abc", "-5", "", "a b\"c"])
    );
}

#[test]
fn keyword_params_are_detected_from_the_first_argument() {
    let (out, reqs) = exchange(
        answering("{}"),
        &[
            "pay",
            "bolt11=lnbc1",
            "amount_msat=1000",
            "label=a=b",
            "x=[1]",
        ],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    let params = &main_request(&reqs)["params"];
    assert_eq!(
        params,
        &json!({"bolt11":"lnbc1","amount_msat":1000,"label":"a=b","x":[1]})
    );
    let keys: Vec<&String> = params.as_object().expect("object").keys().collect();
    assert_eq!(keys, ["bolt11", "amount_msat", "label", "x"]);

    // Only the first argument decides.
    let (_, reqs) = succeeds("{}", &["m", "x", "a=1"]);
    assert_eq!(main_request(&reqs)["params"], json!(["x", "a=1"]));
}

#[test]
fn keywords_and_order_flags_force_the_params_style() {
    let (_, reqs) = succeeds("{}", &["-k", "m", "a=1", "b=007"]);
    assert_eq!(main_request(&reqs)["params"], json!({"a":1,"b":"007"}));

    let (_, reqs) = succeeds("{}", &["-o", "m", "a=1"]);
    assert_eq!(main_request(&reqs)["params"], json!(["a=1"]));

    let (_, reqs) = succeeds("{}", &["-k", "m"]);
    assert_eq!(main_request(&reqs)["params"], json!({}));

    let (_, reqs) = succeeds("{}", &["m"]);
    assert_eq!(main_request(&reqs)["params"], json!([]));
}

#[test]
fn json_params_flag_sends_the_value_verbatim() {
    let (out, reqs) = exchange(
        answering("{}"),
        &["-j", "m", r#"{"x":[1,{"y":"z"}],"n":null,"s":"0"}"#],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(
        main_request(&reqs)["params"],
        json!({"x":[1,{"y":"z"}],"n":null,"s":"0"})
    );

    let (out, reqs) = exchange(answering("{}"), &["-j", "m", "[1, \"a\"]"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(main_request(&reqs)["params"], json!([1, "a"]));
}

#[test]
fn bad_params_are_usage_errors_and_nothing_is_sent() {
    let cases: &[&[&str]] = &[
        &["-k", "m", "a"],
        &["m", "a=1", "b"],
        &["m", "{nope}"],
        &["m", "1.2.3"],
        &["m", "[1,]"],
        &["-j", "m", "{bad"],
        &["-j", "m", "5"],
        &["-j", "m"],
        &["-j", "m", "{}", "{}"],
        &["-l", "{not json", "m"],
    ];
    for args in cases {
        let (out, reqs) = exchange(answering("{}"), args);
        assert_eq!(out.code, 3, "{args:?}: {}", out.stderr);
        assert!(
            out.stderr.starts_with("fulgur-cli: "),
            "{args:?}: {}",
            out.stderr
        );
        assert!(reqs.is_empty(), "{args:?} sent {reqs:?}");
    }
}

#[test]
fn ids_follow_the_cli_convention_and_notifications_come_first() {
    let (out, reqs) = succeeds(r#"{"id":"02aa"}"#, &["getinfo"]);
    assert_eq!(reqs.len(), 2);
    assert_eq!(
        reqs[0],
        json!({"jsonrpc":"2.0","id":format!("cli:notifications#{}", out.pid),
               "method":"notifications","params":{"enable":true}})
    );
    assert_eq!(reqs[1]["id"], json!(format!("cli:getinfo#{}", out.pid)));
    assert_eq!(reqs[1]["method"], "getinfo");

    let (out, reqs) = succeeds("{}", &["-N", "none", "we\"ird"]);
    assert_eq!(reqs[0]["method"], "we\"ird");
    assert_eq!(
        reqs[0]["id"],
        json!(format!("cli:weirdmethod!#{}", out.pid))
    );
}

#[test]
fn filter_is_sent_with_the_request() {
    let (_, reqs) = succeeds("{}", &["-l", r#"{"id":true}"#, "getinfo"]);
    assert_eq!(main_request(&reqs)["filter"], json!({"id": true}));
}

#[test]
fn a_reply_with_another_id_is_refused() {
    for bad_id in [r#""cli:other#1""#, "7", "null"] {
        let handler: Handler = Box::new(move |req| {
            if req["method"] == "notifications" {
                vec![reply(&req["id"], "result", "{}")]
            } else {
                vec![
                    format!("{{\"jsonrpc\":\"2.0\",\"id\":{bad_id},\"result\":{{}}}}\n\n")
                        .into_bytes(),
                ]
            }
        });
        let (out, _) = exchange(handler, &["getinfo"]);
        assert_eq!(out.code, 2, "{bad_id}: {}", out.stderr);
        assert_contains(&out.stderr, "'id'");
        assert_eq!(out.stdout, "");
    }
}

#[test]
fn a_node_without_notifications_still_answers() {
    let handler: Handler = Box::new(|req| {
        if req["method"] == "notifications" {
            vec![reply(
                &req["id"],
                "error",
                r#"{"code":-32601,"message":"Unknown command 'notifications'"}"#,
            )]
        } else {
            vec![reply(&req["id"], "result", r#"{"ok":true}"#)]
        }
    });
    let (out, reqs) = exchange(handler, &["ping"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(reqs.len(), 2);
    assert_eq!(out.stdout, "{\n   \"ok\": true\n}\n");
    assert_eq!(out.stderr, "");
}

fn noisy_node() -> Handler {
    Box::new(|req| {
        if req["method"] == "notifications" {
            return vec![reply(&req["id"], "result", "{}")];
        }
        let id = &req["id"];
        let note = |level: &str, msg: &str| {
            format!(
                "{{\"jsonrpc\":\"2.0\",\"method\":\"message\",\"params\":{{\"id\":{id},\"level\":\"{level}\",\"message\":\"{msg}\"}}}}\n\n"
            )
        };
        let mut bytes = note("info", "hello there");
        bytes += &note("debug", "hidden detail");
        bytes += &format!(
            "{{\"jsonrpc\":\"2.0\",\"method\":\"progress\",\"params\":{{\"id\":{id},\"num\":0,\"total\":2}}}}\n\n"
        );
        bytes += &String::from_utf8(reply(id, "result", r#"{"done":1}"#)).expect("utf8");
        // Deliver it all in ragged pieces so notification and reply share reads.
        bytes.into_bytes().chunks(11).map(<[u8]>::to_vec).collect()
    })
}

#[test]
fn message_notifications_print_on_stderr_by_level() {
    let (out, _) = exchange(noisy_node(), &["slow"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.stdout, "{\n   \"done\": 1\n}\n");
    assert_contains(&out.stderr, "# hello there\n");
    assert!(!out.stderr.contains("hidden detail"), "{}", out.stderr);
    assert_contains(&out.stderr, "# [1/2]\n");

    let (out, _) = exchange(noisy_node(), &["-N", "debug", "slow"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_contains(&out.stderr, "# hidden detail\n");

    let (out, reqs) = exchange(noisy_node(), &["-N", "none", "slow"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.stdout, "{\n   \"done\": 1\n}\n");
    assert_eq!(out.stderr, "");
    assert!(reqs.iter().all(|r| r["method"] != "notifications"));
}

#[test]
fn a_reply_split_byte_by_byte_is_reassembled() {
    let handler: Handler = Box::new(|req| {
        let text = if req["method"] == "notifications" {
            "{}"
        } else {
            r#"{"a":"}{\"","b":[1,2]}"#
        };
        reply(&req["id"], "result", text)
            .chunks(1)
            .map(<[u8]>::to_vec)
            .collect()
    });
    let (out, _) = exchange(handler, &["m"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(
        out.stdout,
        "{\n   \"a\": \"}{\\\"\",\n   \"b\": [\n      1,\n      2\n   ]\n}\n"
    );
}

#[test]
fn megabyte_replies_are_handled() {
    let big: Vec<String> = (0..60_000)
        .map(|i| format!("entry-{i:08}-{}", "x".repeat(50)))
        .collect();
    let text = serde_json::to_string(&json!({ "items": big })).expect("json");
    assert!(text.len() > 3_000_000);
    let (out, _) = succeeds(text.as_str(), &["listbig"]);
    let back: Value = serde_json::from_str(&out.stdout).expect("JSON output");
    assert_eq!(back["items"].as_array().map(Vec::len), Some(60_000));
    assert_eq!(back["items"][59_999], json!(big[59_999]));

    let (out, _) = succeeds(text.as_str(), &["-R", "listbig"]);
    assert_eq!(out.stdout, format!("{text}\n"));
}

/// Runs `args` against a node listening at `socket` (relative to the temp dir), with
/// `files` written first; asserts the node was reached.
fn reaches(socket: &str, files: &[(&str, &str)], args: &[&str]) {
    let dir = TempDir::new("path");
    for (name, text) in files {
        dir.write(name, text);
    }
    let node = FakeNode::start(&dir.path().join(socket), answering(r#"{"where":"here"}"#));
    let out = run(&dir, args);
    let reqs = node.requests();
    assert_eq!(out.code, 0, "{args:?} {files:?} → {}", out.stderr);
    assert_eq!(out.stdout, "{\n   \"where\": \"here\"\n}\n");
    assert_eq!(main_request(&reqs)["method"], "getinfo");
}

#[test]
fn socket_path_comes_from_network_and_rpc_file_options() {
    reaches("bitcoin/lightning-rpc", &[], &["getinfo"]);
    reaches(
        "regtest/lightning-rpc",
        &[],
        &["--network", "regtest", "getinfo"],
    );
    reaches(
        "regtest/lightning-rpc",
        &[],
        &["--network=regtest", "getinfo"],
    );
    reaches("testnet/lightning-rpc", &[], &["--testnet", "getinfo"]);
    reaches("signet/lightning-rpc", &[], &["--signet", "getinfo"]);
    reaches("testnet4/lightning-rpc", &[], &["--testnet4", "getinfo"]);
    reaches(
        "bitcoin/lightning-rpc",
        &[],
        &["--regtest", "--mainnet", "getinfo"],
    );
    reaches("bitcoin/my-rpc", &[], &["--rpc-file", "my-rpc", "getinfo"]);
    reaches(
        "regtest/sub/r",
        &[],
        &["--regtest", "--rpc-file=sub/r", "getinfo"],
    );
}

#[test]
fn an_absolute_rpc_file_overrides_everything() {
    let dir = TempDir::new("abs");
    let elsewhere = TempDir::new("abs-sock");
    let sock = elsewhere.path().join("node.sock");
    let node = FakeNode::start(&sock, answering("{}"));
    let out = run(
        &dir,
        &[
            "--network",
            "regtest",
            "--rpc-file",
            sock.to_str().expect("utf8"),
            "getinfo",
        ],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(node.requests().len(), 2);
}

#[test]
fn socket_path_comes_from_config_files() {
    let base = "# comment\n\nalias=whatever\nnetwork=signet\n";
    let signet_rpc = [("config", base), ("signet/config", "rpc-file=node-rpc\n")];
    // The socket reached, the files written (name, text) and the arguments.
    type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a [&'a str]);
    let cases: [Case; 6] = [
        ("signet/lightning-rpc", &[("config", base)], &["getinfo"]),
        (
            "regtest/lightning-rpc",
            &[("config", "regtest\n")],
            &["getinfo"],
        ),
        ("signet/node-rpc", &signet_rpc, &["getinfo"]),
        // The base file's rpc-file applies when the network's file has none.
        (
            "signet/base-rpc",
            &[("config", "network=signet\nrpc-file=base-rpc\n")],
            &["getinfo"],
        ),
        // The command line wins over the files.
        (
            "regtest/lightning-rpc",
            &signet_rpc,
            &["--network", "regtest", "getinfo"],
        ),
        (
            "signet/cli-rpc",
            &signet_rpc,
            &["--rpc-file", "cli-rpc", "getinfo"],
        ),
    ];
    for (socket, files, args) in cases {
        reaches(socket, files, args);
    }
}

#[test]
fn conf_replaces_the_implicit_config_files() {
    let dir = TempDir::new("conf");
    dir.write("config", "network=signet\n");
    dir.write("other.conf", "network=regtest\nrpc-file=via-conf\n");
    let node = FakeNode::start(&dir.path().join("regtest/via-conf"), answering("{}"));
    let conf = dir.path().join("other.conf");
    let out = run(&dir, &["--conf", conf.to_str().expect("utf8"), "getinfo"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(node.requests().len(), 2);

    // An explicit --conf must exist.
    let out = run(&dir, &["--conf", "/nonexistent/fulgur.conf", "getinfo"]);
    assert_eq!(out.code, 3, "{}", out.stderr);
    assert_contains(&out.stderr, "/nonexistent/fulgur.conf");
}

#[test]
fn default_lightning_dir_is_under_home() {
    let home = TempDir::new("home");
    let node = FakeNode::start(
        &home.path().join(".fulgur/bitcoin/lightning-rpc"),
        answering("{}"),
    );
    let out = run_in(home.path(), &["getinfo"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(node.requests().len(), 2);

    let node = FakeNode::start(
        &home.path().join("nodeA/regtest/lightning-rpc"),
        answering("{}"),
    );
    let out = run_in(
        home.path(),
        &["--lightning-dir", "~/nodeA", "--regtest", "getinfo"],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(node.requests().len(), 2);
}

#[test]
fn socket_paths_longer_than_sun_path_work() {
    let dir = TempDir::new("long");
    let deep = "d".repeat(60);
    let ldir = dir.path().join(&deep).join(&deep);
    let sock = ldir.join("bitcoin/lightning-rpc");
    assert!(sock.as_os_str().len() > 108);
    let node = FakeNode::start_relative(&sock, answering(r#"{"long":true}"#));
    let out = run_in(
        dir.path(),
        &["--lightning-dir", ldir.to_str().expect("utf8"), "getinfo"],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.stdout, "{\n   \"long\": true\n}\n");
    assert_eq!(node.requests().len(), 2);

    // A file name that cannot fit even on its own is a usage error.
    let long_name = "n".repeat(120);
    let out = run(&dir, &["--rpc-file", &long_name, "getinfo"]);
    assert_eq!(out.code, 3, "{}", out.stderr);
    assert_contains(&out.stderr, "too long");
}

impl FakeNode {
    /// Binds a socket whose path is too long for `sun_path` by binding in its directory.
    fn start_relative(socket: &Path, handler: Handler) -> Self {
        let dir = socket.parent().expect("parent").to_path_buf();
        std::fs::create_dir_all(&dir).expect("mkdir");
        // Bind through a short symlink to the directory: the socket lands in the long one,
        // and the test's working directory stays put.
        let name = socket.file_name().expect("name").to_owned();
        let short = std::env::temp_dir().join(format!(
            "fcli-link-{}-{}",
            std::process::id(),
            name.to_string_lossy().len()
        ));
        let _ = std::fs::remove_file(&short);
        std::os::unix::fs::symlink(&dir, &short).expect("symlink to long dir");
        let node = FakeNode::start(&short.join(&name), handler);
        let _ = std::fs::remove_file(&short);
        node
    }
}

const SAMPLE: &str = r#"{"id":"02ab","alias":"Fulg\u00fcr","num":3,"nested":{"only":"v"},"list":[1,{"a":"x\ty","b":null}],"empty":[]}"#;

#[test]
fn default_output_is_json_with_three_space_indent() {
    let (out, _) = succeeds(SAMPLE, &["getinfo"]);
    let expected = r#"{
   "id": "02ab",
   "alias": "Fulgür",
   "num": 3,
   "nested": {
      "only": "v"
   },
   "list": [
      1,
      {
         "a": "x\ty",
         "b": null
      }
   ],
   "empty": []
}
"#;
    assert_eq!(out.stdout, expected);
    let (out_j, _) = exchange(answering(SAMPLE), &["-J", "getinfo"]);
    assert_eq!(out_j.stdout, expected);
}

#[test]
fn human_output_collapses_objects_and_lists_arrays() {
    let (out, _) = succeeds(SAMPLE, &["-H", "getinfo"]);
    assert_eq!(
        out.stdout,
        "id=02ab\nalias=Fulgür\nnum=3\nnested=v\nlist=1\na=x\ty\nb=null\nempty=\n"
    );
}

#[test]
fn flat_output_prints_paths() {
    let (out, _) = succeeds(SAMPLE, &["--flat", "getinfo"]);
    assert_eq!(
        out.stdout,
        "id=02ab\nalias=Fulgür\nnum=3\nnested.only=v\nlist[0]=1\nlist[1].a=x\\ty\nlist[1].b=null\n"
    );
}

#[test]
fn raw_output_is_the_result_exactly_as_sent() {
    let text = r#"{ "b" :1.50, "a":"\u00e9",  "c":[ ] }"#;
    let (out, _) = succeeds(text, &["-R", "getinfo"]);
    assert_eq!(out.stdout, format!("{text}\n"));
}

#[test]
fn format_hint_simple_switches_the_default_to_human() {
    let text = r#"{"format-hint":"simple","a":"x","b":"y"}"#;
    let (out, _) = succeeds(text, &["somecmd"]);
    assert_eq!(out.stdout, "a=x\nb=y\n");

    // -J forces JSON.
    let (out, _) = exchange(answering(text), &["-J", "somecmd"]);
    let v: Value = serde_json::from_str(&out.stdout).expect("JSON");
    assert_eq!(v["a"], "x");

    // Any other hint is dropped from default JSON output.
    let (out, _) = exchange(answering(r#"{"format-hint":"fancy","a":1}"#), &["somecmd"]);
    assert_eq!(out.stdout, "{\n   \"a\": 1\n}\n");
}

const HELP_LIST: &str = r#"{"help":[
  {"command":"pay bolt11 [amount_msat]","category":"payment"},
  {"command":"dev-crash","category":"developer"},
  {"command":"getinfo","category":"utility","description":"Show node info."},
  {"command":"invoice amount_msat label description","category":"payment"}
],"format-hint":"simple"}"#;

#[test]
fn help_prints_the_sorted_command_list() {
    let (out, reqs) = succeeds(HELP_LIST, &["help"]);
    assert_eq!(main_request(&reqs)["params"], json!([]));
    assert_eq!(
        out.stdout,
        format!(
            "invoice amount_msat label description\n\npay bolt11 [amount_msat]\n\n\
             getinfo\n    Show node info.\n\ndev-crash\n\n{HELP_HINT}"
        )
    );
}

#[test]
fn help_for_one_command_is_human_readable() {
    let (out, reqs) = exchange(
        answering(r#"{"help":[{"command":"pay bolt11 [amount_msat]"}],"format-hint":"simple"}"#),
        &["help", "pay"],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(main_request(&reqs)["params"], json!(["pay"]));
    assert_eq!(out.stdout, "pay bolt11 [amount_msat]\n");
}

#[test]
fn no_method_prints_usage_then_the_command_list() {
    let (out, reqs) = succeeds(HELP_LIST, &[]);
    assert_eq!(main_request(&reqs)["method"], "help");
    assert!(
        out.stdout.starts_with("Send one JSON-RPC"),
        "{}",
        out.stdout
    );
    assert_contains(&out.stdout, "Usage: fulgur-cli");
    assert!(
        out.stdout.ends_with(&format!("dev-crash\n\n{HELP_HINT}")),
        "{}",
        out.stdout
    );
}

#[test]
fn node_errors_exit_1_and_print_the_error() {
    let err = r#"{"code":-32602,"message":"missing required parameter: label","data":{"x":[1]}}"#;
    let (out, _) = exchange(failing(err), &["invoice", "1000"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert_eq!(
        out.stdout,
        "{\n   \"code\": -32602,\n   \"message\": \"missing required parameter: label\",\n   \"data\": {\n      \"x\": [\n         1\n      ]\n   }\n}\n"
    );
    let (out, _) = exchange(failing(err), &["-R", "invoice", "1000"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert_eq!(out.stdout, format!("{err}\n"));
}

#[test]
fn no_node_exits_2_with_a_clear_message() {
    let dir = TempDir::new("none");
    for args in [
        &["getinfo"][..],
        &["help"][..],
        &["--regtest", "help", "pay"][..],
    ] {
        let out = run(&dir, args);
        assert_eq!(out.code, 2, "{args:?}: {}", out.stderr);
        let net = if args[0] == "--regtest" {
            "regtest"
        } else {
            "bitcoin"
        };
        let sock = dir.path().join(net).join("lightning-rpc");
        assert_contains(
            &out.stderr,
            &format!("cannot connect to fulgurd at {}", sock.display()),
        );
        assert_contains(&out.stderr, "Is fulgurd running");
        assert_contains(&out.stderr, &format!("--network {net}"));
    }

    // A socket file nobody listens on any more: connection refused.
    let sock = dir.path().join("bitcoin/lightning-rpc");
    std::fs::create_dir_all(sock.parent().expect("parent")).expect("mkdir");
    drop(UnixListener::bind(&sock).expect("bind"));
    let out = run(&dir, &["getinfo"]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert_contains(&out.stderr, "Is fulgurd running");
}

/// A node that answers the main request with `bytes`, then hangs up.
fn garbling(bytes: &'static [u8]) -> Handler {
    Box::new(move |req| {
        if req["method"] == "notifications" {
            vec![reply(&req["id"], "result", "{}")]
        } else {
            vec![bytes.to_vec(), Vec::new()]
        }
    })
}

#[test]
fn broken_replies_exit_2() {
    let (out, _) = exchange(garbling(b"hello world\n\n"), &["getinfo"]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert_contains(&out.stderr, "malformed");

    // Half a reply, then the node hangs up.
    let (out, _) = exchange(garbling(br#"{"jsonrpc":"2.0","id":"#), &["getinfo"]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert_contains(&out.stderr, "closed the connection");

    // Neither result nor error (the id is checked first, so build a matching one).
    let handler: Handler = Box::new(|req| {
        let id = &req["id"];
        if req["method"] == "notifications" {
            vec![reply(id, "result", "{}")]
        } else {
            vec![format!("{{\"jsonrpc\":\"2.0\",\"id\":{id}}}\n\n").into_bytes()]
        }
    });
    let (out, _) = exchange(handler, &["getinfo"]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert_contains(&out.stderr, "neither 'result' nor 'error'");

    let (out, _) = exchange(garbling(b"[1,2]\n\n"), &["getinfo"]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert_eq!(out.stdout, "");
}

#[test]
fn bad_options_exit_3() {
    let dir = TempDir::new("usage");
    for args in [
        &["--bogus", "getinfo"][..],
        &["-N", "loud", "getinfo"][..],
        &["--network", "mars", "getinfo"][..],
        &["--lightning-dir"][..],
    ] {
        let out = run_in(dir.path(), args);
        assert_eq!(out.code, 3, "{args:?}: {}", out.stderr);
        assert!(!out.stderr.is_empty());
    }
}

#[test]
fn help_and_version_flags() {
    let dir = TempDir::new("flags");
    let out = run_in(dir.path(), &["--help"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    for opt in [
        "--lightning-dir",
        "--rpc-file",
        "-k, --keywords",
        "-H, --human-readable",
        "-N, --notifications",
        "-l, --filter",
    ] {
        assert!(
            out.stdout.contains(opt),
            "{opt} missing from {}",
            out.stdout
        );
    }
    let out = run_in(dir.path(), &["--version"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(
        out.stdout,
        format!("fulgur-cli {}\n", env!("CARGO_PKG_VERSION"))
    );
}
