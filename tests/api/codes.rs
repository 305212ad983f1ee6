//! §5: `otp_code` through the API equals every public vector; `faketime` and `price` validation.

use otp_tests::{assert_taler_error, spawn_app};
use reqwest::StatusCode;
use serde_json::{Value, json};

const VECTORS: &str = include_str!("../../crates/otp-algo/tests/data/pos-confirmation.json");

fn encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b == b'.' {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[tokio::test]
async fn otp_code_equals_every_public_vector() {
    let app = spawn_app().await;
    let vectors: Value = serde_json::from_str(VECTORS).unwrap();
    let mut checked = 0;
    for (i, case) in vectors["totp"].as_array().unwrap().iter().enumerate() {
        let key = case["key_b32"].as_str().unwrap();
        let id = format!("t{i}");
        app.add_device(&id, key, case["alg"].clone()).await;
        let mut path = format!("/private/otp-devices/{id}?faketime={}", case["ts"]);
        if let Some(amount) = case["amount"].as_str() {
            path.push_str(&format!("&price={}", encode(amount)));
        }
        let reply = app.get(&path).await;
        let name = case["id"].as_str().unwrap();
        if case["amount"]
            .as_str()
            .is_some_and(|a| a.chars().any(|c| c.is_ascii_lowercase()))
        {
            // Our contract: an invalid amount is a 400 naming `price` (upstream silently gives no code).
            assert_taler_error(&reply, StatusCode::BAD_REQUEST, 26);
            assert!(
                reply.json["detail"].as_str().unwrap().contains("price"),
                "{name}"
            );
            continue;
        }
        assert_eq!(reply.status, StatusCode::OK, "{name}: {}", reply.text);
        assert_eq!(
            reply.json["otp_code"].as_str(),
            case["expected"].as_str(),
            "{name}"
        );
        assert_eq!(reply.json["otp_timestamp"], case["ts"], "{name}");
        checked += 1;
    }
    for (i, case) in vectors["hotp"].as_array().unwrap().iter().enumerate() {
        let id = format!("h{i}");
        let alg = case["alg"].as_u64().unwrap() + 2; // alg 1 → 3, alg 2 → 4
        let body = json!({"otp_device_id": id, "otp_device_description": "h", "otp_key": case["key_b32"], "otp_algorithm": alg, "otp_ctr": case["counter"]});
        assert_eq!(
            app.post("/private/otp-devices", &body).await.status,
            StatusCode::NO_CONTENT
        );
        let mut path = format!("/private/otp-devices/{id}");
        if let Some(amount) = case["amount"].as_str() {
            path.push_str(&format!("?price={}", encode(amount)));
        }
        let reply = app.get(&path).await;
        assert_eq!(
            reply.json["otp_code"].as_str(),
            case["expected"].as_str(),
            "{}",
            case["id"]
        );
        checked += 1;
    }
    assert!(checked >= 14, "only {checked} vectors checked");
}

#[tokio::test]
async fn no_code_for_none_or_missing_price() {
    let app = spawn_app().await;
    app.add_device("none", otp_tests::RFC_KEY, json!(0)).await;
    app.add_device("wp", otp_tests::RFC_KEY, json!(2)).await;
    app.add_device("hp", otp_tests::RFC_KEY, json!(4)).await;
    for path in [
        "/private/otp-devices/none?faketime=5&price=EUR:1",
        "/private/otp-devices/wp?faketime=5",
        "/private/otp-devices/wp?price=",
        "/private/otp-devices/hp",
    ] {
        let reply = app.get(path).await;
        assert_eq!(reply.status, StatusCode::OK, "{path}");
        assert!(
            reply.json.get("otp_code").is_none(),
            "{path}: {}",
            reply.text
        );
    }
}

#[tokio::test]
async fn malformed_faketime_and_price_are_400_naming_the_parameter() {
    let app = spawn_app().await;
    app.add_device("d", otp_tests::RFC_KEY, json!(1)).await;
    for (query, name) in [
        ("faketime=abc", "faketime"),
        ("faketime=-1", "faketime"),
        ("faketime=1.0", "faketime"),
        ("faketime=18446744073710", "faketime"),
        ("faketime=99999999999999999999999", "faketime"),
        ("price=EUR", "price"),
        ("price=eur%3A1", "price"),
        ("price=EUR%3A1.", "price"),
        ("price=EUR%3A1.123456789", "price"),
        ("price=EUR%3A4503599627370497", "price"),
        ("price=%20EUR%3A1", "price"),
        ("price=ABCDEFGHIJKL%3A1", "price"),
    ] {
        let reply = app.get(&format!("/private/otp-devices/d?{query}")).await;
        assert_taler_error(&reply, StatusCode::BAD_REQUEST, 26);
        assert!(
            reply.json["detail"].as_str().unwrap().contains(name),
            "{query}: {}",
            reply.text
        );
    }
    // The largest representable timestamp works and saturates.
    let reply = app
        .get("/private/otp-devices/d?faketime=18446744073709")
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    let codes: Vec<&str> = reply.json["otp_code"]
        .as_str()
        .unwrap()
        .split('\n')
        .collect();
    assert_eq!((codes[2], codes[3]), (codes[4], codes[2]));
}

#[tokio::test]
async fn get_never_advances_a_counter() {
    let app = spawn_app().await;
    app.add_device("c", otp_tests::RFC_KEY, json!(3)).await;
    for _ in 0..3 {
        let reply = app.get("/private/otp-devices/c").await;
        assert_eq!(reply.json["otp_ctr"], 0);
        assert_eq!(reply.json["otp_code"], "84755224");
    }
}
