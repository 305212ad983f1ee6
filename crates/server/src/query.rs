//! Query parameters of `GET …/otp-devices/$DEVICE_ID`: `faketime` and `price`.
//!
//! Parsed by hand from the raw query string so every malformed value gets code 26 naming the
//! parameter, whether or not the device's algorithm uses it. Empty values count as absent.

use otp_algo::Amount;

use crate::error::ApiError;
use crate::params;

/// The parsed query of GET one.
#[derive(Debug, Default)]
pub struct CodeQuery {
    /// `faketime`: seconds since the epoch to compute the code for.
    pub faketime: Option<u64>,
    /// `price`: the amount the code is bound to.
    pub price: Option<Amount>,
}

impl CodeQuery {
    /// Parses `faketime` and `price` from a raw query string; other parameters are ignored.
    pub fn parse(query_string: &str) -> Result<CodeQuery, ApiError> {
        let mut query = CodeQuery::default();
        for (name, value) in form_urlencoded::parse(query_string.as_bytes()) {
            if value.is_empty() {
                continue;
            }
            match name.as_ref() {
                "faketime" => query.faketime = Some(parse_faketime(&value)?),
                "price" => query.price = Some(parse_price(&value)?),
                _ => {}
            }
        }
        Ok(query)
    }
}

/// Parses `faketime`: decimal digits only, 0 ≤ value ≤ 18446744073709.
pub fn parse_faketime(value: &str) -> Result<u64, ApiError> {
    params::seconds(value).map_err(|why| ApiError::malformed(format!("faketime: {why}")))
}

/// Parses a Taler amount given as `price`.
pub fn parse_price(value: &str) -> Result<Amount, ApiError> {
    params::amount(value).map_err(|why| ApiError::malformed(format!("price: {why}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_values_are_absent_and_unknown_parameters_ignored() {
        let query = CodeQuery::parse("price=&faketime=&other=x").unwrap();
        assert!(query.price.is_none() && query.faketime.is_none());
    }

    #[test]
    fn percent_encoded_price_is_decoded() {
        let query = CodeQuery::parse("price=EUR%3A1.5&faketime=59").unwrap();
        assert_eq!(query.price.unwrap().to_string(), "EUR:1.5");
        assert_eq!(query.faketime, Some(59));
    }

    #[test]
    fn malformed_values_name_the_parameter() {
        for bad in [
            "faketime=-1",
            "faketime=1.5",
            "faketime=18446744073710",
            "faketime=%2B1",
            "price=eur:1",
            "price=EUR:1.",
            "price=EUR%3A%201",
        ] {
            let err = CodeQuery::parse(bad).unwrap_err();
            let name = bad.split('=').next().unwrap();
            assert!(err.to_string().starts_with(name), "{bad}: {err}");
        }
    }
}
