//! Route registration: the single place that maps paths to handlers.
//!
//! Every endpoint is served both under `/instances/{instance}` and without the prefix (the
//! default instance). `/instances/default/…` answers 308 to the unprefixed path. Unknown paths
//! and methods answer Taler errors 21 and 20.

pub mod bench;
pub mod config;
pub mod confirmations;
pub mod otp_devices;

use std::borrow::Cow;

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use otp_store::{InstanceId, OtpDeviceId};

use crate::api::parse_device_id;
use crate::error::ApiError;
use crate::state::AppState;

/// The route pattern of a resource (`/instances/{instance}/private/otp-devices/{device_id}`),
/// attached to it as app data so the request log names the route without matching the path
/// against the resource map a second time.
#[derive(Debug, Clone)]
pub struct RoutePattern(pub String);

/// Registers every route of the API on `cfg`.
///
/// The paths are registered as nested scopes with static prefixes (`/instances`,
/// `/private/otp-devices`) wherever possible, so routing a request compares strings and matches
/// patterns only against the short dynamic segments. `/instances/default/…` comes before
/// `/instances/{instance}/…`; no unprefixed path starts with `/instances`.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::scope("/instances")
            .service(
                web::scope("/default")
                    .app_data(RoutePattern("/instances/default/{tail:.*}".to_owned()))
                    .default_service(web::to(redirect_default_instance)),
            )
            .service(
                web::scope("/{instance}")
                    .configure(|scope| register_api(scope, "/instances/{instance}")),
            ),
    );
    register_api(cfg, "");
}

/// Registers the API's resources on `cfg`, whose paths lie under `prefix`.
fn register_api(cfg: &mut web::ServiceConfig, prefix: &str) {
    let devices = format!("{prefix}/private/otp-devices");
    cfg.service(
        web::resource("/config")
            .app_data(RoutePattern(format!("{prefix}/config")))
            .route(web::get().to(config::get_config))
            .default_service(web::to(method_not_allowed)),
    )
    .service(
        web::scope("/private/otp-devices")
            .service(
                web::resource("")
                    .app_data(RoutePattern(devices.clone()))
                    .route(web::get().to(otp_devices::list_otp_devices))
                    .route(web::post().to(otp_devices::create_otp_device))
                    .default_service(web::to(method_not_allowed)),
            )
            .service(
                web::resource("/{device_id}")
                    .app_data(RoutePattern(format!("{devices}/{{device_id}}")))
                    .route(web::get().to(otp_devices::get_otp_device))
                    .route(web::patch().to(otp_devices::update_otp_device))
                    .route(web::delete().to(otp_devices::delete_otp_device))
                    .default_service(web::to(method_not_allowed)),
            )
            .service(
                web::resource("/{device_id}/confirmations")
                    .app_data(RoutePattern(format!(
                        "{devices}/{{device_id}}/confirmations"
                    )))
                    .route(web::post().to(confirmations::create_confirmation))
                    .default_service(web::to(method_not_allowed)),
            ),
    );
}

/// Fallback for paths no route matches.
pub async fn endpoint_unknown() -> Result<HttpResponse, ApiError> {
    Err(ApiError::EndpointUnknown)
}

async fn method_not_allowed() -> Result<HttpResponse, ApiError> {
    Err(ApiError::MethodInvalid)
}

/// `/instances/default/…` → `308` to the unprefixed path, as upstream does.
async fn redirect_default_instance(req: HttpRequest) -> HttpResponse {
    // What follows `/instances/default`: empty, or `/` and the rest.
    let tail = req.match_info().unprocessed();
    let mut location = if tail.is_empty() {
        "/".to_owned()
    } else {
        tail.to_owned()
    };
    if !req.query_string().is_empty() {
        location.push('?');
        location.push_str(req.query_string());
    }
    HttpResponse::PermanentRedirect()
        .insert_header((header::LOCATION, location))
        .finish()
}

/// The instance a request addresses: the `{instance}` path segment, or the default instance.
/// An id that cannot exist is reported as an unknown instance.
pub fn instance_of(req: &HttpRequest, state: &AppState) -> Result<InstanceId, ApiError> {
    match req.match_info().get("instance") {
        None => Ok(state.default_instance.clone()),
        Some(raw) => {
            let decoded = decode_segment(raw).ok_or(ApiError::InstanceUnknown)?;
            InstanceId::parse(&decoded).map_err(|_| ApiError::InstanceUnknown)
        }
    }
}

/// The `{device_id}` path segment, fully percent-decoded. An id that cannot exist is an unknown device.
pub fn device_id_of(req: &HttpRequest) -> Result<OtpDeviceId, ApiError> {
    let raw = req
        .match_info()
        .get("device_id")
        .ok_or(ApiError::EndpointUnknown)?;
    let decoded = decode_segment(raw).ok_or(ApiError::DeviceUnknown)?;
    parse_device_id(&decoded).map_err(|_| ApiError::DeviceUnknown)
}

/// Percent-decodes a path segment (actix leaves `%2F`, `%25` and `%2B` encoded); `None` when
/// the result is not UTF-8.
fn decode_segment(raw: &str) -> Option<Cow<'_, str>> {
    percent_encoding::percent_decode_str(raw).decode_utf8().ok()
}
