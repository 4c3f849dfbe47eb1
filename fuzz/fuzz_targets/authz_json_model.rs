#![no_main]
//! JSON model parser and validator: no panic on any input.
use libfuzzer_sys::fuzz_target;
use tether_authz::AuthorizationModel;

fuzz_target!(|data: &[u8]| {
    let Ok(src) = std::str::from_utf8(data) else { return };
    if let Ok(model) = AuthorizationModel::from_json(src) {
        let _ = model.to_dsl();
    }
});
