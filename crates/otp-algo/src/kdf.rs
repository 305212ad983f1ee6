//! GNUnet's key derivation function (`GNUNET_CRYPTO_kdf`) as Taler uses it.

use hkdf::Hkdf;
use sha2::{Sha256, Sha512};
use zeroize::Zeroize;

/// 64 bytes of `GNUNET_CRYPTO_kdf(salt, ikm)` with no context
/// (`docs/confirmation.md` "The KDF").
///
/// This is RFC 5869 HKDF with two hashes: the extract step is HMAC-SHA512
/// (`PRK = HMAC-SHA512(salt, ikm)`, all 64 bytes kept) and the expand step is
/// HMAC-SHA256 keyed with that PRK.
pub fn gnunet_kdf(salt: &[u8], ikm: &[u8]) -> [u8; 64] {
    let (mut prk, _) = Hkdf::<Sha512>::extract(Some(salt), ikm);
    let mut okm = [0u8; 64];
    let expanded = match Hkdf::<Sha256>::from_prk(&prk) {
        Ok(hkdf) => hkdf.expand(&[], &mut okm).is_ok(),
        Err(_) => false,
    };
    prk.as_mut_slice().zeroize();
    if !expanded {
        // HKDF-SHA256 needs a PRK of at least 32 bytes (this one has 64) and
        // allows up to 255 * 32 bytes of output (we take 64).
        unreachable!("HKDF-SHA256 accepts a 64-byte PRK and 64 bytes of output");
    }
    okm
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vector_from_upstream() {
        // `wp-k32-lower-eur1.5` in tests/data/pos-confirmation.json.
        let salt = [
            0, 0, 0, 0, 0, 0, 0, 1, 0x02, 0xfa, 0xf0, 0x80, b'E', b'U', b'R', 0, 0, 0, 0, 0, 0, 0,
            0, 0,
        ];
        let ikm = [
            0x37, 0xb5, 0x87, 0x33, 0x83, 0xd4, 0x85, 0xb5, 0x73, 0x8a, 0xa5, 0x09, 0x99, 0xf6,
            0x30, 0x18, 0xbe, 0x71, 0x12, 0xe1, 0xb0, 0xb7, 0xd1, 0x24, 0xfd, 0x6a, 0x1c, 0x37,
            0x1d, 0xef, 0x7b, 0xa3,
        ];
        assert_eq!(
            data_encoding::HEXLOWER.encode(&gnunet_kdf(&salt, &ikm)),
            "10be0dbb5a2a0b7e26db0e8a5e43b69a4a0983f35029e913ec18ebefa2518487\
             6834a2d790fbb308f4887471c482672a7f2fa81bf4ab56f970f4bf4f9edf9211"
        );
    }
}
