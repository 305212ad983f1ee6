//! The one table of configuration keys: for each, its section, name, default,
//! kind (how it is parsed and checked), whether it is secret, what it means and
//! how `config show` prints it. Parsing, defaults, validation and rendering
//! all read [`KEYS`]; README.md's configuration table lists the same keys (a
//! test checks it).

use super::{Listen, Settings};

/// The placeholder that ends the section of a section family: a family's
/// keys may appear in any number of sections `<prefix><name>`.
pub const FAMILY_PLACEHOLDER: &str = "NAME";

/// A key's value when the file and the environment have none.
#[derive(Clone, Copy, Debug)]
pub enum DefaultValue {
    /// This text, parsed and checked like a configured value.
    Value(&'static str),
    /// Computed when loading: how (for documentation), and the function.
    Computed(&'static str, fn() -> String),
    /// No value; the text says what that means.
    Unset(&'static str),
}

/// How a key's text is parsed and checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `yes`, `true`, `1` or `no`, `false`, `0`, empty (any case).
    Bool,
    /// A decimal integer in `min..=max`.
    Integer {
        /// The smallest value allowed.
        min: u64,
        /// The largest value allowed.
        max: u64,
    },
    /// One of these words (any case; kept in lower case).
    Choice(&'static [&'static str]),
    /// An IP address or `localhost`.
    Address,
    /// Octal permissions up to `777`.
    OctalMode,
    /// A file system path.
    Path,
    /// A currency code: 1-11 upper-case letters A-Z.
    Currency,
    /// A merchant instance id.
    Instance,
    /// 64 hexadecimal digits (32 bytes).
    Key256,
    /// A PostgreSQL URL or libpq string; empty means unset.
    DatabaseUrl,
    /// An `http://` or `https://` URL.
    BaseUrl,
    /// A Taler public key: 52 Crockford base-32 characters.
    PublicKey,
    /// Space-separated `BASE_URL#CURRENCY#MASTER_PUB` triples.
    Exchanges,
}

/// How `config show` and error messages hide a key's value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Secret {
    /// Shown as is.
    No,
    /// Never shown: `********`.
    Whole,
    /// Shown with every password in it replaced by `********` (libpq
    /// connection strings, see [`super::mask_database_url`]).
    Password,
}

/// One configuration key.
#[derive(Clone, Copy, Debug)]
pub struct KeySpec {
    /// Its section, lower case; a family's ends with [`FAMILY_PLACEHOLDER`].
    pub section: &'static str,
    /// Its name, upper case.
    pub key: &'static str,
    /// Its value when none is configured.
    pub default: DefaultValue,
    /// How its text is parsed and checked.
    pub kind: Kind,
    /// Whether and how its value is hidden.
    pub secret: Secret,
    /// What it means, one line.
    pub meaning: &'static str,
    /// Its effective value in the settings, as `config show` prints it before
    /// masking; `None` when it is unset or does not apply (`PORT` when
    /// `SERVE = unix`). Family keys print as part of another key.
    pub show: fn(&Settings) -> Option<String>,
}

impl KeySpec {
    /// Whether this key belongs to a section family (`[merchant-exchange-NAME]`).
    pub fn is_family(&self) -> bool {
        self.section.ends_with(FAMILY_PLACEHOLDER)
    }

    /// Whether this key's section is `section` (lower case), or, for a family,
    /// `section` is one of the family's sections.
    pub fn in_section(&self, section: &str) -> bool {
        match self.section.strip_suffix(FAMILY_PLACEHOLDER) {
            Some(prefix) => section.len() > prefix.len() && section.starts_with(prefix),
            None => self.section == section,
        }
    }
}

/// The key `key` (upper case) of section `section` (lower case), if there is one.
pub fn lookup(section: &str, key: &str) -> Option<&'static KeySpec> {
    KEYS.iter()
        .find(|spec| spec.key == key && spec.in_section(section))
}

/// Whether any key lives in section `section` (lower case).
pub fn is_known_section(section: &str) -> bool {
    KEYS.iter().any(|spec| spec.in_section(section))
}

/// An integer kind.
const fn int(min: u64, max: u64) -> Kind {
    Kind::Integer { min, max }
}

/// The TCP settings, if the server listens on TCP.
fn tcp(settings: &Settings) -> Option<(&str, u16)> {
    match &settings.listen {
        Listen::Tcp { bind_to, port } => Some((bind_to, *port)),
        Listen::Unix { .. } => None,
    }
}

/// The UNIX socket settings, if the server listens on one.
fn unix(settings: &Settings) -> Option<(&std::path::Path, u32)> {
    match &settings.listen {
        Listen::Unix { path, mode } => Some((path, *mode)),
        Listen::Tcp { .. } => None,
    }
}

/// Every key this backend understands, grouped by section, in `config show` order.
pub const KEYS: &[KeySpec] = &[
    KeySpec {
        section: "merchant",
        key: "SERVE",
        default: DefaultValue::Value("tcp"),
        kind: Kind::Choice(&["tcp", "unix"]),
        secret: Secret::No,
        meaning: "tcp or unix",
        show: |s| Some(if tcp(s).is_some() { "tcp" } else { "unix" }.to_owned()),
    },
    KeySpec {
        section: "merchant",
        key: "PORT",
        default: DefaultValue::Value("9966"),
        kind: int(0, 65535),
        secret: Secret::No,
        meaning: "TCP port (0 picks a free one)",
        show: |s| tcp(s).map(|(_, port)| port.to_string()),
    },
    KeySpec {
        section: "merchant",
        key: "BIND_TO",
        default: DefaultValue::Value("127.0.0.1"),
        kind: Kind::Address,
        secret: Secret::No,
        meaning: "address to bind",
        show: |s| tcp(s).map(|(bind_to, _)| bind_to.to_owned()),
    },
    KeySpec {
        section: "merchant",
        key: "UNIXPATH",
        default: DefaultValue::Unset("required when SERVE = unix"),
        kind: Kind::Path,
        secret: Secret::No,
        meaning: "socket path when SERVE = unix",
        show: |s| unix(s).map(|(path, _)| path.display().to_string()),
    },
    KeySpec {
        section: "merchant",
        key: "UNIXPATH_MODE",
        default: DefaultValue::Value("660"),
        kind: Kind::OctalMode,
        secret: Secret::No,
        meaning: "octal permissions of the socket",
        show: |s| unix(s).map(|(_, mode)| format!("{mode:o}")),
    },
    KeySpec {
        section: "merchantdb-postgres",
        key: "CONFIG",
        default: DefaultValue::Unset("embedded database under DATA_DIR"),
        kind: Kind::DatabaseUrl,
        secret: Secret::Password,
        meaning: "PostgreSQL URL or libpq string; unset = embedded database",
        show: |s| s.database_url.as_ref().map(|url| url.as_str().to_owned()),
    },
    KeySpec {
        section: "taler",
        key: "CURRENCY",
        default: DefaultValue::Value("KUDOS"),
        kind: Kind::Currency,
        secret: Secret::No,
        meaning: "currency announced in /config",
        show: |s| Some(s.currency.clone()),
    },
    KeySpec {
        section: "otp",
        key: "DEFAULT_INSTANCE",
        default: DefaultValue::Value("admin"),
        kind: Kind::Instance,
        secret: Secret::No,
        meaning: "instance addressed without /instances/$ID",
        show: |s| Some(s.default_instance.to_string()),
    },
    KeySpec {
        section: "otp",
        key: "KEY_ENCRYPTION_KEY",
        default: DefaultValue::Unset("keys stored unencrypted"),
        kind: Kind::Key256,
        secret: Secret::Whole,
        meaning: "64 hex digits: encrypts device keys at rest",
        // Never the key itself: it is masked whole anyway.
        show: |s| s.key_encryption_key.as_ref().map(|_| "set".to_owned()),
    },
    KeySpec {
        section: "otp",
        key: "ACCEPT_PLAINTEXT_KEYS",
        default: DefaultValue::Value("no"),
        kind: Kind::Bool,
        secret: Secret::No,
        meaning: "start although device keys are stored in plaintext beside KEY_ENCRYPTION_KEY",
        show: |s| Some(if s.accept_plaintext_keys { "yes" } else { "no" }.to_owned()),
    },
    KeySpec {
        section: "otp",
        key: "DATA_DIR",
        default: DefaultValue::Computed(
            "/var/lib/taler-otp (root), else $XDG_DATA_HOME/taler-otp or ~/.local/share/taler-otp",
            super::default_data_dir,
        ),
        kind: Kind::Path,
        secret: Secret::No,
        meaning: "directory of the embedded database",
        show: |s| Some(s.data_dir.display().to_string()),
    },
    KeySpec {
        section: "otp",
        key: "POOL_SIZE",
        default: DefaultValue::Value("16"),
        kind: int(1, 1024),
        secret: Secret::No,
        meaning: "database connections",
        show: |s| Some(s.pool_size.to_string()),
    },
    KeySpec {
        section: "otp",
        key: "DB_TIMEOUT_MS",
        default: DefaultValue::Value("2000"),
        kind: int(50, 600_000),
        secret: Secret::No,
        meaning: "bound on waiting for a database connection",
        show: |s| Some(s.db_timeout.as_millis().to_string()),
    },
    KeySpec {
        section: "otp",
        key: "STATEMENT_TIMEOUT_MS",
        default: DefaultValue::Value("5000"),
        kind: int(0, 3_600_000),
        secret: Secret::No,
        meaning: "the server's bound on one SQL statement; past it, 503 with Retry-After (0: none)",
        show: |s| Some(s.statement_timeout.as_millis().to_string()),
    },
    KeySpec {
        section: "otp",
        key: "LOCK_TIMEOUT_MS",
        default: DefaultValue::Value("2000"),
        kind: int(0, 3_600_000),
        secret: Secret::No,
        meaning: "the server's bound on waiting for a row lock; past it, 503 with Retry-After (0: none)",
        show: |s| Some(s.lock_timeout.as_millis().to_string()),
    },
    KeySpec {
        section: "otp",
        key: "CACHE_TTL_MS",
        default: DefaultValue::Value("1000"),
        kind: int(0, 3_600_000),
        secret: Secret::No,
        meaning: "staleness bound of the token and device caches (0 disables)",
        show: |s| Some(s.cache_ttl.as_millis().to_string()),
    },
    KeySpec {
        section: "otp",
        key: "WORKERS",
        default: DefaultValue::Computed("number of CPUs", super::default_workers),
        kind: int(1, 1024),
        secret: Secret::No,
        meaning: "HTTP worker threads",
        show: |s| Some(s.workers.to_string()),
    },
    KeySpec {
        section: "otp",
        key: "BATCH_GATHER_MS",
        default: DefaultValue::Value("2"),
        kind: int(0, 100),
        secret: Secret::No,
        meaning: "how long a batch of confirmations or verifications may wait for the callers it answered to send their next requests, so that they share the next batch (0: never waits)",
        show: |s| Some(s.batch_gather.as_millis().to_string()),
    },
    KeySpec {
        section: "otp",
        key: "WRITEBACK_PACE_MS",
        default: DefaultValue::Value("1000"),
        kind: int(0, 60_000),
        secret: Secret::No,
        meaning: "embedded database only: how often serve writes the table files that changed to disk, so that the kernel never writes tens of seconds of them at once (0: leaves it to the kernel)",
        show: |s| Some(s.writeback_pace.as_millis().to_string()),
    },
    KeySpec {
        section: "otp",
        key: "BENCHMARK_ROUTE",
        default: DefaultValue::Value("no"),
        kind: Kind::Bool,
        secret: Secret::No,
        meaning: "benchmarks only: serve GET /bench/constant, a constant JSON body",
        show: |s| Some(if s.benchmark_route { "yes" } else { "no" }.to_owned()),
    },
    KeySpec {
        section: "otp",
        key: "METRICS",
        default: DefaultValue::Value("no"),
        kind: Kind::Bool,
        secret: Secret::No,
        meaning: "serve Prometheus metrics at GET /metrics on the main listener, unauthenticated",
        show: |s| Some(if s.metrics { "yes" } else { "no" }.to_owned()),
    },
    KeySpec {
        section: "otp",
        key: "VERIFY_WINDOW",
        default: DefaultValue::Value("2"),
        kind: int(0, 10),
        secret: Secret::No,
        meaning: "TOTP steps accepted on each side of the server's clock when verifying a typed code",
        show: |s| Some(s.verify.window.to_string()),
    },
    KeySpec {
        section: "otp",
        key: "HOTP_LOOKAHEAD",
        default: DefaultValue::Value("10"),
        kind: int(0, 100),
        secret: Secret::No,
        meaning: "HOTP counters accepted ahead of the stored one",
        show: |s| Some(s.verify.hotp_lookahead.to_string()),
    },
    KeySpec {
        section: "otp",
        key: "VERIFY_MAX_FAILURES",
        default: DefaultValue::Value("5"),
        kind: int(1, 2_147_483_647),
        secret: Secret::No,
        meaning: "consecutive mismatches that lock a device",
        show: |s| Some(s.verify.max_failures.to_string()),
    },
    KeySpec {
        section: "otp",
        key: "VERIFY_DAILY_FAILURES",
        default: DefaultValue::Value("100"),
        kind: int(1, 2_147_483_647),
        secret: Secret::No,
        meaning: "mismatches per device per UTC day before verification is refused until midnight UTC",
        show: |s| Some(s.verify.daily_failures.to_string()),
    },
    KeySpec {
        section: "otp",
        key: "LOGIN_MAX_FAILURES",
        default: DefaultValue::Value("5"),
        kind: int(1, 1000),
        secret: Secret::No,
        meaning: "failed password logins per client address and instance within 60 s before logins from there are refused (429)",
        show: |s| Some(s.login_max_failures.to_string()),
    },
    KeySpec {
        section: "otp",
        key: "EXCHANGES",
        default: DefaultValue::Value(""),
        kind: Kind::Exchanges,
        secret: Secret::No,
        meaning: "exchanges announced by /config: space-separated BASE_URL#CURRENCY#MASTER_PUB triples (with those of the [merchant-exchange-NAME] sections)",
        show: |s| {
            let triples: Vec<String> = s
                .exchanges
                .iter()
                .map(|e| format!("{}#{}#{}", e.base_url, e.currency, e.master_pub))
                .collect();
            Some(triples.join(" "))
        },
    },
    KeySpec {
        section: "merchant-exchange-NAME",
        key: "EXCHANGE_BASE_URL",
        default: DefaultValue::Unset("required"),
        kind: Kind::BaseUrl,
        secret: Secret::No,
        meaning: "one more exchange announced by /config: its base URL",
        show: |_| None,
    },
    KeySpec {
        section: "merchant-exchange-NAME",
        key: "CURRENCY",
        default: DefaultValue::Unset("required"),
        kind: Kind::Currency,
        secret: Secret::No,
        meaning: "that exchange's currency",
        show: |_| None,
    },
    KeySpec {
        section: "merchant-exchange-NAME",
        key: "MASTER_KEY",
        default: DefaultValue::Unset("required"),
        kind: Kind::PublicKey,
        secret: Secret::No,
        meaning: "that exchange's master public key",
        show: |_| None,
    },
];

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    #[test]
    fn keys_are_unique_upper_case_and_grouped_by_section() {
        let mut seen = BTreeSet::new();
        let mut sections: Vec<&str> = Vec::new();
        for spec in KEYS {
            assert!(seen.insert((spec.section, spec.key)), "{spec:?}");
            assert_eq!(spec.key, spec.key.to_ascii_uppercase());
            assert_eq!(
                spec.section.trim_end_matches(FAMILY_PLACEHOLDER),
                spec.section
                    .trim_end_matches(FAMILY_PLACEHOLDER)
                    .to_ascii_lowercase()
            );
            if sections.last() != Some(&spec.section) {
                assert!(!sections.contains(&spec.section), "{spec:?}");
                sections.push(spec.section);
            }
        }
    }

    #[test]
    fn only_the_exchange_sections_have_a_variable_name() {
        assert!(lookup("merchant-exchange-kudos", "MASTER_KEY").is_some());
        assert!(lookup("merchant-exchange-", "MASTER_KEY").is_none());
        assert!(lookup("merchant-exchange-kudos", "PORT").is_none());
        assert!(is_known_section("merchant-exchange-a"));
        assert!(!is_known_section("exchange"));
        assert!(!is_known_section("merchant-x"));
        let families: BTreeSet<&str> = KEYS
            .iter()
            .filter(|s| s.is_family())
            .map(|s| s.section)
            .collect();
        assert_eq!(families, BTreeSet::from(["merchant-exchange-NAME"]));
    }
}
