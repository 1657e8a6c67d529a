//! Gossip validation: a channel announcement is accepted only if its funding output exists
//! on chain and is unspent (BOLT 7), looked up through the chain backend, without blocking
//! LDK's message handling (`UtxoResult::Async`). This also gives `listchannels` each
//! channel's capacity.

use std::sync::Arc;
use std::time::Duration;

use bitcoin::constants::ChainHash;
use lightning::routing::utxo::{UtxoFuture, UtxoLookup, UtxoLookupError, UtxoResult};
use lightning::util::wakers::Notifier;

use crate::chain::Chain;

/// Looks up channels' funding outputs on chain.
pub struct ChainUtxos {
    chain: Arc<Chain>,
    network: bitcoin::Network,
    handle: tokio::runtime::Handle,
}

impl ChainUtxos {
    /// A lookup over `chain` (on `network`), run on the current runtime.
    pub fn new(chain: Arc<Chain>, network: bitcoin::Network) -> ChainUtxos {
        ChainUtxos {
            chain,
            network,
            handle: tokio::runtime::Handle::current(),
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
        self.handle.spawn(async move {
            let r =
                tokio::time::timeout(Duration::from_secs(5), backend.utxo(height, txindex, vout))
                    .await;
            let result = match r {
                Ok(Ok(Some(out))) => Ok(out),
                _ => Err(UtxoLookupError::UnknownTx),
            };
            done.resolve(result);
        });
        UtxoResult::Async(fut)
    }
}
