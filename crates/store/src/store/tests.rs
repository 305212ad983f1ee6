//! `StoreConfig`: what reaches the driver, and what `Debug` hides.

use super::*;
use tokio_postgres::config::{Host, TargetSessionAttrs};

#[test]
fn debug_hides_the_password_and_the_kek() {
    let mut cfg = StoreConfig::new("postgres://user:hunter2@db.example/taler");
    cfg.key_encryption_key = Some(Zeroizing::new([0x42; 32]));
    let shown = format!("{cfg:?}");
    assert!(!shown.contains("hunter2"), "{shown}");
    assert!(!shown.contains("66, 66"), "{shown}");
    assert!(shown.contains("db.example"), "{shown}");
}

#[test]
fn timeouts_are_session_options_after_the_url_s_own() {
    let mut cfg = StoreConfig::new("postgres://db.example/taler?options=-c%20search_path%3Dx");
    assert_eq!(
        cfg.pg_config().unwrap().0.get_options(),
        Some("-c search_path=x")
    );
    cfg.statement_timeout = Some(Duration::from_millis(5000));
    cfg.lock_timeout = Some(Duration::from_micros(10));
    assert_eq!(
        cfg.pg_config().unwrap().0.get_options(),
        Some("-c search_path=x -c statement_timeout=5000 -c lock_timeout=1")
    );
    let mut cfg = StoreConfig::new("host=/tmp dbname=x");
    cfg.lock_timeout = Some(Duration::from_secs(2));
    assert_eq!(
        cfg.pg_config().unwrap().0.get_options(),
        Some("-c lock_timeout=2000")
    );
}

#[test]
fn connect_fails_only_for_a_malformed_url() {
    assert!(Store::connect(&StoreConfig::new("host=/nonexistent/dir dbname=x")).is_ok());
    assert!(Store::connect(&StoreConfig::new("postgres://127.0.0.1:1/x")).is_ok());
    assert!(Store::connect(&StoreConfig::new("host='unterminated")).is_err());
}

/// The hosts and ports the driver will try, in order.
fn hosts_and_ports(url: &str) -> (Vec<String>, Vec<u16>, TargetSessionAttrs) {
    let (pg, _) = StoreConfig::new(url).pg_config().unwrap();
    let hosts = pg
        .get_hosts()
        .iter()
        .map(|host| match host {
            Host::Tcp(name) => name.clone(),
            Host::Unix(path) => path.display().to_string(),
        })
        .collect();
    (
        hosts,
        pg.get_ports().to_vec(),
        pg.get_target_session_attrs(),
    )
}

#[test]
fn several_hosts_and_target_session_attrs_reach_the_driver_in_both_forms() {
    let expected = (
        vec!["db-a".to_owned(), "db-b".to_owned()],
        vec![5432, 5433],
        TargetSessionAttrs::ReadWrite,
    );
    for url in [
        "host=db-a,db-b port=5432,5433 dbname=taler target_session_attrs=read-write",
        "host=db-a,db-b port=5432,5433 sslmode=require dbname=taler target_session_attrs=read-write",
        "postgres://taler@db-a:5432,db-b:5433/taler?target_session_attrs=read-write",
        "postgresql://taler:pw@db-a:5432,db-b:5433/taler?sslmode=require&target_session_attrs=read-write&application_name=x",
    ] {
        assert_eq!(hosts_and_ports(url), expected, "{url}");
    }
    // Without the attribute any server will do, as with libpq.
    let (_, _, attrs) = hosts_and_ports("host=a,b port=5432");
    assert_eq!(attrs, TargetSessionAttrs::Any);
}

#[test]
fn debug_shows_every_host_and_the_session_attributes() {
    let shown = format!(
        "{:?}",
        StoreConfig::new(
            "postgres://u:hunter2@db-a:5432,db-b:5433/taler?target_session_attrs=read-write"
        )
    );
    assert!(shown.contains("db-a") && shown.contains("db-b"), "{shown}");
    assert!(shown.contains("ReadWrite"), "{shown}");
    assert!(!shown.contains("hunter2"), "{shown}");
}
