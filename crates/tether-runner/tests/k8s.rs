#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test code"
)]
//! `k8s.list_pods` through the tunnel. The Kubernetes API server here is an in-test HTTP FAKE
//! (axum on 127.0.0.1:0 serving `/api/v1/namespaces/{ns}/pods` with a bearer-token check),
//! not a real cluster: it checks the request the runner builds and the result it maps.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, Query};
use axum::http::{HeaderMap, StatusCode};
use common::TestServer;
use tether_core::clock::SystemClock;
use tether_proto::ops::OperationKind;
use tether_proto::tunnel::{
    ControlMessage, ErrorCode, K8sListPods, OperationRequest, OperationResult,
    operation_output::Kind as OutputKind, operation_request::Operation, operation_result::Outcome,
    runner_message,
};
use tether_runner::connector::proxy_route;
use tether_runner::{Credentials, RunnerConfig, RunnerOptions};

const TOKEN: &str = "k8s-bearer-token-do-not-print";

/// The fake API server; records the label selectors it was asked for.
async fn fake_api_server() -> (u16, Arc<Mutex<Vec<String>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let app = axum::Router::new().route(
        "/api/v1/namespaces/{ns}/pods",
        axum::routing::get(
            move |Path(ns): Path<String>,
                  Query(q): Query<std::collections::HashMap<String, String>>,
                  headers: HeaderMap| {
                let log = log.clone();
                async move {
                    let auth = headers
                        .get("authorization")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default();
                    if auth != format!("Bearer {TOKEN}") {
                        return Err(StatusCode::UNAUTHORIZED);
                    }
                    if ns != "apps" {
                        return Err(StatusCode::NOT_FOUND);
                    }
                    log.lock()
                        .unwrap()
                        .push(q.get("labelSelector").cloned().unwrap_or_default());
                    Ok(axum::Json(serde_json::json!({
                        "kind": "PodList",
                        "apiVersion": "v1",
                        "items": [
                            {"metadata": {"name": "web-1", "namespace": "apps"},
                             "spec": {"nodeName": "node-a"},
                             "status": {"phase": "Running"}},
                            {"metadata": {"name": "web-2", "namespace": "apps"},
                             "spec": {},
                             "status": {"phase": "Pending"}}
                        ]
                    })))
                }
            },
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (port, seen)
}

fn kubeconfig(port: u16, token: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Config
current-context: fake
clusters:
- name: fake
  cluster:
    server: http://127.0.0.1:{port}
contexts:
- name: fake
  context:
    cluster: fake
    user: runner
    namespace: apps
users:
- name: runner
  user:
    token: {token}
"#
    )
}

async fn call(server: &TestServer, id: &str, op: K8sListPods) -> OperationResult {
    server.send(ControlMessage::request(OperationRequest {
        request_id: id.into(),
        timeout_ms: 10_000,
        aws_auth: None,
        operation: Some(Operation::K8sListPods(op)),
    }));
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(15), server.next(false))
            .await
            .unwrap();
        if let Some(runner_message::Kind::Result(r)) = msg.kind
            && r.request_id == id
        {
            return r;
        }
    }
}

#[tokio::test]
async fn list_pods_uses_the_kubeconfig_token_and_maps_results_and_errors() {
    let (port, seen) = fake_api_server().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kubeconfig");
    std::fs::write(&path, kubeconfig(port, TOKEN)).unwrap();
    let config = RunnerConfig::parse(&format!(
        "[k8s]\nkubeconfig = {:?}\n[tunnel]\nstartup_timeout_secs = 5\n",
        path.to_str().unwrap()
    ))
    .unwrap();

    let server = TestServer::start(1000).await;
    let (json, _) = server.credentials();
    let credentials = Credentials::parse(&json).unwrap();
    let proxy = proxy_route(&credentials.tunnel_endpoint, &|_: &str| None).unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(tether_runner::run(
        RunnerOptions {
            credentials,
            config,
            proxy,
            clock: Arc::new(SystemClock),
        },
        async move {
            let _ = stopped.await;
        },
    ));
    let Some(runner_message::Kind::Hello(hello)) = server.next(false).await.kind else {
        panic!("expected Hello")
    };
    assert!(
        hello
            .capabilities
            .contains(&OperationKind::K8sListPods.name().to_owned())
    );

    let ok = call(
        &server,
        "k1",
        K8sListPods {
            namespace: String::new(),
            label_selector: "app=web".into(),
            context: String::new(),
        },
    )
    .await;
    assert!(!format!("{ok:?}").contains(TOKEN));
    let Some(Outcome::Output(out)) = ok.outcome else {
        panic!("{ok:?}")
    };
    let Some(OutputKind::Pods(list)) = out.kind else {
        panic!()
    };
    let names: Vec<_> = list
        .pods
        .iter()
        .map(|p| (p.name.as_str(), p.phase.as_str(), p.node_name.as_str()))
        .collect();
    assert_eq!(
        names,
        [("web-1", "Running", "node-a"), ("web-2", "Pending", "")]
    );
    assert_eq!(*seen.lock().unwrap(), ["app=web"]);

    let missing = call(
        &server,
        "k2",
        K8sListPods {
            namespace: "other".into(),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(missing.error_code(), Some(ErrorCode::NotFound));

    let bad = call(
        &server,
        "k3",
        K8sListPods {
            namespace: "../etc".into(),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(bad.error_code(), Some(ErrorCode::InvalidRequest));

    // A rotated (here: wrong) token in the kubeconfig applies to the next request.
    std::fs::write(&path, kubeconfig(port, "stale-token")).unwrap();
    let denied = call(&server, "k4", K8sListPods::default()).await;
    assert_eq!(denied.error_code(), Some(ErrorCode::PermissionDenied));
    assert!(!format!("{denied:?}").contains("stale-token"));

    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(15), task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}
