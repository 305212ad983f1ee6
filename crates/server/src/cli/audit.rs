//! `taler-otp audit list` and `taler-otp audit verify`: an instance's audit trail and the check
//! of its hash chain (`docs/audit.md`).

use clap::Subcommand;
use otp_store::audit::{self, AuditEntry};

use super::admin::{db_failure, instance_or_default, with_current_store};
use super::{Failure, InstanceArg};
use crate::config::Settings;

/// Rows read per round trip by `audit list`.
const PAGE: u32 = 1000;

/// The `audit` subcommands.
#[derive(Debug, Subcommand)]
pub(super) enum AuditCommand {
    /// Print an instance's audit trail, oldest first, one row per line (tab-separated: serial,
    /// chain, seq, time, event, device, token serial, client, details, hash).
    List {
        #[command(flatten)]
        instance: InstanceArg,
        /// Only rows after this serial.
        #[arg(long, default_value = "0")]
        since: String,
        /// The most rows to print.
        #[arg(long, default_value = "100")]
        limit: String,
    },
    /// Check an instance's audit chains: every row's hash, every link, no gap, the heads. Names
    /// the first broken row and exits 1 if there is one; else prints a digest of the heads to
    /// record elsewhere.
    Verify {
        #[command(flatten)]
        instance: InstanceArg,
    },
}

/// Runs `taler-otp audit …`.
pub(super) async fn run(settings: &Settings, command: AuditCommand) -> Result<(), Failure> {
    with_current_store(settings, |store| async move {
        match command {
            AuditCommand::List {
                instance,
                since,
                limit,
            } => {
                let instance = instance_or_default(&instance, settings)?;
                let mut since = crate::params::counter(&since)
                    .ok()
                    .and_then(|since| i64::try_from(since).ok())
                    .ok_or_else(|| {
                        Failure::usage(format!(
                            "--since: expected a non-negative integer, got {since:?}"
                        ))
                    })?;
                let mut left = limit
                    .bytes()
                    .all(|b| b.is_ascii_digit())
                    .then(|| limit.parse::<u64>().ok())
                    .flatten()
                    .filter(|limit| *limit >= 1)
                    .ok_or_else(|| {
                        Failure::usage(format!(
                            "--limit: expected a positive integer, got {limit:?}"
                        ))
                    })?;
                println!("serial\tchain\tseq\ttime\tevent\tdevice\ttoken\tclient\tdetails\thash");
                while left > 0 {
                    let page = u32::try_from(left).unwrap_or(PAGE).min(PAGE);
                    let entries = audit::list(&store, &instance, since, page)
                        .await
                        .map_err(db_failure)?;
                    for entry in &entries {
                        println!("{}", line(entry));
                    }
                    match entries.last() {
                        Some(last) if entries.len() == page as usize => {
                            since = last.serial;
                            left -= u64::from(page);
                        }
                        _ => break,
                    }
                }
            }
            AuditCommand::Verify { instance } => {
                let instance = instance_or_default(&instance, settings)?;
                let report = audit::verify_chain(&store, &instance)
                    .await
                    .map_err(db_failure)?;
                if let Some(broken) = report.first_broken {
                    return Err(Failure::failed(format!(
                        "audit trail of instance '{instance}' is broken in {} at seq {}: {} ({} rows read)",
                        chain_name(&broken.chain),
                        broken.seq,
                        broken.reason,
                        report.rows
                    )));
                }
                println!(
                    "audit trail of instance '{instance}' intact: {} rows in {} chains; heads digest {}",
                    report.rows,
                    report.heads.len(),
                    data_encoding::HEXLOWER.encode(&report.anchor())
                );
            }
        }
        Ok(())
    })
    .await
}

/// How a chain is named in messages.
fn chain_name(chain: &str) -> String {
    if chain.is_empty() {
        "the instance's own chain".to_owned()
    } else {
        format!("the chain of device '{chain}'")
    }
}

/// One row as `audit list` prints it.
fn line(entry: &AuditEntry) -> String {
    let dash = || "-".to_owned();
    format!(
        "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
        entry.serial,
        if entry.chain.is_empty() {
            "-"
        } else {
            entry.chain.as_str()
        },
        entry.seq,
        entry
            .time
            .to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        entry.event,
        entry.device.clone().unwrap_or_else(dash),
        entry
            .token_serial
            .map_or_else(dash, |serial| serial.to_string()),
        entry.client.clone().unwrap_or_else(dash),
        entry.details,
        data_encoding::HEXLOWER.encode(&entry.hash),
    )
}
