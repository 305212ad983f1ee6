//! The configuration as text: GNU Taler-style INI files and the
//! `TALER_OTP_<SECTION>__<KEY>` environment overlay, before validation.
//!
//! File syntax: `[section]` headers, `KEY = value` lines, `#` or `%` comments (also after a
//! value, preceded by whitespace), optional double quotes around values. Section and key
//! names are case-insensitive. Unknown sections and keys (those not in
//! [`super::keys::KEYS`]) are errors, not silently ignored.

use std::collections::BTreeMap;

use super::ConfigError;
use super::keys;

/// Prefix of the environment variables that override the file.
pub const ENV_PREFIX: &str = "TALER_OTP_";

/// The file and environment as text, before validation: section (lower case)
/// and key (upper case) to value.
#[derive(Debug, Default)]
pub struct RawConfig {
    values: BTreeMap<(String, String), String>,
}

impl RawConfig {
    /// The text of `key` in `section`, if configured.
    pub fn get(&self, section: &str, key: &str) -> Option<&str> {
        self.values
            .get(&(section.to_owned(), key.to_owned()))
            .map(String::as_str)
    }

    /// Every configured (section, key, value).
    pub fn entries(&self) -> impl Iterator<Item = (&str, &str, &str)> {
        self.values
            .iter()
            .map(|((section, key), value)| (section.as_str(), key.as_str(), value.as_str()))
    }

    /// Sets `key` of `section` (any case) to `value`, if the table knows it;
    /// `origin` names the line or variable in errors.
    fn set(
        &mut self,
        section: &str,
        key: &str,
        value: String,
        origin: &str,
    ) -> Result<(), ConfigError> {
        let section = section.to_ascii_lowercase();
        let key = key.to_ascii_uppercase();
        if !keys::is_known_section(&section) {
            return Err(ConfigError(format!(
                "{origin}: unknown section [{section}]"
            )));
        }
        if keys::lookup(&section, &key).is_none() {
            return Err(ConfigError(format!(
                "{origin}: unknown key {key} in section [{section}]"
            )));
        }
        self.values.insert((section, key), value);
        Ok(())
    }

    /// Applies `TALER_OTP_<SECTION>__<KEY>` variables (section dashes as underscores); other
    /// `TALER_OTP_` variables are errors (except `TALER_OTP_CONFIG`, the configuration file's
    /// path).
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

/// `value` without a comment that follows it after whitespace (unless it is quoted).
fn strip_comment(value: &str) -> &str {
    if value.starts_with('"') {
        return value;
    }
    let cut = value
        .char_indices()
        .find(|(i, c)| {
            (*c == '#' || *c == '%')
                && value
                    .get(..*i)
                    .is_some_and(|before| before.ends_with(char::is_whitespace))
        })
        .map(|(i, _)| i);
    match cut.and_then(|i| value.get(..i)) {
        Some(before) => before.trim_end(),
        None => value,
    }
}

/// `value` without the double quotes around it, if any.
fn unquote(value: &str) -> String {
    let trimmed = value.trim();
    if let Some(inner) = trimmed.strip_prefix('"') {
        if let Some(end) = inner.rfind('"') {
            return inner.get(..end).unwrap_or_default().to_owned();
        }
    }
    trimmed.to_owned()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn comments_quotes_and_case() {
        let raw = parse_ini(
            "# top\n[Merchant]\nport = 1 # one\n% other\n[otp]\nDATA_DIR = \"/a # b\"\n\
             EXCHANGES = https://ex/#KUDOS#X\n",
            "t",
        )
        .unwrap();
        assert_eq!(raw.get("merchant", "PORT"), Some("1"));
        assert_eq!(raw.get("otp", "DATA_DIR"), Some("/a # b"));
        assert_eq!(raw.get("otp", "EXCHANGES"), Some("https://ex/#KUDOS#X"));
        let err = parse_ini("PORT = 1\n", "t").unwrap_err().to_string();
        assert!(err.contains("before any [section]"), "{err}");
        let err = parse_ini("[merchant\n", "t").unwrap_err().to_string();
        assert!(err.contains("t:1") && err.contains("malformed"), "{err}");
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
    fn exchange_sections_come_from_the_file_and_the_environment() {
        let mut raw = parse_ini("[merchant-exchange-kudos]\nCURRENCY = KUDOS\n", "t").unwrap();
        raw.apply_env(
            [(
                "TALER_OTP_MERCHANT_EXCHANGE_KUDOS__MASTER_KEY".to_owned(),
                "K".to_owned(),
            )]
            .into_iter(),
        )
        .unwrap();
        assert_eq!(
            raw.get("merchant-exchange-kudos", "CURRENCY"),
            Some("KUDOS")
        );
        assert_eq!(raw.get("merchant-exchange-kudos", "MASTER_KEY"), Some("K"));
        let err = parse_ini("[merchant-exchange-x]\nPORT = 1\n", "t")
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown key PORT"), "{err}");
    }
}
