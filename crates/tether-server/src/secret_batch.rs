//! Group commit of secret version writes.
//!
//! Every version write is a handful of statements (read the secret, insert the version, prune,
//! advance the audit chain, insert the audit record, update the secret), and on SQLite each
//! statement is a hand-off to the driver's thread. Writes that arrive while a batch is being
//! written wait in a queue; the next batch takes all of them (up to [`MAX_BATCH`]) into one
//! transaction, with one chain-head update per organization and multi-row inserts. Under no
//! load a batch is a single write and adds no delay.
//!
//! Each write is checked on its own (deleted secret, check-and-set) against the state the
//! earlier writes of the same batch left, and fails alone. A database error fails the whole
//! batch, and nothing of it is written.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock, Weak};

use tether_core::{ApiError, ErrorCode, Kind};
use tether_store::kms::set_version_backend;
use tether_store::resources::{find_resource, insert_resource, update_resource};
use tether_store::secrets::{SecretVersionRow, destroy_versions_before, insert_secret_versions};
use tether_store::{ResourceRow, StoreError, Tx, VersionRecord};
use tokio::sync::{mpsc, oneshot};

use crate::auth::Principal;
use crate::error::{AppError, AppResult};
use crate::kinds::SecretSpec;
use crate::resources::{Change, ScopeNames, TupleDelta, VersionInput, snapshot, version_record};
use crate::secret_ops::{NewVersion, RACE, conflict, new_row, spec_of};
use crate::secrets::{PreparedDek, aad_for};
use crate::state::{AppState, Inner};

/// At most this many writes per transaction.
pub const MAX_BATCH: usize = 128;

/// A version write waiting for its batch.
pub(crate) struct Pending {
    pub(crate) scope: ScopeNames,
    pub(crate) actor: Principal,
    pub(crate) v: Arc<NewVersion>,
    pub(crate) kek_version: i64,
    pub(crate) prepared: PreparedDek,
    pub(crate) reply: oneshot::Sender<AppResult<i64>>,
}

/// The queue in front of the batch writer (started on first use, on the writer thread).
#[derive(Default)]
pub struct Queue {
    sender: OnceLock<mpsc::Sender<Pending>>,
}

impl Queue {
    /// Queues a write and waits for the outcome of its batch.
    pub(crate) async fn submit(&self, state: &AppState, p: Pending) -> AppResult<i64> {
        let (reply, answer) = oneshot::channel();
        let p = Pending { reply, ..p };
        let sender = self.sender.get_or_init(|| start(state));
        sender
            .send(p)
            .await
            .map_err(|_| AppError::internal("the version writer has stopped"))?;
        answer
            .await
            .map_err(|_| AppError::internal("the version writer dropped a write"))?
    }
}

fn start(state: &AppState) -> mpsc::Sender<Pending> {
    let (tx, rx) = mpsc::channel(4 * MAX_BATCH);
    let weak = Arc::downgrade(&state.0);
    state.writer.spawn(run(weak, rx));
    tx
}

async fn run(state: Weak<Inner>, mut rx: mpsc::Receiver<Pending>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let Some(inner) = state.upgrade() else {
            return;
        };
        write_batch(&AppState(inner), std::mem::take(&mut batch)).await;
    }
}

/// The state of one secret across the writes of a batch.
struct Slot {
    existed: bool,
    /// The row's version id when the batch read it (see [`update_resource`]).
    read_version: String,
    row: ResourceRow,
    spec: SecretSpec,
    scope: ScopeNames,
    snapshot: Option<String>,
    first_version: i64,
}

type SlotKey = (String, String, String);

async fn write_batch(state: &AppState, batch: Vec<Pending>) {
    let mut replies = Vec::with_capacity(batch.len());
    let outcome = write_all(state, batch, &mut replies).await;
    match outcome {
        Ok(()) => {
            for (reply, result) in replies {
                if result.is_ok() {
                    metrics::counter!("tether_secret_versions_written_total").increment(1);
                }
                let _ = reply.send(result);
            }
        }
        Err(e) => {
            tracing::warn!(cause = ?e.cause, "a batch of secret versions was not written");
            for (reply, result) in replies {
                let failed = match result {
                    Ok(_) => Err(copy_error(&e)),
                    Err(own) => Err(own),
                };
                let _ = reply.send(failed);
            }
        }
    }
}

fn copy_error(e: &AppError) -> AppError {
    AppError {
        api: ApiError::new(e.api.code, e.api.message.clone()),
        cause: e.cause.clone(),
    }
}

type Replies = Vec<(oneshot::Sender<AppResult<i64>>, AppResult<i64>)>;

/// Writes what it can of the batch in one transaction. Each write's own outcome goes into
/// `replies`; an error return means the transaction was not committed.
async fn write_all(state: &AppState, batch: Vec<Pending>, replies: &mut Replies) -> AppResult<()> {
    let now = state.clock.now_millis();
    let mut backends = HashMap::new();
    for p in &batch {
        if !backends.contains_key(&p.scope.org_id) {
            let b = crate::backends::for_org(state, &p.scope.org_id).await;
            backends.insert(p.scope.org_id.clone(), b);
        }
    }
    let mut tx = state.store.begin().await?;
    // The chain locks first, in sorted order, then the rows (see `lock_chain`).
    let orgs: std::collections::BTreeSet<&str> =
        batch.iter().map(|p| p.scope.org_id.as_str()).collect();
    for org in orgs {
        tether_store::audit::lock_chain(&mut tx, org).await?;
    }
    let mut slots: HashMap<SlotKey, Slot> = HashMap::new();
    let mut order: Vec<SlotKey> = Vec::new();
    let mut versions = Vec::new();
    let mut externals = Vec::new();
    let mut records: Vec<VersionRecord> = Vec::new();
    let mut deks = Vec::new();
    for p in batch {
        let key = (
            p.scope.org_id.clone(),
            p.scope.env_id.clone(),
            p.v.name.clone(),
        );
        if !slots.contains_key(&key) {
            let slot = load_slot(&mut tx, &p, now).await?;
            slots.insert(key.clone(), slot);
            order.push(key.clone());
        }
        let Some(slot) = slots.get_mut(&key) else {
            continue;
        };
        let backend = match backends.get(&p.scope.org_id) {
            Some(Ok(b)) => Ok(b.clone()),
            Some(Err(e)) => Err(copy_error(e)),
            None => Ok(None),
        };
        let Pending {
            actor,
            v,
            kek_version,
            prepared,
            reply,
            ..
        } = p;
        let one = One {
            actor: &actor,
            v: &v,
            kek_version,
            now,
        };
        let result = async {
            let staged = one.stage(state, slot, prepared, backend?).await?;
            versions.push(staged.version);
            externals.extend(staged.external);
            records.push(staged.audit);
            deks.push(staged.dek);
            Ok(slot.spec.current_version)
        }
        .await;
        replies.push((reply, result));
    }
    if !versions.is_empty() {
        insert_secret_versions(&mut tx, &versions)
            .await
            .map_err(race_or)?;
    }
    for (secret_id, version, backend, reference) in &externals {
        set_version_backend(&mut tx, secret_id, *version, backend, reference).await?;
    }
    let mut delta = TupleDelta::default();
    let mut pruned = Vec::new();
    let mut touched = Vec::new();
    for key in &order {
        let Some(slot) = slots.get(key) else { continue };
        if slot.spec.current_version < slot.first_version {
            continue;
        }
        touched.push(slot);
    }
    tether_store::audit::append_versions(&mut tx, &mut records).await?;
    let mut created: Vec<&str> = Vec::new();
    for slot in touched {
        let row = &slot.row;
        if slot.spec.max_versions > 0 {
            let keep_from = slot.spec.current_version - i64::from(slot.spec.max_versions) + 1;
            let external = destroy_versions_before(&mut tx, &row.id, keep_from, now).await?;
            pruned.extend(
                external
                    .into_iter()
                    .map(|(v, kind, reference)| (row.id.clone(), v, kind, reference)),
            );
        }
        if slot.existed {
            update_resource(&mut tx, row, &slot.read_version)
                .await
                .map_err(race_or)?;
        } else {
            let spec = serde_json::to_value(&slot.spec).map_err(AppError::internal)?;
            crate::resources::write_grants(&mut tx, Kind::Secret, row, &spec, &mut delta).await?;
            insert_resource(&mut tx, row).await.map_err(race_or)?;
            created.push(row.id.as_str());
        }
    }
    delta.commit_created(tx, state, &created).await?;
    state.secrets.remember_committed(deks);
    crate::backends::forget_pruned(state, pruned);
    Ok(())
}

/// A lost race with another writer (another node, or a metadata update of a secret in the
/// batch): the caller retries the write.
fn race_or(e: StoreError) -> AppError {
    match e {
        StoreError::AlreadyExists | StoreError::Stale => AppError {
            api: ApiError::internal(),
            cause: Some(RACE.into()),
        },
        other => other.into(),
    }
}

async fn load_slot(tx: &mut Tx, p: &Pending, now: i64) -> AppResult<Slot> {
    let s = &p.scope;
    let current = find_resource(&mut **tx, &s.org_id, &s.env_id, "Secret", &p.v.name).await?;
    let (existed, row) = match current {
        Some(row) => (true, row),
        None => (false, new_row(s, &p.v.name, &p.actor, now)),
    };
    let spec = if existed {
        spec_of(&row)?
    } else {
        serde_json::from_value(serde_json::json!({})).map_err(AppError::internal)?
    };
    let snapshot = if existed {
        Some(snapshot(&row, s)?)
    } else {
        None
    };
    Ok(Slot {
        existed,
        read_version: row.version_id.clone(),
        first_version: spec.current_version + 1,
        row,
        spec,
        scope: s.clone(),
        snapshot,
    })
}

/// One write of a batch.
struct One<'a> {
    actor: &'a Principal,
    v: &'a NewVersion,
    kek_version: i64,
    now: i64,
}

/// What a write adds to the batch: its version row, its audit record, where an external
/// backend put the blob, and the DEK to cache after commit.
struct Staged {
    version: SecretVersionRow,
    audit: VersionRecord,
    external: Option<(String, i64, String, String)>,
    dek: crate::secrets::CommittedDek,
}

impl One<'_> {
    /// Checks the write against the secret's state so far, seals it, and advances the slot.
    async fn stage(
        &self,
        state: &AppState,
        slot: &mut Slot,
        prepared: PreparedDek,
        backend: Option<tether_store::kms::OrgBackendRow>,
    ) -> AppResult<Staged> {
        let name = &self.v.name;
        if slot.spec.deleted {
            return Err(AppError::new(
                ErrorCode::Conflict,
                format!("secret '{name}' is deleted; undelete it first"),
            ));
        }
        if let Some(id) = &self.v.expect_id
            && *id != slot.row.id
        {
            return Err(AppError::new(
                ErrorCode::Conflict,
                format!(
                    "secret '{name}' was renamed, moved or purged during this write; try again"
                ),
            ));
        }
        if slot.spec.cas_required && self.v.if_version.is_none() {
            return Err(crate::secret_ops::cas_required(name));
        }
        if let Some(expected) = self.v.if_version
            && expected != slot.spec.current_version
        {
            return Err(conflict(expected, slot.spec.current_version));
        }
        let version = slot.spec.current_version + 1;
        let (org_id, env_id) = (&slot.scope.org_id, &slot.scope.env_id);
        let aad = aad_for(org_id, env_id, &slot.row.id, version)?;
        let plain =
            zeroize::Zeroizing::new(serde_json::to_vec(&self.v.data).map_err(AppError::internal)?);
        let (blob, dek) = state.secrets.seal(prepared, &aad, &plain)?;
        let (blob, external) =
            crate::backends::store_blob(state, backend, org_id, &slot.row.id, version, blob)
                .await?;
        let dek = ((slot.row.id.clone(), version), org_id.clone(), dek);
        let (backend_kind, backend_ref) = match &external {
            Some((b, r)) => (b.clone(), Some(r.clone())),
            None => (crate::backends::kind::BUILTIN.to_owned(), None),
        };
        let record = SecretVersionRow {
            secret_id: slot.row.id.clone(),
            version,
            org_id: org_id.clone(),
            env_id: env_id.clone(),
            blob: Some(blob),
            kek_version: self.kek_version,
            created_at: self.now,
            created_by: self.actor.display(),
            destroyed_at: None,
            backend: backend_kind,
            backend_ref,
        };
        let external = external.map(|(b, r)| (slot.row.id.clone(), version, b, r));
        slot.spec.current_version = version;
        let mut row = slot.row.clone();
        row.spec = serde_json::to_string(&slot.spec).map_err(AppError::internal)?;
        row.updated_at = self.now;
        row.updated_by = self.actor.display();
        let after = snapshot(&row, &slot.scope)?;
        let change = Change {
            actor: self.actor,
            message: self
                .v
                .message
                .clone()
                .or_else(|| Some(format!("version {version}"))),
            event: None,
        };
        let existed_before = slot.existed || version > slot.first_version;
        let input = VersionInput {
            event: if existed_before { "update" } else { "create" },
            before: slot.snapshot.replace(after.clone()),
            after: Some(after),
            previous: existed_before.then(|| row.version_id.clone()),
        };
        let audit = version_record(state, &row, &change, input);
        row.version_id = audit.id.clone();
        slot.row = row;
        Ok(Staged {
            version: record,
            audit,
            external,
            dek,
        })
    }
}
