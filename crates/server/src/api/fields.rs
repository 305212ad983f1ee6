//! Field-level parsing of request bodies: each function names the field it refuses and why
//! (`docs/api.md` §2–§4), so every handler answers bad input alike.

use otp_algo::{Algorithm, OtpKey};
use otp_store::OtpDeviceId;
use serde_json::Value;

use crate::error::ApiError;
use crate::params::MAX_COUNTER;

/// Checks free text for what PostgreSQL cannot store (the NUL character); the error names `field`.
pub fn check_text(field: &str, text: String) -> Result<String, String> {
    if text.contains('\0') {
        return Err(format!("{field}: must not contain NUL characters"));
    }
    Ok(text)
}

/// The longest device description accepted, in bytes of UTF-8 (4 KiB, `docs/api.md` §2).
pub const MAX_DESCRIPTION_BYTES: usize = 4096;

/// Checks a device description: free text ([`check_text`]) of at most
/// [`MAX_DESCRIPTION_BYTES`]; the error names `field`.
pub fn check_description(field: &str, text: String) -> Result<String, String> {
    if text.len() > MAX_DESCRIPTION_BYTES {
        return Err(format!(
            "{field}: longer than {MAX_DESCRIPTION_BYTES} bytes ({} bytes)",
            text.len()
        ));
    }
    check_text(field, text)
}

/// `otp_device_description`, required: a string that passes [`check_description`].
pub(crate) fn required_description(value: Option<Value>) -> Result<String, ApiError> {
    let field = "otp_device_description";
    check_description(field, required_string(value, field)?).map_err(ApiError::malformed)
}

/// Parses a device id from a path segment or body field.
pub fn parse_device_id(raw: &str) -> Result<OtpDeviceId, String> {
    OtpDeviceId::parse(raw).map_err(|err| err.to_string())
}

pub(crate) fn non_null(value: Option<Value>) -> Option<Value> {
    value.filter(|v| !v.is_null())
}

pub(crate) fn required(value: Option<Value>, field: &str) -> Result<Value, ApiError> {
    non_null(value).ok_or_else(|| ApiError::Missing(format!("{field}: required field is missing")))
}

pub(crate) fn required_string(value: Option<Value>, field: &str) -> Result<String, ApiError> {
    match required(value, field)? {
        Value::String(s) => check_text(field, s).map_err(ApiError::malformed),
        other => Err(ApiError::malformed(format!(
            "{field}: expected a string, got {}",
            kind(&other)
        ))),
    }
}

pub(crate) fn parse_key(value: Value) -> Result<OtpKey, ApiError> {
    let Value::String(text) = value else {
        return Err(ApiError::malformed(format!(
            "otp_key: expected a string, got {}",
            kind(&value)
        )));
    };
    OtpKey::from_base32(&text).map_err(|err| {
        let hint = matches!(err, otp_algo::KeyError::TooShort { .. })
            .then_some("The OTP key is too weak: it must decode to at least 10 bytes (80 bits).");
        ApiError::Malformed {
            detail: format!("otp_key: {err}"),
            hint,
        }
    })
}

/// Parses `otp_algorithm`: a JSON integer 0–4 or a case-insensitive name; nothing else.
pub fn parse_algorithm(value: Value) -> Result<Algorithm, ApiError> {
    let parsed = match &value {
        Value::Number(n) => match n.as_i64() {
            Some(i) => Algorithm::from_int(i).map_err(|e| e.to_string()),
            None => Err(format!("{n} is not an integer between 0 and 4")),
        },
        Value::String(s) => Algorithm::from_name(s).map_err(|e| e.to_string()),
        other => Err(format!(
            "expected an integer or a name, got {}",
            kind(other)
        )),
    };
    parsed.map_err(|why| ApiError::malformed(format!("otp_algorithm: {why}")))
}

pub(crate) fn parse_counter(value: Value) -> Result<u64, ApiError> {
    match value.as_u64() {
        Some(n) if n <= MAX_COUNTER => Ok(n),
        _ => Err(ApiError::malformed(format!(
            "otp_ctr: expected an integer between 0 and {MAX_COUNTER}, got {value}"
        ))),
    }
}

/// Parses the optional `price` of a confirmation request.
pub fn parse_price_value(value: Option<Value>) -> Result<Option<otp_algo::Amount>, ApiError> {
    match non_null(value) {
        None => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) => crate::query::parse_price(&s).map(Some),
        Some(other) => Err(ApiError::malformed(format!(
            "price: expected a string, got {}",
            kind(&other)
        ))),
    }
}

pub(crate) fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}
