//! `taler-otp audit list` and `taler-otp audit verify` against real PostgreSQL: operator
//! commands are audited as `local`; verify passes on an untouched chain and, after a row is
//! altered or deleted directly in SQL (the protecting triggers disabled, as an owner could),
//! names the first broken row and exits 1.

#![cfg(test)]

use std::process::{Command, Output};

use otp_store::testing::TestDb;

const BIN: &str = env!("CARGO_BIN_EXE_taler-otp");
const KEY: &str = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ";

/// A configuration file for the test database, removed on drop.
struct Conf(std::path::PathBuf);

impl Conf {
    fn new(db: &TestDb) -> Conf {
        let path = std::env::temp_dir().join(format!(
            "taler-otp-audit-{}-{}.conf",
            std::process::id(),
            db.name()
        ));
        std::fs::write(
            &path,
            format!("[merchantdb-postgres]\nCONFIG = \"{}\"\n", db.url()),
        )
        .unwrap();
        Conf(path)
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new(BIN)
            .arg("-c")
            .arg(&self.0)
            .args(args)
            .env_remove("TALER_OTP_CONFIG")
            .env("RUST_LOG", "warn")
            .output()
            .expect("binary runs")
    }

    /// Runs a command that must succeed and returns its standard output.
    fn ok(&self, args: &[&str]) -> String {
        let output = self.run(args);
        assert!(
            output.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Runs a command that must fail with `status` and one line on stderr; returns the line.
    fn fails(&self, args: &[&str], status: i32) -> String {
        let output = self.run(args);
        let err = String::from_utf8_lossy(&output.stderr).into_owned();
        assert_eq!(output.status.code(), Some(status), "{args:?}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "not one line: {err}");
        err
    }
}

impl Drop for Conf {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Runs `sql` with the audit tables' triggers disabled.
async fn tamper(db: &TestDb, sql: &str) {
    let client = db.store().pool().get().await.unwrap();
    client
        .batch_execute(&format!(
            "BEGIN;
             ALTER TABLE audit_log DISABLE TRIGGER USER;
             {sql};
             ALTER TABLE audit_log ENABLE TRIGGER USER;
             COMMIT;"
        ))
        .await
        .unwrap();
}

#[tokio::test]
async fn audit_list_shows_operator_actions_and_verify_names_the_broken_row() {
    let db = TestDb::new().await;
    let conf = Conf::new(&db);
    conf.ok(&["dbinit"]);
    conf.ok(&[
        "device",
        "add",
        "--id",
        "pos",
        "--key",
        KEY,
        "--algorithm",
        "1",
    ]);
    conf.ok(&["token", "create", "--scope", "readonly"]);

    let listed = conf.ok(&["audit", "list"]);
    let rows: Vec<Vec<&str>> = listed
        .lines()
        .skip(1)
        .map(|l| l.split('\t').collect())
        .collect();
    assert_eq!(rows.len(), 2, "{listed}");
    assert_eq!(
        listed.lines().next(),
        Some("serial\tchain\tseq\ttime\tevent\tdevice\ttoken\tclient\tdetails\thash")
    );
    // serial, chain, seq, time, event, device, token, client, details, hash
    assert_eq!(
        [&rows[0][..3], &rows[0][4..8]].concat(),
        ["1", "pos", "1", "device_created", "pos", "-", "local"]
    );
    assert_eq!(rows[0][8], r#"{"otp_ctr": 0, "otp_algorithm": 1}"#);
    assert_eq!(
        [&rows[1][..3], &rows[1][4..8]].concat(),
        ["2", "-", "1", "token_created", "-", "-", "local"]
    );
    assert_eq!(rows[1][9].len(), 64);
    assert!(!listed.contains(KEY) && !listed.contains("secret-token:"));
    let page = conf.ok(&["audit", "list", "--since", "1", "--limit", "1"]);
    assert_eq!(page.lines().count(), 2, "{page}");
    assert!(page.lines().nth(1).unwrap().starts_with("2\t"), "{page}");

    let intact = conf.ok(&["audit", "verify"]);
    assert!(intact.contains("intact: 2 rows in 2 chains"), "{intact}");
    assert!(intact.contains("heads digest "), "{intact}");

    tamper(
        &db,
        "UPDATE audit_log SET client = '203.0.113.9' WHERE instance_id = 'admin' AND seq = 1 AND chain = 'pos'",
    )
    .await;
    let broken = conf.fails(&["audit", "verify"], 1);
    assert!(
        broken.contains("broken in the chain of device 'pos' at seq 1"),
        "{broken}"
    );
    assert!(broken.contains("altered"), "{broken}");

    // Another instance: a deleted row is named by the row after it.
    conf.ok(&["instance", "create", "shop"]);
    let add = [
        "device",
        "add",
        "--instance",
        "shop",
        "--id",
        "a",
        "--key",
        KEY,
        "--algorithm",
        "1",
    ];
    conf.ok(&add);
    conf.ok(&["device", "delete", "--instance", "shop", "a"]);
    conf.ok(&add);
    assert!(
        conf.ok(&["audit", "verify", "--instance", "shop"])
            .contains("intact: 3 rows in 1 chains")
    );
    tamper(
        &db,
        "DELETE FROM audit_log WHERE instance_id = 'shop' AND chain = 'a' AND seq = 2",
    )
    .await;
    let missing = conf.fails(&["audit", "verify", "--instance", "shop"], 1);
    assert!(
        missing.contains("broken in the chain of device 'a' at seq 3"),
        "{missing}"
    );
    assert!(missing.contains("missing"), "{missing}");
    // Deleting the instance leaves its trail.
    conf.ok(&["instance", "delete", "shop"]);
    assert_eq!(
        conf.ok(&["audit", "list", "--instance", "shop"])
            .lines()
            .count(),
        3
    );

    // Usage errors.
    conf.fails(&["audit", "list", "--limit", "0"], 2);
    conf.fails(&["audit", "list", "--since", "-1"], 2);
}
