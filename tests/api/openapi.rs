//! The OpenAPI document: committed, up to date, served, and matching real responses.

use otp_tests::{RFC_KEY, assert_valid, spawn_app};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const COMMITTED: &str = "../openapi/openapi.json";

#[test]
fn openapi_document_is_up_to_date() {
    let generated = otp_server::openapi::api_doc_json();
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(COMMITTED);
    if std::env::var_os("UPDATE_OPENAPI").is_some() {
        std::fs::write(&path, &generated).unwrap();
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "openapi/openapi.json is out of date: run `UPDATE_OPENAPI=1 cargo test -p otp-tests --test api openapi` and commit it"
    );
}

#[test]
fn document_is_openapi_3_1_with_every_path_and_marked_extensions() {
    let doc: Value = serde_json::from_str(&otp_server::openapi::api_doc_json()).unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    for path in [
        "/config",
        "/instances/{instance}/config",
        "/private/otp-devices",
        "/instances/{instance}/private/otp-devices",
        "/private/otp-devices/{device_id}",
        "/instances/{instance}/private/otp-devices/{device_id}",
        "/private/otp-devices/{device_id}/confirmations",
        "/instances/{instance}/private/otp-devices/{device_id}/confirmations",
    ] {
        assert!(doc["paths"][path].is_object(), "{path} missing");
    }
    let confirmation = &doc["paths"]["/private/otp-devices/{device_id}/confirmations"]["post"];
    assert_eq!(
        confirmation["x-taler-otp-extension"], true,
        "extension not marked"
    );
    assert!(
        confirmation["summary"]
            .as_str()
            .unwrap_or_default()
            .contains("extension")
    );
}

#[tokio::test]
async fn served_document_and_real_responses_match_the_schemas() {
    let app = spawn_app().await;
    let served = app.anonymous(Method::GET, "/openapi.json", None).await;
    assert_eq!(served.status, StatusCode::OK);
    let doc = served.json;
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));

    app.add_device("v", RFC_KEY, json!(2)).await;
    assert_valid(
        &doc,
        "VersionResponse",
        &app.anonymous(Method::GET, "/config", None).await.json,
    );
    assert_valid(
        &doc,
        "OtpDeviceSummaryResponse",
        &app.get("/private/otp-devices").await.json,
    );
    assert_valid(
        &doc,
        "OtpDeviceDetails",
        &app.get("/private/otp-devices/v?faketime=5&price=EUR%3A1")
            .await
            .json,
    );
    assert_valid(
        &doc,
        "OtpDeviceDetails",
        &app.get("/private/otp-devices/v").await.json,
    );
    assert_valid(
        &doc,
        "ConfirmationResponse",
        &app.confirm("v", &json!({"price": "EUR:2"})).await.json,
    );
    assert_valid(
        &doc,
        "ErrorDetail",
        &app.get("/private/otp-devices/ghost").await.json,
    );
    assert_valid(&doc, "ErrorDetail", &app.get("/nope").await.json);
    // A request body that the server accepts validates against the request schema.
    assert_valid(
        &doc,
        "OtpDeviceAddDetails",
        &json!({"otp_device_id": "a", "otp_device_description": "d", "otp_key": RFC_KEY, "otp_algorithm": "TOTP_WITH_PRICE"}),
    );
}

#[tokio::test]
async fn swagger_ui_is_served_offline() {
    let app = spawn_app().await;
    let reply = app.anonymous(Method::GET, "/docs/", None).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(
        reply.text.contains("swagger"),
        "{}",
        &reply.text[..reply.text.len().min(200)]
    );
    let js = app
        .anonymous(Method::GET, "/docs/swagger-ui-bundle.js", None)
        .await;
    assert_eq!(js.status, StatusCode::OK);
}

#[test]
fn every_registered_route_is_documented_and_every_documented_route_registered() {
    let doc: Value = serde_json::from_str(&otp_server::openapi::api_doc_json()).unwrap();
    let mut documented = std::collections::BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            if ["get", "post", "patch", "delete", "put"].contains(&method.as_str()) {
                documented.insert((path.clone(), method.clone()));
            }
        }
    }
    let mut registered = std::collections::BTreeSet::new();
    for endpoint in otp_server::routes::ENDPOINTS {
        let method = endpoint.verb.openapi_name().to_owned();
        let path = endpoint.full_path();
        registered.insert((format!("/instances/{{instance}}{path}"), method.clone()));
        registered.insert((path, method));
    }
    for endpoint in otp_server::routes::UNPREFIXED_ENDPOINTS {
        let method = endpoint.verb.openapi_name().to_owned();
        registered.insert((endpoint.full_path(), method));
    }
    let undocumented: Vec<_> = registered.difference(&documented).collect();
    let unregistered: Vec<_> = documented.difference(&registered).collect();
    assert!(
        undocumented.is_empty(),
        "registered but undocumented: {undocumented:?}"
    );
    assert!(
        unregistered.is_empty(),
        "documented but unregistered: {unregistered:?}"
    );
}
