//! `Unavailable` within a bounded time, and recovery.

use std::time::{Duration, Instant};

use otp_store::testing::{TcpProxy, TestDb};
use otp_store::{Store, StoreConfig, StoreError, instances};

use crate::instance_id;

const BOUND: Duration = Duration::from_secs(5);

#[tokio::test]
async fn an_unreachable_database_is_unavailable_quickly_and_usable_again_once_back() {
    let db = TestDb::new().await;
    let proxy = TcpProxy::start(db.upstream_addr()).await;
    let mut config = db.config();
    config.url = db.url_via(proxy.addr());
    let store = Store::connect(&config).unwrap();
    instances::create(&store, &instance_id("shop"), "Shop")
        .await
        .unwrap();

    proxy.set_down(true);
    let started = Instant::now();
    let during = instances::get(&store, &instance_id("shop")).await;
    let elapsed = started.elapsed();
    let ping = store.ping().await;
    proxy.set_down(false);
    let after = instances::get(&store, &instance_id("shop")).await;

    assert!(
        matches!(&during, Err(err) if err.is_unavailable()),
        "{during:?}"
    );
    assert!(elapsed < BOUND, "took {elapsed:?}");
    assert!(
        matches!(&ping, Err(err) if err.is_unavailable()),
        "{ping:?}"
    );
    assert_eq!(after.unwrap().name, "Shop");
}

#[tokio::test]
async fn a_closed_port_is_unavailable_quickly() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let store = Store::connect(&StoreConfig::new(format!(
        "host=127.0.0.1 port={port} user=x dbname=x"
    )))
    .unwrap();

    let started = Instant::now();
    let outcome = store.ping().await;

    assert!(
        matches!(&outcome, Err(err) if err.is_unavailable()),
        "{outcome:?}"
    );
    assert!(started.elapsed() < BOUND, "took {:?}", started.elapsed());
}

#[tokio::test]
async fn a_server_that_never_answers_is_unavailable_within_the_timeouts() {
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = silent.local_addr().unwrap();
    let _accepted = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = silent.accept().await {
            held.push(stream);
        }
    });
    let mut config = StoreConfig::new(format!(
        "host=127.0.0.1 port={} user=x dbname=x",
        addr.port()
    ));
    config.wait_timeout = Duration::from_secs(1);
    config.connect_timeout = Duration::from_secs(1);
    let store = Store::connect(&config).unwrap();

    let started = Instant::now();
    let outcomes = futures_util::future::join_all((0..4).map(|_| store.ping())).await;

    for outcome in &outcomes {
        assert!(
            matches!(outcome, Err(err) if err.is_unavailable()),
            "{outcome:?}"
        );
    }
    assert!(started.elapsed() < BOUND, "took {:?}", started.elapsed());
}

#[test]
fn unavailable_errors_say_so_without_driver_text() {
    let err = StoreError::Unavailable(Box::new(std::io::Error::other("boom")));
    assert_eq!(err.to_string(), "database unavailable");
}
