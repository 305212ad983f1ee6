//! The `taler-otp` command line: `serve`, `dbinit`, `instance`, `token`, `device`, `code`,
//! `config`, `rekey`, `audit`.
//!
//! Exit status: 0 on success, 1 when the operation fails (configuration, database), 2 on bad
//! input (usage errors, malformed arguments). Every failure is one line on stderr.

mod admin;
mod audit;
mod code;
mod key_source;
mod password;
mod rekey;
mod serve;
mod verify;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::config::Settings;

/// GNU Taler merchant OTP-device backend.
#[derive(Debug, Parser)]
#[command(name = "taler-otp", version, about)]
pub struct Cli {
    /// Configuration file (GNU Taler INI style); `TALER_OTP_*` variables override it.
    #[arg(
        short = 'c',
        long = "config",
        global = true,
        env = "TALER_OTP_CONFIG",
        value_name = "FILE"
    )]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the HTTP server.
    Serve {
        /// Log one JSON object per line.
        #[arg(long)]
        json_logs: bool,
    },
    /// Create or upgrade the database schema, and create the default instance.
    Dbinit,
    /// Manage instances.
    #[command(subcommand)]
    Instance(InstanceCommand),
    /// Manage access tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Manage OTP devices.
    #[command(subcommand)]
    Device(DeviceCommand),
    /// Print the confirmation string for a key, offline.
    Code(code::CodeArgs),
    /// Show the configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Encrypt device keys stored in plaintext and rotate to the configured key-encryption key
    /// (the old one from --old-key-file), in batches of one transaction each.
    Rekey(rekey::RekeyArgs),
    /// Read an instance's audit trail, or check its hash chain.
    #[command(subcommand)]
    Audit(audit::AuditCommand),
}

#[derive(Debug, Subcommand)]
enum InstanceCommand {
    /// Create an instance.
    Create {
        /// Instance id ([A-Za-z0-9._-], 1-64 characters).
        id: String,
        /// Display name (default: the id).
        #[arg(long)]
        name: Option<String>,
    },
    /// List instances.
    List,
    /// Delete an instance with its devices and tokens.
    Delete {
        /// Instance id.
        id: String,
    },
    /// Set the password for logging in at /private/token (read from the terminal without echo,
    /// or as one line from standard input; never from an argument).
    SetPassword {
        /// Instance id.
        id: String,
    },
}

#[derive(Debug, Args)]
struct InstanceArg {
    /// Instance id (default: the configured default instance).
    #[arg(long)]
    instance: Option<String>,
}

#[derive(Debug, Subcommand)]
enum TokenCommand {
    /// Create a token and print it (once) in the form that follows `Bearer `.
    Create {
        #[command(flatten)]
        instance: InstanceArg,
        /// Scope: readonly, write, all, admin, order-simple, order-pos, order-mgmt, order-full.
        #[arg(long)]
        scope: String,
        /// Lifetime in seconds (default: no expiry).
        #[arg(long)]
        duration: Option<String>,
        /// Description.
        #[arg(long, default_value = "")]
        description: String,
    },
    /// List tokens (never their secrets).
    List {
        #[command(flatten)]
        instance: InstanceArg,
    },
    /// Revoke a token by its serial (from `token list`).
    Revoke {
        #[command(flatten)]
        instance: InstanceArg,
        /// Token serial.
        serial: String,
    },
}

#[derive(Debug, Subcommand)]
enum DeviceCommand {
    /// Register a device (idempotent for identical details).
    Add {
        #[command(flatten)]
        instance: InstanceArg,
        /// Device id.
        #[arg(long)]
        id: String,
        #[command(flatten)]
        key: key_source::KeySource,
        /// Generate a random 20-byte key and print it, its otpauth:// URI and a QR code, once.
        #[arg(long, conflicts_with = "KeySource")]
        generate_key: bool,
        /// Algorithm: 0-4 or a name such as TOTP_WITHOUT_PRICE.
        #[arg(long)]
        algorithm: String,
        /// Initial counter.
        #[arg(long, default_value = "0")]
        counter: String,
        /// Description.
        #[arg(long, default_value = "")]
        description: String,
    },
    /// List devices.
    List {
        #[command(flatten)]
        instance: InstanceArg,
    },
    /// Show a device and its current code (never its key).
    Show {
        #[command(flatten)]
        instance: InstanceArg,
        /// Device id.
        id: String,
        /// Seconds since the epoch (default: now).
        #[arg(long)]
        time: Option<String>,
        /// Price for with-price algorithms.
        #[arg(long)]
        price: Option<String>,
    },
    /// Delete a device.
    Delete {
        #[command(flatten)]
        instance: InstanceArg,
        /// Device id.
        id: String,
    },
    /// Check a typed code once, as `POST …/verifications` does (exit 0 verified, 1 otherwise).
    Verify {
        #[command(flatten)]
        instance: InstanceArg,
        /// Device id.
        id: String,
        /// The code as the device shows it (8 digits).
        #[arg(long)]
        code: String,
        /// Price for with-price algorithms.
        #[arg(long)]
        price: Option<String>,
        /// What the code confirms (an order id), recorded with the outcome.
        #[arg(long)]
        reference: Option<String>,
    },
    /// Clear a device's verification lock and its counts of mismatches.
    Unlock {
        #[command(flatten)]
        instance: InstanceArg,
        /// Device id.
        id: String,
    },
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Print the effective configuration, secrets masked.
    Show,
}

/// A failed command: one line for stderr and the exit status.
#[derive(Debug)]
pub struct Failure {
    message: String,
    status: u8,
}

impl Failure {
    /// Bad input (exit 2).
    fn usage(message: impl Into<String>) -> Failure {
        Failure {
            message: message.into(),
            status: 2,
        }
    }

    /// The operation failed (exit 1).
    fn failed(message: impl Into<String>) -> Failure {
        Failure {
            message: message.into(),
            status: 1,
        }
    }
}

/// Parses the command line and runs the command.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => {
            use clap::error::ErrorKind;
            if matches!(
                err.kind(),
                ErrorKind::DisplayHelp
                    | ErrorKind::DisplayVersion
                    | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
            ) {
                let _ = err.print();
                return ExitCode::SUCCESS;
            }
            let rendered = err.render().to_string();
            let line = rendered
                .lines()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("invalid arguments");
            let detail = rendered
                .lines()
                .skip(1)
                .find(|l| l.starts_with("  "))
                .map(str::trim);
            match detail {
                Some(detail) => {
                    eprintln!("taler-otp: {} {detail}", line.trim_start_matches("error: "))
                }
                None => eprintln!("taler-otp: {}", line.trim_start_matches("error: ")),
            }
            return ExitCode::from(2);
        }
    };
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("taler-otp: {}", failure.message);
            ExitCode::from(failure.status)
        }
    }
}

fn run(cli: Cli) -> Result<(), Failure> {
    if let Command::Code(args) = &cli.command {
        return code::run(args);
    }
    let settings =
        Settings::load(cli.config.as_deref()).map_err(|err| Failure::failed(err.to_string()))?;
    if let Command::Config(ConfigCommand::Show) = &cli.command {
        print!("{}", settings.render());
        return Ok(());
    }
    if let Command::Serve { json_logs } = cli.command {
        // The server runs in an actix system, whose graceful shutdown waits for in-flight requests.
        return actix_web::rt::System::new().block_on(serve::run(settings, json_logs));
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|err| Failure::failed(format!("cannot start the runtime: {err}")))?;
    runtime.block_on(async move {
        match cli.command {
            Command::Dbinit => admin::dbinit(&settings).await,
            Command::Instance(command) => admin::instance(&settings, command).await,
            Command::Token(command) => admin::token(&settings, command).await,
            Command::Device(command) => admin::device(&settings, command).await,
            Command::Rekey(args) => rekey::run(&settings, &args).await,
            Command::Audit(command) => audit::run(&settings, command).await,
            Command::Serve { .. } | Command::Code(_) | Command::Config(_) => Ok(()),
        }
    })
}
