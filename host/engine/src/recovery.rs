//! Static channel backups and emergency recovery, as CLN's chanbackup plugin offers them:
//! `staticbackup`, the `emergency.recover` file (`getemergencyrecoverdata`), and
//! `emergencyrecover` / `recoverchannel`, which turn backups into *stubs*.
//!
//! With only `hsm_secret` and `emergency.recover`, a fresh node gets back the funds of every
//! channel it had. Two properties of LDK make that possible:
//!
//! - Our balance on a commitment our peer broadcasts pays one of a fixed set of 1,000
//!   scripts derived from the seed (the `KeysManager` is built with
//!   `v2_remote_key_derivation`, see [`crate::keys::keys_manager`]), so it can be found and
//!   spent without the channel's state.
//! - When a peer sends `channel_reestablish` for a channel LDK does not know, LDK answers
//!   with the "bogus" reestablish (commitment numbers 0) that makes LDK, CLN and lnd peers
//!   force-close, broadcasting their latest commitment.
//!
//! So recovering a channel is: remember it as a stub (its peer, where to reach it, its
//! funding outpoint), connect to the peer until it closes, watch the blocks for the
//! transaction spending the funding outpoint, and hand our output on it to the output
//! sweeper, which spends it into the wallet. HTLCs in flight at the time the state was lost
//! are not claimed (as with CLN's and lnd's static backups).
//!
//! Formats (ours, not CLN's: the two nodes' keys differ anyway). A backup of one channel
//! ([`Scb`], `staticbackup`'s items, `recoverchannel`'s input) is:
//!
//! ```text
//! version (1) | channel_id (32) | peer node id (33) | funding txid (32) | funding vout (u32)
//! | funding sat (u64) | funding height (u32, 0: unconfirmed) | flags (1, bit 0: anchors)
//! | address length (u16) | address (UTF-8, `host:port`)
//! ```
//!
//! integers big-endian. `emergency.recover` is `FSCB` | file version (1) | a 12-byte nonce |
//! the ChaCha20-Poly1305 sealing (key: `makesecret`'s derivation of "emergency.recover")
//! of the wallet's birthday (u32: no coin of the node's is older than that block; `--recover`
//! rescans the wallet from it), a u16 count and as many u16-length-prefixed backups.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use bitcoin::hashes::Hash;
use bitcoin::secp256k1::{PublicKey, Secp256k1};
use bitcoin::{OutPoint, ScriptBuf, Transaction, Txid};
use lightning::ln::types::ChannelId;
use lightning::sign::SpendableOutputDescriptor;

/// The file's name, in `<lightning-dir>/<network>/`, as CLN.
pub const FILE_NAME: &str = "emergency.recover";
const MAGIC: &[u8; 4] = b"FSCB";
const FILE_VERSION: u8 = 1;
const SCB_VERSION: u8 = 1;
/// The longest address kept (a `.onion` name and port fit with room to spare).
pub const MAX_ADDRESS: usize = 255;
const FLAG_ANCHORS: u8 = 1;
/// The fixed part of a backup: everything but the address.
const SCB_FIXED: usize = 1 + 32 + 33 + 32 + 4 + 8 + 4 + 1 + 2;

/// One channel's static backup: what recovering its funds needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Scb {
    /// The channel's id.
    pub channel_id: [u8; 32],
    /// The peer's node id.
    pub peer: PublicKey,
    /// The funding outpoint.
    pub funding: OutPoint,
    /// The channel's capacity.
    pub funding_sat: u64,
    /// The block the funding transaction confirmed in; 0 while unconfirmed.
    pub funding_height: u32,
    /// An anchor-outputs channel (our balance on their commitment needs a 1-block CSV).
    pub anchors: bool,
    /// Where the peer was reached (`host:port`); empty when unknown.
    pub address: String,
}

/// Why a backup or the file cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScbError {
    /// Shorter than its fields.
    #[error("truncated")]
    Truncated,
    /// A version this node does not write.
    #[error("unknown version {0}")]
    Version(u8),
    /// The peer's id is not a public key.
    #[error("invalid node id")]
    NodeId,
    /// Flags this node does not know.
    #[error("unknown flags {0:#04x}")]
    Flags(u8),
    /// The address is not text.
    #[error("address is not UTF-8")]
    AddressUtf8,
    /// The address is longer than [`MAX_ADDRESS`].
    #[error("address longer than {MAX_ADDRESS} bytes")]
    AddressTooLong,
    /// Bytes after the last field.
    #[error("{0} bytes after the end")]
    Trailing(usize),
    /// The file does not start as ours does.
    #[error("not an emergency.recover file of this node")]
    Magic,
    /// Sealed with another key (another `hsm_secret`), or altered.
    #[error("cannot be decrypted with this node's hsm_secret")]
    Decrypt,
    /// More than 65,535 channels.
    #[error("too many channels for one file")]
    TooMany,
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], ScbError> {
        if self.0.len() < n {
            return Err(ScbError::Truncated);
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], ScbError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }
    fn u16(&mut self) -> Result<u16, ScbError> {
        Ok(u16::from_be_bytes(self.array()?))
    }
    fn u32(&mut self) -> Result<u32, ScbError> {
        Ok(u32::from_be_bytes(self.array()?))
    }
    fn u64(&mut self) -> Result<u64, ScbError> {
        Ok(u64::from_be_bytes(self.array()?))
    }
}

impl Scb {
    /// The backup's bytes (see the module's documentation).
    pub fn encode(&self) -> Result<Vec<u8>, ScbError> {
        let addr = self.address.as_bytes();
        if addr.len() > MAX_ADDRESS {
            return Err(ScbError::AddressTooLong);
        }
        let mut out = Vec::with_capacity(SCB_FIXED + addr.len());
        out.push(SCB_VERSION);
        out.extend_from_slice(&self.channel_id);
        out.extend_from_slice(&self.peer.serialize());
        out.extend_from_slice(self.funding.txid.as_byte_array());
        out.extend_from_slice(&self.funding.vout.to_be_bytes());
        out.extend_from_slice(&self.funding_sat.to_be_bytes());
        out.extend_from_slice(&self.funding_height.to_be_bytes());
        out.push(if self.anchors { FLAG_ANCHORS } else { 0 });
        out.extend_from_slice(&(addr.len() as u16).to_be_bytes());
        out.extend_from_slice(addr);
        Ok(out)
    }

    /// Reads a backup [`Scb::encode`] wrote; all of `bytes`, nothing after it.
    pub fn decode(bytes: &[u8]) -> Result<Scb, ScbError> {
        let mut r = Reader(bytes);
        let version = r.array::<1>()?[0];
        if version != SCB_VERSION {
            return Err(ScbError::Version(version));
        }
        let channel_id = r.array::<32>()?;
        let peer = PublicKey::from_slice(r.take(33)?).map_err(|_| ScbError::NodeId)?;
        let txid = Txid::from_byte_array(r.array::<32>()?);
        let vout = r.u32()?;
        let funding_sat = r.u64()?;
        let funding_height = r.u32()?;
        let flags = r.array::<1>()?[0];
        if flags & !FLAG_ANCHORS != 0 {
            return Err(ScbError::Flags(flags));
        }
        let len = usize::from(r.u16()?);
        if len > MAX_ADDRESS {
            return Err(ScbError::AddressTooLong);
        }
        let address = std::str::from_utf8(r.take(len)?)
            .map_err(|_| ScbError::AddressUtf8)?
            .to_string();
        if !r.0.is_empty() {
            return Err(ScbError::Trailing(r.0.len()));
        }
        Ok(Scb {
            channel_id,
            peer,
            funding: OutPoint { txid, vout },
            funding_sat,
            funding_height,
            anchors: flags & FLAG_ANCHORS != 0,
            address,
        })
    }
}

/// The key `emergency.recover` is sealed with, from the base of `makesecret`'s secrets.
pub fn file_key(secret_base: &[u8; 32]) -> [u8; 32] {
    crate::keys::derive_secret(secret_base, b"emergency.recover")
}

fn cipher(key: &[u8; 32]) -> chacha20poly1305::ChaCha20Poly1305 {
    use chacha20poly1305::KeyInit;
    chacha20poly1305::ChaCha20Poly1305::new(chacha20poly1305::Key::from_slice(key))
}

/// What `emergency.recover` holds.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Backups {
    /// No coin of the node's wallet is older than this block.
    pub birthday: u32,
    /// The channels.
    pub channels: Vec<Scb>,
}

/// The file's bytes holding `b`, sealed with `key` under `nonce` (never reuse one).
pub fn seal(key: &[u8; 32], nonce: [u8; 12], b: &Backups) -> Result<Vec<u8>, ScbError> {
    use chacha20poly1305::aead::{Aead, Payload};
    let count = u16::try_from(b.channels.len()).map_err(|_| ScbError::TooMany)?;
    let mut plain = b.birthday.to_be_bytes().to_vec();
    plain.extend_from_slice(&count.to_be_bytes());
    for s in &b.channels {
        let b = s.encode()?;
        plain.extend_from_slice(&(b.len() as u16).to_be_bytes());
        plain.extend_from_slice(&b);
    }
    let mut out = MAGIC.to_vec();
    out.push(FILE_VERSION);
    out.extend_from_slice(&nonce);
    let aad = out[..MAGIC.len() + 1].to_vec();
    let sealed = cipher(key)
        .encrypt(
            chacha20poly1305::Nonce::from_slice(&nonce),
            Payload {
                msg: &plain,
                aad: &aad,
            },
        )
        .map_err(|_| ScbError::TooMany)?;
    out.extend_from_slice(&sealed);
    Ok(out)
}

/// The backups in a file [`seal`] wrote with `key`.
pub fn open(key: &[u8; 32], file: &[u8]) -> Result<Backups, ScbError> {
    use chacha20poly1305::aead::{Aead, Payload};
    let mut r = Reader(file);
    if r.take(MAGIC.len()).ok() != Some(&MAGIC[..]) {
        return Err(ScbError::Magic);
    }
    let version = r.array::<1>()?[0];
    if version != FILE_VERSION {
        return Err(ScbError::Version(version));
    }
    let nonce = r.array::<12>()?;
    let plain = cipher(key)
        .decrypt(
            chacha20poly1305::Nonce::from_slice(&nonce),
            Payload {
                msg: r.0,
                aad: &file[..MAGIC.len() + 1],
            },
        )
        .map_err(|_| ScbError::Decrypt)?;
    decode_list(&plain)
}

/// What the sealed file holds: the birthday, then the u16-counted list of length-prefixed
/// backups.
pub fn decode_list(plain: &[u8]) -> Result<Backups, ScbError> {
    let mut r = Reader(plain);
    let birthday = r.u32()?;
    let n = r.u16()?;
    let mut out = Vec::with_capacity(usize::from(n).min(1024));
    for _ in 0..n {
        let len = usize::from(r.u16()?);
        out.push(Scb::decode(r.take(len)?)?);
    }
    if !r.0.is_empty() {
        return Err(ScbError::Trailing(r.0.len()));
    }
    Ok(Backups {
        birthday,
        channels: out,
    })
}

/// Writes `bytes` to `path` so that a crash leaves the old file or the new one: a temporary
/// file, synced, renamed over it, then the directory synced.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("recover.new");
    {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// Why recovery could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum RecoverError {
    /// The file cannot be read or written.
    #[error("{FILE_NAME}: {0}")]
    Io(String),
    /// The file cannot be opened or is malformed.
    #[error("{FILE_NAME}: {0}")]
    File(ScbError),
    /// A backup given is malformed.
    #[error("Invalid SCB: {0}")]
    Scb(ScbError),
    /// The database refused the stub.
    #[error("{0}")]
    Store(String),
}

/// A channel being recovered: its backup, and the transaction that spent its funding
/// output once seen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stub {
    /// The channel's backup.
    pub scb: Scb,
    /// The transaction that spent the funding output (the peer's close), once seen.
    pub spent_by: Option<Txid>,
}

impl Stub {
    fn encode(&self) -> Result<Vec<u8>, ScbError> {
        let mut out = match self.spent_by {
            Some(t) => {
                let mut v = vec![1];
                v.extend_from_slice(t.as_byte_array());
                v
            }
            None => vec![0],
        };
        out.extend(self.scb.encode()?);
        Ok(out)
    }

    fn decode(b: &[u8]) -> Result<Stub, ScbError> {
        let (spent_by, rest) = match b.split_first() {
            Some((0, rest)) => (None, rest),
            Some((1, rest)) if rest.len() >= 32 => (
                Some(Txid::from_byte_array(
                    rest[..32].try_into().map_err(|_| ScbError::Truncated)?,
                )),
                &rest[32..],
            ),
            _ => return Err(ScbError::Truncated),
        };
        Ok(Stub {
            scb: Scb::decode(rest)?,
            spent_by,
        })
    }
}

/// The engine's part: where the file is, its key, what it holds, and the stubs.
pub struct Recovery {
    path: Option<PathBuf>,
    key: [u8; 32],
    /// What the file holds now (`None`: not written by this run yet).
    written: Mutex<Option<Backups>>,
    /// Backups the file held at start of channels this node does not know (its database
    /// was lost or replaced): kept in the file until recovered.
    kept: Mutex<Vec<Scb>>,
    /// The wallet birthday the file held at start.
    birthday_found: Mutex<Option<u32>>,
    /// Channels being recovered, by channel id (in the store too).
    stubs: Mutex<Vec<Stub>>,
    /// The scripts a peer's commitment pays our balance to: script → anchors.
    spks: OnceLock<HashMap<ScriptBuf, bool>>,
    /// Serialises the file's writes.
    writing: Mutex<()>,
}

impl Recovery {
    /// Keeps the file at `path`, sealed with a key from `secret_base`.
    pub fn new(path: Option<PathBuf>, secret_base: &[u8; 32]) -> Recovery {
        Recovery {
            path,
            key: file_key(secret_base),
            written: Mutex::new(None),
            kept: Mutex::new(Vec::new()),
            birthday_found: Mutex::new(None),
            stubs: Mutex::new(Vec::new()),
            spks: OnceLock::new(),
            writing: Mutex::new(()),
        }
    }

    /// The file's path (`None` in tests of the engine alone).
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

const STUBS_NAMESPACE: &str = "fulgur_recovery_stubs";
const NODE_NAMESPACE: &str = "fulgur_node";
const BIRTHDAY_KEY: &str = "birthday";

impl super::Lightning {
    /// Loads the stubs an earlier run recorded.
    pub(crate) fn load_stubs(&self) {
        use lightning::util::persist::KVStoreSync;
        let keys = self.kv.list(STUBS_NAMESPACE, "").unwrap_or_default();
        let mut stubs = vec![];
        for k in keys {
            match self
                .kv
                .read(STUBS_NAMESPACE, "", &k)
                .map(|b| Stub::decode(&b))
            {
                Ok(Ok(s)) => stubs.push(s),
                Ok(Err(e)) => self
                    .log
                    .unusual(&format!("Recovery stub {k} cannot be read ({e}); ignored")),
                Err(e) => self
                    .log
                    .unusual(&format!("Recovery stub {k} cannot be read ({e}); ignored")),
            }
        }
        *lock(&self.recovery.stubs) = stubs;
    }

    fn save_stub(&self, s: &Stub) -> Result<(), RecoverError> {
        use lightning::util::persist::KVStoreSync;
        let bytes = s.encode().map_err(RecoverError::Scb)?;
        self.kv
            .write(
                STUBS_NAMESPACE,
                "",
                &fulgur_base::hex(&s.scb.channel_id),
                bytes,
            )
            .map_err(|e| RecoverError::Store(e.to_string()))
    }

    /// The channels being recovered.
    pub fn stubs(&self) -> Vec<Stub> {
        lock(&self.recovery.stubs).clone()
    }

    /// Peers of stubs whose channel is not closed yet: reconnected to until it is.
    pub(crate) fn stub_peers(&self) -> Vec<PublicKey> {
        lock(&self.recovery.stubs)
            .iter()
            .filter(|s| s.spent_by.is_none())
            .map(|s| s.scb.peer)
            .collect()
    }

    /// Where we would dial `peer`: the address we reached it at, else one it announced.
    fn address_of(&self, peer: &PublicKey) -> String {
        if let Some(a) = lock(&self.peer_addrs).get(peer) {
            return super::net::Dial::Proxied(a.clone()).to_string();
        }
        self.graph
            .nodes(Some(*peer))
            .into_iter()
            .filter_map(|n| n.announced)
            .flat_map(|a| a.addresses)
            .find(|a| a.len() <= MAX_ADDRESS)
            .unwrap_or_default()
    }

    /// `staticbackup`: a backup of every channel with a funding transaction, and of every
    /// stub whose channel is not closed yet.
    pub fn static_backups(&self) -> Vec<Scb> {
        let tip = self.tip_height();
        let mut out: Vec<Scb> = self
            .manager
            .list_channels()
            .into_iter()
            .filter_map(|c| {
                let txo = c.funding_txo?;
                let height = match c.confirmations {
                    Some(n) if n > 0 => tip.saturating_sub(n).saturating_add(1),
                    _ => 0,
                };
                let mut address = self.address_of(&c.counterparty.node_id);
                if address.len() > MAX_ADDRESS {
                    address.clear();
                }
                Some(Scb {
                    channel_id: c.channel_id.0,
                    peer: c.counterparty.node_id,
                    funding: txo.into_bitcoin_outpoint(),
                    funding_sat: c.channel_value_satoshis,
                    funding_height: height,
                    anchors: c
                        .channel_type
                        .as_ref()
                        .is_some_and(|t| t.supports_anchors_zero_fee_htlc_tx()),
                    address,
                })
            })
            .collect();
        for s in lock(&self.recovery.stubs).iter() {
            if s.spent_by.is_none() && !out.iter().any(|o| o.channel_id == s.scb.channel_id) {
                out.push(s.scb.clone());
            }
        }
        out.sort_by_key(|a| a.channel_id);
        out
    }

    /// Rewrites `emergency.recover` if the backups it should hold changed (or this run has
    /// not written it yet). Called when a channel is opened, confirmed or closed, and
    /// before the file is read through the RPC.
    pub fn refresh_recover_file(&self) -> Result<(), RecoverError> {
        use lightning::sign::EntropySource;
        let Some(path) = self.recovery.path.clone() else {
            return Ok(());
        };
        let _w = lock(&self.recovery.writing);
        let mut now = self.static_backups();
        if lock(&self.recovery.written).is_none() && path.exists() {
            self.keep_unknown_backups(&path, &now);
        }
        {
            let stubs = lock(&self.recovery.stubs);
            let mut kept = lock(&self.recovery.kept);
            kept.retain(|k| {
                !stubs.iter().any(|s| s.scb.channel_id == k.channel_id)
                    && !now.iter().any(|n| n.channel_id == k.channel_id)
            });
            now.extend(kept.iter().cloned());
        }
        now.sort_by_key(|a| a.channel_id);
        let now = Backups {
            birthday: self.wallet_birthday(&now),
            channels: now,
        };
        if lock(&self.recovery.written).as_ref() == Some(&now) && path.exists() {
            return Ok(());
        }
        let mut nonce = [0u8; 12];
        nonce.copy_from_slice(&self.keys.get_secure_random_bytes()[..12]);
        let bytes = seal(&self.recovery.key, nonce, &now).map_err(RecoverError::File)?;
        write_atomically(&path, &bytes).map_err(|e| RecoverError::Io(e.to_string()))?;
        self.log.debug(&format!(
            "{FILE_NAME} written: {} channel(s), wallet birthday {}",
            now.channels.len(),
            now.birthday
        ));
        *lock(&self.recovery.written) = Some(now);
        Ok(())
    }

    /// The block no coin of the wallet is older than: the first block this node's database
    /// saw (recorded at its first start), or the wallet's oldest transaction or a channel's
    /// funding if older (a node from before the record, or an imported one), or the birthday
    /// the file held at start (a node recovered from it).
    fn wallet_birthday(&self, channels: &[Scb]) -> u32 {
        use lightning::util::persist::KVStoreSync;
        let recorded = self
            .kv
            .read(NODE_NAMESPACE, "", BIRTHDAY_KEY)
            .ok()
            .and_then(|b| <[u8; 4]>::try_from(b.as_slice()).ok())
            .map(u32::from_be_bytes);
        let recorded = match recorded {
            Some(h) => h,
            None => {
                let tip = self.tip_height();
                let _ = self
                    .kv
                    .write(NODE_NAMESPACE, "", BIRTHDAY_KEY, tip.to_be_bytes().to_vec());
                tip
            }
        };
        let oldest_tx = self
            .wallet
            .list_transactions()
            .iter()
            .filter_map(|t| t.blockheight)
            .min();
        let oldest_funding = channels
            .iter()
            .map(|c| c.funding_height)
            .filter(|h| *h > 0)
            .min();
        let from_file = *lock(&self.recovery.birthday_found);
        [Some(recorded), oldest_tx, oldest_funding, from_file]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(recorded)
    }

    /// The first write of a run: the file there may hold channels this node does not know
    /// (its database was lost; `emergencyrecover` is about to be run), which must not be
    /// lost with it. A file this node cannot open is moved aside, not overwritten.
    fn keep_unknown_backups(&self, path: &Path, now: &[Scb]) {
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) => {
                self.log
                    .unusual(&format!("Cannot read {}: {e}", path.display()));
                return;
            }
        };
        match open(&self.recovery.key, &bytes) {
            Ok(old) => {
                *lock(&self.recovery.birthday_found) = Some(old.birthday);
                let unknown: Vec<Scb> = old
                    .channels
                    .into_iter()
                    .filter(|o| !now.iter().any(|n| n.channel_id == o.channel_id))
                    .filter(|o| {
                        !lock(&self.recovery.stubs)
                            .iter()
                            .any(|s| s.scb.channel_id == o.channel_id)
                    })
                    .filter(|o| !self.knows_channel(&o.channel_id))
                    .collect();
                if !unknown.is_empty() {
                    self.log.info(&format!(
                        "{FILE_NAME} holds {} channel(s) this node does not know: kept in the \
                         file; `emergencyrecover` recovers them",
                        unknown.len()
                    ));
                }
                *lock(&self.recovery.kept) = unknown;
            }
            Err(e) => {
                let aside = path.with_extension("recover.unreadable");
                self.log.unusual(&format!(
                    "{} cannot be opened ({e}): moved to {} and written anew",
                    path.display(),
                    aside.display()
                ));
                let _ = std::fs::rename(path, &aside);
            }
        }
    }

    /// [`Self::refresh_recover_file`], logging a failure (the node goes on; the file is
    /// tried again at the next change).
    pub(crate) fn refresh_recover_file_logged(&self) {
        if let Err(e) = self.refresh_recover_file() {
            self.log
                .unusual(&format!("Cannot keep {FILE_NAME} current: {e}"));
        }
    }

    /// `getemergencyrecoverdata`: the file's bytes (made current first) and the channels
    /// it holds.
    pub fn recover_file_data(&self) -> Result<(Vec<u8>, Vec<[u8; 32]>), RecoverError> {
        self.refresh_recover_file()?;
        let Some(path) = self.recovery.path.as_ref() else {
            return Err(RecoverError::Io("no file in this configuration".into()));
        };
        let bytes = std::fs::read(path).map_err(|e| RecoverError::Io(e.to_string()))?;
        let ids = open(&self.recovery.key, &bytes)
            .map_err(RecoverError::File)?
            .channels
            .into_iter()
            .map(|s| s.channel_id)
            .collect();
        Ok((bytes, ids))
    }

    /// `emergencyrecover`: stubs for the channels of `emergency.recover` this node does not
    /// know.
    pub async fn emergency_recover(self: &Arc<Self>) -> Result<Vec<[u8; 32]>, RecoverError> {
        let Some(path) = self.recovery.path.as_ref() else {
            return Err(RecoverError::Io("no file in this configuration".into()));
        };
        let bytes = std::fs::read(path).map_err(|e| RecoverError::Io(e.to_string()))?;
        let scbs = open(&self.recovery.key, &bytes).map_err(RecoverError::File)?;
        self.recover_channels(scbs.channels).await
    }

    /// Whether the node knows channel `id` (open, closing, or closed).
    fn knows_channel(&self, id: &[u8; 32]) -> bool {
        let cid = ChannelId(*id);
        if self
            .manager
            .list_channels()
            .iter()
            .any(|c| c.channel_id == cid)
            || self.monitor.list_monitors().contains(&cid)
        {
            return true;
        }
        let hex = cid.to_string();
        [false, true].into_iter().any(|forgotten| {
            self.store
                .with_sync(|c| super::closed::list(c, forgotten, None))
                .is_ok_and(|rows| rows.iter().any(|r| r.channel_id == hex))
        })
    }

    /// `recoverchannel`: a stub for each backup whose channel this node does not know; the
    /// ids of those inserted. Then connects to their peers (whose answer to our reestablish
    /// makes them close) and watches the chain for the closes.
    pub async fn recover_channels(
        self: &Arc<Self>,
        scbs: Vec<Scb>,
    ) -> Result<Vec<[u8; 32]>, RecoverError> {
        let mut inserted = vec![];
        let mut rescan_from: Option<u32> = None;
        for scb in scbs {
            let id = ChannelId(scb.channel_id);
            let known_stub = lock(&self.recovery.stubs)
                .iter()
                .any(|s| s.scb.channel_id == scb.channel_id);
            if known_stub || self.knows_channel(&scb.channel_id) {
                // CLN's words.
                self.log.info(&format!("channel {id} already exists!"));
                continue;
            }
            let stub = Stub {
                scb: scb.clone(),
                spent_by: None,
            };
            self.save_stub(&stub)?;
            lock(&self.recovery.stubs).push(stub);
            self.log.info(&format!(
                "Recovering channel {id} with {}: watching for funding txid: {}",
                scb.peer, scb.funding.txid
            ));
            if scb.funding_height > 0 {
                let h = scb.funding_height;
                rescan_from = Some(rescan_from.map_or(h, |r| r.min(h)));
            }
            inserted.push(scb.channel_id);
        }
        if inserted.is_empty() {
            return Ok(inserted);
        }
        self.refresh_recover_file_logged();
        // The peer may have closed already: look at the blocks since the funding.
        if let Some(from) = rescan_from
            && from <= self.tip_height()
        {
            self.rescan_for_stubs(from).await;
        }
        self.dial_stub_peers();
        Ok(inserted)
    }

    /// At start: the closes of stubs not closed yet are looked for from their funding
    /// block (a close seen before a crash may not have reached the sweeper).
    pub(crate) fn resume_recovery(self: &Arc<Self>) {
        let from = lock(&self.recovery.stubs)
            .iter()
            .filter(|s| s.spent_by.is_none() && s.scb.funding_height > 0)
            .map(|s| s.scb.funding_height)
            .min();
        if let Some(from) = from {
            let me = self.clone();
            tokio::spawn(async move { me.rescan_for_stubs(from).await });
        }
        self.dial_stub_peers();
    }

    /// Connects to every stub peer not connected (each connection is what makes the peer
    /// close: see the module's documentation).
    pub(crate) fn dial_stub_peers(self: &Arc<Self>) {
        let stubs: Vec<Scb> = lock(&self.recovery.stubs)
            .iter()
            .filter(|s| s.spent_by.is_none())
            .map(|s| s.scb.clone())
            .collect();
        let mut seen = std::collections::HashSet::new();
        for scb in stubs {
            let peer = scb.peer;
            if !seen.insert(peer) || self.peers.peer_by_node_id(&peer).is_some() {
                continue;
            }
            // Where we reached it last, else where the backup says.
            let known = lock(&self.peer_addrs).get(&peer).cloned();
            let Some(addr) = known.or_else(|| {
                super::net::NetAddr::parse(&scb.address, super::net::DEFAULT_PORT).ok()
            }) else {
                self.log.unusual(&format!(
                    "Recovery: no address known for {peer}; waiting for it to connect"
                ));
                continue;
            };
            let me = self.clone();
            tokio::spawn(async move {
                for dial in me.dials(&addr).await.unwrap_or_default() {
                    match me.connect(peer, dial.clone()).await {
                        Ok(()) => {
                            me.remember_peer(peer, &dial);
                            me.log.info(&format!(
                                "Recovery: connected to {peer}, so that it closes our channels"
                            ));
                            return;
                        }
                        Err(e) => me
                            .log
                            .info(&format!("Recovery: cannot connect to {peer} yet: {e}")),
                    }
                }
            });
        }
    }

    /// Adds a block listener from `from` on: the blocks since then are read again for the
    /// stubs' closes, then it follows the chain like the others.
    async fn rescan_for_stubs(self: &Arc<Self>, from: u32) {
        let Some(backend) = self.chain.backend() else {
            return;
        };
        let start = from.saturating_sub(1);
        match backend.block_hash_at(start).await {
            Ok(hash) => {
                self.log.info(&format!(
                    "Recovery: looking for closes from block {from} on"
                ));
                self.chain.add_listener(
                    &format!("recovery_from_{from}"),
                    Arc::new(RecoveryWatch(Arc::downgrade(self))),
                    Some(lightning::chain::BlockLocator::new(hash, start)),
                );
            }
            Err(e) => self.log.unusual(&format!(
                "Recovery: cannot read block {start} to look for closes: {e}"
            )),
        }
    }

    fn our_close_scripts(&self) -> &HashMap<ScriptBuf, bool> {
        self.recovery.spks.get_or_init(|| {
            let secp = Secp256k1::new();
            // LDK lists them in pairs: static-remote-key (P2WPKH), then anchors (P2WSH).
            self.keys
                .possible_v2_counterparty_closed_balance_spks(&secp)
                .into_iter()
                .enumerate()
                .map(|(i, s)| (s, i % 2 == 1))
                .collect()
        })
    }

    /// A block: transactions spending a stub's funding output are its peer's close; our
    /// outputs on them go to the sweeper. Finding their key takes a moment (see
    /// [`Self::descriptor_for`]), so it is done on a thread of its own and the block stream
    /// goes on; the stub is recorded as closed once the sweeper has the outputs (a crash
    /// in between finds the close again: stubs are looked for from their funding block at
    /// every start).
    pub(crate) fn recovery_block(self: &Arc<Self>, txs: &[&Transaction], height: u32) {
        let mut found: Vec<(Stub, Transaction)> = vec![];
        {
            let mut stubs = lock(&self.recovery.stubs);
            if stubs.iter().all(|s| s.spent_by.is_some()) {
                return;
            }
            for tx in txs {
                for s in stubs.iter_mut().filter(|s| s.spent_by.is_none()) {
                    if tx.input.iter().any(|i| i.previous_output == s.scb.funding) {
                        s.spent_by = Some(tx.compute_txid());
                        found.push((s.clone(), (*tx).clone()));
                    }
                }
            }
        }
        for (stub, tx) in found {
            let id = ChannelId(stub.scb.channel_id);
            self.log.info(&format!(
                "Recovery: funding output of channel {id} spent by {} at block {height}",
                tx.compute_txid()
            ));
            let me = self.clone();
            let spawned = std::thread::Builder::new()
                .name("recovery-sweep".into())
                .spawn(move || {
                    me.sweep_close(&stub, &tx);
                    if let Err(e) = me.save_stub(&stub) {
                        me.log
                            .unusual(&format!("Recovery: cannot record the close of {id}: {e}"));
                    }
                    me.refresh_recover_file_logged();
                });
            if let Err(e) = spawned {
                self.log
                    .unusual(&format!("Recovery: cannot sweep channel {id} now: {e}"));
            }
        }
    }

    /// Hands our outputs on `tx` (the close of `stub`'s channel) to the sweeper.
    fn sweep_close(&self, stub: &Stub, tx: &Transaction) {
        let id = ChannelId(stub.scb.channel_id);
        let ours: Vec<(u32, bool)> = tx
            .output
            .iter()
            .enumerate()
            .filter_map(|(i, o)| {
                self.our_close_scripts()
                    .get(&o.script_pubkey)
                    .map(|a| (i as u32, *a))
            })
            .collect();
        if ours.is_empty() {
            self.log.info(&format!(
                "Recovery: the close of {id} pays nothing to us (our balance was below dust, \
                 or it is not our peer's latest commitment)"
            ));
            return;
        }
        let mut descriptors = vec![];
        for (vout, anchors) in ours {
            let output = tx.output[vout as usize].clone();
            match self.descriptor_for(stub, tx.compute_txid(), vout, output, anchors) {
                Some(d) => descriptors.push(d),
                None => self.log.unusual(&format!(
                    "Recovery: no key found for output {}:{vout}",
                    tx.compute_txid()
                )),
            }
        }
        for d in &descriptors {
            self.log.info(&format!(
                "Recovery: sweeping {} sat of channel {id} ({}) into the wallet",
                match d {
                    SpendableOutputDescriptor::StaticPaymentOutput(p) => p.output.value.to_sat(),
                    _ => 0,
                },
                d.spendable_outpoint()
            ));
        }
        if !descriptors.is_empty()
            && self
                .sweeper
                .track_spendable_outputs(descriptors, Some(id), Some(stub.scb.peer), false, None)
                .is_err()
        {
            self.log.unusual(&format!(
                "Recovery: the sweeper refused the outputs of {id}"
            ));
        }
    }

    /// The descriptor the sweeper spends our balance on a peer's commitment with. The key
    /// is one of the 1,000 derived from the seed; LDK derives it from a channel's key
    /// parameters, so parameters giving that key are looked for (about a thousand
    /// derivations on average).
    fn descriptor_for(
        &self,
        stub: &Stub,
        txid: Txid,
        vout: u32,
        output: bitcoin::TxOut,
        anchors: bool,
    ) -> Option<SpendableOutputDescriptor> {
        use lightning::ln::chan_utils::{
            ChannelTransactionParameters, get_countersigner_payment_script,
        };
        use lightning::sign::{ChannelSigner, StaticPaymentOutputDescriptor};
        use lightning::types::features::ChannelTypeFeatures;
        let secp = Secp256k1::new();
        let mut channel_type = ChannelTypeFeatures::only_static_remote_key();
        if anchors {
            channel_type.set_anchors_zero_fee_htlc_tx_required();
        }
        for i in 0u64..1_000_000 {
            let mut params = [0u8; 32];
            params[..8].copy_from_slice(&i.to_be_bytes());
            params[8..24].copy_from_slice(b"fulgur-recovery\0");
            let signer = self.keys.derive_channel_keys(&params);
            let pubkeys = signer.pubkeys(&secp);
            if get_countersigner_payment_script(&channel_type, &pubkeys.payment_point)
                != output.script_pubkey
            {
                continue;
            }
            let value = stub.scb.funding_sat;
            return Some(SpendableOutputDescriptor::StaticPaymentOutput(
                StaticPaymentOutputDescriptor {
                    outpoint: lightning::chain::transaction::OutPoint {
                        txid,
                        index: vout as u16,
                    },
                    output,
                    channel_keys_id: params,
                    channel_value_satoshis: value,
                    channel_transaction_parameters: Some(ChannelTransactionParameters {
                        holder_pubkeys: pubkeys,
                        holder_selected_contest_delay: 0,
                        is_outbound_from_holder: false,
                        counterparty_parameters: None,
                        funding_outpoint: Some(lightning::chain::transaction::OutPoint {
                            txid: stub.scb.funding.txid,
                            index: stub.scb.funding.vout as u16,
                        }),
                        splice_parent_funding_txid: None,
                        channel_type_features: channel_type,
                        channel_value_satoshis: value,
                    }),
                },
            ));
        }
        None
    }
}

/// Block listener: the closes of channels being recovered.
pub struct RecoveryWatch(pub std::sync::Weak<super::Lightning>);

impl lightning::chain::Listen for RecoveryWatch {
    fn filtered_block_connected(
        &self,
        _header: &bitcoin::block::Header,
        txdata: &lightning::chain::transaction::TransactionData,
        height: u32,
    ) {
        if let Some(e) = self.0.upgrade() {
            let txs: Vec<&Transaction> = txdata.iter().map(|(_, t)| *t).collect();
            e.recovery_block(&txs, height);
        }
    }

    fn blocks_disconnected(&self, _fork_point: lightning::chain::BlockLocator) {
        // A close unconfirmed by a reorganisation stays recorded: the sweeper, which has
        // our output, follows reorganisations itself.
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scb(addr: &str) -> Scb {
        Scb {
            channel_id: [7; 32],
            peer: PublicKey::from_slice(&[
                2, 0x79, 0xbe, 0x66, 0x7e, 0xf9, 0xdc, 0xbb, 0xac, 0x55, 0xa0, 0x62, 0x95, 0xce,
                0x87, 0x0b, 0x07, 0x02, 0x9b, 0xfc, 0xdb, 0x2d, 0xce, 0x28, 0xd9, 0x59, 0xf2, 0x81,
                0x5b, 0x16, 0xf8, 0x17, 0x98,
            ])
            .unwrap(),
            funding: OutPoint {
                txid: Txid::from_byte_array([3; 32]),
                vout: 1,
            },
            funding_sat: 1_000_000,
            funding_height: 103,
            anchors: true,
            address: addr.into(),
        }
    }

    #[test]
    fn a_backup_reads_back_as_written() {
        for a in ["", "127.0.0.1:9735", "[::1]:9736", "xyz.onion:9735"] {
            let s = scb(a);
            assert_eq!(Scb::decode(&s.encode().unwrap()), Ok(s));
        }
    }

    #[test]
    fn malformed_backups_are_refused() {
        let good = scb("127.0.0.1:1").encode().unwrap();
        for n in 0..good.len() {
            assert_eq!(Scb::decode(&good[..n]), Err(ScbError::Truncated), "{n}");
        }
        let mut v = good.clone();
        v[0] = 2;
        assert_eq!(Scb::decode(&v), Err(ScbError::Version(2)));
        let mut v = good.clone();
        v[33] = 5;
        assert_eq!(Scb::decode(&v), Err(ScbError::NodeId));
        let mut v = good.clone();
        v.push(0);
        assert_eq!(Scb::decode(&v), Err(ScbError::Trailing(1)));
        let mut v = good.clone();
        v[SCB_FIXED - 3] = 0x82;
        assert_eq!(Scb::decode(&v), Err(ScbError::Flags(0x82)));
        assert_eq!(
            scb(&"x".repeat(256)).encode(),
            Err(ScbError::AddressTooLong)
        );
    }

    #[test]
    fn the_file_opens_only_with_its_key() {
        let key = [9u8; 32];
        let list = Backups {
            birthday: 101,
            channels: vec![scb("a:1"), scb("")],
        };
        let f = seal(&key, [1; 12], &list).unwrap();
        assert_eq!(open(&key, &f), Ok(list));
        assert_eq!(open(&[8u8; 32], &f), Err(ScbError::Decrypt));
        let mut bad = f.clone();
        *bad.last_mut().unwrap() ^= 1;
        assert_eq!(open(&key, &bad), Err(ScbError::Decrypt));
        let mut bad = f.clone();
        bad[4] = 2;
        assert_eq!(open(&key, &bad), Err(ScbError::Version(2)));
        assert_eq!(open(&key, b"XXXX"), Err(ScbError::Magic));
        let empty = Backups::default();
        assert_eq!(open(&key, &seal(&key, [2; 12], &empty).unwrap()), Ok(empty));
    }

    #[test]
    fn a_stub_reads_back_as_written() {
        for spent_by in [None, Some(Txid::from_byte_array([5; 32]))] {
            let s = Stub {
                scb: scb("h:1"),
                spent_by,
            };
            assert_eq!(Stub::decode(&s.encode().unwrap()), Ok(s));
        }
    }
}
