//! askrene's layers and reservations, as plain data: what a caller told us about the network
//! (channels that gossip does not know, changed fees or limits, disabled nodes, learned
//! liquidity bounds, biases) kept under a layer name, and the amounts other payments have
//! reserved on channel directions. `getroutes` applies the layers it is given, in order, on
//! top of gossip ([`crate::askrene`]). Persistent layers are written to the datastore as this
//! module's JSON form; the RPC shapes (`askrene-listlayers`) are built here too. No I/O.

use std::collections::BTreeMap;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::liquidity::ChanKey;

/// A channel the layer says exists, `source` < `destination` (BOLT 7 order), capacity in
/// msat.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[rustfmt::skip]
pub struct Created {
    pub source: String, pub destination: String,
    pub scid: String, pub capacity_msat: u64,
}

/// A change to one channel direction (`scidd`, `scid/dir`); only the fields set apply:
/// whether it is usable, its HTLC limits and base fee (msat), proportional fee (millionths)
/// and CLTV delta (blocks).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[rustfmt::skip]
pub struct Update {
    pub scidd: String,
    pub enabled: Option<bool>,
    pub htlc_min: Option<u64>, pub htlc_max: Option<u64>,
    pub fee_base: Option<u64>, pub fee_ppm: Option<u32>,
    pub cltv_delta: Option<u16>,
}

/// Something learned about a channel direction (`scidd`) at `timestamp` (UNIX seconds).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Intel {
    /// It can carry at least `min` and at most `max` msat (None: no upper bound known).
    Constraint {
        scidd: String,
        timestamp: u64,
        min: u64,
        max: Option<u64>,
    },
    /// A payment of `amount` msat went through: this direction has that much less, the
    /// other that much more.
    Impression {
        scidd: String,
        timestamp: u64,
        amount: u64,
    },
}

impl Intel {
    fn timestamp(&self) -> u64 {
        match self {
            Intel::Constraint { timestamp, .. } | Intel::Impression { timestamp, .. } => *timestamp,
        }
    }

    /// The channel direction it is about.
    pub fn scidd(&self) -> &str {
        match self {
            Intel::Constraint { scidd, .. } | Intel::Impression { scidd, .. } => scidd,
        }
    }
}

/// A preference for (positive, up to 100) or against (down to -100) one channel direction,
/// with an optional annotation, set at `timestamp`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[rustfmt::skip]
pub struct Bias {
    pub scidd: String, pub description: Option<String>,
    pub bias: i64, pub timestamp: u64,
}

/// A preference for or against the channels into (`in_bias`) and out of (`out_bias`) a node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[rustfmt::skip]
pub struct NodeBias {
    pub node: String, pub description: Option<String>,
    pub in_bias: i64, pub out_bias: i64,
    pub timestamp: u64,
}

/// One named layer: whether it is kept across restarts; the nodes whose outgoing channels
/// are not to be used; channels created; updates (one per direction); constraints and
/// impressions, oldest first; channel and node biases (one per direction or node).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[rustfmt::skip]
pub struct Layer {
    pub name: String, pub persistent: bool,
    pub disabled_nodes: Vec<String>,
    pub created: Vec<Created>, pub updates: Vec<Update>,
    pub intel: Vec<Intel>,
    pub biases: Vec<Bias>, pub node_biases: Vec<NodeBias>,
}

/// Clamps a bias to askrene's range.
fn clamp_bias(b: i64) -> i64 {
    b.clamp(-100, 100)
}

impl Layer {
    /// An empty layer.
    pub fn new(name: &str, persistent: bool) -> Self {
        Layer {
            name: name.to_string(),
            persistent,
            ..Layer::default()
        }
    }

    /// Whether the layer created channel `scid`.
    pub fn has_created(&self, scid: &str) -> bool {
        self.created.iter().any(|c| c.scid == scid)
    }

    /// Adds channel `scid` between `a` and `b` (any order).
    pub fn create_channel(&mut self, a: &str, b: &str, scid: &str, capacity_msat: u64) {
        let (source, destination) = if a < b { (a, b) } else { (b, a) };
        self.created.push(Created {
            source: source.to_string(),
            destination: destination.to_string(),
            scid: scid.to_string(),
            capacity_msat,
        });
    }

    /// Merges `u` into the direction's update (fields `u` leaves unset stay as they were).
    pub fn update_channel(&mut self, u: Update) {
        let Some(old) = self.updates.iter_mut().find(|o| o.scidd == u.scidd) else {
            self.updates.push(u);
            return;
        };
        old.enabled = u.enabled.or(old.enabled);
        old.htlc_min = u.htlc_min.or(old.htlc_min);
        old.htlc_max = u.htlc_max.or(old.htlc_max);
        old.fee_base = u.fee_base.or(old.fee_base);
        old.fee_ppm = u.fee_ppm.or(old.fee_ppm);
        old.cltv_delta = u.cltv_delta.or(old.cltv_delta);
    }

    /// Forgets the update of `scidd`, if any.
    pub fn remove_update(&mut self, scidd: &str) {
        self.updates.retain(|u| u.scidd != scidd);
    }

    /// Records `intel`, after everything of the same time or older.
    pub fn add_intel(&mut self, intel: Intel) {
        let at = self
            .intel
            .iter()
            .position(|i| i.timestamp() > intel.timestamp())
            .unwrap_or(self.intel.len());
        self.intel.insert(at, intel);
    }

    /// Sets (or, `relative`, adds to) the bias of `scidd`; a bias of 0 is dropped. The bias
    /// as it now stands, if any.
    pub fn set_bias(
        &mut self,
        scidd: &str,
        description: Option<String>,
        bias: i64,
        relative: bool,
        timestamp: u64,
    ) -> Option<Bias> {
        let old = self
            .biases
            .iter()
            .find(|b| b.scidd == scidd)
            .map_or(0, |b| b.bias);
        let new = clamp_bias(if relative { old + bias } else { bias });
        self.biases.retain(|b| b.scidd != scidd);
        if new == 0 {
            return None;
        }
        let b = Bias {
            scidd: scidd.to_string(),
            description,
            bias: new,
            timestamp,
        };
        self.biases.push(b.clone());
        Some(b)
    }

    /// Sets (or adds to) the bias on `node`'s outgoing (`out`) or incoming channels.
    pub fn set_node_bias(
        &mut self,
        node: &str,
        description: Option<String>,
        bias: i64,
        relative: bool,
        out: bool,
        timestamp: u64,
    ) -> Option<NodeBias> {
        let (mut in_bias, mut out_bias) = self
            .node_biases
            .iter()
            .find(|b| b.node == node)
            .map_or((0, 0), |b| (b.in_bias, b.out_bias));
        let slot = if out { &mut out_bias } else { &mut in_bias };
        *slot = clamp_bias(if relative { *slot + bias } else { bias });
        self.node_biases.retain(|b| b.node != node);
        if in_bias == 0 && out_bias == 0 {
            return None;
        }
        let b = NodeBias {
            node: node.to_string(),
            description,
            in_bias,
            out_bias,
            timestamp,
        };
        self.node_biases.push(b.clone());
        Some(b)
    }

    /// Forgets constraints, impressions and biases older than `cutoff`; how many went.
    pub fn age(&mut self, cutoff: u64) -> u64 {
        let before = self.intel.len() + self.biases.len() + self.node_biases.len();
        self.intel.retain(|i| i.timestamp() >= cutoff);
        self.biases.retain(|b| b.timestamp >= cutoff);
        self.node_biases.retain(|b| b.timestamp >= cutoff);
        let after = self.intel.len() + self.biases.len() + self.node_biases.len();
        (before - after) as u64
    }

    /// Applies this layer's constraints and impressions on `key` to `(min, max)`, in order.
    pub fn bound(&self, key: &ChanKey, min: &mut u64, max: &mut u64) {
        let this = key.to_string();
        let other = ChanKey::new(&key.scid, key.dir ^ 1).to_string();
        for i in &self.intel {
            match i {
                Intel::Constraint {
                    scidd,
                    min: lo,
                    max: hi,
                    ..
                } if *scidd == this => {
                    *min = (*min).max(*lo);
                    *max = (*max).min(hi.unwrap_or(u64::MAX));
                }
                Intel::Impression { scidd, amount, .. } if *scidd == this => {
                    *min = min.saturating_sub(*amount);
                    *max = max.saturating_sub(*amount);
                }
                Intel::Impression { scidd, amount, .. } if *scidd == other => {
                    *min = min.saturating_add(*amount);
                    *max = max.saturating_add(*amount);
                }
                _ => {}
            }
        }
    }

    /// The layer as `askrene-listlayers` shows it.
    pub fn to_json(&self) -> Value {
        let updates: Vec<Value> = self.updates.iter().map(update_json).collect();
        let constraints: Vec<Value> = self
            .intel
            .iter()
            .filter_map(|i| constraint_json(i, None))
            .collect();
        json!({
            "layer": self.name,
            "persistent": self.persistent,
            "disabled_nodes": self.disabled_nodes,
            "created_channels": self.created.iter().map(|c| json!({
                "source": c.source,
                "destination": c.destination,
                "short_channel_id": c.scid,
                "capacity_msat": c.capacity_msat,
            })).collect::<Vec<_>>(),
            "channel_updates": updates,
            "constraints": constraints,
            "biases": self.biases.iter().map(|b| bias_json(b, None)).collect::<Vec<_>>(),
            "node_biases": self.node_biases.iter().map(|b| node_bias_json(b, None)).collect::<Vec<_>>(),
        })
    }
}

/// Inserts the optional fields that are set.
fn put<T: Serialize>(o: &mut Map<String, Value>, name: &str, v: &Option<T>) {
    if let Some(v) = v {
        o.insert(name.to_string(), json!(v));
    }
}

fn update_json(u: &Update) -> Value {
    let mut o = Map::new();
    o.insert("short_channel_id_dir".into(), json!(u.scidd));
    put(&mut o, "enabled", &u.enabled);
    put(&mut o, "htlc_minimum_msat", &u.htlc_min);
    put(&mut o, "htlc_maximum_msat", &u.htlc_max);
    put(&mut o, "fee_base_msat", &u.fee_base);
    put(&mut o, "fee_proportional_millionths", &u.fee_ppm);
    put(&mut o, "cltv_expiry_delta", &u.cltv_delta);
    Value::Object(o)
}

/// A constraint as CLN shows it (`layer` named when given); None for an impression.
pub fn constraint_json(i: &Intel, layer: Option<&str>) -> Option<Value> {
    let Intel::Constraint {
        scidd,
        timestamp,
        min,
        max,
    } = i
    else {
        return None;
    };
    let mut o = Map::new();
    put(&mut o, "layer", &layer);
    o.insert("short_channel_id_dir".into(), json!(scidd));
    o.insert("timestamp".into(), json!(timestamp));
    put(&mut o, "minimum_msat", &(*min > 0).then_some(*min));
    put(&mut o, "maximum_msat", max);
    Some(Value::Object(o))
}

/// A bias as CLN shows it: on `about` (field name and value), with `values` (the bias
/// fields), the layer named when given.
fn biased(
    about: (&str, &str),
    description: &Option<String>,
    values: &[(&str, i64)],
    timestamp: u64,
    layer: Option<&str>,
) -> Value {
    let mut o = Map::new();
    put(&mut o, "layer", &layer);
    o.insert(about.0.into(), json!(about.1));
    put(&mut o, "description", description);
    for (k, v) in values {
        o.insert((*k).into(), json!(v));
    }
    o.insert("timestamp".into(), json!(timestamp));
    Value::Object(o)
}

/// A channel bias as CLN shows it.
pub fn bias_json(b: &Bias, layer: Option<&str>) -> Value {
    let about = ("short_channel_id_dir", b.scidd.as_str());
    biased(
        about,
        &b.description,
        &[("bias", b.bias)],
        b.timestamp,
        layer,
    )
}

/// A node bias as CLN shows it.
pub fn node_bias_json(b: &NodeBias, layer: Option<&str>) -> Value {
    let values = [("in_bias", b.in_bias), ("out_bias", b.out_bias)];
    biased(
        ("node", &b.node),
        &b.description,
        &values,
        b.timestamp,
        layer,
    )
}

/// An amount (msat) reserved on a channel direction by `askrene-reserve` at `since` by
/// `command_id`; with a `layer`, it counts only for queries using that layer (fake channels).
#[derive(Debug, Clone)]
#[rustfmt::skip]
pub struct Reservation {
    pub key: ChanKey, pub amount: u64,
    pub layer: Option<String>,
    pub since: Instant, pub command_id: String,
}

/// All layers by name, and all reservations.
#[derive(Debug, Default)]
pub struct Askrene {
    /// Layers by name.
    pub layers: BTreeMap<String, Layer>,
    /// Reservations, oldest first.
    pub reservations: Vec<Reservation>,
}

impl Askrene {
    /// Removes the first reservation of exactly `amount` on `key` for `layer`.
    pub fn unreserve(&mut self, key: &ChanKey, amount: u64, layer: Option<&str>) -> bool {
        let Some(i) = self
            .reservations
            .iter()
            .position(|r| r.key == *key && r.amount == amount && r.layer.as_deref() == layer)
        else {
            return false;
        };
        self.reservations.remove(i);
        true
    }

    /// The reservations on `key` that count for a query using `layers`.
    pub fn reserved_on<'a>(
        &'a self,
        key: &'a ChanKey,
        layers: &'a [&str],
    ) -> impl Iterator<Item = &'a Reservation> + 'a {
        self.reservations.iter().filter(move |r| {
            r.key == *key && r.layer.as_deref().is_none_or(|l| layers.contains(&l))
        })
    }

    /// Removes layer `name` and the reservations made on it.
    pub fn remove_layer(&mut self, name: &str) -> Option<Layer> {
        self.reservations
            .retain(|r| r.layer.as_deref() != Some(name));
        self.layers.remove(name)
    }

    /// `askrene-listreservations`' list (reservations on layers are left out, as CLN does).
    pub fn reservations_json(&self) -> Value {
        Value::Array(
            self.reservations
                .iter()
                .filter(|r| r.layer.is_none())
                .map(|r| {
                    json!({
                        "short_channel_id_dir": r.key.to_string(),
                        "amount_msat": r.amount,
                        "age_in_seconds": r.since.elapsed().as_secs(),
                        "command_id": r.command_id,
                    })
                })
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn updates_merge_and_biases_clamp() {
        let mut l = Layer::new("t", false);
        l.update_channel(Update {
            scidd: "0x0x1/0".into(),
            enabled: Some(false),
            ..Update::default()
        });
        l.update_channel(Update {
            scidd: "0x0x1/0".into(),
            cltv_delta: Some(18),
            ..Update::default()
        });
        assert_eq!(l.updates.len(), 1);
        assert_eq!(l.updates[0].enabled, Some(false));
        assert_eq!(l.updates[0].cltv_delta, Some(18));
        assert_eq!(
            l.to_json()["channel_updates"],
            json!([{"short_channel_id_dir": "0x0x1/0", "enabled": false, "cltv_expiry_delta": 18}])
        );
        l.remove_update("0x0x1/0");
        assert!(l.updates.is_empty());

        assert_eq!(
            l.set_bias("1x1x1/1", None, -5, false, 1).map(|b| b.bias),
            Some(-5)
        );
        assert_eq!(
            l.set_bias("1x1x1/1", None, -99, true, 2).map(|b| b.bias),
            Some(-100)
        );
        assert_eq!(l.set_bias("1x1x1/1", None, 0, false, 3), None);
        assert!(l.biases.is_empty());
        let nb = l
            .set_node_bias("02aa", None, 7, false, true, 4)
            .expect("bias");
        assert_eq!((nb.in_bias, nb.out_bias), (0, 7));
        let nb = l
            .set_node_bias("02aa", None, -3, true, false, 5)
            .expect("bias");
        assert_eq!((nb.in_bias, nb.out_bias), (-3, 7));
    }

    #[test]
    fn created_channels_are_in_bolt7_order() {
        let mut l = Layer::new("t", false);
        l.create_channel("03bb", "02aa", "1x2x3", 1000);
        assert_eq!(l.created[0].source, "02aa");
        assert!(l.has_created("1x2x3"));
        assert!(!l.has_created("1x2x4"));
    }

    #[test]
    fn intel_is_ordered_bounds_apply_and_age_removes() {
        let mut l = Layer::new("t", false);
        let k = ChanKey::new("1x1x1", 0);
        l.add_intel(Intel::Constraint {
            scidd: "1x1x1/0".into(),
            timestamp: 20,
            min: 0,
            max: Some(5000),
        });
        l.add_intel(Intel::Constraint {
            scidd: "1x1x1/0".into(),
            timestamp: 10,
            min: 1000,
            max: None,
        });
        l.add_intel(Intel::Impression {
            scidd: "1x1x1/1".into(),
            timestamp: 30,
            amount: 100,
        });
        let (mut min, mut max) = (0, 10_000);
        l.bound(&k, &mut min, &mut max);
        assert_eq!((min, max), (1100, 5100));
        let shown = l.to_json()["constraints"].clone();
        assert_eq!(shown[0]["minimum_msat"], json!(1000));
        assert_eq!(shown[1]["maximum_msat"], json!(5000));
        assert!(shown[1].get("minimum_msat").is_none());
        assert_eq!(l.age(10), 0);
        assert_eq!(l.age(21), 2);
        assert_eq!(l.intel.len(), 1);
        // Round trip through the stored form.
        let back: Layer =
            serde_json::from_value(serde_json::to_value(&l).expect("json")).expect("layer");
        assert_eq!(back, l);
    }

    #[test]
    fn reservations_count_per_layer() {
        let mut a = Askrene::default();
        let k = ChanKey::new("1x1x1", 0);
        for (amount, layer) in [(10, None), (20, Some("fake".to_string()))] {
            a.reservations.push(Reservation {
                key: k.clone(),
                amount,
                layer,
                since: Instant::now(),
                command_id: "x".into(),
            });
        }
        let sum = |layers: &[&str]| a.reserved_on(&k, layers).map(|r| r.amount).sum::<u64>();
        assert_eq!(sum(&[]), 10);
        assert_eq!(sum(&["fake"]), 30);
        assert_eq!(a.reservations_json().as_array().map(Vec::len), Some(1));
        assert!(!a.unreserve(&k, 20, None));
        assert!(a.unreserve(&k, 20, Some("fake")));
        a.remove_layer("fake");
        assert!(a.unreserve(&k, 10, None));
        assert!(a.reservations.is_empty());
    }
}
