//! API keys (brief §6): format, generation, parsing and peppered hashing.
//!
//! Layout (59 ASCII characters, no separator before the checksum):
//!
//! ```text
//! tk_live_3kT9xQw2LmZa_8fJ2kLq0ZxP4mN7bV1cR5tY9wE3uI6oA1JMRWE
//! ^       ^           ^^                               ^
//! 0       8          20 21                             53
//! prefix  id (12)     _ secret (32 base62)             checksum (6)
//! ```
//!
//! The checksum is CRC-32 (IEEE) of the first 53 characters, written as six base62 digits
//! (most significant first, `0`-padded). A secret scanner can recognize a real key offline; it
//! proves nothing about validity, only that the string was not mistyped or invented.

use core::fmt;
use core::str::FromStr;

use aws_lc_rs::hmac;
use secrecy::{ExposeSecret, SecretBox};
use subtle::ConstantTimeEq;
use zeroize::{ZeroizeOnDrop, Zeroizing};

use crate::encoding::{BASE62, base62_decode_u32, base62_u32_6, crc32, is_base62};
use crate::rng::fill_random_from_alphabet;

/// Total length of an API key in bytes.
pub const API_KEY_LEN: usize = PREFIX_LEN + ID_LEN + 1 + SECRET_LEN + CHECKSUM_LEN;
/// Length of the `tk_live_` / `tk_test_` prefix.
pub const PREFIX_LEN: usize = 8;
/// Length of the public key id.
pub const ID_LEN: usize = 12;
/// Length of the random secret (base62: 32 × log2(62) ≈ 190 bits).
pub const SECRET_LEN: usize = 32;
/// Length of the base62 CRC-32 checksum.
pub const CHECKSUM_LEN: usize = 6;
/// Offset of the checksum: everything before it is covered by the CRC.
const CHECKSUM_START: usize = API_KEY_LEN - CHECKSUM_LEN;

/// Why a string is not a well-formed API key. The messages never echo the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ApiKeyError {
    /// Not exactly [`API_KEY_LEN`] bytes.
    #[error("an API key is {API_KEY_LEN} characters long")]
    Length,
    /// Neither `tk_live_` nor `tk_test_`.
    #[error("an API key starts with tk_live_ or tk_test_")]
    Prefix,
    /// The id is not 12 base62 characters.
    #[error("the API key id is not 12 base62 characters")]
    Id,
    /// No `_` between id and secret.
    #[error("the API key has no separator after its id")]
    Separator,
    /// The secret is not 32 base62 characters.
    #[error("the API key secret is not base62")]
    Secret,
    /// The checksum does not match: a typo, a truncation or a made-up key.
    #[error("the API key checksum does not match")]
    Checksum,
}

/// Whether a key is for production use or for tests; it is visible in the prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyEnv {
    /// `tk_live_`
    Live,
    /// `tk_test_`
    Test,
}

impl KeyEnv {
    /// The 8-character prefix of keys of this kind.
    #[must_use]
    pub const fn prefix(self) -> &'static str {
        match self {
            Self::Live => "tk_live_",
            Self::Test => "tk_test_",
        }
    }

    fn from_prefix(prefix: &[u8]) -> Option<Self> {
        [Self::Live, Self::Test]
            .into_iter()
            .find(|env| env.prefix().as_bytes() == prefix)
    }
}

/// The public identifier of an API key: 12 base62 characters. Safe to log and to index on.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ApiKeyId(String);

impl ApiKeyId {
    fn generate() -> Self {
        let mut id = [0u8; ID_LEN];
        fill_random_from_alphabet(&mut id, BASE62);
        Self(id.iter().map(|&b| char::from(b)).collect())
    }

    fn from_ascii(bytes: &[u8]) -> Result<Self, ApiKeyError> {
        if bytes.len() != ID_LEN || !is_base62(bytes) {
            return Err(ApiKeyError::Id);
        }
        Ok(Self(bytes.iter().map(|&b| char::from(b)).collect()))
    }

    /// The id as a string.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for ApiKeyId {
    type Err = ApiKeyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::from_ascii(s.as_bytes())
    }
}

impl fmt::Display for ApiKeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The 32-character secret part of an API key. Zeroized on drop; no `Debug`/`Clone`/`Display`.
pub struct ApiKeySecret(SecretBox<[u8; SECRET_LEN]>);

impl ApiKeySecret {
    fn from_ascii(bytes: &[u8]) -> Result<Self, ApiKeyError> {
        if bytes.len() != SECRET_LEN || !is_base62(bytes) {
            return Err(ApiKeyError::Secret);
        }
        Ok(Self(SecretBox::init_with_mut(
            |s: &mut [u8; SECRET_LEN]| {
                s.copy_from_slice(bytes);
            },
        )))
    }

    fn generate() -> Self {
        Self(SecretBox::init_with_mut(|s: &mut [u8; SECRET_LEN]| {
            fill_random_from_alphabet(s, BASE62);
        }))
    }

    fn expose(&self) -> &[u8; SECRET_LEN] {
        self.0.expose_secret()
    }
}

impl ZeroizeOnDrop for ApiKeySecret {}

/// A complete API key as handed to its owner, once. Zeroized on drop; no `Debug`/`Clone`.
pub struct ApiKey {
    full: Zeroizing<String>,
    parts: ParsedApiKey,
}

impl ApiKey {
    /// Mints a new key. Store the returned id with `Pepper::hash(key.secret())`, show
    /// [`ApiKey::expose_secret`] to the user once, and drop the key.
    #[must_use]
    pub fn generate(env: KeyEnv) -> (ApiKey, ApiKeyId) {
        let id = ApiKeyId::generate();
        let secret = ApiKeySecret::generate();
        let mut full = Zeroizing::new(String::with_capacity(API_KEY_LEN));
        full.push_str(env.prefix());
        full.push_str(id.as_str());
        full.push('_');
        full.extend(secret.expose().iter().map(|&b| char::from(b)));
        let checksum = base62_u32_6(crc32(full.as_bytes()));
        full.extend(checksum.iter().map(|&b| char::from(b)));
        let last4 = last4(&checksum);
        let parts = ParsedApiKey {
            env,
            id: id.clone(),
            secret,
            last4,
        };
        (ApiKey { full, parts }, id)
    }

    /// Parses a presented key: prefix, lengths, alphabet and checksum. Never panics, allocates
    /// nothing for inputs of the wrong length, and never echoes the input in its error.
    ///
    /// # Errors
    ///
    /// The first [`ApiKeyError`] found, checked in the order of the layout.
    pub fn parse(input: &str) -> Result<ParsedApiKey, ApiKeyError> {
        let bytes = input.as_bytes();
        if bytes.len() != API_KEY_LEN {
            return Err(ApiKeyError::Length);
        }
        let (body, checksum) = bytes
            .split_at_checked(CHECKSUM_START)
            .ok_or(ApiKeyError::Length)?;
        let (prefix, rest) = body
            .split_at_checked(PREFIX_LEN)
            .ok_or(ApiKeyError::Length)?;
        let env = KeyEnv::from_prefix(prefix).ok_or(ApiKeyError::Prefix)?;
        let (id, rest) = rest.split_at_checked(ID_LEN).ok_or(ApiKeyError::Length)?;
        let id = ApiKeyId::from_ascii(id)?;
        let secret = match rest.split_first() {
            Some((b'_', secret)) => ApiKeySecret::from_ascii(secret)?,
            _ => return Err(ApiKeyError::Separator),
        };
        check_checksum(body, checksum)?;
        let last4 = last4(checksum);
        Ok(ParsedApiKey {
            env,
            id,
            secret,
            last4,
        })
    }

    /// The full key, to show to its owner exactly once.
    #[must_use]
    pub fn expose_secret(&self) -> &str {
        &self.full
    }

    /// The secret part, to hash with a [`Pepper`].
    #[must_use]
    pub fn secret(&self) -> &ApiKeySecret {
        &self.parts.secret
    }

    /// The public id.
    #[must_use]
    pub fn id(&self) -> &ApiKeyId {
        &self.parts.id
    }

    /// Live or test.
    #[must_use]
    pub fn env(&self) -> KeyEnv {
        self.parts.env
    }

    /// The non-secret parts, for listings.
    #[must_use]
    pub fn hint(&self) -> ApiKeyHint {
        self.parts.hint()
    }
}

/// A presented key that passed [`ApiKey::parse`]: well-formed, not yet authenticated.
/// Look the id up, then call [`Pepper::verify`] with the secret.
pub struct ParsedApiKey {
    env: KeyEnv,
    id: ApiKeyId,
    secret: ApiKeySecret,
    last4: [u8; 4],
}

impl ParsedApiKey {
    /// Live or test.
    #[must_use]
    pub fn env(&self) -> KeyEnv {
        self.env
    }

    /// The public id, to look the stored hash up by.
    #[must_use]
    pub fn id(&self) -> &ApiKeyId {
        &self.id
    }

    /// The secret part, to verify with a [`Pepper`].
    #[must_use]
    pub fn secret(&self) -> &ApiKeySecret {
        &self.secret
    }

    /// The non-secret parts, for listings and logs.
    #[must_use]
    pub fn hint(&self) -> ApiKeyHint {
        ApiKeyHint {
            env: self.env,
            id: self.id.clone(),
            last4: self.last4.iter().map(|&b| char::from(b)).collect(),
        }
    }
}

/// What may be shown about a key after creation: `tk_live_<id>_...<last 4 characters>`.
///
/// The last four characters belong to the checksum, so they reveal at most 24 bits of the CRC,
/// which leaves the secret with over 160 bits of entropy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKeyHint {
    env: KeyEnv,
    id: ApiKeyId,
    last4: String,
}

impl ApiKeyHint {
    /// Live or test.
    #[must_use]
    pub fn env(&self) -> KeyEnv {
        self.env
    }

    /// The public id.
    #[must_use]
    pub fn id(&self) -> &ApiKeyId {
        &self.id
    }

    /// The prefix and the id, e.g. `tk_live_3kT9xQw2LmZa`.
    #[must_use]
    pub fn prefix_and_id(&self) -> String {
        format!("{}{}", self.env.prefix(), self.id)
    }

    /// The last four characters of the key.
    #[must_use]
    pub fn last4(&self) -> &str {
        &self.last4
    }
}

impl fmt::Display for ApiKeyHint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}_...{}", self.env.prefix(), self.id, self.last4)
    }
}

fn last4(checksum: &[u8]) -> [u8; 4] {
    let mut out = [b'0'; 4];
    if let Some(tail) = checksum.get(checksum.len().saturating_sub(4)..) {
        out.iter_mut().zip(tail).for_each(|(o, t)| *o = *t);
    }
    out
}

fn check_checksum(body: &[u8], checksum: &[u8]) -> Result<(), ApiKeyError> {
    match base62_decode_u32(checksum) {
        Some(found) if found == crc32(body) => Ok(()),
        _ => Err(ApiKeyError::Checksum),
    }
}

/// `HMAC-SHA256(pepper, secret)`: what the server stores for a key, beside its id.
///
/// Equality is constant-time. Not secret in itself, but useless without the pepper.
#[derive(Debug, Clone, Copy, Eq)]
pub struct ApiKeyHash([u8; 32]);

impl ApiKeyHash {
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
}

impl PartialEq for ApiKeyHash {
    fn eq(&self, other: &Self) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

/// The server-wide HMAC key for API-key hashes. Keep it outside the database (a 0600 file or
/// an env var), so that a stolen database does not allow offline guessing. No `Debug`/`Clone`.
pub struct Pepper(hmac::Key);

/// The pepper is too short.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the API-key pepper must be at least {min} bytes, got {0}", min = Pepper::MIN_LEN)]
pub struct PepperError(pub usize);

impl Pepper {
    /// Minimum pepper length in bytes.
    pub const MIN_LEN: usize = 32;

    /// Builds the HMAC key once; hashing then costs about a microsecond.
    ///
    /// # Errors
    ///
    /// [`PepperError`] if `bytes` is shorter than [`Pepper::MIN_LEN`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, PepperError> {
        if bytes.len() < Self::MIN_LEN {
            return Err(PepperError(bytes.len()));
        }
        Ok(Self(hmac::Key::new(hmac::HMAC_SHA256, bytes)))
    }

    /// `HMAC-SHA256(pepper, secret)`.
    #[must_use]
    pub fn hash(&self, secret: &ApiKeySecret) -> ApiKeyHash {
        let tag = hmac::sign(&self.0, secret.expose());
        let mut out = [0u8; 32];
        out.iter_mut().zip(tag.as_ref()).for_each(|(o, t)| *o = *t);
        ApiKeyHash(out)
    }

    /// True if `secret` hashes to `stored`. Constant-time in the hash comparison.
    #[must_use]
    pub fn verify(&self, secret: &ApiKeySecret, stored: &ApiKeyHash) -> bool {
        hmac::verify(&self.0, secret.expose(), stored.as_bytes()).is_ok()
    }

    /// Like [`Pepper::verify`], and on success keeps a copy of the secret, against which later
    /// presentations of the same key are checked without another HMAC.
    #[must_use]
    pub fn verify_and_keep(
        &self,
        secret: &ApiKeySecret,
        stored: &ApiKeyHash,
    ) -> Option<VerifiedSecret> {
        self.verify(secret, stored).then(|| {
            VerifiedSecret(ApiKeySecret(SecretBox::init_with_mut(
                |s: &mut [u8; SECRET_LEN]| s.copy_from_slice(secret.expose()),
            )))
        })
    }
}

/// An API key's secret that matched its stored hash, for a server's short-lived cache of
/// verified keys: a later request with the same key is checked by a constant-time comparison
/// (about a hundred instructions) instead of an HMAC (about 6,000).
///
/// This keeps the plaintext secret in memory rather than its hash. Someone who can read the
/// server's memory gains nothing from that: the same memory holds the root key and the key
/// that signs session tokens. The stored hash still protects the database at rest.
/// Zeroized on drop; no `Debug`/`Clone`/`Display`.
pub struct VerifiedSecret(ApiKeySecret);

impl VerifiedSecret {
    /// True if `presented` is the verified secret. Constant-time.
    #[must_use]
    pub fn matches(&self, presented: &ApiKeySecret) -> bool {
        self.0.expose().ct_eq(presented.expose()).into()
    }
}

impl ZeroizeOnDrop for VerifiedSecret {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::tests::{assert_not_impl, assert_zeroize_on_drop};

    fn pepper() -> Pepper {
        Pepper::from_bytes(&[0x42; 32]).unwrap()
    }

    /// A fixed, valid key: pins the layout and the checksum algorithm.
    const KNOWN: &str = "tk_test_AAAAAAAAAAAA_0123456789abcdefghijABCDEFGHIJ01";

    fn known_key() -> String {
        let body = KNOWN.to_string();
        let sum = base62_u32_6(crc32(body.as_bytes()));
        format!("{body}{}", core::str::from_utf8(&sum).unwrap())
    }

    #[test]
    fn secret_types_cannot_be_copied_printed_or_cloned() {
        assert_not_impl!(ApiKey: Clone, Copy, fmt::Debug, fmt::Display);
        assert_not_impl!(ApiKeySecret: Clone, Copy, fmt::Debug, fmt::Display);
        assert_not_impl!(ParsedApiKey: Clone, Copy, fmt::Debug, fmt::Display);
        assert_not_impl!(Pepper: Clone, Copy, fmt::Debug, fmt::Display);
        assert_not_impl!(VerifiedSecret: Clone, Copy, fmt::Debug, fmt::Display);
        assert_zeroize_on_drop::<ApiKeySecret>();
        assert_zeroize_on_drop::<VerifiedSecret>();
    }

    #[test]
    fn generated_key_has_the_documented_layout() {
        let (key, id) = ApiKey::generate(KeyEnv::Live);
        let s = key.expose_secret();
        assert_eq!(s.len(), API_KEY_LEN);
        assert!(s.starts_with("tk_live_"));
        assert_eq!(&s[8..20], id.as_str());
        assert_eq!(&s[20..21], "_");
        assert!(is_base62(&s.as_bytes()[21..]));
        assert_eq!(key.id(), &id);
        assert_eq!(key.env(), KeyEnv::Live);
    }

    #[test]
    fn generate_then_parse_round_trips() {
        let pepper = pepper();
        let (key, id) = ApiKey::generate(KeyEnv::Test);
        let stored = pepper.hash(key.secret());
        let parsed = ApiKey::parse(key.expose_secret()).unwrap();
        assert_eq!(parsed.id(), &id);
        assert_eq!(parsed.env(), KeyEnv::Test);
        assert!(pepper.verify(parsed.secret(), &stored));
        assert_eq!(parsed.hint(), key.hint());
    }

    #[test]
    fn known_vector_parses_and_hints() {
        let key = known_key();
        assert_eq!(key.len(), API_KEY_LEN);
        let parsed = ApiKey::parse(&key).unwrap();
        assert_eq!(parsed.id().as_str(), "AAAAAAAAAAAA");
        let hint = parsed.hint();
        assert_eq!(hint.prefix_and_id(), "tk_test_AAAAAAAAAAAA");
        assert_eq!(hint.last4(), &key[55..]);
        assert_eq!(
            hint.to_string(),
            format!("tk_test_AAAAAAAAAAAA_...{}", &key[55..])
        );
    }

    #[test]
    fn checksum_vector_is_pinned() {
        // CRC-32 of the body, in base62; if this changes, every issued key stops validating.
        assert_eq!(known_key(), format!("{KNOWN}{}", "13yBTO"));
    }

    #[test]
    fn parse_rejects_each_kind_of_damage() {
        let good = known_key();
        let cases: Vec<(String, ApiKeyError)> = vec![
            (good[..58].to_string(), ApiKeyError::Length),
            (format!("{good}x"), ApiKeyError::Length),
            (
                good.replacen("tk_test_", "tk_prod_", 1),
                ApiKeyError::Prefix,
            ),
            (
                good.replacen("AAAAAAAAAAAA", "AAAAAAAAAAA-", 1),
                ApiKeyError::Id,
            ),
            (
                format!("{}-{}", &good[..20], &good[21..]),
                ApiKeyError::Separator,
            ),
            (
                format!("{}+{}", &good[..21], &good[22..]),
                ApiKeyError::Secret,
            ),
            (
                format!("{}B{}", &good[..21], &good[22..]),
                ApiKeyError::Checksum,
            ),
            (format!("{}00000", &good[..54]), ApiKeyError::Checksum),
            (format!("{}zzzzzz", &good[..53]), ApiKeyError::Checksum),
            ("é".repeat(29) + "a", ApiKeyError::Prefix),
        ];
        for (input, want) in cases {
            assert_eq!(ApiKey::parse(&input).err(), Some(want), "input {input:?}");
        }
    }

    #[test]
    fn error_messages_do_not_echo_the_key() {
        let good = known_key();
        let bad = format!("{}B{}", &good[..21], &good[22..]);
        let msg = ApiKey::parse(&bad).err().unwrap().to_string();
        assert!(!msg.contains(&bad[21..53]));
    }

    #[test]
    fn verify_rejects_other_secrets_and_other_peppers() {
        let (a, _) = ApiKey::generate(KeyEnv::Live);
        let (b, _) = ApiKey::generate(KeyEnv::Live);
        let stored = pepper().hash(a.secret());
        assert!(!pepper().verify(b.secret(), &stored));
        let other = Pepper::from_bytes(&[0x43; 32]).unwrap();
        assert!(!other.verify(a.secret(), &stored));
    }

    #[test]
    fn a_kept_secret_matches_only_the_verified_key() {
        let (a, _) = ApiKey::generate(KeyEnv::Live);
        let (b, _) = ApiKey::generate(KeyEnv::Live);
        let stored = pepper().hash(a.secret());
        assert!(pepper().verify_and_keep(b.secret(), &stored).is_none());
        let kept = pepper().verify_and_keep(a.secret(), &stored).unwrap();
        let again = ApiKey::parse(a.expose_secret()).unwrap();
        assert!(kept.matches(again.secret()));
        assert!(!kept.matches(b.secret()));
        // One character changed at either end.
        for at in [21, API_KEY_LEN - CHECKSUM_LEN - 1] {
            let mut bytes = a.expose_secret().as_bytes().to_vec();
            bytes[at] = if bytes[at] == b'a' { b'b' } else { b'a' };
            let body = &bytes[..API_KEY_LEN - CHECKSUM_LEN];
            let key = [body, &base62_u32_6(crc32(body))].concat();
            let near = ApiKey::parse(std::str::from_utf8(&key).unwrap()).unwrap();
            assert!(!kept.matches(near.secret()));
        }
    }

    #[test]
    fn pepper_and_hash_lengths_are_checked() {
        assert_eq!(Pepper::from_bytes(&[1; 31]).err(), Some(PepperError(31)));
        let hash = pepper().hash(known_key_secret().secret());
        assert_eq!(ApiKeyHash::from_bytes(hash.as_bytes()).unwrap(), hash);
        assert!(ApiKeyHash::from_bytes(&[0; 31]).is_err());
    }

    fn known_key_secret() -> ParsedApiKey {
        ApiKey::parse(&known_key()).unwrap()
    }

    #[test]
    fn readme_example_parses() {
        let parsed = ApiKey::parse("tk_live_3kT9xQw2LmZa_8fJ2kLq0ZxP4mN7bV1cR5tY9wE3uI6oA1JMRWE");
        assert_eq!(parsed.unwrap().id().as_str(), "3kT9xQw2LmZa");
    }

    #[test]
    fn id_parses_from_str() {
        assert!("AAAAAAAAAAAA".parse::<ApiKeyId>().is_ok());
        assert_eq!("AAAA".parse::<ApiKeyId>().err(), Some(ApiKeyError::Id));
    }
}
