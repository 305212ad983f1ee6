//! Extension: verifying a typed code once (`docs/api.md` §10) — the attempt, the unlock, and
//! the history of attempts.

use actix_web::{HttpRequest, HttpResponse, web};
use otp_algo::Algorithm;
use otp_store::verifications::{self, Attempt, Outcome};

use crate::api::{
    VerificationEntry, VerificationRequest, VerificationResponse, VerificationsResponse,
};
use crate::body::read_json;
use crate::clock;
use crate::error::{ApiError, ErrorDetail, PrivateEndpointErrors};
use crate::extract::{DeviceRequest, Read, Verify, Write};
use crate::query::Page;
use crate::verify::Typed;

/// Checks a code a person typed, once (**extension**). `verified: true` at most once per TOTP
/// step (per amount for with-price algorithms) or HOTP counter, decided atomically in the
/// database; repeated mismatches lock the device for a short, growing time, never for good.
#[utoipa::path(
    post,
    path = "/instances/{instance}/private/otp-devices/{device_id}/verifications",
    tag = "otp-devices (extension)",
    params(
        ("instance" = String, Path, description = "Instance ID"),
        ("device_id" = String, Path, description = "Device ID (percent-encoded)"),
    ),
    request_body(content = VerificationRequest, content_type = "application/json"),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The decision: verified, or not with a reason (mismatch, replayed)", body = VerificationResponse),
        (status = 400, description = "Malformed body, code or price (26); code, or price for a with-price algorithm, missing (25)", body = ErrorDetail),
        (status = 404, description = "Instance (2000) or device (2021) unknown", body = ErrorDetail),
        (status = 409, description = "Algorithm NONE issues no codes (26)", body = ErrorDetail),
        (status = 429, description = "Locked after repeated mismatches (9901, `detail` the seconds left) or the daily limit of mismatches reached (9902)", body = ErrorDetail,
            headers(("Retry-After" = u32, description = "Seconds until attempts are accepted again"))),
        PrivateEndpointErrors,
    )
)]
pub async fn create_verification(
    request: DeviceRequest<Verify>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let attempt = read_json::<VerificationRequest>(&req, payload, false)
        .await?
        .validate()?;
    let auth = &request.auth;
    let device = auth.state.device(&auth.instance, &request.device).await?;
    if device.algorithm == Algorithm::None {
        return Err(ApiError::NoConfirmations);
    }
    if device.algorithm.uses_price() && attempt.price.is_none() {
        return Err(ApiError::Missing(format!(
            "price: required by algorithm {}",
            device.algorithm.name()
        )));
    }
    let client = auth.client_address();
    let outcome = auth
        .state
        .verify_code(
            &auth.instance,
            &device,
            Typed {
                code: &attempt.code,
                price: attempt.price.as_ref(),
            },
            &Attempt {
                reference: attempt.reference.as_deref(),
                client: &client,
                token_serial: auth.caller.serial,
            },
        )
        .await?;
    let answer = match outcome {
        Outcome::Verified {
            otp_ctr,
            matched_offset,
        } => VerificationResponse {
            verified: true,
            otp_timestamp: Some(clock::now_seconds()),
            matched_offset,
            otp_ctr,
            reason: None,
            reference: None,
        },
        Outcome::Mismatch => refused("mismatch", None),
        Outcome::Replayed { reference } => refused("replayed", Some(reference)),
        Outcome::Locked { retry_after_s } => {
            return Err(ApiError::VerificationLocked {
                retry_after: retry_after_s,
            });
        }
        Outcome::DailyLimit { retry_after_s } => {
            return Err(ApiError::VerificationDailyLimit {
                retry_after: retry_after_s,
            });
        }
        Outcome::Stale { .. } => {
            return Err(ApiError::Internal(
                "a stale verification outcome reached the handler".to_owned(),
            ));
        }
    };
    Ok(HttpResponse::Ok().json(answer))
}

fn refused(reason: &'static str, reference: Option<Option<String>>) -> VerificationResponse {
    VerificationResponse {
        verified: false,
        otp_timestamp: None,
        matched_offset: None,
        otp_ctr: None,
        reason: Some(reason),
        reference,
    }
}

/// Clears a device's lock and its counts of mismatches (**extension**).
#[utoipa::path(
    post,
    path = "/instances/{instance}/private/otp-devices/{device_id}/unlock",
    tag = "otp-devices (extension)",
    params(
        ("instance" = String, Path, description = "Instance ID"),
        ("device_id" = String, Path, description = "Device ID (percent-encoded)"),
    ),
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Unlocked"),
        (status = 404, description = "Instance (2000) or device (2021) unknown", body = ErrorDetail),
        PrivateEndpointErrors,
    )
)]
pub async fn unlock_device(request: DeviceRequest<Write>) -> Result<HttpResponse, ApiError> {
    let auth = &request.auth;
    verifications::unlock(&auth.state.store, &auth.instance, &request.device)
        .await
        .map_err(ApiError::store)?;
    Ok(HttpResponse::NoContent().finish())
}

/// The device's verification attempts, newest first (**extension**). The typed codes are
/// never stored.
#[utoipa::path(
    get,
    path = "/instances/{instance}/private/otp-devices/{device_id}/verifications",
    tag = "otp-devices (extension)",
    params(
        ("instance" = String, Path, description = "Instance ID"),
        ("device_id" = String, Path, description = "Device ID (percent-encoded)"),
        ("limit" = Option<u32>, Query, description = "Attempts to return, 1–1000 (default 100)", minimum = 1, maximum = 1000),
        ("offset" = Option<u64>, Query, description = "Newest attempts to skip (default 0)", minimum = 0),
    ),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The attempts", body = VerificationsResponse),
        (status = 400, description = "Malformed limit or offset (26)", body = ErrorDetail),
        (status = 404, description = "Instance (2000) or device (2021) unknown", body = ErrorDetail),
        PrivateEndpointErrors,
    )
)]
pub async fn list_verifications(
    request: DeviceRequest<Read>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let (limit, offset) = Page::parse(req.query_string())?.or_default();
    let auth = &request.auth;
    let attempts = verifications::history(
        &auth.state.store,
        &auth.instance,
        &request.device,
        limit,
        offset,
    )
    .await?;
    let verifications = attempts
        .into_iter()
        .map(|attempt| VerificationEntry {
            time: attempt.time.timestamp(),
            outcome: attempt.outcome.as_str(),
            reference: attempt.reference,
            otp_ctr: attempt.otp_ctr,
            matched_offset: attempt.matched_offset,
            client: attempt.client,
            token_serial: attempt.token_serial,
        })
        .collect();
    Ok(HttpResponse::Ok().json(VerificationsResponse { verifications }))
}
