//! A `kill -9` during a burst of payments never makes LDK force-close a channel at restart
//! (its stored channel manager is never behind its monitors: the engine writes the manager
//! before it lets LDK apply monitor updates), and the payments end consistently on both
//! sides. Build first: `cargo build -j2 --workspace --bins --examples`.

use std::process::Command;

use fulgur_tests::ln::{LnNode, T, fund_wallet, open_channel, wait_engine};
use fulgur_tests::{Bitcoind, wait_for};
use serde_json::{Value, json};

/// Sends SIGKILL to the process `pid`.
fn kill9(pid: u32) {
    let st = Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap_or_else(|e| panic!("kill: {e}"));
    assert!(st.success());
}

/// Starts `n` again after a kill and waits for its engine (one more start in its log).
fn start_again(n: &mut LnNode) {
    let starts = n.log().matches("Lightning engine started").count();
    let args = n.args.clone();
    n.node.start_again(&args);
    wait_for(T, || {
        (n.log().matches("Lightning engine started").count() > starts).then_some(())
    })
    .unwrap_or_else(|| panic!("engine did not start again\n{}", n.log()));
    wait_engine(n);
}

/// Starts one payment of `msat` from `a` to `b` (invoice, route, sendpay) without waiting
/// for it; returns its payment hash, or `None` if the node refused (it may be dying).
fn start_payment(a: &LnNode, b: &LnNode, label: &str, msat: u64) -> Option<String> {
    let inv = b
        .try_call(
            "invoice",
            json!({"amount_msat": msat, "label": label, "description": "crash"}),
        )?
        .ok()?;
    let hash = inv["payment_hash"].as_str()?.to_string();
    let secret = inv["payment_secret"].as_str()?.to_string();
    let route = a
        .try_call(
            "getroute",
            // The final delay covers the invoice's min_final_cltv_expiry (getroute's default, 9,
            // does not: LDK then fails the HTLC back as too close to its expiry).
            json!({"id": b.id, "amount_msat": msat, "riskfactor": 1, "cltv": 50}),
        )?
        .ok()?;
    a.try_call(
        "sendpay",
        json!({"route": route["route"], "payment_hash": hash, "payment_secret": secret}),
    )?
    .ok()?;
    Some(hash)
}

/// The `status` of the first entry of `list` in `n`'s answer to `method` with `params`.
fn first_status(n: &LnNode, method: &str, params: Value, list: &str) -> Option<String> {
    n.ok(method, params)[list]
        .as_array()?
        .first()
        .and_then(|e| e["status"].as_str())
        .map(String::from)
}

fn status_of(a: &LnNode, hash: &str) -> Option<String> {
    first_status(a, "listsendpays", json!({"payment_hash": hash}), "payments")
}

fn invoice_status(b: &LnNode, label: &str) -> Option<String> {
    first_status(b, "listinvoices", json!({"label": label}), "invoices")
}

fn assert_no_force_close(n: &LnNode, peer: &LnNode) {
    let log = n.log();
    assert!(
        !log.contains("ChannelManager is stale"),
        "LDK found a stale channel manager\n{log}"
    );
    let c = n
        .channel_with(&peer.id)
        .unwrap_or_else(|| panic!("channel gone\n{log}"));
    assert_eq!(c["state"], "CHANNELD_NORMAL", "{c}\n{log}");
    let closed: Value = n.ok("listclosedchannels", json!({}));
    assert_eq!(closed["closedchannels"], json!([]), "{closed}");
}

#[test]
fn kill_9_during_payments_never_force_closes() {
    let b = Bitcoind::start("crash-burst");
    let mut a = LnNode::start("crash-a", &b, &[]);
    let mut bn = LnNode::start("crash-b", &b, &[]);
    fund_wallet(&b, &a, 1.0);
    fund_wallet(&b, &bn, 0.001);
    open_channel(&b, &a, &bn, 2_000_000, &[]);

    let mut hashes: Vec<(String, String)> = vec![];
    for round in 0..4 {
        // A burst from several threads; the victim (payer or payee, in turn) is killed while
        // payments are in flight, as soon as the first of this round has completed.
        let victim_is_payer = round % 2 == 0;
        let pid = if victim_is_payer { a.pid() } else { bn.pid() };
        let pid = pid.unwrap_or_else(|| panic!("node not running"));
        let started: Vec<(String, String)> = std::thread::scope(|s| {
            let mut handles = vec![];
            for t in 0..4 {
                let (a, bn) = (&a, &bn);
                handles.push(s.spawn(move || {
                    let mut mine = vec![];
                    for i in 0..15 {
                        let label = format!("r{round}-t{t}-{i}");
                        match start_payment(a, bn, &label, 10_000 + i) {
                            Some(h) => mine.push((label, h)),
                            None => break,
                        }
                    }
                    mine
                }));
            }
            // Kill once payments of this round complete on A, with more in flight.
            wait_for(T, || {
                let r = a.call("listsendpays", json!({"status": "complete"})).ok()?;
                (r["payments"].as_array()?.len() > round * 10 + 3).then_some(())
            });
            kill9(pid);
            handles
                .into_iter()
                .flat_map(|h| h.join().unwrap_or_default())
                .collect()
        });
        hashes.extend(started);
        let victim = if victim_is_payer { &mut a } else { &mut bn };
        assert!(victim.wait_exit(T).is_some(), "node did not die");
        start_again(victim);
        if let Err(e) = a.call(
            "connect",
            json!({"id": bn.id, "host": "127.0.0.1", "port": bn.port}),
        ) {
            panic!("connect failed: {e}\nA:\n{}\nB:\n{}", a.log(), bn.log());
        }
        assert_no_force_close(&a, &bn);
        assert_no_force_close(&bn, &a);
    }
    assert!(
        hashes.len() > 20,
        "too few payments started: {}",
        hashes.len()
    );

    // Every payment ends, and both sides agree on how.
    for (label, hash) in &hashes {
        let end = wait_for(T, || {
            let s = status_of(&a, hash)?;
            (s != "pending").then_some(s)
        })
        .unwrap_or_else(|| panic!("payment {label} stayed pending\n{}", a.log()));
        let inv = invoice_status(&bn, label).unwrap_or_default();
        match end.as_str() {
            "complete" => assert_eq!(inv, "paid", "{label}: A complete, B {inv}"),
            _ => assert_ne!(inv, "paid", "{label}: A {end}, B paid"),
        }
    }
    assert_no_force_close(&a, &bn);
    assert_no_force_close(&bn, &a);
}
