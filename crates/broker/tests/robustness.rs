//! Bad input closes only the offending connection; slow subscribers slow no one else.

mod common;

use cauldron_broker::Config;
use cauldron_proto::{Packet, Protocol, QoS, ReasonCode};
use common::*;

#[tokio::test]
async fn malformed_packets_close_only_that_connection() {
    let broker = TestBroker::start().await;
    let (bystander, mut messages) = broker.client("bystander").await;
    bystander.subscribe("still/here", QoS::AtLeastOnce).await.unwrap();
    let cases: &[&[u8]] = &[
        &[0x30, 3, 0, 1, b'#'],                // wildcard in topic name [MQTT-3.3.2-2]
        &[0x32, 5, 0, 1, b't', 0, 0],          // packet id 0 [MQTT-2.3.1-1]
        &[0x80, 6, 0, 1, 0, 1, b'#', 0],       // SUBSCRIBE with wrong flags [MQTT-3.8.1-1]
        &[0x82, 7, 0, 1, 0, 2, b'a', b'#', 0], // bad filter [MQTT-4.7.1-1]
        &[0x82, 2, 0, 1],                      // SUBSCRIBE without filters [MQTT-3.8.3-3]
        &[0x30, 0xff, 0xff, 0xff, 0xff, 0x01], // 5-byte remaining length
        &[0x30, 4, 0, 2, 0xc3, 0x28],          // invalid UTF-8 topic
        &[0xf0, 0],                            // AUTH at 3.1.1 (reserved type)
        &[0x20, 2, 0, 0],                      // CONNACK from a client
    ];
    for (i, bytes) in cases.iter().enumerate() {
        let (mut raw, _) = Raw::session(broker.addr, &format!("bad{i}"), true).await;
        raw.send_bytes(bytes).await;
        assert_eq!(raw.expect_closed().await, vec![], "case {i}: {bytes:?}");
    }
    assert_eq!(broker.broker.metrics.snapshot().protocol_errors, cases.len() as u64);
    let (publisher, _) = broker.client("pub").await;
    publisher.publish("still/here", "yes", QoS::AtLeastOnce, false).await.unwrap();
    assert_eq!(&next(&mut messages).await.payload[..], b"yes");
}

#[tokio::test]
async fn mqtt5_clients_are_told_why_they_are_disconnected() {
    let config = cauldron_broker::Config { reason_strings: true, sys_interval: 0, ..Default::default() };
    let broker = TestBroker::with_config(config).await;
    let (mut raw, _) = Raw::handshake(broker.addr, Raw::connect_packet("v5bad", true, Protocol::V5)).await;
    raw.send_bytes(&[0x30, 4, 0, 1, b'+', 0]).await;
    let packets = raw.expect_closed().await;
    let [Packet::Disconnect(d)] = &packets[..] else { panic!("{packets:?}") };
    assert_eq!(d.reason, ReasonCode::TopicNameInvalid);
    assert!(d.properties.reason_string.as_deref().unwrap().contains("MQTT-3.3.2-2"));
}

#[tokio::test]
async fn oversized_packets_are_refused_from_the_header() {
    let config = Config { max_packet_size: 1024, ..Config::default() };
    let broker = TestBroker::with_config(config).await;
    let (mut raw, _) = Raw::handshake(broker.addr, Raw::connect_packet("big", true, Protocol::V5)).await;
    // Announce a 100 MB PUBLISH; send only its header.
    raw.send_bytes(&[0x30, 0x80, 0x80, 0x80, 0x30]).await;
    let packets = raw.expect_closed().await;
    let [Packet::Disconnect(d)] = &packets[..] else { panic!("{packets:?}") };
    assert_eq!(d.reason, ReasonCode::PacketTooLarge);
}

#[tokio::test]
async fn random_garbage_never_takes_the_broker_down() {
    let broker = TestBroker::start().await;
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    for i in 0..200 {
        let (mut raw, _) = Raw::session(broker.addr, &format!("garbage{i}"), true).await;
        let bytes: Vec<u8> = (0..64)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed as u8
            })
            .collect();
        raw.send_bytes(&bytes).await;
        drop(raw);
    }
    let (client, mut messages) = broker.client("alive").await;
    client.subscribe("ok", QoS::AtMostOnce).await.unwrap();
    client.publish("ok", "still serving", QoS::AtMostOnce, false).await.unwrap();
    assert_eq!(&next(&mut messages).await.payload[..], b"still serving");
}

#[tokio::test]
async fn a_stalled_subscriber_does_not_slow_the_others() {
    let config = Config { max_queued_messages: 100, ..Config::default() };
    let broker = TestBroker::with_config(config).await;
    // This subscriber never reads its socket.
    let (mut stalled, _) = Raw::session(broker.addr, "stalled", true).await;
    stalled.subscribe("load", QoS::AtMostOnce).await;
    let (fast, mut messages) = broker.client("fast").await;
    fast.subscribe("load", QoS::AtMostOnce).await.unwrap();
    let (publisher, _) = broker.client("pub").await;
    let payload = vec![b'x'; 16 * 1024];
    let count = 2000; // 32 MB: far more than socket buffers hold
    let sender = tokio::spawn(async move {
        for _ in 0..count {
            // QoS 1: one message in flight at a time, so only a subscriber that stops reading
            // falls behind by a whole queue.
            publisher.publish("load", payload.clone(), QoS::AtLeastOnce, false).await.unwrap();
        }
        publisher
    });
    for _ in 0..count {
        next(&mut messages).await;
    }
    let publisher = sender.await.unwrap();
    publisher.publish("load", "done", QoS::AtLeastOnce, false).await.unwrap();
    assert!(
        broker.broker.metrics.snapshot().messages_dropped > 0,
        "the stalled subscriber's excess was dropped"
    );
}
