//! Opening a connection as libpq does with several hosts: each host in turn (`host=a,b`,
//! `port=5432,5433`, or `postgres://a:5432,b:5433/db`), the first that accepts and meets
//! `target_session_attrs` wins, and each attempt is bounded as a whole.
//!
//! The driver tries the hosts itself, but its `connect_timeout` covers only the TCP connect: a
//! host that accepts the connection and never answers (a hung server, a frozen machine) would
//! hold the attempt until the pool gave up, and the hosts after it would never be tried, so a
//! fail-over to them would never be found. Here every host gets `connect_timeout` for the whole
//! attempt (TCP, TLS, start-up, authentication and the `read-write` check), as with libpq.

use std::time::Duration;

use deadpool_postgres::Connect;
use futures_util::future::BoxFuture;
use rand::seq::SliceRandom;
use tokio::task::JoinHandle;
use tokio_postgres::config::LoadBalanceHosts;
use tokio_postgres::tls::MakeTlsConnect;
use tokio_postgres::{Client, Config, Connection, Error, Socket};

use crate::tls::Connector;

/// The stream of a connection made with [`Connector`].
pub(crate) type TlsStream = <Connector as MakeTlsConnect<Socket>>::Stream;

/// How long one host may take to accept a connection: the configuration's `connect_timeout`,
/// else `default`.
pub(crate) fn per_host_limit(pg: &Config, default: Duration) -> Duration {
    pg.get_connect_timeout().copied().unwrap_or(default)
}

/// How many hosts the configuration names (at least one).
pub(crate) fn host_count(pg: &Config) -> u32 {
    let count = pg.get_hosts().len().max(pg.get_hostaddrs().len()).max(1);
    u32::try_from(count).unwrap_or(u32::MAX)
}

/// Connects to the first of `pg`'s hosts that accepts within `per_host` and meets its
/// `target_session_attrs`; the last host's error when none does.
pub(crate) async fn connect(
    pg: &Config,
    tls: &Connector,
    per_host: Duration,
) -> Result<(Client, Connection<Socket, TlsStream>), Error> {
    if host_count(pg) == 1 {
        return bounded(pg, tls, per_host).await;
    }
    let mut order: Vec<usize> = (0..host_count(pg) as usize).collect();
    if pg.get_load_balance_hosts() == LoadBalanceHosts::Random {
        order.shuffle(&mut rand::thread_rng());
    }
    let mut last = None;
    for index in order {
        match bounded(&one_host(pg, index), tls, per_host).await {
            Ok(connected) => return Ok(connected),
            Err(err) => {
                tracing::debug!(host = index, error = %err, "database host refused; trying the next");
                last = Some(err);
            }
        }
    }
    Err(last.unwrap_or_else(Error::__private_api_timeout))
}

async fn bounded(
    pg: &Config,
    tls: &Connector,
    limit: Duration,
) -> Result<(Client, Connection<Socket, TlsStream>), Error> {
    match tokio::time::timeout(limit, pg.connect(tls.clone())).await {
        Ok(connected) => connected,
        // The driver's own timeout error: no SQLSTATE, so it reads as "unavailable".
        Err(_) => Err(Error::__private_api_timeout()),
    }
}

/// `pg` with only its `index`-th host (and hostaddr and port, as the driver pairs them).
pub(crate) fn one_host(pg: &Config, index: usize) -> Config {
    let mut one = Config::new();
    if let Some(user) = pg.get_user() {
        one.user(user);
    }
    if let Some(password) = pg.get_password() {
        one.password(password);
    }
    if let Some(dbname) = pg.get_dbname() {
        one.dbname(dbname);
    }
    if let Some(options) = pg.get_options() {
        one.options(options);
    }
    if let Some(name) = pg.get_application_name() {
        one.application_name(name);
    }
    if let Some(host) = pg.get_hosts().get(index) {
        match host {
            tokio_postgres::config::Host::Tcp(name) => one.host(name),
            tokio_postgres::config::Host::Unix(path) => one.host_path(path),
        };
    }
    if let Some(addr) = pg.get_hostaddrs().get(index) {
        one.hostaddr(*addr);
    }
    // As the driver: one port for every host, or one per host.
    let ports = pg.get_ports();
    if let Some(port) = ports.get(index).or_else(|| ports.first()) {
        one.port(*port);
    }
    if let Some(timeout) = pg.get_connect_timeout() {
        one.connect_timeout(*timeout);
    }
    if let Some(timeout) = pg.get_tcp_user_timeout() {
        one.tcp_user_timeout(*timeout);
    }
    one.ssl_mode(pg.get_ssl_mode())
        .ssl_negotiation(pg.get_ssl_negotiation())
        .keepalives(pg.get_keepalives())
        .keepalives_idle(pg.get_keepalives_idle())
        .target_session_attrs(pg.get_target_session_attrs())
        .channel_binding(pg.get_channel_binding())
        .load_balance_hosts(pg.get_load_balance_hosts());
    if let Some(interval) = pg.get_keepalives_interval() {
        one.keepalives_interval(interval);
    }
    if let Some(retries) = pg.get_keepalives_retries() {
        one.keepalives_retries(retries);
    }
    one
}

/// The pool's way of opening connections: [`connect`], the connection driven by a task of
/// its own.
pub(crate) struct FailoverConnect {
    /// The TLS connector.
    pub(crate) tls: Connector,
    /// The bound on each host's attempt.
    pub(crate) per_host: Duration,
}

impl Connect for FailoverConnect {
    fn connect(&self, pg: &Config) -> BoxFuture<'_, Result<(Client, JoinHandle<()>), Error>> {
        let pg = pg.clone();
        Box::pin(async move {
            let (client, connection) = connect(&pg, &self.tls, self.per_host).await?;
            let task = tokio::spawn(async move {
                if let Err(err) = connection.await {
                    tracing::warn!(error = %err, "database connection failed");
                }
            });
            Ok((client, task))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const REST: &str = "user=u password=p dbname=d options='-c x=1' application_name=n \
        sslmode=require connect_timeout=3 tcp_user_timeout=4 keepalives=0 keepalives_idle=5 \
        keepalives_interval=6 keepalives_retries=7 target_session_attrs=read-write \
        channel_binding=disable load_balance_hosts=random";

    #[test]
    fn one_host_keeps_every_other_setting() {
        let pg: Config = format!(
            "host=a,b,/run/pg hostaddr=10.0.0.1,10.0.0.2,10.0.0.3 port=5432,5433,5434 {REST}"
        )
        .parse()
        .unwrap();
        for (index, hosts) in [
            "host=a hostaddr=10.0.0.1 port=5432",
            "host=b hostaddr=10.0.0.2 port=5433",
            "host=/run/pg hostaddr=10.0.0.3 port=5434",
        ]
        .iter()
        .enumerate()
        {
            let expected: Config = format!("{hosts} {REST}").parse().unwrap();
            let one = one_host(&pg, index);
            // Debug shows every field but the password and the TLS negotiation.
            assert_eq!(format!("{one:?}"), format!("{expected:?}"), "{index}");
            assert_eq!(one.get_password(), Some(&b"p"[..]));
            assert_eq!(one.get_ssl_negotiation(), pg.get_ssl_negotiation());
        }
    }

    #[test]
    fn one_port_serves_every_host() {
        let pg: Config = "postgres://u@a,b:6000/d?target_session_attrs=read-write"
            .parse()
            .unwrap();
        assert_eq!(host_count(&pg), 2);
        let first = one_host(&pg, 0);
        assert_eq!(first.get_ports(), pg.get_ports().get(0..1).unwrap_or(&[]));
        assert_eq!(host_count(&"host=/run/pg".parse().unwrap()), 1);
        assert_eq!(host_count(&Config::new()), 1);
    }
}
