//! Small installation-wide values (the API-key pepper, sealed signing keys, ...).

use sqlx::Row;

use crate::{Result, Store, Tx};

impl Store {
    /// Reads a setting.
    pub async fn get_setting(&self, key: &str) -> Result<Option<Vec<u8>>> {
        let row = sqlx::query("SELECT value FROM settings WHERE key = $1")
            .bind(key)
            .fetch_optional(&self.read)
            .await?;
        Ok(row.map(|r| r.try_get("value")).transpose()?)
    }
}

/// Writes a setting only if it is not there yet; returns the value that is stored afterwards,
/// so two servers starting at once agree on one value.
pub async fn init_setting(tx: &mut Tx, key: &str, value: &[u8]) -> Result<Vec<u8>> {
    sqlx::query("INSERT INTO settings (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING")
        .bind(key)
        .bind(value)
        .execute(&mut **tx)
        .await?;
    let row = sqlx::query("SELECT value FROM settings WHERE key = $1")
        .bind(key)
        .fetch_one(&mut **tx)
        .await?;
    Ok(row.try_get("value")?)
}

/// Replaces a setting.
pub async fn put_setting(tx: &mut Tx, key: &str, value: &[u8]) -> Result<()> {
    sqlx::query(
        "INSERT INTO settings (key, value) VALUES ($1, $2) \
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
    )
    .bind(key)
    .bind(value)
    .execute(&mut **tx)
    .await?;
    Ok(())
}
