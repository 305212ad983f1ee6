//! Verifying a typed code once (`docs/api.md` §10), shared by the HTTP handler and the CLI.
//!
//! The server computes which TOTP steps or HOTP counters the typed code matches (the key never
//! goes to SQL); the store decides against the real stored state in one statement, so that of
//! any number of concurrent attempts with the same valid code exactly one succeeds.

use chrono::{DateTime, Utc};
use otp_algo::{Amount, totp_matches};
use otp_store::otp_devices::OtpDevice;
use otp_store::verifications::{self, Attempt, Candidates, Outcome, VerifyPolicy};
use otp_store::{InstanceId, Store, StoreError};

/// Extra counters computed beyond the look-ahead, so that a cached counter somewhat behind the
/// stored one still covers it and the decision needs one round trip.
const HOTP_SLACK: u64 = 16;

/// The verification settings: the TOTP window and the store's limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VerifySettings {
    /// W: TOTP steps accepted on each side of the server's clock (`[otp] VERIFY_WINDOW`).
    pub window: u8,
    /// The look-ahead and the brute-force limits.
    pub policy: VerifyPolicy,
}

impl Default for VerifySettings {
    /// The defaults of `docs/api.md` §10: W = 2, L = 10, F = 5, D = 100.
    fn default() -> VerifySettings {
        VerifySettings {
            window: 2,
            policy: VerifyPolicy {
                max_failures: 5,
                daily_failures: 100,
                hotp_lookahead: 10,
            },
        }
    }
}

/// A typed code to check against a device.
#[derive(Clone, Copy, Debug)]
pub struct Typed<'a> {
    /// The code, 8 ASCII digits.
    pub code: &'a str,
    /// The amount with-price algorithms bind the code to.
    pub price: Option<&'a Amount>,
}

/// Decides `typed` for `device` (as read, perhaps from a cache) at `now`, recording `attempt`.
///
/// The device's algorithm must issue codes, and with-price algorithms need a price: the caller
/// checks both. When the device's cached counter is too far behind the stored one, the store
/// answers `Stale` and the matches are computed again around the stored counter (a second
/// round trip, rare). Returns the outcome and, for a counter-based device, the counter the
/// final decision was computed around (the stored one, when the device's was stale).
pub async fn decide(
    store: &Store,
    instance: &InstanceId,
    device: &OtpDevice,
    now: DateTime<Utc>,
    typed: Typed<'_>,
    attempt: &Attempt<'_>,
    settings: &VerifySettings,
) -> Result<(Outcome, u64), StoreError> {
    let unix_seconds = u64::try_from(now.timestamp()).unwrap_or(0);
    let attempt_with = |candidates: Candidates| async move {
        let policy = &settings.policy;
        verifications::verify(
            store,
            instance,
            &device.id,
            now,
            &candidates,
            attempt,
            policy,
        )
        .await
    };
    if device.algorithm.is_time_based() {
        let steps = totp_matches(
            &device.key,
            device.algorithm,
            typed.price,
            unix_seconds,
            settings.window,
            typed.code,
        );
        let amount = device
            .algorithm
            .uses_price()
            .then(|| typed.price.map(ToString::to_string))
            .flatten();
        let outcome = attempt_with(Candidates::Totp { amount, steps }).await?;
        return Ok((outcome, device.counter));
    }
    // First from the cached counter up to the first match only (a correct code costs one or
    // two codes); when the store answers that this does not decide, every counter around the
    // stored one.
    let mut around = device.counter;
    let mut first_only = true;
    for _ in 0..4 {
        let candidates = hotp_candidates(device, typed, around, settings, first_only);
        match attempt_with(candidates).await? {
            Outcome::Stale { stored_counter } => {
                around = stored_counter;
                first_only = false;
            }
            outcome => return Ok((outcome, around)),
        }
    }
    Err(StoreError::Corrupt(format!(
        "the counter of device {} kept moving during a verification",
        device.id
    )))
}

/// The HOTP counters `typed` matches around `counter`: from L below it (to recognise replays)
/// to L + slack above it. With `first_only`, the codes from `counter` up to the first match
/// only, and that range (the store answers `Stale` when a match found so does not decide); the
/// whole range when nothing matches from `counter` on.
fn hotp_candidates(
    device: &OtpDevice,
    typed: Typed<'_>,
    counter: u64,
    settings: &VerifySettings,
    first_only: bool,
) -> Candidates {
    let lookahead = u64::from(settings.policy.hotp_lookahead);
    let lo = counter.saturating_sub(lookahead);
    let hi = counter
        .saturating_add(lookahead)
        .saturating_add(HOTP_SLACK)
        .min(crate::params::MAX_COUNTER);
    let Some(matcher) =
        otp_algo::HotpMatcher::new(&device.key, device.algorithm, typed.price, typed.code)
    else {
        return Candidates::Hotp {
            counters: Vec::new(),
            range: (lo, hi),
        };
    };
    if first_only {
        if let Some(first) = matcher.first(counter, hi) {
            return Candidates::Hotp {
                counters: vec![first],
                range: (counter, first),
            };
        }
        // Nothing from `counter` on: the counters below it complete the range (replays).
        let counters = match counter.checked_sub(1) {
            Some(last) => matcher.all(lo, last),
            None => Vec::new(),
        };
        return Candidates::Hotp {
            counters,
            range: (lo, hi),
        };
    }
    let counters = matcher.all(lo, hi);
    Candidates::Hotp {
        counters,
        range: (lo, hi),
    }
}

impl From<crate::config::VerifyPolicy> for VerifySettings {
    fn from(config: crate::config::VerifyPolicy) -> VerifySettings {
        VerifySettings {
            window: config.window,
            policy: VerifyPolicy {
                max_failures: config.max_failures,
                daily_failures: config.daily_failures,
                hotp_lookahead: u32::from(config.hotp_lookahead),
            },
        }
    }
}
