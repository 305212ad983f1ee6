//! From text to typed values: each [`Kind`]'s parser, the configured or
//! default value of every key ([`Values`]), and the masking of secrets.

use std::collections::BTreeMap;
use std::net::IpAddr;

use otp_store::InstanceId;
use zeroize::Zeroizing;

use super::ini::RawConfig;
use super::keys::{DefaultValue, KEYS, KeySpec, Kind, Secret};
use super::{ConfigError, ExchangeConfig};

/// A checked value.
pub enum Value {
    /// Text: a word, an address, a path, a currency, a URL, a public key.
    Text(String),
    /// An integer (also an octal mode).
    Integer(u64),
    /// Yes or no.
    Bool(bool),
    /// An instance id.
    Instance(InstanceId),
    /// A 32-byte key.
    Key(Zeroizing<[u8; 32]>),
    /// A database connection string.
    Secret(Zeroizing<String>),
    /// Exchanges.
    Exchanges(Vec<ExchangeConfig>),
}

/// The value of every key (configured, else its default), checked; `None`
/// for unset keys.
pub struct Values {
    /// The keys of fixed sections.
    single: BTreeMap<(&'static str, &'static str), Option<Value>>,
    /// The sections of families, by section name, then key.
    families: BTreeMap<String, BTreeMap<&'static str, Value>>,
}

impl Values {
    /// Checks every configured value and fills in the defaults.
    pub fn from_raw(raw: &RawConfig) -> Result<Values, ConfigError> {
        let mut single = BTreeMap::new();
        for spec in KEYS.iter().filter(|spec| !spec.is_family()) {
            let value = match raw.get(spec.section, spec.key) {
                Some(text) => Some(parse_as(spec, spec.section, text)?),
                None => match spec.default {
                    DefaultValue::Value(text) => Some(parse_as(spec, spec.section, text)?),
                    DefaultValue::Computed(_, compute) => {
                        Some(parse_as(spec, spec.section, &compute())?)
                    }
                    DefaultValue::Unset(_) => None,
                },
            };
            single.insert((spec.section, spec.key), value.flatten());
        }
        let mut families: BTreeMap<String, BTreeMap<&'static str, Value>> = BTreeMap::new();
        for (section, key, text) in raw.entries() {
            let Some(spec) = KEYS
                .iter()
                .find(|spec| spec.is_family() && spec.key == key && spec.in_section(section))
            else {
                continue;
            };
            if let Some(value) = parse_as(spec, section, text)? {
                families
                    .entry(section.to_owned())
                    .or_default()
                    .insert(spec.key, value);
            }
        }
        Ok(Values { single, families })
    }

    /// The value of a fixed section's key; `None` when unset.
    pub fn get(&self, section: &str, key: &str) -> Option<&Value> {
        let spec = super::keys::lookup(section, key)?;
        self.single
            .get(&(spec.section, spec.key))
            .and_then(Option::as_ref)
    }

    /// The integer value of `key`, converted to `T`.
    pub fn integer<T: TryFrom<u64>>(&self, section: &str, key: &str) -> Result<T, ConfigError> {
        match self.get(section, key) {
            Some(Value::Integer(n)) => T::try_from(*n).map_err(|_| internal(section, key)),
            _ => Err(internal(section, key)),
        }
    }

    /// The text value of `key`, if set.
    pub fn text(&self, section: &str, key: &str) -> Option<&str> {
        match self.get(section, key) {
            Some(Value::Text(text)) => Some(text),
            _ => None,
        }
    }

    /// The yes-or-no value of `key`.
    pub fn bool(&self, section: &str, key: &str) -> Result<bool, ConfigError> {
        match self.get(section, key) {
            Some(Value::Bool(b)) => Ok(*b),
            _ => Err(internal(section, key)),
        }
    }

    /// The sections of families, with their keys' values.
    pub fn families(&self) -> &BTreeMap<String, BTreeMap<&'static str, Value>> {
        &self.families
    }
}

/// A key the table declares with another kind than the code reads it as.
fn internal(section: &str, key: &str) -> ConfigError {
    ConfigError(format!(
        "internal error: [{section}] {key} has no value of the expected kind"
    ))
}

/// Parses `text` as the value of `spec` in `section`; `None` for an empty
/// database URL (unset).
fn parse_as(spec: &KeySpec, section: &str, text: &str) -> Result<Option<Value>, ConfigError> {
    parse(spec.kind, text).map_err(|expected| {
        let key = spec.key;
        if spec.secret == Secret::No {
            ConfigError(format!(
                "[{section}] {key}: invalid value {text:?}, expected {expected}"
            ))
        } else {
            ConfigError(format!("[{section}] {key}: expected {expected}"))
        }
    })
}

/// Parses `text` as `kind`; the error says what was expected.
pub fn parse(kind: Kind, text: &str) -> Result<Option<Value>, String> {
    let value = match kind {
        Kind::Bool => match text.to_ascii_lowercase().as_str() {
            "yes" | "true" | "1" => Value::Bool(true),
            "no" | "false" | "0" | "" => Value::Bool(false),
            _ => return Err("yes or no".to_owned()),
        },
        Kind::Integer { min, max } => text
            .parse::<u64>()
            .ok()
            .filter(|n| (min..=max).contains(n))
            .map(Value::Integer)
            .ok_or_else(|| format!("an integer between {min} and {max}"))?,
        Kind::Choice(words) => {
            let word = text.to_ascii_lowercase();
            if !words.contains(&word.as_str()) {
                return Err(words.join(" or "));
            }
            Value::Text(word)
        }
        Kind::Address => {
            if text.parse::<IpAddr>().is_err() && text != "localhost" {
                return Err("an IP address".to_owned());
            }
            Value::Text(text.to_owned())
        }
        Kind::OctalMode => u32::from_str_radix(text, 8)
            .ok()
            .filter(|mode| *mode <= 0o777)
            .map(|mode| Value::Integer(mode.into()))
            .ok_or("octal permissions such as 660")?,
        Kind::Path => Value::Text(text.to_owned()),
        Kind::Currency => Value::Text(currency(text)?.to_owned()),
        Kind::Instance => Value::Instance(InstanceId::parse(text).map_err(|err| err.to_string())?),
        Kind::Key256 => Value::Key(key256(text).ok_or("64 hexadecimal digits (32 bytes)")?),
        Kind::DatabaseUrl if text.is_empty() => return Ok(None),
        Kind::DatabaseUrl => Value::Secret(Zeroizing::new(text.to_owned())),
        Kind::BaseUrl => Value::Text(base_url(text)?.to_owned()),
        Kind::PublicKey => Value::Text(public_key(text)?),
        Kind::Exchanges => Value::Exchanges(exchanges(text)?),
    };
    Ok(Some(value))
}

fn currency(text: &str) -> Result<&str, String> {
    if text.is_empty() || text.len() > 11 || !text.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err("1-11 upper-case letters A-Z".to_owned());
    }
    Ok(text)
}

/// A 256-bit key written as 64 hexadecimal digits in either case (`KEY_ENCRYPTION_KEY`, and the
/// old key `rekey` reads).
pub(crate) fn key256(text: &str) -> Option<Zeroizing<[u8; 32]>> {
    let bytes = Zeroizing::new(
        data_encoding::HEXLOWER_PERMISSIVE
            .decode(text.as_bytes())
            .ok()?,
    );
    let mut key = Zeroizing::new([0u8; 32]);
    if bytes.len() != key.len() {
        return None;
    }
    key.copy_from_slice(&bytes);
    Some(key)
}

fn base_url(text: &str) -> Result<&str, String> {
    let host = text
        .strip_prefix("https://")
        .or_else(|| text.strip_prefix("http://"));
    match host {
        Some(rest) if !rest.is_empty() && !rest.contains(char::is_whitespace) => Ok(text),
        _ => Err("an http:// or https:// URL".to_owned()),
    }
}

/// A Taler EdDSA public key in Crockford base-32, upper case.
fn public_key(text: &str) -> Result<String, String> {
    let upper = text.to_ascii_uppercase();
    let crockford = |b: u8| b.is_ascii_digit() || (b.is_ascii_uppercase() && !b"ILOU".contains(&b));
    if upper.len() != 52 || !upper.bytes().all(crockford) {
        return Err("a public key: 52 Crockford base-32 characters".to_owned());
    }
    Ok(upper)
}

/// `BASE_URL#CURRENCY#MASTER_PUB` triples, separated by whitespace.
fn exchanges(text: &str) -> Result<Vec<ExchangeConfig>, String> {
    text.split_whitespace()
        .map(|triple| {
            let parts: Vec<&str> = triple.split('#').collect();
            let [url, cur, key] = parts.as_slice() else {
                return Err(format!(
                    "space-separated BASE_URL#CURRENCY#MASTER_PUB triples, not {triple:?}"
                ));
            };
            let within = |err: String| format!("{err} in {triple:?}");
            Ok(ExchangeConfig {
                base_url: base_url(url).map_err(within)?.to_owned(),
                currency: currency(cur).map_err(within)?.to_owned(),
                master_pub: public_key(key).map_err(within)?,
            })
        })
        .collect()
}

/// `value` as `config show` prints a key of this secrecy.
pub fn mask(secret: Secret, value: &str) -> String {
    match secret {
        Secret::No => value.to_owned(),
        Secret::Whole => "********".to_owned(),
        Secret::Password => mask_database_url(value),
    }
}

/// Replaces every password in a PostgreSQL URL (`postgres://u:pw@h`,
/// `?password=…`, `&password=…`) or libpq key-value string (`password=x`,
/// `password = x`, `password='x y'`) by `********`.
pub fn mask_database_url(url: &str) -> String {
    // libpq reads `postgresql://` and `postgres://` URIs; any other `scheme://` is masked as a
    // URI too rather than risk showing its user info.
    let is_uri = url.split_once("://").is_some_and(|(scheme, _)| {
        !scheme.is_empty()
            && scheme
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b))
    });
    if is_uri {
        mask_uri(url)
    } else {
        mask_key_values(url)
    }
}

/// The URI form: the password of the user info, and `password` parameters.
fn mask_uri(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let (location, query) = match rest.split_once('?') {
        Some((location, query)) => (location, Some(query)),
        None => (rest, None),
    };
    // The last `@` before the query: a password with an unencoded `/` or `@` stays hidden.
    let location = match location.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _password)) => format!("{user}:********@{host}"),
            None => format!("{userinfo}@{host}"),
        },
        None => location.to_owned(),
    };
    let mut out = format!("{scheme}://{location}");
    if let Some(query) = query {
        let params: Vec<String> = query
            .split('&')
            .map(|param| match param.split_once('=') {
                Some((name, _))
                    if percent_encoding::percent_decode_str(name)
                        .decode_utf8_lossy()
                        .eq_ignore_ascii_case("password") =>
                {
                    format!("{name}=********")
                }
                _ => param.to_owned(),
            })
            .collect();
        out.push('?');
        out.push_str(&params.join("&"));
    }
    out
}

/// The key-value form: `keyword = value` pairs, values unquoted (backslash
/// escapes) or in single quotes (backslash escapes), as libpq reads them.
fn mask_key_values(conninfo: &str) -> String {
    let mut out = String::with_capacity(conninfo.len());
    let mut chars = conninfo.char_indices().peekable();
    let mut copied = 0;
    loop {
        while chars.next_if(|(_, c)| c.is_whitespace()).is_some() {}
        let Some(&(start, _)) = chars.peek() else {
            break;
        };
        while chars
            .next_if(|(_, c)| !c.is_whitespace() && *c != '=')
            .is_some()
        {}
        let end = chars.peek().map_or(conninfo.len(), |(i, _)| *i);
        let keyword = conninfo.get(start..end).unwrap_or_default();
        while chars.next_if(|(_, c)| c.is_whitespace()).is_some() {}
        if chars.next_if(|(_, c)| *c == '=').is_none() {
            continue;
        }
        while chars.next_if(|(_, c)| c.is_whitespace()).is_some() {}
        let value_start = chars.peek().map_or(conninfo.len(), |(i, _)| *i);
        let quoted = chars.next_if(|(_, c)| *c == '\'').is_some();
        while let Some((_, c)) = chars.next() {
            match c {
                '\\' => {
                    chars.next();
                }
                '\'' if quoted => break,
                c if c.is_whitespace() && !quoted => break,
                _ => {}
            }
        }
        let value_end = chars.peek().map_or(conninfo.len(), |(i, _)| *i);
        // An unquoted value's end is the whitespace after it, which stays.
        let value_end = if quoted {
            value_end
        } else {
            conninfo
                .get(value_start..value_end)
                .map_or(value_end, |v| value_start + v.trim_end().len())
        };
        if keyword.eq_ignore_ascii_case("password") {
            out.push_str(conninfo.get(copied..value_start).unwrap_or_default());
            out.push_str("********");
            copied = value_end;
        }
    }
    out.push_str(conninfo.get(copied..).unwrap_or_default());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_libpq_spelling_of_a_password_is_masked() {
        for (input, masked) in [
            (
                "postgres://u:hunter2@db/taler",
                "postgres://u:********@db/taler",
            ),
            (
                "postgresql://u:hun/ter@2@db:5432/taler?sslmode=require",
                "postgresql://u:********@db:5432/taler?sslmode=require",
            ),
            (
                "postgres://db/taler?user=u&password=hunter2",
                "postgres://db/taler?user=u&password=********",
            ),
            (
                "postgres:///taler?password=hunter2&host=/run/pg",
                "postgres:///taler?password=********&host=/run/pg",
            ),
            (
                "postgres:///taler?%70assword=hunter2",
                "postgres:///taler?%70assword=********",
            ),
            ("postgres:///taler", "postgres:///taler"),
            (
                "host=x password=pw user=u",
                "host=x password=******** user=u",
            ),
            (
                "host=x password = hunter2 user=u",
                "host=x password = ******** user=u",
            ),
            (
                "host=x password='hunter 2\\' x' user=u",
                "host=x password=******** user=u",
            ),
            ("PASSWORD=hunter2", "PASSWORD=********"),
            ("password=hun\\ ter2", "password=********"),
            (
                "host=x options='-c a=postgres://' password=hunter2",
                "host=x options='-c a=postgres://' password=********",
            ),
            ("dbname=taler", "dbname=taler"),
            ("pg://u:hunter2@db/taler", "pg://u:********@db/taler"),
            ("password=", "password=********"),
        ] {
            assert_eq!(mask_database_url(input), masked, "{input}");
        }
    }

    #[test]
    fn exchanges_are_triples() {
        let key = "A".repeat(52);
        let Ok(list) = exchanges(&format!(
            " https://ex.a/#KUDOS#{key}\thttp://ex.b/#EUR#{} ",
            key.to_ascii_lowercase()
        )) else {
            panic!("valid triples");
        };
        assert_eq!(list.len(), 2);
        assert!(list.iter().all(|e| e.master_pub == key));
        assert!(exchanges("").is_ok_and(|list| list.is_empty()));
        for bad in [
            "https://ex.a/#KUDOS".to_owned(),
            format!("ftp://ex.a/#KUDOS#{key}"),
            format!("https://ex.a/#kudos#{key}"),
            format!("https://ex.a/#KUDOS#{}", "I".repeat(52)),
            format!("https://ex.a/#KUDOS#{key}#x"),
        ] {
            assert!(exchanges(&bad).is_err(), "{bad}");
        }
    }
}
