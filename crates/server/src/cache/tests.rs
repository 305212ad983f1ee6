//! Tests of `TtlCache`.

use super::*;

fn value<V: Clone>(hit: Option<Hit<V>>) -> Option<V> {
    hit.map(|hit| hit.value)
}

#[test]
fn entries_expire_and_can_be_invalidated() {
    let cache = TtlCache::new(Duration::from_secs(10), None, 10);
    let before = Instant::now();
    cache.insert("g", 1, "a", before);
    cache.insert("g", 2, "b", before);
    cache.insert("h", 2, "c", before);
    assert_eq!(value(cache.get("g", &1)), Some("a"));
    cache.remove(&"g", &1);
    assert_eq!(value(cache.get("g", &1)), None);
    cache.remove_group(&"g");
    assert_eq!(value(cache.get("g", &2)), None);
    assert_eq!(
        value(cache.get("h", &2)),
        Some("c"),
        "another group was dropped"
    );
    cache.insert("h", 3, "c", Instant::now() - Duration::from_secs(11));
    assert_eq!(value(cache.get("h", &3)), None, "stale entry served");
    let aging = Instant::now() - Duration::from_millis(9_990);
    cache.insert("h", 4, "d", aging);
    std::thread::sleep(Duration::from_millis(20));
    assert_eq!(
        value(cache.get("h", &4)),
        None,
        "entry served past its bound"
    );
    cache.clear();
    assert_eq!(value(cache.get("h", &2)), None);
}

#[test]
fn reads_started_before_an_invalidation_are_not_stored() {
    let cache = TtlCache::new(Duration::from_secs(10), None, 10);
    let started = Instant::now();
    cache.insert("g", 1, "old", started);
    // A second read starts, the entry is invalidated, the read finishes.
    let racing = Instant::now();
    cache.remove(&"g", &1);
    cache.insert("g", 1, "old", racing);
    assert_eq!(value(cache.get("g", &1)), None, "tombstone overwritten");
    cache.insert("g", 1, "new", Instant::now());
    assert_eq!(value(cache.get("g", &1)), Some("new"));

    // The same for a key without an entry, a group and everything.
    let racing = Instant::now();
    cache.remove(&"g", &2);
    cache.insert("g", 2, "old", racing);
    assert_eq!(value(cache.get("g", &2)), None);
    let racing = Instant::now();
    cache.remove_group(&"g");
    cache.insert("g", 3, "old", racing);
    assert_eq!(value(cache.get("g", &3)), None);
    let racing = Instant::now();
    cache.clear();
    cache.insert("h", 1, "old", racing);
    assert_eq!(value(cache.get("h", &1)), None);
}

#[test]
fn an_older_read_never_replaces_a_newer_one() {
    let cache = TtlCache::new(Duration::from_secs(10), None, 10);
    let older = Instant::now();
    let newer = Instant::now();
    cache.insert("g", 1, "new", newer);
    cache.insert("g", 1, "old", older);
    assert_eq!(value(cache.get("g", &1)), Some("new"));
}

#[test]
fn refresh_is_handed_out_once_past_refresh_after() {
    let cache = TtlCache::new(Duration::from_secs(10), Some(Duration::from_secs(5)), 10);
    cache.insert("g", 1, "a", Instant::now());
    assert!(!cache.get("g", &1).is_some_and(|hit| hit.refresh));
    cache.insert("g", 2, "b", Instant::now() - Duration::from_secs(6));
    let first = cache.get("g", &2).map(|hit| (hit.value, hit.refresh));
    assert_eq!(first, Some(("b", true)));
    let second = cache.get("g", &2).map(|hit| (hit.value, hit.refresh));
    assert_eq!(second, Some(("b", false)), "refresh handed out twice");
    cache.insert("g", 2, "c", Instant::now());
    let refreshed = cache.get("g", &2).map(|hit| (hit.value, hit.refresh));
    assert_eq!(refreshed, Some(("c", false)));
}

#[test]
fn update_changes_a_fresh_value_and_keeps_its_age() {
    let cache = TtlCache::new(Duration::from_secs(10), None, 10);
    let aging = Instant::now() - Duration::from_millis(9_990);
    cache.insert("g", 1, 1, aging);
    cache.insert("g", 2, 2, Instant::now());
    cache.update(&"g", &2, |value| Some(value + 10));
    assert_eq!(value(cache.get("g", &2)), Some(12));
    cache.update(&"g", &2, |_| None);
    assert_eq!(
        value(cache.get("g", &2)),
        Some(12),
        "None replaced the value"
    );
    cache.update(&"g", &1, |value| Some(value + 10));
    std::thread::sleep(Duration::from_millis(20));
    assert_eq!(
        value(cache.get("g", &1)),
        None,
        "an update renewed the entry"
    );
    cache.remove(&"g", &3);
    cache.update(&"g", &3, |_| Some(3));
    cache.update(&"h", &3, |_| Some(3));
    assert_eq!(value(cache.get("g", &3)), None, "a tombstone was revived");
    assert_eq!(value(cache.get("h", &3)), None, "an entry was created");
}

#[test]
fn a_confirmation_keeps_entries_fresh_but_revives_nothing_invalidated() {
    let ttl = Duration::from_secs(10);
    let cache = TtlCache::new(ttl, Some(ttl * 3 / 4), 10);
    let read = Instant::now() - Duration::from_millis(9_990);
    cache.insert("g", 1, "a", read);
    cache.insert("g", 2, "b", read);
    cache.remove(&"g", &2);
    // A read that started before the confirmation and that nothing invalidated.
    let second_read = Instant::now() - Duration::from_secs(8);
    cache.up_to_date(Instant::now());
    cache.up_to_date(read);
    std::thread::sleep(Duration::from_millis(20));
    let hit = cache.get("g", &1).map(|hit| (hit.value, hit.refresh));
    assert_eq!(
        hit,
        Some(("a", false)),
        "not served past its read's age, or refreshed"
    );
    assert_eq!(
        value(cache.get("g", &2)),
        None,
        "an invalidated entry came back"
    );
    cache.insert("g", 3, "c", second_read);
    let hit = cache.get("g", &3).map(|hit| (hit.value, hit.refresh));
    assert_eq!(hit, Some(("c", false)));

    // Without further confirmations, entries expire by the bound after the last one.
    let cache = TtlCache::new(ttl, None, 10);
    cache.insert("g", 1, "a", Instant::now() - Duration::from_secs(20));
    assert_eq!(value(cache.get("g", &1)), None, "a stale entry was stored");
    cache.insert("g", 1, "a", Instant::now() - Duration::from_millis(9_990));
    cache.up_to_date(Instant::now() - Duration::from_millis(9_980));
    std::thread::sleep(Duration::from_millis(30));
    assert_eq!(value(cache.get("g", &1)), None, "served past the bound");
}

#[test]
fn zero_ttl_disables_caching() {
    let cache = TtlCache::new(Duration::ZERO, None, 10);
    cache.insert((), 1, 1, Instant::now());
    assert_eq!(value(cache.get(&(), &1)), None);
}

#[test]
fn capacity_sheds_expired_entries_then_everything() {
    let cache = TtlCache::new(Duration::from_secs(10), None, 2);
    cache.insert("g", 1, 1, Instant::now() - Duration::from_millis(9_990));
    std::thread::sleep(Duration::from_millis(20));
    cache.insert("g", 2, 2, Instant::now());
    cache.insert("g", 3, 3, Instant::now());
    assert_eq!(value(cache.get("g", &2)), Some(2), "a fresh entry was shed");
    assert_eq!(value(cache.get("g", &3)), Some(3));
    cache.insert("g", 4, 4, Instant::now());
    assert_eq!(
        value(cache.get("g", &2)),
        None,
        "a full cache is not cleared"
    );
    assert_eq!(value(cache.get("g", &4)), Some(4));
}

#[test]
fn tombstones_of_keys_written_once_do_not_pile_up() {
    // Keys created and deleted once each (churned devices) leave tombstones; expired ones are
    // shed after many invalidations, long before the capacity is reached.
    let cache: TtlCache<&str, usize, usize> =
        TtlCache::new(Duration::from_millis(20), None, 1_000_000);
    cache.insert("g", 0, 0, Instant::now());
    for round in 0..5 {
        for key in 1..=SHED_AFTER_REMOVALS {
            cache.remove(&"g", &(round * SHED_AFTER_REMOVALS + key));
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    let held = cache.write().len;
    assert!(held <= 2 * SHED_AFTER_REMOVALS, "{held} entries held");
    // A tombstone younger than the bound still keeps out the reads started before it.
    let before = Instant::now();
    cache.remove(&"g", &7);
    cache.insert("g", 7, 7, before);
    assert_eq!(value(cache.get("g", &7)), None);
}

#[test]
fn past_the_byte_budget_the_least_recently_used_entries_go() {
    let cache = TtlCache::new(Duration::from_secs(10), None, 1000)
        .with_byte_budget(100, |value: &&str| value.len());
    let now = Instant::now();
    cache.insert("g", 0, "0123456789", now);
    for key in 1..10 {
        cache.insert("g", key, "0123456789", now);
        // Entry 0 stays in use.
        assert!(cache.get("g", &0).is_some(), "the entry in use was evicted");
    }
    // 100 bytes held: nothing evicted yet.
    assert!(cache.get("g", &1).is_some());
    cache.insert("g", 10, "0123456789", now);
    let held: Vec<i32> = (0..=10)
        .filter(|key| cache.get("g", key).is_some())
        .collect();
    let weight = held.len() * 10;
    assert!(weight <= 75, "over three quarters of the budget: {held:?}");
    assert!(held.contains(&0) && held.contains(&10), "{held:?}");
    assert!(!held.contains(&2), "an old unused entry survived: {held:?}");
}
