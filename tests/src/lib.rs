//! The end-to-end harness: `spawn_app` starts the real server, built exactly as `taler-otp serve`
//! builds it (`Application::build`), on an ephemeral port against a fresh PostgreSQL database.

// A harness reports a broken set-up by panicking, like the tests it serves.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::indexing_slicing)]

use std::time::Duration;

use otp_server::Application;
use otp_server::config::Settings;
use otp_server::database::store_config;
use otp_store::testing::{TcpProxy, TestDb};
use otp_store::{InstanceId, Store, instances, tokens};
use reqwest::{Method, StatusCode};
use serde_json::Value;

/// A running server with its own database, an instance `admin` (the default) and tokens.
pub struct TestApp {
    /// Base URL, without a trailing slash.
    pub address: String,
    /// HTTP client.
    pub client: reqwest::Client,
    /// Direct access to the server's database.
    pub store: Store,
    /// `write` token of the default instance.
    pub write_token: String,
    /// `readonly` token of the default instance.
    pub read_token: String,
    /// The server, for stopping it.
    pub handle: actix_web::dev::ServerHandle,
    /// The database (dropped with the app).
    pub db: TestDb,
}

/// A response: status, headers and the body parsed as JSON (`Value::Null` when empty or not JSON).
pub struct Reply {
    /// HTTP status.
    pub status: StatusCode,
    /// Response headers.
    pub headers: reqwest::header::HeaderMap,
    /// Body as JSON.
    pub json: Value,
    /// Raw body.
    pub text: String,
}

/// Starts an app with default test settings.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// Starts an app after `adjust` has changed the test settings.
pub async fn spawn_app_with(adjust: impl FnOnce(&mut Settings)) -> TestApp {
    let db = TestDb::new().await;
    spawn_app_on(db, adjust).await
}

/// Starts an app serving `/metrics`, after `adjust` has changed the test settings.
pub async fn spawn_app_with_metrics(adjust: impl FnOnce(&mut Settings)) -> TestApp {
    spawn_app_with(|settings| {
        settings.metrics = true;
        adjust(settings);
    })
    .await
}

/// Starts an app on an existing test database (for a second server on the same database use
/// [`spawn_server`]).
pub async fn spawn_app_on(db: TestDb, adjust: impl FnOnce(&mut Settings)) -> TestApp {
    let url = db.url();
    let (address, handle, settings) = spawn_server(&url, adjust).await;
    let store = Store::connect(&store_config(&settings, &url)).expect("store");
    let admin = InstanceId::parse("admin").expect("id");
    instances::ensure(&store, &admin, "Admin")
        .await
        .expect("default instance");
    let (_, write) = tokens::create(&store, &admin, "write", None, "test write")
        .await
        .expect("token");
    let (_, read) = tokens::create(&store, &admin, "readonly", None, "test read")
        .await
        .expect("token");
    TestApp {
        address,
        client: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("client"),
        store,
        write_token: write.expose().to_owned(),
        read_token: read.expose().to_owned(),
        handle,
        db,
    }
}

/// Starts an app whose database connections go through a [`TcpProxy`] the test can take down,
/// with a database timeout of half a second, after `adjust` has changed the test settings.
pub async fn spawn_app_behind_proxy(adjust: impl FnOnce(&mut Settings)) -> (TestApp, TcpProxy) {
    let db = TestDb::new().await;
    let proxy = TcpProxy::start(db.upstream_addr()).await;
    let url = db.url_via(proxy.addr());
    let app = spawn_app_on(db, |settings| {
        settings.database_url = Some(zeroize::Zeroizing::new(url));
        settings.db_timeout = Duration::from_millis(500);
        adjust(settings);
    })
    .await;
    (app, proxy)
}

/// Starts a server on `database_url` exactly as `serve` does and returns its address.
pub async fn spawn_server(
    database_url: &str,
    adjust: impl FnOnce(&mut Settings),
) -> (String, actix_web::dev::ServerHandle, Settings) {
    let mut settings = Settings::for_tests(database_url).expect("test settings");
    adjust(&mut settings);
    let url = settings
        .database_url
        .as_deref()
        .map(String::as_str)
        .unwrap_or(database_url)
        .to_owned();
    let app = Application::build(&settings, &store_config(&settings, &url))
        .await
        .expect("app starts");
    let address = format!("http://127.0.0.1:{}", app.port().expect("tcp port"));
    let handle = app.handle();
    tokio::spawn(app.run_until_stopped());
    (address, handle, settings)
}

impl TestApp {
    /// Sends `method path` with an optional bearer token and JSON body.
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> Reply {
        let mut request = self
            .client
            .request(method, format!("{}{path}", self.address));
        if let Some(token) = token {
            request = request.header("Authorization", format!("Bearer {token}"));
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        reply(request.send().await.expect("request sent")).await
    }

    /// GET with the write token.
    pub async fn get(&self, path: &str) -> Reply {
        self.request(Method::GET, path, Some(&self.write_token), None)
            .await
    }

    /// POST JSON with the write token.
    pub async fn post(&self, path: &str, body: &Value) -> Reply {
        self.request(Method::POST, path, Some(&self.write_token), Some(body))
            .await
    }

    /// PATCH JSON with the write token.
    pub async fn patch(&self, path: &str, body: &Value) -> Reply {
        self.request(Method::PATCH, path, Some(&self.write_token), Some(body))
            .await
    }

    /// DELETE with the write token.
    pub async fn delete(&self, path: &str) -> Reply {
        self.request(Method::DELETE, path, Some(&self.write_token), None)
            .await
    }

    /// Registers a device on the default instance and asserts 204.
    pub async fn add_device(&self, id: &str, key: &str, algorithm: Value) {
        let reply = self
            .post(
                "/private/otp-devices",
                &serde_json::json!({
                    "otp_device_id": id,
                    "otp_device_description": format!("device {id}"),
                    "otp_key": key,
                    "otp_algorithm": algorithm,
                }),
            )
            .await;
        assert_eq!(
            reply.status,
            StatusCode::NO_CONTENT,
            "adding {id}: {}",
            reply.text
        );
    }
}

/// Reads a response into a [`Reply`].
pub async fn reply(response: reqwest::Response) -> Reply {
    let status = response.status();
    let headers = response.headers().clone();
    let text = response.text().await.expect("body");
    let json = serde_json::from_str(&text).unwrap_or(Value::Null);
    Reply {
        status,
        headers,
        json,
        text,
    }
}

/// Asserts a Taler error answer: the status and the `code`, and a non-empty `hint`.
pub fn assert_taler_error(reply: &Reply, status: StatusCode, code: u64) {
    assert_eq!(reply.status, status, "body: {}", reply.text);
    assert_eq!(reply.json["code"], code, "body: {}", reply.text);
    assert!(
        reply.json["hint"].as_str().is_some_and(|h| !h.is_empty()),
        "hint missing: {}",
        reply.text
    );
    assert_json_content_type(reply);
}

/// Asserts that `reply` is declared as JSON.
pub fn assert_json_content_type(reply: &Reply) {
    let content_type = reply
        .headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    assert!(
        content_type.starts_with("application/json"),
        "content type {content_type}"
    );
}

/// The `Retry-After` header of `reply`, in whole seconds.
pub fn retry_after(reply: &Reply) -> u64 {
    reply.headers["retry-after"]
        .to_str()
        .expect("ASCII Retry-After")
        .parse()
        .expect("Retry-After in seconds")
}

/// Asserts that `instance` validates against the schema `name` of the OpenAPI document `doc`.
pub fn assert_valid(doc: &Value, name: &str, instance: &Value) {
    let schema = serde_json::json!({
        "$ref": format!("#/components/schemas/{name}"),
        "components": doc["components"].clone(),
    });
    let validator = jsonschema::JSONSchema::options()
        .with_draft(jsonschema::Draft::Draft202012)
        .compile(&schema)
        .expect("schema compiles");
    if let Err(errors) = validator.validate(instance) {
        let messages: Vec<String> = errors.map(|e| e.to_string()).collect();
        panic!("{name} does not validate {instance}: {messages:?}");
    }
}

/// Polls `check` until it returns true or `within` passes; returns whether it did.
pub async fn eventually(within: Duration, mut check: impl AsyncFnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The RFC test key, `12345678901234567890` in base32.
pub const RFC_KEY: &str = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ";

impl TestApp {
    /// A new token of `scope` for the default instance.
    pub async fn token(&self, scope: &str) -> String {
        self.token_until(scope, None).await.1
    }

    /// `method path` with `token` and a JSON body, as that token's holder sends it.
    pub async fn send_as(&self, token: &str, method: Method, path: &str, body: &Value) -> Reply {
        self.request(method, path, Some(token), Some(body)).await
    }

    /// GET with `token`.
    pub async fn get_as(&self, token: &str, path: &str) -> Reply {
        self.request(Method::GET, path, Some(token), None).await
    }

    /// POST JSON with `token`.
    pub async fn post_as(&self, token: &str, path: &str, body: &Value) -> Reply {
        self.send_as(token, Method::POST, path, body).await
    }

    /// DELETE with `token`.
    pub async fn delete_as(&self, token: &str, path: &str) -> Reply {
        self.request(Method::DELETE, path, Some(token), None).await
    }

    /// `method path` without credentials, with an optional JSON body.
    pub async fn anonymous(&self, method: Method, path: &str, body: Option<&Value>) -> Reply {
        self.request(method, path, None, body).await
    }

    /// `POST path` with HTTP Basic `user:password` and a JSON body.
    pub async fn basic(&self, path: &str, user: &str, password: &str, body: &Value) -> Reply {
        let request = self
            .client
            .post(format!("{}{path}", self.address))
            .basic_auth(user, Some(password))
            .json(body);
        reply(request.send().await.expect("request sent")).await
    }

    /// Creates the instance `id` named `name` and returns a new `write` token for it.
    pub async fn new_instance(&self, id: &str, name: &str) -> String {
        let instance = InstanceId::parse(id).expect("id");
        instances::create(&self.store, &instance, name)
            .await
            .expect("instance");
        let (_, secret) = tokens::create(&self.store, &instance, "write", None, "test")
            .await
            .expect("token");
        secret.expose().to_owned()
    }

    /// A new token of `scope` for the default instance expiring at `expires`, with its serial.
    pub async fn token_until(
        &self,
        scope: &str,
        expires: Option<chrono::DateTime<chrono::Utc>>,
    ) -> (i64, String) {
        let admin = InstanceId::parse("admin").expect("id");
        let (token, secret) = tokens::create(&self.store, &admin, scope, expires, "test")
            .await
            .expect("token");
        (token.serial, secret.expose().to_owned())
    }

    /// Sets the default instance's password through the API with the write token; asserts 204.
    pub async fn set_password(&self, password: &str) {
        let body = serde_json::json!({"method": "token", "password": password});
        let set = self.post("/private/auth", &body).await;
        assert_eq!(set.status, StatusCode::NO_CONTENT, "{}", set.text);
    }

    /// `POST …/otp-devices/{device}/confirmations` with the write token.
    pub async fn confirm(&self, device: &str, body: &Value) -> Reply {
        self.post(
            &format!("/private/otp-devices/{device}/confirmations"),
            body,
        )
        .await
    }

    /// `POST …/otp-devices/{device}/verifications` with the write token.
    pub async fn verify(&self, device: &str, body: &Value) -> Reply {
        self.post(
            &format!("/private/otp-devices/{device}/verifications"),
            body,
        )
        .await
    }

    /// `POST …/otp-devices/{device}/unlock` without a body, with the write token.
    pub async fn unlock(&self, device: &str) -> Reply {
        let path = format!("/private/otp-devices/{device}/unlock");
        self.request(Method::POST, &path, Some(&self.write_token), None)
            .await
    }

    /// The OpenAPI document as the server serves it.
    pub async fn openapi(&self) -> Value {
        self.anonymous(Method::GET, "/openapi.json", None)
            .await
            .json
    }
}
