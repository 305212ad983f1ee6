//! The migration runner: idempotent, concurrent-safe, refuses newer or
//! edited schemas.

use otp_store::migrate::{self, LATEST_VERSION, SchemaStatus};
use otp_store::testing::TestDb;
use otp_store::{Store, StoreError};

use crate::sql_execute;

/// A store whose tables live in a new, empty schema of `db`.
async fn store_on_empty_schema(db: &TestDb, schema: &str) -> Store {
    let store = db.store();
    let client = store.pool().get().await.unwrap();
    client
        .batch_execute(&format!("CREATE SCHEMA {schema}"))
        .await
        .unwrap();
    let mut config = db.config();
    config.url = format!("{} options='-c search_path={schema}'", config.url);
    Store::connect(&config).unwrap()
}

/// Every column, constraint, trigger and function of the schema, and the
/// recorded versions.
async fn schema_snapshot(store: &Store) -> Vec<String> {
    let client = store.pool().get().await.unwrap();
    let rows = client
        .query(
            "SELECT format('column %s.%s %s %s %s', table_name, column_name, data_type, is_nullable, column_default) AS item
               FROM information_schema.columns WHERE table_schema = current_schema()
             UNION ALL
             SELECT format('constraint %s %s', conname, pg_get_constraintdef(oid))
               FROM pg_constraint WHERE connamespace = current_schema()::regnamespace
             UNION ALL
             SELECT format('trigger %s', tgname) FROM pg_trigger WHERE NOT tgisinternal
             UNION ALL
             SELECT format('function %s', proname) FROM pg_proc WHERE pronamespace = current_schema()::regnamespace
             UNION ALL
             SELECT format('version %s %s', version, encode(sha256, 'hex')) FROM schema_version
             ORDER BY 1",
            &[],
        )
        .await
        .unwrap();
    rows.iter().map(|row| row.get("item")).collect()
}

#[tokio::test]
async fn migrating_a_migrated_database_changes_nothing() {
    let db = TestDb::new().await;
    let store = db.store();
    let before = schema_snapshot(&store).await;

    let report = migrate::migrate(&store).await.unwrap();

    assert!(report.applied.is_empty(), "{report:?}");
    assert_eq!(report.current, LATEST_VERSION);
    assert_eq!(schema_snapshot(&store).await, before);
    assert_eq!(
        migrate::status(&store).await.unwrap(),
        SchemaStatus {
            current: LATEST_VERSION,
            latest: LATEST_VERSION
        }
    );
    migrate::require_latest(&store).await.unwrap();
}

#[tokio::test]
async fn an_empty_schema_is_at_version_zero_and_concurrent_migrations_apply_each_step_once() {
    let db = TestDb::new().await;
    let first = store_on_empty_schema(&db, "fresh").await;
    let second = Store::connect(&{
        let mut config = db.config();
        config.url = format!("{} options='-c search_path=fresh'", config.url);
        config
    })
    .unwrap();
    assert_eq!(migrate::status(&first).await.unwrap().current, 0);
    let outdated = migrate::require_latest(&first).await;
    assert!(
        matches!(outdated, Err(StoreError::SchemaOutdated { current: 0, .. })),
        "{outdated:?}"
    );

    let (a, b) = tokio::join!(migrate::migrate(&first), migrate::migrate(&second));

    let (a, b) = (a.unwrap(), b.unwrap());
    let mut applied = [a.applied.clone(), b.applied.clone()];
    applied.sort();
    assert_eq!(
        applied,
        [vec![], (1..=LATEST_VERSION).collect::<Vec<_>>()],
        "{a:?} {b:?}"
    );
    assert_eq!((a.current, b.current), (LATEST_VERSION, LATEST_VERSION));
    // The fresh schema got the same tables as a harness-migrated database.
    let reference = db.store();
    assert_eq!(
        schema_snapshot(&first).await,
        schema_snapshot(&reference).await
    );
}

#[tokio::test]
async fn a_database_newer_than_the_binary_is_refused() {
    let db = TestDb::new().await;
    let store = db.store();
    sql_execute(
        &store,
        "INSERT INTO schema_version (version, name, sha256) VALUES ($1, 'future.sql', sha256(''))",
        &[&(LATEST_VERSION + 1)],
    )
    .await;

    let refused = migrate::migrate(&store).await;

    assert!(
        matches!(refused, Err(StoreError::SchemaOutdated { current, latest }) if current == LATEST_VERSION + 1 && latest == LATEST_VERSION),
        "{refused:?}"
    );
}

#[tokio::test]
async fn an_applied_migration_edited_afterwards_is_refused() {
    let db = TestDb::new().await;
    let store = db.store();
    sql_execute(
        &store,
        "UPDATE schema_version SET sha256 = sha256('edited') WHERE version = 2",
        &[],
    )
    .await;

    let refused = migrate::migrate(&store).await;

    assert!(
        matches!(refused, Err(StoreError::Corrupt(_))),
        "{refused:?}"
    );
}
