//! The NOTIFY triggers and `changes::subscribe`.

use std::time::Duration;

use otp_store::changes::{self, Change};
use otp_store::otp_devices::{self, OtpDevicePatch};
use otp_store::testing::{TcpProxy, TestDb};
use otp_store::{instances, tokens};
use tokio::sync::mpsc::Receiver;

use crate::{device_id, instance_id, new_device};

async fn next(changes: &mut Receiver<Change>) -> Change {
    tokio::time::timeout(Duration::from_secs(10), changes.recv())
        .await
        .expect("a change within 10 s")
        .expect("the subscription is open")
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
    let (token, _) = tokens::create(&store, &shop, "write", None, "")
        .await
        .unwrap();
    assert_eq!(
        next(&mut changes).await,
        Change::Tokens {
            instance: shop.clone()
        }
    );
    tokens::revoke(&store, &shop, token.serial).await.unwrap();
    assert_eq!(
        next(&mut changes).await,
        Change::Tokens {
            instance: shop.clone()
        }
    );
    otp_devices::create(&store, &shop, &device).await.unwrap();
    assert_eq!(next(&mut changes).await, device_change);
    // An idempotent replay and a no-op resync change nothing and notify
    // nothing: the next notification is the token's.
    otp_devices::create(&store, &shop, &device).await.unwrap();
    otp_devices::resync_counter(&store, &shop, &device.id, 0)
        .await
        .unwrap();
    tokens::create(&store, &shop, "readonly", None, "")
        .await
        .unwrap();
    assert_eq!(
        next(&mut changes).await,
        Change::Tokens {
            instance: shop.clone()
        }
    );
    otp_devices::update(&store, &shop, &device.id, &patch)
        .await
        .unwrap();
    assert_eq!(next(&mut changes).await, device_change);
    otp_devices::advance_counter(&store, &shop, &device.id)
        .await
        .unwrap();
    assert_eq!(next(&mut changes).await, device_change);
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
