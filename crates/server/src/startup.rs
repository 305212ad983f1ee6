//! `Application`: builds the HTTP server exactly as `taler-otp serve` runs it — state, caches,
//! change listener, middleware, routes, listener — so tests start the real thing on port 0.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use actix_web::dev::{Server, ServerHandle};
use actix_web::{App, HttpServer, web};
use otp_store::{Store, StoreConfig, changes, migrate};
use utoipa_swagger_ui::SwaggerUi;

use crate::config::{Listen, Settings};
use crate::error::error_chain;
use crate::login_throttle::LoginGuard;
use crate::metrics::{self, Metrics};
use crate::state::AppState;
use crate::{body, middleware, openapi, routes, version, webui};

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
    /// The key-encryption key does not fit the database's device keys, or keys are stored in
    /// plaintext beside one (one line naming the problem and the remedy).
    #[error("{0}")]
    Keys(String),
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

impl Application {
    /// Builds the server over the database at `store_config`, checking the schema first.
    pub async fn build(
        settings: &Settings,
        store_config: &StoreConfig,
    ) -> Result<Application, StartupError> {
        let store_config = &crate::database::with_timeouts(settings, store_config);
        // The schema check's connection is closed with its pool: the workers open their own.
        let checker =
            Store::connect(store_config).map_err(|err| StartupError::Store(error_chain(&err)))?;
        check_schema(&checker).await?;
        crate::keys_at_rest::check(&checker, settings.accept_plaintext_keys)
            .await
            .map_err(|err| match err {
                err @ otp_store::StoreError::KeyMismatch(_) => {
                    StartupError::Keys(crate::keys_at_rest::explain(&err))
                }
                err if err.is_unavailable() => StartupError::DatabaseUnreachable(error_chain(&err)),
                err => StartupError::Store(error_chain(&err)),
            })?;
        drop(checker);
        let store =
            Store::connect(store_config).map_err(|err| StartupError::Store(error_chain(&err)))?;
        let metrics = settings.metrics.then(|| web::Data::new(Metrics::new()));
        // The workers' pools are the ones in use; this one only when they cannot have their own.
        let store_in_use = worker_store_config(store_config, settings.workers).is_none();
        let store = metrics::observed(metrics.as_ref(), store, store_in_use);
        let mut state = AppState::new(
            store,
            settings.default_instance.clone(),
            version::config_response(settings),
            settings.cache_ttl,
        );
        state.verify = settings.verify.into();
        let state = web::Data::new(state);

        let change_listener = if settings.cache_ttl.is_zero() {
            None
        } else {
            spawn_change_listener(store_config, state.clone()).await
        };
        let doc = openapi::api_doc();
        let app_state = state.clone();
        let worker_store_config = worker_store_config(store_config, settings.workers);
        let config_answer = version::config_response(settings);
        let benchmark_route = settings.benchmark_route;
        // One failed-login throttle and one bound on password checks for all workers.
        let login_guard = web::Data::new(LoginGuard::new(settings.login_max_failures));
        let in_flight_requests = Arc::new(AtomicUsize::new(0));
        let in_flight_counter = in_flight_requests.clone();
        if let Some(metrics) = &metrics {
            metrics.watch_state(state.clone());
            metrics.watch_in_flight(in_flight_requests.clone());
        }
        let server = HttpServer::new(move || {
            let in_flight = in_flight_counter.clone();
            // Each worker gets its own pool: a connection's I/O then runs on the thread whose
            // request waits for it, instead of waking another worker for every query.
            let worker_state = worker_store_config
                .as_ref()
                .and_then(|config| Store::connect(config).ok())
                .map(|store| metrics::observed(metrics.as_ref(), store, true))
                .map(|store| web::Data::new(app_state.sharing_caches(store, config_answer.clone())))
                .unwrap_or_else(|| app_state.clone());
            App::new()
                .app_data(worker_state)
                .app_data(body::payload_config())
                .app_data(login_guard.clone())
                .wrap_fn(move |req, srv| middleware::observe(req, srv, &in_flight))
                // First, so that the ceiling it measures includes none of the API's routing.
                .configure(|cfg| {
                    if benchmark_route {
                        routes::bench::configure(cfg);
                    }
                })
                .configure(|cfg| {
                    if let Some(metrics) = &metrics {
                        cfg.app_data(metrics.clone());
                        routes::operations::configure_metrics(cfg);
                    }
                })
                .configure(routes::configure)
                .configure(webui::configure)
                .service(web::redirect("/docs", "/docs/"))
                .service(SwaggerUi::new("/docs/{_:.*}").url("/openapi.json", doc.clone()))
                .default_service(web::to(routes::endpoint_unknown))
        })
        .workers(settings.workers)
        // Each connection gets a number, so that batches can tell a client coming straight back
        // (`otp_store::from_connection`, see `middleware::observe`).
        .on_connect(middleware::number_connection)
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
                // The mode is set before the socket is reachable (see `unix_socket`).
                let failed = |err| StartupError::Bind(format!("{}: {err}", path.display()));
                let listener = crate::unix_socket::bind(path, *mode).map_err(failed)?;
                (server.listen_uds(listener).map_err(failed)?, None)
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
    let subscribed = match state.up_to_date_interval() {
        Some(every) => changes::subscribe_up_to_date(store_config, every).await,
        None => changes::subscribe(store_config).await,
    };
    match subscribed {
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
