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

/// HKDF-SHA256 (RFC 5869) with an empty salt, 32 bytes out: the derivation CLN's signer
/// uses for its derived secrets.
fn hkdf32(ikm: &[u8], info: &[u8]) -> [u8; 32] {
    use bitcoin::hashes::{Hash, HashEngine, Hmac, HmacEngine, sha256};
    let mut e = HmacEngine::<sha256::Hash>::new(&[0u8; 32]);
    e.input(ikm);
    let prk = Hmac::<sha256::Hash>::from_engine(e);
    let mut e = HmacEngine::<sha256::Hash>::new(prk.as_byte_array());
    e.input(info);
    e.input(&[1]);
    Hmac::<sha256::Hash>::from_engine(e).to_byte_array()
}

/// The base of `makesecret`'s secrets: derived from `hsm_secret` ("derived secrets", as CLN's
/// signer names it), so the seed itself stays out of the engine.
pub fn secret_base(seed: &[u8; 32]) -> [u8; 32] {
    hkdf32(seed, b"derived secrets")
}

/// `makesecret`: a secret for `info`, the same on every start with the same `hsm_secret`, and
/// different from every key the node uses.
pub fn derive_secret(base: &[u8; 32], info: &[u8]) -> [u8; 32] {
    hkdf32(base, info)
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

    #[test]
    fn hkdf_matches_rfc5869_and_secrets_depend_on_seed_and_info() {
        // RFC 5869 test case 3 (empty salt and info), first 32 bytes of the 42.
        let okm = hkdf32(&[0x0b; 22], b"");
        assert_eq!(
            fulgur_base::hex(&okm),
            "8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d"
        );
        let (a, b) = (secret_base(&[1; 32]), secret_base(&[2; 32]));
        assert_ne!(a, b);
        assert_eq!(
            derive_secret(&a, b"x"),
            derive_secret(&secret_base(&[1; 32]), b"x")
        );
        assert_ne!(derive_secret(&a, b"x"), derive_secret(&a, b"y"));
        assert_ne!(derive_secret(&a, b"x"), derive_secret(&b, b"x"));
    }
}
