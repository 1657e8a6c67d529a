//! `listnetworkevents [id] [index] [start] [limit]` and `delnetworkevent created_index`:
//! CLN's log of connections made, lost and failed (`lightning::netevents` records them).

use bitcoin::secp256k1::PublicKey;
use fulgur_protocol::RpcError;
use serde_json::{Value, json};

use super::{Command, CommandFuture, Ctx, command};
use crate::rpc::params::{Params, opt, req};
use crate::store::netevents::{Kind, NetworkEvent};

pub const LISTNETWORKEVENTS: Command = Command::new(
    "listnetworkevents",
    &[opt("id"), opt("index"), opt("start"), opt("limit")],
    run_list,
);

pub const DELNETWORKEVENT: Command =
    Command::new("delnetworkevent", &[req("created_index")], run_delete);

/// CLN's `DELNETWORKEVENT_NOT_FOUND`.
const NOT_FOUND: i64 = 1402;

fn event_json(index: u64, e: &NetworkEvent) -> Value {
    let mut o = json!({
        "created_index": index,
        "timestamp": e.timestamp,
        "peer_id": e.peer_id,
        "type": e.kind.as_str(),
    });
    if let Some(r) = &e.reason {
        o["reason"] = json!(r);
    }
    if let Some(d) = e.duration_nsec {
        o["duration_nsec"] = json!(d);
    }
    if e.kind == Kind::ConnectFail {
        o["connect_attempted"] = json!(e.connect_attempted.unwrap_or(true));
    }
    o
}

fn run_list(ctx: Ctx, p: Params) -> CommandFuture {
    command(async move {
        let peer: Option<PublicKey> = match p.opt_str("id")? {
            None => None,
            Some(s) => Some(s.parse().map_err(|_| {
                RpcError::invalid_params(format!("id: should be a node id: invalid token '{s}'"))
            })?),
        };
        let (index, start, limit) = super::moves::index_start_limit(&p)?;
        if let Some(i) = &index
            && i != "created"
        {
            return Err(RpcError::invalid_params(format!(
                "index: should be 'created': invalid token '{i}'"
            )));
        }
        let e = super::channels::engine(&ctx.node)?;
        let rows = e
            .network_events(peer, start, limit)
            .await
            .map_err(|err| RpcError::lightningd(err.to_string()))?;
        let all: Vec<Value> = rows.iter().map(|(i, ev)| event_json(*i, ev)).collect();
        Ok(json!({ "networkevents": all }))
    })
}

fn run_delete(ctx: Ctx, p: Params) -> CommandFuture {
    command(async move {
        let index = p
            .opt_u64("created_index")?
            .ok_or_else(|| RpcError::invalid_params("missing required parameter: created_index"))?;
        let e = super::channels::engine(&ctx.node)?;
        let gone = e
            .delete_network_event(index)
            .await
            .map_err(|err| RpcError::lightningd(err.to_string()))?;
        if !gone {
            return Err(RpcError::new(NOT_FOUND, "Could not find that networkevent"));
        }
        Ok(json!({}))
    })
}
