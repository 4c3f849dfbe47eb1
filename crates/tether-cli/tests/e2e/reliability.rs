//! Crash safety and fail-closed startup.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use serde_json::json;

use crate::server;

#[tokio::test]
async fn sigkill_during_concurrent_writes_loses_no_acknowledged_write() {
    let mut s = server().await;
    let url = s.url.clone();
    let key = s.root_key.clone();
    let http = reqwest::Client::new();
    let acked = Arc::new(std::sync::Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for worker in 0..50 {
        let (http, url, key, acked, stop) = (
            http.clone(),
            url.clone(),
            key.clone(),
            acked.clone(),
            stop.clone(),
        );
        tasks.push(tokio::spawn(async move {
            for i in 0..20 {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let name = format!("w{worker}-{i}");
                let body = json!({"metadata": {"name": name}, "spec": {"description": "load"}});
                let res = http
                    .post(format!("{url}/v1/orgs/default/teams"))
                    .bearer_auth(&key)
                    .json(&body)
                    .send()
                    .await;
                if let Ok(r) = res
                    && r.status().as_u16() == 201
                {
                    acked.lock().unwrap().push(name);
                }
            }
        }));
    }
    // Kill the server while the 1,000 writes are in flight.
    loop {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        if acked.lock().unwrap().len() >= 150 {
            break;
        }
    }
    s.kill();
    stop.store(true, Ordering::SeqCst);
    for t in tasks {
        let _ = t.await;
    }
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() >= 150 && acked.len() < 1000,
        "{} writes acknowledged",
        acked.len()
    );
    s.restart().await;
    let teams = s.admin("GET", "/v1/orgs/default/teams", None).await;
    let names: std::collections::HashSet<String> = teams
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["metadata"]["name"].as_str().unwrap().to_owned())
        .collect();
    for name in &acked {
        assert!(names.contains(name), "acknowledged write {name} was lost");
    }
    let v = s.admin("GET", "/v1/audit/default/verify", None).await;
    assert_eq!(v.body["ok"], true, "{}", v.text);
}

#[tokio::test]
async fn a_restart_keeps_keys_and_sessions_valid() {
    let mut s = server().await;
    let key = s.user_key("leo").await;
    s.restart().await;
    assert_eq!(
        s.req("GET", "/v1/auth/whoami", Some(&key), None)
            .await
            .status,
        200
    );
    assert_eq!(
        s.admin("GET", "/v1/orgs/default/envs/dev", None)
            .await
            .status,
        200
    );
}

#[test]
fn without_dev_the_server_fails_closed_naming_what_is_missing() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tether"))
        .args(["server", "--listen", "127.0.0.1:0"])
        .env_remove("TETHER_DATABASE_URL")
        .env_remove("TETHER_ROOT_KEY")
        .env_remove("TETHER_TLS_CERT_FILE")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    for needle in ["database URL", "TLS", "root key"] {
        assert!(err.contains(needle), "{err}");
    }
}

#[test]
fn dev_mode_refuses_plain_http_off_loopback() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tether"))
        .args(["server", "--dev", "--listen", "0.0.0.0:0", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("loopback"));
}

/// Production mode: TLS 1.3 from a certificate and key, a root key from the environment, an
/// explicit database URL. TLS 1.2 clients are refused.
#[tokio::test]
async fn production_mode_serves_tls13_only() {
    use std::io::{BufRead, BufReader, Write};
    use std::os::unix::fs::OpenOptionsExt;
    let dir = tempfile::tempdir().unwrap();
    let cert =
        rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    let cert_path = dir.path().join("tls.crt");
    let key_path = dir.path().join("tls.key");
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    let mut key = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&key_path)
        .unwrap();
    key.write_all(cert.signing_key.serialize_pem().as_bytes())
        .unwrap();
    let root_key = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
    let mut child = crate::Stopped::new(
        std::process::Command::new(env!("CARGO_BIN_EXE_tether"))
            .args(["server", "--listen", "127.0.0.1:0"])
            .env(
                "TETHER_DATABASE_URL",
                format!("sqlite://{}/prod.db", dir.path().display()),
            )
            .env("TETHER_ROOT_KEY", root_key)
            .env("TETHER_TLS_CERT_FILE", &cert_path)
            .env("TETHER_TLS_KEY_FILE", &key_path)
            .env("TETHER_TUNNEL_LISTEN", "127.0.0.1:0")
            .env("TETHER_HEADER_TIMEOUT_MS", "400")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut lines = BufReader::new(child.get().stdout.take().unwrap()).lines();
    let mut token = String::new();
    let mut url = String::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        if let Some(t) = line.trim().strip_prefix("export TETHER_TOKEN=") {
            token = t.to_owned();
        }
        if let Some(rest) = line.split("Tether server listening on ").nth(1) {
            url = rest.split_whitespace().next().unwrap().to_owned();
            break;
        }
    }
    assert!(url.starts_with("https://127.0.0.1:"), "{url}");
    let ca = reqwest::Certificate::from_pem(cert.cert.pem().as_bytes()).unwrap();
    let tls13 = reqwest::Client::builder()
        .tls_certs_only([ca.clone()])
        .build()
        .unwrap();
    let r = tls13
        .get(format!("{url}/v1/auth/whoami"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let tls12 = reqwest::Client::builder()
        .tls_certs_only([ca])
        .tls_version_max(reqwest::tls::Version::TLS_1_2)
        .build()
        .unwrap();
    assert!(
        tls12.get(format!("{url}/healthz")).send().await.is_err(),
        "a TLS 1.2 client was served"
    );
    // A client that connects and never starts its handshake is cut off after the header
    // timeout, while the server goes on serving others.
    let silent = tokio::net::TcpStream::connect(url.trim_start_matches("https://"))
        .await
        .unwrap();
    let r = tls13.get(format!("{url}/healthz")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(closed_within(silent, 10).await, b"");
}

/// Concurrent version writes (they are group-committed): every acknowledged write has its own
/// version with its own data, the versions of each secret are 1..=n with no gap, the audit
/// chain verifies, and of concurrent check-and-set writers on one version exactly one wins.
#[tokio::test]
async fn concurrent_secret_writes_each_get_their_own_version() {
    let s = server().await;
    let http = reqwest::Client::new();
    let mut tasks = Vec::new();
    for worker in 0..24 {
        let (http, url, key) = (http.clone(), s.url.clone(), s.root_key.clone());
        tasks.push(tokio::spawn(async move {
            let mut written = Vec::new();
            for i in 0..10 {
                let secret = format!("batch{}", worker % 3);
                let value = format!("w{worker}-i{i}");
                let r = http
                    .post(format!("{url}/v1/orgs/default/secrets/{secret}/versions"))
                    .bearer_auth(&key)
                    .json(&json!({"data": {"V": value}}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status().as_u16(), 201);
                let body: serde_json::Value = r.json().await.unwrap();
                written.push((secret, body["version"].as_i64().unwrap(), value));
            }
            written
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    for secret in ["batch0", "batch1", "batch2"] {
        let mut versions: Vec<i64> = all
            .iter()
            .filter(|(s, _, _)| s == secret)
            .map(|(_, v, _)| *v)
            .collect();
        versions.sort_unstable();
        assert_eq!(versions, (1..=80).collect::<Vec<_>>(), "{secret}");
    }
    // max_versions (20 by default) keeps the data of the newest 20.
    for (secret, version, value) in all.iter().filter(|(_, v, _)| *v > 60) {
        let r = s
            .admin(
                "GET",
                &format!("/v1/orgs/default/secrets/{secret}/data?version={version}"),
                None,
            )
            .await;
        assert_eq!(r.body["data"]["V"], value.as_str(), "{secret} v{version}");
    }
    // Twelve check-and-set writers expect version 80: one wins, the rest get a conflict.
    let mut cas = Vec::new();
    for i in 0..12 {
        let (http, url, key) = (http.clone(), s.url.clone(), s.root_key.clone());
        cas.push(tokio::spawn(async move {
            http.post(format!("{url}/v1/orgs/default/secrets/batch0/versions"))
                .bearer_auth(&key)
                .json(&json!({"data": {"V": format!("cas{i}")}, "if_version": 80}))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }));
    }
    let mut codes = Vec::new();
    for t in cas {
        codes.push(t.await.unwrap());
    }
    assert_eq!(codes.iter().filter(|c| **c == 201).count(), 1, "{codes:?}");
    assert_eq!(codes.iter().filter(|c| **c == 409).count(), 11, "{codes:?}");
    let versions = s
        .admin("GET", "/v1/orgs/default/secrets/batch0/versions", None)
        .await;
    assert_eq!(versions.body.as_array().unwrap().len(), 81);
    let v = s.admin("GET", "/v1/audit/default/verify", None).await;
    assert_eq!(v.body["ok"], true, "{}", v.text);
    let audit = s
        .admin(
            "GET",
            "/v1/audit/default/versions?kind=secrets&name=batch1",
            None,
        )
        .await;
    assert_eq!(
        audit.body.as_array().map(Vec::len),
        Some(80),
        "one audit record per version: {}",
        audit.text
    );
}

/// The JSON log is written off the request path (a queue and a writer thread): a request's line
/// still reaches the log promptly, with its request id.
#[tokio::test]
async fn each_request_is_logged_with_its_request_id() {
    let s = server().await;
    let r = reqwest::Client::new()
        .get(format!("{}/v1/orgs/default/envs/dev", s.url))
        .bearer_auth(&s.root_key)
        .send()
        .await
        .unwrap();
    let id = r.headers()["x-request-id"].to_str().unwrap().to_owned();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let log = s.log();
        if let Some(line) = log.lines().find(|l| l.contains(&id)) {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            assert_eq!(v["fields"]["status"], 200, "{line}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no log line for {id}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Reads `conn` until the server closes it and returns what it sent; fails if the server keeps
/// the connection open for `secs` seconds.
async fn closed_within(mut conn: tokio::net::TcpStream, secs: u64) -> Vec<u8> {
    use tokio::io::AsyncReadExt;
    let mut got = Vec::new();
    let read = conn.read_to_end(&mut got);
    match tokio::time::timeout(std::time::Duration::from_secs(secs), read).await {
        Ok(Ok(_)) => got,
        // A reset also ends the connection.
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionReset => got,
        Ok(Err(e)) => panic!("reading the connection: {e}"),
        Err(_) => panic!("the server held the connection for {secs} s"),
    }
}

/// Slowloris: a client that sends a request's headers and never finishes them, one that stops
/// sending its body, and one that keeps an idle connection after its request, each hold their
/// connection only for the header timeout (400 ms here, 30 s by default); other clients are
/// served meanwhile.
#[tokio::test]
async fn slow_and_idle_clients_are_cut_off_after_the_header_timeout() {
    use tokio::io::AsyncWriteExt;
    let bin = std::path::Path::new(env!("CARGO_BIN_EXE_tether"));
    let s = tether_testkit::TestServer::start_with_env(bin, &[("TETHER_HEADER_TIMEOUT_MS", "400")])
        .await;
    let addr = s.url.trim_start_matches("http://").to_owned();
    let mut partial = tokio::net::TcpStream::connect(&addr).await.unwrap();
    partial
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: tether\r\n")
        .await
        .unwrap();
    let mut idle = tokio::net::TcpStream::connect(&addr).await.unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: tether\r\n\r\n")
        .await
        .unwrap();
    // A body that stops halfway: the write fails after the timeout, and writes nothing.
    let mut stalled = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let head = format!(
        "POST /v1/orgs/default/teams HTTP/1.1\r\nHost: tether\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: 200\r\n\r\n{{\"metadata\": ",
        s.root_key
    );
    stalled.write_all(head.as_bytes()).await.unwrap();
    assert_eq!(s.req("GET", "/healthz", None, None).await.status, 200);
    let answer = String::from_utf8(closed_within(stalled, 10).await).unwrap();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("request_timeout"), "{answer}");
    let answered = String::from_utf8(closed_within(idle, 10).await).unwrap();
    assert!(answered.starts_with("HTTP/1.1 200"), "{answered}");
    let got = closed_within(partial, 10).await;
    assert!(
        !got.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&got)
    );
    assert_eq!(s.req("GET", "/healthz", None, None).await.status, 200);
}

#[test]
fn a_header_timeout_out_of_range_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tether"))
        .args(["server", "--dev", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .env("TETHER_HEADER_TIMEOUT_MS", "5")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("header timeout"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
