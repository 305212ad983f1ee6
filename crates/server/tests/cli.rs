//! The `taler-otp` binary as an operator uses it: configuration errors, the offline `code`
//! command, the database commands against real PostgreSQL, and `serve` with SIGTERM.

#![cfg(test)]

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use otp_store::testing::TestDb;

mod common;

use common::{BIN, TempPath, free_port, stderr, stdout};

fn run(args: &[&str], envs: &[(&str, &str)]) -> Output {
    let mut command = Command::new(BIN);
    command
        .args(args)
        .env_remove("TALER_OTP_CONFIG")
        .env("RUST_LOG", "warn");
    for (k, v) in envs {
        command.env(k, v);
    }
    command.output().expect("binary runs")
}

/// A configuration for `db`, after `dbinit` on it succeeded.
fn initialised(db: &TestDb) -> TempPath {
    let conf = db_config(&db.url(), "");
    assert!(run(&["-c", conf.arg(), "dbinit"], &[]).status.success());
    conf
}

/// `taler-otp code --key RFC_KEY` with `args` after it.
fn rfc_code(args: &[&str]) -> Output {
    let mut all = vec!["code", "--key", RFC_KEY];
    all.extend_from_slice(args);
    run(&all, &[])
}

/// Asserts a failure: the exit status, one line on stderr containing `needle`, no panic.
fn assert_one_line_failure(output: &Output, status: i32, needle: &str) {
    let err = stderr(output);
    assert_eq!(output.status.code(), Some(status), "stderr: {err}");
    assert_eq!(err.trim_end().lines().count(), 1, "not one line: {err}");
    assert!(err.contains(needle), "{needle:?} not in {err:?}");
    assert!(
        !err.contains("panicked") && !err.contains("backtrace"),
        "{err}"
    );
}

fn config_file(text: &str) -> TempPath {
    TempPath::file("cli", text)
}

fn db_config(url: &str, extra: &str) -> TempPath {
    common::db_config("cli", url, extra)
}

#[test]
fn bad_configuration_is_one_line_naming_the_key_or_value() {
    let unknown = config_file("[merchant]\nPROT = 9966\n");
    assert_one_line_failure(&run(&["-c", unknown.arg(), "serve"], &[]), 1, "PROT");
    let port = config_file("[merchant]\nPORT = 99999\n");
    assert_one_line_failure(&run(&["-c", port.arg(), "serve"], &[]), 1, "99999");
    let section = config_file("[exchange]\nBASE_URL = x\n");
    assert_one_line_failure(
        &run(&["-c", section.arg(), "config", "show"], &[]),
        1,
        "[exchange]",
    );
    assert_one_line_failure(
        &run(&["-c", "/nonexistent/taler.conf", "serve"], &[]),
        1,
        "/nonexistent/taler.conf",
    );
    assert_one_line_failure(
        &run(&["config", "show"], &[("TALER_OTP_MERCHANT__PORT", "abc")]),
        1,
        "PORT",
    );
    assert_one_line_failure(
        &run(&["config", "show"], &[("TALER_OTP_MERCHANT__NOPE", "1")]),
        1,
        "NOPE",
    );
}

#[test]
fn unreachable_database_fails_quickly_with_one_line() {
    let conf = db_config(
        "postgres://user:hunter2@127.0.0.1:1/taler",
        "[merchant]\nPORT = 0\n",
    );
    let started = Instant::now();
    let output = run(&["-c", conf.arg(), "serve"], &[]);
    assert_one_line_failure(&output, 1, "unreachable");
    assert!(stderr(&output).contains("CONFIG"), "{}", stderr(&output));
    assert!(!stderr(&output).contains("hunter2"), "password leaked");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "took {:?}",
        started.elapsed()
    );
    assert_one_line_failure(
        &run(&["-c", conf.arg(), "instance", "list"], &[]),
        1,
        "unreachable",
    );
}

#[test]
fn config_show_masks_secrets_and_applies_the_environment() {
    let conf = db_config(
        "postgres://user:hunter2@db.example/taler",
        "[otp]\nKEY_ENCRYPTION_KEY = 000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f\n",
    );
    let output = run(
        &["-c", conf.arg(), "config", "show"],
        &[("TALER_OTP_MERCHANT__PORT", "9977")],
    );
    assert!(output.status.success(), "{}", stderr(&output));
    let text = stdout(&output);
    assert!(text.contains("PORT = 9977"), "{text}");
    assert!(
        !text.contains("hunter2") && !text.contains("0a0b0c0d"),
        "{text}"
    );
    assert!(text.contains("KEY_ENCRYPTION_KEY = ********"), "{text}");
}

#[test]
fn code_prints_exactly_the_confirmation_string() {
    let output = rfc_code(&["--algorithm", "1", "--time", "59"]);
    assert_eq!(
        stdout(&output),
        "84755224\n84755224\n94287082\n37359152\n26969429\n"
    );
    assert!(stderr(&output).is_empty());
    let output = run(
        &[
            "code",
            "--key",
            "AAISEM2EKVTHPCEZ",
            "--algorithm",
            "totp_with_price",
            "--time",
            "1700000010",
            "--price",
            "KUDOS:12.34",
        ],
        &[],
    );
    assert_eq!(
        stdout(&output),
        "35036406\n95005311\n88950711\n67257768\n18509934\n"
    );
    let output = rfc_code(&["--algorithm", "HOTP_WITHOUT_PRICE", "--counter", "7"]);
    assert_eq!(stdout(&output), "82162583\n");
    // Without --time the code is for now: the centre code matches a fresh computation.
    let output = rfc_code(&["--algorithm", "1"]);
    assert_eq!(stdout(&output).lines().count(), 5);
}

#[test]
fn code_prints_nothing_when_there_is_no_code() {
    for args in [
        &["--algorithm", "NONE"][..],
        &["--algorithm", "2", "--time", "5"][..],
    ] {
        let output = rfc_code(args);
        assert!(output.status.success(), "{args:?}");
        assert!(
            output.stdout.is_empty() && output.stderr.is_empty(),
            "{args:?}"
        );
    }
}

#[test]
fn code_rejects_bad_input_with_exit_2_and_one_line() {
    let key = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ";
    for (args, needle) in [
        (vec!["code", "--key", "GEZD1", "--algorithm", "1"], "--key"),
        (
            vec!["code", "--key", "MZXW6", "--algorithm", "1"],
            "10 bytes",
        ),
        (
            vec!["code", "--key", key, "--algorithm", "7"],
            "--algorithm",
        ),
        (
            vec!["code", "--key", key, "--algorithm", "totp"],
            "--algorithm",
        ),
        (
            vec!["code", "--key", key, "--algorithm", "1", "--time", "-5"],
            "--time",
        ),
        (
            vec![
                "code",
                "--key",
                key,
                "--algorithm",
                "1",
                "--time",
                "18446744073710",
            ],
            "--time",
        ),
        (
            vec!["code", "--key", key, "--algorithm", "2", "--price", "eur:1"],
            "--price",
        ),
        (
            vec!["code", "--key", key, "--algorithm", "3", "--counter", "x"],
            "--counter",
        ),
        (vec!["code", "--algorithm", "1"], "--key"),
        (
            vec!["code", "--key", key, "--algorithm", "1", "--bogus"],
            "--bogus",
        ),
    ] {
        let output = run(&args, &[]);
        assert_one_line_failure(&output, 2, needle);
        assert!(output.stdout.is_empty(), "{args:?}");
    }
}

#[tokio::test]
async fn operator_commands_work_against_postgresql() {
    let db = TestDb::new_empty().await;
    let conf = db_config(&db.url(), "");
    let c = conf.arg();

    // An empty database: commands other than dbinit refuse and name dbinit.
    assert_one_line_failure(&run(&["-c", c, "instance", "list"], &[]), 1, "dbinit");
    let first = run(&["-c", c, "dbinit"], &[]);
    assert!(first.status.success(), "{}", stderr(&first));
    assert!(
        stdout(&first).contains("created the default instance"),
        "{}",
        stdout(&first)
    );
    let again = run(&["-c", c, "dbinit"], &[]);
    assert!(stdout(&again).contains("up to date"), "{}", stdout(&again));

    let created = run(
        &["-c", c, "instance", "create", "shop", "--name", "The Shop"],
        &[],
    );
    assert!(created.status.success(), "{}", stderr(&created));
    assert_one_line_failure(
        &run(&["-c", c, "instance", "create", "shop"], &[]),
        1,
        "already exists",
    );
    assert_one_line_failure(
        &run(&["-c", c, "instance", "create", "bad/id"], &[]),
        2,
        "instance id",
    );
    let listed = stdout(&run(&["-c", c, "instance", "list"], &[]));
    assert!(
        listed.contains("admin") && listed.contains("shop\tThe Shop"),
        "{listed}"
    );

    let token = run(
        &[
            "-c",
            c,
            "token",
            "create",
            "--instance",
            "shop",
            "--scope",
            "readonly",
            "--duration",
            "3600",
        ],
        &[],
    );
    let secret = stdout(&token);
    assert!(
        secret.starts_with("secret-token:") && secret.lines().count() == 1,
        "{secret}"
    );
    assert_one_line_failure(
        &run(&["-c", c, "token", "create", "--scope", "superuser"], &[]),
        2,
        "--scope",
    );
    assert_one_line_failure(
        &run(
            &[
                "-c",
                c,
                "token",
                "create",
                "--instance",
                "ghost",
                "--scope",
                "write",
            ],
            &[],
        ),
        1,
        "ghost",
    );
    let tokens = stdout(&run(&["-c", c, "token", "list", "--instance", "shop"], &[]));
    let secret_part = secret.trim().trim_start_matches("secret-token:");
    assert!(
        tokens.contains("readonly") && !tokens.contains(secret_part),
        "{tokens}"
    );
    let serial = tokens
        .lines()
        .nth(1)
        .and_then(|l| l.split('\t').next())
        .unwrap()
        .to_owned();
    assert!(
        run(
            &["-c", c, "token", "revoke", "--instance", "shop", &serial],
            &[]
        )
        .status
        .success()
    );
    assert_one_line_failure(
        &run(
            &["-c", c, "token", "revoke", "--instance", "shop", &serial],
            &[],
        ),
        1,
        "not found",
    );
    assert_one_line_failure(
        &run(
            &["-c", c, "token", "revoke", "--instance", "admin", &serial],
            &[],
        ),
        1,
        "not found",
    );

    let key = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ";
    let add = [
        "-c",
        c,
        "device",
        "add",
        "--instance",
        "shop",
        "--id",
        "till",
        "--key",
        key,
        "--algorithm",
        "totp_without_price",
    ];
    assert!(run(&add, &[]).status.success());
    assert!(stdout(&run(&add, &[])).contains("already present"));
    let mut conflicting = add.to_vec();
    let last = conflicting.len() - 1;
    conflicting[last] = "HOTP_WITHOUT_PRICE";
    assert_one_line_failure(&run(&conflicting, &[]), 1, "different details");
    assert_one_line_failure(
        &run(
            &[
                "-c",
                c,
                "device",
                "add",
                "--id",
                "x",
                "--key",
                "MZXW6",
                "--algorithm",
                "1",
            ],
            &[],
        ),
        2,
        "--key",
    );
    let shown = stdout(&run(
        &[
            "-c",
            c,
            "device",
            "show",
            "--instance",
            "shop",
            "till",
            "--time",
            "59",
        ],
        &[],
    ));
    assert!(
        shown.contains("84755224\n84755224\n94287082\n37359152\n26969429"),
        "{shown}"
    );
    assert!(!shown.contains(key), "key leaked: {shown}");
    assert!(
        stdout(&run(
            &["-c", c, "device", "list", "--instance", "shop"],
            &[]
        ))
        .starts_with("till\t")
    );
    assert!(
        stdout(&run(&["-c", c, "device", "list"], &[])).is_empty(),
        "default instance has no devices"
    );
    assert!(
        run(
            &["-c", c, "device", "delete", "--instance", "shop", "till"],
            &[]
        )
        .status
        .success()
    );
    assert_one_line_failure(
        &run(
            &["-c", c, "device", "delete", "--instance", "shop", "till"],
            &[],
        ),
        1,
        "not found",
    );

    assert!(
        run(&["-c", c, "instance", "delete", "shop"], &[])
            .status
            .success()
    );
    assert_one_line_failure(
        &run(&["-c", c, "instance", "delete", "shop"], &[]),
        1,
        "not found",
    );
}

#[tokio::test]
async fn serve_refuses_an_outdated_schema_and_names_dbinit() {
    let db = TestDb::new_empty().await;
    let conf = db_config(&db.url(), "[merchant]\nPORT = 0\n");
    let output = run(&["-c", conf.arg(), "serve"], &[]);
    assert_one_line_failure(&output, 1, "taler-otp dbinit");
}

#[tokio::test]
async fn serve_writes_the_first_token_to_a_private_file_answers_and_stops_on_sigterm() {
    use std::os::unix::fs::PermissionsExt;
    let db = TestDb::new().await;
    let port = free_port();
    let data_dir = std::env::temp_dir().join(format!(
        "taler-otp-first-token-{}-{port}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&data_dir);
    let conf = db_config(
        &db.url(),
        &format!(
            "[merchant]\nPORT = {port}\n[otp]\nDATA_DIR = {}\n",
            data_dir.display()
        ),
    );
    let mut child = spawn_serve(&conf);
    let client = reqwest_free_get(port, "/config").await;
    assert!(client.contains("taler-merchant"), "{client}");
    let token_file = data_dir.join("first-token");
    let token = std::fs::read_to_string(&token_file).expect("the first token's file");
    let mode = std::fs::metadata(&token_file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "mode {mode:o}");
    assert!(
        token.starts_with("secret-token:") && token.lines().count() == 1,
        "{token}"
    );
    let devices = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{port}/private/otp-devices"))
        .bearer_auth(token.trim())
        .send()
        .await
        .unwrap();
    assert_eq!(devices.status(), 200, "the first token does not work");
    signal(&child, nix::sys::signal::Signal::SIGTERM);
    let output = wait_with_timeout(&mut child, Duration::from_secs(15));
    assert_eq!(output.status.code(), Some(0), "stderr: {}", stderr(&output));
    let printed = format!("{}{}", stdout(&output), stderr(&output));
    assert!(
        printed.contains(token_file.to_str().unwrap()),
        "the file is not named: {printed}"
    );
    assert!(
        !printed.contains("secret-token:"),
        "the token was printed: {printed}"
    );

    // Second start: no new token, the file is left alone.
    let mut child = spawn_serve(&conf);
    reqwest_free_get(port, "/config").await;
    signal(&child, nix::sys::signal::Signal::SIGINT);
    let output = wait_with_timeout(&mut child, Duration::from_secs(15));
    assert!(output.status.success());
    assert!(
        !stdout(&output).contains("first-token"),
        "{}",
        stdout(&output)
    );
    assert_eq!(std::fs::read_to_string(&token_file).unwrap(), token);
    let _ = std::fs::remove_dir_all(&data_dir);
}

fn spawn_serve(conf: &TempPath) -> std::process::Child {
    Command::new(BIN)
        .args(["-c", conf.arg(), "serve"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn signal(child: &std::process::Child, signal: nix::sys::signal::Signal) {
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap());
    nix::sys::signal::kill(pid, signal).unwrap();
}

/// GET over a plain TCP socket, retrying until the server listens.
async fn reqwest_free_get(port: u16, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(mut stream) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
            let request =
                format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
            stream.write_all(request.as_bytes()).await.unwrap();
            let mut response = String::new();
            stream.read_to_string(&mut response).await.unwrap();
            return response;
        }
        assert!(Instant::now() < deadline, "server did not listen on {port}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn wait_with_timeout(child: &mut std::process::Child, timeout: Duration) -> Output {
    let deadline = Instant::now() + timeout;
    while child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "server did not stop");
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut out = Vec::new();
    let mut err = Vec::new();
    use std::io::Read;
    child.stdout.take().unwrap().read_to_end(&mut out).unwrap();
    child.stderr.take().unwrap().read_to_end(&mut err).unwrap();
    Output {
        status: child.wait().unwrap(),
        stdout: out,
        stderr: err,
    }
}

#[tokio::test]
async fn sigterm_lets_an_in_flight_request_finish() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let db = TestDb::new().await;
    let admin = otp_store::InstanceId::parse("admin").unwrap();
    otp_store::instances::ensure(&db.store(), &admin, "admin")
        .await
        .unwrap();
    let (_, token) = otp_store::tokens::create(&db.store(), &admin, "write", None, "")
        .await
        .unwrap();
    let port = free_port();
    let conf = db_config(&db.url(), &format!("[merchant]\nPORT = {port}\n"));
    let mut child = spawn_serve(&conf);
    reqwest_free_get(port, "/config").await;

    // Start a POST whose body arrives in two halves, with SIGTERM in between.
    let body = r#"{"otp_device_id":"late","otp_device_description":"d","otp_key":"GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ","otp_algorithm":1}"#;
    let (first, second) = body.split_at(body.len() / 2);
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    // A first, complete request on the same keep-alive connection proves a worker serves it
    // before the signal (a connection still in the accept backlog would not count as in flight).
    stream
        .write_all(b"GET /config HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut first_response = Vec::new();
    // Read until the whole first answer is in: its headers, then Content-Length bytes.
    let complete = |bytes: &[u8]| {
        let text = String::from_utf8_lossy(bytes);
        let Some((head, body)) = text.split_once("\r\n\r\n") else {
            return false;
        };
        head.lines()
            .find_map(|line| {
                let (name, value) = line.split_once(':')?;
                name.eq_ignore_ascii_case("content-length")
                    .then(|| value.trim().parse::<usize>().ok())
                    .flatten()
            })
            .is_some_and(|length| body.len() >= length)
    };
    while !complete(&first_response) {
        let mut buffer = [0u8; 4096];
        let n = stream.read(&mut buffer).await.unwrap();
        assert!(n > 0, "connection closed early");
        first_response.extend_from_slice(&buffer[..n]);
    }
    let head = format!(
        "POST /private/otp-devices HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        token.expose(),
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(first.as_bytes()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    signal(&child, nix::sys::signal::Signal::SIGTERM);
    tokio::time::sleep(Duration::from_millis(300)).await;
    stream.write_all(second.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    assert!(
        response.starts_with("HTTP/1.1 204"),
        "in-flight request cut off: {response:?}"
    );
    let output = wait_with_timeout(&mut child, Duration::from_secs(15));
    assert!(output.status.success(), "{}", stderr(&output));
    let device = otp_store::otp_devices::get(
        &db.store(),
        &admin,
        &otp_store::OtpDeviceId::parse("late").unwrap(),
    )
    .await;
    assert!(device.is_ok(), "the in-flight request's write was lost");
}

#[test]
fn missing_postgresql_binaries_are_one_line_naming_the_package() {
    let data_dir = std::env::temp_dir().join(format!("taler-otp-nobin-{}", std::process::id()));
    let output = run(
        &["serve"],
        &[
            ("PG_BINDIR", "/nonexistent"),
            ("TALER_OTP_OTP__DATA_DIR", data_dir.to_str().unwrap()),
        ],
    );
    assert_one_line_failure(&output, 1, "apt-get install postgresql");
    let _ = std::fs::remove_dir_all(data_dir);
}

#[tokio::test]
async fn embedded_cluster_is_shared_by_serve_and_commands_and_stopped_by_its_last_user() {
    let data_dir = std::env::temp_dir().join(format!("taler-otp-embedded-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data_dir);
    std::fs::create_dir_all(&data_dir).unwrap();
    let pid_file = data_dir.join("postgres/postmaster.pid");
    let port = free_port();
    let port_text = port.to_string();
    let envs = [
        ("TALER_OTP_OTP__DATA_DIR", data_dir.to_str().unwrap()),
        ("TALER_OTP_MERCHANT__PORT", port_text.as_str()),
    ];

    // A lone command starts the embedded cluster, migrates it, and stops it again.
    let dbinit = run(&["dbinit"], &envs);
    assert!(dbinit.status.success(), "{}", stderr(&dbinit));
    assert!(
        !pid_file.exists(),
        "a lone command left the cluster running"
    );

    // serve and a command share it; the command leaves it running for serve.
    let mut child = Command::new(BIN)
        .arg("serve")
        .envs(envs)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    reqwest_free_get(port, "/config").await;
    let token = run(&["token", "create", "--scope", "readonly"], &envs);
    assert!(
        stdout(&token).starts_with("secret-token:"),
        "{}",
        stderr(&token)
    );
    assert!(
        pid_file.exists(),
        "the command stopped the cluster under serve"
    );
    assert!(
        reqwest_free_get(port, "/config")
            .await
            .contains("taler-merchant")
    );

    // Stopping serve, the last user, stops the cluster.
    signal(&child, nix::sys::signal::Signal::SIGTERM);
    let output = wait_with_timeout(&mut child, Duration::from_secs(20));
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(!pid_file.exists(), "serve left the cluster running");
    let _ = std::fs::remove_dir_all(&data_dir);
}

/// Reads the terminal QR code of `device add --generate-key` back into an image: each
/// character is one module wide and two high; blocks are light modules and blanks dark ones
/// (drawn for light text on a dark background).
fn terminal_qr_image(lines: &[&str]) -> image::GrayImage {
    const SCALE: u32 = 4;
    let width = lines.iter().map(|l| l.chars().count()).max().unwrap() as u32;
    let height = 2 * lines.len() as u32;
    let mut image = image::GrayImage::new(width * SCALE, height * SCALE);
    for (row, line) in lines.iter().enumerate() {
        for (column, character) in line.chars().enumerate() {
            let (top_light, bottom_light) = match character {
                '█' => (true, true),
                '▀' => (true, false),
                '▄' => (false, true),
                ' ' => (false, false),
                other => panic!("unexpected {other:?} in the QR code"),
            };
            for (half, light) in [(0, top_light), (1, bottom_light)] {
                let shade = image::Luma([if light { 255 } else { 0 }]);
                for dy in 0..SCALE {
                    for dx in 0..SCALE {
                        let x = column as u32 * SCALE + dx;
                        let y = (2 * row as u32 + half) * SCALE + dy;
                        image.put_pixel(x, y, shade);
                    }
                }
            }
        }
    }
    image
}

#[tokio::test]
async fn device_add_generate_key_prints_the_key_uri_and_a_terminal_qr_code_once() {
    let db = TestDb::new_empty().await;
    let conf = initialised(&db);
    let c = conf.arg();

    let add_generated = |more: &[&str]| {
        let mut args = vec![
            "-c",
            c,
            "device",
            "add",
            "--id",
            "phone 1",
            "--generate-key",
        ];
        args.extend_from_slice(more);
        run(&args, &[])
    };
    let added = add_generated(&["--algorithm", "HOTP_WITH_PRICE", "--counter", "7"]);
    assert!(added.status.success(), "{}", stderr(&added));
    let out = stdout(&added);
    assert!(
        stderr(&added).contains("shown only this once"),
        "{}",
        stderr(&added)
    );
    let key = out
        .lines()
        .find_map(|l| l.strip_prefix("key: "))
        .unwrap_or_else(|| panic!("no key line: {out}"));
    let decoded = data_encoding::BASE32_NOPAD.decode(key.as_bytes()).unwrap();
    assert_eq!(decoded.len(), 20, "{key}");
    let uri = out
        .lines()
        .find_map(|l| l.strip_prefix("uri: "))
        .unwrap_or_else(|| panic!("no uri line: {out}"));
    assert_eq!(
        uri,
        format!(
            "otpauth://hotp/admin:phone%201?secret={key}&issuer=admin&algorithm=SHA1&digits=8&counter=7&taler_algorithm=4"
        )
    );

    // The terminal QR code decodes to exactly the URI.
    let qr_lines: Vec<&str> = out
        .lines()
        .filter(|l| !l.trim().is_empty() && l.chars().all(|c| " █▀▄".contains(c)))
        .collect();
    assert!(qr_lines.len() > 10, "no QR code in: {out}");
    let mut prepared = rqrr::PreparedImage::prepare(terminal_qr_image(&qr_lines));
    let grids = prepared.detect_grids();
    assert_eq!(grids.len(), 1, "{out}");
    assert_eq!(grids[0].decode().unwrap().1, uri);

    // The stored key is the printed one: `device show` gives its code.
    let shown = stdout(&run(
        &[
            "-c", c, "device", "show", "phone 1", "--time", "100", "--price", "EUR:2",
        ],
        &[],
    ));
    let expected = otp_algo::confirmation(
        &otp_algo::OtpKey::from_base32(key).unwrap(),
        otp_algo::Algorithm::HotpWithPrice,
        Some(&otp_algo::Amount::parse("EUR:2").unwrap()),
        100,
        7,
    )
    .unwrap();
    assert!(shown.contains(&format!("code:\n{expected}")), "{shown}");
    assert!(!shown.contains(key), "{shown}");

    // A repeat finds the device: a failure, and no key is printed.
    let again = add_generated(&["--algorithm", "4"]);
    assert_one_line_failure(&again, 1, "already exists");
    assert!(stdout(&again).is_empty(), "{}", stdout(&again));

    // Usage errors: both or neither of --key and --generate-key, and NONE.
    for args in [
        &[
            "--generate-key",
            "--key",
            "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ",
            "--algorithm",
            "1",
        ][..],
        &["--algorithm", "1"][..],
        &["--generate-key", "--algorithm", "NONE"][..],
    ] {
        let mut full = vec!["-c", c, "device", "add", "--id", "x"];
        full.extend_from_slice(args);
        let output = run(&full, &[]);
        assert_eq!(
            output.status.code(),
            Some(2),
            "{args:?}: {}",
            stderr(&output)
        );
        assert!(stdout(&output).is_empty(), "{args:?}");
    }
    let listed = stdout(&run(&["-c", c, "device", "list"], &[]));
    assert!(
        !listed.lines().any(|l| l.starts_with("x\t")),
        "a refused device was stored: {listed}"
    );
}

/// Runs the binary with `input` on standard input (a pipe).
fn run_with_stdin(args: &[&str], envs: &[(&str, &str)], input: &str) -> Output {
    use std::io::Write;
    let mut child = Command::new(BIN)
        .args(args)
        .env_remove("TALER_OTP_CONFIG")
        .env("RUST_LOG", "warn")
        .envs(envs.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The command may refuse before reading; a closed pipe is no error here.
    let _ = child.stdin.take().unwrap().write_all(input.as_bytes());
    child.wait_with_output().unwrap()
}

fn strs(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

const RFC_KEY: &str = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ";
const RFC_CODES_AT_59: &str = "84755224\n84755224\n94287082\n37359152\n26969429\n";

#[test]
fn code_reads_the_key_from_stdin_a_file_or_the_environment_never_needing_an_argument() {
    let code = ["code", "--algorithm", "1", "--time", "59"];
    let with = |extra: &[&'static str]| -> Vec<&'static str> {
        code.iter().chain(extra).copied().collect()
    };
    let from_stdin = run_with_stdin(&with(&["--key", "-"]), &[], &format!("{RFC_KEY}\n"));
    assert_eq!(
        stdout(&from_stdin),
        RFC_CODES_AT_59,
        "{}",
        stderr(&from_stdin)
    );
    let file = config_file(&format!("{RFC_KEY}\n"));
    let from_file = run(&[&with(&["--key-file"])[..], &[file.arg()]].concat(), &[]);
    assert_eq!(
        stdout(&from_file),
        RFC_CODES_AT_59,
        "{}",
        stderr(&from_file)
    );
    let from_env = run(
        &with(&["--key-env", "TALER_OTP_TEST_DEVICE_KEY"]),
        &[("TALER_OTP_TEST_DEVICE_KEY", RFC_KEY)],
    );
    assert_eq!(stdout(&from_env), RFC_CODES_AT_59, "{}", stderr(&from_env));

    // Bad or missing sources: one line naming the option, exit 2.
    let empty = run_with_stdin(&with(&["--key", "-"]), &[], "");
    assert_one_line_failure(&empty, 2, "--key -");
    let unset = run(&with(&["--key-env", "TALER_OTP_TEST_UNSET_KEY"]), &[]);
    assert_one_line_failure(&unset, 2, "TALER_OTP_TEST_UNSET_KEY");
    let missing = run(&with(&["--key-file", "/nonexistent/key"]), &[]);
    assert_one_line_failure(&missing, 2, "/nonexistent/key");
    let both = run(
        &with(&["--key", RFC_KEY, "--key-env", "TALER_OTP_TEST_DEVICE_KEY"]),
        &[("TALER_OTP_TEST_DEVICE_KEY", RFC_KEY)],
    );
    assert_eq!(both.status.code(), Some(2), "{}", stderr(&both));
    assert!(both.stdout.is_empty());
}

#[tokio::test]
async fn device_add_reads_the_key_from_stdin_a_file_or_the_environment() {
    let db = TestDb::new().await;
    let conf = initialised(&db);
    let c = conf.arg();
    let add = |id: &'static str, source: &[&'static str]| -> Vec<&'static str> {
        let mut args = vec!["device", "add", "--id", id, "--algorithm", "1"];
        args.extend_from_slice(source);
        args
    };
    let with_config = |args: Vec<&'static str>| -> Vec<String> {
        ["-c", c]
            .iter()
            .copied()
            .chain(args)
            .map(str::to_owned)
            .collect()
    };

    let stdin_args = with_config(add("from-stdin", &["--key", "-"]));
    let added = run_with_stdin(&strs(&stdin_args), &[], &format!("{RFC_KEY}\n"));
    assert!(added.status.success(), "{}", stderr(&added));
    let file = config_file(RFC_KEY);
    let file_args = [
        with_config(add("from-file", &["--key-file"])),
        vec![file.arg().to_owned()],
    ]
    .concat();
    let added = run(&strs(&file_args), &[]);
    assert!(added.status.success(), "{}", stderr(&added));
    let env_args = with_config(add("from-env", &["--key-env", "TILL_KEY"]));
    let added = run(&strs(&env_args), &[("TILL_KEY", RFC_KEY)]);
    assert!(added.status.success(), "{}", stderr(&added));

    for id in ["from-stdin", "from-file", "from-env"] {
        let shown = stdout(&run(&["-c", c, "device", "show", id, "--time", "59"], &[]));
        assert!(shown.contains(RFC_CODES_AT_59.trim_end()), "{id}: {shown}");
        assert!(!shown.contains(RFC_KEY), "{id}: the key was shown");
    }
    // Neither a key nor --generate-key, or a key source beside --generate-key: exit 2.
    let neither = run(&strs(&with_config(add("x", &[]))), &[]);
    assert_one_line_failure(&neither, 2, "--key-file");
    let both = run(
        &strs(&with_config(add(
            "x",
            &["--key-env", "TILL_KEY", "--generate-key"],
        ))),
        &[("TILL_KEY", RFC_KEY)],
    );
    assert_eq!(both.status.code(), Some(2), "{}", stderr(&both));
}
