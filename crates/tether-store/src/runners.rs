//! Runner certificates (the active serial set checked on every tunnel handshake) and the last
//! known status of each runner.

use sqlx::any::AnyRow;
use sqlx::{Any, Executor, Row};

use crate::changes::Event;
use crate::{Result, Tx};

/// One certificate issued to a runner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunnerCertRow {
    /// Hex of the serial.
    pub serial: String,
    /// Organization id.
    pub org_id: String,
    /// The runner's resource id.
    pub runner_id: String,
    /// Issue time (ms).
    pub created_at: i64,
    /// Expiry (ms).
    pub not_after: i64,
    /// Revocation time (ms), if revoked.
    pub revoked_at: Option<i64>,
}

fn cert_from_row(r: &AnyRow) -> Result<RunnerCertRow> {
    Ok(RunnerCertRow {
        serial: r.try_get("serial")?,
        org_id: r.try_get("org_id")?,
        runner_id: r.try_get("runner_id")?,
        created_at: r.try_get("created_at")?,
        not_after: r.try_get("not_after")?,
        revoked_at: r.try_get("revoked_at")?,
    })
}

/// The last status a runner reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunnerStatusRow {
    /// The runner's resource id.
    pub runner_id: String,
    /// Organization id.
    pub org_id: String,
    /// Last time the server heard from it (ms).
    pub last_seen_at: i64,
    /// The version it reported in Hello.
    pub version: String,
    /// JSON array of the capabilities it reported.
    pub capabilities: String,
}

fn status_from_row(r: &AnyRow) -> Result<RunnerStatusRow> {
    Ok(RunnerStatusRow {
        runner_id: r.try_get("runner_id")?,
        org_id: r.try_get("org_id")?,
        last_seen_at: r.try_get("last_seen_at")?,
        version: r.try_get("version")?,
        capabilities: r.try_get("capabilities")?,
    })
}

/// Records a newly issued certificate.
pub async fn insert_runner_cert(tx: &mut Tx, c: &RunnerCertRow) -> Result<()> {
    sqlx::query(
        "INSERT INTO runner_certificates (serial, org_id, runner_id, created_at, not_after, \
         revoked_at) VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(&c.serial)
    .bind(&c.org_id)
    .bind(&c.runner_id)
    .bind(c.created_at)
    .bind(c.not_after)
    .bind(c.revoked_at)
    .execute(&mut **tx)
    .await?;
    if c.revoked_at.is_none() {
        tx.record(Event::RunnerCertIssued {
            serial: c.serial.clone(),
            org_id: c.org_id.clone(),
            runner_id: c.runner_id.clone(),
        });
    }
    Ok(())
}

/// Every certificate not revoked and not expired at `now`, across the installation.
pub async fn active_runner_certs<'c, E: Executor<'c, Database = Any>>(
    db: E,
    now: i64,
) -> Result<Vec<RunnerCertRow>> {
    let rows = sqlx::query(
        "SELECT * FROM runner_certificates WHERE revoked_at IS NULL AND not_after > $1",
    )
    .bind(now)
    .fetch_all(db)
    .await?;
    rows.iter().map(cert_from_row).collect()
}

/// Revokes every certificate of a runner; returns the serials revoked now.
pub async fn revoke_runner_certs(tx: &mut Tx, runner_id: &str, at: i64) -> Result<Vec<String>> {
    let rows = sqlx::query(
        "UPDATE runner_certificates SET revoked_at = $2 \
         WHERE runner_id = $1 AND revoked_at IS NULL RETURNING serial",
    )
    .bind(runner_id)
    .bind(at)
    .fetch_all(&mut **tx)
    .await?;
    let serials = rows
        .iter()
        .map(|r| Ok(r.try_get::<String, _>("serial")?))
        .collect::<Result<Vec<String>>>()?;
    tx.record(Event::RunnerCertsRevoked {
        runner_id: runner_id.to_owned(),
        serials: serials.clone(),
    });
    Ok(serials)
}

/// Revokes every API key of a principal that is not revoked yet.
pub async fn revoke_api_keys_of(tx: &mut Tx, owner_id: &str, at: i64) -> Result<u64> {
    let done = sqlx::query(
        "UPDATE api_keys SET revoked_at = $2 WHERE owner_id = $1 AND revoked_at IS NULL",
    )
    .bind(owner_id)
    .bind(at)
    .execute(&mut **tx)
    .await?;
    tx.record(Event::KeysOfOwnerRevoked {
        owner_id: owner_id.to_owned(),
    });
    Ok(done.rows_affected())
}

/// Records what a runner reported when its session started (or ended).
pub async fn upsert_runner_status(tx: &mut Tx, s: &RunnerStatusRow) -> Result<()> {
    sqlx::query(
        "INSERT INTO runner_status (runner_id, org_id, last_seen_at, version, capabilities) \
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (runner_id) DO UPDATE SET \
         last_seen_at = excluded.last_seen_at, version = excluded.version, \
         capabilities = excluded.capabilities",
    )
    .bind(&s.runner_id)
    .bind(&s.org_id)
    .bind(s.last_seen_at)
    .bind(&s.version)
    .bind(&s.capabilities)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// The last known status of every runner of an organization.
pub async fn runner_statuses<'c, E: Executor<'c, Database = Any>>(
    db: E,
    org_id: &str,
) -> Result<Vec<RunnerStatusRow>> {
    let rows = sqlx::query("SELECT * FROM runner_status WHERE org_id = $1")
        .bind(org_id)
        .fetch_all(db)
        .await?;
    rows.iter().map(status_from_row).collect()
}

/// Forgets a deleted runner's status (its certificates stay, revoked, for the record).
pub async fn delete_runner_status(tx: &mut Tx, runner_id: &str) -> Result<()> {
    sqlx::query("DELETE FROM runner_status WHERE runner_id = $1")
        .bind(runner_id)
        .execute(&mut **tx)
        .await?;
    Ok(())
}
