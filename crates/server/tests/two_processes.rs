//! Two `taler-otp serve` processes on one database, under load: cache invalidation reaches the
//! other process within the staleness bound, and counter-mode confirmations spread over both
//! processes never share a code.

#![cfg(test)]

use std::collections::HashSet;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use otp_store::testing::TestDb;
use otp_store::{InstanceId, instances, tokens};
use serde_json::{Value, json};

mod common;

use common::{BIN, TempPath, db_config, free_port};
/// `CACHE_TTL_MS` of both processes.
const BOUND: Duration = Duration::from_millis(1000);
const OLD_KEY: &str = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ";
const NEW_KEY: &str = "AAISEM2EKVTHPCEZ";

struct Server {
    child: Child,
    base: String,
    _config: TempPath,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn start_server(url: &str, tag: &str) -> Server {
    let port = free_port();
    let extra = format!(
        "[merchant]\nPORT = {port}\n[otp]\nCACHE_TTL_MS = {}\nPOOL_SIZE = 8\n",
        BOUND.as_millis()
    );
    let config = db_config(&format!("two-{tag}"), url, &extra);
    let child = Command::new(BIN)
        .args(["-c", config.arg(), "serve"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(20);
    while reqwest::get(format!("{base}/config")).await.is_err() {
        assert!(Instant::now() < deadline, "server {tag} did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Server {
        child,
        base,
        _config: config,
    }
}

async fn get_code(client: &reqwest::Client, base: &str, token: &str) -> (u16, Option<String>) {
    let response = client
        .get(format!("{base}/private/otp-devices/till?faketime=1000"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap_or_default();
    (status, body["otp_code"].as_str().map(str::to_owned))
}

/// A database with instance `admin`, a write token, one device (`device`, created through
/// process A) and two `serve` processes on it.
struct Setup {
    db: TestDb,
    store: otp_store::Store,
    admin: InstanceId,
    write: String,
    a: Server,
    b: Server,
    client: reqwest::Client,
}

async fn setup(tag: &str, device: Value) -> Setup {
    let db = TestDb::new().await;
    let store = db.store();
    let admin = InstanceId::parse("admin").unwrap();
    instances::ensure(&store, &admin, "admin").await.unwrap();
    let (_, write) = tokens::create(&store, &admin, "write", None, "")
        .await
        .unwrap();
    let write = write.expose().to_owned();
    let a = start_server(&db.url(), &format!("{tag}a")).await;
    let b = start_server(&db.url(), &format!("{tag}b")).await;
    let client = reqwest::Client::new();
    let created = client
        .post(format!("{}/private/otp-devices", a.base))
        .bearer_auth(&write)
        .json(&device)
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 204);
    Setup {
        db,
        store,
        admin,
        write,
        a,
        b,
        client,
    }
}

fn code_for(key: &str) -> String {
    let key = otp_algo::OtpKey::from_base32(key).unwrap();
    otp_algo::confirmation(&key, otp_algo::Algorithm::TotpWithoutPrice, None, 1000, 0).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patch_and_revocation_through_one_process_reach_the_other_within_the_bound_under_load() {
    let Setup { db: _db, store, admin, write, a, b, client } =
        setup("a", json!({"otp_device_id": "till", "otp_device_description": "t", "otp_key": OLD_KEY, "otp_algorithm": 1})).await;
    let (old_code, new_code) = (code_for(OLD_KEY), code_for(NEW_KEY));
    assert_eq!(
        get_code(&client, &b.base, &write).await.1.as_deref(),
        Some(old_code.as_str())
    );

    // Load on B: 16 loops recording (request start, code).
    let stop = Arc::new(AtomicBool::new(false));
    let mut loops = Vec::new();
    for _ in 0..16 {
        let (client, base, token, stop) =
            (client.clone(), b.base.clone(), write.clone(), stop.clone());
        loops.push(tokio::spawn(async move {
            let mut seen = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let started = Instant::now();
                let (status, code) = get_code(&client, &base, &token).await;
                seen.push((started, status, code));
            }
            seen
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let patched = client
        .patch(format!("{}/private/otp-devices/till", a.base))
        .bearer_auth(&write)
        .json(&json!({"otp_device_description": "t", "otp_key": NEW_KEY}))
        .send()
        .await
        .unwrap();
    assert_eq!(patched.status(), 204);
    let patched_at = Instant::now();
    tokio::time::sleep(BOUND * 2).await;
    stop.store(true, Ordering::Relaxed);
    let mut late = 0;
    let mut total = 0;
    for handle in loops {
        for (started, status, code) in handle.await.unwrap() {
            total += 1;
            assert_eq!(status, 200);
            if started > patched_at + BOUND {
                late += 1;
                assert_eq!(
                    code.as_deref(),
                    Some(new_code.as_str()),
                    "old key's code after the bound"
                );
            }
        }
    }
    assert!(
        late > 50,
        "too little load after the bound: {late} of {total}"
    );

    // Revocation under load: the token fails on both processes within the bound.
    let (token, secret) = tokens::create(&store, &admin, "readonly", None, "")
        .await
        .unwrap();
    let secret = secret.expose().to_owned();
    for server in [&a, &b] {
        assert_eq!(get_code(&client, &server.base, &secret).await.0, 200);
    }
    tokens::revoke(&store, &admin, token.serial).await.unwrap();
    let revoked_at = Instant::now();
    tokio::time::sleep(BOUND + Duration::from_millis(50)).await;
    let checks = (0..64).map(|i| {
        let server = if i % 2 == 0 { &a } else { &b };
        get_code(&client, &server.base, &secret)
    });
    for (status, _) in futures_util::future::join_all(checks).await {
        assert_eq!(
            status,
            401,
            "revoked token accepted {:?} after revocation",
            revoked_at.elapsed()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_confirmations_across_two_processes_are_distinct() {
    let Setup { db: _db, store, admin, write, a, b, client } = setup(
        "c",
        json!({"otp_device_id": "hotp", "otp_device_description": "h", "otp_key": OLD_KEY, "otp_algorithm": 3, "otp_ctr": 10}),
    )
    .await;
    let calls = (0..64).map(|i| {
        let base = if i % 2 == 0 {
            a.base.clone()
        } else {
            b.base.clone()
        };
        let (client, write) = (client.clone(), write.clone());
        async move {
            let response = client
                .post(format!("{base}/private/otp-devices/hotp/confirmations"))
                .bearer_auth(write)
                .json(&json!({}))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200);
            let body: Value = response.json().await.unwrap();
            (
                body["pos_confirmation"].as_str().unwrap().to_owned(),
                body["otp_ctr"].as_u64().unwrap(),
            )
        }
    });
    let results = futures_util::future::join_all(calls).await;
    let codes: HashSet<_> = results.iter().map(|(code, _)| code.clone()).collect();
    let counters: HashSet<_> = results.iter().map(|(_, counter)| *counter).collect();
    assert_eq!(codes.len(), 64);
    assert_eq!(counters, (10..74).collect());
    let device = otp_store::otp_devices::get(
        &store,
        &admin,
        &otp_store::OtpDeviceId::parse("hotp").unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(device.counter, 74);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_two_verifications_of_one_code_across_two_processes_verify_once() {
    let Setup { db: _db, write, a, b, client, .. } = setup(
        "v",
        json!({"otp_device_id": "till", "otp_device_description": "t", "otp_key": OLD_KEY, "otp_algorithm": 3, "otp_ctr": 7}),
    )
    .await;
    let key = otp_algo::OtpKey::from_base32(OLD_KEY).unwrap();
    let code = otp_algo::hotp_code(key.as_bytes(), 9);
    let calls = (0..32).map(|i| {
        let base = if i % 2 == 0 {
            a.base.clone()
        } else {
            b.base.clone()
        };
        let (client, write, code) = (client.clone(), write.clone(), code.clone());
        async move {
            let response = client
                .post(format!("{base}/private/otp-devices/till/verifications"))
                .bearer_auth(write)
                .json(&json!({"code": code, "reference": format!("order-{i}")}))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200);
            response.json::<Value>().await.unwrap()
        }
    });
    let answers = futures_util::future::join_all(calls).await;
    let verified: Vec<&Value> = answers.iter().filter(|a| a["verified"] == true).collect();
    assert_eq!(verified.len(), 1, "{answers:?}");
    assert_eq!(verified[0]["otp_ctr"], 9);
    let winner = answers.iter().position(|a| a["verified"] == true).unwrap();
    for answer in answers.iter().filter(|a| a["verified"] != true) {
        assert_eq!(answer["reason"], "replayed", "{answer}");
        assert_eq!(answer["reference"], format!("order-{winner}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_hotp_counter_is_shown_fresh_and_lists_follow_changes_within_the_bound() {
    let Setup {
        db: _db,
        write,
        a,
        b,
        client,
        ..
    } = setup(
        "l",
        json!({"otp_device_id": "hotp", "otp_device_description": "h", "otp_key": OLD_KEY, "otp_algorithm": 3, "otp_ctr": 5}),
    )
    .await;
    // `GET base path` with the write token, asserted 200: its JSON body.
    let fetch = |base: String, path: &'static str| {
        let (client, write) = (client.clone(), write.clone());
        async move {
            let response = client
                .get(format!("{base}{path}"))
                .bearer_auth(write)
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200);
            response.json::<Value>().await.unwrap()
        }
    };
    let get = |base: String| fetch(base, "/private/otp-devices/hotp");
    let list =
        async |base: String| fetch(base, "/private/otp-devices").await["otp_devices"].clone();
    // B caches the device and the list; confirmations through A advance the counter without
    // a notification, and B shows the stored counter and its code at once.
    assert_eq!(get(b.base.clone()).await["otp_ctr"], 5);
    assert_eq!(list(b.base.clone()).await.as_array().unwrap().len(), 1);
    for _ in 0..3 {
        let response = client
            .post(format!("{}/private/otp-devices/hotp/confirmations", a.base))
            .bearer_auth(&write)
            .json(&json!({}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }
    let shown = get(b.base.clone()).await;
    let key = otp_algo::OtpKey::from_base32(OLD_KEY).unwrap();
    assert_eq!(shown["otp_ctr"], 8);
    assert_eq!(shown["otp_code"], otp_algo::hotp_code(key.as_bytes(), 8));

    // A device created and a description changed through A reach B's cached list within the
    // bound; through B itself, at once.
    let created = client
        .post(format!("{}/private/otp-devices", a.base))
        .bearer_auth(&write)
        .json(&json!({"otp_device_id": "second", "otp_device_description": "s", "otp_key": NEW_KEY, "otp_algorithm": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 204);
    let patched = client
        .patch(format!("{}/private/otp-devices/hotp", a.base))
        .bearer_auth(&write)
        .json(&json!({"otp_device_description": "renamed"}))
        .send()
        .await
        .unwrap();
    assert_eq!(patched.status(), 204);
    let changed_at = Instant::now();
    tokio::time::sleep(BOUND + Duration::from_millis(50)).await;
    let expected = json!([
        {"otp_device_id": "hotp", "device_description": "renamed"},
        {"otp_device_id": "second", "device_description": "s"},
    ]);
    assert_eq!(
        list(b.base.clone()).await,
        expected,
        "B's list {:?} after the change",
        changed_at.elapsed()
    );
    let deleted = client
        .delete(format!("{}/private/otp-devices/second", b.base))
        .bearer_auth(&write)
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 204);
    assert_eq!(list(b.base.clone()).await.as_array().unwrap().len(), 1);
}
