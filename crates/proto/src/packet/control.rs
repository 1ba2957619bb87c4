//! DISCONNECT [MQTT-3.14] and AUTH [MQTT-3.15]: a reason code and properties, both optional on
//! the wire in MQTT 5, absent below it.

use bytes::{BufMut, BytesMut};

use crate::properties::Context;
use crate::wire::Reader;
use crate::{DecodeError, Properties, Protocol, ReasonCode};

/// The end of a connection, sent by either side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disconnect {
    pub reason: ReasonCode,
    pub properties: Properties,
}

impl Disconnect {
    /// A normal disconnection (reason 0x00) without properties.
    pub fn normal() -> Disconnect {
        Disconnect::with_reason(ReasonCode::Success)
    }

    pub fn with_reason(reason: ReasonCode) -> Disconnect {
        Disconnect { reason, properties: Properties::default() }
    }

    pub(super) fn read(r: &mut Reader, protocol: Protocol) -> Result<Disconnect, DecodeError> {
        if !protocol.is_v5() {
            return Ok(Disconnect::normal());
        }
        let (reason, properties) = read_reason_and_props(r, Context::Disconnect, "DISCONNECT")?;
        Ok(Disconnect { reason, properties })
    }

    pub(super) fn body_len(&self, protocol: Protocol) -> usize {
        if protocol.is_v5() {
            reason_and_props_len(self.reason, &self.properties)
        } else {
            0
        }
    }

    pub(super) fn write(&self, protocol: Protocol, dst: &mut BytesMut) {
        if protocol.is_v5() {
            write_reason_and_props(self.reason, &self.properties, dst);
        }
    }
}

/// Enhanced authentication exchange, MQTT 5 only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Auth {
    pub reason: ReasonCode,
    pub properties: Properties,
}

impl Auth {
    pub(super) fn read(r: &mut Reader) -> Result<Auth, DecodeError> {
        let (reason, properties) = read_reason_and_props(r, Context::Auth, "AUTH")?;
        if !matches!(
            reason,
            ReasonCode::Success | ReasonCode::ContinueAuthentication | ReasonCode::ReAuthenticate
        ) {
            return Err(DecodeError::InvalidReasonCode { code: reason as u8, context: "AUTH" });
        }
        Ok(Auth { reason, properties })
    }

    pub(super) fn body_len(&self) -> usize {
        reason_and_props_len(self.reason, &self.properties)
    }

    pub(super) fn write(&self, dst: &mut BytesMut) {
        write_reason_and_props(self.reason, &self.properties, dst);
    }
}

/// A remaining length of 0 means reason 0x00 and no properties [MQTT-3.14.2.1, 3.15.2.1].
fn read_reason_and_props(
    r: &mut Reader,
    context: Context,
    name: &'static str,
) -> Result<(ReasonCode, Properties), DecodeError> {
    if r.remaining() == 0 {
        return Ok((ReasonCode::Success, Properties::default()));
    }
    let byte = r.u8()?;
    let reason =
        ReasonCode::from_u8(byte).ok_or(DecodeError::InvalidReasonCode { code: byte, context: name })?;
    let properties = if r.remaining() > 0 { Properties::read(r, context)? } else { Properties::default() };
    Ok((reason, properties))
}

fn reason_and_props_len(reason: ReasonCode, properties: &Properties) -> usize {
    match (reason, properties.is_empty()) {
        (ReasonCode::Success, true) => 0,
        (_, true) => 1,
        _ => 1 + properties.encoded_len(),
    }
}

fn write_reason_and_props(reason: ReasonCode, properties: &Properties, dst: &mut BytesMut) {
    match (reason, properties.is_empty()) {
        (ReasonCode::Success, true) => {}
        (_, true) => dst.put_u8(reason as u8),
        _ => {
            dst.put_u8(reason as u8);
            properties.write(dst);
        }
    }
}
