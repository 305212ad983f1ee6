//! Keys at rest: the check of the key-encryption key (KEK) against the database, each
//! instance's data key, and `rekey` (encrypting plaintext rows, moving first-form rows,
//! rotating the KEK).

use otp_store::key_check::{self, KeyMismatch};
use otp_store::otp_devices::{self, Created};
use otp_store::rekey::rekey;
use otp_store::testing::{TestDb, first_form_ciphertext};
use otp_store::{Store, StoreError, instances};
use zeroize::Zeroizing;

use crate::{
    given_instance, given_shop_with_kek, key, new_device, sql_execute, store_with_kek, stored,
};

fn kek(byte: u8) -> Zeroizing<[u8; 32]> {
    Zeroizing::new([byte; 32])
}

fn mismatch(result: Result<impl std::fmt::Debug, StoreError>) -> KeyMismatch {
    match result {
        Err(StoreError::KeyMismatch(mismatch)) => mismatch,
        other => panic!("expected a key mismatch, got {other:?}"),
    }
}

/// (encrypted, under the data key) of every device, by id.
async fn forms(store: &Store) -> Vec<(String, bool, bool)> {
    let client = store.pool().get().await.unwrap();
    let rows = client
        .query(
            "SELECT otp_device_id, otp_key_encrypted, otp_key_data_key FROM otp_devices
              ORDER BY otp_device_id",
            &[],
        )
        .await
        .unwrap();
    rows.iter()
        .map(|row| (row.get(0), row.get(1), row.get(2)))
        .collect()
}

async fn wrapped_data_key(store: &Store, instance: &str) -> Option<Vec<u8>> {
    let client = store.pool().get().await.unwrap();
    client
        .query_one(
            "SELECT data_key_wrapped FROM instances WHERE instance_id = $1",
            &[&instance],
        )
        .await
        .unwrap()
        .get(0)
}

#[tokio::test]
async fn a_missing_or_wrong_kek_is_refused_before_any_key_is_read() {
    let (db, store, shop) = given_shop_with_kek(1).await;
    otp_devices::create(&store, &shop, &new_device("pos"))
        .await
        .unwrap();

    let ok = key_check::check(&store, false).await.unwrap();
    let missing = mismatch(key_check::check(&store_with_kek(&db, None), false).await);
    let wrong = mismatch(key_check::check(&store_with_kek(&db, Some(2)), true).await);

    assert_eq!((ok.plaintext, ok.first_form, ok.under_data_keys), (0, 0, 1));
    let id = ok.key_id.unwrap();
    assert_eq!(
        missing,
        KeyMismatch::Missing {
            database: Some(id.clone())
        }
    );
    assert!(matches!(&wrong, KeyMismatch::Wrong { database, .. } if *database == id));
    assert!(wrong.to_string().contains(&id), "{wrong}");
}

#[tokio::test]
async fn the_first_kek_is_recorded_even_before_any_key_is_encrypted() {
    let db = TestDb::new().await;
    let plain = store_with_kek(&db, None);
    assert!(key_check::check(&plain, false).await.is_ok());

    key_check::check(&store_with_kek(&db, Some(1)), false)
        .await
        .unwrap();
    let other = key_check::check(&store_with_kek(&db, Some(2)), false).await;

    assert!(matches!(mismatch(other), KeyMismatch::Wrong { .. }));
    assert!(matches!(
        mismatch(key_check::check(&plain, false).await),
        KeyMismatch::Missing { database: Some(_) }
    ));
}

#[tokio::test]
async fn plaintext_keys_with_a_kek_are_refused_unless_accepted_and_rekey_encrypts_them() {
    let db = TestDb::new().await;
    let plain = store_with_kek(&db, None);
    let shop = given_instance(&plain, "shop").await;
    let cafe = given_instance(&plain, "cafe").await;
    let mut devices = Vec::new();
    for (n, instance) in [&shop, &shop, &shop, &cafe, &cafe].into_iter().enumerate() {
        let mut device = new_device(&format!("pos-{n}"));
        device.key = key(u8::try_from(n).unwrap() + 1);
        otp_devices::create(&plain, instance, &device)
            .await
            .unwrap();
        devices.push((instance.clone(), device));
    }
    let encrypted = store_with_kek(&db, Some(1));

    let refused = mismatch(key_check::check(&encrypted, false).await);
    let accepted = key_check::check(&encrypted, true).await.unwrap();
    let report = rekey(&encrypted, None, 2).await.unwrap();

    assert_eq!(refused, KeyMismatch::Plaintext { count: 5 });
    assert_eq!(accepted.plaintext, 5);
    assert_eq!(
        (report.encrypted, report.moved, report.rewrapped),
        (5, 0, 0)
    );
    assert_eq!(report.data_keys_created, 2);
    assert!(report.batches >= 3, "{report:?}");
    assert!(forms(&encrypted).await.iter().all(|(_, e, d)| *e && *d));
    let status = key_check::check(&encrypted, false).await.unwrap();
    assert_eq!(status.under_data_keys, 5);
    for (instance, device) in &devices {
        let row = stored(&encrypted, instance, &device.id).await;
        assert_eq!(row.key, device.key);
        // The idempotent create still recognises the same key, and only it.
        assert_eq!(
            otp_devices::create(&encrypted, instance, device)
                .await
                .unwrap(),
            Created::Unchanged
        );
        let mut other = device.clone();
        other.key = key(99);
        assert!(matches!(
            otp_devices::create(&encrypted, instance, &other).await,
            Err(StoreError::DeviceExists)
        ));
    }
    assert!(matches!(
        mismatch(key_check::check(&plain, false).await),
        KeyMismatch::Missing { .. }
    ));
    // Nothing left to do.
    let again = rekey(&encrypted, None, 2).await.unwrap();
    assert_eq!((again.encrypted, again.moved, again.rewrapped), (0, 0, 0));
}

#[tokio::test]
async fn rekey_rotates_to_a_new_kek_given_the_old_one_once() {
    let db = TestDb::new().await;
    let old = store_with_kek(&db, Some(1));
    let shop = given_instance(&old, "shop").await;
    let cafe = given_instance(&old, "cafe").await;
    let device = new_device("pos");
    otp_devices::create(&old, &shop, &device).await.unwrap();
    otp_devices::create(&old, &cafe, &device).await.unwrap();
    let new = store_with_kek(&db, Some(2));

    let without_old = rekey(&new, None, 10).await;
    let with_wrong_old = rekey(&new, Some(&kek(3)), 10).await;
    let still_old = stored(&old, &shop, &device.id).await;
    let report = rekey(&new, Some(&kek(1)), 1).await.unwrap();

    assert!(matches!(mismatch(without_old), KeyMismatch::Wrong { .. }));
    assert!(matches!(
        mismatch(with_wrong_old),
        KeyMismatch::OldKeyWrong { .. }
    ));
    assert_eq!(still_old.key, device.key);
    assert_eq!(report.rewrapped, 2);
    assert_eq!((report.encrypted, report.moved), (0, 0));
    for instance in [&shop, &cafe] {
        let read = stored(&new, instance, &device.id).await;
        assert_eq!(read.key, device.key);
        assert!(matches!(
            otp_devices::get(&old, instance, &device.id).await,
            Err(StoreError::Crypto(_))
        ));
    }
    assert!(key_check::check(&new, false).await.is_ok());
    assert!(matches!(
        mismatch(key_check::check(&old, false).await),
        KeyMismatch::Wrong { .. }
    ));
    assert_eq!(
        otp_devices::create(&new, &shop, &device).await.unwrap(),
        Created::Unchanged
    );
}

#[tokio::test]
async fn first_form_keys_are_read_checked_and_moved_under_the_data_key() {
    let db = TestDb::new().await;
    let plain = store_with_kek(&db, None);
    let shop = given_instance(&plain, "shop").await;
    let device = new_device("pos");
    otp_devices::create(&plain, &shop, &device).await.unwrap();
    // As a binary before migration 8 stored it with KEK 1.
    let ciphertext = first_form_ciphertext(&[1; 32], &shop, &device.id, &device.key);
    sql_execute(
        &plain,
        "UPDATE otp_devices SET otp_key = $1, otp_key_encrypted = TRUE",
        &[&ciphertext],
    )
    .await;
    let store = store_with_kek(&db, Some(1));

    let wrong = key_check::check(&store_with_kek(&db, Some(2)), false).await;
    let status = key_check::check(&store, false).await.unwrap();
    let read = stored(&store, &shop, &device.id).await;
    let report = rekey(&store, None, 10).await.unwrap();

    assert!(matches!(mismatch(wrong), KeyMismatch::Undecryptable { .. }));
    assert_eq!(status.first_form, 1);
    assert_eq!(read.key, device.key);
    assert_eq!(report.moved, 1);
    assert_eq!(forms(&store).await, vec![("pos".to_owned(), true, true)]);
    assert_eq!(stored(&store, &shop, &device.id).await.key, device.key);
}

#[tokio::test]
async fn each_instance_has_its_own_data_key_and_loses_it_with_the_instance() {
    let (_db, store, shop) = given_shop_with_kek(1).await;
    let cafe = given_instance(&store, "cafe").await;
    let device = new_device("pos");
    otp_devices::create(&store, &shop, &device).await.unwrap();
    otp_devices::create(&store, &cafe, &device).await.unwrap();
    let shop_key = wrapped_data_key(&store, "shop").await.unwrap();
    let cafe_key = wrapped_data_key(&store, "cafe").await.unwrap();
    let client = store.pool().get().await.unwrap();
    let copy: Vec<u8> = client
        .query_one(
            "SELECT d.otp_key FROM otp_devices d JOIN instances i USING (instance_serial)
              WHERE i.instance_id = 'shop'",
            &[],
        )
        .await
        .unwrap()
        .get(0);

    // A ciphertext of one instance put into the other's row does not open.
    client
        .execute(
            "UPDATE otp_devices d SET otp_key = $1 FROM instances i
              WHERE i.instance_serial = d.instance_serial AND i.instance_id = 'cafe'",
            &[&copy],
        )
        .await
        .unwrap();
    let moved = otp_devices::get(&store, &cafe, &device.id).await;
    // The same instance id again, with the deleted instance's device row restored as a backup
    // taken before the deletion would hold it: its data key is gone.
    instances::delete(&store, &shop).await.unwrap();
    given_instance(&store, "shop").await;
    otp_devices::create(&store, &shop, &new_device("other"))
        .await
        .unwrap();
    client
        .execute(
            "INSERT INTO otp_devices (instance_serial, otp_device_id, description, otp_key,
                    otp_key_encrypted, otp_key_data_key, otp_key_digest, otp_algorithm)
             SELECT instance_serial, 'pos', 'restored', $1, TRUE, TRUE, $2, 3
               FROM instances WHERE instance_id = 'shop'",
            &[&copy, &vec![0u8; 32]],
        )
        .await
        .unwrap();
    let restored = otp_devices::get(&store, &shop, &device.id).await;

    assert_ne!(shop_key, cafe_key);
    assert!(matches!(moved, Err(StoreError::Crypto(_))), "{moved:?}");
    assert_ne!(wrapped_data_key(&store, "shop").await.unwrap(), shop_key);
    assert!(
        matches!(restored, Err(StoreError::Crypto(_))),
        "{restored:?}"
    );
}
