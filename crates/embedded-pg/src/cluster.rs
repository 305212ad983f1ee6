//! [`Cluster`]: initialising, starting, adopting, releasing and stopping the
//! server on a data directory.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::binaries::{self, find_bindir, run};
use crate::dirs::{self, absolute, prepare_data_dir, shell_safe};
use crate::lock::{Lock, is_sole_user, lock_path, locked_file, started_marker, users_path};
use crate::{ClusterOptions, DEFAULT_DATABASE, EmbeddedError};

/// The default port, also the socket name's number when TCP is off.
const DEFAULT_PORT: u16 = 5432;

/// Settings the embedded server runs with beyond PostgreSQL's defaults, as `-c` options at
/// every start (so they hold for data directories made by older versions too).
///
/// `wal_init_zero = off`: a new WAL segment is created with its last byte written instead of
/// 16 MB of zeroes written and synced. The backend that needs the segment does that work while
/// holding the WAL write lock, so with zero-filling every commit of the server waited for it:
/// about 10 ms, once a second, at 12,000 verifications/s on a young database (old segments are
/// recycled once checkpoints have run, so later it is rarer). Without it, that pause was gone
/// from the verification benchmark's batches (README, Benchmarks). Durability is unchanged:
/// `fdatasync` also writes the metadata of the blocks a WAL write allocates.
///
/// `max_wal_size = 4GB` (PostgreSQL's default is 1GB): a checkpoint starts once the WAL written
/// since the last one reaches about max_wal_size / 1.9, and every page's first change after a
/// checkpoint writes the whole page to the WAL. A verification writes about 1.7 KB of WAL, so at
/// 13,000 a second (22 MB/s) the default started a checkpoint every 25 s, each followed by a
/// burst of full pages (the benchmarks' runs that met one had their p99 raised by 1–3 ms), and
/// PostgreSQL warns about checkpoints less than 30 s apart. With 4GB, checkpoints come from
/// `checkpoint_timeout` (5 minutes) up to about 7 MB/s of WAL sustained, and at full load every
/// 100 s. The cost: up to about 4 GB of WAL on disk under sustained load, and a longer crash
/// recovery (the WAL since the last checkpoint is replayed).
pub(crate) const SERVER_SETTINGS: &[(&str, &str)] =
    &[("wal_init_zero", "off"), ("max_wal_size", "4GB")];

/// A running PostgreSQL server on a data directory. Dropping it leaves the
/// server running; call [`Cluster::release`] or [`Cluster::stop`] to stop it.
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
    /// missing. The Unix socket lives in the data directory, or in a private
    /// directory under the runtime directory when that path would be too long
    /// for a socket (see the crate documentation).
    pub fn start(opts: &ClusterOptions) -> Result<Cluster, EmbeddedError> {
        let bindir = find_bindir()?;
        let data_dir = absolute(&opts.data_dir)?;
        if !shell_safe(&data_dir) {
            return Err(EmbeddedError::UnsupportedPath(data_dir));
        }
        let run_as = binaries::run_as()?;
        prepare_data_dir(&data_dir, run_as)?;
        let socket_dir = dirs::socket_dir(&data_dir, run_as)?;
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
        let users = locked_file(&users_path(&cluster.data_dir), Lock::Shared)?;
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
        let last_user = is_sole_user(&users);
        let marker = started_marker(&self.data_dir);
        if !(last_user && marker.exists()) {
            return Ok(false);
        }
        self.stop()?;
        let _ = std::fs::remove_file(marker);
        drop(lock);
        Ok(true)
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
        let mut options = format!(
            "-c listen_addresses='{listen}' -p {} -k '{}'",
            self.port,
            self.socket_dir.to_string_lossy()
        );
        for (name, value) in SERVER_SETTINGS {
            options.push_str(&format!(" -c {name}={value}"));
        }
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

    /// A PostgreSQL program, run as the unprivileged user when we are root,
    /// with a clean environment.
    fn command(&self, program: &str) -> Command {
        binaries::command(&self.bindir, program, self.run_as)
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_string_values_are_quoted() {
        assert_eq!(quote("a b'c"), r"'a b\'c'");
    }
}
