//! `listchainmoves [index] [start] [limit]` and `listchannelmoves [index] [start] [limit]`:
//! CLN's record of balance changes on chain and inside channels, in the order made
//! (`store::moves` keeps them; the engine and the wallet record every movement, whether or
//! not a plugin listens to `coin_movement`).

use fulgur_protocol::RpcError;
use serde_json::{Value, json};

use super::{Command, CommandFuture, Ctx, command};
use crate::rpc::params::{Params, opt, paging_needs_index};
use crate::store::moves::{self, ChainMove, ChannelMove};

pub const LISTCHAINMOVES: Command = Command::new(
    "listchainmoves",
    &[opt("index"), opt("start"), opt("limit")],
    run_chain,
);

pub const LISTCHANNELMOVES: Command = Command::new(
    "listchannelmoves",
    &[opt("index"), opt("start"), opt("limit")],
    run_channel,
);

/// `index`, `start` and `limit` of a list paged by `created_index`, with CLN's checks
/// that `start` and `limit` come with an index.
pub(super) fn index_start_limit(
    p: &Params,
) -> Result<(Option<String>, u64, Option<u32>), RpcError> {
    let index = p.opt_str("index")?;
    let start = p.opt_u64("start")?.unwrap_or(0);
    let limit = match p.opt_u64("limit")? {
        None => None,
        Some(l) => Some(u32::try_from(l).map_err(|_| {
            RpcError::invalid_params(format!("limit: should be a u32: invalid token '{l}'"))
        })?),
    };
    paging_needs_index(start, limit, index.is_some())?;
    Ok((index, start, limit))
}

/// `start` and `limit`, with CLN's checks (`what`: "chainmoves" or "channelmoves").
fn paging(p: &Params, what: &str) -> Result<(u64, Option<u32>), RpcError> {
    let (index, start, limit) = index_start_limit(p)?;
    match index.as_deref() {
        None | Some("created") => Ok((start, limit)),
        Some("updated") | Some("deleted") => Err(RpcError::invalid_params(format!(
            "index must be 'created', since {what} are never updated"
        ))),
        Some(other) => Err(RpcError::invalid_params(format!(
            "index: should be 'created', 'updated' or 'deleted': invalid token '{other}'"
        ))),
    }
}

fn chain_json(index: u64, m: &ChainMove) -> Value {
    let mut o = json!({
        "created_index": index,
        "account_id": m.account_id,
        "primary_tag": m.primary_tag,
        "extra_tags": m.extra_tags,
        "credit_msat": m.credit_msat,
        "debit_msat": m.debit_msat,
        "timestamp": m.timestamp,
        "utxo": m.utxo,
        "output_msat": m.output_msat,
        "blockheight": m.blockheight,
    });
    let optional = [
        ("peer_id", &m.peer_id),
        ("originating_account", &m.originating_account),
        ("spending_txid", &m.spending_txid),
        ("payment_hash", &m.payment_hash),
    ];
    for (k, v) in optional {
        if let Some(v) = v {
            o[k] = json!(v);
        }
    }
    if let Some(n) = m.output_count {
        o["output_count"] = json!(n);
    }
    o
}

fn channel_json(index: u64, m: &ChannelMove) -> Value {
    let mut o = json!({
        "created_index": index,
        "account_id": m.account_id,
        "primary_tag": m.primary_tag,
        "credit_msat": m.credit_msat,
        "debit_msat": m.debit_msat,
        "timestamp": m.timestamp,
        "fees_msat": m.fees_msat,
    });
    if let Some(h) = &m.payment_hash {
        o["payment_hash"] = json!(h);
    }
    if let Some(n) = m.part_id {
        o["part_id"] = json!(n);
    }
    if let Some(n) = m.group_id {
        o["group_id"] = json!(n);
    }
    o
}

fn run_chain(ctx: Ctx, p: Params) -> CommandFuture {
    command(async move {
        let (start, limit) = paging(&p, "chainmoves")?;
        let rows = ctx
            .node
            .store
            .with(move |c| moves::chain_moves(c, start, limit))
            .await
            .map_err(|e| RpcError::lightningd(e.to_string()))?;
        let all: Vec<Value> = rows.iter().map(|(i, m)| chain_json(*i, m)).collect();
        Ok(json!({ "chainmoves": all }))
    })
}

fn run_channel(ctx: Ctx, p: Params) -> CommandFuture {
    command(async move {
        let (start, limit) = paging(&p, "channelmoves")?;
        let rows = ctx
            .node
            .store
            .with(move |c| moves::channel_moves(c, start, limit))
            .await
            .map_err(|e| RpcError::lightningd(e.to_string()))?;
        let all: Vec<Value> = rows.iter().map(|(i, m)| channel_json(*i, m)).collect();
        Ok(json!({ "channelmoves": all }))
    })
}
