//! `listchannels`, `listnodes` and `getroute`: the gossip graph and routes over it
//! (`lightning/graph.rs` does the work).

use fulgur_protocol::RpcError;
use fulgur_protocol::amount::Msat;
use serde_json::{Value, json};

use super::pay::{bad_param, engine, opt_pubkey};
use super::{Command, CommandFuture, Ctx};
use crate::lightning::graph::{
    ChannelFilter, DEFAULT_CLTV, DEFAULT_MAXHOPS, GetrouteRequest, parse_exclusion,
};
use crate::lightning::parse_scid;
use crate::rpc::Reply;
use crate::rpc::params::{Params, opt, req};

pub const LISTCHANNELS: Command = Command {
    name: "listchannels",
    usage: "[short_channel_id] [source] [destination]",
    category: "network",
    description: "Show channel {short_channel_id} or {source} or {destination} (or all known channels, if not specified)",
    verbose: "Lists the channels the gossip graph knows, one entry per direction that has a \
              channel_update: its fees, delay, HTLC limits, flags and capacity (the \
              direction's htlc_maximum_msat when the capacity is unknown).",
    params: &[opt("short_channel_id"), opt("source"), opt("destination")],
    extra_params: false,
    run: run_listchannels,
};

pub const LISTNODES: Command = Command {
    name: "listnodes",
    usage: "[id]",
    category: "network",
    description: "Show node {id} (or all known nods, if not specified)",
    verbose: "Lists the nodes of the gossip graph (or only {id}); nodes that sent a \
              node_announcement also show its alias, color, features and addresses.",
    params: &[opt("id")],
    extra_params: false,
    run: run_listnodes,
};

pub const GETROUTE: Command = Command {
    name: "getroute",
    usage: "id amount_msat riskfactor [cltv] [fromid] [fuzzpercent] [exclude] [maxhops]",
    category: "network",
    description: "Show route to {id} for {amount_msat}, using {riskfactor} and optional {cltv} (default 9). If specified search from {fromid} otherwise use this node as source. Randomize the route with up to {fuzzpercent} (ignored)). {exclude} an array of short-channel-id/direction (e.g. [ '564334x877x1/0', '564195x1292x0/1' ]) or node-id from consideration. Set the {maxhops} the route can take (default 20).",
    verbose: "Finds one route with LDK's router and probabilistic scorer and returns it in CLN's \
              form, ready for sendpay. {riskfactor} and {fuzzpercent} are accepted and ignored; \
              {cltv} is the final hop's delay, which must be at least the invoice's \
              min_final_cltv_expiry.",
    params: &[
        req("id"),
        req("amount_msat"),
        req("riskfactor"),
        opt("cltv"),
        opt("fromid"),
        opt("fuzzpercent"),
        opt("exclude"),
        opt("maxhops"),
    ],
    extra_params: false,
    run: run_getroute,
};

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
    Box::pin(async move {
        let f = match channel_filter(&p) {
            Ok(f) => f,
            Err(e) => return Reply::Err(e),
        };
        let channels = match ctx.node.lightning.get() {
            Some(l) => l.listchannels(f),
            None => vec![],
        };
        Reply::Ok(json!({"channels": channels}))
    })
}

fn run_listnodes(ctx: Ctx, p: Params) -> CommandFuture {
    Box::pin(async move {
        let id = match opt_pubkey(&p, "id") {
            Ok(i) => i,
            Err(e) => return Reply::Err(e),
        };
        let nodes = match ctx.node.lightning.get() {
            Some(l) => l.listnodes(id),
            None => vec![],
        };
        Reply::Ok(json!({"nodes": nodes}))
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
    Box::pin(async move {
        let req = match getroute_request(&p) {
            Ok(r) => r,
            Err(e) => return Reply::Err(e),
        };
        let l = match engine(&ctx.node) {
            Ok(l) => l,
            Err(e) => return Reply::Err(e),
        };
        match l.getroute(&req) {
            Ok(v) => Reply::Ok(v),
            Err(e) => Reply::Err(e),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lightning::graph::Exclusion;
    use crate::rpc::params::bind;

    const ID: &str = "02eec7245d6b7d2ccb30380bfbe2a3648cd7a942653f5aa340edcea1f283686619";

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
