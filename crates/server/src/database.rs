//! Opening the database a command works on: the configured PostgreSQL, or the embedded
//! cluster under `DATA_DIR` when none is configured.

use std::time::Duration;

use otp_embedded_pg::{Cluster, ClusterOptions, WritebackPacer};
use otp_store::{StoreConfig, migrate};

use crate::config::Settings;
use crate::error::error_chain;

/// The database behind a command, and the embedded cluster if this process started it.
pub struct Database {
    /// How to connect.
    pub store_config: StoreConfig,
    cluster: Option<Cluster>,
}

/// The database could not be opened.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct DatabaseError(pub String);

impl Database {
    /// Opens the configured database, starting the embedded cluster when none is configured
    /// (the embedded schema is migrated at once: nobody else can have an older binary on it).
    pub async fn open(settings: &Settings) -> Result<Database, DatabaseError> {
        match &settings.database_url {
            Some(url) => Ok(Database {
                store_config: store_config(settings, url),
                cluster: None,
            }),
            None => {
                let options = ClusterOptions {
                    data_dir: settings.data_dir.join("postgres"),
                    port: None,
                    superuser: "postgres".to_owned(),
                };
                let cluster = tokio::task::spawn_blocking(move || Cluster::start(&options))
                    .await
                    .map_err(|err| DatabaseError(format!("embedded database: {err}")))?
                    .map_err(|err| DatabaseError(format!("embedded database: {err}")))?;
                let database = Database {
                    store_config: store_config(settings, &cluster.url("taler")),
                    cluster: Some(cluster),
                };
                let store = otp_store::Store::connect(&database.store_config).map_err(|err| {
                    DatabaseError(format!("embedded database: {}", error_chain(&err)))
                })?;
                migrate::migrate(&store).await.map_err(|err| {
                    DatabaseError(format!(
                        "embedded database migration: {}",
                        error_chain(&err)
                    ))
                })?;
                Ok(database)
            }
        }
    }

    /// Whether this is the embedded cluster.
    pub fn is_embedded(&self) -> bool {
        self.cluster.is_some()
    }

    /// Stops using the embedded cluster: the last taler-otp process using a cluster that
    /// taler-otp started stops it; a `serve` or command still using it keeps it running.
    pub fn close(mut self) {
        self.release();
    }

    /// Starts syncing the embedded cluster's changed table files every `interval`
    /// ([`WritebackPacer`]), each pass logged at debug; `None` for a configured database or a
    /// zero interval, or when the thread could not be started (logged).
    pub fn pace_writeback(&self, interval: Duration) -> Option<WritebackPacer> {
        let cluster = self.cluster.as_ref().filter(|_| !interval.is_zero())?;
        let pacer = WritebackPacer::start(cluster.data_dir(), interval, |pass, took| {
            if pass.synced + pass.failed > 0 {
                tracing::debug!(
                    synced = pass.synced,
                    failed = pass.failed,
                    micros = took.as_micros() as u64,
                    "table files written"
                );
            }
        });
        match pacer {
            Ok(pacer) => {
                tracing::info!(
                    every_ms = interval.as_millis() as u64,
                    "writing the embedded database's changed table files to disk at a steady pace"
                );
                Some(pacer)
            }
            Err(err) => {
                tracing::warn!(error = %err, "could not start pacing the embedded database's writeback");
                None
            }
        }
    }

    fn release(&mut self) {
        if let Some(cluster) = self.cluster.take() {
            if let Err(err) = cluster.release() {
                tracing::warn!(error = %err, "stopping the embedded database failed");
            }
        }
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        self.release();
    }
}

/// The store configuration for `url` under `settings`.
pub fn store_config(settings: &Settings, url: &str) -> StoreConfig {
    let mut config = StoreConfig::new(url);
    config.pool_size = settings.pool_size;
    config.wait_timeout = settings.db_timeout;
    config.connect_timeout = settings.db_timeout;
    config.key_encryption_key = settings.key_encryption_key.clone();
    config.batch_gather = settings.batch_gather;
    config
}

/// `config` as the HTTP server uses it: every connection bounds a statement by `[otp]
/// STATEMENT_TIMEOUT_MS` and a lock wait by `[otp] LOCK_TIMEOUT_MS` (zero: no bound). Operator
/// commands keep no such bound: a migration or a rekey may rightly take longer.
pub fn with_timeouts(settings: &Settings, config: &StoreConfig) -> StoreConfig {
    let mut config = config.clone();
    config.statement_timeout = Some(settings.statement_timeout).filter(|t| !t.is_zero());
    config.lock_timeout = Some(settings.lock_timeout).filter(|t| !t.is_zero());
    config
}
