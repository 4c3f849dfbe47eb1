//! Symmetric key material.
//!
//! Every type here holds its bytes in a heap box that is wiped when the value is dropped
//! ([`secrecy::SecretBox`]), so moving the value never leaves stale copies on the stack. None of
//! them implements `Debug`, `Display`, `Clone` or `Copy`: a key cannot be printed, logged or
//! duplicated by accident. The only way to read the bytes is a method whose name says so.

use secrecy::{ExposeSecret, SecretBox};
use zeroize::ZeroizeOnDrop;

use crate::rng::fill_random;

/// Length in bytes of every symmetric key in this crate (AES-256).
pub const KEY_LEN: usize = 32;

/// Key bytes of the wrong length were supplied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("key material must be exactly {KEY_LEN} bytes, got {0}")]
pub struct KeyLengthError(pub usize);

/// 32 bytes on the heap, zeroized on drop. The shared representation of every key type.
pub(crate) struct KeyBytes(SecretBox<[u8; KEY_LEN]>);

impl KeyBytes {
    pub(crate) fn generate() -> Self {
        Self(SecretBox::init_with_mut(|bytes: &mut [u8; KEY_LEN]| {
            fill_random(bytes);
        }))
    }

    pub(crate) fn from_slice(bytes: &[u8]) -> Result<Self, KeyLengthError> {
        if bytes.len() != KEY_LEN {
            return Err(KeyLengthError(bytes.len()));
        }
        Ok(Self(SecretBox::init_with_mut(|key: &mut [u8; KEY_LEN]| {
            key.copy_from_slice(bytes);
        })))
    }

    pub(crate) fn expose(&self) -> &[u8; KEY_LEN] {
        self.0.expose_secret()
    }
}

impl ZeroizeOnDrop for KeyBytes {}

/// A data-encryption key (DEK): a fresh AES-256-GCM key for one secret version.
///
/// Zeroized on drop; no `Debug`, `Clone` or `Copy`. A DEK cache that needs to share one should
/// hold it in an `Arc<DataKey>`.
pub struct DataKey(KeyBytes);

impl DataKey {
    /// A fresh random key from the system RNG.
    #[must_use]
    pub fn generate() -> Self {
        Self(KeyBytes::generate())
    }

    /// Adopts key bytes produced elsewhere, e.g. the plaintext half of a KMS `GenerateDataKey`
    /// answer. The caller should wipe its own copy (for example by holding it in `Zeroizing`).
    ///
    /// # Errors
    ///
    /// [`KeyLengthError`] unless `bytes` is exactly [`KEY_LEN`] long.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, KeyLengthError> {
        KeyBytes::from_slice(bytes).map(Self)
    }

    /// The raw key. Justified uses: handing the DEK to a KMS `Encrypt` call to wrap it.
    #[must_use]
    pub fn expose_secret(&self) -> &[u8; KEY_LEN] {
        self.0.expose()
    }
}

impl ZeroizeOnDrop for DataKey {}

/// The material of a platform-managed key-encryption key (KEK): one per organization, stored
/// wrapped by the server's [`RootKey`](crate::RootKey) and used through [`LocalKek`](crate::LocalKek).
///
/// Zeroized on drop; no `Debug`, `Clone` or `Copy`.
pub struct OrgKek(KeyBytes);

impl OrgKek {
    /// A fresh random KEK from the system RNG.
    #[must_use]
    pub fn generate() -> Self {
        Self(KeyBytes::generate())
    }

    /// Adopts existing key bytes (fixed test keys, or a KEK unwrapped by a KMS).
    ///
    /// # Errors
    ///
    /// [`KeyLengthError`] unless `bytes` is exactly [`KEY_LEN`] long.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, KeyLengthError> {
        KeyBytes::from_slice(bytes).map(Self)
    }

    pub(crate) fn expose(&self) -> &[u8; KEY_LEN] {
        self.0.expose()
    }
}

impl ZeroizeOnDrop for OrgKek {}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Fails to compile if `$t` implements `$trait` (the trick `static_assertions` uses: the
    /// call is ambiguous exactly when the second blanket impl also applies).
    macro_rules! assert_not_impl {
        ($t:ty: $($trait:path),+) => {{
            trait AmbiguousIfImpl<A> {
                fn some_item() {}
            }
            impl<T: ?Sized> AmbiguousIfImpl<()> for T {}
            $({
                struct Invalid;
                impl<T: ?Sized + $trait> AmbiguousIfImpl<Invalid> for T {}
            })+
            let _ = <$t as AmbiguousIfImpl<_>>::some_item;
        }};
    }
    pub(crate) use assert_not_impl;

    pub(crate) fn assert_zeroize_on_drop<T: ZeroizeOnDrop>() {}

    #[test]
    fn key_types_cannot_be_copied_printed_or_cloned() {
        assert_not_impl!(DataKey: Clone, Copy, core::fmt::Debug, core::fmt::Display);
        assert_not_impl!(OrgKek: Clone, Copy, core::fmt::Debug, core::fmt::Display);
        assert_zeroize_on_drop::<DataKey>();
        assert_zeroize_on_drop::<OrgKek>();
    }

    #[test]
    fn generated_keys_are_distinct_and_full_length() {
        let (a, b) = (DataKey::generate(), DataKey::generate());
        assert_ne!(a.expose_secret(), b.expose_secret());
        assert_eq!(a.expose_secret().len(), KEY_LEN);
    }

    #[test]
    fn from_bytes_checks_length() {
        assert_eq!(
            DataKey::from_bytes(&[0; 31]).err(),
            Some(KeyLengthError(31))
        );
        assert_eq!(OrgKek::from_bytes(&[0; 33]).err(), Some(KeyLengthError(33)));
        let key = DataKey::from_bytes(&[7; 32]).unwrap();
        assert_eq!(key.expose_secret(), &[7; 32]);
    }

    #[test]
    fn key_bytes_zeroize_wipes_the_buffer() {
        use zeroize::Zeroize;
        let mut inner = SecretBox::new(Box::new([0xAA_u8; KEY_LEN]));
        inner.zeroize();
        assert_eq!(inner.expose_secret(), &[0; KEY_LEN]);
    }
}
