//! Group commit for the hot writes: concurrent calls of one kind (confirmations, verifications)
//! share one statement, one round trip and one commit.
//!
//! A call queues its item and, when no batch is running, starts one: a task that takes up to
//! `max_batch` queued items, runs them in one statement, answers each caller, and goes on while
//! items are queued. A lone call runs at once, alone; items gather while the database is busy
//! with the running batch, so under load one commit serves many requests and the cost per
//! request falls.
//!
//! **Gathering the callers that come back.** Clients that keep their connections busy (a till
//! verifying codes one after another, a proxy's pooled connections under load, a benchmark's
//! connections) send their next request as soon as they have their answer. Started at once, the
//! next batch would hold only what queued during the last one, and the answered callers' next
//! requests would wait for a batch more: the callers split into two groups taking turns, each
//! request waiting for about two batches, and each batch paying its fixed cost (entry,
//! statements, commit) for half as many items. So after a batch that answered calls from at
//! least [`GATHER_MIN`] client connections (the server numbers them, see [`from_connection`]),
//! its task waits for those connections' next calls, until they have all arrived or
//! `max_batch` items are queued, for at most the batcher's `gather` bound (the server's
//! `[otp] BATCH_GATHER_MS`, 2 ms by default; zero never waits). Connections that are not
//! coming straight back (independent tills, each verifying a code now and then) are found out
//! early: when half the bound has passed and fewer than an eighth of them are back, the wait
//! ends. A wait that ends with fewer than three quarters back (so also connections whose next
//! requests are mostly of other kinds) is not tried again for the next
//! [`GATHER_BACKOFF`] batches, twice as many after each such wait in a row (up to 256), so
//! such traffic soon pays for one short wait in hundreds of batches, while clients that come
//! straight back, when a few of them are late once, lose only a few batches' gathering. A lone call, a
//! call that finds no batch running and a call made outside a numbered connection never wait.
//! With 64 connections and two workers, batches grew from about 16 to 32 items and
//! verifications per second by about a fifth (`contrib/verify-bench.sh`, README
//! "Benchmarks").
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
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, oneshot};

use crate::error::StoreError;
use crate::store::Store;

/// A running batch: one result per item, in the order of the items.
pub(crate) type BatchFuture<R> = Pin<Box<dyn Future<Output = Vec<Result<R, StoreError>>> + Send>>;

/// What a batch runs: the items, in the order they were queued.
pub(crate) type RunBatch<T, R> = fn(Store, Vec<T>) -> BatchFuture<R>;

type Reply<R> = oneshot::Sender<Result<R, StoreError>>;

/// A queued item, the reply to its caller and the caller's connection (0: unknown).
type Queued<T, R> = (T, Reply<R>, u64);

/// How long the running batches may go without starting a statement before a call starts
/// another batch beside them (about ten times a busy batch's duration).
pub(crate) const STALLED: Duration = Duration::from_millis(20);

/// The fewest callers a batch must have answered for its task to gather their next calls
/// (see the module documentation): fewer are no sign of clients that come straight back.
pub(crate) const GATHER_MIN: usize = 8;

/// Batches that do not gather after a gathering that ended with fewer than three quarters of
/// the connections back; doubled after each such gathering in a row, up to 64 times as many
/// (256 batches).
pub(crate) const GATHER_BACKOFF: u32 = 4;

/// The default bound on gathering the answered callers' next calls (`[otp] BATCH_GATHER_MS`).
pub(crate) const DEFAULT_GATHER: Duration = Duration::from_millis(2);

tokio::task_local! {
    /// The client connection the current request came on (see [`from_connection`]).
    static CONNECTION: u64;
}

/// Runs `future` (a request) as coming from the client connection numbered `connection`
/// (unique within the server process, not 0): a batch that answered that connection waits
/// briefly for its next call (module documentation, "Gathering the callers that come back").
pub async fn from_connection<F: Future>(connection: u64, future: F) -> F::Output {
    CONNECTION.scope(connection, future).await
}

/// The current request's connection number, 0 outside [`from_connection`].
fn current_connection() -> u64 {
    CONNECTION.try_with(|connection| *connection).unwrap_or(0)
}

/// What a gathering task waits for: the connections it answered, and how many came back.
#[derive(Default)]
struct Awaited {
    /// The connections not back yet, sorted.
    connections: Vec<u64>,
    back: usize,
}

/// A queue of items of one kind and the batches running them.
pub(crate) struct Batcher<T, R> {
    queue: Mutex<VecDeque<Queued<T, R>>>,
    running: Arc<Semaphore>,
    /// Batches running now (the permits held through a [`Slot`]).
    active: Arc<AtomicUsize>,
    /// When a running batch last started a statement, in microseconds after `epoch`.
    progress_us: AtomicU64,
    epoch: Instant,
    max_batch: usize,
    run: RunBatch<T, R>,
    /// The bound on gathering answered callers' next calls (zero: never wait).
    gather: Duration,
    /// Whether a task is gathering now (one at a time): calls then check `awaited`.
    gathering: AtomicBool,
    /// The connections the gathering task waits for.
    awaited: Mutex<Awaited>,
    /// Wakes the gathering task when a connection it waits for is back.
    gathered: Notify,
    /// Batches left to run without gathering, after a gathering that ended with too few back.
    gather_backoff: AtomicU32,
    /// Gatherings in a row that ended with too few back.
    gather_misses: AtomicU32,
}

impl<T: Send + 'static, R: Send + 'static> Batcher<T, R> {
    /// A batcher running at most `max_running` batches of at most `max_batch` items at a time
    /// (both at least 1) with `run`, gathering answered callers' next calls for at most
    /// `gather`.
    pub(crate) fn new(
        max_running: usize,
        max_batch: usize,
        gather: Duration,
        run: RunBatch<T, R>,
    ) -> Self {
        Batcher {
            queue: Mutex::new(VecDeque::new()),
            running: Arc::new(Semaphore::new(max_running.max(1))),
            active: Arc::new(AtomicUsize::new(0)),
            progress_us: AtomicU64::new(0),
            epoch: Instant::now(),
            max_batch: max_batch.max(1),
            run,
            gather,
            gathering: AtomicBool::new(false),
            awaited: Mutex::new(Awaited::default()),
            gathered: Notify::new(),
            gather_backoff: AtomicU32::new(0),
            gather_misses: AtomicU32::new(0),
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
        let connection = current_connection();
        self.lock().push_back((item, reply, connection));
        if connection != 0 && self.gathering.load(Ordering::SeqCst) {
            let mut awaited = self.awaited();
            if let Ok(at) = awaited.connections.binary_search(&connection) {
                awaited.connections.remove(at);
                awaited.back += 1;
                drop(awaited);
                self.gathered.notify_waiters();
            }
        }
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

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Queued<T, R>>> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn awaited(&self) -> std::sync::MutexGuard<'_, Awaited> {
        self.awaited.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs batches while items are queued, holding one of the `running` permits.
    async fn drain(self: Arc<Self>, store: Store, slot: Slot) {
        let mut slot = Some(slot);
        loop {
            let taken: Vec<Queued<T, R>> = {
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
            let mut items = Vec::with_capacity(taken.len());
            let mut replies = Vec::with_capacity(taken.len());
            let mut connections = Vec::with_capacity(taken.len());
            for (item, reply, connection) in taken {
                items.push(item);
                replies.push(reply);
                if connection != 0 {
                    connections.push(connection);
                }
            }
            let count = replies.len();
            let started = Instant::now();
            let mut results = (self.run)(store.clone(), items).await.into_iter();
            // Waited for from here on: a connection answered below may be back at once.
            connections.sort_unstable();
            connections.dedup();
            let gathering = self.await_connections(connections);
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
            if let Some(wanted) = gathering {
                self.gather(wanted).await;
            }
        }
    }

    /// Starts waiting for `connections` (sorted, distinct), the ones a batch is about to
    /// answer, if the rules of the module documentation say so: returns how many to wait for.
    fn await_connections(&self, connections: Vec<u64>) -> Option<usize> {
        if self.gather.is_zero() || connections.len() < GATHER_MIN {
            return None;
        }
        let backoff = self.gather_backoff.load(Ordering::SeqCst);
        if backoff > 0 {
            self.gather_backoff.store(backoff - 1, Ordering::SeqCst);
            return None;
        }
        // One gathering task at a time (a second batch runs only beside a stalled one).
        if self.gathering.swap(true, Ordering::SeqCst) {
            return None;
        }
        let wanted = connections.len();
        *self.awaited() = Awaited {
            connections,
            back: 0,
        };
        Some(wanted)
    }

    /// Waits, after answering, for the `wanted` connections set by [`Self::await_connections`]:
    /// until all are back or `max_batch` items are queued, for at most `gather`, and for at
    /// most half of it when fewer than an eighth are back by then.
    async fn gather(&self, wanted: usize) {
        let begun = Instant::now();
        let deadline = tokio::time::Instant::from_std(begun + self.gather);
        // By half the bound, clients that come straight back are mostly back; independent ones
        // are not.
        let halfway = tokio::time::Instant::from_std(begun + self.gather / 2);
        loop {
            // Registered before the count is read, so that no wake-up between the two is lost.
            let woken = self.gathered.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            let back = self.awaited().back;
            if back >= wanted || self.lock().len() >= self.max_batch {
                break;
            }
            let few = back < wanted.div_ceil(8);
            let now = tokio::time::Instant::now();
            if now >= deadline || (few && now >= halfway) {
                break;
            }
            // Woken by a connection back, or by the timer: either way the loop looks again.
            let until = if few { halfway } else { deadline };
            let _ = tokio::time::timeout_at(until, woken).await;
        }
        let back = self.awaited().back;
        tracing::debug!(
            wanted,
            back,
            micros = u64::try_from(begun.elapsed().as_micros()).unwrap_or(u64::MAX),
            "gathered"
        );
        *self.awaited() = Awaited::default();
        self.gathering.store(false, Ordering::SeqCst);
        if back * 4 < wanted * 3 {
            let misses = self.gather_misses.fetch_add(1, Ordering::SeqCst);
            self.gather_backoff
                .store(GATHER_BACKOFF << misses.min(6), Ordering::SeqCst);
        } else {
            self.gather_misses.store(0, Ordering::SeqCst);
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
    /// `max_batch` items each, gathering answered callers' next calls for at most `gather`.
    pub(crate) fn new(pool_size: usize, max_batch: usize, gather: Duration) -> Batches {
        let running = (pool_size / 4).clamp(1, 8);
        Batches {
            confirmations: Arc::new(Batcher::new(
                running,
                max_batch,
                gather,
                crate::otp_devices::counter::run_batch,
            )),
            verifications: Arc::new(Batcher::new(
                running,
                max_batch,
                gather,
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

    /// Answers each item with the size of its batch, after 5 ms (a statement's time).
    fn sizes(_store: Store, items: Vec<u32>) -> BatchFuture<usize> {
        Box::pin(async move {
            tokio::time::sleep(Duration::from_millis(5)).await;
            let size = items.len();
            items.into_iter().map(|_| Ok(size)).collect()
        })
    }

    fn store() -> Store {
        Store::connect(&StoreConfig::new("postgres://db.invalid/none")).unwrap()
    }

    /// A call of item 1 from each of `connections` (0: from no numbered connection), each
    /// after `delay`, in tasks of their own.
    fn calls_from(
        batcher: &Arc<Batcher<u32, usize>>,
        store: &Store,
        connections: impl Iterator<Item = u64>,
        delay: Duration,
    ) -> Vec<tokio::task::JoinHandle<Result<usize, StoreError>>> {
        connections
            .map(|connection| {
                let (batcher, store) = (Arc::clone(batcher), store.clone());
                tokio::spawn(from_connection(connection, async move {
                    tokio::time::sleep(delay).await;
                    batcher.submit(&store, 1).await
                }))
            })
            .collect()
    }

    /// The connections 1 to 8, or eight calls from no numbered connection.
    fn eight(numbered: bool) -> impl Iterator<Item = u64> {
        (1..=8u64).map(move |connection| if numbered { connection } else { 0 })
    }

    /// Eight calls, from connections 1 to 8 (or from none), in one batch.
    async fn first_round(batcher: &Arc<Batcher<u32, usize>>, store: &Store, numbered: bool) {
        for call in calls_from(batcher, store, eight(numbered), Duration::ZERO) {
            assert_eq!(call.await.unwrap().unwrap(), 8);
        }
    }

    /// After a batch of eight calls from eight connections: the same connections call again
    /// after `back_after` (never if `None`) and another call arrives 1 ms after the answers.
    /// Returns the size of the batch the other call ran in and how long it took.
    async fn other_call_after_round(
        batcher: &Arc<Batcher<u32, usize>>,
        store: &Store,
        numbered: bool,
        back_after: Option<Duration>,
    ) -> (usize, Duration) {
        first_round(batcher, store, numbered).await;
        let again = back_after
            .map(|delay| calls_from(batcher, store, eight(numbered), delay))
            .unwrap_or_default();
        tokio::time::sleep(Duration::from_millis(1)).await;
        let begun = Instant::now();
        let size = batcher.submit(store, 2).await.unwrap();
        let took = begun.elapsed();
        for call in again {
            call.await.unwrap().unwrap();
        }
        (size, took)
    }

    #[tokio::test]
    async fn a_batch_waits_for_the_connections_it_answered_to_call_again() {
        let store = store();
        let gather = Duration::from_millis(40);
        let batcher = Arc::new(Batcher::new(2, 64, gather, sizes as RunBatch<u32, usize>));
        let back = Some(Duration::from_millis(4));
        let (size, took) = other_call_after_round(&batcher, &store, true, back).await;
        // The other call waited for the eight to come back, and shared their batch.
        assert_eq!(size, 9);
        assert!(took < gather, "{took:?}");

        // Without gathering, the other call runs at once, alone, and the eight after it.
        let batcher = Arc::new(Batcher::new(
            2,
            64,
            Duration::ZERO,
            sizes as RunBatch<u32, usize>,
        ));
        let (size, _) = other_call_after_round(&batcher, &store, true, back).await;
        assert_eq!(size, 1);
    }

    #[tokio::test]
    async fn connections_that_do_not_come_back_end_the_wait_early_and_stop_it_for_a_while() {
        let store = store();
        let gather = Duration::from_millis(200);
        let batcher = Arc::new(Batcher::new(2, 64, gather, sizes as RunBatch<u32, usize>));
        // None of the eight is back by half the bound: the wait ends there.
        let (size, took) = other_call_after_round(&batcher, &store, true, None).await;
        assert_eq!(size, 1);
        assert!(took >= Duration::from_millis(90), "{took:?}");
        assert!(took < Duration::from_millis(190), "{took:?}");
        assert_eq!(batcher.gather_misses.load(Ordering::SeqCst), 1);
        // The next GATHER_BACKOFF batches do not wait.
        for _ in 0..3 {
            let (size, took) = other_call_after_round(&batcher, &store, true, None).await;
            assert_eq!(size, 1);
            assert!(took < Duration::from_millis(90), "{took:?}");
        }
        // After a second miss in a row the pause is twice as long.
        batcher.gather_backoff.store(0, Ordering::SeqCst);
        let (_, took) = other_call_after_round(&batcher, &store, true, None).await;
        assert!(took >= Duration::from_millis(90), "{took:?}");
        assert_eq!(batcher.gather_misses.load(Ordering::SeqCst), 2);
        assert_eq!(
            batcher.gather_backoff.load(Ordering::SeqCst),
            GATHER_BACKOFF * 2
        );
    }

    #[tokio::test]
    async fn calls_from_no_numbered_connection_and_small_batches_never_wait() {
        let store = store();
        let gather = Duration::from_millis(200);
        let batcher = Arc::new(Batcher::new(2, 64, gather, sizes as RunBatch<u32, usize>));
        let (size, took) = other_call_after_round(&batcher, &store, false, None).await;
        assert_eq!(size, 1);
        assert!(took < Duration::from_millis(90), "{took:?}");

        // Fewer than GATHER_MIN connections answered: no wait either.
        let calls = calls_from(&batcher, &store, 1..GATHER_MIN as u64, Duration::ZERO);
        for call in calls {
            assert_eq!(call.await.unwrap().unwrap(), GATHER_MIN - 1);
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
        let begun = Instant::now();
        assert_eq!(batcher.submit(&store, 2).await.unwrap(), 1);
        assert!(begun.elapsed() < Duration::from_millis(90));
    }

    #[tokio::test]
    async fn one_batch_runs_at_a_time_and_another_starts_beside_a_stalled_one() {
        let store = Store::connect(&StoreConfig::new("postgres://db.invalid/none")).unwrap();
        let batcher = Arc::new(Batcher::new(
            2,
            64,
            DEFAULT_GATHER,
            echo as RunBatch<u32, u32>,
        ));
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
