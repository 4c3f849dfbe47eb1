//! The generic resource table: every kind shares one envelope, with a JSON spec.

use std::sync::Arc;

use sqlx::any::AnyRow;
use sqlx::{Any, Executor, Row};

use crate::cache::{self, ResourceKey, Touch};
use crate::{Result, Store, StoreError, Tx};

/// One stored resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceRow {
    /// Typed id.
    pub id: String,
    /// Owning organization id ('' for organizations).
    pub org_id: String,
    /// Environment id ('' for org-level resources).
    pub env_id: String,
    /// Kind name (`Environment`, ...).
    pub kind: String,
    /// Name, unique per (org, env, kind).
    pub name: String,
    /// The spec as JSON text.
    pub spec: String,
    /// Labels as JSON text.
    pub labels: String,
    /// Creation time (ms).
    pub created_at: i64,
    /// Creating principal.
    pub created_by: String,
    /// Last change time (ms).
    pub updated_at: i64,
    /// Last writer.
    pub updated_by: String,
    /// The current audit version id.
    pub version_id: String,
}

fn from_row(r: &AnyRow) -> Result<ResourceRow> {
    Ok(ResourceRow {
        id: r.try_get("id")?,
        org_id: r.try_get("org_id")?,
        env_id: r.try_get("env_id")?,
        kind: r.try_get("kind")?,
        name: r.try_get("name")?,
        spec: r.try_get("spec")?,
        labels: r.try_get("labels")?,
        created_at: r.try_get("created_at")?,
        created_by: r.try_get("created_by")?,
        updated_at: r.try_get("updated_at")?,
        updated_by: r.try_get("updated_by")?,
        version_id: r.try_get("version_id")?,
    })
}

/// Finds a resource by its scope and name, on the read pool or inside a transaction.
pub async fn find_resource<'c, E: Executor<'c, Database = Any>>(
    db: E,
    org_id: &str,
    env_id: &str,
    kind: &str,
    name: &str,
) -> Result<Option<ResourceRow>> {
    let row = sqlx::query(
        "SELECT id, org_id, env_id, kind, name, spec, labels, created_at, created_by, \
         updated_at, updated_by, version_id FROM resources \
         WHERE org_id = $1 AND env_id = $2 AND kind = $3 AND name = $4",
    )
    .bind(org_id)
    .bind(env_id)
    .bind(kind)
    .bind(name)
    .fetch_optional(db)
    .await?;
    row.as_ref().map(from_row).transpose()
}

/// Finds a resource by id, on the read pool or inside a transaction.
pub async fn get_resource<'c, E: Executor<'c, Database = Any>>(
    db: E,
    id: &str,
) -> Result<Option<ResourceRow>> {
    let row = sqlx::query(
        "SELECT id, org_id, env_id, kind, name, spec, labels, created_at, created_by, \
         updated_at, updated_by, version_id FROM resources WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(db)
    .await?;
    row.as_ref().map(from_row).transpose()
}

impl Store {
    /// [`find_resource`] through the hot-row cache (see `cache.rs`). Use it on read paths;
    /// a read inside a write transaction must query through the transaction instead.
    pub async fn find_resource_cached(
        &self,
        org_id: &str,
        env_id: &str,
        kind: &str,
        name: &str,
    ) -> Result<Option<Arc<ResourceRow>>> {
        let key = cache::row_key(org_id, env_id, kind, name);
        if let Some(row) = self.cache.row(&key) {
            return Ok(Some(row));
        }
        let epoch = self.cache.epoch();
        // Boxed: the query's future is large, and every caller's future would carry it
        // (and copy it on each request) for the rare miss.
        let found = Box::pin(find_resource(&self.read, org_id, env_id, kind, name))
            .await?
            .map(Arc::new);
        if let Some(row) = &found {
            self.cache.put_row(epoch, key, row);
        }
        Ok(found)
    }

    /// Lists resources of a kind in a scope, ordered by name. `env_id = None` lists every
    /// environment's and the org's own.
    pub async fn list_resources(
        &self,
        org_id: &str,
        env_id: Option<&str>,
        kind: &str,
    ) -> Result<Vec<ResourceRow>> {
        let rows =
            match env_id {
                Some(env) => sqlx::query(
                    "SELECT id, org_id, env_id, kind, name, spec, labels, created_at, created_by, \
                     updated_at, updated_by, version_id FROM resources \
                     WHERE org_id = $1 AND env_id = $2 AND kind = $3 ORDER BY name",
                )
                .bind(org_id)
                .bind(env)
                .bind(kind)
                .fetch_all(&self.read)
                .await?,
                None => sqlx::query(
                    "SELECT id, org_id, env_id, kind, name, spec, labels, created_at, created_by, \
                     updated_at, updated_by, version_id FROM resources \
                     WHERE org_id = $1 AND kind = $2 ORDER BY env_id, name",
                )
                .bind(org_id)
                .bind(kind)
                .fetch_all(&self.read)
                .await?,
            };
        rows.iter().map(from_row).collect()
    }
}

/// Inserts a new resource. A name clash gives [`StoreError::AlreadyExists`].
pub async fn insert_resource(tx: &mut Tx, r: &ResourceRow) -> Result<()> {
    sqlx::query(
        "INSERT INTO resources (id, org_id, env_id, kind, name, spec, labels, created_at, \
         created_by, updated_at, updated_by, version_id) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
    )
    .bind(&r.id)
    .bind(&r.org_id)
    .bind(&r.env_id)
    .bind(&r.kind)
    .bind(&r.name)
    .bind(&r.spec)
    .bind(&r.labels)
    .bind(r.created_at)
    .bind(&r.created_by)
    .bind(r.updated_at)
    .bind(&r.updated_by)
    .bind(&r.version_id)
    .execute(&mut **tx)
    .await?;
    tx.touch(touch_row(r));
    Ok(())
}

fn key_of(r: &ResourceRow) -> ResourceKey {
    (
        r.org_id.clone(),
        r.env_id.clone(),
        r.kind.clone(),
        r.name.clone(),
    )
}

fn touch_row(r: &ResourceRow) -> Touch {
    Touch::Resource {
        key: Some(key_of(r)),
        id: r.id.clone(),
    }
}

/// Replaces the mutable columns of a resource (all but its id, organization, kind and
/// creation), if it is still at `read_version`: the `version_id` it had when the writer read
/// it. [`StoreError::Stale`] if another writer changed it since (each change records a new
/// version id), so that a write based on an old read never overwrites a newer one;
/// [`StoreError::NotFound`] if it is gone.
pub async fn update_resource(tx: &mut Tx, r: &ResourceRow, read_version: &str) -> Result<()> {
    let done = sqlx::query(
        "UPDATE resources SET spec = $2, labels = $3, updated_at = $4, updated_by = $5, \
         version_id = $6, name = $7, env_id = $9 WHERE id = $1 AND version_id = $8",
    )
    .bind(&r.id)
    .bind(&r.spec)
    .bind(&r.labels)
    .bind(r.updated_at)
    .bind(&r.updated_by)
    .bind(&r.version_id)
    .bind(&r.name)
    .bind(read_version)
    .bind(&r.env_id)
    .execute(&mut **tx)
    .await?;
    if done.rows_affected() == 0 {
        let exists = sqlx::query("SELECT 1 FROM resources WHERE id = $1")
            .bind(&r.id)
            .fetch_optional(&mut **tx)
            .await?;
        return Err(match exists {
            Some(_) => StoreError::Stale,
            None => StoreError::NotFound,
        });
    }
    tx.touch(touch_row(r));
    Ok(())
}

/// Deletes a resource row.
pub async fn delete_resource(tx: &mut Tx, id: &str) -> Result<()> {
    let done = sqlx::query("DELETE FROM resources WHERE id = $1")
        .bind(id)
        .execute(&mut **tx)
        .await?;
    if done.rows_affected() == 0 {
        return Err(StoreError::NotFound);
    }
    tx.touch(Touch::Resource {
        key: None,
        id: id.to_owned(),
    });
    // A secret's versions go with it.
    tx.touch(Touch::Secret(id.to_owned()));
    Ok(())
}

/// Counts the resources that live inside an organization or environment (to refuse deleting a
/// scope that is not empty).
pub async fn count_children(tx: &mut Tx, org_id: &str, env_id: Option<&str>) -> Result<i64> {
    let row = match env_id {
        Some(env) => {
            sqlx::query("SELECT COUNT(*) AS n FROM resources WHERE org_id = $1 AND env_id = $2")
                .bind(org_id)
                .bind(env)
                .fetch_one(&mut **tx)
                .await?
        }
        None => {
            sqlx::query("SELECT COUNT(*) AS n FROM resources WHERE org_id = $1")
                .bind(org_id)
                .fetch_one(&mut **tx)
                .await?
        }
    };
    Ok(row.try_get("n")?)
}
