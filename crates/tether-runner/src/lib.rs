//! The Tether runner: it dials the control plane over one outbound HTTP/2 connection with
//! mTLS (TLS 1.3), optionally through an HTTP CONNECT proxy, and runs the typed operations it
//! is sent. It never listens on a socket, and links no storage or server code.
//!
//! Startup has two phases: (1) the tunnel handshake up to the server's Ack (a revoked runner
//! certificate only fails here, at the first read, in TLS 1.3), then (2) `whoami` with the API
//! key. Either failing stops the runner with a one-line message and a non-zero exit code.
//! After that, transient failures reconnect with jittered exponential backoff, reset after a
//! healthy session; fatal ones (revoked, expired, unknown CA, revoked key) stop it.

pub mod backoff;
pub mod config;
pub mod connector;
pub mod credentials;
pub mod error;
pub mod exec;
pub mod session;
pub mod whoami;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tether_core::clock::Clock;
use tokio::time::Instant;

pub use config::RunnerConfig;
pub use credentials::{Credentials, CredentialsSource};
pub use error::{FatalCause, RunnerError};

use backoff::Backoff;
use connector::{ProxyRoute, TunnelConnector};
use session::Dialer;

/// What `run` needs.
pub struct RunnerOptions {
    /// The loaded credentials.
    pub credentials: Credentials,
    /// The local configuration.
    pub config: RunnerConfig,
    /// The proxy for the tunnel, from [`connector::proxy_route`].
    pub proxy: Option<ProxyRoute>,
    /// The wall clock.
    pub clock: Arc<dyn Clock>,
}

/// Runs the runner until `shutdown` completes (Ok) or a fatal error.
pub async fn run(
    opts: RunnerOptions,
    shutdown: impl Future<Output = ()>,
) -> Result<(), RunnerError> {
    let creds = Arc::new(opts.credentials);
    if creds.certificate_not_after.saturating_mul(1000) <= opts.clock.now_millis() {
        return Err(RunnerError::Fatal(FatalCause::CertificateExpired));
    }
    let cfg = Arc::new(opts.config);
    let t = &cfg.tunnel;
    let connector = TunnelConnector::new(
        creds.tunnel_endpoint.clone(),
        creds.tls_config()?,
        opts.proxy,
        Duration::from_secs(t.connect_timeout_secs),
    )?;
    let dialer = Dialer {
        creds: creds.clone(),
        cfg: cfg.clone(),
        connector,
        clock: opts.clock,
    };
    let mut backoff = Backoff::new(
        Duration::from_millis(t.backoff_initial_ms),
        Duration::from_millis(t.backoff_max_ms),
    );
    let healthy_after = Duration::from_secs(t.healthy_after_secs);
    let started = Instant::now();
    let mut shutdown = std::pin::pin!(shutdown);
    let mut started_up = false;
    loop {
        let attempt = tokio::select! {
            () = &mut shutdown => return Ok(()),
            r = dialer.open() => r,
        };
        match attempt {
            Ok(session) => {
                tracing::info!(session = %session.ack.session_id, "tunnel connected (Ack received)");
                if !started_up {
                    let me = whoami::whoami(&creds).await?;
                    tracing::info!(principal = %me.get("id").unwrap_or(&me), "whoami succeeded");
                    started_up = true;
                }
                let connected_at = Instant::now();
                let ended = session.run(cfg.clone(), &mut shutdown).await;
                if connected_at.elapsed() >= healthy_after {
                    backoff.reset();
                }
                match ended {
                    Ok(()) => return Ok(()),
                    Err(e) if e.is_transient() => {
                        tracing::warn!(error = %e, "tunnel lost; reconnecting")
                    }
                    Err(e) => return Err(e),
                }
            }
            Err(e) if !e.is_transient() => return Err(e),
            Err(e) if !started_up && started.elapsed() >= t.startup_timeout() => {
                return Err(RunnerError::Unreachable(e.to_string()));
            }
            Err(e) => tracing::warn!(error = %e, "tunnel connect failed; retrying"),
        }
        let delay = backoff.next_delay();
        tokio::select! {
            () = &mut shutdown => return Ok(()),
            () = tokio::time::sleep(delay) => {}
        }
    }
}
