//! The five OTP algorithms of a device (`docs/api.md` §3).

use std::fmt;
use std::str::FromStr;

use crate::error::AlgorithmError;

/// How a device's confirmation code is computed.
///
/// The discriminant is the wire integer (`otp_algorithm`).
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Algorithm {
    /// No confirmation code.
    None = 0,
    /// Five TOTP codes over the device key (upstream).
    TotpWithoutPrice = 1,
    /// Five TOTP codes over a key derived from the device key and the price (upstream).
    TotpWithPrice = 2,
    /// Extension: one HOTP code over the device key for the device counter.
    HotpWithoutPrice = 3,
    /// Extension: one HOTP code over the price-derived key for the device counter.
    HotpWithPrice = 4,
}

impl Algorithm {
    /// Every algorithm, in wire-integer order.
    pub const ALL: [Algorithm; 5] = [
        Algorithm::None,
        Algorithm::TotpWithoutPrice,
        Algorithm::TotpWithPrice,
        Algorithm::HotpWithoutPrice,
        Algorithm::HotpWithPrice,
    ];

    /// The algorithm with wire integer `v` (0 to 4).
    pub fn from_int(v: i64) -> Result<Algorithm, AlgorithmError> {
        Algorithm::ALL
            .into_iter()
            .find(|a| i64::from(a.as_int()) == v)
            .ok_or(AlgorithmError::UnknownValue { value: v })
    }

    /// The algorithm named `s`, case-insensitively (`totp_with_price`).
    ///
    /// Numeric strings such as `"1"` are rejected, as the API requires; use
    /// [`FromStr`] to accept either form.
    pub fn from_name(s: &str) -> Result<Algorithm, AlgorithmError> {
        Algorithm::ALL
            .into_iter()
            .find(|a| a.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| AlgorithmError::UnknownName { name: s.to_owned() })
    }

    /// The wire integer.
    pub fn as_int(self) -> u8 {
        self as u8
    }

    /// The upper-case name, e.g. `TOTP_WITH_PRICE`.
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::None => "NONE",
            Algorithm::TotpWithoutPrice => "TOTP_WITHOUT_PRICE",
            Algorithm::TotpWithPrice => "TOTP_WITH_PRICE",
            Algorithm::HotpWithoutPrice => "HOTP_WITHOUT_PRICE",
            Algorithm::HotpWithPrice => "HOTP_WITH_PRICE",
        }
    }

    /// Whether the code is bound to a price (algorithms 2 and 4).
    pub fn uses_price(self) -> bool {
        matches!(self, Algorithm::TotpWithPrice | Algorithm::HotpWithPrice)
    }

    /// Whether the code depends on the device counter (algorithms 3 and 4).
    pub fn is_counter_based(self) -> bool {
        matches!(self, Algorithm::HotpWithoutPrice | Algorithm::HotpWithPrice)
    }

    /// Whether the code depends on the time (algorithms 1 and 2).
    pub fn is_time_based(self) -> bool {
        matches!(self, Algorithm::TotpWithoutPrice | Algorithm::TotpWithPrice)
    }
}

impl fmt::Display for Algorithm {
    /// The upper-case name.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Algorithm {
    type Err = AlgorithmError;

    /// A name (case-insensitive) or a decimal integer from 0 to 4, for the
    /// CLI (`--algorithm 1`, `--algorithm totp_with_price`).
    fn from_str(s: &str) -> Result<Algorithm, AlgorithmError> {
        if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
            return match s.parse::<i64>() {
                Ok(v) => Algorithm::from_int(v),
                Err(_) => Err(AlgorithmError::UnknownName { name: s.to_owned() }),
            };
        }
        Algorithm::from_name(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_round_trip() {
        for a in Algorithm::ALL {
            assert_eq!(Algorithm::from_int(i64::from(a.as_int())), Ok(a));
        }
        for v in [-1, 5, 255, 256, i64::MIN, i64::MAX] {
            assert_eq!(
                Algorithm::from_int(v),
                Err(AlgorithmError::UnknownValue { value: v })
            );
        }
    }

    #[test]
    fn names_are_case_insensitive_and_numbers_are_not_names() {
        for a in Algorithm::ALL {
            assert_eq!(Algorithm::from_name(a.name()), Ok(a));
            assert_eq!(Algorithm::from_name(&a.name().to_lowercase()), Ok(a));
            assert_eq!(a.to_string(), a.name());
        }
        assert_eq!(
            Algorithm::from_name("Totp_With_Price"),
            Ok(Algorithm::TotpWithPrice)
        );
        for bad in ["1", "0", "", " NONE", "NONE ", "TOTP", "totp-with-price"] {
            assert!(Algorithm::from_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn from_str_accepts_names_and_integers() {
        assert_eq!("1".parse(), Ok(Algorithm::TotpWithoutPrice));
        assert_eq!("4".parse(), Ok(Algorithm::HotpWithPrice));
        assert_eq!("hotp_with_price".parse(), Ok(Algorithm::HotpWithPrice));
        assert_eq!(
            "5".parse::<Algorithm>(),
            Err(AlgorithmError::UnknownValue { value: 5 })
        );
        for bad in ["-1", "+1", "1.0", " 1", "99999999999999999999", ""] {
            assert!(bad.parse::<Algorithm>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn properties() {
        use Algorithm as A;
        let table = [
            (A::None, false, false, false),
            (A::TotpWithoutPrice, false, false, true),
            (A::TotpWithPrice, true, false, true),
            (A::HotpWithoutPrice, false, true, false),
            (A::HotpWithPrice, true, true, false),
        ];
        for (a, price, counter, time) in table {
            assert_eq!(a.uses_price(), price, "{a}");
            assert_eq!(a.is_counter_based(), counter, "{a}");
            assert_eq!(a.is_time_based(), time, "{a}");
        }
    }
}
