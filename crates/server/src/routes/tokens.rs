//! Logging in as upstream does (`docs/api.md` §12): tokens from a password (HTTP Basic) or from
//! a refreshable token, the token list, revocation, and setting the instance password.
//!
//! A Basic login is checked in this order: the client's failed logins (429, code 9903, without
//! looking at the password), the instance (404), the user name and the password (401, counted
//! as a failure). Password checks run on the blocking pool behind [`LoginGuard`]'s permits; a
//! request that cannot get one in time is answered 503 with `Retry-After`. Revocations reach
//! this process's token cache at once and the other processes' through the database's
//! notification (`taler_otp_changes`), within the cache's age bound in any case.

use std::net::{IpAddr, Ipv4Addr};

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use otp_store::changes::Change;
use otp_store::{InstanceId, StoreError, instances, tokens};
use utoipa::Modify;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder};
use zeroize::Zeroizing;

use crate::api::{
    InstanceAuthConfigurationMessage, LoginTokenRequest, LoginTokenSuccessResponse, Timestamp,
    TokenInfo, TokenInfos, TokenToIssue,
};
use crate::audit_events;
use crate::auth::{bearer_secret, split_scope};
use crate::auth_guard::peer;
use crate::body::read_json;
use crate::clock;
use crate::error::{ApiError, ErrorDetail, PrivateEndpointErrors};
use crate::extract::{Authorized, Write};
use crate::login_throttle::{LoginCheck, LoginGuard};
use crate::password::PasswordError;
use crate::routes::instance_of;
use crate::state::AppState;

/// Creates an access token. HTTP Basic: the user is the instance id, the password the
/// instance's; any scope may be asked for. Bearer: the token must be refreshable
/// (`…:refreshable`, else 403, code 16) and the new scope its own or a narrower one (else 403,
/// code 16). Failed Basic logins count per client address (IPv6: per /64) and instance for 60 s;
/// while 5 or more (`[otp] LOGIN_MAX_FAILURES`) count, Basic logins from there answer 429, code
/// 9903, without checking the password. Without `duration` a token lasts one day.
#[utoipa::path(
    post,
    path = "/instances/{instance}/private/token",
    tag = "tokens",
    params(("instance" = String, Path, description = "Instance ID")),
    request_body(content = LoginTokenRequest, content_type = "application/json"),
    security(("basic" = []), ("bearer" = [])),
    responses(
        (status = 200, description = "The new token, shown this once", body = LoginTokenSuccessResponse),
        (status = 400, description = "Malformed body or field (unknown scope, bad duration), codes 22, 25, 26", body = ErrorDetail),
        (status = 401, description = "Wrong user name or password, no password set, or an invalid token, code 2015", body = ErrorDetail),
        (status = 403, description = "The token is not refreshable, or the scope asked for is wider than the token's, code 16", body = ErrorDetail),
        (status = 404, description = "Instance unknown, code 2000", body = ErrorDetail),
        (status = 413, description = "Body over 64 KiB, code 32", body = ErrorDetail),
        (status = 429, description = "Too many failed logins from this address: code 9903 (extension), `detail` the seconds to wait", body = ErrorDetail,
            headers(("Retry-After" = u32, description = "Seconds until fewer failed logins count"))),
        (status = 503, description = "The database is unavailable (code 51), or too many password checks at once (code 9905, extension)", body = ErrorDetail,
            headers(("Retry-After" = u32, description = "Seconds to wait before retrying"))),
    )
)]
pub async fn create_token(
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let state = app_state(&req)?;
    let instance = instance_of(&req, &state)?;
    let issue = match credentials(&req) {
        Credentials::Basic(encoded) => {
            let login = basic_login(&req, &state, &instance, encoded).await;
            audit_events::login(&req, &state.store, &instance, &login).await?;
            login?;
            read_request(&req, payload).await?
        }
        Credentials::Bearer(secret) => {
            let caller = state
                .authenticate(&instance, Some(secret), peer(&req))
                .await?;
            let (held, refreshable) = split_scope(&caller.scope);
            if !refreshable {
                return Err(ApiError::Forbidden("token-refresh"));
            }
            let issue = read_request(&req, payload).await?;
            if !covers(held, issue.scope) {
                return Err(ApiError::Forbidden(issue.scope));
            }
            issue
        }
        Credentials::None => {
            // The instance is checked before the credentials: 404 before 401.
            state.authenticate(&instance, None, peer(&req)).await?;
            return Err(ApiError::Unauthorized);
        }
    };
    let expires_at = issue.expires_at(clock::now());
    let (_, secret) = tokens::create(
        &state.store,
        &instance,
        &issue.stored_scope(),
        expires_at,
        &issue.description,
    )
    .await
    .map_err(ApiError::store)?;
    let access_token = secret.expose().to_owned();
    Ok(HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(LoginTokenSuccessResponse {
            token: access_token.clone(),
            access_token,
            scope: issue.scope.to_owned(),
            expiration: Timestamp::from_time(expires_at),
            refreshable: issue.refreshable,
        }))
}

/// Lists the instance's access tokens, by serial, ascending; never their secrets.
#[utoipa::path(
    get,
    path = "/instances/{instance}/private/tokens",
    tag = "tokens",
    params(("instance" = String, Path, description = "Instance ID")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The tokens", body = TokenInfos),
        (status = 404, description = "Instance unknown, code 2000", body = ErrorDetail),
        PrivateEndpointErrors,
    )
)]
pub async fn list_tokens(auth: Authorized<Write>) -> Result<HttpResponse, ApiError> {
    let tokens = tokens::list(&auth.state.store, &auth.instance).await?;
    Ok(HttpResponse::Ok().json(TokenInfos {
        tokens: tokens.iter().map(TokenInfo::from_token).collect(),
    }))
}

/// Revokes the token with this serial. It is refused by every server process from then on (by
/// this one at once; by others within the token cache's age bound).
#[utoipa::path(
    delete,
    path = "/instances/{instance}/private/tokens/{serial}",
    tag = "tokens",
    params(
        ("instance" = String, Path, description = "Instance ID"),
        ("serial" = i64, Path, description = "The token's serial, from the token list"),
    ),
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Token revoked"),
        (status = 400, description = "The serial is not an integer, code 26", body = ErrorDetail),
        (status = 404, description = "Instance unknown (code 2000) or no token with this serial (code 9904)", body = ErrorDetail),
        PrivateEndpointErrors,
    )
)]
pub async fn delete_token_by_serial(
    auth: Authorized<Write>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let raw = req.match_info().get("serial").unwrap_or_default();
    let serial = raw
        .parse::<i64>()
        .map_err(|_| ApiError::malformed("serial: expected an integer"))?;
    let revoked = tokens::revoke(&auth.state.store, &auth.instance, serial).await;
    forget_tokens(&auth.state, &auth.instance);
    revoked.map_err(ApiError::store)?;
    Ok(HttpResponse::NoContent().finish())
}

/// Revokes the token the request came with (logging out). Any valid token may do so.
#[utoipa::path(
    delete,
    path = "/instances/{instance}/private/token",
    tag = "tokens",
    params(("instance" = String, Path, description = "Instance ID")),
    security(("bearer" = [])),
    responses(
        (status = 204, description = "The token used is revoked"),
        (status = 404, description = "Instance unknown, code 2000", body = ErrorDetail),
        PrivateEndpointErrors,
    )
)]
pub async fn delete_own_token(req: HttpRequest) -> Result<HttpResponse, ApiError> {
    let state = app_state(&req)?;
    let instance = instance_of(&req, &state)?;
    let secret = bearer_secret(&req);
    state.authenticate(&instance, secret, peer(&req)).await?;
    let Some(secret) = secret else {
        return Err(ApiError::Unauthorized);
    };
    let revoked = tokens::revoke_by_secret(&state.store, &instance, secret).await;
    forget_tokens(&state, &instance);
    match revoked {
        // Revoked meanwhile by another request: the outcome asked for holds.
        Ok(()) | Err(StoreError::TokenNotFound) => Ok(HttpResponse::NoContent().finish()),
        Err(err) => Err(ApiError::store(err)),
    }
}

/// Sets the instance password checked by Basic logins at `/private/token`
/// (`{"method": "token", "password": "…"}`); stored as an Argon2id hash. Existing tokens stay
/// valid. Method `external` (no checks by the backend, deprecated upstream) is refused.
#[utoipa::path(
    post,
    path = "/instances/{instance}/private/auth",
    tag = "tokens",
    params(("instance" = String, Path, description = "Instance ID")),
    request_body(content = InstanceAuthConfigurationMessage, content_type = "application/json"),
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Password set"),
        (status = 400, description = "Malformed body, an empty or over-long password (1 to 1024 bytes), or a method other than `token`; codes 22, 25, 26", body = ErrorDetail),
        (status = 404, description = "Instance unknown, code 2000", body = ErrorDetail),
        (status = 413, description = "Body over 64 KiB, code 32", body = ErrorDetail),
        PrivateEndpointErrors,
    )
)]
pub async fn set_auth(
    auth: Authorized<Write>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let password = read_json::<InstanceAuthConfigurationMessage>(&req, payload, false)
        .await?
        .validate()?;
    let guard = login_guard(&req)?;
    let hash = guard.work().hash(password).await.map_err(password_error)?;
    instances::set_password_hash(&auth.state.store, &auth.instance, Some(&hash))
        .await
        .map_err(ApiError::store)?;
    Ok(HttpResponse::NoContent().finish())
}

/// Whether a token of base scope `held` may create tokens of base scope `wanted`:
/// `write`/`all`/`admin` cover every scope, `order-full` covers `order-pos` and `order-mgmt`,
/// which both cover `order-simple`; every scope covers itself.
pub fn covers(held: &str, wanted: &str) -> bool {
    match held {
        "write" | "all" | "admin" => true,
        "order-full" => matches!(
            wanted,
            "order-full" | "order-pos" | "order-mgmt" | "order-simple"
        ),
        "order-pos" => matches!(wanted, "order-pos" | "order-simple"),
        "order-mgmt" => matches!(wanted, "order-mgmt" | "order-simple"),
        _ => held == wanted,
    }
}

/// The credentials of a request.
enum Credentials<'a> {
    /// `Authorization: Basic …`: the base64 text.
    Basic(&'a str),
    /// A bearer token (`secret-token:…`).
    Bearer(&'a str),
    /// None, or unreadable ones.
    None,
}

fn credentials(req: &HttpRequest) -> Credentials<'_> {
    let basic = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.trim().split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("basic"))
        .map(|(_, encoded)| encoded.trim());
    match (basic, bearer_secret(req)) {
        (Some(encoded), _) => Credentials::Basic(encoded),
        (None, Some(secret)) => Credentials::Bearer(secret),
        (None, None) => Credentials::None,
    }
}

/// Decodes Basic credentials into user and password; `None` when malformed.
fn decode_basic(encoded: &str) -> Option<(String, Zeroizing<String>)> {
    let bytes = Zeroizing::new(data_encoding::BASE64.decode(encoded.as_bytes()).ok()?);
    let text = std::str::from_utf8(&bytes).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_owned(), Zeroizing::new(password.to_owned())))
}

/// Checks a Basic login for `instance`: throttle, instance, user, password.
async fn basic_login(
    req: &HttpRequest,
    state: &AppState,
    instance: &InstanceId,
    encoded: &str,
) -> Result<(), ApiError> {
    let guard = login_guard(req)?;
    let client = client_of(req);
    guard
        .check(client, instance)
        .map_err(|retry_after| ApiError::LoginThrottled { retry_after })?;
    let phc = instances::password_hash(&state.store, instance).await?;
    let (Some((user, password)), Some(phc)) = (decode_basic(encoded), phc) else {
        guard.record_failure(client, instance);
        return Err(ApiError::Unauthorized);
    };
    if user != instance.as_str() {
        guard.record_failure(client, instance);
        return Err(ApiError::Unauthorized);
    }
    match guard
        .check_password(client, instance, password, phc)
        .await
        .map_err(password_error)?
    {
        LoginCheck::Valid => Ok(()),
        LoginCheck::Invalid => Err(ApiError::Unauthorized),
        LoginCheck::Throttled(retry_after) => Err(ApiError::LoginThrottled { retry_after }),
    }
}

async fn read_request(req: &HttpRequest, payload: web::Payload) -> Result<TokenToIssue, ApiError> {
    read_json::<LoginTokenRequest>(req, payload, false)
        .await?
        .validate()
}

fn password_error(err: PasswordError) -> ApiError {
    match err {
        PasswordError::Busy => ApiError::LoginBusy,
        PasswordError::Empty | PasswordError::TooLong => {
            ApiError::malformed(format!("password: {err}"))
        }
        PasswordError::Hashing(why) => ApiError::Internal(why),
    }
}

/// The client's address as the throttle counts it; without one (a Unix socket), one shared
/// bucket.
fn client_of(req: &HttpRequest) -> IpAddr {
    req.peer_addr()
        .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |addr| addr.ip())
}

fn app_state(req: &HttpRequest) -> Result<web::Data<AppState>, ApiError> {
    req.app_data::<web::Data<AppState>>()
        .cloned()
        .ok_or_else(|| ApiError::Internal("application state missing".to_owned()))
}

fn login_guard(req: &HttpRequest) -> Result<web::Data<LoginGuard>, ApiError> {
    req.app_data::<web::Data<LoginGuard>>()
        .cloned()
        .ok_or_else(|| ApiError::Internal("login guard missing".to_owned()))
}

/// Drops this process's cached tokens of `instance` after a revocation, without waiting for
/// the database's notification.
fn forget_tokens(state: &AppState, instance: &InstanceId) {
    state.apply_change(&Change::Tokens {
        instance: instance.clone(),
    });
}

/// Adds the `basic` security scheme (user: the instance id; password: the instance's) used by
/// `POST …/private/token`.
pub struct BasicAuth;

impl Modify for BasicAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let scheme = HttpBuilder::new()
            .scheme(HttpAuthScheme::Basic)
            .description(Some(
                "HTTP Basic for `POST …/private/token` only: the user name is the instance id, the password the instance's (set with `POST …/private/auth` or `taler-otp instance set-password`).",
            ));
        crate::openapi::add_http_scheme(openapi, "basic", scheme);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::SCOPES;

    #[test]
    fn scope_narrowing() {
        for wanted in SCOPES {
            for held in ["write", "all", "admin"] {
                assert!(covers(held, wanted), "{held} ⊇ {wanted}");
            }
            assert!(covers(wanted, wanted));
        }
        assert!(covers("order-full", "order-pos") && covers("order-full", "order-mgmt"));
        assert!(covers("order-pos", "order-simple") && covers("order-mgmt", "order-simple"));
        for (held, wanted) in [
            ("readonly", "write"),
            ("readonly", "order-simple"),
            ("order-pos", "order-mgmt"),
            ("order-mgmt", "order-pos"),
            ("order-pos", "order-full"),
            ("order-simple", "order-pos"),
            ("order-full", "readonly"),
            ("order-full", "admin"),
        ] {
            assert!(!covers(held, wanted), "{held} ⊉ {wanted}");
        }
    }

    #[test]
    fn basic_credentials() {
        let encode = |text: &str| data_encoding::BASE64.encode(text.as_bytes());
        let (user, password) = decode_basic(&encode("shop:pa:ss")).unwrap();
        assert_eq!((user.as_str(), password.as_str()), ("shop", "pa:ss"));
        let (user, password) = decode_basic(&encode("shop:")).unwrap();
        assert_eq!((user.as_str(), password.as_str()), ("shop", ""));
        assert!(decode_basic(&encode("no colon")).is_none());
        assert!(decode_basic("***").is_none());
    }
}
