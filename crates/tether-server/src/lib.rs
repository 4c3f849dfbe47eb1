//! Tether's control plane: the REST API, authorization wiring, audit, and startup checks.
//!
//! `start` opens the store, loads the installation keys, builds the authorizer from the stored
//! tuples, bootstraps a fresh installation, and serves the router over TLS 1.3 (or plain HTTP on
//! loopback in dev mode).

pub mod auth;
pub mod authz;
pub mod backends;
pub mod bootstrap;
pub mod changes;
pub mod config;
pub mod dek_cache;
pub mod error;
pub mod kek;
pub mod kek_ops;
pub mod keys;
pub mod kinds;
pub mod model;
pub mod moves;
pub mod reqlog;
pub mod resources;
pub mod routes;
pub mod secret_batch;
pub mod secret_ops;
pub mod secrets;
pub mod serve;
pub mod state;
pub mod tokens;
pub mod tunnel;
pub mod unseal;
pub mod writer;

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tether_core::{Clock, SystemClock};
use tether_store::{Store, StoreOptions};

pub use config::{CliOptions, Config, ConfigError};
pub use routes::app;
pub use state::AppState;

/// A startup failure with a message for the operator.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Configuration.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Database.
    #[error("database: {0}")]
    Store(#[from] tether_store::StoreError),
    /// Keys.
    #[error(transparent)]
    Keys(#[from] keys::KeyError),
    /// Anything else.
    #[error("{0}")]
    Other(String),
}

/// What a fresh installation printed once.
pub struct Bootstrapped {
    /// The root API key of the admin user (shown once).
    pub root_api_key: Option<String>,
}

/// A running server.
pub struct Running {
    /// The bound address.
    pub addr: SocketAddr,
    /// The application state.
    pub state: AppState,
    /// What bootstrap produced.
    pub bootstrap: Bootstrapped,
    /// The serving task.
    pub task: tokio::task::JoinHandle<()>,
    /// The tunnel endpoint runners dial (`https://host:port`).
    pub tunnel_endpoint: String,
}

fn metrics_handle() -> Option<PrometheusHandle> {
    static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new().build_recorder();
            let handle = recorder.handle();
            metrics::set_global_recorder(recorder).ok().map(|()| handle)
        })
        .clone()
}

/// Installs the process-wide crypto provider (aws-lc-rs). Safe to call more than once.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

/// Builds the state from a configuration.
pub async fn build_state(config: &Config, clock: Arc<dyn Clock>) -> Result<AppState, StartError> {
    install_crypto_provider();
    // The recorder first: handles taken before it is installed would record nothing.
    let metrics = metrics_handle();
    let opts = StoreOptions {
        create_sqlite: config.create_sqlite,
        sqlite_synchronous: if config.sqlite_fsync_every_commit {
            "FULL"
        } else {
            "NORMAL"
        },
        ..StoreOptions::default()
    };
    let store = Store::open(config.database_url(), &opts).await?;
    let providers = kek::Providers::from_env().map_err(StartError::Other)?;
    let (root, seal) = keys::load_root_key(&config.root_key, &store, &providers).await?;
    let installation = keys::load_installation_keys(&store, &root).await?;
    // The changelog position is taken before the state it keeps current is loaded.
    let feed = store.change_feed().await?.map(changes::Feed::new);
    let tuples = store.all_tuples().await?;
    let authz = authz::EmbeddedAuthorizer::new(&tuples).map_err(StartError::Other)?;
    let reqlog = reqlog::start(store.clone(), &config.request_log);
    let tunnel = tunnel::Tunnel::load(
        &store,
        &root,
        clock.now_millis(),
        config.tunnel.heartbeat_ms,
    )
    .await
    .map_err(|e| StartError::Other(e.to_string()))?;
    let inner = state::Inner {
        store,
        authz: Arc::new(authz),
        clock,
        pepper: installation.pepper,
        jwt: installation.jwt,
        keys: auth::KeyCache::default(),
        reqlog,
        metrics,
        max_body_bytes: config.max_body_bytes,
        public_url: config.public_url.clone(),
        secrets: secrets::SecretKeys::new(root, seal, providers, config.secret_limits),
        tunnel,
        writer: writer::Writer::start()
            .map_err(|e| StartError::Other(format!("cannot start the writer thread: {e}")))?,
        version_queue: secret_batch::Queue::default(),
        change_feed: tokio::sync::Mutex::new(feed),
        patches: secret_ops::PatchLocks::default(),
    };
    Ok(AppState(Arc::new(inner)))
}

/// Starts a server: state, bootstrap, listener, serving task.
pub async fn start(config: Config) -> Result<Running, StartError> {
    let state = build_state(&config, Arc::new(SystemClock)).await?;
    let bootstrap = bootstrap::bootstrap(&state, config.dev).await?;
    auth::spawn_usage_flusher(state.clone());
    secrets::spawn_dek_expiry(state.clone());
    changes::spawn(state.clone());
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|e| StartError::Other(format!("cannot listen on {}: {e}", config.listen)))?;
    let addr = listener
        .local_addr()
        .map_err(|e| StartError::Other(e.to_string()))?;
    let router = app(state.clone());
    let tls = match &config.tls {
        Some(tls) => Some(serve::tls_acceptor(tls).map_err(StartError::Other)?),
        None => None,
    };
    let task = tokio::spawn(serve::serve(listener, tls, router, config.header_timeout));
    let tunnel_endpoint = start_tunnel(&config, &state, addr).await?;
    Ok(Running {
        addr,
        state,
        bootstrap,
        task,
        tunnel_endpoint,
    })
}

/// Binds the tunnel listener, records the endpoints put in runner credentials, and serves.
async fn start_tunnel(
    config: &Config,
    state: &AppState,
    api_addr: SocketAddr,
) -> Result<String, StartError> {
    let listen = config.tunnel.listen;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| StartError::Other(format!("cannot listen on {listen} (tunnel): {e}")))?;
    let bound = listener
        .local_addr()
        .map_err(|e| StartError::Other(e.to_string()))?;
    let tunnel_url = config
        .tunnel
        .public_url
        .clone()
        .unwrap_or_else(|| format!("https://{bound}"));
    let api = if config.public_url.ends_with(":0") {
        let scheme = if config.tls.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{api_addr}")
    } else {
        config.public_url.clone()
    };
    let mut names = vec!["localhost".to_owned(), bound.ip().to_string()];
    if let Some(host) = url_host(&tunnel_url) {
        names.push(host);
    }
    names.sort();
    names.dedup();
    let endpoints = tunnel::Endpoints {
        api,
        tunnel: tunnel_url.clone(),
        names,
    };
    state
        .tunnel
        .set_endpoints(endpoints, state.clock.now_millis())
        .map_err(|e| StartError::Other(e.to_string()))?;
    tunnel::serve::spawn(listener, state.clone());
    Ok(tunnel_url)
}

/// The host of `https://host:port` (brackets removed from IPv6).
fn url_host(url: &str) -> Option<String> {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split('/').next()?;
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next()?,
        None => authority.rsplit_once(':').map_or(authority, |(h, _)| h),
    };
    (!host.is_empty()).then(|| host.to_owned())
}
