//! What `pay` has learned about the liquidity of channels it does not own: for each channel
//! direction, bounds on the amount it can forward right now (`min` it carried, `max` below an
//! amount it refused), both fading back to "nothing known" with a half-life, so old lessons
//! stop mattering. Pure data: the caller passes the time (UNIX seconds) in.
//!
//! The bounds become a success probability with a uniform prior between them:
//! `P(amount) = (max + 1 - amount) / (max + 1 - min)`, 1 at or below `min`, 0 above `max`.

use std::collections::HashMap;

use serde_json::{Map, Value, json};

/// Default half-life of learned bounds, in seconds.
pub const HALF_LIFE_SECS: u64 = 3600;

/// After this many half-lives a learned bound is dropped altogether.
const FORGET_AFTER_HALF_LIVES: u64 = 8;

/// A channel direction: short channel id (`BxTxO`) and direction bit.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChanKey {
    /// The short channel id as CLN writes it.
    pub scid: String,
    /// 0 or 1, as in `listchannels`.
    pub dir: u8,
}

impl ChanKey {
    /// A key for `scid` in direction `dir`.
    pub fn new(scid: &str, dir: u8) -> Self {
        ChanKey {
            scid: scid.to_string(),
            dir,
        }
    }

    /// Parses CLN's `scid/dir`.
    pub fn parse(s: &str) -> Option<Self> {
        let (scid, dir) = s.split_once('/')?;
        let dir = match dir {
            "0" => 0,
            "1" => 1,
            _ => return None,
        };
        let parts: Vec<&str> = scid.split('x').collect();
        if parts.len() != 3 || parts.iter().any(|p| p.parse::<u64>().is_err()) {
            return None;
        }
        Some(ChanKey::new(scid, dir))
    }
}

impl std::fmt::Display for ChanKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.scid, self.dir)
    }
}

/// Learned bounds of one channel direction, as of `updated`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Bounds {
    min: u64,
    max: Option<u64>,
    updated: u64,
}

/// The learned bounds of all channel directions.
#[derive(Debug, Clone)]
pub struct Liquidity {
    chans: HashMap<ChanKey, Bounds>,
    half_life: u64,
}

impl Default for Liquidity {
    fn default() -> Self {
        Liquidity::new(HALF_LIFE_SECS)
    }
}

impl Liquidity {
    /// An empty model whose lessons halve every `half_life` seconds.
    pub fn new(half_life: u64) -> Self {
        Liquidity {
            chans: HashMap::new(),
            half_life: half_life.max(1),
        }
    }

    /// How many channel directions have learned bounds.
    pub fn len(&self) -> usize {
        self.chans.len()
    }

    /// Fraction of a lesson left after `age` seconds.
    fn weight(&self, age: u64) -> f64 {
        0.5f64.powf(age as f64 / self.half_life as f64)
    }

    /// The bounds of `key` at time `now`, for a channel of `capacity` (None: unknown):
    /// `(min, max)`, `max` None when nothing limits it.
    pub fn bounds(&self, key: &ChanKey, capacity: Option<u64>, now: u64) -> (u64, Option<u64>) {
        let Some(b) = self.chans.get(key) else {
            return (0, capacity);
        };
        let age = now.saturating_sub(b.updated);
        if age >= FORGET_AFTER_HALF_LIVES.saturating_mul(self.half_life) {
            return (0, capacity);
        }
        let w = self.weight(age);
        let min = (b.min as f64 * w) as u64;
        let max = match (b.max, capacity) {
            (None, cap) => cap,
            (Some(m), Some(cap)) => {
                let m = m.min(cap);
                Some(m + ((cap - m) as f64 * (1.0 - w)) as u64)
            }
            // Unknown capacity: the bound loosens by doubling every half-life.
            (Some(m), None) => Some((m as f64 / w).min(u64::MAX as f64 / 2.0) as u64),
        };
        let min = match capacity {
            Some(cap) => min.min(cap),
            None => min,
        };
        (min, max.map(|m| m.max(min)))
    }

    /// Probability that `key` (of `capacity`) forwards `amount` msat at time `now`.
    pub fn probability(&self, key: &ChanKey, capacity: Option<u64>, amount: u64, now: u64) -> f64 {
        let (min, max) = self.bounds(key, capacity, now);
        if amount <= min {
            return 1.0;
        }
        let Some(max) = max else {
            return 1.0;
        };
        if amount > max {
            return 0.0;
        }
        (max - amount + 1) as f64 / (max - min + 1) as f64
    }

    /// Brings `key`'s stored bounds to time `now` (decayed) before a new lesson.
    fn refreshed(&self, key: &ChanKey, now: u64) -> Bounds {
        match self.chans.get(key) {
            None => Bounds {
                min: 0,
                max: None,
                updated: now,
            },
            Some(b) => {
                let age = now.saturating_sub(b.updated);
                if age >= FORGET_AFTER_HALF_LIVES.saturating_mul(self.half_life) {
                    return Bounds {
                        min: 0,
                        max: None,
                        updated: now,
                    };
                }
                let w = self.weight(age);
                Bounds {
                    min: (b.min as f64 * w) as u64,
                    // Without a capacity, loosen as `bounds` does for an unknown one.
                    max: b
                        .max
                        .map(|m| (m as f64 / w).min(u64::MAX as f64 / 2.0) as u64),
                    updated: now,
                }
            }
        }
    }

    /// `key` refused `amount` msat for lack of liquidity: it holds less.
    pub fn failed(&mut self, key: &ChanKey, amount: u64, now: u64) {
        let mut b = self.refreshed(key, now);
        let max = amount.saturating_sub(1);
        b.max = Some(b.max.map_or(max, |m| m.min(max)));
        b.min = b.min.min(max);
        self.chans.insert(key.clone(), b);
    }

    /// `key` forwarded `amount` msat: it held at least that much.
    pub fn carried(&mut self, key: &ChanKey, amount: u64, now: u64) {
        let mut b = self.refreshed(key, now);
        b.min = b.min.max(amount);
        if let Some(m) = b.max.filter(|m| *m < amount) {
            // The earlier lesson was wrong (or liquidity came back): trust the newer one.
            b.max = Some(m.max(amount));
        }
        self.chans.insert(key.clone(), b);
    }

    /// Sets `key`'s bounds as of `now`, replacing whatever was learned (askrene's layers state
    /// them outright).
    pub fn set(&mut self, key: &ChanKey, min: u64, max: Option<u64>, now: u64) {
        let max = max.map(|m| m.max(min));
        self.chans.insert(
            key.clone(),
            Bounds {
                min,
                max,
                updated: now,
            },
        );
    }

    /// Drops lessons that have faded out by `now`.
    pub fn prune(&mut self, now: u64) {
        let limit = FORGET_AFTER_HALF_LIVES.saturating_mul(self.half_life);
        self.chans
            .retain(|_, b| now.saturating_sub(b.updated) < limit);
    }

    /// The model as stored in the datastore: `{"version":1, "half_life":s, "channels":
    /// {"scid/dir": {"min":m, "max":m|null, "updated":t}}}`.
    pub fn to_json(&self) -> Value {
        let mut keys: Vec<&ChanKey> = self.chans.keys().collect();
        keys.sort();
        let mut chans = Map::new();
        for k in keys {
            if let Some(b) = self.chans.get(k) {
                chans.insert(
                    k.to_string(),
                    json!({"min": b.min, "max": b.max, "updated": b.updated}),
                );
            }
        }
        json!({"version": 1, "half_life": self.half_life, "channels": chans})
    }

    /// Merges a stored model in: for each channel the newer lesson wins. Entries that do not
    /// parse are skipped; returns how many were taken.
    pub fn merge_json(&mut self, v: &Value) -> usize {
        let Some(chans) = v.get("channels").and_then(Value::as_object) else {
            return 0;
        };
        let mut taken = 0;
        for (k, e) in chans {
            let Some(key) = ChanKey::parse(k) else {
                continue;
            };
            let (Some(min), Some(updated)) = (
                e.get("min").and_then(Value::as_u64),
                e.get("updated").and_then(Value::as_u64),
            ) else {
                continue;
            };
            let max = e.get("max").and_then(Value::as_u64);
            if max.is_some_and(|m| m < min) {
                continue;
            }
            let newer = self.chans.get(&key).is_none_or(|b| b.updated < updated);
            if newer {
                self.chans.insert(key, Bounds { min, max, updated });
                taken += 1;
            }
        }
        taken
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k() -> ChanKey {
        ChanKey::new("103x1x0", 1)
    }

    #[test]
    fn unknown_channels_follow_the_uniform_prior() {
        let l = Liquidity::default();
        assert_eq!(l.probability(&k(), Some(1000), 0, 0), 1.0);
        assert!((l.probability(&k(), Some(999), 500, 0) - 0.5).abs() < 1e-9);
        assert_eq!(l.probability(&k(), Some(1000), 1001, 0), 0.0);
        assert_eq!(l.probability(&k(), None, 1 << 40, 0), 1.0);
    }

    #[test]
    fn a_failure_caps_and_a_success_floors() {
        let mut l = Liquidity::default();
        l.failed(&k(), 600, 100);
        assert_eq!(l.probability(&k(), Some(1000), 600, 100), 0.0);
        assert!(l.probability(&k(), Some(1000), 599, 100) > 0.0);
        l.carried(&k(), 300, 100);
        assert_eq!(l.probability(&k(), Some(1000), 300, 100), 1.0);
        assert_eq!(l.bounds(&k(), Some(1000), 100), (300, Some(599)));
        // A later success above the old cap replaces it.
        l.carried(&k(), 800, 100);
        assert_eq!(l.bounds(&k(), Some(1000), 100), (800, Some(800)));
    }

    #[test]
    fn lessons_fade_with_the_half_life() {
        let mut l = Liquidity::new(100);
        l.failed(&k(), 201, 0);
        l.carried(&k(), 100, 0);
        let (min, max) = l.bounds(&k(), Some(1000), 100);
        assert_eq!(min, 50);
        assert_eq!(max, Some(600)); // half way back from 200 to 1000
        assert!(l.probability(&k(), Some(1000), 300, 100) > 0.0);
        // Long after, nothing is left.
        assert_eq!(l.bounds(&k(), Some(1000), 100 * 9), (0, Some(1000)));
        l.prune(100 * 9);
        assert_eq!(l.len(), 0);
    }

    #[test]
    fn unknown_capacity_bounds_loosen() {
        let mut l = Liquidity::new(100);
        l.failed(&k(), 1001, 0);
        assert_eq!(l.probability(&k(), None, 1001, 0), 0.0);
        assert_eq!(l.bounds(&k(), None, 100).1, Some(2000));
    }

    #[test]
    fn round_trips_through_json_and_newer_wins() {
        let mut l = Liquidity::default();
        l.failed(&k(), 500, 10);
        l.carried(&ChanKey::new("1x2x3", 0), 42, 11);
        let v = l.to_json();
        let mut back = Liquidity::default();
        assert_eq!(back.merge_json(&v), 2);
        assert_eq!(back.bounds(&k(), Some(1000), 10), (0, Some(499)));
        assert_eq!(
            back.bounds(&ChanKey::new("1x2x3", 0), Some(100), 11),
            (42, Some(100))
        );
        // An older copy does not overwrite newer lessons; junk is skipped.
        let mut newer = Liquidity::default();
        newer.failed(&k(), 100, 20);
        assert_eq!(newer.merge_json(&v), 1);
        assert_eq!(newer.bounds(&k(), Some(1000), 20).1, Some(99));
        let junk = json!({"channels": {"x/1": {"min": 1, "updated": 1},
                                       "1x1x1/0": {"min": 5, "max": 2, "updated": 1},
                                       "1x1x1/1": {"min": "a"}}});
        assert_eq!(newer.merge_json(&junk), 0);
    }

    #[test]
    fn parses_channel_directions() {
        assert_eq!(ChanKey::parse("1x2x3/1"), Some(ChanKey::new("1x2x3", 1)));
        assert_eq!(ChanKey::parse("1x2x3/2"), None);
        assert_eq!(ChanKey::parse("1x2/0"), None);
        assert_eq!(ChanKey::parse("1x2x3"), None);
        assert_eq!(ChanKey::new("1x2x3", 0).to_string(), "1x2x3/0");
    }
}
