//! Verifying a typed code once: TOTP steps and HOTP counters accepted once,
//! atomically under concurrency; the lockout and the daily limit; unlock;
//! the history; isolation between instances.

use chrono::{DateTime, Utc};
use otp_algo::Algorithm;
use otp_store::testing::TestDb;
use otp_store::verifications::{
    self, Attempt, Candidates, Outcome, RecordedOutcome, Verification, VerifyPolicy,
};
use otp_store::{InstanceId, OtpDeviceId, Store, StoreError};
use otp_store::{instances, otp_devices};

use crate::{
    device_id, given_alpha_and_beta, given_instance, given_shop, instance_id, new_device, stored,
};

/// 2023-11-14T22:13:30Z, the first second of TOTP step 56_666_667.
const T0: i64 = 1_700_000_010;
const STEP0: u64 = 56_666_667;

fn at(seconds: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(seconds, 0).unwrap()
}

fn at_millis(millis: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(millis).unwrap()
}

const POLICY: VerifyPolicy = VerifyPolicy {
    max_failures: 5,
    daily_failures: 100,
    hotp_lookahead: 10,
};

/// [`POLICY`] with F = `max_failures` and D = `daily_failures`.
fn limits(max_failures: u32, daily_failures: u32) -> VerifyPolicy {
    VerifyPolicy {
        max_failures,
        daily_failures,
        ..POLICY
    }
}

fn attempt(reference: Option<&str>) -> Attempt<'_> {
    Attempt {
        reference,
        client: "192.0.2.7",
        token_serial: Some(3),
    }
}

fn totp(steps: &[(u64, i32)]) -> Candidates {
    Candidates::Totp {
        amount: None,
        steps: steps.to_vec(),
    }
}

/// A code that matches nothing (TOTP).
fn nothing() -> Candidates {
    totp(&[])
}

fn hotp(counters: &[u64], range: (u64, u64)) -> Candidates {
    Candidates::Hotp {
        counters: counters.to_vec(),
        range,
    }
}

async fn given_device(store: &Store, instance: &InstanceId, id: &str, algorithm: Algorithm) {
    given_device_at(store, instance, id, algorithm, 0).await;
}

async fn given_device_at(
    store: &Store,
    instance: &InstanceId,
    id: &str,
    algorithm: Algorithm,
    counter: u64,
) {
    let mut device = new_device(id);
    device.algorithm = algorithm;
    device.counter = counter;
    otp_devices::create(store, instance, &device).await.unwrap();
}

/// The instance `shop` with its device `pos` of `algorithm` at `counter`, in `store`.
async fn given_shop_pos(
    store: &Store,
    algorithm: Algorithm,
    counter: u64,
) -> (InstanceId, OtpDeviceId) {
    let shop = given_instance(store, "shop").await;
    given_device_at(store, &shop, "pos", algorithm, counter).await;
    (shop, device_id("pos"))
}

/// The instance `shop` and its device `pos` (with a fresh database, or on one the caller keeps):
/// where a test's attempts go.
struct Till {
    _db: Option<TestDb>,
    store: Store,
    shop: InstanceId,
    pos: OtpDeviceId,
}

impl Till {
    /// The device `id` of `shop` in `store`, whose database the caller keeps.
    fn on(store: &Store, shop: &InstanceId, id: &str) -> Till {
        Till {
            _db: None,
            store: store.clone(),
            shop: shop.clone(),
            pos: device_id(id),
        }
    }

    /// An attempt with reference `order` on `pos`.
    async fn check(&self, now: DateTime<Utc>, code: &Candidates, policy: &VerifyPolicy) -> Outcome {
        check(&self.store, &self.shop, &self.pos, now, code, policy).await
    }

    /// An attempt on `pos` with `reference` and [`POLICY`].
    async fn verify_as(
        &self,
        now: DateTime<Utc>,
        code: &Candidates,
        reference: Option<&str>,
    ) -> Outcome {
        let attempt = attempt(reference);
        verifications::verify(
            &self.store,
            &self.shop,
            &self.pos,
            now,
            code,
            &attempt,
            &POLICY,
        )
        .await
        .unwrap()
    }

    /// Asserts that an attempt with reference `order` on `pos` has the outcome `expected`.
    async fn expect(
        &self,
        now: DateTime<Utc>,
        code: &Candidates,
        policy: &VerifyPolicy,
        expected: Outcome,
    ) {
        assert_eq!(self.check(now, code, policy).await, expected, "at {now}");
    }

    /// Whether an attempt with a code matching nothing is refused by the daily limit.
    async fn at_daily_limit(&self, now: DateTime<Utc>, policy: &VerifyPolicy) -> bool {
        let outcome = self.check(now, &nothing(), policy).await;
        matches!(outcome, Outcome::DailyLimit { .. })
    }

    /// The counter `pos` has stored.
    async fn counter(&self) -> u64 {
        stored_counter(&self.store, &self.shop, &self.pos).await
    }
}

/// A fresh database with the instance `shop` and its device `pos` of `algorithm` at `counter`.
async fn given_pos(algorithm: Algorithm, counter: u64) -> Till {
    let db = TestDb::new().await;
    let store = db.store();
    let (shop, pos) = given_shop_pos(&store, algorithm, counter).await;
    Till {
        _db: Some(db),
        store,
        shop,
        pos,
    }
}

async fn stored_counter(store: &Store, instance: &InstanceId, id: &OtpDeviceId) -> u64 {
    stored(store, instance, id).await.counter
}

async fn check(
    store: &Store,
    instance: &InstanceId,
    id: &OtpDeviceId,
    now: DateTime<Utc>,
    candidates: &Candidates,
    policy: &VerifyPolicy,
) -> Outcome {
    verifications::verify(
        store,
        instance,
        id,
        now,
        candidates,
        &attempt(Some("order")),
        policy,
    )
    .await
    .unwrap()
}

async fn outcomes(store: &Store, instance: &InstanceId, id: &OtpDeviceId) -> Vec<RecordedOutcome> {
    verifications::history(store, instance, id, 1000, 0)
        .await
        .unwrap()
        .into_iter()
        .map(|v| v.outcome)
        .collect()
}

fn verified_offset(offset: i32) -> Outcome {
    Outcome::Verified {
        otp_ctr: None,
        matched_offset: Some(offset),
    }
}

fn verified_counter(counter: u64) -> Outcome {
    Outcome::Verified {
        otp_ctr: Some(counter),
        matched_offset: None,
    }
}

#[tokio::test]
async fn a_totp_step_is_accepted_once_and_then_answers_its_reference() {
    let till = given_pos(Algorithm::TotpWithoutPrice, 0).await;
    let code = totp(&[(STEP0, 0)]);

    let first = till.verify_as(at(T0), &code, Some("order-1")).await;
    let again = till.verify_as(at(T0 + 5), &code, Some("order-2")).await;
    // Seen from the next step the same step is offset -1: still a replay.
    let later = till
        .verify_as(at(T0 + 30), &totp(&[(STEP0, -1)]), None)
        .await;

    assert_eq!(first, verified_offset(0));
    let replay = Outcome::Replayed {
        reference: Some("order-1".into()),
    };
    assert_eq!(again, replay);
    assert_eq!(later, replay);
}

#[tokio::test]
async fn a_code_matching_several_steps_takes_the_first_one_not_accepted() {
    let till = given_pos(Algorithm::TotpWithoutPrice, 0).await;
    let both = totp(&[(STEP0, 0), (STEP0 - 1, -1)]);

    let first = till.check(at(T0), &both, &POLICY).await;
    let second = till.check(at(T0), &both, &POLICY).await;
    let third = till.verify_as(at(T0), &both, None).await;

    assert_eq!(first, verified_offset(0));
    assert_eq!(second, verified_offset(-1));
    assert_eq!(
        third,
        Outcome::Replayed {
            reference: Some("order".into())
        }
    );
}

#[tokio::test]
async fn an_accepted_attempt_without_reference_replays_as_none() {
    let till = given_pos(Algorithm::TotpWithoutPrice, 0).await;
    let code = totp(&[(STEP0, 0)]);

    let both = (0..2).map(|_| till.verify_as(at(T0), &code, None));
    let outcomes: Vec<Outcome> = futures_util::future::join_all(both).await;

    assert!(outcomes.contains(&verified_offset(0)), "{outcomes:?}");
    assert!(
        outcomes.contains(&Outcome::Replayed { reference: None }),
        "{outcomes:?}"
    );
}

#[tokio::test]
async fn with_price_a_step_is_accepted_once_per_amount() {
    let till = given_pos(Algorithm::TotpWithPrice, 0).await;
    let for_amount = |amount: &str| Candidates::Totp {
        amount: Some(amount.into()),
        steps: vec![(STEP0, 0)],
    };

    let one = till.check(at(T0), &for_amount("EUR:1"), &POLICY).await;
    let two = till.check(at(T0), &for_amount("EUR:2"), &POLICY).await;
    let one_again = till.check(at(T0), &for_amount("EUR:1"), &POLICY).await;
    let two_again = till.check(at(T0), &for_amount("EUR:2"), &POLICY).await;

    assert_eq!(one, verified_offset(0));
    assert_eq!(two, verified_offset(0));
    assert!(
        matches!(one_again, Outcome::Replayed { .. }),
        "{one_again:?}"
    );
    assert!(
        matches!(two_again, Outcome::Replayed { .. }),
        "{two_again:?}"
    );
}

#[tokio::test]
async fn hotp_accepts_up_to_the_look_ahead_and_stores_the_next_counter() {
    let (_db, store, shop) = given_shop().await;
    given_device(&store, &shop, "near", Algorithm::HotpWithoutPrice).await;
    given_device(&store, &shop, "far", Algorithm::HotpWithoutPrice).await;
    let near = device_id("near");
    let far = device_id("far");

    // S = 0, L = 10: counter 10 is the last one accepted.
    let edge = check(&store, &shop, &near, at(T0), &hotp(&[10], (0, 11)), &POLICY).await;
    let beyond = check(&store, &shop, &far, at(T0), &hotp(&[11], (0, 11)), &POLICY).await;

    assert_eq!(edge, verified_counter(10));
    assert_eq!(stored_counter(&store, &shop, &near).await, 11);
    assert_eq!(beyond, Outcome::Mismatch);
    assert_eq!(stored_counter(&store, &shop, &far).await, 0);
}

#[tokio::test]
async fn hotp_takes_the_smallest_match_in_the_window() {
    let till = given_pos(Algorithm::HotpWithPrice, 100).await;

    let outcome = till
        .check(at(T0), &hotp(&[95, 103, 107], (90, 110)), &POLICY)
        .await;

    assert_eq!(outcome, verified_counter(103));
    assert_eq!(till.counter().await, 104);
}

#[tokio::test]
async fn hotp_below_the_counter_is_a_replay_if_accepted_and_a_mismatch_if_skipped() {
    let till = given_pos(Algorithm::HotpWithoutPrice, 0).await;
    let verified = till
        .verify_as(at(T0), &hotp(&[5], (0, 10)), Some("order-5"))
        .await;
    assert_eq!(verified, verified_counter(5));
    assert_eq!(till.counter().await, 6);

    let skipped = till.check(at(T0), &hotp(&[3], (0, 16)), &POLICY).await;
    let replayed = till.check(at(T0), &hotp(&[5], (0, 16)), &POLICY).await;

    assert_eq!(skipped, Outcome::Mismatch);
    assert_eq!(
        replayed,
        Outcome::Replayed {
            reference: Some("order-5".into())
        }
    );
    assert_eq!(till.counter().await, 6);
    assert_eq!(
        outcomes(&till.store, &till.shop, &till.pos).await,
        [
            RecordedOutcome::Replayed,
            RecordedOutcome::Mismatch,
            RecordedOutcome::Verified
        ]
    );
}

#[tokio::test]
async fn hotp_is_stale_when_the_range_does_not_cover_the_window() {
    let till = given_pos(Algorithm::HotpWithoutPrice, 6).await;

    // [6, 16] is not inside [0, 10]: no match there says nothing.
    let short = till.check(at(T0), &hotp(&[], (0, 10)), &POLICY).await;
    // A match at 8, but 6 and 7 were not computed.
    let late = till.check(at(T0), &hotp(&[8], (7, 20)), &POLICY).await;
    // Computed around the stored counter: decided.
    let covered = till.check(at(T0), &hotp(&[8], (0, 16)), &POLICY).await;

    assert_eq!(short, Outcome::Stale { stored_counter: 6 });
    assert_eq!(late, Outcome::Stale { stored_counter: 6 });
    assert_eq!(covered, verified_counter(8));
    // Stale attempts are neither recorded nor counted.
    assert_eq!(
        outcomes(&till.store, &till.shop, &till.pos).await,
        [RecordedOutcome::Verified]
    );
}

#[tokio::test]
async fn hotp_at_the_largest_counter_accepts_it_once() {
    let max = i64::MAX.unsigned_abs();
    let till = given_pos(Algorithm::HotpWithoutPrice, max).await;
    let at_max = hotp(&[max], (max, max));

    let first = till.check(at(T0), &at_max, &POLICY).await;
    let again = till.check(at(T0), &at_max, &POLICY).await;
    let beyond = verifications::verify(
        &till.store,
        &till.shop,
        &till.pos,
        at(T0),
        &hotp(&[max], (max, max + 1)),
        &attempt(None),
        &POLICY,
    )
    .await;

    assert_eq!(first, verified_counter(max));
    assert!(matches!(again, Outcome::Replayed { .. }), "{again:?}");
    assert_eq!(till.counter().await, max);
    assert!(
        matches!(beyond, Err(StoreError::OutOfRange(_))),
        "{beyond:?}"
    );
}

/// A store with more connections than the harness's default, so that the
/// attempts really run concurrently.
fn wide_store(db: &TestDb) -> Store {
    let mut config = db.config();
    config.pool_size = 16;
    config.wait_timeout = std::time::Duration::from_secs(30);
    Store::connect(&config).unwrap()
}

async fn race(
    store: &Store,
    shop: &InstanceId,
    pos: &OtpDeviceId,
    code: &Candidates,
) -> Vec<Outcome> {
    let tasks: Vec<_> = (0..32)
        .map(|i| {
            let (store, shop, pos, code) = (store.clone(), shop.clone(), pos.clone(), code.clone());
            tokio::spawn(async move {
                let reference = format!("order-{i}");
                verifications::verify(
                    &store,
                    &shop,
                    &pos,
                    at(T0),
                    &code,
                    &attempt(Some(&reference)),
                    &POLICY,
                )
                .await
                .map(|outcome| (outcome, reference))
            })
        })
        .collect();
    let mut outcomes = Vec::new();
    let mut winners = Vec::new();
    for task in futures_util::future::join_all(tasks).await {
        let (outcome, reference) = task.unwrap().unwrap();
        if matches!(outcome, Outcome::Verified { .. }) {
            winners.push(reference);
        }
        outcomes.push(outcome);
    }
    assert_eq!(winners.len(), 1, "{outcomes:?}");
    let replay = Outcome::Replayed {
        reference: winners.pop(),
    };
    assert_eq!(
        outcomes.iter().filter(|o| **o == replay).count(),
        31,
        "{outcomes:?}"
    );
    outcomes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn of_32_concurrent_totp_attempts_with_one_code_exactly_one_is_verified() {
    let db = TestDb::new().await;
    let store = wide_store(&db);
    let (shop, pos) = given_shop_pos(&store, Algorithm::TotpWithoutPrice, 0).await;

    let outcomes = race(&store, &shop, &pos, &totp(&[(STEP0, 0)])).await;

    assert!(outcomes.contains(&verified_offset(0)));
    let recorded = outcomes_of(&store, &shop, &pos).await;
    assert_eq!(recorded, (1, 31));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn of_32_concurrent_hotp_attempts_with_one_code_exactly_one_is_verified() {
    let db = TestDb::new().await;
    let store = wide_store(&db);
    let (shop, pos) = given_shop_pos(&store, Algorithm::HotpWithoutPrice, 0).await;

    // Every attempt computed its codes around the counter it read (0), as the server does:
    // from L below it to L + 16 above it, which still covers the window of the counter the
    // winner moved to (4 + 10).
    let outcomes = race(&store, &shop, &pos, &hotp(&[3], (0, 26))).await;

    assert!(outcomes.contains(&verified_counter(3)));
    assert_eq!(stored_counter(&store, &shop, &pos).await, 4);
    assert_eq!(outcomes_of(&store, &shop, &pos).await, (1, 31));
}

#[tokio::test]
async fn a_replay_found_in_codes_up_to_the_first_match_only_is_stale() {
    let (_db, store, shop) = given_shop().await;
    given_device_at(&store, &shop, "pos", Algorithm::HotpWithoutPrice, 5).await;
    let on_pos = Till::on(&store, &shop, "pos");

    // Codes from the counter (5) up to the first match (7) decide a success: no counter from 5
    // to 6 matched.
    assert_eq!(
        on_pos.check(at(T0), &hotp(&[7], (5, 7)), &POLICY).await,
        verified_counter(7)
    );
    // The counter is 8 now. A replay of 7 found in codes from 5 to 7 only does not decide (a
    // counter from 8 to 18 might match too): stale, nothing recorded.
    assert_eq!(
        on_pos.check(at(T0), &hotp(&[7], (5, 7)), &POLICY).await,
        Outcome::Stale { stored_counter: 8 }
    );
    // Nor does a replay at the first counter computed, when the counter was not moved on.
    assert_eq!(
        on_pos.check(at(T0), &hotp(&[7], (7, 7)), &POLICY).await,
        Outcome::Stale { stored_counter: 8 }
    );
    // Every counter around 8 computed: replayed, recorded.
    assert_eq!(
        on_pos.check(at(T0), &hotp(&[7], (0, 34)), &POLICY).await,
        Outcome::Replayed {
            reference: Some("order".to_owned())
        }
    );
    let recorded = outcomes(&store, &shop, &device_id("pos")).await;
    assert_eq!(
        recorded,
        // Newest first.
        [RecordedOutcome::Replayed, RecordedOutcome::Verified]
    );
}

/// (verified, replayed) in the history.
async fn outcomes_of(store: &Store, instance: &InstanceId, id: &OtpDeviceId) -> (usize, usize) {
    let all = outcomes(store, instance, id).await;
    let count = |wanted| all.iter().filter(|o| **o == wanted).count();
    assert_eq!(all.len(), 32);
    (
        count(RecordedOutcome::Verified),
        count(RecordedOutcome::Replayed),
    )
}

#[tokio::test]
async fn the_fth_mismatch_locks_until_the_step_ends_then_every_next_one_locks_longer() {
    let till = given_pos(Algorithm::TotpWithoutPrice, 0).await;
    let now = T0 + 5; // the step ends at T0 + 30

    for i in 0..5 {
        let outcome = till.check(at(now + i), &nothing(), &POLICY).await;
        assert_eq!(outcome, Outcome::Mismatch, "mismatch {i}");
    }
    // Locked until T0 + 30, even for a valid code, which stays unused.
    let valid = totp(&[(STEP0, 0)]);
    assert_eq!(
        till.check(at(now + 5), &valid, &POLICY).await,
        Outcome::Locked { retry_after_s: 20 }
    );
    assert_eq!(
        till.check(at_millis((T0 + 29) * 1000 + 1), &nothing(), &POLICY)
            .await,
        Outcome::Locked { retry_after_s: 1 }
    );

    // After each lock ends, the next mismatch locks again, for 60, 120, ...
    // seconds from that mismatch, at most 900.
    let mut t = T0 + 30;
    for expected in [60, 120, 240, 480, 900, 900] {
        t += 1000; // however late
        assert_eq!(
            till.check(at(t), &nothing(), &POLICY).await,
            Outcome::Mismatch,
            "the mismatch before the {expected}-s lock"
        );
        assert_eq!(
            till.check(at(t), &nothing(), &POLICY).await,
            Outcome::Locked {
                retry_after_s: expected,
            }
        );
        assert_eq!(
            till.check(at(t + i64::from(expected) - 1), &nothing(), &POLICY)
                .await,
            Outcome::Locked { retry_after_s: 1 }
        );
    }

    // A success resets: F - 1 mismatches lock nothing, the F-th locks until
    // the step ends again.
    t += 1000;
    let step = u64::try_from(t / 30).unwrap();
    till.expect(at(t), &totp(&[(step, 0)]), &POLICY, verified_offset(0))
        .await;
    let start = (t / 30 + 1) * 30; // the next step's first second
    for i in 0..4 {
        till.expect(at(start + i), &nothing(), &POLICY, Outcome::Mismatch)
            .await;
    }
    till.expect(at(start + 10), &nothing(), &POLICY, Outcome::Mismatch)
        .await;
    assert_eq!(
        till.check(at(start + 10), &nothing(), &POLICY).await,
        Outcome::Locked { retry_after_s: 20 }
    );
}

#[tokio::test]
async fn refused_attempts_and_replays_do_not_count() {
    let till = given_pos(Algorithm::TotpWithoutPrice, 0).await;
    let policy = limits(2, 3);
    let code = totp(&[(STEP0, 0)]);
    till.expect(at(T0), &code, &policy, verified_offset(0))
        .await;

    // One mismatch, then replays: the second mismatch is the F-th.
    till.expect(at(T0), &nothing(), &policy, Outcome::Mismatch)
        .await;
    for _ in 0..5 {
        assert!(matches!(
            till.check(at(T0), &code, &policy).await,
            Outcome::Replayed { .. }
        ));
    }
    till.expect(at(T0), &nothing(), &policy, Outcome::Mismatch)
        .await;
    // Refused while locked: not counted towards the daily limit (3).
    for _ in 0..5 {
        assert_eq!(
            till.check(at(T0 + 1), &nothing(), &policy).await,
            Outcome::Locked { retry_after_s: 29 }
        );
    }
    till.expect(at(T0 + 30), &nothing(), &policy, Outcome::Mismatch)
        .await;
    assert!(till.at_daily_limit(at(T0 + 31), &policy).await);
}

#[tokio::test]
async fn the_daily_limit_refuses_until_midnight_utc_and_a_success_does_not_reset_it() {
    let till = given_pos(Algorithm::TotpWithoutPrice, 0).await;
    let policy = limits(1000, 3);
    let midnight = 1_700_006_400; // 2023-11-15T00:00:00Z
    assert_eq!(at(midnight).to_rfc3339(), "2023-11-15T00:00:00+00:00");

    for _ in 0..2 {
        till.expect(at(T0), &nothing(), &policy, Outcome::Mismatch)
            .await;
    }
    till.expect(at(T0), &totp(&[(STEP0, 0)]), &policy, verified_offset(0))
        .await;
    till.expect(at(T0), &nothing(), &policy, Outcome::Mismatch)
        .await;
    let valid_later = totp(&[(STEP0 + 1, 0)]);
    assert_eq!(
        till.check(at(T0 + 30), &valid_later, &policy).await,
        Outcome::DailyLimit {
            retry_after_s: u32::try_from(midnight - T0 - 30).unwrap(),
        }
    );
    assert_eq!(
        till.check(at_millis(midnight * 1000 - 1500), &nothing(), &policy)
            .await,
        Outcome::DailyLimit { retry_after_s: 2 }
    );

    // A new UTC day starts with a clean count.
    for i in 0..3 {
        till.expect(at(midnight + i), &nothing(), &policy, Outcome::Mismatch)
            .await;
    }
    assert!(till.at_daily_limit(at(midnight + 3), &policy).await);
}

#[tokio::test]
async fn unlock_clears_the_lock_and_both_counts() {
    let till = given_pos(Algorithm::TotpWithoutPrice, 0).await;
    let policy = limits(2, 4);
    // Two locks in a row, 4 mismatches today: locked and at the daily limit.
    for t in [T0, T0, T0 + 100, T0 + 200] {
        till.expect(at(t), &nothing(), &policy, Outcome::Mismatch)
            .await;
    }
    assert!(till.at_daily_limit(at(T0 + 201), &policy).await);

    verifications::unlock(&till.store, &till.shop, &till.pos)
        .await
        .unwrap();

    // One mismatch (F - 1) locks nothing; the F-th is the first lock again,
    // until the step ends.
    till.expect(at(T0 + 210), &nothing(), &policy, Outcome::Mismatch)
        .await;
    till.expect(at(T0 + 211), &nothing(), &policy, Outcome::Mismatch)
        .await;
    assert_eq!(
        till.check(at(T0 + 211), &nothing(), &policy).await,
        Outcome::Locked { retry_after_s: 29 }
    );
    // Unlocking a device that never verified, or twice, is fine.
    verifications::unlock(&till.store, &till.shop, &till.pos)
        .await
        .unwrap();
    verifications::unlock(&till.store, &till.shop, &till.pos)
        .await
        .unwrap();
    given_device(
        &till.store,
        &till.shop,
        "fresh",
        Algorithm::TotpWithoutPrice,
    )
    .await;
    verifications::unlock(&till.store, &till.shop, &device_id("fresh"))
        .await
        .unwrap();
}

#[tokio::test]
async fn the_history_lists_newest_first_with_limit_and_offset() {
    let (_db, store, shop) = given_shop().await;
    given_device(&store, &shop, "totp", Algorithm::TotpWithoutPrice).await;
    given_device(&store, &shop, "hotp", Algorithm::HotpWithoutPrice).await;
    let totp_dev = device_id("totp");
    let hotp_dev = device_id("hotp");
    let on_hotp = Till::on(&store, &shop, "hotp");
    assert!(
        verifications::history(&store, &shop, &totp_dev, 100, 0)
            .await
            .unwrap()
            .is_empty()
    );

    let mut expected = Vec::new();
    for (i, (candidates, outcome, otp_ctr, matched_offset)) in [
        (
            totp(&[(STEP0 - 1, -1)]),
            RecordedOutcome::Verified,
            None,
            Some(-1),
        ),
        (nothing(), RecordedOutcome::Mismatch, None, None),
        (
            totp(&[(STEP0 - 1, -1)]),
            RecordedOutcome::Replayed,
            None,
            Some(-1),
        ),
        (
            totp(&[(STEP0 + 2, 2)]),
            RecordedOutcome::Verified,
            None,
            Some(2),
        ),
    ]
    .into_iter()
    .enumerate()
    {
        let reference = format!("order-{i}");
        let offset = i64::try_from(i).unwrap();
        let client = format!("198.51.100.{i}");
        verifications::verify(
            &store,
            &shop,
            &totp_dev,
            at(T0 + offset),
            &candidates,
            &Attempt {
                reference: (i != 1).then_some(reference.as_str()),
                client: &client,
                token_serial: (i != 2).then_some(offset + 10),
            },
            &POLICY,
        )
        .await
        .unwrap();
        expected.push(Verification {
            time: at(T0 + offset),
            outcome,
            reference: (i != 1).then_some(reference),
            otp_ctr,
            matched_offset,
            client,
            token_serial: (i != 2).then_some(offset + 10),
        });
    }
    expected.reverse();

    let all = verifications::history(&store, &shop, &totp_dev, 100, 0)
        .await
        .unwrap();
    let page = verifications::history(&store, &shop, &totp_dev, 2, 1)
        .await
        .unwrap();
    let past_the_end = verifications::history(&store, &shop, &totp_dev, 2, 4)
        .await
        .unwrap();

    assert_eq!(all, expected);
    assert_eq!(page, expected[1..3]);
    assert!(past_the_end.is_empty(), "{past_the_end:?}");
    for (outcome, name) in [
        (RecordedOutcome::Verified, "verified"),
        (RecordedOutcome::Mismatch, "mismatch"),
        (RecordedOutcome::Replayed, "replayed"),
        (RecordedOutcome::Locked, "locked"),
        (RecordedOutcome::DailyLimit, "daily_limit"),
    ] {
        assert_eq!(outcome.as_str(), name);
    }

    // HOTP records the counter; refusals are recorded too.
    on_hotp.check(at(T0), &hotp(&[2], (0, 10)), &POLICY).await;
    let strict = VerifyPolicy {
        max_failures: 1,
        ..POLICY
    };
    on_hotp.check(at(T0), &hotp(&[], (0, 13)), &strict).await;
    on_hotp.check(at(T0), &hotp(&[], (0, 13)), &strict).await;
    let hotp_history = verifications::history(&store, &shop, &hotp_dev, 10, 0)
        .await
        .unwrap();
    let summary: Vec<_> = hotp_history
        .iter()
        .map(|v| (v.outcome, v.otp_ctr, v.matched_offset))
        .collect();
    assert_eq!(
        summary,
        [
            (RecordedOutcome::Locked, None, None),
            (RecordedOutcome::Mismatch, None, None),
            (RecordedOutcome::Verified, Some(2), None),
        ]
    );
}

#[tokio::test]
async fn the_typed_code_is_never_stored() {
    let db = TestDb::new().await;
    let store = db.store();
    let client = store.pool().get().await.unwrap();
    let rows = client
        .query(
            "SELECT table_name::text AS t, column_name::text AS c
               FROM information_schema.columns
              WHERE table_schema = current_schema()
                AND table_name IN ('otp_verify_state', 'otp_verify_accepted', 'otp_verifications')
              ORDER BY table_name, ordinal_position",
            &[],
        )
        .await
        .unwrap();
    let columns: Vec<String> = rows
        .iter()
        .map(|row| {
            format!(
                "{}.{}",
                row.get::<_, String>("t"),
                row.get::<_, String>("c")
            )
        })
        .collect();

    // The store's API never receives the code; the schema has no place for it.
    assert!(columns.iter().all(|c| !c.contains("code")), "{columns:?}");
    assert_eq!(columns.len(), 7 + 7 + 10, "{columns:?}");
}

#[tokio::test]
async fn old_accepted_steps_and_counters_are_pruned() {
    let (_db, store, shop) = given_shop().await;
    given_device(&store, &shop, "totp", Algorithm::TotpWithoutPrice).await;
    given_device(&store, &shop, "hotp", Algorithm::HotpWithoutPrice).await;
    let on_totp = Till::on(&store, &shop, "totp");
    let on_hotp = Till::on(&store, &shop, "hotp");
    let accepted = |kind: i16| {
        let store = store.clone();
        async move {
            let client = store.pool().get().await.unwrap();
            let row = client
                .query_one(
                    "SELECT count(*) AS n FROM otp_verify_accepted WHERE kind = $1",
                    &[&kind],
                )
                .await
                .unwrap();
            row.get::<_, i64>("n")
        }
    };

    let verified = |outcome: Outcome| matches!(outcome, Outcome::Verified { .. });
    assert!(verified(
        on_totp.check(at(T0), &totp(&[(STEP0, 0)]), &POLICY).await
    ));
    // The table grows only when a value is accepted, and is pruned then: an attempt that
    // accepts nothing leaves it as it is.
    on_totp.check(at(T0 + 21 * 30), &nothing(), &POLICY).await;
    assert_eq!(accepted(1).await, 1);
    // Step 0 is still reachable from step 20 by a window of 10 steps (and 10 more of clock
    // skew): kept.
    assert!(verified(
        on_totp
            .check(at(T0 + 20 * 30), &totp(&[(STEP0 + 20, 0)]), &POLICY)
            .await
    ));
    assert_eq!(accepted(1).await, 2);
    // Accepting step 21 prunes step 0, and keeps step 20.
    assert!(verified(
        on_totp
            .check(at(T0 + 21 * 30), &totp(&[(STEP0 + 21, 0)]), &POLICY)
            .await
    ));
    assert_eq!(accepted(1).await, 2);

    // HOTP keeps at least the last look-ahead + 10 accepted counters, and prunes when the
    // counter enters a new block of 8 (migration 0017): at most look-ahead + 18 are kept.
    let mut most = 0;
    for counter in 0u64..25 {
        let range = (counter.saturating_sub(30), counter + 10);
        let outcome = on_hotp
            .check(at(T0), &hotp(&[counter], range), &POLICY)
            .await;
        assert_eq!(outcome, verified_counter(counter));
        most = most.max(accepted(2).await);
    }
    assert!(most <= 10 + 18, "{most} accepted counters kept");
    // Accepting 23 (stored 23, now 24: a new block) pruned the counters below
    // 23 - 10 - 10 = 3; accepting 24 pruned nothing.
    on_hotp.check(at(T0), &hotp(&[], (0, 35)), &POLICY).await;
    assert_eq!(accepted(2).await, 22);
    assert!(matches!(
        on_hotp.check(at(T0), &hotp(&[3], (0, 35)), &POLICY).await,
        Outcome::Replayed { .. }
    ));
    assert_eq!(
        on_hotp.check(at(T0), &hotp(&[2], (0, 35)), &POLICY).await,
        Outcome::Mismatch
    );
    // Accepting 25 to 31 (31 enters the next block) prunes below 31 - 20 = 11.
    for counter in 25u64..32 {
        let outcome = on_hotp
            .check(at(T0), &hotp(&[counter], (counter, counter + 10)), &POLICY)
            .await;
        assert_eq!(outcome, verified_counter(counter));
    }
    assert_eq!(accepted(2).await, 21);
    assert!(matches!(
        on_hotp.check(at(T0), &hotp(&[11], (0, 45)), &POLICY).await,
        Outcome::Replayed { .. }
    ));
    assert_eq!(
        on_hotp.check(at(T0), &hotp(&[10], (0, 45)), &POLICY).await,
        Outcome::Mismatch
    );
}

#[tokio::test]
async fn instances_are_isolated() {
    let (_db, store, alpha, beta) = given_alpha_and_beta().await;
    given_device(&store, &alpha, "pos", Algorithm::TotpWithoutPrice).await;
    given_device(&store, &beta, "pos", Algorithm::TotpWithoutPrice).await;
    let pos = device_id("pos");
    let (on_alpha, on_beta) = (
        Till::on(&store, &alpha, "pos"),
        Till::on(&store, &beta, "pos"),
    );
    let code = totp(&[(STEP0, 0)]);
    let strict = VerifyPolicy {
        max_failures: 1,
        ..POLICY
    };

    assert_eq!(
        on_alpha.check(at(T0), &code, &POLICY).await,
        verified_offset(0)
    );
    assert_eq!(
        on_beta.check(at(T0), &code, &POLICY).await,
        verified_offset(0)
    );
    // Locking alpha's device leaves beta's alone, and unlocking beta's
    // leaves alpha's locked.
    on_alpha.check(at(T0), &nothing(), &strict).await;
    verifications::unlock(&store, &beta, &pos).await.unwrap();
    assert!(matches!(
        on_alpha.check(at(T0), &nothing(), &strict).await,
        Outcome::Locked { .. }
    ));
    assert_eq!(
        on_beta.check(at(T0), &nothing(), &strict).await,
        Outcome::Mismatch
    );

    assert_eq!(
        outcomes(&store, &alpha, &pos).await,
        [
            RecordedOutcome::Locked,
            RecordedOutcome::Mismatch,
            RecordedOutcome::Verified
        ]
    );
    assert_eq!(
        outcomes(&store, &beta, &pos).await,
        [RecordedOutcome::Mismatch, RecordedOutcome::Verified]
    );
}

#[tokio::test]
async fn a_missing_device_is_not_found_and_a_deleted_one_forgets_its_state() {
    let till = given_pos(Algorithm::TotpWithoutPrice, 0).await;
    let code = totp(&[(STEP0, 0)]);

    for (instance, device) in [
        (till.shop.clone(), device_id("nope")),
        (instance_id("nope"), till.pos.clone()),
    ] {
        let verified = verifications::verify(
            &till.store,
            &instance,
            &device,
            at(T0),
            &code,
            &attempt(None),
            &POLICY,
        )
        .await;
        let unlocked = verifications::unlock(&till.store, &instance, &device).await;
        let history = verifications::history(&till.store, &instance, &device, 10, 0).await;
        assert!(
            matches!(verified, Err(StoreError::DeviceNotFound)),
            "{verified:?}"
        );
        assert!(
            matches!(unlocked, Err(StoreError::DeviceNotFound)),
            "{unlocked:?}"
        );
        assert!(
            matches!(history, Err(StoreError::DeviceNotFound)),
            "{history:?}"
        );
    }

    let strict = VerifyPolicy {
        max_failures: 1,
        ..POLICY
    };
    till.check(at(T0), &code, &strict).await;
    till.check(at(T0), &nothing(), &strict).await;
    otp_devices::delete(&till.store, &till.shop, &till.pos)
        .await
        .unwrap();
    given_device(&till.store, &till.shop, "pos", Algorithm::TotpWithoutPrice).await;

    assert!(
        outcomes(&till.store, &till.shop, &till.pos)
            .await
            .is_empty()
    );
    till.expect(at(T0), &code, &strict, verified_offset(0))
        .await;
}

#[tokio::test]
async fn deleting_an_instance_deletes_its_devices_history_and_accepted_values() {
    let till = given_pos(Algorithm::TotpWithoutPrice, 0).await;
    let other = given_instance(&till.store, "other").await;
    given_device(&till.store, &other, "pos", Algorithm::TotpWithoutPrice).await;
    let on_other = Till::on(&till.store, &other, "pos");
    let code = totp(&[(STEP0, 0)]);
    till.expect(at(T0), &code, &POLICY, verified_offset(0))
        .await;
    on_other
        .expect(at(T0), &code, &POLICY, verified_offset(0))
        .await;
    let rows = |table: &'static str| {
        let store = till.store.clone();
        async move {
            let client = store.pool().get().await.unwrap();
            client
                .query_one(&format!("SELECT count(*) AS n FROM {table}"), &[])
                .await
                .unwrap()
                .get::<_, i64>("n")
        }
    };
    assert_eq!(rows("otp_verifications").await, 2);
    assert_eq!(rows("otp_verify_accepted").await, 2);

    instances::delete(&till.store, &till.shop).await.unwrap();

    // The other instance's rows stay; the deleted one's are gone with its device.
    assert_eq!(rows("otp_verifications").await, 1);
    assert_eq!(rows("otp_verify_accepted").await, 1);
    assert_eq!(rows("otp_verify_state").await, 1);
    assert_eq!(
        outcomes(&till.store, &other, &device_id("pos")).await.len(),
        1
    );
}
