//! Cluster mode, sessions: one live connection per client id across the nodes, decided by
//! compare-and-swap in JetStream. A client id connecting on one node closes its connection on
//! another (MQTT 5: DISCONNECT 0x8E), and a node paused while its client moved away delivers
//! nothing for it when it wakes.

mod common;

use std::time::Duration;

use cauldron_client::proto::{
    self, BytesMut, Connect, Packet, Properties, Protocol, Publish, QoS, ReasonCode,
};
use cauldron_client::{Client, Options};
use common::cluster::{client, cluster, Nodes};
use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A client seen packet by packet, to tell what a server sends before it closes.
struct Raw {
    stream: TcpStream,
    buf: BytesMut,
}

impl Raw {
    /// Connects (MQTT 5, clean start, keep alive a minute) and subscribes to `filter` at QoS 1.
    async fn subscribed(node: &Cauldron, client_id: &str, filter: &str) -> Raw {
        let stream = TcpStream::connect(&node.addr).await.unwrap();
        let mut raw = Raw { stream, buf: BytesMut::new() };
        raw.send(Packet::Connect(Box::new(Connect {
            protocol: Protocol::V5,
            clean_start: true,
            keep_alive: 60,
            client_id: client_id.into(),
            will: None,
            username: None,
            password: None,
            properties: Properties::default(),
            bridge: false,
        })))
        .await;
        let Some(Packet::ConnAck(ack)) = raw.recv(WAIT).await else { panic!("no CONNACK") };
        assert_eq!(ack.code, ReasonCode::Success);
        let options = proto::SubOptions { qos: QoS::AtLeastOnce, ..Default::default() };
        let filters = vec![proto::Subscription { filter: filter.into(), options }];
        raw.send(Packet::Subscribe(proto::Subscribe {
            packet_id: 1,
            filters,
            properties: Properties::default(),
        }))
        .await;
        assert!(matches!(raw.recv(WAIT).await, Some(Packet::SubAck(_))));
        raw
    }

    async fn send(&mut self, packet: Packet) {
        let mut buf = BytesMut::new();
        packet.encode(Protocol::V5, &mut buf).unwrap();
        self.stream.write_all(&buf).await.unwrap();
    }

    /// The next packet within `wait`; `None` once the server closed.
    async fn recv(&mut self, wait: Duration) -> Option<Packet> {
        tokio::time::timeout(wait, async {
            loop {
                if let Some(packet) = proto::decode(&mut self.buf, Protocol::V5, usize::MAX).unwrap() {
                    return Some(packet);
                }
                match self.stream.read_buf(&mut self.buf).await {
                    Ok(0) | Err(_) => return None,
                    Ok(_) => {}
                }
            }
        })
        .await
        .expect("the server sends or closes in time")
    }

    /// Everything the server sends until it closes the connection.
    async fn until_closed(&mut self) -> Vec<Packet> {
        let mut packets = Vec::new();
        while let Some(packet) = self.recv(WAIT * 2).await {
            packets.push(packet);
        }
        packets
    }
}

fn disconnect_reason(packets: &[Packet]) -> Option<ReasonCode> {
    packets.iter().find_map(|p| match p {
        Packet::Disconnect(d) => Some(d.reason),
        _ => None,
    })
}

fn publishes(packets: &[Packet]) -> Vec<String> {
    packets
        .iter()
        .filter_map(|p| match p {
            Packet::Publish(publish) => Some(publish.topic.to_string()),
            _ => None,
        })
        .collect()
}

async fn publish_qos1(node: &Cauldron, topics: &[String]) {
    let (publisher, _) = client(node, "publisher").await;
    for topic in topics {
        let mut publish = Publish::new(topic.as_str(), "m");
        publish.qos = QoS::AtLeastOnce;
        publisher.publish_packet(publish).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_id_is_live_on_one_node_at_a_time() {
    let Nodes { nats: _nats, nodes, _turn } = cluster("sessions-takeover").await;
    let mut on_a = Raw::subscribed(&nodes[0], "phone", "moves/#").await;
    // The same client id on b: a closes its connection, saying why.
    let (on_b, mut at_b) =
        Client::connect(Options::new(nodes[1].addr.as_str(), "phone").protocol(Protocol::V5)).await.unwrap();
    let closed = on_a.until_closed().await;
    assert_eq!(disconnect_reason(&closed), Some(ReasonCode::SessionTakenOver), "{closed:?}");
    on_b.subscribe("moves/#", QoS::AtLeastOnce).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    publish_qos1(&nodes[2], &["moves/1".to_string()]).await;
    let got = tokio::time::timeout(WAIT, at_b.recv()).await.unwrap().unwrap();
    assert_eq!(got.topic, "moves/1");
    // And back to a: b's connection ends.
    let mut again_on_a = Raw::subscribed(&nodes[0], "phone", "moves/#").await;
    let end = tokio::time::timeout(WAIT, async { while at_b.recv().await.is_some() {} }).await;
    assert!(end.is_ok(), "b kept its connection after the client id connected on a");
    tokio::time::sleep(Duration::from_millis(300)).await;
    publish_qos1(&nodes[2], &["moves/2".to_string()]).await;
    let Some(Packet::Publish(publish)) = again_on_a.recv(WAIT).await else { panic!("no message on a") };
    assert_eq!(publish.topic, "moves/2");
}

/// SIGSTOP a node; publish for its client; move the client to another node; publish again;
/// SIGCONT: the woken node reads the first messages before it reads that the client moved, yet
/// closes the old connection having sent it none of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_node_delivers_nothing_for_a_client_that_moved_meanwhile() {
    let Nodes { nats: _nats, mut nodes, _turn } = cluster("sessions-paused").await;
    let mut on_a = Raw::subscribed(&nodes[0], "tracker", "fleet/#").await;
    // The claim's revision is known to a's registry before the pause.
    tokio::time::sleep(Duration::from_millis(500)).await;
    nodes[0].signal("STOP");
    let before: Vec<String> = (0..5).map(|i| format!("fleet/before/{i}")).collect();
    publish_qos1(&nodes[2], &before).await;
    let (on_b, mut at_b) =
        Client::connect(Options::new(nodes[1].addr.as_str(), "tracker").protocol(Protocol::V5))
            .await
            .unwrap();
    on_b.subscribe("fleet/#", QoS::AtLeastOnce).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after: Vec<String> = (0..5).map(|i| format!("fleet/after/{i}")).collect();
    publish_qos1(&nodes[2], &after).await;
    for topic in &after {
        let got = tokio::time::timeout(WAIT, at_b.recv()).await.unwrap().unwrap();
        assert_eq!(&got.topic, topic);
    }
    // Paused well past what the node takes for a pause.
    tokio::time::sleep(Duration::from_secs(2)).await;
    nodes[0].signal("CONT");
    let closed = on_a.until_closed().await;
    assert_eq!(publishes(&closed), Vec::<String>::new(), "the paused node delivered for a moved client");
    assert_eq!(disconnect_reason(&closed), Some(ReasonCode::SessionTakenOver), "{closed:?}");
    nodes[0].logged("holding deliveries").await;
}

fn persistent(node: &Cauldron, client_id: &str, clean_start: bool) -> Options {
    let properties = Properties { session_expiry_interval: Some(600), ..Properties::default() };
    Options::new(node.addr.as_str(), client_id)
        .protocol(Protocol::V5)
        .clean_start(clean_start)
        .properties(properties)
}

/// What `messages` receives within a moment of quiet, by topic.
async fn received(messages: &mut cauldron_client::Messages, count: usize) -> Vec<String> {
    let mut topics = Vec::new();
    while topics.len() < count {
        match tokio::time::timeout(WAIT, messages.recv()).await {
            Ok(Some(message)) => topics.push(message.topic.to_string()),
            _ => break,
        }
    }
    topics
}

/// A client with a persistent session leaves node a; messages are published on c; it comes
/// back on b and gets every QoS 1 and 2 message queued for it, in order; then it moves from b
/// to c with messages published on a and on b meanwhile, and a subscriber's own node still
/// serves it what is published there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_persistent_session_resumes_on_another_node_with_what_was_queued() {
    let Nodes { nats: _nats, mut nodes, _turn } = cluster("sessions-resume").await;
    let (phone, _) = Client::connect(persistent(&nodes[0], "phone", true)).await.unwrap();
    phone.subscribe("parcel/#", QoS::AtLeastOnce).await.unwrap();
    phone.subscribe("urgent/#", QoS::ExactlyOnce).await.unwrap();
    phone.disconnect().await.unwrap();
    nodes[0].logged("session of phone parked").await;

    let first: Vec<String> = (0..5).map(|i| format!("parcel/{i}")).collect();
    publish_qos1(&nodes[2], &first).await;
    let (urgent, _) = client(&nodes[2], "urgent-publisher").await;
    urgent.publish("urgent/1", "now", QoS::ExactlyOnce, false).await.unwrap();

    let (phone, mut at_b) = Client::connect(persistent(&nodes[1], "phone", false)).await.unwrap();
    assert!(phone.connected().session_present, "the session came along to b");
    nodes[1].logged("session resumed here").await;
    let mut expected = first.clone();
    expected.push("urgent/1".into());
    assert_eq!(received(&mut at_b, expected.len()).await, expected);
    // Published on b itself while it is there: served by b.
    publish_qos1(&nodes[1], &["parcel/on-b".to_string()]).await;
    assert_eq!(received(&mut at_b, 1).await, vec!["parcel/on-b".to_string()]);
    phone.disconnect().await.unwrap();
    nodes[1].logged("session of phone parked").await;

    let on_a: Vec<String> = (0..3).map(|i| format!("parcel/a{i}")).collect();
    publish_qos1(&nodes[0], &on_a).await;
    publish_qos1(&nodes[1], &["parcel/b0".to_string()]).await;
    let (phone, mut at_c) = Client::connect(persistent(&nodes[2], "phone", false)).await.unwrap();
    assert!(phone.connected().session_present);
    nodes[2].logged("session resumed here").await;
    let mut expected = on_a.clone();
    expected.push("parcel/b0".into());
    assert_eq!(received(&mut at_c, expected.len()).await, expected);
    let more = tokio::time::timeout(Duration::from_millis(700), at_c.recv()).await;
    assert!(more.is_err(), "nothing twice: {:?}", more.map(|m| m.map(|p| p.topic)));
}

/// kill -9 of the node a persistent session is connected to: its client reconnects to another
/// node and gets every message acknowledged to a publisher meanwhile, in order. What the dead
/// node had already delivered since the session's last checkpoint may come again (at least
/// once), never less.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_nodes_sessions_resume_elsewhere_with_nothing_acknowledged_lost() {
    let Nodes { nats: _nats, mut nodes, _turn } = cluster("sessions-killed").await;
    let (phone, mut at_a) = Client::connect(persistent(&nodes[0], "phone", true)).await.unwrap();
    phone.subscribe("dock/#", QoS::AtLeastOnce).await.unwrap();
    let before: Vec<String> = (0..5).map(|i| format!("dock/{i}")).collect();
    publish_qos1(&nodes[2], &before).await;
    assert_eq!(received(&mut at_a, before.len()).await, before);
    let dead = nodes.remove(0);
    dead.kill9().await;
    drop((phone, at_a));
    let after: Vec<String> = (5..10).map(|i| format!("dock/{i}")).collect();
    publish_qos1(&nodes[1], &after).await;

    let (phone, mut at_b) = Client::connect(persistent(&nodes[0], "phone", false)).await.unwrap();
    assert!(phone.connected().session_present, "the dead node's session resumed on b");
    let got = received(&mut at_b, before.len() + after.len()).await;
    let fresh: Vec<&String> = got.iter().filter(|t| after.contains(t)).collect();
    assert_eq!(fresh, after.iter().collect::<Vec<_>>(), "every acknowledged message, in order: {got:?}");
}

/// A client that moves to another node while its old connection is still open (a phone that
/// changed networks): the old node hands the session over as it stands, so the new node
/// delivers what came after, and nothing the client already had.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_taken_over_on_another_node_is_handed_over_exactly() {
    let Nodes { nats: _nats, mut nodes, _turn } = cluster("sessions-handover").await;
    let (phone, mut at_a) = Client::connect(persistent(&nodes[0], "phone", true)).await.unwrap();
    phone.subscribe("van/#", QoS::AtLeastOnce).await.unwrap();
    let before: Vec<String> = (0..5).map(|i| format!("van/{i}")).collect();
    publish_qos1(&nodes[2], &before).await;
    assert_eq!(received(&mut at_a, before.len()).await, before);
    // Its acknowledgements reach a before it moves.
    tokio::time::sleep(Duration::from_millis(300)).await;

    let (moved, mut at_b) = Client::connect(persistent(&nodes[1], "phone", false)).await.unwrap();
    assert!(moved.connected().session_present);
    nodes[0].logged("handed over to node b").await;
    let old = tokio::time::timeout(WAIT, async { while at_a.recv().await.is_some() {} }).await;
    assert!(old.is_ok(), "the old connection on a was not closed");
    let after: Vec<String> = (5..8).map(|i| format!("van/{i}")).collect();
    publish_qos1(&nodes[2], &after).await;
    assert_eq!(received(&mut at_b, after.len()).await, after);
    let more = tokio::time::timeout(Duration::from_millis(700), at_b.recv()).await;
    assert!(more.is_err(), "nothing twice: {:?}", more.map(|m| m.map(|p| p.topic)));
    drop(phone);
}

/// kill -9 of a node: the will of its client is published once, by another node; the will of
/// a client whose Will Delay Interval has not run out when it comes back on another node is
/// not, and its session resumes there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_nodes_wills_are_published_once_and_delayed_ones_wait_for_their_client() {
    let Nodes { nats: _nats, mut nodes, _turn } = cluster("sessions-wills").await;
    let (watcher, mut wills) = client(&nodes[2], "watcher").await;
    watcher.subscribe("wills/#", QoS::AtLeastOnce).await.unwrap();
    let (sys, mut members) = client(&nodes[2], "sys-watcher").await;
    sys.subscribe("$SYS/broker/cluster/nodes", QoS::AtMostOnce).await.unwrap();
    until_payload(&mut members, "3").await;
    let sensor = Options::new(nodes[0].addr.as_str(), "sensor").protocol(Protocol::V5).will(
        "wills/sensor",
        "gone",
        QoS::AtLeastOnce,
        false,
    );
    let (_sensor, _) = Client::connect(sensor).await.unwrap();
    let mut phone = persistent(&nodes[0], "phone", true).will("wills/phone", "gone", QoS::AtLeastOnce, false);
    phone.will.as_mut().unwrap().properties.will_delay_interval = Some(60);
    let (phone, _) = Client::connect(phone).await.unwrap();
    phone.subscribe("phone/#", QoS::AtLeastOnce).await.unwrap();
    // Both wills are in the registry before the node dies.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let dead = nodes.remove(0);
    dead.kill9().await;

    let will = tokio::time::timeout(WAIT * 2, wills.recv()).await.expect("the sensor's will").unwrap();
    assert_eq!((&*will.topic, &will.payload[..]), ("wills/sensor", &b"gone"[..]));
    let (back, _) = Client::connect(persistent(&nodes[0], "phone", false)).await.unwrap();
    assert!(back.connected().session_present, "the phone's session resumed on b");
    let more = tokio::time::timeout(Duration::from_secs(2), wills.recv()).await;
    assert!(more.is_err(), "one will, once: {:?}", more.map(|m| m.map(|p| p.topic)));
    // The cluster view in $SYS has lost the dead node too.
    until_payload(&mut members, "2").await;
    drop(phone);
}

async fn until_payload(messages: &mut cauldron_client::Messages, payload: &str) {
    let deadline = tokio::time::Instant::now() + WAIT * 2;
    loop {
        let message = tokio::time::timeout_at(deadline, messages.recv()).await;
        match message {
            Ok(Some(m)) if m.payload == payload.as_bytes() => return,
            Ok(Some(_)) => {}
            _ => panic!("no {payload:?} in time"),
        }
    }
}

/// The same with paho-mqtt: a persistent session made on a, messages published on c, resumed
/// on b with every message in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paho_moves_a_persistent_session_between_nodes() {
    let Nodes { nats: _nats, nodes, _turn } = cluster("sessions-paho").await;
    let port = |node: &Cauldron| node.addr.rsplit(':').next().unwrap().to_string();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/paho_cluster.py");
    let run = tokio::process::Command::new("python3")
        .args([script, &port(&nodes[0]), &port(&nodes[1]), &port(&nodes[2])])
        .output();
    let out = tokio::time::timeout(WAIT * 4, run).await.expect("in time").unwrap();
    assert!(out.status.success(), "paho: {}", String::from_utf8_lossy(&out.stderr));
}
