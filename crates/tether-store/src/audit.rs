//! The two append-only audit records, each hash-chained:
//! resource versions (one chain per organization) and the request log (one chain).

use std::collections::HashMap;
use std::sync::PoisonError;

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
async fn bump_head_by(tx: &mut Tx, chain: &str, n: i64) -> Result<(i64, String)> {
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

async fn set_head_hash(tx: &mut Tx, chain: &str, hash: &str) -> Result<()> {
    sqlx::query("UPDATE chain_heads SET hash = $2 WHERE chain = $1")
        .bind(chain)
        .bind(hash)
        .execute(&mut **tx)
        .await?;
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

/// One request-log record (never a body or a header value).
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct RequestLogRecord {
    /// Position in the chain, assigned on append.
    #[serde(default)]
    pub seq: i64,
    /// When the request arrived (ms).
    pub at: i64,
    /// The request id.
    pub request_id: String,
    /// Organization name, or ''.
    pub org: String,
    /// The authenticated principal, or ''.
    pub principal: String,
    /// The action (route's permission or method and path template).
    pub action: String,
    /// The resource path.
    pub resource: String,
    /// `allowed`, `denied`, `error` or `unauthenticated`.
    pub result: String,
    /// HTTP status.
    pub status: i32,
    /// Client address.
    pub ip: String,
    /// User agent.
    pub user_agent: String,
    /// Latency in microseconds.
    pub latency_us: i64,
    /// The previous record's hash (not stored: read from the record before it, or from the
    /// chain's anchor for the oldest kept record).
    #[serde(default)]
    pub prev_hash: String,
    /// This record's hash.
    #[serde(default)]
    pub hash: String,
}

impl RequestLogRecord {
    /// The strings stored as ids into `request_log_terms`, in the order of [`TERMS`].
    fn terms(&self) -> [&str; TERMS] {
        [&self.org, &self.principal, &self.action, &self.user_agent]
    }

    fn compute_hash(&self, prev: &str) -> String {
        let (seq, at) = (self.seq.to_be_bytes(), self.at.to_be_bytes());
        let (status, lat) = (self.status.to_be_bytes(), self.latency_us.to_be_bytes());
        hash_fields(
            prev,
            &[
                &seq,
                &at,
                self.request_id.as_bytes(),
                self.org.as_bytes(),
                self.principal.as_bytes(),
                self.action.as_bytes(),
                self.resource.as_bytes(),
                self.result.as_bytes(),
                &status,
                self.ip.as_bytes(),
                self.user_agent.as_bytes(),
                &lat,
            ],
        )
    }
}

fn request_from_row(r: &AnyRow) -> Result<RequestLogRecord> {
    Ok(RequestLogRecord {
        seq: r.try_get("seq")?,
        at: r.try_get("at")?,
        request_id: r.try_get("request_id")?,
        org: r.try_get("org")?,
        principal: r.try_get("principal")?,
        action: r.try_get("action")?,
        resource: r.try_get("resource")?,
        result: r.try_get("result")?,
        status: r.try_get("status")?,
        ip: r.try_get("ip")?,
        user_agent: r.try_get("user_agent")?,
        latency_us: r.try_get("latency_us")?,
        // Not stored: the hash of the record before (see `Store::search_requests`).
        prev_hash: String::new(),
        // Stored as its 32 bytes, not as 64 hex digits.
        hash: hex::encode(r.try_get::<Vec<u8>, _>("hash")?),
    })
}

/// Filters for searching the request log. Every field is optional.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestLogFilter {
    /// Earliest time (ms), inclusive.
    pub since: Option<i64>,
    /// Latest time (ms), exclusive.
    pub until: Option<i64>,
    /// Exact principal.
    pub principal: Option<String>,
    /// Exact action.
    pub action: Option<String>,
    /// Resource prefix.
    pub resource: Option<String>,
    /// Exact result.
    pub result: Option<String>,
    /// Exact organization.
    pub org: Option<String>,
    /// Start after this sequence number (cursor).
    pub after_seq: Option<i64>,
    /// Maximum rows (default 100, at most 10,000).
    pub limit: Option<i64>,
}

const REQUEST_CHAIN: &str = "requests";
/// The chain's anchor: the first kept record's seq and the hash that precedes it. Retention
/// pruning moves it forward; before any pruning it is `(1, GENESIS_HASH)` or absent.
const REQUEST_ANCHOR: &str = "requests:anchor";

impl Store {
    /// Appends a batch of request records in one transaction, chaining them.
    pub async fn append_requests(&self, records: &mut [RequestLogRecord]) -> Result<()> {
        let Ok(n) = i64::try_from(records.len()) else {
            return Ok(());
        };
        if n == 0 {
            return Ok(());
        }
        let mut tx = self.begin().await?;
        // Reserve the positions under the head's row lock, chain in memory, insert in bulk.
        let (last, mut prev) = bump_head_by(&mut tx, REQUEST_CHAIN, n).await?;
        let mut seq = last - n;
        for r in records.iter_mut() {
            seq += 1;
            r.seq = seq;
            r.hash = r.compute_hash(&prev);
            r.prev_hash = std::mem::replace(&mut prev, r.hash.clone());
        }
        let (ids, added) = self.terms.intern(&mut tx, records).await?;
        for (chunk, ids) in records.chunks(50).zip(ids.chunks(50)) {
            insert_requests(&mut tx, chunk, ids).await?;
        }
        set_head_hash(&mut tx, REQUEST_CHAIN, &prev).await?;
        tx.commit().await?;
        // Only now are the new terms' ids certain to exist.
        self.terms.remember(added);
        Ok(())
    }

    /// Searches the request log, oldest first.
    pub async fn search_requests(&self, f: &RequestLogFilter) -> Result<Vec<RequestLogRecord>> {
        let limit = f.limit.unwrap_or(100).clamp(1, 10_000);
        let resource_like = f
            .resource
            .as_ref()
            .map(|r| format!("{}%", r.replace(['%', '_'], "")));
        // A record's previous hash is the hash of the record before it (by primary key).
        let rows = sqlx::query(
            "SELECT r.*, p.hash AS prev_hash FROM request_log_records r \
             LEFT JOIN request_log p ON p.seq = r.seq - 1 \
             WHERE ($1 IS NULL OR r.at >= $1) AND ($2 IS NULL OR r.at < $2) \
             AND ($3 IS NULL OR r.principal = $3) AND ($4 IS NULL OR r.action = $4) \
             AND ($5 IS NULL OR r.resource LIKE $5) AND ($6 IS NULL OR r.result = $6) \
             AND ($7 IS NULL OR r.org = $7) AND r.seq > $8 ORDER BY r.seq LIMIT $9",
        )
        .bind(f.since)
        .bind(f.until)
        .bind(f.principal.as_deref())
        .bind(f.action.as_deref())
        .bind(resource_like.as_deref())
        .bind(f.result.as_deref())
        .bind(f.org.as_deref())
        .bind(f.after_seq.unwrap_or(0))
        .bind(limit)
        .fetch_all(&self.read)
        .await?;
        let mut records = Vec::with_capacity(rows.len());
        let mut start = None;
        for row in &rows {
            let mut rec = request_from_row(row)?;
            rec.prev_hash = match row.try_get::<Option<Vec<u8>>, _>("prev_hash")? {
                Some(prev) => hex::encode(prev),
                // No record before: the oldest kept one follows the chain's start.
                None => {
                    if start.is_none() {
                        start = Some(self.request_chain_start().await?);
                    }
                    match &start {
                        Some((seq, hash)) if *seq == rec.seq => hash.clone(),
                        _ => String::new(),
                    }
                }
            };
            records.push(rec);
        }
        Ok(records)
    }

    /// Deletes request records older than `before` (retention): every record up to the last
    /// one written before `before`, so that what is kept stays one unbroken run. The hash of
    /// the last deleted record becomes the chain's anchor, from which the rest verifies.
    pub async fn prune_requests(&self, before: i64) -> Result<u64> {
        let mut tx = self.begin().await?;
        let last = sqlx::query("SELECT max(seq) AS last FROM request_log WHERE at < $1")
            .bind(before)
            .fetch_one(&mut *tx)
            .await?
            .try_get::<Option<i64>, _>("last")?;
        let Some(last) = last else {
            return Ok(0);
        };
        let hash = sqlx::query("SELECT hash FROM request_log WHERE seq = $1")
            .bind(last)
            .fetch_one(&mut *tx)
            .await?
            .try_get::<Vec<u8>, _>("hash")?;
        let hash = hex::encode(hash);
        let done = sqlx::query("DELETE FROM request_log WHERE seq <= $1")
            .bind(last)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO chain_heads (chain, seq, hash) VALUES ($1, $2, $3) \
             ON CONFLICT (chain) DO UPDATE SET seq = excluded.seq, hash = excluded.hash",
        )
        .bind(REQUEST_ANCHOR)
        .bind(last + 1)
        .bind(hash)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(done.rows_affected())
    }

    /// Recomputes the request-log chain; returns the first broken link, if any.
    pub async fn verify_requests(&self) -> Result<Option<ChainBreak>> {
        let rows = sqlx::query("SELECT * FROM request_log_records ORDER BY seq")
            .fetch_all(&self.read)
            .await?;
        let records: Vec<RequestLogRecord> =
            rows.iter().map(request_from_row).collect::<Result<_>>()?;
        let head = self.chain_head(REQUEST_CHAIN).await?;
        let start = self.request_chain_start().await?;
        // Each record is hashed over the stored hash of the one before it: an edited record
        // fails its own hash, a deleted one the hash of the record after it.
        let mut prev = start.1.clone();
        let items = records.iter().map(|r| {
            let item = (
                r.seq,
                r.request_id.clone(),
                prev.clone(),
                r.hash.clone(),
                r.compute_hash(&prev),
            );
            prev.clone_from(&r.hash);
            item
        });
        Ok(verify_links(items, head, start))
    }

    /// Versions of one resource, oldest first.
    pub async fn versions_of(&self, resource_id: &str) -> Result<Vec<VersionRecord>> {
        let rows = sqlx::query("SELECT * FROM versions WHERE resource_id = $1 ORDER BY seq")
            .bind(resource_id)
            .fetch_all(&self.read)
            .await?;
        rows.iter().map(version_from_row).collect()
    }

    /// Versions of an organization, newest first, for listing by kind and name.
    pub async fn versions_named(
        &self,
        org_id: &str,
        kind: &str,
        name: &str,
    ) -> Result<Vec<VersionRecord>> {
        let rows = sqlx::query(
            "SELECT * FROM versions WHERE org_id = $1 AND resource_kind = $2 AND resource_name = $3 \
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

    /// Where the request chain starts: the oldest kept record's seq and the hash before it,
    /// from the anchor that pruning left, else the genesis.
    async fn request_chain_start(&self) -> Result<(i64, String)> {
        Ok(self
            .chain_head(REQUEST_ANCHOR)
            .await?
            .unwrap_or_else(|| (1, GENESIS_HASH.to_owned())))
    }

    async fn chain_head(&self, chain: &str) -> Result<Option<(i64, String)>> {
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

/// One multi-row INSERT of request records, with the ids of their interned terms.
async fn insert_requests(
    tx: &mut Tx,
    rows: &[RequestLogRecord],
    terms: &[[i64; TERMS]],
) -> Result<()> {
    let sql = format!(
        "INSERT INTO request_log (seq, at, request_id, org_term, principal_term, action_term, \
         resource, result, status, ip, user_agent_term, latency_us, hash) VALUES {}",
        values_list(tx.backend(), rows.len(), 13)
    );
    // The statement text holds only generated placeholders; every value is bound, borrowed
    // from the records (no copy of their strings per row).
    let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
    for (r, [org, principal, action, user_agent]) in rows.iter().zip(terms) {
        let hash = hex::decode(&r.hash)
            .map_err(|_| StoreError::Corrupt(format!("request {}: hash is not hex", r.seq)))?;
        q = q
            .bind(r.seq)
            .bind(r.at)
            .bind(r.request_id.as_str())
            .bind(*org)
            .bind(*principal)
            .bind(*action)
            .bind(r.resource.as_str())
            .bind(r.result.as_str())
            .bind(r.status)
            .bind(r.ip.as_str())
            .bind(*user_agent)
            .bind(r.latency_us)
            .bind(hash);
    }
    q.execute(&mut **tx).await?;
    Ok(())
}

/// How many of a record's strings are interned: its organization, principal, action and user
/// agent.
const TERMS: usize = 4;

/// The ids of the request log's interned strings (`request_log_terms`), as far as this process
/// has seen them. A term's id never changes and a term is never deleted, so an entry never
/// goes stale, on any number of servers. The map starts over when it is full (a client can
/// send any number of user agents).
#[derive(Default)]
pub(crate) struct Terms {
    ids: std::sync::Mutex<HashMap<String, i64>>,
}

/// At most this many terms are kept in memory.
const MAX_CACHED_TERMS: usize = 4_096;

impl Terms {
    /// The term ids of each record, adding the terms the table does not have yet within `tx`.
    /// Also returns the terms looked up in the table, for [`Terms::remember`] after the commit.
    async fn intern(
        &self,
        tx: &mut Tx,
        records: &[RequestLogRecord],
    ) -> Result<(Vec<[i64; TERMS]>, Vec<(String, i64)>)> {
        let mut ids: Vec<[Option<i64>; TERMS]> = {
            let known = self.ids.lock().unwrap_or_else(PoisonError::into_inner);
            records
                .iter()
                .map(|r| r.terms().map(|t| known.get(t).copied()))
                .collect()
        };
        let mut added: Vec<(String, i64)> = Vec::new();
        for (r, row) in records.iter().zip(&mut ids) {
            for (term, slot) in r.terms().into_iter().zip(row.iter_mut()) {
                if slot.is_some() {
                    continue;
                }
                *slot = Some(match added.iter().find(|(t, _)| t == term) {
                    Some((_, id)) => *id,
                    None => {
                        let id = term_id(tx, term).await?;
                        added.push((term.to_owned(), id));
                        id
                    }
                });
            }
        }
        let ids = ids
            .into_iter()
            .map(|row| row.map(|id| id.unwrap_or_default()))
            .collect();
        Ok((ids, added))
    }

    /// Keeps the ids of committed terms.
    fn remember(&self, added: Vec<(String, i64)>) {
        if added.is_empty() {
            return;
        }
        let mut known = self.ids.lock().unwrap_or_else(PoisonError::into_inner);
        if known.len() + added.len() > MAX_CACHED_TERMS {
            known.clear();
        }
        known.extend(added);
    }
}

/// The longest term (in characters) that `request_log_terms` keeps unique; see migration 0007.
const MAX_UNIQUE_TERM: usize = 500;

/// The id of `term`, added to `request_log_terms` if it is not there. A term too long for the
/// unique index is added again each time it is not cached (rare: the server clips what
/// clients choose).
async fn term_id(tx: &mut Tx, term: &str) -> Result<i64> {
    if term.chars().count() > MAX_UNIQUE_TERM {
        let row = sqlx::query("INSERT INTO request_log_terms (term) VALUES ($1) RETURNING id")
            .bind(term)
            .fetch_one(&mut **tx)
            .await?;
        return Ok(row.try_get("id")?);
    }
    // The predicate names the partial unique index (conflict target and lookup alike).
    sqlx::query(
        "INSERT INTO request_log_terms (term) VALUES ($1) \
         ON CONFLICT (term) WHERE length(term) <= 500 DO NOTHING",
    )
    .bind(term)
    .execute(&mut **tx)
    .await?;
    Ok(
        sqlx::query("SELECT id FROM request_log_terms WHERE term = $1 AND length(term) <= 500")
            .bind(term)
            .fetch_one(&mut **tx)
            .await?
            .try_get("id")?,
    )
}

/// Walks `(seq, id, stored prev_hash, stored hash, recomputed hash)` in seq order. `start` is
/// the first record's expected seq and previous hash: `(1, GENESIS_HASH)`, or the anchor
/// that retention pruning left.
fn verify_links(
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
