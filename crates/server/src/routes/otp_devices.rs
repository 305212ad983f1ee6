//! The OTP-device endpoints: list, create, get (with the confirmation code), update, delete.

use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpRequest, HttpResponse, web};
use otp_store::instances;
use otp_store::otp_devices::{self, Created};

use crate::api::{
    DeviceToAdd, OtpDeviceAddDetails, OtpDeviceDetails, OtpDeviceEnrolment, OtpDevicePatchDetails,
    OtpDeviceSummaryResponse,
};
use crate::body::read_json;
use crate::clock;
use crate::enrolment::{self, Enrolment};
use crate::error::{ApiError, ErrorDetail, PrivateEndpointErrors};
use crate::extract::{Authorized, DeviceRequest, Read, Write};
use crate::query::{CodeQuery, Page};

/// Lists the instance's OTP devices.
#[utoipa::path(
    get,
    path = "/instances/{instance}/private/otp-devices",
    tag = "otp-devices",
    params(
        ("instance" = String, Path, description = "Instance ID"),
        ("limit" = Option<u32>, Query, description = "Devices to return, 1–1000 (extension; without `limit` and `offset` every device is listed, as upstream does; with only `offset`, 100)", minimum = 1, maximum = 1000),
        ("offset" = Option<u64>, Query, description = "Devices to skip, in id order (extension; default 0)", minimum = 0),
    ),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The devices", body = OtpDeviceSummaryResponse),
        (status = 400, description = "Malformed limit or offset (26)", body = ErrorDetail),
        (status = 404, description = "Instance unknown, code 2000", body = ErrorDetail),
        PrivateEndpointErrors,
    )
)]
pub async fn list_otp_devices(
    auth: Authorized<Read>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let page = Page::parse(req.query_string())?;
    let body = if page.is_requested() {
        let (limit, offset) = page.or_default();
        auth.state
            .device_list_page(&auth.instance, limit, offset)
            .await?
    } else {
        auth.state.device_list(&auth.instance).await?
    };

    Ok(HttpResponse::Ok()
        .insert_header((
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        ))
        .body(body))
}

/// Registers an OTP device. Repeating the request with identical details succeeds again (204);
/// the same ID with different details is a conflict (409, code 2851). Without `otp_key`
/// (extension, `docs/api.md` §11) the server generates the key and answers 200 with it, its
/// provisioning URI and QR codes, once.
#[utoipa::path(
    post,
    path = "/instances/{instance}/private/otp-devices",
    tag = "otp-devices",
    params(("instance" = String, Path, description = "Instance ID")),
    request_body(content = OtpDeviceAddDetails, content_type = "application/json"),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Device created with a generated key (extension, `otp_key` absent or null): the key, shown this once, its provisioning URI and QR codes", body = OtpDeviceEnrolment),
        (status = 204, description = "Device created (or identical device already present)"),
        (status = 400, description = "Malformed body or field, codes 22, 25, 26 (25 also for algorithm NONE without otp_key)", body = ErrorDetail),
        (status = 404, description = "Instance unknown, code 2000", body = ErrorDetail),
        (status = 409, description = "Device exists with different details, code 2851", body = ErrorDetail),
        (status = 413, description = "Body over 64 KiB, code 32", body = ErrorDetail),
        PrivateEndpointErrors,
    )
)]
pub async fn create_otp_device(
    auth: Authorized<Write>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let mut device = read_json::<OtpDeviceAddDetails>(&req, payload, false)
        .await?
        .validate()?;
    let Some(key) = device.key.take() else {
        return enrol_otp_device(&auth, device).await;
    };
    match auth
        .state
        .create_device(&auth.instance, &device.with_key(key))
        .await
        .map_err(ApiError::store)?
    {
        Created::Inserted | Created::Unchanged => Ok(HttpResponse::NoContent().finish()),
    }
}

/// Creates `device` with a generated key and answers 200 with its enrolment (`docs/api.md`
/// §11). The URI and QR codes are made before the device is stored, so a device is never stored
/// with a key nobody was shown. A repeat finds the device with another key: 409, code 2851.
async fn enrol_otp_device(
    auth: &Authorized<Write>,
    device: DeviceToAdd,
) -> Result<HttpResponse, ApiError> {
    let instance = instances::get(&auth.state.store, &auth.instance).await?;
    let issuer = if instance.name.is_empty() {
        instance.id.as_str()
    } else {
        instance.name.as_str()
    };
    let key = enrolment::generate_key().map_err(|err| ApiError::Internal(err.to_string()))?;
    let enrolment = Enrolment::new(
        issuer,
        device.id.as_str(),
        &key,
        device.algorithm,
        device.counter,
    )
    .map_err(|err| ApiError::Internal(err.to_string()))?
    .ok_or_else(|| ApiError::Internal("no enrolment for algorithm NONE".to_owned()))?;
    auth.state
        .create_device(&auth.instance, &device.with_key(key))
        .await
        .map_err(ApiError::store)?;
    Ok(HttpResponse::Ok().json(OtpDeviceEnrolment::from(enrolment)))
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
    request: DeviceRequest<Read>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let query = CodeQuery::parse(req.query_string())?;
    let auth = &request.auth;
    let device = auth.state.device(&auth.instance, &request.device).await?;
    // The counter of a counter-based device is not cached (advancing it notifies nobody):
    // read as stored now, one column.
    let counter = if device.algorithm.is_counter_based() {
        otp_devices::counter(&auth.state.store, &auth.instance, &request.device)
            .await?
            .1
    } else {
        device.counter
    };
    let otp_timestamp = query.faketime.unwrap_or_else(clock::now_seconds);
    let otp_code = otp_algo::confirmation(
        &device.key,
        device.algorithm,
        query.price.as_ref(),
        otp_timestamp,
        counter,
    );
    let details = OtpDeviceDetails {
        device_description: &device.description,
        otp_algorithm: device.algorithm.as_int(),
        otp_ctr: counter,
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
    request: DeviceRequest<Write>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let patch = read_json::<OtpDevicePatchDetails>(&req, payload, false)
        .await?
        .validate()?;
    let auth = &request.auth;
    auth.state
        .update_device(&auth.instance, &request.device, &patch)
        .await
        .map_err(ApiError::store)?;
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
pub async fn delete_otp_device(request: DeviceRequest<Write>) -> Result<HttpResponse, ApiError> {
    let auth = &request.auth;
    auth.state
        .delete_device(&auth.instance, &request.device)
        .await
        .map_err(ApiError::store)?;
    Ok(HttpResponse::NoContent().finish())
}
