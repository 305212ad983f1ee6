//! The one way into a private request: [`Authorized`] and [`DeviceRequest`], extractors that run
//! the checks of `docs/api.md` §7 in the contract's order before a handler's body runs.
//!
//! Order: the instance exists (404, 2000) → the credentials are valid for that instance
//! (401, 2015) → the token's scope grants the endpoint's permission (403, 16) → for device
//! endpoints, the `{device_id}` segment names a possible device (404, 2021). A handler takes one
//! of these as its first argument and never repeats the checks; the request body is read only
//! afterwards, by the handler.

use std::future::Future;
use std::marker::PhantomData;
use std::net::IpAddr;
use std::pin::Pin;

use actix_web::dev::Payload;
use actix_web::{FromRequest, HttpRequest, web};
use otp_store::{InstanceId, OtpDeviceId};

use crate::auth::{Permission, bearer_secret, scope_grants};
use crate::error::ApiError;
use crate::routes::{device_id_of, instance_of};
use crate::state::{AppState, Caller};

/// The future of an extractor that awaits the database.
type LocalBoxFuture<T> = Pin<Box<dyn Future<Output = Result<T, ApiError>>>>;

/// A permission an endpoint requires, as a type so that it is part of the handler's signature.
pub trait Requires {
    /// The permission.
    const PERMISSION: Permission;
}

/// `otp-devices-read`.
#[derive(Debug)]
pub struct Read;
/// `otp-devices-write`.
#[derive(Debug)]
pub struct Write;
/// `otp-devices-verify`.
#[derive(Debug)]
pub struct Verify;
/// `audit-read`.
#[derive(Debug)]
pub struct AuditRead;

impl Requires for Read {
    const PERMISSION: Permission = Permission::OtpDevicesRead;
}
impl Requires for Write {
    const PERMISSION: Permission = Permission::OtpDevicesWrite;
}
impl Requires for Verify {
    const PERMISSION: Permission = Permission::OtpDevicesVerify;
}
impl Requires for AuditRead {
    const PERMISSION: Permission = Permission::AuditRead;
}

/// A request whose caller holds permission `P` on `instance`.
pub struct Authorized<P> {
    /// The shared state of this worker.
    pub state: web::Data<AppState>,
    /// The instance the request addresses.
    pub instance: InstanceId,
    /// The token that authorized it.
    pub caller: Caller,
    /// The client's address (the TCP peer), when known.
    pub client: Option<IpAddr>,
    permission: PhantomData<P>,
}

impl<P> Authorized<P> {
    /// The client's address as recorded in histories and logs (`"unknown"` without one).
    pub fn client_address(&self) -> String {
        self.client
            .map_or_else(|| "unknown".to_owned(), |addr| addr.to_string())
    }
}

impl<P: Requires> Authorized<P> {
    /// Runs the instance, credentials and permission checks for `req`.
    pub async fn check(req: &HttpRequest) -> Result<Authorized<P>, ApiError> {
        let state = req
            .app_data::<web::Data<AppState>>()
            .cloned()
            .ok_or_else(|| ApiError::Internal("application state missing".to_owned()))?;
        let instance = instance_of(req, &state)?;
        let client = crate::auth_guard::peer(req);
        let caller = state
            .authenticate(&instance, bearer_secret(req), client)
            .await?;
        if !scope_grants(&caller.scope, P::PERMISSION) {
            return Err(ApiError::Forbidden(P::PERMISSION.name()));
        }
        Ok(Authorized {
            state,
            instance,
            caller,
            client,
            permission: PhantomData,
        })
    }
}

impl<P: Requires + 'static> FromRequest for Authorized<P> {
    type Error = ApiError;
    type Future = LocalBoxFuture<Self>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let req = req.clone();
        Box::pin(async move { Authorized::check(&req).await })
    }
}

/// A request on one device (`{device_id}` in the path) by a caller holding permission `P`.
pub struct DeviceRequest<P> {
    /// The authorization.
    pub auth: Authorized<P>,
    /// The device the path names.
    pub device: OtpDeviceId,
}

impl<P: Requires + 'static> FromRequest for DeviceRequest<P> {
    type Error = ApiError;
    type Future = LocalBoxFuture<Self>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let req = req.clone();
        Box::pin(async move {
            let auth = Authorized::check(&req).await?;
            let device = device_id_of(&req)?;
            Ok(DeviceRequest { auth, device })
        })
    }
}
