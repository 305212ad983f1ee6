//! CRUD on OTP devices, with and without the instance prefix.

use otp_tests::{RFC_KEY, assert_taler_error, spawn_app, spawn_app_with};
use reqwest::StatusCode;
use serde_json::json;

#[tokio::test]
async fn create_list_get_patch_delete_round_trip() {
    let app = spawn_app().await;
    let list = app.get("/private/otp-devices").await;
    assert_eq!(list.status, StatusCode::OK);
    assert_eq!(list.json, json!({"otp_devices": []}));

    app.add_device("till-1", RFC_KEY, json!(1)).await;
    let list = app.get("/instances/admin/private/otp-devices").await;
    assert_eq!(
        list.json,
        json!({"otp_devices": [{"otp_device_id": "till-1", "device_description": "device till-1"}]})
    );

    let one = app.get("/private/otp-devices/till-1?faketime=59").await;
    assert_eq!(one.status, StatusCode::OK, "{}", one.text);
    assert_eq!(one.json["device_description"], "device till-1");
    assert_eq!(one.json["otp_algorithm"], 1);
    assert_eq!(one.json["otp_ctr"], 0);
    assert_eq!(one.json["otp_timestamp"], 59);
    assert_eq!(
        one.json["otp_code"],
        "84755224\n84755224\n94287082\n37359152\n26969429"
    );
    assert!(
        one.json.get("otp_key").is_none(),
        "key leaked: {}",
        one.text
    );
    assert!(!one.text.contains(RFC_KEY));

    let patched = app
        .patch(
            "/private/otp-devices/till-1",
            &json!({"otp_device_description": "renamed"}),
        )
        .await;
    assert_eq!(patched.status, StatusCode::NO_CONTENT, "{}", patched.text);
    assert!(patched.text.is_empty());
    let one = app
        .get("/instances/admin/private/otp-devices/till-1?faketime=59")
        .await;
    assert_eq!(one.json["device_description"], "renamed");
    assert_eq!(
        one.json["otp_algorithm"], 1,
        "absent algorithm keeps the stored one"
    );

    let deleted = app.delete("/private/otp-devices/till-1").await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    assert_taler_error(
        &app.get("/private/otp-devices/till-1").await,
        StatusCode::NOT_FOUND,
        2021,
    );
    assert_taler_error(
        &app.delete("/private/otp-devices/till-1").await,
        StatusCode::NOT_FOUND,
        2021,
    );
    assert_taler_error(
        &app.patch(
            "/private/otp-devices/till-1",
            &json!({"otp_device_description": "x"}),
        )
        .await,
        StatusCode::NOT_FOUND,
        2021,
    );
}

#[tokio::test]
async fn get_without_faketime_uses_the_server_clock() {
    let app = spawn_app().await;
    app.add_device("d", RFC_KEY, json!("totp_without_price"))
        .await;
    let before = chrono::Utc::now().timestamp() as u64;
    let one = app.get("/private/otp-devices/d").await;
    let after = chrono::Utc::now().timestamp() as u64;
    let ts = one.json["otp_timestamp"].as_u64().unwrap();
    assert!(
        before <= ts && ts <= after,
        "{ts} not in [{before}, {after}]"
    );
    let expected = otp_algo::confirmation(
        &otp_algo::OtpKey::from_base32(RFC_KEY).unwrap(),
        otp_algo::Algorithm::TotpWithoutPrice,
        None,
        ts,
        0,
    );
    assert_eq!(one.json["otp_code"].as_str(), expected.as_deref());
}

#[tokio::test]
async fn post_is_idempotent_for_identical_details_and_conflicts_otherwise() {
    let app = spawn_app().await;
    let body = json!({
        "otp_device_id": "pos", "otp_device_description": "POS", "otp_key": RFC_KEY,
        "otp_algorithm": 3, "otp_ctr": 5
    });
    assert_eq!(
        app.post("/private/otp-devices", &body).await.status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        app.post("/private/otp-devices", &body).await.status,
        StatusCode::NO_CONTENT
    );
    // The same key spelled differently (lower case, padding) is the same key.
    let mut same = body.clone();
    same["otp_key"] = json!("gezdgnbvgy3tqojqgezdgnbvgy3tqojq");
    same["otp_algorithm"] = json!("HOTP_WITHOUT_PRICE");
    assert_eq!(
        app.post("/private/otp-devices", &same).await.status,
        StatusCode::NO_CONTENT
    );
    for (field, value) in [
        ("otp_device_description", json!("other")),
        ("otp_key", json!("AAISEM2EKVTHPCEZ")),
        ("otp_algorithm", json!(1)),
        ("otp_ctr", json!(6)),
    ] {
        let mut changed = body.clone();
        changed[field] = value;
        let reply = app.post("/private/otp-devices", &changed).await;
        assert_taler_error(&reply, StatusCode::CONFLICT, 2851);
    }
    let one = app.get("/private/otp-devices/pos").await;
    assert_eq!(one.json["otp_ctr"], 5, "conflicting POSTs changed nothing");
    assert_eq!(one.json["device_description"], "POS");
}

#[tokio::test]
async fn json_null_means_absent() {
    let app = spawn_app().await;
    let body = json!({"otp_device_id": "n", "otp_device_description": "d", "otp_key": RFC_KEY,
                      "otp_algorithm": 3, "otp_ctr": null, "unknown_field": {"x": 1}});
    let reply = app.post("/private/otp-devices", &body).await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT, "{}", reply.text);
    assert_eq!(app.get("/private/otp-devices/n").await.json["otp_ctr"], 0);
    // The PHP SDK's minimal update sends nulls for everything but the description.
    let reply = app
        .patch(
            "/private/otp-devices/n",
            &json!({"otp_device_description": "new", "otp_key": null, "otp_algorithm": null, "otp_ctr": null}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT, "{}", reply.text);
    let one = app.get("/private/otp-devices/n").await;
    assert_eq!(
        (
            one.json["device_description"].as_str(),
            one.json["otp_algorithm"].as_u64()
        ),
        (Some("new"), Some(3))
    );
}

#[tokio::test]
async fn patch_changes_key_algorithm_and_counter() {
    let app = spawn_app().await;
    app.add_device("p", RFC_KEY, json!(1)).await;
    let reply = app
        .patch(
            "/private/otp-devices/p",
            &json!({"otp_device_description": "d", "otp_key": "AAISEM2EKVTHPCEZ", "otp_algorithm": "HOTP_WITHOUT_PRICE", "otp_ctr": 7}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT, "{}", reply.text);
    let one = app.get("/private/otp-devices/p").await;
    assert_eq!(one.json["otp_algorithm"], 3);
    assert_eq!(one.json["otp_ctr"], 7);
    let key = otp_algo::OtpKey::from_base32("AAISEM2EKVTHPCEZ").unwrap();
    assert_eq!(one.json["otp_code"], otp_algo::hotp_code(key.as_bytes(), 7));
}

#[tokio::test]
async fn algorithms_accept_integers_and_names_and_reject_everything_else() {
    let app = spawn_app().await;
    for (i, algorithm) in [
        json!(0),
        json!(4),
        json!("none"),
        json!("Totp_With_Price"),
        json!("HOTP_WITH_PRICE"),
    ]
    .iter()
    .enumerate()
    {
        app.add_device(&format!("ok{i}"), RFC_KEY, algorithm.clone())
            .await;
    }
    for bad in [
        json!(5),
        json!(-1),
        json!(1.5),
        json!("1"),
        json!("TOTP"),
        json!(null),
        json!(true),
        json!([1]),
    ] {
        let reply = app
            .post(
                "/private/otp-devices",
                &json!({"otp_device_id": "bad", "otp_device_description": "d", "otp_key": RFC_KEY, "otp_algorithm": bad}),
            )
            .await;
        let code = if bad.is_null() { 25 } else { 26 };
        assert_taler_error(&reply, StatusCode::BAD_REQUEST, code);
    }
    assert_taler_error(
        &app.get("/private/otp-devices/bad").await,
        StatusCode::NOT_FOUND,
        2021,
    );
}

#[tokio::test]
async fn bad_fields_are_400_naming_the_field_and_store_nothing() {
    let app = spawn_app().await;
    let good = json!({"otp_device_id": "x", "otp_device_description": "d", "otp_key": RFC_KEY, "otp_algorithm": 1});
    let cases = [
        ("otp_device_id", json!(""), 26),
        ("otp_device_id", json!("a/b"), 26),
        ("otp_device_id", json!("x".repeat(129)), 26),
        ("otp_device_id", json!(12), 26),
        ("otp_device_description", json!(null), 25),
        ("otp_device_description", json!("nul \0 inside"), 26),
        ("otp_key", json!("GEZDGNBVGY3TQOJ"), 26), // 15 characters decode to 9 bytes: too weak
        ("otp_key", json!("GEZD GNBVGY3TQOJQGEZDGNBVGY3TQOJQ"), 26),
        ("otp_key", json!("GEZDGNBV=GY3TQOJQGEZDGNBVGY3TQOJQ"), 26),
        ("otp_key", json!("GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJ1"), 26),
        ("otp_ctr", json!(-1), 26),
        ("otp_ctr", json!(1.5), 26),
        ("otp_ctr", json!("3"), 26),
        ("otp_ctr", json!(9223372036854775808_u64), 26),
    ];
    for (field, value, code) in cases {
        let mut body = good.clone();
        body[field] = value.clone();
        let reply = app.post("/private/otp-devices", &body).await;
        assert_taler_error(&reply, StatusCode::BAD_REQUEST, code);
        assert!(
            reply.json["detail"]
                .as_str()
                .unwrap_or_default()
                .contains(field),
            "{field}={value}: {}",
            reply.text
        );
    }
    // Without a key the server generates one (§11), except for algorithm NONE.
    let mut missing = good.clone();
    missing.as_object_mut().unwrap().remove("otp_key");
    missing["otp_algorithm"] = json!(0);
    assert_taler_error(
        &app.post("/private/otp-devices", &missing).await,
        StatusCode::BAD_REQUEST,
        25,
    );
    assert_eq!(
        app.get("/private/otp-devices").await.json,
        json!({"otp_devices": []})
    );
}

#[tokio::test]
async fn weak_key_hint_says_why() {
    let app = spawn_app().await;
    let reply = app
        .post("/private/otp-devices", &json!({"otp_device_id": "w", "otp_device_description": "d", "otp_key": "MZXW6YTBOI", "otp_algorithm": 1}))
        .await;
    assert_taler_error(&reply, StatusCode::BAD_REQUEST, 26);
    assert!(
        reply.json["hint"].as_str().unwrap().contains("10 bytes"),
        "{}",
        reply.text
    );
}

#[tokio::test]
async fn standard_paddings_are_accepted() {
    let app = spawn_app().await;
    // 11 bytes: 18 characters + 6 padding in RFC 4648.
    for (i, key) in [
        "MFRGGZDFMZTWQ2LKNM",
        "MFRGGZDFMZTWQ2LKNM=",
        "MFRGGZDFMZTWQ2LKNM==",
        "MFRGGZDFMZTWQ2LKNM======",
    ]
    .iter()
    .enumerate()
    {
        app.add_device(&format!("k{i}"), key, json!(1)).await;
    }
    let a = app.get("/private/otp-devices/k0?faketime=1000").await.json["otp_code"].clone();
    let b = app.get("/private/otp-devices/k3?faketime=1000").await.json["otp_code"].clone();
    assert_eq!(a, b);
}

#[tokio::test]
async fn percent_encoded_ids_address_the_same_device() {
    let app = spawn_app().await;
    let id = "till 1 é+%";
    app.add_device(id, RFC_KEY, json!(1)).await;
    let reply = app
        .get("/private/otp-devices/till%201%20%C3%A9%2B%25?faketime=59")
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(reply.json["device_description"], format!("device {id}"));
    assert_eq!(
        app.get("/private/otp-devices").await.json["otp_devices"][0]["otp_device_id"],
        id
    );
    assert_eq!(
        app.delete("/instances/admin/private/otp-devices/till%201%20%C3%A9%2B%25")
            .await
            .status,
        StatusCode::NO_CONTENT
    );
}

#[tokio::test]
async fn default_instance_prefix_redirects_permanently() {
    let app = spawn_app().await;
    let reply = app.get("/instances/default/private/otp-devices?x=1").await;
    assert_eq!(reply.status, StatusCode::PERMANENT_REDIRECT);
    assert_eq!(reply.headers["location"], "/private/otp-devices?x=1");
}

#[tokio::test]
async fn the_default_instance_redirect_never_leaves_this_server() {
    let app = spawn_app().await;
    for (path, expected) in [
        ("/instances/default//evil.example/x", "/evil.example/x"),
        ("/instances/default/%5Cevil.example/x", "/evil.example/x"),
        ("/instances/default/%2F%2Fevil.example", "/evil.example"),
        ("/instances/default/\\/evil.example", "/evil.example"),
        ("/instances/default", "/"),
    ] {
        let reply = app.get(path).await;
        assert_eq!(reply.status, StatusCode::PERMANENT_REDIRECT, "{path}");
        let location = reply.headers["location"].to_str().unwrap();
        assert_eq!(location, expected, "{path}");
        assert!(
            location.starts_with('/') && !location.starts_with("//") && !location.contains('\\'),
            "{path} → {location}"
        );
    }
}

#[tokio::test]
async fn config_is_served_with_and_without_prefix() {
    let app = spawn_app().await;
    for path in ["/config", "/instances/admin/config"] {
        let reply = app.request(reqwest::Method::GET, path, None, None).await;
        assert_eq!(reply.status, StatusCode::OK, "{path}");
        assert_eq!(reply.json["name"], "taler-merchant");
        let version = reply.json["version"].as_str().unwrap();
        assert_eq!(version.split(':').count(), 3);
        let currency = reply.json["currency"].as_str().unwrap();
        let spec = &reply.json["currencies"][currency];
        assert!(spec["alt_unit_names"]["0"].is_string(), "{}", reply.text);
        assert!(spec["num_fractional_input_digits"].is_u64());
    }
    let unknown = app
        .request(reqwest::Method::GET, "/instances/nope/config", None, None)
        .await;
    assert_taler_error(&unknown, StatusCode::NOT_FOUND, 2000);
}

#[tokio::test]
async fn config_carries_every_field_strict_clients_require() {
    let app = spawn_app_with(|settings| {
        settings.exchanges = vec![otp_server::config::ExchangeConfig {
            base_url: "https://exchange.example/".to_owned(),
            currency: "KUDOS".to_owned(),
            master_pub: "A".repeat(52),
        }];
    })
    .await;
    let reply = app
        .request(reqwest::Method::GET, "/config", None, None)
        .await;
    let config = &reply.json;
    assert_eq!(config["version"], "32:0:22");
    for field in ["have_self_provisioning", "have_donau"] {
        assert_eq!(config[field], false, "{field}");
    }
    assert_eq!(config["payment_target_types"], "");
    assert!(config["default_persona"].is_string());
    assert_eq!(
        config["exchanges"][0]["base_url"],
        "https://exchange.example/"
    );
    assert_eq!(config["exchanges"][0]["currency"], "KUDOS");
    let currency = config["currency"].as_str().unwrap();
    assert_eq!(
        config["currencies"][currency]["common_amounts"],
        serde_json::json!([])
    );
    let unconfigured = spawn_app().await;
    let reply = unconfigured
        .request(reqwest::Method::GET, "/config", None, None)
        .await;
    assert_eq!(
        reply.json["exchanges"],
        serde_json::json!([]),
        "none by default"
    );
}

#[tokio::test]
async fn the_list_pages_with_limit_and_offset_and_lists_everything_without() {
    let app = spawn_app().await;
    for id in ["d1", "d2", "d3", "d4", "d5"] {
        app.add_device(id, RFC_KEY, json!(1)).await;
    }
    let ids = |reply: &otp_tests::Reply| -> Vec<String> {
        reply.json["otp_devices"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["otp_device_id"].as_str().unwrap().to_owned())
            .collect()
    };
    let all = app.get("/private/otp-devices").await;
    assert_eq!(
        ids(&all),
        ["d1", "d2", "d3", "d4", "d5"],
        "no parameters: every device"
    );
    let page = app.get("/private/otp-devices?limit=2&offset=1").await;
    assert_eq!(page.status, StatusCode::OK);
    assert_eq!(ids(&page), ["d2", "d3"]);
    let tail = app.get("/private/otp-devices?offset=4").await;
    assert_eq!(ids(&tail), ["d5"]);
    let past = app.get("/private/otp-devices?offset=9").await;
    assert!(ids(&past).is_empty());
    for query in [
        "limit=0",
        "limit=1001",
        "limit=x",
        "offset=-1",
        "offset=1.5",
    ] {
        let reply = app.get(&format!("/private/otp-devices?{query}")).await;
        assert_taler_error(&reply, StatusCode::BAD_REQUEST, 26);
    }
}
