//! The WASM transport: the same plugin (one [`Builder`], the same handlers) run inside
//! fulgurd as a WebAssembly guest instead of as a process (the ABI is in the repository's
//! `docs/WASM.md`).
//!
//! A guest is driven by the host: each message arrives as a call of the module's
//! `on_message` export, and the plugin may only run during such calls. [`WasmGuest`] is
//! that driver and is plain Rust (tested natively): it owns a current-thread tokio
//! runtime on which the SDK's dispatch runs over [`Transport::from_channels`], and
//! [`WasmGuest::deliver`] hands one message in, runs every task that can make progress
//! until the plugin is idle, and returns what the plugin sent meanwhile. Work that waits
//! for something else (a hook answered later, a timer) resumes during a later delivery.
//!
//! A guest has no socket: [`crate::Plugin::rpc`] sends each call to the node as a request
//! on the plugin's output (the host runs it, within the sandbox's `allow-rpc` list) and the
//! host's response, a later message, completes the call
//! ([`Transport::rpc_through_transport`]). A handler written for a process plugin runs
//! unchanged; its `rpc().call(..)` simply resumes during the delivery of the response.
//! The host's timer is such a call too: `plugin.rpc().call("wasm_timer", json!({"ms": N}))`
//! completes after `N` ms.
//!
//! On `wasm32` the `wasm_plugin!` macro adds the exports (`alloc`,
//! `on_message`) and calls the host's `fulgur.send` import with each message. That glue is
//! compiled only for wasm32; what it does besides calling the import is in [`abi`], which
//! is plain Rust and tested natively.

use serde_json::Value;
use tokio::sync::mpsc;

use crate::builder::Builder;
use crate::error::RunError;
use crate::plugin::{Level, send_log};
use crate::transport::Transport;

/// Messages from the host that may wait unread (the host sends one per call, so a few).
const INBOX: usize = 1024;
/// Scheduler rounds in a row without output after which the plugin counts as idle.
const QUIET_ROUNDS: u32 = 3;
/// Most scheduler rounds one delivery may take (a handler spinning on `yield_now`
/// otherwise never lets the call end).
const MAX_ROUNDS: u32 = 100_000;

/// Runs one plugin as a WASM guest: messages in through [`WasmGuest::deliver`], messages
/// out as its return value.
pub struct WasmGuest {
    runtime: tokio::runtime::Runtime,
    inbox: Option<mpsc::Sender<Value>>,
    outbox: mpsc::UnboundedReceiver<Value>,
    out: mpsc::UnboundedSender<Value>,
}

impl std::fmt::Debug for WasmGuest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WasmGuest")
            .field("open", &self.inbox.is_some())
            .finish()
    }
}

impl WasmGuest {
    /// The plugin `builder` with its `state`, ready for the host's `getmanifest`.
    pub fn new<S: Send + Sync + 'static>(builder: Builder<S>, state: S) -> Result<Self, RunError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .map_err(|e| RunError::Handshake(format!("cannot build the runtime: {e}")))?;
        let (in_tx, in_rx) = mpsc::channel(INBOX);
        let (out_tx, out_rx) = mpsc::unbounded_channel();
        let transport = Transport::from_channels(in_rx, out_tx.clone()).rpc_through_transport();
        let log = out_tx.clone();
        runtime.spawn(async move {
            let r = match builder.configure(transport).await {
                Ok(Some(configured)) => match configured.start(state) {
                    Ok(running) => running.join().await,
                    Err(e) => Err(e),
                },
                Ok(None) => Ok(()),
                Err(e) => Err(e),
            };
            if let Err(e) = r {
                send_log(&log, Level::Error, format!("plugin stopped: {e}"));
            }
        });
        Ok(WasmGuest {
            runtime,
            inbox: Some(in_tx),
            outbox: out_rx,
            out: out_tx,
        })
    }

    /// Delivers one message from the host (JSON text) and runs the plugin until it is
    /// idle; returns the messages it sent, each one compact JSON object.
    pub fn deliver(&mut self, message: &[u8]) -> Vec<Vec<u8>> {
        match serde_json::from_slice::<Value>(message) {
            Ok(v) => {
                let queued = self.inbox.as_ref().is_some_and(|t| t.try_send(v).is_ok());
                if !queued {
                    send_log(
                        &self.out,
                        Level::Warn,
                        "message dropped: the plugin is not reading".into(),
                    );
                }
            }
            Err(e) => send_log(
                &self.out,
                Level::Warn,
                format!("ignoring a message that is not JSON: {e}"),
            ),
        }
        self.run_until_idle()
    }

    /// Ends the plugin's input (as a closed stdin does) and lets it finish: calls to the
    /// node still waiting for their response end with [`crate::CallError::Closed`].
    pub fn close(&mut self) -> Vec<Vec<u8>> {
        self.inbox = None;
        self.run_until_idle()
    }

    fn run_until_idle(&mut self) -> Vec<Vec<u8>> {
        let outbox = &mut self.outbox;
        self.runtime.block_on(async move {
            let mut sent = vec![];
            let mut quiet = 0;
            for _ in 0..MAX_ROUNDS {
                // Lets every task that is ready run once.
                tokio::task::yield_now().await;
                let before = sent.len();
                while let Ok(v) = outbox.try_recv() {
                    sent.push(serde_json::to_vec(&v).unwrap_or_default());
                }
                if sent.len() == before {
                    quiet += 1;
                    if quiet >= QUIET_ROUNDS {
                        break;
                    }
                } else {
                    quiet = 0;
                }
            }
            sent
        })
    }
}

/// Declares the exports of a WASM plugin (`alloc`, `on_message`) for a crate built as a
/// `cdylib` for a wasm32 target. `$make` is an expression giving `(Builder<S>, S)`; it is
/// evaluated once, when the first message arrives.
///
/// ```ignore
/// fulgur_plugin_sdk::wasm_plugin!((my_builder(), MyState::default()));
/// ```
#[cfg(target_arch = "wasm32")]
#[macro_export]
macro_rules! wasm_plugin {
    ($make:expr) => {
        // `no_mangle` counts as unsafe code; allowed so that crates denying it can use this.
        #[allow(unsafe_code)]
        #[unsafe(no_mangle)]
        pub extern "C" fn alloc(len: i32) -> i32 {
            $crate::wasm::glue::alloc(len)
        }

        #[allow(unsafe_code)]
        #[unsafe(no_mangle)]
        pub extern "C" fn on_message(ptr: i32, len: i32) {
            $crate::wasm::glue::on_message(ptr, len, || $make)
        }
    };
}

/// The guest side of the ABI as plain Rust, so that it is tested natively: the buffer
/// `alloc` hands out and the one [`WasmGuest`] of the module. The wasm32-only `glue` adds
/// the thread-locals and the `fulgur.send` import around it.
#[doc(hidden)]
pub mod abi {
    use serde_json::json;

    use super::WasmGuest;
    use crate::builder::Builder;
    use crate::plugin::Level;

    /// The buffer the host writes the next message into (one, reused, grown when needed).
    #[derive(Debug, Default)]
    pub struct Inbox {
        buf: Vec<u8>,
    }

    impl Inbox {
        /// `alloc(len)`: makes the buffer `len` bytes long (a negative `len` counts as 0)
        /// and returns its address.
        pub fn alloc(&mut self, len: i32) -> usize {
            let len = usize::try_from(len).unwrap_or(0);
            self.buf.clear();
            self.buf.resize(len, 0);
            self.buf.as_mut_ptr() as usize
        }

        /// The message `on_message(ptr, len)` names: a copy of the buffer's first `len`
        /// bytes (at most all of them), or `None` when `addr` is not the buffer's address.
        /// The bytes are read through our own reference, never through `addr`.
        pub fn message(&self, addr: usize, len: i32) -> Option<Vec<u8>> {
            if self.buf.as_ptr() as usize != addr {
                return None;
            }
            let n = usize::try_from(len).unwrap_or(0).min(self.buf.len());
            Some(self.buf[..n].to_vec())
        }

        /// Where the host writes (tests play the host).
        #[cfg(test)]
        pub(crate) fn bytes_mut(&mut self) -> &mut [u8] {
            &mut self.buf
        }
    }

    /// One `on_message(addr, len)`: creates the guest with `make` if there is none yet,
    /// delivers the message and returns what the plugin sent, each to be passed to
    /// `fulgur.send`. Problems (a pointer `alloc` did not return, a guest that cannot be
    /// created) are reported as `log` messages.
    pub fn on_message<S, F>(
        inbox: &Inbox,
        guest: &mut Option<WasmGuest>,
        addr: usize,
        len: i32,
        make: F,
    ) -> Vec<Vec<u8>>
    where
        S: Send + Sync + 'static,
        F: FnOnce() -> (Builder<S>, S),
    {
        let Some(message) = inbox.message(addr, len) else {
            return vec![log(
                Level::Warn,
                "ignoring a message outside the buffer alloc returned",
            )];
        };
        if guest.is_none() {
            let (builder, state) = make();
            match WasmGuest::new(builder, state) {
                Ok(g) => *guest = Some(g),
                Err(e) => return vec![log(Level::Error, &format!("cannot start: {e}"))],
            }
        }
        match guest.as_mut() {
            Some(g) => g.deliver(&message),
            None => Vec::new(),
        }
    }

    fn log(level: Level, message: &str) -> Vec<u8> {
        let n = json!({"jsonrpc": "2.0", "method": "log",
            "params": {"level": level.as_str(), "message": message}});
        serde_json::to_vec(&n).unwrap_or_default()
    }
}

/// The wasm32-only glue behind [`wasm_plugin!`](crate::wasm_plugin): the thread-locals
/// holding the [`abi::Inbox`] and the guest, and the `fulgur.send` import.
#[cfg(target_arch = "wasm32")]
#[doc(hidden)]
pub mod glue {
    use std::cell::RefCell;

    use super::WasmGuest;
    use super::abi::{self, Inbox};
    use crate::builder::Builder;

    // The workspace denies unsafe code; an import can only be declared this way.
    #[allow(unsafe_code)]
    #[link(wasm_import_module = "fulgur")]
    unsafe extern "C" {
        fn send(ptr: i32, len: i32);
    }

    thread_local! {
        static INBOX: RefCell<Inbox> = RefCell::new(Inbox::default());
        static GUEST: RefCell<Option<WasmGuest>> = const { RefCell::new(None) };
    }

    /// The buffer the host writes the next message into.
    pub fn alloc(len: i32) -> i32 {
        // wasm32: addresses are 32-bit, so the address fits (as bits) in an i32.
        INBOX.with_borrow_mut(|b| b.alloc(len) as u32 as i32)
    }

    /// One message from the host: `len` bytes at `ptr`, which is the inbox buffer.
    pub fn on_message<S, F>(ptr: i32, len: i32, make: F)
    where
        S: Send + Sync + 'static,
        F: FnOnce() -> (Builder<S>, S),
    {
        let addr = ptr as u32 as usize;
        let out = INBOX.with_borrow(|inbox| {
            GUEST.with_borrow_mut(|g| abi::on_message(inbox, g, addr, len, make))
        });
        for m in out {
            let len = i32::try_from(m.len()).unwrap_or(i32::MAX);
            #[allow(unsafe_code)]
            // SAFETY: `send` is the host's import: it copies `len` bytes at `ptr` out of
            // our memory before returning and keeps no reference; `m` is alive and at
            // least `len` bytes long for the whole call.
            unsafe {
                send(m.as_ptr() as usize as i32, len)
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use serde::Deserialize;

    use super::WasmGuest;
    use super::abi::{self, Inbox};
    use crate::{Builder, CallError, Hook, HookSpec, Plugin, RpcError, RpcMethod};

    fn parse(out: &[Vec<u8>]) -> Vec<Value> {
        out.iter()
            .map(|m| serde_json::from_slice(m).unwrap_or_else(|e| panic!("{e}")))
            .collect()
    }

    fn msg(v: Value) -> Vec<u8> {
        serde_json::to_vec(&v).unwrap_or_else(|e| panic!("{e}"))
    }

    fn response(out: &[Value], id: &str) -> Value {
        out.iter()
            .find(|m| m["id"] == id && m.get("method").is_none())
            .cloned()
            .unwrap_or_else(|| panic!("no response {id} in {out:?}"))
    }

    async fn double(_: Plugin<u64>, p: Value) -> Result<Value, RpcError> {
        let n = p["n"].as_u64().unwrap_or(0);
        Ok(json!({"n": n * 2}))
    }

    async fn gate(p: Plugin<u64>, v: Value) -> Result<Value, RpcError> {
        let amount = v["htlc"]["amount_msat"].as_u64().unwrap_or(0);
        Ok(if amount < *p.state() {
            json!({"result": "fail", "failure_message": "1007"})
        } else {
            json!({"result": "continue"})
        })
    }

    #[test]
    fn one_builder_served_through_deliveries() {
        let builder = Builder::<u64>::new()
            .rpcmethod(RpcMethod::new("double", double).usage("n"))
            .hook(HookSpec::new(Hook::HtlcAccepted, gate));
        let mut g = WasmGuest::new(builder, 1000).unwrap_or_else(|e| panic!("{e}"));
        let out = parse(&g.deliver(&msg(
            json!({"jsonrpc": "2.0", "id": "m", "method": "getmanifest", "params": {}}),
        )));
        let manifest = response(&out, "m");
        assert_eq!(manifest["result"]["rpcmethods"][0]["name"], "double");
        assert!(
            manifest["result"]["hooks"]
                .to_string()
                .contains("htlc_accepted"),
            "{manifest}"
        );
        let init = json!({"jsonrpc": "2.0", "id": "i", "method": "init", "params": {
            "options": {}, "configuration": {"lightning-dir": "/nonexistent", "rpc-file": "lightning-rpc",
            "startup": true, "network": "regtest",
            "feature_set": {"init": "", "node": "", "channel": "", "invoice": ""}}}});
        let out = parse(&g.deliver(&msg(init)));
        assert_eq!(response(&out, "i")["result"], json!({}));
        let out = parse(&g.deliver(&msg(
            json!({"jsonrpc": "2.0", "id": "7", "method": "double", "params": {"n": 21}}),
        )));
        assert_eq!(out.len(), 1, "{out:?}");
        assert_eq!(out[0]["id"], "7");
        assert_eq!(out[0]["result"], json!({"n": 42}));
        let hook = |id: &str, amount: u64| {
            msg(
                json!({"jsonrpc": "2.0", "id": id, "method": "htlc_accepted",
                "params": {"htlc": {"amount_msat": amount}, "onion": {}}}),
            )
        };
        let out = parse(&g.deliver(&hook("h1", 10)));
        assert_eq!(response(&out, "h1")["result"]["result"], "fail");
        assert_eq!(response(&out, "h1")["result"]["failure_message"], "1007");
        let out = parse(&g.deliver(&hook("h2", 5000)));
        assert_eq!(response(&out, "h2")["result"]["result"], "continue");
        // Garbage is reported in the log, not fatal.
        let out = parse(&g.deliver(b"not json"));
        assert!(out.iter().any(|m| m["method"] == "log"), "{out:?}");
        let out = parse(&g.deliver(&msg(
            json!({"jsonrpc": "2.0", "id": "8", "method": "double", "params": {"n": 1}}),
        )));
        assert_eq!(response(&out, "8")["result"], json!({"n": 2}));
        let _ = g.close();
    }

    const INIT: &str = r#"{"jsonrpc": "2.0", "id": "i", "method": "init", "params": {
        "options": {}, "configuration": {"lightning-dir": "/nonexistent", "rpc-file": "lightning-rpc",
        "startup": true, "network": "regtest",
        "feature_set": {"init": "", "node": "", "channel": "", "invoice": ""}}}}"#;

    /// A guest named `guest` past its handshake.
    fn started(builder: Builder<u64>) -> WasmGuest {
        let mut g = WasmGuest::new(builder.name("guest"), 1000).unwrap_or_else(|e| panic!("{e}"));
        let out = parse(&g.deliver(&msg(
            json!({"jsonrpc": "2.0", "id": "m", "method": "getmanifest", "params": {}}),
        )));
        assert!(response(&out, "m").get("result").is_some(), "{out:?}");
        let out = parse(&g.deliver(INIT.as_bytes()));
        assert_eq!(response(&out, "i")["result"], json!({}));
        g
    }

    fn call(id: &str, method: &str) -> Vec<u8> {
        msg(json!({"jsonrpc": "2.0", "id": id, "method": method, "params": {}}))
    }

    /// The id of the one request for `method` the guest sent to the node.
    fn request_to_node(out: &[Value], method: &str) -> Value {
        let reqs: Vec<&Value> = out
            .iter()
            .filter(|m| m["method"] == method && m.get("id").is_some())
            .collect();
        assert_eq!(reqs.len(), 1, "one {method} request expected in {out:?}");
        assert_eq!(reqs[0]["jsonrpc"], "2.0");
        let id = reqs[0]["id"].clone();
        let prefix = format!("guest:{method}#");
        assert!(
            id.as_str().is_some_and(|s| s.starts_with(&prefix)),
            "id {id} should start with {prefix}"
        );
        id
    }

    /// Calls the guest's `method` as `id`: the id of the request for `asked` the call makes
    /// to the node.
    fn call_asking(g: &mut WasmGuest, id: &str, method: &str, asked: &str) -> Value {
        request_to_node(&parse(&g.deliver(&call(id, method))), asked)
    }

    fn answer(id: &Value, result: Value) -> Vec<u8> {
        msg(json!({"jsonrpc": "2.0", "id": id, "result": result}))
    }

    fn no_response(out: &[Value], id: &str) {
        assert!(
            !out.iter()
                .any(|m| m["id"] == id && m.get("method").is_none()),
            "{id} answered too early: {out:?}"
        );
    }

    /// Written as for a process plugin: the call goes wherever `rpc()` sends it.
    async fn alias(p: Plugin<u64>, _: Value) -> Result<Value, RpcError> {
        let info = p.rpc().call("getinfo", json!({})).await?;
        Ok(json!({"alias": info["alias"], "blockheight": info["blockheight"]}))
    }

    #[derive(Deserialize)]
    struct Peers {
        peers: Vec<Value>,
    }

    async fn peer_count(p: Plugin<u64>, _: Value) -> Result<Value, RpcError> {
        let peers: Peers = p.rpc().call_typed("listpeers", &json!({})).await?;
        Ok(json!({"count": peers.peers.len()}))
    }

    async fn probe(p: Plugin<u64>, _: Value) -> Result<Value, RpcError> {
        Ok(match p.rpc().call("listfunds", json!({})).await {
            Err(CallError::Rpc(e)) => {
                json!({"variant": "rpc", "code": e.code, "message": e.message})
            }
            Err(other) => json!({"variant": format!("{other:?}")}),
            Ok(v) => json!({"variant": "ok", "result": v}),
        })
    }

    #[test]
    fn guest_rpc_call_goes_to_the_host_and_its_response_completes_the_method() {
        let mut g = started(
            Builder::new()
                .rpcmethod(RpcMethod::new("alias", alias))
                .rpcmethod(RpcMethod::new("peercount", peer_count)),
        );
        let out = parse(&g.deliver(&call("c1", "alias")));
        let id = request_to_node(&out, "getinfo");
        no_response(&out, "c1");
        let info = json!({"id": "02aa", "alias": "ALICE", "blockheight": 110});
        let out = parse(&g.deliver(&answer(&id, info)));
        assert_eq!(
            response(&out, "c1")["result"],
            json!({"alias": "ALICE", "blockheight": 110})
        );
        // The typed call, and a fresh id for the next request.
        let id2 = call_asking(&mut g, "c2", "peercount", "listpeers");
        assert_ne!(id2, id);
        let out = parse(&g.deliver(&answer(&id2, json!({"peers": [{}, {}, {}]}))));
        assert_eq!(response(&out, "c2")["result"], json!({"count": 3}));
        let _ = g.close();
    }

    #[test]
    fn guest_rpc_error_response_is_call_error_rpc_with_the_nodes_code() {
        let mut g = started(
            Builder::new()
                .rpcmethod(RpcMethod::new("probe", probe))
                .rpcmethod(RpcMethod::new("alias", alias)),
        );
        let denied = json!({"code": -32600, "message": "listfunds: not allowed (not in its allow-rpc list)"});
        let id = call_asking(&mut g, "p", "probe", "listfunds");
        let out = parse(&g.deliver(&msg(json!({"jsonrpc": "2.0", "id": id, "error": denied}))));
        assert_eq!(
            response(&out, "p")["result"],
            json!({"variant": "rpc", "code": -32600, "message": denied["message"]})
        );
        // Passed on with `?`, the node's error reaches the method's caller unchanged.
        let id = call_asking(&mut g, "a", "alias", "getinfo");
        let out = parse(&g.deliver(&msg(
            json!({"jsonrpc": "2.0", "id": id, "error": {"code": 210, "message": "busy"}}),
        )));
        let err = &response(&out, "a")["error"];
        assert_eq!(
            (err["code"].as_i64(), err["message"].as_str()),
            (Some(210), Some("busy"))
        );
        let _ = g.close();
    }

    #[test]
    fn guest_ignores_a_response_with_an_unknown_id() {
        let mut g = started(Builder::new().rpcmethod(RpcMethod::new("alias", alias)));
        let id = call_asking(&mut g, "c", "alias", "getinfo");
        for stray in [json!("guest:getinfo#999"), json!(7)] {
            let out = parse(&g.deliver(&answer(&stray, json!({"alias": "WRONG"}))));
            no_response(&out, "c");
            assert!(
                out.iter().any(|m| m["method"] == "log"
                    && m["params"]["message"]
                        .as_str()
                        .is_some_and(|t| t.contains("no call is waiting"))),
                "{out:?}"
            );
        }
        // The waiting call is still served by its own answer.
        let out = parse(&g.deliver(&answer(&id, json!({"alias": "RIGHT"}))));
        assert_eq!(response(&out, "c")["result"]["alias"], "RIGHT");
        let _ = g.close();
    }

    /// Waits on the host's timer, then decides from the node's channels.
    async fn slow_gate(p: Plugin<u64>, _: Value) -> Result<Value, CallError> {
        p.rpc().call("wasm_timer", json!({"ms": 10})).await?;
        let chans = p.rpc().call("listpeerchannels", json!({})).await?;
        let n = chans["channels"].as_array().map_or(0, Vec::len);
        Ok(if n > 0 {
            json!({"result": "continue"})
        } else {
            json!({"result": "fail", "failure_message": "2002"})
        })
    }

    #[test]
    fn guest_hook_awaits_rpc_calls_across_deliveries() {
        let mut g = started(Builder::new().hook(HookSpec::new(Hook::HtlcAccepted, slow_gate)));
        let hook = |id: &str| {
            msg(
                json!({"jsonrpc": "2.0", "id": id, "method": "htlc_accepted",
                "params": {"htlc": {"amount_msat": 1}, "onion": {}}}),
            )
        };
        let out = parse(&g.deliver(&hook("h1")));
        let timer = request_to_node(&out, "wasm_timer");
        no_response(&out, "h1");
        let out = parse(&g.deliver(&answer(&timer, json!({}))));
        let chans = request_to_node(&out, "listpeerchannels");
        no_response(&out, "h1");
        let out = parse(&g.deliver(&answer(&chans, json!({"channels": [{"peer_id": "02bb"}]}))));
        assert_eq!(
            response(&out, "h1")["result"],
            json!({"result": "continue"})
        );

        // A second hook held meanwhile decides from its own answers.
        let out = parse(&g.deliver(&hook("h2")));
        let timer = request_to_node(&out, "wasm_timer");
        let out = parse(&g.deliver(&answer(&timer, json!({}))));
        let chans = request_to_node(&out, "listpeerchannels");
        let out = parse(&g.deliver(&answer(&chans, json!({"channels": []}))));
        assert_eq!(response(&out, "h2")["result"]["result"], "fail");
        let _ = g.close();
    }

    #[test]
    fn guest_concurrent_rpc_calls_are_answered_by_id_in_any_order() {
        let mut g = started(Builder::new().rpcmethod(RpcMethod::new("alias", alias)));
        let idx = call_asking(&mut g, "x", "alias", "getinfo");
        let idy = call_asking(&mut g, "y", "alias", "getinfo");
        assert_ne!(idx, idy);
        let out = parse(&g.deliver(&answer(&idy, json!({"alias": "Y"}))));
        assert_eq!(response(&out, "y")["result"]["alias"], "Y");
        no_response(&out, "x");
        let out = parse(&g.deliver(&answer(&idx, json!({"alias": "X"}))));
        assert_eq!(response(&out, "x")["result"]["alias"], "X");
        let _ = g.close();
    }

    async fn background(p: Plugin<u64>, _: Value) -> Result<Value, RpcError> {
        tokio::spawn(async move {
            match p.rpc().call("getinfo", json!({})).await {
                Err(CallError::Closed) => p.info("background call: closed"),
                other => p.info(format!("background call: {other:?}")),
            }
        });
        Ok(json!({}))
    }

    #[test]
    fn closing_the_guest_ends_waiting_rpc_calls_with_closed() {
        let mut g = started(Builder::new().rpcmethod(RpcMethod::new("bg", background)));
        let out = parse(&g.deliver(&call("b", "bg")));
        assert_eq!(response(&out, "b")["result"], json!({}));
        let _ = request_to_node(&out, "getinfo");
        assert!(!out.iter().any(|m| m["method"] == "log"), "{out:?}");
        let out = parse(&g.close());
        let logs: Vec<&str> = out
            .iter()
            .filter(|m| m["method"] == "log")
            .filter_map(|m| m["params"]["message"].as_str())
            .collect();
        assert_eq!(logs, ["background call: closed"], "{out:?}");
    }

    #[test]
    fn abi_inbox_returns_only_what_was_written_to_its_buffer() {
        let mut inbox = Inbox::default();
        let addr = inbox.alloc(5);
        inbox.bytes_mut().copy_from_slice(b"hello");
        assert_eq!(inbox.message(addr, 5).as_deref(), Some(&b"hello"[..]));
        assert_eq!(inbox.message(addr, 3).as_deref(), Some(&b"hel"[..]));
        // Never past the buffer, never a negative length, never another address.
        assert_eq!(inbox.message(addr, 99).as_deref(), Some(&b"hello"[..]));
        assert_eq!(inbox.message(addr, -1).as_deref(), Some(&b""[..]));
        assert_eq!(inbox.message(addr.wrapping_add(1), 4), None);
        let addr2 = inbox.alloc(-7);
        assert_eq!(inbox.message(addr2, 4).as_deref(), Some(&b""[..]));
    }

    #[test]
    fn abi_on_message_makes_the_guest_once_and_delivers() {
        let mut inbox = Inbox::default();
        let mut guest = None;
        let mut made = 0;
        let send = |inbox: &mut Inbox, guest: &mut Option<WasmGuest>, m: &[u8], made: &mut u32| {
            let len = i32::try_from(m.len()).unwrap_or(i32::MAX);
            let addr = inbox.alloc(len);
            inbox.bytes_mut().copy_from_slice(m);
            parse(&abi::on_message(inbox, guest, addr, len, || {
                *made += 1;
                let b = Builder::<u64>::new()
                    .name("guest")
                    .rpcmethod(RpcMethod::new("double", double));
                (b, 1)
            }))
        };
        let out = send(&mut inbox, &mut guest, &call("m", "getmanifest"), &mut made);
        assert_eq!(
            response(&out, "m")["result"]["rpcmethods"][0]["name"],
            "double"
        );
        let out = send(&mut inbox, &mut guest, INIT.as_bytes(), &mut made);
        assert_eq!(response(&out, "i")["result"], json!({}));
        let m = msg(json!({"jsonrpc": "2.0", "id": "d", "method": "double", "params": {"n": 4}}));
        let out = send(&mut inbox, &mut guest, &m, &mut made);
        assert_eq!(response(&out, "d")["result"], json!({"n": 8}));
        assert_eq!(made, 1);
        // A pointer alloc did not return: a log line, the guest untouched.
        let out = parse(&abi::on_message(
            &inbox,
            &mut guest,
            1,
            4,
            || -> (Builder<u64>, u64) { panic!("must not make a second guest") },
        ));
        assert_eq!(out.len(), 1, "{out:?}");
        assert_eq!(out[0]["method"], "log");
        assert_eq!(out[0]["params"]["level"], "unusual");
    }
}
