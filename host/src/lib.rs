//! `fulgurd`, the Fulgur Lightning node, as a library: the binary (`main.rs`) only calls
//! [`fulgurd`]. It only wires the crates together (docs/adr/0009-host-crates.md): it
//! builds the node's parts, starts and stops them in CLN's order, and owns the process
//! (directory lock, signals, panic hook). It speaks no CLN JSON of its own: that is the
//! RPC's (`fulgur-rpc`) and the plugin host's (`fulgur-plugins`). The modules stay private;
//! `fuzzing` (fulgur-rpc's) exposes the parsers to the fuzz targets in `fuzz/` and nothing
//! else is public.
//!
//! Entry points: `fulgur_config::load` turns the command line and config files into a
//! `fulgur_config::Config`; [`node::run`] builds the node (store, plugin host, chain,
//! wallet, RPC server, engine) and runs it until `stop`, a signal, or the death of an
//! important plugin.

// Daemon code returns errors; a panic here would stop the process (tests may unwrap:
// clippy.toml).
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::string_slice)]
#![deny(missing_docs)]

mod lifecycle;
// The Lightning engine is fulgur-engine; `crate::lightning` names it.
use fulgur_engine as lightning;
// The log lives in fulgur-base (docs/adr/0009-host-crates.md); `crate::log` names it.
use fulgur_base::log;
// The database is fulgur-store; `crate::store` names it.
use fulgur_store as store;
// The chain is fulgur-chain; `crate::chain` names it.
use fulgur_chain as chain;
// The on-chain wallet is fulgur-wallet; `crate::wallet` names it.
use fulgur_wallet as wallet;
// The plugin host is fulgur-plugins; `crate::plugin` names it.
use fulgur_plugins as plugin;
// The configuration is fulgur-config; `crate::config` names it.
use fulgur_config as config;
// The RPC edge (socket, commands, CLN's JSON, the engine's port to the plugins) and the
// `Node` it serves are fulgur-rpc; `crate::rpc` names it.
use fulgur_rpc as rpc;
mod node;
mod standby;

// The fuzz targets in `fuzz/` call `fulgur_host::fuzzing::*`; the entry points live with
// the parsers they drive, in fulgur-rpc.
#[doc(hidden)]
pub use fulgur_rpc::fuzzing;

use std::process::ExitCode;

/// `fulgurd`'s `main`: reads the configuration, then runs the node (or prints help or the
/// version) and turns the outcome into the exit code.
pub fn fulgurd() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let invocation = match config::load(&args) {
        Ok(i) => i,
        Err(e) => {
            eprintln!("fulgurd: {e}");
            return ExitCode::from(1);
        }
    };
    if let config::Invocation::Run(c) = &invocation
        && c.daemon
        && std::env::var_os(DAEMON_CHILD).is_none()
    {
        return daemonize(&c.rpc_path, &c.pid_file);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("fulgurd: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let result = match invocation {
        config::Invocation::Version => {
            println!("{}", fulgur_base::VERSION);
            return ExitCode::SUCCESS;
        }
        config::Invocation::Help(c) => runtime.block_on(node::print_help(*c)).map(|()| 0),
        config::Invocation::Run(c) => runtime.block_on(node::run(*c)),
    };
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    match result {
        Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        Err(e) => {
            eprintln!("fulgurd: {e}");
            ExitCode::from(1)
        }
    }
}

/// Set in the environment of the process `--daemon` starts, which then runs the node.
const DAEMON_CHILD: &str = "FULGURD_DAEMON_CHILD";

/// `--daemon`, as CLN's: the node runs in a new process in the background (its own process
/// group, stdin, stdout and stderr on /dev/null), and this one waits until the node's RPC
/// socket answers, then exits 0, so that a node that cannot start is reported here, with
/// its exit code, rather than after a silent exit 0. (The node is started again from this
/// executable rather than forked: a fork of a running process needs `unsafe`.)
fn daemonize(rpc_path: &std::path::Path, pid_file: &std::path::Path) -> ExitCode {
    use std::os::unix::process::CommandExt;
    use std::process::{Command, Stdio};
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => {
            eprintln!("fulgurd: --daemon: cannot find this executable: {e}");
            return ExitCode::from(1);
        }
    };
    let mut child = match Command::new(exe)
        .args(std::env::args_os().skip(1))
        .env(DAEMON_CHILD, "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("fulgurd: --daemon: cannot start the node: {e}");
            return ExitCode::from(1);
        }
    };
    loop {
        match child.try_wait() {
            Ok(Some(status)) => {
                eprintln!(
                    "fulgurd: --daemon: the node exited before it was ready ({status}); see its log file"
                );
                return ExitCode::from(
                    status
                        .code()
                        .and_then(|c| u8::try_from(c).ok())
                        .unwrap_or(1),
                );
            }
            Ok(None) => {}
            Err(e) => {
                eprintln!("fulgurd: --daemon: cannot watch the node: {e}");
                return ExitCode::from(1);
            }
        }
        // Ours once the pid file (written when the node takes its lock) names the node: a
        // node already running in this directory answers on the socket too. A socket left
        // by an earlier run does not answer.
        let ours =
            std::fs::read_to_string(pid_file).is_ok_and(|p| p.trim() == child.id().to_string());
        if ours && std::os::unix::net::UnixStream::connect(rpc_path).is_ok() {
            return ExitCode::SUCCESS;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}
