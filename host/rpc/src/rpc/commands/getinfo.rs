//! `getinfo`: who and where this node is. Lightning counters stay 0 until the engine runs;
//! `blockheight` is the block stream's, with CLN's sync warnings while catching up.

use serde_json::json;

use super::{Command, CommandFuture, Ctx, command};
use crate::rpc::params::Params;

pub const GETINFO: Command = Command::new("getinfo", &[], run);

fn run(ctx: Ctx, _p: Params) -> CommandFuture {
    command(async move {
        let n = &ctx.node;
        let mut counts = (0usize, 0usize, 0usize);
        let mut fees_collected = 0u64;
        if let Some(l) = n.lightning.get() {
            // CLN's classes: awaiting lockin is pending; normal, shutting down and
            // negotiating the closing fee are active whether or not the peer is connected.
            for c in l.list_channels() {
                if !c.is_channel_ready {
                    counts.0 += 1;
                } else if c.channel_shutdown_state
                    != Some(lightning::ln::channel_state::ChannelShutdownState::ShutdownComplete)
                {
                    counts.1 += 1;
                } else {
                    counts.2 += 1;
                }
            }
            // Closed channels not forgotten yet (CLOSINGD_COMPLETE, AWAITING_UNILATERAL,
            // ONCHAIN) are inactive in CLN.
            counts.2 += l.closed_channels().len();
            fees_collected = l.fees_collected_msat();
        }
        let (features, num_peers, address) = match n.lightning.get() {
            Some(l) => {
                let (init, node, channel) = l.our_features();
                (
                    json!({
                        "init": crate::lightning::features_hex(&init),
                        "node": crate::lightning::features_hex(&node),
                        "channel": crate::lightning::features_hex(&channel),
                        "invoice": crate::lightning::features_hex(crate::lightning::invoice_features().le_flags()),
                    }),
                    l.connected_peers().len(),
                    l.announced_addresses()
                        .iter()
                        .map(crate::cln_json::netaddr_json)
                        .collect::<Vec<_>>(),
                )
            }
            None => (
                json!({"init": "", "node": "", "channel": "", "invoice": ""}),
                0,
                vec![],
            ),
        };
        let binding: Vec<_> = n
            .bindings
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(crate::cln_json::socket_json)
            .collect();
        let (bitcoind_sync, lightningd_sync) = n.chain.warnings();
        let mut info = json!({
            "id": n.node_id,
            "alias": n.alias,
            "color": n.color,
            "num_peers": num_peers,
            "num_pending_channels": counts.0,
            "num_active_channels": counts.1,
            "num_inactive_channels": counts.2,
            "address": address,
            "binding": binding,
            "version": fulgur_base::VERSION,
            "blockheight": n.chain.height(),
            "network": n.config.network.as_str(),
            "fees_collected_msat": fees_collected,
            "lightning-dir": n.config.net_dir.display().to_string(),
            "our_features": features,
        });
        if let Some(w) = bitcoind_sync {
            info["warning_bitcoind_sync"] = json!(w);
        }
        if let Some(w) = lightningd_sync {
            info["warning_lightningd_sync"] = json!(w);
        }
        Ok(info)
    })
}
