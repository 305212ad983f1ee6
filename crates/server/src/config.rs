//! `Settings`: the typed configuration, read from a GNU Taler-style INI file and `TALER_OTP_*`
//! environment variables, validated once in `main`.
//!
//! [`keys::KEYS`] is the one table of keys (section, key, default, kind, secrecy, meaning, how
//! `config show` prints it); [`ini`] reads the file and the environment
//! (`TALER_OTP_<SECTION>__<KEY>`, section dashes as underscores, e.g.
//! `TALER_OTP_MERCHANTDB_POSTGRES__CONFIG`, overrides the file); `values` checks the text
//! against the table. This module turns the checked values into [`Settings`] and back into
//! text ([`Settings::render`]).

pub mod ini;
pub mod keys;
mod values;

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use otp_store::InstanceId;
use zeroize::Zeroizing;

pub use ini::{ENV_PREFIX, RawConfig, parse_ini};
use keys::{DefaultValue, KEYS};
pub(crate) use values::key256;
pub use values::mask_database_url;
use values::{Value, Values};

/// Where the HTTP server listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listen {
    /// TCP on an address and port.
    Tcp {
        /// Address to bind.
        bind_to: String,
        /// Port; 0 picks a free one.
        port: u16,
    },
    /// A UNIX domain socket.
    Unix {
        /// Socket path.
        path: PathBuf,
        /// Permissions of the socket file.
        mode: u32,
    },
}

/// The limits on verifying typed codes (`[otp] VERIFY_WINDOW`, `HOTP_LOOKAHEAD`,
/// `VERIFY_MAX_FAILURES`, `VERIFY_DAILY_FAILURES`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VerifyPolicy {
    /// TOTP steps accepted on each side of the server's clock (0-10).
    pub window: u8,
    /// HOTP counters accepted ahead of the stored one (0-100).
    pub hotp_lookahead: u16,
    /// Consecutive mismatches that lock a device (1-2147483647).
    pub max_failures: u32,
    /// Mismatches per device per UTC day before verification is refused until midnight UTC
    /// (1-2147483647).
    pub daily_failures: u32,
}

/// An exchange announced by `/config` (`[otp] EXCHANGES` or a `[merchant-exchange-NAME]`
/// section).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExchangeConfig {
    /// Its base URL (`http://` or `https://`).
    pub base_url: String,
    /// Its currency.
    pub currency: String,
    /// Its master public key, Crockford base-32, upper case.
    pub master_pub: String,
}

/// The validated configuration.
pub struct Settings {
    /// Where to listen.
    pub listen: Listen,
    /// The database URL; `None` means the embedded database under `data_dir`.
    pub database_url: Option<Zeroizing<String>>,
    /// Directory of the embedded database.
    pub data_dir: PathBuf,
    /// Connections in the pool.
    pub pool_size: usize,
    /// Bound on waiting for a database connection.
    pub db_timeout: Duration,
    /// The server's bound on one SQL statement (zero: none).
    pub statement_timeout: Duration,
    /// The server's bound on waiting for a lock (zero: none).
    pub lock_timeout: Duration,
    /// The default instance.
    pub default_instance: InstanceId,
    /// Key encrypting device keys at rest.
    pub key_encryption_key: Option<Zeroizing<[u8; 32]>>,
    /// Start although device keys are stored in plaintext beside a key-encryption key (while
    /// `taler-otp rekey` encrypts them).
    pub accept_plaintext_keys: bool,
    /// Currency announced in `/config`.
    pub currency: String,
    /// Staleness bound of the caches.
    pub cache_ttl: Duration,
    /// HTTP worker threads.
    pub workers: usize,
    /// How long a batch of confirmations or verifications may wait for the callers it answered
    /// to send their next calls (`otp_store`'s batches; zero never waits).
    pub batch_gather: Duration,
    /// How often `serve` syncs the embedded cluster's changed table files
    /// (`otp_embedded_pg::WritebackPacer`; zero leaves their writeback to the kernel).
    pub writeback_pace: Duration,
    /// Benchmarks only: serve `GET /bench/constant` (the load benchmark's ceiling).
    pub benchmark_route: bool,
    /// Serve Prometheus metrics at `GET /metrics` (unauthenticated).
    pub metrics: bool,
    /// The limits on verifying typed codes.
    pub verify: VerifyPolicy,
    /// Failed password logins per client address and instance within 60 s before logins from
    /// there are refused.
    pub login_max_failures: u32,
    /// Exchanges announced by `/config`: those of `[otp] EXCHANGES`, then those of the
    /// `[merchant-exchange-NAME]` sections by name.
    pub exchanges: Vec<ExchangeConfig>,
    /// The file the settings were read from, if any.
    pub source: Option<PathBuf>,
}

impl fmt::Debug for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.render())
    }
}

/// A configuration problem, as one line naming the key or value.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

impl Settings {
    /// Reads `path` (if any), applies the environment, and validates everything.
    pub fn load(path: Option<&Path>) -> Result<Settings, ConfigError> {
        let mut raw = match path {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|err| {
                    ConfigError(format!(
                        "cannot read configuration file {}: {err}",
                        path.display()
                    ))
                })?;
                parse_ini(&text, &path.display().to_string())?
            }
            None => RawConfig::default(),
        };
        raw.apply_env(std::env::vars())?;
        let mut settings = Settings::from_raw(&raw)?;
        settings.source = path.map(Path::to_path_buf);
        Ok(settings)
    }

    /// Settings for tests: TCP on 127.0.0.1 with an ephemeral port, the given database, no cache
    /// unless asked for.
    pub fn for_tests(database_url: &str) -> Result<Settings, ConfigError> {
        let mut settings = Settings::from_raw(&RawConfig::default())?;
        settings.listen = Listen::Tcp {
            bind_to: "127.0.0.1".into(),
            port: 0,
        };
        settings.database_url = Some(Zeroizing::new(database_url.to_owned()));
        settings.pool_size = 8;
        settings.workers = 2;
        Ok(settings)
    }

    /// Validates the text against the table of keys and builds the settings.
    fn from_raw(raw: &RawConfig) -> Result<Settings, ConfigError> {
        let values = Values::from_raw(raw)?;
        let listen = match values.text("merchant", "SERVE") {
            Some("unix") => Listen::Unix {
                path: values
                    .text("merchant", "UNIXPATH")
                    .map(PathBuf::from)
                    .ok_or_else(|| {
                        ConfigError("[merchant] UNIXPATH is required when SERVE = unix".into())
                    })?,
                mode: values.integer("merchant", "UNIXPATH_MODE")?,
            },
            _ => Listen::Tcp {
                bind_to: values
                    .text("merchant", "BIND_TO")
                    .unwrap_or_default()
                    .to_owned(),
                port: values.integer("merchant", "PORT")?,
            },
        };
        let database_url = match values.get("merchantdb-postgres", "CONFIG") {
            Some(Value::Secret(url)) => Some(url.clone()),
            _ => None,
        };
        let default_instance = match values.get("otp", "DEFAULT_INSTANCE") {
            Some(Value::Instance(id)) => id.clone(),
            _ => return Err(ConfigError("[otp] DEFAULT_INSTANCE is missing".into())),
        };
        let key_encryption_key = match values.get("otp", "KEY_ENCRYPTION_KEY") {
            Some(Value::Key(key)) => Some(key.clone()),
            _ => None,
        };
        let mut exchanges = match values.get("otp", "EXCHANGES") {
            Some(Value::Exchanges(list)) => list.clone(),
            _ => Vec::new(),
        };
        for (section, entries) in values.families() {
            let text = |key: &str| match entries.get(key) {
                Some(Value::Text(text)) => Ok(text.clone()),
                _ => Err(ConfigError(format!(
                    "[{section}] {key} is required in an exchange section"
                ))),
            };
            exchanges.push(ExchangeConfig {
                base_url: text("EXCHANGE_BASE_URL")?,
                currency: text("CURRENCY")?,
                master_pub: text("MASTER_KEY")?,
            });
        }
        Ok(Settings {
            listen,
            database_url,
            data_dir: PathBuf::from(values.text("otp", "DATA_DIR").unwrap_or_default()),
            pool_size: values.integer("otp", "POOL_SIZE")?,
            db_timeout: Duration::from_millis(values.integer("otp", "DB_TIMEOUT_MS")?),
            statement_timeout: Duration::from_millis(
                values.integer("otp", "STATEMENT_TIMEOUT_MS")?,
            ),
            lock_timeout: Duration::from_millis(values.integer("otp", "LOCK_TIMEOUT_MS")?),
            default_instance,
            key_encryption_key,
            accept_plaintext_keys: values.bool("otp", "ACCEPT_PLAINTEXT_KEYS")?,
            currency: values
                .text("taler", "CURRENCY")
                .unwrap_or_default()
                .to_owned(),
            cache_ttl: Duration::from_millis(values.integer("otp", "CACHE_TTL_MS")?),
            workers: values.integer("otp", "WORKERS")?,
            batch_gather: Duration::from_millis(values.integer("otp", "BATCH_GATHER_MS")?),
            writeback_pace: Duration::from_millis(values.integer("otp", "WRITEBACK_PACE_MS")?),
            benchmark_route: values.bool("otp", "BENCHMARK_ROUTE")?,
            metrics: values.bool("otp", "METRICS")?,
            verify: VerifyPolicy {
                window: values.integer("otp", "VERIFY_WINDOW")?,
                hotp_lookahead: values.integer("otp", "HOTP_LOOKAHEAD")?,
                max_failures: values.integer("otp", "VERIFY_MAX_FAILURES")?,
                daily_failures: values.integer("otp", "VERIFY_DAILY_FAILURES")?,
            },
            login_max_failures: values.integer("otp", "LOGIN_MAX_FAILURES")?,
            exchanges,
            source: None,
        })
    }

    /// The effective configuration in INI form, secrets masked: every key of the table in
    /// order, an unset one as a comment saying what that means.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let mut section = "";
        for spec in KEYS.iter().filter(|spec| !spec.is_family()) {
            if spec.section != section {
                if !out.is_empty() {
                    out.push('\n');
                }
                out.push_str(&format!("[{}]\n", spec.section));
                section = spec.section;
            }
            match ((spec.show)(self), spec.default) {
                (Some(value), _) => {
                    let line = format!("{} = {}", spec.key, values::mask(spec.secret, &value));
                    out.push_str(line.trim_end());
                    out.push('\n');
                }
                (None, DefaultValue::Unset(meaning)) => {
                    out.push_str(&format!("# {} unset: {meaning}\n", spec.key));
                }
                (None, _) => {}
            }
        }
        out
    }
}

/// The default `[otp] DATA_DIR`: `/var/lib/taler-otp` as root, else under
/// `$XDG_DATA_HOME` or `~/.local/share`.
fn default_data_dir() -> String {
    let dir = if is_root() {
        PathBuf::from("/var/lib/taler-otp")
    } else if let Some(dir) = std::env::var_os("XDG_DATA_HOME").filter(|d| !d.is_empty()) {
        PathBuf::from(dir).join("taler-otp")
    } else {
        match std::env::var_os("HOME") {
            Some(home) => PathBuf::from(home).join(".local/share/taler-otp"),
            None => PathBuf::from("taler-otp-data"),
        }
    };
    dir.to_string_lossy().into_owned()
}

/// The default `[otp] WORKERS`: the number of CPUs.
fn default_workers() -> String {
    std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .to_string()
}

fn is_root() -> bool {
    // /proc/self belongs to the process's user.
    std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap_or(false)
}

#[cfg(test)]
mod tests;
