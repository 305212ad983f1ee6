//! The files beside a data directory that coordinate the processes sharing
//! its server: `<data_dir>.lock` (start and stop), `<data_dir>.users` (one
//! shared lock per process using the server) and `<data_dir>.started` (a
//! taler-otp process started the server).

use std::path::{Path, PathBuf};

use crate::EmbeddedError;

/// How a lock file is held.
pub(crate) enum Lock {
    /// Any number of holders (the users lock).
    Shared,
    /// One holder (the start lock).
    Exclusive,
}

/// Opens (creating it if needed) the lock file at `path` and locks it, waiting for others.
pub(crate) fn locked_file(path: &Path, lock: Lock) -> Result<std::fs::File, EmbeddedError> {
    let io = |what: &'static str| {
        move |source| EmbeddedError::Io {
            what,
            path: path.to_path_buf(),
            source,
        }
    };
    let file = std::fs::File::create(path).map_err(io("create the lock file"))?;
    match lock {
        Lock::Shared => fs4::fs_std::FileExt::lock_shared(&file),
        Lock::Exclusive => fs4::fs_std::FileExt::lock_exclusive(&file),
    }
    .map_err(io("lock"))?;
    Ok(file)
}

/// Whether the shared lock `users` can be upgraded at once, i.e. whether no
/// other process holds one.
pub(crate) fn is_sole_user(users: &std::fs::File) -> bool {
    fs4::fs_std::FileExt::try_lock_exclusive(users).is_ok_and(|locked| locked)
}

/// The lock file guarding a data directory's initialisation, start and stop: beside it, not in
/// it (initdb wants an empty directory, and the directory belongs to the PostgreSQL user).
pub(crate) fn lock_path(data_dir: &Path) -> PathBuf {
    sibling(data_dir, ".lock")
}

/// The lock file every process using the server holds shared.
pub(crate) fn users_path(data_dir: &Path) -> PathBuf {
    sibling(data_dir, ".users")
}

/// Present while a server that a taler-otp process started runs on `data_dir`.
pub(crate) fn started_marker(data_dir: &Path) -> PathBuf {
    sibling(data_dir, ".started")
}

/// `data_dir` with `suffix` appended to its last component.
fn sibling(data_dir: &Path, suffix: &str) -> PathBuf {
    let mut name = data_dir
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(suffix);
    data_dir.with_file_name(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coordination_files_sit_beside_the_data_directory() {
        let data_dir = Path::new("/var/lib/taler-otp/postgres");
        assert_eq!(
            lock_path(data_dir),
            Path::new("/var/lib/taler-otp/postgres.lock")
        );
        assert_eq!(
            users_path(data_dir),
            Path::new("/var/lib/taler-otp/postgres.users")
        );
        assert_eq!(
            started_marker(data_dir),
            Path::new("/var/lib/taler-otp/postgres.started")
        );
    }
}
