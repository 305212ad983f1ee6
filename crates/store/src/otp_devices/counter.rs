//! The counter of a counter-based (HOTP) device on the hot path: taking the next value for a
//! confirmation in one statement, and reading it as stored now.
//!
//! The server's caches do not promise this counter: advancing it sends no change notification
//! (`sql/migrations/0009_notify_device_changes_without_counter.sql`), and whoever shows it
//! reads it here.

use std::collections::HashMap;

use otp_algo::Algorithm;
use tokio_postgres::types::ToSql;

use super::{OtpDevice, algorithm_and_counter};
use crate::audit::Actor;
use crate::batch;
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

// A batch of confirmations: $1..$5 hold one element per confirmation (instance, device, price
// given, token serial, client). `otp_confirm_batch` (migration 0018) advances each device
// asked for, by its whole key, N values for a device asked for N times (if every one of them
// may be taken), in the order of (instance id, device id) as every batch locks them, so
// batches never deadlock; each value is audited in the order asked.
const ADVANCE_BATCH: &str = "SELECT * FROM otp_confirm_batch($1::text[], $2::text[], $3::boolean[], $4::bigint[], $5::text[])";

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
/// statement: only when the device is counter-based (HOTP) and, for HOTP_WITH_PRICE, only when
/// `price_given`, so a counter value is never used up by a request that cannot be served.
/// Concurrent calls never get the same value. Nothing is notified
/// (`sql/migrations/0009_notify_device_changes_without_counter.sql`). The value taken is
/// audited as a confirmation (`confirmation_issued`) in the same statement, with the current
/// actor ([`crate::audit::current_actor`]).
///
/// Concurrent confirmations share one statement and one commit (group commit, `batch.rs`): under load
/// a round trip serves many requests, and several of one device take consecutive values in it.
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
    let item = Confirmation {
        instance: instance.clone(),
        id: id.clone(),
        price_given,
        actor: crate::audit::current_actor(),
    };
    store.batches().confirmations.submit(store, item).await
}

/// A confirmation waiting for its batch.
pub(crate) struct Confirmation {
    instance: InstanceId,
    id: OtpDeviceId,
    price_given: bool,
    actor: Actor,
}

/// Runs a batch of confirmations ([`crate::batch::RunBatch`]).
pub(crate) fn run_batch(store: Store, items: Vec<Confirmation>) -> batch::BatchFuture<Advance> {
    Box::pin(async move {
        if let [item] = items.as_slice() {
            return vec![advance_one(&store, item).await];
        }
        let taken = match take_batch(&store, &items).await {
            Ok(taken) => taken,
            Err(err) if batch::fails_alone(&err) => return batch::shared_failure(err, items.len()),
            // Whatever failed, each confirmation alone meets it or not.
            Err(err) => {
                tracing::warn!(error = %err, count = items.len(), "a batch of confirmations failed: each runs alone");
                HashMap::new()
            }
        };
        let taken: HashMap<(&str, &str), &Result<OtpDevice, String>> = taken
            .iter()
            .map(|((instance, id), device)| ((instance.as_str(), id.as_str()), device))
            .collect();
        let mut next: HashMap<(&str, &str), u64> = HashMap::new();
        let mut results = Vec::with_capacity(items.len());
        for item in &items {
            let key = (item.instance.as_str(), item.id.as_str());
            let result = match taken.get(&key) {
                Some(Ok(device)) => {
                    let k = next.entry(key).or_insert(0);
                    let counter = device.counter + *k;
                    *k += 1;
                    Ok(Advance::Taken(OtpDevice {
                        counter,
                        ..OtpDevice::clone(device)
                    }))
                }
                Some(Err(unreadable)) => Err(StoreError::Corrupt(unreadable.clone())),
                // Not taken in the batch: alone, it is taken or told why not.
                None => advance_one(&store, item).await,
            };
            results.push(result);
        }
        results
    })
}

/// Takes, in one statement, the next values of the devices of `items` (N values of a device
/// asked for N times) and audits each; returns the devices taken, with `counter` set to their
/// first value taken, or why its row could not be read (the values are taken all the same). A
/// device not taken (missing, not counter-based, a with-price device asked for without a
/// price, too close to 2^63 - 1) is absent. An `Err` stands for the whole statement, which
/// then took nothing.
async fn take_batch(
    store: &Store,
    items: &[Confirmation],
) -> Result<HashMap<(String, String), Result<OtpDevice, String>>, StoreError> {
    let instances: Vec<&str> = items.iter().map(|i| i.instance.as_str()).collect();
    let ids: Vec<&str> = items.iter().map(|i| i.id.as_str()).collect();
    let priced: Vec<bool> = items.iter().map(|i| i.price_given).collect();
    let tokens: Vec<Option<i64>> = items.iter().map(|i| i.actor.token_serial).collect();
    let clients: Vec<&str> = items.iter().map(|i| i.actor.client.as_str()).collect();
    let client = store.client().await?;
    let stmt = client.prepare_cached(ADVANCE_BATCH).await?;
    let params: [&(dyn ToSql + Sync); 5] = [&instances, &ids, &priced, &tokens, &clients];
    let rows = client.query(&stmt, &params).await?;
    // Taken and committed: from here on no failure may send a confirmation round again.
    let mut taken = HashMap::with_capacity(rows.len());
    for row in &rows {
        let Ok(instance) = row.try_get::<_, String>("instance_id") else {
            continue;
        };
        let Ok(id) = row.try_get::<_, String>("otp_device_id") else {
            continue;
        };
        let device = InstanceId::parse(&instance)
            .map_err(|err| StoreError::Corrupt(format!("instance id {instance:?}: {err}")))
            .and_then(|parsed| OtpDevice::from_row(store, &parsed, row))
            .map_err(|err| err.to_string());
        taken.insert((instance, id), device);
    }
    Ok(taken)
}

/// One confirmation in a statement of its own.
async fn advance_one(store: &Store, item: &Confirmation) -> Result<Advance, StoreError> {
    let (instance, id) = (&item.instance, &item.id);
    let client = store.client().await?;
    let stmt = client.prepare_cached(ADVANCE).await?;
    let key: [&(dyn ToSql + Sync); 2] = [&instance.as_str(), &id.as_str()];
    let params: [&(dyn ToSql + Sync); 5] = [
        &instance.as_str(),
        &id.as_str(),
        &item.price_given,
        &item.actor.token_serial,
        &item.actor.client,
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
        if algorithm.uses_price() && !item.price_given {
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
