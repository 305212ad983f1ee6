//! Tests of the verification helpers against the RFC vectors and the pinned confirmation vectors.
use super::*;

/// [`HotpMatcher::first`] for one call.
fn first_match(
    key: &OtpKey,
    algorithm: Algorithm,
    price: Option<&Amount>,
    lo: u64,
    hi: u64,
    code: &str,
) -> Option<u64> {
    HotpMatcher::new(key, algorithm, price, code)?.first(lo, hi)
}

fn rfc_key() -> OtpKey {
    OtpKey::from_bytes(b"12345678901234567890").unwrap()
}

#[test]
fn ct_eq_basics() {
    assert!(ct_eq(b"", b""));
    assert!(ct_eq(b"12345678", b"12345678"));
    assert!(!ct_eq(b"12345678", b"12345679"));
    assert!(!ct_eq(b"1234567", b"12345678"));
}

#[test]
fn totp_window_near_the_epoch() {
    let key = rfc_key();
    let alg = Algorithm::TotpWithoutPrice;
    // Counter 0 is step 0 at ts 0 (nearest first), step -1 at ts 30.
    assert_eq!(verify_totp(&key, alg, None, 0, "84755224", 2), Some(0));
    assert_eq!(verify_totp(&key, alg, None, 30, "84755224", 2), Some(-1));
    assert_eq!(verify_totp(&key, alg, None, 0, "94287082", 2), Some(1));
    assert_eq!(verify_totp(&key, alg, None, 0, "94287082", 0), None);
    assert_eq!(verify_totp(&key, alg, None, 0, "84755224", 255), Some(0));
    assert_eq!(verify_totp(&key, alg, None, 0, "82162583", 255), Some(7));
    assert_eq!(verify_totp(&key, alg, None, 210, "82162583", 0), Some(0));
}

#[test]
fn totp_rejects_malformed_and_wrong_algorithms() {
    let key = rfc_key();
    let alg = Algorithm::TotpWithoutPrice;
    for bad in [
        "",
        "8475522",
        "847552240",
        " 84755224",
        "8475522a",
        "８4755224",
    ] {
        assert_eq!(verify_totp(&key, alg, None, 0, bad, 2), None, "{bad:?}");
    }
    // Not time-based, or with a price but none given.
    for alg in [
        Algorithm::None,
        Algorithm::HotpWithoutPrice,
        Algorithm::HotpWithPrice,
        Algorithm::TotpWithPrice,
    ] {
        assert_eq!(
            verify_totp(&key, alg, None, 0, "84755224", 2),
            None,
            "{alg:?}"
        );
    }
}

#[test]
fn hotp_look_ahead() {
    let key = rfc_key();
    let alg = Algorithm::HotpWithoutPrice;
    assert_eq!(verify_hotp(&key, alg, None, 0, "84755224", 0), Some(0));
    assert_eq!(verify_hotp(&key, alg, None, 0, "82162583", 7), Some(7));
    assert_eq!(verify_hotp(&key, alg, None, 0, "82162583", 6), None);
    assert_eq!(verify_hotp(&key, alg, None, 1, "84755224", 10), None);
    assert_eq!(verify_hotp(&key, alg, None, 0, "8216258", 10), None);
    // Not counter-based, or with a price but none given.
    for alg in [Algorithm::TotpWithoutPrice, Algorithm::HotpWithPrice] {
        assert_eq!(
            verify_hotp(&key, alg, None, 0, "84755224", 0),
            None,
            "{alg:?}"
        );
    }
}

#[test]
fn hotp_stops_at_the_largest_counter() {
    let key = rfc_key();
    let alg = Algorithm::HotpWithoutPrice;
    let last = crate::hotp_code(key.as_bytes(), u64::MAX);
    assert_eq!(
        verify_hotp(&key, alg, None, u64::MAX - 1, &last, u32::MAX),
        Some(u64::MAX)
    );
    assert_eq!(
        verify_hotp(&key, alg, None, u64::MAX, "84755224", u32::MAX),
        None
    );
}

#[test]
fn totp_matches_near_the_epoch_lists_each_step_once() {
    let key = rfc_key();
    let alg = Algorithm::TotpWithoutPrice;
    // At t = 59 the offsets -1 and -2 both reach step 0.
    assert_eq!(
        totp_matches(&key, alg, None, 59, 2, "84755224"),
        vec![(0, -1)]
    );
    // At t = 0 the offsets 0, -1 and -2 all reach step 0.
    assert_eq!(
        totp_matches(&key, alg, None, 0, 10, "84755224"),
        vec![(0, 0)]
    );
    assert_eq!(
        totp_matches(&key, alg, None, 0, 255, "82162583"),
        vec![(7, 7)]
    );
    // At the end of time every step saturates to the last one.
    let last = crate::MAX_TIMESTAMP / crate::TIME_STEP;
    let code = crate::hotp_code(key.as_bytes(), last);
    assert_eq!(
        totp_matches(&key, alg, None, u64::MAX, 10, &code),
        vec![(last, 0)]
    );
}

#[test]
fn totp_matches_finds_every_step_of_the_window_at_its_offset() {
    let key = rfc_key();
    let alg = Algorithm::TotpWithoutPrice;
    let now = 1_700_000_010;
    for offset in -10i32..=10 {
        let step = totp_counter(now, i64::from(offset));
        let code = crate::hotp_code(key.as_bytes(), step);
        assert_eq!(
            totp_matches(&key, alg, None, now, 10, &code),
            vec![(step, offset)],
            "offset {offset}"
        );
        let inside = u8::try_from(offset.unsigned_abs()).unwrap();
        assert_eq!(
            totp_matches(&key, alg, None, now, inside, &code),
            vec![(step, offset)]
        );
        if inside > 0 {
            assert!(totp_matches(&key, alg, None, now, inside - 1, &code).is_empty());
        }
    }
}

#[test]
fn totp_matches_rejects_malformed_codes_and_wrong_algorithms() {
    let key = rfc_key();
    for bad in ["", "9428708", "942870822", " 94287082", "9428708a"] {
        assert!(
            totp_matches(&key, Algorithm::TotpWithoutPrice, None, 59, 2, bad).is_empty(),
            "{bad:?}"
        );
    }
    for alg in [
        Algorithm::None,
        Algorithm::HotpWithoutPrice,
        Algorithm::HotpWithPrice,
        Algorithm::TotpWithPrice,
    ] {
        assert!(totp_matches(&key, alg, None, 59, 2, "94287082").is_empty());
    }
}

#[derive(serde::Deserialize)]
struct Vectors {
    totp: Vec<TotpVector>,
    hotp: Vec<HotpVector>,
}

#[derive(serde::Deserialize)]
struct TotpVector {
    id: String,
    key_b32: String,
    alg: i64,
    ts: u64,
    amount: Option<String>,
    expected: Option<String>,
}

#[derive(serde::Deserialize)]
struct HotpVector {
    id: String,
    key_b32: String,
    alg: i64,
    counter: u64,
    amount: Option<String>,
    expected: Option<String>,
}

fn vectors() -> Vectors {
    serde_json::from_str(include_str!("../../tests/data/pos-confirmation.json")).unwrap()
}

/// Every code of every TOTP vector (with and without price) is found
/// at its step, with the nearest offset that reaches that step.
#[test]
fn totp_matches_every_confirmation_vector() {
    let mut checked = 0;
    for case in vectors().totp {
        let (Some(expected), Some(amount)) = (
            case.expected,
            case.amount.as_deref().map(Amount::parse).transpose().ok(),
        ) else {
            continue;
        };
        let key = OtpKey::from_base32(&case.key_b32).unwrap();
        let alg = Algorithm::from_int(case.alg).unwrap();
        let codes: Vec<&str> = expected.split('\n').collect();
        for (code, offset) in codes.iter().zip(crate::TOTP_OFFSETS) {
            let step = totp_counter(case.ts, offset);
            let found = totp_matches(&key, alg, amount.as_ref(), case.ts, 2, code);
            let nearest = crate::TOTP_OFFSETS
                .into_iter()
                .filter(|o| totp_counter(case.ts, *o) == step)
                .min_by_key(|o| (o.abs(), *o))
                .unwrap();
            assert!(
                found.contains(&(step, i32::try_from(nearest).unwrap())),
                "{}: {code} at {offset}: {found:?}",
                case.id
            );
            checked += 1;
        }
        if let Some(amount) = amount {
            // Bound to the amount: another amount's key finds nothing.
            let other = Amount::parse(&format!("{}:999", amount.currency())).unwrap();
            for code in &codes {
                assert!(
                    totp_matches(&key, alg, Some(&other), case.ts, 2, code).is_empty(),
                    "{}: {code} with another amount",
                    case.id
                );
            }
            assert!(totp_matches(&key, alg, None, case.ts, 2, codes[0]).is_empty());
        }
    }
    assert!(checked >= 30, "{checked}");
}

#[test]
fn hotp_matches_every_confirmation_vector() {
    let mut checked = 0;
    for case in vectors().hotp {
        let Some(expected) = case.expected else {
            continue;
        };
        let key = OtpKey::from_base32(&case.key_b32).unwrap();
        // `alg` 1 and 2 here are the derivations of algorithms 3 and 4.
        let alg = Algorithm::from_int(case.alg + 2).unwrap();
        let amount = case.amount.as_deref().map(|a| Amount::parse(a).unwrap());
        let c = case.counter;
        assert_eq!(
            hotp_matches(&key, alg, amount.as_ref(), 0, c + 10, &expected),
            vec![c],
            "{}",
            case.id
        );
        assert!(hotp_matches(&key, alg, amount.as_ref(), c + 1, c + 10, &expected).is_empty());
        assert_eq!(
            hotp_matches(&key, alg, amount.as_ref(), c, c, &expected),
            vec![c]
        );
        assert_eq!(
            first_match(&key, alg, amount.as_ref(), 0, c + 10, &expected),
            Some(c)
        );
        assert_eq!(
            first_match(&key, alg, amount.as_ref(), c + 1, c + 10, &expected),
            None
        );
        checked += 1;
    }
    assert!(checked >= 4, "{checked}");
}

#[test]
fn hotp_matches_rfc4226_vectors_ascending() {
    let key = rfc_key();
    let alg = Algorithm::HotpWithoutPrice;
    let codes = [
        "84755224", "94287082", "37359152", "26969429", "40338314", "68254676", "18287922",
        "82162583", "73399871", "45520489",
    ];
    for (counter, code) in (0u64..).zip(codes) {
        assert_eq!(
            hotp_matches(&key, alg, None, 0, 9, code),
            vec![counter],
            "counter {counter}"
        );
        assert_eq!(verify_hotp(&key, alg, None, 0, code, 9), Some(counter));
        assert_eq!(first_match(&key, alg, None, 0, 9, code), Some(counter));
        assert_eq!(
            first_match(&key, alg, None, counter, counter, code),
            Some(counter)
        );
    }
    assert_eq!(first_match(&key, alg, None, 5, 4, "68254676"), None);
    assert_eq!(first_match(&key, alg, None, 0, 9, "00000000"), None);
    assert_eq!(first_match(&key, alg, None, 0, 9, "8475522"), None);
    assert_eq!(
        first_match(&key, Algorithm::TotpWithoutPrice, None, 0, 9, "84755224"),
        None
    );
    assert_eq!(
        first_match(&key, Algorithm::HotpWithPrice, None, 0, 9, "84755224"),
        None
    );
    assert_eq!(
        first_match(&key, alg, None, u64::MAX - 1, u64::MAX, "84755224"),
        None
    );
    assert!(hotp_matches(&key, alg, None, 5, 4, "68254676").is_empty());
    assert!(hotp_matches(&key, alg, None, 0, 9, "00000000").is_empty());
    assert!(hotp_matches(&key, alg, None, 0, 9, "8475522").is_empty());
    assert!(hotp_matches(&key, Algorithm::TotpWithoutPrice, None, 0, 9, "84755224").is_empty());
    assert!(hotp_matches(&key, Algorithm::HotpWithPrice, None, 0, 9, "84755224").is_empty());
}

#[test]
fn hotp_matches_stops_at_the_largest_stored_counter() {
    let key = rfc_key();
    let alg = Algorithm::HotpWithoutPrice;
    let max = MAX_STORED_COUNTER;
    assert_eq!(max, 9_223_372_036_854_775_807);
    let last = crate::hotp_code(key.as_bytes(), max);
    assert_eq!(
        hotp_matches(&key, alg, None, max - 3, u64::MAX, &last),
        vec![max]
    );
    let beyond = crate::hotp_code(key.as_bytes(), max + 1);
    assert!(hotp_matches(&key, alg, None, max, u64::MAX, &beyond).is_empty());
    assert!(hotp_matches(&key, alg, None, u64::MAX, u64::MAX, &beyond).is_empty());
}
