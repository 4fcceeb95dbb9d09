//! [`EntryDigest`]: an order-sensitive digest of an entry sequence, in constant memory.

use sha2::{Digest, Sha256};

use super::header::Header;

/// Folds the entries of a tar stream, in order, into one SHA-256 over a canonical encoding
/// of each entry's kind, name, link target, size, mode, owner and mtime. Two readers of
/// one stream that fold what they saw must end with equal values; the layer store checks
/// that the applier and the tar-split disassembler saw the same layer this way.
#[derive(Debug, Clone)]
pub struct EntryDigest {
    hasher: Sha256,
    entries: u64,
}

impl Default for EntryDigest {
    fn default() -> Self {
        EntryDigest {
            hasher: Sha256::new(),
            entries: 0,
        }
    }
}

impl EntryDigest {
    /// An empty sequence.
    pub fn new() -> Self {
        EntryDigest::default()
    }

    /// Adds the next entry.
    pub fn push(&mut self, h: &Header) {
        let mut fixed = [0u8; 1 + 8 * 7];
        fixed[0] = h.kind.type_flag();
        let numbers = [
            h.name.len() as i64,
            h.link_name.len() as i64,
            h.size,
            h.mode,
            h.uid,
            h.gid,
            h.mtime.sec,
        ];
        for (i, n) in numbers.iter().enumerate() {
            fixed[1 + 8 * i..9 + 8 * i].copy_from_slice(&n.to_le_bytes());
        }
        self.hasher.update(fixed);
        self.hasher.update(h.mtime.nsec.to_le_bytes());
        self.hasher.update(&h.name);
        self.hasher.update(&h.link_name);
        self.entries += 1;
    }

    /// Entries folded so far.
    pub fn entries(&self) -> u64 {
        self.entries
    }

    /// The digest of the sequence so far: `(entries, sha256)`.
    pub fn value(&self) -> EntrySequence {
        EntrySequence {
            entries: self.entries,
            sha256: self.hasher.clone().finalize().into(),
        }
    }
}

/// The value of an [`EntryDigest`]: how many entries, and their digest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EntrySequence {
    /// Number of entries.
    pub entries: u64,
    /// SHA-256 of their canonical encoding.
    pub sha256: [u8; 32],
}

impl std::fmt::Display for EntrySequence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} entries, sha256:", self.entries)?;
        for b in &self.sha256[..8] {
            write!(f, "{b:02x}")?;
        }
        f.write_str("…")
    }
}
