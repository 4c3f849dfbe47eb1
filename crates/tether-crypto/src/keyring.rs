//! The server's root key and the per-organization KEKs it wraps, plus the 0600 secret-file
//! reader used for every secret the server loads from disk.

use std::fs::File;
use std::io::Read as _;
use std::path::{Path, PathBuf};

use aws_lc_rs::hmac;
use aws_lc_rs::key_wrap::{AES_256, AesKek, KeyWrap};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use core::fmt;
use zeroize::{ZeroizeOnDrop, Zeroizing};

use crate::keys::{KEY_LEN, KeyBytes, OrgKek};

/// Format byte of a wrapped org KEK.
const WRAPPED_KEK_V1: u8 = 1;
/// Length of a [`RootKeyId`].
const ROOT_KEY_ID_LEN: usize = 8;
/// `1 ‖ root key id (8) ‖ AES-KW(org KEK) (40)`.
pub const WRAPPED_KEK_LEN: usize = 1 + ROOT_KEY_ID_LEN + KEY_LEN + 8;

/// A secret file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum SecretFileError {
    /// Opening or reading failed (missing file, not UTF-8, ...).
    #[error("cannot read secret file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// Group or others may read or write the file.
    #[error(
        "secret file {path} has mode {mode:o}, which group or others can access; run chmod 600"
    )]
    Permissions {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The file is empty (after trimming the trailing newline).
    #[error("secret file {path} is empty")]
    Empty {
        /// The file.
        path: PathBuf,
    },
}

/// Reads a secret from a file that only its owner may access (mode 0600 or 0400 on Unix), and
/// trims trailing newlines. The permission check is made on the opened file, so the file
/// cannot be swapped between check and read.
///
/// # Errors
///
/// [`SecretFileError`]: unreadable, accessible to group/others, or empty.
pub fn read_secret_file(path: &Path) -> Result<Zeroizing<String>, SecretFileError> {
    let io_err = |source| SecretFileError::Io {
        path: path.to_owned(),
        source,
    };
    let mut file = File::open(path).map_err(io_err)?;
    let len = check_permissions(&file, path)?;
    // Reserve up front so the buffer never reallocates and leaves copies behind.
    let mut content = Zeroizing::new(String::with_capacity(len.saturating_add(1)));
    file.read_to_string(&mut content).map_err(io_err)?;
    let trimmed = content.trim_end_matches(['\n', '\r']).len();
    content.truncate(trimmed);
    if content.is_empty() {
        return Err(SecretFileError::Empty {
            path: path.to_owned(),
        });
    }
    Ok(content)
}

/// Refuses a file that group or others can access; returns its size.
#[cfg(unix)]
fn check_permissions(file: &File, path: &Path) -> Result<usize, SecretFileError> {
    use std::os::unix::fs::PermissionsExt as _;
    let meta = file.metadata().map_err(|source| SecretFileError::Io {
        path: path.to_owned(),
        source,
    })?;
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(SecretFileError::Permissions {
            path: path.to_owned(),
            mode,
        });
    }
    Ok(usize::try_from(meta.len()).unwrap_or(0))
}

#[cfg(not(unix))]
fn check_permissions(file: &File, path: &Path) -> Result<usize, SecretFileError> {
    let meta = file.metadata().map_err(|source| SecretFileError::Io {
        path: path.to_owned(),
        source,
    })?;
    Ok(usize::try_from(meta.len()).unwrap_or(0))
}

/// Why a root key could not be loaded or used.
#[derive(Debug, thiserror::Error)]
pub enum RootKeyError {
    /// The key file could not be used.
    #[error(transparent)]
    File(#[from] SecretFileError),
    /// The environment variable is unset or not UTF-8.
    #[error("environment variable {0} is not set")]
    MissingEnv(String),
    /// The text is not 32 bytes in hex or base64.
    #[error("a root key is 32 bytes, written as 64 hex characters or as base64")]
    Encoding,
    /// A wrapped KEK has the wrong length.
    #[error("the wrapped KEK is malformed")]
    Malformed,
    /// A wrapped KEK has an unknown format byte.
    #[error("unsupported wrapped-KEK format {0}")]
    UnsupportedVersion(u8),
    /// A wrapped KEK was wrapped by another root key (a rotation is incomplete, or the wrong
    /// key was loaded).
    #[error("the KEK was wrapped by root key {found}, but the loaded root key is {loaded}")]
    WrongRootKey {
        /// The id of the loaded root key.
        loaded: RootKeyId,
        /// The id recorded in the wrapped KEK.
        found: RootKeyId,
    },
    /// The wrapped KEK failed its integrity check.
    #[error("the wrapped KEK failed its integrity check")]
    UnwrapFailed,
    /// Key wrap failed.
    #[error("wrapping the KEK failed")]
    WrapFailed,
}

/// A public fingerprint of a root key: the first 8 bytes of
/// `HMAC-SHA256(root key, "tether:root-key-id:v1")`. Safe to log; tells which root key wrapped
/// a KEK without revealing anything usable about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RootKeyId([u8; ROOT_KEY_ID_LEN]);

impl RootKeyId {
    /// The id recorded in a wrapped KEK, e.g. to find rows still wrapped by an old root key.
    ///
    /// # Errors
    ///
    /// [`RootKeyError::Malformed`] or [`RootKeyError::UnsupportedVersion`].
    pub fn of_wrapped_kek(wrapped: &[u8]) -> Result<Self, RootKeyError> {
        split_wrapped_kek(wrapped).map(|(id, _)| id)
    }

    /// The 8 bytes.
    #[must_use]
    pub fn as_bytes(&self) -> &[u8; ROOT_KEY_ID_LEN] {
        &self.0
    }
}

impl fmt::Display for RootKeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

/// The server's root key: wraps the per-organization KEKs. Zeroized on drop; no
/// `Debug`/`Clone`/`Display`.
pub struct RootKey(KeyBytes);

impl RootKey {
    /// A fresh random root key (for `--dev`, or to print for an operator to store).
    #[must_use]
    pub fn generate() -> Self {
        Self(KeyBytes::generate())
    }

    /// Parses 32 bytes written as 64 hex characters or as base64 (standard or URL-safe, with
    /// or without padding). Surrounding whitespace is ignored.
    ///
    /// # Errors
    ///
    /// [`RootKeyError::Encoding`] for anything else.
    pub fn from_encoded(text: &str) -> Result<Self, RootKeyError> {
        let text = text.trim();
        let bytes = decode_key_text(text).ok_or(RootKeyError::Encoding)?;
        KeyBytes::from_slice(bytes.as_slice())
            .map(Self)
            .map_err(|_| RootKeyError::Encoding)
    }

    /// Reads the key from a 0600 file (see [`read_secret_file`]).
    ///
    /// # Errors
    ///
    /// [`RootKeyError::File`] or [`RootKeyError::Encoding`].
    pub fn from_file(path: &Path) -> Result<Self, RootKeyError> {
        Self::from_encoded(&read_secret_file(path)?)
    }

    /// Reads the key from an environment variable.
    ///
    /// # Errors
    ///
    /// [`RootKeyError::MissingEnv`] or [`RootKeyError::Encoding`].
    pub fn from_env_var(name: &str) -> Result<Self, RootKeyError> {
        let value = std::env::var(name).map_err(|_| RootKeyError::MissingEnv(name.to_owned()))?;
        Self::from_encoded(&Zeroizing::new(value))
    }

    /// The key as standard base64, for an operator to store once (e.g. `tether operator
    /// generate-root-key`).
    #[must_use]
    pub fn export_base64(&self) -> Zeroizing<String> {
        Zeroizing::new(STANDARD.encode(self.0.expose()))
    }

    /// This key's public fingerprint.
    #[must_use]
    pub fn id(&self) -> RootKeyId {
        let key = hmac::Key::new(hmac::HMAC_SHA256, self.0.expose());
        let tag = hmac::sign(&key, b"tether:root-key-id:v1");
        let mut id = [0u8; ROOT_KEY_ID_LEN];
        id.iter_mut().zip(tag.as_ref()).for_each(|(i, t)| *i = *t);
        RootKeyId(id)
    }

    /// Wraps an organization KEK for storage: `0x01 ‖ root key id ‖ AES-256-KW(kek)`, 49 bytes.
    ///
    /// # Errors
    ///
    /// [`RootKeyError::WrapFailed`] (not expected with valid keys).
    pub fn wrap_kek(&self, kek: &OrgKek) -> Result<Vec<u8>, RootKeyError> {
        let aes = AesKek::new(&AES_256, self.0.expose()).map_err(|_| RootKeyError::WrapFailed)?;
        let mut kw = [0u8; KEY_LEN + 8];
        let kw = aes
            .wrap(kek.expose(), &mut kw)
            .map_err(|_| RootKeyError::WrapFailed)?;
        let mut out = Vec::with_capacity(WRAPPED_KEK_LEN);
        out.push(WRAPPED_KEK_V1);
        out.extend_from_slice(&self.id().0);
        out.extend_from_slice(kw);
        Ok(out)
    }

    /// Unwraps a KEK stored by [`RootKey::wrap_kek`].
    ///
    /// # Errors
    ///
    /// [`RootKeyError::WrongRootKey`] if another root key wrapped it, [`RootKeyError::UnwrapFailed`]
    /// if it was altered, [`RootKeyError::Malformed`] / [`RootKeyError::UnsupportedVersion`].
    pub fn unwrap_kek(&self, wrapped: &[u8]) -> Result<OrgKek, RootKeyError> {
        let (found, kw) = split_wrapped_kek(wrapped)?;
        let loaded = self.id();
        if found != loaded {
            return Err(RootKeyError::WrongRootKey { loaded, found });
        }
        let aes = AesKek::new(&AES_256, self.0.expose()).map_err(|_| RootKeyError::UnwrapFailed)?;
        let mut out = Zeroizing::new([0u8; KEY_LEN + 8]);
        let kek = aes
            .unwrap(kw, out.as_mut_slice())
            .map_err(|_| RootKeyError::UnwrapFailed)?;
        OrgKek::from_bytes(kek).map_err(|_| RootKeyError::UnwrapFailed)
    }
}

impl ZeroizeOnDrop for RootKey {}

fn split_wrapped_kek(wrapped: &[u8]) -> Result<(RootKeyId, &[u8]), RootKeyError> {
    let (&version, rest) = wrapped.split_first().ok_or(RootKeyError::Malformed)?;
    if version != WRAPPED_KEK_V1 {
        return Err(RootKeyError::UnsupportedVersion(version));
    }
    if wrapped.len() != WRAPPED_KEK_LEN {
        return Err(RootKeyError::Malformed);
    }
    let (id, kw) = rest
        .split_at_checked(ROOT_KEY_ID_LEN)
        .ok_or(RootKeyError::Malformed)?;
    let id = <[u8; ROOT_KEY_ID_LEN]>::try_from(id).map_err(|_| RootKeyError::Malformed)?;
    Ok((RootKeyId(id), kw))
}

fn decode_key_text(text: &str) -> Option<Zeroizing<Vec<u8>>> {
    if text.len() == KEY_LEN * 2 {
        // Decoded straight into zeroizing memory: no plain copy of the key is left behind.
        let mut key = Zeroizing::new(vec![0u8; KEY_LEN]);
        return hex::decode_to_slice(text, &mut key[..]).ok().map(|()| key);
    }
    [STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD]
        .iter()
        .find_map(|engine| engine.decode(text).ok())
        .map(Zeroizing::new)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::tests::{assert_not_impl, assert_zeroize_on_drop};
    use std::io::Write as _;

    const HEX: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

    fn secret_file(content: &str, mode: u32) -> tempfile::NamedTempFile {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(content.as_bytes()).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(file.path(), std::fs::Permissions::from_mode(mode)).unwrap();
        }
        file
    }

    #[test]
    fn root_key_cannot_be_printed_or_cloned() {
        assert_not_impl!(RootKey: Clone, Copy, core::fmt::Debug, core::fmt::Display);
        assert_zeroize_on_drop::<RootKey>();
    }

    #[test]
    fn secret_file_trims_trailing_newlines_only() {
        let file = secret_file("  s3cret \r\n\n", 0o600);
        assert_eq!(read_secret_file(file.path()).unwrap().as_str(), "  s3cret ");
    }

    #[cfg(unix)]
    #[test]
    fn secret_file_refuses_group_or_other_access() {
        for mode in [0o640, 0o604, 0o620, 0o644, 0o666, 0o660] {
            let file = secret_file("s3cret", mode);
            let err = read_secret_file(file.path()).unwrap_err();
            assert!(matches!(err, SecretFileError::Permissions { mode: m, .. } if m == mode));
            assert!(err.to_string().contains("chmod 600"));
        }
        assert!(read_secret_file(secret_file("s3cret", 0o400).path()).is_ok());
    }

    #[test]
    fn secret_file_missing_or_empty() {
        let missing = read_secret_file(Path::new("/nonexistent/tether/key"));
        assert!(matches!(missing, Err(SecretFileError::Io { .. })));
        let empty = secret_file("\n", 0o600);
        assert!(matches!(
            read_secret_file(empty.path()),
            Err(SecretFileError::Empty { .. })
        ));
    }

    #[test]
    fn root_key_accepts_hex_and_base64() {
        let from_hex = RootKey::from_encoded(HEX).unwrap();
        let b64 = from_hex.export_base64();
        let from_b64 = RootKey::from_encoded(&format!("{}\n", b64.as_str())).unwrap();
        assert_eq!(from_hex.id(), from_b64.id());
        let no_pad = b64.trim_end_matches('=');
        assert_eq!(RootKey::from_encoded(no_pad).unwrap().id(), from_hex.id());
        let url = URL_SAFE_NO_PAD.encode([0xfb_u8; 32]);
        assert!(RootKey::from_encoded(&url).is_ok());
    }

    #[test]
    fn root_key_rejects_wrong_sizes_and_junk() {
        for bad in [
            "",
            "00",
            &HEX[..62],
            &format!("{HEX}00"),
            &STANDARD.encode([1u8; 31]),
            "zz",
        ] {
            assert!(
                matches!(RootKey::from_encoded(bad), Err(RootKeyError::Encoding)),
                "{bad}"
            );
        }
    }

    #[test]
    fn root_key_from_file() {
        let file = secret_file(&format!("{HEX}\n"), 0o600);
        let key = RootKey::from_file(file.path()).unwrap();
        assert_eq!(key.id(), RootKey::from_encoded(HEX).unwrap().id());
        #[cfg(unix)]
        {
            let open = secret_file(HEX, 0o644);
            assert!(matches!(
                RootKey::from_file(open.path()),
                Err(RootKeyError::File(_))
            ));
        }
    }

    #[test]
    fn missing_env_var_is_named() {
        let err = RootKey::from_env_var("TETHER_TEST_ROOT_KEY_THAT_IS_NEVER_SET")
            .err()
            .unwrap();
        assert!(
            err.to_string()
                .contains("TETHER_TEST_ROOT_KEY_THAT_IS_NEVER_SET")
        );
    }

    #[test]
    fn root_key_id_is_pinned() {
        // HMAC-SHA256(0x00..0x1f, "tether:root-key-id:v1")[..8], computed independently.
        let id = RootKey::from_encoded(HEX).unwrap().id();
        assert_eq!(id.to_string(), ROOT_KEY_ID_VECTOR);
    }

    const ROOT_KEY_ID_VECTOR: &str = "f02c2ebbc4780cf6";

    #[test]
    fn kek_wrap_round_trip() {
        let root = RootKey::generate();
        let kek = OrgKek::generate();
        let wrapped = root.wrap_kek(&kek).unwrap();
        assert_eq!(wrapped.len(), WRAPPED_KEK_LEN);
        assert_eq!(RootKeyId::of_wrapped_kek(&wrapped).unwrap(), root.id());
        assert_eq!(root.unwrap_kek(&wrapped).unwrap().expose(), kek.expose());
    }

    #[test]
    fn kek_unwrap_failures() {
        let root = RootKey::generate();
        let wrapped = root.wrap_kek(&OrgKek::generate()).unwrap();
        let other = RootKey::generate();
        assert!(matches!(
            other.unwrap_kek(&wrapped),
            Err(RootKeyError::WrongRootKey { .. })
        ));
        for i in 0..wrapped.len() {
            let mut bad = wrapped.clone();
            bad[i] ^= 0x01;
            assert!(root.unwrap_kek(&bad).is_err(), "flip at byte {i} unwrapped");
        }
        assert!(matches!(
            root.unwrap_kek(&wrapped[..48]),
            Err(RootKeyError::Malformed)
        ));
        assert!(matches!(root.unwrap_kek(&[]), Err(RootKeyError::Malformed)));
    }
}
