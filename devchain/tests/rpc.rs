//! The JSON-RPC layer without sockets: bitcoind's results, named/positional params, error codes
//! and HTTP statuses.

mod common;

use bitcoin::consensus::{deserialize, serialize};
use bitcoin::{Amount, Block, Sequence};
use common::*;
use devchain::codes;
use devchain::rpc::Rpc;
use devchain::util::{hex, unhex};
use serde_json::{Value, json};

fn rpc() -> Rpc {
    Rpc::new(new_chain())
}

fn code(r: Result<Value, devchain::RpcError>) -> (i32, String) {
    let e = r.expect_err("expected an error");
    (e.code, e.message)
}

fn faucet_addr(rpc: &Rpc) -> String {
    rpc.call("getnewaddress", json!([]))
        .unwrap()
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn blockchain_info_and_headers() {
    let rpc = rpc();
    let info = rpc.call("getblockchaininfo", json!([])).unwrap();
    assert_eq!(info["chain"], "regtest");
    assert_eq!(info["blocks"], 101);
    assert_eq!(info["headers"], 101);
    assert_eq!(info["initialblockdownload"], false);
    assert_eq!(info["verificationprogress"], 1);
    assert_eq!(info["warnings"], "");
    assert_eq!(info["chainwork"].as_str().unwrap().len(), 64);
    assert_eq!(
        rpc.call("getbestblockhash", json!([])).unwrap(),
        info["bestblockhash"]
    );
    assert_eq!(rpc.call("getblockcount", json!([])).unwrap(), 101);

    let genesis = rpc.call("getblockhash", json!([0])).unwrap();
    assert_eq!(
        genesis,
        "0f9188f13cb7b2c71f2a335e3a4fc328bf5beb436012afca590b1a11466e2206"
    );
    let h = rpc.call("getblockheader", json!([genesis])).unwrap();
    assert!(
        h.get("previousblockhash").is_none(),
        "genesis has no previousblockhash"
    );
    assert_eq!(h["height"], 0);
    assert_eq!(h["bits"], "207fffff");
    assert_eq!(h["version"], 1);
    assert_eq!(h["confirmations"], 102);
    assert_eq!(
        h["chainwork"],
        "0000000000000000000000000000000000000000000000000000000000000002"
    );
    assert_eq!(
        h["nextblockhash"],
        rpc.call("getblockhash", json!([1])).unwrap()
    );
    // Named params, verbose=false gives the 80-byte header in hex.
    let raw = rpc
        .call(
            "getblockheader",
            json!({"blockhash": genesis, "verbose": false}),
        )
        .unwrap();
    assert_eq!(raw.as_str().unwrap().len(), 160);

    let tip = info["bestblockhash"].clone();
    let h = rpc.call("getblockheader", json!([tip])).unwrap();
    assert_eq!(h["height"], 101);
    assert_eq!(h["confirmations"], 1);
    assert_eq!(
        h["previousblockhash"],
        rpc.call("getblockhash", json!([100])).unwrap()
    );
    assert!(h.get("nextblockhash").is_none());
    assert_eq!(
        h["chainwork"],
        "00000000000000000000000000000000000000000000000000000000000000cc"
    );

    assert_eq!(
        code(rpc.call("getblockhash", json!([102]))),
        (codes::INVALID_PARAMETER, "Block height out of range".into())
    );
    assert_eq!(
        code(rpc.call("getblockhash", json!([-1]))).0,
        codes::INVALID_PARAMETER
    );
    let unknown = "00".repeat(32);
    assert_eq!(
        code(rpc.call("getblockheader", json!([unknown]))),
        (codes::INVALID_ADDRESS_OR_KEY, "Block not found".into())
    );
    assert_eq!(
        code(rpc.call("getblockheader", json!(["abc"]))).0,
        codes::INVALID_PARAMETER
    );
}

#[test]
fn getblock_verbosities() {
    let rpc = rpc();
    let hash = rpc.call("getblockhash", json!([101])).unwrap();
    let raw = rpc.call("getblock", json!([hash, 0])).unwrap();
    let block: Block = deserialize(&unhex(raw.as_str().unwrap()).unwrap()).unwrap();
    assert_eq!(block.block_hash().to_string(), hash.as_str().unwrap());
    assert!(block.check_merkle_root() && block.check_witness_commitment());
    let v1 = rpc.call("getblock", json!({"blockhash": hash})).unwrap();
    assert_eq!(v1["tx"][0], block.txdata[0].compute_txid().to_string());
    assert_eq!(v1["nTx"], 1);
    let v2 = rpc.call("getblock", json!([hash, 2])).unwrap();
    assert_eq!(
        v2["tx"][0]["txid"],
        block.txdata[0].compute_txid().to_string()
    );
    assert!(v2["tx"][0]["vin"][0]["coinbase"].is_string());
    assert_eq!(v2["tx"][0]["vout"][0]["value"], 50.0);
}

#[test]
fn gettxout_follows_the_mempool_by_default() {
    let rpc = rpc();
    let (outpoint, _) = coinbase_at(&rpc.chain(), 1);
    let out = rpc
        .call("gettxout", json!([outpoint.txid.to_string(), 0]))
        .unwrap();
    assert_eq!(out["value"], 50.0);
    assert_eq!(out["coinbase"], true);
    assert_eq!(out["confirmations"], 101);
    assert_eq!(out["scriptPubKey"]["type"], "witness_v0_keyhash");
    assert_eq!(out["scriptPubKey"]["address"], faucet_addr(&rpc));
    assert_eq!(
        out["scriptPubKey"]["hex"],
        hex(p2wpkh(&faucet_key()).as_bytes())
    );
    assert_eq!(
        out["bestblock"],
        rpc.call("getbestblockhash", json!([])).unwrap()
    );
    assert_eq!(
        rpc.call("gettxout", json!([outpoint.txid.to_string(), 1]))
            .unwrap(),
        Value::Null
    );

    let tx = spend_coinbase(&rpc.chain(), 1, p2wpkh(&key(1)), 1_000, Sequence::MAX);
    let txid = rpc
        .call("sendrawtransaction", json!([hex(&serialize(&tx))]))
        .unwrap();
    assert_eq!(txid, tx.compute_txid().to_string());
    // Spent in the mempool: null by default, still there when the mempool is excluded.
    assert_eq!(
        rpc.call("gettxout", json!([outpoint.txid.to_string(), 0]))
            .unwrap(),
        Value::Null
    );
    assert!(
        rpc.call("gettxout", json!([outpoint.txid.to_string(), 0, false]))
            .unwrap()
            .is_object()
    );
    // The new output is visible from the mempool with 0 confirmations.
    let new = rpc.call("gettxout", json!({"txid": txid, "n": 0})).unwrap();
    assert_eq!(new["confirmations"], 0);
    assert_eq!(new["value"], 49.99999);
}

#[test]
fn mempool_and_raw_transactions() {
    let rpc = rpc();
    let addr = faucet_addr(&rpc);
    let txid = rpc.call("sendtoaddress", json!([addr, 1.5])).unwrap();
    assert_eq!(rpc.call("getrawmempool", json!([])).unwrap(), json!([txid]));
    let verbose = rpc.call("getrawmempool", json!([true])).unwrap();
    assert!(verbose[txid.as_str().unwrap()]["vsize"].as_u64().unwrap() > 100);
    let info = rpc.call("getmempoolinfo", json!([])).unwrap();
    assert_eq!(info["loaded"], true);
    assert_eq!(info["size"], 1);
    assert_eq!(info["minrelaytxfee"], 0.00001);
    let entry = rpc.call("getmempoolentry", json!([txid])).unwrap();
    assert_eq!(entry["height"], 101);
    assert_eq!(entry["depends"], json!([]));
    let fee = entry["fees"]["base"].as_f64().unwrap();
    let vsize = entry["vsize"].as_u64().unwrap();
    // Default faucet feerate: 2 sat/vB (a little above, from the size estimate).
    assert!(
        fee * 1e8 >= 2.0 * vsize as f64 && fee * 1e8 < 3.0 * vsize as f64,
        "fee {fee} vsize {vsize}"
    );

    let raw = rpc.call("getrawtransaction", json!([txid])).unwrap();
    let tx: bitcoin::Transaction = deserialize(&unhex(raw.as_str().unwrap()).unwrap()).unwrap();
    assert_eq!(tx.compute_txid().to_string(), txid.as_str().unwrap());
    assert_eq!(tx.output[0].value, Amount::from_btc(1.5).unwrap());

    let hashes = rpc.call("generatetoaddress", json!([1, addr])).unwrap();
    assert_eq!(rpc.call("getrawmempool", json!([])).unwrap(), json!([]));
    let v = rpc.call("getrawtransaction", json!([txid, true])).unwrap();
    assert_eq!(v["blockhash"], hashes[0]);
    assert_eq!(v["confirmations"], 1);
    assert_eq!(v["vout"][0]["value"], 1.5);
    let v = rpc
        .call(
            "getrawtransaction",
            json!({"txid": txid, "verbose": 1, "blockhash": hashes[0]}),
        )
        .unwrap();
    assert_eq!(v["in_active_chain"], true);
    assert_eq!(
        code(rpc.call("getmempoolentry", json!([txid]))),
        (
            codes::INVALID_ADDRESS_OR_KEY,
            "Transaction not in mempool".into()
        )
    );
    let (c, m) = code(rpc.call("getrawtransaction", json!(["11".repeat(32)])));
    assert_eq!(c, codes::INVALID_ADDRESS_OR_KEY);
    assert!(m.starts_with("No such mempool or blockchain transaction"));
}

#[test]
fn sendrawtransaction_errors() {
    let rpc = rpc();
    assert_eq!(
        code(rpc.call("sendrawtransaction", json!(["00ff"]))),
        (
            codes::DESERIALIZATION_ERROR,
            "TX decode failed. Make sure the tx has at least one input.".into()
        )
    );
    let tx = spend_coinbase(&rpc.chain(), 3, p2wpkh(&key(1)), 1_000, Sequence::MAX);
    let (c, m) = code(rpc.call("sendrawtransaction", json!([hex(&serialize(&tx))])));
    assert_eq!(c, codes::VERIFY_REJECTED);
    assert!(m.starts_with("bad-txns-premature-spend-of-coinbase"));
    // maxfeerate as a named param: 1 BTC fee above a 0.001 BTC/kvB cap.
    let tx = spend_coinbase(&rpc.chain(), 1, p2wpkh(&key(1)), 100_000, Sequence::MAX);
    let (c, _) = code(rpc.call(
        "sendrawtransaction",
        json!({"hexstring": hex(&serialize(&tx)), "maxfeerate": 0.001}),
    ));
    assert_eq!(c, codes::VERIFY_ERROR);
    assert!(
        rpc.call("sendrawtransaction", json!([hex(&serialize(&tx)), 0]))
            .is_ok()
    );
    let tmp = rpc
        .call("testmempoolaccept", json!([[hex(&serialize(&tx))]]))
        .unwrap();
    assert_eq!(tmp[0]["allowed"], true, "already in the mempool is fine");
}

#[test]
fn fee_estimates_are_set_by_tests() {
    let rpc = rpc();
    assert_eq!(
        rpc.call("estimatesmartfee", json!([6])).unwrap(),
        json!({"errors": ["Insufficient data or no feerate found"], "blocks": 0})
    );
    rpc.call("setfeerate", json!([10])).unwrap();
    assert_eq!(
        rpc.call("estimatesmartfee", json!([6, "ECONOMICAL"]))
            .unwrap(),
        json!({"feerate": 0.0001, "blocks": 6})
    );
    assert_eq!(
        rpc.call("estimatesmartfee", json!([1])).unwrap(),
        json!({"feerate": 0.0001, "blocks": 2})
    );
    rpc.call("setfeerate", json!({"feerate": {"2": 25, "144": 1.5}}))
        .unwrap();
    assert_eq!(
        rpc.call("estimatesmartfee", json!({"conf_target": 3}))
            .unwrap()["feerate"],
        0.00025
    );
    assert_eq!(
        rpc.call("estimatesmartfee", json!([200])).unwrap()["feerate"],
        0.000015
    );
    // Never below the minimum relay fee.
    rpc.call("setfeerate", json!([0.25])).unwrap();
    assert_eq!(
        rpc.call("estimatesmartfee", json!([6])).unwrap()["feerate"],
        0.00001
    );
    rpc.call("setfeerate", json!([])).unwrap();
    assert!(
        rpc.call("estimatesmartfee", json!([6]))
            .unwrap()
            .get("errors")
            .is_some()
    );
    assert_eq!(
        code(rpc.call("estimatesmartfee", json!([0]))).0,
        codes::INVALID_PARAMETER
    );
    assert_eq!(
        code(rpc.call("estimatesmartfee", json!([6, "fast"]))).0,
        codes::INVALID_PARAMETER
    );
    assert_eq!(
        code(rpc.call("setfeerate", json!([-1]))).0,
        codes::INVALID_PARAMETER
    );
}

#[test]
fn generate_and_reorg_over_rpc() {
    let rpc = rpc();
    let addr = faucet_addr(&rpc);
    assert_eq!(
        code(rpc.call("generatetoaddress", json!([1, "notanaddress"]))),
        (
            codes::INVALID_ADDRESS_OR_KEY,
            "Error: Invalid address".into()
        )
    );
    // A mainnet address is not a regtest one.
    let (c, _) = code(rpc.call(
        "generatetoaddress",
        json!([1, "bc1qar0srrr7xfkvy5l643lydnw9re59gtzzwf5mdq"]),
    ));
    assert_eq!(c, codes::INVALID_ADDRESS_OR_KEY);
    let txid = rpc
        .call("sendtoaddress", json!({"address": addr, "amount": "0.5"}))
        .unwrap();
    let block = rpc.call("generateblock", json!([addr, [txid]])).unwrap();
    let hash = block["hash"].clone();
    assert_eq!(rpc.call("getbestblockhash", json!([])).unwrap(), hash);
    rpc.call("invalidateblock", json!([hash])).unwrap();
    assert_eq!(rpc.call("getblockcount", json!([])).unwrap(), 101);
    assert_eq!(rpc.call("getrawmempool", json!([])).unwrap(), json!([txid]));
    let h = rpc.call("getblockheader", json!([hash])).unwrap();
    assert_eq!(h["confirmations"], -1);
    rpc.call("reconsiderblock", json!([hash])).unwrap();
    assert_eq!(rpc.call("getbestblockhash", json!([])).unwrap(), hash);
    assert_eq!(rpc.call("getrawmempool", json!([])).unwrap(), json!([]));
    let tips = rpc.call("getchaintips", json!([])).unwrap();
    assert_eq!(tips[0]["status"], "active");
}

#[test]
fn parameter_errors_like_bitcoind() {
    let rpc = rpc();
    assert_eq!(
        code(rpc.call("setmocktime", json!([-5]))),
        (
            codes::INVALID_PARAMETER,
            "Mocktime cannot be negative: -5.".into()
        )
    );
    assert_eq!(
        code(rpc.call("getblockcount2", json!([]))),
        (codes::METHOD_NOT_FOUND, "Method not found".into())
    );
    assert_eq!(
        code(rpc.call("getblockhash", json!([]))).0,
        codes::MISC_ERROR
    );
    assert_eq!(
        code(rpc.call("getblockcount", json!([1]))).0,
        codes::MISC_ERROR
    );
    assert_eq!(
        code(rpc.call("getblockhash", json!(["1"]))),
        (
            codes::TYPE_ERROR,
            "JSON value of type string is not of expected type number".into()
        )
    );
    assert_eq!(
        code(rpc.call("getblockhash", json!({"hieght": 1}))),
        (
            codes::INVALID_PARAMETER,
            "Unknown named parameter hieght".into()
        )
    );
    assert_eq!(
        rpc.call("getblockhash", json!({"height": 1})).unwrap(),
        rpc.call("getblockhash", json!([1])).unwrap()
    );
    assert_eq!(
        code(rpc.call("sendtoaddress", json!([faucet_addr(&rpc), -1]))).0,
        codes::TYPE_ERROR
    );
    assert_eq!(
        code(rpc.call("sendtoaddress", json!([faucet_addr(&rpc), 0.000000001]))).0,
        codes::TYPE_ERROR
    );
    assert_eq!(
        code(rpc.call("sendtoaddress", json!(["bcrt1qbad", 1]))).0,
        codes::INVALID_ADDRESS_OR_KEY
    );
    assert_eq!(
        code(rpc.call("sendtoaddress", json!([faucet_addr(&rpc), 1000]))),
        (
            codes::WALLET_INSUFFICIENT_FUNDS,
            "Insufficient funds".into()
        )
    );
}

fn body(rpc: &Rpc, text: &str) -> (u16, Value) {
    let (status, out) = rpc.handle_body(text.as_bytes());
    (status, serde_json::from_slice(&out).expect("JSON reply"))
}

#[test]
fn http_statuses_and_envelopes() {
    let rpc = rpc();
    let (s, v) = body(&rpc, r#"{"method":"getblockcount","params":[],"id":"a"}"#);
    assert_eq!(
        (s, v),
        (200, json!({"result": 101, "error": null, "id": "a"}))
    );
    let (s, v) = body(&rpc, r#"{"method":"nosuch","id":1}"#);
    assert_eq!(s, 404);
    assert_eq!(
        v,
        json!({"result": null, "error": {"code": -32601, "message": "Method not found"}, "id": 1})
    );
    let (s, v) = body(&rpc, r#"{"method":"getblockhash","params":[500],"id":2}"#);
    assert_eq!(s, 500);
    assert_eq!(v["error"]["code"], -8);
    let (s, v) = body(&rpc, "{not json");
    assert_eq!(s, 500);
    assert_eq!(v["error"]["code"], -32700);
    let (s, v) = body(&rpc, r#"{"method":5,"id":3}"#);
    assert_eq!(s, 400);
    assert_eq!(v["error"]["code"], -32600);
    let (s, v) = body(
        &rpc,
        r#"[{"method":"getblockcount","id":1},{"method":"nosuch","id":2}]"#,
    );
    assert_eq!(s, 200);
    assert_eq!(v[0]["result"], 101);
    assert_eq!(v[1]["error"]["code"], -32601);
    assert_eq!(v[1]["id"], 2);
}

#[test]
fn submitpackage_lets_a_child_pay_for_a_parent_under_the_mempool_minimum() {
    let rpc = rpc();
    let raw = |t: &bitcoin::Transaction| hex(&serialize(t));
    // Coinbases 1 to 3 mature.
    rpc.call("generatetoaddress", json!([2, faucet_addr(&rpc)]))
        .unwrap();
    // A full mempool, played: 10 sat/vB to get in alone; the relay minimum stays 1 sat/vB.
    let set = rpc.call("setmempoolminfee", json!([10])).unwrap();
    assert_eq!(set["mempoolminfee"], 0.0001);
    let info = rpc.call("getmempoolinfo", json!([])).unwrap();
    assert_eq!(info["mempoolminfee"], 0.0001);
    assert_eq!(info["minrelaytxfee"], 0.00001);

    let parent = spend_coinbase(&rpc.chain(), 1, p2wpkh(&key(1)), 200, Sequence::MAX);
    let (c, m) = code(rpc.call("sendrawtransaction", json!([raw(&parent)])));
    assert_eq!(c, codes::VERIFY_REJECTED);
    assert!(m.starts_with("mempool min fee not met, 200 < "), "{m}");
    let child = child_of(&parent, 5_000);
    let (c, _) = code(rpc.call("sendrawtransaction", json!([raw(&child)])));
    assert_eq!(c, codes::VERIFY_ERROR, "the child alone lacks its parent");

    // Bad packages.
    let (c, m) = code(rpc.call("submitpackage", json!([[raw(&child), raw(&parent)]])));
    assert_eq!(c, codes::VERIFY_ERROR);
    assert!(m.starts_with("package topology disallowed"), "{m}");
    let (c, _) = code(rpc.call("submitpackage", json!([[]])));
    assert_eq!(c, codes::INVALID_PARAMETER);
    let (c, m) = code(rpc.call("submitpackage", json!([["00"]])));
    assert_eq!(c, codes::DESERIALIZATION_ERROR);
    assert!(m.starts_with("TX decode failed for tx 0."), "{m}");

    // Together: the package's feerate counts.
    let r = rpc
        .call(
            "submitpackage",
            json!({"package": [raw(&parent), raw(&child)]}),
        )
        .unwrap();
    assert_eq!(r["package_msg"], "success", "{r}");
    let (pw, cw) = (
        parent.compute_wtxid().to_string(),
        child.compute_wtxid().to_string(),
    );
    let pr = &r["tx-results"][&pw];
    assert_eq!(pr["txid"], parent.compute_txid().to_string());
    assert_eq!(pr["fees"]["base"], 0.000002);
    let vsize = pr["vsize"].as_u64().unwrap() + r["tx-results"][&cw]["vsize"].as_u64().unwrap();
    let rate = pr["fees"]["effective-feerate"].as_f64().unwrap();
    assert!(
        (rate * 1e8 - 5_200_000.0 / vsize as f64).abs() < 1.0,
        "{rate}"
    );
    assert_eq!(pr["fees"]["effective-includes"], json!([pw, cw]));
    assert_eq!(r["replaced-transactions"], json!([]));
    let pool = rpc.call("getrawmempool", json!([])).unwrap();
    assert_eq!(pool.as_array().unwrap().len(), 2);
    // Again: already there, no effective feerate.
    let r = rpc
        .call("submitpackage", json!([[raw(&parent), raw(&child)]]))
        .unwrap();
    assert_eq!(r["package_msg"], "success");
    assert!(
        r["tx-results"][&pw]["fees"]
            .get("effective-feerate")
            .is_none()
    );

    // A package refused as a whole: the parent's error.
    let failed_package_error = |parent: &bitcoin::Transaction, child: &bitcoin::Transaction| {
        let r = rpc
            .call("submitpackage", json!([[raw(parent), raw(child)]]))
            .unwrap();
        assert_eq!(r["package_msg"], "transaction failed");
        r["tx-results"][parent.compute_wtxid().to_string()]["error"]
            .as_str()
            .unwrap()
            .to_string()
    };
    // A child that does not pay enough for both: nothing gets in.
    let poor_parent = spend_coinbase(&rpc.chain(), 2, p2wpkh(&key(1)), 200, Sequence::MAX);
    let e = failed_package_error(&poor_parent, &child_of(&poor_parent, 300));
    assert!(e.starts_with("mempool min fee not met, 500 < "), "{e}");
    // Under the relay minimum: no child helps (not a TRUC package).
    let cheap_parent = spend_coinbase(&rpc.chain(), 3, p2wpkh(&key(1)), 50, Sequence::MAX);
    let e = failed_package_error(&cheap_parent, &child_of(&cheap_parent, 50_000));
    assert!(e.starts_with("min relay fee not met"), "{e}");
    assert_eq!(
        rpc.call("getrawmempool", json!([]))
            .unwrap()
            .as_array()
            .unwrap()
            .len(),
        2
    );
    // Mined together; a new block does not re-check the mempool minimum.
    rpc.call("generatetoaddress", json!([1, faucet_addr(&rpc)]))
        .unwrap();
    assert_eq!(rpc.call("getrawmempool", json!([])).unwrap(), json!([]));
    let v = rpc
        .call(
            "getrawtransaction",
            json!([parent.compute_txid().to_string(), true]),
        )
        .unwrap();
    assert_eq!(v["confirmations"], 1);
}
