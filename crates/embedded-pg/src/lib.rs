//! A PostgreSQL cluster run from the machine's own binaries: taler-otp's
//! embedded default database and the test harness's database server.
//!
//! [`Cluster::start`] initialises a data directory if needed (`initdb`,
//! trust authentication), starts the server with `pg_ctl -w`, reuses a server
//! that already runs on that directory, and creates the database `taler`.
//! It runs no SQL of its own. [`WritebackPacer`] writes the cluster's changed
//! table files to disk at a steady pace while a server uses it.
//!
//! **Invariants:**
//! - As root, the PostgreSQL programs run as the `postgres` user (`initdb`
//!   and `postgres` refuse to run as root); without such a user, starting
//!   fails with [`EmbeddedError::NoUser`].
//! - The PostgreSQL programs get a clean environment (`PATH`, `LANG=C`,
//!   `LC_ALL=C`): none of the caller's variables, secrets included, reach
//!   them.
//! - The Unix socket lives in the data directory, or, when that path is too
//!   long for a socket, in a private directory (mode 0700, owned by the user
//!   PostgreSQL runs as, never reached through a symbolic link) under
//!   `$XDG_RUNTIME_DIR`, `/run/taler-otp` (root) or `$TMPDIR/taler-otp-<uid>`.
//! - Processes share a server: a lock beside the data directory serialises
//!   start and stop, and the last taler-otp process using a server that a
//!   taler-otp process started stops it ([`Cluster::release`]).

mod binaries;
mod cluster;
mod dirs;
mod lock;
mod writeback;

use std::path::PathBuf;

pub use binaries::find_bindir;
pub use cluster::Cluster;
pub use writeback::{Pass, WritebackPacer};

/// The database [`Cluster::start`] creates.
pub const DEFAULT_DATABASE: &str = "taler";

/// Why the cluster could not be started or stopped.
#[derive(Debug, thiserror::Error)]
pub enum EmbeddedError {
    /// No PostgreSQL server programs on this machine.
    #[error(
        "PostgreSQL server programs not found: install them (Debian: apt-get install postgresql) or set PG_BINDIR"
    )]
    NoBinaries,
    /// Running as root, and no `postgres` user exists to run the server as.
    #[error(
        "running as root and there is no `postgres` user to run PostgreSQL as (it refuses to run as root): create that user (Debian: apt-get install postgresql does) or run taler-otp as an unprivileged user"
    )]
    NoUser,
    /// The data directory path cannot be passed safely to `pg_ctl`.
    #[error(
        "unsupported data directory path {0:?}: it must not contain quotes, `$`, backquotes or backslashes"
    )]
    UnsupportedPath(PathBuf),
    /// A directory for the Unix socket is not safe to use.
    #[error("refusing socket directory {path:?}: {reason}")]
    UnsafeDirectory {
        /// The directory.
        path: PathBuf,
        /// What is wrong with it (a symbolic link, another owner, open permissions, …).
        reason: String,
    },
    /// A file system operation failed.
    #[error("{what} {path:?}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// On which path.
        path: PathBuf,
        /// The failure.
        #[source]
        source: std::io::Error,
    },
    /// A PostgreSQL program failed.
    #[error("{program} failed: {detail}")]
    Command {
        /// The program (`initdb`, `pg_ctl`, `createdb`).
        program: &'static str,
        /// Its exit status and output, or why it could not run.
        detail: String,
    },
}

/// Where and how to run the cluster.
#[derive(Clone, Debug)]
pub struct ClusterOptions {
    /// The data directory; created and initialised if needed.
    pub data_dir: PathBuf,
    /// `Some(port)`: also listen on 127.0.0.1:port. `None`: Unix socket only.
    pub port: Option<u16>,
    /// The superuser `initdb` creates (`postgres`).
    pub superuser: String,
}

impl ClusterOptions {
    /// Options for `data_dir`: Unix socket only, superuser `postgres`.
    pub fn new(data_dir: impl Into<PathBuf>) -> ClusterOptions {
        ClusterOptions {
            data_dir: data_dir.into(),
            port: None,
            superuser: "postgres".to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_binaries_message_is_one_line_naming_the_package() {
        let message = EmbeddedError::NoBinaries.to_string();
        assert!(!message.contains('\n'));
        assert!(message.contains("apt-get install postgresql"));
    }

    #[test]
    fn no_user_message_names_the_missing_user_and_no_fallback() {
        let message = EmbeddedError::NoUser.to_string();
        assert!(message.contains("`postgres` user"), "{message}");
        assert!(!message.contains("nobody"), "{message}");
    }
}
