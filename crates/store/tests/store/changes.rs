//! The NOTIFY triggers and `changes::subscribe`.

use std::time::Duration;

use otp_algo::Algorithm;
use otp_store::changes::{self, Change};
use otp_store::otp_devices::{self, OtpDevicePatch};
use otp_store::testing::{TcpProxy, TestDb};
use otp_store::verifications::{self, Attempt, Candidates, Outcome, VerifyPolicy};
use otp_store::{InstanceId, Store, instances, tokens};
use tokio::sync::mpsc::{self, Receiver, UnboundedReceiver};
use tokio_postgres::{AsyncMessage, NoTls};

use crate::{device_id, given_shop, given_token, instance_id, new_device};

async fn next(changes: &mut Receiver<Change>) -> Change {
    tokio::time::timeout(Duration::from_secs(10), changes.recv())
        .await
        .expect("a change within 10 s")
        .expect("the subscription is open")
}

/// Creates a token of `shop` and asserts that its notification is the next one: nothing done
/// since the last notification notified anything.
async fn next_is_a_new_token(store: &Store, shop: &InstanceId, changes: &mut Receiver<Change>) {
    given_token(store, shop, "readonly").await;
    let expected = Change::Tokens {
        instance: shop.clone(),
    };
    assert_eq!(next(changes).await, expected);
}

#[tokio::test]
async fn every_change_of_instances_tokens_and_devices_is_notified() {
    let db = TestDb::new().await;
    let store = db.store();
    let mut changes = changes::subscribe(&db.config()).await.unwrap();
    assert_eq!(next(&mut changes).await, Change::Resync);
    let shop = instance_id("shop");
    let device = new_device("pos:1");
    let device_change = Change::Device {
        instance: shop.clone(),
        device: device_id("pos:1"),
    };
    let tokens_change = Change::Tokens {
        instance: shop.clone(),
    };
    let patch = OtpDevicePatch {
        description: "new".into(),
        key: None,
        algorithm: None,
        counter: None,
    };

    instances::create(&store, &shop, "Shop").await.unwrap();
    assert_eq!(
        next(&mut changes).await,
        Change::Instance {
            instance: shop.clone()
        }
    );
    let (token, _) = given_token(&store, &shop, "write").await;
    assert_eq!(next(&mut changes).await, tokens_change);
    tokens::revoke(&store, &shop, token.serial).await.unwrap();
    assert_eq!(next(&mut changes).await, tokens_change);
    otp_devices::create(&store, &shop, &device).await.unwrap();
    assert_eq!(next(&mut changes).await, device_change);
    // An idempotent replay and a no-op resync change nothing and notify
    // nothing: the next notification is the token's.
    otp_devices::create(&store, &shop, &device).await.unwrap();
    otp_devices::resync_counter(&store, &shop, &device.id, 0)
        .await
        .unwrap();
    next_is_a_new_token(&store, &shop, &mut changes).await;
    otp_devices::update(&store, &shop, &device.id, &patch)
        .await
        .unwrap();
    assert_eq!(next(&mut changes).await, device_change);
    // A counter advance of an HOTP device notifies nothing (migration 9): the next
    // notification is the token's.
    otp_devices::advance_counter(&store, &shop, &device.id, false)
        .await
        .unwrap();
    next_is_a_new_token(&store, &shop, &mut changes).await;
    otp_devices::delete(&store, &shop, &device.id)
        .await
        .unwrap();
    assert_eq!(next(&mut changes).await, device_change);
    instances::delete(&store, &shop).await.unwrap();
    assert_eq!(
        next(&mut changes).await,
        Change::Instance { instance: shop }
    );
}

#[tokio::test]
async fn the_subscription_resyncs_after_losing_and_regaining_its_connection() {
    let db = TestDb::new().await;
    let store = db.store();
    let proxy = TcpProxy::start(db.upstream_addr()).await;
    let mut config = db.config();
    config.url = db.url_via(proxy.addr());
    let mut changes = changes::subscribe(&config).await.unwrap();
    assert_eq!(next(&mut changes).await, Change::Resync);

    proxy.set_down(true);
    assert_eq!(next(&mut changes).await, Change::Resync);
    proxy.set_down(false);
    assert_eq!(next(&mut changes).await, Change::Resync);
    instances::create(&store, &instance_id("shop"), "Shop")
        .await
        .unwrap();

    assert_eq!(
        next(&mut changes).await,
        Change::Instance {
            instance: instance_id("shop")
        }
    );
}

/// The payloads on `taler_otp_changes`, from a connection of the test's own that `LISTEN`s.
async fn listen(url: &str) -> (tokio_postgres::Client, UnboundedReceiver<serde_json::Value>) {
    let (client, mut connection) = tokio_postgres::connect(url, NoTls).await.unwrap();
    let (forward, payloads) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(Ok(message)) = futures_util::StreamExt::next(&mut messages).await {
            if let AsyncMessage::Notification(notification) = message {
                let payload = serde_json::from_str(notification.payload()).unwrap();
                if forward.send(payload).is_err() {
                    break;
                }
            }
        }
    });
    client
        .batch_execute("LISTEN taler_otp_changes")
        .await
        .unwrap();
    (client, payloads)
}

async fn next_payload(payloads: &mut UnboundedReceiver<serde_json::Value>) -> serde_json::Value {
    tokio::time::timeout(Duration::from_secs(10), payloads.recv())
        .await
        .expect("a notification within 10 s")
        .expect("the listening connection is open")
}

#[tokio::test]
async fn counter_advances_and_accepted_hotp_codes_notify_nothing_while_a_patch_does() {
    let (db, store, shop) = given_shop().await;
    let (_listening, mut payloads) = listen(&db.url()).await;
    let device = new_device("pos");
    otp_devices::create(&store, &shop, &device).await.unwrap();
    let device_payload = serde_json::json!({"kind": "device", "instance": "shop", "device": "pos"});
    let tokens_payload = serde_json::json!({"kind": "tokens", "instance": "shop"});
    assert_eq!(next_payload(&mut payloads).await, device_payload);

    // Confirmations, a verification accepting an HOTP code, a PATCH of the counter alone and
    // a no-op PATCH: the counter moves, nothing is notified, so the next notification is the
    // token's, committed after them.
    for _ in 0..3 {
        otp_devices::advance_counter(&store, &shop, &device.id, false)
            .await
            .unwrap()
            .taken()
            .unwrap();
    }
    let verified = verifications::verify(
        &store,
        &shop,
        &device.id,
        chrono::Utc::now(),
        &Candidates::Hotp {
            counters: vec![4],
            range: (0, 40),
        },
        &Attempt {
            reference: None,
            client: "test",
            token_serial: None,
        },
        &VerifyPolicy {
            max_failures: 5,
            daily_failures: 100,
            hotp_lookahead: 10,
        },
    )
    .await
    .unwrap();
    assert!(
        matches!(
            verified,
            Outcome::Verified {
                otp_ctr: Some(4),
                ..
            }
        ),
        "{verified:?}"
    );
    let counter_only = OtpDevicePatch {
        description: device.description.clone(),
        key: None,
        algorithm: None,
        counter: Some(20),
    };
    otp_devices::update(&store, &shop, &device.id, &counter_only)
        .await
        .unwrap();
    assert_eq!(
        otp_devices::counter(&store, &shop, &device.id)
            .await
            .unwrap(),
        (Algorithm::HotpWithoutPrice, 20)
    );
    given_token(&store, &shop, "readonly").await;
    assert_eq!(next_payload(&mut payloads).await, tokens_payload);

    // A PATCH of what the caches hold notifies: the description, the key, the algorithm.
    let patches = [
        OtpDevicePatch {
            description: "renamed".into(),
            ..counter_only.clone()
        },
        OtpDevicePatch {
            description: "renamed".into(),
            key: Some(crate::key(9)),
            algorithm: None,
            counter: None,
        },
        OtpDevicePatch {
            description: "renamed".into(),
            key: None,
            algorithm: Some(Algorithm::TotpWithoutPrice),
            counter: None,
        },
        // The counter of a TOTP device is shown from the caches: changing it notifies.
        OtpDevicePatch {
            description: "renamed".into(),
            key: None,
            algorithm: None,
            counter: Some(99),
        },
    ];
    for patch in &patches {
        otp_devices::update(&store, &shop, &device.id, patch)
            .await
            .unwrap();
        assert_eq!(
            next_payload(&mut payloads).await,
            device_payload,
            "{patch:?}"
        );
    }
    given_token(&store, &shop, "readonly").await;
    assert_eq!(next_payload(&mut payloads).await, tokens_payload);
}

#[tokio::test]
async fn up_to_date_confirmations_come_after_every_change_committed_before_them() {
    let db = TestDb::new().await;
    let store = db.store();
    let mut changes = changes::subscribe_up_to_date(&db.config(), Duration::from_millis(20))
        .await
        .unwrap();
    assert_eq!(next(&mut changes).await, Change::Resync);
    let mut last = None;
    for i in 0..5 {
        let shop = instance_id(&format!("shop{i}"));
        instances::create(&store, &shop, "Shop").await.unwrap();
        let committed = std::time::Instant::now();
        // Confirmations sent before the commit may come first; the first one sent after it
        // comes after the change.
        let mut seen = false;
        loop {
            match next(&mut changes).await {
                Change::Instance { instance } => {
                    assert_eq!(instance, shop);
                    seen = true;
                }
                Change::UpToDate { as_of } => {
                    assert!(last.is_none_or(|last| as_of > last), "out of order");
                    last = Some(as_of);
                    if as_of > committed {
                        assert!(seen, "confirmed as of after the commit, change not seen");
                        break;
                    }
                }
                other => panic!("unexpected {other:?}"),
            }
        }
    }
}
