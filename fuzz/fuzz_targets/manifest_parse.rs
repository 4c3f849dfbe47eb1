//! The YAML manifest loader (`tether apply -f`) must never panic, whatever the bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = tether_core::manifest::parse_manifests(data);
});
