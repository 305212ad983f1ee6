//! `taler-otp rekey`: every device key under its instance's data key, and every data key
//! wrapped by the configured key-encryption key (KEK), in batches of one transaction each.
//!
//! 1. Data keys wrapped by another KEK (the old one, given once) are unwrapped and wrapped
//!    anew: a rotation rewrites one short row per instance, not the device keys.
//! 2. Device keys stored in plaintext, or in the first form (directly under a KEK), are
//!    encrypted under their instance's data key, which is created when the instance has none.
//! 3. The configured KEK is recorded as the database's (`key_check.rs`), once no data key is
//!    left under another.
//!
//! Interrupted, it can run again: every batch commits on its own and what is done is skipped.

use std::collections::HashMap;
use std::collections::hash_map::Entry;

use deadpool_postgres::{Object, Transaction};
use otp_algo::OtpKey;
use zeroize::Zeroizing;

use crate::crypto::{self, DataKey, KeyCipher};
use crate::error::StoreError;
use crate::ids::{InstanceId, OtpDeviceId};
use crate::key_check::{KeyMismatch, hex};
use crate::store::Store;

/// What [`rekey`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RekeyReport {
    /// Data keys wrapped anew under the configured key.
    pub rewrapped: u64,
    /// Data keys created for instances that had none.
    pub data_keys_created: u64,
    /// Device keys encrypted that were stored in plaintext.
    pub encrypted: u64,
    /// Device keys moved from the first form under their instance's data key.
    pub moved: u64,
    /// Transactions committed.
    pub batches: u64,
}

const PINNED: &str = "SELECT kek_id, kek_check FROM key_encryption_check";

const FOREIGN_DATA_KEYS: &str = "
    SELECT instance_serial, instance_id, data_key_wrapped, data_key_kek_id
      FROM instances
     WHERE data_key_kek_id IS DISTINCT FROM $1::bytea
       AND data_key_wrapped IS NOT NULL
     ORDER BY instance_serial
     LIMIT $2
       FOR UPDATE";

const REWRAP: &str = "
    UPDATE instances AS i
       SET data_key_wrapped = u.wrapped,
           data_key_kek_id = $3
      FROM unnest($1::bigint[], $2::bytea[]) AS u (serial, wrapped)
     WHERE i.instance_serial = u.serial";

const UNSEALED_DEVICES: &str = "
    SELECT d.instance_serial, i.instance_id, d.otp_device_id, d.otp_key, d.otp_key_encrypted,
           i.data_key_wrapped
      FROM otp_devices d
      JOIN instances i USING (instance_serial)
     WHERE NOT (d.otp_key_encrypted AND d.otp_key_data_key)
     ORDER BY d.instance_serial, d.otp_device_id
     LIMIT $1
       FOR UPDATE OF d";

const CREATE_DATA_KEY: &str = "
    UPDATE instances
       SET data_key_wrapped = $2,
           data_key_kek_id = $3
     WHERE instance_serial = $1
       AND data_key_wrapped IS NULL
    RETURNING data_key_wrapped";

const DATA_KEY: &str = "SELECT data_key_wrapped FROM instances WHERE instance_serial = $1";

const SEAL: &str = "
    UPDATE otp_devices AS d
       SET otp_key = u.key,
           otp_key_encrypted = TRUE,
           otp_key_data_key = TRUE,
           otp_key_digest = u.digest
      FROM unnest($1::bigint[], $2::text[], $3::bytea[], $4::bytea[])
           AS u (serial, device, key, digest)
     WHERE d.instance_serial = u.serial
       AND d.otp_device_id = u.device";

const FOREIGN_COUNT: &str = "
    SELECT count(*) AS left
      FROM instances
     WHERE data_key_kek_id IS DISTINCT FROM $1::bytea
       AND data_key_wrapped IS NOT NULL";

const RECORD: &str = "
    INSERT INTO key_encryption_check (kek_id, kek_check)
    VALUES ($1, $2)
    ON CONFLICT (singleton) DO UPDATE
       SET kek_id = EXCLUDED.kek_id,
           kek_check = EXCLUDED.kek_check,
           set_at = now()
     WHERE key_encryption_check.kek_check <> EXCLUDED.kek_check";

/// Puts every device key under its instance's data key and every data key under the store's
/// key-encryption key, `batch` rows per transaction. `old_kek` is the key the database's keys
/// are encrypted with now, when that is not the store's (a rotation). Fails with
/// `InvalidConfig` when the store has no key-encryption key, and with `KeyMismatch` when the
/// database's key is neither the store's nor `old_kek`, or a key does not decrypt.
#[tracing::instrument(skip(store, old_kek))]
pub async fn rekey(
    store: &Store,
    old_kek: Option<&Zeroizing<[u8; 32]>>,
    batch: usize,
) -> Result<RekeyReport, StoreError> {
    let new = store.cipher().ok_or_else(|| {
        StoreError::InvalidConfig("no key-encryption key is configured to encrypt with".into())
    })?;
    let old = old_kek.map(|kek| KeyCipher::new(kek)).transpose()?;
    let batch = i64::try_from(batch.max(1)).unwrap_or(i64::MAX);
    let mut client = store.client().await?;
    let pinned = client.prepare_cached(PINNED).await?;
    if let Some(row) = client.query_opt(&pinned, &[]).await? {
        let id: Vec<u8> = row.try_get("kek_id")?;
        let check: Vec<u8> = row.try_get("kek_check")?;
        let is = |cipher: &KeyCipher| cipher.check().as_slice() == check.as_slice();
        match &old {
            _ if is(new) => {}
            Some(old) if is(old) => {}
            Some(old) => {
                return Err(KeyMismatch::OldKeyWrong {
                    given: hex(&old.id()),
                    database: hex(&id),
                }
                .into());
            }
            None => {
                return Err(KeyMismatch::Wrong {
                    configured: hex(&new.id()),
                    database: hex(&id),
                }
                .into());
            }
        }
    }
    let mut run = Run {
        new,
        ciphers: [Some(new), old.as_ref()].into_iter().flatten().collect(),
        batch,
        report: RekeyReport::default(),
    };
    // A server still running with the old key may wrap a new data key meanwhile: go round again.
    let mut left: i64 = 0;
    for _ in 0..3 {
        while run.rewrap_batch(&mut client).await? {}
        while run.seal_batch(&mut client).await? {}
        let transaction = client.transaction().await?;
        let foreign = transaction.prepare_cached(FOREIGN_COUNT).await?;
        left = transaction
            .query_one(&foreign, &[&new.id().as_slice()])
            .await?
            .try_get("left")?;
        if left == 0 {
            let record = transaction.prepare_cached(RECORD).await?;
            transaction
                .execute(&record, &[&new.id().as_slice(), &new.check().as_slice()])
                .await?;
            transaction.commit().await?;
            run.report.batches += 1;
            return Ok(run.report);
        }
    }
    Err(KeyMismatch::RotationUnfinished {
        count: u64::try_from(left).unwrap_or(0),
        configured: hex(&new.id()),
    }
    .into())
}

/// One `rekey`: the key to put everything under, the keys that may open what is there, the
/// batch size and what was done so far.
struct Run<'a> {
    new: &'a KeyCipher,
    ciphers: Vec<&'a KeyCipher>,
    batch: i64,
    report: RekeyReport,
}

impl Run<'_> {
    /// Wraps up to `batch` data keys not under `new` anew; whether there were any.
    async fn rewrap_batch(&mut self, client: &mut Object) -> Result<bool, StoreError> {
        let (new, ciphers, batch, report) = (self.new, &self.ciphers, self.batch, &mut self.report);
        let transaction = client.transaction().await?;
        let select = transaction.prepare_cached(FOREIGN_DATA_KEYS).await?;
        let rows = transaction
            .query(&select, &[&new.id().as_slice(), &batch])
            .await?;
        if rows.is_empty() {
            return Ok(false);
        }
        let mut serials = Vec::with_capacity(rows.len());
        let mut wrapped_anew = Vec::with_capacity(rows.len());
        for row in &rows {
            let instance = instance_id(row.try_get("instance_id")?)?;
            let kek_id: Vec<u8> = row.try_get("data_key_kek_id")?;
            let wrapped: Vec<u8> = row.try_get("data_key_wrapped")?;
            let cipher = ciphers
                .iter()
                .find(|cipher| cipher.id().as_slice() == kek_id.as_slice())
                .ok_or_else(|| KeyMismatch::Wrong {
                    configured: hex(&new.id()),
                    database: hex(&kek_id),
                })?;
            let data_key = cipher.unwrap(&instance, &wrapped)?;
            serials.push(row.try_get::<_, i64>("instance_serial")?);
            wrapped_anew.push(new.wrap(&instance, &data_key)?);
        }
        let update = transaction.prepare_cached(REWRAP).await?;
        transaction
            .execute(&update, &[&serials, &wrapped_anew, &new.id().as_slice()])
            .await?;
        transaction.commit().await?;
        report.rewrapped += rows.len() as u64;
        report.batches += 1;
        Ok(true)
    }

    /// Encrypts up to `batch` device keys not yet under their instance's data key; whether
    /// there were any.
    async fn seal_batch(&mut self, client: &mut Object) -> Result<bool, StoreError> {
        let (new, ciphers, batch, report) = (self.new, &self.ciphers, self.batch, &mut self.report);
        let transaction = client.transaction().await?;
        let select = transaction.prepare_cached(UNSEALED_DEVICES).await?;
        let rows = transaction.query(&select, &[&batch]).await?;
        if rows.is_empty() {
            return Ok(false);
        }
        let mut data_keys: HashMap<i64, DataKey> = HashMap::new();
        let (mut serials, mut devices, mut keys, mut digests) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for row in &rows {
            let serial: i64 = row.try_get("instance_serial")?;
            let instance = instance_id(row.try_get("instance_id")?)?;
            let device_text: String = row.try_get("otp_device_id")?;
            let device = OtpDeviceId::parse(&device_text)
                .map_err(|err| StoreError::Corrupt(format!("device id {device_text:?}: {err}")))?;
            let stored = Zeroizing::new(row.try_get::<_, Vec<u8>>("otp_key")?);
            let encrypted: bool = row.try_get("otp_key_encrypted")?;
            let key = if encrypted {
                let plaintext = ciphers
                    .iter()
                    .find_map(|cipher| cipher.open_first_form(&instance, &device, &stored).ok())
                    .ok_or_else(|| KeyMismatch::Undecryptable {
                        configured: hex(&new.id()),
                    })?;
                OtpKey::from_bytes(&plaintext)
            } else {
                OtpKey::from_bytes(&stored)
            }
            .map_err(|err| StoreError::Corrupt(format!("otp key of device {device}: {err}")))?;
            let data_key = match data_keys.entry(serial) {
                Entry::Occupied(entry) => entry.into_mut(),
                Entry::Vacant(entry) => {
                    let wrapped: Option<Vec<u8>> = row.try_get("data_key_wrapped")?;
                    entry.insert(
                        data_key_of(&transaction, new, serial, &instance, wrapped, report).await?,
                    )
                }
            };
            let sealed = crypto::seal(Some(data_key), &instance, &device, &key)?;
            if encrypted {
                report.moved += 1;
            } else {
                report.encrypted += 1;
            }
            serials.push(serial);
            devices.push(device_text);
            keys.push(sealed.bytes.to_vec());
            digests.push(sealed.digest.to_vec());
        }
        let update = transaction.prepare_cached(SEAL).await?;
        transaction
            .execute(&update, &[&serials, &devices, &keys, &digests])
            .await?;
        transaction.commit().await?;
        report.batches += 1;
        Ok(true)
    }
}

/// The data key of the instance `serial` (`wrapped`, as read), created when it has none.
async fn data_key_of(
    transaction: &Transaction<'_>,
    new: &KeyCipher,
    serial: i64,
    instance: &InstanceId,
    wrapped: Option<Vec<u8>>,
    report: &mut RekeyReport,
) -> Result<DataKey, StoreError> {
    if let Some(wrapped) = wrapped {
        return new.unwrap(instance, &wrapped);
    }
    let data_key = DataKey::generate()?;
    let create = transaction.prepare_cached(CREATE_DATA_KEY).await?;
    let created = transaction
        .query_opt(
            &create,
            &[
                &serial,
                &new.wrap(instance, &data_key)?,
                &new.id().as_slice(),
            ],
        )
        .await?;
    if created.is_some() {
        report.data_keys_created += 1;
        return Ok(data_key);
    }
    // Another writer created it meanwhile.
    let select = transaction.prepare_cached(DATA_KEY).await?;
    let row = transaction.query_one(&select, &[&serial]).await?;
    let wrapped: Vec<u8> = row.try_get("data_key_wrapped")?;
    new.unwrap(instance, &wrapped)
}

fn instance_id(text: String) -> Result<InstanceId, StoreError> {
    InstanceId::parse(&text)
        .map_err(|err| StoreError::Corrupt(format!("instance id {text:?}: {err}")))
}
