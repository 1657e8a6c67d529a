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
//! On `wasm32` the [`wasm_plugin!`](crate::wasm_plugin) macro adds the exports (`alloc`,
//! `on_message`) and calls the host's `fulgur.send` import with each message.

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
        let transport = Transport::from_channels(in_rx, out_tx.clone());
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

    /// Ends the plugin's input (as a closed stdin does) and lets it finish.
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
        #[unsafe(no_mangle)]
        pub extern "C" fn alloc(len: i32) -> i32 {
            $crate::wasm::glue::alloc(len)
        }

        #[unsafe(no_mangle)]
        pub extern "C" fn on_message(ptr: i32, len: i32) {
            $crate::wasm::glue::on_message(ptr, len, || $make)
        }
    };
}

/// The wasm32-only glue behind [`wasm_plugin!`](crate::wasm_plugin): the inbox buffer, the
/// one guest, and the `fulgur.send` import.
#[cfg(target_arch = "wasm32")]
#[doc(hidden)]
pub mod glue {
    use std::cell::RefCell;

    use super::WasmGuest;
    use crate::builder::Builder;

    #[link(wasm_import_module = "fulgur")]
    unsafe extern "C" {
        fn send(ptr: i32, len: i32);
    }

    thread_local! {
        static INBOX: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
        static GUEST: RefCell<Option<WasmGuest>> = const { RefCell::new(None) };
    }

    /// The buffer the host writes the next message into (reused; grown when needed).
    pub fn alloc(len: i32) -> i32 {
        let len = usize::try_from(len).unwrap_or(0);
        INBOX.with_borrow_mut(|b| {
            b.clear();
            b.resize(len, 0);
            // wasm32: pointers are 32-bit, so the address fits in an i32.
            b.as_mut_ptr() as usize as i32
        })
    }

    /// One message from the host: `len` bytes at `ptr`, which is the inbox buffer.
    pub fn on_message<S, F>(ptr: i32, len: i32, make: F)
    where
        S: Send + Sync + 'static,
        F: FnOnce() -> (Builder<S>, S),
    {
        // The host wrote the message into the buffer `alloc` returned; read it from there
        // (by our own reference, not by the raw pointer).
        let message = INBOX.with_borrow(|b| {
            let n = usize::try_from(len).unwrap_or(0).min(b.len());
            if b.as_ptr() as usize as i32 == ptr {
                b[..n].to_vec()
            } else {
                Vec::new()
            }
        });
        let out = GUEST.with_borrow_mut(|g| {
            if g.is_none() {
                let (builder, state) = make();
                *g = WasmGuest::new(builder, state).ok();
            }
            g.as_mut().map(|g| g.deliver(&message)).unwrap_or_default()
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

    use super::WasmGuest;
    use crate::{Builder, Hook, HookSpec, Plugin, RpcError, RpcMethod};

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
}
