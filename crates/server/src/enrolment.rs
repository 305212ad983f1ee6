//! Enrolment with a generated key (`docs/api.md` §11): the key itself, the `otpauth://`
//! provisioning URI that authenticator apps read, and that URI as a QR code (SVG, PNG, and
//! Unicode blocks for a terminal).
//!
//! Everything here is pure except [`generate_key`], which reads the operating system's random
//! source. The URI carries the key, so it is never logged: the results are wrapped in
//! [`Zeroizing`] and the errors never contain the URI.

use image::{ImageFormat, Luma};
use otp_algo::{Algorithm, OtpKey};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use qrcode::render::{svg, unicode};
use qrcode::{EcLevel, QrCode};
use rand::RngCore;
use rand::rngs::OsRng;
use zeroize::Zeroizing;

/// How many random bytes a generated key has (160 bits, RFC 4226 §4's recommended length).
pub const GENERATED_KEY_BYTES: usize = 20;

/// Pixels per QR module in the PNG and the SVG.
const MODULE_PIXELS: u32 = 8;

/// Everything RFC 3986 does not list as unreserved (`ALPHA DIGIT - . _ ~`) is percent-encoded.
const NOT_UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Why an enrolment could not be prepared. The messages never contain the key or the URI.
#[derive(Debug, thiserror::Error)]
pub enum EnrolmentError {
    /// The operating system's random source failed.
    #[error("the operating system's random source failed: {0}")]
    Random(String),
    /// The URI does not fit in a QR code (a very long issuer or device id).
    #[error("the provisioning URI ({0} bytes) is too long for a QR code")]
    TooLong(usize),
    /// Encoding the PNG failed.
    #[error("encoding the QR code as PNG failed: {0}")]
    Png(String),
}

/// A new device key: [`GENERATED_KEY_BYTES`] bytes from the operating system's random source.
pub fn generate_key() -> Result<OtpKey, EnrolmentError> {
    let mut bytes = Zeroizing::new([0_u8; GENERATED_KEY_BYTES]);
    OsRng
        .try_fill_bytes(bytes.as_mut_slice())
        .map_err(|err| EnrolmentError::Random(err.to_string()))?;
    OtpKey::from_bytes(bytes.as_slice()).map_err(|err| EnrolmentError::Random(err.to_string()))
}

/// The provisioning URI of a device (`docs/api.md` §11), or `None` for algorithm NONE, which
/// has no codes to provision.
///
/// TOTP: `otpauth://totp/ISSUER:DEVICE_ID?secret=KEY&issuer=ISSUER&algorithm=SHA1&digits=8&period=30`;
/// HOTP: `otpauth://hotp/ISSUER:DEVICE_ID?secret=KEY&issuer=ISSUER&algorithm=SHA1&digits=8&counter=C`.
/// ISSUER and DEVICE_ID are percent-encoded per RFC 3986 (only unreserved characters stay as
/// they are; a space becomes `%20`); with-price algorithms add `&taler_algorithm=N`.
pub fn otpauth_uri(
    issuer: &str,
    device_id: &str,
    key: &OtpKey,
    algorithm: Algorithm,
    counter: u64,
) -> Option<Zeroizing<String>> {
    let (kind, moving_factor) = match algorithm {
        Algorithm::None => return None,
        Algorithm::TotpWithoutPrice | Algorithm::TotpWithPrice => ("totp", "period=30".to_owned()),
        Algorithm::HotpWithoutPrice | Algorithm::HotpWithPrice => {
            ("hotp", format!("counter={counter}"))
        }
    };
    let issuer = utf8_percent_encode(issuer, NOT_UNRESERVED).to_string();
    let account = utf8_percent_encode(device_id, NOT_UNRESERVED);
    let secret = Zeroizing::new(key.to_base32());
    let mut uri = Zeroizing::new(format!(
        "otpauth://{kind}/{issuer}:{account}?secret={}&issuer={issuer}&algorithm=SHA1&digits=8&{moving_factor}",
        secret.as_str()
    ));
    if algorithm.uses_price() {
        uri.push_str(&format!("&taler_algorithm={}", algorithm.as_int()));
    }
    Some(uri)
}

/// `uri` as a QR code, error correction level M, or L when M cannot hold it.
fn qr_code(uri: &str) -> Result<QrCode, EnrolmentError> {
    QrCode::with_error_correction_level(uri, EcLevel::M)
        .or_else(|_| QrCode::with_error_correction_level(uri, EcLevel::L))
        .map_err(|_| EnrolmentError::TooLong(uri.len()))
}

/// `uri` as a QR code in an SVG document: black modules on a white background, with the
/// standard quiet zone of four modules.
pub fn qr_svg(uri: &str) -> Result<Zeroizing<String>, EnrolmentError> {
    let code = qr_code(uri)?;
    Ok(Zeroizing::new(
        code.render::<svg::Color<'_>>()
            .module_dimensions(MODULE_PIXELS, MODULE_PIXELS)
            .build(),
    ))
}

/// `uri` as a QR code in a PNG image (8-bit grey, 8 pixels per module, quiet zone of four
/// modules), base64-encoded with padding.
pub fn qr_png_base64(uri: &str) -> Result<Zeroizing<String>, EnrolmentError> {
    let code = qr_code(uri)?;
    let image = code
        .render::<Luma<u8>>()
        .module_dimensions(MODULE_PIXELS, MODULE_PIXELS)
        .build();
    let mut png = Zeroizing::new(Vec::new());
    image
        .write_to(&mut std::io::Cursor::new(&mut *png), ImageFormat::Png)
        .map_err(|err| EnrolmentError::Png(err.to_string()))?;
    Ok(Zeroizing::new(data_encoding::BASE64.encode(&png)))
}

/// `uri` as a QR code for a terminal: Unicode half blocks, two modules per character cell,
/// drawn for light text on a dark background (light modules are blocks, dark modules are
/// blanks), with the quiet zone.
pub fn qr_terminal(uri: &str) -> Result<Zeroizing<String>, EnrolmentError> {
    let code = qr_code(uri)?;
    Ok(Zeroizing::new(
        code.render::<unicode::Dense1x2>()
            .dark_color(unicode::Dense1x2::Light)
            .light_color(unicode::Dense1x2::Dark)
            .build(),
    ))
}

/// What the server hands out once when it generated a key: the key in base32 (no padding), the
/// provisioning URI, and the URI as SVG and base64 PNG QR codes.
pub struct Enrolment {
    /// The key, RFC 3548 base32 without padding.
    pub key: Zeroizing<String>,
    /// The provisioning URI.
    pub uri: Zeroizing<String>,
    /// The QR code, an SVG document.
    pub svg: Zeroizing<String>,
    /// The QR code, a base64 PNG.
    pub png: Zeroizing<String>,
}

impl std::fmt::Debug for Enrolment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Enrolment(..)")
    }
}

impl Enrolment {
    /// The enrolment of a device with `key`; `None` for algorithm NONE.
    pub fn new(
        issuer: &str,
        device_id: &str,
        key: &OtpKey,
        algorithm: Algorithm,
        counter: u64,
    ) -> Result<Option<Enrolment>, EnrolmentError> {
        let Some(uri) = otpauth_uri(issuer, device_id, key, algorithm, counter) else {
            return Ok(None);
        };
        Ok(Some(Enrolment {
            key: Zeroizing::new(key.to_base32()),
            svg: qr_svg(&uri)?,
            png: qr_png_base64(&uri)?,
            uri,
        }))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

    use super::*;

    const RFC_KEY: &str = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ";

    fn key() -> OtpKey {
        OtpKey::from_base32(RFC_KEY).unwrap()
    }

    #[test]
    fn totp_uri_has_every_parameter() {
        let uri = otpauth_uri("Admin", "till-1", &key(), Algorithm::TotpWithoutPrice, 7).unwrap();
        assert_eq!(
            uri.as_str(),
            "otpauth://totp/Admin:till-1?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ&issuer=Admin&algorithm=SHA1&digits=8&period=30"
        );
    }

    #[test]
    fn hotp_with_price_uri_has_the_counter_and_the_taler_algorithm() {
        let uri = otpauth_uri("Admin", "pos", &key(), Algorithm::HotpWithPrice, 42).unwrap();
        assert_eq!(
            uri.as_str(),
            "otpauth://hotp/Admin:pos?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ&issuer=Admin&algorithm=SHA1&digits=8&counter=42&taler_algorithm=4"
        );
        let totp = otpauth_uri("Admin", "pos", &key(), Algorithm::TotpWithPrice, 0).unwrap();
        assert!(totp.ends_with("&period=30&taler_algorithm=2"), "{}", *totp);
        assert!(otpauth_uri("Admin", "pos", &key(), Algorithm::None, 0).is_none());
    }

    #[test]
    fn issuer_and_device_are_percent_encoded_per_rfc_3986() {
        let uri = otpauth_uri(
            "Café & Co",
            "till 1/ü+%~._-:",
            &key(),
            Algorithm::HotpWithoutPrice,
            0,
        )
        .unwrap();
        assert!(
            uri.starts_with("otpauth://hotp/Caf%C3%A9%20%26%20Co:till%201%2F%C3%BC%2B%25~._-%3A?"),
            "{}",
            *uri
        );
        assert!(uri.contains("&issuer=Caf%C3%A9%20%26%20Co&"), "{}", *uri);
    }

    #[test]
    fn generated_keys_are_twenty_random_bytes() {
        let a = generate_key().unwrap();
        let b = generate_key().unwrap();
        assert_eq!(a.as_bytes().len(), GENERATED_KEY_BYTES);
        assert_ne!(a, b);
        assert_eq!(format!("{a:?}"), "OtpKey(..)");
    }

    #[test]
    fn qr_codes_are_an_svg_document_and_a_png() {
        let uri = otpauth_uri("Admin", "till-1", &key(), Algorithm::TotpWithoutPrice, 0).unwrap();
        let svg = qr_svg(&uri).unwrap();
        assert!(svg.starts_with("<?xml"), "{}", *svg);
        assert!(svg.contains("<svg xmlns=\"http://www.w3.org/2000/svg\""));
        assert!(svg.trim_end().ends_with("</svg>"));
        let png = data_encoding::BASE64
            .decode(qr_png_base64(&uri).unwrap().as_bytes())
            .unwrap();
        assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"));
        let terminal = qr_terminal(&uri).unwrap();
        assert!(terminal.lines().count() > 10, "{}", *terminal);
    }

    #[test]
    fn a_uri_too_long_for_a_qr_code_is_an_error_without_the_uri() {
        let uri = format!("otpauth://totp/x?secret={}", "A".repeat(5000));
        let err = qr_svg(&uri).unwrap_err();
        assert!(matches!(err, EnrolmentError::TooLong(_)));
        assert!(!err.to_string().contains("AAAA"));
    }

    #[test]
    fn enrolment_debug_is_redacted() {
        let enrolment = Enrolment::new("Admin", "d", &key(), Algorithm::TotpWithoutPrice, 0)
            .unwrap()
            .unwrap();
        assert_eq!(format!("{enrolment:?}"), "Enrolment(..)");
        assert_eq!(enrolment.key.as_str(), RFC_KEY);
    }
}
