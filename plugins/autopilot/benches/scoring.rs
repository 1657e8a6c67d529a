//! Scoring cost on a generated graph shaped like the public network (a few hubs, a long
//! tail): building the compact graph from edges, then each heuristic.
//!
//! `cargo bench -p fulgur-plugin-autopilot --bench scoring`; the size defaults to 10,000
//! nodes and 50,000 channels, `AUTOPILOT_BENCH_NODES` / `AUTOPILOT_BENCH_CHANNELS` change
//! it (a small size makes a quick check in a debug build:
//! `AUTOPILOT_BENCH_NODES=500 AUTOPILOT_BENCH_CHANNELS=2500 cargo run ...`).

use std::collections::HashMap;
use std::hint::black_box;
use std::time::{Duration, Instant};

use fulgur_plugin_autopilot::graph::{self, Graph, Heuristic};
use serde_json::json;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Runs `f` a few times and reports the median.
fn measure<T>(label: &str, runs: usize, mut f: impl FnMut() -> T) -> Duration {
    let mut times: Vec<Duration> = (0..runs.max(1))
        .map(|_| {
            let t = Instant::now();
            black_box(f());
            t.elapsed()
        })
        .collect();
    times.sort();
    let median = times[times.len() / 2];
    println!(
        "{label:<40} median {:>9.3} ms  (min {:.3}, max {:.3}, {} runs)",
        median.as_secs_f64() * 1e3,
        times[0].as_secs_f64() * 1e3,
        times[times.len() - 1].as_secs_f64() * 1e3,
        times.len()
    );
    median
}

fn main() {
    let nodes = env_usize("AUTOPILOT_BENCH_NODES", 10_000);
    let channels = env_usize("AUTOPILOT_BENCH_CHANNELS", 50_000);
    let runs = env_usize("AUTOPILOT_BENCH_RUNS", 7);
    let edges = graph::generate(nodes, channels, 42);
    println!(
        "graph: {nodes} nodes asked, {} channels generated",
        edges.len()
    );
    // What the plugin receives: listchannels rows, one per direction.
    let rows: Vec<serde_json::Value> = edges
        .iter()
        .flat_map(|e| {
            [(&e.a, &e.b), (&e.b, &e.a)].map(|(s, d)| {
                json!({"short_channel_id": e.scid, "source": s, "destination": d,
                       "amount_msat": e.capacity_sat * 1000})
            })
        })
        .collect();
    measure("listchannels rows -> edges", runs, || {
        graph::edges_from_listchannels(&rows).len()
    });
    measure("build graph", runs, || Graph::build(&edges).len());
    let g = Graph::build(&edges);
    let ext: HashMap<String, f64> = g
        .ids
        .iter()
        .step_by(7)
        .map(|id| (id.clone(), 0.5))
        .collect();
    let mut worst = Duration::ZERO;
    for h in [
        Heuristic::Preferential,
        Heuristic::Centrality,
        Heuristic::External,
    ] {
        let t = measure(&format!("score {}", h.as_str()), runs, || {
            graph::score(&g, h, &ext).len()
        });
        worst = worst.max(t);
    }
    let total = measure("edges -> build -> score centrality", runs, || {
        let g = Graph::build(&edges);
        graph::score(&g, Heuristic::Centrality, &ext).len()
    });
    println!(
        "slowest heuristic {:.3} ms; full centrality round {:.3} ms",
        worst.as_secs_f64() * 1e3,
        total.as_secs_f64() * 1e3
    );
}
