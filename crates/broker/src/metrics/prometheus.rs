//! The Prometheus text exposition format (version 0.0.4) for `/metrics`.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

use super::{DropReason, Histogram, Refusal};
use crate::broker::Broker;

const PACKET_TYPES: [&str; 16] = [
    "reserved",
    "connect",
    "connack",
    "publish",
    "puback",
    "pubrec",
    "pubrel",
    "pubcomp",
    "subscribe",
    "suback",
    "unsubscribe",
    "unsuback",
    "pingreq",
    "pingresp",
    "disconnect",
    "auth",
];

struct Out(String);

impl Out {
    fn header(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP cauldron_{name} {help}\n# TYPE cauldron_{name} {kind}");
    }

    fn value(&mut self, name: &str, labels: &str, value: impl std::fmt::Display) {
        let _ = writeln!(self.0, "cauldron_{name}{labels} {value}");
    }

    fn single(&mut self, name: &str, kind: &str, help: &str, value: impl std::fmt::Display) {
        self.header(name, kind, help);
        self.value(name, "", value);
    }

    fn labelled(&mut self, name: &str, help: &str, label: &str, values: impl Iterator<Item = (String, u64)>) {
        self.header(name, "counter", help);
        for (key, value) in values {
            self.value(name, &format!("{{{label}=\"{key}\"}}"), value);
        }
    }

    fn histogram(&mut self, name: &str, help: &str, histogram: &Histogram) {
        self.header(name, "histogram", help);
        let (counts, sum, total) = histogram.read();
        let mut cumulative = 0;
        for (bound, count) in histogram.bounds.iter().zip(&counts) {
            cumulative += count;
            self.value(&format!("{name}_bucket"), &format!("{{le=\"{bound}\"}}"), cumulative);
        }
        self.value(&format!("{name}_bucket"), "{le=\"+Inf\"}", total);
        self.value(&format!("{name}_sum"), "", sum);
        self.value(&format!("{name}_count"), "", total);
    }
}

fn get(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}

/// Renders every metric of `broker`.
pub fn render(broker: &Broker) -> String {
    let m = &broker.metrics;
    let stats = broker.stats();
    let mut out = Out(String::new());
    out.single("connections", "gauge", "Connections open now.", get(&m.connections_current));
    out.single(
        "connections_parked",
        "gauge",
        "Idle connections open now that wait without a task of their own.",
        get(&m.connections_parked),
    );
    out.single(
        "connections_maximum",
        "gauge",
        "Most connections open at once since start.",
        get(&m.connections_maximum),
    );
    out.single(
        "connections_total",
        "counter",
        "Connections accepted since start.",
        get(&m.connections_total),
    );
    let refused = Refusal::ALL.iter().map(|r| (r.label().to_string(), get(&m.refused[*r as usize])));
    out.labelled("connections_refused_total", "Connections refused, by reason.", "reason", refused);
    out.single(
        "protocol_errors_total",
        "counter",
        "Connections closed for malformed or protocol-violating input.",
        get(&m.protocol_errors),
    );
    out.single("auth_failures_total", "counter", "Failed authentications.", get(&m.auth_failures));
    let traffic = m.traffic_totals();
    let received: Vec<_> =
        (1..16).map(|t| (PACKET_TYPES[t].to_string(), traffic.packets_received[t])).collect();
    let sent: Vec<_> = (1..16).map(|t| (PACKET_TYPES[t].to_string(), traffic.packets_sent[t])).collect();
    out.labelled("packets_received_total", "Packets received, by type.", "type", received.into_iter());
    out.labelled("packets_sent_total", "Packets sent, by type.", "type", sent.into_iter());
    let by_qos = |counts: &[u64; 3]| (0..3).map(|q| (q.to_string(), counts[q])).collect::<Vec<_>>();
    out.labelled(
        "messages_received_total",
        "PUBLISH packets received, by QoS.",
        "qos",
        by_qos(&traffic.publish_received).into_iter(),
    );
    out.labelled(
        "messages_sent_total",
        "PUBLISH packets sent, by QoS.",
        "qos",
        by_qos(&traffic.publish_sent).into_iter(),
    );
    let dropped = DropReason::ALL.iter().map(|r| (r.label().to_string(), get(&m.dropped[*r as usize])));
    out.labelled("messages_dropped_total", "Messages not delivered, by reason.", "reason", dropped);
    out.single("bytes_received_total", "counter", "Bytes received.", traffic.bytes_received);
    out.single("bytes_sent_total", "counter", "Bytes sent.", traffic.bytes_sent);
    out.single("sessions_online", "gauge", "Sessions with a connection.", stats.sessions_online);
    out.single(
        "sessions_offline",
        "gauge",
        "Persistent sessions waiting for their client.",
        stats.sessions_offline,
    );
    out.single(
        "sessions_expired_total",
        "counter",
        "Sessions ended by their expiry interval.",
        get(&m.sessions_expired),
    );
    out.single("queued_messages", "gauge", "Messages waiting in session queues.", stats.queued_messages);
    out.single("queued_bytes", "gauge", "Payload bytes waiting in session queues.", stats.queued_bytes);
    out.single(
        "inflight_messages",
        "gauge",
        "QoS 1/2 messages sent and not yet acknowledged.",
        stats.inflight,
    );
    out.single("retained_messages", "gauge", "Retained messages held.", stats.retained);
    out.single("subscriptions", "gauge", "Subscriptions held.", stats.subscriptions);
    out.histogram("store_commit_seconds", "Duration of store commits.", &m.commit_seconds);
    out.histogram(
        "store_commit_operations",
        "Operations per store commit (group commit batch size).",
        &m.commit_ops,
    );
    bridges(&mut out, broker);
    out.0
}

/// One series per bridge, labelled with its `connection` name.
fn bridges(out: &mut Out, broker: &Broker) {
    use crate::bridge::BridgeStatus;
    let bridges = broker.bridges();
    if bridges.is_empty() {
        return;
    }
    type Series = (&'static str, &'static str, &'static str, fn(&BridgeStatus) -> u64);
    let series: [Series; 5] = [
        ("bridge_connected", "gauge", "1 while the bridge is connected to its remote.", |b| {
            u64::from(b.connected.load(Ordering::Relaxed))
        }),
        ("bridge_messages_in_total", "counter", "Messages the bridge brought in from its remote.", |b| {
            get(&b.messages_in)
        }),
        ("bridge_messages_out_total", "counter", "Messages the bridge's remote took.", |b| {
            get(&b.messages_out)
        }),
        ("bridge_queued_messages", "gauge", "Messages waiting for the bridge's remote.", |b| {
            b.queued() as u64
        }),
        ("bridge_reconnects_total", "counter", "Connections to the remote after the first.", |b| {
            get(&b.reconnects)
        }),
    ];
    for (name, kind, help, value) in series {
        out.header(name, kind, help);
        for bridge in &bridges {
            out.value(
                name,
                &format!("{{bridge=\"{}\"}}", bridge.name.replace(['"', '\\', '\n'], "_")),
                value(bridge),
            );
        }
    }
}
