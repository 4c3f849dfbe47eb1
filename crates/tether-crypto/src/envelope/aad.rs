//! The additional authenticated data that binds a ciphertext to its row.

use core::fmt;

/// Longest accepted id component, in bytes.
const MAX_COMPONENT_LEN: usize = 256;

/// An id given to [`Aad::for_secret_version`] would make the AAD ambiguous.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "the {0} is not usable in an AAD (empty, too long, or contains ':' or a control character)"
)]
pub struct AadError(pub &'static str);

/// `tether:v1:{org_id}:{env_id|-}:{secret_id}:{version}` (brief §9).
///
/// Sealing with one AAD and opening with another fails, so a ciphertext copied to another
/// organization, environment, secret or version does not open. The components may not contain
/// `:` (which would let two different rows share an AAD) and an environment id may not be `-`
/// (which would collide with an organization-level secret).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Aad(String);

impl Aad {
    /// The AAD of version `version` of secret `secret_id`, scoped to `org_id` and optionally to
    /// environment `env_id`.
    ///
    /// # Errors
    ///
    /// [`AadError`] naming the first component that is empty, longer than 256 bytes, or contains
    /// `:` or a control character (or an `env_id` of `-`).
    pub fn for_secret_version(
        org_id: &str,
        env_id: Option<&str>,
        secret_id: &str,
        version: u64,
    ) -> Result<Self, AadError> {
        check_component(org_id, "organization id")?;
        if let Some(env) = env_id {
            check_component(env, "environment id")?;
            if env == "-" {
                return Err(AadError("environment id"));
            }
        }
        check_component(secret_id, "secret id")?;
        let env = env_id.unwrap_or("-");
        // Concatenated, not formatted: this runs on every secret read and write.
        let version = version.to_string();
        let parts = [
            "tether:v1:",
            org_id,
            ":",
            env,
            ":",
            secret_id,
            ":",
            &version,
        ];
        Ok(Self(parts.concat()))
    }

    /// The AAD bytes fed to AES-GCM.
    #[must_use]
    pub fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }

    /// The AAD as text.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Aad {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn check_component(value: &str, what: &'static str) -> Result<(), AadError> {
    let bad = value.is_empty()
        || value.len() > MAX_COMPONENT_LEN
        || value.chars().any(|c| c == ':' || c.is_control());
    if bad { Err(AadError(what)) } else { Ok(()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_matches_the_brief() {
        let env = Aad::for_secret_version("org_1", Some("env_2"), "sec_3", 4).unwrap();
        assert_eq!(env.as_str(), "tether:v1:org_1:env_2:sec_3:4");
        let org = Aad::for_secret_version("org_1", None, "sec_3", 4).unwrap();
        assert_eq!(org.to_string(), "tether:v1:org_1:-:sec_3:4");
    }

    #[test]
    fn ambiguous_components_are_refused() {
        let long = "x".repeat(257);
        let cases = [
            ("", None, "s", "organization id"),
            ("o:x", None, "s", "organization id"),
            ("o", Some("-"), "s", "environment id"),
            ("o", Some(""), "s", "environment id"),
            ("o", None, "s\n", "secret id"),
            ("o", None, long.as_str(), "secret id"),
        ];
        for (org, env, secret, what) in cases {
            assert_eq!(
                Aad::for_secret_version(org, env, secret, 1),
                Err(AadError(what))
            );
        }
    }
}
