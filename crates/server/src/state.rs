//! `AppState`: what every handler shares — the store, the default instance, and the caches
//! of tokens and devices with their invalidation.
//!
//! Staleness bound: a cached token or device is served for at most `cache_ttl` after the read
//! that filled it started. Writes made through this process invalidate at once; writes made
//! through other processes arrive as PostgreSQL notifications (`otp_store::changes`) and
//! usually invalidate within milliseconds. An invalidation also keeps out reads that started
//! before it. Devices in use are re-read in the background shortly before their entries
//! expire (`refresh_device`), so requests seldom wait for the database.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use otp_store::changes::Change;
use otp_store::otp_devices::{OtpDevice, OtpDevicePatch};
use otp_store::verifications::{Attempt, Outcome};

use otp_store::tokens::{self, AuthOutcome};
use otp_store::{InstanceId, OtpDeviceId, Store, StoreError, otp_devices};

use crate::api::VersionResponse;
use crate::cache::TtlCache;
use crate::clock;
use crate::verify::{self, Typed, VerifySettings};
use crate::error::ApiError;

/// A validated token as cached: who it is and when it expires.
#[derive(Clone)]
struct CachedToken {
    caller: Caller,
    expires_at: Option<DateTime<Utc>>,
}

/// The token a request was authorized with.
#[derive(Clone, Debug)]
pub struct Caller {
    /// Its scope, as stored (`write`, `order-pos:refreshable`, …).
    pub scope: Arc<str>,
    /// Its serial, recorded with what it does.
    pub serial: Option<i64>,
}

/// State of the HTTP server, one per worker: the worker's own connection pool (so a query's
/// connection is driven by the thread that waits for it), and the caches every worker shares.
pub struct AppState {
    /// The database.
    pub store: Store,
    /// The instance addressed by paths without `/instances/$INSTANCE`.
    pub default_instance: InstanceId,
    /// The `/config` answer.
    pub config: VersionResponse,
    /// The TOTP window and the limits of verification.
    pub verify: VerifySettings,
    caches: Arc<Caches>,
}

/// The token and device caches, shared by all workers.
struct Caches {
    tokens: TtlCache<InstanceId, [u8; 32], CachedToken>,
    devices: TtlCache<InstanceId, OtpDeviceId, Arc<OtpDevice>>,
}

/// Most entries a cache holds before it sheds expired ones.
const CACHE_CAPACITY: usize = 200_000;

impl AppState {
    /// State over `store`; `cache_ttl` is the staleness bound (zero disables caching).
    pub fn new(
        store: Store,
        default_instance: InstanceId,
        config: VersionResponse,
        cache_ttl: Duration,
    ) -> AppState {
        AppState {
            store,
            default_instance,
            config,
            verify: VerifySettings::default(),
            caches: Arc::new(Caches {
                tokens: TtlCache::new(cache_ttl, None, CACHE_CAPACITY),
                devices: TtlCache::new(cache_ttl, Some(cache_ttl * 3 / 4), CACHE_CAPACITY),
            }),
        }
    }

    /// State over another `store` (a worker's pool) sharing this state's caches.
    pub fn sharing_caches(&self, store: Store, config: VersionResponse) -> AppState {
        AppState {
            store,
            default_instance: self.default_instance.clone(),
            config,
            verify: self.verify,
            caches: Arc::clone(&self.caches),
        }
    }

    /// Checks `secret` against `instance` and returns the token's scope and serial.
    pub async fn authenticate(
        &self,
        instance: &InstanceId,
        secret: Option<&str>,
    ) -> Result<Caller, ApiError> {
        let hash = secret.map(tokens::hash_secret);
        if let Some(cached) = hash.and_then(|hash| self.caches.tokens.get(instance, &hash)) {
            if cached.value.expires_at.is_none_or(|at| at > clock::now()) {
                return Ok(cached.value.caller);
            }
        }
        let started = Instant::now();
        match tokens::authenticate(&self.store, instance, secret, clock::now()).await? {
            AuthOutcome::InstanceUnknown => Err(ApiError::InstanceUnknown),
            AuthOutcome::Invalid => Err(ApiError::Unauthorized),
            AuthOutcome::Valid(token) => {
                let caller = Caller {
                    scope: Arc::from(token.scope.as_str()),
                    serial: Some(token.serial),
                };
                if let Some(hash) = hash {
                    self.caches.tokens.insert(
                        instance.clone(),
                        hash,
                        CachedToken {
                            caller: caller.clone(),
                            expires_at: token.expires_at,
                        },
                        started,
                    );
                }
                Ok(caller)
            }
        }
    }

    /// The device `id` of `instance`, from the cache when fresh.
    pub async fn device(
        &self,
        instance: &InstanceId,
        id: &OtpDeviceId,
    ) -> Result<Arc<OtpDevice>, ApiError> {
        if let Some(hit) = self.caches.devices.get(instance, id) {
            if hit.refresh {
                self.refresh_device(instance, id);
            }
            return Ok(hit.value);
        }
        let started = Instant::now();
        let device = Arc::new(otp_devices::get(&self.store, instance, id).await?);
        self.caches
            .devices
            .insert(instance.clone(), id.clone(), device.clone(), started);
        Ok(device)
    }

    /// Re-reads a cached device in the background, before its entry expires, so that requests
    /// for a device in use do not wait for the database. The new entry's age counts from the
    /// start of this read, like any other.
    fn refresh_device(&self, instance: &InstanceId, id: &OtpDeviceId) {
        let store = self.store.clone();
        let caches = Arc::clone(&self.caches);
        let (instance, id) = (instance.clone(), id.clone());
        tokio::spawn(async move {
            let started = Instant::now();
            match otp_devices::get(&store, &instance, &id).await {
                Ok(device) => caches
                    .devices
                    .insert(instance, id, Arc::new(device), started),
                Err(StoreError::DeviceNotFound | StoreError::InstanceNotFound) => {
                    caches.devices.remove(&instance, &id)
                }
                // The entry expires as usual; the next request reads again and reports.
                Err(_) => {}
            }
        });
    }

    /// Applies `patch` to device `id`; this process's cache forgets the device whatever the
    /// outcome (other processes hear of it through the database's notification).
    pub async fn update_device(
        &self,
        instance: &InstanceId,
        id: &OtpDeviceId,
        patch: &OtpDevicePatch,
    ) -> Result<(), StoreError> {
        let result = otp_devices::update(&self.store, instance, id, patch).await;
        self.forget_device(instance, id);
        result
    }

    /// Deletes device `id`, and forgets it in this process's cache.
    pub async fn delete_device(
        &self,
        instance: &InstanceId,
        id: &OtpDeviceId,
    ) -> Result<(), StoreError> {
        let result = otp_devices::delete(&self.store, instance, id).await;
        self.forget_device(instance, id);
        result
    }

    /// Takes the next counter value of device `id` in one statement (see
    /// [`otp_devices::advance_counter`]), and forgets the cached device, whose counter moved.
    pub async fn advance_counter(
        &self,
        instance: &InstanceId,
        id: &OtpDeviceId,
    ) -> Result<OtpDevice, StoreError> {
        let result = otp_devices::advance_counter(&self.store, instance, id).await;
        self.forget_device(instance, id);
        result
    }

    /// Decides a typed code for device `id` (see [`verify::decide`]); the device comes from
    /// the cache, the decision from the database. An accepted HOTP code moves the counter, so
    /// the cached device is forgotten.
    pub async fn verify_code(
        &self,
        instance: &InstanceId,
        device: &OtpDevice,
        typed: Typed<'_>,
        attempt: &Attempt<'_>,
    ) -> Result<Outcome, StoreError> {
        let outcome = verify::decide(
            &self.store,
            instance,
            device,
            clock::now(),
            typed,
            attempt,
            &self.verify,
        )
        .await?;
        if matches!(outcome, Outcome::Verified { otp_ctr: Some(_), .. }) {
            self.forget_device(instance, &device.id);
        }
        Ok(outcome)
    }

    /// Forgets the cached device.
    fn forget_device(&self, instance: &InstanceId, id: &OtpDeviceId) {
        self.caches.devices.remove(instance, id);
    }

    /// Applies a change notification from the database to the caches.
    pub fn apply_change(&self, change: &Change) {
        match change {
            Change::Device { instance, device } => self.forget_device(instance, device),
            Change::Tokens { instance } => self.caches.tokens.remove_group(instance),
            Change::Instance { instance } => {
                self.caches.tokens.remove_group(instance);
                self.caches.devices.remove_group(instance);
            }
            Change::Resync => {
                self.caches.tokens.clear();
                self.caches.devices.clear();
            }
        }
    }
}
