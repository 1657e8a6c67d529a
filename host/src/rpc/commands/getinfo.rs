//! `getinfo`: who and where this node is. Lightning counters stay 0 until the engine runs;
//! `blockheight` is the block stream's, with CLN's sync warnings while catching up.

use serde_json::json;

use super::{Command, CommandFuture, Ctx};
use crate::rpc::Reply;
use crate::rpc::params::Params;

pub const GETINFO: Command = Command {
    name: "getinfo",
    usage: "",
    category: "utility",
    description: "Show information about this node.",
    verbose: "Returns the node id, alias and color, peer and channel counts, the addresses it announces, \
              the version, the block height it has processed, the network, the routing fees it has \
              collected and its feature bits, with Core Lightning's field names.",
    params: &[],
    extra_params: false,
    run,
};

fn run(ctx: Ctx, _p: Params) -> CommandFuture {
    Box::pin(async move {
        let n = &ctx.node;
        let features = json!({"init": "", "node": "", "channel": "", "invoice": ""});
        let (bitcoind_sync, lightningd_sync) = n.chain.warnings();
        let mut info = json!({
            "id": n.node_id,
            "alias": n.alias,
            "color": n.color,
            "num_peers": 0,
            "num_pending_channels": 0,
            "num_active_channels": 0,
            "num_inactive_channels": 0,
            "address": [],
            "binding": [],
            "version": concat!("v", env!("CARGO_PKG_VERSION")),
            "blockheight": n.chain.height(),
            "network": n.config.network.as_str(),
            "fees_collected_msat": 0,
            "lightning-dir": n.config.net_dir.display().to_string(),
            "our_features": features,
        });
        if let Some(w) = bitcoind_sync {
            info["warning_bitcoind_sync"] = json!(w);
        }
        if let Some(w) = lightningd_sync {
            info["warning_lightningd_sync"] = json!(w);
        }
        Reply::Ok(info)
    })
}
