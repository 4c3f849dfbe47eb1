#![no_main]
//! Tuple parsing, validation, store writes and checks: no panic on any input.
use libfuzzer_sys::fuzz_target;
use tether_authz::{AuthorizationModel, CheckRequest, Engine, MemoryTupleStore, TETHER_MODEL_DSL, Tuple};

fuzz_target!(|data: &[u8]| {
    let Ok(src) = std::str::from_utf8(data) else { return };
    let Ok(model) = AuthorizationModel::from_dsl(TETHER_MODEL_DSL) else { return };
    let mut parts = src.splitn(3, '\n');
    let (o, r, u) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let t = Tuple::new(o, r, u);
    let mut store = MemoryTupleStore::new();
    let _ = store.write_validated(&model, t.clone());
    let _ = store.write(t.clone());
    let _ = Engine::default().check(&model, &store, &CheckRequest::new(o, r, u));
    store.delete(&t);
});
