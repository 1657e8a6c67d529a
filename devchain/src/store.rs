//! Persistence: an append-only file of raw blocks (`blocks.dat`, each record a 4-byte
//! little-endian length then the consensus-encoded block) and a small text file of the blocks
//! marked invalid by `invalidateblock` (`invalidated`, one hash a line). The chain state is rebuilt
//! by replaying the blocks on start; the mempool is not kept.

use std::collections::BTreeSet;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use anyhow::Context;
use bitcoin::consensus::{deserialize, serialize};
use bitcoin::{Block, BlockHash};

pub struct BlockStore {
    file: File,
    dir: PathBuf,
}

impl BlockStore {
    /// Opens (or creates) the store in `dir` and returns the blocks it holds, in the order they
    /// were appended. A torn record at the end (a crash mid-write) is cut off.
    pub fn open(dir: &Path) -> anyhow::Result<(BlockStore, Vec<Block>)> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let path = dir.join("blocks.dat");
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        let mut data = Vec::new();
        file.read_to_end(&mut data)?;
        let mut blocks = Vec::new();
        let mut pos = 0usize;
        while pos + 4 <= data.len() {
            let len = u32::from_le_bytes([data[pos], data[pos + 1], data[pos + 2], data[pos + 3]])
                as usize;
            let Some(raw) = data.get(pos + 4..pos + 4 + len) else {
                break;
            };
            match deserialize::<Block>(raw) {
                Ok(block) => blocks.push(block),
                Err(_) => break,
            }
            pos += 4 + len;
        }
        if pos != data.len() {
            eprintln!(
                "devchain: {}: dropping {} bytes of a torn record at the end",
                path.display(),
                data.len() - pos
            );
            file.set_len(pos as u64)?;
            file.seek(SeekFrom::End(0))?;
        }
        Ok((
            BlockStore {
                file,
                dir: dir.to_path_buf(),
            },
            blocks,
        ))
    }

    pub fn append(&mut self, block: &Block) -> std::io::Result<()> {
        let raw = serialize(block);
        let mut record = Vec::with_capacity(raw.len() + 4);
        record.extend_from_slice(&(raw.len() as u32).to_le_bytes());
        record.extend_from_slice(&raw);
        self.file.write_all(&record)?;
        self.file.flush()
    }

    pub fn read_invalidated(&self) -> BTreeSet<BlockHash> {
        std::fs::read_to_string(self.dir.join("invalidated"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| BlockHash::from_str(l.trim()).ok())
            .collect()
    }

    pub fn write_invalidated(&self, roots: &BTreeSet<BlockHash>) -> std::io::Result<()> {
        let text: String = roots.iter().map(|h| format!("{h}\n")).collect();
        write_atomically(&self.dir.join("invalidated"), text.as_bytes())
    }
}

/// Writes `path` through a temporary file and a rename, so readers never see half a file.
pub fn write_atomically(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, data)?;
    std::fs::rename(&tmp, path)
}
