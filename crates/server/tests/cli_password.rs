//! `taler-otp instance set-password ID`: the password comes from standard input (one line) when
//! that is not a terminal, never from an argument, and is stored as an Argon2id hash.

#![cfg(test)]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::process::{Command, Output, Stdio};

use otp_server::password::verify_password;
use otp_store::testing::TestDb;
use otp_store::{InstanceId, instances};

mod common;

use common::{BIN, db_config, stderr};

/// Runs the binary with `stdin` as standard input (a pipe, so not a terminal).
fn run(config: &str, args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(BIN)
        .arg("-c")
        .arg(config)
        .args(args)
        .env_remove("TALER_OTP_CONFIG")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("binary runs");
    let mut input = child.stdin.take().unwrap();
    // The command may refuse before reading; a closed pipe is not an error here.
    let _ = input.write_all(stdin.as_bytes());
    drop(input);
    child.wait_with_output().unwrap()
}

#[tokio::test]
async fn set_password_reads_one_line_from_standard_input_and_stores_a_hash() {
    let db = TestDb::new_empty().await;
    let conf = db_config("cli-password", &db.url(), "");
    let c = conf.arg();
    let init = run(c, &["dbinit"], "");
    assert!(init.status.success(), "{}", stderr(&init));
    let store = db.store();
    let admin = InstanceId::parse("admin").unwrap();

    let set = run(
        c,
        &["instance", "set-password", "admin"],
        "correct horse\r\nignored second line\n",
    );
    assert!(set.status.success(), "{}", stderr(&set));
    assert!(String::from_utf8_lossy(&set.stdout).contains("admin"));
    let hash = instances::password_hash(&store, &admin)
        .await
        .unwrap()
        .expect("a hash is stored");
    assert!(hash.starts_with("$argon2id$"), "{hash}");
    assert!(verify_password("correct horse", &hash));
    assert!(!verify_password("ignored second line", &hash));
    for output in [&set, &init] {
        let all = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            stderr(output)
        );
        assert!(
            !all.contains("correct horse"),
            "the password was echoed: {all}"
        );
    }

    // A new password replaces the old one.
    let again = run(c, &["instance", "set-password", "admin"], "battery staple");
    assert!(again.status.success(), "{}", stderr(&again));
    let hash = instances::password_hash(&store, &admin)
        .await
        .unwrap()
        .unwrap();
    assert!(verify_password("battery staple", &hash));
    assert!(!verify_password("correct horse", &hash));
}

#[tokio::test]
async fn set_password_refuses_empty_or_overlong_passwords_unknown_instances_and_arguments() {
    let db = TestDb::new_empty().await;
    let conf = db_config("cli-password", &db.url(), "");
    let c = conf.arg();
    assert!(run(c, &["dbinit"], "").status.success());
    let store = db.store();
    let admin = InstanceId::parse("admin").unwrap();

    for (args, stdin, status, needle) in [
        (&["instance", "set-password", "admin"][..], "\n", 2, "empty"),
        (&["instance", "set-password", "admin"][..], "", 2, "empty"),
        (
            &["instance", "set-password", "admin"][..],
            &"x".repeat(2000),
            2,
            "1024",
        ),
        (&["instance", "set-password", "nope"][..], "pw\n", 1, "nope"),
        (
            &["instance", "set-password", "bad/id"][..],
            "pw\n",
            2,
            "instance id",
        ),
        (
            &["instance", "set-password", "admin", "pw"][..],
            "pw\n",
            2,
            "unexpected argument",
        ),
    ] {
        let output = run(c, args, stdin);
        let err = stderr(&output);
        assert_eq!(output.status.code(), Some(status), "{args:?}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {needle:?} not in {err:?}");
    }
    assert_eq!(
        instances::password_hash(&store, &admin).await.unwrap(),
        None
    );
}
