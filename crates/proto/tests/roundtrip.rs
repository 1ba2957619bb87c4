//! Property test: for every packet type and protocol level, encode then decode gives back the
//! packet, and every strict prefix of the encoding is "incomplete", never an error; a short ack
//! peeked is what decode reads.

use cauldron_proto::*;
use proptest::collection::vec;
use proptest::prelude::*;

fn protocol() -> impl Strategy<Value = Protocol> {
    prop_oneof![Just(Protocol::V3_1), Just(Protocol::V3_1_1), Just(Protocol::V5)]
}

fn qos() -> impl Strategy<Value = QoS> {
    prop_oneof![Just(QoS::AtMostOnce), Just(QoS::AtLeastOnce), Just(QoS::ExactlyOnce)]
}

fn text() -> impl Strategy<Value = ByteString> {
    "[^\u{0}]{0,12}".prop_map(ByteString::from)
}

fn topic_name() -> impl Strategy<Value = ByteString> {
    "[a-z0-9 é$/]{1,20}".prop_map(ByteString::from)
}

fn topic_filter() -> impl Strategy<Value = ByteString> {
    (vec(prop_oneof!["[a-z]{0,4}", Just("+".to_string())], 1..4), any::<bool>()).prop_map(|(levels, hash)| {
        let mut f = levels.join("/");
        if hash {
            f.push_str("/#");
        }
        if f.is_empty() {
            f.push('+');
        }
        ByteString::from(f)
    })
}

fn binary() -> impl Strategy<Value = Bytes> {
    vec(any::<u8>(), 0..16).prop_map(Bytes::from)
}

fn packet_id() -> impl Strategy<Value = u16> {
    1..=u16::MAX
}

/// Properties valid in a message (PUBLISH, will) and common to all packets.
fn message_properties() -> impl Strategy<Value = Properties> {
    (
        proptest::option::of(any::<bool>()),
        proptest::option::of(any::<u32>()),
        proptest::option::of(text()),
        proptest::option::of(topic_name()),
        proptest::option::of(binary()),
        vec((text(), text()), 0..3),
    )
        .prop_map(|(pfi, expiry, content_type, response_topic, correlation, user)| Properties {
            payload_format_indicator: pfi,
            message_expiry_interval: expiry,
            content_type,
            response_topic,
            correlation_data: correlation,
            user_properties: user,
            ..Properties::default()
        })
}

fn reason_properties() -> impl Strategy<Value = Properties> {
    (proptest::option::of(text()), vec((text(), text()), 0..2)).prop_map(|(reason, user)| Properties {
        reason_string: reason,
        user_properties: user,
        ..Properties::default()
    })
}

fn props_for(p: Protocol, props: Properties) -> Properties {
    if p.is_v5() {
        props
    } else {
        Properties::default()
    }
}

fn connect(p: Protocol) -> impl Strategy<Value = Packet> {
    let will = (
        topic_name(),
        binary(),
        qos(),
        any::<bool>(),
        message_properties(),
        proptest::option::of(any::<u32>()),
    )
        .prop_map(move |(topic, payload, qos, retain, mut properties, delay)| {
            properties.will_delay_interval = delay;
            Will { topic, payload, qos, retain, properties: props_for(p, properties) }
        });
    let connect_props = (
        proptest::option::of(any::<u32>()),
        proptest::option::of(1..=u16::MAX),
        proptest::option::of(1..=u32::MAX),
        proptest::option::of(any::<bool>()),
    )
        .prop_map(|(expiry, receive, max_size, problem)| Properties {
            session_expiry_interval: expiry,
            receive_maximum: receive,
            maximum_packet_size: max_size,
            request_problem_information: problem,
            ..Properties::default()
        });
    (
        any::<bool>(),
        any::<u16>(),
        text(),
        proptest::option::of(will),
        proptest::option::of(text()),
        proptest::option::of(binary()),
        connect_props,
    )
        .prop_map(move |(clean_start, keep_alive, client_id, will, username, password, properties)| {
            // Below MQTT 5 a password requires a user name [MQTT-3.1.2-22].
            let password = if p.is_v5() || username.is_some() { password } else { None };
            Packet::Connect(Box::new(Connect {
                protocol: p,
                clean_start,
                keep_alive,
                client_id,
                will,
                username,
                password,
                properties: props_for(p, properties),
                bridge: false,
            }))
        })
}

fn connack(p: Protocol) -> impl Strategy<Value = Packet> {
    let codes = if p.is_v5() {
        vec![
            ReasonCode::Success,
            ReasonCode::NotAuthorized,
            ReasonCode::ServerMoved,
            ReasonCode::QuotaExceeded,
        ]
    } else {
        (0..=5).map(|c| ReasonCode::from_v3_connack(c).unwrap()).collect()
    };
    let props = (
        proptest::option::of(text()),
        proptest::option::of(any::<u16>()),
        proptest::option::of(any::<bool>()),
        reason_properties(),
    )
        .prop_map(|(assigned, keep_alive, retain, base)| Properties {
            assigned_client_identifier: assigned,
            server_keep_alive: keep_alive,
            retain_available: retain,
            maximum_qos: Some(QoS::AtLeastOnce),
            ..base
        });
    (any::<bool>(), proptest::sample::select(codes), props).prop_map(
        move |(session_present, code, properties)| {
            Packet::ConnAck(ConnAck { session_present, code, properties: props_for(p, properties) })
        },
    )
}

fn publish(p: Protocol) -> impl Strategy<Value = Packet> {
    (
        qos(),
        any::<bool>(),
        any::<bool>(),
        topic_name(),
        packet_id(),
        message_properties(),
        vec(1..=MAX_VARINT, 0..3),
        binary(),
    )
        .prop_map(move |(qos, dup, retain, topic, id, mut properties, sub_ids, payload)| {
            properties.subscription_identifiers = sub_ids;
            Packet::Publish(Publish {
                dup: dup && qos != QoS::AtMostOnce,
                qos,
                retain,
                topic,
                packet_id: (qos != QoS::AtMostOnce).then_some(id),
                properties: props_for(p, properties),
                payload,
            })
        })
}

fn ack(p: Protocol) -> impl Strategy<Value = Packet> {
    let reasons = if p.is_v5() {
        vec![
            ReasonCode::Success,
            ReasonCode::NoMatchingSubscribers,
            ReasonCode::NotAuthorized,
            ReasonCode::QuotaExceeded,
        ]
    } else {
        vec![ReasonCode::Success]
    };
    (0..4u8, packet_id(), proptest::sample::select(reasons), reason_properties()).prop_map(
        move |(kind, packet_id, reason, properties)| {
            let properties = props_for(p, properties);
            match kind {
                0 => Packet::PubAck(Ack { packet_id, reason, properties }),
                1 => Packet::PubRec(Ack { packet_id, reason, properties }),
                // PUBREL and PUBCOMP only know success and "packet identifier not found".
                2 => Packet::PubRel(Ack { packet_id, reason: ReasonCode::Success, properties }),
                _ => Packet::PubComp(
                    Ack {
                        packet_id,
                        reason: ReasonCode::PacketIdentifierNotFound,
                        properties: props_for(p, Properties::default()),
                    }
                    .normalize(p),
                ),
            }
        },
    )
}

trait Normalize {
    fn normalize(self, p: Protocol) -> Self;
}

impl Normalize for Ack {
    /// Below MQTT 5 an acknowledgement carries no reason: it reads back as success.
    fn normalize(mut self, p: Protocol) -> Ack {
        if !p.is_v5() {
            self.reason = ReasonCode::Success;
        }
        self
    }
}

fn subscribe(p: Protocol) -> impl Strategy<Value = Packet> {
    let options = (qos(), any::<bool>(), any::<bool>(), 0..3u8).prop_map(move |(qos, nl, rap, rh)| {
        if !p.is_v5() {
            return SubOptions { qos, ..SubOptions::default() };
        }
        let retain_handling =
            [RetainHandling::OnSubscribe, RetainHandling::OnNewSubscribe, RetainHandling::Never][rh as usize];
        SubOptions { qos, no_local: nl, retain_as_published: rap, retain_handling }
    });
    let filters =
        vec((topic_filter(), options).prop_map(|(filter, options)| Subscription { filter, options }), 1..4);
    (packet_id(), filters, proptest::option::of(1..=MAX_VARINT), vec((text(), text()), 0..2)).prop_map(
        move |(packet_id, filters, sub_id, user)| {
            let properties = Properties {
                subscription_identifiers: sub_id.into_iter().collect(),
                user_properties: user,
                ..Properties::default()
            };
            Packet::Subscribe(Subscribe { packet_id, filters, properties: props_for(p, properties) })
        },
    )
}

fn suback(p: Protocol) -> impl Strategy<Value = Packet> {
    let codes = if p.is_v5() {
        vec![
            ReasonCode::Success,
            ReasonCode::GrantedQoS1,
            ReasonCode::GrantedQoS2,
            ReasonCode::NotAuthorized,
            ReasonCode::TopicFilterInvalid,
        ]
    } else {
        vec![
            ReasonCode::Success,
            ReasonCode::GrantedQoS1,
            ReasonCode::GrantedQoS2,
            ReasonCode::UnspecifiedError,
        ]
    };
    (packet_id(), vec(proptest::sample::select(codes), 1..5), reason_properties()).prop_map(
        move |(packet_id, codes, properties)| {
            Packet::SubAck(SubAck { packet_id, codes, properties: props_for(p, properties) })
        },
    )
}

fn unsubscribe(p: Protocol) -> impl Strategy<Value = Packet> {
    (packet_id(), vec(topic_filter(), 1..4), reason_properties()).prop_map(
        move |(packet_id, filters, mut properties)| {
            properties.reason_string = None;
            Packet::Unsubscribe(Unsubscribe { packet_id, filters, properties: props_for(p, properties) })
        },
    )
}

fn unsuback(p: Protocol) -> impl Strategy<Value = Packet> {
    let codes = vec(
        proptest::sample::select(vec![
            ReasonCode::Success,
            ReasonCode::NoSubscriptionExisted,
            ReasonCode::NotAuthorized,
        ]),
        1..4,
    );
    (packet_id(), codes, reason_properties()).prop_map(move |(packet_id, codes, properties)| {
        let codes = if p.is_v5() { codes } else { Vec::new() };
        Packet::UnsubAck(UnsubAck { packet_id, codes, properties: props_for(p, properties) })
    })
}

fn disconnect_and_auth(p: Protocol) -> impl Strategy<Value = Packet> {
    let reasons = vec![
        ReasonCode::Success,
        ReasonCode::DisconnectWithWill,
        ReasonCode::SessionTakenOver,
        ReasonCode::ServerShuttingDown,
    ];
    (
        proptest::sample::select(reasons),
        reason_properties(),
        proptest::option::of(any::<u32>()),
        any::<bool>(),
    )
        .prop_map(move |(reason, mut properties, expiry, auth)| {
            if auth && p.is_v5() {
                properties.authentication_method = Some("SCRAM-SHA-256".into());
                return Packet::Auth(Auth { reason: ReasonCode::ContinueAuthentication, properties });
            }
            properties.session_expiry_interval = expiry;
            let disconnect = if p.is_v5() { Disconnect { reason, properties } } else { Disconnect::normal() };
            Packet::Disconnect(disconnect)
        })
}

fn any_packet() -> impl Strategy<Value = (Protocol, Packet)> {
    protocol().prop_flat_map(|p| {
        let packet = prop_oneof![
            connect(p),
            connack(p),
            publish(p),
            ack(p),
            subscribe(p),
            suback(p),
            unsubscribe(p),
            unsuback(p),
            disconnect_and_auth(p),
            Just(Packet::PingReq),
            Just(Packet::PingResp),
        ];
        (Just(p), packet)
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn encode_then_decode_is_identity((protocol, packet) in any_packet()) {
        let mut buf = BytesMut::new();
        packet.encode(protocol, &mut buf).unwrap();
        prop_assert_eq!(buf.len(), packet.encoded_len(protocol));
        let bytes = buf.clone().freeze();
        for cut in 0..bytes.len() {
            let mut partial = BytesMut::from(&bytes[..cut]);
            prop_assert_eq!(decode(&mut partial, protocol, usize::MAX), Ok(None));
        }
        let decoded = decode(&mut buf, protocol, usize::MAX).unwrap();
        prop_assert_eq!(decoded, Some(packet));
        prop_assert!(buf.is_empty());
    }

    /// What `peek_short_ack` takes is exactly what `decode` reads from the same bytes.
    #[test]
    fn a_peeked_short_ack_is_what_decode_reads(
        head in prop_oneof![Just(0x40u8), Just(0x70), Just(0x50), Just(0x62), any::<u8>()],
        rest in vec(any::<u8>(), 0..8),
        p in protocol(),
    ) {
        let mut bytes = vec![head, 2];
        bytes.extend(rest);
        if let Some((kind, packet_id)) = peek_short_ack(&bytes) {
            let mut buf = BytesMut::from(&bytes[..]);
            let expected = match kind {
                PacketType::PubAck => Packet::PubAck(Ack::new(packet_id)),
                _ => Packet::PubComp(Ack::new(packet_id)),
            };
            prop_assert_eq!(decode(&mut buf, p, usize::MAX), Ok(Some(expected)));
            prop_assert_eq!(buf.len(), bytes.len() - 4);
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in vec(any::<u8>(), 0..64), p in protocol()) {
        let mut buf = BytesMut::from(&bytes[..]);
        while let Ok(Some(_)) = decode(&mut buf, p, 1 << 16) {}
    }
}
