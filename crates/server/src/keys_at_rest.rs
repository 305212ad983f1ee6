//! The key-encryption key against the database, for `serve` and the operator's commands: a
//! missing or wrong `[otp] KEY_ENCRYPTION_KEY` stops them at once with one line naming the
//! problem and what to do, instead of failing every read of a device.

use otp_store::key_check::{self, KeyMismatch, KeyStatus};
use otp_store::{Store, StoreError};

/// Checks the configured key against `store` (see `otp_store::key_check::check`); logs what
/// is left for `taler-otp rekey` to do.
pub async fn check(store: &Store, accept_plaintext: bool) -> Result<KeyStatus, StoreError> {
    let status = key_check::check(store, accept_plaintext).await?;
    if status.plaintext > 0 && status.key_id.is_some() {
        tracing::warn!(
            count = status.plaintext,
            "device keys stored in plaintext beside a key-encryption key (ACCEPT_PLAINTEXT_KEYS); encrypt them with `taler-otp rekey`"
        );
    }
    if status.first_form > 0 {
        tracing::warn!(
            count = status.first_form,
            "device keys encrypted without a per-instance data key (written before migration 8); `taler-otp rekey` moves them under their instance's data key"
        );
    }
    Ok(status)
}

/// What to do about `mismatch`, naming the configuration key or the command.
pub fn remedy(mismatch: &KeyMismatch) -> &'static str {
    match mismatch {
        KeyMismatch::Missing { .. } | KeyMismatch::Undecryptable { .. } => {
            "set [otp] KEY_ENCRYPTION_KEY to the key they were encrypted with"
        }
        KeyMismatch::Wrong { .. } => {
            "configure the right [otp] KEY_ENCRYPTION_KEY, or, to change keys, configure the new one and run `taler-otp rekey --old-key-file FILE` with the old one in FILE"
        }
        KeyMismatch::Plaintext { .. } => {
            "encrypt them with `taler-otp rekey`, or set [otp] ACCEPT_PLAINTEXT_KEYS = yes to serve meanwhile (new keys are stored encrypted)"
        }
        KeyMismatch::RotationUnfinished { .. } => {
            "run `taler-otp rekey --old-key-file FILE` again with the old key in FILE"
        }
        KeyMismatch::OldKeyWrong { .. } => {
            "give the key the database's device keys are encrypted with now"
        }
    }
}

/// One line for `err`: the mismatch and its remedy, or the error chain.
pub fn explain(err: &StoreError) -> String {
    match err {
        StoreError::KeyMismatch(mismatch) => format!("{err}; {}", remedy(mismatch)),
        err => crate::error::error_chain(err),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_mismatch_names_its_remedy() {
        let wrong = StoreError::KeyMismatch(KeyMismatch::Wrong {
            configured: "aa".into(),
            database: "bb".into(),
        });
        let line = explain(&wrong);
        assert!(
            line.contains("bb") && line.contains("rekey --old-key-file"),
            "{line}"
        );
        let plaintext = StoreError::KeyMismatch(KeyMismatch::Plaintext { count: 3 });
        let line = explain(&plaintext);
        assert!(
            line.contains('3') && line.contains("ACCEPT_PLAINTEXT_KEYS"),
            "{line}"
        );
        assert!(!line.contains('\n'));
    }
}
