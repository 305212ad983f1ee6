//! `TcpProxy`: a TCP forwarder that can simulate a database outage.

use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Forwards connections to an upstream address until [`TcpProxy::set_down`]
/// takes it down: then every open connection is closed and new ones are
/// closed at once, until it is set up again. Dropping it closes everything.
pub struct TcpProxy {
    addr: SocketAddr,
    down: watch::Sender<bool>,
    accept_task: JoinHandle<()>,
}

impl TcpProxy {
    /// Listens on 127.0.0.1 on a free port, forwarding to `upstream`.
    pub async fn start(upstream: SocketAddr) -> TcpProxy {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the proxy");
        let addr = listener.local_addr().expect("proxy address");
        let (down, down_watch) = watch::channel(false);
        let accept_task = tokio::spawn(accept(listener, upstream, down_watch));
        TcpProxy {
            addr,
            down,
            accept_task,
        }
    }

    /// The address to connect to instead of the upstream.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Takes the proxy down (`true`: closes every connection, refuses new
    /// ones) or brings it back up (`false`).
    pub fn set_down(&self, down: bool) {
        self.down.send_replace(down);
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.accept_task.abort();
        // Closing the channel ends every forwarding task.
        self.down.send_replace(true);
    }
}

async fn accept(listener: TcpListener, upstream: SocketAddr, down: watch::Receiver<bool>) {
    loop {
        let Ok((inbound, _)) = listener.accept().await else {
            // Out of file descriptors or similar: do not spin.
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            continue;
        };
        if *down.borrow() {
            drop(inbound);
            continue;
        }
        tokio::spawn(forward(inbound, upstream, down.clone()));
    }
}

async fn forward(mut inbound: TcpStream, upstream: SocketAddr, mut down: watch::Receiver<bool>) {
    let Ok(mut outbound) = TcpStream::connect(upstream).await else {
        return;
    };
    tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
        () = until_down(&mut down) => {}
    }
}

async fn until_down(down: &mut watch::Receiver<bool>) {
    loop {
        if *down.borrow_and_update() {
            return;
        }
        if down.changed().await.is_err() {
            return;
        }
    }
}
