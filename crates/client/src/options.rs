//! Connection options, built with chained setters.

use std::time::Duration;

use cauldron_proto::{ByteString, Bytes, Properties, Protocol, QoS};

/// The will a client leaves with the server, published if the client goes away without
/// DISCONNECT. Set it with [`Options::will`].
///
/// ```
/// use cauldron_client::{Options, QoS};
/// let options = Options::new("localhost:1883", "jane-phone")
///     .will("owntracks/jane/phone", r#"{"_type":"lwt"}"#, QoS::AtLeastOnce, false);
/// assert_eq!(options.will.unwrap().topic, "owntracks/jane/phone");
/// ```
#[derive(Debug, Clone)]
pub struct Will {
    /// Where the will is published.
    pub topic: ByteString,
    /// What it says.
    pub payload: Bytes,
    /// At which QoS it is published.
    pub qos: QoS,
    /// Whether the server keeps it as the retained message of `topic`.
    pub retain: bool,
    /// MQTT 5 will properties (will delay, message expiry, content type, ...).
    pub properties: Properties,
}

/// How to connect: address, identity, session and protocol choices. Build it with
/// [`Options::new`] or [`Options::from_url`] and the chained setters; every field is public too.
///
/// ```
/// use std::time::Duration;
/// use cauldron_client::{Options, Protocol, Reconnect};
/// let options = Options::new("broker.example:1883", "thermostat")
///     .protocol(Protocol::V5)
///     .credentials("thermostat", "secret")
///     .clean_start(false)
///     .keep_alive(Duration::from_secs(30))
///     .reconnect(Reconnect::default());
/// assert_eq!(options.client_id, "thermostat");
/// ```
#[derive(Debug, Clone)]
pub struct Options {
    /// `host:port` of the broker.
    pub address: String,
    /// The client identifier; empty asks the server to assign one (MQTT 5, or 3.1.1 with a
    /// clean session).
    pub client_id: ByteString,
    /// MQTT 3.1, 3.1.1 or 5.0.
    pub protocol: Protocol,
    /// Start a new session (3.x: clean session) instead of resuming the stored one.
    pub clean_start: bool,
    /// Longest silence before the client sends PINGREQ; zero disables keep alive.
    pub keep_alive: Duration,
    /// User name for the CONNECT.
    pub username: Option<ByteString>,
    /// Password for the CONNECT.
    pub password: Option<Bytes>,
    /// The will left with the server.
    pub will: Option<Will>,
    /// MQTT 5 CONNECT properties (session expiry, receive maximum, ...).
    pub properties: Properties,
    /// How long to wait for the TCP connection and the CONNACK.
    pub connect_timeout: Duration,
    /// MQTT 5 enhanced authentication with SCRAM-SHA-256: user name and password.
    pub scram: Option<(String, Vec<u8>)>,
    /// Reconnect when the connection is lost (off by default).
    pub reconnect: Option<Reconnect>,
    /// TLS over the TCP connection (off by default); the host in `address` is the name checked.
    pub tls: Option<crate::Tls>,
    /// MQTT over a WebSocket on this HTTP path (off by default).
    pub websocket: Option<String>,
    /// Announce a bridge to a 3.x server (the 0x80 bit on the protocol level, Mosquitto's
    /// `try_private`), so that it does not send back what this client published.
    pub bridge: bool,
    /// The URL said `mqtts` or `wss`: connecting without [`Options::tls`] is an error, not
    /// a silent plain-text connection.
    pub(crate) tls_required: bool,
}

/// Automatic reconnection: after a lost connection the client waits `initial`, doubling up to
/// `max` between attempts, then resumes its session (clean start off), sends again whatever
/// was not acknowledged, and restores its subscriptions if the server kept no session.
///
/// ```
/// use std::time::Duration;
/// let patient = cauldron_client::Reconnect { initial: Duration::from_secs(1), max: Duration::from_secs(300) };
/// let options = cauldron_client::Options::new("localhost:1883", "sensor").reconnect(patient);
/// assert!(options.reconnect.is_some());
/// ```
#[derive(Debug, Clone, Copy)]
pub struct Reconnect {
    /// Wait before the first attempt.
    pub initial: Duration,
    /// Longest wait between attempts.
    pub max: Duration,
}

impl Default for Reconnect {
    fn default() -> Reconnect {
        Reconnect { initial: Duration::from_millis(100), max: Duration::from_secs(30) }
    }
}

impl Options {
    /// MQTT 3.1.1, clean session, keep alive 60 s, no TLS, no reconnect.
    ///
    /// ```
    /// let options = cauldron_client::Options::new("localhost:1883", "sensor-1");
    /// assert!(options.clean_start && options.reconnect.is_none());
    /// ```
    pub fn new(address: impl Into<String>, client_id: impl Into<ByteString>) -> Options {
        Options {
            address: address.into(),
            client_id: client_id.into(),
            protocol: Protocol::V3_1_1,
            clean_start: true,
            keep_alive: Duration::from_secs(60),
            username: None,
            password: None,
            will: None,
            properties: Properties::default(),
            connect_timeout: Duration::from_secs(10),
            scram: None,
            reconnect: None,
            tls: None,
            websocket: None,
            bridge: false,
            tls_required: false,
        }
    }

    /// Options from a broker URL: `mqtt://`, `mqtts://`, `ws://` or `wss://`, then
    /// `[user[:password]@]host[:port]`, and for WebSockets the path (default `/`). Default ports:
    /// 1883, 8883, 80, 443. `mqtts` and `wss` still need [`Options::tls`] (the CA to trust).
    ///
    /// ```
    /// let options = cauldron_client::Options::from_url("mqtt://jane:secret@localhost:1884", "converter").unwrap();
    /// assert_eq!(options.address, "localhost:1884");
    /// assert_eq!(options.username.as_deref(), Some("jane"));
    /// let ws = cauldron_client::Options::from_url("ws://broker.example:8080/mqtt", "browser-like").unwrap();
    /// assert_eq!((ws.address.as_str(), ws.websocket.as_deref()), ("broker.example:8080", Some("/mqtt")));
    /// ```
    pub fn from_url(url: &str, client_id: impl Into<ByteString>) -> Result<Options, String> {
        let (scheme, rest) =
            url.split_once("://").ok_or_else(|| format!("{url}: not a URL (mqtt://host:port)"))?;
        let (default_port, websocket, secure) = match scheme.to_ascii_lowercase().as_str() {
            "mqtt" | "tcp" => (1883, false, false),
            "mqtts" | "ssl" => (8883, false, true),
            "ws" => (80, true, false),
            "wss" => (443, true, true),
            other => return Err(format!("{url}: unknown scheme {other:?} (mqtt, mqtts, ws, wss)")),
        };
        let (authority, path) = rest.find('/').map_or((rest, ""), |at| rest.split_at(at));
        let (credentials, host) = match authority.rsplit_once('@') {
            Some((credentials, host)) => (Some(credentials), host),
            None => (None, authority),
        };
        if host.is_empty() {
            return Err(format!("{url}: no host"));
        }
        // A bare host gets the scheme's port; `[::1]` style IPv6 hosts keep their brackets.
        let has_port = host.rsplit_once(':').is_some_and(|(h, p)| {
            !h.ends_with(':') && p.chars().all(|c| c.is_ascii_digit()) && !host.ends_with(']')
        });
        let address = if has_port { host.to_string() } else { format!("{host}:{default_port}") };
        let mut options = Options::new(address, client_id);
        if let Some(credentials) = credentials {
            let (user, password) = credentials.split_once(':').unwrap_or((credentials, ""));
            options.username = Some(user.to_string().into());
            options.password = Some(Bytes::from(password.to_string()));
        }
        if websocket {
            options.websocket = Some(if path.is_empty() { "/".to_string() } else { path.to_string() });
        }
        options.tls_required = secure;
        Ok(options)
    }

    /// Speaks MQTT over a WebSocket opened on `path` (e.g. `/mqtt`), over TCP or, with
    /// [`Options::tls`], over TLS.
    ///
    /// ```
    /// let options = cauldron_client::Options::new("localhost:8080", "ws-client").websocket("/mqtt");
    /// assert_eq!(options.websocket.as_deref(), Some("/mqtt"));
    /// ```
    pub fn websocket(mut self, path: impl Into<String>) -> Options {
        self.websocket = Some(path.into());
        self
    }

    /// Speaks TLS to the broker (see [`crate::Tls`]).
    ///
    /// ```no_run
    /// let tls = cauldron_client::Tls::new(std::path::Path::new("ca.pem"), None, true).unwrap();
    /// let options = cauldron_client::Options::new("broker.example:8883", "sensor").tls(tls);
    /// ```
    pub fn tls(mut self, tls: crate::Tls) -> Options {
        self.tls = Some(tls);
        self
    }

    /// Reconnects with back-off after a lost connection (see [`Reconnect`]).
    ///
    /// ```
    /// let options = cauldron_client::Options::new("localhost:1883", "sensor")
    ///     .reconnect(cauldron_client::Reconnect::default());
    /// assert!(options.reconnect.is_some());
    /// ```
    pub fn reconnect(mut self, reconnect: Reconnect) -> Options {
        self.reconnect = Some(reconnect);
        self
    }

    /// The MQTT version to speak (default 3.1.1).
    ///
    /// ```
    /// use cauldron_client::{Options, Protocol};
    /// assert_eq!(Options::new("localhost:1883", "x").protocol(Protocol::V5).protocol, Protocol::V5);
    /// ```
    pub fn protocol(mut self, protocol: Protocol) -> Options {
        self.protocol = protocol;
        self
    }

    /// Whether to start a new session (default) or resume the one the server kept.
    ///
    /// ```
    /// let persistent = cauldron_client::Options::new("localhost:1883", "recorder").clean_start(false);
    /// assert!(!persistent.clean_start);
    /// ```
    pub fn clean_start(mut self, clean: bool) -> Options {
        self.clean_start = clean;
        self
    }

    /// Longest silence before a PINGREQ (default 60 s); zero disables keep alive.
    ///
    /// ```
    /// let options = cauldron_client::Options::new("localhost:1883", "x").keep_alive(std::time::Duration::ZERO);
    /// assert!(options.keep_alive.is_zero());
    /// ```
    pub fn keep_alive(mut self, keep_alive: Duration) -> Options {
        self.keep_alive = keep_alive;
        self
    }

    /// User name and password for the CONNECT.
    ///
    /// ```
    /// let options = cauldron_client::Options::new("localhost:1883", "x").credentials("jane", "s3cret");
    /// assert_eq!(options.username.as_deref(), Some("jane"));
    /// ```
    pub fn credentials(mut self, username: impl Into<ByteString>, password: impl Into<Bytes>) -> Options {
        self.username = Some(username.into());
        self.password = Some(password.into());
        self
    }

    /// Leaves a will (see [`Will`]); its MQTT 5 properties can be set on `options.will`.
    ///
    /// ```
    /// use cauldron_client::{Options, QoS};
    /// let mut options = Options::new("localhost:1883", "x").will("status/x", "offline", QoS::AtLeastOnce, true);
    /// options.will.as_mut().unwrap().properties.will_delay_interval = Some(30);
    /// ```
    pub fn will(
        mut self,
        topic: impl Into<ByteString>,
        payload: impl Into<Bytes>,
        qos: QoS,
        retain: bool,
    ) -> Options {
        let properties = Properties::default();
        self.will = Some(Will { topic: topic.into(), payload: payload.into(), qos, retain, properties });
        self
    }

    /// Authenticates with SCRAM-SHA-256 (MQTT 5 only): the password never crosses the wire and
    /// the server proves it knows the credential too.
    ///
    /// ```
    /// use cauldron_client::{Options, Protocol};
    /// let options = Options::new("localhost:1883", "x").protocol(Protocol::V5).scram("jane", "s3cret");
    /// assert!(options.scram.is_some());
    /// ```
    pub fn scram(mut self, username: impl Into<String>, password: impl Into<Vec<u8>>) -> Options {
        self.scram = Some((username.into(), password.into()));
        self
    }

    /// MQTT 5 CONNECT properties.
    ///
    /// ```
    /// use cauldron_client::{proto::Properties, Options, Protocol};
    /// let properties = Properties { session_expiry_interval: Some(3600), ..Properties::default() };
    /// let options = Options::new("localhost:1883", "x").protocol(Protocol::V5).properties(properties);
    /// assert_eq!(options.properties.session_expiry_interval, Some(3600));
    /// ```
    pub fn properties(mut self, properties: Properties) -> Options {
        self.properties = properties;
        self
    }
}
