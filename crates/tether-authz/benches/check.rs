//! Benchmarks on Tether's built-in model with about 1,000,000 tuples.
//!
//! Run with `cargo bench -p tether-authz`. Besides criterion's figures, prints
//! p50/p99 latency per Check shape and the store's bytes per tuple.

#![expect(clippy::expect_used, reason = "benchmark setup fails loudly")]

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use serde_json::{Map, Value, json};
use tether_authz::{
    AuthorizationModel, CheckRequest, Engine, Limits, ListObjectsRequest, MemoryTupleStore,
    TETHER_MODEL_DSL, Tuple,
};

const ENVS: usize = 40;
const RESOURCES_PER_ENV: usize = 10_000;
const TEAMS: usize = 1_000;
const USERS: usize = 50_000;

fn obj(t: &str, id: impl std::fmt::Display) -> String {
    format!("{t}:{id}")
}

fn ctx(v: Value) -> Map<String, Value> {
    v.as_object().cloned().unwrap_or_default()
}

fn build() -> (AuthorizationModel, MemoryTupleStore) {
    let model = AuthorizationModel::from_dsl(TETHER_MODEL_DSL).expect("model");
    let mut s = MemoryTupleStore::new();
    let w = |s: &mut MemoryTupleStore, o: String, r: &str, u: String| {
        s.write(Tuple::new(&o, r, &u)).expect("write");
    };
    // Teams nested 5 deep in chains: team:i (i % 5 == 0) is the top of a chain.
    for t in 0..TEAMS {
        for m in 0..20 {
            w(
                &mut s,
                obj("team", t),
                "member",
                obj("user", (t * 20 + m) % USERS),
            );
        }
        if t % 5 != 4 {
            w(
                &mut s,
                obj("team", t),
                "member",
                format!("team:{}#member", t + 1),
            );
        }
    }
    for e in 0..ENVS {
        w(
            &mut s,
            obj("environment", e),
            "organization",
            "organization:acme".into(),
        );
        for r in 0..RESOURCES_PER_ENV {
            let id = e * RESOURCES_PER_ENV + r;
            w(
                &mut s,
                obj("resource", id),
                "parent_env",
                obj("environment", e),
            );
            w(
                &mut s,
                obj("resource", id),
                "parent_org",
                "organization:acme".into(),
            );
        }
    }
    let mut n = 0usize;
    while s.len() < 1_000_000 {
        let id = (n * 7919) % (ENVS * RESOURCES_PER_ENV);
        w(
            &mut s,
            obj("resource", id),
            "viewer",
            obj("user", (n * 31) % USERS),
        );
        n += 1;
    }
    // Fixtures for the shapes.
    w(
        &mut s,
        "organization:acme".into(),
        "owner",
        "user:owner".into(),
    );
    w(
        &mut s,
        "organization:acme".into(),
        "viewer",
        "team:0#member".into(),
    );
    w(
        &mut s,
        "environment:3".into(),
        "viewer",
        "user:envviewer".into(),
    );
    w(
        &mut s,
        "organization:acme".into(),
        "member",
        "user:blocked".into(),
    );
    w(
        &mut s,
        "organization:acme".into(),
        "blocked",
        "user:blocked".into(),
    );
    let cond = ctx(json!({"allowed_cidr": "10.0.0.0/8"}));
    s.write(
        Tuple::new("resource:77", "value_reader", "user:vpn").with_condition("in_network", cond),
    )
    .expect("write");
    let window =
        ctx(json!({"not_before": "2024-01-01T00:00:00Z", "not_after": "2030-01-01T00:00:00Z"}));
    s.write(
        Tuple::new("resource:78", "value_reader", "user:temp")
            .with_condition("in_time_window", window),
    )
    .expect("write");
    (model, s)
}

fn shapes() -> Vec<(&'static str, CheckRequest)> {
    let mut ip = CheckRequest::new("resource:77", "can_read_value", "user:vpn");
    ip.context = ctx(json!({"client_ip": "10.2.3.4"}));
    let mut time = CheckRequest::new("resource:78", "can_read_value", "user:temp");
    time.context = ctx(json!({"now": "2026-06-01T12:00:00Z"}));
    vec![
        (
            "direct",
            CheckRequest::new("resource:0", "viewer", "user:0"),
        ),
        (
            "computed",
            CheckRequest::new("organization:acme", "viewer", "user:owner"),
        ),
        (
            "two_ttu_hops",
            CheckRequest::new("resource:30123", "can_read", "user:envviewer"),
        ),
        (
            "nested_teams",
            CheckRequest::new("organization:acme", "viewer", "user:99"),
        ),
        (
            "deny_but_not",
            CheckRequest::new("resource:5", "can_read", "user:blocked"),
        ),
        ("condition_ip", ip),
        ("condition_time", time),
    ]
}

/// CPU time of this thread, in nanoseconds (Linux schedstat; 0 elsewhere).
fn cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|x| x.parse().ok()))
        .unwrap_or(0)
}

fn percentiles(engine: &Engine, model: &AuthorizationModel, store: &MemoryTupleStore) {
    for (name, req) in shapes() {
        let expected = engine.check(model, store, &req).expect("check");
        let mut samples: Vec<Duration> = Vec::with_capacity(20_000);
        let cpu0 = cpu_ns();
        for _ in 0..20_000 {
            let start = Instant::now();
            let r = engine.check(model, store, black_box(&req));
            samples.push(start.elapsed());
            assert_eq!(r.ok(), Some(expected));
        }
        let cpu_per_call = cpu_ns().saturating_sub(cpu0) / 20_000;
        samples.sort();
        let p = |q: f64| {
            samples
                .get(((samples.len() as f64) * q) as usize)
                .copied()
                .unwrap_or_default()
        };
        println!(
            "check {name:>15}: allowed={expected} p50={:?} p99={:?} cpu={:.2}µs per call",
            p(0.5),
            p(0.99),
            cpu_per_call as f64 / 1e3
        );
    }
}

fn bench(c: &mut Criterion) {
    let t0 = Instant::now();
    let (model, store) = build();
    println!(
        "built {} tuples in {:?}; ~{} bytes/tuple (index + strings)",
        store.len(),
        t0.elapsed(),
        store.approximate_heap_bytes() / store.len().max(1)
    );
    let engine = Engine::new(Limits {
        list_objects_max_results: 100_000,
        ..Limits::default()
    });
    percentiles(&engine, &model, &store);
    let mut group = c.benchmark_group("check");
    for (name, req) in shapes() {
        group.bench_function(name, |b| {
            b.iter(|| engine.check(&model, &store, black_box(&req)))
        });
    }
    group.finish();
    let lo = ListObjectsRequest {
        object_type: "resource".into(),
        relation: "can_read".into(),
        user: "user:envviewer".into(),
        ..ListObjectsRequest::default()
    };
    let n = engine
        .list_objects(&model, &store, &lo)
        .expect("list")
        .objects
        .len();
    println!("list_objects returns {n} objects");
    // Wall-clock figures suffer when other work shares the cores: also print
    // this thread's CPU time per call, and p50 of the wall time.
    let mut walls = Vec::with_capacity(20);
    let cpu0 = cpu_ns();
    for _ in 0..20 {
        let start = Instant::now();
        let r = engine.list_objects(&model, &store, black_box(&lo));
        walls.push(start.elapsed());
        assert_eq!(r.map(|r| r.objects.len()).ok(), Some(n));
    }
    walls.sort();
    println!(
        "list_objects_10k: cpu={:.2}ms per call, wall p50={:?}",
        cpu_ns().saturating_sub(cpu0) as f64 / 20.0 / 1e6,
        walls.get(10).copied().unwrap_or_default()
    );
    c.bench_function("list_objects_10k", |b| {
        b.iter(|| engine.list_objects(&model, &store, black_box(&lo)))
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10).measurement_time(Duration::from_secs(3));
    targets = bench
}
criterion_main!(benches);
