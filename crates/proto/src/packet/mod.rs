//! The fourteen (fifteen in MQTT 5) control packets, the fixed header, and the entry points
//! `decode` and `Packet::encode`.

mod connect;
mod control;
mod publish;
mod subscribe;

use bytes::{Buf, BufMut, Bytes, BytesMut};

pub use connect::{ConnAck, Connect, Will};
pub use control::{Auth, Disconnect};
pub use publish::{encode_publish_v3, encoded_publish_v3_len, Ack, Publish};
pub use subscribe::{RetainHandling, SubAck, SubOptions, Subscribe, Subscription, UnsubAck, Unsubscribe};

use crate::wire::{put_varint, read_varint, varint_len, Reader};
use crate::{DecodeError, EncodeError, Protocol};

/// One MQTT control packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet {
    Connect(Box<Connect>),
    ConnAck(ConnAck),
    Publish(Publish),
    PubAck(Ack),
    PubRec(Ack),
    PubRel(Ack),
    PubComp(Ack),
    Subscribe(Subscribe),
    SubAck(SubAck),
    Unsubscribe(Unsubscribe),
    UnsubAck(UnsubAck),
    PingReq,
    PingResp,
    Disconnect(Disconnect),
    Auth(Auth),
}

/// The control packet type of the fixed header [MQTT-2.1.2].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PacketType {
    Connect = 1,
    ConnAck = 2,
    Publish = 3,
    PubAck = 4,
    PubRec = 5,
    PubRel = 6,
    PubComp = 7,
    Subscribe = 8,
    SubAck = 9,
    Unsubscribe = 10,
    UnsubAck = 11,
    PingReq = 12,
    PingResp = 13,
    Disconnect = 14,
    Auth = 15,
}

/// Decodes one packet from the front of `buf`.
///
/// Returns `Ok(None)` while the packet is incomplete (reserving room for the rest), and consumes
/// the packet's bytes once it is complete. `protocol` is the level fixed by the connection's
/// CONNECT (a CONNECT carries its own). A packet whose declared size exceeds `max_packet_size` is
/// rejected from its fixed header, before its body is buffered.
/// Most bytes `decode` reserves ahead of what has arrived.
const RESERVE_AHEAD: usize = 64 * 1024;

pub fn decode(
    buf: &mut BytesMut,
    protocol: Protocol,
    max_packet_size: usize,
) -> Result<Option<Packet>, DecodeError> {
    if buf.len() < 2 {
        return Ok(None);
    }
    let Some((remaining, len_bytes)) = read_varint(&buf[1..])? else {
        return Ok(None);
    };
    let header = 1 + len_bytes;
    let size = header + remaining as usize;
    if size > max_packet_size {
        return Err(DecodeError::PacketTooLarge { size, max: max_packet_size });
    }
    if buf.len() < size {
        // Room for what is likely to come next, never for everything announced: a peer that
        // announces 256 MB and sends nothing more must not cost 256 MB.
        buf.reserve((size - buf.len()).min(RESERVE_AHEAD));
        return Ok(None);
    }
    let first = buf[0];
    let mut frame = buf.split_to(size).freeze();
    frame.advance(header);
    Packet::decode_body(first, frame, protocol).map(Some)
}

/// The PUBACK or PUBCOMP at the front of `buf`, if it is complete and of the shortest form
/// (remaining length 2: a packet id, success, no properties, at every protocol level
/// [MQTT-3.4.2.1]): its type and packet id. A subscriber sends one for every QoS 1 or 2
/// message it gets, so a fan-out's receiver takes these without building a `Packet`; anything
/// else, a packet id of 0 included, is left to `decode`. Consumes nothing: the ack is 4 bytes.
pub fn peek_short_ack(buf: &[u8]) -> Option<(PacketType, u16)> {
    let [first, 2, high, low, ..] = *buf else {
        return None;
    };
    let kind = match first {
        0x40 => PacketType::PubAck,
        0x70 => PacketType::PubComp,
        _ => return None,
    };
    let packet_id = u16::from_be_bytes([high, low]);
    (packet_id != 0).then_some((kind, packet_id))
}

impl Packet {
    fn decode_body(first: u8, body: Bytes, protocol: Protocol) -> Result<Packet, DecodeError> {
        let (kind, flags) = (first >> 4, first & 0x0f);
        // PUBREL, SUBSCRIBE and UNSUBSCRIBE carry 0b0010; all others but PUBLISH 0 [MQTT-2.1.3-1].
        // MQTT 3.1 let those three set DUP (0b1000) on a resend; it means nothing more.
        let dup_allowed = protocol == Protocol::V3_1 && matches!(kind, 6 | 8 | 10);
        let expected_flags = match kind {
            3 => flags,
            6 | 8 | 10 if dup_allowed && flags == 0b1010 => 0b1010,
            6 | 8 | 10 => 0b0010,
            _ => 0,
        };
        if flags != expected_flags {
            return Err(DecodeError::ReservedFlags { packet_type: kind, flags });
        }
        let v5 = protocol.is_v5();
        let mut r = Reader::new(body);
        let packet = match kind {
            1 => Packet::Connect(Box::new(Connect::read(&mut r)?)),
            2 => Packet::ConnAck(ConnAck::read(&mut r, protocol)?),
            3 => Packet::Publish(Publish::read(flags, &mut r, protocol)?),
            4 => Packet::PubAck(Ack::read(PacketType::PubAck, &mut r, protocol)?),
            5 => Packet::PubRec(Ack::read(PacketType::PubRec, &mut r, protocol)?),
            6 => Packet::PubRel(Ack::read(PacketType::PubRel, &mut r, protocol)?),
            7 => Packet::PubComp(Ack::read(PacketType::PubComp, &mut r, protocol)?),
            8 => Packet::Subscribe(Subscribe::read(&mut r, protocol)?),
            9 => Packet::SubAck(SubAck::read(&mut r, protocol)?),
            10 => Packet::Unsubscribe(Unsubscribe::read(&mut r, protocol)?),
            11 => Packet::UnsubAck(UnsubAck::read(&mut r, protocol)?),
            12 => Packet::PingReq,
            13 => Packet::PingResp,
            14 => Packet::Disconnect(Disconnect::read(&mut r, protocol)?),
            15 if v5 => Packet::Auth(Auth::read(&mut r)?),
            _ => return Err(DecodeError::ReservedPacketType(kind)),
        };
        r.finish()?;
        Ok(packet)
    }

    /// The packet's type.
    pub fn packet_type(&self) -> PacketType {
        match self {
            Packet::Connect(_) => PacketType::Connect,
            Packet::ConnAck(_) => PacketType::ConnAck,
            Packet::Publish(_) => PacketType::Publish,
            Packet::PubAck(_) => PacketType::PubAck,
            Packet::PubRec(_) => PacketType::PubRec,
            Packet::PubRel(_) => PacketType::PubRel,
            Packet::PubComp(_) => PacketType::PubComp,
            Packet::Subscribe(_) => PacketType::Subscribe,
            Packet::SubAck(_) => PacketType::SubAck,
            Packet::Unsubscribe(_) => PacketType::Unsubscribe,
            Packet::UnsubAck(_) => PacketType::UnsubAck,
            Packet::PingReq => PacketType::PingReq,
            Packet::PingResp => PacketType::PingResp,
            Packet::Disconnect(_) => PacketType::Disconnect,
            Packet::Auth(_) => PacketType::Auth,
        }
    }

    fn first_byte(&self) -> u8 {
        let flags = match self {
            Packet::Publish(p) => p.header_flags(),
            Packet::PubRel(_) | Packet::Subscribe(_) | Packet::Unsubscribe(_) => 0b0010,
            _ => 0,
        };
        (self.packet_type() as u8) << 4 | flags
    }

    fn body_len(&self, protocol: Protocol) -> usize {
        match self {
            Packet::Connect(p) => p.body_len(),
            Packet::ConnAck(p) => p.body_len(protocol),
            Packet::Publish(p) => p.body_len(protocol),
            Packet::PubAck(p) | Packet::PubRec(p) | Packet::PubRel(p) | Packet::PubComp(p) => {
                p.body_len(protocol)
            }
            Packet::Subscribe(p) => p.body_len(protocol),
            Packet::SubAck(p) => p.body_len(protocol),
            Packet::Unsubscribe(p) => p.body_len(protocol),
            Packet::UnsubAck(p) => p.body_len(protocol),
            Packet::PingReq | Packet::PingResp => 0,
            Packet::Disconnect(p) => p.body_len(protocol),
            Packet::Auth(p) => p.body_len(),
        }
    }

    /// The size of the encoded packet, fixed header included: what a peer's Maximum Packet
    /// Size is compared against [MQTT-3.1.2-24].
    pub fn encoded_len(&self, protocol: Protocol) -> usize {
        let body = self.body_len(protocol);
        1 + varint_len(body) + body
    }

    /// Appends the packet, encoded for `protocol`, to `dst`. Properties and reason codes are
    /// left out below MQTT 5.
    pub fn encode(&self, protocol: Protocol, dst: &mut BytesMut) -> Result<(), EncodeError> {
        self.check(protocol)?;
        let body = self.body_len(protocol);
        if body > crate::MAX_VARINT as usize {
            return Err(EncodeError::PacketTooLarge(body));
        }
        dst.reserve(1 + varint_len(body) + body);
        dst.put_u8(self.first_byte());
        put_varint(dst, body);
        match self {
            Packet::Connect(p) => p.write(dst),
            Packet::ConnAck(p) => p.write(protocol, dst),
            Packet::Publish(p) => p.write(protocol, dst),
            Packet::PubAck(p) | Packet::PubRec(p) | Packet::PubRel(p) | Packet::PubComp(p) => {
                p.write(protocol, dst)
            }
            Packet::Subscribe(p) => p.write(protocol, dst),
            Packet::SubAck(p) => p.write(protocol, dst),
            Packet::Unsubscribe(p) => p.write(protocol, dst),
            Packet::UnsubAck(p) => p.write(protocol, dst),
            Packet::PingReq | Packet::PingResp => {}
            Packet::Disconnect(p) => p.write(protocol, dst),
            Packet::Auth(p) => p.write(dst),
        }
        Ok(())
    }

    /// Field lengths and protocol-level constraints that encoding must respect.
    fn check(&self, protocol: Protocol) -> Result<(), EncodeError> {
        use crate::wire::check_field;
        let v5 = protocol.is_v5();
        let props = |p: &crate::Properties| if v5 { p.validate_for_encode() } else { Ok(()) };
        match self {
            Packet::Connect(p) => p.check(),
            Packet::ConnAck(p) => props(&p.properties),
            Packet::Publish(p) => {
                check_field(p.topic.len())?;
                props(&p.properties)
            }
            Packet::PubAck(p) | Packet::PubRec(p) | Packet::PubRel(p) | Packet::PubComp(p) => {
                props(&p.properties)
            }
            Packet::Subscribe(p) => {
                p.filters.iter().try_for_each(|s| check_field(s.filter.len()))?;
                props(&p.properties)
            }
            Packet::SubAck(p) => props(&p.properties),
            Packet::Unsubscribe(p) => {
                p.filters.iter().try_for_each(|f| check_field(f.len()))?;
                props(&p.properties)
            }
            Packet::UnsubAck(p) => props(&p.properties),
            Packet::PingReq | Packet::PingResp => Ok(()),
            Packet::Disconnect(p) => props(&p.properties),
            Packet::Auth(p) if v5 => p.properties.validate_for_encode(),
            Packet::Auth(_) => Err(EncodeError::NotInProtocol("AUTH")),
        }
    }
}

/// Reads a non-zero packet identifier [MQTT-2.3.1-1].
fn read_packet_id(r: &mut Reader) -> Result<u16, DecodeError> {
    match r.u16()? {
        0 => Err(DecodeError::ZeroPacketId),
        id => Ok(id),
    }
}

/// Length of a properties block at this protocol level (none below 5).
fn props_len(properties: &crate::Properties, protocol: Protocol) -> usize {
    if protocol.is_v5() {
        properties.encoded_len()
    } else {
        0
    }
}

fn put_props(properties: &crate::Properties, protocol: Protocol, dst: &mut BytesMut) {
    if protocol.is_v5() {
        properties.write(dst);
    }
}

fn read_props(
    r: &mut Reader,
    protocol: Protocol,
    context: crate::properties::Context,
) -> Result<crate::Properties, DecodeError> {
    if protocol.is_v5() {
        crate::Properties::read(r, context)
    } else {
        Ok(crate::Properties::default())
    }
}

#[cfg(test)]
mod tests;
