//! Failed-login throttling (contract §12): failed Basic logins count for a sliding window
//! (60 s) per client address and instance; while `max_failures` or more count, logins from
//! there are refused without checking the password, until fewer remain.
//!
//! Refused attempts and successful logins change no count. The clock is a parameter: nothing
//! here reads the time. Memory is bounded: each key keeps at most `max_failures` times, and the
//! map at most `capacity` keys (expired keys are dropped first, then the least recently failed).
//! IPv6 clients count per /64 network, since one host commonly holds a whole /64; IPv4-mapped
//! IPv6 addresses count as their IPv4 address.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use otp_store::InstanceId;
use zeroize::Zeroizing;

use crate::password::{PasswordError, PasswordWork, verify_password};

/// How long a failure counts.
pub const WINDOW: Duration = Duration::from_secs(60);
/// Failures that throttle an address and instance by default (`[otp] LOGIN_MAX_FAILURES`).
pub const DEFAULT_MAX_FAILURES: u32 = 5;
/// Keys the throttle keeps at most by default.
pub const DEFAULT_CAPACITY: usize = 100_000;

/// Counts failed logins per (client network, instance).
#[derive(Debug)]
pub struct LoginThrottle {
    max_failures: usize,
    window: Duration,
    capacity: usize,
    /// The times of the last failures of each key, oldest first, at most `max_failures`.
    failures: HashMap<(IpAddr, InstanceId), VecDeque<Instant>>,
}

impl LoginThrottle {
    /// A throttle refusing logins while `max_failures` (at least 1) failures count within
    /// [`WINDOW`], keeping at most [`DEFAULT_CAPACITY`] keys.
    pub fn new(max_failures: u32) -> LoginThrottle {
        LoginThrottle::with_limits(max_failures, WINDOW, DEFAULT_CAPACITY)
    }

    /// A throttle with its own window and capacity (at least one key).
    pub fn with_limits(max_failures: u32, window: Duration, capacity: usize) -> LoginThrottle {
        LoginThrottle {
            max_failures: usize::try_from(max_failures.max(1)).unwrap_or(usize::MAX),
            window,
            capacity: capacity.max(1),
            failures: HashMap::new(),
        }
    }

    /// `Ok` if a login from `addr` on `instance` may be checked at `now`; otherwise the whole
    /// seconds (at least 1, rounded up) until fewer than `max_failures` failures count.
    pub fn check(&mut self, addr: IpAddr, instance: &InstanceId, now: Instant) -> Result<(), u64> {
        let key = (network_of(addr), instance.clone());
        let Some(times) = self.failures.get_mut(&key) else {
            return Ok(());
        };
        let window = self.window;
        while times
            .front()
            .is_some_and(|&failed| expired(failed, now, window))
        {
            times.pop_front();
        }
        if times.is_empty() {
            self.failures.remove(&key);
            return Ok(());
        }
        if times.len() < self.max_failures {
            return Ok(());
        }
        // Fewer than `max_failures` count once this many of the oldest have expired.
        let index = times.len() - self.max_failures;
        let until = times
            .get(index)
            .map_or(now, |&failed| failed + window)
            .saturating_duration_since(now);
        Err(whole_seconds_up(until).max(1))
    }

    /// Counts a failed login from `addr` on `instance` at `now`.
    pub fn record_failure(&mut self, addr: IpAddr, instance: &InstanceId, now: Instant) {
        let key = (network_of(addr), instance.clone());
        if !self.failures.contains_key(&key) && self.failures.len() >= self.capacity {
            self.make_room(now);
        }
        let times = self.failures.entry(key).or_default();
        times.push_back(now);
        while times.len() > self.max_failures {
            times.pop_front();
        }
    }

    /// Keys currently kept.
    pub fn len(&self) -> usize {
        self.failures.len()
    }

    /// Whether no key is kept.
    pub fn is_empty(&self) -> bool {
        self.failures.is_empty()
    }

    /// Drops the keys whose failures have all expired; if none has, the least recently failed.
    fn make_room(&mut self, now: Instant) {
        let window = self.window;
        self.failures.retain(|_, times| {
            times
                .back()
                .is_some_and(|&last| !expired(last, now, window))
        });
        if self.failures.len() >= self.capacity {
            let oldest = self
                .failures
                .iter()
                .min_by_key(|(_, times)| times.back().copied())
                .map(|(key, _)| key.clone());
            if let Some(key) = oldest {
                self.failures.remove(&key);
            }
        }
    }
}

/// What a Basic login's password check found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginCheck {
    /// The password is right.
    Valid,
    /// The password is wrong; the failure was counted.
    Invalid,
    /// Refused without checking: too many failures count; retry after these seconds.
    Throttled(u64),
}

/// The failed-login throttle and the bounded password checks, shared by every worker of a
/// server. It reads the monotonic clock for the throttle.
#[derive(Debug, Clone)]
pub struct LoginGuard {
    throttle: Arc<Mutex<LoginThrottle>>,
    work: PasswordWork,
}

impl LoginGuard {
    /// A guard throttling after `max_failures` failures, with the default password work bounds.
    pub fn new(max_failures: u32) -> LoginGuard {
        LoginGuard::with_parts(LoginThrottle::new(max_failures), PasswordWork::default())
    }

    /// A guard over `throttle` and `work`.
    pub fn with_parts(throttle: LoginThrottle, work: PasswordWork) -> LoginGuard {
        LoginGuard {
            throttle: Arc::new(Mutex::new(throttle)),
            work,
        }
    }

    /// The bounded password work (for hashing a new password).
    pub fn work(&self) -> &PasswordWork {
        &self.work
    }

    /// `Err(seconds)` while logins from `addr` on `instance` are throttled.
    pub fn check(&self, addr: IpAddr, instance: &InstanceId) -> Result<(), u64> {
        lock(&self.throttle).check(addr, instance, Instant::now())
    }

    /// Counts a failed login that needed no password check (wrong user, no password set).
    pub fn record_failure(&self, addr: IpAddr, instance: &InstanceId) {
        lock(&self.throttle).record_failure(addr, instance, Instant::now());
    }

    /// Checks `password` against the PHC string `phc` once a permit is free, counting a wrong
    /// password as a failure. The throttle is consulted again just before the check, so that
    /// attempts that waited for a permit meanwhile do not exceed the limit.
    pub async fn check_password(
        &self,
        addr: IpAddr,
        instance: &InstanceId,
        password: Zeroizing<String>,
        phc: String,
    ) -> Result<LoginCheck, PasswordError> {
        let throttle = Arc::clone(&self.throttle);
        let instance = instance.clone();
        self.work
            .run(move || {
                if let Err(seconds) = lock(&throttle).check(addr, &instance, Instant::now()) {
                    return LoginCheck::Throttled(seconds);
                }
                if verify_password(&password, &phc) {
                    LoginCheck::Valid
                } else {
                    lock(&throttle).record_failure(addr, &instance, Instant::now());
                    LoginCheck::Invalid
                }
            })
            .await
    }
}

fn lock(throttle: &Mutex<LoginThrottle>) -> std::sync::MutexGuard<'_, LoginThrottle> {
    throttle.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Whether a failure at `failed` no longer counts at `now`.
fn expired(failed: Instant, now: Instant, window: Duration) -> bool {
    now.saturating_duration_since(failed) >= window
}

fn whole_seconds_up(duration: Duration) -> u64 {
    duration.as_secs() + u64::from(duration.subsec_nanos() > 0)
}

/// The network an address counts for: IPv4 as is, IPv4-mapped IPv6 as IPv4, other IPv6 by /64.
pub fn network_of(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(Ipv6Addr::from(prefix))
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn shop() -> InstanceId {
        InstanceId::parse("shop").unwrap()
    }

    fn addr(last: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(192, 0, 2, last))
    }

    #[test]
    fn refuses_from_the_fifth_failure_until_the_oldest_expires() {
        let mut throttle = LoginThrottle::new(5);
        let t0 = Instant::now();
        for second in 0..4 {
            let now = t0 + Duration::from_secs(second);
            assert_eq!(throttle.check(addr(1), &shop(), now), Ok(()));
            throttle.record_failure(addr(1), &shop(), now);
        }
        assert_eq!(
            throttle.check(addr(1), &shop(), t0 + Duration::from_secs(4)),
            Ok(())
        );
        throttle.record_failure(addr(1), &shop(), t0 + Duration::from_secs(4));

        // Five failures at 0..=4 s: refused until the one at 0 s expires at 60 s.
        let at = |s: u64| t0 + Duration::from_secs(s);
        assert_eq!(throttle.check(addr(1), &shop(), at(5)), Err(55));
        assert_eq!(
            throttle.check(addr(1), &shop(), at(5) + Duration::from_millis(500)),
            Err(55)
        );
        assert_eq!(throttle.check(addr(1), &shop(), at(59)), Err(1));
        assert_eq!(throttle.check(addr(1), &shop(), at(60)), Ok(()));
        // Four still count; one more failure throttles again, until the one at 1 s expires.
        throttle.record_failure(addr(1), &shop(), at(60));
        assert_eq!(throttle.check(addr(1), &shop(), at(60)), Err(1));
        assert_eq!(throttle.check(addr(1), &shop(), at(61)), Ok(()));
    }

    #[test]
    fn refused_attempts_and_successes_change_no_count() {
        let mut throttle = LoginThrottle::new(2);
        let t0 = Instant::now();
        throttle.record_failure(addr(1), &shop(), t0);
        throttle.record_failure(addr(1), &shop(), t0 + Duration::from_secs(30));
        // Refused, many times: only checks, nothing recorded, so the wait does not grow.
        for s in 31..59 {
            assert!(
                throttle
                    .check(addr(1), &shop(), t0 + Duration::from_secs(s))
                    .is_err()
            );
        }
        assert_eq!(
            throttle.check(addr(1), &shop(), t0 + Duration::from_secs(60)),
            Ok(())
        );
    }

    #[test]
    fn counts_per_address_and_instance() {
        let mut throttle = LoginThrottle::new(1);
        let now = Instant::now();
        let other = InstanceId::parse("other").unwrap();
        throttle.record_failure(addr(1), &shop(), now);
        assert!(throttle.check(addr(1), &shop(), now).is_err());
        assert_eq!(throttle.check(addr(2), &shop(), now), Ok(()));
        assert_eq!(throttle.check(addr(1), &other, now), Ok(()));
    }

    #[test]
    fn ipv6_counts_per_64_and_mapped_ipv4_as_ipv4() {
        let mut throttle = LoginThrottle::new(1);
        let now = Instant::now();
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let same_64: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let other_64: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        throttle.record_failure(a, &shop(), now);
        assert!(throttle.check(same_64, &shop(), now).is_err());
        assert_eq!(throttle.check(other_64, &shop(), now), Ok(()));

        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        throttle.record_failure(mapped, &shop(), now);
        assert!(throttle.check(addr(7), &shop(), now).is_err());
    }

    #[test]
    fn memory_is_bounded_expired_keys_go_first_then_the_least_recent() {
        let mut throttle = LoginThrottle::with_limits(3, Duration::from_secs(60), 3);
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let kept = |t: &LoginThrottle, last: u8| t.failures.contains_key(&(addr(last), shop()));
        throttle.record_failure(addr(1), &shop(), at(0));
        throttle.record_failure(addr(2), &shop(), at(10));
        throttle.record_failure(addr(3), &shop(), at(20));
        assert_eq!(throttle.len(), 3);

        // Full, nothing expired: the least recently failed key (address 1) makes room.
        throttle.record_failure(addr(4), &shop(), at(30));
        assert_eq!(throttle.len(), 3);
        assert!(!kept(&throttle, 1));
        assert!(kept(&throttle, 2) && kept(&throttle, 3) && kept(&throttle, 4));

        // Later, the expired keys (addresses 2 and 3) go and the recent ones stay.
        throttle.record_failure(addr(5), &shop(), at(85));
        assert_eq!(throttle.len(), 2);
        assert!(kept(&throttle, 4) && kept(&throttle, 5));
        // A key that already exists is counted without eviction.
        throttle.record_failure(addr(5), &shop(), at(86));
        throttle.record_failure(addr(6), &shop(), at(86));
        assert_eq!(throttle.len(), 3);
    }

    #[test]
    fn each_key_keeps_at_most_max_failures() {
        let mut throttle = LoginThrottle::new(3);
        let now = Instant::now();
        for _ in 0..1000 {
            throttle.record_failure(addr(1), &shop(), now);
        }
        let times = throttle.failures.values().next().unwrap();
        assert_eq!(times.len(), 3);
        assert_eq!(throttle.check(addr(1), &shop(), now), Err(60));
    }

    #[tokio::test]
    async fn the_guard_counts_wrong_passwords_and_then_refuses_even_the_right_one() {
        let guard = LoginGuard::new(2);
        let phc = crate::password::hash_password("right").unwrap();
        let instance = shop();
        let check = |password: &str| {
            guard.check_password(
                addr(1),
                &instance,
                Zeroizing::new(password.to_owned()),
                phc.clone(),
            )
        };
        assert_eq!(check("right").await, Ok(LoginCheck::Valid));
        assert_eq!(check("wrong").await, Ok(LoginCheck::Invalid));
        assert_eq!(guard.check(addr(1), &shop()), Ok(()));
        guard.record_failure(addr(1), &shop());
        assert!(matches!(
            check("right").await,
            Ok(LoginCheck::Throttled(59 | 60))
        ));
        assert!(guard.check(addr(1), &shop()).is_err());
        assert_eq!(guard.check(addr(2), &shop()), Ok(()));
    }

    #[test]
    fn zero_max_failures_means_one() {
        let mut throttle = LoginThrottle::new(0);
        let now = Instant::now();
        assert_eq!(throttle.check(addr(1), &shop(), now), Ok(()));
        throttle.record_failure(addr(1), &shop(), now);
        assert_eq!(throttle.check(addr(1), &shop(), now), Err(60));
    }
}
