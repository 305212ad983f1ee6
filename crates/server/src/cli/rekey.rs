//! `taler-otp rekey`: puts every device key under its instance's data key and every data key
//! under the configured `[otp] KEY_ENCRYPTION_KEY`, in batches of one transaction each
//! (`otp_store::rekey`): it encrypts keys stored in plaintext, moves keys encrypted before
//! per-instance data keys existed, and rotates from an old key-encryption key, given once.
//!
//! The old key is read from a file (`--old-key-file FILE`, or `-` for standard input): 64
//! hexadecimal digits, surrounding white space ignored. Never from an argument or the
//! environment, where it would linger in shell history or `/proc`.

use std::io::Read;
use std::path::{Path, PathBuf};

use otp_store::{Store, key_check, migrate, rekey};
use zeroize::Zeroizing;

use super::Failure;
use super::admin::db_failure;
use crate::config::{Settings, key256};
use crate::database::Database;
use crate::keys_at_rest;

/// The arguments of `taler-otp rekey`.
#[derive(Debug, clap::Args)]
pub struct RekeyArgs {
    /// File holding the key-encryption key the database's keys are encrypted with now, when
    /// rotating to the configured one (64 hex digits; `-` reads standard input).
    #[arg(long, value_name = "FILE")]
    old_key_file: Option<PathBuf>,
    /// Rows per transaction.
    #[arg(long, default_value = "500", value_parser = clap::value_parser!(u32).range(1..=100_000))]
    batch_size: u32,
}

/// Runs `taler-otp rekey`.
pub async fn run(settings: &Settings, args: &RekeyArgs) -> Result<(), Failure> {
    if settings.key_encryption_key.is_none() {
        return Err(Failure::failed(
            "rekey encrypts with [otp] KEY_ENCRYPTION_KEY, which is not set: configure the (new) key first",
        ));
    }
    let old_key = args
        .old_key_file
        .as_deref()
        .map(read_key_file)
        .transpose()?;
    let database = Database::open(settings)
        .await
        .map_err(|err| Failure::failed(err.to_string()))?;
    let store = Store::connect(&database.store_config).map_err(db_failure)?;
    let result = rekey_store(&store, old_key.as_ref(), args.batch_size).await;
    store.pool().close();
    database.close();
    result
}

async fn rekey_store(
    store: &Store,
    old_key: Option<&Zeroizing<[u8; 32]>>,
    batch_size: u32,
) -> Result<(), Failure> {
    let status = migrate::status(store).await.map_err(db_failure)?;
    if status.current != status.latest {
        return Err(Failure::failed(format!(
            "database schema is at version {} but this binary needs version {}: run `taler-otp dbinit` first",
            status.current, status.latest
        )));
    }
    let batch = usize::try_from(batch_size).unwrap_or(500);
    let report = rekey::rekey(store, old_key, batch)
        .await
        .map_err(|err| match err {
            err @ otp_store::StoreError::KeyMismatch(_) => {
                Failure::failed(keys_at_rest::explain(&err))
            }
            err => db_failure(err),
        })?;
    let status = key_check::check(store, false)
        .await
        .map_err(|err| Failure::failed(keys_at_rest::explain(&err)))?;
    println!(
        "data keys wrapped anew: {}, created: {}; device keys encrypted: {}, moved under their instance's data key: {}; {} transactions",
        report.rewrapped, report.data_keys_created, report.encrypted, report.moved, report.batches
    );
    println!(
        "all {} device keys are encrypted under their instance's data key, wrapped by key-encryption key id {}",
        status.under_data_keys,
        status.key_id.as_deref().unwrap_or("-")
    );
    Ok(())
}

/// The key in `path` (`-`: standard input).
fn read_key_file(path: &Path) -> Result<Zeroizing<[u8; 32]>, Failure> {
    let mut text = Zeroizing::new(String::new());
    let read = if path == Path::new("-") {
        std::io::stdin().take(4096).read_to_string(&mut text)
    } else {
        std::fs::File::open(path).and_then(|file| file.take(4096).read_to_string(&mut text))
    };
    read.map_err(|err| {
        Failure::failed(format!(
            "--old-key-file: cannot read {}: {err}",
            path.display()
        ))
    })?;
    key256(text.trim()).ok_or_else(|| {
        Failure::usage(format!(
            "--old-key-file: {} does not hold 64 hexadecimal digits (32 bytes)",
            path.display()
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_64_hex_digits_in_either_case() {
        let hex = "000102030405060708090a0b0c0d0e0f101112131415161718191A1B1C1D1E1F";
        let key = key256(hex).unwrap();
        assert_eq!(key.first(), Some(&0));
        assert_eq!(key.last(), Some(&0x1f));
        assert!(key256(&hex[2..]).is_none());
        assert!(key256(&format!("{hex}00")).is_none());
        assert!(key256("zz").is_none());
    }
}
