//! Opening channels funded from outside `fundchannel`, as CLN: `fundchannel_start id amount
//! ...` (the output to pay), `fundchannel_complete id psbt` (the PSBT paying it; answers
//! once the peer signed, then the caller sends it), `fundchannel_cancel id`, and
//! `multifundchannel destinations ...` (several channels in one transaction). The engine's
//! side is `fulgur_engine::funding`.

use bitcoin::secp256k1::PublicKey;
use fulgur_base::hex;
use fulgur_protocol::RpcError;
use serde_json::{Value, json};

use super::channels::{all_amount, bool_param, engine, open_error, u64_param, unsupported};
use super::{Command, CommandFuture, Ctx, command};
use crate::cln_json::channel_type_json;
use crate::lightning::Lightning;
use crate::lightning::channels::FundFrom;
use crate::lightning::funding::OpenRequest;
use crate::rpc::params::{Params, opt, req};

pub const FUNDCHANNEL_START: Command = Command::new(
    "fundchannel_start",
    &[
        req("id"),
        req("amount"),
        opt("feerate"),
        opt("announce"),
        opt("close_to"),
        opt("push_msat"),
        opt("mindepth"),
        opt("reserve"),
        opt("channel_type"),
    ],
    run_start,
);

pub const FUNDCHANNEL_COMPLETE: Command = Command::new(
    "fundchannel_complete",
    &[req("id"), req("psbt"), opt("withhold")],
    run_complete,
);

pub const FUNDCHANNEL_CANCEL: Command =
    Command::new("fundchannel_cancel", &[req("id")], run_cancel);

pub const MULTIFUNDCHANNEL: Command = Command::new(
    "multifundchannel",
    &[
        req("destinations"),
        opt("feerate"),
        opt("minconf"),
        opt("utxos"),
        opt("minchannels"),
        opt("commitment_feerate"),
    ],
    run_multi,
);

/// CLN's warning with every `fundchannel_start`.
const WARNING_USAGE: &str = "The funding transaction MUST NOT be broadcast until after channel establishment has been successfully completed by running `fundchannel_complete`";

fn node_id(p: &Params) -> Result<PublicKey, RpcError> {
    let s = p.str("id")?;
    s.parse().map_err(|_| {
        RpcError::invalid_params(format!("id: should be a node id: invalid token '{s}'"))
    })
}

/// CLN's checks that `id` is a peer (306) and connected (305).
fn known_connected(e: &Lightning, id: &PublicKey) -> Result<(), RpcError> {
    if e.is_connected(id) {
        return Ok(());
    }
    if e.list_channels()
        .iter()
        .any(|c| c.counterparty.node_id == *id)
    {
        return Err(RpcError::new(305, "Peer not connected"));
    }
    Err(RpcError::new(306, "Unknown peer"))
}

/// A whole-satoshi amount (not `all`).
fn sat(name: &str, v: Option<&Value>) -> Result<u64, RpcError> {
    let v =
        v.ok_or_else(|| RpcError::invalid_params(format!("missing required parameter: {name}")))?;
    match crate::rpc::onchain::sat_or_all(name, v)? {
        crate::wallet::Amt::Sat(s) => Ok(s),
        crate::wallet::Amt::All => Err(RpcError::invalid_params(format!(
            "{name}: should be a satoshi amount: invalid token 'all'"
        ))),
    }
}

fn push_too_big(push_msat: u64, amount_sat: u64) -> Result<(), RpcError> {
    if push_msat > amount_sat * 1000 {
        return Err(RpcError::new(
            301,
            format!(
                "Requested to push_msat of {push_msat}msat is greater than available funding amount {amount_sat}sat"
            ),
        ));
    }
    Ok(())
}

fn run_start(ctx: Ctx, p: Params) -> CommandFuture {
    command(async move {
        let e = engine(&ctx.node)?;
        unsupported(&p, "close_to reserve channel_type")?;
        let id = node_id(&p)?;
        let amount = sat("amount", p.get("amount"))?;
        if p.get("feerate").is_some() {
            crate::rpc::onchain::feerate(p.get("feerate"), &*ctx.node.chain.fees())?;
        }
        let push_msat = u64_param(&p, "push_msat")?.unwrap_or(0);
        push_too_big(push_msat, amount)?;
        let mindepth = u64_param(&p, "mindepth")?.map(|d| d as u32);
        let open = OpenRequest {
            peer: id,
            amount_sat: amount,
            push_msat,
            announce: bool_param(&p, "announce")?.unwrap_or(true),
            mindepth,
        };
        known_connected(&e, &id)?;
        let ready = e.start_open(&open).await.map_err(open_error)?;
        let address = bitcoin::Address::from_script(&ready.script, ctx.node.wallet.network())
            .map(|a| a.to_string())
            .map_err(|err| RpcError::new(-1, format!("funding script has no address: {err}")))?;
        Ok(json!({
            "funding_address": address,
            "scriptpubkey": hex(ready.script.as_bytes()),
            "channel_type": channel_type_json(ready.channel_type.as_ref()),
            "warning_usage": WARNING_USAGE,
            "mindepth": mindepth.unwrap_or(e.default_min_depth()),
        }))
    })
}

fn run_complete(ctx: Ctx, p: Params) -> CommandFuture {
    command(async move {
        let e = engine(&ctx.node)?;
        let id = node_id(&p)?;
        let (psbt, _) = super::psbt::psbt_param(&p, "psbt")?;
        // The funding is never broadcast here: holding it back is the default.
        bool_param(&p, "withhold")?;
        known_connected(&e, &id)?;
        let channel_id = e.complete_open(id, &psbt).await.map_err(open_error)?;
        Ok(json!({
            "channel_id": hex(&channel_id.0),
            "commitments_secured": true,
        }))
    })
}

fn run_cancel(ctx: Ctx, p: Params) -> CommandFuture {
    command(async move {
        let e = engine(&ctx.node)?;
        let id = node_id(&p)?;
        if !e.is_connected(&id)
            && !e
                .list_channels()
                .iter()
                .any(|c| c.counterparty.node_id == id)
        {
            return Err(RpcError::new(306, "Unknown peer"));
        }
        let said = e.cancel_open(id).await.map_err(open_error)?;
        Ok(json!({ "cancelled": said }))
    })
}

/// The fields of a `destinations` entry.
const DESTINATION: &[crate::rpc::params::ParamSpec] = &[
    req("id"),
    req("amount"),
    opt("announce"),
    opt("push_msat"),
    opt("close_to"),
    opt("request_amt"),
    opt("compact_lease"),
    opt("mindepth"),
    opt("reserve"),
];

/// One `destinations` entry, with the address to connect to when one was given.
struct Destination {
    open: OpenRequest,
    all: bool,
    addr: Option<crate::lightning::net::NetAddr>,
}

fn bad_destination(msg: &str, v: &Value) -> RpcError {
    RpcError::invalid_params(format!("destinations: {msg}: invalid token '{v}'"))
}

fn destinations(p: &Params) -> Result<Vec<Destination>, RpcError> {
    let Some(Value::Array(items)) = p.get("destinations") else {
        return Err(bad_destination(
            "must be an array",
            p.get("destinations").unwrap_or(&Value::Null),
        ));
    };
    if items.is_empty() {
        return Err(bad_destination("must have at least one entry", &json!([])));
    }
    let mut out: Vec<Destination> = vec![];
    for item in items {
        let Value::Object(m) = item else {
            return Err(bad_destination("must be an object", item));
        };
        let one = crate::rpc::params::bind(DESTINATION, item, false)?;
        for refused in ["close_to", "request_amt", "compact_lease", "reserve"] {
            if m.get(refused).is_some_and(|v| !v.is_null()) {
                return Err(RpcError::invalid_params(format!(
                    "{refused}: not supported by this node"
                )));
            }
        }
        let id_s = m
            .get("id")
            .and_then(Value::as_str)
            .ok_or_else(|| bad_destination("invalid node id", item))?;
        let (id_part, addr) = match id_s.split_once('@') {
            Some((i, a)) => (
                i,
                Some(
                    crate::lightning::net::NetAddr::parse(a, crate::lightning::net::DEFAULT_PORT)
                        .map_err(|_| bad_destination("invalid node id", item))?,
                ),
            ),
            None => (id_s, None),
        };
        let peer: PublicKey = id_part
            .parse()
            .map_err(|_| bad_destination("invalid node id", item))?;
        let amount = m
            .get("amount")
            .ok_or_else(|| bad_destination("amount is required", item))?;
        let (amount_sat, all) = match crate::rpc::onchain::sat_or_all("amount", amount)? {
            crate::wallet::Amt::Sat(s) if s < 546 => {
                return Err(bad_destination("output would be dust", item));
            }
            crate::wallet::Amt::Sat(s) => (s, false),
            crate::wallet::Amt::All => (0, true),
        };
        if all && out.iter().any(|d| d.all) {
            return Err(bad_destination(
                "only one destination can indicate \"all\" for 'amount'",
                item,
            ));
        }
        if out.iter().any(|d| d.open.peer == peer) {
            return Err(bad_destination("Duplicate destination", item));
        }
        let push_msat = u64_param(&one, "push_msat")?.unwrap_or(0);
        out.push(Destination {
            open: OpenRequest {
                peer,
                amount_sat,
                push_msat,
                announce: bool_param(&one, "announce")?.unwrap_or(true),
                mindepth: u64_param(&one, "mindepth")?.map(|d| d as u32),
            },
            all,
            addr,
        });
    }
    Ok(out)
}

/// A `failed` entry of `multifundchannel`.
fn failure(peer: &PublicKey, method: &str, err: RpcError) -> Value {
    json!({
        "id": peer.to_string(),
        "method": method,
        "error": {"code": err.code, "message": err.message},
    })
}

fn run_multi(ctx: Ctx, p: Params) -> CommandFuture {
    command(async move {
        let e = engine(&ctx.node)?;
        let mut dests = destinations(&p)?;
        let feerate = crate::rpc::onchain::feerate(p.get("feerate"), &*ctx.node.chain.fees())?;
        if p.get("commitment_feerate").is_some() {
            crate::rpc::onchain::feerate(p.get("commitment_feerate"), &*ctx.node.chain.fees())?;
        }
        let minconf = u64_param(&p, "minconf")?.unwrap_or(1) as u32;
        let utxos = crate::rpc::onchain::utxos(p.get("utxos"))?;
        let minchannels = match u64_param(&p, "minchannels")? {
            Some(0) => {
                return Err(RpcError::invalid_params(
                    "minchannels: should be a positive integer: invalid token '0'",
                ));
            }
            Some(n) => n as usize,
            None => dests.len(),
        };
        // 'all': what the wallet holds beyond the other channels, the fee and the reserve.
        if let Some(i) = dests.iter().position(|d| d.all) {
            let others: u64 = dests
                .iter()
                .filter(|d| !d.all)
                .map(|d| d.open.amount_sat)
                .sum();
            let peer = dests[i].open.peer;
            dests[i].open.amount_sat =
                all_amount(&ctx, &e, &peer, minconf, feerate, others, dests.len())?;
        }
        for d in &dests {
            push_too_big(d.open.push_msat, d.open.amount_sat)?;
        }
        // Connect first, as CLN's multifundchannel does.
        let mut failed = vec![];
        let mut opens = vec![];
        for d in dests {
            let connected = match &d.addr {
                _ if e.is_connected(&d.open.peer) => Ok(()),
                Some(a) => super::peers::dial(&e, d.open.peer, a).await.map(drop),
                None => known_connected(&e, &d.open.peer),
            };
            match connected {
                Ok(()) => opens.push(d.open),
                Err(err) => failed.push(failure(&d.open.peer, "connect", err)),
            }
        }
        if opens.len() < minchannels {
            let first = failed.first().cloned().unwrap_or(Value::Null);
            return Err(RpcError::new(
                first["error"]["code"].as_i64().unwrap_or(-1),
                first["error"]["message"]
                    .as_str()
                    .unwrap_or("not enough channels could be opened")
                    .to_string(),
            ));
        }
        let done = e
            .open_batch(&opens, feerate, FundFrom { minconf, utxos }, minchannels)
            .await
            .map_err(open_error)?;
        for (peer, err) in done.failed {
            failed.push(failure(&peer, "fundchannel_start", open_error(err)));
        }
        let mut out = json!({
            "tx": bitcoin::consensus::encode::serialize_hex(&done.tx),
            "txid": done.tx.compute_txid().to_string(),
            "channel_ids": done.channels.iter().map(|c| json!({
                "id": c.peer.to_string(),
                "outnum": c.outnum,
                "channel_id": hex(&c.channel_id.0),
                "channel_type": channel_type_json(c.channel_type.as_ref()),
            })).collect::<Vec<_>>(),
        });
        if !failed.is_empty() {
            out["failed"] = Value::Array(failed);
        }
        Ok(out)
    })
}
