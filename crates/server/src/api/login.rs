//! Wire types of logging in (`docs/api.md` §12), named as upstream's: `LoginTokenRequest`,
//! `LoginTokenSuccessResponse`, `TokenInfos`, `InstanceAuthConfigurationMessage`.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use zeroize::Zeroizing;

use super::{check_text, kind, non_null};
use crate::auth::{SCOPES, split_scope};
use crate::error::ApiError;

/// How long a token lasts when the request names no `duration`: one day.
pub const DEFAULT_TOKEN_LIFETIME: chrono::Duration = chrono::Duration::days(1);

/// The longest token description accepted, in characters.
pub const MAX_DESCRIPTION_CHARS: usize = 1024;

/// Body of `POST …/private/token`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct LoginTokenRequest {
    /// Scope of the new token, optionally with the suffix `:refreshable` (the token may then
    /// create tokens of the same or a narrower scope).
    #[schema(value_type = String, example = "readonly:refreshable", pattern = r"^(readonly|write|all|admin|order-simple|order-pos|order-mgmt|order-full)(:refreshable)?$")]
    pub scope: Option<Value>,
    /// How long the token lasts: `{"d_us": MICROSECONDS}` or `{"d_us": "forever"}`; one day
    /// when absent.
    #[schema(value_type = Option<RelativeTime>)]
    pub duration: Option<Value>,
    /// Human-readable note, shown in the token list.
    #[schema(value_type = Option<String>, max_length = 1024)]
    pub description: Option<Value>,
    /// Deprecated upstream (use the `:refreshable` suffix): `true` makes the token refreshable.
    #[schema(value_type = Option<bool>)]
    pub refreshable: Option<Value>,
}

/// A checked `LoginTokenRequest`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenToIssue {
    /// The base scope, one of [`SCOPES`].
    pub scope: &'static str,
    /// Whether the new token may create tokens itself.
    pub refreshable: bool,
    /// How long it lasts; `None`: forever.
    pub lifetime: Option<chrono::Duration>,
    /// The description (empty when none was given).
    pub description: String,
}

impl TokenToIssue {
    /// The scope as stored: the base scope, with `:refreshable` when refreshable.
    pub fn stored_scope(&self) -> String {
        if self.refreshable {
            format!("{}:refreshable", self.scope)
        } else {
            self.scope.to_owned()
        }
    }

    /// The expiry of a token issued at `now`; `None` (never) for `forever` and for lifetimes
    /// beyond what the calendar holds.
    pub fn expires_at(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.lifetime
            .and_then(|lifetime| now.checked_add_signed(lifetime))
    }
}

/// The base scope among [`SCOPES`] named by `scope` and whether it ends in `:refreshable`
/// (or the older `.refreshable`); `None` for an unknown scope.
pub fn parse_scope(scope: &str) -> Option<(&'static str, bool)> {
    let (base, refreshable) = split_scope(scope);
    SCOPES
        .iter()
        .find(|known| **known == base)
        .map(|known| (*known, refreshable))
}

impl LoginTokenRequest {
    /// Checks every field, naming the first bad one.
    pub fn validate(self) -> Result<TokenToIssue, ApiError> {
        let scope = match non_null(self.scope) {
            None => return Err(ApiError::Missing("scope: required field is missing".into())),
            Some(Value::String(scope)) => scope,
            Some(other) => {
                return Err(ApiError::malformed(format!(
                    "scope: expected a string, got {}",
                    kind(&other)
                )));
            }
        };
        let (scope, refreshable) = parse_scope(&scope).ok_or_else(|| {
            ApiError::malformed(format!(
                "scope: unknown scope; expected one of {}, optionally with :refreshable",
                SCOPES.join(", ")
            ))
        })?;
        let legacy_refreshable = match non_null(self.refreshable) {
            None => false,
            Some(Value::Bool(flag)) => flag,
            Some(other) => {
                return Err(ApiError::malformed(format!(
                    "refreshable: expected a boolean, got {}",
                    kind(&other)
                )));
            }
        };
        let lifetime = match non_null(self.duration) {
            None => Some(DEFAULT_TOKEN_LIFETIME),
            Some(duration) => parse_relative_time(duration)?,
        };
        let description = match non_null(self.description) {
            None => String::new(),
            Some(Value::String(text)) if text.chars().count() <= MAX_DESCRIPTION_CHARS => {
                check_text("description", text).map_err(ApiError::malformed)?
            }
            Some(Value::String(_)) => {
                return Err(ApiError::malformed(format!(
                    "description: longer than {MAX_DESCRIPTION_CHARS} characters"
                )));
            }
            Some(other) => {
                return Err(ApiError::malformed(format!(
                    "description: expected a string, got {}",
                    kind(&other)
                )));
            }
        };
        Ok(TokenToIssue {
            scope,
            refreshable: refreshable || legacy_refreshable,
            lifetime,
            description,
        })
    }
}

/// Parses a `RelativeTime`: `{"d_us": N}` with N a non-negative integer of microseconds, or
/// `{"d_us": "forever"}` (`None`).
fn parse_relative_time(value: Value) -> Result<Option<chrono::Duration>, ApiError> {
    let malformed = || {
        ApiError::malformed(
            "duration: expected {\"d_us\": MICROSECONDS} or {\"d_us\": \"forever\"}",
        )
    };
    let Value::Object(map) = value else {
        return Err(malformed());
    };
    match map.get("d_us") {
        Some(Value::String(text)) if text == "forever" => Ok(None),
        Some(Value::Number(number)) => {
            let micros = number.as_u64().ok_or_else(malformed)?;
            // Beyond i64 microseconds (292,000 years) a token never expires in practice.
            Ok(i64::try_from(micros)
                .ok()
                .map(chrono::Duration::microseconds))
        }
        _ => Err(malformed()),
    }
}

/// `RelativeTime`: a duration in microseconds, or `"forever"` (schema only).
#[derive(Debug, Serialize, ToSchema)]
pub struct RelativeTime {
    /// Microseconds, or `"forever"`.
    #[schema(schema_with = micros_or_forever)]
    pub d_us: Value,
}

/// `Timestamp`: seconds since the epoch, or `"never"`.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Timestamp {
    /// Seconds since the epoch, or `"never"`.
    #[schema(schema_with = seconds_or_never)]
    pub t_s: Value,
}

impl Timestamp {
    /// The timestamp of `time`; `"never"` for `None`.
    pub fn from_time(time: Option<DateTime<Utc>>) -> Timestamp {
        Timestamp {
            t_s: match time {
                Some(time) => Value::from(time.timestamp()),
                None => Value::from("never"),
            },
        }
    }
}

fn micros_or_forever() -> utoipa::openapi::schema::Schema {
    number_or_literal("forever", "Microseconds, or \"forever\"")
}

fn seconds_or_never() -> utoipa::openapi::schema::Schema {
    number_or_literal("never", "Seconds since the epoch, or \"never\"")
}

fn number_or_literal(literal: &str, description: &str) -> utoipa::openapi::schema::Schema {
    use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Type};
    OneOfBuilder::new()
        .item(
            ObjectBuilder::new()
                .schema_type(Type::Integer)
                .minimum(Some(0)),
        )
        .item(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .enum_values(Some([literal])),
        )
        .description(Some(description))
        .into()
}

/// Answer of `POST …/private/token`: the new token, shown this once.
#[derive(Serialize, ToSchema)]
pub struct LoginTokenSuccessResponse {
    /// The token, as it follows `Bearer ` in the `Authorization` header (`secret-token:…`).
    #[schema(example = "secret-token:4DRQXD6V0ZJ7PSZ6KV4ZF3T4JN0E0VFAXDCCY3D1WNQC4BS9HHCG")]
    pub access_token: String,
    /// The same token (deprecated upstream; for older clients).
    pub token: String,
    /// The token's scope, without `:refreshable`.
    pub scope: String,
    /// When the token expires.
    pub expiration: Timestamp,
    /// Whether the token may create tokens of the same or a narrower scope.
    pub refreshable: bool,
}

impl std::fmt::Debug for LoginTokenSuccessResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoginTokenSuccessResponse")
            .field("scope", &self.scope)
            .field("expiration", &self.expiration)
            .field("refreshable", &self.refreshable)
            .finish_non_exhaustive()
    }
}

/// One token of `TokenInfos`; never its secret.
#[derive(Debug, Serialize, ToSchema)]
pub struct TokenInfo {
    /// Serial, for `DELETE …/private/tokens/$SERIAL`.
    pub serial: i64,
    /// Scope, without `:refreshable`.
    pub scope: String,
    /// Whether the token may create tokens.
    pub refreshable: bool,
    /// Human-readable note.
    pub description: String,
    /// When it was created.
    pub creation_time: Timestamp,
    /// When it expires.
    pub expiration: Timestamp,
}

impl TokenInfo {
    /// The wire form of a stored token.
    pub fn from_token(token: &otp_store::tokens::AccessToken) -> TokenInfo {
        let (scope, refreshable) = split_scope(&token.scope);
        TokenInfo {
            serial: token.serial,
            scope: scope.to_owned(),
            refreshable,
            description: token.description.clone(),
            creation_time: Timestamp::from_time(Some(token.created_at)),
            expiration: Timestamp::from_time(token.expires_at),
        }
    }
}

/// Answer of `GET …/private/tokens`.
#[derive(Debug, Serialize, ToSchema)]
pub struct TokenInfos {
    /// The instance's tokens, by serial, ascending.
    pub tokens: Vec<TokenInfo>,
}

/// Body of `POST …/private/auth`: `{"method": "token", "password": "…"}`.
#[derive(Deserialize, ToSchema)]
pub struct InstanceAuthConfigurationMessage {
    /// `token`: logins at `/private/token` check `password`. (`external`, deprecated upstream,
    /// switches checks off and is refused here.)
    #[schema(value_type = String, pattern = "^token$")]
    pub method: Option<Value>,
    /// The new instance password: 1 to 1024 bytes.
    #[schema(value_type = String, min_length = 1, max_length = 1024, format = Password)]
    pub password: Option<Value>,
}

impl std::fmt::Debug for InstanceAuthConfigurationMessage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InstanceAuthConfigurationMessage")
            .field("method", &self.method)
            .finish_non_exhaustive()
    }
}

impl InstanceAuthConfigurationMessage {
    /// The new password, after the method and the password rules are checked.
    pub fn validate(self) -> Result<Zeroizing<String>, ApiError> {
        match non_null(self.method) {
            None => {
                return Err(ApiError::Missing(
                    "method: required field is missing".into(),
                ));
            }
            Some(Value::String(method)) if method == "token" => {}
            Some(Value::String(method)) if method == "external" => {
                return Err(ApiError::Malformed {
                    detail: "method: \"external\" is not supported".into(),
                    hint: Some(
                        "External authentication (no checks by the backend) is not supported; use method \"token\" with a password.",
                    ),
                });
            }
            Some(_) => {
                return Err(ApiError::malformed("method: expected \"token\""));
            }
        }
        let password = match non_null(self.password) {
            None => {
                return Err(ApiError::Missing(
                    "password: required field is missing".into(),
                ));
            }
            Some(Value::String(password)) => Zeroizing::new(password),
            Some(other) => {
                return Err(ApiError::malformed(format!(
                    "password: expected a string, got {}",
                    kind(&other)
                )));
            }
        };
        crate::password::validate_password(&password)
            .map_err(|err| ApiError::malformed(format!("password: {err}")))?;
        Ok(password)
    }
}

#[cfg(test)]
mod tests;
