//! §2: device descriptions are at most 4 KiB (bytes of UTF-8); longer ones are refused with
//! 400, code 26, on POST and PATCH alike, and nothing is stored.

use otp_tests::{RFC_KEY, assert_taler_error, spawn_app};
use reqwest::StatusCode;
use serde_json::json;

#[tokio::test]
async fn descriptions_up_to_4_kib_are_stored_and_longer_ones_refused() {
    let app = spawn_app().await;
    // 2048 two-byte characters: 4096 bytes, the longest accepted.
    let longest = "é".repeat(2048);
    let too_long = format!("{longest}x");
    let device = |description: &str| {
        json!({
            "otp_device_id": "till",
            "otp_device_description": description,
            "otp_key": RFC_KEY,
            "otp_algorithm": 1,
        })
    };

    let refused = app.post("/private/otp-devices", &device(&too_long)).await;
    assert_taler_error(&refused, StatusCode::BAD_REQUEST, 26);
    let detail = refused.json["detail"].as_str().unwrap();
    assert!(detail.starts_with("otp_device_description"), "{detail}");
    assert_eq!(
        app.get("/private/otp-devices/till").await.status,
        StatusCode::NOT_FOUND,
        "a refused device was stored"
    );

    let stored = app.post("/private/otp-devices", &device(&longest)).await;
    assert_eq!(stored.status, StatusCode::NO_CONTENT, "{}", stored.text);
    let shown = app.get("/private/otp-devices/till").await;
    assert_eq!(shown.json["device_description"], longest.as_str());

    let path = "/private/otp-devices/till";
    let refused = app
        .patch(path, &json!({"otp_device_description": too_long}))
        .await;
    assert_taler_error(&refused, StatusCode::BAD_REQUEST, 26);
    assert_eq!(
        app.get(path).await.json["device_description"],
        longest.as_str(),
        "a refused PATCH changed the description"
    );
    let changed = app
        .patch(path, &json!({"otp_device_description": "short"}))
        .await;
    assert_eq!(changed.status, StatusCode::NO_CONTENT, "{}", changed.text);
}
