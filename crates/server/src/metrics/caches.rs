//! The counts a cache keeps for the metrics: hits, misses and invalidations, per thread.

use super::cells::ShardedCounter;

/// Lookups and invalidations of one cache, counted per thread.
#[derive(Default)]
pub struct CacheCounters {
    hits: ShardedCounter,
    misses: ShardedCounter,
    invalidations: ShardedCounter,
}

impl CacheCounters {
    /// Counts a lookup: a hit when `found`, else a miss.
    pub fn looked_up(&self, found: bool) {
        if found {
            self.hits.inc();
        } else {
            self.misses.inc();
        }
    }

    /// Counts an invalidation (of an entry, a group or everything).
    pub fn invalidated(&self) {
        self.invalidations.inc();
    }

    /// The counts so far.
    pub fn counts(&self) -> CacheCounts {
        CacheCounts {
            hits: self.hits.get(),
            misses: self.misses.get(),
            invalidations: self.invalidations.get(),
        }
    }
}

/// How often a cache was asked and invalidated since it was made.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheCounts {
    /// Lookups answered from the cache.
    pub hits: u64,
    /// Lookups that found no fresh entry.
    pub misses: u64,
    /// Invalidations applied: of an entry, of a group, or of everything.
    pub invalidations: u64,
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;
    use crate::cache::TtlCache;

    #[test]
    fn a_cache_counts_lookups_and_invalidations() {
        let cache = TtlCache::new(Duration::from_secs(10), None, 10);
        cache.insert("g", 1, "a", Instant::now());
        assert!(cache.get("g", &1).is_some());
        assert!(cache.get("g", &2).is_none());
        cache.remove(&"g", &1);
        cache.remove_group(&"g");
        cache.clear();
        assert!(cache.get("g", &1).is_none());
        assert_eq!(
            cache.counts(),
            CacheCounts {
                hits: 1,
                misses: 2,
                invalidations: 3
            }
        );
    }
}
