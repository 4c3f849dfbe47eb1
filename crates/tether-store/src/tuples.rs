//! Authorization tuples, written in the same transaction as the resource they belong to.

use sqlx::Row;

use crate::changes::Event;
use crate::{Result, Store, Tx};

/// A stored relationship tuple.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct TupleRow {
    /// `type:id`.
    pub object: String,
    /// Relation name.
    pub relation: String,
    /// `type:id`, `type:id#relation` or `type:*`.
    pub subject: String,
    /// The organization the tuple belongs to.
    pub org_id: String,
    /// The resource whose write created this tuple (deleted with it).
    pub source_id: String,
    /// Optional condition as JSON text (`{"name":..,"context":{..}}`).
    pub condition: Option<String>,
}

/// Writes a tuple; writing an identical tuple again is a no-op.
pub async fn write_tuple(tx: &mut Tx, t: &TupleRow) -> Result<()> {
    sqlx::query(
        "INSERT INTO tuples (object, relation, subject, org_id, source_id, condition) \
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (object, relation, subject) DO NOTHING",
    )
    .bind(&t.object)
    .bind(&t.relation)
    .bind(&t.subject)
    .bind(&t.org_id)
    .bind(&t.source_id)
    .bind(t.condition.as_deref())
    .execute(&mut **tx)
    .await?;
    tx.record(Event::TupleWritten(t.clone()));
    Ok(())
}

/// Deletes every tuple a resource created, returning them (so in-memory indexes can follow).
pub async fn delete_tuples_of_source(tx: &mut Tx, source_id: &str) -> Result<Vec<TupleRow>> {
    let rows = sqlx::query(
        "SELECT object, relation, subject, org_id, source_id, condition FROM tuples \
         WHERE source_id = $1",
    )
    .bind(source_id)
    .fetch_all(&mut **tx)
    .await?;
    sqlx::query("DELETE FROM tuples WHERE source_id = $1")
        .bind(source_id)
        .execute(&mut **tx)
        .await?;
    deleted(tx, &rows)
}

/// Deletes every tuple whose object or subject is the given `type:id` (cascade on delete).
pub async fn delete_tuples_touching(tx: &mut Tx, object: &str) -> Result<Vec<TupleRow>> {
    let member = format!("{object}#%");
    let rows = sqlx::query(
        "SELECT object, relation, subject, org_id, source_id, condition FROM tuples \
         WHERE object = $1 OR subject = $1 OR subject LIKE $2",
    )
    .bind(object)
    .bind(&member)
    .fetch_all(&mut **tx)
    .await?;
    sqlx::query("DELETE FROM tuples WHERE object = $1 OR subject = $1 OR subject LIKE $2")
        .bind(object)
        .bind(&member)
        .execute(&mut **tx)
        .await?;
    deleted(tx, &rows)
}

/// Decodes deleted rows and records them for the other servers.
fn deleted(tx: &mut Tx, rows: &[sqlx::any::AnyRow]) -> Result<Vec<TupleRow>> {
    let rows = rows.iter().map(decode).collect::<Result<Vec<_>>>()?;
    for r in &rows {
        tx.record(Event::TupleDeleted(r.clone()));
    }
    Ok(rows)
}

fn decode(r: &sqlx::any::AnyRow) -> Result<TupleRow> {
    Ok(TupleRow {
        object: r.try_get("object")?,
        relation: r.try_get("relation")?,
        subject: r.try_get("subject")?,
        org_id: r.try_get("org_id")?,
        source_id: r.try_get("source_id")?,
        condition: r.try_get("condition")?,
    })
}

impl Store {
    /// Every tuple, to load the in-memory index at startup.
    pub async fn all_tuples(&self) -> Result<Vec<TupleRow>> {
        let rows = sqlx::query(
            "SELECT object, relation, subject, org_id, source_id, condition FROM tuples",
        )
        .fetch_all(&self.read)
        .await?;
        rows.iter().map(decode).collect()
    }
}

/// The subjects of `object#relation` (inside a transaction), e.g. a team's direct members.
pub async fn subjects_of(tx: &mut Tx, object: &str, relation: &str) -> Result<Vec<String>> {
    let rows = sqlx::query("SELECT subject FROM tuples WHERE object = $1 AND relation = $2")
        .bind(object)
        .bind(relation)
        .fetch_all(&mut **tx)
        .await?;
    rows.iter().map(|r| Ok(r.try_get("subject")?)).collect()
}
