//! `listforwards` (our `forwards` table) and `listhtlcs` (the HTLCs now in our channels).

use fulgur_base::hex;
use fulgur_protocol::RpcError;
use fulgur_protocol::error::codes;
use serde_json::{Value, json};

use super::{Command, CommandFuture, Ctx, command};
use crate::lightning::forwards::Forward;
use crate::lightning::scid_string;
use crate::rpc::params::{Params, opt, req};

pub const LISTFORWARDS: Command = Command::new(
    "listforwards",
    &[
        opt("status"),
        opt("in_channel"),
        opt("out_channel"),
        opt("index"),
        opt("start"),
        opt("limit"),
    ],
    run_listforwards,
);

pub const DELFORWARD: Command = Command::new(
    "delforward",
    &[req("in_channel"), req("in_htlc_id"), req("status")],
    run_delforward,
);

pub const LISTHTLCS: Command = Command::new(
    "listhtlcs",
    &[opt("id"), opt("index"), opt("start"), opt("limit")],
    run_listhtlcs,
);

pub(super) fn index_param(p: &Params) -> Result<Option<String>, RpcError> {
    let idx = p.opt_str("index")?;
    if let Some(i) = &idx
        && i != "created"
        && i != "updated"
    {
        return Err(RpcError::invalid_params(format!(
            "index: should be 'created' or 'updated': invalid token '{i}'"
        )));
    }
    if idx.is_none() && (p.get("start").is_some() || p.get("limit").is_some()) {
        return Err(RpcError::invalid_params(
            "Can only specify {start} or {limit} with {index}",
        ));
    }
    Ok(idx)
}

fn run_listforwards(ctx: Ctx, p: Params) -> CommandFuture {
    command(async move {
        let status = p.opt_str("status")?;
        if let Some(s) = &status
            && !["offered", "settled", "failed", "local_failed"].contains(&s.as_str())
        {
            return Err(RpcError::invalid_params(format!(
                "status: should be a forward status: invalid token '{s}'"
            )));
        }
        let in_ch = p.opt_str("in_channel")?;
        let out_ch = p.opt_str("out_channel")?;
        let index = index_param(&p)?;
        let start = p.opt_u64("start")?.map(|v| v as i64);
        let limit = p.opt_u64("limit")?.map(|v| v as i64);
        let r = ctx
            .node
            .store
            .with(move |c| {
                Ok(crate::lightning::forwards::list(
                    c,
                    status.as_deref(),
                    in_ch.as_deref(),
                    out_ch.as_deref(),
                    index.as_deref(),
                    start,
                    limit,
                )?)
            })
            .await;
        match r {
            Ok(v) => Ok(json!({"forwards": v.iter().map(forward_json).collect::<Vec<_>>()})),
            Err(e) => Err(RpcError::new(-1, e.to_string())),
        }
    })
}

/// `delforward`: forgets a resolved forward, as CLN's (an `offered` one is refused: it is
/// still in a channel).
fn run_delforward(ctx: Ctx, p: Params) -> CommandFuture {
    command(async move {
        let in_channel = p.str("in_channel")?;
        if crate::lightning::parse_scid(&in_channel).is_none() {
            return Err(RpcError::invalid_params(format!(
                "in_channel: should be a short_channel_id of form NxNxN: invalid token '{in_channel}'"
            )));
        }
        let htlc_id = p
            .opt_u64("in_htlc_id")?
            .ok_or_else(|| RpcError::invalid_params("missing required parameter: in_htlc_id"))?;
        let status = p.str("status")?;
        match status.as_str() {
            "settled" | "failed" | "local_failed" => {}
            "offered" | "any" => {
                return Err(RpcError::invalid_params(format!(
                    "status: delforward status cannot be {status}: invalid token '{status}'"
                )));
            }
            _ => {
                return Err(RpcError::invalid_params(format!(
                    "status: should be a forward status: invalid token '{status}'"
                )));
            }
        }
        let found = ctx
            .node
            .store
            .with(move |c| {
                Ok(crate::lightning::forwards::delete(
                    c,
                    &in_channel,
                    htlc_id,
                    &status,
                )?)
            })
            .await
            .map_err(|e| RpcError::new(-1, e.to_string()))?;
        if !found {
            return Err(RpcError::new(
                codes::DELFORWARD_NOT_FOUND,
                "Could not find that forward",
            ));
        }
        Ok(json!({}))
    })
}

/// A `listforwards` entry (CLN's shape).
pub fn forward_json(f: &Forward) -> Value {
    let mut o = json!({
        "created_index": f.created_index,
        "in_channel": f.in_channel,
        "in_msat": f.in_msat,
        "status": f.status,
        "style": "tlv",
        "received_time": f.received_time,
    });
    if let Some(u) = f.updated_index {
        o["updated_index"] = json!(u);
    }
    if let Some(h) = f.in_htlc_id {
        o["in_htlc_id"] = json!(h);
    }
    if let Some(c) = &f.out_channel {
        o["out_channel"] = json!(c);
    }
    if let (Some(m), Some(fee)) = (f.out_msat, f.fee_msat()) {
        o["out_msat"] = json!(m);
        o["fee_msat"] = json!(fee);
    }
    if let Some(c) = f.failcode {
        o["failcode"] = json!(c);
    }
    if let Some(r) = &f.failreason {
        o["failreason"] = json!(r);
    }
    // CLN gives resolved_time for settled and failed forwards only (its schema forbids it
    // for local_failed).
    if let Some(t) = f.resolved_time
        && (f.status == "settled" || f.status == "failed")
    {
        o["resolved_time"] = json!(t);
    }
    o
}

/// The `forward_event` notification's payload: the entry without its indexes and HTLC id,
/// with the payment hash when known.
pub fn forward_event_json(f: &Forward, payment_hash: Option<&[u8; 32]>) -> Value {
    let mut o = forward_json(f);
    if let Some(h) = payment_hash {
        o["payment_hash"] = json!(hex(h));
    }
    if let Some(m) = o.as_object_mut() {
        m.remove("created_index");
        m.remove("updated_index");
        m.remove("in_htlc_id");
    }
    o
}

fn run_listhtlcs(ctx: Ctx, p: Params) -> CommandFuture {
    command(async move {
        let id = p.opt_str("id")?;
        let _ = index_param(&p)?;
        let start = p.opt_u64("start")?.unwrap_or(0);
        let limit = p.opt_u64("limit")?.unwrap_or(u64::MAX);
        let Some(e) = ctx.node.lightning.get() else {
            return Ok(json!({"htlcs": []}));
        };
        let mut out: Vec<Value> = vec![];
        for c in e.list_channels() {
            let scid = c.short_channel_id.or(c.outbound_scid_alias).unwrap_or(0);
            let scid_s = scid_string(scid);
            if let Some(want) = &id
                && *want != scid_s
                && want.to_lowercase() != hex(&c.channel_id.0)
            {
                continue;
            }
            for mut h in super::channels::channel_htlcs(&c) {
                h["short_channel_id"] = json!(scid_s);
                out.push(h);
            }
        }
        for (i, h) in out.iter_mut().enumerate() {
            h["created_index"] = json!(i as u64 + 1);
        }
        let out: Vec<Value> = out
            .into_iter()
            .filter(|h| h["created_index"].as_u64().unwrap_or(0) >= start)
            .take(limit.min(usize::MAX as u64) as usize)
            .collect();
        Ok(json!({"htlcs": out}))
    })
}
