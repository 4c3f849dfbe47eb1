//! The DEK cache: unwrapped data keys by (secret id, version), so that repeated reads of a
//! version do not call the KMS. Bounded in size and in age: an entry lives at most the TTL
//! from when it was cached, and when the cache is full the oldest entry goes. A key zeroizes
//! when its last user drops it ([`DataKey`] does on drop).
//!
//! Entries are kept in a map and, in the order they were cached, in a queue. Since every entry
//! has the same TTL, the oldest entry is always at the front of the queue, so expiry and
//! eviction are amortised O(1) per insert. (The first version scanned the whole map on every
//! insert once it was full: with 10,000 entries that was most of the secret writer's CPU.)

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tether_crypto::DataKey;

/// A cached version: (secret id, version).
pub type DekKey = (String, i64);

struct Entry {
    dek: Arc<DataKey>,
    /// The organization whose KEK wrapped it (for [`DekCache::forget_org`]).
    org: Arc<str>,
    at: Instant,
}

/// A bounded, expiring map from a version to its data key.
pub struct DekCache {
    entries: HashMap<DekKey, Entry>,
    /// Keys in the order they were cached, with the time each was cached then. A key that was
    /// removed, or cached again since, leaves a stale item here, skipped when it reaches the
    /// front (its time no longer matches the entry's).
    order: VecDeque<(DekKey, Instant)>,
    ttl: Duration,
    capacity: usize,
}

impl DekCache {
    /// An empty cache of at most `capacity` keys, each kept at most `ttl`.
    pub fn new(ttl: Duration, capacity: usize) -> DekCache {
        DekCache {
            entries: HashMap::new(),
            order: VecDeque::new(),
            ttl,
            capacity: capacity.max(1),
        }
    }

    /// The key of a version, if it was cached less than the TTL ago.
    pub fn get(&mut self, key: &DekKey, now: Instant) -> Option<Arc<DataKey>> {
        let entry = self.entries.get(key)?;
        if now.saturating_duration_since(entry.at) < self.ttl {
            return Some(Arc::clone(&entry.dek));
        }
        self.entries.remove(key);
        None
    }

    /// Caches a version's key, evicting expired entries and, when full, the oldest.
    pub fn insert(&mut self, key: DekKey, org: &str, dek: Arc<DataKey>, now: Instant) {
        let org = Arc::from(org);
        self.entries
            .insert(key.clone(), Entry { dek, org, at: now });
        self.order.push_back((key, now));
        self.expire(now);
    }

    /// Drops the keys cached a TTL or more before `now` (and, past the capacity, the oldest):
    /// a dropped key zeroizes once no read holds it. Inserts call it; so does a timer
    /// ([`crate::secrets::SecretKeys::expire_deks`]), so that a key nobody reads again does not
    /// stay in memory past its TTL until the next write.
    pub fn expire(&mut self, now: Instant) {
        while let Some((front, at)) = self.order.front() {
            let expired = now.saturating_duration_since(*at) >= self.ttl;
            let live = self.entries.get(front).is_some_and(|e| e.at == *at);
            if live && !expired && self.entries.len() <= self.capacity {
                break;
            }
            if live {
                self.entries.remove(front);
            }
            self.order.pop_front();
        }
        // Stale items from keys removed by `get` wait at most one TTL to reach the front; a
        // burst of them must not grow the queue past a bound.
        if self.order.len() > 2 * self.capacity + 16 {
            self.compact();
        }
    }

    /// Forgets the keys of a secret's versions (their queue items go stale and are skipped).
    pub fn forget_secret(&mut self, secret_id: &str) {
        self.entries.retain(|(id, _), _| id != secret_id);
    }

    /// Forgets the keys of an organization's versions.
    pub fn forget_org(&mut self, org: &str) {
        self.entries.retain(|_, e| &*e.org != org);
    }

    /// Forgets every key.
    pub fn clear(&mut self) {
        self.entries.clear();
        self.order.clear();
    }

    /// How many keys are cached (some may have expired since).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Rebuilds the queue from the live entries, oldest first.
    fn compact(&mut self) {
        let mut live: Vec<(DekKey, Instant)> = self
            .entries
            .iter()
            .map(|(k, e)| (k.clone(), e.at))
            .collect();
        live.sort_by_key(|(_, at)| *at);
        self.order = live.into();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dek() -> Arc<DataKey> {
        Arc::new(DataKey::generate())
    }

    fn key(i: i64) -> DekKey {
        ("sec_1".to_owned(), i)
    }

    #[test]
    fn a_key_expires_after_the_ttl() {
        let t0 = Instant::now();
        let mut c = DekCache::new(Duration::from_secs(10), 100);
        c.insert(key(1), "org_1", dek(), t0);
        assert!(c.get(&key(1), t0 + Duration::from_secs(9)).is_some());
        assert!(c.get(&key(1), t0 + Duration::from_secs(10)).is_none());
        assert!(c.is_empty());
    }

    #[test]
    fn expiry_drops_and_zeroizes_keys_that_nobody_reads_again() {
        let t0 = Instant::now();
        let mut c = DekCache::new(Duration::from_secs(10), 100);
        let held = dek();
        let watch = Arc::downgrade(&held);
        c.insert(key(1), "org_1", held, t0);
        c.insert(key(2), "org_1", dek(), t0 + Duration::from_secs(5));
        c.expire(t0 + Duration::from_secs(9));
        assert_eq!(c.len(), 2);
        c.expire(t0 + Duration::from_secs(10));
        assert_eq!(c.len(), 1);
        // The cache held the only reference: the key is dropped (and zeroized) now.
        assert!(watch.upgrade().is_none());
        c.expire(t0 + Duration::from_secs(15));
        assert!(c.is_empty());
    }

    #[test]
    fn an_organization_s_keys_can_be_forgotten_at_once() {
        let t0 = Instant::now();
        let mut c = DekCache::new(Duration::from_secs(60), 100);
        let held = dek();
        let watch = Arc::downgrade(&held);
        c.insert(key(1), "org_1", held, t0);
        c.insert(("sec_2".to_owned(), 1), "org_2", dek(), t0);
        c.forget_org("org_1");
        assert!(watch.upgrade().is_none(), "the key was not dropped");
        assert!(c.get(&key(1), t0).is_none());
        assert!(c.get(&("sec_2".to_owned(), 1), t0).is_some());
    }

    #[test]
    fn when_full_the_oldest_key_goes() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut c = DekCache::new(Duration::from_secs(60), 3);
        for i in 0..3 {
            c.insert(
                key(i),
                "org_1",
                dek(),
                t0 + ms(u64::try_from(i).unwrap_or(0)),
            );
        }
        c.insert(key(3), "org_1", dek(), t0 + ms(3));
        assert_eq!(c.len(), 3);
        let now = t0 + ms(4);
        assert!(c.get(&key(0), now).is_none());
        for i in 1..=3 {
            assert!(c.get(&key(i), now).is_some(), "{i}");
        }
    }

    #[test]
    fn a_key_cached_again_is_not_evicted_by_its_old_place_in_line() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut c = DekCache::new(Duration::from_secs(60), 2);
        c.insert(key(0), "org_1", dek(), t0);
        c.insert(key(1), "org_1", dek(), t0 + ms(1));
        // Key 0 is cached again: it is now the newest, and key 1 the oldest.
        c.insert(key(0), "org_1", dek(), t0 + ms(2));
        c.insert(key(2), "org_1", dek(), t0 + ms(3));
        let now = t0 + ms(4);
        assert!(c.get(&key(0), now).is_some());
        assert!(c.get(&key(1), now).is_none());
        assert!(c.get(&key(2), now).is_some());
    }

    #[test]
    fn the_queue_stays_bounded_when_readers_drop_expired_keys() {
        let t0 = Instant::now();
        let mut c = DekCache::new(Duration::from_millis(10), 4);
        for i in 0..10_000u64 {
            let now = t0 + Duration::from_micros(i);
            let k = key(i64::try_from(i % 8).unwrap_or(0));
            // Every read finds the key stale only once the TTL passed; re-insert regardless.
            let _ = c.get(&k, now);
            c.insert(k, "org_1", dek(), now);
            assert!(c.len() <= 4);
            assert!(c.order.len() <= 2 * 4 + 16, "{}", c.order.len());
        }
    }

    #[test]
    fn a_full_cache_keeps_the_newest_keys() {
        let t0 = Instant::now();
        let mut c = DekCache::new(Duration::from_secs(300), 10_000);
        let one = dek();
        for i in 0..100_000i64 {
            c.insert(key(i), "org_1", Arc::clone(&one), t0);
        }
        assert_eq!(c.len(), 10_000);
        assert!(c.get(&key(89_999), t0).is_none());
        assert!(c.get(&key(90_000), t0).is_some());
    }
}
