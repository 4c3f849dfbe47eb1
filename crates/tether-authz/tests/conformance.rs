//! OpenFGA conformance runner over `../shared/conformance/openfga/assets/tests/`.
//!
//! `TETHER_FGA_CONFORMANCE` may name another directory or a single YAML file in
//! the same format. Unknown fields are ignored. Prints `N passed, M failed` and
//! fails on any failure.

#![expect(
    clippy::panic,
    reason = "a test harness reports bad input by panicking"
)]

use std::path::PathBuf;

use serde::Deserialize;
use serde_json::{Map, Value};
use tether_authz::{
    AuthorizationModel, CheckRequest, Engine, ListObjectsRequest, ListUsersRequest,
    MemoryTupleStore, Tuple, UserFilter,
};

#[derive(Deserialize, Default)]
#[serde(default)]
struct Suite {
    tests: Vec<TestCase>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct TestCase {
    name: String,
    stages: Vec<Stage>,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct Stage {
    model: String,
    tuples: Option<Vec<Tuple>>,
    check_assertions: Option<Vec<CheckAssertion>>,
    list_objects_assertions: Option<Vec<ListObjectsAssertion>>,
    list_users_assertions: Option<Vec<ListUsersAssertion>>,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct CheckAssertion {
    tuple: Tuple,
    expectation: Option<bool>,
    error_code: Option<u32>,
    contextual_tuples: Option<Vec<Tuple>>,
    context: Option<Map<String, Value>>,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct ListObjectsAssertion {
    request: LoRequest,
    expectation: Option<Vec<String>>,
    error_code: Option<u32>,
    contextual_tuples: Option<Vec<Tuple>>,
    context: Option<Map<String, Value>>,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct LoRequest {
    user: String,
    #[serde(rename = "type")]
    object_type: String,
    relation: String,
    contextual_tuples: Option<Vec<Tuple>>,
    context: Option<Map<String, Value>>,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct ListUsersAssertion {
    request: LuRequest,
    expectation: Option<Vec<String>>,
    error_code: Option<u32>,
    contextual_tuples: Option<Vec<Tuple>>,
    context: Option<Map<String, Value>>,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct LuRequest {
    filters: Vec<String>,
    object: String,
    relation: String,
    contextual_tuples: Option<Vec<Tuple>>,
    context: Option<Map<String, Value>>,
}

fn default_path() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/conformance/openfga/assets/tests"
    ))
}

fn suite_files() -> Vec<PathBuf> {
    let root = std::env::var_os("TETHER_FGA_CONFORMANCE").map_or_else(default_path, PathBuf::from);
    if root.is_file() {
        return vec![root];
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap_or_else(|e| panic!("cannot read conformance dir {}: {e}", root.display()))
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
        .collect();
    files.sort();
    files
}

#[derive(Default)]
struct Tally {
    passed: usize,
    failed: usize,
    failures: Vec<String>,
}

impl Tally {
    fn record(&mut self, ok: bool, what: impl FnOnce() -> String) {
        if ok {
            self.passed += 1;
        } else {
            self.failed += 1;
            self.failures.push(what());
        }
    }
}

fn pick<T: Clone>(a: &Option<T>, b: &Option<T>) -> Option<T> {
    a.clone().or_else(|| b.clone())
}

fn outcome<T: std::fmt::Debug>(r: &Result<T, tether_authz::AuthzError>) -> String {
    match r {
        Ok(v) => format!("{v:?}"),
        Err(e) => format!("error {} ({e})", e.code()),
    }
}

fn run_stage(
    engine: &Engine,
    store: &mut MemoryTupleStore,
    name: &str,
    idx: usize,
    stage: &Stage,
    tally: &mut Tally,
) {
    let label = format!("{name}[stage {idx}]");
    let model = match AuthorizationModel::from_dsl(&stage.model) {
        Ok(m) => m,
        Err(e) => {
            tally.record(false, || format!("{label}: model rejected: {e}"));
            return;
        }
    };
    // Like the upstream harness, tuples accumulate across the stages of a test.
    for t in stage.tuples.iter().flatten() {
        if let Err(e) = store.write_validated(&model, t.clone()) {
            tally.record(false, || format!("{label}: tuple {t} rejected: {e}"));
        }
    }
    for a in stage.check_assertions.iter().flatten() {
        run_check(engine, &model, store, &label, a, tally);
    }
    for a in stage.list_objects_assertions.iter().flatten() {
        run_list_objects(engine, &model, store, &label, a, tally);
    }
    for a in stage.list_users_assertions.iter().flatten() {
        run_list_users(engine, &model, store, &label, a, tally);
    }
}

fn run_check(
    engine: &Engine,
    model: &AuthorizationModel,
    store: &MemoryTupleStore,
    label: &str,
    a: &CheckAssertion,
    tally: &mut Tally,
) {
    let req = CheckRequest {
        object: a.tuple.object.clone(),
        relation: a.tuple.relation.clone(),
        user: a.tuple.user.clone(),
        contextual_tuples: a.contextual_tuples.clone().unwrap_or_default(),
        context: a.context.clone().unwrap_or_default(),
    };
    let got = engine.check(model, store, &req);
    let ok = match (&got, a.error_code) {
        (Err(e), Some(code)) => e.code() == code,
        (Ok(b), None) => Some(*b) == a.expectation || (a.expectation.is_none() && !*b),
        _ => false,
    };
    tally.record(ok, || {
        format!(
            "{label}: check {} -> got {}, want {:?}/{:?}",
            a.tuple,
            outcome(&got),
            a.expectation,
            a.error_code
        )
    });
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v.dedup();
    v
}

fn run_list_objects(
    engine: &Engine,
    model: &AuthorizationModel,
    store: &MemoryTupleStore,
    label: &str,
    a: &ListObjectsAssertion,
    tally: &mut Tally,
) {
    let contextual_tuples =
        pick(&a.contextual_tuples, &a.request.contextual_tuples).unwrap_or_default();
    let context = pick(&a.context, &a.request.context).unwrap_or_default();
    let req = ListObjectsRequest {
        object_type: a.request.object_type.clone(),
        relation: a.request.relation.clone(),
        user: a.request.user.clone(),
        contextual_tuples: contextual_tuples.clone(),
        context: context.clone(),
    };
    let got = engine.list_objects(model, store, &req);
    let want = sorted(a.expectation.clone().unwrap_or_default());
    let mut ok = match (&got, a.error_code) {
        (Err(e), Some(code)) => e.code() == code,
        (Ok(r), None) => sorted(r.objects.clone()) == want,
        _ => false,
    };
    if let Ok(r) = &got {
        for obj in &r.objects {
            let creq = CheckRequest {
                object: obj.clone(),
                relation: req.relation.clone(),
                user: req.user.clone(),
                contextual_tuples: contextual_tuples.clone(),
                context: context.clone(),
            };
            ok &= matches!(engine.check(model, store, &creq), Ok(true));
        }
    }
    let got_s = got.map(|r| sorted(r.objects));
    tally.record(ok, || {
        format!(
            "{label}: list_objects {}#{}@{} -> got {}, want {want:?}/{:?}",
            req.object_type,
            req.relation,
            req.user,
            outcome(&got_s),
            a.error_code
        )
    });
}

fn run_list_users(
    engine: &Engine,
    model: &AuthorizationModel,
    store: &MemoryTupleStore,
    label: &str,
    a: &ListUsersAssertion,
    tally: &mut Tally,
) {
    let contextual_tuples =
        pick(&a.contextual_tuples, &a.request.contextual_tuples).unwrap_or_default();
    let context = pick(&a.context, &a.request.context).unwrap_or_default();
    let req = ListUsersRequest {
        object: a.request.object.clone(),
        relation: a.request.relation.clone(),
        user_filters: a
            .request
            .filters
            .iter()
            .map(|f| UserFilter::parse(f))
            .collect(),
        contextual_tuples: contextual_tuples.clone(),
        context: context.clone(),
    };
    let got = engine.list_users(model, store, &req);
    let want = sorted(a.expectation.clone().unwrap_or_default());
    let mut ok = match (&got, a.error_code) {
        (Err(e), Some(code)) => e.code() == code,
        (Ok(r), None) => sorted(r.users.clone()) == want,
        _ => false,
    };
    if let Ok(r) = &got {
        for user in &r.users {
            let creq = CheckRequest {
                object: req.object.clone(),
                relation: req.relation.clone(),
                user: user.clone(),
                contextual_tuples: contextual_tuples.clone(),
                context: context.clone(),
            };
            ok &= matches!(engine.check(model, store, &creq), Ok(true));
        }
    }
    let got_s = got.map(|r| sorted(r.users));
    tally.record(ok, || {
        format!(
            "{label}: list_users {}#{} filters {:?} -> got {}, want {want:?}/{:?}",
            req.object,
            req.relation,
            a.request.filters,
            outcome(&got_s),
            a.error_code
        )
    });
}

#[test]
fn openfga_conformance() {
    let engine = Engine::default();
    let mut tally = Tally::default();
    let files = suite_files();
    assert!(!files.is_empty(), "no conformance files found");
    for file in files {
        let text =
            std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        let options = serde_saphyr::options! {
            strict_booleans: true,
            non_finite_float_policy: serde_saphyr::NonFiniteFloatPolicy::AsString,
        };
        let suite: Suite = serde_saphyr::from_str_with_options(&text, options)
            .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        for case in &suite.tests {
            let mut store = MemoryTupleStore::new();
            for (i, stage) in case.stages.iter().enumerate() {
                run_stage(&engine, &mut store, &case.name, i, stage, &mut tally);
            }
        }
    }
    for f in &tally.failures {
        println!("FAIL {f}");
    }
    println!("{} passed, {} failed", tally.passed, tally.failed);
    assert_eq!(
        tally.failed, 0,
        "{} conformance assertions failed",
        tally.failed
    );
}
