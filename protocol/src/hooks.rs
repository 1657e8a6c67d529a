//! CLN's hooks: names, which accept `filters`, their safe defaults, and typed payloads.
//!
//! A hook is a *chained* synchronous call: the node asks each registered plugin in turn
//! and acts on the answers. CLN aborts the whole node on a malformed hook answer; Fulgur
//! instead uses the hook's [`Hook::safe_default`] and logs loudly.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// Every hook a plugin may register.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Hook {
    /// Every RPC request, before it runs. May continue, replace or answer it.
    RpcCommand,
    /// An incoming HTLC (forward or final), may continue, fail or resolve it.
    HtlcAccepted,
    /// A complete payment for an invoice arrived; may continue or reject it.
    InvoicePayment,
    /// A peer finished its handshake; may continue or disconnect it.
    PeerConnected,
    /// A peer proposes a v1 channel; may continue or reject it.
    Openchannel,
    /// A peer proposes a v2 channel.
    Openchannel2,
    /// A v2 open's PSBT changed.
    Openchannel2Changed,
    /// A v2 open needs our signatures.
    Openchannel2Sign,
    /// A peer proposes to RBF a v2 open.
    RbfChannel,
    /// A custom peer message arrived.
    Custommsg,
    /// A remote revocation happened (watchtowers).
    CommitmentRevocation,
    /// A database commit is about to happen (backups).
    DbWrite,
    /// An onion message for us, not via our blinded path.
    OnionMessageRecv,
    /// An onion message through a blinded path we issued.
    OnionMessageRecvSecret,
    /// The node was started with `--recover`.
    Recover,
}

impl Hook {
    /// All hooks, in a stable order.
    pub const ALL: [Hook; 15] = [
        Hook::RpcCommand,
        Hook::HtlcAccepted,
        Hook::InvoicePayment,
        Hook::PeerConnected,
        Hook::Openchannel,
        Hook::Openchannel2,
        Hook::Openchannel2Changed,
        Hook::Openchannel2Sign,
        Hook::RbfChannel,
        Hook::Custommsg,
        Hook::CommitmentRevocation,
        Hook::DbWrite,
        Hook::OnionMessageRecv,
        Hook::OnionMessageRecvSecret,
        Hook::Recover,
    ];

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Hook::RpcCommand => "rpc_command",
            Hook::HtlcAccepted => "htlc_accepted",
            Hook::InvoicePayment => "invoice_payment",
            Hook::PeerConnected => "peer_connected",
            Hook::Openchannel => "openchannel",
            Hook::Openchannel2 => "openchannel2",
            Hook::Openchannel2Changed => "openchannel2_changed",
            Hook::Openchannel2Sign => "openchannel2_sign",
            Hook::RbfChannel => "rbf_channel",
            Hook::Custommsg => "custommsg",
            Hook::CommitmentRevocation => "commitment_revocation",
            Hook::DbWrite => "db_write",
            Hook::OnionMessageRecv => "onion_message_recv",
            Hook::OnionMessageRecvSecret => "onion_message_recv_secret",
            Hook::Recover => "recover",
        }
    }

    /// Parses a wire name.
    pub fn from_name(name: &str) -> Option<Hook> {
        Hook::ALL.into_iter().find(|h| h.as_str() == name)
    }

    /// Why Fulgur never calls this hook, for those it never calls: a plugin registering one
    /// is refused at registration (never accepted silently, so that a backup plugin relying
    /// on `db_write` fails visibly).
    pub fn never_fires(self) -> Option<&'static str> {
        match self {
            Hook::Openchannel2
            | Hook::Openchannel2Changed
            | Hook::Openchannel2Sign
            | Hook::RbfChannel => Some("dual-funded channels are not supported"),
            Hook::OnionMessageRecv | Hook::OnionMessageRecvSecret => {
                Some("onion messages are not passed to plugins yet")
            }
            _ => None,
        }
    }

    /// Whether registrations may carry `filters` (CLN v25.12+ for `rpc_command` and
    /// `custommsg`; for `htlc_accepted`, `"forward"` and `"receive"` are a Fulgur extension).
    pub fn accepts_filters(self) -> bool {
        matches!(
            self,
            Hook::RpcCommand | Hook::Custommsg | Hook::HtlcAccepted
        )
    }

    /// Whether an answer to this hook holds an HTLC, so that the call must carry a deadline
    /// the core enforces.
    pub fn blocks_htlc(self) -> bool {
        matches!(self, Hook::HtlcAccepted | Hook::InvoicePayment)
    }

    /// The answer used when a plugin answers garbage or an error: what pyln-client falls
    /// back to, so an HTLC is never left hanging (`htlc_accepted` fails it with
    /// `temporary_node_failure`; a channel open is rejected; everything else continues).
    pub fn safe_default(self) -> Value {
        match self {
            Hook::HtlcAccepted => json!({"result": "fail", "failure_message": "2002"}),
            Hook::Openchannel | Hook::Openchannel2 | Hook::RbfChannel => {
                json!({"result": "reject", "error_message": "plugin error"})
            }
            // A write no plugin took must not commit (CLN's rule for db_write).
            Hook::DbWrite => json!({"result": "fail"}),
            _ => json!({"result": "continue"}),
        }
    }
}

impl std::fmt::Display for Hook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Payload of `rpc_command`: the caller's whole request object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RpcCommandPayload {
    /// `{"jsonrpc", "id", "method", "params", ...}` as the caller sent it.
    pub rpc_command: Value,
}

/// What one plugin decided in an `rpc_command` chain.
#[derive(Debug, Clone, PartialEq)]
pub enum RpcCommandAction {
    /// `{"result":"continue"}`: ask the next plugin, then run the command.
    Continue,
    /// `{"replace": request}`: run this request instead.
    Replace(Value),
    /// `{"return": {"result": ..}}`: answer with this result.
    ReturnResult(Value),
    /// `{"return": {"error": ..}}`: answer with this error object.
    ReturnError(Value),
}

impl RpcCommandAction {
    /// Reads a plugin's answer; `Err` says why it is malformed.
    pub fn from_answer(answer: &Value) -> Result<Self, String> {
        let obj = answer.as_object().ok_or("answer is not an object")?;
        if let Some(r) = obj.get("replace") {
            if !r.is_object() || r.get("method").and_then(Value::as_str).is_none() {
                return Err("'replace' must be a request object with a method".into());
            }
            return Ok(RpcCommandAction::Replace(r.clone()));
        }
        if let Some(r) = obj.get("return") {
            if let Some(res) = r.get("result") {
                return Ok(RpcCommandAction::ReturnResult(res.clone()));
            }
            if let Some(err) = r.get("error") {
                let valid = err.get("code").is_some_and(Value::is_i64)
                    && err.get("message").is_some_and(Value::is_string);
                return if valid {
                    Ok(RpcCommandAction::ReturnError(err.clone()))
                } else {
                    Err("'return.error' needs an integer code and a string message".into())
                };
            }
            return Err("'return' needs 'result' or 'error'".into());
        }
        match obj.get("result").and_then(Value::as_str) {
            Some("continue") => Ok(RpcCommandAction::Continue),
            Some(other) => Err(format!("unknown result '{other}'")),
            None => Err("no 'result', 'replace' or 'return'".into()),
        }
    }

    /// The answer a plugin sends for this action.
    pub fn to_answer(&self) -> Value {
        match self {
            RpcCommandAction::Continue => json!({"result": "continue"}),
            RpcCommandAction::Replace(r) => json!({"replace": r}),
            RpcCommandAction::ReturnResult(r) => json!({"return": {"result": r}}),
            RpcCommandAction::ReturnError(e) => json!({"return": {"error": e}}),
        }
    }
}

/// Payload of `peer_connected`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PeerConnectedPayload {
    /// The peer.
    pub peer: PeerConnectedPeer,
}

/// `peer_connected.peer`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PeerConnectedPeer {
    /// The peer's node id (hex).
    pub id: String,
    /// `in` or `out`.
    pub direction: String,
    /// The address we see.
    pub addr: String,
    /// What the peer says our address is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_addr: Option<String>,
    /// The peer's init features (hex).
    pub features: String,
}

/// Payload of `custommsg`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CustommsgPayload {
    /// The sending peer.
    pub peer_id: String,
    /// Hex: two-byte type then the body.
    pub payload: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for h in Hook::ALL {
            assert_eq!(Hook::from_name(h.as_str()), Some(h));
        }
        assert_eq!(Hook::from_name("nope"), None);
    }

    #[test]
    fn rpc_command_answers() {
        assert_eq!(
            RpcCommandAction::from_answer(&json!({"result":"continue"})),
            Ok(RpcCommandAction::Continue)
        );
        let rep = json!({"replace":{"jsonrpc":"2.0","id":1,"method":"help","params":{}}});
        assert!(matches!(
            RpcCommandAction::from_answer(&rep),
            Ok(RpcCommandAction::Replace(_))
        ));
        let ret = json!({"return":{"error":{"code":-1,"message":"no"}}});
        assert!(matches!(
            RpcCommandAction::from_answer(&ret),
            Ok(RpcCommandAction::ReturnError(_))
        ));
        assert!(RpcCommandAction::from_answer(&json!({"return":{"error":{"code":"x"}}})).is_err());
        assert!(RpcCommandAction::from_answer(&json!("continue")).is_err());
        assert!(RpcCommandAction::from_answer(&json!({"result":"maybe"})).is_err());
    }
}
