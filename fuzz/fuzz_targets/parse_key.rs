//! Fuzzes base32 key parsing: no panics, and accepted keys round-trip.

#![no_main]

use libfuzzer_sys::fuzz_target;
use otp_algo::{OtpKey, decode_base32};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let decoded = decode_base32(text);
    match OtpKey::from_base32(text) {
        Ok(key) => {
            // from_base32 accepts exactly what decode_base32 accepts with >= 10 bytes.
            assert_eq!(decoded.as_deref().ok(), Some(key.as_bytes()));
            let canonical = key.to_base32();
            let again = OtpKey::from_base32(&canonical).ok();
            assert!(again.as_ref() == Some(&key), "canonical form does not round-trip");
            assert!(!format!("{key:?}").contains(&canonical));
        }
        Err(_) => {
            if let Ok(bytes) = decoded {
                assert!(bytes.len() < otp_algo::MIN_KEY_BYTES);
            }
        }
    }
});
