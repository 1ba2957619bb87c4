//! `cauldron serve`: load the stored state, bind the listeners, run the broker until SIGINT or
//! SIGTERM, then commit what is pending.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use cauldron_broker::config::toml::RecorderToml;
use cauldron_broker::config::{mosquitto, ListenerSpec, Setup};
use cauldron_broker::store::Durability;
use cauldron_broker::tls::{TlsSettings, TlsVersions};
use cauldron_broker::{CancellationToken, Config, Reload, Server};
use tokio::net::TcpListener;
use tracing::info;

#[derive(clap::Args)]
pub struct ServeArgs {
    /// Read a cauldron.toml (see docs/CONFIG.md). It replaces the listener, auth and limit flags.
    #[arg(long, value_name = "FILE", conflicts_with = "mosquitto_conf")]
    config: Option<PathBuf>,
    /// Read a Mosquitto 2.x configuration file as it is (listeners, auth files, TLS, limits).
    /// It replaces the listener, auth and limit flags; --http and --relaxed-commit-ms still apply.
    #[arg(long, value_name = "FILE")]
    mosquitto_conf: Option<PathBuf>,
    /// Address to accept MQTT on; repeat for several. Default 127.0.0.1:1883.
    #[arg(long = "listen", value_name = "ADDR:PORT")]
    listen: Vec<SocketAddr>,
    /// Address to accept MQTT over TLS on; repeat for several. Needs --certfile and --keyfile.
    #[arg(long = "tls-listen", value_name = "ADDR:PORT")]
    tls_listen: Vec<SocketAddr>,
    /// Unix domain socket to accept MQTT on (local clients); repeat for several.
    #[arg(long = "unix-listen", value_name = "PATH")]
    unix_listen: Vec<PathBuf>,
    /// Address to accept MQTT on behind a load balancer: each connection starts with a PROXY
    /// protocol (v1 or v2) header naming the real client.
    #[arg(long = "proxy-listen", value_name = "ADDR:PORT")]
    proxy_listen: Vec<SocketAddr>,
    /// Address to accept MQTT over WebSocket on; repeat for several.
    #[arg(long = "ws-listen", value_name = "ADDR:PORT")]
    ws_listen: Vec<SocketAddr>,
    /// Address to accept MQTT over WebSocket over TLS on; repeat for several.
    #[arg(long = "wss-listen", value_name = "ADDR:PORT")]
    wss_listen: Vec<SocketAddr>,
    /// HTTP path of the WebSocket listeners.
    #[arg(long, value_name = "PATH", default_value = "/mqtt")]
    ws_path: String,
    /// PEM server certificate (chain) for the TLS listeners.
    #[arg(long, value_name = "FILE")]
    certfile: Option<PathBuf>,
    /// PEM private key for the TLS listeners.
    #[arg(long, value_name = "FILE")]
    keyfile: Option<PathBuf>,
    /// PEM CA certificates that client certificates must chain to.
    #[arg(long, value_name = "FILE")]
    cafile: Option<PathBuf>,
    /// PEM certificate revocation lists: revoked client certificates are refused (needs
    /// --cafile; Mosquitto's crlfile).
    #[arg(long, value_name = "FILE")]
    crlfile: Option<PathBuf>,
    /// Refuse TLS clients without a valid certificate.
    #[arg(long)]
    require_certificate: bool,
    /// Use the client certificate's Common Name as the user name (no password checked).
    #[arg(long)]
    use_identity_as_username: bool,
    /// Use the client certificate's whole subject as the user name.
    #[arg(long)]
    use_subject_as_username: bool,
    /// Offer only this TLS version (tlsv1.2 or tlsv1.3); default both.
    #[arg(long, value_name = "VERSION", value_parser = ["tlsv1.2", "tlsv1.3"])]
    tls_version: Option<String>,
    /// Address of the HTTP listener: /metrics, /healthz, /readyz, and the OwnTracks recorder's
    /// API, live feed, HTTP mode (/pub) and map (/).
    #[arg(long, value_name = "ADDR:PORT", default_value = "127.0.0.1:8083")]
    http: SocketAddr,
    /// Mosquitto password file (`$6$`, `$7$` or `$argon2id$` hashes, as mosquitto_passwd writes).
    #[arg(long, value_name = "FILE")]
    password_file: Option<PathBuf>,
    /// Mosquitto ACL file; without one, every client may use every topic.
    #[arg(long, value_name = "FILE")]
    acl_file: Option<PathBuf>,
    /// Whether clients without credentials may connect. Default: yes, unless a password file
    /// is given.
    #[arg(long, value_name = "BOOL")]
    allow_anonymous: Option<bool>,
    /// Connections open at once across all listeners (Mosquitto's max_connections).
    #[arg(long, value_name = "N")]
    max_connections: Option<usize>,
    /// Connections open at once on each listener.
    #[arg(long, value_name = "N")]
    listener_max_connections: Option<usize>,
    /// New connections per second accepted from one address.
    #[arg(long, value_name = "N")]
    connection_rate_per_ip: Option<u32>,
    /// Highest keep alive granted, in seconds; 0 is no maximum (Mosquitto's max_keepalive).
    #[arg(long, value_name = "SECS", default_value_t = 0)]
    max_keepalive: u16,
    /// Serve /metrics without a login even on an address other than loopback (with users in
    /// the password file, it otherwise takes one of their logins there).
    #[arg(long)]
    metrics_public: bool,
    /// Largest PUBLISH payload accepted, in bytes; bigger ones are dropped, their QoS flow
    /// completed. 0 is no limit (Mosquitto's message_size_limit).
    #[arg(long, value_name = "BYTES", default_value_t = 0)]
    message_size_limit: usize,
    /// Largest packet accepted, in bytes (Mosquitto's max_packet_size).
    #[arg(long, value_name = "BYTES")]
    max_packet_size: Option<usize>,
    /// Payload bytes queued across all sessions above which QoS 0 is shed (and, a quarter above,
    /// QoS 1/2 too). 0 is no ceiling.
    #[arg(long, value_name = "BYTES", default_value_t = 0)]
    memory_ceiling: usize,
    /// Seconds between $SYS updates; 0 turns them off (Mosquitto's sys_interval).
    #[arg(long, value_name = "SECS", default_value_t = 10)]
    sys_interval: u64,
    /// Run as one node of a cluster on NATS JetStream: the NATS servers, comma-separated
    /// (nats://host:4222,...). See docs/CLUSTER.md.
    #[arg(long, value_name = "URLS", value_delimiter = ',')]
    cluster: Vec<String>,
    /// This node's name in the cluster, unique; default the host name.
    #[arg(long, value_name = "NAME")]
    node_id: Option<String>,
    /// Copies JetStream keeps of what cauldron stores (the number of NATS servers, up to 5).
    #[arg(long, value_name = "N", default_value_t = 3)]
    cluster_replicas: usize,
    /// A NATS credentials file (.creds) for the cluster's servers.
    #[arg(long, value_name = "FILE")]
    cluster_credentials: Option<PathBuf>,
    /// CA certificates of tls:// NATS servers.
    #[arg(long, value_name = "FILE")]
    cluster_ca_file: Option<PathBuf>,
    /// Directory for persistent state (retained messages, sessions, queued messages).
    #[arg(long, value_name = "DIR", default_value = "cauldron-data")]
    data_dir: PathBuf,
    /// Messages queued per session beyond the inflight window; 0 is no limit (Mosquitto's
    /// max_queued_messages).
    #[arg(long, value_name = "N", default_value_t = Config::default().max_queued_messages)]
    max_queued_messages: usize,
    /// Payload bytes queued per session; 0 is no limit (Mosquitto's max_queued_bytes).
    #[arg(long, value_name = "BYTES", default_value_t = 0)]
    max_queued_bytes: usize,
    /// Queue QoS 0 messages for offline persistent sessions (Mosquitto's queue_qos0_messages).
    #[arg(long)]
    queue_qos0_messages: bool,
    /// When a session's queue is full, drop its oldest message instead of the new one.
    #[arg(long)]
    drop_oldest: bool,
    /// QoS 1/2 messages in flight to one client, and from one MQTT 5 client (its Receive
    /// Maximum) (Mosquitto's max_inflight_messages).
    #[arg(long, value_name = "N", default_value_t = Config::default().max_inflight_messages)]
    max_inflight_messages: usize,
    /// Acknowledge before storing and commit at most every MS milliseconds. Faster, but a crash
    /// can lose what was acknowledged in the last interval. Default: acknowledge only what is
    /// committed.
    #[arg(long, value_name = "MS")]
    relaxed_commit_ms: Option<u64>,
    /// Seconds a 3.x persistent session outlives its client (Mosquitto's
    /// persistent_client_expiration). Default: forever.
    #[arg(long, value_name = "SECS")]
    persistent_client_expiration: Option<u64>,
    #[command(flatten)]
    recorder: crate::recorder::RecorderFlags,
}

impl ServeArgs {
    /// The setup the flags describe (when no mosquitto.conf is given).
    fn setup(&self) -> anyhow::Result<Setup> {
        let mut config = Config {
            data_dir: self.data_dir.clone(),
            max_queued_messages: self.max_queued_messages,
            max_queued_bytes: self.max_queued_bytes,
            queue_qos0_messages: self.queue_qos0_messages,
            drop_oldest: self.drop_oldest,
            max_inflight_messages: self.max_inflight_messages.max(1),
            persistent_client_expiration: self.persistent_client_expiration.map(Duration::from_secs),
            max_connections: self.max_connections,
            connection_rate_per_ip: self.connection_rate_per_ip,
            max_keepalive: self.max_keepalive,
            message_size_limit: self.message_size_limit,
            max_packet_size: self.max_packet_size.unwrap_or(Config::default().max_packet_size),
            sys_interval: self.sys_interval,
            memory_ceiling: self.memory_ceiling,
            ..Config::default()
        };
        config.allow_anonymous = self.allow_anonymous.unwrap_or(self.password_file.is_none());
        let tls = (!self.tls_listen.is_empty() || !self.wss_listen.is_empty()).then(|| TlsSettings {
            certfile: self.certfile.clone().unwrap_or_default(),
            keyfile: self.keyfile.clone().unwrap_or_default(),
            cafile: self.cafile.clone(),
            crlfile: self.crlfile.clone(),
            require_certificate: self.require_certificate,
            use_identity_as_username: self.use_identity_as_username,
            use_subject_as_username: self.use_subject_as_username,
            versions: match self.tls_version.as_deref() {
                Some("tlsv1.2") => TlsVersions::Tls12,
                Some("tlsv1.3") => TlsVersions::Tls13,
                _ => TlsVersions::Both,
            },
        });
        if tls.as_ref().is_some_and(|t| t.certfile.as_os_str().is_empty() || t.keyfile.as_os_str().is_empty())
        {
            anyhow::bail!("--tls-listen and --wss-listen need --certfile and --keyfile");
        }
        let default_listen = [Config::default().listeners[0]];
        let plain: &[SocketAddr] = if self.listen.is_empty() { &default_listen } else { &self.listen };
        // Plain, TLS, WebSocket and WebSocket over TLS listeners, in that order.
        let kinds = [
            (plain, false, false),
            (&self.tls_listen[..], true, false),
            (&self.ws_listen[..], false, true),
            (&self.wss_listen[..], true, true),
        ];
        let mut listeners: Vec<ListenerSpec> = kinds
            .into_iter()
            .flat_map(|(addrs, secure, websocket)| addrs.iter().map(move |addr| (*addr, secure, websocket)))
            .map(|(addr, secure, websocket)| ListenerSpec {
                addr: Some(addr),
                max_connections: self.listener_max_connections,
                tls: if secure { tls.clone() } else { None },
                websocket: websocket.then(|| self.ws_path.clone()),
                ..ListenerSpec::default()
            })
            .collect();
        let limit = self.listener_max_connections;
        listeners.extend(self.proxy_listen.iter().map(|addr| ListenerSpec {
            addr: Some(*addr),
            max_connections: limit,
            proxy_protocol: true,
            ..ListenerSpec::default()
        }));
        listeners.extend(self.unix_listen.iter().map(|path| ListenerSpec {
            unix: Some(path.clone()),
            max_connections: limit,
            ..ListenerSpec::default()
        }));
        Ok(Setup {
            config,
            listeners,
            password_file: self.password_file.clone(),
            acl_file: self.acl_file.clone(),
            bridges: Vec::new(),
            cluster: None,
            warnings: Vec::new(),
        })
    }
}

/// Reads and checks everything a start needs; any problem stops here, naming its file.
/// Returns the setup, the HTTP address and the recorder's settings.
pub fn load_setup(args: &ServeArgs) -> anyhow::Result<(Setup, SocketAddr, RecorderToml)> {
    let (mut setup, http, relaxed, recorder) = match (&args.config, &args.mosquitto_conf) {
        (Some(path), _) => {
            let read = cauldron_broker::config::toml::read(path)?;
            let relaxed = read.relaxed_commit_ms.or(args.relaxed_commit_ms);
            (read.setup, read.http.unwrap_or(args.http), relaxed, read.recorder)
        }
        (None, Some(path)) => {
            (mosquitto::read(path)?, args.http, args.relaxed_commit_ms, RecorderToml::default())
        }
        (None, None) => (args.setup()?, args.http, args.relaxed_commit_ms, RecorderToml::default()),
    };
    // A file that names no data directory (mosquitto.conf without persistence_location) keeps
    // its state where `--data-dir` says, not in whatever folder cauldron was started from.
    if setup.config.data_dir == Config::default().data_dir {
        setup.config.data_dir = args.data_dir.clone();
    }
    let recorder = args.recorder.over(recorder);
    if !args.cluster.is_empty() {
        setup.cluster = Some(cauldron_broker::cluster::ClusterSpec {
            servers: args.cluster.clone(),
            node_id: args.node_id.clone().unwrap_or_else(cauldron_broker::config::toml::host_name),
            replicas: args.cluster_replicas,
            credentials: args.cluster_credentials.clone(),
            ca_file: args.cluster_ca_file.clone(),
        });
    }
    setup.config.durability = match relaxed {
        Some(ms) => Durability::Relaxed { interval: Duration::from_millis(ms) },
        None => Durability::Sync,
    };
    Ok((setup, http, recorder))
}

pub async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let signals = StopSignals::install().context("installing signal handlers")?;
    let (setup, http_addr, recorder_settings) = load_setup(&args)?;
    crate::recorder::check(&recorder_settings)?;
    // Every file read and checked, the state restored, the listeners bound.
    let server = Server::build(setup).await?;
    let http_listener =
        TcpListener::bind(http_addr).await.with_context(|| format!("binding HTTP {http_addr}"))?;
    let shutdown = CancellationToken::new();
    let ready = Arc::new(AtomicBool::new(true));
    let broker = Arc::clone(server.broker());
    let passwords = Arc::clone(server.passwords());
    // The recorder is a part of its own: a store it cannot open (corrupt, locked) turns it off
    // with an error, and the MQTT broker serves on.
    let recorder = match recorder_settings.enabled.unwrap_or(true) {
        true => match crate::recorder::in_process(
            &broker,
            server.data_dir(),
            &recorder_settings,
            &passwords,
            server.authorizer(),
        ) {
            Ok(api) => Some(api),
            Err(e) => {
                tracing::error!("OwnTracks recorder OFF, the broker runs without it: {e:#}");
                None
            }
        },
        false => None,
    };
    // Metrics say who is connected and how much traffic flows: beyond loopback, users log in.
    let metrics_login = (!args.metrics_public && !http_addr.ip().is_loopback()).then_some(passwords);
    let http = crate::http::Http { broker, ready: Arc::clone(&ready), recorder, metrics_login };
    let http_task = tokio::spawn(crate::http::serve(http_listener, http, shutdown.clone()));
    tokio::spawn(stop_on_signal(signals, shutdown.clone(), ready));
    tokio::spawn(reload_on_hangup(server.reload()));
    server.run(shutdown).await?;
    let _ = http_task.await;
    info!("cauldron stopped");
    Ok(())
}

/// On SIGHUP, reads the password files, ACL files and certificates again without dropping any
/// connection (a certificate renewal is the common case).
async fn reload_on_hangup(reload: Reload) {
    let Ok(mut hangup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) else {
        return;
    };
    while hangup.recv().await.is_some() {
        reload.run();
    }
}

/// SIGINT and SIGTERM handlers, installed before anything is bound: a signal that arrives while
/// starting must stop the broker cleanly, not kill it.
struct StopSignals {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
}

impl StopSignals {
    fn install() -> std::io::Result<StopSignals> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(StopSignals {
            interrupt: signal(SignalKind::interrupt())?,
            terminate: signal(SignalKind::terminate())?,
        })
    }
}

async fn stop_on_signal(mut signals: StopSignals, shutdown: CancellationToken, ready: Arc<AtomicBool>) {
    tokio::select! {
        _ = signals.interrupt.recv() => {}
        _ = signals.terminate.recv() => {}
    }
    info!("shutdown requested");
    ready.store(false, std::sync::atomic::Ordering::Relaxed);
    shutdown.cancel();
}
