//! Fuzzes amount parsing: no panics, and accepted amounts round-trip through
//! their canonical display.

#![no_main]

use libfuzzer_sys::fuzz_target;
use otp_algo::{Amount, MAX_AMOUNT_VALUE};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(amount) = Amount::parse(text) {
        assert!(amount.value() <= MAX_AMOUNT_VALUE);
        assert!(amount.fraction() < 100_000_000);
        let shown = amount.to_string();
        assert_eq!(Amount::parse(&shown).ok().as_ref(), Some(&amount));
        // The canonical form is the shortest: at most as long as the input.
        assert!(shown.len() <= text.len());
        let nbo = amount.to_nbo();
        assert_eq!(nbo.get(12..12 + amount.currency().len()), Some(amount.currency().as_bytes()));
    }
});
