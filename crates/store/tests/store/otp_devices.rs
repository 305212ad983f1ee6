//! Device CRUD, idempotent create, counters.

use std::collections::BTreeSet;

use otp_algo::Algorithm;
use otp_store::StoreError;
use otp_store::otp_devices::{self, Advance, Created, OtpDevicePatch};
use otp_store::testing::TestDb;

use crate::{device_id, given_instance, given_shop, instance_id, key, new_device, stored};

#[tokio::test]
async fn a_created_device_reads_back_identically() {
    let (_db, store, shop) = given_shop().await;
    let mut device = new_device("pos: caf\u{e9} \"1\"");
    device.algorithm = Algorithm::TotpWithPrice;
    device.counter = 42;

    let created = otp_devices::create(&store, &shop, &device).await.unwrap();
    let row = stored(&store, &shop, &device.id).await;

    assert_eq!(created, Created::Inserted);
    assert_eq!(row.id, device.id);
    assert_eq!(row.description, device.description);
    assert_eq!(row.key, device.key);
    assert_eq!(row.algorithm, Algorithm::TotpWithPrice);
    assert_eq!(row.counter, 42);
    assert_eq!(row.created_at, row.updated_at);
}

#[tokio::test]
async fn creating_an_identical_device_again_is_unchanged() {
    let (_db, store, shop) = given_shop().await;
    let device = new_device("pos");
    otp_devices::create(&store, &shop, &device).await.unwrap();
    let before = stored(&store, &shop, &device.id).await;

    let again = otp_devices::create(&store, &shop, &device).await.unwrap();

    assert_eq!(again, Created::Unchanged);
    assert_eq!(stored(&store, &shop, &device.id).await, before);
}

#[tokio::test]
async fn creating_a_device_that_differs_in_any_field_conflicts() {
    let (_db, store, shop) = given_shop().await;
    let original = new_device("pos");
    otp_devices::create(&store, &shop, &original).await.unwrap();
    let before = stored(&store, &shop, &original.id).await;

    let mut variants = Vec::new();
    let mut changed = original.clone();
    changed.description.push('!');
    variants.push(("description", changed));
    let mut changed = original.clone();
    changed.key = key(2);
    variants.push(("key", changed));
    let mut changed = original.clone();
    changed.algorithm = Algorithm::HotpWithPrice;
    variants.push(("algorithm", changed));
    let mut changed = original.clone();
    changed.counter = 1;
    variants.push(("counter", changed));

    for (field, variant) in variants {
        let outcome = otp_devices::create(&store, &shop, &variant).await;
        assert!(
            matches!(outcome, Err(StoreError::DeviceExists)),
            "different {field}: {outcome:?}"
        );
    }
    assert_eq!(stored(&store, &shop, &original.id).await, before);
}

#[tokio::test]
async fn concurrent_identical_creates_insert_once() {
    let (_db, store, shop) = given_shop().await;
    let device = new_device("pos");

    let outcomes =
        futures_util::future::join_all((0..8).map(|_| otp_devices::create(&store, &shop, &device)))
            .await;

    let inserted = outcomes
        .iter()
        .filter(|o| matches!(o, Ok(Created::Inserted)))
        .count();
    let unchanged = outcomes
        .iter()
        .filter(|o| matches!(o, Ok(Created::Unchanged)))
        .count();
    assert_eq!((inserted, unchanged), (1, 7), "{outcomes:?}");
}

#[tokio::test]
async fn devices_need_an_existing_instance() {
    let db = TestDb::new().await;
    let store = db.store();

    let created = otp_devices::create(&store, &instance_id("nope"), &new_device("pos")).await;

    assert!(
        matches!(created, Err(StoreError::InstanceNotFound)),
        "{created:?}"
    );
}

#[tokio::test]
async fn counters_above_i64_max_are_out_of_range() {
    let (_db, store, shop) = given_shop().await;
    let mut device = new_device("pos");
    device.counter = u64::MAX;

    let created = otp_devices::create(&store, &shop, &device).await;

    assert!(
        matches!(created, Err(StoreError::OutOfRange(_))),
        "{created:?}"
    );
    device.counter = i64::MAX as u64;
    otp_devices::create(&store, &shop, &device).await.unwrap();
}

#[tokio::test]
async fn devices_are_listed_in_id_order() {
    let (_db, store, shop) = given_shop().await;
    for id in ["b", "a", "C", "a-2"] {
        otp_devices::create(&store, &shop, &new_device(id))
            .await
            .unwrap();
    }

    let listed = otp_devices::list(&store, &shop).await.unwrap();

    let ids: Vec<&str> = listed.iter().map(|d| d.id.as_str()).collect();
    assert_eq!(ids, ["C", "a", "a-2", "b"]);
    assert_eq!(listed.first().unwrap().description, "device C");
    assert!(
        otp_devices::list(&store, &instance_id("nope"))
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn a_patch_replaces_the_given_fields_and_keeps_the_others() {
    let (_db, store, shop) = given_shop().await;
    let device = new_device("pos");
    otp_devices::create(&store, &shop, &device).await.unwrap();
    let before = stored(&store, &shop, &device.id).await;

    let minimal = OtpDevicePatch {
        description: "renamed".into(),
        key: None,
        algorithm: None,
        counter: None,
    };
    otp_devices::update(&store, &shop, &device.id, &minimal)
        .await
        .unwrap();
    let after_minimal = stored(&store, &shop, &device.id).await;
    let full = OtpDevicePatch {
        description: "all new".into(),
        key: Some(key(9)),
        algorithm: Some(Algorithm::TotpWithoutPrice),
        counter: Some(7),
    };
    otp_devices::update(&store, &shop, &device.id, &full)
        .await
        .unwrap();
    let after_full = stored(&store, &shop, &device.id).await;

    assert_eq!(after_minimal.description, "renamed");
    assert_eq!(
        (
            &after_minimal.key,
            after_minimal.algorithm,
            after_minimal.counter
        ),
        (&before.key, before.algorithm, before.counter)
    );
    assert!(after_minimal.updated_at > before.updated_at);
    assert_eq!(after_full.description, "all new");
    assert_eq!(after_full.key, key(9));
    assert_eq!(after_full.algorithm, Algorithm::TotpWithoutPrice);
    assert_eq!(after_full.counter, 7);
    assert_eq!(after_full.created_at, before.created_at);
}

#[tokio::test]
async fn unknown_devices_are_not_found_by_every_operation() {
    let (_db, store, shop) = given_shop().await;
    let missing = device_id("missing");
    let patch = OtpDevicePatch {
        description: "x".into(),
        key: None,
        algorithm: None,
        counter: None,
    };

    let outcomes = [
        (
            "get",
            otp_devices::get(&store, &shop, &missing).await.map(drop),
        ),
        (
            "update",
            otp_devices::update(&store, &shop, &missing, &patch).await,
        ),
        ("delete", otp_devices::delete(&store, &shop, &missing).await),
        (
            "advance",
            otp_devices::advance_counter(&store, &shop, &missing, true)
                .await
                .map(drop),
        ),
        (
            "resync",
            otp_devices::resync_counter(&store, &shop, &missing, 5).await,
        ),
    ];

    for (operation, outcome) in outcomes {
        assert!(
            matches!(outcome, Err(StoreError::DeviceNotFound)),
            "{operation}: {outcome:?}"
        );
    }
}

#[tokio::test]
async fn a_deleted_device_is_gone() {
    let (_db, store, shop) = given_shop().await;
    let device = new_device("pos");
    otp_devices::create(&store, &shop, &device).await.unwrap();

    otp_devices::delete(&store, &shop, &device.id)
        .await
        .unwrap();

    assert!(matches!(
        otp_devices::get(&store, &shop, &device.id).await,
        Err(StoreError::DeviceNotFound)
    ));
    assert!(matches!(
        otp_devices::delete(&store, &shop, &device.id).await,
        Err(StoreError::DeviceNotFound)
    ));
    assert_eq!(
        otp_devices::create(&store, &shop, &device).await.unwrap(),
        Created::Inserted
    );
}

#[tokio::test]
async fn advancing_returns_the_counter_to_use_and_stores_the_next() {
    let (_db, store, shop) = given_shop().await;
    let mut device = new_device("pos");
    device.counter = 10;
    otp_devices::create(&store, &shop, &device).await.unwrap();

    let first = otp_devices::advance_counter(&store, &shop, &device.id, false)
        .await
        .unwrap()
        .taken()
        .unwrap();
    let second = otp_devices::advance_counter(&store, &shop, &device.id, false)
        .await
        .unwrap()
        .taken()
        .unwrap();

    assert_eq!((first.counter, second.counter), (10, 11));
    assert_eq!(first.key, device.key);
    assert_eq!(stored(&store, &shop, &device.id).await.counter, 12);
}

#[tokio::test]
async fn a_counter_at_i64_max_cannot_advance() {
    let (_db, store, shop) = given_shop().await;
    let mut device = new_device("pos");
    device.counter = i64::MAX as u64 - 1;
    otp_devices::create(&store, &shop, &device).await.unwrap();

    let last = otp_devices::advance_counter(&store, &shop, &device.id, false)
        .await
        .unwrap()
        .taken()
        .unwrap();
    let beyond = otp_devices::advance_counter(&store, &shop, &device.id, false).await;

    assert_eq!(last.counter, i64::MAX as u64 - 1);
    assert!(
        matches!(beyond, Err(StoreError::CounterExhausted)),
        "{beyond:?}"
    );
    assert_eq!(
        stored(&store, &shop, &device.id).await.counter,
        i64::MAX as u64
    );
}

#[tokio::test]
async fn only_counter_based_devices_advance_and_only_with_the_price_they_need() {
    let (_db, store, shop) = given_shop().await;
    let mut devices = Vec::new();
    for (id, algorithm) in [
        ("none", Algorithm::None),
        ("totp", Algorithm::TotpWithoutPrice),
        ("totp-price", Algorithm::TotpWithPrice),
        ("hotp-price", Algorithm::HotpWithPrice),
    ] {
        let mut device = new_device(id);
        device.algorithm = algorithm;
        device.counter = 7;
        otp_devices::create(&store, &shop, &device).await.unwrap();
        devices.push(device);
    }
    for device in &devices {
        let without_price = otp_devices::advance_counter(&store, &shop, &device.id, false)
            .await
            .unwrap();
        let expected = if device.algorithm.is_counter_based() {
            Advance::PriceMissing(device.algorithm)
        } else {
            Advance::NotCounterBased(device.algorithm)
        };
        assert_eq!(without_price, expected, "{}", device.id);
        if !device.algorithm.is_counter_based() {
            let with_price = otp_devices::advance_counter(&store, &shop, &device.id, true);
            assert_eq!(with_price.await.unwrap(), expected, "{}", device.id);
        }
        assert_eq!(
            otp_devices::counter(&store, &shop, &device.id)
                .await
                .unwrap(),
            (device.algorithm, 7),
            "{}: the counter moved",
            device.id
        );
    }
    let hotp = devices.last().unwrap();
    let taken = otp_devices::advance_counter(&store, &shop, &hotp.id, true)
        .await
        .unwrap()
        .taken()
        .unwrap();
    assert_eq!(
        (taken.counter, taken.algorithm),
        (7, Algorithm::HotpWithPrice)
    );
    assert_eq!(taken.key, hotp.key);
    assert_eq!(
        otp_devices::counter(&store, &shop, &hotp.id).await.unwrap(),
        (Algorithm::HotpWithPrice, 8)
    );
    assert!(matches!(
        otp_devices::counter(&store, &shop, &device_id("missing")).await,
        Err(StoreError::DeviceNotFound)
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_advances_get_distinct_consecutive_counters() {
    let db = TestDb::new().await;
    let mut config = db.config();
    config.pool_size = 16;
    let store = otp_store::Store::connect(&config).unwrap();
    let shop = given_instance(&store, "shop").await;
    let mut device = new_device("pos");
    device.counter = 1000;
    otp_devices::create(&store, &shop, &device).await.unwrap();

    let tasks: Vec<_> = (0..64)
        .map(|_| {
            let (store, shop, id) = (store.clone(), shop.clone(), device.id.clone());
            tokio::spawn(async move {
                otp_devices::advance_counter(&store, &shop, &id, false)
                    .await
                    .unwrap()
                    .taken()
                    .unwrap()
                    .counter
            })
        })
        .collect();
    let mut counters = BTreeSet::new();
    for task in tasks {
        counters.insert(task.await.unwrap());
    }

    assert_eq!(counters, (1000..1064).collect::<BTreeSet<u64>>());
    assert_eq!(stored(&store, &shop, &device.id).await.counter, 1064);
}

#[tokio::test]
async fn resync_only_moves_the_counter_forward() {
    let (_db, store, shop) = given_shop().await;
    let mut device = new_device("pos");
    device.counter = 10;
    otp_devices::create(&store, &shop, &device).await.unwrap();
    let counter = || async { stored(&store, &shop, &device.id).await.counter };

    otp_devices::resync_counter(&store, &shop, &device.id, 15)
        .await
        .unwrap();
    assert_eq!(counter().await, 15);
    otp_devices::resync_counter(&store, &shop, &device.id, 12)
        .await
        .unwrap();
    assert_eq!(counter().await, 15);
    otp_devices::resync_counter(&store, &shop, &device.id, 15)
        .await
        .unwrap();
    assert_eq!(counter().await, 15);
    let too_big = otp_devices::resync_counter(&store, &shop, &device.id, u64::MAX).await;
    assert!(
        matches!(too_big, Err(StoreError::OutOfRange(_))),
        "{too_big:?}"
    );
}

/// The database itself refuses a device row that the store would never write: an id with `/`
/// or a control character, a short key, a digest of the wrong length, an unknown algorithm, a
/// negative counter; on INSERT and on an UPDATE that sets the column (migration 0015 checks
/// the first four in a trigger, so that a counter advance does not pay for them).
#[tokio::test]
async fn the_database_refuses_malformed_device_rows() {
    let (_db, store, shop) = given_shop().await;
    otp_devices::create(&store, &shop, &new_device("pos"))
        .await
        .unwrap();
    let client = store.pool().get().await.unwrap();
    let insert = "INSERT INTO otp_devices (instance_serial, otp_device_id, description, otp_key,
                                           otp_key_digest, otp_algorithm, otp_ctr)
                  SELECT instance_serial, $1, '', $2, $3, $4, $5 FROM instances";
    let good_key = vec![7u8; 20];
    let good_digest = vec![9u8; 32];
    // id, key, digest, algorithm, counter, the constraint refusing it
    type Case<'a> = (&'a str, &'a [u8], &'a [u8], i16, i64, &'a str);
    let cases: [Case<'_>; 6] = [
        (
            "a/b",
            &good_key,
            &good_digest,
            1,
            0,
            "otp_devices_otp_device_id_check",
        ),
        (
            "a\u{7}b",
            &good_key,
            &good_digest,
            1,
            0,
            "otp_devices_otp_device_id_check",
        ),
        (
            "short",
            &[1u8; 9],
            &good_digest,
            1,
            0,
            "otp_devices_otp_key_check",
        ),
        (
            "digest",
            &good_key,
            &[1u8; 31],
            1,
            0,
            "otp_devices_otp_key_digest_check",
        ),
        (
            "alg",
            &good_key,
            &good_digest,
            5,
            0,
            "otp_devices_otp_algorithm_check",
        ),
        (
            "ctr",
            &good_key,
            &good_digest,
            3,
            -1,
            "otp_devices_otp_ctr_check",
        ),
    ];
    for (id, key, digest, algorithm, counter, constraint) in cases {
        let err = client
            .execute(insert, &[&id, &key, &digest, &algorithm, &counter])
            .await
            .expect_err(constraint);
        let db = err.as_db_error().expect("a database error");
        assert_eq!(db.code(), &tokio_postgres::error::SqlState::CHECK_VIOLATION);
        assert_eq!(db.constraint(), Some(constraint), "{id}");
    }

    for (set, constraint) in [
        ("otp_device_id = 'x/y'", "otp_devices_otp_device_id_check"),
        ("otp_key = '\\x00'::bytea", "otp_devices_otp_key_check"),
        ("otp_algorithm = -1", "otp_devices_otp_algorithm_check"),
        ("otp_ctr = -5", "otp_devices_otp_ctr_check"),
    ] {
        let err = client
            .execute(&format!("UPDATE otp_devices SET {set}"), &[])
            .await
            .expect_err(set);
        let db = err.as_db_error().expect("a database error");
        assert_eq!(db.code(), &tokio_postgres::error::SqlState::CHECK_VIOLATION);
        assert_eq!(db.constraint(), Some(constraint), "{set}");
    }
    // Nothing was written.
    let row = stored(&store, &shop, &device_id("pos")).await;
    assert_eq!(row.counter, 0);
    assert_eq!(row.key, new_device("pos").key);
}
