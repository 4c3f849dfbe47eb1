//! Typed identifiers: a short type prefix, `_`, and a UUIDv7 in Crockford base32 (26 characters),
//! for example `env_01jd3p6w1xk1v8h6n0f8mdq3zt`. Because each kind of id is its own type, an
//! environment id can never be passed where an organization id is expected.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

const ALPHABET: &[u8; 32] = b"0123456789abcdefghjkmnpqrstvwxyz";
const ENCODED_LEN: usize = 26;

/// Why an id string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// The prefix is not the one of this kind of id.
    #[error("expected an id starting with '{expected}_'")]
    WrongPrefix {
        /// The expected prefix.
        expected: &'static str,
    },
    /// The part after the prefix is not 26 characters of Crockford base32.
    #[error("the id is malformed")]
    Malformed,
}

/// Appends 128 bits as 26 lowercase Crockford base32 characters.
fn encode_into(out: &mut String, value: u128) {
    for i in (0..ENCODED_LEN).rev() {
        let shift = i * 5;
        let idx = ((value >> shift) & 0x1f) as usize;
        out.push(char::from(ALPHABET.get(idx).copied().unwrap_or(b'0')));
    }
}

/// Decodes 26 Crockford base32 characters into 128 bits.
fn decode(text: &str) -> Result<u128, IdError> {
    if text.len() != ENCODED_LEN {
        return Err(IdError::Malformed);
    }
    let mut value: u128 = 0;
    for (i, ch) in text.bytes().enumerate() {
        let digit = ALPHABET
            .iter()
            .position(|a| *a == ch.to_ascii_lowercase())
            .ok_or(IdError::Malformed)?;
        // The first character carries only the top 3 of 130 encoded bits.
        if i == 0 && digit > 7 {
            return Err(IdError::Malformed);
        }
        value = (value << 5) | digit as u128;
    }
    Ok(value)
}

/// Parses `prefix_<26 chars>` into the 128-bit value.
pub fn parse_prefixed(prefix: &'static str, text: &str) -> Result<u128, IdError> {
    let rest = text
        .strip_prefix(prefix)
        .and_then(|r| r.strip_prefix('_'))
        .ok_or(IdError::WrongPrefix { expected: prefix })?;
    decode(rest)
}

/// Formats a 128-bit value with a prefix.
pub fn format_prefixed(prefix: &str, value: u128) -> String {
    let mut out = String::with_capacity(prefix.len() + 1 + ENCODED_LEN);
    out.push_str(prefix);
    out.push('_');
    encode_into(&mut out, value);
    out
}

/// A fresh time-ordered 128-bit value (UUIDv7).
pub fn fresh() -> u128 {
    uuid::Uuid::now_v7().as_u128()
}

/// A unique 128-bit value that is not time-ordered: each thread starts at a random value and
/// counts up. For ids that are only ever compared for equality and made at a high rate (a
/// runner operation's request id), where [`fresh`]'s process-wide lock and clock read cost
/// more than the id: two threads would have to start within 2^64 of each other to meet.
pub fn unordered() -> u128 {
    thread_local! {
        static NEXT: std::cell::Cell<u128> = std::cell::Cell::new(uuid::Uuid::new_v4().as_u128());
    }
    NEXT.with(|next| {
        let v = next.get();
        next.set(v.wrapping_add(1));
        v
    })
}

macro_rules! typed_id {
    ($(#[$doc:meta])* $name:ident, $prefix:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(u128);

        impl $name {
            /// The prefix of this kind of id.
            pub const PREFIX: &'static str = $prefix;

            /// A new, time-ordered id.
            pub fn generate() -> Self {
                Self(fresh())
            }

            /// The raw 128-bit value.
            pub fn as_u128(&self) -> u128 {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&format_prefixed($prefix, self.0))
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(self, f)
            }
        }

        impl FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                parse_prefixed($prefix, s).map(Self)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

typed_id!(
    /// An organization.
    OrgId, "org");
typed_id!(
    /// An environment.
    EnvId, "env");
typed_id!(
    /// Any resource stored in the generic resource table.
    ResourceId, "res");
typed_id!(
    /// A version record in the audit chain.
    VersionId, "ver");
typed_id!(
    /// A request, as logged.
    RequestId, "req");

/// Parses any prefixed id, returning the prefix and value. Used for ids whose kind is dynamic.
pub fn parse_any(text: &str) -> Result<(&str, u128), IdError> {
    let (prefix, rest) = text.split_once('_').ok_or(IdError::Malformed)?;
    if prefix.is_empty() || !prefix.bytes().all(|b| b.is_ascii_lowercase()) {
        return Err(IdError::Malformed);
    }
    Ok((prefix, decode(rest)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unordered_values_are_distinct_within_and_across_threads() {
        let mine: Vec<u128> = (0..1_000).map(|_| unordered()).collect();
        let theirs: Vec<u128> = std::thread::spawn(|| (0..1_000).map(|_| unordered()).collect())
            .join()
            .unwrap_or_default();
        let all: std::collections::HashSet<u128> = mine.iter().chain(&theirs).copied().collect();
        assert_eq!(all.len(), 2_000);
    }
    use proptest::prelude::*;

    #[test]
    fn ids_round_trip_and_keep_their_prefix() {
        let id = EnvId::generate();
        let text = id.to_string();
        assert!(text.starts_with("env_"));
        assert_eq!(text.len(), 4 + 26);
        assert_eq!(text.parse::<EnvId>().unwrap(), id);
        assert!(matches!(
            text.parse::<OrgId>(),
            Err(IdError::WrongPrefix { .. })
        ));
    }

    #[test]
    fn ids_are_time_ordered() {
        let a = ResourceId::generate();
        let b = ResourceId::generate();
        assert!(a.to_string() < b.to_string());
    }

    #[test]
    fn malformed_ids_are_refused() {
        for bad in [
            "",
            "env_",
            "env_abc",
            "env_zzzzzzzzzzzzzzzzzzzzzzzzzz",
            "env_0000000000000000000000000u",
        ] {
            assert!(bad.parse::<EnvId>().is_err(), "{bad}");
        }
    }

    proptest! {
        #[test]
        fn encode_decode_is_identity(v in any::<u128>()) {
            let mut text = String::new();
            encode_into(&mut text, v);
            prop_assert_eq!(decode(&text).unwrap(), v);
        }

        #[test]
        fn prefixed_ids_round_trip(v in any::<u128>()) {
            let text = format_prefixed("req", v);
            prop_assert_eq!(text.len(), 4 + ENCODED_LEN);
            prop_assert_eq!(&text[..4], "req_");
            prop_assert_eq!(parse_prefixed("req", &text).unwrap(), v);
        }

        #[test]
        fn parse_never_panics(s in ".{0,40}") {
            let _ = s.parse::<OrgId>();
            let _ = parse_any(&s);
        }
    }
}
