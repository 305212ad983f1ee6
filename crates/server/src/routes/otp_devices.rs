//! The OTP-device endpoints: list, create, get (with the confirmation code), update, delete.

use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpRequest, HttpResponse, web};
use chrono::Utc;
use otp_store::otp_devices::{self, Created, NewOtpDevice, OtpDevicePatch};

use crate::api::{
    OtpDeviceAddDetails, OtpDeviceDetails, OtpDeviceEntry, OtpDevicePatchDetails,
    OtpDeviceSummaryResponse,
};
use crate::auth::{Permission, authorize};
use crate::body::read_json;
use crate::error::{ApiError, ErrorDetail, PrivateEndpointErrors};
use crate::query::CodeQuery;
use crate::routes::{device_id_of, instance_of};
use crate::state::AppState;

/// Lists the instance's OTP devices.
#[utoipa::path(
    get,
    path = "/instances/{instance}/private/otp-devices",
    tag = "otp-devices",
    params(("instance" = String, Path, description = "Instance ID")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The devices", body = OtpDeviceSummaryResponse),
        (status = 404, description = "Instance unknown, code 2000", body = ErrorDetail),
        PrivateEndpointErrors,
    )
)]
pub async fn list_otp_devices(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let instance = instance_of(&req, &state)?;
    authorize(&state, &req, &instance, Permission::OtpDevicesRead).await?;
    let devices = otp_devices::list(&state.store, &instance).await?;
    let otp_devices = devices
        .into_iter()
        .map(|d| OtpDeviceEntry {
            otp_device_id: d.id.as_str().to_owned(),
            device_description: d.description,
        })
        .collect();
    Ok(HttpResponse::Ok().json(OtpDeviceSummaryResponse { otp_devices }))
}

/// Registers an OTP device. Repeating the request with identical details succeeds again (204);
/// the same ID with different details is a conflict (409, code 2851).
#[utoipa::path(
    post,
    path = "/instances/{instance}/private/otp-devices",
    tag = "otp-devices",
    params(("instance" = String, Path, description = "Instance ID")),
    request_body(content = OtpDeviceAddDetails, content_type = "application/json"),
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Device created (or identical device already present)"),
        (status = 400, description = "Malformed body or field, codes 22, 25, 26", body = ErrorDetail),
        (status = 404, description = "Instance unknown, code 2000", body = ErrorDetail),
        (status = 409, description = "Device exists with different details, code 2851", body = ErrorDetail),
        (status = 413, description = "Body over 64 KiB, code 32", body = ErrorDetail),
        PrivateEndpointErrors,
    )
)]
pub async fn create_otp_device(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let instance = instance_of(&req, &state)?;
    authorize(&state, &req, &instance, Permission::OtpDevicesWrite).await?;
    let details = read_json::<OtpDeviceAddDetails>(&req, payload, false)
        .await?
        .validate()?;
    let device = NewOtpDevice {
        id: details.id,
        description: details.description,
        key: details.key,
        algorithm: details.algorithm,
        counter: details.counter,
    };
    match otp_devices::create(&state.store, &instance, &device)
        .await
        .map_err(ApiError::store)?
    {
        Created::Inserted | Created::Unchanged => Ok(HttpResponse::NoContent().finish()),
    }
}

/// Returns a device and, when it can be computed, the confirmation code for `faketime` (or the
/// server's time) and `price`. Never changes state: a counter-mode device's counter is not advanced.
#[utoipa::path(
    get,
    path = "/instances/{instance}/private/otp-devices/{device_id}",
    tag = "otp-devices",
    params(
        ("instance" = String, Path, description = "Instance ID"),
        ("device_id" = String, Path, description = "Device ID (percent-encoded)"),
        ("faketime" = Option<u64>, Query, description = "Seconds since the epoch to compute the code for, 0 ≤ faketime ≤ 18446744073709", maximum = 18446744073709_u64),
        ("price" = Option<String>, Query, description = "Taler amount the code is bound to (with-price algorithms), e.g. EUR:1.5", pattern = r"^[A-Z]{1,11}:[0-9]+(\.[0-9]{1,8})?$"),
    ),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The device and its code", body = OtpDeviceDetails),
        (status = 400, description = "Malformed faketime or price, code 26", body = ErrorDetail),
        (status = 404, description = "Instance (2000) or device (2021) unknown", body = ErrorDetail),
        PrivateEndpointErrors,
    )
)]
pub async fn get_otp_device(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let instance = instance_of(&req, &state)?;
    authorize(&state, &req, &instance, Permission::OtpDevicesRead).await?;
    let query = CodeQuery::parse(req.query_string())?;
    let id = device_id_of(&req)?;
    let device = state.device(&instance, &id).await?;
    let otp_timestamp = query.faketime.unwrap_or_else(now_seconds);
    let otp_code = otp_algo::confirmation(
        &device.key,
        device.algorithm,
        query.price.as_ref(),
        otp_timestamp,
        device.counter,
    );
    let details = OtpDeviceDetails {
        device_description: device.description.clone(),
        otp_algorithm: device.algorithm.as_int(),
        otp_ctr: device.counter,
        otp_timestamp,
        otp_code,
    };
    // Serialized into a buffer sized for a typical answer (five codes), so it is not regrown.
    let mut body = Vec::with_capacity(160 + details.device_description.len());
    serde_json::to_writer(&mut body, &details)
        .map_err(|err| ApiError::Internal(format!("serializing a device: {err}")))?;
    Ok(HttpResponse::Ok()
        .insert_header((
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        ))
        .body(body))
}

/// Updates a device. `otp_device_description` is required; absent or `null` optional fields
/// keep their stored values.
#[utoipa::path(
    patch,
    path = "/instances/{instance}/private/otp-devices/{device_id}",
    tag = "otp-devices",
    params(
        ("instance" = String, Path, description = "Instance ID"),
        ("device_id" = String, Path, description = "Device ID (percent-encoded)"),
    ),
    request_body(content = OtpDevicePatchDetails, content_type = "application/json"),
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Device updated"),
        (status = 400, description = "Malformed body or field, codes 22, 25, 26", body = ErrorDetail),
        (status = 404, description = "Instance (2000) or device (2021) unknown", body = ErrorDetail),
        (status = 413, description = "Body over 64 KiB, code 32", body = ErrorDetail),
        PrivateEndpointErrors,
    )
)]
pub async fn update_otp_device(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let instance = instance_of(&req, &state)?;
    authorize(&state, &req, &instance, Permission::OtpDevicesWrite).await?;
    let id = device_id_of(&req)?;
    let patch = read_json::<OtpDevicePatchDetails>(&req, payload, false)
        .await?
        .validate()?;
    let patch = OtpDevicePatch {
        description: patch.description,
        key: patch.key,
        algorithm: patch.algorithm,
        counter: patch.counter,
    };
    let result = otp_devices::update(&state.store, &instance, &id, &patch).await;
    state.forget_device(&instance, &id);
    result.map_err(ApiError::store)?;
    Ok(HttpResponse::NoContent().finish())
}

/// Deletes a device.
#[utoipa::path(
    delete,
    path = "/instances/{instance}/private/otp-devices/{device_id}",
    tag = "otp-devices",
    params(
        ("instance" = String, Path, description = "Instance ID"),
        ("device_id" = String, Path, description = "Device ID (percent-encoded)"),
    ),
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Device deleted"),
        (status = 404, description = "Instance (2000) or device (2021) unknown", body = ErrorDetail),
        PrivateEndpointErrors,
    )
)]
pub async fn delete_otp_device(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let instance = instance_of(&req, &state)?;
    authorize(&state, &req, &instance, Permission::OtpDevicesWrite).await?;
    let id = device_id_of(&req)?;
    let result = otp_devices::delete(&state.store, &instance, &id).await;
    state.forget_device(&instance, &id);
    result.map_err(ApiError::store)?;
    Ok(HttpResponse::NoContent().finish())
}

/// The server's clock, in whole seconds since the epoch.
pub fn now_seconds() -> u64 {
    u64::try_from(Utc::now().timestamp()).unwrap_or(0)
}
