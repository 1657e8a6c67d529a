//! fulgurd's configuration, parsed once at start: [`load`] turns the command line and the
//! config files into a [`Config`] (core options validated by clap, unknown names kept as
//! plugin options until manifests arrive); [`core_options`] renders the core options'
//! `listconfigs` entries and writes `config.setconfig`.
//!
//! A crate of its own (docs/adr/0009-host-crates.md) so that both `fulgurd`, which builds
//! the node from a [`Config`], and the RPC (`fulgur-rpc`), whose `listconfigs` and
//! `setconfig` read and write it, depend on it without depending on each other. It fills
//! the settings the crates below take (`fulgur_chain::BitcoinOptions`, the engine's
//! `NetAddr`s, `fulgur_plugins::wasm::SandboxRule`), so it depends on them, never on the RPC.

// Configuration errors are returned, never panics (tests may unwrap: clippy.toml).
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::string_slice)]
#![deny(missing_docs)]

// The names the code uses for the crates below, as in the other host crates.
use fulgur_base::log;
use fulgur_chain as chain;
use fulgur_engine as lightning;
use fulgur_plugins as plugin;
use fulgur_wallet as wallet;

mod config;
pub mod core_options;

pub use config::*;
