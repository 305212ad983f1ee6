//! The history of a device's verifications, newest first, in pages.

use tokio_postgres::types::ToSql;

use super::batch::{bigint, unsigned};
use super::{RecordedOutcome, Verification};
use crate::error::StoreError;
use crate::ids::{InstanceId, OtpDeviceId};
use crate::store::Store;

const HISTORY: &str = "
    WITH device AS (
        SELECT d.instance_serial, d.otp_device_id
          FROM otp_devices d
          JOIN instances i USING (instance_serial)
         WHERE i.instance_id = $1
           AND d.otp_device_id = $2
    )
    SELECT v.serial, v.time, v.outcome, v.reference, v.otp_ctr, v.matched_offset,
           v.client, v.token_serial
      FROM device
      LEFT JOIN LATERAL (
            SELECT h.serial, h.time, h.outcome, h.reference, h.otp_ctr, h.matched_offset,
                   h.client, h.token_serial
              FROM otp_verifications h
             WHERE h.instance_serial = device.instance_serial
               AND h.otp_device_id = device.otp_device_id
             ORDER BY h.serial DESC
             LIMIT $3 OFFSET $4
      ) v ON TRUE
     ORDER BY v.serial DESC";

/// The verification history of device `id` of `instance`, newest first:
/// at most `limit` attempts after skipping the `offset` newest. Empty when
/// there are none; `DeviceNotFound` if the device does not exist there;
/// `OutOfRange` if `offset` is above 2^63 - 1.
#[tracing::instrument(skip(store))]
pub async fn history(
    store: &Store,
    instance: &InstanceId,
    id: &OtpDeviceId,
    limit: u32,
    offset: u64,
) -> Result<Vec<Verification>, StoreError> {
    let limit = i64::from(limit);
    let offset = bigint(offset, "offset above 2^63 - 1")?;
    let client = store.client().await?;
    let stmt = client.prepare_cached(HISTORY).await?;
    let params: [&(dyn ToSql + Sync); 4] = [&instance.as_str(), &id.as_str(), &limit, &offset];
    let rows = client.query(&stmt, &params).await?;
    if rows.is_empty() {
        return Err(StoreError::DeviceNotFound);
    }
    let mut history = Vec::with_capacity(rows.len());
    for row in &rows {
        // The device's row without a match: no history (in this page).
        if row.try_get::<_, Option<i64>>("serial")?.is_none() {
            continue;
        }
        let outcome: String = row.try_get("outcome")?;
        history.push(Verification {
            time: row.try_get("time")?,
            outcome: RecordedOutcome::parse(&outcome).ok_or_else(|| {
                StoreError::Corrupt(format!("unknown verification outcome {outcome:?}"))
            })?,
            reference: row.try_get("reference")?,
            otp_ctr: unsigned(row, "otp_ctr")?,
            matched_offset: row.try_get("matched_offset")?,
            client: row.try_get("client")?,
            token_serial: row.try_get("token_serial")?,
        });
    }
    Ok(history)
}
