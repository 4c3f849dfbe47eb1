//! Black-box tests: the real `tether` binary, driven over HTTP and through the CLI. They run
//! against SQLite, or PostgreSQL when `TETHER_TEST_DATABASE_URL` is set.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test code"
)]

mod audit;
mod cloud_aws;
mod errors;
mod identity;
mod kek;
mod kms;
mod openbao;
mod reliability;
mod replicas;
mod runner_live;
mod runners;
mod secrets;
mod walkthrough;

use tether_testkit::TestServer;

/// Starts a fresh server from this crate's binary.
/// Every record of the server's request log, read from its database as stored.
pub async fn request_log(s: &TestServer) -> Vec<tether_store::RequestLogRecord> {
    let store = tether_store::Store::open(&s.database_url, &Default::default())
        .await
        .unwrap();
    let all = tether_store::RequestLogFilter {
        limit: Some(10_000),
        ..Default::default()
    };
    let records = store.search_requests(&all).await.unwrap();
    store.close().await;
    records
}

pub async fn server() -> TestServer {
    TestServer::start(std::path::Path::new(env!("CARGO_BIN_EXE_tether"))).await
}

/// The manifests of the README walkthrough.
pub const WALKTHROUGH: &str = r#"
api_version: tether.dev/v1
kind: Environment
metadata: {name: production, labels: {tier: prod}}
spec: {protected: true}
---
kind: ServiceAccount
metadata: {name: ci}
spec: {description: CI pipeline}
---
kind: User
metadata: {name: alice}
spec: {email: alice@example.com}
---
kind: Team
metadata: {name: ops}
spec: {members: ["user:alice", "service_account:ci"]}
---
kind: RoleBinding
metadata: {name: ops-prod-admin, env: production}
spec: {role: admin, subject: "team:ops"}
"#;
