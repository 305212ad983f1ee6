//! Pure implementations of HOTP (RFC 4226), TOTP (RFC 6238) and GNU Taler's
//! POS confirmation codes.
//!
//! This crate computes the `otp_code` / `pos_confirmation` strings of the GNU
//! Taler merchant backend bit for bit (see `docs/confirmation.md`)
//! and parses the inputs they depend on: base32 device keys, Taler amounts and
//! algorithm identifiers.
//!
//! It deliberately is not a storage layer or an HTTP layer: it has no async
//! code, no database or HTTP types, and no configuration.
//!
//! **Invariants:**
//! - No I/O and no clock: every function that depends on time takes the time
//!   as a parameter (`unix_seconds`); `clippy.toml` bans reading the clock.
//! - No panics on any input: parsers return typed errors, code generation
//!   returns `Option` where upstream produces no code.
//! - Secrets stay secret: [`OtpKey`] is zeroized on drop, compares in constant
//!   time and never prints its bytes; codes are compared with [`ct_eq`].
//!
//! ```
//! use otp_algo::{Algorithm, Amount, OtpKey, confirmation, verify_hotp};
//!
//! let key = OtpKey::from_base32("GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ")?;
//! // Five TOTP codes around the time the caller passes (here t = 59 s).
//! let codes = confirmation(&key, Algorithm::TotpWithoutPrice, None, 59, 0);
//! assert_eq!(
//!     codes.as_deref(),
//!     Some("84755224\n84755224\n94287082\n37359152\n26969429")
//! );
//! // A with-price algorithm gives no code without a price.
//! assert_eq!(confirmation(&key, Algorithm::TotpWithPrice, None, 59, 0), None);
//! let price = Amount::parse("EUR:1.50")?;
//! assert!(confirmation(&key, Algorithm::HotpWithPrice, Some(&price), 0, 7).is_some());
//! // A clerk typed the code of counter 7; the device is at 5.
//! let found = verify_hotp(&key, Algorithm::HotpWithoutPrice, None, 5, "82162583", 10);
//! assert_eq!(found, Some(7));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod algorithm;
mod amount;
mod confirmation;
mod error;
mod hotp;
mod kdf;
mod key;
mod totp;
mod verify;

pub use algorithm::Algorithm;
pub use amount::{Amount, MAX_AMOUNT_VALUE, MAX_CURRENCY_LEN, MAX_FRACTION_DIGITS};
pub use confirmation::confirmation;
pub use error::{AlgorithmError, AmountError, KeyError};
pub use hotp::{CODE_DIGITS, hotp, hotp_code};
pub use kdf::gnunet_kdf;
pub use key::{MIN_KEY_BYTES, OtpKey, decode_base32};
pub use totp::{MAX_TIMESTAMP, TIME_STEP, TOTP_OFFSETS, totp_counter, totp_counters};
pub use verify::{HotpMatcher, ct_eq, hotp_matches, totp_matches, verify_hotp, verify_totp};
