//! A cluster from the machine's binaries, on a Unix socket only.

use otp_embedded_pg::{Cluster, ClusterOptions, EmbeddedError, find_bindir};
use otp_store::{Store, StoreConfig, instances};

use crate::instance_id;

#[tokio::test]
async fn a_cluster_starts_on_a_socket_with_a_long_path_is_reused_and_stops() {
    if matches!(find_bindir(), Err(EmbeddedError::NoBinaries))
        && std::env::var_os("DATABASE_URL").is_some()
    {
        eprintln!("note: no PostgreSQL server programs here; the embedded cluster is not tested");
        return;
    }
    let suffix: u64 = rand::random();
    let root = std::env::temp_dir().join(format!("taler-otp-embedded-test-{suffix:x}"));
    // Long enough that the socket cannot live in the data directory.
    let data_dir = root.join("d".repeat(100));
    let options = ClusterOptions {
        data_dir: data_dir.clone(),
        ..ClusterOptions::new("")
    };
    let start = move || Cluster::start(&options);

    let cluster = tokio::task::spawn_blocking(start.clone())
        .await
        .unwrap()
        .unwrap();
    let again = tokio::task::spawn_blocking(start).await.unwrap().unwrap();
    let socket_dir = cluster.socket_dir().to_owned();
    let first_started = cluster.started_here();
    let store = Store::connect(&StoreConfig::new(cluster.url("taler"))).unwrap();
    otp_store::migrate(&store).await.unwrap();
    instances::create(&store, &instance_id("shop"), "Shop")
        .await
        .unwrap();
    // The embedded server's own settings (otp_embedded_pg's SERVER_SETTINGS).
    let client = store.pool().get().await.unwrap();
    let wal_init_zero: String = client
        .query_one("SHOW wal_init_zero", &[])
        .await
        .unwrap()
        .get(0);
    let max_wal_size: String = client
        .query_one("SHOW max_wal_size", &[])
        .await
        .unwrap()
        .get(0);
    drop(client);
    store.pool().close();
    tokio::task::spawn_blocking(move || cluster.stop())
        .await
        .unwrap()
        .unwrap();
    let after_stop = Store::connect(&StoreConfig::new(again.url("taler")))
        .unwrap()
        .ping()
        .await;
    let _ = std::fs::remove_dir_all(&root);
    let _ = std::fs::remove_dir_all(&socket_dir);

    assert_eq!(wal_init_zero, "off");
    assert_eq!(max_wal_size, "4GB");
    assert!(first_started);
    assert!(!again.started_here());
    assert!(!socket_dir.starts_with(&root), "{socket_dir:?}");
    assert_eq!(again.tcp_port(), None);
    assert!(after_stop.is_err_and(|err| err.is_unavailable()));
}
