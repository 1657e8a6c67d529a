//! CLN's askrene commands: layers (`askrene-create-layer`, `-remove-layer`, `-listlayers`,
//! `-create-channel`, `-update-channel`, `-remove-channel-update`, `-inform-channel`,
//! `-bias-channel`, `-bias-node`, `-disable-node`, `-age`), reservations (`askrene-reserve`,
//! `-unreserve`, `-listreservations`) and `getroutes`, which plans routes over gossip plus
//! the layers it is given ([`crate::getroutes`]).
//!
//! Parameters are bound by name or position and refused with CLN's messages
//! (`name: why: invalid token 'value'`). Persistent layers live in the datastore under
//! `askrene/layers/<name>`, one JSON document each, rewritten on every change; they are read
//! on the first askrene call after a start. Writes are serialised by one async lock so the
//! datastore never goes back to an older version of a layer.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use fulgur_plugin_sdk::{Plugin, RpcError};
use serde_json::{Map, Value, json};

use crate::getroutes::{self, LayerUse, RouteRequest};
use crate::layers::{self, Askrene, Intel, Layer, Reservation, Update};
use crate::liquidity::ChanKey;
use crate::params::parse_msat;
use crate::{State, lock};

/// CLN's `PAY_USER_ERROR`.
const PAY_USER_ERROR: i64 = 217;
/// The largest `maxdelay` (BOLT 4's `max_htlc_cltv`).
const MAX_DELAY: u32 = 2016;
/// The built-in layers getroutes accepts without their being created.
const AUTO_LAYERS: [&str; 3] = ["auto.localchans", "auto.sourcefree", "auto.no_mpp_support"];

/// The params of one call, by name, with CLN's refusals.
struct Args(Map<String, Value>);

/// CLN's refusal of a parameter's value.
fn bad(name: &str, why: &str, v: &Value) -> RpcError {
    RpcError::invalid_params(format!("{name}: {why}: invalid token '{v}'"))
}

impl Args {
    /// Binds `params` (object or array in `names`' order); unknown names are refused.
    fn bind(params: &Value, names: &[&str]) -> Result<Args, RpcError> {
        let map: Map<String, Value> = fulgur_plugin_sdk::bind(params, names)?;
        if let Some(k) = map.keys().find(|k| !names.contains(&k.as_str())) {
            return Err(RpcError::invalid_params(format!("unknown parameter: {k}")));
        }
        Ok(Args(map))
    }

    fn opt(&self, name: &str) -> Option<&Value> {
        self.0.get(name).filter(|v| !v.is_null())
    }

    fn req(&self, name: &str) -> Result<&Value, RpcError> {
        self.opt(name)
            .ok_or_else(|| RpcError::invalid_params(format!("missing required parameter: {name}")))
    }

    fn string(&self, name: &str) -> Result<String, RpcError> {
        let v = self.req(name)?;
        v.as_str()
            .map(str::to_string)
            .ok_or_else(|| bad(name, "should be a string", v))
    }

    fn opt_string(&self, name: &str) -> Result<Option<String>, RpcError> {
        self.opt(name).map(|_| self.string(name)).transpose()
    }

    fn node(&self, name: &str) -> Result<String, RpcError> {
        let v = self.req(name)?;
        match v.as_str() {
            Some(s)
                if s.len() == 66
                    && (s.starts_with("02") || s.starts_with("03"))
                    && s.bytes().all(|b| b.is_ascii_hexdigit()) =>
            {
                Ok(s.to_ascii_lowercase())
            }
            _ => Err(bad(name, "should be a node id", v)),
        }
    }

    fn msat(&self, name: &str) -> Result<u64, RpcError> {
        let v = self.req(name)?;
        parse_msat(v).map_err(|_| bad(name, "should be a millisatoshi amount", v))
    }

    fn opt_msat(&self, name: &str) -> Result<Option<u64>, RpcError> {
        self.opt(name).map(|_| self.msat(name)).transpose()
    }

    /// An unsigned integer of `bits` bits (as a number or a string of digits).
    fn uint(&self, name: &str, bits: u32) -> Result<u64, RpcError> {
        let v = self.req(name)?;
        let n = v
            .as_u64()
            .or_else(|| v.as_str().and_then(|s| s.parse().ok()));
        match n {
            Some(n) if bits >= 64 || n < (1u64 << bits) => Ok(n),
            _ => Err(bad(
                name,
                &format!("should be an unsigned {bits} bit integer"),
                v,
            )),
        }
    }

    fn opt_uint(&self, name: &str, bits: u32) -> Result<Option<u64>, RpcError> {
        self.opt(name).map(|_| self.uint(name, bits)).transpose()
    }

    fn opt_bool(&self, name: &str) -> Result<Option<bool>, RpcError> {
        let Some(v) = self.opt(name) else {
            return Ok(None);
        };
        match v {
            Value::Bool(b) => Ok(Some(*b)),
            Value::String(s) if s == "true" || s == "false" => Ok(Some(s == "true")),
            _ => Err(bad(name, "should be 'true' or 'false'", v)),
        }
    }

    fn scid(&self, name: &str) -> Result<String, RpcError> {
        let v = self.req(name)?;
        v.as_str()
            .filter(|s| ChanKey::parse(&format!("{s}/0")).is_some())
            .map(str::to_string)
            .ok_or_else(|| bad(name, "should be a short_channel_id of form NxNxN", v))
    }

    fn scidd(&self, name: &str) -> Result<ChanKey, RpcError> {
        let v = self.req(name)?;
        v.as_str()
            .and_then(ChanKey::parse)
            .ok_or_else(|| bad(name, "should be a short_channel_id_dir of form NxNxN/N", v))
    }
}

/// Datastore key of a persistent layer.
fn layer_key(name: &str) -> Value {
    json!(["askrene", "layers", name])
}

fn unix_now() -> u64 {
    crate::pay::unix_now()
}

/// Reads the persistent layers from the datastore, once per run.
async fn ensure_loaded(plugin: &Plugin<Arc<State>>) -> Result<(), RpcError> {
    let state = plugin.state();
    state
        .askrene_loaded
        .get_or_try_init(|| async {
            let v = plugin
                .rpc()
                .call("listdatastore", json!({"key": ["askrene", "layers"]}))
                .await?;
            let entries = v.get("datastore").and_then(Value::as_array);
            let mut ask = lock(&state.askrene);
            for e in entries.into_iter().flatten() {
                let text = e.get("string").and_then(Value::as_str).unwrap_or_default();
                match serde_json::from_str::<Layer>(text) {
                    Ok(l) => {
                        ask.layers.insert(l.name.clone(), l);
                    }
                    Err(err) => plugin.warn(format!("ignoring unreadable stored layer: {err}")),
                }
            }
            Ok::<(), RpcError>(())
        })
        .await?;
    Ok(())
}

/// Writes `layer` to the datastore if it is persistent.
async fn save(plugin: &Plugin<Arc<State>>, layer: Option<Layer>) -> Result<(), RpcError> {
    let Some(layer) = layer.filter(|l| l.persistent) else {
        return Ok(());
    };
    let text = serde_json::to_string(&layer)
        .map_err(|e| RpcError::new(-1, format!("cannot encode layer: {e}")))?;
    plugin
        .rpc()
        .call(
            "datastore",
            json!({"key": layer_key(&layer.name), "string": text, "mode": "create-or-replace"}),
        )
        .await?;
    Ok(())
}

/// Applies `change` to the layer named by the `layer` param (refused with CLN's "Unknown
/// layer" if there is none), then stores it if persistent. Returns `change`'s result.
async fn change_layer(
    plugin: &Plugin<Arc<State>>,
    args: &Args,
    change: impl FnOnce(&mut Layer, &mut Askrene) -> Result<Value, RpcError>,
) -> Result<Value, RpcError> {
    ensure_loaded(plugin).await?;
    let name = args.string("layer")?;
    let state = plugin.state();
    let _writing = state.askrene_writes.lock().await;
    let (result, copy) = {
        let mut ask = lock(&state.askrene);
        let Some(mut layer) = ask.layers.remove(&name) else {
            return Err(bad("layer", "Unknown layer", &json!(name)));
        };
        let result = change(&mut layer, &mut ask);
        let copy = layer.clone();
        ask.layers.insert(name, layer);
        (result?, copy)
    };
    save(plugin, Some(copy)).await?;
    Ok(result)
}

/// `askrene-create-layer layer [persistent]`.
pub async fn create_layer(plugin: Plugin<Arc<State>>, params: Value) -> Result<Value, RpcError> {
    let args = Args::bind(&params, &["layer", "persistent"])?;
    let name = args.string("layer")?;
    let persistent = args.opt_bool("persistent")?.unwrap_or(false);
    if name.starts_with("auto.") {
        return Err(RpcError::invalid_params("Cannot create auto layer"));
    }
    ensure_loaded(&plugin).await?;
    let state = plugin.state();
    let _writing = state.askrene_writes.lock().await;
    let (layer, new) = {
        let mut ask = lock(&state.askrene);
        match ask.layers.get(&name) {
            Some(_) if !persistent => {
                return Err(RpcError::invalid_params("Layer already exists"));
            }
            Some(l) => (l.clone(), false),
            None => {
                let l = Layer::new(&name, persistent);
                ask.layers.insert(name.clone(), l.clone());
                (l, true)
            }
        }
    };
    if new {
        save(&plugin, Some(layer.clone())).await?;
    }
    Ok(json!({"layers": [layer.to_json()]}))
}

/// `askrene-remove-layer layer`.
pub async fn remove_layer(plugin: Plugin<Arc<State>>, params: Value) -> Result<Value, RpcError> {
    let args = Args::bind(&params, &["layer"])?;
    let name = args.string("layer")?;
    ensure_loaded(&plugin).await?;
    let state = plugin.state();
    let _writing = state.askrene_writes.lock().await;
    let removed = lock(&state.askrene).remove_layer(&name);
    let Some(layer) = removed else {
        return Err(bad("layer", "Unknown layer", &json!(name)));
    };
    if layer.persistent {
        plugin
            .rpc()
            .call("deldatastore", json!({"key": layer_key(&name)}))
            .await?;
    }
    Ok(json!({}))
}

/// `askrene-listlayers [layer]`.
pub async fn listlayers(plugin: Plugin<Arc<State>>, params: Value) -> Result<Value, RpcError> {
    let args = Args::bind(&params, &["layer"])?;
    let name = args.opt_string("layer")?;
    ensure_loaded(&plugin).await?;
    let ask = lock(&plugin.state().askrene);
    let shown: Vec<Value> = match &name {
        Some(n) => match ask.layers.get(n) {
            Some(l) => vec![l.to_json()],
            None => return Err(bad("layer", "Unknown layer", &json!(n))),
        },
        None => ask.layers.values().map(Layer::to_json).collect(),
    };
    Ok(json!({ "layers": shown }))
}

/// `askrene-create-channel layer source destination short_channel_id capacity_msat`.
pub async fn create_channel(plugin: Plugin<Arc<State>>, params: Value) -> Result<Value, RpcError> {
    let names = [
        "layer",
        "source",
        "destination",
        "short_channel_id",
        "capacity_msat",
    ];
    let args = Args::bind(&params, &names)?;
    let (src, dst) = (args.node("source")?, args.node("destination")?);
    let scid = args.scid("short_channel_id")?;
    let capacity = args.msat("capacity_msat")?;
    if src == dst {
        return Err(RpcError::invalid_params(
            "source and destination must be different",
        ));
    }
    change_layer(&plugin, &args, |layer, _| {
        if layer.has_created(&scid) {
            return Err(RpcError::invalid_params("channel already exists"));
        }
        layer.create_channel(&src, &dst, &scid, capacity);
        Ok(json!({}))
    })
    .await
}

/// `askrene-update-channel layer short_channel_id_dir [enabled] [htlc_minimum_msat]
/// [htlc_maximum_msat] [fee_base_msat] [fee_proportional_millionths] [cltv_expiry_delta]`.
pub async fn update_channel(plugin: Plugin<Arc<State>>, params: Value) -> Result<Value, RpcError> {
    let names = [
        "layer",
        "short_channel_id_dir",
        "enabled",
        "htlc_minimum_msat",
        "htlc_maximum_msat",
        "fee_base_msat",
        "fee_proportional_millionths",
        "cltv_expiry_delta",
    ];
    let args = Args::bind(&params, &names)?;
    let update = Update {
        scidd: args.scidd("short_channel_id_dir")?.to_string(),
        enabled: args.opt_bool("enabled")?,
        htlc_min: args.opt_msat("htlc_minimum_msat")?,
        htlc_max: args.opt_msat("htlc_maximum_msat")?,
        fee_base: args.opt_msat("fee_base_msat")?,
        fee_ppm: args
            .opt_uint("fee_proportional_millionths", 32)?
            .map(|n| n as u32),
        cltv_delta: args.opt_uint("cltv_expiry_delta", 16)?.map(|n| n as u16),
    };
    change_layer(&plugin, &args, |layer, _| {
        layer.update_channel(update);
        Ok(json!({}))
    })
    .await
}

/// `askrene-remove-channel-update layer short_channel_id_dir`.
pub async fn remove_channel_update(
    plugin: Plugin<Arc<State>>,
    params: Value,
) -> Result<Value, RpcError> {
    let args = Args::bind(&params, &["layer", "short_channel_id_dir"])?;
    let scidd = args.scidd("short_channel_id_dir")?.to_string();
    change_layer(&plugin, &args, |layer, _| {
        layer.remove_update(&scidd);
        Ok(json!({}))
    })
    .await
}

/// `askrene-disable-node layer node`.
pub async fn disable_node(plugin: Plugin<Arc<State>>, params: Value) -> Result<Value, RpcError> {
    let args = Args::bind(&params, &["layer", "node"])?;
    let node = args.node("node")?;
    change_layer(&plugin, &args, |layer, _| {
        layer.disabled_nodes.push(node);
        Ok(json!({}))
    })
    .await
}

/// `askrene-inform-channel layer short_channel_id_dir amount_msat inform`.
pub async fn inform_channel(plugin: Plugin<Arc<State>>, params: Value) -> Result<Value, RpcError> {
    let names = ["layer", "short_channel_id_dir", "amount_msat", "inform"];
    let args = Args::bind(&params, &names)?;
    let key = args.scidd("short_channel_id_dir")?;
    let amount = args.msat("amount_msat")?;
    let inform = args.req("inform")?;
    let how = match inform.as_str() {
        Some(s @ ("constrained" | "unconstrained" | "succeeded")) => s.to_string(),
        _ => {
            return Err(bad(
                "inform",
                "must be constrained/unconstrained/succeeded",
                inform,
            ));
        }
    };
    let timestamp = unix_now();
    change_layer(&plugin, &args, |layer, ask| {
        let scidd = key.to_string();
        let intel = match how.as_str() {
            "constrained" => {
                // It failed: at best everything reserved on it was in use and this amount
                // was one msat too much.
                let names = [layer.name.as_str()];
                let mut total = amount;
                for r in ask.reserved_on(&key, &names) {
                    total = total
                        .checked_add(r.amount)
                        .ok_or_else(|| RpcError::invalid_params("Amount overflow with reserves"))?;
                }
                Intel::Constraint {
                    scidd,
                    timestamp,
                    min: 0,
                    max: Some(total.saturating_sub(1)),
                }
            }
            "unconstrained" => Intel::Constraint {
                scidd,
                timestamp,
                min: amount,
                max: None,
            },
            _ => Intel::Impression {
                scidd,
                timestamp,
                amount,
            },
        };
        let shown = layers::constraint_json(&intel, Some(&layer.name));
        layer.add_intel(intel);
        Ok(json!({ "constraints": shown.into_iter().collect::<Vec<_>>() }))
    })
    .await
}

/// `askrene-bias-channel layer short_channel_id_dir bias [description] [relative]`.
pub async fn bias_channel(plugin: Plugin<Arc<State>>, params: Value) -> Result<Value, RpcError> {
    set_bias(plugin, params, false).await
}

/// `askrene-bias-node layer node direction bias [description] [relative]`.
pub async fn bias_node(plugin: Plugin<Arc<State>>, params: Value) -> Result<Value, RpcError> {
    set_bias(plugin, params, true).await
}

/// A channel direction's bias, or (`for_node`) a node's on its incoming or outgoing channels.
async fn set_bias(
    plugin: Plugin<Arc<State>>,
    params: Value,
    for_node: bool,
) -> Result<Value, RpcError> {
    let (target, names): (&str, &[&str]) = if for_node {
        (
            "node",
            &[
                "layer",
                "node",
                "direction",
                "bias",
                "description",
                "relative",
            ],
        )
    } else {
        (
            "short_channel_id_dir",
            &[
                "layer",
                "short_channel_id_dir",
                "bias",
                "description",
                "relative",
            ],
        )
    };
    let args = Args::bind(&params, names)?;
    let (what, out) = if for_node {
        let dir = args.req("direction")?;
        let out = match dir.as_str() {
            Some("in") => false,
            Some("out") => true,
            _ => return Err(bad("direction", "Expected either in or out values.", dir)),
        };
        (args.node(target)?, out)
    } else {
        (args.scidd(target)?.to_string(), false)
    };
    let v = args.req("bias")?;
    let bias = v
        .as_i64()
        .filter(|b| (-100..=100).contains(b))
        .ok_or_else(|| bad("bias", "should be a number between -100 and 100", v))?;
    let description = args.opt_string("description")?;
    let relative = args.opt_bool("relative")?.unwrap_or(false);
    change_layer(&plugin, &args, |layer, _| {
        let now = unix_now();
        let owner = layer.name.clone();
        let name = Some(owner.as_str());
        let (field, shown) = if for_node {
            let b = layer.set_node_bias(&what, description, bias, relative, out, now);
            ("node_biases", b.map(|b| layers::node_bias_json(&b, name)))
        } else {
            let b = layer.set_bias(&what, description, bias, relative, now);
            ("biases", b.map(|b| layers::bias_json(&b, name)))
        };
        Ok(json!({ field: shown.into_iter().collect::<Vec<_>>() }))
    })
    .await
}

/// `askrene-age layer cutoff`.
pub async fn age(plugin: Plugin<Arc<State>>, params: Value) -> Result<Value, RpcError> {
    let args = Args::bind(&params, &["layer", "cutoff"])?;
    let cutoff = args.uint("cutoff", 64)?;
    change_layer(&plugin, &args, |layer, _| {
        let n = layer.age(cutoff);
        Ok(json!({"layer": layer.name, "num_removed": n}))
    })
    .await
}

/// The `path` param of `askrene-reserve`/`-unreserve`: (direction, amount, layer) triples,
/// each layer known.
fn reserve_path(
    args: &Args,
    ask: &Askrene,
) -> Result<Vec<(ChanKey, u64, Option<String>)>, RpcError> {
    let v = args.req("path")?;
    let Some(hops) = v.as_array() else {
        return Err(bad("path", "should be an array", v));
    };
    let mut out = vec![];
    for hop in hops {
        let Some(obj) = hop.as_object() else {
            return Err(bad("path", "should be an object", hop));
        };
        if let Some(k) = obj
            .keys()
            .find(|k| !matches!(k.as_str(), "short_channel_id_dir" | "amount_msat" | "layer"))
        {
            return Err(bad("path", &format!("unknown field '{k}'"), hop));
        }
        let key = obj
            .get("short_channel_id_dir")
            .and_then(Value::as_str)
            .and_then(ChanKey::parse)
            .ok_or_else(|| bad("path", "bad or missing short_channel_id_dir", hop))?;
        let amount = obj
            .get("amount_msat")
            .and_then(|a| parse_msat(a).ok())
            .ok_or_else(|| bad("path", "bad or missing amount_msat", hop))?;
        let layer = match obj.get("layer") {
            None => None,
            Some(Value::String(l)) if ask.layers.contains_key(l) => Some(l.clone()),
            Some(_) => return Err(bad("path", "Unknown layer", hop)),
        };
        out.push((key, amount, layer));
    }
    Ok(out)
}

/// `askrene-reserve path`.
pub async fn reserve(plugin: Plugin<Arc<State>>, params: Value) -> Result<Value, RpcError> {
    let args = Args::bind(&params, &["path"])?;
    ensure_loaded(&plugin).await?;
    let state = plugin.state();
    let n = state.askrene_calls.fetch_add(1, Ordering::Relaxed) + 1;
    let command_id = format!("askrene-reserve#{n}");
    let mut ask = lock(&state.askrene);
    for (key, amount, layer) in reserve_path(&args, &ask)? {
        ask.reservations.push(Reservation {
            key,
            amount,
            layer,
            since: Instant::now(),
            command_id: command_id.clone(),
        });
    }
    Ok(json!({}))
}

/// `askrene-unreserve path`: every hop must match a reservation, or none is removed.
pub async fn unreserve(plugin: Plugin<Arc<State>>, params: Value) -> Result<Value, RpcError> {
    let args = Args::bind(&params, &["path"])?;
    ensure_loaded(&plugin).await?;
    let mut ask = lock(&plugin.state().askrene);
    let path = reserve_path(&args, &ask)?;
    let kept = ask.reservations.clone();
    for (key, amount, layer) in path {
        if !ask.unreserve(&key, amount, layer.as_deref()) {
            ask.reservations = kept;
            let on = layer.map(|l| format!(" on layer {l}")).unwrap_or_default();
            return Err(RpcError::invalid_params(format!(
                "Unknown reservation for {key}{on}"
            )));
        }
    }
    Ok(json!({}))
}

/// `askrene-listreservations`.
pub async fn listreservations(
    plugin: Plugin<Arc<State>>,
    params: Value,
) -> Result<Value, RpcError> {
    Args::bind(&params, &[])?;
    let ask = lock(&plugin.state().askrene);
    Ok(json!({"reservations": ask.reservations_json()}))
}

/// Whether the node shows deprecated fields (`allow-deprecated-apis`, on unless set off).
async fn deprecated_ok(plugin: &Plugin<Arc<State>>) -> bool {
    let v = plugin
        .rpc()
        .call("listconfigs", json!({"config": "allow-deprecated-apis"}))
        .await;
    v.ok()
        .and_then(|v| {
            v.pointer("/configs/allow-deprecated-apis/value_bool")
                .and_then(Value::as_bool)
        })
        .unwrap_or(true)
}

/// `getroutes source destination amount_msat layers maxfee_msat final_cltv [maxdelay]
/// [maxparts]`.
pub async fn getroutes(plugin: Plugin<Arc<State>>, params: Value) -> Result<Value, RpcError> {
    let names = [
        "source",
        "destination",
        "amount_msat",
        "layers",
        "maxfee_msat",
        "final_cltv",
        "maxdelay",
        "maxparts",
    ];
    let args = Args::bind(&params, &names)?;
    let source = args.node("source")?;
    let destination = args.node("destination")?;
    let amount = args.msat("amount_msat")?;
    let layers_v = args.req("layers")?.clone();
    let maxfee = args.msat("maxfee_msat")?;
    let final_cltv = args.uint("final_cltv", 32)? as u32;
    let maxdelay = args
        .opt_uint("maxdelay", 32)?
        .unwrap_or(u64::from(MAX_DELAY)) as u32;
    let mut maxparts = args.opt_uint("maxparts", 32)?.unwrap_or(100) as usize;
    ensure_loaded(&plugin).await?;
    let Some(list) = layers_v.as_array() else {
        return Err(bad("layers", "should be an array", &layers_v));
    };
    let mut layer_names = vec![];
    {
        let ask = lock(&plugin.state().askrene);
        for l in list {
            let Some(s) = l.as_str() else {
                return Err(bad("layers", "should be a string", l));
            };
            if !AUTO_LAYERS.contains(&s) && !ask.layers.contains_key(s) {
                return Err(bad("layers", "unknown layer", l));
            }
            layer_names.push(s.to_string());
        }
    }
    if amount == 0 {
        return Err(RpcError::invalid_params("amount must be non-zero"));
    }
    if maxparts == 0 {
        return Err(RpcError::invalid_params("maxparts must be non-zero"));
    }
    if maxdelay > MAX_DELAY {
        return Err(RpcError::new(
            PAY_USER_ERROR,
            format!("maximum delay allowed is {MAX_DELAY}"),
        ));
    }
    if source == destination {
        return Err(RpcError::invalid_params(
            "source and destination must be different",
        ));
    }
    if layer_names.iter().any(|l| l == "auto.no_mpp_support") {
        maxparts = 1;
    }
    let rpc = plugin.rpc();
    let gossip = rpc.call("listchannels", json!({})).await?;
    let local = if layer_names.iter().any(|l| l == "auto.localchans") {
        let id = crate::our_id(rpc).await?;
        Some((id, rpc.call("listpeerchannels", json!({})).await?))
    } else {
        None
    };
    let req = RouteRequest {
        source,
        destination,
        amount,
        maxfee,
        final_cltv,
        maxdelay,
        maxparts,
        deprecated_fields: deprecated_ok(&plugin).await,
        now: unix_now(),
    };
    let ask = lock(&plugin.state().askrene);
    let uses: Vec<LayerUse<'_>> = layer_names
        .iter()
        .filter_map(|n| match n.as_str() {
            "auto.sourcefree" => Some(LayerUse::SourceFree),
            "auto.localchans" => local.as_ref().map(|(id, v)| LayerUse::LocalChans(id, v)),
            "auto.no_mpp_support" => None,
            _ => ask.layers.get(n).map(LayerUse::Layer),
        })
        .collect();
    let names: Vec<&str> = layer_names.iter().map(String::as_str).collect();
    getroutes::solve(&gossip, &uses, &ask, &names, &req)
}
