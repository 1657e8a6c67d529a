//! The on-chain wallet end to end: fulgurd against devchain (or a regtest bitcoind with
//! `FULGUR_TEST_BITCOIND`): funding from the faucet, listfunds, withdraw, withdraw all,
//! concurrent withdraws, reorgs. Build first: `cargo build -j2 --workspace --bins --examples`.

use std::time::Duration;

use fulgur_tests::{Bitcoind, Node, cln_schema_errors, wait_for};
use serde_json::{Value, json};

const T: Duration = Duration::from_secs(60);
/// P2WSH of 32 zero bytes: an address nobody can spend from.
const EXTERNAL: &str = "bcrt1qqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqq3xueyj";

fn start(tag: &str) -> (Bitcoind, Node) {
    let b = Bitcoind::start(tag);
    let n = Node::start(tag, &b.fulgurd_args());
    let h = b.height();
    sync(&n, h);
    (b, n)
}

fn sync(n: &Node, h: u64) {
    let got = wait_for(T, || {
        let info = n.ok("getinfo", json!({}));
        (info["blockheight"].as_u64() == Some(h) && info.get("warning_bitcoind_sync").is_none())
            .then_some(())
    });
    assert!(got.is_some(), "never synced to {h}; log:\n{}", n.log());
}

fn outputs(n: &Node) -> Vec<Value> {
    n.ok("listfunds", json!({}))["outputs"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// Waits until `listfunds` satisfies `f`.
fn wait_funds(n: &Node, what: &str, f: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    wait_for(T, || {
        let o = outputs(n);
        f(&o).then_some(o)
    })
    .unwrap_or_else(|| panic!("listfunds never showed {what}: {:?}", outputs(n)))
}

fn confirmed_msat(o: &[Value]) -> u64 {
    o.iter()
        .filter(|x| x["status"] == "confirmed")
        .filter_map(|x| x["amount_msat"].as_u64())
        .sum()
}

/// Pays `btc` to a fresh address of ours and confirms it; returns the funding txid.
fn fund(b: &Bitcoind, n: &Node, kind: &str, btc: f64) -> String {
    let addr = n.ok("newaddr", json!({"addresstype": kind}))[kind]
        .as_str()
        .map(String::from)
        .unwrap_or_else(|| panic!("no {kind} address"));
    let txid = b.ok("sendtoaddress", json!([addr, btc]));
    let txid = txid.as_str().map(String::from).unwrap_or_default();
    let h = b.height() + 1;
    b.mine(1);
    sync(n, h);
    txid
}

fn mempool(b: &Bitcoind) -> Vec<String> {
    b.ok("getrawmempool", json!([]))
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn fund_withdraw_and_withdraw_all() {
    let (b, n) = start("wallet-withdraw");
    let t1 = fund(&b, &n, "p2tr", 1.0);
    let t2 = fund(&b, &n, "bech32", 0.5);
    let o = wait_funds(&n, "both deposits", |o| {
        confirmed_msat(o) == 150_000_000_000
    });
    assert!(o.iter().any(|x| x["txid"] == t1.as_str()));
    assert!(o.iter().any(|x| x["txid"] == t2.as_str()));
    assert!(
        o.iter()
            .all(|x| x["reserved"] == false && x["blockheight"].is_u64())
    );
    // Too much, dust, another network: CLN's codes, nothing reserved.
    let err = |p: Value| n.call("withdraw", p).err().map(|e| e["code"].clone());
    assert_eq!(
        err(json!({"destination": EXTERNAL, "satoshi": 300_000_000})),
        Some(json!(301))
    );
    assert_eq!(
        err(json!({"destination": EXTERNAL, "satoshi": 100})),
        Some(json!(302))
    );
    assert_eq!(
        err(
            json!({"destination": "tb1qw508d6qejxtdg4y5r3zarvary0c5xw7kxpjzsx", "satoshi": 10_000})
        ),
        Some(json!(-32602))
    );
    assert_eq!(
        err(json!({"destination": EXTERNAL, "satoshi": 10_000, "feerate": "-3perkw"})),
        Some(json!(-32602))
    );
    assert!(outputs(&n).iter().all(|x| x["reserved"] == false));

    let w = n.ok(
        "withdraw",
        json!({"destination": EXTERNAL, "satoshi": 120_000_000, "feerate": "2000perkw"}),
    );
    let txid = w["txid"].as_str().map(String::from).unwrap_or_default();
    assert!(w["tx"].as_str().is_some_and(|t| !t.is_empty()));
    assert!(w["psbt"].as_str().is_some_and(|p| p.starts_with("cHNidP")));
    assert_eq!(cln_schema_errors("withdraw.json", &w), None);
    assert!(mempool(&b).contains(&txid));
    let txs = n.ok("listtransactions", json!({}));
    assert!(txs["transactions"].as_array().is_some_and(|t| {
        t.iter()
            .any(|x| x["hash"] == txid.as_str() && x["blockheight"] == 0)
    }));
    let h = b.height() + 1;
    b.mine(1);
    sync(&n, h);
    let o = wait_funds(&n, "the change confirmed", |o| {
        o.len() == 1 && o[0]["txid"] == txid.as_str() && o[0]["status"] == "confirmed"
    });
    let change = o[0]["amount_msat"].as_u64().unwrap_or(0) / 1000;
    let fee = 150_000_000 - 120_000_000 - change;
    assert!(fee > 0 && fee < 10_000, "fee {fee}");

    let w = n.ok("withdraw", json!([EXTERNAL, "all", "normal"]));
    let all_txid = w["txid"].as_str().map(String::from).unwrap_or_default();
    assert!(mempool(&b).contains(&all_txid));
    let h = b.height() + 1;
    b.mine(1);
    sync(&n, h);
    wait_funds(&n, "nothing left", |o| o.is_empty());
    let spent = n.ok("listfunds", json!({"spent": true}))["outputs"]
        .as_array()
        .map(|a| a.iter().filter(|x| x["status"] == "spent").count())
        .unwrap_or(0);
    assert_eq!(spent, 3);
    assert_eq!(
        n.call("withdraw", json!([EXTERNAL, "all"]))
            .err()
            .map(|e| e["code"].clone()),
        Some(json!(301))
    );
}

#[test]
fn concurrent_withdraws_never_double_spend() {
    let (b, n) = start("wallet-concurrent");
    fund(&b, &n, "p2tr", 1.0);
    fund(&b, &n, "p2tr", 1.0);
    wait_funds(&n, "two coins", |o| confirmed_msat(o) == 200_000_000_000);
    let sock = n.socket();
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let sock = sock.clone();
            std::thread::spawn(move || {
                fulgur_tests::RpcConn::connect(&sock)
                    .call("withdraw", json!([EXTERNAL, 60_000_000]))
            })
        })
        .collect();
    let results: Vec<_> = handles
        .into_iter()
        .map(|h| h.join().unwrap_or_else(|_| Err(json!("thread panicked"))))
        .collect();
    let ok: Vec<String> = results
        .iter()
        .filter_map(|r| r.as_ref().ok())
        .filter_map(|v| v["txid"].as_str().map(String::from))
        .collect();
    // Each 1 BTC coin pays one 0.6 BTC withdrawal; the others are refused, not double spent.
    assert_eq!(ok.len(), 2, "{results:?}");
    for r in results.iter().filter_map(|r| r.as_ref().err()) {
        assert_eq!(r["code"], 301, "{r}");
    }
    let pool = mempool(&b);
    assert!(ok.iter().all(|t| pool.contains(t)), "{ok:?} vs {pool:?}");
    assert!(outputs(&n).iter().all(|x| x["reserved"] == false));
}

#[test]
fn txprepare_reserves_until_txsend_or_txdiscard() {
    let (b, n) = start("wallet-txprepare");
    fund(&b, &n, "bech32", 1.0);
    wait_funds(&n, "the deposit", |o| confirmed_msat(o) == 100_000_000_000);
    let p = n.ok("txprepare", json!({"outputs": [{EXTERNAL: 10_000_000}]}));
    let txid = p["txid"].as_str().map(String::from).unwrap_or_default();
    assert!(p["unsigned_tx"].is_string() && p["psbt"].is_string());
    let o = outputs(&n);
    assert!(
        o.iter()
            .all(|x| x["reserved"] == true && x["reserved_to_block"].is_u64())
    );
    assert_eq!(
        n.call("withdraw", json!([EXTERNAL, 10_000]))
            .err()
            .map(|e| e["code"].clone()),
        Some(json!(301))
    );
    let d = n.ok("txdiscard", json!([txid]));
    assert_eq!(d["txid"], txid.as_str());
    assert!(outputs(&n).iter().all(|x| x["reserved"] == false));
    assert!(n.call("txsend", json!([txid])).is_err());
    let p = n.ok("txprepare", json!([[{EXTERNAL: "all"}]]));
    let txid = p["txid"].as_str().map(String::from).unwrap_or_default();
    let s = n.ok("txsend", json!({"txid": txid}));
    assert_eq!(s["txid"], txid.as_str());
    assert!(mempool(&b).contains(&txid));
}

#[test]
fn funds_follow_a_reorg() {
    let (b, n) = start("wallet-reorg");
    let h0 = b.height();
    let txid = fund(&b, &n, "p2tr", 1.0);
    let o = wait_funds(&n, "the deposit", |o| confirmed_msat(o) == 100_000_000_000);
    assert_eq!(o[0]["blockheight"], h0 + 1);
    // The block holding it goes away; a longer branch without it replaces it.
    let tip = b.ok("getbestblockhash", json!([]));
    b.ok("invalidateblock", json!([tip]));
    let mut branch = vec![];
    for _ in 0..3 {
        // Mine empty blocks while the deposit waits in the mempool (if the backend kept it).
        branch.extend(b.mine_branch(1));
    }
    sync(&n, h0 + 3);
    // Where the backend now has the deposit: in a block of the branch, or in the mempool.
    let height_in_branch = branch.iter().find_map(|h| {
        let blk = b.ok("getblock", json!([h, 1]));
        blk["tx"]
            .as_array()
            .is_some_and(|t| t.iter().any(|x| x == txid.as_str()))
            .then(|| blk["height"].as_u64())
            .flatten()
    });
    match height_in_branch {
        Some(hb) => {
            wait_funds(&n, "the deposit at its new block", |o| {
                o.len() == 1 && o[0]["status"] == "confirmed" && o[0]["blockheight"] == hb
            });
        }
        None => {
            wait_funds(&n, "the deposit unconfirmed again", |o| {
                o.len() == 1 && o[0]["status"] == "unconfirmed"
            });
            if mempool(&b).contains(&txid) {
                b.mine(1);
                sync(&n, h0 + 4);
                wait_funds(&n, "the deposit reconfirmed", |o| {
                    o.len() == 1 && o[0]["status"] == "confirmed" && o[0]["blockheight"] == h0 + 4
                });
            }
        }
    }
}
