//! Property tests: round trips, and parsers that never panic on untrusted input.

#![allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    reason = "test helpers outside #[test] functions; a panic is a test failure"
)]

use proptest::prelude::*;
use tether_crypto::envelope::Envelope;
use tether_crypto::{
    API_KEY_LEN, Aad, ApiKey, KekRef, KeyEnv, LocalKek, OrgKek, Pepper, open, rewrap, seal,
};

fn kek(version: &str, byte: u8) -> LocalKek {
    let key = OrgKek::from_bytes(&[byte; 32]).unwrap();
    LocalKek::new(KekRef::local("org_prop", version).unwrap(), key)
}

fn env_strategy() -> impl Strategy<Value = KeyEnv> {
    prop_oneof![Just(KeyEnv::Live), Just(KeyEnv::Test)]
}

/// Ids that are valid in an AAD.
fn id_strategy() -> impl Strategy<Value = String> {
    // A lone "-" is refused as an environment id: it is the AAD's "no environment" marker.
    "[A-Za-z0-9_-]{1,40}".prop_filter("'-' alone marks 'no environment'", |s| s != "-")
}

proptest! {
    #[test]
    fn api_key_generate_parse_round_trip(env in env_strategy()) {
        let pepper = Pepper::from_bytes(&[9; 32]).unwrap();
        let (key, id) = ApiKey::generate(env);
        let parsed = ApiKey::parse(key.expose_secret()).unwrap();
        prop_assert_eq!(parsed.id(), &id);
        prop_assert_eq!(parsed.env(), env);
        prop_assert_eq!(parsed.hint(), key.hint());
        prop_assert!(pepper.verify(parsed.secret(), &pepper.hash(key.secret())));
    }

    #[test]
    fn api_key_any_single_substitution_is_rejected(
        env in env_strategy(),
        pos in 0..API_KEY_LEN,
        replacement in proptest::char::any(),
    ) {
        let (key, _) = ApiKey::generate(env);
        let original = key.expose_secret();
        prop_assume!(original.chars().nth(pos) != Some(replacement));
        let mutated: String = original
            .chars()
            .enumerate()
            .map(|(i, c)| if i == pos { replacement } else { c })
            .collect();
        prop_assert!(ApiKey::parse(&mutated).is_err());
    }

    #[test]
    fn api_key_parse_never_panics(s in ".*") {
        let _ = ApiKey::parse(&s);
    }

    #[test]
    fn api_key_parse_never_panics_on_near_misses(s in "tk_(live|test)_[A-Za-z0-9_é]{48,54}") {
        let _ = ApiKey::parse(&s);
    }

    #[test]
    fn envelope_seal_open_round_trip(
        plaintext in proptest::collection::vec(any::<u8>(), 0..2048),
        org in id_strategy(),
        env in proptest::option::of(id_strategy()),
        secret in id_strategy(),
        version in any::<u64>(),
    ) {
        let aad = Aad::for_secret_version(&org, env.as_deref(), &secret, version).unwrap();
        let k = kek("1", 1);
        let blob = seal(&k, &aad, &plaintext).unwrap();
        let opened = open(&k, &aad, &blob).unwrap();
        prop_assert_eq!(opened.as_slice(), plaintext.as_slice());
        let k2 = kek("2", 2);
        let rewrapped = rewrap(&k, &k2, &blob).unwrap();
        let reopened = open(&k2, &aad, &rewrapped).unwrap();
        prop_assert_eq!(reopened.as_slice(), plaintext.as_slice());
    }

    #[test]
    fn envelope_any_mutated_blob_fails(
        plaintext in proptest::collection::vec(any::<u8>(), 0..256),
        pos in any::<prop::sample::Index>(),
        flip in 1..=255u8,
    ) {
        let aad = Aad::for_secret_version("org", Some("env"), "sec", 1).unwrap();
        let k = kek("1", 1);
        let mut blob = seal(&k, &aad, &plaintext).unwrap();
        let i = pos.index(blob.len());
        blob[i] ^= flip;
        prop_assert!(open(&k, &aad, &blob).is_err(), "flip {:#04x} at byte {} opened", flip, i);
    }

    #[test]
    fn envelope_truncated_or_extended_blob_fails(
        cut in any::<prop::sample::Index>(),
        extra in proptest::collection::vec(any::<u8>(), 1..32),
    ) {
        let aad = Aad::for_secret_version("org", None, "sec", 1).unwrap();
        let k = kek("1", 1);
        let blob = seal(&k, &aad, b"value").unwrap();
        let cut = cut.index(blob.len());
        prop_assert!(open(&k, &aad, &blob[..cut]).is_err());
        let mut longer = blob.clone();
        longer.extend_from_slice(&extra);
        prop_assert!(open(&k, &aad, &longer).is_err());
    }

    #[test]
    fn envelope_parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let aad = Aad::for_secret_version("org", None, "sec", 1).unwrap();
        let _ = Envelope::parse(&bytes);
        let _ = open(&kek("1", 1), &aad, &bytes);
    }

    #[test]
    fn envelope_parse_never_panics_behind_a_valid_header(
        tail in proptest::collection::vec(any::<u8>(), 0..128),
        keep in 0usize..64,
    ) {
        // A real header prefix followed by junk reaches the deeper fields of the parser.
        let aad = Aad::for_secret_version("org", None, "sec", 1).unwrap();
        let blob = seal(&kek("1", 1), &aad, b"v").unwrap();
        let mut bytes = blob[..keep.min(blob.len())].to_vec();
        bytes.extend_from_slice(&tail);
        let _ = open(&kek("1", 1), &aad, &bytes);
    }
}
