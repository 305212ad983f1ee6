//! `GET …/private/audit`: the instance's audit trail (`docs/api.md` §14, `docs/audit.md`).

use actix_web::{HttpRequest, HttpResponse};
use otp_store::audit;

use crate::api::AuditLogResponse;
use crate::error::{ApiError, ErrorDetail, PrivateEndpointErrors};
use crate::extract::{AuditRead, Authorized};

/// Rows answered when `limit` is not given.
pub const DEFAULT_LIMIT: u32 = 100;
/// The most rows one answer holds.
pub const MAX_LIMIT: u32 = 1000;

/// The instance's audit trail after serial `since`, oldest first (**extension**). Each row
/// carries the hash chaining it to the previous row of its chain (one per device, and the
/// instance's own); `taler-otp audit verify` checks the chains.
#[utoipa::path(
    get,
    path = "/instances/{instance}/private/audit",
    tag = "operations",
    params(
        ("instance" = String, Path, description = "Instance ID"),
        ("since" = Option<u64>, Query, description = "Only rows with a larger serial (default 0: from the first)", minimum = 0),
        ("limit" = Option<u32>, Query, description = "Rows to return, 1–1000 (default 100)", minimum = 1, maximum = 1000),
    ),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The rows", body = AuditLogResponse),
        (status = 400, description = "Malformed since or limit (26)", body = ErrorDetail),
        (status = 404, description = "Instance unknown, code 2000", body = ErrorDetail),
        PrivateEndpointErrors,
    )
)]
pub async fn list_audit(
    auth: Authorized<AuditRead>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let (since, limit) = page(req.query_string())?;
    let entries = audit::list(&auth.state.store, &auth.instance, since, limit).await?;
    Ok(HttpResponse::Ok().json(AuditLogResponse {
        entries: entries.into_iter().map(Into::into).collect(),
    }))
}

/// `since` (a serial, 0 to 2^63 − 1, default 0) and `limit` (1–1000, default 100).
fn page(query_string: &str) -> Result<(i64, u32), ApiError> {
    let (mut since, mut limit) = (0, DEFAULT_LIMIT);
    for (name, value) in form_urlencoded::parse(query_string.as_bytes()) {
        match name.as_ref() {
            "since" => {
                since = crate::params::counter(&value)
                    .ok()
                    .and_then(|since| i64::try_from(since).ok())
                    .ok_or_else(|| {
                        ApiError::malformed(format!(
                            "since: expected a non-negative integer, got {value:?}"
                        ))
                    })?;
            }
            "limit" => {
                limit = value
                    .bytes()
                    .all(|b| b.is_ascii_digit())
                    .then(|| value.parse::<u32>().ok())
                    .flatten()
                    .filter(|limit| (1..=MAX_LIMIT).contains(limit))
                    .ok_or_else(|| {
                        ApiError::malformed(format!(
                            "limit: expected an integer between 1 and {MAX_LIMIT}, got {value:?}"
                        ))
                    })?;
            }
            _ => {}
        }
    }
    Ok((since, limit))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_and_limit_have_defaults_and_bounds() {
        assert_eq!(page("").unwrap(), (0, 100));
        assert_eq!(page("since=7&limit=1000").unwrap(), (7, 1000));
        for bad in [
            "since=-1",
            "since=x",
            "limit=0",
            "limit=1001",
            "limit=+5",
            "since=1.5",
        ] {
            assert!(page(bad).is_err(), "{bad}");
        }
    }
}
