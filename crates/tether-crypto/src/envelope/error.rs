//! Envelope errors.

use super::kek::KekError;

/// Why a blob could not be sealed, parsed or opened. Never carries plaintext or key bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    /// The blob is not a well-formed envelope (truncated, out-of-bounds field, ...).
    #[error("the encrypted blob is malformed: {0}")]
    Malformed(&'static str),
    /// The blob's format byte is unknown to this version of Tether.
    #[error("unsupported envelope format version {0}")]
    UnsupportedVersion(u8),
    /// The KEK could not wrap or unwrap the DEK.
    #[error(transparent)]
    Kek(#[from] KekError),
    /// Authentication failed: wrong AAD (the blob belongs to another row), wrong key, or
    /// altered data.
    #[error("the encrypted blob does not authenticate for this secret version")]
    Decrypt,
    /// AES-GCM refused to encrypt.
    #[error("encryption failed")]
    Encrypt,
}

impl EnvelopeError {
    /// The stable, client-facing error code: `kek_unavailable` when the key is out of reach
    /// (retrying later may work), `secret_undecryptable` when the stored data cannot be
    /// opened, `internal` otherwise.
    #[must_use]
    pub fn code(&self) -> &'static str {
        match self {
            Self::Kek(e) if e.is_unavailable() => "kek_unavailable",
            Self::Kek(KekError::WrapFailed) | Self::Encrypt => "internal",
            Self::Kek(_) | Self::Malformed(_) | Self::UnsupportedVersion(_) | Self::Decrypt => {
                "secret_undecryptable"
            }
        }
    }
}
