//! Keys at rest as an operator meets them: `serve` and the commands refuse a missing or wrong
//! `[otp] KEY_ENCRYPTION_KEY` and plaintext keys beside one, naming the remedy; `taler-otp
//! rekey` encrypts plaintext keys and rotates to a new key given the old one once.

#![cfg(test)]

use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use otp_store::testing::TestDb;

mod common;

use common::{BIN, stderr, stdout};

const KEY_A: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
const KEY_B: &str = "f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff000102030405060708090a0b0c0d0e0f";
const DEVICE_KEY: &str = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ";

/// Runs the binary on `db` with the key-encryption key `key` (if any), `stdin` as its input,
/// killing it after 60 s (a `serve` that should have refused would run on).
fn run(db: &TestDb, key: Option<&str>, args: &[&str], stdin: &str) -> Output {
    let mut command = Command::new(BIN);
    command
        .args(args)
        .env_remove("TALER_OTP_CONFIG")
        .env_remove("TALER_OTP_OTP__KEY_ENCRYPTION_KEY")
        .env("RUST_LOG", "warn")
        .env("TALER_OTP_MERCHANTDB_POSTGRES__CONFIG", db.url())
        .env("TALER_OTP_MERCHANT__PORT", "0")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(key) = key {
        command.env("TALER_OTP_OTP__KEY_ENCRYPTION_KEY", key);
    }
    let mut child = command.spawn().unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

/// Asserts exit status 1 and one line on stderr containing every needle.
fn assert_refused(output: &Output, needles: &[&str]) {
    let err = stderr(output);
    assert_eq!(output.status.code(), Some(1), "stderr: {err}");
    assert_eq!(err.trim_end().lines().count(), 1, "not one line: {err}");
    for needle in needles {
        assert!(err.contains(needle), "{needle:?} not in {err:?}");
    }
}

fn assert_ok(output: &Output) {
    assert!(output.status.success(), "stderr: {}", stderr(output));
}

fn add_device(db: &TestDb, key: Option<&str>) {
    assert_ok(&run(db, key, &["instance", "create", "shop"], ""));
    assert_ok(&run(
        db,
        key,
        &[
            "device",
            "add",
            "--instance",
            "shop",
            "--id",
            "pos",
            "--key",
            DEVICE_KEY,
            "--algorithm",
            "1",
        ],
        "",
    ));
}

/// Asserts that `device show` with the key-encryption key `key` prints the device's code.
fn assert_shows_the_code(db: &TestDb, key: &str) {
    let shown = show_device(db, Some(key));
    assert_ok(&shown);
    assert!(stdout(&shown).contains("84755224"), "{}", stdout(&shown));
}

fn show_device(db: &TestDb, key: Option<&str>) -> Output {
    run(
        db,
        key,
        &[
            "device",
            "show",
            "--instance",
            "shop",
            "pos",
            "--time",
            "59",
        ],
        "",
    )
}

#[tokio::test]
async fn a_missing_or_wrong_key_stops_serve_and_the_commands_and_rekey_rotates() {
    let db = TestDb::new().await;
    add_device(&db, Some(KEY_A));

    assert_refused(
        &run(&db, None, &["serve"], ""),
        &[
            "encrypted",
            "no key-encryption key is configured",
            "KEY_ENCRYPTION_KEY",
        ],
    );
    assert_refused(
        &run(&db, Some(KEY_B), &["serve"], ""),
        &["is not the one", "rekey --old-key-file"],
    );
    assert_refused(
        &run(&db, None, &["device", "list", "--instance", "shop"], ""),
        &["no key-encryption key is configured"],
    );
    // Rotation: the new key configured, the old one given once on standard input.
    assert_refused(&run(&db, Some(KEY_B), &["rekey"], ""), &["is not the one"]);
    let rotated = run(&db, Some(KEY_B), &["rekey", "--old-key-file", "-"], KEY_A);
    assert_ok(&rotated);
    assert!(
        stdout(&rotated).contains("data keys wrapped anew: 1"),
        "{}",
        stdout(&rotated)
    );

    assert_shows_the_code(&db, KEY_B);
    assert_refused(&show_device(&db, Some(KEY_A)), &["is not the one"]);
}

#[tokio::test]
async fn plaintext_keys_beside_a_key_stop_serve_until_rekey_encrypts_them() {
    let db = TestDb::new().await;
    add_device(&db, None);

    assert_refused(
        &run(&db, Some(KEY_A), &["serve"], ""),
        &[
            "1 device keys are stored in plaintext",
            "taler-otp rekey",
            "ACCEPT_PLAINTEXT_KEYS",
        ],
    );
    let encrypted = run(&db, Some(KEY_A), &["rekey", "--batch-size", "1"], "");
    assert_ok(&encrypted);
    assert!(
        stdout(&encrypted).contains("device keys encrypted: 1"),
        "{}",
        stdout(&encrypted)
    );
    assert_shows_the_code(&db, KEY_A);
    assert_refused(
        &show_device(&db, None),
        &["no key-encryption key is configured"],
    );
    assert_refused(&run(&db, None, &["rekey"], ""), &["KEY_ENCRYPTION_KEY"]);
}
