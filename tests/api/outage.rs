//! The database goes away and comes back: 503 with Retry-After during, 200 after, no restart.

use std::time::{Duration, Instant};

use otp_store::otp_devices::{self, OtpDevicePatch};
use otp_store::{InstanceId, OtpDeviceId};
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

/// A change committed after the database came back but before the change listener reconnected
/// sends a notification nobody hears: the listener's resynchronisation on reconnect must drop
/// what the server cached meanwhile, or the listener's confirmations would keep it "current".
#[tokio::test]
async fn caches_are_cleared_when_the_change_listener_reconnects() {
    let (app, proxy) = spawn_app_behind_proxy(|settings| {
        settings.cache_ttl = Duration::from_secs(60);
    })
    .await;
    app.add_device("d", RFC_KEY, json!(1)).await;
    let description =
        async || app.get("/private/otp-devices/d").await.json["device_description"].clone();

    proxy.set_down(true);
    // Long enough for the listener's reconnect attempts to back off to their longest interval.
    tokio::time::sleep(Duration::from_secs(3)).await;
    proxy.set_down(false);
    let served = otp_tests::eventually(Duration::from_secs(5), async || {
        app.get("/private/otp-devices/d").await.status == StatusCode::OK
    })
    .await;
    assert!(served, "no recovery after the database came back");
    // Cached again, before the listener is back; now changed behind the server's back.
    assert_eq!(description().await, "device d");
    let admin = InstanceId::parse("admin").unwrap();
    let id = OtpDeviceId::parse("d").unwrap();
    let patch = OtpDevicePatch {
        description: "changed while nobody listened".into(),
        key: None,
        algorithm: None,
        counter: None,
    };
    otp_devices::update(&app.store, &admin, &id, &patch)
        .await
        .unwrap();

    let started = Instant::now();
    let fresh = otp_tests::eventually(Duration::from_secs(5), async || {
        description().await == "changed while nobody listened"
    })
    .await;
    assert!(
        fresh,
        "still the cached description after {:?}",
        started.elapsed()
    );
}
