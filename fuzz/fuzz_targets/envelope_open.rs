//! `Envelope::parse` and `open` on arbitrary bytes: must never panic, and must never open
//! anything the fuzzer made up (it cannot forge an AES-GCM tag under the test KEK).
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use tether_crypto::envelope::Envelope;
use tether_crypto::{Aad, KekRef, LocalKek, OrgKek, open};

fn kek() -> &'static LocalKek {
    static KEK: OnceLock<LocalKek> = OnceLock::new();
    KEK.get_or_init(|| {
        let bytes: Vec<u8> = (0x20..0x40).collect();
        let key = OrgKek::from_bytes(&bytes).expect("32 bytes");
        LocalKek::new(KekRef::local("org_golden", "1").expect("valid ref"), key)
    })
}

fuzz_target!(|data: &[u8]| {
    if let Ok(envelope) = Envelope::parse(data) {
        let _ = envelope.kek_ref();
    }
    let aad = Aad::for_secret_version("org_fuzz", None, "sec_fuzz", 1).expect("valid aad");
    assert!(open(kek(), &aad, data).is_err(), "a fuzzer-made blob opened");
});
