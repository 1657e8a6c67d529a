//! `bkpr-channelsapy`: per channel, what was routed through it and what that earned,
//! against the capital it held, as a yearly rate. Pure, over a [`Ledger`].

use serde_json::{Map, Value, json};

use crate::ledger::{Ledger, is_channel};

/// Blocks in a year.
const BLOCKS_PER_YEAR: f64 = 52_364.0;
/// The length of a liquidity-ads lease, in blocks.
const LEASE_BLOCKS: u32 = 4032;

/// One channel's (or the `net` roll-up's) figures.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Apy {
    pub account: String,
    pub routed_in: u64,
    pub routed_out: u64,
    pub fees_in: u64,
    pub fees_out: u64,
    pub push_in: u64,
    pub push_out: u64,
    pub lease_in: u64,
    pub lease_out: u64,
    pub our_start: u64,
    pub total_start: u64,
    pub start_block: u32,
    pub end_block: u32,
}

impl Apy {
    fn add(&mut self, o: &Apy) {
        self.routed_in += o.routed_in;
        self.routed_out += o.routed_out;
        self.fees_in += o.fees_in;
        self.fees_out += o.fees_out;
        self.push_in += o.push_in;
        self.push_out += o.push_out;
        self.lease_in += o.lease_in;
        self.lease_out += o.lease_out;
        self.our_start += o.our_start;
        self.total_start += o.total_start;
        self.start_block = self.start_block.min(o.start_block);
        self.end_block = self.end_block.max(o.end_block);
    }
}

/// Channels with channel moves in `(start, end]`, by account name, then `net` when any
/// channel had capital.
pub fn compute(l: &Ledger, start: u64, end: u64, height: u32) -> Vec<Apy> {
    let mut names: Vec<&str> = l
        .channel
        .iter()
        .filter(|e| e.timestamp > start && e.timestamp <= end && is_channel(&e.account))
        .map(|e| e.account.as_str())
        .collect();
    names.sort_unstable();
    names.dedup();
    let mut out = Vec::new();
    for name in names {
        let Some(acct) = l.account(name) else {
            continue;
        };
        // Without its opening we know nothing of its capital.
        let Some(open) = acct.open_event.and_then(|id| l.chain_event(id)) else {
            continue;
        };
        let mut a = Apy {
            account: name.to_string(),
            ..Apy::default()
        };
        for e in l
            .channel
            .iter()
            .filter(|e| e.account == name && e.timestamp > start && e.timestamp <= end)
        {
            match e.tag.as_str() {
                "routed" | "invoice" => {
                    a.routed_in += e.credit;
                    a.routed_out += e.debit;
                    if e.tag == "routed" {
                        if e.credit > 0 {
                            a.fees_in += e.fees;
                        } else {
                            a.fees_out += e.fees;
                        }
                    }
                }
                "pushed" => {
                    a.push_in += e.credit;
                    a.push_out += e.debit;
                }
                "lease_fee" => {
                    a.lease_in += e.credit;
                    a.lease_out += e.debit;
                }
                _ => {}
            }
        }
        a.start_block = l.blockheight(open);
        a.our_start =
            (open.credit + a.push_in + a.lease_in).saturating_sub(a.push_out + a.lease_out);
        a.total_start = open.output_value;
        a.end_block = acct
            .closed_event
            .and_then(|id| l.chain_event(id))
            .map_or(height, |c| c.blockheight);
        out.push(a);
    }
    let mut net = Apy {
        account: "net".into(),
        start_block: u32::MAX,
        ..Apy::default()
    };
    for a in &out {
        net.add(a);
    }
    if net.total_start > 0 {
        out.push(net);
    }
    out
}

fn pct(x: f64) -> String {
    format!("{:.4}%", x * 100.0)
}

fn yearly(earned: u64, capital: u64, blocks: u32) -> String {
    pct(earned as f64 / capital as f64 * BLOCKS_PER_YEAR / f64::from(blocks.max(1)))
}

/// CLN's JSON object for one entry (`*_initial` only where the divisor is not zero).
pub fn to_json(a: &Apy) -> Value {
    let mut m = Map::new();
    let theirs = a.total_start.saturating_sub(a.our_start);
    let total = a.total_start.max(1);
    let blocks = a.end_block.saturating_sub(a.start_block) + 1;
    let fees = a.fees_in + a.fees_out;
    for (k, v) in [
        ("account", json!(a.account)),
        ("routed_out_msat", json!(a.routed_out)),
        ("routed_in_msat", json!(a.routed_in)),
        ("lease_fee_paid_msat", json!(a.lease_out)),
        ("lease_fee_earned_msat", json!(a.lease_in)),
        ("pushed_out_msat", json!(a.push_out)),
        ("pushed_in_msat", json!(a.push_in)),
        ("our_start_balance_msat", json!(a.our_start)),
        ("channel_start_balance_msat", json!(a.total_start)),
        ("fees_out_msat", json!(a.fees_out)),
        ("fees_in_msat", json!(a.fees_in)),
        (
            "utilization_out",
            json!(pct(a.routed_out as f64 / total as f64)),
        ),
    ] {
        m.insert(k.into(), v);
    }
    if a.our_start > 0 {
        let u = a.routed_out as f64 / a.our_start as f64;
        m.insert("utilization_out_initial".into(), json!(pct(u)));
    }
    m.insert(
        "utilization_in".into(),
        json!(pct(a.routed_in as f64 / total as f64)),
    );
    if theirs > 0 {
        let u = a.routed_in as f64 / theirs as f64;
        m.insert("utilization_in_initial".into(), json!(pct(u)));
    }
    m.insert("apy_out".into(), json!(yearly(a.fees_out, total, blocks)));
    if a.our_start > 0 {
        let y = yearly(a.fees_out, a.our_start, blocks);
        m.insert("apy_out_initial".into(), json!(y));
    }
    m.insert("apy_in".into(), json!(yearly(a.fees_in, total, blocks)));
    if theirs > 0 {
        m.insert(
            "apy_in_initial".into(),
            json!(yearly(a.fees_in, theirs, blocks)),
        );
    }
    m.insert("apy_total".into(), json!(yearly(fees, total, blocks)));
    if a.our_start > 0 {
        m.insert(
            "apy_total_initial".into(),
            json!(yearly(fees, a.our_start, blocks)),
        );
    }
    if a.lease_in > 0 {
        let capital = a.our_start.saturating_sub(a.lease_in).max(1);
        m.insert(
            "apy_lease".into(),
            json!(yearly(a.lease_in, capital, LEASE_BLOCKS)),
        );
    }
    Value::Object(m)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::tests::{CHAN, channel, opened};

    #[test]
    fn routing_node_earns_on_its_channel() {
        let mut l = opened();
        l.add_channel_move(&channel(1, "routed", 0, 100_000_000, 1_000, 30))
            .unwrap();
        l.add_channel_move(&channel(2, "invoice", 5_000, 0, 0, 31))
            .unwrap();
        let v = compute(&l, 0, u64::MAX, 101 + 52_363);
        assert_eq!(v.len(), 2);
        assert_eq!(v[0].account, CHAN);
        assert_eq!(v[1].account, "net");
        let j = to_json(&v[0]);
        assert_eq!(j["routed_out_msat"], 100_000_000);
        assert_eq!(j["routed_in_msat"], 5_000);
        assert_eq!(j["fees_out_msat"], 1_000);
        assert_eq!(j["our_start_balance_msat"], 500_000_000);
        assert_eq!(j["utilization_out"], "20.0000%");
        // 1,000 msat on 500,000,000 over exactly a year.
        assert_eq!(j["apy_out"], "0.0002%");
        assert!(j.get("utilization_in_initial").is_none());
        assert!(compute(&l, 31, u64::MAX, 200).is_empty());
    }
}
