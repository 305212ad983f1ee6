//! `Settings`: the typed configuration, read from a GNU Taler-style INI file and `TALER_OTP_*`
//! environment variables, validated once in `main`.
//!
//! File syntax: `[section]` headers, `KEY = value` lines, `#` or `%` comments (also after a
//! value, preceded by whitespace), optional double quotes around values. Section and key
//! names are case-insensitive. Unknown sections and keys are errors, not silently ignored.
//! `TALER_OTP_<SECTION>__<KEY>` (section dashes as underscores, e.g.
//! `TALER_OTP_MERCHANTDB_POSTGRES__CONFIG`) overrides the file.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use otp_store::InstanceId;
use zeroize::Zeroizing;

/// Every section and key this backend understands, with a one-line description.
pub const KNOWN_KEYS: &[(&str, &str, &str)] = &[
    ("merchant", "SERVE", "tcp or unix (default tcp)"),
    ("merchant", "PORT", "TCP port (default 9966)"),
    ("merchant", "BIND_TO", "address to bind (default 127.0.0.1)"),
    ("merchant", "UNIXPATH", "socket path when SERVE = unix"),
    (
        "merchant",
        "UNIXPATH_MODE",
        "octal permissions of the socket (default 660)",
    ),
    (
        "merchantdb-postgres",
        "CONFIG",
        "PostgreSQL URL or libpq string; unset = embedded database",
    ),
    (
        "taler",
        "CURRENCY",
        "currency announced in /config (default KUDOS)",
    ),
    (
        "otp",
        "DEFAULT_INSTANCE",
        "instance addressed without /instances/$ID (default admin)",
    ),
    (
        "otp",
        "KEY_ENCRYPTION_KEY",
        "64 hex digits: encrypts device keys at rest (optional)",
    ),
    ("otp", "DATA_DIR", "directory of the embedded database"),
    ("otp", "POOL_SIZE", "database connections (default 16)"),
    (
        "otp",
        "DB_TIMEOUT_MS",
        "bound on waiting for a database connection (default 2000)",
    ),
    (
        "otp",
        "CACHE_TTL_MS",
        "staleness bound of the token and device caches (default 1000; 0 disables)",
    ),
    (
        "otp",
        "WORKERS",
        "HTTP worker threads (default: number of CPUs)",
    ),
    (
        "otp",
        "BENCHMARK_ROUTE",
        "benchmarks only: serve GET /bench/constant, a constant JSON body (default no)",
    ),
];

/// Prefix of the environment variables that override the file.
pub const ENV_PREFIX: &str = "TALER_OTP_";

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
    /// The default instance.
    pub default_instance: InstanceId,
    /// Key encrypting device keys at rest.
    pub key_encryption_key: Option<Zeroizing<[u8; 32]>>,
    /// Currency announced in `/config`.
    pub currency: String,
    /// Staleness bound of the caches.
    pub cache_ttl: Duration,
    /// HTTP worker threads.
    pub workers: usize,
    /// Benchmarks only: serve `GET /bench/constant` (the load benchmark's ceiling).
    pub benchmark_route: bool,
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

    fn from_raw(raw: &RawConfig) -> Result<Settings, ConfigError> {
        let serve = raw
            .get("merchant", "SERVE")
            .unwrap_or("tcp")
            .to_ascii_lowercase();
        let listen = match serve.as_str() {
            "tcp" => {
                let port = match raw.get("merchant", "PORT") {
                    None => 9966,
                    Some(v) => v
                        .parse::<u16>()
                        .map_err(|_| invalid("merchant", "PORT", v, "a port number 0-65535"))?,
                };
                let bind_to = raw
                    .get("merchant", "BIND_TO")
                    .unwrap_or("127.0.0.1")
                    .to_owned();
                if bind_to.parse::<IpAddr>().is_err() && bind_to != "localhost" {
                    return Err(invalid("merchant", "BIND_TO", &bind_to, "an IP address"));
                }
                Listen::Tcp { bind_to, port }
            }
            "unix" => {
                let path = raw.get("merchant", "UNIXPATH").ok_or_else(|| {
                    ConfigError("[merchant] UNIXPATH is required when SERVE = unix".into())
                })?;
                let mode = match raw.get("merchant", "UNIXPATH_MODE") {
                    None => 0o660,
                    Some(v) => u32::from_str_radix(v, 8)
                        .ok()
                        .filter(|m| *m <= 0o777)
                        .ok_or_else(|| {
                            invalid(
                                "merchant",
                                "UNIXPATH_MODE",
                                v,
                                "octal permissions such as 660",
                            )
                        })?,
                };
                Listen::Unix {
                    path: PathBuf::from(path),
                    mode,
                }
            }
            other => return Err(invalid("merchant", "SERVE", other, "tcp or unix")),
        };
        let database_url = raw
            .get("merchantdb-postgres", "CONFIG")
            .filter(|v| !v.is_empty())
            .map(|v| Zeroizing::new(v.to_owned()));
        let data_dir = raw
            .get("otp", "DATA_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(default_data_dir);
        let pool_size = parse_number(raw, "otp", "POOL_SIZE", 16, 1, 1024)?;
        let db_timeout = Duration::from_millis(parse_number(
            raw,
            "otp",
            "DB_TIMEOUT_MS",
            2000,
            50,
            600_000,
        )?);
        let cache_ttl = Duration::from_millis(parse_number(
            raw,
            "otp",
            "CACHE_TTL_MS",
            1000,
            0,
            3_600_000,
        )?);
        let default_workers = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2) as u64;
        let workers = parse_number(raw, "otp", "WORKERS", default_workers, 1, 1024)? as usize;
        let benchmark_route = parse_bool(raw, "otp", "BENCHMARK_ROUTE", false)?;
        let default_instance = raw.get("otp", "DEFAULT_INSTANCE").unwrap_or("admin");
        let default_instance = InstanceId::parse(default_instance).map_err(|err| {
            invalid(
                "otp",
                "DEFAULT_INSTANCE",
                default_instance,
                &err.to_string(),
            )
        })?;
        let key_encryption_key = raw
            .get("otp", "KEY_ENCRYPTION_KEY")
            .map(parse_kek)
            .transpose()?;
        let currency = raw.get("taler", "CURRENCY").unwrap_or("KUDOS").to_owned();
        if currency.is_empty()
            || currency.len() > 11
            || !currency.bytes().all(|b| b.is_ascii_uppercase())
        {
            return Err(invalid(
                "taler",
                "CURRENCY",
                &currency,
                "1-11 upper-case letters A-Z",
            ));
        }
        Ok(Settings {
            listen,
            database_url,
            data_dir,
            pool_size: pool_size as usize,
            db_timeout,
            default_instance,
            key_encryption_key,
            currency,
            cache_ttl,
            workers,
            benchmark_route,
            source: None,
        })
    }

    /// The effective configuration in INI form, secrets masked.
    pub fn render(&self) -> String {
        let mut out = String::new();
        out.push_str("[merchant]\n");
        match &self.listen {
            Listen::Tcp { bind_to, port } => {
                out.push_str(&format!(
                    "SERVE = tcp\nPORT = {port}\nBIND_TO = {bind_to}\n"
                ));
            }
            Listen::Unix { path, mode } => {
                out.push_str(&format!(
                    "SERVE = unix\nUNIXPATH = {}\nUNIXPATH_MODE = {mode:o}\n",
                    path.display()
                ));
            }
        }
        out.push_str("\n[merchantdb-postgres]\n");
        match &self.database_url {
            Some(url) => out.push_str(&format!("CONFIG = {}\n", mask_database_url(url))),
            None => out.push_str("# CONFIG unset: embedded database under DATA_DIR\n"),
        }
        out.push_str(&format!("\n[taler]\nCURRENCY = {}\n", self.currency));
        out.push_str(&format!(
            "\n[otp]\nDEFAULT_INSTANCE = {}\n",
            self.default_instance
        ));
        out.push_str(&format!(
            "KEY_ENCRYPTION_KEY = {}\n",
            if self.key_encryption_key.is_some() {
                "********"
            } else {
                "# unset: keys stored unencrypted"
            }
        ));
        out.push_str(&format!("DATA_DIR = {}\n", self.data_dir.display()));
        out.push_str(&format!("POOL_SIZE = {}\n", self.pool_size));
        out.push_str(&format!(
            "DB_TIMEOUT_MS = {}\n",
            self.db_timeout.as_millis()
        ));
        out.push_str(&format!("CACHE_TTL_MS = {}\n", self.cache_ttl.as_millis()));
        out.push_str(&format!("WORKERS = {}\n", self.workers));
        out.push_str(&format!(
            "BENCHMARK_ROUTE = {}\n",
            if self.benchmark_route { "yes" } else { "no" }
        ));
        out
    }
}

/// Replaces a password in a database URL or libpq string by `********`.
pub fn mask_database_url(url: &str) -> String {
    if let Some((scheme, rest)) = url.split_once("://") {
        if let Some((userinfo, host)) = rest.split_once('@') {
            if let Some((user, _password)) = userinfo.split_once(':') {
                return format!("{scheme}://{user}:********@{host}");
            }
        }
        return url.to_owned();
    }
    url.split_whitespace()
        .map(|part| match part.split_once('=') {
            Some((key, _)) if key.eq_ignore_ascii_case("password") => format!("{key}=********"),
            _ => part.to_owned(),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn default_data_dir() -> PathBuf {
    if nix_is_root() {
        return PathBuf::from("/var/lib/taler-otp");
    }
    if let Some(dir) = std::env::var_os("XDG_DATA_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir).join("taler-otp");
    }
    match std::env::var_os("HOME") {
        Some(home) => PathBuf::from(home).join(".local/share/taler-otp"),
        None => PathBuf::from("taler-otp-data"),
    }
}

fn nix_is_root() -> bool {
    // /proc/self belongs to the process's user.
    std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap_or(false)
}

fn parse_kek(value: &str) -> Result<Zeroizing<[u8; 32]>, ConfigError> {
    let bad = || {
        ConfigError("[otp] KEY_ENCRYPTION_KEY: expected 64 hexadecimal digits (32 bytes)".into())
    };
    let bytes = data_encoding::HEXLOWER_PERMISSIVE
        .decode(value.as_bytes())
        .map_err(|_| bad())?;
    let mut key = Zeroizing::new([0u8; 32]);
    if bytes.len() != 32 {
        return Err(bad());
    }
    key.copy_from_slice(&bytes);
    Ok(key)
}

fn parse_number(
    raw: &RawConfig,
    section: &str,
    key: &str,
    default: u64,
    min: u64,
    max: u64,
) -> Result<u64, ConfigError> {
    match raw.get(section, key) {
        None => Ok(default),
        Some(v) => v
            .parse::<u64>()
            .ok()
            .filter(|n| (min..=max).contains(n))
            .ok_or_else(|| {
                invalid(
                    section,
                    key,
                    v,
                    &format!("an integer between {min} and {max}"),
                )
            }),
    }
}

fn parse_bool(
    raw: &RawConfig,
    section: &str,
    key: &str,
    default: bool,
) -> Result<bool, ConfigError> {
    match raw.get(section, key) {
        None => Ok(default),
        Some(v) => match v.to_ascii_lowercase().as_str() {
            "yes" | "true" | "1" => Ok(true),
            "no" | "false" | "0" | "" => Ok(false),
            _ => Err(invalid(section, key, v, "yes or no")),
        },
    }
}

fn invalid(section: &str, key: &str, value: &str, expected: &str) -> ConfigError {
    ConfigError(format!(
        "[{section}] {key}: invalid value {value:?}, expected {expected}"
    ))
}

/// The file and environment as text, before validation.
#[derive(Debug, Default)]
pub struct RawConfig {
    values: BTreeMap<(String, String), String>,
}

impl RawConfig {
    fn get(&self, section: &str, key: &str) -> Option<&str> {
        self.values
            .get(&(section.to_owned(), key.to_owned()))
            .map(String::as_str)
    }

    fn set(
        &mut self,
        section: &str,
        key: &str,
        value: String,
        origin: &str,
    ) -> Result<(), ConfigError> {
        let section = section.to_ascii_lowercase();
        let key = key.to_ascii_uppercase();
        if !KNOWN_KEYS.iter().any(|(s, _, _)| *s == section) {
            return Err(ConfigError(format!(
                "{origin}: unknown section [{section}]"
            )));
        }
        if !KNOWN_KEYS
            .iter()
            .any(|(s, k, _)| *s == section && *k == key)
        {
            return Err(ConfigError(format!(
                "{origin}: unknown key {key} in section [{section}]"
            )));
        }
        self.values.insert((section, key), value);
        Ok(())
    }

    /// Applies `TALER_OTP_<SECTION>__<KEY>` variables; other `TALER_OTP_` variables are errors
    /// (except `TALER_OTP_CONFIG`, the configuration file's path).
    pub fn apply_env(
        &mut self,
        vars: impl Iterator<Item = (String, String)>,
    ) -> Result<(), ConfigError> {
        for (name, value) in vars {
            let Some(rest) = name.strip_prefix(ENV_PREFIX) else {
                continue;
            };
            if rest == "CONFIG" {
                continue;
            }
            let Some((section, key)) = rest.split_once("__") else {
                return Err(ConfigError(format!(
                    "environment variable {name}: expected the form {ENV_PREFIX}<SECTION>__<KEY>"
                )));
            };
            let section = section.to_ascii_lowercase().replace('_', "-");
            self.set(
                &section,
                key,
                value,
                &format!("environment variable {name}"),
            )?;
        }
        Ok(())
    }
}

/// Parses Taler INI text; `origin` names the file in errors.
pub fn parse_ini(text: &str, origin: &str) -> Result<RawConfig, ConfigError> {
    let mut raw = RawConfig::default();
    let mut section: Option<String> = None;
    for (number, line) in text.lines().enumerate() {
        let at = format!("{origin}:{}", number + 1);
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with('%') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[') {
            let name = name
                .strip_suffix(']')
                .ok_or_else(|| ConfigError(format!("{at}: malformed section header {line:?}")))?;
            section = Some(name.trim().to_ascii_lowercase());
            continue;
        }
        let (key, value) = line
            .split_once('=')
            .ok_or_else(|| ConfigError(format!("{at}: expected KEY = value, got {line:?}")))?;
        let section = section.as_deref().ok_or_else(|| {
            ConfigError(format!("{at}: {} appears before any [section]", key.trim()))
        })?;
        raw.set(
            section,
            key.trim(),
            unquote(strip_comment(value.trim())),
            &at,
        )?;
    }
    Ok(raw)
}

fn strip_comment(value: &str) -> &str {
    if value.starts_with('"') {
        return value;
    }
    let cut = value
        .char_indices()
        .find(|(i, c)| (*c == '#' || *c == '%') && value[..*i].ends_with(char::is_whitespace))
        .map(|(i, _)| i);
    match cut {
        Some(i) => value[..i].trim_end(),
        None => value,
    }
}

fn unquote(value: &str) -> String {
    let trimmed = value.trim();
    if let Some(inner) = trimmed.strip_prefix('"') {
        if let Some(end) = inner.rfind('"') {
            return inner[..end].to_owned();
        }
    }
    trimmed.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<Settings, ConfigError> {
        Settings::from_raw(&parse_ini(text, "test.conf")?)
    }

    #[test]
    fn issue_example_parses_with_inline_comments() {
        let settings = load(
            "[merchant]\nSERVE = tcp            # or unix\nPORT = 9977\nBIND_TO = 127.0.0.1\n\
             [merchantdb-postgres]\nCONFIG = postgres:///taler\n[otp]\nDEFAULT_INSTANCE = shop\n",
        )
        .unwrap();
        assert_eq!(
            settings.listen,
            Listen::Tcp {
                bind_to: "127.0.0.1".into(),
                port: 9977
            }
        );
        assert_eq!(
            settings.database_url.as_deref().map(String::as_str),
            Some("postgres:///taler")
        );
        assert_eq!(settings.default_instance.as_str(), "shop");
    }

    #[test]
    fn unknown_keys_sections_and_bad_values_are_named() {
        let err = load("[merchant]\nPROT = 1\n").unwrap_err().to_string();
        assert!(err.contains("PROT") && err.contains("test.conf:2"), "{err}");
        let err = load("[bogus]\nX = 1\n").unwrap_err().to_string();
        assert!(err.contains("[bogus]"), "{err}");
        let err = load("[merchant]\nPORT = 99999\n").unwrap_err().to_string();
        assert!(err.contains("PORT") && err.contains("99999"), "{err}");
        let err = load("[otp]\nKEY_ENCRYPTION_KEY = abc\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("KEY_ENCRYPTION_KEY") && !err.contains("abc"),
            "{err}"
        );
    }

    #[test]
    fn environment_overrides_the_file() {
        let mut raw = parse_ini("[merchant]\nPORT = 1\n", "t").unwrap();
        raw.apply_env(
            [
                ("TALER_OTP_MERCHANT__PORT".to_owned(), "2".to_owned()),
                ("OTHER".to_owned(), "x".to_owned()),
            ]
            .into_iter(),
        )
        .unwrap();
        assert_eq!(raw.get("merchant", "PORT"), Some("2"));
        raw.apply_env(
            [(
                "TALER_OTP_MERCHANTDB_POSTGRES__CONFIG".to_owned(),
                "x".to_owned(),
            )]
            .into_iter(),
        )
        .unwrap();
        assert_eq!(raw.get("merchantdb-postgres", "CONFIG"), Some("x"));
        assert!(
            raw.apply_env([("TALER_OTP_NOPE".to_owned(), "x".to_owned())].into_iter())
                .is_err()
        );
    }

    #[test]
    fn benchmark_route_is_off_by_default() {
        assert!(!load("").unwrap().benchmark_route);
        assert!(
            load("[otp]\nBENCHMARK_ROUTE = YES\n")
                .unwrap()
                .benchmark_route
        );
        assert!(
            !load("[otp]\nBENCHMARK_ROUTE = no\n")
                .unwrap()
                .benchmark_route
        );
        let err = load("[otp]\nBENCHMARK_ROUTE = maybe\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("BENCHMARK_ROUTE"), "{err}");
    }

    #[test]
    fn rendering_masks_secrets() {
        let settings = load(
            "[merchantdb-postgres]\nCONFIG = postgres://u:hunter2@db/taler\n[otp]\nKEY_ENCRYPTION_KEY = \
             000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f\n",
        )
        .unwrap();
        let text = settings.render();
        assert!(
            !text.contains("hunter2") && !text.contains("0a0b0c"),
            "{text}"
        );
        assert!(text.contains("postgres://u:********@db/taler"));
        assert_eq!(
            mask_database_url("host=x password=pw user=u"),
            "host=x password=******** user=u"
        );
    }
}
