//! `run`: accept loops over bound listeners, one task per connection, and graceful shutdown.
//! Tests hand in listeners bound to port 0; the binary binds the configured addresses.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::broker::Broker;
use crate::connection::{self, CertIdentity};
use crate::limits::{admit, RateLimiter};
use crate::metrics::Refusal;
use crate::tls::Tls;
use crate::ws;

/// A bound listener with its own limits.
pub struct Listener {
    pub socket: TcpListener,
    /// Connections this listener accepts at once (`None`: only the broker-wide limit).
    pub max_connections: Option<usize>,
    /// TLS, if this listener speaks it.
    pub tls: Option<Arc<Tls>>,
    /// MQTT over WebSocket on this HTTP path (e.g. `/mqtt`), instead of bare MQTT.
    pub websocket: Option<String>,
}

impl From<TcpListener> for Listener {
    fn from(socket: TcpListener) -> Listener {
        Listener { socket, max_connections: None, tls: None, websocket: None }
    }
}

/// Serves MQTT on `listeners` until `shutdown` is cancelled, then closes every connection
/// (MQTT 5 clients get DISCONNECT 0x8B) and returns once they are gone or a deadline passes.
pub async fn run(
    broker: Arc<Broker>,
    listeners: Vec<TcpListener>,
    shutdown: CancellationToken,
) -> io::Result<()> {
    run_listeners(broker, listeners.into_iter().map(Listener::from).collect(), shutdown).await
}

/// `run` with per-listener limits.
pub async fn run_listeners(
    broker: Arc<Broker>,
    listeners: Vec<Listener>,
    shutdown: CancellationToken,
) -> io::Result<()> {
    let mut accept_loops = JoinSet::new();
    for listener in listeners {
        info!("Opening listener on {}", listener.socket.local_addr()?);
        accept_loops.spawn(accept_loop(Arc::clone(&broker), listener, shutdown.clone()));
    }
    let sweeper = tokio::spawn(expire_sessions(Arc::clone(&broker), shutdown.clone()));
    let sys = tokio::spawn(crate::sys::publish_periodically(Arc::clone(&broker), shutdown.clone()));
    while accept_loops.join_next().await.is_some() {}
    sweeper.abort();
    sys.abort();
    // Connections are closed: commit what they left pending.
    let _ = tokio::task::spawn_blocking(move || broker.close_store()).await;
    Ok(())
}

/// The TLS handshake (bounded by the connect timeout), then MQTT over it.
async fn serve_tls(
    broker: Arc<Broker>,
    tls: Arc<Tls>,
    stream: tokio::net::TcpStream,
    websocket: Option<String>,
    peer: std::net::SocketAddr,
    shutdown: CancellationToken,
) {
    let handshake = tokio::time::timeout(broker.config.connect_timeout, tls.acceptor().accept(stream)).await;
    let stream = match handshake {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => {
            info!(%peer, error = %e, "TLS handshake failed");
            return;
        }
        Err(_) => {
            info!(%peer, "TLS handshake timed out");
            return;
        }
    };
    let identity = match tls.names_clients() {
        true => CertIdentity::Named(tls.username(stream.get_ref().1.peer_certificates())),
        false => CertIdentity::NotUsed,
    };
    serve_stream(broker, stream, websocket, peer, identity, shutdown).await;
}

/// MQTT on a (possibly TLS) stream, first upgrading it to WebSocket on listeners that say so.
async fn serve_stream<S>(
    broker: Arc<Broker>,
    stream: S,
    websocket: Option<String>,
    peer: std::net::SocketAddr,
    identity: CertIdentity,
    shutdown: CancellationToken,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin,
{
    let Some(path) = websocket else {
        return connection::serve(broker, stream, peer, identity, shutdown).await;
    };
    match tokio::time::timeout(broker.config.connect_timeout, ws::accept(stream, &path)).await {
        Ok(Ok(ws)) => connection::serve(broker, ws, peer, identity, shutdown).await,
        Ok(Err(e)) => info!(%peer, error = %e, "WebSocket handshake failed"),
        Err(_) => info!(%peer, "WebSocket handshake timed out"),
    }
}

/// Ends sessions whose expiry interval ran out while their client was away.
async fn expire_sessions(broker: Arc<Broker>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(broker.config.expiry_check_interval);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let ended = broker.expire_sessions(std::time::Instant::now());
        if ended > 0 {
            info!(ended, "expired sessions removed");
        }
    }
}

async fn accept_loop(broker: Arc<Broker>, listener: Listener, shutdown: CancellationToken) {
    let mut connections = JoinSet::new();
    let mut backoff = Duration::from_millis(5);
    let mut rate = broker.config.connection_rate_per_ip.map(RateLimiter::new);
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.socket.accept() => accepted,
            // Reap finished connection tasks so the set does not grow without bound.
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
        };
        match accepted {
            Ok((stream, peer)) => {
                backoff = Duration::from_millis(5);
                while connections.try_join_next().is_some() {}
                let open = broker.metrics.connections_current.load(std::sync::atomic::Ordering::Relaxed);
                let mut verdict =
                    admit(open, broker.config.max_connections, connections.len(), listener.max_connections);
                if verdict.is_ok()
                    && rate.as_mut().is_some_and(|r| !r.allow(peer.ip(), std::time::Instant::now()))
                {
                    verdict = Err(Refusal::RateLimited);
                }
                if let Err(refusal) = verdict {
                    // Refused before any MQTT is read: closing is the only answer there is.
                    broker.metrics.refuse(refusal);
                    warn!(%peer, reason = refusal.label(), "connection refused");
                    drop(stream);
                    continue;
                }
                // Small packets are the norm: don't let Nagle hold them back.
                let _ = stream.set_nodelay(true);
                let (broker, shutdown, path) =
                    (Arc::clone(&broker), shutdown.clone(), listener.websocket.clone());
                match &listener.tls {
                    None => connections.spawn(serve_stream(
                        broker,
                        stream,
                        path,
                        peer,
                        CertIdentity::NotUsed,
                        shutdown,
                    )),
                    Some(tls) => {
                        connections.spawn(serve_tls(broker, Arc::clone(tls), stream, path, peer, shutdown))
                    }
                };
            }
            Err(e) => {
                // Usually out of file descriptors: wait, rather than spin, for some to close.
                warn!(error = %e, "accept failed; backing off {backoff:?}");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
        }
    }
    let drained = tokio::time::timeout(Duration::from_secs(5), async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        warn!("connections still open after the shutdown deadline; aborting them");
        connections.abort_all();
    }
}
