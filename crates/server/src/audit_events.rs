//! The audited events that write nothing else (`docs/audit.md`): a TOTP payment confirmation
//! and a password login. Each is appended to the audit trail before the answer is given, and
//! counted in the metrics when they are on (so are HOTP confirmations, which the store audits
//! with the counter's advance). Writes of devices and tokens, and verifications, are audited by
//! the store itself.

use actix_web::{HttpRequest, web};
use otp_store::audit::{self, Event};
use otp_store::{InstanceId, OtpDeviceId};
use serde_json::json;

use crate::error::ApiError;
use crate::extract::Authorized;
use crate::metrics::Metrics;

/// Records a payment confirmation for device `id`: HOTP with the counter value `otp_ctr` used
/// (its audit row was written with the counter's advance, by the store), TOTP (`otp_ctr`
/// `None`) for the time `otp_timestamp`, appended here. Fails, and the confirmation must not be
/// shown, when the audit row cannot be written.
pub async fn confirmation_issued<P>(
    req: &HttpRequest,
    auth: &Authorized<P>,
    id: &OtpDeviceId,
    otp_ctr: Option<u64>,
    otp_timestamp: u64,
) -> Result<(), ApiError> {
    if otp_ctr.is_none() {
        let details = json!({ "otp_timestamp": otp_timestamp });
        audit::append(
            &auth.state.store,
            &auth.instance,
            Event::ConfirmationIssued,
            Some(id),
            &details.to_string(),
        )
        .await
        .map_err(ApiError::store)?;
    }
    if let Some(metrics) = req.app_data::<web::Data<Metrics>>() {
        metrics.confirmation_issued(otp_ctr.is_some());
    }
    Ok(())
}

/// Records the outcome of a password login at `instance`: a success, or a failure when `login`
/// is a 401 (wrong user, wrong password, no password set). Throttled or busy attempts, and
/// logins at unknown instances, are not recorded: they checked no password.
pub async fn login(
    req: &HttpRequest,
    store: &otp_store::Store,
    instance: &InstanceId,
    login: &Result<(), ApiError>,
) -> Result<(), ApiError> {
    let event = match login {
        Ok(()) => Event::LoginSuccess,
        Err(ApiError::Unauthorized) => Event::LoginFailure,
        Err(_) => return Ok(()),
    };
    audit::append(store, instance, event, None, r#"{"method":"basic"}"#)
        .await
        .map_err(ApiError::store)?;
    if let Some(metrics) = req.app_data::<web::Data<Metrics>>() {
        metrics.login(login.is_ok());
    }
    Ok(())
}
