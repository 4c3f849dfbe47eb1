//! Small encodings written out by hand: base62 digits, CRC-32 (IEEE) and hex.

/// The base62 alphabet, in digit order: `0-9`, `A-Z`, `a-z`.
pub(crate) const BASE62: &[u8; 62] =
    b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// The value of one base62 digit, or `None` if `c` is not in the alphabet.
pub(crate) fn base62_digit(c: u8) -> Option<u32> {
    match c {
        b'0'..=b'9' => Some(u32::from(c - b'0')),
        b'A'..=b'Z' => Some(u32::from(c - b'A') + 10),
        b'a'..=b'z' => Some(u32::from(c - b'a') + 36),
        _ => None,
    }
}

/// True if every byte of `s` is a base62 character.
pub(crate) fn is_base62(s: &[u8]) -> bool {
    s.iter().all(u8::is_ascii_alphanumeric)
}

/// `value` as exactly six base62 digits, most significant first, left-padded with `0`.
/// 62^6 ≈ 5.7e10 > 2^32, so every `u32` fits.
pub(crate) fn base62_u32_6(mut value: u32) -> [u8; 6] {
    let mut out = [b'0'; 6];
    for slot in out.iter_mut().rev() {
        let digit = usize::try_from(value % 62).unwrap_or(0);
        *slot = BASE62.get(digit).copied().unwrap_or(b'0');
        value /= 62;
    }
    out
}

/// Decodes six base62 digits into a `u32`; `None` on a bad digit or a value over `u32::MAX`.
pub(crate) fn base62_decode_u32(digits: &[u8]) -> Option<u32> {
    let mut value: u64 = 0;
    for &c in digits {
        value = value
            .checked_mul(62)?
            .checked_add(u64::from(base62_digit(c)?))?;
    }
    u32::try_from(value).ok()
}

/// CRC-32 as used by zlib, PNG and GitHub's token checksums (reflected polynomial `0xEDB88320`,
/// initial value and final xor `0xFFFFFFFF`). Every request with an API key computes one.
pub(crate) fn crc32(data: &[u8]) -> u32 {
    crc32fast::hash(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32_check_value() {
        // The standard check value for CRC-32/ISO-HDLC.
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(b""), 0);
    }

    #[test]
    fn base62_round_trip_edges() {
        for v in [0, 1, 61, 62, 3843, 0xDEAD_BEEF, u32::MAX] {
            let digits = base62_u32_6(v);
            assert!(is_base62(&digits));
            assert_eq!(base62_decode_u32(&digits), Some(v));
        }
        assert_eq!(&base62_u32_6(61), b"00000z");
        assert_eq!(base62_decode_u32(b"zzzzzz"), None, "62^6-1 exceeds u32");
        assert_eq!(base62_decode_u32(b"00000_"), None);
    }

    #[test]
    fn base62_digits_match_alphabet() {
        for (i, &c) in BASE62.iter().enumerate() {
            assert_eq!(base62_digit(c), Some(i as u32));
        }
    }
}
