//! A real cluster from the machine's binaries: the PostgreSQL processes get a
//! clean environment, and a long data directory gets a private socket
//! directory.

// Tests panic on failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::ffi::OsStr;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::process::Command;

use otp_embedded_pg::{Cluster, ClusterOptions, EmbeddedError, find_bindir};

/// A secret of the server's configuration that must not reach PostgreSQL.
const SECRET_VAR: &str = "TALER_OTP_OTP__KEY_ENCRYPTION_KEY";
/// Its value in this test.
const SECRET: &str = "marker-4f1c9a-not-a-real-key";

/// The name of the test below, to run it again in a child process.
const TEST_NAME: &str = "postgres_gets_a_clean_environment_and_a_private_socket_directory";

#[test]
fn postgres_gets_a_clean_environment_and_a_private_socket_directory() {
    if std::env::var_os(SECRET_VAR).as_deref() != Some(OsStr::new(SECRET)) {
        // Tests cannot change their own environment (it is unsafe): run this test again in a
        // child process that has the secret in its environment.
        let output = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", TEST_NAME, "--nocapture", "--test-threads=1"])
            .env(SECRET_VAR, SECRET)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        return;
    }
    if matches!(find_bindir(), Err(EmbeddedError::NoBinaries)) {
        eprintln!("note: no PostgreSQL server programs here; the embedded cluster is not tested");
        return;
    }
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let root = std::env::temp_dir().join(format!(
        "taler-otp-embedded-pg-test-{}-{nanos}",
        std::process::id()
    ));
    std::fs::create_dir_all(&root).unwrap();
    // As root, the server runs as `postgres`, which must traverse this directory.
    std::fs::set_permissions(&root, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    // Long enough that the socket cannot live in the data directory.
    let data_dir = root.join("d".repeat(100));

    let cluster = Cluster::start(&ClusterOptions::new(&data_dir)).unwrap();
    let pid_file = std::fs::read_to_string(data_dir.join("postmaster.pid")).unwrap();
    let pid = pid_file.lines().next().unwrap().trim().to_owned();
    let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    let socket_dir: PathBuf = cluster.socket_dir().to_owned();
    let socket_meta = std::fs::symlink_metadata(&socket_dir).unwrap();
    let data_owner = std::fs::metadata(&data_dir).unwrap().uid();
    let stopped = cluster.stop();
    let _ = std::fs::remove_dir_all(&root);
    let _ = std::fs::remove_dir_all(&socket_dir);

    stopped.unwrap();
    let variables: Vec<String> = environ
        .split(|&byte| byte == 0)
        .map(|variable| String::from_utf8_lossy(variable).into_owned())
        .collect();
    assert!(
        !variables
            .iter()
            .any(|v| v.contains(SECRET) || v.starts_with(SECRET_VAR)),
        "{variables:?}"
    );
    assert!(variables.iter().any(|v| v == "LC_ALL=C"), "{variables:?}");
    assert!(!socket_dir.starts_with(&root), "{socket_dir:?}");
    assert!(socket_meta.is_dir());
    assert_eq!(socket_meta.mode() & 0o777, 0o700, "{socket_dir:?}");
    assert_eq!(socket_meta.uid(), data_owner, "{socket_dir:?}");
}
