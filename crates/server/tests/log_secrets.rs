//! Secrets never reach the log, even at `RUST_LOG=trace`: the real `taler-otp serve` creates,
//! changes, reads and confirms devices, verifies a code, logs in with a password and uses the
//! token it got, and its standard error carries no device key, token secret, token hash or
//! password, in any spelling (base32, hex, the bytes as a list of numbers).

#![cfg(test)]

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use otp_algo::{Algorithm, OtpKey};
use otp_store::testing::TestDb;
use otp_store::{InstanceId, instances, tokens};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

mod common;

use common::{BIN, TempPath, free_port};

const PASSWORD: &str = "correct horse battery staple 42";

/// Every spelling of `bytes` a log line could carry: base32 and hex in both cases, and the
/// start of the list of numbers `Debug` prints for a byte slice.
fn spellings(bytes: &[u8]) -> Vec<String> {
    let base32 = data_encoding::BASE32_NOPAD.encode(bytes);
    let hex = data_encoding::HEXLOWER.encode(bytes);
    let debug = format!("{:?}", &bytes[..8]);
    vec![
        base32.to_lowercase(),
        base32,
        hex.to_uppercase(),
        hex,
        debug.trim_end_matches(']').to_owned(),
    ]
}

/// The spellings of a token secret and of its stored hash.
fn token_spellings(secret: &str) -> Vec<String> {
    let body = secret.strip_prefix("secret-token:").unwrap();
    let mut all = vec![secret.to_owned(), body.to_owned()];
    all.extend(spellings(&Sha256::digest(body.as_bytes())));
    all
}

fn assert_no_secret(log: &str, secrets: &[String], what: &str) {
    for secret in secrets {
        assert!(
            !log.contains(secret.as_str()),
            "{what}: the log carries {secret:?}"
        );
    }
}

async fn wait_until_listening(base: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while reqwest::get(format!("{base}/config")).await.is_err() {
        assert!(Instant::now() < deadline, "the server did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn send(request: reqwest::RequestBuilder, expected: u16) -> Value {
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    assert_eq!(status, expected, "{text}");
    serde_json::from_str(&text).unwrap_or(Value::Null)
}

#[tokio::test]
async fn trace_logs_carry_no_key_token_hash_or_password() {
    let db = TestDb::new().await;
    let admin = InstanceId::parse("admin").unwrap();
    instances::ensure(&db.store(), &admin, "admin")
        .await
        .unwrap();
    let (_, write) = tokens::create(&db.store(), &admin, "write", None, "")
        .await
        .unwrap();
    let write = write.expose().to_owned();
    let dir = TempPath::dir("log-secrets");
    let port = free_port();
    let conf = dir.path().join("taler-otp.conf");
    std::fs::write(
        &conf,
        format!(
            "[merchant]\nPORT = {port}\n[merchantdb-postgres]\nCONFIG = \"{}\"\n[otp]\nDATA_DIR = {}\n",
            db.url(),
            dir.path().display()
        ),
    )
    .unwrap();
    let conf = conf.to_str().unwrap().to_owned();

    // The password comes in on standard input; that command's output is checked too.
    let mut set_password = Command::new(BIN)
        .args(["-c", &conf, "instance", "set-password", "admin"])
        .env_remove("TALER_OTP_CONFIG")
        .env("RUST_LOG", "trace")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    writeln!(set_password.stdin.take().unwrap(), "{PASSWORD}").unwrap();
    let output = set_password.wait_with_output().unwrap();
    assert!(output.status.success(), "{output:?}");
    let cli_log = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert_no_secret(&cli_log, &[PASSWORD.to_owned()], "set-password");

    let log_path = dir.path().join("serve.log");
    let mut server = Command::new(BIN)
        .args(["-c", &conf, "serve"])
        .env_remove("TALER_OTP_CONFIG")
        .env("RUST_LOG", "trace")
        .stdout(Stdio::null())
        .stderr(Stdio::from(std::fs::File::create(&log_path).unwrap()))
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    wait_until_listening(&base).await;
    let client = reqwest::Client::new();

    let first_key: Vec<u8> = (0u8..20)
        .map(|i| i.wrapping_mul(37).wrapping_add(11))
        .collect();
    let second_key: Vec<u8> = (0u8..20)
        .map(|i| i.wrapping_mul(53).wrapping_add(201))
        .collect();
    let base32 = |bytes: &[u8]| data_encoding::BASE32_NOPAD.encode(bytes);
    let devices = format!("{base}/private/otp-devices");
    send(
        client.post(&devices).bearer_auth(&write).json(&json!({
            "otp_device_id": "till",
            "otp_device_description": "the till",
            "otp_key": base32(&first_key),
            "otp_algorithm": "HOTP_WITHOUT_PRICE",
        })),
        204,
    )
    .await;
    send(
        client
            .patch(format!("{devices}/till"))
            .bearer_auth(&write)
            .json(&json!({"otp_device_description": "the till", "otp_key": base32(&second_key)})),
        204,
    )
    .await;
    send(
        client.get(format!("{devices}/till")).bearer_auth(&write),
        200,
    )
    .await;
    let confirmed = send(
        client
            .post(format!("{devices}/till/confirmations"))
            .bearer_auth(&write)
            .json(&json!({})),
        200,
    )
    .await;
    assert_eq!(confirmed["otp_ctr"], 0, "{confirmed}");
    let key = OtpKey::from_bytes(&second_key).unwrap();
    let code = otp_algo::confirmation(&key, Algorithm::HotpWithoutPrice, None, 0, 1).unwrap();
    let verified = send(
        client
            .post(format!("{devices}/till/verifications"))
            .bearer_auth(&write)
            .json(&json!({"code": code, "reference": "order-1"})),
        200,
    )
    .await;
    assert_eq!(verified["verified"], true, "{verified}");
    let wrong = "secret-token:AAAABBBBCCCCDDDDEEEEFFFFGGGGHHHHIIIIJJJJKKKKLLLLMMMM";
    send(client.get(&devices).bearer_auth(wrong), 401).await;

    let login = send(
        client
            .post(format!("{base}/private/token"))
            .basic_auth("admin", Some(PASSWORD))
            .json(&json!({"scope": "write"})),
        200,
    )
    .await;
    let issued = login["access_token"].as_str().unwrap().to_owned();
    send(client.get(&devices).bearer_auth(&issued), 200).await;

    let pid = nix::unistd::Pid::from_raw(i32::try_from(server.id()).unwrap());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while server.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "the server did not stop");
        std::thread::sleep(Duration::from_millis(50));
    }
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(log.contains("served"), "nothing was logged: {log}");
    // The wrong token's 401 is logged with the client's address.
    assert!(
        log.lines()
            .any(|line| line.contains("authentication failed") && line.contains("127.0.0.1")),
        "no failure line naming the client: {log}"
    );
    assert_no_secret(&log, &spellings(&first_key), "the first device key");
    assert_no_secret(&log, &spellings(&second_key), "the second device key");
    assert_no_secret(&log, &token_spellings(&write), "the write token");
    assert_no_secret(&log, &token_spellings(&issued), "the token from the login");
    assert_no_secret(&log, &token_spellings(wrong), "a wrong token");
    assert_no_secret(&log, &[PASSWORD.to_owned()], "the password");
}
