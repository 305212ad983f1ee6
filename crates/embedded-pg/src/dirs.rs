//! The cluster's directories: the data directory, and where the Unix socket
//! lives (in the data directory when the path fits a socket address, else in
//! a private directory under a per-user runtime directory).

use std::ffi::OsString;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::EmbeddedError;

/// The longest socket path we let PostgreSQL create (`sun_path` holds 108
/// bytes including the final NUL; we keep a margin).
pub(crate) const MAX_SOCKET_PATH: usize = 100;

/// The longest socket name PostgreSQL creates in a socket directory.
const LONGEST_SOCKET_NAME: &str = ".s.PGSQL.65535";

/// `path`, made absolute against the working directory.
pub(crate) fn absolute(path: &Path) -> Result<PathBuf, EmbeddedError> {
    std::path::absolute(path).map_err(|source| EmbeddedError::Io {
        what: "cannot resolve",
        path: path.to_owned(),
        source,
    })
}

/// Whether `path` can go into `pg_ctl -o '…'`, which a shell reads: single
/// quotes protect everything but these characters.
pub(crate) fn shell_safe(path: &Path) -> bool {
    !path.to_string_lossy().contains(['"', '$', '`', '\\'])
}

/// Creates the data directory `dir` with mode 0700, owned by the user
/// PostgreSQL runs as.
pub(crate) fn prepare_data_dir(
    dir: &Path,
    run_as: Option<(u32, u32)>,
) -> Result<(), EmbeddedError> {
    let io = |what| {
        move |source| EmbeddedError::Io {
            what,
            path: dir.to_owned(),
            source,
        }
    };
    std::fs::create_dir_all(dir).map_err(io("cannot create directory"))?;
    if let Some((uid, gid)) = run_as {
        std::os::unix::fs::chown(dir, Some(uid), Some(gid))
            .map_err(io("cannot change the owner of"))?;
    }
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .map_err(io("cannot change the permissions of"))
}

/// The socket directory of the server on `data_dir`, created if needed: the
/// data directory itself when a socket path in it is short enough, else
/// `<runtime base>/pg-<hash of data_dir>` (see [`runtime_base`]), mode 0700
/// and owned by the user PostgreSQL runs as.
pub(crate) fn socket_dir(
    data_dir: &Path,
    run_as: Option<(u32, u32)>,
) -> Result<PathBuf, EmbeddedError> {
    if usable_for_socket(data_dir) {
        return Ok(data_dir.to_owned());
    }
    let euid = nix::unistd::geteuid();
    let base = runtime_base(
        euid.is_root(),
        std::env::var_os("XDG_RUNTIME_DIR"),
        &std::env::temp_dir(),
        euid.as_raw(),
    );
    let dir = base.path.join(leaf_name(data_dir));
    if !usable_for_socket(&dir) {
        return Err(EmbeddedError::UnsafeDirectory {
            path: dir,
            reason: "the path is too long for a Unix socket or contains spaces, commas, quotes, `$`, backquotes or backslashes".to_owned(),
        });
    }
    ensure_dir(&base.path, base.mode, None)?;
    ensure_dir(&dir, 0o700, run_as)?;
    Ok(dir)
}

/// Whether PostgreSQL can put its socket into `dir`: the path fits a socket
/// address and is a plain entry of `unix_socket_directories` and of `-k '…'`.
fn usable_for_socket(dir: &Path) -> bool {
    let fits = dir.join(LONGEST_SOCKET_NAME).as_os_str().len() <= MAX_SOCKET_PATH;
    let plain = dir
        .to_str()
        .is_some_and(|s| !s.contains([' ', ',', '\'', '"']));
    fits && plain && shell_safe(dir)
}

/// `pg-` and 16 hex digits of the SHA-256 of `data_dir`: one socket
/// directory per data directory.
fn leaf_name(data_dir: &Path) -> String {
    let hash = Sha256::digest(data_dir.as_os_str().as_encoded_bytes());
    let hex = data_encoding::HEXLOWER.encode(hash.get(..8).unwrap_or_default());
    format!("pg-{hex}")
}

/// The directory that holds the socket directories of long data directories.
#[derive(Debug, PartialEq)]
struct RuntimeBase {
    /// Its path; its parent exists and only its owner (or root) can write it.
    path: PathBuf,
    /// Its mode: 0755 for root (the `postgres` user must traverse it), else 0700.
    mode: u32,
}

/// `/run/taler-otp` for root, else `$XDG_RUNTIME_DIR/taler-otp` when that
/// variable holds an absolute path, else `$TMPDIR/taler-otp-<uid>`.
fn runtime_base(
    is_root: bool,
    xdg_runtime_dir: Option<OsString>,
    tmp: &Path,
    uid: u32,
) -> RuntimeBase {
    if is_root {
        return RuntimeBase {
            path: PathBuf::from("/run/taler-otp"),
            mode: 0o755,
        };
    }
    let path = match xdg_runtime_dir.map(PathBuf::from) {
        Some(xdg) if xdg.is_absolute() => xdg.join("taler-otp"),
        _ => tmp.join(format!("taler-otp-{uid}")),
    };
    RuntimeBase { path, mode: 0o700 }
}

/// Creates `dir` (its parent must exist) with `mode`, owned by `owner` (uid,
/// gid; `None`: us), or checks the one already there: it must be a directory,
/// not a symbolic link, owned by that user and without permissions beyond
/// `mode`. Nothing here follows a symbolic link at `dir`.
fn ensure_dir(dir: &Path, mode: u32, owner: Option<(u32, u32)>) -> Result<(), EmbeddedError> {
    let io = |what| {
        move |source| EmbeddedError::Io {
            what,
            path: dir.to_owned(),
            source,
        }
    };
    match std::fs::DirBuilder::new().mode(mode).create(dir) {
        Ok(()) => {
            if let Some((uid, gid)) = owner {
                std::os::unix::fs::lchown(dir, Some(uid), Some(gid))
                    .map_err(io("cannot change the owner of"))?;
            }
        }
        Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(source) => return Err(io("cannot create directory")(source)),
    }
    let refuse = |reason: String| EmbeddedError::UnsafeDirectory {
        path: dir.to_owned(),
        reason,
    };
    let meta = std::fs::symlink_metadata(dir).map_err(io("cannot inspect"))?;
    if meta.file_type().is_symlink() {
        return Err(refuse("it is a symbolic link".to_owned()));
    }
    if !meta.is_dir() {
        return Err(refuse("it is not a directory".to_owned()));
    }
    let uid = owner.map_or_else(|| nix::unistd::geteuid().as_raw(), |(uid, _)| uid);
    if meta.uid() != uid {
        return Err(refuse(format!(
            "it is owned by uid {} instead of {uid}",
            meta.uid()
        )));
    }
    let current = meta.mode() & 0o777;
    if current & !mode != 0 {
        return Err(refuse(format!(
            "its mode {current:o} grants more than {mode:o}"
        )));
    }
    if current != mode {
        // Checked above: a directory of ours (or, as root, of the PostgreSQL user).
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode))
            .map_err(io("cannot change the permissions of"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh, empty path under the temporary directory.
    /// Asserts that `result` refuses a directory as unsafe for a reason containing `why`.
    fn assert_unsafe(result: &Result<(), EmbeddedError>, why: &str) {
        assert!(
            matches!(result, Err(EmbeddedError::UnsafeDirectory { reason, .. }) if reason.contains(why)),
            "{result:?}"
        );
    }

    fn scratch(name: &str) -> PathBuf {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        std::env::temp_dir().join(format!(
            "taler-otp-dirs-{name}-{}-{nanos}",
            std::process::id()
        ))
    }

    #[test]
    fn short_data_dirs_hold_their_socket() {
        assert!(usable_for_socket(Path::new("/tmp/x/data")));
        let long = PathBuf::from(format!("/tmp/{}/data", "d".repeat(100)));
        assert!(!usable_for_socket(&long));
        assert!(!usable_for_socket(Path::new("/tmp/with space/data")));
        assert!(!usable_for_socket(Path::new("/tmp/a,b/data")));
    }

    #[test]
    fn long_data_dirs_get_a_socket_dir_under_a_private_runtime_dir() {
        let tmp = Path::new("/tmp");
        assert_eq!(
            runtime_base(true, Some("/run/user/0".into()), tmp, 0),
            RuntimeBase {
                path: PathBuf::from("/run/taler-otp"),
                mode: 0o755
            }
        );
        assert_eq!(
            runtime_base(false, Some("/run/user/1000".into()), tmp, 1000),
            RuntimeBase {
                path: PathBuf::from("/run/user/1000/taler-otp"),
                mode: 0o700
            }
        );
        assert_eq!(
            runtime_base(false, Some("relative".into()), tmp, 1000).path,
            Path::new("/tmp/taler-otp-1000")
        );
        assert_eq!(
            runtime_base(false, None, tmp, 1000).path,
            Path::new("/tmp/taler-otp-1000")
        );
        let long = PathBuf::from(format!("/tmp/{}/data", "d".repeat(100)));
        let leaf = Path::new("/run/user/1000/taler-otp").join(leaf_name(&long));
        assert!(usable_for_socket(&leaf), "{leaf:?}");
        assert_ne!(leaf_name(&long), leaf_name(Path::new("/tmp/other")));
    }

    #[test]
    fn a_new_directory_is_created_private() {
        let dir = scratch("new");
        let created = ensure_dir(&dir, 0o700, None);
        let mode = std::fs::symlink_metadata(&dir).map(|m| m.mode() & 0o777);
        let again = ensure_dir(&dir, 0o700, None);
        let _ = std::fs::remove_dir(&dir);
        assert!(created.is_ok(), "{created:?}");
        assert_eq!(mode.ok(), Some(0o700));
        assert!(again.is_ok(), "{again:?}");
    }

    #[test]
    fn a_symbolic_link_is_refused_and_not_followed() {
        let target = scratch("target");
        let link = scratch("link");
        let made = std::fs::create_dir(&target)
            .and_then(|()| {
                std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o755))
            })
            .and_then(|()| std::os::unix::fs::symlink(&target, &link));
        let result = ensure_dir(&link, 0o700, None);
        let target_mode = std::fs::metadata(&target).map(|m| m.mode() & 0o777);
        let _ = std::fs::remove_file(&link);
        let _ = std::fs::remove_dir(&target);
        assert!(made.is_ok(), "{made:?}");
        assert_unsafe(&result, "symbolic link");
        assert_eq!(
            target_mode.ok(),
            Some(0o755),
            "the link's target was changed"
        );
    }

    #[test]
    fn open_permissions_and_other_owners_are_refused() {
        let dir = scratch("open");
        let made = std::fs::create_dir(&dir)
            .and_then(|()| std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)));
        let open = ensure_dir(&dir, 0o700, None);
        let other = nix::unistd::geteuid().as_raw().wrapping_add(1);
        let foreign = ensure_dir(&dir, 0o777, Some((other, other)));
        let _ = std::fs::remove_dir(&dir);
        assert!(made.is_ok(), "{made:?}");
        assert_unsafe(&open, "mode 777");
        assert_unsafe(&foreign, "owned by");
    }
}
