//! `tether-runner`: the agent binary.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use tether_core::clock::SystemClock;
use tether_runner::{RunnerConfig, RunnerError, RunnerOptions, connector, credentials};

/// The Tether runner: dials the control plane and runs the operations it sends.
#[derive(Debug, Parser)]
#[command(name = "tether-runner", version)]
struct Args {
    /// Credentials document (else TETHER_RUNNER_CREDENTIALS_FILE, TETHER_RUNNER_CREDENTIALS,
    /// then $XDG_CONFIG_HOME/tether/runner-credentials.json).
    #[arg(long)]
    credentials_file: Option<PathBuf>,
    /// Local configuration (TOML); else $XDG_CONFIG_HOME/tether/runner.toml if it exists.
    #[arg(long, env = "TETHER_RUNNER_CONFIG")]
    config: Option<PathBuf>,
    /// Log as JSON lines.
    #[arg(long)]
    log_json: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    init_logging(args.log_json);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tether-runner: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(start(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tether-runner: {}", e.one_line());
            ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(1))
        }
    }
}

async fn start(args: Args) -> Result<(), RunnerError> {
    let env = |k: &str| std::env::var(k).ok();
    let (credentials, source) = credentials::load(args.credentials_file.as_deref(), &env)?;
    tracing::info!(?source, org = %credentials.org, runner = %credentials.runner, "credentials loaded");
    let config = RunnerConfig::load(args.config.as_deref(), &env)?;
    let proxy = connector::proxy_route(&credentials.tunnel_endpoint, &env)?;
    if let Some(p) = &proxy {
        tracing::info!(proxy = ?p, "tunnel goes through an HTTP CONNECT proxy");
    }
    let opts = RunnerOptions {
        credentials,
        config,
        proxy,
        clock: Arc::new(SystemClock),
    };
    tether_runner::run(opts, shutdown_signal()).await
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

fn init_logging(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("TETHER_RUNNER_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}
