//! Invoices end to end on one fulgurd against devchain: `invoice` (CLN's params plus our
//! `payment_hash` extension) and what `decode` reads back from the BOLT 11 string,
//! `listinvoices` with CLN's index/start/limit, `delinvoice`, expiry seen by `listinvoices`
//! and `waitinvoice`, `waitanyinvoice` timeouts, `delexpiredinvoice`, `autoclean-once`, the
//! `invoice_creation` notification, and persistence across a restart. Results are checked
//! against CLN's schemas. Paying invoices needs channels: tested with them.
//! Build first: `cargo build -j2 --workspace --bins --examples`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use fulgur_tests::{Bitcoind, Node, RpcConn, arg, cln_schema_errors, temp_dir, wait_for};
use serde_json::{Value, json};

const T: Duration = Duration::from_secs(60);

fn notes_plugin() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("plugins/invoice_notes.py")
}

fn start(tag: &str, b: &Bitcoind, extra: &[String]) -> Node {
    let mut args = b.fulgurd_args();
    args.extend_from_slice(extra);
    let n = Node::start(tag, &args);
    wait_engine(&n);
    n
}

fn wait_engine(n: &Node) {
    assert!(
        n.wait_log("Lightning engine started", T),
        "the Lightning engine never started; log:\n{}",
        n.log()
    );
}

/// `result` matches CLN's schema `name`.
fn schema(name: &str, result: &Value) {
    assert_eq!(cln_schema_errors(name, result), None, "{name}: {result}");
}

/// The error object of a call that must fail.
fn fails(n: &Node, method: &str, params: Value) -> Value {
    match n.call(method, params.clone()) {
        Ok(r) => panic!("{method} {params} should fail, gave {r}"),
        Err(e) => e,
    }
}

fn invoices(n: &Node, params: Value) -> Vec<Value> {
    let r = n.ok("listinvoices", params);
    schema("listinvoices.json", &r);
    r["invoices"].as_array().cloned().unwrap_or_default()
}

fn labels(list: &[Value]) -> Vec<String> {
    list.iter()
        .map(|i| i["label"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// SHA256 of `data`, hex (coreutils' sha256sum).
fn sha256_hex(data: &[u8]) -> String {
    use std::io::Write;
    let mut c = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("sha256sum: {e}"));
    if let Some(mut i) = c.stdin.take() {
        i.write_all(data)
            .unwrap_or_else(|e| panic!("sha256sum: {e}"));
    }
    let out = c
        .wait_with_output()
        .unwrap_or_else(|e| panic!("sha256sum: {e}"));
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap_or_else(|e| panic!("{s}: {e}")))
        .collect()
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[test]
fn create_decode_list_and_delete() {
    let b = Bitcoind::start("inv-basic");
    let notes = temp_dir("inv-basic-notes").join("notes.jsonl");
    let n = start(
        "inv-basic",
        &b,
        &[
            arg("plugin", notes_plugin().display()),
            arg("invoice-notes-file", notes.display()),
        ],
    );
    let id = n.ok("getinfo", json!({}))["id"].clone();

    // A plain invoice: what `decode` reads matches what was asked and returned.
    let before = now();
    let r = n.ok(
        "invoice",
        json!({"amount_msat": 1000, "label": "coffee", "description": "one coffee", "expiry": 3600}),
    );
    schema("invoice.json", &r);
    assert_eq!(r["created_index"], json!(1));
    let d = n.ok("decode", json!({"string": r["bolt11"]}));
    schema("decode.json", &d);
    assert_eq!(d["payee"], id);
    assert_eq!(d["currency"], json!("bcrt"));
    assert_eq!(d["amount_msat"], json!(1000));
    assert_eq!(d["payment_hash"], r["payment_hash"]);
    assert_eq!(d["payment_secret"], r["payment_secret"]);
    assert_eq!(d["description"], json!("one coffee"));
    assert_eq!(d["expiry"], json!(3600));
    assert_eq!(d["min_final_cltv_expiry"], json!(42));
    let created = d["created_at"].as_u64().unwrap_or(0);
    assert!(created >= before && created <= now(), "{d}");
    assert_eq!(r["expires_at"], json!(created + 3600));
    // No channels: CLN's capacity warning.
    assert_eq!(
        r["warning_capacity"],
        json!("Insufficient incoming channel capacity to pay invoice")
    );

    let list = invoices(&n, json!({"label": "coffee"}));
    assert_eq!(list.len(), 1);
    let inv = &list[0];
    assert_eq!(inv["status"], json!("unpaid"));
    assert_eq!(inv["bolt11"], r["bolt11"]);
    assert_eq!(inv["payment_hash"], r["payment_hash"]);
    assert_eq!(inv["amount_msat"], json!(1000));
    assert_eq!(inv["description"], json!("one coffee"));
    assert_eq!(inv["expires_at"], r["expires_at"]);
    assert_eq!(inv["created_index"], json!(1));
    assert!(inv.get("updated_index").is_none(), "{inv}");
    assert!(inv.get("payment_preimage").is_none(), "{inv}");

    // The invoice_creation notification carries label, preimage and msat.
    let note = wait_for(T, || {
        std::fs::read_to_string(&notes)
            .ok()?
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|v| v["kind"] == "invoice_creation")
    })
    .unwrap_or_else(|| panic!("no invoice_creation notification"));
    let payload = &note["params"]["invoice_creation"];
    schema("notification/invoice_creation.json", payload);
    assert_eq!(payload["label"], json!("coffee"));
    assert_eq!(payload["msat"], json!(1000));
    let preimage = payload["preimage"].as_str().unwrap_or_default();
    assert_eq!(
        json!(sha256_hex(&unhex(preimage))),
        r["payment_hash"],
        "the preimage LDK derived hashes to the invoice's payment hash"
    );

    // Amount "any", a numeric label, the description's hash only.
    let long = "x".repeat(1000);
    let r2 = n.ok(
        "invoice",
        json!({"amount_msat": "any", "label": 42, "description": long, "deschashonly": true}),
    );
    schema("invoice.json", &r2);
    let d2 = n.ok("decode", json!({"string": r2["bolt11"]}));
    assert!(d2.get("amount_msat").is_none(), "{d2}");
    assert!(d2.get("description").is_none(), "{d2}");
    assert_eq!(d2["description_hash"], json!(sha256_hex(long.as_bytes())));
    assert_eq!(
        d2["expiry"],
        json!(604800),
        "CLN's default expiry is a week"
    );
    let by_number = invoices(&n, json!({"label": 42}));
    assert_eq!(labels(&by_number), ["42"]);
    assert_eq!(by_number[0]["description"], json!(long));
    assert!(by_number[0].get("amount_msat").is_none());
    assert_eq!(labels(&invoices(&n, json!(["42"]))), ["42"]);

    // The caller's preimage, and "cltv" both ways: at least LDK's 42, large values as given.
    let pre = "11".repeat(32);
    let r3 = n.ok(
        "invoice",
        json!({"amount_msat": "10sat", "label": "pre", "description": "d", "preimage": pre, "cltv": 1000}),
    );
    schema("invoice.json", &r3);
    assert_eq!(r3["payment_hash"], json!(sha256_hex(&unhex(&pre))));
    let d3 = n.ok("decode", json!({"string": r3["bolt11"]}));
    assert_eq!(d3["min_final_cltv_expiry"], json!(1000));
    assert_eq!(d3["amount_msat"], json!(10_000));
    let r4 = n.ok(
        "invoice",
        json!({"amount_msat": 5, "label": "low", "description": "d", "cltv": 9}),
    );
    let d4 = n.ok("decode", json!({"string": r4["bolt11"]}));
    assert_eq!(d4["min_final_cltv_expiry"], json!(42));

    // Our extension: a hash whose preimage the node does not know.
    let hash = "ab".repeat(32);
    let r5 = n.ok(
        "invoice",
        json!({"amount_msat": 2000, "label": "held", "description": "hold me", "payment_hash": hash, "cltv": 144}),
    );
    schema("invoice.json", &r5);
    assert_eq!(r5["payment_hash"], json!(hash));
    let d5 = n.ok("decode", json!({"string": r5["bolt11"]}));
    assert_eq!(d5["payment_hash"], json!(hash));
    assert_eq!(d5["min_final_cltv_expiry"], json!(144));
    assert_eq!(d5["description"], json!("hold me"));
    let held = invoices(&n, json!({"payment_hash": hash}));
    assert_eq!(labels(&held), ["held"]);
    let note = wait_for(T, || {
        std::fs::read_to_string(&notes)
            .ok()?
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|v| v["params"]["invoice_creation"]["label"] == "held")
    })
    .unwrap_or_else(|| panic!("no invoice_creation for the held invoice"));
    assert!(
        note["params"]["invoice_creation"].get("preimage").is_none(),
        "{note}"
    );

    // Fallbacks go into the invoice.
    let addr = "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080";
    let r6 = n.ok(
        "invoice",
        json!({"amount_msat": 1, "label": "fb", "description": "d", "fallbacks": [addr]}),
    );
    let d6 = n.ok("decode", json!({"string": r6["bolt11"]}));
    assert_eq!(d6["fallbacks"][0]["addr"], json!(addr), "{d6}");
    assert_eq!(d6["payment_hash"], r6["payment_hash"]);
    let e = fails(
        &n,
        "invoice",
        json!({"amount_msat": 1, "label": "fb2", "description": "d", "fallbacks": ["bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4"]}),
    );
    assert_eq!(e["code"], json!(-1), "{e}");
    assert_eq!(
        e["message"],
        json!("Fallback address does not match our network regtest")
    );

    // Duplicates: label 900, preimage/hash 901.
    let e = fails(
        &n,
        "invoice",
        json!({"amount_msat": 1, "label": "coffee", "description": "again"}),
    );
    assert_eq!(e["code"], json!(900), "{e}");
    assert_eq!(e["message"], json!("Duplicate label 'coffee'"));
    let e = fails(
        &n,
        "invoice",
        json!({"amount_msat": 1, "label": "other", "description": "d", "preimage": pre}),
    );
    assert_eq!(e["code"], json!(901), "{e}");
    let e = fails(
        &n,
        "invoice",
        json!({"amount_msat": 1, "label": "other", "description": "d", "payment_hash": hash}),
    );
    assert_eq!(e["code"], json!(901), "{e}");
    assert!(invoices(&n, json!({"label": "other"})).is_empty());

    // Bad parameters: -32602.
    for bad in [
        json!({"amount_msat": 0, "label": "z", "description": "d"}),
        json!({"amount_msat": "lots", "label": "z", "description": "d"}),
        json!({"amount_msat": 1, "label": {"a": 1}, "description": "d"}),
        json!({"amount_msat": 1, "label": "z", "description": 7}),
        json!({"amount_msat": 1, "label": "z", "description": "d", "preimage": "00"}),
        json!({"amount_msat": 1, "label": "z", "description": "d", "payment_hash": "zz"}),
        json!({"amount_msat": 1, "label": "z", "description": "d", "preimage": pre, "payment_hash": hash}),
        json!({"amount_msat": 1, "label": "z".repeat(129), "description": "d"}),
        json!({"amount_msat": 1, "label": "z", "description": "x".repeat(700)}),
        json!({"amount_msat": 1, "label": "z", "description": "d", "exposeprivatechannels": "nope"}),
        json!({"amount_msat": 1, "label": "z", "description": "d", "cltv": 70000}),
        json!({"amount_msat": 1, "label": "z", "description": "d", "expiry": -1}),
        json!({"amount_msat": 1, "label": "z"}),
    ] {
        let e = fails(&n, "invoice", bad.clone());
        assert_eq!(e["code"], json!(-32602), "{bad} -> {e}");
    }
    // A channel that is not ours cannot be a route hint: 902.
    let e = fails(
        &n,
        "invoice",
        json!({"amount_msat": 1, "label": "z", "description": "d", "exposeprivatechannels": ["1x2x3"]}),
    );
    assert_eq!(e["code"], json!(902), "{e}");

    // Listing: all in creation order, pages by index, and the selectors.
    let all = invoices(&n, json!({}));
    assert_eq!(labels(&all), ["coffee", "42", "pre", "low", "held", "fb"]);
    let idx: Vec<Value> = all.iter().map(|i| i["created_index"].clone()).collect();
    assert_eq!(
        idx,
        [json!(1), json!(2), json!(3), json!(4), json!(5), json!(6)]
    );
    let page = invoices(&n, json!({"index": "created", "start": 2, "limit": 2}));
    assert_eq!(labels(&page), ["42", "pre"]);
    assert!(invoices(&n, json!({"index": "updated"})).is_empty());
    assert_eq!(
        labels(&invoices(&n, json!({"invstring": r3["bolt11"]}))),
        ["pre"]
    );
    assert!(invoices(&n, json!({"label": "nobody"})).is_empty());
    assert!(invoices(&n, json!({"offer_id": "00".repeat(32)})).is_empty());
    for bad in [
        json!({"start": 1}),
        json!({"limit": 1}),
        json!({"label": "coffee", "payment_hash": hash}),
        json!({"index": "sideways"}),
        json!({"invstring": "lnbcrt1nonsense"}),
        json!({"payment_hash": "abcd"}),
    ] {
        let e = fails(&n, "listinvoices", bad.clone());
        assert_eq!(e["code"], json!(-32602), "{bad} -> {e}");
    }

    // delinvoice: status must match (906 with both statuses), unknown label 905,
    // desconly keeps the invoice without its description (then 908), then deletion.
    let e = fails(
        &n,
        "delinvoice",
        json!({"label": "coffee", "status": "paid"}),
    );
    assert_eq!(e["code"], json!(906), "{e}");
    assert_eq!(e["message"], json!("Invoice status is unpaid not paid"));
    assert_eq!(
        e["data"],
        json!({"current_status": "unpaid", "expected_status": "paid"})
    );
    let e = fails(
        &n,
        "delinvoice",
        json!({"label": "ghost", "status": "unpaid"}),
    );
    assert_eq!(e["code"], json!(905), "{e}");
    let dd = n.ok(
        "delinvoice",
        json!({"label": 42, "status": "unpaid", "desconly": true}),
    );
    schema("delinvoice.json", &dd);
    assert!(dd.get("description").is_none(), "{dd}");
    let after = invoices(&n, json!({"label": "42"}));
    assert!(after[0].get("description").is_none(), "{after:?}");
    assert_eq!(after[0]["updated_index"], json!(1));
    assert_eq!(labels(&invoices(&n, json!({"index": "updated"}))), ["42"]);
    let e = fails(
        &n,
        "delinvoice",
        json!({"label": 42, "status": "unpaid", "desconly": true}),
    );
    assert_eq!(e["code"], json!(908), "{e}");
    let del = n.ok("delinvoice", json!({"label": "coffee", "status": "unpaid"}));
    schema("delinvoice.json", &del);
    assert_eq!(del["label"], json!("coffee"));
    assert_eq!(del["bolt11"], r["bolt11"]);
    assert!(invoices(&n, json!({"label": "coffee"})).is_empty());
    // The label is free again; created indexes are never reused.
    let again = n.ok(
        "invoice",
        json!({"amount_msat": 1000, "label": "coffee", "description": "two coffees"}),
    );
    assert_eq!(again["created_index"], json!(7));
}

#[test]
fn expiry_waits_and_cleaning() {
    let b = Bitcoind::start("inv-expiry");
    let mut n = start("inv-expiry", &b, &[]);

    let e = fails(&n, "waitinvoice", json!({"label": "nobody"}));
    assert_eq!(e["code"], json!(-1), "{e}");
    assert_eq!(e["message"], json!("Label not found"));

    // An invoice expiring in 2 s: waitinvoice fails with 903 and the invoice at expiry.
    let r = n.ok(
        "invoice",
        json!({"amount_msat": 1000, "label": "brief", "description": "d", "expiry": 2}),
    );
    let e = fails(&n, "waitinvoice", json!({"label": "brief"}));
    // Not before the expiry (the node's clock is this one).
    assert!(
        now() >= e["data"]["expires_at"].as_u64().unwrap_or(u64::MAX),
        "returned before the expiry: {e}"
    );
    assert_eq!(e["code"], json!(903), "{e}");
    assert_eq!(e["message"], json!("invoice expired during wait"));
    assert_eq!(e["data"]["label"], json!("brief"));
    assert_eq!(e["data"]["status"], json!("expired"));
    assert_eq!(e["data"]["payment_hash"], r["payment_hash"]);
    // Already expired: at once.
    let e = fails(&n, "waitinvoice", json!({"label": "brief"}));
    assert_eq!(e["code"], json!(903), "{e}");
    let list = invoices(&n, json!({"label": "brief"}));
    assert_eq!(list[0]["status"], json!("expired"));
    assert_eq!(list[0]["updated_index"], json!(1));
    // Expiry is noticed by listing too (no waiter involved).
    n.ok(
        "invoice",
        json!({"amount_msat": 1000, "label": "brief2", "description": "d", "expiry": 1}),
    );
    let expired = wait_for(Duration::from_secs(10), || {
        let l = invoices(&n, json!({"label": "brief2"}));
        (l[0]["status"] == "expired").then_some(l)
    });
    assert!(expired.is_some(), "brief2 never expired");
    let e = fails(
        &n,
        "delinvoice",
        json!({"label": "brief2", "status": "unpaid"}),
    );
    assert_eq!(e["code"], json!(906), "{e}");

    // Deleted while waited for: -1.
    n.ok(
        "invoice",
        json!({"amount_msat": 1000, "label": "doomed", "description": "d"}),
    );
    let sock = n.socket();
    let waiter = std::thread::spawn(move || {
        let mut c = RpcConn::connect(&sock);
        c.call("waitinvoice", json!({"label": "doomed"}))
    });
    assert!(
        n.wait_log("waitinvoice: waiting for invoice doomed", T),
        "the waiter never waited; log:\n{}",
        n.log()
    );
    n.ok("delinvoice", json!({"label": "doomed", "status": "unpaid"}));
    let e = waiter
        .join()
        .unwrap_or_else(|_| panic!("waiter thread panicked"))
        .err()
        .unwrap_or_default();
    assert_eq!(e["code"], json!(-1), "{e}");
    assert_eq!(e["message"], json!("Invoice deleted during wait"));

    // waitanyinvoice with nothing paid: 904 at once (timeout 0) or after the timeout.
    let e = fails(&n, "waitanyinvoice", json!({"timeout": 0}));
    assert_eq!(e["code"], json!(904), "{e}");
    assert_eq!(
        e["message"],
        json!("Timed out while waiting for invoice to be paid")
    );
    let t0 = Instant::now();
    let e = fails(
        &n,
        "waitanyinvoice",
        json!({"lastpay_index": 5, "timeout": 1}),
    );
    assert_eq!(e["code"], json!(904), "{e}");
    assert!(t0.elapsed() >= Duration::from_millis(900));
    // A timeout beyond the clock's range waits forever (it must not crash the node).
    let mut forever = RpcConn::connect(&n.socket());
    forever
        .send_raw(
            json!({"jsonrpc": "2.0", "id": "forever", "method": "waitanyinvoice", "params": {"timeout": u64::MAX}})
                .to_string()
                .as_bytes(),
        )
        .unwrap_or_else(|e| panic!("send: {e}"));
    assert!(
        n.wait_log(
            "waitanyinvoice: waiting for a payment after pay index 0 without a timeout",
            T
        ),
        "the endless waitanyinvoice never waited; log:\n{}",
        n.log()
    );
    assert!(n.alive());
    drop(forever);
    let e = fails(&n, "waitanyinvoice", json!({"lastpay_index": -1}));
    assert_eq!(e["code"], json!(-32602), "{e}");

    // autoclean-once: expired invoices by age, paid ones (none). Age 1 cleans those whose
    // expiry is a second old on the node's clock (this machine's): wait until both are.
    let last_expiry = invoices(&n, json!({}))
        .iter()
        .filter(|i| i["status"] == "expired")
        .filter_map(|i| i["expires_at"].as_u64())
        .max()
        .unwrap_or(u64::MAX);
    assert!(
        wait_for(T, || (now() > last_expiry).then_some(())).is_some(),
        "the clock never passed {last_expiry} + 1 s"
    );
    let clean_expired = |age: u64| {
        let a = n.ok(
            "autoclean-once",
            json!({"subsystem": "expiredinvoices", "age": age}),
        );
        schema("autoclean-once.json", &a);
        a
    };
    assert_eq!(
        clean_expired(3600),
        json!({"autoclean": {"expiredinvoices": {"cleaned": 0, "uncleaned": 2}}})
    );
    assert_eq!(
        clean_expired(1),
        json!({"autoclean": {"expiredinvoices": {"cleaned": 2, "uncleaned": 0}}})
    );
    let a = n.ok("autoclean-once", json!(["paidinvoices", 1]));
    assert_eq!(
        a,
        json!({"autoclean": {"paidinvoices": {"cleaned": 0, "uncleaned": 0}}})
    );
    for bad in [
        json!({"subsystem": "expiredinvoices", "age": 0}),
        json!({"subsystem": "everything", "age": 10}),
    ] {
        let e = fails(&n, "autoclean-once", bad.clone());
        assert_eq!(e["code"], json!(-32602), "{bad} -> {e}");
    }

    // delexpiredinvoice: only expired ones, only up to maxexpirytime.
    n.ok(
        "invoice",
        json!({"amount_msat": 1000, "label": "old", "description": "d", "expiry": 1}),
    );
    n.ok(
        "invoice",
        json!({"amount_msat": 1000, "label": "keep", "description": "d"}),
    );
    let old_expired = wait_for(T, || {
        (invoices(&n, json!({"label": "old"}))[0]["status"] == "expired").then_some(())
    });
    assert!(old_expired.is_some(), "old never expired");
    assert_eq!(
        n.ok("delexpiredinvoice", json!({"maxexpirytime": 1000})),
        json!({})
    );
    assert_eq!(labels(&invoices(&n, json!({}))), ["old", "keep"]);
    assert_eq!(n.ok("delexpiredinvoice", json!({})), json!({}));
    assert_eq!(labels(&invoices(&n, json!({}))), ["keep"]);

    // Invoices survive a restart; creation indexes continue.
    let keep = invoices(&n, json!({"label": "keep"}));
    let args = b.fulgurd_args();
    n.restart(&args);
    // listinvoices reads the database (directly while the engine is not running yet).
    assert_eq!(invoices(&n, json!({"label": "keep"})), keep);
    assert!(
        wait_for(T, || (n.log().matches("Lightning engine started").count()
            >= 2)
            .then_some(()))
        .is_some(),
        "the engine did not start again; log:\n{}",
        n.log()
    );
    assert_eq!(invoices(&n, json!({"label": "keep"})), keep);
    let r = n.ok(
        "invoice",
        json!({"amount_msat": 1000, "label": "after", "description": "d"}),
    );
    assert_eq!(r["created_index"], json!(6));
}
