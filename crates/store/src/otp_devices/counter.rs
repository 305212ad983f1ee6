//! The counter of a counter-based (HOTP) device on the hot path: taking the next value for a
//! confirmation in one statement, and reading it as stored now.
//!
//! The server's caches do not promise this counter: advancing it sends no change notification
//! (`sql/migrations/0009_notify_device_changes_without_counter.sql`), and whoever shows it
//! reads it here.

use otp_algo::Algorithm;
use tokio_postgres::types::ToSql;

use super::{OtpDevice, algorithm_and_counter};
use crate::error::StoreError;
use crate::ids::{InstanceId, OtpDeviceId};
use crate::store::Store;

// The confirmation is audited in the same statement (`confirmation_issued`, in the device's
// audit chain, whose lock adds no wait to the device row's own).
const ADVANCE: &str = "
    WITH taken AS (
    UPDATE otp_devices AS d
       SET otp_ctr = d.otp_ctr + 1,
           updated_at = now()
      FROM instances i
     WHERE i.instance_id = $1
       AND d.instance_serial = i.instance_serial
       AND d.otp_device_id = $2
       AND (d.otp_algorithm = 3 OR (d.otp_algorithm = 4 AND $3::boolean))
       AND d.otp_ctr < 9223372036854775807
    RETURNING d.otp_device_id, d.description, d.otp_key, d.otp_key_encrypted,
              d.otp_key_data_key, i.data_key_wrapped,
              d.otp_algorithm, d.otp_ctr - 1 AS otp_ctr, d.created_at, d.updated_at
    ), audit AS (
        SELECT audit_append($1, 'confirmation_issued', $2, $4, $5,
                   jsonb_build_object('otp_ctr', t.otp_ctr)::text)
          FROM taken t
    )
    SELECT t.*, (SELECT count(*) FROM audit) AS audited FROM taken t";

const COUNTER: &str = "
    SELECT d.otp_algorithm, d.otp_ctr
      FROM otp_devices d
      JOIN instances i USING (instance_serial)
     WHERE i.instance_id = $1
       AND d.otp_device_id = $2";

/// The outcome of [`advance_counter`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Advance {
    /// The device, with `counter` set to the value taken (the stored one is now one more).
    Taken(OtpDevice),
    /// The device's algorithm is not counter-based (NONE, TOTP): nothing changed.
    NotCounterBased(Algorithm),
    /// The algorithm binds codes to a price and none was given: nothing changed.
    PriceMissing(Algorithm),
}

impl Advance {
    /// The device with the counter value taken, if one was.
    pub fn taken(self) -> Option<OtpDevice> {
        match self {
            Advance::Taken(device) => Some(device),
            Advance::NotCounterBased(_) | Advance::PriceMissing(_) => None,
        }
    }
}

/// Takes the next counter value of device `id` of `instance` for a confirmation, in one
/// statement and one round trip: only when the device is counter-based (HOTP) and, for
/// HOTP_WITH_PRICE, only when `price_given`, so a counter value is never used up by a request
/// that cannot be served. Concurrent calls never get the same value. Nothing is notified
/// (`sql/migrations/0009_notify_device_changes_without_counter.sql`). The value taken is
/// audited as a confirmation (`confirmation_issued`) in the same statement, with the current
/// actor ([`crate::audit::current_actor`]).
///
/// Only when nothing was taken, a second query tells why: `DeviceNotFound`,
/// [`Advance::NotCounterBased`], [`Advance::PriceMissing`], or `CounterExhausted` (the
/// counter is at 2^63 - 1).
#[tracing::instrument(skip(store))]
pub async fn advance_counter(
    store: &Store,
    instance: &InstanceId,
    id: &OtpDeviceId,
    price_given: bool,
) -> Result<Advance, StoreError> {
    let actor = crate::audit::current_actor();
    let client = store.client().await?;
    let stmt = client.prepare_cached(ADVANCE).await?;
    let key: [&(dyn ToSql + Sync); 2] = [&instance.as_str(), &id.as_str()];
    let params: [&(dyn ToSql + Sync); 5] = [
        &instance.as_str(),
        &id.as_str(),
        &price_given,
        &actor.token_serial,
        &actor.client,
    ];
    // The device may change between the two statements (rare): then take again.
    for _ in 0..3 {
        if let Some(row) = client.query_opt(&stmt, &params).await? {
            return Ok(Advance::Taken(OtpDevice::from_row(store, instance, &row)?));
        }
        let counter = client.prepare_cached(COUNTER).await?;
        let row = client.query_opt(&counter, &key).await?;
        let row = row.ok_or(StoreError::DeviceNotFound)?;
        let (algorithm, counter) = algorithm_and_counter(id, &row)?;
        if !algorithm.is_counter_based() {
            return Ok(Advance::NotCounterBased(algorithm));
        }
        if algorithm.uses_price() && !price_given {
            return Ok(Advance::PriceMissing(algorithm));
        }
        if counter >= i64::MAX as u64 {
            return Err(StoreError::CounterExhausted);
        }
    }
    Err(StoreError::Corrupt(format!(
        "device {id} kept changing while its counter was taken"
    )))
}

/// The algorithm and the counter of device `id` of `instance` as stored now (one cheap
/// query): the counter of a counter-based device is not cached, since advancing it notifies
/// nobody. `DeviceNotFound` if the device does not exist there.
#[tracing::instrument(skip(store))]
pub async fn counter(
    store: &Store,
    instance: &InstanceId,
    id: &OtpDeviceId,
) -> Result<(Algorithm, u64), StoreError> {
    let client = store.client().await?;
    let stmt = client.prepare_cached(COUNTER).await?;
    let row = client
        .query_opt(&stmt, &[&instance.as_str(), &id.as_str()])
        .await?;
    algorithm_and_counter(id, &row.ok_or(StoreError::DeviceNotFound)?)
}
