//! Group commit: concurrent confirmations and verifications submitted together share one
//! statement, and each still gets the answer it would get alone.
//!
//! The store of `TestDb` has a pool of 4, so one batch of each kind runs at a time: calls
//! joined on one task all queue before the first batch starts, and run in one statement.

use chrono::{TimeZone, Utc};
use futures_util::future::join_all;
use otp_algo::Algorithm;
use otp_store::audit;
use otp_store::otp_devices::{self, Advance};
use otp_store::verifications::{self, Attempt, Candidates, Outcome, VerifyPolicy};
use otp_store::{InstanceId, Store, StoreError};

use crate::{device_id, given_instance, given_shop, new_device, sql_execute, sql_row, stored};

async fn given_device(store: &Store, shop: &InstanceId, id: &str, algorithm: Algorithm, at: u64) {
    let mut device = new_device(id);
    device.algorithm = algorithm;
    device.counter = at;
    otp_devices::create(store, shop, &device).await.unwrap();
}

/// Confirmations of `(instance, device, price given)`, all submitted at once.
async fn confirm_together(
    store: &Store,
    calls: &[(&InstanceId, &str, bool)],
) -> Vec<Result<Advance, StoreError>> {
    let ids: Vec<_> = calls.iter().map(|(_, id, _)| device_id(id)).collect();
    join_all(
        calls
            .iter()
            .zip(&ids)
            .map(|((shop, _, priced), id)| otp_devices::advance_counter(store, shop, id, *priced)),
    )
    .await
}

fn taken(result: &Result<Advance, StoreError>) -> u64 {
    match result {
        Ok(Advance::Taken(device)) => device.counter,
        other => panic!("expected a counter taken, got {other:?}"),
    }
}

#[tokio::test]
async fn confirmations_together_get_what_each_would_get_alone() {
    let (_db, store, shop) = given_shop().await;
    let cafe = given_instance(&store, "cafe").await;
    given_device(&store, &shop, "h1", Algorithm::HotpWithoutPrice, 10).await;
    given_device(&store, &shop, "h2", Algorithm::HotpWithoutPrice, 20).await;
    given_device(&store, &shop, "p1", Algorithm::HotpWithPrice, 0).await;
    given_device(&store, &shop, "t1", Algorithm::TotpWithoutPrice, 0).await;
    given_device(&store, &cafe, "h1", Algorithm::HotpWithPrice, 500).await;

    let results = confirm_together(
        &store,
        &[
            (&shop, "h1", false),
            (&shop, "p1", true),
            (&shop, "h1", true),
            (&cafe, "h1", true),
            (&shop, "t1", true),
            (&shop, "p1", false),
            (&shop, "missing", true),
            (&shop, "h2", true),
            (&shop, "h1", false),
            (&cafe, "h2", true),
            (&shop, "p1", true),
        ],
    )
    .await;

    // A device asked for several times takes consecutive values in the order asked.
    assert_eq!(
        [&results[0], &results[2], &results[8]].map(taken),
        [10, 11, 12]
    );
    assert_eq!(taken(&results[7]), 20);
    assert_eq!(taken(&results[3]), 500, "same device id, other instance");
    // With-price asked for once without a price: that one is refused, the others served.
    let mut priced = [taken(&results[1]), taken(&results[10])];
    priced.sort_unstable();
    assert_eq!(priced, [0, 1]);
    assert!(matches!(
        results[5],
        Ok(Advance::PriceMissing(Algorithm::HotpWithPrice))
    ));
    assert!(matches!(
        results[4],
        Ok(Advance::NotCounterBased(Algorithm::TotpWithoutPrice))
    ));
    assert!(matches!(results[6], Err(StoreError::DeviceNotFound)));
    assert!(matches!(results[9], Err(StoreError::DeviceNotFound)));
    for (id, next) in [("h1", 13), ("h2", 21), ("p1", 2), ("t1", 0)] {
        assert_eq!(
            stored(&store, &shop, &device_id(id)).await.counter,
            next,
            "{id}"
        );
    }
    assert_eq!(stored(&store, &cafe, &device_id("h1")).await.counter, 501);

    // Every value taken is audited once, in its device's chain, and the chains are intact.
    let report = audit::verify_chain(&store, &shop).await.unwrap();
    assert!(report.is_intact(), "{report:?}");
    let entries = audit::list(&store, &shop, 0, 100).await.unwrap();
    let confirmations: Vec<_> = entries
        .iter()
        .filter(|e| e.event == audit::Event::ConfirmationIssued.as_str())
        .collect();
    // One statement, one transaction: its rows share the transaction's start time (p1, asked
    // for once without a price, was taken alone).
    let batched: Vec<_> = confirmations
        .iter()
        .filter(|e| e.device.as_deref() != Some("p1"))
        .collect();
    assert_eq!(batched.len(), 4);
    assert!(
        batched.iter().all(|e| e.time == batched[0].time),
        "{batched:?}"
    );
    let mut confirmed: Vec<(String, String)> = confirmations
        .iter()
        .map(|e| (e.device.clone().unwrap_or_default(), e.details.clone()))
        .collect();
    confirmed.sort();
    let expected: Vec<(String, String)> = [
        ("h1", 10),
        ("h1", 11),
        ("h1", 12),
        ("h2", 20),
        ("p1", 0),
        ("p1", 1),
    ]
    .iter()
    .map(|(id, ctr)| (id.to_string(), format!(r#"{{"otp_ctr": {ctr}}}"#)))
    .collect();
    assert_eq!(confirmed, expected);
}

#[tokio::test]
async fn a_counter_near_the_end_is_taken_alone_as_far_as_it_goes() {
    let (_db, store, shop) = given_shop().await;
    given_device(
        &store,
        &shop,
        "last",
        Algorithm::HotpWithoutPrice,
        i64::MAX as u64 - 1,
    )
    .await;

    let results = confirm_together(&store, &[(&shop, "last", false); 3]).await;

    assert_eq!(taken(&results[0]), i64::MAX as u64 - 1);
    assert!(matches!(results[1], Err(StoreError::CounterExhausted)));
    assert!(matches!(results[2], Err(StoreError::CounterExhausted)));
}

const POLICY: VerifyPolicy = VerifyPolicy {
    max_failures: 3,
    daily_failures: 100,
    hotp_lookahead: 10,
};

#[tokio::test]
async fn verifications_together_are_decided_one_after_the_other() {
    let (_db, store, shop) = given_shop().await;
    given_device(&store, &shop, "pos", Algorithm::HotpWithoutPrice, 5).await;
    given_device(&store, &shop, "till", Algorithm::HotpWithoutPrice, 0).await;
    let now = Utc.timestamp_opt(1_700_000_000, 0).unwrap();
    let code_7 = Candidates::Hotp {
        counters: vec![7],
        range: (0, 40),
    };
    let wrong = Candidates::Hotp {
        counters: vec![],
        range: (0, 40),
    };
    let calls: Vec<(&str, &Candidates, String)> = (0..5)
        .map(|n| ("pos", &code_7, format!("order-{n}")))
        .chain((0..4).map(|n| ("till", &wrong, format!("wrong-{n}"))))
        .chain([("missing", &wrong, "none".to_owned())])
        .collect();
    let ids: Vec<_> = calls.iter().map(|(id, _, _)| device_id(id)).collect();
    let attempts: Vec<Attempt<'_>> = calls
        .iter()
        .map(|(_, _, reference)| Attempt {
            reference: Some(reference),
            client: "192.0.2.9",
            token_serial: None,
        })
        .collect();

    let outcomes = join_all(calls.iter().zip(&ids).zip(&attempts).map(
        |(((_, code, _), id), attempt)| {
            verifications::verify(&store, &shop, id, now, code, attempt, &POLICY)
        },
    ))
    .await;

    // The same code five times: the first arrival verifies, the others are its replays.
    assert_eq!(
        outcomes[0].as_ref().unwrap(),
        &Outcome::Verified {
            otp_ctr: Some(7),
            matched_offset: None
        }
    );
    for outcome in &outcomes[1..5] {
        assert_eq!(
            outcome.as_ref().unwrap(),
            &Outcome::Replayed {
                reference: Some("order-0".into())
            }
        );
    }
    // Mismatches count in order: the third locks the device, the fourth is refused.
    assert_eq!(outcomes[5].as_ref().unwrap(), &Outcome::Mismatch);
    assert_eq!(outcomes[6].as_ref().unwrap(), &Outcome::Mismatch);
    assert_eq!(outcomes[7].as_ref().unwrap(), &Outcome::Mismatch);
    assert!(matches!(outcomes[8], Ok(Outcome::Locked { .. })));
    assert!(matches!(outcomes[9], Err(StoreError::DeviceNotFound)));
    assert_eq!(stored(&store, &shop, &device_id("pos")).await.counter, 8);
    let history = verifications::history(&store, &shop, &device_id("pos"), 10, 0)
        .await
        .unwrap();
    assert_eq!(history.len(), 5);
    assert!(
        audit::verify_chain(&store, &shop)
            .await
            .unwrap()
            .is_intact()
    );
}

/// `otp_verify_batch` for devices `ids` of `shop` in that order (HOTP, counters 0..=40 computed,
/// `matches[i]` the typed code's matches for `ids[i]`): `(ord, outcome)` as answered.
async fn verify_batch_sql(
    client: &tokio_postgres::Client,
    ids: &[&str],
    matches: &[&str],
) -> Vec<(i32, String)> {
    let n = ids.len();
    let rows = client
        .query(
            "SELECT ord, outcome FROM otp_verify_batch(
                 $1::text[], $2::text[], $3::timestamptz[], $4::smallint[], $5::text[],
                 $6::text[], $7::text[], $8::bigint[], $9::bigint[], $10::text[], $11::text[],
                 $12::bigint[], $13::integer[], $14::integer[], $15::integer[])",
            &[
                &vec!["shop"; n],
                &ids.to_vec(),
                &vec![Utc.timestamp_opt(1_700_000_000, 0).unwrap(); n],
                &vec![2i16; n],
                &vec![""; n],
                &matches.to_vec(),
                &vec!["{}"; n],
                &vec![0i64; n],
                &vec![40i64; n],
                &(0..n).map(|i| format!("order-{i}")).collect::<Vec<_>>(),
                &vec!["192.0.2.7"; n],
                &vec![None::<i64>; n],
                &vec![3i32; n],
                &vec![100i32; n],
                &vec![10i32; n],
            ],
        )
        .await
        .unwrap();
    rows.iter().map(|row| (row.get(0), row.get(1))).collect()
}

#[tokio::test]
async fn a_batch_with_a_negative_counter_is_refused_whole() {
    let (_db, store, shop) = given_shop().await;
    given_device(&store, &shop, "pos", Algorithm::HotpWithoutPrice, 0).await;
    let client = store.pool().get().await.unwrap();
    // otp_verify_accepted has no CHECK of its own (migration 0017): its only writer refuses a
    // negative step or counter before writing anything.
    let err = client
        .query(
            "SELECT ord FROM otp_verify_batch(
                 ARRAY['shop', 'shop'], ARRAY['pos', 'pos'], ARRAY[now(), now()],
                 ARRAY[2, 2]::smallint[], ARRAY['', ''], ARRAY['{0}', '{-1}'], ARRAY['{}', '{}'],
                 ARRAY[0, 0]::bigint[], ARRAY[40, 40]::bigint[], ARRAY[NULL, NULL]::text[],
                 ARRAY['192.0.2.7', '192.0.2.7'], ARRAY[NULL, NULL]::bigint[], ARRAY[3, 3],
                 ARRAY[100, 100], ARRAY[10, 10])",
            &[],
        )
        .await
        .unwrap_err();
    let message = err.as_db_error().map(|db| db.message().to_owned());
    assert!(
        message
            .as_deref()
            .is_some_and(|m| m.contains("not negative")),
        "unexpected error: {err:?}"
    );
    let written: i64 = client
        .query_one(
            "SELECT (SELECT count(*) FROM otp_verify_accepted)
                  + (SELECT count(*) FROM otp_verifications)",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(written, 0);
    assert_eq!(stored(&store, &shop, &device_id("pos")).await.counter, 0);
}

#[tokio::test]
async fn a_batch_call_decides_in_device_order_and_appends_each_chain_row_by_row() {
    let (_db, store, shop) = given_shop().await;
    given_device(&store, &shop, "pos", Algorithm::HotpWithoutPrice, 0).await;
    given_device(&store, &shop, "till", Algorithm::HotpWithoutPrice, 0).await;
    let client = store.pool().get().await.unwrap();
    // Where each device's chain stands (its creation may have appended a row).
    let head = |chain: &'static str| {
        let client = &client;
        async move {
            client
                .query_opt(
                    "SELECT seq FROM audit_heads WHERE instance_id = 'shop' AND chain = $1",
                    &[&chain],
                )
                .await
                .unwrap()
                .map_or(0, |row| row.get::<_, i64>(0))
        }
    };
    let (pos_at, till_at) = (head("pos").await, head("till").await);

    // Positions interleave the devices; each device's attempts are decided in position order.
    let answered = verify_batch_sql(
        &client,
        &["till", "pos", "till", "pos", "missing", "pos", "pos"],
        &["{}", "{3}", "{}", "{3}", "{}", "{4}", "{2}"],
    )
    .await;
    let mut by_ord = answered.clone();
    by_ord.sort();
    assert_eq!(
        by_ord,
        [
            (1, "mismatch".to_owned()),
            (2, "verified".to_owned()),
            (3, "mismatch".to_owned()),
            (4, "replayed".to_owned()),
            (5, "no_device".to_owned()),
            (6, "verified".to_owned()),
            // Below the counter the batch has advanced to (5), and never accepted.
            (7, "mismatch".to_owned()),
        ]
    );
    // Answered in the order decided: by device id, then position.
    let order: Vec<i32> = answered.iter().map(|(ord, _)| *ord).collect();
    assert_eq!(order, [5, 2, 4, 6, 7, 1, 3]);
    assert_eq!(stored(&store, &shop, &device_id("pos")).await.counter, 5);

    // One audit row per recorded attempt, each chain numbered on from its head, and the
    // details audit_append() would have written.
    let rows = client
        .query(
            "SELECT chain, seq, details FROM audit_log
              WHERE instance_id = 'shop' AND event = 'verification' ORDER BY serial",
            &[],
        )
        .await
        .unwrap();
    let trail: Vec<(String, i64, serde_json::Value)> = rows
        .iter()
        .map(|row| {
            (
                row.get(0),
                row.get(1),
                serde_json::from_str(row.get::<_, &str>(2)).unwrap(),
            )
        })
        .collect();
    assert_eq!(
        trail,
        [
            (
                "pos".into(),
                pos_at + 1,
                serde_json::json!({"outcome": "verified", "reference": "order-1", "otp_ctr": 3})
            ),
            (
                "pos".into(),
                pos_at + 2,
                serde_json::json!({"outcome": "replayed", "reference": "order-3", "otp_ctr": 3})
            ),
            (
                "pos".into(),
                pos_at + 3,
                serde_json::json!({"outcome": "verified", "reference": "order-5", "otp_ctr": 4})
            ),
            (
                "pos".into(),
                pos_at + 4,
                serde_json::json!({"outcome": "mismatch", "reference": "order-6"})
            ),
            (
                "till".into(),
                till_at + 1,
                serde_json::json!({"outcome": "mismatch", "reference": "order-0"})
            ),
            (
                "till".into(),
                till_at + 2,
                serde_json::json!({"outcome": "mismatch", "reference": "order-2"})
            ),
        ]
    );
    assert_eq!(
        (head("pos").await, head("till").await),
        (pos_at + 4, till_at + 2)
    );
    // The history, in the order decided.
    let history = verifications::history(&store, &shop, &device_id("pos"), 10, 0)
        .await
        .unwrap();
    let references: Vec<_> = history.iter().map(|h| h.reference.clone()).collect();
    assert_eq!(
        references,
        [
            Some("order-6".to_owned()),
            Some("order-5".to_owned()),
            Some("order-3".to_owned()),
            Some("order-1".to_owned())
        ]
    );

    // The one-attempt function the previous binary calls goes through the same decision and
    // chain.
    let row = client
        .query_one(
            "SELECT outcome, locked FROM otp_verify_observed('shop', 'till', now(), 2::smallint,
                 '', '{}'::bigint[], '{}'::integer[], 0, 40, NULL, '192.0.2.1', NULL, 3, 100,
                 10)",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "mismatch");
    assert!(row.get::<_, bool>(1), "the third mismatch in a row locks");
    assert!(
        audit::verify_chain(&store, &shop)
            .await
            .unwrap()
            .is_intact()
    );
}

/// Index entries of `otp_devices_pkey` read by `sql` in a transaction of its own (rolled back):
/// what the plan of a batch costs, whatever it is.
async fn device_index_reads(store: &Store, sql: &str, ids: &[String]) -> i64 {
    let mut client = store.pool().get().await.unwrap();
    let tx = client.transaction().await.unwrap();
    let n = ids.len();
    let rows = tx
        .query(
            sql,
            &[
                &vec!["shop"; n],
                &ids.to_vec(),
                &vec![false; n],
                &vec![None::<i64>; n],
                &vec!["192.0.2.7"; n],
            ],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), n, "every device of the batch is advanced");
    let reads = device_index_reads_so_far(&*tx).await;
    tx.rollback().await.unwrap();
    reads
}

/// Index entries of `otp_devices_pkey` read so far by the transaction `client` is in.
async fn device_index_reads_so_far(client: &impl tokio_postgres::GenericClient) -> i64 {
    client
        .query_one(
            "SELECT pg_stat_get_xact_tuples_returned('otp_devices_pkey'::regclass)",
            &[],
        )
        .await
        .unwrap()
        .get(0)
}

#[tokio::test]
async fn batches_read_their_devices_by_whole_key_before_any_analyze() {
    let (_db, store, shop) = given_shop().await;
    // An instance with many devices, never analyzed: the state in which a join by instance
    // alone used to read all of them for every device of a batch (migration 0018).
    sql_execute(
        &store,
        "ALTER TABLE otp_devices SET (autovacuum_enabled = false)",
        &[],
    )
    .await;
    given_device(&store, &shop, "template", Algorithm::HotpWithoutPrice, 0).await;
    let copied = sql_execute(
        &store,
        "INSERT INTO otp_devices (instance_serial, otp_device_id, description, otp_key,
                                  otp_key_encrypted, otp_key_digest, otp_algorithm, otp_ctr,
                                  otp_key_data_key)
         SELECT instance_serial, 'dev-' || g, description, otp_key, otp_key_encrypted,
                otp_key_digest, otp_algorithm, otp_ctr, otp_key_data_key
           FROM otp_devices, generate_series(1, 3000) AS g
          WHERE otp_device_id = 'template'",
        &[],
    )
    .await;
    assert_eq!(copied, 3000);
    let analyzed: i64 = sql_row(
        &store,
        "SELECT analyze_count + autoanalyze_count FROM pg_stat_user_tables
          WHERE relname = 'otp_devices'",
        &[],
    )
    .await
    .get(0);
    assert_eq!(analyzed, 0);

    let ids: Vec<String> = (0..8).map(|i| format!("dev-{}", 1 + i * 373)).collect();
    let batch = "SELECT * FROM otp_confirm_batch($1::text[], $2::text[], $3::boolean[],
                                                $4::bigint[], $5::text[])";
    // Twice: PL/pgSQL plans at the first call, and keeps generic plans from then on.
    for round in 0..2 {
        let reads = device_index_reads(&store, batch, &ids).await;
        assert!(
            reads <= 4 * ids.len() as i64,
            "round {round}: {reads} index entries read for {} devices",
            ids.len()
        );
    }
    // A batch of verifications, whose HOTP successes advance the counters in one UPDATE.
    let client = store.pool().get().await.unwrap();
    client.batch_execute("BEGIN").await.unwrap();
    let id_refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    let decided = verify_batch_sql(&client, &id_refs, &vec!["{0}"; ids.len()]).await;
    assert!(
        decided.iter().all(|(_, outcome)| outcome == "verified"),
        "{decided:?}"
    );
    let reads = device_index_reads_so_far(&**client).await;
    client.batch_execute("ROLLBACK").await.unwrap();
    drop(client);
    // Each device's lock, its advance and the checks of its rows: a few entries each.
    assert!(
        reads <= 8 * ids.len() as i64,
        "verifications: {reads} index entries read"
    );
    // The batch as the server sends it, through the store, takes each device's next value.
    let shop_ids: Vec<_> = ids.iter().map(|id| device_id(id)).collect();
    let results = join_all(
        shop_ids
            .iter()
            .map(|id| otp_devices::advance_counter(&store, &shop, id, false)),
    )
    .await;
    assert!(results.iter().all(|r| taken(r) == 0), "{results:?}");
}
