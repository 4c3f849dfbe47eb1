//! The version records: one hash chain per organization of every resource change, and the
//! chain helpers that the request log (`request_log`) shares.

use sqlx::any::AnyRow;
use sqlx::{Any, Executor, Row};

use crate::chain::{ChainBreak, GENESIS_HASH, hash_fields};
use crate::{Result, Store, StoreError, Tx, values_list};

/// One resource version. `seq`, `prev_hash` and `hash` are assigned by [`append_version`].
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize)]
pub struct VersionRecord {
    /// Version id (`ver_...`).
    pub id: String,
    /// The organization whose chain this belongs to.
    pub org_id: String,
    /// Position in the organization's chain, from 1.
    pub seq: i64,
    /// Kind of the changed resource.
    pub resource_kind: String,
    /// Id of the changed resource.
    pub resource_id: String,
    /// Name of the resource at this version.
    pub resource_name: String,
    /// Environment id, or ''.
    pub env_id: String,
    /// The version this one follows for the same resource.
    pub previous_version_id: Option<String>,
    /// `create`, `update`, `delete` or `restore`.
    pub event: String,
    /// The principal who made the change.
    pub actor: String,
    /// When (ms).
    pub at: i64,
    /// Optional change message.
    pub message: Option<String>,
    /// YAML snapshot before the change (none for a create).
    pub yaml_before: Option<String>,
    /// YAML snapshot after the change (none for a delete).
    pub yaml_after: Option<String>,
    /// Unified diff between the snapshots.
    pub diff: String,
    /// The previous record's hash in this chain.
    pub prev_hash: String,
    /// SHA-256(prev_hash ‖ canonical bytes).
    pub hash: String,
}

impl VersionRecord {
    fn compute_hash(&self, prev_hash: &str) -> String {
        let seq = self.seq.to_be_bytes();
        let at = self.at.to_be_bytes();
        let opt = |o: &Option<String>| o.clone().unwrap_or_else(|| "\u{0}".to_owned());
        let (prev_ver, msg) = (opt(&self.previous_version_id), opt(&self.message));
        let (before, after) = (opt(&self.yaml_before), opt(&self.yaml_after));
        hash_fields(
            prev_hash,
            &[
                self.id.as_bytes(),
                self.org_id.as_bytes(),
                &seq,
                self.resource_kind.as_bytes(),
                self.resource_id.as_bytes(),
                self.resource_name.as_bytes(),
                self.env_id.as_bytes(),
                prev_ver.as_bytes(),
                self.event.as_bytes(),
                self.actor.as_bytes(),
                &at,
                msg.as_bytes(),
                before.as_bytes(),
                after.as_bytes(),
                self.diff.as_bytes(),
            ],
        )
    }
}

fn version_from_row(r: &AnyRow) -> Result<VersionRecord> {
    Ok(VersionRecord {
        id: r.try_get("id")?,
        org_id: r.try_get("org_id")?,
        seq: r.try_get("seq")?,
        resource_kind: r.try_get("resource_kind")?,
        resource_id: r.try_get("resource_id")?,
        resource_name: r.try_get("resource_name")?,
        env_id: r.try_get("env_id")?,
        previous_version_id: r.try_get("previous_version_id")?,
        event: r.try_get("event")?,
        actor: r.try_get("actor")?,
        at: r.try_get("at")?,
        message: r.try_get("message")?,
        yaml_before: r.try_get("yaml_before")?,
        yaml_after: r.try_get("yaml_after")?,
        diff: r.try_get("diff")?,
        prev_hash: r.try_get("prev_hash")?,
        hash: r.try_get("hash")?,
    })
}

/// Advances a chain's head under the row lock and returns (new seq, previous hash). The first
/// statement is a write, so concurrent writers of the same chain queue here.
async fn bump_head(tx: &mut Tx, chain: &str) -> Result<(i64, String)> {
    bump_head_by(tx, chain, 1).await
}

/// Reserves `n` positions at once; returns the last reserved seq and the previous hash.
pub(crate) async fn bump_head_by(tx: &mut Tx, chain: &str, n: i64) -> Result<(i64, String)> {
    // One statement: create the head at genesis or advance it; RETURNING gives the new seq
    // and the hash it had (the upsert leaves the hash alone).
    let row = sqlx::query(
        "INSERT INTO chain_heads (chain, seq, hash) VALUES ($1, $2, $3) \
         ON CONFLICT (chain) DO UPDATE SET seq = chain_heads.seq + excluded.seq \
         RETURNING seq, hash",
    )
    .bind(chain)
    .bind(n)
    .bind(GENESIS_HASH)
    .fetch_one(&mut **tx)
    .await?;
    Ok((row.try_get("seq")?, row.try_get("hash")?))
}

pub(crate) async fn set_head_hash(tx: &mut Tx, chain: &str, hash: &str) -> Result<()> {
    sqlx::query("UPDATE chain_heads SET hash = $2 WHERE chain = $1")
        .bind(chain)
        .bind(hash)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Takes the write lock of an organization's version chain now, before the transaction reads
/// the rows it will change. Every write of the organization appends to this chain and holds
/// the lock until it commits; a writer that takes it first reads rows as the last writer left
/// them, and takes its locks in one order (chain, then rows), so it cannot deadlock with
/// another. Lock several chains in sorted order. On SQLite, whose one writer connection runs
/// transactions one after another, there is nothing to lock.
pub async fn lock_chain(tx: &mut Tx, org_id: &str) -> Result<()> {
    if tx.backend() == crate::Backend::Postgres {
        sqlx::query("SELECT seq FROM chain_heads WHERE chain = $1 FOR UPDATE")
            .bind(format!("versions:{org_id}"))
            .fetch_optional(&mut **tx)
            .await?;
    }
    Ok(())
}

/// Appends a version record to its organization's chain, filling `seq`, `prev_hash` and `hash`.
pub async fn append_version(tx: &mut Tx, v: &mut VersionRecord) -> Result<()> {
    let chain = format!("versions:{}", v.org_id);
    let (seq, prev) = bump_head(tx, &chain).await?;
    v.seq = seq;
    v.hash = v.compute_hash(&prev);
    v.prev_hash = prev;
    sqlx::query(
        "INSERT INTO versions (id, org_id, seq, resource_kind, resource_id, resource_name, env_id, \
         previous_version_id, event, actor, at, message, yaml_before, yaml_after, diff, prev_hash, \
         hash) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)",
    )
    .bind(&v.id)
    .bind(&v.org_id)
    .bind(v.seq)
    .bind(&v.resource_kind)
    .bind(&v.resource_id)
    .bind(&v.resource_name)
    .bind(&v.env_id)
    .bind(v.previous_version_id.as_deref())
    .bind(&v.event)
    .bind(&v.actor)
    .bind(v.at)
    .bind(v.message.as_deref())
    .bind(v.yaml_before.as_deref())
    .bind(v.yaml_after.as_deref())
    .bind(&v.diff)
    .bind(&v.prev_hash)
    .bind(&v.hash)
    .execute(&mut **tx)
    .await?;
    set_head_hash(tx, &chain, &v.hash).await
}

/// Appends several version records (of one or more organizations, each chain in the order
/// given) with one head update per chain and multi-row inserts: the batched form of
/// [`append_version`] for group commits.
pub async fn append_versions(tx: &mut Tx, records: &mut [VersionRecord]) -> Result<()> {
    let mut orgs: Vec<String> = Vec::new();
    for r in records.iter() {
        if !orgs.contains(&r.org_id) {
            orgs.push(r.org_id.clone());
        }
    }
    for org in &orgs {
        let chain = format!("versions:{org}");
        let n = records.iter().filter(|r| &r.org_id == org).count();
        let n = i64::try_from(n).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let (last, mut prev) = bump_head_by(tx, &chain, n).await?;
        let mut seq = last - n;
        for r in records.iter_mut().filter(|r| &r.org_id == org) {
            seq += 1;
            r.seq = seq;
            r.hash = r.compute_hash(&prev);
            r.prev_hash = std::mem::replace(&mut prev, r.hash.clone());
        }
        set_head_hash(tx, &chain, &prev).await?;
    }
    for chunk in records.chunks(30) {
        let sql = format!(
            "INSERT INTO versions (id, org_id, seq, resource_kind, resource_id, resource_name, \
             env_id, previous_version_id, event, actor, at, message, yaml_before, yaml_after, diff, \
             prev_hash, hash) VALUES {}",
            values_list(tx.backend(), chunk.len(), 17)
        );
        // The statement text holds only generated placeholders; every value is bound.
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for v in chunk {
            q = q
                .bind(v.id.clone())
                .bind(v.org_id.clone())
                .bind(v.seq)
                .bind(v.resource_kind.clone())
                .bind(v.resource_id.clone())
                .bind(v.resource_name.clone())
                .bind(v.env_id.clone())
                .bind(v.previous_version_id.clone())
                .bind(v.event.clone())
                .bind(v.actor.clone())
                .bind(v.at)
                .bind(v.message.clone())
                .bind(v.yaml_before.clone())
                .bind(v.yaml_after.clone())
                .bind(v.diff.clone())
                .bind(v.prev_hash.clone())
                .bind(v.hash.clone());
        }
        q.execute(&mut **tx).await?;
    }
    Ok(())
}

/// Reads one version by id, on the pool or in a transaction.
pub async fn get_version<'c, E: Executor<'c, Database = Any>>(
    db: E,
    id: &str,
) -> Result<Option<VersionRecord>> {
    let row = sqlx::query("SELECT * FROM versions WHERE id = $1")
        .bind(id)
        .fetch_optional(db)
        .await?;
    row.as_ref().map(version_from_row).transpose()
}

impl Store {
    /// Versions of one resource, oldest first.
    pub async fn versions_of(&self, resource_id: &str) -> Result<Vec<VersionRecord>> {
        let rows = sqlx::query("SELECT * FROM versions WHERE resource_id = $1 ORDER BY seq")
            .bind(resource_id)
            .fetch_all(&self.read)
            .await?;
        rows.iter().map(version_from_row).collect()
    }

    /// The version records, oldest first, of every resource of `kind` that was ever named `name`
    /// in an organization (so a renamed resource is listed with its whole history).
    pub async fn versions_named(
        &self,
        org_id: &str,
        kind: &str,
        name: &str,
    ) -> Result<Vec<VersionRecord>> {
        // Every record of each resource that ever had the name: a renamed one's history
        // follows it, under either name.
        let rows = sqlx::query(
            "SELECT * FROM versions WHERE org_id = $1 AND resource_id IN (SELECT resource_id \
             FROM versions WHERE org_id = $1 AND resource_kind = $2 AND resource_name = $3) \
             ORDER BY seq",
        )
        .bind(org_id)
        .bind(kind)
        .bind(name)
        .fetch_all(&self.read)
        .await?;
        rows.iter().map(version_from_row).collect()
    }

    /// Recomputes an organization's version chain; returns the first broken link, if any.
    /// Detects edited rows (hash mismatch), deleted rows (gap or hash link mismatch), reordered
    /// rows (link mismatch) and truncation of the tail (head mismatch).
    pub async fn verify_versions(&self, org_id: &str) -> Result<Option<ChainBreak>> {
        let rows = sqlx::query("SELECT * FROM versions WHERE org_id = $1 ORDER BY seq")
            .bind(org_id)
            .fetch_all(&self.read)
            .await?;
        let records: Vec<VersionRecord> =
            rows.iter().map(version_from_row).collect::<Result<_>>()?;
        let head = self.chain_head(&format!("versions:{org_id}")).await?;
        let items = records.iter().map(|r| {
            (
                r.seq,
                r.id.clone(),
                r.prev_hash.clone(),
                r.hash.clone(),
                r.compute_hash(&r.prev_hash),
            )
        });
        Ok(verify_links(items, head, (1, GENESIS_HASH.to_owned())))
    }

    pub(crate) async fn chain_head(&self, chain: &str) -> Result<Option<(i64, String)>> {
        let row = sqlx::query("SELECT seq, hash FROM chain_heads WHERE chain = $1")
            .bind(chain)
            .fetch_optional(&self.read)
            .await?;
        match row {
            Some(r) => Ok(Some((r.try_get("seq")?, r.try_get("hash")?))),
            None => Ok(None),
        }
    }
}
/// Walks `(seq, id, stored prev_hash, stored hash, recomputed hash)` in seq order. `start` is
/// the first record's expected seq and previous hash: `(1, GENESIS_HASH)`, or the anchor
/// that retention pruning left.
pub(crate) fn verify_links(
    items: impl Iterator<Item = (i64, String, String, String, String)>,
    head: Option<(i64, String)>,
    start: (i64, String),
) -> Option<ChainBreak> {
    let brk = |seq, id: &str, reason: &str| {
        Some(ChainBreak {
            seq,
            id: id.to_owned(),
            reason: reason.to_owned(),
        })
    };
    let mut last = (start.0 - 1, start.1.clone());
    let mut expected: Option<(i64, String)> = None;
    for (seq, id, prev, hash, recomputed) in items {
        match &expected {
            None if seq != start.0 || prev != start.1 => {
                return brk(seq, &id, "the chain does not start where it should");
            }
            Some((eseq, _)) if seq != *eseq => {
                return brk(seq, &id, "a record is missing before this one");
            }
            Some((_, ehash)) if prev != *ehash => {
                return brk(seq, &id, "the link to the previous record is broken");
            }
            _ => {}
        }
        if recomputed != hash {
            return brk(seq, &id, "the record was modified after it was written");
        }
        expected = Some((seq + 1, hash.clone()));
        last = (seq, hash);
    }
    match head {
        Some((hseq, hhash)) if hseq != last.0 || hhash != last.1 => brk(
            last.0 + 1,
            "",
            "records at the end of the chain were removed",
        ),
        _ => None,
    }
}
