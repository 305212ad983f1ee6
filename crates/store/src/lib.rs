//! Instance-scoped PostgreSQL store of taler-otp: merchant instances, their
//! access tokens and their OTP devices.
//!
//! This crate owns all SQL and knows nothing about HTTP. Every operation is a
//! free `async fn` in the module of its table (`instances`, `tokens`,
//! `otp_devices`) taking the [`Store`] and then the instance.
//!
//! **Invariants:**
//! - Instance scoping is structural: every table's key begins with the
//!   instance and every statement's `WHERE` starts with it, so an instance
//!   can never read, change or authenticate with another instance's rows.
//! - SQL is static, with bind parameters, through `prepare_cached`; rows are
//!   read by column name.
//! - Secrets: token secrets are stored as SHA-256 only; OTP keys are
//!   encrypted at rest, each instance's under a data key of its own wrapped
//!   by the key-encryption key, when one is configured ([`key_check`] tells
//!   whether it fits the database, [`rekey`] encrypts and rotates).
//! - Every connection honours `sslmode` and `sslrootcert` (TLS with rustls).
//! - Outcomes callers branch on are [`StoreError`] variants; an unreachable
//!   database is `Unavailable` within a bounded time.
//! - The schema comes from `sql/migrations`, applied by [`migrate()`].

pub mod audit;
mod batch;
pub mod changes;
mod connect;
mod crypto;
mod data_keys;
mod error;
pub mod ids;
pub mod instances;
pub mod key_check;
pub mod migrate;
pub mod observe;
pub mod otp_devices;
pub mod rekey;
mod store;
#[cfg(feature = "testing")]
pub mod testing;
mod tls;
pub mod tokens;
pub mod verifications;

pub use batch::from_connection;
pub use error::StoreError;
pub use ids::{IdError, InstanceId, OtpDeviceId};
pub use migrate::{LATEST_VERSION, MigrationReport, SchemaStatus, migrate};
pub use store::{Store, StoreConfig};
