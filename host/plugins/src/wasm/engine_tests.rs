//! WASM plugins through the real registry: WAT guests (tests/wasm/wat_guest.rs) loaded
//! by `PluginHost`, hooks run with `PluginHost::hook`, failures provoked on purpose.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use fulgur_protocol::hooks::Hook;
use serde_json::{Value, json};

use super::SandboxRule;
use crate::hooks::ChainEnd;
use crate::{HostSettings, PluginHost};
use fulgur_base::log::{Level, Logger};

include!("../../../../tests/wasm/wat_guest.rs");

type Captured = fulgur_base::log::MemoryLog;

/// How long a test waits for a log line before it fails.
const LOG_WAIT: Duration = Duration::from_secs(30);

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
        // The guest registers `htlc_accepted`, which needs a grant; a test's own rules
        // come after this one and may take it back.
        wasm_sandbox: ["*:add-hooks=htlc_accepted"]
            .iter()
            .chain(rules)
            .map(|r| SandboxRule::parse(r).unwrap_or_else(|e| panic!("{e}")))
            .collect(),
        ..HostSettings::for_tests(dir)
    };
    let out = Captured::default();
    let log = Logger::at(Level::Debug, Box::new(out.clone()));
    let host = PluginHost::running_for_tests(log, settings, plugins).await;
    (host, out)
}

/// A test's directory and a host running the guest as `g.wasm` under `rules`.
async fn one_guest(tag: &str, rules: &[&str]) -> (PathBuf, Arc<PluginHost>, Captured) {
    let d = dir(tag);
    let g = guest(&d, "g.wasm");
    let (host, log) = host(&d, &[g], rules).await;
    (d, host, log)
}

/// The guest `g.wasm`, which must be registered.
fn g_plugin(host: &PluginHost) -> Arc<crate::Plugin> {
    host.find("g.wasm")
        .unwrap_or_else(|| panic!("g.wasm is not registered"))
}

/// Stops the host and removes the test's directory.
async fn finish(host: &PluginHost, d: &Path) {
    host.shutdown_all().await;
    let _ = std::fs::remove_dir_all(d);
}

/// The guest compiled with a manifest registering `hooks`, written as `name`.
fn guest_with_hooks(dir: &Path, name: &str, hooks: &[&str]) -> PathBuf {
    let bytes =
        wat::parse_str(guest_wat(&guest_manifest_with(hooks))).unwrap_or_else(|e| panic!("{e}"));
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap_or_else(|e| panic!("{e}"));
    p
}

async fn call(host: &PluginHost, method: &str) -> Value {
    call_may_die(host, method)
        .await
        .unwrap_or_else(|| panic!("plugin gone during {method}"))
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
        host.hook(Hook::HtlcAccepted, payload).run(),
    )
    .await
    .unwrap_or_else(|_| panic!("htlc_accepted timed out"))
}

async fn htlc_noting_deaths(host: &PluginHost, marker: &str) -> (ChainEnd, Vec<String>) {
    let payload = json!({"htlc": {"amount_msat": 1000, "note": marker}});
    tokio::time::timeout(
        Duration::from_secs(20),
        host.hook(Hook::HtlcAccepted, payload).run_noting_deaths(),
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
        crate::discovery::eligible(&g),
        "a module needs no execute bit"
    );
    let (host, log) = host(&d, &[g], &["g.wasm:hold=true"]).await;
    let p = g_plugin(&host);
    assert!(p.is_active() && p.sandbox.is_some());
    assert_eq!(
        call(&host, "hello").await["result"],
        json!({"greeting": "hi"})
    );

    host.notify("block_added", json!({"hash": "00", "height": 1}));
    assert!(log.wait_for("wasm guest: block_added seen", LOG_WAIT).await);

    // Answered within the call.
    let end = htlc(&host, "answer_now").await;
    assert_eq!(answer(&end)["failure_message"], "400f");
    // Held: answered from a later call (the timer the host offers).
    let start = std::time::Instant::now();
    let end = htlc(&host, "hold").await;
    assert_eq!(answer(&end)["result"], "resolve");
    assert!(start.elapsed() >= Duration::from_millis(100));
    finish(&host, &d).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn holding_needs_the_grant_and_rpc_needs_the_allow_list() {
    let (d, host, log) = one_guest("grants", &[]).await;
    // Without `hold`, an unanswered htlc_accepted gets the safe default at once.
    let end = htlc(&host, "hold").await;
    assert_eq!(answer(&end), Hook::HtlcAccepted.safe_default());
    assert!(log.wait_for("without the hold grant", LOG_WAIT).await);
    // `withdraw` is not on the default list: the guest gets an error message, no trap.
    assert_eq!(call(&host, "callrpc").await["result"], json!({}));
    assert!(log.wait_for("wasm guest: rpc denied", LOG_WAIT).await);
    assert!(!log.text().contains("WASM instance"), "{}", log.text());
    assert_eq!(
        call(&host, "hello").await["result"],
        json!({"greeting": "hi"})
    );
    finish(&host, &d).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loops_memory_hogs_and_garbage_kill_the_instance_only() {
    let (d, host, log) = one_guest(
        "limits",
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
            log.wait_for(trace, LOG_WAIT).await,
            "{method}: no '{trace}' in the log"
        );
        if method == "spin" {
            // A guest that burnt its fuel is no longer run on the callers' threads.
            assert!(log.wait_for("on the plugin's own thread", LOG_WAIT).await);
        }
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
    finish(&host, &d).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_loop_disables_the_plugin() {
    let (d, host, log) = one_guest("crashloop", &[]).await;
    let mut rx = host.watch_activations();
    rx.borrow_and_update();
    assert!(call_may_die(&host, "crash").await.is_none());
    // The restarted instance counts as a plugin becoming active again.
    assert!(log.wait_for("WASM instance restarted", LOG_WAIT).await);
    assert!(rx.has_changed().unwrap_or(false));
    assert!(call_may_die(&host, "crash").await.is_none());
    assert!(call_may_die(&host, "crash").await.is_none());
    assert!(
        log.wait_for("disabled after 3 failures", LOG_WAIT).await,
        "{}",
        log.text()
    );
    // The kill is logged before the plugin leaves the registry: wait for that too.
    let left = tokio::time::timeout(LOG_WAIT, async {
        while host.find("g.wasm").is_some() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    assert!(left.await.is_ok(), "still registered");
    assert!(host.method_owner("hello").is_none());
    assert!(!host.has_hook(Hook::HtlcAccepted));
    finish(&host, &d).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_hook_call_ends_like_a_dead_process_plugin_when_the_instance_crashes() {
    let (d, host, log) = one_guest("heldcrash", &["g.wasm:hold=true"]).await;
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
    assert!(log.wait_for("WASM instance restarted", LOG_WAIT).await);
    assert!(rx.has_changed().unwrap_or(false), "no activation noted");
    // The restarted instance takes the hook again.
    let end = htlc(&host, "answer_now").await;
    assert_eq!(answer(&end)["failure_message"], "400f");
    finish(&host, &d).await;
}

/// Resident set size of this process, bytes (Linux).
fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

/// `n` round trips of `htlc_accepted` through the registry: p50 and p99.
async fn hook_round_trips(host: &PluginHost, n: usize) -> (Duration, Duration) {
    // A forward above every minimum: every plugin measured answers at once (`continue` or
    // the WAT guest's `fail`), none holds it.
    let payload = json!({
        "onion": {"short_channel_id": "1x1x1", "forward_msat": 1_000_000, "payload": ""},
        "htlc": {"amount_msat": 1_000_000, "payment_hash": "00".repeat(32), "note": "answer_now"},
    });
    let mut samples = Vec::with_capacity(n);
    for i in 0..n + n / 10 {
        let t = std::time::Instant::now();
        let end = host.hook(Hook::HtlcAccepted, payload.clone()).run().await;
        let took = t.elapsed();
        assert!(matches!(
            end,
            ChainEnd::Stopped { .. } | ChainEnd::Default(_)
        ));
        // The first tenth warms up.
        if i >= n / 10 {
            samples.push(took);
        }
    }
    samples.sort();
    let at = |q: usize| samples[(samples.len() * q / 100).min(samples.len() - 1)];
    (at(50), at(99))
}

/// Not a test but a measurement, run in release by `cargo bench -p fulgur-tests --bench
/// wasm_hooks` (or `cargo test --release -p fulgur-host --bin fulgurd wasm_hook_bench --
/// --ignored --nocapture`): the `htlc_accepted` round trip through the registry into a
/// WASM guest (WAT, and the AssemblyScript guest when built), an SDK process plugin
/// (`htlc_gate` example) and a pyln-client plugin (`tests/py/plugins/pay_rules.py`, with
/// the repository's `.venv`); compile and instantiate time, and RSS per WASM instance.
/// Lines start with `BENCH` for the bench driver.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn wasm_hook_bench() {
    let n: usize = std::env::var("FULGUR_BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let profile = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    let d = dir("bench");
    let mut subjects: Vec<(&str, PathBuf)> = vec![("wasm-wat", guest(&d, "g.wasm"))];
    let asguest = repo.join("target/wasm/asguest.wasm");
    if asguest.is_file() {
        let p = d.join("asguest.wasm");
        std::fs::copy(&asguest, &p).unwrap_or_else(|e| panic!("{e}"));
        subjects.push(("wasm-assemblyscript", p));
    } else {
        println!("BENCH skip wasm-assemblyscript: run tests/wasm/build.sh first");
    }
    let gate = repo.join("target").join(profile).join("examples/htlc_gate");
    if gate.is_file() {
        subjects.push(("sdk-process", gate));
    } else {
        println!(
            "BENCH skip sdk-process: build it with cargo build --{profile} -p fulgur-plugin-sdk --examples"
        );
    }
    let python = repo.join(".venv/bin/python");
    if python.is_file() {
        let script = d.join("pyln_rules");
        let body = format!(
            "#!/bin/sh\nexec {} {}\n",
            python.display(),
            repo.join("tests/py/plugins/pay_rules.py").display()
        );
        std::fs::write(&script, body).unwrap_or_else(|e| panic!("{e}"));
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755))
                .unwrap_or_else(|e| panic!("{e}"));
        }
        subjects.push(("pyln-client", script));
    } else {
        println!("BENCH skip pyln-client: no .venv (tests/run-all makes it)");
    }
    for (label, path) in &subjects {
        let (host, _log) = host(&d, std::slice::from_ref(path), &[]).await;
        let (p50, p99) = hook_round_trips(&host, n).await;
        println!(
            "BENCH htlc_accepted round trip {label}: p50 {:.1} us, p99 {:.1} us ({n} calls)",
            p50.as_secs_f64() * 1e6,
            p99.as_secs_f64() * 1e6
        );
        host.shutdown_all().await;
    }

    // Compile and instantiate cost, and memory per live instance (WAT guest).
    let g = d.join("g.wasm");
    let bytes = std::fs::read(&g).unwrap_or_else(|e| panic!("{e}"));
    let (host0, _log) = host(&d, &[], &[]).await;
    let log = host0.log.source("timing");
    let t = std::time::Instant::now();
    let image = super::runtime::compile_for_timing(&bytes, &log);
    println!("BENCH wasm compile (WAT guest): {:?}", t.elapsed());
    let t = std::time::Instant::now();
    for _ in 0..100 {
        assert!(super::runtime::instantiate_for_timing(&image));
    }
    println!(
        "BENCH wasm instantiate (WAT guest): {:.1} us each",
        t.elapsed().as_secs_f64() * 1e6 / 100.0
    );
    for (label, src) in [("wasm-wat", g.clone()), ("wasm-assemblyscript", asguest)] {
        if !src.is_file() {
            continue;
        }
        let many = d.join(format!("many-{label}"));
        let _ = std::fs::create_dir_all(&many);
        let copies: Vec<PathBuf> = (0..20)
            .map(|i| {
                let p = many.join(format!("m{i}.wasm"));
                std::fs::copy(&src, &p).unwrap_or_else(|e| panic!("{e}"));
                p
            })
            .collect();
        let before = rss_bytes();
        let (host20, _log) = host(&many, &copies, &[]).await;
        let after = rss_bytes();
        println!(
            "BENCH wasm RSS per plugin ({label}, 20 loaded and active): {:.0} KiB",
            after.saturating_sub(before) as f64 / 20.0 / 1024.0
        );
        host20.shutdown_all().await;
    }
    host0.shutdown_all().await;
    let _ = std::fs::remove_dir_all(&d);
}

/// Calls `method` of the guest and returns the whole response, `None` if the call ended as
/// a plugin's death does.
async fn call_plugin(p: &crate::Plugin, method: &str) -> Option<Value> {
    tokio::time::timeout(Duration::from_secs(60), p.request(method, &json!({}), None))
        .await
        .unwrap_or_else(|_| panic!("{method} timed out"))
        .ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_registers_only_the_hooks_its_grant_allows() {
    let d = dir("hookgrant");
    // rpc_command under the default grant: refused, the node goes on without the plugin.
    let r = guest_with_hooks(&d, "r.wasm", &["rpc_command"]);
    // htlc_accepted with the grant taken back.
    let g = guest(&d, "g.wasm");
    let (host, log) = host(&d, &[r, g], &["g.wasm:hooks=custommsg"]).await;
    assert!(host.find("r.wasm").is_none() && host.find("g.wasm").is_none());
    assert!(log.text().contains("may not register hook rpc_command"));
    assert!(log.text().contains("may not register hook htlc_accepted"));
    assert!(!host.has_hook(Hook::RpcCommand) && !host.has_hook(Hook::HtlcAccepted));
    finish(&host, &d).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_granted_rpc_command_may_replace_only_by_an_allowed_method_and_is_logged() {
    let d = dir("replace");
    let r = guest_with_hooks(&d, "r.wasm", &["rpc_command"]);
    let (host, log) = host(&d, &[r], &["r.wasm:add-hooks=rpc_command"]).await;
    let run = |method: &str| {
        let payload =
            json!({"rpc_command": {"jsonrpc": "2.0", "id": 1, "method": method, "params": {}}});
        let filter = Value::from(method);
        let host = host.clone();
        async move {
            tokio::time::timeout(
                Duration::from_secs(20),
                host.hook(Hook::RpcCommand, payload).filter(&filter).run(),
            )
            .await
            .unwrap_or_else(|_| panic!("rpc_command timed out"))
        }
    };
    // getinfo → withdraw of everything: withdraw is not in its allow-list.
    let a = answer(&run("getinfo").await);
    assert!(a.get("replace").is_none(), "{a}");
    assert_eq!(a["return"]["error"]["code"], -32600, "{a}");
    assert!(
        log.wait_for("refused to replace a call of getinfo by withdraw", LOG_WAIT)
            .await
    );
    // listpeers → listfunds: allowed, and logged.
    let a = answer(&run("listpeers").await);
    assert_eq!(a["replace"]["method"], "listfunds", "{a}");
    assert!(
        log.wait_for("replaced a call of listpeers by listfunds", LOG_WAIT)
            .await
    );
    finish(&host, &d).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_calls_are_bounded_random_get_and_fd_write() {
    let (d, host, log) = one_guest("hostcalls", &[]).await;
    let p = g_plugin(&host);
    // 256 MiB of randomness: refused (EINVAL) before anything is allocated.
    let r = call_plugin(&p, "bigrandom")
        .await
        .unwrap_or_else(|| panic!("died"));
    assert_eq!(r["result"]["errno"], 28, "{r}");
    // Eight iovecs over one 16 MiB region: over the per-call log budget (ENOSPC), nothing
    // is logged, the guest lives on.
    let r = call_plugin(&p, "bigwrite")
        .await
        .unwrap_or_else(|| panic!("died"));
    assert_eq!(r["result"]["errno"], 51, "{r}");
    assert_eq!(
        call_plugin(&p, "hello").await.map(|r| r["result"].clone()),
        Some(json!({"greeting": "hi"}))
    );
    assert!(!log.text().contains("WASM instance"));
    finish(&host, &d).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timers_per_guest_are_bounded() {
    let (d, host, log) = one_guest("timers", &[]).await;
    let p = g_plugin(&host);
    assert!(call_plugin(&p, "timers").await.is_some());
    // 100 asked, 64 granted: the rest are refused with an error the guest sees.
    assert!(log.wait_for("wasm guest: timer refused", LOG_WAIT).await);
    let refused = log.text().matches("wasm guest: timer refused").count();
    assert!(refused <= 100 - super::runtime::MAX_TIMERS, "{refused}");
    finish(&host, &d).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_busy_in_host_calls_is_cut_off_by_the_wall_clock() {
    // Fuel enough for hours: only the wall clock can end the call.
    let (d, host, log) = one_guest(
        "wall",
        &["g.wasm:fuel=100000000000000", "g.wasm:wall-ms=200"],
    )
    .await;
    let p = g_plugin(&host);
    assert!(call_plugin(&p, "busy").await.is_none());
    assert!(
        log.wait_for("ran past its wall-clock limit (200 ms per call)", LOG_WAIT)
            .await
    );
    assert!(log.wait_for("WASM instance restarted", LOG_WAIT).await);
    finish(&host, &d).await;
}

/// One worker thread: a guest call run on it (the inline fast path) would leave no thread
/// for anything else. The other task completes while the guest is still busy, and the busy
/// call ends only when the plugin is stopped.
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn a_busy_guest_does_not_hold_up_the_nodes_other_work() {
    let (d, host, log) = one_guest(
        "busy",
        &["g.wasm:fuel=100000000000000", "g.wasm:wall-ms=3600000"],
    )
    .await;
    let p = g_plugin(&host);
    let busy = {
        let p = p.clone();
        tokio::spawn(async move { p.request("busy", &json!({}), None).await.is_ok() })
    };
    assert!(log.wait_for("wasm guest: busy", LOG_WAIT).await);
    // Other work on the runtime (a task of its own, a timer) goes on.
    let other = tokio::spawn(async {
        tokio::time::sleep(Duration::from_millis(1)).await;
        42
    });
    let got = tokio::time::timeout(Duration::from_secs(60), other).await;
    assert!(
        matches!(got, Ok(Ok(42))),
        "the runtime was held up: {got:?}"
    );
    assert!(!busy.is_finished(), "the guest was not busy any more");
    // Stopping the plugin ends the busy call at the next tick.
    host.stop_plugin(&p).await;
    let ended = tokio::time::timeout(Duration::from_secs(60), busy).await;
    assert!(matches!(ended, Ok(Ok(false))), "{ended:?}");
    assert!(log.wait_for("stopped while busy", LOG_WAIT).await);
    finish(&host, &d).await;
}

#[test]
fn listconfigs_and_listdatastore_show_a_guest_no_secrets_and_no_foreign_keys() {
    use super::runtime::{check_datastore_write, datastore_namespace, redact};
    let mut configs = json!({"result": {"configs": {
        "bitcoin-rpcpassword": {"value_str": "hunter2", "source": "cmdline"},
        "bitcoin-rpcuser": {"value_str": "me", "source": "cmdline"},
        "network": {"value_str": "regtest", "source": "cmdline"},
        "mine-opt": {"value_str": "a", "plugin": "/p/g.wasm"},
        "other-api-key": {"value_str": "b", "plugin": "/p/other.py"},
    }}});
    redact("listconfigs", "g", "/p/g.wasm", &mut configs);
    let mut names: Vec<&String> = configs["result"]["configs"]
        .as_object()
        .map(|o| o.keys().collect())
        .unwrap_or_default();
    names.sort();
    assert_eq!(names, vec!["mine-opt", "network"]);
    let mut ds = json!({"result": {"datastore": [
        {"key": ["other", "othersecret"], "string": "x"},
        {"key": ["g", "mine"], "string": "y"},
    ]}});
    redact("listdatastore", "g", "/p/g.wasm", &mut ds);
    assert_eq!(
        ds["result"]["datastore"],
        json!([{"key": ["g", "mine"], "string": "y"}])
    );
    assert_eq!(datastore_namespace("g.wasm"), "g");
    let ok = json!({"key": ["g", "k"], "string": "v"});
    let foreign = json!({"key": ["other", "k"], "string": "v"});
    assert!(check_datastore_write("datastore", Some(&ok), "g").is_ok());
    assert!(check_datastore_write("datastore", Some(&foreign), "g").is_err());
    assert!(check_datastore_write("deldatastore", Some(&json!(["other"])), "g").is_err());
    assert!(check_datastore_write("deldatastore", Some(&json!({"key": "g"})), "g").is_ok());
    assert!(check_datastore_write("listdatastore", Some(&foreign), "g").is_ok());
}
