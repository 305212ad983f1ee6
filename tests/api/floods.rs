//! §7: floods of bad credentials. Malformed tokens and remembered failures cost no database
//! query; an address with many failures is refused (429, code 9906) while valid tokens, from
//! other addresses and recently used ones from that address, are served quickly.

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use otp_tests::{RFC_KEY, TestApp, assert_taler_error, retry_after, spawn_app_with_metrics};
use reqwest::{Method, StatusCode};
use serde_json::json;

/// Pooled connections taken so far: every database call takes one.
async fn checkouts(app: &TestApp) -> f64 {
    let metrics = app.anonymous(Method::GET, "/metrics", None).await;
    assert_eq!(metrics.status, StatusCode::OK, "{}", metrics.text);
    metrics
        .text
        .lines()
        .find_map(|line| line.strip_prefix("taler_otp_db_checkout_wait_seconds_count "))
        .and_then(|value| value.trim().parse().ok())
        .expect("checkout count")
}

/// A well-formed token no instance has: `secret-token:` and 52 base32 characters.
fn unknown_token(seed: u64) -> String {
    let mut bytes = [0u8; 32];
    for (i, chunk) in bytes.chunks_mut(8).enumerate() {
        chunk.copy_from_slice(&(seed.wrapping_mul(0x9E37_79B9) ^ i as u64).to_le_bytes());
    }
    format!(
        "secret-token:{}",
        data_encoding::BASE32_NOPAD.encode(&bytes)
    )
}

#[tokio::test]
async fn malformed_tokens_and_remembered_failures_cost_no_query() {
    let app = spawn_app_with_metrics(|settings| {
        settings.cache_ttl = Duration::from_secs(1);
    })
    .await;
    let path = "/private/otp-devices";
    // A valid token's lookup tells the server that the instance exists.
    assert_eq!(app.get(path).await.status, StatusCode::OK);

    let before = checkouts(&app).await;
    for token in [
        "secret-token:nope",
        "secret-token:",
        "AAAA",
        "secret-token:a b",
    ] {
        for _ in 0..5 {
            let reply = app.get_as(token, path).await;
            assert_taler_error(&reply, StatusCode::UNAUTHORIZED, 2015);
            assert_eq!(reply.headers["www-authenticate"], "Bearer");
        }
    }
    for _ in 0..5 {
        let reply = app.anonymous(Method::GET, path, None).await;
        assert_taler_error(&reply, StatusCode::UNAUTHORIZED, 2015);
    }
    let spent = checkouts(&app).await - before;
    assert!(
        spent <= 1.0,
        "malformed or absent tokens cost {spent} queries"
    );

    // An unknown token and an unknown instance are looked up once, then remembered.
    let unknown = unknown_token(1);
    let before = checkouts(&app).await;
    for _ in 0..20 {
        let reply = app.get_as(&unknown, path).await;
        assert_taler_error(&reply, StatusCode::UNAUTHORIZED, 2015);
        let reply = app
            .get_as(&unknown, "/instances/ghost/private/otp-devices")
            .await;
        assert_taler_error(&reply, StatusCode::NOT_FOUND, 2000);
    }
    let spent = checkouts(&app).await - before;
    assert!(spent <= 4.0, "40 remembered failures cost {spent} queries");

    // A malformed token on an unknown instance is still 404: the instance comes first.
    let nobody = "/instances/nobody/private/otp-devices";
    let reply = app.get_as("secret-token:x", nobody).await;
    assert_taler_error(&reply, StatusCode::NOT_FOUND, 2000);
}

#[tokio::test]
async fn a_flooding_address_is_refused_while_valid_tokens_are_served_quickly() {
    let app = spawn_app_with_metrics(|_| {}).await;
    app.add_device("till", RFC_KEY, json!(1)).await;
    let flooder_address = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
    let client_at = |address: IpAddr| {
        reqwest::Client::builder()
            .local_address(address)
            .build()
            .unwrap()
    };
    let device_url = format!("{}/private/otp-devices/till", app.address);
    // A token used from the flooding address before the flood: recently valid.
    let neighbour = app.token("readonly").await;
    let answer = client_at(flooder_address)
        .get(&device_url)
        .bearer_auth(&neighbour)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::OK);

    let before = checkouts(&app).await;
    let flood_for = Duration::from_secs(3);
    let started = Instant::now();
    let mut flooders = Vec::new();
    for flooder in 0..8u64 {
        let client = client_at(flooder_address);
        let url = format!("{}/private/otp-devices", app.address);
        flooders.push(tokio::spawn(async move {
            let mut statuses = std::collections::BTreeMap::<u16, u64>::new();
            let mut n = 0u64;
            while started.elapsed() < flood_for {
                n += 1;
                let request = client.get(&url);
                let request = match n % 4 {
                    0 => request.bearer_auth("secret-token:flood"),
                    1 => request.bearer_auth(unknown_token(1_000 + flooder)),
                    2 => request.bearer_auth(unknown_token(flooder << 32 | n)),
                    _ => request,
                };
                let status = request.send().await.unwrap().status().as_u16();
                *statuses.entry(status).or_default() += 1;
            }
            statuses
        }));
    }

    // The honest client, on 127.0.0.1 with a valid token, on a thread of its own.
    let honest_url = device_url.clone();
    let token = app.read_token.clone();
    let honest = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let client = reqwest::Client::new();
            let mut latencies = Vec::new();
            let mut statuses = Vec::new();
            while started.elapsed() < flood_for {
                let sent = Instant::now();
                let status = client
                    .get(&honest_url)
                    .bearer_auth(&token)
                    .send()
                    .await
                    .unwrap()
                    .status();
                latencies.push(sent.elapsed());
                statuses.push(status);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            (latencies, statuses)
        })
    });

    let mut flood = std::collections::BTreeMap::<u16, u64>::new();
    for flooder in flooders {
        for (status, count) in flooder.await.unwrap() {
            *flood.entry(status).or_default() += count;
        }
    }
    let (mut latencies, statuses) = honest.join().unwrap();
    let total: u64 = flood.values().sum();
    assert!(
        flood.keys().all(|status| [401, 429].contains(status)),
        "flood answers: {flood:?}"
    );
    // At most 100 failures count; a flooder may have had one more in flight meanwhile. The
    // rest is refused, each refusal after the tarpit's half second.
    let failures = flood.get(&401).copied().unwrap_or(0);
    assert!(failures <= 108, "not throttled: {flood:?}");
    assert!(
        flood.get(&429).is_some_and(|n| *n >= 8),
        "not throttled: {flood:?}"
    );
    assert!(
        statuses.iter().all(|status| *status == StatusCode::OK),
        "the honest client got {statuses:?}"
    );
    latencies.sort();
    let p99 = latencies[latencies.len() * 99 / 100];
    assert!(
        latencies.len() >= 100,
        "only {} honest requests",
        latencies.len()
    );
    let p50 = latencies[latencies.len() / 2];
    eprintln!("honest p50 {p50:?} p99 {p99:?}; flood answers {flood:?}");
    assert!(
        p99 < Duration::from_millis(20),
        "honest p99 {p99:?} (p50 {p50:?}) under a flood of {total} requests ({flood:?})"
    );
    let spent = checkouts(&app).await - before;
    assert!(spent < 250.0, "{total} flood requests cost {spent} queries");

    // Still refused: an unknown token from there is 429 with Retry-After, the recently valid
    // token from there is served.
    let flooder = client_at(flooder_address);
    let refused = otp_tests::reply(
        flooder
            .get(&device_url)
            .bearer_auth(unknown_token(7))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_taler_error(&refused, StatusCode::TOO_MANY_REQUESTS, 9906);
    let seconds = retry_after(&refused);
    assert!((1..=10).contains(&seconds), "Retry-After {seconds}");
    let answer = flooder
        .get(&device_url)
        .bearer_auth(&neighbour)
        .send()
        .await
        .unwrap();
    assert_eq!(
        answer.status(),
        StatusCode::OK,
        "a recently valid token was refused"
    );
}
