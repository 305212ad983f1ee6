//! §9: `POST …/otp-devices/$ID/confirmations`, the payment-confirmation extension.

use std::collections::HashSet;

use otp_tests::{RFC_KEY, assert_taler_error, spawn_app};
use reqwest::{Method, StatusCode};
use serde_json::json;

#[tokio::test]
async fn totp_confirmation_equals_get_one_and_changes_nothing() {
    let app = spawn_app().await;
    app.add_device("t", RFC_KEY, json!(2)).await;
    let reply = app.confirm("t", &json!({"price": "EUR:1.5"})).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    let ts = reply.json["otp_timestamp"].as_u64().unwrap();
    let get = app
        .get(&format!(
            "/private/otp-devices/t?faketime={ts}&price=EUR%3A1.50"
        ))
        .await;
    assert_eq!(reply.json["pos_confirmation"], get.json["otp_code"]);
    assert_eq!(get.json["otp_ctr"], 0);
}

#[tokio::test]
async fn hotp_confirmation_uses_and_advances_the_counter() {
    let app = spawn_app().await;
    app.add_device("h", RFC_KEY, json!(3)).await;
    let expected = ["84755224", "94287082"];
    for (counter, code) in expected.iter().enumerate() {
        let reply = app.confirm("h", &json!({})).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
        assert_eq!(reply.json["pos_confirmation"], *code);
        assert_eq!(reply.json["otp_ctr"], counter as u64);
    }
    assert_eq!(app.get("/private/otp-devices/h").await.json["otp_ctr"], 2);
    // An empty body is accepted too.
    let path = "/private/otp-devices/h/confirmations";
    let reply = app
        .request(Method::POST, path, Some(&app.write_token), None)
        .await;
    assert_eq!(reply.status, StatusCode::OK);
}

#[tokio::test]
async fn none_is_409_and_missing_price_is_400_25_without_advancing() {
    let app = spawn_app().await;
    app.add_device("n", RFC_KEY, json!("NONE")).await;
    app.add_device("hp", RFC_KEY, json!("HOTP_WITH_PRICE"))
        .await;
    let reply = app.confirm("n", &json!({})).await;
    assert_taler_error(&reply, StatusCode::CONFLICT, 26);
    let reply = app.confirm("hp", &json!({"price": null})).await;
    assert_taler_error(&reply, StatusCode::BAD_REQUEST, 25);
    let reply = app
        .confirm("hp", &json!({"price": "EUR:1.123456789"}))
        .await;
    assert_taler_error(&reply, StatusCode::BAD_REQUEST, 26);
    assert_eq!(app.get("/private/otp-devices/hp").await.json["otp_ctr"], 0);
    let reply = app.confirm("hp", &json!({"price": "EUR:1.5"})).await;
    let key = otp_algo::OtpKey::from_base32(RFC_KEY).unwrap();
    let price = otp_algo::Amount::parse("EUR:1.5").unwrap();
    let expected =
        otp_algo::confirmation(&key, otp_algo::Algorithm::HotpWithPrice, Some(&price), 0, 0)
            .unwrap();
    assert_eq!(reply.json["pos_confirmation"], expected);
    assert_taler_error(
        &app.confirm("ghost", &json!({})).await,
        StatusCode::NOT_FOUND,
        2021,
    );
}

#[tokio::test]
async fn sixty_four_concurrent_confirmations_get_distinct_codes_and_advance_by_64() {
    let app = spawn_app().await;
    let body = json!({"otp_device_id": "busy", "otp_device_description": "d", "otp_key": RFC_KEY, "otp_algorithm": 3, "otp_ctr": 1000});
    assert_eq!(
        app.post("/private/otp-devices", &body).await.status,
        StatusCode::NO_CONTENT
    );
    let empty = json!({});
    let calls = (0..64).map(|_| app.confirm("busy", &empty));
    let replies = futures_util::future::join_all(calls).await;
    let mut codes = HashSet::new();
    let mut counters = HashSet::new();
    for reply in &replies {
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
        codes.insert(reply.json["pos_confirmation"].as_str().unwrap().to_owned());
        counters.insert(reply.json["otp_ctr"].as_u64().unwrap());
    }
    assert_eq!(codes.len(), 64, "codes repeated");
    assert_eq!(counters, (1000..1064).collect::<HashSet<u64>>());
    assert_eq!(
        app.get("/private/otp-devices/busy").await.json["otp_ctr"],
        1064
    );
}

#[tokio::test]
async fn a_confirmation_follows_the_algorithm_a_patch_set_and_moves_only_hotp_counters() {
    let app = spawn_app().await;
    app.add_device("d", RFC_KEY, json!(1)).await;
    let empty = json!({});
    let confirm = || app.confirm("d", &empty);
    // Cached as TOTP (GET one): a confirmation is the TOTP answer and moves nothing.
    assert_eq!(app.get("/private/otp-devices/d").await.json["otp_ctr"], 0);
    let reply = confirm().await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(reply.json["pos_confirmation"].as_str().unwrap().len(), 44);
    let patches: Vec<_> = (0..5)
        .map(|algorithm| json!({"otp_device_description": "d", "otp_algorithm": algorithm}))
        .collect();
    let patch = |algorithm: usize| app.patch("/private/otp-devices/d", &patches[algorithm]);
    assert_eq!(patch(3).await.status, StatusCode::NO_CONTENT);
    for (counter, code) in ["84755224", "94287082"].iter().enumerate() {
        let reply = confirm().await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
        assert_eq!(reply.json["pos_confirmation"], *code);
        assert_eq!(reply.json["otp_ctr"], counter as u64);
    }
    assert_eq!(app.get("/private/otp-devices/d").await.json["otp_ctr"], 2);
    // Back to TOTP: the counter stays where the confirmations left it.
    assert_eq!(patch(1).await.status, StatusCode::NO_CONTENT);
    let reply = confirm().await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(reply.json["otp_ctr"], 2);
    assert_eq!(reply.json["pos_confirmation"].as_str().unwrap().len(), 44);
    assert_eq!(app.get("/private/otp-devices/d").await.json["otp_ctr"], 2);
    // HOTP with price: a request without price moves nothing, one with a price does.
    assert_eq!(patch(4).await.status, StatusCode::NO_CONTENT);
    assert_taler_error(&confirm().await, StatusCode::BAD_REQUEST, 25);
    let priced = app.confirm("d", &json!({"price": "EUR:1"})).await;
    assert_eq!(priced.status, StatusCode::OK, "{}", priced.text);
    assert_eq!(priced.json["otp_ctr"], 2);
    assert_eq!(app.get("/private/otp-devices/d").await.json["otp_ctr"], 3);
}

#[tokio::test]
async fn the_device_list_shows_this_servers_writes_at_once() {
    let app = spawn_app().await;
    let ids = |reply: otp_tests::Reply| {
        reply.json["otp_devices"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| {
                format!(
                    "{}={}",
                    d["otp_device_id"].as_str().unwrap(),
                    d["device_description"].as_str().unwrap()
                )
            })
            .collect::<Vec<_>>()
    };
    assert!(ids(app.get("/private/otp-devices").await).is_empty());
    app.add_device("a", RFC_KEY, json!(1)).await;
    app.add_device("b", RFC_KEY, json!(3)).await;
    assert_eq!(ids(app.get("/private/otp-devices").await).len(), 2);
    let patched = app
        .patch(
            "/private/otp-devices/b",
            &json!({"otp_device_description": "renamed"}),
        )
        .await;
    assert_eq!(patched.status, StatusCode::NO_CONTENT);
    let confirmed = app.confirm("b", &json!({})).await;
    assert_eq!(confirmed.status, StatusCode::OK);
    assert_eq!(
        app.delete("/private/otp-devices/a").await.status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(ids(app.get("/private/otp-devices").await), ["b=renamed"]);
}
