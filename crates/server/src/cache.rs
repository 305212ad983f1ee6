//! `TtlCache`: a small concurrent map whose entries expire after a fixed age.
//!
//! The age bound is the cache's staleness guarantee: an entry is served for at most `ttl` after
//! the start of the read that filled it. PostgreSQL notifications and local writes (see
//! `state::apply_change`) usually invalidate entries much sooner, and an invalidation also
//! rejects every read that started before it and finishes after it, so such a read can never
//! put back what was just invalidated.
//!
//! Keys have two parts, a group (the instance) and an item (a token hash, a device id): entries
//! are looked up by reference to both parts, without building an owned key per lookup, and a
//! whole group is invalidated at once.
//!
//! Entries may ask to be refreshed ahead of their expiry: past `refresh_after`, the first
//! lookup is told to refresh the entry (once), while it and the following lookups are still
//! served the fresh-enough value, so hot entries are re-read in the background instead of
//! making a request wait for the database.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::Hash;
use std::sync::RwLock;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::metrics::caches::{CacheCounters, CacheCounts};

/// Invalidations of single entries after which expired entries and tombstones are shed, at
/// least (else half the entries held).
const SHED_AFTER_REMOVALS: usize = 1024;

/// A map from `(G, K)` to `V` whose entries are served for at most `ttl`.
pub struct TtlCache<G, K, V> {
    inner: RwLock<Inner<G, K, V>>,
    ttl: Duration,
    refresh_after: Option<Duration>,
    capacity: usize,
    counters: CacheCounters,
    /// Most bytes the values may weigh together ([`TtlCache::with_byte_budget`]).
    max_bytes: usize,
    /// The weight of a value in bytes.
    weigh: fn(&V) -> usize,
    /// A logical clock of lookups, for least-recently-used eviction.
    tick: AtomicU64,
}

struct Inner<G, K, V> {
    groups: HashMap<G, Group<K, V>>,
    /// Entries and tombstones held.
    len: usize,
    /// Invalidations of single entries since expired entries and tombstones were last shed.
    removed_since_shed: usize,
    /// What the values held weigh together.
    bytes: usize,
    /// Reads started at or before this instant are not stored.
    cleared_at: Option<Instant>,
    /// Every entry held, and every entry stored later from a read that nothing invalidated,
    /// was still current at this instant ([`TtlCache::up_to_date`]).
    up_to_date_at: Option<Instant>,
}

impl<G, K, V> Inner<G, K, V> {
    /// Since when `entry` is known to be current: the start of the read that filled it, or
    /// the last confirmation that nothing cached has changed since, whichever is later.
    fn current_since(&self, entry: &Entry<V>) -> Instant {
        self.up_to_date_at.map_or(entry.at, |at| at.max(entry.at))
    }
}

struct Group<K, V> {
    entries: HashMap<K, Entry<V>>,
    /// Reads of this group started at or before this instant are not stored.
    invalidated_at: Option<Instant>,
}

impl<K, V> Group<K, V> {
    fn new() -> Group<K, V> {
        Group {
            entries: HashMap::new(),
            invalidated_at: None,
        }
    }
}

struct Entry<V> {
    /// `None`: a tombstone, invalidated at `at`.
    value: Option<V>,
    /// When the read that filled the entry started, or when the entry was invalidated.
    at: Instant,
    /// A refresh of this entry has been handed out.
    refreshing: AtomicBool,
    /// The value's weight in bytes (0 for a tombstone).
    bytes: usize,
    /// The lookup clock's value at the entry's last use.
    used: AtomicU64,
}

/// A value found in the cache.
pub struct Hit<V> {
    /// The value.
    pub value: V,
    /// Whether the caller should refresh the entry (handed out once per entry).
    pub refresh: bool,
}

impl<G: Eq + Hash, K: Eq + Hash, V: Clone> TtlCache<G, K, V> {
    /// A cache serving entries for `ttl` and holding at most `capacity` of them (a zero `ttl`
    /// disables caching); past `refresh_after`, lookups ask for a refresh.
    pub fn new(ttl: Duration, refresh_after: Option<Duration>, capacity: usize) -> Self {
        TtlCache {
            inner: RwLock::new(Inner {
                groups: HashMap::new(),
                len: 0,
                removed_since_shed: 0,
                bytes: 0,
                cleared_at: None,
                up_to_date_at: None,
            }),
            ttl,
            refresh_after: refresh_after.filter(|after| *after < ttl),
            capacity,
            counters: CacheCounters::default(),
            max_bytes: usize::MAX,
            weigh: |_| 0,
            tick: AtomicU64::new(0),
        }
    }

    /// Bounds what the values weigh together to `max_bytes`, each weighed by `weigh`: past
    /// it, the least recently used entries are evicted (down to three quarters of the budget).
    pub fn with_byte_budget(mut self, max_bytes: usize, weigh: fn(&V) -> usize) -> Self {
        self.max_bytes = max_bytes;
        self.weigh = weigh;
        self
    }

    /// The lookups and invalidations counted so far (for the metrics).
    pub fn counts(&self) -> CacheCounts {
        self.counters.counts()
    }

    /// The map, for writing (a panic elsewhere never leaves it inconsistent: every write
    /// is a single insert, removal or clear).
    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Inner<G, K, V>> {
        self.inner
            .write()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// The fresh value for `(group, key)`, if any.
    pub fn get<GQ, KQ>(&self, group: &GQ, key: &KQ) -> Option<Hit<V>>
    where
        G: Borrow<GQ>,
        K: Borrow<KQ>,
        GQ: Eq + Hash + ?Sized,
        KQ: Eq + Hash + ?Sized,
    {
        let hit = self.lookup(group, key);
        self.counters.looked_up(hit.is_some());
        hit
    }

    fn lookup<GQ, KQ>(&self, group: &GQ, key: &KQ) -> Option<Hit<V>>
    where
        G: Borrow<GQ>,
        K: Borrow<KQ>,
        GQ: Eq + Hash + ?Sized,
        KQ: Eq + Hash + ?Sized,
    {
        let inner = self
            .inner
            .read()
            .unwrap_or_else(|poison| poison.into_inner());
        let entry = inner.groups.get(group)?.entries.get(key)?;
        let value = entry.value.as_ref()?;
        let age = inner.current_since(entry).elapsed();
        if age >= self.ttl {
            return None;
        }
        let refresh = self.refresh_after.is_some_and(|after| age >= after)
            && !entry.refreshing.swap(true, Ordering::Relaxed);
        entry
            .used
            .store(self.tick.fetch_add(1, Ordering::Relaxed), Ordering::Relaxed);
        Some(Hit {
            value: value.clone(),
            refresh,
        })
    }

    /// Stores `value` for `(group, key)`, read by a read that started at `fetched_at`: the
    /// entry is served until `fetched_at + ttl`. Not stored when an invalidation of the entry
    /// (or of its group, or of everything) came at or after `fetched_at`, or when the entry
    /// holds the result of a read that started later.
    pub fn insert(&self, group: G, key: K, value: V, fetched_at: Instant)
    where
        G: Clone,
        K: Clone,
    {
        if self.ttl.is_zero() || fetched_at.elapsed() >= self.ttl {
            return;
        }
        let mut inner = self.write();
        if inner.cleared_at.is_some_and(|at| at >= fetched_at) {
            return;
        }
        if inner.len >= self.capacity {
            self.shed(&mut inner);
        }
        let group = inner.groups.entry(group).or_insert_with(Group::new);
        if group.invalidated_at.is_some_and(|at| at >= fetched_at) {
            return;
        }
        if group
            .entries
            .get(&key)
            .is_some_and(|entry| entry.at >= fetched_at)
        {
            return;
        }
        let bytes = (self.weigh)(&value);
        let entry = Entry {
            value: Some(value),
            at: fetched_at,
            refreshing: AtomicBool::new(false),
            bytes,
            used: AtomicU64::new(self.tick.fetch_add(1, Ordering::Relaxed)),
        };
        match group.entries.insert(key, entry) {
            None => inner.len += 1,
            Some(old) => inner.bytes -= old.bytes,
        }
        inner.bytes += bytes;
        if inner.bytes > self.max_bytes {
            self.evict_least_recently_used(&mut inner);
        }
    }

    /// Evicts the least recently used entries until the values weigh at most three quarters
    /// of the budget. Eviction is not an invalidation: reads in flight may still be stored.
    fn evict_least_recently_used(&self, inner: &mut Inner<G, K, V>)
    where
        G: Clone,
        K: Clone,
    {
        let mut held: Vec<(u64, usize, G, K)> = inner
            .groups
            .iter()
            .flat_map(|(group, entries)| {
                entries
                    .entries
                    .iter()
                    .filter(|(_, e)| e.bytes > 0)
                    .map(|(key, entry)| {
                        let used = entry.used.load(Ordering::Relaxed);
                        (used, entry.bytes, group.clone(), key.clone())
                    })
            })
            .collect();
        held.sort_unstable_by_key(|(used, ..)| *used);
        let target = self.max_bytes / 4 * 3;
        for (_, _, group, key) in held {
            if inner.bytes <= target {
                break;
            }
            let removed = inner
                .groups
                .get_mut(&group)
                .and_then(|entries| entries.entries.remove(&key));
            if let Some(entry) = removed {
                inner.bytes -= entry.bytes;
                inner.len -= 1;
            }
        }
    }

    /// Replaces the fresh value for `(group, key)` by `change(value)`, when that returns one,
    /// keeping the entry's age: for what this process itself just changed in the database
    /// (an accepted HOTP code moves the counter), so nothing is read again.
    pub fn update<GQ, KQ>(&self, group: &GQ, key: &KQ, change: impl FnOnce(&V) -> Option<V>)
    where
        G: Borrow<GQ>,
        K: Borrow<KQ>,
        GQ: Eq + Hash + ?Sized,
        KQ: Eq + Hash + ?Sized,
    {
        let mut inner = self.write();
        let up_to_date_at = inner.up_to_date_at;
        let Some(entry) = inner
            .groups
            .get_mut(group)
            .and_then(|group| group.entries.get_mut(key))
        else {
            return;
        };
        let current_since = up_to_date_at.map_or(entry.at, |at| at.max(entry.at));
        if current_since.elapsed() >= self.ttl {
            return;
        }
        if let Some(changed) = entry.value.as_ref().and_then(change) {
            let (old, new) = (entry.bytes, (self.weigh)(&changed));
            entry.value = Some(changed);
            entry.bytes = new;
            inner.bytes = inner.bytes - old + new;
        }
    }

    /// Invalidates the entry for `(group, key)`: it leaves a tombstone that keeps out the reads
    /// started before now.
    pub fn remove(&self, group: &G, key: &K)
    where
        G: Clone,
        K: Clone,
    {
        if self.ttl.is_zero() {
            return;
        }
        self.counters.invalidated();
        let now = Instant::now();
        let mut inner = self.write();
        // Every invalidated key leaves a tombstone: shed the expired ones once there have been
        // many invalidations, so that keys written once (devices created and deleted) do not
        // pile up until the capacity is reached. Amortized, a few entries visited per call.
        inner.removed_since_shed += 1;
        if inner.len >= self.capacity
            || inner.removed_since_shed >= SHED_AFTER_REMOVALS.max(inner.len / 2)
        {
            self.shed(&mut inner);
        }
        // Invalidations are rare (writes): cloning the group key here is fine.
        let group = inner.groups.entry(group.clone()).or_insert_with(Group::new);
        let tombstone = Entry {
            value: None,
            at: now,
            refreshing: AtomicBool::new(false),
            bytes: 0,
            used: AtomicU64::new(0),
        };
        match group.entries.insert(key.clone(), tombstone) {
            None => inner.len += 1,
            Some(old) => inner.bytes -= old.bytes,
        }
    }

    /// Invalidates every entry of `group`, and the reads of it started before now.
    pub fn remove_group(&self, group: &G)
    where
        G: Clone,
    {
        if self.ttl.is_zero() {
            return;
        }
        self.counters.invalidated();
        let now = Instant::now();
        let mut inner = self.write();
        // Invalidations are rare (writes): cloning the group key here is fine.
        let group = inner.groups.entry(group.clone()).or_insert_with(Group::new);
        let removed = group.entries.len();
        let removed_bytes: usize = group.entries.values().map(|entry| entry.bytes).sum();
        group.entries.clear();
        group.invalidated_at = Some(now);
        inner.len -= removed;
        inner.bytes -= removed_bytes;
    }

    /// Records that every change made before `as_of` has been applied to this cache (the
    /// change notifications, delivered in commit order, have all arrived): every entry that
    /// is held, or is stored later from a read nothing invalidated, was still current at
    /// `as_of`, so it is served until `as_of + ttl` even when its read is older. Such
    /// confirmations keep entries in use fresh without reading them again; without them,
    /// entries age from their read as usual.
    pub fn up_to_date(&self, as_of: Instant) {
        let mut inner = self.write();
        if inner.up_to_date_at.is_none_or(|at| at < as_of) {
            inner.up_to_date_at = Some(as_of);
        }
    }

    /// Invalidates everything.
    pub fn clear(&self) {
        self.counters.invalidated();
        let now = Instant::now();
        let mut inner = self.write();
        inner.groups.clear();
        inner.len = 0;
        inner.bytes = 0;
        inner.cleared_at = Some(now);
    }

    /// Drops expired entries and tombstones (no read older than `ttl` is ever served, so
    /// they protect nothing), then everything if the cache is still full.
    fn shed(&self, inner: &mut Inner<G, K, V>) {
        inner.removed_since_shed = 0;
        let (ttl, up_to_date_at) = (self.ttl, inner.up_to_date_at);
        for group in inner.groups.values_mut() {
            group.entries.retain(|_, entry| {
                let since = match (&entry.value, up_to_date_at) {
                    (Some(_), Some(at)) => at.max(entry.at),
                    _ => entry.at,
                };
                since.elapsed() < ttl
            });
        }
        inner.groups.retain(|_, group| {
            !group.entries.is_empty() || group.invalidated_at.is_some_and(|at| at.elapsed() < ttl)
        });
        inner.len = inner.groups.values().map(|group| group.entries.len()).sum();
        inner.bytes = inner
            .groups
            .values()
            .flat_map(|group| group.entries.values())
            .map(|entry| entry.bytes)
            .sum();
        if inner.len >= self.capacity {
            // Shedding is not an invalidation: reads in flight may still be stored.
            inner.groups.clear();
            inner.len = 0;
            inner.bytes = 0;
        }
    }
}

#[cfg(test)]
mod tests;
