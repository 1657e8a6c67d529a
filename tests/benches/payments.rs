//! Payment benchmark: real `fulgurd` processes (release build) on devchain, real channels,
//! the real RPC socket. Run with `cargo bench -p fulgur-tests --bench payments` (it builds
//! the release binaries first unless `FULGUR_BENCH_SKIP_BUILD=1`).
//!
//! Network: A–B, B–C and A–D channels; D runs the SDK example `htlc_gate` (an
//! `htlc_accepted` hook that continues). Invoices are made before timing; a payment is timed
//! from `sendpay` to `waitsendpay` returning `complete`, on the route `getroute` gave once.
//! 1. sequential A→B (p50, p99, payments/s);
//! 2. sequential A→B→C;
//! 3. 16 payments in flight A→B (16 threads, payments/s);
//! 4. A→B and A→D in turn (D has a Rust plugin's hook in the path): the p50 difference,
//!    taken in the same minutes so that the machine's noise cancels out;
//! 5. idle RSS of C (one channel) after the payments;
//! 6. start-up of C to RPC ready on its existing database;
//! 7. sequential `keysend` A→B (LDK's spontaneous payment, its own route);
//! 8. sequential `xpay` A→B→C (the pay plugin's planner, one call per invoice);
//! 9. `xpay` split over two parallel channels A═E (1 M sat each, half of each on either side,
//!    0.7 M sat a payment, so every payment needs both); E pays each back in two halves, one
//!    per channel, untimed, so every payment must split again.
//!
//! Figures and how to read them: `docs/PERFORMANCE.md`.

use std::process::{Command, ExitCode};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fulgur_tests::ln::{LnNode, fund_wallet, open_channel, open_channel_push, wait_gossip};
use fulgur_tests::{
    Bitcoind, arg, children_cpu_ticks, cpu_ticks, example, percentile, rss_kib, steal_ticks,
    wait_for,
};
use serde_json::{Value, json};

const SEQUENTIAL: usize = 300;
const PARALLEL: usize = 16;
const PER_THREAD: usize = 40;
const AMOUNT: u64 = 10_000;
/// `xpay` payments A→B→C (each plans a route in the plugin).
const XPAYS: usize = 100;
/// Split payments A→E (each paid back, untimed).
const MPP_PAYMENTS: usize = 40;

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

/// The `--wallet` of node `tag`: with `FULGUR_BENCH_PG=postgres://user:pw@host:port` (a
/// server such as `python3 tests/py/pgserver.py` starts), a fresh PostgreSQL database made
/// with `psql`; otherwise none (SQLite in the node's directory).
fn wallet(tag: &str) -> Vec<String> {
    let Ok(base) = std::env::var("FULGUR_BENCH_PG") else {
        return vec![];
    };
    let db = format!("bench_{tag}_{}", std::process::id());
    let st = std::process::Command::new("psql")
        .args([
            "-d",
            &format!("{base}/postgres"),
            "-qc",
            &format!("CREATE DATABASE {db}"),
        ])
        .status()
        .unwrap_or_else(|e| panic!("psql: {e}"));
    assert!(st.success(), "CREATE DATABASE {db} failed");
    vec![format!("--wallet={base}/{db}")]
}

/// Bolt11 invoices from `payee`, made before timing: (payment_hash, payment_secret).
fn invoices(payee: &LnNode, tag: &str, n: usize) -> Vec<(String, String)> {
    (0..n)
        .map(|i| {
            let inv = payee.ok(
                "invoice",
                json!({"amount_msat": AMOUNT, "label": format!("{tag}-{i}"), "description": "bench"}),
            );
            (
                inv["payment_hash"].as_str().unwrap_or_default().to_string(),
                inv["payment_secret"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

/// One payment on `route`: sendpay + waitsendpay; its duration.
fn pay(payer: &LnNode, route: &Value, hash: &str, secret: &str) -> Result<Duration, String> {
    let t = Instant::now();
    payer
        .call(
            "sendpay",
            json!({"route": route, "payment_hash": hash, "payment_secret": secret, "amount_msat": AMOUNT}),
        )
        .map_err(|e| format!("sendpay: {e}"))?;
    let done = payer
        .call("waitsendpay", json!({"payment_hash": hash, "timeout": 60}))
        .map_err(|e| format!("waitsendpay: {e}"))?;
    if done["status"] != "complete" {
        return Err(format!("payment not complete: {done}"));
    }
    Ok(t.elapsed())
}

fn sequential(
    name: &str,
    payer: &LnNode,
    payee: &LnNode,
    route: &Value,
) -> Result<Duration, String> {
    let invs = invoices(payee, name, SEQUENTIAL);
    let steal = steal_ticks();
    let start = Instant::now();
    let mut times = Vec::with_capacity(invs.len());
    for (h, s) in &invs {
        times.push(pay(payer, route, h, s)?);
    }
    let total = start.elapsed();
    if let Ok(f) = std::env::var("FULGUR_BENCH_DUMP") {
        let lines: Vec<String> = times
            .iter()
            .map(|t| format!("{:.2}", t.as_secs_f64() * 1e3))
            .collect();
        let _ = std::fs::write(format!("{f}-{}", name.len()), lines.join("\n"));
    }
    times.sort();
    let p50 = percentile(&times, 0.5);
    println!(
        "{name:<34} {:>5} payments  p50 {:>9}  p99 {:>9}  {:>7.1} payments/s  (host steal {})",
        times.len(),
        ms(p50),
        ms(percentile(&times, 0.99)),
        times.len() as f64 / total.as_secs_f64(),
        steal_since(steal)
    );
    Ok(p50)
}

/// A→B and A→D payments taken in turn (one each, alternately), so that both see the same
/// moments of a noisy machine: their p50 difference is the hook's cost, not the noise
/// between two phases. Returns (A→B p50, A→D p50).
fn paired(
    payer: &LnNode,
    plain: (&LnNode, &Value),
    hooked: (&LnNode, &Value),
) -> Result<(Duration, Duration), String> {
    let plain_invs = invoices(plain.0, "pair-plain", SEQUENTIAL);
    let hooked_invs = invoices(hooked.0, "pair-hooked", SEQUENTIAL);
    let (mut p, mut h) = (Vec::new(), Vec::new());
    for ((ph, ps), (hh, hs)) in plain_invs.iter().zip(&hooked_invs) {
        p.push(pay(payer, plain.1, ph, ps)?);
        h.push(pay(payer, hooked.1, hh, hs)?);
    }
    p.sort();
    h.sort();
    Ok((percentile(&p, 0.5), percentile(&h, 0.5)))
}

/// Rows 7 to 9: `n` payments by one command each (`keysend`, `xpay`); `one` makes payment
/// `i` and returns how long its command took (row 9 then pays back, untimed).
fn by_command(
    name: &str,
    n: usize,
    mut one: impl FnMut(usize) -> Result<Duration, String>,
) -> Result<Duration, String> {
    let mut times = Vec::with_capacity(n);
    for i in 0..n {
        times.push(one(i)?);
    }
    let total: Duration = times.iter().sum();
    times.sort();
    let p50 = percentile(&times, 0.5);
    println!(
        "{name:<34} {:>5} payments  p50 {:>9}  p99 {:>9}  {:>7.1} payments/s",
        times.len(),
        ms(p50),
        ms(percentile(&times, 0.99)),
        times.len() as f64 / total.as_secs_f64(),
    );
    Ok(p50)
}

/// How long `f` took, with its outcome.
fn timed<T>(f: impl FnOnce() -> Result<T, String>) -> Result<(Duration, T), String> {
    let t = Instant::now();
    let v = f()?;
    Ok((t.elapsed(), v))
}

/// A fresh invoice of `payee` for `msat` (made before the payment is timed).
fn invoice(payee: &LnNode, label: String, msat: u64) -> Value {
    payee.ok(
        "invoice",
        json!({"amount_msat": msat, "label": label, "description": "bench"}),
    )
}

/// `xpay` of `inv`; an error unless it completed.
fn xpay(payer: &LnNode, inv: &Value) -> Result<Value, String> {
    payer
        .call("xpay", json!({"invstring": inv["bolt11"]}))
        .map_err(|e| format!("xpay: {e}"))
}

fn route(payer: &LnNode, payee: &LnNode) -> Value {
    payer.ok(
        "getroute",
        json!({"id": payee.id, "amount_msat": AMOUNT, "riskfactor": 1, "cltv": 42}),
    )["route"]
        .clone()
}

fn run() -> Result<(), String> {
    let chain = Bitcoind::start("bench-payments");
    let gate = arg("plugin", example("htlc_gate").display());
    let a = LnNode::start("bench-a", &chain, &wallet("a"));
    let b = LnNode::start("bench-b", &chain, &wallet("b"));
    let mut c = LnNode::start("bench-c", &chain, &wallet("c"));
    let d = LnNode::start(
        "bench-d",
        &chain,
        &[&wallet("d")[..], std::slice::from_ref(&gate)].concat(),
    );
    let e = LnNode::start("bench-e", &chain, &wallet("e"));
    fund_wallet(&chain, &a, 5.0);
    fund_wallet(&chain, &b, 5.0);
    // C and D hold the emergency reserve, so every channel is an anchor channel (an
    // acceptor without it takes static_remote_key ones).
    fund_wallet(&chain, &c, 0.001);
    fund_wallet(&chain, &d, 0.001);
    fund_wallet(&chain, &e, 0.001);
    open_channel(&chain, &a, &b, 10_000_000, &[&c, &d, &e]);
    let bc = open_channel(&chain, &b, &c, 10_000_000, &[&a, &d, &e]);
    open_channel(&chain, &a, &d, 10_000_000, &[&b, &c, &e]);
    // Two parallel channels A═E, half of each pushed to E so both directions can pay.
    let ae1 = open_channel_push(&chain, &a, &e, 1_000_000, 500_000_000, &[&b, &c, &d]);
    let ae2 = open_channel_push(&chain, &a, &e, 1_000_000, 500_000_000, &[&b, &c, &d]);
    wait_gossip(&a, &bc);
    wait_gossip(&e, &ae1);
    wait_gossip(&e, &ae2);

    let ab = route(&a, &b);
    let abc = route(&a, &c);
    let ad = route(&a, &d);
    sequential("A→B sendpay+waitsendpay", &a, &b, &ab)?;
    sequential("A→B→C sendpay+waitsendpay", &a, &c, &abc)?;
    by_command("A→B keysend", SEQUENTIAL, |_| {
        let (took, r) = timed(|| {
            a.call(
                "keysend",
                json!({"destination": b.id, "amount_msat": AMOUNT}),
            )
            .map_err(|e| format!("keysend: {e}"))
        })?;
        (r["status"] == "complete")
            .then_some(took)
            .ok_or_else(|| format!("keysend not complete: {r}"))
    })?;
    by_command("A→B→C xpay", XPAYS, |i| {
        let inv = invoice(&c, format!("xpay-{i}"), AMOUNT);
        timed(|| xpay(&a, &inv)).map(|(t, _)| t)
    })?;
    // E gives each payment back in two halves, one per channel (sendpay on a route through
    // that channel), so A's side of both channels is below the amount again: every timed
    // payment must split.
    let back = route(&e, &a);
    by_command("A═E xpay 0.7 M sat over 2 channels", MPP_PAYMENTS, |i| {
        let inv = invoice(&e, format!("mpp-{i}"), 700_000_000);
        let (took, r) = timed(|| xpay(&a, &inv))?;
        if r["successful_parts"].as_u64() < Some(2) {
            return Err(format!("not split over both channels: {r}"));
        }
        for (k, scid) in [&ae1, &ae2].into_iter().enumerate() {
            let inv = a.ok(
                "invoice",
                json!({"amount_msat": 350_000_000u64, "label": format!("back-{i}-{k}"), "description": "back"}),
            );
            let mut hop = back[0].clone();
            hop["channel"] = json!(scid);
            hop["amount_msat"] = json!(350_000_000u64);
            e.call(
                "sendpay",
                json!({"route": [hop], "payment_hash": inv["payment_hash"],
                       "payment_secret": inv["payment_secret"], "amount_msat": 350_000_000u64}),
            )
            .map_err(|err| format!("sendpay back: {err}"))?;
            e.call(
                "waitsendpay",
                json!({"payment_hash": inv["payment_hash"], "timeout": 60}),
            )
            .map_err(|err| format!("waitsendpay back: {err}"))?;
        }
        Ok(took)
    })?;
    let (direct, hooked) = paired(&a, (&b, &ab), (&d, &ad))?;
    println!(
        "{:<34} {:>5} pairs     A→B p50 {:>9}  A→D p50 {:>9}",
        "A→B / A→D (SDK hook) in turn",
        SEQUENTIAL,
        ms(direct),
        ms(hooked)
    );
    let cost = hooked.as_secs_f64() - direct.as_secs_f64();
    println!(
        "{:<34} p50 difference {:+.2} ms",
        "htlc_accepted hook cost",
        cost * 1000.0
    );

    // 16 in flight (`FULGUR_BENCH_PER_THREAD` payments per thread, to profile a longer run).
    let per_thread = std::env::var("FULGUR_BENCH_PER_THREAD")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(PER_THREAD);
    let invs = invoices(&b, "par", PARALLEL * per_thread);
    // Whose CPU time to count: a process, or the plugins a node started.
    enum Who {
        Process(Option<u32>),
        Plugins(Option<u32>),
    }
    let who = [
        ("client", Who::Process(Some(std::process::id()))),
        ("A", Who::Process(a.pid())),
        ("A's plugins", Who::Plugins(a.pid())),
        ("B", Who::Process(b.pid())),
        ("B's plugins", Who::Plugins(b.pid())),
        ("devchain", Who::Process(chain.pid())),
    ];
    let cpu = |w: &Who| match *w {
        Who::Process(p) => p.and_then(cpu_ticks).map_or(0, |(t, _)| t),
        Who::Plugins(p) => p.map_or(0, children_cpu_ticks),
    };
    let before: Vec<u64> = who.iter().map(|(_, w)| cpu(w)).collect();
    let steal_before = steal_ticks();
    // A mark for profilers (`perf record -p <A>` from here on).
    eprintln!(
        "{PARALLEL} in flight: starting (A pid {:?}, B pid {:?})",
        a.pid(),
        b.pid()
    );
    let a = Arc::new(a);
    let ab = Arc::new(ab);
    let start = Instant::now();
    let handles: Vec<_> = invs
        .chunks(per_thread)
        .map(|chunk| {
            let chunk = chunk.to_vec();
            let (a, ab) = (a.clone(), ab.clone());
            std::thread::spawn(move || -> Result<usize, String> {
                for (h, s) in &chunk {
                    pay(&a, &ab, h, s)?;
                }
                Ok(chunk.len())
            })
        })
        .collect();
    let mut done = 0;
    for h in handles {
        done += h
            .join()
            .map_err(|_| "payment thread panicked".to_string())??;
    }
    let total = start.elapsed();
    println!(
        "{:<34} {done:>5} payments  {:>7.1} payments/s",
        format!("A→B {PARALLEL} in flight"),
        done as f64 / total.as_secs_f64()
    );
    // Where the two cores went during that phase: CPU ms per payment for each process,
    // and how busy the machine was (C and D, idle here, are left out).
    let tck = clock_ticks_per_second();
    let mut busy = 0.0;
    let mut parts = Vec::new();
    for ((name, w), b0) in who.iter().zip(&before) {
        let ms = (cpu(w).saturating_sub(*b0)) as f64 * 1000.0 / tck;
        busy += ms;
        parts.push(format!("{name} {:.2}", ms / done.max(1) as f64));
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    let steal = steal_since(steal_before);
    println!(
        "{:<34} {} ms/payment; {:.0} % of {cores} cores busy, host steal {steal}",
        "  CPU per payment",
        parts.join(", "),
        busy / (total.as_secs_f64() * 1000.0 * cores) * 100.0
    );

    std::thread::sleep(Duration::from_secs(3));
    if let Some(kib) = c.pid().and_then(rss_kib) {
        println!(
            "{:<34} {:.1} MiB",
            "idle fulgurd RSS (C, one channel)",
            kib as f64 / 1024.0
        );
    }
    let args = c.args.clone();
    c.shutdown();
    let t = Instant::now();
    c.start_again(&args);
    let ready = t.elapsed();
    wait_for(Duration::from_secs(10), || {
        c.call("getinfo", json!({})).ok()
    })
    .ok_or("C does not answer after restart")?;
    println!(
        "{:<34} {}",
        "start-up to RPC ready (existing db)",
        ms(ready)
    );
    Ok(())
}

/// On a VM, the share of the CPUs its host took away since `before` ("st" in vmstat): a
/// slow run with a high steal says the machine, not fulgurd, was slow.
fn steal_since(before: Option<(u64, u64)>) -> String {
    match (before, steal_ticks()) {
        (Some((s0, t0)), Some((s1, t1))) if t1 > t0 => {
            format!("{:.0} %", (s1 - s0) as f64 * 100.0 / (t1 - t0) as f64)
        }
        _ => "unknown".into(),
    }
}

/// `getconf CLK_TCK` (the unit of `/proc/<pid>/stat`'s CPU times); 100 if it cannot be read.
fn clock_ticks_per_second() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok()?.trim().parse().ok())
        .unwrap_or(100.0)
}

fn main() -> ExitCode {
    if let Err(e) = fulgur_tests::build_release(&[
        "-p",
        "fulgur-host",
        "-p",
        "devchain",
        "-p",
        "fulgur-plugin-sdk",
        "-p",
        "fulgur-plugin-pay",
        "--bins",
        "--examples",
    ]) {
        eprintln!("release build failed: {e}");
        return ExitCode::FAILURE;
    }
    fulgur_tests::use_release_quietly();
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("benchmark failed: {e}");
            ExitCode::FAILURE
        }
    }
}
