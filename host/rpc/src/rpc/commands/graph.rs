//! `listchannels`, `listnodes` and `getroute`: the gossip graph and routes over it in CLN's
//! JSON (`lightning/graph.rs` does the work and returns typed values).

use fulgur_base::hex;
use fulgur_protocol::RpcError;
use fulgur_protocol::amount::Msat;
use fulgur_protocol::error::codes;
use serde_json::{Value, json};

use super::pay::{bad_param, engine, opt_pubkey};
use super::{Command, CommandFuture, Ctx, command};
use crate::lightning::graph::{
    ChannelFilter, DEFAULT_CLTV, DEFAULT_MAXHOPS, GetrouteRequest, GraphChannel, GraphNode,
    RouteError, RouteHop, parse_exclusion,
};
use crate::lightning::{parse_scid, scid_string};
use crate::rpc::params::{Params, opt, req};

pub const LISTCHANNELS: Command = Command::new(
    "listchannels",
    &[opt("short_channel_id"), opt("source"), opt("destination")],
    run_listchannels,
);

pub const LISTNODES: Command = Command::new("listnodes", &[opt("id")], run_listnodes);

pub const GETROUTE: Command = Command::new(
    "getroute",
    &[
        req("id"),
        req("amount_msat"),
        req("riskfactor"),
        opt("cltv"),
        opt("fromid"),
        opt("fuzzpercent"),
        opt("exclude"),
        opt("maxhops"),
    ],
    run_getroute,
);

pub(super) fn channel_filter(p: &Params) -> Result<ChannelFilter, RpcError> {
    let scid = match p.get("short_channel_id") {
        None => None,
        Some(v) => Some(
            v.as_str()
                .and_then(parse_scid)
                .ok_or_else(|| bad_param("short_channel_id", "should be a short_channel_id", v))?,
        ),
    };
    let source = opt_pubkey(p, "source")?;
    let destination = opt_pubkey(p, "destination")?;
    let given = usize::from(scid.is_some())
        + usize::from(source.is_some())
        + usize::from(destination.is_some());
    if given > 1 {
        return Err(RpcError::invalid_params(
            "Can only specify one of `short_channel_id`, `source` or `destination`",
        ));
    }
    Ok(match (scid, source, destination) {
        (Some(s), _, _) => ChannelFilter::Scid(s),
        (_, Some(s), _) => ChannelFilter::Source(s),
        (_, _, Some(d)) => ChannelFilter::Destination(d),
        _ => ChannelFilter::All,
    })
}

fn run_listchannels(ctx: Ctx, p: Params) -> CommandFuture {
    command(async move {
        let f = channel_filter(&p)?;
        let channels: Vec<Value> = match ctx.node.lightning.get() {
            Some(l) => l.listchannels(f).iter().map(channel_json).collect(),
            None => vec![],
        };
        Ok(json!({"channels": channels}))
    })
}

fn run_listnodes(ctx: Ctx, p: Params) -> CommandFuture {
    command(async move {
        let id = opt_pubkey(&p, "id")?;
        let nodes: Vec<Value> = match ctx.node.lightning.get() {
            Some(l) => l.listnodes(id).iter().map(node_json).collect(),
            None => vec![],
        };
        Ok(json!({"nodes": nodes}))
    })
}

/// A non-negative number, given as a JSON number or a string (CLN's `param_millionths`).
fn non_negative(p: &Params, name: &str) -> Result<(), RpcError> {
    let Some(v) = p.get(name) else {
        return Ok(());
    };
    let n = match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.parse::<f64>().ok(),
        _ => None,
    };
    match n {
        Some(x) if x >= 0.0 && x.is_finite() => Ok(()),
        _ => Err(bad_param(
            name,
            "should be a non-negative floating-point number",
            v,
        )),
    }
}

fn opt_u32(p: &Params, name: &str) -> Result<Option<u32>, RpcError> {
    match p.get(name) {
        None => Ok(None),
        Some(v) => v
            .as_u64()
            .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
            .and_then(|n| u32::try_from(n).ok())
            .map(Some)
            .ok_or_else(|| bad_param(name, "should be an integer", v)),
    }
}

pub(super) fn getroute_request(p: &Params) -> Result<GetrouteRequest, RpcError> {
    let id = opt_pubkey(p, "id")?
        .ok_or_else(|| RpcError::invalid_params("missing required parameter: id"))?;
    let amount = p.get("amount_msat").unwrap_or(&Value::Null);
    let amount_msat = Msat::from_json(amount)
        .map_err(|_| bad_param("amount_msat", "should be a millisatoshi amount", amount))?
        .0;
    non_negative(p, "riskfactor")?;
    non_negative(p, "fuzzpercent")?;
    let exclude = match p.get("exclude") {
        None => vec![],
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| {
                v.as_str().and_then(parse_exclusion).ok_or_else(|| {
                    bad_param("exclude", "should be short_channel_id_dir or node_id", v)
                })
            })
            .collect::<Result<_, _>>()?,
        Some(v) => {
            return Err(RpcError::invalid_params(format!(
                "Exclude array exclude (\"{}\") is not an array",
                v.as_str().map_or_else(|| v.to_string(), String::from)
            )));
        }
    };
    Ok(GetrouteRequest {
        id,
        amount_msat,
        cltv: opt_u32(p, "cltv")?.unwrap_or(DEFAULT_CLTV),
        fromid: opt_pubkey(p, "fromid")?,
        exclude,
        maxhops: opt_u32(p, "maxhops")?.unwrap_or(DEFAULT_MAXHOPS),
    })
}

fn run_getroute(ctx: Ctx, p: Params) -> CommandFuture {
    command(async move {
        let req = getroute_request(&p)?;
        let l = engine(&ctx.node)?;
        match l.getroute(&req) {
            Ok(hops) => Ok(route_json(&hops)),
            Err(e) => Err(route_error(&e)),
        }
    })
}

/// One `listchannels` entry.
fn channel_json(c: &GraphChannel) -> Value {
    json!({
        "source": c.source.to_string(),
        "destination": c.destination.to_string(),
        "short_channel_id": scid_string(c.scid),
        "direction": c.direction,
        "public": true,
        "amount_msat": c.capacity_msat,
        "message_flags": c.message_flags,
        "channel_flags": c.channel_flags,
        "active": c.active,
        "last_update": c.last_update,
        "base_fee_millisatoshi": c.base_fee_msat,
        "fee_per_millionth": c.fee_ppm,
        "delay": c.delay,
        "htlc_minimum_msat": c.htlc_minimum_msat,
        "htlc_maximum_msat": c.htlc_maximum_msat,
        "features": hex(&c.features),
    })
}

/// One `listnodes` entry: the announcement's fields only for a node that sent one.
fn node_json(n: &GraphNode) -> Value {
    let mut v = json!({"nodeid": n.id.to_string()});
    if let Some(a) = &n.announced {
        let addresses: Vec<Value> = a
            .addresses
            .iter()
            .map(|s| crate::cln_json::address_json(s))
            .filter(|v| !v.is_null())
            .collect();
        v["last_timestamp"] = json!(a.last_timestamp);
        v["alias"] = json!(a.alias);
        v["color"] = json!(hex(&a.color));
        v["features"] = json!(hex(&a.features));
        v["addresses"] = json!(addresses);
    }
    v
}

/// `getroute`'s result.
fn route_json(hops: &[RouteHop]) -> Value {
    let route: Vec<Value> = hops
        .iter()
        .map(|h| {
            json!({
                "id": h.id.to_string(),
                "channel": scid_string(h.channel),
                "direction": h.direction,
                "amount_msat": h.amount_msat,
                "delay": h.delay,
                "style": "tlv",
            })
        })
        .collect();
    json!({"route": route})
}

/// CLN's codes: -32602 for an end the graph does not know, 205 when no route fits.
fn route_error(e: &RouteError) -> RpcError {
    match e {
        RouteError::UnknownSource(_) | RouteError::UnknownDestination(_) => {
            RpcError::invalid_params(e.to_string())
        }
        RouteError::NotFound | RouteError::TooLong(_) => {
            RpcError::new(codes::PAY_ROUTE_NOT_FOUND, e.to_string())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lightning::graph::{Announced, Exclusion};
    use crate::rpc::params::bind;
    use crate::rpc::schema;

    const ID: &str = "02eec7245d6b7d2ccb30380bfbe2a3648cd7a942653f5aa340edcea1f283686619";
    const ID2: &str = "0324653eac434488002cc06bbfb7f10fe18991e35f9fe4302dbea6d2353dc0ab1c";

    fn key(s: &str) -> bitcoin::secp256k1::PublicKey {
        s.parse().unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn graph_views_are_clns() {
        let c = GraphChannel {
            source: key(ID),
            destination: key(ID2),
            scid: 1 << 40 | 1 << 16,
            direction: 0,
            capacity_msat: 1_000_000_000,
            message_flags: 1,
            channel_flags: 2,
            active: false,
            last_update: 1_700_000_000,
            base_fee_msat: 1000,
            fee_ppm: 10,
            delay: 144,
            htlc_minimum_msat: 1,
            htlc_maximum_msat: 500_000_000,
            features: vec![],
        };
        let v = channel_json(&c);
        assert_eq!(v["short_channel_id"], "1x1x0");
        assert_eq!(v["amount_msat"], 1_000_000_000u64);
        assert_eq!(v["base_fee_millisatoshi"], 1000);
        assert_eq!(v["fee_per_millionth"], 10);
        assert_eq!(
            (v["active"].as_bool(), v["features"].as_str()),
            (Some(false), Some(""))
        );
        assert_eq!(
            schema::errors("listchannels.json", &json!({"channels": [v]})),
            None
        );
        let bare = GraphNode {
            id: key(ID),
            announced: None,
        };
        assert_eq!(node_json(&bare), json!({"nodeid": ID}));
        let announced = GraphNode {
            id: key(ID2),
            announced: Some(Announced {
                last_timestamp: 1_700_000_000,
                alias: "bravo".into(),
                color: [1, 2, 3],
                features: vec![0x08, 0x80],
                addresses: vec!["127.0.0.1:9735".into(), "node.example:9736".into()],
            }),
        };
        let v = node_json(&announced);
        assert_eq!(v["alias"], "bravo");
        assert_eq!(v["color"], "010203");
        assert_eq!(v["features"], "0880");
        assert_eq!(
            v["addresses"],
            json!([{"type": "ipv4", "address": "127.0.0.1", "port": 9735},
                   {"type": "dns", "address": "node.example", "port": 9736}])
        );
        assert_eq!(
            schema::errors("listnodes.json", &json!({"nodes": [node_json(&bare), v]})),
            None
        );
        let hop = RouteHop {
            id: key(ID2),
            channel: 2 << 40 | 1 << 16,
            direction: 1,
            amount_msat: 100_010,
            delay: 15,
        };
        let r = route_json(&[hop]);
        assert_eq!(
            r,
            json!({"route": [{"id": ID2, "channel": "2x1x0", "direction": 1,
                              "amount_msat": 100_010, "delay": 15, "style": "tlv"}]})
        );
        assert_eq!(schema::errors("getroute.json", &r), None);
    }

    #[test]
    fn route_errors_get_clns_codes() {
        let e = route_error(&RouteError::UnknownSource(key(ID)));
        assert_eq!(e.code, -32602);
        assert_eq!(
            e.message,
            format!("{ID}: unknown source node_id (no public channels?)")
        );
        assert_eq!(
            route_error(&RouteError::UnknownDestination(key(ID))).code,
            -32602
        );
        let e = route_error(&RouteError::NotFound);
        assert_eq!(
            (e.code, e.message.as_str()),
            (205, "Could not find a route")
        );
        let e = route_error(&RouteError::TooLong(3));
        assert_eq!((e.code, e.message.as_str()), (205, "Shortest route was 3"));
    }

    fn params(spec: &Command, v: Value) -> Params {
        bind(spec.params, &v, false).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn listchannels_takes_one_filter() {
        let f = channel_filter(&params(&LISTCHANNELS, json!({"short_channel_id": "1x2x3"})));
        assert!(matches!(f, Ok(ChannelFilter::Scid(_))));
        let f = channel_filter(&params(
            &LISTCHANNELS,
            json!({"source": ID, "destination": ID}),
        ));
        assert_eq!(f.err().map(|e| e.code), Some(-32602));
        let f = channel_filter(&params(&LISTCHANNELS, json!({"short_channel_id": "1x2"})));
        assert_eq!(f.err().map(|e| e.code), Some(-32602));
    }

    #[test]
    fn getroute_params_default_and_check_like_cln() {
        let r = getroute_request(&params(&GETROUTE, json!([ID, "5sat", 1])))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((r.amount_msat, r.cltv, r.maxhops), (5000, 9, 20));
        let r = getroute_request(&params(
            &GETROUTE,
            json!({"id": ID, "amount_msat": 1, "riskfactor": 0.5, "exclude": ["1x2x3/1", ID], "cltv": 40}),
        ))
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.cltv, 40);
        assert_eq!(r.exclude.len(), 2);
        assert!(matches!(r.exclude[0], Exclusion::Channel(_, 1)));
        for bad in [
            json!([ID, 1, -1]),
            json!([ID, "x", 1]),
            json!({"id": ID, "amount_msat": 1, "riskfactor": 1, "exclude": "1x2x3/0"}),
            json!({"id": ID, "amount_msat": 1, "riskfactor": 1, "exclude": ["1x2x3/2"]}),
            json!({"id": "nope", "amount_msat": 1, "riskfactor": 1}),
        ] {
            let e = getroute_request(&params(&GETROUTE, bad.clone()))
                .err()
                .map(|e| e.code);
            assert_eq!(e, Some(-32602), "{bad}");
        }
    }
}
