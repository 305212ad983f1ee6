//! The audit trail: every audited write appends one row with its actor, in an intact hash
//! chain that Rust recomputes; the log refuses changes; tampering is found and named.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use otp_algo::Algorithm;
use otp_store::audit::{self, AuditEntry, Break, BrokenLink, Event};
use otp_store::observe::StoreObserver;
use otp_store::otp_devices::{self, OtpDevicePatch};
use otp_store::testing::TestDb;
use otp_store::verifications::{self, Attempt, Candidates, Outcome, VerifyPolicy};
use otp_store::{InstanceId, Store, tokens};

use crate::{device_id, given_instance, given_shop, key, new_device};

async fn trail(store: &Store, instance: &InstanceId) -> Vec<AuditEntry> {
    audit::list(store, instance, 0, 1000).await.unwrap()
}

fn events(entries: &[AuditEntry]) -> Vec<&str> {
    entries.iter().map(|entry| entry.event.as_str()).collect()
}

fn details(entry: &AuditEntry) -> serde_json::Value {
    serde_json::from_str(&entry.details).unwrap()
}

async fn execute(store: &Store, sql: &str) -> Result<u64, tokio_postgres::Error> {
    let client = store.pool().get().await.unwrap();
    client.execute(sql, &[]).await
}

#[tokio::test]
async fn device_and_token_writes_append_one_row_each_with_their_actor() {
    let (_db, store, shop) = given_shop().await;
    let device = new_device("pos");
    // As the operator (no request scope).
    otp_devices::create(&store, &shop, &device).await.unwrap();
    // The identical repeat changes nothing and is not audited.
    otp_devices::create(&store, &shop, &device).await.unwrap();
    // As a request of token 42 from 192.0.2.9.
    let client = "192.0.2.9".parse().ok();
    let (token, secret) = audit::acting(client, async {
        audit::record_token(Some(42));
        let patch = OtpDevicePatch {
            description: device.description.clone(),
            key: Some(key(2)),
            algorithm: None,
            counter: Some(5),
        };
        otp_devices::update(&store, &shop, &device.id, &patch)
            .await
            .unwrap();
        let created = tokens::create(&store, &shop, "readonly", None, "t")
            .await
            .unwrap();
        otp_devices::delete(&store, &shop, &device.id)
            .await
            .unwrap();
        created
    })
    .await;
    tokens::revoke_by_secret(&store, &shop, secret.expose())
        .await
        .unwrap();

    let entries = trail(&store, &shop).await;
    assert_eq!(
        events(&entries),
        [
            "device_created",
            "device_changed",
            "token_created",
            "device_deleted",
            "token_revoked"
        ]
    );
    // The device's events form its chain, the tokens' the instance's own.
    let chains: Vec<(&str, i64)> = entries.iter().map(|e| (e.chain.as_str(), e.seq)).collect();
    assert_eq!(
        chains,
        [("pos", 1), ("pos", 2), ("", 1), ("pos", 3), ("", 2)]
    );
    assert!(entries.windows(2).all(|w| w[0].serial < w[1].serial));
    let [created, changed, token_created, deleted, revoked] = &entries[..] else {
        panic!("{entries:?}");
    };
    assert_eq!(created.device.as_deref(), Some("pos"));
    assert_eq!(
        (created.token_serial, created.client.as_deref()),
        (None, Some("local"))
    );
    assert_eq!(
        details(created),
        serde_json::json!({"otp_algorithm": 3, "otp_ctr": 0})
    );
    for entry in [changed, token_created, deleted] {
        assert_eq!(entry.token_serial, Some(42), "{entry:?}");
        assert_eq!(entry.client.as_deref(), Some("192.0.2.9"), "{entry:?}");
    }
    assert_eq!(
        details(changed),
        serde_json::json!({"fields": ["otp_key", "otp_ctr"]}),
        "the description did not change"
    );
    assert_eq!(details(token_created)["serial"], token.serial);
    assert_eq!(details(token_created)["scope"], "readonly");
    assert_eq!(
        details(revoked),
        serde_json::json!({"serial": token.serial})
    );
    assert_eq!(deleted.device.as_deref(), Some("pos"));
    // No key and no secret anywhere in the trail.
    for entry in &entries {
        assert!(!entry.details.contains("otp_key\":"), "{entry:?}");
        assert!(!entry.details.contains(secret.expose()), "{entry:?}");
    }
    let report = audit::verify_chain(&store, &shop).await.unwrap();
    assert!(report.is_intact(), "{report:?}");
    assert_eq!(report.rows, 5);
    let heads: Vec<(&str, i64)> = report
        .heads
        .iter()
        .map(|h| (h.chain.as_str(), h.seq))
        .collect();
    assert_eq!(heads, [("", 2), ("pos", 3)]);
    assert_eq!(report.heads[1].hash, entries[3].hash);
}

#[tokio::test]
async fn instances_have_chains_of_their_own_and_concurrent_appends_never_fork() {
    let db = TestDb::new().await;
    let store = db.store();
    let alpha = given_instance(&store, "alpha").await;
    let beta = given_instance(&store, "beta").await;
    let appends = (0..24).map(|n| {
        let store = store.clone();
        let instance = if n % 3 == 0 {
            beta.clone()
        } else {
            alpha.clone()
        };
        async move {
            audit::append(&store, &instance, Event::LoginFailure, None, "{}")
                .await
                .unwrap()
        }
    });
    futures_util::future::join_all(appends).await;
    for (instance, rows) in [(&alpha, 16), (&beta, 8)] {
        let entries = trail(&store, instance).await;
        let seqs: Vec<i64> = entries.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, (1..=rows).collect::<Vec<i64>>());
        let report = audit::verify_chain(&store, instance).await.unwrap();
        assert!(report.is_intact(), "{report:?}");
    }
    // Paging: since (a serial) and limit.
    let all = trail(&store, &alpha).await;
    let page = audit::list(&store, &alpha, all[9].serial, 3).await.unwrap();
    assert_eq!(page.iter().map(|e| e.seq).collect::<Vec<_>>(), [11, 12, 13]);
    // An instance without a trail has intact, empty chains.
    let none = audit::verify_chain(&store, &crate::instance_id("none"))
        .await
        .unwrap();
    assert!(none.is_intact() && none.rows == 0 && none.heads.is_empty());
}

#[tokio::test]
async fn the_log_refuses_updates_deletes_and_truncation_and_outlives_its_instance() {
    let (_db, store, shop) = given_shop().await;
    otp_devices::create(&store, &shop, &new_device("pos"))
        .await
        .unwrap();
    for sql in [
        "UPDATE audit_log SET details = '{}'",
        "DELETE FROM audit_log",
        "TRUNCATE audit_log",
        "DELETE FROM audit_heads",
        "TRUNCATE audit_heads",
        "UPDATE audit_heads SET seq = seq + 1",
    ] {
        let refused = execute(&store, sql).await;
        assert!(refused.is_err(), "{sql} was allowed");
    }
    otp_store::instances::delete(&store, &shop).await.unwrap();
    assert_eq!(events(&trail(&store, &shop).await), ["device_created"]);
    // An instance created again under the same id continues the chain.
    let shop = given_instance(&store, "shop").await;
    otp_devices::create(&store, &shop, &new_device("pos"))
        .await
        .unwrap();
    let report = audit::verify_chain(&store, &shop).await.unwrap();
    assert!(report.is_intact() && report.rows == 2, "{report:?}");
}

/// Appends to chain `$1` of `shop`, by hand, a row after its last one (hashed as `audit_append`
/// hashes it), without moving the head.
const APPEND: &str = "
    INSERT INTO audit_log (instance_id, chain, seq, time, event, device_id, token_serial,
                           client, details, prev_hash, hash)
    SELECT l.instance_id, l.chain, l.seq + 1, now(), 'device_changed', l.chain, NULL, 'local',
           '{}', l.hash,
           audit_hash(l.instance_id, l.seq + 1, now(), 'device_changed', l.chain, NULL, 'local',
                      '{}', l.hash)
      FROM audit_log l
     WHERE l.instance_id = 'shop' AND l.chain = $1
     ORDER BY l.seq DESC
     LIMIT 1";

/// Moves the heads of chains `$1` of `shop` to their chains' last rows, in one statement.
const MOVE_TO_LAST: &str = "
    UPDATE audit_heads h
       SET seq = l.seq, hash = l.hash
      FROM audit_log l
     WHERE h.instance_id = 'shop' AND h.chain = ANY($1)
       AND l.instance_id = h.instance_id AND l.chain = h.chain
       AND l.seq = (SELECT max(m.seq) FROM audit_log m
                     WHERE m.instance_id = h.instance_id AND m.chain = h.chain)";

/// Moves the head of chain `$1` of `shop` one row forward.
const STEP: &str = "
    UPDATE audit_heads h
       SET seq = h.seq + 1,
           hash = (SELECT l.hash FROM audit_log l
                    WHERE l.instance_id = h.instance_id AND l.chain = h.chain
                      AND l.seq = h.seq + 1)
     WHERE h.instance_id = 'shop' AND h.chain = $1";

#[tokio::test]
async fn a_statement_moves_heads_only_one_row_forward_each_or_none() {
    let (_db, store, shop) = given_shop().await;
    for id in ["pos", "till"] {
        otp_devices::create(&store, &shop, &new_device(id))
            .await
            .unwrap();
    }
    let client = store.pool().get().await.unwrap();
    let refused = |result: Result<u64, tokio_postgres::Error>, what: &str| {
        let err = result.expect_err(what);
        assert_eq!(
            err.code(),
            Some(&tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE),
            "{what}: {err}"
        );
    };
    let chains = |names: &[&str]| names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>();
    let heads = || async {
        let rows = client
            .query(
                "SELECT chain, seq FROM audit_heads WHERE instance_id = 'shop' AND chain <> ''
                  ORDER BY chain",
                &[],
            )
            .await
            .unwrap();
        rows.iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect::<Vec<(String, i64)>>()
    };
    // Each device's creation is its chain's first row.
    assert_eq!(heads().await, [("pos".into(), 1), ("till".into(), 1)]);

    // Both chains one row ahead of their heads: one statement moves both.
    for chain in ["pos", "till"] {
        client.execute(APPEND, &[&chain]).await.unwrap();
    }
    let moved = client
        .execute(MOVE_TO_LAST, &[&chains(&["pos", "till"])])
        .await
        .unwrap();
    assert_eq!(moved, 2);
    assert_eq!(heads().await, [("pos".into(), 2), ("till".into(), 2)]);

    // pos two rows ahead, till one: the statement moving both is refused as a whole.
    client.execute(APPEND, &[&"pos"]).await.unwrap();
    client.execute(APPEND, &[&"pos"]).await.unwrap();
    client.execute(APPEND, &[&"till"]).await.unwrap();
    refused(
        client
            .execute(MOVE_TO_LAST, &[&chains(&["pos", "till"])])
            .await,
        "a head moved two rows",
    );
    assert_eq!(heads().await, [("pos".into(), 2), ("till".into(), 2)]);
    client
        .execute(MOVE_TO_LAST, &[&chains(&["till"])])
        .await
        .unwrap();

    // Back a row, onto another chain, or to a hash that is not its next row's: refused.
    for (sql, what) in [
        (
            "UPDATE audit_heads SET seq = seq - 1 WHERE instance_id = 'shop' AND chain = 'till'",
            "a head moved back",
        ),
        (
            "UPDATE audit_heads SET chain = 'other' WHERE instance_id = 'shop' AND chain = 'till'",
            "a head moved to another chain",
        ),
        (
            "UPDATE audit_heads SET seq = seq + 1 WHERE instance_id = 'shop' AND chain = 'pos'",
            "a head moved with its old hash",
        ),
    ] {
        refused(client.execute(sql, &[]).await, what);
    }
    assert_eq!(heads().await, [("pos".into(), 2), ("till".into(), 3)]);

    // One row at a time, pos catches up; every chain is intact.
    for _ in 0..2 {
        assert_eq!(client.execute(STEP, &[&"pos"]).await.unwrap(), 1);
    }
    assert_eq!(heads().await, [("pos".into(), 4), ("till".into(), 3)]);
    let report = audit::verify_chain(&store, &shop).await.unwrap();
    assert!(report.is_intact(), "{report:?}");
}

#[tokio::test]
async fn a_batch_append_continues_each_chain_in_the_order_given_and_starts_new_ones() {
    let (_db, store, shop) = given_shop().await;
    otp_devices::create(&store, &shop, &new_device("pos"))
        .await
        .unwrap();
    let other = given_instance(&store, "other").await;
    let client = store.pool().get().await.unwrap();
    let instances = ["shop", "other", "shop", "shop", "other"];
    let devices = [None, Some("new"), Some("pos"), None, Some("new")];
    let details: Vec<String> = (0..5).map(|n| format!("{{\"n\": {n}}}")).collect();
    let appended: i32 = client
        .query_one(
            "SELECT audit_append_batch($1, 'device_changed', $2, $3, $4, $5)",
            &[
                &instances.to_vec(),
                &devices.to_vec(),
                &vec![Some(7i64), None, None, Some(7), None],
                &vec!["192.0.2.3"; 5],
                &details,
            ],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(appended, 5);

    // Each row at the end of its chain, a chain's rows in the order given.
    let rows = client
        .query(
            "SELECT instance_id, chain, seq, details FROM audit_log
              WHERE event = 'device_changed' ORDER BY instance_id, chain, seq",
            &[],
        )
        .await
        .unwrap();
    let rows: Vec<(String, String, i64, String)> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect();
    let row = |instance: &str, chain: &str, seq: i64, n: usize| {
        (
            instance.to_owned(),
            chain.to_owned(),
            seq,
            details[n].clone(),
        )
    };
    assert_eq!(
        rows,
        [
            row("other", "new", 1, 1),
            row("other", "new", 2, 4),
            row("shop", "", 1, 0),
            row("shop", "", 2, 3),
            row("shop", "pos", 2, 2),
        ]
    );
    for instance in [&shop, &other] {
        let report = audit::verify_chain(&store, instance).await.unwrap();
        assert!(report.is_intact(), "{report:?}");
    }
    // Each with its own actor.
    let actors: Vec<(String, Option<i64>)> = trail(&store, &shop)
        .await
        .into_iter()
        .filter(|entry| entry.event == "device_changed")
        .map(|entry| (entry.chain, entry.token_serial))
        .collect();
    assert_eq!(
        actors,
        [
            ("".into(), Some(7)),
            ("".into(), Some(7)),
            ("pos".into(), None)
        ]
    );
}

/// Runs `sql` with the log's protecting triggers disabled, as an owner could.
async fn tamper(store: &Store, sql: &str) {
    let mut client = store.pool().get().await.unwrap();
    let transaction = client.transaction().await.unwrap();
    transaction
        .batch_execute(&format!(
            "ALTER TABLE audit_log DISABLE TRIGGER USER;
             ALTER TABLE audit_heads DISABLE TRIGGER USER;
             {sql};
             ALTER TABLE audit_log ENABLE TRIGGER USER;
             ALTER TABLE audit_heads ENABLE TRIGGER USER;"
        ))
        .await
        .unwrap();
    transaction.commit().await.unwrap();
}

async fn five_rows(db: &TestDb) -> (Store, InstanceId) {
    let store = db.store();
    let shop = given_instance(&store, "shop").await;
    for _ in 0..5 {
        audit::append(
            &store,
            &shop,
            Event::LoginSuccess,
            None,
            "{\"method\":\"basic\"}",
        )
        .await
        .unwrap();
    }
    assert!(
        audit::verify_chain(&store, &shop)
            .await
            .unwrap()
            .is_intact()
    );
    (store, shop)
}

async fn first_broken(store: &Store, shop: &InstanceId) -> Option<BrokenLink> {
    audit::verify_chain(store, shop).await.unwrap().first_broken
}

#[tokio::test]
async fn devices_have_chains_of_their_own_and_a_break_names_its_chain() {
    let (_db, store, shop) = given_shop().await;
    for id in ["a", "b"] {
        otp_devices::create(&store, &shop, &new_device(id))
            .await
            .unwrap();
    }
    // Confirmations of several devices at once: one chain each.
    let taken = (0..16).map(|n| {
        let store = store.clone();
        let shop = shop.clone();
        let id = device_id(if n % 2 == 0 { "a" } else { "b" });
        async move {
            otp_devices::advance_counter(&store, &shop, &id, false)
                .await
                .unwrap()
        }
    });
    futures_util::future::join_all(taken).await;
    let report = audit::verify_chain(&store, &shop).await.unwrap();
    assert!(report.is_intact(), "{report:?}");
    assert_eq!(report.rows, 18);
    let heads: Vec<(&str, i64)> = report
        .heads
        .iter()
        .map(|h| (h.chain.as_str(), h.seq))
        .collect();
    assert_eq!(heads, [("a", 9), ("b", 9)]);
    let mut counters: Vec<i64> = trail(&store, &shop)
        .await
        .iter()
        .filter(|e| e.chain == "a" && e.event == "confirmation_issued")
        .map(|e| details(e)["otp_ctr"].as_i64().unwrap())
        .collect();
    counters.sort();
    assert_eq!(counters, (0..8).collect::<Vec<i64>>());
    tamper(
        &store,
        "DELETE FROM audit_log WHERE chain = 'b' AND seq = 9",
    )
    .await;
    assert_eq!(
        first_broken(&store, &shop).await,
        Some(BrokenLink {
            chain: "b".to_owned(),
            seq: 9,
            reason: Break::Head
        })
    );
}

#[tokio::test]
async fn an_altered_row_is_named() {
    let db = TestDb::new().await;
    let (store, shop) = five_rows(&db).await;
    tamper(
        &store,
        "UPDATE audit_log SET client = '203.0.113.1' WHERE seq = 3",
    )
    .await;
    assert_eq!(
        first_broken(&store, &shop).await,
        Some(BrokenLink {
            chain: String::new(),
            seq: 3,
            reason: Break::Hash
        })
    );
}

#[tokio::test]
async fn an_altered_row_with_a_recomputed_hash_breaks_the_next_link() {
    let db = TestDb::new().await;
    let (store, shop) = five_rows(&db).await;
    tamper(
        &store,
        "UPDATE audit_log
            SET event = 'login_failure',
                hash = audit_hash(instance_id, seq, time, 'login_failure', device_id,
                                  token_serial, client, details, prev_hash)
          WHERE seq = 2",
    )
    .await;
    assert_eq!(
        first_broken(&store, &shop).await,
        Some(BrokenLink {
            chain: String::new(),
            seq: 3,
            reason: Break::Link
        })
    );
}

#[tokio::test]
async fn a_deleted_row_is_named_by_the_row_after_it() {
    let db = TestDb::new().await;
    let (store, shop) = five_rows(&db).await;
    tamper(&store, "DELETE FROM audit_log WHERE seq = 2").await;
    assert_eq!(
        first_broken(&store, &shop).await,
        Some(BrokenLink {
            chain: String::new(),
            seq: 3,
            reason: Break::Missing { from: 2 }
        })
    );
}

#[tokio::test]
async fn a_deleted_last_row_is_found_by_the_head() {
    let db = TestDb::new().await;
    let (store, shop) = five_rows(&db).await;
    tamper(&store, "DELETE FROM audit_log WHERE seq = 5").await;
    assert_eq!(
        first_broken(&store, &shop).await,
        Some(BrokenLink {
            chain: String::new(),
            seq: 5,
            reason: Break::Head
        })
    );
}

/// Counts what the store reports.
#[derive(Default)]
struct Seen {
    checkouts: AtomicU64,
    mismatches: AtomicU64,
    locks: AtomicU64,
}

impl StoreObserver for Seen {
    fn checkout(&self, waited: Duration, obtained: bool) {
        assert!(obtained && waited < Duration::from_secs(5));
        self.checkouts.fetch_add(1, Ordering::Relaxed);
    }

    fn verification(&self, outcome: &str, locked: bool) {
        if outcome == "mismatch" {
            self.mismatches.fetch_add(1, Ordering::Relaxed);
        }
        if locked {
            self.locks.fetch_add(1, Ordering::Relaxed);
        }
    }
}

#[tokio::test]
async fn verifications_are_audited_and_the_locking_mismatch_is_reported() {
    let db = TestDb::new().await;
    let seen = Arc::new(Seen::default());
    let store = db.store().with_observer(seen.clone());
    let shop = given_instance(&store, "shop").await;
    let mut device = new_device("pos");
    device.algorithm = Algorithm::TotpWithoutPrice;
    otp_devices::create(&store, &shop, &device).await.unwrap();
    let policy = VerifyPolicy {
        max_failures: 2,
        daily_failures: 100,
        hotp_lookahead: 10,
    };
    let now: DateTime<Utc> = DateTime::from_timestamp(1_700_000_010, 0).unwrap();
    let nothing = Candidates::Totp {
        amount: None,
        steps: Vec::new(),
    };
    let attempt = Attempt {
        reference: Some("order-1"),
        client: "192.0.2.7",
        token_serial: Some(3),
    };
    let mut outcomes = Vec::new();
    for _ in 0..3 {
        outcomes.push(
            verifications::verify(
                &store,
                &shop,
                &device_id("pos"),
                now,
                &nothing,
                &attempt,
                &policy,
            )
            .await
            .unwrap(),
        );
    }
    assert!(matches!(
        outcomes[..],
        [Outcome::Mismatch, Outcome::Mismatch, Outcome::Locked { .. }]
    ));
    assert_eq!(seen.mismatches.load(Ordering::Relaxed), 2);
    assert_eq!(
        seen.locks.load(Ordering::Relaxed),
        1,
        "the second mismatch locked"
    );
    assert!(seen.checkouts.load(Ordering::Relaxed) >= 4);

    let entries = trail(&store, &shop).await;
    assert_eq!(
        events(&entries),
        [
            "device_created",
            "verification",
            "verification",
            "verification"
        ]
    );
    let [_, first, second, third] = &entries[..] else {
        panic!("{entries:?}");
    };
    for entry in [first, second, third] {
        assert_eq!(entry.token_serial, Some(3));
        assert_eq!(entry.client.as_deref(), Some("192.0.2.7"));
        assert_eq!(entry.device.as_deref(), Some("pos"));
    }
    assert_eq!(
        details(first),
        serde_json::json!({"outcome": "mismatch", "reference": "order-1"})
    );
    assert_eq!(details(second)["outcome"], "mismatch");
    assert!(details(second)["locked_until"].as_i64().unwrap() > now.timestamp());
    assert_eq!(details(third)["outcome"], "locked");
    assert!(
        audit::verify_chain(&store, &shop)
            .await
            .unwrap()
            .is_intact()
    );
}
