//! Go tar-split's duplicate-path rule in a fixed number of bytes per name.
//!
//! Go's packer and unpacker keep every cleaned file name (`filepath.Clean(GetName())`) in a
//! map and fail with `duplicates of file paths not supported` when one comes again. Kept as
//! names, that set grows with the bytes of all names (~100 bytes per entry here, 126 MiB
//! for a layer of 10⁶ files: issue #17). [`SeenPaths`] keeps a 128-bit keyed hash of each
//! cleaned name instead, 16 bytes plus a little index (about 20 bytes per name in all).
//!
//! # Why a hash cannot change the output
//!
//! * Equal cleaned names always hash equal, so every duplicate Go refuses is refused here.
//! * Two *different* names with equal hashes (a collision) make the second one look like a
//!   duplicate: the packer or unpacker then fails with [`crate::Error::DuplicatePath`]. A
//!   collision can only turn an archive Go accepts into a clear error; it can never make us
//!   accept, write or reassemble anything Go would not.
//! * The hash is SipHash-2-4 with a 128-bit output under a 128-bit key drawn from the
//!   operating system's random source once per process. The key is never written, logged
//!   or derived from input, and the hashes never leave this module, so a hostile archive
//!   cannot aim for a collision: with the key unknown, SipHash-2-4's outputs are (as its
//!   designers claim for a PRF) indistinguishable from random, and the chance that any two
//!   of `n` distinct names collide is at most `n² / 2¹²⁹`: below 10⁻²¹ even for 10⁹ names.
//!   A keyed hash also keeps the in-memory table safe from hash flooding.
//!
//! # Layout
//!
//! Hashes are kept in one sorted `Vec<u128>` (16 bytes each, no per-entry allocation), found
//! through a bucket index on their top bits, plus a small hash set of the most recent ones.
//! When the recent set holds 1/16 of the sorted ones, it is sorted and merged in place into
//! the vector. Lookups cost O(1) expected; merges cost O(n) amortised over n/16 inserts.

use std::collections::HashSet;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::OnceLock;

use siphasher::sip128::SipHasher24;

use crate::clean::clean_path_into;
use crate::error::{EntryName, Error, Result};

/// Recent hashes are merged into the sorted vector when there are this many, or 1/16 of
/// the sorted ones if that is more.
const RECENT_MIN: usize = 1 << 12;

/// Cleaned names already seen, as keyed 128-bit hashes.
#[derive(Debug)]
pub(crate) struct SeenPaths {
    hasher: SipHasher24,
    /// Every merged hash, ascending.
    sorted: Vec<u128>,
    /// `sorted[index[b] as usize..index[b + 1] as usize]` holds the hashes whose top
    /// `index_bits` bits are `b`.
    index: Vec<u32>,
    index_bits: u32,
    /// Hashes not merged yet.
    recent: HashSet<u128, BuildHasherDefault<Low64>>,
    /// Scratch for names that `clean_path` changes.
    cleaned: Vec<u8>,
}

impl Default for SeenPaths {
    fn default() -> Self {
        let [k0, k1] = *process_key();
        SeenPaths {
            hasher: SipHasher24::new_with_keys(k0, k1),
            sorted: Vec::new(),
            index: vec![0, 0],
            index_bits: 0,
            recent: HashSet::default(),
            cleaned: Vec::new(),
        }
    }
}

impl SeenPaths {
    /// Records the cleaned form of `name`, or fails with [`Error::DuplicatePath`] if it was
    /// recorded before (Go's `ErrDuplicatePath`).
    pub(crate) fn insert(&mut self, name: &[u8]) -> Result<()> {
        if self.first_time(name) {
            Ok(())
        } else {
            Err(Error::DuplicatePath {
                name: EntryName(name.to_vec()),
            })
        }
    }

    /// Records the cleaned form of `name`; false if it was recorded before (or, with
    /// probability below 2⁻⁶⁰ for any realistic archive, another name has the same hash).
    fn first_time(&mut self, name: &[u8]) -> bool {
        let bytes = match crate::clean::clean_view(name) {
            Some(clean) => clean,
            None => {
                clean_path_into(name, &mut self.cleaned);
                &self.cleaned
            }
        };
        let h = self.hasher.hash(bytes).as_u128();
        if self.in_sorted(h) || !self.recent.insert(h) {
            return false;
        }
        if self.recent.len() >= RECENT_MIN.max(self.sorted.len() / 16) {
            self.merge();
        }
        true
    }

    /// How many names are recorded.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.sorted.len() + self.recent.len()
    }

    fn bucket(&self, h: u128) -> usize {
        if self.index_bits == 0 {
            0
        } else {
            (h >> (128 - self.index_bits)) as usize
        }
    }

    fn in_sorted(&self, h: u128) -> bool {
        let b = self.bucket(h);
        let (start, end) = (self.index[b] as usize, self.index[b + 1] as usize);
        self.sorted[start..end].contains(&h)
    }

    fn merge(&mut self) {
        let mut batch: Vec<u128> = self.recent.drain().collect();
        batch.sort_unstable();
        // Merge from the back into the grown vector: no second copy of the sorted hashes.
        let old = self.sorted.len();
        self.sorted.resize(old + batch.len(), 0);
        let (mut i, mut j) = (old, batch.len());
        for k in (0..self.sorted.len()).rev() {
            if j == 0 {
                break;
            }
            if i > 0 && self.sorted[i - 1] > batch[j - 1] {
                self.sorted[k] = self.sorted[i - 1];
                i -= 1;
            } else {
                self.sorted[k] = batch[j - 1];
                j -= 1;
            }
        }
        // About two hashes per bucket: 2 bytes of index per name.
        let n = self.sorted.len();
        self.index_bits = (usize::BITS - (n / 2).leading_zeros()).min(31);
        let buckets = 1usize << self.index_bits;
        self.index.clear();
        self.index.reserve(buckets + 1);
        let mut at = 0usize;
        for b in 0..buckets {
            self.index.push(at as u32);
            while at < n && self.bucket(self.sorted[at]) == b {
                at += 1;
            }
        }
        self.index.push(n as u32);
    }
}

/// The process's SipHash key: 128 random bits from the OS, drawn on first use.
fn process_key() -> &'static [u64; 2] {
    static KEY: OnceLock<[u64; 2]> = OnceLock::new();
    KEY.get_or_init(|| {
        let mut bytes = [0u8; 16];
        if getrandom::fill(&mut bytes).is_err() {
            // No OS random source (never seen on Linux): std's per-process random hash
            // keys, which come from the same kind of source where one exists.
            use std::hash::BuildHasher;
            let state = std::collections::hash_map::RandomState::new();
            bytes[..8].copy_from_slice(&state.hash_one(1u8).to_le_bytes());
            bytes[8..].copy_from_slice(&state.hash_one(2u8).to_le_bytes());
        }
        let (a, b) = bytes.split_at(8);
        [
            u64::from_le_bytes(a.try_into().expect("8 bytes")),
            u64::from_le_bytes(b.try_into().expect("8 bytes")),
        ]
    })
}

/// Buckets the recent set by the low 64 bits of each (already keyed, uniform) hash.
#[derive(Debug, Default)]
struct Low64(u64);

impl Hasher for Low64 {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u128` is used; fold anything else rather than lose it.
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.0 = self.0.rotate_left(29) ^ u64::from_le_bytes(word);
        }
    }
    fn write_u128(&mut self, v: u128) {
        self.0 = v as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicates_by_cleaned_name() {
        let mut s = SeenPaths::default();
        assert!(s.first_time(b"./a.txt"));
        assert!(!s.first_time(b"a.txt"));
        assert!(s.first_time(b"d/"));
        assert!(!s.first_time(b"d"));
        assert!(!s.first_time(b"d//./"));
        assert!(s.first_time(b"/d"), "rooted is another name");
        assert!(s.first_time(b""));
        assert!(!s.first_time(b"."));
        assert!(s.first_time(b"x/../y"));
        assert!(!s.first_time(b"y"));
    }

    #[test]
    fn many_names_across_merges() {
        let mut s = SeenPaths::default();
        let n = 100_000u32;
        for i in 0..n {
            assert!(
                s.first_time(format!("dir{}/file{i}", i % 97).as_bytes()),
                "{i}"
            );
        }
        assert_eq!(s.len(), n as usize);
        assert!(s.sorted.len() > n as usize / 2, "merged");
        assert!(s.sorted.is_sorted());
        for i in (0..n).step_by(7) {
            assert!(
                !s.first_time(format!("./dir{}//file{i}", i % 97).as_bytes()),
                "{i}"
            );
        }
        assert!(s.first_time(b"dir0/file100000"));
        // About 20 bytes per name, not ~100.
        let bytes = s.sorted.capacity() * 16 + s.index.capacity() * 4 + s.recent.capacity() * 17;
        assert!(bytes < 48 * n as usize, "{bytes}");
    }

    #[test]
    fn one_key_per_process() {
        let (a, b) = (SeenPaths::default(), SeenPaths::default());
        assert_eq!(a.hasher.keys(), b.hasher.keys());
        assert_ne!(a.hasher.keys(), (0, 0));
    }
}
