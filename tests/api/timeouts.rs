//! §8: a statement that waits for a lock longer than `[otp] LOCK_TIMEOUT_MS`, or runs longer
//! than `[otp] STATEMENT_TIMEOUT_MS`, is answered 503 with `Retry-After` (code 51), not hung.

use std::time::{Duration, Instant};

use otp_tests::{RFC_KEY, TestApp, assert_taler_error, retry_after, spawn_app_with};
use reqwest::StatusCode;
use serde_json::json;

/// POSTs a confirmation of `device`, failing the test if no answer comes within 10 s.
async fn confirm(app: &TestApp, device: &str) -> (otp_tests::Reply, Duration) {
    let started = Instant::now();
    let path = format!("/private/otp-devices/{device}/confirmations");
    let reply = tokio::time::timeout(Duration::from_secs(10), app.post(&path, &json!({})))
        .await
        .expect("the request hung behind the lock");
    (reply, started.elapsed())
}

fn assert_busy(reply: &otp_tests::Reply) {
    assert_taler_error(reply, StatusCode::SERVICE_UNAVAILABLE, 51);
    let retry_after = retry_after(reply);
    assert!(retry_after >= 1, "Retry-After {retry_after}");
}

/// Runs `lock` in a transaction of its own, asks for a confirmation of `hotp` and asserts the
/// busy answer within 0.4–3 s (`setting` is 500 ms); then releases the lock and returns the
/// answer to the next confirmation, asserted 200.
async fn confirm_behind(app: &TestApp, lock: &str, setting: &str) -> otp_tests::Reply {
    let mut holder = app.store.pool().get().await.unwrap();
    let transaction = holder.transaction().await.unwrap();
    transaction.batch_execute(lock).await.unwrap();

    let (reply, waited) = confirm(app, "hotp").await;
    assert_busy(&reply);
    assert!(
        waited >= Duration::from_millis(400) && waited < Duration::from_secs(3),
        "answered after {waited:?} with {setting} = 500"
    );

    transaction.rollback().await.unwrap();
    let (reply, _) = confirm(app, "hotp").await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    reply
}

#[tokio::test]
async fn a_row_lock_held_too_long_is_503_with_retry_after_within_the_lock_timeout() {
    let app = spawn_app_with(|settings| {
        settings.lock_timeout = Duration::from_millis(500);
    })
    .await;
    app.add_device("hotp", RFC_KEY, json!(3)).await;
    let lock = "SELECT 1 FROM otp_devices WHERE otp_device_id = 'hotp' FOR UPDATE";
    let reply = confirm_behind(&app, lock, "LOCK_TIMEOUT_MS").await;
    assert_eq!(
        reply.json["otp_ctr"], 0,
        "the refused confirmation took a counter"
    );
}

#[tokio::test]
async fn a_statement_running_too_long_is_503_within_the_statement_timeout() {
    let app = spawn_app_with(|settings| {
        settings.lock_timeout = Duration::ZERO;
        settings.statement_timeout = Duration::from_millis(500);
    })
    .await;
    app.add_device("hotp", RFC_KEY, json!(3)).await;
    // Without a lock timeout, the confirmation waits for the table lock until the statement
    // timeout cancels it.
    let lock = "LOCK TABLE otp_devices IN ACCESS EXCLUSIVE MODE";
    confirm_behind(&app, lock, "STATEMENT_TIMEOUT_MS").await;
}
