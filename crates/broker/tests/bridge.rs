//! A bridge's packets towards its remote, byte by byte where Mosquitto's bridge tests
//! (eclipse/mosquitto `test/broker/06-bridge-*`) check them: the test plays the remote broker on
//! a socket of its own, as those tests do. End-to-end bridging against real Mosquitto and
//! cauldron remotes is in `crates/cli/tests/bridge.rs`.
mod common;

use std::time::Duration;

use cauldron_broker::bridge::{self, BridgeSpec, Direction, Restart, TopicRule};
use cauldron_broker::CancellationToken;
use cauldron_proto::{Ack, ConnAck, Packet, Properties, Protocol, Publish, QoS, ReasonCode, SubAck};
use common::*;
use tokio::net::TcpListener;

fn spec(addresses: Vec<String>, protocol: Protocol) -> BridgeSpec {
    let mut spec = BridgeSpec::new("sample");
    spec.addresses = addresses;
    spec.protocol = protocol;
    spec.notifications = false;
    spec.restart = Restart::Constant(Duration::from_millis(100));
    spec.topics = vec![
        TopicRule::new("bridge/#", Direction::Both, QoS::AtLeastOnce, None, None).unwrap(),
        TopicRule::new("outward/#", Direction::Out, QoS::AtMostOnce, None, None).unwrap(),
    ];
    spec
}

/// Accepts the bridge's connection, checks its CONNECT, and answers CONNACK.
async fn accept(listener: &TcpListener, protocol: Protocol, spec: &BridgeSpec) -> Raw {
    let (stream, _) =
        tokio::time::timeout(WAIT, listener.accept()).await.expect("the bridge connects").unwrap();
    let mut remote = Raw::accepted(stream, protocol);
    let Some(Packet::Connect(connect)) = remote.recv().await else { panic!("expected CONNECT") };
    assert_eq!((connect.protocol, &connect.client_id[..]), (protocol, &spec.remote_clientid[..]));
    // try_private: a 3.x bridge says so in the protocol level; an MQTT 5 one asks for No Local.
    assert_eq!(connect.bridge, !protocol.is_v5());
    assert!(!connect.clean_start, "Mosquitto's default: cleansession false");
    if protocol.is_v5() {
        assert_eq!(connect.properties.receive_maximum, Some(20), "as Mosquitto's max_inflight_messages");
    }
    let connack =
        ConnAck { session_present: true, code: ReasonCode::Success, properties: Properties::default() };
    remote.send(Packet::ConnAck(connack)).await;
    remote
}

/// SUBACK granting QoS 1.
async fn granted(remote: &mut Raw, packet_id: u16) {
    let codes = vec![ReasonCode::GrantedQoS1];
    remote.send(Packet::SubAck(SubAck { packet_id, codes, properties: Properties::default() })).await;
}

/// Expects SUBSCRIBE (the inbound topic) then UNSUBSCRIBE (the outbound-only one), answers both,
/// and returns their packet ids.
async fn subscriptions(remote: &mut Raw, protocol: Protocol) -> (u16, u16) {
    let Some(Packet::Subscribe(subscribe)) = remote.recv().await else { panic!("expected SUBSCRIBE") };
    assert_eq!(subscribe.filters.len(), 1);
    let options = subscribe.filters[0].options;
    assert_eq!((&subscribe.filters[0].filter[..], options.qos), ("bridge/#", QoS::AtLeastOnce));
    assert_eq!((options.no_local, options.retain_as_published), (protocol.is_v5(), protocol.is_v5()));
    let Some(Packet::Unsubscribe(unsubscribe)) = remote.recv().await else { panic!("expected UNSUBSCRIBE") };
    assert_eq!(unsubscribe.filters, ["outward/#"], "bridge_attempt_unsubscribe");
    granted(remote, subscribe.packet_id).await;
    (subscribe.packet_id, unsubscribe.packet_id)
}

/// 06-bridge-b2br-disconnect-qos1, -br2b-disconnect-qos1, -fail-persist-resend-qos1/2,
/// -br2b-remapping: one packet id sequence across connections; a message left unacknowledged is
/// sent again with its id and DUP [MQTT-4.4.0-1]; a PINGREQ from the remote is answered; an
/// unknown PUBREC is released; a first address that refuses is passed over for the next.
#[tokio::test]
async fn resends_keep_their_ids_across_reconnects() {
    for protocol in [Protocol::V3_1_1, Protocol::V5] {
        let local = TestBroker::start().await;
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let refused = TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap().to_string();
        let spec = spec(vec![refused, listener.local_addr().unwrap().to_string()], protocol);
        let shutdown = CancellationToken::new();
        bridge::start(&local.broker, spec.clone(), None, shutdown.clone());

        let mut remote = accept(&listener, protocol, &spec).await;
        let (subscribe_id, unsubscribe_id) = subscriptions(&mut remote, protocol).await;
        assert_eq!((subscribe_id, unsubscribe_id), (1, 2));
        let (publisher, _) = local.client("publisher").await;
        publisher.publish("bridge/test", "m", QoS::AtLeastOnce, false).await.unwrap();
        let Some(Packet::Publish(first)) = remote.recv().await else { panic!("expected PUBLISH") };
        assert_eq!((first.packet_id, first.dup, &first.topic[..]), (Some(3), false, "bridge/test"));
        remote.send(Packet::PingReq).await;
        assert!(matches!(remote.recv().await, Some(Packet::PingResp)));
        remote.send(Packet::PubRec(Ack::new(2000))).await;
        let Some(Packet::PubRel(release)) = remote.recv().await else { panic!("expected PUBREL") };
        let not_found =
            if protocol.is_v5() { ReasonCode::PacketIdentifierNotFound } else { ReasonCode::Success };
        assert_eq!((release.packet_id, release.reason), (2000, not_found));
        // Gone before PUBACK: after reconnecting, the ids go on and the message comes again.
        drop(remote);
        let mut remote = accept(&listener, protocol, &spec).await;
        assert_eq!(subscriptions(&mut remote, protocol).await, (4, 5));
        let Some(Packet::Publish(again)) = remote.recv().await else { panic!("expected the PUBLISH again") };
        assert_eq!((again.packet_id, again.dup, &again.payload[..]), (Some(3), true, &b"m"[..]));
        remote.send(Packet::PubAck(Ack::new(3))).await;
        // Acknowledged by the remote: done at this end too.
        eventually(|| local.broker.stats().inflight == 0).await;
        // And what the remote sends comes in.
        let (watcher, mut watched) = local.client("watcher").await;
        watcher.subscribe("bridge/#", QoS::AtLeastOnce).await.unwrap();
        let mut inbound = Publish::new("bridge/in", "from the remote");
        (inbound.qos, inbound.packet_id) = (QoS::AtLeastOnce, Some(9));
        remote.send(Packet::Publish(inbound)).await;
        assert!(matches!(remote.recv().await, Some(Packet::PubAck(a)) if a.packet_id == 9));
        assert_eq!(&next(&mut watched).await.topic[..], "bridge/in");
        shutdown.cancel();
        local.stop().await;
    }
}

/// The bridge is a client of this broker's ACL, as its `local_username` (Mosquitto checks a
/// bridge's messages as its local user's): what that user may not publish is not brought in,
/// and what it may not read is not sent out.
#[tokio::test]
async fn the_local_acl_applies_to_the_bridge_as_its_local_user() {
    use cauldron_broker::auth::acl::AclFile;
    let acl =
        AclFile::parse("user bridge-user\ntopic readwrite bridge/open/#\ntopic read bridge/readonly/#\n")
            .unwrap();
    let broker = cauldron_broker::Broker::with_authorizer(
        cauldron_broker::Config::default(),
        std::sync::Arc::new(acl),
    );
    let local = TestBroker::with_broker(broker).await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut spec = spec(vec![listener.local_addr().unwrap().to_string()], Protocol::V3_1_1);
    spec.local_username = Some("bridge-user".into());
    spec.attempt_unsubscribe = false;
    spec.topics.truncate(1);
    bridge::start(&local.broker, spec.clone(), None, CancellationToken::new());
    let mut remote = accept(&listener, Protocol::V3_1_1, &spec).await;
    let Some(Packet::Subscribe(subscribe)) = remote.recv().await else { panic!("expected SUBSCRIBE") };
    granted(&mut remote, subscribe.packet_id).await;

    // An anonymous watcher here: the ACL file gives anonymous clients nothing to read, so it
    // watches through a tap instead.
    let mut tapped = local.broker.tap("bridge/#", 16);
    for topic in ["bridge/readonly/x", "bridge/open/x"] {
        remote.send(Packet::Publish(Publish::new(topic, "in"))).await;
    }
    let first = tokio::time::timeout(WAIT, tapped.recv()).await.unwrap().unwrap();
    assert_eq!(&first.message.topic[..], "bridge/open/x", "bridge/readonly is not the bridge's to publish");
    first.done(Ok(()));
    // Outbound: only what the bridge's user may read leaves.
    for topic in ["bridge/elsewhere", "bridge/readonly/y"] {
        let message = cauldron_broker::Message::new(topic.into(), "out".into(), QoS::AtMostOnce, false);
        drop(local.broker.publish(message).durable);
    }
    let Some(Packet::Publish(out)) = remote.recv().await else { panic!("expected PUBLISH") };
    assert_eq!(&out.topic[..], "bridge/readonly/y");
    remote.expect_silence().await;
}

/// `start_type lazy`: no connection until `threshold` messages wait.
#[tokio::test]
async fn a_lazy_bridge_connects_at_its_threshold() {
    let local = TestBroker::start().await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut spec = spec(vec![listener.local_addr().unwrap().to_string()], Protocol::V3_1_1);
    (spec.start, spec.threshold) = (bridge::StartType::Lazy, 3);
    bridge::start(&local.broker, spec.clone(), None, CancellationToken::new());
    let (publisher, _) = local.client("publisher").await;
    for i in 0..2 {
        publisher.publish(format!("bridge/{i}"), "m", QoS::AtLeastOnce, false).await.unwrap();
    }
    assert!(
        tokio::time::timeout(Duration::from_millis(700), listener.accept()).await.is_err(),
        "connected early"
    );
    publisher.publish("bridge/2", "m", QoS::AtLeastOnce, false).await.unwrap();
    let mut remote = accept(&listener, Protocol::V3_1_1, &spec).await;
    subscriptions(&mut remote, Protocol::V3_1_1).await;
    for i in 0..3 {
        let Some(Packet::Publish(publish)) = remote.recv().await else { panic!("expected PUBLISH") };
        assert_eq!(publish.topic, format!("bridge/{i}"));
    }
}

/// The bridge's stored session keeps what an earlier configuration subscribed to; a topic rule
/// that is gone takes its subscription with it, so nothing is queued for a remote that would
/// never get it.
#[tokio::test]
async fn topics_no_longer_configured_are_unsubscribed() {
    let local = TestBroker::start().await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let spec = spec(vec![listener.local_addr().unwrap().to_string()], Protocol::V3_1_1);
    // An earlier life of the bridge's session, subscribed to a topic the rules no longer have.
    let (earlier, _) = Raw::session(local.addr, &spec.local_clientid, false).await;
    let mut earlier = earlier;
    earlier.subscribe("stale/#", QoS::AtLeastOnce).await;
    drop(earlier);
    eventually(|| local.broker.stats().sessions_online == 0).await;
    bridge::start(&local.broker, spec.clone(), None, CancellationToken::new());
    let mut remote = accept(&listener, Protocol::V3_1_1, &spec).await;
    subscriptions(&mut remote, Protocol::V3_1_1).await;
    assert_eq!(local.broker.subscription_count(), 2, "bridge/# and outward/#, not stale/#");
    let (publisher, _) = local.client("publisher").await;
    publisher.publish("stale/x", "old", QoS::AtLeastOnce, false).await.unwrap();
    publisher.publish("bridge/y", "new", QoS::AtLeastOnce, false).await.unwrap();
    let Some(Packet::Publish(only)) = remote.recv().await else { panic!("expected PUBLISH") };
    assert_eq!(&only.topic[..], "bridge/y");
    assert_eq!(local.broker.stats().queued_messages, 0, "nothing waits under the stale topic");
}
