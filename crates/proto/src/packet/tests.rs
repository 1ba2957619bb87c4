//! Byte-exact packets written by hand from the specification's figures, and malformed input.

use super::*;
use crate::{Properties, QoS, ReasonCode};

const MAX: usize = 1 << 20;

fn decode_all(bytes: &[u8], protocol: Protocol) -> Result<Option<Packet>, DecodeError> {
    let mut buf = BytesMut::from(bytes);
    let packet = decode(&mut buf, protocol, MAX)?;
    if packet.is_some() {
        assert!(buf.is_empty(), "decoder left bytes behind");
    }
    Ok(packet)
}

fn encoded(packet: &Packet, protocol: Protocol) -> Vec<u8> {
    let mut dst = BytesMut::new();
    packet.encode(protocol, &mut dst).unwrap();
    assert_eq!(dst.len(), packet.encoded_len(protocol));
    dst.to_vec()
}

/// Both directions: the bytes decode to the packet and the packet encodes to the bytes.
fn exact(bytes: &[u8], packet: Packet, protocol: Protocol) {
    assert_eq!(decode_all(bytes, protocol).unwrap(), Some(packet.clone()));
    assert_eq!(encoded(&packet, protocol), bytes);
}

#[test]
fn connect_3_1_1_with_will_user_and_password() {
    #[rustfmt::skip]
    let bytes = [
        0x10, 32,
        0, 4, b'M', b'Q', b'T', b'T', 4,
        0b1110_1110, // user, password, will retain, will QoS 1, will, clean session
        0, 60,
        0, 3, b'c', b'i', b'd',
        0, 3, b'w', b'/', b't',
        0, 2, b'b', b'y',
        0, 2, b'u', b'1',
        0, 2, b'p', b'w',
    ];
    let connect = Connect {
        protocol: Protocol::V3_1_1,
        clean_start: true,
        keep_alive: 60,
        client_id: "cid".into(),
        will: Some(Will {
            topic: "w/t".into(),
            payload: Bytes::from_static(b"by"),
            qos: QoS::AtLeastOnce,
            retain: true,
            properties: Properties::default(),
        }),
        username: Some("u1".into()),
        password: Some(Bytes::from_static(b"pw")),
        properties: Properties::default(),
        bridge: false,
    };
    exact(&bytes, Packet::Connect(Box::new(connect)), Protocol::V3_1_1);
}

#[test]
fn connect_3_1_uses_mqisdp() {
    #[rustfmt::skip]
    let bytes = [0x10, 17, 0, 6, b'M', b'Q', b'I', b's', b'd', b'p', 3, 0x02, 0, 10, 0, 3, b'a', b' ', b'b'];
    let Some(Packet::Connect(c)) = decode_all(&bytes, Protocol::V3_1_1).unwrap() else { panic!() };
    assert_eq!(c.protocol, Protocol::V3_1);
    assert_eq!(&c.client_id[..], "a b");
    assert_eq!(encoded(&Packet::Connect(c), Protocol::V3_1), bytes);
}

#[test]
fn connect_5_with_properties() {
    #[rustfmt::skip]
    let bytes = [
        0x10, 26,
        0, 4, b'M', b'Q', b'T', b'T', 5, 0x02, 0, 30,
        8, 0x11, 0, 0, 0, 120, 0x21, 0, 10, // session expiry 120, receive maximum 10
        0, 0,                               // empty client id
        // no will, no user
        // pad to length: (fixed later)
    ];
    // Remaining length: 10 (variable header) + 9 (properties) + 2 (client id) = 21.
    let mut bytes = bytes.to_vec();
    bytes[1] = 21;
    let connect = Connect {
        protocol: Protocol::V5,
        clean_start: true,
        keep_alive: 30,
        client_id: "".into(),
        will: None,
        username: None,
        password: None,
        properties: Properties {
            session_expiry_interval: Some(120),
            receive_maximum: Some(10),
            ..Properties::default()
        },
        bridge: false,
    };
    exact(&bytes, Packet::Connect(Box::new(connect)), Protocol::V5);
}

#[test]
fn connect_rejections_name_their_rule() {
    let connect = |name: &[u8], level: u8, flags: u8| {
        let mut body = vec![0, name.len() as u8];
        body.extend_from_slice(name);
        body.extend_from_slice(&[level, flags, 0, 0, 0, 1, b'x']);
        let mut bytes = vec![0x10, body.len() as u8];
        bytes.extend(body);
        decode_all(&bytes, Protocol::V3_1_1)
    };
    assert_eq!(connect(b"MQTT", 6, 2), Err(DecodeError::UnsupportedProtocolLevel(6)));
    assert_eq!(connect(b"MQIsdp", 4, 2), Err(DecodeError::UnsupportedProtocolLevel(4)));
    assert!(matches!(connect(b"HTTP", 4, 2), Err(DecodeError::InvalidProtocolName(_))));
    assert_eq!(connect(b"MQTT", 4, 0x03), Err(DecodeError::ConnectReservedFlag));
    assert_eq!(connect(b"MQTT", 4, 0x08), Err(DecodeError::WillFlagsWithoutWill));
    assert_eq!(connect(b"MQTT", 4, 0x20), Err(DecodeError::WillFlagsWithoutWill));
    assert_eq!(connect(b"MQTT", 4, 0x1c), Err(DecodeError::InvalidQoS));
    assert_eq!(connect(b"MQTT", 4, 0x42), Err(DecodeError::PasswordWithoutUsername));
    assert_eq!(
        DecodeError::UnsupportedProtocolLevel(6).reason_code(),
        ReasonCode::UnsupportedProtocolVersion
    );
}

#[test]
fn connack_in_both_generations() {
    let ack = |code| ConnAck { session_present: true, code, properties: Properties::default() };
    exact(&[0x20, 2, 1, 0], Packet::ConnAck(ack(ReasonCode::Success)), Protocol::V3_1_1);
    exact(
        &[0x20, 2, 0, 5],
        Packet::ConnAck(ConnAck { session_present: false, ..ack(ReasonCode::NotAuthorized) }),
        Protocol::V3_1_1,
    );
    exact(&[0x20, 3, 1, 0x87, 0], Packet::ConnAck(ack(ReasonCode::NotAuthorized)), Protocol::V5);
    assert_eq!(decode_all(&[0x20, 2, 2, 0], Protocol::V3_1_1), Err(DecodeError::ConnAckReservedFlags));
    assert!(decode_all(&[0x20, 2, 0, 6], Protocol::V3_1_1).is_err());
}

#[test]
fn publish_qos0_and_qos2() {
    exact(
        &[0x30, 7, 0, 3, b'a', b'/', b'b', b'h', b'i'],
        Packet::Publish(Publish::new("a/b", Bytes::from_static(b"hi"))),
        Protocol::V3_1_1,
    );
    let publish = Publish {
        dup: true,
        qos: QoS::ExactlyOnce,
        retain: true,
        topic: "t".into(),
        packet_id: Some(10),
        properties: Properties::default(),
        payload: Bytes::new(),
    };
    exact(&[0x3d, 5, 0, 1, b't', 0, 10], Packet::Publish(publish.clone()), Protocol::V3_1_1);
    exact(&[0x3d, 6, 0, 1, b't', 0, 10, 0], Packet::Publish(publish), Protocol::V5);
}

#[test]
fn publish_is_zero_copy() {
    let mut buf = BytesMut::from(&[0x30, 7, 0, 3, b'a', b'/', b'b', b'h', b'i'][..]);
    let start = buf.as_ptr() as usize;
    let Some(Packet::Publish(p)) = decode(&mut buf, Protocol::V3_1_1, MAX).unwrap() else { panic!() };
    assert_eq!(p.payload.as_ptr() as usize, start + 7, "payload points into the read buffer");
    assert_eq!(p.topic.as_bytes().as_ptr() as usize, start + 4);
}

#[test]
fn publish_rejections() {
    let v4 = Protocol::V3_1_1;
    assert_eq!(decode_all(&[0x36, 5, 0, 1, b't', 0, 1], v4), Err(DecodeError::InvalidQoS));
    assert_eq!(decode_all(&[0x38, 3, 0, 1, b't'], v4), Err(DecodeError::DupOnQoS0));
    assert_eq!(decode_all(&[0x32, 5, 0, 1, b't', 0, 0], v4), Err(DecodeError::ZeroPacketId));
    assert_eq!(decode_all(&[0x30, 3, 0, 1, b'+'], v4), Err(DecodeError::WildcardInTopicName));
    assert_eq!(decode_all(&[0x30, 3, 0, 1, b'#'], v4), Err(DecodeError::WildcardInTopicName));
    assert_eq!(
        decode_all(&[0x30, 2, 0, 0], v4),
        Err(DecodeError::EmptyTopic.clone()).or(Err(DecodeError::MissingTopic))
    );
    assert_eq!(decode_all(&[0x30, 3, 0, 1, 0], v4), Err(DecodeError::NullCharacter));
    // MQTT 5: an empty topic is fine with a topic alias, not without.
    assert!(decode_all(&[0x30, 6, 0, 0, 3, 0x23, 0, 1], Protocol::V5).unwrap().is_some());
    assert_eq!(decode_all(&[0x30, 3, 0, 0, 0], Protocol::V5), Err(DecodeError::MissingTopic));
    // A topic alias of 0 is a protocol error [MQTT-3.3.2-8].
    assert_eq!(
        decode_all(&[0x30, 7, 0, 1, b't', 3, 0x23, 0, 0], Protocol::V5),
        Err(DecodeError::InvalidPropertyValue { id: 0x23, value: 0 })
    );
}

#[test]
fn property_rules() {
    let v5 = Protocol::V5;
    // Duplicate message expiry interval.
    assert_eq!(
        decode_all(&[0x30, 14, 0, 1, b't', 10, 0x02, 0, 0, 0, 1, 0x02, 0, 0, 0, 2], v5),
        Err(DecodeError::DuplicateProperty(0x02))
    );
    // Session expiry interval is not a PUBLISH property.
    assert_eq!(
        decode_all(&[0x30, 9, 0, 1, b't', 5, 0x11, 0, 0, 0, 1], v5),
        Err(DecodeError::PropertyNotAllowed { id: 0x11, context: "PUBLISH" })
    );
    assert_eq!(decode_all(&[0x30, 5, 0, 1, b't', 1, 0x7f], v5), Err(DecodeError::UnknownProperty(0x7f)));
    // Payload format indicator 2 is invalid.
    assert_eq!(
        decode_all(&[0x30, 6, 0, 1, b't', 2, 0x01, 2], v5),
        Err(DecodeError::InvalidPropertyValue { id: 0x01, value: 2 })
    );
    // Property length longer than the packet.
    assert_eq!(decode_all(&[0x30, 5, 0, 1, b't', 9, 0x01], v5), Err(DecodeError::Truncated));
    // User properties repeat and keep their order.
    #[rustfmt::skip]
    let bytes = [0x30, 19, 0, 1, b't', 14, 0x26, 0, 1, b'b', 0, 1, b'1', 0x26, 0, 1, b'a', 0, 1, b'2', b'!'];
    let Some(Packet::Publish(p)) = decode_all(&bytes, v5).unwrap() else { panic!() };
    let names: Vec<&str> = p.properties.user_properties.iter().map(|(n, _)| &n[..]).collect();
    assert_eq!(names, ["b", "a"]);
    assert_eq!(encoded(&Packet::Publish(p), v5), bytes);
}

#[test]
fn acks_short_and_long_forms() {
    let v5 = Protocol::V5;
    exact(&[0x40, 2, 0, 7], Packet::PubAck(Ack::new(7)), Protocol::V3_1_1);
    exact(&[0x62, 2, 0, 7], Packet::PubRel(Ack::new(7)), Protocol::V3_1_1);
    exact(&[0x40, 2, 0, 7], Packet::PubAck(Ack::new(7)), v5);
    let no_subs = Ack { reason: ReasonCode::NoMatchingSubscribers, ..Ack::new(7) };
    exact(&[0x40, 3, 0, 7, 0x10], Packet::PubAck(no_subs), v5);
    // A reason code with an empty property length decodes as the short form.
    assert_eq!(decode_all(&[0x50, 4, 0, 7, 0, 0], v5).unwrap(), Some(Packet::PubRec(Ack::new(7))));
    // PUBREL with 0x10 is not allowed.
    assert!(decode_all(&[0x62, 3, 0, 7, 0x10], v5).is_err());
    // PUBREL must carry flags 0b0010 [MQTT-3.6.1-1].
    assert_eq!(
        decode_all(&[0x60, 2, 0, 7], v5),
        Err(DecodeError::ReservedFlags { packet_type: 6, flags: 0 })
    );
}

#[test]
fn subscribe_and_suback() {
    let v4 = Protocol::V3_1_1;
    let sub = Subscribe {
        packet_id: 1,
        filters: vec![
            Subscription {
                filter: "a/+".into(),
                options: SubOptions { qos: QoS::AtLeastOnce, ..SubOptions::default() },
            },
            Subscription { filter: "#".into(), options: SubOptions::default() },
        ],
        properties: Properties::default(),
    };
    exact(&[0x82, 12, 0, 1, 0, 3, b'a', b'/', b'+', 1, 0, 1, b'#', 0], Packet::Subscribe(sub), v4);
    assert_eq!(decode_all(&[0x82, 2, 0, 1], v4), Err(DecodeError::EmptySubscribe));
    assert_eq!(
        decode_all(&[0x80, 6, 0, 1, 0, 1, b'#', 0], v4),
        Err(DecodeError::ReservedFlags { packet_type: 8, flags: 0 })
    );
    assert_eq!(
        decode_all(&[0x82, 6, 0, 1, 0, 1, b'#', 4], v4),
        Err(DecodeError::SubscriptionOptionsReserved)
    );
    assert_eq!(decode_all(&[0x82, 6, 0, 1, 0, 1, b'#', 3], v4), Err(DecodeError::InvalidQoS));
    assert_eq!(
        decode_all(&[0x82, 7, 0, 1, 0, 2, b'#', b'a', 0], v4),
        Err(DecodeError::InvalidMultiLevelWildcard)
    );
    assert_eq!(
        decode_all(&[0x82, 7, 0, 1, 0, 0, 1, b'#', 0x30], Protocol::V5),
        Err(DecodeError::InvalidRetainHandling)
    );
    let v5_sub = Subscribe {
        packet_id: 9,
        filters: vec![Subscription {
            filter: "x".into(),
            options: SubOptions {
                qos: QoS::ExactlyOnce,
                no_local: true,
                retain_as_published: true,
                retain_handling: RetainHandling::Never,
            },
        }],
        properties: Properties { subscription_identifiers: vec![200], ..Properties::default() },
    };
    exact(&[0x82, 10, 0, 9, 3, 0x0b, 0xc8, 0x01, 0, 1, b'x', 0x2e], Packet::Subscribe(v5_sub), Protocol::V5);
    let codes = vec![ReasonCode::GrantedQoS1, ReasonCode::NotAuthorized];
    let suback = SubAck { packet_id: 1, codes, properties: Properties::default() };
    assert_eq!(encoded(&Packet::SubAck(suback.clone()), v4), [0x90, 4, 0, 1, 1, 0x80]);
    exact(&[0x90, 5, 0, 1, 0, 1, 0x87], Packet::SubAck(suback), Protocol::V5);
}

#[test]
fn unsubscribe_unsuback_ping_disconnect() {
    let v4 = Protocol::V3_1_1;
    let unsub = Unsubscribe { packet_id: 2, filters: vec!["a/#".into()], properties: Properties::default() };
    exact(&[0xa2, 7, 0, 2, 0, 3, b'a', b'/', b'#'], Packet::Unsubscribe(unsub), v4);
    assert_eq!(decode_all(&[0xa2, 2, 0, 2], v4), Err(DecodeError::EmptyUnsubscribe));
    let unsuback = UnsubAck { packet_id: 2, codes: vec![], properties: Properties::default() };
    exact(&[0xb0, 2, 0, 2], Packet::UnsubAck(unsuback), v4);
    let unsuback5 = UnsubAck {
        packet_id: 2,
        codes: vec![ReasonCode::NoSubscriptionExisted],
        properties: Properties::default(),
    };
    exact(&[0xb0, 4, 0, 2, 0, 0x11], Packet::UnsubAck(unsuback5), Protocol::V5);
    exact(&[0xc0, 0], Packet::PingReq, v4);
    exact(&[0xd0, 0], Packet::PingResp, v4);
    exact(&[0xe0, 0], Packet::Disconnect(Disconnect::normal()), v4);
    exact(&[0xe0, 0], Packet::Disconnect(Disconnect::normal()), Protocol::V5);
    exact(
        &[0xe0, 1, 0x8e],
        Packet::Disconnect(Disconnect::with_reason(ReasonCode::SessionTakenOver)),
        Protocol::V5,
    );
    assert_eq!(decode_all(&[0xc0, 1, 0], v4), Err(DecodeError::TrailingBytes(1)));
    assert_eq!(decode_all(&[0xe1, 0], v4), Err(DecodeError::ReservedFlags { packet_type: 14, flags: 1 }));
}

#[test]
fn auth_is_mqtt5_only() {
    let auth = Auth {
        reason: ReasonCode::ContinueAuthentication,
        properties: Properties {
            authentication_method: Some("SCRAM-SHA-256".into()),
            ..Properties::default()
        },
    };
    let bytes = encoded(&Packet::Auth(auth.clone()), Protocol::V5);
    assert_eq!(decode_all(&bytes, Protocol::V5).unwrap(), Some(Packet::Auth(auth.clone())));
    assert_eq!(decode_all(&bytes, Protocol::V3_1_1), Err(DecodeError::ReservedPacketType(15)));
    assert!(Packet::Auth(auth).encode(Protocol::V3_1_1, &mut BytesMut::new()).is_err());
    assert_eq!(decode_all(&[0x00, 0], Protocol::V5), Err(DecodeError::ReservedPacketType(0)));
}

#[test]
fn incomplete_input_is_none_and_size_is_checked_from_the_header() {
    let full = [0x30, 7, 0, 3, b'a', b'/', b'b', b'h', b'i'];
    for cut in 0..full.len() {
        let mut buf = BytesMut::from(&full[..cut]);
        assert_eq!(decode(&mut buf, Protocol::V3_1_1, MAX), Ok(None), "cut at {cut}");
        assert_eq!(buf.len(), cut, "nothing consumed");
    }
    // Remaining length 200 MB announced in four bytes: refused before any body arrives.
    let mut buf = BytesMut::from(&[0x30, 0x80, 0x80, 0x80, 0x60][..]);
    assert_eq!(
        decode(&mut buf, Protocol::V3_1_1, 1024),
        Err(DecodeError::PacketTooLarge { size: 5 + 0x60 * 128 * 128 * 128, max: 1024 })
    );
    assert!(buf.capacity() < 1024);
    let mut buf = BytesMut::from(&[0x30, 0xff, 0xff, 0xff, 0xff, 0x01][..]);
    assert_eq!(decode(&mut buf, Protocol::V3_1_1, MAX), Err(DecodeError::VarIntTooLong));
}

#[test]
fn two_packets_in_one_buffer() {
    let mut buf = BytesMut::from(&[0xc0, 0, 0xd0, 0, 0xe0][..]);
    assert_eq!(decode(&mut buf, Protocol::V3_1_1, MAX), Ok(Some(Packet::PingReq)));
    assert_eq!(decode(&mut buf, Protocol::V3_1_1, MAX), Ok(Some(Packet::PingResp)));
    assert_eq!(decode(&mut buf, Protocol::V3_1_1, MAX), Ok(None));
}

/// A header announcing 256 MB reserves at most 64 KiB: memory follows what arrives.
#[test]
fn an_announced_size_is_not_reserved_up_front() {
    let mut buf = BytesMut::from(&[0x30, 0xff, 0xff, 0xff, 0x7f][..]);
    assert_eq!(decode(&mut buf, Protocol::V3_1_1, usize::MAX), Ok(None));
    assert!(buf.capacity() <= 128 * 1024, "reserved {}", buf.capacity());
}

/// MQTT 3.1 allowed DUP on a resent PUBREL (Mosquitto's 03-publish-c2b-disconnect-qos2); 3.1.1
/// reserves the bit.
#[test]
fn a_3_1_pubrel_may_carry_dup() {
    let pubrel = [0x6a, 2, 0, 1];
    assert_eq!(decode_all(&pubrel, Protocol::V3_1), Ok(Some(Packet::PubRel(Ack::new(1)))));
    assert!(decode_all(&pubrel, Protocol::V3_1_1).is_err());
}

#[test]
fn short_acks_peek_as_decode_reads_them() {
    for protocol in [Protocol::V3_1_1, Protocol::V5] {
        for (bytes, kind) in
            [([0x40, 2, 0x12, 0x34], PacketType::PubAck), ([0x70, 2, 0, 1], PacketType::PubComp)]
        {
            let (peeked, id) = peek_short_ack(&bytes).expect("a short ack");
            assert_eq!(peeked, kind);
            let ack = Ack::new(id);
            let expected = match kind {
                PacketType::PubAck => Packet::PubAck(ack),
                _ => Packet::PubComp(ack),
            };
            assert_eq!(decode_all(&bytes, protocol).unwrap(), Some(expected));
        }
    }
    // Left to `decode`: incomplete, packet id 0, a reason code, PUBREC and PUBREL, wrong flags.
    for bytes in [
        &[0x40, 2, 0][..],
        &[0x40, 2, 0, 0],
        &[0x40, 3, 0, 1, 0x10],
        &[0x50, 2, 0, 1],
        &[0x62, 2, 0, 1],
        &[0x41, 2, 0, 1],
    ] {
        assert_eq!(peek_short_ack(bytes), None, "{bytes:?}");
    }
}
