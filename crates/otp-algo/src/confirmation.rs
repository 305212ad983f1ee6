//! The POS confirmation string (`docs/confirmation.md`, `docs/api.md` §5).

use zeroize::Zeroizing;

use crate::algorithm::Algorithm;
use crate::amount::Amount;
use crate::hotp::{CODE_DIGITS, HmacSha1, hmac_sha1, hotp_with, push_code};
use crate::kdf::gnunet_kdf;
use crate::key::OtpKey;
use crate::totp::{TOTP_OFFSETS, totp_counters};

/// HMAC-SHA1 keyed with the code key `K` of `algorithm`, or `None` when the
/// algorithm produces no code (NONE, or a with-price algorithm without price).
///
/// `K` is the device key (algorithms 1 and 3) or
/// `gnunet_kdf(salt = price as TALER_AmountNBO, ikm = device key)` (2 and 4).
pub(crate) fn keyed_mac(
    key: &OtpKey,
    algorithm: Algorithm,
    price: Option<&Amount>,
) -> Option<HmacSha1> {
    match algorithm {
        Algorithm::None => None,
        Algorithm::TotpWithoutPrice | Algorithm::HotpWithoutPrice => {
            Some(hmac_sha1(key.as_bytes()))
        }
        Algorithm::TotpWithPrice | Algorithm::HotpWithPrice => {
            let derived = Zeroizing::new(gnunet_kdf(&price?.to_nbo(), key.as_bytes()));
            Some(hmac_sha1(derived.as_slice()))
        }
    }
}

/// The confirmation string a device with `key` and `algorithm` shows.
///
/// - [`Algorithm::None`], and a with-price algorithm without `price`: `None`.
/// - TOTP (1, 2): five 8-digit codes for the steps -2..=+2 around
///   `unix_seconds` (see [`totp_counters`](crate::totp_counters)), oldest
///   first, joined by `'\n'`, without trailing newline; `counter` is ignored.
/// - HOTP (3, 4): one 8-digit code for `counter`; `unix_seconds` is ignored.
///
/// `price` is ignored by the algorithms without price.
/// Bit-exact with upstream's `TALER_build_pos_confirmation` for algorithms 1 and 2.
pub fn confirmation(
    key: &OtpKey,
    algorithm: Algorithm,
    price: Option<&Amount>,
    unix_seconds: u64,
    counter: u64,
) -> Option<String> {
    let mac = keyed_mac(key, algorithm, price)?;
    if !algorithm.is_time_based() {
        let mut out = String::with_capacity(CODE_DIGITS);
        push_code(&mut out, hotp_with(&mac, counter));
        return Some(out);
    }
    let mut out = String::with_capacity(TOTP_OFFSETS.len() * (CODE_DIGITS + 1) - 1);
    // Counters repeat only next to each other (saturation), so remembering
    // the previous one is enough to compute each distinct code once.
    let mut previous: Option<(u64, u32)> = None;
    for counter in totp_counters(unix_seconds) {
        let value = match previous {
            Some((c, value)) if c == counter => value,
            _ => hotp_with(&mac, counter),
        };
        if previous.is_some() {
            out.push('\n');
        }
        push_code(&mut out, value);
        previous = Some((counter, value));
    }
    Some(out)
}
