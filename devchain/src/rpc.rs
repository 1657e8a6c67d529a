//! JSON-RPC dispatch with bitcoind's method names, parameters (positional or named), results and
//! error codes. Transport-independent: [`Rpc::handle_body`] turns a request body into an HTTP
//! status and a response body.

use std::collections::BTreeMap;
use std::str::FromStr;
use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

use bitcoin::consensus::{deserialize, serialize};
use bitcoin::{Address, Amount, Block, BlockHash, Network, ScriptBuf, Transaction, Txid};
use serde_json::{Map, Value, json};

use crate::RpcError;
use crate::chain::{
    BlockEntry, Chain, DEFAULT_MAX_FEERATE_SAT_PER_KVB, MIN_RELAY_FEE_SAT_PER_KVB, PackageOutcome,
    PackageTxResult, TxLocation,
};
use crate::codes;
use crate::util::{
    btc_value, difficulty, hex, parse_btc_amount, sat_to_btc_value, script_pubkey_json, unhex,
    work_hex,
};

/// What `getnetworkinfo` reports as `version` (the bitcoind release whose RPC behaviour devchain
/// follows).
pub const VERSION: u64 = 270000;
pub const SUBVERSION: &str = concat!("/devchain:", env!("CARGO_PKG_VERSION"), "/");

/// bitcoind's `MAX_PACKAGE_COUNT`.
const MAX_PACKAGE_COUNT: usize = 25;

/// Methods and their parameter names, in bitcoind's order (named parameters map onto these).
const METHODS: &[(&str, &[&str])] = &[
    ("getblockchaininfo", &[]),
    ("getnetworkinfo", &[]),
    ("getblockcount", &[]),
    ("getbestblockhash", &[]),
    ("getblockhash", &["height"]),
    ("getblockheader", &["blockhash", "verbose"]),
    ("getblock", &["blockhash", "verbosity|verbose"]),
    ("getchaintips", &[]),
    ("gettxout", &["txid", "n", "include_mempool"]),
    (
        "getrawtransaction",
        &["txid", "verbose|verbosity", "blockhash"],
    ),
    ("decoderawtransaction", &["hexstring", "iswitness"]),
    (
        "sendrawtransaction",
        &["hexstring", "maxfeerate", "maxburnamount"],
    ),
    ("testmempoolaccept", &["rawtxs", "maxfeerate"]),
    ("submitpackage", &["package", "maxfeerate", "maxburnamount"]),
    ("getrawmempool", &["verbose", "mempool_sequence"]),
    ("getmempoolinfo", &[]),
    ("getmempoolentry", &["txid"]),
    ("estimatesmartfee", &["conf_target", "estimate_mode"]),
    ("setfeerate", &["feerate"]),
    ("setmempoolminfee", &["feerate"]),
    ("generatetoaddress", &["nblocks", "address", "maxtries"]),
    ("generateblock", &["output", "transactions", "submit"]),
    (
        "sendtoaddress",
        &[
            "address",
            "amount",
            "comment",
            "comment_to",
            "subtractfeefromamount",
            "replaceable",
            "conf_target",
            "estimate_mode",
            "avoid_reuse",
            "fee_rate",
            "verbose",
        ],
    ),
    ("getnewaddress", &["label", "address_type"]),
    (
        "getbalance",
        &["dummy", "minconf", "include_watchonly", "avoid_reuse"],
    ),
    ("invalidateblock", &["blockhash"]),
    ("reconsiderblock", &["blockhash"]),
    ("setmocktime", &["timestamp"]),
    ("ping", &[]),
    ("uptime", &[]),
    ("stop", &[]),
    ("help", &["command"]),
];

/// Positional parameters after named ones were mapped; `None` for absent or null.
struct Params {
    method: &'static str,
    args: Vec<Option<Value>>,
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn type_error(v: &Value, expected: &str) -> RpcError {
    RpcError::new(
        codes::TYPE_ERROR,
        format!(
            "JSON value of type {} is not of expected type {expected}",
            type_name(v)
        ),
    )
}

/// `v` as `conv` reads it, or bitcoind's type error naming the `expected` type.
fn typed<'a, T>(
    v: &'a Value,
    expected: &str,
    conv: fn(&'a Value) -> Option<T>,
) -> Result<T, RpcError> {
    conv(v).ok_or_else(|| type_error(v, expected))
}

/// `setfeerate`'s rate: a positive, finite number of sat/vB.
fn positive_feerate(rate: Option<f64>) -> Result<f64, RpcError> {
    rate.filter(|r| *r > 0.0 && r.is_finite()).ok_or_else(|| {
        RpcError::new(
            codes::INVALID_PARAMETER,
            "feerate must be a positive number of sat/vB",
        )
    })
}

impl Params {
    fn get(&self, i: usize) -> Option<&Value> {
        self.args.get(i).and_then(|v| v.as_ref())
    }

    fn usage(&self) -> RpcError {
        let names = METHODS
            .iter()
            .find(|(m, _)| *m == self.method)
            .map(|(_, p)| *p)
            .unwrap_or(&[]);
        let names: Vec<&str> = names
            .iter()
            .map(|n| n.split('|').next().unwrap_or(n))
            .collect();
        RpcError::new(
            codes::MISC_ERROR,
            format!("{} {}\n\nwrong parameters", self.method, names.join(" ")),
        )
    }

    fn required(&self, i: usize) -> Result<&Value, RpcError> {
        self.get(i).ok_or_else(|| self.usage())
    }

    fn str_(&self, i: usize) -> Result<&str, RpcError> {
        typed(self.required(i)?, "string", Value::as_str)
    }

    fn opt_i64(&self, i: usize) -> Result<Option<i64>, RpcError> {
        self.get(i)
            .map(|v| typed(v, "number", Value::as_i64))
            .transpose()
    }

    fn i64_(&self, i: usize) -> Result<i64, RpcError> {
        typed(self.required(i)?, "number", Value::as_i64)
    }

    fn opt_bool(&self, i: usize) -> Result<Option<bool>, RpcError> {
        self.get(i)
            .map(|v| typed(v, "bool", Value::as_bool))
            .transpose()
    }

    /// A verbosity that bitcoind accepts as a bool or a number.
    fn verbosity(&self, i: usize, default: i64) -> Result<i64, RpcError> {
        match self.get(i) {
            None => Ok(default),
            Some(Value::Bool(b)) => Ok(*b as i64),
            Some(v) => typed(v, "number", Value::as_i64),
        }
    }

    fn hash<T: FromStr>(&self, i: usize, name: &str) -> Result<T, RpcError> {
        parse_hash(self.str_(i)?, name)
    }
}

fn parse_hash<T: FromStr>(s: &str, name: &str) -> Result<T, RpcError> {
    if s.len() != 64 {
        return Err(RpcError::new(
            codes::INVALID_PARAMETER,
            format!("{name} must be of length 64 (not {}, for '{s}')", s.len()),
        ));
    }
    T::from_str(s).map_err(|_| {
        RpcError::new(
            codes::INVALID_PARAMETER,
            format!("{name} must be hexadecimal string (not '{s}')"),
        )
    })
}

fn decode_tx(hexstr: &str) -> Option<Transaction> {
    deserialize::<Transaction>(&unhex(hexstr)?).ok()
}

fn parse_address(s: &str, message: &str) -> Result<ScriptBuf, RpcError> {
    Address::from_str(s)
        .ok()
        .and_then(|a| a.require_network(Network::Regtest).ok())
        .map(|a| a.script_pubkey())
        .ok_or_else(|| RpcError::new(codes::INVALID_ADDRESS_OR_KEY, message))
}

/// A fee rate in BTC/kvB (number or string) to sat/kvB.
fn parse_feerate_btc_kvb(v: &Value) -> Result<u64, RpcError> {
    let sats = parse_btc_amount(v).map_err(|m| RpcError::new(codes::TYPE_ERROR, m))?;
    if sats < 0 {
        return Err(RpcError::new(codes::TYPE_ERROR, "Amount out of range"));
    }
    Ok(sats as u64)
}

fn sat_per_vb_to_btc_kvb(rate: f64) -> Value {
    let sat_per_kvb = (rate * 1000.0).round() as i64;
    sat_to_btc_value(sat_per_kvb)
}

pub struct Rpc {
    chain: Mutex<Chain>,
    started: Instant,
    /// Set by the `stop` method; the server stops once it has sent the reply.
    stop_requested: std::sync::atomic::AtomicBool,
    /// Notified when the server should stop.
    pub stop: tokio::sync::Notify,
}

impl Rpc {
    pub fn new(chain: Chain) -> Rpc {
        Rpc {
            chain: Mutex::new(chain),
            started: Instant::now(),
            stop_requested: std::sync::atomic::AtomicBool::new(false),
            stop: tokio::sync::Notify::new(),
        }
    }

    /// Whether `stop` was called (the transport stops after replying).
    pub fn stop_requested(&self) -> bool {
        self.stop_requested
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    pub fn chain(&self) -> MutexGuard<'_, Chain> {
        self.chain.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Handles one HTTP request body. Returns the HTTP status and the response body, as bitcoind
    /// does: 200 on success and for batches, 404 for an unknown method, 400 for an invalid
    /// request, 500 for other errors.
    pub fn handle_body(&self, body: &[u8]) -> (u16, Vec<u8>) {
        let request: Value = match serde_json::from_slice(body) {
            Ok(v) => v,
            Err(_) => {
                return (
                    500,
                    reply(
                        Value::Null,
                        Err(RpcError::new(codes::PARSE_ERROR, "Parse error")),
                    ),
                );
            }
        };
        match request {
            Value::Object(_) => {
                let (id, result) = self.handle_request(&request);
                let status = match &result {
                    Ok(_) => 200,
                    Err(e) if e.code == codes::METHOD_NOT_FOUND => 404,
                    Err(e) if e.code == codes::INVALID_REQUEST => 400,
                    Err(_) => 500,
                };
                (status, reply(id, result))
            }
            Value::Array(requests) => {
                let replies: Vec<Value> = requests
                    .iter()
                    .map(|r| {
                        let (id, result) = self.handle_request(r);
                        reply_value(id, result)
                    })
                    .collect();
                (
                    200,
                    serde_json::to_vec(&Value::Array(replies)).unwrap_or_default(),
                )
            }
            _ => (
                500,
                reply(
                    Value::Null,
                    Err(RpcError::new(
                        codes::PARSE_ERROR,
                        "Top-level object parse error",
                    )),
                ),
            ),
        }
    }

    fn handle_request(&self, request: &Value) -> (Value, Result<Value, RpcError>) {
        let Some(obj) = request.as_object() else {
            return (
                Value::Null,
                Err(RpcError::new(
                    codes::INVALID_REQUEST,
                    "Invalid Request object",
                )),
            );
        };
        let id = obj.get("id").cloned().unwrap_or(Value::Null);
        let method = match obj.get("method") {
            None => {
                return (
                    id,
                    Err(RpcError::new(codes::INVALID_REQUEST, "Missing method")),
                );
            }
            Some(Value::String(m)) => m.as_str(),
            Some(_) => {
                return (
                    id,
                    Err(RpcError::new(
                        codes::INVALID_REQUEST,
                        "Method must be a string",
                    )),
                );
            }
        };
        let params = match obj.get("params") {
            None | Some(Value::Null) => Value::Array(vec![]),
            Some(p @ (Value::Array(_) | Value::Object(_))) => p.clone(),
            Some(_) => {
                return (
                    id,
                    Err(RpcError::new(
                        codes::INVALID_REQUEST,
                        "Params must be an array or object",
                    )),
                );
            }
        };
        (id, self.call(method, params))
    }

    /// Calls `method` with `params` (a JSON array or object).
    pub fn call(&self, method: &str, params: Value) -> Result<Value, RpcError> {
        let Some((name, names)) = METHODS.iter().find(|(m, _)| *m == method) else {
            return Err(RpcError::new(codes::METHOD_NOT_FOUND, "Method not found"));
        };
        let args: Vec<Option<Value>> = match params {
            Value::Array(a) => a
                .into_iter()
                .map(|v| if v.is_null() { None } else { Some(v) })
                .collect(),
            Value::Object(o) => {
                let mut args: Vec<Option<Value>> = vec![None; names.len()];
                for (k, v) in o {
                    let pos = names
                        .iter()
                        .position(|n| n.split('|').any(|alias| alias == k));
                    match pos {
                        Some(p) => args[p] = if v.is_null() { None } else { Some(v) },
                        None => {
                            return Err(RpcError::new(
                                codes::INVALID_PARAMETER,
                                format!("Unknown named parameter {k}"),
                            ));
                        }
                    }
                }
                while args.last().is_some_and(|a| a.is_none()) {
                    args.pop();
                }
                args
            }
            _ => {
                return Err(RpcError::new(
                    codes::INVALID_REQUEST,
                    "Params must be an array or object",
                ));
            }
        };
        let p = Params { method: name, args };
        if p.args.len() > names.len() {
            return Err(p.usage());
        }
        self.dispatch(&p)
    }

    fn dispatch(&self, p: &Params) -> Result<Value, RpcError> {
        match p.method {
            "getblockchaininfo" => Ok(blockchain_info(&self.chain())),
            "getnetworkinfo" => Ok(network_info()),
            "getblockcount" => Ok(json!(self.chain().tip_height())),
            "getbestblockhash" => Ok(json!(self.chain().tip_hash().to_string())),
            "getblockhash" => {
                let height = p.i64_(0)?;
                let chain = self.chain();
                if height < 0 || height > chain.tip_height() as i64 {
                    return Err(RpcError::new(
                        codes::INVALID_PARAMETER,
                        "Block height out of range",
                    ));
                }
                Ok(json!(chain.hash_at(height as u32).map(|h| h.to_string())))
            }
            "getblockheader" => {
                let hash: BlockHash = p.hash(0, "hash")?;
                let verbose = p.opt_bool(1)?.unwrap_or(true);
                let chain = self.chain();
                let entry = chain.entry(&hash).ok_or_else(block_not_found)?;
                if verbose {
                    Ok(header_json(&chain, entry))
                } else {
                    Ok(json!(hex(&serialize(&entry.block.header))))
                }
            }
            "getblock" => {
                let hash: BlockHash = p.hash(0, "blockhash")?;
                let verbosity = p.verbosity(1, 1)?;
                let chain = self.chain();
                let entry = chain.entry(&hash).ok_or_else(block_not_found)?;
                match verbosity {
                    0 => Ok(json!(hex(&serialize(&entry.block)))),
                    1..=3 => Ok(block_json(&chain, entry, verbosity >= 2)),
                    _ => Err(RpcError::new(
                        codes::INVALID_PARAMETER,
                        "Verbosity must be in range 0..3",
                    )),
                }
            }
            "getchaintips" => {
                let chain = self.chain();
                let tips: Vec<Value> = chain
                    .chain_tips()
                    .into_iter()
                    .map(|e| {
                        let mut fork = e;
                        while !chain.is_active(&fork.hash) {
                            match chain.entry(&fork.block.header.prev_blockhash) {
                                Some(p) => fork = p,
                                None => break,
                            }
                        }
                        let status = if chain.is_active(&e.hash) {
                            "active"
                        } else if e.invalid {
                            "invalid"
                        } else {
                            "valid-fork"
                        };
                        json!({"height": e.height, "hash": e.hash.to_string(), "branchlen": e.height - fork.height, "status": status})
                    })
                    .collect();
                Ok(Value::Array(tips))
            }
            "gettxout" => {
                let txid: Txid = p.hash(0, "txid")?;
                let n = p.i64_(1)?;
                let include_mempool = p.opt_bool(2)?.unwrap_or(true);
                let chain = self.chain();
                let Ok(vout) = u32::try_from(n) else {
                    return Ok(Value::Null);
                };
                let op = bitcoin::OutPoint { txid, vout };
                let coin = if include_mempool {
                    if chain.mempool().spender_of(&op).is_some() {
                        return Ok(Value::Null);
                    }
                    chain.utxo(&op).cloned().map(|c| (c, false)).or_else(|| {
                        let e = chain.mempool().get(&txid)?;
                        let out = e.tx.output.get(vout as usize)?;
                        Some((
                            crate::chain::Coin {
                                output: out.clone(),
                                height: 0,
                                coinbase: false,
                            },
                            true,
                        ))
                    })
                } else {
                    chain.utxo(&op).cloned().map(|c| (c, false))
                };
                let Some((coin, in_mempool)) = coin else {
                    return Ok(Value::Null);
                };
                let confirmations = if in_mempool {
                    0
                } else {
                    chain.tip_height() - coin.height + 1
                };
                Ok(json!({
                    "bestblock": chain.tip_hash().to_string(),
                    "confirmations": confirmations,
                    "value": btc_value(coin.output.value),
                    "scriptPubKey": script_pubkey_json(&coin.output.script_pubkey),
                    "coinbase": coin.coinbase,
                }))
            }
            "getrawtransaction" => {
                let txid: Txid = p.hash(0, "parameter 1")?;
                let verbosity = p.verbosity(1, 0)?;
                let chain = self.chain();
                if p.get(2).is_some() {
                    let bh: BlockHash = p.hash(2, "parameter 3")?;
                    let entry = chain.entry(&bh).ok_or_else(|| {
                        RpcError::new(codes::INVALID_ADDRESS_OR_KEY, "Block hash not found")
                    })?;
                    let tx = entry.block.txdata.iter().find(|t| t.compute_txid() == txid).ok_or_else(|| {
                        RpcError::new(
                            codes::INVALID_ADDRESS_OR_KEY,
                            "No such transaction found in the provided block. Use gettransaction for wallet transactions.",
                        )
                    })?;
                    if verbosity == 0 {
                        return Ok(json!(hex(&serialize(tx))));
                    }
                    let mut v = tx_json(tx);
                    add_block_info(&chain, &mut v, entry);
                    v["in_active_chain"] = json!(chain.is_active(&bh));
                    return Ok(v);
                }
                let loc = chain.find_tx(&txid).ok_or_else(|| {
                    RpcError::new(
                        codes::INVALID_ADDRESS_OR_KEY,
                        "No such mempool or blockchain transaction. Use gettransaction for wallet transactions.",
                    )
                })?;
                let (tx, block) = match loc {
                    TxLocation::Mempool(e) => (&e.tx, None),
                    TxLocation::Block { tx, entry } => (tx, Some(entry)),
                };
                if verbosity == 0 {
                    return Ok(json!(hex(&serialize(tx))));
                }
                let mut v = tx_json(tx);
                if let Some(entry) = block {
                    add_block_info(&chain, &mut v, entry);
                }
                Ok(v)
            }
            "decoderawtransaction" => {
                let tx = decode_tx(p.str_(0)?).ok_or_else(|| {
                    RpcError::new(codes::DESERIALIZATION_ERROR, "TX decode failed")
                })?;
                Ok(tx_json(&tx))
            }
            "sendrawtransaction" => {
                let tx = decode_tx(p.str_(0)?).ok_or_else(|| {
                    RpcError::new(
                        codes::DESERIALIZATION_ERROR,
                        "TX decode failed. Make sure the tx has at least one input.",
                    )
                })?;
                let max = match p.get(1) {
                    None => DEFAULT_MAX_FEERATE_SAT_PER_KVB,
                    Some(v) => parse_feerate_btc_kvb(v)?,
                };
                let txid = self.chain().accept_tx(tx, Some(max))?;
                Ok(json!(txid.to_string()))
            }
            "testmempoolaccept" => {
                let raw = p.required(0)?;
                let raw = raw.as_array().ok_or_else(|| type_error(raw, "array"))?;
                let max = match p.get(1) {
                    None => DEFAULT_MAX_FEERATE_SAT_PER_KVB,
                    Some(v) => parse_feerate_btc_kvb(v)?,
                };
                let mut out = Vec::new();
                let mut chain = self.chain();
                for r in raw {
                    let s = r.as_str().ok_or_else(|| type_error(r, "string"))?;
                    let tx = decode_tx(s).ok_or_else(|| {
                        RpcError::new(
                            codes::DESERIALIZATION_ERROR,
                            format!("TX decode failed: {s}"),
                        )
                    })?;
                    let txid = tx.compute_txid();
                    let wtxid = tx.compute_wtxid();
                    match chain.test_accept(tx, Some(max)) {
                        Ok(e) => out.push(json!({
                            "txid": txid.to_string(), "wtxid": wtxid.to_string(), "allowed": true,
                            "vsize": e.vsize, "fees": {"base": btc_value(e.fee)},
                        })),
                        Err(e) => out.push(json!({
                            "txid": txid.to_string(), "wtxid": wtxid.to_string(), "allowed": false,
                            "reject-reason": e.message,
                        })),
                    }
                }
                Ok(Value::Array(out))
            }
            "submitpackage" => {
                let raw = p.required(0)?;
                let raw = raw.as_array().ok_or_else(|| type_error(raw, "array"))?;
                if raw.is_empty() || raw.len() > MAX_PACKAGE_COUNT {
                    return Err(RpcError::new(
                        codes::INVALID_PARAMETER,
                        format!(
                            "Array must contain between 1 and {MAX_PACKAGE_COUNT} transactions."
                        ),
                    ));
                }
                let max = match p.get(1) {
                    None => DEFAULT_MAX_FEERATE_SAT_PER_KVB,
                    Some(v) => parse_feerate_btc_kvb(v)?,
                };
                let mut txs = Vec::with_capacity(raw.len());
                for (i, r) in raw.iter().enumerate() {
                    let s = r.as_str().ok_or_else(|| type_error(r, "string"))?;
                    txs.push(decode_tx(s).ok_or_else(|| {
                        RpcError::new(
                            codes::DESERIALIZATION_ERROR,
                            format!("TX decode failed for tx {i}. Make sure the tx has at least one input."),
                        )
                    })?);
                }
                let out = self.chain().submit_package(txs, Some(max))?;
                Ok(package_outcome_json(&out))
            }
            "setmempoolminfee" => {
                let rate = p.required(0)?;
                let sat_vb = rate
                    .as_f64()
                    .filter(|r| *r >= 0.0 && r.is_finite())
                    .ok_or_else(|| {
                        RpcError::new(
                            codes::INVALID_PARAMETER,
                            "feerate must be a non-negative number of sat/vB",
                        )
                    })?;
                let mut chain = self.chain();
                chain.set_mempool_min_fee((sat_vb * 1000.0).round() as u64);
                Ok(json!({"mempoolminfee": sat_to_btc_value(chain.mempool_min_fee() as i64)}))
            }
            "getrawmempool" => {
                let verbose = p.opt_bool(0)?.unwrap_or(false);
                let chain = self.chain();
                let entries = chain.mempool().entries_in_order();
                if verbose {
                    let mut m = Map::new();
                    for e in entries {
                        m.insert(e.txid.to_string(), mempool_entry_json(&chain, &e.txid));
                    }
                    Ok(Value::Object(m))
                } else {
                    Ok(Value::Array(
                        entries.iter().map(|e| json!(e.txid.to_string())).collect(),
                    ))
                }
            }
            "getmempoolinfo" => {
                let chain = self.chain();
                let entries = chain.mempool().entries_in_order();
                let bytes: u64 = entries.iter().map(|e| e.vsize).sum();
                let fees: Amount = entries.iter().map(|e| e.fee).sum();
                let min = sat_to_btc_value(MIN_RELAY_FEE_SAT_PER_KVB as i64);
                Ok(json!({
                    "loaded": true,
                    "size": entries.len(),
                    "bytes": bytes,
                    "usage": bytes * 4,
                    "total_fee": btc_value(fees),
                    "maxmempool": 300_000_000u64,
                    "mempoolminfee": sat_to_btc_value(chain.mempool_min_fee() as i64),
                    "minrelaytxfee": min,
                    "incrementalrelayfee": min,
                    "unbroadcastcount": 0,
                    "fullrbf": false,
                }))
            }
            "getmempoolentry" => {
                let txid: Txid = p.hash(0, "txid")?;
                let chain = self.chain();
                if chain.mempool().get(&txid).is_none() {
                    return Err(RpcError::new(
                        codes::INVALID_ADDRESS_OR_KEY,
                        "Transaction not in mempool",
                    ));
                }
                Ok(mempool_entry_json(&chain, &txid))
            }
            "estimatesmartfee" => {
                let target = p.i64_(0)?;
                if !(1..=1008).contains(&target) {
                    return Err(RpcError::new(
                        codes::INVALID_PARAMETER,
                        "Invalid conf_target, must be between 1 and 1008",
                    ));
                }
                if let Some(v) = p.get(1) {
                    let mode = v
                        .as_str()
                        .ok_or_else(|| type_error(v, "string"))?
                        .to_ascii_lowercase();
                    if !["unset", "economical", "conservative"].contains(&mode.as_str()) {
                        return Err(RpcError::new(
                            codes::INVALID_PARAMETER,
                            "Invalid estimate_mode parameter, must be one of: \"unset\", \"economical\", \"conservative\"",
                        ));
                    }
                }
                let chain = self.chain();
                match chain.estimate_fee(target as u16) {
                    Some(rate) => {
                        let rate = rate.max(MIN_RELAY_FEE_SAT_PER_KVB as f64 / 1000.0);
                        Ok(json!({"feerate": sat_per_vb_to_btc_kvb(rate), "blocks": target.max(2)}))
                    }
                    None => Ok(
                        json!({"errors": ["Insufficient data or no feerate found"], "blocks": 0}),
                    ),
                }
            }
            "setfeerate" => {
                let rates = match p.get(0) {
                    None => BTreeMap::new(),
                    Some(Value::Number(n)) => {
                        BTreeMap::from([(1u16, positive_feerate(n.as_f64())?)])
                    }
                    Some(Value::Object(o)) => {
                        let mut m = BTreeMap::new();
                        for (k, v) in o {
                            let t: u16 = k
                                .parse()
                                .ok()
                                .filter(|t| (1..=1008).contains(t))
                                .ok_or_else(|| {
                                    RpcError::new(
                                        codes::INVALID_PARAMETER,
                                        format!("invalid conf_target '{k}', must be 1..1008"),
                                    )
                                })?;
                            m.insert(t, positive_feerate(v.as_f64())?);
                        }
                        m
                    }
                    Some(v) => return Err(type_error(v, "number or object")),
                };
                let mut chain = self.chain();
                chain.set_fee_rates(rates);
                Ok(fee_rates_json(chain.fee_rates()))
            }
            "generatetoaddress" => {
                let n = p.i64_(0)?;
                let script = parse_address(p.str_(1)?, "Error: Invalid address")?;
                let _ = p.opt_i64(2)?;
                if !(0..=100_000).contains(&n) {
                    return Err(RpcError::new(
                        codes::INVALID_PARAMETER,
                        "nblocks must be between 0 and 100000",
                    ));
                }
                let hashes = self.chain().generate(n as u32, &script)?;
                Ok(Value::Array(
                    hashes.iter().map(|h| json!(h.to_string())).collect(),
                ))
            }
            "generateblock" => {
                let script = parse_address(p.str_(0)?, "Error: Invalid address")?;
                let list = p.required(1)?;
                let list = list.as_array().ok_or_else(|| type_error(list, "array"))?;
                let submit = p.opt_bool(2)?.unwrap_or(true);
                if !submit {
                    return Err(RpcError::new(
                        codes::INVALID_PARAMETER,
                        "devchain's generateblock supports only submit=true",
                    ));
                }
                let mut chain = self.chain();
                let mut txs = Vec::new();
                for item in list {
                    let s = item.as_str().ok_or_else(|| type_error(item, "string"))?;
                    if s.len() == 64
                        && let Ok(txid) = Txid::from_str(s)
                    {
                        let e = chain.mempool().get(&txid).ok_or_else(|| {
                            RpcError::new(
                                codes::INVALID_ADDRESS_OR_KEY,
                                format!("Transaction {s} not in mempool."),
                            )
                        })?;
                        txs.push(e.tx.clone());
                        continue;
                    }
                    let tx = decode_tx(s).ok_or_else(|| {
                        RpcError::new(
                            codes::DESERIALIZATION_ERROR,
                            format!("Transaction decode failed for {s}. Make sure the tx has at least one input."),
                        )
                    })?;
                    txs.push(tx);
                }
                let hash = chain.generate_block(&script, txs)?;
                Ok(json!({"hash": hash.to_string()}))
            }
            "sendtoaddress" => {
                let script = parse_address(p.str_(0)?, "Invalid address")?;
                let sats = parse_btc_amount(p.required(1)?)
                    .map_err(|m| RpcError::new(codes::TYPE_ERROR, m))?;
                if sats <= 0 {
                    return Err(RpcError::new(codes::TYPE_ERROR, "Invalid amount for send"));
                }
                let subtract = p.opt_bool(4)?.unwrap_or(false);
                let _ = p.opt_bool(5)?;
                let conf_target = p.opt_i64(6)?;
                let fee_rate = match p.get(9) {
                    None => None,
                    Some(v) => {
                        let r = v
                            .as_f64()
                            .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
                            .ok_or_else(|| type_error(v, "number"))?;
                        Some(r)
                    }
                };
                let mut chain = self.chain();
                let rate = fee_rate.or_else(|| {
                    conf_target.and_then(|t| chain.estimate_fee(t.clamp(1, 1008) as u16))
                });
                let txid =
                    chain.send_to_address(script, Amount::from_sat(sats as u64), subtract, rate)?;
                if p.opt_bool(10)?.unwrap_or(false) {
                    return Ok(json!({"txid": txid.to_string(), "fee_reason": "devchain faucet"}));
                }
                Ok(json!(txid.to_string()))
            }
            "getnewaddress" => {
                if let Some(v) = p.get(1) {
                    let t = v.as_str().ok_or_else(|| type_error(v, "string"))?;
                    if t != "bech32" {
                        return Err(RpcError::new(
                            codes::INVALID_ADDRESS_OR_KEY,
                            format!(
                                "Unknown address type '{t}' (devchain's faucet only has a bech32 address)"
                            ),
                        ));
                    }
                }
                Ok(json!(self.chain().faucet().address().to_string()))
            }
            "getbalance" => Ok(btc_value(self.chain().faucet_balance())),
            "invalidateblock" => {
                let hash: BlockHash = p.hash(0, "blockhash")?;
                self.chain().invalidate_block(&hash)?;
                Ok(Value::Null)
            }
            "reconsiderblock" => {
                let hash: BlockHash = p.hash(0, "blockhash")?;
                self.chain().reconsider_block(&hash)?;
                Ok(Value::Null)
            }
            "setmocktime" => {
                let t = p.i64_(0)?;
                if t < 0 {
                    return Err(RpcError::new(
                        codes::INVALID_PARAMETER,
                        format!("Mocktime cannot be negative: {t}."),
                    ));
                }
                if t > u32::MAX as i64 / 2 {
                    return Err(RpcError::new(
                        codes::INVALID_PARAMETER,
                        format!("Mocktime too far in the future: {t}."),
                    ));
                }
                self.chain().set_mock_time(t as u64);
                Ok(Value::Null)
            }
            "ping" => Ok(Value::Null),
            "uptime" => Ok(json!(self.started.elapsed().as_secs())),
            "stop" => {
                self.stop_requested
                    .store(true, std::sync::atomic::Ordering::SeqCst);
                Ok(json!("devchain stopping"))
            }
            "help" => {
                let names: Vec<&str> = METHODS.iter().map(|(m, _)| *m).collect();
                Ok(json!(format!(
                    "devchain (a development and test chain) methods:\n{}",
                    names.join("\n")
                )))
            }
            _ => Err(RpcError::new(codes::METHOD_NOT_FOUND, "Method not found")),
        }
    }
}

fn block_not_found() -> RpcError {
    RpcError::new(codes::INVALID_ADDRESS_OR_KEY, "Block not found")
}

fn reply_value(id: Value, result: Result<Value, RpcError>) -> Value {
    match result {
        Ok(v) => json!({"result": v, "error": null, "id": id}),
        Err(e) => {
            json!({"result": null, "error": {"code": e.code, "message": e.message}, "id": id})
        }
    }
}

fn reply(id: Value, result: Result<Value, RpcError>) -> Vec<u8> {
    let mut v = serde_json::to_vec(&reply_value(id, result)).unwrap_or_default();
    v.push(b'\n');
    v
}

/// bitcoind's `submitpackage` result.
fn package_outcome_json(out: &PackageOutcome) -> Value {
    let mut results = Map::new();
    for (txid, wtxid, r) in &out.results {
        let mut o = Map::new();
        o.insert("txid".into(), json!(txid.to_string()));
        match r {
            PackageTxResult::InMempool { vsize, fee } => {
                o.insert("vsize".into(), json!(vsize));
                o.insert("fees".into(), json!({"base": btc_value(*fee)}));
            }
            PackageTxResult::Accepted {
                vsize,
                fee,
                effective_kvb,
                includes,
            } => {
                o.insert("vsize".into(), json!(vsize));
                o.insert(
                    "fees".into(),
                    json!({
                        "base": btc_value(*fee),
                        "effective-feerate": sat_to_btc_value(*effective_kvb as i64),
                        "effective-includes": includes.iter().map(|w| w.to_string()).collect::<Vec<_>>(),
                    }),
                );
            }
            PackageTxResult::Rejected(why) => {
                o.insert("error".into(), json!(why));
            }
        }
        results.insert(wtxid.to_string(), Value::Object(o));
    }
    json!({
        "package_msg": out.msg,
        "tx-results": results,
        "replaced-transactions": out.replaced.iter().map(|t| t.to_string()).collect::<Vec<_>>(),
    })
}

fn fee_rates_json(rates: &BTreeMap<u16, f64>) -> Value {
    let mut m = Map::new();
    for (t, r) in rates {
        m.insert(t.to_string(), json!(r));
    }
    json!({"feerates_sat_per_vb": m})
}

fn blockchain_info(chain: &Chain) -> Value {
    let tip = chain.tip();
    json!({
        "chain": "regtest",
        "blocks": tip.height,
        "headers": tip.height,
        "bestblockhash": tip.hash.to_string(),
        "difficulty": difficulty(tip.block.header.bits),
        "time": tip.block.header.time,
        "mediantime": tip.mtp,
        "verificationprogress": 1,
        "initialblockdownload": false,
        "chainwork": work_hex(tip.chainwork),
        "size_on_disk": 0,
        "pruned": false,
        "warnings": "",
    })
}

fn network_info() -> Value {
    let fee = sat_to_btc_value(MIN_RELAY_FEE_SAT_PER_KVB as i64);
    json!({
        "version": VERSION,
        "subversion": SUBVERSION,
        "protocolversion": 70016,
        "localservices": "0000000000000409",
        "localservicesnames": ["NETWORK", "WITNESS", "NETWORK_LIMITED"],
        "localrelay": true,
        "timeoffset": 0,
        "networkactive": true,
        "connections": 0,
        "connections_in": 0,
        "connections_out": 0,
        "networks": [],
        "relayfee": fee,
        "incrementalfee": fee,
        "localaddresses": [],
        "warnings": "",
    })
}

fn confirmations(chain: &Chain, entry: &BlockEntry) -> i64 {
    if chain.is_active(&entry.hash) {
        (chain.tip_height() - entry.height + 1) as i64
    } else {
        -1
    }
}

fn header_json(chain: &Chain, entry: &BlockEntry) -> Value {
    let h = &entry.block.header;
    let mut m = Map::new();
    m.insert("hash".into(), json!(entry.hash.to_string()));
    m.insert("confirmations".into(), json!(confirmations(chain, entry)));
    m.insert("height".into(), json!(entry.height));
    m.insert("version".into(), json!(h.version.to_consensus()));
    m.insert(
        "versionHex".into(),
        json!(format!("{:08x}", h.version.to_consensus())),
    );
    m.insert("merkleroot".into(), json!(h.merkle_root.to_string()));
    m.insert("time".into(), json!(h.time));
    m.insert("mediantime".into(), json!(entry.mtp));
    m.insert("nonce".into(), json!(h.nonce));
    m.insert(
        "bits".into(),
        json!(format!("{:08x}", h.bits.to_consensus())),
    );
    m.insert("difficulty".into(), json!(difficulty(h.bits)));
    m.insert("chainwork".into(), json!(work_hex(entry.chainwork)));
    m.insert("nTx".into(), json!(entry.block.txdata.len()));
    if entry.height > 0 {
        m.insert(
            "previousblockhash".into(),
            json!(h.prev_blockhash.to_string()),
        );
    }
    if chain.is_active(&entry.hash)
        && let Some(next) = chain.hash_at(entry.height + 1)
    {
        m.insert("nextblockhash".into(), json!(next.to_string()));
    }
    Value::Object(m)
}

fn block_json(chain: &Chain, entry: &BlockEntry, decoded_txs: bool) -> Value {
    let mut v = header_json(chain, entry);
    let block: &Block = &entry.block;
    let txs: Vec<Value> = if decoded_txs {
        block.txdata.iter().map(tx_json).collect()
    } else {
        block
            .txdata
            .iter()
            .map(|t| json!(t.compute_txid().to_string()))
            .collect()
    };
    if let Value::Object(m) = &mut v {
        m.insert("size".into(), json!(block.total_size()));
        m.insert(
            "strippedsize".into(),
            json!(serialize(&block.header).len() + strip_size(block)),
        );
        m.insert("weight".into(), json!(block.weight().to_wu()));
        m.insert("tx".into(), Value::Array(txs));
    }
    v
}

fn strip_size(block: &Block) -> usize {
    let n = block.txdata.len() as u64;
    let varint = bitcoin::consensus::encode::VarInt(n).size();
    varint + block.txdata.iter().map(|t| t.base_size()).sum::<usize>()
}

/// A decoded transaction as `decoderawtransaction` / verbose `getrawtransaction` print it.
pub fn tx_json(tx: &Transaction) -> Value {
    let vin: Vec<Value> = tx
        .input
        .iter()
        .map(|i| {
            let mut m = Map::new();
            if tx.is_coinbase() {
                m.insert("coinbase".into(), json!(hex(i.script_sig.as_bytes())));
            } else {
                m.insert("txid".into(), json!(i.previous_output.txid.to_string()));
                m.insert("vout".into(), json!(i.previous_output.vout));
                m.insert(
                    "scriptSig".into(),
                    json!({"asm": i.script_sig.to_asm_string(), "hex": hex(i.script_sig.as_bytes())}),
                );
            }
            if !i.witness.is_empty() {
                m.insert("txinwitness".into(), Value::Array(i.witness.iter().map(|w| json!(hex(w))).collect()));
            }
            m.insert("sequence".into(), json!(i.sequence.0));
            Value::Object(m)
        })
        .collect();
    let vout: Vec<Value> = tx
        .output
        .iter()
        .enumerate()
        .map(|(n, o)| json!({"value": btc_value(o.value), "n": n, "scriptPubKey": script_pubkey_json(&o.script_pubkey)}))
        .collect();
    json!({
        "txid": tx.compute_txid().to_string(),
        "hash": tx.compute_wtxid().to_string(),
        "version": tx.version.0,
        "size": tx.total_size(),
        "vsize": tx.vsize(),
        "weight": tx.weight().to_wu(),
        "locktime": tx.lock_time.to_consensus_u32(),
        "vin": vin,
        "vout": vout,
        "hex": hex(&serialize(tx)),
    })
}

fn add_block_info(chain: &Chain, v: &mut Value, entry: &BlockEntry) {
    v["blockhash"] = json!(entry.hash.to_string());
    v["confirmations"] = json!(confirmations(chain, entry).max(0));
    v["time"] = json!(entry.block.header.time);
    v["blocktime"] = json!(entry.block.header.time);
}

fn mempool_entry_json(chain: &Chain, txid: &Txid) -> Value {
    let pool = chain.mempool();
    let Some(e) = pool.get(txid) else {
        return Value::Null;
    };
    let ancestors = pool.ancestors(txid);
    let descendants = pool.descendants(txid);
    let sum = |set: &std::collections::BTreeSet<Txid>| -> (u64, u64) {
        set.iter()
            .filter_map(|t| pool.get(t))
            .fold((e.vsize, e.fee.to_sat()), |(s, f), x| {
                (s + x.vsize, f + x.fee.to_sat())
            })
    };
    let (anc_size, anc_fee) = sum(&ancestors);
    let (desc_size, desc_fee) = sum(&descendants);
    let depends: Vec<Value> = pool
        .parents(txid)
        .iter()
        .map(|t| json!(t.to_string()))
        .collect();
    let spentby: Vec<Value> = pool
        .children(txid)
        .iter()
        .map(|t| json!(t.to_string()))
        .collect();
    let replaceable = e.tx.input.iter().any(|i| i.sequence.0 < 0xffff_fffe)
        || ancestors
            .iter()
            .filter_map(|t| pool.get(t))
            .any(|a| a.tx.input.iter().any(|i| i.sequence.0 < 0xffff_fffe));
    json!({
        "vsize": e.vsize,
        "weight": e.weight,
        "time": e.time,
        "height": e.height,
        "descendantcount": descendants.len() + 1,
        "descendantsize": desc_size,
        "ancestorcount": ancestors.len() + 1,
        "ancestorsize": anc_size,
        "wtxid": e.tx.compute_wtxid().to_string(),
        "fees": {
            "base": btc_value(e.fee),
            "modified": btc_value(e.fee),
            "ancestor": sat_to_btc_value(anc_fee as i64),
            "descendant": sat_to_btc_value(desc_fee as i64),
        },
        "depends": depends,
        "spentby": spentby,
        "bip125-replaceable": replaceable,
        "unbroadcast": false,
    })
}
