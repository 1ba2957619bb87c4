//! Connection options, built with chained setters.

use std::time::Duration;

use cauldron_proto::{ByteString, Bytes, Properties, Protocol, QoS};

/// The will a client leaves with the server.
#[derive(Debug, Clone)]
pub struct Will {
    pub topic: ByteString,
    pub payload: Bytes,
    pub qos: QoS,
    pub retain: bool,
}

/// How to connect: address, identity, session and protocol choices.
#[derive(Debug, Clone)]
pub struct Options {
    /// `host:port` of the broker.
    pub address: String,
    pub client_id: ByteString,
    pub protocol: Protocol,
    pub clean_start: bool,
    pub keep_alive: Duration,
    pub username: Option<ByteString>,
    pub password: Option<Bytes>,
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
}

/// Automatic reconnection: after a lost connection the client waits `initial`, doubling up to
/// `max` between attempts, then resumes its session (clean start off), sends again whatever
/// was not acknowledged, and restores its subscriptions if the server kept no session.
#[derive(Debug, Clone, Copy)]
pub struct Reconnect {
    pub initial: Duration,
    pub max: Duration,
}

impl Default for Reconnect {
    fn default() -> Reconnect {
        Reconnect { initial: Duration::from_millis(100), max: Duration::from_secs(30) }
    }
}

impl Options {
    /// MQTT 3.1.1, clean session, keep alive 60 s.
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
        }
    }

    /// Options from a broker URL: `mqtt://[user[:password]@]host[:port]` (port 1883 by default).
    ///
    /// ```
    /// let options = cauldron_client::Options::from_url("mqtt://jane:secret@localhost:1884", "converter").unwrap();
    /// assert_eq!(options.address, "localhost:1884");
    /// assert_eq!(options.username.as_deref(), Some("jane"));
    /// ```
    pub fn from_url(url: &str, client_id: impl Into<ByteString>) -> Result<Options, String> {
        let rest =
            url.strip_prefix("mqtt://").ok_or_else(|| format!("{url}: only mqtt:// URLs are supported"))?;
        let rest = rest.trim_end_matches('/');
        let (credentials, host) = match rest.rsplit_once('@') {
            Some((credentials, host)) => (Some(credentials), host),
            None => (None, rest),
        };
        if host.is_empty() {
            return Err(format!("{url}: no host"));
        }
        // A bare host gets the MQTT port; `[::1]` style IPv6 hosts keep their brackets.
        let has_port = host.rsplit_once(':').is_some_and(|(h, p)| {
            !h.ends_with(':') && p.chars().all(|c| c.is_ascii_digit()) && !host.ends_with(']')
        });
        let address = if has_port { host.to_string() } else { format!("{host}:1883") };
        let mut options = Options::new(address, client_id);
        if let Some(credentials) = credentials {
            let (user, password) = credentials.split_once(':').unwrap_or((credentials, ""));
            options.username = Some(user.to_string().into());
            options.password = Some(Bytes::from(password.to_string()));
        }
        Ok(options)
    }

    /// Speaks TLS to the broker (see [`crate::Tls`]).
    pub fn tls(mut self, tls: crate::Tls) -> Options {
        self.tls = Some(tls);
        self
    }

    /// Reconnects with back-off after a lost connection (see [`Reconnect`]).
    pub fn reconnect(mut self, reconnect: Reconnect) -> Options {
        self.reconnect = Some(reconnect);
        self
    }

    pub fn protocol(mut self, protocol: Protocol) -> Options {
        self.protocol = protocol;
        self
    }

    pub fn clean_start(mut self, clean: bool) -> Options {
        self.clean_start = clean;
        self
    }

    /// Zero disables keep alive.
    pub fn keep_alive(mut self, keep_alive: Duration) -> Options {
        self.keep_alive = keep_alive;
        self
    }

    pub fn credentials(mut self, username: impl Into<ByteString>, password: impl Into<Bytes>) -> Options {
        self.username = Some(username.into());
        self.password = Some(password.into());
        self
    }

    pub fn will(
        mut self,
        topic: impl Into<ByteString>,
        payload: impl Into<Bytes>,
        qos: QoS,
        retain: bool,
    ) -> Options {
        self.will = Some(Will { topic: topic.into(), payload: payload.into(), qos, retain });
        self
    }

    /// Authenticates with SCRAM-SHA-256 (MQTT 5 only): the password never crosses the wire and
    /// the server proves it knows the credential too.
    pub fn scram(mut self, username: impl Into<String>, password: impl Into<Vec<u8>>) -> Options {
        self.scram = Some((username.into(), password.into()));
        self
    }

    pub fn properties(mut self, properties: Properties) -> Options {
        self.properties = properties;
        self
    }
}
