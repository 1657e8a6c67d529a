//! The budget arithmetic and the decision of whom to open channels to: pure functions over
//! a snapshot of the node, so every rule can be tested without a node.

use std::collections::{HashMap, HashSet};

use serde::Serialize;

use crate::graph::{Heuristic, Scored};

/// The options, read afresh at every round (most are dynamic).
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// `autopilot-enable`.
    pub enable: bool,
    /// `autopilot-budget-percent`: share of the funds autopilot may put into channels.
    pub budget_percent: u64,
    /// `autopilot-reserve-sat`: on-chain funds never touched.
    pub reserve_sat: u64,
    /// `autopilot-max-channels`: channels autopilot manages at most.
    pub max_channels: u32,
    /// `autopilot-min-channel-sat`.
    pub min_channel_sat: u64,
    /// `autopilot-max-channel-sat`.
    pub max_channel_sat: u64,
    /// `autopilot-max-feerate` in sat per 1000 weight (0: no ceiling).
    pub max_feerate_perkw: u64,
    /// `autopilot-heuristic`.
    pub heuristic: Heuristic,
    /// `autopilot-interval` in seconds.
    pub interval_secs: u64,
    /// `autopilot-dry-run`.
    pub dry_run: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            enable: false,
            budget_percent: 60,
            reserve_sat: 100_000,
            max_channels: 5,
            min_channel_sat: 100_000,
            max_channel_sat: 1_000_000,
            max_feerate_perkw: 5_000,
            heuristic: Heuristic::Preferential,
            interval_secs: 600,
            dry_run: false,
        }
    }
}

impl Config {
    /// Checks the values together; the message names the option at fault.
    pub fn check(&self) -> Result<(), String> {
        if self.budget_percent > 100 {
            return Err("autopilot-budget-percent: must be between 0 and 100".into());
        }
        if self.min_channel_sat == 0 {
            return Err("autopilot-min-channel-sat: must be positive".into());
        }
        if self.max_channel_sat < self.min_channel_sat {
            return Err(
                "autopilot-max-channel-sat: must not be below autopilot-min-channel-sat".into(),
            );
        }
        if self.interval_secs == 0 {
            return Err("autopilot-interval: must be at least 1 second".into());
        }
        Ok(())
    }
}

/// What the node looks like at the start of a round.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    /// Our node id.
    pub our_id: String,
    /// Confirmed, unreserved wallet outputs, in satoshis (what `fundchannel` can spend).
    pub confirmed_sat: u64,
    /// Capacity of the live channels autopilot opened, in satoshis.
    pub managed_sat: u64,
    /// Number of live channels autopilot opened.
    pub managed_channels: u32,
    /// Peers we have any channel with (opened by anyone, not yet closed).
    pub channel_peers: HashSet<String>,
    /// The feerate `fundchannel` would pay, sat per 1000 weight.
    pub opening_feerate_perkw: u64,
    /// On-chain fee set aside per open, in satoshis.
    pub fee_per_open_sat: u64,
}

/// The budget of a round, every step shown in `autopilot-status`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Budget {
    /// Confirmed on-chain funds plus what autopilot already put into channels.
    pub pool_sat: u64,
    /// `budget-percent` of the pool.
    pub allowance_sat: u64,
    /// Already in autopilot's channels.
    pub committed_sat: u64,
    /// On-chain funds above the reserve.
    pub above_reserve_sat: u64,
    /// What this round may spend (channel amounts plus fees).
    pub left_sat: u64,
    /// Channels autopilot may still open (max-channels minus those it manages).
    pub free_slots: u32,
    /// Channels this round can afford at `min-channel-sat` each, fees included.
    pub affordable: u32,
    /// Channels this round aims to open: `min(free_slots, affordable)`.
    pub target: u32,
}

/// Computes the budget: `min(percent × pool − committed, confirmed − reserve)`.
pub fn budget(cfg: &Config, s: &Snapshot) -> Budget {
    let pool_sat = s.confirmed_sat.saturating_add(s.managed_sat);
    let allowance_sat = (u128::from(pool_sat) * u128::from(cfg.budget_percent.min(100)) / 100)
        .try_into()
        .unwrap_or(u64::MAX);
    let above_reserve_sat = s.confirmed_sat.saturating_sub(cfg.reserve_sat);
    let left_sat = allowance_sat
        .saturating_sub(s.managed_sat)
        .min(above_reserve_sat);
    let free_slots = cfg.max_channels.saturating_sub(s.managed_channels);
    let per = cfg
        .min_channel_sat
        .saturating_add(s.fee_per_open_sat)
        .max(1);
    let affordable = u32::try_from(left_sat / per).unwrap_or(u32::MAX);
    Budget {
        pool_sat,
        allowance_sat,
        committed_sat: s.managed_sat,
        above_reserve_sat,
        left_sat,
        free_slots,
        affordable,
        target: free_slots.min(affordable),
    }
}

/// Channel amounts for `n` opens sharing `left` (fees taken off first), each within
/// `[min, max]`: equal shares, capped at `max`. Fewer than `n` when the budget runs out.
pub fn sizes(cfg: &Config, left_sat: u64, fee_per_open_sat: u64, n: u32) -> Vec<u64> {
    let mut out = Vec::new();
    let mut left = left_sat;
    let per = cfg.min_channel_sat.saturating_add(fee_per_open_sat).max(1);
    let n = u64::from(n).min(left_sat / per);
    for k in (1..=n).rev() {
        let Some(avail) = left.checked_sub(fee_per_open_sat) else {
            break;
        };
        // Share what remains equally among the opens still to come.
        let share = (avail.saturating_sub(fee_per_open_sat.saturating_mul(k - 1)) / k)
            .min(cfg.max_channel_sat);
        if share < cfg.min_channel_sat {
            break;
        }
        out.push(share);
        left -= share + fee_per_open_sat;
    }
    out
}

/// Why a candidate is not eligible, regardless of rank.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exclusion {
    /// It is us.
    Ourselves,
    /// We already have a channel with it.
    HasChannel,
    /// An open to it is in flight.
    InFlight,
    /// The operator opted it out.
    Unmanaged,
    /// A recent attempt failed; retried after the deadline (unix seconds).
    Backoff {
        /// When it may be tried again.
        until: u64,
        /// What failed.
        error: String,
    },
    /// Nothing says where to reach it and we are not connected.
    NoAddress,
    /// Its score is zero (no external score, or no path goes through it).
    ZeroScore,
}

impl Exclusion {
    fn reason(&self, now: u64) -> String {
        match self {
            Exclusion::Ourselves => "this is our own node".into(),
            Exclusion::HasChannel => "we already have a channel with this peer".into(),
            Exclusion::InFlight => "an open to this peer is already in flight".into(),
            Exclusion::Unmanaged => "opted out with autopilot-unmanage".into(),
            Exclusion::Backoff { until, error } => format!(
                "last attempt failed ({error}); retrying in {}s",
                until.saturating_sub(now)
            ),
            Exclusion::NoAddress => {
                "no known address (no node_announcement address, not connected)".into()
            }
            Exclusion::ZeroScore => "score is 0".into(),
        }
    }
}

/// What we know about peers besides the graph.
#[derive(Debug, Clone, Default)]
pub struct PeerFacts {
    /// Opted out with `autopilot-unmanage`.
    pub unmanaged: HashSet<String>,
    /// Opens in flight.
    pub in_flight: HashSet<String>,
    /// Failed attempts: retry deadline (unix seconds) and the error.
    pub backoff: HashMap<String, (u64, String)>,
    /// Nodes we can reach: connected, or with an announced address.
    pub reachable: HashSet<String>,
}

/// One candidate's verdict, shown by `autopilot-status`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Verdict {
    /// Node id.
    pub id: String,
    /// Rank by score among all nodes (1 is best).
    pub rank: usize,
    /// Score in `[0, 1]`.
    pub score: f64,
    /// Channels in the graph.
    pub degree: u32,
    /// Total capacity in the graph, in satoshis.
    pub capacity_sat: u64,
    /// Whether an open was chosen.
    pub chosen: bool,
    /// Channel size chosen, in satoshis.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub amount_sat: Option<u64>,
    /// Why it was or was not chosen.
    pub reason: String,
}

/// The round's decision.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Plan {
    /// The round does nothing, and why.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
    /// The budget it worked with.
    pub budget: Budget,
    /// Verdicts, best ranked first.
    pub candidates: Vec<Verdict>,
}

impl Plan {
    /// The opens chosen, best first: `(peer, amount_sat)`.
    pub fn opens(&self) -> Vec<(String, u64)> {
        self.candidates
            .iter()
            .filter(|v| v.chosen)
            .filter_map(|v| v.amount_sat.map(|a| (v.id.clone(), a)))
            .collect()
    }
}

/// Why the round cannot open anything before looking at candidates, if so.
pub fn precheck(cfg: &Config, s: &Snapshot, b: &Budget) -> Option<String> {
    if !cfg.enable {
        return Some("autopilot is disabled (autopilot-enable=false)".into());
    }
    if b.free_slots == 0 {
        return Some(format!(
            "already managing {} channels (autopilot-max-channels={})",
            s.managed_channels, cfg.max_channels
        ));
    }
    if cfg.max_feerate_perkw > 0 && s.opening_feerate_perkw > cfg.max_feerate_perkw {
        return Some(format!(
            "waiting for lower fees: opening feerate {} perkw is above autopilot-max-feerate={} perkw",
            s.opening_feerate_perkw, cfg.max_feerate_perkw
        ));
    }
    if b.affordable == 0 {
        return Some(format!(
            "budget too small: {} sat left (min({}% of {} sat pool = {} sat, minus {} sat already in autopilot channels; {} sat confirmed minus {} sat reserve)), one channel needs {} sat plus {} sat fees",
            b.left_sat,
            cfg.budget_percent,
            b.pool_sat,
            b.allowance_sat,
            b.committed_sat,
            s.confirmed_sat,
            cfg.reserve_sat,
            cfg.min_channel_sat,
            s.fee_per_open_sat
        ));
    }
    None
}

/// Decides the round: excludes ineligible candidates, takes the best `budget.target`
/// eligible ones, sizes their channels and explains every verdict. `ranked` is best first.
pub fn decide(cfg: &Config, s: &Snapshot, facts: &PeerFacts, ranked: &[Scored], now: u64) -> Plan {
    let b = budget(cfg, s);
    let mut candidates = Vec::with_capacity(ranked.len());
    let verdict = |rank: usize, c: &Scored, reason: String| Verdict {
        id: c.id.clone(),
        rank,
        score: c.score,
        degree: c.degree,
        capacity_sat: c.capacity_sat,
        chosen: false,
        amount_sat: None,
        reason,
    };
    if let Some(why) = precheck(cfg, s, &b) {
        for (i, c) in ranked.iter().enumerate() {
            candidates.push(verdict(i + 1, c, format!("round skipped: {why}")));
        }
        return Plan {
            skipped: Some(why),
            budget: b,
            candidates,
        };
    }
    let mut eligible = Vec::new();
    for (i, c) in ranked.iter().enumerate() {
        match exclusion(s, facts, c, now) {
            Some(e) => candidates.push(verdict(i + 1, c, e.reason(now))),
            None => {
                eligible.push(candidates.len());
                candidates.push(verdict(i + 1, c, String::new()));
            }
        }
    }
    let sizes = sizes(cfg, b.left_sat, s.fee_per_open_sat, b.target);
    let n_eligible = eligible.len();
    for (k, idx) in eligible.into_iter().enumerate() {
        let v = &mut candidates[idx];
        match sizes.get(k) {
            Some(&amount) => {
                v.chosen = true;
                v.amount_sat = Some(amount);
                v.reason = format!(
                    "chosen: eligible #{} of {n_eligible} by {} score {:.3} (degree {}, {} sat capacity); {amount} sat",
                    k + 1,
                    cfg.heuristic.as_str(),
                    v.score,
                    v.degree,
                    v.capacity_sat
                );
            }
            None => {
                v.reason = format!(
                    "not chosen: eligible #{} of {n_eligible}, but this round opens only {} (free slots {}, affordable {})",
                    k + 1,
                    sizes.len(),
                    b.free_slots,
                    b.affordable
                );
            }
        }
    }
    let skipped = (sizes.is_empty() || n_eligible == 0).then(|| {
        if n_eligible == 0 {
            "no eligible candidate".to_string()
        } else {
            "budget does not cover one channel".to_string()
        }
    });
    Plan {
        skipped,
        budget: b,
        candidates,
    }
}

fn exclusion(s: &Snapshot, f: &PeerFacts, c: &Scored, now: u64) -> Option<Exclusion> {
    if c.id == s.our_id {
        return Some(Exclusion::Ourselves);
    }
    if f.unmanaged.contains(&c.id) {
        return Some(Exclusion::Unmanaged);
    }
    if f.in_flight.contains(&c.id) {
        return Some(Exclusion::InFlight);
    }
    if s.channel_peers.contains(&c.id) {
        return Some(Exclusion::HasChannel);
    }
    if let Some((until, error)) = f.backoff.get(&c.id)
        && *until > now
    {
        return Some(Exclusion::Backoff {
            until: *until,
            error: error.clone(),
        });
    }
    if c.score <= 0.0 {
        return Some(Exclusion::ZeroScore);
    }
    if !f.reachable.contains(&c.id) {
        return Some(Exclusion::NoAddress);
    }
    None
}

/// Seconds to wait before retrying a peer after its `failures`-th failed attempt:
/// 10 minutes doubling, at most a day.
pub fn backoff_secs(failures: u32) -> u64 {
    let exp = failures.saturating_sub(1).min(10);
    (600u64 << exp).min(86_400)
}

/// On-chain fee set aside per open: the node's estimate for a typical funding transaction,
/// doubled for extra inputs and change, and never under 1000 sat.
pub fn fee_per_open(opening_channel_satoshis: u64) -> u64 {
    opening_channel_satoshis.saturating_mul(2).max(1000)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> Config {
        Config {
            enable: true,
            budget_percent: 50,
            reserve_sat: 100_000,
            max_channels: 3,
            min_channel_sat: 100_000,
            max_channel_sat: 400_000,
            max_feerate_perkw: 5_000,
            heuristic: Heuristic::Preferential,
            interval_secs: 60,
            dry_run: false,
        }
    }

    fn snap(confirmed: u64) -> Snapshot {
        Snapshot {
            our_id: "US".into(),
            confirmed_sat: confirmed,
            opening_feerate_perkw: 1000,
            fee_per_open_sat: 1000,
            ..Snapshot::default()
        }
    }

    fn scored(id: &str, score: f64) -> Scored {
        Scored {
            id: id.into(),
            score,
            degree: 1,
            capacity_sat: 1,
        }
    }

    fn reach(ids: &[&str]) -> PeerFacts {
        PeerFacts {
            reachable: ids.iter().map(|s| s.to_string()).collect(),
            ..PeerFacts::default()
        }
    }

    #[test]
    fn budget_is_the_smaller_of_share_and_funds_above_reserve() {
        // 50% of 1M = 500k; above reserve 900k: the share limits.
        let b = budget(&cfg(), &snap(1_000_000));
        assert_eq!(
            (b.allowance_sat, b.above_reserve_sat, b.left_sat),
            (500_000, 900_000, 500_000)
        );
        assert_eq!((b.free_slots, b.affordable, b.target), (3, 4, 3));
        // The reserve limits: 50% of 250k = 125k, above reserve 150k... then 125k.
        let b = budget(&cfg(), &snap(250_000));
        assert_eq!(b.left_sat, 125_000);
        assert_eq!(b.affordable, 1);
        // 100% share: the reserve is what limits.
        let c = Config {
            budget_percent: 100,
            ..cfg()
        };
        assert_eq!(budget(&c, &snap(250_000)).left_sat, 150_000);
        // Below the reserve: nothing, no underflow.
        assert_eq!(budget(&c, &snap(50_000)).left_sat, 0);
    }

    #[test]
    fn money_already_in_autopilot_channels_counts_against_the_share() {
        let mut s = snap(600_000);
        s.managed_sat = 400_000;
        s.managed_channels = 1;
        let b = budget(&cfg(), &s);
        // Pool 1M, share 500k, 400k committed: 100k left.
        assert_eq!(
            (b.pool_sat, b.committed_sat, b.left_sat),
            (1_000_000, 400_000, 100_000)
        );
        assert_eq!(b.free_slots, 2);
        // 100k cannot pay a 100k channel plus its fee.
        assert_eq!(b.affordable, 0);
        assert!(precheck(&cfg(), &s, &b).is_some_and(|r| r.contains("budget too small")));
    }

    #[test]
    fn sizes_share_the_budget_within_bounds() {
        let c = cfg();
        // 500k for 3 opens at 1k fee each: 166k each.
        let s = sizes(&c, 500_000, 1000, 3);
        assert_eq!(s, vec![165_666, 165_667, 165_667]);
        assert!(s.iter().sum::<u64>() + 3000 <= 500_000);
        // A large budget: capped at max.
        assert_eq!(sizes(&c, 10_000_000, 1000, 2), vec![400_000, 400_000]);
        assert_eq!(sizes(&c, 250_000, 1000, 2), vec![124_000, 124_000]);
        // Not enough for two at min: one, with all of it.
        assert_eq!(sizes(&c, 150_000, 1000, 2), vec![149_000]);
        assert_eq!(sizes(&c, 150_000, 1000, 1), vec![149_000]);
        assert!(sizes(&c, 0, 1000, 3).is_empty());
    }

    #[test]
    fn every_size_respects_bounds_and_budget() {
        let c = cfg();
        for left in (0..3_000_000).step_by(37_000) {
            for n in 0..5 {
                let s = sizes(&c, left, 2000, n);
                assert!(s.len() <= n as usize);
                assert!(
                    s.iter()
                        .all(|&x| (c.min_channel_sat..=c.max_channel_sat).contains(&x))
                );
                assert!(s.iter().map(|x| x + 2000).sum::<u64>() <= left);
            }
        }
    }

    #[test]
    fn decide_takes_the_best_eligible_and_explains_the_rest() {
        let ranked = vec![
            scored("US", 1.0),
            scored("A", 0.9),
            scored("B", 0.8),
            scored("C", 0.7),
            scored("D", 0.6),
            scored("E", 0.5),
            scored("F", 0.4),
            scored("G", 0.0),
        ];
        let mut s = snap(1_000_000);
        s.channel_peers.insert("B".into());
        let mut f = reach(&["A", "B", "C", "D", "E", "G"]);
        f.unmanaged.insert("C".into());
        f.backoff.insert("D".into(), (200, "refused".into()));
        let plan = decide(&cfg(), &s, &f, &ranked, 100);
        assert_eq!(plan.skipped, None);
        let opens = plan.opens();
        let peers: Vec<&str> = opens.iter().map(|(p, _)| p.as_str()).collect();
        // 3 slots; US, B (channel), C (unmanaged), D (backoff) excluded, F has no address.
        assert_eq!(peers, ["A", "E"]);
        let reason = |id: &str| {
            plan.candidates
                .iter()
                .find(|v| v.id == id)
                .map(|v| v.reason.clone())
                .unwrap_or_default()
        };
        assert!(reason("US").contains("our own"));
        assert!(reason("A").starts_with("chosen"));
        assert!(reason("B").contains("already have a channel"));
        assert!(reason("C").contains("autopilot-unmanage"));
        assert!(reason("D").contains("retrying in 100s"));
        assert!(reason("F").contains("no known address"));
        assert!(reason("G").contains("score is 0"));
        assert!(plan.candidates.iter().all(|v| !v.reason.is_empty()));
        // Two of three slots used; sized for 3 (the target), so within budget.
        let total: u64 = opens.iter().map(|(_, a)| a + 1000).sum();
        assert!(total <= plan.budget.left_sat);
        // Once the backoff is over, D is eligible again.
        let plan = decide(&cfg(), &s, &f, &ranked, 201);
        let peers: Vec<String> = plan.opens().into_iter().map(|(p, _)| p).collect();
        assert_eq!(peers, ["A", "D", "E"]);
    }

    #[test]
    fn surplus_candidates_are_told_why_not() {
        let ranked: Vec<Scored> = (0..6)
            .map(|i| scored(&format!("N{i}"), 1.0 - 0.1 * f64::from(i)))
            .collect();
        let ids: Vec<String> = ranked.iter().map(|c| c.id.clone()).collect();
        let f = PeerFacts {
            reachable: ids.into_iter().collect(),
            ..PeerFacts::default()
        };
        let plan = decide(&cfg(), &snap(10_000_000), &f, &ranked, 0);
        assert_eq!(plan.opens().len(), 3);
        assert!(plan.candidates[3].reason.contains("opens only 3"));
        assert!(!plan.candidates[3].chosen);
    }

    /// The round was skipped for a reason that says `why`.
    fn assert_skipped(plan: &Plan, why: &str) {
        assert!(
            plan.skipped.as_deref().is_some_and(|r| r.contains(why)),
            "{:?}",
            plan.skipped
        );
    }

    #[test]
    fn high_fees_disabled_or_full_skip_the_round() {
        let ranked = vec![scored("A", 1.0)];
        let f = reach(&["A"]);
        let mut s = snap(1_000_000);
        s.opening_feerate_perkw = 6000;
        let plan = decide(&cfg(), &s, &f, &ranked, 0);
        assert_skipped(&plan, "waiting for lower fees");
        assert!(plan.opens().is_empty());
        assert!(plan.candidates[0].reason.contains("round skipped"));
        // No ceiling.
        let c = Config {
            max_feerate_perkw: 0,
            ..cfg()
        };
        assert_eq!(decide(&c, &s, &f, &ranked, 0).opens().len(), 1);
        let c = Config {
            enable: false,
            ..cfg()
        };
        assert!(
            decide(&c, &snap(1_000_000), &f, &ranked, 0)
                .opens()
                .is_empty()
        );
        let mut s = snap(1_000_000);
        s.managed_channels = 3;
        let plan = decide(&cfg(), &s, &f, &ranked, 0);
        assert_skipped(&plan, "already managing 3");
    }

    #[test]
    fn in_flight_opens_are_never_doubled() {
        let ranked = vec![scored("A", 1.0), scored("B", 0.5)];
        let mut f = reach(&["A", "B"]);
        f.in_flight.insert("A".into());
        let plan = decide(&cfg(), &snap(1_000_000), &f, &ranked, 0);
        let peers: Vec<String> = plan.opens().into_iter().map(|(p, _)| p).collect();
        assert_eq!(peers, ["B"]);
    }

    #[test]
    fn config_is_checked() {
        assert!(cfg().check().is_ok());
        assert!(
            Config {
                budget_percent: 101,
                ..cfg()
            }
            .check()
            .is_err()
        );
        assert!(
            Config {
                min_channel_sat: 0,
                ..cfg()
            }
            .check()
            .is_err()
        );
        assert!(
            Config {
                max_channel_sat: 1,
                ..cfg()
            }
            .check()
            .is_err()
        );
        assert!(
            Config {
                interval_secs: 0,
                ..cfg()
            }
            .check()
            .is_err()
        );
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        assert_eq!(backoff_secs(1), 600);
        assert_eq!(backoff_secs(2), 1200);
        assert_eq!(backoff_secs(0), 600);
        assert_eq!(backoff_secs(50), 86_400);
        assert_eq!(fee_per_open(126), 1000);
        assert_eq!(fee_per_open(5000), 10_000);
    }
}
