//! Requests by route pattern, method and status, and their latency by route pattern and method.
//!
//! The label space is small and fixed in kind: route patterns (the `RoutePattern` of the
//! resource, or `(unmatched)`), eight method names, and the status codes the server answers.
//! Each worker thread keeps its handles to the cells in a thread-local map, so recording a
//! request takes one hash of the route pattern and a few uncontended atomic additions; the
//! shared table is locked only the first time a thread meets a route, method or status.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use actix_web::http::Method;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Unit;

use super::cells::{DurationHistogram, ShardedCounter};

/// The methods told apart; any other is counted as `other`.
const METHODS: [&str; 8] = [
    "GET", "POST", "PATCH", "DELETE", "PUT", "HEAD", "OPTIONS", "other",
];

fn method_index(method: &Method) -> usize {
    METHODS
        .iter()
        .position(|name| *name == method.as_str())
        .unwrap_or(METHODS.len() - 1)
}

/// The cells of one route pattern and method.
struct RouteCell {
    route: Box<str>,
    method: usize,
    latency: DurationHistogram,
    statuses: RwLock<Vec<(u16, Arc<ShardedCounter>)>>,
}

impl RouteCell {
    fn status(&self, status: u16) -> Arc<ShardedCounter> {
        let mut statuses = self
            .statuses
            .write()
            .unwrap_or_else(|poison| poison.into_inner());
        if let Some((_, counter)) = statuses.iter().find(|(s, _)| *s == status) {
            return counter.clone();
        }
        let counter = Arc::new(ShardedCounter::default());
        statuses.push((status, counter.clone()));
        statuses.sort_by_key(|(s, _)| *s);
        counter
    }
}

/// Every request counted, by route, method and status.
pub struct RequestMetrics {
    id: u64,
    cells: RwLock<Vec<Arc<RouteCell>>>,
}

static NEXT_TABLE: AtomicU64 = AtomicU64::new(1);

/// A thread's handles to the cells of one route and method.
struct LocalCell {
    cell: Arc<RouteCell>,
    statuses: Vec<(u16, Arc<ShardedCounter>)>,
}

/// A thread's handles into one [`RequestMetrics`].
#[derive(Default)]
struct LocalHandles {
    table: u64,
    routes: HashMap<Box<str>, [Option<LocalCell>; METHODS.len()]>,
}

thread_local! {
    static LOCAL: RefCell<LocalHandles> = RefCell::new(LocalHandles::default());
}

impl Default for RequestMetrics {
    fn default() -> RequestMetrics {
        RequestMetrics {
            id: NEXT_TABLE.fetch_add(1, Ordering::Relaxed),
            cells: RwLock::new(Vec::new()),
        }
    }
}

impl std::fmt::Debug for RequestMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestMetrics")
            .field("id", &self.id)
            .finish()
    }
}

impl RequestMetrics {
    /// Counts one answered request.
    pub fn record(&self, route: &str, method: &Method, status: u16, latency: Duration) {
        let method = method_index(method);
        LOCAL.with(|local| {
            let mut local = local.borrow_mut();
            if local.table != self.id {
                // A thread serves one server; a new one (tests) starts afresh.
                *local = LocalHandles {
                    table: self.id,
                    routes: HashMap::new(),
                };
            }
            match local.routes.get_mut(route) {
                Some(methods) => self.count(methods, route, method, status, latency),
                None => {
                    let mut methods = Default::default();
                    self.count(&mut methods, route, method, status, latency);
                    local.routes.insert(route.into(), methods);
                }
            }
        });
    }

    /// Counts a request in a thread's handles of its route.
    fn count(
        &self,
        methods: &mut [Option<LocalCell>; METHODS.len()],
        route: &str,
        method: usize,
        status: u16,
        latency: Duration,
    ) {
        let Some(slot) = methods.get_mut(method) else {
            return;
        };
        let cell = slot.get_or_insert_with(|| LocalCell {
            cell: self.cell(route, method),
            statuses: Vec::new(),
        });
        cell.cell.latency.observe(latency);
        match cell.statuses.iter().find(|(s, _)| *s == status) {
            Some((_, counter)) => counter.inc(),
            None => {
                let counter = cell.cell.status(status);
                counter.inc();
                cell.statuses.push((status, counter));
            }
        }
    }

    /// The shared cell of `route` and `method`, created on first use.
    fn cell(&self, route: &str, method: usize) -> Arc<RouteCell> {
        let mut cells = self
            .cells
            .write()
            .unwrap_or_else(|poison| poison.into_inner());
        if let Some(cell) = cells
            .iter()
            .find(|cell| &*cell.route == route && cell.method == method)
        {
            return cell.clone();
        }
        let cell = Arc::new(RouteCell {
            route: route.into(),
            method,
            latency: DurationHistogram::default(),
            statuses: RwLock::new(Vec::new()),
        });
        cells.push(cell.clone());
        cells.sort_by(|a, b| (&a.route, a.method).cmp(&(&b.route, b.method)));
        cell
    }
}

impl Collector for RequestMetrics {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let cells: Vec<Arc<RouteCell>> = self
            .cells
            .read()
            .unwrap_or_else(|poison| poison.into_inner())
            .clone();
        if cells.is_empty() {
            return Ok(());
        }
        {
            let mut family = encoder.encode_descriptor(
                "http_requests",
                "HTTP requests answered, by route pattern, method and status.",
                None,
                MetricType::Counter,
            )?;
            for cell in &cells {
                let method = METHODS.get(cell.method).copied().unwrap_or("other");
                let statuses = cell
                    .statuses
                    .read()
                    .unwrap_or_else(|poison| poison.into_inner())
                    .clone();
                for (status, counter) in statuses {
                    let status = status.to_string();
                    let labels = [
                        ("route", &*cell.route),
                        ("method", method),
                        ("status", status.as_str()),
                    ];
                    family
                        .encode_family(&labels)?
                        .encode_counter::<prometheus_client::encoding::NoLabelSet, _, u64>(
                            &counter.get(),
                            None,
                        )?;
                }
            }
        }
        let mut family = encoder.encode_descriptor(
            "http_request_duration",
            "Time from receiving a request to its answer, by route pattern and method.",
            Some(&Unit::Seconds),
            MetricType::Histogram,
        )?;
        for cell in &cells {
            let method = METHODS.get(cell.method).copied().unwrap_or("other");
            let labels = [("route", &*cell.route), ("method", method)];
            cell.latency
                .encode_into(&mut family.encode_family(&labels)?)?;
        }
        Ok(())
    }
}
