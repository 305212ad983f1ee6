//! `ApiError`, the one error type of the HTTP layer, and its mapping to Taler error bodies.
//!
//! Handlers return `Result<_, ApiError>`; `From<StoreError>` maps the store's outcomes once.
//! A 5xx body carries a code and a fixed hint only: the error chain goes to the log, never to the client.

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpResponse, ResponseError};
use otp_store::StoreError;
use serde::Serialize;
use utoipa::ToSchema;

use crate::taler_ec::{self, TalerErrorCode};

/// The JSON body of every non-2xx answer, as GNU Taler's `ErrorDetail`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Numeric Taler error code (`TALER_EC_…`).
    pub code: TalerErrorCode,
    /// Human-readable description of the error code.
    pub hint: String,
    /// Details about this particular failure, such as the name of the offending parameter.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// The answers every private endpoint may give besides its own. It exists for the OpenAPI
/// document only and is never constructed: handlers return [`ApiError`].
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)]
pub enum PrivateEndpointErrors {
    /// Missing or invalid credentials for this instance, code 2015.
    #[response(status = 401)]
    Unauthorized(ErrorDetail),
    /// The token's scope lacks the endpoint's permission (otp-devices-read or otp-devices-write), code 16.
    #[response(status = 403)]
    Forbidden(ErrorDetail),
    /// A failure of the database (codes 52 store, 53 fetch, 56 stored data violates an
    /// invariant) or of the server itself (code 60); the body carries no internal detail.
    #[response(status = 500)]
    Internal(ErrorDetail),
    /// The database is unavailable, code 51; retry after `Retry-After` seconds.

    #[response(
        status = 503,
        headers(("Retry-After" = u32, description = "Seconds to wait before retrying"))
    )]
    Unavailable(ErrorDetail),
}

/// Everything that can go wrong while serving a request.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A required parameter or field is absent (the payload names it).
    #[error("{0}")]
    Missing(String),
    /// A parameter or field is malformed; `detail` names it and says why.
    #[error("{detail}")]
    Malformed {
        /// What is wrong, naming the parameter.
        detail: String,
        /// A more specific hint than the generic one, if any.
        hint: Option<&'static str>,
    },
    /// The body is not valid JSON.
    #[error("{0}")]
    JsonInvalid(String),
    /// A header (such as `Content-Type`) is malformed or unsupported.
    #[error("{0}")]
    HeaderMalformed(String),
    /// The body is not JSON (wrong `Content-Type`).
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// The compressed body could not be decompressed.
    #[error("request body could not be decompressed")]
    CompressionInvalid,
    /// The body exceeds the upload limit.
    #[error("request body exceeds the limit of {0} bytes")]
    PayloadTooLarge(usize),
    /// The instance does not exist.
    #[error("instance unknown")]
    InstanceUnknown,
    /// Missing or invalid credentials for this instance.
    #[error("missing or invalid credentials")]
    Unauthorized,
    /// The token's scope does not grant the permission.
    #[error("token lacks permission {0}")]
    Forbidden(&'static str),
    /// The OTP device does not exist.
    #[error("otp device unknown")]
    DeviceUnknown,
    /// The access token (by serial) does not exist in this instance.
    #[error("access token unknown")]
    TokenUnknown,
    /// A device with the same id and different details exists.
    #[error("an otp device with this id exists with different details")]
    DeviceExists,
    /// The device's algorithm issues no confirmations (algorithm NONE).
    #[error("the otp device uses algorithm NONE and issues no confirmations")]
    NoConfirmations,
    /// The counter cannot be advanced any further.
    #[error("the otp device counter is exhausted")]
    CounterExhausted,
    /// Verification refused: the device is locked after repeated mismatches.
    #[error("{retry_after}")]
    VerificationLocked {
        /// Whole seconds until the lock ends.
        retry_after: u32,
    },
    /// Verification refused until midnight UTC: the day's mismatches are used up.
    #[error("{retry_after}")]
    VerificationDailyLimit {
        /// Whole seconds until 00:00 UTC.
        retry_after: u32,
    },
    /// Basic logins from this client on this instance are throttled after failures.
    #[error("{retry_after}")]
    LoginThrottled {
        /// Whole seconds until fewer failed logins count.
        retry_after: u64,
    },
    /// Requests from this client address are refused after too many failed authentications.
    #[error("{retry_after}")]
    AuthThrottled {
        /// Whole seconds until fewer failures count.
        retry_after: u64,
    },
    /// Too many password checks at once: the client should retry shortly.
    #[error("too many password checks at once")]
    LoginBusy,
    /// No route matches the path.
    #[error("no endpoint at this path")]
    EndpointUnknown,
    /// The route exists but not for this method.
    #[error("method not allowed on this endpoint")]
    MethodInvalid,
    /// The URI exceeds the accepted length.
    #[error("request uri too long")]
    UriTooLong,
    /// The database is unreachable; the client should retry.
    #[error("database unavailable")]
    Unavailable(#[source] StoreError),
    /// The database failed while reading.
    #[error("database fetch failed")]
    DbFetch(#[source] StoreError),
    /// The database failed while writing.
    #[error("database store failed")]
    DbStore(#[source] StoreError),
    /// Stored data violates an invariant.
    #[error("database invariant failure")]
    DbInvariant(#[source] StoreError),
    /// A bug.
    #[error("internal invariant failure: {0}")]
    Internal(String),
}

/// Seconds a client should wait before retrying while the database is down.
pub const RETRY_AFTER_SECONDS: u32 = 2;

impl ApiError {
    /// A malformed parameter with a detail naming it.
    pub fn malformed(detail: impl Into<String>) -> ApiError {
        ApiError::Malformed {
            detail: detail.into(),
            hint: None,
        }
    }

    /// Maps a store error raised by a write: as [`From<StoreError>`], except that a failure
    /// without a more precise meaning is reported as a failed store (code 52) rather than a
    /// failed fetch (code 53).
    pub fn store(err: StoreError) -> ApiError {
        match ApiError::from(err) {
            ApiError::DbFetch(err) => ApiError::DbStore(err),
            other => other,
        }
    }

    /// The Taler error code of this error.
    pub fn taler_code(&self) -> TalerErrorCode {
        match self {
            ApiError::Missing(_) => taler_ec::GENERIC_PARAMETER_MISSING,
            ApiError::Malformed { .. } | ApiError::NoConfirmations | ApiError::CounterExhausted => {
                taler_ec::GENERIC_PARAMETER_MALFORMED
            }
            ApiError::JsonInvalid(_) => taler_ec::GENERIC_JSON_INVALID,
            ApiError::HeaderMalformed(_) | ApiError::UnsupportedMediaType(_) => {
                taler_ec::GENERIC_HTTP_HEADERS_MALFORMED
            }
            ApiError::CompressionInvalid => taler_ec::GENERIC_COMPRESSION_INVALID,
            ApiError::PayloadTooLarge(_) => taler_ec::GENERIC_UPLOAD_EXCEEDS_LIMIT,
            ApiError::InstanceUnknown => taler_ec::MERCHANT_GENERIC_INSTANCE_UNKNOWN,
            ApiError::Unauthorized => taler_ec::MERCHANT_GENERIC_UNAUTHORIZED,
            ApiError::Forbidden(_) => taler_ec::GENERIC_TOKEN_PERMISSION_INSUFFICIENT,
            ApiError::VerificationLocked { .. } => taler_ec::OTP_VERIFICATION_LOCKED,
            ApiError::VerificationDailyLimit { .. } => taler_ec::OTP_VERIFICATION_DAILY_LIMIT,
            ApiError::DeviceUnknown => taler_ec::MERCHANT_GENERIC_OTP_DEVICE_UNKNOWN,
            ApiError::TokenUnknown => taler_ec::MERCHANT_GENERIC_ACCESS_TOKEN_UNKNOWN,
            ApiError::DeviceExists => {
                taler_ec::MERCHANT_PRIVATE_POST_OTP_DEVICES_CONFLICT_OTP_DEVICE_EXISTS
            }
            ApiError::LoginThrottled { .. } => taler_ec::LOGIN_THROTTLED,
            ApiError::AuthThrottled { .. } => taler_ec::AUTH_THROTTLED,
            ApiError::LoginBusy => taler_ec::LOGIN_BUSY,
            ApiError::EndpointUnknown => taler_ec::GENERIC_ENDPOINT_UNKNOWN,
            ApiError::MethodInvalid => taler_ec::GENERIC_METHOD_INVALID,
            ApiError::UriTooLong => taler_ec::GENERIC_URI_TOO_LONG,
            ApiError::Unavailable(_) => taler_ec::GENERIC_DB_START_FAILED,
            ApiError::DbFetch(_) => taler_ec::GENERIC_DB_FETCH_FAILED,
            ApiError::DbStore(_) => taler_ec::GENERIC_DB_STORE_FAILED,
            ApiError::DbInvariant(_) => taler_ec::GENERIC_DB_INVARIANT_FAILURE,
            ApiError::Internal(_) => taler_ec::GENERIC_INTERNAL_INVARIANT_FAILURE,
        }
    }

    /// The fixed, human-readable hint for this error.
    pub fn hint(&self) -> &'static str {
        match self {
            ApiError::Missing(_) => "A required parameter in the request was missing.",
            ApiError::Malformed {
                hint: Some(hint), ..
            } => hint,
            ApiError::Malformed { hint: None, .. } => "A parameter in the request was malformed.",
            ApiError::JsonInvalid(_) => "The JSON in the client's request was malformed.",
            ApiError::HeaderMalformed(_) => "An HTTP header of the request was malformed.",
            ApiError::UnsupportedMediaType(_) => {
                "The request body must be JSON (Content-Type: application/json)."
            }
            ApiError::CompressionInvalid => "The body in the request could not be decompressed.",
            ApiError::PayloadTooLarge(_) => {
                "The body is too large to be permissible for the endpoint."
            }
            ApiError::InstanceUnknown => "The requested instance is unknown.",
            ApiError::Unauthorized => {
                "The request lacks valid authentication credentials for this instance."
            }
            ApiError::Forbidden(_) => {
                "The token does not grant the permission required for this operation."
            }
            ApiError::VerificationLocked { .. } => {
                "The OTP device is locked after repeated wrong codes; retry after the given seconds."
            }
            ApiError::VerificationDailyLimit { .. } => {
                "The OTP device has reached its daily limit of wrong codes; retry after midnight UTC."
            }
            ApiError::DeviceUnknown => "The requested OTP device is unknown.",
            ApiError::TokenUnknown => "The requested access token is unknown.",
            ApiError::DeviceExists => {
                "An OTP device with this ID already exists with different details."
            }
            ApiError::NoConfirmations => {
                "The OTP device uses algorithm NONE and issues no confirmations."
            }
            ApiError::CounterExhausted => {
                "The counter of this OTP device cannot be advanced any further."
            }
            ApiError::LoginThrottled { .. } => {
                "Too many failed logins from this address; retry after the given seconds."
            }
            ApiError::AuthThrottled { .. } => {
                "Too many failed authentications from this address; retry after the given seconds."
            }
            ApiError::LoginBusy => "Too many password checks at once; retry shortly.",
            ApiError::EndpointUnknown => "There is no endpoint defined for this URL.",
            ApiError::MethodInvalid => "The HTTP method is not allowed for this endpoint.",
            ApiError::UriTooLong => "The URI is longer than the server accepts.",
            ApiError::Unavailable(_) => "The database is temporarily unavailable; retry later.",
            ApiError::DbFetch(_) => "The service failed to fetch information from its database.",
            ApiError::DbStore(_) => "The service failed to store information in its database.",
            ApiError::DbInvariant(_) => "The service's database violates internal invariants.",
            ApiError::Internal(_) => "The HTTP server experienced an internal invariant failure.",
        }
    }

    /// The client-facing detail: only for 4xx answers.
    fn detail(&self) -> Option<String> {
        match self {
            ApiError::Missing(_)
            | ApiError::Malformed { .. }
            | ApiError::JsonInvalid(_)
            | ApiError::HeaderMalformed(_)
            | ApiError::UnsupportedMediaType(_)
            | ApiError::PayloadTooLarge(_)
            | ApiError::LoginThrottled { .. }
            | ApiError::AuthThrottled { .. }
            | ApiError::VerificationLocked { .. }
            | ApiError::VerificationDailyLimit { .. }
            | ApiError::Forbidden(_) => Some(self.to_string()),
            _ => None,
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::Missing(_)
            | ApiError::Malformed { .. }
            | ApiError::JsonInvalid(_)
            | ApiError::HeaderMalformed(_)
            | ApiError::CompressionInvalid => StatusCode::BAD_REQUEST,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::InstanceUnknown
            | ApiError::DeviceUnknown
            | ApiError::TokenUnknown
            | ApiError::EndpointUnknown => StatusCode::NOT_FOUND,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::DeviceExists | ApiError::NoConfirmations | ApiError::CounterExhausted => {
                StatusCode::CONFLICT
            }
            ApiError::VerificationLocked { .. } | ApiError::VerificationDailyLimit { .. } => {
                StatusCode::TOO_MANY_REQUESTS
            }
            ApiError::LoginThrottled { .. } | ApiError::AuthThrottled { .. } => {
                StatusCode::TOO_MANY_REQUESTS
            }
            ApiError::LoginBusy => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::MethodInvalid => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::UriTooLong => StatusCode::URI_TOO_LONG,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::DbFetch(_)
            | ApiError::DbStore(_)
            | ApiError::DbInvariant(_)
            | ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let status = self.status_code();
        if status.is_server_error() {
            tracing::error!(error = %error_chain(self), "request failed");
        }
        let body = ErrorDetail {
            code: self.taler_code(),
            hint: self.hint().to_owned(),
            detail: self.detail(),
        };
        let mut response = HttpResponse::build(status);
        match self {
            ApiError::Unavailable(_) => {
                response
                    .insert_header((header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECONDS)));
            }
            ApiError::Unauthorized => {
                response
                    .insert_header((header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer")));
            }
            ApiError::LoginThrottled { retry_after } | ApiError::AuthThrottled { retry_after } => {
                response.insert_header((header::RETRY_AFTER, HeaderValue::from(*retry_after)));
            }
            ApiError::LoginBusy => {
                response.insert_header((header::RETRY_AFTER, HeaderValue::from(1u32)));
            }
            ApiError::VerificationLocked { retry_after }
            | ApiError::VerificationDailyLimit { retry_after } => {
                response.insert_header((header::RETRY_AFTER, HeaderValue::from(*retry_after)));
            }

            _ => {}
        }
        response.json(body)
    }
}

impl From<StoreError> for ApiError {
    /// The one mapping of the store's outcomes to answers: what is missing or conflicting
    /// becomes its Taler error, an unreachable database 503, anything else a failed fetch.
    fn from(err: StoreError) -> ApiError {
        match err {
            StoreError::InstanceNotFound => ApiError::InstanceUnknown,
            StoreError::DeviceNotFound => ApiError::DeviceUnknown,
            StoreError::TokenNotFound => ApiError::TokenUnknown,
            StoreError::DeviceExists => ApiError::DeviceExists,
            StoreError::CounterExhausted => ApiError::CounterExhausted,
            // Busy (statement or lock timeout): 503 with Retry-After, as when unreachable.
            err @ StoreError::Timeout(_) => ApiError::Unavailable(err),
            err if err.is_unavailable() => ApiError::Unavailable(err),
            err @ (StoreError::Corrupt(_) | StoreError::Crypto(_)) => ApiError::DbInvariant(err),
            err => ApiError::DbFetch(err),
        }
    }
}

/// Formats an error with its whole `source()` chain, for the log.
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        out.push_str(": ");
        out.push_str(&cause.to_string());
        source = cause.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::body::MessageBody;

    fn body_of(err: ApiError) -> (StatusCode, serde_json::Value) {
        let response = err.error_response();
        let status = response.status();
        let bytes = response.into_body().try_into_bytes().unwrap();
        (status, serde_json::from_slice(&bytes).unwrap())
    }

    #[test]
    fn client_errors_carry_code_hint_and_detail() {
        let (status, body) = body_of(ApiError::malformed("faketime: not an integer"));
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(body["code"], 26);
        assert_eq!(body["detail"], "faketime: not an integer");
        assert!(body["hint"].as_str().unwrap().len() > 5);
    }

    #[test]
    fn server_errors_never_carry_detail() {
        let (status, body) = body_of(ApiError::Internal("secret internals".into()));
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(body["code"], 60);
        assert!(body.get("detail").is_none());
        assert!(!body.to_string().contains("secret internals"));
    }

    #[test]
    fn not_found_conflict_and_auth_codes() {
        assert_eq!(body_of(ApiError::DeviceUnknown).1["code"], 2021);
        assert_eq!(body_of(ApiError::DeviceExists).0, StatusCode::CONFLICT);
        assert_eq!(body_of(ApiError::DeviceExists).1["code"], 2851);
        assert_eq!(body_of(ApiError::Unauthorized).1["code"], 2015);
        assert_eq!(
            body_of(ApiError::Forbidden("otp-devices-write")).0,
            StatusCode::FORBIDDEN
        );
        assert_eq!(body_of(ApiError::InstanceUnknown).1["code"], 2000);
    }
}
