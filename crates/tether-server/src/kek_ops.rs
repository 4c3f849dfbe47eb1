//! KEK rotation, switching an organization to a customer-managed key, and root-key rotation.
//!
//! Rotating or switching a KEK adds a new KEK version (the old rows stay, so a version that is
//! not rewrapped yet keeps reading) and then rewraps the DEK of every live secret version: the
//! DEK is unwrapped with its current KEK and wrapped again with the new one. The encrypted data
//! is never touched, so the AAD binding and the ciphertext stay as they are.
//!
//! Rotating the root key rewraps every root-wrapped KEK (the organizations' local KEKs and the
//! system KEK) in one transaction, then swaps the key in memory. The operator then restarts the
//! server (and any replica) with the new key.

use std::sync::Arc;

use serde::Serialize;
use tether_core::ErrorCode;
use tether_crypto::envelope::Envelope;
use tether_crypto::{KekRef, RootKey};
use tether_store::kms::{
    max_kek_version, org_keks, rewrap_version_if, root_wrapped_keks, set_kek_wrapped,
    set_version_backend, versions_per_kek,
};
use tether_store::secrets::{OrgKekRow, active_kek, insert_kek};
use tether_store::settings::put_setting;

use crate::error::{AppError, AppResult};
use crate::kek::{AsyncKek, provider};
use crate::secret_ops::{stored_envelope, version_dek};
use crate::secrets::kek_error;
use crate::state::AppState;

/// Which KEK an organization should use from now on.
#[derive(Debug, Clone)]
pub enum KekTarget {
    /// A new platform-managed key (wrapped by the root key).
    Local,
    /// A new version of whatever the organization uses now (a new local key, or the same
    /// customer key again).
    SameProvider,
    /// A customer-managed key.
    Remote {
        /// `aws-kms` or `openbao-transit`.
        provider: String,
        /// The key ARN / id, or `MOUNT/KEY` for Transit.
        key_id: String,
    },
}

/// The outcome of a rotation or a provider switch.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RotateReport {
    /// The new active KEK version.
    pub kek_version: i64,
    /// Its provider.
    pub provider: String,
    /// Its key id.
    pub key_id: String,
    /// Secret versions whose DEK was rewrapped.
    pub rewrapped: u64,
    /// Secret versions that could not be rewrapped (they still read with their old KEK).
    pub failed: u64,
    /// The first failure, if any.
    pub first_error: Option<String>,
}

/// One KEK version, as listed.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct KekInfo {
    /// Version.
    pub version: i64,
    /// Provider.
    pub provider: String,
    /// Key id (a local key's id, a KMS key ARN, a Transit `MOUNT/KEY`).
    pub key_id: String,
    /// Whether new DEKs are wrapped by it.
    pub active: bool,
    /// Created (RFC 3339).
    pub created_at: String,
    /// Live secret versions whose DEK it wraps.
    pub secret_versions: i64,
}

/// Lists an organization's KEK versions.
pub async fn list(state: &AppState, org_id: &str) -> AppResult<Vec<KekInfo>> {
    let counts = versions_per_kek(state.store.reader(), org_id).await?;
    Ok(org_keks(state.store.reader(), org_id)
        .await?
        .into_iter()
        .map(|k| KekInfo {
            secret_versions: counts
                .iter()
                .find(|(v, _)| *v == k.version)
                .map_or(0, |(_, n)| *n),
            version: k.version,
            provider: k.provider,
            key_id: k.key_id,
            active: k.active,
            created_at: tether_core::clock::rfc3339(k.created_at),
        })
        .collect())
}

fn supported(provider_id: &str) -> bool {
    match provider_id {
        provider::OPENBAO_TRANSIT => true,
        #[cfg(feature = "kms-aws")]
        provider::AWS_KMS => true,
        _ => false,
    }
}

/// Creates the new KEK version and rewraps every live secret version of the organization.
pub async fn rotate(state: &AppState, org_id: &str, target: KekTarget) -> AppResult<RotateReport> {
    let _rotating = state.secrets.org_rotation(org_id).await;
    let now = state.clock.now_millis();
    // Make sure the org has a KEK at all (version 1) before rotating it.
    state.secrets.active(&state.store, org_id, now).await?;
    let current = active_kek(state.store.reader(), org_id)
        .await?
        .ok_or_else(|| AppError::internal("no active KEK"))?;
    let target = match target {
        KekTarget::SameProvider if current.provider == provider::LOCAL => KekTarget::Local,
        KekTarget::SameProvider => KekTarget::Remote {
            provider: current.provider.clone(),
            key_id: current.key_id.clone(),
        },
        t => t,
    };
    let creating = state.secrets.kek_creation().await;
    let mut tx = state.store.begin().await?;
    let version = max_kek_version(&mut tx, org_id).await? + 1;
    let row = match &target {
        KekTarget::Remote { provider, key_id } => {
            if !supported(provider) {
                return Err(AppError::new(
                    ErrorCode::InvalidArgument,
                    format!(
                        "unknown or unsupported KEK provider '{provider}' (local, aws-kms, \
                         openbao-transit)"
                    ),
                ));
            }
            KekRef::new(provider, key_id, &version.to_string())
                .map_err(|e| AppError::new(ErrorCode::InvalidArgument, e.to_string()))?;
            let row = OrgKekRow {
                org_id: org_id.into(),
                version,
                provider: provider.clone(),
                key_id: key_id.clone(),
                wrapped: None,
                created_at: now,
                active: true,
            };
            // Prove the key works both ways before any DEK depends on it (built outside the
            // KEK cache: a refused key must not be remembered under this version number).
            let kek = state
                .secrets
                .providers
                .remote(org_id, provider, key_id, version)
                .await
                .map_err(crate::secrets::unavailable)?;
            probe(kek.as_ref()).await?;
            row
        }
        KekTarget::Local | KekTarget::SameProvider => {
            state.secrets.new_kek_row(org_id, version, now)?
        }
    };
    insert_kek(&mut tx, &row).await.map_err(|e| match e {
        // Another server took this version number for a rotation of its own.
        tether_store::StoreError::AlreadyExists => AppError::new(
            ErrorCode::Conflict,
            "another KEK rotation of this organization is in progress; retry when it ends",
        ),
        other => other.into(),
    })?;
    tx.commit().await.map_err(AppError::internal)?;
    drop(creating);
    state.secrets.forget_org(org_id);
    tracing::info!(org_id, version, provider = %row.provider, key_id = %row.key_id, "KEK rotated");
    let new_kek = state.secrets.kek_for_row(&row).await?;
    let mut report = RotateReport {
        kek_version: version,
        provider: row.provider.clone(),
        key_id: row.key_id.clone(),
        rewrapped: 0,
        failed: 0,
        first_error: None,
    };
    // A writer that picked the old KEK just before the switch may commit after a pass, so
    // make a second pass for stragglers.
    for _ in 0..2 {
        let pending = state.store.versions_to_rewrap(org_id, version).await?;
        if pending.is_empty() {
            break;
        }
        report.failed = 0;
        report.first_error = None;
        for v in pending {
            match rewrap_one(state, &v, version, new_kek.as_ref()).await {
                Ok(true) => report.rewrapped += 1,
                Ok(false) => {}
                Err(e) => {
                    report.failed += 1;
                    if report.first_error.is_none() {
                        report.first_error = Some(e.api.message.clone());
                    }
                }
            }
        }
    }
    Ok(report)
}

async fn probe(kek: &dyn AsyncKek) -> AppResult<()> {
    let dek = tether_crypto::DataKey::generate();
    let wrapped = kek.wrap(&dek).await.map_err(kek_error)?;
    let back = kek.unwrap(&wrapped).await.map_err(kek_error)?;
    if back.expose_secret() != dek.expose_secret() {
        return Err(AppError::new(
            ErrorCode::InvalidArgument,
            "the key did not give back the data key it wrapped",
        ));
    }
    Ok(())
}

async fn rewrap_one(
    state: &AppState,
    v: &tether_store::secrets::SecretVersionRow,
    new_version: i64,
    new_kek: &dyn AsyncKek,
) -> AppResult<bool> {
    let Some(blob) = v.blob.as_deref() else {
        return Ok(false);
    };
    let external = blob.is_empty();
    let blob = stored_envelope(state, v, blob).await?;
    let envelope = Envelope::parse(&blob).map_err(AppError::internal)?;
    let dek = version_dek(state, v, &envelope).await?;
    let wrapped = new_kek.wrap(&dek).await.map_err(kek_error)?;
    let mut new_blob = envelope.rewrapped(&wrapped).map_err(AppError::internal)?;
    // An external copy is written beside the old one and swapped in by the row's update: a
    // copy rewritten in place would be wrapped by the new KEK while the row, if its update then
    // failed or lost a race, still named the old one, and the version would not open.
    let mut copy = None;
    if external {
        let old_ref = v.backend_ref.as_deref().unwrap_or_default();
        let tag = tether_core::id::VersionId::generate().to_string();
        let new_ref =
            crate::backends::store_beside(state, &v.backend, old_ref, v.version, &tag, &new_blob)
                .await?;
        copy = Some(new_ref);
        new_blob = Vec::new();
    }
    let outcome = async {
        let mut tx = state.store.begin().await?;
        // The organization's chain lock, as every writer of its rows takes it first: a move
        // reads and rewrites the versions it seals under it, and must not see one change
        // between the two.
        tether_store::audit::lock_chain(&mut tx, &v.org_id).await?;
        // Only if the row is still as read: a move since then sealed it for another place.
        let done = rewrap_version_if(&mut tx, v, &new_blob, new_version).await?;
        if let (true, Some(new_ref)) = (done, &copy) {
            set_version_backend(&mut tx, &v.secret_id, v.version, &v.backend, new_ref).await?;
        }
        tx.commit().await.map_err(AppError::internal)?;
        Ok(done)
    }
    .await;
    if let Some(new_ref) = copy {
        crate::backends::settle(state, v, new_ref).await;
    }
    outcome
}

/// The outcome of a root-key rotation.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RootRotateReport {
    /// Fingerprint of the key that was replaced.
    pub old_root_key_id: String,
    /// Fingerprint of the new key.
    pub new_root_key_id: String,
    /// Organization KEKs rewrapped.
    pub org_keks_rewrapped: u64,
    /// Whether the system KEK was rewrapped.
    pub system_kek_rewrapped: bool,
}

use crate::keys::SYSTEM_KEK;

/// Rewraps every root-wrapped KEK under `new_root` in one transaction, then uses it. With
/// auto-unseal, the new key is sealed by the KMS first and stored in the same transaction, so
/// the database never holds KEKs wrapped by a key that its sealed record does not open.
pub async fn rotate_root(state: &AppState, new_root: RootKey) -> AppResult<RootRotateReport> {
    let _rotating = state.secrets.root_rotation().await;
    let old: Arc<RootKey> = state.secrets.root();
    if old.id() == new_root.id() {
        return Err(AppError::new(
            ErrorCode::InvalidArgument,
            "the new root key is the key in use",
        ));
    }
    let rewrap = |wrapped: &[u8]| -> AppResult<Vec<u8>> {
        let kek = old.unwrap_kek(wrapped).map_err(AppError::internal)?;
        new_root.wrap_kek(&kek).map_err(AppError::internal)
    };
    let sealed = match &state.secrets.seal {
        Some(seal) => Some(
            seal.seal(&state.secrets.providers, &new_root)
                .await
                .map_err(|e| crate::secrets::unavailable(e.0))?,
        ),
        None => None,
    };
    let system = state
        .store
        .get_setting(SYSTEM_KEK)
        .await?
        .ok_or_else(|| AppError::internal("no system KEK"))?;
    let mut tx = state.store.begin().await?;
    let mut count = 0;
    for k in root_wrapped_keks(&mut tx).await? {
        let Some(w) = k.wrapped.as_deref() else {
            continue;
        };
        set_kek_wrapped(&mut tx, &k.org_id, k.version, &rewrap(w)?).await?;
        count += 1;
    }
    put_setting(&mut tx, SYSTEM_KEK, &rewrap(&system)?).await?;
    if let Some(sealed) = &sealed {
        put_setting(&mut tx, crate::unseal::SEALED_ROOT, sealed).await?;
    }
    tx.commit().await.map_err(AppError::internal)?;
    let report = RootRotateReport {
        old_root_key_id: old.id().to_string(),
        new_root_key_id: new_root.id().to_string(),
        org_keks_rewrapped: count,
        system_kek_rewrapped: true,
    };
    state.secrets.set_root(new_root);
    let next = if sealed.is_some() {
        "it is sealed by the KMS key; restart the other servers to unseal it"
    } else {
        "restart every server with the new root key"
    };
    tracing::warn!(
        old = %report.old_root_key_id,
        new = %report.new_root_key_id,
        keks = count,
        "root key rotated; {next}"
    );
    Ok(report)
}
