//! The hot functions' cached plans use the keys whatever the tables' size when they were made.
//!
//! PL/pgSQL keeps one plan per statement and session. A plan made while a table was a page or
//! two (a young database, right after ANALYZE) must not scan that table once it has grown.

use otp_algo::Algorithm;
use otp_store::otp_devices;
use tokio_postgres::Client;

use crate::{given_instance, new_device};

const TABLES: &str = "'otp_devices', 'otp_verify_state', 'otp_verify_accepted', 'audit_log', \
                      'audit_heads', 'otp_verifications'";

/// A mismatch on device `pos` of `shop` (counter 0, every counter up to 1,000 computed).
const MISMATCH: &str = "
    SELECT outcome FROM otp_verify_observed('shop', 'pos', now(), 2::smallint, '',
        '{}'::bigint[], '{}'::integer[], 0, 1000, NULL, '192.0.2.1', NULL, 1000000, 1000000, 10)";

/// The sequential scans of the hot tables, and the reads through the audit listing's index,
/// so far, as this session's statistics say.
async fn seq_scans(client: &Client) -> (i64, i64) {
    client
        .batch_execute("SELECT pg_stat_force_next_flush()")
        .await
        .unwrap();
    client.batch_execute("SELECT 1").await.unwrap();
    client
        .batch_execute("SELECT pg_stat_clear_snapshot()")
        .await
        .unwrap();
    let sql = format!(
        "SELECT coalesce(sum(seq_scan), 0)::bigint FROM pg_stat_user_tables \
         WHERE relname IN ({TABLES})"
    );
    let scans = client.query_one(&sql, &[]).await.unwrap().get(0);
    let listing = client
        .query_one(
            "SELECT coalesce(sum(idx_tup_read), 0)::bigint FROM pg_stat_user_indexes \
             WHERE indexrelname = 'audit_log_by_serial'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    (scans, listing)
}

#[tokio::test]
async fn verification_plans_made_on_tiny_tables_never_scan_them_grown() {
    let db = otp_store::testing::TestDb::new().await;
    let store = db.store();
    let shop = given_instance(&store, "shop").await;
    let mut device = new_device("pos");
    device.algorithm = Algorithm::HotpWithoutPrice;
    otp_devices::create(&store, &shop, &device).await.unwrap();
    let client = store.pool().get().await.unwrap();
    // Statistics of tiny tables, then enough attempts for this session to cache its plans.
    client.batch_execute("ANALYZE").await.unwrap();
    for _ in 0..10 {
        let row = client.query_one(MISMATCH, &[]).await.unwrap();
        assert_eq!(row.get::<_, String>(0), "mismatch");
    }

    // The tables grow (no ANALYZE: the cached plans stay as they are).
    client
        .batch_execute(
            "INSERT INTO otp_devices (instance_serial, otp_device_id, description, otp_key,
                                      otp_key_digest, otp_algorithm)
             SELECT i.instance_serial, 'd' || g, '', decode(repeat('ab', 20), 'hex'),
                    sha256(g::text::bytea), 3
               FROM instances i, generate_series(1, 3000) g
              WHERE i.instance_id = 'shop';
             INSERT INTO otp_verify_state (instance_serial, otp_device_id)
             SELECT instance_serial, otp_device_id FROM otp_devices WHERE otp_device_id <> 'pos';
             INSERT INTO otp_verify_accepted (instance_serial, otp_device_id, kind, value,
                                              accepted_at)
             SELECT instance_serial, otp_device_id, 2, 5, now() FROM otp_devices
              WHERE otp_device_id <> 'pos';
             SELECT count(audit_append('shop', 'device_created', 'd' || (g % 3000), NULL,
                                       'local', '{}'))
               FROM generate_series(1, 6000) g;",
        )
        .await
        .unwrap();

    let before = seq_scans(&client).await;
    for _ in 0..5 {
        let row = client.query_one(MISMATCH, &[]).await.unwrap();
        assert_eq!(row.get::<_, String>(0), "mismatch");
    }
    assert_eq!(
        seq_scans(&client).await,
        before,
        "a cached plan scanned a table"
    );
}
