//! Checking a code typed by a clerk, in constant time per candidate.

use subtle::ConstantTimeEq;

use crate::algorithm::Algorithm;
use crate::amount::Amount;
use crate::confirmation::keyed_mac;
use crate::hotp::{CODE_DIGITS, code_digits, hotp_with};
use crate::key::OtpKey;
use crate::totp::totp_counter;

/// Whether `a` and `b` are equal, in time independent of their contents
/// (only their lengths may leak).
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.ct_eq(b).into()
}

/// The typed code as exactly 8 ASCII digits, or `None`.
fn typed_code(code: &str) -> Option<&[u8]> {
    let bytes = code.as_bytes();
    (bytes.len() == CODE_DIGITS && bytes.iter().all(u8::is_ascii_digit)).then_some(bytes)
}

/// Checks one 8-digit `code` against a time-based device (algorithms 1, 2).
///
/// Tries the steps `-window..=+window` around `unix_seconds`, nearest first
/// (0, -1, +1, -2, +2, ...), with the saturating time arithmetic of
/// [`totp_counter`](crate::totp_counter), so it never underflows near the
/// epoch. Returns the step offset of the first match.
///
/// `None` when nothing matches, when `code` is not exactly 8 ASCII digits,
/// when `algorithm` is not time-based, or when it needs a price and has none.
pub fn verify_totp(
    key: &OtpKey,
    algorithm: Algorithm,
    price: Option<&Amount>,
    unix_seconds: u64,
    code: &str,
    window: u8,
) -> Option<i64> {
    if !algorithm.is_time_based() {
        return None;
    }
    let typed = typed_code(code)?;
    let mac = keyed_mac(key, algorithm, price)?;
    let window = i64::from(window);
    let offsets = (0..=window).flat_map(|step| {
        let later = (step != 0).then_some(step);
        std::iter::once(-step).chain(later)
    });
    for offset in offsets {
        let candidate = code_digits(hotp_with(&mac, totp_counter(unix_seconds, offset)));
        if ct_eq(&candidate, typed) {
            return Some(offset);
        }
    }
    None
}

/// Checks one 8-digit `code` against a counter-based device (algorithms 3, 4).
///
/// Tries the counters `counter..=counter + look_ahead` in order (RFC 4226
/// §7.4), stopping at `u64::MAX` rather than overflowing, and returns the
/// first matching counter; the caller resynchronises the device to
/// `matched + 1`. The work is proportional to `look_ahead`, so keep it small.
///
/// `None` when nothing matches, when `code` is not exactly 8 ASCII digits,
/// when `algorithm` is not counter-based, or when it needs a price and has none.
pub fn verify_hotp(
    key: &OtpKey,
    algorithm: Algorithm,
    price: Option<&Amount>,
    counter: u64,
    code: &str,
    look_ahead: u32,
) -> Option<u64> {
    if !algorithm.is_counter_based() {
        return None;
    }
    let typed = typed_code(code)?;
    let mac = keyed_mac(key, algorithm, price)?;
    let mut candidate_counter = counter;
    for _ in 0..=look_ahead {
        let candidate = code_digits(hotp_with(&mac, candidate_counter));
        if ct_eq(&candidate, typed) {
            return Some(candidate_counter);
        }
        candidate_counter = candidate_counter.checked_add(1)?;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rfc_key() -> OtpKey {
        OtpKey::from_bytes(b"12345678901234567890").unwrap()
    }

    #[test]
    fn ct_eq_basics() {
        assert!(ct_eq(b"", b""));
        assert!(ct_eq(b"12345678", b"12345678"));
        assert!(!ct_eq(b"12345678", b"12345679"));
        assert!(!ct_eq(b"1234567", b"12345678"));
    }

    #[test]
    fn totp_window_near_the_epoch() {
        let key = rfc_key();
        let alg = Algorithm::TotpWithoutPrice;
        // Counter 0 is step 0 at ts 0 (nearest first), step -1 at ts 30.
        assert_eq!(verify_totp(&key, alg, None, 0, "84755224", 2), Some(0));
        assert_eq!(verify_totp(&key, alg, None, 30, "84755224", 2), Some(-1));
        assert_eq!(verify_totp(&key, alg, None, 0, "94287082", 2), Some(1));
        assert_eq!(verify_totp(&key, alg, None, 0, "94287082", 0), None);
        assert_eq!(verify_totp(&key, alg, None, 0, "84755224", 255), Some(0));
        assert_eq!(verify_totp(&key, alg, None, 0, "82162583", 255), Some(7));
        assert_eq!(verify_totp(&key, alg, None, 210, "82162583", 0), Some(0));
    }

    #[test]
    fn totp_rejects_malformed_and_wrong_algorithms() {
        let key = rfc_key();
        let alg = Algorithm::TotpWithoutPrice;
        for bad in [
            "",
            "8475522",
            "847552240",
            " 84755224",
            "8475522a",
            "８4755224",
        ] {
            assert_eq!(verify_totp(&key, alg, None, 0, bad, 2), None, "{bad:?}");
        }
        for alg in [
            Algorithm::None,
            Algorithm::HotpWithoutPrice,
            Algorithm::HotpWithPrice,
        ] {
            assert_eq!(verify_totp(&key, alg, None, 0, "84755224", 2), None);
        }
        assert_eq!(
            verify_totp(&key, Algorithm::TotpWithPrice, None, 0, "84755224", 2),
            None
        );
    }

    #[test]
    fn hotp_look_ahead() {
        let key = rfc_key();
        let alg = Algorithm::HotpWithoutPrice;
        assert_eq!(verify_hotp(&key, alg, None, 0, "84755224", 0), Some(0));
        assert_eq!(verify_hotp(&key, alg, None, 0, "82162583", 7), Some(7));
        assert_eq!(verify_hotp(&key, alg, None, 0, "82162583", 6), None);
        assert_eq!(verify_hotp(&key, alg, None, 1, "84755224", 10), None);
        assert_eq!(verify_hotp(&key, alg, None, 0, "8216258", 10), None);
        assert_eq!(
            verify_hotp(&key, Algorithm::TotpWithoutPrice, None, 0, "84755224", 0),
            None
        );
        assert_eq!(
            verify_hotp(&key, Algorithm::HotpWithPrice, None, 0, "84755224", 0),
            None
        );
    }

    #[test]
    fn hotp_stops_at_the_largest_counter() {
        let key = rfc_key();
        let alg = Algorithm::HotpWithoutPrice;
        let last = crate::hotp_code(key.as_bytes(), u64::MAX);
        assert_eq!(
            verify_hotp(&key, alg, None, u64::MAX - 1, &last, u32::MAX),
            Some(u64::MAX)
        );
        assert_eq!(
            verify_hotp(&key, alg, None, u64::MAX, "84755224", u32::MAX),
            None
        );
    }
}
