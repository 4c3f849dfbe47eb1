#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test code"
)]
//! The runner against the in-test tunnel server: handshake, Ack, whoami, heartbeats, job.run,
//! cancel, revocation, fatal causes, reconnects, and the CONNECT proxy path.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{ORG_ID, RUNNER_ID, TestServer, connect_proxy, now_ms};
use tether_core::clock::SystemClock;
use tether_pki::{CertificateAuthority, Validity};
use tether_proto::ops::OperationKind;
use tether_proto::tunnel::{
    ControlMessage, EnvVar, ErrorCode, JobRun, OperationRequest, RunnerMessage, operation_output,
    operation_request::Operation, operation_result::Outcome, runner_message,
};
use tether_runner::connector::proxy_route;
use tether_runner::{Credentials, FatalCause, RunnerConfig, RunnerError, RunnerOptions};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

fn config() -> RunnerConfig {
    RunnerConfig::parse(
        r#"
        [job]
        allowed_commands = ["sh", "sleep"]
        [tunnel]
        startup_timeout_secs = 2
        backoff_initial_ms = 50
        backoff_max_ms = 200
        ack_timeout_secs = 5
        connect_timeout_secs = 2
        "#,
    )
    .unwrap()
}

struct Running {
    task: JoinHandle<Result<(), RunnerError>>,
    stop: oneshot::Sender<()>,
}

fn spawn_runner(json: &str, env: &[(&'static str, String)]) -> Running {
    let credentials = Credentials::parse(json).unwrap();
    let env = env.to_vec();
    let lookup = move |k: &str| env.iter().find(|(n, _)| *n == k).map(|(_, v)| v.clone());
    let proxy = proxy_route(&credentials.tunnel_endpoint, &lookup).unwrap();
    let opts = RunnerOptions {
        credentials,
        config: config(),
        proxy,
        clock: Arc::new(SystemClock),
    };
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(tether_runner::run(opts, async move {
        let _ = stopped.await;
    }));
    Running { task, stop }
}

async fn outcome(running: Running) -> Result<(), RunnerError> {
    tokio::time::timeout(Duration::from_secs(15), running.task)
        .await
        .expect("runner still running")
        .unwrap()
}

async fn stop(running: Running) -> Result<(), RunnerError> {
    running.stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(15), running.task)
        .await
        .expect("runner still running")
        .unwrap()
}

async fn expect_hello(server: &TestServer) -> tether_proto::tunnel::Hello {
    match server.next(false).await.kind {
        Some(runner_message::Kind::Hello(h)) => h,
        other => panic!("expected Hello, got {other:?}"),
    }
}

#[tokio::test]
async fn hello_ack_whoami_and_heartbeats() {
    let server = TestServer::start(100).await;
    let (json, _) = server.credentials();
    let runner = spawn_runner(&json, &[]);
    let hello = expect_hello(&server).await;
    assert_eq!(hello.org_id, ORG_ID);
    assert_eq!(hello.runner_id, RUNNER_ID);
    assert_eq!(hello.protocol_version, tether_proto::PROTOCOL_VERSION);
    let mut expected = Vec::new();
    if cfg!(feature = "aws") {
        expected.extend([
            OperationKind::AwsStsGetCallerIdentity.name(),
            OperationKind::AwsS3ListBuckets.name(),
            OperationKind::AwsEc2DescribeVpcs.name(),
            OperationKind::AwsEc2CreateVpc.name(),
        ]);
    }
    expected.push(OperationKind::JobRun.name());
    expected.push(OperationKind::Ping.name());
    assert_eq!(hello.capabilities, expected);
    let mut beats = 0;
    let started = Instant::now();
    while beats < 3 {
        if matches!(
            server.next(true).await.kind,
            Some(runner_message::Kind::Heartbeat(_))
        ) {
            beats += 1;
        }
    }
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "heartbeats follow the Ack interval"
    );
    assert_eq!(server.whoami_calls(), 1, "phase 2 ran once, after the Ack");
    stop(runner).await.unwrap();
}

#[tokio::test]
async fn a_ping_is_answered_at_once_with_a_pong() {
    let server = TestServer::start(1000).await;
    let (json, _) = server.credentials();
    let runner = spawn_runner(&json, &[]);
    expect_hello(&server).await;
    for i in 0..3 {
        let id = format!("p{i}");
        let mut ping = OperationRequest::ping();
        ping.request_id.clone_from(&id);
        let sent = Instant::now();
        server.send(ControlMessage::request(ping));
        let (logs, result) = until_result(&server, &id).await;
        assert!(logs.is_empty());
        let Some(Outcome::Output(out)) = result.outcome else {
            panic!("{result:?}")
        };
        assert!(matches!(out.kind, Some(operation_output::Kind::Pong(_))));
        assert!(sent.elapsed() < Duration::from_secs(1));
    }
    stop(runner).await.unwrap();
}

#[tokio::test]
async fn a_server_that_stops_beating_is_left_and_dialled_again() {
    let server = TestServer::start(100).await;
    let (json, _) = server.credentials();
    let runner = spawn_runner(&json, &[]);
    expect_hello(&server).await;
    // Beats every 60 ms for longer than three intervals (300 ms): the session stays.
    for i in 0..8 {
        server.send(ControlMessage::heartbeat(i, now_ms()));
        tokio::time::sleep(Duration::from_millis(60)).await;
    }
    assert_eq!(
        server.hellos(),
        1,
        "the session stayed while the server beat"
    );
    // Then silence: the runner leaves after three intervals and dials again.
    let silent = Instant::now();
    expect_hello(&server).await;
    let took = silent.elapsed();
    assert!(
        took >= Duration::from_millis(200) && took < Duration::from_secs(3),
        "{took:?}"
    );
    assert_eq!(server.hellos(), 2);
    stop(runner).await.unwrap();
}

fn job(id: &str, command: &str, args: &[&str], env: &[(&str, &str)]) -> ControlMessage {
    ControlMessage::request(OperationRequest {
        request_id: id.into(),
        timeout_ms: 10_000,
        aws_auth: None,
        operation: Some(Operation::JobRun(JobRun {
            command: command.into(),
            args: args.iter().map(|a| (*a).to_owned()).collect(),
            env: env
                .iter()
                .map(|(n, v)| EnvVar {
                    name: (*n).into(),
                    value: (*v).into(),
                })
                .collect(),
            working_dir: String::new(),
        })),
    })
}

/// Collects logs until the result of `id`.
async fn until_result(
    server: &TestServer,
    id: &str,
) -> (String, tether_proto::tunnel::OperationResult) {
    let mut logs = String::new();
    loop {
        match server.next(false).await.kind {
            Some(runner_message::Kind::Log(l)) if l.request_id == id => {
                logs.push_str(&String::from_utf8_lossy(&l.data));
            }
            Some(runner_message::Kind::Result(r)) if r.request_id == id => return (logs, r),
            _ => {}
        }
    }
}

#[tokio::test]
async fn job_run_streams_logs_then_a_structured_result() {
    let server = TestServer::start(1000).await;
    let (json, _) = server.credentials();
    let runner = spawn_runner(&json, &[]);
    expect_hello(&server).await;
    server.send(job(
        "j1",
        "sh",
        &["-c", "echo start; echo token=$TOKEN; exit 7"],
        &[("TOKEN", "t0k")],
    ));
    let (logs, result) = until_result(&server, "j1").await;
    assert_eq!(logs, "start\ntoken=t0k\n");
    let Some(Outcome::Output(out)) = result.outcome else {
        panic!("{result:?}")
    };
    let Some(operation_output::Kind::Job(j)) = out.kind else {
        panic!()
    };
    assert_eq!(j.exit_code, Some(7));

    server.send(job("j2", "curl", &["http://example.com"], &[]));
    let (_, result) = until_result(&server, "j2").await;
    assert_eq!(result.error_code(), Some(ErrorCode::PermissionDenied));

    server.send(job("j3", "sleep", &["30"], &[]));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let cancelled_at = Instant::now();
    server.send(ControlMessage::cancel("j3", "user asked"));
    let (_, result) = until_result(&server, "j3").await;
    assert_eq!(result.error_code(), Some(ErrorCode::Cancelled));
    assert!(cancelled_at.elapsed() < Duration::from_secs(2));
    stop(runner).await.unwrap();
}

#[tokio::test]
async fn revocation_disconnects_within_one_second_and_names_the_cause() {
    let server = TestServer::start(1000).await;
    let (json, issued) = server.credentials();
    let runner = spawn_runner(&json, &[]);
    expect_hello(&server).await;
    let revoked_at = Instant::now();
    server.revoke(&issued);
    let err = outcome(runner).await.unwrap_err();
    let took = revoked_at.elapsed();
    assert!(took < Duration::from_secs(1), "took {took:?}");
    assert!(
        matches!(err, RunnerError::Fatal(FatalCause::Revoked(_))),
        "{err}"
    );
    // And it cannot come back: the handshake now fails with CertificateRevoked.
    let err = outcome(spawn_runner(&json, &[])).await.unwrap_err();
    assert!(
        matches!(err, RunnerError::Fatal(FatalCause::CertificateRevoked)),
        "{err}"
    );
    assert_eq!(err.exit_code(), 3);
    assert!(err.one_line().contains("revoked"));
}

#[tokio::test]
async fn a_server_signed_by_another_ca_is_refused_as_unknown_ca() {
    let server = TestServer::start(1000).await;
    let issued = server.issue(Validity::days_from(now_ms(), 1).unwrap());
    let other =
        CertificateAuthority::generate("other", Validity::days_from(now_ms(), 1).unwrap()).unwrap();
    // The runner's credentials name another CA; its own cert still chains to the server's CA.
    let json = server.credentials_json(&issued, "127.0.0.1", other.certificate_pem());
    let err = outcome(spawn_runner(&json, &[])).await.unwrap_err();
    assert!(
        matches!(err, RunnerError::Fatal(FatalCause::UnknownServerCa)),
        "{err}"
    );
    assert!(err.one_line().contains("unknown CA"));
}

#[tokio::test]
async fn a_runner_certificate_from_another_ca_is_refused_by_the_server() {
    let server = TestServer::start(1000).await;
    let other =
        CertificateAuthority::generate("other", Validity::days_from(now_ms(), 1).unwrap()).unwrap();
    let names = tether_pki::RunnerNames {
        org: "acme",
        runner: "r1",
        org_id: ORG_ID,
        runner_id: RUNNER_ID,
    };
    let foreign = other
        .issue_runner(names, Validity::days_from(now_ms(), 1).unwrap())
        .unwrap();
    server.active.insert(foreign.serial.clone());
    let json = server.credentials_json(&foreign, "127.0.0.1", server.ca.certificate_pem());
    let err = outcome(spawn_runner(&json, &[])).await.unwrap_err();
    assert!(
        matches!(err, RunnerError::Fatal(FatalCause::UnknownCaAtServer)),
        "{err}"
    );
}

#[tokio::test]
async fn an_expired_certificate_is_fatal() {
    let server = TestServer::start(1000).await;
    let past = Validity::from_unix_millis(now_ms() - 86_400_000, now_ms() - 60_000).unwrap();
    let issued = server.issue(past);
    let json = server.credentials_json(&issued, "127.0.0.1", server.ca.certificate_pem());
    let err = outcome(spawn_runner(&json, &[])).await.unwrap_err();
    assert!(
        matches!(err, RunnerError::Fatal(FatalCause::CertificateExpired)),
        "{err}"
    );
    assert!(err.one_line().contains("expired"));
}

#[tokio::test]
async fn a_revoked_api_key_fails_phase_two() {
    let server = TestServer::start(1000).await;
    server.revoke_api_key();
    let (json, _) = server.credentials();
    let err = outcome(spawn_runner(&json, &[])).await.unwrap_err();
    assert!(
        matches!(err, RunnerError::Fatal(FatalCause::ApiKeyRejected(_))),
        "{err}"
    );
    assert!(err.one_line().contains("API key"));
    assert_eq!(server.hellos(), 1, "phase 1 (Ack) came first");
}

#[tokio::test]
async fn an_unreachable_endpoint_ends_startup_with_a_clear_error() {
    let server = TestServer::start(1000).await;
    let (json, _) = server.credentials();
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let json = json.replace(&format!(":{}\"", server.port), &format!(":{closed}\""));
    let started = Instant::now();
    let err = outcome(spawn_runner(&json, &[])).await.unwrap_err();
    assert!(matches!(err, RunnerError::Unreachable(_)), "{err}");
    assert_eq!(err.exit_code(), 4);
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "transient errors were retried"
    );
}

#[tokio::test]
async fn transient_loss_reconnects() {
    let server = TestServer::start(1000).await;
    let (json, _) = server.credentials();
    let runner = spawn_runner(&json, &[]);
    expect_hello(&server).await;
    server.drop_session();
    expect_hello(&server).await;
    assert_eq!(server.hellos(), 2);
    assert_eq!(server.whoami_calls(), 1, "whoami only at startup");
    stop(runner).await.unwrap();
}

#[tokio::test]
async fn tunnels_through_an_http_connect_proxy() {
    let server = TestServer::start(1000).await;
    let issued = server.issue(Validity::days_from(now_ms(), 1).unwrap());
    // A name that is not loopback, so the proxy is used; the proxy routes it to the server.
    let json = server.credentials_json(&issued, "tunnel.test", server.ca.certificate_pem());
    let target = format!("127.0.0.1:{}", server.port).parse().unwrap();
    let proxy = connect_proxy(target, false).await;
    let env = [("HTTPS_PROXY", format!("http://127.0.0.1:{}", proxy.port))];
    let runner = spawn_runner(&json, &env);
    expect_hello(&server).await;
    let seen = proxy.seen.lock().unwrap().clone();
    assert_eq!(
        seen,
        [format!("CONNECT tunnel.test:{} HTTP/1.1", server.port)]
    );
    stop(runner).await.unwrap();
}

#[tokio::test]
async fn no_proxy_and_loopback_bypass_the_proxy() {
    let server = TestServer::start(1000).await;
    let target = format!("127.0.0.1:{}", server.port).parse().unwrap();
    let proxy = connect_proxy(target, false).await;
    let (json, _) = server.credentials();
    let env = [("HTTPS_PROXY", format!("http://127.0.0.1:{}", proxy.port))];
    let runner = spawn_runner(&json, &env);
    expect_hello(&server).await;
    assert!(
        proxy.seen.lock().unwrap().is_empty(),
        "loopback is never proxied"
    );
    stop(runner).await.unwrap();
}

#[tokio::test]
async fn a_refusing_proxy_is_named_in_the_startup_error() {
    let server = TestServer::start(1000).await;
    let issued = server.issue(Validity::days_from(now_ms(), 1).unwrap());
    let json = server.credentials_json(&issued, "tunnel.test", server.ca.certificate_pem());
    let target = format!("127.0.0.1:{}", server.port).parse().unwrap();
    let proxy = connect_proxy(target, true).await;
    let env = [("https_proxy", format!("http://127.0.0.1:{}", proxy.port))];
    let err = outcome(spawn_runner(&json, &env)).await.unwrap_err();
    assert!(matches!(err, RunnerError::Unreachable(_)), "{err}");
    assert!(err.one_line().contains("proxy"), "{err}");
}

#[tokio::test]
async fn inline_results_never_echo_injected_secrets_in_errors() {
    let server = TestServer::start(1000).await;
    let (json, _) = server.credentials();
    let runner = spawn_runner(&json, &[]);
    expect_hello(&server).await;
    server.send(job(
        "j1",
        "sh",
        &["-c", "true"],
        &[("LD_PRELOAD", "s3cr3t-value")],
    ));
    let (_, result) = until_result(&server, "j1").await;
    assert_eq!(result.error_code(), Some(ErrorCode::InvalidRequest));
    assert!(!format!("{result:?}").contains("s3cr3t-value"));
    let _ = RunnerMessage::default();
    stop(runner).await.unwrap();
}
