//! Will messages [MQTT-3.1.2-8 .. 3.1.2-17] and keep alive [MQTT-3.1.2-24].

mod common;

use std::time::Duration;

use cauldron_client::Client;
use cauldron_proto::{Packet, Protocol, QoS, Will};
use common::*;

async fn watcher(broker: &TestBroker) -> (Client, cauldron_client::Messages) {
    let (client, messages) = broker.client("watcher").await;
    client.subscribe("will/#", QoS::ExactlyOnce).await.unwrap();
    (client, messages)
}

fn connect_with_will(id: &str, qos: QoS, retain: bool, keep_alive: u16) -> cauldron_proto::Connect {
    let mut connect = Raw::connect_packet(id, true, Protocol::V3_1_1);
    connect.keep_alive = keep_alive;
    connect.will = Some(Will {
        topic: format!("will/{id}").into(),
        payload: format!("{id} is gone").into_bytes().into(),
        qos,
        retain,
        properties: Default::default(),
    });
    connect
}

#[tokio::test]
async fn will_is_published_when_the_socket_closes_without_disconnect() {
    let broker = TestBroker::start().await;
    let (_w, mut messages) = watcher(&broker).await;
    let (raw, _) = Raw::handshake(broker.addr, connect_with_will("abrupt", QoS::ExactlyOnce, false, 0)).await;
    drop(raw);
    let will = next(&mut messages).await;
    assert_eq!(
        (&will.topic[..], &will.payload[..], will.qos),
        ("will/abrupt", &b"abrupt is gone"[..], QoS::ExactlyOnce)
    );
}

#[tokio::test]
async fn no_will_after_disconnect() {
    let broker = TestBroker::start().await;
    let (_w, mut messages) = watcher(&broker).await;
    let (mut raw, _) =
        Raw::handshake(broker.addr, connect_with_will("polite", QoS::AtLeastOnce, false, 0)).await;
    raw.send(Packet::Disconnect(cauldron_proto::Disconnect::normal())).await;
    raw.expect_closed().await;
    nothing(&mut messages).await; // [MQTT-3.1.2-10]
}

#[tokio::test]
async fn will_on_keep_alive_timeout() {
    let broker = TestBroker::start().await;
    let (_w, mut messages) = watcher(&broker).await;
    let started = std::time::Instant::now();
    let (mut raw, _) =
        Raw::handshake(broker.addr, connect_with_will("silent", QoS::AtLeastOnce, false, 1)).await;
    // Keep alive 1 s: the server gives up after 1.5 s of silence.
    assert_eq!(raw.expect_closed().await, vec![]);
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(1400) && elapsed < Duration::from_secs(4),
        "closed after {elapsed:?}"
    );
    assert_eq!(&next(&mut messages).await.topic[..], "will/silent");
}

#[tokio::test]
async fn pings_keep_the_connection_alive() {
    let broker = TestBroker::start().await;
    let (mut raw, _) =
        Raw::handshake(broker.addr, connect_with_will("pinger", QoS::AtMostOnce, false, 1)).await;
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(600)).await;
        raw.send(Packet::PingReq).await;
        assert_eq!(raw.recv().await, Some(Packet::PingResp));
    }
}

#[tokio::test]
async fn will_on_protocol_error_with_retain_honoured() {
    let broker = TestBroker::start().await;
    let (mut raw, _) =
        Raw::handshake(broker.addr, connect_with_will("broken", QoS::AtLeastOnce, true, 0)).await;
    raw.send_bytes(&[0x36, 3, 0, 1, b't']).await; // PUBLISH with QoS 3: malformed
    raw.expect_closed().await;
    eventually(|| broker.broker.retained_count() == 1).await;
    // Retained will: a later subscriber still sees it, with the retain flag.
    let (late, mut messages) = broker.client("late").await;
    late.subscribe("will/broken", QoS::AtLeastOnce).await.unwrap();
    let will = next(&mut messages).await;
    assert!(will.retain);
    assert_eq!(will.qos, QoS::AtLeastOnce);
}

#[tokio::test]
async fn will_of_a_taken_over_connection_is_published_when_its_session_ends() {
    let broker = TestBroker::start().await;
    let (_w, mut messages) = watcher(&broker).await;
    let (_first, _) = Raw::handshake(broker.addr, connect_with_will("twin", QoS::AtMostOnce, false, 0)).await;
    let (_second, _) = Raw::session(broker.addr, "twin", true).await;
    assert_eq!(&next(&mut messages).await.topic[..], "will/twin");
    // 07-will-takeover: a persistent session taken over by a connection that resumes it is
    // the client back again; no will, as in Mosquitto.
    let mut persistent = connect_with_will("phone", QoS::AtMostOnce, false, 0);
    persistent.clean_start = false;
    let (_old, _) = Raw::handshake(broker.addr, persistent).await;
    let (_new, present) = Raw::session(broker.addr, "phone", false).await;
    assert!(present);
    nothing(&mut messages).await;
}
