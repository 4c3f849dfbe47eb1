//! The secrets engine: per-organization KEKs wrapped by the root key, a fresh AES-256 data key
//! per secret version bound to its row by the AAD `tether:v1:{org}:{env|-}:{secret}:{version}`,
//! and a bounded, short-lived DEK cache so repeated reads do not unwrap again.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use tether_core::ErrorCode;
use tether_crypto::envelope::{Envelope, seal_with_dek};
use tether_crypto::{Aad, DataKey, KekError, KekRef, LocalKek, OrgKek, RootKey, WrappedDek};
use tether_store::secrets::{OrgKekRow, active_kek, insert_kek};
use tether_store::{Store, StoreError};
use zeroize::Zeroizing;

use crate::dek_cache::{DekCache, DekKey};
use crate::error::{AppError, AppResult};
use crate::kek::local::LocalAsyncKek;
use crate::kek::{self, AsyncKek, Providers};

/// Limits on secret data.
#[derive(Debug, Clone, Copy)]
pub struct SecretLimits {
    /// Largest value in bytes.
    pub max_value_bytes: usize,
    /// Most keys in one secret.
    pub max_keys: usize,
}

impl Default for SecretLimits {
    fn default() -> Self {
        Self {
            max_value_bytes: 64 * 1024,
            max_keys: 100,
        }
    }
}

/// Validates a secret's data map: key names, value sizes, key count.
pub fn validate_data(data: &BTreeMap<String, String>, limits: SecretLimits) -> AppResult<()> {
    if data.is_empty() {
        return Err(AppError::new(
            ErrorCode::InvalidArgument,
            "a secret version needs at least one KEY=VALUE",
        ));
    }
    if data.len() > limits.max_keys {
        return Err(AppError::new(
            ErrorCode::InvalidArgument,
            format!("a secret has at most {} keys", limits.max_keys),
        ));
    }
    for (k, v) in data {
        valid_key(k)?;
        if v.len() > limits.max_value_bytes {
            return Err(AppError::new(
                ErrorCode::PayloadTooLarge,
                format!(
                    "the value of '{k}' is larger than {} bytes",
                    limits.max_value_bytes
                ),
            ));
        }
    }
    Ok(())
}

/// Key names are environment-variable friendly: a letter or `_`, then letters, digits, `_`,
/// `.` or `-`, at most 256 characters.
pub fn valid_key(k: &str) -> AppResult<()> {
    let ok_first = k.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_');
    let ok_rest = k
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if !ok_first || !ok_rest || k.len() > 256 {
        let shown: String = k.chars().take(64).collect();
        return Err(AppError::new(
            ErrorCode::InvalidArgument,
            format!(
                "invalid key name '{shown}': start with a letter or '_', then letters, digits, '_', '.', '-'"
            ),
        ));
    }
    Ok(())
}

/// A fresh DEK, already wrapped by the organization's active KEK (the KMS call happens before
/// the write transaction starts).
pub struct PreparedDek {
    dek: DataKey,
    wrapped: WrappedDek,
}

/// Keys for secrets: the root key, the organizations' KEKs (local ones unwrapped on first use,
/// customer-managed ones as KMS clients), and the DEK cache. Every KEK unwrap of a DEK is
/// counted in `tether_kek_unwrap_total`.
pub struct SecretKeys {
    root: RwLock<Arc<RootKey>>,
    keks: RwLock<HashMap<(String, i64), Arc<dyn AsyncKek>>>,
    deks: Mutex<DekCache>,
    /// Limits on data.
    pub limits: SecretLimits,
    /// Remote KEK providers (AWS KMS, OpenBao Transit) and their settings.
    pub providers: Providers,
    /// Held (shared) while a new root-wrapped KEK is created and committed, and exclusively
    /// by a root-key rotation, so no KEK can be committed under a root key being replaced.
    root_lock: tokio::sync::RwLock<()>,
    /// One lock per organization, held by a KEK rotation (or switch) from the new version's
    /// number to its last rewrap pass.
    rotations: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// The KMS key that seals the root key in the database (auto-unseal), if any.
    pub seal: Option<crate::unseal::RootSeal>,
}

fn kek_ref(org_id: &str, version: i64) -> AppResult<KekRef> {
    KekRef::local(org_id, &version.to_string()).map_err(AppError::internal)
}

/// The `kek_unavailable` answer (HTTP 503): the reason names the provider's refusal (never key
/// material) so an operator can tell a revoked key from a KMS that is down.
pub fn unavailable(e: impl std::fmt::Display) -> AppError {
    let reason = e.to_string();
    AppError {
        api: tether_core::ApiError::new(
            ErrorCode::KekUnavailable,
            format!("the key-encryption key is unavailable: {reason}"),
        ),
        cause: Some(reason),
    }
}

/// Maps a KEK failure: unavailable keys are `kek_unavailable`, anything else is internal.
pub fn kek_error(e: KekError) -> AppError {
    if e.is_unavailable() {
        unavailable(e)
    } else {
        AppError::internal(e)
    }
}

/// A committed version's DEK for the cache: (secret id, version), organization id, key.
pub type CommittedDek = (DekKey, String, Arc<DataKey>);

/// How many DEKs the cache holds.
const DEK_CACHE_CAPACITY: usize = 10_000;

/// The DEK cache TTL: `TETHER_DEK_CACHE_TTL_MS` (default 5 minutes). Revoking a KMS key stops
/// reads of a cached version within this time.
fn cache_ttl() -> Duration {
    std::env::var("TETHER_DEK_CACHE_TTL_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .map_or(Duration::from_secs(300), Duration::from_millis)
}

impl SecretKeys {
    /// Builds the keyring.
    pub fn new(
        root: RootKey,
        seal: Option<crate::unseal::RootSeal>,
        providers: Providers,
        limits: SecretLimits,
    ) -> Self {
        Self {
            root: RwLock::new(Arc::new(root)),
            keks: RwLock::new(HashMap::new()),
            deks: Mutex::new(DekCache::new(cache_ttl(), DEK_CACHE_CAPACITY)),
            limits,
            providers,
            root_lock: tokio::sync::RwLock::new(()),
            rotations: Mutex::default(),
            seal,
        }
    }

    /// The KEK of a stored row: a local key unwrapped by the root key, or a KMS client.
    pub async fn kek_for_row(&self, row: &OrgKekRow) -> AppResult<Arc<dyn AsyncKek>> {
        let key = (row.org_id.clone(), row.version);
        if let Some(k) = self.keks.read().ok().and_then(|m| m.get(&key).cloned()) {
            return Ok(k);
        }
        let kek: Arc<dyn AsyncKek> = if row.provider == kek::provider::LOCAL {
            let wrapped = row
                .wrapped
                .as_deref()
                .ok_or_else(|| unavailable("KEK has no local key material"))?;
            let kek = self.root().unwrap_kek(wrapped).map_err(unavailable)?;
            Arc::new(LocalAsyncKek(LocalKek::new(
                kek_ref(&row.org_id, row.version)?,
                kek,
            )))
        } else {
            self.providers
                .remote(&row.org_id, &row.provider, &row.key_id, row.version)
                .await
                .map_err(unavailable)?
        };
        if let Ok(mut m) = self.keks.write() {
            m.insert(key, kek.clone());
        }
        Ok(kek)
    }

    /// The organization's active KEK, creating version 1 on first use.
    pub async fn active(
        &self,
        store: &Store,
        org_id: &str,
        now: i64,
    ) -> AppResult<(i64, Arc<dyn AsyncKek>)> {
        if let Some(row) = active_kek(store.reader(), org_id).await? {
            return Ok((row.version, self.kek_for_row(&row).await?));
        }
        {
            let _creating = self.kek_creation().await;
            let row = self.new_kek_row(org_id, 1, now)?;
            let mut tx = store.begin().await?;
            match insert_kek(&mut tx, &row).await {
                Ok(()) => tx.commit().await.map_err(AppError::internal)?,
                Err(StoreError::AlreadyExists) => drop(tx),
                Err(e) => return Err(e.into()),
            }
        }
        let row = active_kek(store.reader(), org_id)
            .await?
            .ok_or_else(|| AppError::internal("no active KEK after creating one"))?;
        Ok((row.version, self.kek_for_row(&row).await?))
    }

    /// Hold this while creating and committing a root-wrapped KEK row.
    pub async fn kek_creation(&self) -> tokio::sync::RwLockReadGuard<'_, ()> {
        self.root_lock.read().await
    }

    /// Held by a KEK rotation of `org_id` on this server: two rotations of one organization run
    /// one after the other, the later one on the KEK version after the earlier one's.
    pub async fn org_rotation(&self, org_id: &str) -> tokio::sync::OwnedMutexGuard<()> {
        let lock = match self.rotations.lock() {
            Ok(mut m) => Arc::clone(m.entry(org_id.to_owned()).or_default()),
            Err(poisoned) => {
                Arc::clone(poisoned.into_inner().entry(org_id.to_owned()).or_default())
            }
        };
        lock.lock_owned().await
    }

    /// Held by a root-key rotation: no root-wrapped KEK is created meanwhile.
    pub async fn root_rotation(&self) -> tokio::sync::RwLockWriteGuard<'_, ()> {
        self.root_lock.write().await
    }

    /// A fresh local KEK row, wrapped by the root key.
    pub fn new_kek_row(&self, org_id: &str, version: i64, now: i64) -> AppResult<OrgKekRow> {
        let wrapped = self
            .root()
            .wrap_kek(&OrgKek::generate())
            .map_err(AppError::internal)?;
        Ok(OrgKekRow {
            org_id: org_id.into(),
            version,
            provider: kek::provider::LOCAL.into(),
            key_id: format!("{org_id}/{version}"),
            wrapped: Some(wrapped),
            created_at: now,
            active: true,
        })
    }

    /// A KEK by version.
    pub async fn by_version(
        &self,
        store: &Store,
        org_id: &str,
        version: i64,
    ) -> AppResult<Arc<dyn AsyncKek>> {
        if let Some(k) = self
            .keks
            .read()
            .ok()
            .and_then(|m| m.get(&(org_id.to_owned(), version)).cloned())
        {
            return Ok(k);
        }
        let row = store
            .org_kek(org_id, version)
            .await?
            .ok_or_else(|| unavailable(format!("KEK {org_id} v{version} is missing")))?;
        self.kek_for_row(&row).await
    }

    /// Generates a DEK and wraps it with `kek` (a KMS call for customer-managed keys).
    pub async fn prepare(&self, kek: &dyn AsyncKek) -> AppResult<PreparedDek> {
        let dek = DataKey::generate();
        let wrapped = kek.wrap(&dek).await.map_err(kek_error)?;
        Ok(PreparedDek { dek, wrapped })
    }

    /// Seals data under a prepared DEK. The DEK comes back for [`Self::remember_committed`]:
    /// it may enter the cache only once its version is committed, or a version number that a
    /// failed write had claimed would map to the wrong key.
    pub fn seal(
        &self,
        prepared: PreparedDek,
        aad: &Aad,
        plaintext: &[u8],
    ) -> AppResult<(Vec<u8>, Arc<DataKey>)> {
        let blob = seal_with_dek(&prepared.dek, &prepared.wrapped, aad, plaintext)
            .map_err(AppError::internal)?;
        Ok((blob, Arc::new(prepared.dek)))
    }

    /// Caches the DEKs of committed versions.
    pub fn remember_committed(&self, deks: Vec<CommittedDek>) {
        for (key, org_id, dek) in deks {
            self.remember(key, &org_id, dek);
        }
    }

    /// The DEK of a blob: from the cache, or unwrapped by its KEK (and then cached).
    pub async fn dek(
        &self,
        store: &Store,
        org_id: &str,
        kek_version: i64,
        cache_key: &DekKey,
        envelope: &Envelope<'_>,
    ) -> AppResult<Arc<DataKey>> {
        if let Some(d) = self.cached(cache_key) {
            return Ok(d);
        }
        // Boxed: a KMS call's future is large, and only a cache miss needs it.
        Box::pin(self.unwrap_dek(store, org_id, kek_version, cache_key, envelope)).await
    }

    /// Unwraps a DEK with its KEK (a KMS call for a customer key) and caches it.
    async fn unwrap_dek(
        &self,
        store: &Store,
        org_id: &str,
        kek_version: i64,
        cache_key: &DekKey,
        envelope: &Envelope<'_>,
    ) -> AppResult<Arc<DataKey>> {
        let kek = self.by_version(store, org_id, kek_version).await?;
        metrics::counter!("tether_kek_unwrap_total").increment(1);
        // A KEK that answers but cannot unwrap: the wrapped DEK, or the KEK version its row
        // names, was changed outside Tether.
        let d = Arc::new(kek.unwrap(envelope.wrapped_dek()).await.map_err(|e| {
            if e.is_unavailable() {
                unavailable(e)
            } else {
                AppError::integrity(&cache_key.0, cache_key.1, e)
            }
        })?);
        self.remember(cache_key.clone(), org_id, d.clone());
        Ok(d)
    }

    /// Opens a blob, using the cached DEK when there is one.
    pub async fn open(
        &self,
        store: &Store,
        org_id: &str,
        kek_version: i64,
        aad: &Aad,
        cache_key: &DekKey,
        blob: &[u8],
    ) -> AppResult<Zeroizing<Vec<u8>>> {
        let (secret_id, version) = cache_key;
        let envelope =
            Envelope::parse(blob).map_err(|e| AppError::integrity(secret_id, *version, e))?;
        let dek = self
            .dek(store, org_id, kek_version, cache_key, &envelope)
            .await?;
        envelope
            .open_with_dek(&dek, aad)
            .map_err(|e| AppError::integrity(secret_id, *version, e))
    }

    fn cached(&self, key: &DekKey) -> Option<Arc<DataKey>> {
        self.deks.lock().ok()?.get(key, Instant::now())
    }

    fn remember(&self, key: DekKey, org_id: &str, dek: Arc<DataKey>) {
        if let Ok(mut m) = self.deks.lock() {
            m.insert(key, org_id, dek, Instant::now());
        }
    }

    /// Forgets everything this server holds of an organization's keys: its cached DEKs (they
    /// zeroize once no read holds them) and its KEKs, so that the next read of each version
    /// unwraps again, through the KMS for a customer key. The kill switch for a revoked CMEK,
    /// which would otherwise take effect only when the DEK cache's TTL runs out.
    pub fn flush_org(&self, org_id: &str) {
        if let Ok(mut m) = self.deks.lock() {
            m.forget_org(org_id);
        }
        self.forget_org(org_id);
    }

    /// Forgets the KEKs of an organization (after rotation or a provider change), so the
    /// next use reads the stored rows again.
    pub fn forget_org(&self, org_id: &str) {
        if let Ok(mut m) = self.keks.write() {
            m.retain(|(o, _), _| o != org_id);
        }
    }

    /// Drops the cached DEKs of a secret's versions (after a purge).
    pub fn forget_secret_deks(&self, secret_id: &str) {
        if let Ok(mut m) = self.deks.lock() {
            m.forget_secret(secret_id);
        }
    }

    /// Drops the cached DEKs whose TTL has passed (a timer calls this; see `lib.rs`).
    pub fn expire_deks(&self) {
        if let Ok(mut m) = self.deks.lock() {
            m.expire(Instant::now());
        }
    }

    /// Forgets every cached DEK (e.g. to make a key revocation take effect at once).
    pub fn flush_deks(&self) {
        if let Ok(mut m) = self.deks.lock() {
            m.clear();
        }
    }

    /// The current root key.
    pub fn root(&self) -> Arc<RootKey> {
        match self.root.read() {
            Ok(r) => r.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Replaces the root key in memory (after every wrapped KEK was rewrapped under it).
    pub fn set_root(&self, root: RootKey) {
        let new = Arc::new(root);
        match self.root.write() {
            Ok(mut r) => *r = new,
            Err(poisoned) => *poisoned.into_inner() = new,
        }
        if let Ok(mut m) = self.keks.write() {
            m.clear();
        }
    }
}

/// The AAD that binds a version's ciphertext to its row.
pub fn aad_for(org_id: &str, env_id: &str, secret_id: &str, version: i64) -> AppResult<Aad> {
    let env = (!env_id.is_empty()).then_some(env_id);
    let v = u64::try_from(version).map_err(AppError::internal)?;
    Aad::for_secret_version(org_id, env, secret_id, v).map_err(AppError::internal)
}

/// Drops expired DEKs every second, so that a key is zeroized within about a second of its TTL
/// even when no write comes along to evict it.
pub fn spawn_dek_expiry(state: crate::state::AppState) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tick.tick().await;
            state.secrets.expire_deks();
        }
    })
}
