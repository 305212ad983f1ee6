//! OTP keys at rest: the key hierarchy, and the key digest that lets the database compare keys
//! without seeing them.
//!
//! - The key-encryption key (KEK, 32 bytes) comes from the configuration and never reaches the
//!   database. HMAC-SHA256 under it with distinct labels gives the wrapping key, its id
//!   (8 bytes, shown in messages and stored beside what it wrapped), its check value (stored
//!   once, see `key_check.rs`) and the two keys of the first form (below).
//! - Each instance has a data key (32 random bytes), stored in `instances.data_key_wrapped` as
//!   `nonce (12 bytes) || ChaCha20-Poly1305 ciphertext` under the wrapping key, with the
//!   instance id as associated data. HMAC-SHA256 under the data key gives the key that
//!   encrypts the instance's device keys and the key of their digests. Deleting the instance
//!   deletes its data key.
//! - A device key is stored as `nonce || ciphertext` under its instance's data key; the
//!   associated data binds it to its instance id and device id, so a ciphertext copied to
//!   another row does not decrypt.
//!
//! The first form (rows written before migration 8: `otp_key_data_key` false) encrypted device
//! keys directly under a subkey of the KEK; such rows are read, and `taler-otp rekey` moves them
//! to the second form. Without a KEK, keys are stored in plaintext and the digest is keyed by a
//! fixed public label.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use hmac::{Hmac, Mac};
use otp_algo::OtpKey;
use rand::RngCore;
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::error::StoreError;
use crate::ids::{InstanceId, OtpDeviceId};

const NONCE_LEN: usize = 12;
// The first form's labels.
const ENCRYPTION_LABEL: &[u8] = b"taler-otp/v1/otp-key-encryption";
const DIGEST_LABEL: &[u8] = b"taler-otp/v1/otp-key-digest";
const PLAIN_DIGEST_KEY: &[u8] = b"taler-otp/v1/otp-key-digest/no-key-encryption-key";
const AAD_LABEL: &[u8] = b"taler-otp/v1/otp-key\0";
// The second form's labels.
const WRAP_LABEL: &[u8] = b"taler-otp/v2/data-key-wrapping";
const WRAP_AAD_LABEL: &[u8] = b"taler-otp/v2/data-key\0";
const KEK_ID_LABEL: &[u8] = b"taler-otp/v2/kek-id";
const KEK_CHECK_LABEL: &[u8] = b"taler-otp/v2/kek-check";
const DATA_ENCRYPTION_LABEL: &[u8] = b"taler-otp/v2/otp-key-encryption";
const DATA_DIGEST_LABEL: &[u8] = b"taler-otp/v2/otp-key-digest";
const DATA_AAD_LABEL: &[u8] = b"taler-otp/v2/otp-key\0";

/// The keys derived from the KEK.
pub(crate) struct KeyCipher {
    wrap: ChaCha20Poly1305,
    legacy: ChaCha20Poly1305,
    legacy_digest_key: Zeroizing<[u8; 32]>,
    id: [u8; 8],
    check: [u8; 32],
}

/// An instance's data key and the keys derived from it.
pub(crate) struct DataKey {
    raw: Zeroizing<[u8; 32]>,
    aead: ChaCha20Poly1305,
    digest_key: Zeroizing<[u8; 32]>,
}

/// An OTP key in the form it is written to `otp_devices`.
pub(crate) struct StoredKey {
    /// `otp_key`: the plaintext, or `nonce || ciphertext`.
    pub(crate) bytes: Zeroizing<Vec<u8>>,
    /// `otp_key_encrypted`.
    pub(crate) encrypted: bool,
    /// `otp_key_data_key`: encrypted under the instance's data key.
    pub(crate) data_key: bool,
    /// `otp_key_digest`.
    pub(crate) digest: [u8; 32],
}

/// An OTP key as read from a row of `otp_devices` joined with its instance.
pub(crate) struct SealedKey<'a> {
    /// `otp_key`.
    pub(crate) bytes: &'a [u8],
    /// `otp_key_encrypted`.
    pub(crate) encrypted: bool,
    /// `otp_key_data_key`.
    pub(crate) data_key: bool,
    /// `instances.data_key_wrapped`.
    pub(crate) wrapped_data_key: Option<&'a [u8]>,
}

impl KeyCipher {
    /// Derives the keys of `kek`.
    pub(crate) fn new(kek: &[u8; 32]) -> Result<KeyCipher, StoreError> {
        let wrap_key = Zeroizing::new(hmac_sha256(kek, &[WRAP_LABEL])?);
        let legacy_key = Zeroizing::new(hmac_sha256(kek, &[ENCRYPTION_LABEL])?);
        let id_bytes = hmac_sha256(kek, &[KEK_ID_LABEL])?;
        let mut id = [0u8; 8];
        id.copy_from_slice(id_bytes.get(..8).unwrap_or(&[0; 8]));
        Ok(KeyCipher {
            wrap: ChaCha20Poly1305::new(Key::from_slice(wrap_key.as_slice())),
            legacy: ChaCha20Poly1305::new(Key::from_slice(legacy_key.as_slice())),
            legacy_digest_key: Zeroizing::new(hmac_sha256(kek, &[DIGEST_LABEL])?),
            id,
            check: hmac_sha256(kek, &[KEK_CHECK_LABEL])?,
        })
    }

    /// The KEK's id: stored beside what it wrapped, shown in messages.
    pub(crate) fn id(&self) -> [u8; 8] {
        self.id
    }

    /// The KEK's check value (`key_encryption_check.kek_check`).
    pub(crate) fn check(&self) -> [u8; 32] {
        self.check
    }

    /// `data_key` wrapped for `instance` (`instances.data_key_wrapped`).
    pub(crate) fn wrap(
        &self,
        instance: &InstanceId,
        data_key: &DataKey,
    ) -> Result<Vec<u8>, StoreError> {
        let aad = associated_data(WRAP_AAD_LABEL, &[instance.as_str()]);
        Ok(seal_bytes(&self.wrap, &aad, data_key.raw.as_slice())?.to_vec())
    }

    /// The data key of `instance` from its wrapped form.
    pub(crate) fn unwrap(
        &self,
        instance: &InstanceId,
        wrapped: &[u8],
    ) -> Result<DataKey, StoreError> {
        let aad = associated_data(WRAP_AAD_LABEL, &[instance.as_str()]);
        let raw = open_bytes(&self.wrap, &aad, wrapped).map_err(|_| {
            StoreError::Crypto(
                "the instance's data key does not unwrap with this key-encryption key",
            )
        })?;
        let raw: [u8; 32] = raw
            .as_slice()
            .try_into()
            .map_err(|_| StoreError::Crypto("a data key is not 32 bytes"))?;
        DataKey::from_raw(Zeroizing::new(raw))
    }

    /// Decrypts a key stored in the first form.
    pub(crate) fn open_first_form(
        &self,
        instance: &InstanceId,
        device: &OtpDeviceId,
        stored: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, StoreError> {
        let aad = associated_data(AAD_LABEL, &[instance.as_str(), device.as_str()]);
        open_bytes(&self.legacy, &aad, stored)
    }

    /// Encrypts a key in the first form (tests of the upgrade path only).
    #[cfg(any(test, feature = "testing"))]
    pub(crate) fn seal_first_form(
        &self,
        instance: &InstanceId,
        device: &OtpDeviceId,
        key: &OtpKey,
    ) -> Result<Zeroizing<Vec<u8>>, StoreError> {
        let aad = associated_data(AAD_LABEL, &[instance.as_str(), device.as_str()]);
        seal_bytes(&self.legacy, &aad, key.as_bytes())
    }
}

impl DataKey {
    /// A new random data key.
    pub(crate) fn generate() -> Result<DataKey, StoreError> {
        let mut raw = Zeroizing::new([0u8; 32]);
        rand::rngs::OsRng
            .try_fill_bytes(raw.as_mut_slice())
            .map_err(|_| StoreError::Crypto("no randomness for a data key"))?;
        DataKey::from_raw(raw)
    }

    fn from_raw(raw: Zeroizing<[u8; 32]>) -> Result<DataKey, StoreError> {
        let aead_key = Zeroizing::new(hmac_sha256(raw.as_slice(), &[DATA_ENCRYPTION_LABEL])?);
        let digest_key = Zeroizing::new(hmac_sha256(raw.as_slice(), &[DATA_DIGEST_LABEL])?);
        Ok(DataKey {
            aead: ChaCha20Poly1305::new(Key::from_slice(aead_key.as_slice())),
            digest_key,
            raw,
        })
    }
}

/// Prepares `key` for storage in `instance`'s device `device`: encrypted under `data_key`
/// when there is one, else in plaintext.
pub(crate) fn seal(
    data_key: Option<&DataKey>,
    instance: &InstanceId,
    device: &OtpDeviceId,
    key: &OtpKey,
) -> Result<StoredKey, StoreError> {
    match data_key {
        Some(data_key) => {
            let aad = associated_data(DATA_AAD_LABEL, &[instance.as_str(), device.as_str()]);
            Ok(StoredKey {
                bytes: seal_bytes(&data_key.aead, &aad, key.as_bytes())?,
                encrypted: true,
                data_key: true,
                digest: hmac_sha256(data_key.digest_key.as_slice(), &[key.as_bytes()])?,
            })
        }
        None => Ok(StoredKey {
            bytes: Zeroizing::new(key.as_bytes().to_vec()),
            encrypted: false,
            data_key: false,
            digest: plain_digest(key)?,
        }),
    }
}

/// Recovers the key of `instance`'s device `device` from its row.
///
/// A row marked as under the data key that does not open so is tried in the first form too:
/// a previous binary, running beside this one during an upgrade, may have changed its key.
pub(crate) fn open(
    cipher: Option<&KeyCipher>,
    instance: &InstanceId,
    device: &OtpDeviceId,
    sealed: &SealedKey<'_>,
) -> Result<OtpKey, StoreError> {
    let key = if sealed.encrypted {
        let cipher = cipher.ok_or(StoreError::Crypto(
            "the key is encrypted but no key-encryption key is configured",
        ))?;
        let under_data_key = match (sealed.data_key, sealed.wrapped_data_key) {
            (false, _) => None,
            (true, None) => {
                return Err(StoreError::Corrupt(format!(
                    "otp key of device {device} is under a data key its instance does not have"
                )));
            }
            (true, Some(wrapped)) => {
                let data_key = cipher.unwrap(instance, wrapped)?;
                let aad = associated_data(DATA_AAD_LABEL, &[instance.as_str(), device.as_str()]);
                open_bytes(&data_key.aead, &aad, sealed.bytes).ok()
            }
        };
        let plaintext = match under_data_key {
            Some(plaintext) => plaintext,
            None => cipher.open_first_form(instance, device, sealed.bytes)?,
        };
        OtpKey::from_bytes(&plaintext)
    } else {
        OtpKey::from_bytes(sealed.bytes)
    };
    key.map_err(|err| StoreError::Corrupt(format!("otp key of device {device}: {err}")))
}

/// The digests a stored row may carry for `key`: the one written with `data_key`, the plain
/// one (rows written without a KEK) and the first form's (rows written before migration 8).
pub(crate) fn digests(
    cipher: Option<&KeyCipher>,
    data_key: Option<&DataKey>,
    key: &OtpKey,
) -> Result<[[u8; 32]; 3], StoreError> {
    let plain = plain_digest(key)?;
    let written = match data_key {
        Some(data_key) => hmac_sha256(data_key.digest_key.as_slice(), &[key.as_bytes()])?,
        None => plain,
    };
    let first_form = match cipher {
        Some(cipher) => hmac_sha256(cipher.legacy_digest_key.as_slice(), &[key.as_bytes()])?,
        None => plain,
    };
    Ok([written, plain, first_form])
}

fn plain_digest(key: &OtpKey) -> Result<[u8; 32], StoreError> {
    hmac_sha256(PLAIN_DIGEST_KEY, &[key.as_bytes()])
}

/// `nonce || ciphertext` of `plaintext` under `aead` with a random nonce.
fn seal_bytes(
    aead: &ChaCha20Poly1305,
    aad: &[u8],
    plaintext: &[u8],
) -> Result<Zeroizing<Vec<u8>>, StoreError> {
    let mut nonce = [0u8; NONCE_LEN];
    rand::rngs::OsRng
        .try_fill_bytes(&mut nonce)
        .map_err(|_| StoreError::Crypto("no randomness for a nonce"))?;
    let payload = Payload {
        msg: plaintext,
        aad,
    };
    let ciphertext = aead
        .encrypt(Nonce::from_slice(&nonce), payload)
        .map_err(|_| StoreError::Crypto("encryption failed"))?;
    let mut stored = Zeroizing::new(Vec::with_capacity(NONCE_LEN + ciphertext.len()));
    stored.extend_from_slice(&nonce);
    stored.extend_from_slice(&ciphertext);
    Ok(stored)
}

fn open_bytes(
    aead: &ChaCha20Poly1305,
    aad: &[u8],
    stored: &[u8],
) -> Result<Zeroizing<Vec<u8>>, StoreError> {
    let (nonce, ciphertext) = stored
        .split_at_checked(NONCE_LEN)
        .ok_or(StoreError::Crypto("ciphertext too short"))?;
    let payload = Payload {
        msg: ciphertext,
        aad,
    };
    aead.decrypt(Nonce::from_slice(nonce), payload)
        .map(Zeroizing::new)
        .map_err(|_| StoreError::Crypto("wrong key-encryption key or tampered ciphertext"))
}

/// `label || len(part) || part || …`, lengths as big-endian u32, so that no two lists of
/// parts share it.
fn associated_data(label: &[u8], parts: &[&str]) -> Vec<u8> {
    let mut aad = Vec::with_capacity(label.len() + 8 + 64 + 512);
    aad.extend_from_slice(label);
    for part in parts {
        let len = u32::try_from(part.len()).unwrap_or(u32::MAX);
        aad.extend_from_slice(&len.to_be_bytes());
        aad.extend_from_slice(part.as_bytes());
    }
    aad
}

fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> Result<[u8; 32], StoreError> {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key)
        .map_err(|_| StoreError::Crypto("invalid hmac key"))?;
    for part in parts {
        mac.update(part);
    }
    Ok(mac.finalize().into_bytes().into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids() -> (InstanceId, OtpDeviceId) {
        (
            InstanceId::parse("shop").unwrap(),
            OtpDeviceId::parse("pos-1").unwrap(),
        )
    }

    fn sealed<'a>(stored: &'a StoredKey, wrapped: Option<&'a [u8]>) -> SealedKey<'a> {
        SealedKey {
            bytes: &stored.bytes,
            encrypted: stored.encrypted,
            data_key: stored.data_key,
            wrapped_data_key: wrapped,
        }
    }

    #[test]
    fn sealed_keys_open_only_with_the_same_kek_and_ids() {
        let (instance, device) = ids();
        let key = OtpKey::from_bytes(b"0123456789abcdef").unwrap();
        let cipher = KeyCipher::new(&[7; 32]).unwrap();
        let data_key = DataKey::generate().unwrap();
        let wrapped = cipher.wrap(&instance, &data_key).unwrap();
        assert_eq!(wrapped.len(), 60);
        let stored = seal(Some(&data_key), &instance, &device, &key).unwrap();
        assert!(stored.encrypted && stored.data_key);
        assert_ne!(stored.bytes.as_slice(), key.as_bytes());
        let row = sealed(&stored, Some(&wrapped));

        assert_eq!(open(Some(&cipher), &instance, &device, &row).unwrap(), key);
        let other_kek = KeyCipher::new(&[8; 32]).unwrap();
        let err = open(Some(&other_kek), &instance, &device, &row);
        assert!(matches!(err, Err(StoreError::Crypto(_))));
        let other_device = OtpDeviceId::parse("pos-2").unwrap();
        let err = open(Some(&cipher), &instance, &other_device, &row);
        assert!(matches!(err, Err(StoreError::Crypto(_))));
        let other_instance = InstanceId::parse("other").unwrap();
        let err = open(Some(&cipher), &other_instance, &device, &row);
        assert!(matches!(err, Err(StoreError::Crypto(_))));
        let err = open(None, &instance, &device, &row);
        assert!(matches!(err, Err(StoreError::Crypto(_))));
    }

    #[test]
    fn first_form_keys_still_open_even_when_marked_as_under_the_data_key() {
        let (instance, device) = ids();
        let key = OtpKey::from_bytes(b"0123456789abcdef").unwrap();
        let cipher = KeyCipher::new(&[7; 32]).unwrap();
        let wrapped = cipher
            .wrap(&instance, &DataKey::generate().unwrap())
            .unwrap();
        let bytes = cipher.seal_first_form(&instance, &device, &key).unwrap();
        for data_key in [false, true] {
            let row = SealedKey {
                bytes: &bytes,
                encrypted: true,
                data_key,
                wrapped_data_key: Some(&wrapped),
            };
            assert_eq!(open(Some(&cipher), &instance, &device, &row).unwrap(), key);
        }
    }

    #[test]
    fn digests_depend_on_the_data_key_and_the_key() {
        let key = OtpKey::from_bytes(b"0123456789abcdef").unwrap();
        let other_key = OtpKey::from_bytes(b"0123456789abcdeX").unwrap();
        let cipher = KeyCipher::new(&[7; 32]).unwrap();
        let data_key = DataKey::generate().unwrap();
        let [written, plain, first_form] = digests(Some(&cipher), Some(&data_key), &key).unwrap();
        assert_ne!(written, plain);
        assert_ne!(first_form, plain);
        assert_ne!(written, first_form);
        assert_eq!(
            written,
            seal(Some(&data_key), &ids().0, &ids().1, &key)
                .unwrap()
                .digest
        );
        assert_eq!(plain, digests(None, None, &key).unwrap()[0]);
        assert_ne!(plain, digests(None, None, &other_key).unwrap()[0]);
        let other_data_key = DataKey::generate().unwrap();
        assert_ne!(
            written,
            digests(Some(&cipher), Some(&other_data_key), &key).unwrap()[0]
        );
    }

    #[test]
    fn kek_ids_and_checks_differ_between_keys_and_reveal_nothing_of_the_wrapping() {
        let one = KeyCipher::new(&[1; 32]).unwrap();
        let two = KeyCipher::new(&[2; 32]).unwrap();
        assert_ne!(one.id(), two.id());
        assert_ne!(one.check(), two.check());
        assert_eq!(one.id(), KeyCipher::new(&[1; 32]).unwrap().id());
        let (instance, _) = ids();
        let wrapped = one.wrap(&instance, &DataKey::generate().unwrap()).unwrap();
        assert!(two.unwrap(&instance, &wrapped).is_err());
        let other = InstanceId::parse("other").unwrap();
        assert!(one.unwrap(&other, &wrapped).is_err());
        assert!(one.unwrap(&instance, &wrapped).is_ok());
    }
}
