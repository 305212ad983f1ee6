//! Known-answer tests: RFC 4226 Appendix D, RFC 6238 Appendix B, and every
//! case of `data/pos-confirmation.json` through one `check` function.

// Marks the whole file as test code, so clippy applies its in-test allowances
// (unwrap, expect, indexing) to helper functions as well as to `#[test]`s.
#![cfg(test)]

use otp_algo::{
    Algorithm, Amount, OtpKey, confirmation, decode_base32, gnunet_kdf, hotp, hotp_code,
    totp_counters, totp_matches, verify_hotp, verify_totp,
};
use serde::Deserialize;

const RFC_SECRET: &[u8] = b"12345678901234567890";

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn rfc4226_appendix_d() {
    // (counter, truncated 31-bit value, 6-digit HOTP value).
    let table: [(u64, u32, u32); 10] = [
        (0, 0x4c93cf18, 755224),
        (1, 0x41397eea, 287082),
        (2, 0x082fef30, 359152),
        (3, 0x66ef7655, 969429),
        (4, 0x61c5938a, 338314),
        (5, 0x33c083d4, 254676),
        (6, 0x7256c032, 287922),
        (7, 0x04e5b397, 162583),
        (8, 0x2823443f, 399871),
        (9, 0x2679dc69, 520489),
    ];
    for (counter, truncated, six_digits) in table {
        let value = hotp(RFC_SECRET, counter);
        assert_eq!(value, truncated % 100_000_000, "counter {counter}");
        assert_eq!(value % 1_000_000, six_digits, "counter {counter}");
        assert_eq!(
            hotp_code(RFC_SECRET, counter),
            format!("{:08}", truncated % 100_000_000)
        );
    }
}

/// RFC 6238 Appendix B, SHA-1 with 8 digits: (T, code).
const RFC6238_SHA1: [(u64, &str); 6] = [
    (59, "94287082"),
    (1_111_111_109, "07081804"),
    (1_111_111_111, "14050471"),
    (1_234_567_890, "89005924"),
    (2_000_000_000, "69279037"),
    (20_000_000_000, "65353130"),
];

#[test]
fn rfc6238_appendix_b_sha1() {
    let key = OtpKey::from_bytes(RFC_SECRET).unwrap();
    for (time, expected) in RFC6238_SHA1 {
        let codes = confirmation(&key, Algorithm::TotpWithoutPrice, None, time, 0).unwrap();
        let centre = codes.split('\n').nth(2).unwrap();
        assert_eq!(centre, expected, "T = {time}");
        assert_eq!(hotp_code(RFC_SECRET, time / 30), expected, "T = {time}");
    }
}

/// RFC 6238 Appendix B (SHA-1, 8 digits): each code is found at its
/// time's step with offset 0, and from the neighbouring steps with the
/// matching offset.
#[test]
fn totp_matches_rfc6238_vectors() {
    let key = OtpKey::from_bytes(RFC_SECRET).unwrap();
    let alg = Algorithm::TotpWithoutPrice;
    for (time, code) in RFC6238_SHA1 {
        let step = time / 30;
        assert_eq!(
            totp_matches(&key, alg, None, time, 2, code),
            vec![(step, 0)],
            "T = {time}"
        );
        assert_eq!(
            totp_matches(&key, alg, None, time + 60, 2, code),
            vec![(step, -2)],
            "T = {time} + 60"
        );
        assert_eq!(
            totp_matches(&key, alg, None, time - 30, 2, code),
            vec![(step, 1)],
            "T = {time} - 30"
        );
        assert!(totp_matches(&key, alg, None, time + 90, 2, code).is_empty());
        assert!(totp_matches(&key, alg, None, time + 60, 1, code).is_empty());
        // Agrees with the single-answer check.
        assert_eq!(verify_totp(&key, alg, None, time, code, 2), Some(0));
    }
}

#[test]
fn hotp_examples_from_the_spec() {
    let key = OtpKey::from_base32("GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ").unwrap();
    for (counter, expected) in [(0, "84755224"), (1, "94287082"), (7, "82162583")] {
        let code = confirmation(&key, Algorithm::HotpWithoutPrice, None, 0, counter);
        assert_eq!(code.as_deref(), Some(expected));
    }
}

/// The vector file; field meanings are in its `description`.
#[derive(Deserialize)]
struct Vectors {
    totp: Vec<Case>,
    hotp: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    id: String,
    key_b32: String,
    /// 1 or 2; for `hotp` cases the key derivation of algorithm 3 or 4.
    alg: i64,
    alg_name: Option<String>,
    ts: Option<u64>,
    counter: Option<u64>,
    amount: Option<String>,
    expected: Option<String>,
    key_hex: Option<String>,
    amount_nbo_hex: Option<String>,
    hmac_key_hex: Option<String>,
}

fn load() -> Vectors {
    let text = include_str!("data/pos-confirmation.json");
    serde_json::from_str(text).unwrap()
}

/// Checks one case; `counter_based` is true for the `hotp` list.
fn check(case: &Case, counter_based: bool) {
    let id = &case.id;
    let key = OtpKey::from_base32(&case.key_b32).unwrap();
    if let Some(key_hex) = &case.key_hex {
        assert_eq!(&hex(key.as_bytes()), key_hex, "{id}: key_hex");
        assert_eq!(
            hex(&decode_base32(&case.key_b32).unwrap()),
            *key_hex,
            "{id}: decode_base32"
        );
    }

    let upstream_alg = Algorithm::from_int(case.alg).unwrap();
    if let Some(name) = &case.alg_name {
        assert_eq!(
            Algorithm::from_name(name),
            Ok(upstream_alg),
            "{id}: alg_name"
        );
    }
    let algorithm = match (counter_based, upstream_alg) {
        (false, alg) => alg,
        (true, Algorithm::TotpWithoutPrice) => Algorithm::HotpWithoutPrice,
        (true, Algorithm::TotpWithPrice) => Algorithm::HotpWithPrice,
        (true, other) => panic!("{id}: unexpected alg {other:?}"),
    };

    // An amount upstream cannot parse gives no code (our API answers 400).
    let price = match case.amount.as_deref().map(Amount::parse) {
        None => None,
        Some(Ok(price)) => Some(price),
        Some(Err(_)) => {
            assert_eq!(
                case.expected, None,
                "{id}: invalid amount must give no code"
            );
            return;
        }
    };

    if let (Some(nbo_hex), Some(price)) = (&case.amount_nbo_hex, &price) {
        assert_eq!(&hex(&price.to_nbo()), nbo_hex, "{id}: amount_nbo_hex");
    }
    // K, the HMAC key of every code: the device key or the amount-derived key.
    let hmac_key = match (&price, algorithm.uses_price()) {
        (Some(price), true) => gnunet_kdf(&price.to_nbo(), key.as_bytes()).to_vec(),
        _ => key.as_bytes().to_vec(),
    };
    if let Some(hmac_key_hex) = &case.hmac_key_hex {
        assert_eq!(&hex(&hmac_key), hmac_key_hex, "{id}: hmac_key_hex");
    }

    let ts = case.ts.unwrap_or(0);
    let counter = case.counter.unwrap_or(0);
    let got = confirmation(&key, algorithm, price.as_ref(), ts, counter);
    assert_eq!(got, case.expected, "{id}: confirmation");

    // Whatever was produced must verify at its own position.
    if let Some(expected) = &case.expected {
        if counter_based {
            let found = verify_hotp(&key, algorithm, price.as_ref(), counter, expected, 0);
            assert_eq!(found, Some(counter), "{id}: verify_hotp");
        } else {
            let codes: Vec<&str> = expected.split('\n').collect();
            assert_eq!(codes.len(), 5, "{id}");
            let counters = totp_counters(ts);
            for (i, code) in codes.iter().enumerate() {
                let independent = hotp_code(&hmac_key, counters[i]);
                assert_eq!(*code, independent, "{id}: code {i}");
                assert!(
                    verify_totp(&key, algorithm, price.as_ref(), ts, code, 2).is_some(),
                    "{id}: verify_totp code {i}"
                );
            }
        }
    }
}

#[test]
fn every_vector() {
    let vectors = load();
    assert_eq!(vectors.totp.len(), 12);
    assert_eq!(vectors.hotp.len(), 4);
    for case in &vectors.totp {
        check(case, false);
    }
    for case in &vectors.hotp {
        check(case, true);
    }
}

#[test]
fn spec_check_example() {
    let key = OtpKey::from_base32("GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ").unwrap();
    assert_eq!(
        confirmation(&key, Algorithm::TotpWithoutPrice, None, 59, 0).as_deref(),
        Some("84755224\n84755224\n94287082\n37359152\n26969429")
    );
}

#[test]
fn no_code_without_algorithm_or_price() {
    let key = OtpKey::from_bytes(RFC_SECRET).unwrap();
    let price = Amount::parse("EUR:1.5").unwrap();
    for ts in [0, 59, 1_700_000_000] {
        assert_eq!(
            confirmation(&key, Algorithm::None, Some(&price), ts, 3),
            None
        );
        assert_eq!(
            confirmation(&key, Algorithm::TotpWithPrice, None, ts, 3),
            None
        );
        assert_eq!(
            confirmation(&key, Algorithm::HotpWithPrice, None, ts, 3),
            None
        );
    }
}

#[test]
fn price_is_ignored_without_price_algorithms_and_equal_amounts_agree() {
    let key = OtpKey::from_bytes(RFC_SECRET).unwrap();
    let a = Amount::parse("EUR:1.5").unwrap();
    let b = Amount::parse("EUR:1.50").unwrap();
    for alg in [Algorithm::TotpWithoutPrice, Algorithm::HotpWithoutPrice] {
        assert_eq!(
            confirmation(&key, alg, Some(&a), 1_700_000_000, 5),
            confirmation(&key, alg, None, 1_700_000_000, 5)
        );
    }
    for alg in [Algorithm::TotpWithPrice, Algorithm::HotpWithPrice] {
        assert_eq!(
            confirmation(&key, alg, Some(&a), 1_700_000_000, 5),
            confirmation(&key, alg, Some(&b), 1_700_000_000, 5)
        );
    }
}

#[test]
fn end_of_time() {
    let key = OtpKey::from_bytes(RFC_SECRET).unwrap();
    let codes = confirmation(
        &key,
        Algorithm::TotpWithoutPrice,
        None,
        otp_algo::MAX_TIMESTAMP,
        0,
    )
    .unwrap();
    let codes: Vec<&str> = codes.split('\n').collect();
    assert_eq!(codes.len(), 5);
    assert_eq!(codes[2], codes[3]);
    assert_eq!(codes[2], codes[4]);
    assert_ne!(codes[1], codes[2]);
    assert_eq!(codes[2], hotp_code(RFC_SECRET, 614_891_469_123));
}
