//! Subscribe, match, deliver: wildcards, `$` topics, QoS ceilings, retained messages, order.

mod common;

use cauldron_proto::{BytesMut, Packet, Protocol, Publish, QoS, ReasonCode};
use common::*;

#[tokio::test]
async fn wildcards_match_and_suback_grants_requested_qos() {
    let broker = TestBroker::start().await;
    let (sub, mut messages) = broker.client("sub").await;
    assert_eq!(sub.subscribe("sport/+/player1", QoS::AtLeastOnce).await.unwrap(), ReasonCode::GrantedQoS1);
    assert_eq!(sub.subscribe("news/#", QoS::ExactlyOnce).await.unwrap(), ReasonCode::GrantedQoS2);
    assert_eq!(sub.subscribe("exact", QoS::AtMostOnce).await.unwrap(), ReasonCode::Success);
    let (publisher, _) = broker.client("pub").await;
    for topic in ["sport/tennis/player1", "sport/tennis/player2", "news", "news/a/b", "exact", "exact/no"] {
        publisher.publish(topic, topic, QoS::AtMostOnce, false).await.unwrap();
    }
    let mut got = Vec::new();
    for _ in 0..4 {
        got.push(next(&mut messages).await.topic.to_string());
    }
    assert_eq!(got, ["sport/tennis/player1", "news", "news/a/b", "exact"]);
    nothing(&mut messages).await;
}

#[tokio::test]
async fn dollar_topics_are_not_matched_by_leading_wildcards() {
    let broker = TestBroker::start().await;
    let (sub, mut messages) = broker.client("sub").await;
    sub.subscribe("#", QoS::AtMostOnce).await.unwrap();
    sub.subscribe("+/info", QoS::AtMostOnce).await.unwrap();
    let (dollar_sub, mut dollar_messages) = broker.client("dollar").await;
    dollar_sub.subscribe("$app/#", QoS::AtMostOnce).await.unwrap();
    let (publisher, _) = broker.client("pub").await;
    publisher.publish("$app/info", "x", QoS::AtMostOnce, false).await.unwrap();
    assert_eq!(next(&mut dollar_messages).await.topic, "$app/info");
    nothing(&mut messages).await; // [MQTT-4.7.2-1]
}

#[tokio::test]
async fn overlapping_subscriptions_deliver_once_at_the_highest_qos() {
    let broker = TestBroker::start().await;
    let (sub, mut messages) = broker.client("sub").await;
    sub.subscribe("a/#", QoS::AtMostOnce).await.unwrap();
    sub.subscribe("a/+", QoS::ExactlyOnce).await.unwrap();
    sub.subscribe("a/b", QoS::AtLeastOnce).await.unwrap();
    let (publisher, _) = broker.client("pub").await;
    publisher.publish("a/b", "once", QoS::ExactlyOnce, false).await.unwrap();
    let message = next(&mut messages).await;
    assert_eq!(message.qos, QoS::ExactlyOnce);
    nothing(&mut messages).await;
}

#[tokio::test]
async fn subscription_qos_is_the_ceiling_in_every_combination() {
    let broker = TestBroker::start().await;
    let qos_levels = [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce];
    let (publisher, _) = broker.client("pub").await;
    for sub_qos in qos_levels {
        let (sub, mut messages) = broker.client(&format!("sub{}", sub_qos as u8)).await;
        let filter = format!("q/{}", sub_qos as u8);
        sub.subscribe(filter.as_str(), sub_qos).await.unwrap();
        for pub_qos in qos_levels {
            publisher.publish(filter.as_str(), "m", pub_qos, false).await.unwrap();
            let message = next(&mut messages).await;
            assert_eq!(message.qos, pub_qos.min(sub_qos), "published {pub_qos:?}, subscribed {sub_qos:?}");
        }
    }
}

#[tokio::test]
async fn qos2_publish_from_a_raw_client_is_forwarded_once() {
    let broker = TestBroker::start().await;
    let (sub, mut messages) = broker.client("sub").await;
    sub.subscribe("q2", QoS::ExactlyOnce).await.unwrap();
    let (mut raw, _) = Raw::session(broker.addr, "raw-pub", true).await;
    raw.publish("q2", "exactly", QoS::ExactlyOnce, Some(7)).await;
    assert!(matches!(raw.recv().await, Some(Packet::PubRec(a)) if a.packet_id == 7));
    // A retransmission before PUBREL is acknowledged but not forwarded again [MQTT-4.3.3-9].
    let mut dup = cauldron_proto::Publish::new("q2", &b"exactly"[..]);
    (dup.qos, dup.packet_id, dup.dup) = (QoS::ExactlyOnce, Some(7), true);
    raw.send(Packet::Publish(dup)).await;
    assert!(matches!(raw.recv().await, Some(Packet::PubRec(a)) if a.packet_id == 7));
    raw.ack(Packet::PubRel, 7).await;
    assert!(matches!(raw.recv().await, Some(Packet::PubComp(a)) if a.packet_id == 7));
    assert_eq!(&next(&mut messages).await.payload[..], b"exactly");
    nothing(&mut messages).await;
}

#[tokio::test]
async fn messages_on_one_topic_arrive_in_order() {
    let broker = TestBroker::start().await;
    let (sub, mut messages) = broker.client("sub").await;
    sub.subscribe("ordered", QoS::AtLeastOnce).await.unwrap();
    let (publisher, _) = broker.client("pub").await;
    let sender = tokio::spawn(async move {
        for i in 0..500 {
            let qos = [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce][i % 3];
            publisher.publish("ordered", i.to_string(), qos, false).await.unwrap();
        }
    });
    for i in 0..500 {
        let message = next(&mut messages).await;
        assert_eq!(std::str::from_utf8(&message.payload).unwrap(), i.to_string());
    }
    sender.await.unwrap();
}

#[tokio::test]
async fn retained_messages_lifecycle() {
    let broker = TestBroker::start().await;
    let (publisher, _) = broker.client("pub").await;
    publisher.publish("home/temp", "20", QoS::AtLeastOnce, true).await.unwrap();
    publisher.publish("home/temp", "21", QoS::AtLeastOnce, true).await.unwrap(); // replaces
    publisher.publish("home/hum", "50", QoS::AtMostOnce, true).await.unwrap();
    publisher.publish("home/hum", "", QoS::AtMostOnce, true).await.unwrap(); // deletes [MQTT-3.3.1-6]
    publisher.publish("home/temp", "live", QoS::AtMostOnce, false).await.unwrap(); // leaves it alone
    eventually(|| broker.broker.retained_count() == 1).await;

    let (sub, mut messages) = broker.client("sub").await;
    sub.subscribe("home/#", QoS::AtLeastOnce).await.unwrap();
    let retained = next(&mut messages).await;
    assert_eq!(
        (&retained.topic[..], &retained.payload[..], retained.retain),
        ("home/temp", &b"21"[..], true)
    );
    assert_eq!(retained.qos, QoS::AtLeastOnce);
    nothing(&mut messages).await;

    // Live messages are forwarded with retain 0 even when published retained [MQTT-3.3.1-9].
    publisher.publish("home/temp", "22", QoS::AtMostOnce, true).await.unwrap();
    let live = next(&mut messages).await;
    assert!(!live.retain);

    // The retained message's QoS is capped by the new subscription's.
    let (sub0, mut messages0) = broker.client("sub0").await;
    sub0.subscribe("home/temp", QoS::AtMostOnce).await.unwrap();
    let retained = next(&mut messages0).await;
    assert_eq!((retained.qos, &retained.payload[..], retained.retain), (QoS::AtMostOnce, &b"22"[..], true));
}

#[tokio::test]
async fn unsubscribe_stops_delivery() {
    let broker = TestBroker::start().await;
    let (sub, mut messages) = broker.client("sub").await;
    sub.subscribe("u/#", QoS::AtMostOnce).await.unwrap();
    assert_eq!(broker.broker.subscription_count(), 1);
    sub.unsubscribe("u/#").await.unwrap();
    assert_eq!(broker.broker.subscription_count(), 0);
    let (publisher, _) = broker.client("pub").await;
    publisher.publish("u/1", "x", QoS::AtMostOnce, false).await.unwrap();
    nothing(&mut messages).await;
}

#[tokio::test]
async fn mqtt5_subscriber_and_311_publisher_interoperate() {
    let broker = TestBroker::start().await;
    let (sub, mut messages) =
        cauldron_client::Client::connect(broker.options("v5").protocol(Protocol::V5)).await.unwrap();
    sub.subscribe("mix", QoS::AtLeastOnce).await.unwrap();
    let (v3, mut v3_messages) = broker.client("v3").await;
    v3.subscribe("mix", QoS::AtLeastOnce).await.unwrap();
    // A v5 publisher with properties: the 3.1.1 subscriber gets the message without them.
    let (v5_pub, _) =
        cauldron_client::Client::connect(broker.options("v5pub").protocol(Protocol::V5)).await.unwrap();
    let mut publish = cauldron_proto::Publish::new("mix", &b"hello"[..]);
    publish.qos = QoS::AtLeastOnce;
    publish.properties.content_type = Some("text/plain".into());
    publish.properties.user_properties.push(("k".into(), "v".into()));
    v5_pub.publish_packet(publish).await.unwrap();
    let got = next(&mut messages).await;
    assert_eq!(got.properties.content_type.as_deref(), Some("text/plain"));
    assert_eq!(got.properties.user_properties, vec![("k".into(), "v".into())]);
    assert_eq!(&next(&mut v3_messages).await.payload[..], b"hello");
    v3.publish("mix", "from v3", QoS::AtMostOnce, false).await.unwrap();
    assert_eq!(&next(&mut messages).await.payload[..], b"from v3");
}

#[tokio::test]
async fn mqtt5_puback_reports_no_matching_subscribers() {
    let broker = TestBroker::start().await;
    let (client, _) =
        cauldron_client::Client::connect(broker.options("v5").protocol(Protocol::V5)).await.unwrap();
    let mut publish = cauldron_proto::Publish::new("nobody/listens", &b"x"[..]);
    publish.qos = QoS::AtLeastOnce;
    assert_eq!(client.publish_packet(publish).await.unwrap(), Some(ReasonCode::NoMatchingSubscribers));
}

#[tokio::test]
async fn a_dispatcher_calls_each_matching_handler_in_order() {
    use std::sync::{Arc, Mutex};
    let broker = TestBroker::start().await;
    let (sub, mut messages) = broker.client("dispatched").await;
    sub.subscribe("d/#", QoS::AtLeastOnce).await.unwrap();
    let (publisher, _) = broker.client("pub").await;
    for topic in ["d/a", "d/b/c", "d/a", "d/stop"] {
        publisher.publish(topic, topic, QoS::AtLeastOnce, false).await.unwrap();
    }
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (a, all) = (Arc::clone(&seen), Arc::clone(&seen));
    let stopper = sub.clone();
    let dispatch = cauldron_client::Dispatcher::new()
        .on("d/a", move |m| {
            a.lock().unwrap().push(format!("a:{}", m.topic));
            async {}
        })
        .on("d/#", move |m| {
            all.lock().unwrap().push(format!("all:{}", m.topic));
            let stopper = stopper.clone();
            async move {
                if m.topic == "d/stop" {
                    let _ = stopper.disconnect().await;
                }
            }
        });
    tokio::time::timeout(std::time::Duration::from_secs(10), dispatch.run(&mut messages)).await.unwrap();
    assert_eq!(*seen.lock().unwrap(), ["a:d/a", "all:d/a", "all:d/b/c", "a:d/a", "all:d/a", "all:d/stop"]);
}

/// A publisher's packets that arrive together are routed together (`Broker::publish_all`):
/// each subscriber still gets every message in order, at its own QoS, PUBACKs go back in
/// order, and a packet after the messages sees them routed (a retained one is there for a
/// SUBSCRIBE sent behind it in the same write).
#[tokio::test]
async fn messages_written_together_are_routed_in_order_before_what_follows_them() {
    let broker = TestBroker::start().await;
    let addr = broker.addr;
    let (mut everything, _) = Raw::session(addr, "everything", true).await;
    everything.subscribe("t/#", QoS::AtLeastOnce).await;
    let (mut only_x, _) = Raw::session(addr, "only-x", true).await;
    only_x.subscribe("t/x", QoS::AtMostOnce).await;
    let (mut publisher, _) = Raw::session(addr, "publisher", true).await;
    // Runs of one topic (one set of subscribers) and topics taking turns, QoS 0 and 1,
    // more than one batch's worth, then a retained message and a SUBSCRIBE to it.
    let mut sent = Vec::new();
    let mut bytes = bytes::BytesMut::new();
    for i in 0..300u16 {
        let topic = match i {
            0..100 => "t/x",
            _ if i % 3 == 0 => "t/y",
            _ => "t/x",
        };
        let mut publish = cauldron_proto::Publish::new(topic, i.to_string().into_bytes());
        if i % 2 == 1 {
            publish.qos = QoS::AtLeastOnce;
            publish.packet_id = Some(i);
        }
        sent.push((topic, i, publish.qos));
        Packet::Publish(publish).encode(Protocol::V3_1_1, &mut bytes).unwrap();
    }
    let mut retained = cauldron_proto::Publish::new("r", b"kept".to_vec());
    retained.retain = true;
    Packet::Publish(retained).encode(Protocol::V3_1_1, &mut bytes).unwrap();
    let options = cauldron_proto::SubOptions { qos: QoS::AtMostOnce, ..Default::default() };
    let filters = vec![cauldron_proto::Subscription { filter: "r".into(), options }];
    let subscribe = cauldron_proto::Subscribe { packet_id: 9, filters, properties: Default::default() };
    Packet::Subscribe(subscribe).encode(Protocol::V3_1_1, &mut bytes).unwrap();
    publisher.send_bytes(&bytes).await;

    let acked: Vec<u16> =
        sent.iter().filter(|(_, _, q)| *q == QoS::AtLeastOnce).map(|(_, i, _)| *i).collect();
    for id in &acked {
        match publisher.recv().await {
            Some(Packet::PubAck(ack)) => assert_eq!(ack.packet_id, *id, "PUBACKs in order"),
            other => panic!("expected PUBACK {id}, got {other:?}"),
        }
    }
    assert!(matches!(publisher.recv().await, Some(Packet::SubAck(_))));
    let kept = publisher.expect_publish().await;
    assert_eq!((&*kept.topic, &kept.payload[..], kept.retain), ("r", &b"kept"[..], true));

    for (topic, i, qos) in &sent {
        let got = everything.expect_publish().await;
        assert_eq!((&*got.topic, &got.payload[..], got.qos), (*topic, i.to_string().as_bytes(), *qos));
        if let Some(id) = got.packet_id {
            everything.ack(Packet::PubAck, id).await;
        }
    }
    for (_, i, _) in sent.iter().filter(|(topic, _, _)| *topic == "t/x") {
        let got = only_x.expect_publish().await;
        assert_eq!((&got.payload[..], got.qos), (i.to_string().as_bytes(), QoS::AtMostOnce));
    }
    everything.expect_silence().await;
    only_x.expect_silence().await;
}

/// Messages that arrive in one read are routed as a batch, where consecutive messages on one
/// topic share their targets: every subscriber still gets each of its messages once and in
/// order, and a shared group's members still take turns message by message.
#[tokio::test]
async fn a_burst_in_one_write_reaches_everyone_in_order_and_shared_members_take_turns() {
    let broker = TestBroker::start().await;
    let (all, mut all_messages) = broker.client("all").await;
    all.subscribe("burst/#", QoS::AtLeastOnce).await.unwrap();
    let (only_a, mut only_a_messages) = broker.client("only-a").await;
    only_a.subscribe("burst/a", QoS::AtMostOnce).await.unwrap();
    let (first, mut first_messages) = broker.client("first").await;
    first.subscribe("$share/g/burst/a", QoS::AtMostOnce).await.unwrap();
    let (second, mut second_messages) = broker.client("second").await;
    second.subscribe("$share/g/burst/a", QoS::AtMostOnce).await.unwrap();

    let (mut publisher, _) = Raw::session(broker.addr, "pub", true).await;
    // 40 messages in one write: 30 on burst/a at QoS 0 (one run), then QoS 1 with burst/b
    // breaking the runs.
    let mut burst = BytesMut::new();
    let mut expected = Vec::new();
    for i in 0..40u16 {
        let topic = if i >= 30 && i % 3 == 0 { "burst/b" } else { "burst/a" };
        let mut publish = Publish::new(topic, i.to_string().into_bytes());
        if i >= 30 {
            (publish.qos, publish.packet_id) = (QoS::AtLeastOnce, Some(i));
        }
        Packet::Publish(publish).encode(Protocol::V3_1_1, &mut burst).unwrap();
        expected.push((topic.to_string(), i.to_string()));
    }
    publisher.send_bytes(&burst).await;

    let mut got = Vec::new();
    for _ in 0..40 {
        let m = next(&mut all_messages).await;
        got.push((m.topic.to_string(), String::from_utf8(m.payload.to_vec()).unwrap()));
    }
    assert_eq!(got, expected, "every message once, in the order published");
    let on_a: Vec<String> = expected.iter().filter(|(t, _)| t == "burst/a").map(|(_, p)| p.clone()).collect();
    let mut got_a = Vec::new();
    for _ in 0..on_a.len() {
        got_a.push(String::from_utf8(next(&mut only_a_messages).await.payload.to_vec()).unwrap());
    }
    assert_eq!(got_a, on_a);
    let (mut turns_first, mut turns_second) = (0u32, 0u32);
    for _ in 0..on_a.len() {
        tokio::select! {
            Some(_) = first_messages.recv() => turns_first += 1,
            Some(_) = second_messages.recv() => turns_second += 1,
            _ = tokio::time::sleep(WAIT) => panic!("shared messages missing"),
        }
    }
    assert!(turns_first.abs_diff(turns_second) <= 1, "members take turns: {turns_first} and {turns_second}");
    nothing(&mut all_messages).await;
    nothing(&mut first_messages).await;
    nothing(&mut second_messages).await;
}

/// A subscriber that acknowledges a whole window in one write (short PUBACKs, completed
/// together) gets the next window, and an ack for an id it never got changes nothing.
#[tokio::test]
async fn acks_written_together_open_the_window_together() {
    let broker = TestBroker::start().await;
    let (mut subscriber, _) = Raw::session(broker.addr, "sub", true).await;
    subscriber.subscribe("w", QoS::AtLeastOnce).await;
    let (publisher, _) = broker.client("pub").await;
    for i in 0..50 {
        publisher.publish("w", i.to_string(), QoS::AtLeastOnce, false).await.unwrap();
    }
    let window = broker.broker.config.max_inflight_messages;
    let mut payloads = Vec::new();
    while payloads.len() < 50 {
        let mut acks = BytesMut::new();
        // One unknown id first: ignored, and it does not hold back the acks after it.
        Packet::PubAck(cauldron_proto::Ack::new(60_000)).encode(Protocol::V3_1_1, &mut acks).unwrap();
        for _ in 0..window.min(50 - payloads.len()) {
            let publish = subscriber.expect_publish().await;
            payloads.push(String::from_utf8(publish.payload.to_vec()).unwrap().parse::<u32>().unwrap());
            Packet::PubAck(cauldron_proto::Ack::new(publish.packet_id.unwrap()))
                .encode(Protocol::V3_1_1, &mut acks)
                .unwrap();
        }
        // Nothing beyond the window until the acks arrive.
        if payloads.len() < 50 {
            subscriber.expect_silence().await;
        }
        subscriber.send_bytes(&acks).await;
    }
    assert_eq!(payloads, (0..50).collect::<Vec<_>>());
    subscriber.expect_silence().await;
}
