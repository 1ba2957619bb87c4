//! A whole broker from one [`Setup`]: its password and ACL files (broker-wide and per
//! listener), TLS certificates, the store with the state it holds, bound listeners and bridges,
//! and what SIGHUP reloads. The `cauldron` binary is a thin shell around it; embedding the
//! library gets the same.
//!
//! ```no_run
//! # async fn example() -> Result<(), cauldron_broker::ServerError> {
//! use cauldron_broker::config::Setup;
//! use cauldron_broker::{CancellationToken, Server};
//! let setup: Setup = cauldron_broker::config::mosquitto::read("mosquitto.conf".as_ref())
//!     .map_err(|e| cauldron_broker::ServerError::new(e))?;
//! let server = Server::build(setup).await?;
//! server.run(CancellationToken::new()).await
//! # }
//! ```

use std::fmt::Display;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::net::{TcpListener, UnixListener};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::auth::acl::{AclFile, ReloadableAcl};
use crate::auth::password::{PasswordFile, Passwords};
use crate::authz::{AllowAll, Authorizer, ListenerAuth};
use crate::bridge::BridgeSpec;
use crate::config::{Config, ListenerSpec, Setup};
use crate::server::{run_listeners, Listener, Socket};
use crate::store::RedbStore;
use crate::tls::Tls;
use crate::Broker;

/// The broker's store inside the data directory.
pub const STORE_FILE: &str = "cauldron.redb";

/// Why a server could not be built or run; the message names the file, address or setting.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ServerError(String);

impl ServerError {
    pub fn new(message: impl Display) -> ServerError {
        ServerError(message.to_string())
    }
}

/// `error` with what was being done.
fn context<E: Display>(what: impl Display) -> impl FnOnce(E) -> ServerError {
    move |error| ServerError(format!("{what}: {error}"))
}

/// A broker ready to serve: state restored, files loaded, listeners bound.
pub struct Server {
    broker: Arc<Broker>,
    listeners: Vec<Listener>,
    bridges: Vec<(BridgeSpec, Option<cauldron_client::Tls>)>,
    cluster: Option<crate::cluster::ClusterSpec>,
    passwords: Arc<Passwords>,
    authorizer: Arc<dyn Authorizer>,
    data_dir: PathBuf,
    reload: Reload,
}

impl Server {
    /// Reads every file `setup` names and checks it (a bad one stops here, named: nothing starts
    /// half-configured), restores the stored state, then binds the listeners.
    pub async fn build(setup: Setup) -> Result<Server, ServerError> {
        for warning in &setup.warnings {
            warn!("{warning}");
        }
        let Setup { mut config, listeners: specs, password_file, acl_file, bridges, cluster, .. } = setup;
        if let Some(path) = &password_file {
            config.password_file =
                Arc::new(Passwords::new(Some(PasswordFile::load(path).map_err(ServerError::new)?)));
        }
        let passwords = Arc::clone(&config.password_file);
        let acl = match &acl_file {
            Some(path) => Some(Arc::new(ReloadableAcl::new(AclFile::load(path).map_err(ServerError::new)?))),
            None => None,
        };
        let authorizer: Arc<dyn Authorizer> = match &acl {
            Some(acl) => Arc::clone(acl) as Arc<dyn Authorizer>,
            None => Arc::new(AllowAll),
        };
        let mut reload = Reload {
            broker: None,
            passwords: password_file
                .clone()
                .map(|path| vec![(path, Arc::clone(&passwords))])
                .unwrap_or_default(),
            acls: acl_file.clone().zip(acl).map(|pair| vec![pair]).unwrap_or_default(),
            tls: Vec::new(),
        };
        let mut prepared = Vec::new();
        for spec in specs {
            let tls = match &spec.tls {
                Some(settings) => Some(Arc::new(Tls::load(settings.clone()).map_err(ServerError::new)?)),
                None => None,
            };
            let auth = listener_auth(&spec, &config, &passwords, &authorizer, &mut reload)?;
            reload.tls.extend(tls.clone());
            prepared.push((spec, tls, auth));
        }
        let mut bridge_tls = Vec::new();
        for bridge in bridges {
            let tls = bridge.tls.as_ref().map(crate::bridge::client_tls).transpose();
            let tls = tls.map_err(context(format!("bridge {:?}", bridge.name)))?;
            bridge_tls.push((bridge, tls));
        }
        info!("cauldron {} starting", env!("CARGO_PKG_VERSION"));
        // State is loaded before any listener opens.
        let data_dir = config.data_dir.clone();
        std::fs::create_dir_all(&data_dir)
            .map_err(context(format!("creating data directory {}", data_dir.display())))?;
        let broker = if config.persistence {
            let path = data_dir.join(STORE_FILE);
            let (store, snapshot, _quarantined) =
                RedbStore::open(&path).map_err(context(format!("opening the store {}", path.display())))?;
            let durability = config.durability;
            Broker::open(config, Arc::clone(&authorizer), Box::new(store), snapshot, durability)
                .map_err(context(format!("restoring state from {}", path.display())))?
        } else {
            warn!("persistence is off (mosquitto.conf without `persistence true`): retained messages and sessions last until the broker stops");
            Broker::with_authorizer(config, Arc::clone(&authorizer))
        };
        let mut listeners = Vec::new();
        for (spec, tls, auth) in prepared {
            listeners.push(Listener {
                socket: bind(&spec).await?,
                max_connections: spec.max_connections,
                tls,
                websocket: spec.websocket,
                proxy_protocol: spec.proxy_protocol,
                auth,
                mount_point: spec.mount_point.map(Into::into),
            });
        }
        reload.broker = Some(Arc::clone(&broker));
        Ok(Server {
            broker,
            listeners,
            bridges: bridge_tls,
            cluster,
            passwords,
            authorizer,
            data_dir,
            reload,
        })
    }

    pub fn broker(&self) -> &Arc<Broker> {
        &self.broker
    }

    /// The broker-wide users (reloaded in place by [`Reload::run`]).
    pub fn passwords(&self) -> &Arc<Passwords> {
        &self.passwords
    }

    /// The broker-wide ACL, or allow-all without one.
    pub fn authorizer(&self) -> &Arc<dyn Authorizer> {
        &self.authorizer
    }

    /// The TCP listeners' addresses, as bound (a port 0 is the one the system gave).
    pub fn tcp_addresses(&self) -> Vec<std::net::SocketAddr> {
        self.listeners
            .iter()
            .filter_map(|l| match &l.socket {
                Socket::Tcp(socket) => socket.local_addr().ok(),
                Socket::Unix(_) => None,
            })
            .collect()
    }

    pub fn data_dir(&self) -> &std::path::Path {
        &self.data_dir
    }

    /// What a reload (SIGHUP) reads again; it can be run while the server serves.
    pub fn reload(&self) -> Reload {
        self.reload.clone()
    }

    /// Joins the cluster (if configured), starts the bridges and serves until `shutdown` is
    /// cancelled, then closes every connection (MQTT 5 clients get DISCONNECT 0x8B) and commits
    /// what is pending.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), ServerError> {
        if let Some(cluster) = self.cluster {
            crate::cluster::join(&self.broker, cluster, shutdown.clone()).await.map_err(ServerError::new)?;
        }
        for (bridge, tls) in self.bridges {
            crate::bridge::start(&self.broker, bridge, tls, shutdown.clone());
        }
        run_listeners(self.broker, self.listeners, shutdown).await.map_err(ServerError::new)
    }
}

/// A listener's own auth (`per_listener_settings`): what it does not set is the broker's.
fn listener_auth(
    spec: &ListenerSpec,
    config: &Config,
    passwords: &Arc<Passwords>,
    authorizer: &Arc<dyn Authorizer>,
    reload: &mut Reload,
) -> Result<Option<Arc<ListenerAuth>>, ServerError> {
    let Some(own) = &spec.auth else { return Ok(None) };
    let passwords = match &own.password_file {
        Some(path) => {
            let loaded = Arc::new(Passwords::new(Some(PasswordFile::load(path).map_err(ServerError::new)?)));
            reload.passwords.push((path.clone(), Arc::clone(&loaded)));
            loaded
        }
        None => Arc::clone(passwords),
    };
    let authorizer: Arc<dyn Authorizer> = match &own.acl_file {
        Some(path) => {
            let loaded = Arc::new(ReloadableAcl::new(AclFile::load(path).map_err(ServerError::new)?));
            reload.acls.push((path.clone(), Arc::clone(&loaded)));
            loaded
        }
        None => Arc::clone(authorizer),
    };
    Ok(Some(Arc::new(ListenerAuth {
        allow_anonymous: own.allow_anonymous.unwrap_or(config.allow_anonymous),
        passwords,
        authorizer,
    })))
}

async fn bind(spec: &ListenerSpec) -> Result<Socket, ServerError> {
    match &spec.unix {
        Some(path) => {
            // A socket file left by an earlier run would make bind fail.
            if path.exists() {
                std::fs::remove_file(path)
                    .map_err(context(format!("removing stale socket {}", path.display())))?;
            }
            Ok(Socket::Unix(
                UnixListener::bind(path).map_err(context(format!("binding {}", path.display())))?,
            ))
        }
        None => {
            let addr = spec.addr.unwrap_or_else(|| Config::default().listeners[0]);
            Ok(Socket::Tcp(TcpListener::bind(addr).await.map_err(context(format!("binding {addr}")))?))
        }
    }
}

/// The password files, ACL files and certificates a server reads again on demand (SIGHUP),
/// without dropping any connection.
#[derive(Clone)]
pub struct Reload {
    /// Whose queues are checked against a reloaded ACL.
    broker: Option<Arc<Broker>>,
    passwords: Vec<(PathBuf, Arc<Passwords>)>,
    acls: Vec<(PathBuf, Arc<ReloadableAcl>)>,
    tls: Vec<Arc<Tls>>,
}

impl Reload {
    /// Reads every file again. A file that fails to load is reported and the one in use stays.
    pub fn run(&self) {
        info!("SIGHUP: reloading password file, ACL file and certificates");
        for (path, passwords) in &self.passwords {
            match PasswordFile::load(path) {
                Ok(file) => passwords.replace(file),
                Err(e) => warn!("password file not reloaded: {e}"),
            }
        }
        for (path, acl) in &self.acls {
            match AclFile::load(path) {
                Ok(file) => acl.replace(file),
                Err(e) => warn!("ACL file not reloaded: {e}"),
            }
        }
        if let (false, Some(broker)) = (self.acls.is_empty(), &self.broker) {
            let dropped = broker.recheck_reads();
            if dropped > 0 {
                info!(dropped, "queued messages no longer readable under the new ACL dropped");
            }
        }
        for tls in &self.tls {
            if let Err(e) = tls.reload() {
                warn!("certificates not reloaded: {e}");
            }
        }
        info!("reload done");
    }
}
