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
mod delivery;
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

/// A process the test started, stopped when the test ends even if it fails (a failed
/// assertion once left a server running): SIGTERM, then SIGKILL after two seconds, so that a
/// CLI that passes SIGTERM on can stop its own child first.
pub struct Stopped(Option<std::process::Child>);

impl Stopped {
    /// Takes charge of `child`.
    pub fn new(child: std::process::Child) -> Stopped {
        Stopped(Some(child))
    }

    /// The process.
    pub fn get(&mut self) -> &mut std::process::Child {
        self.0.as_mut().unwrap()
    }

    /// Hands the process back (to wait for it), no longer stopped on drop.
    pub fn release(mut self) -> std::process::Child {
        self.0.take().unwrap()
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        let Some(child) = self.0.as_mut() else { return };
        if let Some(pid) = i32::try_from(child.id())
            .ok()
            .and_then(rustix::process::Pid::from_raw)
        {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
        for _ in 0..40 {
            if matches!(child.try_wait(), Ok(Some(_))) {
                return;
            }
            #[allow(
                clippy::disallowed_methods,
                reason = "drop cannot await; it runs once, when the test ends"
            )]
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// A CLI run's standard output; fails the test, showing both streams, if the command failed.
pub fn ok(o: &std::process::Output) -> String {
    assert!(
        o.status.success(),
        "command failed: {}\n{}",
        String::from_utf8_lossy(&o.stderr),
        String::from_utf8_lossy(&o.stdout)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A CLI run's standard error; fails the test if the command succeeded.
pub fn fails(o: &std::process::Output) -> String {
    assert!(
        !o.status.success(),
        "command succeeded: {}",
        String::from_utf8_lossy(&o.stdout)
    );
    String::from_utf8_lossy(&o.stderr).into_owned()
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
