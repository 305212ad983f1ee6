//! Counters and histograms for the hot path: each thread adds to its own cache lines (one of
//! eight shards, picked once per thread), so two workers serving the same route never
//! contend; a scrape sums the shards. Encoded with `prometheus-client`'s encoder.

use std::cell::Cell;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::{MetricType, TypedMetric};

/// Shards per cell: more than the workers of a usual deployment; threads beyond share.
const SHARDS: usize = 8;

/// Cells per histogram shard: the buckets, then the count and the sum (microseconds).
const HISTOGRAM_CELLS: usize = BUCKETS_US.len() + 2;

/// Upper bounds of the latency buckets, in microseconds (0.25 ms to 10 s); a `+Inf` bucket
/// follows implicitly.
pub const BUCKETS_US: [u64; 14] = [
    250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000,
    2_500_000, 10_000_000,
];

static NEXT_SHARD: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// This thread's shard, assigned round-robin on first use.
    static SHARD: Cell<usize> = const { Cell::new(usize::MAX) };
}

fn shard() -> usize {
    SHARD.with(|shard| {
        let mut index = shard.get();
        if index == usize::MAX {
            index = NEXT_SHARD.fetch_add(1, Ordering::Relaxed) % SHARDS;
            shard.set(index);
        }
        index
    })
}

/// `N` counters of one shard, on cache lines of their own.
#[repr(align(128))]
struct Line<const N: usize>([AtomicU64; N]);

impl<const N: usize> Line<N> {
    fn new() -> Line<N> {
        Line(std::array::from_fn(|_| AtomicU64::new(0)))
    }
}

/// `N` counters, sharded per thread.
struct Sharded<const N: usize>([Line<N>; SHARDS]);

impl<const N: usize> Sharded<N> {
    fn new() -> Sharded<N> {
        Sharded(std::array::from_fn(|_| Line::new()))
    }

    fn add(&self, cell: usize, value: u64) {
        if let Some(counter) = self.0.get(shard()).and_then(|line| line.0.get(cell)) {
            counter.fetch_add(value, Ordering::Relaxed);
        }
    }

    fn sum(&self, cell: usize) -> u64 {
        self.0
            .iter()
            .filter_map(|line| line.0.get(cell))
            .map(|counter| counter.load(Ordering::Relaxed))
            .fold(0, u64::wrapping_add)
    }
}

/// A monotonic counter, sharded per thread.
pub struct ShardedCounter(Sharded<1>);

impl Default for ShardedCounter {
    fn default() -> ShardedCounter {
        ShardedCounter(Sharded::new())
    }
}

impl std::fmt::Debug for ShardedCounter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ShardedCounter({})", self.get())
    }
}

impl ShardedCounter {
    /// Adds one.
    pub fn inc(&self) {
        self.0.add(0, 1);
    }

    /// The total over all threads.
    pub fn get(&self) -> u64 {
        self.0.sum(0)
    }
}

impl TypedMetric for ShardedCounter {
    const TYPE: MetricType = MetricType::Counter;
}

impl EncodeMetric for ShardedCounter {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        encoder.encode_counter::<NoLabelSet, _, u64>(&self.get(), None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Counter
    }
}

/// A histogram of durations with the buckets [`BUCKETS_US`], sharded per thread. Clones share
/// the cells.
#[derive(Clone)]
pub struct DurationHistogram(Arc<Sharded<HISTOGRAM_CELLS>>);

impl Default for DurationHistogram {
    fn default() -> DurationHistogram {
        DurationHistogram(Arc::new(Sharded::new()))
    }
}

impl std::fmt::Debug for DurationHistogram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DurationHistogram(count {})", self.count())
    }
}

impl DurationHistogram {
    /// Records one observation.
    pub fn observe(&self, duration: Duration) {
        let us = u64::try_from(duration.as_micros()).unwrap_or(u64::MAX);
        let bucket = BUCKETS_US
            .iter()
            .position(|bound| us <= *bound)
            .unwrap_or(BUCKETS_US.len());
        // Observations beyond the last bound count only in `+Inf` (the count).
        if bucket < BUCKETS_US.len() {
            self.0.add(bucket, 1);
        }
        self.0.add(BUCKETS_US.len(), 1);
        self.0.add(BUCKETS_US.len() + 1, us);
    }

    /// The number of observations.
    pub fn count(&self) -> u64 {
        self.0.sum(BUCKETS_US.len())
    }

    /// Encodes the histogram (in seconds) with `encoder`.
    pub fn encode_into(&self, encoder: &mut MetricEncoder) -> Result<(), std::fmt::Error> {
        let buckets: Vec<(f64, u64)> = BUCKETS_US
            .iter()
            .enumerate()
            .map(|(cell, bound)| (*bound as f64 / 1e6, self.0.sum(cell)))
            .collect();
        let sum = self.0.sum(BUCKETS_US.len() + 1) as f64 / 1e6;
        encoder.encode_histogram::<NoLabelSet>(sum, self.count(), &buckets, None)
    }
}

impl TypedMetric for DurationHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for DurationHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        self.encode_into(&mut encoder)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_add_up_across_threads() {
        let counter = std::sync::Arc::new(ShardedCounter::default());
        let threads: Vec<_> = (0..12)
            .map(|_| {
                let counter = counter.clone();
                std::thread::spawn(move || (0..1000).for_each(|_| counter.inc()))
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        assert_eq!(counter.get(), 12_000);
    }

    #[test]
    fn observations_fall_in_the_first_bucket_that_holds_them() {
        let histogram = DurationHistogram::default();
        histogram.observe(Duration::from_micros(250));
        histogram.observe(Duration::from_micros(251));
        histogram.observe(Duration::from_secs(60));
        assert_eq!(histogram.0.sum(0), 1);
        assert_eq!(histogram.0.sum(1), 1);
        assert_eq!(histogram.count(), 3);
        assert_eq!(histogram.0.sum(BUCKETS_US.len() + 1), 60_000_501);
    }
}
