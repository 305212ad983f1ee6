//! No operation of one instance reaches another instance's rows, even with
//! guessed device ids and token serials.

use chrono::Utc;
use otp_store::StoreError;
use otp_store::otp_devices::{self, Created, OtpDevicePatch};
use otp_store::tokens::{self, AuthOutcome};

use crate::{given_alpha_and_beta, given_token, key, new_device, stored};

#[tokio::test]
async fn an_instance_can_never_read_change_delete_or_advance_another_instances_devices() {
    let (_db, store, alpha, beta) = given_alpha_and_beta().await;
    let only_alpha = new_device("alpha-only");
    let shared = new_device("shared");
    otp_devices::create(&store, &alpha, &only_alpha)
        .await
        .unwrap();
    otp_devices::create(&store, &alpha, &shared).await.unwrap();
    let mut beta_shared = new_device("shared");
    beta_shared.key = key(7);
    beta_shared.counter = 100;
    let alpha_before = stored(&store, &alpha, &only_alpha.id).await;
    let shared_before = stored(&store, &alpha, &shared.id).await;

    // The same id in another instance is a different device, not a conflict.
    assert_eq!(
        otp_devices::create(&store, &beta, &beta_shared)
            .await
            .unwrap(),
        Created::Inserted
    );
    let patch = OtpDevicePatch {
        description: "hijacked".into(),
        key: Some(key(9)),
        algorithm: None,
        counter: Some(0),
    };
    let outcomes = [
        (
            "get",
            otp_devices::get(&store, &beta, &only_alpha.id)
                .await
                .map(drop),
        ),
        (
            "update",
            otp_devices::update(&store, &beta, &only_alpha.id, &patch).await,
        ),
        (
            "advance",
            otp_devices::advance_counter(&store, &beta, &only_alpha.id, true)
                .await
                .map(drop),
        ),
        (
            "resync",
            otp_devices::resync_counter(&store, &beta, &only_alpha.id, 50).await,
        ),
        (
            "delete",
            otp_devices::delete(&store, &beta, &only_alpha.id).await,
        ),
    ];
    for (operation, outcome) in outcomes {
        assert!(
            matches!(outcome, Err(StoreError::DeviceNotFound)),
            "{operation}: {outcome:?}"
        );
    }
    // Operations on beta's "shared" never touch alpha's "shared".
    otp_devices::update(&store, &beta, &shared.id, &patch)
        .await
        .unwrap();
    otp_devices::advance_counter(&store, &beta, &shared.id, true)
        .await
        .unwrap();
    otp_devices::delete(&store, &beta, &shared.id)
        .await
        .unwrap();

    assert_eq!(stored(&store, &alpha, &only_alpha.id).await, alpha_before);
    assert_eq!(stored(&store, &alpha, &shared.id).await, shared_before);
    let beta_ids: Vec<String> = otp_devices::list(&store, &beta)
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.id.to_string())
        .collect();
    assert!(beta_ids.is_empty(), "{beta_ids:?}");
    assert_eq!(otp_devices::list(&store, &alpha).await.unwrap().len(), 2);
}

#[tokio::test]
async fn an_instance_can_never_list_revoke_or_authenticate_with_another_instances_tokens() {
    let (_db, store, alpha, beta) = given_alpha_and_beta().await;
    let (alpha_token, alpha_secret) = given_token(&store, &alpha, "admin").await;
    let (beta_token, _) = given_token(&store, &beta, "readonly").await;

    let with_alpha_secret =
        tokens::authenticate(&store, &beta, Some(alpha_secret.expose()), Utc::now())
            .await
            .unwrap();
    let revoked = tokens::revoke(&store, &beta, alpha_token.serial).await;
    let beta_list = tokens::list(&store, &beta).await.unwrap();

    assert_eq!(with_alpha_secret, AuthOutcome::Invalid);
    assert!(
        matches!(revoked, Err(StoreError::TokenNotFound)),
        "{revoked:?}"
    );
    assert_eq!(beta_list, vec![beta_token.clone()]);
    // Guessing the serials around beta's own finds nothing of alpha's either.
    for serial in (beta_token.serial - 3)..(beta_token.serial + 3) {
        if serial != beta_token.serial {
            assert!(
                matches!(
                    tokens::revoke(&store, &beta, serial).await,
                    Err(StoreError::TokenNotFound)
                ),
                "serial {serial}"
            );
        }
    }
    let still_valid = tokens::authenticate(&store, &alpha, Some(alpha_secret.expose()), Utc::now())
        .await
        .unwrap();
    assert_eq!(still_valid, AuthOutcome::Valid(alpha_token));
}
