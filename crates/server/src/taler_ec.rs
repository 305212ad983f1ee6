//! Named GNU Taler error codes (`TALER_EC_…`, from the GANA registry) used in error bodies.
//!
//! Only the codes this service emits are listed; the numbers are part of the wire contract.

/// A Taler error code as it appears in the `code` field of an error body.
pub type TalerErrorCode = u32;

/// The permission attached to the token does not cover the operation.
pub const GENERIC_TOKEN_PERMISSION_INSUFFICIENT: TalerErrorCode = 16;
/// The HTTP method is not allowed on this endpoint.
pub const GENERIC_METHOD_INVALID: TalerErrorCode = 20;
/// No endpoint is defined for this path.
pub const GENERIC_ENDPOINT_UNKNOWN: TalerErrorCode = 21;
/// The request body is not valid JSON.
pub const GENERIC_JSON_INVALID: TalerErrorCode = 22;
/// An HTTP header (such as `Content-Type`) is malformed or unsupported.
pub const GENERIC_HTTP_HEADERS_MALFORMED: TalerErrorCode = 23;
/// A required parameter is missing.
pub const GENERIC_PARAMETER_MISSING: TalerErrorCode = 25;
/// A parameter is malformed.
pub const GENERIC_PARAMETER_MALFORMED: TalerErrorCode = 26;
/// The request body could not be decompressed.
pub const GENERIC_COMPRESSION_INVALID: TalerErrorCode = 28;
/// The request URI is too long.
pub const GENERIC_URI_TOO_LONG: TalerErrorCode = 31;
/// The request body is larger than the endpoint accepts.
pub const GENERIC_UPLOAD_EXCEEDS_LIMIT: TalerErrorCode = 32;
/// The database could not start a transaction (used while it is unreachable).
pub const GENERIC_DB_START_FAILED: TalerErrorCode = 51;
/// The database failed to store information.
pub const GENERIC_DB_STORE_FAILED: TalerErrorCode = 52;
/// The database failed to fetch information.
pub const GENERIC_DB_FETCH_FAILED: TalerErrorCode = 53;
/// The database holds data that violates the service's invariants.
pub const GENERIC_DB_INVARIANT_FAILURE: TalerErrorCode = 56;
/// An internal invariant of the HTTP server failed (a bug).
pub const GENERIC_INTERNAL_INVARIANT_FAILURE: TalerErrorCode = 60;
/// The instance named in the path is unknown.
pub const MERCHANT_GENERIC_INSTANCE_UNKNOWN: TalerErrorCode = 2000;
/// The credentials are missing or not valid for this instance.
pub const MERCHANT_GENERIC_UNAUTHORIZED: TalerErrorCode = 2015;
/// The OTP device named in the path is unknown.
pub const MERCHANT_GENERIC_OTP_DEVICE_UNKNOWN: TalerErrorCode = 2021;
/// A device with this id exists with different details.
pub const MERCHANT_PRIVATE_POST_OTP_DEVICES_CONFLICT_OTP_DEVICE_EXISTS: TalerErrorCode = 2851;
/// Extension (not in GNU Taler's registry): the access token serial is unknown in this instance.
pub const MERCHANT_GENERIC_ACCESS_TOKEN_UNKNOWN: TalerErrorCode = 9904;
/// Extension (`docs/api.md` §10): the device is locked after repeated mismatches.
pub const OTP_VERIFICATION_LOCKED: TalerErrorCode = 9901;
/// Extension (`docs/api.md` §10): the device's daily limit of mismatches is reached.
pub const OTP_VERIFICATION_DAILY_LIMIT: TalerErrorCode = 9902;
/// Extension (`docs/api.md` §12): too many failed logins from this address for this instance.
pub const LOGIN_THROTTLED: TalerErrorCode = 9903;
/// Extension (`docs/api.md` §12): too many password checks at once; retry shortly.
pub const LOGIN_BUSY: TalerErrorCode = 9905;
/// Extension (`docs/api.md` §7): too many failed authentications from this client address.
pub const AUTH_THROTTLED: TalerErrorCode = 9906;
