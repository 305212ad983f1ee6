//! The OpenAPI 3.1 document, generated from the handlers' `#[utoipa::path]` attributes and the
//! wire types, and served at `/openapi.json` (Swagger UI at `/docs`).
//!
//! Handlers are annotated with their `/instances/{instance}/…` paths; `api_doc` adds the
//! unprefixed twin of each (the default instance), so the document lists every path served.

use utoipa::openapi::path::{Parameter, ParameterIn};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{OpenApi as OpenApiDoc, PathItem};
use utoipa::{Modify, OpenApi};

use crate::api;
use crate::error::ErrorDetail;
use crate::routes;
use crate::routes::tokens::BasicAuth;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "taler-otp: GNU Taler merchant OTP-device API",
        description = "Wire-compatible with the GNU Taler merchant backend's OTP-device endpoints (protocol v10 and later). \
Every path is also served without the `/instances/{instance}` prefix, addressing the default instance; \
`/instances/default/…` answers 308 to the unprefixed path. \
Items marked **extension** go beyond upstream: algorithms 3 and 4 (HOTP) and the confirmations endpoint. \
Every non-2xx answer carries a Taler `ErrorDetail` body.",
        license(name = "AGPL-3.0-or-later"),
    ),
    paths(
        routes::config::get_config,
        routes::otp_devices::list_otp_devices,
        routes::otp_devices::create_otp_device,
        routes::otp_devices::get_otp_device,
        routes::otp_devices::update_otp_device,
        routes::otp_devices::delete_otp_device,
        routes::confirmations::create_confirmation,
        routes::verifications::create_verification,
        routes::verifications::list_verifications,
        routes::verifications::unlock_device,
        routes::tokens::create_token,
        routes::tokens::delete_own_token,
        routes::tokens::list_tokens,
        routes::tokens::delete_token_by_serial,
        routes::tokens::set_auth,
        routes::audit::list_audit,
        routes::operations::healthz,
        routes::operations::readyz,
    ),
    components(schemas(
        ErrorDetail,
        api::OtpDeviceAddDetails,
        api::OtpDeviceEnrolment,
        api::OtpDevicePatchDetails,
        api::OtpDeviceSummaryResponse,
        api::OtpDeviceEntry,
        api::OtpDeviceDetails,
        api::ConfirmationRequest,
        api::ConfirmationResponse,
        api::VerificationRequest,
        api::VerificationResponse,
        api::VerificationEntry,
        api::VerificationsResponse,

        api::VersionResponse,
        api::CurrencySpecification,
        api::LoginTokenRequest,
        api::LoginTokenSuccessResponse,
        api::RelativeTime,
        api::Timestamp,
        api::TokenInfo,
        api::TokenInfos,
        api::InstanceAuthConfigurationMessage,
        api::HealthStatus,
        api::AuditEntryResponse,
        api::AuditLogResponse,
    )),
    modifiers(&BearerAuth, &BasicAuth),
    tags(
        (name = "otp-devices", description = "OTP devices of a merchant instance"),
        (name = "otp-devices (extension)", description = "Payment confirmations: an extension beyond upstream GNU Taler"),
        (name = "config", description = "Backend version and currencies"),
        (name = "tokens", description = "Logging in: access tokens from the instance password or a refreshable token, their list and revocation, and the password"),
        (name = "operations", description = "Operations (extension): liveness and readiness probes (no prefix, no authentication) and the audit trail"),
    )
)]
struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut OpenApiDoc) {
        let scheme = HttpBuilder::new()
            .scheme(HttpAuthScheme::Bearer)
            .bearer_format("secret-token:…")
            .description(Some(
                "`Authorization: Bearer secret-token:TOKEN` (the form without `Bearer` is accepted too). \
Scopes: readonly grants otp-devices-read; write/all/admin grant everything; order-* grant no otp-devices permission.",
            ));
        add_http_scheme(openapi, "bearer", scheme);
    }
}

/// Adds the HTTP security scheme `scheme` as `name` to the document's components.
pub(crate) fn add_http_scheme(openapi: &mut OpenApiDoc, name: &str, scheme: HttpBuilder) {
    let components = openapi.components.get_or_insert_with(Default::default);
    components.add_security_scheme(name, SecurityScheme::Http(scheme.build()));
}

/// Vendor extension marking operations that go beyond upstream GNU Taler.
pub const EXTENSION_MARKER: &str = "x-taler-otp-extension";

/// The complete OpenAPI document.
pub fn api_doc() -> OpenApiDoc {
    let mut doc = ApiDoc::openapi();
    for (path, item) in doc.paths.paths.iter_mut() {
        if [
            "/confirmations",
            "/verifications",
            "/unlock",
            "/audit",
            "/healthz",
            "/readyz",
        ]
        .iter()
        .any(|suffix| path.ends_with(suffix))
        {
            for operation in operations(item) {
                let marker = utoipa::openapi::extensions::ExtensionsBuilder::new()
                    .add(EXTENSION_MARKER, serde_json::Value::Bool(true))
                    .build();
                match operation.extensions.as_mut() {
                    Some(extensions) => extensions.merge(marker),
                    None => operation.extensions = Some(marker),
                }
            }
        }
    }
    let prefixed: Vec<(String, PathItem)> = doc
        .paths
        .paths
        .iter()
        .filter(|(path, _)| path.starts_with("/instances/{instance}/"))
        .map(|(path, item)| (path.clone(), item.clone()))
        .collect();
    for (path, item) in prefixed {
        let unprefixed = path.trim_start_matches("/instances/{instance}").to_owned();
        doc.paths
            .paths
            .insert(unprefixed, without_instance_parameter(item));
    }
    // `/config` is declared unprefixed; add its prefixed twin.
    if let Some(item) = doc.paths.paths.get("/config").cloned() {
        doc.paths.paths.insert(
            "/instances/{instance}/config".to_owned(),
            with_instance_parameter(item),
        );
    }
    doc
}

/// The committed document's text: pretty-printed, keys in a stable order, final newline.
pub fn api_doc_json() -> String {
    let value = serde_json::to_value(api_doc()).unwrap_or_default();
    let mut text = serde_json::to_string_pretty(&sorted(value)).unwrap_or_default();
    text.push('\n');
    text
}

fn sorted(value: serde_json::Value) -> serde_json::Value {
    match value {
        serde_json::Value::Object(map) => {
            let mut entries: Vec<_> = map.into_iter().collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            serde_json::Value::Object(entries.into_iter().map(|(k, v)| (k, sorted(v))).collect())
        }
        serde_json::Value::Array(items) => {
            serde_json::Value::Array(items.into_iter().map(sorted).collect())
        }
        other => other,
    }
}

fn operations(item: &mut PathItem) -> impl Iterator<Item = &mut utoipa::openapi::path::Operation> {
    [
        item.get.as_mut(),
        item.put.as_mut(),
        item.post.as_mut(),
        item.delete.as_mut(),
        item.options.as_mut(),
        item.head.as_mut(),
        item.patch.as_mut(),
        item.trace.as_mut(),
    ]
    .into_iter()
    .flatten()
}

fn without_instance_parameter(mut item: PathItem) -> PathItem {
    for operation in operations(&mut item) {
        if let Some(parameters) = operation.parameters.as_mut() {
            parameters.retain(|p| !(p.name == "instance" && p.parameter_in == ParameterIn::Path));
        }
        if let Some(id) = operation.operation_id.as_mut() {
            id.push_str("_default_instance");
        }
        operation.description = Some(format!(
            "{} Addresses the default instance.",
            operation.description.clone().unwrap_or_default()
        ));
    }
    item
}

fn with_instance_parameter(mut item: PathItem) -> PathItem {
    for operation in operations(&mut item) {
        let parameter = Parameter::builder()
            .name("instance")
            .parameter_in(ParameterIn::Path)
            .required(utoipa::openapi::Required::True)
            .description(Some("Instance ID"))
            .schema(Some(
                utoipa::openapi::ObjectBuilder::new()
                    .schema_type(utoipa::openapi::schema::Type::String),
            ))
            .build();
        operation
            .parameters
            .get_or_insert_with(Vec::new)
            .push(parameter);
        if let Some(id) = operation.operation_id.as_mut() {
            id.push_str("_instance");
        }
    }
    item
}
