//! Test databases: a fresh, migrated database per test, on `DATABASE_URL` or
//! on a private cluster started from the machine's PostgreSQL binaries.
//!
//! Without `DATABASE_URL`, the first test process starts a cluster in
//! `$TMPDIR/taler-otp-test-pg-<uid>` listening on 127.0.0.1 (the port is kept
//! in that directory), guarded by a file lock so that concurrent test
//! processes start it once; it is left running for the next run. Each
//! [`TestDb`] creates `test_<epoch>_<random>`, migrates it and drops it on
//! `Drop`; databases of crashed runs older than an hour are swept at the
//! first use in a process.

// A test harness fails loudly: a panic with a message is the right outcome.
#![allow(clippy::expect_used)]

mod proxy;

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use otp_embedded_pg::{Cluster, ClusterOptions};
use rand::Rng;
use tokio::sync::OnceCell;
use tokio_postgres::config::Host;

pub use proxy::TcpProxy;

use crate::store::{Store, StoreConfig};
use crate::tls::TlsSettings;

/// How old a leftover test database must be to be swept.
const STALE_AFTER_SECS: i64 = 3600;

/// The database server the test databases live on.
struct Server {
    /// Connection parameters of the server (any database).
    base: tokio_postgres::Config,
    /// Its TCP address, when it has one.
    tcp_addr: Option<SocketAddr>,
    /// `sslmode` and `sslrootcert` of `DATABASE_URL`.
    tls: TlsSettings,
}

static SERVER: OnceCell<Server> = OnceCell::const_new();

/// A fresh, migrated database for one test, dropped when this is dropped.
pub struct TestDb {
    name: String,
    server: &'static Server,
    store: Store,
}

impl TestDb {
    /// Creates and migrates a new database; panics with a message when no
    /// database server can be had.
    pub async fn new() -> TestDb {
        let db = TestDb::new_empty().await;
        crate::migrate::migrate(&db.store)
            .await
            .expect("migrate test database");
        db
    }

    /// Creates a new database without applying the migrations (schema
    /// version 0), for tests of the migration path.
    pub async fn new_empty() -> TestDb {
        let server = SERVER.get_or_init(Server::init).await;
        let admin = server.admin().await;
        let epoch: i64 = admin
            .query_one("SELECT extract(epoch FROM now())::bigint AS epoch", &[])
            .await
            .and_then(|row| row.try_get("epoch"))
            .expect("test database server answers");
        let suffix: String = rand::thread_rng()
            .sample_iter(rand::distributions::Alphanumeric)
            .take(12)
            .map(|c| char::from(c).to_ascii_lowercase())
            .collect();
        let name = format!("test_{epoch}_{suffix}");
        // Identifiers cannot be bind parameters; the name is [a-z0-9_] only.
        admin
            .batch_execute(&format!("CREATE DATABASE \"{name}\""))
            .await
            .expect("create test database");
        let store =
            Store::connect(&small_pool(server.conn_string(None, &name))).expect("test store");
        TestDb {
            name,
            server,
            store,
        }
    }

    /// The database's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A connection string for this database (over TCP for the private
    /// cluster).
    pub fn url(&self) -> String {
        self.server.conn_string(None, &self.name)
    }

    /// The same database reached through `addr` (a [`TcpProxy`]).
    pub fn url_via(&self, addr: SocketAddr) -> String {
        self.server.conn_string(Some(addr), &self.name)
    }

    /// The database server's TCP address, to put a [`TcpProxy`] in front of.
    pub fn upstream_addr(&self) -> SocketAddr {
        self.server
            .tcp_addr
            .expect("the test database server has no TCP address (DATABASE_URL uses a Unix socket)")
    }

    /// A store configuration for this database with a small pool.
    pub fn config(&self) -> StoreConfig {
        small_pool(self.url())
    }

    /// A store on this database (shares one pool).
    pub fn store(&self) -> Store {
        self.store.clone()
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        self.store.pool().close();
        let server = self.server;
        let name = std::mem::take(&mut self.name);
        // Drop may run inside a runtime, which cannot block on a future:
        // use a thread with a runtime of its own.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            runtime.block_on(async {
                let admin = server.try_admin().await.ok()?;
                let drop = format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)");
                admin.batch_execute(&drop).await.ok()
            })
        })
        .join();
        if !matches!(dropped, Ok(Some(()))) {
            eprintln!("warning: could not drop a test database; it will be swept later");
        }
    }
}

impl Server {
    async fn init() -> Server {
        let server = match std::env::var("DATABASE_URL") {
            Ok(url) if !url.is_empty() => Server::from_url(&url),
            _ => tokio::task::spawn_blocking(Server::start_private_cluster)
                .await
                .expect("start the private test cluster"),
        };
        server.sweep_stale().await;
        server
    }

    fn from_url(url: &str) -> Server {
        let (url, tls) =
            crate::tls::split(url).expect("DATABASE_URL has valid sslmode and sslrootcert");
        let base = tokio_postgres::Config::from_str(&url)
            .expect("DATABASE_URL is a valid connection string");
        let port = base.get_ports().first().copied().unwrap_or(5432);
        let tcp_addr = match base.get_hosts().first() {
            Some(Host::Tcp(host)) => (host.as_str(), port)
                .to_socket_addrs()
                .ok()
                .and_then(|mut a| a.next()),
            _ => None,
        };
        Server {
            base,
            tcp_addr,
            tls,
        }
    }

    fn start_private_cluster() -> Server {
        use fs4::fs_std::FileExt;

        let dir =
            std::env::temp_dir().join(format!("taler-otp-test-pg-{}", nix::unistd::geteuid()));
        std::fs::create_dir_all(&dir).expect("create the test cluster directory");
        // As root, the server runs as `postgres`, which must traverse this directory.
        std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .expect("make the test cluster directory traversable");
        let lock =
            std::fs::File::create(dir.join("lock")).expect("create the test cluster lock file");
        lock.lock_exclusive()
            .expect("lock the test cluster directory");
        let port_file = dir.join("port");
        let saved_port = std::fs::read_to_string(&port_file)
            .ok()
            .and_then(|p| p.trim().parse().ok());
        let start = |port: u16| {
            Cluster::start(&ClusterOptions {
                data_dir: dir.join("data"),
                port: Some(port),
                superuser: "postgres".to_owned(),
            })
        };
        let cluster = match saved_port.map(start) {
            Some(Ok(cluster)) => cluster,
            // No saved port, or it is taken by something else now: pick another.
            _ => start(free_port())
                .unwrap_or_else(|err| panic!("cannot start a test cluster: {err}")),
        };
        let port = cluster.tcp_port().expect("the test cluster listens on TCP");
        std::fs::write(&port_file, port.to_string()).expect("save the test cluster port");
        drop(lock);
        let url = cluster
            .tcp_url("postgres")
            .expect("the test cluster listens on TCP");
        let mut server = Server::from_url(&url);
        server.tcp_addr = Some(SocketAddr::from(([127, 0, 0, 1], port)));
        server
    }

    /// Deletes test databases of earlier runs that were not dropped, and
    /// makes the private cluster fast (durability does not matter for tests).
    async fn sweep_stale(&self) {
        let admin = self.admin().await;
        if std::env::var_os("DATABASE_URL").is_none() {
            // One statement per query: ALTER SYSTEM refuses to run in the
            // implicit transaction of a multi-statement query.
            for tune in [
                "ALTER SYSTEM SET fsync = off",
                "ALTER SYSTEM SET synchronous_commit = off",
                "ALTER SYSTEM SET full_page_writes = off",
                "SELECT pg_reload_conf()",
            ] {
                if let Err(err) = admin.batch_execute(tune).await {
                    eprintln!("warning: cannot tune the test cluster ({tune}): {err}");
                }
            }
        }
        let stale = admin
            .query(
                "SELECT datname FROM pg_database
                  WHERE datname LIKE 'test\\_%'
                    AND split_part(datname, '_', 2) ~ '^[0-9]+$'
                    AND split_part(datname, '_', 2)::bigint < extract(epoch FROM now())::bigint - $1::bigint",
                &[&STALE_AFTER_SECS],
            )
            .await
            .unwrap_or_else(|err| {
                eprintln!("warning: cannot list stale test databases: {err}");
                Vec::new()
            });
        for row in stale {
            let Ok(name) = row.try_get::<_, String>("datname") else {
                continue;
            };
            if name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                let _ = admin
                    .batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                    .await;
            }
        }
    }

    async fn admin(&self) -> tokio_postgres::Client {
        self.try_admin()
            .await
            .expect("connect to the test database server")
    }

    /// A libpq connection string for `dbname` on this server, or through `via`.
    fn conn_string(&self, via: Option<SocketAddr>, dbname: &str) -> String {
        let mut url = conn_string(&self.base, via, dbname);
        if self.tls != TlsSettings::default() {
            url.push_str(&format!(" sslmode={}", self.tls.mode.as_str()));
        }
        if let Some(root) = &self.tls.root_cert {
            url.push_str(&format!(
                " sslrootcert='{}'",
                root.replace('\\', "\\\\").replace('\'', "\\'")
            ));
        }
        url
    }

    async fn try_admin(&self) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
        let mut config = self.base.clone();
        config.connect_timeout(Duration::from_secs(10));
        let tls = self
            .tls
            .apply(&mut config)
            .expect("DATABASE_URL's sslrootcert is readable");
        let (client, connection) = config.connect(tls).await?;
        tokio::spawn(connection);
        Ok(client)
    }
}

/// `key` encrypted as a binary before migration 8 stored it with the key-encryption key `kek`
/// (the first form, directly under a subkey of `kek`), for tests of the upgrade path.
pub fn first_form_ciphertext(
    kek: &[u8; 32],
    instance: &crate::InstanceId,
    device: &crate::OtpDeviceId,
    key: &otp_algo::OtpKey,
) -> Vec<u8> {
    crate::crypto::KeyCipher::new(kek)
        .and_then(|cipher| cipher.seal_first_form(instance, device, key))
        .expect("encrypt in the first form")
        .to_vec()
}

fn small_pool(url: String) -> StoreConfig {
    StoreConfig {
        pool_size: 4,
        ..StoreConfig::new(url)
    }
}

/// A port that was free a moment ago.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("find a free port")
}

/// A libpq connection string for `dbname` with `base`'s parameters, or
/// through `via` instead of `base`'s host and port.
fn conn_string(base: &tokio_postgres::Config, via: Option<SocketAddr>, dbname: &str) -> String {
    let quote = |value: &str| format!("'{}'", value.replace('\\', "\\\\").replace('\'', "\\'"));
    let (host, port) = match via {
        Some(addr) => (addr.ip().to_string(), addr.port()),
        None => {
            let host = match base.get_hosts().first() {
                Some(Host::Tcp(host)) => host.clone(),
                Some(Host::Unix(dir)) => PathBuf::from(dir).to_string_lossy().into_owned(),
                None => "localhost".to_owned(),
            };
            (host, base.get_ports().first().copied().unwrap_or(5432))
        }
    };
    let mut parts = vec![
        format!("host={}", quote(&host)),
        format!("port={port}"),
        format!("dbname={}", quote(dbname)),
    ];
    if let Some(user) = base.get_user() {
        parts.push(format!("user={}", quote(user)));
    }
    if let Some(password) = base.get_password() {
        parts.push(format!(
            "password={}",
            quote(&String::from_utf8_lossy(password))
        ));
    }
    if let Some(options) = base.get_options() {
        parts.push(format!("options={}", quote(options)));
    }
    parts.join(" ")
}
