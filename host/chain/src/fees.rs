//! The fee-estimate cache: refreshed in the background from the backend (bitcoind's
//! `estimatesmartfee` for 2, 6, 12 and 100 blocks plus `getmempoolinfo`, or a backend plugin's
//! `estimatefees`), read synchronously and without blocking by everybody (LDK's
//! `FeeEstimator`, the wallet, `feerates`).
//!
//! Fallbacks, used when the backend has no estimate (a fresh regtest chain or an empty
//! mempool, a bitcoind that just started): [`FALLBACK_PERKW`], linearly interpolated between
//! targets like real estimates. Every answer is at least the floor: the larger of 253 sat/kw
//! (LDK's and CLN's `FEERATE_FLOOR`) and the backend's `mempoolminfee`/`minrelaytxfee`.

use std::sync::RwLock;
use std::sync::atomic::{AtomicBool, Ordering};

use lightning::chain::chaininterface::{ConfirmationTarget, FeeEstimator};
use serde_json::{Value, json};

use super::{FeeEstimates, FeeTarget};

/// The absolute floor in sat per 1000 weight units (1 sat/vB, rounded up).
pub const FEERATE_FLOOR_PERKW: u32 = 253;

/// The block targets we ask the backend about.
pub const TARGETS: [u32; 4] = [2, 6, 12, 100];

/// Fallback estimates (blocks, sat/kw) when the backend has none: 10, 5, 3 and 1 sat/vB.
pub const FALLBACK_PERKW: [(u32, u32); 4] = [(2, 2500), (6, 1250), (12, 750), (100, 253)];

/// One answer from the backend.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FeeSample {
    /// (blocks, sat/kw), strictly ascending in blocks; empty when the backend has none.
    pub estimates: Vec<(u32, u32)>,
    /// The backend's minimum (mempoolminfee / minrelaytxfee / plugin `feerate_floor`), sat/kw.
    pub floor_perkw: Option<u32>,
}

/// Converts bitcoind's BTC/kvB to sat/kw (rounded).
pub fn btc_per_kvb_to_perkw(btc: f64) -> Option<u32> {
    if !btc.is_finite() || btc < 0.0 {
        return None;
    }
    let perkw = (btc * 100_000_000.0 / 4.0).round();
    (perkw <= f64::from(u32::MAX)).then_some(perkw as u32)
}

#[derive(Debug, Clone, Default)]
struct State {
    sample: FeeSample,
    /// (blocks, smoothed sat/kw), same targets as `sample.estimates`.
    smoothed: Vec<(u32, u32)>,
    refreshed: bool,
}

/// The cache. Share it as `Arc<FeeCache>`.
#[derive(Default)]
pub struct FeeCache {
    state: RwLock<State>,
    /// `--ignore-fee-limits`: a peer's commitment feerate is never too low (see
    /// [`FeeCache::set_ignore_limits`]).
    ignore_limits: AtomicBool,
}

/// Linear interpolation over ascending (blocks, rate) points; clamped at both ends.
pub fn interpolate(points: &[(u32, u32)], blocks: u32) -> Option<u32> {
    let first = points.first()?;
    if blocks <= first.0 {
        return Some(first.1);
    }
    for w in points.windows(2) {
        let ((b0, r0), (b1, r1)) = (w[0], w[1]);
        if blocks <= b1 {
            let span = i64::from(b1) - i64::from(b0);
            if span <= 0 {
                return Some(r1);
            }
            let off = i64::from(blocks) - i64::from(b0);
            let r = i64::from(r0) + (i64::from(r1) - i64::from(r0)) * off / span;
            return u32::try_from(r).ok();
        }
    }
    points.last().map(|p| p.1)
}

impl FeeCache {
    /// An empty cache (fallbacks until the first refresh).
    pub fn new() -> FeeCache {
        FeeCache::default()
    }

    /// CLN's `--ignore-fee-limits`: accept any commitment feerate a peer proposes down to
    /// the relay floor, instead of closing when it falls below half our 100-block estimate.
    /// The upper limit stays: LDK also derives the dust exposure limit from it, and lifting
    /// it would let a peer trim every HTLC to dust.
    pub fn set_ignore_limits(&self, on: bool) {
        self.ignore_limits.store(on, Ordering::Relaxed);
    }

    fn read(&self) -> State {
        self.state.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Takes a new sample from the backend. The smoothed rate follows rises at once and
    /// decays slowly (3/4 old + 1/4 new), so that our view stays stable for peers.
    pub fn update(&self, sample: FeeSample) {
        let mut s = self.state.write().unwrap_or_else(|p| p.into_inner());
        let smoothed = sample
            .estimates
            .iter()
            .map(|&(b, r)| {
                let old = s.smoothed.iter().find(|(ob, _)| *ob == b).map(|x| x.1);
                let v = match old {
                    Some(o) if o > r => {
                        u32::try_from((u64::from(o) * 3 + u64::from(r)) / 4).unwrap_or(r)
                    }
                    _ => r,
                };
                (b, v)
            })
            .collect();
        s.smoothed = smoothed;
        s.sample = sample;
        s.refreshed = true;
    }

    /// The floor in sat/kw: at least 253.
    pub fn floor_perkw(&self) -> u32 {
        floor_of(&self.read().sample)
    }

    #[cfg(test)]
    /// Whether the backend gave real estimates at the last refresh.
    pub fn has_estimates(&self) -> bool {
        !self.read().sample.estimates.is_empty()
    }

    /// Sat/kw for a confirmation within `blocks` blocks (fallbacks when none).
    pub fn perkw_for_blocks(&self, blocks: u32) -> u32 {
        rate_for_blocks(&self.read().sample, blocks)
    }

    /// The `feerates` result for `style` (`perkb` or `perkw`).
    pub fn render(&self, style: &str) -> Value {
        render(&self.read(), style)
    }
}

fn floor_of(sample: &FeeSample) -> u32 {
    sample.floor_perkw.unwrap_or(0).max(FEERATE_FLOOR_PERKW)
}

fn rate_for_blocks(sample: &FeeSample, blocks: u32) -> u32 {
    let floor = floor_of(sample);
    let r = if sample.estimates.is_empty() {
        interpolate(&FALLBACK_PERKW, blocks)
    } else {
        interpolate(&sample.estimates, blocks)
    };
    r.unwrap_or(floor).max(floor)
}

/// The block target for a [`FeeTarget`] (`None` for the minimum).
pub fn target_blocks(t: FeeTarget) -> Option<u32> {
    match t {
        FeeTarget::Urgent => Some(6),
        FeeTarget::Normal => Some(12),
        FeeTarget::Slow => Some(100),
        FeeTarget::Minimum => None,
        FeeTarget::Blocks(n) => Some(u32::from(n.max(1))),
    }
}

impl FeeEstimates for FeeCache {
    fn feerate_perkw(&self, target: FeeTarget) -> u32 {
        match target_blocks(target) {
            Some(b) => self.perkw_for_blocks(b),
            None => self.floor_perkw(),
        }
    }
}

impl FeeEstimator for FeeCache {
    fn get_est_sat_per_1000_weight(&self, target: ConfirmationTarget) -> u32 {
        let s = self.read().sample;
        let r = |b| rate_for_blocks(&s, b);
        match target {
            // Peers' rates above this make us close: generous, like CLN's max_acceptable.
            ConfirmationTarget::MaximumFeeEstimate => r(2).saturating_mul(10),
            ConfirmationTarget::UrgentOnChainSweep => r(2),
            ConfirmationTarget::MinAllowedAnchorChannelRemoteFee => floor_of(&s),
            ConfirmationTarget::MinAllowedNonAnchorChannelRemoteFee
                if self.ignore_limits.load(Ordering::Relaxed) =>
            {
                floor_of(&s)
            }
            ConfirmationTarget::MinAllowedNonAnchorChannelRemoteFee => {
                (r(100) / 2).max(floor_of(&s))
            }
            ConfirmationTarget::AnchorChannelFee => floor_of(&s),
            ConfirmationTarget::NonAnchorChannelFee => r(6),
            ConfirmationTarget::ChannelCloseMinimum => r(100),
            ConfirmationTarget::OutputSpendingFee => r(12),
        }
    }
}

/// CLN's `feerates` fields from a cache state, in sat/kw or sat/kvB.
fn render(s: &State, style: &str) -> Value {
    let sample = &s.sample;
    let mult = if style == "perkb" { 4 } else { 1 };
    let r = |b| rate_for_blocks(sample, b);
    let floor = floor_of(sample);
    let opening = r(12);
    let mutual_close = r(100);
    let unilateral_close = r(6);
    let unilateral_anchor_close = r(12);
    let penalty = r(12);
    let min_acceptable = (r(100) / 2).max(floor);
    let max_acceptable = r(2).saturating_mul(10);
    let estimates: Vec<Value> = sample
        .estimates
        .iter()
        .map(|&(b, rate)| {
            let smoothed = s
                .smoothed
                .iter()
                .find(|(sb, _)| *sb == b)
                .map(|x| x.1)
                .unwrap_or(rate);
            json!({
                "blockcount": b,
                "feerate": rate.max(floor).saturating_mul(mult),
                "smoothed_feerate": smoothed.max(floor).saturating_mul(mult),
            })
        })
        .collect();
    let m = |v: u32| v.saturating_mul(mult);
    let mut out = json!({
        style: {
            "opening": m(opening),
            "mutual_close": m(mutual_close),
            "unilateral_close": m(unilateral_close),
            "unilateral_anchor_close": m(unilateral_anchor_close),
            "penalty": m(penalty),
            "splice": m(opening),
            "min_acceptable": m(min_acceptable),
            "max_acceptable": m(max_acceptable),
            "floor": m(floor),
            "estimates": estimates,
        },
        // CLN's typical weights (BOLT 3): open 704, mutual close 673, anchor commitment 1124,
        // non-anchor commitment 724, HTLC-timeout 663, HTLC-success 703.
        "onchain_fee_estimates": {
            "opening_channel_satoshis": u64::from(opening) * 704 / 1000,
            "mutual_close_satoshis": u64::from(mutual_close) * 673 / 1000,
            "unilateral_close_satoshis": u64::from(unilateral_anchor_close) * 1124 / 1000,
            "unilateral_close_nonanchor_satoshis": u64::from(unilateral_close) * 724 / 1000,
            "htlc_timeout_satoshis": u64::from(unilateral_close) * 663 / 1000,
            "htlc_success_satoshis": u64::from(unilateral_close) * 703 / 1000,
        },
    });
    if sample.estimates.is_empty() {
        out["warning_missing_feerates"] = json!("Some fee estimates unavailable");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversion_and_interpolation() {
        assert_eq!(btc_per_kvb_to_perkw(0.0001), Some(2500));
        assert_eq!(btc_per_kvb_to_perkw(0.00001), Some(250));
        assert_eq!(btc_per_kvb_to_perkw(-1.0), None);
        assert_eq!(btc_per_kvb_to_perkw(f64::NAN), None);
        let pts = [(2, 1000), (6, 600), (12, 300)];
        assert_eq!(interpolate(&pts, 1), Some(1000));
        assert_eq!(interpolate(&pts, 2), Some(1000));
        assert_eq!(interpolate(&pts, 4), Some(800));
        assert_eq!(interpolate(&pts, 9), Some(450));
        assert_eq!(interpolate(&pts, 500), Some(300));
        assert_eq!(interpolate(&[], 5), None);
    }

    #[test]
    fn ignore_fee_limits_lowers_the_minimum_only() {
        let c = FeeCache::new();
        c.update(FeeSample {
            estimates: vec![(2, 5000), (100, 2000)],
            floor_perkw: Some(300),
        });
        let est = |t| c.get_est_sat_per_1000_weight(t);
        assert_eq!(
            est(ConfirmationTarget::MinAllowedNonAnchorChannelRemoteFee),
            1000
        );
        let max = est(ConfirmationTarget::MaximumFeeEstimate);
        c.set_ignore_limits(true);
        assert_eq!(
            est(ConfirmationTarget::MinAllowedNonAnchorChannelRemoteFee),
            300
        );
        assert_eq!(est(ConfirmationTarget::MaximumFeeEstimate), max);
    }

    #[test]
    fn fallbacks_and_floor() {
        let c = FeeCache::new();
        assert!(!c.has_estimates());
        assert_eq!(c.feerate_perkw(FeeTarget::Urgent), 1250);
        assert_eq!(c.feerate_perkw(FeeTarget::Normal), 750);
        assert_eq!(c.feerate_perkw(FeeTarget::Slow), 253);
        assert_eq!(c.feerate_perkw(FeeTarget::Minimum), 253);
        assert_eq!(c.feerate_perkw(FeeTarget::Blocks(1000)), 253);
        // A backend floor above 253 lifts everything below it, estimates or not.
        c.update(FeeSample {
            estimates: vec![],
            floor_perkw: Some(1000),
        });
        assert_eq!(c.feerate_perkw(FeeTarget::Slow), 1000);
        assert_eq!(c.feerate_perkw(FeeTarget::Urgent), 1250);
        assert_eq!(c.feerate_perkw(FeeTarget::Minimum), 1000);
        // Real estimates replace the fallbacks, never below 253.
        c.update(FeeSample {
            estimates: vec![(2, 5000), (6, 4000), (12, 100), (100, 50)],
            floor_perkw: Some(100),
        });
        assert!(c.has_estimates());
        assert_eq!(c.feerate_perkw(FeeTarget::Urgent), 4000);
        assert_eq!(c.feerate_perkw(FeeTarget::Blocks(2)), 5000);
        assert_eq!(c.feerate_perkw(FeeTarget::Blocks(4)), 4500);
        assert_eq!(c.feerate_perkw(FeeTarget::Slow), 253);
        assert_eq!(
            c.get_est_sat_per_1000_weight(ConfirmationTarget::MaximumFeeEstimate),
            50000
        );
        assert_eq!(
            c.get_est_sat_per_1000_weight(ConfirmationTarget::AnchorChannelFee),
            253
        );
    }

    #[test]
    fn smoothing_follows_rises_and_decays_slowly() {
        let c = FeeCache::new();
        c.update(FeeSample {
            estimates: vec![(2, 1000)],
            floor_perkw: None,
        });
        c.update(FeeSample {
            estimates: vec![(2, 2000)],
            floor_perkw: None,
        });
        let v = c.render("perkw");
        assert_eq!(v["perkw"]["estimates"][0]["smoothed_feerate"], 2000);
        c.update(FeeSample {
            estimates: vec![(2, 1000)],
            floor_perkw: None,
        });
        let v = c.render("perkw");
        assert_eq!(v["perkw"]["estimates"][0]["feerate"], 1000);
        assert_eq!(v["perkw"]["estimates"][0]["smoothed_feerate"], 1750);
    }

    #[test]
    fn render_styles_and_warning() {
        let c = FeeCache::new();
        let v = c.render("perkw");
        assert_eq!(
            v["warning_missing_feerates"],
            "Some fee estimates unavailable"
        );
        assert_eq!(v["perkw"]["estimates"], json!([]));
        assert_eq!(v["perkw"]["floor"], 253);
        assert_eq!(v["perkw"]["opening"], 750);
        assert_eq!(v["perkw"]["max_acceptable"], 25000);
        c.update(FeeSample {
            estimates: vec![(2, 3000), (6, 2000), (12, 1000), (100, 600)],
            floor_perkw: Some(300),
        });
        let w = c.render("perkw");
        assert!(w.get("warning_missing_feerates").is_none());
        assert_eq!(w["perkw"]["opening"], 1000);
        assert_eq!(w["perkw"]["mutual_close"], 600);
        assert_eq!(w["perkw"]["unilateral_close"], 2000);
        assert_eq!(w["perkw"]["min_acceptable"], 300);
        assert_eq!(w["perkw"]["floor"], 300);
        assert_eq!(w["perkw"]["estimates"].as_array().map(Vec::len), Some(4));
        assert_eq!(w["onchain_fee_estimates"]["opening_channel_satoshis"], 704);
        let k = c.render("perkb");
        assert!(k.get("perkw").is_none());
        assert_eq!(k["perkb"]["opening"], 4000);
        assert_eq!(k["perkb"]["floor"], 1200);
        assert_eq!(k["perkb"]["estimates"][0]["feerate"], 12000);
    }
}
