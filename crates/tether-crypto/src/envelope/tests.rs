use super::*;
use crate::keys::OrgKek;
use crate::keys::tests::assert_not_impl;

fn kek(id: &str, version: &str, byte: u8) -> LocalKek {
    let key = OrgKek::from_bytes(&[byte; 32]).unwrap();
    LocalKek::new(KekRef::local(id, version).unwrap(), key)
}

fn aad(version: u64) -> Aad {
    Aad::for_secret_version("org_a", Some("env_prod"), "sec_db", version).unwrap()
}

#[test]
fn local_kek_cannot_be_printed_or_cloned() {
    assert_not_impl!(LocalKek: Clone, Copy, core::fmt::Debug, core::fmt::Display);
}

#[test]
fn seal_then_open_round_trips() {
    let k = kek("org_a", "1", 1);
    for plaintext in [
        &b""[..],
        b"x",
        b"postgres://user:pass@db/app",
        &[0xff; 5000],
    ] {
        let blob = seal(&k, &aad(1), plaintext).unwrap();
        assert_eq!(open(&k, &aad(1), &blob).unwrap().as_slice(), plaintext);
    }
}

#[test]
fn the_same_plaintext_seals_differently_each_time() {
    let k = kek("org_a", "1", 1);
    assert_ne!(
        seal(&k, &aad(1), b"v").unwrap(),
        seal(&k, &aad(1), b"v").unwrap()
    );
}

#[test]
fn a_blob_moved_to_another_row_does_not_open() {
    let k = kek("org_a", "1", 1);
    let blob = seal(&k, &aad(1), b"secret").unwrap();
    let others = [
        aad(2),
        Aad::for_secret_version("org_b", Some("env_prod"), "sec_db", 1).unwrap(),
        Aad::for_secret_version("org_a", Some("env_dev"), "sec_db", 1).unwrap(),
        Aad::for_secret_version("org_a", None, "sec_db", 1).unwrap(),
        Aad::for_secret_version("org_a", Some("env_prod"), "sec_other", 1).unwrap(),
    ];
    for other in others {
        assert_eq!(
            open(&k, &other, &blob).err(),
            Some(EnvelopeError::Decrypt),
            "{other}"
        );
    }
}

#[test]
fn blob_header_names_the_kek() {
    let k = kek("org_a", "7", 1);
    let blob = seal(&k, &aad(1), b"secret").unwrap();
    let env = Envelope::parse(&blob).unwrap();
    assert_eq!(env.format_version(), FORMAT_V1);
    assert_eq!(env.kek_ref(), &KekRef::local("org_a", "7").unwrap());
    assert_eq!(env.wrapped_dek().ciphertext().len(), LOCAL_WRAPPED_LEN);
    assert_eq!(
        blob.len(),
        1 + 1 + 5 + 2 + 5 + 1 + 1 + 2 + 40 + 12 + 6 + TAG_LEN
    );
}

#[test]
fn another_kek_is_unknown_and_a_same_named_wrong_key_fails_integrity() {
    let k = kek("org_a", "1", 1);
    let blob = seal(&k, &aad(1), b"secret").unwrap();
    let other_version = kek("org_a", "2", 1);
    let err = open(&other_version, &aad(1), &blob).unwrap_err();
    assert!(matches!(err, EnvelopeError::Kek(KekError::UnknownKek(_))));
    assert_eq!(err.code(), "kek_unavailable");
    let impostor = kek("org_a", "1", 2);
    let err = open(&impostor, &aad(1), &blob).unwrap_err();
    assert!(matches!(err, EnvelopeError::Kek(KekError::UnwrapFailed(_))));
    assert_eq!(err.code(), "secret_undecryptable");
}

#[test]
fn rewrap_changes_the_kek_but_not_the_ciphertext() {
    let (old, new) = (kek("org_a", "1", 1), kek("org_a", "2", 2));
    let blob = seal(&old, &aad(1), b"secret").unwrap();
    let rewrapped = rewrap(&old, &new, &blob).unwrap();
    let tail = |b: &[u8]| b[b.len() - (12 + 6 + TAG_LEN)..].to_vec();
    assert_eq!(
        tail(&blob),
        tail(&rewrapped),
        "nonce and ciphertext are untouched"
    );
    assert_eq!(
        open(&new, &aad(1), &rewrapped).unwrap().as_slice(),
        b"secret"
    );
    assert!(open(&old, &aad(1), &rewrapped).is_err());
}

#[test]
fn a_ring_opens_blobs_of_every_version() {
    let blob1 = seal(&kek("org_a", "1", 1), &aad(1), b"one").unwrap();
    let blob2 = seal(&kek("org_a", "2", 2), &aad(2), b"two").unwrap();
    let ring = KekRing::new()
        .with(Box::new(kek("org_a", "1", 1)))
        .with(Box::new(kek("org_a", "2", 2)));
    assert_eq!(open(&ring, &aad(1), &blob1).unwrap().as_slice(), b"one");
    assert_eq!(open(&ring, &aad(2), &blob2).unwrap().as_slice(), b"two");
    let blob3 = seal(&kek("org_a", "3", 3), &aad(3), b"three").unwrap();
    assert!(matches!(
        open(&ring, &aad(3), &blob3),
        Err(EnvelopeError::Kek(KekError::UnknownKek(_)))
    ));
}

#[test]
fn dyn_providers_work() {
    let k: Box<dyn KekProvider> = Box::new(kek("org_a", "1", 1));
    let blob = seal(k.as_ref(), &aad(1), b"secret").unwrap();
    assert_eq!(
        open(k.as_ref(), &aad(1), &blob).unwrap().as_slice(),
        b"secret"
    );
}

#[test]
fn every_truncation_fails_cleanly() {
    let k = kek("org_a", "1", 1);
    let blob = seal(&k, &aad(1), b"secret").unwrap();
    for len in 0..blob.len() {
        assert!(
            open(&k, &aad(1), &blob[..len]).is_err(),
            "prefix of {len} bytes opened"
        );
    }
}

#[test]
fn unknown_format_versions_are_named() {
    let k = kek("org_a", "1", 1);
    let mut blob = seal(&k, &aad(1), b"secret").unwrap();
    blob[0] = 2;
    assert_eq!(
        open(&k, &aad(1), &blob).err(),
        Some(EnvelopeError::UnsupportedVersion(2))
    );
    assert_eq!(
        Envelope::parse(&[]).err(),
        Some(EnvelopeError::Malformed("truncated"))
    );
}

#[test]
fn async_style_flow_matches_sync_flow() {
    // What a KMS adapter does: generate, wrap elsewhere, seal_with_dek; then parse and unwrap.
    let k = kek("org_a", "1", 1);
    let dek = DataKey::generate();
    let wrapped = k.wrap_dek(&dek).unwrap();
    let blob = seal_with_dek(&dek, &wrapped, &aad(1), b"secret").unwrap();
    assert_eq!(open(&k, &aad(1), &blob).unwrap().as_slice(), b"secret");
    let env = Envelope::parse(&blob).unwrap();
    let dek = k.unwrap_dek(env.wrapped_dek()).unwrap();
    assert_eq!(
        env.open_with_dek(&dek, &aad(1)).unwrap().as_slice(),
        b"secret"
    );
}

#[test]
fn unavailable_kek_maps_to_kek_unavailable() {
    struct Revoked(KekRef);
    impl KekProvider for Revoked {
        fn kek_ref(&self) -> &KekRef {
            &self.0
        }
        fn wrap_dek(&self, _: &DataKey) -> Result<WrappedDek, KekError> {
            Err(KekError::Unavailable {
                kek: self.0.clone(),
                reason: "revoked".into(),
            })
        }
        fn unwrap_dek(&self, _: &WrappedDek) -> Result<DataKey, KekError> {
            self.wrap_dek(&DataKey::generate())
                .map(|_| DataKey::generate())
        }
    }
    let k = kek("org_a", "1", 1);
    let blob = seal(&k, &aad(1), b"secret").unwrap();
    let revoked = Revoked(k.kek_ref().clone());
    let err = open(&revoked, &aad(1), &blob).unwrap_err();
    assert_eq!(err.code(), "kek_unavailable");
    assert!(!err.to_string().contains("secret"));
}
