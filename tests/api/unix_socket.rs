//! `[merchant] SERVE = unix`: the socket answers, and at its path it has only ever had the
//! configured mode (it is bound in a private directory, given its mode, then renamed into
//! place; a watcher polling the path from before the start sees no other mode).

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use otp_server::Application;
use otp_server::config::{Listen, Settings};
use otp_server::database::store_config;
use otp_store::testing::TestDb;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn the_socket_has_its_mode_from_the_start_and_answers() {
    let db = TestDb::new().await;
    let dir = std::env::temp_dir().join(format!("taler-otp-uds-api-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("httpd.sock");
    // A socket file left by an earlier run is replaced.
    std::fs::write(&path, "stale").unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let watcher = {
        let (path, stop) = (path.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut modes = std::collections::BTreeSet::new();
            while !stop.load(Ordering::Relaxed) {
                if let Ok(metadata) = std::fs::symlink_metadata(&path) {
                    if metadata.file_type().is_socket() {
                        modes.insert(metadata.permissions().mode() & 0o777);
                    }
                }
            }
            modes
        })
    };

    let mut settings = Settings::for_tests(&db.url()).unwrap();
    settings.listen = Listen::Unix {
        path: path.clone(),
        mode: 0o600,
    };
    let app = Application::build(&settings, &store_config(&settings, &db.url()))
        .await
        .expect("app starts on a unix socket");
    let handle = app.handle();
    tokio::spawn(app.run_until_stopped());

    let mut stream = tokio::net::UnixStream::connect(&path).await.unwrap();
    stream
        .write_all(b"GET /config HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");

    tokio::time::sleep(Duration::from_millis(50)).await;
    stop.store(true, Ordering::Relaxed);
    let modes = watcher.join().unwrap();
    assert_eq!(
        modes.into_iter().collect::<Vec<_>>(),
        [0o600],
        "the socket had another mode at its path"
    );
    let metadata = std::fs::symlink_metadata(&path).unwrap();
    assert_eq!(metadata.permissions().mode() & 0o777, 0o600);
    let entries: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name())
        .collect();
    assert_eq!(
        entries,
        ["httpd.sock"],
        "a staging directory was left behind"
    );
    handle.stop(true).await;
    let _ = std::fs::remove_dir_all(&dir);
}
