//! The runner's credentials parser (`tether_runner::Credentials::parse`) on arbitrary input:
//! it must never panic, and its errors must never echo the input (a value may be a secret).
#![no_main]

use libfuzzer_sys::fuzz_target;
use tether_runner::Credentials;

fuzz_target!(|data: &[u8]| {
    let Ok(input) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(e) = Credentials::parse(input) {
        let msg = e.to_string();
        // Only distinctive inputs (long, with a character no error text has): a plain one may
        // be a substring of a fixed message.
        let distinctive =
            input.len() >= 24 && input.chars().any(|c| c.is_control() || !c.is_ascii());
        if distinctive {
            assert!(!msg.contains(input), "error echoes the input: {msg}");
        }
    }
});
