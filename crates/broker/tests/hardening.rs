//! Attacks on the broker that once worked: logins that stall everyone, a CONNECT that
//! reserves memory it never sends.
mod common;

use std::sync::Arc;

use cauldron_broker::auth::password::{hash_pbkdf2, PasswordFile, Passwords};
use cauldron_broker::Config;
use cauldron_proto::{Packet, Protocol, ReasonCode};
use common::*;

/// Password hashes are slow on purpose. They once ran on the runtime's worker, so a burst of
/// logins stalled every connection on it. On a single-threaded runtime, a client that is
/// already connected is answered while several slow logins are still being checked.
#[tokio::test(flavor = "current_thread")]
async fn slow_password_checks_do_not_stall_other_connections() {
    // Each check takes a good part of a second unoptimised; a ping takes microseconds.
    let hash = hash_pbkdf2(b"right", 60_000).unwrap();
    let file = PasswordFile::parse(&format!("jane:{hash}\n")).unwrap();
    let file_for_timing = file.clone();
    let config = Config {
        password_file: Arc::new(Passwords::new(Some(file))),
        allow_anonymous: true,
        auth_failure_delay: std::time::Duration::ZERO,
        sys_interval: 0,
        ..Config::default()
    };
    let broker = TestBroker::with_config(config).await;
    let mut pinger = Raw::session(broker.addr, "pinger", true).await.0;
    let mut logins = Vec::new();
    for i in 0..2 {
        let mut connect = Raw::connect_packet(&format!("guess-{i}"), true, Protocol::V3_1_1);
        connect.username = Some("jane".into());
        connect.password = Some(b"wrong".to_vec().into());
        let mut raw = Raw::connect(broker.addr, Protocol::V3_1_1).await;
        raw.send(Packet::Connect(Box::new(connect))).await;
        logins.push(raw);
    }
    // Let the broker take the CONNECTs and start checking them.
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    let started = std::time::Instant::now();
    pinger.send(Packet::PingReq).await;
    assert!(matches!(pinger.recv().await, Some(Packet::PingResp)));
    let round_trip = started.elapsed();
    // What one check costs here, measured the same way it runs in the broker.
    let started = std::time::Instant::now();
    assert!(!file_for_timing.check("jane", b"wrong"));
    let one_check = started.elapsed();
    // Inline hashing made the ping wait for at least one whole check.
    assert!(round_trip * 4 < one_check, "ping {round_trip:?} while one check takes {one_check:?}");
    for mut raw in logins {
        assert!(matches!(raw.recv().await, Some(Packet::ConnAck(a)) if a.code == ReasonCode::NotAuthorized));
    }
}

/// A user who does not exist is refused after the same work as one who does: the file's
/// costliest hash is checked for them.
#[test]
fn absent_users_cost_the_costliest_hash() {
    let slow = hash_pbkdf2(b"x", 50_000).unwrap();
    let zeros = "A".repeat(86) + "=="; // 64 bytes, the length of a SHA-512 hash
    let file = PasswordFile::parse(&format!("fast:$6$c2FsdA==${zeros}\nslow:{slow}\n")).unwrap();
    let time = |user: &str| {
        let started = std::time::Instant::now();
        assert!(!file.check(user, b"wrong"));
        started.elapsed()
    };
    let (present, absent, fast) = (time("slow"), time("nobody"), time("fast"));
    // Not a benchmark: a 50,000-round PBKDF2 against one SHA-512 is a factor of thousands,
    // so only "did the absent user pay for a slow hash" is asked.
    assert!(absent > fast * 20, "absent {absent:?} vs a sha512 check {fast:?}");
    assert!(present > fast * 20);
}

/// `10 ff ff ff 7f` announces a 256 MB CONNECT; the broker once reserved all of it up front,
/// and 100 such connections aborted the process. Before CONNECT only 256 KiB are accepted, the
/// announcement is refused from the header, and the broker serves on.
#[tokio::test]
async fn a_huge_announced_connect_is_refused_from_its_header() {
    let broker = TestBroker::start().await;
    let mut peers = Vec::new();
    for _ in 0..100 {
        let mut raw = Raw::connect(broker.addr, Protocol::V3_1_1).await;
        raw.send_bytes(&[0x10, 0xff, 0xff, 0xff, 0x7f]).await;
        peers.push(raw);
    }
    for raw in &mut peers {
        assert!(raw.expect_closed().await.is_empty());
    }
    // A big but plausible CONNECT (a 64 KB client id) still connects.
    let id = "a".repeat(65_000);
    let (_raw, ack) = Raw::handshake(broker.addr, Raw::connect_packet(&id, true, Protocol::V5)).await;
    assert_eq!(ack.code, ReasonCode::Success);
}

/// A burst of 5000 QoS 1 publishes to one connected subscriber that reads: once 5000 PUBACKs
/// and 1000 deliveries (4000 dropped for the full queue); Mosquitto delivers all. The publisher
/// is paused while the subscriber catches up, so every acknowledged message arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_qos1_burst_reaches_a_reading_subscriber_whole() {
    let broker = TestBroker::start().await;
    let (sub, mut messages) = broker.client("reader").await;
    sub.subscribe("burst", cauldron_proto::QoS::AtLeastOnce).await.unwrap();
    let mut publisher = Raw::session(broker.addr, "burster", true).await.0;
    let count = 5000u16;
    let mut bytes = Vec::new();
    for id in 1..=count {
        let mut publish = cauldron_proto::Publish::new("burst", id.to_be_bytes().to_vec());
        (publish.qos, publish.packet_id) = (cauldron_proto::QoS::AtLeastOnce, Some(id));
        let mut buf = bytes::BytesMut::new();
        Packet::Publish(publish).encode(Protocol::V3_1_1, &mut buf).unwrap();
        bytes.extend_from_slice(&buf);
    }
    publisher.send_bytes(&bytes).await; // all at once
    let acks = tokio::spawn(async move {
        let mut acked = 0;
        while acked < count {
            match publisher.recv().await {
                Some(Packet::PubAck(_)) => acked += 1,
                other => panic!("{other:?}"),
            }
        }
        acked
    });
    for expected in 1..=count {
        let message = next(&mut messages).await;
        assert_eq!(&message.payload[..], expected.to_be_bytes(), "in order, none missing");
    }
    assert_eq!(acks.await.unwrap(), count);
    assert_eq!(broker.broker.metrics.snapshot().messages_dropped, 0);
}
