//! Golden files pin the stored formats: blobs written by format v1 must open forever.
//!
//! The files were produced once by `TETHER_WRITE_GOLDEN=1 cargo test -p tether-crypto --test
//! golden -- --ignored`. Never regenerate them to make a test pass: a failure here means stored
//! data would become unreadable.

#![allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    reason = "test helpers outside #[test] functions; a panic is a test failure"
)]

use std::path::PathBuf;

use tether_crypto::envelope::{Envelope, FORMAT_V1};
use tether_crypto::{Aad, EnvelopeError, KekRef, LocalKek, OrgKek, RootKey, open};

const PLAINTEXT: &[u8] = br#"{"DATABASE_URL":"postgres://app:hunter2@db:5432/app"}"#;
const ROOT_KEY_HEX: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

fn golden_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name)
}

fn read_hex(name: &str) -> Vec<u8> {
    let text = std::fs::read_to_string(golden_path(name)).unwrap();
    let text: String = text.split_whitespace().collect();
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
        .collect()
}

fn write_hex(name: &str, bytes: &[u8]) {
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let lines: Vec<&str> = hex
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    std::fs::write(golden_path(name), lines.join("\n") + "\n").unwrap();
}

/// The fixed test KEK: bytes 0x20..0x3f, named `local/org_golden` version `1`.
fn golden_kek() -> LocalKek {
    let bytes: Vec<u8> = (0x20..0x40).collect();
    let kek_ref = KekRef::local("org_golden", "1").unwrap();
    LocalKek::new(kek_ref, OrgKek::from_bytes(&bytes).unwrap())
}

fn golden_aad() -> Aad {
    Aad::for_secret_version("org_golden", Some("env_prod"), "sec_golden", 3).unwrap()
}

#[test]
fn envelope_v1_golden_blob_still_opens() {
    let blob = read_hex("envelope_v1.hex");
    let envelope = Envelope::parse(&blob).unwrap();
    assert_eq!(envelope.format_version(), FORMAT_V1);
    assert_eq!(
        envelope.kek_ref(),
        &KekRef::local("org_golden", "1").unwrap()
    );
    let plaintext = open(&golden_kek(), &golden_aad(), &blob).unwrap();
    assert_eq!(plaintext.as_slice(), PLAINTEXT);
}

#[test]
fn envelope_v1_golden_blob_refuses_another_row() {
    let blob = read_hex("envelope_v1.hex");
    let other = Aad::for_secret_version("org_golden", Some("env_prod"), "sec_golden", 4).unwrap();
    assert_eq!(
        open(&golden_kek(), &other, &blob).err(),
        Some(EnvelopeError::Decrypt)
    );
}

#[test]
fn wrapped_kek_v1_golden_still_unwraps() {
    let wrapped = read_hex("wrapped_kek_v1.hex");
    let root = RootKey::from_encoded(ROOT_KEY_HEX).unwrap();
    let kek = root.unwrap_kek(&wrapped).unwrap();
    // The unwrapped KEK is the golden KEK: it opens the golden envelope.
    let kek = LocalKek::new(KekRef::local("org_golden", "1").unwrap(), kek);
    let blob = read_hex("envelope_v1.hex");
    assert_eq!(
        open(&kek, &golden_aad(), &blob).unwrap().as_slice(),
        PLAINTEXT
    );
}

#[test]
#[ignore = "writes the golden files; run only to create a new format's files"]
fn write_golden_files() {
    if std::env::var_os("TETHER_WRITE_GOLDEN").is_none() {
        return;
    }
    let blob = tether_crypto::seal(&golden_kek(), &golden_aad(), PLAINTEXT).unwrap();
    write_hex("envelope_v1.hex", &blob);
    let root = RootKey::from_encoded(ROOT_KEY_HEX).unwrap();
    let bytes: Vec<u8> = (0x20..0x40).collect();
    let wrapped = root.wrap_kek(&OrgKek::from_bytes(&bytes).unwrap()).unwrap();
    write_hex("wrapped_kek_v1.hex", &wrapped);
}
