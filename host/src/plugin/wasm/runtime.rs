//! The engine side of WASM plugins (wasmtime): compiling a module, the imports a guest
//! gets, and the actor thread that owns one instance and delivers the plugin's frames
//! into it one at a time. The ABI is in docs/WASM.md.
//!
//! Fast path: a request (hook call, method call) to an idle instance with nothing queued
//! before it is delivered on the caller's own thread ([`Mailbox`]), so its answer is
//! ready when the caller awaits it: no hand-off to the actor thread and back. A guest
//! whose calls are not cheap (more than [`INLINE_MAX_FUEL`] in one call) is moved to its
//! actor thread for good, so that it never holds up the node's async workers.
//!
//! Failure policy: a trap, a budget overrun (fuel, memory) or a message that is not
//! JSON-RPC kills the instance only. Calls waiting for it end as they would if a process
//! plugin died ([`crate::plugin::Gone`]: a hook chain asks the next plugin, a payment only
//! a plugin can settle stays held for the restarted instance), a fresh instance is started and replayed the original
//! `getmanifest` and `init`, and after [`Sandbox::max_failures`] failures within
//! [`Sandbox::failure_window`] the plugin is disabled (killed and unregistered).

use std::collections::VecDeque;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicIsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use fulgur_protocol::codec::encode_frame;
use fulgur_protocol::hooks::Hook;
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot, watch};
use wasmtime::{
    Caller, Config, Engine, Extern, InstancePre, Linker, Memory, Module, Store, StoreLimits,
    StoreLimitsBuilder, Trap, TypedFunc,
};

use super::{MAX_TIMER, Sandbox, TIMER_METHOD, sandbox_for};
use crate::log::SourceLog;
use crate::plugin::PluginHost;
use crate::plugin::process::{InlineDelivery, Plugin, State, Wiring};

/// Fuel one call may use and still be delivered on the caller's thread next time (about a
/// millisecond of guest code).
const INLINE_MAX_FUEL: u64 = 2_000_000;

/// Most bytes a guest may send during one call (all messages together).
const MAX_OUTPUT_PER_CALL: usize = 64 << 20;
/// Most messages a guest may send during one call.
const MAX_MESSAGES_PER_CALL: usize = 10_000;
/// Longest line a guest may write to stdout/stderr before it is cut.
const MAX_LOG_LINE: usize = 8192;

/// The import module of the plugin ABI.
const ABI_MODULE: &str = "fulgur";
/// The WASI preview 1 import module (only a harmless subset is provided).
const WASI: &str = "wasi_snapshot_preview1";

// WASI errno values.
const ERRNO_SUCCESS: i32 = 0;
const ERRNO_BADF: i32 = 8;
const ERRNO_FAULT: i32 = 21;
const ERRNO_INVAL: i32 = 28;
const ERRNO_NOSYS: i32 = 52;

/// One engine for every WASM plugin: Cranelift, fuel metering, default stack limit.
fn engine() -> Result<&'static Engine, String> {
    static ENGINE: OnceLock<Result<Engine, String>> = OnceLock::new();
    ENGINE
        .get_or_init(|| {
            let mut c = Config::new();
            c.consume_fuel(true);
            Engine::new(&c).map_err(|e| format!("cannot start the WASM engine: {e}"))
        })
        .as_ref()
        .map_err(Clone::clone)
}

/// What a store carries: limits and the messages the guest sent during the current call.
struct Guest {
    limits: StoreLimits,
    out: Vec<Vec<u8>>,
    out_bytes: usize,
    log: SourceLog,
    line: Vec<u8>,
}

impl Guest {
    /// Bytes written to stdout or stderr: one log line per `\n`.
    fn write_log(&mut self, bytes: &[u8]) {
        for &b in bytes {
            if b == b'\n' {
                self.flush_line();
            } else if self.line.len() < MAX_LOG_LINE {
                self.line.push(b);
            }
        }
    }

    fn flush_line(&mut self) {
        if !self.line.is_empty() {
            let line = String::from_utf8_lossy(&self.line).into_owned();
            self.log.info(&line);
            self.line.clear();
        }
    }
}

fn memory_of(caller: &mut Caller<'_, Guest>) -> Option<Memory> {
    match caller.get_export("memory") {
        Some(Extern::Memory(m)) => Some(m),
        _ => None,
    }
}

fn slice(data: &[u8], ptr: i32, len: i32) -> Option<&[u8]> {
    let start = usize::try_from(ptr).ok()?;
    let len = usize::try_from(len).ok()?;
    data.get(start..start.checked_add(len)?)
}

fn write_u32(data: &mut [u8], ptr: i32, v: u32) -> bool {
    write_bytes(data, ptr, &v.to_le_bytes())
}

fn write_bytes(data: &mut [u8], ptr: i32, v: &[u8]) -> bool {
    let Ok(start) = usize::try_from(ptr) else {
        return false;
    };
    match start
        .checked_add(v.len())
        .and_then(|end| data.get_mut(start..end))
    {
        Some(dst) => {
            dst.copy_from_slice(v);
            true
        }
        None => false,
    }
}

/// The imports: `fulgur.send`, `env.abort` (AssemblyScript) and a harmless WASI subset;
/// any other import the module declares traps if called.
fn linker(engine: &Engine, module: &Module) -> Result<Linker<Guest>, String> {
    let mut l: Linker<Guest> = Linker::new(engine);
    let e = |e: wasmtime::Error| format!("linking: {e}");
    l.func_wrap(
        ABI_MODULE,
        "send",
        |mut caller: Caller<'_, Guest>, ptr: i32, len: i32| -> wasmtime::Result<()> {
            let Some(mem) = memory_of(&mut caller) else {
                wasmtime::bail!("send: the module exports no memory");
            };
            let Some(msg) = slice(mem.data(&caller), ptr, len).map(<[u8]>::to_vec) else {
                wasmtime::bail!("send: ({ptr}, {len}) is outside the guest's memory");
            };
            let g = caller.data_mut();
            g.out_bytes = g.out_bytes.saturating_add(msg.len());
            if g.out_bytes > MAX_OUTPUT_PER_CALL || g.out.len() >= MAX_MESSAGES_PER_CALL {
                wasmtime::bail!("send: more output in one call than allowed");
            }
            g.out.push(msg);
            Ok(())
        },
    )
    .map_err(e)?;
    l.func_wrap(
        "env",
        "abort",
        |mut caller: Caller<'_, Guest>,
         msg: i32,
         file: i32,
         line: i32,
         col: i32|
         -> wasmtime::Result<()> {
            let text = memory_of(&mut caller)
                .map(|m| {
                    let data = m.data(&caller);
                    (as_string(data, msg), as_string(data, file))
                })
                .unwrap_or_default();
            wasmtime::bail!("abort: {} at {}:{line}:{col}", text.0, text.1)
        },
    )
    .map_err(e)?;
    l.func_wrap(
        WASI,
        "fd_write",
        |mut caller: Caller<'_, Guest>, fd: i32, iovs: i32, n: i32, written: i32| -> i32 {
            if fd != 1 && fd != 2 {
                return ERRNO_BADF;
            }
            let Some(mem) = memory_of(&mut caller) else {
                return ERRNO_FAULT;
            };
            let mut bytes = vec![];
            {
                let data = mem.data(&caller);
                for i in 0..n.max(0) {
                    let Some(iov) = iovs
                        .checked_add(i.saturating_mul(8))
                        .and_then(|p| slice(data, p, 8))
                    else {
                        return ERRNO_FAULT;
                    };
                    let ptr = i32::from_le_bytes([iov[0], iov[1], iov[2], iov[3]]);
                    let len = i32::from_le_bytes([iov[4], iov[5], iov[6], iov[7]]);
                    match slice(data, ptr, len) {
                        Some(b) => bytes.extend_from_slice(b),
                        None => return ERRNO_FAULT,
                    }
                }
            }
            let total = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
            caller.data_mut().write_log(&bytes);
            if !write_u32(mem.data_mut(&mut caller), written, total) {
                return ERRNO_FAULT;
            }
            ERRNO_SUCCESS
        },
    )
    .map_err(e)?;
    l.func_wrap(
        WASI,
        "proc_exit",
        |_: Caller<'_, Guest>, code: i32| -> wasmtime::Result<()> {
            wasmtime::bail!("proc_exit({code})")
        },
    )
    .map_err(e)?;
    l.func_wrap(
        WASI,
        "random_get",
        |mut caller: Caller<'_, Guest>, buf: i32, len: i32| -> i32 {
            let Some(mem) = memory_of(&mut caller) else {
                return ERRNO_FAULT;
            };
            let Ok(n) = usize::try_from(len) else {
                return ERRNO_INVAL;
            };
            let mut bytes = vec![0u8; n];
            if random_bytes(&mut bytes).is_err() {
                return ERRNO_NOSYS;
            }
            if write_bytes(mem.data_mut(&mut caller), buf, &bytes) {
                ERRNO_SUCCESS
            } else {
                ERRNO_FAULT
            }
        },
    )
    .map_err(e)?;
    l.func_wrap(
        WASI,
        "clock_time_get",
        |mut caller: Caller<'_, Guest>, id: i32, _precision: i64, out: i32| -> i32 {
            let nanos = match id {
                0 => std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos())
                    .unwrap_or(0),
                1 => monotonic_start().elapsed().as_nanos(),
                _ => return ERRNO_INVAL,
            };
            let Some(mem) = memory_of(&mut caller) else {
                return ERRNO_FAULT;
            };
            let v = u64::try_from(nanos).unwrap_or(u64::MAX);
            if write_bytes(mem.data_mut(&mut caller), out, &v.to_le_bytes()) {
                ERRNO_SUCCESS
            } else {
                ERRNO_FAULT
            }
        },
    )
    .map_err(e)?;
    // No environment and no arguments.
    for name in ["environ_sizes_get", "args_sizes_get"] {
        l.func_wrap(
            WASI,
            name,
            |mut caller: Caller<'_, Guest>, count: i32, size: i32| -> i32 {
                let Some(mem) = memory_of(&mut caller) else {
                    return ERRNO_FAULT;
                };
                let data = mem.data_mut(&mut caller);
                if write_u32(data, count, 0) && write_u32(data, size, 0) {
                    ERRNO_SUCCESS
                } else {
                    ERRNO_FAULT
                }
            },
        )
        .map_err(e)?;
    }
    for name in ["environ_get", "args_get"] {
        l.func_wrap(WASI, name, |_: Caller<'_, Guest>, _: i32, _: i32| -> i32 {
            ERRNO_SUCCESS
        })
        .map_err(e)?;
    }
    // No files: no preopened directories, every descriptor is bad.
    l.func_wrap(WASI, "fd_close", |_: Caller<'_, Guest>, _: i32| -> i32 {
        ERRNO_BADF
    })
    .map_err(e)?;
    l.func_wrap(
        WASI,
        "fd_fdstat_get",
        |_: Caller<'_, Guest>, _: i32, _: i32| -> i32 { ERRNO_BADF },
    )
    .map_err(e)?;
    l.func_wrap(
        WASI,
        "fd_prestat_get",
        |_: Caller<'_, Guest>, _: i32, _: i32| -> i32 { ERRNO_BADF },
    )
    .map_err(e)?;
    l.func_wrap(
        WASI,
        "fd_seek",
        |_: Caller<'_, Guest>, _: i32, _: i64, _: i32, _: i32| -> i32 { ERRNO_BADF },
    )
    .map_err(e)?;
    l.func_wrap(
        WASI,
        "fd_read",
        |_: Caller<'_, Guest>, _: i32, _: i32, _: i32, _: i32| -> i32 { ERRNO_BADF },
    )
    .map_err(e)?;
    l.func_wrap(WASI, "sched_yield", |_: Caller<'_, Guest>| -> i32 {
        ERRNO_SUCCESS
    })
    .map_err(e)?;
    l.define_unknown_imports_as_traps(module).map_err(e)?;
    Ok(l)
}

/// An AssemblyScript string: UTF-16LE, its byte length in the 4 bytes before it.
fn as_string(data: &[u8], ptr: i32) -> String {
    let Some(len) = ptr.checked_sub(4).and_then(|p| slice(data, p, 4)) else {
        return String::new();
    };
    let len = u32::from_le_bytes([len[0], len[1], len[2], len[3]]).min(4096);
    let Some(bytes) = i32::try_from(len).ok().and_then(|l| slice(data, ptr, l)) else {
        return String::new();
    };
    let units: Vec<u16> = bytes
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .collect();
    String::from_utf16_lossy(&units)
}

fn random_bytes(buf: &mut [u8]) -> std::io::Result<()> {
    use std::io::Read;
    std::fs::File::open("/dev/urandom")?.read_exact(buf)
}

fn monotonic_start() -> Instant {
    static START: OnceLock<Instant> = OnceLock::new();
    *START.get_or_init(Instant::now)
}

/// A compiled plugin: everything needed to make fresh instances of it.
pub(super) struct Image {
    pre: InstancePre<Guest>,
    sandbox: Arc<Sandbox>,
    log: SourceLog,
}

/// One live instance.
struct Instance {
    store: Store<Guest>,
    memory: Memory,
    alloc: TypedFunc<i32, i32>,
    on_message: TypedFunc<(i32, i32), ()>,
}

/// Why a call into the guest failed, in words for the log (one line: the cause, then
/// wasmtime's backtrace if any).
fn describe(e: &wasmtime::Error, sandbox: &Sandbox) -> String {
    let backtrace = e
        .downcast_ref::<wasmtime::WasmBacktrace>()
        .map(|b| {
            let frames: Vec<String> = b
                .to_string()
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.ends_with("backtrace:"))
                .map(String::from)
                .collect();
            format!(" [{}]", frames.join("; "))
        })
        .unwrap_or_default();
    match e.downcast_ref::<Trap>() {
        Some(Trap::OutOfFuel) => format!(
            "ran out of fuel (budget {} per call): endless loop?",
            sandbox.fuel
        ),
        Some(t) => format!("trapped: {t}{backtrace}"),
        None => format!("failed: {}{backtrace}", e.root_cause()),
    }
}

impl Image {
    fn compile(bytes: &[u8], sandbox: Sandbox, log: SourceLog) -> Result<Image, String> {
        let engine = engine()?;
        let module = Module::new(engine, bytes).map_err(|e| format!("invalid WASM module: {e}"))?;
        let linker = linker(engine, &module)?;
        let pre = linker
            .instantiate_pre(&module)
            .map_err(|e| format!("cannot link the WASM module: {e}"))?;
        Ok(Image {
            pre,
            sandbox: Arc::new(sandbox),
            log,
        })
    }

    fn instantiate(&self) -> Result<Instance, String> {
        let engine = engine()?;
        let limits = StoreLimitsBuilder::new()
            .memory_size(self.sandbox.memory_bytes)
            .instances(1)
            .memories(1)
            .tables(4)
            .table_elements(100_000)
            .trap_on_grow_failure(true)
            .build();
        let mut store = Store::new(
            engine,
            Guest {
                limits,
                out: vec![],
                out_bytes: 0,
                log: self.log.clone(),
                line: vec![],
            },
        );
        store.limiter(|g| &mut g.limits);
        store
            .set_fuel(self.sandbox.fuel)
            .map_err(|e| format!("fuel: {e}"))?;
        let instance = self
            .pre
            .instantiate(&mut store)
            .map_err(|e| format!("cannot instantiate: {}", describe(&e, &self.sandbox)))?;
        let memory = instance
            .get_memory(&mut store, "memory")
            .ok_or("the module exports no memory")?;
        let alloc = instance
            .get_typed_func::<i32, i32>(&mut store, "alloc")
            .map_err(|e| format!("export alloc(i32) -> i32: {e}"))?;
        let on_message = instance
            .get_typed_func::<(i32, i32), ()>(&mut store, "on_message")
            .map_err(|e| format!("export on_message(i32, i32): {e}"))?;
        // A WASI reactor's constructors.
        if let Ok(init) = instance.get_typed_func::<(), ()>(&mut store, "_initialize") {
            init.call(&mut store, ())
                .map_err(|e| format!("_initialize {}", describe(&e, &self.sandbox)))?;
        }
        let mut inst = Instance {
            store,
            memory,
            alloc,
            on_message,
        };
        // Whatever it printed or sent while starting.
        inst.store.data_mut().flush_line();
        inst.store.data_mut().out.clear();
        Ok(inst)
    }
}

impl Instance {
    /// Delivers one message; returns what the guest sent during the call and the fuel it
    /// used.
    fn deliver(&mut self, msg: &[u8], sandbox: &Sandbox) -> Result<(Vec<Vec<u8>>, u64), String> {
        let g = self.store.data_mut();
        g.out.clear();
        g.out_bytes = 0;
        self.store
            .set_fuel(sandbox.fuel)
            .map_err(|e| format!("fuel: {e}"))?;
        let len = i32::try_from(msg.len()).map_err(|_| "message too large for wasm32")?;
        let r = self
            .alloc
            .call(&mut self.store, len)
            .map_err(|e| format!("alloc {}", describe(&e, sandbox)))
            .and_then(|ptr| {
                let at = usize::try_from(ptr).map_err(|_| "alloc returned a negative pointer")?;
                self.memory
                    .write(&mut self.store, at, msg)
                    .map_err(|_| format!("alloc returned {ptr}, outside its memory"))?;
                self.on_message
                    .call(&mut self.store, (ptr, len))
                    .map_err(|e| format!("on_message {}", describe(&e, sandbox)))
            });
        self.store.data_mut().flush_line();
        let out = std::mem::take(&mut self.store.data_mut().out);
        let used = sandbox
            .fuel
            .saturating_sub(self.store.get_fuel().unwrap_or(0));
        r.map(|()| (out, used))
    }
}

/// The id and method of a message the host sends, when it matters to the actor.
#[derive(serde::Deserialize)]
struct Head {
    #[serde(default)]
    id: Option<Value>,
    #[serde(default)]
    method: Option<String>,
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// The instance and what delivering into it needs. Whoever holds the lock delivers: the
/// actor thread for queued frames, a caller's thread on the fast path.
struct Core {
    actor: Actor,
    /// `None` until the actor thread has instantiated the module, and after it gave up.
    inst: Option<Instance>,
}

impl Core {
    /// Delivers one frame, replacing a failed instance (or giving up: `inst` becomes
    /// `None`). Returns the fuel the call used.
    fn deliver(&mut self, frame: Bytes) -> u64 {
        let Some(inst) = self.inst.as_mut() else {
            return 0;
        };
        match self.actor.one(inst, frame) {
            Ok(used) => used,
            Err(reason) => {
                self.inst = match self.actor.failed(&reason) {
                    Next::Go(fresh) => Some(*fresh),
                    Next::Stop => None,
                };
                u64::MAX
            }
        }
    }
}

/// What the plugin and the actor thread share: the instance behind a lock, how many frames
/// wait in the queue, and whether this guest may still run on callers' threads.
pub(in crate::plugin) struct Mailbox {
    core: Mutex<Option<Core>>,
    /// Frames queued for the actor thread and not yet delivered.
    queued: AtomicIsize,
    inline: AtomicBool,
    tx: mpsc::WeakUnboundedSender<Bytes>,
    runtime: tokio::runtime::Handle,
}

impl Mailbox {
    fn deliver_and_watch(&self, core: &mut Core, frame: Bytes) {
        let used = core.deliver(frame);
        if used > INLINE_MAX_FUEL && self.inline.swap(false, Ordering::Relaxed) {
            core.actor.plugin.log.debug(&format!(
                "a call used {} fuel: delivering on the plugin's own thread from now on",
                if used == u64::MAX {
                    "all its".to_string()
                } else {
                    used.to_string()
                }
            ));
        }
    }
}

impl InlineDelivery for Mailbox {
    fn try_deliver(&self, frame: Bytes) -> Result<(), Bytes> {
        if !self.inline.load(Ordering::Relaxed) {
            return Err(frame);
        }
        let Ok(mut guard) = self.core.try_lock() else {
            return Err(frame);
        };
        // Checked under the lock: the actor thread counts a frame down only after
        // delivering it, so nothing queued earlier can still be on its way.
        if self.queued.load(Ordering::SeqCst) != 0 {
            return Err(frame);
        }
        let Some(core) = guard.as_mut().filter(|c| c.inst.is_some()) else {
            return Err(frame);
        };
        if core.actor.plugin.is_dead() {
            return Err(frame);
        }
        let _entered = self.runtime.enter();
        self.deliver_and_watch(core, frame);
        Ok(())
    }

    fn note_queued(&self, delta: isize) {
        self.queued.fetch_add(delta, Ordering::SeqCst);
    }

    fn queue(&self, frame: Bytes) {
        if let Some(tx) = self.tx.upgrade() {
            self.note_queued(1);
            if tx.send(frame).is_err() {
                self.note_queued(-1);
            }
        }
    }
}

/// Compiles the module and starts the instance's actor thread.
pub(in crate::plugin) fn spawn(
    host: &Arc<PluginHost>,
    path: &Path,
    order: u64,
    startup: bool,
    important: bool,
) -> Result<Arc<Plugin>, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("opening pipe: {e}"))?;
    let name = crate::plugin::process::short_name(path);
    let sandbox = sandbox_for(&host.settings.wasm_sandbox, &name);
    let log = host.log.source(format!("plugin-{name}"));
    let image = Image::compile(&bytes, sandbox, log)?;
    let runtime = tokio::runtime::Handle::try_current()
        .map_err(|_| "WASM plugins need the node's runtime".to_string())?;
    let (tx, rx) = mpsc::unbounded_channel::<Bytes>();
    let (exited_tx, exited) = watch::channel(false);
    let (kill_tx, kill_rx) = oneshot::channel::<()>();
    let mailbox = Arc::new(Mailbox {
        core: Mutex::new(None),
        queued: AtomicIsize::new(0),
        inline: AtomicBool::new(true),
        tx: tx.downgrade(),
        runtime: runtime.clone(),
    });
    let sandbox = image.sandbox.clone();
    let plugin = Plugin::assemble(
        host,
        path,
        order,
        startup,
        important,
        Wiring {
            tx,
            exited,
            kill_tx,
            inline: Some(mailbox.clone()),
        },
        Some(sandbox),
    );
    // A kill wakes the actor with an empty frame (it checks `is_dead` first anyway).
    let waker = Arc::downgrade(&mailbox);
    runtime.spawn(async move {
        let _ = kill_rx.await;
        if let Some(m) = waker.upgrade() {
            m.queue(Bytes::new());
        }
    });
    let actor = Actor {
        plugin: plugin.clone(),
        host: Arc::downgrade(host),
        image,
        handshake: vec![],
        failures: VecDeque::new(),
    };
    std::thread::Builder::new()
        .name(format!("wasm-{}", plugin.name))
        .spawn(move || {
            let _entered = runtime.enter();
            run(&mailbox, actor, rx);
            // Drops the instance and the actor's hold on the plugin.
            if let Ok(mut core) = mailbox.core.lock() {
                core.take();
            }
            let _ = exited_tx.send(true);
        })
        .map_err(|e| format!("opening pipe: cannot start a thread: {e}"))?;
    Ok(plugin)
}

/// The actor thread: instantiates the module, then delivers queued frames in order.
fn run(mailbox: &Mailbox, actor: Actor, mut rx: mpsc::UnboundedReceiver<Bytes>) {
    let first = actor.image.instantiate();
    let inst = match first {
        Ok(i) => i,
        Err(reason) => return actor.gone(&reason),
    };
    let plugin = actor.plugin.clone();
    match mailbox.core.lock() {
        Ok(mut core) => {
            *core = Some(Core {
                actor,
                inst: Some(inst),
            })
        }
        Err(_) => return,
    }
    while let Some(frame) = rx.blocking_recv() {
        let stop = frame.is_empty()
            || plugin.is_dead()
            || match mailbox.core.lock() {
                Ok(mut guard) => match guard.as_mut() {
                    Some(core) => {
                        mailbox.deliver_and_watch(core, frame);
                        core.inst.is_none()
                    }
                    None => true,
                },
                Err(_) => true,
            };
        mailbox.note_queued(-1);
        if stop {
            break;
        }
    }
}

/// Owns one plugin's instance; delivers its frames one at a time.
struct Actor {
    plugin: Arc<Plugin>,
    host: Weak<PluginHost>,
    image: Image,
    /// `getmanifest` and `init` as first delivered, replayed into a restarted instance.
    handshake: Vec<Bytes>,
    failures: VecDeque<Instant>,
}

enum Next {
    Go(Box<Instance>),
    Stop,
}

impl Actor {
    /// Delivers one frame and routes what the guest sent; returns the fuel it used. `Err`
    /// means the instance failed.
    fn one(&mut self, inst: &mut Instance, frame: Bytes) -> Result<u64, String> {
        let msg = frame.trim_ascii_end();
        let active = self.plugin.state() == State::Active;
        let watch_hold = !self.image.sandbox.hold && contains(msg, b"\"method\":\"htlc_accepted\"");
        let head = if !active || watch_hold {
            serde_json::from_slice::<Head>(msg).ok()
        } else {
            None
        };
        if !active
            && let Some(Head {
                method: Some(m), ..
            }) = &head
            && (m == "getmanifest" || m == "init")
        {
            self.handshake.push(frame.clone());
        }
        let (out, used) = inst.deliver(msg, &self.image.sandbox)?;
        let hold_id = head
            .filter(|h| watch_hold && h.method.as_deref() == Some(Hook::HtlcAccepted.as_str()))
            .and_then(|h| h.id);
        let mut answered = false;
        for o in out {
            let v: Value = serde_json::from_slice(&o).map_err(|e| {
                format!(
                    "sent a message that is not JSON ({e}): {}",
                    String::from_utf8_lossy(&o[..o.len().min(200)])
                )
            })?;
            if let Some(id) = &hold_id
                && v.get("id") == Some(id)
                && v.get("method").is_none()
            {
                answered = true;
            }
            self.plugin.incoming(&self.host, v)?;
        }
        if let Some(id) = hold_id
            && !answered
        {
            self.plugin.log.unusual(
                "left an htlc_accepted call unanswered without the hold grant (--wasm-sandbox=PLUGIN:hold=true): answering with the safe default",
            );
            let v =
                json!({"jsonrpc": "2.0", "id": id, "result": Hook::HtlcAccepted.safe_default()});
            self.plugin.incoming(&self.host, v)?;
        }
        Ok(used)
    }

    /// The plugin is finished: unregister it.
    fn gone(&self, reason: &str) {
        if let Some(h) = self.host.upgrade() {
            h.plugin_gone(&self.plugin, reason);
        } else {
            self.plugin.mark_dead();
        }
    }

    /// The instance failed: end its callers' calls (as a death), then restart it or give up.
    fn failed(&mut self, reason: &str) -> Next {
        let mut reason = reason.to_string();
        loop {
            self.plugin.log.broken(&format!("WASM instance {reason}"));
            self.plugin.fail_pending();
            if self.plugin.is_dead() {
                return Next::Stop;
            }
            if self.plugin.state() != State::Active {
                self.gone(&reason);
                return Next::Stop;
            }
            let now = Instant::now();
            let window = self.image.sandbox.failure_window;
            self.failures.push_back(now);
            while self
                .failures
                .front()
                .is_some_and(|t| now.duration_since(*t) > window)
            {
                self.failures.pop_front();
            }
            let max = self.image.sandbox.max_failures;
            if self.failures.len() >= usize::try_from(max).unwrap_or(usize::MAX) {
                self.gone(&format!(
                    "disabled after {} failures within {} s (last: {reason})",
                    self.failures.len(),
                    window.as_secs()
                ));
                return Next::Stop;
            }
            match self.restart() {
                Ok(inst) => {
                    self.plugin.log.info(&format!(
                        "WASM instance restarted ({} recent failure(s))",
                        self.failures.len()
                    ));
                    if let Some(h) = self.host.upgrade() {
                        h.note_activation();
                    }
                    return Next::Go(Box::new(inst));
                }
                Err(why) => reason = format!("failed again while restarting: {why}"),
            }
        }
    }

    /// A fresh instance that saw the original handshake (its answers, answered already,
    /// are ignored; anything else it sends is routed as usual).
    fn restart(&mut self) -> Result<Instance, String> {
        let mut inst = self.image.instantiate()?;
        for frame in self.handshake.clone() {
            let (out, _) = inst.deliver(frame.trim_ascii_end(), &self.image.sandbox)?;
            for o in out {
                let v: Value = serde_json::from_slice(&o)
                    .map_err(|e| format!("sent a message that is not JSON ({e})"))?;
                self.plugin.incoming(&self.host, v)?;
            }
        }
        Ok(inst)
    }
}

/// A request from a guest: a timer, or a call to the node's RPC if its sandbox allows it.
/// The answer is queued as a message for a later call.
pub(in crate::plugin) fn guest_request(
    plugin: &Plugin,
    host: &Weak<PluginHost>,
    id: &Value,
    method: &str,
    params: Option<&Value>,
) {
    let Some(mailbox) = plugin.weak_inline() else {
        return;
    };
    let id = id.clone();
    let answer = move |body: Value| {
        let mut v = json!({"jsonrpc": "2.0", "id": id});
        if let (Some(o), Value::Object(b)) = (v.as_object_mut(), body) {
            o.extend(b);
        }
        Bytes::from(encode_frame(&v))
    };
    let deliver = move |frame: Bytes| {
        if let Some(m) = mailbox.upgrade() {
            m.queue(frame);
        }
    };
    let Ok(rt) = tokio::runtime::Handle::try_current() else {
        return deliver(answer(
            json!({"error": {"code": fulgur_protocol::error::codes::LIGHTNINGD, "message": "no runtime"}}),
        ));
    };
    if method == TIMER_METHOD {
        let ms = params
            .and_then(|p| p.get("ms"))
            .and_then(Value::as_u64)
            .map(Duration::from_millis);
        let Some(delay) = ms.filter(|d| *d <= MAX_TIMER) else {
            return deliver(answer(json!({"error": {
                "code": fulgur_protocol::error::codes::INVALID_PARAMS,
                "message": format!("{TIMER_METHOD} needs params.ms, at most {} ms", MAX_TIMER.as_millis()),
            }})));
        };
        let frame = answer(json!({"result": {}}));
        rt.spawn(async move {
            tokio::time::sleep(delay).await;
            deliver(frame);
        });
        return;
    }
    let allowed = plugin.sandbox.as_ref().is_some_and(|s| s.may_call(method));
    if !allowed {
        plugin.log.debug(&format!("RPC call to {method} denied"));
        return deliver(answer(json!({"error": {
            "code": fulgur_protocol::error::codes::INVALID_REQUEST,
            "message": format!("WASM plugin {} may not call {method} (not in its allow-rpc list)", plugin.name),
        }})));
    }
    let inner_id = format!("{}:{method}#{}", plugin.name, plugin.next_call());
    let request = json!({
        "jsonrpc": "2.0",
        "id": inner_id,
        "method": method,
        "params": params.cloned().unwrap_or_else(|| json!({})),
    });
    let host = host.clone();
    let frame_for = answer;
    rt.spawn(async move {
        let Some(rpc) = (match host.upgrade() {
            Some(h) => h.local_rpc().await,
            None => None,
        }) else {
            return;
        };
        let body = rpc.call(request).await;
        deliver(frame_for(body));
    });
}

/// For the timing test: a compiled image of `bytes` with the default sandbox.
#[cfg(test)]
pub(super) fn compile_for_timing(bytes: &[u8], log: &SourceLog) -> Image {
    match Image::compile(bytes, Sandbox::default(), log.clone()) {
        Ok(i) => i,
        Err(e) => panic!("{e}"),
    }
}

/// For the timing test: whether a fresh instance of `image` starts.
#[cfg(test)]
pub(super) fn instantiate_for_timing(image: &Image) -> bool {
    image.instantiate().is_ok()
}
