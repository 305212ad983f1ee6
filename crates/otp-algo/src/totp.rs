//! TOTP time steps with upstream's saturating microsecond arithmetic.

/// The TOTP time step, in seconds (RFC 6238 X; T0 is 0).
pub const TIME_STEP: u64 = 30;

/// The largest timestamp upstream represents, in seconds: `(2^64 - 1) µs`
/// ("forever") truncated to seconds. Later times behave as this one.
pub const MAX_TIMESTAMP: u64 = u64::MAX / MICROS;

/// The TOTP step offsets of the five codes of a confirmation, oldest first.
pub const TOTP_OFFSETS: [i64; 5] = [-2, -1, 0, 1, 2];

/// Microseconds per second (GNUnet times are microseconds).
const MICROS: u64 = 1_000_000;

/// GNUnet's "forever" absolute time, in microseconds.
const FOREVER_US: u64 = u64::MAX;

/// The TOTP counter for `unix_seconds` moved by `step_offset` steps of
/// [`TIME_STEP`] seconds, computed as upstream does (`docs/confirmation.md` "Time").
///
/// The time is converted to microseconds (a time past [`MAX_TIMESTAMP`]
/// becomes "forever"), then moved with GNUnet's saturating arithmetic:
/// moving back past 0 gives 0, moving forward past 2^64 - 1 µs gives
/// "forever", and "forever" moved either way stays "forever". The counter is
/// the whole seconds divided by [`TIME_STEP`].
pub fn totp_counter(unix_seconds: u64, step_offset: i64) -> u64 {
    let start = unix_seconds.checked_mul(MICROS).unwrap_or(FOREVER_US);
    let shift = step_offset
        .unsigned_abs()
        .saturating_mul(TIME_STEP * MICROS);
    let moved = if start == FOREVER_US {
        FOREVER_US
    } else if step_offset < 0 {
        start.saturating_sub(shift)
    } else {
        start.checked_add(shift).unwrap_or(FOREVER_US)
    };
    moved / MICROS / TIME_STEP
}

/// The counters of the five codes of a TOTP confirmation, for the steps
/// -2, -1, 0, +1, +2 around `unix_seconds` (see [`totp_counter`]).
///
/// Near the ends of time neighbouring counters are equal: `0` gives
/// `[0, 0, 0, 1, 2]` and [`MAX_TIMESTAMP`] gives equal counters for the
/// steps 0, +1 and +2.
pub fn totp_counters(unix_seconds: u64) -> [u64; 5] {
    TOTP_OFFSETS.map(|offset| totp_counter(unix_seconds, offset))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saturation_at_the_epoch() {
        assert_eq!(totp_counters(0), [0, 0, 0, 1, 2]);
        assert_eq!(totp_counters(29), [0, 0, 0, 1, 2]);
        assert_eq!(totp_counters(30), [0, 0, 1, 2, 3]);
        assert_eq!(totp_counters(45), [0, 0, 1, 2, 3]);
        assert_eq!(totp_counters(59), [0, 0, 1, 2, 3]);
        assert_eq!(totp_counters(60), [0, 1, 2, 3, 4]);
        assert_eq!(totp_counter(0, i64::MIN), 0);
    }

    #[test]
    fn ordinary_times() {
        assert_eq!(
            totp_counters(1_111_111_109),
            [37_037_034, 37_037_035, 37_037_036, 37_037_037, 37_037_038]
        );
        assert_eq!(totp_counter(1_111_111_109, 100), 37_037_136);
        assert_eq!(totp_counter(1_111_111_109, -100), 37_036_936);
    }

    #[test]
    fn saturation_at_forever() {
        assert_eq!(MAX_TIMESTAMP, 18_446_744_073_709);
        let c = MAX_TIMESTAMP / TIME_STEP;
        assert_eq!(c, 614_891_469_123);
        assert_eq!(totp_counters(MAX_TIMESTAMP), [c - 2, c - 1, c, c, c]);
        // 30 s before the end: +1 still fits, +2 saturates.
        assert_eq!(
            totp_counters(MAX_TIMESTAMP - 30),
            [c - 3, c - 2, c - 1, c, c]
        );
        // Past the end everything is "forever", including the earlier steps.
        assert_eq!(totp_counters(MAX_TIMESTAMP + 1), [c; 5]);
        assert_eq!(totp_counters(u64::MAX), [c; 5]);
        assert_eq!(totp_counter(MAX_TIMESTAMP, i64::MAX), c);
    }
}
