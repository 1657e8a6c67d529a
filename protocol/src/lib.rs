//! The wire language shared by `fulgurd`, `fulgur-cli`, the plugin SDK and every plugin.
//!
//! Fulgur speaks Core Lightning's (CLN's) JSON-RPC dialect on two boundaries: the
//! `lightning-rpc` UNIX socket and the stdin/stdout pipes of plugins. This crate holds what
//! both ends must agree on, and nothing else: no sockets, no processes, no database.
//!
//! ```
//! use fulgur_protocol::codec::FrameDecoder;
//! use fulgur_protocol::jsonrpc::Message;
//!
//! // Two messages arrive glued together, as plugins are allowed to write them.
//! let mut decoder = FrameDecoder::new(1 << 20);
//! decoder.extend(br#"{"jsonrpc":"2.0","method":"log","params":{"message":"hi"}}{"jsonrpc":"2.0","id":"cln:init#1","result":{}}"#);
//! let first = Message::from_value(decoder.next_value().unwrap().unwrap()).unwrap();
//! let second = Message::from_value(decoder.next_value().unwrap().unwrap()).unwrap();
//! assert!(matches!(first, Message::Notification(_)));
//! assert!(matches!(second, Message::Response(_)));
//! ```
#![deny(missing_docs)]

pub mod amount;
pub mod codec;
pub mod error;
pub mod hooks;
pub mod jsonrpc;
pub mod manifest;
pub mod notifications;
pub mod options;

pub use error::RpcError;
pub use jsonrpc::{Message, Notification, Request, Response};
