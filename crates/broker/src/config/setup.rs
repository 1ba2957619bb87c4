//! Everything `cauldron serve` needs to start, whichever way it was described (flags or a
//! mosquitto.conf): the broker `Config`, the listeners, and the auth files.

use std::net::SocketAddr;
use std::path::PathBuf;

use super::Config;
use crate::tls::TlsSettings;

/// One listener to open.
#[derive(Debug, Clone, Default)]
pub struct ListenerSpec {
    pub addr: Option<SocketAddr>,
    pub max_connections: Option<usize>,
    pub tls: Option<TlsSettings>,
    /// `Some(path)`: MQTT over WebSocket on that path.
    pub websocket: Option<String>,
    /// A Unix domain socket instead of `addr`.
    pub unix: Option<PathBuf>,
    /// Connections start with a PROXY protocol header (behind a load balancer).
    pub proxy_protocol: bool,
    /// This listener's own access control; unset parts fall back to the broker-wide ones.
    pub auth: Option<ListenerAuthSpec>,
    /// Mosquitto's `mount_point`: prefixed to every topic of this listener's clients.
    pub mount_point: Option<String>,
}

/// A listener's own `allow_anonymous`, `password_file` and `acl_file` (Mosquitto's
/// `per_listener_settings true`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListenerAuthSpec {
    pub allow_anonymous: Option<bool>,
    pub password_file: Option<PathBuf>,
    pub acl_file: Option<PathBuf>,
}

/// A complete, checked description of a broker to run.
#[derive(Debug, Clone, Default)]
pub struct Setup {
    pub config: Config,
    pub listeners: Vec<ListenerSpec>,
    pub password_file: Option<PathBuf>,
    pub acl_file: Option<PathBuf>,
    /// Bridges to other brokers (`connection` blocks, `[[bridge]]` tables).
    pub bridges: Vec<crate::bridge::BridgeSpec>,
    /// Cluster mode on NATS JetStream (`--cluster`, `[cluster]`); `None` for one node.
    pub cluster: Option<crate::cluster::ClusterSpec>,
    /// Settings that were read but that cauldron does not act on, one line each.
    pub warnings: Vec<String>,
}

impl Setup {
    /// A readable summary of what would run, for `cauldron config check`.
    pub fn describe(&self) -> String {
        let mut out = String::new();
        for l in &self.listeners {
            let kind = match (&l.tls, &l.websocket) {
                (None, None) => "mqtt".to_string(),
                (Some(_), None) => "mqtt+tls".to_string(),
                (None, Some(path)) => format!("websocket {path}"),
                (Some(_), Some(path)) => format!("websocket+tls {path}"),
            };
            let addr = match &l.unix {
                Some(path) => format!("unix:{}", path.display()),
                None => l.addr.map(|a| a.to_string()).unwrap_or_default(),
            };
            let kind = if l.proxy_protocol { format!("{kind}, PROXY protocol") } else { kind };
            let kind = match &l.auth {
                Some(auth) => format!(
                    "{kind}, own auth: allow_anonymous {}, password_file {}, acl_file {}",
                    auth.allow_anonymous.map(|a| a.to_string()).unwrap_or_else(|| "(broker's)".into()),
                    auth.password_file
                        .as_ref()
                        .map(|p| p.display().to_string())
                        .unwrap_or_else(|| "(broker's)".into()),
                    auth.acl_file
                        .as_ref()
                        .map(|p| p.display().to_string())
                        .unwrap_or_else(|| "(broker's)".into()),
                ),
                None => kind,
            };
            let limit = l.max_connections.map(|m| format!(", max {m} connections")).unwrap_or_default();
            out.push_str(&format!("listener {addr} ({kind}{limit})\n"));
            if let Some(tls) = &l.tls {
                out.push_str(&format!(
                    "  certfile {}, keyfile {}, cafile {}, require_certificate {}, use_identity_as_username {}\n",
                    tls.certfile.display(),
                    tls.keyfile.display(),
                    tls.cafile.as_ref().map(|c| c.display().to_string()).unwrap_or_else(|| "-".into()),
                    tls.require_certificate,
                    tls.use_identity_as_username,
                ));
            }
        }
        let c = &self.config;
        out.push_str(&format!("allow_anonymous {}\n", c.allow_anonymous));
        if let Some(p) = &self.password_file {
            out.push_str(&format!("password_file {}\n", p.display()));
        }
        if let Some(p) = &self.acl_file {
            out.push_str(&format!("acl_file {}\n", p.display()));
        }
        out.push_str(&format!(
            "data_dir {}\npersistence {}\nmax_inflight_messages {}\nmax_queued_messages {}\nmax_queued_bytes {}\nqueue_qos0_messages {}\n\
             max_packet_size {}\nmax_keepalive {}\nmax_connections {}\nsys_interval {}\nretain_available {}\n\
             persistent_client_expiration {}\n",
            c.data_dir.display(),
            c.persistence,
            c.max_inflight_messages,
            c.max_queued_messages,
            c.max_queued_bytes,
            c.queue_qos0_messages,
            c.max_packet_size,
            c.max_keepalive,
            c.max_connections.map(|m| m.to_string()).unwrap_or_else(|| "unlimited".into()),
            c.sys_interval,
            c.retain_available,
            c.persistent_client_expiration.map(|d| format!("{}s", d.as_secs())).unwrap_or_else(|| "never".into()),
        ));
        for bridge in &self.bridges {
            out.push_str(&bridge.describe());
        }
        for warning in &self.warnings {
            out.push_str(&format!("warning: {warning}\n"));
        }
        out
    }
}
