//! The broker's typed configuration, with defaults in code (Mosquitto's where it has one), and
//! the readers that produce it.

pub mod mosquitto;
mod setup;
pub mod toml;

pub use setup::{ListenerAuthSpec, ListenerSpec, Setup};

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Config {
    /// Addresses to listen on; the default is loopback only, as Mosquitto 2 without listeners.
    pub listeners: Vec<SocketAddr>,
    /// Where persistent state lives.
    pub data_dir: PathBuf,
    /// Keep retained messages and sessions in `data_dir` across restarts. On by default; a
    /// mosquitto.conf turns it on only with `persistence true`, as Mosquitto does.
    pub persistence: bool,
    /// QoS 1/2 messages in flight to one client at once, and from one MQTT 5 client at once
    /// (advertised as Receive Maximum), as Mosquitto's max_inflight_messages (default 20).
    pub max_inflight_messages: usize,
    /// Messages queued per session beyond the inflight window; 0 is no limit (Mosquitto:
    /// max_queued_messages).
    pub max_queued_messages: usize,
    /// Queue QoS 0 messages for offline persistent sessions (Mosquitto: queue_qos0_messages).
    pub queue_qos0_messages: bool,
    /// Payload bytes queued per session; 0 is no limit (Mosquitto: max_queued_bytes).
    pub max_queued_bytes: usize,
    /// When a session's queue is full, drop its oldest message instead of the new one.
    pub drop_oldest: bool,
    /// Payload bytes queued across all sessions above which QoS 0 messages are shed; a quarter
    /// above it, QoS 1/2 are refused too (MQTT 5 publishers get 0x97). 0 is no ceiling.
    pub memory_ceiling: usize,
    /// How long a 3.x persistent session (clean session 0) outlives its connection; `None`
    /// keeps it forever (Mosquitto: persistent_client_expiration).
    pub persistent_client_expiration: Option<Duration>,
    /// Whether acknowledgements wait for the store (see [`crate::store::Durability`]).
    pub durability: crate::store::Durability,
    /// Largest packet accepted from a client, in bytes.
    pub max_packet_size: usize,
    /// Largest PUBLISH payload (and will payload) accepted; bigger ones are dropped with their QoS
    /// flow completed (MQTT 5: reason 0x95). 0 is no limit (Mosquitto: message_size_limit).
    pub message_size_limit: usize,
    /// Time a new connection has to send CONNECT.
    pub connect_timeout: Duration,
    /// Highest keep alive granted; larger requests and 0 ("never") are lowered to it for MQTT 5
    /// clients (Server Keep Alive) and refused for 3.x clients. 0 sets no maximum, as in
    /// Mosquitto's max_keepalive.
    pub max_keepalive: u16,
    /// Accept an empty client id (assigning one) [MQTT-3.1.3-6].
    pub allow_zero_length_clientid: bool,
    /// Prefix of assigned client ids.
    pub auto_id_prefix: String,
    /// Topic aliases accepted from an MQTT 5 client.
    pub topic_alias_maximum: u16,
    /// Highest QoS the broker accepts and grants (Mosquitto: max_qos).
    pub max_qos: cauldron_proto::QoS,
    /// Deliver at the subscription's QoS even when published lower (Mosquitto:
    /// upgrade_outgoing_qos). Off by default, as the spec has it: "the lower of" the two.
    pub upgrade_outgoing_qos: bool,
    /// A retained message goes to a new subscriber only while its publisher may still write its
    /// topic (Mosquitto's check_retain_source): access taken away also takes back what it wrote.
    pub check_retain_source: bool,
    /// Whether retained messages are supported (Mosquitto: retain_available).
    pub retain_available: bool,
    pub wildcard_subscription_available: bool,
    pub subscription_identifier_available: bool,
    pub shared_subscription_available: bool,
    /// Tell MQTT 5 clients in words why the server disconnects them (a Reason String), unless
    /// they asked not to be. Off by default, as Mosquitto, so that the packets are Mosquitto's.
    pub reason_strings: bool,
    /// Answer an MQTT 5 Request Response Information with `<prefix>/<client id>`, a topic root
    /// the client may use for response topics. `None` answers nothing (the spec allows both).
    pub response_topic_prefix: Option<String>,
    /// Send MQTT 5 clients to another server from the start (see [`Redirect`]).
    pub redirect: Option<Redirect>,
    /// Connections open at once across all listeners (Mosquitto: max_connections).
    pub max_connections: Option<usize>,
    /// New connections per second from one address (a burst of as many is allowed).
    pub connection_rate_per_ip: Option<u32>,
    /// Seconds between `$SYS` updates; 0 disables them (Mosquitto: sys_interval).
    pub sys_interval: u64,
    /// How often expired sessions are looked for.
    pub expiry_check_interval: Duration,
    /// Users and password hashes (a Mosquitto password file).
    pub password_file: std::sync::Arc<crate::auth::password::Passwords>,
    /// Whether clients without a username (or with one but no password file) may connect.
    pub allow_anonymous: bool,
    /// Pause before answering a refused login.
    pub auth_failure_delay: Duration,
    /// Users who may authenticate with SCRAM-SHA-256 (MQTT 5 enhanced authentication).
    pub scram_users: HashMap<String, cauldron_proto::scram::Credential>,
}

impl Config {
    /// Unacknowledged QoS 1/2 PUBLISHes accepted from an MQTT 5 client at once: the Receive
    /// Maximum of CONNACK, which Mosquitto takes from max_inflight_messages too.
    pub fn receive_maximum(&self) -> u16 {
        self.max_inflight_messages.clamp(1, usize::from(u16::MAX)) as u16
    }
}

impl Default for Config {
    fn default() -> Config {
        Config {
            listeners: vec![SocketAddr::from(([127, 0, 0, 1], 1883))],
            data_dir: PathBuf::from("cauldron-data"),
            persistence: true,
            max_inflight_messages: 20,
            max_queued_messages: 1000,
            queue_qos0_messages: false,
            max_queued_bytes: 0,
            drop_oldest: false,
            memory_ceiling: 0,
            persistent_client_expiration: None,
            durability: crate::store::Durability::Sync,
            max_packet_size: 268_435_460,
            message_size_limit: 0,
            connect_timeout: Duration::from_secs(10),
            max_keepalive: 0,
            allow_zero_length_clientid: true,
            auto_id_prefix: "auto-".to_string(),
            topic_alias_maximum: 10,
            max_qos: cauldron_proto::QoS::ExactlyOnce,
            upgrade_outgoing_qos: false,
            check_retain_source: false,
            retain_available: true,
            wildcard_subscription_available: true,
            subscription_identifier_available: true,
            shared_subscription_available: true,
            reason_strings: false,
            response_topic_prefix: None,
            redirect: None,
            max_connections: None,
            connection_rate_per_ip: None,
            sys_interval: 10,
            expiry_check_interval: Duration::from_secs(1),
            scram_users: HashMap::new(),
            password_file: Default::default(),
            allow_anonymous: true,
            auth_failure_delay: Duration::from_secs(1),
        }
    }
}

/// Server redirection for maintenance [MQTT-4.11]: new MQTT 5 connections are refused with
/// CONNACK 0x9C (use another server) or 0x9D (server moved, when `permanent`) naming
/// `reference`; connected clients get the same in a DISCONNECT. Older clients get "server
/// unavailable", as 3.1.1 has no way to say where to go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redirect {
    pub reference: String,
    pub permanent: bool,
}

impl Redirect {
    pub fn reason_code(&self) -> cauldron_proto::ReasonCode {
        if self.permanent {
            cauldron_proto::ReasonCode::ServerMoved
        } else {
            cauldron_proto::ReasonCode::UseAnotherServer
        }
    }
}
