//! The tunnel frame decoders on arbitrary bytes: they must never panic, and whatever they
//! accept must re-encode to a message that decodes (and validates) to the same value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use prost::Message;
use tether_proto::frame::{decode_control_message, decode_runner_message};

fuzz_target!(|data: &[u8]| {
    if let Ok(msg) = decode_runner_message(data) {
        let again = decode_runner_message(&msg.encode_to_vec()).expect("re-encoded runner message");
        assert_eq!(again, msg);
    }
    if let Ok(msg) = decode_control_message(data) {
        let again =
            decode_control_message(&msg.encode_to_vec()).expect("re-encoded control message");
        assert_eq!(again, msg);
    }
});
