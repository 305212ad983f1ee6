//! Change notifications for cache invalidation across server processes.
//!
//! The triggers of `sql/migrations/0005_create_change_notifications.sql` send
//! a JSON payload on the channel [`CHANNEL`] for every committed change of an
//! instance, its tokens or its devices. [`subscribe`] listens on a dedicated
//! connection and turns the payloads into [`Change`]s.
//!
//! [`subscribe_up_to_date`] also confirms, periodically, that every change
//! committed before a given instant has been delivered: the listening
//! connection notifies a channel of its own and waits for that notification
//! to come back. PostgreSQL delivers notifications in the order their
//! transactions committed, so when it arrives, every change committed before
//! it was sent has arrived before it ([`Change::UpToDate`]).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio_postgres::config::TargetSessionAttrs;
use tokio_postgres::{AsyncMessage, Client, Notification, SimpleQueryMessage};

use crate::connect;
use crate::error::StoreError;
use crate::ids::{InstanceId, OtpDeviceId};
use crate::store::StoreConfig;
use crate::tls::Connector;

/// The `LISTEN`/`NOTIFY` channel the triggers notify.
pub const CHANNEL: &str = "taler_otp_changes";

const LISTEN: &str = "LISTEN taler_otp_changes";
const BUFFER: usize = 256;
const MIN_BACKOFF: Duration = Duration::from_millis(100);
/// At most this long between reconnect attempts, so the caches are resynchronised within
/// about a second of the database (or a promoted standby) accepting connections again.
const MAX_BACKOFF: Duration = Duration::from_secs(1);
const PING_INTERVAL: Duration = Duration::from_secs(30);
const PING_TIMEOUT: Duration = Duration::from_secs(10);

/// Something changed in the database: drop what is cached about it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// A device was created, changed (including its counter) or deleted.
    Device {
        /// Its instance.
        instance: InstanceId,
        /// The device.
        device: OtpDeviceId,
    },
    /// A token of the instance was created, changed or revoked.
    Tokens {
        /// The instance.
        instance: InstanceId,
    },
    /// The instance was created, changed or deleted (a deletion also removes
    /// its tokens and devices, which send no notifications of their own).
    Instance {
        /// The instance.
        instance: InstanceId,
    },
    /// The listening connection was lost or (re)established, so changes may
    /// have been missed: drop all caches.
    Resync,
    /// Every change committed before `as_of` has been delivered before this
    /// message ([`subscribe_up_to_date`]): what was cached, and was current
    /// when read, and has not been invalidated by the changes delivered so
    /// far, is still current as of `as_of`.
    UpToDate {
        /// When the confirmation was sent (this process's clock).
        as_of: Instant,
    },
}

/// Listens for changes on a dedicated connection.
///
/// Returns once the first connection listens, so every change committed
/// after this call is delivered; fails as `Unavailable` when that first
/// connection cannot be made. The first message is always
/// [`Change::Resync`]. A background task then reconnects with backoff (at
/// most a second apart) whenever the connection is lost, sending `Resync` on
/// the loss and after every reconnect; with several hosts it reconnects to
/// the first that accepts and meets `target_session_attrs`, so after a
/// fail-over it follows the promoted standby. The task ends when the receiver
/// is dropped.
pub async fn subscribe(cfg: &StoreConfig) -> Result<mpsc::Receiver<Change>, StoreError> {
    start(cfg, None).await
}

/// As [`subscribe`], and every `every` (at least 10 ms) a [`Change::UpToDate`]
/// once the listening connection has seen its own notification sent at that
/// time come back, so every change committed before was delivered first.
/// Nothing is confirmed while the connection is lost.
pub async fn subscribe_up_to_date(
    cfg: &StoreConfig,
    every: Duration,
) -> Result<mpsc::Receiver<Change>, StoreError> {
    start(cfg, Some(every.max(Duration::from_millis(10)))).await
}

async fn start(
    cfg: &StoreConfig,
    every: Option<Duration>,
) -> Result<mpsc::Receiver<Change>, StoreError> {
    let (pg, tls) = cfg.pg_config()?;
    // A channel of this subscription's own for its confirmations.
    let own = every.map(|_| format!("taler_otp_up_to_date_{:016x}", rand::random::<u64>()));
    let listener = Listener::connect(&pg, &tls, own.as_deref()).await?;
    let (changes, receiver) = mpsc::channel(BUFFER);
    tokio::spawn(run(pg, tls, listener, changes, own.zip(every)));
    Ok(receiver)
}

/// A connection that has executed `LISTEN`.
struct Listener {
    client: Client,
    notifications: mpsc::UnboundedReceiver<Notification>,
    /// `target_session_attrs=read-write`: a server that turns read-only (a demoted or fenced
    /// primary, which still delivers its own notifications) counts as lost.
    read_write: bool,
}

impl Listener {
    async fn connect(
        pg: &tokio_postgres::Config,
        tls: &Connector,
        own: Option<&str>,
    ) -> Result<Listener, StoreError> {
        // Each host's attempt is bounded (`connect.rs`); bound the LISTENs too.
        let per_host = connect::per_host_limit(pg, Duration::from_secs(2));
        let limit = per_host * (connect::host_count(pg) + 1);
        match tokio::time::timeout(limit, Listener::connect_unbounded(pg, tls, own, per_host)).await
        {
            Ok(result) => result,
            Err(elapsed) => Err(StoreError::Unavailable(Box::new(elapsed))),
        }
    }

    async fn connect_unbounded(
        pg: &tokio_postgres::Config,
        tls: &Connector,
        own: Option<&str>,
        per_host: Duration,
    ) -> Result<Listener, StoreError> {
        // The first host that accepts and meets `target_session_attrs`: after a fail-over,
        // the promoted standby.
        let (client, mut connection) = connect::connect(pg, tls, per_host)
            .await
            .map_err(StoreError::from_connect)?;
        let (forward, notifications) = mpsc::unbounded_channel();
        // Drives the connection; ends when the client is dropped or the
        // connection fails, which closes `notifications`.
        tokio::spawn(async move {
            let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
            while let Some(message) = messages.next().await {
                match message {
                    Ok(AsyncMessage::Notification(notification)) => {
                        if forward.send(notification).is_err() {
                            break;
                        }
                    }
                    Ok(_) => {}
                    Err(err) => {
                        tracing::warn!(error = %err, "change listener connection failed");
                        break;
                    }
                }
            }
        });
        client.batch_execute(LISTEN).await?;
        if let Some(own) = own {
            // `own` is made of letters, digits and underscores only.
            client.batch_execute(&format!("LISTEN {own}")).await?;
        }
        Ok(Listener {
            client,
            notifications,
            read_write: pg.get_target_session_attrs() == TargetSessionAttrs::ReadWrite,
        })
    }
}

impl Listener {
    /// Runs `sql` (then, when a primary is required, asks whether the server still is one):
    /// whether it answered in time and is still the kind of server this listener wants.
    async fn alive(&self, sql: &str) -> bool {
        let sql = if self.read_write {
            format!("{sql}; SHOW transaction_read_only")
        } else {
            sql.to_owned()
        };
        match tokio::time::timeout(PING_TIMEOUT, self.client.simple_query(&sql)).await {
            Ok(Ok(messages)) => !messages.iter().any(|message| {
                matches!(message, SimpleQueryMessage::Row(row) if row.get(0) == Some("on"))
            }),
            _ => false,
        }
    }
}

enum Stopped {
    ReceiverDropped,
    ConnectionLost,
}

async fn run(
    pg: tokio_postgres::Config,
    tls: Connector,
    mut listener: Listener,
    changes: mpsc::Sender<Change>,
    up_to_date: Option<(String, Duration)>,
) {
    let own = up_to_date.as_ref().map(|(own, _)| own.as_str());
    loop {
        if changes.send(Change::Resync).await.is_err() {
            return;
        }
        let confirming = up_to_date
            .as_ref()
            .map(|(own, every)| Confirmations::new(own, *every));
        match serve(&mut listener, &changes, confirming).await {
            Stopped::ReceiverDropped => return,
            Stopped::ConnectionLost => {}
        }
        tracing::warn!("change listener lost its connection; reconnecting");
        if changes.send(Change::Resync).await.is_err() {
            return;
        }
        let mut backoff = MIN_BACKOFF;
        listener = loop {
            tokio::select! {
                () = changes.closed() => return,
                () = tokio::time::sleep(backoff) => {}
            }
            match Listener::connect(&pg, &tls, own).await {
                Ok(listener) => break listener,
                Err(err) => {
                    tracing::debug!(error = %err, "change listener reconnect failed");
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        };
        tracing::info!("change listener reconnected");
    }
}

/// The confirmations of one connection: its own channel, when to send the
/// next one, and those sent (sequence number and time) that have not come back.
struct Confirmations<'a> {
    own: &'a str,
    tick: tokio::time::Interval,
    sent: VecDeque<(u64, Instant)>,
    next: u64,
}

impl<'a> Confirmations<'a> {
    fn new(own: &'a str, every: Duration) -> Confirmations<'a> {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Confirmations {
            own,
            tick,
            sent: VecDeque::new(),
            next: 0,
        }
    }

    /// Sends the next confirmation; `false` when the connection failed (or its server turned
    /// read-only although `listener` requires a primary).
    async fn send(&mut self, listener: &Listener) -> bool {
        self.next += 1;
        // Taken before the NOTIFY: its transaction commits after this instant.
        let at = Instant::now();
        let notify = format!("NOTIFY {}, '{}'", self.own, self.next);
        if !listener.alive(&notify).await {
            return false;
        }
        // Confirmations that never come back are forgotten, not waited for.
        if self.sent.len() >= 64 {
            self.sent.pop_front();
        }
        self.sent.push_back((self.next, at));
        true
    }

    /// The time a confirmation with this payload was sent, if it is one of ours.
    fn received(&mut self, payload: &str) -> Option<Instant> {
        let number = payload.parse::<u64>().ok()?;
        while let Some(&(sent, at)) = self.sent.front() {
            if sent > number {
                return None;
            }
            self.sent.pop_front();
            if sent == number {
                return Some(at);
            }
        }
        None
    }
}

/// The next tick of `confirming`, never without it.
async fn next_tick(confirming: &mut Option<Confirmations<'_>>) {
    match confirming {
        Some(confirmations) => {
            confirmations.tick.tick().await;
        }
        None => std::future::pending().await,
    }
}

async fn serve(
    listener: &mut Listener,
    changes: &mpsc::Sender<Change>,
    mut confirming: Option<Confirmations<'_>>,
) -> Stopped {
    let mut ping = tokio::time::interval(PING_INTERVAL);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ping.tick().await;
    loop {
        tokio::select! {
            notification = listener.notifications.recv() => {
                let Some(notification) = notification else {
                    return Stopped::ConnectionLost;
                };
                let change = if notification.channel() == CHANNEL {
                    parse_payload(notification.payload())
                } else if let Some(confirmations) = confirming
                    .as_mut()
                    .filter(|confirmations| notification.channel() == confirmations.own)
                {
                    match confirmations.received(notification.payload()) {
                        Some(as_of) => Change::UpToDate { as_of },
                        None => continue,
                    }
                } else {
                    continue;
                };
                if changes.send(change).await.is_err() {
                    return Stopped::ReceiverDropped;
                }
            }
            () = changes.closed() => return Stopped::ReceiverDropped,
            () = next_tick(&mut confirming) => {
                if let Some(confirmations) = confirming.as_mut() {
                    if !confirmations.send(listener).await {
                        return Stopped::ConnectionLost;
                    }
                }
            }
            _ = ping.tick() => {
                if !listener.alive("SELECT 1").await {
                    return Stopped::ConnectionLost;
                }
            }
        }
    }
}

#[derive(serde::Deserialize)]
struct Payload {
    kind: String,
    instance: String,
    device: Option<String>,
}

/// The change a trigger payload describes; `Resync` for anything unexpected.
fn parse_payload(payload: &str) -> Change {
    let parsed = serde_json::from_str::<Payload>(payload)
        .ok()
        .and_then(|payload| {
            let instance = InstanceId::parse(&payload.instance).ok()?;
            match (payload.kind.as_str(), payload.device) {
                ("device", Some(device)) => Some(Change::Device {
                    instance,
                    device: OtpDeviceId::parse(&device).ok()?,
                }),
                ("tokens", _) => Some(Change::Tokens { instance }),
                ("instance", _) => Some(Change::Instance { instance }),
                _ => None,
            }
        });
    parsed.unwrap_or_else(|| {
        tracing::warn!(payload, "unexpected change notification; resyncing");
        Change::Resync
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_parse_including_ids_with_colons_and_quotes() {
        let change = parse_payload(r#"{"kind":"device","instance":"shop","device":"a:b \"c\""}"#);
        assert_eq!(
            change,
            Change::Device {
                instance: InstanceId::parse("shop").unwrap(),
                device: OtpDeviceId::parse("a:b \"c\"").unwrap(),
            }
        );
        let shop = InstanceId::parse("shop").unwrap();
        assert_eq!(
            parse_payload(r#"{"kind":"tokens","instance":"shop"}"#),
            Change::Tokens {
                instance: shop.clone()
            }
        );
        assert_eq!(
            parse_payload(r#"{"kind":"instance","instance":"shop"}"#),
            Change::Instance { instance: shop }
        );
    }

    #[test]
    fn unexpected_payloads_mean_resync() {
        for payload in [
            "",
            "device:shop:x",
            r#"{"kind":"device","instance":"shop"}"#,
            r#"{"kind":"x","instance":"shop"}"#,
        ] {
            assert_eq!(parse_payload(payload), Change::Resync, "{payload:?}");
        }
    }
}
