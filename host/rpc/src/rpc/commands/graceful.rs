//! `graceful [timeout]`, as CLN's (`lightningd/peer_control.c`): no more forwards or
//! reconnections, idle peers disconnected; answers `{}` once no HTLC is left and no peer is
//! connected, telling the caller (with `notifications` on) what it still waits for as
//! `message` notifications; with `timeout`, answers after that many seconds at most, with
//! the HTLC expiries and peers still pending.

use std::time::Duration;

use serde_json::{Value, json};

use super::channels::{engine_opt, htlc_state_name};
use super::{Command, CommandFuture, Ctx, command};
use crate::lightning::graceful::{GracefulStatus, HtlcState};
use crate::rpc::params::{Params, opt};

pub const GRACEFUL: Command = Command::new("graceful", &[opt("timeout")], run_graceful);

/// CLN's progress line: the HTLC expiring first, else how many peers are connected.
fn progress(s: &GracefulStatus, height: u32) -> Option<String> {
    if let Some(h) = s.htlcs.iter().min_by_key(|h| h.expiry) {
        let (dist, when) = if h.expiry >= height {
            (h.expiry - height, "from now")
        } else {
            (height - h.expiry, "ago")
        };
        let way = match h.state {
            HtlcState::In(_) => "coming from",
            HtlcState::Out(_) => "going to",
        };
        return Some(format!(
            "Next HTLC {} expires at block #{} ({dist} blocks {when}) {way} peer {} ({})",
            htlc_state_name(&h.state),
            h.expiry,
            h.peer,
            if h.connected {
                "connected"
            } else {
                "disconnected"
            }
        ));
    }
    (!s.connected.is_empty()).then(|| format!("{} peers still connected", s.connected.len()))
}

/// The timeout's answer: the pending expiries (sorted) and peers, each only when any.
fn pending(s: &GracefulStatus) -> Value {
    let mut o = json!({});
    let mut heights: Vec<u32> = s.htlcs.iter().map(|h| h.expiry).collect();
    heights.sort_unstable();
    if !heights.is_empty() {
        o["pending_htlc_expiries"] = json!(heights);
    }
    if !s.connected.is_empty() {
        o["pending_peers"] = json!(
            s.connected
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
        );
    }
    o
}

fn run_graceful(ctx: Ctx, p: Params) -> CommandFuture {
    command(async move {
        let timeout = p.opt_u64("timeout")?;
        let Some(e) = engine_opt(&ctx.node) else {
            // No engine: no channel, no peer.
            return Ok(json!({}));
        };
        e.begin_graceful();
        let deadline = timeout.map(|t| tokio::time::Instant::now() + Duration::from_secs(t));
        let mut last: Option<String> = None;
        loop {
            let status = e.graceful_step();
            if status.done() {
                return Ok(json!({}));
            }
            if deadline.is_some_and(|d| tokio::time::Instant::now() >= d) {
                return Ok(pending(&status));
            }
            let msg = progress(&status, e.tip_height());
            if msg.is_some() && msg != last {
                use fulgur_plugins::CallerSink;
                ctx.conn.forward(
                    "message",
                    json!({"id": ctx.id, "level": "info", "message": msg}),
                );
                last = msg;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
}
