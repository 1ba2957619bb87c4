//! CONNECT [MQTT-3.1] and CONNACK [MQTT-3.2].

use bytes::{BufMut, Bytes, BytesMut};
use bytestring::ByteString;

use super::{props_len, put_props, read_props};
use crate::properties::Context;
use crate::wire::{check_field, put_binary, Reader};
use crate::{DecodeError, EncodeError, Properties, Protocol, QoS, ReasonCode};

/// A client's request to open a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connect {
    pub protocol: Protocol,
    /// Clean Session (3.x) or Clean Start (5.0).
    pub clean_start: bool,
    /// Seconds; 0 disables keep alive.
    pub keep_alive: u16,
    pub client_id: ByteString,
    pub will: Option<Will>,
    pub username: Option<ByteString>,
    pub password: Option<Bytes>,
    pub properties: Properties,
    /// A 3.x bridge announcing itself (Mosquitto's `try_private`): the protocol level carries
    /// 0x80, and the server should not send back what the bridge published to it.
    pub bridge: bool,
}

/// Set on the protocol level by a 3.x bridge (see `Connect::bridge`); MQTT 5 bridges use
/// No Local instead.
const BRIDGE_LEVEL: u8 = 0x80;

/// The message the server publishes when the connection ends without DISCONNECT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Will {
    pub topic: ByteString,
    pub payload: Bytes,
    pub qos: QoS,
    pub retain: bool,
    pub properties: Properties,
}

const USERNAME: u8 = 0x80;
const PASSWORD: u8 = 0x40;
const WILL_RETAIN: u8 = 0x20;
const WILL_FLAG: u8 = 0x04;
const CLEAN_START: u8 = 0x02;
const RESERVED: u8 = 0x01;

impl Connect {
    pub(super) fn read(r: &mut Reader) -> Result<Connect, DecodeError> {
        let name = r.binary()?;
        let level = r.u8()?;
        let bridge = level & BRIDGE_LEVEL != 0 && level != 5 | BRIDGE_LEVEL;
        let protocol = match (&name[..], if bridge { level & !BRIDGE_LEVEL } else { level }) {
            (b"MQTT", 4) => Protocol::V3_1_1,
            (b"MQTT", 5) => Protocol::V5,
            (b"MQIsdp", 3) => Protocol::V3_1,
            (b"MQTT" | b"MQIsdp", _) => return Err(DecodeError::UnsupportedProtocolLevel(level)),
            _ => return Err(DecodeError::InvalidProtocolName(String::from_utf8_lossy(&name).into_owned())),
        };
        let flags = r.u8()?;
        if flags & RESERVED != 0 {
            return Err(DecodeError::ConnectReservedFlag);
        }
        let will_qos = QoS::from_u8((flags >> 3) & 0x03)?; // [MQTT-3.1.2-14]
        let will_retain = flags & WILL_RETAIN != 0;
        let has_will = flags & WILL_FLAG != 0;
        if !has_will && (will_qos != QoS::AtMostOnce || will_retain) {
            return Err(DecodeError::WillFlagsWithoutWill); // [MQTT-3.1.2-13, 3.1.2-15]
        }
        if !protocol.is_v5() && flags & PASSWORD != 0 && flags & USERNAME == 0 {
            return Err(DecodeError::PasswordWithoutUsername);
        }
        let keep_alive = r.u16()?;
        let properties = read_props(r, protocol, Context::Connect)?;
        let client_id = r.string()?;
        let will = if has_will {
            let properties = read_props(r, protocol, Context::Will)?;
            let topic = r.string()?;
            crate::topic::validate_name(&topic)?;
            Some(Will { topic, payload: r.binary()?, qos: will_qos, retain: will_retain, properties })
        } else {
            None
        };
        let username = if flags & USERNAME != 0 { Some(r.string()?) } else { None };
        let password = if flags & PASSWORD != 0 { Some(r.binary()?) } else { None };
        Ok(Connect {
            protocol,
            clean_start: flags & CLEAN_START != 0,
            keep_alive,
            client_id,
            will,
            username,
            password,
            properties,
            bridge,
        })
    }

    pub(super) fn check(&self) -> Result<(), EncodeError> {
        check_field(self.client_id.len())?;
        if let Some(will) = &self.will {
            check_field(will.topic.len())?;
            check_field(will.payload.len())?;
        }
        check_field(self.username.as_ref().map_or(0, |u| u.len()))?;
        check_field(self.password.as_ref().map_or(0, |p| p.len()))?;
        if self.protocol.is_v5() {
            self.properties.validate_for_encode()?;
        }
        Ok(())
    }

    pub(super) fn body_len(&self) -> usize {
        let p = self.protocol;
        let mut len = 2 + p.name().len() + 1 + 1 + 2 + props_len(&self.properties, p);
        len += 2 + self.client_id.len();
        if let Some(will) = &self.will {
            len += props_len(&will.properties, p) + 2 + will.topic.len() + 2 + will.payload.len();
        }
        len += self.username.as_ref().map_or(0, |u| 2 + u.len());
        len += self.password.as_ref().map_or(0, |pw| 2 + pw.len());
        len
    }

    pub(super) fn write(&self, dst: &mut BytesMut) {
        let p = self.protocol;
        put_binary(dst, p.name().as_bytes());
        dst.put_u8(match self.bridge && !p.is_v5() {
            true => p.level() | BRIDGE_LEVEL,
            false => p.level(),
        });
        let mut flags = 0;
        if self.username.is_some() {
            flags |= USERNAME;
        }
        if self.password.is_some() {
            flags |= PASSWORD;
        }
        if let Some(will) = &self.will {
            flags |= WILL_FLAG | (will.qos as u8) << 3;
            if will.retain {
                flags |= WILL_RETAIN;
            }
        }
        if self.clean_start {
            flags |= CLEAN_START;
        }
        dst.put_u8(flags);
        dst.put_u16(self.keep_alive);
        put_props(&self.properties, p, dst);
        put_binary(dst, self.client_id.as_bytes());
        if let Some(will) = &self.will {
            put_props(&will.properties, p, dst);
            put_binary(dst, will.topic.as_bytes());
            put_binary(dst, &will.payload);
        }
        if let Some(username) = &self.username {
            put_binary(dst, username.as_bytes());
        }
        if let Some(password) = &self.password {
            put_binary(dst, password);
        }
    }
}

/// The server's answer to CONNECT. Below MQTT 5 the reason is sent as the nearest 3.1.1
/// return code (see [`ReasonCode::to_v3_connack`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnAck {
    pub session_present: bool,
    pub code: ReasonCode,
    pub properties: Properties,
}

impl ConnAck {
    pub(super) fn read(r: &mut Reader, protocol: Protocol) -> Result<ConnAck, DecodeError> {
        let flags = r.u8()?;
        if flags & 0xfe != 0 {
            return Err(DecodeError::ConnAckReservedFlags);
        }
        let byte = r.u8()?;
        let code =
            if protocol.is_v5() { ReasonCode::from_u8(byte) } else { ReasonCode::from_v3_connack(byte) }
                .ok_or(DecodeError::InvalidReasonCode { code: byte, context: "CONNACK" })?;
        let properties = read_props(r, protocol, Context::ConnAck)?;
        Ok(ConnAck { session_present: flags & 1 != 0, code, properties })
    }

    pub(super) fn body_len(&self, protocol: Protocol) -> usize {
        2 + props_len(&self.properties, protocol)
    }

    pub(super) fn write(&self, protocol: Protocol, dst: &mut BytesMut) {
        dst.put_u8(u8::from(self.session_present));
        let code = if protocol.is_v5() { self.code as u8 } else { self.code.to_v3_connack() };
        dst.put_u8(code);
        put_props(&self.properties, protocol, dst);
    }
}
