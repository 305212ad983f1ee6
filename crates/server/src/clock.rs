//! The server's clock: the one place that reads the time of day.
//!
//! `otp-algo` takes time as a parameter; handlers, the caches and the CLI ask this module, so a
//! test or a future "fake time" switch has one place to change.

use chrono::{DateTime, Utc};

/// The current time.
pub fn now() -> DateTime<Utc> {
    Utc::now()
}

/// The current time in whole seconds since the epoch (0 before 1970, which never happens).
pub fn now_seconds() -> u64 {
    u64::try_from(now().timestamp()).unwrap_or(0)
}
