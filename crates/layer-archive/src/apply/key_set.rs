//! A set of 64-bit keys in about 8 bytes per key: the applier's `unpacked` names.
//!
//! A `HashSet<u64>` costs 9 bytes per bucket at most 7/8 full, a power of two of them, and
//! twice that while it grows: 18-36 bytes per key, 26 MB at peak for a layer of 10⁶ files
//! (issue #17). [`KeySet`] keeps merged keys in one sorted vector, found by binary search,
//! and the most recent ones in a small hash set, merged into the vector when they are 1/16
//! of it: O(1) amortised inserts, O(log n) lookups, ~8.5 bytes per key.

use std::collections::HashSet;

/// Recent keys are merged when there are this many, or 1/16 of the sorted ones if more.
const RECENT_MIN: usize = 1 << 12;

#[derive(Debug, Default)]
pub(super) struct KeySet {
    /// Merged keys, ascending, no repeats.
    sorted: Vec<u64>,
    /// Keys not merged yet (none of them in `sorted`).
    recent: HashSet<u64>,
}

impl KeySet {
    pub(super) fn contains(&self, key: u64) -> bool {
        self.recent.contains(&key) || self.sorted.binary_search(&key).is_ok()
    }

    pub(super) fn insert(&mut self, key: u64) {
        if self.sorted.binary_search(&key).is_ok() || !self.recent.insert(key) {
            return;
        }
        if self.recent.len() >= RECENT_MIN.max(self.sorted.len() / 16) {
            self.merge();
        }
    }

    /// Moves the recent keys into the sorted vector (in place, from the back).
    fn merge(&mut self) {
        let mut recent: Vec<u64> = self.recent.drain().collect();
        recent.sort_unstable();
        let old = self.sorted.len();
        self.sorted.reserve_exact(recent.len());
        self.sorted.resize(old + recent.len(), 0);
        // Merge from the largest down: `w` never passes an unread element of either side.
        let (mut i, mut j, mut w) = (old, recent.len(), old + recent.len());
        while j > 0 {
            w -= 1;
            if i > 0 && self.sorted[i - 1] > recent[j - 1] {
                i -= 1;
                self.sorted[w] = self.sorted[i];
            } else {
                j -= 1;
                self.sorted[w] = recent[j];
            }
        }
        self.recent.shrink_to(RECENT_MIN);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every key inserted is found, every other is not, across many merges and with
    /// repeats, compared with a `HashSet`.
    #[test]
    fn behaves_as_a_set() {
        let mut set = KeySet::default();
        let mut want = HashSet::new();
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for n in 0..200_000u64 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            // Every fourth key repeats an earlier one.
            let key = if n % 4 == 3 { x % (n + 1) } else { x };
            set.insert(key);
            want.insert(key);
            if n % 997 == 0 {
                assert!(set.contains(key));
            }
        }
        assert!(set.sorted.len() > set.recent.len(), "merges happened");
        assert!(
            set.sorted.windows(2).all(|w| w[0] < w[1]),
            "sorted, no repeats"
        );
        assert_eq!(set.sorted.len() + set.recent.len(), want.len());
        for &k in &want {
            assert!(set.contains(k), "{k}");
        }
        for k in 0..10_000u64 {
            let probe = k.wrapping_mul(0x2545_f491_4f6c_dd1d);
            assert_eq!(set.contains(probe), want.contains(&probe), "{probe}");
        }
    }
}
