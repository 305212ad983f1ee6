//! Checking a code typed by a clerk, in constant time per candidate.

use subtle::ConstantTimeEq;

use crate::algorithm::Algorithm;
use crate::amount::Amount;
use crate::confirmation::keyed_mac;
use crate::hotp::{CODE_DIGITS, HmacSha1, code_digits, hotp_with};
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

/// The largest counter a device stores (2^63 - 1, PostgreSQL's `bigint`).
const MAX_STORED_COUNTER: u64 = i64::MAX as u64;

/// Every TOTP step within `window` steps of `unix_seconds` whose code equals
/// `code`, as `(step, offset)`: the step (the counter, seconds since the
/// epoch / 30) and its offset from the current step.
///
/// Ordered nearest first, the earlier step first at equal distance (offsets
/// 0, -1, +1, -2, +2, ...), with the saturating time arithmetic of
/// [`totp_counter`](crate::totp_counter); a step that several offsets reach
/// (near the ends of time) is listed once, with the nearest offset. Every
/// code in the window is computed and compared in constant time ([`ct_eq`]),
/// so the time taken does not depend on where, or whether, the code matches.
/// With-price algorithms use the key derived from `price` as
/// [`confirmation`](crate::confirmation) does. Allocates only when a step
/// matches.
///
/// Empty when nothing matches, when `code` is not exactly 8 ASCII digits,
/// when `algorithm` is not time-based, or when it needs a price and has none.
pub fn totp_matches(
    key: &OtpKey,
    algorithm: Algorithm,
    price: Option<&Amount>,
    unix_seconds: u64,
    window: u8,
    code: &str,
) -> Vec<(u64, i32)> {
    let mut matches: Vec<(u64, i32)> = Vec::new();
    if !algorithm.is_time_based() {
        return matches;
    }
    let (Some(typed), Some(mac)) = (typed_code(code), keyed_mac(key, algorithm, price)) else {
        return matches;
    };
    let window = i32::from(window);
    let offsets = (0..=window).flat_map(|distance| {
        let later = (distance != 0).then_some(distance);
        std::iter::once(-distance).chain(later)
    });
    for offset in offsets {
        let step = totp_counter(unix_seconds, i64::from(offset));
        let candidate = code_digits(hotp_with(&mac, step));
        if ct_eq(&candidate, typed) && !matches.iter().any(|(seen, _)| *seen == step) {
            matches.push((step, offset));
        }
    }
    matches
}

/// A typed code checked against a counter-based device's codes: the device's key (bound to
/// the price for with-price algorithms) is derived once, then any number of counter ranges can
/// be tried.
///
/// Counters above 2^63 - 1 (the largest a device stores) are never tried, so a range ends at
/// `min(hi, 2^63 - 1)` and no loop overflows; `lo > hi` tries nothing. Each code is compared in
/// constant time ([`ct_eq`]).
pub struct HotpMatcher<'a> {
    mac: HmacSha1,
    typed: &'a [u8],
}

impl<'a> HotpMatcher<'a> {
    /// The matcher for `code`; `None` when `code` is not exactly 8 ASCII digits, when
    /// `algorithm` is not counter-based, or when it needs a price and has none.
    pub fn new(
        key: &OtpKey,
        algorithm: Algorithm,
        price: Option<&Amount>,
        code: &'a str,
    ) -> Option<Self> {
        if !algorithm.is_counter_based() {
            return None;
        }
        let typed = typed_code(code)?;
        let mac = keyed_mac(key, algorithm, price)?;
        Some(HotpMatcher { mac, typed })
    }

    fn matches_at(&self, counter: u64) -> bool {
        ct_eq(&code_digits(hotp_with(&self.mac, counter)), self.typed)
    }

    /// Every counter in `lo..=hi` whose code is the typed one, ascending. Every code in the
    /// range is computed; the work is proportional to the range, so the caller keeps it small
    /// (the look-ahead and the remembered counters). Allocates only when a counter matches.
    pub fn all(&self, lo: u64, hi: u64) -> Vec<u64> {
        (lo..=hi.min(MAX_STORED_COUNTER))
            .filter(|&counter| self.matches_at(counter))
            .collect()
    }

    /// The smallest counter in `lo..=hi` whose code is the typed one: the first element of
    /// [`all`](Self::all), computing codes only up to the match (for a correct code near `lo`,
    /// one or two instead of the whole range). The time taken tells how far from `lo` the
    /// match is, which only a correct code can learn (a wrong one always takes the whole
    /// range), and which a verification answers anyway (the matched counter).
    pub fn first(&self, lo: u64, hi: u64) -> Option<u64> {
        (lo..=hi.min(MAX_STORED_COUNTER)).find(|&counter| self.matches_at(counter))
    }
}

/// Every counter in `lo..=hi` whose HOTP code equals `code`, ascending
/// ([`HotpMatcher::all`]). With-price algorithms use the key derived from `price`.
///
/// Empty when nothing matches, when `code` is not exactly 8 ASCII digits,
/// when `algorithm` is not counter-based, or when it needs a price and has
/// none.
pub fn hotp_matches(
    key: &OtpKey,
    algorithm: Algorithm,
    price: Option<&Amount>,
    lo: u64,
    hi: u64,
    code: &str,
) -> Vec<u64> {
    HotpMatcher::new(key, algorithm, price, code).map_or_else(Vec::new, |m| m.all(lo, hi))
}

#[cfg(test)]
mod tests;
