//! Tether's cryptography: key material types, the API-key format and its hashing, password
//! hashing, opaque tokens, envelope encryption and the root keyring.
//!
//! No network, no async, no database. Every primitive comes from AWS-LC (`aws-lc-rs`), except
//! Argon2id (RustCrypto `argon2`). See the crate README for the byte layouts and threat notes.
//!
//! Conventions:
//! - Types that hold secrets zeroize on drop and implement none of `Debug`, `Display`, `Clone`
//!   or `Copy`. Reading the bytes takes a method whose name starts with `expose`.
//! - Nothing here panics on input; parsers of untrusted bytes are fuzzed and property-tested.
//!   The only deliberate panic is a failing system RNG (see `rng::fill_random`).

mod api_key;
mod encoding;
pub mod envelope;
mod keyring;
mod keys;
mod password;
mod rng;
mod token;

pub use api_key::{
    API_KEY_LEN, ApiKey, ApiKeyError, ApiKeyHash, ApiKeyHint, ApiKeyId, ApiKeySecret, CHECKSUM_LEN,
    ID_LEN, KeyEnv, ParsedApiKey, Pepper, PepperError, SECRET_LEN, VerifiedSecret,
};
pub use envelope::{
    Aad, EnvelopeError, KekError, KekProvider, KekRef, KekResolver, KekRing, KeyEncryptionKey,
    LocalKek, WrappedDek, open, rewrap, seal,
};
pub use keyring::{
    RootKey, RootKeyError, RootKeyId, SecretFileError, WRAPPED_KEK_LEN, read_secret_file,
};
pub use keys::{DataKey, KEY_LEN, KeyLengthError, OrgKek};
pub use password::{
    M_COST_KIB, P_COST, Password, PasswordError, T_COST, hash_password, needs_rehash,
    verify_password,
};
pub use token::{OpaqueToken, TOKEN_LEN, TokenError, TokenHash, generate_token};
