//! The request log: one record per API request, in one hash chain, appended in batches by
//! the server's log writer. A batch is stored as one row of `request_log_batches`: its seq
//! range, the range of its records' times, the hash before it, and its records in a compact
//! binary form (`codec`). The organization, principal, action and user agent of a record are
//! ids into `request_log_terms`, where each string is stored once.
//!
//! One row per batch instead of one per record is what lets the log keep up with the API at
//! 20,000 requests/s on two cores: it writes a third of the bytes and spends a third of the
//! database's CPU, and searching reads a batch's bounds before decoding it.

mod codec;

use std::collections::HashMap;
use std::sync::PoisonError;

use sqlx::Row;
use sqlx::any::AnyRow;

use crate::audit::{bump_head_by, set_head_hash, verify_links};
use crate::chain::{ChainBreak, GENESIS_HASH, hash_fields};
use crate::{Result, Store, StoreError, Tx};

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
    /// The previous record's hash (not stored with the record: the hash of the record before
    /// it in its batch, or the hash stored beside the batch for its first record).
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
    /// Resource prefix (case-sensitive).
    pub resource: Option<String>,
    /// Exact result.
    pub result: Option<String>,
    /// Exact organization.
    pub org: Option<String>,
    /// Start after this sequence number (cursor).
    pub after_seq: Option<i64>,
    /// Only records before this sequence number (the cursor when reading newest first).
    #[serde(default)]
    pub before_seq: Option<i64>,
    /// Newest records first (the default is oldest first).
    #[serde(default)]
    pub newest_first: bool,
    /// Maximum rows (default 100, at most 10,000).
    pub limit: Option<i64>,
}

pub(crate) const REQUEST_CHAIN: &str = "requests";
/// The chain's anchor: the first kept record's seq and the hash that precedes it. Retention
/// pruning moves it forward; before any pruning it is `(1, GENESIS_HASH)` or absent.
const REQUEST_ANCHOR: &str = "requests:anchor";

/// How many batches one read of `request_log_batches` fetches.
const BATCHES_PER_READ: i64 = 64;

/// The columns [`Batch::from_row`] reads.
const BATCH_COLUMNS: &str = "first_seq, last_seq, min_at, max_at, prev_hash, records, term_index";

/// How many term indexes a search by term reads at a time.
const INDEXES_PER_READ: i64 = 512;

/// How many rows of the old one-row-per-record table one conversion step moves.
const LEGACY_CHUNK: i64 = 512;

impl Store {
    /// Appends a batch of request records in one transaction, chaining them. The records get
    /// their `seq`, `prev_hash` and `hash`.
    pub async fn append_requests(&self, records: &mut [RequestLogRecord]) -> Result<()> {
        let Ok(n) = i64::try_from(records.len()) else {
            return Ok(());
        };
        if n == 0 {
            return Ok(());
        }
        let mut tx = self.begin().await?;
        // Reserve the positions under the head's row lock, chain in memory, insert one row.
        let (last, before) = bump_head_by(&mut tx, REQUEST_CHAIN, n).await?;
        let mut prev = before.clone();
        let mut seq = last - n;
        for r in records.iter_mut() {
            seq += 1;
            r.seq = seq;
            r.hash = r.compute_hash(&prev);
            r.prev_hash = std::mem::replace(&mut prev, r.hash.clone());
        }
        let (ids, added) = self.terms.intern(&mut tx, records).await?;
        let blob = codec::encode(records, &ids)?;
        let index = codec::encode_index(&ids);
        insert_batch(&mut tx, last - n + 1, records, &before, blob, index).await?;
        set_head_hash(&mut tx, REQUEST_CHAIN, &prev).await?;
        tx.commit().await?;
        // Only now are the new terms' ids certain to exist.
        self.terms.remember(added);
        Ok(())
    }

    /// Searches the request log, oldest first, or newest first with `newest_first`.
    pub async fn search_requests(&self, f: &RequestLogFilter) -> Result<Vec<RequestLogRecord>> {
        let limit = usize::try_from(f.limit.unwrap_or(100).clamp(1, 10_000)).unwrap_or(100);
        // Exact strings that are interned become their ids: one never stored matches nothing.
        let mut wanted: [Option<Vec<i64>>; TERMS] = Default::default();
        for (slot, value) in wanted.iter_mut().zip([&f.org, &f.principal, &f.action]) {
            if let Some(value) = value {
                let ids = self.term_ids(value).await?;
                if ids.is_empty() {
                    return Ok(Vec::new());
                }
                *slot = Some(ids);
            }
        }
        let after_seq = f.after_seq.unwrap_or(0);
        let before_seq = f.before_seq.unwrap_or(i64::MAX);
        let mut names = TermNames::default();
        let mut found = Vec::new();
        let mut walk = if f.newest_first {
            Walk::Down(before_seq)
        } else {
            Walk::Up(after_seq)
        };
        // With an organization, principal or action filter, the batches' term indexes pick
        // the batches to read.
        let indexed = wanted.iter().any(Option::is_some);
        loop {
            let (batches, next) = if indexed {
                self.read_indexed_batches(walk, f.since, f.until, &wanted)
                    .await?
            } else {
                let batches = self.read_batches(walk, f.since, f.until).await?;
                let next = batches.last().map(|b| walk.cursor(b.first_seq, b.last_seq));
                (batches, next)
            };
            let Some(next) = next else {
                return Ok(found);
            };
            walk = walk.to(next);
            for batch in &batches {
                let mut records = batch.records()?;
                if f.newest_first {
                    records.reverse();
                }
                for (mut rec, ids) in records {
                    let keep = rec.seq > after_seq
                        && rec.seq < before_seq
                        && f.since.is_none_or(|t| rec.at >= t)
                        && f.until.is_none_or(|t| rec.at < t)
                        && f.result.as_ref().is_none_or(|v| rec.result == *v)
                        && f.resource
                            .as_ref()
                            .is_none_or(|p| rec.resource.starts_with(p.as_str()))
                        && wanted
                            .iter()
                            .zip(ids)
                            .all(|(w, id)| w.as_ref().is_none_or(|w| w.contains(&id)));
                    if !keep {
                        continue;
                    }
                    names.fill(self, &mut rec, ids).await?;
                    found.push(rec);
                    if found.len() >= limit {
                        return Ok(found);
                    }
                }
            }
        }
    }

    /// Deletes request records older than `before` (retention), a whole batch at a time: every
    /// batch up to the last one whose records all came before `before`, so that what is kept
    /// stays one unbroken run. The hash of the last deleted record becomes the chain's anchor,
    /// from which the rest verifies. The interned strings (principals, user agents) that no
    /// kept record uses are deleted too. Returns how many records were deleted.
    pub async fn prune_requests(&self, before: i64) -> Result<u64> {
        let mut tx = self.begin().await?;
        let last =
            sqlx::query("SELECT max(last_seq) AS last FROM request_log_batches WHERE max_at < $1")
                .bind(before)
                .fetch_one(&mut *tx)
                .await?
                .try_get::<Option<i64>, _>("last")?;
        let Some(last) = last else {
            return Ok(0);
        };
        let hash = match last_hash_of_batch(&mut tx, last).await? {
            Some(hash) => hash,
            None => {
                return Err(StoreError::Corrupt(format!(
                    "request log batch {last} is gone"
                )));
            }
        };
        let first = sqlx::query(
            "SELECT min(first_seq) AS first FROM request_log_batches WHERE last_seq <= $1",
        )
        .bind(last)
        .fetch_one(&mut *tx)
        .await?
        .try_get::<Option<i64>, _>("first")?
        .unwrap_or(last);
        sqlx::query("DELETE FROM request_log_batches WHERE last_seq <= $1")
            .bind(last)
            .execute(&mut *tx)
            .await?;
        // The strings that no kept record uses go with them. A kept record's terms have a
        // `last_seq` above `last - TERM_REFRESH_SEQS` (they lag their latest use by less), and
        // a batch being written now holds seqs above `last`.
        let terms = sqlx::query("DELETE FROM request_log_terms WHERE last_seq <= $1")
            .bind(last - TERM_REFRESH_SEQS)
            .execute(&mut *tx)
            .await?
            .rows_affected();
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
        if terms > 0 {
            tracing::debug!(
                terms,
                "request log terms that no kept record uses were deleted"
            );
        }
        Ok(u64::try_from(last - first + 1).unwrap_or(0))
    }

    /// Recomputes the request-log chain; returns the first broken link, if any. Also checks
    /// that each batch's bounds (seq range and times, which searching trusts to skip batches)
    /// match its records.
    pub async fn verify_requests(&self) -> Result<Option<ChainBreak>> {
        let head = self.chain_head(REQUEST_CHAIN).await?;
        let start = self.request_chain_start().await?;
        let mut names = TermNames::default();
        let mut items = Vec::new();
        let mut bad_batch = None;
        let mut after = 0;
        'read: loop {
            let batches = self.read_batches(Walk::Up(after), None, None).await?;
            let Some(last) = batches.last() else {
                break;
            };
            after = last.last_seq;
            for batch in &batches {
                let records = match batch.checked_records() {
                    Ok(records) => records,
                    Err(reason) => {
                        bad_batch = Some(ChainBreak {
                            seq: batch.first_seq,
                            id: String::new(),
                            reason: reason.to_owned(),
                        });
                        break 'read;
                    }
                };
                // Each record is hashed over the stored hash before it: an edited record
                // fails its own hash, a deleted batch the link of the batch after it.
                for (mut rec, ids) in records {
                    names.fill(self, &mut rec, ids).await?;
                    let recomputed = rec.compute_hash(&rec.prev_hash);
                    items.push((rec.seq, rec.request_id, rec.prev_hash, rec.hash, recomputed));
                }
            }
        }
        if let Some(bad) = bad_batch {
            // A break before the damaged batch comes first; the head is not reached.
            return Ok(verify_links(items.into_iter(), None, start).or(Some(bad)));
        }
        Ok(verify_links(items.into_iter(), head, start))
    }

    /// Where the request chain starts: the oldest kept record's seq and the hash before it,
    /// from the anchor that pruning left, else the genesis.
    async fn request_chain_start(&self) -> Result<(i64, String)> {
        Ok(self
            .chain_head(REQUEST_ANCHOR)
            .await?
            .unwrap_or_else(|| (1, GENESIS_HASH.to_owned())))
    }

    /// Up to [`BATCHES_PER_READ`] batches past the cursor of `walk`, in its direction, that
    /// may hold records in `[since, until)`.
    async fn read_batches(
        &self,
        walk: Walk,
        since: Option<i64>,
        until: Option<i64>,
    ) -> Result<Vec<Batch>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(walk.range_sql(BATCH_COLUMNS)))
            .bind(walk.bound())
            .bind(since)
            .bind(until)
            .bind(BATCHES_PER_READ)
            .fetch_all(&self.read)
            .await?;
        rows.iter().map(Batch::from_row).collect()
    }

    /// Like [`Store::read_batches`] for a search by term: reads the term indexes of up to
    /// [`INDEXES_PER_READ`] batches, then the records of those whose index has a term of each
    /// filter (or no index). Returns them and the last seq looked at, `None` past the end.
    async fn read_indexed_batches(
        &self,
        walk: Walk,
        since: Option<i64>,
        until: Option<i64>,
        wanted: &[Option<Vec<i64>>; TERMS],
    ) -> Result<(Vec<Batch>, Option<i64>)> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(
            walk.range_sql("first_seq, last_seq, term_index"),
        ))
        .bind(walk.bound())
        .bind(since)
        .bind(until)
        .bind(INDEXES_PER_READ)
        .fetch_all(&self.read)
        .await?;
        let mut last = None;
        let mut pick = Vec::new();
        for row in &rows {
            let seq: i64 = row.try_get("last_seq")?;
            last = Some(walk.cursor(row.try_get("first_seq")?, seq));
            let index: Option<Vec<u8>> = row.try_get("term_index")?;
            // No index (an older batch), or one that does not read: read the records.
            let may_match = match index.map(|b| codec::decode_index(&b)) {
                Some(Ok(ids)) => wanted.iter().all(|w| {
                    w.as_ref()
                        .is_none_or(|w| w.iter().any(|id| ids.binary_search(id).is_ok()))
                }),
                _ => true,
            };
            if may_match {
                pick.push(seq);
            }
        }
        let mut batches = Vec::with_capacity(pick.len());
        for chunk in pick.chunks(usize::try_from(BATCHES_PER_READ).unwrap_or(64)) {
            let marks: Vec<String> = (1..=chunk.len()).map(|i| format!("${i}")).collect();
            let sql = format!(
                "SELECT {BATCH_COLUMNS} FROM request_log_batches WHERE last_seq IN ({}) \
                 ORDER BY last_seq {}",
                marks.join(", "),
                walk.direction()
            );
            // Only numbered placeholders are formatted in; the seqs are bound.
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
            for seq in chunk {
                query = query.bind(*seq);
            }
            for row in query.fetch_all(&self.read).await? {
                batches.push(Batch::from_row(&row)?);
            }
        }
        Ok((batches, last))
    }

    /// The ids under which `term` is stored (more than one only for a term too long for the
    /// unique index).
    async fn term_ids(&self, term: &str) -> Result<Vec<i64>> {
        // The length predicate lets the partial unique index answer.
        let sql = if term.chars().count() <= MAX_UNIQUE_TERM {
            "SELECT id FROM request_log_terms WHERE term = $1 AND length(term) <= 500"
        } else {
            "SELECT id FROM request_log_terms WHERE term = $1"
        };
        let rows = sqlx::query(sql).bind(term).fetch_all(&self.read).await?;
        rows.iter()
            .map(|r| r.try_get::<i64, _>("id").map_err(Into::into))
            .collect()
    }

    /// Moves the records of the one-row-per-record table that migrations before 0008 wrote
    /// (`request_log`) into batches, a chunk per transaction, keeping their stored hashes: a
    /// record tampered with before the move still fails verification after it. Runs when the
    /// store opens; with nothing left to move it is one empty read.
    pub(crate) async fn convert_legacy_requests(&self) -> Result<()> {
        loop {
            let any = sqlx::query("SELECT seq FROM request_log LIMIT 1")
                .fetch_optional(&self.read)
                .await?;
            if any.is_none() {
                return Ok(());
            }
            let mut tx = self.begin().await?;
            // The head's row lock: appends, and other servers converting, wait for this chunk.
            bump_head_by(&mut tx, REQUEST_CHAIN, 0).await?;
            let rows = sqlx::query(
                "SELECT seq, at, request_id, org_term, principal_term, action_term, resource, \
                 result, status, ip, user_agent_term, latency_us, hash \
                 FROM request_log ORDER BY seq LIMIT $1",
            )
            .bind(LEGACY_CHUNK)
            .fetch_all(&mut *tx)
            .await?;
            let mut records = Vec::with_capacity(rows.len());
            let mut ids = Vec::with_capacity(rows.len());
            for row in &rows {
                records.push(RequestLogRecord {
                    seq: row.try_get("seq")?,
                    at: row.try_get("at")?,
                    request_id: row.try_get("request_id")?,
                    resource: row.try_get("resource")?,
                    result: row.try_get("result")?,
                    status: row.try_get("status")?,
                    ip: row.try_get("ip")?,
                    latency_us: row.try_get("latency_us")?,
                    hash: hex::encode(row.try_get::<Vec<u8>, _>("hash")?),
                    ..RequestLogRecord::default()
                });
                ids.push([
                    row.try_get("org_term")?,
                    row.try_get("principal_term")?,
                    row.try_get("action_term")?,
                    row.try_get("user_agent_term")?,
                ]);
            }
            let Some(last) = records.last().map(|r| r.seq) else {
                tx.commit().await?;
                return Ok(());
            };
            // A batch holds consecutive seqs: a gap (a record deleted by hand) starts another.
            let mut from = 0;
            while from < records.len() {
                let mut to = from + 1;
                while records
                    .get(to)
                    .zip(records.get(to - 1))
                    .is_some_and(|(b, a)| b.seq == a.seq + 1)
                {
                    to += 1;
                }
                let (run, run_ids) = match (records.get(from..to), ids.get(from..to)) {
                    (Some(run), Some(run_ids)) => (run, run_ids),
                    _ => break,
                };
                let first = run.first().map_or(0, |r| r.seq);
                let before = self.hash_before(&mut tx, first).await?;
                let blob = codec::encode(run, run_ids)?;
                let index = codec::encode_index(run_ids);
                insert_batch(&mut tx, first, run, &before, blob, index).await?;
                from = to;
            }
            sqlx::query("DELETE FROM request_log WHERE seq <= $1")
                .bind(last)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            tracing::info!(through_seq = last, "request log records moved into batches");
        }
    }

    /// The stored hash of the record before `seq`, for a batch moved from the old table: the
    /// last record of the batch before, else the chain's start; a gap gets the genesis hash
    /// (verification reports the gap).
    async fn hash_before(&self, tx: &mut Tx, seq: i64) -> Result<String> {
        if let Some(hash) = last_hash_of_batch(tx, seq - 1).await? {
            return Ok(hash);
        }
        // Conversion never moves the anchor, so reading it outside `tx` is the same.
        match self.request_chain_start().await? {
            (start, hash) if start == seq => Ok(hash),
            _ => Ok(GENESIS_HASH.to_owned()),
        }
    }
}

/// Inserts one batch: `records` are consecutive from `first_seq`, chained from `before`.
async fn insert_batch(
    tx: &mut Tx,
    first_seq: i64,
    records: &[RequestLogRecord],
    before: &str,
    blob: Vec<u8>,
    term_index: Vec<u8>,
) -> Result<()> {
    let last_seq = first_seq + i64::try_from(records.len()).unwrap_or(0) - 1;
    let min_at = records.iter().map(|r| r.at).min().unwrap_or(0);
    let max_at = records.iter().map(|r| r.at).max().unwrap_or(0);
    let before = hex::decode(before)
        .map_err(|_| StoreError::Corrupt("request log: a chain hash is not hex".into()))?;
    sqlx::query(
        "INSERT INTO request_log_batches \
         (last_seq, first_seq, min_at, max_at, prev_hash, records, term_index) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(last_seq)
    .bind(first_seq)
    .bind(min_at)
    .bind(max_at)
    .bind(before)
    .bind(blob)
    .bind(term_index)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// The hash of the last record of the batch that ends at `last_seq`, if there is one.
async fn last_hash_of_batch(tx: &mut Tx, last_seq: i64) -> Result<Option<String>> {
    let row = sqlx::query("SELECT records FROM request_log_batches WHERE last_seq = $1")
        .bind(last_seq)
        .fetch_optional(&mut **tx)
        .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    let records = codec::decode(&row.try_get::<Vec<u8>, _>("records")?)?;
    Ok(records.last().map(|(r, _)| r.hash.clone()))
}

/// Which way a search reads the batches, and its cursor: oldest first after a seq, or newest
/// first before one.
#[derive(Clone, Copy)]
enum Walk {
    Up(i64),
    Down(i64),
}

impl Walk {
    /// The cursor bound for SQL: `last_seq > after`, or `first_seq < before`.
    fn bound(self) -> i64 {
        match self {
            Walk::Up(after) => after,
            Walk::Down(before) => before,
        }
    }

    /// The cursor past a batch read: its last seq going up, its first going down.
    fn cursor(self, first_seq: i64, last_seq: i64) -> i64 {
        match self {
            Walk::Up(_) => last_seq,
            Walk::Down(_) => first_seq,
        }
    }

    /// The same direction from `cursor`.
    fn to(self, cursor: i64) -> Walk {
        match self {
            Walk::Up(_) => Walk::Up(cursor),
            Walk::Down(_) => Walk::Down(cursor),
        }
    }

    /// `ORDER BY last_seq` direction.
    fn direction(self) -> &'static str {
        match self {
            Walk::Up(_) => "ASC",
            Walk::Down(_) => "DESC",
        }
    }

    /// Selects `columns` of up to `$4` batches past the cursor `$1` ([`Walk::bound`]), in
    /// this direction, that may hold records in `[$2, $3)` (times, each optional).
    fn range_sql(self, columns: &str) -> String {
        let past = match self {
            Walk::Up(_) => "last_seq >",
            Walk::Down(_) => "first_seq <",
        };
        format!(
            "SELECT {columns} FROM request_log_batches WHERE {past} $1 \
             AND ($2 IS NULL OR max_at >= $2) AND ($3 IS NULL OR min_at < $3) \
             ORDER BY last_seq {} LIMIT $4",
            self.direction()
        )
    }
}

/// One stored batch.
struct Batch {
    first_seq: i64,
    last_seq: i64,
    min_at: i64,
    max_at: i64,
    /// The hash of the record before the batch (hex).
    prev_hash: String,
    records: Vec<u8>,
    /// The distinct organization, principal and action ids of the records (`codec`'s term
    /// index); `None` for batches written before migration 0010.
    term_index: Option<Vec<u8>>,
}

impl Batch {
    fn from_row(row: &AnyRow) -> Result<Batch> {
        Ok(Batch {
            first_seq: row.try_get("first_seq")?,
            last_seq: row.try_get("last_seq")?,
            min_at: row.try_get("min_at")?,
            max_at: row.try_get("max_at")?,
            prev_hash: hex::encode(row.try_get::<Vec<u8>, _>("prev_hash")?),
            records: row.try_get("records")?,
            term_index: row.try_get("term_index")?,
        })
    }

    /// The records, with their seq and previous hash, and the ids of their interned strings.
    fn records(&self) -> Result<Vec<(RequestLogRecord, [i64; TERMS])>> {
        let mut records = codec::decode(&self.records)?;
        let mut prev = self.prev_hash.clone();
        for (seq, (r, _)) in (self.first_seq..).zip(records.iter_mut()) {
            r.seq = seq;
            r.prev_hash = std::mem::replace(&mut prev, r.hash.clone());
        }
        Ok(records)
    }

    /// The records, if the batch reads and its bounds match them; else why not.
    fn checked_records(
        &self,
    ) -> std::result::Result<Vec<(RequestLogRecord, [i64; TERMS])>, &'static str> {
        let records = self
            .records()
            .map_err(|_| "a batch of records cannot be read")?;
        let count = i64::try_from(records.len()).unwrap_or(-1);
        let min_at = records.iter().map(|(r, _)| r.at).min();
        let max_at = records.iter().map(|(r, _)| r.at).max();
        if count != self.last_seq - self.first_seq + 1 {
            return Err("a batch's seq range does not match its records");
        }
        if min_at != Some(self.min_at) || max_at != Some(self.max_at) {
            return Err("a batch's times do not match its records");
        }
        if let Some(stored) = &self.term_index {
            // Search trusts the index to skip batches: one that lost a term would hide records.
            let ids: Vec<[i64; TERMS]> = records.iter().map(|(_, ids)| *ids).collect();
            if codec::decode_index(stored).ok() != Some(codec::index_of(&ids)) {
                return Err("a batch's term index does not match its records");
            }
        }
        Ok(records)
    }
}

/// The strings of term ids met while reading, looked up once each.
#[derive(Default)]
struct TermNames {
    names: HashMap<i64, String>,
}

impl TermNames {
    /// Sets the record's interned strings from their ids. A term deleted by hand reads as ''
    /// (and the record then fails verification).
    async fn fill(
        &mut self,
        store: &Store,
        rec: &mut RequestLogRecord,
        ids: [i64; TERMS],
    ) -> Result<()> {
        let mut strings: [String; TERMS] = Default::default();
        for (s, id) in strings.iter_mut().zip(ids) {
            *s = match self.names.get(&id) {
                Some(name) => name.clone(),
                None => {
                    let term = sqlx::query("SELECT term FROM request_log_terms WHERE id = $1")
                        .bind(id)
                        .fetch_optional(&store.read)
                        .await?
                        .map(|row| row.try_get::<String, _>("term"))
                        .transpose()?
                        .unwrap_or_default();
                    self.names.insert(id, term.clone());
                    term
                }
            };
        }
        let [org, principal, action, user_agent] = strings;
        rec.org = org;
        rec.principal = principal;
        rec.action = action;
        rec.user_agent = user_agent;
        Ok(())
    }
}

/// How many of a record's strings are interned: its organization, principal, action and user
/// agent.
const TERMS: usize = 4;

/// The ids of the request log's interned strings (`request_log_terms`), as far as this process
/// has seen them, with the `last_seq` this process last stored for each. A term carries the
/// seq of the latest record that used it, to within [`TERM_REFRESH_SEQS`], so that retention
/// can delete the strings no kept record uses (see [`Store::prune_requests`]). A cached id may
/// have been deleted since by another server's pruning: the refresh of `last_seq` finds that
/// out (no row), and the term is added again under a new id. The map starts over when it is
/// full (a client can send any number of user agents).
#[derive(Default)]
pub(crate) struct Terms {
    ids: std::sync::Mutex<HashMap<String, CachedTerm>>,
}

/// A term's id and the `last_seq` this process last stored for it.
#[derive(Clone, Copy)]
struct CachedTerm {
    id: i64,
    last_seq: i64,
}

/// At most this many terms are kept in memory.
const MAX_CACHED_TERMS: usize = 4_096;

/// How far (in records) a term's stored `last_seq` may lag behind the latest record that used
/// it. A term in steady use is written again once per this many records, not with every batch;
/// pruning keeps every term whose `last_seq` is within this distance of the oldest kept record.
pub const TERM_REFRESH_SEQS: i64 = 4_096;

/// Terms stored or refreshed within a transaction, to cache after it commits.
type StoredTerms = Vec<(String, CachedTerm)>;

impl Terms {
    /// The term ids of each record (the records have their seqs), adding the terms the table
    /// does not have yet and refreshing the `last_seq` of those whose stored one is too old,
    /// within `tx`. Also returns what was stored, for [`Terms::remember`] after the commit.
    async fn intern(
        &self,
        tx: &mut Tx,
        records: &[RequestLogRecord],
    ) -> Result<(Vec<[i64; TERMS]>, StoredTerms)> {
        let Some(last) = records.last().map(|r| r.seq) else {
            return Ok((Vec::new(), Vec::new()));
        };
        // Each distinct term of the batch once: its id, if the cache has it fresh enough.
        let mut batch: HashMap<&str, Option<CachedTerm>> = HashMap::new();
        {
            let known = self.ids.lock().unwrap_or_else(PoisonError::into_inner);
            for term in records.iter().flat_map(RequestLogRecord::terms) {
                batch
                    .entry(term)
                    .or_insert_with(|| known.get(term).copied());
            }
        }
        let mut stored = StoredTerms::new();
        for (term, cached) in &mut batch {
            let fresh = match *cached {
                Some(c) if c.last_seq > last - TERM_REFRESH_SEQS => continue,
                Some(c) if refresh_term(tx, c.id, last).await? => CachedTerm {
                    id: c.id,
                    last_seq: last,
                },
                // Not cached, or pruned since it was: store it (again).
                _ => CachedTerm {
                    id: term_id(tx, term, last).await?,
                    last_seq: last,
                },
            };
            *cached = Some(fresh);
            stored.push(((*term).to_owned(), fresh));
        }
        let id_of = |term: &str| batch.get(term).copied().flatten().map_or(0, |c| c.id);
        let ids = records.iter().map(|r| r.terms().map(id_of)).collect();
        Ok((ids, stored))
    }

    /// Caches what a committed transaction stored.
    fn remember(&self, stored: StoredTerms) {
        if stored.is_empty() {
            return;
        }
        let mut known = self.ids.lock().unwrap_or_else(PoisonError::into_inner);
        if known.len() + stored.len() > MAX_CACHED_TERMS {
            known.clear();
        }
        known.extend(stored);
    }
}

/// The longest term (in characters) that `request_log_terms` keeps unique; see migration 0007.
/// The SQL below repeats it in `length(term) <= 500`, the predicate of the partial unique
/// index, which a statement must name for the index to serve it.
const MAX_UNIQUE_TERM: usize = 500;

/// Raises the stored `last_seq` of term `id` to `seq`; false if the term is gone (pruned).
async fn refresh_term(tx: &mut Tx, id: i64, seq: i64) -> Result<bool> {
    let done = sqlx::query(
        "UPDATE request_log_terms \
         SET last_seq = CASE WHEN last_seq < $2 THEN $2 ELSE last_seq END WHERE id = $1",
    )
    .bind(id)
    .bind(seq)
    .execute(&mut **tx)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// The id of `term`, added to `request_log_terms` if it is not there, with its `last_seq`
/// raised to `seq`. A term too long for the unique index is added again each time it is not
/// cached (rare: the server clips what clients choose).
async fn term_id(tx: &mut Tx, term: &str, seq: i64) -> Result<i64> {
    let sql = if term.chars().count() > MAX_UNIQUE_TERM {
        "INSERT INTO request_log_terms (term, last_seq) VALUES ($1, $2) RETURNING id"
    } else {
        // The predicate names the partial unique index.
        "INSERT INTO request_log_terms (term, last_seq) VALUES ($1, $2) \
         ON CONFLICT (term) WHERE length(term) <= 500 DO UPDATE SET last_seq = \
         CASE WHEN request_log_terms.last_seq < excluded.last_seq \
         THEN excluded.last_seq ELSE request_log_terms.last_seq END \
         RETURNING id"
    };
    let row = sqlx::query(sql)
        .bind(term)
        .bind(seq)
        .fetch_one(&mut **tx)
        .await?;
    Ok(row.try_get("id")?)
}
