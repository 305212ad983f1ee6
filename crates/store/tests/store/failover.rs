//! Several hosts (`host=a,b`, `target_session_attrs=read-write`): the pool and the change
//! listener find the host that serves, a hung host does not hold them, and connections to a
//! server that turned read-only are dropped.

use std::time::{Duration, Instant};

use otp_store::changes::{self, Change};
use otp_store::testing::{TcpProxy, TestDb};
use otp_store::{Store, StoreConfig, instances};
use tokio::sync::mpsc::Receiver;

use crate::instance_id;

async fn next(changes: &mut Receiver<Change>) -> Change {
    tokio::time::timeout(Duration::from_secs(10), changes.recv())
        .await
        .expect("a change within 10 s")
        .expect("the subscription is open")
}

/// `db`'s connection string with the hosts `127.0.0.1` on `first`, then on `second`.
fn via_ports(db: &TestDb, first: u16, second: u16) -> String {
    let url = db.url_via(std::net::SocketAddr::from(([127, 0, 0, 1], first)));
    let url = url
        .replace("host='127.0.0.1'", "host='127.0.0.1,127.0.0.1'")
        .replace(&format!("port={first}"), &format!("port={first},{second}"));
    format!("{url} target_session_attrs=read-write")
}

/// Creates the instance `id`, retrying while the store reports the database unavailable (the
/// first attempt after a loss may take a pooled connection that died with it).
async fn create_eventually(store: &Store, id: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match instances::create(store, &instance_id(id), "Shop").await {
            Ok(_) => return,
            Err(err) if err.is_unavailable() && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(err) => panic!("creating {id}: {err:?}"),
        }
    }
}

#[tokio::test]
async fn the_pool_and_the_listener_move_to_the_next_host() {
    let db = TestDb::new().await;
    let first = TcpProxy::start(db.upstream_addr()).await;
    let second = TcpProxy::start(db.upstream_addr()).await;
    second.set_down(true);
    let mut config = db.config();
    config.url = via_ports(&db, first.addr().port(), second.addr().port());
    let store = Store::connect(&config).unwrap();
    let mut changes = changes::subscribe(&config).await.unwrap();
    assert_eq!(next(&mut changes).await, Change::Resync);
    create_eventually(&store, "before").await;
    assert!(matches!(next(&mut changes).await, Change::Instance { .. }));

    // The first host goes away for good, the second comes up: a fail-over.
    first.set_down(true);
    second.set_down(false);
    assert_eq!(next(&mut changes).await, Change::Resync);
    assert_eq!(next(&mut changes).await, Change::Resync, "reconnected");
    create_eventually(&store, "after").await;

    assert_eq!(
        next(&mut changes).await,
        Change::Instance {
            instance: instance_id("after")
        }
    );
}

#[tokio::test]
async fn a_hung_first_host_costs_one_connect_timeout() {
    let db = TestDb::new().await;
    // Accepts connections and never answers, like a frozen server.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_port = silent.local_addr().unwrap().port();
    let _held = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = silent.accept().await {
            held.push(stream);
        }
    });
    let proxy = TcpProxy::start(db.upstream_addr()).await;
    let mut config: StoreConfig = db.config();
    config.url = via_ports(&db, silent_port, proxy.addr().port());
    config.connect_timeout = Duration::from_millis(700);
    let store = Store::connect(&config).unwrap();

    let started = Instant::now();
    store.ping().await.unwrap();
    let mut changes = changes::subscribe(&config).await.unwrap();
    assert_eq!(next(&mut changes).await, Change::Resync);

    assert!(
        started.elapsed() < Duration::from_secs(4),
        "took {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_connection_whose_server_turned_read_only_is_unavailable_then_replaced() {
    let db = TestDb::new().await;
    let mut config = db.config();
    config.pool_size = 1;
    let store = Store::connect(&config).unwrap();
    // The one pooled connection's server now refuses writes, as a demoted or fenced primary
    // would (`default_transaction_read_only`), while the connection lives on.
    store
        .pool()
        .get()
        .await
        .unwrap()
        .batch_execute("SET SESSION default_transaction_read_only = on")
        .await
        .unwrap();

    let refused = instances::create(&store, &instance_id("shop"), "Shop").await;
    let retried = instances::create(&store, &instance_id("shop"), "Shop").await;

    assert!(
        matches!(&refused, Err(err) if err.is_unavailable()),
        "{refused:?}"
    );
    assert!(retried.is_ok(), "the connection was reused: {retried:?}");
}
