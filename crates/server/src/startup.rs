//! `Application`: builds the HTTP server exactly as `taler-otp serve` runs it — state, caches,
//! change listener, middleware, routes, listener — so tests start the real thing on port 0.

use std::cell::Cell;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{Server, ServerHandle, Service, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderName, HeaderValue};
use actix_web::{App, HttpResponse, HttpServer, ResponseError, web};
use otp_store::{Store, StoreConfig, changes, migrate};
use tracing::Instrument;
use utoipa_swagger_ui::SwaggerUi;

use crate::config::{Listen, Settings};
use crate::error::{ApiError, ErrorDetail, error_chain};
use crate::state::AppState;
use crate::{body, openapi, routes, taler_ec, version};

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// The database could not be reached.
    #[error("database unreachable: {0}")]
    DatabaseUnreachable(String),
    /// The schema is older (or newer) than this binary's.
    #[error(
        "database schema is at version {current} but this binary needs version {latest}: run `taler-otp dbinit` first"
    )]
    SchemaOutdated {
        /// Version in the database.
        current: i32,
        /// Version this binary needs.
        latest: i32,
    },
    /// The schema is newer than this binary's.
    #[error(
        "database schema version {current} is newer than this binary's ({latest}): upgrade taler-otp"
    )]
    SchemaTooNew {
        /// Version in the database.
        current: i32,
        /// Version this binary knows.
        latest: i32,
    },
    /// Binding the listener failed.
    #[error("cannot listen on {0}")]
    Bind(String),
    /// Any other store failure.
    #[error("database error: {0}")]
    Store(String),
}

/// A built, not yet running, server.
pub struct Application {
    server: Server,
    in_flight: Arc<AtomicUsize>,
    port: Option<u16>,
    change_listener: Option<tokio::task::JoinHandle<()>>,
}

/// How long a stop waits for requests in flight.
const SHUTDOWN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

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

/// Resolves on SIGINT or SIGTERM (or never, if the handlers cannot be installed).
async fn wait_for_stop_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            tracing::warn!("cannot install signal handlers; stop the server by other means");
            std::future::pending::<()>().await;
        }
    }
}

/// The request-id header, read from clients (when well-formed) and echoed back.
const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

impl Application {
    /// Builds the server over the database at `store_config`, checking the schema first.
    pub async fn build(
        settings: &Settings,
        store_config: &StoreConfig,
    ) -> Result<Application, StartupError> {
        // The schema check's connection is closed with its pool: the workers open their own.
        let checker =
            Store::connect(store_config).map_err(|err| StartupError::Store(error_chain(&err)))?;
        check_schema(&checker).await?;
        drop(checker);
        let store =
            Store::connect(store_config).map_err(|err| StartupError::Store(error_chain(&err)))?;
        let state = web::Data::new(AppState::new(
            store,
            settings.default_instance.clone(),
            version::config_response(&settings.currency),
            settings.cache_ttl,
        ));
        let change_listener = if settings.cache_ttl.is_zero() {
            None
        } else {
            spawn_change_listener(store_config, state.clone()).await
        };
        let doc = openapi::api_doc();
        let app_state = state.clone();
        let worker_store_config = worker_store_config(store_config, settings.workers);
        let currency = settings.currency.clone();
        let benchmark_route = settings.benchmark_route;
        let in_flight_requests = Arc::new(AtomicUsize::new(0));
        let in_flight_counter = in_flight_requests.clone();
        let server = HttpServer::new(move || {
            let in_flight = in_flight_counter.clone();
            // Each worker gets its own pool: a connection's I/O then runs on the thread whose
            // request waits for it, instead of waking another worker for every query.
            let worker_state = worker_store_config
                .as_ref()
                .and_then(|config| Store::connect(config).ok())
                .map(|store| {
                    web::Data::new(
                        app_state.sharing_caches(store, version::config_response(&currency)),
                    )
                })
                .unwrap_or_else(|| app_state.clone());
            App::new()
                .app_data(worker_state)
                .app_data(body::payload_config())
                .wrap_fn(move |req, srv| {
                    let in_flight = InFlight::enter(&in_flight);
                    let started = Instant::now();
                    let request_id = request_id(req.headers().get(&REQUEST_ID));
                    let method = req.method().to_string();
                    let span = tracing::info_span!("request", id = %request_id, %method);
                    let fut = srv.call(req);
                    async move {
                        let mut res = fut.await.map(taler_error_body)?;
                        let status = res.status().as_u16();
                        // The API's resources carry their pattern; matching the path against
                        // the resource map again is left to the rare others (docs, 404s).
                        let matched;
                        let route = match res.request().app_data::<routes::RoutePattern>() {
                            Some(pattern) => pattern.0.as_str(),
                            None => {
                                matched = res.request().match_pattern();
                                matched.as_deref().unwrap_or("(unmatched)")
                            }
                        };
                        tracing::info!(
                            route,
                            status,
                            latency_us = started.elapsed().as_micros() as u64,
                            "served"
                        );
                        if let Ok(value) = HeaderValue::from_str(&request_id) {
                            res.headers_mut().insert(REQUEST_ID, value);
                        }
                        drop(in_flight);
                        Ok(res)
                    }
                    .instrument(span)
                })
                // First, so that the ceiling it measures includes none of the API's routing.
                .configure(|cfg| {
                    if benchmark_route {
                        routes::bench::configure(cfg);
                    }
                })
                .configure(routes::configure)
                .service(web::redirect("/docs", "/docs/"))
                .service(SwaggerUi::new("/docs/{_:.*}").url("/openapi.json", doc.clone()))
                .default_service(web::to(routes::endpoint_unknown))
        })
        .workers(settings.workers)
        // `run_until_stopped` handles SIGINT/SIGTERM itself, waiting for in-flight requests.
        .disable_signals()
        .shutdown_timeout(SHUTDOWN_TIMEOUT.as_secs());
        let (server, port) = match &settings.listen {
            Listen::Tcp { bind_to, port } => {
                let server = server
                    .bind((bind_to.as_str(), *port))
                    .map_err(|err| StartupError::Bind(format!("{bind_to}:{port}: {err}")))?;
                let port = server.addrs().first().map(|a| a.port());
                (server, port)
            }
            Listen::Unix { path, mode } => {
                let _ = std::fs::remove_file(path);
                let server = server
                    .bind_uds(path)
                    .map_err(|err| StartupError::Bind(format!("{}: {err}", path.display())))?;
                set_mode(path, *mode)
                    .map_err(|err| StartupError::Bind(format!("{}: {err}", path.display())))?;
                (server, None)
            }
        };
        Ok(Application {
            server: server.run(),
            in_flight: in_flight_requests,
            port,
            change_listener,
        })
    }

    /// The TCP port the server listens on (`None` for a UNIX socket).
    pub fn port(&self) -> Option<u16> {
        self.port
    }

    /// A handle to stop the server gracefully.
    pub fn handle(&self) -> ServerHandle {
        self.server.handle()
    }

    /// Serves until SIGINT/SIGTERM (or `handle().stop(true)`); in-flight requests finish first.
    /// On SIGINT or SIGTERM the server stops accepting connections, lets the requests in flight
    /// finish (up to 10 s), then stops. The change listener stops with the server, before the
    /// database may go away.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let handle = self.server.handle();
        let in_flight = self.in_flight.clone();
        let signals = tokio::spawn(async move {
            wait_for_stop_signal().await;
            tracing::info!("stop signal received: finishing the requests in flight");
            handle.pause().await;
            let deadline = Instant::now() + SHUTDOWN_TIMEOUT;
            while in_flight.load(Ordering::Acquire) > 0 && Instant::now() < deadline {
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
            handle.stop(true).await;
        });
        let result = self.server.await;
        signals.abort();
        if let Some(listener) = self.change_listener {
            listener.abort();
        }
        result
    }
}

/// The configuration of one worker's pool: `POOL_SIZE` split evenly between the workers, or
/// `None` (one pool for all) when there are fewer connections than workers.
fn worker_store_config(store_config: &StoreConfig, workers: usize) -> Option<StoreConfig> {
    let per_worker = store_config.pool_size / workers.max(1);
    (per_worker >= 1).then(|| {
        let mut config = store_config.clone();
        config.pool_size = per_worker;
        config
    })
}

async fn check_schema(store: &Store) -> Result<(), StartupError> {
    let status = migrate::status(store).await.map_err(|err| {
        if err.is_unavailable() {
            StartupError::DatabaseUnreachable(error_chain(&err))
        } else {
            StartupError::Store(error_chain(&err))
        }
    })?;
    if status.current < status.latest {
        return Err(StartupError::SchemaOutdated {
            current: status.current,
            latest: status.latest,
        });
    }
    if status.current > status.latest {
        return Err(StartupError::SchemaTooNew {
            current: status.current,
            latest: status.latest,
        });
    }
    Ok(())
}

async fn spawn_change_listener(
    store_config: &StoreConfig,
    state: web::Data<AppState>,
) -> Option<tokio::task::JoinHandle<()>> {
    match changes::subscribe(store_config).await {
        Ok(mut receiver) => Some(tokio::spawn(async move {
            while let Some(change) = receiver.recv().await {
                state.apply_change(&change);
            }
        })),
        Err(err) => {
            tracing::warn!(error = %error_chain(&err), "change notifications unavailable; caches rely on their age bound");
            None
        }
    }
}

fn set_mode(path: &std::path::Path, mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
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
    fn the_pool_is_split_between_the_workers() {
        let mut config = StoreConfig::new("postgres:///x");
        config.pool_size = 16;
        assert_eq!(
            worker_store_config(&config, 2).map(|c| c.pool_size),
            Some(8)
        );
        assert_eq!(
            worker_store_config(&config, 1).map(|c| c.pool_size),
            Some(16)
        );
        assert_eq!(
            worker_store_config(&config, 3).map(|c| c.pool_size),
            Some(5)
        );
        config.pool_size = 1;
        assert!(
            worker_store_config(&config, 2).is_none(),
            "more connections than POOL_SIZE"
        );
    }

    #[test]
    fn well_formed_client_request_ids_are_kept() {
        let value = HeaderValue::from_static("abc-123");
        assert_eq!(request_id(Some(&value)), "abc-123");
        let bad = HeaderValue::from_static("a b");
        assert_eq!(request_id(Some(&bad)).len(), 32);
    }
}
