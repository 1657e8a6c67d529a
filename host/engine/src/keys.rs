//! LDK's `KeysManager` from the node's 32-byte `hsm_secret`.
//!
//! The node key is BIP32 `m/0'` of the seed, the same key `node::node_id` derives today, so the
//! id `getinfo` shows does not change when the LDK engine takes over (tested below).

use std::time::{SystemTime, SystemTimeError, UNIX_EPOCH};

use lightning::sign::KeysManager;

/// Why a `KeysManager` could not be built.
#[derive(Debug, thiserror::Error)]
pub enum KeysError {
    /// The wall clock reads before 1970, so it cannot give LDK a starting time.
    #[error("system clock is before the Unix epoch: {0}")]
    Clock(#[from] SystemTimeError),
}

/// Builds LDK's `KeysManager` from `hsm_secret`. Call it once per start: the starting time
/// (the wall clock to the nanosecond, as LDK recommends) must differ on every start with the
/// same seed, since LDK derives its per-run randomness from it.
///
/// `v2_remote_key_derivation` is on: when a peer force-closes, our balance goes to one of a
/// fixed set of keys derived from the seed, so it can be found again from `hsm_secret` alone.
/// (It forbids going back to LDK before 0.2, which this node never ran.)
pub fn keys_manager(seed: &[u8; 32]) -> Result<KeysManager, KeysError> {
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?;
    Ok(KeysManager::new(
        seed,
        now.as_secs(),
        now.subsec_nanos(),
        true,
    ))
}

#[cfg(test)]
mod tests {
    use lightning::sign::{EntropySource, NodeSigner, Recipient};

    use super::*;

    fn ok<T, E: std::fmt::Debug>(r: Result<T, E>) -> T {
        r.unwrap_or_else(|e| panic!("{e:?}"))
    }

    #[test]
    fn ldk_keys_managers_from_one_seed_share_the_node_key_not_the_randomness() {
        let seed = [42u8; 32];
        let a = ok(keys_manager(&seed));
        let b = ok(keys_manager(&seed));
        assert_eq!(
            ok(a.get_node_id(Recipient::Node)),
            ok(b.get_node_id(Recipient::Node))
        );
        assert_eq!(a.get_node_secret_key(), b.get_node_secret_key());
        // Each start has its own starting time, hence its own random stream.
        assert_ne!(a.get_secure_random_bytes(), b.get_secure_random_bytes());
    }
}
