//! Shared application state, passed to every handler (no global singletons).

use std::sync::Arc;

use metrics_exporter_prometheus::PrometheusHandle;
use tether_core::Clock;
use tether_crypto::Pepper;
use tether_store::Store;

use crate::auth::KeyCache;
use crate::authz::Authorizer;
use crate::reqlog::RequestLogSink;
use crate::tokens::JwtKeys;

/// Everything a handler may need.
#[derive(Clone)]
pub struct AppState(pub Arc<Inner>);

/// The inside of [`AppState`].
pub struct Inner {
    /// The database.
    pub store: Store,
    /// The authorization decision point.
    pub authz: Arc<dyn Authorizer>,
    /// Time.
    pub clock: Arc<dyn Clock>,
    /// The API-key pepper.
    pub pepper: Pepper,
    /// JWT signing keys.
    pub jwt: JwtKeys,
    /// Verified API keys, with batched `last_used_at`.
    pub keys: KeyCache,
    /// The request log queue.
    pub reqlog: RequestLogSink,
    /// Prometheus metrics.
    pub metrics: Option<PrometheusHandle>,
    /// Maximum request body size.
    pub max_body_bytes: usize,
    /// Public URL.
    pub public_url: String,
    /// Keys for secrets: organization KEKs and the DEK cache.
    pub secrets: crate::secrets::SecretKeys,
    /// The runner tunnel: CA, active serials, live sessions.
    pub tunnel: crate::tunnel::Tunnel,
    /// The thread that runs write transactions.
    pub writer: crate::writer::Writer,
    /// The group-commit queue of secret version writes.
    pub version_queue: crate::secret_batch::Queue,
    /// This server's position in the changelog of other servers' writes (PostgreSQL).
    pub change_feed: tokio::sync::Mutex<Option<crate::changes::Feed>>,
    /// Patches of one secret on this server run one at a time.
    pub patches: crate::secret_ops::PatchLocks,
}

impl std::ops::Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}
