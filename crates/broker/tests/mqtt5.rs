//! MQTT 5.0 features, each against the broker over a real socket.

mod common;

use std::time::Duration;

use cauldron_broker::{Config, Redirect};
use cauldron_client::Client;
use cauldron_proto::{
    Connect, Disconnect, Packet, Properties, Protocol, Publish, QoS, ReasonCode, RetainHandling, SubOptions,
    Subscribe, Subscription, Unsubscribe,
};
use common::*;

fn v5(id: &str) -> Connect {
    Raw::connect_packet(id, true, Protocol::V5)
}

fn persistent(id: &str, expiry: u32) -> Connect {
    let mut connect = Raw::connect_packet(id, false, Protocol::V5);
    connect.properties.session_expiry_interval = Some(expiry);
    connect
}

async fn raw_v5(broker: &TestBroker, connect: Connect) -> (Raw, cauldron_proto::ConnAck) {
    let (raw, ack) = Raw::handshake(broker.addr, connect).await;
    assert_eq!(ack.code, ReasonCode::Success, "{ack:?}");
    (raw, ack)
}

async fn subscribe_with(
    raw: &mut Raw,
    filter: &str,
    options: SubOptions,
    id: Option<u32>,
) -> Vec<ReasonCode> {
    let properties =
        Properties { subscription_identifiers: id.into_iter().collect(), ..Properties::default() };
    let filters = vec![Subscription { filter: filter.into(), options }];
    raw.send(Packet::Subscribe(Subscribe { packet_id: 9, filters, properties })).await;
    match raw.recv().await {
        Some(Packet::SubAck(ack)) => ack.codes,
        other => panic!("expected SUBACK, got {other:?}"),
    }
}

fn qos(qos: QoS) -> SubOptions {
    SubOptions { qos, ..SubOptions::default() }
}

fn fast_expiry() -> Config {
    Config { expiry_check_interval: Duration::from_millis(50), ..Config::default() }
}

async fn v5_client(broker: &TestBroker, id: &str) -> (Client, cauldron_client::Messages) {
    Client::connect(broker.options(id).protocol(Protocol::V5)).await.unwrap()
}

async fn publish_v5(client: &Client, publish: Publish) {
    client.publish_packet(publish).await.unwrap();
}

fn message(topic: &str, payload: &str, qos: QoS) -> Publish {
    let mut publish = Publish::new(topic, payload.as_bytes().to_vec());
    publish.qos = qos;
    publish
}

// --- Session expiry -------------------------------------------------------------------------

#[tokio::test]
async fn session_expiry_interval_decides_how_long_a_session_outlives_its_connection() {
    let broker = TestBroker::with_config(fast_expiry()).await;
    for (id, expiry, present_after_wait) in
        [("zero", 0, false), ("short", 1, false), ("forever", u32::MAX, true), ("long", 600, true)]
    {
        let (mut raw, ack) = raw_v5(&broker, persistent(id, expiry)).await;
        assert!(!ack.session_present);
        subscribe_with(&mut raw, "expiry/#", qos(QoS::AtLeastOnce), None).await;
        raw.send(Packet::Disconnect(Disconnect::normal())).await;
        raw.expect_closed().await;
        let _ = present_after_wait;
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for (id, expiry, present) in
        [("zero", 0, false), ("short", 1, false), ("forever", u32::MAX, true), ("long", 600, true)]
    {
        let (_raw, ack) = raw_v5(&broker, persistent(id, expiry)).await;
        assert_eq!(ack.session_present, present, "{id}: session present must be exact [MQTT-3.2.2-2]");
    }
}

#[tokio::test]
async fn an_expired_session_takes_its_queued_messages_with_it() {
    let broker = TestBroker::with_config(fast_expiry()).await;
    let (mut raw, _) = raw_v5(&broker, persistent("gone", 1)).await;
    subscribe_with(&mut raw, "q", qos(QoS::AtLeastOnce), None).await;
    drop(raw);
    let (publisher, _) = v5_client(&broker, "pub").await;
    publish_v5(&publisher, message("q", "queued", QoS::AtLeastOnce)).await;
    eventually(|| broker.broker.session_count() == 1).await; // only the publisher is left
    assert_eq!(broker.broker.subscription_count(), 0);
    let (mut raw, ack) = raw_v5(&broker, persistent("gone", 1)).await;
    assert!(!ack.session_present);
    raw.expect_silence().await;
}

#[tokio::test]
async fn disconnect_can_change_the_session_expiry_but_not_from_zero() {
    let broker = TestBroker::with_config(fast_expiry()).await;
    let (mut raw, _) = raw_v5(&broker, persistent("lower", 600)).await;
    let mut disconnect = Disconnect::normal();
    disconnect.properties.session_expiry_interval = Some(0);
    raw.send(Packet::Disconnect(disconnect)).await;
    raw.expect_closed().await;
    let (_raw, ack) = raw_v5(&broker, persistent("lower", 600)).await;
    assert!(!ack.session_present, "expiry lowered to 0 at DISCONNECT ends the session");

    let (mut raw, _) = raw_v5(&broker, persistent("raise", 0)).await;
    let mut disconnect = Disconnect::normal();
    disconnect.properties.session_expiry_interval = Some(60);
    raw.send(Packet::Disconnect(disconnect)).await;
    let packets = raw.expect_closed().await;
    let [Packet::Disconnect(d)] = &packets[..] else { panic!("{packets:?}") };
    assert_eq!(d.reason, ReasonCode::ProtocolError, "[MQTT-3.14.2-2]");
}

// --- Message expiry -------------------------------------------------------------------------

#[tokio::test]
async fn message_expiry_is_counted_down_and_expired_messages_are_never_delivered() {
    let broker = TestBroker::start().await;
    let (mut raw, _) = raw_v5(&broker, persistent("expiring", 600)).await;
    subscribe_with(&mut raw, "m/#", qos(QoS::AtLeastOnce), None).await;
    drop(raw);
    let (publisher, _) = v5_client(&broker, "pub").await;
    let mut short = message("m/short", "too late", QoS::AtLeastOnce);
    short.properties.message_expiry_interval = Some(1);
    publish_v5(&publisher, short).await;
    let mut long = message("m/long", "in time", QoS::AtLeastOnce);
    long.properties.message_expiry_interval = Some(100);
    publish_v5(&publisher, long).await;
    let mut retained = message("m/retained", "stale", QoS::AtLeastOnce);
    (retained.retain, retained.properties.message_expiry_interval) = (true, Some(1));
    publish_v5(&publisher, retained).await;
    tokio::time::sleep(Duration::from_millis(2100)).await;

    let (mut raw, ack) = raw_v5(&broker, persistent("expiring", 600)).await;
    assert!(ack.session_present);
    let got = raw.expect_publish().await;
    assert_eq!(&got.topic[..], "m/long");
    let remaining = got.properties.message_expiry_interval.unwrap();
    assert!(
        (95..100).contains(&remaining),
        "forwarded with the remaining time, got {remaining} [MQTT-3.3.2-6]"
    );
    raw.expect_silence().await;
    let (sub, mut messages) = v5_client(&broker, "late").await;
    sub.subscribe("m/retained", QoS::AtLeastOnce).await.unwrap();
    nothing(&mut messages).await; // expired retained message is not sent
}

// --- Topic aliases --------------------------------------------------------------------------

#[tokio::test]
async fn topic_aliases_from_the_client() {
    let broker = TestBroker::start().await;
    let (sub, mut messages) = v5_client(&broker, "sub").await;
    sub.subscribe("alias/#", QoS::AtMostOnce).await.unwrap();
    let (mut raw, ack) = raw_v5(&broker, v5("aliaser")).await;
    assert_eq!(ack.properties.topic_alias_maximum, Some(10));
    let mut first = message("alias/long/topic", "1", QoS::AtMostOnce);
    first.properties.topic_alias = Some(3);
    raw.send(Packet::Publish(first)).await;
    let mut second = message("", "2", QoS::AtMostOnce);
    second.properties.topic_alias = Some(3);
    raw.send(Packet::Publish(second)).await;
    for payload in ["1", "2"] {
        let m = next(&mut messages).await;
        assert_eq!((&m.topic[..], &m.payload[..]), ("alias/long/topic", payload.as_bytes()));
        assert_eq!(m.properties.topic_alias, None, "aliases are per connection, not forwarded");
    }
    let mut beyond = message("alias/x", "3", QoS::AtMostOnce);
    beyond.properties.topic_alias = Some(11);
    raw.send(Packet::Publish(beyond)).await;
    let packets = raw.expect_closed().await;
    let [Packet::Disconnect(d)] = &packets[..] else { panic!("{packets:?}") };
    assert_eq!(d.reason, ReasonCode::TopicAliasInvalid);
}

#[tokio::test]
async fn topic_aliases_towards_a_client_that_allows_them() {
    let broker = TestBroker::start().await;
    let mut connect = v5("alias-receiver");
    connect.properties.topic_alias_maximum = Some(1);
    let (mut raw, _) = raw_v5(&broker, connect).await;
    subscribe_with(&mut raw, "a/#", qos(QoS::AtMostOnce), None).await;
    let (publisher, _) = v5_client(&broker, "pub").await;
    for topic in ["a/one", "a/one", "a/two"] {
        publish_v5(&publisher, message(topic, topic, QoS::AtMostOnce)).await;
    }
    let first = raw.expect_publish().await;
    assert_eq!((&first.topic[..], first.properties.topic_alias), ("a/one", Some(1)));
    let second = raw.expect_publish().await;
    assert_eq!((&second.topic[..], second.properties.topic_alias), ("", Some(1)));
    let third = raw.expect_publish().await;
    assert_eq!((&third.topic[..], third.properties.topic_alias), ("a/two", None), "only one alias allowed");
}

// --- Subscription options and identifiers ---------------------------------------------------

#[tokio::test]
async fn no_local_and_retain_as_published() {
    let broker = TestBroker::start().await;
    let (mut raw, _) = raw_v5(&broker, v5("self")).await;
    let no_local = SubOptions { no_local: true, ..qos(QoS::AtMostOnce) };
    subscribe_with(&mut raw, "own", no_local, None).await;
    let rap = SubOptions { retain_as_published: true, ..qos(QoS::AtMostOnce) };
    subscribe_with(&mut raw, "rap", rap, None).await;
    raw.publish("own", "mine", QoS::AtMostOnce, None).await;
    let (publisher, _) = v5_client(&broker, "pub").await;
    let mut retained = message("rap", "kept", QoS::AtMostOnce);
    retained.retain = true;
    publish_v5(&publisher, retained).await;
    let got = raw.expect_publish().await;
    assert_eq!((&got.topic[..], got.retain), ("rap", true), "own message not echoed; retain flag kept");
    raw.expect_silence().await;
}

#[tokio::test]
async fn retain_handling_0_1_2() {
    let broker = TestBroker::start().await;
    let (publisher, _) = v5_client(&broker, "pub").await;
    let mut retained = message("rh", "kept", QoS::AtMostOnce);
    retained.retain = true;
    publish_v5(&publisher, retained).await;
    let (mut raw, _) = raw_v5(&broker, v5("rh")).await;
    let on_new = SubOptions { retain_handling: RetainHandling::OnNewSubscribe, ..qos(QoS::AtMostOnce) };
    subscribe_with(&mut raw, "rh", on_new, None).await;
    assert!(raw.expect_publish().await.retain, "1: sent for a new subscription");
    subscribe_with(&mut raw, "rh", on_new, None).await;
    raw.expect_silence().await; // 1: not for an existing one
    let never = SubOptions { retain_handling: RetainHandling::Never, ..qos(QoS::AtMostOnce) };
    subscribe_with(&mut raw, "rh/#", never, None).await;
    raw.expect_silence().await; // 2: never
    subscribe_with(&mut raw, "rh", qos(QoS::AtMostOnce), None).await;
    assert!(raw.expect_publish().await.retain, "0: on every subscribe");
}

#[tokio::test]
async fn every_matching_subscription_identifier_is_sent() {
    let broker = TestBroker::start().await;
    let (mut raw, _) = raw_v5(&broker, v5("ids")).await;
    subscribe_with(&mut raw, "s/+", qos(QoS::AtMostOnce), Some(1)).await;
    subscribe_with(&mut raw, "s/#", qos(QoS::AtLeastOnce), Some(268_435_455)).await;
    subscribe_with(&mut raw, "s/x", qos(QoS::AtMostOnce), None).await;
    let (publisher, _) = v5_client(&broker, "pub").await;
    publish_v5(&publisher, message("s/x", "x", QoS::AtLeastOnce)).await;
    let got = raw.expect_publish().await;
    let mut ids = got.properties.subscription_identifiers.clone();
    ids.sort();
    assert_eq!(ids, [1, 268_435_455]);
    assert_eq!(got.qos, QoS::AtLeastOnce);
    raw.expect_silence().await;
}

// --- Shared subscriptions -------------------------------------------------------------------

#[tokio::test]
async fn shared_subscription_spreads_messages_across_members() {
    let broker = TestBroker::start().await;
    let (publisher, _) = v5_client(&broker, "pub").await;
    let mut retained = message("work/old", "retained", QoS::AtMostOnce);
    retained.retain = true;
    publish_v5(&publisher, retained).await;
    let (a, mut a_messages) = v5_client(&broker, "a").await;
    let (b, mut b_messages) = v5_client(&broker, "b").await;
    a.subscribe("$share/workers/work/#", QoS::AtLeastOnce).await.unwrap();
    b.subscribe("$share/workers/work/#", QoS::AtLeastOnce).await.unwrap();
    nothing(&mut a_messages).await; // no retained messages on a shared subscribe
    for i in 0..20 {
        publish_v5(&publisher, message("work/job", &i.to_string(), QoS::AtLeastOnce)).await;
    }
    let mut got = Vec::new();
    let (mut from_a, mut from_b) = (0, 0);
    while got.len() < 20 {
        tokio::select! {
            Some(m) = a_messages.recv() => { got.push(m); from_a += 1; }
            Some(m) = b_messages.recv() => { got.push(m); from_b += 1; }
            _ = tokio::time::sleep(WAIT) => panic!("only {} of 20 arrived", got.len()),
        }
    }
    assert_eq!((from_a, from_b), (10, 10), "round robin between two members");
    let mut payloads: Vec<u32> =
        got.iter().map(|m| std::str::from_utf8(&m.payload).unwrap().parse().unwrap()).collect();
    payloads.sort();
    assert_eq!(payloads, (0..20).collect::<Vec<_>>(), "each exactly once");
    nothing(&mut a_messages).await;
}

#[tokio::test]
async fn unacknowledged_shared_messages_of_a_leaving_member_go_to_another() {
    let broker = TestBroker::start().await;
    let (mut raw, _) = raw_v5(&broker, persistent("leaver", 600)).await;
    subscribe_with(&mut raw, "$share/g/jobs", qos(QoS::AtLeastOnce), None).await;
    let (publisher, _) = v5_client(&broker, "pub").await;
    publish_v5(&publisher, message("jobs", "job 1", QoS::AtLeastOnce)).await;
    let got = raw.expect_publish().await;
    assert_eq!(&got.payload[..], b"job 1");
    let (stayer, mut messages) = v5_client(&broker, "stayer").await;
    stayer.subscribe("$share/g/jobs", QoS::AtLeastOnce).await.unwrap();
    drop(raw); // leaves without PUBACK
    assert_eq!(&next(&mut messages).await.payload[..], b"job 1");

    // The persistent member keeps its share: back online, it gets messages again.
    let (mut raw, ack) = raw_v5(&broker, persistent("leaver", 600)).await;
    assert!(ack.session_present);
    for i in 0..4 {
        publish_v5(&publisher, message("jobs", &format!("more {i}"), QoS::AtLeastOnce)).await;
    }
    let again = raw.expect_publish().await;
    assert!(again.payload.starts_with(b"more"));
}

#[tokio::test]
async fn shared_subscriptions_can_be_disabled() {
    let config = Config {
        shared_subscription_available: false,
        subscription_identifier_available: false,
        wildcard_subscription_available: false,
        ..Config::default()
    };
    let broker = TestBroker::with_config(config).await;
    let (mut raw, ack) = raw_v5(&broker, v5("refused")).await;
    assert_eq!(ack.properties.shared_subscription_available, Some(false));
    assert_eq!(ack.properties.subscription_identifiers_available, Some(false));
    assert_eq!(ack.properties.wildcard_subscription_available, Some(false));
    assert_eq!(
        subscribe_with(&mut raw, "$share/g/t", qos(QoS::AtMostOnce), None).await,
        [ReasonCode::SharedSubscriptionsNotSupported]
    );
    assert_eq!(
        subscribe_with(&mut raw, "t", qos(QoS::AtMostOnce), Some(5)).await,
        [ReasonCode::SubscriptionIdentifiersNotSupported]
    );
    assert_eq!(
        subscribe_with(&mut raw, "t/+", qos(QoS::AtMostOnce), None).await,
        [ReasonCode::WildcardSubscriptionsNotSupported]
    );
    assert_eq!(subscribe_with(&mut raw, "t", qos(QoS::AtMostOnce), None).await, [ReasonCode::Success]);
}

// --- Flow control and sizes -----------------------------------------------------------------

#[tokio::test]
async fn never_more_unacknowledged_messages_than_the_clients_receive_maximum() {
    let broker = TestBroker::start().await;
    let mut connect = v5("small-window");
    connect.properties.receive_maximum = Some(2);
    let (mut raw, _) = raw_v5(&broker, connect).await;
    subscribe_with(&mut raw, "f", qos(QoS::ExactlyOnce), None).await;
    let (publisher, _) = v5_client(&broker, "pub").await;
    for i in 0..5 {
        publish_v5(&publisher, message("f", &i.to_string(), QoS::ExactlyOnce)).await;
    }
    let first = raw.expect_publish().await;
    let _second = raw.expect_publish().await;
    raw.expect_silence().await;
    raw.ack(Packet::PubRec, first.packet_id.unwrap()).await;
    assert!(matches!(raw.recv().await, Some(Packet::PubRel(_))));
    raw.expect_silence().await; // still in flight until PUBCOMP
    raw.ack(Packet::PubComp, first.packet_id.unwrap()).await;
    assert_eq!(&raw.expect_publish().await.payload[..], b"2");
}

#[tokio::test]
async fn a_client_exceeding_our_receive_maximum_is_disconnected_with_0x93() {
    let config = Config { max_inflight_messages: 2, ..Config::default() };
    let broker = TestBroker::with_config(config).await;
    let (mut raw, ack) = raw_v5(&broker, v5("flooder")).await;
    assert_eq!(ack.properties.receive_maximum, Some(2));
    for id in 1..=3 {
        raw.publish("flood", "x", QoS::ExactlyOnce, Some(id)).await;
    }
    let packets = raw.expect_closed().await;
    assert!(
        matches!(packets.last(), Some(Packet::Disconnect(d)) if d.reason == ReasonCode::ReceiveMaximumExceeded),
        "{packets:?}"
    );
}

#[tokio::test]
async fn messages_larger_than_the_clients_maximum_packet_size_are_not_sent() {
    let broker = TestBroker::start().await;
    let mut connect = v5("small-packets");
    connect.properties.maximum_packet_size = Some(64);
    let (mut raw, _) = raw_v5(&broker, connect).await;
    subscribe_with(&mut raw, "size", qos(QoS::AtLeastOnce), None).await;
    let (publisher, _) = v5_client(&broker, "pub").await;
    publish_v5(&publisher, message("size", &"x".repeat(100), QoS::AtLeastOnce)).await;
    publish_v5(&publisher, message("size", "small", QoS::AtLeastOnce)).await;
    assert_eq!(&raw.expect_publish().await.payload[..], b"small", "[MQTT-3.1.2-25]");
    assert_eq!(broker.broker.metrics.snapshot().messages_dropped, 1);
}

// --- Properties and reason codes ------------------------------------------------------------

#[tokio::test]
async fn message_properties_are_forwarded_unchanged_and_in_order() {
    let broker = TestBroker::start().await;
    let (sub, mut messages) = v5_client(&broker, "sub").await;
    sub.subscribe("props", QoS::AtLeastOnce).await.unwrap();
    let (publisher, _) = v5_client(&broker, "pub").await;
    let mut publish = message("props", "{}", QoS::AtLeastOnce);
    publish.properties = Properties {
        payload_format_indicator: Some(true),
        content_type: Some("application/json".into()),
        response_topic: Some("reply/here".into()),
        correlation_data: Some(vec![0, 1, 2, 255].into()),
        user_properties: vec![("z".into(), "1".into()), ("a".into(), "2".into()), ("z".into(), "3".into())],
        ..Properties::default()
    };
    let expected = publish.properties.clone();
    publish_v5(&publisher, publish).await;
    assert_eq!(next(&mut messages).await.properties, expected);
}

#[tokio::test]
async fn reason_codes_on_acks() {
    let broker = TestBroker::start().await;
    let (mut raw, _) = raw_v5(&broker, v5("codes")).await;
    raw.send(Packet::Unsubscribe(Unsubscribe {
        packet_id: 3,
        filters: vec!["never/subscribed".into()],
        properties: Properties::default(),
    }))
    .await;
    let Some(Packet::UnsubAck(ack)) = raw.recv().await else { panic!() };
    assert_eq!(ack.codes, [ReasonCode::NoSubscriptionExisted]);
    raw.publish("nobody", "x", QoS::AtLeastOnce, Some(4)).await;
    let Some(Packet::PubAck(ack)) = raw.recv().await else { panic!() };
    assert_eq!(ack.reason, ReasonCode::NoMatchingSubscribers);
    raw.ack(Packet::PubRel, 77).await;
    let Some(Packet::PubComp(ack)) = raw.recv().await else { panic!() };
    assert_eq!(ack.reason, ReasonCode::PacketIdentifierNotFound);
}

#[tokio::test]
async fn server_disconnect_reasons_and_reason_strings_only_on_request() {
    let broker =
        TestBroker::with_config(Config { reason_strings: true, sys_interval: 0, ..Config::default() }).await;
    let (mut first, _) = raw_v5(&broker, v5("taken")).await;
    let (_second, _) = raw_v5(&broker, v5("taken")).await;
    let packets = first.expect_closed().await;
    let [Packet::Disconnect(d)] = &packets[..] else { panic!("{packets:?}") };
    assert_eq!(d.reason, ReasonCode::SessionTakenOver);
    assert!(d.properties.reason_string.is_some());

    let mut quiet = v5("quiet");
    quiet.keep_alive = 1;
    quiet.properties.request_problem_information = Some(false);
    let (mut raw, _) = raw_v5(&broker, quiet).await;
    let packets = raw.expect_closed().await;
    let [Packet::Disconnect(d)] = &packets[..] else { panic!("{packets:?}") };
    assert_eq!(d.reason, ReasonCode::KeepAliveTimeout);
    assert_eq!(d.properties.reason_string, None, "[MQTT-3.1.2-29]");

    let (mut raw, _) = raw_v5(&broker, v5("shutdown")).await;
    broker.stop().await;
    let packets = raw.expect_closed().await;
    assert!(matches!(&packets[..], [Packet::Disconnect(d)] if d.reason == ReasonCode::ServerShuttingDown));
}

#[tokio::test]
async fn maximum_qos_and_retain_available_are_enforced() {
    let config = Config { max_qos: QoS::AtLeastOnce, retain_available: false, ..Config::default() };
    let broker = TestBroker::with_config(config).await;
    let (mut raw, ack) = raw_v5(&broker, v5("limited")).await;
    assert_eq!(ack.properties.maximum_qos, Some(QoS::AtLeastOnce));
    assert_eq!(ack.properties.retain_available, Some(false));
    assert_eq!(subscribe_with(&mut raw, "t", qos(QoS::ExactlyOnce), None).await, [ReasonCode::GrantedQoS1]);
    raw.publish("t", "x", QoS::ExactlyOnce, Some(1)).await;
    let packets = raw.expect_closed().await;
    assert!(
        matches!(packets.last(), Some(Packet::Disconnect(d)) if d.reason == ReasonCode::QoSNotSupported),
        "{packets:?}"
    );
    let (mut raw, _) = raw_v5(&broker, v5("retainer")).await;
    let mut retained = message("t", "x", QoS::AtMostOnce);
    retained.retain = true;
    raw.send(Packet::Publish(retained)).await;
    let packets = raw.expect_closed().await;
    assert!(
        matches!(packets.last(), Some(Packet::Disconnect(d)) if d.reason == ReasonCode::RetainNotSupported),
        "{packets:?}"
    );
}

// --- Will delay -----------------------------------------------------------------------------

fn with_delayed_will(id: &str, delay: u32) -> Connect {
    let mut connect = persistent(id, 60);
    let mut properties = Properties { will_delay_interval: Some(delay), ..Properties::default() };
    properties.content_type = Some("text/plain".into());
    connect.will = Some(cauldron_proto::Will {
        topic: "wills".into(),
        payload: id.as_bytes().to_vec().into(),
        qos: QoS::AtLeastOnce,
        retain: false,
        properties,
    });
    connect
}

#[tokio::test]
async fn will_delay_and_its_cancellation_by_a_timely_return() {
    let broker = TestBroker::start().await;
    let (watcher, mut wills) = v5_client(&broker, "watcher").await;
    watcher.subscribe("wills", QoS::AtLeastOnce).await.unwrap();

    let (raw, _) = raw_v5(&broker, with_delayed_will("late", 1)).await;
    drop(raw);
    nothing(&mut wills).await; // not before the delay
    let will = next(&mut wills).await;
    assert_eq!(&will.payload[..], b"late");
    assert_eq!(will.properties.content_type.as_deref(), Some("text/plain"), "will properties carried");
    assert_eq!(will.properties.will_delay_interval, None);

    let (raw, _) = raw_v5(&broker, with_delayed_will("back", 2)).await;
    drop(raw);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (_raw, ack) = raw_v5(&broker, persistent("back", 60)).await;
    assert!(ack.session_present);
    tokio::time::sleep(Duration::from_millis(2200)).await;
    nothing(&mut wills).await; // [MQTT-3.1.3-9]

    // 07-will-delay-recover: returning with a clean start ends the old session, but the client
    // is back within the delay, so there is still no will [MQTT-3.1.2-8].
    let (raw, _) = raw_v5(&broker, with_delayed_will("fresh", 1)).await;
    drop(raw);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut fresh = persistent("fresh", 60);
    fresh.clean_start = true;
    let (_raw, ack) = raw_v5(&broker, fresh).await;
    assert!(!ack.session_present);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    nothing(&mut wills).await;
    // The same while the old connection is still open: taken over, it parks no will.
    let (_old, _) = raw_v5(&broker, with_delayed_will("twice", 1)).await;
    let mut again = with_delayed_will("twice", 1);
    again.clean_start = true;
    let (_new, ack) = raw_v5(&broker, again).await;
    assert!(!ack.session_present);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    nothing(&mut wills).await;

    // A session that ends with its connection (expiry 0) ends the wait at once: "whichever
    // happens first" (MQTT 5.0 section 3.1.3.2.2); Mosquitto waits (07-will-delay).
    let mut brief = with_delayed_will("brief", 30);
    brief.properties.session_expiry_interval = None;
    let (raw, _) = raw_v5(&broker, brief).await;
    drop(raw);
    assert_eq!(&next(&mut wills).await.payload[..], b"brief");
}

// --- Server redirection ---------------------------------------------------------------------

#[tokio::test]
async fn server_redirection() {
    let redirect = Redirect { reference: "other.example:1883".into(), permanent: false };
    let broker = TestBroker::with_config(Config { redirect: Some(redirect), ..Config::default() }).await;
    let (_raw, ack) = Raw::handshake(broker.addr, v5("moving")).await;
    assert_eq!(ack.code, ReasonCode::UseAnotherServer);
    assert_eq!(ack.properties.server_reference.as_deref(), Some("other.example:1883"));
    let (_raw, ack) = Raw::handshake(broker.addr, Raw::connect_packet("old", true, Protocol::V3_1_1)).await;
    assert_eq!(ack.code.to_v3_connack(), 3, "3.1.1 clients: server unavailable");

    // Moving connected clients during maintenance.
    let broker = TestBroker::start().await;
    let (mut connected, _) = raw_v5(&broker, v5("connected")).await;
    broker.broker.redirect(Some(Redirect { reference: "new.example".into(), permanent: true }));
    let packets = connected.expect_closed().await;
    let [Packet::Disconnect(d)] = &packets[..] else { panic!("{packets:?}") };
    assert_eq!(
        (d.reason, d.properties.server_reference.as_deref()),
        (ReasonCode::ServerMoved, Some("new.example"))
    );
    let (_raw, ack) = Raw::handshake(broker.addr, v5("late")).await;
    assert_eq!(ack.code, ReasonCode::ServerMoved);
    broker.broker.redirect(None);
    raw_v5(&broker, v5("back to normal")).await;
}

// --- Enhanced authentication ----------------------------------------------------------------

fn scram_config() -> Config {
    let mut config = Config::default();
    let credential = cauldron_proto::scram::Credential::generate(b"s3cret").unwrap();
    config.scram_users.insert("alice".into(), credential);
    config
}

#[tokio::test]
async fn scram_sha_256_at_connect() {
    let broker = TestBroker::with_config(scram_config()).await;
    let (client, _) =
        Client::connect(broker.options("alice-phone").protocol(Protocol::V5).scram("alice", "s3cret"))
            .await
            .unwrap();
    let props = &client.connected().properties;
    assert_eq!(props.authentication_method.as_deref(), Some("SCRAM-SHA-256"));
    // The client verified the server's signature in that data before accepting the CONNACK.
    assert!(props.authentication_data.as_ref().is_some_and(|d| d.starts_with(b"v=")));

    let refused =
        Client::connect(broker.options("mallory").protocol(Protocol::V5).scram("alice", "guess")).await;
    assert!(
        matches!(refused, Err(cauldron_client::Error::Refused(ReasonCode::BadUserNameOrPassword))),
        "{:?}",
        refused.err()
    );
    let unknown = Client::connect(broker.options("nobody").protocol(Protocol::V5).scram("bob", "x")).await;
    assert!(matches!(unknown, Err(cauldron_client::Error::Refused(ReasonCode::BadUserNameOrPassword))));
    assert_eq!(broker.broker.metrics.snapshot().auth_failures, 2);

    let mut other = v5("other-method");
    other.properties.authentication_method = Some("KERBEROS".into());
    let (_raw, ack) = Raw::handshake(broker.addr, other).await;
    assert_eq!(ack.code, ReasonCode::BadAuthenticationMethod);
}

/// Runs a SCRAM exchange over AUTH packets on a live connection.
async fn reauthenticate(raw: &mut Raw, password: &[u8]) -> Vec<Packet> {
    use cauldron_proto::scram::ClientExchange;
    let auth = |reason, data: Vec<u8>| {
        let properties = Properties {
            authentication_method: Some("SCRAM-SHA-256".into()),
            authentication_data: Some(data.into()),
            ..Properties::default()
        };
        Packet::Auth(cauldron_proto::Auth { reason, properties })
    };
    let (exchange, first) = ClientExchange::start("alice", password).unwrap();
    raw.send(auth(ReasonCode::ReAuthenticate, first)).await;
    let Some(Packet::Auth(challenge)) = raw.recv().await else { panic!("expected AUTH") };
    assert_eq!(challenge.reason, ReasonCode::ContinueAuthentication);
    let (verifier, last) = exchange.finish(&challenge.properties.authentication_data.unwrap()).unwrap();
    raw.send(auth(ReasonCode::ContinueAuthentication, last)).await;
    let mut got = Vec::new();
    if let Some(packet) = raw.recv().await {
        if let Packet::Auth(done) = &packet {
            verifier.verify(done.properties.authentication_data.as_ref().unwrap()).unwrap();
        }
        got.push(packet);
    }
    got
}

#[tokio::test]
async fn re_authentication_on_a_live_connection() {
    let broker = TestBroker::with_config(scram_config()).await;
    let mut connect = v5("reauth");
    let (exchange, first) = cauldron_proto::scram::ClientExchange::start("alice", b"s3cret").unwrap();
    connect.properties.authentication_method = Some("SCRAM-SHA-256".into());
    connect.properties.authentication_data = Some(first.into());
    let mut raw = Raw::connect(broker.addr, Protocol::V5).await;
    raw.send(Packet::Connect(Box::new(connect))).await;
    let Some(Packet::Auth(challenge)) = raw.recv().await else { panic!() };
    let (_, last) = exchange.finish(&challenge.properties.authentication_data.unwrap()).unwrap();
    let properties = Properties {
        authentication_method: Some("SCRAM-SHA-256".into()),
        authentication_data: Some(last.into()),
        ..Properties::default()
    };
    raw.send(Packet::Auth(cauldron_proto::Auth { reason: ReasonCode::ContinueAuthentication, properties }))
        .await;
    assert!(matches!(raw.recv().await, Some(Packet::ConnAck(a)) if a.code == ReasonCode::Success));

    let done = reauthenticate(&mut raw, b"s3cret").await;
    assert!(matches!(&done[..], [Packet::Auth(a)] if a.reason == ReasonCode::Success), "{done:?}");
    raw.send(Packet::PingReq).await;
    assert_eq!(raw.recv().await, Some(Packet::PingResp), "still connected after re-authentication");

    let failed = reauthenticate(&mut raw, b"changed").await;
    assert!(
        matches!(&failed[..], [Packet::Disconnect(d)] if d.reason == ReasonCode::NotAuthorized),
        "{failed:?}"
    );
    assert_eq!(raw.expect_closed().await, vec![]);

    // AUTH on a connection that did not use enhanced authentication is a protocol error.
    let (mut plain, _) = raw_v5(&broker, v5("plain")).await;
    plain
        .send(Packet::Auth(cauldron_proto::Auth {
            reason: ReasonCode::ReAuthenticate,
            properties: Properties::default(),
        }))
        .await;
    let packets = plain.expect_closed().await;
    assert!(matches!(&packets[..], [Packet::Disconnect(d)] if d.reason == ReasonCode::ProtocolError));
}

// --- Authorization reason codes -------------------------------------------------------------

/// Denies publishing under `secret/`, subscribing under `private/`, and receiving under
/// `hidden/` unless the user is "admin".
struct TestAcl;

impl cauldron_broker::Authorizer for TestAcl {
    fn can_publish(&self, _: &cauldron_broker::ClientInfo, topic: &str) -> bool {
        !topic.starts_with("secret/")
    }
    fn can_subscribe(&self, _: &cauldron_broker::ClientInfo, filter: &str) -> bool {
        !filter.starts_with("private/")
    }
    fn can_receive(&self, client: &cauldron_broker::ClientInfo, topic: &str) -> bool {
        !topic.starts_with("hidden/") || client.username.as_deref() == Some("admin")
    }
}

#[tokio::test]
async fn not_authorized_reason_codes_and_read_checks_on_delivery() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let broker = cauldron_broker::Broker::with_authorizer(Config::default(), std::sync::Arc::new(TestAcl));
    tokio::spawn(cauldron_broker::run(
        std::sync::Arc::clone(&broker),
        vec![listener],
        cauldron_broker::CancellationToken::new(),
    ));

    let (mut v5_raw, _) = Raw::handshake(addr, v5("v5")).await;
    v5_raw.publish("secret/x", "no", QoS::AtLeastOnce, Some(1)).await;
    assert!(matches!(v5_raw.recv().await, Some(Packet::PubAck(a)) if a.reason == ReasonCode::NotAuthorized));
    v5_raw.publish("secret/x", "no", QoS::ExactlyOnce, Some(2)).await;
    assert!(matches!(v5_raw.recv().await, Some(Packet::PubRec(a)) if a.reason == ReasonCode::NotAuthorized));
    assert_eq!(
        subscribe_with(&mut v5_raw, "private/#", qos(QoS::AtMostOnce), None).await,
        [ReasonCode::NotAuthorized]
    );

    // 3.1.1: the publish is dropped silently with a normal PUBACK; SUBACK says 0x80.
    let (mut v3_raw, _) = Raw::session(addr, "v3", true).await;
    v3_raw.publish("secret/x", "no", QoS::AtLeastOnce, Some(1)).await;
    assert!(matches!(v3_raw.recv().await, Some(Packet::PubAck(a)) if a.reason == ReasonCode::Success));
    let ack = v3_raw.subscribe("private/#", QoS::AtMostOnce).await;
    let mut bytes = cauldron_proto::BytesMut::new();
    Packet::SubAck(ack).encode(Protocol::V3_1_1, &mut bytes).unwrap();
    assert_eq!(bytes.last(), Some(&0x80));

    // Read access on delivery, retained messages included.
    let mut admin_connect = v5("admin");
    admin_connect.username = Some("admin".into());
    let (mut admin, _) = Raw::handshake(addr, admin_connect).await;
    subscribe_with(&mut admin, "#", qos(QoS::AtMostOnce), None).await;
    let (mut user, _) = Raw::handshake(addr, v5("user")).await;
    subscribe_with(&mut user, "#", qos(QoS::AtMostOnce), None).await;
    let (mut publisher, _) = Raw::handshake(addr, v5("pub")).await;
    let mut retained = Publish::new("hidden/r", &b"kept"[..]);
    retained.retain = true;
    publisher.send(Packet::Publish(retained)).await;
    publisher.publish("hidden/live", "for admins", QoS::AtMostOnce, None).await;
    assert_eq!(&admin.expect_publish().await.topic[..], "hidden/r");
    assert_eq!(&admin.expect_publish().await.topic[..], "hidden/live");
    user.expect_silence().await;
    let (mut late, _) = Raw::handshake(addr, v5("late")).await;
    subscribe_with(&mut late, "hidden/#", qos(QoS::AtMostOnce), None).await;
    late.expect_silence().await;
}

#[tokio::test]
async fn response_information_and_server_keep_alive() {
    let config =
        Config { response_topic_prefix: Some("responses".into()), max_keepalive: 30, ..Config::default() };
    let broker = TestBroker::with_config(config).await;
    let mut connect = v5("asker");
    connect.keep_alive = 60;
    connect.properties.request_response_information = Some(true);
    let (_raw, ack) = raw_v5(&broker, connect).await;
    assert_eq!(ack.properties.response_information.as_deref(), Some("responses/asker"));
    assert_eq!(ack.properties.server_keep_alive, Some(30), "keep alive lowered to the maximum");
    let mut modest = v5("not-asking");
    modest.keep_alive = 20;
    let (_raw, ack) = raw_v5(&broker, modest).await;
    assert_eq!(ack.properties.response_information, None);
    assert_eq!(ack.properties.server_keep_alive, None);
}

#[tokio::test]
async fn memory_ceiling_sheds_qos0_then_answers_quota_exceeded() {
    // 100 payload bytes across all queues: QoS 0 is shed from 100, everything from 125
    // (QoS 0 shedding itself is shown in `session::tests`).
    let config = Config { memory_ceiling: 100, ..Config::default() };
    let broker = TestBroker::with_config(config).await;
    let (mut away, _) = raw_v5(&broker, persistent("away", 600)).await;
    subscribe_with(&mut away, "big", qos(QoS::AtLeastOnce), None).await;
    drop(away);
    let (publisher, _) = v5_client(&broker, "pub").await;
    let fill = "x".repeat(60);
    for _ in 0..3 {
        // 60, 120, 180 bytes queued: each was taken while the total was under 125.
        publish_v5(&publisher, message("big", &fill, QoS::AtLeastOnce)).await;
    }
    let refused = publisher.publish_packet(message("big", &fill, QoS::AtLeastOnce)).await.unwrap();
    assert_eq!(refused, Some(ReasonCode::QuotaExceeded), "past the ceiling and a quarter");
    let metrics = &broker.broker.metrics;
    assert_eq!(
        metrics.dropped[cauldron_broker::metrics::DropReason::Memory as usize]
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    assert_eq!(broker.broker.queued_memory(), 180);
}

#[tokio::test]
async fn keep_alive_above_the_maximum_refuses_3x_clients() {
    let broker = TestBroker::with_config(Config { max_keepalive: 60, ..Config::default() }).await;
    for keep_alive in [61, 0] {
        let mut connect = Raw::connect_packet("sleepy", true, Protocol::V3_1_1);
        connect.keep_alive = keep_alive;
        let (_raw, ack) = Raw::handshake(broker.addr, connect).await;
        assert_eq!(ack.code.to_v3_connack(), 2, "keep alive {keep_alive}: identifier rejected, as Mosquitto");
    }
    let mut connect = Raw::connect_packet("fine", true, Protocol::V3_1_1);
    connect.keep_alive = 60;
    let (_raw, ack) = Raw::handshake(broker.addr, connect).await;
    assert_eq!(ack.code, ReasonCode::Success);
}

#[tokio::test]
async fn each_listener_has_its_own_connection_limit() {
    let small = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let large = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (small_addr, large_addr) = (small.local_addr().unwrap(), large.local_addr().unwrap());
    let broker = cauldron_broker::Broker::new(Config { sys_interval: 0, ..Config::default() });
    let listeners = vec![
        cauldron_broker::Listener { max_connections: Some(1), ..cauldron_broker::Listener::from(small) },
        cauldron_broker::Listener { max_connections: None, ..cauldron_broker::Listener::from(large) },
    ];
    tokio::spawn(cauldron_broker::run_listeners(
        std::sync::Arc::clone(&broker),
        listeners,
        cauldron_broker::CancellationToken::new(),
    ));
    let (_one, _) = Raw::handshake(small_addr, v5("one")).await;
    let mut refused = Raw::connect(small_addr, Protocol::V5).await;
    refused.send(Packet::Connect(Box::new(v5("two")))).await;
    assert_eq!(refused.expect_closed().await, vec![], "the small listener is full");
    let (_three, ack) = Raw::handshake(large_addr, v5("three")).await;
    assert_eq!(ack.code, ReasonCode::Success, "the other listener is not");
}
