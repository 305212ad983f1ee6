//! Middleware every request passes through, outermost first: in-flight counting (for a graceful
//! stop), the request id (read from `X-Request-Id` when well-formed, else generated, and echoed
//! back), the request log line (route pattern, status, latency; never headers or bodies), the
//! request metrics (when `[otp] METRICS` is on), the audit actor (the client's address, for the
//! audited writes the request makes), the connection's number (so that batched writes know a
//! client coming straight back, `otp_store::from_connection`), the safety net that gives every framework error a
//! Taler error body, and `Connection: close` on error answers to requests with a body.

use std::cell::Cell;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{Extensions, Service, ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderName, HeaderValue};
use actix_web::http::{ConnectionType, StatusCode};
use actix_web::{Error, HttpResponse, ResponseError, web};
use tracing::Instrument;

use crate::error::{ApiError, ErrorDetail};
use crate::metrics::Metrics;
use crate::{body, routes, taler_ec};

/// The request-id header, read from clients (when well-formed) and echoed back.
const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The number of a client connection, unique within the server process and never 0.
#[derive(Clone, Copy, Debug)]
pub struct ConnectionNumber(pub u64);

/// Numbers a new connection (`HttpServer::on_connect`): its requests' batched writes then know
/// which connection they came on (`otp_store::from_connection`).
pub fn number_connection(_connection: &dyn std::any::Any, data: &mut Extensions) {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    data.insert(ConnectionNumber(NEXT.fetch_add(1, Ordering::Relaxed)));
}

/// Serves `req` through `srv` inside the request's span: counts it in flight, logs one line
/// when it is answered, sets the request id, and applies the Taler error-body safety net.
pub fn observe<S, B>(
    req: ServiceRequest,
    srv: &S,
    in_flight: &Arc<AtomicUsize>,
) -> impl Future<Output = Result<ServiceResponse<BoxBody>, Error>> + use<S, B>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error>,
    B: MessageBody + 'static,
{
    let in_flight = InFlight::enter(in_flight);
    let started = Instant::now();
    let request_id = request_id(req.headers().get(&REQUEST_ID));
    let method = req.method().to_string();
    let span = tracing::info_span!("request", id = %request_id, %method);
    // The audited writes of the request record its client (and, once known, its token).
    let client = req.peer_addr().map(|addr| addr.ip());
    let with_body = declares_body(req.headers());
    let connection = req
        .conn_data::<ConnectionNumber>()
        .map_or(0, |number| number.0);
    let fut = otp_store::audit::acting(
        client,
        otp_store::from_connection(connection, srv.call(req)),
    );
    async move {
        let mut res = fut.await.map(taler_error_body)?;
        if with_body && (res.status().is_client_error() || res.status().is_server_error()) {
            // Refused before its body was read (an unknown token, a database away): the server
            // closes the connection rather than read the body, so it says so, and the client
            // sends its next request on a new connection instead of into a closed one.
            res.response_mut()
                .head_mut()
                .set_connection_type(ConnectionType::Close);
        }
        let status = res.status().as_u16();
        // The API's resources carry their pattern; matching the path against the resource map
        // again is left to the rare others (docs, 404s).
        let matched;
        let route = match res.request().app_data::<routes::RoutePattern>() {
            Some(pattern) => pattern.0.as_str(),
            None => {
                matched = res.request().match_pattern();
                matched.as_deref().unwrap_or("(unmatched)")
            }
        };
        let latency = started.elapsed();
        tracing::info!(
            route,
            status,
            latency_us = latency.as_micros() as u64,
            "served"
        );
        if let Some(metrics) = res.request().app_data::<web::Data<Metrics>>() {
            metrics.record_request(route, res.request().method(), status, latency);
        }
        if let Ok(value) = HeaderValue::from_str(&request_id) {
            res.headers_mut().insert(REQUEST_ID, value);
        }
        drop(in_flight);
        Ok(res)
    }
    .instrument(span)
}

/// Whether the request comes with a body (a non-zero `Content-Length`, or chunked).
fn declares_body(headers: &header::HeaderMap) -> bool {
    headers.contains_key(header::TRANSFER_ENCODING)
        || headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim() != "0")
}

/// Counts a request as in flight until dropped (also when the request is cancelled).
struct InFlight(Arc<AtomicUsize>);

impl InFlight {
    fn enter(counter: &Arc<AtomicUsize>) -> InFlight {
        counter.fetch_add(1, Ordering::AcqRel);
        InFlight(counter.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

fn request_id(header: Option<&HeaderValue>) -> String {
    header
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            !v.is_empty()
                && v.len() <= 64
                && v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
        .map(str::to_owned)
        .unwrap_or_else(new_request_id)
}

thread_local! {
    /// Per-thread SplitMix64 state behind request ids, seeded once from the OS.
    static REQUEST_ID_STATE: Cell<u64> = Cell::new(seed());
}

fn seed() -> u64 {
    let (high, low) = uuid::Uuid::new_v4().as_u64_pair();
    high ^ low
}

/// A fresh request id: a random (version 4) UUID in its 32-digit form. Ids need to be unique,
/// not secret, so they come from a per-thread generator seeded once instead of a system call
/// per request.
fn new_request_id() -> String {
    let mut bytes = [0u8; 16];
    REQUEST_ID_STATE.with(|state| {
        for half in bytes.chunks_exact_mut(8) {
            let next = splitmix64(state);
            half.copy_from_slice(&next.to_le_bytes());
        }
    });
    let id = uuid::Builder::from_random_bytes(bytes).into_uuid();
    id.simple()
        .encode_lower(&mut uuid::Uuid::encode_buffer())
        .to_owned()
}

fn splitmix64(state: &Cell<u64>) -> u64 {
    let next = state.get().wrapping_add(0x9E37_79B9_7F4A_7C15);
    state.set(next);
    let mut z = next;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Safety net: any error answer that is not already a Taler JSON body (a framework error) gets one.
fn taler_error_body<B: MessageBody + 'static>(res: ServiceResponse<B>) -> ServiceResponse<BoxBody> {
    let status = res.status();
    let is_json = res
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return res.map_into_boxed_body();
    }
    let response = match status {
        StatusCode::NOT_FOUND => ApiError::EndpointUnknown.error_response(),
        StatusCode::METHOD_NOT_ALLOWED => ApiError::MethodInvalid.error_response(),
        StatusCode::PAYLOAD_TOO_LARGE => {
            ApiError::PayloadTooLarge(body::MAX_BODY_BYTES).error_response()
        }
        StatusCode::URI_TOO_LONG => ApiError::UriTooLong.error_response(),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => {
            ApiError::UnsupportedMediaType("content-type: unsupported".into()).error_response()
        }
        status => {
            let code = if status.is_client_error() {
                taler_ec::GENERIC_PARAMETER_MALFORMED
            } else {
                taler_ec::GENERIC_INTERNAL_INVARIANT_FAILURE
            };
            let hint = status
                .canonical_reason()
                .unwrap_or("request failed")
                .to_owned();
            HttpResponse::build(status).json(ErrorDetail {
                code,
                hint,
                detail: None,
            })
        }
    };
    let (req, _) = res.into_parts();
    ServiceResponse::new(req, response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_request_ids_are_distinct_v4_uuids() {
        let ids: std::collections::HashSet<String> = (0..1000).map(|_| new_request_id()).collect();
        assert_eq!(ids.len(), 1000);
        for id in &ids {
            let uuid = uuid::Uuid::parse_str(id).unwrap();
            assert_eq!(uuid.get_version_num(), 4, "{id}");
            assert_eq!(id.len(), 32);
            assert!(
                id.bytes()
                    .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
            );
        }
    }

    #[test]
    fn well_formed_client_request_ids_are_kept() {
        let value = HeaderValue::from_static("abc-123");
        assert_eq!(request_id(Some(&value)), "abc-123");
        let bad = HeaderValue::from_static("a b");
        assert_eq!(request_id(Some(&bad)).len(), 32);
    }
}
