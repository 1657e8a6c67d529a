//! The built-in backend: bitcoind's JSON-RPC over HTTP, through lightning-block-sync's
//! `RpcClient`. Only bitcoind's own methods and behaviour are used. When the server refuses
//! our credentials (401/403) and we log in with a cookie, the cookie is read again (bitcoind
//! writes a new one at each start) and the call retried once.

use std::sync::{Arc, RwLock};

use bitcoin::hash_types::BlockHash;
use lightning_block_sync::http::{HttpClientError, JsonResponse, ToParseErrorMessage};
use lightning_block_sync::rpc::{RpcClient, RpcClientError};
use lightning_block_sync::{BlockData, BlockHeaderData, BlockSourceError, BlockSourceResult};
use serde_json::{Value, json};

use super::settings::{Auth, Endpoint, credentials};

/// Why a call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// The backend could not be reached or answered with an HTTP error.
    #[error("{0}")]
    Unreachable(String),
    /// The backend answered with a JSON-RPC error.
    #[error("{message} (code {code})")]
    Rpc {
        /// bitcoind's code.
        code: i64,
        /// bitcoind's message.
        message: String,
    },
    /// The answer did not have the expected shape.
    #[error("invalid answer: {0}")]
    Invalid(String),
}

impl From<RpcClientError> for CallError {
    fn from(e: RpcClientError) -> Self {
        match e {
            RpcClientError::Rpc(r) => CallError::Rpc {
                code: r.code,
                message: r.message,
            },
            RpcClientError::InvalidData(m) => CallError::Invalid(m),
            RpcClientError::Http(h) => CallError::Unreachable(h.to_string()),
        }
    }
}

fn is_auth_failure(e: &RpcClientError) -> bool {
    matches!(e, RpcClientError::Http(HttpClientError::Http(h)) if h.status_code == 401 || h.status_code == 403)
}

/// A bitcoind JSON-RPC client.
pub struct BitcoindRpc {
    endpoint: Endpoint,
    client: RwLock<Arc<RpcClient>>,
}

impl BitcoindRpc {
    /// A client for `endpoint` (nothing is sent yet).
    pub fn new(endpoint: Endpoint) -> BitcoindRpc {
        let client = RpcClient::new(&credentials(&endpoint.auth), endpoint.url.clone());
        BitcoindRpc {
            endpoint,
            client: RwLock::new(Arc::new(client)),
        }
    }

    /// The URL, for logs.
    pub fn url(&self) -> &str {
        &self.endpoint.url
    }

    fn client(&self) -> Arc<RpcClient> {
        self.client
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn reload_credentials(&self) -> bool {
        if !matches!(self.endpoint.auth, Auth::Cookie(_)) {
            return false;
        }
        let fresh = RpcClient::new(&credentials(&self.endpoint.auth), self.endpoint.url.clone());
        *self.client.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(fresh);
        true
    }

    /// Calls `method`, converting the result like lightning-block-sync does.
    pub async fn call<T>(&self, method: &str, params: &[Value]) -> Result<T, RpcClientError>
    where
        JsonResponse: TryInto<T>,
        <JsonResponse as TryInto<T>>::Error: ToParseErrorMessage,
    {
        // `--bitcoin-rpcclienttimeout` bounds each request (LDK's client waits up to five
        // minutes for an answer).
        let limit = self.endpoint.timeout;
        let timed_out = || {
            RpcClientError::Http(HttpClientError::Parse(format!(
                "bitcoind did not answer {method} within {} s (--bitcoin-rpcclienttimeout)",
                limit.as_secs()
            )))
        };
        let once = || async {
            tokio::time::timeout(limit, self.client().call_method::<T>(method, params))
                .await
                .unwrap_or_else(|_| Err(timed_out()))
        };
        match once().await {
            Err(e) if is_auth_failure(&e) && self.reload_credentials() => once().await,
            r => r,
        }
    }

    /// Calls `method` and returns the raw JSON result.
    pub async fn call_json(&self, method: &str, params: &[Value]) -> Result<Value, CallError> {
        self.call::<Value>(method, params)
            .await
            .map_err(CallError::from)
    }

    /// `getheader` for lightning-block-sync.
    pub async fn get_header(&self, hash: &BlockHash) -> BlockSourceResult<BlockHeaderData> {
        self.call::<BlockHeaderData>("getblockheader", &[json!(hash.to_string())])
            .await
            .map_err(BlockSourceError::from)
    }

    /// The full block, for lightning-block-sync.
    pub async fn get_block(&self, hash: &BlockHash) -> BlockSourceResult<BlockData> {
        let block = self
            .call::<bitcoin::Block>("getblock", &[json!(hash.to_string()), json!(0)])
            .await
            .map_err(BlockSourceError::from)?;
        Ok(BlockData::FullBlock(block))
    }

    /// The best block hash and height.
    pub async fn get_best_block(&self) -> BlockSourceResult<(BlockHash, Option<u32>)> {
        self.call::<(BlockHash, Option<u32>)>("getblockchaininfo", &[])
            .await
            .map_err(BlockSourceError::from)
    }
}
