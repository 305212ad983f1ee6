//! The protocol version and the `/config` answer.

use std::collections::BTreeMap;

use crate::api::{CurrencySpecification, VersionResponse};

/// Merchant protocol version, `CURRENT:REVISION:AGE`: compatible with v10 through v20.
pub const PROTOCOL_VERSION: &str = "20:0:10";

/// Implementation URN announced in `/config`.
pub const IMPLEMENTATION: &str = "urn:net:taler:specs:taler-merchant:taler-otp";

/// The `/config` answer for a backend whose currency is `currency`.
pub fn config_response(currency: &str) -> VersionResponse {
    let spec = CurrencySpecification {
        name: currency.to_owned(),
        currency: currency.to_owned(),
        num_fractional_input_digits: 2,
        num_fractional_normal_digits: 2,
        num_fractional_trailing_zero_digits: 2,
        alt_unit_names: BTreeMap::from([("0".to_owned(), currency.to_owned())]),
    };
    VersionResponse {
        name: "taler-merchant".to_owned(),
        version: PROTOCOL_VERSION.to_owned(),
        currency: currency.to_owned(),
        currencies: BTreeMap::from([(currency.to_owned(), spec)]),
        implementation: IMPLEMENTATION.to_owned(),
    }
}
