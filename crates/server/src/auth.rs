//! Credentials and permissions (docs/api.md §7): the bearer secret of a request, the scopes and
//! what each grants. The checks themselves run in [`crate::extract`], in the contract's order.
//! Tokens are looked up by the hash of the secret, scoped to the instance; the secret itself is
//! never logged.

use actix_web::HttpRequest;
use actix_web::http::header;

/// A permission an endpoint requires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permission {
    /// `otp-devices-read`.
    OtpDevicesRead,
    /// `otp-devices-write`.
    OtpDevicesWrite,
    /// `otp-devices-verify`: verify a typed code (docs/api.md §10).
    OtpDevicesVerify,
    /// `audit-read`: read the instance's audit trail (docs/api.md §14).
    AuditRead,
}

impl Permission {
    /// The permission's name in Taler's terms.
    pub fn name(self) -> &'static str {
        match self {
            Permission::OtpDevicesRead => "otp-devices-read",
            Permission::OtpDevicesWrite => "otp-devices-write",
            Permission::OtpDevicesVerify => "otp-devices-verify",
            Permission::AuditRead => "audit-read",
        }
    }
}

/// Token scopes accepted when creating a token (each also with the `:refreshable` suffix).
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

/// Splits a scope into its base name and whether it is refreshable. Upstream writes
/// `SCOPE:refreshable`; tokens stored with the older spelling `SCOPE.refreshable` read the same.
pub fn split_scope(scope: &str) -> (&str, bool) {
    match scope
        .strip_suffix(":refreshable")
        .or_else(|| scope.strip_suffix(".refreshable"))
    {
        Some(base) => (base, true),
        None => (scope, false),
    }
}

/// Whether `scope` is a scope this backend knows.
pub fn is_known_scope(scope: &str) -> bool {
    SCOPES.contains(&split_scope(scope).0)
}

/// Whether a token of `scope` grants `permission` (docs/api.md §7): `readonly` grants every
/// `*-read` (also `audit-read`), `write`/`all`/`admin` grant everything, `order-pos` and
/// `order-full` grant `otp-devices-verify` only, the other `order-*` scopes no OTP-device
/// permission.
pub fn scope_grants(scope: &str, permission: Permission) -> bool {
    match split_scope(scope).0 {
        "write" | "all" | "admin" => true,
        "readonly" => matches!(
            permission,
            Permission::OtpDevicesRead | Permission::AuditRead
        ),
        "order-pos" | "order-full" => permission == Permission::OtpDevicesVerify,
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

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::TestRequest;

    #[test]
    fn scopes_map_to_permissions() {
        use Permission::*;
        assert!(scope_grants("readonly", OtpDevicesRead));
        assert!(!scope_grants("readonly", OtpDevicesWrite));
        assert!(!scope_grants("readonly", OtpDevicesVerify));
        for scope in [
            "write",
            "all",
            "admin",
            "write.refreshable",
            "admin:refreshable",
        ] {
            for permission in [OtpDevicesRead, OtpDevicesWrite, OtpDevicesVerify] {
                assert!(scope_grants(scope, permission), "{scope}");
            }
        }
        for scope in ["order-pos", "order-full", "order-pos:refreshable"] {
            assert!(scope_grants(scope, OtpDevicesVerify), "{scope}");
            assert!(!scope_grants(scope, OtpDevicesRead), "{scope}");
            assert!(!scope_grants(scope, OtpDevicesWrite), "{scope}");
        }
        for scope in [
            "order-simple",
            "order-mgmt",
            "bogus",
            "order-simple:refreshable",
        ] {
            for permission in [OtpDevicesRead, OtpDevicesWrite, OtpDevicesVerify] {
                assert!(!scope_grants(scope, permission), "{scope}");
            }
        }
        for scope in ["readonly", "write", "all", "admin:refreshable"] {
            assert!(scope_grants(scope, AuditRead), "{scope}");
        }
        for scope in ["order-pos", "order-full", "order-simple", "order-mgmt"] {
            assert!(!scope_grants(scope, AuditRead), "{scope}");
        }
        assert!(is_known_scope("order-pos:refreshable") && is_known_scope("write.refreshable"));
        assert!(!is_known_scope("order-pos:forever"));
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
