//! Floods of bad credentials cost no database work (docs/api.md §7, SECURITY.md).
//!
//! - A secret that does not have the shape the store generates
//!   ([`otp_store::tokens::is_well_formed`]) is never looked up: it is treated as absent.
//! - What a lookup found wrong is remembered briefly (at most `CACHE_TTL_MS`, at most 1 s): an
//!   unknown instance, an unknown token of an instance, and whether an instance exists (so
//!   absent or malformed credentials need no query to tell 404 from 401). Token and instance
//!   change notifications forget these entries like the positive caches' entries.
//! - Failed authentications (401, 404 for the instance) count per client address (IPv6: per
//!   /64) over [`WINDOW`]; from [`MAX_FAILURES`] on, requests from there that would need a
//!   lookup are refused with 429, code 9906, and `Retry-After`, answered after [`TARPIT`] so that
//!   a sequential flood slows down without costing the workers anything but a timer. Tokens
//!   found valid within the last minute are still looked up, and tokens in the positive cache are
//!   served before this check, so valid tokens are not refused because of other clients'
//!   failures.
//!
//! Each counted failure is logged with the client's address (at most [`MAX_FAILURES`] lines per
//! address and window), and once more when the address starts being refused.

use std::net::IpAddr;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use actix_web::HttpRequest;
use otp_store::InstanceId;
use otp_store::changes::Change;
use otp_store::tokens::AuthOutcome;

use crate::cache::TtlCache;
use crate::error::ApiError;
use crate::login_throttle::{LoginThrottle, network_of};

/// How long a failed authentication counts.
pub const WINDOW: Duration = Duration::from_secs(10);
/// Failed authentications per client address within [`WINDOW`] before lookups from there are
/// refused.
pub const MAX_FAILURES: u32 = 100;
/// The longest a failure found by a lookup is remembered.
pub const NEGATIVE_TTL: Duration = Duration::from_secs(1);
/// How long a refused request waits before its 429 goes out: a client that sends one request
/// at a time, as brute force does, slows down to two a second, at the cost of a timer.
pub const TARPIT: Duration = Duration::from_millis(500);
/// How long a token found valid may still be looked up from a refused address.
pub const RECENTLY_VALID: Duration = Duration::from_secs(60);
/// Most entries each of the guard's caches holds, and most addresses counted.
const CAPACITY: usize = 100_000;

/// The client's address (the TCP peer), as the guard counts it; `None` on a UNIX socket.
pub fn peer(req: &HttpRequest) -> Option<IpAddr> {
    req.peer_addr().map(|addr| addr.ip())
}

/// The negative caches and the per-address throttle of failed authentications, shared by every
/// worker of a server.
pub struct AuthGuard {
    /// Token hashes a lookup found unknown, expired or of another instance, per instance.
    unknown_tokens: TtlCache<InstanceId, [u8; 32], ()>,
    /// Whether an instance exists, as the last lookup found.
    instances: TtlCache<InstanceId, (), bool>,
    /// Token hashes found valid recently: looked up even from a refused address.
    recently_valid: TtlCache<InstanceId, [u8; 32], ()>,
    throttle: Mutex<LoginThrottle>,
    /// How long a refused request waits for its answer.
    tarpit: Duration,
    /// The throttle counts per (address, instance); the guard files every address under this
    /// one id, so it counts per address. (`None` cannot happen: "any" is a valid id.)
    any: Option<InstanceId>,
}

impl AuthGuard {
    /// A guard remembering failures for `cache_ttl` (at most [`NEGATIVE_TTL`]; zero remembers
    /// nothing).
    pub fn new(cache_ttl: Duration) -> AuthGuard {
        AuthGuard::with_limits(cache_ttl, MAX_FAILURES, TARPIT)
    }

    /// A guard refusing lookups from an address once `max_failures` failures count, answering
    /// each refusal after `tarpit`.
    pub fn with_limits(cache_ttl: Duration, max_failures: u32, tarpit: Duration) -> AuthGuard {
        let ttl = cache_ttl.min(NEGATIVE_TTL);
        AuthGuard {
            unknown_tokens: TtlCache::new(ttl, None, CAPACITY),
            instances: TtlCache::new(ttl, None, CAPACITY),
            recently_valid: TtlCache::new(RECENTLY_VALID, None, CAPACITY),
            throttle: Mutex::new(LoginThrottle::with_limits(max_failures, WINDOW, CAPACITY)),
            tarpit,
            any: InstanceId::parse("any").ok(),
        }
    }

    /// 429, after [`TARPIT`], while `client` is refused, unless the token (`hash`) was found
    /// valid recently.
    pub async fn admit(
        &self,
        client: Option<IpAddr>,
        instance: &InstanceId,
        hash: Option<&[u8; 32]>,
    ) -> Result<(), ApiError> {
        let (Some(client), Some(any)) = (client, &self.any) else {
            return Ok(());
        };
        let checked = self.lock().check(client, any, Instant::now());
        match checked {
            Ok(()) => Ok(()),
            Err(_)
                if hash.is_some_and(|hash| self.recently_valid.get(instance, hash).is_some()) =>
            {
                Ok(())
            }
            Err(retry_after) => {
                tokio::time::sleep(self.tarpit).await;
                Err(ApiError::AuthThrottled { retry_after })
            }
        }
    }

    /// The failure a lookup of `hash` (`None`: absent or malformed credentials) on `instance`
    /// would find, when it is known without one.
    pub fn known_failure(
        &self,
        instance: &InstanceId,
        hash: Option<&[u8; 32]>,
    ) -> Option<ApiError> {
        let exists = self.instances.get(instance, &()).map(|hit| hit.value);
        match (exists, hash) {
            (Some(false), _) => Some(ApiError::InstanceUnknown),
            (Some(true), None) => Some(ApiError::Unauthorized),
            (_, Some(hash)) if self.unknown_tokens.get(instance, hash).is_some() => {
                Some(ApiError::Unauthorized)
            }
            _ => None,
        }
    }

    /// Remembers what a lookup of `hash` on `instance`, started at `started`, found.
    pub fn learn(
        &self,
        instance: &InstanceId,
        hash: Option<&[u8; 32]>,
        outcome: &AuthOutcome,
        started: Instant,
    ) {
        let exists = !matches!(outcome, AuthOutcome::InstanceUnknown);
        self.instances.insert(instance.clone(), (), exists, started);
        match (outcome, hash) {
            (AuthOutcome::Invalid, Some(hash)) => {
                self.unknown_tokens
                    .insert(instance.clone(), *hash, (), started)
            }
            (AuthOutcome::Valid(_), Some(hash)) => {
                self.recently_valid
                    .insert(instance.clone(), *hash, (), started)
            }
            _ => {}
        }
    }

    /// Counts a failed authentication (`error`: 401 or 404) from `client` on `instance`, logs
    /// it with the client's address, and returns `error`.
    pub fn failed(
        &self,
        client: Option<IpAddr>,
        instance: &InstanceId,
        error: ApiError,
    ) -> ApiError {
        let shown = client.map_or_else(|| "unknown".to_owned(), |addr| addr.to_string());
        tracing::warn!(client = %shown, %instance, failure = %error, "authentication failed");
        let (Some(client), Some(any)) = (client, &self.any) else {
            return error;
        };
        let now = Instant::now();
        let mut throttle = self.lock();
        throttle.record_failure(client, any, now);
        if let Err(seconds) = throttle.check(client, any, now) {
            drop(throttle);
            let network = network_of(client);
            tracing::warn!(
                client = %shown,
                %network,
                seconds,
                "too many failed authentications: refusing lookups from this address"
            );
        }
        error
    }

    /// Forgets what a change in the database may have made wrong.
    pub fn apply_change(&self, change: &Change) {
        match change {
            Change::Tokens { instance } => self.unknown_tokens.remove_group(instance),
            Change::Instance { instance } => {
                self.unknown_tokens.remove_group(instance);
                self.instances.remove_group(instance);
            }
            Change::Resync => {
                self.unknown_tokens.clear();
                self.instances.clear();
            }
            _ => {}
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LoginThrottle> {
        self.throttle.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use otp_store::tokens::AccessToken;

    fn shop() -> InstanceId {
        InstanceId::parse("shop").unwrap()
    }

    fn valid() -> AuthOutcome {
        AuthOutcome::Valid(AccessToken {
            serial: 1,
            instance: shop(),
            scope: "write".into(),
            expires_at: None,
            description: String::new(),
            created_at: chrono::DateTime::UNIX_EPOCH,
        })
    }

    #[test]
    fn failures_are_remembered_until_a_change_forgets_them() {
        let guard = AuthGuard::new(Duration::from_secs(5));
        let ghost = InstanceId::parse("ghost").unwrap();
        let started = Instant::now();
        assert!(guard.known_failure(&shop(), Some(&[1; 32])).is_none());
        guard.learn(&ghost, None, &AuthOutcome::InstanceUnknown, started);
        guard.learn(&shop(), Some(&[1; 32]), &AuthOutcome::Invalid, started);
        assert!(matches!(
            guard.known_failure(&ghost, Some(&[1; 32])),
            Some(ApiError::InstanceUnknown)
        ));
        assert!(matches!(
            guard.known_failure(&shop(), Some(&[1; 32])),
            Some(ApiError::Unauthorized)
        ));
        // The instance is known to exist: absent credentials need no lookup either.
        assert!(matches!(
            guard.known_failure(&shop(), None),
            Some(ApiError::Unauthorized)
        ));
        assert!(guard.known_failure(&shop(), Some(&[2; 32])).is_none());

        guard.apply_change(&Change::Tokens { instance: shop() });
        assert!(guard.known_failure(&shop(), Some(&[1; 32])).is_none());
        guard.apply_change(&Change::Instance {
            instance: ghost.clone(),
        });
        assert!(guard.known_failure(&ghost, None).is_none());
    }

    #[test]
    fn zero_ttl_remembers_nothing() {
        let guard = AuthGuard::new(Duration::ZERO);
        guard.learn(
            &shop(),
            Some(&[1; 32]),
            &AuthOutcome::Invalid,
            Instant::now(),
        );
        assert!(guard.known_failure(&shop(), Some(&[1; 32])).is_none());
        assert!(guard.known_failure(&shop(), None).is_none());
    }

    #[tokio::test]
    async fn an_address_is_refused_after_max_failures_but_recently_valid_tokens_pass() {
        let guard = AuthGuard::with_limits(Duration::from_secs(1), 3, Duration::ZERO);
        let flooder: IpAddr = "192.0.2.1".parse().unwrap();
        let honest: IpAddr = "192.0.2.2".parse().unwrap();
        guard.learn(&shop(), Some(&[7; 32]), &valid(), Instant::now());
        for _ in 0..3 {
            assert!(guard.admit(Some(flooder), &shop(), None).await.is_ok());
            guard.failed(Some(flooder), &shop(), ApiError::Unauthorized);
        }
        assert!(matches!(
            guard.admit(Some(flooder), &shop(), Some(&[8; 32])).await,
            Err(ApiError::AuthThrottled { retry_after: 10 })
        ));
        assert!(
            guard
                .admit(Some(flooder), &shop(), Some(&[7; 32]))
                .await
                .is_ok()
        );
        assert!(
            guard
                .admit(Some(honest), &shop(), Some(&[8; 32]))
                .await
                .is_ok()
        );
        assert!(guard.admit(None, &shop(), None).await.is_ok());
    }
}
