//! Instance passwords (contract §12): Argon2id hashes in PHC string format, and the bounded
//! place where they are computed.
//!
//! One check costs tens of milliseconds of CPU and 19 MiB of memory on purpose. So that a flood
//! of login attempts can neither starve the HTTP workers nor the database pool, checks run on
//! the blocking thread pool behind a semaphore with few permits ([`PasswordWork`]); a request
//! that cannot get a permit within a bounded wait is answered "busy" (503 with `Retry-After`)
//! instead of queueing without end. Passwords are never logged; the comparison inside
//! [`verify_password`] is argon2's constant-time one.

use std::sync::Arc;
use std::time::Duration;

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use tokio::sync::Semaphore;

/// Memory cost of new hashes, in KiB (OWASP's minimum for Argon2id: 19 MiB).
pub const MEMORY_KIB: u32 = 19 * 1024;
/// Iterations of new hashes.
pub const ITERATIONS: u32 = 2;
/// Lanes of new hashes.
pub const PARALLELISM: u32 = 1;

/// The longest password accepted, in bytes.
pub const MAX_PASSWORD_BYTES: usize = 1024;

/// Password checks that may run at once (per server process).
pub const DEFAULT_PERMITS: usize = 2;
/// How long a request waits for a permit before it is answered "busy".
pub const DEFAULT_WAIT: Duration = Duration::from_secs(1);

/// What can go wrong with a password.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PasswordError {
    /// The password is empty.
    #[error("the password is empty")]
    Empty,
    /// The password is longer than [`MAX_PASSWORD_BYTES`].
    #[error("the password is longer than {MAX_PASSWORD_BYTES} bytes")]
    TooLong,
    /// No permit for a password check within the bounded wait: retry later.
    #[error("too many password checks at once")]
    Busy,
    /// Hashing failed (no randomness for the salt, or a bug).
    #[error("password hashing failed: {0}")]
    Hashing(String),
}

/// Checks the password rules: 1 to [`MAX_PASSWORD_BYTES`] bytes.
pub fn validate_password(password: &str) -> Result<(), PasswordError> {
    if password.is_empty() {
        Err(PasswordError::Empty)
    } else if password.len() > MAX_PASSWORD_BYTES {
        Err(PasswordError::TooLong)
    } else {
        Ok(())
    }
}

/// The Argon2id hasher with this module's parameters for new hashes.
fn hasher() -> Result<Argon2<'static>, PasswordError> {
    let params = Params::new(MEMORY_KIB, ITERATIONS, PARALLELISM, None)
        .map_err(|err| PasswordError::Hashing(err.to_string()))?;
    Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
}

/// Hashes `password` (after [`validate_password`]) with a fresh random salt into a PHC string
/// (`$argon2id$v=19$m=19456,t=2,p=1$SALT$HASH`). CPU-heavy: call it through [`PasswordWork`]
/// from async code.
pub fn hash_password(password: &str) -> Result<String, PasswordError> {
    validate_password(password)?;
    let salt = SaltString::generate(&mut OsRng);
    hasher()?
        .hash_password(password.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|err| PasswordError::Hashing(err.to_string()))
}

/// Whether `password` matches the PHC string `phc`, with the parameters recorded in it.
/// `false` for a malformed `phc` or a password outside the rules. CPU-heavy: call it through
/// [`PasswordWork`] from async code.
pub fn verify_password(password: &str, phc: &str) -> bool {
    if validate_password(password).is_err() {
        return false;
    }
    let Ok(parsed) = PasswordHash::new(phc) else {
        return false;
    };
    // `Argon2::default()` verifies with the algorithm, version and costs recorded in `phc`.
    Argon2::default()
        .verify_password(password.as_bytes(), &parsed)
        .is_ok()
}

/// The bounded place where password hashes are computed: at most `permits` at once, on the
/// blocking thread pool; a caller that waits longer than `wait` for a permit gets
/// [`PasswordError::Busy`]. Cheap to clone; clones share the permits.
#[derive(Clone, Debug)]
pub struct PasswordWork {
    permits: Arc<Semaphore>,
    wait: Duration,
}

impl Default for PasswordWork {
    fn default() -> PasswordWork {
        PasswordWork::new(DEFAULT_PERMITS, DEFAULT_WAIT)
    }
}

impl PasswordWork {
    /// At most `permits` (at least one) computations at once; callers wait at most `wait`.
    pub fn new(permits: usize, wait: Duration) -> PasswordWork {
        PasswordWork {
            permits: Arc::new(Semaphore::new(permits.max(1))),
            wait,
        }
    }

    /// Runs `work` on the blocking pool once a permit is free. The permit is held until `work`
    /// ends, even if the caller gives up meanwhile, so the bound holds for the CPU actually used.
    pub async fn run<T, F>(&self, work: F) -> Result<T, PasswordError>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let permit = tokio::time::timeout(self.wait, Arc::clone(&self.permits).acquire_owned())
            .await
            .map_err(|_| PasswordError::Busy)?
            .map_err(|_| PasswordError::Busy)?;
        tokio::task::spawn_blocking(move || {
            let outcome = work();
            drop(permit);
            outcome
        })
        .await
        .map_err(|err| PasswordError::Hashing(format!("password task failed: {err}")))
    }

    /// [`hash_password`], bounded.
    pub async fn hash(
        &self,
        password: zeroize::Zeroizing<String>,
    ) -> Result<String, PasswordError> {
        validate_password(&password)?;
        self.run(move || hash_password(&password)).await?
    }

    /// [`verify_password`], bounded.
    pub async fn verify(
        &self,
        password: zeroize::Zeroizing<String>,
        phc: String,
    ) -> Result<bool, PasswordError> {
        self.run(move || verify_password(&password, &phc)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;
    use zeroize::Zeroizing;

    #[test]
    fn a_hash_verifies_its_password_only() {
        let phc = hash_password("correct horse").unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
        assert!(!phc.contains("correct horse"));
        assert!(verify_password("correct horse", &phc));
        assert!(!verify_password("correct hors", &phc));
        assert!(!verify_password("", &phc));
        assert!(!verify_password("correct horse", "not a phc string"));
        // Salted: the same password hashes differently each time.
        assert_ne!(phc, hash_password("correct horse").unwrap());
    }

    #[test]
    fn password_rules() {
        assert_eq!(hash_password(""), Err(PasswordError::Empty));
        let long = "x".repeat(MAX_PASSWORD_BYTES + 1);
        assert_eq!(hash_password(&long), Err(PasswordError::TooLong));
        assert!(validate_password(&"é".repeat(MAX_PASSWORD_BYTES / 2)).is_ok());
        assert!(validate_password(" ").is_ok());
    }

    #[test]
    fn hashes_with_other_recorded_parameters_still_verify() {
        let params = Params::new(8, 1, 1, None).unwrap();
        let weak = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
        let salt = SaltString::generate(&mut OsRng);
        let phc = weak.hash_password(b"pw", &salt).unwrap().to_string();
        assert!(verify_password("pw", &phc));
        assert!(!verify_password("pv", &phc));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn work_is_bounded_and_a_caller_that_waits_too_long_is_busy() {
        let work = PasswordWork::new(1, Duration::from_millis(50));
        let slow = work.clone();
        let holder = tokio::spawn(async move {
            slow.run(|| std::thread::sleep(Duration::from_millis(400)))
                .await
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        let started = Instant::now();
        assert_eq!(work.run(|| ()).await, Err(PasswordError::Busy));
        assert!(started.elapsed() < Duration::from_millis(300));
        holder.await.unwrap().unwrap();
        assert_eq!(work.run(|| 7).await, Ok(7));
    }

    #[tokio::test]
    async fn bounded_hash_and_verify() {
        let work = PasswordWork::default();
        let phc = work
            .hash(Zeroizing::new("secret".to_owned()))
            .await
            .unwrap();
        assert_eq!(
            work.verify(Zeroizing::new("secret".to_owned()), phc.clone())
                .await,
            Ok(true)
        );
        assert_eq!(
            work.verify(Zeroizing::new("Secret".to_owned()), phc).await,
            Ok(false)
        );
        assert_eq!(
            work.hash(Zeroizing::new(String::new())).await,
            Err(PasswordError::Empty)
        );
    }

    /// The cost of one check with the parameters of new hashes. Run it in release to see the
    /// production figure: `cargo test --release -p otp-server --lib password::tests::timing --
    /// --ignored --nocapture`.
    #[test]
    #[ignore = "a measurement, not a check"]
    fn timing() {
        let phc = hash_password("a password of ordinary length").unwrap();
        let rounds = 20;
        let started = Instant::now();
        for _ in 0..rounds {
            assert!(verify_password("a password of ordinary length", &phc));
        }
        let per_check = started.elapsed() / rounds;
        println!(
            "argon2id m={MEMORY_KIB} KiB t={ITERATIONS} p={PARALLELISM}: {per_check:?} per check"
        );
    }
}
