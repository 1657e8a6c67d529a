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
//! plugin died ([`crate::Gone`]: a hook chain asks the next plugin, a payment only
//! a plugin can settle stays held for the restarted instance), a fresh instance is started and replayed the original
//! `getmanifest` and `init`, and after [`Sandbox::max_failures`] failures within
//! [`Sandbox::failure_window`] the plugin is disabled (killed and unregistered).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicIsize, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use fulgur_protocol::codec::encode_frame;
use fulgur_protocol::hooks::Hook;
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot, watch};
use wasmtime::{
    Caller, Config, Engine, Extern, InstancePre, Linker, Memory, Module, Store, StoreLimits,
    StoreLimitsBuilder, Trap, TypedFunc, UpdateDeadline,
};

use super::{MAX_TIMER, Sandbox, TIMER_METHOD, sandbox_for};
use crate::PluginHost;
use crate::plugin::{Birth, InlineDelivery, Plugin, State, Wiring};
use fulgur_base::log::SourceLog;

/// Fuel one call may use and still be delivered on the caller's thread next time (about a
/// millisecond of guest code).
const INLINE_MAX_FUEL: u64 = 2_000_000;

/// Most bytes a guest may send during one call (all messages together).
const MAX_OUTPUT_PER_CALL: usize = 64 << 20;
/// Most messages a guest may send during one call.
const MAX_MESSAGES_PER_CALL: usize = 10_000;
/// Longest line a guest may write to stdout/stderr before it is cut.
const MAX_LOG_LINE: usize = 8192;
/// Most bytes a guest may write to stdout/stderr during one call; past it `fd_write`
/// writes nothing and returns `ERRNO_NOSPC`.
const MAX_LOG_PER_CALL: usize = 1 << 20;
/// Most iovecs in one `fd_write` (POSIX's usual `IOV_MAX`); more is `ERRNO_INVAL`.
const MAX_IOVS: usize = 1024;
/// Most random bytes a guest may ask for during one call (in any number of `random_get`
/// calls); past it `random_get` returns `ERRNO_INVAL`.
const MAX_RANDOM_PER_CALL: usize = 1 << 20;
/// Fuel charged for every host call, on top of one unit per byte it copies, so that a guest
/// busy in host calls runs out of fuel as one busy in its own code does.
const HOST_CALL_FUEL: u64 = 1_000;
/// Timers one guest may have waiting at once; more are answered with an error.
pub(super) const MAX_TIMERS: usize = 64;
/// Node RPC calls one guest may have in flight at once; more are answered with an error.
pub(super) const MAX_RPC_IN_FLIGHT: usize = 16;
/// How often the engine's epoch advances: how late the wall-clock limit of a call, or a
/// `plugin stop` of a busy guest, may take effect.
const TICK: Duration = Duration::from_millis(10);

/// The import module of the plugin ABI.
const ABI_MODULE: &str = "fulgur";
/// The WASI preview 1 import module (only a harmless subset is provided).
const WASI: &str = "wasi_snapshot_preview1";

// WASI errno values.
const ERRNO_SUCCESS: i32 = 0;
const ERRNO_BADF: i32 = 8;
const ERRNO_FAULT: i32 = 21;
const ERRNO_INVAL: i32 = 28;
const ERRNO_NOSPC: i32 = 51;
const ERRNO_NOSYS: i32 = 52;

/// One engine for every WASM plugin: Cranelift, fuel metering, epoch interruption (the
/// wall-clock limit), default stack limit. Its epoch advances every [`TICK`] on a thread of
/// its own.
fn engine() -> Result<&'static Engine, String> {
    static ENGINE: OnceLock<Result<Engine, String>> = OnceLock::new();
    ENGINE
        .get_or_init(|| {
            let mut c = Config::new();
            c.consume_fuel(true);
            c.epoch_interruption(true);
            let engine =
                Engine::new(&c).map_err(|e| format!("cannot start the WASM engine: {e}"))?;
            let ticking = engine.clone();
            std::thread::Builder::new()
                .name("wasm-epoch".into())
                .spawn(move || {
                    loop {
                        std::thread::sleep(TICK);
                        ticking.increment_epoch();
                    }
                })
                .map_err(|e| format!("cannot start the WASM epoch thread: {e}"))?;
            Ok(engine)
        })
        .as_ref()
        .map_err(Clone::clone)
}

/// What a store carries: limits, the messages the guest sent during the current call and
/// what its host calls used of their budgets.
struct Guest {
    limits: StoreLimits,
    out: Vec<Vec<u8>>,
    out_bytes: usize,
    log: SourceLog,
    line: Vec<u8>,
    /// Bytes written to stdout/stderr during the current call.
    log_bytes: usize,
    /// Random bytes handed out during the current call.
    random_bytes: usize,
    /// When the current call must end (the sandbox's `wall-ms`).
    deadline: Instant,
    wall: Duration,
    /// Set when the plugin is stopped: a busy call ends at the next tick.
    stop: Arc<AtomicBool>,
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

    /// A new call starts: fresh per-call budgets and deadline.
    fn begin_call(&mut self) {
        self.out.clear();
        self.out_bytes = 0;
        self.log_bytes = 0;
        self.random_bytes = 0;
        self.deadline = Instant::now() + self.wall;
    }

    fn flush_line(&mut self) {
        if !self.line.is_empty() {
            let line = String::from_utf8_lossy(&self.line).into_owned();
            self.log.info(&line);
            self.line.clear();
        }
    }
}

/// Charges a host call's cost to the guest's fuel: running out traps as in guest code.
fn charge(caller: &mut Caller<'_, Guest>, units: u64) -> wasmtime::Result<()> {
    let left = caller.get_fuel()?;
    if left < units {
        caller.set_fuel(0)?;
        return Err(Trap::OutOfFuel.into());
    }
    caller.set_fuel(left - units)
}

fn bytes_fuel(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

/// The epoch check of a running call: past its deadline, or its plugin stopped, it ends.
fn on_tick(g: &Guest) -> wasmtime::Result<UpdateDeadline> {
    if g.stop.load(Ordering::Relaxed) {
        wasmtime::bail!("stopped while busy");
    }
    if Instant::now() >= g.deadline {
        wasmtime::bail!(
            "ran past its wall-clock limit ({} ms per call)",
            g.wall.as_millis()
        );
    }
    Ok(UpdateDeadline::Continue(1))
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
            charge(
                &mut caller,
                HOST_CALL_FUEL.saturating_add(u64::try_from(len.max(0)).unwrap_or(0)),
            )?;
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
        |mut caller: Caller<'_, Guest>,
         fd: i32,
         iovs: i32,
         n: i32,
         written: i32|
         -> wasmtime::Result<i32> {
            charge(&mut caller, HOST_CALL_FUEL)?;
            if fd != 1 && fd != 2 {
                return Ok(ERRNO_BADF);
            }
            let Some(n) = usize::try_from(n).ok().filter(|n| *n <= MAX_IOVS) else {
                return Ok(ERRNO_INVAL);
            };
            let Some(mem) = memory_of(&mut caller) else {
                return Ok(ERRNO_FAULT);
            };
            // Checked and counted first, copied nowhere: the bytes go from the guest's
            // memory to the log line by line.
            let mut spans = Vec::with_capacity(n);
            let mut total = 0usize;
            {
                let data = mem.data(&caller);
                for i in 0..n {
                    let Some(iov) = i32::try_from(i * 8)
                        .ok()
                        .and_then(|off| iovs.checked_add(off))
                        .and_then(|p| slice(data, p, 8))
                    else {
                        return Ok(ERRNO_FAULT);
                    };
                    let ptr = i32::from_le_bytes([iov[0], iov[1], iov[2], iov[3]]);
                    let len = i32::from_le_bytes([iov[4], iov[5], iov[6], iov[7]]);
                    let Some(b) = slice(data, ptr, len) else {
                        return Ok(ERRNO_FAULT);
                    };
                    total = total.saturating_add(b.len());
                    spans.push((ptr, len));
                }
            }
            if caller.data().log_bytes.saturating_add(total) > MAX_LOG_PER_CALL {
                return Ok(ERRNO_NOSPC);
            }
            charge(&mut caller, bytes_fuel(total))?;
            let (data, g) = mem.data_and_store_mut(&mut caller);
            g.log_bytes += total;
            for (ptr, len) in spans {
                if let Some(b) = slice(data, ptr, len) {
                    g.write_log(b);
                }
            }
            let total = u32::try_from(total).unwrap_or(u32::MAX);
            if !write_u32(data, written, total) {
                return Ok(ERRNO_FAULT);
            }
            Ok(ERRNO_SUCCESS)
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
        |mut caller: Caller<'_, Guest>, buf: i32, len: i32| -> wasmtime::Result<i32> {
            charge(&mut caller, HOST_CALL_FUEL)?;
            let Some(n) = usize::try_from(len)
                .ok()
                .filter(|n| caller.data().random_bytes.saturating_add(*n) <= MAX_RANDOM_PER_CALL)
            else {
                return Ok(ERRNO_INVAL);
            };
            let Some(mem) = memory_of(&mut caller) else {
                return Ok(ERRNO_FAULT);
            };
            // Written straight into the guest's memory, after the bounds check: the host
            // allocates nothing.
            if slice(mem.data(&caller), buf, len).is_none() {
                return Ok(ERRNO_FAULT);
            }
            charge(&mut caller, bytes_fuel(n))?;
            let (data, g) = mem.data_and_store_mut(&mut caller);
            g.random_bytes += n;
            let Some(dst) = usize::try_from(buf)
                .ok()
                .and_then(|start| data.get_mut(start..start.checked_add(n)?))
            else {
                return Ok(ERRNO_FAULT);
            };
            Ok(if random_bytes(dst).is_ok() {
                ERRNO_SUCCESS
            } else {
                ERRNO_NOSYS
            })
        },
    )
    .map_err(e)?;
    l.func_wrap(
        WASI,
        "clock_time_get",
        |mut caller: Caller<'_, Guest>,
         id: i32,
         _precision: i64,
         out: i32|
         -> wasmtime::Result<i32> {
            charge(&mut caller, HOST_CALL_FUEL)?;
            let nanos = match id {
                0 => std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos())
                    .unwrap_or(0),
                1 => monotonic_start().elapsed().as_nanos(),
                _ => return Ok(ERRNO_INVAL),
            };
            let Some(mem) = memory_of(&mut caller) else {
                return Ok(ERRNO_FAULT);
            };
            let v = u64::try_from(nanos).unwrap_or(u64::MAX);
            Ok(
                if write_bytes(mem.data_mut(&mut caller), out, &v.to_le_bytes()) {
                    ERRNO_SUCCESS
                } else {
                    ERRNO_FAULT
                },
            )
        },
    )
    .map_err(e)?;
    // No environment and no arguments.
    for name in ["environ_sizes_get", "args_sizes_get"] {
        l.func_wrap(
            WASI,
            name,
            |mut caller: Caller<'_, Guest>, count: i32, size: i32| -> wasmtime::Result<i32> {
                charge(&mut caller, HOST_CALL_FUEL)?;
                let Some(mem) = memory_of(&mut caller) else {
                    return Ok(ERRNO_FAULT);
                };
                let data = mem.data_mut(&mut caller);
                Ok(if write_u32(data, count, 0) && write_u32(data, size, 0) {
                    ERRNO_SUCCESS
                } else {
                    ERRNO_FAULT
                })
            },
        )
        .map_err(e)?;
    }
    for name in ["environ_get", "args_get"] {
        l.func_wrap(
            WASI,
            name,
            |mut caller: Caller<'_, Guest>, _: i32, _: i32| -> wasmtime::Result<i32> {
                charge(&mut caller, HOST_CALL_FUEL)?;
                Ok(ERRNO_SUCCESS)
            },
        )
        .map_err(e)?;
    }
    // No files: no preopened directories, every descriptor is bad.
    l.func_wrap(
        WASI,
        "fd_close",
        |mut caller: Caller<'_, Guest>, _: i32| -> wasmtime::Result<i32> {
            charge(&mut caller, HOST_CALL_FUEL)?;
            Ok(ERRNO_BADF)
        },
    )
    .map_err(e)?;
    for name in ["fd_fdstat_get", "fd_prestat_get"] {
        l.func_wrap(
            WASI,
            name,
            |mut caller: Caller<'_, Guest>, _: i32, _: i32| -> wasmtime::Result<i32> {
                charge(&mut caller, HOST_CALL_FUEL)?;
                Ok(ERRNO_BADF)
            },
        )
        .map_err(e)?;
    }
    l.func_wrap(
        WASI,
        "fd_seek",
        |mut caller: Caller<'_, Guest>, _: i32, _: i64, _: i32, _: i32| -> wasmtime::Result<i32> {
            charge(&mut caller, HOST_CALL_FUEL)?;
            Ok(ERRNO_BADF)
        },
    )
    .map_err(e)?;
    l.func_wrap(
        WASI,
        "fd_read",
        |mut caller: Caller<'_, Guest>, _: i32, _: i32, _: i32, _: i32| -> wasmtime::Result<i32> {
            charge(&mut caller, HOST_CALL_FUEL)?;
            Ok(ERRNO_BADF)
        },
    )
    .map_err(e)?;
    l.func_wrap(
        WASI,
        "sched_yield",
        |mut caller: Caller<'_, Guest>| -> wasmtime::Result<i32> {
            charge(&mut caller, HOST_CALL_FUEL)?;
            Ok(ERRNO_SUCCESS)
        },
    )
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
    /// Set when the plugin is stopped (shared by all its instances).
    stop: Arc<AtomicBool>,
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
            stop: Arc::new(AtomicBool::new(false)),
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
                log_bytes: 0,
                random_bytes: 0,
                deadline: Instant::now() + self.sandbox.wall,
                wall: self.sandbox.wall,
                stop: self.stop.clone(),
            },
        );
        store.limiter(|g| &mut g.limits);
        store.epoch_deadline_callback(|ctx| on_tick(ctx.data()));
        store
            .set_fuel(self.sandbox.fuel)
            .map_err(|e| format!("fuel: {e}"))?;
        // Instantiation (a start function) and `_initialize` together get one call's
        // budgets.
        store.data_mut().begin_call();
        store.set_epoch_deadline(1);
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
        self.store.data_mut().begin_call();
        self.store.set_epoch_deadline(1);
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

/// The method of the caller's request in an `rpc_command` call.
#[derive(serde::Deserialize)]
struct RpcCommandHead {
    params: RpcCommandParams,
}

#[derive(serde::Deserialize)]
struct RpcCommandParams {
    rpc_command: MethodOnly,
}

#[derive(serde::Deserialize)]
struct MethodOnly {
    method: String,
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
pub(crate) struct Mailbox {
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
        // `block_in_place` needs a multi-thread runtime (fulgurd's); anywhere else the
        // frame goes to the actor thread.
        let multi_thread = tokio::runtime::Handle::try_current()
            .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
        if !multi_thread || !self.inline.load(Ordering::Relaxed) {
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
        // The caller is an async task on one of the runtime's workers: the worker's other
        // tasks are handed to another thread for as long as the guest runs, so that a guest
        // busy for its whole budget holds up nothing but its caller.
        tokio::task::block_in_place(|| {
            let _entered = self.runtime.enter();
            self.deliver_and_watch(core, frame);
        });
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
pub(crate) fn spawn(b: &Birth<'_>) -> Result<Arc<Plugin>, String> {
    let (host, path) = (b.host, b.path);
    let bytes = std::fs::read(path).map_err(|e| format!("opening pipe: {e}"))?;
    let name = crate::plugin::short_name(path);
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
        b,
        Wiring {
            tx,
            exited,
            kill_tx,
            inline: Some(mailbox.clone()),
        },
        Some(sandbox),
    );
    // A kill ends a busy call at the next tick and wakes the actor with an empty frame (it
    // checks `is_dead` first anyway).
    let waker = Arc::downgrade(&mailbox);
    let stop = image.stop.clone();
    runtime.spawn(async move {
        let _ = kill_rx.await;
        stop.store(true, Ordering::Relaxed);
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
        budget: Budget::default(),
        rpc_commands: HashMap::new(),
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
    /// Its timers and RPC calls under way.
    budget: Budget,
    /// `rpc_command` calls it has not answered yet: id → the method of the caller's request.
    rpc_commands: HashMap<String, String>,
}

/// What a guest has under way outside its calls: timers and RPC calls, each bounded.
#[derive(Default, Clone)]
struct Budget {
    timers: Arc<AtomicUsize>,
    rpcs: Arc<AtomicUsize>,
}

/// One unit of a [`Budget`] counter, given back when dropped (the timer fired, the RPC call
/// was answered, or the task was dropped at shutdown).
struct Slot(Arc<AtomicUsize>);

impl Slot {
    fn take(counter: &Arc<AtomicUsize>, max: usize) -> Option<Slot> {
        counter
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| Slot(counter.clone()))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The key of a response id, as the plugin's pending table spells it.
fn id_key(id: &Value) -> String {
    match id {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
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
        let watch_rpc = self.image.sandbox.may_hook(Hook::RpcCommand.as_str())
            && contains(msg, b"\"method\":\"rpc_command\"");
        let head = if !active || watch_hold || watch_rpc {
            serde_json::from_slice::<Head>(msg).ok()
        } else {
            None
        };
        if watch_rpc
            && let Some(Head {
                id: Some(id),
                method: Some(m),
            }) = &head
            && m == Hook::RpcCommand.as_str()
        {
            let inner = serde_json::from_slice::<RpcCommandHead>(msg)
                .map(|h| h.params.rpc_command.method)
                .unwrap_or_else(|_| "?".into());
            self.rpc_commands.insert(id_key(id), inner);
        }
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
            self.route(v)?;
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

    /// One message the guest sent: its requests go to the node (through its sandbox), an
    /// answer to `rpc_command` is checked against its allow-list, the rest is the
    /// registry's.
    fn route(&mut self, mut v: Value) -> Result<(), String> {
        if v.get("jsonrpc").and_then(Value::as_str) == Some("2.0") {
            match (v.get("id"), v.get("method")) {
                (Some(id), Some(Value::String(method))) => {
                    guest_request(
                        &self.plugin,
                        &self.host,
                        &self.budget,
                        id,
                        method,
                        v.get("params"),
                    );
                    return Ok(());
                }
                (Some(id), None) if !self.rpc_commands.is_empty() => {
                    if let Some(orig) = self.rpc_commands.remove(&id_key(id)) {
                        self.check_rpc_command(&orig, &mut v);
                    }
                }
                _ => {}
            }
        }
        self.plugin.incoming(&self.host, v)
    }

    /// An answer to `rpc_command`: a `replace` must name a method the guest may call
    /// itself (else the caller gets an error), and whatever the guest did to a request is
    /// logged.
    fn check_rpc_command(&self, orig: &str, v: &mut Value) {
        let Some(result) = v.get_mut("result") else {
            return;
        };
        let log = &self.plugin.log;
        if let Some(new) = result
            .get("replace")
            .and_then(|r| r.get("method"))
            .and_then(Value::as_str)
            .map(String::from)
        {
            if self.image.sandbox.may_call(&new) {
                log.info(&format!("rpc_command: replaced a call of {orig} by {new}"));
            } else {
                log.unusual(&format!(
                    "rpc_command: refused to replace a call of {orig} by {new} (not in its allow-rpc list)"
                ));
                *result = json!({"return": {"error": {
                    "code": fulgur_protocol::error::codes::INVALID_REQUEST,
                    "message": format!("WASM plugin {} may not call {new} (not in its allow-rpc list)", self.plugin.name),
                }}});
            }
        } else if result.get("return").is_some() {
            log.info(&format!("rpc_command: answered a call of {orig} itself"));
        }
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
            self.rpc_commands.clear();
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
                self.route(v)?;
            }
        }
        Ok(inst)
    }
}

/// A request from a guest: a timer, or a call to the node's RPC if its sandbox allows it.
/// The answer is queued as a message for a later call. Timers and calls under way are
/// bounded ([`MAX_TIMERS`], [`MAX_RPC_IN_FLIGHT`]); what the node answers is
/// [`redact`]ed.
fn guest_request(
    plugin: &Plugin,
    host: &Weak<PluginHost>,
    budget: &Budget,
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
    let refuse = |message: String| json!({"error": {"code": fulgur_protocol::error::codes::INVALID_REQUEST, "message": message}});
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
        let Some(slot) = Slot::take(&budget.timers, MAX_TIMERS) else {
            return deliver(answer(refuse(format!(
                "too many timers waiting (at most {MAX_TIMERS})"
            ))));
        };
        let frame = answer(json!({"result": {}}));
        rt.spawn(async move {
            tokio::time::sleep(delay).await;
            drop(slot);
            deliver(frame);
        });
        return;
    }
    let allowed = plugin.sandbox.as_ref().is_some_and(|s| s.may_call(method));
    if !allowed {
        plugin.log.debug(&format!("RPC call to {method} denied"));
        return deliver(answer(refuse(format!(
            "WASM plugin {} may not call {method} (not in its allow-rpc list)",
            plugin.name
        ))));
    }
    let namespace = datastore_namespace(&plugin.name).to_string();
    if let Err(why) = check_datastore_write(method, params, &namespace) {
        plugin
            .log
            .debug(&format!("RPC call to {method} denied: {why}"));
        return deliver(answer(refuse(format!("WASM plugin {} {why}", plugin.name))));
    }
    let Some(slot) = Slot::take(&budget.rpcs, MAX_RPC_IN_FLIGHT) else {
        return deliver(answer(refuse(format!(
            "too many RPC calls under way (at most {MAX_RPC_IN_FLIGHT})"
        ))));
    };
    let inner_id = format!("{}:{method}#{}", plugin.name, plugin.next_call());
    let request = json!({
        "jsonrpc": "2.0",
        "id": inner_id,
        "method": method,
        "params": params.cloned().unwrap_or_else(|| json!({})),
    });
    let host = host.clone();
    let frame_for = answer;
    let method = method.to_string();
    let own_path = plugin.path.display().to_string();
    rt.spawn(async move {
        let _slot = slot;
        let Some(rpc) = (match host.upgrade() {
            Some(h) => h.local_rpc().await,
            None => None,
        }) else {
            return;
        };
        let mut body = rpc.call(request).await;
        redact(&method, &namespace, &own_path, &mut body);
        deliver(frame_for(body));
    });
}

/// The first element of the datastore keys a guest may see and write: its file name without
/// `.wasm` (`policy.wasm` → `["policy", ...]`).
pub(super) fn datastore_namespace(name: &str) -> &str {
    name.strip_suffix(".wasm").unwrap_or(name)
}

/// Substrings of option names whose values a guest never sees in `listconfigs`.
const SECRET_OPTION_WORDS: &[&str] = &["password", "rpcuser", "secret", "token", "seed", "cookie"];

/// Whether `listconfigs` hides option `name` from guests.
pub(super) fn is_secret_option(name: &str) -> bool {
    SECRET_OPTION_WORDS.iter().any(|w| name.contains(w))
}

/// The first element of a datastore call's `key` (by name or first positional parameter;
/// a string key is its own first element).
fn datastore_key_head(params: Option<&Value>) -> Option<String> {
    let key = match params? {
        Value::Object(o) => o.get("key")?,
        Value::Array(a) => a.first()?,
        _ => return None,
    };
    match key {
        Value::String(s) => Some(s.clone()),
        Value::Array(a) => a.first().and_then(Value::as_str).map(String::from),
        _ => None,
    }
}

/// A guest may change only its own datastore keys (when its allow-list has the methods at
/// all): `Err` says why not.
pub(super) fn check_datastore_write(
    method: &str,
    params: Option<&Value>,
    namespace: &str,
) -> Result<(), String> {
    if !matches!(method, "datastore" | "deldatastore") {
        return Ok(());
    }
    match datastore_key_head(params) {
        Some(head) if head == namespace => Ok(()),
        _ => Err(format!(
            "may only use datastore keys under [\"{namespace}\", ...]"
        )),
    }
}

/// What a guest may see of a node answer: `listconfigs` without secret options or other
/// plugins' options, `listdatastore` with only its own keys.
pub(super) fn redact(method: &str, namespace: &str, own_path: &str, body: &mut Value) {
    match method {
        "listconfigs" => {
            if let Some(Value::Object(configs)) = body.pointer_mut("/result/configs") {
                configs.retain(|name, entry| {
                    !is_secret_option(name)
                        && entry
                            .get("plugin")
                            .is_none_or(|p| p.as_str() == Some(own_path))
                });
            }
        }
        "listdatastore" => {
            if let Some(Value::Array(entries)) = body.pointer_mut("/result/datastore") {
                entries.retain(|e| {
                    e.get("key").and_then(|k| k.get(0)).and_then(Value::as_str) == Some(namespace)
                });
            }
        }
        _ => {}
    }
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
