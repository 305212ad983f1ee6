//! Whether the configured key-encryption key (KEK) fits the database, checked before a server
//! or an operator's command reads or writes a device key, so that a missing or wrong key stops
//! the start instead of failing every read.
//!
//! The database records its KEK in `key_encryption_check` (its id and an HMAC of a fixed label
//! under it, which reveals nothing of the key): on the first start with a KEK, on the first
//! data key, and at the end of `taler-otp rekey`. These statements look at the whole database,
//! not one instance: one KEK serves all instances.

use std::fmt;

use deadpool_postgres::ClientWrapper;

use crate::crypto::KeyCipher;
use crate::error::StoreError;
use crate::ids::{InstanceId, OtpDeviceId};
use crate::store::Store;

/// Why the configured key-encryption key does not fit the database.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyMismatch {
    /// Device keys are encrypted, but no key-encryption key is configured.
    Missing {
        /// The id of the database's key-encryption key, when recorded.
        database: Option<String>,
    },
    /// The configured key is not the database's.
    Wrong {
        /// The configured key's id.
        configured: String,
        /// The database's key's id.
        database: String,
    },
    /// Keys encrypted before the database recorded its key do not decrypt with the configured
    /// key.
    Undecryptable {
        /// The configured key's id.
        configured: String,
    },
    /// Device keys are stored in plaintext although a key-encryption key is configured.
    Plaintext {
        /// How many.
        count: u64,
    },
    /// Data keys wrapped under another key than the configured one: a rotation that did not
    /// finish.
    RotationUnfinished {
        /// How many instances.
        count: u64,
        /// The configured key's id.
        configured: String,
    },
    /// `rekey`: the old key given is not the database's.
    OldKeyWrong {
        /// The given old key's id.
        given: String,
        /// The database's key's id.
        database: String,
    },
}

impl fmt::Display for KeyMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyMismatch::Missing { database: Some(id) } => write!(
                f,
                "the device keys in the database are encrypted (key-encryption key id {id}), but no key-encryption key is configured"
            ),
            KeyMismatch::Missing { database: None } => write!(
                f,
                "the device keys in the database are encrypted, but no key-encryption key is configured"
            ),
            KeyMismatch::Wrong {
                configured,
                database,
            } => write!(
                f,
                "the configured key-encryption key (id {configured}) is not the one the device keys in the database are encrypted with (id {database})"
            ),
            KeyMismatch::Undecryptable { configured } => write!(
                f,
                "the encrypted device keys in the database do not decrypt with the configured key-encryption key (id {configured})"
            ),
            KeyMismatch::Plaintext { count } => write!(
                f,
                "{count} device keys are stored in plaintext although a key-encryption key is configured"
            ),
            KeyMismatch::RotationUnfinished { count, configured } => write!(
                f,
                "the data keys of {count} instances are wrapped under another key-encryption key than the configured one (id {configured}): a key rotation has not finished"
            ),
            KeyMismatch::OldKeyWrong { given, database } => write!(
                f,
                "the old key-encryption key given (id {given}) is not the one the device keys in the database are encrypted with (id {database})"
            ),
        }
    }
}

impl std::error::Error for KeyMismatch {}

/// What [`check`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyStatus {
    /// The id of the database's key-encryption key (16 hex digits); `None`: no key recorded.
    pub key_id: Option<String>,
    /// Device keys stored in plaintext.
    pub plaintext: u64,
    /// Device keys encrypted in the first form, directly under the key-encryption key (written
    /// before migration 8); `taler-otp rekey` moves them under their instance's data key.
    pub first_form: u64,
    /// Device keys encrypted under their instance's data key.
    pub under_data_keys: u64,
}

const STATUS: &str = "
    SELECT (SELECT kek_id FROM key_encryption_check) AS kek_id,
           (SELECT kek_check FROM key_encryption_check) AS kek_check,
           count(*) FILTER (WHERE NOT otp_key_encrypted) AS plaintext,
           count(*) FILTER (WHERE otp_key_encrypted AND NOT otp_key_data_key) AS first_form,
           count(*) FILTER (WHERE otp_key_encrypted AND otp_key_data_key) AS under_data_keys,
           (SELECT count(*)
              FROM instances
             WHERE data_key_kek_id IS NOT NULL
               AND data_key_kek_id IS DISTINCT FROM $1::bytea) AS foreign_wrapped
      FROM otp_devices";

const FIRST_FORM_SAMPLE: &str = "
    SELECT i.instance_id, d.otp_device_id, d.otp_key
      FROM otp_devices d
      JOIN instances i USING (instance_serial)
     WHERE d.otp_key_encrypted
       AND NOT d.otp_key_data_key
     LIMIT 1";

const PIN: &str = "
    INSERT INTO key_encryption_check (kek_id, kek_check)
    VALUES ($1, $2)
    ON CONFLICT (singleton) DO NOTHING";

const PINNED: &str = "SELECT kek_id, kek_check FROM key_encryption_check";

/// Checks the configured key-encryption key against the database and, when it fits and none is
/// recorded yet, records it. Fails with [`StoreError::KeyMismatch`] when device keys are
/// encrypted and no key is configured, when the configured key is not the database's (or, for
/// keys encrypted before the database recorded its key, does not decrypt one of them), when a
/// rotation did not finish, and, unless `accept_plaintext`, when device keys are stored in
/// plaintext although a key is configured.
#[tracing::instrument(skip(store))]
pub async fn check(store: &Store, accept_plaintext: bool) -> Result<KeyStatus, StoreError> {
    let client = store.client().await?;
    let cipher = store.cipher();
    let configured_id = cipher.map(KeyCipher::id);
    let stmt = client.prepare_cached(STATUS).await?;
    let row = client
        .query_one(&stmt, &[&configured_id.as_ref().map(|id| id.as_slice())])
        .await?;
    let pinned_id: Option<Vec<u8>> = row.try_get("kek_id")?;
    let pinned_check: Option<Vec<u8>> = row.try_get("kek_check")?;
    let count = |column: &str| -> Result<u64, StoreError> {
        let value: i64 = row.try_get(column)?;
        Ok(u64::try_from(value).unwrap_or(0))
    };
    let mut status = KeyStatus {
        key_id: pinned_id.as_deref().map(hex),
        plaintext: count("plaintext")?,
        first_form: count("first_form")?,
        under_data_keys: count("under_data_keys")?,
    };
    let foreign_wrapped = count("foreign_wrapped")?;
    let Some(cipher) = cipher else {
        if status.key_id.is_some()
            || status.first_form > 0
            || status.under_data_keys > 0
            || foreign_wrapped > 0
        {
            return Err(KeyMismatch::Missing {
                database: status.key_id,
            }
            .into());
        }
        return Ok(status);
    };
    match (&pinned_id, &pinned_check) {
        (Some(id), Some(check)) if check.as_slice() != cipher.check().as_slice() => {
            return Err(KeyMismatch::Wrong {
                configured: hex(&cipher.id()),
                database: hex(id),
            }
            .into());
        }
        (Some(_), Some(_)) => {}
        _ => {
            if status.first_form > 0 {
                first_form_decrypts(&client, cipher).await?;
            }
            if foreign_wrapped == 0 {
                pin(&client, cipher).await?;
                status.key_id = Some(hex(&cipher.id()));
            }
        }
    }
    if foreign_wrapped > 0 {
        return Err(KeyMismatch::RotationUnfinished {
            count: foreign_wrapped,
            configured: hex(&cipher.id()),
        }
        .into());
    }
    if status.plaintext > 0 && !accept_plaintext {
        return Err(KeyMismatch::Plaintext {
            count: status.plaintext,
        }
        .into());
    }
    Ok(status)
}

/// Records `cipher`'s key as the database's unless one is recorded; fails with
/// `KeyMismatch::Wrong` when another is.
pub(crate) async fn pin(client: &ClientWrapper, cipher: &KeyCipher) -> Result<(), StoreError> {
    let insert = client.prepare_cached(PIN).await?;
    let id = cipher.id();
    let check = cipher.check();
    client
        .execute(&insert, &[&id.as_slice(), &check.as_slice()])
        .await?;
    let select = client.prepare_cached(PINNED).await?;
    let row = client.query_one(&select, &[]).await?;
    let pinned_check: Vec<u8> = row.try_get("kek_check")?;
    if pinned_check.as_slice() == check.as_slice() {
        Ok(())
    } else {
        let pinned_id: Vec<u8> = row.try_get("kek_id")?;
        Err(KeyMismatch::Wrong {
            configured: hex(&id),
            database: hex(&pinned_id),
        }
        .into())
    }
}

/// Fails with `KeyMismatch::Undecryptable` unless a key stored in the first form decrypts.
async fn first_form_decrypts(client: &ClientWrapper, cipher: &KeyCipher) -> Result<(), StoreError> {
    let stmt = client.prepare_cached(FIRST_FORM_SAMPLE).await?;
    let Some(row) = client.query_opt(&stmt, &[]).await? else {
        return Ok(());
    };
    let instance: String = row.try_get("instance_id")?;
    let device: String = row.try_get("otp_device_id")?;
    let stored: Vec<u8> = row.try_get("otp_key")?;
    let decrypts = match (InstanceId::parse(&instance), OtpDeviceId::parse(&device)) {
        (Ok(instance), Ok(device)) => cipher.open_first_form(&instance, &device, &stored).is_ok(),
        _ => false,
    };
    if decrypts {
        Ok(())
    } else {
        Err(KeyMismatch::Undecryptable {
            configured: hex(&cipher.id()),
        }
        .into())
    }
}

/// A key id in lower-case hexadecimal.
pub(crate) fn hex(id: &[u8]) -> String {
    data_encoding::HEXLOWER.encode(id)
}
