//! Secret operations: write a version (check-and-set), read a version, list versions, destroy,
//! rollback, soft delete and undelete. Each write commits the secret's row, its encrypted
//! version, its audit record (metadata only, never values) and its tuples together.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Serialize;
use tether_core::id::ResourceId;
use tether_core::{ErrorCode, Kind};
use tether_crypto::DataKey;
use tether_crypto::envelope::Envelope;
use tether_store::ResourceRow;
use tether_store::resources::{delete_resource, get_resource, update_resource};
use tether_store::secrets::{
    SecretVersionRow, destroy_secret_version, purge_secret_versions, secret_external_copies,
    secret_version,
};
use tether_store::tuples::delete_tuples_of_source;
use zeroize::Zeroizing;

use crate::auth::Principal;
use crate::error::{AppError, AppResult};
use crate::kinds::SecretSpec;
use crate::resources::{
    Change, ScopeNames, VersionInput, begin_on_row, on_fresh_row, record_version, snapshot,
};
use crate::secrets::{aad_for, validate_data};
use crate::state::AppState;

/// A live version's envelope: the blob in its row, or, when the row's blob is empty, the copy
/// that the external backend holding it keeps.
pub(crate) async fn stored_envelope<'a>(
    state: &AppState,
    v: &SecretVersionRow,
    blob: &'a [u8],
) -> AppResult<Cow<'a, [u8]>> {
    if !blob.is_empty() {
        return Ok(Cow::Borrowed(blob));
    }
    let reference = v.backend_ref.as_deref().ok_or_else(|| {
        AppError::internal("a version with an empty blob has no backend reference")
    })?;
    // Boxed: an external store's request future is large and only these reads need it.
    let fetched = Box::pin(crate::backends::fetch_at(state, &v.backend, reference)).await?;
    Ok(Cow::Owned(fetched))
}

/// The DEK of a version's envelope: cached, or unwrapped by the KEK version the row names.
pub(crate) async fn version_dek(
    state: &AppState,
    v: &SecretVersionRow,
    envelope: &Envelope<'_>,
) -> AppResult<Arc<DataKey>> {
    let cache_key = (v.secret_id.clone(), v.version);
    state
        .secrets
        .dek(&state.store, &v.org_id, v.kek_version, &cache_key, envelope)
        .await
}

/// A new version to write.
pub struct NewVersion {
    /// The secret's name.
    pub name: String,
    /// The data.
    pub data: BTreeMap<String, String>,
    /// Check-and-set: the version the writer expects to be current (0: must not exist).
    pub if_version: Option<i64>,
    /// The change message.
    pub message: Option<String>,
    /// The id of the secret whose data this version derives from (a patch, a rollback): the
    /// write is refused if the name now belongs to another secret (renamed, moved or purged
    /// meanwhile), so one secret's data never lands in another.
    pub expect_id: Option<String>,
}

/// A secret row's metadata.
pub(crate) fn spec_of(row: &ResourceRow) -> AppResult<SecretSpec> {
    serde_json::from_str(&row.spec).map_err(AppError::internal)
}

/// Whether a row is a soft-deleted secret.
pub(crate) fn is_deleted_secret(row: &ResourceRow) -> bool {
    row.kind == Kind::Secret.to_string() && spec_of(row).is_ok_and(|s| s.deleted)
}

/// The error for a write without `if_version` to a secret that requires check-and-set.
pub(crate) fn cas_required(name: &str) -> AppError {
    AppError::new(
        ErrorCode::CheckAndSetRequired,
        format!(
            "secret '{name}' requires check-and-set: give the current version as if_version (--if-version)"
        ),
    )
}

pub(crate) fn conflict(expected: i64, current: i64) -> AppError {
    AppError::new(
        ErrorCode::VersionConflict,
        format!("expected version {expected}, but the current version is {current}"),
    )
}

/// Writes a new version, creating the secret on first write, through the group-commit queue
/// (see `secret_batch`). Retries a lost race (two writers picking the same version, only
/// possible across nodes) unless the caller asked for check-and-set.
pub async fn write_version(
    state: &AppState,
    scope: &ScopeNames,
    actor: &Principal,
    v: NewVersion,
) -> AppResult<i64> {
    validate_data(&v.data, state.secrets.limits)?;
    tether_core::Name::parse(&v.name)
        .map_err(|e| AppError::new(ErrorCode::InvalidName, e.to_string()))?;
    let v = std::sync::Arc::new(v);
    let mut attempts = 0;
    loop {
        let now = state.clock.now_millis();
        let (kek_version, kek) = state
            .secrets
            .active(&state.store, &scope.org_id, now)
            .await?;
        // Wrap the new DEK before queueing: with a KMS this is a network call.
        let prepared = state.secrets.prepare(kek.as_ref()).await?;
        let (reply, _) = tokio::sync::oneshot::channel();
        let pending = crate::secret_batch::Pending {
            scope: scope.clone(),
            actor: actor.clone(),
            v: std::sync::Arc::clone(&v),
            kek_version,
            prepared,
            reply,
        };
        match state.version_queue.submit(state, pending).await {
            Err(e)
                if e.cause.as_deref() == Some(RACE) && v.if_version.is_none() && attempts < 5 =>
            {
                attempts += 1
            }
            Err(e) if e.cause.as_deref() == Some(RACE) => {
                return Err(AppError::new(
                    ErrorCode::VersionConflict,
                    "another writer created this version first; retry",
                ));
            }
            other => return other,
        }
    }
}

/// The cause that marks a lost race.
pub(crate) const RACE: &str = "secret version race";

pub(crate) fn new_row(scope: &ScopeNames, name: &str, actor: &Principal, now: i64) -> ResourceRow {
    ResourceRow {
        id: ResourceId::generate().to_string(),
        org_id: scope.org_id.clone(),
        env_id: scope.env_id.clone(),
        kind: Kind::Secret.to_string(),
        name: name.to_owned(),
        spec: String::new(),
        labels: "{}".into(),
        created_at: now,
        created_by: actor.display(),
        updated_at: now,
        updated_by: actor.display(),
        version_id: String::new(),
    }
}

/// Reads and decrypts a version (the current one by default).
pub async fn read_version(
    state: &AppState,
    row: &ResourceRow,
    version: Option<i64>,
) -> AppResult<(i64, BTreeMap<String, String>)> {
    let (v, plain) = read_version_json(state, row, version).await?;
    let data = serde_json::from_slice(&plain).map_err(AppError::internal)?;
    Ok((v, data))
}

/// A version's data as the JSON object it was sealed as (keys in order), opened: what
/// [`read_version`] parses. The AEAD tag authenticates it, so it is that object as written.
pub async fn read_version_json(
    state: &AppState,
    row: &ResourceRow,
    version: Option<i64>,
) -> AppResult<(i64, Zeroizing<Vec<u8>>)> {
    let spec = spec_of(row)?;
    if spec.deleted {
        return Err(AppError::not_found("secret", &row.name));
    }
    let v = version.unwrap_or(spec.current_version);
    let rec = match v {
        0 => None,
        _ => state.store.secret_version_cached(&row.id, v).await?,
    };
    let rec = rec.ok_or_else(|| {
        AppError::new(
            ErrorCode::NotFound,
            format!("secret '{}' has no version {v}", row.name),
        )
    })?;
    match open_version(state, &rec, &row.name).await {
        // The row may be older than the external copy it names: a move or a KEK rotation
        // swaps in a new copy and deletes the old one after its commit. Once more with the row
        // as it is stored now.
        Err(e) if rec.backend_ref.is_some() => {
            let fresh = secret_version(state.store.reader(), &rec.secret_id, v).await?;
            match fresh {
                Some(f) if (&f.env_id, &f.backend_ref) != (&rec.env_id, &rec.backend_ref) => {
                    Ok((v, open_version(state, &f, &row.name).await?))
                }
                _ => Err(e),
            }
        }
        other => Ok((v, other?)),
    }
}

/// Opens a version as its row names it.
async fn open_version(
    state: &AppState,
    rec: &SecretVersionRow,
    name: &str,
) -> AppResult<Zeroizing<Vec<u8>>> {
    let v = rec.version;
    let blob = rec.blob.as_deref().ok_or_else(|| {
        AppError::new(
            ErrorCode::VersionDestroyed,
            format!("version {v} of secret '{name}' was destroyed"),
        )
    })?;
    let blob = stored_envelope(state, rec, blob).await?;
    let aad = aad_for(&rec.org_id, &rec.env_id, &rec.secret_id, v)?;
    state
        .secrets
        .open(
            &state.store,
            &rec.org_id,
            rec.kek_version,
            &aad,
            &(rec.secret_id.clone(), v),
            &blob,
        )
        .await
}

/// A version as listed: never data.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct VersionInfo {
    /// Version number.
    pub version: i64,
    /// When (RFC 3339).
    pub created_at: String,
    /// Who.
    pub created_by: String,
    /// When destroyed, if it was.
    pub destroyed_at: Option<String>,
    /// Whether this is the current version.
    pub current: bool,
}

/// Lists a secret's versions.
pub async fn list_versions(state: &AppState, row: &ResourceRow) -> AppResult<Vec<VersionInfo>> {
    let spec = spec_of(row)?;
    let ts = tether_core::clock::rfc3339;
    Ok(state
        .store
        .secret_versions(&row.id)
        .await?
        .iter()
        .map(|v| VersionInfo {
            version: v.version,
            created_at: ts(v.created_at),
            created_by: v.created_by.clone(),
            destroyed_at: v.destroyed_at.map(ts),
            current: v.version == spec.current_version,
        })
        .collect())
}

/// Destroys one version's data for good.
pub async fn destroy(
    state: &AppState,
    scope: &ScopeNames,
    row: &ResourceRow,
    version: i64,
    actor: &Principal,
) -> AppResult<()> {
    // The external copy goes first: a destroy that fails half-way leaves no data behind, and
    // trying again finishes it.
    let deleted = crate::backends::forget_blob(state, &row.id, version).await?;
    let kept = on_fresh_row(|| destroy_once(state, scope, row, version, actor)).await?;
    // A move or a KEK rotation may have swapped in a new copy meanwhile: it goes too.
    if let (backend, Some(reference)) = kept
        && deleted.as_ref() != Some(&reference)
    {
        crate::backends::forget_unreferenced(state, vec![(backend, reference)]);
    }
    Ok(())
}

async fn destroy_once(
    state: &AppState,
    scope: &ScopeNames,
    stale: &ResourceRow,
    version: i64,
    actor: &Principal,
) -> AppResult<(String, Option<String>)> {
    let (mut tx, read) = begin_on_row(state, stale).await?;
    let row = &read;
    let kept = destroy_secret_version(&mut tx, &row.id, version, state.clock.now_millis())
        .await?
        .ok_or_else(|| {
            AppError::new(
                ErrorCode::NotFound,
                format!("secret '{}' has no version {version}", row.name),
            )
        })?;
    let change = Change {
        actor,
        message: Some(format!("destroyed version {version}")),
        event: Some("destroy"),
    };
    let snap = snapshot(row, scope)?;
    let input = VersionInput {
        event: "destroy",
        before: Some(snap.clone()),
        after: Some(snap),
        previous: Some(row.version_id.clone()),
    };
    let mut updated = row.clone();
    updated.version_id = record_version(&mut tx, state, row, &change, input).await?;
    update_resource(&mut tx, &updated, &row.version_id).await?;
    tx.commit().await.map_err(AppError::internal)?;
    Ok(kept)
}

/// Removes a secret for good, like `vault kv metadata delete`: every version's data (and its
/// copies in an external store), its grants and its row. Its history in the audit trail
/// (metadata only) stays, ending in a `purge` event, and the name is free again. Works on a
/// live or a soft-deleted secret.
pub async fn purge(
    state: &AppState,
    scope: &ScopeNames,
    row: &ResourceRow,
    actor: &Principal,
) -> AppResult<()> {
    // The external copies go first, as in destroy: a purge that fails half-way (the customer's
    // store is down) leaves the secret in place to purge again, never rows gone and copies
    // left behind with nothing pointing at them.
    let first = secret_external_copies(state.store.reader(), &row.id).await?;
    for (backend, reference) in &first {
        crate::backends::forget_external(state, backend, reference).await?;
    }
    let copies = on_fresh_row(|| purge_once(state, scope, row, actor)).await?;
    state.secrets.forget_secret_deks(&row.id);
    // Versions written or moved between the two steps: their rows are gone too, so the copies
    // are deleted now; one that cannot be is logged with its reference for an operator.
    for (backend, reference) in copies.into_iter().filter(|c| !first.contains(c)) {
        if let Err(e) = crate::backends::forget_external(state, &backend, &reference).await {
            tracing::warn!(%backend, %reference, cause = ?e.cause, code = ?e.api.code,
                "could not delete a purged secret's copy from its backend");
        }
    }
    Ok(())
}

async fn purge_once(
    state: &AppState,
    scope: &ScopeNames,
    stale: &ResourceRow,
    actor: &Principal,
) -> AppResult<Vec<(String, String)>> {
    let (mut tx, read) = begin_on_row(state, stale).await?;
    let row = &read;
    let copies = purge_secret_versions(&mut tx, &row.id).await?;
    let delta = crate::resources::TupleDelta {
        deletes: delete_tuples_of_source(&mut tx, &row.id).await?,
        ..Default::default()
    };
    let change = Change {
        actor,
        message: Some("purged: every version's data is gone".into()),
        event: Some("purge"),
    };
    let input = VersionInput {
        event: "purge",
        before: Some(snapshot(row, scope)?),
        after: None,
        previous: Some(row.version_id.clone()),
    };
    record_version(&mut tx, state, row, &change, input).await?;
    delete_resource(&mut tx, &row.id).await?;
    delta.commit(tx, state).await?;
    metrics::counter!("tether_resource_writes_total", "event" => "purge").increment(1);
    Ok(copies)
}

/// Sets or clears the soft-delete flag.
pub async fn set_deleted(
    state: &AppState,
    scope: &ScopeNames,
    row: &ResourceRow,
    deleted: bool,
    actor: &Principal,
) -> AppResult<ResourceRow> {
    on_fresh_row(|| set_deleted_once(state, scope, row, deleted, actor)).await
}

async fn set_deleted_once(
    state: &AppState,
    scope: &ScopeNames,
    stale: &ResourceRow,
    deleted: bool,
    actor: &Principal,
) -> AppResult<ResourceRow> {
    let (mut tx, read) = begin_on_row(state, stale).await?;
    let row = &read;
    let mut spec = spec_of(row)?;
    if spec.deleted == deleted {
        return Ok(read);
    }
    spec.deleted = deleted;
    let mut updated = row.clone();
    updated.spec = serde_json::to_string(&spec).map_err(AppError::internal)?;
    updated.updated_at = state.clock.now_millis();
    updated.updated_by = actor.display();
    let event = if deleted { "delete" } else { "undelete" };
    let change = Change {
        actor,
        message: None,
        event: Some(event),
    };
    let input = VersionInput {
        event,
        before: Some(snapshot(row, scope)?),
        after: Some(snapshot(&updated, scope)?),
        previous: Some(row.version_id.clone()),
    };
    updated.version_id = record_version(&mut tx, state, &updated, &change, input).await?;
    update_resource(&mut tx, &updated, &row.version_id).await?;
    tx.commit().await.map_err(AppError::internal)?;
    Ok(updated)
}

/// Writes version `to`'s data again as a new version.
pub async fn rollback(
    state: &AppState,
    scope: &ScopeNames,
    row: &ResourceRow,
    to: i64,
    if_version: Option<i64>,
    actor: &Principal,
) -> AppResult<i64> {
    let (_, data) = read_version(state, row, Some(to)).await?;
    let v = NewVersion {
        name: row.name.clone(),
        data,
        if_version,
        message: Some(format!("rollback to version {to}")),
        expect_id: Some(row.id.clone()),
    };
    write_version(state, scope, actor, v).await
}

/// A change to some keys of a secret's current data.
pub struct Patch {
    /// Keys to set (added or replaced).
    pub set: BTreeMap<String, String>,
    /// Keys to remove; one that is absent is ignored.
    pub remove: Vec<String>,
    /// Check-and-set on the version the patch applies to.
    pub if_version: Option<i64>,
    /// The change message.
    pub message: Option<String>,
}

/// How many times a patch that lost to another writer is applied again.
const PATCH_ATTEMPTS: u64 = 10;

/// Striped locks that queue the patches of one secret on this server: concurrent patches
/// would otherwise all read one version and all but one lose the check-and-set.
pub struct PatchLocks([tokio::sync::Mutex<()>; 64]);

impl Default for PatchLocks {
    fn default() -> Self {
        Self(std::array::from_fn(|_| tokio::sync::Mutex::new(())))
    }
}

impl PatchLocks {
    /// Waits for the turn of `secret_id`'s patches.
    async fn turn(&self, secret_id: &str) -> Option<tokio::sync::MutexGuard<'_, ()>> {
        use std::hash::{BuildHasher, BuildHasherDefault};
        let h = BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default()
            .hash_one(secret_id);
        let stripe = usize::try_from(h % 64).ok().and_then(|i| self.0.get(i))?;
        Some(stripe.lock().await)
    }
}

/// Writes a new version holding the current data with `patch` applied. The new version is
/// written only if the current one is still the one patched. Patches of one secret queue on
/// this server; one that loses the race to another writer (a `set`, or another server) is
/// applied again to the newer data (up to 10 times) unless it gave `if_version`, so no
/// concurrent change is lost.
pub async fn patch(
    state: &AppState,
    scope: &ScopeNames,
    row: &ResourceRow,
    patch: Patch,
    actor: &Principal,
) -> AppResult<i64> {
    if patch.set.is_empty() && patch.remove.is_empty() {
        return Err(AppError::new(
            ErrorCode::InvalidArgument,
            "a patch sets or removes at least one key",
        ));
    }
    if let Some(k) = patch.remove.iter().find(|k| patch.set.contains_key(*k)) {
        return Err(AppError::new(
            ErrorCode::InvalidArgument,
            format!("key '{k}' is both set and removed"),
        ));
    }
    for k in patch.set.keys().chain(&patch.remove) {
        crate::secrets::valid_key(k)?;
    }
    // The audit trail never holds values, but key names are not secret: a patch without a
    // message says which keys it set and removed.
    let message = patch.message.clone().or_else(|| {
        let list = |keys: Vec<&String>| {
            keys.iter()
                .map(|k| k.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut parts = Vec::new();
        if !patch.set.is_empty() {
            parts.push(format!("set {}", list(patch.set.keys().collect())));
        }
        if !patch.remove.is_empty() {
            parts.push(format!("removed {}", list(patch.remove.iter().collect())));
        }
        Some(format!("patch: {}", parts.join("; ")))
    });
    crate::resources::check_message(message.as_deref())?;
    let _turn = state.patches.turn(&row.id).await;
    let mut attempts = 0;
    loop {
        // As stored now: the request's row was read before this patch's turn came.
        // A secret renamed or moved meanwhile is no longer at the place the write goes to.
        let current = get_resource(state.store.reader(), &row.id)
            .await?
            .filter(|c| (&c.env_id, &c.name) == (&row.env_id, &row.name))
            .ok_or_else(|| AppError::not_found("secret", &row.name))?;
        if patch.if_version.is_none() && spec_of(&current)?.cas_required {
            return Err(cas_required(&row.name));
        }
        let (version, mut data) = read_version(state, &current, None).await?;
        if let Some(expected) = patch.if_version
            && expected != version
        {
            return Err(conflict(expected, version));
        }
        // Removing a key that is not there changes nothing and is not an error: an error would
        // tell a caller who may write but not read values which keys exist.
        for k in &patch.remove {
            data.remove(k);
        }
        data.extend(patch.set.clone());
        let v = NewVersion {
            name: row.name.clone(),
            data,
            if_version: Some(version),
            message: message.clone(),
            expect_id: Some(row.id.clone()),
        };
        match write_version(state, scope, actor, v).await {
            Err(e)
                if e.api.code == ErrorCode::VersionConflict
                    && patch.if_version.is_none()
                    && attempts < PATCH_ATTEMPTS =>
            {
                attempts += 1;
                // Let the other writer's burst pass; each try reads the data afresh.
                tokio::time::sleep(std::time::Duration::from_millis(2 * attempts)).await;
            }
            other => return other,
        }
    }
}
