//! Benchmark of the built-in `pay` and `htlc-hold` plugins on real fulgurd processes
//! (release build) on devchain. Run with `cargo bench -p fulgur-tests --bench pay` (it
//! builds the release binaries first unless `FULGUR_BENCH_SKIP_BUILD=1`).
//!
//! 1. **Success rate**: a generated network of `FULGUR_BENCH_NODES` (default 20) nodes, a
//!    ring plus one random chord per node, random capacities (0.2–2 M sat) and random
//!    balances (0–80 % pushed to the other side), seeded (`FULGUR_BENCH_SEED`, default 1).
//!    For payments of increasing size, 20 `pay` calls each (`FULGUR_BENCH_PER_SIZE`) between random pairs: success
//!    rate, mean attempts (parts `sendpay` tried, from the payer's `listsendpays`), mean
//!    parts of the successful ones, and p50 duration. Payments move liquidity as they would.
//! 2. **Latency**: `pay` over two hops (A→B→C, ample liquidity), 200 in a row: p50 / p99.
//! 3. **Holds**: a merchant with `HOLDS` (400) hold invoices paid at once by two payers over
//!    two channels and all held: time for each to become ACCEPTED (first and last hundred:
//!    the hook must not slow down as holds pile up), RSS of fulgurd and of the htlc-hold
//!    plugin before and after (memory per held HTLC), then the time to settle them all.
//!
//! Figures and how to read them: `docs/PERFORMANCE.md`.

use std::collections::HashSet;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bitcoin_hashes::{Hash, sha256};
use fulgur_tests::ln::{LnNode, T, fund_wallet, mine_sync, open_channel, wait_gossip};
use fulgur_tests::{Bitcoind, RpcConn, percentile, rss_kib, wait_for};
use serde_json::{Value, json};

const SIZES_SAT: [u64; 7] = [1_000, 10_000, 50_000, 100_000, 250_000, 500_000, 1_000_000];
/// Payments per size (`FULGUR_BENCH_PER_SIZE` overrides).
const PER_SIZE: usize = 20;
const LATENCY_RUNS: usize = 200;
const HOLDS: usize = 400;

/// xorshift64*: a small seeded generator, so a run can be repeated exactly.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

/// The pid of `parent`'s child process whose command line contains `name`.
fn child_pid(parent: u32, name: &str) -> Option<u32> {
    for e in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        let cmd = std::fs::read_to_string(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if ppid == Some(parent) && cmd.contains(name) {
            return Some(pid);
        }
    }
    None
}

/// A merchant's secret for one order: (preimage, payment hash) as hex.
fn secret(rng: &mut Rng) -> (String, String) {
    let bytes: Vec<u8> = (0..4).flat_map(|_| rng.next().to_le_bytes()).collect();
    let hash = sha256::Hash::hash(&bytes).to_byte_array();
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    (hex(&bytes), hex(&hash))
}

/// Sends `btc` to `n` as `outputs` separate outputs (so it can fund several channels in one
/// block), confirmed.
fn fund_outputs(chain: &Bitcoind, n: &LnNode, outputs: usize, btc: f64) {
    for _ in 0..outputs {
        let addr = n.ok("newaddr", json!({"addresstype": "bech32"}))["bech32"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        chain.ok("sendtoaddress", json!([addr, btc]));
    }
}

fn success_rates(chain: &Bitcoind, seed: u64, count: usize) -> Result<(), String> {
    let mut rng = Rng(seed.max(1));
    let per_size = std::env::var("FULGUR_BENCH_PER_SIZE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(PER_SIZE)
        .max(1);
    println!("-- success rate: {count} nodes, seed {seed}");
    let nodes: Vec<LnNode> = (0..count)
        .map(|i| LnNode::start(&format!("bench-net{i}"), chain, &[]))
        .collect();
    for n in &nodes {
        fund_outputs(chain, n, 3, 0.25);
    }
    let all: Vec<&LnNode> = nodes.iter().collect();
    mine_sync(chain, 1, &all);
    for n in &nodes {
        wait_for(T, || {
            let f = n.ok("listfunds", json!({}));
            (f["outputs"].as_array()?.len() >= 3).then_some(())
        })
        .ok_or("deposits not seen")?;
    }
    let mut pairs: HashSet<(usize, usize)> = HashSet::new();
    for i in 0..count {
        pairs.insert((i, (i + 1) % count));
        loop {
            let j = rng.below(count as u64) as usize;
            if j != i && !pairs.contains(&(i, j)) && !pairs.contains(&(j, i)) {
                pairs.insert((i, j));
                break;
            }
        }
    }
    let mut pairs: Vec<(usize, usize)> = pairs.into_iter().collect();
    pairs.sort();
    let mut capacity = 0u64;
    for &(a, b) in &pairs {
        let sat = 200_000 + rng.below(1_800_000);
        let push = sat * 1000 * rng.below(81) / 100;
        capacity += sat;
        nodes[a].connect(&nodes[b]);
        nodes[a]
            .call(
                "fundchannel",
                json!({"id": nodes[b].id, "amount": sat, "push_msat": push}),
            )
            .map_err(|e| format!("fundchannel {a}->{b}: {e}"))?;
    }
    wait_for(T, || {
        let pool = chain.ok("getrawmempool", json!([]));
        (pool.as_array()?.len() >= pairs.len()).then_some(())
    })
    .ok_or("funding transactions missing from the mempool")?;
    mine_sync(chain, 6, &all);
    let want = pairs.len() * 2;
    for n in &nodes {
        let known = wait_for(Duration::from_secs(300), || {
            let r = n.ok("listchannels", json!({}));
            (r["channels"].as_array()?.len() >= want).then_some(())
        });
        if known.is_none() {
            return Err(format!(
                "{}'s gossip never knew all {want} channel directions",
                n.id
            ));
        }
    }
    println!(
        "{} channels, {} sat in all; gossip converged",
        pairs.len(),
        capacity
    );
    println!(
        "{:>12} {:>9} {:>14} {:>11} {:>10}",
        "amount", "success", "mean attempts", "mean parts", "p50"
    );
    for sat in SIZES_SAT {
        let (mut ok, mut attempts, mut parts) = (0usize, 0usize, 0usize);
        let mut times = vec![];
        for k in 0..per_size {
            let payer = rng.below(count as u64) as usize;
            let mut payee = rng.below(count as u64) as usize;
            if payee == payer {
                payee = (payee + 1) % count;
            }
            let inv = nodes[payee].ok(
                "invoice",
                json!({"amount_msat": sat * 1000, "label": format!("rate-{sat}-{k}"), "description": "bench"}),
            );
            let t = Instant::now();
            // A payment whose last parts wait at the payee for the rest of the set only ends
            // when the payee's multi-part timeout fails them: allow minutes.
            let mut conn = RpcConn::connect(&nodes[payer].socket());
            conn.set_timeout(Duration::from_secs(600));
            let r = conn.call(
                "pay",
                json!({"bolt11": inv["bolt11"], "retry_for": 30, "maxfeepercent": 2.0}),
            );
            times.push(t.elapsed());
            if let Ok(v) = &r {
                ok += 1;
                parts += v["parts"].as_u64().unwrap_or(1) as usize;
            }
            let tried =
                nodes[payer].ok("listsendpays", json!({"payment_hash": inv["payment_hash"]}));
            attempts += tried["payments"].as_array().map(Vec::len).unwrap_or(0);
        }
        times.sort();
        println!(
            "{:>8} sat {:>8.0}% {:>14.2} {:>11.2} {:>10}",
            sat,
            100.0 * ok as f64 / per_size as f64,
            attempts as f64 / per_size as f64,
            if ok > 0 {
                parts as f64 / ok as f64
            } else {
                0.0
            },
            ms(percentile(&times, 0.5))
        );
    }
    Ok(())
}

fn latency(chain: &Bitcoind) -> Result<(), String> {
    let a = LnNode::start("bench-lat-a", chain, &[]);
    let b = LnNode::start("bench-lat-b", chain, &[]);
    let c = LnNode::start("bench-lat-c", chain, &[]);
    fund_wallet(chain, &a, 2.0);
    fund_wallet(chain, &b, 2.0);
    open_channel(chain, &a, &b, 10_000_000, &[&c]);
    let bc = open_channel(chain, &b, &c, 10_000_000, &[&a]);
    wait_gossip(&a, &bc);
    let invs: Vec<Value> = (0..LATENCY_RUNS)
        .map(|i| {
            c.ok(
                "invoice",
                json!({"amount_msat": 10_000_000, "label": format!("lat-{i}"), "description": "bench"}),
            )
        })
        .collect();
    let mut times = vec![];
    for inv in &invs {
        let t = Instant::now();
        let r = a
            .call("pay", json!({"bolt11": inv["bolt11"]}))
            .map_err(|e| format!("pay: {e}"))?;
        times.push(t.elapsed());
        if r["status"] != "complete" {
            return Err(format!("pay not complete: {r}"));
        }
    }
    times.sort();
    println!(
        "-- pay A→B→C (2 hops), {} in a row: p50 {}  p99 {}",
        times.len(),
        ms(percentile(&times, 0.5)),
        ms(percentile(&times, 0.99))
    );
    Ok(())
}

fn holds(chain: &Bitcoind, seed: u64) -> Result<(), String> {
    let mut rng = Rng(seed.wrapping_add(7).max(1));
    let m = LnNode::start("bench-merchant", chain, &[]);
    let p1 = Arc::new(LnNode::start("bench-payer1", chain, &[]));
    let p2 = Arc::new(LnNode::start("bench-payer2", chain, &[]));
    fund_wallet(chain, &p1, 2.0);
    fund_wallet(chain, &p2, 2.0);
    open_channel(chain, &p1, &m, 16_000_000, &[&p2]);
    open_channel(chain, &p2, &m, 16_000_000, &[&p1]);
    let pid = m.pid().ok_or("merchant not running")?;
    let plugin = child_pid(pid, "htlc-hold").ok_or("htlc-hold plugin process not found")?;
    let (node_before, plugin_before) = (rss_kib(pid), rss_kib(plugin));

    let mut orders = vec![];
    for i in 0..HOLDS {
        let (preimage, hash) = secret(&mut rng);
        let inv = m.ok(
            "holdinvoice",
            json!({"amount_msat": 1_000_000, "description": format!("order {i}"), "payment_hash": hash, "cltv": 144}),
        );
        orders.push((
            preimage,
            hash,
            inv["bolt11"].as_str().unwrap_or_default().to_string(),
        ));
    }
    let route = |payer: &LnNode| -> Value {
        payer.ok(
            "getroute",
            json!({"id": m.id, "amount_msat": 1_000_000, "riskfactor": 1, "cltv": 150}),
        )["route"]
            .clone()
    };
    let routes = [route(&p1), route(&p2)];
    let mut accept_times = vec![];
    let start = Instant::now();
    for (i, (_, hash, bolt11)) in orders.iter().enumerate() {
        let payer = if i % 2 == 0 { &p1 } else { &p2 };
        let inv = payer.ok("decode", json!({"string": bolt11}));
        let t = Instant::now();
        payer
            .call(
                "sendpay",
                json!({"route": routes[i % 2], "payment_hash": hash, "payment_secret": inv["payment_secret"], "amount_msat": 1_000_000}),
            )
            .map_err(|e| format!("sendpay {i}: {e}"))?;
        wait_for(Duration::from_secs(60), || {
            let r = m.ok("listholdinvoices", json!({"payment_hash": hash}));
            let list = r.as_object()?.values().find_map(Value::as_array)?.clone();
            (list.first()?["state"] == "ACCEPTED").then_some(())
        })
        .ok_or(format!("hold {i} never ACCEPTED"))?;
        accept_times.push(t.elapsed());
    }
    let all_held = start.elapsed();
    let held_htlcs = m.ok("listhtlcs", json!({}))["htlcs"]
        .as_array()
        .map(Vec::len)
        .unwrap_or(0);
    std::thread::sleep(Duration::from_secs(2));
    let (node_after, plugin_after) = (rss_kib(pid), rss_kib(plugin));
    let mut first: Vec<Duration> = accept_times[..100.min(HOLDS)].to_vec();
    let mut last: Vec<Duration> = accept_times[HOLDS.saturating_sub(100)..].to_vec();
    first.sort();
    last.sort();
    println!(
        "-- holds: {HOLDS} held at once ({held_htlcs} HTLCs listed) in {:.1} s",
        all_held.as_secs_f64()
    );
    println!(
        "   sendpay → ACCEPTED: first 100 p50 {} p99 {}; last 100 p50 {} p99 {}",
        ms(percentile(&first, 0.5)),
        ms(percentile(&first, 0.99)),
        ms(percentile(&last, 0.5)),
        ms(percentile(&last, 0.99))
    );
    if let (Some(nb), Some(na), Some(pb), Some(pa)) =
        (node_before, node_after, plugin_before, plugin_after)
    {
        println!(
            "   RSS fulgurd {:.1} → {:.1} MiB, htlc-hold {:.1} → {:.1} MiB: {:.1} KiB per held HTLC",
            nb as f64 / 1024.0,
            na as f64 / 1024.0,
            pb as f64 / 1024.0,
            pa as f64 / 1024.0,
            ((na + pa) as f64 - (nb + pb) as f64) / HOLDS as f64
        );
    }
    let t = Instant::now();
    for (preimage, _, _) in &orders {
        m.call("settleholdinvoice", json!({"preimage": preimage}))
            .map_err(|e| format!("settleholdinvoice: {e}"))?;
    }
    for (i, (_, hash, _)) in orders.iter().enumerate() {
        let payer = if i % 2 == 0 { &p1 } else { &p2 };
        let r = payer
            .call("waitsendpay", json!({"payment_hash": hash, "timeout": 120}))
            .map_err(|e| format!("waitsendpay {i}: {e}"))?;
        if r["status"] != "complete" {
            return Err(format!("hold {i} not settled: {r}"));
        }
    }
    println!(
        "   settling all {HOLDS}: {:.1} s until every payer saw its preimage",
        t.elapsed().as_secs_f64()
    );
    Ok(())
}

/// One part of the benchmark.
type Part<'a> = dyn Fn() -> Result<(), String> + 'a;

fn main() -> ExitCode {
    if let Err(e) = fulgur_tests::build_release(&["--workspace", "--bins"]) {
        eprintln!("release build failed: {e}");
        return ExitCode::FAILURE;
    }
    fulgur_tests::use_release_quietly();
    let seed = std::env::var("FULGUR_BENCH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    let count = std::env::var("FULGUR_BENCH_NODES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20usize)
        .max(3);
    let only = std::env::var("FULGUR_BENCH_ONLY").unwrap_or_default();
    let chain = Bitcoind::start("bench-pay");
    let parts: [(&str, Box<Part>); 3] = [
        ("rates", Box::new(|| success_rates(&chain, seed, count))),
        ("latency", Box::new(|| latency(&chain))),
        ("holds", Box::new(|| holds(&chain, seed))),
    ];
    let mut failed = false;
    for (name, f) in parts.iter() {
        if !only.is_empty() && !only.split(',').any(|o| o == *name) {
            continue;
        }
        if let Err(e) = f() {
            eprintln!("{name}: {e}");
            failed = true;
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
