//! Authentication and permissions (contract §7).
//!
//! Order of checks: the instance exists (404, 2000), the credentials are valid for that instance
//! (401, 2015), the token's scope grants the permission (403, 16). Tokens are looked up by the
//! hash of the secret, scoped to the instance; the secret itself is never logged.

use actix_web::HttpRequest;
use actix_web::http::header;
use otp_store::InstanceId;

use crate::error::ApiError;
use crate::state::AppState;

/// A permission an endpoint requires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permission {
    /// `otp-devices-read`.
    OtpDevicesRead,
    /// `otp-devices-write`.
    OtpDevicesWrite,
}

impl Permission {
    /// The permission's name in Taler's terms.
    pub fn name(self) -> &'static str {
        match self {
            Permission::OtpDevicesRead => "otp-devices-read",
            Permission::OtpDevicesWrite => "otp-devices-write",
        }
    }
}

/// Token scopes accepted when creating a token (the `.refreshable` variants are accepted too).
pub const SCOPES: [&str; 8] = [
    "readonly",
    "write",
    "all",
    "admin",
    "order-simple",
    "order-pos",
    "order-mgmt",
    "order-full",
];

/// Whether `scope` is a scope this backend knows.
pub fn is_known_scope(scope: &str) -> bool {
    SCOPES.contains(&scope.strip_suffix(".refreshable").unwrap_or(scope))
}

/// Whether a token of `scope` grants `permission`: `readonly` grants every `*-read`,
/// `write`/`all`/`admin` grant everything, `order-*` grant no OTP-device permission.
pub fn scope_grants(scope: &str, permission: Permission) -> bool {
    match scope.strip_suffix(".refreshable").unwrap_or(scope) {
        "write" | "all" | "admin" => true,
        "readonly" => permission == Permission::OtpDevicesRead,
        _ => false,
    }
}

/// The token secret from the `Authorization` header: `Bearer secret-token:…` or `secret-token:…`.
/// `None` when absent or unreadable (which then fails as 401).
pub fn bearer_secret(req: &HttpRequest) -> Option<&str> {
    let value = req
        .headers()
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .trim();
    let token = match value.split_once(' ') {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("bearer") => rest.trim(),
        Some(_) => return None,
        None => value,
    };
    token.starts_with("secret-token:").then_some(token)
}

/// Runs the §7 checks for `instance` and `permission`.
pub async fn authorize(
    state: &AppState,
    req: &HttpRequest,
    instance: &InstanceId,
    permission: Permission,
) -> Result<(), ApiError> {
    let scope = state.authenticate(instance, bearer_secret(req)).await?;
    if scope_grants(&scope, permission) {
        Ok(())
    } else {
        Err(ApiError::Forbidden(permission.name()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::TestRequest;

    #[test]
    fn scopes_map_to_permissions() {
        use Permission::*;
        assert!(scope_grants("readonly", OtpDevicesRead));
        assert!(!scope_grants("readonly", OtpDevicesWrite));
        for scope in ["write", "all", "admin", "write.refreshable"] {
            assert!(scope_grants(scope, OtpDevicesRead) && scope_grants(scope, OtpDevicesWrite));
        }
        for scope in [
            "order-simple",
            "order-pos",
            "order-mgmt",
            "order-full",
            "bogus",
        ] {
            assert!(!scope_grants(scope, OtpDevicesRead), "{scope}");
        }
    }

    #[test]
    fn both_header_forms_are_accepted() {
        let req = TestRequest::default()
            .insert_header(("Authorization", "Bearer secret-token:abc"))
            .to_http_request();
        assert_eq!(bearer_secret(&req), Some("secret-token:abc"));
        let req = TestRequest::default()
            .insert_header(("Authorization", "secret-token:abc"))
            .to_http_request();
        assert_eq!(bearer_secret(&req), Some("secret-token:abc"));
        let req = TestRequest::default()
            .insert_header(("Authorization", "Basic abc"))
            .to_http_request();
        assert_eq!(bearer_secret(&req), None);
    }
}
