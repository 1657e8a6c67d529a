//! The built-in faucet wallet: one key whose P2WPKH address receives the coinbases devchain mines
//! at first start. It signs its own spends; the coins it owns are read from the chain's UTXO set
//! and mempool (see `Chain::send_to_address`).

use std::path::Path;

use bitcoin::secp256k1::{Message, Secp256k1, SecretKey, rand};
use bitcoin::sighash::{EcdsaSighashType, SighashCache};
use bitcoin::{Address, Amount, CompressedPublicKey, Network, ScriptBuf, Transaction, Witness};

use crate::util::{hex, unhex};

pub struct Faucet {
    secret: SecretKey,
    pubkey: CompressedPublicKey,
    address: Address,
    script: ScriptBuf,
}

impl Faucet {
    pub fn from_secret(secret: SecretKey) -> Faucet {
        let secp = Secp256k1::signing_only();
        let pubkey = CompressedPublicKey(secret.public_key(&secp));
        let address = Address::p2wpkh(&pubkey, Network::Regtest);
        let script = address.script_pubkey();
        Faucet {
            secret,
            pubkey,
            address,
            script,
        }
    }

    pub fn random() -> Faucet {
        Faucet::from_secret(SecretKey::new(&mut rand::thread_rng()))
    }

    /// Loads the key from `dir/faucet.key` (hex), creating it on first start.
    pub fn load_or_create(dir: &Path) -> anyhow::Result<Faucet> {
        let path = dir.join("faucet.key");
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                let bytes = unhex(text.trim())
                    .ok_or_else(|| anyhow::anyhow!("{}: not hex", path.display()))?;
                let secret = SecretKey::from_slice(&bytes)
                    .map_err(|e| anyhow::anyhow!("{}: bad key: {e}", path.display()))?;
                Ok(Faucet::from_secret(secret))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let faucet = Faucet::random();
                crate::store::write_atomically(
                    &path,
                    format!("{}\n", hex(&faucet.secret.secret_bytes())).as_bytes(),
                )?;
                #[cfg(unix)]
                {
                    use std::os::unix::fs::PermissionsExt;
                    let _ = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600));
                }
                Ok(faucet)
            }
            Err(e) => Err(anyhow::anyhow!("reading {}: {e}", path.display())),
        }
    }

    pub fn address(&self) -> &Address {
        &self.address
    }

    pub fn script_pubkey(&self) -> &ScriptBuf {
        &self.script
    }

    /// Signs every input of `tx` as a P2WPKH spend of the faucet's key; `values[i]` is the amount
    /// of the coin input `i` spends.
    pub fn sign(&self, tx: &mut Transaction, values: &[Amount]) -> Result<(), String> {
        let secp = Secp256k1::signing_only();
        let mut witnesses = Vec::with_capacity(tx.input.len());
        {
            let mut cache = SighashCache::new(&*tx);
            for (i, value) in values.iter().enumerate() {
                let sighash = cache
                    .p2wpkh_signature_hash(i, &self.script, *value, EcdsaSighashType::All)
                    .map_err(|e| e.to_string())?;
                let msg = Message::from(sighash);
                let signature = bitcoin::ecdsa::Signature {
                    signature: secp.sign_ecdsa(&msg, &self.secret),
                    sighash_type: EcdsaSighashType::All,
                };
                witnesses.push(Witness::p2wpkh(&signature, &self.pubkey.0));
            }
        }
        for (input, witness) in tx.input.iter_mut().zip(witnesses) {
            input.witness = witness;
        }
        Ok(())
    }
}
