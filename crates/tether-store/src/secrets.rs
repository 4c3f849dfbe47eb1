//! Organization KEKs and encrypted secret versions.

use std::sync::Arc;

use sqlx::any::AnyRow;
use sqlx::{Any, Executor, Row};

use crate::cache::Touch;
use crate::{Result, Store, Tx, values_list};

/// A stored organization KEK.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrgKekRow {
    /// Organization.
    pub org_id: String,
    /// KEK version (1, 2, ...).
    pub version: i64,
    /// `local` or a KMS provider.
    pub provider: String,
    /// Provider key id.
    pub key_id: String,
    /// The key wrapped by the root key (local provider only).
    pub wrapped: Option<Vec<u8>>,
    /// Creation time.
    pub created_at: i64,
    /// Whether new DEKs are wrapped by this KEK.
    pub active: bool,
}

fn kek_from_row(r: &AnyRow) -> Result<OrgKekRow> {
    Ok(OrgKekRow {
        org_id: r.try_get("org_id")?,
        version: r.try_get("version")?,
        provider: r.try_get("provider")?,
        key_id: r.try_get("key_id")?,
        wrapped: r.try_get("wrapped")?,
        created_at: r.try_get("created_at")?,
        active: r.try_get::<i64, _>("active")? == 1,
    })
}

/// One encrypted secret version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretVersionRow {
    /// The secret's resource id.
    pub secret_id: String,
    /// Version number, from 1.
    pub version: i64,
    /// Organization.
    pub org_id: String,
    /// Environment, or ''.
    pub env_id: String,
    /// The envelope; `None` once destroyed.
    pub blob: Option<Vec<u8>>,
    /// The KEK version that wraps the DEK.
    pub kek_version: i64,
    /// Creation time.
    pub created_at: i64,
    /// Writer.
    pub created_by: String,
    /// Destruction time.
    pub destroyed_at: Option<i64>,
    /// Where the blob is kept: `builtin` (the `blob` column), or an external backend.
    pub backend: String,
    /// The blob's reference in the external backend (then `blob` is empty).
    pub backend_ref: Option<String>,
}

fn version_from_row(r: &AnyRow) -> Result<SecretVersionRow> {
    Ok(SecretVersionRow {
        secret_id: r.try_get("secret_id")?,
        version: r.try_get("version")?,
        org_id: r.try_get("org_id")?,
        env_id: r.try_get("env_id")?,
        blob: r.try_get("blob")?,
        kek_version: r.try_get("kek_version")?,
        created_at: r.try_get("created_at")?,
        created_by: r.try_get("created_by")?,
        destroyed_at: r.try_get("destroyed_at")?,
        backend: r.try_get("backend")?,
        backend_ref: r.try_get("backend_ref")?,
    })
}

/// The active KEK of an organization.
pub async fn active_kek<'c, E: Executor<'c, Database = Any>>(
    db: E,
    org_id: &str,
) -> Result<Option<OrgKekRow>> {
    let row = sqlx::query("SELECT * FROM org_keks WHERE org_id = $1 AND active = 1")
        .bind(org_id)
        .fetch_optional(db)
        .await?;
    row.as_ref().map(kek_from_row).transpose()
}

/// Inserts a KEK; when it is active, the previous active KEK is deactivated.
pub async fn insert_kek(tx: &mut Tx, k: &OrgKekRow) -> Result<()> {
    if k.active {
        sqlx::query("UPDATE org_keks SET active = 0 WHERE org_id = $1")
            .bind(&k.org_id)
            .execute(&mut **tx)
            .await?;
    }
    sqlx::query(
        "INSERT INTO org_keks (org_id, version, provider, key_id, wrapped, created_at, active) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(&k.org_id)
    .bind(k.version)
    .bind(&k.provider)
    .bind(&k.key_id)
    .bind(k.wrapped.as_deref())
    .bind(k.created_at)
    .bind(i64::from(k.active))
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Inserts secret versions with multi-row statements. A clash on (secret, version) is
/// `AlreadyExists` (a concurrent writer got there first).
pub async fn insert_secret_versions(tx: &mut Tx, rows: &[SecretVersionRow]) -> Result<()> {
    for chunk in rows.chunks(50) {
        let sql = format!(
            "INSERT INTO secret_versions (secret_id, version, org_id, env_id, blob, kek_version, \
             created_at, created_by, destroyed_at) VALUES {}",
            values_list(tx.backend(), chunk.len(), 9)
        );
        // The statement text holds only generated placeholders; every value is bound.
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for v in chunk {
            q = q
                .bind(v.secret_id.clone())
                .bind(v.version)
                .bind(v.org_id.clone())
                .bind(v.env_id.clone())
                .bind(v.blob.clone())
                .bind(v.kek_version)
                .bind(v.created_at)
                .bind(v.created_by.clone())
                .bind(v.destroyed_at);
        }
        q.execute(&mut **tx).await?;
        for v in chunk {
            tx.touch(Touch::Secret(v.secret_id.clone()));
        }
    }
    Ok(())
}

/// Destroys a version's ciphertext (irreversible). Returns where its blob was kept,
/// (backend, reference if external), or `None` if the version does not exist.
pub async fn destroy_secret_version(
    tx: &mut Tx,
    secret_id: &str,
    version: i64,
    at: i64,
) -> Result<Option<(String, Option<String>)>> {
    let row = sqlx::query(
        "UPDATE secret_versions SET blob = NULL, destroyed_at = COALESCE(destroyed_at, $3) \
         WHERE secret_id = $1 AND version = $2 RETURNING backend, backend_ref",
    )
    .bind(secret_id)
    .bind(version)
    .bind(at)
    .fetch_optional(&mut **tx)
    .await?;
    tx.touch(Touch::Secret(secret_id.to_owned()));
    row.map(|r| Ok((r.try_get("backend")?, r.try_get("backend_ref")?)))
        .transpose()
}

/// Destroys the data of every version older than `keep_from` (max-versions pruning).
/// Returns the external copies that the caller must delete from their backends, as
/// (version, backend, reference).
pub async fn destroy_versions_before(
    tx: &mut Tx,
    secret_id: &str,
    keep_from: i64,
    at: i64,
) -> Result<Vec<(i64, String, String)>> {
    let rows = sqlx::query(
        "UPDATE secret_versions SET blob = NULL, destroyed_at = $3 \
         WHERE secret_id = $1 AND version < $2 AND blob IS NOT NULL \
         RETURNING version, backend, backend_ref",
    )
    .bind(secret_id)
    .bind(keep_from)
    .bind(at)
    .fetch_all(&mut **tx)
    .await?;
    tx.touch(Touch::Secret(secret_id.to_owned()));
    external_copies(&rows)
}

/// The external copies among version rows read with `version, backend, backend_ref`, as
/// (version, backend, reference); rows kept in the database itself have no reference.
fn external_copies(rows: &[AnyRow]) -> Result<Vec<(i64, String, String)>> {
    let mut external = Vec::new();
    for r in rows {
        let reference: Option<String> = r.try_get("backend_ref")?;
        if let Some(reference) = reference {
            external.push((r.try_get("version")?, r.try_get("backend")?, reference));
        }
    }
    Ok(external)
}

/// The copies of a secret's versions held by external backends, as (backend, reference).
pub async fn secret_external_copies<'c, E: Executor<'c, Database = Any>>(
    db: E,
    secret_id: &str,
) -> Result<Vec<(String, String)>> {
    let rows = sqlx::query(
        "SELECT backend, backend_ref FROM secret_versions \
         WHERE secret_id = $1 AND backend_ref IS NOT NULL",
    )
    .bind(secret_id)
    .fetch_all(db)
    .await?;
    rows.iter()
        .map(|r| Ok((r.try_get("backend")?, r.try_get("backend_ref")?)))
        .collect()
}

/// Deletes every version row of a secret (a purge). Returns the external copies that the
/// caller must delete from their backends, as (backend, reference).
pub async fn purge_secret_versions(tx: &mut Tx, secret_id: &str) -> Result<Vec<(String, String)>> {
    let rows = sqlx::query(
        "DELETE FROM secret_versions WHERE secret_id = $1 RETURNING version, backend, backend_ref",
    )
    .bind(secret_id)
    .fetch_all(&mut **tx)
    .await?;
    tx.touch(Touch::Secret(secret_id.to_owned()));
    Ok(external_copies(&rows)?
        .into_iter()
        .map(|(_, backend, reference)| (backend, reference))
        .collect())
}

/// Moves a version of a secret to another environment, with its blob sealed again for its new
/// place (`Some`; empty when an external backend holds it) or, for a destroyed version (`None`),
/// only its environment column. It applies only if the row is still as `read` shows it: the
/// same KEK version, environment and external reference, and live or destroyed as it was.
/// Returns whether it applied.
pub async fn move_secret_version(
    tx: &mut Tx,
    read: &SecretVersionRow,
    env_id: &str,
    blob: Option<&[u8]>,
) -> Result<bool> {
    let query = match blob {
        Some(blob) => sqlx::query(
            "UPDATE secret_versions SET env_id = $3, blob = $4 WHERE secret_id = $1 \
             AND version = $2 AND kek_version = $5 AND env_id = $6 \
             AND COALESCE(backend_ref, '') = $7 AND blob IS NOT NULL",
        )
        .bind(&read.secret_id)
        .bind(read.version)
        .bind(env_id)
        .bind(blob),
        // `$4 = 0` keeps the parameters in step with the other arm.
        None => sqlx::query(
            "UPDATE secret_versions SET env_id = $3 WHERE secret_id = $1 AND version = $2 \
             AND $4 = 0 AND kek_version = $5 AND env_id = $6 \
             AND COALESCE(backend_ref, '') = $7 AND blob IS NULL",
        )
        .bind(&read.secret_id)
        .bind(read.version)
        .bind(env_id)
        .bind(0_i64),
    };
    if_as_read(tx, query, read).await
}

/// Runs an update of a version row whose parameters `$5`, `$6` and `$7` are the KEK version,
/// environment and external reference that `read` shows (this function binds them), so that it
/// applies only to the row as it was read. Returns whether it applied.
pub(crate) async fn if_as_read<'q>(
    tx: &mut Tx,
    query: sqlx::query::Query<'q, Any, sqlx::any::AnyArguments>,
    read: &'q SecretVersionRow,
) -> Result<bool> {
    let done = query
        .bind(read.kek_version)
        .bind(&read.env_id)
        .bind(read.backend_ref.as_deref().unwrap_or_default())
        .execute(&mut **tx)
        .await?;
    tx.touch(Touch::Secret(read.secret_id.clone()));
    Ok(done.rows_affected() == 1)
}

/// Replaces a version's blob (KEK rotation rewraps the DEK; the data is not re-encrypted).
pub async fn rewrap_secret_version(
    tx: &mut Tx,
    secret_id: &str,
    version: i64,
    blob: &[u8],
    kek_version: i64,
) -> Result<()> {
    sqlx::query("UPDATE secret_versions SET blob = $3, kek_version = $4 WHERE secret_id = $1 AND version = $2")
        .bind(secret_id)
        .bind(version)
        .bind(blob)
        .bind(kek_version)
        .execute(&mut **tx)
        .await?;
    tx.touch(Touch::Secret(secret_id.to_owned()));
    Ok(())
}

/// One version, on the pool or in a transaction.
pub async fn secret_version<'c, E: Executor<'c, Database = Any>>(
    db: E,
    secret_id: &str,
    version: i64,
) -> Result<Option<SecretVersionRow>> {
    let row = sqlx::query("SELECT * FROM secret_versions WHERE secret_id = $1 AND version = $2")
        .bind(secret_id)
        .bind(version)
        .fetch_optional(db)
        .await?;
    row.as_ref().map(version_from_row).transpose()
}

/// Every version of a secret (in a transaction), oldest first.
pub async fn tx_secret_versions(tx: &mut Tx, secret_id: &str) -> Result<Vec<SecretVersionRow>> {
    let rows = sqlx::query("SELECT * FROM secret_versions WHERE secret_id = $1 ORDER BY version")
        .bind(secret_id)
        .fetch_all(&mut **tx)
        .await?;
    rows.iter().map(version_from_row).collect()
}

impl Store {
    /// [`secret_version`] through the hot-row cache (see `cache.rs`): the ciphertext row, shared.
    pub async fn secret_version_cached(
        &self,
        secret_id: &str,
        version: i64,
    ) -> Result<Option<Arc<SecretVersionRow>>> {
        if let Some(v) = self.cache.version(secret_id, version) {
            return Ok(Some(v));
        }
        let epoch = self.cache.epoch();
        // Boxed, as in `find_resource_cached`: only a miss pays for the query's future.
        let found = Box::pin(secret_version(&self.read, secret_id, version))
            .await?
            .map(Arc::new);
        if let Some(v) = &found {
            self.cache.put_version(epoch, v);
        }
        Ok(found)
    }

    /// A KEK by version.
    pub async fn org_kek(&self, org_id: &str, version: i64) -> Result<Option<OrgKekRow>> {
        let row = sqlx::query("SELECT * FROM org_keks WHERE org_id = $1 AND version = $2")
            .bind(org_id)
            .bind(version)
            .fetch_optional(&self.read)
            .await?;
        row.as_ref().map(kek_from_row).transpose()
    }

    /// Every version of a secret, oldest first.
    pub async fn secret_versions(&self, secret_id: &str) -> Result<Vec<SecretVersionRow>> {
        let rows =
            sqlx::query("SELECT * FROM secret_versions WHERE secret_id = $1 ORDER BY version")
                .bind(secret_id)
                .fetch_all(&self.read)
                .await?;
        rows.iter().map(version_from_row).collect()
    }

    /// Versions of an organization's secrets wrapped by a KEK older than `kek_version` (for
    /// rotation; those a newer rotation already rewrapped are left alone).
    pub async fn versions_to_rewrap(
        &self,
        org_id: &str,
        kek_version: i64,
    ) -> Result<Vec<SecretVersionRow>> {
        let rows = sqlx::query(
            "SELECT * FROM secret_versions WHERE org_id = $1 AND kek_version < $2 AND blob IS NOT NULL",
        )
        .bind(org_id)
        .bind(kek_version)
        .fetch_all(&self.read)
        .await?;
        rows.iter().map(version_from_row).collect()
    }
}
