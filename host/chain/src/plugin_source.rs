//! lightning-block-sync's `BlockSource` over CLN's backend-plugin interface, which only knows
//! heights: `getchaininfo` (the block count) and `getrawblockbyheight` (hash and raw block).
//!
//! * `get_best_block`: the block at `blockcount`.
//! * `get_header(hash, hint)`: the block at the hint, checked against the hash; headers seen
//!   before are answered from an index (stale blocks of a reorg keep being answerable).
//! * chainwork, which the interface does not give, is computed as blocks are indexed: a
//!   block's chainwork is its parent's plus its own work. A block whose parent is unknown is
//!   linked by walking back (up to [`MAX_WALK`] blocks) to an indexed ancestor; failing that
//!   it is anchored at `work × (height + 1)`, exact on regtest and consistent everywhere.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::Mutex;

use bitcoin::Block;
use bitcoin::block::Header;
use bitcoin::hash_types::BlockHash;
use bitcoin::pow::Work;
use lightning_block_sync::{
    BlockData, BlockHeaderData, BlockSource, BlockSourceError, BlockSourceResult,
};

/// How far back a header with an unknown parent is linked to indexed ones.
pub const MAX_WALK: u32 = 144;
/// Indexed headers older than the newest minus this are forgotten.
const INDEX_DEPTH: u32 = 2016 * 2;
/// Recently fetched raw blocks kept for `get_block`.
const RECENT_BLOCKS: usize = 8;

/// What a height-only backend offers.
pub trait HeightSource: Send + Sync {
    /// The number of blocks (the tip's height).
    fn block_count(&self) -> impl Future<Output = Result<u32, String>> + Send + '_;
    /// The block at `height` on the backend's best chain, `None` if there is none yet.
    fn block_at(
        &self,
        height: u32,
    ) -> impl Future<Output = Result<Option<Block>, String>> + Send + '_;
}

#[derive(Default)]
struct Index {
    headers: HashMap<BlockHash, BlockHeaderData>,
    recent: VecDeque<(BlockHash, Block)>,
}

impl Index {
    fn insert(&mut self, hash: BlockHash, data: BlockHeaderData) {
        self.headers.insert(hash, data);
        let best = self.headers.values().map(|h| h.height).max().unwrap_or(0);
        let cutoff = best.saturating_sub(INDEX_DEPTH);
        if self.headers.len() as u32 > INDEX_DEPTH + 64 {
            self.headers.retain(|_, h| h.height >= cutoff);
        }
    }

    fn remember(&mut self, block: &Block) {
        let hash = block.block_hash();
        if self.recent.iter().any(|(h, _)| *h == hash) {
            return;
        }
        self.recent.push_back((hash, block.clone()));
        while self.recent.len() > RECENT_BLOCKS {
            self.recent.pop_front();
        }
    }
}

/// A `BlockSource` over a [`HeightSource`].
pub struct HeightBlockSource<S> {
    source: S,
    index: Mutex<Index>,
}

fn transient(msg: impl Into<String>) -> BlockSourceError {
    BlockSourceError::transient(msg.into())
}

impl<S: HeightSource> HeightBlockSource<S> {
    /// The height-indexed source underneath.
    pub fn source(&self) -> &S {
        &self.source
    }

    /// Wraps `source`.
    pub fn new(source: S) -> Self {
        HeightBlockSource {
            source,
            index: Mutex::new(Index::default()),
        }
    }

    /// The wrapped source.
    pub fn inner(&self) -> &S {
        &self.source
    }

    fn index(&self) -> std::sync::MutexGuard<'_, Index> {
        self.index.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn fetch(&self, height: u32) -> BlockSourceResult<Option<Block>> {
        let b = self.source.block_at(height).await.map_err(transient)?;
        if let Some(b) = &b {
            self.index().remember(b);
        }
        Ok(b)
    }

    /// The header data of `hash` at `height`, indexing it and the ancestors needed to know its
    /// chainwork.
    async fn header_at(&self, hash: &BlockHash, height: u32) -> BlockSourceResult<BlockHeaderData> {
        if let Some(h) = self.index().headers.get(hash) {
            return Ok(*h);
        }
        let Some(block) = self.fetch(height).await? else {
            return Err(transient(format!("no block at height {height} yet")));
        };
        if block.block_hash() != *hash {
            return Err(transient(format!(
                "block {hash} is not at height {height} on the backend's chain"
            )));
        }
        // Walk back to an indexed ancestor (or genesis), newest first.
        let mut chain: Vec<(BlockHash, Header, u32)> = vec![(*hash, block.header, height)];
        let mut base: Option<Work> = None;
        loop {
            let (_, last, h) = chain[chain.len() - 1];
            if h == 0 {
                base = Some(Work::from_be_bytes([0; 32]));
                break;
            }
            if let Some(p) = self.index().headers.get(&last.prev_blockhash) {
                base = Some(p.chainwork);
                break;
            }
            if chain.len() as u32 > MAX_WALK {
                break;
            }
            match self.fetch(h - 1).await? {
                Some(b) if b.block_hash() == last.prev_blockhash => {
                    chain.push((last.prev_blockhash, b.header, h - 1));
                }
                _ => break,
            }
        }
        let mut work = match base {
            Some(w) => w,
            None => {
                // Anchor: the deepest block gets work × (height + 1), minus its own work.
                let (_, deepest, h) = chain[chain.len() - 1];
                let per = deepest.work();
                let mut w = Work::from_be_bytes([0; 32]);
                for _ in 0..h {
                    w = w + per;
                }
                w
            }
        };
        let mut index = self.index();
        let mut out = None;
        for (hash, header, height) in chain.into_iter().rev() {
            work = work + header.work();
            let data = BlockHeaderData {
                header,
                height,
                chainwork: work,
            };
            index.insert(hash, data);
            out = Some(data);
        }
        out.ok_or_else(|| transient("empty chain"))
    }
}

impl<S: HeightSource> BlockSource for HeightBlockSource<S> {
    async fn get_header<'a>(
        &'a self,
        header_hash: &'a BlockHash,
        height_hint: Option<u32>,
    ) -> BlockSourceResult<BlockHeaderData> {
        if let Some(h) = self.index().headers.get(header_hash) {
            return Ok(*h);
        }
        let Some(height) = height_hint else {
            return Err(transient("a height hint is needed"));
        };
        self.header_at(header_hash, height).await
    }

    async fn get_block<'a>(&'a self, header_hash: &'a BlockHash) -> BlockSourceResult<BlockData> {
        let (cached, height) = {
            let idx = self.index();
            let cached = idx
                .recent
                .iter()
                .find(|(h, _)| h == header_hash)
                .map(|(_, b)| b.clone());
            (cached, idx.headers.get(header_hash).map(|h| h.height))
        };
        if let Some(b) = cached {
            return Ok(BlockData::FullBlock(b));
        }
        let Some(height) = height else {
            return Err(transient(format!("unknown block {header_hash}")));
        };
        match self.fetch(height).await? {
            Some(b) if b.block_hash() == *header_hash => Ok(BlockData::FullBlock(b)),
            _ => Err(transient(format!(
                "block {header_hash} is no longer on the backend's chain"
            ))),
        }
    }

    async fn get_best_block(&self) -> BlockSourceResult<(BlockHash, Option<u32>)> {
        let count = self.source.block_count().await.map_err(transient)?;
        match self.fetch(count).await? {
            Some(b) => Ok((b.block_hash(), Some(count))),
            None => Err(transient(format!("no block at height {count}"))),
        }
    }
}

/// Decodes a hex raw block.
pub fn decode_block(hex: &str) -> Result<Block, String> {
    let bytes = hex_decode(hex)?;
    bitcoin::consensus::deserialize(&bytes).map_err(|e| format!("bad block: {e}"))
}

fn hex_decode(hex: &str) -> Result<Vec<u8>, String> {
    use bitcoin::hex::FromHex;
    Vec::<u8>::from_hex(hex).map_err(|e| format!("bad hex: {e}"))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use bitcoin::absolute::LockTime;
    use bitcoin::block::Version;
    use bitcoin::hashes::Hash;
    use bitcoin::pow::CompactTarget;
    use bitcoin::{Amount, OutPoint, ScriptBuf, Sequence, TxIn, TxMerkleNode, TxOut, Witness};
    use lightning::chain::{BlockLocator, Listen};
    use lightning_block_sync::poll::ChainPoller;
    use lightning_block_sync::{SpvClient, init};
    use std::sync::Arc;

    /// The first 8 characters of a block hash, as the listener records them.
    fn short(hash: &str) -> String {
        hash.chars().take(8).collect()
    }

    /// A regtest block on `prev` at `height`; `tag` makes competing branches differ.
    pub fn mine(prev: BlockHash, height: u32, tag: u8) -> Block {
        let mut script = vec![0x03];
        script.extend_from_slice(&height.to_le_bytes()[..3]);
        script.push(tag);
        let coinbase = bitcoin::Transaction {
            version: bitcoin::transaction::Version::TWO,
            lock_time: LockTime::ZERO,
            input: vec![TxIn {
                previous_output: OutPoint::null(),
                script_sig: ScriptBuf::from_bytes(script),
                sequence: Sequence::MAX,
                witness: Witness::new(),
            }],
            output: vec![TxOut {
                value: Amount::from_sat(50),
                script_pubkey: ScriptBuf::new(),
            }],
        };
        let mut block = Block {
            header: Header {
                version: Version::TWO,
                prev_blockhash: prev,
                merkle_root: TxMerkleNode::all_zeros(),
                time: 1_700_000_000 + height,
                bits: CompactTarget::from_consensus(0x207fffff),
                nonce: 0,
            },
            txdata: vec![coinbase],
        };
        block.header.merkle_root = block
            .compute_merkle_root()
            .unwrap_or_else(TxMerkleNode::all_zeros);
        while block.header.validate_pow(block.header.target()).is_err() {
            block.header.nonce += 1;
        }
        block
    }

    /// A chain the test can reorganise.
    #[derive(Default)]
    pub struct FakeChain(pub Mutex<Vec<Block>>);

    impl FakeChain {
        pub fn new(len: u32) -> FakeChain {
            let genesis = bitcoin::constants::genesis_block(bitcoin::Network::Regtest);
            let c = FakeChain(Mutex::new(vec![genesis]));
            c.extend(len, 0);
            c
        }
        pub fn extend(&self, n: u32, tag: u8) {
            let mut v = self.0.lock().unwrap_or_else(|p| p.into_inner());
            for _ in 0..n {
                let h = v.len() as u32;
                let prev = v[v.len() - 1].block_hash();
                v.push(mine(prev, h, tag));
            }
        }
        pub fn truncate(&self, height: u32) {
            self.0
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .truncate(height as usize + 1);
        }
        pub fn hash(&self, height: u32) -> BlockHash {
            self.0.lock().unwrap_or_else(|p| p.into_inner())[height as usize].block_hash()
        }
    }

    impl HeightSource for Arc<FakeChain> {
        async fn block_count(&self) -> Result<u32, String> {
            Ok(self.0.lock().unwrap_or_else(|p| p.into_inner()).len() as u32 - 1)
        }
        async fn block_at(&self, height: u32) -> Result<Option<Block>, String> {
            Ok(self
                .0
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(height as usize)
                .cloned())
        }
    }

    /// Records what it is told.
    #[derive(Default)]
    pub struct Recorder(pub Mutex<Vec<String>>);
    impl Listen for Recorder {
        fn filtered_block_connected(
            &self,
            header: &Header,
            _txdata: &lightning::chain::transaction::TransactionData,
            height: u32,
        ) {
            self.0
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(format!(
                    "+{height}:{}",
                    short(&header.block_hash().to_string())
                ));
        }
        fn blocks_disconnected(&self, fork: BlockLocator) {
            self.0
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(format!("-{}", fork.height));
        }
    }

    #[tokio::test]
    async fn chainwork_is_exact_on_regtest_and_heights_checked() {
        let chain = Arc::new(FakeChain::new(5));
        let src = HeightBlockSource::new(chain.clone());
        let (best, h) = src
            .get_best_block()
            .await
            .unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!((best, h), (chain.hash(5), Some(5)));
        let d = src
            .get_header(&best, h)
            .await
            .unwrap_or_else(|e| panic!("{e:?}"));
        // Regtest: every block (genesis included) has work 2.
        let per = d.header.work();
        let mut six = Work::from_be_bytes([0; 32]);
        for _ in 0..6 {
            six = six + per;
        }
        assert_eq!(d.chainwork, six);
        assert_eq!(d.height, 5);
        // No hint, unknown hash: an error. Wrong hint: an error, never a wrong header.
        let other = mine(chain.hash(2), 3, 9).block_hash();
        assert!(src.get_header(&other, None).await.is_err());
        assert!(src.get_header(&other, Some(3)).await.is_err());
        assert!(
            src.get_header(&chain.hash(4), Some(3)).await.is_ok(),
            "indexed by hash"
        );
    }

    #[tokio::test]
    async fn spv_client_follows_a_reorg_over_heights() {
        let chain = Arc::new(FakeChain::new(3));
        let src = HeightBlockSource::new(chain.clone());
        let rec = Recorder::default();
        let start = BlockLocator::new(chain.hash(1), 1);
        let (cache, tip) = init::synchronize_listeners(
            &src,
            bitcoin::Network::Regtest,
            vec![(start, &rec as &dyn Listen)],
        )
        .await
        .unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(tip.height, 3);
        let seen: Vec<String> = rec
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
            .collect();
        assert_eq!(seen.len(), 2);
        assert!(seen[0].starts_with("+2:") && seen[1].starts_with("+3:"));

        // Reorg: drop blocks 2..3, mine a longer branch 2..4.
        let old3 = chain.hash(3);
        chain.truncate(1);
        chain.extend(3, 7);
        assert_ne!(chain.hash(3), old3);
        let poller = ChainPoller::new(&src, bitcoin::Network::Regtest);
        let mut spv = SpvClient::new(tip, poller, cache, &rec);
        let (_, changed) = spv
            .poll_best_tip()
            .await
            .unwrap_or_else(|e| panic!("{e:?}"));
        assert!(changed);
        let seen: Vec<String> = rec
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
            .collect();
        let want = vec![
            "-1".to_string(),
            format!("+2:{}", short(&chain.hash(2).to_string())),
            format!("+3:{}", short(&chain.hash(3).to_string())),
            format!("+4:{}", short(&chain.hash(4).to_string())),
        ];
        assert_eq!(seen, want);
        // A shorter competing branch is not followed.
        let (_, changed) = spv
            .poll_best_tip()
            .await
            .unwrap_or_else(|e| panic!("{e:?}"));
        assert!(!changed);
    }
}
