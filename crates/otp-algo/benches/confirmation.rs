//! Cost of a confirmation compared with raw HMAC-SHA1 calls.
//!
//! The budget: `confirmation_alg1` at most 1.2 × five `hmac_sha1_8_bytes`.
//! Run with `cargo bench -p otp-algo --bench confirmation`.

use std::hint::black_box;

use criterion::{Criterion, criterion_main};
use hmac::{Hmac, Mac};
use otp_algo::{Algorithm, Amount, OtpKey, confirmation};
use sha1::Sha1;

const KEY: &[u8; 20] = b"12345678901234567890";
const NOW: u64 = 1_700_000_010;

fn benches(c: &mut Criterion) {
    let key = OtpKey::from_bytes(KEY).unwrap_or_else(|e| panic!("bench key: {e}"));
    let price = Amount::parse("EUR:12.34").unwrap_or_else(|e| panic!("bench price: {e}"));

    c.bench_function("confirmation_alg1", |b| {
        b.iter(|| {
            confirmation(
                black_box(&key),
                Algorithm::TotpWithoutPrice,
                None,
                black_box(NOW),
                0,
            )
        })
    });
    c.bench_function("confirmation_alg2", |b| {
        b.iter(|| {
            confirmation(
                black_box(&key),
                Algorithm::TotpWithPrice,
                Some(black_box(&price)),
                black_box(NOW),
                0,
            )
        })
    });
    // What naive code does for each of the five codes: key HMAC-SHA1 afresh
    // and MAC one 8-byte counter.
    c.bench_function("hmac_sha1_8_bytes", |b| {
        b.iter(|| {
            let mut mac = <Hmac<Sha1> as Mac>::new_from_slice(black_box(KEY))
                .unwrap_or_else(|e| panic!("hmac key: {e}"));
            mac.update(&black_box(NOW / 30).to_be_bytes());
            mac.finalize().into_bytes()
        })
    });
}

// A private module keeps the generated group function out of `missing_docs`.
mod groups {
    criterion::criterion_group!(confirmation, super::benches);
}

criterion_main!(groups::confirmation);
