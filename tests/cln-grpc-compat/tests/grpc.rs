//! CLN's unmodified `cln-grpc` plugin on fulgurd: three nodes on devchain (A runs the plugin,
//! B and C are its peers), A's every typed gRPC call made with `cln-grpc`'s generated
//! `NodeClient` over mTLS, with arguments that make sense on the network (channels, invoices,
//! payments, a forward). The plugin parses fulgurd's replies with `cln-rpc`'s strict models:
//! every call of a command fulgurd serves (`help`) must come back Ok, every other one as
//! "unknown command", and no reply may fail to parse. Notification streams are subscribed
//! before anything happens; those the network's events must feed are checked.
//!
//! Needs the plugin binary: `bash tests/cln-grpc-compat/install` (tests/run-all runs it),
//! or `CLN_GRPC_PLUGIN=/path/to/cln-grpc`. Build the workspace binaries first.

// The proto marks the fields of pay, keysend, getroute and renepay deprecated (CLN points to
// xpay and getroutes), but they are calls users make: they are tested too.
#![allow(deprecated)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cln_grpc::pb;
use cln_grpc::pb::node_client::NodeClient;
use cln_grpc_compat::{CALLS, Outcome, STREAMS, classify};
use fulgur_tests::ln::{LnNode, T, fund_wallet, mine_sync, wait_gossip};
use fulgur_tests::{Bitcoind, arg, free_port, wait_for};
use serde_json::{Value, json};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

/// The plugin binary: `CLN_GRPC_PLUGIN`, or where `tests/cln-grpc-compat/install` puts it.
fn plugin_path() -> PathBuf {
    let p = std::env::var_os("CLN_GRPC_PLUGIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/cln-grpc/bin/cln-grpc")
        });
    assert!(
        p.exists(),
        "{} is missing: run `bash tests/cln-grpc-compat/install`",
        p.display()
    );
    p
}

fn amount(msat: u64) -> pb::Amount {
    pb::Amount { msat }
}

fn sat(sat: u64) -> pb::AmountOrAll {
    pb::AmountOrAll {
        value: Some(pb::amount_or_all::Value::Amount(amount(sat * 1000))),
    }
}

fn perkw(n: u32) -> pb::Feerate {
    pb::Feerate {
        style: Some(pb::feerate::Style::Perkw(n)),
    }
}

fn bytes(h: &str) -> Vec<u8> {
    hex::decode(h).unwrap_or_else(|e| panic!("bad hex {h}: {e}"))
}

fn text(v: &Value) -> String {
    v.as_str()
        .unwrap_or_else(|| panic!("not a string: {v}"))
        .to_string()
}

/// What each call came to, by client method.
#[derive(Default)]
struct Record(BTreeMap<&'static str, Outcome>);

impl Record {
    fn note<T>(&mut self, method: &'static str, r: &Result<T, tonic::Status>) {
        let o = match r {
            Ok(_) => Outcome::Ok,
            Err(s) => classify(s.message()),
        };
        // A method called twice keeps its worst outcome.
        if self.0.get(method).is_none_or(|prev| *prev == Outcome::Ok) {
            self.0.insert(method, o);
        }
    }
}

/// `call!(record, client.method => request)`: makes the call, notes its outcome, and gives
/// the response when Ok. (The `=>` keeps rustfmt from spreading each call over ten lines.)
/// BOLT 12's example offer, and an invoice request and an invoice LDK and our tests made
/// (the strings of tests/py/test_decode.py).
const BOLT12_OFFER: &str = "lno1pqps7sjqpgtyzm3qv4uxzmtsd3jjqer9wd3hy6tsw35k7msjzfpy7nz5yqcnygrfdej82um5wf5k2uckyypwa3eyt44h6txtxquqh7lz5djge4afgfjn7k4rgrkuag0jsd5xvxg";
const BOLT12_INVREQ: &str = "lnr1qqcyxm3ta6r0mgh2lt4wpkxcvrdt7uy4xj8cga2wpdla84fgvj8xzkgfpyysjzgfpyysjzgfpyysjzgfpqpzwyq2qe3k7enxv4jsuprhxk2qqysvge6kcem4wgsxxctxcw53gqg9zcssxxuyc4t8kynygzv460k442aq2ewhrcvrgczgr8lec9l4a82a6pu02cqsykppqw3c4rg6u3svkzv2gn4x7gdav3486gt23hm07prjg7t64ky082snckgwvehhygr5dpjjqmmxve5kxe0sgqjzw2hguqsvf4ntmr8q52ndm3z7xuhlmg9f2ve5aay3xs8lf55tct0gmxm0x3exca0trqy88xylvzap0tc3tjunrvmlrjuza35jw8hp";
const BOLT12_INVOICE: &str = "lni1qqyqzqgpqyqszqgppgphgetpzcssxckq5prd4n8gdhwsxs7x60ru08pzpzaqm8yu7f9x6prdy8fply8htqss9xyupdmvk43ew87un0hnrmqxcdtq7vjf6mhfuhvrc4mz2ktwqhm05p5qxckq5prd4n8gdhwsxs7x60ru08pzpzaqm8yu7f9x6prdy8fply8hq0cqdgvd2efufm048y0lywnp7qlls0fr06yqaes3slaf7du6q28q5qgr7qr2rr2k20zwmaferler5c0s8lur6gm73q8wvyv8l20n0xsz3c9qqq42hw3pcqqqqqqsqqqqvsqzsqqqqqqqqqqqqyqqqqqqqq85ysqqqzjqgegqqqq2sgzzgfpyysjzgfpyysjzgfpyysjzgfpyysjzgfpyysjzgfpyysjzg24qyfcs4stsqqq5zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3kqssxckq5prd4n8gdhwsxs7x60ru08pzpzaqm8yu7f9x6prdy8fply8h7pqrf66gpm7rgq2u453rx86qx8yhhfne4v3d4tkxe943ujwsxr47ky4kf44qurle4hzn93wtmqg5h9a537e5s62ys80r8xnzu4sefd2rq5";

macro_rules! call {
    ($rec:ident, $client:ident . $method:ident => $req:expr) => {{
        let r = $client.$method($req).await;
        $rec.note(stringify!($method), &r);
        r.ok().map(|r| r.into_inner())
    }};
}

/// Opens a channel of `sat` from `a` to `b` with the harness (JSON-RPC), without mining.
fn open_unconfirmed(chain: &Bitcoind, a: &LnNode, b: &LnNode, sat: u64) {
    a.connect(b);
    let txid = a.ok("fundchannel", json!({"id": b.id, "amount": sat}))["txid"].clone();
    let in_pool = || {
        chain
            .ok("getrawmempool", json!([]))
            .as_array()
            .is_some_and(|p| p.contains(&txid))
    };
    assert!(
        wait_for(T, || in_pool().then_some(())).is_some(),
        "funding {txid} never reached the mempool"
    );
}

fn normal_channels(a: &LnNode, peer: &str) -> Vec<Value> {
    a.channels()
        .into_iter()
        .filter(|c| c["peer_id"] == peer && c["state"] == "CHANNELD_NORMAL")
        .collect()
}

#[test]
fn cln_grpc_plugin_serves_every_command_fulgur_has() {
    let plugin = plugin_path();
    let chain = Bitcoind::start("grpc");
    let grpc_port = free_port();
    let a = LnNode::start(
        "grpc-a",
        &chain,
        &[
            arg("plugin", plugin.display()),
            arg("grpc-port", grpc_port),
            arg("exposesecret-passphrase", "grpc"),
            // clnrest up, for `clnrest-register-path` (plain HTTP: cln-grpc alone makes
            // the certificates in the network directory).
            arg("clnrest-port", free_port()),
            arg("clnrest-protocol", "http"),
        ],
    );
    let b = LnNode::start("grpc-b", &chain, &["--developer".to_string()]);
    let c = LnNode::start("grpc-c", &chain, &[]);
    // The plugin writes CLN's certificates where CLN starts plugins: the network directory.
    let net = a.dir.join("regtest");
    let read = |f: &str| {
        wait_for(T, || {
            std::fs::read(net.join(f)).ok().filter(|b| !b.is_empty())
        })
        .unwrap_or_else(|| panic!("the plugin never wrote {f}; log:\n{}", a.log()))
    };
    let (ca, cert, key) = (read("ca.pem"), read("client.pem"), read("client-key.pem"));
    fund_wallet(&chain, &a, 1.0);
    // Separate coins for the wallet commands (each spends or reserves one).
    for _ in 0..4 {
        fund_wallet(&chain, &a, 0.1);
    }
    fund_wallet(&chain, &b, 0.2);

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("runtime: {e}"));
    let tls = ClientTlsConfig::new()
        .domain_name("cln")
        .ca_certificate(Certificate::from_pem(ca))
        .identity(Identity::from_pem(cert, key));
    let endpoint = Channel::from_shared(format!("https://127.0.0.1:{grpc_port}"))
        .unwrap_or_else(|e| panic!("endpoint: {e}"))
        .tls_config(tls)
        .unwrap_or_else(|e| panic!("tls: {e}"));
    let channel = rt.block_on(async {
        for _ in 0..200 {
            if let Ok(ch) = endpoint.connect().await {
                return ch;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!(
            "the plugin never served gRPC on {grpc_port}; log:\n{}",
            a.log()
        )
    });
    let mut g = NodeClient::new(channel);
    let mut rec = Record::default();

    // Every stream, subscribed before anything happens; each counts what it delivers.
    let delivered: Arc<Mutex<BTreeMap<&'static str, usize>>> = Arc::default();
    // Streams the plugin has accepted (its handler registered the subscription).
    let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut asked = 0usize;
    macro_rules! subscribe {
        ($($m:ident, $req:ident);* $(;)?) => {$(
            let mut client = g.clone();
            let d = delivered.clone();
            let ok = accepted.clone();
            asked += 1;
            rt.spawn(async move {
                let Ok(s) = client.$m(pb::$req {}).await else { return };
                ok.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let mut s = s.into_inner();
                while let Ok(Some(_)) = s.message().await {
                    *d.lock().unwrap_or_else(|e| e.into_inner()).entry(stringify!($m)).or_default() += 1;
                }
            });
        )*};
    }
    rt.block_on(async {
        subscribe!(
            subscribe_balance_snapshot, StreamBalanceSnapshotRequest;
            subscribe_block_added, StreamBlockAddedRequest;
            subscribe_channel_open_failed, StreamChannelOpenFailedRequest;
            subscribe_channel_opened, StreamChannelOpenedRequest;
            subscribe_channel_state_changed, StreamChannelStateChangedRequest;
            subscribe_connect, StreamConnectRequest;
            subscribe_coin_movement, StreamCoinMovementRequest;
            subscribe_custom_msg, StreamCustomMsgRequest;
            subscribe_deprecated_oneshot, StreamDeprecatedOneshotRequest;
            subscribe_disconnect, StreamDisconnectRequest;
            subscribe_forward_event, StreamForwardEventRequest;
            subscribe_invoice_creation, StreamInvoiceCreationRequest;
            subscribe_invoice_payment, StreamInvoicePaymentRequest;
            subscribe_log, StreamLogRequest;
            subscribe_onion_message_forward_fail, StreamOnionMessageForwardFailRequest;
            subscribe_open_channel_peer_sigs, StreamOpenChannelPeerSigsRequest;
            subscribe_plugin_started, StreamPluginStartedRequest;
            subscribe_plugin_stopped, StreamPluginStoppedRequest;
            subscribe_send_pay_failure, StreamSendPayFailureRequest;
            subscribe_send_pay_success, StreamSendPaySuccessRequest;
            subscribe_shutdown, StreamShutdownRequest;
            subscribe_warning, StreamWarningRequest;
            subscribe_pay_part_end, StreamPayPartEndRequest;
            subscribe_pay_part_start, StreamPayPartStartRequest;
        );
    });
    // Every subscription in place before the first event.
    wait_for(T, || {
        (accepted.load(std::sync::atomic::Ordering::SeqCst) == asked).then_some(())
    })
    .unwrap_or_else(|| panic!("the plugin did not accept every stream"));

    let id_a = bytes(&a.id);
    let id_b = bytes(&b.id);
    let id_c = bytes(&c.id);
    let zeros = vec![0u8; 32];
    let b_addr = text(&b.ok("newaddr", json!({"addresstype": "bech32"}))["bech32"]);

    rt.block_on(async {
        // ---- The node, its wallet and its stores, before any channel.
        let info = call!(rec, g.getinfo => pb::GetinfoRequest {});
        assert_eq!(info.map(|i| i.id), Some(id_a.clone()));
        call!(rec, g.help => pb::HelpRequest::default());
        call!(rec, g.list_configs => pb::ListconfigsRequest::default());
        call!(rec, g.feerates => pb::FeeratesRequest { style: pb::feerates_request::FeeratesStyle::Perkw as i32 });
        call!(rec, g.new_addr => pb::NewaddrRequest { addresstype: Some(pb::newaddr_request::NewaddrAddresstype::Bech32 as i32) });
        call!(rec, g.list_addresses => pb::ListaddressesRequest::default());
        let funds = call!(rec, g.list_funds => pb::ListfundsRequest::default());
        call!(rec, g.list_transactions => pb::ListtransactionsRequest {});
        call!(rec, g.get_log => pb::GetlogRequest::default());
        let signed = call!(rec, g.sign_message => pb::SignmessageRequest { message: "grpc".into() });
        if let Some(s) = signed {
            call!(rec, g.check_message => pb::CheckmessageRequest { message: "grpc".into(), zbase: s.zbase, pubkey: Some(id_a.clone()) });
        }
        call!(rec, g.make_secret => pb::MakesecretRequest { string: Some("grpc".into()), hex: None });
        call!(rec, g.expose_secret => pb::ExposesecretRequest { passphrase: "grpc".into(), identifier: Some("grpc".into()) });
        call!(rec, g.datastore => pb::DatastoreRequest { key: vec!["grpc".into(), "k".into()], string: Some("v".into()), ..Default::default() });
        call!(rec, g.list_datastore => pb::ListdatastoreRequest { key: vec!["grpc".into()] });
        call!(rec, g.datastore_usage => pb::DatastoreusageRequest { key: vec!["grpc".into()] });
        call!(rec, g.del_datastore => pb::DeldatastoreRequest { key: vec!["grpc".into(), "k".into()], generation: None });
        // The proto has restrictions as strings, but CLN (and fulgurd) take each restriction
        // as an array of alternatives and refuse a bare string: an unrestricted rune is what
        // this call can make.
        let rune = call!(rec, g.create_rune => pb::CreateruneRequest { rune: None, restrictions: vec![] });
        call!(rec, g.show_runes => pb::ShowrunesRequest::default());
        if let Some(r) = rune {
            call!(rec, g.check_rune => pb::CheckruneRequest { rune: r.rune, nodeid: Some(a.id.clone()), method: Some("getinfo".into()), params: vec![] });
        }
        call!(rec, g.blacklist_rune => pb::BlacklistruneRequest { start: Some(0), ..Default::default() });
        call!(rec, g.set_config => pb::SetconfigRequest { config: "autoclean-cycle".into(), val: Some("3600".into()), transient: Some(true) });
        call!(rec, g.auto_clean_status => pb::AutocleanstatusRequest::default());
        call!(rec, g.auto_clean_once => pb::AutocleanonceRequest { subsystem: pb::AutocleanSubsystem::Expiredinvoices as i32, age: 3600 });
        let height = chain.height() as u32;
        call!(rec, g.wait_block_height => pb::WaitblockheightRequest { blockheight: height, timeout: Some(30) });
        call!(rec, g.wait => pb::WaitRequest { subsystem: pb::wait_request::WaitSubsystem::Invoices as i32, indexname: pb::wait_request::WaitIndexname::Created as i32, nextvalue: 0 });
        call!(rec, g.plugin => pb::PluginRequest { subcommand: pb::PluginSubcommand::List as i32, ..Default::default() });
        // Start and stop a plugin (one on CLN's cln-plugin crate): the plugin_started and
        // plugin_stopped streams.
        let other = fulgur_tests::bin("cln-plugin-compat").display().to_string();
        call!(rec, g.plugin => pb::PluginRequest { subcommand: pb::PluginSubcommand::Start as i32, plugin: Some(other.clone()), ..Default::default() });
        call!(rec, g.plugin => pb::PluginRequest { subcommand: pb::PluginSubcommand::Stop as i32, plugin: Some(other), ..Default::default() });
        call!(rec, g.upgrade_wallet => pb::UpgradewalletRequest::default());
        call!(rec, g.list_nodes => pb::ListnodesRequest::default());

        // ---- PSBTs and transactions from the wallet.
        let psbt = call!(rec, g.fund_psbt => pb::FundpsbtRequest { satoshi: Some(sat(100_000)), feerate: Some(perkw(253)), startweight: 250, reserve: Some(0), ..Default::default() });
        if let Some(p) = psbt {
            call!(rec, g.reserve_inputs => pb::ReserveinputsRequest { psbt: p.psbt.clone(), ..Default::default() });
            call!(rec, g.unreserve_inputs => pb::UnreserveinputsRequest { psbt: p.psbt.clone(), reserve: None });
            call!(rec, g.set_psbt_version => pb::SetpsbtversionRequest { psbt: p.psbt, version: 2 });
        }
        if let Some(f) = funds.as_ref().and_then(|f| f.outputs.first()) {
            call!(rec, g.utxo_psbt => pb::UtxopsbtRequest { satoshi: Some(sat(10_000)), feerate: Some(perkw(253)), startweight: 250, utxos: vec![pb::Outpoint { txid: f.txid.clone(), outnum: f.output }], reserve: Some(0), reservedok: Some(true), ..Default::default() });
        }
        // fundpsbt, then an output, signed and sent.
        if let Some(p) = call!(rec, g.fund_psbt => pb::FundpsbtRequest { satoshi: Some(sat(50_000)), feerate: Some(perkw(253)), startweight: 250 + 4 * 43, excess_as_change: Some(true), ..Default::default() }) {
            let out = call!(rec, g.add_psbt_output => pb::AddpsbtoutputRequest { satoshi: Some(amount(50_000_000)), initialpsbt: Some(p.psbt), destination: Some(b_addr.clone()), ..Default::default() });
            if let Some(o) = out
                && let Some(s) = call!(rec, g.sign_psbt => pb::SignpsbtRequest { psbt: o.psbt, signonly: vec![] })
            {
                call!(rec, g.send_psbt => pb::SendpsbtRequest { psbt: s.signed_psbt, reserve: None });
            }
        }
        let out = |sat: u64| pb::OutputDesc {
            address: b_addr.clone(),
            amount: Some(amount(sat * 1000)),
        };
        if let Some(p) = call!(rec, g.tx_prepare => pb::TxprepareRequest { outputs: vec![out(20_000)], ..Default::default() }) {
            call!(rec, g.tx_send => pb::TxsendRequest { txid: p.txid });
        }
        call!(rec, g.withdraw => pb::WithdrawRequest { destination: b_addr.clone(), satoshi: Some(sat(20_000)), ..Default::default() });
        call!(rec, g.multi_withdraw => pb::MultiwithdrawRequest { outputs: vec![out(20_000), out(21_000)], ..Default::default() });
    });
    mine_sync(&chain, 1, &[&a, &b, &c]);
    // Confirmed coins for the three channel fundings ahead.
    for _ in 0..3 {
        fund_wallet(&chain, &a, 0.1);
    }

    rt.block_on(async {
        // ---- Peers and channels: B by fundchannel and multifundchannel, C by the harness.
        call!(rec, g.connect_peer => pb::ConnectRequest { id: b.id.clone(), host: Some("127.0.0.1".into()), port: Some(u32::from(b.port)) });
        call!(rec, g.list_peers => pb::ListpeersRequest::default());
        call!(rec, g.send_custom_msg => pb::SendcustommsgRequest { node_id: id_b.clone(), msg: bytes("fff1cafe") });
        // Start, cancel; start, complete with a prepared transaction, cancel, discard it.
        call!(rec, g.fund_channel_start => pb::FundchannelStartRequest { id: id_b.clone(), amount: Some(amount(300_000_000)), ..Default::default() });
    });
    rt.block_on(async {
        call!(rec, g.fund_channel_cancel => pb::FundchannelCancelRequest { id: id_b.clone() });
        if let Some(s) = call!(rec, g.fund_channel_start => pb::FundchannelStartRequest { id: id_b.clone(), amount: Some(amount(300_000_000)), ..Default::default() }) {
            let out = pb::OutputDesc {
                address: s.funding_address,
                amount: Some(amount(300_000_000)),
            };
            if let Some(p) = call!(rec, g.tx_prepare => pb::TxprepareRequest { outputs: vec![out], ..Default::default() }) {
                call!(rec, g.fund_channel_complete => pb::FundchannelCompleteRequest { id: id_b.clone(), psbt: p.psbt, withhold: None });
                call!(rec, g.fund_channel_cancel => pb::FundchannelCancelRequest { id: id_b.clone() });
                call!(rec, g.tx_discard => pb::TxdiscardRequest { txid: p.txid });
            }
        }
    });
    // B may have dropped the connection with the cancelled channel: connect again.
    wait_for(T, || {
        let peers = a.ok("listpeers", json!({"id": b.id}));
        (peers["peers"][0]["connected"] == true)
            .then_some(())
            .or_else(|| {
                let _ = a.call(
                    "connect",
                    json!({"id": b.id, "host": "127.0.0.1", "port": b.port}),
                );
                None
            })
    })
    .unwrap_or_else(|| panic!("A never got back to B"));
    rt.block_on(async {
        call!(rec, g.fund_channel => pb::FundchannelRequest { id: id_b.clone(), amount: Some(sat(1_000_000)), push_msat: Some(amount(300_000_000)), ..Default::default() });
    });
    wait_for(T, || (a.channels().len() == 1).then_some(())).unwrap_or_else(|| panic!("no channel"));
    rt.block_on(async {
        call!(rec, g.multi_fund_channel => pb::MultifundchannelRequest { destinations: vec![pb::MultifundchannelDestinations { id: format!("{}@127.0.0.1:{}", b.id, b.port), amount: Some(sat(400_000)), ..Default::default() }], ..Default::default() });
    });
    open_unconfirmed(&chain, &a, &c, 1_000_000);
    // B opens one to A too: `channel_opened` is about channels a peer opened with us.
    open_unconfirmed(&chain, &b, &a, 200_000);
    mine_sync(&chain, 6, &[&a, &b, &c]);
    wait_for(T, || {
        (normal_channels(&a, &b.id).len() == 3 && normal_channels(&a, &c.id).len() == 1)
            .then_some(())
    })
    .unwrap_or_else(|| panic!("channels never became normal: {:?}", a.channels()));
    let scid_ab = text(&normal_channels(&a, &b.id)[0]["short_channel_id"]);
    let scid_ac = text(&normal_channels(&a, &c.id)[0]["short_channel_id"]);
    let chan_ab = text(&normal_channels(&a, &b.id)[0]["channel_id"]);
    wait_gossip(&a, &scid_ab);
    wait_gossip(&b, &scid_ac);
    // B sends A a custom message (the custommsg stream).
    b.ok("sendcustommsg", json!({"node_id": a.id, "msg": "fff3beef"}));

    // ---- Payments: A pays B every way the proto has; B pays C through A (a forward).
    let inv = |n: &LnNode, label: &str, msat: Value| {
        text(
            &n.ok(
                "invoice",
                json!({"amount_msat": msat, "label": label, "description": label}),
            )["bolt11"],
        )
    };
    let pay_b = inv(&b, "pay", json!(10_000));
    let xpay_b = inv(&b, "xpay", json!(11_000));
    let renepay_b = inv(&b, "renepay", json!(12_000));
    let any_b = inv(&b, "any", json!("any"));
    let sendpay = b.ok(
        "invoice",
        json!({"amount_msat": 13_000, "label": "sendpay", "description": "sendpay"}),
    );
    let to_c = inv(&c, "fwd", json!(14_000));
    let final_cltv = b.ok("decode", json!({"string": sendpay["bolt11"]}))["min_final_cltv_expiry"]
        .as_u64()
        .and_then(|c| u32::try_from(c).ok())
        .unwrap_or(18);
    let a_addr = text(&a.ok("newaddr", json!({"addresstype": "bech32"}))["bech32"]);
    rt.block_on(async {
        call!(rec, g.list_peer_channels => pb::ListpeerchannelsRequest::default());
        call!(rec, g.list_channels => pb::ListchannelsRequest::default());
        call!(rec, g.list_nodes => pb::ListnodesRequest { id: Some(id_b.clone()) });
        call!(rec, g.set_channel => pb::SetchannelRequest { id: scid_ac.clone(), feebase: Some(amount(1)), feeppm: Some(10), ..Default::default() });
        call!(rec, g.decode => pb::DecodeRequest { string: pay_b.clone() });
        // BOLT 12 strings (tests/py/test_decode.py's): cln-grpc's typed reply reads every
        // field `decode` gives for an offer, an invoice request and an invoice.
        for (s, kind) in [
            (BOLT12_OFFER, pb::decode_response::DecodeType::Bolt12Offer),
            (BOLT12_INVREQ, pb::decode_response::DecodeType::Bolt12InvoiceRequest),
            (BOLT12_INVOICE, pb::decode_response::DecodeType::Bolt12Invoice),
        ] {
            let d = g
                .decode(pb::DecodeRequest { string: s.into() })
                .await
                .unwrap_or_else(|e| panic!("decode of {s} through cln-grpc: {e}"))
                .into_inner();
            assert_eq!((d.item_type, d.valid), (kind as i32, true), "{s}");
            assert_eq!(d.offer_id.map(|i| i.len()), Some(32), "{s}");
        }
        call!(rec, g.pre_approve_invoice => pb::PreapproveinvoiceRequest { bolt11: pay_b.clone() });
        call!(rec, g.pre_approve_keysend => pb::PreapprovekeysendRequest { destination: id_b.clone(), payment_hash: zeros.clone(), amount_msat: Some(amount(1000)) });
        call!(rec, g.pay => pb::PayRequest { bolt11: pay_b.clone(), ..Default::default() });
        call!(rec, g.xpay => pb::XpayRequest { invstring: xpay_b.clone(), ..Default::default() });
        call!(rec, g.rene_pay => pb::RenepayRequest { invstring: renepay_b.clone(), ..Default::default() });
        call!(rec, g.rene_pay_status => pb::RenepaystatusRequest { invstring: Some(renepay_b.clone()) });
        call!(rec, g.send_amount => pb::SendamountRequest { invstring: any_b.clone(), amount_msat: Some(amount(15_000)), ..Default::default() });
        call!(rec, g.key_send => pb::KeysendRequest { destination: id_b.clone(), amount_msat: Some(amount(16_000)), ..Default::default() });
        call!(rec, g.xkeysend => pb::XkeysendRequest { destination: id_b.clone(), amount_msat: Some(amount(17_000)), ..Default::default() });
        let route = call!(rec, g.get_route => pb::GetrouteRequest { id: id_b.clone(), amount_msat: Some(amount(13_000)), riskfactor: 1, cltv: Some(final_cltv), ..Default::default() });
        call!(rec, g.get_routes => pb::GetroutesRequest { source: id_a.clone(), destination: id_b.clone(), amount_msat: Some(amount(13_000)), layers: vec![], maxfee_msat: Some(amount(1000)), final_cltv: 18, ..Default::default() });
        let hash = bytes(&text(&sendpay["payment_hash"]));
        if let Some(r) = route {
            let hops = r
                .route
                .into_iter()
                .map(|h| pb::SendpayRoute {
                    id: Some(h.id),
                    delay: Some(h.delay),
                    channel: Some(h.channel),
                    amount_msat: h.amount_msat,
                    ..Default::default()
                })
                .collect();
            call!(rec, g.send_pay => pb::SendpayRequest { route: hops, payment_hash: hash.clone(), payment_secret: Some(bytes(&text(&sendpay["payment_secret"]))), amount_msat: Some(amount(13_000)), ..Default::default() });
            call!(rec, g.wait_send_pay => pb::WaitsendpayRequest { payment_hash: hash.clone(), timeout: Some(60), ..Default::default() });
        }
        call!(rec, g.list_send_pays => pb::ListsendpaysRequest::default());
        call!(rec, g.list_pays => pb::ListpaysRequest::default());
        call!(rec, g.del_pay => pb::DelpayRequest { payment_hash: hash, status: pb::delpay_request::DelpayStatus::Complete as i32, ..Default::default() });
        call!(rec, g.list_htlcs => pb::ListhtlcsRequest::default());

        // ---- Invoices on A, paid by B.
        call!(rec, g.invoice => pb::InvoiceRequest { amount_msat: Some(pb::AmountOrAny { value: Some(pb::amount_or_any::Value::Amount(amount(20_000))) }), label: "grpc".into(), description: "grpc".into(), ..Default::default() });
    });
    let a_inv = text(&a.ok("listinvoices", json!({"label": "grpc"}))["invoices"][0]["bolt11"]);
    b.ok("pay", json!({"bolt11": a_inv}));
    b.ok("pay", json!({"bolt11": to_c}));
    rt.block_on(async {
        call!(rec, g.wait_invoice => pb::WaitinvoiceRequest { label: "grpc".into() });
        call!(rec, g.wait_any_invoice => pb::WaitanyinvoiceRequest { lastpay_index: Some(0), timeout: Some(30) });
        call!(rec, g.list_invoices => pb::ListinvoicesRequest::default());
        call!(rec, g.sign_invoice => pb::SigninvoiceRequest { invstring: a_inv.clone() });
        call!(rec, g.sign_message_with_key => pb::SignmessagewithkeyRequest { message: "grpc".into(), address: a_addr.clone() });
        call!(rec, g.del_invoice => pb::DelinvoiceRequest { label: "grpc".into(), status: pb::delinvoice_request::DelinvoiceStatus::Paid as i32, desconly: None });
        let fwd = call!(rec, g.list_forwards => pb::ListforwardsRequest::default());
        if let Some(f) = fwd.and_then(|f| {
            f.forwards.into_iter().find(|f| {
                f.status == pb::listforwards_forwards::ListforwardsForwardsStatus::Settled as i32
            })
        }) {
            call!(rec, g.del_forward => pb::DelforwardRequest { in_channel: f.in_channel, in_htlc_id: f.in_htlc_id.unwrap_or_default(), status: pb::delforward_request::DelforwardStatus::Settled as i32 });
        }

        // ---- Graph, routing layers and the bookkeeper.
        let msg = b.ok("dev", json!(["gossip"]))["gossip"][0].clone();
        call!(rec, g.add_gossip => pb::AddgossipRequest { message: bytes(&text(&msg)) });
        let layer = || "grpc".to_string();
        let dir = "1x1x1/0".to_string();
        call!(rec, g.ask_rene_create_layer => pb::AskrenecreatelayerRequest { layer: layer(), persistent: None });
        call!(rec, g.ask_rene_list_layers => pb::AskrenelistlayersRequest::default());
        call!(rec, g.ask_rene_create_channel => pb::AskrenecreatechannelRequest { layer: layer(), source: id_a.clone(), destination: id_c.clone(), short_channel_id: "1x1x1".into(), capacity_msat: Some(amount(1_000_000)) });
        call!(rec, g.ask_rene_update_channel => pb::AskreneupdatechannelRequest { layer: layer(), short_channel_id_dir: dir.clone(), enabled: Some(true), ..Default::default() });
        call!(rec, g.ask_rene_inform_channel => pb::AskreneinformchannelRequest { layer: layer(), short_channel_id_dir: dir.clone(), amount_msat: Some(amount(1000)), inform: pb::askreneinformchannel_request::AskreneinformchannelInform::Constrained as i32 });
        call!(rec, g.ask_rene_bias_channel => pb::AskrenebiaschannelRequest { layer: layer(), short_channel_id_dir: dir.clone(), bias: 1, ..Default::default() });
        call!(rec, g.askrene_bias_node => pb::AskrenebiasnodeRequest { layer: layer(), node: id_c.clone(), direction: "out".into(), bias: 1, ..Default::default() });
        call!(rec, g.ask_rene_disable_node => pb::AskrenedisablenodeRequest { layer: layer(), node: bytes("02eec7245d6b7d2ccb30380bfbe2a3648cd7a942653f5aa340edcea1f283686619") });
        call!(rec, g.ask_rene_remove_channel_update => pb::AskreneremovechannelupdateRequest { layer: layer(), short_channel_id_dir: dir.clone() });
        call!(rec, g.ask_rene_age => pb::AskreneageRequest { layer: layer(), cutoff: 0 });
        let hop = format!("{scid_ab}/{}", u8::from(a.id > b.id));
        call!(rec, g.ask_rene_reserve => pb::AskrenereserveRequest { path: vec![pb::AskrenereservePath { short_channel_id_dir: hop.clone(), amount_msat: Some(amount(1000)), ..Default::default() }] });
        call!(rec, g.ask_rene_list_reservations => pb::AskrenelistreservationsRequest {});
        call!(rec, g.ask_rene_unreserve => pb::AskreneunreserveRequest { path: vec![pb::AskreneunreservePath { short_channel_id_dir: hop, amount_msat: Some(amount(1000)), ..Default::default() }], dev_remove_all: None });
        call!(rec, g.ask_rene_remove_layer => pb::AskreneremovelayerRequest { layer: layer() });
        call!(rec, g.bkpr_list_balances => pb::BkprlistbalancesRequest {});
        call!(rec, g.bkpr_list_account_events => pb::BkprlistaccounteventsRequest::default());
        call!(rec, g.bkpr_list_income => pb::BkprlistincomeRequest::default());
        call!(rec, g.bkpr_channels_apy => pb::BkprchannelsapyRequest::default());
        call!(rec, g.bkpr_inspect => pb::BkprinspectRequest { account: chan_ab.clone() });
        let csv = a.dir.join("income.csv").display().to_string();
        call!(rec, g.bkpr_dump_income_csv => pb::BkprdumpincomecsvRequest { csv_format: "koinly".into(), csv_file: Some(csv), ..Default::default() });
        call!(rec, g.bkpr_report => pb::BkprreportRequest { format: Some("{account} {credit}".into()), ..Default::default() });
        let hash_pay = text(&a.ok("decode", json!({"string": pay_b}))["payment_hash"]);
        call!(rec, g.bkpr_edit_description_by_payment_id => pb::BkpreditdescriptionbypaymentidRequest { payment_id: hash_pay, description: "edited".into() });
        let utxo = a.ok("listfunds", json!({}))["outputs"][0].clone();
        call!(rec, g.bkpr_edit_description_by_outpoint => pb::BkpreditdescriptionbyoutpointRequest { outpoint: format!("{}:{}", text(&utxo["txid"]), utxo["output"]), description: "edited".into() });
        call!(rec, g.list_channel_moves => pb::ListchannelmovesRequest::default());
        call!(rec, g.list_chain_moves => pb::ListchainmovesRequest::default());
        if let Some(ev) = call!(rec, g.list_network_events => pb::ListnetworkeventsRequest::default()) {
            let first = ev
                .networkevents
                .first()
                .map(|e| e.created_index)
                .unwrap_or_default();
            call!(rec, g.del_network_event => pb::DelnetworkeventRequest { created_index: first });
        }

        // ---- Closing and disconnecting; `stop` comes last.
        call!(rec, g.close => pb::CloseRequest { id: scid_ab.clone(), ..Default::default() });
        call!(rec, g.list_closed_channels => pb::ListclosedchannelsRequest::default());
    });
    wait_for(T, || {
        a.ok("listpeers", json!({"id": c.id}))["peers"][0]["connected"]
            .as_bool()
            .filter(|c| *c)
    })
    .unwrap_or_else(|| panic!("A is not connected to C"));
    rt.block_on(async {
        call!(rec, g.disconnect => pb::DisconnectRequest { id: id_c.clone(), force: Some(true) });
        unknown_commands(&mut rec, &mut g, &id_b, &zeros).await;
    });
    // The streams that must deliver; waited for (the last events' notifications are on
    // their way) before anything is counted.
    const MUST_DELIVER: [&str; 16] = [
        "subscribe_balance_snapshot",
        "subscribe_block_added",
        "subscribe_connect",
        "subscribe_disconnect",
        "subscribe_channel_opened",
        "subscribe_channel_state_changed",
        "subscribe_coin_movement",
        "subscribe_custom_msg",
        "subscribe_invoice_creation",
        "subscribe_invoice_payment",
        "subscribe_send_pay_success",
        "subscribe_forward_event",
        "subscribe_plugin_started",
        "subscribe_plugin_stopped",
        "subscribe_pay_part_start",
        "subscribe_pay_part_end",
    ];
    let _ = wait_for(T, || {
        let got = delivered.lock().unwrap_or_else(|e| e.into_inner());
        MUST_DELIVER
            .iter()
            .all(|s| got.get(s).copied().unwrap_or(0) > 0)
            .then_some(())
    });

    // ---- What the streams delivered.
    // The plugin logs (at debug, which reaches A's log) each notification it could not parse
    // with cln-rpc's models; such a notification never reaches its stream. None may fail:
    // a failure is a notification whose fields differ from CLN's.
    let log = a.log();
    assert!(
        log.contains("Client asked for getinfo"),
        "the plugin's debug lines are not in the log"
    );
    let unparsed: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("Failed to parse notification"))
        .collect();
    assert!(
        unparsed.is_empty(),
        "notifications the plugin could not parse:\n{}",
        unparsed.join("\n")
    );
    let got = delivered.lock().unwrap_or_else(|e| e.into_inner()).clone();
    for s in STREAMS {
        println!("stream {s}: {}", got.get(s).copied().unwrap_or(0));
    }
    let mut silent = vec![];
    for s in MUST_DELIVER {
        if got.get(s).copied().unwrap_or(0) == 0 {
            silent.push(s);
        }
    }

    let help: Vec<String> = a.ok("help", json!({}))["help"]
        .as_array()
        .map(|h| {
            h.iter()
                .filter_map(|c| c["command"].as_str())
                .map(|c| c.split(' ').next().unwrap_or(c).to_string())
                .collect()
        })
        .unwrap_or_default();

    // `stop` through gRPC. fulgurd stops its plugins before it answers (as lightningd, which
    // writes "Shutdown complete" after its plugins are gone), so the plugin cannot pass the
    // reply on: what counts is that the node went down.
    let stopped = rt.block_on(async { g.stop(pb::StopRequest {}).await });
    let mut a = a;
    assert!(
        a.wait_exit(Duration::from_secs(40)).is_some(),
        "fulgurd did not exit after Stop ({stopped:?})"
    );
    rec.0.insert("stop", Outcome::Ok);

    // ---- The verdict, call by call.
    let mut wrong = vec![];
    let (mut ok, mut unknown) = (0, 0);
    for (method, command) in CALLS {
        let served = help.iter().any(|c| c == command);
        let got = rec.0.get(method).cloned();
        println!("{method} ({command}, served: {served}): {got:?}");
        match (served, got) {
            (true, Some(Outcome::Ok)) => ok += 1,
            (false, Some(Outcome::UnknownCommand)) => unknown += 1,
            (_, got) => wrong.push(format!("{method} ({command}, in help: {served}): {got:?}")),
        }
    }
    println!(
        "{ok} calls served, {unknown} unknown commands, {} wrong",
        wrong.len()
    );
    assert!(
        wrong.is_empty(),
        "{} calls went wrong:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
    assert!(
        silent.is_empty(),
        "streams that delivered nothing: {silent:?}"
    );
}

/// The proto's calls of commands fulgurd does not have, with arguments the plugin can
/// convert (an empty public key would make its conversion panic): each must come back as
/// "unknown command". Then the static-backup calls and `graceful`, which fulgurd has (the
/// verdict follows `help`).
async fn unknown_commands(
    rec: &mut Record,
    g: &mut NodeClient<Channel>,
    id_b: &[u8],
    zeros: &[u8],
) {
    let id = || id_b.to_vec();
    let h = || zeros.to_vec();
    let s = |t: &str| t.to_string();
    call!(rec, g.create_invoice => pb::CreateinvoiceRequest { invstring: s("lnbcrt1"), label: s("x"), preimage: h() });
    call!(rec, g.create_onion => pb::CreateonionRequest { hops: vec![], assocdata: h(), ..Default::default() });
    call!(rec, g.dev_forget_channel => pb::DevforgetchannelRequest { id: id(), ..Default::default() });
    call!(rec, g.recover => pb::RecoverRequest { hsmsecret: s("x") });
    call!(rec, g.create_invoice_request => pb::InvoicerequestRequest { amount: Some(pb::Amount { msat: 1000 }), description: s("x"), ..Default::default() });
    call!(rec, g.disable_invoice_request => pb::DisableinvoicerequestRequest { invreq_id: s("x") });
    call!(rec, g.list_invoice_requests => pb::ListinvoicerequestsRequest::default());
    call!(rec, g.send_onion => pb::SendonionRequest { onion: h(), payment_hash: h(), first_hop: Some(pb::SendonionFirstHop { id: id(), amount_msat: Some(pb::Amount { msat: 1000 }), delay: 9 }), ..Default::default() });
    call!(rec, g.disable_offer => pb::DisableofferRequest { offer_id: h() });
    call!(rec, g.enable_offer => pb::EnableofferRequest { offer_id: h() });
    call!(rec, g.fetch_bip353 => pb::Fetchbip353Request { address: s("a@b.c") });
    call!(rec, g.fetch_invoice => pb::FetchinvoiceRequest { offer: s("lno1"), ..Default::default() });
    call!(rec, g.cancel_recurring_invoice => pb::CancelrecurringinvoiceRequest { offer: s("lno1"), recurrence_counter: 1, recurrence_label: s("x"), ..Default::default() });
    call!(rec, g.funder_update => pb::FunderupdateRequest::default());
    call!(rec, g.list_offers => pb::ListoffersRequest::default());
    call!(rec, g.offer => pb::OfferRequest { amount: s("any"), ..Default::default() });
    call!(rec, g.open_channel_abort => pb::OpenchannelAbortRequest { channel_id: h() });
    call!(rec, g.open_channel_bump => pb::OpenchannelBumpRequest { channel_id: h(), initialpsbt: s("x"), amount: Some(pb::Amount { msat: 1000 }), funding_feerate: None });
    call!(rec, g.open_channel_init => pb::OpenchannelInitRequest { id: id(), initialpsbt: s("x"), amount: Some(pb::Amount { msat: 1000 }), ..Default::default() });
    call!(rec, g.open_channel_signed => pb::OpenchannelSignedRequest { channel_id: h(), signed_psbt: s("x") });
    call!(rec, g.open_channel_update => pb::OpenchannelUpdateRequest { channel_id: h(), psbt: s("x") });
    call!(rec, g.ping => pb::PingRequest { id: id(), ..Default::default() });
    call!(rec, g.send_invoice => pb::SendinvoiceRequest { invreq: s("lnr1"), label: s("x"), ..Default::default() });
    call!(rec, g.splice_init => pb::SpliceInitRequest { channel_id: h(), relative_amount: 1, ..Default::default() });
    call!(rec, g.splice_signed => pb::SpliceSignedRequest { channel_id: h(), psbt: s("x"), sign_first: None });
    call!(rec, g.splice_update => pb::SpliceUpdateRequest { channel_id: h(), psbt: s("x") });
    call!(rec, g.splice_in => pb::SpliceinRequest { channel: s("1x1x1"), amount: s("1000") });
    call!(rec, g.splice_out => pb::SpliceoutRequest { channel: s("1x1x1"), amount: s("1000"), ..Default::default() });
    call!(rec, g.dev_splice => pb::DevspliceRequest { script_or_json: s("x"), ..Default::default() });
    call!(rec, g.inject_payment_onion => pb::InjectpaymentonionRequest { onion: h(), payment_hash: h(), amount_msat: Some(pb::Amount { msat: 1000 }), cltv_expiry: 9, partid: 0, groupid: 0, ..Default::default() });
    call!(rec, g.inject_onion_message => pb::InjectonionmessageRequest { path_key: id(), message: h() });
    call!(rec, g.clnrest_register_path => pb::ClnrestregisterpathRequest { path: s("/x"), rpc_method: s("getinfo"), ..Default::default() });
    call!(rec, g.list_currency_rates => pb::ListcurrencyratesRequest { currency: s("USD") });
    call!(rec, g.currency_convert => pb::CurrencyconvertRequest { amount: 1.0, currency: s("USD") });
    call!(rec, g.currency_rate => pb::CurrencyrateRequest { currency: s("USD"), source: None });
    call!(rec, g.create_proof => pb::CreateproofRequest { invstring: s("lnbcrt1"), ..Default::default() });
    // Served since the static channel backups exist (issue 20): the node's own channels
    // are known, so nothing is recovered.
    call!(rec, g.emergency_recover => pb::EmergencyrecoverRequest {});
    call!(rec, g.get_emergency_recover_data => pb::GetemergencyrecoverdataRequest {});
    call!(rec, g.recover_channel => pb::RecoverchannelRequest { scb: vec![] });
    call!(rec, g.static_backup => pb::StaticbackupRequest {});
    // Served since graceful exists, and last before `stop` (it disconnects A's peers). With a
    // timeout: it answers within 5 s whatever is still pending.
    call!(rec, g.graceful => pb::GracefulRequest { timeout: Some(5) });
}
