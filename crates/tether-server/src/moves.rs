//! Moving a secret or a variable to another environment, to the organization level, or from
//! it: what Vault users asked for for years (vault#2414), without the values ever leaving the
//! server.
//!
//! The item keeps its id, its versions, its grants on itself and its history. Each version of a
//! secret is sealed again for its new place, because the AAD binds the ciphertext to its
//! environment (`tether:v1:{org}:{env}:{secret}:{version}`): a moved blob that kept the old
//! AAD would no longer open, and one that did not bind the environment could be read through
//! another. The version's DEK stays (it is the version's own, and the KEK that wraps it is not
//! called again); the data is decrypted in memory, in zeroizing buffers, and sealed under the
//! new AAD with a fresh nonce.
//!
//! The bulk of the sealing runs before the transaction, so a slow KMS or backend does not hold
//! the writer while every version is handled. The transaction takes the organization's chain
//! lock, which every version write takes too, and seals in place only the versions that changed
//! in between (new ones, or ones destroyed or rewrapped meanwhile): a move never starves behind
//! a stream of writes, and none of them is left sealed for the old place. External backends get
//! the new blobs beside the old ones; the old copies are deleted only after the commit, and the
//! new ones if the move fails, so a reader always finds the copy its row names.
//!
//! Authorization changes in the safe order: the grants that the old place gave are withdrawn
//! from the index before the commit, and the new place's are added after it, so that nobody
//! reads the item through either place while it moves.

use tether_core::id::VersionId;
use tether_core::{ErrorCode, Kind};
use tether_crypto::envelope::{Envelope, seal_with_dek};
use tether_store::kms::set_version_backend;
use tether_store::resources::{get_resource, update_resource};
use tether_store::secrets::{SecretVersionRow, move_secret_version, tx_secret_versions};
use tether_store::tuples::delete_tuples_of_source;
use tether_store::{ResourceRow, StoreError};

use crate::error::{AppError, AppResult};
use crate::resources::{
    Change, ScopeNames, TupleDelta, VersionInput, begin_on_row, name_taken, on_fresh_row,
    record_version, snapshot, write_grants,
};
use crate::secret_ops::{stored_envelope, version_dek};
use crate::secrets::aad_for;
use crate::state::AppState;

/// Where an item goes: its new scope and name.
pub struct Destination<'a> {
    /// The new scope (`env_id` empty for the organization level).
    pub scope: &'a ScopeNames,
    /// The new name (the old one unless it is renamed on the way).
    pub name: &'a str,
}

/// Moves a secret or a variable (see the module documentation). A name taken at the
/// destination is refused with `already_exists`, and nothing changes.
pub async fn move_item(
    state: &AppState,
    from: &ScopeNames,
    existing: &ResourceRow,
    to: &Destination<'_>,
    change: &Change<'_>,
) -> AppResult<ResourceRow> {
    if existing.env_id == to.scope.env_id {
        // Nothing to seal again: the AAD does not bind the name.
        return crate::resources::rename(state, from, existing, to.name, change).await;
    }
    let (kind, name) = crate::resources::secret_or_variable(existing, to.name, "moved")?;
    let to = Destination {
        scope: to.scope,
        name: name.as_str(),
    };
    on_fresh_row(|| move_once(state, kind, from, existing, &to, change)).await
}

/// A version as the move found it, and what it becomes.
struct Resealed {
    /// The row as read: the move applies only if it is still so.
    read: SecretVersionRow,
    /// The new blob (empty when an external backend holds it); `None` for a destroyed version.
    blob: Option<Vec<u8>>,
    /// The new external copy's reference.
    new_ref: Option<String>,
}

impl Resealed {
    /// Whether `v` is the row this was sealed from.
    fn sealed_from(&self, v: &SecretVersionRow) -> bool {
        let r = &self.read;
        (
            r.version,
            r.kek_version,
            r.blob.is_some(),
            &r.env_id,
            &r.backend_ref,
        ) == (
            v.version,
            v.kek_version,
            v.blob.is_some(),
            &v.env_id,
            &v.backend_ref,
        )
    }
}

async fn move_once(
    state: &AppState,
    kind: Kind,
    from: &ScopeNames,
    stale: &ResourceRow,
    to: &Destination<'_>,
    change: &Change<'_>,
) -> AppResult<ResourceRow> {
    let read = get_resource(state.store.reader(), &stale.id)
        .await?
        .ok_or_else(|| AppError::not_found(kind.singular(), &stale.name))?;
    let mut sealer = Sealer {
        state,
        env_id: &to.scope.env_id,
        tag: VersionId::generate().to_string(),
        written: Vec::new(),
    };
    let outcome = async {
        let early = match kind {
            Kind::Secret => sealer.reseal_all(&read.id).await?,
            _ => Vec::new(),
        };
        commit_move(&mut sealer, kind, from, &read, early, to, change).await
    }
    .await;
    // Whatever the outcome, each version keeps the copy its row names now; the other goes.
    for (v, new_ref) in std::mem::take(&mut sealer.written) {
        crate::backends::settle(state, &v, new_ref).await;
    }
    outcome
}

/// Seals a secret's versions again for their new environment, and remembers the copies it
/// wrote to external backends.
struct Sealer<'a> {
    state: &'a AppState,
    env_id: &'a str,
    /// Names this move's external copies apart from the versions' current ones.
    tag: String,
    /// The new external copies written, with the row each was sealed from.
    written: Vec<(SecretVersionRow, String)>,
}

impl Sealer<'_> {
    /// Every version of a secret as it is now (read outside the move's transaction).
    async fn reseal_all(&mut self, secret_id: &str) -> AppResult<Vec<Resealed>> {
        let mut out = Vec::new();
        for v in self.state.store.secret_versions(secret_id).await? {
            out.push(self.reseal_one(v).await?);
        }
        Ok(out)
    }

    /// Opens one version with the AAD of its current place and seals it for the new one,
    /// under its own DEK.
    async fn reseal_one(&mut self, v: SecretVersionRow) -> AppResult<Resealed> {
        let state = self.state;
        let Some(stored) = v.blob.as_deref() else {
            return Ok(Resealed {
                read: v,
                blob: None,
                new_ref: None,
            });
        };
        let blob = stored_envelope(state, &v, stored).await?;
        let envelope =
            Envelope::parse(&blob).map_err(|e| AppError::integrity(&v.secret_id, v.version, e))?;
        let dek = version_dek(state, &v, &envelope).await?;
        let old_aad = aad_for(&v.org_id, &v.env_id, &v.secret_id, v.version)?;
        let plain = envelope
            .open_with_dek(&dek, &old_aad)
            .map_err(|e| AppError::integrity(&v.secret_id, v.version, e))?;
        let new_aad = aad_for(&v.org_id, self.env_id, &v.secret_id, v.version)?;
        let sealed = seal_with_dek(&dek, envelope.wrapped_dek(), &new_aad, &plain)
            .map_err(AppError::internal)?;
        let (blob, new_ref) = match v.backend_ref.as_deref() {
            Some(old_ref) if stored.is_empty() => {
                let new_ref = crate::backends::store_beside(
                    state, &v.backend, old_ref, v.version, &self.tag, &sealed,
                )
                .await?;
                self.written.push((v.clone(), new_ref.clone()));
                (Vec::new(), Some(new_ref))
            }
            _ => (sealed, None),
        };
        Ok(Resealed {
            read: v,
            blob: Some(blob),
            new_ref,
        })
    }
}

fn stale() -> AppError {
    StoreError::Stale.into()
}

/// Commits the move. Under the organization's chain lock no version can land, so the versions
/// that changed since `early` was sealed (new ones, and any destroyed, rewrapped or moved
/// meanwhile) are sealed here, in the transaction: few, and their DEKs usually cached. Returns
/// the row as moved.
async fn commit_move(
    sealer: &mut Sealer<'_>,
    kind: Kind,
    from: &ScopeNames,
    read: &ResourceRow,
    mut early: Vec<Resealed>,
    to: &Destination<'_>,
    change: &Change<'_>,
) -> AppResult<ResourceRow> {
    let state = sealer.state;
    let (mut tx, existing) = begin_on_row(state, read).await?;
    // Still where the caller was allowed to move it from (another move may have won).
    if existing.env_id != from.env_id {
        return Err(AppError::new(
            ErrorCode::Conflict,
            format!(
                "{} '{}' was moved meanwhile; look it up again",
                kind.singular(),
                existing.name
            ),
        ));
    }
    if existing.env_id == to.scope.env_id && existing.name == to.name {
        return Ok(existing);
    }
    // The destination still exists: a concurrent delete of an empty environment takes this
    // chain lock too, so it either committed before (and this refuses) or waits.
    if !to.scope.env_id.is_empty() {
        let env = get_resource(&mut *tx, &to.scope.env_id).await?;
        if !env.is_some_and(|e| e.kind == "Environment" && e.org_id == existing.org_id) {
            let name = to.scope.env.as_deref().unwrap_or_default();
            return Err(AppError::not_found("environment", name));
        }
    }
    if kind == Kind::Secret {
        let mut plan = Vec::new();
        for v in tx_secret_versions(&mut tx, &existing.id).await? {
            plan.push(match early.iter().position(|r| r.sealed_from(&v)) {
                Some(i) => early.swap_remove(i),
                None => sealer.reseal_one(v).await?,
            });
        }
        for r in &plan {
            let moved =
                move_secret_version(&mut tx, &r.read, &to.scope.env_id, r.blob.as_deref()).await?;
            if !moved {
                return Err(stale());
            }
            if let Some(new_ref) = &r.new_ref {
                let v = &r.read;
                set_version_backend(&mut tx, &v.secret_id, v.version, &v.backend, new_ref).await?;
            }
        }
    }
    let mut row = existing.clone();
    row.env_id.clone_from(&to.scope.env_id);
    row.name = to.name.to_owned();
    row.updated_at = state.clock.now_millis();
    row.updated_by = change.actor.display();
    // The grants the item gives itself (its parents), rewritten for its new place.
    let mut delta = TupleDelta {
        deletes: delete_tuples_of_source(&mut tx, &existing.id).await?,
        ..TupleDelta::default()
    };
    let spec: serde_json::Value = serde_json::from_str(&row.spec).map_err(AppError::internal)?;
    write_grants(&mut tx, kind, &row, &spec, &mut delta).await?;
    let input = VersionInput {
        event: "move",
        before: Some(snapshot(&existing, from)?),
        after: Some(snapshot(&row, to.scope)?),
        previous: Some(existing.version_id.clone()),
    };
    row.version_id = record_version(&mut tx, state, &row, change, input).await?;
    update_resource(&mut tx, &row, &existing.version_id)
        .await
        .map_err(name_taken(kind, to.name))?;
    // What the old place granted leaves the index before the commit, what the new one grants
    // enters after it: while the move commits, neither place grants access to the item.
    delta.commit(tx, state).await?;
    metrics::counter!("tether_resource_writes_total", "event" => "move").increment(1);
    Ok(row)
}
