//! Resource names (slugs): unique per (org, env, kind).

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Longest accepted name.
pub const MAX_NAME_LEN: usize = 63;

/// A validated resource name: 1 to 63 characters of lowercase letters, digits, `-` and `_`,
/// starting with a letter and not ending with `-` or `_`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Name(String);

/// Why a name was refused. The message is safe to show to a client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid name '{name}': {reason}")]
pub struct NameError {
    /// The offending input, truncated.
    pub name: String,
    /// What rule it breaks.
    pub reason: &'static str,
}

impl Name {
    /// Validates `input` as a name.
    pub fn parse(input: &str) -> Result<Self, NameError> {
        let fail = |reason| NameError {
            name: input.chars().take(MAX_NAME_LEN).collect(),
            reason,
        };
        if input.is_empty() {
            return Err(fail("a name cannot be empty"));
        }
        if input.len() > MAX_NAME_LEN {
            return Err(fail("a name has at most 63 characters"));
        }
        if !input.starts_with(|c: char| c.is_ascii_lowercase()) {
            return Err(fail("a name starts with a lowercase letter"));
        }
        if input.ends_with(['-', '_']) {
            return Err(fail("a name cannot end with '-' or '_'"));
        }
        let ok = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_';
        if !input.chars().all(ok) {
            return Err(fail("use only lowercase letters, digits, '-' and '_'"));
        }
        Ok(Self(input.to_owned()))
    }

    /// Validates a name for a kind: variables are named like environment variables
    /// (`[A-Za-z_][A-Za-z0-9_]*`, at most 255 characters); every other kind uses slugs.
    pub fn parse_for(kind: crate::Kind, input: &str) -> Result<Self, NameError> {
        if kind != crate::Kind::Variable {
            return Self::parse(input);
        }
        let first_ok = input.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_');
        let rest_ok = input.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !first_ok || !rest_ok || input.len() > 255 {
            let name = input.chars().take(MAX_NAME_LEN).collect();
            return Err(NameError {
                name,
                reason: "a variable is named like an environment variable: a letter or '_', then letters, digits or '_'",
            });
        }
        Ok(Self(input.to_owned()))
    }

    /// The name as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl Serialize for Name {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Name {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Name::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_slugs() {
        for ok in ["a", "prod", "team-1", "svc_acct", "a1-b2"] {
            assert!(Name::parse(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn variables_use_environment_variable_names() {
        assert!(Name::parse_for(crate::Kind::Variable, "DATABASE_URL").is_ok());
        assert!(Name::parse_for(crate::Kind::Variable, "_x1").is_ok());
        assert!(Name::parse_for(crate::Kind::Variable, "1X").is_err());
        assert!(Name::parse_for(crate::Kind::Variable, "A-B").is_err());
        assert!(Name::parse_for(crate::Kind::Team, "DATABASE_URL").is_err());
    }

    #[test]
    fn refuses_bad_names() {
        let long = "a".repeat(64);
        for bad in [
            "",
            "1abc",
            "-x",
            "x-",
            "Prod",
            "a b",
            "a/b",
            "é",
            long.as_str(),
        ] {
            assert!(Name::parse(bad).is_err(), "{bad}");
        }
    }
}
