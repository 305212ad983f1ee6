//! Query parameters of `GET …/otp-devices/$DEVICE_ID`: `faketime` and `price`.
//!
//! Parsed by hand from the raw query string so every malformed value gets code 26 naming the
//! parameter, whether or not the device's algorithm uses it. Empty values count as absent.

use otp_algo::Amount;

use crate::error::ApiError;
use crate::params;

/// The parsed query of GET one.
#[derive(Debug, Default)]
pub struct CodeQuery {
    /// `faketime`: seconds since the epoch to compute the code for.
    pub faketime: Option<u64>,
    /// `price`: the amount the code is bound to.
    pub price: Option<Amount>,
}

impl CodeQuery {
    /// Parses `faketime` and `price` from a raw query string; other parameters are ignored.
    /// Decoded as `application/x-www-form-urlencoded`; short names and values are decoded on
    /// the stack, so a typical query allocates nothing.
    pub fn parse(query_string: &str) -> Result<CodeQuery, ApiError> {
        let mut query = CodeQuery::default();
        for pair in query_string.split('&').filter(|pair| !pair.is_empty()) {
            let (mut name_buf, mut value_buf) = ([0u8; SHORT], [0u8; SHORT]);
            let (raw_name, raw_value) = pair.split_once('=').unwrap_or((pair, ""));
            let decoded = decode(raw_name, &mut name_buf).zip(decode(raw_value, &mut value_buf));
            match decoded {
                Some((name, value)) => query.take(name, value)?,
                // Long or not UTF-8: the general decoder, as before.
                None => {
                    for (name, value) in form_urlencoded::parse(pair.as_bytes()) {
                        query.take(&name, &value)?;
                    }
                }
            }
        }
        Ok(query)
    }

    fn take(&mut self, name: &str, value: &str) -> Result<(), ApiError> {
        if value.is_empty() {
            return Ok(());
        }
        match name {
            "faketime" => self.faketime = Some(parse_faketime(value)?),
            "price" => self.price = Some(parse_price(value)?),
            _ => {}
        }
        Ok(())
    }
}

/// The byte two hex digits stand for.
fn hex_byte(digits: &[u8]) -> Option<u8> {
    let digits = std::str::from_utf8(digits).ok()?;
    if !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u8::from_str_radix(digits, 16).ok()
}

/// Longest name or value decoded on the stack.
const SHORT: usize = 64;

/// `raw` decoded as a form-urlencoded component (`+` is a space, `%XX` a byte, any other `%`
/// itself), borrowed when there is nothing to decode, else decoded into `buf`; `None` when it
/// does not fit or is not UTF-8.
fn decode<'a>(raw: &'a str, buf: &'a mut [u8; SHORT]) -> Option<&'a str> {
    if !raw.bytes().any(|b| b == b'%' || b == b'+') {
        return Some(raw);
    }
    let raw = raw.as_bytes();
    let (mut at, mut len) = (0, 0);
    while let Some(&byte) = raw.get(at) {
        let (decoded, width) = match byte {
            b'+' => (b' ', 1),
            b'%' => match raw.get(at + 1..at + 3).and_then(hex_byte) {
                Some(decoded) => (decoded, 3),
                None => (b'%', 1),
            },
            other => (other, 1),
        };
        *buf.get_mut(len)? = decoded;
        len += 1;
        at += width;
    }
    std::str::from_utf8(buf.get(..len)?).ok()
}

/// `limit` and `offset` of a listing: `limit` 1–1000, `offset` ≥ 0; either may be absent.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Page {
    /// How many entries at most.
    pub limit: Option<u32>,
    /// How many entries to skip.
    pub offset: Option<u64>,
}

impl Page {
    /// Reads `limit` and `offset` from a raw query string (other parameters are ignored);
    /// a malformed one is a 400, code 26, naming it.
    pub fn parse(query_string: &str) -> Result<Page, ApiError> {
        let mut page = Page::default();
        for (name, value) in form_urlencoded::parse(query_string.as_bytes()) {
            match name.as_ref() {
                "limit" => {
                    let limit = params::counter(&value)
                        .ok()
                        .and_then(|limit| u32::try_from(limit).ok())
                        .filter(|limit| (1..=1000).contains(limit))
                        .ok_or_else(|| {
                            ApiError::malformed(format!(
                                "limit: expected an integer between 1 and 1000, got {value:?}"
                            ))
                        })?;
                    page.limit = Some(limit);
                }
                "offset" => {
                    let offset = params::counter(&value)
                        .map_err(|why| ApiError::malformed(format!("offset: {why}")))?;
                    page.offset = Some(offset);
                }
                _ => {}
            }
        }
        Ok(page)
    }

    /// Whether the request asked for a page at all.
    pub fn is_requested(self) -> bool {
        self.limit.is_some() || self.offset.is_some()
    }

    /// `limit` (default 100) and `offset` (default 0).
    pub fn or_default(self) -> (u32, u64) {
        (self.limit.unwrap_or(100), self.offset.unwrap_or(0))
    }
}

/// Parses `faketime`: decimal digits only, 0 ≤ value ≤ 18446744073709.
pub fn parse_faketime(value: &str) -> Result<u64, ApiError> {
    params::seconds(value).map_err(|why| ApiError::malformed(format!("faketime: {why}")))
}

/// Parses a Taler amount given as `price`.
pub fn parse_price(value: &str) -> Result<Amount, ApiError> {
    params::amount(value).map_err(|why| ApiError::malformed(format!("price: {why}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_values_are_absent_and_unknown_parameters_ignored() {
        let query = CodeQuery::parse("price=&faketime=&other=x").unwrap();
        assert!(query.price.is_none() && query.faketime.is_none());
    }

    #[test]
    fn percent_encoded_price_is_decoded() {
        let query = CodeQuery::parse("price=EUR%3A1.5&faketime=59").unwrap();
        assert_eq!(query.price.unwrap().to_string(), "EUR:1.5");
        assert_eq!(query.faketime, Some(59));
    }

    #[test]
    fn decoding_matches_the_general_decoder() {
        for raw in [
            "EUR%3A1.5",
            "a+b%20c",
            "%",
            "%4",
            "%zz%41",
            "%C3%A9",
            "%FF",
            "x%3",
            "plain",
            "",
        ] {
            let general: String = form_urlencoded::parse(format!("k={raw}").as_bytes())
                .map(|(_, value)| value.into_owned())
                .collect();
            let mut buf = [0u8; SHORT];
            match decode(raw, &mut buf) {
                Some(decoded) => assert_eq!(decoded, general, "{raw:?}"),
                None => assert!(general.contains('\u{fffd}'), "{raw:?}"),
            }
        }
        let long = "%41".repeat(SHORT + 1);
        assert_eq!(decode(&long, &mut [0u8; SHORT]), None);
        let query = CodeQuery::parse(&format!("x={long}&price=EUR%3A2&p%72ice=EUR%3A3")).unwrap();
        assert_eq!(query.price.unwrap().to_string(), "EUR:3");
    }

    #[test]
    fn malformed_values_name_the_parameter() {
        for bad in [
            "faketime=-1",
            "faketime=1.5",
            "faketime=18446744073710",
            "faketime=%2B1",
            "price=eur:1",
            "price=EUR:1.",
            "price=EUR%3A%201",
        ] {
            let err = CodeQuery::parse(bad).unwrap_err();
            let name = bad.split('=').next().unwrap();
            assert!(err.to_string().starts_with(name), "{bad}: {err}");
        }
    }
}
