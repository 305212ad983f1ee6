//! `taler-otp serve`: the HTTP server, over the configured or the embedded database.
//!
//! On first start (no default instance yet) it creates the default instance and prints an
//! access token for it once. SIGINT/SIGTERM stop it gracefully, then the embedded cluster.

use otp_store::{Store, StoreError, instances, tokens};

use super::Failure;
use crate::config::{Listen, Settings, mask_database_url};
use crate::database::Database;
use crate::error::error_chain;
use crate::startup::{Application, StartupError};
use crate::telemetry;

/// Runs `taler-otp serve`.
pub async fn run(settings: Settings, json_logs: bool) -> Result<(), Failure> {
    telemetry::init(json_logs);
    let database = Database::open(&settings)
        .await
        .map_err(|err| Failure::failed(err.to_string()))?;
    let application = Application::build(&settings, &database.store_config)
        .await
        .map_err(|err| match err {
            StartupError::DatabaseUnreachable(detail) => {
                Failure::failed(unreachable_message(&settings, &detail))
            }
            err => Failure::failed(err.to_string()),
        })?;
    let store =
        Store::connect(&database.store_config).map_err(|err| Failure::failed(error_chain(&err)))?;
    first_start(&store, &settings).await?;
    match (&settings.listen, application.port()) {
        (Listen::Tcp { bind_to, .. }, Some(port)) => {
            tracing::info!("listening on http://{bind_to}:{port}/")
        }
        (Listen::Unix { path, .. }, _) => tracing::info!("listening on unix:{}", path.display()),
        _ => {}
    }
    let result = application.run_until_stopped().await;
    tracing::info!("server stopped");
    database.close();
    result.map_err(|err| Failure::failed(format!("server failed: {err}")))
}

/// Creates the default instance and prints a write token for it, the first time only.
async fn first_start(store: &Store, settings: &Settings) -> Result<(), Failure> {
    let instance = &settings.default_instance;
    let created = instances::ensure(store, instance, instance.as_str())
        .await
        .map_err(|err| {
            Failure::failed(format!(
                "creating the default instance: {}",
                error_chain(&err)
            ))
        })?;
    if !created {
        return Ok(());
    }
    let (_, secret) = tokens::create(store, instance, "all", None, "created on first start")
        .await
        .map_err(|err: StoreError| {
            Failure::failed(format!("creating the first token: {}", error_chain(&err)))
        })?;
    println!("Created the default instance '{instance}'. Its access token (shown only this once):");
    println!("{}", secret.expose());
    Ok(())
}

/// One line naming the setting to check when the database cannot be reached.
pub fn unreachable_message(settings: &Settings, detail: &str) -> String {
    match &settings.database_url {
        Some(url) => format!(
            "database unreachable at [merchantdb-postgres] CONFIG = {}: {detail}",
            mask_database_url(url)
        ),
        None => format!("embedded database unreachable: {detail}"),
    }
}
