//! A compact copy of the gossip graph and the three ways of scoring its nodes.
//!
//! The graph is built from `listchannels` rows into index-based arrays (a CSR adjacency
//! list), scored, and dropped: only the scores are kept between rounds. Every function
//! here is synchronous and CPU-bound, so callers run it on the blocking pool, never on
//! the task that serves RPC calls.

use std::collections::HashMap;

use serde_json::Value;

/// How candidates are scored (`autopilot-heuristic`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Heuristic {
    /// Preferential attachment: well-connected, well-funded nodes score high.
    Preferential,
    /// Approximate betweenness centrality: nodes many shortest paths go through.
    Centrality,
    /// Scores pushed by the operator with `autopilot-setscore`.
    External,
}

impl Heuristic {
    /// Parses the option's value.
    pub fn parse(s: &str) -> Option<Heuristic> {
        match s {
            "preferential" => Some(Heuristic::Preferential),
            "centrality" => Some(Heuristic::Centrality),
            "external" => Some(Heuristic::External),
            _ => None,
        }
    }

    /// The option's value.
    pub fn as_str(self) -> &'static str {
        match self {
            Heuristic::Preferential => "preferential",
            Heuristic::Centrality => "centrality",
            Heuristic::External => "external",
        }
    }
}

/// One channel of the graph (both directions are one edge).
#[derive(Debug, Clone, PartialEq)]
pub struct Edge {
    /// Short channel id, used to merge the two directions `listchannels` reports.
    pub scid: String,
    /// One end.
    pub a: String,
    /// The other end.
    pub b: String,
    /// Capacity in satoshis.
    pub capacity_sat: u64,
}

/// Reads `listchannels` rows into edges, one per short channel id; rows that lack a field
/// or whose ends are the same node are skipped.
pub fn edges_from_listchannels(rows: &[Value]) -> Vec<Edge> {
    let mut seen: HashMap<&str, ()> = HashMap::with_capacity(rows.len() / 2 + 1);
    let mut out = Vec::with_capacity(rows.len() / 2 + 1);
    for r in rows {
        let (Some(scid), Some(a), Some(b)) = (
            r.get("short_channel_id").and_then(Value::as_str),
            r.get("source").and_then(Value::as_str),
            r.get("destination").and_then(Value::as_str),
        ) else {
            continue;
        };
        if a == b || seen.insert(scid, ()).is_some() {
            continue;
        }
        let msat = r.get("amount_msat").and_then(msat_of).unwrap_or(0);
        out.push(Edge {
            scid: scid.to_string(),
            a: a.to_string(),
            b: b.to_string(),
            capacity_sat: msat / 1000,
        });
    }
    out
}

/// An msat amount as a number or a string with an optional `msat` suffix.
pub fn msat_of(v: &Value) -> Option<u64> {
    match v {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.strip_suffix("msat").unwrap_or(s).parse().ok(),
        _ => None,
    }
}

/// The graph as arrays indexed by node number.
#[derive(Debug, Default)]
pub struct Graph {
    /// Node ids by index.
    pub ids: Vec<String>,
    /// Distinct channels per node.
    pub degree: Vec<u32>,
    /// Channels per node of at least a quarter of the median capacity: the degree
    /// preferential attachment counts, so a node cannot look like a hub by opening many
    /// tiny channels.
    pub strong_degree: Vec<u32>,
    /// Total capacity of each node's channels, in satoshis.
    pub capacity_sat: Vec<u64>,
    /// Neighbours of node `i` are `adj[start[i]..start[i + 1]]`.
    start: Vec<u32>,
    adj: Vec<u32>,
}

impl Graph {
    /// Builds the graph from its edges.
    pub fn build(edges: &[Edge]) -> Graph {
        let mut index: HashMap<&str, u32> = HashMap::new();
        let mut ids: Vec<String> = Vec::new();
        let mut ends: Vec<(u32, u32, u64)> = Vec::with_capacity(edges.len());
        for e in edges {
            let mut ends_of = [0u32; 2];
            for (slot, id) in ends_of.iter_mut().zip([e.a.as_str(), e.b.as_str()]) {
                *slot = match index.get(id) {
                    Some(i) => *i,
                    None => {
                        let i = ids.len() as u32;
                        ids.push(id.to_string());
                        index.insert(id, i);
                        i
                    }
                };
            }
            ends.push((ends_of[0], ends_of[1], e.capacity_sat));
        }
        let n = ids.len();
        let mut caps: Vec<u64> = ends.iter().map(|e| e.2).collect();
        let strong = if caps.is_empty() {
            0
        } else {
            let mid = caps.len() / 2;
            *caps.select_nth_unstable(mid).1 / 4
        };
        drop(caps);
        let mut degree = vec![0u32; n];
        let mut strong_degree = vec![0u32; n];
        let mut capacity_sat = vec![0u64; n];
        for &(a, b, cap) in &ends {
            degree[a as usize] += 1;
            degree[b as usize] += 1;
            if cap >= strong {
                strong_degree[a as usize] += 1;
                strong_degree[b as usize] += 1;
            }
            capacity_sat[a as usize] = capacity_sat[a as usize].saturating_add(cap);
            capacity_sat[b as usize] = capacity_sat[b as usize].saturating_add(cap);
        }
        let mut start = vec![0u32; n + 1];
        for i in 0..n {
            start[i + 1] = start[i] + degree[i];
        }
        let mut fill = start.clone();
        let mut adj = vec![0u32; start[n] as usize];
        for &(a, b, _) in &ends {
            adj[fill[a as usize] as usize] = b;
            fill[a as usize] += 1;
            adj[fill[b as usize] as usize] = a;
            fill[b as usize] += 1;
        }
        Graph {
            ids,
            degree,
            strong_degree,
            capacity_sat,
            start,
            adj,
        }
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether the graph has no node.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    fn neighbours(&self, i: usize) -> &[u32] {
        &self.adj[self.start[i] as usize..self.start[i + 1] as usize]
    }
}

/// A node's score in `[0, 1]` and the facts it was computed from, for explanations.
#[derive(Debug, Clone, PartialEq)]
pub struct Scored {
    /// Node id.
    pub id: String,
    /// The score (higher is better).
    pub score: f64,
    /// Distinct channels in the graph.
    pub degree: u32,
    /// Total capacity of its channels, in satoshis.
    pub capacity_sat: u64,
}

/// Sources sampled for approximate betweenness: enough for a stable ranking of the
/// well-connected nodes, cheap on large graphs (each sample is one BFS over all edges).
pub const CENTRALITY_SAMPLES: usize = 48;

/// Scores every node of the graph with `heuristic` (`external` uses `external`, nodes it
/// does not name score 0). Sorted best first, ties broken by degree then id so the order
/// is deterministic.
pub fn score(g: &Graph, heuristic: Heuristic, external: &HashMap<String, f64>) -> Vec<Scored> {
    let raw: Vec<f64> = match heuristic {
        Heuristic::Preferential => preferential(g),
        Heuristic::Centrality => betweenness(g, CENTRALITY_SAMPLES),
        Heuristic::External => g
            .ids
            .iter()
            .map(|id| external.get(id).copied().unwrap_or(0.0))
            .collect(),
    };
    let mut out: Vec<Scored> = g
        .ids
        .iter()
        .enumerate()
        .map(|(i, id)| Scored {
            id: id.clone(),
            score: raw.get(i).copied().filter(|s| s.is_finite()).unwrap_or(0.0),
            degree: g.degree[i],
            capacity_sat: g.capacity_sat[i],
        })
        .collect();
    // Nodes only known through external scores (not in our graph yet) still count.
    if heuristic == Heuristic::External {
        let known: std::collections::HashSet<&str> = g.ids.iter().map(String::as_str).collect();
        for (id, s) in external {
            if !known.contains(id.as_str()) {
                out.push(Scored {
                    id: id.clone(),
                    score: *s,
                    degree: 0,
                    capacity_sat: 0,
                });
            }
        }
    }
    out.sort_by(|x, y| {
        y.score
            .total_cmp(&x.score)
            .then(y.degree.cmp(&x.degree))
            .then(x.id.cmp(&y.id))
    });
    out
}

/// Half degree, half capacity, each relative to the graph's largest: attaching to hubs
/// keeps routes short, and capacity rewards hubs that can actually carry payments. Only
/// channels of at least a quarter of the median capacity count towards the degree.
fn preferential(g: &Graph) -> Vec<f64> {
    let max_deg = g.strong_degree.iter().copied().max().unwrap_or(0).max(1) as f64;
    // Logarithmic in capacity so one whale does not flatten everyone else to zero.
    let lcap = |c: u64| ((c as f64) + 1.0).ln();
    let max_cap = g.capacity_sat.iter().map(|&c| lcap(c)).fold(1.0, f64::max);
    (0..g.len())
        .map(|i| {
            0.5 * f64::from(g.strong_degree[i]) / max_deg + 0.5 * lcap(g.capacity_sat[i]) / max_cap
        })
        .collect()
}

/// Brandes' betweenness from `samples` evenly spread sources (all of them on small
/// graphs), unweighted, normalised to `[0, 1]`.
fn betweenness(g: &Graph, samples: usize) -> Vec<f64> {
    let n = g.len();
    let mut bc = vec![0.0f64; n];
    if n < 3 {
        return bc;
    }
    let k = samples.min(n).max(1);
    // Sources spread over the index range with a fixed stride: deterministic, and the
    // index order (first seen in listchannels) carries no meaning that would bias it.
    let stride = n / k;
    let mut sigma = vec![0.0f64; n];
    let mut dist = vec![u32::MAX; n];
    let mut delta = vec![0.0f64; n];
    let mut order: Vec<u32> = Vec::with_capacity(n);
    let mut queue: std::collections::VecDeque<u32> = std::collections::VecDeque::new();
    for s in (0..k).map(|j| j * stride) {
        for &v in &order {
            sigma[v as usize] = 0.0;
            dist[v as usize] = u32::MAX;
            delta[v as usize] = 0.0;
        }
        order.clear();
        sigma[s] = 1.0;
        dist[s] = 0;
        queue.push_back(s as u32);
        while let Some(v) = queue.pop_front() {
            order.push(v);
            let dv = dist[v as usize];
            for &w in g.neighbours(v as usize) {
                let w = w as usize;
                if dist[w] == u32::MAX {
                    dist[w] = dv + 1;
                    queue.push_back(w as u32);
                }
                if dist[w] == dv + 1 {
                    sigma[w] += sigma[v as usize];
                }
            }
        }
        // Predecessors are the neighbours one hop closer: no lists needed.
        for &w in order.iter().rev() {
            let w = w as usize;
            let dw = dist[w];
            for &v in g.neighbours(w) {
                let v = v as usize;
                if dw > 0 && dist[v] == dw - 1 && sigma[w] > 0.0 {
                    delta[v] += sigma[v] / sigma[w] * (1.0 + delta[w]);
                }
            }
            if w != s {
                bc[w] += delta[w];
            }
        }
    }
    let max = bc.iter().copied().fold(0.0, f64::max);
    if max > 0.0 {
        for b in &mut bc {
            *b /= max;
        }
    }
    bc
}

/// A deterministic random graph for tests and the benchmark: `nodes` nodes and about
/// `channels` channels, attached preferentially (a few hubs, a long tail) like the real
/// network.
pub fn generate(nodes: usize, channels: usize, seed: u64) -> Vec<Edge> {
    if nodes < 2 {
        return Vec::new();
    }
    let mut x = seed | 1;
    let mut rnd = move || {
        // xorshift64*
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    };
    let id = |i: usize| format!("02{i:064x}");
    let mut ends: Vec<usize> = Vec::with_capacity(channels * 2);
    let mut edges = Vec::with_capacity(channels);
    for c in 0..channels {
        let a = if c < nodes {
            c
        } else {
            (rnd() % nodes as u64) as usize
        };
        // Half the time the other end is picked in proportion to degree.
        let b = if !ends.is_empty() && rnd() % 2 == 0 {
            ends[(rnd() % ends.len() as u64) as usize]
        } else {
            (rnd() % nodes as u64) as usize
        };
        if a == b {
            continue;
        }
        ends.push(a);
        ends.push(b);
        edges.push(Edge {
            scid: format!("{}x{}x0", 100 + c / 1000, c % 1000),
            a: id(a),
            b: id(b),
            capacity_sat: 100_000 + rnd() % 10_000_000,
        });
    }
    edges
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn edge(scid: &str, a: &str, b: &str, cap: u64) -> Edge {
        Edge {
            scid: scid.into(),
            a: a.into(),
            b: b.into(),
            capacity_sat: cap,
        }
    }

    /// A star around H with a tail: H–A, H–B, H–C, C–D.
    fn star() -> Vec<Edge> {
        vec![
            edge("1x1x0", "H", "A", 1_000_000),
            edge("1x2x0", "H", "B", 1_000_000),
            edge("1x3x0", "H", "C", 1_000_000),
            edge("1x4x0", "C", "D", 5_000_000),
        ]
    }

    #[test]
    fn listchannels_rows_merge_directions_and_skip_junk() {
        let rows = vec![
            json!({"short_channel_id": "1x1x0", "source": "A", "destination": "B", "amount_msat": 2_000_000}),
            json!({"short_channel_id": "1x1x0", "source": "B", "destination": "A", "amount_msat": 2_000_000}),
            json!({"short_channel_id": "1x2x0", "source": "B", "destination": "C", "amount_msat": "5000msat"}),
            json!({"short_channel_id": "1x3x0", "source": "C"}),
            json!({"short_channel_id": "1x4x0", "source": "C", "destination": "C"}),
            json!("garbage"),
        ];
        let e = edges_from_listchannels(&rows);
        assert_eq!(e.len(), 2);
        assert_eq!(e[0], edge("1x1x0", "A", "B", 2000));
        assert_eq!(e[1].capacity_sat, 5);
    }

    #[test]
    fn graph_counts_degree_and_capacity() {
        let g = Graph::build(&star());
        assert_eq!(g.len(), 5);
        let h = g.ids.iter().position(|i| i == "H").unwrap_or(usize::MAX);
        assert_eq!(g.degree[h], 3);
        assert_eq!(g.capacity_sat[h], 3_000_000);
        let mut n: Vec<&str> = g
            .neighbours(h)
            .iter()
            .map(|&i| g.ids[i as usize].as_str())
            .collect();
        n.sort_unstable();
        assert_eq!(n, ["A", "B", "C"]);
    }

    #[test]
    fn preferential_ranks_the_hub_first() {
        let g = Graph::build(&star());
        let s = score(&g, Heuristic::Preferential, &HashMap::new());
        assert_eq!(s[0].id, "H");
        assert_eq!(s[1].id, "C", "second most connected and funded");
        assert!(s.iter().all(|x| (0.0..=1.0).contains(&x.score)));
        assert!(s[0].score > s[1].score);
    }

    #[test]
    fn many_tiny_channels_do_not_make_a_hub() {
        // S has six 1-sat channels, H three of 1M; seven of the thirteen are 1M, so the
        // median is 1M and S's channels count for nothing.
        let mut e = vec![
            edge("1", "H", "A", 1_000_000),
            edge("2", "H", "B", 1_000_000),
            edge("3", "H", "C", 1_000_000),
            edge("4", "A", "B", 1_000_000),
            edge("5", "B", "C", 1_000_000),
            edge("6", "C", "A", 1_000_000),
            edge("7", "A", "D", 1_000_000),
        ];
        for i in 0..6 {
            e.push(edge(&format!("t{i}"), "S", &format!("T{i}"), 1));
        }
        let g = Graph::build(&e);
        let s_idx = g.ids.iter().position(|i| i == "S").unwrap_or(usize::MAX);
        assert_eq!((g.degree[s_idx], g.strong_degree[s_idx]), (6, 0));
        let s = score(&g, Heuristic::Preferential, &HashMap::new());
        let rank = |id: &str| s.iter().position(|x| x.id == id).unwrap_or(usize::MAX);
        assert!(rank("H") < rank("S") && rank("D") < rank("S"), "{s:?}");
    }

    #[test]
    fn centrality_ranks_the_bridge_nodes() {
        // A path A–B–C–D–E: C is on the most shortest paths, then B and D; the ends none.
        let path = vec![
            edge("1", "A", "B", 1),
            edge("2", "B", "C", 1),
            edge("3", "C", "D", 1),
            edge("4", "D", "E", 1),
        ];
        let g = Graph::build(&path);
        let s = score(&g, Heuristic::Centrality, &HashMap::new());
        assert_eq!(s[0].id, "C");
        assert!((s[0].score - 1.0).abs() < 1e-9);
        let ends: Vec<f64> = s
            .iter()
            .filter(|x| x.id == "A" || x.id == "E")
            .map(|x| x.score)
            .collect();
        assert_eq!(ends, [0.0, 0.0]);
        let b = s.iter().find(|x| x.id == "B").map(|x| x.score);
        let d = s.iter().find(|x| x.id == "D").map(|x| x.score);
        assert_eq!(b, d);
        assert!(b.unwrap_or(0.0) > 0.0 && b.unwrap_or(1.0) < 1.0);
    }

    #[test]
    fn external_scores_cover_unknown_nodes_and_default_to_zero() {
        let g = Graph::build(&star());
        let ext = HashMap::from([("B".to_string(), 0.9), ("Z".to_string(), 0.5)]);
        let s = score(&g, Heuristic::External, &ext);
        assert_eq!(s[0].id, "B");
        assert_eq!(s[1].id, "Z");
        assert_eq!(s.len(), 6);
        assert!(s[2..].iter().all(|x| x.score == 0.0));
    }

    #[test]
    fn empty_and_tiny_graphs_do_not_panic() {
        assert!(generate(0, 10, 1).is_empty() && generate(1, 10, 1).is_empty());
        let g = Graph::build(&[]);
        assert!(g.is_empty());
        assert!(score(&g, Heuristic::Centrality, &HashMap::new()).is_empty());
        let g = Graph::build(&[edge("1", "A", "B", 0)]);
        let s = score(&g, Heuristic::Centrality, &HashMap::new());
        assert_eq!(s.len(), 2);
        let s = score(&g, Heuristic::Preferential, &HashMap::new());
        assert!(s.iter().all(|x| x.score.is_finite()));
    }

    #[test]
    fn generated_graph_has_the_asked_size_and_scores_every_node() {
        // How fast: `cargo bench -p fulgur-plugin-autopilot --bench scoring`
        // (docs/PERFORMANCE.md), not a timed assertion here.
        let edges = generate(2000, 10_000, 7);
        assert!(edges.len() > 9_000);
        let g = Graph::build(&edges);
        assert!(g.len() <= 2000 && g.len() > 1900);
        let s = score(&g, Heuristic::Centrality, &HashMap::new());
        assert_eq!(s.len(), g.len());
    }
}
