//! Static channel backups and emergency recovery (CLN's chanbackup plugin, built in):
//! `staticbackup`, `getemergencyrecoverdata`, `emergencyrecover` and `recoverchannel`. The
//! engine's `recovery` module holds the formats and what recovering a channel does.

use fulgur_protocol::RpcError;
use serde_json::{Value, json};

use super::channels::engine;
use super::{Command, CommandFuture, Ctx, command};
use crate::lightning::recovery::{RecoverError, Scb};
use crate::rpc::params::{Params, req};
use fulgur_base::hex;

pub const STATICBACKUP: Command = Command::new("staticbackup", &[], run_staticbackup);
pub const GETEMERGENCYRECOVERDATA: Command =
    Command::new("getemergencyrecoverdata", &[], run_getemergencyrecoverdata);
pub const EMERGENCYRECOVER: Command = Command::new("emergencyrecover", &[], run_emergencyrecover);
pub const RECOVERCHANNEL: Command =
    Command::new("recoverchannel", &[req("scb")], run_recoverchannel);

fn failed(e: RecoverError) -> RpcError {
    match e {
        RecoverError::Scb(_) => RpcError::invalid_params(e.to_string()),
        _ => RpcError::new(-1, e.to_string()),
    }
}

fn ids(v: Vec<[u8; 32]>) -> Value {
    Value::Array(v.iter().map(|i| Value::String(hex(i))).collect())
}

/// `staticbackup`: one backup per channel (`recoverchannel` takes them back).
fn run_staticbackup(ctx: Ctx, _p: Params) -> CommandFuture {
    command(async move {
        let e = engine(&ctx.node)?;
        let scb = e
            .static_backups()
            .iter()
            .map(|s| s.encode().map(|b| Value::String(hex(&b))))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| RpcError::new(-1, e.to_string()))?;
        Ok(json!({ "scb": scb }))
    })
}

/// `getemergencyrecoverdata`: the `emergency.recover` file as it is now.
fn run_getemergencyrecoverdata(ctx: Ctx, _p: Params) -> CommandFuture {
    command(async move {
        let e = engine(&ctx.node)?;
        let (bytes, channels) = e.recover_file_data().map_err(failed)?;
        Ok(json!({
            "filedata": hex(&bytes),
            // A recovered channel's penalty needs the peer's revocation secrets, which a
            // static backup does not hold: a peer that closes with an old state is not
            // punished (said as it is, though CLN's text for `false` speaks of its legacy
            // file format).
            "can_create_penalty": false,
            "backed_up_channel_ids": ids(channels),
        }))
    })
}

/// `emergencyrecover`: stubs for the channels of `emergency.recover` the node does not know.
fn run_emergencyrecover(ctx: Ctx, _p: Params) -> CommandFuture {
    command(async move {
        let e = engine(&ctx.node)?;
        let stubs = e.emergency_recover().await.map_err(failed)?;
        Ok(json!({ "stubs": ids(stubs) }))
    })
}

/// `recoverchannel scb`: stubs for the backups given (`staticbackup`'s items).
fn run_recoverchannel(ctx: Ctx, p: Params) -> CommandFuture {
    command(async move {
        let bad = || RpcError::invalid_params("scb: should be an array of hex SCBs");
        let list = match p.get("scb") {
            Some(Value::Array(a)) => a.clone(),
            _ => return Err(bad()),
        };
        let mut scbs = vec![];
        for v in &list {
            let bytes = v.as_str().and_then(fulgur_base::unhex).ok_or_else(bad)?;
            scbs.push(Scb::decode(&bytes).map_err(|e| failed(RecoverError::Scb(e)))?);
        }
        let e = engine(&ctx.node)?;
        let stubs = e.recover_channels(scbs).await.map_err(failed)?;
        Ok(json!({ "stubs": ids(stubs) }))
    })
}
