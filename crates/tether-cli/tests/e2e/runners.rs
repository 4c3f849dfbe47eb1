//! Runners through the real binaries: `tether` (server and CLI) and `tether-runner`.
//! Registration, credentials, the two-phase startup, job.run through the API and the CLI,
//! revocation under one second, org isolation, and forged tunnel messages.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tether_proto::tunnel::tunnel_service_client::TunnelServiceClient;
use tether_proto::tunnel::{
    CloseReason, ControlMessage, Hello, OperationResult, RunnerMessage, control_message,
};
use tether_testkit::TestServer;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::server;

/// `tether-runner`, built next to `tether` (`cargo test --workspace` builds it before running
/// any test).
pub fn runner_bin() -> PathBuf {
    let bin = Path::new(env!("CARGO_BIN_EXE_tether")).with_file_name("tether-runner");
    assert!(
        bin.exists(),
        "{} is missing: run `cargo test --workspace` (scripts/test.sh does) or `cargo build -p tether-runner`",
        bin.display()
    );
    bin
}

/// A running `tether-runner` process, killed on drop.
pub struct Runner {
    pub child: Child,
    pub log: PathBuf,
}

impl Runner {
    /// Starts a runner from a credentials document, allowing `printenv` and `echo`, with
    /// `TAG=tag` in its own environment (passed to jobs).
    fn start(s: &TestServer, creds: &Value, tag: &str) -> Runner {
        let config = "capabilities = [\"job.run\"]\n[job]\nallowed_commands = [\"printenv\", \"echo\"]\n\
             inherit_env = [\"PATH\", \"TAG\"]\n";
        Runner::spawn(s, creds, config, &[("TAG", tag)])
    }

    /// Starts a runner with this local configuration (TOML) and a cleared environment:
    /// only `PATH`, `HOME` (the server's temp dir), the log filter and `env`.
    pub fn spawn(s: &TestServer, creds: &Value, config: &str, env: &[(&str, &str)]) -> Runner {
        let dir = s.dir.path();
        let n = std::time::UNIX_EPOCH.elapsed().unwrap().as_nanos();
        let creds_file = dir.join(format!("creds-{n}.json"));
        std::fs::write(&creds_file, creds.to_string()).unwrap();
        let private = std::os::unix::fs::PermissionsExt::from_mode(0o600);
        std::fs::set_permissions(&creds_file, private).unwrap();
        let config_file = dir.join(format!("runner-{n}.toml"));
        std::fs::write(&config_file, config).unwrap();
        let log = dir.join(format!("runner-{n}.log"));
        let child = Command::new(runner_bin())
            .arg("--credentials-file")
            .arg(&creds_file)
            .arg("--config")
            .arg(&config_file)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", dir)
            .env("TETHER_RUNNER_LOG", "info")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::from(std::fs::File::create(&log).unwrap()))
            .spawn()
            .unwrap();
        Runner { child, log }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the runner's log contains `text`.
    pub async fn wait_log(&self, text: &str, limit: Duration) {
        let deadline = Instant::now() + limit;
        while !self.log().contains(text) {
            assert!(
                Instant::now() < deadline,
                "no '{text}' in the runner log: {}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits for the process to exit; returns its code and how long it took.
    pub async fn wait_exit(&mut self, limit: Duration) -> Option<(i32, Duration)> {
        let started = Instant::now();
        while started.elapsed() < limit {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some((status.code().unwrap_or(-1), started.elapsed()));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        None
    }

    /// Waits for the process to exit and returns its code; panics with `what` and the
    /// runner's log when it is still running after `limit`.
    pub async fn must_exit(&mut self, limit: Duration, what: &str) -> i32 {
        match self.wait_exit(limit).await {
            Some((code, _)) => code,
            None => panic!("{what} after {limit:?}; runner log:\n{}", self.log()),
        }
    }
}

impl Drop for Runner {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub async fn register(s: &TestServer, org: &str, name: &str) {
    let body = json!({"metadata": {"name": name}, "spec": {"description": "e2e"}});
    let r = s
        .admin("POST", &format!("/v1/orgs/{org}/runners"), Some(&body))
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
}

pub async fn credentials(s: &TestServer, org: &str, name: &str, regenerate: bool) -> Value {
    let suffix = if regenerate { "/regenerate" } else { "" };
    let path = format!("/v1/orgs/{org}/runners/{name}/credentials{suffix}");
    let r = s.admin("POST", &path, None).await;
    assert_eq!(r.status, 201, "{}", r.text);
    s.remember(r.body["api_key"].as_str().unwrap());
    s.remember(r.body["runner_private_key"].as_str().unwrap());
    r.body
}

pub async fn status(s: &TestServer, org: &str, name: &str) -> Value {
    let r = s
        .admin(
            "GET",
            &format!("/v1/orgs/{org}/runners/{name}/status"),
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    r.body
}

pub async fn wait_status(s: &TestServer, org: &str, name: &str, want: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let st = status(s, org, name).await;
        if st["status"] == want {
            return st;
        }
        assert!(
            Instant::now() < deadline,
            "runner {name} never became {want}: {st}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn job(
    s: &TestServer,
    org: &str,
    name: &str,
    command: &str,
    args: &[&str],
) -> tether_testkit::Resp {
    let body = json!({
        "operation": {"type": "job.run", "command": command, "args": args},
        "timeout_secs": 20,
    });
    s.admin(
        "POST",
        &format!("/v1/orgs/{org}/runners/{name}/operations"),
        Some(&body),
    )
    .await
}

#[tokio::test]
async fn register_connect_run_regenerate_and_delete() {
    let s = server().await;
    assert!(
        s.tunnel_url.starts_with("https://127.0.0.1:"),
        "{}",
        s.tunnel_url
    );
    let out = s.cli(Some(&s.root_key.clone()), &["runner", "register", "r1"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(status(&s, "default", "r1").await["status"], "never_seen");

    // The document is exactly brief §10, and nothing secret is stored.
    let creds = credentials(&s, "default", "r1", false).await;
    let mut keys: Vec<&str> = creds
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "api_endpoint",
            "api_key",
            "ca_certificate",
            "org",
            "runner",
            "runner_certificate",
            "runner_id",
            "runner_private_key",
            "tunnel_endpoint",
            "type"
        ]
    );
    assert_eq!(creds["type"], "tether_runner");
    assert_eq!(creds["tunnel_endpoint"], s.tunnel_url.as_str());
    assert_eq!(creds["api_endpoint"], s.url.as_str());
    let plain = if s.database_url.starts_with("sqlite") {
        "SELECT key FROM settings WHERE instr(value, 'PRIVATE KEY') > 0"
    } else {
        "SELECT key FROM settings WHERE position(convert_to('PRIVATE KEY', 'UTF8') in value) > 0"
    };
    let ca = "SELECT key FROM settings WHERE key = 'runner_ca'";
    assert_eq!(
        tether_testkit::query_strings(&s.database_url, ca)
            .await
            .len(),
        1
    );
    let leaked = tether_testkit::query_strings(&s.database_url, plain).await;
    assert!(leaked.is_empty(), "the CA key must be sealed: {leaked:?}");

    // Phase 1 (Ack) then phase 2 (whoami); list shows it connected with its version.
    let mut runner = Runner::start(&s, &creds, "alpha");
    let st = wait_status(&s, "default", "r1", "connected").await;
    assert_eq!(st["version"], env!("CARGO_PKG_VERSION"));
    assert!(st["last_heartbeat"].is_string());
    let deadline = Instant::now() + Duration::from_secs(10);
    while !runner.log().contains("whoami succeeded") {
        assert!(Instant::now() < deadline, "no whoami: {}", runner.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let list = s.cli(Some(&s.root_key.clone()), &["runner", "list", "-o", "json"]);
    let list: Value = serde_json::from_slice(&list.stdout).unwrap();
    assert_eq!(list[0]["name"], "r1");
    assert_eq!(list[0]["status"], "connected");

    // job.run through the API and the CLI.
    let r = job(&s, "default", "r1", "printenv", &["TAG"]).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["output"]["job"]["exit_code"], 0);
    assert_eq!(r.body["logs"]["stdout"], "alpha\n");
    let out = s.cli(
        Some(&s.root_key.clone()),
        &["job", "run", "--runner", "r1", "--", "echo", "hi", "there"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hi there\n");
    // runner.ping is offered although the config lists only job.run.
    let out = s.cli(
        Some(&s.root_key.clone()),
        &["runner", "ping", "r1", "--count", "2"],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(text.matches("pong from runner 'r1'").count(), 2, "{text}");
    let ping = json!({"operation": {"type": "runner.ping"}});
    let r = s
        .req(
            "POST",
            "/v1/orgs/default/runners/r1/operations",
            Some(s.root_key.as_str()),
            Some(&ping),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["output"], json!({"pong": {}}));
    assert_eq!(r.body["operation"], "runner.ping");
    // Not on the allowlist: refused by the runner, never run.
    let r = job(&s, "default", "r1", "sh", &["-c", "id"]).await;
    assert!(r.status >= 400, "{}", r.text);

    // A second set of credentials leaves the first valid.
    let second = credentials(&s, "default", "r1", false).await;
    assert_ne!(second["runner_certificate"], creds["runner_certificate"]);
    assert_eq!(
        job(&s, "default", "r1", "echo", &["still"]).await.status,
        200
    );

    // Regenerate: the connected runner is cut within one second, then cannot come back.
    let started = Instant::now();
    let _new = credentials(&s, "default", "r1", true).await;
    let code = runner
        .must_exit(Duration::from_secs(5), "the runner was not disconnected")
        .await;
    let elapsed = started.elapsed();
    eprintln!("revocation: connected runner exited {elapsed:?} after the regenerate call");
    assert!(elapsed < Duration::from_secs(1), "took {elapsed:?}");
    assert_ne!(code, 0);
    assert!(runner.log().contains("revoked"), "{}", runner.log());
    let mut again = Runner::start(&s, &creds, "alpha");
    let code = again
        .must_exit(Duration::from_secs(20), "old credentials kept running")
        .await;
    assert_ne!(code, 0);
    assert!(again.log().contains("revoked"), "{}", again.log());
    // The old API key is revoked as well.
    let who = s
        .req("GET", "/v1/auth/whoami", creds["api_key"].as_str(), None)
        .await;
    assert_eq!(who.status, 401);
    let r = job(&s, "default", "r1", "echo", &["x"]).await;
    assert_eq!(r.code(), "runner_unavailable", "{}", r.text);
    assert_eq!(status(&s, "default", "r1").await["status"], "unavailable");

    // Delete: the service account and its keys go, live tunnels close.
    let creds3 = credentials(&s, "default", "r1", false).await;
    let mut third = Runner::start(&s, &creds3, "alpha");
    wait_status(&s, "default", "r1", "connected").await;
    let started = Instant::now();
    let out = s.cli(Some(&s.root_key.clone()), &["runner", "delete", "r1"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let code = third
        .must_exit(Duration::from_secs(5), "still connected")
        .await;
    eprintln!(
        "revocation: delete disconnected the runner in {:?}",
        started.elapsed()
    );
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_ne!(code, 0);
    let sa = s
        .admin("GET", "/v1/orgs/default/service-accounts/runner-r1", None)
        .await;
    assert_eq!(sa.status, 404);
    let who = s
        .req("GET", "/v1/auth/whoami", creds3["api_key"].as_str(), None)
        .await;
    assert_eq!(who.status, 401);
}

#[tokio::test]
async fn requests_reach_only_the_runner_of_their_org() {
    let s = server().await;
    let r = s
        .admin(
            "POST",
            "/v1/orgs",
            Some(&json!({"metadata": {"name": "beta"}, "spec": {}})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    // The same runner name in both orgs.
    register(&s, "default", "shared").await;
    register(&s, "beta", "shared").await;
    let a = credentials(&s, "default", "shared", false).await;
    let b = credentials(&s, "beta", "shared", false).await;
    let mut ra = Runner::start(&s, &a, "org-a");
    let _rb = Runner::start(&s, &b, "org-b");
    wait_status(&s, "default", "shared", "connected").await;
    wait_status(&s, "beta", "shared", "connected").await;
    for _ in 0..5 {
        let ya = job(&s, "default", "shared", "printenv", &["TAG"]).await;
        let yb = job(&s, "beta", "shared", "printenv", &["TAG"]).await;
        assert_eq!(ya.body["logs"]["stdout"], "org-a\n", "{}", ya.text);
        assert_eq!(yb.body["logs"]["stdout"], "org-b\n", "{}", yb.text);
    }
    // With A's runner gone, A's requests fail; they never fall through to B's runner.
    let _ = ra.child.kill();
    let _ = ra.child.wait();
    wait_status(&s, "default", "shared", "unavailable").await;
    let ya = job(&s, "default", "shared", "printenv", &["TAG"]).await;
    assert_eq!(ya.status, 503, "{}", ya.text);
    assert_eq!(ya.code(), "runner_unavailable");
    // A user of org default only cannot reach org beta's runner.
    let kim = s.user_key("kim").await;
    let r = s
        .req(
            "POST",
            "/v1/orgs/beta/runners/shared/operations",
            Some(&kim),
            Some(&json!({"operation": {"type": "job.run", "command": "echo"}})),
        )
        .await;
    assert_eq!(r.status, 404, "{}", r.text);
}

/// A tunnel client speaking raw protocol messages with a runner's certificate.
struct RawClient {
    tx: mpsc::Sender<RunnerMessage>,
    rx: tonic::Streaming<ControlMessage>,
}

impl RawClient {
    async fn connect(creds: &Value, first: RunnerMessage) -> RawClient {
        let tls = tonic::transport::ClientTlsConfig::new()
            .ca_certificate(tonic::transport::Certificate::from_pem(
                creds["ca_certificate"].as_str().unwrap(),
            ))
            .identity(tonic::transport::Identity::from_pem(
                creds["runner_certificate"].as_str().unwrap(),
                creds["runner_private_key"].as_str().unwrap(),
            ))
            .domain_name("127.0.0.1");
        let channel = tonic::transport::Endpoint::from_shared(
            creds["tunnel_endpoint"].as_str().unwrap().to_owned(),
        )
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
        .unwrap();
        let (tx, out) = mpsc::channel(64);
        tx.send(first).await.unwrap();
        let rx = TunnelServiceClient::new(channel)
            .attach(ReceiverStream::new(out))
            .await
            .unwrap()
            .into_inner();
        RawClient { tx, rx }
    }

    /// The next control message other than a heartbeat, or None when the stream ends.
    async fn next(&mut self) -> Option<ControlMessage> {
        loop {
            let msg = tokio::time::timeout(Duration::from_secs(10), self.rx.message())
                .await
                .expect("no answer from the server")
                .ok()??;
            if !matches!(msg.kind, Some(control_message::Kind::Heartbeat(_))) {
                return Some(msg);
            }
        }
    }

    async fn expect_violation(&mut self) {
        match self.next().await.map(|m| m.kind) {
            Some(Some(control_message::Kind::Close(c))) => {
                assert_eq!(c.reason, CloseReason::ProtocolViolation as i32, "{c:?}");
            }
            other => panic!("expected Close(ProtocolViolation), got {other:?}"),
        }
    }
}

fn hello(org_id: &str, runner_id: &str) -> RunnerMessage {
    RunnerMessage::hello(Hello {
        protocol_version: tether_proto::PROTOCOL_VERSION,
        runner_version: "forged".into(),
        capabilities: vec!["job.run".into()],
        org_id: org_id.into(),
        runner_id: runner_id.into(),
    })
}

#[tokio::test]
async fn forged_messages_are_refused_and_audited() {
    tether_server::install_crypto_provider();
    let s = server().await;
    let r = s
        .admin(
            "POST",
            "/v1/orgs",
            Some(&json!({"metadata": {"name": "beta"}, "spec": {}})),
        )
        .await;
    let beta_id = r.body["metadata"]["id"].as_str().unwrap().to_owned();
    register(&s, "default", "a1").await;
    register(&s, "beta", "b1").await;
    let a = credentials(&s, "default", "a1", false).await;
    let b = credentials(&s, "beta", "b1", false).await;
    let org_a = s.admin("GET", "/v1/orgs/default", None).await.body["metadata"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let a_id = a["runner_id"].as_str().unwrap().to_owned();
    let b_id = b["runner_id"].as_str().unwrap().to_owned();

    // A certificate of org A (default) claiming org B, or B's runner: refused.
    let mut c = RawClient::connect(&a, hello(&beta_id, &b_id)).await;
    c.expect_violation().await;
    let mut c = RawClient::connect(&a, hello(&org_a, &b_id)).await;
    c.expect_violation().await;
    assert_eq!(status(&s, "beta", "b1").await["status"], "never_seen");
    assert_eq!(status(&s, "default", "a1").await["status"], "never_seen");

    // An honest Hello gets an Ack; then a result for a request id never issued is refused.
    let mut c = RawClient::connect(&a, hello(&org_a, &a_id)).await;
    assert!(matches!(
        c.next().await.and_then(|m| m.kind),
        Some(control_message::Kind::Ack(_))
    ));
    wait_status(&s, "default", "a1", "connected").await;
    let forged = OperationResult::err(
        "op_never_issued",
        tether_proto::tunnel::ErrorCode::Internal,
        "x",
    );
    c.tx.send(RunnerMessage::result(forged)).await.unwrap();
    c.expect_violation().await;

    // A heartbeat flood closes the session.
    let mut c = RawClient::connect(&a, hello(&org_a, &a_id)).await;
    assert!(c.next().await.is_some());
    for i in 0..50 {
        let _ = c.tx.send(RunnerMessage::heartbeat(i, 0)).await;
    }
    c.expect_violation().await;

    // Each refusal is in the (hash-chained) request log, attributed to the runner.
    let log = s
        .admin(
            "GET",
            "/v1/audit/default/log?result=denied&limit=1000",
            None,
        )
        .await;
    let text = log.text;
    assert!(text.contains("runner:a1@default"), "{text}");
    assert!(text.contains("does not match the certificate"), "{text}");
    assert!(text.contains("never given"), "{text}");
    assert!(text.contains("heartbeat flood"), "{text}");
    let verify = s.admin("GET", "/v1/audit/default/verify", None).await;
    assert_eq!(verify.status, 200, "{}", verify.text);
}

#[tokio::test]
async fn a_silent_runner_becomes_unavailable_after_two_missed_beats() {
    tether_server::install_crypto_provider();
    let bin = Path::new(env!("CARGO_BIN_EXE_tether"));
    let s = TestServer::start_with_env(bin, &[("TETHER_TUNNEL_HEARTBEAT_MS", "300")]).await;
    register(&s, "default", "quiet").await;
    let creds = credentials(&s, "default", "quiet", false).await;
    let org = s.admin("GET", "/v1/orgs/default", None).await.body["metadata"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let runner_id = creds["runner_id"].as_str().unwrap().to_owned();
    let mut c = RawClient::connect(&creds, hello(&org, &runner_id)).await;
    match c.next().await.and_then(|m| m.kind) {
        Some(control_message::Kind::Ack(ack)) => assert_eq!(ack.heartbeat_interval_ms, 300),
        other => panic!("expected an Ack, got {other:?}"),
    }
    assert_eq!(status(&s, "default", "quiet").await["status"], "connected");
    // No heartbeat is sent: after two missed beats (600 ms) the session is closed.
    let started = Instant::now();
    let closed = loop {
        match c.rx.message().await {
            Ok(Some(m)) if matches!(m.kind, Some(control_message::Kind::Close(_))) => break true,
            Ok(Some(_)) => continue,
            _ => break false,
        }
    };
    assert!(closed, "the server did not close a silent session");
    let elapsed = started.elapsed();
    assert!(elapsed < Duration::from_secs(3), "took {elapsed:?}");
    assert_eq!(
        status(&s, "default", "quiet").await["status"],
        "unavailable"
    );
    let r = job(&s, "default", "quiet", "echo", &["x"]).await;
    assert_eq!(r.code(), "runner_unavailable", "{}", r.text);
    // A runner that beats stays connected.
    let mut c = RawClient::connect(&creds, hello(&org, &runner_id)).await;
    assert!(c.next().await.is_some());
    for i in 0..8 {
        c.tx.send(RunnerMessage::heartbeat(i, 0)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    assert_eq!(status(&s, "default", "quiet").await["status"], "connected");
}
