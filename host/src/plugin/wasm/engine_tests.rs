//! WASM plugins through the real registry: WAT guests (tests/wasm/wat_guest.rs) loaded
//! by `PluginHost`, hooks run with `run_hook`, failures provoked on purpose.

use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fulgur_protocol::hooks::Hook;
use serde_json::{Value, json};

use super::SandboxRule;
use crate::hooks::ChainEnd;
use crate::log::{Level, LevelFilter, Logger};
use crate::plugin::discovery::Candidate;
use crate::plugin::{HostSettings, PluginHost};

include!("../../../../tests/wasm/wat_guest.rs");

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Ok(mut v) = self.0.lock() {
            v.extend_from_slice(buf);
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        self.0
            .lock()
            .map(|v| String::from_utf8_lossy(&v).into_owned())
            .unwrap_or_default()
    }

    async fn wait_for(&self, needle: &str) -> bool {
        for _ in 0..200 {
            if self.text().contains(needle) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        false
    }
}

fn dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("fulgur-wasm-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap_or_else(|e| panic!("{e}"));
    d
}

/// The guest compiled to a module, written without an execute bit.
fn guest(dir: &Path, name: &str) -> PathBuf {
    let bytes = wat::parse_str(guest_wat(&guest_manifest())).unwrap_or_else(|e| panic!("{e}"));
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap_or_else(|e| panic!("{e}"));
    p
}

async fn host(dir: &Path, plugins: &[PathBuf], rules: &[&str]) -> (Arc<PluginHost>, Captured) {
    let settings = HostSettings {
        net_dir: dir.to_path_buf(),
        rpc_file: "lightning-rpc".into(),
        network: "regtest".into(),
        allow_deprecated_apis: false,
        timeout: Duration::from_secs(20),
        shutdown_grace: Duration::from_secs(1),
        default_dir: dir.join("plugins"),
        reserved_methods: HashSet::new(),
        wasm_sandbox: rules
            .iter()
            .map(|r| SandboxRule::parse(r).unwrap_or_else(|e| panic!("{e}")))
            .collect(),
    };
    let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
    let out = Captured::default();
    let log = Logger::new(
        vec![LevelFilter {
            level: Level::Debug,
            prefix: None,
        }],
        Box::new(out.clone()),
    );
    let host = PluginHost::new(log, settings, &[], vec![], tx);
    let c: Vec<Candidate> = plugins
        .iter()
        .map(|p| Candidate {
            path: p.clone(),
            important: false,
        })
        .collect();
    host.start_all(&c).await.unwrap_or_else(|e| panic!("{e}"));
    host.init_all().await.unwrap_or_else(|e| panic!("{e}"));
    (host, out)
}

async fn call(host: &PluginHost, method: &str) -> Value {
    let p = host
        .method_owner("hello")
        .unwrap_or_else(|| panic!("no plugin serves hello"));
    tokio::time::timeout(Duration::from_secs(20), p.request(method, &json!({}), None))
        .await
        .unwrap_or_else(|_| panic!("{method} timed out"))
        .unwrap_or_else(|_| panic!("plugin gone during {method}"))
}

/// Calls a method that may kill the instance: `None` when the call ended as a plugin's
/// death does.
async fn call_may_die(host: &PluginHost, method: &str) -> Option<Value> {
    let p = host
        .method_owner("hello")
        .unwrap_or_else(|| panic!("no plugin serves hello"));
    tokio::time::timeout(Duration::from_secs(20), p.request(method, &json!({}), None))
        .await
        .unwrap_or_else(|_| panic!("{method} timed out"))
        .ok()
}

async fn htlc(host: &PluginHost, marker: &str) -> ChainEnd {
    let payload = json!({"htlc": {"amount_msat": 1000, "note": marker}});
    tokio::time::timeout(
        Duration::from_secs(20),
        host.run_hook(Hook::HtlcAccepted, payload, None, None, None, None),
    )
    .await
    .unwrap_or_else(|_| panic!("htlc_accepted timed out"))
}

async fn htlc_noting_deaths(host: &PluginHost, marker: &str) -> (ChainEnd, Vec<String>) {
    let payload = json!({"htlc": {"amount_msat": 1000, "note": marker}});
    tokio::time::timeout(
        Duration::from_secs(20),
        host.run_hook_noting_deaths(Hook::HtlcAccepted, payload, None, None, None, None),
    )
    .await
    .unwrap_or_else(|_| panic!("htlc_accepted timed out"))
}

fn answer(end: &ChainEnd) -> Value {
    match end {
        ChainEnd::Stopped { answer, .. } => answer.clone(),
        other => panic!("expected an answer, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshake_method_notification_and_hooks() {
    let d = dir("basic");
    let g = guest(&d, "g.wasm");
    assert!(
        crate::plugin::discovery::eligible(&g),
        "a module needs no execute bit"
    );
    let (host, log) = host(&d, &[g], &["g.wasm:hold=true"]).await;
    let p = host
        .find("g.wasm")
        .unwrap_or_else(|| panic!("not registered"));
    assert!(p.is_active() && p.is_wasm());
    assert_eq!(
        call(&host, "hello").await["result"],
        json!({"greeting": "hi"})
    );

    host.notify("block_added", json!({"hash": "00", "height": 1}));
    assert!(log.wait_for("wasm guest: block_added seen").await);

    // Answered within the call.
    let end = htlc(&host, "answer_now").await;
    assert_eq!(answer(&end)["failure_message"], "400f");
    // Held: answered from a later call (the timer the host offers).
    let start = std::time::Instant::now();
    let end = htlc(&host, "hold").await;
    assert_eq!(answer(&end)["result"], "resolve");
    assert!(start.elapsed() >= Duration::from_millis(100));
    host.shutdown_all().await;
    let _ = std::fs::remove_dir_all(&d);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn holding_needs_the_grant_and_rpc_needs_the_allow_list() {
    let d = dir("grants");
    let g = guest(&d, "g.wasm");
    let (host, log) = host(&d, &[g], &[]).await;
    // Without `hold`, an unanswered htlc_accepted gets the safe default at once.
    let end = htlc(&host, "hold").await;
    assert_eq!(answer(&end), Hook::HtlcAccepted.safe_default());
    assert!(log.wait_for("without the hold grant").await);
    // `withdraw` is not on the default list: the guest gets an error message, no trap.
    assert_eq!(call(&host, "callrpc").await["result"], json!({}));
    assert!(log.wait_for("wasm guest: rpc denied").await);
    assert!(!log.text().contains("WASM instance"), "{}", log.text());
    assert_eq!(
        call(&host, "hello").await["result"],
        json!({"greeting": "hi"})
    );
    host.shutdown_all().await;
    let _ = std::fs::remove_dir_all(&d);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loops_memory_hogs_and_garbage_kill_the_instance_only() {
    let d = dir("limits");
    let g = guest(&d, "g.wasm");
    let (host, log) = host(
        &d,
        &[g],
        &[
            "g.wasm:fuel=5000000",
            "g.wasm:memory-mb=4",
            "g.wasm:max-failures=10",
        ],
    )
    .await;
    for (method, trace) in [
        ("spin", "ran out of fuel"),
        ("grow", "WASM instance"),
        ("garbage", "not JSON"),
        ("crash", "trapped"),
    ] {
        // The caller sees what a process plugin's death shows: the call ends unanswered.
        let r = call_may_die(&host, method).await;
        assert!(r.is_none(), "{method}: {r:?}");
        assert!(
            log.wait_for(trace).await,
            "{method}: no '{trace}' in the log"
        );
        // A fresh instance answers.
        assert_eq!(
            call(&host, "hello").await["result"],
            json!({"greeting": "hi"}),
            "after {method}"
        );
    }
    assert!(log.text().contains("WASM instance restarted"));
    // A hook call in flight when the instance dies ends as with a dead process plugin:
    // the chain goes on without it (here: to its end, `continue`) and names it.
    let (end, died) = htlc_noting_deaths(&host, "crash_now").await;
    assert!(matches!(end, ChainEnd::Default(_)), "{end:?}");
    assert_eq!(died, vec!["g.wasm".to_string()]);
    assert!(host.find("g.wasm").is_some_and(|p| p.is_active()));
    host.shutdown_all().await;
    let _ = std::fs::remove_dir_all(&d);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_loop_disables_the_plugin() {
    let d = dir("crashloop");
    let g = guest(&d, "g.wasm");
    let (host, log) = host(&d, &[g], &[]).await;
    let mut rx = host.watch_activations();
    rx.borrow_and_update();
    assert!(call_may_die(&host, "crash").await.is_none());
    // The restarted instance counts as a plugin becoming active again.
    assert!(log.wait_for("WASM instance restarted").await);
    assert!(rx.has_changed().unwrap_or(false));
    assert!(call_may_die(&host, "crash").await.is_none());
    assert!(call_may_die(&host, "crash").await.is_none());
    assert!(
        log.wait_for("disabled after 3 failures").await,
        "{}",
        log.text()
    );
    assert!(host.find("g.wasm").is_none());
    assert!(host.method_owner("hello").is_none());
    assert!(!host.has_hook(Hook::HtlcAccepted));
    host.shutdown_all().await;
    let _ = std::fs::remove_dir_all(&d);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_hook_call_ends_like_a_dead_process_plugin_when_the_instance_crashes() {
    let d = dir("heldcrash");
    let g = guest(&d, "g.wasm");
    let (host, log) = host(&d, &[g], &["g.wasm:hold=true"]).await;
    let mut rx = host.watch_activations();
    rx.borrow_and_update();
    // The guest holds this call (hold grant) and never answers it by itself.
    let h = host.clone();
    let held = tokio::spawn(async move { htlc_noting_deaths(&h, "hold_forever").await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!held.is_finished(), "the held call was answered");
    // Another call traps the instance: the held call ends as if its plugin had died (not
    // with the safe default `fail`), so the HTLC code keeps a payment only a plugin can
    // settle and offers it again once a plugin is active.
    assert!(call_may_die(&host, "crash").await.is_none());
    let (end, died) = tokio::time::timeout(Duration::from_secs(20), held)
        .await
        .unwrap_or_else(|_| panic!("held call never ended"))
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(matches!(end, ChainEnd::Default(_)), "{end:?}");
    assert_eq!(died, vec!["g.wasm".to_string()]);
    assert!(log.wait_for("WASM instance restarted").await);
    assert!(rx.has_changed().unwrap_or(false), "no activation noted");
    // The restarted instance takes the hook again.
    let end = htlc(&host, "answer_now").await;
    assert_eq!(answer(&end)["failure_message"], "400f");
    host.shutdown_all().await;
    let _ = std::fs::remove_dir_all(&d);
}

/// Not a test but a measurement (`cargo test --release -p fulgur-host --bin fulgurd
/// wasm_timings -- --ignored --nocapture`): an `htlc_accepted` round trip through the
/// registry into a WASM guest and back, and the cost of a fresh instance.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn wasm_timings() {
    let d = dir("timings");
    let g = guest(&d, "g.wasm");
    let (host, _log) = host(&d, std::slice::from_ref(&g), &[]).await;
    let mut samples = vec![];
    for _ in 0..2000 {
        let t = std::time::Instant::now();
        let end = htlc(&host, "answer_now").await;
        samples.push(t.elapsed());
        assert!(matches!(end, ChainEnd::Stopped { .. }));
    }
    samples.sort();
    let p = |q: usize| samples[samples.len() * q / 100];
    println!(
        "wasm htlc_accepted round trip: p50 {:?} p90 {:?} p99 {:?}",
        p(50),
        p(90),
        p(99)
    );
    let bytes = std::fs::read(&g).unwrap_or_else(|e| panic!("{e}"));
    let log = host.log.source("timing");
    let t = std::time::Instant::now();
    let image = super::runtime::compile_for_timing(&bytes, &log);
    println!("compile: {:?}", t.elapsed());
    let t = std::time::Instant::now();
    for _ in 0..100 {
        assert!(super::runtime::instantiate_for_timing(&image));
    }
    println!("instantiate: {:?} each", t.elapsed() / 100);
    host.shutdown_all().await;
    let _ = std::fs::remove_dir_all(&d);
}
