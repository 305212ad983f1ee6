//! Group commit for the hot writes: concurrent calls of one kind (confirmations, verifications)
//! share one statement, one round trip and one commit.
//!
//! A call queues its item and, when fewer than `max_running` batches are running, starts one:
//! a task that takes up to `max_batch` queued items, runs them in one statement, answers each
//! caller, and goes on while items are queued. Nothing waits for a batch to fill: a lone call
//! runs at once, alone, and items gather only while the database is busy with earlier batches,
//! so under load one commit serves many requests and the cost per request falls.
//!
//! Batches run in tasks of their own, not in the callers' futures: a client that disconnects
//! (its request future dropped) cannot cancel a statement whose outcome other callers wait for.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};

use crate::error::StoreError;
use crate::store::Store;

/// A running batch: one result per item, in the order of the items.
pub(crate) type BatchFuture<R> = Pin<Box<dyn Future<Output = Vec<Result<R, StoreError>>> + Send>>;

/// What a batch runs: the items, in the order they were queued.
pub(crate) type RunBatch<T, R> = fn(Store, Vec<T>) -> BatchFuture<R>;

type Reply<R> = oneshot::Sender<Result<R, StoreError>>;

/// A queue of items of one kind and the batches running them.
pub(crate) struct Batcher<T, R> {
    queue: Mutex<VecDeque<(T, Reply<R>)>>,
    running: Arc<Semaphore>,
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
            max_batch: max_batch.max(1),
            run,
        }
    }

    /// Runs `item` in the next batch and returns its result. Must be called inside a Tokio
    /// runtime (the batch may run in a task spawned on it).
    pub(crate) async fn submit(self: &Arc<Self>, store: &Store, item: T) -> Result<R, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.lock().push_back((item, reply));
        if let Ok(permit) = Arc::clone(&self.running).try_acquire_owned() {
            tokio::spawn(Arc::clone(self).drain(store.clone(), permit));
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
    async fn drain(self: Arc<Self>, store: Store, permit: OwnedSemaphorePermit) {
        let mut permit = Some(permit);
        loop {
            let taken: Vec<(T, Reply<R>)> = {
                let mut queue = self.lock();
                let n = queue.len().min(self.max_batch);
                queue.drain(..n).collect()
            };
            if taken.is_empty() {
                drop(permit.take());
                // An item queued while the permit was still held: its caller could not start
                // a batch, so this one runs it (or another task that got the permit does).
                if self.lock().is_empty() {
                    return;
                }
                match Arc::clone(&self.running).try_acquire_owned() {
                    Ok(again) => permit = Some(again),
                    Err(_) => return,
                }
                continue;
            }
            let (items, replies): (Vec<T>, Vec<Reply<R>>) = taken.into_iter().unzip();
            let count = replies.len();
            let mut results = (self.run)(store.clone(), items).await.into_iter();
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
    /// Batchers for a pool of `pool_size` connections: a quarter of them (1 to 8) may run
    /// batches of each kind at once, of at most `max_batch` items each.
    pub(crate) fn new(pool_size: usize, max_batch: usize) -> Batches {
        let running = (pool_size / 8).clamp(1, 8);
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
