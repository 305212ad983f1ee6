//! OTP devices of one merchant instance.
//!
//! Every statement is scoped by the instance id first; a device of another
//! instance is indistinguishable from a missing one. Keys are encrypted at
//! rest when a key-encryption key is configured (see `crypto.rs`).

use chrono::{DateTime, Utc};
use otp_algo::{Algorithm, OtpKey};
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

use crate::audit;
use crate::data_keys;
use crate::error::StoreError;
use crate::ids::{InstanceId, OtpDeviceId};
use crate::store::Store;

/// A device to create.
#[derive(Clone, Debug)]
pub struct NewOtpDevice {
    /// Unique within the instance.
    pub id: OtpDeviceId,
    /// Human-readable description.
    pub description: String,
    /// The decoded secret key.
    pub key: OtpKey,
    /// How codes are computed.
    pub algorithm: Algorithm,
    /// The next counter value for counter-based algorithms (at most 2^63 - 1).
    pub counter: u64,
}

/// A stored device. `Debug` does not show the key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OtpDevice {
    /// Unique within the instance.
    pub id: OtpDeviceId,
    /// Human-readable description.
    pub description: String,
    /// The decoded secret key.
    pub key: OtpKey,
    /// How codes are computed.
    pub algorithm: Algorithm,
    /// The counter (for [`advance_counter`]: the value to use now).
    pub counter: u64,
    /// When the device was created.
    pub created_at: DateTime<Utc>,
    /// When the device last changed.
    pub updated_at: DateTime<Utc>,
}

/// A device in a listing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OtpDeviceSummary {
    /// Unique within the instance.
    pub id: OtpDeviceId,
    /// Human-readable description.
    pub description: String,
}

/// Changes to a device: `description` always replaces the stored one, `None`
/// keeps the stored value.
#[derive(Clone, Debug)]
pub struct OtpDevicePatch {
    /// The new description.
    pub description: String,
    /// A new key, or `None` to keep it.
    pub key: Option<OtpKey>,
    /// A new algorithm, or `None` to keep it.
    pub algorithm: Option<Algorithm>,
    /// A new counter (at most 2^63 - 1), or `None` to keep it.
    pub counter: Option<u64>,
}

/// The outcome of [`create`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Created {
    /// The device was new and has been stored.
    Inserted,
    /// An identical device (description, key, algorithm, counter) existed.
    Unchanged,
}

impl OtpDevice {
    fn from_row(store: &Store, instance: &InstanceId, row: &Row) -> Result<OtpDevice, StoreError> {
        let id = device_id(row)?;
        let key = data_keys::open_row(store, instance, &id, row)?;
        let (algorithm, counter) = algorithm_and_counter(&id, row)?;
        Ok(OtpDevice {
            algorithm,
            counter,
            description: row.try_get("description")?,
            key,
            created_at: row.try_get("created_at")?,
            updated_at: row.try_get("updated_at")?,
            id,
        })
    }
}

pub(crate) mod counter;
pub use counter::{Advance, advance_counter, counter};

fn device_id(row: &Row) -> Result<OtpDeviceId, StoreError> {
    let id: String = row.try_get("otp_device_id")?;
    OtpDeviceId::parse(&id).map_err(|err| StoreError::Corrupt(format!("device id {id:?}: {err}")))
}

/// The algorithm and counter columns of `row`.
fn algorithm_and_counter(id: &OtpDeviceId, row: &Row) -> Result<(Algorithm, u64), StoreError> {
    let algorithm: i16 = row.try_get("otp_algorithm")?;
    let counter: i64 = row.try_get("otp_ctr")?;
    Ok((
        Algorithm::from_int(i64::from(algorithm))
            .map_err(|err| StoreError::Corrupt(format!("algorithm of device {id}: {err}")))?,
        u64::try_from(counter)
            .map_err(|_| StoreError::Corrupt(format!("negative counter of device {id}")))?,
    ))
}

fn counter_param(counter: u64) -> Result<i64, StoreError> {
    i64::try_from(counter).map_err(|_| StoreError::OutOfRange("counter above 2^63 - 1"))
}

const CREATE: &str = "
    WITH instance AS (
        SELECT instance_serial FROM instances WHERE instance_id = $1
    ), upsert AS (
        INSERT INTO otp_devices AS d
               (instance_serial, otp_device_id, description, otp_key, otp_key_encrypted,
                otp_key_digest, otp_algorithm, otp_ctr, otp_key_data_key)
        SELECT instance_serial, $2::text, $3::text, $4::bytea, $5::boolean,
               $6::bytea, $7::smallint, $8::bigint, $12::boolean
          FROM instance
        ON CONFLICT (instance_serial, otp_device_id) DO UPDATE
           SET otp_device_id = EXCLUDED.otp_device_id
         WHERE d.description = EXCLUDED.description
           AND d.otp_key_digest IN (EXCLUDED.otp_key_digest, $9::bytea, $13::bytea)
           AND d.otp_algorithm = EXCLUDED.otp_algorithm
           AND d.otp_ctr = EXCLUDED.otp_ctr
        RETURNING (d.xmax = 0) AS inserted
    ), audit AS (
        SELECT audit_append($1, 'device_created', $2, $10, $11,
                   jsonb_build_object('otp_algorithm', $7::smallint, 'otp_ctr', $8::bigint)::text)
          FROM upsert
         WHERE inserted
    )
    SELECT EXISTS (SELECT 1 FROM instance) AS instance_found,
           (SELECT inserted FROM upsert) AS inserted,
           (SELECT count(*) FROM audit) AS audited";

/// Creates `device` in `instance`.
///
/// Idempotent: if a device with this id exists with the same description,
/// key, algorithm and counter the result is `Unchanged`; with any difference
/// it is `DeviceExists`. The decision is taken inside the database by one
/// statement (keys are compared by their digest), so concurrent identical
/// requests never conflict. `InstanceNotFound` if the instance does not exist.
/// A new device is audited (`device_created`) in the same statement.
#[tracing::instrument(skip(store, device), fields(device = %device.id))]
pub async fn create(
    store: &Store,
    instance: &InstanceId,
    device: &NewOtpDevice,
) -> Result<Created, StoreError> {
    let counter = counter_param(device.counter)?;
    let algorithm = i16::from(device.algorithm.as_int());
    let actor = audit::current_actor();
    let client = store.client().await?;
    let (stored_key, [_, plain_digest, first_form_digest]) =
        data_keys::seal(store, &client, instance, &device.id, &device.key).await?;
    let stmt = client.prepare_cached(CREATE).await?;
    let params: [&(dyn ToSql + Sync); 13] = [
        &instance.as_str(),
        &device.id.as_str(),
        &device.description,
        &stored_key.bytes.as_slice(),
        &stored_key.encrypted,
        &stored_key.digest.as_slice(),
        &algorithm,
        &counter,
        &plain_digest.as_slice(),
        &actor.token_serial,
        &actor.client,
        &stored_key.data_key,
        &first_form_digest.as_slice(),
    ];
    let row = client.query_one(&stmt, &params).await?;
    if !row.try_get::<_, bool>("instance_found")? {
        return Err(StoreError::InstanceNotFound);
    }
    match row.try_get::<_, Option<bool>>("inserted")? {
        Some(true) => Ok(Created::Inserted),
        Some(false) => Ok(Created::Unchanged),
        None => Err(StoreError::DeviceExists),
    }
}

const SELECT_ALL: &str = "
    SELECT d.otp_device_id, d.description
      FROM otp_devices d
      JOIN instances i USING (instance_serial)
     WHERE i.instance_id = $1
     ORDER BY d.otp_device_id COLLATE \"C\"";

const SELECT_PAGE: &str = "
    SELECT d.otp_device_id, d.description
      FROM otp_devices d
      JOIN instances i USING (instance_serial)
     WHERE i.instance_id = $1
     ORDER BY d.otp_device_id COLLATE \"C\"
     LIMIT $2 OFFSET $3";

/// At most `limit` devices of `instance` after skipping `offset`, in the order of [`list`];
/// `OutOfRange` if `offset` is above 2^63 - 1.
#[tracing::instrument(skip(store))]
pub async fn list_page(
    store: &Store,
    instance: &InstanceId,
    limit: u32,
    offset: u64,
) -> Result<Vec<OtpDeviceSummary>, StoreError> {
    let offset =
        i64::try_from(offset).map_err(|_| StoreError::OutOfRange("offset above 2^63 - 1"))?;
    let client = store.client().await?;
    let stmt = client.prepare_cached(SELECT_PAGE).await?;
    let rows = client
        .query(&stmt, &[&instance.as_str(), &i64::from(limit), &offset])
        .await?;
    summaries(&rows)
}

fn summaries(rows: &[Row]) -> Result<Vec<OtpDeviceSummary>, StoreError> {
    rows.iter()
        .map(|row| {
            Ok(OtpDeviceSummary {
                id: device_id(row)?,
                description: row.try_get("description")?,
            })
        })
        .collect()
}

/// The devices of `instance`, ordered by id (byte order); empty for an
/// unknown instance.
#[tracing::instrument(skip(store))]
pub async fn list(
    store: &Store,
    instance: &InstanceId,
) -> Result<Vec<OtpDeviceSummary>, StoreError> {
    let client = store.client().await?;
    let stmt = client.prepare_cached(SELECT_ALL).await?;
    let rows = client.query(&stmt, &[&instance.as_str()]).await?;
    summaries(&rows)
}

const SELECT_ONE: &str = "
    SELECT d.otp_device_id, d.description, d.otp_key, d.otp_key_encrypted,
           d.otp_key_data_key, i.data_key_wrapped,
           d.otp_algorithm, d.otp_ctr, d.created_at, d.updated_at
      FROM otp_devices d
      JOIN instances i USING (instance_serial)
     WHERE i.instance_id = $1
       AND d.otp_device_id = $2";

/// Device `id` of `instance`; `DeviceNotFound` if it does not exist there.
#[tracing::instrument(skip(store))]
pub async fn get(
    store: &Store,
    instance: &InstanceId,
    id: &OtpDeviceId,
) -> Result<OtpDevice, StoreError> {
    let client = store.client().await?;
    let stmt = client.prepare_cached(SELECT_ONE).await?;
    let row = client
        .query_opt(&stmt, &[&instance.as_str(), &id.as_str()])
        .await?;
    OtpDevice::from_row(store, instance, &row.ok_or(StoreError::DeviceNotFound)?)
}

const UPDATE: &str = "
    WITH target AS (
        SELECT d.instance_serial, d.otp_device_id, d.description, d.otp_key_digest,
               d.otp_algorithm, d.otp_ctr
          FROM otp_devices d
          JOIN instances i USING (instance_serial)
         WHERE i.instance_id = $1
           AND d.otp_device_id = $2
           FOR NO KEY UPDATE OF d
    ), updated AS (
    UPDATE otp_devices AS d
       SET description = $3,
           otp_key = COALESCE($4::bytea, d.otp_key),
           otp_key_encrypted = COALESCE($5::boolean, d.otp_key_encrypted),
           otp_key_data_key = COALESCE($11::boolean, d.otp_key_data_key),
           otp_key_digest = COALESCE($6::bytea, d.otp_key_digest),
           otp_algorithm = COALESCE($7::smallint, d.otp_algorithm),
           otp_ctr = COALESCE($8::bigint, d.otp_ctr),
           updated_at = now()
      FROM target t
     WHERE d.instance_serial = t.instance_serial
       AND d.otp_device_id = t.otp_device_id
    RETURNING jsonb_build_object('fields', to_jsonb(array_remove(ARRAY[
        CASE WHEN d.description IS DISTINCT FROM t.description THEN 'otp_device_description' END,
        CASE WHEN d.otp_key_digest IS DISTINCT FROM t.otp_key_digest THEN 'otp_key' END,
        CASE WHEN d.otp_algorithm IS DISTINCT FROM t.otp_algorithm THEN 'otp_algorithm' END,
        CASE WHEN d.otp_ctr IS DISTINCT FROM t.otp_ctr THEN 'otp_ctr' END]::text[], NULL)))::text
        AS details
    ), audit AS (
        SELECT audit_append($1, 'device_changed', $2, $9, $10, details) FROM updated
    )
    SELECT (SELECT count(*) FROM updated) AS updated, (SELECT count(*) FROM audit) AS audited";

/// Applies `patch` to device `id` of `instance` in one statement and bumps
/// `updated_at`; `DeviceNotFound` if the device does not exist there. The change is
/// audited (`device_changed`, naming the fields whose values changed, never a key) in the
/// same statement.
#[tracing::instrument(skip(store, patch))]
pub async fn update(
    store: &Store,
    instance: &InstanceId,
    id: &OtpDeviceId,
    patch: &OtpDevicePatch,
) -> Result<(), StoreError> {
    let counter = patch.counter.map(counter_param).transpose()?;
    let client = store.client().await?;
    let stored_key = match &patch.key {
        Some(key) => Some(data_keys::seal(store, &client, instance, id, key).await?.0),
        None => None,
    };
    let key_data_key: Option<bool> = stored_key.as_ref().map(|key| key.data_key);
    let key_bytes: Option<&[u8]> = stored_key.as_ref().map(|key| key.bytes.as_slice());
    let key_encrypted: Option<bool> = stored_key.as_ref().map(|key| key.encrypted);
    let key_digest: Option<&[u8]> = stored_key.as_ref().map(|key| key.digest.as_slice());
    let algorithm: Option<i16> = patch
        .algorithm
        .map(|algorithm| i16::from(algorithm.as_int()));
    let actor = audit::current_actor();
    let stmt = client.prepare_cached(UPDATE).await?;
    let params: [&(dyn ToSql + Sync); 11] = [
        &instance.as_str(),
        &id.as_str(),
        &patch.description,
        &key_bytes,
        &key_encrypted,
        &key_digest,
        &algorithm,
        &counter,
        &actor.token_serial,
        &actor.client,
        &key_data_key,
    ];
    let updated: i64 = client.query_one(&stmt, &params).await?.try_get("updated")?;
    match updated {
        0 => Err(StoreError::DeviceNotFound),
        _ => Ok(()),
    }
}

const DELETE: &str = "
    WITH deleted AS (
        DELETE FROM otp_devices d
         USING instances i
         WHERE i.instance_id = $1
           AND d.instance_serial = i.instance_serial
           AND d.otp_device_id = $2
        RETURNING d.otp_device_id
    ), audit AS (
        SELECT audit_append($1, 'device_deleted', $2, $3, $4, '{}') FROM deleted
    )
    SELECT (SELECT count(*) FROM deleted) AS deleted, (SELECT count(*) FROM audit) AS audited";

/// Deletes device `id` of `instance`; `DeviceNotFound` if it does not exist there. The
/// deletion is audited (`device_deleted`) in the same statement.
#[tracing::instrument(skip(store))]
pub async fn delete(
    store: &Store,
    instance: &InstanceId,
    id: &OtpDeviceId,
) -> Result<(), StoreError> {
    let actor = audit::current_actor();
    let client = store.client().await?;
    let stmt = client.prepare_cached(DELETE).await?;
    let params: [&(dyn ToSql + Sync); 4] = [
        &instance.as_str(),
        &id.as_str(),
        &actor.token_serial,
        &actor.client,
    ];
    let deleted: i64 = client.query_one(&stmt, &params).await?.try_get("deleted")?;
    match deleted {
        0 => Err(StoreError::DeviceNotFound),
        _ => Ok(()),
    }
}

const RESYNC: &str = "
    UPDATE otp_devices AS d
       SET otp_ctr = GREATEST(d.otp_ctr, $3::bigint),
           updated_at = CASE WHEN $3::bigint > d.otp_ctr THEN now() ELSE d.updated_at END
      FROM instances i
     WHERE i.instance_id = $1
       AND d.instance_serial = i.instance_serial
       AND d.otp_device_id = $2";

/// After a verified HOTP code: sets the counter of device `id` of `instance`
/// to `next` if `next` is above the stored counter, in one statement (a
/// smaller `next` changes nothing). `DeviceNotFound` if the device does not exist
/// there; `OutOfRange` if `next` is above 2^63 - 1.
#[tracing::instrument(skip(store))]
pub async fn resync_counter(
    store: &Store,
    instance: &InstanceId,
    id: &OtpDeviceId,
    next: u64,
) -> Result<(), StoreError> {
    let next = counter_param(next)?;
    let client = store.client().await?;
    let stmt = client.prepare_cached(RESYNC).await?;
    match client
        .execute(&stmt, &[&instance.as_str(), &id.as_str(), &next])
        .await?
    {
        0 => Err(StoreError::DeviceNotFound),
        _ => Ok(()),
    }
}
