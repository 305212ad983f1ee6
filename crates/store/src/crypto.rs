//! OTP keys at rest: encryption with the key-encryption key, and the key
//! digest that lets the database compare keys without seeing them.
//!
//! From the 32-byte key-encryption key (KEK) two subkeys are derived with
//! HMAC-SHA256 and distinct labels: one for ChaCha20-Poly1305, one for the
//! digest. An encrypted key is stored as `nonce (12 bytes) || ciphertext`;
//! the associated data binds it to its instance id and device id, so a
//! ciphertext copied to another row does not decrypt. Without a KEK, keys are
//! stored in plaintext and the digest is keyed by a fixed public label.

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
const ENCRYPTION_LABEL: &[u8] = b"taler-otp/v1/otp-key-encryption";
const DIGEST_LABEL: &[u8] = b"taler-otp/v1/otp-key-digest";
const PLAIN_DIGEST_KEY: &[u8] = b"taler-otp/v1/otp-key-digest/no-key-encryption-key";
const AAD_LABEL: &[u8] = b"taler-otp/v1/otp-key\0";

/// Encrypts and digests OTP keys with subkeys of the KEK.
pub(crate) struct KeyCipher {
    aead: ChaCha20Poly1305,
    digest_key: Zeroizing<[u8; 32]>,
}

/// An OTP key in the form it is written to `otp_devices`.
pub(crate) struct StoredKey {
    /// `otp_key`: the plaintext, or `nonce || ciphertext`.
    pub(crate) bytes: Zeroizing<Vec<u8>>,
    /// `otp_key_encrypted`.
    pub(crate) encrypted: bool,
    /// `otp_key_digest`.
    pub(crate) digest: [u8; 32],
}

impl KeyCipher {
    /// Derives the subkeys of `kek`.
    pub(crate) fn new(kek: &[u8; 32]) -> Result<KeyCipher, StoreError> {
        let aead_key = Zeroizing::new(hmac_sha256(kek, &[ENCRYPTION_LABEL])?);
        let digest_key = Zeroizing::new(hmac_sha256(kek, &[DIGEST_LABEL])?);
        let aead = ChaCha20Poly1305::new(Key::from_slice(aead_key.as_slice()));
        Ok(KeyCipher { aead, digest_key })
    }

    fn encrypt(
        &self,
        instance: &InstanceId,
        device: &OtpDeviceId,
        key: &OtpKey,
    ) -> Result<Zeroizing<Vec<u8>>, StoreError> {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rngs::OsRng
            .try_fill_bytes(&mut nonce)
            .map_err(|_| StoreError::Crypto("no randomness for a nonce"))?;
        let aad = associated_data(instance, device);
        let payload = Payload {
            msg: key.as_bytes(),
            aad: &aad,
        };
        let ciphertext = self
            .aead
            .encrypt(Nonce::from_slice(&nonce), payload)
            .map_err(|_| StoreError::Crypto("encryption failed"))?;
        let mut stored = Zeroizing::new(Vec::with_capacity(NONCE_LEN + ciphertext.len()));
        stored.extend_from_slice(&nonce);
        stored.extend_from_slice(&ciphertext);
        Ok(stored)
    }

    fn decrypt(
        &self,
        instance: &InstanceId,
        device: &OtpDeviceId,
        stored: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, StoreError> {
        let (nonce, ciphertext) = stored
            .split_at_checked(NONCE_LEN)
            .ok_or(StoreError::Crypto("ciphertext too short"))?;
        let aad = associated_data(instance, device);
        let payload = Payload {
            msg: ciphertext,
            aad: &aad,
        };
        self.aead
            .decrypt(Nonce::from_slice(nonce), payload)
            .map(Zeroizing::new)
            .map_err(|_| StoreError::Crypto("wrong key-encryption key or tampered ciphertext"))
    }
}

/// Prepares `key` for storage in `instance`'s device `device`.
pub(crate) fn seal(
    cipher: Option<&KeyCipher>,
    instance: &InstanceId,
    device: &OtpDeviceId,
    key: &OtpKey,
) -> Result<StoredKey, StoreError> {
    let digest = digest(cipher, key)?;
    match cipher {
        Some(cipher) => Ok(StoredKey {
            bytes: cipher.encrypt(instance, device, key)?,
            encrypted: true,
            digest,
        }),
        None => Ok(StoredKey {
            bytes: Zeroizing::new(key.as_bytes().to_vec()),
            encrypted: false,
            digest,
        }),
    }
}

/// Recovers the key stored as `stored` (`otp_key`, `otp_key_encrypted`).
pub(crate) fn open(
    cipher: Option<&KeyCipher>,
    instance: &InstanceId,
    device: &OtpDeviceId,
    stored: &[u8],
    encrypted: bool,
) -> Result<OtpKey, StoreError> {
    let key = if encrypted {
        let cipher = cipher.ok_or(StoreError::Crypto(
            "the key is encrypted but no key-encryption key is configured",
        ))?;
        let plaintext = cipher.decrypt(instance, device, stored)?;
        OtpKey::from_bytes(&plaintext)
    } else {
        OtpKey::from_bytes(stored)
    };
    key.map_err(|err| StoreError::Corrupt(format!("otp key of device {device}: {err}")))
}

/// The digests a stored row may carry for `key`: the one this configuration
/// writes, and the plain one written by a configuration without a KEK (rows
/// stored before a KEK was configured).
pub(crate) fn digests(
    cipher: Option<&KeyCipher>,
    key: &OtpKey,
) -> Result<([u8; 32], [u8; 32]), StoreError> {
    Ok((digest(cipher, key)?, digest(None, key)?))
}

fn digest(cipher: Option<&KeyCipher>, key: &OtpKey) -> Result<[u8; 32], StoreError> {
    let digest_key: &[u8] = match cipher {
        Some(cipher) => cipher.digest_key.as_slice(),
        None => PLAIN_DIGEST_KEY,
    };
    hmac_sha256(digest_key, &[key.as_bytes()])
}

/// `label || len(instance) || instance || len(device) || device`, lengths as
/// big-endian u32, so that no two (instance, device) pairs share it.
fn associated_data(instance: &InstanceId, device: &OtpDeviceId) -> Vec<u8> {
    let mut aad = Vec::with_capacity(AAD_LABEL.len() + 8 + 64 + 512);
    aad.extend_from_slice(AAD_LABEL);
    for part in [instance.as_str(), device.as_str()] {
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

    #[test]
    fn sealed_keys_open_only_with_the_same_kek_and_ids() {
        let (instance, device) = ids();
        let key = OtpKey::from_bytes(b"0123456789abcdef").unwrap();
        let cipher = KeyCipher::new(&[7; 32]).unwrap();
        let stored = seal(Some(&cipher), &instance, &device, &key).unwrap();
        assert!(stored.encrypted);
        assert_ne!(stored.bytes.as_slice(), key.as_bytes());

        let opened = open(Some(&cipher), &instance, &device, &stored.bytes, true).unwrap();
        assert_eq!(opened, key);

        let other_kek = KeyCipher::new(&[8; 32]).unwrap();
        let err = open(Some(&other_kek), &instance, &device, &stored.bytes, true);
        assert!(matches!(err, Err(StoreError::Crypto(_))));
        let other_device = OtpDeviceId::parse("pos-2").unwrap();
        let err = open(Some(&cipher), &instance, &other_device, &stored.bytes, true);
        assert!(matches!(err, Err(StoreError::Crypto(_))));
        let err = open(None, &instance, &device, &stored.bytes, true);
        assert!(matches!(err, Err(StoreError::Crypto(_))));
    }

    #[test]
    fn digests_depend_on_the_kek_and_the_key() {
        let key = OtpKey::from_bytes(b"0123456789abcdef").unwrap();
        let other_key = OtpKey::from_bytes(b"0123456789abcdeX").unwrap();
        let cipher = KeyCipher::new(&[7; 32]).unwrap();
        let (with_kek, plain) = digests(Some(&cipher), &key).unwrap();
        assert_ne!(with_kek, plain);
        assert_eq!(plain, digests(None, &key).unwrap().0);
        assert_ne!(plain, digests(None, &other_key).unwrap().0);
    }
}
