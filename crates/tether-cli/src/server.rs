//! `tether server`.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Result, anyhow};
use clap::Args;
use tether_server::{CliOptions, Config};

/// Options of `tether server`.
#[derive(Args, Debug)]
pub struct ServerArgs {
    /// Development mode: embedded SQLite in the data directory, plain HTTP on loopback, a
    /// `default` org with a `dev` environment and an admin whose root API key is printed once.
    #[arg(long)]
    pub dev: bool,
    /// Listen address (default 127.0.0.1:8420).
    #[arg(long, env = "TETHER_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Where dev mode keeps its database and root key (default: the working directory).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// `sqlite:///path/tether.db` or `postgres://...` (or TETHER_DATABASE_URL[_FILE]).
    #[arg(long)]
    pub database_url: Option<String>,
    /// A TOML configuration file (or TETHER_CONFIG).
    #[arg(long)]
    pub config: Option<PathBuf>,
}

fn init_logging() -> Result<crate::log_writer::LogGuard> {
    let filter = tracing_subscriber::EnvFilter::try_from_env("TETHER_LOG").unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new("info,sqlx=warn,hyper=warn,tower_http=warn")
    });
    let (writer, guard) = crate::log_writer::stderr_writer()?;
    let _ = tracing_subscriber::fmt()
        .event_format(crate::log_format::JsonLines)
        .with_env_filter(filter)
        .with_writer(writer)
        .try_init();
    Ok(guard)
}

/// Runs the server until SIGINT or SIGTERM.
pub async fn run(args: ServerArgs) -> Result<()> {
    let _log = init_logging()?;
    let cli = CliOptions {
        config_file: args.config,
        dev: args.dev,
        listen: args.listen,
        data_dir: args.data_dir,
        database_url: args.database_url,
    };
    let config = Config::resolve(&cli).map_err(|e| anyhow!("{e}"))?;
    let dev = config.dev;
    let scheme = if config.tls.is_some() {
        "https"
    } else {
        "http"
    };
    let running = tether_server::start(config)
        .await
        .map_err(|e| anyhow!("{e}"))?;
    let addr = format!("{scheme}://{}", running.addr);
    if let Some(key) = &running.bootstrap.root_api_key {
        let what = if dev { ", environment 'dev'" } else { "" };
        println!("A new installation: organization 'default', user 'admin'{what}.");
        println!("The admin's root API key is shown once; store it now:");
        println!();
        println!("    export TETHER_ADDR={addr}");
        println!("    export TETHER_TOKEN={key}");
        println!();
    }
    let mode = if dev { " (dev mode)" } else { "" };
    println!("Tunnel listening on {}", running.tunnel_endpoint);
    println!("Tether server listening on {addr}{mode}");
    wait_for_shutdown().await;
    running.state.reqlog.flush().await;
    tether_server::auth::flush_usage(&running.state).await;
    running.state.store.close().await;
    Ok(())
}

async fn wait_for_shutdown() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(t) => t,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
}
