//! A small, fast, non-cryptographic hasher for integer keys (FxHash).
//!
//! [`FxHasher`] is for keys that are interned ids chosen by the store, not by
//! callers. [`FoldHasher`] is for strings: keyed per process, so that callers
//! cannot pick colliding inputs, and several times faster than SipHash.

use std::hash::{BuildHasherDefault, Hasher};

const SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

/// FxHash state.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct FxHasher {
    hash: u64,
}

impl FxHasher {
    #[inline]
    fn add(&mut self, word: u64) {
        self.hash = (self.hash.rotate_left(5) ^ word).wrapping_mul(SEED);
    }
}

impl Hasher for FxHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut rest = bytes;
        while let Some((head, tail)) = rest.split_first_chunk::<8>() {
            self.add(u64::from_le_bytes(*head));
            rest = tail;
        }
        if let Some((head, tail)) = rest.split_first_chunk::<4>() {
            self.add(u64::from(u32::from_le_bytes(*head)));
            rest = tail;
        }
        for b in rest {
            self.add(u64::from(*b));
        }
    }

    fn write_u32(&mut self, i: u32) {
        self.add(u64::from(i));
    }

    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }

    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }

    fn finish(&self) -> u64 {
        self.hash
    }
}

/// Build hasher for [`FxHasher`].
pub(crate) type FxBuild = BuildHasherDefault<FxHasher>;

/// A fast keyed hasher for strings (folded 64×64→128-bit multiplies, in the
/// style of foldhash). The key is drawn once per process from std's random
/// source, so colliding inputs cannot be chosen in advance.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FoldHasher {
    hash: u64,
}

const MUL: u64 = 0x9e37_79b9_7f4a_7c15;

#[inline]
fn fold_mul(a: u64, b: u64) -> u64 {
    let full = u128::from(a) * u128::from(b);
    // Truncation is the point: fold the high half onto the low half.
    #[expect(clippy::cast_possible_truncation, reason = "folding 128 bits into 64")]
    let (lo, hi) = (full as u64, (full >> 64) as u64);
    lo ^ hi
}

impl FoldHasher {
    #[inline]
    fn add(&mut self, word: u64) {
        self.hash = fold_mul(self.hash ^ word, MUL);
    }
}

impl Hasher for FoldHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let len = bytes.len() as u64;
        let mut rest = bytes;
        while let Some((head, tail)) = rest.split_first_chunk::<8>() {
            self.add(u64::from_le_bytes(*head));
            rest = tail;
        }
        let mut word = 0u64;
        for (i, b) in rest.iter().enumerate() {
            word |= u64::from(*b) << (8 * i);
        }
        // The length tells "ab" from "ab\0".
        self.add(word ^ len.rotate_right(8));
    }

    #[inline]
    fn write_u8(&mut self, i: u8) {
        // `str` ends with a 0xff terminator: `write` already mixed in the length.
        if i != 0xff {
            self.add(u64::from(i));
        }
    }

    fn write_u32(&mut self, i: u32) {
        self.add(u64::from(i));
    }

    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }

    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }

    fn finish(&self) -> u64 {
        fold_mul(self.hash, MUL.rotate_left(29) | 1)
    }
}

/// Builds [`FoldHasher`]s keyed with a per-process random seed.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FoldBuild {
    seed: u64,
}

impl Default for FoldBuild {
    fn default() -> Self {
        use std::hash::BuildHasher;
        use std::sync::OnceLock;
        static SEED: OnceLock<u64> = OnceLock::new();
        let seed = *SEED
            .get_or_init(|| std::collections::hash_map::RandomState::new().hash_one(0x5eed_u64));
        Self { seed }
    }
}

impl std::hash::BuildHasher for FoldBuild {
    type Hasher = FoldHasher;

    fn build_hasher(&self) -> FoldHasher {
        FoldHasher { hash: self.seed }
    }
}

#[cfg(test)]
mod tests {
    use std::hash::BuildHasher;

    use super::FoldBuild;

    #[test]
    fn fold_hash_separates_close_strings() {
        let b = FoldBuild::default();
        let words = [
            "",
            "a",
            "b",
            "ab",
            "ba",
            "ab\0",
            "abcdefgh",
            "abcdefghi",
            "abcdefgi",
        ];
        let hashes: std::collections::HashSet<u64> = words.iter().map(|w| b.hash_one(w)).collect();
        assert_eq!(hashes.len(), words.len());
        assert_eq!(
            b.hash_one("resource"),
            FoldBuild::default().hash_one("resource")
        );
    }
}
