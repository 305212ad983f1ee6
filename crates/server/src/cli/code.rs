//! `taler-otp code`: the confirmation string for a key, computed offline.
//!
//! Prints exactly the confirmation string and nothing else; prints nothing (exit 0) when the
//! algorithm yields no code; exits 2 with one line naming the problem on bad input.

use clap::Args;
use otp_algo::Algorithm;

use super::Failure;
use super::key_source::KeySource;
use crate::clock::now_seconds;
use crate::params;

/// Arguments of `taler-otp code`.
#[derive(Debug, Args)]
pub struct CodeArgs {
    #[command(flatten)]
    key: KeySource,
    /// Algorithm: 0-4 or a name such as TOTP_WITH_PRICE (case-insensitive).
    #[arg(long)]
    algorithm: String,
    /// Seconds since the epoch (default: now).
    #[arg(long, allow_hyphen_values = true)]
    time: Option<String>,
    /// Price for with-price algorithms, e.g. EUR:1.5.
    #[arg(long, allow_hyphen_values = true)]
    price: Option<String>,
    /// Counter for HOTP algorithms (default 0).
    #[arg(long, allow_hyphen_values = true)]
    counter: Option<String>,
}

/// Runs `taler-otp code`.
pub fn run(args: &CodeArgs) -> Result<(), Failure> {
    let key = args.key.read()?.ok_or_else(|| {
        Failure::usage("--key, --key-file or --key-env is required (--key - reads standard input)")
    })?;
    let algorithm: Algorithm = args
        .algorithm
        .parse()
        .map_err(|err: otp_algo::AlgorithmError| Failure::usage(format!("--algorithm: {err}")))?;
    let time = match &args.time {
        None => now_seconds(),
        Some(text) => parse_time(text)?,
    };
    let price = args
        .price
        .as_deref()
        .map(params::amount)
        .transpose()
        .map_err(|why| Failure::usage(format!("--price: {why}")))?;
    let counter = match &args.counter {
        None => 0,
        Some(text) => parse_counter(text)?,
    };
    if let Some(code) = otp_algo::confirmation(&key, algorithm, price.as_ref(), time, counter) {
        println!("{code}");
    }
    Ok(())
}

/// Parses `--time`: whole seconds, 0 ≤ time ≤ 18446744073709.
pub fn parse_time(text: &str) -> Result<u64, Failure> {
    params::seconds(text).map_err(|why| Failure::usage(format!("--time: {why}")))
}

/// Parses `--counter`: 0 ≤ counter ≤ 2^63 − 1.
pub fn parse_counter(text: &str) -> Result<u64, Failure> {
    params::counter(text).map_err(|why| Failure::usage(format!("--counter: {why}")))
}
