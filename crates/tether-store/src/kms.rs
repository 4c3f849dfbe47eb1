//! KEK rotation, root-key rotation and external secret backends: the queries that the
//! customer-managed-key slice adds on top of [`crate::secrets`].

use sqlx::any::AnyRow;
use sqlx::{Any, Executor, Row};

use crate::cache::Touch;
use crate::secrets::{OrgKekRow, SecretVersionRow};
use crate::{Result, Tx};

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

/// Every KEK of an organization, oldest first.
pub async fn org_keks<'c, E: Executor<'c, Database = Any>>(
    db: E,
    org_id: &str,
) -> Result<Vec<OrgKekRow>> {
    let rows = sqlx::query("SELECT * FROM org_keks WHERE org_id = $1 ORDER BY version")
        .bind(org_id)
        .fetch_all(db)
        .await?;
    rows.iter().map(kek_from_row).collect()
}

/// Every KEK that holds key material wrapped by the root key (for root-key rotation).
pub async fn root_wrapped_keks(tx: &mut Tx) -> Result<Vec<OrgKekRow>> {
    let rows =
        sqlx::query("SELECT * FROM org_keks WHERE wrapped IS NOT NULL ORDER BY org_id, version")
            .fetch_all(&mut **tx)
            .await?;
    rows.iter().map(kek_from_row).collect()
}

/// Replaces the root-wrapped key material of one KEK.
pub async fn set_kek_wrapped(
    tx: &mut Tx,
    org_id: &str,
    version: i64,
    wrapped: &[u8],
) -> Result<()> {
    sqlx::query("UPDATE org_keks SET wrapped = $3 WHERE org_id = $1 AND version = $2")
        .bind(org_id)
        .bind(version)
        .bind(wrapped)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// The highest KEK version of an organization (0 when it has none).
pub async fn max_kek_version(tx: &mut Tx, org_id: &str) -> Result<i64> {
    let row = sqlx::query("SELECT COALESCE(MAX(version), 0) AS v FROM org_keks WHERE org_id = $1")
        .bind(org_id)
        .fetch_one(&mut **tx)
        .await?;
    Ok(row.try_get("v")?)
}

/// Replaces a version's blob and KEK version, but only if the row is still as `read` shows
/// it: wrapped by the same KEK version, in the same environment (a move seals the data again
/// for its new place), kept at the same reference, and not destroyed. Returns whether the row
/// changed.
pub async fn rewrap_version_if(
    tx: &mut Tx,
    read: &SecretVersionRow,
    blob: &[u8],
    new_kek_version: i64,
) -> Result<bool> {
    let query = sqlx::query(
        "UPDATE secret_versions SET blob = $3, kek_version = $4 \
         WHERE secret_id = $1 AND version = $2 AND kek_version = $5 AND env_id = $6 \
         AND COALESCE(backend_ref, '') = $7 AND blob IS NOT NULL",
    )
    .bind(&read.secret_id)
    .bind(read.version)
    .bind(blob)
    .bind(new_kek_version);
    crate::secrets::if_as_read(tx, query, read).await
}

/// How many live (not destroyed) versions of an organization each KEK version wraps.
pub async fn versions_per_kek<'c, E: Executor<'c, Database = Any>>(
    db: E,
    org_id: &str,
) -> Result<Vec<(i64, i64)>> {
    let rows = sqlx::query(
        "SELECT kek_version, COUNT(*) AS n FROM secret_versions \
         WHERE org_id = $1 AND destroyed_at IS NULL GROUP BY kek_version ORDER BY kek_version",
    )
    .bind(org_id)
    .fetch_all(db)
    .await?;
    rows.iter()
        .map(|r| Ok((r.try_get("kek_version")?, r.try_get("n")?)))
        .collect()
}

/// An organization's secret backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrgBackendRow {
    /// Organization.
    pub org_id: String,
    /// `openbao-kv` or `aws-secretsmanager`.
    pub kind: String,
    /// JSON configuration (never credentials).
    pub config: String,
    /// Last change.
    pub updated_at: i64,
}

/// The backend of an organization, if it has a non-builtin one.
pub async fn org_backend<'c, E: Executor<'c, Database = Any>>(
    db: E,
    org_id: &str,
) -> Result<Option<OrgBackendRow>> {
    let row = sqlx::query("SELECT * FROM org_backends WHERE org_id = $1")
        .bind(org_id)
        .fetch_optional(db)
        .await?;
    row.map(|r| {
        Ok(OrgBackendRow {
            org_id: r.try_get("org_id")?,
            kind: r.try_get("kind")?,
            config: r.try_get("config")?,
            updated_at: r.try_get("updated_at")?,
        })
    })
    .transpose()
}

/// Sets (or, with kind `builtin`, removes) an organization's backend.
pub async fn put_org_backend(tx: &mut Tx, b: &OrgBackendRow) -> Result<()> {
    if b.kind == "builtin" {
        sqlx::query("DELETE FROM org_backends WHERE org_id = $1")
            .bind(&b.org_id)
            .execute(&mut **tx)
            .await?;
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO org_backends (org_id, kind, config, updated_at) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (org_id) DO UPDATE SET kind = excluded.kind, config = excluded.config, \
         updated_at = excluded.updated_at",
    )
    .bind(&b.org_id)
    .bind(&b.kind)
    .bind(&b.config)
    .bind(b.updated_at)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Where a version's blob lives: `("builtin", None)` or an external backend and its reference.
pub async fn version_backend<'c, E: Executor<'c, Database = Any>>(
    db: E,
    secret_id: &str,
    version: i64,
) -> Result<Option<(String, Option<String>)>> {
    let row = sqlx::query(
        "SELECT backend, backend_ref FROM secret_versions WHERE secret_id = $1 AND version = $2",
    )
    .bind(secret_id)
    .bind(version)
    .fetch_optional(db)
    .await?;
    row.map(|r| Ok((r.try_get("backend")?, r.try_get("backend_ref")?)))
        .transpose()
}

/// Records that a version's blob is stored in an external backend.
pub async fn set_version_backend(
    tx: &mut Tx,
    secret_id: &str,
    version: i64,
    backend: &str,
    backend_ref: &str,
) -> Result<()> {
    sqlx::query(
        "UPDATE secret_versions SET backend = $3, backend_ref = $4 WHERE secret_id = $1 AND version = $2",
    )
    .bind(secret_id)
    .bind(version)
    .bind(backend)
    .bind(backend_ref)
    .execute(&mut **tx)
    .await?;
    tx.touch(Touch::Secret(secret_id.to_owned()));
    Ok(())
}
