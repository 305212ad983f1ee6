//! Merchant instances: the scope of every token and device.

use chrono::{DateTime, Utc};
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

use crate::error::StoreError;
use crate::ids::InstanceId;
use crate::store::Store;
use crate::tokens::{self, SecretToken};

/// A merchant instance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Instance {
    /// The public id.
    pub id: InstanceId,
    /// The human-readable name.
    pub name: String,
    /// When it was created.
    pub created_at: DateTime<Utc>,
}

impl Instance {
    fn from_row(row: &Row) -> Result<Instance, StoreError> {
        let id: String = row.try_get("instance_id")?;
        Ok(Instance {
            id: InstanceId::parse(&id)
                .map_err(|err| StoreError::Corrupt(format!("instance id {id:?}: {err}")))?,
            name: row.try_get("name")?,
            created_at: row.try_get("created_at")?,
        })
    }
}

const INSERT: &str = "
    INSERT INTO instances (instance_id, name)
    VALUES ($1, $2)
    ON CONFLICT (instance_id) DO NOTHING
    RETURNING instance_id, name, created_at";

/// Creates `instance`; `InstanceExists` if it exists.
#[tracing::instrument(skip(store))]
pub async fn create(
    store: &Store,
    instance: &InstanceId,
    name: &str,
) -> Result<Instance, StoreError> {
    let params: [&(dyn ToSql + Sync); 2] = [&instance.as_str(), &name];
    let row = store
        .query_found(INSERT, &params, StoreError::InstanceExists)
        .await?;
    Instance::from_row(&row)
}

/// Creates `instance` unless it exists; returns whether it was created. An
/// existing instance keeps its name.
#[tracing::instrument(skip(store))]
pub async fn ensure(store: &Store, instance: &InstanceId, name: &str) -> Result<bool, StoreError> {
    let client = store.client().await?;
    let stmt = client.prepare_cached(INSERT).await?;
    let row = client
        .query_opt(&stmt, &[&instance.as_str(), &name])
        .await?;
    Ok(row.is_some())
}

/// Creates `instance` and a token of `scope` for it in one transaction, unless the instance
/// exists (then nothing changes and the answer is `Ok(false)`). `keep` receives the token's
/// secret before the transaction commits, to put it where the operator finds it; when `keep`
/// fails, nothing is created and its error is returned. A crash leaves both or neither: never
/// an instance whose first token nobody was given.
#[tracing::instrument(skip(store, keep))]
pub async fn create_with_token<E: From<StoreError>>(
    store: &Store,
    instance: &InstanceId,
    name: &str,
    scope: &str,
    description: &str,
    keep: impl FnOnce(&SecretToken) -> Result<(), E>,
) -> Result<bool, E> {
    let mut client = store.client().await?;
    let transaction = client.transaction().await.map_err(StoreError::from)?;
    let stmt = transaction
        .prepare_cached(INSERT)
        .await
        .map_err(StoreError::from)?;
    let created = transaction
        .query_opt(&stmt, &[&instance.as_str(), &name])
        .await
        .map_err(StoreError::from)?;
    if created.is_none() {
        // Dropping the transaction rolls it back.
        return Ok(false);
    }
    let (_, secret) = tokens::insert(&transaction, instance, scope, None, description).await?;
    keep(&secret)?;
    transaction.commit().await.map_err(StoreError::from)?;
    Ok(true)
}

const SELECT_ONE: &str = "
    SELECT instance_id, name, created_at
      FROM instances
     WHERE instance_id = $1";

/// The instance `instance`; `InstanceNotFound` if it does not exist.
#[tracing::instrument(skip(store))]
pub async fn get(store: &Store, instance: &InstanceId) -> Result<Instance, StoreError> {
    let params: [&(dyn ToSql + Sync); 1] = [&instance.as_str()];
    let row = store
        .query_found(SELECT_ONE, &params, StoreError::InstanceNotFound)
        .await?;
    Instance::from_row(&row)
}

const SELECT_ALL: &str = "
    SELECT instance_id, name, created_at
      FROM instances
     ORDER BY instance_id";

/// Every instance, ordered by id.
#[tracing::instrument(skip(store))]
pub async fn list(store: &Store) -> Result<Vec<Instance>, StoreError> {
    let client = store.client().await?;
    let stmt = client.prepare_cached(SELECT_ALL).await?;
    let rows = client.query(&stmt, &[]).await?;
    rows.iter().map(Instance::from_row).collect()
}

const DELETE: &str = "DELETE FROM instances WHERE instance_id = $1";

/// Deletes `instance` with its tokens and devices; `InstanceNotFound` if it does not
/// exist.
#[tracing::instrument(skip(store))]
pub async fn delete(store: &Store, instance: &InstanceId) -> Result<(), StoreError> {
    let params: [&(dyn ToSql + Sync); 1] = [&instance.as_str()];
    store
        .execute_found(DELETE, &params, StoreError::InstanceNotFound)
        .await
}

const SET_PASSWORD_HASH: &str = "
    UPDATE instances
       SET password_hash = $2
     WHERE instance_id = $1";

/// Sets (or, with `None`, clears) the password hash of `instance`: an Argon2 PHC string,
/// computed by the caller; `InstanceNotFound` if the instance does not exist.
#[tracing::instrument(skip(store, hash))]
pub async fn set_password_hash(
    store: &Store,
    instance: &InstanceId,
    hash: Option<&str>,
) -> Result<(), StoreError> {
    let params: [&(dyn ToSql + Sync); 2] = [&instance.as_str(), &hash];
    store
        .execute_found(SET_PASSWORD_HASH, &params, StoreError::InstanceNotFound)
        .await
}

const SELECT_PASSWORD_HASH: &str = "
    SELECT password_hash
      FROM instances
     WHERE instance_id = $1";

/// The password hash of `instance` (`None`: no password is set); `InstanceNotFound` if the
/// instance does not exist.
#[tracing::instrument(skip(store))]
pub async fn password_hash(
    store: &Store,
    instance: &InstanceId,
) -> Result<Option<String>, StoreError> {
    let params: [&(dyn ToSql + Sync); 1] = [&instance.as_str()];
    let row = store
        .query_found(SELECT_PASSWORD_HASH, &params, StoreError::InstanceNotFound)
        .await?;
    Ok(row.try_get("password_hash")?)
}
