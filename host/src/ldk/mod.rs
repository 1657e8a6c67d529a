//! Groundwork for the LDK engine (the `lightning` crates): its key-value store on the node's
//! SQLite database ([`kvstore::SqliteKvStore`]) and its `KeysManager` from `hsm_secret`
//! ([`keys::keys_manager`]). The engine that uses these is `crate::lightning`.

pub mod keys;
pub mod kvstore;
