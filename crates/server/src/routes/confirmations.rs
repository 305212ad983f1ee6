//! Extension: `POST …/otp-devices/$DEVICE_ID/confirmations` issues a payment confirmation.
//!
//! Time modes return what GET one would show now; counter modes use the stored counter and
//! advance it in the same statement (one round trip, no change notification), so concurrent
//! payments never share a code.

use actix_web::{HttpRequest, HttpResponse, web};
use otp_algo::{Algorithm, Amount};
use otp_store::otp_devices::{Advance, OtpDevice};

use crate::api::{ConfirmationRequest, ConfirmationResponse, parse_price_value};
use crate::audit_events;
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
    let otp_timestamp = clock::now_seconds();
    // A device cached as time-based needs no write; any other takes its counter value in one
    // statement that also checks the algorithm and the price, so no value is used up by a
    // request that cannot be served.
    if let Some(device) = auth.state.cached_device(&auth.instance, id) {
        if !device.algorithm.is_counter_based() {
            let answer = time_based(&device, price.as_ref(), otp_timestamp)?;
            audit_events::confirmation_issued(&req, auth, id, None, otp_timestamp).await?;
            return Ok(answer);
        }
    }
    // The device can change between the statements (rare): then it is taken again.
    for _ in 0..3 {
        let advance = auth
            .state
            .advance_counter(&auth.instance, id, price.is_some())
            .await
            .map_err(ApiError::store)?;
        match advance {
            Advance::Taken(device) => {
                let pos_confirmation = otp_algo::confirmation(
                    &device.key,
                    device.algorithm,
                    price.as_ref(),
                    otp_timestamp,
                    device.counter,
                )
                .ok_or(ApiError::NoConfirmations)?;
                let (counter, timestamp) = (Some(device.counter), otp_timestamp);
                audit_events::confirmation_issued(&req, auth, id, counter, timestamp).await?;
                return Ok(answer(pos_confirmation, otp_timestamp, device.counter));
            }
            Advance::PriceMissing(algorithm) => return Err(price_missing(algorithm)),
            Advance::NotCounterBased(_) => {
                // Uncached, or cached as counter-based and changed since: read it now.
                let device = auth.state.reload_device(&auth.instance, id).await?;
                if !device.algorithm.is_counter_based() {
                    let answer = time_based(&device, price.as_ref(), otp_timestamp)?;
                    audit_events::confirmation_issued(&req, auth, id, None, otp_timestamp).await?;
                    return Ok(answer);
                }
            }
        }
    }
    Err(ApiError::Internal(format!(
        "device {id} kept changing its algorithm during a confirmation"
    )))
}

/// The confirmation of a device that is not counter-based: what GET one shows now.
fn time_based(
    device: &OtpDevice,
    price: Option<&Amount>,
    otp_timestamp: u64,
) -> Result<HttpResponse, ApiError> {
    if device.algorithm == Algorithm::None {
        return Err(ApiError::NoConfirmations);
    }
    if device.algorithm.uses_price() && price.is_none() {
        return Err(price_missing(device.algorithm));
    }
    let pos_confirmation = otp_algo::confirmation(
        &device.key,
        device.algorithm,
        price,
        otp_timestamp,
        device.counter,
    )
    .ok_or(ApiError::NoConfirmations)?;
    Ok(answer(pos_confirmation, otp_timestamp, device.counter))
}

fn price_missing(algorithm: Algorithm) -> ApiError {
    ApiError::Missing(format!("price: required by algorithm {}", algorithm.name()))
}

fn answer(pos_confirmation: String, otp_timestamp: u64, otp_ctr: u64) -> HttpResponse {
    HttpResponse::Ok().json(ConfirmationResponse {
        pos_confirmation,
        otp_timestamp,
        otp_ctr,
    })
}
