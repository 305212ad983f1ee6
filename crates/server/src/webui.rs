//! The operator page: `GET /webui/`, a self-contained HTML page with one script and one style
//! sheet, embedded in the binary (API contract §13).
//!
//! The page signs in with an access token or the instance's password (`POST …/private/token`),
//! lists, adds, edits and deletes the instance's OTP devices, shows a device's live code and
//! verifies typed codes, all through the same HTTP API that every other client uses. Loading
//! the page needs no authentication; the calls it makes carry the token.
//!
//! **Invariants:** the page loads nothing from other hosts; every answer under `/webui`
//! (the assets, the redirect, the 404 and 405 errors) carries [`CONTENT_SECURITY_POLICY`],
//! whose sources contain no `*`, no `'unsafe-eval'` and no `'unsafe-inline'`, and the other
//! [`SECURITY_HEADERS`]; the assets are never cached (`Cache-Control: no-store`), so a new binary
//! serves its own page at once.

use actix_web::http::header;
use actix_web::middleware::DefaultHeaders;
use actix_web::{HttpResponse, web};

use crate::error::ApiError;
use crate::routes::RoutePattern;

/// The page's HTML (`GET /webui/`).
pub const INDEX_HTML: &str = include_str!("../webui/index.html");

/// The page's script (`GET /webui/app.js`): vanilla ES2020, no framework, no build step.
pub const APP_JS: &str = include_str!("../webui/app.js");

/// The page's style sheet (`GET /webui/style.css`).
pub const STYLE_CSS: &str = include_str!("../webui/style.css");

/// The path prefix of the page and its assets.
pub const PREFIX: &str = "/webui";

/// The `Content-Security-Policy` of every answer under `/webui`.
///
/// Scripts and styles come from the page's own origin only (no inline script, no inline event
/// handler, no `eval`); images may also be `data:` URIs (the enrolment's PNG QR code); the API
/// is called on the same origin; the page cannot be framed, cannot submit a form anywhere
/// (the script handles every form), and DOM injection sinks are refused (Trusted Types, no
/// policy: the script builds its DOM with `textContent` only).
pub const CONTENT_SECURITY_POLICY: &str = concat!(
    "default-src 'self'; ",
    "script-src 'self'; ",
    "style-src 'self'; ",
    "img-src 'self' data:; ",
    "connect-src 'self'; ",
    "font-src 'self'; ",
    "object-src 'none'; ",
    "base-uri 'none'; ",
    "form-action 'none'; ",
    "frame-ancestors 'none'; ",
    "require-trusted-types-for 'script'; ",
    "trusted-types 'none'"
);

/// The headers every answer under `/webui` carries, the policy first.
pub const SECURITY_HEADERS: [(&str, &str); 8] = [
    ("content-security-policy", CONTENT_SECURITY_POLICY),
    ("x-content-type-options", "nosniff"),
    ("referrer-policy", "no-referrer"),
    ("x-frame-options", "DENY"),
    ("cross-origin-opener-policy", "same-origin"),
    ("cross-origin-resource-policy", "same-origin"),
    (
        "permissions-policy",
        "camera=(), microphone=(), geolocation=(), payment=()",
    ),
    ("cache-control", "no-store"),
];

/// Registers the page on `cfg`: `GET /webui` (308 to `/webui/`), `GET /webui/`,
/// `GET /webui/app.js` and `GET /webui/style.css` (each also for `HEAD`). Other paths under
/// `/webui/` answer 404 (code 21) and other methods 405 (code 20), with the same headers.
pub fn configure(cfg: &mut web::ServiceConfig) {
    let mut headers = DefaultHeaders::new();
    for pair in SECURITY_HEADERS {
        headers = headers.add(pair);
    }
    cfg.service(
        web::scope(PREFIX)
            .wrap(headers)
            .app_data(RoutePattern(format!("{PREFIX}/{{tail:.*}}")))
            .service(asset("", redirect_to_index))
            .service(asset("/", index))
            .service(asset("/app.js", app_js))
            .service(asset("/style.css", style_css))
            .default_service(web::to(endpoint_unknown)),
    );
}

/// A resource at `path` under the prefix, answering `GET` and `HEAD` with `handler`.
fn asset<F>(path: &str, handler: F) -> actix_web::Resource
where
    F: actix_web::Handler<()>,
    F::Output: actix_web::Responder + 'static,
{
    web::resource(path)
        .app_data(RoutePattern(format!("{PREFIX}{path}")))
        .route(web::get().to(handler.clone()))
        .route(web::head().to(handler))
        .default_service(web::to(method_invalid))
}

/// `GET /webui` → 308 to `/webui/`, where the page's relative asset paths resolve.
async fn redirect_to_index() -> HttpResponse {
    HttpResponse::PermanentRedirect()
        .insert_header((header::LOCATION, "/webui/"))
        .finish()
}

/// `GET /webui/`: the page.
async fn index() -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, "text/html; charset=utf-8"))
        .body(INDEX_HTML)
}

/// `GET /webui/app.js`: the script.
async fn app_js() -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, "text/javascript; charset=utf-8"))
        .body(APP_JS)
}

/// `GET /webui/style.css`: the style sheet.
async fn style_css() -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, "text/css; charset=utf-8"))
        .body(STYLE_CSS)
}

/// Any other path under `/webui/`: 404, code 21.
async fn endpoint_unknown() -> Result<HttpResponse, ApiError> {
    Err(ApiError::EndpointUnknown)
}

/// A method other than `GET` or `HEAD` on an asset: 405, code 20.
async fn method_invalid() -> Result<HttpResponse, ApiError> {
    Err(ApiError::MethodInvalid)
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::body::MessageBody;
    use actix_web::dev::ServiceResponse;
    use actix_web::http::{Method, StatusCode};
    use actix_web::{App, test as actix_test};

    /// Sends `method path` to an app with only the page configured.
    async fn call(method: Method, path: &str) -> ServiceResponse {
        let app = actix_test::init_service(App::new().configure(configure)).await;
        let req = actix_test::TestRequest::default()
            .method(method)
            .uri(path)
            .to_request();
        actix_test::call_service(&app, req).await
    }

    fn header_of<'a>(res: &'a ServiceResponse, name: &str) -> &'a str {
        res.headers()
            .get(name)
            .unwrap_or_else(|| panic!("{} has no {name}", res.request().path()))
            .to_str()
            .unwrap()
    }

    /// Every security header is present with its value, and the policy is strict.
    fn assert_secured(res: &ServiceResponse) {
        for (name, value) in SECURITY_HEADERS {
            assert_eq!(header_of(res, name), value, "{name}");
        }
        let csp = header_of(res, "content-security-policy");
        assert!(!csp.contains('*'), "{csp}");
        assert!(!csp.contains("unsafe-eval"), "{csp}");
        assert!(!csp.contains("unsafe-inline"), "{csp}");
        let directives: Vec<&str> = csp.split(';').map(str::trim).collect();
        for wanted in [
            "default-src 'self'",
            "script-src 'self'",
            "img-src 'self' data:",
            "frame-ancestors 'none'",
        ] {
            assert!(directives.contains(&wanted), "{wanted} missing in {csp}");
        }
    }

    #[actix_web::test]
    async fn assets_are_served_with_their_types() {
        for (path, content_type, body) in [
            ("/webui/", "text/html; charset=utf-8", INDEX_HTML),
            ("/webui/app.js", "text/javascript; charset=utf-8", APP_JS),
            ("/webui/style.css", "text/css; charset=utf-8", STYLE_CSS),
        ] {
            let res = call(Method::GET, path).await;
            assert_eq!(res.status(), StatusCode::OK, "{path}");
            assert_eq!(header_of(&res, "content-type"), content_type, "{path}");
            assert_secured(&res);
            let served = res.into_body().try_into_bytes().unwrap();
            assert_eq!(served, body.as_bytes(), "{path}");
        }
    }

    #[actix_web::test]
    async fn head_is_answered_too() {
        for path in ["/webui/", "/webui/app.js", "/webui/style.css"] {
            let res = call(Method::HEAD, path).await;
            assert_eq!(res.status(), StatusCode::OK, "{path}");
            assert_secured(&res);
        }
    }

    #[actix_web::test]
    async fn bare_prefix_redirects_to_the_page() {
        let res = call(Method::GET, "/webui").await;
        assert_eq!(res.status(), StatusCode::PERMANENT_REDIRECT);
        assert_eq!(header_of(&res, "location"), "/webui/");
        assert_secured(&res);
    }

    #[actix_web::test]
    async fn errors_under_the_prefix_are_secured_taler_errors() {
        let cases: [(Method, &str, StatusCode, i64); 4] = [
            (Method::GET, "/webui/nothing.js", StatusCode::NOT_FOUND, 21),
            (Method::GET, "/webui/app.js/x", StatusCode::NOT_FOUND, 21),
            (Method::POST, "/webui/", StatusCode::METHOD_NOT_ALLOWED, 20),
            (
                Method::DELETE,
                "/webui/app.js",
                StatusCode::METHOD_NOT_ALLOWED,
                20,
            ),
        ];
        for (method, path, status, code) in cases {
            let res = call(method, path).await;
            assert_eq!(res.status(), status, "{path}");
            assert_secured(&res);
            let body = res.into_body().try_into_bytes().unwrap();
            let value: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(value["code"], code, "{path}");
        }
    }

    #[test]
    fn page_loads_nothing_inline_or_from_elsewhere() {
        let html = INDEX_HTML.to_ascii_lowercase();
        assert!(html.contains("<title>taler-otp</title>"));
        assert!(html.contains(r#"<script src="app.js" defer></script>"#));
        assert!(html.contains(r#"<link rel="stylesheet" href="style.css">"#));
        // The one script element is the external one; no inline handler or style.
        assert_eq!(html.matches("<script").count(), 1);
        assert!(!html.contains("<style"));
        assert!(!html.contains(" style="));
        assert!(!html.contains(" onclick="));
        assert!(!html.contains(" onsubmit="));
        for text in [INDEX_HTML, APP_JS, STYLE_CSS] {
            assert!(!text.contains("http://"));
            assert!(!text.contains("//cdn"));
            assert!(!text.contains("@import"));
        }
        assert!(!APP_JS.contains("innerHTML"));
        assert!(!APP_JS.contains("eval("));
    }
}
