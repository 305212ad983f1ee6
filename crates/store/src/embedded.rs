//! A PostgreSQL cluster run from the machine's own binaries: the server's
//! embedded default database and the test harness's database server.
//!
//! [`Cluster::start`] initialises a data directory if needed (`initdb`,
//! trust authentication), starts the server with `pg_ctl -w`, reuses a server
//! that already runs on that directory, and creates the database `taler`.
//! As root it runs the PostgreSQL programs as the `postgres` user (or
//! `nobody`), because `initdb` and `postgres` refuse to run as root.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use sha2::{Digest, Sha256};

/// The database [`Cluster::start`] creates.
pub const DEFAULT_DATABASE: &str = "taler";

/// The default port, also the socket name's number when TCP is off.
const DEFAULT_PORT: u16 = 5432;

/// `sun_path` holds 108 bytes including the final NUL.
const MAX_SOCKET_PATH: usize = 107;

/// Environment variables that would redirect the PostgreSQL programs.
const PG_ENV: &[&str] = &[
    "PGDATA",
    "PGHOST",
    "PGHOSTADDR",
    "PGPORT",
    "PGDATABASE",
    "PGUSER",
    "PGPASSWORD",
    "PGPASSFILE",
    "PGSERVICE",
    "PGSERVICEFILE",
    "PGOPTIONS",
    "PGSSLMODE",
    "PGTZ",
    "PGCLIENTENCODING",
    "PGCONNECT_TIMEOUT",
    "PGAPPNAME",
    "PGTARGETSESSIONATTRS",
];

/// Why the cluster could not be started or stopped.
#[derive(Debug, thiserror::Error)]
pub enum EmbeddedError {
    /// No PostgreSQL server programs on this machine.
    #[error(
        "PostgreSQL server programs not found: install them (Debian: apt-get install postgresql) or set PG_BINDIR"
    )]
    NoBinaries,
    /// Running as root, and neither `postgres` nor `nobody` exists to run the
    /// server as.
    #[error("running as root and no `postgres` or `nobody` user to run PostgreSQL as")]
    NoUser,
    /// The data directory path cannot be passed safely to `pg_ctl`.
    #[error(
        "unsupported data directory path {0:?}: it must not contain quotes, `$`, backquotes or backslashes"
    )]
    UnsupportedPath(PathBuf),
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

/// A running PostgreSQL server on a data directory. Dropping it leaves the
/// server running; call [`Cluster::stop`] to stop it.
#[derive(Clone, Debug)]
pub struct Cluster {
    bindir: PathBuf,
    data_dir: PathBuf,
    socket_dir: PathBuf,
    port: u16,
    tcp: bool,
    superuser: String,
    run_as: Option<(u32, u32)>,
    started: bool,
    /// A shared lock on `<data_dir>.users`, held while this process uses the server.
    users: Option<std::sync::Arc<std::fs::File>>,
}

impl Cluster {
    /// Initialises (if there is no `PG_VERSION`), starts (unless a server
    /// already runs on the directory) and creates the database `taler` if
    /// missing. The Unix socket lives in the data directory, or in a short
    /// directory under `/tmp` when that path would be too long for a socket.
    pub fn start(opts: &ClusterOptions) -> Result<Cluster, EmbeddedError> {
        let bindir = find_bindir()?;
        let data_dir = absolute(&opts.data_dir)?;
        if data_dir.to_string_lossy().contains(['"', '$', '`', '\\']) {
            return Err(EmbeddedError::UnsupportedPath(data_dir));
        }
        let run_as = run_as()?;
        prepare_dir(&data_dir, run_as)?;
        let socket_dir = socket_dir(&data_dir);
        if socket_dir != data_dir {
            prepare_dir(&socket_dir, run_as)?;
        }
        let mut cluster = Cluster {
            socket_dir,
            bindir,
            data_dir,
            port: opts.port.unwrap_or(DEFAULT_PORT),
            tcp: opts.port.is_some(),
            superuser: opts.superuser.clone(),
            run_as,
            started: false,
            users: None,
        };
        // Several processes (a starting `serve`, an operator's command) may reach this at once:
        // one of them initialises and starts the server, the others wait and adopt it.
        let lock = locked_file(&lock_path(&cluster.data_dir), Lock::Exclusive)?;
        if !cluster.data_dir.join("PG_VERSION").exists() {
            cluster.initdb()?;
        }
        if cluster.adopt_running_server() {
            cluster.wait_until_ready()?;
        } else {
            cluster.pg_ctl_start()?;
            cluster.started = true;
            std::fs::write(started_marker(&cluster.data_dir), b"").map_err(|source| {
                EmbeddedError::Io {
                    what: "write the start marker",
                    path: started_marker(&cluster.data_dir),
                    source,
                }
            })?;
        }
        cluster.create_database(DEFAULT_DATABASE)?;
        let users = locked_file(&sibling(&cluster.data_dir, ".users"), Lock::Shared)?;
        cluster.users = Some(std::sync::Arc::new(users));
        drop(lock);
        Ok(cluster)
    }

    /// Stops using the server: the last user of a server that a taler-otp process started
    /// stops it (whichever process started it); a server started by someone else, or still in
    /// use by another process (a `serve` started meanwhile, say), keeps running. Returns whether
    /// it was stopped.
    pub fn release(mut self) -> Result<bool, EmbeddedError> {
        let Some(users) = self.users.take() else {
            return Ok(false);
        };
        // Hold the start lock so nobody adopts the server between the check and the stop.
        let lock = locked_file(&lock_path(&self.data_dir), Lock::Exclusive)?;
        // Upgrading our shared lock succeeds only when no other process holds one.
        let last_user =
            fs4::fs_std::FileExt::try_lock_exclusive(&*users).is_ok_and(|locked| locked);
        let marker = started_marker(&self.data_dir);
        if !(last_user && marker.exists()) {
            return Ok(false);
        }
        self.stop()?;
        let _ = std::fs::remove_file(marker);
        drop(lock);
        Ok(true)
    }

    /// Waits until an adopted server accepts connections (it may still be starting up).
    fn wait_until_ready(&self) -> Result<(), EmbeddedError> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            let mut ready = self.command("pg_isready");
            ready
                .arg("-q")
                .arg("-h")
                .arg(&self.socket_dir)
                .arg("-p")
                .arg(self.port.to_string());
            if ready.status().is_ok_and(|status| status.success()) {
                return Ok(());
            }
            if std::time::Instant::now() >= deadline {
                return Err(EmbeddedError::Command {
                    program: "pg_isready",
                    detail: "the running server did not accept connections within 60 s".to_owned(),
                });
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }

    /// A libpq connection string for `dbname` over the Unix socket.
    pub fn url(&self, dbname: &str) -> String {
        format!(
            "host={} port={} user={} dbname={}",
            quote(&self.socket_dir.to_string_lossy()),
            self.port,
            quote(&self.superuser),
            quote(dbname)
        )
    }

    /// A libpq connection string for `dbname` over TCP on 127.0.0.1, when
    /// the cluster listens on TCP.
    pub fn tcp_url(&self, dbname: &str) -> Option<String> {
        self.tcp.then(|| {
            format!(
                "host=127.0.0.1 port={} user={} dbname={}",
                self.port,
                quote(&self.superuser),
                quote(dbname)
            )
        })
    }

    /// The TCP port on 127.0.0.1, when the cluster listens on TCP.
    pub fn tcp_port(&self) -> Option<u16> {
        self.tcp.then_some(self.port)
    }

    /// Whether [`Cluster::start`] started the server, rather than finding it
    /// already running (then another process may still be using it).
    pub fn started_here(&self) -> bool {
        self.started
    }

    /// The directory of the Unix socket.
    pub fn socket_dir(&self) -> &Path {
        &self.socket_dir
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Stops the server (`pg_ctl stop -m fast`).
    pub fn stop(&self) -> Result<(), EmbeddedError> {
        let mut command = self.command("pg_ctl");
        command
            .arg("stop")
            .arg("-D")
            .arg(&self.data_dir)
            .args(["-m", "fast", "-w", "-s"]);
        run("pg_ctl", &mut command).map(drop)
    }

    fn initdb(&self) -> Result<(), EmbeddedError> {
        let mut command = self.command("initdb");
        command
            .arg("-D")
            .arg(&self.data_dir)
            .args(["--auth=trust", "--encoding=UTF8", "--no-locale", "-U"])
            .arg(&self.superuser);
        run("initdb", &mut command).map(drop)
    }

    /// Takes over the port and socket of a server already running on the
    /// data directory, if there is one.
    fn adopt_running_server(&mut self) -> bool {
        let mut status = self.command("pg_ctl");
        status.arg("status").arg("-D").arg(&self.data_dir);
        if !status.output().is_ok_and(|output| output.status.success()) {
            return false;
        }
        // postmaster.pid: line 4 is the port, 5 the first socket directory,
        // 6 the first listen address.
        let Ok(pid_file) = std::fs::read_to_string(self.data_dir.join("postmaster.pid")) else {
            return false;
        };
        let lines: Vec<&str> = pid_file.lines().collect();
        if let Some(port) = lines.get(3).and_then(|port| port.trim().parse().ok()) {
            self.port = port;
        }
        if let Some(dir) = lines.get(4).filter(|dir| !dir.trim().is_empty()) {
            self.socket_dir = PathBuf::from(dir.trim());
        }
        self.tcp = lines.get(5).is_some_and(|addr| !addr.trim().is_empty());
        true
    }

    fn pg_ctl_start(&self) -> Result<(), EmbeddedError> {
        let listen = if self.tcp { "127.0.0.1" } else { "" };
        // pg_ctl hands these options to a shell; the paths were checked for
        // characters that single quotes do not protect.
        let options = format!(
            "-c listen_addresses='{listen}' -p {} -k '{}'",
            self.port,
            self.socket_dir.to_string_lossy()
        );
        let log = self.data_dir.join("server.log");
        let mut command = self.command("pg_ctl");
        command
            .arg("start")
            .arg("-D")
            .arg(&self.data_dir)
            .args(["-w", "-t", "60", "-s", "-l"])
            .arg(&log)
            .arg("-o")
            .arg(options);
        run("pg_ctl", &mut command)
            .map(drop)
            .map_err(|err| match err {
                EmbeddedError::Command { program, detail } => EmbeddedError::Command {
                    program,
                    detail: format!("{detail}; server log: {}", log_tail(&log)),
                },
                other => other,
            })
    }

    fn create_database(&self, dbname: &str) -> Result<(), EmbeddedError> {
        let mut command = self.command("createdb");
        command
            .arg("-h")
            .arg(&self.socket_dir)
            .arg("-p")
            .arg(self.port.to_string())
            .arg("-U")
            .arg(&self.superuser)
            .arg(dbname);
        match run("createdb", &mut command) {
            Ok(_) => Ok(()),
            Err(EmbeddedError::Command { detail, .. }) if detail.contains("already exists") => {
                Ok(())
            }
            Err(err) => Err(err),
        }
    }

    /// A PostgreSQL program, run as the unprivileged user when we are root.
    fn command(&self, program: &str) -> Command {
        let mut command = Command::new(self.bindir.join(program));
        for var in PG_ENV {
            command.env_remove(var);
        }
        // The unprivileged user may not be able to read our working directory.
        command.current_dir("/");
        if let Some((uid, gid)) = self.run_as {
            command.uid(uid).gid(gid);
        }
        command
    }
}

/// The directory holding `initdb`, `pg_ctl` and `postgres`: `$PG_BINDIR`,
/// else the newest `/usr/lib/postgresql/*/bin`, else `pg_config --bindir`,
/// else the `PATH`.
pub fn find_bindir() -> Result<PathBuf, EmbeddedError> {
    let has_server = |dir: &Path| {
        ["initdb", "pg_ctl", "postgres"]
            .iter()
            .all(|p| dir.join(p).is_file())
    };
    if let Some(dir) = std::env::var_os("PG_BINDIR") {
        let dir = PathBuf::from(dir);
        return if has_server(&dir) {
            Ok(dir)
        } else {
            Err(EmbeddedError::NoBinaries)
        };
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse().ok()?;
            Some((version, entry.path().join("bin")))
        })
        .filter(|(_, dir)| has_server(dir))
        .collect();
    versions.sort();
    if let Some((_, dir)) = versions.pop() {
        return Ok(dir);
    }
    if let Ok(output) = Command::new("pg_config").arg("--bindir").output() {
        let dir = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
        if output.status.success() && has_server(&dir) {
            return Ok(dir);
        }
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .find(|dir| has_server(dir))
        .ok_or(EmbeddedError::NoBinaries)
}

/// The user and group to run PostgreSQL as: `None` unless we are root.
fn run_as() -> Result<Option<(u32, u32)>, EmbeddedError> {
    if !nix::unistd::geteuid().is_root() {
        return Ok(None);
    }
    for name in ["postgres", "nobody"] {
        if let Ok(Some(user)) = nix::unistd::User::from_name(name) {
            return Ok(Some((user.uid.as_raw(), user.gid.as_raw())));
        }
    }
    Err(EmbeddedError::NoUser)
}

/// Creates `dir` with mode 0700, owned by the user PostgreSQL runs as.
fn prepare_dir(dir: &Path, run_as: Option<(u32, u32)>) -> Result<(), EmbeddedError> {
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

/// The data directory when a socket path in it fits `sun_path`, else a short
/// directory under `/tmp` named after the data directory.
fn socket_dir(data_dir: &Path) -> PathBuf {
    let longest_socket = data_dir.join(".s.PGSQL.65535.lock");
    let plain = |path: &Path| {
        path.to_str()
            .is_some_and(|s| !s.contains([' ', ',', '\'', '"']))
    };
    if longest_socket.as_os_str().len() <= MAX_SOCKET_PATH && plain(data_dir) {
        return data_dir.to_owned();
    }
    let hash = Sha256::digest(data_dir.as_os_str().as_encoded_bytes());
    let name = data_encoding::HEXLOWER.encode(hash.get(..8).unwrap_or_default());
    PathBuf::from(format!("/tmp/taler-otp-pg-{name}"))
}

fn absolute(path: &Path) -> Result<PathBuf, EmbeddedError> {
    std::path::absolute(path).map_err(|source| EmbeddedError::Io {
        what: "cannot resolve",
        path: path.to_owned(),
        source,
    })
}

fn run(program: &'static str, command: &mut Command) -> Result<Output, EmbeddedError> {
    let output = command.output().map_err(|err| EmbeddedError::Command {
        program,
        detail: format!("cannot run {:?}: {err}", command.get_program()),
    })?;
    if output.status.success() {
        return Ok(output);
    }
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).trim().to_owned();
    Err(EmbeddedError::Command {
        program,
        detail: format!(
            "{}: {} {}",
            output.status,
            text(&output.stderr),
            text(&output.stdout)
        ),
    })
}

/// The last lines of the server log, for an error message.
fn log_tail(log: &Path) -> String {
    let content = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = content.lines().collect();
    lines
        .get(lines.len().saturating_sub(5)..)
        .unwrap_or_default()
        .join(" | ")
}

/// A libpq connection-string value in single quotes.
fn quote(value: &str) -> String {
    format!("'{}'", value.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// How a lock file is held.
enum Lock {
    Shared,
    Exclusive,
}

/// Opens (creating it if needed) the lock file at `path` and locks it, waiting for others.
fn locked_file(path: &Path, lock: Lock) -> Result<std::fs::File, EmbeddedError> {
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

/// The lock file guarding a data directory's initialisation, start and stop: beside it, not in
/// it (initdb wants an empty directory, and the directory belongs to the PostgreSQL user).
fn lock_path(data_dir: &Path) -> PathBuf {
    sibling(data_dir, ".lock")
}

/// Present while a server that a taler-otp process started runs on `data_dir`.
fn started_marker(data_dir: &Path) -> PathBuf {
    sibling(data_dir, ".started")
}

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
    fn no_binaries_message_is_one_line_naming_the_package() {
        let message = EmbeddedError::NoBinaries.to_string();
        assert!(!message.contains('\n'));
        assert!(message.contains("apt-get install postgresql"));
    }

    #[test]
    fn long_data_dirs_get_a_short_socket_dir() {
        let short = Path::new("/tmp/x/data");
        assert_eq!(socket_dir(short), short);
        let long = PathBuf::from(format!("/tmp/{}/data", "d".repeat(100)));
        let dir = socket_dir(&long);
        assert!(
            dir.to_string_lossy().starts_with("/tmp/taler-otp-pg-"),
            "{dir:?}"
        );
        assert!(dir.join(".s.PGSQL.65535.lock").as_os_str().len() <= MAX_SOCKET_PATH);
    }

    #[test]
    fn connection_string_values_are_quoted() {
        assert_eq!(quote("a b'c"), r"'a b\'c'");
    }
}
