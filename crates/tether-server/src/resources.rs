//! The resource write path. A create, update, delete or restore writes the resource row, its
//! audit version (YAML before and after, unified diff, hash-chained) and its authorization
//! tuples in one transaction; the in-memory authorization index follows after commit.

use std::collections::{BTreeMap, HashSet};

use serde_json::Value;
use similar::TextDiff;
use tether_core::id::{ResourceId, VersionId};
use tether_core::resource::{API_VERSION, AuditStamp};
use tether_core::{ErrorCode, Kind, Metadata, Resource, ResourceStatus, VersionRef};
use tether_store::audit::{append_version, lock_chain};
use tether_store::identity::delete_principal_credentials;
use tether_store::resources::{
    count_children, delete_resource, get_resource, insert_resource, update_resource,
};
use tether_store::tuples::{
    delete_tuples_of_source, delete_tuples_touching, subjects_of, write_tuple,
};
use tether_store::{ResourceRow, TupleRow, Tx, VersionRecord};

use crate::auth::Principal;
use crate::error::{AppError, AppResult};
use crate::kinds::{grants_for, validate_spec};
use crate::state::AppState;

/// Where a resource lives, with names for rendering.
#[derive(Debug, Clone, Default)]
pub struct ScopeNames {
    /// Organization id ('' for organizations).
    pub org_id: String,
    /// Organization name.
    pub org: String,
    /// Environment id ('' if org-level).
    pub env_id: String,
    /// Environment name.
    pub env: Option<String>,
}

/// Renders a stored row as the public envelope.
pub fn to_resource(
    row: &ResourceRow,
    scope: &ScopeNames,
    previous_version: Option<String>,
) -> Resource {
    let kind = Kind::parse(&row.kind).unwrap_or(Kind::Team);
    let labels: BTreeMap<String, String> = serde_json::from_str(&row.labels).unwrap_or_default();
    let spec: Value = serde_json::from_str(&row.spec).unwrap_or(Value::Null);
    Resource {
        api_version: API_VERSION.into(),
        kind,
        metadata: Metadata {
            name: row.name.clone(),
            org: (kind != Kind::Organization).then(|| scope.org.clone()),
            env: scope.env.clone(),
            id: Some(row.id.clone()),
            labels,
            version: Some(VersionRef {
                id: Some(row.version_id.clone()),
                previous_id: previous_version,
                message: None,
            }),
        },
        spec,
        status: Some(ResourceStatus {
            audit: AuditStamp {
                created_by: row.created_by.clone(),
                created_at: tether_core::clock::rfc3339(row.created_at),
                updated_by: row.updated_by.clone(),
                updated_at: tether_core::clock::rfc3339(row.updated_at),
            },
        }),
    }
}

/// The YAML snapshot kept in the audit trail: the envelope without volatile fields.
pub fn snapshot(row: &ResourceRow, scope: &ScopeNames) -> AppResult<String> {
    let mut r = to_resource(row, scope, None);
    r.metadata.version = None;
    r.status = None;
    serde_saphyr::to_string(&r).map_err(AppError::internal)
}

fn unified_diff(before: Option<&str>, after: Option<&str>) -> String {
    let (a, b) = (before.unwrap_or(""), after.unwrap_or(""));
    TextDiff::from_lines(a, b)
        .unified_diff()
        .context_radius(3)
        .header("before", "after")
        .to_string()
}

/// Checks a change message from a client. It is stored as text, which PostgreSQL cannot hold
/// with a NUL in it (the write would fail as an internal error).
pub fn check_message(message: Option<&str>) -> AppResult<()> {
    if message.is_some_and(|m| m.contains('\0')) {
        return Err(AppError::new(
            ErrorCode::InvalidArgument,
            "the change message contains a NUL character",
        ));
    }
    Ok(())
}

/// A change about to be written.
pub struct Change<'a> {
    /// Who.
    pub actor: &'a Principal,
    /// Optional message.
    pub message: Option<String>,
    /// Event name override (`restore`).
    pub event: Option<&'static str>,
}

/// The tuples a committed transaction wrote and deleted, to mirror into the index.
#[derive(Default)]
pub struct TupleDelta {
    pub(crate) writes: Vec<TupleRow>,
    pub(crate) deletes: Vec<TupleRow>,
}

impl TupleDelta {
    /// The tuples the transaction takes away and the ones it adds; those it deletes and writes
    /// again unchanged (an update rewrites all of a row's grants) are in neither.
    fn changes(self) -> (Vec<TupleRow>, Vec<TupleRow>) {
        let TupleDelta { writes, deletes } = self;
        let withdrawn = deletes
            .iter()
            .filter(|d| !writes.contains(d))
            .cloned()
            .collect();
        let granted = writes
            .into_iter()
            .filter(|w| !deletes.contains(w))
            .collect();
        (withdrawn, granted)
    }

    /// Commits a transaction and mirrors its tuples into the index in the order that never
    /// grants more than the committed state: what it takes away leaves the index before the
    /// commit (a revocation is in force by the time its write commits), and what it adds
    /// enters after it. If the commit fails, what was taken away comes back.
    pub async fn commit(self, tx: tether_store::Tx, state: &AppState) -> AppResult<()> {
        self.commit_created(tx, state, &[]).await
    }

    /// [`Self::commit`] for a transaction that created the resources `created` (their ids):
    /// the tuples *on* them (whose object is one of them) enter the index before the commit
    /// too. Mirrored after it, a request could find a new row between the commit and the
    /// mirroring and be refused as if it did not exist (the second of two concurrent first
    /// writes of one secret got a 404). Early is invisible: no request can name an object
    /// whose id the commit has not yet made visible, and no such tuple was in the index
    /// before (a restored id's tuples went with its delete), so taking them back when the
    /// commit fails drops nothing live.
    pub async fn commit_created(
        self,
        tx: tether_store::Tx,
        state: &AppState,
        created: &[&str],
    ) -> AppResult<()> {
        let on_created = |t: &TupleRow| {
            t.object
                .split_once(':')
                .is_some_and(|(_, id)| created.contains(&id))
        };
        let (withdrawn, granted) = self.changes();
        let (early, late): (Vec<TupleRow>, Vec<TupleRow>) =
            granted.into_iter().partition(on_created);
        if !early.is_empty() || !withdrawn.is_empty() {
            state.authz.apply(&early, &withdrawn);
        }
        if let Err(e) = tx.commit().await {
            if !early.is_empty() || !withdrawn.is_empty() {
                state.authz.apply(&withdrawn, &early);
            }
            return Err(AppError::internal(e));
        }
        if !late.is_empty() {
            state.authz.apply(&late, &[]);
        }
        Ok(())
    }
}

pub(crate) struct VersionInput<'a> {
    pub(crate) event: &'a str,
    pub(crate) before: Option<String>,
    pub(crate) after: Option<String>,
    pub(crate) previous: Option<String>,
}

pub(crate) async fn record_version(
    tx: &mut Tx,
    state: &AppState,
    row: &ResourceRow,
    change: &Change<'_>,
    v: VersionInput<'_>,
) -> AppResult<String> {
    let mut rec = version_record(state, row, change, v);
    append_version(tx, &mut rec).await?;
    Ok(rec.id)
}

/// The audit version record of a change, not yet chained (see [`record_version`]).
pub(crate) fn version_record(
    state: &AppState,
    row: &ResourceRow,
    change: &Change<'_>,
    v: VersionInput<'_>,
) -> VersionRecord {
    VersionRecord {
        id: VersionId::generate().to_string(),
        org_id: chain_org(row).to_owned(),
        resource_kind: row.kind.clone(),
        resource_id: row.id.clone(),
        resource_name: row.name.clone(),
        env_id: row.env_id.clone(),
        previous_version_id: v.previous,
        event: change.event.unwrap_or(v.event).to_owned(),
        actor: change.actor.display(),
        at: state.clock.now_millis(),
        message: change.message.clone(),
        diff: unified_diff(v.before.as_deref(), v.after.as_deref()),
        yaml_before: v.before,
        yaml_after: v.after,
        ..VersionRecord::default()
    }
}

pub(crate) async fn write_grants(
    tx: &mut Tx,
    kind: Kind,
    row: &ResourceRow,
    spec: &Value,
    delta: &mut TupleDelta,
) -> AppResult<()> {
    let grants = grants_for(tx, kind, row, spec).await?;
    if kind == Kind::Team {
        refuse_team_cycle(tx, &row.id, &grants).await?;
    }
    for g in grants {
        let t = TupleRow {
            object: g.object,
            relation: g.relation,
            subject: g.subject,
            org_id: row.org_id.clone(),
            source_id: row.id.clone(),
            condition: g.condition,
        };
        write_tuple(tx, &t).await?;
        delta.writes.push(t);
    }
    Ok(())
}

/// Refuses a team membership that would make a team (transitively) contain itself.
async fn refuse_team_cycle(
    tx: &mut Tx,
    team_id: &str,
    grants: &[crate::kinds::Grant],
) -> AppResult<()> {
    let me = format!("team:{team_id}");
    let mut stack: Vec<String> = grants
        .iter()
        .filter_map(|g| {
            g.subject
                .strip_suffix("#member")
                .filter(|s| s.starts_with("team:"))
                .map(str::to_owned)
        })
        .collect();
    let mut seen = HashSet::new();
    while let Some(team) = stack.pop() {
        if team == me {
            return Err(AppError::new(
                ErrorCode::TeamCycle,
                "this membership would make the team contain itself",
            ));
        }
        if !seen.insert(team.clone()) || seen.len() > 10_000 {
            continue;
        }
        for s in subjects_of(tx, &team, "member").await? {
            if let Some(t) = s.strip_suffix("#member") {
                stack.push(t.to_owned());
            }
        }
    }
    Ok(())
}

/// Secret state (`current_version`, `deleted`) is the server's: a client's metadata update
/// keeps the stored values.
fn keep_secret_state(stored: &str, mut spec: Value) -> Value {
    let old: Value = serde_json::from_str(stored).unwrap_or(Value::Null);
    if let Some(obj) = spec.as_object_mut() {
        obj.insert(
            "current_version".into(),
            old.get("current_version")
                .cloned()
                .unwrap_or(Value::from(0)),
        );
        obj.insert(
            "deleted".into(),
            old.get("deleted").cloned().unwrap_or(Value::Bool(false)),
        );
    }
    spec
}

/// Creates a resource. The caller has validated the scope and authorized the write.
pub async fn create(
    state: &AppState,
    scope: &ScopeNames,
    kind: Kind,
    manifest: &Resource,
    change: &Change<'_>,
) -> AppResult<ResourceRow> {
    let name = tether_core::Name::parse_for(kind, &manifest.metadata.name)
        .map_err(|e| AppError::new(ErrorCode::InvalidName, e.to_string()))?;
    let mut spec = validate_spec(kind, &manifest.spec)?;
    if kind == Kind::Secret {
        spec = keep_secret_state("{}", spec);
    }
    let id = match kind {
        Kind::Organization => tether_core::id::OrgId::generate().to_string(),
        Kind::Environment => tether_core::id::EnvId::generate().to_string(),
        _ => ResourceId::generate().to_string(),
    };
    let fresh = Fresh {
        id,
        name: name.to_string(),
        event: "create",
        previous: None,
    };
    insert_fresh(state, scope, kind, manifest, &spec, change, fresh).await
}

/// What distinguishes a first insert from a re-creation by restore.
struct Fresh {
    id: String,
    name: String,
    event: &'static str,
    previous: Option<String>,
}

/// Inserts a new row with its tuples and its first (or restoring) audit version.
async fn insert_fresh(
    state: &AppState,
    scope: &ScopeNames,
    kind: Kind,
    manifest: &Resource,
    spec: &Value,
    change: &Change<'_>,
    fresh: Fresh,
) -> AppResult<ResourceRow> {
    let now = state.clock.now_millis();
    let mut row = ResourceRow {
        id: fresh.id,
        org_id: scope.org_id.clone(),
        env_id: scope.env_id.clone(),
        kind: kind.to_string(),
        name: fresh.name,
        spec: spec.to_string(),
        labels: serde_json::to_string(&manifest.metadata.labels).map_err(AppError::internal)?,
        created_at: now,
        created_by: change.actor.display(),
        updated_at: now,
        updated_by: change.actor.display(),
        version_id: String::new(),
    };
    let mut tx = state.store.begin().await?;
    // The chain lock first, as every write of an existing row takes it (see `lock_chain`).
    lock_chain(&mut tx, chain_org(&row)).await?;
    let mut delta = TupleDelta::default();
    write_grants(&mut tx, kind, &row, spec, &mut delta).await?;
    if kind == Kind::Organization && fresh.event == "create" {
        owner_grant(&mut tx, &row, change.actor, &mut delta).await?;
    }
    let after = snapshot(&row, scope)?;
    let input = VersionInput {
        event: fresh.event,
        before: None,
        after: Some(after),
        previous: fresh.previous,
    };
    row.version_id = record_version(&mut tx, state, &row, change, input).await?;
    insert_resource(&mut tx, &row)
        .await
        .map_err(name_taken(kind, &row.name))?;
    delta.commit_created(tx, state, &[&row.id]).await?;
    metrics::counter!("tether_resource_writes_total", "event" => fresh.event).increment(1);
    Ok(row)
}

/// The creator of an organization becomes its owner.
async fn owner_grant(
    tx: &mut Tx,
    org: &ResourceRow,
    actor: &Principal,
    delta: &mut TupleDelta,
) -> AppResult<()> {
    let t = TupleRow {
        object: crate::model::org_object(&org.id),
        relation: "owner".into(),
        subject: actor.subject(),
        org_id: org.id.clone(),
        source_id: org.id.clone(),
        condition: None,
    };
    write_tuple(tx, &t).await?;
    delta.writes.push(t);
    Ok(())
}

/// The error of a write that would give a `kind` the `name` another one in its scope has:
/// `already_exists`, naming it; any other store error as it is.
pub(crate) fn name_taken(
    kind: Kind,
    name: &str,
) -> impl FnOnce(tether_store::StoreError) -> AppError + '_ {
    move |e| match e {
        tether_store::StoreError::AlreadyExists => AppError::new(
            ErrorCode::AlreadyExists,
            format!("{} '{name}' already exists", kind.singular()),
        ),
        other => other.into(),
    }
}

/// How many times a write is tried on a row that other writers keep changing under it.
const FRESH_ATTEMPTS: usize = 8;

/// Begins a write of the row that `read` was read from, takes its organization's chain lock
/// ([`lock_chain`]), and reads the row again. A read-modify-write must start from this read,
/// not from the row the guard read before the write began: a metadata update that raced a
/// new version once put back the old `current_version`, and every later version write of that
/// secret collided with a version that existed. [`update_resource`] still refuses a write whose
/// row changed since (a writer that did not take the lock first), and [`on_fresh_row`] then
/// runs it again.
pub(crate) async fn begin_on_row(
    state: &AppState,
    read: &ResourceRow,
) -> AppResult<(Tx, ResourceRow)> {
    let mut tx = state.store.begin().await?;
    lock_chain(&mut tx, chain_org(read)).await?;
    let row = get_resource(&mut *tx, &read.id)
        .await?
        .ok_or_else(|| AppError::new(ErrorCode::NotFound, "not found"))?;
    Ok((tx, row))
}

/// The organization whose version chain records a row's changes (an organization's own).
fn chain_org(row: &ResourceRow) -> &str {
    if row.org_id.is_empty() {
        &row.id
    } else {
        &row.org_id
    }
}

/// Runs `write` (which starts with [`begin_on_row`]) again each time another writer changed
/// its row between its read and its update ([`AppError::is_stale`]).
pub(crate) async fn on_fresh_row<T, Fut>(mut write: impl FnMut() -> Fut) -> AppResult<T>
where
    Fut: Future<Output = AppResult<T>>,
{
    for _ in 0..FRESH_ATTEMPTS {
        match write().await {
            Err(e) if e.is_stale() => continue,
            other => return other,
        }
    }
    Err(AppError::new(
        ErrorCode::Conflict,
        "other writers kept changing this resource; retry",
    ))
}

/// Replaces a resource's spec and labels. A no-op change writes nothing.
pub async fn update(
    state: &AppState,
    scope: &ScopeNames,
    existing: &ResourceRow,
    manifest: &Resource,
    change: &Change<'_>,
) -> AppResult<(ResourceRow, bool)> {
    on_fresh_row(|| update_once(state, scope, existing, manifest, change)).await
}

async fn update_once(
    state: &AppState,
    scope: &ScopeNames,
    stale: &ResourceRow,
    manifest: &Resource,
    change: &Change<'_>,
) -> AppResult<(ResourceRow, bool)> {
    let (mut tx, read) = begin_on_row(state, stale).await?;
    let existing = &read;
    let kind = Kind::parse(&existing.kind).ok_or_else(|| AppError::internal("stored kind"))?;
    let mut spec = validate_spec(kind, &manifest.spec)?;
    if kind == Kind::Secret && change.event.is_none() {
        spec = keep_secret_state(&existing.spec, spec);
    }
    let mut row = existing.clone();
    row.spec = spec.to_string();
    row.labels = serde_json::to_string(&manifest.metadata.labels).map_err(AppError::internal)?;
    let before = snapshot(existing, scope)?;
    let after = snapshot(&row, scope)?;
    if before == after && change.event.is_none() {
        return Ok((existing.clone(), false));
    }
    row.updated_at = state.clock.now_millis();
    row.updated_by = change.actor.display();
    let mut delta = TupleDelta::default();
    if kind != Kind::Organization {
        delta.deletes = delete_tuples_of_source(&mut tx, &row.id).await?;
    }
    write_grants(&mut tx, kind, &row, &spec, &mut delta).await?;
    let input = VersionInput {
        event: "update",
        before: Some(before),
        after: Some(after),
        previous: Some(existing.version_id.clone()),
    };
    row.version_id = record_version(&mut tx, state, &row, change, input).await?;
    update_resource(&mut tx, &row, &existing.version_id).await?;
    delta.commit(tx, state).await?;
    metrics::counter!("tether_resource_writes_total", "event" => "update").increment(1);
    Ok((row, true))
}

/// Renames a secret or a variable within its scope. It keeps its id, so its versions, its
/// encrypted data (bound to the id, not the name), its grants and its history stay with it;
/// the audit record of the rename shows the old and the new name. References to the old name
/// (`${secret:OLD}`) stop resolving, as they would after a delete.
pub async fn rename(
    state: &AppState,
    scope: &ScopeNames,
    existing: &ResourceRow,
    new_name: &str,
    change: &Change<'_>,
) -> AppResult<ResourceRow> {
    let (kind, name) = secret_or_variable(existing, new_name, "renamed")?;
    on_fresh_row(|| rename_once(state, scope, existing, name.as_str(), kind, change)).await
}

/// The kind of a secret or a variable that is to be `done` ("renamed", "moved") under the
/// name `new_name`, with that name checked; any other kind is refused.
pub(crate) fn secret_or_variable(
    existing: &ResourceRow,
    new_name: &str,
    done: &str,
) -> AppResult<(Kind, tether_core::Name)> {
    let kind = Kind::parse(&existing.kind).ok_or_else(|| AppError::internal("stored kind"))?;
    if !matches!(kind, Kind::Secret | Kind::Variable) {
        return Err(AppError::new(
            ErrorCode::InvalidArgument,
            format!("only secrets and variables can be {done}"),
        ));
    }
    let name = tether_core::Name::parse_for(kind, new_name)
        .map_err(|e| AppError::new(ErrorCode::InvalidName, e.to_string()))?;
    Ok((kind, name))
}

async fn rename_once(
    state: &AppState,
    scope: &ScopeNames,
    stale: &ResourceRow,
    new_name: &str,
    kind: Kind,
    change: &Change<'_>,
) -> AppResult<ResourceRow> {
    let (mut tx, existing) = begin_on_row(state, stale).await?;
    if existing.name == new_name {
        return Ok(existing);
    }
    let mut row = existing.clone();
    row.name = new_name.to_owned();
    row.updated_at = state.clock.now_millis();
    row.updated_by = change.actor.display();
    let input = VersionInput {
        event: "rename",
        before: Some(snapshot(&existing, scope)?),
        after: Some(snapshot(&row, scope)?),
        previous: Some(existing.version_id.clone()),
    };
    row.version_id = record_version(&mut tx, state, &row, change, input).await?;
    update_resource(&mut tx, &row, &existing.version_id)
        .await
        .map_err(name_taken(kind, new_name))?;
    tx.commit().await.map_err(AppError::internal)?;
    metrics::counter!("tether_resource_writes_total", "event" => "rename").increment(1);
    Ok(row)
}

/// Deletes a resource, its tuples and, for principals, every credential.
pub async fn delete(
    state: &AppState,
    scope: &ScopeNames,
    existing: &ResourceRow,
    change: &Change<'_>,
) -> AppResult<()> {
    let kind = Kind::parse(&existing.kind).ok_or_else(|| AppError::internal("stored kind"))?;
    if kind == Kind::Runner {
        // Boxed: it deletes the runner's service account through this function.
        Box::pin(crate::tunnel::registry::before_delete(
            state, scope, existing, change,
        ))
        .await?;
    }
    // The row as it is, under the chain lock (see `begin_on_row`).
    let (mut tx, fresh) = begin_on_row(state, existing).await?;
    let existing = &fresh;
    refuse_if_not_empty(&mut tx, kind, existing).await?;
    let mut delta = TupleDelta {
        deletes: delete_tuples_of_source(&mut tx, &existing.id).await?,
        ..TupleDelta::default()
    };
    let touching = match kind {
        Kind::User => Some(format!("user:{}", existing.id)),
        Kind::ServiceAccount => Some(format!("service_account:{}", existing.id)),
        Kind::Team => Some(format!("team:{}", existing.id)),
        Kind::Environment => Some(crate::model::env_object(&existing.id)),
        Kind::Organization => Some(crate::model::org_object(&existing.id)),
        Kind::RoleBinding | Kind::Secret | Kind::Variable | Kind::Runner => None,
    };
    if let Some(obj) = touching {
        delta
            .deletes
            .extend(delete_tuples_touching(&mut tx, &obj).await?);
    }
    if matches!(kind, Kind::User | Kind::ServiceAccount) {
        delete_principal_credentials(&mut tx, &existing.id, state.clock.now_millis()).await?;
    }
    let before = snapshot(existing, scope)?;
    let input = VersionInput {
        event: "delete",
        before: Some(before),
        after: None,
        previous: Some(existing.version_id.clone()),
    };
    record_version(&mut tx, state, existing, change, input).await?;
    delete_resource(&mut tx, &existing.id).await?;
    // A deleted principal's keys go with it, here and (through the changelog) elsewhere.
    let principal = matches!(kind, Kind::User | Kind::ServiceAccount);
    if principal {
        tx.record(tether_store::changes::Event::KeysOfOwnerRevoked {
            owner_id: existing.id.clone(),
        });
    }
    delta.commit(tx, state).await?;
    if principal {
        state.keys.forget_owner(&existing.id);
    }
    metrics::counter!("tether_resource_writes_total", "event" => "delete").increment(1);
    Ok(())
}

async fn refuse_if_not_empty(tx: &mut Tx, kind: Kind, row: &ResourceRow) -> AppResult<()> {
    let children = match kind {
        Kind::Organization => count_children(tx, &row.id, None).await?,
        Kind::Environment => count_children(tx, &row.org_id, Some(&row.id)).await?,
        _ => 0,
    };
    if children > 0 {
        return Err(AppError::new(
            ErrorCode::Conflict,
            format!(
                "{} '{}' still contains {children} resources; delete them first",
                kind.singular(),
                row.name
            ),
        ));
    }
    Ok(())
}

/// Parses a stored YAML snapshot back into a manifest (for restore).
pub fn parse_snapshot(yaml: &str) -> AppResult<Resource> {
    let opts = serde_saphyr::options! { strict_booleans: true };
    serde_saphyr::from_str_with_options(yaml, opts).map_err(AppError::internal)
}

/// Restores a resource to the state recorded in a version, writing a new version. A deleted
/// resource is re-created with its old id.
pub async fn restore(
    state: &AppState,
    scope: &ScopeNames,
    current: Option<&ResourceRow>,
    version: &VersionRecord,
    change: &Change<'_>,
) -> AppResult<ResourceRow> {
    let yaml = version
        .yaml_after
        .as_deref()
        .or(version.yaml_before.as_deref())
        .ok_or_else(|| {
            AppError::new(
                ErrorCode::Conflict,
                "this version has no snapshot to restore",
            )
        })?;
    let manifest = parse_snapshot(yaml)?;
    let restore = Change {
        actor: change.actor,
        message: change.message.clone(),
        event: Some("restore"),
    };
    match current {
        Some(row) => Ok(update(state, scope, row, &manifest, &restore).await?.0),
        None => recreate(state, scope, version, &manifest, &restore).await,
    }
}

async fn recreate(
    state: &AppState,
    scope: &ScopeNames,
    version: &VersionRecord,
    manifest: &Resource,
    change: &Change<'_>,
) -> AppResult<ResourceRow> {
    let kind = manifest.kind;
    // A secret's row goes only when it is purged, and its versions' data went with it.
    if kind == Kind::Secret {
        return Err(AppError::new(
            ErrorCode::Conflict,
            format!(
                "secret '{}' was purged and its data is gone; write a new secret instead",
                manifest.metadata.name
            ),
        ));
    }
    let spec = validate_spec(kind, &manifest.spec)?;
    let fresh = Fresh {
        id: version.resource_id.clone(),
        name: manifest.metadata.name.clone(),
        event: "restore",
        previous: Some(version.id.clone()),
    };
    insert_fresh(state, scope, kind, manifest, &spec, change, fresh).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tuple(object: &str, subject: &str) -> TupleRow {
        TupleRow {
            object: object.into(),
            relation: "viewer".into(),
            subject: subject.into(),
            org_id: "o".into(),
            source_id: "s".into(),
            condition: None,
        }
    }

    /// A rewrite of a row's grants withdraws only what it drops and grants only what it adds:
    /// a grant it keeps never leaves the index while the write commits.
    #[test]
    fn a_delta_withdraws_and_grants_only_what_changes() {
        let (kept, dropped, added) = (
            tuple("resource:r", "user:kept"),
            tuple("resource:r", "user:dropped"),
            tuple("resource:r", "user:added"),
        );
        let delta = TupleDelta {
            writes: vec![kept.clone(), added.clone()],
            deletes: vec![dropped.clone(), kept],
        };
        let (withdrawn, granted) = delta.changes();
        assert_eq!(withdrawn, vec![dropped]);
        assert_eq!(granted, vec![added]);
    }
}
