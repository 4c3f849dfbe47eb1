//! `tether cloud aws ...` through a real server and a real runner process, against moto in
//! server mode with IAM enforced (scripts/test.sh starts it and exports `TETHER_TEST_MOTO_URL`
//! and `TETHER_TEST_AWS_ADMIN=KEY_ID:SECRET`; without them each test prints SKIPPED, unless
//! `TETHER_TEST_REQUIRE_SERVICES=1`). One test per auth mode: the runner's own identity,
//! inline keys sent with the request, and AssumeRole with an ExternalId.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};

use serde_json::Value;
use tether_testkit::TestServer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::runners::{Runner, credentials, register, wait_status};
use crate::server;

/// The runner advertises every operation this build has (no job allowlist: no job.run).
const CONFIG: &str = "[tunnel]\nbackoff_initial_ms = 100\n";

struct Moto {
    url: String,
    key_id: String,
    secret: String,
}

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

/// A connected runner whose AWS endpoint is `endpoint`, with its own identity `own` (if any).
async fn aws_runner(s: &TestServer, name: &str, endpoint: &str, own: Option<&Moto>) -> Runner {
    register(s, "default", name).await;
    let creds = credentials(s, "default", name, false).await;
    let none = s.dir.path().join("no-aws-file");
    let none = none.to_str().unwrap();
    let mut env = vec![
        ("AWS_ENDPOINT_URL", endpoint),
        ("AWS_REGION", "us-east-1"),
        ("AWS_EC2_METADATA_DISABLED", "true"),
        ("AWS_CONFIG_FILE", none),
        ("AWS_SHARED_CREDENTIALS_FILE", none),
    ];
    if let Some(m) = own {
        env.push(("AWS_ACCESS_KEY_ID", &m.key_id));
        env.push(("AWS_SECRET_ACCESS_KEY", &m.secret));
    }
    let runner = Runner::spawn(s, &creds, CONFIG, &env);
    wait_status(s, "default", name, "connected").await;
    runner
}

/// Runs the CLI with no AWS variables of its own except `env`, and optional stdin.
fn tether(s: &TestServer, args: &[&str], env: &[(&str, &str)], stdin: Option<&str>) -> Output {
    let mut cmd = Command::new(s.bin());
    cmd.args(args)
        .env("TETHER_ADDR", &s.url)
        .env("XDG_CONFIG_HOME", s.dir.path().join("cli-config"))
        .env("TETHER_TOKEN", &s.root_key)
        .env_remove("TETHER_ORG")
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env_remove("AWS_SESSION_TOKEN")
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let mut input = child.stdin.take().unwrap();
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).unwrap();
    }
    drop(input);
    child.wait_with_output().unwrap()
}

fn ok_json(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|_| panic!("not JSON: {}", String::from_utf8_lossy(&out.stdout)))
}

/// Asserts a failed command printed `code (status)` like every CLI error.
fn failed_with(out: &Output, code: &str) {
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.starts_with("error: "), "{err}");
    assert!(err.contains(code), "expected {code}: {err}");
}

#[tokio::test]
async fn cloud_aws_commands_with_the_runners_own_identity() {
    let Some(moto) = moto("cloud_aws_commands_with_the_runners_own_identity") else {
        return;
    };
    let s = server().await;
    let _runner = aws_runner(&s, "aws-own", &moto.url, Some(&moto)).await;
    let r = ["--runner", "aws-own"];

    let me = ok_json(&tether(
        &s,
        &[&["cloud", "aws", "sts", "whoami", "-o", "json"][..], &r[..]].concat(),
        &[],
        None,
    ));
    assert_eq!(me["account"], "123456789012");
    assert!(
        me["arn"]
            .as_str()
            .unwrap()
            .ends_with(":user/tether-test-admin"),
        "{me}"
    );
    let table = tether(
        &s,
        &[&["cloud", "aws", "sts", "whoami"][..], &r[..]].concat(),
        &[],
        None,
    );
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(
        table.contains("ACCOUNT") && table.contains("123456789012"),
        "{table}"
    );

    let buckets = ok_json(&tether(
        &s,
        &[&["cloud", "aws", "s3", "ls", "-o", "json"][..], &r[..]].concat(),
        &[],
        None,
    ));
    assert!(buckets.is_array(), "{buckets}");

    let created = ok_json(&tether(
        &s,
        &[
            &[
                "cloud",
                "aws",
                "ec2",
                "create-vpc",
                "--cidr",
                "10.77.0.0/16",
                "--tag",
                "Name=e2e",
                "-o",
                "json",
            ][..],
            &r[..],
        ]
        .concat(),
        &[],
        None,
    ));
    let vpc_id = created["vpc_id"].as_str().unwrap().to_owned();
    assert!(vpc_id.starts_with("vpc-"), "{created}");
    assert_eq!(created["tags"]["Name"], "e2e");
    let described = tether(
        &s,
        &[
            &[
                "cloud",
                "aws",
                "ec2",
                "describe-vpcs",
                "--vpc-id",
                &vpc_id,
                "-o",
                "yaml",
            ][..],
            &r[..],
        ]
        .concat(),
        &[],
        None,
    );
    let yaml = String::from_utf8_lossy(&described.stdout);
    assert!(described.status.success(), "{described:?}");
    assert!(
        yaml.contains(&vpc_id) && yaml.contains("10.77.0.0/16"),
        "{yaml}"
    );
    let all = tether(
        &s,
        &[&["cloud", "aws", "ec2", "describe-vpcs"][..], &r[..]].concat(),
        &[],
        None,
    );
    let all = String::from_utf8_lossy(&all.stdout);
    assert!(
        all.contains("VPC ID") && all.contains(&vpc_id) && all.contains("172.31.0.0/16"),
        "{all}"
    );

    // Structured errors print like every CLI error, with a non-zero exit.
    let missing = tether(
        &s,
        &[
            &[
                "cloud",
                "aws",
                "ec2",
                "describe-vpcs",
                "--vpc-id",
                "vpc-0000000000000dead",
            ][..],
            &r[..],
        ]
        .concat(),
        &[],
        None,
    );
    failed_with(&missing, "not_found (404)");
    register(&s, "default", "aws-offline").await;
    let offline = tether(
        &s,
        &["cloud", "aws", "sts", "whoami", "--runner", "aws-offline"],
        &[],
        None,
    );
    failed_with(&offline, "runner_unavailable (503)");
    let unknown = tether(
        &s,
        &["cloud", "aws", "sts", "whoami", "--runner", "nosuch"],
        &[],
        None,
    );
    failed_with(&unknown, "not_found (404)");
}

#[tokio::test]
async fn cloud_aws_inline_keys_are_used_and_never_logged_or_audited() {
    let Some(moto) = moto("cloud_aws_inline_keys_are_used_and_never_logged_or_audited") else {
        return;
    };
    let s = server().await;
    // The testkit fails the test (on drop) if either secret is in the server log or an audit row.
    s.remember(&moto.secret);
    let wrong = "wrong-inline-secret-0123456789abcdef";
    s.remember(wrong);
    // The runner has no AWS identity of its own: only the request's keys can work.
    let runner = aws_runner(&s, "aws-inline", &moto.url, None).await;
    let whoami = [
        "cloud",
        "aws",
        "sts",
        "whoami",
        "--runner",
        "aws-inline",
        "--auth",
        "inline",
        "-o",
        "json",
    ];

    // From the environment.
    let env = [
        ("AWS_ACCESS_KEY_ID", moto.key_id.as_str()),
        ("AWS_SECRET_ACCESS_KEY", moto.secret.as_str()),
    ];
    let me = ok_json(&tether(&s, &whoami, &env, None));
    assert!(
        me["arn"]
            .as_str()
            .unwrap()
            .ends_with(":user/tether-test-admin"),
        "{me}"
    );
    // From standard input.
    let doc = format!(
        r#"{{"access_key_id": "{}", "secret_access_key": "{}"}}"#,
        moto.key_id, moto.secret
    );
    let me = ok_json(&tether(
        &s,
        &[&whoami[..], &["--aws-credentials-file", "-"][..]].concat(),
        &[],
        Some(&doc),
    ));
    assert_eq!(me["account"], "123456789012");
    // From a private file, in `aws configure export-credentials` form; a wrong secret is refused.
    let file = s.dir.path().join("aws-keys.json");
    let bad = format!(
        r#"{{"Version": 1, "AccessKeyId": "{}", "SecretAccessKey": "{wrong}"}}"#,
        moto.key_id
    );
    std::fs::write(&file, bad).unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let path = file.to_str().unwrap();
    let loose = tether(
        &s,
        &[&whoami[..], &["--aws-credentials-file", path][..]].concat(),
        &[],
        None,
    );
    failed_with(&loose, "readable by other users");
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let denied = tether(
        &s,
        &[&whoami[..], &["--aws-credentials-file", path][..]].concat(),
        &[],
        None,
    );
    failed_with(&denied, "permission_denied (403)");
    // Without keys, inline mode refuses to start; keys are never accepted in argv.
    failed_with(&tether(&s, &whoami, &[], None), "AWS_ACCESS_KEY_ID");
    let argv = tether(
        &s,
        &[&whoami[..], &["--secret-access-key", "x"][..]].concat(),
        &[],
        None,
    );
    assert!(!argv.status.success());
    // The runner's own (empty) identity cannot borrow the earlier keys.
    let own = tether(
        &s,
        &["cloud", "aws", "sts", "whoami", "--runner", "aws-inline"],
        &[],
        None,
    );
    assert!(!own.status.success());

    // Neither secret reached the runner's log, the CLI's output, or (checked on drop) the
    // server's log and audit rows.
    let logged = runner.log();
    assert!(logged.contains("operation finished"), "{logged}");
    for secret in [moto.secret.as_str(), wrong] {
        assert!(!logged.contains(secret), "a secret in the runner's log");
        let out = String::from_utf8_lossy(&denied.stderr).into_owned();
        assert!(!out.contains(secret), "a secret in an error");
    }
    s.assert_no_secrets_in_log();
    s.assert_no_secrets_in_audit();
}

/// A stand-in for AWS's trust policy in front of moto (moto ignores ExternalId): a TCP
/// forwarder that reads each HTTP/1.1 request, records it, and answers an `AssumeRole` that
/// lacks `ExternalId=<expected>` itself with STS's `AccessDenied`; everything else goes to moto.
struct TrustPolicy {
    url: String,
    requests: Arc<Mutex<Vec<String>>>,
}

/// It runs on a thread of its own: the test's runtime is blocked while the CLI runs.
fn trust_policy(moto: &str, expected: &'static str) -> TrustPolicy {
    let target = moto.trim_start_matches("http://").to_owned();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let requests = Arc::new(Mutex::new(Vec::new()));
    let seen = requests.clone();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    std::thread::spawn(move || {
        rt.block_on(async move {
            let listener = TcpListener::from_std(listener).unwrap();
            while let Ok((client, _)) = listener.accept().await {
                let Ok(upstream) = TcpStream::connect(&target).await else {
                    return;
                };
                let (mut cr, cw) = client.into_split();
                let (mut ur, mut uw) = upstream.into_split();
                let cw = Arc::new(tokio::sync::Mutex::new(cw));
                let back = cw.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 16 * 1024];
                    while let Ok(n @ 1..) = ur.read(&mut buf).await {
                        if back.lock().await.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                });
                let seen = seen.clone();
                tokio::spawn(async move {
                    let mut pending = Vec::new();
                    let mut buf = vec![0u8; 16 * 1024];
                    while let Ok(n @ 1..) = cr.read(&mut buf).await {
                        pending.extend_from_slice(&buf[..n]);
                        while let Some(len) = request_len(&pending) {
                            let request: Vec<u8> = pending.drain(..len).collect();
                            let text = String::from_utf8_lossy(&request).into_owned();
                            seen.lock().unwrap().push(text.clone());
                            let refuse = text.contains("Action=AssumeRole")
                                && !text.contains(&format!("ExternalId={expected}"));
                            let sent = if refuse {
                                cw.lock().await.write_all(access_denied().as_bytes()).await
                            } else {
                                uw.write_all(&request).await
                            };
                            if sent.is_err() {
                                return;
                            }
                        }
                    }
                });
            }
        })
    });
    TrustPolicy {
        url: format!("http://127.0.0.1:{port}"),
        requests,
    }
}

/// The length of the first complete request in `buf` (headers + Content-Length body).
fn request_len(buf: &[u8]) -> Option<usize> {
    let head_end = buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let body = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok())
        .unwrap_or(0);
    (buf.len() >= head_end + body).then_some(head_end + body)
}

fn access_denied() -> String {
    let body = "<ErrorResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\"><Error>\
        <Type>Sender</Type><Code>AccessDenied</Code><Message>User is not authorized to perform: \
        sts:AssumeRole (the trust policy requires another ExternalId)</Message></Error>\
        <RequestId>trust-policy-stand-in</RequestId></ErrorResponse>";
    format!(
        "HTTP/1.1 403 Forbidden\r\nContent-Type: text/xml\r\nx-amzn-RequestId: trust-policy-stand-in\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

#[tokio::test]
async fn cloud_aws_assume_role_with_an_external_id() {
    let Some(moto) = moto("cloud_aws_assume_role_with_an_external_id") else {
        return;
    };
    let s = server().await;
    let trust = trust_policy(&moto.url, "tether-ext-7f3a");
    let runner = aws_runner(&s, "aws-trust", &trust.url, Some(&moto)).await;
    let base = [
        "cloud",
        "aws",
        "sts",
        "whoami",
        "--runner",
        "aws-trust",
        "--auth",
        "assume-role",
        "--role-arn",
        "arn:aws:iam::210987654321:role/tether-trust",
        "--session-name",
        "e2e",
        "-o",
        "json",
    ];

    let first = tether(
        &s,
        &[&base[..], &["--external-id", "tether-ext-7f3a"][..]].concat(),
        &[],
        None,
    );
    assert!(
        first.status.success(),
        "{first:?}\nrunner log:\n{}\nsent:\n{}",
        runner.log(),
        trust.requests.lock().unwrap().join("\n")
    );
    let me = ok_json(&first);
    assert_eq!(
        me["arn"], "arn:aws:sts::210987654321:assumed-role/tether-trust/e2e",
        "the operation ran as the assumed role"
    );
    let sent = trust.requests.lock().unwrap().join("\n");
    assert!(sent.contains("Action=AssumeRole"), "{sent}");
    assert!(
        sent.contains("RoleArn=arn%3Aaws%3Aiam%3A%3A210987654321%3Arole%2Ftether-trust"),
        "{sent}"
    );
    assert!(sent.contains("ExternalId=tether-ext-7f3a"), "{sent}");
    // AssumeRole was signed with the runner's own key.
    assert!(
        sent.contains(&format!("Credential={}/", moto.key_id)),
        "{sent}"
    );

    // A wrong external id (or none) is refused by the trust policy: permission_denied.
    let wrong = tether(
        &s,
        &[&base[..], &["--external-id", "guess"][..]].concat(),
        &[],
        None,
    );
    failed_with(&wrong, "permission_denied (403)");
    let none = tether(&s, &base, &[], None);
    failed_with(&none, "permission_denied (403)");
    // The role is required in this mode.
    let no_role = tether(
        &s,
        &[
            "cloud",
            "aws",
            "sts",
            "whoami",
            "--runner",
            "aws-trust",
            "--auth",
            "assume-role",
        ],
        &[],
        None,
    );
    failed_with(&no_role, "--role-arn");
}
