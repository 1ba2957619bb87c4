//! PUBLISH [MQTT-3.3] and its acknowledgements PUBACK, PUBREC, PUBREL, PUBCOMP [MQTT-3.4-3.7].

use bytes::{BufMut, Bytes, BytesMut};
use bytestring::ByteString;

use super::{props_len, put_props, read_packet_id, read_props, PacketType};
use crate::properties::Context;
use crate::wire::{put_binary, Reader};
use crate::{DecodeError, Properties, Protocol, QoS, ReasonCode};

/// An application message on its way from a sender to a receiver. `topic` and `payload` are
/// slices of the buffer the packet was read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publish {
    pub dup: bool,
    pub qos: QoS,
    pub retain: bool,
    /// Empty only in MQTT 5 when a topic alias stands for it.
    pub topic: ByteString,
    /// Present exactly when `qos` is 1 or 2.
    pub packet_id: Option<u16>,
    pub properties: Properties,
    pub payload: Bytes,
}

impl Publish {
    /// A QoS 0 message with no properties.
    pub fn new(topic: impl Into<ByteString>, payload: impl Into<Bytes>) -> Publish {
        Publish {
            dup: false,
            qos: QoS::AtMostOnce,
            retain: false,
            topic: topic.into(),
            packet_id: None,
            properties: Properties::default(),
            payload: payload.into(),
        }
    }

    pub(super) fn header_flags(&self) -> u8 {
        u8::from(self.dup) << 3 | (self.qos as u8) << 1 | u8::from(self.retain)
    }

    pub(super) fn read(flags: u8, r: &mut Reader, protocol: Protocol) -> Result<Publish, DecodeError> {
        let dup = flags & 0x08 != 0;
        let qos = QoS::from_u8((flags >> 1) & 0x03)?;
        if dup && qos == QoS::AtMostOnce {
            return Err(DecodeError::DupOnQoS0);
        }
        let topic = r.string()?;
        let packet_id = match qos {
            QoS::AtMostOnce => None,
            _ => Some(read_packet_id(r)?),
        };
        let properties = read_props(r, protocol, Context::Publish)?;
        if topic.is_empty() {
            // An empty topic is only valid as a reference to a topic alias [MQTT-3.3.2-1].
            if properties.topic_alias.is_none() {
                return Err(DecodeError::MissingTopic);
            }
        } else {
            crate::topic::validate_name(&topic)?;
        }
        Ok(Publish { dup, qos, retain: flags & 0x01 != 0, topic, packet_id, properties, payload: r.rest() })
    }

    pub(super) fn body_len(&self, protocol: Protocol) -> usize {
        let id = if self.qos == QoS::AtMostOnce { 0 } else { 2 };
        2 + self.topic.len() + id + props_len(&self.properties, protocol) + self.payload.len()
    }

    pub(super) fn write(&self, protocol: Protocol, dst: &mut BytesMut) {
        put_binary(dst, self.topic.as_bytes());
        if self.qos != QoS::AtMostOnce {
            dst.put_u16(self.packet_id.unwrap_or(0));
        }
        put_props(&self.properties, protocol, dst);
        dst.put_slice(&self.payload);
    }
}

/// Appends a PUBLISH for an MQTT 3.1 or 3.1.1 receiver (no properties, DUP 0) straight from
/// its parts: the bytes `Packet::Publish(..).encode(Protocol::V3_1_1, dst)` gives, without
/// building a `Publish`. A broker sends one message to many such subscribers.
pub fn encode_publish_v3(
    dst: &mut BytesMut,
    topic: &str,
    payload: &[u8],
    qos: QoS,
    retain: bool,
    packet_id: Option<u16>,
) -> Result<(), crate::EncodeError> {
    crate::wire::check_field(topic.len())?;
    let body = publish_v3_body_len(topic.len(), payload.len(), qos);
    if body > crate::MAX_VARINT as usize {
        return Err(crate::EncodeError::PacketTooLarge(body));
    }
    dst.reserve(1 + crate::wire::varint_len(body) + body);
    dst.put_u8((PacketType::Publish as u8) << 4 | (qos as u8) << 1 | u8::from(retain));
    crate::wire::put_varint(dst, body);
    put_binary(dst, topic.as_bytes());
    if qos != QoS::AtMostOnce {
        dst.put_u16(packet_id.unwrap_or(0));
    }
    dst.put_slice(payload);
    Ok(())
}

/// The whole length of the PUBLISH `encode_publish_v3` writes, fixed header included.
pub fn encoded_publish_v3_len(topic_len: usize, payload_len: usize, qos: QoS) -> usize {
    let body = publish_v3_body_len(topic_len, payload_len, qos);
    1 + crate::wire::varint_len(body) + body
}

fn publish_v3_body_len(topic_len: usize, payload_len: usize, qos: QoS) -> usize {
    let id = if qos == QoS::AtMostOnce { 0 } else { 2 };
    2 + topic_len + id + payload_len
}

/// PUBACK, PUBREC, PUBREL or PUBCOMP; which one is given by the `Packet` variant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ack {
    pub packet_id: u16,
    pub reason: ReasonCode,
    pub properties: Properties,
}

impl Ack {
    /// A successful acknowledgement without properties.
    pub fn new(packet_id: u16) -> Ack {
        Ack { packet_id, reason: ReasonCode::Success, properties: Properties::default() }
    }

    pub(super) fn read(kind: PacketType, r: &mut Reader, protocol: Protocol) -> Result<Ack, DecodeError> {
        let packet_id = read_packet_id(r)?;
        if !protocol.is_v5() || r.remaining() == 0 {
            // A remaining length of 2 means success and no properties [MQTT-3.4.2.1].
            return Ok(Ack::new(packet_id));
        }
        let (context, name) = match kind {
            PacketType::PubAck => (Context::PubAck, "PUBACK"),
            PacketType::PubRec => (Context::PubRec, "PUBREC"),
            PacketType::PubRel => (Context::PubRel, "PUBREL"),
            _ => (Context::PubComp, "PUBCOMP"),
        };
        let byte = r.u8()?;
        let reason = ReasonCode::from_u8(byte)
            .filter(|code| valid_reason(kind, *code))
            .ok_or(DecodeError::InvalidReasonCode { code: byte, context: name })?;
        let properties =
            if r.remaining() > 0 { Properties::read(r, context)? } else { Properties::default() };
        Ok(Ack { packet_id, reason, properties })
    }

    pub(super) fn body_len(&self, protocol: Protocol) -> usize {
        match (protocol.is_v5(), self.reason, self.properties.is_empty()) {
            (false, _, _) | (true, ReasonCode::Success, true) => 2,
            (true, _, true) => 3,
            (true, _, false) => 3 + self.properties.encoded_len(),
        }
    }

    pub(super) fn write(&self, protocol: Protocol, dst: &mut BytesMut) {
        dst.put_u16(self.packet_id);
        let len = self.body_len(protocol);
        if len > 2 {
            dst.put_u8(self.reason as u8);
        }
        if len > 3 {
            self.properties.write(dst);
        }
    }
}

/// The reason codes each acknowledgement may carry [MQTT-3.4.2.1, 3.5.2.1, 3.6.2.1, 3.7.2.1].
fn valid_reason(kind: PacketType, code: ReasonCode) -> bool {
    use ReasonCode::*;
    match kind {
        PacketType::PubAck | PacketType::PubRec => matches!(
            code,
            Success
                | NoMatchingSubscribers
                | UnspecifiedError
                | ImplementationSpecificError
                | NotAuthorized
                | TopicNameInvalid
                | PacketIdentifierInUse
                | QuotaExceeded
                | PayloadFormatInvalid
        ),
        _ => matches!(code, Success | PacketIdentifierNotFound),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Packet;

    #[test]
    fn the_direct_v3_publish_is_the_packet_encoded() {
        for (qos, id, retain) in [
            (QoS::AtMostOnce, None, false),
            (QoS::AtLeastOnce, Some(7), true),
            (QoS::ExactlyOnce, Some(65535), false),
        ] {
            let payload = vec![0xAB; 200];
            let mut publish = Publish::new("a/b/c", payload.clone());
            (publish.qos, publish.packet_id, publish.retain) = (qos, id, retain);
            let mut expected = BytesMut::new();
            Packet::Publish(publish).encode(Protocol::V3_1_1, &mut expected).unwrap();
            let mut direct = BytesMut::new();
            encode_publish_v3(&mut direct, "a/b/c", &payload, qos, retain, id).unwrap();
            assert_eq!(direct, expected, "{qos:?}");
            assert_eq!(encoded_publish_v3_len(5, payload.len(), qos), direct.len());
        }
        let long = "x".repeat(70_000);
        assert!(encode_publish_v3(&mut BytesMut::new(), &long, b"", QoS::AtMostOnce, false, None).is_err());
    }
}
