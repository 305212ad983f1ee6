//! §14: `/healthz`, `/readyz` (following the database and the schema) and `/metrics` (only with
//! `[otp] METRICS = yes`; Prometheus text that counts a known sequence of requests exactly).

use std::collections::BTreeMap;
use std::time::Duration;

use otp_tests::{
    RFC_KEY, TestApp, assert_taler_error, eventually, spawn_app, spawn_app_behind_proxy,
    spawn_app_with_metrics,
};
use reqwest::{Method, StatusCode};
use serde_json::json;

#[tokio::test]
async fn health_and_readiness_need_no_token_and_no_prefix() {
    let app = spawn_app().await;
    for path in ["/healthz", "/readyz"] {
        let answer = app.anonymous(Method::GET, path, None).await;
        assert_eq!(answer.status, StatusCode::OK, "{path}: {}", answer.text);
        assert_eq!(answer.json, json!({"status": "ok"}));
        let prefixed = app
            .anonymous(Method::GET, &format!("/instances/admin{path}"), None)
            .await;
        assert_eq!(prefixed.status, StatusCode::NOT_FOUND, "{path}");
        let posted = app.anonymous(Method::POST, path, Some(&json!({}))).await;
        assert_taler_error(&posted, StatusCode::METHOD_NOT_ALLOWED, 20);
    }
    // Metrics are off by default.
    let metrics = app.anonymous(Method::GET, "/metrics", None).await;
    assert_taler_error(&metrics, StatusCode::NOT_FOUND, 21);
}

#[tokio::test]
async fn readiness_follows_the_database_and_the_schema() {
    let (app, proxy) = spawn_app_behind_proxy(|_| {}).await;
    let ready = async |app: &TestApp| app.anonymous(Method::GET, "/readyz", None).await;
    assert_eq!(ready(&app).await.status, StatusCode::OK);

    proxy.set_down(true);
    let down = ready(&app).await;
    assert_taler_error(&down, StatusCode::SERVICE_UNAVAILABLE, 51);
    assert!(down.headers.get("retry-after").is_some(), "no Retry-After");
    let alive = app.anonymous(Method::GET, "/healthz", None).await;
    assert_eq!(alive.status, StatusCode::OK, "the process is up");

    proxy.set_down(false);
    let back = eventually(Duration::from_secs(10), async || {
        ready(&app).await.status == StatusCode::OK
    })
    .await;
    assert!(back, "not ready after the database came back");

    // A schema that is not this binary's is not ready either.
    let client = app.store.pool().get().await.unwrap();
    client
        .execute(
            "INSERT INTO schema_version (version, name, sha256)
             VALUES (9999, 'future', decode(repeat('00', 32), 'hex'))",
            &[],
        )
        .await
        .unwrap();
    let newer = ready(&app).await;
    assert_taler_error(&newer, StatusCode::SERVICE_UNAVAILABLE, 51);
    client
        .execute("DELETE FROM schema_version WHERE version = 9999", &[])
        .await
        .unwrap();
    assert_eq!(ready(&app).await.status, StatusCode::OK);
}

/// One sample of the text format: metric name, labels, value.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

fn is_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// Parses a sample line strictly: `name{label="value",…} number`, label values with the
/// escapes `\\`, `\"` and `\n`.
fn parse_sample(line: &str) -> Sample {
    let fail = || -> ! { panic!("malformed sample line: {line:?}") };
    let name_end = line.find(['{', ' ']).unwrap_or_else(|| fail());
    let name = &line[..name_end];
    if !is_name(name) {
        fail();
    }
    let mut labels = BTreeMap::new();
    let mut rest = &line[name_end..];
    if let Some(mut inner) = rest.strip_prefix('{') {
        loop {
            if let Some(after) = inner.strip_prefix('}') {
                rest = after;
                break;
            }
            let (key, after) = inner.split_once("=\"").unwrap_or_else(|| fail());
            if !is_name(key) {
                fail();
            }
            let mut value = String::new();
            let mut chars = after.char_indices();
            let end = loop {
                match chars.next() {
                    Some((i, '"')) => break i,
                    Some((_, '\\')) => match chars.next() {
                        Some((_, '\\')) => value.push('\\'),
                        Some((_, '"')) => value.push('"'),
                        Some((_, 'n')) => value.push('\n'),
                        _ => fail(),
                    },
                    Some((_, '\n')) | None => fail(),
                    Some((_, c)) => value.push(c),
                }
            };
            labels.insert(key.to_owned(), value);
            inner = &after[end + 1..];
            if let Some(next) = inner.strip_prefix(',') {
                inner = next;
            } else if !inner.starts_with('}') {
                fail();
            }
        }
    }
    let value = rest.strip_prefix(' ').unwrap_or_else(|| fail());
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        other => other.parse::<f64>().unwrap_or_else(|_| fail()),
    };
    Sample {
        name: name.to_owned(),
        labels,
        value,
    }
}

/// Parses the Prometheus text format strictly: `# HELP name text` and `# TYPE name type` once
/// per family, before its samples; samples of a declared family only; histogram buckets
/// cumulative, ending in `+Inf` equal to `_count`.
fn parse_exposition(text: &str) -> Vec<Sample> {
    let mut types: BTreeMap<String, String> = BTreeMap::new();
    let mut helped = std::collections::BTreeSet::new();
    let mut samples = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').unwrap_or((rest, ""));
            assert!(is_name(name) && !help.is_empty(), "{line}");
            assert!(helped.insert(name.to_owned()), "two HELP lines: {line}");
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            assert!(is_name(name) && helped.contains(name), "{line}");
            assert!(["counter", "gauge", "histogram"].contains(&kind), "{line}");
            assert!(
                types.insert(name.to_owned(), kind.to_owned()).is_none(),
                "{line}"
            );
        } else {
            assert!(!line.starts_with('#') && !line.is_empty(), "{line:?}");
            let sample = parse_sample(line);
            let family = types.iter().any(|(family, kind)| {
                sample.name == *family
                    || (kind == "histogram"
                        && ["_bucket", "_sum", "_count"]
                            .iter()
                            .any(|suffix| sample.name == format!("{family}{suffix}")))
            });
            assert!(family, "sample of an undeclared family: {line}");
            samples.push(sample);
        }
    }
    // Histograms: cumulative buckets per series, +Inf last and equal to _count.
    for (family, _) in types.iter().filter(|(_, kind)| *kind == "histogram") {
        let bucket = format!("{family}_bucket");
        let count = format!("{family}_count");
        for total in samples.iter().filter(|s| s.name == count) {
            let series: Vec<&Sample> = samples
                .iter()
                .filter(|s| s.name == bucket)
                .filter(|s| {
                    let mut labels = s.labels.clone();
                    labels.remove("le");
                    labels == total.labels
                })
                .collect();
            assert!(
                series.windows(2).all(|w| w[0].value <= w[1].value),
                "{family}"
            );
            let last = series.last().unwrap();
            assert_eq!(last.labels["le"], "+Inf", "{family}");
            assert_eq!(last.value, total.value, "{family}");
        }
    }
    samples
}

/// The value of the sample `name` whose labels include `labels`.
fn sample(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .filter(|s| s.name == name)
        .find(|s| {
            labels
                .iter()
                .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|s| s.value)
}

async fn scrape_metrics(app: &TestApp) -> (String, Vec<Sample>) {
    let answer = app.anonymous(Method::GET, "/metrics", None).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    let content_type = answer.headers["content-type"].to_str().unwrap();
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    let samples = parse_exposition(&answer.text);
    (answer.text, samples)
}

#[tokio::test]
async fn metrics_parse_and_count_a_known_sequence_exactly() {
    let app = spawn_app_with_metrics(|settings| {
        settings.cache_ttl = Duration::from_secs(60);
    })
    .await;
    for _ in 0..3 {
        app.anonymous(Method::GET, "/config", None).await;
    }
    for _ in 0..2 {
        app.get("/private/otp-devices/ghost").await;
    }
    app.add_device("t", RFC_KEY, json!(1)).await;
    app.add_device("h", RFC_KEY, json!(3)).await;
    for _ in 0..2 {
        app.get("/instances/admin/private/otp-devices/t").await;
    }
    for device in ["t", "h", "h"] {
        app.confirm(device, &json!({})).await;
    }
    let verified = app.verify("t", &json!({"code": "00000000"})).await;
    assert_eq!(verified.json["reason"], "mismatch", "{}", verified.text);
    app.anonymous(Method::GET, "/no/such/path", None).await;
    app.anonymous(Method::PATCH, "/config", Some(&json!({})))
        .await;

    let (text, scrape) = scrape_metrics(&app).await;
    let requests = "taler_otp_http_requests_total";
    let device = "/private/otp-devices/{device_id}";
    for (labels, count) in [
        (
            vec![("route", "/config"), ("method", "GET"), ("status", "200")],
            3.0,
        ),
        (
            vec![("route", "/config"), ("method", "PATCH"), ("status", "405")],
            1.0,
        ),
        (
            vec![("route", device), ("method", "GET"), ("status", "404")],
            2.0,
        ),
        (
            vec![
                (
                    "route",
                    "/instances/{instance}/private/otp-devices/{device_id}",
                ),
                ("method", "GET"),
                ("status", "200"),
            ],
            2.0,
        ),
        (
            vec![
                ("route", "/private/otp-devices"),
                ("method", "POST"),
                ("status", "204"),
            ],
            2.0,
        ),
        (
            vec![
                ("route", "/private/otp-devices/{device_id}/confirmations"),
                ("method", "POST"),
                ("status", "200"),
            ],
            3.0,
        ),
        (
            vec![
                ("route", "(unmatched)"),
                ("method", "GET"),
                ("status", "404"),
            ],
            1.0,
        ),
    ] {
        assert_eq!(
            sample(&scrape, requests, &labels),
            Some(count),
            "{labels:?}\n{text}"
        );
    }
    // The scrape itself is counted after it is answered.
    assert_eq!(sample(&scrape, requests, &[("route", "/metrics")]), None);
    let requests_total: f64 = scrape
        .iter()
        .filter(|s| s.name == requests)
        .map(|s| s.value)
        .sum();
    assert_eq!(requests_total, 15.0, "{text}");
    let durations = "taler_otp_http_request_duration_seconds_count";
    assert_eq!(
        sample(
            &scrape,
            durations,
            &[("route", "/config"), ("method", "GET")]
        ),
        Some(3.0)
    );
    let issued = "taler_otp_confirmations_issued_total";
    let verifications = "taler_otp_verifications_total";
    for (name, labels, value) in [
        (issued, vec![("mode", "totp")], 1.0),
        (issued, vec![("mode", "hotp")], 2.0),
        (verifications, vec![("outcome", "mismatch")], 1.0),
        (verifications, vec![("outcome", "verified")], 0.0),
        ("taler_otp_device_locks_total", vec![], 0.0),
        ("taler_otp_logins_total", vec![("outcome", "failure")], 0.0),
        ("taler_otp_db_pool_max_size", vec![], 8.0),
        ("taler_otp_db_pool_waiting", vec![], 0.0),
        ("taler_otp_db_checkout_failures_total", vec![], 0.0),
        ("taler_otp_http_requests_in_flight", vec![], 1.0),
    ] {
        assert_eq!(
            sample(&scrape, name, &labels),
            Some(value),
            "{name} {labels:?}\n{text}"
        );
    }
    let open = sample(&scrape, "taler_otp_db_pool_size", &[]).unwrap();
    let idle = sample(&scrape, "taler_otp_db_pool_available", &[]).unwrap();
    assert!(open >= 1.0 && idle <= open, "{text}");
    assert!(sample(&scrape, "taler_otp_db_checkout_wait_seconds_count", &[]).unwrap() >= 10.0);
    // GET one twice within the cache's bound: the second from the cache.
    let cache = |name: &str, cache: &str| sample(&scrape, name, &[("cache", cache)]).unwrap();
    let hits = cache("taler_otp_cache_hits_total", "devices");
    let misses = cache("taler_otp_cache_misses_total", "devices");
    assert!(hits >= 1.0 && misses >= 1.0, "{text}");
    assert!(cache("taler_otp_cache_hits_total", "tokens") >= 5.0);
    assert!(
        cache("taler_otp_cache_invalidations_total", "devices") >= 1.0,
        "creating devices invalidates: {text}"
    );
    assert_eq!(
        sample(
            &scrape,
            "taler_otp_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        Some(1.0),
        "{text}"
    );

    // The next scrape counts the first.
    let (_, again) = scrape_metrics(&app).await;
    assert_eq!(
        sample(
            &again,
            requests,
            &[("route", "/metrics"), ("method", "GET"), ("status", "200")]
        ),
        Some(1.0)
    );
}
