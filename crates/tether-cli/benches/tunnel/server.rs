//! The real `tether server --dev` as a child process, and the HTTP calls the benches make.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

/// A running server process.
pub struct ServerProc {
    child: Child,
    /// Its process id.
    pub pid: u32,
    /// `http://127.0.0.1:port`.
    pub api: String,
    out: PathBuf,
}

impl ServerProc {
    /// Starts `tether server --dev` on fixed API and tunnel ports over `dir` and waits until
    /// it listens.
    pub async fn spawn(dir: &Path, api_port: u16, tunnel_port: u16, tag: &str) -> Result<Self> {
        let out = dir.join(format!("server-{tag}.out"));
        let err = dir.join(format!("server-{tag}.log"));
        let child = Command::new(env!("CARGO_BIN_EXE_tether"))
            .args(["server", "--dev", "--listen"])
            .arg(format!("127.0.0.1:{api_port}"))
            .arg("--data-dir")
            .arg(dir)
            .env("TETHER_TUNNEL_LISTEN", format!("127.0.0.1:{tunnel_port}"))
            .stdin(Stdio::null())
            .stdout(File::create(&out)?)
            .stderr(File::create(&err)?)
            .spawn()
            .context("starting tether server")?;
        let mut server = ServerProc {
            pid: child.id(),
            child,
            api: format!("http://127.0.0.1:{api_port}"),
            out,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while !server.stdout().contains("Tether server listening") {
            if let Some(status) = server.child.try_wait()? {
                bail!("the server exited ({status}); see {}", err.display());
            }
            if Instant::now() > deadline {
                bail!("the server did not start; see {}", err.display());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(server)
    }

    fn stdout(&self) -> String {
        std::fs::read_to_string(&self.out).unwrap_or_default()
    }

    /// The root API key a fresh installation printed.
    pub fn root_key(&self) -> Option<String> {
        let text = self.stdout();
        let start = text.find("TETHER_TOKEN=")? + "TETHER_TOKEN=".len();
        let key = text.get(start..)?.split_whitespace().next()?;
        Some(key.to_owned())
    }

    /// (VmRSS, RssAnon) in KiB, from `/proc/{pid}/status`.
    pub fn rss_kib(&self) -> Result<(u64, u64)> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid))?;
        let field = |name: &str| -> Result<u64> {
            let line = status
                .lines()
                .find(|l| l.starts_with(name))
                .with_context(|| format!("{name} missing"))?;
            let kib = line.split_whitespace().nth(1).context("no value")?;
            Ok(kib.parse()?)
        };
        Ok((field("VmRSS:")?, field("RssAnon:")?))
    }

    /// SIGTERM, then waits for the exit (SIGKILL after 10 s).
    pub async fn stop(mut self) -> Result<()> {
        Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .status()?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.child.try_wait()?.is_none() {
            if Instant::now() > deadline {
                self.child.kill()?;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        Ok(())
    }
}

impl Drop for ServerProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A free loopback port (bound and released).
pub fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// The machine's load line.
pub fn uptime() -> String {
    Command::new("uptime")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

async fn post(http: &reqwest::Client, url: &str, key: &str, body: Option<&Value>) -> Result<Value> {
    let mut req = http.post(url).bearer_auth(key);
    if let Some(body) = body {
        req = req.json(body);
    }
    let res = req.send().await?;
    let status = res.status();
    let doc: Value = res.json().await.unwrap_or(Value::Null);
    if !status.is_success() {
        bail!("POST {url}: {status} {doc}");
    }
    Ok(doc)
}

/// Registers runner `name` in org `default` and returns its credentials document.
pub async fn register(http: &reqwest::Client, api: &str, key: &str, name: &str) -> Result<Value> {
    let runners = format!("{api}/v1/orgs/default/runners");
    let manifest = json!({"metadata": {"name": name}, "spec": {}});
    post(http, &runners, key, Some(&manifest)).await?;
    post(http, &format!("{runners}/{name}/credentials"), key, None).await
}

/// Live tunnel sessions, from the server's `tether_tunnel_sessions` gauge (0 when the server
/// does not answer).
pub async fn sessions(http: &reqwest::Client, api: &str) -> usize {
    let Ok(res) = http.get(format!("{api}/metrics")).send().await else {
        return 0;
    };
    let text = res.text().await.unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix("tether_tunnel_sessions "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map_or(0, |v| v as usize)
}
