//! The engine's [`Port`] implemented with the plugin host: each typed notice becomes CLN's
//! notification, each question CLN's hook payload, and each hook answer a typed verdict.
//! The engine never sees this JSON (docs/adr/0009-host-crates.md).

use std::sync::Arc;

use bitcoin::secp256k1::PublicKey;
use fulgur_base::hex;
use fulgur_protocol::hooks::Hook;
use serde_json::{Value, json};

use crate::hooks::ChainEnd;
use crate::lightning::htlcs::{Replacements, Verdict};
use crate::lightning::port::{
    Answer, HtlcAsk, HtlcKind, Notice, NumberedMovement, OpenOffer, OpenTerms, PeerInfo, Port,
    Question, Refusal, Revocation, StateChange, Topic,
};
use crate::plugin::PluginHost;
use crate::rpc::commands::pay;

/// The plugin host as the engine's [`Port`].
pub struct PluginPort {
    host: Arc<PluginHost>,
}

impl PluginPort {
    /// Serves the engine with `host`.
    pub fn new(host: Arc<PluginHost>) -> Arc<PluginPort> {
        Arc::new(PluginPort { host })
    }
}

/// CLN's topic name of a notice and its payload.
pub fn notification(n: &Notice) -> (&'static str, Value) {
    match n {
        Notice::Connect {
            id,
            inbound,
            address,
        } => (
            "connect",
            json!({"id": id.to_string(), "direction": direction(*inbound), "address": crate::cln_json::address_json(address)}),
        ),
        Notice::Disconnect { id } => ("disconnect", json!({"id": id.to_string()})),
        Notice::ChannelOpened {
            peer,
            funding_msat,
            funding_txid,
        } => (
            "channel_opened",
            json!({
                "id": peer.to_string(),
                "funding_msat": funding_msat,
                "funding_txid": funding_txid.to_string(),
                "channel_ready": false,
            }),
        ),
        Notice::ChannelStateChanged(s) => ("channel_state_changed", state_change_json(s)),
        Notice::BalanceSnapshot(b) => (
            "balance_snapshot",
            json!({
                "node_id": b.node_id.to_string(),
                "blockheight": b.blockheight,
                "timestamp": b.timestamp,
                "accounts": b.accounts.iter().map(|(id, msat)| json!({
                    "account_id": id,
                    "balance_msat": msat,
                    "coin_type": b.coin_type,
                })).collect::<Vec<_>>(),
            }),
        ),
        Notice::Forward(f, hash) => (
            "forward_event",
            crate::rpc::commands::forwards::forward_event_json(f, hash.as_ref()),
        ),
        Notice::CoinMovement(m) => ("coin_movement", coin_movement_json(m)),
        Notice::SendpaySuccess(row) => ("sendpay_success", pay::sendpay_json(row, true)),
        Notice::SendpayFailure(row) => {
            let e = pay::part_failure(row);
            (
                "sendpay_failure",
                json!({"code": e.code, "message": e.message, "data": e.data}),
            )
        }
        Notice::InvoicePaid {
            label,
            preimage,
            msat,
            outpoint,
        } => {
            let mut o = json!({"label": label, "preimage": hex(preimage), "msat": msat});
            if let Some(op) = outpoint {
                o["outpoint"] = json!(op);
            }
            ("invoice_payment", o)
        }
        Notice::InvoiceCreated {
            label,
            preimage,
            msat,
        } => {
            let mut note = json!({"label": label});
            if let Some(p) = preimage {
                note["preimage"] = json!(hex(p));
            }
            if let Some(a) = msat {
                note["msat"] = json!(a);
            }
            ("invoice_creation", note)
        }
        Notice::HtlcDeadline {
            id,
            payment_hash,
            deadline_blockheight,
        } => (
            "htlc_deadline",
            json!({"id": id, "payment_hash": hex(payment_hash), "deadline_blockheight": deadline_blockheight}),
        ),
    }
}

fn direction(inbound: bool) -> &'static str {
    if inbound { "in" } else { "out" }
}

fn custommsg_json(peer: &PublicKey, payload: &str) -> Value {
    json!({"peer_id": peer.to_string(), "payload": payload})
}

/// `channel_state_changed`'s payload.
fn state_change_json(s: &StateChange) -> Value {
    let mut p = json!({
        "peer_id": s.peer_id,
        "channel_id": s.channel_id,
        "timestamp": now_iso8601(),
    });
    if let Some(o) = &s.old_state {
        p["old_state"] = json!(o);
    }
    p["new_state"] = json!(s.new_state);
    p["cause"] = json!(s.cause);
    p["message"] = json!(s.message);
    if let Some(scid) = &s.short_channel_id {
        p["short_channel_id"] = json!(scid);
    }
    p
}

fn now_iso8601() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    crate::log::iso8601(now.as_secs(), now.subsec_millis())
}

/// `coin_movement`'s payload (CLN's version 2).
fn coin_movement_json(n: &NumberedMovement) -> Value {
    let m = &n.movement;
    let coin = match n.network {
        bitcoin::Network::Bitcoin => "bc",
        bitcoin::Network::Regtest => "bcrt",
        _ => "tb",
    };
    let mut o = json!({
        "version": 2,
        "coin_type": coin,
        "node_id": n.node_id.to_string(),
        "type": m.kind,
        "created_index": n.index,
        "account_id": m.account,
        "credit_msat": m.credit_msat,
        "debit_msat": m.debit_msat,
        "timestamp": n.timestamp,
        "primary_tag": m.tag,
    });
    if let Some(h) = &m.payment_hash {
        o["payment_hash"] = json!(hex(h));
    }
    // CLN requires fees_msat on every channel movement (0 when there are none).
    match m.fees_msat {
        Some(f) => o["fees_msat"] = json!(f),
        None if m.kind == "channel_mvt" => o["fees_msat"] = json!(0),
        None => {}
    }
    if m.kind == "chain_mvt" {
        o["extra_tags"] = json!(m.extra_tags);
    }
    if let Some(u) = &m.utxo {
        o["utxo"] = json!(u.outpoint);
        o["output_msat"] = json!(u.output_msat);
        o["blockheight"] = json!(u.blockheight);
    }
    if let Some(peer) = &m.peer_id {
        o["peer_id"] = json!(peer);
    }
    o
}

/// `openchannel`'s payload.
fn openchannel_json(o: &OpenOffer) -> Value {
    json!({"openchannel": {
        "id": o.peer.to_string(),
        "funding_msat": o.funding_msat,
        "push_msat": o.push_msat,
        "dust_limit_msat": o.dust_limit_msat,
        "max_htlc_value_in_flight_msat": o.max_htlc_value_in_flight_msat,
        "channel_reserve_msat": 0,
        "htlc_minimum_msat": o.htlc_minimum_msat,
        "feerate_per_kw": o.feerate_per_kw,
        "to_self_delay": o.to_self_delay,
        "max_accepted_htlcs": o.max_accepted_htlcs,
        "channel_flags": u8::from(o.announced),
        "channel_type": crate::cln_json::channel_type_json(Some(&o.channel_type)),
    }})
}

/// The `htlc_accepted` filter of an HTLC kind (a Fulgur extension).
fn kind_filter(kind: HtlcKind) -> Value {
    match kind {
        HtlcKind::Forward => json!("forward"),
        HtlcKind::Receive => json!("receive"),
    }
}

/// A chain's end as an `htlc_accepted` verdict (malformed answers were already replaced by
/// the hook's safe default, `continue`). `asked` is the payload the chain started from:
/// what the plugins' `continue` answers changed in it are the verdict's replacements.
pub fn htlc_verdict(end: ChainEnd, asked: &Value) -> Verdict {
    match end {
        ChainEnd::Default(last) => {
            let changed = |pointer: &str| {
                let now = last.pointer(pointer);
                (now.is_some() && now != asked.pointer(pointer))
                    .then_some(now)
                    .flatten()
            };
            let mut r = Replacements {
                forward_to: changed("/forward_to")
                    .and_then(Value::as_str)
                    .map(String::from),
                invoice_msat: changed("/invoice_msat").and_then(Value::as_u64),
                unsupported: vec![],
            };
            if changed("/onion/payload").is_some() {
                r.unsupported.push("payload");
            }
            if changed("/htlc/extra_tlvs").is_some() {
                r.unsupported.push("extra_tlvs");
            }
            if r == Replacements::default() {
                Verdict::Continue
            } else {
                Verdict::ContinueWith(r)
            }
        }
        ChainEnd::DeadlineExceeded { .. } => Verdict::Fail(None),
        ChainEnd::Stopped { answer, .. } => match answer.get("result").and_then(Value::as_str) {
            Some("resolve") => {
                let key = answer
                    .get("payment_key")
                    .and_then(Value::as_str)
                    .and_then(|k| crate::lightning::htlcs::parse_hash(k).ok());
                match key {
                    Some(k) => Verdict::Resolve(k),
                    None => Verdict::Fail(None),
                }
            }
            Some("fail") => Verdict::Fail(
                answer
                    .get("failure_message")
                    .and_then(Value::as_str)
                    .map(String::from),
            ),
            _ => Verdict::Continue,
        },
    }
}

/// An `openchannel` chain's end: the terms the plugins' `continue` answers set (changes to
/// `/openchannel/<field>`), or the refusal.
fn open_terms(end: ChainEnd) -> Result<OpenTerms, Refusal> {
    match end {
        ChainEnd::Default(last) => {
            let o = &last["openchannel"];
            Ok(OpenTerms {
                close_to: o.get("close_to").and_then(Value::as_str).map(String::from),
                mindepth: o
                    .get("mindepth")
                    .and_then(Value::as_u64)
                    .and_then(|d| u32::try_from(d).ok()),
                reserve_sat: o.get("reserve").and_then(Value::as_u64),
            })
        }
        end => match refusal(end, "error_message") {
            Some(r) => Err(r),
            None => Ok(OpenTerms::default()),
        },
    }
}

/// The plugin that stopped a chain, with the string it gave under `field`.
fn refusal(end: ChainEnd, field: &str) -> Option<Refusal> {
    match end {
        ChainEnd::Stopped { plugin, answer } => Some(Refusal {
            plugin,
            message: answer.get(field).and_then(Value::as_str).map(String::from),
        }),
        _ => None,
    }
}

impl Port for PluginPort {
    fn listens(&self, topic: Topic) -> bool {
        self.host.has_subscriber(match topic {
            Topic::ForwardEvent => "forward_event",
            Topic::CoinMovement => "coin_movement",
            Topic::BalanceSnapshot => "balance_snapshot",
        })
    }

    fn tell(&self, notice: Notice) {
        let (topic, payload) = notification(&notice);
        self.host.notify(topic, payload);
    }

    fn asks(&self, question: Question) -> bool {
        match question {
            Question::PeerConnected => self.host.has_hook(Hook::PeerConnected),
            Question::Openchannel => self.host.has_hook(Hook::Openchannel),
            Question::InvoicePayment => self.host.has_hook(Hook::InvoicePayment),
            Question::HtlcAccepted(kind) => self
                .host
                .has_hook_for(Hook::HtlcAccepted, Some(&kind_filter(kind))),
            Question::CommitmentRevocation => self.host.has_hook(Hook::CommitmentRevocation),
        }
    }

    fn peer_connected(&self, p: PeerInfo) -> Answer<Option<Refusal>> {
        let host = self.host.clone();
        Box::pin(async move {
            let mut payload = json!({"peer": {
                "id": p.id.to_string(),
                "direction": direction(p.inbound),
                "addr": p.addr,
                "features": p.features,
            }});
            if let Some(a) = p.remote_addr {
                payload["peer"]["remote_addr"] = json!(a);
            }
            let end = host.hook(Hook::PeerConnected, payload).run().await;
            refusal(end, "error_message")
        })
    }

    fn openchannel(&self, offer: OpenOffer) -> Answer<Result<OpenTerms, Refusal>> {
        let host = self.host.clone();
        Box::pin(async move {
            let end = host
                .hook(Hook::Openchannel, openchannel_json(&offer))
                .run()
                .await;
            open_terms(end)
        })
    }

    fn invoice_payment(
        &self,
        label: String,
        preimage: [u8; 32],
        msat: u64,
    ) -> Answer<Option<Refusal>> {
        let host = self.host.clone();
        Box::pin(async move {
            let payload = json!({"payment": {
                "label": label,
                "preimage": hex(&preimage),
                "msat": msat,
            }});
            let end = host.hook(Hook::InvoicePayment, payload).run().await;
            refusal(end, "failure_message")
        })
    }

    fn custommsg(&self, peer: PublicKey, ty: u16, payload: String) -> Answer<()> {
        let host = self.host.clone();
        Box::pin(async move {
            let p = custommsg_json(&peer, &payload);
            host.notify("custommsg", p.clone());
            let filter = json!(ty);
            let _ = host.hook(Hook::Custommsg, p).filter(&filter).run().await;
        })
    }

    fn htlc_accepted(&self, kind: HtlcKind, ask: HtlcAsk) -> Answer<(Verdict, Vec<String>)> {
        let host = self.host.clone();
        Box::pin(async move {
            let payload = serde_json::to_value(&ask).unwrap_or(Value::Null);
            let filter = kind_filter(kind);
            let (end, died) = host
                .hook(Hook::HtlcAccepted, payload.clone())
                .filter(&filter)
                .run_noting_deaths()
                .await;
            (htlc_verdict(end, &payload), died)
        })
    }

    fn commitment_revocation(&self, r: Revocation) -> Answer<()> {
        let host = self.host.clone();
        Box::pin(async move {
            let payload = json!({
                "commitment_txid": r.commitment_txid.to_string(),
                "penalty_tx": bitcoin::consensus::encode::serialize_hex(&r.penalty_tx),
                "channel_id": hex(&r.channel_id),
                "commitnum": r.commitnum,
            });
            let _ = host.hook(Hook::CommitmentRevocation, payload).run().await;
        })
    }

    fn activations(&self) -> tokio::sync::watch::Receiver<u64> {
        self.host.watch_activations()
    }

    fn featurebits(&self) -> [Vec<u8>; 4] {
        self.host.featurebits()
    }

    fn wants_custom_message(&self, ty: u16) -> bool {
        self.host.wants_custom_message(ty)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continued_replacements_become_the_verdict() {
        let asked = json!({"onion": {"payload": ""}, "htlc": {}, "forward_to": "aa"});
        let end = |last: Value| htlc_verdict(ChainEnd::Default(last), &asked);
        assert_eq!(end(asked.clone()), Verdict::Continue);
        assert_eq!(
            end(
                json!({"onion": {"payload": ""}, "htlc": {}, "forward_to": "bb",
                "invoice_msat": 5})
            ),
            Verdict::ContinueWith(Replacements {
                forward_to: Some("bb".into()),
                invoice_msat: Some(5),
                unsupported: vec![],
            })
        );
        assert_eq!(
            end(
                json!({"onion": {"payload": "00"}, "htlc": {"extra_tlvs": "01"},
                "forward_to": "aa"})
            ),
            Verdict::ContinueWith(Replacements {
                unsupported: vec!["payload", "extra_tlvs"],
                ..Replacements::default()
            })
        );
    }

    #[test]
    fn a_chain_end_becomes_an_htlc_verdict() {
        let stop = |answer: Value| ChainEnd::Stopped {
            plugin: "p".into(),
            answer,
        };
        assert_eq!(
            htlc_verdict(ChainEnd::Default(json!({})), &json!({})),
            Verdict::Continue
        );
        assert_eq!(
            htlc_verdict(
                stop(json!({"result": "fail", "failure_message": "2002"})),
                &json!({})
            ),
            Verdict::Fail(Some("2002".into()))
        );
        let key = hex(&[7u8; 32]);
        assert_eq!(
            htlc_verdict(
                stop(json!({"result": "resolve", "payment_key": key})),
                &json!({})
            ),
            Verdict::Resolve([7; 32])
        );
        assert_eq!(
            htlc_verdict(
                stop(json!({"result": "resolve", "payment_key": "zz"})),
                &json!({})
            ),
            Verdict::Fail(None)
        );
    }
}
