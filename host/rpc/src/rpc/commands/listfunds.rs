//! `listfunds [spent]`: the wallet's outputs and our channels.

use serde_json::json;

use super::{Command, CommandFuture, Ctx, command};
use crate::rpc::params::{Params, opt};
use crate::wallet::{Fund, Status};

pub const LISTFUNDS: Command = Command::new("listfunds", &[opt("spent")], run);

fn run(ctx: Ctx, p: Params) -> CommandFuture {
    command(async move {
        let spent = p.opt_bool("spent")?.unwrap_or(false);
        let outputs: Vec<_> = ctx
            .node
            .wallet
            .list_funds(spent)
            .iter()
            .map(fund_json)
            .collect();
        let channels: Vec<_> = match ctx.node.lightning.get() {
            Some(e) => e
                .list_channels()
                .iter()
                .filter(|c| c.funding_txo.is_some())
                .map(|c| super::channels::channel_json(e, c))
                // Closed channels still resolving on chain, as in CLN.
                .chain(
                    e.closed_channels()
                        .iter()
                        .map(|r| super::channels::closed_peerchannel_json(e, r)),
                )
                .map(|v| {
                    let mut o = json!({
                        "peer_id": v["peer_id"],
                        "connected": v["peer_connected"],
                        "state": v["state"],
                        "channel_id": v["channel_id"],
                        "our_amount_msat": v["to_us_msat"],
                        "amount_msat": v["total_msat"],
                        "funding_txid": v["funding_txid"],
                        "funding_output": v["funding_outnum"],
                    });
                    if let Some(s) = v.get("short_channel_id") {
                        o["short_channel_id"] = s.clone();
                    }
                    o
                })
                .collect(),
            None => vec![],
        };
        Ok(json!({"outputs": outputs, "channels": channels}))
    })
}

/// A JSON-friendly view of `listfunds` outputs.
pub fn fund_json(f: &Fund) -> serde_json::Value {
    let mut o = json!({
        "txid": f.outpoint.txid.to_string(),
        "output": f.outpoint.vout,
        "amount_msat": f.value.to_sat() * 1000,
        "scriptpubkey": fulgur_base::hex(f.script.as_bytes()),
        "status": f.status.as_str(),
        "reserved": f.reserved_to.is_some(),
    });
    if let Some(a) = &f.address {
        o["address"] = a.clone().into();
    }
    if let (Some(h), Status::Confirmed) = (f.blockheight, f.status) {
        o["blockheight"] = h.into();
    }
    if let Some(r) = f.reserved_to {
        o["reserved_to_block"] = r.into();
    }
    o
}
