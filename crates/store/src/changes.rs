//! Change notifications for cache invalidation across server processes.
//!
//! The triggers of `sql/migrations/0005_create_change_notifications.sql` send
//! a JSON payload on the channel [`CHANNEL`] for every committed change of an
//! instance, its tokens or its devices. [`subscribe`] listens on a dedicated
//! connection and turns the payloads into [`Change`]s.

use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio_postgres::{AsyncMessage, Client, Notification};

use crate::error::StoreError;
use crate::ids::{InstanceId, OtpDeviceId};
use crate::store::StoreConfig;
use crate::tls::Connector;

/// The `LISTEN`/`NOTIFY` channel the triggers notify.
pub const CHANNEL: &str = "taler_otp_changes";

const LISTEN: &str = "LISTEN taler_otp_changes";
const BUFFER: usize = 256;
const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
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
}

/// Listens for changes on a dedicated connection.
///
/// Returns once the first connection listens, so every change committed
/// after this call is delivered; fails as `Unavailable` when that first
/// connection cannot be made. The first message is always
/// [`Change::Resync`]. A background task then reconnects with backoff
/// whenever the connection is lost, sending `Resync` on the loss and after
/// every reconnect. The task ends when the receiver is dropped.
pub async fn subscribe(cfg: &StoreConfig) -> Result<mpsc::Receiver<Change>, StoreError> {
    let (pg, tls) = cfg.pg_config()?;
    let listener = Listener::connect(&pg, &tls).await?;
    let (changes, receiver) = mpsc::channel(BUFFER);
    tokio::spawn(run(pg, tls, listener, changes));
    Ok(receiver)
}

/// A connection that has executed `LISTEN`.
struct Listener {
    client: Client,
    notifications: mpsc::UnboundedReceiver<Notification>,
}

impl Listener {
    async fn connect(pg: &tokio_postgres::Config, tls: &Connector) -> Result<Listener, StoreError> {
        // The driver's connect_timeout covers only the TCP connect; bound the
        // start-up and the LISTEN too.
        let limit = pg
            .get_connect_timeout()
            .copied()
            .unwrap_or(Duration::from_secs(2))
            * 2;
        match tokio::time::timeout(limit, Listener::connect_unbounded(pg, tls)).await {
            Ok(result) => result,
            Err(elapsed) => Err(StoreError::Unavailable(Box::new(elapsed))),
        }
    }

    async fn connect_unbounded(
        pg: &tokio_postgres::Config,
        tls: &Connector,
    ) -> Result<Listener, StoreError> {
        let (client, mut connection) = pg.connect(tls.clone()).await?;
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
        Ok(Listener {
            client,
            notifications,
        })
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
) {
    loop {
        if changes.send(Change::Resync).await.is_err() {
            return;
        }
        match serve(&mut listener, &changes).await {
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
            match Listener::connect(&pg, &tls).await {
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

async fn serve(listener: &mut Listener, changes: &mpsc::Sender<Change>) -> Stopped {
    let mut ping = tokio::time::interval(PING_INTERVAL);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ping.tick().await;
    loop {
        tokio::select! {
            notification = listener.notifications.recv() => {
                let Some(notification) = notification else {
                    return Stopped::ConnectionLost;
                };
                if notification.channel() != CHANNEL {
                    continue;
                }
                if changes.send(parse_payload(notification.payload())).await.is_err() {
                    return Stopped::ReceiverDropped;
                }
            }
            () = changes.closed() => return Stopped::ReceiverDropped,
            _ = ping.tick() => {
                let alive = tokio::time::timeout(PING_TIMEOUT, listener.client.simple_query("SELECT 1")).await;
                if !matches!(alive, Ok(Ok(_))) {
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
