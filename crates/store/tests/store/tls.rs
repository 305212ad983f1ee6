//! TLS to PostgreSQL: `sslmode` and `sslrootcert` against a cluster of our own with `ssl = on`
//! and a certificate made here.

use std::path::{Path, PathBuf};
use std::time::Duration;

use otp_embedded_pg::{Cluster, ClusterOptions, EmbeddedError, find_bindir};
use otp_store::changes::{self, Change};
use otp_store::{Store, StoreConfig};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};

/// A CA, and a certificate for `localhost` it signed (PEM).
struct Pki {
    ca: String,
    cert: String,
    key: String,
}

fn make_pki() -> Pki {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "taler-otp test CA");
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let mut server = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    server
        .distinguished_name
        .push(DnType::CommonName, "localhost");
    let cert = server.signed_by(&key, &ca_cert, &ca_key).unwrap();
    Pki {
        ca: ca_cert.pem(),
        cert: cert.pem(),
        key: key.serialize_pem(),
    }
}

/// A cluster on 127.0.0.1 with `ssl = on`, stopped and removed on drop.
struct TlsCluster {
    cluster: Option<Cluster>,
    root: PathBuf,
    port: u16,
}

impl Drop for TlsCluster {
    fn drop(&mut self) {
        if let Some(cluster) = self.cluster.take() {
            let _ = cluster.stop();
            let _ = std::fs::remove_dir_all(cluster.socket_dir());
        }
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// Writes `contents` to `path` with `mode`, owned like `owner_of` (the data directory, which
/// belongs to the user PostgreSQL runs as).
fn write_owned(path: &Path, contents: &str, mode: u32, owner_of: &Path) {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    std::fs::write(path, contents).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    let owner = std::fs::metadata(owner_of).unwrap();
    std::os::unix::fs::chown(path, Some(owner.uid()), Some(owner.gid())).unwrap();
}

async fn start_tls_cluster(pki: &Pki) -> TlsCluster {
    let suffix: u64 = rand::random();
    let root = std::env::temp_dir().join(format!("taler-otp-tls-test-{suffix:x}"));
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .unwrap()
        .port();
    let options = ClusterOptions {
        data_dir: root.join("data"),
        port: Some(port),
        superuser: "postgres".to_owned(),
    };
    let cluster = tokio::task::spawn_blocking(move || Cluster::start(&options))
        .await
        .unwrap()
        .unwrap();
    let data_dir = cluster.data_dir().to_owned();
    let guard = TlsCluster {
        cluster: Some(cluster),
        root,
        port,
    };
    write_owned(&data_dir.join("server.crt"), &pki.cert, 0o644, &data_dir);
    write_owned(&data_dir.join("server.key"), &pki.key, 0o600, &data_dir);
    // Over the Unix socket, which never uses TLS.
    let url = guard.cluster.as_ref().unwrap().url("taler");
    let admin = Store::connect(&StoreConfig::new(url)).unwrap();
    let client = admin.pool().get().await.unwrap();
    client
        .batch_execute("ALTER SYSTEM SET ssl = on")
        .await
        .unwrap();
    client
        .batch_execute("SELECT pg_reload_conf()")
        .await
        .unwrap();
    drop(client);
    admin.pool().close();
    // The reload is asynchronous: wait until new sessions have TLS.
    for _ in 0..100 {
        if ssl_in_use(&guard.url("require", None)).await == Some(true) {
            return guard;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the test cluster did not turn TLS on");
}

impl TlsCluster {
    /// A key=value connection string to `localhost`.
    fn url(&self, sslmode: &str, root: Option<&Path>) -> String {
        self.url_to("localhost", sslmode, root)
    }

    fn url_to(&self, host: &str, sslmode: &str, root: Option<&Path>) -> String {
        let mut url = format!(
            "host={host} port={} user=postgres dbname=taler connect_timeout=5 sslmode={sslmode}",
            self.port
        );
        if let Some(root) = root {
            url.push_str(&format!(" sslrootcert='{}'", root.display()));
        }
        url
    }
}

/// Whether a session opened with `url` uses TLS (`pg_stat_ssl`); `None` if none can be opened.
async fn ssl_in_use(url: &str) -> Option<bool> {
    let store = Store::connect(&StoreConfig::new(url)).ok()?;
    let client = store.pool().get().await.ok()?;
    let row = client
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .ok()?;
    let ssl = row.get("ssl");
    drop(client);
    store.pool().close();
    Some(ssl)
}

#[tokio::test]
async fn sslmode_and_sslrootcert_are_honoured_by_every_connection() {
    if matches!(find_bindir(), Err(EmbeddedError::NoBinaries)) {
        eprintln!("note: no PostgreSQL server programs here; TLS is not tested");
        return;
    }
    let pki = make_pki();
    let other = make_pki();
    let cluster = start_tls_cluster(&pki).await;
    let ca = cluster.root.join("ca.pem");
    let wrong_ca = cluster.root.join("other-ca.pem");
    std::fs::write(&ca, &pki.ca).unwrap();
    std::fs::write(&wrong_ca, &other.ca).unwrap();

    // verify-full: the chain and the name.
    assert_eq!(
        ssl_in_use(&cluster.url("verify-full", Some(&ca))).await,
        Some(true)
    );
    assert_eq!(
        ssl_in_use(&cluster.url("verify-full", Some(&wrong_ca))).await,
        None
    );
    assert_eq!(
        ssl_in_use(&cluster.url_to("127.0.0.1", "verify-full", Some(&ca))).await,
        None,
        "the certificate does not name 127.0.0.1"
    );
    // verify-ca: the chain only.
    assert_eq!(
        ssl_in_use(&cluster.url_to("127.0.0.1", "verify-ca", Some(&ca))).await,
        Some(true)
    );
    assert_eq!(
        ssl_in_use(&cluster.url("verify-ca", Some(&wrong_ca))).await,
        None
    );
    // require: encrypted without a check, unless a root is given (as libpq).
    assert_eq!(ssl_in_use(&cluster.url("require", None)).await, Some(true));
    assert_eq!(
        ssl_in_use(&cluster.url("require", Some(&wrong_ca))).await,
        None
    );
    // prefer (the default) takes TLS when offered; disable never does.
    assert_eq!(ssl_in_use(&cluster.url("prefer", None)).await, Some(true));
    assert_eq!(ssl_in_use(&cluster.url("disable", None)).await, Some(false));

    // The URL form, the migrations and the change listener.
    let url = format!(
        "postgres://postgres@localhost:{}/taler?sslmode=verify-full&sslrootcert={}",
        cluster.port,
        ca.display().to_string().replace('/', "%2F")
    );
    let store = Store::connect(&StoreConfig::new(url.clone())).unwrap();
    otp_store::migrate(&store).await.unwrap();
    let mut listener = changes::subscribe(&StoreConfig::new(url)).await.unwrap();
    assert_eq!(listener.recv().await, Some(Change::Resync));
    store.pool().close();
    let wrong = format!(
        "postgres://postgres@localhost:{}/taler?sslmode=verify-full&sslrootcert={}",
        cluster.port,
        wrong_ca.display()
    );
    assert!(
        changes::subscribe(&StoreConfig::new(wrong.clone()))
            .await
            .is_err()
    );
    assert!(
        Store::connect(&StoreConfig::new(wrong))
            .unwrap()
            .ping()
            .await
            .is_err()
    );
}
