//! A read-through cache of hot rows: resources by (org, env, kind, name) and secret versions by
//! (secret, version). Every request of an item route looks its resource up by name, and every
//! secret read loads one version row; on SQLite each of those queries costs two thread hand-offs
//! to the driver's worker, which dominated the read path before this cache.
//!
//! Correctness rests on one rule: **every write goes through a [`Tx`](crate::Tx)**, and the
//! repository functions that change a cached table record what they touched on the transaction.
//! When the transaction commits, those entries are dropped. A fill that raced with a commit is
//! discarded: a reader notes the write epoch before it queries and stores its row only if no
//! commit with touches happened in between. The TTL bounds staleness against writers this
//! process cannot see (another node on the same PostgreSQL, an offline operator command).
//!
//! The cache holds ciphertext only (version blobs as stored); it never sees plaintext.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use crate::resources::ResourceRow;
use crate::secrets::SecretVersionRow;

/// (org id, env id, kind, name).
pub(crate) type ResourceKey = (String, String, String, String);

/// The map key of a resource row: the four parts of its [`ResourceKey`] joined by NUL, which no
/// id, kind or name contains. One allocation per lookup instead of four.
pub(crate) fn row_key(org_id: &str, env_id: &str, kind: &str, name: &str) -> String {
    [org_id, env_id, kind, name].join("\0")
}

/// What a transaction changed, for invalidation at commit (and, through the changelog, on the
/// other servers).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Touch {
    /// A resource row, by its key and id (an update may rename; a delete knows only the id).
    Resource {
        /// The key, when the writer knows it.
        key: Option<ResourceKey>,
        /// The row id.
        id: String,
    },
    /// Any version of a secret.
    Secret(String),
}

struct Entry<T> {
    value: T,
    at: Instant,
}

#[derive(Default)]
struct Inner {
    /// By [`row_key`]; rows are shared, not cloned, with the requests that read them.
    rows: HashMap<String, Entry<Arc<ResourceRow>>>,
    /// Row id to [`row_key`].
    row_keys: HashMap<String, String>,
    versions: HashMap<String, HashMap<i64, Entry<Arc<SecretVersionRow>>>>,
    version_bytes: usize,
}

/// Limits of the cache.
#[derive(Debug, Clone, Copy)]
pub struct CacheLimits {
    /// How long an entry is trusted without a local write.
    pub ttl: Duration,
    /// At most this many resource rows; the cache starts over when full.
    pub max_rows: usize,
    /// At most this many bytes of version blobs; the version cache starts over when full.
    pub max_version_bytes: usize,
}

impl Default for CacheLimits {
    fn default() -> Self {
        Self {
            ttl: Duration::from_secs(5),
            max_rows: 100_000,
            max_version_bytes: 64 << 20,
        }
    }
}

/// The cache, shared by a [`Store`](crate::Store) and its transactions.
pub(crate) struct HotCache {
    inner: RwLock<Inner>,
    epoch: AtomicU64,
    limits: CacheLimits,
}

impl HotCache {
    pub(crate) fn new(limits: CacheLimits) -> Self {
        Self {
            inner: RwLock::new(Inner::default()),
            epoch: AtomicU64::new(0),
            limits,
        }
    }

    /// The write epoch to pass back to a `put_*` after a query.
    pub(crate) fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    pub(crate) fn row(&self, key: &str) -> Option<Arc<ResourceRow>> {
        let inner = self.inner.read().ok()?;
        let e = inner.rows.get(key)?;
        (e.at.elapsed() < self.limits.ttl).then(|| Arc::clone(&e.value))
    }

    pub(crate) fn put_row(&self, epoch: u64, key: String, row: &Arc<ResourceRow>) {
        let Ok(mut inner) = self.inner.write() else {
            return;
        };
        if self.epoch.load(Ordering::Acquire) != epoch {
            return;
        }
        if inner.rows.len() >= self.limits.max_rows {
            inner.rows.clear();
            inner.row_keys.clear();
        }
        inner.row_keys.insert(row.id.clone(), key.clone());
        let entry = Entry {
            value: Arc::clone(row),
            at: Instant::now(),
        };
        inner.rows.insert(key, entry);
    }

    pub(crate) fn version(&self, secret_id: &str, version: i64) -> Option<Arc<SecretVersionRow>> {
        let inner = self.inner.read().ok()?;
        let e = inner.versions.get(secret_id)?.get(&version)?;
        (e.at.elapsed() < self.limits.ttl).then(|| Arc::clone(&e.value))
    }

    pub(crate) fn put_version(&self, epoch: u64, row: &Arc<SecretVersionRow>) {
        let Ok(mut inner) = self.inner.write() else {
            return;
        };
        if self.epoch.load(Ordering::Acquire) != epoch {
            return;
        }
        let size = row.blob.as_ref().map_or(0, Vec::len) + 256;
        if inner.version_bytes + size > self.limits.max_version_bytes {
            inner.versions.clear();
            inner.version_bytes = 0;
        }
        let entry = Entry {
            value: Arc::clone(row),
            at: Instant::now(),
        };
        let old = inner
            .versions
            .entry(row.secret_id.clone())
            .or_default()
            .insert(row.version, entry);
        let freed = old.map_or(0, |o| o.value.blob.as_ref().map_or(0, Vec::len) + 256);
        inner.version_bytes = (inner.version_bytes + size).saturating_sub(freed);
    }

    /// Drops what a committed transaction touched and moves the epoch on, so that fills which
    /// raced with the commit are discarded.
    pub(crate) fn invalidate(&self, touched: &[Touch]) {
        if touched.is_empty() {
            return;
        }
        let mut inner = match self.inner.write() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        self.epoch.fetch_add(1, Ordering::AcqRel);
        for t in touched {
            match t {
                Touch::Resource { key, id } => {
                    if let Some((org_id, env_id, kind, name)) = key {
                        inner.rows.remove(&row_key(org_id, env_id, kind, name));
                    }
                    if let Some(k) = inner.row_keys.remove(id) {
                        inner.rows.remove(&k);
                    }
                }
                Touch::Secret(secret_id) => {
                    if let Some(vs) = inner.versions.remove(secret_id) {
                        let freed: usize = vs
                            .values()
                            .map(|e| e.value.blob.as_ref().map_or(0, Vec::len) + 256)
                            .sum();
                        inner.version_bytes = inner.version_bytes.saturating_sub(freed);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: &str, name: &str) -> Arc<ResourceRow> {
        Arc::new(ResourceRow {
            id: id.into(),
            org_id: "o".into(),
            env_id: String::new(),
            kind: "Team".into(),
            name: name.into(),
            spec: "{}".into(),
            labels: "{}".into(),
            created_at: 0,
            created_by: String::new(),
            updated_at: 0,
            updated_by: String::new(),
            version_id: String::new(),
        })
    }

    fn key(name: &str) -> String {
        row_key("o", "", "Team", name)
    }

    /// A fill whose query started before a commit is dropped, whatever the commit touched:
    /// the query may have read the row as it was before that commit.
    #[test]
    fn a_fill_that_raced_a_commit_is_discarded() {
        let c = HotCache::new(CacheLimits::default());
        let before = c.epoch();
        c.invalidate(&[Touch::Secret("other".into())]);
        c.put_row(before, key("a"), &row("r1", "a"));
        assert!(c.row(&key("a")).is_none());
        c.put_row(c.epoch(), key("a"), &row("r1", "a"));
        assert!(c.row(&key("a")).is_some());
        // Invalidating by id alone (a delete) finds the key through the reverse index.
        c.invalidate(&[Touch::Resource {
            key: None,
            id: "r1".into(),
        }]);
        assert!(c.row(&key("a")).is_none());
        // And by its key (an update that knows it).
        c.put_row(c.epoch(), key("b"), &row("r2", "b"));
        c.invalidate(&[Touch::Resource {
            key: Some(("o".into(), String::new(), "Team".into(), "b".into())),
            id: "other".into(),
        }]);
        assert!(c.row(&key("b")).is_none());
    }

    #[test]
    fn the_version_cache_is_bounded_by_bytes() {
        let c = HotCache::new(CacheLimits {
            max_version_bytes: 4096,
            ..CacheLimits::default()
        });
        for v in 1..=20 {
            let row = Arc::new(SecretVersionRow {
                secret_id: "s".into(),
                version: v,
                org_id: "o".into(),
                env_id: String::new(),
                blob: Some(vec![0; 1000]),
                kek_version: 1,
                created_at: 0,
                created_by: String::new(),
                backend: "builtin".into(),
                backend_ref: None,
                destroyed_at: None,
            });
            c.put_version(c.epoch(), &row);
        }
        let inner = c.inner.read().unwrap();
        assert!(inner.version_bytes <= 4096, "{}", inner.version_bytes);
        let held: usize = inner.versions.values().map(HashMap::len).sum();
        assert!((1..=4).contains(&held), "{held}");
    }
}
