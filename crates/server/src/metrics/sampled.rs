//! Values read at each scrape: the connection pools' occupancy, the caches' counts and the
//! requests in flight.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use actix_web::web;
use otp_store::observe::{PoolStatus, PoolWatch};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;

use crate::state::AppState;

/// What a scrape reads from the running server.
#[derive(Default)]
pub struct Sampled {
    pools: Mutex<Vec<PoolWatch>>,
    state: OnceLock<web::Data<AppState>>,
    in_flight: OnceLock<Arc<AtomicUsize>>,
}

impl std::fmt::Debug for Sampled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sampled").finish_non_exhaustive()
    }
}

impl Sampled {
    /// Adds a pool to those summed (pools that are gone are dropped at the next scrape).
    pub fn watch_pool(&self, pool: PoolWatch) {
        self.pools
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .push(pool);
    }

    /// Reads the caches of `state` (once; later calls are ignored).
    pub fn watch_state(&self, state: web::Data<AppState>) {
        let _ = self.state.set(state);
    }

    /// Reads the requests in flight from `counter` (once; later calls are ignored).
    pub fn watch_in_flight(&self, counter: Arc<AtomicUsize>) {
        let _ = self.in_flight.set(counter);
    }

    /// The pools' status, summed; pools that are gone are forgotten.
    fn pool_status(&self) -> PoolStatus {
        let mut pools = self
            .pools
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        let mut total = PoolStatus::default();
        pools.retain(|pool| match pool.status() {
            Some(status) => {
                total.max_size += status.max_size;
                total.size += status.size;
                total.available += status.available;
                total.waiting += status.waiting;
                true
            }
            None => false,
        });
        total
    }
}

/// Encodes one gauge without labels.
fn gauge(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: usize,
) -> std::fmt::Result {
    let value = i64::try_from(value).unwrap_or(i64::MAX);
    encoder
        .encode_descriptor(name, help, None, MetricType::Gauge)?
        .encode_gauge(&value)
}

impl Collector for Sampled {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let pools = self.pool_status();
        gauge(
            &mut encoder,
            "db_pool_max_size",
            "Database connections the pools may open (POOL_SIZE).",
            pools.max_size,
        )?;
        gauge(
            &mut encoder,
            "db_pool_size",
            "Database connections open.",
            pools.size,
        )?;
        gauge(
            &mut encoder,
            "db_pool_available",
            "Open database connections not in use.",
            pools.available,
        )?;
        gauge(
            &mut encoder,
            "db_pool_waiting",
            "Requests waiting for a database connection.",
            pools.waiting,
        )?;
        if let Some(in_flight) = self.in_flight.get() {
            gauge(
                &mut encoder,
                "http_requests_in_flight",
                "HTTP requests being served.",
                in_flight.load(Ordering::Relaxed),
            )?;
        }
        let Some(state) = self.state.get() else {
            return Ok(());
        };
        let caches = state.cache_counts();
        for (name, help, count) in [
            (
                "cache_hits",
                "Lookups answered from the token or device cache.",
                (|c: crate::metrics::caches::CacheCounts| c.hits) as fn(_) -> u64,
            ),
            (
                "cache_misses",
                "Lookups of the token or device cache that found no fresh entry.",
                |c| c.misses,
            ),
            (
                "cache_invalidations",
                "Invalidations of the token or device cache (an entry, an instance, or all).",
                |c| c.invalidations,
            ),
        ] {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            for (cache, counts) in caches {
                family
                    .encode_family(&[("cache", cache)])?
                    .encode_counter::<NoLabelSet, _, u64>(&count(counts), None)?;
            }
        }
        Ok(())
    }
}
