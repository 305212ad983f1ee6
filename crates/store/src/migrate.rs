//! Applies `sql/migrations/*.sql` in order; see `sql/README.md`.

use sha2::{Digest, Sha256};

use crate::error::StoreError;
use crate::store::Store;

/// The embedded migrations: (version, file name, SQL). Append-only.
const MIGRATIONS: &[(i32, &str, &str)] = &[
    (
        1,
        "0001_create_schema_version.sql",
        include_str!("../../../sql/migrations/0001_create_schema_version.sql"),
    ),
    (
        2,
        "0002_create_instances.sql",
        include_str!("../../../sql/migrations/0002_create_instances.sql"),
    ),
    (
        3,
        "0003_create_access_tokens.sql",
        include_str!("../../../sql/migrations/0003_create_access_tokens.sql"),
    ),
    (
        4,
        "0004_create_otp_devices.sql",
        include_str!("../../../sql/migrations/0004_create_otp_devices.sql"),
    ),
    (
        5,
        "0005_create_change_notifications.sql",
        include_str!("../../../sql/migrations/0005_create_change_notifications.sql"),
    ),
    (
        6,
        "0006_create_otp_verifications.sql",
        include_str!("../../../sql/migrations/0006_create_otp_verifications.sql"),
    ),
    (
        7,
        "0007_add_instance_passwords.sql",
        include_str!("../../../sql/migrations/0007_add_instance_passwords.sql"),
    ),
    (
        8,
        "0008_add_instance_data_keys.sql",
        include_str!("../../../sql/migrations/0008_add_instance_data_keys.sql"),
    ),
    (
        9,
        "0009_notify_device_changes_without_counter.sql",
        include_str!("../../../sql/migrations/0009_notify_device_changes_without_counter.sql"),
    ),
    (
        10,
        "0010_create_audit_log.sql",
        include_str!("../../../sql/migrations/0010_create_audit_log.sql"),
    ),
    (
        11,
        "0011_audit_chains_per_device.sql",
        include_str!("../../../sql/migrations/0011_audit_chains_per_device.sql"),
    ),
    (
        12,
        "0012_inline_audit_hash.sql",
        include_str!("../../../sql/migrations/0012_inline_audit_hash.sql"),
    ),
    (
        13,
        "0013_plans_by_whole_keys.sql",
        include_str!("../../../sql/migrations/0013_plans_by_whole_keys.sql"),
    ),
    (
        14,
        "0014_audit_listing_index_apart.sql",
        include_str!("../../../sql/migrations/0014_audit_listing_index_apart.sql"),
    ),
    (
        15,
        "0015_verify_in_one_function.sql",
        include_str!("../../../sql/migrations/0015_verify_in_one_function.sql"),
    ),
    (
        16,
        "0016_verify_batch_in_one_call.sql",
        include_str!("../../../sql/migrations/0016_verify_batch_in_one_call.sql"),
    ),
    (
        17,
        "0017_verify_batch_fewer_statements.sql",
        include_str!("../../../sql/migrations/0017_verify_batch_fewer_statements.sql"),
    ),
    (
        18,
        "0018_confirm_batch_by_whole_keys.sql",
        include_str!("../../../sql/migrations/0018_confirm_batch_by_whole_keys.sql"),
    ),
];

/// The schema version this binary brings a database to.
pub const LATEST_VERSION: i32 = 18;

/// Key of the session-level advisory lock held while migrating
/// (`"taler-otp"` in ASCII).
const MIGRATION_LOCK_KEY: i64 = 0x7461_6c65_722d_6f74;

/// What [`migrate`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MigrationReport {
    /// The versions applied by this call, in order (empty when up to date).
    pub applied: Vec<i32>,
    /// The schema version after the call.
    pub current: i32,
}

/// The database's schema version against this binary's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SchemaStatus {
    /// The database's version (0 for an empty database).
    pub current: i32,
    /// [`LATEST_VERSION`].
    pub latest: i32,
}

const SCHEMA_VERSION_EXISTS: &str = "SELECT to_regclass('schema_version') IS NOT NULL AS present";
const SELECT_APPLIED: &str = "SELECT version, sha256 FROM schema_version ORDER BY version";
const INSERT_APPLIED: &str =
    "INSERT INTO schema_version (version, name, sha256) VALUES ($1, $2, $3)";
const LOCK: &str = "SELECT pg_advisory_lock($1)";
const UNLOCK: &str = "SELECT pg_advisory_unlock($1)";

/// Brings the database to [`LATEST_VERSION`].
///
/// Holds a session-level advisory lock on one connection throughout, so that
/// concurrent callers apply each step once; each step runs in its own
/// transaction together with its `schema_version` row. Refuses
/// (`SchemaOutdated`) when the database is newer than this binary, and
/// (`Corrupt`) when an applied file was edited since.
#[tracing::instrument(skip(store))]
pub async fn migrate(store: &Store) -> Result<MigrationReport, StoreError> {
    let mut client = store.client().await?;
    let lock = client.prepare_cached(LOCK).await?;
    client.execute(&lock, &[&MIGRATION_LOCK_KEY]).await?;
    let outcome = apply_pending(&mut client).await;
    let unlocked = match client.prepare_cached(UNLOCK).await {
        Ok(unlock) => client.execute(&unlock, &[&MIGRATION_LOCK_KEY]).await,
        Err(err) => Err(err),
    };
    if outcome.is_err() || unlocked.is_err() {
        // Closing the connection releases the lock for sure.
        drop(deadpool_postgres::Object::take(client));
    }
    let report = outcome?;
    unlocked?;
    if !report.applied.is_empty() {
        tracing::info!(applied = ?report.applied, current = report.current, "database migrated");
    }
    Ok(report)
}

/// The database's schema version, without changing anything.
#[tracing::instrument(skip(store))]
pub async fn status(store: &Store) -> Result<SchemaStatus, StoreError> {
    let client = store.client().await?;
    let applied = read_applied(&client).await?;
    Ok(SchemaStatus {
        current: applied.last().map_or(0, |(version, _)| *version),
        latest: LATEST_VERSION,
    })
}

/// Fails with `SchemaOutdated` unless the database is exactly at
/// [`LATEST_VERSION`] (for a server started without migrating).
pub async fn require_latest(store: &Store) -> Result<(), StoreError> {
    let status = status(store).await?;
    if status.current == status.latest {
        Ok(())
    } else {
        Err(StoreError::SchemaOutdated {
            current: status.current,
            latest: status.latest,
        })
    }
}

const CURRENT_VERSION: &str = "SELECT coalesce(max(version), 0) AS version FROM schema_version";

/// The database's schema version in one cheap query, for readiness probes: fails when the
/// database does not answer or has no `schema_version` table yet.
pub async fn current_version(store: &Store) -> Result<i32, StoreError> {
    let client = store.client().await?;
    let stmt = client.prepare_cached(CURRENT_VERSION).await?;
    Ok(client.query_one(&stmt, &[]).await?.try_get("version")?)
}

async fn apply_pending(
    client: &mut deadpool_postgres::Object,
) -> Result<MigrationReport, StoreError> {
    let applied = read_applied(client).await?;
    let current = applied.last().map_or(0, |(version, _)| *version);
    if current > LATEST_VERSION {
        return Err(StoreError::SchemaOutdated {
            current,
            latest: LATEST_VERSION,
        });
    }
    for (version, sha256) in &applied {
        let expected = MIGRATIONS
            .iter()
            .find(|(v, _, _)| v == version)
            .map(|(_, _, sql)| Sha256::digest(sql.as_bytes()).to_vec());
        if expected.as_deref() != Some(sha256.as_slice()) {
            return Err(StoreError::Corrupt(format!(
                "migration {version} differs from the one applied to the database"
            )));
        }
    }
    let mut report = MigrationReport {
        applied: Vec::new(),
        current,
    };
    for (version, name, sql) in MIGRATIONS.iter().filter(|(v, _, _)| *v > current) {
        let transaction = client.transaction().await?;
        transaction.batch_execute(sql).await?;
        let sha256 = Sha256::digest(sql.as_bytes()).to_vec();
        let insert = transaction.prepare_cached(INSERT_APPLIED).await?;
        transaction
            .execute(&insert, &[version, name, &sha256])
            .await?;
        transaction.commit().await?;
        tracing::debug!(version, name, "migration applied");
        report.applied.push(*version);
        report.current = *version;
    }
    Ok(report)
}

/// The applied versions and their checksums, ascending; empty when the
/// `schema_version` table does not exist yet.
async fn read_applied(
    client: &deadpool_postgres::Object,
) -> Result<Vec<(i32, Vec<u8>)>, StoreError> {
    let exists = client.prepare_cached(SCHEMA_VERSION_EXISTS).await?;
    let row = client.query_one(&exists, &[]).await?;
    if !row.try_get::<_, bool>("present")? {
        return Ok(Vec::new());
    }
    let select = client.prepare_cached(SELECT_APPLIED).await?;
    let rows = client.query(&select, &[]).await?;
    rows.iter()
        .map(|row| Ok((row.try_get("version")?, row.try_get("sha256")?)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_contiguous_and_match_file_names() {
        for (idx, (version, name, _)) in MIGRATIONS.iter().enumerate() {
            assert_eq!(*version, i32::try_from(idx).unwrap() + 1, "{name}");
            assert!(name.starts_with(&format!("{version:04}_")), "{name}");
        }
        assert_eq!(MIGRATIONS.last().map(|m| m.0), Some(LATEST_VERSION));
    }

    #[test]
    fn every_migration_file_is_embedded() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../sql/migrations");
        let mut files: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().into_string().unwrap())
            .filter(|name| name.ends_with(".sql"))
            .collect();
        files.sort();
        let embedded: Vec<&str> = MIGRATIONS.iter().map(|m| m.1).collect();
        assert_eq!(files, embedded);
    }
}
