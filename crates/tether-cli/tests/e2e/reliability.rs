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
