//! Reads a Mosquitto 2.x `mosquitto.conf` as it is into a [`Setup`]: `listener` blocks with their
//! options, `include_dir`, auth files, TLS keys, limits. A bad value is an error naming file,
//! line and key; a key cauldron does not act on is named in one warning line.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use cauldron_proto::QoS;

use super::setup::{ListenerSpec, Setup};
use super::Config;
use crate::bridge::{keys, BridgeSpec};
use crate::tls::{TlsSettings, TlsVersions};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}: {key}: {problem}")]
pub struct ConfError {
    pub file: String,
    pub line: usize,
    pub key: String,
    pub problem: String,
}

/// Keys read and deliberately not acted on, with why.
const IGNORED: &[(&str, &str)] = &[
    ("persistence_file", "the store is cauldron.redb in persistence_location"),
    ("autosave_interval", "every acknowledged change is committed; there is no snapshot interval"),
    ("autosave_on_changes", "every acknowledged change is committed"),
    ("user", "cauldron does not switch users; run it as the user it should be (see the systemd unit)"),
    ("pid_file", "not written; use the service manager"),
    ("log_dest", "logs go to stderr (the journal under systemd)"),
    ("log_type", "use RUST_LOG or --log-level"),
    ("log_timestamp", "log lines always carry timestamps"),
    ("log_timestamp_format", "log lines always carry RFC 3339 timestamps"),
    ("connection_messages", "connection lines are logged at info level"),
    ("set_tcp_nodelay", "TCP_NODELAY is always on"),
    ("log_facility", "logs go to stderr"),
    ("websockets_log_level", "WebSocket events are logged with the rest"),
    ("websockets_headers_size", "the WebSocket handshake has its own bounded buffer"),
    ("max_inflight_bytes", "in-flight messages are limited by count (max_inflight_messages)"),
    ("memory_limit", "see --memory-ceiling for queued messages"),
    ("sys_interval_ms", "use sys_interval"),
];

/// MQTT's largest payload: the largest remaining length less the smallest PUBLISH header.
const MAX_PAYLOAD: usize = 268_435_455;

struct Reader {
    setup: Setup,
    /// Options before the first `listener` go to the default listener (`port`/`bind_address`).
    default_listener: ListenerSpec,
    current: Option<ListenerSpec>,
    allow_anonymous: Option<bool>,
    /// `per_listener_settings true`: auth keys inside a listener block are that listener's.
    per_listener: bool,
    /// The `connection` block being read: bridge keys go to it.
    bridge: Option<BridgeSpec>,
}

pub(crate) fn parse_bool(value: &str) -> Result<bool, String> {
    match value {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(format!("expected true or false, got {value:?}")),
    }
}

pub(crate) fn parse_num<T: std::str::FromStr>(value: &str) -> Result<T, String> {
    value.parse().map_err(|_| format!("expected a number, got {value:?}"))
}

/// `1d`, `12h`, `2w`, `1m` (month), `1y`, or plain seconds.
pub(crate) fn parse_expiration(value: &str) -> Result<Duration, String> {
    let (number, unit) = value.split_at(value.find(|c: char| !c.is_ascii_digit()).unwrap_or(value.len()));
    let n: u64 = number.parse().map_err(|_| format!("expected e.g. 1d or 12h, got {value:?}"))?;
    let seconds = match unit {
        "" => 1,
        "h" => 3600,
        "d" => 86_400,
        "w" => 604_800,
        "m" => 2_592_000,
        "y" => 31_536_000,
        _ => return Err(format!("unknown unit {unit:?} in {value:?}")),
    };
    Ok(Duration::from_secs(n * seconds))
}

impl Reader {
    fn listener(&mut self) -> &mut ListenerSpec {
        self.current.as_mut().unwrap_or(&mut self.default_listener)
    }

    fn tls(&mut self) -> &mut TlsSettings {
        self.listener().tls.get_or_insert_with(TlsSettings::default)
    }

    fn finish_listener(&mut self) {
        if let Some(listener) = self.current.take() {
            self.setup.listeners.push(listener);
        }
    }

    /// Ends the `connection` block being read, if any; it must be complete.
    fn finish_bridge(&mut self) -> Result<(), String> {
        if let Some(bridge) = self.bridge.take() {
            bridge.check()?;
            self.setup.bridges.push(bridge);
        }
        Ok(())
    }

    fn apply(&mut self, key: &str, value: &str, base: &Path) -> Result<(), String> {
        let path = |v: &str| -> PathBuf {
            let p = PathBuf::from(v);
            if p.is_relative() {
                base.join(p)
            } else {
                p
            }
        };
        if key == "connection" {
            self.finish_bridge()?;
            if self.setup.bridges.iter().any(|b| b.name == value) {
                return Err(format!("a second bridge named {value:?}"));
            }
            self.bridge = Some(BridgeSpec::new(value));
            return Ok(());
        }
        // Inside a `connection` block, bridge keys are that bridge's; the rest are the broker's.
        if let Some(bridge) = &mut self.bridge {
            match keys::apply(bridge, key, value, &path)? {
                keys::Applied::Done => return Ok(()),
                keys::Applied::Ignored(why) => {
                    self.setup.warnings.push(format!("{key}: ignored ({why})"));
                    return Ok(());
                }
                keys::Applied::NotBridge => {}
            }
        }
        let config = &mut self.setup.config;
        match key {
            "listener" => {
                self.finish_listener();
                let mut parts = value.split_whitespace();
                let port: u16 = parse_num(parts.next().unwrap_or_default())?;
                let ip = match parts.next() {
                    // `listener 0 /path/to/socket`: a Unix domain socket.
                    Some(socket) if socket.starts_with('/') => {
                        if port != 0 {
                            return Err("a unix socket listener needs port 0".into());
                        }
                        let spec = ListenerSpec { unix: Some(socket.into()), ..ListenerSpec::default() };
                        self.current = Some(spec);
                        return Ok(());
                    }
                    Some("localhost") => IpAddr::V4(Ipv4Addr::LOCALHOST),
                    Some(host) => {
                        host.parse().map_err(|_| format!("bind address {host:?} is not an IP address"))?
                    }
                    None => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                };
                self.current =
                    Some(ListenerSpec { addr: Some(SocketAddr::new(ip, port)), ..ListenerSpec::default() });
            }
            "port" => {
                let port = parse_num(value)?;
                let ip = self.default_listener.addr.map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |a| a.ip());
                self.default_listener.addr = Some(SocketAddr::new(ip, port));
            }
            "bind_address" => {
                let ip: IpAddr = value.parse().map_err(|_| format!("{value:?} is not an IP address"))?;
                let port = self.default_listener.addr.map_or(1883, |a| a.port());
                self.default_listener.addr = Some(SocketAddr::new(ip, port));
            }
            "protocol" => match value {
                "mqtt" => self.listener().websocket = None,
                "websockets" => self.listener().websocket = Some("/mqtt".into()),
                _ => return Err(format!("protocol {value:?}: expected mqtt or websockets")),
            },
            // Mosquitto 2.1's name; 1 and 2 both mean "expect a header", of either version.
            "enable_proxy_protocol" => {
                self.listener().proxy_protocol = match value {
                    "1" | "2" => true,
                    _ => return Err(format!("{value:?}: expected 1 or 2")),
                }
            }
            "max_connections" => {
                let n: i64 = parse_num(value)?;
                self.listener().max_connections = (n >= 0).then_some(n as usize);
            }
            "certfile" => self.tls().certfile = path(value),
            "keyfile" => self.tls().keyfile = path(value),
            "cafile" => self.tls().cafile = Some(path(value)),
            "crlfile" => self.tls().crlfile = Some(path(value)),
            "require_certificate" => self.tls().require_certificate = parse_bool(value)?,
            "use_identity_as_username" => self.tls().use_identity_as_username = parse_bool(value)?,
            "use_subject_as_username" => self.tls().use_subject_as_username = parse_bool(value)?,
            "tls_version" => {
                self.tls().versions = match value {
                    "tlsv1.2" => TlsVersions::Tls12,
                    "tlsv1.3" => TlsVersions::Tls13,
                    _ => return Err(format!("{value:?}: cauldron offers tlsv1.2 and tlsv1.3")),
                }
            }
            "per_listener_settings" => self.per_listener = parse_bool(value)?,
            "mount_point" => {
                if value.is_empty() || value.contains(['+', '#']) {
                    return Err(format!("{value:?}: a mount point is a topic prefix without wildcards"));
                }
                self.listener().mount_point = Some(value.to_string());
            }
            "allow_anonymous" | "password_file" | "acl_file"
                if self.per_listener && self.current.is_some() =>
            {
                let auth = self.listener().auth.get_or_insert_with(Default::default);
                match key {
                    "allow_anonymous" => auth.allow_anonymous = Some(parse_bool(value)?),
                    "password_file" => auth.password_file = Some(path(value)),
                    _ => auth.acl_file = Some(path(value)),
                }
            }
            "allow_anonymous" => self.allow_anonymous = Some(parse_bool(value)?),
            "password_file" => self.setup.password_file = Some(path(value)),
            "acl_file" => self.setup.acl_file = Some(path(value)),
            "persistence" => config.persistence = parse_bool(value)?,
            "persistence_location" => config.data_dir = path(value),
            "persistent_client_expiration" => {
                config.persistent_client_expiration = Some(parse_expiration(value)?)
            }
            "max_inflight_messages" => {
                let n: usize = parse_num(value)?;
                config.max_inflight_messages = if n == 0 { u16::MAX.into() } else { n };
            }
            "max_queued_messages" => config.max_queued_messages = parse_num(value)?,
            "max_queued_bytes" => config.max_queued_bytes = parse_num(value)?,
            "queue_qos0_messages" => config.queue_qos0_messages = parse_bool(value)?,
            "max_packet_size" => {
                let n: usize = parse_num(value)?;
                config.max_packet_size = match n {
                    0 => Config::default().max_packet_size,
                    // Mosquitto refuses these too: no CONNECT would fit.
                    1..20 => return Err(format!("{n} is below the smallest allowed, 20")),
                    n => n,
                };
            }
            "message_size_limit" => {
                let n: usize = parse_num(value)?;
                if n > MAX_PAYLOAD {
                    return Err(format!("{n} is above MQTT's largest payload, {MAX_PAYLOAD}"));
                }
                config.message_size_limit = n;
            }
            "max_keepalive" => config.max_keepalive = parse_num(value)?,
            "max_topic_alias" => config.topic_alias_maximum = parse_num(value)?,
            "max_qos" => {
                config.max_qos = match value {
                    "0" => QoS::AtMostOnce,
                    "1" => QoS::AtLeastOnce,
                    "2" => QoS::ExactlyOnce,
                    _ => return Err(format!("{value:?}: expected 0, 1 or 2")),
                }
            }
            "retain_available" => config.retain_available = parse_bool(value)?,
            "upgrade_outgoing_qos" => config.upgrade_outgoing_qos = parse_bool(value)?,
            "check_retain_source" => config.check_retain_source = parse_bool(value)?,
            "sys_interval" => config.sys_interval = parse_num(value)?,
            "allow_zero_length_clientid" => config.allow_zero_length_clientid = parse_bool(value)?,
            "auto_id_prefix" => config.auto_id_prefix = value.to_string(),
            // Anything else stops the start, as in Mosquitto: a misspelt `acl_file` must not
            // start a broker that allows everything, nor an unsupported security option
            // (a plugin, a PSK file) one that ignores it.
            _ => match IGNORED.iter().find(|(k, _)| *k == key) {
                Some((_, why)) => self.setup.warnings.push(format!("{key}: ignored ({why})")),
                None => {
                    return Err("unknown or unsupported option; cauldron will not start without it".into())
                }
            },
        }
        Ok(())
    }
}

fn read_file(reader: &mut Reader, path: &Path, top: bool) -> Result<(), ConfError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| ConfError {
        file: file.clone(),
        line: 0,
        key: String::new(),
        problem: e.to_string(),
    })?;
    let base = path.parent().unwrap_or(Path::new(".")).to_path_buf();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim_end();
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        let (key, value) = line.split_once(' ').map(|(k, v)| (k, v.trim())).unwrap_or((line, ""));
        let error = |problem: String| ConfError { file: file.clone(), line: i + 1, key: key.into(), problem };
        if key == "include_dir" {
            if !top {
                return Err(error("include_dir is only processed in the main file".into()));
            }
            let dir = if Path::new(value).is_relative() { base.join(value) } else { PathBuf::from(value) };
            let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
                .map_err(|e| error(format!("{}: {e}", dir.display())))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "conf"))
                .collect();
            // Byte order: upper case before lower case, as Mosquitto sorts.
            files.sort();
            for included in files {
                read_file(reader, &included, false)?;
            }
            continue;
        }
        if value.is_empty() && !IGNORED.iter().any(|(k, _)| *k == key) {
            return Err(error("missing value".into()));
        }
        reader.apply(key, value, &base).map_err(error)?;
    }
    Ok(())
}

/// Reads `path` (and what it includes) into a setup, with Mosquitto 2's secure defaults: no
/// listener means 127.0.0.1:1883 with anonymous access; any listener means anonymous access
/// only if `allow_anonymous true` says so.
pub fn read(path: &Path) -> Result<Setup, ConfError> {
    let mut setup = Setup::default();
    // Mosquitto keeps nothing across restarts unless told `persistence true`.
    setup.config.persistence = false;
    let mut reader = Reader {
        setup,
        default_listener: ListenerSpec::default(),
        current: None,
        allow_anonymous: None,
        per_listener: false,
        bridge: None,
    };
    read_file(&mut reader, path, true)?;
    reader.finish_listener();
    reader.finish_bridge().map_err(|problem| ConfError {
        file: path.display().to_string(),
        line: 0,
        key: "connection".into(),
        problem,
    })?;
    let Reader { mut setup, default_listener, allow_anonymous, .. } = reader;
    if default_listener.addr.is_some() {
        setup.listeners.insert(0, default_listener);
    }
    let configured = !setup.listeners.is_empty();
    if !configured {
        let loopback = SocketAddr::from(([127, 0, 0, 1], 1883));
        setup.listeners.push(ListenerSpec { addr: Some(loopback), ..ListenerSpec::default() });
    }
    setup.config.allow_anonymous = allow_anonymous.unwrap_or(!configured);
    for listener in &setup.listeners {
        if let Some(tls) = &listener.tls {
            if tls.certfile.as_os_str().is_empty() || tls.keyfile.as_os_str().is_empty() {
                let file = path.display().to_string();
                let problem =
                    format!("listener {:?} has TLS options but no certfile and keyfile", listener.addr);
                return Err(ConfError { file, line: 0, key: "listener".into(), problem });
            }
        }
    }
    Ok(setup)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        std::fs::create_dir_all(dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    fn temp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("cauldron-conf-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    /// The OwnTracks quicksetup shape.
    #[test]
    fn owntracks_quicksetup_shape() {
        let dir = temp("owntracks");
        write(&dir.join("conf.d"), "b-limits.conf", "max_queued_messages 9000\n");
        write(&dir.join("conf.d"), "A-first.conf", "sys_interval 30\n");
        let conf = write(
            &dir,
            "mosquitto.conf",
            "# OwnTracks\npid_file /run/mosquitto.pid\npersistence true\npersistence_location /var/lib/mosquitto/\n\
             log_dest topic\nallow_anonymous false\npassword_file /etc/mosquitto/passwd\nacl_file /etc/mosquitto/acl\n\
             max_inflight_messages 20\ninclude_dir conf.d\n\nlistener 1883 127.0.0.1\n\nlistener 8883\n\
             cafile ca.crt\ncertfile server.crt\nkeyfile server.key\ntls_version tlsv1.2\n\nlistener 8083\nprotocol websockets\n\
             persistent_client_expiration 2d\n",
        );
        let setup = read(&conf).unwrap();
        assert_eq!(setup.listeners.len(), 3);
        assert_eq!(setup.listeners[0].addr, Some("127.0.0.1:1883".parse().unwrap()));
        let tls = setup.listeners[1].tls.as_ref().unwrap();
        assert_eq!(tls.certfile, dir.join("server.crt"), "relative to the config file");
        assert_eq!(tls.versions, TlsVersions::Tls12);
        assert_eq!(setup.listeners[2].websocket.as_deref(), Some("/mqtt"));
        assert!(!setup.config.allow_anonymous);
        assert_eq!(setup.config.max_queued_messages, 9000);
        assert_eq!(setup.config.sys_interval, 30);
        assert_eq!(setup.config.data_dir, PathBuf::from("/var/lib/mosquitto/"));
        assert!(setup.config.persistence);
        assert_eq!(setup.config.persistent_client_expiration, Some(Duration::from_secs(2 * 86_400)));
        assert_eq!(setup.password_file, Some(PathBuf::from("/etc/mosquitto/passwd")));
        assert!(setup.warnings.iter().any(|w| w.starts_with("pid_file: ignored")));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Mosquitto refuses to start on a key it does not know; so does cauldron, except for the
    /// few it deliberately ignores (warned about).
    #[test]
    fn unknown_and_unsupported_keys_stop_the_start() {
        let dir = temp("unknown");
        for (text, line, key) in [
            ("listener 1883\nacl_flie /etc/acl\n", 2, "acl_flie"),
            ("plugin /usr/lib/auth.so\n", 1, "plugin"),
            ("listener 1883\n\npsk_file psk\n", 3, "psk_file"),
        ] {
            let e = read(&write(&dir, "bad.conf", text)).unwrap_err();
            assert_eq!((e.line, e.key.as_str()), (line, key), "{text}");
            assert!(e.problem.contains("unknown or unsupported"), "{e}");
        }
        let setup = read(&write(&dir, "ok.conf", "log_facility 5\npid_file /run/m.pid\n")).unwrap();
        assert_eq!(setup.warnings.len(), 2, "{:?}", setup.warnings);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// The meanings of Mosquitto's own settings, 0 included (mosquitto.conf(5)).
    #[test]
    fn zero_means_what_it_means_in_mosquitto() {
        let dir = temp("zeros");
        let zeros = "max_queued_messages 0\nmax_inflight_messages 0\nmax_packet_size 0\n\
                     message_size_limit 0\nmax_keepalive 0\nmax_queued_bytes 0\nmax_topic_alias 0\n";
        let c = read(&write(&dir, "zeros.conf", zeros)).unwrap().config;
        assert_eq!(c.max_queued_messages, 0, "0: no limit (the broker reads it so)");
        assert!(!c.persistence, "Mosquitto persists only with `persistence true`");
        assert_eq!(c.max_inflight_messages, 65_535, "0: no maximum, no Receive Maximum sent");
        assert_eq!(c.max_packet_size, Config::default().max_packet_size, "0: no limit");
        assert_eq!((c.message_size_limit, c.max_keepalive, c.max_queued_bytes), (0, 0, 0));
        assert_eq!(c.topic_alias_maximum, 0, "0: no topic aliases");
        let set =
            "message_size_limit 100\nmax_packet_size 2000\nmax_keepalive 60\nmax_qos 1\nmax_topic_alias 5\n";
        let c = read(&write(&dir, "set.conf", set)).unwrap().config;
        assert_eq!((c.message_size_limit, c.max_packet_size, c.max_keepalive), (100, 2000, 60));
        assert_eq!((c.max_qos, c.topic_alias_maximum), (QoS::AtLeastOnce, 5));
        for bad in ["max_packet_size 19\n", "message_size_limit 268435456\n", "max_qos 3\n"] {
            assert!(read(&write(&dir, "bad.conf", bad)).is_err(), "{bad}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn secure_defaults_and_errors_name_file_line_and_key() {
        let dir = temp("defaults");
        let setup = read(&write(&dir, "empty.conf", "# nothing\n")).unwrap();
        assert_eq!(setup.listeners[0].addr, Some("127.0.0.1:1883".parse().unwrap()));
        assert!(setup.config.allow_anonymous, "no listener: loopback and anonymous");
        let setup = read(&write(&dir, "one.conf", "listener 1884\n")).unwrap();
        assert!(!setup.config.allow_anonymous, "a listener: anonymous only if allowed");
        let bad = write(&dir, "bad.conf", "listener 1883\nmax_queued_messages lots\n");
        let e = read(&bad).unwrap_err();
        assert_eq!((e.line, e.key.as_str()), (2, "max_queued_messages"));
        assert!(e.to_string().starts_with(&format!("{}:2: max_queued_messages:", bad.display())));
        assert_eq!(
            read(&write(&dir, "tls.conf", "listener 8883\ncafile ca.pem\n")).unwrap_err().key,
            "listener"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
