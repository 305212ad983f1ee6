//! §7: authentication, scopes, the order of checks, and instance isolation.

use otp_store::{InstanceId, tokens};
use otp_tests::{RFC_KEY, TestApp, assert_taler_error, spawn_app};
use reqwest::{Method, StatusCode};
use serde_json::json;

/// The status of `GET /private/otp-devices` with `value` as the whole `Authorization` header.
async fn with_authorization(app: &TestApp, value: &str) -> StatusCode {
    let url = format!("{}/private/otp-devices", app.address);
    let request = app.client.get(url).header("Authorization", value);
    request.send().await.unwrap().status()
}

#[tokio::test]
async fn missing_or_wrong_credentials_are_401() {
    let app = spawn_app().await;
    let none = app
        .anonymous(Method::GET, "/private/otp-devices", None)
        .await;
    assert_taler_error(&none, StatusCode::UNAUTHORIZED, 2015);
    let wrong = app
        .get_as("secret-token:nope", "/private/otp-devices")
        .await;
    assert_taler_error(&wrong, StatusCode::UNAUTHORIZED, 2015);
    let garbage = with_authorization(&app, "Basic dXNlcjpwdw==").await;
    assert_eq!(garbage, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn token_without_bearer_prefix_is_accepted() {
    let app = spawn_app().await;
    let reply = with_authorization(&app, &app.read_token).await;
    assert_eq!(reply, StatusCode::OK);
}

#[tokio::test]
async fn readonly_token_reads_but_cannot_write() {
    let app = spawn_app().await;
    app.add_device("d", RFC_KEY, json!(3)).await;
    let read = Some(app.read_token.as_str());
    for path in ["/private/otp-devices", "/private/otp-devices/d"] {
        assert_eq!(
            app.get_as(&app.read_token, path).await.status,
            StatusCode::OK
        );
    }
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
    let order = app.token("order-full").await;
    let reply = app.get_as(&order, "/private/otp-devices").await;
    assert_taler_error(&reply, StatusCode::FORBIDDEN, 16);
    let all = app.token("all").await;
    let body = json!({"otp_device_id": "e", "otp_device_description": "d", "otp_key": RFC_KEY, "otp_algorithm": 1});
    let reply = app.post_as(&all, "/private/otp-devices", &body).await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn checks_run_in_order_instance_then_credentials_then_permission_then_request() {
    let app = spawn_app().await;
    // Unknown instance wins over missing credentials and a bad body.
    let body = json!({"bad": 1});
    let ghost = "/instances/ghost/private/otp-devices";
    let reply = app.anonymous(Method::POST, ghost, Some(&body)).await;
    assert_taler_error(&reply, StatusCode::NOT_FOUND, 2000);
    // Bad credentials win over a bad body.
    let reply = app
        .post_as("secret-token:x", "/private/otp-devices", &json!({}))
        .await;
    assert_taler_error(&reply, StatusCode::UNAUTHORIZED, 2015);
    // Missing permission wins over a bad body and an unknown device.
    let reply = app
        .send_as(
            &app.read_token,
            Method::PATCH,
            "/private/otp-devices/ghost",
            &json!({}),
        )
        .await;
    assert_taler_error(&reply, StatusCode::FORBIDDEN, 16);
    // A bad query parameter is checked after authentication.
    let bad_query = "/private/otp-devices/ghost?faketime=x";
    let reply = app.anonymous(Method::GET, bad_query, None).await;
    assert_taler_error(&reply, StatusCode::UNAUTHORIZED, 2015);
}

#[tokio::test]
async fn instances_are_isolated() {
    let app = spawn_app().await;
    let b_token = app.new_instance("shop-b", "Shop B").await;
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
        let reply = app.send_as(&b_token, method, path, &json!({})).await;
        assert_taler_error(&reply, StatusCode::UNAUTHORIZED, 2015);
    }
    // B's own view never contains A's device, even when guessing its id.
    let b_devices = "/instances/shop-b/private/otp-devices";
    let list = app.get_as(&b_token, b_devices).await;
    assert_eq!(list.json, json!({"otp_devices": []}));
    let b_till = format!("{b_devices}/secret-till");
    let guess = app.get_as(&b_token, &b_till).await;
    assert_taler_error(&guess, StatusCode::NOT_FOUND, 2021);
    let delete = app.delete_as(&b_token, &b_till).await;
    assert_taler_error(&delete, StatusCode::NOT_FOUND, 2021);
    // The same id in B is a different device.
    let body = json!({"otp_device_id": "secret-till", "otp_device_description": "B's", "otp_key": "AAISEM2EKVTHPCEZ", "otp_algorithm": 1});
    let created = app.post_as(&b_token, b_devices, &body).await;
    assert_eq!(created.status, StatusCode::NO_CONTENT);
    let a_view = app.get("/private/otp-devices/secret-till").await;
    assert_eq!(a_view.json["device_description"], "device secret-till");
    assert_eq!(a_view.json["otp_algorithm"], 3);
    // A's token on B: 401.
    let reply = app.get_as(&app.write_token, b_devices).await;
    assert_taler_error(&reply, StatusCode::UNAUTHORIZED, 2015);
}

#[tokio::test]
async fn expired_and_revoked_tokens_are_rejected() {
    let app = spawn_app().await;
    let path = "/private/otp-devices";
    let past = chrono::Utc::now() - chrono::Duration::seconds(5);
    let (_, expired) = app.token_until("write", Some(past)).await;
    let reply = app.get_as(&expired, path).await;
    assert_taler_error(&reply, StatusCode::UNAUTHORIZED, 2015);

    let (serial, secret) = app.token_until("write", None).await;
    assert_eq!(app.get_as(&secret, path).await.status, StatusCode::OK);
    let admin = InstanceId::parse("admin").unwrap();
    tokens::revoke(&app.store, &admin, serial).await.unwrap();
    let revoked = otp_tests::eventually(std::time::Duration::from_secs(3), async || {
        app.get_as(&secret, path).await.status == StatusCode::UNAUTHORIZED
    })
    .await;
    assert!(
        revoked,
        "revoked token still accepted after the staleness bound"
    );
}
