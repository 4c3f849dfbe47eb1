//! Benchmarks: API-key verification (target: well under 10 µs) and envelope seal/open.
//!
//! Run with `cargo bench -p tether-crypto --bench crypto`.
#![expect(
    clippy::unwrap_used,
    reason = "benchmark setup with fixed, valid inputs"
)]

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tether_crypto::{Aad, ApiKey, KekRef, KeyEnv, LocalKek, OrgKek, Pepper, open, rewrap, seal};

fn api_keys(c: &mut Criterion) {
    let pepper = Pepper::from_bytes(&[7; 32]).unwrap();
    let (key, _) = ApiKey::generate(KeyEnv::Live);
    let presented = key.expose_secret().to_owned();
    let stored = pepper.hash(key.secret());
    c.bench_function("api_key/parse+verify", |b| {
        b.iter(|| {
            let parsed = ApiKey::parse(black_box(&presented)).unwrap();
            black_box(pepper.verify(parsed.secret(), &stored))
        });
    });
    c.bench_function("api_key/parse", |b| {
        b.iter(|| ApiKey::parse(black_box(&presented)))
    });
    c.bench_function("api_key/generate", |b| {
        b.iter(|| ApiKey::generate(KeyEnv::Live))
    });
}

fn envelope(c: &mut Criterion) {
    let kek = LocalKek::new(KekRef::local("org", "1").unwrap(), OrgKek::generate());
    let kek2 = LocalKek::new(KekRef::local("org", "2").unwrap(), OrgKek::generate());
    let aad = Aad::for_secret_version("org", Some("env"), "sec", 1).unwrap();
    let mut group = c.benchmark_group("envelope");
    for size in [64usize, 1024, 65536] {
        let plaintext = vec![0x5a; size];
        let blob = seal(&kek, &aad, &plaintext).unwrap();
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_function(format!("seal/{size}"), |b| {
            b.iter(|| seal(&kek, &aad, black_box(&plaintext)).unwrap());
        });
        group.bench_function(format!("open/{size}"), |b| {
            b.iter(|| open(&kek, &aad, black_box(&blob)).unwrap());
        });
        group.bench_function(format!("rewrap/{size}"), |b| {
            b.iter(|| rewrap(&kek, &kek2, black_box(&blob)).unwrap());
        });
    }
    group.finish();
}

criterion_group!(benches, api_keys, envelope);
criterion_main!(benches);
