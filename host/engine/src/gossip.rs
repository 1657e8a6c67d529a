//! Gossip validation: a channel announcement is accepted only if its funding output exists
//! on chain and is unspent (BOLT 7), looked up through the chain backend, without blocking
//! LDK's message handling (`UtxoResult::Async`). This also gives `listchannels` each
//! channel's capacity.

use std::sync::Arc;
use std::time::Duration;

use bitcoin::constants::ChainHash;
use lightning::routing::utxo::{UtxoFuture, UtxoLookup, UtxoLookupError, UtxoResult};
use lightning::util::wakers::Notifier;

use super::LdkLog;
use crate::chain::Chain;
use crate::chain::backend::Backend;

/// Delays between attempts when the backend cannot answer (busy, restarting, or a peer's
/// announcement arrived before our chain source has the block): about half a minute in all,
/// which LDK's asynchronous lookup allows without holding up other gossip.
const RETRY_DELAYS_MS: [u64; 5] = [500, 1_000, 2_000, 4_000, 8_000];

/// One lookup attempt's time limit.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);

/// Looks up channels' funding outputs on chain.
pub struct ChainUtxos {
    chain: Arc<Chain>,
    network: bitcoin::Network,
    handle: tokio::runtime::Handle,
    log: super::Log,
}

impl ChainUtxos {
    /// A lookup over `chain` (on `network`), run on the current runtime.
    pub fn new(chain: Arc<Chain>, network: bitcoin::Network, log: super::Log) -> ChainUtxos {
        ChainUtxos {
            chain,
            network,
            handle: tokio::runtime::Handle::current(),
            log,
        }
    }
}

impl UtxoLookup for ChainUtxos {
    fn get_utxo(&self, chain_hash: &ChainHash, scid: u64, notifier: Arc<Notifier>) -> UtxoResult {
        if *chain_hash != ChainHash::using_genesis_block(self.network) {
            return UtxoResult::Sync(Err(UtxoLookupError::UnknownChain));
        }
        let Some(backend) = self.chain.backend() else {
            return UtxoResult::Sync(Err(UtxoLookupError::UnknownTx));
        };
        let fut = UtxoFuture::new(notifier);
        let done = fut.clone();
        let (height, txindex, vout) = (
            (scid >> 40) as u32,
            ((scid >> 16) & 0xff_ffff) as usize,
            (scid & 0xffff) as u32,
        );
        let log = self.log.clone();
        self.handle.spawn(async move {
            done.resolve(lookup_with_retries(&backend, &log, scid, height, txindex, vout).await);
        });
        UtxoResult::Async(fut)
    }
}

/// Looks up the output, retrying when the backend fails; a definite "no such output" or
/// "spent" answer is final at once.
async fn lookup_with_retries(
    backend: &Backend,
    log: &LdkLog,
    scid: u64,
    height: u32,
    txindex: usize,
    vout: u32,
) -> Result<bitcoin::TxOut, UtxoLookupError> {
    let scid_text = super::scid_string(scid);
    let mut last_error = String::new();
    for delay in RETRY_DELAYS_MS.iter().map(|ms| Some(*ms)).chain([None]) {
        match tokio::time::timeout(ATTEMPT_TIMEOUT, backend.utxo(height, txindex, vout)).await {
            Ok(Ok(Some(out))) => return Ok(out),
            Ok(Ok(None)) => {
                log.log.debug(&format!(
                    "gossip: {scid_text} has no unspent funding output; announcement refused"
                ));
                return Err(UtxoLookupError::UnknownTx);
            }
            Ok(Err(e)) => last_error = e,
            Err(_) => last_error = format!("no answer within {ATTEMPT_TIMEOUT:?}"),
        }
        let Some(ms) = delay else { break };
        log.log.debug(&format!("gossip: looking up {scid_text}'s funding output failed ({last_error}); retrying in {ms} ms"));
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    log.log.unusual(&format!("gossip: could not look up {scid_text}'s funding output ({last_error}); announcement dropped until it is sent again"));
    Err(UtxoLookupError::UnknownTx)
}
