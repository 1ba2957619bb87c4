//! SUBSCRIBE, SUBACK, UNSUBSCRIBE and UNSUBACK [MQTT-3.8 to 3.11].

use bytes::{BufMut, BytesMut};
use bytestring::ByteString;

use super::{props_len, put_props, read_packet_id, read_props};
use crate::properties::Context;
use crate::wire::{put_binary, Reader};
use crate::{DecodeError, Properties, Protocol, QoS, ReasonCode};

/// When retained messages are sent for a new subscription (MQTT 5) [MQTT-3.8.3.1].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RetainHandling {
    /// Send retained messages at the time of the subscribe.
    #[default]
    OnSubscribe = 0,
    /// Send them only if the subscription did not exist yet.
    OnNewSubscribe = 1,
    /// Do not send them.
    Never = 2,
}

/// The options byte of one topic filter. Below MQTT 5 only `qos` is on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SubOptions {
    pub qos: QoS,
    pub no_local: bool,
    pub retain_as_published: bool,
    pub retain_handling: RetainHandling,
}

impl SubOptions {
    fn read(byte: u8, protocol: Protocol) -> Result<SubOptions, DecodeError> {
        let reserved = if protocol.is_v5() { 0xc0 } else { 0xfc };
        if byte & reserved != 0 {
            return Err(DecodeError::SubscriptionOptionsReserved);
        }
        let retain_handling = match (byte >> 4) & 0x03 {
            0 => RetainHandling::OnSubscribe,
            1 => RetainHandling::OnNewSubscribe,
            2 => RetainHandling::Never,
            _ => return Err(DecodeError::InvalidRetainHandling),
        };
        Ok(SubOptions {
            qos: QoS::from_u8(byte & 0x03)?,
            no_local: byte & 0x04 != 0,
            retain_as_published: byte & 0x08 != 0,
            retain_handling,
        })
    }

    fn to_byte(self, protocol: Protocol) -> u8 {
        let mut byte = self.qos as u8;
        if protocol.is_v5() {
            byte |= u8::from(self.no_local) << 2
                | u8::from(self.retain_as_published) << 3
                | (self.retain_handling as u8) << 4;
        }
        byte
    }
}

/// One topic filter of a SUBSCRIBE with its options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    pub filter: ByteString,
    pub options: SubOptions,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscribe {
    pub packet_id: u16,
    pub filters: Vec<Subscription>,
    pub properties: Properties,
}

impl Subscribe {
    pub(super) fn read(r: &mut Reader, protocol: Protocol) -> Result<Subscribe, DecodeError> {
        let packet_id = read_packet_id(r)?;
        let properties = read_props(r, protocol, Context::Subscribe)?;
        let mut filters = Vec::new();
        while r.remaining() > 0 {
            let filter = r.string()?;
            crate::topic::validate_filter(&filter)?;
            let options = SubOptions::read(r.u8()?, protocol)?;
            filters.push(Subscription { filter, options });
        }
        if filters.is_empty() {
            return Err(DecodeError::EmptySubscribe);
        }
        Ok(Subscribe { packet_id, filters, properties })
    }

    pub(super) fn body_len(&self, protocol: Protocol) -> usize {
        let filters: usize = self.filters.iter().map(|s| 3 + s.filter.len()).sum();
        2 + props_len(&self.properties, protocol) + filters
    }

    pub(super) fn write(&self, protocol: Protocol, dst: &mut BytesMut) {
        dst.put_u16(self.packet_id);
        put_props(&self.properties, protocol, dst);
        for s in &self.filters {
            put_binary(dst, s.filter.as_bytes());
            dst.put_u8(s.options.to_byte(protocol));
        }
    }
}

/// One reason code per filter of the SUBSCRIBE, in order [MQTT-3.9.3-1]. Below MQTT 5 every
/// failure is sent as 0x80.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubAck {
    pub packet_id: u16,
    pub codes: Vec<ReasonCode>,
    pub properties: Properties,
}

impl SubAck {
    pub(super) fn read(r: &mut Reader, protocol: Protocol) -> Result<SubAck, DecodeError> {
        let packet_id = read_packet_id(r)?;
        let properties = read_props(r, protocol, Context::SubAck)?;
        let mut codes = Vec::with_capacity(r.remaining());
        while r.remaining() > 0 {
            let byte = r.u8()?;
            let code = match (protocol.is_v5(), byte) {
                (false, 0x80) => Some(ReasonCode::UnspecifiedError),
                (false, 0..=2) | (true, _) => ReasonCode::from_u8(byte),
                (false, _) => None,
            };
            codes.push(code.ok_or(DecodeError::InvalidReasonCode { code: byte, context: "SUBACK" })?);
        }
        Ok(SubAck { packet_id, codes, properties })
    }

    pub(super) fn body_len(&self, protocol: Protocol) -> usize {
        2 + props_len(&self.properties, protocol) + self.codes.len()
    }

    pub(super) fn write(&self, protocol: Protocol, dst: &mut BytesMut) {
        dst.put_u16(self.packet_id);
        put_props(&self.properties, protocol, dst);
        for code in &self.codes {
            let byte = if !protocol.is_v5() && code.is_error() { 0x80 } else { *code as u8 };
            dst.put_u8(byte);
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsubscribe {
    pub packet_id: u16,
    pub filters: Vec<ByteString>,
    pub properties: Properties,
}

impl Unsubscribe {
    pub(super) fn read(r: &mut Reader, protocol: Protocol) -> Result<Unsubscribe, DecodeError> {
        let packet_id = read_packet_id(r)?;
        let properties = read_props(r, protocol, Context::Unsubscribe)?;
        let mut filters = Vec::new();
        while r.remaining() > 0 {
            let filter = r.string()?;
            crate::topic::validate_filter(&filter)?;
            filters.push(filter);
        }
        if filters.is_empty() {
            return Err(DecodeError::EmptyUnsubscribe);
        }
        Ok(Unsubscribe { packet_id, filters, properties })
    }

    pub(super) fn body_len(&self, protocol: Protocol) -> usize {
        2 + props_len(&self.properties, protocol) + self.filters.iter().map(|f| 2 + f.len()).sum::<usize>()
    }

    pub(super) fn write(&self, protocol: Protocol, dst: &mut BytesMut) {
        dst.put_u16(self.packet_id);
        put_props(&self.properties, protocol, dst);
        for filter in &self.filters {
            put_binary(dst, filter.as_bytes());
        }
    }
}

/// Below MQTT 5 an UNSUBACK carries only the packet id; `codes` is then empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnsubAck {
    pub packet_id: u16,
    pub codes: Vec<ReasonCode>,
    pub properties: Properties,
}

impl UnsubAck {
    pub(super) fn read(r: &mut Reader, protocol: Protocol) -> Result<UnsubAck, DecodeError> {
        let packet_id = read_packet_id(r)?;
        let properties = read_props(r, protocol, Context::UnsubAck)?;
        let mut codes = Vec::new();
        while protocol.is_v5() && r.remaining() > 0 {
            let byte = r.u8()?;
            codes.push(
                ReasonCode::from_u8(byte)
                    .ok_or(DecodeError::InvalidReasonCode { code: byte, context: "UNSUBACK" })?,
            );
        }
        Ok(UnsubAck { packet_id, codes, properties })
    }

    pub(super) fn body_len(&self, protocol: Protocol) -> usize {
        if protocol.is_v5() {
            2 + self.properties.encoded_len() + self.codes.len()
        } else {
            2
        }
    }

    pub(super) fn write(&self, protocol: Protocol, dst: &mut BytesMut) {
        dst.put_u16(self.packet_id);
        if protocol.is_v5() {
            self.properties.write(dst);
            dst.extend(self.codes.iter().map(|c| *c as u8));
        }
    }
}
