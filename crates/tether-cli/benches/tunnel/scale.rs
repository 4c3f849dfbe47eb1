//! N idle runners on one server process: its memory per runner, and the reconnect curve after
//! a restart (same data directory, same tunnel port).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use tether_core::clock::SystemClock;
use tether_runner::{Credentials, RunnerConfig, RunnerError, RunnerOptions};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::Options;
use crate::server::{ServerProc, free_port, register, sessions, uptime};

/// Concurrent registrations (runner resource + credentials).
const REGISTER_TASKS: usize = 8;
/// Runners started per batch, and the pause between batches.
const BATCH: usize = 100;
const BATCH_PAUSE: Duration = Duration::from_millis(50);
/// How often the server's session gauge is read while runners reconnect.
const SAMPLE_EVERY: Duration = Duration::from_millis(100);

/// Runs the scale benchmark and prints its figures.
pub async fn run(opts: &Options) -> Result<()> {
    let n = opts.runners;
    check_open_files(n)?;
    let dir = tempfile::tempdir()?;
    let (api_port, tunnel_port) = (free_port()?, free_port()?);
    let http = reqwest::Client::new();
    println!();
    println!("== {n} runners on one server process (tether server --dev, SQLite)");

    let first = ServerProc::spawn(dir.path(), api_port, tunnel_port, "1").await?;
    let key = first.root_key().context("no root key printed")?;
    let t = Instant::now();
    let docs = register_all(&http, &first.api, &key, n).await?;
    println!(
        "registered {n} runners with credentials in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    first.stop().await?;

    // Baseline: a fresh process with every runner's data, before any runner connects.
    let server = ServerProc::spawn(dir.path(), api_port, tunnel_port, "2").await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let base = server.rss_kib()?;
    let t = Instant::now();
    let mut fleet = Fleet::start(&docs).await?;
    wait_for(&http, &server.api, n, Duration::from_secs(300), &mut fleet).await?;
    println!(
        "all {n} connected in {:.1} s (first start: TLS handshake, Hello/Ack, whoami each)",
        t.elapsed().as_secs_f64()
    );
    tokio::time::sleep(opts.idle).await;
    expect_all(&http, &server.api, n).await?;
    let loaded = server.rss_kib()?;
    println!("load while idle: {}", uptime());
    print_rss("after the first connect", base, loaded, n);

    let ports = (api_port, tunnel_port);
    let server = restart(server, &http, dir.path(), ports, n, &mut fleet).await?;
    tokio::time::sleep(opts.idle).await;
    expect_all(&http, &server.api, n).await?;
    let after = server.rss_kib()?;
    print_rss(
        "restarted process, reconnected (no whoami), vs the baseline process",
        base,
        after,
        n,
    );
    let failed = fleet.stop().await;
    if failed > 0 {
        bail!("{failed} runners ended with an error");
    }
    Ok(())
}

fn print_rss(label: &str, (rss0, anon0): (u64, u64), (rss1, anon1): (u64, u64), n: usize) {
    let per = |a: u64, b: u64| b.saturating_sub(a) as f64 / n.max(1) as f64;
    println!(
        "server RSS, {label}: {rss0} KiB idle without runners -> {rss1} KiB with {n} idle runners \
         = {:.1} KiB per runner (anonymous: {anon0} -> {anon1} KiB = {:.1} KiB per runner)",
        per(rss0, rss1),
        per(anon0, anon1),
    );
}

/// SIGTERM, a new process on the same data and ports, and the connected count every 100 ms.
async fn restart(
    server: ServerProc,
    http: &reqwest::Client,
    dir: &std::path::Path,
    (api_port, tunnel_port): (u16, u16),
    n: usize,
    fleet: &mut Fleet,
) -> Result<ServerProc> {
    let t0 = Instant::now();
    server.stop().await?;
    let stopped = t0.elapsed();
    let server = ServerProc::spawn(dir, api_port, tunnel_port, "3").await?;
    let listening = t0.elapsed();
    let mut samples = vec![(Duration::ZERO, n), (stopped, 0), (listening, 0)];
    let limit = Duration::from_secs(120);
    loop {
        let count = sessions(http, &server.api).await;
        samples.push((t0.elapsed(), count));
        if count >= n || t0.elapsed() > limit {
            break;
        }
        fleet.check()?;
        tokio::time::sleep(SAMPLE_EVERY).await;
    }
    let all_back = samples.last().map_or(Duration::ZERO, |s| s.0);
    println!();
    println!(
        "restart: SIGTERM at 0; old process gone at {:.2} s; new process listening at {:.2} s",
        stopped.as_secs_f64(),
        listening.as_secs_f64()
    );
    print_curve(&samples, n);
    let back = samples.last().map_or(0, |s| s.1);
    if back < n {
        bail!("only {back} of {n} runners reconnected within {limit:?}");
    }
    println!(
        "all {n} reconnected {:.2} s after SIGTERM ({:.2} s after the new process listened)",
        all_back.as_secs_f64(),
        all_back.saturating_sub(listening).as_secs_f64()
    );
    Ok(server)
}

/// The connected count every half second (the last sample at or before it), and when
/// 50/90/99/100 % were back.
fn print_curve(samples: &[(Duration, usize)], n: usize) {
    let end = samples
        .last()
        .map_or(0, |s| s.0.as_millis() as u64 / 500 + 1);
    let at = |t: Duration| {
        samples
            .iter()
            .take_while(|s| s.0 <= t)
            .last()
            .map_or(0, |s| s.1)
    };
    let cells: Vec<String> = (0..=end)
        .map(|h| {
            let t = Duration::from_millis(h * 500);
            format!("{:.1}s:{}", t.as_secs_f64(), at(t))
        })
        .collect();
    println!("reconnect curve (seconds after SIGTERM -> connected runners):");
    for line in cells.chunks(10) {
        println!("  {}", line.join("  "));
    }
    let when = |share: f64| {
        let want = (share * n as f64).ceil() as usize;
        samples
            .iter()
            .skip(1)
            .find(|s| s.1 >= want && s.0 > Duration::ZERO)
            .map_or("-".to_owned(), |s| format!("{:.2} s", s.0.as_secs_f64()))
    };
    println!(
        "  50% back at {}, 90% at {}, 99% at {}, 100% at {}",
        when(0.5),
        when(0.9),
        when(0.99),
        when(1.0)
    );
}

/// Registers `n` runners through the API with a few concurrent tasks.
async fn register_all(
    http: &reqwest::Client,
    api: &str,
    key: &str,
    n: usize,
) -> Result<Vec<String>> {
    let next = Arc::new(AtomicUsize::new(0));
    let mut set = JoinSet::new();
    for _ in 0..REGISTER_TASKS {
        let (http, api, key, next) = (http.clone(), api.to_owned(), key.to_owned(), next.clone());
        set.spawn(async move {
            let mut docs = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    return Ok::<_, anyhow::Error>(docs);
                }
                let doc = register(&http, &api, &key, &format!("bench-{i:05}")).await?;
                docs.push(doc.to_string());
            }
        });
    }
    let mut docs = Vec::with_capacity(n);
    while let Some(done) = set.join_next().await {
        docs.extend(done??);
    }
    Ok(docs)
}

/// The simulated runners: `tether_runner::run` tasks on this process's runtime.
struct Fleet {
    set: JoinSet<Result<(), RunnerError>>,
    stop: watch::Sender<bool>,
}

impl Fleet {
    async fn start(docs: &[String]) -> Result<Fleet> {
        let (stop, stopped) = watch::channel(false);
        let mut set = JoinSet::new();
        for (i, doc) in docs.iter().enumerate() {
            let credentials = Credentials::parse(doc).map_err(|e| anyhow!("{e}"))?;
            let opts = RunnerOptions {
                credentials,
                config: RunnerConfig::default(),
                proxy: None,
                clock: Arc::new(SystemClock),
            };
            let mut stopped = stopped.clone();
            set.spawn(tether_runner::run(opts, async move {
                let _ = stopped.wait_for(|s| *s).await;
            }));
            if i % BATCH == BATCH - 1 {
                tokio::time::sleep(BATCH_PAUSE).await;
            }
        }
        Ok(Fleet { set, stop })
    }

    /// Fails if a runner already ended (they only end on a fatal error before `stop`).
    fn check(&mut self) -> Result<()> {
        if let Some(done) = self.set.try_join_next() {
            let why = match done {
                Ok(Ok(())) => "stopped".to_owned(),
                Ok(Err(e)) => e.one_line(),
                Err(e) => e.to_string(),
            };
            bail!("a runner ended: {why}");
        }
        Ok(())
    }

    /// Stops every runner; returns how many ended with an error.
    async fn stop(mut self) -> usize {
        let _ = self.stop.send(true);
        let mut failed = 0;
        let wait = tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(done) = self.set.join_next().await {
                if !matches!(done, Ok(Ok(()))) {
                    failed += 1;
                }
            }
        });
        if wait.await.is_err() {
            failed += self.set.len();
        }
        failed
    }
}

async fn wait_for(
    http: &reqwest::Client,
    api: &str,
    n: usize,
    limit: Duration,
    fleet: &mut Fleet,
) -> Result<()> {
    let deadline = Instant::now() + limit;
    loop {
        let count = sessions(http, api).await;
        if count >= n {
            return Ok(());
        }
        fleet.check()?;
        if Instant::now() > deadline {
            bail!("only {count} of {n} runners connected within {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn expect_all(http: &reqwest::Client, api: &str, n: usize) -> Result<()> {
    let count = sessions(http, api).await;
    if count != n {
        bail!("{count} of {n} runners connected after the idle period");
    }
    Ok(())
}

/// Each runner holds one socket here and the server one: the soft limit must allow both.
fn check_open_files(n: usize) -> Result<()> {
    let limits = std::fs::read_to_string("/proc/self/limits")?;
    let soft = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(usize::MAX);
    if soft < n + 1024 {
        bail!(
            "open files limit {soft} is too low for {n} runners: run `ulimit -n {}` first (scripts/bench_tunnel.sh does)",
            n + 4096
        );
    }
    Ok(())
}
