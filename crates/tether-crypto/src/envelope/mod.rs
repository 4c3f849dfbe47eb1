//! Envelope encryption (brief §9): a fresh AES-256-GCM DEK per secret version, bound to its
//! row by the [`Aad`], wrapped by a KEK, stored in a versioned blob.
//!
//! - Synchronous KEKs ([`LocalKek`], or any [`KekProvider`]): [`seal`], [`open`], [`rewrap`].
//! - Async KMS adapters in other crates: generate a [`DataKey`](crate::DataKey), wrap it
//!   themselves into a [`WrappedDek`], and call [`seal_with_dek`]; to read, [`Envelope::parse`],
//!   unwrap [`Envelope::wrapped_dek`], then [`Envelope::open_with_dek`]; to rotate,
//!   [`Envelope::rewrapped`].

mod aad;
mod error;
mod format;
mod kek;
mod local;

pub use aad::{Aad, AadError};
pub use error::EnvelopeError;
pub use format::{Envelope, FORMAT_V1, TAG_LEN, seal_with_dek};
pub use kek::{
    KekError, KekProvider, KekRef, KekRefError, KekResolver, KekRing, KeyEncryptionKey,
    MAX_KEY_ID_LEN, MAX_KEY_VERSION_LEN, MAX_PROVIDER_LEN, MAX_WRAPPED_DEK_LEN, WrappedDek,
};
pub use local::{LOCAL_WRAPPED_LEN, LocalKek};

use zeroize::Zeroizing;

use crate::keys::DataKey;

/// Seals `plaintext` for the row named by `aad`: a fresh DEK, wrapped by `kek`.
///
/// # Errors
///
/// [`EnvelopeError::Kek`] if the KEK cannot wrap; [`EnvelopeError::Encrypt`] if AES-GCM fails.
pub fn seal<K: KekProvider + ?Sized>(
    kek: &K,
    aad: &Aad,
    plaintext: &[u8],
) -> Result<Vec<u8>, EnvelopeError> {
    let dek = DataKey::generate();
    let wrapped = kek.wrap_dek(&dek)?;
    seal_with_dek(&dek, &wrapped, aad, plaintext)
}

/// Opens a blob of any supported format version for the row named by `aad`.
///
/// # Errors
///
/// [`EnvelopeError::Malformed`] / [`EnvelopeError::UnsupportedVersion`] for a bad blob,
/// [`EnvelopeError::Kek`] if the KEK is unknown or unavailable, [`EnvelopeError::Decrypt`] if
/// the blob belongs to another row or was altered.
pub fn open<R: KekResolver + ?Sized>(
    keks: &R,
    aad: &Aad,
    blob: &[u8],
) -> Result<Zeroizing<Vec<u8>>, EnvelopeError> {
    let envelope = Envelope::parse(blob)?;
    let dek = keks.resolve_unwrap(envelope.wrapped_dek())?;
    envelope.open_with_dek(&dek, aad)
}

/// Re-wraps a blob's DEK from `old` to `new` without touching the encrypted data.
///
/// # Errors
///
/// As [`open`] for reading the DEK, and [`EnvelopeError::Kek`] if `new` cannot wrap.
pub fn rewrap<R: KekResolver + ?Sized, K: KekProvider + ?Sized>(
    old: &R,
    new: &K,
    blob: &[u8],
) -> Result<Vec<u8>, EnvelopeError> {
    let envelope = Envelope::parse(blob)?;
    let dek = old.resolve_unwrap(envelope.wrapped_dek())?;
    let wrapped = new.wrap_dek(&dek)?;
    envelope.rewrapped(&wrapped)
}

#[cfg(test)]
mod tests;
