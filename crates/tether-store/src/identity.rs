//! Credentials: password hashes, API keys (stored as keyed hashes) and refresh tokens.

use sqlx::Row;
use sqlx::any::AnyRow;

use crate::{Result, Store, StoreError, Tx};

/// A stored API key. The key itself is never stored: only its id and keyed hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKeyRow {
    /// The public 12-character key id.
    pub id: String,
    /// Organization id of the owner.
    pub org_id: String,
    /// The owning principal's resource id.
    pub owner_id: String,
    /// `User` or `ServiceAccount`.
    pub owner_kind: String,
    /// A human name.
    pub name: String,
    /// HMAC-SHA256(pepper, secret).
    pub hash: Vec<u8>,
    /// What may be shown: prefix, id and the last 4 characters.
    pub display: String,
    /// JSON array of operation scopes (empty: all of the owner's permissions).
    pub scopes: String,
    /// Creation time (ms).
    pub created_at: i64,
    /// Who created it.
    pub created_by: String,
    /// Expiry (ms), if any.
    pub expires_at: Option<i64>,
    /// Last use (ms), recorded in batches.
    pub last_used_at: Option<i64>,
    /// Revocation time (ms), if revoked.
    pub revoked_at: Option<i64>,
}

fn key_from_row(r: &AnyRow) -> Result<ApiKeyRow> {
    Ok(ApiKeyRow {
        id: r.try_get("id")?,
        org_id: r.try_get("org_id")?,
        owner_id: r.try_get("owner_id")?,
        owner_kind: r.try_get("owner_kind")?,
        name: r.try_get("name")?,
        hash: r.try_get("hash")?,
        display: r.try_get("display")?,
        scopes: r.try_get("scopes")?,
        created_at: r.try_get("created_at")?,
        created_by: r.try_get("created_by")?,
        expires_at: r.try_get("expires_at")?,
        last_used_at: r.try_get("last_used_at")?,
        revoked_at: r.try_get("revoked_at")?,
    })
}

/// A stored refresh token (hash only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefreshTokenRow {
    /// Token id (the public part of the token).
    pub id: String,
    /// Rotation family: reuse of any used member revokes the whole family.
    pub family_id: String,
    /// The principal it authenticates.
    pub principal_id: String,
    /// The principal's organization.
    pub org_id: String,
    /// SHA-256 of the secret part.
    pub token_hash: Vec<u8>,
    /// Creation time (ms).
    pub created_at: i64,
    /// Expiry (ms).
    pub expires_at: i64,
    /// When it was exchanged, if it was.
    pub used_at: Option<i64>,
    /// When its family was revoked, if it was.
    pub revoked_at: Option<i64>,
}

fn refresh_from_row(r: &AnyRow) -> Result<RefreshTokenRow> {
    Ok(RefreshTokenRow {
        id: r.try_get("id")?,
        family_id: r.try_get("family_id")?,
        principal_id: r.try_get("principal_id")?,
        org_id: r.try_get("org_id")?,
        token_hash: r.try_get("token_hash")?,
        created_at: r.try_get("created_at")?,
        expires_at: r.try_get("expires_at")?,
        used_at: r.try_get("used_at")?,
        revoked_at: r.try_get("revoked_at")?,
    })
}

impl Store {
    /// A principal's password hash (PHC string).
    pub async fn password_hash(&self, principal_id: &str) -> Result<Option<String>> {
        let row = sqlx::query("SELECT password_hash FROM credentials WHERE principal_id = $1")
            .bind(principal_id)
            .fetch_optional(&self.read)
            .await?;
        Ok(row.map(|r| r.try_get("password_hash")).transpose()?)
    }

    /// Looks an API key up by its public id.
    pub async fn api_key(&self, id: &str) -> Result<Option<ApiKeyRow>> {
        let row = sqlx::query("SELECT * FROM api_keys WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.read)
            .await?;
        row.as_ref().map(key_from_row).transpose()
    }

    /// Lists the API keys of a principal, newest first.
    pub async fn api_keys_of(&self, owner_id: &str) -> Result<Vec<ApiKeyRow>> {
        let rows =
            sqlx::query("SELECT * FROM api_keys WHERE owner_id = $1 ORDER BY created_at DESC, id")
                .bind(owner_id)
                .fetch_all(&self.read)
                .await?;
        rows.iter().map(key_from_row).collect()
    }

    /// Records `last_used_at` for many keys in one transaction (the batched writer).
    pub async fn touch_api_keys(&self, uses: &[(String, i64)]) -> Result<()> {
        let mut tx = self.begin().await?;
        for (id, at) in uses {
            sqlx::query(
                "UPDATE api_keys SET last_used_at = $2 WHERE id = $1 \
                 AND (last_used_at IS NULL OR last_used_at < $2)",
            )
            .bind(id)
            .bind(*at)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Looks a refresh token up by id.
    pub async fn refresh_token(&self, id: &str) -> Result<Option<RefreshTokenRow>> {
        let row = sqlx::query("SELECT * FROM refresh_tokens WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.read)
            .await?;
        row.as_ref().map(refresh_from_row).transpose()
    }
}

/// Sets a principal's password hash.
pub async fn set_password_hash(tx: &mut Tx, principal_id: &str, phc: &str, at: i64) -> Result<()> {
    sqlx::query(
        "INSERT INTO credentials (principal_id, password_hash, updated_at) VALUES ($1, $2, $3) \
         ON CONFLICT (principal_id) DO UPDATE SET password_hash = excluded.password_hash, \
         updated_at = excluded.updated_at",
    )
    .bind(principal_id)
    .bind(phc)
    .bind(at)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Deletes everything that authenticates a principal: password, API keys, refresh tokens.
pub async fn delete_principal_credentials(tx: &mut Tx, principal_id: &str, at: i64) -> Result<()> {
    sqlx::query("DELETE FROM credentials WHERE principal_id = $1")
        .bind(principal_id)
        .execute(&mut **tx)
        .await?;
    sqlx::query("UPDATE api_keys SET revoked_at = $2 WHERE owner_id = $1 AND revoked_at IS NULL")
        .bind(principal_id)
        .bind(at)
        .execute(&mut **tx)
        .await?;
    sqlx::query(
        "UPDATE refresh_tokens SET revoked_at = $2 WHERE principal_id = $1 AND revoked_at IS NULL",
    )
    .bind(principal_id)
    .bind(at)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Inserts an API key row.
pub async fn insert_api_key(tx: &mut Tx, k: &ApiKeyRow) -> Result<()> {
    sqlx::query(
        "INSERT INTO api_keys (id, org_id, owner_id, owner_kind, name, hash, display, scopes, \
         created_at, created_by, expires_at, last_used_at, revoked_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
    )
    .bind(&k.id)
    .bind(&k.org_id)
    .bind(&k.owner_id)
    .bind(&k.owner_kind)
    .bind(&k.name)
    .bind(&k.hash)
    .bind(&k.display)
    .bind(&k.scopes)
    .bind(k.created_at)
    .bind(&k.created_by)
    .bind(k.expires_at)
    .bind(k.last_used_at)
    .bind(k.revoked_at)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Revokes one API key. Revoking a revoked key is not an error.
pub async fn revoke_api_key(tx: &mut Tx, id: &str, at: i64) -> Result<()> {
    let done =
        sqlx::query("UPDATE api_keys SET revoked_at = COALESCE(revoked_at, $2) WHERE id = $1")
            .bind(id)
            .bind(at)
            .execute(&mut **tx)
            .await?;
    if done.rows_affected() == 0 {
        return Err(StoreError::NotFound);
    }
    tx.record(crate::changes::Event::ApiKeyRevoked {
        key_id: id.to_owned(),
    });
    Ok(())
}

/// Inserts a refresh token.
pub async fn insert_refresh_token(tx: &mut Tx, t: &RefreshTokenRow) -> Result<()> {
    sqlx::query(
        "INSERT INTO refresh_tokens (id, family_id, principal_id, org_id, token_hash, created_at, \
         expires_at, used_at, revoked_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(&t.id)
    .bind(&t.family_id)
    .bind(&t.principal_id)
    .bind(&t.org_id)
    .bind(&t.token_hash)
    .bind(t.created_at)
    .bind(t.expires_at)
    .bind(t.used_at)
    .bind(t.revoked_at)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Marks a refresh token used, only if it is still unused. Returns false if it was used already
/// (a replay), so the caller can revoke the family.
pub async fn use_refresh_token(tx: &mut Tx, id: &str, at: i64) -> Result<bool> {
    let done = sqlx::query(
        "UPDATE refresh_tokens SET used_at = $2 WHERE id = $1 AND used_at IS NULL \
         AND revoked_at IS NULL",
    )
    .bind(id)
    .bind(at)
    .execute(&mut **tx)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Revokes every token of a family.
pub async fn revoke_refresh_family(tx: &mut Tx, family_id: &str, at: i64) -> Result<()> {
    sqlx::query(
        "UPDATE refresh_tokens SET revoked_at = $2 WHERE family_id = $1 AND revoked_at IS NULL",
    )
    .bind(family_id)
    .bind(at)
    .execute(&mut **tx)
    .await?;
    Ok(())
}
