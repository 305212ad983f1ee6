//! §13 with §11: the operator page in a real browser. Headless Chromium, driven through
//! chromedriver (WebDriver), signs in, enrols a device with a generated key, reads the QR code
//! off the page, compares the live code with the API's, edits and deletes the device, and is
//! refused a wrong token; screenshots at desktop and phone widths are saved on the way.
//!
//! Needs Debian's `chromium` and `chromium-driver`. Without them the test is skipped outside
//! CI and fails in CI (`CI=true`). `UPDATE_SCREENSHOTS=1` writes the screenshots to
//! `docs/screenshots/`, otherwise they go to `target/screenshots/`.

use std::future::Future;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use futures_util::FutureExt;
use hyper_util::client::legacy::connect::HttpConnector;
use otp_algo::{Algorithm, OtpKey};
use otp_tests::{TestApp, spawn_app};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::enrolment::decode_qr_png;

/// The browser Debian installs.
const CHROMIUM: &str = "/usr/bin/chromium";

/// How long to wait for anything the page does.
const PATIENCE: Duration = Duration::from_secs(20);

/// `name` on `PATH`, or `None`.
fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

/// Whether this run is CI's, where a missing browser is a failure rather than a skip.
fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0")
}

/// chromedriver, running on a free port of the loopback interface until dropped, with
/// Chromium's profile in a temporary directory.
struct Driver {
    child: Child,
    port: u16,
    profile: tempfile::TempDir,
}

impl Driver {
    /// Starts chromedriver, or `None` (after saying why) when it or Chromium is missing and
    /// this is not CI.
    fn start() -> Option<Driver> {
        let driver = on_path("chromedriver");
        let browser = Path::new(CHROMIUM).is_file();
        let Some(driver) = driver.filter(|_| browser) else {
            let why = "chromedriver or /usr/bin/chromium is missing (Debian: apt-get install chromium chromium-driver)";
            if in_ci() {
                panic!("the browser test cannot run in CI: {why}");
            }
            eprintln!("SKIPPED webui browser test: {why}");
            return None;
        };
        let profile = tempfile::Builder::new()
            .prefix("taler-otp-webui-")
            .tempdir()
            .expect("temporary profile directory");
        for _ in 0..5 {
            let port = free_port();
            let mut child = Command::new(&driver)
                .arg(format!("--port={port}"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("chromedriver starts");
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break; // The port was taken after all: try another.
                }
                let addr = SocketAddr::from(([127, 0, 0, 1], port));
                if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                    return Some(Driver {
                        child,
                        port,
                        profile,
                    });
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("chromedriver did not start listening");
    }

    /// A WebDriver session with headless Chromium at 1280×900.
    async fn connect(&self) -> Client {
        let args = [
            "--headless=new".to_owned(),
            "--no-sandbox".to_owned(),
            "--disable-gpu".to_owned(),
            "--disable-dev-shm-usage".to_owned(),
            "--disable-quic".to_owned(),
            "--no-first-run".to_owned(),
            "--disable-background-networking".to_owned(),
            "--disable-component-update".to_owned(),
            "--disable-sync".to_owned(),
            format!("--user-data-dir={}", self.profile.path().display()),
            "--window-size=1280,900".to_owned(),
        ];
        let capabilities = json!({
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": CHROMIUM, "args": args},
        });
        let Value::Object(capabilities) = capabilities else {
            unreachable!("a JSON object");
        };
        ClientBuilder::new(HttpConnector::new())
            .capabilities(capabilities)
            .connect(&format!("http://127.0.0.1:{}", self.port))
            .await
            .expect("a WebDriver session with Chromium")
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port nobody listens on right now.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port()
}

/// Polls `probe` until it returns `Some`, for at most [`PATIENCE`]; panics naming `what`.
async fn until<T, F, Fut>(what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Runs `script` in the page and returns its value.
async fn js(client: &Client, script: &str) -> Value {
    client
        .execute(script, Vec::new())
        .await
        .unwrap_or_else(|err| panic!("script {script:?} failed: {err}"))
}

/// Waits until `document.getElementById(id)` exists and is not hidden.
async fn until_shown(client: &Client, id: &str) {
    let script = format!("const e = document.getElementById({id:?}); return !!e && !e.hidden;");
    until(&format!("#{id} to show"), || async {
        (js(client, &script).await == Value::Bool(true)).then_some(())
    })
    .await;
}

/// The text of the element with `id`.
async fn text_of(client: &Client, id: &str) -> String {
    let script = format!("return document.getElementById({id:?}).textContent;");
    js(client, &script)
        .await
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// Waits until the message region shows `kind` ("error", "success", …) with a text
/// containing `needle`, and returns the text.
async fn until_message(client: &Client, kind: &str, needle: &str) -> String {
    until(&format!("a {kind} message containing {needle:?}"), || async {
        let state = js(
            client,
            "const m = document.getElementById('message'); return [m.dataset.kind || '', m.textContent];",
        )
        .await;
        let (shown_kind, text) = (state[0].as_str()?, state[1].as_str()?);
        (shown_kind == kind && text.contains(needle)).then(|| text.to_owned())
    })
    .await
}

/// Replaces the value of the input `id` by typing `text`.
async fn type_into(client: &Client, id: &str, text: &str) {
    let input = client.find(Locator::Id(id)).await.expect(id);
    input.clear().await.expect("clear");
    input.send_keys(text).await.expect("type");
}

async fn click(client: &Client, id: &str) {
    client
        .find(Locator::Id(id))
        .await
        .unwrap_or_else(|err| panic!("#{id}: {err}"))
        .click()
        .await
        .unwrap_or_else(|err| panic!("clicking #{id}: {err}"));
}

/// Where screenshots go: `docs/screenshots/` with `UPDATE_SCREENSHOTS=1`, else
/// `target/screenshots/`.
fn screenshot_dir() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let dir = if std::env::var_os("UPDATE_SCREENSHOTS").is_some_and(|v| v != "0") {
        root.join("docs/screenshots")
    } else {
        std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| root.join("target"))
            .join("screenshots")
    };
    std::fs::create_dir_all(&dir).expect("screenshot directory");
    dir
}

/// Sizes the window so that the page's viewport is `width`×`height` CSS pixels (the window
/// is larger by its frame).
async fn set_viewport(client: &Client, width: u32, height: u32) {
    client
        .set_window_size(width, height)
        .await
        .expect("window size");
    let inner = js(client, "return [window.innerWidth, window.innerHeight];").await;
    let frame = |i: usize, wanted: u32| {
        let got = inner[i].as_u64().expect("a size") as u32;
        wanted + wanted.saturating_sub(got)
    };
    client
        .set_window_size(frame(0, width), frame(1, height))
        .await
        .expect("window size");
}

/// Sets the viewport to `width`×`height`, scrolls the element `id` to the top (or the page to
/// its top), lets the layout settle, and saves a screenshot as `name`.
async fn screenshot(client: &Client, width: u32, height: u32, id: Option<&str>, name: &str) {
    set_viewport(client, width, height).await;
    let script = match id {
        Some(id) => format!(
            "document.getElementById({id:?}).scrollIntoView({{block: 'start', behavior: 'instant'}}); return null;"
        ),
        None => "window.scrollTo({top: 0, behavior: 'instant'}); return null;".to_owned(),
    };
    js(client, &script).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let png = client.screenshot().await.expect("screenshot");
    let decoded = image::load_from_memory(&png).expect("the screenshot is an image");
    assert_eq!(
        (decoded.width(), decoded.height()),
        (width, height),
        "the screenshot shows the viewport"
    );
    let path = screenshot_dir().join(name);
    std::fs::write(&path, png).expect("screenshot saved");
    eprintln!("saved {}", path.display());
}

/// The API's code for the device at `timestamp`: the middle one of the five (TOTP).
async fn api_code(app: &TestApp, id: &str, timestamp: u64) -> String {
    let one = app
        .get(&format!("/private/otp-devices/{id}?faketime={timestamp}"))
        .await;
    assert_eq!(one.status, StatusCode::OK, "{}", one.text);
    let codes: Vec<&str> = one.json["otp_code"]
        .as_str()
        .expect("a code")
        .split('\n')
        .collect();
    assert_eq!(codes.len(), 5);
    codes[2].to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_page_enrols_shows_codes_edits_deletes_and_refuses_a_wrong_token() {
    let Some(driver) = Driver::start() else {
        return;
    };
    let app = spawn_app().await;
    let client = driver.connect().await;
    // The session is closed (and Chromium with it) whether the walk passes or panics.
    let outcome = AssertUnwindSafe(walk_the_page(&app, &client))
        .catch_unwind()
        .await;
    let _ = client.close().await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

async fn walk_the_page(app: &TestApp, client: &Client) {
    client
        .goto(&format!("{}/webui/", app.address))
        .await
        .expect("the page loads");
    assert_eq!(client.title().await.expect("title"), "taler-otp");

    // Sign in with the write token.
    until_shown(client, "login-view").await;
    type_into(client, "login-instance", "admin").await;
    type_into(client, "login-token", &app.write_token).await;
    click(client, "login-submit").await;
    until_shown(client, "app-view").await;
    assert_eq!(text_of(client, "session-instance").await, "admin");
    until_shown(client, "device-empty").await;

    // Enrol a TOTP device with a generated key.
    type_into(client, "add-id", "till-1").await;
    type_into(client, "add-description", "Till 1, front desk").await;
    client
        .find(Locator::Id("add-algorithm"))
        .await
        .expect("algorithm select")
        .select_by_value("1")
        .await
        .expect("TOTP_WITHOUT_PRICE");
    let generate = client
        .find(Locator::Id("add-generate"))
        .await
        .expect("generate checkbox");
    assert!(
        generate.is_selected().await.expect("checked"),
        "generating is the default"
    );
    click(client, "add-submit").await;
    until_shown(client, "enrolment").await;
    until_message(client, "success", "till-1").await;

    // The QR code on the page holds the URI the page shows, which holds the key it shows.
    let src = client
        .find(Locator::Id("enrolment-qr"))
        .await
        .expect("QR image")
        .attr("src")
        .await
        .expect("src")
        .expect("the QR image has a source");
    let base64 = src
        .strip_prefix("data:image/png;base64,")
        .unwrap_or_else(|| panic!("not a PNG data URI: {}", &src[..src.len().min(40)]));
    let png = data_encoding::BASE64
        .decode(base64.as_bytes())
        .expect("base64");
    let uri = decode_qr_png(&png);
    assert_eq!(uri, text_of(client, "enrolment-uri").await);
    let url = url::Url::parse(&uri).expect("URI");
    assert_eq!(url.host_str(), Some("totp"));
    assert_eq!(url.path(), "/Admin:till-1");
    let secret = url
        .query_pairs()
        .find(|(k, _)| k == "secret")
        .map(|(_, v)| v.into_owned())
        .expect("secret");
    assert_eq!(secret, text_of(client, "enrolment-key").await);
    let key = OtpKey::from_base32(&secret).expect("key");

    // The live code is the API's code for the time the page shows, and the key's.
    let (code, timestamp) = until("the live code", || async {
        let state = js(
            client,
            "return [document.getElementById('code-current').textContent, document.getElementById('code-timestamp').textContent];",
        )
        .await;
        let code = state[0].as_str()?.to_owned();
        let timestamp = state[1].as_str()?.parse::<u64>().ok()?;
        (code.len() == 8 && code.bytes().all(|b| b.is_ascii_digit())).then_some((code, timestamp))
    })
    .await;
    assert_eq!(code, api_code(app, "till-1", timestamp).await);
    let from_key = otp_algo::confirmation(&key, Algorithm::TotpWithoutPrice, None, timestamp, 0)
        .expect("a code");
    assert_eq!(from_key.split('\n').nth(2), Some(code.as_str()));

    // Screenshots with the enrolment panel and the device open.
    tokio::time::sleep(Duration::from_millis(800)).await; // The panel scrolls into view smoothly.
    screenshot(client, 1280, 900, None, "webui-desktop.png").await;
    screenshot(client, 390, 844, Some("enrolment"), "webui-phone.png").await;
    set_viewport(client, 1280, 900).await;

    // Done with the key: the panel forgets it.
    click(client, "enrolment-done").await;
    assert_eq!(text_of(client, "enrolment-key").await, "");

    // Edit the description.
    client
        .find(Locator::XPath(
            "//summary[normalize-space()='Edit the description']",
        ))
        .await
        .expect("edit section")
        .click()
        .await
        .expect("open the edit section");
    type_into(client, "edit-description", "Till 1, back office").await;
    click(client, "edit-submit").await;
    until_message(client, "success", "saved").await;
    let one = app.get("/private/otp-devices/till-1").await;
    assert_eq!(one.json["device_description"], "Till 1, back office");
    until("the list to show the new description", || async {
        text_of(client, "device-list")
            .await
            .contains("Till 1, back office")
            .then_some(())
    })
    .await;

    // Delete it, confirming.
    click(client, "delete-device").await;
    until_shown(client, "delete-confirmation").await;
    click(client, "delete-confirm").await;
    until_message(client, "success", "deleted").await;
    assert_eq!(
        app.get("/private/otp-devices/till-1").await.status,
        StatusCode::NOT_FOUND
    );
    until_shown(client, "device-empty").await;

    // Sign out; a wrong token is refused in words.
    click(client, "logout").await;
    until_shown(client, "login-view").await;
    type_into(client, "login-token", "secret-token:not-a-real-token").await;
    click(client, "login-submit").await;
    let message = until_message(client, "error", "not valid").await;
    assert!(message.contains("admin"), "{message}");
    let app_hidden = js(client, "return document.getElementById('app-view').hidden;").await;
    assert_eq!(app_hidden, Value::Bool(true));
}
