//! The bridge keys of a `connection` block, spelt and meant as in Mosquitto's mosquitto.conf
//! man page. cauldron.toml `[[bridge]]` tables use the same keys (`config::toml`), so one
//! reader serves both.

use std::path::PathBuf;
use std::time::Duration;

use cauldron_proto::{Protocol, QoS};

use super::spec::{BridgeSpec, BridgeTls, Direction, Restart, StartType, TopicRule};

/// What became of a key.
#[derive(Debug, PartialEq, Eq)]
pub enum Applied {
    Done,
    /// Read, and not acted on; the text says why.
    Ignored(String),
    /// Not a bridge key.
    NotBridge,
}

// Values read as the rest of mosquitto.conf reads them.
use crate::config::mosquitto::{parse_bool as boolean, parse_num as number};

fn seconds(value: &str) -> Result<Duration, String> {
    number(value).map(Duration::from_secs)
}

fn tls(spec: &mut BridgeSpec) -> &mut BridgeTls {
    spec.tls.get_or_insert_with(BridgeTls::default)
}

/// Applies `key value` to the bridge being read. `path` resolves a file name as the config
/// file's own keys are resolved (relative to its folder).
pub fn apply(
    spec: &mut BridgeSpec,
    key: &str,
    value: &str,
    path: &dyn Fn(&str) -> PathBuf,
) -> Result<Applied, String> {
    match key {
        "address" | "addresses" => {
            for address in value.split_whitespace() {
                if address.split_once(':').is_some_and(|(_, port)| port.parse::<u16>().is_err()) {
                    return Err(format!("{address:?}: expected host or host:port"));
                }
                spec.addresses.push(address.to_string());
            }
        }
        "round_robin" => spec.round_robin = boolean(value)?,
        "topic" => spec.topics.push(topic_rule(value)?),
        "remote_clientid" | "clientid" => spec.set_remote_clientid(value),
        "local_clientid" => spec.local_clientid = value.to_string(),
        "remote_username" | "username" => spec.remote_username = Some(value.to_string()),
        "remote_password" | "password" => spec.remote_password = Some(value.to_string()),
        "local_username" => spec.local_username = Some(value.to_string()),
        "local_password" => {
            return Ok(Applied::Ignored("the bridge runs inside the broker and needs no local login".into()))
        }
        "cleansession" => spec.clean_session = boolean(value)?,
        "local_cleansession" => spec.local_clean_session = Some(boolean(value)?),
        "bridge_protocol_version" => {
            spec.protocol = match value {
                "mqttv31" => Protocol::V3_1,
                "mqttv311" => Protocol::V3_1_1,
                "mqttv50" => Protocol::V5,
                _ => return Err(format!("{value:?}: expected mqttv31, mqttv311 or mqttv50")),
            }
        }
        "try_private" => spec.try_private = boolean(value)?,
        "keepalive_interval" => spec.keep_alive = seconds(value)?,
        "restart_timeout" => {
            let mut parts = value.split_whitespace();
            let first = seconds(parts.next().unwrap_or_default())?.max(Duration::from_secs(1));
            spec.restart = match parts.next() {
                None => Restart::Constant(first),
                Some(cap) => Restart::Backoff { base: first, cap: seconds(cap)?.max(first) },
            };
        }
        "start_type" => {
            spec.start = match value {
                "automatic" => StartType::Automatic,
                "lazy" => StartType::Lazy,
                "once" => StartType::Once,
                _ => return Err(format!("{value:?}: expected automatic, lazy or once")),
            }
        }
        "idle_timeout" => spec.idle_timeout = seconds(value)?.max(Duration::from_secs(1)),
        "threshold" => spec.threshold = number::<usize>(value)?.max(1),
        "notifications" => spec.notifications = boolean(value)?,
        "notification_topic" => spec.notification_topic = Some(value.to_string()),
        "notifications_local_only" => spec.notifications_local_only = boolean(value)?,
        "bridge_outgoing_retain" => spec.outgoing_retain = boolean(value)?,
        "bridge_max_packet_size" => spec.max_packet_size = Some(number(value)?).filter(|n| *n > 0),
        "bridge_receive_maximum" => spec.receive_maximum = Some(number(value)?).filter(|n| *n > 0),
        "bridge_session_expiry_interval" => spec.session_expiry_interval = Some(number(value)?),
        "bridge_cafile" => tls(spec).cafile = Some(path(value)),
        "bridge_capath" => tls(spec).capath = Some(path(value)),
        "bridge_certfile" => tls(spec).certfile = Some(path(value)),
        "bridge_keyfile" => tls(spec).keyfile = Some(path(value)),
        "bridge_insecure" => tls(spec).insecure = boolean(value)?,
        "bridge_tls_version" => match value {
            "tlsv1.2" | "tlsv1.3" => tls(spec).version = Some(value.to_string()),
            _ => return Err(format!("{value:?}: cauldron speaks tlsv1.2 and tlsv1.3")),
        },
        "bridge_attempt_unsubscribe" => spec.attempt_unsubscribe = boolean(value)?,
        "bridge_bind_address" => return Ok(Applied::Ignored("the system picks the source address".into())),
        _ => return Ok(Applied::NotBridge),
    }
    Ok(Applied::Done)
}

/// `PATTERN [in|out|both [QOS [LOCAL_PREFIX REMOTE_PREFIX]]]`; direction out and QoS 0 by
/// default, as in Mosquitto.
fn topic_rule(value: &str) -> Result<TopicRule, String> {
    let words: Vec<&str> = value.split_whitespace().collect();
    let direction = match words.get(1).copied() {
        None | Some("out") => Direction::Out,
        Some("in") => Direction::In,
        Some("both") => Direction::Both,
        Some(other) => return Err(format!("direction {other:?}: expected in, out or both")),
    };
    let qos = match words.get(2).copied() {
        None | Some("0") => QoS::AtMostOnce,
        Some("1") => QoS::AtLeastOnce,
        Some("2") => QoS::ExactlyOnce,
        Some(other) => return Err(format!("QoS {other:?}: expected 0, 1 or 2")),
    };
    if words.len() == 4 || words.len() > 5 {
        return Err("expected PATTERN [DIRECTION [QOS [LOCAL_PREFIX REMOTE_PREFIX]]]".into());
    }
    TopicRule::new(words[0], direction, qos, words.get(3).copied(), words.get(4).copied())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(lines: &[&str]) -> Result<BridgeSpec, String> {
        let mut spec = BridgeSpec::new("test");
        for line in lines {
            let (key, value) = line.split_once(' ').unwrap();
            match apply(&mut spec, key, value, &|p| PathBuf::from("/etc").join(p))? {
                Applied::NotBridge => return Err(format!("{key}: not a bridge key")),
                Applied::Done | Applied::Ignored(_) => {}
            }
        }
        spec.check().map(|()| spec)
    }

    #[test]
    fn a_mosquitto_connection_block_reads() {
        let spec = read(&[
            "address broker.example:8883 backup.example",
            "topic owntracks/# out 1 \"\" friends/",
            "topic cmd/# in 2",
            "topic both/# both",
            "remote_clientid home",
            "remote_username u",
            "remote_password p",
            "cleansession true",
            "bridge_protocol_version mqttv50",
            "restart_timeout 2 60",
            "start_type lazy",
            "bridge_cafile ca.pem",
            "bridge_insecure true",
            "local_password x",
        ])
        .unwrap();
        assert_eq!(spec.addresses, ["broker.example:8883", "backup.example"]);
        assert_eq!(spec.topics.len(), 3);
        assert_eq!(spec.topics[0].to_remote("owntracks/j/p").as_deref(), Some("friends/owntracks/j/p"));
        assert_eq!((spec.topics[1].direction, spec.topics[1].qos), (Direction::In, QoS::ExactlyOnce));
        assert_eq!((spec.topics[2].direction, spec.topics[2].qos), (Direction::Both, QoS::AtMostOnce));
        assert_eq!((spec.remote_clientid.as_str(), spec.local_clientid.as_str()), ("home", "local.home"));
        assert!(spec.clean_session && spec.local_clean());
        assert_eq!(spec.protocol, Protocol::V5);
        assert_eq!(
            spec.restart,
            Restart::Backoff { base: Duration::from_secs(2), cap: Duration::from_secs(60) }
        );
        assert_eq!(spec.start, StartType::Lazy);
        assert_eq!(spec.state_topic(), "$SYS/broker/connection/home/state");
        let tls = spec.tls.unwrap();
        assert_eq!((tls.cafile, tls.insecure), (Some(PathBuf::from("/etc/ca.pem")), true));
    }

    #[test]
    fn bad_bridge_lines_say_what_is_wrong() {
        assert!(read(&["address a:b"]).unwrap_err().contains("host:port"));
        assert!(read(&["address a", "topic x sideways"]).unwrap_err().contains("direction"));
        assert!(read(&["address a", "topic x out 3"]).unwrap_err().contains("QoS"));
        assert!(read(&["address a", "topic x out 1 only-one"]).unwrap_err().contains("PATTERN"));
        assert!(read(&["topic x"]).unwrap_err().contains("no address"));
        assert!(read(&["address a"]).unwrap_err().contains("no topic"));
        assert!(read(&["address a", "topic x", "bridge_certfile c"]).unwrap_err().contains("cafile"));
        assert!(read(&["address a", "topic x", "bridge_protocol_version mqttv6"]).is_err());
    }
}
