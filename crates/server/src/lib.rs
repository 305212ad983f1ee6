//! taler-otp: the GNU Taler merchant backend's OTP-device module as an actix-web service.
//!
//! This crate is the only one that knows HTTP. Handlers are thin: they authorize, parse, call
//! `otp_store` for data and `otp_algo` for codes, and map every failure through [`ApiError`]
//! into a Taler error body. The `taler-otp` binary (`main.rs`, `cli/`) wraps it with the
//! operator's commands.
//!
//! **Invariants:** device keys and token secrets never appear in a response after creation or
//! in a log line; every non-2xx answer is a Taler `ErrorDetail`; a GET never changes state.

pub mod api;
pub mod audit_events;
pub mod auth;
pub mod auth_guard;
pub mod body;
pub mod cache;
pub mod cli;
pub mod clock;
pub mod config;
pub mod database;
pub mod enrolment;
pub mod error;
pub mod extract;
pub mod keys_at_rest;
pub mod login_throttle;
pub mod metrics;
pub mod middleware;
pub mod openapi;
pub mod params;
pub mod password;
pub mod query;
pub mod routes;
pub mod startup;
pub mod state;
pub mod taler_ec;
pub mod telemetry;
pub mod unix_socket;
pub mod verify;
pub mod version;
pub mod webui;

pub use error::ApiError;
pub use startup::Application;
