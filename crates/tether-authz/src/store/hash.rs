//! A small, fast, non-cryptographic hasher for integer keys (FxHash).
//!
//! Keys are interned ids chosen by the store, not by callers, except the
//! string interner, which keeps std's SipHash against hash flooding.

use std::hash::{BuildHasherDefault, Hasher};

const SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

/// FxHash state.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct FxHasher {
    hash: u64,
}

impl FxHasher {
    fn add(&mut self, word: u64) {
        self.hash = (self.hash.rotate_left(5) ^ word).wrapping_mul(SEED);
    }
}

impl Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut buf = [0u8; 8];
            for (d, s) in buf.iter_mut().zip(chunk) {
                *d = *s;
            }
            self.add(u64::from_le_bytes(buf));
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
