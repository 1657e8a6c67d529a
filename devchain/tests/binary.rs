//! Starts the real `devchain` binary on port 0 with a temporary datadir and speaks HTTP JSON-RPC to
//! it with cookie auth, as a node's chain client would.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bitcoin::base64::Engine;
use bitcoin::base64::engine::general_purpose::STANDARD as BASE64;
use bitcoin::consensus::deserialize;
use serde_json::{Value, json};

struct Devchain {
    child: Child,
    port: u16,
    auth: String,
}

impl Drop for Devchain {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Spawns the binary in `dir` on port 0 with `extra` arguments; its port is the one the first
/// line of its stdout (the URL) names.
fn spawn(dir: &Path, extra: &[&str], auth: String) -> Devchain {
    let child = Command::new(env!("CARGO_BIN_EXE_devchain"))
        .args(["--datadir", dir.to_str().unwrap(), "--rpcport", "0"])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn devchain");
    let mut d = Devchain {
        child,
        port: 0,
        auth,
    };
    let stdout = d.child.stdout.take().unwrap();
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).unwrap();
    d.port = line
        .trim()
        .rsplit(':')
        .next()
        .unwrap()
        .parse()
        .expect("port in the first line");
    d
}

/// The binary with cookie auth; the rpcport file names the same port as the URL.
fn start(dir: &Path) -> Devchain {
    let _ = std::fs::remove_file(dir.join("rpcport"));
    let mut d = spawn(dir, &[], String::new());
    let deadline = Instant::now() + Duration::from_secs(30);
    let port = loop {
        if let Ok(s) = std::fs::read_to_string(dir.join("rpcport")) {
            break s.trim().parse::<u16>().expect("port number");
        }
        assert!(Instant::now() < deadline, "no rpcport file");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(port, d.port);
    let cookie = std::fs::read_to_string(dir.join(".cookie")).expect("cookie");
    assert!(cookie.starts_with("__cookie__:"), "{cookie}");
    assert_eq!(cookie.len(), "__cookie__:".len() + 64);
    d.auth = BASE64.encode(cookie.trim());
    d
}

/// [`start`] in a new temporary datadir, with a client connected.
fn start_in_temp_dir(name: &str) -> (PathBuf, Devchain, Client) {
    let dir = common::temp_dir(name);
    let d = start(&dir);
    let c = Client::new(&d);
    (dir, d, c)
}

struct Response {
    status: u16,
    body: Vec<u8>,
}

/// One HTTP/1.1 exchange on a kept-alive connection.
fn exchange(stream: &mut TcpStream, auth: &str, body: &str) -> Response {
    let req = format!(
        "POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Basic {auth}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(req.as_bytes()).unwrap();
    read_response(stream)
}

fn read_response(stream: &mut TcpStream) -> Response {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        stream.read_exact(&mut byte).expect("response head");
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap();
    let status: u16 = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    let len: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().parse().unwrap())
        })
        .expect("content-length");
    let mut body = vec![0u8; len];
    stream.read_exact(&mut body).unwrap();
    Response { status, body }
}

struct Client {
    stream: TcpStream,
    auth: String,
}

impl Client {
    fn new(d: &Devchain) -> Client {
        let stream = TcpStream::connect(("127.0.0.1", d.port)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        Client {
            stream,
            auth: d.auth.clone(),
        }
    }

    fn raw(&mut self, method: &str, params: Value) -> (u16, Value) {
        let body = json!({"method": method, "params": params, "id": 1}).to_string();
        let r = exchange(&mut self.stream, &self.auth, &body);
        (
            r.status,
            serde_json::from_slice(&r.body).expect("JSON body"),
        )
    }

    fn call(&mut self, method: &str, params: Value) -> Value {
        let (status, v) = self.raw(method, params);
        assert_eq!(status, 200, "{method}: {v}");
        assert_eq!(v["error"], Value::Null);
        v["result"].clone()
    }
}

#[test]
fn binary_speaks_bitcoind_json_rpc() {
    let (dir, d, mut c) = start_in_temp_dir("binary");

    let info = c.call("getblockchaininfo", json!([]));
    assert_eq!(info["chain"], "regtest");
    assert_eq!(info["blocks"], 101, "faucet coins mined on first start");
    let net = c.call("getnetworkinfo", json!([]));
    assert!(net["subversion"].as_str().unwrap().contains("devchain"));

    let addr = c.call("getnewaddress", json!([]));
    let hashes = c.call("generatetoaddress", json!([2, addr]));
    assert_eq!(hashes.as_array().unwrap().len(), 2);
    assert_eq!(c.call("getblockcount", json!([])), 103);

    let txid = c.call("sendtoaddress", json!([addr, 0.25]));
    assert_eq!(c.call("getrawmempool", json!([])), json!([txid]));

    let tip = c.call("getbestblockhash", json!([]));
    assert_eq!(tip, hashes[1]);
    let header = c.call("getblockheader", json!([tip]));
    assert_eq!(header["height"], 103);
    assert_eq!(header["previousblockhash"], hashes[0]);
    assert_eq!(header["bits"], "207fffff");

    let raw = c.call("getblock", json!([tip, 0]));
    let block: bitcoin::Block =
        deserialize(&devchain::util::unhex(raw.as_str().unwrap()).unwrap()).unwrap();
    assert_eq!(block.block_hash().to_string(), tip.as_str().unwrap());
    assert!(block.check_merkle_root() && block.check_witness_commitment());

    let mined = c.call("generatetoaddress", json!([1, addr]));
    let out = c.call("gettxout", json!([txid, 0]));
    assert_eq!(out["value"], 0.25);
    assert_eq!(out["confirmations"], 1);
    assert_eq!(out["bestblock"], mined[0]);

    // Unknown method: HTTP 404 with bitcoind's JSON error.
    let (status, v) = c.raw("getwalletinfo2", json!([]));
    assert_eq!(status, 404);
    assert_eq!(v["error"]["code"], -32601);
    assert_eq!(v["error"]["message"], "Method not found");
    // Other errors: HTTP 500.
    let (status, v) = c.raw("getblockhash", json!([1000]));
    assert_eq!(status, 500);
    assert_eq!(v["error"]["code"], -8);

    // Batch request on the same connection.
    let r = exchange(
        &mut c.stream,
        &d.auth,
        r#"[{"method":"getblockcount","id":1},{"method":"getbestblockhash","id":2}]"#,
    );
    assert_eq!(r.status, 200);
    let v: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v[0]["result"], 104);
    assert_eq!(v[1]["result"], mined[0]);

    // Two pipelined requests answered in order.
    let one = r#"{"method":"getblockcount","id":"p1"}"#;
    let two = r#"{"method":"getblockhash","params":[0],"id":"p2"}"#;
    let mut both = String::new();
    for b in [one, two] {
        both.push_str(&format!(
            "POST / HTTP/1.1\r\nAuthorization: Basic {}\r\nContent-Length: {}\r\n\r\n{b}",
            d.auth,
            b.len()
        ));
    }
    c.stream.write_all(both.as_bytes()).unwrap();
    let r1: Value = serde_json::from_slice(&read_response(&mut c.stream).body).unwrap();
    let r2: Value = serde_json::from_slice(&read_response(&mut c.stream).body).unwrap();
    assert_eq!(
        (r1["id"].clone(), r1["result"].clone()),
        (json!("p1"), json!(104))
    );
    assert_eq!(r2["id"], "p2");

    // Bad credentials: 401.
    let mut bad = TcpStream::connect(("127.0.0.1", d.port)).unwrap();
    let r = exchange(
        &mut bad,
        &BASE64.encode("__cookie__:wrong"),
        r#"{"method":"getblockcount","id":1}"#,
    );
    assert_eq!(r.status, 401);

    // `stop` ends the process and removes the cookie; a restart keeps the chain.
    let mut d = d;
    c.call("stop", json!([]));
    let status = d.child.wait().expect("exit");
    assert!(status.success());
    assert!(!dir.join(".cookie").exists());
    let d2 = start(&dir);
    let mut c2 = Client::new(&d2);
    assert_eq!(c2.call("getblockcount", json!([])), 104);
    assert_eq!(c2.call("getbestblockhash", json!([])), mined[0]);
    assert_eq!(c2.call("gettxout", json!([txid, 0]))["value"], 0.25);
    drop(d2);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn rpcuser_and_password_replace_the_cookie() {
    let dir = common::temp_dir("userpass");
    let d = spawn(
        &dir,
        &[
            "--rpcuser",
            "u",
            "--rpcpassword",
            "p",
            "--initial-blocks",
            "0",
        ],
        BASE64.encode("u:p"),
    );
    assert!(!dir.join(".cookie").exists());
    let mut c = Client::new(&d);
    assert_eq!(c.call("getblockcount", json!([])), 0);
    let r = exchange(
        &mut c.stream,
        &BASE64.encode("u:wrong"),
        r#"{"method":"getblockcount","id":1}"#,
    );
    assert_eq!(r.status, 401);
    drop(d);
    let _ = std::fs::remove_dir_all(&dir);
}

/// lightning-block-sync's RpcClient (the node's production chain client) against the binary: it
/// validates PoW, header linkage, heights, chainwork, merkle roots and witness commitments.
#[test]
fn lightning_block_sync_accepts_the_chain() {
    use lightning_block_sync::gossip::UtxoSource;
    use lightning_block_sync::poll::{ChainPoller, ChainTip, Poll};
    use lightning_block_sync::rpc::RpcClient;
    use lightning_block_sync::{BlockData, BlockSource, init};

    let (dir, d, mut c) = start_in_temp_dir("blocksync");
    let addr = c.call("getnewaddress", json!([]));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let client = RpcClient::new(&d.auth, format!("http://127.0.0.1:{}", d.port));
        let tip = init::validate_best_block_header(&client)
            .await
            .expect("best block");
        assert_eq!(tip.height, 101);
        let poller = ChainPoller::new(&client, bitcoin::Network::Regtest);

        // Walk from the tip to genesis: every header must build on its parent (hash link,
        // height, chainwork) and every full block must pass the merkle/witness checks.
        let mut header = tip;
        let mut count = 0;
        while header.height > 0 {
            let block = poller.fetch_block(&header).await.expect("valid block");
            assert!(matches!(&*block, BlockData::FullBlock(_)));
            header = poller
                .look_up_previous_header(&header)
                .await
                .expect("previous header");
            count += 1;
        }
        assert_eq!(count, 101);

        // A transaction, mined: the poller sees a better tip.
        let txid = c.call("sendtoaddress", json!([addr, 1.0]));
        let mined = c.call("generatetoaddress", json!([2, addr]));
        let better = match poller.poll_chain_tip(tip).await.expect("poll") {
            ChainTip::Better(h) => h,
            other => panic!("expected a better tip, got {other:?}"),
        };
        assert_eq!(better.height, 103);
        assert_eq!(
            better.header.block_hash().to_string(),
            mined[1].as_str().unwrap()
        );
        let block = poller.fetch_block(&better).await.expect("block");
        let BlockData::FullBlock(b) = &*block else {
            panic!("full block expected")
        };
        assert_eq!(b.txdata.len(), 1);
        assert_eq!(
            poller.poll_chain_tip(better).await.expect("poll"),
            ChainTip::Common
        );

        // Gossip's UTXO lookups.
        let out = bitcoin::OutPoint {
            txid: txid.as_str().unwrap().parse().unwrap(),
            vout: 0,
        };
        assert!(client.is_output_unspent(out).await.unwrap());
        assert!(
            !client
                .is_output_unspent(bitcoin::OutPoint { vout: 7, ..out })
                .await
                .unwrap()
        );
        let h1 = client.get_block_hash_by_height(1).await.unwrap();
        assert_eq!(
            h1.to_string(),
            c.call("getblockhash", json!([1])).as_str().unwrap()
        );

        // Reorg: replace the last two blocks by three others; the new tip has more work.
        c.call("invalidateblock", json!([mined[0]]));
        let other = c.call("generatetoaddress", json!([3, addr]));
        let (best, height) = client.get_best_block().await.unwrap();
        assert_eq!(
            (best.to_string(), height),
            (other[2].as_str().unwrap().to_string(), Some(104))
        );
        let reorged = match poller.poll_chain_tip(better).await.expect("poll") {
            ChainTip::Better(h) => h,
            other => panic!("expected a better tip, got {other:?}"),
        };
        assert_eq!(reorged.height, 104);
        // The transaction was mined again on the new branch.
        assert!(client.is_output_unspent(out).await.unwrap());
        // An unknown block is an error, not a crash.
        let unknown: bitcoin::BlockHash = "11".repeat(32).parse().unwrap();
        assert!(client.get_header(&unknown, None).await.is_err());
    });
    drop(d);
    let _ = std::fs::remove_dir_all(&dir);
}
