//! `GET /config` and `GET /instances/$INSTANCE/config`: protocol version and currencies.

use actix_web::{HttpRequest, HttpResponse, web};
use otp_store::instances;

use crate::api::VersionResponse;
use crate::error::{ApiError, ErrorDetail};
use crate::routes::instance_of;
use crate::state::AppState;

/// Protocol version and currencies of the backend. Under an instance prefix the instance must exist.
#[utoipa::path(
    get,
    path = "/config",
    tag = "config",
    responses(
        (status = 200, description = "Version information", body = VersionResponse),
        (status = 404, description = "Instance unknown (prefixed form only), code 2000", body = ErrorDetail),
    )
)]
pub async fn get_config(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    if req.match_info().get("instance").is_some() {
        let instance = instance_of(&req, &state)?;
        instances::get(&state.store, &instance).await?;
    }
    Ok(HttpResponse::Ok().json(&state.config))
}
