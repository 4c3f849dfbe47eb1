//! The stored blob, format v1 (see the crate README for the byte table).
//!
//! ```text
//! u8 version=1 | u8 P | provider[P] | u16 K | key_id[K] | u8 V | key_version[V]
//!              | u16 W | wrapped_dek[W] | nonce[12] | ciphertext ‖ tag[16]
//! ```
//! Integers are big-endian. Parsing checks every bound and never panics.

use aws_lc_rs::aead::{self, AES_256_GCM, NONCE_LEN, Nonce, RandomizedNonceKey};
use zeroize::{Zeroize, Zeroizing};

use super::aad::Aad;
use super::error::EnvelopeError;
use super::kek::{KekRef, WrappedDek};
use crate::keys::DataKey;

/// The format byte of blobs written by this version of the crate.
pub const FORMAT_V1: u8 = 1;
/// AES-GCM tag length.
pub const TAG_LEN: usize = 16;

/// A parsed blob: the wrapped DEK with its KEK reference, the nonce, and the sealed data,
/// borrowed from the input. Opening it needs the DEK, obtained from the KEK named here.
#[derive(Debug)]
pub struct Envelope<'a> {
    version: u8,
    wrapped: WrappedDek,
    nonce: [u8; NONCE_LEN],
    sealed: &'a [u8],
}

impl<'a> Envelope<'a> {
    /// Parses any supported format version. Never panics, whatever the input.
    ///
    /// # Errors
    ///
    /// [`EnvelopeError::UnsupportedVersion`] for an unknown format byte,
    /// [`EnvelopeError::Malformed`] for anything out of bounds.
    pub fn parse(blob: &'a [u8]) -> Result<Self, EnvelopeError> {
        let mut r = Reader(blob);
        match r.u8()? {
            FORMAT_V1 => parse_v1(r),
            other => Err(EnvelopeError::UnsupportedVersion(other)),
        }
    }

    /// The blob's format version.
    #[must_use]
    pub fn format_version(&self) -> u8 {
        self.version
    }

    /// The KEK that wrapped the DEK.
    #[must_use]
    pub fn kek_ref(&self) -> &KekRef {
        self.wrapped.kek_ref()
    }

    /// The wrapped DEK, to hand to the KEK (or an async KMS adapter) for unwrapping.
    #[must_use]
    pub fn wrapped_dek(&self) -> &WrappedDek {
        &self.wrapped
    }

    /// Decrypts with an already unwrapped DEK, checking `aad`.
    ///
    /// # Errors
    ///
    /// [`EnvelopeError::Decrypt`] if the DEK or the AAD is wrong or the data was altered.
    pub fn open_with_dek(
        &self,
        dek: &DataKey,
        aad: &Aad,
    ) -> Result<Zeroizing<Vec<u8>>, EnvelopeError> {
        let key = RandomizedNonceKey::new(&AES_256_GCM, dek.expose_secret())
            .map_err(|_| EnvelopeError::Decrypt)?;
        let mut buf = Zeroizing::new(self.sealed.to_vec());
        let nonce = Nonce::assume_unique_for_key(self.nonce);
        let plain_len = key
            .open_in_place(nonce, aead::Aad::from(aad.as_bytes()), buf.as_mut_slice())
            .map_err(|_| EnvelopeError::Decrypt)?
            .len();
        buf.truncate(plain_len);
        Ok(buf)
    }

    /// The same blob with its DEK wrapped anew (KEK rotation): the data is not re-encrypted.
    /// The output is always format v1.
    ///
    /// # Errors
    ///
    /// [`EnvelopeError::Malformed`] if `wrapped` cannot be encoded (never for valid values).
    pub fn rewrapped(&self, wrapped: &WrappedDek) -> Result<Vec<u8>, EnvelopeError> {
        let mut out = Vec::with_capacity(header_len(wrapped) + NONCE_LEN + self.sealed.len());
        encode_header(&mut out, wrapped)?;
        out.extend_from_slice(&self.nonce);
        out.extend_from_slice(self.sealed);
        Ok(out)
    }
}

fn parse_v1(mut r: Reader<'_>) -> Result<Envelope<'_>, EnvelopeError> {
    let provider_len = usize::from(r.u8()?);
    let provider = r.str(provider_len)?;
    let key_id_len = usize::from(r.u16()?);
    let key_id = r.str(key_id_len)?;
    let version_len = usize::from(r.u8()?);
    let key_version = r.str(version_len)?;
    let kek_ref = KekRef::new(provider, key_id, key_version)
        .map_err(|_| EnvelopeError::Malformed("KEK reference out of bounds"))?;
    let wrapped_len = usize::from(r.u16()?);
    let wrapped = WrappedDek::new(kek_ref, r.take(wrapped_len)?.to_vec())
        .map_err(|_| EnvelopeError::Malformed("wrapped data key out of bounds"))?;
    let nonce = <[u8; NONCE_LEN]>::try_from(r.take(NONCE_LEN)?)
        .map_err(|_| EnvelopeError::Malformed("truncated"))?;
    if r.0.len() < TAG_LEN {
        return Err(EnvelopeError::Malformed("ciphertext shorter than its tag"));
    }
    Ok(Envelope {
        version: FORMAT_V1,
        wrapped,
        nonce,
        sealed: r.0,
    })
}

/// Encrypts `plaintext` under `dek` and writes a v1 blob that carries `wrapped` (which must be
/// `dek` wrapped by some KEK). Use a fresh DEK for every secret version.
///
/// This is the entry point for async KMS adapters; with a synchronous KEK use
/// [`seal`](crate::envelope::seal).
///
/// # Errors
///
/// [`EnvelopeError::Encrypt`] if AES-GCM fails (for example a plaintext over 64 GiB).
pub fn seal_with_dek(
    dek: &DataKey,
    wrapped: &WrappedDek,
    aad: &Aad,
    plaintext: &[u8],
) -> Result<Vec<u8>, EnvelopeError> {
    let key = RandomizedNonceKey::new(&AES_256_GCM, dek.expose_secret())
        .map_err(|_| EnvelopeError::Encrypt)?;
    // Exact capacity: the buffer never reallocates, so no plaintext copy is left behind.
    let capacity = header_len(wrapped) + NONCE_LEN + plaintext.len() + TAG_LEN;
    let mut out = Vec::with_capacity(capacity);
    encode_header(&mut out, wrapped)?;
    let nonce_at = out.len();
    out.extend_from_slice(&[0; NONCE_LEN]);
    out.extend_from_slice(plaintext);
    let sealed = seal_tail(&key, aad, &mut out, nonce_at);
    if sealed.is_err() {
        out.zeroize();
    }
    sealed.map(|()| out)
}

/// Encrypts `out[nonce_at + 12..]` in place, fills in the nonce and appends the tag.
fn seal_tail(
    key: &RandomizedNonceKey,
    aad: &Aad,
    out: &mut Vec<u8>,
    nonce_at: usize,
) -> Result<(), EnvelopeError> {
    let body_at = nonce_at + NONCE_LEN;
    let body = out.get_mut(body_at..).ok_or(EnvelopeError::Encrypt)?;
    let (nonce, tag) = key
        .seal_in_place_separate_tag(aead::Aad::from(aad.as_bytes()), body)
        .map_err(|_| EnvelopeError::Encrypt)?;
    let nonce_slot = out
        .get_mut(nonce_at..body_at)
        .ok_or(EnvelopeError::Encrypt)?;
    nonce_slot.copy_from_slice(nonce.as_ref());
    out.extend_from_slice(tag.as_ref());
    Ok(())
}

fn header_len(wrapped: &WrappedDek) -> usize {
    let r = wrapped.kek_ref();
    1 + 1
        + r.provider().len()
        + 2
        + r.key_id().len()
        + 1
        + r.key_version().len()
        + 2
        + wrapped.ciphertext().len()
}

fn encode_header(out: &mut Vec<u8>, wrapped: &WrappedDek) -> Result<(), EnvelopeError> {
    let r = wrapped.kek_ref();
    out.push(FORMAT_V1);
    put_u8_prefixed(out, r.provider().as_bytes())?;
    put_u16_prefixed(out, r.key_id().as_bytes())?;
    put_u8_prefixed(out, r.key_version().as_bytes())?;
    put_u16_prefixed(out, wrapped.ciphertext())
}

fn put_u8_prefixed(out: &mut Vec<u8>, bytes: &[u8]) -> Result<(), EnvelopeError> {
    let len = u8::try_from(bytes.len()).map_err(|_| EnvelopeError::Malformed("field too long"))?;
    out.push(len);
    out.extend_from_slice(bytes);
    Ok(())
}

fn put_u16_prefixed(out: &mut Vec<u8>, bytes: &[u8]) -> Result<(), EnvelopeError> {
    let len = u16::try_from(bytes.len()).map_err(|_| EnvelopeError::Malformed("field too long"))?;
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(bytes);
    Ok(())
}

/// A cursor over untrusted bytes; every read is bounds-checked.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], EnvelopeError> {
        let (head, tail) = self
            .0
            .split_at_checked(n)
            .ok_or(EnvelopeError::Malformed("truncated"))?;
        self.0 = tail;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, EnvelopeError> {
        let (&first, tail) = self
            .0
            .split_first()
            .ok_or(EnvelopeError::Malformed("truncated"))?;
        self.0 = tail;
        Ok(first)
    }

    fn u16(&mut self) -> Result<u16, EnvelopeError> {
        let bytes = <[u8; 2]>::try_from(self.take(2)?)
            .map_err(|_| EnvelopeError::Malformed("truncated"))?;
        Ok(u16::from_be_bytes(bytes))
    }

    fn str(&mut self, n: usize) -> Result<&'a str, EnvelopeError> {
        core::str::from_utf8(self.take(n)?).map_err(|_| EnvelopeError::Malformed("not UTF-8"))
    }
}
