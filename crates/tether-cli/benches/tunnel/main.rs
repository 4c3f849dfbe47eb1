//! Runner tunnel benchmarks (issue #6). Real work only: TLS 1.3 mTLS on loopback, the tonic
//! bidi stream, the server's hub and the `tether-runner` library's session.
//!
//! ```text
//! cargo bench -p tether-cli --bench tunnel -- [roundtrip|scale|all]
//!     [--iters 20000] [--http-iters 5000] [--runners 2000] [--idle-secs 20]
//! ```
//! (`scripts/bench_tunnel.sh` builds and runs it.)
//!
//! * `roundtrip`: a server (`tether_server::start`, dev mode, temp SQLite) and one runner
//!   (`tether_runner::run`) in this process. `runner.ping` is sent through `Hub::call`, the call
//!   `POST /v1/orgs/{org}/runners/{name}/operations` makes, at concurrency 1 and 64; then the
//!   same through the HTTP route (API-key auth, guard, request log) for comparison.
//! * `scale`: the real `tether server --dev` binary as a child process, N runners (each its
//!   own certificate and tunnel session) in this process. Server RSS with and without the idle
//!   runners, then a server restart (same data, same tunnel port) and the reconnect curve.

mod roundtrip;
mod scale;
mod server;

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail};

/// The allocator of the `tether` binary, so that the server measured here allocates as it does
/// in production (glibc's arenas take a lock when one thread frees what another allocated,
/// which a message crossing the tunnel always does).
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Command-line options.
#[derive(Debug, Clone)]
pub struct Options {
    mode: String,
    /// Operations per concurrency level through the hub.
    pub iters: usize,
    /// Operations per concurrency level through HTTP.
    pub http_iters: usize,
    /// Simulated runners.
    pub runners: usize,
    /// How long the runners stay idle before RSS is read.
    pub idle: Duration,
    /// Concurrency levels of the round-trip series.
    pub levels: Vec<usize>,
}

impl Options {
    fn parse(args: impl Iterator<Item = String>) -> Result<Self> {
        let mut o = Options {
            mode: "all".into(),
            iters: 20_000,
            http_iters: 5_000,
            runners: 2_000,
            idle: Duration::from_secs(20),
            levels: vec![1, 64],
        };
        let mut args = args.skip(1);
        while let Some(a) = args.next() {
            let mut num = |name: &str| -> Result<usize> {
                let v = args
                    .next()
                    .with_context(|| format!("{name} needs a value"))?;
                v.parse()
                    .with_context(|| format!("{name}: not a number: {v}"))
            };
            match a.as_str() {
                "--iters" => o.iters = num("--iters")?,
                "--http-iters" => o.http_iters = num("--http-iters")?,
                "--runners" => o.runners = num("--runners")?,
                "--idle-secs" => o.idle = Duration::from_secs(num("--idle-secs")? as u64),
                "--levels" => {
                    let v = args.next().context("--levels needs a value")?;
                    o.levels = v
                        .split(',')
                        .map(|n| n.trim().parse().context("--levels: not a number"))
                        .collect::<Result<_>>()?;
                }
                // Passed by `cargo bench`.
                "--bench" => {}
                m @ ("roundtrip" | "scale" | "all") => o.mode = m.to_owned(),
                other => bail!("unknown argument {other}"),
            }
        }
        Ok(o)
    }
}

/// Latency summary of one series.
pub struct Summary {
    /// Operations.
    pub n: usize,
    /// Percentiles in µs: p50, p90, p99, max.
    pub p: [f64; 4],
    /// Operations per second over the wall time of the series.
    pub per_sec: f64,
    /// CPU time of this whole process (callers, server, runner) per operation, µs.
    pub cpu_us: f64,
}

impl Summary {
    /// Summarizes `samples` (ns) taken over `wall`, which used `cpu` of process time.
    pub fn of(mut samples: Vec<u64>, wall: Duration, cpu: Duration) -> Summary {
        samples.sort_unstable();
        let at = |q: f64| {
            let idx = (q * (samples.len().saturating_sub(1)) as f64).round() as usize;
            samples.get(idx).copied().unwrap_or_default() as f64 / 1000.0
        };
        Summary {
            n: samples.len(),
            p: [at(0.50), at(0.90), at(0.99), at(1.0)],
            per_sec: samples.len() as f64 / wall.as_secs_f64().max(1e-9),
            cpu_us: cpu.as_secs_f64() * 1e6 / samples.len().max(1) as f64,
        }
    }

    /// One table row.
    pub fn row(&self, label: &str) -> String {
        let [p50, p90, p99, max] = self.p;
        format!(
            "{label:<34} {:>7} {p50:>9.1} {p90:>9.1} {p99:>9.1} {max:>10.1} {:>10.0} {:>9.1}",
            self.n, self.per_sec, self.cpu_us
        )
    }

    /// The table header.
    pub fn header() -> String {
        format!(
            "{:<34} {:>7} {:>9} {:>9} {:>9} {:>10} {:>10} {:>9}",
            "series", "ops", "p50 µs", "p90 µs", "p99 µs", "max µs", "ops/s", "CPU µs/op"
        )
    }
}

/// User + system CPU time of this process so far (`/proc/self/stat`, 10 ms ticks).
pub fn process_cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let rest = stat.rsplit_once(") ").map_or("", |(_, r)| r);
    let ticks: u64 = rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|v| v.parse::<u64>().ok())
        .sum();
    Duration::from_millis(ticks * 10)
}

fn main() -> ExitCode {
    let opts = match Options::parse(std::env::args()) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("tunnel bench: {e:#}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tunnel bench: runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(opts)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tunnel bench failed: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(opts: Options) -> Result<()> {
    tether_server::install_crypto_provider();
    println!("machine: {} cores; {}", cores(), server::uptime());
    if matches!(opts.mode.as_str(), "roundtrip" | "all") {
        roundtrip::run(&opts).await?;
    }
    if matches!(opts.mode.as_str(), "scale" | "all") {
        scale::run(&opts).await?;
    }
    println!("end: {}", server::uptime());
    Ok(())
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}
