//! Wire types of the operations endpoints (`docs/api.md` §14): health, readiness and the audit
//! trail.

use otp_store::audit::AuditEntry;
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

/// Answer of `GET /healthz` and of a ready `GET /readyz`.
#[derive(Debug, Serialize, ToSchema)]
pub struct HealthStatus {
    /// Always `ok`.
    #[schema(example = "ok")]
    pub status: &'static str,
}

/// One row of an instance's audit trail (`docs/audit.md`).
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditEntryResponse {
    /// The row's place among the instance's rows of all chains, in the order they were
    /// appended (gaps possible); `since` pages by it.
    pub serial: i64,
    /// The row's chain: the device's id, or `""` for the instance's events of no device.
    pub chain: String,
    /// Position in its chain: 1, 2, 3, … without gaps.
    pub seq: i64,
    /// When the action happened, in seconds since the epoch.
    pub time: i64,
    /// The same time in microseconds since the epoch, as hashed.
    pub time_us: i64,
    /// What happened: `device_created`, `device_changed`, `device_deleted`, `token_created`,
    /// `token_revoked`, `confirmation_issued`, `verification`, `login_success`,
    /// `login_failure`.
    #[schema(example = "device_created")]
    pub event: String,
    /// The device acted on, if any.
    pub device_id: Option<String>,
    /// The serial of the access token that authorized the action; `null` for password logins
    /// and operator commands.
    pub token_serial: Option<i64>,
    /// The client's address, `local` for operator commands, `unknown` without one.
    #[schema(example = "127.0.0.1")]
    pub client: Option<String>,
    /// The event's particulars (never a key or a secret).
    #[schema(value_type = Object)]
    pub details: Value,
    /// The previous row's hash, hex (64 zeros for the first row).
    pub prev_hash: String,
    /// This row's hash, hex: SHA-256 over its fields and `prev_hash` (`docs/audit.md`).
    pub hash: String,
}

impl From<AuditEntry> for AuditEntryResponse {
    fn from(entry: AuditEntry) -> AuditEntryResponse {
        AuditEntryResponse {
            serial: entry.serial,
            chain: entry.chain,
            seq: entry.seq,
            time: entry.time.timestamp(),
            time_us: entry.time.timestamp_micros(),
            // Stored details are JSON objects; anything else is shown as text.
            details: serde_json::from_str(&entry.details).unwrap_or(Value::String(entry.details)),
            event: entry.event,
            device_id: entry.device,
            token_serial: entry.token_serial,
            client: entry.client,
            prev_hash: data_encoding::HEXLOWER.encode(&entry.prev_hash),
            hash: data_encoding::HEXLOWER.encode(&entry.hash),
        }
    }
}

/// Answer of `GET …/private/audit`.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditLogResponse {
    /// The rows with a serial above `since`, oldest first, at most `limit`.
    pub entries: Vec<AuditEntryResponse>,
}
