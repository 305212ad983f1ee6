//! Two server processes on one database: caches are invalidated across them within the bound.

use std::time::{Duration, Instant};

use otp_store::{InstanceId, tokens};
use otp_tests::{RFC_KEY, spawn_app, spawn_server};
use reqwest::StatusCode;
use serde_json::json;

/// The staleness bound the servers run with in these tests (`CACHE_TTL_MS`).
const BOUND: Duration = Duration::from_millis(1000);

#[tokio::test]
async fn key_change_and_revocation_through_one_server_reach_the_other_within_the_bound() {
    let app = spawn_app_with_bound().await;
    let (other, _handle, _) = spawn_server(&app.db.url(), |s| s.cache_ttl = BOUND).await;
    app.add_device("d", RFC_KEY, json!(1)).await;
    let get_other = |token: String| {
        let client = app.client.clone();
        let url = format!("{other}/private/otp-devices/d?faketime=59");
        async move {
            let reply = client
                .get(url)
                .header("Authorization", format!("Bearer {token}"))
                .send()
                .await
                .unwrap();
            let status = reply.status();
            (
                status,
                reply.json::<serde_json::Value>().await.unwrap_or_default(),
            )
        }
    };
    // Warm the other server's caches.
    let (status, body) = get_other(app.write_token.clone()).await;
    assert_eq!(status, StatusCode::OK);
    let old_code = body["otp_code"].as_str().unwrap().to_owned();

    let patched = app
        .patch(
            "/private/otp-devices/d",
            &json!({"otp_device_description": "d", "otp_key": "AAISEM2EKVTHPCEZ"}),
        )
        .await;
    assert_eq!(patched.status, StatusCode::NO_CONTENT);
    let changed_at = Instant::now();
    loop {
        let (_, body) = get_other(app.write_token.clone()).await;
        if body["otp_code"].as_str() != Some(old_code.as_str()) {
            break;
        }
        assert!(
            changed_at.elapsed() <= BOUND,
            "old key's code served after the bound"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // After the bound, no answer carries the old code.
    tokio::time::sleep(BOUND).await;
    for _ in 0..20 {
        let (_, body) = get_other(app.write_token.clone()).await;
        assert_ne!(body["otp_code"].as_str(), Some(old_code.as_str()));
    }

    let admin = InstanceId::parse("admin").unwrap();
    let (token, secret) = tokens::create(&app.store, &admin, "write", None, "")
        .await
        .unwrap();
    assert_eq!(
        get_other(secret.expose().to_owned()).await.0,
        StatusCode::OK
    );
    tokens::revoke(&app.store, &admin, token.serial)
        .await
        .unwrap();
    let revoked_at = Instant::now();
    while get_other(secret.expose().to_owned()).await.0 != StatusCode::UNAUTHORIZED {
        assert!(
            revoked_at.elapsed() <= BOUND,
            "revoked token accepted after the bound"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn spawn_app_with_bound() -> otp_tests::TestApp {
    let app = spawn_app().await;
    assert!(Duration::from_millis(1000) >= BOUND);
    app
}
