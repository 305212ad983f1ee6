//! `AppState`: what every handler shares — the store, the default instance, and the caches
//! of tokens and devices with their invalidation.
//!
//! Staleness bound: a cached token or device is served for at most `cache_ttl` after the read
//! that filled it started. Writes made through this process invalidate at once; writes made
//! through other processes arrive as PostgreSQL notifications (`otp_store::changes`) and
//! usually invalidate within milliseconds.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use otp_store::changes::Change;
use otp_store::otp_devices::OtpDevice;
use otp_store::tokens::{self, AuthOutcome};
use otp_store::{InstanceId, OtpDeviceId, Store, otp_devices};

use crate::api::VersionResponse;
use crate::cache::TtlCache;
use crate::error::ApiError;

/// A validated token as cached: its scope and expiry.
#[derive(Clone)]
struct CachedToken {
    scope: Arc<str>,
    expires_at: Option<DateTime<Utc>>,
}

/// Shared state of the HTTP server.
pub struct AppState {
    /// The database.
    pub store: Store,
    /// The instance addressed by paths without `/instances/$INSTANCE`.
    pub default_instance: InstanceId,
    /// The `/config` answer.
    pub config: VersionResponse,
    tokens: TtlCache<(InstanceId, [u8; 32]), CachedToken>,
    devices: TtlCache<(InstanceId, OtpDeviceId), Arc<OtpDevice>>,
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
            tokens: TtlCache::new(cache_ttl, CACHE_CAPACITY),
            devices: TtlCache::new(cache_ttl, CACHE_CAPACITY),
        }
    }

    /// Checks `secret` against `instance` and returns the token's scope.
    pub async fn authenticate(
        &self,
        instance: &InstanceId,
        secret: Option<&str>,
    ) -> Result<Arc<str>, ApiError> {
        let now = Utc::now();
        let key = secret.map(|s| (instance.clone(), tokens::hash_secret(s)));
        if let Some(cached) = key.as_ref().and_then(|k| self.tokens.get(k)) {
            if cached.expires_at.is_none_or(|at| at > now) {
                return Ok(cached.scope);
            }
        }
        let started = Instant::now();
        match tokens::authenticate(&self.store, instance, secret, now)
            .await
            .map_err(ApiError::fetch)?
        {
            AuthOutcome::InstanceUnknown => Err(ApiError::InstanceUnknown),
            AuthOutcome::Invalid => Err(ApiError::Unauthorized),
            AuthOutcome::Valid(token) => {
                let scope: Arc<str> = Arc::from(token.scope.as_str());
                if let Some(key) = key {
                    self.tokens.insert(
                        key,
                        CachedToken {
                            scope: scope.clone(),
                            expires_at: token.expires_at,
                        },
                        started,
                    );
                }
                Ok(scope)
            }
        }
    }

    /// The device `id` of `instance`, from the cache when fresh.
    pub async fn device(
        &self,
        instance: &InstanceId,
        id: &OtpDeviceId,
    ) -> Result<Arc<OtpDevice>, ApiError> {
        let key = (instance.clone(), id.clone());
        if let Some(device) = self.devices.get(&key) {
            return Ok(device);
        }
        let started = Instant::now();
        let device = Arc::new(
            otp_devices::get(&self.store, instance, id)
                .await
                .map_err(ApiError::fetch)?,
        );
        self.devices.insert(key, device.clone(), started);
        Ok(device)
    }

    /// Forgets the cached device after a local write.
    pub fn forget_device(&self, instance: &InstanceId, id: &OtpDeviceId) {
        self.devices.remove(&(instance.clone(), id.clone()));
    }

    /// Applies a change notification from the database to the caches.
    pub fn apply_change(&self, change: &Change) {
        match change {
            Change::Device { instance, device } => self.forget_device(instance, device),
            Change::Tokens { instance } => self.tokens.remove_matching(|(i, _)| i == instance),
            Change::Instance { instance } => {
                self.tokens.remove_matching(|(i, _)| i == instance);
                self.devices.remove_matching(|(i, _)| i == instance);
            }
            Change::Resync => {
                self.tokens.clear();
                self.devices.clear();
            }
        }
    }
}
