//! The `$SYS/broker/...` tree with Mosquitto's topic names and semantics: retained QoS 0
//! messages, published every `sys_interval` seconds when their value changed, the load averages
//! as Mosquitto computes them. Delivered like any message, so the ACL decides who reads them.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use cauldron_proto::{Publish, QoS};
use tokio_util::sync::CancellationToken;

use crate::broker::Broker;
use crate::message::Message;

/// Values that have load averages: the `$SYS/broker/load/<name>/{1,5,15}min` topics.
const LOADS: [&str; 9] = [
    "messages/received",
    "messages/sent",
    "publish/received",
    "publish/sent",
    "publish/dropped",
    "bytes/received",
    "bytes/sent",
    "connections",
    "sockets",
];

/// What one round of `$SYS` reports, topic by topic, and the counters behind the loads.
fn values(broker: &Broker) -> (Vec<(String, String)>, [u64; LOADS.len()]) {
    let m = &broker.metrics;
    let get = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
    let stats = broker.stats();
    let traffic = m.traffic_totals();
    let received: u64 = traffic.packets_received.iter().sum();
    let sent: u64 = traffic.packets_sent.iter().sum();
    let mut out = vec![
        ("uptime".to_string(), format!("{} seconds", broker.uptime().as_secs())),
        ("clients/connected".into(), stats.sessions_online.to_string()),
        ("clients/active".into(), stats.sessions_online.to_string()),
        ("clients/disconnected".into(), stats.sessions_offline.to_string()),
        ("clients/inactive".into(), stats.sessions_offline.to_string()),
        ("clients/total".into(), (stats.sessions_online + stats.sessions_offline).to_string()),
        ("clients/maximum".into(), get(&m.connections_maximum).to_string()),
        ("clients/expired".into(), get(&m.sessions_expired).to_string()),
        ("messages/received".into(), received.to_string()),
        ("messages/sent".into(), sent.to_string()),
        ("messages/stored".into(), (stats.queued_messages + stats.inflight + stats.retained).to_string()),
        ("publish/messages/received".into(), traffic.messages_received.to_string()),
        ("publish/messages/sent".into(), traffic.messages_sent.to_string()),
        ("publish/messages/dropped".into(), get(&m.messages_dropped).to_string()),
        ("bytes/received".into(), traffic.bytes_received.to_string()),
        ("bytes/sent".into(), traffic.bytes_sent.to_string()),
        ("retained messages/count".into(), stats.retained.to_string()),
        ("subscriptions/count".into(), stats.subscriptions.to_string()),
        ("store/messages/count".into(), (stats.queued_messages + stats.inflight).to_string()),
        ("store/messages/bytes".into(), stats.queued_bytes.to_string()),
    ];
    if let Some(directory) = broker.directory() {
        // The cluster as this node sees it: itself and the nodes whose heartbeats it hears.
        let nodes = directory.nodes();
        out.push(("cluster/nodes".into(), nodes.len().to_string()));
        out.push(("cluster/members".into(), nodes.join(" ")));
        out.push(("cluster/node".into(), directory.node().to_string()));
    }
    for (topic, _) in &mut out {
        topic.insert_str(0, "$SYS/broker/");
    }
    let totals = [
        received,
        sent,
        traffic.messages_received,
        traffic.messages_sent,
        get(&m.messages_dropped),
        traffic.bytes_received,
        traffic.bytes_sent,
        get(&m.connections_total),
        get(&m.connections_total),
    ];
    (out, totals)
}

/// Mosquitto's load average: an exponentially weighted per-minute rate, updated each interval.
#[derive(Default)]
struct Loads {
    last: [u64; LOADS.len()],
    averages: [[f64; 3]; LOADS.len()],
}

impl Loads {
    fn update(&mut self, totals: [u64; LOADS.len()], interval: f64) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for (i, name) in LOADS.iter().enumerate() {
            let per_minute = totals[i].saturating_sub(self.last[i]) as f64 * 60.0 / interval;
            self.last[i] = totals[i];
            for (j, minutes) in [1.0, 5.0, 15.0].iter().enumerate() {
                let decay = (-interval / (60.0 * minutes)).exp();
                let average = &mut self.averages[i][j];
                *average = decay * (*average - per_minute) + per_minute;
                out.push((
                    format!("$SYS/broker/load/{name}/{}min", *minutes as u32),
                    format!("{average:.2}"),
                ));
            }
        }
        out
    }
}

fn publish(broker: &Broker, topic: String, payload: String) {
    let mut publish = Publish::new(topic, payload.into_bytes());
    (publish.qos, publish.retain) = (QoS::AtMostOnce, true);
    drop(broker.publish(Message::from_publish(publish, None)).durable);
}

/// Publishes the `$SYS` tree every `sys_interval` seconds until shutdown (never if it is 0).
pub(crate) async fn publish_periodically(broker: Arc<Broker>, shutdown: CancellationToken) {
    if broker.config.sys_interval == 0 {
        return;
    }
    let interval = Duration::from_secs(broker.config.sys_interval);
    publish(&broker, "$SYS/broker/version".into(), format!("cauldron version {}", env!("CARGO_PKG_VERSION")));
    let mut previous: HashMap<String, String> = HashMap::new();
    let mut loads = Loads::default();
    let mut tick = tokio::time::interval(interval);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let (mut current, totals) = values(&broker);
        current.extend(loads.update(totals, interval.as_secs_f64()));
        for (topic, value) in current {
            // Like Mosquitto, only what changed is published again.
            if previous.get(&topic) != Some(&value) {
                publish(&broker, topic.clone(), value.clone());
                previous.insert(topic, value);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn load_average_follows_mosquitto() {
        let mut loads = Loads::default();
        // 600 messages in a 10 s interval: 3600 per minute; the 1-minute average moves
        // (1 - e^(-1/6)) of the way there.
        let mut totals = [0; LOADS.len()];
        totals[0] = 600;
        let out = loads.update(totals, 10.0);
        let expected = 3600.0 * (1.0 - (-10.0f64 / 60.0).exp());
        assert_eq!(out[0], ("$SYS/broker/load/messages/received/1min".into(), format!("{expected:.2}")));
    }
}
