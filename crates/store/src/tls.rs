//! TLS to PostgreSQL, as libpq's `sslmode` and `sslrootcert` ask for it, for every connection
//! the store makes (the pool, the change listener, the migrations).
//!
//! tokio-postgres knows only the `sslmode`s `disable`, `prefer` and `require`, and no
//! `sslrootcert`: [`split`] takes both out of the connection string (`key=value` or URL form)
//! before the driver sees it, and [`TlsSettings::apply`] sets the driver's mode and builds the
//! rustls configuration they mean:
//!
//! | `sslmode` | encrypted | server certificate checked |
//! |---|---|---|
//! | `disable` | never | – |
//! | `allow`, `prefer` (default) | when the server offers TLS | no |
//! | `require` | always | no; with `sslrootcert`, as `verify-ca` (as libpq does) |
//! | `verify-ca` | always | chains to `sslrootcert` (default: the system's trust store) |
//! | `verify-full` | always | chains, and names the host connected to |
//!
//! Without a certificate check the handshake is still signed with the key of the certificate
//! the server presents, so the connection is encrypted to whoever holds that key: a defence
//! against eavesdropping, not against an active man in the middle. `sslrootcert=system` is the
//! system's trust store. Unix-socket connections are never encrypted (PostgreSQL offers no TLS
//! there), whatever the mode, as with libpq. Client certificates (`sslcert`, `sslkey`) are not
//! supported.

use std::borrow::Cow;
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::ServerCertVerifier;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use rustls::{ClientConfig, RootCertStore};
use tokio_postgres::config::{Host, SslMode as DriverSslMode};
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::error::StoreError;

mod verify;

use verify::NameBlind;

/// The TLS connector every connection of the store uses.
pub(crate) type Connector = MakeRustlsConnect;

/// libpq's `sslmode`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) enum SslMode {
    /// No TLS.
    Disable,
    /// TLS when the server offers it (libpq tries without first; we try with first).
    Allow,
    /// TLS when the server offers it.
    #[default]
    Prefer,
    /// TLS always, no certificate check (unless `sslrootcert` is given).
    Require,
    /// TLS always, the certificate chains to a trusted root.
    VerifyCa,
    /// TLS always, the certificate chains to a trusted root and names the host.
    VerifyFull,
}

impl SslMode {
    fn parse(value: &str) -> Result<SslMode, StoreError> {
        Ok(match value {
            "disable" => SslMode::Disable,
            "allow" => SslMode::Allow,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            other => {
                return Err(StoreError::InvalidConfig(format!(
                    "sslmode {other:?}: expected disable, allow, prefer, require, verify-ca or verify-full"
                )));
            }
        })
    }

    /// The libpq name.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Allow => "allow",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }
}

/// What the connection string asks of TLS.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct TlsSettings {
    /// `sslmode`.
    pub(crate) mode: SslMode,
    /// `sslrootcert`: a PEM file of trusted certificates, or `system`.
    pub(crate) root_cert: Option<String>,
}

/// How much of the server's certificate is checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Check {
    Nothing,
    Chain,
    ChainAndName,
}

/// Parameters only libpq knows that we refuse by name rather than let the driver call unknown.
const UNSUPPORTED: &[&str] = &["sslcert", "sslkey", "sslpassword"];

/// Splits `sslmode` and `sslrootcert` out of a connection string: the rest, for the driver, and
/// what they ask. A string this cannot tokenize is handed on whole, for the driver to report.
pub(crate) fn split(url: &str) -> Result<(String, TlsSettings), StoreError> {
    let (rest, taken) = match ["postgres://", "postgresql://"]
        .iter()
        .find_map(|prefix| url.strip_prefix(prefix).map(|rest| (*prefix, rest)))
    {
        Some((prefix, rest)) => split_url(prefix, rest)?,
        None => match split_key_values(url) {
            Some(split) => split,
            None => return Ok((url.to_owned(), TlsSettings::default())),
        },
    };
    let mut settings = TlsSettings::default();
    for (key, value) in taken {
        match key.as_str() {
            "sslmode" => settings.mode = SslMode::parse(&value)?,
            "sslrootcert" => settings.root_cert = Some(value),
            other => {
                return Err(StoreError::InvalidConfig(format!(
                    "{other}: client certificates are not supported"
                )));
            }
        }
    }
    Ok((rest, settings))
}

fn is_taken(key: &str) -> bool {
    key == "sslmode" || key == "sslrootcert" || UNSUPPORTED.contains(&key)
}

/// The URL form: the query parameters after the user info (which the driver reads up to the
/// first `@`), percent-decoded.
fn split_url(prefix: &str, rest: &str) -> Result<(String, Vec<(String, String)>), StoreError> {
    let after_user = rest.find('@').map_or(0, |at| at + 1);
    let query_at = rest
        .get(after_user..)
        .and_then(|tail| tail.find('?'))
        .map(|at| after_user + at);
    let Some((base, query)) = query_at.and_then(|at| rest.split_at_checked(at)) else {
        return Ok((format!("{prefix}{rest}"), Vec::new()));
    };
    let mut kept = Vec::new();
    let mut taken = Vec::new();
    for param in query.trim_start_matches('?').split('&') {
        let (key, value) = param.split_once('=').unwrap_or((param, ""));
        let key = decode(key)?;
        if is_taken(&key) {
            taken.push((key.into_owned(), decode(value)?.into_owned()));
        } else {
            kept.push(param);
        }
    }
    let mut out = format!("{prefix}{base}");
    if !kept.is_empty() {
        out.push('?');
        out.push_str(&kept.join("&"));
    }
    Ok((out, taken))
}

fn decode(text: &str) -> Result<Cow<'_, str>, StoreError> {
    percent_encoding::percent_decode_str(text)
        .decode_utf8()
        .map_err(|_| StoreError::InvalidConfig("connection URL: invalid percent-encoding".into()))
}

/// The `key=value` form, tokenized as the driver does (values in single quotes or bare,
/// backslash escapes); `None` when it is malformed.
fn split_key_values(text: &str) -> Option<(String, Vec<(String, String)>)> {
    let mut chars = text.char_indices().peekable();
    let mut kept: Vec<&str> = Vec::new();
    let mut taken = Vec::new();
    loop {
        while chars.next_if(|(_, c)| c.is_whitespace()).is_some() {}
        let Some(&(start, _)) = chars.peek() else {
            break;
        };
        let mut key = String::new();
        while let Some((_, c)) = chars.next_if(|(_, c)| !c.is_whitespace() && *c != '=') {
            key.push(c);
        }
        while chars.next_if(|(_, c)| c.is_whitespace()).is_some() {}
        chars.next_if(|(_, c)| *c == '=')?;
        while chars.next_if(|(_, c)| c.is_whitespace()).is_some() {}
        let mut value = String::new();
        if chars.next_if(|(_, c)| *c == '\'').is_some() {
            loop {
                match chars.next()? {
                    (_, '\'') => break,
                    (_, '\\') => value.push(chars.next()?.1),
                    (_, c) => value.push(c),
                }
            }
        } else {
            while let Some((_, c)) = chars.next_if(|(_, c)| !c.is_whitespace()) {
                if c == '\\' {
                    value.push(chars.next()?.1);
                } else {
                    value.push(c);
                }
            }
            if value.is_empty() {
                return None;
            }
        }
        let end = chars.peek().map_or(text.len(), |(at, _)| *at);
        if is_taken(&key) {
            taken.push((key, value));
        } else {
            kept.push(text.get(start..end)?);
        }
    }
    Some((kept.join(" "), taken))
}

impl TlsSettings {
    /// Sets the driver's mode on `pg` (without TLS when every host is a Unix socket) and builds
    /// the connector; fails when `sslrootcert` cannot be read or holds no certificate.
    pub(crate) fn apply(&self, pg: &mut tokio_postgres::Config) -> Result<Connector, StoreError> {
        let hosts = pg.get_hosts();
        let unix_only = !hosts.is_empty() && hosts.iter().all(|host| matches!(host, Host::Unix(_)));
        pg.ssl_mode(match self.mode {
            _ if unix_only => DriverSslMode::Disable,
            SslMode::Disable => DriverSslMode::Disable,
            SslMode::Allow | SslMode::Prefer => DriverSslMode::Prefer,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => DriverSslMode::Require,
        });
        let check = if unix_only {
            Check::Nothing
        } else {
            self.check()
        };
        Ok(MakeRustlsConnect::new(client_config(
            check,
            self.root_cert.as_deref(),
        )?))
    }

    fn check(&self) -> Check {
        match self.mode {
            SslMode::Disable | SslMode::Allow | SslMode::Prefer => Check::Nothing,
            SslMode::Require if self.root_cert.is_some() => Check::Chain,
            SslMode::Require => Check::Nothing,
            SslMode::VerifyCa => Check::Chain,
            SslMode::VerifyFull => Check::ChainAndName,
        }
    }
}

fn client_config(check: Check, root_cert: Option<&str>) -> Result<ClientConfig, StoreError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier: Arc<dyn ServerCertVerifier> = match check {
        Check::Nothing => Arc::new(NameBlind {
            roots: None,
            provider: provider.clone(),
        }),
        Check::Chain => Arc::new(NameBlind {
            roots: Some(Arc::new(roots(root_cert)?)),
            provider: provider.clone(),
        }),
        Check::ChainAndName => WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots(root_cert)?),
            provider.clone(),
        )
        .build()
        .map_err(|err| StoreError::InvalidConfig(format!("sslrootcert: {err}")))?,
    };
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|err| StoreError::InvalidConfig(format!("TLS: {err}")))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    // PostgreSQL 17 checks the protocol name when the client names one.
    config.alpn_protocols = vec![b"postgresql".to_vec()];
    Ok(config)
}

/// The trusted roots: the PEM file `sslrootcert`, or the system's store when it is unset or
/// `system`.
fn roots(root_cert: Option<&str>) -> Result<RootCertStore, StoreError> {
    let mut roots = RootCertStore::empty();
    match root_cert {
        None | Some("system") => {
            let found = rustls_native_certs::load_native_certs();
            let (added, _) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                return Err(StoreError::InvalidConfig(
                    "no trusted certificates in the system's store: give sslrootcert".into(),
                ));
            }
        }
        Some(path) => {
            let bad = |err: &dyn std::fmt::Display| {
                StoreError::InvalidConfig(format!("sslrootcert {path}: {err}"))
            };
            for cert in CertificateDer::pem_file_iter(path).map_err(|err| bad(&err))? {
                roots
                    .add(cert.map_err(|err| bad(&err))?)
                    .map_err(|err| bad(&err))?;
            }
            if roots.is_empty() {
                return Err(bad(&"no certificate in the file"));
            }
        }
    }
    Ok(roots)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(mode: SslMode, root_cert: Option<&str>) -> TlsSettings {
        TlsSettings {
            mode,
            root_cert: root_cert.map(str::to_owned),
        }
    }

    #[test]
    fn key_value_strings_lose_sslmode_and_sslrootcert_only() {
        let (rest, tls) = split(
            "host=db.example sslmode=verify-full  sslrootcert='/etc/a b\\'c.pem' dbname = taler",
        )
        .unwrap();
        assert_eq!(rest, "host=db.example dbname = taler");
        assert_eq!(tls, settings(SslMode::VerifyFull, Some("/etc/a b'c.pem")));
        let (rest, tls) = split("host=/run/postgresql dbname=taler").unwrap();
        assert_eq!(rest, "host=/run/postgresql dbname=taler");
        assert_eq!(tls, TlsSettings::default());
    }

    #[test]
    fn urls_lose_sslmode_and_sslrootcert_only() {
        let (rest, tls) = split(
            "postgres://u:p%3Fw@db.example:5433/taler?sslmode=verify-ca&application_name=x&sslrootcert=%2Fetc%2Fca.pem",
        )
        .unwrap();
        assert_eq!(
            rest,
            "postgres://u:p%3Fw@db.example:5433/taler?application_name=x"
        );
        assert_eq!(tls, settings(SslMode::VerifyCa, Some("/etc/ca.pem")));
        let (rest, tls) = split("postgresql://u:a?b@h/taler?sslmode=require").unwrap();
        assert_eq!(rest, "postgresql://u:a?b@h/taler");
        assert_eq!(tls.mode, SslMode::Require);
        assert_eq!(split("postgres://h/db").unwrap().0, "postgres://h/db");
    }

    #[test]
    fn unknown_modes_and_client_certificates_are_named() {
        let err = split("host=h sslmode=verify").unwrap_err().to_string();
        assert!(err.contains("verify-full"), "{err}");
        let err = split("postgres://h/db?sslcert=/x").unwrap_err().to_string();
        assert!(err.contains("sslcert"), "{err}");
    }

    #[test]
    fn malformed_strings_are_left_to_the_driver() {
        assert_eq!(split("host='unterminated").unwrap().0, "host='unterminated");
    }

    #[test]
    fn modes_map_to_the_driver_and_to_checks() {
        let mode = |tls: TlsSettings, url: &str| {
            let mut pg: tokio_postgres::Config = url.parse().unwrap();
            tls.apply(&mut pg).unwrap();
            pg.get_ssl_mode()
        };
        for (ssl, url, driver) in [
            (SslMode::Disable, "host=h", DriverSslMode::Disable),
            (SslMode::Prefer, "host=h", DriverSslMode::Prefer),
            (SslMode::Require, "host=h", DriverSslMode::Require),
            (
                SslMode::Require,
                "host=/run/postgresql",
                DriverSslMode::Disable,
            ),
        ] {
            assert_eq!(mode(settings(ssl, None), url), driver, "{url}");
        }
        assert_eq!(settings(SslMode::Require, None).check(), Check::Nothing);
        assert_eq!(settings(SslMode::Require, Some("/x")).check(), Check::Chain);
        assert_eq!(settings(SslMode::VerifyCa, None).check(), Check::Chain);
        assert_eq!(
            settings(SslMode::VerifyFull, None).check(),
            Check::ChainAndName
        );
    }

    #[test]
    fn an_unreadable_root_file_is_a_configuration_error() {
        let mut pg: tokio_postgres::Config = "host=h".parse().unwrap();
        let err = settings(SslMode::VerifyFull, Some("/nonexistent/root.crt"))
            .apply(&mut pg)
            .err()
            .map(|err| err.to_string())
            .unwrap_or_default();
        assert!(err.contains("/nonexistent/root.crt"), "{err}");
    }
}
