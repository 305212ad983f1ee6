//! Tests of the configuration: loading, limits, exchanges, rendering, and that README.md and
//! the example configuration agree with the table of keys.

#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

use std::collections::BTreeSet;

use super::*;

fn load(text: &str) -> Result<Settings, ConfigError> {
    Settings::from_raw(&parse_ini(text, "test.conf")?)
}

/// Why `text` does not load.
fn refusal(text: &str) -> String {
    load(text).unwrap_err().to_string()
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
    let err = refusal("[merchant]\nPROT = 1\n");
    assert!(err.contains("PROT") && err.contains("test.conf:2"), "{err}");
    let err = refusal("[bogus]\nX = 1\n");
    assert!(err.contains("[bogus]"), "{err}");
    let err = refusal("[merchant]\nPORT = 99999\n");
    assert!(err.contains("PORT") && err.contains("99999"), "{err}");
    let err = refusal("[otp]\nKEY_ENCRYPTION_KEY = abc\n");
    assert!(
        err.contains("KEY_ENCRYPTION_KEY") && !err.contains("abc"),
        "{err}"
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
    let err = refusal("[otp]\nBENCHMARK_ROUTE = maybe\n");
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
    assert!(text.contains("KEY_ENCRYPTION_KEY = ********"), "{text}");
    assert_eq!(
        mask_database_url("host=x password=pw user=u"),
        "host=x password=******** user=u"
    );
}

#[test]
fn defaults_of_the_verification_and_login_limits() {
    let settings = load("").unwrap();
    assert_eq!(
        settings.verify,
        VerifyPolicy {
            window: 2,
            hotp_lookahead: 10,
            max_failures: 5,
            daily_failures: 100
        }
    );
    assert_eq!(settings.login_max_failures, 5);
    assert!(settings.exchanges.is_empty());
    let settings = load(
        "[otp]\nVERIFY_WINDOW = 0\nHOTP_LOOKAHEAD = 100\nVERIFY_MAX_FAILURES = 2147483647\n\
         VERIFY_DAILY_FAILURES = 1\nLOGIN_MAX_FAILURES = 1000\n",
    )
    .unwrap();
    assert_eq!(settings.verify.window, 0);
    assert_eq!(settings.verify.hotp_lookahead, 100);
    assert_eq!(settings.verify.max_failures, 2_147_483_647);
    assert_eq!(settings.verify.daily_failures, 1);
    assert_eq!(settings.login_max_failures, 1000);
    for bad in [
        "VERIFY_WINDOW = 11",
        "HOTP_LOOKAHEAD = 101",
        "VERIFY_MAX_FAILURES = 0",
        "VERIFY_DAILY_FAILURES = 2147483648",
        "LOGIN_MAX_FAILURES = 1001",
    ] {
        let err = refusal(&format!("[otp]\n{bad}\n"));
        let key = bad.split(' ').next().unwrap_or_default();
        assert!(err.contains(key), "{err}");
    }
}

#[test]
fn exchanges_come_from_the_list_and_the_sections() {
    let key = "A".repeat(52);
    let settings = load(&format!(
        "[otp]\nEXCHANGES = https://a.example/#KUDOS#{key}\n\
         [merchant-exchange-b]\nEXCHANGE_BASE_URL = https://b.example/\nCURRENCY = EUR\n\
         MASTER_KEY = {key}\n"
    ))
    .unwrap();
    let urls: Vec<&str> = settings
        .exchanges
        .iter()
        .map(|e| e.base_url.as_str())
        .collect();
    assert_eq!(urls, ["https://a.example/", "https://b.example/"]);
    assert_eq!(settings.exchanges.last().unwrap().currency, "EUR");
    let shown = settings.render();
    assert!(
        shown.contains(&format!(
            "EXCHANGES = https://a.example/#KUDOS#{key} https://b.example/#EUR#{key}\n"
        )),
        "{shown}"
    );
    let err = refusal("[merchant-exchange-c]\nCURRENCY = EUR\n");
    assert!(
        err.contains("[merchant-exchange-c]") && err.contains("EXCHANGE_BASE_URL"),
        "{err}"
    );
    let err = refusal("[otp]\nEXCHANGES = https://a.example/\n");
    assert!(err.contains("EXCHANGES"), "{err}");
}

#[test]
fn rendered_settings_load_again_to_the_same_rendering() {
    let settings = load(
        "[merchant]\nSERVE = unix\nUNIXPATH = /run/x.sock\n[otp]\nWORKERS = 3\n\
         [merchantdb-postgres]\nCONFIG = postgres:///taler\n",
    )
    .unwrap();
    let text = settings.render();
    assert!(text.contains("UNIXPATH_MODE = 660\n"), "{text}");
    assert!(!text.contains("PORT"), "{text}");
    assert_eq!(load(&text).unwrap().render(), text);
}

/// The (section, key) pairs of README.md's table under "## Configuration";
/// a row may name several keys (`UNIXPATH`, `UNIXPATH_MODE`).
fn readme_keys() -> BTreeSet<(String, String)> {
    let readme = include_str!("../../../../README.md");
    let section = readme.split("\n## Configuration\n").nth(1).unwrap();
    let section = section.split("\n## ").next().unwrap();
    let mut keys = BTreeSet::new();
    for row in section.lines().filter(|l| l.starts_with("| `")) {
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        let name = cells[1].trim_matches('`').to_owned();
        for key in cells[2].split(',') {
            keys.insert((name.clone(), key.trim().trim_matches('`').to_owned()));
        }
    }
    keys
}

#[test]
fn the_example_configuration_loads_and_shows_every_key() {
    let example = include_str!("../../../../contrib/taler-otp.conf");
    let raw = parse_ini(example, "contrib/taler-otp.conf").unwrap();
    assert!(Settings::from_raw(&raw).is_ok());
    for spec in keys::KEYS {
        let line = format!("\n{} =", spec.key);
        let commented = format!("\n# {} =", spec.key);
        assert!(
            example.contains(&line) || example.contains(&commented),
            "{spec:?}"
        );
    }
}

#[test]
fn the_readme_table_lists_every_key_and_no_other() {
    let table: BTreeSet<(String, String)> = keys::KEYS
        .iter()
        .map(|s| (s.section.to_owned(), s.key.to_owned()))
        .collect();
    assert_eq!(readme_keys(), table);
}
