//! `connect`, `disconnect` and `listpeers`: Lightning peers through LDK's `PeerManager`.

use std::sync::Arc;

use bitcoin::secp256k1::PublicKey;
use fulgur_protocol::{RpcError, error::codes};
use serde_json::{Value, json};

use super::{Command, CommandFuture, Ctx, command};
use crate::cln_json::{address_json, netaddr_json};
use crate::lightning::Lightning;
use crate::lightning::net::{DEFAULT_PORT, Dial, NetAddr};
use crate::node::Node;
use crate::rpc::params::{Params, opt, req};

pub const CONNECT: Command = Command::new(
    "connect",
    &[req("id"), opt("host"), opt("port")],
    run_connect,
);

pub const DISCONNECT: Command =
    Command::new("disconnect", &[req("id"), opt("force")], run_disconnect);

pub const LISTPEERS: Command = Command::new("listpeers", &[opt("id"), opt("level")], run_listpeers);

fn engine(node: &Node) -> Result<Arc<Lightning>, RpcError> {
    node.lightning.get().cloned().ok_or_else(|| {
        RpcError::new(
            -1,
            "The Lightning engine has not started yet (waiting for the Bitcoin backend)",
        )
    })
}

pub(super) fn parse_id(s: &str) -> Result<PublicKey, RpcError> {
    s.parse::<PublicKey>().map_err(|_| {
        RpcError::invalid_params(format!("id: should be a node id: invalid token '{s}'"))
    })
}

pub(super) fn port_param(p: &Params) -> Result<Option<u16>, RpcError> {
    let bad = |v: &Value| {
        RpcError::invalid_params(format!(
            "port: should be a 16-bit integer: invalid token '{v}'"
        ))
    };
    match p.get("port") {
        None | Some(Value::Null) => Ok(None),
        Some(v @ Value::Number(n)) => n
            .as_u64()
            .and_then(|n| u16::try_from(n).ok())
            .map(Some)
            .ok_or_else(|| bad(v)),
        Some(v @ Value::String(s)) => s.parse::<u16>().map(Some).map_err(|_| bad(v)),
        Some(v) => Err(bad(v)),
    }
}

fn features_hex(f: &lightning::types::features::InitFeatures) -> String {
    crate::lightning::features_hex(f.le_flags())
}

fn run_connect(ctx: Ctx, p: Params) -> CommandFuture {
    command(async move {
        let raw = p.str("id")?;
        let (id_s, inline) = match raw.split_once('@') {
            Some((i, h)) => (i.to_string(), Some(h.to_string())),
            None => (raw.clone(), None),
        };
        let id = parse_id(&id_s)?;
        let host = p.opt_str("host")?;
        let port = port_param(&p)?;
        if inline.is_some() && (host.is_some() || port.is_some()) {
            return Err(RpcError::invalid_params(
                "Can't specify host as both xxx@yyy and separate argument",
            ));
        }
        if host.is_none() && port.is_some() {
            return Err(RpcError::invalid_params("Can't specify port without host"));
        }
        let target = match (inline, host) {
            (Some(h), _) => NetAddr::parse(&h, DEFAULT_PORT),
            (None, Some(h)) => NetAddr::parse(&h, port.unwrap_or(DEFAULT_PORT)).map(|mut a| {
                if let Some(p) = port {
                    a.port = p;
                }
                a
            }),
            (None, None) => {
                return Err(RpcError::new(
                    400,
                    "Unable to connect, no address known for peer",
                ));
            }
        };
        let target = match target {
            Ok(t) => t,
            Err(e) => return Err(RpcError::invalid_params(format!("host: {e}"))),
        };
        let l = engine(&ctx.node)?;
        let (peer, via) = dial(&l, id, &target).await?;
        // Through the proxy, LDK sees the proxy's address: the target is what we reached,
        // unless it is a name (CLN's schema has no `dns` type here).
        let address = match (&via, &peer.socket_address) {
            (Dial::Proxied(t), _) if t.kind() != "dns" => netaddr_json(t),
            (_, Some(s)) => address_json(&s.to_string()),
            (_, None) => netaddr_json(&target),
        };
        Ok(json!({
            "id": id.to_string(),
            "features": features_hex(&peer.init_features),
            "direction": if peer.is_inbound_connection { "in" } else { "out" },
            "address": address,
        }))
    })
}

/// Connects to `id` at `target` with CLN's `connect` errors: through the `--proxy` when
/// CLN would (a `.onion`, or anything with `--always-use-proxy`, then nothing is resolved
/// here), otherwise resolved and each address tried in turn; the peer's details once
/// connected, and how it was reached.
pub(super) async fn dial(
    l: &Lightning,
    id: PublicKey,
    target: &NetAddr,
) -> Result<(lightning::ln::peer_handler::PeerDetails, Dial), RpcError> {
    let dials = l.dials(target).await.map_err(|e| RpcError::new(401, e))?;
    let mut last = String::from("no address");
    for a in dials {
        match l.connect(id, a.clone()).await {
            Ok(()) => match l.peer(&id) {
                Some(peer) => return Ok((peer, a)),
                None => last = format!("{a}: peer disconnected"),
            },
            Err(e) => last = e,
        }
    }
    Err(RpcError::new(401, format!("Unable to connect: {last}")))
}

fn run_disconnect(ctx: Ctx, p: Params) -> CommandFuture {
    command(async move {
        let id = p.str("id").and_then(|s| parse_id(&s))?;
        let force = p.opt_bool("force")?.unwrap_or(false);
        let l = engine(&ctx.node)?;
        if !l.is_connected(&id) {
            return Err(RpcError::new(-1, "Peer not connected"));
        }
        // As CLN: a channel that still talks to its peer keeps it, unless forced.
        if !force
            && let Some(state) = l
                .list_channels()
                .iter()
                .filter(|c| c.counterparty.node_id == id)
                .map(super::channels::state_of)
                .find(|s| super::channels::wants_peer(s))
        {
            return Err(RpcError::new(
                -1,
                format!("Peer has (at least one) channel in state {state}"),
            ));
        }
        l.disconnect(id);
        Ok(json!({}))
    })
}

fn run_listpeers(ctx: Ctx, p: Params) -> CommandFuture {
    command(async move {
        let filter = p.opt_str("id")?.map(|s| parse_id(&s)).transpose()?;
        p.opt_str("level")?;
        let Some(l) = ctx.node.lightning.get().cloned() else {
            return Ok(json!({"peers": []}));
        };
        // Peers of open channels and of closed ones not forgotten yet (as in CLN).
        let channels: Vec<PublicKey> = l
            .list_channels()
            .iter()
            .map(|c| c.counterparty.node_id)
            .chain(
                l.closed_channels()
                    .iter()
                    .filter_map(|r| r.peer_id.as_ref()?.parse().ok()),
            )
            .collect();
        let peers: Vec<Value> = l
            .connected_peers()
            .into_iter()
            .filter(|d| filter.is_none_or(|f| f == d.counterparty_node_id))
            .map(|d| {
                let n = channels
                    .iter()
                    .filter(|c| **c == d.counterparty_node_id)
                    .count();
                let netaddr: Vec<String> = d.socket_address.iter().map(|a| a.to_string()).collect();
                json!({
                    "id": d.counterparty_node_id.to_string(),
                    "connected": true,
                    "num_channels": n,
                    "netaddr": netaddr,
                    "features": features_hex(&d.init_features),
                })
            })
            .collect();
        // Channel peers we are not connected to are listed too, as in CLN.
        let mut peers = peers;
        let mut offline: Vec<PublicKey> = channels
            .iter()
            .copied()
            .filter(|id| filter.is_none_or(|f| f == *id))
            .filter(|id| !l.is_connected(id))
            .collect();
        offline.sort();
        offline.dedup();
        for id in offline {
            let n = channels.iter().filter(|c| **c == id).count();
            peers.push(json!({"id": id.to_string(), "connected": false, "num_channels": n}));
        }
        Ok(json!({"peers": peers}))
    })
}

pub const SENDCUSTOMMSG: Command = Command::new(
    "sendcustommsg",
    &[req("node_id"), req("msg")],
    run_sendcustommsg,
);

/// The peer messages LDK 0.3 reads itself (`lightning::ln::wire`), by BOLT name: sending one
/// as a custom message would confuse the peer's state machine.
fn engine_message_name(ty: u16) -> Option<&'static str> {
    Some(match ty {
        1 => "warning",
        2 => "stfu",
        7 => "peer_storage",
        9 => "peer_storage_retrieval",
        16 => "init",
        17 => "error",
        18 => "ping",
        19 => "pong",
        32 => "open_channel",
        33 => "accept_channel",
        34 => "funding_created",
        35 => "funding_signed",
        36 => "channel_ready",
        38 => "shutdown",
        39 => "closing_signed",
        40 => "closing_complete",
        41 => "closing_sig",
        64 => "open_channel2",
        65 => "accept_channel2",
        66 => "tx_add_input",
        67 => "tx_add_output",
        68 => "tx_remove_input",
        69 => "tx_remove_output",
        70 => "tx_complete",
        71 => "tx_signatures",
        72 => "tx_init_rbf",
        73 => "tx_ack_rbf",
        74 => "tx_abort",
        77 => "splice_locked",
        80 => "splice_init",
        81 => "splice_ack",
        127 => "start_batch",
        128 => "update_add_htlc",
        130 => "update_fulfill_htlc",
        131 => "update_fail_htlc",
        132 => "commitment_signed",
        133 => "revoke_and_ack",
        134 => "update_fee",
        135 => "update_fail_malformed_htlc",
        136 => "channel_reestablish",
        256 => "channel_announcement",
        257 => "node_announcement",
        258 => "channel_update",
        259 => "announcement_signatures",
        261 => "query_short_channel_ids",
        262 => "reply_short_channel_ids_end",
        263 => "query_channel_range",
        264 => "reply_channel_range",
        265 => "gossip_timestamp_filter",
        513 => "onion_message",
        _ => return None,
    })
}

/// `msg` as its type and body: hex (any case) of at least the 2-byte type; `None` for
/// anything else, non-ASCII text included (slicing such a string by byte pairs used to
/// panic).
fn custom_msg_bytes(msg: &str) -> Option<(u16, Vec<u8>)> {
    use bitcoin::hex::FromHex;
    let all = Vec::<u8>::from_hex(msg).ok()?;
    let (ty, body) = all.split_first_chunk::<2>()?;
    Some((u16::from_be_bytes(*ty), body.to_vec()))
}

fn run_sendcustommsg(ctx: Ctx, p: Params) -> CommandFuture {
    command(async move {
        // Parameters first, as CLN: a bad one is reported whatever the engine's state.
        let id = p.str("node_id").and_then(|s| parse_id(&s))?;
        let msg = p.str("msg")?;
        let Some((ty, bytes)) = custom_msg_bytes(&msg) else {
            return Err(RpcError::invalid_params(format!(
                "msg: should be a hex string of at least 2 bytes: invalid token '{msg}'"
            )));
        };
        let e = engine(&ctx.node)?;
        // CLN's checks, order, codes and messages.
        if let Some(name) = engine_message_name(ty) {
            return Err(RpcError::new(
                codes::INVALID_REQUEST,
                format!(
                    "Cannot send messages of type {ty} ({name}). It is not possible to send messages that have a type managed internally since that might cause issues with the internal state tracking."
                ),
            ));
        }
        if ty % 2 == 0 {
            return Err(RpcError::new(
                codes::INVALID_REQUEST,
                format!(
                    "Cannot send even-typed {ty} custom message. Currently custom messages are limited to odd-numbered message types, as even-numbered types might result in disconnections."
                ),
            ));
        }
        if !e.is_connected(&id) {
            return Err(RpcError::new(
                codes::INVALID_REQUEST,
                format!("No such peer: {id}"),
            ));
        }
        e.send_custom(id, ty, bytes);
        Ok(json!({"status": "Message sent to connectd for delivery"}))
    })
}

#[cfg(test)]
mod tests {
    use super::custom_msg_bytes;

    #[test]
    fn custom_msg_hex_is_checked_without_panicking() {
        assert_eq!(
            custom_msg_bytes("8001aBcd"),
            Some((0x8001, vec![0xab, 0xcd]))
        );
        assert_eq!(custom_msg_bytes("8001"), Some((0x8001, vec![])));
        // Regression: multi-byte characters at an even length used to panic the daemon.
        for bad in ["€a", "éé", "80€1", "zz01", "800", "80", ""] {
            assert_eq!(custom_msg_bytes(bad), None, "{bad}");
        }
    }
}
