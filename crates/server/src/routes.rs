//! Route registration: the single place that maps paths to handlers.
//!
//! Every endpoint is served both under `/instances/{instance}` and without the prefix (the
//! default instance). `/instances/default/…` answers 308 to the unprefixed path. Unknown paths
//! and methods answer Taler errors 21 and 20.

pub mod audit;
pub mod bench;
pub mod config;
pub mod confirmations;
pub mod operations;
pub mod otp_devices;
pub mod tokens;
pub mod verifications;

use std::borrow::Cow;

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, Route, web};

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
    for endpoint in UNPREFIXED_ENDPOINTS {
        cfg.service(
            web::resource(endpoint.full_path())
                .app_data(RoutePattern(endpoint.full_path()))
                .route((endpoint.route)())
                .default_service(web::to(method_not_allowed)),
        );
    }
}

/// An HTTP method of an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    /// GET.
    Get,
    /// POST.
    Post,
    /// PATCH.
    Patch,
    /// DELETE.
    Delete,
}

impl Verb {
    /// The method's name as the OpenAPI document writes it (lower case).
    pub fn openapi_name(self) -> &'static str {
        match self {
            Verb::Get => "get",
            Verb::Post => "post",
            Verb::Patch => "patch",
            Verb::Delete => "delete",
        }
    }
}

/// One endpoint of the API: where it lies below the instance prefix, its method and handler.
pub struct Endpoint {
    /// A scope with a static prefix that groups endpoints (`""` for none), so that routing
    /// compares strings before it matches patterns.
    pub scope: &'static str,
    /// The path within the scope (`""`, `/{device_id}`, …).
    pub path: &'static str,
    /// The method.
    pub verb: Verb,
    /// Builds the actix route (method guard and handler).
    route: fn() -> Route,
}

impl Endpoint {
    /// The path below the instance prefix (`/private/otp-devices/{device_id}`).
    pub fn full_path(&self) -> String {
        format!("{}{}", self.scope, self.path)
    }
}

/// Every endpoint of the API, registered once for each prefix by [`configure`] and compared
/// with the OpenAPI document by the test suite: the one list of routes. Endpoints of one
/// resource are adjacent, and resources of one scope too.
pub static ENDPOINTS: &[Endpoint] = &[
    Endpoint {
        scope: "",
        path: "/config",
        verb: Verb::Get,
        route: || web::get().to(config::get_config),
    },
    Endpoint {
        scope: "",
        path: "/private/token",
        verb: Verb::Post,
        route: || web::post().to(tokens::create_token),
    },
    Endpoint {
        scope: "",
        path: "/private/token",
        verb: Verb::Delete,
        route: || web::delete().to(tokens::delete_own_token),
    },
    Endpoint {
        scope: "",
        path: "/private/tokens",
        verb: Verb::Get,
        route: || web::get().to(tokens::list_tokens),
    },
    Endpoint {
        scope: "",
        path: "/private/tokens/{serial}",
        verb: Verb::Delete,
        route: || web::delete().to(tokens::delete_token_by_serial),
    },
    Endpoint {
        scope: "",
        path: "/private/auth",
        verb: Verb::Post,
        route: || web::post().to(tokens::set_auth),
    },
    Endpoint {
        scope: "",
        path: "/private/audit",
        verb: Verb::Get,
        route: || web::get().to(audit::list_audit),
    },
    Endpoint {
        scope: "/private/otp-devices",
        path: "",
        verb: Verb::Get,
        route: || web::get().to(otp_devices::list_otp_devices),
    },
    Endpoint {
        scope: "/private/otp-devices",
        path: "",
        verb: Verb::Post,
        route: || web::post().to(otp_devices::create_otp_device),
    },
    Endpoint {
        scope: "/private/otp-devices",
        path: "/{device_id}",
        verb: Verb::Get,
        route: || web::get().to(otp_devices::get_otp_device),
    },
    Endpoint {
        scope: "/private/otp-devices",
        path: "/{device_id}",
        verb: Verb::Patch,
        route: || web::patch().to(otp_devices::update_otp_device),
    },
    Endpoint {
        scope: "/private/otp-devices",
        path: "/{device_id}",
        verb: Verb::Delete,
        route: || web::delete().to(otp_devices::delete_otp_device),
    },
    Endpoint {
        scope: "/private/otp-devices",
        path: "/{device_id}/confirmations",
        verb: Verb::Post,
        route: || web::post().to(confirmations::create_confirmation),
    },
    Endpoint {
        scope: "/private/otp-devices",
        path: "/{device_id}/verifications",
        verb: Verb::Post,
        route: || web::post().to(verifications::create_verification),
    },
    Endpoint {
        scope: "/private/otp-devices",
        path: "/{device_id}/verifications",
        verb: Verb::Get,
        route: || web::get().to(verifications::list_verifications),
    },
    Endpoint {
        scope: "/private/otp-devices",
        path: "/{device_id}/unlock",
        verb: Verb::Post,
        route: || web::post().to(verifications::unlock_device),
    },
];

/// Endpoints served only without the instance prefix, one resource each: the operations
/// probes (`docs/api.md` §14). Compared with the OpenAPI document like [`ENDPOINTS`].
pub static UNPREFIXED_ENDPOINTS: &[Endpoint] = &[
    Endpoint {
        scope: "",
        path: "/healthz",
        verb: Verb::Get,
        route: || web::get().to(operations::healthz),
    },
    Endpoint {
        scope: "",
        path: "/readyz",
        verb: Verb::Get,
        route: || web::get().to(operations::readyz),
    },
];

/// Registers [`ENDPOINTS`] on `cfg`, whose paths lie under `prefix`: one resource per path
/// (answering 405 to other methods), grouped in scopes.
fn register_api(cfg: &mut web::ServiceConfig, prefix: &str) {
    let mut rest = ENDPOINTS;
    while let Some(first) = rest.first() {
        let in_scope = rest.iter().take_while(|e| e.scope == first.scope).count();
        let (group, tail) = rest.split_at(in_scope);
        rest = tail;
        let mut scope = web::scope(first.scope);
        let mut resources = group;
        while let Some(head) = resources.first() {
            let same = resources.iter().take_while(|e| e.path == head.path).count();
            let (endpoints, tail) = resources.split_at(same);
            resources = tail;
            let mut resource = web::resource(head.path)
                .app_data(RoutePattern(format!("{prefix}{}", head.full_path())));
            for endpoint in endpoints {
                resource = resource.route((endpoint.route)());
            }
            let resource = resource.default_service(web::to(method_not_allowed));
            if first.scope.is_empty() {
                cfg.service(resource);
            } else {
                scope = scope.service(resource);
            }
        }
        if !first.scope.is_empty() {
            cfg.service(scope);
        }
    }
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
    // What follows `/instances/default`: empty, or `/` and the rest. The answer is always a
    // path on this server: slashes and backslashes at the start (also percent-encoded) are
    // dropped, so `//evil.example/x` or `/%5Cevil.example` cannot become another host.
    let mut location = String::from("/");
    location.push_str(strip_leading_separators(req.match_info().unprocessed()));
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

/// `tail` without the slashes and backslashes it starts with, in plain or percent-encoded form.
fn strip_leading_separators(mut tail: &str) -> &str {
    loop {
        if let Some(rest) = tail.strip_prefix(['/', '\\']) {
            tail = rest;
        } else if tail.len() >= 3
            && tail.is_char_boundary(3)
            && ["%2f", "%5c"].contains(&tail[..3].to_ascii_lowercase().as_str())
        {
            tail = &tail[3..];
        } else {
            return tail;
        }
    }
}

/// Percent-decodes a path segment (actix leaves `%2F`, `%25` and `%2B` encoded); `None` when
/// the result is not UTF-8.
fn decode_segment(raw: &str) -> Option<Cow<'_, str>> {
    percent_encoding::percent_decode_str(raw).decode_utf8().ok()
}
