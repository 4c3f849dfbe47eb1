//! The runner tunnel under real conditions, through the real binaries: logs streamed to the CLI
//! as they arrive (NDJSON), the job's exit code, cancellation when the client goes away, a
//! runner reconnecting after a server restart, and the tunnel through a real tinyproxy.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tether_testkit::TestServer;

use crate::runners::{Runner, credentials, register, status, wait_status};
use crate::server;

/// A runner that may run `sh` (and `echo`), reconnecting quickly.
const JOB_CONFIG: &str = "capabilities = [\"job.run\"]\n[job]\nallowed_commands = [\"sh\", \"echo\"]\n\
    inherit_env = [\"PATH\"]\n[tunnel]\nbackoff_initial_ms = 100\nbackoff_max_ms = 1000\n\
    startup_timeout_secs = 3\n";

/// The CLI as a child process (so its output can be read while it runs).
fn cli_command(s: &TestServer, args: &[&str]) -> Command {
    let mut cmd = Command::new(s.bin());
    cmd.args(args)
        .env("TETHER_ADDR", &s.url)
        .env("XDG_CONFIG_HOME", s.dir.path().join("cli-config"))
        .env("TETHER_TOKEN", &s.root_key)
        .env_remove("TETHER_ORG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// Lines of a child's stdout with the instant each arrived.
fn timed_lines(child: &mut Child) -> std::sync::mpsc::Receiver<(String, Instant)> {
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            if tx.send((line, Instant::now())).is_err() {
                return;
            }
        }
    });
    rx
}

async fn connected_runner(s: &TestServer, name: &str) -> Runner {
    register(s, "default", name).await;
    let creds = credentials(s, "default", name, false).await;
    let runner = Runner::spawn(s, &creds, JOB_CONFIG, &[]);
    wait_status(s, "default", name, "connected").await;
    runner
}

async fn ndjson(
    s: &TestServer,
    runner: &str,
    script: &str,
    timeout: u32,
) -> (u16, String, Vec<Value>) {
    let body = json!({
        "operation": {"type": "job.run", "command": "sh", "args": ["-c", script]},
        "timeout_secs": timeout,
    });
    let res = reqwest::Client::new()
        .post(format!(
            "{}/v1/orgs/default/runners/{runner}/operations",
            s.url
        ))
        .bearer_auth(&s.root_key)
        .header("accept", "application/x-ndjson")
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    let ctype = res
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let text = res.text().await.unwrap();
    let lines = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|_| panic!("not JSON: {l}")))
        .collect();
    (status, ctype, lines)
}

/// How many request-log records name `suffix` once the batching writer has caught up.
async fn logged_requests(s: &TestServer, suffix: &str, expect: usize) -> usize {
    let count = || async {
        crate::request_log(s)
            .await
            .iter()
            .filter(|r| r.resource.ends_with(suffix))
            .count()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let n = count().await;
        if n >= expect || Instant::now() > deadline {
            // Give a duplicate the chance to show up before answering.
            tokio::time::sleep(Duration::from_millis(500)).await;
            return count().await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn job_logs_reach_the_cli_before_the_job_ends_and_the_exit_code_is_kept() {
    let s = server().await;
    let _runner = connected_runner(&s, "stream").await;

    // A job that prints, sleeps 2 s, prints again: the first line must be on the CLI's stdout
    // while the job is still sleeping.
    let started = Instant::now();
    let mut child = cli_command(
        &s,
        &[
            "job",
            "run",
            "--runner",
            "stream",
            "--",
            "sh",
            "-c",
            "echo first; sleep 2; echo second",
        ],
    )
    .spawn()
    .unwrap();
    let lines = timed_lines(&mut child);
    let (first, first_at) = lines.recv_timeout(Duration::from_secs(20)).unwrap();
    assert_eq!(first, "first");
    assert!(
        child.try_wait().unwrap().is_none(),
        "the CLI had already exited when the first line arrived"
    );
    let (second, second_at) = lines.recv_timeout(Duration::from_secs(20)).unwrap();
    assert_eq!(second, "second");
    let code = child.wait().unwrap();
    assert!(code.success(), "{code:?}");
    let gap = second_at - first_at;
    eprintln!(
        "streaming: first line on the CLI's stdout {:?} after start, {gap:?} before the second",
        first_at - started
    );
    assert!(
        gap >= Duration::from_millis(1500),
        "the first line came only {gap:?} before the second: the logs were not streamed"
    );

    // stdout and stderr go to the CLI's own, and the CLI exits with the job's code.
    let out = cli_command(
        &s,
        &[
            "job",
            "run",
            "--runner",
            "stream",
            "--",
            "sh",
            "-c",
            "echo out; echo err >&2; exit 3",
        ],
    )
    .output()
    .unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "out\n");
    assert!(String::from_utf8_lossy(&out.stderr).contains("err\n"));

    // The NDJSON form itself: log lines, then one result line.
    let (code, ctype, lines) = ndjson(&s, "stream", "printf 'a\\n'; printf 'b\\n' >&2", 20).await;
    assert_eq!(code, 200);
    assert_eq!(ctype, "application/x-ndjson");
    let (last, logs) = lines.split_last().unwrap();
    assert_eq!(last["type"], "result", "{lines:?}");
    assert_eq!(last["output"]["job"]["exit_code"], 0);
    assert_eq!(last["truncated_bytes"], 0);
    assert!(logs.iter().all(|l| l["type"] == "log"));
    let text = |stream: &str| -> String {
        logs.iter()
            .filter(|l| l["stream"] == stream)
            .map(|l| l["data"].as_str().unwrap())
            .collect()
    };
    assert_eq!(text("stdout"), "a\n");
    assert_eq!(text("stderr"), "b\n");

    // A runner-side deadline ends the stream with an error line carrying the API's code...
    let (code, _, lines) = ndjson(&s, "stream", "echo slow; sleep 10", 1).await;
    assert_eq!(code, 200);
    let last = lines.last().unwrap();
    assert_eq!(last["type"], "error", "{lines:?}");
    assert_eq!(last["error"]["code"], "runner_timeout");
    assert_eq!(last["status"], 504);
    // ...which the CLI prints like any API error, exiting non-zero.
    let out = cli_command(
        &s,
        &[
            "job",
            "run",
            "--runner",
            "stream",
            "--timeout",
            "1",
            "--",
            "sh",
            "-c",
            "sleep 10",
        ],
    )
    .output()
    .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("error: runner_timeout (504)"), "{err}");

    // Errors before anything ran are plain JSON errors with their status.
    let (code, _, lines) = ndjson(&s, "nosuch", "true", 5).await;
    assert_eq!(code, 404);
    assert_eq!(lines[0]["error"]["code"], "not_found");

    // Each operation is one request-log record, streamed or not (2 CLI runs, 2 NDJSON calls,
    // 1 failed CLI run; the 404 is on another path).
    assert_eq!(
        logged_requests(&s, "/runners/stream/operations", 5).await,
        5
    );
}

#[tokio::test]
async fn a_client_that_goes_away_cancels_its_job_on_the_runner() {
    let s = server().await;
    let runner = connected_runner(&s, "cancel").await;
    let mut child = cli_command(
        &s,
        &[
            "job",
            "run",
            "--runner",
            "cancel",
            "--",
            "sh",
            "-c",
            "echo started; sleep 30",
        ],
    )
    .spawn()
    .unwrap();
    let lines = timed_lines(&mut child);
    let (first, _) = lines.recv_timeout(Duration::from_secs(20)).unwrap();
    assert_eq!(first, "started");
    let killed = Instant::now();
    child.kill().unwrap();
    child.wait().unwrap();
    runner
        .wait_log("cancel requested", Duration::from_secs(10))
        .await;
    let took = killed.elapsed();
    eprintln!("cancel: the runner got Cancel {took:?} after the CLI was killed");
    assert!(took < Duration::from_secs(5), "took {took:?}");
    runner.wait_log("Cancelled", Duration::from_secs(10)).await;
    // The runner's late "cancelled" result is not a protocol violation: the session lives on.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(status(&s, "default", "cancel").await["status"], "connected");
    let out = cli_command(
        &s,
        &["job", "run", "--runner", "cancel", "--", "echo", "after"],
    )
    .output()
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "after\n");
    assert!(s.log().contains("the caller went away"));
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test]
async fn a_runner_that_goes_away_fails_its_running_operation_at_once() {
    let s = server().await;
    let mut runner = connected_runner(&s, "vanish").await;
    let body = json!({
        "operation": {"type": "job.run", "command": "sh", "args": ["-c", "sleep 60"]},
        "timeout_secs": 120,
    });
    let path = "/v1/orgs/default/runners/vanish/operations";
    let kill = async {
        runner
            .wait_log("operation started", Duration::from_secs(10))
            .await;
        runner.child.kill().unwrap();
        Instant::now()
    };
    let call = tokio::time::timeout(
        Duration::from_secs(30),
        s.req("POST", path, Some(s.root_key.as_str()), Some(&body)),
    );
    let (answered, killed) = tokio::join!(call, kill);
    let r = answered.expect("the operation still waited for a runner that was gone");
    eprintln!(
        "a killed runner's operation failed {:?} after the kill",
        killed.elapsed()
    );
    assert_eq!(r.code(), "runner_unavailable", "{}", r.text);
    assert!(killed.elapsed() < Duration::from_secs(10));
}

#[tokio::test]
async fn a_runner_reconnects_after_a_server_restart() {
    let bin = Path::new(env!("CARGO_BIN_EXE_tether"));
    // The tunnel keeps its port across the restart (the credentials name it).
    let listen = format!("127.0.0.1:{}", free_port());
    let mut s = TestServer::start_with_env(bin, &[("TETHER_TUNNEL_LISTEN", &listen)]).await;
    let mut runner = connected_runner(&s, "phoenix").await;
    let out = cli_command(
        &s,
        &["job", "run", "--runner", "phoenix", "--", "echo", "before"],
    )
    .output()
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let started = Instant::now();
    s.restart().await; // SIGKILL, then the same data directory and tunnel port
    let restarted = started.elapsed();
    // Backoff: 100 ms doubling up to 1 s, so at most ~1 s after the server is back.
    let budget = restarted + Duration::from_secs(1) + Duration::from_secs(2);
    loop {
        let r = s
            .admin(
                "POST",
                "/v1/orgs/default/runners/phoenix/operations",
                Some(&json!({"operation": {"type": "job.run", "command": "echo", "args": ["again"]}})),
            )
            .await;
        if r.status == 200 {
            assert_eq!(r.body["logs"]["stdout"], "again\n");
            break;
        }
        assert_eq!(r.code(), "runner_unavailable", "{}", r.text);
        assert!(
            started.elapsed() < budget,
            "no reconnect within {budget:?}; runner log:\n{}",
            runner.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let back = started.elapsed();
    eprintln!(
        "restart: server back after {restarted:?}, runner reconnected and served a job after {back:?} \
         ({:?} after the server was ready)",
        back - restarted
    );
    assert_eq!(
        status(&s, "default", "phoenix").await["status"],
        "connected"
    );
    assert!(
        runner.child.try_wait().unwrap().is_none(),
        "the runner exited"
    );
    assert!(runner.log().contains("reconnecting"), "{}", runner.log());
    // The runner process was the same one all along, and it also survives a graceful stop.
    let started = Instant::now();
    s.stop();
    s.restart().await;
    wait_status(&s, "default", "phoenix", "connected").await;
    eprintln!(
        "restart (SIGTERM): reconnected after {:?}",
        started.elapsed()
    );
    assert!(runner.wait_exit(Duration::from_millis(10)).await.is_none());
}

/// `tinyproxy` from Debian's package, or None (skipped with a reason unless services are
/// required).
fn tinyproxy() -> Option<std::path::PathBuf> {
    let found = ["/usr/bin/tinyproxy", "/usr/sbin/tinyproxy"]
        .iter()
        .map(std::path::PathBuf::from)
        .find(|p| p.exists());
    if found.is_none() {
        let why = "tinyproxy is not installed (apt-get install tinyproxy; scripts/test.sh does)";
        assert!(
            std::env::var("TETHER_TEST_REQUIRE_SERVICES").as_deref() != Ok("1"),
            "{why}"
        );
        eprintln!("SKIPPED the tinyproxy test: {why}");
    }
    found
}

/// This machine's address on its default route: a non-loopback address, since loopback is
/// never proxied.
fn outward_ip() -> Option<std::net::IpAddr> {
    let sock = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    sock.connect("198.51.100.1:9").ok()?;
    let ip = sock.local_addr().ok()?.ip();
    (!ip.is_loopback() && !ip.is_unspecified()).then_some(ip)
}

/// A tinyproxy process, stopped on drop.
struct Tinyproxy {
    child: Child,
    port: u16,
    log: std::path::PathBuf,
}

impl Tinyproxy {
    async fn start(bin: &Path, dir: &Path) -> Tinyproxy {
        let port = free_port();
        let log = dir.join("tinyproxy.log");
        let conf = dir.join("tinyproxy.conf");
        // No ConnectPort lines: CONNECT to any port. Foreground (-d), log to our file.
        std::fs::write(
            &conf,
            format!(
                "Port {port}\nListen 127.0.0.1\nTimeout 60\nMaxClients 20\nLogLevel Info\n\
                 LogFile \"{}\"\nAllow 127.0.0.1\nDisableViaHeader Yes\n",
                log.display()
            ),
        )
        .unwrap();
        let child = Command::new(bin)
            .arg("-d")
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "tinyproxy did not start");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Tinyproxy { child, port, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Tinyproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn the_tunnel_goes_through_tinyproxy_and_honours_no_proxy() {
    let Some(bin) = tinyproxy() else { return };
    let Some(ip) = outward_ip() else {
        let why = "this machine has no non-loopback address (loopback is never proxied)";
        assert!(
            std::env::var("TETHER_TEST_REQUIRE_SERVICES").as_deref() != Ok("1"),
            "{why}"
        );
        eprintln!("SKIPPED the tinyproxy test: {why}");
        return;
    };
    let tunnel = std::net::SocketAddr::new(ip, free_port());
    let s = TestServer::start_with_env(
        Path::new(env!("CARGO_BIN_EXE_tether")),
        &[("TETHER_TUNNEL_LISTEN", &tunnel.to_string())],
    )
    .await;
    assert_eq!(s.tunnel_url, format!("https://{tunnel}"));
    let proxy = Tinyproxy::start(&bin, s.dir.path()).await;
    let proxy_url = format!("http://127.0.0.1:{}", proxy.port);

    // Through the proxy: the runner connects and serves a job; tinyproxy saw the CONNECT.
    register(&s, "default", "viaproxy").await;
    let creds = credentials(&s, "default", "viaproxy", false).await;
    let runner = Runner::spawn(&s, &creds, JOB_CONFIG, &[("HTTPS_PROXY", &proxy_url)]);
    wait_status(&s, "default", "viaproxy", "connected").await;
    let out = cli_command(
        &s,
        &[
            "job", "run", "--runner", "viaproxy", "--", "echo", "proxied",
        ],
    )
    .output()
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "proxied\n");
    let connect = format!("CONNECT {tunnel} ");
    assert!(
        proxy.log().contains(&connect),
        "no '{connect}' in tinyproxy's log:\n{}",
        proxy.log()
    );
    assert!(
        runner.log().contains("HTTP CONNECT proxy"),
        "{}",
        runner.log()
    );

    // With the proxy down, the same setup cannot reach the server: it was not bypassed.
    let dead = format!("http://127.0.0.1:{}", free_port());
    register(&s, "default", "deadproxy").await;
    let creds = credentials(&s, "default", "deadproxy", false).await;
    let mut down = Runner::spawn(&s, &creds, JOB_CONFIG, &[("HTTPS_PROXY", &dead)]);
    let code = down
        .must_exit(
            Duration::from_secs(20),
            "a runner behind a dead proxy kept running",
        )
        .await;
    assert_ne!(code, 0);
    assert_eq!(
        status(&s, "default", "deadproxy").await["status"],
        "never_seen"
    );

    // NO_PROXY (by IP, lower case too) sends it direct even with the dead proxy set.
    for (name, var) in [("noproxy", "NO_PROXY"), ("noproxylc", "no_proxy")] {
        register(&s, "default", name).await;
        let creds = credentials(&s, "default", name, false).await;
        let ip = ip.to_string();
        let direct = Runner::spawn(
            &s,
            &creds,
            JOB_CONFIG,
            &[("HTTPS_PROXY", &dead), (var, &ip)],
        );
        wait_status(&s, "default", name, "connected").await;
        assert!(
            !direct.log().contains("HTTP CONNECT proxy"),
            "{}",
            direct.log()
        );
    }
    assert_eq!(proxy.log().matches(&connect).count(), 1, "{}", proxy.log());
}
