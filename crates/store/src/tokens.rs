//! Access tokens of an instance: created with a random secret, stored as the
//! SHA-256 of that secret only, checked in one round trip.

use std::fmt;

use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio_postgres::Row;
use zeroize::Zeroizing;

use crate::audit;
use crate::error::{StoreError, found};
use crate::ids::InstanceId;
use crate::store::Store;

/// The prefix of a token as clients send it (`Bearer secret-token:...`).
pub const SECRET_TOKEN_PREFIX: &str = "secret-token:";

/// An access token as stored (without its secret).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccessToken {
    /// The token's serial, used to list and revoke it.
    pub serial: i64,
    /// The instance the token belongs to.
    pub instance: InstanceId,
    /// The scope (`readonly`, `write`, `all`, `admin`, `order-...`).
    pub scope: String,
    /// The token is invalid from this time on; `None` never expires.
    pub expires_at: Option<DateTime<Utc>>,
    /// Human-readable note.
    pub description: String,
    /// When it was created.
    pub created_at: DateTime<Utc>,
}

impl AccessToken {
    fn from_row(row: &Row, instance: &InstanceId) -> Result<AccessToken, StoreError> {
        Ok(AccessToken {
            serial: row.try_get("token_serial")?,
            instance: instance.clone(),
            scope: row.try_get("scope")?,
            expires_at: row.try_get("expires_at")?,
            description: row.try_get("description")?,
            created_at: row.try_get("created_at")?,
        })
    }
}

/// A token secret, `secret-token:` followed by the base32 of 32 random
/// bytes. Shown once at creation; `Debug` never prints it and it is zeroized
/// on drop.
pub struct SecretToken(Zeroizing<String>);

impl SecretToken {
    /// The full secret, `secret-token:...`, as clients send it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    fn generate() -> Result<SecretToken, StoreError> {
        let mut bytes = Zeroizing::new([0u8; 32]);
        rand::rngs::OsRng
            .try_fill_bytes(bytes.as_mut_slice())
            .map_err(|_| StoreError::Crypto("no randomness for a token"))?;
        let capacity = SECRET_TOKEN_PREFIX.len() + SECRET_BODY_LEN;
        let mut secret = Zeroizing::new(String::with_capacity(capacity));
        secret.push_str(SECRET_TOKEN_PREFIX);
        data_encoding::BASE32_NOPAD.encode_append(bytes.as_slice(), &mut secret);
        Ok(SecretToken(secret))
    }
}

impl fmt::Debug for SecretToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretToken(..)")
    }
}

/// Characters in the base32 body of a secret the store generates (32 bytes, no padding).
pub const SECRET_BODY_LEN: usize = 52;

/// Whether `secret` has the shape of a secret the store generates: `secret-token:` followed
/// by 52 characters of upper-case base32 (`A`–`Z`, `2`–`7`). Nothing else can be a valid
/// token, so the server refuses other shapes without looking them up.
pub fn is_well_formed(secret: &str) -> bool {
    secret
        .strip_prefix(SECRET_TOKEN_PREFIX)
        .is_some_and(|body| {
            body.len() == SECRET_BODY_LEN
                && body
                    .bytes()
                    .all(|b| b.is_ascii_uppercase() || (b'2'..=b'7').contains(&b))
        })
}

/// SHA-256 of a token secret; `secret-token:` in front is ignored, so both
/// spellings of the same token hash alike.
pub fn hash_secret(secret: &str) -> [u8; 32] {
    let body = secret.strip_prefix(SECRET_TOKEN_PREFIX).unwrap_or(secret);
    Sha256::digest(body.as_bytes()).into()
}

const INSERT: &str = "
    WITH created AS (
        INSERT INTO access_tokens (instance_serial, token_hash, scope, expires_at, description)
        SELECT instance_serial, $2, $3, $4, $5
          FROM instances
         WHERE instance_id = $1
        RETURNING token_serial, scope, expires_at, description, created_at
    ), audit AS (
        SELECT audit_append($1, 'token_created', NULL, $6, $7, jsonb_build_object(
                   'serial', c.token_serial,
                   'scope', c.scope,
                   'expires', floor(extract(epoch FROM c.expires_at))::bigint)::text)
          FROM created c
    )
    SELECT c.*, (SELECT count(*) FROM audit) AS audited FROM created c";

/// Creates a token for `instance` and returns its one-time secret;
/// `InstanceNotFound` if the instance does not exist. The creation is audited
/// (`token_created`: serial, scope, expiry; never the secret) in the same statement.
#[tracing::instrument(skip(store))]
pub async fn create(
    store: &Store,
    instance: &InstanceId,
    scope: &str,
    expires_at: Option<DateTime<Utc>>,
    description: &str,
) -> Result<(AccessToken, SecretToken), StoreError> {
    let client = store.client().await?;
    insert(&client, instance, scope, expires_at, description).await
}

/// [`create`] on `client`: a connection, or a transaction that creates more.
pub(crate) async fn insert(
    client: &impl GenericClient,
    instance: &InstanceId,
    scope: &str,
    expires_at: Option<DateTime<Utc>>,
    description: &str,
) -> Result<(AccessToken, SecretToken), StoreError> {
    let secret = SecretToken::generate()?;
    let hash = hash_secret(secret.expose());
    let actor = audit::current_actor();
    let stmt = client.prepare_cached(INSERT).await?;
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 7] = [
        &instance.as_str(),
        &hash.as_slice(),
        &scope,
        &expires_at,
        &description,
        &actor.token_serial,
        &actor.client,
    ];
    let row = client.query_opt(&stmt, &params).await?;
    let token = AccessToken::from_row(&row.ok_or(StoreError::InstanceNotFound)?, instance)?;
    Ok((token, secret))
}

/// The result of [`authenticate`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AuthOutcome {
    /// The instance does not exist (checked before the credentials).
    InstanceUnknown,
    /// No token, an unknown or expired token, or a token of another instance.
    Invalid,
    /// The token is valid for this instance.
    Valid(AccessToken),
}

const AUTHENTICATE: &str = "
    SELECT t.token_serial, t.token_hash, t.scope, t.expires_at, t.description, t.created_at
      FROM instances i
      LEFT JOIN access_tokens t
        ON t.instance_serial = i.instance_serial
       AND t.token_hash = $2
     WHERE i.instance_id = $1";

/// Checks `secret` (`secret-token:XYZ` or just `XYZ`) for `instance` at time
/// `now`, in one round trip: the instance's existence and the token looked up
/// by hash within that instance, then expiry and a constant-time comparison
/// of the hash.
#[tracing::instrument(skip(store, secret))]
pub async fn authenticate(
    store: &Store,
    instance: &InstanceId,
    secret: Option<&str>,
    now: DateTime<Utc>,
) -> Result<AuthOutcome, StoreError> {
    let hash = secret.map(hash_secret);
    let client = store.client().await?;
    let stmt = client.prepare_cached(AUTHENTICATE).await?;
    let hash_param: Option<&[u8]> = hash.as_ref().map(|hash| hash.as_slice());
    let Some(row) = client
        .query_opt(&stmt, &[&instance.as_str(), &hash_param])
        .await?
    else {
        return Ok(AuthOutcome::InstanceUnknown);
    };
    let (Some(hash), Some(stored_hash)) = (hash, row.try_get::<_, Option<Vec<u8>>>("token_hash")?)
    else {
        return Ok(AuthOutcome::Invalid);
    };
    if !bool::from(stored_hash.as_slice().ct_eq(hash.as_slice())) {
        return Ok(AuthOutcome::Invalid);
    }
    let token = AccessToken::from_row(&row, instance)?;
    if token.expires_at.is_some_and(|expires_at| expires_at <= now) {
        return Ok(AuthOutcome::Invalid);
    }
    Ok(AuthOutcome::Valid(token))
}

const SELECT_ALL: &str = "
    SELECT t.token_serial, t.scope, t.expires_at, t.description, t.created_at
      FROM access_tokens t
      JOIN instances i USING (instance_serial)
     WHERE i.instance_id = $1
     ORDER BY t.token_serial";

/// The tokens of `instance`, by serial (empty for an unknown instance).
#[tracing::instrument(skip(store))]
pub async fn list(store: &Store, instance: &InstanceId) -> Result<Vec<AccessToken>, StoreError> {
    let client = store.client().await?;
    let stmt = client.prepare_cached(SELECT_ALL).await?;
    let rows = client.query(&stmt, &[&instance.as_str()]).await?;
    rows.iter()
        .map(|row| AccessToken::from_row(row, instance))
        .collect()
}

/// Deletes the tokens a `revoked` CTE returns and audits each (`token_revoked`); `$1` is the
/// instance id, `$3` and `$4` the actor's token serial and client.
macro_rules! revoke_audited {
    ($revoked:literal) => {
        concat!(
            "WITH revoked AS (",
            $revoked,
            "), audit AS (
                SELECT audit_append($1, 'token_revoked', NULL, $3, $4,
                           jsonb_build_object('serial', r.token_serial)::text)
                  FROM revoked r
            )
            SELECT (SELECT count(*) FROM revoked) AS revoked,
                   (SELECT count(*) FROM audit) AS audited"
        )
    };
}

const DELETE: &str = revoke_audited!(
    "DELETE FROM access_tokens t
      USING instances i
      WHERE i.instance_id = $1
        AND t.instance_serial = i.instance_serial
        AND t.token_serial = $2
     RETURNING t.token_serial"
);

/// Runs a [`revoke_audited!`] statement; `TokenNotFound` when it revoked nothing.
async fn run_revoke(
    store: &Store,
    statement: &str,
    instance: &InstanceId,
    token: &(dyn tokio_postgres::types::ToSql + Sync),
) -> Result<(), StoreError> {
    let actor = audit::current_actor();
    let client = store.client().await?;
    let stmt = client.prepare_cached(statement).await?;
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 4] = [
        &instance.as_str(),
        token,
        &actor.token_serial,
        &actor.client,
    ];
    let revoked: i64 = client.query_one(&stmt, &params).await?.try_get("revoked")?;
    found(revoked > 0, StoreError::TokenNotFound)
}

/// Revokes token `serial` of `instance`; `TokenNotFound` if `instance` has no
/// such token (also when the serial belongs to another instance). The revocation is
/// audited (`token_revoked`) in the same statement.
#[tracing::instrument(skip(store))]
pub async fn revoke(store: &Store, instance: &InstanceId, serial: i64) -> Result<(), StoreError> {
    run_revoke(store, DELETE, instance, &serial).await
}

const DELETE_BY_HASH: &str = revoke_audited!(
    "DELETE FROM access_tokens t
      USING instances i
      WHERE i.instance_id = $1
        AND t.instance_serial = i.instance_serial
        AND t.token_hash = $2
     RETURNING t.token_serial"
);

/// Revokes the token whose secret is `secret` (`secret-token:XYZ` or just `XYZ`) in
/// `instance`, as `DELETE …/private/token` does for the token a request came with;
/// `TokenNotFound` if `instance` has no such token.
#[tracing::instrument(skip(store, secret))]
pub async fn revoke_by_secret(
    store: &Store,
    instance: &InstanceId,
    secret: &str,
) -> Result<(), StoreError> {
    let hash = hash_secret(secret);
    run_revoke(store, DELETE_BY_HASH, instance, &hash.as_slice()).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_have_the_taler_shape_and_hash_with_or_without_prefix() {
        let secret = SecretToken::generate().unwrap();
        let body = secret.expose().strip_prefix(SECRET_TOKEN_PREFIX).unwrap();
        assert_eq!(body.len(), 52);
        assert_eq!(hash_secret(secret.expose()), hash_secret(body));
        assert_ne!(hash_secret(secret.expose()), hash_secret("other"));
        assert_eq!(format!("{secret:?}"), "SecretToken(..)");
    }

    #[test]
    fn only_the_generated_shape_is_well_formed() {
        for _ in 0..100 {
            assert!(is_well_formed(SecretToken::generate().unwrap().expose()));
        }
        let body = "A".repeat(SECRET_BODY_LEN);
        assert!(is_well_formed(&format!("secret-token:{body}")));
        for bad in [
            String::new(),
            "secret-token:".to_owned(),
            "secret-token:nope".to_owned(),
            body.clone(),
            format!("secret-token:{}", "a".repeat(SECRET_BODY_LEN)),
            format!("secret-token:{}1", "A".repeat(SECRET_BODY_LEN - 1)),
            format!("secret-token:{body}A"),
            format!("secret-token:{}=", "A".repeat(SECRET_BODY_LEN - 1)),
            format!("Secret-Token:{body}"),
        ] {
            assert!(!is_well_formed(&bad), "{bad}");
        }
    }
}
