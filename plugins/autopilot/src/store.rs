//! What autopilot remembers across restarts (one JSON document in the datastore under
//! `["autopilot", "state"]`): the channels it opened, the peers opted out, external
//! scores, failed attempts, and its last actions with their reasons.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Datastore key of the state.
pub const KEY: [&str; 2] = ["autopilot", "state"];
/// Actions kept.
pub const MAX_ACTIONS: usize = 200;
/// Closed or failed open records kept (live ones are always kept).
pub const MAX_FINISHED_OPENS: usize = 100;

/// Where an open autopilot started stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OpenStatus {
    /// `fundchannel` was called and has not answered (or we stopped before it did).
    Opening,
    /// The channel exists.
    Open,
    /// The channel is gone.
    Closed,
    /// `fundchannel` failed.
    Failed,
}

/// One open autopilot started.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OpenRecord {
    /// The peer.
    pub peer_id: String,
    /// Channel size asked, in satoshis.
    pub amount_sat: u64,
    /// When it was started (unix seconds).
    pub at: u64,
    /// Where it stands.
    pub status: OpenStatus,
    /// The channel, once known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel_id: Option<String>,
    /// The funding transaction, once known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub txid: Option<String>,
    /// Why it was opened.
    pub reason: String,
}

impl OpenRecord {
    /// Whether it still holds (or may hold) a channel.
    pub fn is_live(&self) -> bool {
        matches!(self.status, OpenStatus::Opening | OpenStatus::Open)
    }
}

/// A failed attempt to a peer, for backing off.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    /// Failures in a row.
    pub count: u32,
    /// No retry before this (unix seconds).
    pub until: u64,
    /// The last error.
    pub error: String,
}

/// Something autopilot did or decided, with why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Action {
    /// When (unix seconds).
    pub at: u64,
    /// `open`, `open_failed`, `would_open` (dry run), `closed`, `unmanage`, `manage`,
    /// `setscore`, `adopted`.
    pub action: String,
    /// The peer concerned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer_id: Option<String>,
    /// Amount concerned, in satoshis.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amount_sat: Option<u64>,
    /// Why.
    pub reason: String,
}

/// The persisted state.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Stored {
    /// Opens started, oldest first.
    #[serde(default)]
    pub opens: Vec<OpenRecord>,
    /// Peers opted out.
    #[serde(default)]
    pub unmanaged: BTreeSet<String>,
    /// Scores for the `external` heuristic.
    #[serde(default)]
    pub scores: BTreeMap<String, f64>,
    /// Failed attempts per peer.
    #[serde(default)]
    pub failures: BTreeMap<String, Failure>,
    /// Last actions, oldest first.
    #[serde(default)]
    pub actions: VecDeque<Action>,
}

impl Stored {
    /// Appends an action, forgetting the oldest beyond [`MAX_ACTIONS`].
    pub fn push_action(&mut self, a: Action) {
        self.actions.push_back(a);
        while self.actions.len() > MAX_ACTIONS {
            self.actions.pop_front();
        }
    }

    /// Forgets the oldest finished opens beyond [`MAX_FINISHED_OPENS`].
    pub fn prune(&mut self) {
        let finished = self.opens.iter().filter(|o| !o.is_live()).count();
        let mut drop = finished.saturating_sub(MAX_FINISHED_OPENS);
        self.opens.retain(|o| {
            if drop > 0 && !o.is_live() {
                drop -= 1;
                false
            } else {
                true
            }
        });
    }

    /// Peers with a live open.
    pub fn live_peers(&self) -> BTreeSet<String> {
        self.opens
            .iter()
            .filter(|o| o.is_live())
            .map(|o| o.peer_id.clone())
            .collect()
    }
}

/// States in which a channel no longer holds funds for routing.
pub fn is_closing(state: &str) -> bool {
    matches!(
        state,
        "CHANNELD_SHUTTING_DOWN"
            | "CLOSINGD_SIGEXCHANGE"
            | "CLOSINGD_COMPLETE"
            | "AWAITING_UNILATERAL"
            | "FUNDING_SPEND_SEEN"
            | "ONCHAIN"
            | "CLOSED"
    )
}

/// Matches the open records against the node's channels (`listpeerchannels` rows): an open
/// channel that is closing or gone becomes `closed`; an `opening` record (which, at the
/// start of a round, means an open interrupted by a restart) adopts the outbound channel to
/// its peer that no other record claims, or becomes `failed`. Returns the actions to
/// record: `(action, peer, reason)`.
pub fn reconcile(stored: &mut Stored, channels: &[Value]) -> Vec<(&'static str, String, String)> {
    let mut notes = Vec::new();
    let live: std::collections::HashMap<&str, &Value> = channels
        .iter()
        .filter_map(|c| Some((c.get("channel_id")?.as_str()?, c)))
        .collect();
    let mut claimed: BTreeSet<String> = stored
        .opens
        .iter()
        .filter_map(|o| o.channel_id.clone())
        .collect();
    for o in stored.opens.iter_mut().filter(|o| o.is_live()) {
        match (o.channel_id.clone(), o.status) {
            (Some(id), OpenStatus::Open) => {
                let gone = live
                    .get(id.as_str())
                    .and_then(|c| c.get("state"))
                    .and_then(Value::as_str)
                    .is_none_or(is_closing);
                if gone {
                    o.status = OpenStatus::Closed;
                    notes.push((
                        "closed",
                        o.peer_id.clone(),
                        format!(
                            "channel {id} opened by autopilot is closing or closed (not by autopilot: it never closes channels); its slot and budget are free again"
                        ),
                    ));
                }
            }
            (None, OpenStatus::Opening) => {
                let made = channels
                    .iter()
                    .filter(|c| {
                        c.get("peer_id").and_then(Value::as_str) == Some(o.peer_id.as_str())
                            && c.get("opener").and_then(Value::as_str) == Some("local")
                            && !c
                                .get("state")
                                .and_then(Value::as_str)
                                .is_none_or(is_closing)
                    })
                    .filter_map(|c| c.get("channel_id").and_then(Value::as_str))
                    .find(|id| !claimed.contains(*id));
                match made {
                    Some(id) => {
                        o.channel_id = Some(id.to_string());
                        o.status = OpenStatus::Open;
                        claimed.insert(id.to_string());
                        notes.push((
                            "adopted",
                            o.peer_id.clone(),
                            format!("open interrupted by a restart did create channel {id}"),
                        ));
                    }
                    None => {
                        o.status = OpenStatus::Failed;
                        notes.push((
                            "open_failed",
                            o.peer_id.clone(),
                            "open interrupted by a restart left no channel".to_string(),
                        ));
                    }
                }
            }
            _ => {}
        }
    }
    notes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(peer: &str, status: OpenStatus) -> OpenRecord {
        OpenRecord {
            peer_id: peer.into(),
            amount_sat: 1,
            at: 0,
            status,
            channel_id: None,
            txid: None,
            reason: "r".into(),
        }
    }

    #[test]
    fn roundtrips_and_tolerates_missing_fields() {
        let mut s = Stored::default();
        s.opens.push(rec("A", OpenStatus::Open));
        s.unmanaged.insert("B".into());
        s.scores.insert("C".into(), 0.5);
        let text = serde_json::to_string(&s).unwrap_or_default();
        let back: Stored = serde_json::from_str(&text).unwrap_or_default();
        assert_eq!(back, s);
        let partial: Stored = serde_json::from_str(r#"{"unmanaged":["X"]}"#).unwrap_or_default();
        assert!(partial.unmanaged.contains("X") && partial.opens.is_empty());
    }

    fn chan(peer: &str, id: &str, state: &str, opener: &str) -> Value {
        serde_json::json!({"peer_id": peer, "channel_id": id, "state": state, "opener": opener})
    }

    #[test]
    fn reconcile_closes_adopts_and_fails() {
        let mut s = Stored::default();
        let mut open = rec("A", OpenStatus::Open);
        open.channel_id = Some("ca".into());
        let mut gone = rec("B", OpenStatus::Open);
        gone.channel_id = Some("cb".into());
        s.opens = vec![
            open,
            gone,
            rec("C", OpenStatus::Opening),
            rec("D", OpenStatus::Opening),
            rec("E", OpenStatus::Opening),
        ];
        let channels = vec![
            chan("A", "ca", "CHANNELD_NORMAL", "local"),
            chan("C", "cc", "CHANNELD_AWAITING_LOCKIN", "local"),
            // D's channel was opened by D, not by us: not ours to adopt.
            chan("D", "cd", "CHANNELD_NORMAL", "remote"),
            // E's only channel is closing.
            chan("E", "ce", "ONCHAIN", "local"),
        ];
        let notes = reconcile(&mut s, &channels);
        let by_peer: Vec<(&str, &str)> = notes.iter().map(|(a, p, _)| (p.as_str(), *a)).collect();
        assert_eq!(
            by_peer,
            [
                ("B", "closed"),
                ("C", "adopted"),
                ("D", "open_failed"),
                ("E", "open_failed")
            ]
        );
        let status: Vec<OpenStatus> = s.opens.iter().map(|o| o.status).collect();
        use OpenStatus::*;
        assert_eq!(status, [Open, Closed, Open, Failed, Failed]);
        assert_eq!(s.opens[2].channel_id.as_deref(), Some("cc"));
        // Nothing left to do: a second pass changes nothing.
        assert!(reconcile(&mut s, &channels).is_empty());
        // A's channel starts closing: its slot is freed.
        let closing = vec![chan("A", "ca", "CHANNELD_SHUTTING_DOWN", "local")];
        let notes = reconcile(&mut s, &closing);
        assert_eq!(
            notes.len(),
            2,
            "A closing, and C's channel is no longer listed"
        );
        assert!(notes[0].2.contains("never closes"));
    }

    #[test]
    fn actions_and_finished_opens_are_bounded() {
        let mut s = Stored::default();
        for i in 0..(MAX_ACTIONS + 5) {
            s.push_action(Action {
                at: i as u64,
                action: "open".into(),
                peer_id: None,
                amount_sat: None,
                reason: String::new(),
            });
        }
        assert_eq!(s.actions.len(), MAX_ACTIONS);
        assert_eq!(s.actions.front().map(|a| a.at), Some(5));
        for _ in 0..(MAX_FINISHED_OPENS + 3) {
            s.opens.push(rec("F", OpenStatus::Failed));
        }
        s.opens.push(rec("L", OpenStatus::Opening));
        s.prune();
        assert_eq!(s.opens.len(), MAX_FINISHED_OPENS + 1);
        assert_eq!(s.live_peers().into_iter().collect::<Vec<_>>(), ["L"]);
    }
}
