//! Router-level tests (`app(state).oneshot(req)`): the route matrix. Every route of the router
//! must declare a permission, and a principal with no role must not be able to call any route
//! except the self-service ones listed here.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test code"
)]

use std::collections::BTreeSet;
use std::sync::Arc;

use axum::body::Body;
use http::Request;
use http_body_util::BodyExt;
use tether_server::routes::guard::{GUARDS, Target};
use tether_server::{AppState, CliOptions, Config, app};
use tower::ServiceExt;

/// Routes that any authenticated principal may call, because they act on the caller itself
/// (or, for listing organizations, search and apply, authorize each item inside).
const SELF_SERVICE: &[(&str, &str)] = &[
    ("GET", "/v1/auth/whoami"),
    ("GET", "/v1/auth/keys"),
    ("POST", "/v1/auth/keys"),
    ("DELETE", "/v1/auth/keys/{key_id}"),
    ("POST", "/v1/auth/password"),
    ("GET", "/v1/orgs"),
    ("GET", "/v1/orgs/{org}/search"),
];

async fn state() -> (AppState, String, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let cli = CliOptions {
        dev: true,
        data_dir: Some(dir.path().to_owned()),
        ..CliOptions::default()
    };
    let config = Config::resolve(&cli).unwrap();
    let state = tether_server::build_state(&config, Arc::new(tether_core::SystemClock))
        .await
        .unwrap();
    let boot = tether_server::bootstrap::bootstrap(&state, true)
        .await
        .unwrap();
    (state, boot.root_api_key.unwrap(), dir)
}

async fn call(
    state: &AppState,
    method: &str,
    uri: &str,
    token: Option<&str>,
    body: &str,
) -> (u16, serde_json::Value) {
    let mut req = Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", "application/json");
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let res = app(state.clone())
        .oneshot(req.body(Body::from(body.to_owned())).unwrap())
        .await
        .unwrap();
    let status = res.status().as_u16();
    // No response may be cached: they carry secret values, keys and tokens.
    assert_eq!(
        res.headers().get("cache-control").map(|v| v.as_bytes()),
        Some(&b"no-store"[..]),
        "{method} {uri}"
    );
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
    )
}

fn openapi_routes() -> BTreeSet<(String, String)> {
    let doc = serde_json::to_value(tether_server::routes::openapi()).unwrap();
    let mut out = BTreeSet::new();
    for (path, ops) in doc["paths"].as_object().unwrap() {
        for method in ops.as_object().unwrap().keys() {
            out.insert((method.to_uppercase(), path.clone()));
        }
    }
    out
}

#[test]
fn every_route_declares_a_permission_and_every_declaration_has_a_route() {
    let routes = openapi_routes();
    let guards: BTreeSet<(String, String)> = GUARDS
        .iter()
        .map(|g| (g.method.to_owned(), g.path.to_owned()))
        .collect();
    let undeclared: Vec<_> = routes.difference(&guards).collect();
    let stale: Vec<_> = guards.difference(&routes).collect();
    assert!(
        undeclared.is_empty(),
        "routes without a declared permission: {undeclared:?}"
    );
    assert!(stale.is_empty(), "declarations without a route: {stale:?}");
}

fn concrete(path: &str) -> String {
    path.replace("{org}", "default")
        .replace("{kind}", "envs")
        .replace("{name}", "dev")
        .replace("{key_id}", "abcdefghijkl")
        .replace("{version}", "ver_00000000000000000000000000")
}

#[tokio::test]
async fn a_principal_with_no_role_can_call_nothing_but_self_service() {
    let (state, root, _dir) = state().await;
    let body = r#"{"metadata": {"name": "nobody"}, "spec": {}}"#;
    assert_eq!(
        call(&state, "POST", "/v1/orgs/default/users", Some(&root), body)
            .await
            .0,
        201
    );
    let (s, key) = call(
        &state,
        "POST",
        "/v1/orgs/default/users/nobody/keys",
        Some(&root),
        r#"{"name": "k"}"#,
    )
    .await;
    assert_eq!(s, 201);
    let nobody = key["key"].as_str().unwrap().to_owned();
    let mut checked = 0;
    for g in GUARDS.iter().filter(|g| g.target != Target::Public) {
        if SELF_SERVICE.contains(&(g.method, g.path)) {
            continue;
        }
        let uri = concrete(g.path);
        let payload = match g.path {
            "/v1/apply" => "kind: Environment\nmetadata: {name: sneaky}\n",
            _ => r#"{"metadata": {"name": "dev"}, "spec": {}}"#,
        };
        let (anon, _) = call(&state, g.method, &uri, None, payload).await;
        assert_eq!(
            anon, 401,
            "{} {} answered {anon} without a credential",
            g.method, g.path
        );
        let (status, err) = call(&state, g.method, &uri, Some(&nobody), payload).await;
        assert!(
            matches!(status, 403 | 404),
            "{} {} answered {status} to a principal with no role: {err}",
            g.method,
            g.path
        );
        checked += 1;
    }
    assert!(checked >= 20, "only {checked} routes checked");
}

#[tokio::test]
async fn public_routes_answer_without_credentials() {
    let (state, _root, _dir) = state().await;
    for path in ["/healthz", "/readyz", "/.well-known/jwks.json"] {
        assert_eq!(call(&state, "GET", path, None, "").await.0, 200, "{path}");
    }
    let (docs, _) = call(&state, "GET", "/docs/", None, "").await;
    assert_eq!(docs, 200, "Swagger UI");
    let (s, doc) = call(&state, "GET", "/openapi.json", None, "").await;
    assert_eq!(s, 200);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
}
