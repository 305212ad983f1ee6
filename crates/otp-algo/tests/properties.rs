//! Property tests: parsers never panic, displays round-trip, and codes agree
//! with independent computations and with verification.
//!
//! Case counts are modest so the suite runs in seconds; raise them with
//! `PROPTEST_CASES=10000 cargo test -p otp-algo --test properties`.

// Marks the whole file as test code, so clippy applies its in-test allowances
// (unwrap, expect, indexing) to helper functions as well as to `#[test]`s.
#![cfg(test)]

use otp_algo::{
    Algorithm, Amount, MAX_AMOUNT_VALUE, MAX_TIMESTAMP, OtpKey, TIME_STEP, confirmation,
    decode_base32, hotp_code, totp_counters, verify_hotp, verify_totp,
};
use proptest::prelude::*;

fn config() -> ProptestConfig {
    let default = ProptestConfig::default();
    // A modest default that `PROPTEST_CASES` still overrides.
    let cases = match std::env::var_os("PROPTEST_CASES") {
        Some(_) => default.cases,
        None => 128,
    };
    ProptestConfig { cases, ..default }
}

fn key_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 10..=64)
}

fn amount() -> impl Strategy<Value = Amount> {
    ("[A-Z]{1,11}", 0..=MAX_AMOUNT_VALUE, 0u32..100_000_000)
        .prop_map(|(currency, value, fraction)| Amount::new(&currency, value, fraction).unwrap())
}

fn timestamp() -> impl Strategy<Value = u64> {
    prop_oneof![
        0u64..200,
        0u64..=4_102_444_800,
        MAX_TIMESTAMP - 200..=MAX_TIMESTAMP,
        any::<u64>(),
    ]
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn key_parsers_never_panic(s in "\\PC*") {
        let decoded = decode_base32(&s);
        let key = OtpKey::from_base32(&s);
        // from_base32 accepts exactly what decodes to at least 10 bytes.
        match (decoded, key) {
            (Ok(bytes), Ok(key)) => prop_assert_eq!(bytes.as_slice(), key.as_bytes()),
            (Ok(bytes), Err(_)) => prop_assert!(bytes.len() < 10),
            (Err(a), Err(b)) => prop_assert!(s.is_empty() || a == b),
            (Err(_), Ok(_)) => prop_assert!(false, "from_base32 accepted what decode_base32 rejected"),
        }
    }

    #[test]
    fn base32_like_strings_never_panic(s in "[A-Za-z2-7= 018]{0,40}") {
        let _ = decode_base32(&s);
        let _ = OtpKey::from_base32(&s);
    }

    #[test]
    fn key_base32_round_trips(bytes in key_bytes(), lower in any::<bool>(), pad in 0usize..=2) {
        let key = OtpKey::from_bytes(&bytes).unwrap();
        let mut text = key.to_base32();
        if lower {
            text = text.to_lowercase();
        }
        text.push_str(&"=".repeat(pad));
        prop_assert_eq!(OtpKey::from_base32(&text).unwrap(), key);
    }

    #[test]
    fn amount_parser_never_panics(s in "\\PC*") {
        if let Ok(amount) = Amount::parse(&s) {
            prop_assert_eq!(Amount::parse(&amount.to_string()).unwrap(), amount);
        }
    }

    #[test]
    fn amount_like_strings_never_panic(s in "[A-Za-z]{0,13}:?[0-9]{0,20}\\.?[0-9]{0,10}") {
        if let Ok(amount) = s.parse::<Amount>() {
            prop_assert!(amount.value() <= MAX_AMOUNT_VALUE);
            prop_assert!(amount.fraction() < 100_000_000);
        }
    }

    #[test]
    fn amount_display_round_trips(amount in amount()) {
        let text = amount.to_string();
        prop_assert_eq!(Amount::parse(&text).unwrap(), amount.clone());
        prop_assert!(!text.ends_with('0') || amount.fraction() == 0);
        prop_assert_eq!(amount.to_nbo().len(), 24);
    }

    #[test]
    fn algorithm_parsers_never_panic(s in "\\PC*", v in any::<i64>()) {
        let _ = Algorithm::from_name(&s);
        let _ = s.parse::<Algorithm>();
        match Algorithm::from_int(v) {
            Ok(a) => prop_assert_eq!(i64::from(a.as_int()), v),
            Err(_) => prop_assert!(!(0..=4).contains(&v)),
        }
    }

    #[test]
    fn totp_counters_are_saturating_and_ordered(ts in timestamp()) {
        let counters = totp_counters(ts);
        prop_assert!(counters.windows(2).all(|w| w[0] <= w[1]));
        if (60..=MAX_TIMESTAMP - 60).contains(&ts) {
            let centre = ts / TIME_STEP;
            prop_assert_eq!(counters, [centre - 2, centre - 1, centre, centre + 1, centre + 2]);
        }
    }

    #[test]
    fn totp_confirmation_is_five_hotp_codes(bytes in key_bytes(), ts in timestamp()) {
        let key = OtpKey::from_bytes(&bytes).unwrap();
        let got = confirmation(&key, Algorithm::TotpWithoutPrice, None, ts, 0).unwrap();
        let independent: Vec<String> = totp_counters(ts)
            .iter()
            .map(|&counter| hotp_code(&bytes, counter))
            .collect();
        prop_assert_eq!(got, independent.join("\n"));
    }

    #[test]
    fn hotp_confirmation_is_one_hotp_code(bytes in key_bytes(), counter in any::<u64>()) {
        let key = OtpKey::from_bytes(&bytes).unwrap();
        let got = confirmation(&key, Algorithm::HotpWithoutPrice, None, 0, counter);
        prop_assert_eq!(got, Some(hotp_code(&bytes, counter)));
    }

    #[test]
    fn verify_totp_finds_generated_codes(
        bytes in key_bytes(),
        price in amount(),
        ts in timestamp(),
        with_price in any::<bool>(),
    ) {
        let key = OtpKey::from_bytes(&bytes).unwrap();
        let (alg, price) = if with_price {
            (Algorithm::TotpWithPrice, Some(&price))
        } else {
            (Algorithm::TotpWithoutPrice, None)
        };
        let codes = confirmation(&key, alg, price, ts, 0).unwrap();
        for code in codes.split('\n') {
            let offset = verify_totp(&key, alg, price, ts, code, 2);
            prop_assert!(matches!(offset, Some(-2..=2)), "{code} not found");
        }
        let centre = codes.split('\n').nth(2).unwrap();
        prop_assert_eq!(verify_totp(&key, alg, price, ts, centre, 0), Some(0));
    }

    #[test]
    fn verify_hotp_finds_generated_codes(
        bytes in key_bytes(),
        price in amount(),
        counter in any::<u64>(),
        ahead in 0u32..20,
        with_price in any::<bool>(),
    ) {
        let key = OtpKey::from_bytes(&bytes).unwrap();
        let (alg, price) = if with_price {
            (Algorithm::HotpWithPrice, Some(&price))
        } else {
            (Algorithm::HotpWithoutPrice, None)
        };
        let Some(target) = counter.checked_add(u64::from(ahead)) else {
            return Ok(());
        };
        let code = confirmation(&key, alg, price, 0, target).unwrap();
        let found = verify_hotp(&key, alg, price, counter, &code, 20).unwrap();
        // An earlier counter may collide by chance (probability ~ 2e-7).
        prop_assert!(found >= counter && found <= target);
    }
}
