//! `ApiKey::parse` on arbitrary input: must never panic, and whatever it accepts must be
//! consistent with the documented layout.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tether_crypto::{API_KEY_LEN, ApiKey};

fuzz_target!(|data: &[u8]| {
    let Ok(input) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(parsed) = ApiKey::parse(input) {
        assert_eq!(input.len(), API_KEY_LEN);
        let hint = parsed.hint();
        assert!(input.starts_with(&hint.prefix_and_id()));
        assert!(input.ends_with(hint.last4()));
    }
});
