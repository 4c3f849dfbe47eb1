//! Authentication: every request carries exactly one credential, an API key or a session access
//! token, in `Authorization: Bearer ...`. API keys are verified against their keyed hash and the
//! verified result is cached briefly; `last_used_at` is recorded in batches.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

use serde::Serialize;
use tether_core::{ErrorCode, Kind};
use tether_crypto::{ApiKey, ApiKeyHash, VerifiedSecret};
use tether_store::resources::get_resource;

use crate::error::{AppError, AppResult};
use crate::state::AppState;

/// How a principal authenticated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "method", rename_all = "snake_case")]
pub enum AuthVia {
    /// An API key, by its public id.
    ApiKey {
        /// The key id.
        key_id: String,
    },
    /// A session access token.
    Session {
        /// The token id.
        token_id: String,
    },
}

/// The authenticated caller.
#[derive(Debug, Clone, Serialize)]
pub struct Principal {
    /// Resource id of the user or service account.
    pub id: String,
    /// `User` or `ServiceAccount`.
    pub kind: Kind,
    /// Its name.
    pub name: String,
    /// Its organization's id.
    pub org_id: String,
    /// Its organization's name.
    pub org: String,
    /// How it authenticated.
    pub via: AuthVia,
    /// Operation scopes of the credential (empty: all of the principal's permissions).
    pub scopes: Vec<String>,
}

impl Principal {
    /// The authorization subject, `user:{id}` or `service_account:{id}`.
    pub fn subject(&self) -> String {
        [subject_type(self.kind), ":", &self.id].concat()
    }

    /// A readable name for logs and audit records: `user:alice@default`.
    pub fn display(&self) -> String {
        [subject_type(self.kind), ":", &self.name, "@", &self.org].concat()
    }

    /// Whether the credential's scopes allow a relation.
    pub fn scope_allows(&self, relation: &str) -> bool {
        self.scopes.is_empty() || self.scopes.iter().any(|s| s == relation)
    }
}

/// The authorization type name of a principal kind.
pub fn subject_type(kind: Kind) -> &'static str {
    match kind {
        Kind::ServiceAccount => "service_account",
        _ => "user",
    }
}

struct CachedKey {
    /// The secret that matched the stored hash: a later request is checked against it in
    /// constant time, without the HMAC.
    secret: VerifiedSecret,
    principal: Arc<Principal>,
    expires_at: Option<i64>,
    cached_at: i64,
}

/// Verified API keys (by key id) and pending `last_used_at` updates.
#[derive(Default)]
pub struct KeyCache {
    keys: RwLock<HashMap<String, CachedKey>>,
    usage: Mutex<HashMap<String, i64>>,
}

/// How long a cached key is trusted before it is re-read (bounds revocation lag across nodes).
const KEY_CACHE_TTL_MS: i64 = 30_000;

impl KeyCache {
    /// Forgets a key (after revocation).
    pub fn forget(&self, key_id: &str) {
        if let Ok(mut k) = self.keys.write() {
            k.remove(key_id);
        }
    }

    /// Forgets every key of a principal (after deletion).
    pub fn forget_owner(&self, owner_id: &str) {
        if let Ok(mut k) = self.keys.write() {
            k.retain(|_, v| v.principal.id != owner_id);
        }
    }

    fn record_use(&self, key_id: &str, at: i64) {
        if let Ok(mut u) = self.usage.lock() {
            match u.get_mut(key_id) {
                Some(last) => *last = at,
                None => {
                    u.insert(key_id.to_owned(), at);
                }
            }
        }
    }

    /// Takes the pending `last_used_at` updates.
    pub fn drain_usage(&self) -> Vec<(String, i64)> {
        match self.usage.lock() {
            Ok(mut u) => u.drain().collect(),
            Err(_) => Vec::new(),
        }
    }
}

fn bad_credentials() -> AppError {
    AppError::new(ErrorCode::InvalidCredentials, "the credential is not valid")
}

/// Authenticates a bearer credential.
pub async fn authenticate(state: &AppState, bearer: &str) -> AppResult<Arc<Principal>> {
    if bearer.starts_with("tk_") {
        return authenticate_api_key(state, bearer).await;
    }
    Ok(Arc::new(
        Box::pin(crate::tokens::verify_access_token(state, bearer)).await?,
    ))
}

async fn authenticate_api_key(state: &AppState, presented: &str) -> AppResult<Arc<Principal>> {
    let parsed = ApiKey::parse(presented).map_err(|_| bad_credentials())?;
    let key_id = parsed.id().as_str().to_owned();
    let now = state.clock.now_millis();
    if let Some(p) = cached(state, &key_id, &parsed, now)? {
        state.keys.record_use(&key_id, now);
        return Ok(p);
    }
    // Boxed: the lookups' futures are large, and every request's future would carry them.
    Box::pin(authenticate_stored_key(state, &parsed, key_id, now)).await
}

/// Authenticates an API key that is not cached, from its stored row, and caches it.
async fn authenticate_stored_key(
    state: &AppState,
    parsed: &tether_crypto::ParsedApiKey,
    key_id: String,
    now: i64,
) -> AppResult<Arc<Principal>> {
    let row = state
        .store
        .api_key(&key_id)
        .await?
        .ok_or_else(bad_credentials)?;
    let hash = ApiKeyHash::from_bytes(&row.hash)
        .map_err(|_| AppError::internal("stored key hash has a bad length"))?;
    let secret = match state.pepper.verify_and_keep(parsed.secret(), &hash) {
        Some(s) if row.revoked_at.is_none() => s,
        _ => return Err(bad_credentials()),
    };
    if row.expires_at.is_some_and(|e| e <= now) {
        return Err(AppError::new(
            ErrorCode::TokenExpired,
            "the API key has expired",
        ));
    }
    let scopes: Vec<String> = serde_json::from_str(&row.scopes).unwrap_or_default();
    let via = AuthVia::ApiKey {
        key_id: key_id.clone(),
    };
    let principal = Arc::new(load_principal(state, &row.owner_id, via, scopes).await?);
    if let Ok(mut k) = state.keys.keys.write() {
        let entry = CachedKey {
            secret,
            principal: Arc::clone(&principal),
            expires_at: row.expires_at,
            cached_at: now,
        };
        k.insert(key_id.clone(), entry);
    }
    state.keys.record_use(&key_id, now);
    Ok(principal)
}

fn cached(
    state: &AppState,
    key_id: &str,
    parsed: &tether_crypto::ParsedApiKey,
    now: i64,
) -> AppResult<Option<Arc<Principal>>> {
    let Ok(keys) = state.keys.keys.read() else {
        return Ok(None);
    };
    let Some(entry) = keys.get(key_id) else {
        return Ok(None);
    };
    if now - entry.cached_at > KEY_CACHE_TTL_MS {
        return Ok(None);
    }
    if !entry.secret.matches(parsed.secret()) {
        return Err(bad_credentials());
    }
    if entry.expires_at.is_some_and(|e| e <= now) {
        return Err(AppError::new(
            ErrorCode::TokenExpired,
            "the API key has expired",
        ));
    }
    Ok(Some(Arc::clone(&entry.principal)))
}

/// Loads the user or service account behind a credential. A deleted or disabled principal no
/// longer authenticates.
pub async fn load_principal(
    state: &AppState,
    owner_id: &str,
    via: AuthVia,
    scopes: Vec<String>,
) -> AppResult<Principal> {
    let row = get_resource(state.store.reader(), owner_id)
        .await?
        .ok_or_else(bad_credentials)?;
    let kind = Kind::parse(&row.kind)
        .filter(|k| matches!(k, Kind::User | Kind::ServiceAccount))
        .ok_or_else(bad_credentials)?;
    let spec: serde_json::Value = serde_json::from_str(&row.spec).unwrap_or_default();
    if spec.get("disabled").and_then(serde_json::Value::as_bool) == Some(true) {
        return Err(bad_credentials());
    }
    let org = get_resource(state.store.reader(), &row.org_id)
        .await?
        .ok_or_else(bad_credentials)?;
    Ok(Principal {
        id: row.id,
        kind,
        name: row.name,
        org_id: org.id,
        org: org.name,
        via,
        scopes,
    })
}

/// Flushes batched `last_used_at` updates every few seconds.
pub fn spawn_usage_flusher(state: AppState) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(2));
        loop {
            tick.tick().await;
            flush_usage(&state).await;
        }
    })
}

/// Writes pending `last_used_at` updates now.
pub async fn flush_usage(state: &AppState) {
    let batch = state.keys.drain_usage();
    if batch.is_empty() {
        return;
    }
    if let Err(e) = state.store.touch_api_keys(&batch).await {
        tracing::warn!(error = %e, "could not record API key use");
    }
}
