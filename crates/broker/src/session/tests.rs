use super::*;
use cauldron_proto::{Properties, Publish};

fn limits() -> Limits {
    Limits {
        max_inflight: 2,
        max_queued: 3,
        max_queued_bytes: 0,
        queue_qos0: false,
        drop_oldest: false,
        memory_ceiling: 0,
    }
}

fn delivery(payload: &'static str, qos: QoS) -> Delivery {
    let mut publish = Publish::new("t", payload.as_bytes());
    publish.qos = qos;
    publish.properties = Properties::default();
    Delivery {
        message: Arc::new(Message::from_publish(publish, None)),
        qos,
        retain: false,
        subscription_ids: Box::default(),
        shared: None,
        seq: 0,
    }
}

fn ids(packets: &[Packet]) -> Vec<(Option<u16>, bool)> {
    packets
        .iter()
        .map(|p| match p {
            Packet::Publish(p) => (p.packet_id, p.dup),
            Packet::PubRel(a) => (Some(a.packet_id), false),
            other => panic!("unexpected {other:?}"),
        })
        .collect()
}

#[test]
fn inflight_window_and_bounded_queue() {
    let mut s = Session::new("c", limits(), false, Arc::default());
    s.attach(1, Protocol::V3_1_1, usize::MAX);
    for p in ["a", "b", "c"] {
        assert_eq!(s.enqueue(delivery(p, QoS::AtLeastOnce)), Enqueued::Queued);
    }
    // Connected: up to the limit again on top, each telling the publisher to pause; then drops.
    for p in ["d", "e", "f"] {
        assert_eq!(s.enqueue(delivery(p, QoS::AtLeastOnce)), Enqueued::Congested);
    }
    assert_eq!(s.enqueue(delivery("g", QoS::AtLeastOnce)), Enqueued::Dropped(DropReason::QueueFull));
    assert!(!s.has_room());
    let mut out = vec![];
    s.drain(1, &mut out, usize::MAX);
    assert_eq!(ids(&out), [(Some(1), false), (Some(2), false)], "window of 2");
    assert!(s.on_puback(1));
    assert!(!s.on_puback(1), "second ack of the same id is ignored");
    out.clear();
    s.drain(1, &mut out, usize::MAX);
    assert_eq!(ids(&out), [(Some(3), false)]);
    assert_eq!(s.dropped, 1);
}

#[test]
fn reconnect_resends_with_dup_in_order_and_pubrel_for_released() {
    let mut s = Session::new("c", limits(), false, Arc::default());
    s.attach(1, Protocol::V3_1_1, usize::MAX);
    s.enqueue(delivery("a", QoS::ExactlyOnce));
    s.enqueue(delivery("b", QoS::AtLeastOnce));
    let mut out = vec![];
    s.drain(1, &mut out, usize::MAX);
    assert_eq!(s.on_pubrec(1, false), Some(Packet::PubRel(Ack::new(1))));
    assert!(s.detach(1, Instant::now()));
    // A packet from the old connection after detaching produces nothing.
    assert_eq!(s.drain(1, &mut out, usize::MAX), (0, 0, 0));
    let resent = s.attach(2, Protocol::V3_1_1, usize::MAX);
    assert_eq!(ids(&resent), [(Some(1), false), (Some(2), true)]);
    assert!(matches!(resent[0], Packet::PubRel(_)));
    assert!(s.on_pubcomp(1));
    assert!(s.on_puback(2));
    assert_eq!(s.inflight(), 0);
}

#[test]
fn offline_session_keeps_qos1_and_drops_qos0() {
    let mut s = Session::new("c", limits(), false, Arc::default());
    assert_eq!(s.enqueue(delivery("zero", QoS::AtMostOnce)), Enqueued::Dropped(DropReason::QueueFull));
    assert_eq!(s.enqueue(delivery("one", QoS::AtLeastOnce)), Enqueued::Queued);
    s.attach(7, Protocol::V3_1_1, usize::MAX);
    let mut out = vec![];
    s.drain(7, &mut out, usize::MAX);
    assert_eq!(ids(&out), [(Some(1), false)]);
}

#[test]
fn qos2_receive_deduplicates_until_release() {
    let mut s = Session::new("c", limits(), false, Arc::default());
    assert!(s.receive_qos2(5));
    assert!(!s.receive_qos2(5), "retransmission is not forwarded again");
    assert!(s.release_qos2(5));
    assert!(!s.release_qos2(5));
    assert!(s.receive_qos2(5), "a released id starts a new message");
}

#[test]
fn receive_maximum_caps_the_window() {
    let mut s = Session::new("c", limits(), false, Arc::default());
    s.attach(1, Protocol::V5, 1);
    s.enqueue(delivery("a", QoS::AtLeastOnce));
    s.enqueue(delivery("b", QoS::AtLeastOnce));
    let mut out = vec![];
    s.drain(1, &mut out, usize::MAX);
    assert_eq!(out.len(), 1);
}

fn limits_with(max_queued: usize, max_queued_bytes: usize, drop_oldest: bool, queue_qos0: bool) -> Limits {
    Limits { max_inflight: 10, max_queued, max_queued_bytes, queue_qos0, drop_oldest, memory_ceiling: 0 }
}

fn payloads(s: &mut Session) -> Vec<String> {
    let mut out = vec![];
    s.drain(1, &mut out, usize::MAX);
    out.iter()
        .map(|p| match p {
            Packet::Publish(p) => String::from_utf8(p.payload.to_vec()).unwrap(),
            other => panic!("{other:?}"),
        })
        .collect()
}

#[test]
fn byte_limit_and_drop_oldest_policy() {
    // 10 bytes of payload at most: "aaaa" + "bbbb" fit, "cccc" does not.
    let mut s = Session::new("c", limits_with(100, 10, false, false), false, Arc::default());
    for p in ["aaaa", "bbbb", "cccc"] {
        s.enqueue(delivery(p, QoS::AtLeastOnce));
    }
    s.attach(1, Protocol::V3_1_1, usize::MAX);
    assert_eq!(payloads(&mut s), ["aaaa", "bbbb"], "the newest is dropped by default");
    assert_eq!(s.dropped, 1);

    let mut s = Session::new("c", limits_with(2, 0, true, false), false, Arc::default());
    for p in ["1", "2", "3", "4"] {
        s.enqueue(delivery(p, QoS::AtLeastOnce));
    }
    s.attach(1, Protocol::V3_1_1, usize::MAX);
    assert_eq!(payloads(&mut s), ["3", "4"], "drop oldest keeps the latest");
    assert_eq!(s.dropped, 2);
}

#[test]
fn qos0_is_queued_offline_only_when_configured() {
    let mut s = Session::new("c", limits_with(10, 0, false, true), false, Arc::default());
    assert_eq!(s.enqueue(delivery("zero", QoS::AtMostOnce)), Enqueued::Queued);
    s.attach(1, Protocol::V3_1_1, usize::MAX);
    assert_eq!(payloads(&mut s), ["zero"]);
}

#[test]
fn a_persistent_session_journals_each_step_of_a_delivery() {
    use crate::store::Op;
    let mut s = Session::new("c", limits(), true, Arc::default());
    s.expiry_interval = u32::MAX;
    s.enqueue(delivery("m", QoS::ExactlyOnce));
    assert!(matches!(&s.take_ops()[..], [Op::PutDelivery { client, seq: 1, .. }] if client == "c"), "queued");
    s.attach(1, Protocol::V3_1_1, usize::MAX);
    let mut out = vec![];
    s.drain(1, &mut out, usize::MAX);
    assert!(
        matches!(&s.take_ops()[..], [Op::PutDelivery { client, seq: 1, .. }] if client == "c"),
        "sent with its packet id"
    );
    s.on_pubrec(1, false);
    assert!(
        matches!(&s.take_ops()[..], [Op::PutDelivery { client, seq: 1, .. }] if client == "c"),
        "released"
    );
    s.on_pubcomp(1);
    assert!(
        matches!(&s.take_ops()[..], [Op::DeleteDelivery { client, seq: 1, .. }] if client == "c"),
        "complete"
    );
    assert!(s.receive_qos2(9));
    assert_eq!(s.take_ops(), [Op::PutInboundQos2("c".into(), 9)]);
    s.release_qos2(9);
    assert_eq!(s.take_ops(), [Op::DeleteInboundQos2("c".into(), 9)]);
    // A message queued for two persistent sessions is one row in the store: both deliveries
    // refer to the same encoding of it, made once.
    let shared = delivery("fan-out", QoS::AtLeastOnce);
    let mut other = Session::new("e", limits(), true, Arc::default());
    other.expiry_interval = u32::MAX;
    s.enqueue(shared.clone());
    other.enqueue(shared);
    let (mine, theirs) = (s.take_ops(), other.take_ops());
    match (&mine[..], &theirs[..]) {
        ([Op::PutDelivery { message: a, .. }], [Op::PutDelivery { message: b, .. }]) => {
            assert!(Arc::ptr_eq(a, b), "one stored message")
        }
        other => panic!("{other:?}"),
    }
    // An ended session deletes what it holds, and journals nothing after.
    s.stored = true;
    s.end();
    assert!(matches!(&s.take_ops()[..], [.., Op::DeleteSession(c)] if c == "c"));
    s.enqueue(delivery("late", QoS::AtLeastOnce));
    assert!(s.take_ops().is_empty(), "a publisher that still held it queues nothing stored");
    // A clean session journals nothing.
    let mut clean = Session::new("d", limits(), true, Arc::default());
    clean.enqueue(delivery("m", QoS::AtLeastOnce));
    assert!(clean.take_ops().is_empty());
}

#[test]
fn memory_ceiling_sheds_qos0_first_then_everything() {
    let memory = Arc::new(QueuedBytes::default());
    let limits = Limits { memory_ceiling: 8, ..limits_with(100, 0, false, true) };
    let mut a = Session::new("a", limits, false, Arc::clone(&memory));
    let mut b = Session::new("b", limits, false, Arc::clone(&memory));
    assert_eq!(a.enqueue(delivery("12345678", QoS::AtLeastOnce)), Enqueued::Queued);
    assert_eq!(memory.total(), 8, "counted broker-wide");
    assert_eq!(
        b.enqueue(delivery("x", QoS::AtMostOnce)),
        Enqueued::Dropped(DropReason::Memory),
        "QoS 0 shed at the ceiling"
    );
    assert_eq!(b.enqueue(delivery("12", QoS::AtLeastOnce)), Enqueued::Queued, "QoS 1 still taken");
    assert_eq!(
        b.enqueue(delivery("y", QoS::AtLeastOnce)),
        Enqueued::Dropped(DropReason::Memory),
        "refused past a quarter more"
    );
    b.attach(1, Protocol::V3_1_1, usize::MAX);
    assert_eq!(payloads(&mut b), ["12"]);
    assert_eq!(memory.total(), 8, "sent messages give their bytes back");
    drop(a);
    assert_eq!(memory.total(), 0, "a discarded session gives its bytes back");
}

#[test]
fn a_stalled_subscriber_gets_no_overflow_until_it_catches_up() {
    let mut s = Session::new("c", limits(), false, Arc::default());
    s.attach(1, Protocol::V3_1_1, usize::MAX);
    for p in ["a", "b", "c"] {
        assert_eq!(s.enqueue(delivery(p, QoS::AtMostOnce)), Enqueued::Queued);
    }
    assert_eq!(s.enqueue(delivery("d", QoS::AtMostOnce)), Enqueued::Congested);
    s.mark_stalled();
    assert_eq!(s.enqueue(delivery("e", QoS::AtMostOnce)), Enqueued::Dropped(DropReason::QueueFull));
    assert!(!s.take_room_freed());
    let mut out = vec![];
    s.drain(1, &mut out, 2);
    assert!(s.take_room_freed(), "back within the limit: paused publishers are told, once");
    assert!(!s.take_room_freed());
    assert_eq!(s.enqueue(delivery("f", QoS::AtMostOnce)), Enqueued::Queued);
    assert_eq!(s.enqueue(delivery("g", QoS::AtMostOnce)), Enqueued::Congested, "overflow is back");
    // Offline sessions never overflow: nobody is reading to catch up.
    let mut offline = Session::new("o", limits(), false, Arc::default());
    for p in ["a", "b", "c"] {
        assert_eq!(offline.enqueue(delivery(p, QoS::AtLeastOnce)), Enqueued::Queued);
    }
    assert_eq!(offline.enqueue(delivery("d", QoS::AtLeastOnce)), Enqueued::Dropped(DropReason::QueueFull));
}

#[test]
fn one_ring_per_drain_and_a_drain_by_another_connection_counts_for_nothing() {
    let mut s = Session::new("r", limits(), false, Arc::default());
    s.attach(1, Protocol::V3_1_1, usize::MAX);
    s.enqueue(delivery("a", QoS::AtMostOnce));
    assert!(s.ring_needed(), "the first message rings");
    s.enqueue(delivery("b", QoS::AtMostOnce));
    assert!(!s.ring_needed(), "the drain that ring brings takes this one too");
    let mut out = vec![];
    s.drain(2, &mut out, usize::MAX);
    assert!(out.is_empty());
    s.enqueue(delivery("c", QoS::AtMostOnce));
    assert!(!s.ring_needed(), "a stale connection's drain took nothing");
    assert_eq!(payloads(&mut s), ["a", "b", "c"]);
    s.enqueue(delivery("d", QoS::AtMostOnce));
    assert!(s.ring_needed(), "after the drain a message rings again");
}

#[test]
fn a_delivery_is_small() {
    // One moves into every subscriber's queue of a fan-out and waits there while it is away.
    assert!(std::mem::size_of::<Delivery>() <= 48, "{}", std::mem::size_of::<Delivery>());
}

fn published(packets: &[Packet]) -> Vec<(String, QoS)> {
    packets
        .iter()
        .map(|p| match p {
            Packet::Publish(p) => (String::from_utf8_lossy(&p.payload).into_owned(), p.qos),
            other => panic!("unexpected {other:?}"),
        })
        .collect()
}

/// A session with a plain MQTT 3.1.1 connection attached, which gets QoS 0 encoded.
fn encoding_session(limits: Limits) -> Session {
    let mut s = Session::new("c", limits, false, Arc::default());
    s.attach(1, Protocol::V3_1_1, usize::MAX);
    s.encode_qos0(true);
    s
}

#[test]
fn qos0_queued_encoded_keeps_its_order_with_qos1_and_counts_in_the_limits() {
    let mut s = encoding_session(Limits { max_queued: 4, ..limits() });
    for (p, qos) in
        [("a", QoS::AtMostOnce), ("b", QoS::AtMostOnce), ("c", QoS::AtLeastOnce), ("d", QoS::AtMostOnce)]
    {
        assert_eq!(s.enqueue(delivery(p, qos)), Enqueued::Queued);
    }
    assert_eq!((s.queued(), s.queued_bytes()), (4, 4));
    assert_eq!(s.encoded.as_ref().map(|e| e.count()), Some(2), "d waits behind c");
    assert!(!s.has_room());
    assert_eq!(s.enqueue(delivery("e", QoS::AtMostOnce)), Enqueued::Congested);
    let mut out = vec![];
    s.drain(1, &mut out, usize::MAX);
    let expect = [("a", 0), ("b", 0), ("c", 1), ("d", 0), ("e", 0)];
    let expect: Vec<_> = expect.iter().map(|(p, q)| (p.to_string(), QoS::from_u8(*q).unwrap())).collect();
    assert_eq!(published(&out), expect);
    let Packet::Publish(c) = &out[2] else { unreachable!() };
    assert_eq!((c.packet_id, s.inflight()), (Some(1), 1), "QoS 1 encoded in the drain is in flight");
    assert_eq!((s.queued(), s.queued_bytes()), (0, 0));
    assert!(s.take_room_freed());
}

#[test]
fn qos0_encoded_for_a_client_is_dropped_when_it_leaves_or_a_5_0_client_takes_over() {
    let memory = Arc::new(QueuedBytes::default());
    let mut s = Session::new("c", limits(), false, Arc::clone(&memory));
    s.attach(1, Protocol::V3_1_1, usize::MAX);
    s.encode_qos0(true);
    s.enqueue(delivery("a", QoS::AtMostOnce));
    // The same kind of client takes over: it gets what was queued.
    s.attach(2, Protocol::V3_1_1, usize::MAX);
    s.encode_qos0(true);
    let mut out = vec![];
    s.drain(2, &mut out, usize::MAX);
    assert_eq!(published(&out).len(), 1);
    s.enqueue(delivery("b", QoS::AtMostOnce));
    // An MQTT 5 client would not read 3.x packets.
    s.attach(3, Protocol::V5, usize::MAX);
    assert_eq!((s.queued(), s.queued_bytes(), memory.total()), (0, 0, 0));
    s.attach(4, Protocol::V3_1_1, usize::MAX);
    s.encode_qos0(true);
    s.enqueue(delivery("c", QoS::AtMostOnce));
    assert!(s.detach(4, Instant::now()));
    assert_eq!((s.queued(), memory.total(), s.dropped), (0, 0, 2));
}

#[test]
fn qos0_is_not_encoded_where_the_session_must_still_decide() {
    let mut s = encoding_session(limits());
    let mut expiring = delivery("a", QoS::AtMostOnce);
    Arc::get_mut(&mut expiring.message).unwrap().expires_at = Some(Instant::now() + Duration::from_secs(60));
    s.enqueue(expiring);
    assert!(s.encoded.is_none(), "an expiry to count down");
    let mut s = Session::new("c", Limits { queue_qos0: true, ..limits() }, false, Arc::default());
    s.attach(1, Protocol::V3_1_1, usize::MAX);
    s.encode_qos0(true);
    s.enqueue(delivery("a", QoS::AtMostOnce));
    assert!(s.encoded.is_none(), "QoS 0 kept for the client while it is away");
}

#[test]
fn a_changed_access_list_drops_encoded_messages_it_now_refuses() {
    let mut s = encoding_session(limits());
    for topic in ["a/1", "b/1", "a/2"] {
        let mut d = delivery("x", QoS::AtMostOnce);
        Arc::get_mut(&mut d.message).unwrap().topic = topic.into();
        s.enqueue(d);
    }
    assert_eq!(s.drop_queued_unless(|topic| topic.starts_with("a/")), 1);
    let mut out = vec![];
    s.drain(1, &mut out, usize::MAX);
    let topics: Vec<_> = out
        .iter()
        .map(|p| match p {
            Packet::Publish(p) => p.topic.to_string(),
            _ => unreachable!(),
        })
        .collect();
    assert_eq!(topics, ["a/1", "a/2"]);
}

#[test]
fn packet_ids_skip_those_still_in_flight_across_the_wrap() {
    // Window 2: id 1 stays unacknowledged while 65,534 others come and go, so when the ids
    // wrap, 1 is skipped and 2 given.
    let mut s = Session::new("c", limits(), false, Arc::default());
    s.attach(1, Protocol::V3_1_1, usize::MAX);
    let mut out = vec![];
    s.enqueue(delivery("held", QoS::AtLeastOnce));
    s.drain(1, &mut out, usize::MAX);
    assert_eq!(ids(&out), [(Some(1), false)]);
    for expected in (2..=u16::MAX).chain([2, 3]) {
        out.clear();
        s.enqueue(delivery("x", QoS::AtLeastOnce));
        s.drain(1, &mut out, usize::MAX);
        assert_eq!(ids(&out), [(Some(expected), false)]);
        assert!(s.on_puback(expected));
    }
    assert!(s.on_puback(1), "the held one is still known by its id");
}
