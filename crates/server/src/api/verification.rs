//! Wire types of the verification extension (`docs/api.md` §10): the attempt, its answer, and
//! the history of attempts.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use super::{check_text, kind, non_null, parse_price_value};
use crate::error::ApiError;

/// Body of `POST …/private/otp-devices/$DEVICE_ID/verifications` (extension).
#[derive(Debug, Deserialize, ToSchema)]
pub struct VerificationRequest {
    /// One code as the device shows it: exactly 8 ASCII digits.
    #[schema(value_type = String, example = "94287082", pattern = r"^[0-9]{8}$")]
    pub code: Option<Value>,
    /// The amount the code is bound to; required for with-price algorithms.
    #[schema(value_type = Option<String>, example = "EUR:1.5", pattern = r"^[A-Z]{1,11}:[0-9]+(\.[0-9]{1,8})?$")]
    pub price: Option<Value>,
    /// What the code confirms (an order id): 1–128 printable characters, recorded with the outcome.
    #[schema(value_type = Option<String>, example = "order-42", min_length = 1, max_length = 128)]
    pub reference: Option<Value>,
}

/// A validated attempt.
#[derive(Debug)]
pub struct ValidVerification {
    /// The typed code: 8 ASCII digits.
    pub code: String,
    /// The amount, if given.
    pub price: Option<otp_algo::Amount>,
    /// The reference, if given.
    pub reference: Option<String>,
}

impl VerificationRequest {
    /// Checks every field, naming the first bad one. The code itself never appears in an error.
    pub fn validate(self) -> Result<ValidVerification, ApiError> {
        let code = match non_null(self.code) {
            None => return Err(ApiError::Missing("code: required field is missing".into())),
            Some(Value::String(code))
                if code.len() == 8 && code.bytes().all(|b| b.is_ascii_digit()) =>
            {
                code
            }
            Some(_) => {
                return Err(ApiError::malformed(
                    "code: expected exactly 8 decimal digits as a string",
                ));
            }
        };
        let price = parse_price_value(self.price)?;
        let reference = match non_null(self.reference) {
            None => None,
            Some(Value::String(text)) => {
                let printable = !text.is_empty()
                    && text.chars().count() <= 128
                    && !text.chars().any(char::is_control);
                if !printable {
                    return Err(ApiError::malformed(
                        "reference: expected 1 to 128 printable characters",
                    ));
                }
                Some(check_text("reference", text).map_err(ApiError::malformed)?)
            }
            Some(other) => {
                return Err(ApiError::malformed(format!(
                    "reference: expected a string, got {}",
                    kind(&other)
                )));
            }
        };
        Ok(ValidVerification {
            code,
            price,
            reference,
        })
    }
}

/// Answer of a well-formed verification attempt (extension).
#[derive(Debug, Serialize, ToSchema)]
pub struct VerificationResponse {
    /// Whether the code was accepted now.
    pub verified: bool,
    /// Accepted: seconds since the epoch of the decision (the server's clock).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub otp_timestamp: Option<u64>,
    /// Accepted, TOTP: the matching step's distance from the current one, −W…+W.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub matched_offset: Option<i32>,
    /// Accepted, HOTP: the counter that matched; the stored counter is now one more.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub otp_ctr: Option<u64>,
    /// Refused: `mismatch` (the code matches nothing) or `replayed` (it was accepted before).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, pattern = "^(mismatch|replayed)$")]
    pub reason: Option<&'static str>,
    /// `replayed`: the reference of the attempt that was accepted (`null` if it gave none).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reference: Option<Option<String>>,
}

/// One attempt in a device's history (extension). Never holds the typed code.
#[derive(Debug, Serialize, ToSchema)]
pub struct VerificationEntry {
    /// Seconds since the epoch.
    pub time: i64,
    /// `verified`, `mismatch`, `replayed`, `locked` or `daily_limit`.
    pub outcome: &'static str,
    /// The attempt's reference, or `null`.
    pub reference: Option<String>,
    /// Accepted HOTP attempts: the counter that matched.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub otp_ctr: Option<u64>,
    /// Accepted TOTP attempts: the matching step's offset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub matched_offset: Option<i32>,
    /// The client's address as the server saw it.
    pub client: String,
    /// The serial of the token used, or `null`.
    pub token_serial: Option<i64>,
}

/// Answer of `GET …/private/otp-devices/$DEVICE_ID/verifications` (extension), newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct VerificationsResponse {
    /// The attempts.
    pub verifications: Vec<VerificationEntry>,
}
