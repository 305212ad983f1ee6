//! `StoreError`: the outcomes callers branch on, and driver failures.
//!
//! The SQLSTATE and the connection-level failure of a driver error are
//! inspected in one place, [`StoreError::from_db`].

use std::error::Error as StdError;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use tokio_postgres::error::SqlState;

pub use crate::key_check::KeyMismatch;

/// What can go wrong in a store operation.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The instance does not exist.
    #[error("instance not found")]
    InstanceNotFound,
    /// The OTP device does not exist in this instance.
    #[error("otp device not found")]
    DeviceNotFound,
    /// The access token does not exist in this instance.
    #[error("access token not found")]
    TokenNotFound,
    /// An instance with this id exists already.
    #[error("the instance exists")]
    InstanceExists,
    /// A device with this id exists in the instance with different details.
    #[error("an otp device with this id exists with different details")]
    DeviceExists,
    /// The device's counter is at 2^63 - 1 and cannot advance.
    #[error("the otp device counter is exhausted")]
    CounterExhausted,
    /// A uniqueness constraint refused the write (a record of this id exists).
    #[error("a conflicting record exists")]
    Conflict,
    /// The database cannot be reached: connection refused or closed, a pool
    /// checkout or connect timeout, the server shutting down, or a server that
    /// no longer accepts writes (a demoted primary, SQLSTATE 25006).
    #[error("database unavailable")]
    Unavailable(#[source] Box<dyn StdError + Send + Sync + 'static>),
    /// A statement ran longer than `statement_timeout` or waited longer than
    /// `lock_timeout` for a lock (SQLSTATE 57014 `query_canceled`, 55P03
    /// `lock_not_available`): the database is busy, the caller may retry.
    #[error("database statement timed out")]
    Timeout(#[source] tokio_postgres::Error),
    /// The database schema version differs from the one this binary expects:
    /// older (run the migrations) or newer (upgrade the binary).
    #[error("database schema is at version {current}, this binary expects version {latest}")]
    SchemaOutdated {
        /// The database's schema version (0 for an empty database).
        current: i32,
        /// The schema version this binary was built for.
        latest: i32,
    },
    /// A stored OTP key cannot be decrypted: wrong key-encryption key,
    /// tampered ciphertext, or no key-encryption key configured.
    #[error("otp key decryption failed: {0}")]
    Crypto(&'static str),
    /// The configured key-encryption key does not fit the database's device keys (see
    /// [`KeyMismatch`]); nothing was read or written with it.
    #[error("device keys at rest: {0}")]
    KeyMismatch(#[from] KeyMismatch),
    /// The connection settings cannot be used (an unknown `sslmode`, an unreadable
    /// `sslrootcert`).
    #[error("invalid database configuration: {0}")]
    InvalidConfig(String),
    /// A stored value violates an invariant (an unknown algorithm number, a
    /// short key, a negative counter, an edited migration).
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    /// A value cannot be stored (a counter above 2^63 - 1).
    #[error("value out of range: {0}")]
    OutOfRange(&'static str),
    /// Any other database failure.
    #[error("database query failed")]
    Db(#[source] tokio_postgres::Error),
}

/// `Ok` if a statement found (or changed) what it was after, else the error `missing`.
pub(crate) fn found(found: bool, missing: StoreError) -> Result<(), StoreError> {
    if found { Ok(()) } else { Err(missing) }
}

impl StoreError {
    /// Whether the database is unreachable (HTTP 503 rather than 500).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, StoreError::Unavailable(_))
    }

    /// Classifies a driver error; the one place that looks at SQLSTATEs.
    pub(crate) fn from_db(err: tokio_postgres::Error) -> StoreError {
        if let Some(code) = err.code() {
            if *code == SqlState::READ_ONLY_SQL_TRANSACTION {
                read_only_seen();
            }
            return if is_unavailable_state(code) {
                StoreError::Unavailable(Box::new(err))
            } else if *code == SqlState::QUERY_CANCELED || *code == SqlState::LOCK_NOT_AVAILABLE {
                StoreError::Timeout(err)
            } else if *code == SqlState::UNIQUE_VIOLATION {
                StoreError::Conflict
            } else {
                StoreError::Db(err)
            };
        }
        // No SQLSTATE: a connection-level failure (closed, I/O, timeout) or a
        // client-side one (conversion of a value).
        let io_failure = err
            .source()
            .is_some_and(|source| source.downcast_ref::<std::io::Error>().is_some());
        if err.is_closed() || io_failure {
            StoreError::Unavailable(Box::new(err))
        } else {
            StoreError::Db(err)
        }
    }

    /// Classifies a failure to open a connection: without a SQLSTATE (refused, timed out, no
    /// host met `target_session_attrs`) the database is unavailable.
    pub(crate) fn from_connect(err: tokio_postgres::Error) -> StoreError {
        if err.code().is_none() {
            StoreError::Unavailable(Box::new(err))
        } else {
            StoreError::from_db(err)
        }
    }

    /// Classifies a pool checkout failure.
    pub(crate) fn from_pool(err: deadpool_postgres::PoolError) -> StoreError {
        use deadpool_postgres::PoolError;
        match err {
            // A backend error at checkout comes from opening a connection.
            PoolError::Backend(err) => StoreError::from_connect(err),
            other => StoreError::Unavailable(Box::new(other)),
        }
    }
}

impl From<tokio_postgres::Error> for StoreError {
    fn from(err: tokio_postgres::Error) -> StoreError {
        StoreError::from_db(err)
    }
}

/// SQLSTATEs that mean "the server cannot serve us right now".
fn is_unavailable_state(code: &SqlState) -> bool {
    // Class 08: connection exception.
    code.code().starts_with("08")
        // A write on a server that has become read-only: the primary was demoted or fenced
        // (`default_transaction_read_only`) behind a connection that outlived its role.
        || *code == SqlState::READ_ONLY_SQL_TRANSACTION
        || *code == SqlState::ADMIN_SHUTDOWN
        || *code == SqlState::CRASH_SHUTDOWN
        || *code == SqlState::CANNOT_CONNECT_NOW
        || *code == SqlState::TOO_MANY_CONNECTIONS
}

/// When this process last saw a write refused as read-only, in nanoseconds after [`epoch`]
/// (0: never).
static READ_ONLY_SEEN: AtomicU64 = AtomicU64::new(0);

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

fn since_epoch(at: Instant) -> u64 {
    // At least 1, so that a sighting is never mistaken for "never".
    u64::try_from(at.saturating_duration_since(epoch()).as_nanos())
        .unwrap_or(u64::MAX)
        .max(1)
}

/// Records that a server refused a write as read-only: the connections opened before now may
/// all lead to it, so the pools discard them ([`opened_before_read_only`]) and open new ones,
/// which `target_session_attrs=read-write` sends to the primary.
fn read_only_seen() {
    READ_ONLY_SEEN.fetch_max(since_epoch(Instant::now()), Ordering::Relaxed);
}

/// Whether a connection opened at `created` predates the last write refused as read-only
/// (process-wide: a discarded connection that was fine costs one reconnect).
pub(crate) fn opened_before_read_only(created: Instant) -> bool {
    let seen = READ_ONLY_SEEN.load(Ordering::Relaxed);
    seen != 0 && since_epoch(created) <= seen
}
