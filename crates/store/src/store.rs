//! `StoreConfig` and `Store`: the connection pool and the key cipher.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{
    ClientWrapper, Hook, HookError, Manager, ManagerConfig, Metrics, Object, Pool, QueueMode,
    RecyclingMethod, Runtime,
};
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;
use zeroize::Zeroizing;

use crate::batch::Batches;
use crate::connect::{self, FailoverConnect};
use crate::crypto::KeyCipher;
use crate::error::StoreError;
use crate::observe::StoreObserver;
use crate::tls::{self, Connector, TlsSettings};

/// How to reach the database.
///
/// `Debug` never shows the password or the key-encryption key.
#[derive(Clone)]
pub struct StoreConfig {
    /// A `postgres://` URL or a libpq `key=value` string; `host=/a/dir`
    /// selects a Unix socket directory. Several hosts are tried in order, as libpq does
    /// (`host=a,b port=5432,5433 target_session_attrs=read-write`, or
    /// `postgres://a:5432,b:5433/db?target_session_attrs=read-write`), for every connection. `sslmode` (`disable`, `allow`, `prefer`,
    /// `require`, `verify-ca`, `verify-full`) and `sslrootcert` (a PEM file, or
    /// `system`) are read as libpq reads them (see `tls.rs`).
    pub url: String,
    /// The most connections the pool opens (default 16).
    pub pool_size: usize,
    /// How long a call waits for a free pooled connection (default 2 s).
    pub wait_timeout: Duration,
    /// How long opening a connection to one host may take, start-up and authentication
    /// included (default 2 s), unless the URL sets `connect_timeout` itself; with several
    /// hosts, each gets this long in turn.
    pub connect_timeout: Duration,
    /// When set, OTP keys are stored encrypted with ChaCha20-Poly1305 under a
    /// subkey of this key, bound to their instance id and device id.
    pub key_encryption_key: Option<Zeroizing<[u8; 32]>>,
    /// When set, every connection's `statement_timeout`: a longer statement is
    /// cancelled and fails as [`StoreError::Timeout`].
    pub statement_timeout: Option<Duration>,
    /// When set, every connection's `lock_timeout`: a statement that waits
    /// longer for a lock fails as [`StoreError::Timeout`].
    pub lock_timeout: Option<Duration>,
    /// The most confirmations, or verifications, that share one statement when they arrive
    /// together (default 64; 1 runs each in a statement of its own).
    pub max_batch: usize,
    /// How long a batch's task may wait for the callers it answered to send their next calls,
    /// so that they share the next batch (default 1 ms; zero never waits; see `batch.rs`).
    pub batch_gather: Duration,
}

impl StoreConfig {
    /// A configuration for `url` with the defaults.
    pub fn new(url: impl Into<String>) -> StoreConfig {
        StoreConfig {
            url: url.into(),
            pool_size: 16,
            wait_timeout: Duration::from_secs(2),
            connect_timeout: Duration::from_secs(2),
            key_encryption_key: None,
            statement_timeout: None,
            lock_timeout: None,
            max_batch: 64,
            batch_gather: crate::batch::DEFAULT_GATHER,
        }
    }

    /// The driver configuration (the URL without `sslmode` and `sslrootcert`, plus our
    /// timeouts and keepalives) and the TLS connector those two ask for.
    pub(crate) fn pg_config(&self) -> Result<(tokio_postgres::Config, Connector), StoreError> {
        let (url, tls) = tls::split(&self.url)?;
        let mut pg = tokio_postgres::Config::from_str(&url).map_err(StoreError::Db)?;
        if pg.get_connect_timeout().is_none() {
            pg.connect_timeout(self.connect_timeout);
        }
        if pg.get_application_name().is_none() {
            // The process id tells operators (and `other_sessions`) which process a session serves.
            pg.application_name(format!("taler-otp/{}", std::process::id()));
        }
        // Detect a vanished server on idle connections, and give up on unacknowledged writes.
        pg.keepalives(true)
            .keepalives_idle(Duration::from_secs(10))
            .keepalives_interval(Duration::from_secs(5))
            .keepalives_retries(3)
            .tcp_user_timeout(Duration::from_secs(15));
        let options = self.session_options(pg.get_options());
        if !options.is_empty() {
            pg.options(&options);
        }
        let connector = tls.apply(&mut pg)?;
        Ok((pg, connector))
    }
}

impl StoreConfig {
    /// The connection's `options` startup parameter: those of the URL, then the timeouts as
    /// `-c name=milliseconds` (set when the session starts, without a round trip).
    fn session_options(&self, given: Option<&str>) -> String {
        let mut options = given.unwrap_or_default().trim().to_owned();
        let settings = [
            ("statement_timeout", self.statement_timeout),
            ("lock_timeout", self.lock_timeout),
        ];
        for (name, timeout) in settings {
            if let Some(timeout) = timeout {
                if !options.is_empty() {
                    options.push(' ');
                }
                // At least 1 ms: 0 would mean no timeout.
                let millis = timeout.as_millis().max(1);
                options.push_str(&format!("-c {name}={millis}"));
            }
        }
        options
    }
}

impl fmt::Debug for StoreConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The driver's Debug redacts the password; an unparsable URL is not shown at all.
        let parsed = tls::split(&self.url).ok().and_then(|(url, tls)| {
            Some(DebugPg(tokio_postgres::Config::from_str(&url).ok()?, tls))
        });
        let url: &dyn fmt::Debug = match &parsed {
            Some(pg) => pg,
            None => &"<unparsable url>",
        };
        f.debug_struct("StoreConfig")
            .field("url", url)
            .field("pool_size", &self.pool_size)
            .field("wait_timeout", &self.wait_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("statement_timeout", &self.statement_timeout)
            .field("lock_timeout", &self.lock_timeout)
            .field("max_batch", &self.max_batch)
            .field("batch_gather", &self.batch_gather)
            .field(
                "key_encryption_key",
                &self.key_encryption_key.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

struct DebugPg(tokio_postgres::Config, TlsSettings);

impl fmt::Debug for DebugPg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("user", &self.0.get_user())
            .field("password", &self.0.get_password().map(|_| "<redacted>"))
            .field("dbname", &self.0.get_dbname())
            .field("hosts", &self.0.get_hosts())
            .field("ports", &self.0.get_ports())
            .field("target_session_attrs", &self.0.get_target_session_attrs())
            .field("sslmode", &self.1.mode.as_str())
            .field("sslrootcert", &self.1.root_cert)
            .finish()
    }
}

/// The database: a pool of connections and, when configured, the cipher for
/// OTP keys. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    pool: Pool,
    cipher: Option<Arc<KeyCipher>>,
    checkout_limit: Duration,
    observer: Option<Arc<dyn StoreObserver>>,
    batches: Arc<Batches>,
}

impl Store {
    /// Builds the pool. No connection is opened yet, so this fails only for a
    /// malformed URL or unusable TLS settings (an unreadable `sslrootcert`).
    ///
    /// With several hosts, a new connection goes to the first that accepts and meets
    /// `target_session_attrs` (see `connect.rs`), each attempt bounded by `connect_timeout`.
    pub fn connect(cfg: &StoreConfig) -> Result<Store, StoreError> {
        let (pg, connector) = cfg.pg_config()?;
        let per_host = connect::per_host_limit(&pg, cfg.connect_timeout);
        // Every host may take its whole bound before the last one answers.
        let create_timeout = per_host * connect::host_count(&pg) + Duration::from_millis(250);
        // `Fast` recycling drops connections whose socket is known to be closed; the hook
        // below drops those opened before a write was refused as read-only, and verifies, with
        // a round trip, only connections that sat idle for a while, where a silently vanished
        // server could be waiting. Under load connections are reused within milliseconds and
        // checkouts cost no round trip.
        let manager = Manager::from_connect(
            pg,
            FailoverConnect {
                tls: connector,
                per_host,
            },
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(cfg.pool_size.max(1))
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(cfg.wait_timeout))
            .create_timeout(Some(create_timeout))
            .recycle_timeout(Some(per_host))
            .queue_mode(QueueMode::Lifo)
            .post_recycle(Hook::async_fn(move |client, metrics| {
                Box::pin(verify_if_idle(client, metrics, per_host))
            }))
            .build()
            .map_err(|err| StoreError::Unavailable(Box::new(err)))?;
        let cipher = match &cfg.key_encryption_key {
            Some(kek) => Some(Arc::new(KeyCipher::new(kek)?)),
            None => None,
        };
        // Recycling several dead connections could add up; bound the whole checkout.
        let checkout_limit = cfg.wait_timeout + create_timeout + Duration::from_millis(500);
        Ok(Store {
            pool,
            cipher,
            checkout_limit,
            observer: None,
            batches: Arc::new(Batches::new(
                cfg.pool_size.max(1),
                cfg.max_batch,
                cfg.batch_gather,
            )),
        })
    }

    /// This store, reporting its checkouts and verifications to `observer`.
    pub fn with_observer(mut self, observer: Arc<dyn StoreObserver>) -> Store {
        self.observer = Some(observer);
        self
    }

    /// The batchers of the hot writes ([`crate::batch`]).
    pub(crate) fn batches(&self) -> &Batches {
        &self.batches
    }

    /// The observer, if one is installed.
    pub(crate) fn observer(&self) -> Option<&dyn StoreObserver> {
        self.observer.as_deref()
    }

    /// Checks that the database answers.
    pub async fn ping(&self) -> Result<(), StoreError> {
        let client = self.client().await?;
        client.simple_query("SELECT 1").await?;
        Ok(())
    }

    /// The connection pool, for callers that need a raw connection.
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// Takes a connection from the pool, failing as `Unavailable` within a
    /// bounded time.
    pub(crate) async fn client(&self) -> Result<Object, StoreError> {
        let Some(observer) = self.observer() else {
            return self.checkout().await;
        };
        let started = std::time::Instant::now();
        let client = self.checkout().await;
        observer.checkout(started.elapsed(), client.is_ok());
        client
    }

    async fn checkout(&self) -> Result<Object, StoreError> {
        match tokio::time::timeout(self.checkout_limit, self.pool.get()).await {
            Ok(Ok(client)) => Ok(client),
            Ok(Err(err)) => Err(StoreError::from_pool(err)),
            Err(elapsed) => Err(StoreError::Unavailable(Box::new(elapsed))),
        }
    }

    /// Runs the statement `sql` (prepared once per connection) with `params`: `Ok` if it
    /// changed a row, else the error `missing`.
    pub(crate) async fn execute_found(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
        missing: StoreError,
    ) -> Result<(), StoreError> {
        let client = self.client().await?;
        let stmt = client.prepare_cached(sql).await?;
        let changed = client.execute(&stmt, params).await?;
        crate::error::found(changed > 0, missing)
    }

    /// Runs the query `sql` (prepared once per connection) with `params`: its row, or the
    /// error `missing` when it has none.
    pub(crate) async fn query_found(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
        missing: StoreError,
    ) -> Result<Row, StoreError> {
        let client = self.client().await?;
        let stmt = client.prepare_cached(sql).await?;
        client.query_opt(&stmt, params).await?.ok_or(missing)
    }

    /// The OTP key cipher, when a key-encryption key is configured.
    pub(crate) fn cipher(&self) -> Option<&KeyCipher> {
        self.cipher.as_deref()
    }
}

/// Connections not checked out for longer than this are verified with a round trip before reuse.
pub const VERIFY_IDLE_AFTER: Duration = Duration::from_secs(1);

/// Recycling hook: a connection opened before a write was refused as read-only is discarded
/// (its server may have been demoted), and one idle for [`VERIFY_IDLE_AFTER`] or longer must
/// answer an empty query within `limit`; the pool opens another instead of either.
async fn verify_if_idle(
    client: &mut ClientWrapper,
    metrics: &Metrics,
    limit: Duration,
) -> Result<(), HookError> {
    if crate::error::opened_before_read_only(metrics.created) {
        return Err(HookError::message(
            "opened before a write was refused as read-only",
        ));
    }
    if metrics.last_used() < VERIFY_IDLE_AFTER {
        return Ok(());
    }
    match tokio::time::timeout(limit, client.simple_query("")).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(err)) => Err(HookError::Backend(err)),
        Err(_) => Err(HookError::message("idle connection did not answer")),
    }
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("pool", &self.pool.status())
            .field("keys_encrypted", &self.cipher.is_some())
            .finish()
    }
}

#[cfg(test)]
mod tests;
