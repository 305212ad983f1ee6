//! Taler amounts: parsing, canonical display and the 24-byte `TALER_AmountNBO`.

use std::fmt;
use std::str::FromStr;

use rust_decimal::Decimal;
use rust_decimal::prelude::ToPrimitive;

use crate::error::AmountError;

/// The largest amount value Taler accepts, 2^52 (`TALER_AMOUNT_MAX_VALUE`).
pub const MAX_AMOUNT_VALUE: u64 = 1 << 52;

/// The longest currency code, in characters (`TALER_CURRENCY_LEN` minus the NUL).
pub const MAX_CURRENCY_LEN: usize = 11;

/// The most fraction digits an amount may have; the fraction unit is 10^-8.
pub const MAX_FRACTION_DIGITS: usize = 8;

/// One unit of value, in fraction units.
const FRACTION_BASE: u32 = 100_000_000;

/// A Taler amount `CURRENCY:VALUE[.FRACTION]` (`docs/api.md` §4).
///
/// Invariants: the currency is 1 to 11 letters `A-Z`, the value is at most
/// [`MAX_AMOUNT_VALUE`] and the fraction is below 10^8. Equal amounts have
/// equal fields, so `EUR:1.5 == EUR:1.50`.
/// The currency is held inline (no allocation per parsed amount).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Amount {
    /// The currency's letters, NUL-padded (as in `TALER_AmountNBO`).
    currency: [u8; MAX_CURRENCY_LEN],
    value: u64,
    fraction: u32,
}

impl fmt::Debug for Amount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Amount")
            .field("currency", &self.currency())
            .field("value", &self.value)
            .field("fraction", &self.fraction)
            .finish()
    }
}

impl Amount {
    /// Parses `CURRENCY:VALUE[.FRACTION]` exactly: no sign, no whitespace, an
    /// upper-case currency, a non-empty value and 1 to 8 fraction digits.
    pub fn parse(s: &str) -> Result<Amount, AmountError> {
        let (currency, number) = s.split_once(':').ok_or(AmountError::MissingColon)?;
        check_currency(currency)?;
        let (value, fraction) = match number.split_once('.') {
            Some((value, fraction)) => (value, Some(fraction)),
            None => (number, None),
        };
        if !is_digits(value) {
            return Err(AmountError::InvalidValue);
        }
        // Only digits remain, so parsing can fail only by overflow.
        let value: u64 = value.parse().map_err(|_| AmountError::ValueTooLarge)?;
        let fraction = match fraction {
            None => 0,
            Some(digits) => parse_fraction(digits)?,
        };
        Amount::new(currency, value, fraction)
    }

    /// Builds an amount from its parts; `fraction` is in units of 10^-8.
    pub fn new(currency: &str, value: u64, fraction: u32) -> Result<Amount, AmountError> {
        check_currency(currency)?;
        if value > MAX_AMOUNT_VALUE {
            return Err(AmountError::ValueTooLarge);
        }
        if fraction >= FRACTION_BASE {
            return Err(AmountError::InvalidFraction);
        }
        let mut letters = [0u8; MAX_CURRENCY_LEN];
        for (dst, src) in letters.iter_mut().zip(currency.bytes()) {
            *dst = src;
        }
        Ok(Amount {
            currency: letters,
            value,
            fraction,
        })
    }

    /// Builds an amount from a decimal number (for integrators that compute order totals with
    /// `rust_decimal`): negative values, more than 8 fraction digits and values above
    /// [`MAX_AMOUNT_VALUE`] are rejected rather than rounded.
    pub fn from_decimal(currency: &str, number: Decimal) -> Result<Amount, AmountError> {
        if number.is_sign_negative() && !number.is_zero() {
            return Err(AmountError::InvalidValue);
        }
        let normalized = number.normalize();
        if normalized.scale() > MAX_FRACTION_DIGITS as u32 {
            return Err(AmountError::InvalidFraction);
        }
        let value = normalized
            .trunc()
            .to_u64()
            .ok_or(AmountError::ValueTooLarge)?;
        let fraction = (normalized.fract() * Decimal::from(FRACTION_BASE))
            .to_u32()
            .ok_or(AmountError::InvalidFraction)?;
        Amount::new(currency, value, fraction)
    }

    /// The amount's number as a decimal (exact: at most 53 bits of value and 8 fraction digits).
    pub fn to_decimal(&self) -> Decimal {
        Decimal::from(self.value)
            + Decimal::new(i64::from(self.fraction), MAX_FRACTION_DIGITS as u32)
    }

    /// The currency code, e.g. `EUR`.
    pub fn currency(&self) -> &str {
        let len = self
            .currency
            .iter()
            .position(|b| *b == 0)
            .unwrap_or(MAX_CURRENCY_LEN);
        // Only A-Z are ever stored, so any prefix is UTF-8.
        self.currency
            .get(..len)
            .and_then(|letters| std::str::from_utf8(letters).ok())
            .unwrap_or_default()
    }

    /// The integer part.
    pub fn value(&self) -> u64 {
        self.value
    }

    /// The fractional part in units of 10^-8 (`EUR:1.5` has 50 000 000).
    pub fn fraction(&self) -> u32 {
        self.fraction
    }

    /// The packed 24-byte `TALER_AmountNBO` (`docs/confirmation.md` "The amount"):
    /// value as u64 big-endian, fraction as u32 big-endian, currency NUL-padded to 12 bytes.
    pub fn to_nbo(&self) -> [u8; 24] {
        let mut out = [0u8; 24];
        let value = self.value.to_be_bytes();
        let fraction = self.fraction.to_be_bytes();
        let fields = value
            .iter()
            .chain(fraction.iter())
            .chain(self.currency.iter());
        for (dst, src) in out.iter_mut().zip(fields) {
            *dst = *src;
        }
        out
    }
}

impl fmt::Display for Amount {
    /// The canonical form: `EUR:1.5`, `EUR:1`, `EUR:0.00000001`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.currency(), self.value)?;
        if self.fraction == 0 {
            return Ok(());
        }
        let mut fraction = self.fraction;
        let mut digits = MAX_FRACTION_DIGITS;
        while fraction % 10 == 0 {
            fraction /= 10;
            digits -= 1;
        }
        write!(f, ".{fraction:0digits$}")
    }
}

impl FromStr for Amount {
    type Err = AmountError;

    fn from_str(s: &str) -> Result<Amount, AmountError> {
        Amount::parse(s)
    }
}

fn is_digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

fn check_currency(currency: &str) -> Result<(), AmountError> {
    let ok = (1..=MAX_CURRENCY_LEN).contains(&currency.len())
        && currency.bytes().all(|b| b.is_ascii_uppercase());
    if ok {
        Ok(())
    } else {
        Err(AmountError::InvalidCurrency)
    }
}

fn parse_fraction(digits: &str) -> Result<u32, AmountError> {
    if !is_digits(digits) || digits.len() > MAX_FRACTION_DIGITS {
        return Err(AmountError::InvalidFraction);
    }
    let mut fraction: u32 = 0;
    let mut unit = FRACTION_BASE;
    for b in digits.bytes() {
        unit /= 10;
        fraction += u32::from(b - b'0') * unit;
    }
    Ok(fraction)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn trailing_zeros_do_not_matter() {
        let a = Amount::parse("EUR:1.5").unwrap();
        let b = Amount::parse("EUR:1.50").unwrap();
        let c = Amount::parse("EUR:1.50000000").unwrap();
        assert_eq!(a, b);
        assert_eq!(a, c);
        assert_eq!(a.to_nbo(), b.to_nbo());
        assert_eq!(
            (a.currency(), a.value(), a.fraction()),
            ("EUR", 1, 50_000_000)
        );
    }

    #[test]
    fn nbo_example_from_the_spec() {
        let a = Amount::parse("EUR:1.5").unwrap();
        assert_eq!(
            hex(&a.to_nbo()),
            "000000000000000102faf080455552000000000000000000"
        );
        let long = Amount::parse("ABCDEFGHIJK:4503599627370496.99999999").unwrap();
        assert_eq!(
            hex(&long.to_nbo()),
            "001000000000000005f5e0ff4142434445464748494a4b00"
        );
    }

    #[test]
    fn value_limit() {
        let max = Amount::parse("EUR:4503599627370496").unwrap();
        assert_eq!(max.value(), MAX_AMOUNT_VALUE);
        assert!(Amount::parse("EUR:4503599627370496.99999999").is_ok());
        assert_eq!(
            Amount::parse("EUR:4503599627370497"),
            Err(AmountError::ValueTooLarge)
        );
        assert_eq!(
            Amount::parse("EUR:99999999999999999999999"),
            Err(AmountError::ValueTooLarge)
        );
        assert_eq!(
            Amount::new("EUR", MAX_AMOUNT_VALUE + 1, 0),
            Err(AmountError::ValueTooLarge)
        );
        assert_eq!(
            Amount::parse("EUR:0000000000000000000000000001")
                .unwrap()
                .value(),
            1
        );
    }

    #[test]
    fn currency_rules() {
        assert_eq!(Amount::parse("eur:1"), Err(AmountError::InvalidCurrency));
        assert_eq!(Amount::parse("Eur:1"), Err(AmountError::InvalidCurrency));
        assert_eq!(Amount::parse(":1"), Err(AmountError::InvalidCurrency));
        assert_eq!(Amount::parse("EU R:1"), Err(AmountError::InvalidCurrency));
        assert_eq!(Amount::parse("ÉUR:1"), Err(AmountError::InvalidCurrency));
        assert_eq!(
            Amount::parse("ABCDEFGHIJKL:1"),
            Err(AmountError::InvalidCurrency)
        );
        assert!(Amount::parse("ABCDEFGHIJK:1").is_ok());
        assert!(Amount::parse("K:1").is_ok());
        assert_eq!(Amount::new("eur", 1, 0), Err(AmountError::InvalidCurrency));
    }

    #[test]
    fn value_and_fraction_syntax() {
        assert_eq!(Amount::parse("EUR1.5"), Err(AmountError::MissingColon));
        assert_eq!(Amount::parse(""), Err(AmountError::MissingColon));
        assert_eq!(Amount::parse("EUR:"), Err(AmountError::InvalidValue));
        assert_eq!(Amount::parse("EUR:.5"), Err(AmountError::InvalidValue));
        assert_eq!(Amount::parse("EUR:+1"), Err(AmountError::InvalidValue));
        assert_eq!(Amount::parse("EUR:-1"), Err(AmountError::InvalidValue));
        assert_eq!(Amount::parse("EUR: 1"), Err(AmountError::InvalidValue));
        assert_eq!(Amount::parse("EUR:1 "), Err(AmountError::InvalidValue));
        assert_eq!(Amount::parse("EUR:1:2"), Err(AmountError::InvalidValue));
        assert_eq!(Amount::parse("EUR:1."), Err(AmountError::InvalidFraction));
        assert_eq!(
            Amount::parse("EUR:1.123456789"),
            Err(AmountError::InvalidFraction)
        );
        assert_eq!(Amount::parse("EUR:1.5 "), Err(AmountError::InvalidFraction));
        assert_eq!(
            Amount::parse("EUR:1.2.3"),
            Err(AmountError::InvalidFraction)
        );
        assert_eq!(Amount::parse("EUR:1.-5"), Err(AmountError::InvalidFraction));
        assert_eq!(
            Amount::parse("EUR:1.12345678").unwrap().fraction(),
            12_345_678
        );
        assert_eq!(Amount::parse("EUR:0.00000001").unwrap().fraction(), 1);
        assert_eq!(
            Amount::new("EUR", 1, 100_000_000),
            Err(AmountError::InvalidFraction)
        );
    }

    #[test]
    fn canonical_display() {
        for (input, shown) in [
            ("EUR:1.5", "EUR:1.5"),
            ("EUR:1.50", "EUR:1.5"),
            ("EUR:1.0", "EUR:1"),
            ("EUR:01", "EUR:1"),
            ("EUR:0", "EUR:0"),
            ("KUDOS:12.34", "KUDOS:12.34"),
            ("EUR:0.00000001", "EUR:0.00000001"),
            ("EUR:0.10000000", "EUR:0.1"),
            ("EUR:3.05", "EUR:3.05"),
        ] {
            let amount: Amount = input.parse().unwrap();
            assert_eq!(amount.to_string(), shown, "{input}");
            assert_eq!(Amount::parse(shown).unwrap(), amount);
        }
    }

    #[test]
    fn error_messages_are_lowercase_without_final_period() {
        for e in [
            AmountError::MissingColon,
            AmountError::InvalidCurrency,
            AmountError::InvalidValue,
            AmountError::ValueTooLarge,
            AmountError::InvalidFraction,
        ] {
            let s = e.to_string();
            assert!(s.starts_with(|c: char| c.is_ascii_lowercase()), "{s}");
            assert!(!s.ends_with('.'), "{s}");
        }
    }

    #[test]
    fn decimal_round_trip_is_exact() {
        let amount = Amount::parse("EUR:4503599627370496.00000001").unwrap();
        let number = amount.to_decimal();
        assert_eq!(number.to_string(), "4503599627370496.00000001");
        assert_eq!(Amount::from_decimal("EUR", number).unwrap(), amount);
        let price = Decimal::new(150, 2);
        assert_eq!(
            Amount::from_decimal("EUR", price).unwrap().to_string(),
            "EUR:1.5"
        );
        assert_eq!(
            Amount::from_decimal("EUR", Decimal::new(-1, 0)),
            Err(AmountError::InvalidValue)
        );
        assert_eq!(
            Amount::from_decimal("EUR", Decimal::new(1, 9)),
            Err(AmountError::InvalidFraction)
        );
        assert_eq!(
            Amount::from_decimal("EUR", Decimal::from(MAX_AMOUNT_VALUE + 1)),
            Err(AmountError::ValueTooLarge)
        );
    }
}
