//! Logging set-up: `tracing` to stderr, filtered by `RUST_LOG` (default `info`).
//!
//! Request logs carry the request id, method, route pattern, status and latency; they never
//! carry headers, bodies or keys, so secrets cannot reach the log.
//!
//! Dependencies never log below `info`, whatever `RUST_LOG` says: their debug and trace output
//! is dropped before it is formatted ([`dependency_cap`]). tokio-postgres, for one, logs every
//! statement with its parameters at `debug` (through the `log` bridge), and those parameters are
//! device keys, token hashes and password hashes. Only this project's own crates may log at
//! `debug` and `trace`, and they never log secrets.
//!
//! Each line is formatted into a buffer and written with one `write` to a duplicate of file
//! descriptor 2, so workers never wait on the standard library's stderr lock; colours are used
//! only when stderr is a terminal (journald and files get plain text).

use std::io::IsTerminal;
use std::os::fd::AsFd;
use std::sync::Arc;

use tracing::Level;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::fmt::writer::BoxMakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, fmt};

/// The crates whose events and spans may be logged below `info` (when `RUST_LOG` asks for it).
pub const OWN_TARGETS: [&str; 5] = [
    "otp_server",
    "otp_store",
    "otp_embedded_pg",
    "otp_algo",
    "taler_otp",
];

/// The filter applied on top of `RUST_LOG`: every target at `info` and above, this project's
/// own crates at every level. Dependencies' debug and trace output (tokio-postgres logs each
/// statement's parameters there) never reaches the log.
pub fn dependency_cap() -> Targets {
    OWN_TARGETS
        .iter()
        .fold(Targets::new().with_default(Level::INFO), |targets, own| {
            targets.with_target(*own, Level::TRACE)
        })
}

/// Installs the global subscriber; `json` selects one JSON object per line.
pub fn init(json: bool) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let stderr = std::io::stderr();
    let ansi = stderr.is_terminal() && !json;
    let writer = match stderr.as_fd().try_clone_to_owned() {
        Ok(fd) => BoxMakeWriter::new(Arc::new(std::fs::File::from(fd))),
        Err(_) => BoxMakeWriter::new(std::io::stderr),
    };
    let registry = tracing_subscriber::registry()
        .with(filter)
        .with(dependency_cap());
    let layer = fmt::layer().with_ansi(ansi).with_writer(writer);
    let result = if json {
        registry.with(layer.json()).try_init()
    } else {
        registry.with(layer).try_init()
    };
    // A second initialisation (tests) keeps the first subscriber.
    drop(result);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dependencies_are_capped_at_info_and_our_crates_are_not() {
        let cap = dependency_cap();
        for target in [
            "tokio_postgres::query",
            "tokio_postgres",
            "postgres",
            "actix_server",
            "rustls::client",
            "deadpool",
        ] {
            assert!(cap.would_enable(target, &Level::INFO), "{target}");
            assert!(cap.would_enable(target, &Level::WARN), "{target}");
            assert!(!cap.would_enable(target, &Level::DEBUG), "{target}");
            assert!(!cap.would_enable(target, &Level::TRACE), "{target}");
        }
        for target in ["otp_server::state", "otp_store::tokens", "taler_otp"] {
            assert!(cap.would_enable(target, &Level::TRACE), "{target}");
        }
    }
}
