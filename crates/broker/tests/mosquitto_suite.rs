//! Behaviours that Mosquitto's own broker tests (eclipse/mosquitto `test/broker`) check, each
//! named after the test that found it, so that CI keeps them without the suite itself.
mod common;

use std::sync::{Arc, Condvar, Mutex};

use bytes::BytesMut;
use cauldron_broker::store::{Durability, Op, Snapshot, Store, StoreError};
use cauldron_broker::{AllowAll, Broker, Config};
use cauldron_proto::{Packet, Properties, Protocol, QoS, ReasonCode, SubOptions, Subscribe, Subscription};
use common::*;

fn subscribe(filter: String) -> Packet {
    let options = SubOptions::default();
    let filters = vec![Subscription { filter: filter.into(), options }];
    Packet::Subscribe(Subscribe { packet_id: 1, filters, properties: Properties::default() })
}

async fn connected(broker: &TestBroker, id: &str, protocol: Protocol) -> Raw {
    let (raw, ack) = Raw::handshake(broker.addr, Raw::connect_packet(id, true, protocol)).await;
    assert_eq!(ack.code, ReasonCode::Success);
    raw
}

/// 02-subscribe-long-topic: a filter of 65,535 `/` once overflowed a worker's stack and aborted
/// the process. More than 200 `/` is a malformed packet, as in Mosquitto: 3.1.1 clients are
/// closed on, MQTT 5 clients get DISCONNECT 0x81; the broker serves on.
#[tokio::test]
async fn a_filter_of_65535_levels_is_refused_and_the_broker_lives() {
    let broker = TestBroker::start().await;
    for protocol in [Protocol::V3_1_1, Protocol::V5] {
        let mut raw = connected(&broker, "long", protocol).await;
        raw.send(subscribe("/".repeat(65_535))).await;
        let packets = raw.expect_closed().await;
        match protocol {
            Protocol::V5 => assert!(
                matches!(&packets[..], [Packet::Disconnect(d)] if d.reason == ReasonCode::MalformedPacket),
                "{packets:?}"
            ),
            _ => assert!(packets.is_empty(), "{packets:?}"),
        }
    }
    // 200 `/` is the most there may be: subscribe, publish, retain and unsubscribe all work.
    let deep = "a/".repeat(200) + "z";
    let mut raw = connected(&broker, "deep", Protocol::V3_1_1).await;
    assert_eq!(raw.subscribe(&deep, QoS::AtMostOnce).await.codes, [ReasonCode::Success]);
    let mut publisher = connected(&broker, "deep-pub", Protocol::V3_1_1).await;
    let mut retained = cauldron_proto::Publish::new(deep.as_str(), b"r".to_vec());
    retained.retain = true;
    publisher.send(Packet::Publish(retained)).await;
    assert_eq!(raw.expect_publish().await.topic, deep);
    let mut late = connected(&broker, "deep-late", Protocol::V3_1_1).await;
    late.subscribe("#", QoS::AtMostOnce).await;
    assert_eq!(late.expect_publish().await.topic, deep);
    // One level more is refused when published too.
    publisher.publish(&("a/".repeat(201) + "z"), "x", QoS::AtMostOnce, None).await;
    assert!(publisher.expect_closed().await.is_empty());
    drop((raw, late));
    connected(&broker, "still-here", Protocol::V5).await;
}

/// Every v5 test starts with Mosquitto's CONNACK for its default settings: Topic Alias Maximum
/// 10, then Receive Maximum 20 (its max_inflight_messages), byte for byte.
#[tokio::test]
async fn the_v5_connack_is_mosquittos_byte_for_byte() {
    let broker = TestBroker::start().await;
    let (raw, ack) = Raw::handshake(broker.addr, Raw::connect_packet("bytes", true, Protocol::V5)).await;
    let mut bytes = BytesMut::new();
    Packet::ConnAck(ack).encode(Protocol::V5, &mut bytes).unwrap();
    assert_eq!(&bytes[..], [0x20, 9, 0, 0, 6, 0x22, 0, 10, 0x21, 0, 20]);
    drop(raw);
    // max_inflight_messages sets the Receive Maximum advertised.
    let broker = TestBroker::with_config(Config { max_inflight_messages: 5, ..Config::default() }).await;
    let (_raw, ack) = Raw::handshake(broker.addr, Raw::connect_packet("five", true, Protocol::V5)).await;
    assert_eq!(ack.properties.receive_maximum, Some(5));
}

/// A store whose commits wait until the test opens the gate, as a slow disk would.
struct Gate(Arc<(Mutex<bool>, Condvar)>);

impl Store for Gate {
    fn load(&mut self) -> Result<Snapshot, StoreError> {
        Ok(Snapshot::default())
    }
    fn commit(&mut self, _: &[Op]) -> Result<(), StoreError> {
        let (open, changed) = &*self.0;
        let _open = changed.wait_while(open.lock().unwrap(), |open| !*open).unwrap();
        Ok(())
    }
}

/// The Receive Maximum is enforced for QoS 1 too: PUBACKs held for their commit count as
/// unacknowledged, and one PUBLISH beyond the maximum gets DISCONNECT 0x93 [MQTT-3.3.4-9].
/// 3.x clients are told no maximum, so none is enforced on them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qos1_beyond_the_receive_maximum_is_disconnected_with_0x93() {
    let gate = Arc::new((Mutex::new(true), Condvar::new()));
    let config = Config { max_inflight_messages: 3, sys_interval: 0, ..Config::default() };
    let broker = Broker::open(
        config,
        Arc::new(AllowAll),
        Box::new(Gate(Arc::clone(&gate))),
        Snapshot::default(),
        Durability::Sync,
    )
    .unwrap();
    let broker = TestBroker::with_broker(broker).await;
    // A persistent subscriber: each QoS 1 message is stored for it before its PUBACK.
    let (mut sub, _) = Raw::session(broker.addr, "persistent-sub", false).await;
    sub.subscribe("t", QoS::AtLeastOnce).await;
    *gate.0.lock().unwrap() = false;
    let mut old = connected(&broker, "old", Protocol::V3_1_1).await;
    let mut raw = connected(&broker, "flood", Protocol::V5).await;
    for id in 1..=3 {
        raw.publish("t", "x", QoS::AtLeastOnce, Some(id)).await;
        old.publish("t", "x", QoS::AtLeastOnce, Some(id)).await;
    }
    raw.expect_silence().await; // three held, none refused
    old.publish("t", "x", QoS::AtLeastOnce, Some(4)).await;
    raw.publish("t", "x", QoS::AtLeastOnce, Some(4)).await;
    let packets = raw.expect_closed().await;
    assert!(
        matches!(packets.last(), Some(Packet::Disconnect(d)) if d.reason == ReasonCode::ReceiveMaximumExceeded),
        "{packets:?}"
    );
    let (open, changed) = &*gate;
    *open.lock().unwrap() = true;
    changed.notify_all();
    for id in 1..=4 {
        assert!(matches!(old.recv().await, Some(Packet::PubAck(a)) if a.packet_id == id));
    }
}

/// 04-retain-clear-multiple: retained messages for `#` come parents first, and clearing one
/// level leaves the others.
#[tokio::test]
async fn retained_messages_come_in_topic_order_parents_first() {
    let broker = TestBroker::start().await;
    let mut publisher = connected(&broker, "retainer", Protocol::V3_1_1).await;
    for topic in ["1/2/3/4/5/6/7", "1/2/3/4", "1", "0/z", "2"] {
        let mut publish = cauldron_proto::Publish::new(topic, b"retained".to_vec());
        publish.retain = true;
        publisher.send(Packet::Publish(publish)).await;
    }
    publisher.send(Packet::PingReq).await;
    assert!(matches!(publisher.recv().await, Some(Packet::PingResp)));
    let topics = |raw: Raw| async move {
        let mut raw = raw;
        raw.subscribe("#", QoS::AtMostOnce).await;
        raw.send(Packet::PingReq).await;
        let mut seen = Vec::new();
        loop {
            match raw.recv().await {
                Some(Packet::Publish(p)) => seen.push(p.topic.to_string()),
                Some(Packet::PingResp) => return seen,
                other => panic!("{other:?}"),
            }
        }
    };
    let all = topics(connected(&broker, "s1", Protocol::V3_1_1).await).await;
    assert_eq!(all, ["0/z", "1", "1/2/3/4", "1/2/3/4/5/6/7", "2"]);
    let mut clear = cauldron_proto::Publish::new("1/2/3/4", Vec::new());
    clear.retain = true;
    publisher.send(Packet::Publish(clear)).await;
    publisher.send(Packet::PingReq).await;
    assert!(matches!(publisher.recv().await, Some(Packet::PingResp)));
    let after = topics(connected(&broker, "s2", Protocol::V3_1_1).await).await;
    assert_eq!(after, ["0/z", "1", "1/2/3/4/5/6/7", "2"]);
}

/// 02-subpub-qos1-oversize-payload, 07-will-oversize-payload: message_size_limit drops bigger
/// payloads with the QoS flow completed (MQTT 5: 0x83, where Mosquitto sends 0x95, a code
/// PUBACK and PUBREC may not carry: docs/COMPATIBILITY.md), and refuses a CONNECT whose will is
/// bigger (MQTT 5: CONNACK 0x95, 3.x: 5).
#[tokio::test]
async fn message_size_limit_drops_big_publishes_and_refuses_big_wills() {
    let broker =
        TestBroker::with_config(Config { message_size_limit: 1, sys_interval: 0, ..Config::default() }).await;
    let mut sub = connected(&broker, "sub", Protocol::V3_1_1).await;
    sub.subscribe("t", QoS::ExactlyOnce).await;
    for protocol in [Protocol::V3_1_1, Protocol::V5] {
        let mut publisher = connected(&broker, "pub", protocol).await;
        publisher.publish("t", "AB", QoS::AtLeastOnce, Some(1)).await;
        let Some(Packet::PubAck(ack)) = publisher.recv().await else { panic!("PUBACK") };
        let expected =
            if protocol.is_v5() { ReasonCode::ImplementationSpecificError } else { ReasonCode::Success };
        assert_eq!(ack.reason, expected);
        publisher.publish("t", "AB", QoS::ExactlyOnce, Some(2)).await;
        let Some(Packet::PubRec(rec)) = publisher.recv().await else { panic!("PUBREC") };
        assert_eq!(rec.reason, expected);
        publisher.publish("t", "A", QoS::AtLeastOnce, Some(3)).await;
        assert!(
            matches!(publisher.recv().await, Some(Packet::PubAck(a)) if a.reason == ReasonCode::Success || !protocol.is_v5())
        );
        assert_eq!(&sub.expect_publish().await.payload[..], b"A", "only the small one arrives");
    }
    for (protocol, code) in [(Protocol::V3_1_1, 5), (Protocol::V5, ReasonCode::PacketTooLarge as u8)] {
        let mut connect = Raw::connect_packet("will", true, protocol);
        connect.will = Some(cauldron_proto::Will {
            topic: "t".into(),
            payload: bytes::Bytes::from_static(b"AB"),
            qos: QoS::AtMostOnce,
            retain: false,
            properties: Properties::default(),
        });
        let mut raw = Raw::connect(broker.addr, protocol).await;
        raw.send(Packet::Connect(Box::new(connect))).await;
        let mut bytes = BytesMut::new();
        let Some(ack) = raw.recv().await else { panic!("CONNACK") };
        ack.encode(protocol, &mut bytes).unwrap();
        assert_eq!(bytes[3], code, "{protocol:?}: {ack:?}");
        assert!(raw.expect_closed().await.is_empty());
    }
}

/// max_queued_messages 0 is no limit, as in Mosquitto (it once meant a queue of none).
#[tokio::test]
async fn max_queued_messages_0_queues_without_limit() {
    let broker =
        TestBroker::with_config(Config { max_queued_messages: 0, sys_interval: 0, ..Config::default() })
            .await;
    let (mut sub, _) = Raw::session(broker.addr, "offline", false).await;
    sub.subscribe("q", QoS::AtLeastOnce).await;
    drop(sub);
    let mut publisher = connected(&broker, "pub", Protocol::V3_1_1).await;
    for id in 1..=1500u16 {
        publisher.publish("q", "m", QoS::AtLeastOnce, Some(id)).await;
    }
    for _ in 1..=1500 {
        assert!(matches!(publisher.recv().await, Some(Packet::PubAck(_))));
    }
    let (mut sub, present) = Raw::session(broker.addr, "offline", false).await;
    assert!(present);
    for _ in 1..=1500 {
        let publish = sub.expect_publish().await;
        sub.ack(Packet::PubAck, publish.packet_id.unwrap()).await;
    }
}

/// 03-publish-dollar-v5: no client may publish into the broker's `$SYS` tree (but for a bridge's
/// `$SYS/broker/connection/<name>/state`) or to `$share/...`; MQTT 5 publishers hear 0x87.
#[tokio::test]
async fn sys_and_share_topics_are_not_for_clients_to_publish() {
    let broker = TestBroker::start().await;
    let mut sub = connected(&broker, "sub", Protocol::V3_1_1).await;
    sub.subscribe("$SYS/#", QoS::AtMostOnce).await;
    let mut raw = connected(&broker, "pub", Protocol::V5).await;
    for (id, topic, reason) in [
        (1, "$SYS/broker/uptime", ReasonCode::NotAuthorized),
        (2, "$SYS/broker/connection/me", ReasonCode::NotAuthorized),
        (3, "$share/share/topic", ReasonCode::NotAuthorized),
        (4, "$SYS/broker/connection/me/state", ReasonCode::Success),
    ] {
        raw.publish(topic, "x", QoS::AtLeastOnce, Some(id)).await;
        assert!(matches!(raw.recv().await, Some(Packet::PubAck(a)) if a.reason == reason), "{topic}");
    }
    assert_eq!(sub.expect_publish().await.topic, "$SYS/broker/connection/me/state");
    sub.expect_silence().await;
}

/// 03-publish-qos2-dup: an MQTT 5 client may resend a QoS 2 PUBLISH only on a new connection
/// [MQTT-4.4.0-1]; one resend is let pass, a second gets DISCONNECT 0x82. 3.1.1 allows
/// retransmission, so there every copy is answered.
#[tokio::test]
async fn qos2_resent_twice_on_one_mqtt5_connection_is_a_protocol_error() {
    let broker = TestBroker::start().await;
    for protocol in [Protocol::V3_1_1, Protocol::V5] {
        let mut raw = connected(&broker, "dup", protocol).await;
        for copy in 0..3 {
            let mut publish = cauldron_proto::Publish::new("topic", b"message".to_vec());
            (publish.qos, publish.packet_id, publish.dup) = (QoS::ExactlyOnce, Some(1), copy > 0);
            raw.send(Packet::Publish(publish)).await;
            if protocol.is_v5() && copy == 2 {
                let packets = raw.expect_closed().await;
                assert!(
                    matches!(&packets[..], [Packet::Disconnect(d)] if d.reason == ReasonCode::ProtocolError)
                );
            } else {
                assert!(matches!(raw.recv().await, Some(Packet::PubRec(_))), "{protocol:?} copy {copy}");
            }
        }
    }
}

/// 02-subpub-qos1-message-expiry-retain: the remaining expiry interval is forwarded in whole
/// seconds rounded up, so a message passed on at once keeps its interval [MQTT-3.3.2-6].
#[tokio::test]
async fn a_message_passed_on_at_once_keeps_its_expiry_interval() {
    let broker = TestBroker::start().await;
    let mut publisher = connected(&broker, "pub", Protocol::V5).await;
    let mut publish = cauldron_proto::Publish::new("expiring", b"m".to_vec());
    (publish.retain, publish.properties.message_expiry_interval) = (true, Some(4));
    publisher.send(Packet::Publish(publish)).await;
    publisher.send(Packet::PingReq).await;
    assert!(matches!(publisher.recv().await, Some(Packet::PingResp)));
    let mut sub = connected(&broker, "sub", Protocol::V5).await;
    let options = SubOptions { qos: QoS::AtMostOnce, ..SubOptions::default() };
    let filters = vec![Subscription { filter: "expiring".into(), options }];
    sub.send(Packet::Subscribe(Subscribe { packet_id: 1, filters, properties: Properties::default() })).await;
    assert!(matches!(sub.recv().await, Some(Packet::SubAck(_))));
    assert_eq!(sub.expect_publish().await.properties.message_expiry_interval, Some(4));
}

/// 02-subpub-qos1-nolocal: a message held back only by No Local had a subscriber, so the MQTT 5
/// PUBACK says success, not 0x10. 03-publish-c2b-disconnect-qos2: MQTT 3.1 has no session
/// present flag, so a resumed 3.1 session's CONNACK carries 0 there.
#[tokio::test]
async fn no_local_is_still_a_subscriber_and_3_1_has_no_session_present() {
    let broker = TestBroker::start().await;
    let mut raw = connected(&broker, "self", Protocol::V5).await;
    let options = SubOptions { qos: QoS::AtLeastOnce, no_local: true, ..SubOptions::default() };
    let filters = vec![Subscription { filter: "mine".into(), options }];
    raw.send(Packet::Subscribe(Subscribe { packet_id: 1, filters, properties: Properties::default() })).await;
    assert!(matches!(raw.recv().await, Some(Packet::SubAck(_))));
    raw.publish("mine", "x", QoS::AtLeastOnce, Some(2)).await;
    assert!(matches!(raw.recv().await, Some(Packet::PubAck(a)) if a.reason == ReasonCode::Success));
    raw.expect_silence().await;

    for (protocol, present) in [(Protocol::V3_1, false), (Protocol::V3_1_1, true)] {
        let connect = Raw::connect_packet("old-timer", false, protocol);
        let (first, _) = Raw::handshake(broker.addr, connect.clone()).await;
        drop(first);
        let (_again, ack) = Raw::handshake(broker.addr, connect).await;
        assert_eq!(ack.session_present, present, "{protocol:?}");
    }
}

/// 05-session-expiry-v5 (step 7): DISCONNECT with Session Expiry 0, then at once a CONNECT that
/// would resume. The two connections are served in parallel, so the CONNECT may be handled
/// before the DISCONNECT is read; the new connection lets the old one handle what it received
/// first, and finds the session ended. The client is a plain thread, so both packets are on
/// their way before the broker's tasks run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_ended_by_disconnect_is_gone_for_an_immediate_reconnect() {
    use std::io::{Read, Write};
    let broker = TestBroker::start().await;
    let addr = broker.addr;
    let encode = |packet: Packet| {
        let mut bytes = BytesMut::new();
        packet.encode(Protocol::V5, &mut bytes).unwrap();
        bytes
    };
    let mut connect = Raw::connect_packet("brief", false, Protocol::V5);
    connect.properties.session_expiry_interval = Some(30);
    let connect = encode(Packet::Connect(Box::new(connect)));
    let mut disconnect = cauldron_proto::Disconnect::with_reason(ReasonCode::Success);
    disconnect.properties.session_expiry_interval = Some(0);
    let disconnect = encode(Packet::Disconnect(disconnect));
    // Load, as in a busy broker: tasks that hold a worker for a while at a time.
    let load: Vec<_> = (0..4)
        .map(|_| {
            tokio::spawn(async {
                loop {
                    std::thread::sleep(std::time::Duration::from_micros(300));
                    tokio::task::yield_now().await;
                }
            })
        })
        .collect();
    let resumed = tokio::task::spawn_blocking(move || {
        let mut resumed = 0;
        let mut old = std::net::TcpStream::connect(addr).unwrap();
        old.write_all(&connect).unwrap();
        for _ in 0..300 {
            let mut connack = [0u8; 5];
            old.read_exact(&mut connack).unwrap();
            resumed += usize::from(connack[2] & 1 == 1);
            old.write_all(&disconnect).unwrap();
            drop(old);
            old = std::net::TcpStream::connect(addr).unwrap();
            old.write_all(&connect).unwrap();
        }
        resumed
    })
    .await
    .unwrap();
    load.iter().for_each(|task| task.abort());
    assert_eq!(resumed, 0, "sessions that outlived a DISCONNECT with expiry 0");
}

/// 04-retain-upgrade-outgoing-qos: with `upgrade_outgoing_qos`, a message published at QoS 0
/// (here a retained one, and one passed on at once) goes out at the subscription's QoS 1.
#[tokio::test]
async fn upgrade_outgoing_qos_delivers_at_the_subscriptions_qos() {
    for upgrade in [false, true] {
        let broker =
            TestBroker::with_config(Config { upgrade_outgoing_qos: upgrade, ..Config::default() }).await;
        let mut raw = connected(&broker, "upgrade", Protocol::V3_1_1).await;
        let mut retained = cauldron_proto::Publish::new("retain/qos0/test", b"r".to_vec());
        retained.retain = true;
        raw.send(Packet::Publish(retained)).await;
        raw.subscribe("retain/qos0/test", QoS::AtLeastOnce).await;
        let expected = if upgrade { QoS::AtLeastOnce } else { QoS::AtMostOnce };
        let first = raw.expect_publish().await;
        assert_eq!((first.qos, first.retain), (expected, true), "upgrade {upgrade}");
        raw.publish("retain/qos0/test", "live", QoS::AtMostOnce, None).await;
        assert_eq!(raw.expect_publish().await.qos, expected, "upgrade {upgrade}");
    }
}
