//! The protocol version and the `/config` answer (`docs/api.md` §6; the version's range is
//! argued field by field in `docs/protocol-version.md`).

use std::collections::BTreeMap;

use serde_json::json;

use crate::api::{CurrencySpecification, ExchangeEntry, VersionResponse};
use crate::config::Settings;

/// Merchant protocol version, `CURRENT:REVISION:AGE`: compatible with clients of v10 (the first
/// with OTP devices) through v32 (upstream's at the time of writing).
pub const PROTOCOL_VERSION: &str = "32:0:22";

/// Implementation URN announced in `/config`.
pub const IMPLEMENTATION: &str = "urn:net:taler:specs:taler-merchant:taler-otp";

/// The `/config` answer for `settings`: every field upstream requires, with values that are
/// true for a module that runs no exchange, makes no orders and holds no bank accounts.
pub fn config_response(settings: &Settings) -> VersionResponse {
    let currency = settings.currency.as_str();
    let spec = CurrencySpecification {
        name: currency.to_owned(),
        currency: currency.to_owned(),
        num_fractional_input_digits: 2,
        num_fractional_normal_digits: 2,
        num_fractional_trailing_zero_digits: 2,
        alt_unit_names: BTreeMap::from([("0".to_owned(), currency.to_owned())]),
        common_amounts: Vec::new(),
    };
    VersionResponse {
        name: "taler-merchant".to_owned(),
        version: PROTOCOL_VERSION.to_owned(),
        currency: currency.to_owned(),
        currencies: BTreeMap::from([(currency.to_owned(), spec)]),
        implementation: IMPLEMENTATION.to_owned(),
        exchanges: settings
            .exchanges
            .iter()
            .map(|exchange| ExchangeEntry {
                base_url: exchange.base_url.clone(),
                currency: exchange.currency.clone(),
                master_pub: exchange.master_pub.clone(),
            })
            .collect(),
        have_self_provisioning: false,
        have_donau: false,
        payment_target_types: String::new(),
        default_pay_delay: json!({"d_us": 0}),
        default_refund_delay: json!({"d_us": 0}),
        default_wire_transfer_delay: json!({"d_us": 0}),
        default_wire_transfer_rounding_interval: "NONE".to_owned(),
        default_persona: "expert".to_owned(),
        report_generators: BTreeMap::new(),
    }
}
