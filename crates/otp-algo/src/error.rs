//! Error types of this crate: one small enum per kind of input.

/// Why a base32 device key was rejected (`docs/api.md` §4).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// The key string is empty.
    #[error("key is empty")]
    Empty,
    /// A character outside the base32 alphabet `A-Z2-7` (either case).
    #[error("invalid character {character:?} at position {position}; expected base32 (A-Z, 2-7)")]
    InvalidCharacter {
        /// 0-based index of the offending character (in characters, not bytes).
        position: usize,
        /// The offending character.
        character: char,
    },
    /// A `=` that is followed by a non-padding character.
    #[error("padding '=' at position {position} is not at the end of the key")]
    MisplacedPadding {
        /// 0-based index of the misplaced `=` (in characters, not bytes).
        position: usize,
    },
    /// The trailing run of `=` has a length other than 1, 2, 3, 4 or 6.
    #[error("invalid padding; a key may end with 1, 2, 3, 4 or 6 '=' characters")]
    InvalidPadding,
    /// The key decodes to fewer than [`MIN_KEY_BYTES`](crate::MIN_KEY_BYTES) bytes.
    #[error("key decodes to {bytes} bytes; at least 10 bytes (80 bits) are required")]
    TooShort {
        /// Number of bytes the key decodes to.
        bytes: usize,
    },
}

/// Why a Taler amount `CURRENCY:VALUE[.FRACTION]` was rejected (`docs/api.md` §4).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
pub enum AmountError {
    /// There is no `:` between currency and value.
    #[error("amount has no ':' between currency and value")]
    MissingColon,
    /// The currency is not 1 to 11 upper-case letters `A-Z`.
    #[error("currency must be 1 to 11 upper-case letters A-Z")]
    InvalidCurrency,
    /// The value is empty or contains something other than decimal digits.
    #[error("amount value must be one or more decimal digits")]
    InvalidValue,
    /// The value exceeds 2^52.
    #[error("amount value exceeds 2^52")]
    ValueTooLarge,
    /// The fraction is not 1 to 8 decimal digits (or, in [`Amount::new`](crate::Amount::new), not below 10^8).
    #[error("amount fraction must be 1 to 8 decimal digits")]
    InvalidFraction,
}

/// Why an algorithm identifier was rejected (`docs/api.md` §3).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AlgorithmError {
    /// An integer other than 0 to 4.
    #[error("unknown algorithm {value}; expected an integer from 0 to 4")]
    UnknownValue {
        /// The integer given.
        value: i64,
    },
    /// A string that is neither an algorithm name nor (where accepted) an integer from 0 to 4.
    #[error(
        "unknown algorithm {name:?}; expected NONE, TOTP_WITHOUT_PRICE, TOTP_WITH_PRICE, HOTP_WITHOUT_PRICE or HOTP_WITH_PRICE"
    )]
    UnknownName {
        /// The string given.
        name: String,
    },
}
