//! The platform-managed KEK: an organization's [`OrgKek`] wrapping DEKs with AES-256 key wrap
//! (RFC 3394, NIST SP 800-38F KW).

use aws_lc_rs::key_wrap::{AES_256, AesKek, KeyWrap};
use zeroize::Zeroizing;

use super::kek::{KekError, KekProvider, KekRef, WrappedDek};
use crate::keys::{DataKey, KEY_LEN, OrgKek};

/// Length of a DEK wrapped with RFC 3394: the key plus one 8-byte integrity block.
pub const LOCAL_WRAPPED_LEN: usize = KEY_LEN + 8;

/// An organization KEK held in memory, unwrapped from the root key at startup.
/// No `Debug`/`Clone`; the key is zeroized on drop.
pub struct LocalKek {
    kek_ref: KekRef,
    key: OrgKek,
}

impl LocalKek {
    /// Uses `key` under the name `kek_ref` (normally `KekRef::local(org_kek_id, version)`).
    #[must_use]
    pub fn new(kek_ref: KekRef, key: OrgKek) -> Self {
        Self { kek_ref, key }
    }

    fn aes_kek(&self) -> Option<AesKek> {
        AesKek::new(&AES_256, self.key.expose()).ok()
    }
}

impl KekProvider for LocalKek {
    fn kek_ref(&self) -> &KekRef {
        &self.kek_ref
    }

    fn wrap_dek(&self, dek: &DataKey) -> Result<WrappedDek, KekError> {
        let kek = self.aes_kek().ok_or(KekError::WrapFailed)?;
        let mut out = [0u8; LOCAL_WRAPPED_LEN];
        let wrapped = kek
            .wrap(dek.expose_secret(), &mut out)
            .map_err(|_| KekError::WrapFailed)?;
        WrappedDek::new(self.kek_ref.clone(), wrapped.to_vec()).map_err(|_| KekError::WrapFailed)
    }

    fn unwrap_dek(&self, wrapped: &WrappedDek) -> Result<DataKey, KekError> {
        if wrapped.kek_ref() != &self.kek_ref {
            return Err(KekError::UnknownKek(wrapped.kek_ref().clone()));
        }
        let failed = || KekError::UnwrapFailed(self.kek_ref.clone());
        if wrapped.ciphertext().len() != LOCAL_WRAPPED_LEN {
            return Err(failed());
        }
        let kek = self.aes_kek().ok_or_else(failed)?;
        let mut out = Zeroizing::new([0u8; LOCAL_WRAPPED_LEN]);
        let dek = kek
            .unwrap(wrapped.ciphertext(), out.as_mut_slice())
            .map_err(|_| failed())?;
        DataKey::from_bytes(dek).map_err(|_| failed())
    }
}
