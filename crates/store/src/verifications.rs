//! Verifying a typed code once (`docs/api.md` §10): the decision, the
//! lockout and the history of a device's verifications.
//!
//! The server computes which TOTP steps or HOTP counters a typed code matches
//! (the key never reaches SQL, see `otp_algo::{totp_matches, hotp_matches}`);
//! [`verify`] hands those [`Candidates`] to the database function
//! `otp_verify_batch` (`sql/migrations/0017_verify_batch_fewer_statements.sql`,
//! with the other attempts of its batch), which decides in one round trip,
//! under a row lock of the device's
//! verification state, against the state as stored, and records and audits
//! the attempt: of any number of concurrent attempts
//! with the same valid code, in any number of server processes, exactly one
//! is [`Outcome::Verified`]. The typed code is never stored.

use chrono::{DateTime, Utc};

use crate::error::{StoreError, found};
use crate::ids::{InstanceId, OtpDeviceId};
use crate::store::Store;

pub(crate) mod batch;
mod history;
pub use history::history;

/// The limits of [`verify`], from the server's configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VerifyPolicy {
    /// F: the F-th consecutive mismatch locks the device, and so does every
    /// later one until a success or an unlock (`[otp] VERIFY_MAX_FAILURES`).
    /// Values outside 1..=2^31-1 are clamped into it.
    pub max_failures: u32,
    /// D: after D mismatches in one UTC day, attempts are refused until
    /// 00:00 UTC (`[otp] VERIFY_DAILY_FAILURES`). Clamped into 1..=2^31-1.
    pub daily_failures: u32,
    /// L: an HOTP code may match the stored counter S up to S + L
    /// (`[otp] HOTP_LOOKAHEAD`). Clamped to at most 2^31-1.
    pub hotp_lookahead: u32,
}

/// What the typed code matches, as computed by the server from the key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Candidates {
    /// A time-based device (algorithms 1 and 2).
    Totp {
        /// TOTP_WITH_PRICE: the amount the code is bound to, in canonical
        /// form (`otp_algo::Amount`'s `Display`: `EUR:1.5`, never `EUR:1.50`),
        /// since a step is accepted once per amount; `None` for
        /// TOTP_WITHOUT_PRICE.
        amount: Option<String>,
        /// The matching steps (seconds since the epoch / 30) with their
        /// offset from the server's current step, nearest first
        /// (`otp_algo::totp_matches`); empty when the code matches none.
        steps: Vec<(u64, i32)>,
    },
    /// A counter-based device (algorithms 3 and 4).
    Hotp {
        /// The matching counters within `range`, ascending
        /// (`otp_algo::hotp_matches`); empty when the code matches none.
        counters: Vec<u64>,
        /// The counters the server computed codes for, both ends included.
        /// Unless it covers [S, S + L] for the stored counter S, a code that
        /// matches nothing is [`Outcome::Stale`] rather than a mismatch.
        range: (u64, u64),
    },
}

/// Who makes an attempt, for the history.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Attempt<'a> {
    /// What the code confirms (an order id), recorded with the outcome and
    /// answered to later replays of the same code.
    pub reference: Option<&'a str>,
    /// The client's address, as the server saw it.
    pub client: &'a str,
    /// The serial of the access token used, if any.
    pub token_serial: Option<i64>,
}

/// The decision on one attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The code matches a step or counter never accepted before; it is now
    /// accepted, and the lockout counts are reset.
    Verified {
        /// HOTP: the counter that matched (the stored counter is now one
        /// more); `None` for TOTP.
        otp_ctr: Option<u64>,
        /// TOTP: the matching step's offset from the server's current step;
        /// `None` for HOTP.
        matched_offset: Option<i32>,
    },
    /// The code matches nothing: counted, and possibly locking the device.
    Mismatch,
    /// The code matches a step or counter that was accepted before.
    Replayed {
        /// The reference given by the attempt that was accepted.
        reference: Option<String>,
    },
    /// Refused without checking the code: the device is locked after
    /// repeated mismatches.
    Locked {
        /// The lock's remaining whole seconds, rounded up (at least 1).
        retry_after_s: u32,
    },
    /// Refused without checking the code: the day's mismatches are used up.
    DailyLimit {
        /// Whole seconds until 00:00 UTC, rounded up.
        retry_after_s: u32,
    },
    /// HOTP only: the server's range does not cover [S, S + L] for the stored
    /// counter S, so the code cannot be decided; compute the matches around
    /// `stored_counter` and call again. Nothing was recorded or counted.
    Stale {
        /// The stored counter S.
        stored_counter: u64,
    },
}

/// A recorded outcome, as listed by [`history`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordedOutcome {
    /// The code was accepted.
    Verified,
    /// The code matched nothing.
    Mismatch,
    /// The code had been accepted before.
    Replayed,
    /// Refused: the device was locked.
    Locked,
    /// Refused: the daily limit of mismatches was reached.
    DailyLimit,
}

impl RecordedOutcome {
    /// The name used in the database and on the wire (`verified`,
    /// `mismatch`, `replayed`, `locked`, `daily_limit`).
    pub fn as_str(self) -> &'static str {
        match self {
            RecordedOutcome::Verified => "verified",
            RecordedOutcome::Mismatch => "mismatch",
            RecordedOutcome::Replayed => "replayed",
            RecordedOutcome::Locked => "locked",
            RecordedOutcome::DailyLimit => "daily_limit",
        }
    }

    pub(crate) fn parse(name: &str) -> Option<RecordedOutcome> {
        Some(match name {
            "verified" => RecordedOutcome::Verified,
            "mismatch" => RecordedOutcome::Mismatch,
            "replayed" => RecordedOutcome::Replayed,
            "locked" => RecordedOutcome::Locked,
            "daily_limit" => RecordedOutcome::DailyLimit,
            _ => return None,
        })
    }
}

/// One attempt in a device's history. It never holds the typed code.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verification {
    /// The server time of the attempt.
    pub time: DateTime<Utc>,
    /// What was decided.
    pub outcome: RecordedOutcome,
    /// The reference the attempt gave.
    pub reference: Option<String>,
    /// HOTP, verified or replayed: the counter the code matched.
    pub otp_ctr: Option<u64>,
    /// TOTP, verified or replayed: the matching step's offset from the
    /// server's step at the time.
    pub matched_offset: Option<i32>,
    /// The client's address.
    pub client: String,
    /// The serial of the access token used, if any.
    pub token_serial: Option<i64>,
}

/// Decides one attempt at time `now` on device `id` of `instance`, given
/// what the typed code matches, atomically and in one round trip.
///
/// In order: a missing device is `DeviceNotFound`; the day's mismatches used
/// up ([`Outcome::DailyLimit`]) and a lock ([`Outcome::Locked`]) refuse the
/// attempt without counting it; TOTP accepts the first of `steps` not
/// accepted before (per amount for with-price devices), else answers
/// [`Outcome::Replayed`] if there was one; HOTP accepts the smallest
/// matching counter C with S ≤ C ≤ S + L for the stored counter S and stores
/// C + 1, else answers `Replayed` for a matching counter that was accepted
/// before, [`Outcome::Stale`] when `range` does not cover [S, S + L], and
/// otherwise [`Outcome::Mismatch`]. A mismatch counts towards the lock and
/// the daily limit; a success resets the lock and the consecutive count.
/// Every outcome but `Stale` is recorded in the history and in the audit trail
/// (`verification`), and reported to the store's observer.
///
/// Concurrent attempts share one statement and one commit (group commit, `batch.rs`),
/// each decided as if alone, in the order they arrived for each device.
///
/// `OutOfRange` if a step, counter or range end is above 2^63 - 1.
#[tracing::instrument(skip(store, candidates, attempt))]
pub async fn verify(
    store: &Store,
    instance: &InstanceId,
    id: &OtpDeviceId,
    now: DateTime<Utc>,
    candidates: &Candidates,
    attempt: &Attempt<'_>,
    policy: &VerifyPolicy,
) -> Result<Outcome, StoreError> {
    let item = batch::Attempted::new(instance, id, now, candidates, attempt, policy)?;
    store.batches().verifications.submit(store, item).await
}

const UNLOCK: &str = "
    WITH device AS (
        SELECT d.instance_serial, d.otp_device_id
          FROM otp_devices d
          JOIN instances i USING (instance_serial)
         WHERE i.instance_id = $1
           AND d.otp_device_id = $2
    ), cleared AS (
        UPDATE otp_verify_state AS s
           SET consecutive_failures = 0,
               lock_count = 0,
               locked_until = NULL,
               day_failures = 0
          FROM device
         WHERE s.instance_serial = device.instance_serial
           AND s.otp_device_id = device.otp_device_id
        RETURNING 1
    )
    SELECT EXISTS (SELECT 1 FROM device) AS found";

/// Unlocks device `id` of `instance`: clears the lock, the consecutive
/// mismatches, the lock count and the day's mismatches, in one statement.
/// The accepted steps and counters stay accepted. `DeviceNotFound` if the
/// device does not exist there.
#[tracing::instrument(skip(store))]
pub async fn unlock(
    store: &Store,
    instance: &InstanceId,
    id: &OtpDeviceId,
) -> Result<(), StoreError> {
    let client = store.client().await?;
    let stmt = client.prepare_cached(UNLOCK).await?;
    let row = client
        .query_one(&stmt, &[&instance.as_str(), &id.as_str()])
        .await?;
    found(row.try_get("found")?, StoreError::DeviceNotFound)
}
