//! §11: enrolment with a generated key. The key, the provisioning URI, and both QR codes
//! (decoded here as a phone would: the PNG as it is, the SVG rasterized first), checked
//! against the codes the server computes.

use otp_algo::{Algorithm, Amount, OtpKey};
use otp_tests::{TestApp, assert_json_content_type, assert_taler_error, assert_valid, spawn_app};
use reqwest::StatusCode;
use serde_json::{Value, json};
use url::Url;

/// A time every code comparison uses (`faketime`).
const FAKETIME: u64 = 1_700_000_015;

/// Posts a device without `otp_key` at `prefix` ("" or "/instances/ID") with `token`.
async fn enrol(app: &TestApp, prefix: &str, token: &str, id: &str, algorithm: Value) -> Value {
    let body = json!({
        "otp_device_id": id,
        "otp_device_description": format!("device {id}"),
        "otp_algorithm": algorithm,
    });
    let path = format!("{prefix}/private/otp-devices");
    let reply = app.post_as(token, &path, &body).await;
    assert_eq!(
        reply.status,
        StatusCode::OK,
        "enrolling {id}: {}",
        reply.text
    );
    assert_json_content_type(&reply);
    reply.json
}

/// Decodes the one QR code in a greyscale image to its text.
fn decode_qr(image: image::GrayImage) -> String {
    let mut prepared = rqrr::PreparedImage::prepare(image);
    let grids = prepared.detect_grids();
    assert_eq!(grids.len(), 1, "expected one QR code in the image");
    let (_, content) = grids[0].decode().expect("QR code decodes");
    content
}

/// Decodes a PNG QR code to its text.
pub fn decode_qr_png(png: &[u8]) -> String {
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
    let image = image::load_from_memory_with_format(png, image::ImageFormat::Png)
        .expect("PNG decodes")
        .to_luma8();
    decode_qr(image)
}

/// Rasterizes an SVG document with resvg and decodes the QR code it draws to its text.
fn decode_qr_svg(svg: &str) -> String {
    use resvg::{tiny_skia, usvg};
    let tree = usvg::Tree::from_str(svg, &usvg::Options::default()).expect("SVG parses");
    let size = tree.size().to_int_size();
    assert!(size.width() >= 21 * 2, "SVG too small: {size:?}");
    let mut pixmap = tiny_skia::Pixmap::new(size.width(), size.height()).expect("pixmap");
    // Whatever the SVG leaves transparent is paper: white.
    pixmap.fill(tiny_skia::Color::WHITE);
    resvg::render(&tree, tiny_skia::Transform::default(), &mut pixmap.as_mut());
    let grey: Vec<u8> = pixmap
        .pixels()
        .iter()
        .map(|p| {
            let c = p.demultiply();
            ((u16::from(c.red()) + u16::from(c.green()) + u16::from(c.blue())) / 3) as u8
        })
        .collect();
    let image = image::GrayImage::from_raw(size.width(), size.height(), grey).expect("image");
    decode_qr(image)
}

/// The parts of an `otpauth://` URI, checked for the parameters every enrolment carries.
struct ParsedUri {
    kind: String,
    /// The path without its leading `/`, still percent-encoded.
    label: String,
    secret: String,
    issuer: String,
    counter: Option<u64>,
    taler_algorithm: Option<u8>,
}

fn parse_uri(uri: &str) -> ParsedUri {
    let url = Url::parse(uri).expect("URI parses");
    assert_eq!(url.scheme(), "otpauth");
    let kind = url.host_str().expect("a type").to_owned();
    let label = url.path().strip_prefix('/').expect("a label").to_owned();
    let pairs: Vec<(String, String)> = url.query_pairs().into_owned().collect();
    let get = |name: &str| -> Option<String> {
        let mut found = pairs.iter().filter(|(k, _)| k == name);
        let value = found.next().map(|(_, v)| v.clone());
        assert!(found.next().is_none(), "{name} twice in {uri}");
        value
    };
    assert_eq!(get("algorithm").as_deref(), Some("SHA1"), "{uri}");
    assert_eq!(get("digits").as_deref(), Some("8"), "{uri}");
    match kind.as_str() {
        "totp" => {
            assert_eq!(get("period").as_deref(), Some("30"), "{uri}");
            assert!(get("counter").is_none(), "{uri}");
        }
        "hotp" => assert!(get("period").is_none(), "{uri}"),
        other => panic!("unexpected type {other}: {uri}"),
    }
    ParsedUri {
        kind,
        label,
        secret: get("secret").expect("secret"),
        issuer: get("issuer").expect("issuer"),
        counter: get("counter").map(|c| c.parse().expect("counter is a number")),
        taler_algorithm: get("taler_algorithm").map(|a| a.parse().expect("a number")),
    }
}

/// Checks one enrolment answer: the fields, the key, the URI and both QR codes; returns the
/// parsed URI and the key.
fn check_enrolment(answer: &Value, algorithm: Algorithm) -> (ParsedUri, OtpKey) {
    let fields: Vec<&String> = answer.as_object().expect("an object").keys().collect();
    assert_eq!(
        fields,
        ["otp_key", "otp_uri", "qr_code_png", "qr_code_svg"],
        "{answer}"
    );
    let key_text = answer["otp_key"].as_str().expect("otp_key");
    assert!(
        !key_text.contains('=') && key_text.chars().all(|c| matches!(c, 'A'..='Z' | '2'..='7')),
        "{key_text}"
    );
    assert_eq!(key_text.len(), 32, "20 bytes are 32 base32 characters");
    let bytes = data_encoding::BASE32_NOPAD
        .decode(key_text.as_bytes())
        .expect("base32");
    assert_eq!(bytes.len(), 20);
    let key = OtpKey::from_base32(key_text).expect("key");

    let uri = answer["otp_uri"].as_str().expect("otp_uri");
    let parsed = parse_uri(uri);
    assert_eq!(parsed.secret, key_text, "the URI carries the key");
    let expected_kind = if algorithm.is_time_based() {
        "totp"
    } else {
        "hotp"
    };
    assert_eq!(parsed.kind, expected_kind, "{uri}");
    let expected_taler = algorithm.uses_price().then(|| algorithm.as_int());
    assert_eq!(parsed.taler_algorithm, expected_taler, "{uri}");

    let png = data_encoding::BASE64
        .decode(
            answer["qr_code_png"]
                .as_str()
                .expect("qr_code_png")
                .as_bytes(),
        )
        .expect("base64");
    assert_eq!(decode_qr_png(&png), uri, "the PNG holds exactly the URI");
    let svg = answer["qr_code_svg"].as_str().expect("qr_code_svg");
    assert!(
        svg.contains("<svg") && svg.trim_end().ends_with("</svg>"),
        "{svg}"
    );
    assert_eq!(decode_qr_svg(svg), uri, "the SVG holds exactly the URI");
    (parsed, key)
}

#[tokio::test]
async fn every_algorithm_enrols_with_a_key_whose_codes_the_server_computes() {
    let app = spawn_app().await;
    let price = "EUR:1.5";
    for algorithm in [
        Algorithm::TotpWithoutPrice,
        Algorithm::TotpWithPrice,
        Algorithm::HotpWithoutPrice,
        Algorithm::HotpWithPrice,
    ] {
        let id = format!("dev-{}", algorithm.as_int());
        let answer = enrol(&app, "", &app.write_token, &id, json!(algorithm.as_int())).await;
        let (uri, key) = check_enrolment(&answer, algorithm);
        assert_eq!(
            uri.label,
            format!("Admin:{id}"),
            "issuer is the instance's name"
        );
        assert_eq!(uri.issuer, "Admin");
        if algorithm.is_counter_based() {
            assert_eq!(uri.counter, Some(0));
        }

        let one = app
            .get(&format!(
                "/private/otp-devices/{id}?faketime={FAKETIME}&price=EUR%3A1.5"
            ))
            .await;
        assert_eq!(one.status, StatusCode::OK, "{}", one.text);
        assert_eq!(one.json["otp_algorithm"], algorithm.as_int());
        let amount = Amount::parse(price).expect("amount");
        let from_uri = OtpKey::from_base32(&uri.secret).expect("the URI's secret decodes");
        assert_eq!(from_uri, key);
        let expected = otp_algo::confirmation(
            &from_uri,
            algorithm,
            Some(&amount),
            FAKETIME,
            uri.counter.unwrap_or(0),
        );
        assert!(expected.is_some());
        assert_eq!(one.json["otp_code"].as_str(), expected.as_deref(), "{id}");

        // The key is never in any other answer.
        let key_text = answer["otp_key"].as_str().expect("key");
        assert!(!one.text.contains(key_text), "{}", one.text);
        assert!(one.json.get("otp_key").is_none());
        let list = app.get("/private/otp-devices").await;
        assert!(!list.text.contains(key_text), "{}", list.text);
    }
}

#[tokio::test]
async fn generated_keys_differ_and_null_means_generate() {
    let app = spawn_app().await;
    let a = enrol(&app, "", &app.write_token, "a", json!("TOTP_WITHOUT_PRICE")).await;
    let reply = app
        .post(
            "/instances/admin/private/otp-devices",
            &json!({"otp_device_id": "b", "otp_device_description": "b", "otp_key": null, "otp_algorithm": 1}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    let b = reply.json;
    check_enrolment(&a, Algorithm::TotpWithoutPrice);
    check_enrolment(&b, Algorithm::TotpWithoutPrice);
    assert_ne!(a["otp_key"], b["otp_key"]);
    assert_ne!(a["qr_code_png"], b["qr_code_png"]);
}

#[tokio::test]
async fn a_repeat_is_a_conflict_and_keeps_the_first_key() {
    let app = spawn_app().await;
    let first = enrol(&app, "", &app.write_token, "till", json!(3)).await;
    let (uri, key) = check_enrolment(&first, Algorithm::HotpWithoutPrice);
    let repeat = app
        .post(
            "/private/otp-devices",
            &json!({"otp_device_id": "till", "otp_device_description": "device till", "otp_algorithm": 3}),
        )
        .await;
    assert_taler_error(&repeat, StatusCode::CONFLICT, 2851);
    assert!(!repeat.text.contains("otpauth"), "{}", repeat.text);
    let one = app.get("/private/otp-devices/till").await;
    let expected = otp_algo::confirmation(
        &key,
        Algorithm::HotpWithoutPrice,
        None,
        0,
        uri.counter.unwrap_or(0),
    );
    assert_eq!(one.json["otp_code"].as_str(), expected.as_deref());
}

#[tokio::test]
async fn algorithm_none_without_a_key_is_400_and_stores_nothing() {
    let app = spawn_app().await;
    for body in [
        json!({"otp_device_id": "n", "otp_device_description": "n", "otp_algorithm": 0}),
        json!({"otp_device_id": "n", "otp_device_description": "n", "otp_algorithm": "NONE", "otp_key": null}),
    ] {
        let reply = app.post("/private/otp-devices", &body).await;
        assert_taler_error(&reply, StatusCode::BAD_REQUEST, 25);
        assert!(
            reply.json["detail"]
                .as_str()
                .unwrap_or_default()
                .starts_with("otp_key"),
            "{}",
            reply.text
        );
    }
    assert_eq!(
        app.get("/private/otp-devices").await.json,
        json!({"otp_devices": []})
    );
    // With a key, NONE is stored as before (204).
    app.add_device("n", otp_tests::RFC_KEY, json!(0)).await;
}

#[tokio::test]
async fn a_given_key_still_answers_204_without_a_body() {
    let app = spawn_app().await;
    let body = json!({"otp_device_id": "k", "otp_device_description": "k", "otp_key": otp_tests::RFC_KEY, "otp_algorithm": 1});
    let reply = app.post("/private/otp-devices", &body).await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
    assert!(reply.text.is_empty());
}

#[tokio::test]
async fn issuer_and_device_id_are_percent_encoded_and_the_id_stands_in_for_a_missing_name() {
    let app = spawn_app().await;
    let token = app.new_instance("shop", "Café & Co Zürich").await;
    let answer = enrol(
        &app,
        "/instances/shop",
        &token,
        "Till 1 ü+%~",
        json!("TOTP_WITH_PRICE"),
    )
    .await;
    let (uri, _) = check_enrolment(&answer, Algorithm::TotpWithPrice);
    assert_eq!(
        uri.label,
        "Caf%C3%A9%20%26%20Co%20Z%C3%BCrich:Till%201%20%C3%BC%2B%25~"
    );
    assert_eq!(uri.issuer, "Café & Co Zürich");
    let raw = answer["otp_uri"].as_str().expect("uri");
    assert!(
        raw.contains("&issuer=Caf%C3%A9%20%26%20Co%20Z%C3%BCrich&"),
        "{raw}"
    );
    assert!(!raw.contains('+') && !raw.contains(' '), "{raw}");

    let token = app.new_instance("nameless", "").await;
    let answer = enrol(&app, "/instances/nameless", &token, "d", json!(1)).await;
    let (uri, _) = check_enrolment(&answer, Algorithm::TotpWithoutPrice);
    assert_eq!(uri.label, "nameless:d");
    assert_eq!(uri.issuer, "nameless");
}

#[tokio::test]
async fn the_enrolment_answer_matches_the_openapi_document() {
    let app = spawn_app().await;
    let doc = app.openapi().await;
    let post = &doc["paths"]["/private/otp-devices"]["post"];
    assert_eq!(
        post["responses"]["200"]["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/OtpDeviceEnrolment"
    );
    let add = &doc["components"]["schemas"]["OtpDeviceAddDetails"];
    let required: Vec<&str> = add["required"]
        .as_array()
        .expect("required")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(!required.contains(&"otp_key"), "{required:?}");
    let answer = enrol(&app, "", &app.write_token, "v", json!(1)).await;
    for (name, instance) in [
        ("OtpDeviceEnrolment", answer),
        (
            "OtpDeviceAddDetails",
            json!({"otp_device_id": "a", "otp_device_description": "d", "otp_algorithm": 1}),
        ),
        (
            "OtpDeviceAddDetails",
            json!({"otp_device_id": "a", "otp_device_description": "d", "otp_key": null, "otp_algorithm": 1}),
        ),
    ] {
        assert_valid(&doc, name, &instance);
    }
}

#[tokio::test]
async fn a_readonly_token_cannot_enrol() {
    let app = spawn_app().await;
    let body = json!({"otp_device_id": "r", "otp_device_description": "r", "otp_algorithm": 1});
    let reply = app
        .post_as(&app.read_token, "/private/otp-devices", &body)
        .await;
    assert_taler_error(&reply, StatusCode::FORBIDDEN, 16);
    assert!(!reply.text.contains("otpauth"));
}
