//! The changelog: what each committed write changed, for the other servers sharing one
//! PostgreSQL database. Each server keeps in memory what it must not re-read per request (the
//! hot-row cache, the authorization index, cached API keys, the active runner certificates);
//! a write on one server must reach the others' memories, or a revoked grant, key or
//! certificate would keep working there.
//!
//! A transaction that touched any of these appends one `changes` row **inside the same
//! transaction**, as its last statement: the row exists exactly when the write does. Every
//! server (the writer too) polls the table and applies the rows in `seq` order.
//!
//! Ordering: two transactions that change the same row are serialized by PostgreSQL's row
//! locks, and the second one inserts its `changes` row after the first committed, so it gets
//! the larger `seq`: conflicting changes apply in commit order. Transactions that do not
//! conflict may commit out of `seq` order; a poller that sees `seq` 7 before 6 waits for 6
//! (up to [`GAP_WAIT`], after which a missing number is taken for a rolled-back one) before it
//! moves its low-water mark past it, and never applies a row twice.
//!
//! SQLite has one server per database file, so nothing is written there.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use sqlx::Row;

use crate::cache::Touch;
use crate::{Backend, Result, Store, StoreError, Tx};

/// How long a poller waits for a missing `seq` before it takes it for a rolled-back one.
pub const GAP_WAIT: Duration = Duration::from_secs(10);

/// At most this many missing numbers are waited for at once.
const MAX_TRACKED_GAPS: i64 = 10_000;

/// How long rows are kept (every poller reads far more often).
pub const RETENTION_MS: i64 = 10 * 60 * 1000;

/// What a server must do about a write it may not have made itself. Applying an event twice,
/// or applying one the server made itself, is harmless.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
pub enum Event {
    /// A tuple was written: index it.
    TupleWritten(crate::TupleRow),
    /// A tuple was deleted: drop it from the index.
    TupleDeleted(crate::TupleRow),
    /// An API key was revoked: stop trusting a cached copy.
    ApiKeyRevoked {
        /// The key's public id.
        key_id: String,
    },
    /// Every key of a principal was revoked (or the principal deleted).
    KeysOfOwnerRevoked {
        /// The principal's id.
        owner_id: String,
    },
    /// A runner certificate was issued: accept it in handshakes.
    RunnerCertIssued {
        /// Serial, hex.
        serial: String,
        /// The runner's organization.
        org_id: String,
        /// The runner.
        runner_id: String,
    },
    /// Runner certificates were revoked: refuse them and close the runner's live tunnel.
    RunnerCertsRevoked {
        /// The runner.
        runner_id: String,
        /// Serials, hex.
        serials: Vec<String>,
    },
    /// An organization's cached keys were flushed: drop its DEKs and KEKs here too.
    KeyCacheFlushed {
        /// The organization.
        org_id: String,
    },
}

/// An event read from the changelog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// Whether this server made the write (and applied its effects when it committed).
    pub own: bool,
    /// What to apply.
    pub event: Event,
}

#[derive(Serialize, Deserialize, Default)]
struct Body {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    touches: Vec<Touch>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    events: Vec<Event>,
}

/// Appends the transaction's change row (PostgreSQL only), with the database's clock.
pub(crate) async fn append(tx: &mut Tx, node: &str) -> Result<()> {
    if tx.backend() != Backend::Postgres || (tx.touched.is_empty() && tx.events.is_empty()) {
        return Ok(());
    }
    let body = serde_json::to_string(&BodyRef {
        touches: &tx.touched,
        events: &tx.events,
    })
    .map_err(|e| StoreError::Corrupt(format!("change body: {e}")))?;
    sqlx::query(
        "INSERT INTO changes (node, at, body) \
         VALUES ($1, CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT), $2)",
    )
    .bind(node)
    .bind(body)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

#[derive(Serialize)]
struct BodyRef<'a> {
    #[serde(skip_serializing_if = "<[Touch]>::is_empty")]
    touches: &'a [Touch],
    #[serde(skip_serializing_if = "<[Event]>::is_empty")]
    events: &'a [Event],
}

/// A poller's position in the changelog.
#[derive(Debug)]
pub struct ChangeFeed {
    /// Every row with `seq <= low` has been applied (or given up on).
    low: i64,
    /// Rows above `low` already applied.
    seen: BTreeSet<i64>,
    /// Missing numbers above `low`, with when they were first noticed.
    gaps: HashMap<i64, Instant>,
}

impl ChangeFeed {
    /// Applies the low-water mark rule: move past applied numbers, and past missing ones once
    /// they have been missing for `wait`.
    fn advance(&mut self, wait: Duration) {
        loop {
            let next = self.low.saturating_add(1);
            if self.seen.remove(&next) {
                self.low = next;
                self.gaps.remove(&next);
                continue;
            }
            let Some(&first_seen) = self.seen.first() else {
                return;
            };
            // Every number below the first row seen is missing from now on (at most a bounded
            // span is tracked; a sequence that jumped further is taken as it is).
            let now = Instant::now();
            let span_end = first_seen.min(next.saturating_add(MAX_TRACKED_GAPS));
            for missing in next..span_end {
                self.gaps.entry(missing).or_insert(now);
            }
            let since = self.gaps.get(&next).copied().unwrap_or(now);
            if since.elapsed() < wait {
                return;
            }
            tracing::debug!(
                seq = next,
                "changelog: a missing number is taken as rolled back"
            );
            self.gaps.remove(&next);
            self.low = next;
        }
    }

    /// The low-water mark (for tests and metrics).
    pub fn low(&self) -> i64 {
        self.low
    }
}

impl Store {
    /// Where a new poller starts: before the changes of the last [`GAP_WAIT`], so a
    /// transaction that was in flight while this server loaded its state is still applied.
    /// Call it *before* loading the state the feed keeps current. `None` on SQLite, which
    /// writes no changelog (one server per file).
    pub async fn change_feed(&self) -> Result<Option<ChangeFeed>> {
        if self.backend != Backend::Postgres {
            return Ok(None);
        }
        let row = sqlx::query(
            "SELECT COALESCE(MAX(seq), 0) AS low FROM changes WHERE at < \
             CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT) - $1",
        )
        .bind(i64::try_from(GAP_WAIT.as_millis()).unwrap_or(i64::MAX))
        .fetch_one(&self.read)
        .await?;
        Ok(Some(ChangeFeed {
            low: row.try_get::<i64, _>("low")?,
            seen: BTreeSet::new(),
            gaps: HashMap::new(),
        }))
    }

    /// Reads the rows after the feed's position, drops what they touched from this server's
    /// cache, and returns their events in order for the caller to apply.
    pub async fn poll_changes(&self, feed: &mut ChangeFeed) -> Result<Vec<Change>> {
        // New rows after the highest one applied, then any rows that filled a gap below it.
        let high = feed.seen.last().copied().unwrap_or(feed.low);
        let mut rows = sqlx::query(
            "SELECT seq, node, body FROM changes WHERE seq > $1 ORDER BY seq LIMIT 1000",
        )
        .bind(high)
        .fetch_all(&self.read)
        .await?;
        if !feed.gaps.is_empty() {
            let mut missing: Vec<i64> = feed.gaps.keys().copied().collect();
            missing.sort_unstable();
            missing.truncate(500);
            // Numbers only: formatted into the statement, never user input.
            let list: Vec<String> = missing.iter().map(i64::to_string).collect();
            let sql = format!(
                "SELECT seq, node, body FROM changes WHERE seq IN ({}) ORDER BY seq",
                list.join(",")
            );
            let late = sqlx::query(sqlx::AssertSqlSafe(sql))
                .fetch_all(&self.read)
                .await?;
            // Late rows go first: they committed before the newer ones were read.
            rows.splice(0..0, late);
        }
        let mut events = Vec::new();
        for row in rows {
            let seq: i64 = row.try_get("seq")?;
            if !feed.seen.insert(seq) {
                continue;
            }
            let text: String = row.try_get("body")?;
            let node: String = row.try_get("node")?;
            let own = *node == *self.node;
            match serde_json::from_str::<Body>(&text) {
                Ok(body) => {
                    self.cache.invalidate(&body.touches);
                    events.extend(body.events.into_iter().map(|event| Change { own, event }));
                }
                Err(e) => {
                    tracing::error!(seq, error = %e, "changelog: an unreadable row is skipped")
                }
            }
        }
        feed.advance(GAP_WAIT);
        Ok(events)
    }

    /// Deletes rows older than [`RETENTION_MS`]; returns how many.
    pub async fn prune_changes(&self) -> Result<u64> {
        if self.backend != Backend::Postgres {
            return Ok(0);
        }
        let done = sqlx::query(
            "DELETE FROM changes WHERE at < \
             CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT) - $1",
        )
        .bind(RETENTION_MS)
        .execute(&self.write)
        .await?;
        Ok(done.rows_affected())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(low: i64) -> ChangeFeed {
        ChangeFeed {
            low,
            seen: BTreeSet::new(),
            gaps: HashMap::new(),
        }
    }

    #[test]
    fn the_low_water_mark_waits_for_a_gap_then_gives_up_on_it() {
        let mut f = feed(5);
        f.seen.extend([6, 8]);
        f.advance(Duration::from_secs(60));
        assert_eq!(f.low(), 6, "7 is missing: wait");
        assert!(f.seen.contains(&8));
        f.advance(Duration::ZERO);
        assert_eq!(f.low(), 8, "a gap older than the wait is skipped");
        assert!(f.seen.is_empty() && f.gaps.is_empty());
    }

    #[test]
    fn a_late_row_fills_its_gap() {
        let mut f = feed(0);
        f.seen.insert(2);
        f.advance(Duration::from_secs(60));
        assert_eq!(f.low(), 0);
        f.seen.insert(1);
        f.advance(Duration::from_secs(60));
        assert_eq!(f.low(), 2);
        assert!(f.gaps.is_empty());
    }

    #[test]
    fn bodies_round_trip() {
        let body = Body {
            touches: vec![Touch::Secret("sec_1".into())],
            events: vec![Event::ApiKeyRevoked { key_id: "k".into() }],
        };
        let text = serde_json::to_string(&BodyRef {
            touches: &body.touches,
            events: &body.events,
        })
        .unwrap();
        let back: Body = serde_json::from_str(&text).unwrap();
        assert_eq!(back.events, body.events);
        assert_eq!(back.touches.len(), 1);
    }
}
