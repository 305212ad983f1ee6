//! Extension: `POST …/otp-devices/$DEVICE_ID/confirmations` issues a payment confirmation.
//!
//! Time modes return what GET one would show now; counter modes use the stored counter and
//! advance it in the same statement, so concurrent payments never share a code.

use actix_web::{HttpRequest, HttpResponse, web};
use otp_algo::Algorithm;

use crate::api::{ConfirmationRequest, ConfirmationResponse, parse_price_value};
use crate::body::read_json;
use crate::clock;
use crate::error::{ApiError, ErrorDetail, PrivateEndpointErrors};
use crate::extract::{DeviceRequest, Write};

/// Issues the confirmation a customer is shown after paying (**extension**, not in upstream).
/// Counter-mode devices advance their counter by one; an empty body is allowed.
#[utoipa::path(
    post,
    path = "/instances/{instance}/private/otp-devices/{device_id}/confirmations",
    tag = "otp-devices (extension)",
    params(
        ("instance" = String, Path, description = "Instance ID"),
        ("device_id" = String, Path, description = "Device ID (percent-encoded)"),
    ),
    request_body(content = ConfirmationRequest, content_type = "application/json"),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The confirmation", body = ConfirmationResponse),
        (status = 400, description = "Malformed body or price (26); price missing for a with-price algorithm (25)", body = ErrorDetail),
        (status = 404, description = "Instance (2000) or device (2021) unknown", body = ErrorDetail),
        (status = 409, description = "Algorithm NONE issues no confirmations, or the counter is exhausted (26)", body = ErrorDetail),
        PrivateEndpointErrors,
    )
)]
pub async fn create_confirmation(
    request: DeviceRequest<Write>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let body = read_json::<ConfirmationRequest>(&req, payload, true).await?;
    let price = parse_price_value(body.price)?;
    let (auth, id) = (&request.auth, &request.device);
    let device = auth.state.device(&auth.instance, id).await?;
    if device.algorithm == Algorithm::None {
        return Err(ApiError::NoConfirmations);
    }
    if device.algorithm.uses_price() && price.is_none() {
        return Err(ApiError::Missing(format!(
            "price: required by algorithm {}",
            device.algorithm.name()
        )));
    }
    let otp_timestamp = clock::now_seconds();
    let (key, algorithm, counter) = if device.algorithm.is_counter_based() {
        let advanced = auth
            .state
            .advance_counter(&auth.instance, id)
            .await
            .map_err(ApiError::store)?;
        // The device may have been patched since it was cached: recheck what the row says now.
        if advanced.algorithm.uses_price() && price.is_none() {
            return Err(ApiError::Missing(format!(
                "price: required by algorithm {}",
                advanced.algorithm.name()
            )));
        }
        (advanced.key, advanced.algorithm, advanced.counter)
    } else {
        (device.key.clone(), device.algorithm, device.counter)
    };
    let pos_confirmation =
        otp_algo::confirmation(&key, algorithm, price.as_ref(), otp_timestamp, counter)
            .ok_or(ApiError::NoConfirmations)?;
    Ok(HttpResponse::Ok().json(ConfirmationResponse {
        pos_confirmation,
        otp_timestamp,
        otp_ctr: counter,
    }))
}
