//! Channels end to end on devchain: `fundchannel` from the wallet, the channel confirmed and
//! usable on both sides (`listpeerchannels`, `listfunds`, `channel_opened` and
//! `channel_state_changed`), `setchannel`, a cooperative and a forced close, and the funds
//! back in each wallet after the delays. Build first:
//! `cargo build -j2 --workspace --bins --examples`.

use std::time::Duration;

use fulgur_tests::ln::{LnNode, T, fund_wallet, mine_sync, open_channel};
use fulgur_tests::{Bitcoind, cln_schema_errors, wait_for};
use serde_json::{Value, json};

fn wallet_msat(n: &LnNode) -> u64 {
    n.ok("listfunds", json!({}))["outputs"]
        .as_array()
        .map(|o| {
            o.iter()
                .filter(|x| x["status"] == "confirmed")
                .filter_map(|x| x["amount_msat"].as_u64())
                .sum()
        })
        .unwrap_or(0)
}

fn schema_ok(name: &str, v: &Value) {
    if let Some(e) = cln_schema_errors(&format!("{name}.json"), v) {
        panic!("{name} does not match CLN's schema: {e}\n{v:#}");
    }
}

#[test]
fn open_use_and_close_channels() {
    let b = Bitcoind::start("chan-open");
    let a = LnNode::start("chan-a", &b, &[]);
    let bn = LnNode::start("chan-b", &b, &[]);
    fund_wallet(&b, &a, 1.0);

    // Errors first: unknown peer, unaffordable amount, bad amount.
    let e = a
        .call("fundchannel", json!({"id": bn.id, "amount": 100_000}))
        .unwrap_err();
    assert_eq!(e["code"], 305, "{e}");
    a.connect(&bn);
    let e = a
        .call("fundchannel", json!({"id": bn.id, "amount": 500_000_000}))
        .unwrap_err();
    assert_eq!(e["code"], 301, "{e}");
    let e = a
        .call("fundchannel", json!({"id": bn.id, "amount": "lots"}))
        .unwrap_err();
    assert_eq!(e["code"], -32602, "{e}");

    let scid = open_channel(&b, &a, &bn, 1_000_000, &[]);
    let chans = a.ok("listpeerchannels", json!({}));
    schema_ok("listpeerchannels", &chans);
    let ca = a.channel_with(&bn.id).unwrap_or_default();
    assert_eq!(ca["opener"], "local");
    assert_eq!(ca["total_msat"], 1_000_000_000u64);
    assert_eq!(ca["short_channel_id"], scid.as_str());
    let cb = bn.channel_with(&a.id).unwrap_or_default();
    assert_eq!(cb["opener"], "remote");
    assert_eq!(cb["short_channel_id"], scid.as_str());
    // By id, by scid, and an unknown id.
    let by_scid = a.ok("listpeerchannels", json!({"short_channel_id": scid}));
    assert_eq!(by_scid["channels"].as_array().map(Vec::len), Some(1));
    let none = a.ok(
        "listpeerchannels",
        json!({"id": "0279be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798"}),
    );
    assert_eq!(none["channels"], json!([]));

    let funds = a.ok("listfunds", json!({}));
    schema_ok("listfunds", &funds);
    let ch = &funds["channels"][0];
    assert_eq!(ch["peer_id"], bn.id.as_str());
    assert_eq!(ch["amount_msat"], 1_000_000_000u64);
    assert_eq!(ch["state"], "CHANNELD_NORMAL");

    // Fees.
    let set = a.ok(
        "setchannel",
        json!({"id": scid, "feebase": 1500, "feeppm": 20}),
    );
    assert_eq!(set["channels"][0]["fee_base_msat"], 1500);
    assert_eq!(set["channels"][0]["fee_proportional_millionths"], 20);
    let ca = a.channel_with(&bn.id).unwrap_or_default();
    assert_eq!(ca["fee_base_msat"], 1500);

    // Cooperative close: the closing transaction comes back; both wallets get their side.
    let before = wallet_msat(&a);
    let closed = a.ok("close", json!({"id": bn.id}));
    schema_ok("close", &closed);
    assert_eq!(closed["type"], "mutual");
    onchain(&b, &a, &bn);
    let after = wait_for(T, || {
        let w = wallet_msat(&a);
        (w > before + 900_000_000).then_some(w)
    })
    .unwrap_or_else(|| panic!("closing output never reached A's wallet"));
    assert!(after < before + 1_000_000_000);
    // LDK reports the closing output (it pays the shutdown script) as spendable once six
    // blocks deep; it is the wallet's already, so nothing is swept and nothing fails.
    mine_sync(&b, 7, &[&a, &bn]);
    assert!(
        a.wait_log("pays to our wallet already: nothing to sweep", T),
        "the closing output was not recognised as the wallet's\n{}",
        a.log()
    );
    assert!(
        !a.log().contains("Error spending outputs"),
        "the sweeper tried to spend a wallet output\n{}",
        a.log()
    );
}

/// Mines until A's channel with `peer` is `ONCHAIN`: its closing or commitment transaction
/// confirmed (it may reach the mempool just after a block). A closed channel stays listed,
/// as in CLN, until it is resolved and 100 blocks deep.
fn onchain(b: &Bitcoind, a: &LnNode, peer: &LnNode) {
    let state = || a.channel_with(&peer.id).map(|c| c["state"].clone());
    for _ in 0..20 {
        mine_sync(b, 1, &[a, peer]);
        if wait_for(Duration::from_secs(2), || {
            (state() == Some(json!("ONCHAIN"))).then_some(())
        })
        .is_some()
        {
            return;
        }
    }
    panic!("channel never ONCHAIN: {:?}", a.channels());
}

#[test]
fn force_close_returns_funds_after_the_delay() {
    let b = Bitcoind::start("chan-force");
    // `dev-fail`: a unilateral close with the peer online (`close` would negotiate).
    let a = LnNode::start("force-a", &b, &["--developer".to_string()]);
    let bn = LnNode::start("force-b", &b, &[]);
    a.allow_asked_force_close();
    bn.allow_asked_force_close();
    fund_wallet(&b, &a, 1.0);
    // B holds the emergency reserve, so it takes anchor channels.
    fund_wallet(&b, &bn, 0.001);
    open_channel(&b, &a, &bn, 500_000, &[]);
    // An anchor channel (both ends negotiate option_anchors_zero_fee_htlc_tx).
    let ca = a.channel_with(&bn.id).unwrap_or_default();
    assert!(
        ca["features"]
            .as_array()
            .is_some_and(|f| f.iter().any(|x| x == "option_anchors")),
        "{ca}"
    );
    let before = wallet_msat(&a);
    let closed = a.ok("dev-fail", json!({"id": bn.id}));
    schema_ok("close", &closed);
    assert_eq!(closed["type"], "unilateral");
    // An anchor commitment goes out through LDK's bump event: with no HTLC pending the
    // target is the non-urgent sweep rate, which the commitment may already pay (then it is
    // broadcast alone); tests/py/test_anchors.py covers the CPFP itself.
    assert!(
        a.wait_log("Fee bump: commitment", T),
        "no bump event for the commitment\n{}",
        a.log()
    );
    // The commitment confirms; our output waits for the peer's to_self_delay (144 by
    // default) and then the sweeper spends it into the wallet.
    onchain(&b, &a, &bn);
    for _ in 0..16 {
        mine_sync(&b, 10, &[&a, &bn]);
    }
    // A gets its side back: the channel minus the two 330 sat anchor outputs the opener pays
    // (BOLT 3), the commitment's fee, the CPFP child's and the sweep's (a few thousand sat at
    // devchain's fallback rates; 20,000 sat is a generous bound).
    let after = wait_for(T, || {
        mine_sync(&b, 1, &[&a]);
        let w = wallet_msat(&a);
        (w > before + (500_000 - 660 - 20_000) * 1000).then_some(w)
    })
    .unwrap_or_else(|| panic!("the delayed output never reached A's wallet\n{}", a.log()));
    assert!(after < before + 500_000_000);
}
