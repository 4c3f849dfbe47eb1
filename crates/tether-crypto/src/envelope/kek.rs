//! Key-encryption keys: the reference stored in a blob, the wrapped DEK, and the provider and
//! resolver traits that a local key or a cloud KMS implements.

use core::fmt;

use crate::keys::DataKey;

/// Longest provider id, in bytes.
pub const MAX_PROVIDER_LEN: usize = 64;
/// Longest key id (room for ARNs and Azure key URLs), in bytes.
pub const MAX_KEY_ID_LEN: usize = 2048;
/// Longest key version, in bytes.
pub const MAX_KEY_VERSION_LEN: usize = 128;
/// Longest wrapped DEK (KMS ciphertext blobs are a few hundred bytes), in bytes.
pub const MAX_WRAPPED_DEK_LEN: usize = 4096;

/// A part of a KEK reference or a wrapped DEK is out of bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum KekRefError {
    /// Provider ids are 1–64 characters of `[a-z0-9-]`.
    #[error("a KEK provider id is 1-64 characters of [a-z0-9-]")]
    Provider,
    /// Key ids are 1–2048 bytes of UTF-8.
    #[error("a KEK key id is 1-2048 bytes")]
    KeyId,
    /// Key versions are 0–128 bytes of UTF-8.
    #[error("a KEK key version is at most 128 bytes")]
    KeyVersion,
    /// Wrapped DEKs are 1–4096 bytes.
    #[error("a wrapped data key is 1-4096 bytes")]
    WrappedDek,
}

/// Which key wrapped a DEK: provider (`local`, `aws-kms`, ...), key id and key version.
/// Public metadata, stored in the clear at the front of every blob.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct KekRef {
    provider: String,
    key_id: String,
    key_version: String,
}

impl KekRef {
    /// The provider id of [`LocalKek`](crate::LocalKek)s: org KEKs wrapped by the root key.
    pub const LOCAL: &'static str = "local";

    /// A reference, checked against the format's limits.
    ///
    /// # Errors
    ///
    /// [`KekRefError`] naming the part that is out of bounds.
    pub fn new(provider: &str, key_id: &str, key_version: &str) -> Result<Self, KekRefError> {
        let provider_ok = (1..=MAX_PROVIDER_LEN).contains(&provider.len())
            && provider
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !provider_ok {
            return Err(KekRefError::Provider);
        }
        if !(1..=MAX_KEY_ID_LEN).contains(&key_id.len()) {
            return Err(KekRefError::KeyId);
        }
        if key_version.len() > MAX_KEY_VERSION_LEN {
            return Err(KekRefError::KeyVersion);
        }
        let (provider, key_id) = (provider.to_owned(), key_id.to_owned());
        Ok(Self {
            provider,
            key_id,
            key_version: key_version.to_owned(),
        })
    }

    /// A reference to a platform-managed key: provider `local`.
    ///
    /// # Errors
    ///
    /// As [`KekRef::new`].
    pub fn local(key_id: &str, key_version: &str) -> Result<Self, KekRefError> {
        Self::new(Self::LOCAL, key_id, key_version)
    }

    /// The provider id.
    #[must_use]
    pub fn provider(&self) -> &str {
        &self.provider
    }

    /// The key id (an org's KEK id, a KMS key ARN, ...).
    #[must_use]
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// The key version (may be empty when the provider tracks versions itself).
    #[must_use]
    pub fn key_version(&self) -> &str {
        &self.key_version
    }
}

impl fmt::Display for KekRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{} (version {:?})",
            self.provider, self.key_id, self.key_version
        )
    }
}

/// A DEK wrapped by a KEK, with the reference to that KEK. Produced by [`KekProvider::wrap_dek`]
/// or directly by an async KMS adapter, and consumed by
/// [`seal_with_dek`](crate::envelope::seal_with_dek).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrappedDek {
    kek_ref: KekRef,
    ciphertext: Vec<u8>,
}

impl WrappedDek {
    /// Pairs a wrapped key with the reference of the key that wrapped it.
    ///
    /// # Errors
    ///
    /// [`KekRefError::WrappedDek`] unless `ciphertext` is 1–4096 bytes.
    pub fn new(kek_ref: KekRef, ciphertext: Vec<u8>) -> Result<Self, KekRefError> {
        if !(1..=MAX_WRAPPED_DEK_LEN).contains(&ciphertext.len()) {
            return Err(KekRefError::WrappedDek);
        }
        Ok(Self {
            kek_ref,
            ciphertext,
        })
    }

    /// Which KEK wrapped this DEK.
    #[must_use]
    pub fn kek_ref(&self) -> &KekRef {
        &self.kek_ref
    }

    /// The wrapped bytes (opaque; their format belongs to the provider).
    #[must_use]
    pub fn ciphertext(&self) -> &[u8] {
        &self.ciphertext
    }
}

/// Why a KEK could not wrap or unwrap a DEK.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KekError {
    /// The provider refused or could not be reached (disabled, deleted or revoked key, KMS
    /// down). Nothing is lost: reads work again once access is restored.
    #[error("key-encryption key {kek} is unavailable: {reason}")]
    Unavailable {
        /// The key that was asked for.
        kek: KekRef,
        /// The provider's explanation, safe to log (never key material).
        reason: String,
    },
    /// No KEK known here matches the reference in the blob.
    #[error("no key-encryption key matches {0}")]
    UnknownKek(KekRef),
    /// The wrapped DEK failed its integrity check under the referenced KEK.
    #[error("the data key wrapped under {0} failed its integrity check")]
    UnwrapFailed(KekRef),
    /// Wrapping failed inside the provider.
    #[error("wrapping the data key failed")]
    WrapFailed,
}

impl KekError {
    /// True for the errors a client should see as `kek_unavailable` (brief §9).
    #[must_use]
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Self::Unavailable { .. } | Self::UnknownKek(_))
    }
}

/// A key-encryption key that wraps and unwraps DEKs synchronously.
///
/// Implemented here by [`LocalKek`](crate::LocalKek). Cloud KMS adapters are async and live in
/// another crate: they produce a [`WrappedDek`] / [`DataKey`] themselves and call
/// [`seal_with_dek`](crate::envelope::seal_with_dek) and
/// [`Envelope::open_with_dek`](crate::envelope::Envelope::open_with_dek), so this trait stays
/// free of any runtime.
pub trait KekProvider: Send + Sync {
    /// The reference written into blobs sealed with this key.
    fn kek_ref(&self) -> &KekRef;

    /// Wraps `dek`.
    ///
    /// # Errors
    ///
    /// [`KekError`] if the key is unavailable or wrapping fails.
    fn wrap_dek(&self, dek: &DataKey) -> Result<WrappedDek, KekError>;

    /// Unwraps a DEK that this key wrapped.
    ///
    /// # Errors
    ///
    /// [`KekError::UnknownKek`] if `wrapped` names another key, [`KekError::UnwrapFailed`] if
    /// its integrity check fails, [`KekError::Unavailable`] if the key cannot be used.
    fn unwrap_dek(&self, wrapped: &WrappedDek) -> Result<DataKey, KekError>;
}

/// The name the brief uses for [`KekProvider`].
pub use KekProvider as KeyEncryptionKey;

/// Finds the KEK named by a blob and unwraps its DEK. Every [`KekProvider`] resolves its own
/// reference; a [`KekRing`] resolves any of several (old and new key versions).
pub trait KekResolver {
    /// Unwraps `wrapped` with whichever KEK its reference names.
    ///
    /// # Errors
    ///
    /// [`KekError::UnknownKek`] if no KEK matches, or the KEK's own error.
    fn resolve_unwrap(&self, wrapped: &WrappedDek) -> Result<DataKey, KekError>;
}

impl<T: KekProvider + ?Sized> KekResolver for T {
    fn resolve_unwrap(&self, wrapped: &WrappedDek) -> Result<DataKey, KekError> {
        if wrapped.kek_ref() != self.kek_ref() {
            return Err(KekError::UnknownKek(wrapped.kek_ref().clone()));
        }
        self.unwrap_dek(wrapped)
    }
}

/// Several KEKs at once, e.g. every version of an organization's KEK during a rotation.
#[derive(Default)]
pub struct KekRing {
    keks: Vec<Box<dyn KekProvider>>,
}

impl KekRing {
    /// An empty ring.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a KEK.
    pub fn push(&mut self, kek: Box<dyn KekProvider>) {
        self.keks.push(kek);
    }

    /// Adds a KEK, builder style.
    #[must_use]
    pub fn with(mut self, kek: Box<dyn KekProvider>) -> Self {
        self.push(kek);
        self
    }
}

impl KekResolver for KekRing {
    fn resolve_unwrap(&self, wrapped: &WrappedDek) -> Result<DataKey, KekError> {
        let kek = self.keks.iter().find(|k| k.kek_ref() == wrapped.kek_ref());
        match kek {
            Some(kek) => kek.unwrap_dek(wrapped),
            None => Err(KekError::UnknownKek(wrapped.kek_ref().clone())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kek_ref_limits() {
        assert!(KekRef::new("aws-kms", "arn:aws:kms:eu-west-1:1:key/abc", "").is_ok());
        assert_eq!(KekRef::new("", "k", "1"), Err(KekRefError::Provider));
        assert_eq!(KekRef::new("AWS", "k", "1"), Err(KekRefError::Provider));
        assert_eq!(
            KekRef::new(&"a".repeat(65), "k", "1"),
            Err(KekRefError::Provider)
        );
        assert_eq!(KekRef::local("", "1"), Err(KekRefError::KeyId));
        assert_eq!(
            KekRef::local(&"k".repeat(2049), "1"),
            Err(KekRefError::KeyId)
        );
        assert_eq!(
            KekRef::local("k", &"1".repeat(129)),
            Err(KekRefError::KeyVersion)
        );
    }

    #[test]
    fn wrapped_dek_limits() {
        let r = KekRef::local("k", "1").unwrap();
        assert_eq!(
            WrappedDek::new(r.clone(), vec![]),
            Err(KekRefError::WrappedDek)
        );
        assert_eq!(
            WrappedDek::new(r.clone(), vec![0; 4097]),
            Err(KekRefError::WrappedDek)
        );
        assert!(WrappedDek::new(r, vec![0; 40]).is_ok());
    }

    #[test]
    fn unavailable_classification() {
        let r = KekRef::local("k", "1").unwrap();
        let down = KekError::Unavailable {
            kek: r.clone(),
            reason: "revoked".into(),
        };
        assert!(down.is_unavailable());
        assert!(KekError::UnknownKek(r.clone()).is_unavailable());
        assert!(!KekError::UnwrapFailed(r).is_unavailable());
    }
}
