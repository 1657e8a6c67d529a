//! `fulgurd`, the Fulgur Lightning node. Everything is in the library (`lib.rs`), so that
//! the fuzz targets in `fuzz/` reach the same parsers the daemon runs.

fn main() -> std::process::ExitCode {
    fulgur_host::fulgurd()
}
