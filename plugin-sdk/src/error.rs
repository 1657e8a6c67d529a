//! The SDK's error types, one flat enum per phase.
//!
//! [`BuildError`] comes from checking a [`crate::Builder`] before the manifest is sent;
//! [`RunError`] ends the handshake or the dispatch loop; [`CallError`] is what a call back
//! to the node ([`crate::RpcClient`]) can fail with; [`NotifyError`] is what sending a custom
//! notification can fail with. Errors a handler returns to the node are plain
//! [`fulgur_protocol::RpcError`]s carrying CLN's codes.

use fulgur_protocol::RpcError;
use fulgur_protocol::codec::FrameError;
use fulgur_protocol::error::codes;

/// The builder describes a plugin the node would refuse. Fix the registration named in the
/// message; nothing has been sent to the node yet.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BuildError {
    /// An option name is empty or uses characters other than lower-case letters, digits,
    /// `-` and `_` (the node kills plugins declaring such names).
    #[error("invalid option name '{0}': use lower-case letters, digits, '-' and '_'")]
    InvalidOptionName(String),
    /// The same option was declared twice.
    #[error("option '{0}' declared twice")]
    DuplicateOption(String),
    /// `multi` was set on a `bool` or `flag` option, which CLN refuses.
    #[error("option '{0}': bool and flag options cannot be multi")]
    MultiNotAllowed(String),
    /// The default value does not parse as the option's type (a flag's default may only be
    /// `false`).
    #[error("option '{option}': bad default: {reason}")]
    BadDefault {
        /// The option.
        option: String,
        /// What is wrong with the default.
        reason: String,
    },
    /// An on-change callback was given for an option that is not declared, or not dynamic.
    #[error("on_change for '{0}', which is not a declared dynamic option")]
    OnChangeWithoutDynamicOption(String),
    /// The same method was declared twice, or its name is one the protocol reserves
    /// (`getmanifest`, `init`, `setconfig`, `check`) or a hook's name.
    #[error("method name '{0}' is declared twice or reserved")]
    DuplicateMethod(String),
    /// The same hook was registered twice (the node kills such a plugin).
    #[error("hook '{0}' registered twice")]
    DuplicateHook(String),
    /// `filters` was given for a hook other than `rpc_command` and `custommsg`.
    #[error("hook '{0}' does not accept filters")]
    FiltersNotAllowed(String),
    /// A custom notification topic is empty or is one the node emits itself.
    #[error("'{0}' cannot be declared as a custom notification topic")]
    BadNotificationTopic(String),
}

/// Why the handshake or the dispatch loop stopped with an error. After any of these the
/// plugin should exit; the node will notice the closed pipe.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The builder was invalid; see [`BuildError`].
    #[error("invalid plugin definition: {0}")]
    Build(#[from] BuildError),
    /// The node broke the handshake (the first request was not `getmanifest`, or the second
    /// not `init`, or `init` was malformed).
    #[error("handshake error: {0}")]
    Handshake(String),
    /// The input could not be decoded (not JSON, or a message too large).
    #[error("transport error: {0}")]
    Transport(#[from] FrameError),
    /// Messages can no longer be written (the node closed our stdout).
    #[error("the node stopped reading our messages")]
    OutputClosed,
}

/// Why a call to the node over its RPC socket failed. Convert it into an
/// [`RpcError`] with `?` inside a handler: node errors keep their code and message,
/// every other failure becomes CLN's generic code `-1`.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The socket could not be opened (the node is not up, or the path is wrong).
    #[error("cannot connect to {path}: {source}")]
    Connect {
        /// The socket path tried.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// Writing the request failed.
    #[error("I/O error on the RPC socket: {0}")]
    Io(#[from] std::io::Error),
    /// The connection closed (or sent undecodable bytes) before the answer arrived; the call
    /// may or may not have run.
    #[error("RPC connection closed before the answer arrived")]
    Closed,
    /// The node answered with a JSON-RPC error.
    #[error("{0}")]
    Rpc(RpcError),
    /// The params could not be serialised, or the result did not fit the requested type.
    #[error("cannot convert JSON: {0}")]
    Json(String),
}

impl From<CallError> for RpcError {
    fn from(e: CallError) -> RpcError {
        match e {
            CallError::Rpc(inner) => inner,
            other => RpcError::new(codes::LIGHTNINGD, other.to_string()),
        }
    }
}

/// Why a custom notification was not sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotifyError {
    /// The topic was not declared with [`crate::Builder::notification`]; the node would drop
    /// it.
    #[error("notification topic '{0}' was not declared in the manifest")]
    UndeclaredTopic(String),
    /// The payload is not a JSON object.
    #[error("notification payload must be a JSON object")]
    NotAnObject,
    /// The plugin's output is closed.
    #[error("the node stopped reading our messages")]
    OutputClosed,
}
