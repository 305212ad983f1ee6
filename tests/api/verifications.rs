//! §10: verifying a typed code once — outcomes, windows, look-ahead, replays, concurrency,
//! limits, unlock, history, permissions and isolation.

use std::time::Duration;

use otp_algo::{Algorithm, Amount, OtpKey, hotp_code, totp_counter};
use otp_store::{InstanceId, instances, tokens};
use otp_tests::{RFC_KEY, TestApp, assert_taler_error, spawn_app, spawn_app_with};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// The code of `key` (TOTP, 8 digits) for the step `offset` steps from now, optionally bound to
/// `price`.
fn totp_code(key: &str, algorithm: Algorithm, price: Option<&str>, offset: i64) -> String {
    let key = OtpKey::from_base32(key).unwrap();
    let now = u64::try_from(chrono::Utc::now().timestamp()).unwrap();
    let price = price.map(|p| Amount::parse(p).unwrap());
    // The middle code of the confirmation string at a time `offset` steps away.
    let at = if offset < 0 {
        now - offset.unsigned_abs() * 30
    } else {
        now + offset.unsigned_abs() * 30
    };
    let codes = otp_algo::confirmation(&key, algorithm, price.as_ref(), at, 0).unwrap();
    assert_eq!(totp_counter(at, 0), totp_counter(now, offset));
    codes.split('\n').nth(2).unwrap().to_owned()
}

fn hotp(key: &str, counter: u64) -> String {
    hotp_code(OtpKey::from_base32(key).unwrap().as_bytes(), counter)
}

/// Waits until at least 4 s remain in the current 30-s step, so that a code computed now is
/// still for the same step when the server checks it.
async fn settle() {
    let now = chrono::Utc::now().timestamp();
    let left = 30 - now.rem_euclid(30);
    if left < 4 {
        tokio::time::sleep(Duration::from_secs(u64::try_from(left).unwrap() + 1)).await;
    }
}

async fn verify(app: &TestApp, device: &str, body: Value) -> otp_tests::Reply {
    app.post(
        &format!("/private/otp-devices/{device}/verifications"),
        &body,
    )
    .await
}

async fn add(app: &TestApp, id: &str, algorithm: u8, counter: u64) {
    let reply = app
        .post(
            "/private/otp-devices",
            &json!({"otp_device_id": id, "otp_device_description": id, "otp_key": RFC_KEY,
                    "otp_algorithm": algorithm, "otp_ctr": counter}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT, "{}", reply.text);
}

#[tokio::test]
async fn a_totp_code_verifies_once_then_replays_with_the_first_reference() {
    let app = spawn_app().await;
    add(&app, "t", 1, 0).await;
    settle().await;
    let code = totp_code(RFC_KEY, Algorithm::TotpWithoutPrice, None, 0);
    let first = verify(&app, "t", json!({"code": code, "reference": "order-1"})).await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.text);
    assert_eq!(first.json["verified"], true);
    assert_eq!(first.json["matched_offset"], 0);
    assert!(first.json["otp_timestamp"].as_u64().unwrap() > 1_700_000_000);
    let again = verify(&app, "t", json!({"code": code, "reference": "order-2"})).await;
    assert_eq!(
        again.json,
        json!({"verified": false, "reason": "replayed", "reference": "order-1"})
    );
    let wrong = verify(&app, "t", json!({"code": "00000000"})).await;
    let wrong_is_right = wrong.json["verified"] == true;
    assert!(wrong_is_right || wrong.json == json!({"verified": false, "reason": "mismatch"}));
}

#[tokio::test]
async fn the_window_accepts_w_steps_each_way_and_refuses_beyond() {
    let app = spawn_app().await;
    for (i, offset) in [-3i64, -2, 2, 3].into_iter().enumerate() {
        let id = format!("w{i}");
        add(&app, &id, 1, 0).await;
        settle().await;
        let code = totp_code(RFC_KEY, Algorithm::TotpWithoutPrice, None, offset);
        let reply = verify(&app, &id, json!({"code": code})).await;
        assert_eq!(reply.status, StatusCode::OK);
        if offset.abs() <= 2 {
            assert_eq!(
                reply.json["verified"], true,
                "offset {offset}: {}",
                reply.text
            );
            assert_eq!(reply.json["matched_offset"], offset);
        } else {
            assert_eq!(
                reply.json["reason"], "mismatch",
                "offset {offset}: {}",
                reply.text
            );
        }
    }
}

#[tokio::test]
async fn with_price_codes_verify_once_per_amount_and_need_the_price() {
    let app = spawn_app().await;
    add(&app, "p", 2, 0).await;
    settle().await;
    let missing = verify(&app, "p", json!({"code": "12345678"})).await;
    assert_taler_error(&missing, StatusCode::BAD_REQUEST, 25);
    for price in ["EUR:1.5", "EUR:2"] {
        let code = totp_code(RFC_KEY, Algorithm::TotpWithPrice, Some(price), 0);
        let reply = verify(&app, "p", json!({"code": code, "price": price})).await;
        assert_eq!(reply.json["verified"], true, "{price}: {}", reply.text);
    }
    // The same amount written differently is the same amount: replayed.
    let code = totp_code(RFC_KEY, Algorithm::TotpWithPrice, Some("EUR:1.5"), 0);
    let reply = verify(&app, "p", json!({"code": code, "price": "EUR:1.50"})).await;
    assert_eq!(reply.json["reason"], "replayed", "{}", reply.text);
    // A code bound to another amount matches nothing.
    let reply = verify(&app, "p", json!({"code": code, "price": "EUR:3"})).await;
    assert_eq!(reply.json["reason"], "mismatch", "{}", reply.text);
}

#[tokio::test]
async fn hotp_looks_ahead_resyncs_and_remembers_accepted_counters() {
    let app = spawn_app().await;
    add(&app, "h", 3, 0).await;
    let ahead = verify(
        &app,
        "h",
        json!({"code": hotp(RFC_KEY, 10), "reference": "r10"}),
    )
    .await;
    assert_eq!(ahead.json["verified"], true, "{}", ahead.text);
    assert_eq!(ahead.json["otp_ctr"], 10);
    let device = app.get("/private/otp-devices/h").await;
    assert_eq!(
        device.json["otp_ctr"], 11,
        "the counter moves past the match"
    );
    let skipped = verify(&app, "h", json!({"code": hotp(RFC_KEY, 5)})).await;
    assert_eq!(skipped.json["reason"], "mismatch");
    let replayed = verify(&app, "h", json!({"code": hotp(RFC_KEY, 10)})).await;
    assert_eq!(replayed.json["reason"], "replayed");
    assert_eq!(replayed.json["reference"], "r10");
    let beyond = verify(&app, "h", json!({"code": hotp(RFC_KEY, 22)})).await;
    assert_eq!(beyond.json["reason"], "mismatch", "S + L + 1 is too far");
    let edge = verify(&app, "h", json!({"code": hotp(RFC_KEY, 21)})).await;
    assert_eq!(edge.json["otp_ctr"], 21, "S + L is accepted: {}", edge.text);
}

#[tokio::test]
async fn a_counter_set_back_replays_accepted_codes_once_and_verifies_new_ones() {
    let app = spawn_app().await;
    add(&app, "h", 3, 0).await;
    for counter in [3u64, 4] {
        let reply = verify(
            &app,
            "h",
            json!({"code": hotp(RFC_KEY, counter), "reference": format!("r{counter}")}),
        )
        .await;
        assert_eq!(reply.json["otp_ctr"], counter, "{}", reply.text);
    }
    // The counter set back to 3: the server's codes from 3 on find 3 first, which was
    // accepted; a later counter might match too, so every code around 3 is computed before
    // the answer (one attempt, recorded once).
    let patched = app
        .patch(
            "/private/otp-devices/h",
            &json!({"otp_device_description": "h", "otp_ctr": 3}),
        )
        .await;
    assert_eq!(patched.status, StatusCode::NO_CONTENT, "{}", patched.text);
    settle().await;
    let replayed = verify(&app, "h", json!({"code": hotp(RFC_KEY, 3)})).await;
    assert_eq!(replayed.json["reason"], "replayed", "{}", replayed.text);
    assert_eq!(replayed.json["reference"], "r3");
    let replayed = verify(&app, "h", json!({"code": hotp(RFC_KEY, 4)})).await;
    assert_eq!(replayed.json["reference"], "r4", "{}", replayed.text);
    let fresh = verify(&app, "h", json!({"code": hotp(RFC_KEY, 5)})).await;
    assert_eq!(fresh.json["verified"], true, "{}", fresh.text);
    assert_eq!(fresh.json["otp_ctr"], 5);
    let history = app.get("/private/otp-devices/h/verifications").await;
    let outcomes: Vec<&str> = history.json["verifications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|entry| entry["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(
        outcomes,
        ["verified", "replayed", "replayed", "verified", "verified"],
        "{}",
        history.text
    );
}

#[tokio::test]
async fn thirty_two_concurrent_attempts_with_one_code_verify_once() {
    let app = spawn_app().await;
    add(&app, "c", 3, 0).await;
    let second = otp_tests::spawn_server(&app.db.url(), |_| {}).await.0;
    let code = hotp(RFC_KEY, 0);
    let attempts = (0..32).map(|i| {
        let (client, token, code) = (app.client.clone(), app.write_token.clone(), code.clone());
        let base = if i % 2 == 0 {
            app.address.clone()
        } else {
            second.clone()
        };
        async move {
            let response = client
                .post(format!("{base}/private/otp-devices/c/verifications"))
                .bearer_auth(token)
                .json(&json!({"code": code}))
                .send()
                .await
                .unwrap();
            response.json::<Value>().await.unwrap()
        }
    });
    let answers = futures_util::future::join_all(attempts).await;
    let verified = answers.iter().filter(|a| a["verified"] == true).count();
    assert_eq!(verified, 1, "{answers:?}");
    assert!(
        answers
            .iter()
            .all(|a| a["verified"] == true || a["reason"] == "replayed")
    );
}

#[tokio::test]
async fn mismatches_lock_for_a_short_time_and_unlock_clears_it() {
    let app = spawn_app().await;
    add(&app, "l", 3, 0).await;
    for attempt in 1..=5 {
        let reply = verify(&app, "l", json!({"code": "99999999"})).await;
        let is_code = reply.json["verified"] == true;
        assert!(!is_code, "99999999 happens to be a valid code");
        assert_eq!(reply.json["reason"], "mismatch", "attempt {attempt}");
    }
    let locked = verify(&app, "l", json!({"code": hotp(RFC_KEY, 0)})).await;
    assert_taler_error(&locked, StatusCode::TOO_MANY_REQUESTS, 9901);
    let retry: u32 = locked.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        (1..=30).contains(&retry),
        "the first lock ends with the step: {retry}"
    );
    assert_eq!(locked.json["detail"], retry.to_string());
    let unlocked = app
        .request(
            Method::POST,
            "/private/otp-devices/l/unlock",
            Some(&app.write_token),
            None,
        )
        .await;
    assert_eq!(unlocked.status, StatusCode::NO_CONTENT);
    let after = verify(&app, "l", json!({"code": hotp(RFC_KEY, 0)})).await;
    assert_eq!(after.json["verified"], true, "{}", after.text);
    let history = app.get("/private/otp-devices/l/verifications").await;
    let outcomes: Vec<&str> = history.json["verifications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(
        outcomes,
        [
            "verified", "locked", "mismatch", "mismatch", "mismatch", "mismatch", "mismatch"
        ]
    );
}

#[tokio::test]
async fn the_daily_cap_refuses_until_midnight_utc() {
    let app = spawn_app_with(|settings| {
        settings.verify.max_failures = 1000;
        settings.verify.daily_failures = 3;
    })
    .await;
    add(&app, "d", 3, 0).await;
    for _ in 0..3 {
        let reply = verify(&app, "d", json!({"code": "99999999"})).await;
        assert_eq!(reply.json["reason"], "mismatch");
    }
    let capped = verify(&app, "d", json!({"code": hotp(RFC_KEY, 0)})).await;
    assert_taler_error(&capped, StatusCode::TOO_MANY_REQUESTS, 9902);
    let retry: i64 = capped.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let now = chrono::Utc::now().timestamp();
    let to_midnight = 86_400 - now.rem_euclid(86_400);
    assert!((retry - to_midnight).abs() <= 2, "{retry} vs {to_midnight}");
}

#[tokio::test]
async fn permissions_and_bad_input() {
    let app = spawn_app().await;
    add(&app, "x", 3, 0).await;
    add(&app, "none", 0, 0).await;
    let body = json!({"code": hotp(RFC_KEY, 0)});
    let readonly = app.read_token.clone();
    let path = "/private/otp-devices/x/verifications";
    let refused = app.send_as(&readonly, Method::POST, path, &body).await;
    assert_taler_error(&refused, StatusCode::FORBIDDEN, 16);
    let history = app.request(Method::GET, path, Some(&readonly), None).await;
    assert_eq!(history.status, StatusCode::OK, "readonly reads the history");
    for scope in ["order-pos", "order-full", "order-pos:refreshable"] {
        let till = app.token(scope).await;
        let code = app
            .request(Method::GET, "/private/otp-devices/x", Some(&till), None)
            .await;
        assert_taler_error(&code, StatusCode::FORBIDDEN, 16);
        let reply = app
            .send_as(&till, Method::POST, path, &json!({"code": "00000001"}))
            .await;
        assert_eq!(
            reply.status,
            StatusCode::OK,
            "{scope} verifies: {}",
            reply.text
        );
    }
    let simple = app.token("order-simple").await;
    let reply = app.send_as(&simple, Method::POST, path, &body).await;
    assert_taler_error(&reply, StatusCode::FORBIDDEN, 16);

    for bad in [
        json!({"code": "1234567"}),
        json!({"code": "abcdefgh"}),
        json!({"code": 12345678}),
        json!({"code": "123456789"}),
        json!({"code": "12345678", "reference": ""}),
        json!({"code": "12345678", "price": "eur:1"}),
    ] {
        assert_taler_error(&verify(&app, "x", bad).await, StatusCode::BAD_REQUEST, 26);
    }
    assert_taler_error(
        &verify(&app, "x", json!({})).await,
        StatusCode::BAD_REQUEST,
        25,
    );
    assert_taler_error(
        &verify(&app, "none", body.clone()).await,
        StatusCode::CONFLICT,
        26,
    );
    assert_taler_error(
        &verify(&app, "nope", body).await,
        StatusCode::NOT_FOUND,
        2021,
    );
    for query in ["limit=0", "limit=1001", "limit=x", "offset=-1"] {
        let reply = app.get(&format!("{path}?{query}")).await;
        assert_taler_error(&reply, StatusCode::BAD_REQUEST, 26);
    }
}

#[tokio::test]
async fn history_is_newest_first_paginated_and_never_holds_the_code() {
    let app = spawn_app().await;
    add(&app, "h", 3, 0).await;
    for (i, counter) in [0u64, 1, 2].into_iter().enumerate() {
        let reply = verify(
            &app,
            "h",
            json!({"code": hotp(RFC_KEY, counter), "reference": format!("r{i}")}),
        )
        .await;
        assert_eq!(reply.json["verified"], true);
    }
    let page = app
        .get("/private/otp-devices/h/verifications?limit=2&offset=1")
        .await;
    let entries = page.json["verifications"].as_array().unwrap();
    assert_eq!(entries.len(), 2);
    assert_eq!(entries[0]["reference"], "r1");
    assert_eq!(entries[1]["reference"], "r0");
    assert_eq!(entries[1]["otp_ctr"], 0);
    assert!(entries[0]["token_serial"].is_i64());
    assert_eq!(entries[0]["client"], "127.0.0.1");
    for counter in 0..3 {
        assert!(
            !page.text.contains(&hotp(RFC_KEY, counter)),
            "a code in the history"
        );
    }
}

#[tokio::test]
async fn instances_are_isolated() {
    let app = spawn_app().await;
    let other = InstanceId::parse("other").unwrap();
    instances::create(&app.store, &other, "Other")
        .await
        .unwrap();
    let (_, other_token) = tokens::create(&app.store, &other, "write", None, "")
        .await
        .unwrap();
    let other_token = other_token.expose().to_owned();
    add(&app, "same", 3, 0).await;
    let device = json!({"otp_device_id": "same", "otp_device_description": "s", "otp_key": RFC_KEY, "otp_algorithm": 3});
    let created = app
        .send_as(
            &other_token,
            Method::POST,
            "/instances/other/private/otp-devices",
            &device,
        )
        .await;
    assert_eq!(created.status, StatusCode::NO_CONTENT);
    let code = json!({"code": hotp(RFC_KEY, 0)});
    assert_eq!(
        verify(&app, "same", code.clone()).await.json["verified"],
        true
    );
    let there = app
        .send_as(
            &other_token,
            Method::POST,
            "/instances/other/private/otp-devices/same/verifications",
            &code,
        )
        .await;
    assert_eq!(
        there.json["verified"], true,
        "the other instance's counter is its own"
    );
    let cross = app
        .send_as(
            &app.write_token,
            Method::POST,
            "/instances/other/private/otp-devices/same/verifications",
            &code,
        )
        .await;
    assert_taler_error(&cross, StatusCode::UNAUTHORIZED, 2015);
}
