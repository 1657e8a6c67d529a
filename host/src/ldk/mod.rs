//! Groundwork for the LDK engine (the `lightning` crates): its key-value store on the node's
//! SQLite database ([`kvstore::SqliteKvStore`]) and its `KeysManager` from `hsm_secret`
//! ([`keys::keys_manager`]). Nothing runs LDK yet; the engine that uses these comes next.

pub mod keys;
pub mod kvstore;
