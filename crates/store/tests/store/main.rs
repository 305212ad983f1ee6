//! Integration tests of `otp-store` against real PostgreSQL (see the crate
//! README: `DATABASE_URL`, or a private cluster started on demand).
//!
//! One binary; each module covers one area.

// Test helpers panic on failure, like the tests themselves.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod audit; // The audit trail: appended by every audited write, a hash chain, append-only.
mod changes; // The NOTIFY triggers and `changes::subscribe`.
mod embedded; // A cluster from the machine's binaries, on a Unix socket.
mod encryption; // OTP keys at rest with a key-encryption key.
mod instances; // Instance CRUD and cascading deletes.
mod isolation; // No operation of one instance reaches another's rows.
mod keys_at_rest; // The key-encryption check, per-instance data keys, rekey.
mod migrations; // The migration runner.
mod otp_devices; // Device CRUD, idempotent create, counters.
mod outage; // `Unavailable` within a bounded time, and recovery.
mod passwords; // Instance password hashes; revoking a token by its secret.
mod tls; // sslmode and sslrootcert against a cluster with TLS.
mod tokens; // Access tokens: hashing, authentication, revocation.
mod verifications; // Verifying a typed code once: lockout, history, concurrency.

use otp_algo::{Algorithm, OtpKey};
use otp_store::otp_devices::NewOtpDevice;
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
