//! `AppState`: what every handler shares — the store, the default instance, and the caches
//! of tokens and devices with their invalidation.
//!
//! Staleness bound: a cached token, device or device list is served for at most `cache_ttl`
//! after the last instant it was known to be current: the start of the read that filled it, or
//! a confirmation from the change listener that every change committed before that instant
//! has been applied (`Change::UpToDate`, sent every quarter of the bound). Writes made through
//! this process invalidate at once; writes made through other processes arrive as PostgreSQL
//! notifications (`otp_store::changes`) and usually invalidate within milliseconds. An
//! invalidation also keeps out reads that started before it. While the confirmations flow,
//! entries in use stay fresh without being read again; when they stop (the listener lost its
//! connection), entries age from their read, and devices and device lists in use are re-read
//! in the background shortly before they expire (`refresh_device`, `device_list`), so requests
//! seldom wait for the database.
//!
//! What a cached device promises is its description, key and algorithm, and the counter of a
//! device that is not counter-based. The counter of an HOTP device is not promised: advancing
//! it notifies nobody (`sql/migrations/0009_notify_device_changes_without_counter.sql`), so
//! whoever shows it reads it from the database (`otp_devices::advance_counter`,
//! `otp_devices::counter`); verification uses the cached one only as a starting point.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::web::Bytes;
use chrono::{DateTime, Utc};
use otp_store::changes::Change;
use otp_store::otp_devices::{Advance, Created, NewOtpDevice, OtpDevice, OtpDevicePatch};
use otp_store::verifications::{Attempt, Outcome};

use otp_store::tokens::{self, AuthOutcome};
use otp_store::{InstanceId, OtpDeviceId, Store, StoreError, otp_devices};

use crate::api::{OtpDeviceEntry, OtpDeviceSummaryResponse, VersionResponse};
use crate::auth_guard::AuthGuard;
use crate::cache::TtlCache;
use crate::clock;
use crate::error::ApiError;
use crate::verify::{self, Typed, VerifySettings};

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

/// The token, device and device-list caches, shared by all workers.
struct Caches {
    tokens: TtlCache<InstanceId, [u8; 32], CachedToken>,
    devices: TtlCache<InstanceId, OtpDeviceId, Arc<OtpDevice>>,
    /// Per instance, the answer of `GET …/private/otp-devices` (a JSON body).
    lists: TtlCache<InstanceId, (), Bytes>,
    /// The staleness bound.
    ttl: Duration,
    /// What failed authentications found, and their count per client address.
    guard: AuthGuard,
}

/// Most entries a cache holds before it sheds expired ones.
const CACHE_CAPACITY: usize = 200_000;
/// Most device lists cached, and the longest list body cached (longer lists, about a thousand
/// devices and more, are read for each request): at most 64 MiB.
const LIST_CACHE_CAPACITY: usize = 1024;
const LIST_CACHE_MAX_BYTES: usize = 64 * 1024;
/// What the cached devices may weigh together; past it, the least recently used go.
const DEVICE_CACHE_MAX_BYTES: usize = 64 * 1024 * 1024;

/// A cached device's weight: its description and id (at most 4 KiB and 128 bytes) and a
/// fixed part for the key, the other fields and the map's overhead.
fn device_weight(device: &Arc<OtpDevice>) -> usize {
    256 + device.description.len() + device.id.as_str().len()
}

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
                devices: TtlCache::new(cache_ttl, Some(cache_ttl * 3 / 4), CACHE_CAPACITY)
                    .with_byte_budget(DEVICE_CACHE_MAX_BYTES, device_weight),

                lists: TtlCache::new(cache_ttl, Some(cache_ttl * 3 / 4), LIST_CACHE_CAPACITY),
                ttl: cache_ttl,
                guard: AuthGuard::new(cache_ttl),
            }),
        }
    }

    /// How often the change listener should confirm that the caches are up to date (a
    /// quarter of the staleness bound); `None` when caching is disabled.
    pub fn up_to_date_interval(&self) -> Option<Duration> {
        (!self.caches.ttl.is_zero()).then(|| self.caches.ttl / 4)
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

    /// Checks `secret` against `instance` and returns the token's scope and serial. Failures
    /// go through the [`AuthGuard`] (`client`: the request's peer address): malformed secrets
    /// and remembered failures cost no query, and an address with many failures is refused.
    pub async fn authenticate(
        &self,
        instance: &InstanceId,
        secret: Option<&str>,
        client: Option<IpAddr>,
    ) -> Result<Caller, ApiError> {
        // Only the shape the store generates can be valid: other secrets are never looked up.
        let secret = secret.filter(|secret| tokens::is_well_formed(secret));
        let hash = secret.map(tokens::hash_secret);
        if let Some(cached) = hash.and_then(|hash| self.caches.tokens.get(instance, &hash)) {
            if cached.value.expires_at.is_none_or(|at| at > clock::now()) {
                otp_store::audit::record_token(cached.value.caller.serial);
                return Ok(cached.value.caller);
            }
        }
        let started = Instant::now();
        let guard = &self.caches.guard;
        guard.admit(client, instance, hash.as_ref()).await?;
        let outcome = match guard.known_failure(instance, hash.as_ref()) {
            Some(failure) => return Err(guard.failed(client, instance, failure)),
            None => tokens::authenticate(&self.store, instance, secret, clock::now()).await?,
        };
        guard.learn(instance, hash.as_ref(), &outcome, started);
        match outcome {
            AuthOutcome::InstanceUnknown => {
                Err(guard.failed(client, instance, ApiError::InstanceUnknown))
            }
            AuthOutcome::Invalid => Err(guard.failed(client, instance, ApiError::Unauthorized)),
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
                otp_store::audit::record_token(caller.serial);
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
        self.reload_device(instance, id).await
    }

    /// The device `id` of `instance` as cached, without reading the database (a hint: the
    /// confirmation of a device cached as time-based needs no write).
    pub fn cached_device(&self, instance: &InstanceId, id: &OtpDeviceId) -> Option<Arc<OtpDevice>> {
        let hit = self.caches.devices.get(instance, id)?;
        if hit.refresh {
            self.refresh_device(instance, id);
        }
        Some(hit.value)
    }

    /// The device `id` of `instance` read from the database, replacing what is cached.
    pub async fn reload_device(
        &self,
        instance: &InstanceId,
        id: &OtpDeviceId,
    ) -> Result<Arc<OtpDevice>, ApiError> {
        let started = Instant::now();
        let device = Arc::new(otp_devices::get(&self.store, instance, id).await?);
        self.caches
            .devices
            .insert(instance.clone(), id.clone(), device.clone(), started);
        Ok(device)
    }

    /// The answer of `GET …/private/otp-devices` for `instance` (a JSON body), from the cache
    /// when fresh.
    pub async fn device_list(&self, instance: &InstanceId) -> Result<Bytes, ApiError> {
        if let Some(hit) = self.caches.lists.get(instance, &()) {
            if hit.refresh {
                let (store, caches) = (self.store.clone(), Arc::clone(&self.caches));
                let instance = instance.clone();
                tokio::spawn(async move {
                    // On failure the entry expires as usual; the next request reads and reports.
                    let _ = read_list(&store, &caches, instance).await;
                });
            }
            return Ok(hit.value);
        }
        read_list(&self.store, &self.caches, instance.clone()).await
    }

    /// One page of the instance's devices, read from the database (pages are not cached).
    pub async fn device_list_page(
        &self,
        instance: &InstanceId,
        limit: u32,
        offset: u64,
    ) -> Result<Bytes, ApiError> {
        let devices = otp_devices::list_page(&self.store, instance, limit, offset).await?;
        list_body(devices)
    }

    /// Creates `device`, and forgets this process's list of the instance's devices (other
    /// processes hear of it through the database's notification).
    pub async fn create_device(
        &self,
        instance: &InstanceId,
        device: &NewOtpDevice,
    ) -> Result<Created, StoreError> {
        let result = otp_devices::create(&self.store, instance, device).await;
        self.caches.lists.remove(instance, &());
        result
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

    /// Takes the next counter value of device `id` for a confirmation in one statement (see
    /// [`otp_devices::advance_counter`]). The caches keep the device: its counter is not part
    /// of what they promise.
    pub async fn advance_counter(
        &self,
        instance: &InstanceId,
        id: &OtpDeviceId,
        price_given: bool,
    ) -> Result<Advance, StoreError> {
        let advance = otp_devices::advance_counter(&self.store, instance, id, price_given).await?;
        if let Advance::Taken(device) = &advance {
            self.counter_seen(instance, id, device.counter.saturating_add(1));
        }
        Ok(advance)
    }

    /// Decides a typed code for device `id` (see [`verify::decide`]); the device comes from
    /// the cache, the decision from the database. An accepted HOTP code moves the counter: the
    /// cached device's counter moves with it, in place, and so does a counter found further
    /// on in the database, so the next attempt starts from it without reading the device again.
    pub async fn verify_code(
        &self,
        instance: &InstanceId,
        device: &OtpDevice,
        typed: Typed<'_>,
        attempt: &Attempt<'_>,
    ) -> Result<Outcome, StoreError> {
        let (outcome, around) = verify::decide(
            &self.store,
            instance,
            device,
            clock::now(),
            typed,
            attempt,
            &self.verify,
        )
        .await?;
        let known = match outcome {
            Outcome::Verified {
                otp_ctr: Some(matched),
                ..
            } => matched.saturating_add(1),
            _ => around,
        };
        if device.algorithm.is_counter_based() {
            self.counter_seen(instance, &device.id, known);
        }
        Ok(outcome)
    }

    /// Moves the cached counter of device `id` forward to `counter` (never back): counters are
    /// not part of what the caches promise, but a cached counter close to the stored one saves
    /// a verification its second round trip.
    fn counter_seen(&self, instance: &InstanceId, id: &OtpDeviceId, counter: u64) {
        let next = counter.min(crate::params::MAX_COUNTER);
        self.caches.devices.update(instance, id, |cached| {
            (cached.counter < next).then(|| {
                Arc::new(OtpDevice {
                    counter: next,
                    ..OtpDevice::clone(cached)
                })
            })
        });
    }

    /// Forgets the cached device and the cached list of the instance's devices.
    fn forget_device(&self, instance: &InstanceId, id: &OtpDeviceId) {
        self.caches.devices.remove(instance, id);
        self.caches.lists.remove(instance, &());
    }

    /// The lookups and invalidations of the token and device caches, for the metrics.
    pub fn cache_counts(&self) -> [(&'static str, crate::metrics::caches::CacheCounts); 2] {
        [
            ("tokens", self.caches.tokens.counts()),
            ("devices", self.caches.devices.counts()),
        ]
    }

    /// Applies a change notification from the database to the caches.
    pub fn apply_change(&self, change: &Change) {
        self.caches.guard.apply_change(change);
        match change {
            Change::Device { instance, device } => self.forget_device(instance, device),
            Change::Tokens { instance } => self.caches.tokens.remove_group(instance),
            Change::Instance { instance } => {
                self.caches.tokens.remove_group(instance);
                self.caches.devices.remove_group(instance);
                self.caches.lists.remove_group(instance);
            }
            Change::Resync => {
                self.caches.tokens.clear();
                self.caches.devices.clear();
                self.caches.lists.clear();
            }
            Change::UpToDate { as_of } => {
                self.caches.tokens.up_to_date(*as_of);
                self.caches.devices.up_to_date(*as_of);
                self.caches.lists.up_to_date(*as_of);
            }
        }
    }
}

/// Reads the list of `instance`'s devices as the JSON body of `GET …/private/otp-devices`, and
/// caches it unless it is long.
async fn read_list(
    store: &Store,
    caches: &Caches,
    instance: InstanceId,
) -> Result<Bytes, ApiError> {
    let started = Instant::now();
    let body = list_body(otp_devices::list(store, &instance).await?)?;
    if body.len() <= LIST_CACHE_MAX_BYTES {
        caches.lists.insert(instance, (), body.clone(), started);
    }
    Ok(body)
}

/// The JSON answer of a device listing.
fn list_body(devices: Vec<otp_store::otp_devices::OtpDeviceSummary>) -> Result<Bytes, ApiError> {
    let otp_devices = devices
        .into_iter()
        .map(|d| OtpDeviceEntry {
            otp_device_id: d.id.as_str().to_owned(),
            device_description: d.description,
        })
        .collect();
    let body = serde_json::to_vec(&OtpDeviceSummaryResponse { otp_devices })
        .map_err(|err| ApiError::Internal(format!("serializing a device list: {err}")))?;
    Ok(Bytes::from(body))
}
