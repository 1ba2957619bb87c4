//! `run`: accept loops over bound listeners, one task per connection, and graceful shutdown.
//! Tests hand in listeners bound to port 0; the binary binds the configured addresses.

use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::authz::ListenerAuth;
use crate::broker::Broker;
use crate::connection::{self, CertIdentity, ConnectionTask, IntoStream, Origin, Running, Stream, Transport};
use crate::limits::{admit, RateLimiter};
use crate::metrics::Refusal;
use crate::proxy;
use crate::tls::Tls;
use crate::ws;

/// A bound socket: TCP, or a Unix domain socket for local clients.
pub enum Socket {
    Tcp(TcpListener),
    Unix(UnixListener),
}

impl From<TcpListener> for Socket {
    fn from(socket: TcpListener) -> Socket {
        Socket::Tcp(socket)
    }
}

impl Socket {
    fn describe(&self) -> io::Result<String> {
        Ok(match self {
            Socket::Tcp(socket) => socket.local_addr()?.to_string(),
            Socket::Unix(socket) => {
                let addr = socket.local_addr()?;
                format!("unix:{}", addr.as_pathname().map(|p| p.display().to_string()).unwrap_or_default())
            }
        })
    }
}

/// Unix socket clients are local; they share this address for logs and rate limits.
const UNIX_PEER: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 0);

/// A bound listener with its own limits.
pub struct Listener {
    pub socket: Socket,
    /// Connections this listener accepts at once (`None`: only the broker-wide limit).
    pub max_connections: Option<usize>,
    /// TLS, if this listener speaks it.
    pub tls: Option<Arc<Tls>>,
    /// MQTT over WebSocket on this HTTP path (e.g. `/mqtt`), instead of bare MQTT.
    pub websocket: Option<String>,
    /// Each connection starts with a PROXY protocol (v1 or v2) header naming the real client.
    pub proxy_protocol: bool,
    /// Its own anonymous rule, password file and ACL (`per_listener_settings true`).
    pub auth: Option<Arc<ListenerAuth>>,
    /// Mosquitto's `mount_point`: a prefix on every topic of this listener's clients.
    pub mount_point: Option<Arc<str>>,
}

/// What a connection task needs to know about its listener.
struct Setting {
    tls: Option<Arc<Tls>>,
    websocket: Option<String>,
    proxy_protocol: bool,
    rate: Option<Arc<Mutex<RateLimiter>>>,
    auth: Option<Arc<ListenerAuth>>,
    mount_point: Option<Arc<str>>,
}

impl From<TcpListener> for Listener {
    fn from(socket: TcpListener) -> Listener {
        Listener {
            socket: socket.into(),
            max_connections: None,
            tls: None,
            websocket: None,
            proxy_protocol: false,
            auth: None,
            mount_point: None,
        }
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
        info!("Opening listener on {}", listener.socket.describe()?);
        accept_loops.spawn(accept_loop(Arc::clone(&broker), listener, shutdown.clone()));
    }
    let sweeper = tokio::spawn(expire_sessions(Arc::clone(&broker), shutdown.clone()));
    let sys = tokio::spawn(crate::sys::publish_periodically(Arc::clone(&broker), shutdown.clone()));
    while accept_loops.join_next().await.is_some() {}
    sweeper.abort();
    sys.abort();
    broker.bridges_stopped(std::time::Duration::from_secs(3)).await;
    // Connections and bridges are closed: commit what they left pending.
    let _ = tokio::task::spawn_blocking(move || broker.close_store()).await;
    Ok(())
}

enum Accepted {
    Tcp(TcpStream),
    Unix(UnixStream),
}

async fn accept(socket: &Socket) -> io::Result<(Accepted, SocketAddr)> {
    match socket {
        Socket::Tcp(socket) => socket.accept().await.map(|(s, peer)| (Accepted::Tcp(s), peer)),
        Socket::Unix(socket) => socket.accept().await.map(|(s, _)| (Accepted::Unix(s), UNIX_PEER)),
    }
}

/// The per-address rate limit, if one is set.
fn allowed(setting: &Setting, peer: SocketAddr) -> Result<(), Refusal> {
    match &setting.rate {
        Some(rate) if !rate.lock().unwrap_or_else(|e| e.into_inner()).allow(peer.ip(), Instant::now()) => {
            Err(Refusal::RateLimited)
        }
        _ => Ok(()),
    }
}

fn refuse(broker: &Broker, peer: SocketAddr, refusal: Refusal) {
    broker.metrics.refuse(refusal);
    warn!(%peer, reason = refusal.label(), "connection refused");
}

/// One step of readying a connection, bounded by the connect timeout; a failure or a timeout
/// is logged, naming the step, and ends the connection (`None`).
async fn step<T, E: std::fmt::Display>(
    broker: &Broker,
    peer: SocketAddr,
    what: &str,
    work: impl std::future::Future<Output = Result<T, E>>,
) -> Option<T> {
    match tokio::time::timeout(broker.config.connect_timeout, work).await {
        Ok(Ok(value)) => Some(value),
        Ok(Err(e)) => {
            info!(%peer, error = %e, "{what} failed");
            None
        }
        Err(_) => {
            info!(%peer, "{what} timed out");
            None
        }
    }
}

/// Readies one accepted connection for MQTT (the PROXY header if the listener expects one,
/// then TLS and WebSocket as the listener says) and runs its handshake. This is the opening
/// state of its [`ConnectionTask`], boxed and freed once the connection runs.
async fn prepare<S>(
    broker: Arc<Broker>,
    setting: Arc<Setting>,
    mut stream: S,
    mut peer: SocketAddr,
    shutdown: CancellationToken,
) -> Option<Running>
where
    S: Transport + IntoStream + 'static,
{
    if setting.proxy_protocol {
        // `None`: the balancer speaking for itself (health checks).
        if let Some(client) =
            step(&broker, peer, "PROXY protocol header", proxy::read_header(&mut stream)).await?
        {
            peer = client;
        }
        if let Err(refusal) = allowed(&setting, peer) {
            refuse(&broker, peer, refusal);
            return None;
        }
    }
    let (stream, identity): (Stream, _) = match &setting.tls {
        None => (stream.into_stream(), CertIdentity::NotUsed),
        Some(tls) => {
            let stream = step(&broker, peer, "TLS handshake", tls.acceptor().accept(stream)).await?;
            let identity = match tls.names_clients() {
                true => CertIdentity::Named(tls.username(stream.get_ref().1.peer_certificates())),
                false => CertIdentity::NotUsed,
            };
            (Stream::boxed(stream), identity)
        }
    };
    let stream: Stream = match &setting.websocket {
        None => stream,
        Some(path) => {
            Stream::boxed(step(&broker, peer, "WebSocket handshake", ws::accept(stream, path)).await?)
        }
    };
    let origin = Origin { identity, auth: setting.auth.clone(), mount_point: setting.mount_point.clone() };
    connection::open(broker, stream, peer, origin, shutdown).await
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
    // Counts this listener's connection tasks and waits for them at shutdown, with nothing
    // kept per task (a `JoinSet` keeps an entry of about 72 bytes for each).
    let connections = TaskTracker::new();
    let mut backoff = Duration::from_millis(5);
    let rate = broker.config.connection_rate_per_ip.map(|r| Arc::new(Mutex::new(RateLimiter::new(r))));
    let setting = Arc::new(Setting {
        tls: listener.tls.clone(),
        websocket: listener.websocket.clone(),
        auth: listener.auth.clone(),
        proxy_protocol: listener.proxy_protocol,
        rate,
        mount_point: listener.mount_point.clone(),
    });
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = accept(&listener.socket) => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                // Usually out of file descriptors: wait, rather than spin, for some to close.
                warn!(error = %e, "accept failed; backing off {backoff:?}");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        backoff = Duration::from_millis(5);
        let open = broker.metrics.connections_current.load(std::sync::atomic::Ordering::Relaxed);
        // Behind a PROXY header the address here is the balancer's: rate limits wait for it.
        let rate_checked_here = !setting.proxy_protocol;
        let verdict = admit(open, broker.config.max_connections, connections.len(), listener.max_connections)
            .and_then(|()| match rate_checked_here {
                true => allowed(&setting, peer),
                false => Ok(()),
            });
        if let Err(refusal) = verdict {
            // Refused before any MQTT is read: closing is the only answer there is.
            refuse(&broker, peer, refusal);
            continue;
        }
        let (broker, shutdown, setting) = (Arc::clone(&broker), shutdown.clone(), Arc::clone(&setting));
        // A token rather than `spawn` on the tracker: a parked connection, which has no task,
        // still counts.
        let tracked = connections.token();
        let task = match stream {
            Accepted::Tcp(stream) => {
                // Small packets are the norm: don't let Nagle hold them back.
                let _ = stream.set_nodelay(true);
                ConnectionTask::new(
                    Arc::clone(&broker),
                    tracked,
                    prepare(broker, setting, stream, peer, shutdown),
                )
            }
            Accepted::Unix(stream) => ConnectionTask::new(
                Arc::clone(&broker),
                tracked,
                prepare(broker, setting, stream, peer, shutdown),
            ),
        };
        tokio::spawn(task);
    }
    broker.shut_connections();
    connections.close();
    // Each connection sees the shutdown at its next turn (its doorbell is rung) and takes at
    // most a second to say goodbye; this bound is for anything else.
    if tokio::time::timeout(Duration::from_secs(5), connections.wait()).await.is_err() {
        warn!(open = connections.len(), "connections still open after the shutdown deadline");
    }
}
