//! Password hashing for local users: Argon2id with the OWASP parameters, as PHC strings.

use argon2::password_hash::phc::PasswordHash;
use argon2::{Algorithm, Argon2, Params, PasswordHasher, PasswordVerifier, Version};
use secrecy::{ExposeSecret, SecretString};

use crate::rng::fill_random;

/// OWASP Password Storage Cheat Sheet, Argon2id option 2: 19 MiB, 2 passes, 1 lane.
pub const M_COST_KIB: u32 = 19_456;
/// Argon2 passes.
pub const T_COST: u32 = 2;
/// Argon2 lanes.
pub const P_COST: u32 = 1;
/// Salt length in bytes (RFC 9106 recommends 16).
const SALT_LEN: usize = 16;
/// The most memory a stored hash may ask for on verify (1 GiB), so a tampered row cannot make
/// a login allocate without bound.
const MAX_M_COST_KIB: u32 = 1 << 20;
/// The most passes a stored hash may ask for on verify.
const MAX_T_COST: u32 = 16;
/// The most lanes a stored hash may ask for on verify.
const MAX_P_COST: u32 = 8;

/// A password as typed by a user. Zeroized on drop; no `Debug`/`Clone`/`Display`.
pub struct Password(SecretString);

impl Password {
    /// Takes ownership of the typed password.
    #[must_use]
    pub fn new(password: String) -> Self {
        Self(SecretString::from(password))
    }

    fn expose(&self) -> &[u8] {
        self.0.expose_secret().as_bytes()
    }
}

impl From<String> for Password {
    fn from(password: String) -> Self {
        Self::new(password)
    }
}

/// Why a password could not be hashed or a stored hash could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PasswordError {
    /// The stored string is not a PHC string with a salt and a hash.
    #[error("the stored password hash is malformed")]
    Malformed,
    /// The stored hash is not Argon2id, or asks for more resources than allowed.
    #[error("the stored password hash uses an unsupported algorithm or parameters")]
    Unsupported,
    /// Argon2 itself failed (for example out of memory).
    #[error("password hashing failed")]
    Hashing,
}

fn hasher() -> Result<Argon2<'static>, PasswordError> {
    let params =
        Params::new(M_COST_KIB, T_COST, P_COST, None).map_err(|_| PasswordError::Hashing)?;
    Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
}

/// Hashes `password` with Argon2id (m=19456 KiB, t=2, p=1) and a random 16-byte salt, and returns
/// the PHC string (`$argon2id$v=19$m=19456,t=2,p=1$<salt>$<hash>`). Takes about 20–40 ms.
///
/// # Errors
///
/// [`PasswordError::Hashing`] if Argon2 fails.
pub fn hash_password(password: &Password) -> Result<String, PasswordError> {
    let mut salt = [0u8; SALT_LEN];
    fill_random(&mut salt);
    let hash = hasher()?
        .hash_password_with_salt(password.expose(), &salt)
        .map_err(|_| PasswordError::Hashing)?;
    Ok(hash.to_string())
}

/// Checks `password` against a stored PHC string, with the parameters stored in it (so hashes
/// made with older parameters still verify; see [`needs_rehash`]).
///
/// # Errors
///
/// [`PasswordError::Malformed`] or [`PasswordError::Unsupported`] for a bad stored string;
/// a wrong password is `Ok(false)`, not an error.
pub fn verify_password(password: &Password, phc: &str) -> Result<bool, PasswordError> {
    let hash = parse_stored(phc)?;
    match hasher()?.verify_password(password.expose(), &hash) {
        Ok(()) => Ok(true),
        Err(argon2::password_hash::Error::PasswordInvalid) => Ok(false),
        Err(_) => Err(PasswordError::Hashing),
    }
}

/// True if a stored hash was made with weaker parameters than the current ones; rehash the
/// password after the next successful login.
///
/// # Errors
///
/// As [`verify_password`] for a bad stored string.
pub fn needs_rehash(phc: &str) -> Result<bool, PasswordError> {
    let params = stored_params(&parse_stored(phc)?)?;
    Ok(params.m_cost() < M_COST_KIB || params.t_cost() < T_COST)
}

fn parse_stored(phc: &str) -> Result<PasswordHash, PasswordError> {
    let hash = PasswordHash::new(phc).map_err(|_| PasswordError::Malformed)?;
    if hash.salt.is_none() || hash.hash.is_none() {
        return Err(PasswordError::Malformed);
    }
    if hash.algorithm.as_str() != argon2::ARGON2ID_IDENT.as_str() {
        return Err(PasswordError::Unsupported);
    }
    let params = stored_params(&hash)?;
    if params.m_cost() > MAX_M_COST_KIB || params.t_cost() > MAX_T_COST {
        return Err(PasswordError::Unsupported);
    }
    if params.p_cost() > MAX_P_COST {
        return Err(PasswordError::Unsupported);
    }
    Ok(hash)
}

fn stored_params(hash: &PasswordHash) -> Result<Params, PasswordError> {
    Params::try_from(hash).map_err(|_| PasswordError::Malformed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::tests::assert_not_impl;

    #[test]
    fn password_cannot_be_printed_or_cloned() {
        assert_not_impl!(Password: Clone, Copy, core::fmt::Debug, core::fmt::Display);
    }

    /// The only test that runs real Argon2 (two hashes, about a second in a debug build).
    #[test]
    fn hash_then_verify_with_owasp_parameters() {
        let pw = Password::new("correct horse battery staple".into());
        let phc = hash_password(&pw).unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
        assert!(verify_password(&pw, &phc).unwrap());
        assert!(!verify_password(&Password::new("wrong".into()), &phc).unwrap());
        assert!(!needs_rehash(&phc).unwrap());
    }

    #[test]
    fn malformed_and_foreign_hashes_are_errors_not_false() {
        let pw = Password::new("x".into());
        assert_eq!(
            verify_password(&pw, "").err(),
            Some(PasswordError::Malformed)
        );
        assert_eq!(
            verify_password(&pw, "plaintext").err(),
            Some(PasswordError::Malformed)
        );
        assert_eq!(
            verify_password(&pw, "$argon2id$v=19$m=19456,t=2,p=1").err(),
            Some(PasswordError::Malformed)
        );
        let argon2i =
            "$argon2i$v=19$m=19456,t=2,p=1$c29tZXNhbHQ$iWh06vD8Fy27wf9npn6FXWiCX4K6pW6Ue1Bnzz07Z8A";
        assert_eq!(
            verify_password(&pw, argon2i).err(),
            Some(PasswordError::Unsupported)
        );
    }

    #[test]
    fn stored_parameters_are_capped() {
        let pw = Password::new("x".into());
        let huge = "$argon2id$v=19$m=4194304,t=2,p=1$c29tZXNhbHQ$iWh06vD8Fy27wf9npn6FXWiCX4K6pW6Ue1Bnzz07Z8A";
        assert_eq!(
            verify_password(&pw, huge).err(),
            Some(PasswordError::Unsupported)
        );
        let weak =
            "$argon2id$v=19$m=4096,t=1,p=1$c29tZXNhbHQ$iWh06vD8Fy27wf9npn6FXWiCX4K6pW6Ue1Bnzz07Z8A";
        assert!(needs_rehash(weak).unwrap());
    }
}
