//! The audit trail (`docs/audit.md`): an append-only log per instance of who did what, in
//! SHA-256 hash chains (one per device, and the instance's own for events of no device) that
//! [`verify_chain`] checks.
//!
//! Rows are appended by the SQL function `audit_append` (migration
//! `sql/migrations/0010_create_audit_log.sql`), inside the statement or transaction of the
//! audited write: the device and token writes of this crate append in the same statement,
//! verification outcomes are appended by `otp_verify_batch` (migration 0016, a batch's rows
//! hashed as `audit_append` hashes them and inserted together), and [`append`] serves the
//! events that write nothing else (a TOTP confirmation, a login). The hash is computed in SQL;
//! [`entry_hash`] computes the same bytes in Rust.
//!
//! **Who acts.** The writes of this crate record the [`Actor`] of the task they run in: the
//! server runs each request inside [`acting`] with the client's address and records the token
//! that authorized it with [`record_token`]; outside such a scope (operator commands) the actor
//! is [`Actor::local`].

use std::cell::Cell;
use std::future::Future;
use std::net::IpAddr;

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

use crate::error::StoreError;
use crate::ids::{InstanceId, OtpDeviceId};
use crate::store::Store;

mod chain;

pub use chain::{Break, BrokenLink, ChainHead, ChainReport, verify_chain};

/// The client recorded for operator commands (no network client).
pub const LOCAL_CLIENT: &str = "local";

/// The client recorded when a request's peer address is unknown (a UNIX socket).
pub const UNKNOWN_CLIENT: &str = "unknown";

/// Who performs an audited action.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Actor {
    /// The access token that authorized it; `None` for password logins and operator commands.
    pub token_serial: Option<i64>,
    /// The client's address as the server saw it, [`UNKNOWN_CLIENT`], or [`LOCAL_CLIENT`].
    pub client: String,
}

impl Actor {
    /// The operator at the machine: no token, client [`LOCAL_CLIENT`].
    pub fn local() -> Actor {
        Actor {
            token_serial: None,
            client: LOCAL_CLIENT.to_owned(),
        }
    }
}

/// The actor of a request, as kept while it is served (rendered only when a write needs it).
#[derive(Clone, Copy)]
struct Scope {
    token_serial: Option<i64>,
    client: Option<IpAddr>,
}

tokio::task_local! {
    static SCOPE: Cell<Scope>;
}

/// Runs `future` (a request) on behalf of the network client at `client` (`None`: unknown):
/// the audited writes it makes record that address, and the token [`record_token`] names.
pub async fn acting<F: Future>(client: Option<IpAddr>, future: F) -> F::Output {
    let scope = Scope {
        token_serial: None,
        client,
    };
    SCOPE.scope(Cell::new(scope), future).await
}

/// Records `serial` as the token that authorized the current request; does nothing outside
/// [`acting`].
pub fn record_token(serial: Option<i64>) {
    let _ = SCOPE.try_with(|scope| {
        scope.set(Scope {
            token_serial: serial,
            ..scope.get()
        })
    });
}

/// The actor of the current task: the request's client and token inside [`acting`], else
/// [`Actor::local`].
pub fn current_actor() -> Actor {
    match SCOPE.try_with(Cell::get) {
        Ok(scope) => Actor {
            token_serial: scope.token_serial,
            client: scope
                .client
                .map_or_else(|| UNKNOWN_CLIENT.to_owned(), |ip| ip.to_string()),
        },
        Err(_) => Actor::local(),
    }
}

/// What happened. The names are stored in `audit_log.event`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// A device was created (details: algorithm and counter; never the key).
    DeviceCreated,
    /// A device was changed (details: the names of the fields that changed).
    DeviceChanged,
    /// A device was deleted.
    DeviceDeleted,
    /// An access token was created (details: its serial, scope and expiry).
    TokenCreated,
    /// An access token was revoked (details: its serial).
    TokenRevoked,
    /// A payment confirmation was issued (details: the counter or the time).
    ConfirmationIssued,
    /// A typed code was decided (details: the outcome; `locked_until` when it locked the device).
    Verification,
    /// A password login succeeded.
    LoginSuccess,
    /// A password login failed (wrong user, wrong password, no password set).
    LoginFailure,
}

impl Event {
    /// Every event.
    pub const ALL: [Event; 9] = [
        Event::DeviceCreated,
        Event::DeviceChanged,
        Event::DeviceDeleted,
        Event::TokenCreated,
        Event::TokenRevoked,
        Event::ConfirmationIssued,
        Event::Verification,
        Event::LoginSuccess,
        Event::LoginFailure,
    ];

    /// The event's name as stored and listed (`device_created`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Event::DeviceCreated => "device_created",
            Event::DeviceChanged => "device_changed",
            Event::DeviceDeleted => "device_deleted",
            Event::TokenCreated => "token_created",
            Event::TokenRevoked => "token_revoked",
            Event::ConfirmationIssued => "confirmation_issued",
            Event::Verification => "verification",
            Event::LoginSuccess => "login_success",
            Event::LoginFailure => "login_failure",
        }
    }
}

/// One row of an instance's audit trail.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditEntry {
    /// Its place among the instance's rows of all chains, in the order they were appended
    /// (gaps possible; not hashed).
    pub serial: i64,
    /// Its chain: the device's id, or `""` for the instance's events of no device.
    pub chain: String,
    /// Its position in its chain: 1, 2, 3, …
    pub seq: i64,
    /// When the audited action's transaction started (microsecond precision).
    pub time: DateTime<Utc>,
    /// What happened ([`Event::as_str`]; a newer binary may write names this one does not know).
    pub event: String,
    /// The device acted on, if any.
    pub device: Option<String>,
    /// The token that authorized the action, if any.
    pub token_serial: Option<i64>,
    /// The client's address, or [`LOCAL_CLIENT`].
    pub client: Option<String>,
    /// The event's particulars: a JSON object, as stored (and hashed).
    pub details: String,
    /// The previous row's hash (32 zero bytes for the first row).
    pub prev_hash: [u8; 32],
    /// This row's hash ([`entry_hash`]).
    pub hash: [u8; 32],
}

impl AuditEntry {
    pub(crate) fn from_row(row: &Row) -> Result<AuditEntry, StoreError> {
        Ok(AuditEntry {
            serial: row.try_get("serial")?,
            chain: row.try_get("chain")?,
            seq: row.try_get("seq")?,
            time: row.try_get("time")?,
            event: row.try_get("event")?,
            device: row.try_get("device_id")?,
            token_serial: row.try_get("token_serial")?,
            client: row.try_get("client")?,
            details: row.try_get("details")?,
            prev_hash: hash32(row, "prev_hash")?,
            hash: hash32(row, "hash")?,
        })
    }
}

pub(crate) fn hash32(row: &Row, column: &str) -> Result<[u8; 32], StoreError> {
    let bytes: Vec<u8> = row.try_get(column)?;
    <[u8; 32]>::try_from(bytes.as_slice())
        .map_err(|_| StoreError::Corrupt(format!("audit {column} is not 32 bytes")))
}

/// The domain tag that starts every hashed byte string (version 1 of the format).
pub const HASH_TAG: &str = "taler-otp-audit-v1";

/// Appends one field to the hashed byte string: its length as 4 bytes big-endian and its bytes;
/// `None` is the length `0xffffffff` alone.
fn push_field(out: &mut Vec<u8>, field: Option<&[u8]>) {
    match field {
        Some(bytes) => {
            // Fields are far below 4 GiB (PostgreSQL's own limit is 1 GiB).
            let len = u32::try_from(bytes.len()).unwrap_or(u32::MAX - 1);
            out.extend_from_slice(&len.to_be_bytes());
            out.extend_from_slice(bytes);
        }
        None => out.extend_from_slice(&u32::MAX.to_be_bytes()),
    }
}

/// The hash of `entry` in `instance`'s chain, as the SQL function `audit_hash` computes it:
/// SHA-256 over the fields tag, instance, seq, time (microseconds since the epoch), event,
/// device, token serial, client, details and previous hash, each as 4 bytes of length
/// (big-endian) and its UTF-8 text (numbers in decimal) or bytes; an absent field is the length
/// `0xffffffff` alone. `docs/audit.md` specifies it.
pub fn entry_hash(instance: &str, entry: &AuditEntry) -> [u8; 32] {
    let mut bytes = Vec::with_capacity(256 + entry.details.len());
    let seq = entry.seq.to_string();
    let time = entry.time.timestamp_micros().to_string();
    let serial = entry.token_serial.map(|serial| serial.to_string());
    push_field(&mut bytes, Some(HASH_TAG.as_bytes()));
    push_field(&mut bytes, Some(instance.as_bytes()));
    push_field(&mut bytes, Some(seq.as_bytes()));
    push_field(&mut bytes, Some(time.as_bytes()));
    push_field(&mut bytes, Some(entry.event.as_bytes()));
    push_field(&mut bytes, entry.device.as_deref().map(str::as_bytes));
    push_field(&mut bytes, serial.as_deref().map(str::as_bytes));
    push_field(&mut bytes, entry.client.as_deref().map(str::as_bytes));
    push_field(&mut bytes, Some(entry.details.as_bytes()));
    push_field(&mut bytes, Some(&entry.prev_hash));
    Sha256::digest(&bytes).into()
}

const APPEND: &str = "SELECT audit_append($1, $2, $3, $4, $5, $6) AS seq";

/// Appends `event` on `device` (if any) with `details` (a JSON object; never a key or a secret)
/// to `instance`'s chain, as the current actor ([`current_actor`]), in its own statement, and
/// returns the row's seq. For events that write nothing else; writes of this crate append in
/// their own statement.
#[tracing::instrument(skip(store, details))]
pub async fn append(
    store: &Store,
    instance: &InstanceId,
    event: Event,
    device: Option<&OtpDeviceId>,
    details: &str,
) -> Result<i64, StoreError> {
    let actor = current_actor();
    let client = store.client().await?;
    let stmt = client.prepare_cached(APPEND).await?;
    let params: [&(dyn ToSql + Sync); 6] = [
        &instance.as_str(),
        &event.as_str(),
        &device.map(OtpDeviceId::as_str),
        &actor.token_serial,
        &actor.client,
        &details,
    ];
    Ok(client.query_one(&stmt, &params).await?.try_get("seq")?)
}

const LIST: &str = "
    SELECT serial, chain, seq, time, event, device_id, token_serial, client, details,
           prev_hash, hash
      FROM audit_log
     WHERE instance_id COLLATE \"C\" = $1
       AND serial > $2
     ORDER BY serial
     LIMIT $3";

/// At most `limit` rows of `instance`'s trail (all chains) after serial `since`, in the order
/// they were appended (empty when there are none, also for an instance that never existed; an
/// instance's trail outlives it).
#[tracing::instrument(skip(store))]
pub async fn list(
    store: &Store,
    instance: &InstanceId,
    since: i64,
    limit: u32,
) -> Result<Vec<AuditEntry>, StoreError> {
    let client = store.client().await?;
    let stmt = client.prepare_cached(LIST).await?;
    let limit = i64::from(limit);
    let rows = client
        .query(&stmt, &[&instance.as_str(), &since, &limit])
        .await?;
    rows.iter().map(AuditEntry::from_row).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> AuditEntry {
        AuditEntry {
            serial: 1,
            chain: "pos".to_owned(),
            seq: 1,
            time: DateTime::from_timestamp_micros(1_700_000_000_123_456).unwrap_or_default(),
            event: "device_created".to_owned(),
            device: Some("pos".to_owned()),
            token_serial: Some(7),
            client: Some("127.0.0.1".to_owned()),
            details: "{}".to_owned(),
            prev_hash: [0; 32],
            hash: [0; 32],
        }
    }

    #[test]
    fn fields_are_length_prefixed_and_none_differs_from_empty() {
        let mut bytes = Vec::new();
        push_field(&mut bytes, Some(b"ab"));
        push_field(&mut bytes, None);
        push_field(&mut bytes, Some(b""));
        assert_eq!(
            bytes,
            [0, 0, 0, 2, b'a', b'b', 255, 255, 255, 255, 0, 0, 0, 0]
        );
        let mut empty = entry();
        empty.device = Some(String::new());
        let mut none = entry();
        none.device = None;
        assert_ne!(entry_hash("i", &empty), entry_hash("i", &none));
    }

    #[test]
    fn every_field_is_covered() {
        let base = entry_hash("shop", &entry());
        assert_ne!(base, entry_hash("shop2", &entry()));
        let changes: [fn(&mut AuditEntry); 8] = [
            |e| e.seq = 2,
            |e| e.time += chrono::Duration::microseconds(1),
            |e| e.event = "device_deleted".to_owned(),
            |e| e.device = None,
            |e| e.token_serial = Some(8),
            |e| e.client = Some("127.0.0.2".to_owned()),
            |e| e.details = "{\"a\":1}".to_owned(),
            |e| e.prev_hash = [1; 32],
        ];
        for change in changes {
            let mut changed = entry();
            change(&mut changed);
            assert_ne!(base, entry_hash("shop", &changed), "{changed:?}");
        }
        // Moving bytes between adjacent fields changes the hash too.
        let mut a = entry();
        a.device = Some("ab".to_owned());
        a.client = Some("c".to_owned());
        let mut b = entry();
        b.device = Some("a".to_owned());
        b.client = Some("bc".to_owned());
        assert_ne!(entry_hash("shop", &a), entry_hash("shop", &b));
    }

    #[test]
    fn the_actor_is_scoped_to_the_task() {
        assert_eq!(current_actor(), Actor::local());
        record_token(Some(3));
        assert_eq!(current_actor(), Actor::local(), "recorded outside a scope");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap_or_else(|err| panic!("runtime: {err}"));
        let client = "192.0.2.1".parse().ok();
        let seen = runtime.block_on(acting(client, async {
            record_token(Some(5));
            current_actor()
        }));
        assert_eq!(
            seen,
            Actor {
                token_serial: Some(5),
                client: "192.0.2.1".to_owned()
            }
        );
    }
}
