//! §7: authentication, scopes, the order of checks, and instance isolation.

use otp_store::{InstanceId, instances, tokens};
use otp_tests::{RFC_KEY, assert_taler_error, spawn_app};
use reqwest::{Method, StatusCode};
use serde_json::json;

#[tokio::test]
async fn missing_or_wrong_credentials_are_401() {
    let app = spawn_app().await;
    let none = app
        .request(Method::GET, "/private/otp-devices", None, None)
        .await;
    assert_taler_error(&none, StatusCode::UNAUTHORIZED, 2015);
    let wrong = app
        .request(
            Method::GET,
            "/private/otp-devices",
            Some("secret-token:nope"),
            None,
        )
        .await;
    assert_taler_error(&wrong, StatusCode::UNAUTHORIZED, 2015);
    let garbage = app
        .client
        .get(format!("{}/private/otp-devices", app.address))
        .header("Authorization", "Basic dXNlcjpwdw==")
        .send()
        .await
        .unwrap();
    assert_eq!(garbage.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn token_without_bearer_prefix_is_accepted() {
    let app = spawn_app().await;
    let reply = app
        .client
        .get(format!("{}/private/otp-devices", app.address))
        .header("Authorization", app.read_token.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), StatusCode::OK);
}

#[tokio::test]
async fn readonly_token_reads_but_cannot_write() {
    let app = spawn_app().await;
    app.add_device("d", RFC_KEY, json!(3)).await;
    let read = Some(app.read_token.as_str());
    assert_eq!(
        app.request(Method::GET, "/private/otp-devices", read, None)
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(
        app.request(Method::GET, "/private/otp-devices/d", read, None)
            .await
            .status,
        StatusCode::OK
    );
    let body = json!({"otp_device_id": "e", "otp_device_description": "d", "otp_key": RFC_KEY, "otp_algorithm": 1});
    for (method, path, body) in [
        (Method::POST, "/private/otp-devices", Some(&body)),
        (
            Method::PATCH,
            "/private/otp-devices/d",
            Some(&json!({"otp_device_description": "x"})),
        ),
        (Method::DELETE, "/private/otp-devices/d", None),
        (
            Method::POST,
            "/private/otp-devices/d/confirmations",
            Some(&json!({})),
        ),
    ] {
        let reply = app.request(method.clone(), path, read, body).await;
        assert_taler_error(&reply, StatusCode::FORBIDDEN, 16);
    }
    assert_eq!(
        app.get("/private/otp-devices/d").await.json["otp_ctr"],
        0,
        "nothing changed"
    );
}

#[tokio::test]
async fn order_scopes_grant_no_otp_permission_and_all_grants_everything() {
    let app = spawn_app().await;
    let admin = InstanceId::parse("admin").unwrap();
    let (_, order) = tokens::create(&app.store, &admin, "order-full", None, "")
        .await
        .unwrap();
    let reply = app
        .request(
            Method::GET,
            "/private/otp-devices",
            Some(order.expose()),
            None,
        )
        .await;
    assert_taler_error(&reply, StatusCode::FORBIDDEN, 16);
    let (_, all) = tokens::create(&app.store, &admin, "all", None, "")
        .await
        .unwrap();
    let body = json!({"otp_device_id": "e", "otp_device_description": "d", "otp_key": RFC_KEY, "otp_algorithm": 1});
    let reply = app
        .request(
            Method::POST,
            "/private/otp-devices",
            Some(all.expose()),
            Some(&body),
        )
        .await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn checks_run_in_order_instance_then_credentials_then_permission_then_request() {
    let app = spawn_app().await;
    // Unknown instance wins over missing credentials and a bad body.
    let reply = app
        .request(
            Method::POST,
            "/instances/ghost/private/otp-devices",
            None,
            Some(&json!({"bad": 1})),
        )
        .await;
    assert_taler_error(&reply, StatusCode::NOT_FOUND, 2000);
    // Bad credentials win over a bad body.
    let reply = app
        .request(
            Method::POST,
            "/private/otp-devices",
            Some("secret-token:x"),
            Some(&json!({})),
        )
        .await;
    assert_taler_error(&reply, StatusCode::UNAUTHORIZED, 2015);
    // Missing permission wins over a bad body and an unknown device.
    let read = Some(app.read_token.as_str());
    let reply = app
        .request(
            Method::PATCH,
            "/private/otp-devices/ghost",
            read,
            Some(&json!({})),
        )
        .await;
    assert_taler_error(&reply, StatusCode::FORBIDDEN, 16);
    // A bad query parameter is checked after authentication.
    let reply = app
        .request(
            Method::GET,
            "/private/otp-devices/ghost?faketime=x",
            None,
            None,
        )
        .await;
    assert_taler_error(&reply, StatusCode::UNAUTHORIZED, 2015);
}

#[tokio::test]
async fn instances_are_isolated() {
    let app = spawn_app().await;
    let b = InstanceId::parse("shop-b").unwrap();
    instances::create(&app.store, &b, "Shop B").await.unwrap();
    let (_, b_token) = tokens::create(&app.store, &b, "write", None, "")
        .await
        .unwrap();
    let b_token = Some(b_token.expose());
    app.add_device("secret-till", RFC_KEY, json!(3)).await;

    // B's token on A's (the default instance's) paths: 401, never A's data.
    for (method, path) in [
        (Method::GET, "/private/otp-devices"),
        (Method::GET, "/instances/admin/private/otp-devices"),
        (Method::GET, "/private/otp-devices/secret-till"),
        (Method::DELETE, "/private/otp-devices/secret-till"),
        (
            Method::POST,
            "/instances/admin/private/otp-devices/secret-till/confirmations",
        ),
    ] {
        let reply = app.request(method, path, b_token, Some(&json!({}))).await;
        assert_taler_error(&reply, StatusCode::UNAUTHORIZED, 2015);
    }
    // B's own view never contains A's device, even when guessing its id.
    let list = app
        .request(
            Method::GET,
            "/instances/shop-b/private/otp-devices",
            b_token,
            None,
        )
        .await;
    assert_eq!(list.json, json!({"otp_devices": []}));
    let guess = app
        .request(
            Method::GET,
            "/instances/shop-b/private/otp-devices/secret-till",
            b_token,
            None,
        )
        .await;
    assert_taler_error(&guess, StatusCode::NOT_FOUND, 2021);
    let delete = app
        .request(
            Method::DELETE,
            "/instances/shop-b/private/otp-devices/secret-till",
            b_token,
            None,
        )
        .await;
    assert_taler_error(&delete, StatusCode::NOT_FOUND, 2021);
    // The same id in B is a different device.
    let body = json!({"otp_device_id": "secret-till", "otp_device_description": "B's", "otp_key": "AAISEM2EKVTHPCEZ", "otp_algorithm": 1});
    let created = app
        .request(
            Method::POST,
            "/instances/shop-b/private/otp-devices",
            b_token,
            Some(&body),
        )
        .await;
    assert_eq!(created.status, StatusCode::NO_CONTENT);
    let a_view = app.get("/private/otp-devices/secret-till").await;
    assert_eq!(a_view.json["device_description"], "device secret-till");
    assert_eq!(a_view.json["otp_algorithm"], 3);
    // A's token on B: 401.
    let reply = app
        .request(
            Method::GET,
            "/instances/shop-b/private/otp-devices",
            Some(&app.write_token),
            None,
        )
        .await;
    assert_taler_error(&reply, StatusCode::UNAUTHORIZED, 2015);
}

#[tokio::test]
async fn expired_and_revoked_tokens_are_rejected() {
    let app = spawn_app().await;
    let admin = InstanceId::parse("admin").unwrap();
    let past = chrono::Utc::now() - chrono::Duration::seconds(5);
    let (_, expired) = tokens::create(&app.store, &admin, "write", Some(past), "")
        .await
        .unwrap();
    let reply = app
        .request(
            Method::GET,
            "/private/otp-devices",
            Some(expired.expose()),
            None,
        )
        .await;
    assert_taler_error(&reply, StatusCode::UNAUTHORIZED, 2015);

    let (token, secret) = tokens::create(&app.store, &admin, "write", None, "")
        .await
        .unwrap();
    assert_eq!(
        app.request(
            Method::GET,
            "/private/otp-devices",
            Some(secret.expose()),
            None
        )
        .await
        .status,
        StatusCode::OK
    );
    tokens::revoke(&app.store, &admin, token.serial)
        .await
        .unwrap();
    let revoked = otp_tests::eventually(std::time::Duration::from_secs(3), async || {
        app.request(
            Method::GET,
            "/private/otp-devices",
            Some(secret.expose()),
            None,
        )
        .await
        .status
            == StatusCode::UNAUTHORIZED
    })
    .await;
    assert!(
        revoked,
        "revoked token still accepted after the staleness bound"
    );
}
