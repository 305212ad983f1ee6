//! §8: every non-2xx answer is a Taler error body, including the framework's own failures.

use std::io::Write;

use otp_tests::{RFC_KEY, assert_taler_error, spawn_app};
use reqwest::{Method, StatusCode};
use serde_json::json;

const JSON: Option<&str> = Some("application/json");
const GZIP: Option<&str> = Some("gzip");

/// `POST /private/otp-devices` of raw bytes with the write token and the given headers.
async fn raw_post(
    app: &otp_tests::TestApp,
    content_type: Option<&str>,
    encoding: Option<&str>,
    body: Vec<u8>,
) -> otp_tests::Reply {
    let mut request = app
        .client
        .post(format!("{}/private/otp-devices", app.address))
        .header("Authorization", format!("Bearer {}", app.write_token))
        .body(body);
    if let Some(content_type) = content_type {
        request = request.header("Content-Type", content_type);
    }
    if let Some(encoding) = encoding {
        request = request.header("Content-Encoding", encoding);
    }
    otp_tests::reply(request.send().await.unwrap()).await
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(data).unwrap();
    encoder.finish().unwrap()
}

#[tokio::test]
async fn malformed_json_is_400_code_22() {
    let app = spawn_app().await;
    for body in [&b"{"[..], b"not json", b"{\"a\":}", b"\xff\xfe"] {
        let reply = raw_post(&app, JSON, None, body.to_vec()).await;
        assert_taler_error(&reply, StatusCode::BAD_REQUEST, 22);
    }
    for body in [&b"[]"[..], b"42", b"\"x\"", b"null"] {
        let reply = raw_post(&app, JSON, None, body.to_vec()).await;
        assert_taler_error(&reply, StatusCode::BAD_REQUEST, 26);
    }
}

#[tokio::test]
async fn wrong_content_type_is_a_taler_error() {
    let app = spawn_app().await;
    let reply = raw_post(&app, Some("text/plain"), None, b"{}".to_vec()).await;
    assert_taler_error(&reply, StatusCode::UNSUPPORTED_MEDIA_TYPE, 23);
}

#[tokio::test]
async fn oversized_bodies_are_413_code_32_even_when_gzipped() {
    let app = spawn_app().await;
    let big = format!(
        "{{\"otp_device_id\":\"x\",\"pad\":\"{}\"}}",
        "a".repeat(70 * 1024)
    );
    let reply = raw_post(&app, JSON, None, big.clone().into_bytes()).await;
    assert_taler_error(&reply, StatusCode::PAYLOAD_TOO_LARGE, 32);
    // Small on the wire, too large once decompressed.
    let compressed = gzip(big.as_bytes());
    assert!(compressed.len() < 4096);
    let reply = raw_post(&app, JSON, GZIP, compressed).await;
    assert_taler_error(&reply, StatusCode::PAYLOAD_TOO_LARGE, 32);
}

#[tokio::test]
async fn gzip_bodies_are_accepted_and_corrupt_gzip_is_rejected() {
    let app = spawn_app().await;
    let body = json!({"otp_device_id": "gz", "otp_device_description": "d", "otp_key": RFC_KEY, "otp_algorithm": 1});
    let reply = raw_post(&app, JSON, GZIP, gzip(body.to_string().as_bytes())).await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT, "{}", reply.text);
    let reply = raw_post(&app, JSON, GZIP, b"not gzip at all".to_vec()).await;
    assert!(reply.status.is_client_error(), "{}", reply.status);
    assert!(reply.json["code"].is_u64(), "{}", reply.text);
}

#[tokio::test]
async fn unknown_paths_and_methods_are_taler_errors() {
    let app = spawn_app().await;
    for path in [
        "/nope",
        "/private/otp-devices/",
        "/private/otp-devices/a/b/c",
        "/instances/admin/private/nothing",
        "/",
    ] {
        let reply = app.get(path).await;
        assert_taler_error(&reply, StatusCode::NOT_FOUND, 21);
    }
    for (method, path, token) in [
        (Method::PUT, "/private/otp-devices", Some(&app.write_token)),
        (Method::DELETE, "/config", None),
        (
            Method::GET,
            "/private/otp-devices/x/confirmations",
            Some(&app.write_token),
        ),
    ] {
        let reply = app
            .request(method, path, token.map(String::as_str), None)
            .await;
        assert_taler_error(&reply, StatusCode::METHOD_NOT_ALLOWED, 20);
    }
}

#[tokio::test]
async fn bad_path_segments_never_500() {
    let app = spawn_app().await;
    for path in [
        "/private/otp-devices/%FF%FE",
        "/instances/%FF/private/otp-devices",
        "/private/otp-devices/a%2Fb",
        "/instances/a%2Fb/private/otp-devices",
    ] {
        let reply = app.get(path).await;
        assert!(reply.status.is_client_error(), "{path}: {}", reply.status);
        assert!(reply.json["code"].is_u64(), "{path}: {}", reply.text);
    }
    let long_id = "x".repeat(5000);
    let reply = app.get(&format!("/private/otp-devices/{long_id}")).await;
    assert_taler_error(&reply, StatusCode::NOT_FOUND, 2021);
}

#[tokio::test]
async fn responses_carry_a_request_id() {
    let app = spawn_app().await;
    let reply = app.request(Method::GET, "/config", None, None).await;
    assert!(reply.headers.get("x-request-id").is_some());
}

#[tokio::test]
async fn error_answers_to_requests_with_a_body_say_the_connection_closes() {
    let app = spawn_app().await;
    let body = json!({ "code": "12345678" });

    // Refused before the body was read: the server closes the connection, and says so.
    let refused = app
        .request(
            Method::POST,
            "/private/otp-devices/pos/verifications",
            Some("secret-token:not-a-token"),
            Some(&body),
        )
        .await;
    assert_taler_error(&refused, StatusCode::UNAUTHORIZED, 2015);
    let connection = |reply: &otp_tests::Reply| {
        reply
            .headers
            .get("connection")
            .and_then(|v| v.to_str().ok())
            .map(str::to_ascii_lowercase)
    };
    assert_eq!(connection(&refused).as_deref(), Some("close"));

    // The client's next requests go out on a new connection and are answered; answers without
    // a request body keep their connection.
    for _ in 0..3 {
        let listed = app.get("/private/otp-devices").await;
        assert_eq!(listed.status, StatusCode::OK, "{}", listed.text);
        assert_eq!(connection(&listed), None);
    }
}
