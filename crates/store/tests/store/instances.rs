//! Instance CRUD and cascading deletes.

use otp_store::testing::TestDb;
use otp_store::{StoreError, instances, otp_devices, tokens};

use crate::{given_shop, given_token, instance_id, new_device};

#[tokio::test]
async fn created_instances_can_be_read_listed_and_deleted() {
    let db = TestDb::new().await;
    let store = db.store();

    let created = instances::create(&store, &instance_id("shop"), "The Shop")
        .await
        .unwrap();
    instances::create(&store, &instance_id("admin"), "Admin")
        .await
        .unwrap();

    assert_eq!(created.id, instance_id("shop"));
    assert_eq!(created.name, "The Shop");
    assert_eq!(
        instances::get(&store, &instance_id("shop")).await.unwrap(),
        created
    );
    let ids: Vec<String> = instances::list(&store)
        .await
        .unwrap()
        .into_iter()
        .map(|i| i.id.to_string())
        .collect();
    assert_eq!(ids, ["admin", "shop"]);

    instances::delete(&store, &instance_id("shop"))
        .await
        .unwrap();
    assert!(matches!(
        instances::get(&store, &instance_id("shop")).await,
        Err(StoreError::InstanceNotFound)
    ));
    assert!(matches!(
        instances::delete(&store, &instance_id("shop")).await,
        Err(StoreError::InstanceNotFound)
    ));
}

#[tokio::test]
async fn creating_an_existing_instance_conflicts_and_ensure_is_idempotent() {
    let db = TestDb::new().await;
    let store = db.store();

    assert!(
        instances::ensure(&store, &instance_id("shop"), "First")
            .await
            .unwrap()
    );
    assert!(
        !instances::ensure(&store, &instance_id("shop"), "Second")
            .await
            .unwrap()
    );
    let again = instances::create(&store, &instance_id("shop"), "Third").await;

    assert!(
        matches!(again, Err(StoreError::InstanceExists)),
        "{again:?}"
    );
    assert_eq!(
        instances::get(&store, &instance_id("shop"))
            .await
            .unwrap()
            .name,
        "First"
    );
}

#[tokio::test]
async fn deleting_an_instance_deletes_its_tokens_and_devices() {
    let (_db, store, shop) = given_shop().await;
    otp_devices::create(&store, &shop, &new_device("pos"))
        .await
        .unwrap();
    let (_, secret) = given_token(&store, &shop, "write").await;

    instances::delete(&store, &shop).await.unwrap();
    instances::create(&store, &shop, "Reborn").await.unwrap();

    assert!(otp_devices::list(&store, &shop).await.unwrap().is_empty());
    assert!(tokens::list(&store, &shop).await.unwrap().is_empty());
    let auth = tokens::authenticate(&store, &shop, Some(secret.expose()), chrono::Utc::now())
        .await
        .unwrap();
    assert_eq!(auth, tokens::AuthOutcome::Invalid);
}

/// What `keep` may fail with in [`instance_and_first_token_are_created_together_or_not_at_all`].
#[derive(Debug)]
enum Keep {
    Refused,
    Store,
}

impl From<StoreError> for Keep {
    fn from(_: StoreError) -> Keep {
        Keep::Store
    }
}

#[tokio::test]
async fn instance_and_first_token_are_created_together_or_not_at_all() {
    let db = TestDb::new().await;
    let store = db.store();
    let shop = instance_id("shop");

    // `keep` fails (the file could not be written): neither the instance nor a token exists.
    let refused = instances::create_with_token(&store, &shop, "Shop", "all", "first", |_| {
        Err(Keep::Refused)
    })
    .await;
    assert!(matches!(refused, Err(Keep::Refused)), "{refused:?}");
    assert!(matches!(
        instances::get(&store, &shop).await,
        Err(StoreError::InstanceNotFound)
    ));
    assert!(tokens::list(&store, &shop).await.unwrap().is_empty());

    // Then both, and the secret handed to `keep` is the token's.
    let mut kept = None;
    let created = instances::create_with_token(&store, &shop, "Shop", "all", "first", |secret| {
        kept = Some(secret.expose().to_owned());
        Ok::<(), Keep>(())
    })
    .await
    .unwrap();
    assert!(created);
    let secret = kept.unwrap();
    let now = chrono::Utc::now();
    assert!(matches!(
        tokens::authenticate(&store, &shop, Some(&secret), now).await.unwrap(),
        tokens::AuthOutcome::Valid(token) if token.scope == "all"
    ));

    // An existing instance: nothing changes and `keep` is not called.
    let again: Result<bool, Keep> =
        instances::create_with_token(&store, &shop, "Other", "all", "again", |_| {
            panic!("keep called for an existing instance")
        })
        .await;
    assert!(matches!(again, Ok(false)), "{again:?}");
    assert_eq!(tokens::list(&store, &shop).await.unwrap().len(), 1);
    assert_eq!(instances::get(&store, &shop).await.unwrap().name, "Shop");
}
