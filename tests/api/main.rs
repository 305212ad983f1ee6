//! End-to-end tests of the HTTP API: one binary, the real server against real PostgreSQL.
//! Each module walks one part of `docs/api.md`.

#![cfg(test)]

mod audit; // §14: the audit trail, its actors and its permission.
mod auth; // §7: tokens, scopes, order of checks, instance isolation.
mod codes; // §5: otp_code equals every public vector; faketime/price validation.
mod confirmations; // §9: the confirmations extension, counter advance under concurrency.
mod descriptions; // §2: descriptions of at most 4 KiB, on POST and PATCH.
mod enrolment; // §11: generated keys, provisioning URI, QR codes decoded back.
mod errors; // §8: Taler error bodies for framework failures.
mod floods; // §7: floods of bad credentials: no queries, throttling per address.
mod login; // §12: logging in with a password or a refreshable token; revocation; throttling.
mod observability; // §14: health, readiness and the Prometheus metrics.
mod openapi; // The committed document, its drift test, responses validated against it.
mod otp_devices; // §1–§3: CRUD, idempotency, null handling, algorithms, ids.
mod outage; // Database down: 503 with Retry-After, recovery without restart.
mod timeouts; // §8: statement and lock timeouts: 503 with Retry-After, never a hang.
mod unix_socket; // [merchant] SERVE = unix: the socket's mode from the start.
mod verifications; // §10: a typed code verified once, limits, history, permissions.
mod webui; // §13 with §11: the operator page in headless Chromium (WebDriver).
