//! Logging set-up: `tracing` to stderr, filtered by `RUST_LOG` (default `info`).
//!
//! Request logs carry the request id, method, route pattern, status and latency; they never
//! carry headers, bodies or keys, so secrets cannot reach the log.
//!
//! Each line is formatted into a buffer and written with one `write` to a duplicate of file
//! descriptor 2, so workers never wait on the standard library's stderr lock; colours are used
//! only when stderr is a terminal (journald and files get plain text).

use std::io::IsTerminal;
use std::os::fd::AsFd;
use std::sync::Arc;

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber; `json` selects one JSON object per line.
pub fn init(json: bool) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let stderr = std::io::stderr();
    let ansi = stderr.is_terminal() && !json;
    let result = match stderr.as_fd().try_clone_to_owned() {
        Ok(fd) => {
            let writer = Arc::new(std::fs::File::from(fd));
            let builder = tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_ansi(ansi)
                .with_writer(writer);
            if json {
                builder.json().try_init()
            } else {
                builder.try_init()
            }
        }
        Err(_) => {
            let builder = tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_ansi(ansi)
                .with_writer(std::io::stderr);
            if json {
                builder.json().try_init()
            } else {
                builder.try_init()
            }
        }
    };
    // A second initialisation (tests) keeps the first subscriber.
    drop(result);
}
