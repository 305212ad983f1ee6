//! §12: logging in as upstream does — tokens from the instance password (HTTP Basic) or from a
//! refreshable token, expiry, listing, revocation (also across processes), the password itself,
//! failed-login throttling; and §7's scope → permission table for every scope.

use std::time::Duration;

use otp_server::password::hash_password;
use otp_store::{InstanceId, instances};
use otp_tests::{
    RFC_KEY, TestApp, assert_taler_error, assert_valid, eventually, reply, retry_after, spawn_app,
};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const PASSWORD: &str = "correct horse battery staple";

/// Starts an app whose default instance has the password [`PASSWORD`].
async fn spawn_app_with_password() -> TestApp {
    let app = spawn_app().await;
    app.set_password(PASSWORD).await;
    app
}

/// Logs in to the default instance with the password and returns the answer's body.
async fn login(app: &TestApp, body: Value) -> Value {
    let answer = app.basic("/private/token", "admin", PASSWORD, &body).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    answer.json
}

/// Creates the instance `shop` with the password `shop password`.
async fn given_shop_with_password(app: &TestApp) {
    let shop = InstanceId::parse("shop").unwrap();
    instances::create(&app.store, &shop, "Shop").await.unwrap();
    let hash = hash_password("shop password").unwrap();
    instances::set_password_hash(&app.store, &shop, Some(&hash))
        .await
        .unwrap();
}

/// Logs in to `shop` with its password and returns the answer's body.
async fn login_to_shop(app: &TestApp, body: &Value) -> Value {
    let path = "/instances/shop/private/token";
    let answer = app.basic(path, "shop", "shop password", body).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    answer.json
}

/// Asserts that `token` may not list the tokens: 403.
async fn assert_lists_no_tokens(app: &TestApp, token: &str) {
    let listed = app.get_as(token, "/private/tokens").await;
    assert_taler_error(&listed, StatusCode::FORBIDDEN, 16);
}

fn token_of(answer: &Value) -> String {
    answer["access_token"].as_str().unwrap().to_owned()
}

/// The status of `GET path` with `token`.
async fn status_with(app: &TestApp, token: &str, path: &str) -> StatusCode {
    app.get_as(token, path).await.status
}

/// `POST /private/token` asking for `scope`, authenticated by `token`.
async fn refresh(app: &TestApp, token: &str, scope: &str) -> otp_tests::Reply {
    let body = json!({"scope": scope});
    app.post_as(token, "/private/token", &body).await
}

fn now_seconds() -> i64 {
    chrono::Utc::now().timestamp()
}

#[tokio::test]
async fn the_right_password_gives_a_token_of_the_scope_asked_for() {
    let app = spawn_app_with_password().await;

    let answer = login(&app, json!({"scope": "readonly", "description": "laptop"})).await;

    let token = token_of(&answer);
    assert!(token.starts_with("secret-token:"), "{answer}");
    assert_eq!(answer["token"], answer["access_token"]);
    assert_eq!(answer["scope"], "readonly");
    assert_eq!(answer["refreshable"], false);
    // Without `duration`, one day.
    let expires = answer["expiration"]["t_s"].as_i64().unwrap();
    assert!((expires - now_seconds() - 86_400).abs() <= 5, "{answer}");
    assert_eq!(
        status_with(&app, &token, "/private/otp-devices").await,
        StatusCode::OK
    );
    let device = json!({"otp_device_id": "d", "otp_device_description": "d", "otp_key": RFC_KEY, "otp_algorithm": 1});
    let write = app.post_as(&token, "/private/otp-devices", &device).await;
    assert_taler_error(&write, StatusCode::FORBIDDEN, 16);
    // The prefixed path with the instance's own id as user works alike.
    let prefixed = app
        .basic(
            "/instances/admin/private/token",
            "admin",
            PASSWORD,
            &json!({"scope": "all"}),
        )
        .await;
    assert_eq!(prefixed.status, StatusCode::OK, "{}", prefixed.text);
}

#[tokio::test]
async fn wrong_passwords_users_and_missing_credentials_are_401_and_unknown_instances_404() {
    let app = spawn_app().await;
    let body = json!({"scope": "readonly"});
    // An instance without a password: no password opens it.
    app.new_instance("shop", "Shop").await;
    for password in ["", PASSWORD] {
        assert_taler_error(
            &app.basic("/instances/shop/private/token", "shop", password, &body)
                .await,
            StatusCode::UNAUTHORIZED,
            2015,
        );
    }
    app.set_password(PASSWORD).await;

    for (user, password) in [
        ("admin", "wrong"),
        ("admin", ""),
        ("Admin", PASSWORD),
        ("other", PASSWORD),
    ] {
        let answer = app.basic("/private/token", user, password, &body).await;
        assert_taler_error(&answer, StatusCode::UNAUTHORIZED, 2015);
    }
    let none = app
        .anonymous(Method::POST, "/private/token", Some(&body))
        .await;
    assert_taler_error(&none, StatusCode::UNAUTHORIZED, 2015);
    let garbage = reply(
        app.client
            .post(format!("{}/private/token", app.address))
            .header("Authorization", "Basic %%%")
            .json(&body)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_taler_error(&garbage, StatusCode::UNAUTHORIZED, 2015);
    let unknown = app
        .basic("/instances/nope/private/token", "nope", PASSWORD, &body)
        .await;
    assert_taler_error(&unknown, StatusCode::NOT_FOUND, 2000);
    let unknown_bearer = app
        .post_as(&app.write_token, "/instances/nope/private/token", &body)
        .await;
    assert_taler_error(&unknown_bearer, StatusCode::NOT_FOUND, 2000);
}

#[tokio::test]
async fn instances_are_isolated_the_user_is_the_instance_id() {
    let app = spawn_app_with_password().await;
    given_shop_with_password(&app).await;
    let body = json!({"scope": "write"});

    // The admin instance's user and password do not open the shop, nor the other way round.
    for (user, password) in [
        ("admin", PASSWORD),
        ("shop", PASSWORD),
        ("admin", "shop password"),
    ] {
        let answer = app
            .basic("/instances/shop/private/token", user, password, &body)
            .await;
        assert_taler_error(&answer, StatusCode::UNAUTHORIZED, 2015);
    }
    let shop_login = login_to_shop(&app, &body).await;
    let shop_token = token_of(&shop_login);
    assert_eq!(
        status_with(&app, &shop_token, "/instances/shop/private/otp-devices").await,
        StatusCode::OK
    );
    assert_eq!(
        status_with(&app, &shop_token, "/private/otp-devices").await,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn a_refreshable_token_creates_tokens_of_its_own_or_a_narrower_scope_only() {
    let app = spawn_app_with_password().await;
    let full = login(&app, json!({"scope": "order-full:refreshable"})).await;
    assert_eq!(full["scope"], "order-full");
    assert_eq!(full["refreshable"], true);
    let full = token_of(&full);

    for scope in [
        "order-full",
        "order-full:refreshable",
        "order-pos",
        "order-mgmt",
        "order-simple:refreshable",
    ] {
        let answer = refresh(&app, &full, scope).await;
        assert_eq!(answer.status, StatusCode::OK, "{scope}: {}", answer.text);
        assert_eq!(
            answer.json["refreshable"],
            scope.ends_with(":refreshable"),
            "{scope}"
        );
    }
    for scope in ["readonly", "write", "all", "admin", "admin:refreshable"] {
        let answer = refresh(&app, &full, scope).await;
        assert_taler_error(&answer, StatusCode::FORBIDDEN, 16);
    }
    let root = refresh(&app, &full, "root").await;
    assert_taler_error(&root, StatusCode::BAD_REQUEST, 26);

    // A token from a refresh works, and a narrower refreshable one narrows again.
    let pos = refresh(&app, &full, "order-pos:refreshable").await;
    let pos = token_of(&pos.json);
    let simple = refresh(&app, &pos, "order-simple").await;
    assert_eq!(simple.status, StatusCode::OK);
    let mgmt = refresh(&app, &pos, "order-mgmt").await;
    assert_eq!(mgmt.status, StatusCode::FORBIDDEN);

    // Non-refreshable tokens, even the widest, may not create tokens: 403.
    for token in [app.write_token.clone(), app.token("admin").await] {
        let answer = refresh(&app, &token, "readonly").await;
        assert_taler_error(&answer, StatusCode::FORBIDDEN, 16);
    }
    // Tokens stored with the older spelling `.refreshable` refresh too.
    let old = app.token("readonly.refreshable").await;
    let answer = refresh(&app, &old, "readonly").await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
}

#[tokio::test]
async fn tokens_expire_as_asked_and_forever_never_does() {
    let app = spawn_app_with_password().await;

    let short = login(
        &app,
        json!({"scope": "readonly", "duration": {"d_us": 1_000_000}}),
    )
    .await;
    let forever = login(
        &app,
        json!({"scope": "readonly", "duration": {"d_us": "forever"}}),
    )
    .await;
    assert_eq!(forever["expiration"], json!({"t_s": "never"}));
    let short_token = token_of(&short);
    assert!(
        (short["expiration"]["t_s"].as_i64().unwrap() - now_seconds()).abs() <= 2,
        "{short}"
    );
    assert_eq!(
        status_with(&app, &short_token, "/private/otp-devices").await,
        StatusCode::OK
    );

    tokio::time::sleep(Duration::from_millis(1_500)).await;

    assert_eq!(
        status_with(&app, &short_token, "/private/otp-devices").await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        status_with(&app, &token_of(&forever), "/private/otp-devices").await,
        StatusCode::OK
    );
    let negative = json!({"scope": "readonly", "duration": {"d_us": -5}});
    let bad = app
        .basic("/private/token", "admin", PASSWORD, &negative)
        .await;
    assert_taler_error(&bad, StatusCode::BAD_REQUEST, 26);
}

#[tokio::test]
async fn listing_shows_every_token_by_serial_and_never_a_secret() {
    let app = spawn_app_with_password().await;
    let a = login(
        &app,
        json!({"scope": "order-pos:refreshable", "description": "till"}),
    )
    .await;
    let b = login(
        &app,
        json!({"scope": "readonly", "duration": {"d_us": "forever"}}),
    )
    .await;

    let listed = app.get("/private/tokens").await;

    assert_eq!(listed.status, StatusCode::OK, "{}", listed.text);
    let tokens = listed.json["tokens"].as_array().unwrap();
    // The harness's write and readonly tokens, then the two logins.
    assert_eq!(tokens.len(), 4, "{}", listed.text);
    let serials: Vec<i64> = tokens
        .iter()
        .map(|t| t["serial"].as_i64().unwrap())
        .collect();
    assert!(serials.windows(2).all(|w| w[0] < w[1]), "{serials:?}");
    let till = &tokens[2];
    assert_eq!(till["scope"], "order-pos");
    assert_eq!(till["refreshable"], true);
    assert_eq!(till["description"], "till");
    assert!(till["creation_time"]["t_s"].as_i64().unwrap() > 0);
    assert_eq!(tokens[3]["expiration"], json!({"t_s": "never"}));
    assert_eq!(tokens[0]["expiration"], json!({"t_s": "never"}));
    for secret in [
        token_of(&a),
        token_of(&b),
        app.write_token.clone(),
        app.read_token.clone(),
    ] {
        let bare = secret.strip_prefix("secret-token:").unwrap();
        assert!(!listed.text.contains(bare), "a secret is listed");
    }
    for entry in tokens {
        let mut keys: Vec<&str> = entry
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            [
                "creation_time",
                "description",
                "expiration",
                "refreshable",
                "scope",
                "serial"
            ]
        );
    }
    // Only admin scopes list tokens.
    for token in [app.read_token.clone(), token_of(&a)] {
        assert_lists_no_tokens(&app, &token).await;
    }
}

#[tokio::test]
async fn revoked_tokens_are_refused_by_serial_or_by_logging_out() {
    let app = spawn_app_with_password().await;
    let victim = token_of(&login(&app, json!({"scope": "readonly"})).await);
    let leaving = token_of(&login(&app, json!({"scope": "order-simple"})).await);
    assert_eq!(
        status_with(&app, &victim, "/private/otp-devices").await,
        StatusCode::OK
    );
    let listed = app.get("/private/tokens").await;
    let serial = listed.json["tokens"][2]["serial"].as_i64().unwrap();

    let revoked = app.delete(&format!("/private/tokens/{serial}")).await;
    assert_eq!(revoked.status, StatusCode::NO_CONTENT, "{}", revoked.text);
    assert_eq!(
        status_with(&app, &victim, "/private/otp-devices").await,
        StatusCode::UNAUTHORIZED
    );
    assert_taler_error(
        &app.delete(&format!("/private/tokens/{serial}")).await,
        StatusCode::NOT_FOUND,
        9904,
    );
    assert_taler_error(
        &app.delete("/private/tokens/abc").await,
        StatusCode::BAD_REQUEST,
        26,
    );
    let next = format!("/private/tokens/{}", serial + 1);
    let by_reader = app.delete_as(&app.read_token, &next).await;
    assert_taler_error(&by_reader, StatusCode::FORBIDDEN, 16);

    // Logging out: any token revokes itself, and only itself.
    let out = app.delete_as(&leaving, "/private/token").await;
    assert_eq!(out.status, StatusCode::NO_CONTENT, "{}", out.text);
    let again = app.delete_as(&leaving, "/private/token").await;
    assert_taler_error(&again, StatusCode::UNAUTHORIZED, 2015);
    assert_eq!(
        status_with(&app, &app.read_token, "/private/otp-devices").await,
        StatusCode::OK
    );
    let remaining = app.get("/private/tokens").await;
    assert_eq!(remaining.json["tokens"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn a_revocation_reaches_another_server_process_within_the_cache_bound() {
    let app = spawn_app().await;
    let (second, _handle, _) = otp_tests::spawn_server(&app.db.url(), |_| {}).await;
    let token = app.token("readonly").await;
    let on_second = |token: String| {
        let client = app.client.clone();
        let url = format!("{second}/private/otp-devices");
        async move {
            client
                .get(&url)
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    // The second server has the token cached.
    assert_eq!(on_second(token.clone()).await, StatusCode::OK);

    let out = app.delete_as(&token, "/private/token").await;
    assert_eq!(out.status, StatusCode::NO_CONTENT);

    assert!(
        eventually(Duration::from_secs(2), async || {
            on_second(token.clone()).await == StatusCode::UNAUTHORIZED
        })
        .await,
        "the second process still accepts the revoked token"
    );
}

#[tokio::test]
async fn the_password_is_set_through_the_api_by_admin_scopes_only() {
    let app = spawn_app().await;
    app.set_password("first").await;
    app.set_password(PASSWORD).await;
    let old = app
        .basic("/private/token", "admin", "first", &json!({"scope": "all"}))
        .await;
    assert_taler_error(&old, StatusCode::UNAUTHORIZED, 2015);
    login(&app, json!({"scope": "all"})).await;

    let body = json!({"method": "token", "password": "x"});
    let by_reader = app.post_as(&app.read_token, "/private/auth", &body).await;
    assert_taler_error(&by_reader, StatusCode::FORBIDDEN, 16);
    for (body, code) in [
        (json!({"method": "token", "password": ""}), 26),
        (json!({"method": "token", "password": "x".repeat(1025)}), 26),
        (json!({"method": "external"}), 26),
        (json!({"method": "token"}), 25),
    ] {
        assert_taler_error(
            &app.post("/private/auth", &body).await,
            StatusCode::BAD_REQUEST,
            code,
        );
    }
    // The password is stored as an Argon2id hash, never as itself.
    let admin = InstanceId::parse("admin").unwrap();
    let hash = instances::password_hash(&app.store, &admin)
        .await
        .unwrap()
        .unwrap();
    assert!(hash.starts_with("$argon2id$") && !hash.contains(PASSWORD));
}

#[tokio::test]
async fn five_failures_throttle_basic_logins_even_with_the_right_password() {
    let app = spawn_app_with_password().await;
    given_shop_with_password(&app).await;
    let body = json!({"scope": "readonly:refreshable"});
    // A success before the limit changes no count.
    let refreshable = login(&app, body.clone()).await;

    for (user, password) in [
        ("admin", "wrong 1"),
        ("admin", "wrong 2"),
        ("somebody", PASSWORD),
        ("admin", "wrong 4"),
        ("admin", "wrong 5"),
    ] {
        let answer = app.basic("/private/token", user, password, &body).await;
        assert_taler_error(&answer, StatusCode::UNAUTHORIZED, 2015);
    }

    for password in [PASSWORD, "wrong 6"] {
        let refused = app.basic("/private/token", "admin", password, &body).await;
        assert_taler_error(&refused, StatusCode::TOO_MANY_REQUESTS, 9903);
        let retry_after = retry_after(&refused);
        assert!((1..=60).contains(&retry_after), "{retry_after}");
        assert_eq!(refused.json["detail"], retry_after.to_string());
    }
    // Another instance from the same address is not throttled; bearer refreshes are not either.
    login_to_shop(&app, &body).await;
    let refreshed = refresh(&app, &token_of(&refreshable), "readonly").await;
    assert_eq!(refreshed.status, StatusCode::OK, "{}", refreshed.text);
}

/// The permission each scope grants (§7, §10), with and without `:refreshable`: `readonly` the
/// `*-read` ones, `write`/`all`/`admin` every one, `order-pos`/`order-full` only
/// `otp-devices-verify`, the other `order-*` none.
#[tokio::test]
async fn every_scope_grants_exactly_its_permissions() {
    let app = spawn_app().await;
    app.add_device("d", RFC_KEY, json!(1)).await;
    let table: [(&str, [bool; 3]); 8] = [
        // (scope, [read, write, verify])
        ("readonly", [true, false, false]),
        ("write", [true, true, true]),
        ("all", [true, true, true]),
        ("admin", [true, true, true]),
        ("order-simple", [false, false, false]),
        ("order-pos", [false, false, true]),
        ("order-mgmt", [false, false, false]),
        ("order-full", [false, false, true]),
    ];
    for (scope, [read, write, verify]) in table {
        for stored in [scope.to_owned(), format!("{scope}:refreshable")] {
            let token = app.token(&stored).await;
            let expect = |granted: bool, ok: StatusCode| {
                if granted { ok } else { StatusCode::FORBIDDEN }
            };
            for path in ["/private/otp-devices", "/private/otp-devices/d"] {
                let answer = app.get_as(&token, path).await;
                assert_eq!(answer.status, expect(read, StatusCode::OK), "{stored} read");
            }
            let patch = json!({"otp_device_description": "d"});
            let code = json!({"code": "00000000"});
            let device = "/private/otp-devices/d";
            let verifications = "/private/otp-devices/d/verifications";
            let patched = expect(write, StatusCode::NO_CONTENT);
            let verified = expect(verify, StatusCode::OK);
            for (method, path, body, expected, what) in [
                (Method::PATCH, device, &patch, patched, "write"),
                (Method::POST, verifications, &code, verified, "verify"),
            ] {
                let answer = app.send_as(&token, method, path, body).await;
                assert_eq!(answer.status, expected, "{stored} {what}: {}", answer.text);
            }
            // Mismatches would lock the device after a few scopes.
            let unlocked = app.unlock("d").await;
            assert_eq!(unlocked.status, StatusCode::NO_CONTENT, "{}", unlocked.text);
            if !(read && write && verify) {
                assert_lists_no_tokens(&app, &token).await;
            }
        }
    }
}

#[tokio::test]
async fn answers_match_the_openapi_schemas() {
    let app = spawn_app_with_password().await;
    let doc = app.openapi().await;
    let answer = login(
        &app,
        json!({"scope": "readonly", "duration": {"d_us": "forever"}}),
    )
    .await;
    let listed = app.get("/private/tokens").await.json;

    for (schema, instance) in [
        ("LoginTokenSuccessResponse", &answer),
        ("TokenInfos", &listed),
    ] {
        assert_valid(&doc, schema, instance);
    }
    assert!(doc["components"]["securitySchemes"]["basic"].is_object());
    assert!(doc["paths"]["/private/token"]["post"].is_object());
    assert!(doc["paths"]["/instances/{instance}/private/tokens/{serial}"]["delete"].is_object());
}
