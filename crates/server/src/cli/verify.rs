//! `taler-otp device verify`: checks a typed code once, with the same decision, limits and
//! history as `POST …/verifications` (`docs/api.md` §10).

use otp_store::verifications::{Attempt, Outcome};
use otp_store::{InstanceId, OtpDeviceId, Store, otp_devices};

use super::Failure;
use super::admin::{db_failure, not_found};
use crate::api::VerificationRequest;
use crate::clock;
use crate::config::Settings;
use crate::verify::{self, Typed};

/// What `device verify` was given.
#[derive(Debug)]
pub struct VerifyArgs {
    /// The typed code.
    pub code: String,
    /// The price, for with-price algorithms.
    pub price: Option<String>,
    /// The reference recorded with the outcome.
    pub reference: Option<String>,
}

/// Runs `taler-otp device verify`: prints `verified` (exit 0), or `not verified: REASON`
/// (exit 1); a lock or the daily limit is a failure naming the seconds to wait.
pub async fn verify(
    store: &Store,
    settings: &Settings,
    instance: &InstanceId,
    id: &OtpDeviceId,
    args: VerifyArgs,
) -> Result<(), Failure> {
    let attempt = VerificationRequest {
        code: Some(args.code.into()),
        price: args.price.map(Into::into),
        reference: args.reference.map(Into::into),
    }
    .validate()
    .map_err(|err| Failure::usage(err.to_string()))?;
    let device = otp_devices::get(store, instance, id)
        .await
        .map_err(not_found(format!("device '{id}' of instance '{instance}'")))?;
    if !device.algorithm.is_time_based() && !device.algorithm.is_counter_based() {
        return Err(Failure::failed(format!(
            "device '{id}' uses algorithm NONE and issues no codes"
        )));
    }
    if device.algorithm.uses_price() && attempt.price.is_none() {
        return Err(Failure::usage(format!(
            "--price: required by algorithm {}",
            device.algorithm.name()
        )));
    }
    let (outcome, _) = verify::decide(
        store,
        instance,
        &device,
        clock::now(),
        Typed {
            code: &attempt.code,
            price: attempt.price.as_ref(),
        },
        &Attempt {
            reference: attempt.reference.as_deref(),
            client: "cli",
            token_serial: None,
        },
        &settings.verify.into(),
    )
    .await
    .map_err(db_failure)?;
    match outcome {
        Outcome::Verified {
            otp_ctr: Some(counter),
            ..
        } => println!("verified (counter {counter})"),
        Outcome::Verified {
            matched_offset: Some(offset),
            ..
        } => println!("verified (step offset {offset})"),
        Outcome::Verified { .. } => println!("verified"),
        Outcome::Mismatch => return Err(Failure::failed("not verified: mismatch")),
        Outcome::Replayed { reference } => {
            return Err(Failure::failed(format!(
                "not verified: replayed (first accepted for reference {})",
                reference.as_deref().unwrap_or("(none)")
            )));
        }
        Outcome::Locked { retry_after_s } => {
            return Err(Failure::failed(format!(
                "device '{id}' is locked after repeated wrong codes: retry in {retry_after_s} s, or run `taler-otp device unlock`"
            )));
        }
        Outcome::DailyLimit { retry_after_s } => {
            return Err(Failure::failed(format!(
                "device '{id}' reached its daily limit of wrong codes: retry in {retry_after_s} s (midnight UTC), or run `taler-otp device unlock`"
            )));
        }
        Outcome::Stale { .. } => {
            return Err(Failure::failed(
                "the device's counter kept moving; try again",
            ));
        }
    }
    Ok(())
}
