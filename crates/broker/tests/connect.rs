//! CONNECT handling [MQTT-3.1] and CONNACK [MQTT-3.2] over real sockets.

mod common;

use std::time::Duration;

use cauldron_broker::Config;
use cauldron_proto::{Packet, Properties, Protocol, ReasonCode};
use common::*;

#[tokio::test]
async fn first_packet_must_be_connect() {
    let broker = TestBroker::start().await;
    let mut raw = broker.raw().await;
    raw.send(Packet::PingReq).await;
    assert_eq!(raw.expect_closed().await, vec![], "closed without an answer [MQTT-3.1.0-1]");
}

#[tokio::test]
async fn connect_must_come_within_the_connect_timeout() {
    let config = Config { connect_timeout: Duration::from_millis(200), ..Config::default() };
    let broker = TestBroker::with_config(config).await;
    let mut raw = broker.raw().await;
    let started = std::time::Instant::now();
    assert_eq!(raw.expect_closed().await, vec![]);
    assert!(started.elapsed() >= Duration::from_millis(200));
}

#[tokio::test]
async fn a_second_connect_closes_the_connection() {
    let broker = TestBroker::start().await;
    let (mut raw, _) = Raw::session(broker.addr, "twice", true).await;
    raw.send(Packet::Connect(Box::new(Raw::connect_packet("twice", true, Protocol::V3_1_1)))).await;
    assert_eq!(raw.expect_closed().await, vec![], "[MQTT-3.1.0-2]");
    assert_eq!(broker.broker.metrics.snapshot().protocol_errors, 1);
}

#[tokio::test]
async fn unsupported_protocol_level_gets_return_code_1() {
    let broker = TestBroker::start().await;
    let mut raw = broker.raw().await;
    // CONNECT "MQTT" level 6.
    raw.send_bytes(&[0x10, 13, 0, 4, b'M', b'Q', b'T', b'T', 6, 2, 0, 60, 0, 1, b'x']).await;
    let packets = raw.expect_closed().await;
    let [Packet::ConnAck(ack)] = &packets[..] else { panic!("got {packets:?}") };
    assert_eq!(ack.code, ReasonCode::UnsupportedProtocolVersion, "[MQTT-3.1.2-2]");
}

#[tokio::test]
async fn all_three_protocol_levels_connect() {
    let broker = TestBroker::start().await;
    for protocol in [Protocol::V3_1, Protocol::V3_1_1, Protocol::V5] {
        let (_raw, ack) = Raw::handshake(broker.addr, Raw::connect_packet("any", true, protocol)).await;
        assert_eq!(ack.code, ReasonCode::Success, "{protocol:?}");
    }
}

#[tokio::test]
async fn empty_client_id_rules() {
    let broker = TestBroker::start().await;
    // 3.1.1 with clean session: accepted, an id is assigned [MQTT-3.1.3-6].
    let (_raw, ack) = Raw::handshake(broker.addr, Raw::connect_packet("", true, Protocol::V3_1_1)).await;
    assert_eq!(ack.code, ReasonCode::Success);
    // 3.1.1 without clean session: identifier rejected, 0x02 [MQTT-3.1.3-8].
    let (mut raw, ack) = Raw::handshake(broker.addr, Raw::connect_packet("", false, Protocol::V3_1_1)).await;
    assert_eq!(ack.code.to_v3_connack(), 2);
    assert_eq!(raw.expect_closed().await, vec![]);
    // 3.1 always needs an id.
    let (_raw, ack) = Raw::handshake(broker.addr, Raw::connect_packet("", true, Protocol::V3_1)).await;
    assert_eq!(ack.code.to_v3_connack(), 2);
    // MQTT 5: the assigned id is returned in CONNACK.
    let (_raw, ack) = Raw::handshake(broker.addr, Raw::connect_packet("", true, Protocol::V5)).await;
    assert_eq!(ack.code, ReasonCode::Success);
    let assigned = ack.properties.assigned_client_identifier.expect("assigned client identifier");
    assert!(assigned.starts_with("auto-"));
}

#[tokio::test]
async fn client_ids_with_spaces_and_any_utf8() {
    let broker = TestBroker::start().await;
    for id in ["with space", "ünïcödé/🙂", "a+b#c"] {
        let (_raw, ack) = Raw::handshake(broker.addr, Raw::connect_packet(id, true, Protocol::V3_1_1)).await;
        assert_eq!(ack.code, ReasonCode::Success, "{id}");
    }
}

#[tokio::test]
async fn mqtt5_connack_advertises_capabilities() {
    let broker = TestBroker::start().await;
    let mut connect = Raw::connect_packet("caps", true, Protocol::V5);
    connect.keep_alive = 10;
    connect.properties = Properties { receive_maximum: Some(5), ..Properties::default() };
    let (_raw, ack) = Raw::handshake(broker.addr, connect).await;
    assert_eq!(ack.properties.topic_alias_maximum, Some(10));
    assert_eq!(ack.properties.shared_subscription_available, None, "available: the default");
    assert!(!ack.session_present);
}

#[tokio::test]
async fn mqtt5_unknown_authentication_method_is_refused() {
    let broker = TestBroker::start().await;
    let mut connect = Raw::connect_packet("auth", true, Protocol::V5);
    connect.properties.authentication_method = Some("NOPE".into());
    let (_raw, ack) = Raw::handshake(broker.addr, connect).await;
    assert_eq!(ack.code, ReasonCode::BadAuthenticationMethod);
}
