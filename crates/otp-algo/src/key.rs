//! Device keys: RFC 3548 base32 decoding and the secret [`OtpKey`] type.

use std::fmt;

use subtle::ConstantTimeEq;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::error::KeyError;

/// The fewest bytes a device key may decode to (80 bits; `docs/api.md` §4).
pub const MIN_KEY_BYTES: usize = 10;

/// A device's secret key: at least [`MIN_KEY_BYTES`] raw bytes.
///
/// The bytes are zeroized on drop, equality is constant time, and `Debug`
/// prints `OtpKey(..)`, never the bytes.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct OtpKey {
    bytes: Vec<u8>,
}

impl OtpKey {
    /// Parses a base32 key as the API accepts it: [`decode_base32`]'s rules,
    /// then at least [`MIN_KEY_BYTES`] decoded bytes (`docs/api.md` §4).
    pub fn from_base32(s: &str) -> Result<OtpKey, KeyError> {
        if s.is_empty() {
            return Err(KeyError::Empty);
        }
        let bytes = decode_base32(s)?;
        OtpKey::from_vec(bytes)
    }

    /// Wraps raw key bytes (for instance read back from storage), with the
    /// same minimum length as [`OtpKey::from_base32`].
    pub fn from_bytes(bytes: &[u8]) -> Result<OtpKey, KeyError> {
        OtpKey::from_vec(bytes.to_vec())
    }

    fn from_vec(bytes: Vec<u8>) -> Result<OtpKey, KeyError> {
        // Constructing the key first makes the bytes zeroized on every path.
        let key = OtpKey { bytes };
        if key.bytes.len() < MIN_KEY_BYTES {
            return Err(KeyError::TooShort {
                bytes: key.bytes.len(),
            });
        }
        Ok(key)
    }

    /// The raw key bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Canonical base32 form (upper case, no padding), for display in the CLI
    /// only; the API never returns a key.
    pub fn to_base32(&self) -> String {
        data_encoding::BASE32_NOPAD.encode(&self.bytes)
    }
}

impl fmt::Debug for OtpKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("OtpKey(..)")
    }
}

impl PartialEq for OtpKey {
    fn eq(&self, other: &OtpKey) -> bool {
        // Keys of different lengths compare unequal; only the length leaks.
        self.bytes.ct_eq(&other.bytes).into()
    }
}

impl Eq for OtpKey {}

/// Decodes RFC 3548 base32 as upstream GNU Taler does, with the API's padding
/// rules and without a minimum length (`docs/confirmation.md` "Key decoding").
///
/// - The alphabet is `A-Z2-7`; lower case is accepted.
/// - 5 bits per character, most significant first; every complete byte is
///   emitted and a final group of fewer than 8 bits is dropped unchecked
///   (`MZXW6` and `MZXW7` both decode to `foo`).
/// - The input may end with 1, 2 (as upstream), 3, 4 or 6 (RFC 4648) `=`;
///   padding is not checked against the data length. A `=` anywhere else,
///   whitespace and every other character are errors.
/// - The empty string decodes to no bytes, as upstream.
pub fn decode_base32(s: &str) -> Result<Vec<u8>, KeyError> {
    let data = s.trim_end_matches('=');
    // `=` is one byte, so the byte difference is the padding length.
    let padding = s.len() - data.len();
    // Sized exactly, so no reallocation leaves copies of key bytes behind.
    let mut out = Zeroizing::new(Vec::with_capacity(data.len() * 5 / 8));
    let mut acc: u16 = 0;
    let mut bits: u32 = 0;
    for (position, character) in data.chars().enumerate() {
        let value = match character {
            'A'..='Z' => u32::from(character) - u32::from('A'),
            'a'..='z' => u32::from(character) - u32::from('a'),
            '2'..='7' => u32::from(character) - u32::from('2') + 26,
            '=' => return Err(KeyError::MisplacedPadding { position }),
            _ => {
                return Err(KeyError::InvalidCharacter {
                    position,
                    character,
                });
            }
        };
        // At most 7 pending bits plus 5 new ones: fits in a u16.
        acc = (acc << 5) | value as u16;
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    acc.zeroize();
    if !matches!(padding, 0..=4 | 6) {
        return Err(KeyError::InvalidPadding);
    }
    Ok(std::mem::take(&mut *out))
}

#[cfg(test)]
mod tests {
    use super::*;

    const RFC_KEY: &str = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ";

    #[test]
    fn trailing_bits_are_dropped_unchecked() {
        assert_eq!(decode_base32("MZXW6").unwrap(), b"foo");
        assert_eq!(decode_base32("MZXW7").unwrap(), b"foo");
        assert_eq!(decode_base32("mzxw6").unwrap(), b"foo");
        assert_eq!(decode_base32("MZXW6YQ").unwrap(), b"foob");
        assert_eq!(decode_base32("MZXW6YTB").unwrap(), b"fooba");
        assert_eq!(decode_base32("MZXW6YTBOI").unwrap(), b"foobar");
        assert_eq!(decode_base32("A").unwrap(), b"");
    }

    #[test]
    fn accepted_paddings_decode_to_the_same_bytes() {
        for pad in ["", "=", "==", "===", "====", "======"] {
            assert_eq!(
                decode_base32(&format!("MZXW6{pad}")).unwrap(),
                b"foo",
                "{pad:?}"
            );
            let key = OtpKey::from_base32(&format!("{RFC_KEY}{pad}")).unwrap();
            assert_eq!(key.as_bytes(), b"12345678901234567890", "{pad:?}");
        }
    }

    #[test]
    fn other_paddings_are_rejected() {
        for pad in ["=====", "=======", "========"] {
            assert_eq!(
                decode_base32(&format!("MZXW6{pad}")),
                Err(KeyError::InvalidPadding),
                "{pad:?}"
            );
        }
    }

    #[test]
    fn padding_in_the_middle_is_rejected() {
        assert_eq!(
            decode_base32("MZ=XW6"),
            Err(KeyError::MisplacedPadding { position: 2 })
        );
        assert_eq!(
            decode_base32("MZXW6=A="),
            Err(KeyError::MisplacedPadding { position: 5 })
        );
        assert_eq!(
            decode_base32("=MZXW6"),
            Err(KeyError::MisplacedPadding { position: 0 })
        );
    }

    #[test]
    fn whitespace_and_foreign_characters_are_rejected() {
        for (input, position, character) in [
            (" MZXW6", 0, ' '),
            ("MZXW6 ", 5, ' '),
            ("MZ XW6", 2, ' '),
            ("MZXW6\n", 5, '\n'),
            ("MZ\tXW6", 2, '\t'),
            ("MZXW1", 4, '1'),
            ("MZXW8", 4, '8'),
            ("MZXW0", 4, '0'),
            ("MZ-XW", 2, '-'),
            ("äMZXW", 0, 'ä'),
            ("MZäX=", 2, 'ä'),
        ] {
            assert_eq!(
                decode_base32(input),
                Err(KeyError::InvalidCharacter {
                    position,
                    character
                }),
                "{input:?}"
            );
        }
        assert!(OtpKey::from_base32(&format!("{RFC_KEY} ")).is_err());
    }

    #[test]
    fn empty_and_short_keys() {
        assert_eq!(decode_base32("").unwrap(), b"");
        assert_eq!(decode_base32("=").unwrap(), b"");
        assert_eq!(OtpKey::from_base32(""), Err(KeyError::Empty));
        assert_eq!(
            OtpKey::from_base32("===="),
            Err(KeyError::TooShort { bytes: 0 })
        );
        // 15 characters = 75 bits = 9 bytes: fine for upstream, too weak for us.
        let nine = "AAISEM2EKVTHPCE";
        assert_eq!(decode_base32(nine).unwrap().len(), 9);
        let err = OtpKey::from_base32(nine).unwrap_err();
        assert_eq!(err, KeyError::TooShort { bytes: 9 });
        assert_eq!(
            err.to_string(),
            "key decodes to 9 bytes; at least 10 bytes (80 bits) are required"
        );
        assert_eq!(
            OtpKey::from_bytes(&[0; 9]),
            Err(KeyError::TooShort { bytes: 9 })
        );
        assert_eq!(
            OtpKey::from_base32("AAISEM2EKVTHPCEZ").unwrap().as_bytes(),
            [0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99]
        );
    }

    #[test]
    fn to_base32_is_canonical() {
        let key = OtpKey::from_base32("gezdgnbvgy3tqojqgezdgnbvgy3tqojq==").unwrap();
        assert_eq!(key.to_base32(), RFC_KEY);
        let odd = OtpKey::from_bytes(b"12345678901").unwrap();
        assert_eq!(OtpKey::from_base32(&odd.to_base32()).unwrap(), odd);
    }

    #[test]
    fn debug_hides_the_bytes() {
        let key = OtpKey::from_bytes(b"12345678901234567890").unwrap();
        let debug = format!("{key:?}");
        assert_eq!(debug, "OtpKey(..)");
        assert!(!debug.contains("49"));
        assert!(!debug.contains("1234"));
        let nested = format!("{:?}", Some(key.clone()));
        assert!(!nested.contains("1234") && !nested.contains("49, 50"));
    }

    #[test]
    fn equality() {
        let a = OtpKey::from_bytes(b"12345678901234567890").unwrap();
        let b = OtpKey::from_base32(RFC_KEY).unwrap();
        let c = OtpKey::from_bytes(b"12345678901234567891").unwrap();
        let d = OtpKey::from_bytes(b"1234567890123456789").unwrap();
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_ne!(a, d);
    }

    #[test]
    fn error_messages_are_lowercase_without_final_period() {
        let errors = [
            KeyError::Empty,
            KeyError::InvalidCharacter {
                position: 1,
                character: ' ',
            },
            KeyError::MisplacedPadding { position: 3 },
            KeyError::InvalidPadding,
            KeyError::TooShort { bytes: 3 },
        ];
        for e in errors {
            let s = e.to_string();
            assert!(s.starts_with(|c: char| c.is_ascii_lowercase()), "{s}");
            assert!(!s.ends_with('.'), "{s}");
        }
    }
}
