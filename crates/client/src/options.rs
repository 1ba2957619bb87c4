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
        }
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
