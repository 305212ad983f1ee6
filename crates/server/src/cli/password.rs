//! `taler-otp instance set-password ID` (contract §12): reads the instance's password from the
//! terminal without echo (asked twice), or from standard input when that is not a terminal
//! (one line, its line ending removed), never from an argument; stores its Argon2id hash.

use std::io::{BufRead, IsTerminal};

use otp_store::{InstanceId, Store, instances};
use zeroize::Zeroizing;

use super::Failure;
use crate::password::{MAX_PASSWORD_BYTES, PasswordError, hash_password, validate_password};

/// Reads the password for `instance`, hashes it and stores the hash. The caller has checked that
/// the instance exists, so that nobody types a password for nothing.
pub async fn set_password(store: &Store, instance: &InstanceId) -> Result<(), Failure> {
    let password = read_password(instance)?;
    let hash = tokio::task::spawn_blocking(move || hash_password(&password))
        .await
        .map_err(|err| Failure::failed(format!("hashing the password failed: {err}")))?
        .map_err(rule_failure)?;
    instances::set_password_hash(store, instance, Some(&hash))
        .await
        .map_err(|err| match err {
            otp_store::StoreError::InstanceNotFound => {
                Failure::failed(format!("instance '{instance}' not found"))
            }
            err => Failure::failed(format!(
                "database error: {}",
                crate::error::error_chain(&err)
            )),
        })
}

/// The password from the terminal (asked twice) or from standard input.
fn read_password(instance: &InstanceId) -> Result<Zeroizing<String>, Failure> {
    let stdin = std::io::stdin();
    let password = if stdin.is_terminal() {
        let first = Zeroizing::new(
            rpassword::prompt_password(format!("New password for instance '{instance}': "))
                .map_err(|err| Failure::failed(format!("cannot read the password: {err}")))?,
        );
        validate_password(&first).map_err(rule_failure)?;
        let second = Zeroizing::new(
            rpassword::prompt_password("Repeat the password: ")
                .map_err(|err| Failure::failed(format!("cannot read the password: {err}")))?,
        );
        if *first != *second {
            return Err(Failure::usage("the passwords differ; nothing was changed"));
        }
        first
    } else {
        first_line(stdin.lock())?
    };
    validate_password(&password).map_err(rule_failure)?;
    Ok(password)
}

/// The first line of `input` without its line ending (`\n` or `\r\n`), read no further than a
/// longest password allows.
fn first_line(input: impl BufRead) -> Result<Zeroizing<String>, Failure> {
    let mut line = Zeroizing::new(String::new());
    // A line longer than the longest password (plus "\r\n" and one byte) is refused, not kept.
    let limit = u64::try_from(MAX_PASSWORD_BYTES + 3).unwrap_or(u64::MAX);
    input.take(limit).read_line(&mut line).map_err(|err| {
        Failure::usage(format!(
            "cannot read the password from standard input: {err}"
        ))
    })?;
    if let Some(stripped) = line.strip_suffix('\n') {
        let stripped = stripped.strip_suffix('\r').unwrap_or(stripped);
        return Ok(Zeroizing::new(stripped.to_owned()));
    }
    Ok(line)
}

fn rule_failure(err: PasswordError) -> Failure {
    match err {
        PasswordError::Empty | PasswordError::TooLong => {
            Failure::usage(format!("password: {err} (1 to {MAX_PASSWORD_BYTES} bytes)"))
        }
        err => Failure::failed(err.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(input: &str) -> Result<String, u8> {
        first_line(input.as_bytes())
            .map(|password| password.to_string())
            .map_err(|failure| failure.status)
    }

    #[test]
    fn the_first_line_without_its_ending() {
        assert_eq!(line("secret\n").as_deref(), Ok("secret"));
        assert_eq!(line("secret\r\n").as_deref(), Ok("secret"));
        assert_eq!(line("secret").as_deref(), Ok("secret"));
        assert_eq!(line(" spaced  \nsecond\n").as_deref(), Ok(" spaced  "));
        assert_eq!(line("\n").as_deref(), Ok(""));
        assert_eq!(line("").as_deref(), Ok(""));
    }

    #[test]
    fn an_overlong_line_is_cut_and_then_refused() {
        let long = format!("{}\n", "x".repeat(MAX_PASSWORD_BYTES + 10));
        let read = line(&long).unwrap();
        assert!(read.len() > MAX_PASSWORD_BYTES);
        assert!(validate_password(&read).is_err());
        let longest = format!("{}\n", "x".repeat(MAX_PASSWORD_BYTES));
        assert_eq!(line(&longest).unwrap().len(), MAX_PASSWORD_BYTES);
    }

    #[test]
    fn rule_failures_are_usage_errors() {
        assert_eq!(rule_failure(PasswordError::Empty).status, 2);
        assert_eq!(rule_failure(PasswordError::TooLong).status, 2);
        assert_eq!(rule_failure(PasswordError::Busy).status, 1);
    }
}
