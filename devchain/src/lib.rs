//! devchain: a development and test chain for Fulgur.
//!
//! A small regtest block chain that validates transactions (libbitcoinconsensus for scripts, our
//! own code for locktimes, BIP68, coinbase maturity and value conservation), mines on demand and
//! answers the subset of bitcoind's JSON-RPC that Fulgur uses. It is not a full node: there is no
//! P2P and its relay policy is simplified (see README.md).
//!
//! The library is pure logic ([`chain::Chain`]) plus a JSON-RPC dispatcher ([`rpc`]) and a thin
//! HTTP/1.1 server ([`server`]).

pub mod chain;
pub mod faucet;
pub mod rpc;
pub mod server;
pub mod store;
pub mod util;

/// An error as bitcoind reports it in a JSON-RPC response: `{"code": .., "message": ..}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RpcError {
    pub code: i32,
    pub message: String,
}

impl RpcError {
    pub fn new(code: i32, message: impl Into<String>) -> Self {
        RpcError {
            code,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for RpcError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (code {})", self.message, self.code)
    }
}

impl std::error::Error for RpcError {}

/// bitcoind's RPC error codes (src/rpc/protocol.h).
pub mod codes {
    pub const INVALID_REQUEST: i32 = -32600;
    pub const METHOD_NOT_FOUND: i32 = -32601;
    pub const INVALID_PARAMS: i32 = -32602;
    pub const INTERNAL_ERROR: i32 = -32603;
    pub const PARSE_ERROR: i32 = -32700;
    pub const MISC_ERROR: i32 = -1;
    pub const TYPE_ERROR: i32 = -3;
    pub const WALLET_ERROR: i32 = -4;
    pub const INVALID_ADDRESS_OR_KEY: i32 = -5;
    pub const WALLET_INSUFFICIENT_FUNDS: i32 = -6;
    pub const INVALID_PARAMETER: i32 = -8;
    pub const DESERIALIZATION_ERROR: i32 = -22;
    pub const VERIFY_ERROR: i32 = -25;
    pub const VERIFY_REJECTED: i32 = -26;
    pub const VERIFY_ALREADY_IN_CHAIN: i32 = -27;
}
