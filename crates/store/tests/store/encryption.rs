//! OTP keys at rest with a key-encryption key (KEK).

use otp_store::otp_devices::{self, Created};
use otp_store::testing::TestDb;
use otp_store::{Store, StoreError};

use crate::{
    given_instance, given_shop_with_kek, key, new_device, sql_execute, sql_row, store_with_kek,
    stored,
};

async fn raw_key(store: &Store, device: &str) -> (Vec<u8>, bool) {
    let row = sql_row(
        store,
        "SELECT otp_key, otp_key_encrypted FROM otp_devices WHERE otp_device_id = $1",
        &[&device],
    )
    .await;
    (row.get("otp_key"), row.get("otp_key_encrypted"))
}

#[tokio::test]
async fn with_a_kek_keys_are_stored_encrypted_and_read_back() {
    let (_db, store, shop) = given_shop_with_kek(1).await;
    let device = new_device("pos");

    otp_devices::create(&store, &shop, &device).await.unwrap();
    let (at_rest, encrypted) = raw_key(&store, "pos").await;

    assert!(encrypted);
    assert_ne!(at_rest, device.key.as_bytes());
    assert!(
        !at_rest
            .windows(8)
            .any(|w| device.key.as_bytes().windows(8).any(|k| k == w)),
        "key bytes visible at rest"
    );
    assert_eq!(stored(&store, &shop, &device.id).await.key, device.key);
    assert_eq!(
        otp_devices::advance_counter(&store, &shop, &device.id, false)
            .await
            .unwrap()
            .taken()
            .unwrap()
            .key,
        device.key
    );
}

#[tokio::test]
async fn a_wrong_or_missing_kek_is_a_crypto_error() {
    let (db, store, shop) = given_shop_with_kek(1).await;
    let device = new_device("pos");
    otp_devices::create(&store, &shop, &device).await.unwrap();

    let wrong = otp_devices::get(&store_with_kek(&db, Some(2)), &shop, &device.id).await;
    let missing = otp_devices::get(&store_with_kek(&db, None), &shop, &device.id).await;

    assert!(matches!(wrong, Err(StoreError::Crypto(_))), "{wrong:?}");
    assert!(matches!(missing, Err(StoreError::Crypto(_))), "{missing:?}");
}

#[tokio::test]
async fn a_ciphertext_moved_to_another_device_does_not_decrypt() {
    let (_db, store, shop) = given_shop_with_kek(1).await;
    otp_devices::create(&store, &shop, &new_device("one"))
        .await
        .unwrap();
    let mut other = new_device("two");
    other.key = key(5);
    otp_devices::create(&store, &shop, &other).await.unwrap();

    sql_execute(&store, "UPDATE otp_devices SET otp_key = (SELECT otp_key FROM otp_devices WHERE otp_device_id = 'one')
              WHERE otp_device_id = 'two'", &[]).await;
    let moved = otp_devices::get(&store, &shop, &other.id).await;

    assert!(matches!(moved, Err(StoreError::Crypto(_))), "{moved:?}");
}

#[tokio::test]
async fn idempotent_create_compares_keys_under_encryption_and_across_enabling_it() {
    let db = TestDb::new().await;
    let plain = store_with_kek(&db, None);
    let encrypted = store_with_kek(&db, Some(1));
    let shop = given_instance(&plain, "shop").await;
    let old = new_device("before-kek");
    otp_devices::create(&plain, &shop, &old).await.unwrap();
    let new = new_device("after-kek");
    otp_devices::create(&encrypted, &shop, &new).await.unwrap();
    let mut new_other_key = new.clone();
    new_other_key.key = key(3);
    let mut old_other_key = old.clone();
    old_other_key.key = key(3);

    assert_eq!(
        otp_devices::create(&encrypted, &shop, &new).await.unwrap(),
        Created::Unchanged
    );
    assert!(matches!(
        otp_devices::create(&encrypted, &shop, &new_other_key).await,
        Err(StoreError::DeviceExists)
    ));
    assert_eq!(
        otp_devices::create(&encrypted, &shop, &old).await.unwrap(),
        Created::Unchanged
    );
    assert!(matches!(
        otp_devices::create(&encrypted, &shop, &old_other_key).await,
        Err(StoreError::DeviceExists)
    ));
    // Plaintext rows stay readable once a KEK is configured.
    assert_eq!(stored(&encrypted, &shop, &old.id).await.key, old.key);
    assert!(!raw_key(&plain, "before-kek").await.1);
}
