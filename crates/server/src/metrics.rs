//! Prometheus metrics (`[otp] METRICS = yes`), served at `GET /metrics` in the Prometheus text
//! format by `prometheus-client`'s encoder. The names are listed in `docs/api.md` §14.
//!
//! Overhead is kept off the hot path: requests are counted in per-thread shards through
//! thread-local handles (`http`), caches count in per-thread shards too (`caches`), and what
//! can be read at scrape time (pool occupancy, cache counts, requests in flight) is read then
//! (`sampled`). The store reports its checkouts and verifications through [`StoreObserver`].

pub mod caches;
pub mod cells;
mod http;
mod sampled;

use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::Duration;

use actix_web::http::Method;
use actix_web::web;
use otp_store::Store;
use otp_store::observe::{PoolWatch, StoreObserver};
use prometheus_client::encoding::prometheus_text;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Registry, Unit};

use crate::state::AppState;
use cells::DurationHistogram;
use http::RequestMetrics;
use sampled::Sampled;

/// The `Content-Type` of `GET /metrics`.
pub const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

/// Verification outcomes, as the store names them.
const OUTCOMES: [&str; 5] = ["verified", "mismatch", "replayed", "locked", "daily_limit"];

/// A label set of one label.
type Label = [(&'static str, &'static str); 1];

/// The metrics of one server (all its workers).
pub struct Metrics {
    registry: Registry,
    requests: Arc<RequestMetrics>,
    sampled: Arc<Sampled>,
    checkout_wait: DurationHistogram,
    checkout_failures: Counter,
    verifications: [Counter; OUTCOMES.len()],
    locks: Counter,
    confirmations: [Counter; 2],
    logins: [Counter; 2],
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

/// Counters of a family with a fixed label, created (at zero) up front.
fn counters<const N: usize>(
    family: &Family<Label, Counter>,
    label: &'static str,
    values: [&'static str; N],
) -> [Counter; N] {
    values.map(|value| family.get_or_create_owned(&[(label, value)]))
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}

impl Metrics {
    /// Every metric, registered under the prefix `taler_otp_` (the registry ends each help text
    /// with a period; collectors write theirs whole).
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("taler_otp");
        registry.register(
            "build",
            "The running build: its version and the merchant protocol version it announces",
            Info::new([
                ("version", env!("CARGO_PKG_VERSION")),
                ("protocol", crate::version::PROTOCOL_VERSION),
            ]),
        );
        let requests = Arc::new(RequestMetrics::default());
        registry.register_collector(Box::new(requests.clone()));
        let sampled = Arc::new(Sampled::default());
        registry.register_collector(Box::new(sampled.clone()));
        let checkout_wait = DurationHistogram::default();
        registry.register_with_unit(
            "db_checkout_wait",
            "Time waited for a pooled database connection",
            Unit::Seconds,
            checkout_wait.clone(),
        );
        let checkout_failures = Counter::default();
        registry.register(
            "db_checkout_failures",
            "Database connections not obtained in time (the answer was 503)",
            checkout_failures.clone(),
        );
        let family = Family::<Label, Counter>::default();
        registry.register(
            "verifications",
            "Typed codes decided, by outcome",
            family.clone(),
        );
        let verifications = counters(&family, "outcome", OUTCOMES);
        let locks = Counter::default();
        registry.register(
            "device_locks",
            "Devices locked by a mismatch (after repeated wrong codes)",
            locks.clone(),
        );
        let family = Family::<Label, Counter>::default();
        registry.register(
            "confirmations_issued",
            "Payment confirmations issued, by mode (totp, hotp)",
            family.clone(),
        );
        let confirmations = counters(&family, "mode", ["totp", "hotp"]);
        let family = Family::<Label, Counter>::default();
        registry.register(
            "logins",
            "Password logins at /private/token, by outcome (throttled attempts are not counted)",
            family.clone(),
        );
        let logins = counters(&family, "outcome", ["success", "failure"]);
        Metrics {
            registry,
            requests,
            sampled,
            checkout_wait,
            checkout_failures,
            verifications,
            locks,
            confirmations,
            logins,
        }
    }

    /// Counts an answered request of `route` (pattern) and `method`.
    pub fn record_request(&self, route: &str, method: &Method, status: u16, latency: Duration) {
        self.requests.record(route, method, status, latency);
    }

    /// Counts a payment confirmation (`counter_based`: HOTP).
    pub fn confirmation_issued(&self, counter_based: bool) {
        if let Some(counter) = self.confirmations.get(usize::from(counter_based)) {
            counter.inc();
        }
    }

    /// Counts a password login.
    pub fn login(&self, success: bool) {
        if let Some(counter) = self.logins.get(usize::from(!success)) {
            counter.inc();
        }
    }

    /// Includes `store`'s pool in the pool gauges.
    pub fn watch_pool(&self, store: &Store) {
        self.sampled.watch_pool(PoolWatch::new(store));
    }

    /// Reads the caches of `state` at each scrape.
    pub fn watch_state(&self, state: web::Data<AppState>) {
        self.sampled.watch_state(state);
    }

    /// Reads the requests in flight from `counter` at each scrape.
    pub fn watch_in_flight(&self, counter: Arc<AtomicUsize>) {
        self.sampled.watch_in_flight(counter);
    }

    /// Every metric in the Prometheus text format.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut text = String::with_capacity(16 * 1024);
        prometheus_text::encode(&mut text, &self.registry)?;
        Ok(text)
    }
}

/// `store`, reporting to `metrics`, its pool counted in the pool gauges when `in_use` (unchanged
/// without metrics).
pub fn observed(metrics: Option<&web::Data<Metrics>>, store: Store, in_use: bool) -> Store {
    match metrics {
        Some(metrics) => {
            if in_use {
                metrics.watch_pool(&store);
            }
            store.with_observer(metrics.clone().into_inner())
        }
        None => store,
    }
}

impl StoreObserver for Metrics {
    fn checkout(&self, waited: Duration, obtained: bool) {
        self.checkout_wait.observe(waited);
        if !obtained {
            self.checkout_failures.inc();
        }
    }

    fn verification(&self, outcome: &str, locked: bool) {
        if let Some(counter) = OUTCOMES
            .iter()
            .position(|known| *known == outcome)
            .and_then(|index| self.verifications.get(index))
        {
            counter.inc();
        }
        if locked {
            self.locks.inc();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_text_names_every_metric_with_its_prefix() {
        let metrics = Metrics::new();
        metrics.record_request("/config", &Method::GET, 200, Duration::from_millis(1));
        metrics.verification("locked", false);
        metrics.verification("mismatch", true);
        metrics.confirmation_issued(true);
        let text = metrics.encode().unwrap();
        for line in [
            "taler_otp_http_requests_total{route=\"/config\",method=\"GET\",status=\"200\"} 1",
            "taler_otp_http_request_duration_seconds_count{route=\"/config\",method=\"GET\"} 1",
            "taler_otp_verifications_total{outcome=\"locked\"} 1",
            "taler_otp_verifications_total{outcome=\"verified\"} 0",
            "taler_otp_device_locks_total 1",
            "taler_otp_confirmations_issued_total{mode=\"hotp\"} 1",
            "taler_otp_db_pool_size 0",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing in\n{text}");
        }
        assert!(text.contains("taler_otp_build_info{version=\""), "{text}");
    }
}
