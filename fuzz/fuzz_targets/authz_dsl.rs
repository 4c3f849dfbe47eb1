#![no_main]
//! DSL parser, validator and printer: no panic; a valid model round-trips.
use libfuzzer_sys::fuzz_target;
use tether_authz::AuthorizationModel;

fuzz_target!(|data: &[u8]| {
    let Ok(src) = std::str::from_utf8(data) else { return };
    if let Ok(model) = AuthorizationModel::from_dsl(src) {
        let printed = model.to_dsl();
        let again = AuthorizationModel::from_dsl(&printed).map(|m| m.to_json());
        assert_eq!(again.ok(), Some(model.to_json()), "round trip failed:\n{printed}");
    }
});
