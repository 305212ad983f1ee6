//! What the binary's integration tests share: the binary, its output, temporary files and a
//! free port. Each test binary uses a part of it.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Output;

/// The `taler-otp` binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_taler-otp");

/// A path under the temporary directory, unique to `tag`, this process and the time; whatever
/// is there is removed on drop.
pub struct TempPath(PathBuf);

impl TempPath {
    /// The path `taler-otp-{tag}-{pid}-{nanos}{suffix}`; nothing is created.
    pub fn new(tag: &str, suffix: &str) -> TempPath {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|since| since.as_nanos())
            .unwrap_or_default();
        let name = format!("taler-otp-{tag}-{}-{nanos}{suffix}", std::process::id());
        TempPath(std::env::temp_dir().join(name))
    }

    /// A configuration file (`.conf`) holding `text`.
    pub fn file(tag: &str, text: &str) -> TempPath {
        let file = TempPath::new(tag, ".conf");
        std::fs::write(&file.0, text).expect("temporary file written");
        file
    }

    /// An empty directory.
    pub fn dir(tag: &str) -> TempPath {
        let dir = TempPath::new(tag, "");
        std::fs::create_dir_all(&dir.0).expect("temporary directory created");
        dir
    }

    /// The path.
    pub fn path(&self) -> &Path {
        &self.0
    }

    /// The path as a command-line argument.
    pub fn arg(&self) -> &str {
        self.0.to_str().expect("UTF-8 temporary path")
    }
}

impl Drop for TempPath {
    fn drop(&mut self) {
        let _ = if self.0.is_dir() {
            std::fs::remove_dir_all(&self.0)
        } else {
            std::fs::remove_file(&self.0)
        };
    }
}

/// A configuration file that points at the database `url`, followed by `extra` lines.
pub fn db_config(tag: &str, url: &str, extra: &str) -> TempPath {
    TempPath::file(
        tag,
        &format!("[merchantdb-postgres]\nCONFIG = \"{url}\"\n{extra}"),
    )
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port()
}

/// What a command printed on standard output.
pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// What a command printed on standard error.
pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}
