//! `TtlCache`: a small concurrent map whose entries expire after a fixed age.
//!
//! The age bound is the cache's staleness guarantee; PostgreSQL notifications (see
//! `state::apply_change`) usually invalidate entries much sooner.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::RwLock;
use std::time::{Duration, Instant};

/// A map from `K` to `V` whose entries are served for at most `ttl`.
pub struct TtlCache<K, V> {
    map: RwLock<HashMap<K, (V, Instant)>>,
    ttl: Duration,
    capacity: usize,
}

impl<K: Eq + Hash, V: Clone> TtlCache<K, V> {
    /// A cache serving entries for `ttl` and holding at most `capacity` of them
    /// (a zero `ttl` disables caching).
    pub fn new(ttl: Duration, capacity: usize) -> TtlCache<K, V> {
        TtlCache {
            map: RwLock::new(HashMap::new()),
            ttl,
            capacity,
        }
    }

    /// The fresh value for `key`, if any.
    pub fn get(&self, key: &K) -> Option<V> {
        let map = self.map.read().unwrap_or_else(|poison| poison.into_inner());
        let (value, at) = map.get(key)?;
        (at.elapsed() < self.ttl).then(|| value.clone())
    }

    /// Stores `value` for `key`, stamped `fetched_at` (the time the read was *started*, so that
    /// a read racing with an invalidation never outlives the bound).
    pub fn insert(&self, key: K, value: V, fetched_at: Instant) {
        if self.ttl.is_zero() {
            return;
        }
        let mut map = self
            .map
            .write()
            .unwrap_or_else(|poison| poison.into_inner());
        if map.len() >= self.capacity {
            let ttl = self.ttl;
            map.retain(|_, (_, at)| at.elapsed() < ttl);
            if map.len() >= self.capacity {
                map.clear();
            }
        }
        map.insert(key, (value, fetched_at));
    }

    /// Drops the entry for `key`.
    pub fn remove(&self, key: &K) {
        self.map
            .write()
            .unwrap_or_else(|poison| poison.into_inner())
            .remove(key);
    }

    /// Drops every entry whose key matches `pred`.
    pub fn remove_matching(&self, pred: impl Fn(&K) -> bool) {
        self.map
            .write()
            .unwrap_or_else(|poison| poison.into_inner())
            .retain(|k, _| !pred(k));
    }

    /// Drops everything.
    pub fn clear(&self) {
        self.map
            .write()
            .unwrap_or_else(|poison| poison.into_inner())
            .clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_expire_and_can_be_invalidated() {
        let cache = TtlCache::new(Duration::from_millis(50), 10);
        cache.insert(1, "a", Instant::now());
        cache.insert(2, "b", Instant::now());
        assert_eq!(cache.get(&1), Some("a"));
        cache.remove(&1);
        assert_eq!(cache.get(&1), None);
        cache.remove_matching(|k| *k == 2);
        assert_eq!(cache.get(&2), None);
        cache.insert(3, "c", Instant::now() - Duration::from_millis(60));
        assert_eq!(cache.get(&3), None, "stale entry served");
    }

    #[test]
    fn zero_ttl_disables_caching() {
        let cache = TtlCache::new(Duration::ZERO, 10);
        cache.insert(1, 1, Instant::now());
        assert_eq!(cache.get(&1), None);
    }
}
