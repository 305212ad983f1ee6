//! Parsers for the values that both the HTTP API and the command line accept — times, counters
//! and amounts — so that both take and refuse exactly the same text. Each returns the reason on
//! failure; the caller adds the parameter's name (`faketime: …`, `--time: …`).

use otp_algo::{Amount, MAX_TIMESTAMP};

/// Largest counter value a device may hold (2^63 − 1, the range of PostgreSQL's `BIGINT`).
pub const MAX_COUNTER: u64 = i64::MAX as u64;

/// Whole seconds since the epoch: decimal digits only, 0 ≤ value ≤ 18446744073709 (the largest
/// time upstream's microsecond arithmetic represents).
pub fn seconds(text: &str) -> Result<u64, String> {
    digits_up_to(text, MAX_TIMESTAMP).ok_or_else(|| {
        format!("expected an integer number of seconds between 0 and {MAX_TIMESTAMP}, got {text:?}")
    })
}

/// A counter value: decimal digits only, 0 ≤ value ≤ 2^63 − 1.
pub fn counter(text: &str) -> Result<u64, String> {
    digits_up_to(text, MAX_COUNTER)
        .ok_or_else(|| format!("expected an integer between 0 and {MAX_COUNTER}, got {text:?}"))
}

/// `text` as a number if it is decimal digits only (no sign, no space) and at most `max`.
fn digits_up_to(text: &str, max: u64) -> Option<u64> {
    text.bytes()
        .all(|b| b.is_ascii_digit())
        .then(|| text.parse::<u64>().ok())
        .flatten()
        .filter(|value| *value <= max)
}

/// A Taler amount, `CURRENCY:VALUE[.FRACTION]`, exactly as docs/api.md §4 describes it.
pub fn amount(text: &str) -> Result<Amount, String> {
    Amount::parse(text).map_err(|err| err.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_take_digits_up_to_the_largest_time() {
        assert_eq!(seconds("0"), Ok(0));
        assert_eq!(seconds("18446744073709"), Ok(MAX_TIMESTAMP));
        for bad in [
            "",
            "-5",
            "+5",
            " 5",
            "1.5",
            "18446744073710",
            "99999999999999999999",
        ] {
            assert!(seconds(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn counters_take_digits_up_to_two_to_the_63_minus_one() {
        assert_eq!(counter("9223372036854775807"), Ok(MAX_COUNTER));
        for bad in ["", "x", "-1", "9223372036854775808"] {
            assert!(counter(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn amounts_follow_the_contract() {
        assert!(amount("EUR:1.5").is_ok());
        assert!(amount("eur:1.5").is_err() && amount("EUR:1.").is_err());
    }
}
