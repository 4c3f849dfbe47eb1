//! `runner.ping` round trips through one runner's tunnel, at concurrency 1 and 64.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use serde_json::{Value, json};
use tether_core::clock::SystemClock;
use tether_proto::tunnel::{OperationRequest, operation_output, operation_result::Outcome};
use tether_runner::{Credentials, RunnerConfig, RunnerOptions};
use tether_server::tunnel::hub::Hub;
use tether_server::{AppState, CliOptions, Config};
use tokio::sync::watch;

use crate::{Options, Summary, process_cpu};

/// Warm-up operations before each series.
const WARMUP: usize = 2_000;

/// Where a ping goes.
#[derive(Clone)]
struct Target {
    org_id: String,
    runner_id: String,
}

/// Runs the round-trip series and prints a table.
pub async fn run(opts: &Options) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let cli = CliOptions {
        config_file: None,
        dev: true,
        listen: Some("127.0.0.1:0".parse()?),
        data_dir: Some(dir.path().to_path_buf()),
        database_url: None,
    };
    let config = Config::resolve(&cli).map_err(|e| anyhow!("config: {e}"))?;
    let running = tether_server::start(config)
        .await
        .map_err(|e| anyhow!("server: {e}"))?;
    let key = running
        .bootstrap
        .root_api_key
        .clone()
        .context("no root key")?;
    let api = format!("http://{}", running.addr);
    let http = reqwest::Client::new();
    let doc = crate::server::register(&http, &api, &key, "bench").await?;
    let credentials = Credentials::parse(&doc.to_string()).map_err(|e| anyhow!("{e}"))?;
    let target = Target {
        org_id: credentials.org_id.clone(),
        runner_id: credentials.runner_id.clone(),
    };
    let (stop, stopped) = watch::channel(false);
    let runner = tokio::spawn(tether_runner::run(
        RunnerOptions {
            credentials,
            config: RunnerConfig::default(),
            proxy: None,
            clock: Arc::new(SystemClock),
        },
        async move {
            let mut stopped = stopped;
            let _ = stopped.wait_for(|s| *s).await;
        },
    ));
    let hub = &running.state.tunnel.hub;
    let deadline = Instant::now() + Duration::from_secs(30);
    while hub.session(&target.runner_id).is_none() {
        if Instant::now() > deadline || runner.is_finished() {
            bail!("the runner did not connect");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    println!();
    println!(
        "== runner.ping round trip, one runner, loopback TLS 1.3 mTLS tunnel (server and runner in this process)"
    );
    println!("{}", Summary::header());
    for &c in &opts.levels {
        series(&running.state, &target, c, WARMUP).await?;
        let s = series(&running.state, &target, c, opts.iters).await?;
        println!("{}", s.row(&format!("Hub::call, concurrency {c}")));
    }
    for &c in &opts.levels {
        let url = format!("{api}/v1/orgs/default/runners/bench/operations");
        // One keep-alive client per task, made and connected in the warm-up, so the series
        // measures requests and not connection setup.
        let clients: Vec<reqwest::Client> = (0..c).map(|_| reqwest::Client::new()).collect();
        http_series(&url, &key, &clients, WARMUP.min(opts.http_iters)).await?;
        let s = http_series(&url, &key, &clients, opts.http_iters).await?;
        println!("{}", s.row(&format!("HTTP POST .../operations, conc. {c}")));
    }
    let _ = stop.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(5), runner).await;
    running.task.abort();
    Ok(())
}

/// `total` pings spread over `conc` tasks that each wait for their answer before the next.
async fn series(state: &AppState, target: &Target, conc: usize, total: usize) -> Result<Summary> {
    let per = total.div_ceil(conc);
    let (started, cpu) = (Instant::now(), process_cpu());
    let workers = (0..conc).map(|_| {
        let (state, target) = (state.clone(), target.clone());
        async move {
            let mut samples = Vec::with_capacity(per);
            for _ in 0..per {
                let t = Instant::now();
                ping(&state.tunnel.hub, &target).await?;
                samples.push(t.elapsed().as_nanos() as u64);
            }
            Ok::<_, anyhow::Error>(samples)
        }
    });
    let all = join_all(workers).await?;
    Ok(Summary::of(all, started.elapsed(), process_cpu() - cpu))
}

async fn ping(hub: &Hub, target: &Target) -> Result<()> {
    let wait = Duration::from_secs(5);
    let (result, _) = hub
        .call(
            &target.org_id,
            &target.runner_id,
            OperationRequest::ping(),
            wait,
        )
        .await
        .map_err(|e| anyhow!("ping: {e:?}"))?;
    match result.outcome {
        Some(Outcome::Output(o)) if matches!(o.kind, Some(operation_output::Kind::Pong(_))) => {
            Ok(())
        }
        other => bail!("ping: unexpected answer {other:?}"),
    }
}

/// The same through the HTTP route, one task per client (each keeps its connection).
async fn http_series(
    url: &str,
    key: &str,
    clients: &[reqwest::Client],
    total: usize,
) -> Result<Summary> {
    let per = total.div_ceil(clients.len().max(1));
    let body = json!({"operation": {"type": "runner.ping"}, "timeout_secs": 5});
    let (started, cpu) = (Instant::now(), process_cpu());
    let workers = clients.iter().map(|http| {
        let (url, key, body) = (url.to_owned(), key.to_owned(), body.clone());
        let http = http.clone();
        async move {
            let mut samples = Vec::with_capacity(per);
            for _ in 0..per {
                let t = Instant::now();
                let res = http.post(&url).bearer_auth(&key).json(&body).send().await?;
                let status = res.status();
                let doc: Value = res.json().await?;
                if !status.is_success() || doc.pointer("/output/pong").is_none() {
                    bail!("HTTP ping: {status} {doc}");
                }
                samples.push(t.elapsed().as_nanos() as u64);
            }
            Ok::<_, anyhow::Error>(samples)
        }
    });
    let all = join_all(workers).await?;
    Ok(Summary::of(all, started.elapsed(), process_cpu() - cpu))
}

/// Spawns each worker as its own task (as each HTTP request is) and concatenates their samples.
async fn join_all<F>(futs: impl Iterator<Item = F>) -> Result<Vec<u64>>
where
    F: std::future::Future<Output = Result<Vec<u64>>> + Send + 'static,
{
    let mut set = tokio::task::JoinSet::new();
    for f in futs {
        set.spawn(f);
    }
    let mut out = Vec::new();
    while let Some(done) = set.join_next().await {
        out.extend(done??);
    }
    Ok(out)
}
