#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test code"
)]
//! The `tether-runner` binary: it never listens, and fatal causes give a non-zero exit code
//! with one line naming the cause.

mod common;

use std::collections::HashSet;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::TestServer;
use tether_proto::tunnel::runner_message;

const CONFIG: &str = "[job]\nallowed_commands = [\"sh\"]\n[tunnel]\nstartup_timeout_secs = 2\nbackoff_initial_ms = 50\n";

fn command(dir: &Path, json: &str) -> Command {
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
        .env("XDG_CONFIG_HOME", dir)
        .env("TETHER_RUNNER_CONFIG", &config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    cmd
}

/// Socket inodes of `pid` that are in LISTEN state (TCP) or bound (UDP).
fn listening_sockets(pid: u32) -> Vec<String> {
    let mut inodes = HashSet::new();
    for fd in std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
    {
        if let Ok(target) = std::fs::read_link(fd.path()) {
            let t = target.to_string_lossy().into_owned();
            if let Some(inode) = t.strip_prefix("socket:[").and_then(|r| r.strip_suffix(']')) {
                inodes.insert(inode.to_owned());
            }
        }
    }
    assert!(!inodes.is_empty(), "the runner has its tunnel socket open");
    let mut found = Vec::new();
    for table in ["tcp", "tcp6", "udp", "udp6"] {
        let text = std::fs::read_to_string(format!("/proc/{pid}/net/{table}")).unwrap_or_default();
        for line in text.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            let (state, inode) = (cols[3], cols[9]);
            let listening = table.starts_with("udp") || state == "0A";
            if listening && inodes.contains(inode) {
                found.push(format!("{table} {line}"));
            }
        }
    }
    found
}

#[tokio::test]
async fn the_runner_never_opens_a_listening_socket() {
    let server = TestServer::start(200).await;
    let (json, _) = server.credentials();
    let dir = tempfile::tempdir().unwrap();
    let mut child = command(dir.path(), &json).spawn().unwrap();
    loop {
        if matches!(
            server.next(true).await.kind,
            Some(runner_message::Kind::Heartbeat(_))
        ) {
            break;
        }
    }
    let found = listening_sockets(child.id());
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(found.is_empty(), "listening sockets: {found:?}");
}

async fn run_to_exit(cmd: &mut Command) -> (i32, String) {
    let child = cmd.spawn().unwrap();
    let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap());
    let out = tokio::time::timeout(Duration::from_secs(20), out)
        .await
        .unwrap()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let last = stderr.lines().last().unwrap_or_default().to_owned();
    (out.status.code().unwrap_or(-1), last)
}

#[tokio::test]
async fn a_revoked_certificate_exits_3_with_one_line_naming_the_cause() {
    let server = TestServer::start(1000).await;
    let (json, issued) = server.credentials();
    server.active.remove(&issued.serial);
    let dir = tempfile::tempdir().unwrap();
    let (code, last) = run_to_exit(&mut command(dir.path(), &json)).await;
    assert_eq!(code, 3, "{last}");
    assert!(
        last.starts_with("tether-runner: fatal: runner certificate revoked"),
        "{last}"
    );
}

#[tokio::test]
async fn a_revoked_api_key_exits_3() {
    let server = TestServer::start(1000).await;
    server.revoke_api_key();
    let (json, _) = server.credentials();
    let dir = tempfile::tempdir().unwrap();
    let (code, last) = run_to_exit(&mut command(dir.path(), &json)).await;
    assert_eq!(code, 3, "{last}");
    assert!(last.contains("API key rejected"), "{last}");
}

#[tokio::test]
async fn an_unreachable_endpoint_exits_4() {
    let server = TestServer::start(1000).await;
    let (json, _) = server.credentials();
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let json = json.replace(&format!(":{}\"", server.port), &format!(":{closed}\""));
    let dir = tempfile::tempdir().unwrap();
    let (code, last) = run_to_exit(&mut command(dir.path(), &json)).await;
    assert_eq!(code, 4, "{last}");
    assert!(
        last.starts_with("tether-runner: tunnel endpoint unreachable"),
        "{last}"
    );
}

#[tokio::test]
async fn missing_or_bad_credentials_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let (code, last) = run_to_exit(&mut command(dir.path(), "{\"type\":\"tether_runner\"}")).await;
    assert_eq!(code, 2, "{last}");
    assert!(last.starts_with("tether-runner: credentials:"), "{last}");
    // Inline JSON whose error must not echo any value (a value may be a secret).
    let mut inline = Command::new(env!("CARGO_BIN_EXE_tether-runner"));
    inline
        .env_clear()
        .env("XDG_CONFIG_HOME", dir.path())
        .env(
            "TETHER_RUNNER_CREDENTIALS",
            "{\"api_key\": 42, \"x\": \"do-not-print-me\"}",
        )
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let (code, last) = run_to_exit(&mut inline).await;
    assert_eq!(code, 2, "{last}");
    assert!(!last.contains("do-not-print-me"), "{last}");
}
