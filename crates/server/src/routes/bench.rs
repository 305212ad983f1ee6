//! Benchmarks only: `GET /bench/constant`, the ceiling of the load benchmark (`contrib/loadtest.sh`).
//!
//! Registered only when `[otp] BENCHMARK_ROUTE = yes`; otherwise the path does not exist
//! (404, code 21). It answers a constant JSON body shaped and sized like a typical answer of
//! `GET …/otp-devices/$ID` with an `otp_code`, without authentication and without the database,
//! so it measures what the HTTP stack, the middleware and the client cost on their own.

use actix_web::http::header::{CONTENT_TYPE, HeaderValue};
use actix_web::{HttpResponse, web};

use crate::routes::RoutePattern;

/// The path of the constant route.
pub const PATH: &str = "/bench/constant";

/// The constant body: a TOTP device's answer with its five codes (the benchmark's device
/// descriptions have this length).
pub const BODY: &str = concat!(
    r#"{"device_description":"bench device a1-0000","otp_algorithm":1,"otp_ctr":0,"#,
    r#""otp_timestamp":1700000000,"otp_code":"#,
    r#""12345678\n23456789\n34567890\n45678901\n56789012"}"#
);

/// Registers `GET /bench/constant` on `cfg`.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource(PATH)
            .app_data(RoutePattern(PATH.to_owned()))
            .route(web::get().to(constant)),
    );
}

/// Answers the constant body.
async fn constant() -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((CONTENT_TYPE, HeaderValue::from_static("application/json")))
        .body(BODY)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_is_json_shaped_like_get_one() {
        let value: serde_json::Value = serde_json::from_str(BODY).unwrap();
        for field in [
            "device_description",
            "otp_algorithm",
            "otp_ctr",
            "otp_timestamp",
            "otp_code",
        ] {
            assert!(value.get(field).is_some(), "{field}");
        }
    }
}
