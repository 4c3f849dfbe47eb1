//! The one source of randomness: AWS-LC's `SystemRandom` (a DRBG seeded from the OS).

use aws_lc_rs::rand::{SecureRandom, SystemRandom};

/// Fills `dest` with cryptographically secure random bytes.
///
/// # Panics
///
/// Only if AWS-LC's DRBG reports a failure, which means the operating system's entropy source is
/// broken. There is no safe way to continue: every key generated afterwards could be predictable,
/// so this is the crate's single deliberate fail-stop.
#[expect(
    clippy::panic,
    reason = "a broken system RNG must stop the process; continuing would mint predictable keys"
)]
pub(crate) fn fill_random(dest: &mut [u8]) {
    if SystemRandom::new().fill(dest).is_err() {
        panic!("the system random number generator failed");
    }
}

/// Fills `dest` with uniformly distributed characters from `alphabet` (at most 256 symbols),
/// by rejection sampling so that no symbol is more likely than another.
pub(crate) fn fill_random_from_alphabet(dest: &mut [u8], alphabet: &[u8]) {
    let n = alphabet.len();
    // The largest multiple of n that fits in a byte: bytes at or above it are rejected.
    let limit = 256 - (256 % n.max(1));
    let mut pool = zeroize::Zeroizing::new([0u8; 64]);
    let mut filled = 0;
    while filled < dest.len() {
        fill_random(pool.as_mut_slice());
        for &byte in pool.iter() {
            let Some(slot) = dest.get_mut(filled) else {
                break;
            };
            if usize::from(byte) < limit
                && let Some(&symbol) = alphabet.get(usize::from(byte) % n)
            {
                *slot = symbol;
                filled += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alphabet_sampling_uses_only_alphabet_and_all_of_it() {
        let mut buf = [0u8; 4096];
        fill_random_from_alphabet(&mut buf, b"abc");
        assert!(buf.iter().all(|b| b"abc".contains(b)));
        for c in b"abc" {
            let count = buf.iter().filter(|b| *b == c).count();
            assert!(count > 1000, "symbol {c} drawn {count} times of 4096");
        }
    }

    #[test]
    fn random_fills_differ() {
        let (mut a, mut b) = ([0u8; 32], [0u8; 32]);
        fill_random(&mut a);
        fill_random(&mut b);
        assert_ne!(a, b);
    }
}
