//! Validated identifiers: a value of these types is always a valid id.

use std::fmt;

/// Why a string is not a valid id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// The id is the empty string.
    #[error("id is empty")]
    Empty,
    /// The id has more characters than allowed.
    #[error("id is longer than {max} characters")]
    TooLong {
        /// The maximum number of characters.
        max: usize,
    },
    /// The id contains a character that is not allowed.
    #[error("id contains a character that is not allowed")]
    InvalidCharacter,
}

/// A merchant instance id (the `$INSTANCE` of `/instances/$INSTANCE/...`).
///
/// **Invariant:** 1 to [`InstanceId::MAX_LEN`] characters of `[A-Za-z0-9._-]`,
/// as GNU Taler accepts for instance ids.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct InstanceId(String);

impl InstanceId {
    /// The maximum length in characters.
    pub const MAX_LEN: usize = 64;

    /// Validates `id`.
    pub fn parse(id: &str) -> Result<InstanceId, IdError> {
        if id.is_empty() {
            return Err(IdError::Empty);
        }
        if id.len() > Self::MAX_LEN {
            return Err(IdError::TooLong { max: Self::MAX_LEN });
        }
        let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
        if !id.chars().all(allowed) {
            return Err(IdError::InvalidCharacter);
        }
        Ok(InstanceId(id.to_owned()))
    }

    /// The id as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An OTP device id, unique within its instance.
///
/// **Invariant:** 1 to [`OtpDeviceId::MAX_LEN`] characters, none of them a
/// control character or `/` (`docs/api.md` §2, a decision of ours).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OtpDeviceId(String);

impl OtpDeviceId {
    /// The maximum length in characters (not bytes).
    pub const MAX_LEN: usize = 128;

    /// Validates `id`.
    pub fn parse(id: &str) -> Result<OtpDeviceId, IdError> {
        if id.is_empty() {
            return Err(IdError::Empty);
        }
        if id.chars().count() > Self::MAX_LEN {
            return Err(IdError::TooLong { max: Self::MAX_LEN });
        }
        if id.chars().any(|c| c.is_control() || c == '/') {
            return Err(IdError::InvalidCharacter);
        }
        Ok(OtpDeviceId(id.to_owned()))
    }

    /// The id as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

macro_rules! impl_id_traits {
    ($id:ident) => {
        impl fmt::Display for $id {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $id {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl std::str::FromStr for $id {
            type Err = IdError;

            fn from_str(id: &str) -> Result<$id, IdError> {
                $id::parse(id)
            }
        }

        impl TryFrom<String> for $id {
            type Error = IdError;

            fn try_from(id: String) -> Result<$id, IdError> {
                $id::parse(&id)
            }
        }
    };
}

impl_id_traits!(InstanceId);
impl_id_traits!(OtpDeviceId);

#[cfg(test)]
mod tests {
    use super::*;

    /// Asserts that `parse` refuses each id with its error.
    fn refuses<T: std::fmt::Debug + PartialEq, const N: usize>(
        parse: fn(&str) -> Result<T, IdError>,
        cases: [(&str, IdError); N],
    ) {
        for (id, err) in cases {
            assert_eq!(parse(id), Err(err), "case {id:?}");
        }
    }

    #[test]
    fn instance_ids_follow_taler_rules() {
        for ok in ["admin", "default", "a", "shop-1.eu_2", &"x".repeat(64)] {
            assert!(InstanceId::parse(ok).is_ok(), "{ok:?} should be valid");
        }
        refuses(
            InstanceId::parse,
            [
                ("", IdError::Empty),
                (&"x".repeat(65), IdError::TooLong { max: 64 }),
                ("a b", IdError::InvalidCharacter),
                ("a/b", IdError::InvalidCharacter),
                ("caf\u{e9}", IdError::InvalidCharacter),
                ("a:b", IdError::InvalidCharacter),
            ],
        );
    }

    #[test]
    fn device_ids_are_printable_without_slash() {
        let long_unicode = "\u{e9}".repeat(128);
        for ok in [
            "pos-1",
            "a b",
            "a:b:c",
            "caf\u{e9} \u{2615}",
            long_unicode.as_str(),
        ] {
            assert!(OtpDeviceId::parse(ok).is_ok(), "{ok:?} should be valid");
        }
        refuses(
            OtpDeviceId::parse,
            [
                ("", IdError::Empty),
                (&"x".repeat(129), IdError::TooLong { max: 128 }),
                ("a/b", IdError::InvalidCharacter),
                ("a\nb", IdError::InvalidCharacter),
                ("a\u{7f}", IdError::InvalidCharacter),
                ("a\u{85}", IdError::InvalidCharacter),
            ],
        );
    }

    #[test]
    fn ids_display_as_their_string() {
        let id = OtpDeviceId::parse("pos:1").unwrap();
        assert_eq!(id.to_string(), "pos:1");
        assert_eq!(id.as_str(), "pos:1");
    }
}
