//! Each instance's data key, under which its device keys are encrypted (see `crypto.rs`):
//! created on the instance's first encrypted write, read with the device rows, deleted with the
//! instance.

use deadpool_postgres::ClientWrapper;
use otp_algo::OtpKey;
use tokio_postgres::Row;
use zeroize::Zeroizing;

use crate::crypto::{self, DataKey, SealedKey, StoredKey};
use crate::error::StoreError;
use crate::ids::{InstanceId, OtpDeviceId};
use crate::key_check;
use crate::store::Store;

const SELECT: &str = "
    SELECT data_key_wrapped
      FROM instances
     WHERE instance_id = $1";

const SET: &str = "
    UPDATE instances
       SET data_key_wrapped = $2,
           data_key_kek_id = $3
     WHERE instance_id = $1
       AND data_key_wrapped IS NULL";

/// The data key to encrypt `instance`'s device keys with: `None` without a key-encryption key.
/// On the instance's first encrypted write a new one is stored (the first writer wins, and a
/// database without a key-encryption key yet gets this one: `key_check::pin`).
/// `InstanceNotFound` if the instance does not exist.
pub(crate) async fn for_writing(
    store: &Store,
    client: &ClientWrapper,
    instance: &InstanceId,
) -> Result<Option<DataKey>, StoreError> {
    let Some(cipher) = store.cipher() else {
        return Ok(None);
    };
    let select = client.prepare_cached(SELECT).await?;
    // The second round reads what this or a concurrent writer stored.
    for _ in 0..2 {
        let row = client
            .query_opt(&select, &[&instance.as_str()])
            .await?
            .ok_or(StoreError::InstanceNotFound)?;
        if let Some(wrapped) = row.try_get::<_, Option<Vec<u8>>>("data_key_wrapped")? {
            return cipher.unwrap(instance, &wrapped).map(Some);
        }
        key_check::pin(client, cipher).await?;
        let data_key = DataKey::generate()?;
        let wrapped = cipher.wrap(instance, &data_key)?;
        let set = client.prepare_cached(SET).await?;
        let id = cipher.id();
        if client
            .execute(&set, &[&instance.as_str(), &wrapped, &id.as_slice()])
            .await?
            == 1
        {
            return Ok(Some(data_key));
        }
    }
    Err(StoreError::InstanceNotFound)
}

/// The key of `instance`'s device `device` from `row`, which has the columns `otp_key`,
/// `otp_key_encrypted`, `otp_key_data_key` and `data_key_wrapped` (of the instance).
pub(crate) fn open_row(
    store: &Store,
    instance: &InstanceId,
    device: &OtpDeviceId,
    row: &Row,
) -> Result<OtpKey, StoreError> {
    let bytes = Zeroizing::new(row.try_get::<_, Vec<u8>>("otp_key")?);
    let wrapped: Option<Vec<u8>> = row.try_get("data_key_wrapped")?;
    let sealed = SealedKey {
        bytes: &bytes,
        encrypted: row.try_get("otp_key_encrypted")?,
        data_key: row.try_get("otp_key_data_key")?,
        wrapped_data_key: wrapped.as_deref(),
    };
    crypto::open(store.cipher(), instance, device, &sealed)
}

/// `key` prepared for storage in `instance`'s device `device` (under the instance's data key
/// when a key-encryption key is configured), and the digests an identical stored key may carry
/// (`crypto::digests`). `InstanceNotFound` if the instance does not exist.
pub(crate) async fn seal(
    store: &Store,
    client: &ClientWrapper,
    instance: &InstanceId,
    device: &OtpDeviceId,
    key: &OtpKey,
) -> Result<(StoredKey, [[u8; 32]; 3]), StoreError> {
    let data_key = for_writing(store, client, instance).await?;
    let stored = crypto::seal(data_key.as_ref(), instance, device, key)?;
    let digests = crypto::digests(store.cipher(), data_key.as_ref(), key)?;
    Ok((stored, digests))
}
