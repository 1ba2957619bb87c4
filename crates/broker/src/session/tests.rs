use super::*;
use cauldron_proto::{Properties, Publish};

fn limits() -> Limits {
    Limits {
        max_inflight: 2,
        max_queued: 3,
        max_queued_bytes: 0,
        queue_qos0: false,
        drop_oldest: false,
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
        subscription_ids: vec![],
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
    let mut s = Session::new("c", limits(), false);
    s.attach(1, Protocol::V3_1_1, usize::MAX);
    for p in ["a", "b", "c"] {
        assert_eq!(s.enqueue(delivery(p, QoS::AtLeastOnce)), Enqueued::Queued);
    }
    assert_eq!(
        s.enqueue(delivery("d", QoS::AtLeastOnce)),
        Enqueued::Dropped
    );
    let mut out = vec![];
    s.drain(1, &mut out, usize::MAX);
    assert_eq!(
        ids(&out),
        [(Some(1), false), (Some(2), false)],
        "window of 2"
    );
    assert!(s.on_puback(1));
    assert!(!s.on_puback(1), "second ack of the same id is ignored");
    out.clear();
    s.drain(1, &mut out, usize::MAX);
    assert_eq!(ids(&out), [(Some(3), false)]);
    assert_eq!(s.dropped, 1);
}

#[test]
fn reconnect_resends_with_dup_in_order_and_pubrel_for_released() {
    let mut s = Session::new("c", limits(), false);
    s.attach(1, Protocol::V3_1_1, usize::MAX);
    s.enqueue(delivery("a", QoS::ExactlyOnce));
    s.enqueue(delivery("b", QoS::AtLeastOnce));
    let mut out = vec![];
    s.drain(1, &mut out, usize::MAX);
    assert_eq!(s.on_pubrec(1, false), Some(Packet::PubRel(Ack::new(1))));
    assert!(s.detach(1, Instant::now()));
    // A packet from the old connection after detaching produces nothing.
    assert_eq!(s.drain(1, &mut out, usize::MAX), (0, 0));
    let resent = s.attach(2, Protocol::V3_1_1, usize::MAX);
    assert_eq!(ids(&resent), [(Some(1), false), (Some(2), true)]);
    assert!(matches!(resent[0], Packet::PubRel(_)));
    assert!(s.on_pubcomp(1));
    assert!(s.on_puback(2));
    assert_eq!(s.inflight(), 0);
}

#[test]
fn offline_session_keeps_qos1_and_drops_qos0() {
    let mut s = Session::new("c", limits(), false);
    assert_eq!(
        s.enqueue(delivery("zero", QoS::AtMostOnce)),
        Enqueued::Dropped
    );
    assert_eq!(
        s.enqueue(delivery("one", QoS::AtLeastOnce)),
        Enqueued::Queued
    );
    s.attach(7, Protocol::V3_1_1, usize::MAX);
    let mut out = vec![];
    s.drain(7, &mut out, usize::MAX);
    assert_eq!(ids(&out), [(Some(1), false)]);
}

#[test]
fn qos2_receive_deduplicates_until_release() {
    let mut s = Session::new("c", limits(), false);
    assert!(s.receive_qos2(5));
    assert!(!s.receive_qos2(5), "retransmission is not forwarded again");
    assert!(s.release_qos2(5));
    assert!(!s.release_qos2(5));
    assert!(s.receive_qos2(5), "a released id starts a new message");
}

#[test]
fn receive_maximum_caps_the_window() {
    let mut s = Session::new("c", limits(), false);
    s.attach(1, Protocol::V5, 1);
    s.enqueue(delivery("a", QoS::AtLeastOnce));
    s.enqueue(delivery("b", QoS::AtLeastOnce));
    let mut out = vec![];
    s.drain(1, &mut out, usize::MAX);
    assert_eq!(out.len(), 1);
}
