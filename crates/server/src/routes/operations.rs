//! Operations (`docs/api.md` §14): `GET /healthz` (the process is up), `GET /readyz` (the
//! database answers and its schema is this binary's) and, when `[otp] METRICS = yes`,
//! `GET /metrics`. None needs authentication; none exists under an instance prefix.

use std::time::Duration;

use actix_web::{HttpResponse, web};
use otp_store::{LATEST_VERSION, StoreError, migrate};

use crate::api::HealthStatus;
use crate::error::{ApiError, ErrorDetail};
use crate::metrics::{CONTENT_TYPE, Metrics};
use crate::routes::RoutePattern;
use crate::state::AppState;

/// The longest `/readyz` waits for the database before answering 503.
const READY_TIMEOUT: Duration = Duration::from_secs(1);

/// The path of the metrics.
pub const METRICS_PATH: &str = "/metrics";

/// The process is up and serving HTTP. Never looks at the database.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "operations",
    responses((status = 200, description = "The process is up", body = HealthStatus))
)]
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(HealthStatus { status: "ok" })
}

/// The server can serve requests: the database answers a one-row query within a second and its
/// schema is at this binary's version.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "operations",
    responses(
        (status = 200, description = "Ready", body = HealthStatus),
        (status = 503, description = "The database does not answer, or its schema is not this binary's (code 51)", body = ErrorDetail,
            headers(("Retry-After" = u32, description = "Seconds to wait before asking again"))),
    )
)]
pub async fn readyz(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let version = tokio::time::timeout(READY_TIMEOUT, migrate::current_version(&state.store))
        .await
        .map_err(|elapsed| ApiError::Unavailable(StoreError::Unavailable(Box::new(elapsed))))?
        .map_err(ApiError::Unavailable)?;
    if version != LATEST_VERSION {
        return Err(ApiError::Unavailable(StoreError::SchemaOutdated {
            current: version,
            latest: LATEST_VERSION,
        }));
    }
    Ok(HttpResponse::Ok().json(HealthStatus { status: "ok" }))
}

/// Registers `GET /metrics` on `cfg` (only when `[otp] METRICS = yes`).
pub fn configure_metrics(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource(METRICS_PATH)
            .app_data(RoutePattern(METRICS_PATH.to_owned()))
            .route(web::get().to(metrics)),
    );
}

/// Every metric, in the Prometheus text format.
async fn metrics(metrics: web::Data<Metrics>) -> Result<HttpResponse, ApiError> {
    let text = metrics
        .encode()
        .map_err(|_| ApiError::Internal("the metrics could not be encoded".to_owned()))?;
    Ok(HttpResponse::Ok().content_type(CONTENT_TYPE).body(text))
}
