//! Request bodies: `read_json`, with Taler errors for every way a body can be bad.
//!
//! It checks the content type, reads at most [`MAX_BODY_BYTES`] after decompression
//! (`Content-Encoding: gzip` is accepted), parses JSON (code 22 on a syntax error) and
//! requires an object (code 26 otherwise). Field validation is left to the wire types.

use actix_web::error::PayloadError;
use actix_web::http::header;
use actix_web::web::{self, Bytes, PayloadConfig};
use actix_web::{FromRequest, HttpRequest};
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// Largest accepted request body, after decompression.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// Reads the request body as JSON into `T`, after authentication has passed.
///
/// With `empty_is_object`, an empty body reads as `{}` (for endpoints whose fields are all
/// optional).
pub async fn read_json<T: DeserializeOwned>(
    req: &HttpRequest,
    payload: web::Payload,
    empty_is_object: bool,
) -> Result<T, ApiError> {
    let content_type = check_content_type(req);
    let bytes = Bytes::from_request(req, &mut payload.into_inner())
        .await
        .map_err(map_payload_error)?;
    if bytes.is_empty() && empty_is_object {
        return parse(b"{}");
    }
    content_type?;
    parse(&bytes)
}

fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let value: serde_json::Value = serde_json::from_slice(bytes)
        .map_err(|err| ApiError::JsonInvalid(format!("body is not valid JSON: {err}")))?;
    if !value.is_object() {
        return Err(ApiError::malformed("body: expected a JSON object"));
    }
    serde_json::from_value(value).map_err(|err| ApiError::malformed(format!("body: {err}")))
}

/// The payload configuration registered on the app, so `Bytes` enforces the limit.
pub fn payload_config() -> PayloadConfig {
    PayloadConfig::new(MAX_BODY_BYTES)
}

fn check_content_type(req: &HttpRequest) -> Result<(), ApiError> {
    let Some(value) = req.headers().get(header::CONTENT_TYPE) else {
        // Taler clients always send JSON; curl without -H sends a form type, which is caught below.
        return Ok(());
    };
    let value = value
        .to_str()
        .map_err(|_| ApiError::HeaderMalformed("content-type: not valid ASCII".into()))?;
    let mime = value
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    if mime == "application/json" || (mime.starts_with("application/") && mime.ends_with("+json")) {
        Ok(())
    } else {
        Err(ApiError::UnsupportedMediaType(format!(
            "content-type: expected application/json, got {value}"
        )))
    }
}

fn map_payload_error(err: actix_web::Error) -> ApiError {
    match err.as_error::<PayloadError>() {
        Some(PayloadError::Overflow) => ApiError::PayloadTooLarge(MAX_BODY_BYTES),
        Some(PayloadError::EncodingCorrupted) => ApiError::CompressionInvalid,
        Some(other) => ApiError::JsonInvalid(format!("body could not be read: {other}")),
        None => {
            if err.as_response_error().status_code()
                == actix_web::http::StatusCode::PAYLOAD_TOO_LARGE
            {
                ApiError::PayloadTooLarge(MAX_BODY_BYTES)
            } else {
                ApiError::JsonInvalid(format!("body could not be read: {err}"))
            }
        }
    }
}
