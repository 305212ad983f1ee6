//! Tests of the login wire types: scopes, durations, and what is never printed.
use super::*;
use serde_json::json;

fn request(body: Value) -> Result<TokenToIssue, ApiError> {
    serde_json::from_value::<LoginTokenRequest>(body)
        .unwrap()
        .validate()
}

#[test]
fn scopes_with_and_without_refreshable() {
    let plain = request(json!({"scope": "readonly"})).unwrap();
    assert_eq!((plain.scope, plain.refreshable), ("readonly", false));
    assert_eq!(plain.lifetime, Some(chrono::Duration::days(1)));
    assert_eq!(plain.stored_scope(), "readonly");
    let refreshable = request(json!({"scope": "order-pos:refreshable"})).unwrap();
    assert_eq!(refreshable.stored_scope(), "order-pos:refreshable");
    let legacy = request(json!({"scope": "all", "refreshable": true})).unwrap();
    assert_eq!(legacy.stored_scope(), "all:refreshable");
    let old_spelling = request(json!({"scope": "write.refreshable"})).unwrap();
    assert_eq!(old_spelling.stored_scope(), "write:refreshable");
}

#[test]
fn bad_scopes_are_400() {
    for (body, code) in [
        (json!({}), 25),
        (json!({"scope": null}), 25),
        (json!({"scope": 3}), 26),
        (json!({"scope": "root"}), 26),
        (json!({"scope": "readonly:forever"}), 26),
        (json!({"scope": "READONLY"}), 26),
        (json!({"scope": "readonly", "refreshable": "yes"}), 26),
    ] {
        let err = request(body.clone()).unwrap_err();
        assert_eq!(err.taler_code(), code, "{body}");
    }
}

#[test]
fn durations() {
    let now = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
    let forever = request(json!({"scope": "all", "duration": {"d_us": "forever"}})).unwrap();
    assert_eq!(forever.expires_at(now), None);
    let minute = request(json!({"scope": "all", "duration": {"d_us": 60_000_000}})).unwrap();
    assert_eq!(
        minute.expires_at(now),
        Some(now + chrono::Duration::minutes(1))
    );
    let huge = request(json!({"scope": "all", "duration": {"d_us": u64::MAX}})).unwrap();
    assert_eq!(huge.expires_at(now), None);
    let null = request(json!({"scope": "all", "duration": null})).unwrap();
    assert_eq!(null.expires_at(now), Some(now + chrono::Duration::days(1)));
    for bad in [
        json!({"d_us": -1}),
        json!({"d_us": 1.5}),
        json!({"d_us": "never"}),
        json!({}),
        json!(60),
    ] {
        let err = request(json!({"scope": "all", "duration": bad})).unwrap_err();
        assert_eq!(err.taler_code(), 26, "{bad}");
    }
}

#[test]
fn timestamps() {
    let at = DateTime::from_timestamp(1_700_000_000, 999_000_000).unwrap();
    assert_eq!(
        serde_json::to_value(Timestamp::from_time(Some(at))).unwrap(),
        json!({"t_s": 1_700_000_000})
    );
    assert_eq!(
        serde_json::to_value(Timestamp::from_time(None)).unwrap(),
        json!({"t_s": "never"})
    );
}

#[test]
fn auth_configuration() {
    let parse = |body: Value| {
        serde_json::from_value::<InstanceAuthConfigurationMessage>(body)
            .unwrap()
            .validate()
    };
    assert_eq!(
        parse(json!({"method": "token", "password": "pw"}))
            .unwrap()
            .as_str(),
        "pw"
    );
    for (body, code) in [
        (json!({"password": "pw"}), 25),
        (json!({"method": "token"}), 25),
        (json!({"method": "token", "token": "secret-token:x"}), 25),
        (json!({"method": "token", "password": ""}), 26),
        (json!({"method": "token", "password": 5}), 26),
        (json!({"method": "external"}), 26),
        (json!({"method": "basic", "password": "pw"}), 26),
    ] {
        let err = parse(body.clone()).unwrap_err();
        assert_eq!(err.taler_code(), code, "{body}");
    }
    let debug = format!(
        "{:?}",
        serde_json::from_value::<InstanceAuthConfigurationMessage>(
            json!({"method": "token", "password": "hunter2"})
        )
        .unwrap()
    );
    assert!(!debug.contains("hunter2"), "{debug}");
}
