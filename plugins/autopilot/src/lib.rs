//! The parts of the `autopilot` plugin that need no node: the graph and its scoring, the
//! budget and decision logic, and the persisted state. The binary (`src/main.rs`) wires
//! them to the node; the scoring benchmark uses them directly.

// Daemon code returns errors; a panic here would stop the process (tests may unwrap:
// clippy.toml).
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::string_slice)]

pub mod graph;
pub mod policy;
pub mod store;
