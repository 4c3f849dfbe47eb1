//! Profiling driver (callgrind): `profile <shape> <iterations>` on the built-in model.
#![expect(clippy::expect_used, reason = "profiling driver")]
use std::hint::black_box;

use serde_json::json;
use tether_authz::{
    AuthorizationModel, CheckRequest, Engine, Limits, ListObjectsRequest, MemoryTupleStore,
    TETHER_MODEL_DSL, Tuple,
};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let shape = args.get(1).map_or("two_ttu_hops", String::as_str);
    let n: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(1000);
    let model = AuthorizationModel::from_dsl(TETHER_MODEL_DSL).expect("model");
    let mut s = MemoryTupleStore::new();
    let mut w = |o: &str, r: &str, u: &str| {
        s.write(Tuple::new(o, r, u)).expect("write");
    };
    for t in 0..50 {
        for m in 0..20 {
            w(
                &format!("team:{t}"),
                "member",
                &format!("user:{}", t * 20 + m),
            );
        }
        if t % 5 != 4 {
            w(
                &format!("team:{t}"),
                "member",
                &format!("team:{}#member", t + 1),
            );
        }
    }
    for e in 0..4 {
        w(
            &format!("environment:{e}"),
            "organization",
            "organization:acme",
        );
        for r in 0..10_000 {
            let id = e * 10_000 + r;
            w(
                &format!("resource:{id}"),
                "parent_env",
                &format!("environment:{e}"),
            );
            w(&format!("resource:{id}"), "parent_org", "organization:acme");
            w(
                &format!("resource:{id}"),
                "viewer",
                &format!("user:{}", id % 997),
            );
        }
    }
    if args.get(3).is_some_and(|a| a == "big") {
        // The bench's size: 400,000 resources and viewer grants up to 1M tuples.
        for e in 4..40 {
            w(
                &format!("environment:{e}"),
                "organization",
                "organization:acme",
            );
            for r in 0..10_000 {
                let id = e * 10_000 + r;
                w(
                    &format!("resource:{id}"),
                    "parent_env",
                    &format!("environment:{e}"),
                );
                w(&format!("resource:{id}"), "parent_org", "organization:acme");
            }
        }
        for n in 0..300_000usize {
            let id = (n * 7919) % 400_000;
            w(
                &format!("resource:{id}"),
                "viewer",
                &format!("user:{}", (n * 31) % 50_000),
            );
        }
    }
    w("organization:acme", "owner", "user:owner");
    w("organization:acme", "viewer", "team:0#member");
    w("environment:3", "viewer", "user:envviewer");
    w("organization:acme", "member", "user:blocked");
    w("organization:acme", "blocked", "user:blocked");
    let cond = json!({"allowed_cidr": "10.0.0.0/8"})
        .as_object()
        .cloned()
        .expect("obj");
    s.write(
        Tuple::new("resource:77", "value_reader", "user:vpn").with_condition("in_network", cond),
    )
    .expect("write");
    let engine = Engine::new(Limits {
        list_objects_max_results: 100_000,
        ..Limits::default()
    });
    let mut req = match shape {
        "direct" => CheckRequest::new("resource:0", "viewer", "user:0"),
        "computed" => CheckRequest::new("organization:acme", "viewer", "user:owner"),
        "nested_teams" => CheckRequest::new("organization:acme", "viewer", "user:99"),
        "deny_but_not" => CheckRequest::new("resource:5", "can_read", "user:blocked"),
        "condition_ip" => CheckRequest::new("resource:77", "can_read_value", "user:vpn"),
        _ => CheckRequest::new("resource:30123", "can_read", "user:envviewer"),
    };
    if shape == "condition_ip" {
        req.context = json!({"client_ip": "10.2.3.4"})
            .as_object()
            .cloned()
            .expect("obj");
    }
    if shape == "list" {
        let lo = ListObjectsRequest {
            object_type: "resource".into(),
            relation: "can_read".into(),
            user: "user:envviewer".into(),
            ..ListObjectsRequest::default()
        };
        let (cpu0, t0) = (cpu_ns(), std::time::Instant::now());
        for _ in 0..n {
            let r = engine
                .list_objects(&model, &s, black_box(&lo))
                .expect("list");
            black_box(r.objects.len());
        }
        let per = |x: u128| x / u128::try_from(n.max(1)).unwrap_or(1);
        println!(
            "list: {} µs CPU, {} µs wall per call",
            per(u128::from(cpu_ns().saturating_sub(cpu0))) / 1000,
            per(t0.elapsed().as_nanos()) / 1000
        );
        return;
    }
    let expected = engine.check(&model, &s, &req).expect("check");
    for _ in 0..n {
        assert_eq!(
            engine.check(&model, &s, black_box(&req)).expect("check"),
            expected
        );
    }
    println!("{shape}: {expected}");
}

/// CPU time of this thread, in nanoseconds (Linux schedstat; 0 elsewhere).
fn cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|x| x.parse().ok()))
        .unwrap_or(0)
}
