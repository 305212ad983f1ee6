//! HOTP (RFC 4226) with SHA-1 and 8 digits, the building block of every code.

use hmac::{Hmac, Mac};
use sha1::Sha1;

/// Digits in every code; codes are zero-padded to this length.
pub const CODE_DIGITS: usize = 8;

/// 10^[`CODE_DIGITS`].
const CODE_MODULUS: u32 = 100_000_000;

/// An HMAC-SHA1 instance keyed once and cloned for each counter.
pub(crate) type HmacSha1 = Hmac<Sha1>;

/// Keys HMAC-SHA1 with `key` (any length).
pub(crate) fn hmac_sha1(key: &[u8]) -> HmacSha1 {
    match HmacSha1::new_from_slice(key) {
        Ok(mac) => mac,
        // The hmac crate documents that HMAC accepts keys of any length.
        Err(_) => unreachable!("HMAC accepts keys of any length"),
    }
}

/// RFC 4226 §5.3: HMAC-SHA1 of the big-endian counter, dynamic truncation to
/// 31 bits, modulo 10^8.
pub(crate) fn hotp_with(mac: &HmacSha1, counter: u64) -> u32 {
    let mut mac = mac.clone();
    mac.update(&counter.to_be_bytes());
    let digest: [u8; 20] = mac.finalize().into_bytes().into();
    truncate(&digest) % CODE_MODULUS
}

/// RFC 4226 §5.3 dynamic truncation: 31 bits at the offset named by the low
/// nibble of the last byte.
fn truncate(digest: &[u8; 20]) -> u32 {
    let offset = usize::from(digest[19] & 0x0f);
    // The offset is at most 15, so four bytes always follow it.
    let word = digest
        .iter()
        .skip(offset)
        .take(4)
        .fold(0u32, |acc, b| (acc << 8) | u32::from(*b));
    word & 0x7fff_ffff
}

/// The 8 ASCII digits of `value` (below 10^8), zero-padded.
pub(crate) fn code_digits(mut value: u32) -> [u8; CODE_DIGITS] {
    let mut digits = [b'0'; CODE_DIGITS];
    for d in digits.iter_mut().rev() {
        *d = b'0' + (value % 10) as u8;
        value /= 10;
    }
    digits
}

/// Appends the 8 zero-padded digits of `value` to `out`.
pub(crate) fn push_code(out: &mut String, value: u32) {
    out.extend(code_digits(value).iter().map(|&d| char::from(d)));
}

/// RFC 4226 HOTP-SHA1 of `counter` under `key`, as an integer below 10^8
/// (the 31-bit truncated value modulo 10^8).
pub fn hotp(key: &[u8], counter: u64) -> u32 {
    hotp_with(&hmac_sha1(key), counter)
}

/// [`hotp`] as the 8-digit, zero-padded string shown to people.
pub fn hotp_code(key: &[u8], counter: u64) -> String {
    let mut out = String::with_capacity(CODE_DIGITS);
    push_code(&mut out, hotp(key, counter));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_examples() {
        let key = b"12345678901234567890";
        assert_eq!(hotp_code(key, 0), "84755224");
        assert_eq!(hotp_code(key, 1), "94287082");
        assert_eq!(hotp_code(key, 7), "82162583");
    }

    #[test]
    fn digits_are_zero_padded() {
        assert_eq!(code_digits(0), *b"00000000");
        assert_eq!(code_digits(7_081_804), *b"07081804");
        assert_eq!(code_digits(99_999_999), *b"99999999");
        let mut s = String::new();
        push_code(&mut s, 42);
        assert_eq!(s, "00000042");
    }

    #[test]
    fn truncation_uses_the_last_nibble() {
        // RFC 4226 §5.4 example: offset 0xa gives 0x50ef7f19.
        let digest = [
            0x1f, 0x86, 0x98, 0x69, 0x0e, 0x02, 0xca, 0x16, 0x61, 0x85, 0x50, 0xef, 0x7f, 0x19,
            0xda, 0x8e, 0x94, 0x5b, 0x55, 0x5a,
        ];
        assert_eq!(truncate(&digest), 0x50ef_7f19);
        let mut top = [0xff; 20];
        top[19] = 0xff;
        assert_eq!(truncate(&top), 0x7fff_ffff);
    }
}
