//! The database goes away and comes back: 503 with Retry-After during, 200 after, no restart.

use std::time::{Duration, Instant};

use otp_tests::{RFC_KEY, assert_taler_error, spawn_app_behind_proxy};
use reqwest::StatusCode;
use serde_json::json;

#[tokio::test]
async fn database_outage_gives_503_then_recovers_without_restart() {
    let (app, proxy) = spawn_app_behind_proxy(|settings| {
        settings.cache_ttl = Duration::ZERO;
    })
    .await;
    app.add_device("d", RFC_KEY, json!(1)).await;
    assert_eq!(
        app.get("/private/otp-devices/d").await.status,
        StatusCode::OK
    );

    proxy.set_down(true);
    let started = Instant::now();
    let reply = app.get("/private/otp-devices/d").await;
    assert_taler_error(&reply, StatusCode::SERVICE_UNAVAILABLE, 51);
    assert!(reply.headers.get("retry-after").is_some(), "no Retry-After");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "503 took {:?}",
        started.elapsed()
    );
    assert!(
        !reply.text.to_lowercase().contains("connection"),
        "internal text leaked: {}",
        reply.text
    );

    proxy.set_down(false);
    let recovered = otp_tests::eventually(Duration::from_secs(10), async || {
        app.get("/private/otp-devices/d").await.status == StatusCode::OK
    })
    .await;
    assert!(recovered, "no recovery after the database came back");
}
