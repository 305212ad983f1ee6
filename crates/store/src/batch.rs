//! Group commit for the hot writes: concurrent calls of one kind (confirmations, verifications)
//! share one statement, one round trip and one commit.
//!
//! A call queues its item and, when no batch is running, starts one: a task that takes up to
//! `max_batch` queued items, runs them in one statement, answers each caller, and goes on while
//! items are queued. Nothing waits for a batch to fill: a lone call runs at once, alone, and
//! items gather only while the database is busy with the running batch, so under load one
//! commit serves many requests and the cost per request falls.
//!
//! One batch at a time per batcher measured best (several compete for the same CPUs and make
//! each batch slower), but a batch can be held up (a row lock another transaction holds, a slow
//! disk): when the running batches have started nothing for [`STALLED`], a call starts one
//! more, up to `max_running`, so that the queue does not wait for the stuck one.
//!
//! Batches run in tasks of their own, not in the callers' futures: a client that disconnects
//! (its request future dropped) cannot cancel a statement whose outcome other callers wait for.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};

use crate::error::StoreError;
use crate::store::Store;

/// A running batch: one result per item, in the order of the items.
pub(crate) type BatchFuture<R> = Pin<Box<dyn Future<Output = Vec<Result<R, StoreError>>> + Send>>;

/// What a batch runs: the items, in the order they were queued.
pub(crate) type RunBatch<T, R> = fn(Store, Vec<T>) -> BatchFuture<R>;

type Reply<R> = oneshot::Sender<Result<R, StoreError>>;

/// How long the running batches may go without starting a statement before a call starts
/// another batch beside them (about ten times a busy batch's duration).
pub(crate) const STALLED: Duration = Duration::from_millis(20);

/// A queue of items of one kind and the batches running them.
pub(crate) struct Batcher<T, R> {
    queue: Mutex<VecDeque<(T, Reply<R>)>>,
    running: Arc<Semaphore>,
    /// Batches running now (the permits held through a [`Slot`]).
    active: Arc<AtomicUsize>,
    /// When a running batch last started a statement, in microseconds after `epoch`.
    progress_us: AtomicU64,
    epoch: Instant,
    max_batch: usize,
    run: RunBatch<T, R>,
}

impl<T: Send + 'static, R: Send + 'static> Batcher<T, R> {
    /// A batcher running at most `max_running` batches of at most `max_batch` items at a time
    /// (both at least 1) with `run`.
    pub(crate) fn new(max_running: usize, max_batch: usize, run: RunBatch<T, R>) -> Self {
        Batcher {
            queue: Mutex::new(VecDeque::new()),
            running: Arc::new(Semaphore::new(max_running.max(1))),
            active: Arc::new(AtomicUsize::new(0)),
            progress_us: AtomicU64::new(0),
            epoch: Instant::now(),
            max_batch: max_batch.max(1),
            run,
        }
    }

    fn now_us(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_micros()).unwrap_or(u64::MAX)
    }

    /// Whether a call should start a batch: none is running, or those running have started
    /// no statement for [`STALLED`].
    fn wants_batch(&self) -> bool {
        self.active.load(Ordering::SeqCst) == 0
            || self
                .now_us()
                .saturating_sub(self.progress_us.load(Ordering::SeqCst))
                >= u64::try_from(STALLED.as_micros()).unwrap_or(u64::MAX)
    }

    /// Takes a permit to run batches, if the rules allow one now.
    fn start(&self) -> Option<Slot> {
        if !self.wants_batch() {
            return None;
        }
        let permit = Arc::clone(&self.running).try_acquire_owned().ok()?;
        self.active.fetch_add(1, Ordering::SeqCst);
        Some(Slot {
            _permit: permit,
            active: Arc::clone(&self.active),
        })
    }

    /// Runs `item` in the next batch and returns its result. Must be called inside a Tokio
    /// runtime (the batch may run in a task spawned on it).
    pub(crate) async fn submit(self: &Arc<Self>, store: &Store, item: T) -> Result<R, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.lock().push_back((item, reply));
        if let Some(slot) = self.start() {
            tokio::spawn(Arc::clone(self).drain(store.clone(), slot));
        }
        // Otherwise a running batch takes the item when it is done with its own.
        answer.await.unwrap_or_else(|_| {
            Err(StoreError::Corrupt(
                "a batch ended without answering".into(),
            ))
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<(T, Reply<R>)>> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs batches while items are queued, holding one of the `running` permits.
    async fn drain(self: Arc<Self>, store: Store, slot: Slot) {
        let mut slot = Some(slot);
        loop {
            let taken: Vec<(T, Reply<R>)> = {
                let mut queue = self.lock();
                let n = queue.len().min(self.max_batch);
                queue.drain(..n).collect()
            };
            if taken.is_empty() {
                drop(slot.take());
                // An item queued while this batch was still counted as running: its caller did
                // not start a batch, so this one runs it (or another task that started does).
                if self.lock().is_empty() {
                    return;
                }
                match self.start() {
                    Some(again) => slot = Some(again),
                    None => return,
                }
                continue;
            }
            self.progress_us.store(self.now_us(), Ordering::SeqCst);
            let (items, replies): (Vec<T>, Vec<Reply<R>>) = taken.into_iter().unzip();
            let count = replies.len();
            let started = Instant::now();
            let mut results = (self.run)(store.clone(), items).await.into_iter();
            // Batch sizes and durations, for latency investigations (RUST_LOG=otp_store::batch=debug).
            tracing::debug!(
                items = count,
                micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
                "batch ran"
            );
            for reply in replies {
                let result = results.next().unwrap_or_else(|| {
                    Err(StoreError::Corrupt(format!(
                        "a batch of {count} answered fewer items"
                    )))
                });
                // The caller may be gone (its client disconnected): nothing to answer.
                let _ = reply.send(result);
            }
        }
    }
}

/// A running batch's permit; counted in `active` until dropped (also if the batch's task ends
/// early).
struct Slot {
    _permit: OwnedSemaphorePermit,
    active: Arc<AtomicUsize>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.active.fetch_sub(1, Ordering::SeqCst);
    }
}

/// An error for every item of a batch whose statement failed with `err` in a way that retrying
/// each item alone would not cure (the database is away or overloaded): the first item gets
/// `err` itself, the others an `Unavailable` saying the same.
pub(crate) fn shared_failure<R>(err: StoreError, count: usize) -> Vec<Result<R, StoreError>> {
    if count == 0 {
        return Vec::new();
    }
    let message = err.to_string();
    let mut results = Vec::with_capacity(count);
    results.push(Err(err));
    while results.len() < count {
        results.push(Err(StoreError::Unavailable(message.clone().into())));
    }
    results
}

/// Whether a batch's failure `err` is one that each item alone would meet too.
pub(crate) fn fails_alone(err: &StoreError) -> bool {
    matches!(err, StoreError::Unavailable(_) | StoreError::Timeout(_))
}

/// The batchers of a store, shared by its clones.
pub(crate) struct Batches {
    /// Confirmations of counter-based devices ([`crate::otp_devices::advance_counter`]).
    pub(crate) confirmations:
        Arc<Batcher<crate::otp_devices::counter::Confirmation, crate::otp_devices::Advance>>,
    /// Verifications of typed codes ([`crate::verifications::verify`]).
    pub(crate) verifications:
        Arc<Batcher<crate::verifications::batch::Attempted, crate::verifications::Outcome>>,
}

impl Batches {
    /// Batchers for a pool of `pool_size` connections: batches of each kind run one at a time
    /// (more, up to a quarter of the pool (1 to 8), only while one is stalled), of at most
    /// `max_batch` items each.
    pub(crate) fn new(pool_size: usize, max_batch: usize) -> Batches {
        let running = (pool_size / 4).clamp(1, 8);
        Batches {
            confirmations: Arc::new(Batcher::new(
                running,
                max_batch,
                crate::otp_devices::counter::run_batch,
            )),
            verifications: Arc::new(Batcher::new(
                running,
                max_batch,
                crate::verifications::batch::run_batch,
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoreConfig;

    /// Echoes each item; a batch holding item 0 is stuck for 400 ms first.
    fn echo(_store: Store, items: Vec<u32>) -> BatchFuture<u32> {
        Box::pin(async move {
            if items.contains(&0) {
                tokio::time::sleep(Duration::from_millis(400)).await;
            }
            items.into_iter().map(Ok).collect()
        })
    }

    #[tokio::test]
    async fn one_batch_runs_at_a_time_and_another_starts_beside_a_stalled_one() {
        let store = Store::connect(&StoreConfig::new("postgres://db.invalid/none")).unwrap();
        let batcher = Arc::new(Batcher::new(2, 64, echo as RunBatch<u32, u32>));
        let begun = Instant::now();

        let stuck = tokio::spawn({
            let (batcher, store) = (Arc::clone(&batcher), store.clone());
            async move { batcher.submit(&store, 0).await }
        });
        tokio::time::sleep(Duration::from_millis(2)).await;
        // Within STALLED of the running batch's start: queued behind it, no second batch.
        let queued =
            tokio::time::timeout(Duration::from_millis(10), batcher.submit(&store, 1)).await;
        assert!(
            queued.is_err(),
            "answered beside a running batch: {queued:?}"
        );
        assert_eq!(batcher.active.load(Ordering::SeqCst), 1);

        // The running batch has started nothing for STALLED: the next call starts another.
        tokio::time::sleep(STALLED).await;
        assert_eq!(batcher.submit(&store, 2).await.unwrap(), 2);
        assert!(
            begun.elapsed() < Duration::from_millis(300),
            "{:?}",
            begun.elapsed()
        );

        assert_eq!(stuck.await.unwrap().unwrap(), 0);
        assert!(begun.elapsed() >= Duration::from_millis(400));
        // Both batches ended and gave their permits back.
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(batcher.active.load(Ordering::SeqCst), 0);
        assert_eq!(batcher.submit(&store, 3).await.unwrap(), 3);
    }
}
