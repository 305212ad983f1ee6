//! The UNIX socket listener (`[merchant] SERVE = unix`), with its permissions in place before
//! anybody can connect.
//!
//! Binding creates the socket file with the process's umask (commonly 0755 for a socket), and
//! it listens from then on: setting `UNIXPATH_MODE` afterwards leaves a moment in which any
//! local user could connect. Instead the socket is bound in a new directory of mode 0700 beside
//! the configured path, given its mode there, and then renamed onto the path, atomically
//! replacing a socket left from an earlier run. At the configured path it never had another
//! mode, and in the private directory nobody else could reach it. The process's umask is not
//! touched (it is shared by all threads).

use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::os::unix::net::UnixListener;
use std::path::Path;

/// A listener on `path` whose socket file has had permissions `mode` since it was reachable,
/// in non-blocking mode, ready for `HttpServer::listen_uds`.
pub fn bind(path: &Path, mode: u32) -> io::Result<UnixListener> {
    let parent = path
        .parent()
        .filter(|parent| !parent.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    // Short, so that the staged socket's path stays within the 107 bytes a socket path allows.
    let staging = parent.join(format!(".taler-otp-{}", std::process::id()));
    // Left by a process that had this id and crashed here: it holds at most a stale socket.
    let _ = std::fs::remove_file(staging.join("s"));
    let _ = std::fs::remove_dir(&staging);
    std::fs::DirBuilder::new().mode(0o700).create(&staging)?;
    let staged = staging.join("s");
    let bound = UnixListener::bind(&staged).and_then(|listener| {
        std::fs::set_permissions(&staged, std::fs::Permissions::from_mode(mode))?;
        std::fs::rename(&staged, path)?;
        listener.set_nonblocking(true)?;
        Ok(listener)
    });
    let _ = std::fs::remove_file(&staged);
    let _ = std::fs::remove_dir(&staging);
    bound
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileTypeExt;

    #[test]
    fn the_socket_has_its_mode_and_replaces_an_old_one() {
        let dir = std::env::temp_dir().join(format!("taler-otp-uds-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("httpd.sock");
        std::fs::write(&path, "an old socket").unwrap();
        let listener = bind(&path, 0o640).unwrap();
        let metadata = std::fs::symlink_metadata(&path).unwrap();
        assert!(metadata.file_type().is_socket());
        assert_eq!(metadata.permissions().mode() & 0o777, 0o640);
        let _client = std::os::unix::net::UnixStream::connect(&path).unwrap();
        drop(listener);
        let left: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
        assert_eq!(left.len(), 1, "the staging directory was left behind");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
