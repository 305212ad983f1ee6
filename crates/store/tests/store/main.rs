//! Integration tests of `otp-store` against real PostgreSQL (see the crate
//! README: `DATABASE_URL`, or a private cluster started on demand).
//!
//! One binary; each module covers one area.

// Test helpers panic on failure, like the tests themselves.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod audit; // The audit trail: appended by every audited write, a hash chain, append-only.
mod batches; // Group commit: calls submitted together get what each would get alone.
mod changes; // The NOTIFY triggers and `changes::subscribe`.
mod embedded; // A cluster from the machine's binaries, on a Unix socket.
mod encryption; // OTP keys at rest with a key-encryption key.
mod failover; // Several hosts: the pool and the listener follow the one that serves.
mod instances; // Instance CRUD and cascading deletes.
mod isolation; // No operation of one instance reaches another's rows.
mod keys_at_rest; // The key-encryption check, per-instance data keys, rekey.
mod migrations; // The migration runner.
mod otp_devices; // Device CRUD, idempotent create, counters.
mod outage; // `Unavailable` within a bounded time, and recovery.
mod passwords; // Instance password hashes; revoking a token by its secret.
mod plans; // The hot functions' cached plans use the keys, whatever the tables' size.
mod tls; // sslmode and sslrootcert against a cluster with TLS.
mod tokens; // Access tokens: hashing, authentication, revocation.
mod verifications; // Verifying a typed code once: lockout, history, concurrency.

use otp_algo::{Algorithm, OtpKey};
use otp_store::otp_devices::NewOtpDevice;
use otp_store::testing::TestDb;
use otp_store::{InstanceId, OtpDeviceId, Store};

/// A valid instance id.
pub fn instance_id(id: &str) -> InstanceId {
    InstanceId::parse(id).unwrap()
}

/// A valid device id.
pub fn device_id(id: &str) -> OtpDeviceId {
    OtpDeviceId::parse(id).unwrap()
}

/// A 20-byte key whose bytes all equal `fill`.
pub fn key(fill: u8) -> OtpKey {
    OtpKey::from_bytes(&[fill; 20]).unwrap()
}

/// A HOTP device with key `key(1)` and counter 0.
pub fn new_device(id: &str) -> NewOtpDevice {
    NewOtpDevice {
        id: device_id(id),
        description: format!("device {id}"),
        key: key(1),
        algorithm: Algorithm::HotpWithoutPrice,
        counter: 0,
    }
}

/// Creates the instance `id` and returns its id.
pub async fn given_instance(store: &Store, id: &str) -> InstanceId {
    let instance = instance_id(id);
    otp_store::instances::create(store, &instance, &format!("Shop {id}"))
        .await
        .unwrap();
    instance
}

/// A fresh database (keep it while the store is used), its store and the instance `shop`.
pub async fn given_shop() -> (TestDb, Store, InstanceId) {
    given_shop_named("shop").await
}

/// A fresh database (keep it while the store is used), its store and the instance `id`.
pub async fn given_shop_named(id: &str) -> (TestDb, Store, InstanceId) {
    let db = TestDb::new().await;
    let store = db.store();
    let shop = given_instance(&store, id).await;
    (db, store, shop)
}

/// A store on `db` whose key-encryption key is 32 bytes of `kek`, or that has none.
pub fn store_with_kek(db: &TestDb, kek: Option<u8>) -> Store {
    let mut config = db.config();
    config.key_encryption_key = kek.map(|byte| zeroize::Zeroizing::new([byte; 32]));
    Store::connect(&config).unwrap()
}

/// [`given_shop`] with a store whose key-encryption key is 32 bytes of `kek`.
pub async fn given_shop_with_kek(kek: u8) -> (TestDb, Store, InstanceId) {
    let db = TestDb::new().await;
    let store = store_with_kek(&db, Some(kek));
    let shop = given_instance(&store, "shop").await;
    (db, store, shop)
}

/// A token of `shop` with `scope`, no expiry and no description.
pub async fn given_token(
    store: &Store,
    shop: &InstanceId,
    scope: &str,
) -> (
    otp_store::tokens::AccessToken,
    otp_store::tokens::SecretToken,
) {
    otp_store::tokens::create(store, shop, scope, None, "")
        .await
        .unwrap()
}

/// The device `id` of `shop` as stored.
pub async fn stored(
    store: &Store,
    shop: &InstanceId,
    id: &OtpDeviceId,
) -> otp_store::otp_devices::OtpDevice {
    otp_store::otp_devices::get(store, shop, id).await.unwrap()
}

/// A fresh database (keep it while the store is used), its store and the instances `alpha`
/// and `beta`.
pub async fn given_alpha_and_beta() -> (TestDb, Store, InstanceId, InstanceId) {
    let (db, store, alpha) = given_shop_named("alpha").await;
    let beta = given_instance(&store, "beta").await;
    (db, store, alpha, beta)
}

/// Runs the statement `sql` on a connection of `store`, behind the store's API; the rows
/// changed.
pub async fn sql_execute(
    store: &Store,
    sql: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> u64 {
    let client = store.pool().get().await.unwrap();
    client.execute(sql, params).await.unwrap()
}

/// Runs the query `sql` on a connection of `store`, behind the store's API; its one row.
pub async fn sql_row(
    store: &Store,
    sql: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> tokio_postgres::Row {
    let client = store.pool().get().await.unwrap();
    client.query_one(sql, params).await.unwrap()
}
