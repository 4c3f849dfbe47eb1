#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test code"
)]
//! The AWS operations against moto in server mode, with IAM enforced (scripts/test.sh starts it
//! and exports `TETHER_TEST_MOTO_URL` and `TETHER_TEST_AWS_ADMIN=KEY_ID:SECRET`). Without those
//! variables each test prints SKIPPED, unless `TETHER_TEST_REQUIRE_SERVICES=1`: then it fails.
//!
//! The runner binary runs with a cleared environment plus `AWS_ENDPOINT_URL` pointing at moto
//! (or at a recording TCP forwarder in front of it), driven through the in-test tunnel server.
#![cfg(feature = "aws")]

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

use common::TestServer;
use tether_proto::ops::OperationKind;
use tether_proto::tunnel::{
    AwsAuth, AwsEc2CreateVpc, AwsEc2DescribeVpcs, AwsS3ListBuckets, AwsStsGetCallerIdentity,
    ControlMessage, CrossAccountTrust, ErrorCode, InlineCredentials, OperationRequest,
    OperationResult, RunnerIdentity, Tag, aws_auth::Mode, operation_output::Kind as OutputKind,
    operation_request::Operation, operation_result::Outcome, runner_message,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const CONFIG: &str = "[tunnel]\nstartup_timeout_secs = 5\nbackoff_initial_ms = 50\n";

struct Moto {
    url: String,
    key_id: String,
    secret: String,
}

/// moto's URL and admin key pair, or `None` (after printing SKIPPED) when not configured.
fn moto(test: &str) -> Option<Moto> {
    let url = std::env::var("TETHER_TEST_MOTO_URL").ok();
    let admin = std::env::var("TETHER_TEST_AWS_ADMIN").ok();
    match (url, admin.as_deref().and_then(|a| a.split_once(':'))) {
        (Some(url), Some((key_id, secret))) => Some(Moto {
            url,
            key_id: key_id.to_owned(),
            secret: secret.to_owned(),
        }),
        _ if std::env::var("TETHER_TEST_REQUIRE_SERVICES").as_deref() == Ok("1") => {
            panic!("{test}: TETHER_TEST_MOTO_URL / TETHER_TEST_AWS_ADMIN not set")
        }
        _ => {
            eprintln!("SKIPPED {test}: TETHER_TEST_MOTO_URL / TETHER_TEST_AWS_ADMIN not set");
            None
        }
    }
}

/// The runner binary with a cleared environment: moto as endpoint, `own` as its own identity.
fn spawn_runner(dir: &Path, json: &str, endpoint: &str, own: Option<(&str, &str)>) -> Child {
    let creds = dir.join("creds.json");
    std::fs::write(&creds, json).unwrap();
    std::fs::set_permissions(&creds, std::fs::Permissions::from_mode(0o600)).unwrap();
    let config = dir.join("runner.toml");
    std::fs::write(&config, CONFIG).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tether-runner"));
    cmd.arg("--credentials-file")
        .arg(&creds)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", dir)
        .env("XDG_CONFIG_HOME", dir)
        .env("TETHER_RUNNER_CONFIG", &config)
        .env("TETHER_RUNNER_LOG", "info,tether_runner=debug")
        .env("AWS_ENDPOINT_URL", endpoint)
        .env("AWS_REGION", "us-east-1")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_CONFIG_FILE", dir.join("no-aws-config"))
        .env(
            "AWS_SHARED_CREDENTIALS_FILE",
            dir.join("no-aws-credentials"),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(if std::env::var_os("AWS_TEST_DEBUG").is_some() {
            Stdio::inherit()
        } else {
            Stdio::piped()
        });
    if let Some((key_id, secret)) = own {
        cmd.env("AWS_ACCESS_KEY_ID", key_id)
            .env("AWS_SECRET_ACCESS_KEY", secret);
    }
    cmd.spawn().unwrap()
}

/// Stops the runner and returns everything it logged.
fn logs(mut child: Child) -> String {
    child.kill().unwrap();
    let out = child.wait_with_output().unwrap();
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

async fn hello(server: &TestServer) -> Vec<String> {
    match server.next(false).await.kind {
        Some(runner_message::Kind::Hello(h)) => h.capabilities,
        other => panic!("expected Hello, got {other:?}"),
    }
}

async fn call(server: &TestServer, id: &str, auth: Mode, op: Operation) -> OperationResult {
    server.send(ControlMessage::request(OperationRequest {
        request_id: id.into(),
        timeout_ms: 30_000,
        aws_auth: Some(AwsAuth {
            region: "us-east-1".into(),
            mode: Some(auth),
        }),
        operation: Some(op),
    }));
    loop {
        if let Some(runner_message::Kind::Result(r)) = server.next(false).await.kind
            && r.request_id == id
        {
            return r;
        }
    }
}

fn output(result: OperationResult) -> OutputKind {
    match result.outcome {
        Some(Outcome::Output(o)) => o.kind.unwrap(),
        other => panic!("expected an output, got {other:?}"),
    }
}

fn runner_mode() -> Mode {
    Mode::Runner(RunnerIdentity {})
}

fn identity() -> Operation {
    Operation::AwsStsGetCallerIdentity(AwsStsGetCallerIdentity {})
}

#[tokio::test]
async fn runner_identity_runs_sts_s3_and_ec2_against_moto() {
    let Some(moto) = moto("runner_identity_runs_sts_s3_and_ec2_against_moto") else {
        return;
    };
    let server = TestServer::start(1000).await;
    let (json, _) = server.credentials();
    let dir = tempfile::tempdir().unwrap();
    let child = spawn_runner(
        dir.path(),
        &json,
        &moto.url,
        Some((moto.key_id.as_str(), moto.secret.as_str())),
    );
    let caps = hello(&server).await;
    for kind in [
        OperationKind::AwsStsGetCallerIdentity,
        OperationKind::AwsS3ListBuckets,
        OperationKind::AwsEc2DescribeVpcs,
        OperationKind::AwsEc2CreateVpc,
    ] {
        assert!(caps.contains(&kind.name().to_owned()), "{caps:?}");
    }

    let OutputKind::CallerIdentity(me) =
        output(call(&server, "a1", runner_mode(), identity()).await)
    else {
        panic!()
    };
    assert!(me.arn.ends_with(":user/tether-test-admin"), "{me:?}");
    assert_eq!(me.account, "123456789012");

    let buckets = call(
        &server,
        "a2",
        runner_mode(),
        Operation::AwsS3ListBuckets(AwsS3ListBuckets {}),
    )
    .await;
    assert!(matches!(output(buckets), OutputKind::Buckets(_)));

    let created = call(
        &server,
        "a3",
        runner_mode(),
        Operation::AwsEc2CreateVpc(AwsEc2CreateVpc {
            cidr_block: "10.42.0.0/16".into(),
            tags: vec![Tag {
                key: "Name".into(),
                value: "tether-test".into(),
            }],
        }),
    )
    .await;
    let OutputKind::CreatedVpc(vpc) = output(created) else {
        panic!()
    };
    assert!(vpc.vpc_id.starts_with("vpc-"), "{vpc:?}");
    assert_eq!(vpc.cidr_block, "10.42.0.0/16");

    let described = call(
        &server,
        "a4",
        runner_mode(),
        Operation::AwsEc2DescribeVpcs(AwsEc2DescribeVpcs {
            vpc_ids: vec![vpc.vpc_id.clone()],
        }),
    )
    .await;
    let OutputKind::Vpcs(list) = output(described) else {
        panic!()
    };
    assert_eq!(list.vpcs.len(), 1);
    assert_eq!(list.vpcs[0].vpc_id, vpc.vpc_id);
    assert!(!list.vpcs[0].is_default);
    assert_eq!(
        list.vpcs[0].tags,
        [Tag {
            key: "Name".into(),
            value: "tether-test".into(),
        }]
    );

    let missing = call(
        &server,
        "a5",
        runner_mode(),
        Operation::AwsEc2DescribeVpcs(AwsEc2DescribeVpcs {
            vpc_ids: vec!["vpc-0000000000000dead".into()],
        }),
    )
    .await;
    assert_eq!(
        missing.error_code(),
        Some(ErrorCode::NotFound),
        "{missing:?}"
    );
    logs(child);
}

#[tokio::test]
async fn inline_credentials_are_used_once_and_never_logged_or_returned() {
    let Some(moto) = moto("inline_credentials_are_used_once_and_never_logged_or_returned") else {
        return;
    };
    let server = TestServer::start(1000).await;
    let (json, _) = server.credentials();
    let dir = tempfile::tempdir().unwrap();
    // The runner itself has no AWS identity: only the request's credentials can work.
    let child = spawn_runner(dir.path(), &json, &moto.url, None);
    hello(&server).await;

    let inline = |secret: &str| {
        Mode::Inline(InlineCredentials {
            access_key_id: moto.key_id.clone(),
            secret_access_key: secret.to_owned(),
            session_token: String::new(),
        })
    };
    let ok = call(&server, "i1", inline(&moto.secret), identity()).await;
    let ok_text = format!("{ok:?}");
    let OutputKind::CallerIdentity(me) = output(ok) else {
        panic!()
    };
    assert!(me.arn.ends_with(":user/tether-test-admin"), "{me:?}");

    let wrong_secret = "wrong-secret-do-not-print-0123456789";
    let denied = call(&server, "i2", inline(wrong_secret), identity()).await;
    assert_eq!(
        denied.error_code(),
        Some(ErrorCode::PermissionDenied),
        "{denied:?}"
    );
    let denied_text = format!("{denied:?}");

    // The runner's own identity is empty: runner mode cannot borrow the earlier inline key.
    let own = call(&server, "i3", runner_mode(), identity()).await;
    assert!(own.error_code().is_some(), "{own:?}");

    let logged = logs(child);
    assert!(logged.contains("operation finished"), "{logged}");
    for secret in [moto.secret.as_str(), wrong_secret] {
        assert!(!logged.contains(secret), "secret in the runner's logs");
        assert!(!ok_text.contains(secret), "secret in a result");
        assert!(!denied_text.contains(secret), "secret in an error");
    }
}

/// A TCP forwarder in front of moto that records both directions: moto ignores ExternalId, so
/// the test checks the AssumeRole request on the wire instead.
struct Recorder {
    url: String,
    sent: Arc<Mutex<Vec<u8>>>,
    received: Arc<Mutex<Vec<u8>>>,
}

async fn recorder(target: &str) -> Recorder {
    let target = target.trim_start_matches("http://").to_owned();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let sent = Arc::new(Mutex::new(Vec::new()));
    let received = Arc::new(Mutex::new(Vec::new()));
    let (s, r) = (sent.clone(), received.clone());
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let Ok(upstream) = TcpStream::connect(&target).await else {
                return;
            };
            let (mut cr, mut cw) = client.into_split();
            let (mut ur, mut uw) = upstream.into_split();
            let (s, r) = (s.clone(), r.clone());
            tokio::spawn(async move {
                let mut buf = vec![0u8; 16 * 1024];
                while let Ok(n @ 1..) = cr.read(&mut buf).await {
                    s.lock().unwrap().extend_from_slice(&buf[..n]);
                    if uw.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
            });
            tokio::spawn(async move {
                let mut buf = vec![0u8; 16 * 1024];
                while let Ok(n @ 1..) = ur.read(&mut buf).await {
                    r.lock().unwrap().extend_from_slice(&buf[..n]);
                    if cw.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    Recorder {
        url: format!("http://127.0.0.1:{port}"),
        sent,
        received,
    }
}

fn between<'a>(text: &'a str, start: &str, end: &str) -> &'a str {
    let from = text.find(start).map(|i| i + start.len()).unwrap();
    let len = text[from..].find(end).unwrap();
    &text[from..from + len]
}

#[tokio::test]
async fn cross_account_trust_assumes_the_role_with_the_external_id() {
    let Some(moto) = moto("cross_account_trust_assumes_the_role_with_the_external_id") else {
        return;
    };
    let rec = recorder(&moto.url).await;
    let server = TestServer::start(1000).await;
    let (json, _) = server.credentials();
    let dir = tempfile::tempdir().unwrap();
    let child = spawn_runner(
        dir.path(),
        &json,
        &rec.url,
        Some((moto.key_id.as_str(), moto.secret.as_str())),
    );
    hello(&server).await;

    let trust = Mode::CrossAccountTrust(CrossAccountTrust {
        role_arn: "arn:aws:iam::210987654321:role/tether-trust".into(),
        external_id: "tether-ext-7f3a".into(),
        session_name: "tether-test".into(),
        duration_seconds: 900,
    });
    let result = call(&server, "x1", trust, identity()).await;
    let OutputKind::CallerIdentity(me) = output(result) else {
        panic!()
    };
    assert_eq!(
        me.arn, "arn:aws:sts::210987654321:assumed-role/tether-trust/tether-test",
        "the operation ran as the assumed role"
    );
    logs(child);

    let sent = String::from_utf8_lossy(&rec.sent.lock().unwrap()).into_owned();
    let received = String::from_utf8_lossy(&rec.received.lock().unwrap()).into_owned();
    // The whole request (line, headers, form body) whose body holds `body`.
    let auth_before = |body: &str| {
        let at = sent
            .find(body)
            .unwrap_or_else(|| panic!("no {body} in {sent}"));
        let start = sent[..at].rfind("POST ").unwrap();
        sent[start..at + body.len()].to_owned()
    };
    assert!(
        sent.contains("RoleArn=arn%3Aaws%3Aiam%3A%3A210987654321%3Arole%2Ftether-trust"),
        "{sent}"
    );
    assert!(sent.contains("ExternalId=tether-ext-7f3a"), "{sent}");
    assert!(sent.contains("DurationSeconds=900"), "{sent}");
    // AssumeRole was signed with the runner's own key...
    let assume = auth_before("Action=AssumeRole");
    assert!(
        assume.contains(&format!("Credential={}/", moto.key_id)),
        "{assume}"
    );
    // ...and GetCallerIdentity with the temporary key and token AssumeRole returned.
    let temp_key = between(&received, "<AccessKeyId>", "</AccessKeyId>");
    let token = between(&received, "<SessionToken>", "</SessionToken>");
    let identity_req = auth_before("Action=GetCallerIdentity");
    assert!(
        identity_req.contains(&format!("Credential={temp_key}/")),
        "{identity_req}"
    );
    assert!(identity_req.contains(token), "the session token was sent");
}
