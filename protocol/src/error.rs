//! JSON-RPC error objects and Core Lightning's numeric error codes.
//!
//! Every error that leaves `fulgurd` carries one of these codes, so that scripts written for
//! CLN (which switch on `error.code`) keep working. The numbers are CLN's
//! (`common/jsonrpc_errors.h`); the names are ours.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// CLN's error codes, grouped as in CLN.
pub mod codes {
    /// The request was not valid JSON.
    pub const PARSE_ERROR: i64 = -32700;
    /// The JSON was not a valid request (missing `id`, `jsonrpc`, `method` or `params`).
    pub const INVALID_REQUEST: i64 = -32600;
    /// No built-in command and no plugin serves this method.
    pub const METHOD_NOT_FOUND: i64 = -32601;
    /// The parameters were missing, unknown or of the wrong type.
    pub const INVALID_PARAMS: i64 = -32602;
    /// Generic node error (`LIGHTNINGD`).
    pub const LIGHTNINGD: i64 = -1;
    /// A parameter error caught only in developer mode.
    pub const PARAM_DEV_ERROR: i64 = -2;
    /// A plugin could not be started or answered a control request badly.
    pub const PLUGIN_ERROR: i64 = -3;
    /// The plugin serving the call died before replying.
    pub const PLUGIN_TERMINATED: i64 = -4;
    /// The node is shutting down.
    pub const LIGHTNINGD_SHUTDOWN: i64 = -5;

    /// `pay` in progress, or `waitsendpay` timed out.
    pub const PAY_IN_PROGRESS: i64 = 200;
    /// The payment hash was already used with another amount or destination.
    pub const PAY_RHASH_ALREADY_USED: i64 = 201;
    /// The onion reply could not be parsed.
    pub const PAY_UNPARSEABLE_ONION: i64 = 202;
    /// Permanent failure at the destination.
    pub const PAY_DESTINATION_PERM_FAIL: i64 = 203;
    /// Failure along the route; another route may work.
    pub const PAY_TRY_OTHER_ROUTE: i64 = 204;
    /// No route was found.
    pub const PAY_ROUTE_NOT_FOUND: i64 = 205;
    /// The route is too expensive for the fee or delay limits.
    pub const PAY_ROUTE_TOO_EXPENSIVE: i64 = 206;
    /// The invoice has expired.
    pub const PAY_INVOICE_EXPIRED: i64 = 207;
    /// No such payment (`waitsendpay`).
    pub const PAY_NO_SUCH_PAYMENT: i64 = 208;
    /// Unspecified payment error.
    pub const PAY_UNSPECIFIED_ERROR: i64 = 209;
    /// `pay` stopped retrying.
    pub const PAY_STOPPED_RETRYING: i64 = 210;
    /// Payment status was not what the caller expected.
    pub const PAY_STATUS_UNEXPECTED: i64 = 211;
    /// `preapproveinvoice`: the signer declined the invoice.
    pub const PAY_INVOICE_PREAPPROVAL_DECLINED: i64 = 213;
    /// `preapprovekeysend`: the signer declined the keysend.
    pub const PAY_KEYSEND_PREAPPROVAL_DECLINED: i64 = 214;

    /// Channel funding would exceed the maximum.
    pub const FUND_MAX_EXCEEDED: i64 = 300;
    /// The wallet cannot afford the funding.
    pub const FUND_CANNOT_AFFORD: i64 = 301;
    /// The output would be dust.
    pub const FUND_OUTPUT_IS_DUST: i64 = 302;
    /// The funding transaction could not be broadcast.
    pub const FUNDING_BROADCAST_FAIL: i64 = 303;
    /// Bitcoin is still syncing.
    pub const FUNDING_STILL_SYNCING_BITCOIN: i64 = 304;
    /// The peer is not connected.
    pub const FUNDING_PEER_NOT_CONNECTED: i64 = 305;
    /// Unknown peer.
    pub const FUNDING_UNKNOWN_PEER: i64 = 306;

    /// `connect`: no address known for the peer.
    pub const CONNECT_NO_KNOWN_ADDRESS: i64 = 400;
    /// `connect`: every address failed.
    pub const CONNECT_ALL_ADDRESSES_FAILED: i64 = 401;
    /// `connect`: the peer disconnected during connection.
    pub const CONNECT_DISCONNECTED_DURING: i64 = 402;

    /// Invoice label already exists.
    pub const INVOICE_LABEL_ALREADY_EXISTS: i64 = 900;
    /// Invoice preimage already exists.
    pub const INVOICE_PREIMAGE_ALREADY_EXISTS: i64 = 901;
    /// `exposeprivatechannels` gave no usable route hint.
    pub const INVOICE_HINTS_GAVE_NO_ROUTES: i64 = 902;
    /// The invoice expired while waiting.
    pub const INVOICE_EXPIRED_DURING_WAIT: i64 = 903;
    /// `waitanyinvoice` timed out.
    pub const INVOICE_WAIT_TIMED_OUT: i64 = 904;
    /// The invoice was not found.
    pub const INVOICE_NOT_FOUND: i64 = 905;
    /// The invoice's status was not the expected one.
    pub const INVOICE_STATUS_UNEXPECTED: i64 = 906;

    /// `deldatastore`: the key does not exist.
    pub const DATASTORE_DEL_DOES_NOT_EXIST: i64 = 1200;
    /// `deldatastore`: the key exists but the generation is wrong.
    pub const DATASTORE_DEL_WRONG_GENERATION: i64 = 1201;
    /// `datastore`: the key already exists and the mode said it must not.
    pub const DATASTORE_UPDATE_ALREADY_EXISTS: i64 = 1202;
    /// `datastore`: the key does not exist and the mode said it must.
    pub const DATASTORE_UPDATE_DOES_NOT_EXIST: i64 = 1203;
    /// `datastore`: the generation was wrong.
    pub const DATASTORE_UPDATE_WRONG_GENERATION: i64 = 1204;
    /// `datastore`: the key already has children.
    pub const DATASTORE_UPDATE_HAS_CHILDREN: i64 = 1205;
    /// `datastore`: one of the key's parents already holds a value.
    pub const DATASTORE_UPDATE_NO_CHILDREN: i64 = 1206;

    /// `checkmessage`: the public key was not found.
    pub const SIGNMESSAGE_PUBKEY_NOT_FOUND: i64 = 1301;
    /// `delforward`: no such forward.
    pub const DELFORWARD_NOT_FOUND: i64 = 1401;
    /// `checkrune`: the rune is not one of this node's (another secret or version).
    pub const RUNE_NOT_AUTHORIZED: i64 = 1501;
    /// `checkrune`: one of the rune's restrictions is not met.
    pub const RUNE_NOT_PERMITTED: i64 = 1502;
    /// `checkrune`: the rune's unique id is blacklisted.
    pub const RUNE_BLACKLISTED: i64 = 1503;
    /// `wait`: timed out.
    pub const WAIT_TIMEOUT: i64 = 2000;
}

/// A JSON-RPC error object: `{"code": N, "message": "...", "data": ...}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RpcError {
    /// One of [`codes`], or a plugin's own number passed through unchanged.
    pub code: i64,
    /// A human-readable explanation.
    pub message: String,
    /// Optional structured details.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
}

impl RpcError {
    /// An error with this code and message and no data.
    pub fn new(code: i64, message: impl Into<String>) -> Self {
        RpcError {
            code,
            message: message.into(),
            data: None,
        }
    }

    /// Attaches structured data.
    pub fn with_data(mut self, data: Value) -> Self {
        self.data = Some(data);
        self
    }

    /// `-32602`: the parameters are wrong.
    pub fn invalid_params(message: impl Into<String>) -> Self {
        Self::new(codes::INVALID_PARAMS, message)
    }

    /// `-32600`: the request is malformed.
    pub fn invalid_request(message: impl Into<String>) -> Self {
        Self::new(codes::INVALID_REQUEST, message)
    }

    /// `-32601`: nobody serves this method (CLN's wording).
    pub fn unknown_method(method: &str) -> Self {
        Self::new(
            codes::METHOD_NOT_FOUND,
            format!("Unknown command '{method}'"),
        )
    }

    /// `-4`: the plugin died before answering (CLN's wording).
    pub fn plugin_terminated() -> Self {
        Self::new(
            codes::PLUGIN_TERMINATED,
            "Plugin terminated before replying to RPC call.",
        )
    }

    /// `-1`: a generic node error.
    pub fn lightningd(message: impl Into<String>) -> Self {
        Self::new(codes::LIGHTNINGD, message)
    }
}

impl std::fmt::Display for RpcError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (code {})", self.message, self.code)
    }
}

impl std::error::Error for RpcError {}
