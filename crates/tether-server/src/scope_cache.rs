//! A short-lived cache of organization and environment rows by name, so the guard does not
//! query the database for the scope of every request. Writes of organizations and
//! environments clear it on this node; the TTL bounds staleness across nodes.

use std::collections::HashMap;
use std::sync::RwLock;
use std::time::{Duration, Instant};

use tether_store::resources::find_resource;
use tether_store::{ResourceRow, Store};

type Key = (String, String, String);

/// The cache.
pub struct ScopeCache {
    rows: RwLock<HashMap<Key, (ResourceRow, Instant)>>,
    ttl: Duration,
}

impl Default for ScopeCache {
    fn default() -> Self {
        Self {
            rows: RwLock::new(HashMap::new()),
            ttl: Duration::from_secs(5),
        }
    }
}

impl ScopeCache {
    /// Finds an organization (`org_id` empty) or an environment by name.
    pub async fn find(
        &self,
        store: &Store,
        org_id: &str,
        kind: &str,
        name: &str,
    ) -> tether_store::Result<Option<ResourceRow>> {
        let key = (org_id.to_owned(), kind.to_owned(), name.to_owned());
        if let Some((row, at)) = self.rows.read().ok().and_then(|m| m.get(&key).cloned())
            && at.elapsed() < self.ttl
        {
            return Ok(Some(row));
        }
        let found = find_resource(store.reader(), org_id, "", kind, name).await?;
        if let (Some(row), Ok(mut m)) = (&found, self.rows.write()) {
            if m.len() > 100_000 {
                m.clear();
            }
            m.insert(key, (row.clone(), Instant::now()));
        }
        Ok(found)
    }

    /// Forgets everything (after a write of an organization or environment).
    pub fn clear(&self) {
        if let Ok(mut m) = self.rows.write() {
            m.clear();
        }
    }
}
