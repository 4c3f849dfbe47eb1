//! Customer-managed KEKs on AWS KMS.
//!
//! * Against moto in server mode with IAM enforced (`INITIAL_NO_AUTH_ACTION_COUNT`, started by
//!   `scripts/test.sh`): switching an org to a KMS key rewraps every version; detaching the
//!   IAM policy that grants `kms:Decrypt` makes every read fail with `kek_unavailable` (503)
//!   while nothing is lost (writes still work: they only need `kms:Encrypt`); attaching it
//!   again restores every read.
//! * moto ignores key state (a disabled key, or one pending deletion, still decrypts there), so
//!   those two states, a KMS that hangs, and the DEK cache's zero KMS calls are tested against
//!   a small in-test KMS fake: an axum server speaking the KMS JSON protocol that answers
//!   `DisabledException` and `KMSInvalidStateException` as AWS documents them.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};
use tether_testkit::{TestServer, query_strings};

use crate::kek::{put, read};
use crate::ok;

/// A required external service: its URL from the environment, or a skip (a failure when
/// `TETHER_TEST_REQUIRE_SERVICES=1`, which `scripts/test.sh` sets).
pub fn service(var: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(v) if !v.is_empty() => Some(v),
        _ if std::env::var("TETHER_TEST_REQUIRE_SERVICES").is_ok_and(|v| v == "1") => {
            panic!("{var} is not set: run the tests with scripts/test.sh")
        }
        _ => {
            eprintln!("SKIPPED: {var} is not set (scripts/test.sh starts the service)");
            None
        }
    }
}

fn aws_helper(args: &[&str]) -> String {
    let python = tether_testkit::test_python().expect("TETHER_TEST_PYTHON");
    let out = std::process::Command::new(python)
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/e2e/aws_helper.py"
        ))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "aws_helper {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn tag() -> String {
    format!(
        "{}-{}",
        std::process::id(),
        std::time::UNIX_EPOCH.elapsed().unwrap().as_nanos()
    )
}

/// Moto: credentials of a user whose policies grant Encrypt and Decrypt on a fresh key.
pub struct MotoUser {
    pub url: String,
    pub tag: String,
    pub info: Value,
}

impl MotoUser {
    pub fn create() -> Option<Self> {
        let url = service("TETHER_TEST_MOTO_URL")?;
        service("TETHER_TEST_AWS_ADMIN")?;
        let tag = tag();
        let info: Value = serde_json::from_str(&aws_helper(&["setup", &tag])).unwrap();
        Some(Self { url, tag, info })
    }

    fn s(&self, k: &str) -> String {
        self.info[k].as_str().unwrap().to_owned()
    }

    /// The environment of a Tether server that acts as this user.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("AWS_ENDPOINT_URL".into(), self.url.clone()),
            ("AWS_ACCESS_KEY_ID".into(), self.s("access_key_id")),
            ("AWS_SECRET_ACCESS_KEY".into(), self.s("secret_access_key")),
            ("AWS_REGION".into(), "us-east-1".into()),
            ("AWS_EC2_METADATA_DISABLED".into(), "true".into()),
            ("AWS_CONFIG_FILE".into(), "/nonexistent".into()),
            ("AWS_SHARED_CREDENTIALS_FILE".into(), "/nonexistent".into()),
        ]
    }
}

async fn start(env: &[(String, String)]) -> TestServer {
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    TestServer::start_with_env(std::path::Path::new(env!("CARGO_BIN_EXE_tether")), &env).await
}

fn report(out: &str) -> Value {
    serde_json::from_str(out).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cmek_on_moto_revoking_decrypt_fails_reads_and_restoring_brings_them_back() {
    let Some(user) = MotoUser::create() else {
        return;
    };
    let mut env = user.env();
    // Revocation takes effect once cached DEKs expire.
    env.push(("TETHER_DEK_CACHE_TTL_MS".into(), "300".into()));
    let s = start(&env).await;
    let root = s.root_key.clone();
    s.remember(&user.s("secret_access_key"));
    put(&s, "default", "db", "cmek-moto-v1").await;
    put(&s, "default", "db", "cmek-moto-v2").await;
    put(&s, "default", "api", "cmek-moto-api").await;

    let arn = user.s("key_arn");
    let out = ok(&s.cli(
        Some(&root),
        &[
            "kek",
            "set",
            "--provider",
            "aws-kms",
            "--key-id",
            &arn,
            "-o",
            "json",
        ],
    ));
    let r = report(&out);
    assert_eq!(
        (r["provider"].as_str(), r["rewrapped"].as_i64()),
        (Some("aws-kms"), Some(3))
    );
    assert_eq!(r["key_id"], arn.as_str());
    // Every stored blob now names the KMS key in its KEK reference.
    let blobs = query_strings(
        &s.database_url,
        "SELECT CAST(kek_version AS TEXT) FROM secret_versions WHERE blob IS NOT NULL",
    )
    .await;
    assert_eq!(blobs, vec!["2", "2", "2"]);
    put(&s, "default", "db", "cmek-moto-v3").await;
    for (v, want) in [
        (1, "cmek-moto-v1"),
        (2, "cmek-moto-v2"),
        (3, "cmek-moto-v3"),
    ] {
        assert_eq!(read(&s, "default", "db", v).await.unwrap(), want);
    }

    // Revoke: detach the policy that grants kms:Decrypt.
    aws_helper(&["detach", &user.tag, &user.s("decrypt_policy")]);
    tokio::time::sleep(Duration::from_millis(400)).await;
    for (name, v) in [("db", 1), ("db", 2), ("db", 3), ("api", 1)] {
        let r = s
            .admin(
                "GET",
                &format!("/v1/orgs/default/secrets/{name}/data?version={v}"),
                None,
            )
            .await;
        r.assert_error(503, "kek_unavailable");
        assert!(r.text.contains("Decrypt"), "{}", r.text);
    }
    // The control plane only needs kms:Encrypt to write: a write while revoked succeeds.
    put(&s, "default", "db", "cmek-moto-v4-written-while-revoked").await;
    tokio::time::sleep(Duration::from_millis(400)).await; // the writer's cached DEK expires
    assert_eq!(
        read(&s, "default", "db", 4).await.unwrap_err(),
        "503 kek_unavailable"
    );
    // A move needs to open the versions: refused while revoked, and nothing moves.
    let r = s
        .admin(
            "POST",
            "/v1/orgs/default/secrets/db/move",
            Some(&json!({"env": "dev"})),
        )
        .await;
    r.assert_error(503, "kek_unavailable");

    // Restore: every version reads again, nothing was lost.
    aws_helper(&["attach", &user.tag, &user.s("decrypt_policy")]);
    for (v, want) in [
        (1, "cmek-moto-v1"),
        (2, "cmek-moto-v2"),
        (3, "cmek-moto-v3"),
        (4, "cmek-moto-v4-written-while-revoked"),
    ] {
        assert_eq!(read(&s, "default", "db", v).await.unwrap(), want);
    }
    assert_eq!(
        read(&s, "default", "api", 1).await.unwrap(),
        "cmek-moto-api"
    );

    // Rotation keeps the same customer key and rewraps again; back to local works too.
    let r = report(&ok(&s.cli(Some(&root), &["kek", "rotate", "-o", "json"])));
    assert_eq!(
        (r["provider"].as_str(), r["rewrapped"].as_i64()),
        (Some("aws-kms"), Some(5))
    );
    let r = report(&ok(&s.cli(
        Some(&root),
        &["kek", "set", "--provider", "local", "-o", "json"],
    )));
    assert_eq!(
        (r["provider"].as_str(), r["rewrapped"].as_i64()),
        (Some("local"), Some(5))
    );
    aws_helper(&["detach", &user.tag, &user.s("decrypt_policy")]);
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(read(&s, "default", "db", 1).await.unwrap(), "cmek-moto-v1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cmek_set_refuses_a_key_it_cannot_use() {
    let Some(user) = MotoUser::create() else {
        return;
    };
    let s = start(&user.env()).await;
    s.remember(&user.s("secret_access_key"));
    put(&s, "default", "db", "cmek-refuse-v1").await;
    aws_helper(&["detach", &user.tag, &user.s("decrypt_policy")]);
    let r = s
        .admin(
            "PUT",
            "/v1/orgs/default/kek",
            Some(&json!({"provider": "aws-kms", "key_id": user.s("key_arn")})),
        )
        .await;
    r.assert_error(503, "kek_unavailable");
    // Nothing changed: the org still uses its local KEK and reads work.
    assert_eq!(
        read(&s, "default", "db", 1).await.unwrap(),
        "cmek-refuse-v1"
    );
    let list = s.admin("GET", "/v1/orgs/default/kek", None).await;
    assert_eq!(list.body.as_array().unwrap().len(), 1, "{}", list.text);
    // With access granted, the same request succeeds and takes the next version number.
    aws_helper(&["attach", &user.tag, &user.s("decrypt_policy")]);
    let r = s
        .admin(
            "PUT",
            "/v1/orgs/default/kek",
            Some(&json!({"provider": "aws-kms", "key_id": user.s("key_arn")})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        (r.body["kek_version"].as_i64(), r.body["rewrapped"].as_i64()),
        (Some(2), Some(1))
    );
    assert_eq!(
        read(&s, "default", "db", 1).await.unwrap(),
        "cmek-refuse-v1"
    );
}

// ---- the in-test KMS fake ------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum KeyState {
    Enabled,
    Disabled,
    PendingDeletion,
    Hang,
}

const FAKE_KEY: &str =
    "arn:aws:kms:us-east-1:111122223333:key/0000fake-0000-0000-0000-000000000001";

struct FakeKms {
    state: Mutex<KeyState>,
    encrypts: AtomicU64,
    decrypts: AtomicU64,
}

fn kms_error(kind: &str, message: &str) -> Response {
    (
        http::StatusCode::BAD_REQUEST,
        [("content-type", "application/x-amz-json-1.1")],
        json!({"__type": kind, "message": message}).to_string(),
    )
        .into_response()
}

fn kms_ok(body: Value) -> Response {
    (
        [("content-type", "application/x-amz-json-1.1")],
        body.to_string(),
    )
        .into_response()
}

async fn fake_kms(
    State(f): State<Arc<FakeKms>>,
    headers: http::HeaderMap,
    body: Bytes,
) -> Response {
    let target = headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let req: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let org = req["EncryptionContext"]["tether:org"]
        .as_str()
        .unwrap_or("")
        .to_owned();
    let state = *f.state.lock().unwrap();
    match state {
        KeyState::Hang => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            return kms_error("KMSInternalException", "unreachable");
        }
        // As AWS documents: a disabled key answers DisabledException; a key pending deletion
        // answers KMSInvalidStateException.
        KeyState::Disabled => {
            return kms_error("DisabledException", &format!("{FAKE_KEY} is disabled."));
        }
        KeyState::PendingDeletion => {
            return kms_error(
                "KMSInvalidStateException",
                &format!("{FAKE_KEY} is pending deletion."),
            );
        }
        KeyState::Enabled => {}
    }
    match target.as_str() {
        "TrentService.Encrypt" => {
            f.encrypts.fetch_add(1, Ordering::SeqCst);
            let pt = STANDARD
                .decode(req["Plaintext"].as_str().unwrap_or(""))
                .unwrap();
            let hex: String = pt.iter().map(|b| format!("{b:02x}")).collect();
            let ct = format!("fake-kms:{org}:{hex}");
            kms_ok(json!({
                "CiphertextBlob": STANDARD.encode(ct),
                "KeyId": FAKE_KEY,
                "EncryptionAlgorithm": "SYMMETRIC_DEFAULT",
            }))
        }
        "TrentService.Decrypt" => {
            f.decrypts.fetch_add(1, Ordering::SeqCst);
            let ct = STANDARD
                .decode(req["CiphertextBlob"].as_str().unwrap_or(""))
                .unwrap_or_default();
            let ct = String::from_utf8(ct).unwrap_or_default();
            let Some(hex) = ct.strip_prefix(&format!("fake-kms:{org}:")) else {
                return kms_error("InvalidCiphertextException", "");
            };
            let pt: Vec<u8> = (0..hex.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
                .collect();
            kms_ok(json!({
                "Plaintext": STANDARD.encode(pt),
                "KeyId": FAKE_KEY,
                "EncryptionAlgorithm": "SYMMETRIC_DEFAULT",
            }))
        }
        other => kms_error("UnsupportedOperationException", other),
    }
}

async fn start_fake() -> (String, Arc<FakeKms>) {
    let f = Arc::new(FakeKms {
        state: Mutex::new(KeyState::Enabled),
        encrypts: AtomicU64::new(0),
        decrypts: AtomicU64::new(0),
    });
    let app = axum::Router::new()
        .fallback(axum::routing::post(fake_kms))
        .with_state(f.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    (url, f)
}

/// A server whose AWS KMS is the in-test fake (1 s KMS timeout), and the fake.
async fn start_on_fake() -> (TestServer, Arc<FakeKms>) {
    let (url, fake) = start_fake().await;
    let env = vec![
        ("AWS_ENDPOINT_URL".to_owned(), url),
        ("AWS_ACCESS_KEY_ID".into(), "AKIAFAKEFAKEFAKEFAKE".into()),
        ("AWS_SECRET_ACCESS_KEY".into(), "fake".into()),
        ("AWS_REGION".into(), "us-east-1".into()),
        ("AWS_EC2_METADATA_DISABLED".into(), "true".into()),
        ("TETHER_KMS_TIMEOUT_MS".into(), "1000".into()),
    ];
    (start(&env).await, fake)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kms_fake_disabled_pending_deletion_and_hanging_key_fail_reads_cleanly() {
    let (mut s, fake) = start_on_fake().await;
    let root = s.root_key.clone();
    put(&s, "default", "db", "fake-kms-v1").await;
    ok(&s.cli(
        Some(&root),
        &["kek", "set", "--provider", "aws-kms", "--key-id", FAKE_KEY],
    ));
    put(&s, "default", "db", "fake-kms-v2").await;

    // The DEK cache: 1,000 reads of a cached version make no KMS call at all.
    assert_eq!(read(&s, "default", "db", 2).await.unwrap(), "fake-kms-v2");
    let before = fake.decrypts.load(Ordering::SeqCst);
    for _ in 0..1000 {
        assert_eq!(
            s.admin("GET", "/v1/orgs/default/secrets/db/data", None)
                .await
                .status,
            200
        );
    }
    assert_eq!(
        fake.decrypts.load(Ordering::SeqCst) - before,
        0,
        "KMS calls during 1,000 cached reads"
    );
    let metrics = s.req("GET", "/metrics", None, None).await.text;
    assert!(metrics.contains("tether_kms_calls_total"), "{metrics}");

    for (state, expect) in [
        (KeyState::Disabled, "DisabledException"),
        (KeyState::PendingDeletion, "KMSInvalidStateException"),
        (KeyState::Hang, "did not answer"),
    ] {
        *fake.state.lock().unwrap() = state;
        s.restart().await; // an empty DEK cache
        let started = Instant::now();
        for v in [1, 2] {
            let r = s
                .admin(
                    "GET",
                    &format!("/v1/orgs/default/secrets/db/data?version={v}"),
                    None,
                )
                .await;
            assert_eq!(
                (r.status, r.code()),
                (503, "kek_unavailable"),
                "{state:?}: {}",
                r.text
            );
            assert!(r.text.contains(expect), "{state:?}: {}", r.text);
        }
        assert!(
            started.elapsed() < Duration::from_secs(8),
            "{state:?}: took {:?}",
            started.elapsed()
        );
        // Writes need Encrypt, which fails the same way.
        let w = s
            .admin(
                "POST",
                "/v1/orgs/default/secrets/db/versions",
                Some(&json!({"data": {"V": "never-stored"}})),
            )
            .await;
        w.assert_error(503, "kek_unavailable");
        *fake.state.lock().unwrap() = KeyState::Enabled;
        assert_eq!(read(&s, "default", "db", 1).await.unwrap(), "fake-kms-v1");
        assert_eq!(read(&s, "default", "db", 2).await.unwrap(), "fake-kms-v2");
    }
    let versions = s
        .admin("GET", "/v1/orgs/default/secrets/db/versions", None)
        .await;
    assert_eq!(
        versions.body.as_array().unwrap().len(),
        2,
        "no failed write left a version"
    );
    assert!(fake.encrypts.load(Ordering::SeqCst) >= 3);
}

/// The kill switch: after the customer disables its key, cached DEKs would keep serving reads
/// until their TTL; `kek flush-cache` stops them at once. The in-test KMS fake is used because
/// moto ignores key state (see the module comment).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flushing_the_key_cache_makes_a_disabled_customer_key_stop_reads_at_once() {
    let (s, fake) = start_on_fake().await;
    let root = s.root_key.clone();
    ok(&s.cli(
        Some(&root),
        &["kek", "set", "--provider", "aws-kms", "--key-id", FAKE_KEY],
    ));
    put(&s, "default", "db", "flush-me-v1").await;
    put(&s, "default", "wrapper", "w-${secret:db}").await;
    assert_eq!(read(&s, "default", "db", 1).await.unwrap(), "flush-me-v1");
    // On PostgreSQL, a second server sharing the database has the key cached too.
    let other = if crate::replicas::on_postgres() {
        let b = s.join().await;
        assert_eq!(read(&b, "default", "db", 1).await.unwrap(), "flush-me-v1");
        Some(b)
    } else {
        None
    };
    *fake.state.lock().unwrap() = KeyState::Disabled;
    // Still served from the cache...
    assert_eq!(read(&s, "default", "db", 1).await.unwrap(), "flush-me-v1");
    // ...until the organization's keys are flushed.
    ok(&s.cli(Some(&root), &["kek", "flush-cache"]));
    let r = s
        .admin("GET", "/v1/orgs/default/secrets/db/data", None)
        .await;
    r.assert_error(503, "kek_unavailable");
    assert!(r.text.contains("DisabledException"), "{}", r.text);
    // A search for references reports the secret it could not open instead of failing.
    let refs = s
        .admin("GET", "/v1/orgs/default/secrets/db/references", None)
        .await;
    assert_eq!(refs.status, 200, "{}", refs.text);
    assert_eq!(
        refs.body["unchecked"],
        json!(["wrapper (org)"]),
        "{}",
        refs.text
    );
    // The other server drops its copy through the changelog.
    if let Some(b) = &other {
        let started = Instant::now();
        loop {
            let r = b
                .admin("GET", "/v1/orgs/default/secrets/db/data", None)
                .await;
            if r.status == 503 {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(3),
                "the other server still serves the value: {}",
                r.status
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    // A caller who may not manage the organization cannot flush it.
    let key = s.user_key("mallory").await;
    let denied = s
        .req("POST", "/v1/orgs/default/kek/flush-cache", Some(&key), None)
        .await;
    assert!(matches!(denied.status, 403 | 404), "{}", denied.text);
    *fake.state.lock().unwrap() = KeyState::Enabled;
    assert_eq!(read(&s, "default", "db", 1).await.unwrap(), "flush-me-v1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aws_secrets_manager_backend_on_moto() {
    let Some(user) = MotoUser::create() else {
        return;
    };
    let s = start(&user.env()).await;
    s.remember(&user.s("secret_access_key"));
    let root = s.root_key.clone();
    let prefix = format!("tether-{}", user.tag);
    ok(&s.cli(
        Some(&root),
        &["backend", "set", "aws-secretsmanager", "--prefix", &prefix],
    ));
    put(&s, "default", "db", "asm-v1").await;
    put(&s, "default", "db", "asm-v2").await;
    assert_eq!(read(&s, "default", "db", 1).await.unwrap(), "asm-v1");
    assert_eq!(read(&s, "default", "db", 2).await.unwrap(), "asm-v2");
    let rows = query_strings(
        &s.database_url,
        "SELECT backend || '|' || backend_ref FROM secret_versions ORDER BY version",
    )
    .await;
    assert_eq!(rows.len(), 2);
    let name = rows[0]
        .strip_prefix("aws-secretsmanager|")
        .unwrap()
        .to_owned();
    assert!(name.starts_with(&prefix), "{name}");
    let stored = aws_helper(&["get-secret", &name]);
    let blob = STANDARD.decode(&stored).unwrap();
    assert_eq!(blob[0], 1, "envelope format v1");
    assert!(!String::from_utf8_lossy(&blob).contains("asm-v1"));

    // Switching the KEK to KMS rewraps the blobs stored in Secrets Manager.
    let out = ok(&s.cli(
        Some(&root),
        &[
            "kek",
            "set",
            "--provider",
            "aws-kms",
            "--key-id",
            &user.s("key_arn"),
            "-o",
            "json",
        ],
    ));
    assert_eq!(report(&out)["rewrapped"], 2);
    // Each rewrapped envelope is a new secret beside the old one, which then goes.
    let rows = query_strings(
        &s.database_url,
        "SELECT backend || '|' || backend_ref FROM secret_versions ORDER BY version",
    )
    .await;
    let new_name = rows[0]
        .strip_prefix("aws-secretsmanager|")
        .unwrap()
        .to_owned();
    assert!(new_name.starts_with(&format!("{name}-")), "{new_name}");
    let after = STANDARD
        .decode(aws_helper(&["get-secret", &new_name]))
        .unwrap();
    assert_ne!(after, blob, "the stored envelope now names the KMS key");
    assert_eq!(
        &after[after.len() - 40..],
        &blob[blob.len() - 40..],
        "data not re-encrypted"
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while aws_helper(&["get-secret", &name]) != "missing" {
        assert!(
            Instant::now() < deadline,
            "{name} is still in Secrets Manager"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut s = s;
    s.restart().await;
    assert_eq!(read(&s, "default", "db", 1).await.unwrap(), "asm-v1");

    ok(&s.cli(Some(&root), &["secret", "destroy", "db", "--version", "1"]));
    assert_eq!(aws_helper(&["get-secret", &new_name]), "missing");
    assert_eq!(read(&s, "default", "db", 2).await.unwrap(), "asm-v2");
}

/// Starts the server binary on `s`'s data with `env` and expects it to refuse to start;
/// returns what it printed on stderr.
async fn start_refused(s: &TestServer, env: &[(String, String)]) -> String {
    use std::io::Read;
    let mut child = std::process::Command::new(s.bin())
        .args(["server", "--dev", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(s.dir.path())
        .args(["--database-url", &s.database_url])
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .env("TETHER_LOG", "error")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the server started although it should have refused");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(!status.success(), "{err}");
    err
}

/// Auto-unseal on moto (IAM enforced): the server generates its root key and keeps it only
/// sealed by the customer's KMS key in the database. Every start unseals it through
/// `kms:Decrypt`; without that permission no server starts (and says why), and with it
/// restored everything reads again. Rotation generates and seals a new key in the server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_unseal_with_aws_kms_seals_the_root_key_in_the_database() {
    let Some(user) = MotoUser::create() else {
        return;
    };
    let mut env = user.env();
    env.push(("TETHER_ROOT_KEY_AWS_KMS_KEY_ID".into(), user.s("key_arn")));
    let mut s = start(&env).await;
    s.remember(&user.s("secret_access_key"));
    put(&s, "default", "db", "unseal-v1").await;
    assert!(
        !s.dir.path().join("root.key").exists(),
        "a root key file was written"
    );
    let sealed = query_strings(
        &s.database_url,
        "SELECT key FROM settings WHERE key = 'root_key_sealed'",
    )
    .await;
    assert_eq!(sealed.len(), 1);

    // A restart unseals the key through KMS.
    s.restart().await;
    assert_eq!(read(&s, "default", "db", 1).await.unwrap(), "unseal-v1");

    // Without kms:Decrypt no server starts, and the message names the key and the refusal.
    aws_helper(&["detach", &user.tag, &user.s("decrypt_policy")]);
    s.kill();
    let err = start_refused(&s, &env).await;
    assert!(err.contains("cannot unseal the root key"), "{err}");
    assert!(err.contains(&user.s("key_arn")), "{err}");
    assert!(err.contains("Decrypt"), "{err}");
    aws_helper(&["attach", &user.tag, &user.s("decrypt_policy")]);
    s.restart().await;
    assert_eq!(read(&s, "default", "db", 1).await.unwrap(), "unseal-v1");

    // A plain root key cannot open a sealed database, and two sources are refused.
    let mut plain = user.env();
    plain.push(("TETHER_ROOT_KEY".into(), "00".repeat(32)));
    let err = start_refused(&s, &plain).await;
    assert!(err.contains("sealed by aws-kms"), "{err}");
    plain.push(("TETHER_ROOT_KEY_AWS_KMS_KEY_ID".into(), user.s("key_arn")));
    let err = start_refused(&s, &plain).await;
    assert!(err.contains("set only one root key source"), "{err}");

    // Rotation: a key file is refused; without one the server makes and seals the new key.
    let r = s
        .admin(
            "POST",
            "/v1/operator/rotate-root-key",
            Some(&json!({"new_root_key_file": "/nonexistent"})),
        )
        .await;
    r.assert_error(400, "invalid_argument");
    let root = s.root_key.clone();
    let out = ok(&s.cli(Some(&root), &["operator", "rotate-root-key"]));
    assert!(out.contains("sealed by the KMS key"), "{out}");
    let ids: Vec<&str> = out
        .split_once("rotated: ")
        .and_then(|(_, rest)| rest.split_once(" ("))
        .map(|(ids, _)| ids.split(" -> ").collect())
        .unwrap_or_default();
    assert!(ids.len() == 2 && ids[0] != ids[1], "{out}");
    put(&s, "default", "db", "unseal-v2").await;
    s.restart().await;
    for (v, want) in [(1, "unseal-v1"), (2, "unseal-v2")] {
        assert_eq!(read(&s, "default", "db", v).await.unwrap(), want);
    }
    s.assert_no_secrets_in_log();
}
