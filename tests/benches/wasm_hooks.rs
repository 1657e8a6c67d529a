//! `cargo bench -p fulgur-tests --bench wasm_hooks`: the `htlc_accepted` round trip through
//! fulgurd's plugin registry into a WASM guest, an SDK process plugin and a pyln-client
//! plugin measured in the same run (p50/p99), plus WASM compile and instantiate time and
//! RSS per WASM plugin.
//!
//! The measurement itself is an ignored test of the plugin host (`wasm_hook_bench` in
//! host/plugins/src/wasm/engine_tests.rs); this driver builds what it needs in release (the
//! SDK's `htlc_gate` example and, when npm is there, the AssemblyScript guest), runs it
//! and prints its `BENCH` lines. `FULGUR_BENCH_N` sets the number of calls (default 2000).

use std::process::{Command, ExitCode};

fn main() -> ExitCode {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(std::path::Path::to_path_buf)
        .unwrap_or_default();
    let run = |cmd: &mut Command| -> Option<String> {
        match cmd.current_dir(&root).output() {
            Ok(o) if o.status.success() => Some(String::from_utf8_lossy(&o.stdout).into_owned()),
            Ok(o) => {
                eprintln!(
                    "{cmd:?} failed:\n{}",
                    String::from_utf8_lossy(&o.stderr)
                        .lines()
                        .rev()
                        .take(20)
                        .collect::<Vec<_>>()
                        .join("\n")
                );
                None
            }
            Err(e) => {
                eprintln!("{cmd:?}: {e}");
                None
            }
        }
    };
    if run(Command::new(&cargo).args([
        "build",
        "--release",
        "-p",
        "fulgur-plugin-sdk",
        "--example",
        "htlc_gate",
    ]))
    .is_none()
    {
        return ExitCode::FAILURE;
    }
    if std::env::var("FULGUR_SKIP_WASM_GUEST").as_deref() != Ok("1")
        && run(&mut Command::new(root.join("tests/wasm/build.sh"))).is_none()
    {
        eprintln!("the AssemblyScript guest was not built; measuring the others");
    }
    let Some(out) = run(Command::new(&cargo).args([
        "test",
        "--release",
        "-p",
        "fulgur-plugins",
        "--lib",
        "wasm_hook_bench",
        "--",
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ])) else {
        return ExitCode::FAILURE;
    };
    // The test harness prints its own "test ... " prefix before the first line.
    let lines: Vec<&str> = out
        .lines()
        .filter_map(|l| l.find("BENCH ").map(|at| &l[at..]))
        .collect();
    if lines.is_empty() {
        eprintln!("no measurements in the output:\n{out}");
        return ExitCode::FAILURE;
    }
    for l in lines {
        println!("{}", l.trim_start_matches("BENCH "));
    }
    ExitCode::SUCCESS
}
