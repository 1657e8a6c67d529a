//! JSON-RPC 2.0 envelopes as CLN uses them: requests, responses and notifications.
//!
//! Ids are kept as raw JSON values: CLN clients use numbers or strings, and the node must
//! answer with the id exactly as given. The node sends plugins string ids only
//! (`"cli:pay#12/cln:pay#3"`), see [`IdChain`].

use serde_json::{Map, Value};

use crate::error::RpcError;

/// A request: `{"jsonrpc":"2.0","id":..,"method":..,"params":..}`.
///
/// Members other than the four standard ones (CLN's `filter`, for instance) are kept in
/// [`Request::extra`] so that a passthrough to a plugin forwards the request verbatim.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// The caller's id, a JSON string or number.
    pub id: Value,
    /// The method name.
    pub method: String,
    /// An object (named params) or an array (positional params).
    pub params: Value,
    /// Any other members of the request object.
    pub extra: Map<String, Value>,
}

/// A notification: a request without `id`.
#[derive(Debug, Clone, PartialEq)]
pub struct Notification {
    /// The topic or method.
    pub method: String,
    /// The payload (an object for every notification CLN defines).
    pub params: Value,
    /// For a custom notification relayed by the node: the short name of the plugin that
    /// emitted it (CLN v25.09+ envelope).
    pub origin: Option<String>,
}

/// A response to a request.
#[derive(Debug, Clone, PartialEq)]
pub struct Response {
    /// The id of the request this answers.
    pub id: Value,
    /// `result` or `error`.
    pub outcome: Result<Value, RpcError>,
}

/// Any message on a CLN JSON-RPC channel.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    /// Has `id` and `method`.
    Request(Request),
    /// Has `id` and `result` or `error`.
    Response(Response),
    /// Has `method` but no `id`.
    Notification(Notification),
}

/// Why a JSON value is not a valid message.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EnvelopeError {
    /// The value is not a JSON object.
    #[error("JSON-RPC message is not an object")]
    NotAnObject,
    /// `jsonrpc` is missing or not `"2.0"`.
    #[error("JSON-RPC message does not contain \"jsonrpc\" field")]
    NoJsonrpc,
    /// `id` is neither a string nor a number.
    #[error("JSON-RPC id must be a string or a number")]
    BadId,
    /// The object is neither a request, a response nor a notification.
    #[error("JSON-RPC message has neither method nor result/error")]
    Unclassifiable,
    /// `method` is not a string.
    #[error("JSON-RPC method must be a string")]
    BadMethod,
    /// `error` is not a valid error object.
    #[error("JSON-RPC error member is malformed")]
    BadError,
}

impl Message {
    /// Classifies a decoded JSON value. Used on everything a plugin writes and on answers
    /// read by clients; the RPC server validates requests itself with CLN's exact
    /// error wording (see `fulgurd`'s `rpc` module).
    pub fn from_value(value: Value) -> Result<Message, EnvelopeError> {
        let Value::Object(mut obj) = value else {
            return Err(EnvelopeError::NotAnObject);
        };
        match obj.remove("jsonrpc") {
            Some(Value::String(v)) if v == "2.0" => {}
            _ => return Err(EnvelopeError::NoJsonrpc),
        }
        let id = obj.remove("id");
        if let Some(id) = &id
            && !(id.is_string() || id.is_number())
        {
            return Err(EnvelopeError::BadId);
        }
        let method = match obj.remove("method") {
            None => None,
            Some(Value::String(m)) => Some(m),
            Some(_) => return Err(EnvelopeError::BadMethod),
        };
        match (id, method) {
            (Some(id), Some(method)) => {
                let params = obj.remove("params").unwrap_or(Value::Object(Map::new()));
                Ok(Message::Request(Request {
                    id,
                    method,
                    params,
                    extra: obj,
                }))
            }
            (None, Some(method)) => {
                let params = obj.remove("params").unwrap_or(Value::Object(Map::new()));
                let origin = match obj.remove("origin") {
                    Some(Value::String(o)) => Some(o),
                    _ => None,
                };
                Ok(Message::Notification(Notification {
                    method,
                    params,
                    origin,
                }))
            }
            (Some(id), None) => {
                if let Some(err) = obj.remove("error") {
                    let err: RpcError =
                        serde_json::from_value(err).map_err(|_| EnvelopeError::BadError)?;
                    Ok(Message::Response(Response {
                        id,
                        outcome: Err(err),
                    }))
                } else if let Some(result) = obj.remove("result") {
                    Ok(Message::Response(Response {
                        id,
                        outcome: Ok(result),
                    }))
                } else {
                    Err(EnvelopeError::Unclassifiable)
                }
            }
            (None, None) => Err(EnvelopeError::Unclassifiable),
        }
    }

    /// The message as a JSON object, ready for [`crate::codec::encode_frame`].
    pub fn to_value(&self) -> Value {
        match self {
            Message::Request(r) => r.to_value(),
            Message::Response(r) => r.to_value(),
            Message::Notification(n) => n.to_value(),
        }
    }
}

impl Request {
    /// A request with no extra members.
    pub fn new(id: impl Into<Value>, method: impl Into<String>, params: Value) -> Self {
        Request {
            id: id.into(),
            method: method.into(),
            params,
            extra: Map::new(),
        }
    }

    /// The request as a JSON object (members in the conventional order).
    pub fn to_value(&self) -> Value {
        let mut obj = Map::with_capacity(4 + self.extra.len());
        obj.insert("jsonrpc".into(), Value::from("2.0"));
        obj.insert("id".into(), self.id.clone());
        obj.insert("method".into(), Value::from(self.method.clone()));
        obj.insert("params".into(), self.params.clone());
        for (k, v) in &self.extra {
            obj.insert(k.clone(), v.clone());
        }
        Value::Object(obj)
    }
}

impl Notification {
    /// A notification with no origin.
    pub fn new(method: impl Into<String>, params: Value) -> Self {
        Notification {
            method: method.into(),
            params,
            origin: None,
        }
    }

    /// The notification as a JSON object; `origin` is a top-level member when set.
    pub fn to_value(&self) -> Value {
        let mut obj = Map::with_capacity(4);
        obj.insert("jsonrpc".into(), Value::from("2.0"));
        obj.insert("method".into(), Value::from(self.method.clone()));
        if let Some(origin) = &self.origin {
            obj.insert("origin".into(), Value::from(origin.clone()));
        }
        obj.insert("params".into(), self.params.clone());
        Value::Object(obj)
    }
}

impl Response {
    /// A successful response.
    pub fn ok(id: Value, result: Value) -> Self {
        Response {
            id,
            outcome: Ok(result),
        }
    }

    /// An error response.
    pub fn err(id: Value, error: RpcError) -> Self {
        Response {
            id,
            outcome: Err(error),
        }
    }

    /// The response as a JSON object.
    pub fn to_value(&self) -> Value {
        let mut obj = Map::with_capacity(3);
        obj.insert("jsonrpc".into(), Value::from("2.0"));
        obj.insert("id".into(), self.id.clone());
        match &self.outcome {
            Ok(result) => obj.insert("result".into(), result.clone()),
            Err(e) => obj.insert(
                "error".into(),
                serde_json::to_value(e).unwrap_or(Value::Null),
            ),
        };
        Value::Object(obj)
    }
}

/// Builds a CLN-style string id `PREFIX:METHOD#N` for a request made by `prefix` (`cln`,
/// `cli` or a plugin's name), chained with `/` after the id of the request that caused it
/// (`cli:pay#12/cln:sendpay#3`). A part that would need JSON escaping becomes `weird-id`,
/// as in CLN.
pub fn child_id(parent: Option<&Value>, prefix: &str, method: &str, counter: u64) -> String {
    let own = if needs_escape(method) || needs_escape(prefix) {
        format!("weird-id#{counter}")
    } else {
        format!("{prefix}:{method}#{counter}")
    };
    match parent {
        Some(Value::String(p)) if !needs_escape(p) => format!("{p}/{own}"),
        Some(Value::Number(n)) => format!("{n}/{own}"),
        Some(Value::String(_)) => format!("weird-id/{own}"),
        _ => own,
    }
}

fn needs_escape(s: &str) -> bool {
    s.chars().any(|c| c == '"' || c == '\\' || c.is_control())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn classifies_the_three_kinds() {
        let req =
            Message::from_value(json!({"jsonrpc":"2.0","id":1,"method":"getinfo","params":[]}));
        assert!(matches!(req, Ok(Message::Request(ref r)) if r.method == "getinfo"));
        let resp = Message::from_value(json!({"jsonrpc":"2.0","id":"a","result":{}}));
        assert!(matches!(
            resp,
            Ok(Message::Response(Response { outcome: Ok(_), .. }))
        ));
        let err = Message::from_value(
            json!({"jsonrpc":"2.0","id":"a","error":{"code":-4,"message":"x"}}),
        );
        assert!(
            matches!(err, Ok(Message::Response(Response { outcome: Err(ref e), .. })) if e.code == -4)
        );
        let note = Message::from_value(json!({"jsonrpc":"2.0","method":"log","params":{}}));
        assert!(matches!(note, Ok(Message::Notification(_))));
    }

    #[test]
    fn rejects_what_cln_rejects() {
        assert_eq!(
            Message::from_value(json!({"id":1,"result":{}})),
            Err(EnvelopeError::NoJsonrpc)
        );
        assert_eq!(
            Message::from_value(json!([1])),
            Err(EnvelopeError::NotAnObject)
        );
        assert_eq!(
            Message::from_value(json!({"jsonrpc":"2.0","id":[1],"result":{}})),
            Err(EnvelopeError::BadId)
        );
        assert_eq!(
            Message::from_value(json!({"jsonrpc":"2.0","id":1})),
            Err(EnvelopeError::Unclassifiable)
        );
    }

    #[test]
    fn keeps_extra_members_for_passthrough() {
        let v = json!({"jsonrpc":"2.0","id":"x","method":"m","params":{},"filter":{"a":true}});
        let Ok(Message::Request(r)) = Message::from_value(v.clone()) else {
            panic!("not a request")
        };
        assert_eq!(r.to_value(), v);
    }

    #[test]
    fn id_chains_follow_cln_convention() {
        assert_eq!(child_id(None, "cln", "getmanifest", 0), "cln:getmanifest#0");
        assert_eq!(
            child_id(Some(&json!("cli:pay#12")), "cln", "pay", 3),
            "cli:pay#12/cln:pay#3"
        );
        assert_eq!(
            child_id(Some(&json!(7)), "cln", "hello", 1),
            "7/cln:hello#1"
        );
        assert_eq!(
            child_id(Some(&json!("a\"b")), "cln", "x", 1),
            "weird-id/cln:x#1"
        );
    }
}
