//! Access tokens: hashing, authentication, expiry, revocation.

use chrono::{Duration, Utc};
use otp_store::StoreError;
use otp_store::testing::TestDb;
use otp_store::tokens::{self, AuthOutcome};

use crate::{given_shop, given_token, instance_id};

#[tokio::test]
async fn a_new_token_authenticates_with_or_without_its_prefix() {
    let (_db, store, shop) = given_shop().await;

    let (token, secret) = tokens::create(&store, &shop, "write", None, "POS")
        .await
        .unwrap();
    let bare = secret.expose().strip_prefix("secret-token:").unwrap();

    assert_eq!(token.instance, shop);
    assert_eq!(token.scope, "write");
    assert_eq!(token.description, "POS");
    for presented in [secret.expose(), bare] {
        let outcome = tokens::authenticate(&store, &shop, Some(presented), Utc::now())
            .await
            .unwrap();
        assert_eq!(
            outcome,
            AuthOutcome::Valid(token.clone()),
            "presented as {presented:?}"
        );
    }
}

#[tokio::test]
async fn missing_or_wrong_secrets_are_invalid_and_unknown_instances_are_reported_first() {
    let (_db, store, shop) = given_shop().await;
    let (_, secret) = given_token(&store, &shop, "write").await;
    let now = Utc::now();

    let cases = [
        (shop.clone(), None, AuthOutcome::Invalid),
        (
            shop.clone(),
            Some("secret-token:WRONG"),
            AuthOutcome::Invalid,
        ),
        (shop.clone(), Some(""), AuthOutcome::Invalid),
        (instance_id("nope"), None, AuthOutcome::InstanceUnknown),
        (
            instance_id("nope"),
            Some(secret.expose()),
            AuthOutcome::InstanceUnknown,
        ),
    ];
    for (instance, presented, expected) in cases {
        let outcome = tokens::authenticate(&store, &instance, presented, now)
            .await
            .unwrap();
        assert_eq!(
            outcome, expected,
            "instance {instance}, secret {presented:?}"
        );
    }
}

#[tokio::test]
async fn a_token_is_invalid_from_its_expiry_on() {
    let (_db, store, shop) = given_shop().await;
    let expires_at = Utc::now() + Duration::hours(1);
    let (_, secret) = tokens::create(&store, &shop, "readonly", Some(expires_at), "")
        .await
        .unwrap();
    let auth = |now| tokens::authenticate(&store, &shop, Some(secret.expose()), now);

    assert!(matches!(
        auth(expires_at - Duration::seconds(1)).await.unwrap(),
        AuthOutcome::Valid(_)
    ));
    assert_eq!(auth(expires_at).await.unwrap(), AuthOutcome::Invalid);
    assert_eq!(
        auth(expires_at + Duration::days(1)).await.unwrap(),
        AuthOutcome::Invalid
    );
}

#[tokio::test]
async fn only_the_sha256_of_the_secret_is_stored() {
    let (_db, store, shop) = given_shop().await;
    let (_, secret) = tokens::create(&store, &shop, "write", None, "note")
        .await
        .unwrap();
    let bare = secret
        .expose()
        .strip_prefix("secret-token:")
        .unwrap()
        .to_owned();

    let client = store.pool().get().await.unwrap();
    let row = client
        .query_one(
            "SELECT row_to_json(t)::text AS whole, token_hash FROM access_tokens t",
            &[],
        )
        .await
        .unwrap();
    let whole: String = row.get("whole");
    let stored_hash: Vec<u8> = row.get("token_hash");

    assert_eq!(stored_hash, tokens::hash_secret(secret.expose()));
    assert!(
        !whole.contains(&bare),
        "the secret leaked into the row: {whole}"
    );
    let secret_hex: String = bare.bytes().map(|b| format!("{b:02x}")).collect();
    assert!(
        !whole.contains(&secret_hex),
        "the secret leaked into the row as bytes"
    );
}

#[tokio::test]
async fn tokens_are_listed_and_revoked_by_serial() {
    let (_db, store, shop) = given_shop().await;
    let (first, first_secret) = tokens::create(&store, &shop, "readonly", None, "a")
        .await
        .unwrap();
    let (second, _) = tokens::create(&store, &shop, "write", None, "b")
        .await
        .unwrap();

    assert_eq!(
        tokens::list(&store, &shop).await.unwrap(),
        vec![first.clone(), second.clone()]
    );
    tokens::revoke(&store, &shop, first.serial).await.unwrap();

    assert_eq!(tokens::list(&store, &shop).await.unwrap(), vec![second]);
    let again = tokens::revoke(&store, &shop, first.serial).await;
    assert!(matches!(again, Err(StoreError::TokenNotFound)), "{again:?}");
    let auth = tokens::authenticate(&store, &shop, Some(first_secret.expose()), Utc::now())
        .await
        .unwrap();
    assert_eq!(auth, AuthOutcome::Invalid);
}

#[tokio::test]
async fn tokens_need_an_existing_instance() {
    let db = TestDb::new().await;
    let store = db.store();

    let created = tokens::create(&store, &instance_id("nope"), "write", None, "").await;

    assert!(
        matches!(created, Err(StoreError::InstanceNotFound)),
        "{created:?}"
    );
    assert!(
        tokens::list(&store, &instance_id("nope"))
            .await
            .unwrap()
            .is_empty()
    );
}
