//! Opaque bearer tokens (refresh tokens, one-time codes): 256 random bits, of which the server
//! stores only a SHA-256 hash.
//!
//! A plain hash suffices (unlike passwords) because the token has 256 bits of entropy: there is
//! nothing to guess. Look the row up by [`TokenHash`]; equality on it is constant-time.

use aws_lc_rs::digest;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::rng::fill_random;

/// Random bytes in a token.
const TOKEN_BYTES: usize = 32;
/// Length of a token as text (unpadded base64url of 32 bytes).
pub const TOKEN_LEN: usize = 43;

/// A token as handed to (or presented by) a client. Zeroized on drop; no `Debug`/`Clone`.
pub struct OpaqueToken(Zeroizing<String>);

/// A presented string is not a token of ours.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the token is malformed")]
pub struct TokenError;

impl OpaqueToken {
    /// Wraps a token presented by a client after checking its shape (43 base64url characters),
    /// so that junk is refused before any lookup.
    ///
    /// # Errors
    ///
    /// [`TokenError`] if the string cannot be a token.
    pub fn from_presented(token: &str) -> Result<Self, TokenError> {
        let ok = token.len() == TOKEN_LEN
            && token
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !ok {
            return Err(TokenError);
        }
        Ok(Self(Zeroizing::new(token.to_owned())))
    }

    /// The token, to send to the client once.
    #[must_use]
    pub fn expose_secret(&self) -> &str {
        &self.0
    }

    /// `SHA-256(token)`, the value to store and look up by.
    #[must_use]
    pub fn hash(&self) -> TokenHash {
        let digest = digest::digest(&digest::SHA256, self.0.as_bytes());
        let mut out = [0u8; 32];
        out.iter_mut()
            .zip(digest.as_ref())
            .for_each(|(o, d)| *o = *d);
        TokenHash(out)
    }
}

/// Mints a token and its hash. Give the token to the client; store only the hash.
#[must_use]
pub fn generate_token() -> (OpaqueToken, TokenHash) {
    let mut raw = Zeroizing::new([0u8; TOKEN_BYTES]);
    fill_random(raw.as_mut_slice());
    let token = OpaqueToken(Zeroizing::new(URL_SAFE_NO_PAD.encode(raw.as_slice())));
    let hash = token.hash();
    (token, hash)
}

/// The SHA-256 of a token. Not secret by itself; equality is constant-time.
#[derive(Debug, Clone, Copy, Eq)]
pub struct TokenHash([u8; 32]);

impl TokenHash {
    /// The 32 bytes, to store.
    #[must_use]
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Reads a stored hash back.
    ///
    /// # Errors
    ///
    /// [`crate::KeyLengthError`] unless `bytes` is 32 bytes long.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, crate::KeyLengthError> {
        <[u8; 32]>::try_from(bytes)
            .map(Self)
            .map_err(|_| crate::KeyLengthError(bytes.len()))
    }

    /// True if `token` hashes to this value (constant-time comparison).
    #[must_use]
    pub fn matches(&self, token: &OpaqueToken) -> bool {
        *self == token.hash()
    }
}

impl PartialEq for TokenHash {
    fn eq(&self, other: &Self) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::tests::assert_not_impl;

    #[test]
    fn token_cannot_be_printed_or_cloned() {
        assert_not_impl!(OpaqueToken: Clone, Copy, core::fmt::Debug, core::fmt::Display);
    }

    #[test]
    fn generated_token_round_trips_through_presentation() {
        let (token, hash) = generate_token();
        assert_eq!(token.expose_secret().len(), TOKEN_LEN);
        let presented = OpaqueToken::from_presented(token.expose_secret()).unwrap();
        assert!(hash.matches(&presented));
        assert_eq!(TokenHash::from_bytes(hash.as_bytes()).unwrap(), hash);
    }

    #[test]
    fn other_tokens_do_not_match() {
        let (_, hash) = generate_token();
        let (other, _) = generate_token();
        assert!(!hash.matches(&other));
    }

    #[test]
    fn known_hash_vector() {
        let token = OpaqueToken::from_presented(&"A".repeat(TOKEN_LEN)).unwrap();
        let hex = hex::encode(token.hash().as_bytes());
        // sha256 of 43 × "A", computed independently.
        assert_eq!(
            hex,
            "0f007385b6f9d4b7eeb2748605afe1a984a0a3bfa3f014d09e2a784ce9e5cd1a"
        );
    }

    #[test]
    fn presented_junk_is_refused() {
        for junk in [
            "",
            "short",
            &"A".repeat(44),
            &format!("{}=", "A".repeat(42)),
            &"é".repeat(21),
        ] {
            assert!(OpaqueToken::from_presented(junk).is_err(), "{junk:?}");
        }
    }
}
