//! What the store lets a caller observe for its metrics, without knowing how they are kept: the
//! wait for a pooled connection, the decisions on typed codes, and the pool's occupancy.
//!
//! The server implements [`StoreObserver`] and installs it with [`Store::with_observer`]; a store
//! without an observer measures nothing (no clock read per checkout).

use std::time::Duration;

use crate::store::Store;

/// Receives the store's observations. Every method has an empty default; implementations must
/// be cheap (they run on every checkout and every verification).
pub trait StoreObserver: Send + Sync {
    /// A pooled connection was waited for `waited`; `obtained` is false when the checkout failed
    /// (timeout, database unreachable).
    fn checkout(&self, waited: Duration, obtained: bool) {
        let _ = (waited, obtained);
    }

    /// A typed code was decided with `outcome` (`verified`, `mismatch`, `replayed`, `locked`,
    /// `daily_limit`); `locked` is true when this attempt's mismatch locked the device.
    fn verification(&self, outcome: &str, locked: bool) {
        let _ = (outcome, locked);
    }
}

/// How many connections a pool holds and how many callers wait for one.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PoolStatus {
    /// The most connections the pool opens.
    pub max_size: usize,
    /// The connections open now.
    pub size: usize,
    /// The open connections not in use.
    pub available: usize,
    /// The callers waiting for a connection.
    pub waiting: usize,
}

/// A handle to read a store's pool occupancy that does not keep the pool alive.
#[derive(Debug)]
pub struct PoolWatch(deadpool_postgres::WeakPool);

impl PoolWatch {
    /// A watch on `store`'s pool.
    pub fn new(store: &Store) -> PoolWatch {
        PoolWatch(store.pool().weak())
    }

    /// The pool's status now; `None` once the pool is gone.
    pub fn status(&self) -> Option<PoolStatus> {
        let status = self.0.upgrade()?.status();
        Some(PoolStatus {
            max_size: status.max_size,
            size: status.size,
            available: status.available,
            waiting: status.waiting,
        })
    }
}
