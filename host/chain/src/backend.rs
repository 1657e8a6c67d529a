//! The Bitcoin backend: bitcoind's JSON-RPC (built in) or CLN-style backend plugins
//! (`getchaininfo`, `estimatefees`, `getrawblockbyheight`, `getutxout`, `sendrawtransaction`).
//! Both give the same four things: chain status, a `BlockSource`, fee samples, broadcasts.

use std::sync::Arc;

use bitcoin::hash_types::BlockHash;
use bitcoin::{Block, Transaction, Txid};
use lightning_block_sync::{BlockData, BlockHeaderData, BlockSource, BlockSourceResult};
use serde_json::{Value, json};

use super::BroadcastError;
use super::ChainPlugins;
use super::fees::{FeeSample, TARGETS, btc_per_kvb_to_perkw};
use super::plugin_source::{HeightBlockSource, HeightSource, decode_block};
use super::rpc::{BitcoindRpc, CallError};

/// The five methods a backend plugin set must register.
pub const BACKEND_METHODS: [&str; 5] = [
    "getchaininfo",
    "estimatefees",
    "getrawblockbyheight",
    "getutxout",
    "sendrawtransaction",
];

/// Which backend the plugins ask for: `Ok(true)` all five methods are registered (use the
/// plugins), `Ok(false)` none (use bitcoind), `Err` with CLN's message when only some are.
pub fn plugins_choose(registered: impl Fn(&str) -> bool) -> Result<bool, String> {
    let have: Vec<bool> = BACKEND_METHODS.iter().map(|m| registered(m)).collect();
    if have.iter().all(|h| *h) {
        return Ok(true);
    }
    if have.iter().all(|h| !*h) {
        return Ok(false);
    }
    let missing = BACKEND_METHODS
        .iter()
        .zip(&have)
        .find(|(_, h)| !**h)
        .map(|(m, _)| *m)
        .unwrap_or("getchaininfo");
    Err(format!(
        "Could not access the plugin for {missing}, is a Bitcoin plugin (by default plugins/bcli) registered ?"
    ))
}

/// `getblockchaininfo` / `getchaininfo`, reduced to what we check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainInfo {
    /// BIP70 chain name (`main`, `test`, `testnet4`, `signet`, `regtest`).
    pub chain: String,
    /// Blocks validated.
    pub blocks: u32,
    /// Headers known.
    pub headers: u32,
    /// Initial block download.
    pub ibd: bool,
}

impl ChainInfo {
    /// Still catching up with the network.
    pub fn syncing(&self) -> bool {
        self.ibd || self.headers > self.blocks
    }
}

fn u32_field(v: &Value, k: &str) -> Result<u32, String> {
    v.get(k)
        .and_then(Value::as_u64)
        .and_then(|n| u32::try_from(n).ok())
        .ok_or_else(|| format!("missing or bad '{k}' in {v}"))
}

fn chain_field(v: &Value) -> Result<String, String> {
    v.get("chain")
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| format!("missing 'chain' in {v}"))
}

/// Parses bitcoind's `getblockchaininfo`.
pub fn parse_blockchaininfo(v: &Value) -> Result<ChainInfo, String> {
    Ok(ChainInfo {
        chain: chain_field(v)?,
        blocks: u32_field(v, "blocks")?,
        headers: u32_field(v, "headers").unwrap_or(0),
        ibd: v
            .get("initialblockdownload")
            .and_then(Value::as_bool)
            .unwrap_or(false),
    })
}

/// Parses a backend plugin's `getchaininfo`.
pub fn parse_getchaininfo(v: &Value) -> Result<ChainInfo, String> {
    Ok(ChainInfo {
        chain: chain_field(v)?,
        blocks: u32_field(v, "blockcount")?,
        headers: u32_field(v, "headercount")?,
        ibd: v.get("ibd").and_then(Value::as_bool).unwrap_or(false),
    })
}

/// Parses a backend plugin's `estimatefees` (sat/kvB) into sat/kw; CLN's rules: the floor
/// is required and `blocks` must be strictly ascending.
pub fn parse_estimatefees(v: &Value) -> Result<FeeSample, String> {
    let floor = v
        .get("feerate_floor")
        .and_then(Value::as_u64)
        .ok_or_else(|| format!("estimatefees: missing feerate_floor in {v}"))?;
    let mut estimates: Vec<(u32, u32)> = vec![];
    for e in v
        .get("feerates")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
    {
        let b = u32_field(e, "blocks")?;
        let r = u32_field(e, "feerate")?;
        if estimates.last().is_some_and(|l| l.0 >= b) {
            return Err(format!(
                "estimatefees: feerates not in ascending block order: {v}"
            ));
        }
        estimates.push((b, r / 4));
    }
    Ok(FeeSample {
        estimates,
        floor_perkw: u32::try_from(floor / 4).ok(),
    })
}

/// Parses "error code: -27" out of a bitcoin-cli style message (bcli's `errmsg`).
pub fn errmsg_code(msg: &str) -> Option<i64> {
    let rest = msg.split("error code:").nth(1)?;
    rest.split_whitespace().next()?.parse().ok()
}

/// Calls into backend plugins.
pub struct PluginCaller {
    plugins: Arc<dyn ChainPlugins>,
}

impl PluginCaller {
    pub(crate) async fn call(&self, method: &str, params: Value) -> Result<Value, String> {
        self.plugins.call(method, params).await
    }
}

impl HeightSource for PluginCaller {
    async fn block_count(&self) -> Result<u32, String> {
        let v = self.call("getchaininfo", json!({"last_height": 0})).await?;
        parse_getchaininfo(&v).map(|i| i.blocks)
    }

    async fn block_at(&self, height: u32) -> Result<Option<Block>, String> {
        let v = self
            .call("getrawblockbyheight", json!({"height": height}))
            .await?;
        match v.get("block").and_then(Value::as_str) {
            None => Ok(None),
            Some(hex) => {
                let b = decode_block(hex)?;
                if let Some(h) = v.get("blockhash").and_then(Value::as_str)
                    && h != b.block_hash().to_string()
                {
                    return Err(format!(
                        "getrawblockbyheight: blockhash {h} does not match the block"
                    ));
                }
                Ok(Some(b))
            }
        }
    }
}

/// The backend in use.
pub enum Backend {
    /// bitcoind's JSON-RPC.
    Rpc(BitcoindRpc),
    /// Backend plugins.
    Plugins(HeightBlockSource<PluginCaller>),
}

impl Backend {
    /// The hash of the best chain's block at `height`.
    pub async fn block_hash_at(&self, height: u32) -> Result<bitcoin::BlockHash, String> {
        match self {
            Backend::Rpc(r) => {
                let hash = r
                    .call_json("getblockhash", &[json!(height)])
                    .await
                    .map_err(|e| e.to_string())?;
                hash.as_str()
                    .and_then(|h| h.parse().ok())
                    .ok_or_else(|| format!("getblockhash {height}: not a block hash: {hash}"))
            }
            Backend::Plugins(p) => p
                .source()
                .block_at(height)
                .await?
                .map(|b| b.block_hash())
                .ok_or_else(|| format!("no block at height {height}")),
        }
    }

    /// The output `vout` of transaction `txindex` in the block at `height`, if it exists and
    /// is unspent (gossip validation of a channel's funding output).
    pub async fn utxo(
        &self,
        height: u32,
        txindex: usize,
        vout: u32,
    ) -> Result<Option<bitcoin::TxOut>, String> {
        let block = match self {
            Backend::Rpc(r) => {
                let hash = r
                    .call_json("getblockhash", &[json!(height)])
                    .await
                    .map_err(|e| e.to_string())?;
                let hex = r
                    .call_json("getblock", &[hash, json!(0)])
                    .await
                    .map_err(|e| e.to_string())?;
                Some(super::plugin_source::decode_block(
                    hex.as_str().unwrap_or_default(),
                )?)
            }
            Backend::Plugins(p) => p.source().block_at(height).await?,
        };
        let Some(tx) = block.and_then(|b| b.txdata.into_iter().nth(txindex)) else {
            return Ok(None);
        };
        let Some(out) = tx.output.get(vout as usize).cloned() else {
            return Ok(None);
        };
        let txid = tx.compute_txid().to_string();
        let unspent = match self {
            Backend::Rpc(r) => !r
                .call_json("gettxout", &[json!(txid), json!(vout), json!(false)])
                .await
                .map_err(|e| e.to_string())?
                .is_null(),
            Backend::Plugins(p) => p
                .source()
                .call("getutxout", json!({"txid": txid, "vout": vout}))
                .await?
                .get("script")
                .is_some_and(|s| !s.is_null()),
        };
        Ok(unspent.then_some(out))
    }

    /// Whether output `vout` of `txid` exists unspent, in a block or (with bitcoind) in the
    /// mempool: `fundchannel_cancel` refuses to forget a channel whose funding is out.
    pub async fn output_exists(&self, txid: bitcoin::Txid, vout: u32) -> Result<bool, String> {
        match self {
            Backend::Rpc(r) => Ok(!r
                .call_json(
                    "gettxout",
                    &[json!(txid.to_string()), json!(vout), json!(true)],
                )
                .await
                .map_err(|e| e.to_string())?
                .is_null()),
            Backend::Plugins(p) => Ok(p
                .source()
                .call("getutxout", json!({"txid": txid.to_string(), "vout": vout}))
                .await?
                .get("script")
                .is_some_and(|s| !s.is_null())),
        }
    }

    /// The plugin backend over `plugins`.
    pub fn plugins(plugins: Arc<dyn ChainPlugins>) -> Backend {
        Backend::Plugins(HeightBlockSource::new(PluginCaller { plugins }))
    }

    /// A description for logs.
    pub fn describe(&self) -> String {
        match self {
            Backend::Rpc(r) => format!("bitcoind RPC at {}", r.url()),
            Backend::Plugins(_) => "backend plugins".into(),
        }
    }

    /// The chain status.
    pub async fn chain_info(&self, last_height: u32) -> Result<ChainInfo, String> {
        match self {
            Backend::Rpc(r) => {
                let v = r
                    .call_json("getblockchaininfo", &[])
                    .await
                    .map_err(|e| e.to_string())?;
                parse_blockchaininfo(&v)
            }
            Backend::Plugins(p) => {
                let v = p
                    .inner()
                    .call("getchaininfo", json!({"last_height": last_height}))
                    .await?;
                parse_getchaininfo(&v)
            }
        }
    }

    /// A fee sample.
    pub async fn estimate_fees(&self) -> Result<FeeSample, String> {
        match self {
            Backend::Rpc(r) => {
                let mut estimates = vec![];
                for b in TARGETS {
                    let mode = if b == 2 { "CONSERVATIVE" } else { "ECONOMICAL" };
                    let v = r
                        .call_json("estimatesmartfee", &[json!(b), json!(mode)])
                        .await
                        .map_err(|e| e.to_string())?;
                    if let Some(rate) = v
                        .get("feerate")
                        .and_then(Value::as_f64)
                        .and_then(btc_per_kvb_to_perkw)
                    {
                        estimates.push((b, rate));
                    }
                }
                // Keep the curve monotone: a longer target never costs more.
                for i in 1..estimates.len() {
                    if estimates[i].1 > estimates[i - 1].1 {
                        estimates[i].1 = estimates[i - 1].1;
                    }
                }
                let floor = match r.call_json("getmempoolinfo", &[]).await {
                    Ok(v) => ["mempoolminfee", "minrelaytxfee"]
                        .iter()
                        .filter_map(|k| v.get(*k).and_then(Value::as_f64))
                        .filter_map(btc_per_kvb_to_perkw)
                        .max(),
                    Err(_) => None,
                };
                Ok(FeeSample {
                    estimates,
                    floor_perkw: floor,
                })
            }
            Backend::Plugins(p) => {
                let v = p.inner().call("estimatefees", json!({})).await?;
                parse_estimatefees(&v)
            }
        }
    }

    /// Sends `tx` once. bitcoind's -27 ("already in block chain") counts as success.
    pub async fn send_raw(&self, tx: &Transaction) -> Result<Txid, BroadcastError> {
        let txid = tx.compute_txid();
        let hex = bitcoin::consensus::encode::serialize_hex(tx);
        match self {
            Backend::Rpc(r) => match r.call_json("sendrawtransaction", &[json!(hex)]).await {
                Ok(_) => Ok(txid),
                Err(CallError::Rpc { code: -27, .. }) => Ok(txid),
                Err(CallError::Rpc { code, message }) => Err(BroadcastError { code, message }),
                Err(e) => Err(BroadcastError {
                    code: -1,
                    message: e.to_string(),
                }),
            },
            Backend::Plugins(p) => {
                let v = p
                    .inner()
                    .call(
                        "sendrawtransaction",
                        json!({"tx": hex, "allowhighfees": false}),
                    )
                    .await
                    .map_err(|message| BroadcastError { code: -1, message })?;
                if v.get("success").and_then(Value::as_bool) == Some(true) {
                    return Ok(txid);
                }
                let message = v
                    .get("errmsg")
                    .and_then(Value::as_str)
                    .unwrap_or("rejected")
                    .to_string();
                match errmsg_code(&message) {
                    Some(-27) => Ok(txid),
                    Some(code) => Err(BroadcastError { code, message }),
                    None if message.contains("already in block chain") => Ok(txid),
                    None => Err(BroadcastError { code: -26, message }),
                }
            }
        }
    }
}

impl Backend {
    /// Sends a child with its unconfirmed parents (parents first) through bitcoind's
    /// `submitpackage`, where the child's fee counts for a parent under the mempool's minimum
    /// fee. Ok when every transaction is in the mempool (or was already). Backend plugins
    /// have no such method (CLN's interface), nor has a bitcoind before 26: `-32601`.
    pub async fn submit_package(&self, txs: &[Transaction]) -> Result<(), BroadcastError> {
        let hex: Vec<String> = txs
            .iter()
            .map(bitcoin::consensus::encode::serialize_hex)
            .collect();
        match self {
            Backend::Rpc(r) => match r.call_json("submitpackage", &[json!(hex)]).await {
                Ok(v) => package_verdict(&v),
                Err(CallError::Rpc { code, message }) => Err(BroadcastError { code, message }),
                Err(e) => Err(BroadcastError {
                    code: -1,
                    message: e.to_string(),
                }),
            },
            Backend::Plugins(_) => Err(BroadcastError {
                code: -32601,
                message: "the Bitcoin backend plugins' interface has no submitpackage".into(),
            }),
        }
    }
}

/// `submitpackage`'s result: `package_msg` "success", or the refusal with each transaction's
/// error.
fn package_verdict(v: &Value) -> Result<(), BroadcastError> {
    let msg = v.get("package_msg").and_then(Value::as_str).unwrap_or("");
    if msg == "success" {
        return Ok(());
    }
    let errors: Vec<String> = v
        .get("tx-results")
        .and_then(Value::as_object)
        .map(|m| {
            m.values()
                .filter_map(|r| {
                    let txid = r.get("txid").and_then(Value::as_str)?;
                    let e = r.get("error").and_then(Value::as_str)?;
                    Some(format!("{txid}: {e}"))
                })
                .collect()
        })
        .unwrap_or_default();
    Err(BroadcastError {
        code: -26,
        message: if errors.is_empty() {
            msg.to_string()
        } else {
            format!("{msg} ({})", errors.join("; "))
        },
    })
}

impl BlockSource for Backend {
    async fn get_header<'a>(
        &'a self,
        header_hash: &'a BlockHash,
        height_hint: Option<u32>,
    ) -> BlockSourceResult<BlockHeaderData> {
        match self {
            Backend::Rpc(r) => r.get_header(header_hash).await,
            Backend::Plugins(p) => p.get_header(header_hash, height_hint).await,
        }
    }

    async fn get_block<'a>(&'a self, header_hash: &'a BlockHash) -> BlockSourceResult<BlockData> {
        match self {
            Backend::Rpc(r) => r.get_block(header_hash).await,
            Backend::Plugins(p) => p.get_block(header_hash).await,
        }
    }

    async fn get_best_block(&self) -> BlockSourceResult<(BlockHash, Option<u32>)> {
        match self {
            Backend::Rpc(r) => r.get_best_block().await,
            Backend::Plugins(p) => p.get_best_block().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_backend_plugins_are_refused() {
        assert_eq!(plugins_choose(|_| false), Ok(false));
        assert_eq!(plugins_choose(|_| true), Ok(true));
        let e = plugins_choose(|m| m != "getutxout")
            .err()
            .unwrap_or_default();
        assert_eq!(
            e,
            "Could not access the plugin for getutxout, is a Bitcoin plugin (by default plugins/bcli) registered ?"
        );
    }

    #[test]
    fn submitpackage_verdicts() {
        assert!(package_verdict(&json!({"package_msg": "success", "tx-results": {}})).is_ok());
        let e = package_verdict(&json!({
            "package_msg": "transaction failed",
            "tx-results": {"w1": {"txid": "aa", "error": "min relay fee not met, 100 < 150"},
                           "w2": {"txid": "bb", "vsize": 150, "fees": {"base": 0.0001}}}
        }))
        .err()
        .unwrap_or_else(|| panic!("a failed package is an error"));
        assert_eq!(e.code, -26);
        assert_eq!(
            e.message,
            "transaction failed (aa: min relay fee not met, 100 < 150)"
        );
        assert!(package_verdict(&json!({})).is_err());
    }

    #[test]
    fn chain_info_parsing() {
        let i = parse_blockchaininfo(&json!({"chain": "regtest", "blocks": 5, "headers": 5, "initialblockdownload": false, "bestblockhash": "00"}))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(i.chain, "regtest");
        assert!(!i.syncing());
        let i = parse_blockchaininfo(&json!({"chain": "main", "blocks": 5, "headers": 9}))
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(i.syncing());
        assert!(parse_blockchaininfo(&json!({"blocks": 1})).is_err());
        let i = parse_getchaininfo(
            &json!({"chain": "test", "headercount": 3, "blockcount": 3, "ibd": true}),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert!(i.syncing());
        assert!(parse_getchaininfo(&json!({"chain": "test", "blockcount": 3})).is_err());
    }

    #[test]
    fn estimatefees_rules() {
        let s = parse_estimatefees(&json!({"feerate_floor": 1000, "feerates": [{"blocks": 2, "feerate": 20000}, {"blocks": 6, "feerate": 8000}]}))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s.estimates, vec![(2, 5000), (6, 2000)]);
        assert_eq!(s.floor_perkw, Some(250));
        assert!(parse_estimatefees(&json!({"feerates": []})).is_err());
        assert!(parse_estimatefees(&json!({"feerate_floor": 1000, "feerates": [{"blocks": 6, "feerate": 1}, {"blocks": 6, "feerate": 1}]})).is_err());
        let s = parse_estimatefees(&json!({"feerate_floor": 1000, "feerates": []}))
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(s.estimates.is_empty());
    }

    #[test]
    fn bcli_error_codes() {
        assert_eq!(
            errmsg_code("error code: -27\nerror message:\nTransaction already in block chain"),
            Some(-27)
        );
        assert_eq!(errmsg_code("error code: -26 bad-txns"), Some(-26));
        assert_eq!(errmsg_code("something else"), None);
    }
}
