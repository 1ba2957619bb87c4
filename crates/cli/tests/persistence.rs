//! Crash safety, black-box: the real binary, `kill -9`, and a restart on the same data
//! directory. What was acknowledged must be there; what QoS promises must hold.

mod common;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use cauldron_client::{Client, Messages, Options, QoS};
use cauldron_proto::{Ack, BytesMut, Packet, Protocol, Publish, ReasonCode};
use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn persistent(addr: &str, id: &str) -> Options {
    Options::new(addr, id).clean_start(false)
}

async fn next(messages: &mut Messages) -> Publish {
    tokio::time::timeout(WAIT, messages.recv()).await.expect("message in time").expect("connected")
}

async fn nothing(messages: &mut Messages) {
    if let Ok(Some(m)) = tokio::time::timeout(Duration::from_millis(500), messages.recv()).await {
        panic!("unexpected {:?}", m.payload);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acked_messages_retained_and_subscriptions_survive_kill_9() {
    let dir = data_dir("kill9-basic");
    let broker = Cauldron::start(&dir, &[]).await;
    let (sub, _) = Client::connect(persistent(&broker.addr, "phone")).await.unwrap();
    sub.subscribe("one/#", QoS::AtLeastOnce).await.unwrap();
    sub.subscribe("two/#", QoS::ExactlyOnce).await.unwrap();
    sub.disconnect().await.unwrap();
    let (publisher, _) = Client::connect(Options::new(&broker.addr, "pub")).await.unwrap();
    publisher.publish("home/state", "kept", QoS::AtLeastOnce, true).await.unwrap();
    for i in 0..50 {
        publisher.publish(format!("one/{i}"), format!("q1-{i}"), QoS::AtLeastOnce, false).await.unwrap();
        publisher.publish(format!("two/{i}"), format!("q2-{i}"), QoS::ExactlyOnce, false).await.unwrap();
    }
    broker.kill9().await;

    let broker = Cauldron::start(&dir, &[]).await;
    let (sub, mut messages) = Client::connect(persistent(&broker.addr, "phone")).await.unwrap();
    assert!(sub.connected().session_present, "the session survived");
    for i in 0..50 {
        let m = next(&mut messages).await;
        assert_eq!((&m.payload[..], m.qos), (format!("q1-{i}").as_bytes(), QoS::AtLeastOnce));
        let m = next(&mut messages).await;
        assert_eq!((&m.payload[..], m.qos), (format!("q2-{i}").as_bytes(), QoS::ExactlyOnce));
    }
    nothing(&mut messages).await;
    // The subscriptions are still there...
    let (publisher, _) = Client::connect(Options::new(&broker.addr, "pub")).await.unwrap();
    publisher.publish("one/after", "after", QoS::AtLeastOnce, false).await.unwrap();
    assert_eq!(&next(&mut messages).await.payload[..], b"after");
    // ...and so is the retained message.
    let (late, mut late_messages) = Client::connect(Options::new(&broker.addr, "late")).await.unwrap();
    late.subscribe("home/#", QoS::AtLeastOnce).await.unwrap();
    let retained = next(&mut late_messages).await;
    assert_eq!((&retained.payload[..], retained.retain), (&b"kept"[..], true));
    broker.terminate().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_under_load_loses_no_acknowledged_message() {
    let dir = data_dir("kill9-load");
    // A queue large enough that nothing is dropped for being over the limit.
    let broker = Cauldron::start(&dir, &["--max-queued-messages", "1000000"]).await;
    let (sub, _) = Client::connect(persistent(&broker.addr, "collector")).await.unwrap();
    sub.subscribe("load/#", QoS::AtLeastOnce).await.unwrap();
    sub.disconnect().await.unwrap();

    // Four publishers publish QoS 1 as fast as acks come back until the broker dies.
    let stop = Arc::new(AtomicBool::new(false));
    let mut publishers = Vec::new();
    for p in 0..4 {
        let (client, _) = Client::connect(Options::new(&broker.addr, format!("pub{p}"))).await.unwrap();
        let stop = Arc::clone(&stop);
        publishers.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            for i in 0..100_000 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let payload = format!("{p}-{i}");
                match client.publish("load/x", payload.clone(), QoS::AtLeastOnce, false).await {
                    Ok(()) => acked.push(payload),
                    Err(_) => break, // the broker died under us
                }
            }
            acked
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    broker.kill9().await;
    stop.store(true, Ordering::Relaxed);
    let mut acked = HashSet::new();
    for publisher in publishers {
        acked.extend(publisher.await.unwrap());
    }
    assert!(acked.len() > 100, "the load ran: {} acked", acked.len());

    let mut broker = Cauldron::start(&dir, &["--max-queued-messages", "1000000"]).await;
    let (_sub, mut messages) = Client::connect(persistent(&broker.addr, "collector")).await.unwrap();
    let mut received = HashSet::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !acked.is_subset(&received) {
        match tokio::time::timeout_at(deadline, messages.recv()).await {
            Ok(Some(m)) => received.insert(String::from_utf8(m.payload.to_vec()).unwrap()),
            _ => break,
        };
    }
    let missing: Vec<_> = acked.difference(&received).collect();
    if !missing.is_empty() {
        eprintln!("broker: {}", broker.logged("state restored").await);
        while let Ok(Some(line)) = tokio::time::timeout(Duration::from_millis(200), broker.log.recv()).await {
            eprintln!("broker: {line}");
        }
    }
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged messages missing ({} received), e.g. {:?}",
        missing.len(),
        acked.len(),
        received.len(),
        missing.first()
    );
    eprintln!("acked {}, received after restart {}", acked.len(), received.len());
    broker.terminate().await;
}

/// A bare MQTT 3.1.1 peer, for stopping a QoS 2 exchange half way.
struct Peer {
    stream: TcpStream,
    buf: BytesMut,
}

impl Peer {
    async fn connect(addr: &str, id: &str) -> (Peer, bool) {
        let stream = TcpStream::connect(addr).await.unwrap();
        let mut peer = Peer { stream, buf: BytesMut::new() };
        let connect = cauldron_proto::Connect {
            protocol: Protocol::V3_1_1,
            clean_start: false,
            keep_alive: 0,
            client_id: id.into(),
            will: None,
            username: None,
            password: None,
            properties: Default::default(),
            bridge: false,
        };
        peer.send(Packet::Connect(Box::new(connect))).await;
        match peer.recv().await {
            Packet::ConnAck(ack) if ack.code == ReasonCode::Success => (peer, ack.session_present),
            other => panic!("{other:?}"),
        }
    }

    async fn send(&mut self, packet: Packet) {
        let mut buf = BytesMut::new();
        packet.encode(Protocol::V3_1_1, &mut buf).unwrap();
        self.stream.write_all(&buf).await.unwrap();
    }

    async fn recv(&mut self) -> Packet {
        tokio::time::timeout(WAIT, async {
            loop {
                if let Some(p) = cauldron_proto::decode(&mut self.buf, Protocol::V3_1_1, usize::MAX).unwrap()
                {
                    return p;
                }
                assert!(self.stream.read_buf(&mut self.buf).await.unwrap() > 0, "closed");
            }
        })
        .await
        .expect("a packet in time")
    }

    async fn silent(&mut self) {
        let quiet =
            tokio::time::timeout(Duration::from_millis(500), self.stream.read_buf(&mut self.buf)).await;
        assert!(quiet.is_err() && self.buf.is_empty(), "unexpected bytes");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qos2_is_exactly_once_across_a_restart_mid_exchange() {
    let dir = data_dir("kill9-qos2");
    let broker = Cauldron::start(&dir, &[]).await;
    // Outbound: the subscriber has the PUBLISH and our PUBREL, but has not sent PUBCOMP.
    let (mut sub, _) = Peer::connect(&broker.addr, "q2-sub").await;
    let filters = vec![cauldron_proto::Subscription {
        filter: "x".into(),
        options: cauldron_proto::SubOptions { qos: QoS::ExactlyOnce, ..Default::default() },
    }];
    sub.send(Packet::Subscribe(cauldron_proto::Subscribe {
        packet_id: 1,
        filters,
        properties: Default::default(),
    }))
    .await;
    assert!(matches!(sub.recv().await, Packet::SubAck(_)));
    // Inbound: the publisher has our PUBREC but has not sent PUBREL.
    let (mut publisher, _) = Peer::connect(&broker.addr, "q2-pub").await;
    let mut publish = Publish::new("x", &b"once"[..]);
    (publish.qos, publish.packet_id) = (QoS::ExactlyOnce, Some(7));
    publisher.send(Packet::Publish(publish.clone())).await;
    assert!(matches!(publisher.recv().await, Packet::PubRec(a) if a.packet_id == 7));
    let Packet::Publish(delivered) = sub.recv().await else { panic!() };
    let id = delivered.packet_id.unwrap();
    sub.send(Packet::PubRec(Ack::new(id))).await;
    assert!(matches!(sub.recv().await, Packet::PubRel(a) if a.packet_id == id));
    broker.kill9().await;

    let broker = Cauldron::start(&dir, &[]).await;
    let (mut sub, present) = Peer::connect(&broker.addr, "q2-sub").await;
    assert!(present);
    // Only the PUBREL comes again: the message itself is not delivered twice.
    assert!(matches!(sub.recv().await, Packet::PubRel(a) if a.packet_id == id));
    sub.send(Packet::PubComp(Ack::new(id))).await;
    // The publisher retransmits with DUP: acknowledged, not forwarded again [MQTT-4.3.3-9].
    let (mut publisher, present) = Peer::connect(&broker.addr, "q2-pub").await;
    assert!(present);
    publish.dup = true;
    publisher.send(Packet::Publish(publish)).await;
    assert!(matches!(publisher.recv().await, Packet::PubRec(a) if a.packet_id == 7));
    publisher.send(Packet::PubRel(Ack::new(7))).await;
    assert!(matches!(publisher.recv().await, Packet::PubComp(a) if a.reason == ReasonCode::Success));
    sub.silent().await;
    broker.terminate().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_garbage_data_file_is_quarantined_and_the_broker_starts() {
    let dir = data_dir("garbage");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("cauldron.redb"), vec![0xAB; 4096]).unwrap();
    let mut broker = Cauldron::start(&dir, &[]).await;
    let (client, _) = Client::connect(Options::new(&broker.addr, "works")).await.unwrap();
    client.publish("t", "x", QoS::AtLeastOnce, true).await.unwrap();
    let quarantined: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("cauldron.redb.corrupt-"))
        .collect();
    assert_eq!(quarantined.len(), 1, "the bad file is kept aside for inspection");
    assert_eq!(std::fs::read(quarantined[0].path()).unwrap(), vec![0xAB; 4096]);
    drop(broker.logged("DATA FILE CORRUPT").await);
    broker.terminate().await;

    // A truncated file: cut a good one in half.
    let broker = Cauldron::start(&dir, &[]).await;
    broker.terminate().await;
    let file = dir.join("cauldron.redb");
    let bytes = std::fs::read(&file).unwrap();
    std::fs::write(&file, &bytes[..bytes.len() / 2]).unwrap();
    let broker = Cauldron::start(&dir, &[]).await;
    let (_client, _) = Client::connect(Options::new(&broker.addr, "still works")).await.unwrap();
    broker.terminate().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relaxed_mode_commits_pending_state_on_sigterm() {
    let dir = data_dir("relaxed");
    let broker = Cauldron::start(&dir, &["--relaxed-commit-ms", "60000"]).await;
    let (client, _) = Client::connect(Options::new(&broker.addr, "pub")).await.unwrap();
    client.publish("kept/by/shutdown", "yes", QoS::AtLeastOnce, true).await.unwrap();
    broker.terminate().await;
    let broker = Cauldron::start(&dir, &[]).await;
    let (client, mut messages) = Client::connect(Options::new(&broker.addr, "sub")).await.unwrap();
    client.subscribe("kept/#", QoS::AtLeastOnce).await.unwrap();
    assert_eq!(&next(&mut messages).await.payload[..], b"yes");
    broker.terminate().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_sessions_leave_the_store() {
    let dir = data_dir("expiry");
    let broker = Cauldron::start(&dir, &["--persistent-client-expiration", "1"]).await;
    let (sub, _) = Client::connect(persistent(&broker.addr, "forgetful")).await.unwrap();
    sub.subscribe("e/#", QoS::AtLeastOnce).await.unwrap();
    sub.disconnect().await.unwrap();
    let (publisher, _) = Client::connect(Options::new(&broker.addr, "pub")).await.unwrap();
    publisher.publish("e/1", "queued", QoS::AtLeastOnce, false).await.unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    broker.kill9().await;
    let mut broker = Cauldron::start(&dir, &[]).await;
    assert!(broker.logged("state restored").await.contains("sessions=0"), "nothing left of it in the store");
    let (sub, mut messages) = Client::connect(persistent(&broker.addr, "forgetful")).await.unwrap();
    assert!(!sub.connected().session_present);
    nothing(&mut messages).await;
    broker.terminate().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_reconnects_resumes_and_resends() {
    use cauldron_client::Reconnect;
    let dir = data_dir("reconnect");
    let fixed = format!("127.0.0.1:{}", free_port());
    let args = ["--listen", fixed.as_str(), "--sys-interval", "0"];
    let broker = Cauldron::start(&dir, &args).await;
    let reconnect = Reconnect { initial: Duration::from_millis(50), max: Duration::from_millis(500) };
    let (client, mut messages) =
        Client::connect(persistent(&fixed, "phone").reconnect(reconnect)).await.unwrap();
    client.subscribe("to/phone", QoS::AtLeastOnce).await.unwrap();
    broker.kill9().await;

    // Published while the broker is down: completes once the client is back.
    let pending = tokio::spawn({
        let client = client.clone();
        async move { client.publish("from/phone", "sent during the outage", QoS::AtLeastOnce, false).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let broker = Cauldron::start(&dir, &args).await;
    tokio::time::timeout(WAIT, pending).await.expect("publish completes after reconnect").unwrap().unwrap();

    // The subscription survived (session resumed from the store) and messages flow again.
    let (other, _) = Client::connect(Options::new(&fixed, "other")).await.unwrap();
    other.publish("to/phone", "welcome back", QoS::AtLeastOnce, false).await.unwrap();
    assert_eq!(&next(&mut messages).await.payload[..], b"welcome back");
    broker.terminate().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_session_client_restores_its_subscriptions_after_reconnect() {
    use cauldron_client::Reconnect;
    let dir = data_dir("reconnect-clean");
    let fixed = format!("127.0.0.1:{}", free_port());
    let args = ["--listen", fixed.as_str(), "--sys-interval", "0"];
    let broker = Cauldron::start(&dir, &args).await;
    let reconnect = Reconnect { initial: Duration::from_millis(50), max: Duration::from_millis(500) };
    let (client, mut messages) =
        Client::connect(Options::new(&fixed, "sensor").reconnect(reconnect)).await.unwrap();
    client.subscribe("cmd/sensor", QoS::AtLeastOnce).await.unwrap();
    broker.kill9().await;
    let broker = Cauldron::start(&dir, &args).await;
    // The server has no session for it: the client subscribes again by itself.
    let (other, _) = Client::connect(Options::new(&fixed, "other")).await.unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        other.publish("cmd/sensor", "ping", QoS::AtLeastOnce, false).await.unwrap();
        if let Ok(Some(m)) = tokio::time::timeout(Duration::from_millis(200), messages.recv()).await {
            assert_eq!(&m.payload[..], b"ping");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "subscription not restored");
    }
    broker.terminate().await;
}

/// The client acknowledges a message when the application takes it, not when it arrives: what
/// still waits unread when the application lets go is the broker's to deliver again, and a
/// QoS 2 message taken once is never handed over twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_left_unread_come_again_in_the_next_connection() {
    let dir = data_dir("unread");
    let broker = Cauldron::start(&dir, &["--sys-interval", "0"]).await;
    let (sub, mut messages) = Client::connect(persistent(&broker.addr, "reader")).await.unwrap();
    sub.subscribe("one/#", QoS::AtLeastOnce).await.unwrap();
    sub.subscribe("two/#", QoS::ExactlyOnce).await.unwrap();
    let (publisher, _) = Client::connect(Options::new(&broker.addr, "pub")).await.unwrap();
    for i in 0..10 {
        publisher.publish(format!("one/{i}"), format!("one {i}"), QoS::AtLeastOnce, false).await.unwrap();
        publisher.publish(format!("two/{i}"), format!("two {i}"), QoS::ExactlyOnce, false).await.unwrap();
    }
    let mut taken = Vec::new();
    for _ in 0..4 {
        taken.push(next(&mut messages).await.payload);
    }
    // Let the rest arrive at the client, then go without reading them.
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop((sub, messages));

    let (_sub, mut messages) = Client::connect(persistent(&broker.addr, "reader")).await.unwrap();
    let mut again = Vec::new();
    while again.len() < 16 {
        again.push(next(&mut messages).await.payload);
    }
    nothing(&mut messages).await;
    let mut all: Vec<_> =
        taken.iter().chain(&again).map(|p| String::from_utf8(p.to_vec()).unwrap()).collect();
    all.sort();
    let mut expected: Vec<_> = (0..10).flat_map(|i| [format!("one {i}"), format!("two {i}")]).collect();
    expected.sort();
    assert_eq!(all, expected, "each message once: none lost, none taken twice");
    broker.terminate().await;
}
