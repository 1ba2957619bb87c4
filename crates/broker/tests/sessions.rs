//! Sessions that outlive connections: persistence, takeover, queues, inflight window,
//! redelivery with DUP and QoS 2 state across reconnects.

mod common;

use cauldron_broker::Config;
use cauldron_proto::{Packet, QoS};
use common::*;

#[tokio::test]
async fn persistent_session_receives_what_was_published_while_away() {
    let broker = TestBroker::start().await;
    let (sub, _) = cauldron_client::Client::connect(broker.options("away").clean_start(false)).await.unwrap();
    assert!(!sub.connected().session_present);
    sub.subscribe("away/#", QoS::AtLeastOnce).await.unwrap();
    sub.disconnect().await.unwrap();

    let (publisher, _) = broker.client("pub").await;
    publisher.publish("away/1", "one", QoS::AtLeastOnce, false).await.unwrap();
    publisher.publish("away/2", "two", QoS::ExactlyOnce, false).await.unwrap();
    publisher.publish("away/0", "zero", QoS::AtMostOnce, false).await.unwrap(); // not queued offline

    let (sub, mut messages) =
        cauldron_client::Client::connect(broker.options("away").clean_start(false)).await.unwrap();
    assert!(sub.connected().session_present, "[MQTT-3.2.2-2]");
    assert_eq!(&next(&mut messages).await.payload[..], b"one");
    let second = next(&mut messages).await;
    assert_eq!(
        (&second.payload[..], second.qos),
        (&b"two"[..], QoS::AtLeastOnce),
        "capped by the subscription"
    );
    nothing(&mut messages).await;
}

#[tokio::test]
async fn clean_session_discards_the_old_session() {
    let broker = TestBroker::start().await;
    let (sub, _) = cauldron_client::Client::connect(broker.options("c").clean_start(false)).await.unwrap();
    sub.subscribe("c/#", QoS::AtLeastOnce).await.unwrap();
    sub.disconnect().await.unwrap();
    let (sub, mut messages) = broker.client("c").await; // clean session
    assert!(!sub.connected().session_present, "[MQTT-3.2.2-1]");
    eventually(|| broker.broker.subscription_count() == 0).await;
    let (publisher, _) = broker.client("pub").await;
    publisher.publish("c/1", "x", QoS::AtLeastOnce, false).await.unwrap();
    nothing(&mut messages).await;
    sub.disconnect().await.unwrap();
    eventually(|| broker.broker.session_count() == 1).await; // only "pub" remains
}

#[tokio::test]
async fn a_new_connection_with_the_same_id_takes_over() {
    let broker = TestBroker::start().await;
    let (mut first, _) = Raw::session(broker.addr, "same", false).await;
    first.subscribe("t/#", QoS::AtLeastOnce).await;
    let (second, mut messages) =
        cauldron_client::Client::connect(broker.options("same").clean_start(false)).await.unwrap();
    assert!(second.connected().session_present);
    assert_eq!(first.expect_closed().await, vec![], "old connection closed [MQTT-3.1.4-2]");
    let (publisher, _) = broker.client("pub").await;
    publisher.publish("t/x", "to the new one", QoS::AtLeastOnce, false).await.unwrap();
    assert_eq!(&next(&mut messages).await.payload[..], b"to the new one");
}

#[tokio::test]
async fn unacknowledged_messages_are_resent_with_dup_on_reconnect() {
    let broker = TestBroker::start().await;
    let (mut raw, _) = Raw::session(broker.addr, "dup", false).await;
    raw.subscribe("d", QoS::AtLeastOnce).await;
    let (publisher, _) = broker.client("pub").await;
    publisher.publish("d", "first", QoS::AtLeastOnce, false).await.unwrap();
    let first = raw.expect_publish().await;
    assert!(!first.dup);
    drop(raw); // no PUBACK

    let (mut raw, present) = Raw::session(broker.addr, "dup", false).await;
    assert!(present);
    let again = raw.expect_publish().await;
    assert!(again.dup, "[MQTT-4.4.0-1]");
    assert_eq!((again.packet_id, &again.payload[..]), (first.packet_id, &b"first"[..]));
    raw.ack(Packet::PubAck, again.packet_id.unwrap()).await;
    raw.expect_silence().await;
}

#[tokio::test]
async fn qos2_to_a_subscriber_resumes_with_pubrel_after_reconnect() {
    let broker = TestBroker::start().await;
    let (mut raw, _) = Raw::session(broker.addr, "q2sub", false).await;
    raw.subscribe("q2", QoS::ExactlyOnce).await;
    let (publisher, _) = broker.client("pub").await;
    publisher.publish("q2", "once", QoS::ExactlyOnce, false).await.unwrap();
    let publish = raw.expect_publish().await;
    let id = publish.packet_id.unwrap();
    raw.ack(Packet::PubRec, id).await;
    assert!(matches!(raw.recv().await, Some(Packet::PubRel(a)) if a.packet_id == id));
    drop(raw); // PUBREL unanswered

    let (mut raw, _) = Raw::session(broker.addr, "q2sub", false).await;
    // Only the PUBREL is repeated: the message itself is not delivered a second time.
    assert!(matches!(raw.recv().await, Some(Packet::PubRel(a)) if a.packet_id == id));
    raw.ack(Packet::PubComp, id).await;
    raw.expect_silence().await;
}

#[tokio::test]
async fn qos2_from_a_publisher_is_not_duplicated_across_reconnect() {
    let broker = TestBroker::start().await;
    let (sub, mut messages) = broker.client("sub").await;
    sub.subscribe("x", QoS::ExactlyOnce).await.unwrap();
    let (mut raw, _) = Raw::session(broker.addr, "q2pub", false).await;
    raw.publish("x", "exactly once", QoS::ExactlyOnce, Some(42)).await;
    assert!(matches!(raw.recv().await, Some(Packet::PubRec(_))));
    drop(raw); // connection lost before PUBREL
    assert_eq!(&next(&mut messages).await.payload[..], b"exactly once");

    let (mut raw, present) = Raw::session(broker.addr, "q2pub", false).await;
    assert!(present);
    let mut publish = cauldron_proto::Publish::new("x", &b"exactly once"[..]);
    (publish.qos, publish.packet_id, publish.dup) = (QoS::ExactlyOnce, Some(42), true);
    raw.send(Packet::Publish(publish)).await;
    assert!(matches!(raw.recv().await, Some(Packet::PubRec(_))));
    raw.ack(Packet::PubRel, 42).await;
    assert!(
        matches!(raw.recv().await, Some(Packet::PubComp(a)) if a.reason == cauldron_proto::ReasonCode::Success)
    );
    nothing(&mut messages).await;
}

#[tokio::test]
async fn inflight_window_holds_back_the_rest_until_acked() {
    let config = Config { max_inflight_messages: 20, ..Config::default() };
    let broker = TestBroker::with_config(config).await;
    let (mut raw, _) = Raw::session(broker.addr, "slow-acker", true).await;
    raw.subscribe("w", QoS::AtLeastOnce).await;
    let (publisher, _) = broker.client("pub").await;
    for i in 0..30 {
        publisher.publish("w", i.to_string(), QoS::AtLeastOnce, false).await.unwrap();
    }
    let mut ids = Vec::new();
    for i in 0..20 {
        let p = raw.expect_publish().await;
        assert_eq!(p.payload, i.to_string().as_bytes());
        ids.push(p.packet_id.unwrap());
    }
    raw.expect_silence().await;
    for id in &ids[..5] {
        raw.ack(Packet::PubAck, *id).await;
    }
    for i in 20..25 {
        assert_eq!(raw.expect_publish().await.payload, i.to_string().as_bytes());
    }
    raw.expect_silence().await;
}

#[tokio::test]
async fn offline_queue_is_bounded_and_drops_are_counted() {
    let config = Config { max_queued_messages: 10, ..Config::default() };
    let broker = TestBroker::with_config(config).await;
    let (sub, _) =
        cauldron_client::Client::connect(broker.options("bounded").clean_start(false)).await.unwrap();
    sub.subscribe("b", QoS::AtLeastOnce).await.unwrap();
    sub.disconnect().await.unwrap();
    let (publisher, _) = broker.client("pub").await;
    for i in 0..15 {
        publisher.publish("b", i.to_string(), QoS::AtLeastOnce, false).await.unwrap();
    }
    assert_eq!(broker.broker.metrics.snapshot().messages_dropped, 5);
    let (_sub, mut messages) =
        cauldron_client::Client::connect(broker.options("bounded").clean_start(false)).await.unwrap();
    for i in 0..10 {
        assert_eq!(
            next(&mut messages).await.payload,
            i.to_string().as_bytes(),
            "oldest kept, newest dropped"
        );
    }
    nothing(&mut messages).await;
}
