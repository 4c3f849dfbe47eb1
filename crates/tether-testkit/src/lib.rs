//! Test harness for black-box tests: starts the real `tether` binary with `server --dev` on
//! `127.0.0.1:0`, with a temporary SQLite file, or with a fresh PostgreSQL database when
//! `TETHER_TEST_DATABASE_URL` names an admin connection. It records every secret the tests
//! create, and on drop fails if any of them appears in the server's log.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test harness: failing loudly is the point"
)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::Value;

/// A running server.
pub struct TestServer {
    /// The runner tunnel endpoint (`https://127.0.0.1:PORT`), from the startup banner.
    pub tunnel_url: String,
    /// Base URL, e.g. `http://127.0.0.1:40123`.
    pub url: String,
    /// The admin's root API key.
    pub root_key: String,
    /// The data directory (SQLite file, root key, logs).
    pub dir: tempfile::TempDir,
    /// The database URL in use (for restarts and direct tampering).
    pub database_url: String,
    bin: PathBuf,
    env: Vec<(String, String)>,
    child: Option<Child>,
    secrets: Mutex<Vec<String>>,
    http: reqwest::Client,
}

/// A response: status and JSON body (Null when empty or not JSON).
#[derive(Debug, Clone)]
pub struct Resp {
    /// HTTP status.
    pub status: u16,
    /// Body.
    pub body: Value,
    /// Raw text.
    pub text: String,
}

impl Resp {
    /// The error code, if this is an error body.
    pub fn code(&self) -> &str {
        self.body
            .pointer("/error/code")
            .and_then(Value::as_str)
            .unwrap_or("")
    }

    /// Fails unless this is an error with `status` and `code`, showing the body if not.
    #[track_caller]
    pub fn assert_error(&self, status: u16, code: &str) {
        assert_eq!((self.status, self.code()), (status, code), "{}", self.text);
    }
}

/// Creates a fresh PostgreSQL database from an admin URL and returns its URL.
pub async fn fresh_pg_database(admin: &str) -> String {
    use sqlx::Connection;
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let nanos = std::time::UNIX_EPOCH.elapsed().unwrap().as_nanos();
    let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let name = format!("tk_{}_{}_{}", std::process::id(), nanos, n);
    let mut conn = sqlx::PgConnection::connect(admin).await.unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut conn)
        .await
        .unwrap();
    let base = admin.rsplit_once('/').map(|(b, _)| b).unwrap();
    format!("{base}/{name}")
}

impl TestServer {
    /// Starts a fresh dev server from the binary at `bin`.
    pub async fn start(bin: &Path) -> TestServer {
        Self::start_with_env(bin, &[]).await
    }

    /// Like [`TestServer::start`], with extra environment variables for the server process
    /// (e.g. `TETHER_TUNNEL_HEARTBEAT_MS`).
    pub async fn start_with_env(bin: &Path, env: &[(&str, &str)]) -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        let database_url = match std::env::var("TETHER_TEST_DATABASE_URL") {
            Ok(admin) if !admin.is_empty() => fresh_pg_database(&admin).await,
            _ => format!("sqlite://{}/tether.db", dir.path().display()),
        };
        let mut s = TestServer {
            url: String::new(),
            tunnel_url: String::new(),
            root_key: String::new(),
            dir,
            database_url,
            bin: bin.to_owned(),
            env: env
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            child: None,
            secrets: Mutex::new(Vec::new()),
            http: reqwest::Client::new(),
        };
        let key = s.spawn("127.0.0.1:0").await;
        s.root_key = key.expect("a fresh server prints a root key");
        s.remember(&s.root_key.clone());
        s
    }

    /// Starts another server on this one's database, with the same root key: a second replica
    /// behind a load balancer. Meaningful on PostgreSQL (an SQLite file has one server).
    pub async fn join(&self) -> TestServer {
        let root = std::fs::read_to_string(self.dir.path().join("root.key")).unwrap();
        let mut env = self.env.clone();
        env.retain(|(k, _)| k != "TETHER_ROOT_KEY");
        env.push(("TETHER_ROOT_KEY".into(), root.trim().to_owned()));
        let mut s = TestServer {
            url: String::new(),
            tunnel_url: String::new(),
            root_key: self.root_key.clone(),
            dir: tempfile::tempdir().unwrap(),
            database_url: self.database_url.clone(),
            bin: self.bin.clone(),
            env,
            child: None,
            secrets: Mutex::new(self.secrets.lock().unwrap().clone()),
            http: reqwest::Client::new(),
        };
        s.remember(root.trim());
        let key = s.spawn("127.0.0.1:0").await;
        assert!(
            key.is_none(),
            "a joining server bootstrapped a fresh installation"
        );
        s
    }

    /// Spawns the server process and waits for its listening line; returns the root key if
    /// one was printed (first start only).
    async fn spawn(&mut self, listen: &str) -> Option<String> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .unwrap();
        let mut child = Command::new(&self.bin)
            .args(["server", "--dev", "--listen", listen, "--data-dir"])
            .arg(self.dir.path())
            .args(["--database-url", &self.database_url])
            .env("TETHER_LOG", "debug,sqlx=warn,hyper=info,h2=info")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        self.child = Some(child);
        let (url, tunnel, key) = tokio::task::spawn_blocking(move || read_banner(stdout))
            .await
            .unwrap();
        self.url = url;
        self.tunnel_url = tunnel;
        self.wait_ready().await;
        key
    }

    async fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(r) = self.http.get(format!("{}/readyz", self.url)).send().await
                && r.status().is_success()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("server did not become ready; log:\n{}", self.log());
    }

    /// The server's log file.
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Records a secret that must never appear in the log.
    pub fn remember(&self, secret: &str) {
        self.secrets.lock().unwrap().push(secret.to_owned());
    }

    /// Kills the server with SIGKILL (no shutdown path runs).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Stops the server with SIGTERM and waits.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(c.id().to_string())
                .status();
            let _ = c.wait();
        }
    }

    /// Sets (or replaces) an environment variable for the next (re)start.
    pub fn set_env(&mut self, key: &str, value: &str) {
        self.env.retain(|(k, _)| k != key);
        self.env.push((key.to_owned(), value.to_owned()));
    }

    /// The path of the binary under test.
    pub fn bin(&self) -> &Path {
        &self.bin
    }

    /// Restarts the server on the same data (a new port).
    pub async fn restart(&mut self) {
        self.kill();
        self.spawn("127.0.0.1:0").await;
    }

    /// Sends a request with a bearer token (or none) and an optional JSON body.
    pub async fn req(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> Resp {
        let mut r = self
            .http
            .request(method.parse().unwrap(), format!("{}{}", self.url, path));
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        if let Some(b) = body {
            r = r.json(b);
        }
        let res = r.send().await.unwrap();
        let status = res.status().as_u16();
        let text = res.text().await.unwrap();
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Resp { status, body, text }
    }

    /// Sends raw bytes with a content type.
    pub async fn raw(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        content_type: &str,
        body: Vec<u8>,
    ) -> Resp {
        let mut r = self
            .http
            .request(method.parse().unwrap(), format!("{}{}", self.url, path))
            .header("content-type", content_type)
            .body(body);
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        let res = r.send().await.unwrap();
        let status = res.status().as_u16();
        let text = res.text().await.unwrap();
        Resp {
            status,
            body: serde_json::from_str(&text).unwrap_or(Value::Null),
            text,
        }
    }

    /// As the admin.
    pub async fn admin(&self, method: &str, path: &str, body: Option<&Value>) -> Resp {
        let key = self.root_key.clone();
        self.req(method, path, Some(&key), body).await
    }

    /// Applies YAML as the admin and asserts success.
    pub async fn apply(&self, yaml: &str) -> Resp {
        let key = self.root_key.clone();
        let r = self
            .raw(
                "POST",
                "/v1/apply",
                Some(&key),
                "application/yaml",
                yaml.as_bytes().to_vec(),
            )
            .await;
        assert_eq!(r.status, 200, "apply failed: {}", r.text);
        r
    }

    /// Creates a user (if needed) and an API key for it; returns the key.
    pub async fn user_key(&self, name: &str) -> String {
        let body = serde_json::json!({"metadata": {"name": name}, "spec": {}});
        let r = self
            .admin(
                "PUT",
                &format!("/v1/orgs/default/users/{name}"),
                Some(&body),
            )
            .await;
        assert!(r.status == 200 || r.status == 201, "{}", r.text);
        let r = self
            .admin(
                "POST",
                &format!("/v1/orgs/default/users/{name}/keys"),
                Some(&serde_json::json!({"name": "test"})),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.text);
        let key = r.body["key"].as_str().unwrap().to_owned();
        self.remember(&key);
        key
    }

    /// Runs the CLI against this server with an isolated config directory.
    pub fn cli(&self, token: Option<&str>, args: &[&str]) -> std::process::Output {
        self.cli_command(token, args).output().unwrap()
    }

    /// [`TestServer::cli`] with `stdin` written to the command's standard input.
    pub fn cli_with_stdin(
        &self,
        token: Option<&str>,
        args: &[&str],
        stdin: &[u8],
    ) -> std::process::Output {
        let mut child = self
            .cli_command(token, args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        if let Some(mut input) = child.stdin.take() {
            std::io::Write::write_all(&mut input, stdin).unwrap();
        }
        child.wait_with_output().unwrap()
    }

    fn cli_command(&self, token: Option<&str>, args: &[&str]) -> Command {
        let cfg = self.dir.path().join("cli-config");
        let mut cmd = Command::new(&self.bin);
        cmd.args(args)
            .env("TETHER_ADDR", &self.url)
            .env("XDG_CONFIG_HOME", &cfg)
            .env_remove("TETHER_TOKEN")
            .env_remove("TETHER_ORG");
        if let Some(t) = token {
            cmd.env("TETHER_TOKEN", t);
        }
        cmd
    }

    /// Forgets the remembered secrets (only for the test that proves the checks can fail).
    pub fn forget_remembered(&self) {
        self.secrets.lock().unwrap().clear();
    }

    /// Fails if any remembered secret appears in the server log.
    pub fn assert_no_secrets_in_log(&self) {
        let log = self.log();
        for s in self.secrets.lock().unwrap().iter() {
            assert!(
                !log.contains(s.as_str()),
                "a secret appeared in the server log"
            );
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            self.print_log_tail();
        } else {
            self.assert_no_secrets_in_log();
            self.assert_no_secrets_in_audit();
            self.assert_no_secrets_in_database_files();
        }
    }
}

/// How much of a failed test's server log is printed.
const LOG_TAIL_LINES: usize = 60;

impl TestServer {
    /// Prints the end of the server's log to the test's output (which the harness shows for a
    /// failed test only), with every remembered secret masked, so that a failure in CI can be
    /// diagnosed from its output alone.
    fn print_log_tail(&self) {
        let mut log = self.log();
        if let Ok(secrets) = self.secrets.lock() {
            for s in secrets.iter().filter(|s| !s.is_empty()) {
                log = log.replace(s.as_str(), "***");
            }
        }
        let lines: Vec<&str> = log.lines().collect();
        let from = lines.len().saturating_sub(LOG_TAIL_LINES);
        eprintln!(
            "--- the last {} lines of the server log ({}):\n{}",
            lines.len() - from,
            self.log_path().display(),
            lines[from..].join("\n")
        );
    }
}

impl TestServer {
    /// Fails if any remembered secret appears in an audit row: a resource version's snapshots
    /// or diff, or any request-log field. Runs on its own thread and runtime so it can be
    /// called from `Drop` inside a test's runtime.
    pub fn assert_no_secrets_in_audit(&self) {
        let url = self.database_url.clone();
        let secrets = self.secrets.lock().unwrap().clone();
        let rows = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async move {
                let mut all = query_strings(&url, "SELECT COALESCE(yaml_before, '') || COALESCE(yaml_after, '') || diff || COALESCE(message, '') FROM versions").await;
                // The request log: its interned strings, and the bytes of its batches, which
                // hold every other string of a record as it is.
                all.extend(query_strings(&url, "SELECT term FROM request_log_terms").await);
                all.extend(
                    query_blobs(&url, "SELECT records FROM request_log_batches")
                        .await
                        .into_iter()
                        .map(|b| String::from_utf8_lossy(&b).into_owned()),
                );
                all
            })
        })
        .join()
        .unwrap();
        for s in &secrets {
            assert!(
                !rows.iter().any(|r| r.contains(s.as_str())),
                "a secret appeared in an audit record"
            );
        }
    }
}

impl TestServer {
    /// On SQLite, fails if any remembered secret appears in the bytes of the database file or
    /// its write-ahead log, as it is or JSON-escaped: whoever copies them without the root key
    /// gets no value that the test wrote. Runs after the server is killed, so nothing is held
    /// back in memory. (On PostgreSQL the audit check above reads the tables instead.)
    pub fn assert_no_secrets_in_database_files(&self) {
        let Some(db) = self.database_url.strip_prefix("sqlite://") else {
            return;
        };
        let secrets = self.secrets.lock().unwrap().clone();
        for file in [db.to_owned(), format!("{db}-wal")] {
            let Ok(bytes) = std::fs::read(&file) else {
                continue;
            };
            for s in secrets.iter().filter(|s| !s.is_empty()) {
                // As written, and as it would be inside a JSON string (a spec, a snapshot).
                let json = serde_json::to_string(s).unwrap_or_default();
                let escaped = json
                    .get(1..json.len().saturating_sub(1))
                    .unwrap_or_default();
                for form in [s.as_str(), escaped] {
                    assert!(
                        form.is_empty() || !bytes.windows(form.len()).any(|w| w == form.as_bytes()),
                        "a secret appeared in {file}"
                    );
                }
            }
        }
    }
}

/// Reads stdout until the listening line, capturing the URL and the root key.
fn read_banner(stdout: std::process::ChildStdout) -> (String, String, Option<String>) {
    let mut reader = BufReader::new(stdout);
    let mut url = String::new();
    let mut tunnel = String::new();
    let mut key = None;
    let mut line = String::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        line.clear();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            break;
        }
        if let Some(k) = line.trim().strip_prefix("export TETHER_TOKEN=") {
            key = Some(k.to_owned());
        }
        if let Some(rest) = line.trim().strip_prefix("Tunnel listening on ") {
            tunnel = rest.split_whitespace().next().unwrap_or("").to_owned();
            continue;
        }
        if let Some(rest) = line.split("listening on ").nth(1) {
            url = rest.split_whitespace().next().unwrap_or("").to_owned();
            break;
        }
    }
    // Keep draining stdout in the background so the child never blocks on a full pipe.
    std::thread::spawn(move || {
        let mut sink = String::new();
        while reader.read_line(&mut sink).unwrap_or(0) > 0 {
            sink.clear();
        }
    });
    assert!(!url.is_empty(), "the server did not print its address");
    (url, tunnel, key)
}

/// Runs a statement directly against the server's database, bypassing Tether (to simulate
/// tampering).
pub async fn tamper(database_url: &str, sql: &str) -> u64 {
    use sqlx::Connection;
    sqlx::any::install_default_drivers();
    let url = if database_url.starts_with("sqlite") {
        format!("{database_url}?mode=rw")
    } else {
        database_url.to_owned()
    };
    let mut conn = sqlx::AnyConnection::connect(&url).await.unwrap();
    let done = sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()))
        .execute(&mut conn)
        .await
        .unwrap();
    done.rows_affected()
}

/// Reads one text column of every row a query returns, directly from the database (to prove
/// what is and is not stored).
pub async fn query_strings(database_url: &str, sql: &str) -> Vec<String> {
    use sqlx::Row;
    query_rows(database_url, sql)
        .await
        .iter()
        .map(|r| r.try_get::<String, _>(0).unwrap_or_default())
        .collect()
}

/// Runs one query on a connection of its own (read-only on SQLite).
async fn query_rows(database_url: &str, sql: &str) -> Vec<sqlx::any::AnyRow> {
    use sqlx::Connection;
    sqlx::any::install_default_drivers();
    let url = if database_url.starts_with("sqlite") {
        format!("{database_url}?mode=ro")
    } else {
        database_url.to_owned()
    };
    let mut conn = sqlx::AnyConnection::connect(&url).await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()))
        .fetch_all(&mut conn)
        .await
        .unwrap()
}

/// The first column of each row as bytes, for a read-only look at stored blobs.
pub async fn query_blobs(database_url: &str, sql: &str) -> Vec<Vec<u8>> {
    use sqlx::Row;
    query_rows(database_url, sql)
        .await
        .iter()
        .map(|r| r.try_get::<Vec<u8>, _>(0).unwrap_or_default())
        .collect()
}

/// The Python interpreter with the test tools (python-dotenv), from `scripts/test.sh`.
/// Outside CI a missing interpreter skips the calling test with a message; in CI it fails.
pub fn test_python() -> Option<String> {
    match std::env::var("TETHER_TEST_PYTHON") {
        Ok(p) if !p.is_empty() => Some(p),
        _ if std::env::var("CI").is_ok() => {
            panic!("TETHER_TEST_PYTHON is not set: run the tests with scripts/test.sh")
        }
        _ => {
            eprintln!("SKIPPED: TETHER_TEST_PYTHON is not set (scripts/test.sh sets it)");
            None
        }
    }
}
