//! What a bridge is told to do: the remote, the topics both ways, and how to behave when the
//! remote is away. Read from mosquitto.conf `connection` blocks (`config::mosquitto`) and
//! cauldron.toml `[[bridge]]` tables (`config::toml`), with Mosquitto's defaults.

use std::path::PathBuf;
use std::time::Duration;

use cauldron_proto::{topic, Protocol, QoS};

/// One bridge.
#[derive(Debug, Clone, PartialEq)]
pub struct BridgeSpec {
    /// The `connection` name.
    pub name: String,
    /// `host[:port]`, tried in order (port 1883, or 8883 with TLS).
    pub addresses: Vec<String>,
    /// After a failure, go on with the next address instead of starting from the first.
    pub round_robin: bool,
    pub topics: Vec<TopicRule>,
    /// Client id at the remote; Mosquitto's default is `<hostname>.<name>`.
    pub remote_clientid: String,
    /// Client id of the bridge's session in this broker; default `local.<remote_clientid>`.
    pub local_clientid: String,
    pub remote_username: Option<String>,
    pub remote_password: Option<String>,
    /// The user this broker's ACL sees the bridge as, for both directions.
    pub local_username: Option<String>,
    /// Clean session at the remote (Mosquitto's `cleansession`, default false).
    pub clean_session: bool,
    /// Start the local session afresh at each broker start; unset, as `clean_session`
    /// (see `local_clean`).
    pub local_clean_session: Option<bool>,
    pub protocol: Protocol,
    /// Tell a 3.x remote this is a bridge (protocol level 0x80), or ask an MQTT 5 one for No
    /// Local: either way what the bridge sends is not sent back.
    pub try_private: bool,
    pub keep_alive: Duration,
    pub restart: Restart,
    pub start: StartType,
    /// `lazy`: disconnect after this long without traffic.
    pub idle_timeout: Duration,
    /// `lazy`: connect when this many messages wait.
    pub threshold: usize,
    pub notifications: bool,
    /// Where the connection state goes; default `$SYS/broker/connection/<remote_clientid>/state`.
    pub notification_topic: Option<String>,
    pub notifications_local_only: bool,
    /// Keep the retain flag of messages sent to the remote.
    pub outgoing_retain: bool,
    /// UNSUBSCRIBE at the remote from topics that are not inbound, in case an earlier
    /// configuration subscribed there.
    pub attempt_unsubscribe: bool,
    /// MQTT 5: the Maximum Packet Size the bridge announces to the remote.
    pub max_packet_size: Option<u32>,
    /// MQTT 5: the Receive Maximum the bridge announces to the remote.
    pub receive_maximum: Option<u16>,
    /// MQTT 5: the Session Expiry Interval asked of the remote.
    pub session_expiry_interval: Option<u32>,
    pub tls: Option<BridgeTls>,
}

/// How long to wait before connecting again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Restart {
    /// Always the same wait (`restart_timeout N`).
    Constant(Duration),
    /// Doubling from `base` up to `cap` while attempts fail (`restart_timeout BASE CAP`; the
    /// default is 5 s to 30 s), back to `base` once connected.
    Backoff { base: Duration, cap: Duration },
}

impl Restart {
    /// The wait after `failures` failed attempts in a row (1 for the first).
    pub fn delay(&self, failures: u32) -> Duration {
        match *self {
            Restart::Constant(wait) => wait,
            Restart::Backoff { base, cap } => {
                base.saturating_mul(1 << failures.saturating_sub(1).min(16)).min(cap)
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartType {
    /// Connect at start and whenever the connection is lost.
    Automatic,
    /// Connect once `threshold` messages wait; disconnect after `idle_timeout` of quiet.
    Lazy,
    /// Connect once at start; not again.
    Once,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BridgeTls {
    pub cafile: Option<PathBuf>,
    pub capath: Option<PathBuf>,
    pub certfile: Option<PathBuf>,
    pub keyfile: Option<PathBuf>,
    /// Accept a certificate whose name is not the remote's host (the chain is still checked).
    pub insecure: bool,
    /// `tlsv1.2` or `tlsv1.3`; none for either.
    pub version: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    In,
    Out,
    Both,
}

impl Direction {
    pub fn inbound(self) -> bool {
        matches!(self, Direction::In | Direction::Both)
    }

    pub fn outbound(self) -> bool {
        matches!(self, Direction::Out | Direction::Both)
    }
}

/// `topic PATTERN [in|out|both [QOS [LOCAL_PREFIX REMOTE_PREFIX]]]`: the local topics are
/// `LOCAL_PREFIX` + `PATTERN`, the remote ones `REMOTE_PREFIX` + `PATTERN`. An empty pattern
/// (`""`) makes each prefix a whole topic or filter of its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicRule {
    pub direction: Direction,
    pub qos: QoS,
    local_prefix: String,
    remote_prefix: String,
    /// The filter on this broker (`local_prefix` + pattern) and at the remote.
    local_filter: String,
    remote_filter: String,
}

impl TopicRule {
    /// Checks the rule as Mosquitto does: prefixes are topic names, prefix and pattern make a
    /// valid filter, and an empty pattern needs both prefixes.
    pub fn new(
        pattern: &str,
        direction: Direction,
        qos: QoS,
        local_prefix: Option<&str>,
        remote_prefix: Option<&str>,
    ) -> Result<TopicRule, String> {
        let pattern = if pattern == "\"\"" { "" } else { pattern };
        let unquote = |p: Option<&str>| p.filter(|p| *p != "\"\"").unwrap_or("").to_string();
        let (local_prefix, remote_prefix) = (unquote(local_prefix), unquote(remote_prefix));
        if pattern.is_empty() && (local_prefix.is_empty() || remote_prefix.is_empty()) {
            return Err("an empty topic pattern needs both a local and a remote prefix".into());
        }
        for prefix in [&local_prefix, &remote_prefix] {
            if !prefix.is_empty() && topic::validate_name(prefix).is_err() {
                return Err(format!("prefix {prefix:?} is not a valid topic name"));
            }
        }
        let (local_filter, remote_filter) =
            (format!("{local_prefix}{pattern}"), format!("{remote_prefix}{pattern}"));
        for filter in [&local_filter, &remote_filter] {
            topic::validate_filter(filter).map_err(|e| format!("{filter:?}: {e}"))?;
        }
        Ok(TopicRule { direction, qos, local_prefix, remote_prefix, local_filter, remote_filter })
    }

    pub fn local_filter(&self) -> &str {
        &self.local_filter
    }

    pub fn remote_filter(&self) -> &str {
        &self.remote_filter
    }

    /// The remote topic for a local message this rule sends out, if it matches.
    pub fn to_remote(&self, local: &str) -> Option<String> {
        topic::matches(&self.local_filter, local)
            .then(|| remap(local, &self.local_prefix, &self.remote_prefix))
    }

    /// The local topic for a remote message this rule brings in, if it matches.
    pub fn to_local(&self, remote: &str) -> Option<String> {
        topic::matches(&self.remote_filter, remote)
            .then(|| remap(remote, &self.remote_prefix, &self.local_prefix))
    }
}

/// `topic` with `from` taken off its front and `to` put there instead.
fn remap(topic: &str, from: &str, to: &str) -> String {
    format!("{to}{}", topic.strip_prefix(from).unwrap_or(topic))
}

impl BridgeSpec {
    /// A bridge named `name` with Mosquitto's defaults and nowhere to go yet.
    pub fn new(name: &str) -> BridgeSpec {
        let host = hostname();
        let remote_clientid = format!("{host}.{name}");
        BridgeSpec {
            name: name.to_string(),
            addresses: Vec::new(),
            round_robin: false,
            topics: Vec::new(),
            local_clientid: format!("local.{remote_clientid}"),
            remote_clientid,
            remote_username: None,
            remote_password: None,
            local_username: None,
            clean_session: false,
            local_clean_session: None,
            protocol: Protocol::V3_1_1,
            try_private: true,
            keep_alive: Duration::from_secs(60),
            restart: Restart::Backoff { base: Duration::from_secs(5), cap: Duration::from_secs(30) },
            start: StartType::Automatic,
            idle_timeout: Duration::from_secs(60),
            threshold: 10,
            notifications: true,
            notification_topic: None,
            notifications_local_only: false,
            outgoing_retain: true,
            attempt_unsubscribe: true,
            max_packet_size: None,
            receive_maximum: None,
            session_expiry_interval: None,
            tls: None,
        }
    }

    /// What is missing or contradictory, once every key of the block is read.
    pub fn check(&self) -> Result<(), String> {
        if self.addresses.is_empty() {
            return Err(format!("bridge {:?} has no address", self.name));
        }
        if self.topics.is_empty() {
            return Err(format!("bridge {:?} has no topic", self.name));
        }
        if self.remote_password.is_some() && self.remote_username.is_none() {
            return Err(format!("bridge {:?}: remote_password without remote_username", self.name));
        }
        if let Some(tls) = &self.tls {
            if tls.cafile.is_none() && tls.capath.is_none() {
                return Err(format!("bridge {:?}: TLS needs bridge_cafile or bridge_capath", self.name));
            }
            if tls.certfile.is_some() != tls.keyfile.is_some() {
                return Err(format!(
                    "bridge {:?}: bridge_certfile and bridge_keyfile go together",
                    self.name
                ));
            }
        }
        Ok(())
    }

    /// A few lines for `cauldron config check`.
    pub fn describe(&self) -> String {
        let mut out = format!(
            "bridge {} to {} ({:?}, remote id {}, local id {}, cleansession {}, try_private {}, {}{})\n",
            self.name,
            self.addresses.join(" "),
            self.protocol,
            self.remote_clientid,
            self.local_clientid,
            self.clean_session,
            self.try_private,
            match self.start {
                StartType::Automatic => "automatic",
                StartType::Lazy => "lazy",
                StartType::Once => "once",
            },
            if self.tls.is_some() { ", TLS" } else { "" },
        );
        for rule in &self.topics {
            let arrow = match rule.direction {
                Direction::In => "<-",
                Direction::Out => "->",
                Direction::Both => "<->",
            };
            out.push_str(&format!(
                "  topic {} {arrow} {} (QoS {})\n",
                rule.local_filter, rule.remote_filter, rule.qos as u8
            ));
        }
        out
    }

    pub fn local_clean(&self) -> bool {
        self.local_clean_session.unwrap_or(self.clean_session)
    }

    /// The retained topic that tells whether the bridge is connected (`1`) or not (`0`).
    pub fn state_topic(&self) -> String {
        match &self.notification_topic {
            Some(topic) => topic.clone(),
            None => format!("$SYS/broker/connection/{}/state", self.remote_clientid),
        }
    }

    /// Sets `remote_clientid`, and the local one with it unless that was set.
    pub fn set_remote_clientid(&mut self, id: &str) {
        if self.local_clientid == format!("local.{}", self.remote_clientid) {
            self.local_clientid = format!("local.{id}");
        }
        self.remote_clientid = id.to_string();
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "cauldron".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_remap_both_ways_as_in_mosquitto() {
        let rule =
            TopicRule::new("sensors/#", Direction::Both, QoS::AtLeastOnce, Some("home/"), Some("site1/"))
                .unwrap();
        assert_eq!((rule.local_filter(), rule.remote_filter()), ("home/sensors/#", "site1/sensors/#"));
        assert_eq!(rule.to_remote("home/sensors/t").as_deref(), Some("site1/sensors/t"));
        assert_eq!(rule.to_local("site1/sensors/t").as_deref(), Some("home/sensors/t"));
        assert_eq!(rule.to_remote("elsewhere/sensors/t"), None);

        // An empty pattern: each prefix is the whole topic.
        let exact =
            TopicRule::new("\"\"", Direction::Out, QoS::AtMostOnce, Some("a/b"), Some("c/d")).unwrap();
        assert_eq!(exact.to_remote("a/b").as_deref(), Some("c/d"));
        assert!(TopicRule::new("\"\"", Direction::Out, QoS::AtMostOnce, Some("a/b"), None).is_err());
        // No prefix at one end: the topic as it is there.
        let plain =
            TopicRule::new("owntracks/#", Direction::Out, QoS::AtLeastOnce, Some("\"\""), Some("friends/"))
                .unwrap();
        assert_eq!(plain.to_remote("owntracks/jane/phone").as_deref(), Some("friends/owntracks/jane/phone"));
        assert!(TopicRule::new("a/#", Direction::In, QoS::AtMostOnce, Some("bad/#/"), None).is_err());
    }

    #[test]
    fn backoff_doubles_to_its_cap() {
        let restart = Restart::Backoff { base: Duration::from_secs(5), cap: Duration::from_secs(30) };
        let waits: Vec<u64> = (1..=5).map(|n| restart.delay(n).as_secs()).collect();
        assert_eq!(waits, [5, 10, 20, 30, 30]);
        assert_eq!(Restart::Constant(Duration::from_secs(3)).delay(9), Duration::from_secs(3));
    }
}
