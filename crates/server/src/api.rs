//! Wire types of the OTP-device API, named as in the GNU Taler merchant specification.
//!
//! Only these types derive `Serialize`/`ToSchema`: they are the HTTP boundary.
//! Input types keep loosely typed fields (`serde_json::Value`) where the contract needs a
//! precise error naming the field; `validate` turns them into domain values.

use std::collections::BTreeMap;

use otp_algo::{Algorithm, OtpKey};
use otp_store::OtpDeviceId;
use otp_store::otp_devices::{NewOtpDevice, OtpDevicePatch};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use crate::error::ApiError;

mod fields;
mod verification;

pub use verification::{
    ValidVerification, VerificationEntry, VerificationRequest, VerificationResponse,
    VerificationsResponse,
};

pub use crate::params::MAX_COUNTER;
pub use fields::{
    MAX_DESCRIPTION_BYTES, check_description, check_text, parse_algorithm, parse_device_id,
    parse_price_value,
};
pub(crate) use fields::{kind, non_null, required, required_string};
use fields::{parse_counter, parse_key, required_description};

/// Body of `POST …/private/otp-devices`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct OtpDeviceAddDetails {
    /// Device ID, unique within the instance: 1–128 printable characters, no `/`.
    #[schema(value_type = String, example = "till-1", min_length = 1, max_length = 128, pattern = r"^[^/\x00-\x1f\x7f]+$")]
    pub otp_device_id: Option<Value>,
    /// Human-readable description of the device.
    #[schema(value_type = String, example = "Till 1, front desk")]
    pub otp_device_description: Option<Value>,
    /// RFC 3548 base32 secret, at least 10 bytes once decoded. Never returned. Absent or
    /// `null` (extension): the server generates a key and answers 200 with an
    /// `OtpDeviceEnrolment`, the only answer that contains a key.
    #[schema(value_type = Option<String>, example = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ", min_length = 16, pattern = r"^[A-Za-z2-7]+(=|==|===|====|======)?$")]
    pub otp_key: Option<Value>,
    /// Algorithm, as an integer 0–4 or a case-insensitive name.
    #[schema(schema_with = otp_algorithm_schema, required = true)]
    pub otp_algorithm: Option<Value>,

    /// Initial counter for counter-based algorithms; default 0.
    #[schema(value_type = Option<u64>, minimum = 0, maximum = 9223372036854775807_u64)]
    pub otp_ctr: Option<Value>,
}

/// Body of `PATCH …/private/otp-devices/$DEVICE_ID`. Absent or `null` optional fields keep the stored value.
#[derive(Debug, Deserialize, ToSchema)]
pub struct OtpDevicePatchDetails {
    /// New human-readable description of the device.
    #[schema(value_type = String)]
    pub otp_device_description: Option<Value>,
    /// New RFC 3548 base32 secret.
    #[schema(value_type = Option<String>, min_length = 16, pattern = r"^[A-Za-z2-7]+(=|==|===|====|======)?$")]
    pub otp_key: Option<Value>,
    /// New algorithm, as an integer 0–4 or a case-insensitive name.
    #[schema(schema_with = otp_algorithm_schema_nullable)]
    pub otp_algorithm: Option<Value>,
    /// New counter value.
    #[schema(value_type = Option<u64>, minimum = 0, maximum = 9223372036854775807_u64)]
    pub otp_ctr: Option<Value>,
}

/// One entry of `OtpDeviceSummaryResponse`.
#[derive(Debug, Serialize, ToSchema)]
pub struct OtpDeviceEntry {
    /// Device ID.
    pub otp_device_id: String,
    /// Human-readable description of the device.
    pub device_description: String,
}

/// Answer of `GET …/private/otp-devices`.
#[derive(Debug, Serialize, ToSchema)]
pub struct OtpDeviceSummaryResponse {
    /// The instance's devices, ordered by ID.
    pub otp_devices: Vec<OtpDeviceEntry>,
}

/// Answer of `GET …/private/otp-devices/$DEVICE_ID`.
// It borrows the cached description: an answer allocates nothing but its code and body.
#[derive(Debug, Serialize, ToSchema)]
pub struct OtpDeviceDetails<'a> {
    /// Human-readable description of the device.
    pub device_description: &'a str,
    /// Algorithm, always as an integer (0 NONE, 1 TOTP_WITHOUT_PRICE, 2 TOTP_WITH_PRICE, 3 HOTP_WITHOUT_PRICE, 4 HOTP_WITH_PRICE).
    #[schema(minimum = 0, maximum = 4)]
    pub otp_algorithm: u8,
    /// Current counter.
    pub otp_ctr: u64,
    /// Seconds since the epoch used for the code: `faketime` if given, else the server's time.
    pub otp_timestamp: u64,
    /// The confirmation string: five newline-joined 8-digit codes (TOTP) or one code (HOTP).
    /// Omitted for algorithm NONE and for with-price algorithms without a `price`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub otp_code: Option<String>,
}

/// Answer of `POST …/private/otp-devices` when the server generated the key (extension,
/// `docs/api.md` §11): the only answer that ever contains a device key.
#[derive(Serialize, ToSchema)]
pub struct OtpDeviceEnrolment {
    /// The new key, RFC 3548 base32 without padding.
    #[schema(example = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP", pattern = r"^[A-Z2-7]+$")]
    pub otp_key: String,
    /// Provisioning URI for authenticator apps: `otpauth://totp/ISSUER:DEVICE_ID?secret=KEY&issuer=ISSUER&algorithm=SHA1&digits=8&period=30`
    /// (algorithms 1, 2) or `otpauth://hotp/…&counter=C` (3, 4); with-price algorithms add
    /// `&taler_algorithm=N`.
    #[schema(
        example = "otpauth://totp/Admin:till-1?secret=JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP&issuer=Admin&algorithm=SHA1&digits=8&period=30",
        pattern = "^otpauth://(totp|hotp)/"
    )]
    pub otp_uri: String,
    /// `otp_uri` as a QR code: an SVG document.
    pub qr_code_svg: String,
    /// `otp_uri` as a QR code: a PNG image, base64-encoded.
    #[schema(content_encoding = "base64", content_media_type = "image/png")]
    pub qr_code_png: String,
}

impl std::fmt::Debug for OtpDeviceEnrolment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OtpDeviceEnrolment(..)")
    }
}

impl Drop for OtpDeviceEnrolment {
    fn drop(&mut self) {
        use zeroize::Zeroize;
        self.otp_key.zeroize();
        self.otp_uri.zeroize();
        self.qr_code_svg.zeroize();
        self.qr_code_png.zeroize();
    }
}

impl From<crate::enrolment::Enrolment> for OtpDeviceEnrolment {
    fn from(enrolment: crate::enrolment::Enrolment) -> OtpDeviceEnrolment {
        OtpDeviceEnrolment {
            otp_key: enrolment.key.as_str().to_owned(),
            otp_uri: enrolment.uri.as_str().to_owned(),
            qr_code_svg: enrolment.svg.as_str().to_owned(),
            qr_code_png: enrolment.png.as_str().to_owned(),
        }
    }
}

/// Body of `POST …/private/otp-devices/$DEVICE_ID/confirmations` (extension).
#[derive(Debug, Deserialize, ToSchema)]
pub struct ConfirmationRequest {
    /// The order total the code is bound to; required for with-price algorithms.
    #[schema(value_type = Option<String>, example = "EUR:1.5", pattern = r"^[A-Z]{1,11}:[0-9]+(\.[0-9]{1,8})?$")]
    pub price: Option<Value>,
}

/// Answer of `POST …/private/otp-devices/$DEVICE_ID/confirmations` (extension).
#[derive(Debug, Serialize, ToSchema)]
pub struct ConfirmationResponse {
    /// The confirmation string shown to the customer.
    pub pos_confirmation: String,
    /// Seconds since the epoch the code was computed for.
    pub otp_timestamp: u64,
    /// Counter modes: the counter value that produced this code; time modes: the stored counter.
    pub otp_ctr: u64,
}

/// How a currency is displayed (`CurrencySpecification`).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CurrencySpecification {
    /// Name of the currency.
    pub name: String,
    /// Currency code.
    pub currency: String,
    /// Fraction digits a user may enter.
    pub num_fractional_input_digits: u32,
    /// Fraction digits shown normally.
    pub num_fractional_normal_digits: u32,
    /// Fraction digits always shown, even when zero.
    pub num_fractional_trailing_zero_digits: u32,
    /// Names for powers of ten; key `"0"` is the base unit.
    pub alt_unit_names: BTreeMap<String, String>,
    /// Amounts a wallet may offer as shortcuts: none.
    pub common_amounts: Vec<String>,
}

/// Answer of `GET /config`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct VersionResponse {
    /// Always `taler-merchant`.
    pub name: String,
    /// Protocol version, `CURRENT:REVISION:AGE`.
    pub version: String,
    /// Default currency of the backend.
    pub currency: String,
    /// Currencies supported, by currency code.
    pub currencies: BTreeMap<String, CurrencySpecification>,
    /// Implementation URN.
    pub implementation: String,
    /// Exchanges the backend announces (`[otp] EXCHANGES`, `[merchant-exchange-*]`); empty by
    /// default: this module runs and trusts no exchange.
    pub exchanges: Vec<ExchangeEntry>,
    /// Whether instances can be created by self-provisioning: never here.
    pub have_self_provisioning: bool,
    /// Whether a Donau (donation authority) is supported: never here.
    pub have_donau: bool,
    /// Wire methods the backend accepts for bank accounts: none (empty).
    pub payment_target_types: String,
    /// Default pay delay for new instances (none here: zero).
    #[schema(value_type = Object)]
    pub default_pay_delay: serde_json::Value,
    /// Default refund delay for new instances (none here: zero).
    #[schema(value_type = Object)]
    pub default_refund_delay: serde_json::Value,
    /// Default wire transfer delay for new instances (none here: zero).
    #[schema(value_type = Object)]
    pub default_wire_transfer_delay: serde_json::Value,
    /// Rounding of wire transfer deadlines: `NONE`.
    pub default_wire_transfer_rounding_interval: String,
    /// The persona the merchant SPA starts in.
    pub default_persona: String,
    /// Report generators by section name: none.
    pub report_generators: BTreeMap<String, String>,
}

/// An exchange in `/config`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ExchangeEntry {
    /// The exchange's base URL.
    pub base_url: String,
    /// Its currency.
    pub currency: String,
    /// Its master public key.
    pub master_pub: String,
}

fn otp_algorithm_schema() -> utoipa::openapi::schema::Schema {
    algorithm_schema(false)
}

fn otp_algorithm_schema_nullable() -> utoipa::openapi::schema::Schema {
    algorithm_schema(true)
}

fn algorithm_schema(nullable: bool) -> utoipa::openapi::schema::Schema {
    use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Type};
    let names: Vec<&str> = Algorithm::ALL.iter().map(|a| a.name()).collect();
    let mut one_of = OneOfBuilder::new()
        .item(
            ObjectBuilder::new()
                .schema_type(Type::Integer)
                .minimum(Some(0))
                .maximum(Some(4)),
        )
        .item(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .description(Some("Algorithm name, case-insensitive"))
                .enum_values(Some(names)),
        );
    if nullable {
        one_of = one_of.item(ObjectBuilder::new().schema_type(Type::Null));
    }
    one_of
        .description(Some(
            "0 NONE, 1 TOTP_WITHOUT_PRICE, 2 TOTP_WITH_PRICE, 3 HOTP_WITHOUT_PRICE (extension), 4 HOTP_WITH_PRICE (extension)",
        ))
        .into()
}

/// A checked `OtpDeviceAddDetails`: the device to store, whose key is given or is to be
/// generated by the server (`docs/api.md` §11).
#[derive(Debug)]
pub struct DeviceToAdd {
    /// The device's id.
    pub id: OtpDeviceId,
    /// The description.
    pub description: String,
    /// The key, or `None` when the server is to generate it (never for algorithm NONE).
    pub key: Option<OtpKey>,
    /// The algorithm.
    pub algorithm: Algorithm,
    /// The initial counter.
    pub counter: u64,
}

impl DeviceToAdd {
    /// The device to store, with `key`.
    pub fn with_key(self, key: OtpKey) -> NewOtpDevice {
        NewOtpDevice {
            id: self.id,
            description: self.description,
            key,
            algorithm: self.algorithm,
            counter: self.counter,
        }
    }
}

impl OtpDeviceAddDetails {
    /// Checks every field, naming the first bad one, and returns the device to store. An absent
    /// or `null` `otp_key` asks for a generated key, which algorithm NONE cannot use (400,
    /// code 25).
    pub fn validate(self) -> Result<DeviceToAdd, ApiError> {
        let id = required_string(self.otp_device_id, "otp_device_id")?;
        let id = parse_device_id(&id)
            .map_err(|why| ApiError::malformed(format!("otp_device_id: {why}")))?;
        let description = required_description(self.otp_device_description)?;
        let key = non_null(self.otp_key).map(parse_key).transpose()?;
        let algorithm = parse_algorithm(required(self.otp_algorithm, "otp_algorithm")?)?;
        let counter = self.otp_ctr.map(parse_counter).transpose()?.unwrap_or(0);
        if key.is_none() && algorithm == Algorithm::None {
            return Err(ApiError::Missing(
                "otp_key: required for algorithm NONE, which has no codes and so no key to generate"
                    .to_owned(),
            ));
        }
        Ok(DeviceToAdd {
            id,
            description,
            key,
            algorithm,
            counter,
        })
    }
}

impl OtpDevicePatchDetails {
    /// Checks every field, naming the first bad one, and returns the patch to apply.
    pub fn validate(self) -> Result<OtpDevicePatch, ApiError> {
        let description = required_description(self.otp_device_description)?;
        let key = non_null(self.otp_key).map(parse_key).transpose()?;
        let algorithm = non_null(self.otp_algorithm)
            .map(parse_algorithm)
            .transpose()?;
        let counter = non_null(self.otp_ctr).map(parse_counter).transpose()?;
        Ok(OtpDevicePatch {
            description,
            key,
            algorithm,
            counter,
        })
    }
}

mod login;

pub use login::{
    DEFAULT_TOKEN_LIFETIME, InstanceAuthConfigurationMessage, LoginTokenRequest,
    LoginTokenSuccessResponse, RelativeTime, Timestamp, TokenInfo, TokenInfos, TokenToIssue,
    parse_scope,
};

mod operations;

pub use operations::{AuditEntryResponse, AuditLogResponse, HealthStatus};
