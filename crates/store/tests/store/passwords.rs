//! Instance passwords (stored as Argon2 PHC strings) and revoking the token a request came with.

use chrono::Utc;
use otp_store::testing::TestDb;
use otp_store::tokens::{self, AuthOutcome};
use otp_store::{StoreError, instances};

use crate::{given_instance, given_shop, given_token, instance_id};

/// A well-formed PHC string (its hash need not be right: the store never checks it).
const HASH: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g";

#[tokio::test]
async fn a_new_instance_has_no_password_until_one_is_set_and_clearing_removes_it() {
    let (_db, store, shop) = given_shop().await;
    let other = given_instance(&store, "other").await;

    assert_eq!(instances::password_hash(&store, &shop).await.unwrap(), None);
    instances::set_password_hash(&store, &shop, Some(HASH))
        .await
        .unwrap();
    assert_eq!(
        instances::password_hash(&store, &shop)
            .await
            .unwrap()
            .as_deref(),
        Some(HASH)
    );
    assert_eq!(
        instances::password_hash(&store, &other).await.unwrap(),
        None
    );

    instances::set_password_hash(&store, &shop, None)
        .await
        .unwrap();
    assert_eq!(instances::password_hash(&store, &shop).await.unwrap(), None);
}

#[tokio::test]
async fn passwords_of_unknown_instances_are_instance_not_found() {
    let db = TestDb::new().await;
    let store = db.store();
    let nope = instance_id("nope");

    let read = instances::password_hash(&store, &nope).await;
    let written = instances::set_password_hash(&store, &nope, Some(HASH)).await;

    assert!(
        matches!(read, Err(StoreError::InstanceNotFound)),
        "{read:?}"
    );
    assert!(
        matches!(written, Err(StoreError::InstanceNotFound)),
        "{written:?}"
    );
}

#[tokio::test]
async fn only_argon2_phc_strings_are_stored() {
    let (_db, store, shop) = given_shop().await;

    for bad in ["hunter2", "", "$2b$12$abcdefghijklmnopqrstuv"] {
        let outcome = instances::set_password_hash(&store, &shop, Some(bad)).await;
        assert!(outcome.is_err(), "{bad:?} was stored");
    }
    assert_eq!(instances::password_hash(&store, &shop).await.unwrap(), None);
}

#[tokio::test]
async fn revoking_by_secret_removes_that_token_only_and_only_in_its_instance() {
    let (_db, store, shop) = given_shop().await;
    let other = given_instance(&store, "other").await;
    let (_, used) = tokens::create(&store, &shop, "readonly", None, "used")
        .await
        .unwrap();
    let (kept, kept_secret) = tokens::create(&store, &shop, "write", None, "kept")
        .await
        .unwrap();
    let now = Utc::now();

    let elsewhere = tokens::revoke_by_secret(&store, &other, used.expose()).await;
    assert!(
        matches!(elsewhere, Err(StoreError::TokenNotFound)),
        "{elsewhere:?}"
    );
    let bare = used.expose().strip_prefix("secret-token:").unwrap();
    tokens::revoke_by_secret(&store, &shop, bare).await.unwrap();

    assert_eq!(
        tokens::authenticate(&store, &shop, Some(used.expose()), now)
            .await
            .unwrap(),
        AuthOutcome::Invalid
    );
    assert!(matches!(
        tokens::authenticate(&store, &shop, Some(kept_secret.expose()), now)
            .await
            .unwrap(),
        AuthOutcome::Valid(_)
    ));
    assert_eq!(tokens::list(&store, &shop).await.unwrap(), vec![kept]);
    let again = tokens::revoke_by_secret(&store, &shop, used.expose()).await;
    assert!(matches!(again, Err(StoreError::TokenNotFound)), "{again:?}");
}

#[tokio::test]
async fn refreshable_scopes_are_stored_as_given_and_tokens_list_by_ascending_serial() {
    let (_db, store, shop) = given_shop().await;
    let mut created = Vec::new();
    for scope in ["order-pos:refreshable", "write.refreshable", "readonly"] {
        let (token, _) = given_token(&store, &shop, scope).await;
        created.push(token);
    }

    let listed = tokens::list(&store, &shop).await.unwrap();

    assert_eq!(listed, created);
    let scopes: Vec<&str> = listed.iter().map(|t| t.scope.as_str()).collect();
    assert_eq!(
        scopes,
        ["order-pos:refreshable", "write.refreshable", "readonly"]
    );
    assert!(listed.windows(2).all(|w| w[0].serial < w[1].serial));
}
