//! `cauldron.toml`: the native configuration file, documented key by key in docs/CONFIG.md.
//! Keys carry Mosquitto's names where Mosquitto has the setting. Unknown keys and bad values are
//! errors that name the file, line and key; nothing starts half-configured.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::mosquitto::parse_expiration;
use super::setup::{ListenerAuthSpec, ListenerSpec, Setup};
use super::Config;
use crate::bridge::{keys, BridgeSpec};
use crate::tls::{TlsSettings, TlsVersions};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    data_dir: Option<PathBuf>,
    http: Option<SocketAddr>,
    allow_anonymous: Option<bool>,
    password_file: Option<PathBuf>,
    acl_file: Option<PathBuf>,
    max_inflight_messages: Option<usize>,
    max_queued_messages: Option<usize>,
    max_queued_bytes: Option<usize>,
    queue_qos0_messages: Option<bool>,
    drop_oldest: Option<bool>,
    memory_ceiling: Option<usize>,
    max_packet_size: Option<usize>,
    message_size_limit: Option<usize>,
    max_keepalive: Option<u16>,
    max_connections: Option<usize>,
    connection_rate_per_ip: Option<u32>,
    persistent_client_expiration: Option<String>,
    relaxed_commit_ms: Option<u64>,
    sys_interval: Option<u64>,
    retain_available: Option<bool>,
    upgrade_outgoing_qos: Option<bool>,
    check_retain_source: Option<bool>,
    allow_zero_length_clientid: Option<bool>,
    auto_id_prefix: Option<String>,
    reason_strings: Option<bool>,
    auth_failure_delay_ms: Option<u64>,
    #[serde(default, rename = "listener")]
    listeners: Vec<ListenerFile>,
    /// `[[bridge]]` tables: mosquitto.conf's bridge keys, read by `bridge::keys`.
    #[serde(default, rename = "bridge")]
    bridges: Vec<toml::Table>,
    #[serde(default)]
    recorder: RecorderToml,
    cluster: Option<ClusterFile>,
}

/// The `[cluster]` section: cluster mode on NATS JetStream (docs/CLUSTER.md).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ClusterFile {
    nats: Vec<String>,
    node_id: Option<String>,
    replicas: Option<usize>,
    credentials: Option<PathBuf>,
    ca_file: Option<PathBuf>,
}

/// This machine's host name: a node's id when none is given.
pub fn host_name() -> String {
    std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "cauldron".into())
}

/// The `[recorder]` section: the built-in OwnTracks recorder (docs/CONFIG.md).
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecorderToml {
    /// Run the recorder in `serve` (default true).
    pub enabled: Option<bool>,
    /// Users who see and may delete every device.
    #[serde(default)]
    pub admins: Vec<String>,
    /// Delete history older than this many days.
    pub retention_days: Option<u64>,
    /// Tile URL template of the map page.
    pub tile_url: Option<String>,
    /// Take the HTTP user from this header (set by an authenticating reverse proxy).
    pub user_header: Option<String>,
    /// A folder served at `/` behind the recorder's login (a built owntracks/frontend).
    pub docroot: Option<PathBuf>,
    /// Origins whose pages may call the API with the user's login.
    #[serde(default)]
    pub cors_origins: Vec<String>,
    /// The store in PostgreSQL (`postgres://user:password@host/database`) instead of the
    /// SQLite file in the data directory.
    pub store: Option<String>,
    /// The largest file `POST /api/0/import` takes, in MiB (default 64).
    pub import_limit_mb: Option<usize>,
    /// Add an address (nearest place, offline) and geohash to each position (default true).
    pub addresses: Option<bool>,
    /// Where the recorder's HTTP side is reached from outside: tours' links start with it.
    pub public_url: Option<String>,
    /// An HTTP geocoder for street addresses: `nominatim[:URL]`, `photon[:URL]`, `opencage:KEY`.
    pub geocoder: Option<String>,
    /// Geocoder calls per second at most (default 1, Nominatim's policy).
    pub geocoder_rate: Option<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListenerFile {
    address: Option<SocketAddr>,
    unix_socket: Option<PathBuf>,
    #[serde(default)]
    proxy_protocol: bool,
    #[serde(default)]
    protocol: Protocol,
    path: Option<String>,
    max_connections: Option<usize>,
    tls: Option<TlsFile>,
    allow_anonymous: Option<bool>,
    password_file: Option<PathBuf>,
    acl_file: Option<PathBuf>,
    mount_point: Option<String>,
}

#[derive(Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum Protocol {
    #[default]
    Mqtt,
    Websockets,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TlsFile {
    certfile: PathBuf,
    keyfile: PathBuf,
    cafile: Option<PathBuf>,
    crlfile: Option<PathBuf>,
    #[serde(default)]
    require_certificate: bool,
    #[serde(default)]
    use_identity_as_username: bool,
    #[serde(default)]
    use_subject_as_username: bool,
    tls_version: Option<String>,
}

/// A problem in a cauldron.toml.
#[derive(Debug, thiserror::Error)]
#[error("{file}: {problem}")]
pub struct TomlError {
    pub file: String,
    pub problem: String,
}

/// What a cauldron.toml describes, plus the HTTP address it may set.
#[derive(Debug)]
pub struct TomlSetup {
    pub setup: Setup,
    pub http: Option<SocketAddr>,
    pub relaxed_commit_ms: Option<u64>,
    pub recorder: RecorderToml,
}

pub fn read(path: &Path) -> Result<TomlSetup, TomlError> {
    let file = path.display().to_string();
    let error = |problem: String| TomlError { file: file.clone(), problem };
    let text = std::fs::read_to_string(path).map_err(|e| error(e.to_string()))?;
    // toml's message names the line, the column and the key.
    let parsed: File = toml::from_str(&text).map_err(|e| error(e.to_string().trim_end().to_string()))?;
    let base = path.parent().unwrap_or(Path::new("."));
    let resolve = |p: PathBuf| if p.is_relative() { base.join(p) } else { p };
    let defaults = Config::default();
    let default_listener = defaults.listeners[0];
    let listeners_given = !parsed.listeners.is_empty();
    let config = Config {
        data_dir: parsed.data_dir.map(resolve).unwrap_or(defaults.data_dir.clone()),
        allow_anonymous: parsed.allow_anonymous.unwrap_or(!listeners_given || parsed.password_file.is_none()),
        max_inflight_messages: parsed.max_inflight_messages.unwrap_or(defaults.max_inflight_messages).max(1),
        max_queued_messages: parsed.max_queued_messages.unwrap_or(defaults.max_queued_messages),
        max_queued_bytes: parsed.max_queued_bytes.unwrap_or(0),
        queue_qos0_messages: parsed.queue_qos0_messages.unwrap_or(false),
        drop_oldest: parsed.drop_oldest.unwrap_or(false),
        memory_ceiling: parsed.memory_ceiling.unwrap_or(0),
        max_packet_size: parsed.max_packet_size.unwrap_or(defaults.max_packet_size),
        max_keepalive: parsed.max_keepalive.unwrap_or(defaults.max_keepalive),
        message_size_limit: parsed.message_size_limit.unwrap_or(0),
        max_connections: parsed.max_connections,
        connection_rate_per_ip: parsed.connection_rate_per_ip,
        persistent_client_expiration: match parsed.persistent_client_expiration {
            Some(value) => Some(
                parse_expiration(&value).map_err(|e| error(format!("persistent_client_expiration: {e}")))?,
            ),
            None => None,
        },
        sys_interval: parsed.sys_interval.unwrap_or(defaults.sys_interval),
        retain_available: parsed.retain_available.unwrap_or(true),
        upgrade_outgoing_qos: parsed.upgrade_outgoing_qos.unwrap_or(false),
        check_retain_source: parsed.check_retain_source.unwrap_or(false),
        allow_zero_length_clientid: parsed.allow_zero_length_clientid.unwrap_or(true),
        auto_id_prefix: parsed.auto_id_prefix.unwrap_or(defaults.auto_id_prefix.clone()),
        reason_strings: parsed.reason_strings.unwrap_or(false),
        auth_failure_delay: parsed
            .auth_failure_delay_ms
            .map_or(defaults.auth_failure_delay, std::time::Duration::from_millis),
        ..defaults
    };
    let mut listeners = Vec::new();
    for listener in parsed.listeners {
        let tls = match listener.tls {
            Some(tls) => Some(TlsSettings {
                certfile: resolve(tls.certfile),
                keyfile: resolve(tls.keyfile),
                cafile: tls.cafile.map(resolve),
                crlfile: tls.crlfile.map(resolve),
                require_certificate: tls.require_certificate,
                use_identity_as_username: tls.use_identity_as_username,
                use_subject_as_username: tls.use_subject_as_username,
                versions: match tls.tls_version.as_deref() {
                    None => TlsVersions::Both,
                    Some("tlsv1.2") => TlsVersions::Tls12,
                    Some("tlsv1.3") => TlsVersions::Tls13,
                    Some(other) => {
                        return Err(error(format!(
                            "listener {:?}: tls_version {other:?}: expected tlsv1.2 or tlsv1.3",
                            listener.address
                        )))
                    }
                },
            }),
            None => None,
        };
        let websocket = (listener.protocol == Protocol::Websockets)
            .then(|| listener.path.unwrap_or_else(|| "/mqtt".into()));
        if listener.address.is_some() == listener.unix_socket.is_some() {
            return Err(error("every [[listener]] needs exactly one of address and unix_socket".into()));
        }
        let auth = ListenerAuthSpec {
            allow_anonymous: listener.allow_anonymous,
            password_file: listener.password_file.map(&resolve),
            acl_file: listener.acl_file.map(&resolve),
        };
        listeners.push(ListenerSpec {
            auth: (auth != ListenerAuthSpec::default()).then_some(auth),
            addr: listener.address,
            unix: listener.unix_socket.map(resolve),
            proxy_protocol: listener.proxy_protocol,
            max_connections: listener.max_connections,
            tls,
            websocket,
            mount_point: match listener.mount_point {
                Some(m) if m.is_empty() || m.contains(['+', '#']) => {
                    return Err(error(format!("mount_point {m:?}: a topic prefix without wildcards")));
                }
                m => m,
            },
        });
    }
    if listeners.is_empty() {
        listeners.push(ListenerSpec { addr: Some(default_listener), ..ListenerSpec::default() });
    }
    let mut warnings = Vec::new();
    let mut bridges = Vec::new();
    for table in parsed.bridges {
        let bridge = read_bridge(table, &resolve, &mut warnings).map_err(error)?;
        if bridges.iter().any(|b: &BridgeSpec| b.name == bridge.name) {
            return Err(error(format!("a second bridge named {:?}", bridge.name)));
        }
        bridges.push(bridge);
    }
    let setup = Setup {
        config,
        listeners,
        password_file: parsed.password_file.map(resolve),
        acl_file: parsed.acl_file.map(resolve),
        bridges,
        cluster: match parsed.cluster {
            Some(cluster) => {
                if cluster.nats.is_empty() {
                    return Err(error("[cluster] nats: name at least one server".to_string()));
                }
                Some(crate::cluster::ClusterSpec {
                    servers: cluster.nats,
                    node_id: cluster.node_id.unwrap_or_else(host_name),
                    replicas: cluster.replicas.unwrap_or(3),
                    credentials: cluster.credentials.map(resolve),
                    ca_file: cluster.ca_file.map(resolve),
                })
            }
            None => None,
        },
        warnings,
    };
    Ok(TomlSetup {
        setup,
        http: parsed.http,
        relaxed_commit_ms: parsed.relaxed_commit_ms,
        recorder: RecorderToml { docroot: parsed.recorder.docroot.clone().map(&resolve), ..parsed.recorder },
    })
}

/// One `[[bridge]]` table: `connection` names it; every other key is a mosquitto.conf bridge
/// key, a list standing for the key repeated (`topic = ["a/# out 1", "b/# in"]`).
fn read_bridge(
    mut table: toml::Table,
    resolve: &dyn Fn(PathBuf) -> PathBuf,
    warnings: &mut Vec<String>,
) -> Result<BridgeSpec, String> {
    let name = match table.remove("connection") {
        Some(toml::Value::String(name)) if !name.is_empty() => name,
        _ => return Err("a [[bridge]] needs connection = \"its name\"".into()),
    };
    let mut spec = BridgeSpec::new(&name);
    let path = |p: &str| resolve(PathBuf::from(p));
    for (key, value) in table {
        let values = match value {
            toml::Value::Array(values) => values,
            value => vec![value],
        };
        for value in values {
            let text = match value {
                toml::Value::String(s) => s,
                toml::Value::Integer(n) => n.to_string(),
                toml::Value::Boolean(b) => b.to_string(),
                other => {
                    return Err(format!("bridge {name:?}: {key}: {other:?} is not a string, number or bool"))
                }
            };
            match keys::apply(&mut spec, &key, &text, &path)
                .map_err(|e| format!("bridge {name:?}: {key}: {e}"))?
            {
                keys::Applied::Done => {}
                keys::Applied::Ignored(why) => {
                    warnings.push(format!("bridge {name:?}: {key}: ignored ({why})"))
                }
                keys::Applied::NotBridge => return Err(format!("bridge {name:?}: unknown key {key:?}")),
            }
        }
    }
    spec.check()?;
    Ok(spec)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(name: &str, text: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("cauldron-toml-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn the_example_in_the_repository_reads() {
        let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../../cauldron.example.toml");
        let read = read(Path::new(example)).unwrap();
        assert_eq!(read.setup.listeners.len(), 3);
        assert!(read.setup.listeners[1].tls.is_some());
        assert_eq!(read.setup.listeners[2].websocket.as_deref(), Some("/mqtt"));
        assert!(!read.setup.config.allow_anonymous);
    }

    #[test]
    fn the_cluster_section() {
        let path = write(
            "cluster.toml",
            "[cluster]\nnats = [\"nats://10.0.0.1:4222\", \"nats://10.0.0.2:4222\"]\nnode_id = \"a\"\ncredentials = \"c.creds\"\n",
        );
        let cluster = read(&path).unwrap().setup.cluster.unwrap();
        assert_eq!((cluster.servers.len(), cluster.node_id.as_str(), cluster.replicas), (2, "a", 3));
        assert_eq!(cluster.credentials, Some(path.parent().unwrap().join("c.creds")));
        let none = write("no-servers.toml", "[cluster]\nnats = []\n");
        assert!(read(&none).unwrap_err().to_string().contains("name at least one server"));
        let typo = write("typo.toml", "[cluster]\nnats = [\"nats://x:1\"]\nnodeid = \"a\"\n");
        assert!(read(&typo).unwrap_err().to_string().contains("nodeid"));
    }

    #[test]
    fn unix_proxy_and_per_listener_auth_keys() {
        let path = write(
            "listeners.toml",
            "[[listener]]\nunix_socket = \"mqtt.sock\"\n\n[[listener]]\naddress = \"127.0.0.1:1884\"\nproxy_protocol = true\n             allow_anonymous = false\npassword_file = \"lb-passwd\"\n",
        );
        let setup = read(&path).unwrap().setup;
        assert_eq!(setup.listeners[0].unix, Some(path.parent().unwrap().join("mqtt.sock")));
        assert!(setup.listeners[1].proxy_protocol);
        let auth = setup.listeners[1].auth.as_ref().unwrap();
        assert_eq!((auth.allow_anonymous, auth.acl_file.as_ref()), (Some(false), None));
        assert_eq!(auth.password_file, Some(path.parent().unwrap().join("lb-passwd")));
        let both = write("both.toml", "[[listener]]\naddress = \"127.0.0.1:1\"\nunix_socket = \"s\"\n");
        assert!(read(&both).unwrap_err().to_string().contains("exactly one of address and unix_socket"));
    }

    #[test]
    fn qos_upgrade_and_refusal_delay() {
        let path = write("broker.toml", "upgrade_outgoing_qos = true\nauth_failure_delay_ms = 0\n");
        let config = read(&path).unwrap().setup.config;
        assert!(config.upgrade_outgoing_qos);
        assert_eq!(config.auth_failure_delay, std::time::Duration::ZERO);
        let defaults = read(&write("empty.toml", "")).unwrap().setup.config;
        assert!(!defaults.upgrade_outgoing_qos);
        assert_eq!(defaults.auth_failure_delay, std::time::Duration::from_secs(1));
    }

    #[test]
    fn unknown_keys_and_bad_values_name_file_line_and_key() {
        let path = write("unknown.toml", "data_dir = \"d\"\nmax_queued_mesages = 5\n");
        let e = read(&path).unwrap_err().to_string();
        assert!(
            e.starts_with(&path.display().to_string())
                && e.contains("line 2")
                && e.contains("max_queued_mesages"),
            "{e}"
        );
        let path =
            write("bad.toml", "[[listener]]\naddress = \"0.0.0.0:1883\"\nmax_connections = \"many\"\n");
        let e = read(&path).unwrap_err().to_string();
        assert!(e.contains("line 3") && e.contains("max_connections"), "{e}");
        let path = write("expiry.toml", "persistent_client_expiration = \"3x\"\n");
        assert!(read(&path).unwrap_err().to_string().contains("persistent_client_expiration"));
    }
}
