//! §14: the audit trail. Every audited action appears once, in order, with the token that
//! authorized it and the client's address; `audit-read` guards the list; the chain is intact.

use otp_store::audit;
use otp_store::{InstanceId, tokens};
use otp_tests::{RFC_KEY, Reply, TestApp, assert_taler_error, spawn_app};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// `POST /private/token` with HTTP Basic for the default instance.
async fn basic_login(app: &TestApp, password: &str) -> Reply {
    let body = json!({"scope": "readonly"});
    app.basic("/private/token", "admin", password, &body).await
}

/// The serial of the token whose secret is `secret`.
async fn serial_of(app: &TestApp, secret: &str) -> i64 {
    let admin = InstanceId::parse("admin").unwrap();
    let hash = tokens::hash_secret(secret);
    match tokens::authenticate(&app.store, &admin, Some(secret), chrono::Utc::now())
        .await
        .unwrap()
    {
        tokens::AuthOutcome::Valid(token) => token.serial,
        other => panic!("token {hash:?} not valid: {other:?}"),
    }
}

/// The trail after `since`, as the API lists it to the read token.
async fn trail(app: &TestApp, since: i64) -> Vec<Value> {
    let path = format!("/private/audit?since={since}&limit=1000");
    let listed = app.get_as(&app.read_token, &path).await;
    assert_eq!(listed.status, StatusCode::OK, "{}", listed.text);
    listed.json["entries"].as_array().unwrap().clone()
}

#[tokio::test]
async fn every_audited_action_appears_once_with_its_token_and_client() {
    let app = spawn_app().await;
    let write = serial_of(&app, &app.write_token).await;
    // The harness created two tokens as the operator: the trail starts with them.
    let before = trail(&app, 0).await;
    assert_eq!(before.len(), 2, "{before:?}");
    for entry in &before {
        assert_eq!(entry["event"], "token_created");
        assert_eq!(entry["client"], "local");
        assert_eq!(entry["token_serial"], Value::Null);
    }
    let since = before[1]["serial"].as_i64().unwrap();

    app.add_device("totp", RFC_KEY, json!(1)).await;
    app.add_device("hotp", RFC_KEY, json!(3)).await;
    let patched = app
        .patch(
            "/private/otp-devices/totp",
            &json!({"otp_device_description": "renamed", "otp_key": RFC_KEY}),
        )
        .await;
    assert_eq!(patched.status, StatusCode::NO_CONTENT, "{}", patched.text);
    for device in ["totp", "hotp"] {
        let issued = app.confirm(device, &json!({})).await;
        assert_eq!(issued.status, StatusCode::OK, "{}", issued.text);
    }
    let verified = app
        .verify("totp", &json!({"code": "00000000", "reference": "order-7"}))
        .await;
    assert_eq!(verified.status, StatusCode::OK, "{}", verified.text);
    app.set_password("secret password").await;
    assert_eq!(
        basic_login(&app, "wrong").await.status,
        StatusCode::UNAUTHORIZED
    );
    let login = basic_login(&app, "secret password").await;
    assert_eq!(login.status, StatusCode::OK, "{}", login.text);
    let new_serial = serial_of(&app, login.json["access_token"].as_str().unwrap()).await;
    let revoked = app.delete(&format!("/private/tokens/{new_serial}")).await;
    assert_eq!(revoked.status, StatusCode::NO_CONTENT, "{}", revoked.text);
    let deleted = app.delete("/private/otp-devices/hotp").await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT, "{}", deleted.text);
    // Reads are not audited.
    app.get("/private/otp-devices/totp").await;
    app.get("/private/otp-devices").await;

    let entries = trail(&app, since).await;
    let expected: [(&str, Option<&str>, Option<i64>); 11] = [
        ("device_created", Some("totp"), Some(write)),
        ("device_created", Some("hotp"), Some(write)),
        ("device_changed", Some("totp"), Some(write)),
        ("confirmation_issued", Some("totp"), Some(write)),
        ("confirmation_issued", Some("hotp"), Some(write)),
        ("verification", Some("totp"), Some(write)),
        ("login_failure", None, None),
        ("login_success", None, None),
        ("token_created", None, None),
        ("token_revoked", None, Some(write)),
        ("device_deleted", Some("hotp"), Some(write)),
    ];
    let seen: Vec<(&str, Option<&str>, Option<i64>)> = entries
        .iter()
        .map(|e| {
            (
                e["event"].as_str().unwrap(),
                e["device_id"].as_str(),
                e["token_serial"].as_i64(),
            )
        })
        .collect();
    assert_eq!(seen, expected, "{entries:#?}");
    for (n, entry) in entries.iter().enumerate() {
        assert_eq!(entry["client"], "127.0.0.1", "{entry}");
        assert!(entry["serial"].as_i64().unwrap() > since + n as i64);
        assert_eq!(entry["hash"].as_str().unwrap().len(), 64);
        let text = entry.to_string();
        assert!(
            !text.contains(RFC_KEY) && !text.contains("secret password"),
            "{text}"
        );
    }
    assert_eq!(
        entries[2]["details"],
        json!({"fields": ["otp_device_description"]})
    );
    assert_eq!(entries[4]["details"], json!({"otp_ctr": 0}));
    assert!(entries[3]["details"]["otp_timestamp"].is_u64());
    assert_eq!(entries[5]["details"]["outcome"], "mismatch");
    assert_eq!(entries[5]["details"]["reference"], "order-7");
    assert_eq!(entries[8]["details"]["serial"], new_serial);
    assert_eq!(entries[9]["details"], json!({"serial": new_serial}));
    // Each row links to the one before it in its chain: the device's, or the instance's own.
    let mut last: std::collections::BTreeMap<String, (i64, Value)> = Default::default();
    for entry in before.iter().chain(&entries) {
        let chain = entry["chain"].as_str().unwrap().to_owned();
        assert_eq!(chain, entry["device_id"].as_str().unwrap_or(""), "{entry}");
        let (seq, prev) = last
            .get(&chain)
            .cloned()
            .unwrap_or((0, json!("0".repeat(64))));
        assert_eq!(entry["seq"].as_i64(), Some(seq + 1), "{entry}");
        assert_eq!(entry["prev_hash"], prev, "{entry}");
        last.insert(chain, (seq + 1, entry["hash"].clone()));
    }
    let admin = InstanceId::parse("admin").unwrap();
    let report = audit::verify_chain(&app.store, &admin).await.unwrap();
    assert!(report.is_intact(), "{report:?}");
    assert_eq!(report.rows, 13);
}

#[tokio::test]
async fn reading_the_trail_needs_audit_read() {
    let app = spawn_app().await;
    let order = app.token("order-full").await;
    for (token, status) in [
        (Some(app.read_token.as_str()), StatusCode::OK),
        (Some(app.write_token.as_str()), StatusCode::OK),
        (Some(order.as_str()), StatusCode::FORBIDDEN),
        (None, StatusCode::UNAUTHORIZED),
    ] {
        let listed = app
            .request(Method::GET, "/private/audit", token, None)
            .await;
        assert_eq!(listed.status, status, "{}", listed.text);
    }
    let forbidden = app.get_as(&order, "/instances/admin/private/audit").await;
    assert_taler_error(&forbidden, StatusCode::FORBIDDEN, 16);
    assert!(forbidden.text.contains("audit-read"), "{}", forbidden.text);
    let unknown = app
        .get_as(&app.read_token, "/instances/ghost/private/audit")
        .await;
    assert_taler_error(&unknown, StatusCode::NOT_FOUND, 2000);
}

#[tokio::test]
async fn the_trail_pages_with_since_and_limit() {
    let app = spawn_app().await;
    for n in 0..5 {
        app.add_device(&format!("d{n}"), RFC_KEY, json!(1)).await;
    }
    let page = app
        .get_as(&app.read_token, "/private/audit?since=3&limit=2")
        .await;
    let seqs: Vec<i64> = page.json["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["serial"].as_i64().unwrap())
        .collect();
    assert_eq!(seqs, [4, 5], "a fresh database numbers from 1");
    assert_eq!(trail(&app, 0).await.len(), 7);
    for bad in ["since=-1", "since=x", "limit=0", "limit=1001"] {
        let refused = app
            .get_as(&app.read_token, &format!("/private/audit?{bad}"))
            .await;
        assert_taler_error(&refused, StatusCode::BAD_REQUEST, 26);
    }
}
