//! MQTT 5 properties [MQTT-2.2.2]: one typed field per property, the table of which packets may
//! carry which property, and their wire encoding. MQTT 3.x packets carry none.

use bytes::{BufMut, Bytes, BytesMut};
use bytestring::ByteString;

use crate::wire::{check_field, put_binary, put_varint, Reader};
use crate::{DecodeError, EncodeError, QoS, MAX_VARINT};

/// Where a property list appears; a property is only valid in some of them [MQTT-2.2.2-2].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Context {
    Will = 0,
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
    Disconnect = 14,
    Auth = 15,
}

impl Context {
    fn name(self) -> &'static str {
        match self {
            Context::Will => "will properties",
            Context::Connect => "CONNECT",
            Context::ConnAck => "CONNACK",
            Context::Publish => "PUBLISH",
            Context::PubAck => "PUBACK",
            Context::PubRec => "PUBREC",
            Context::PubRel => "PUBREL",
            Context::PubComp => "PUBCOMP",
            Context::Subscribe => "SUBSCRIBE",
            Context::SubAck => "SUBACK",
            Context::Unsubscribe => "UNSUBSCRIBE",
            Context::UnsubAck => "UNSUBACK",
            Context::Disconnect => "DISCONNECT",
            Context::Auth => "AUTH",
        }
    }
}

/// One value type of the property table, read and written as the spec encodes it.
trait Value: Sized {
    fn read(r: &mut Reader, id: u8) -> Result<Self, DecodeError>;
    fn wire_len(&self) -> usize;
    fn write(&self, dst: &mut BytesMut);
    /// Length fields must fit in 16 bits [MQTT-1.5.4]; fixed-size values always do.
    fn check(&self) -> Result<(), EncodeError> {
        Ok(())
    }
}

/// "Byte" properties that hold a boolean: any value but 0 or 1 is a protocol error.
impl Value for bool {
    fn read(r: &mut Reader, id: u8) -> Result<bool, DecodeError> {
        match r.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            value => Err(DecodeError::InvalidPropertyValue { id, value: value.into() }),
        }
    }
    fn wire_len(&self) -> usize {
        1
    }
    fn write(&self, dst: &mut BytesMut) {
        dst.put_u8(u8::from(*self));
    }
}

/// Maximum QoS is 0 or 1 when present [MQTT-3.2.2-9].
impl Value for QoS {
    fn read(r: &mut Reader, id: u8) -> Result<QoS, DecodeError> {
        match r.u8()? {
            0 => Ok(QoS::AtMostOnce),
            1 => Ok(QoS::AtLeastOnce),
            value => Err(DecodeError::InvalidPropertyValue { id, value: value.into() }),
        }
    }
    fn wire_len(&self) -> usize {
        1
    }
    fn write(&self, dst: &mut BytesMut) {
        dst.put_u8(*self as u8);
    }
}

impl Value for u16 {
    fn read(r: &mut Reader, _: u8) -> Result<u16, DecodeError> {
        r.u16()
    }
    fn wire_len(&self) -> usize {
        2
    }
    fn write(&self, dst: &mut BytesMut) {
        dst.put_u16(*self);
    }
}

impl Value for u32 {
    fn read(r: &mut Reader, _: u8) -> Result<u32, DecodeError> {
        r.u32()
    }
    fn wire_len(&self) -> usize {
        4
    }
    fn write(&self, dst: &mut BytesMut) {
        dst.put_u32(*self);
    }
}

impl Value for ByteString {
    fn read(r: &mut Reader, _: u8) -> Result<ByteString, DecodeError> {
        r.string()
    }
    fn wire_len(&self) -> usize {
        2 + str::len(self)
    }
    fn write(&self, dst: &mut BytesMut) {
        put_binary(dst, self.as_bytes());
    }
    fn check(&self) -> Result<(), EncodeError> {
        check_field(str::len(self))
    }
}

impl Value for Bytes {
    fn read(r: &mut Reader, _: u8) -> Result<Bytes, DecodeError> {
        r.binary()
    }
    fn wire_len(&self) -> usize {
        2 + Bytes::len(self)
    }
    fn write(&self, dst: &mut BytesMut) {
        put_binary(dst, self);
    }
    fn check(&self) -> Result<(), EncodeError> {
        check_field(Bytes::len(self))
    }
}

const SUBSCRIPTION_IDENTIFIER: u8 = 0x0B;
const USER_PROPERTY: u8 = 0x26;

/// Bit set of the contexts in which a property may appear.
const fn ctx(list: &[Context]) -> u16 {
    let mut mask = 0;
    let mut i = 0;
    while i < list.len() {
        mask |= 1 << list[i] as u16;
        i += 1;
    }
    mask
}

use Context::*;
const MESSAGE: u16 = ctx(&[Publish, Will]);
const REASON_STRING: u16 =
    ctx(&[ConnAck, PubAck, PubRec, PubRel, PubComp, SubAck, UnsubAck, Disconnect, Auth]);
const EVERYWHERE: u16 = u16::MAX;

macro_rules! properties {
    ($($(#[$doc:meta])* $id:literal $field:ident: $ty:ty, in $allowed:expr;)*) => {
        /// The properties of an MQTT 5 packet, one typed field per property of Table 2-4.
        /// `Default` is "no properties"; order of user properties is kept as sent.
        #[derive(Debug, Clone, Default, PartialEq, Eq)]
        pub struct Properties {
            $($(#[$doc])* pub $field: Option<$ty>,)*
            /// 0x0B Subscription Identifier: one in SUBSCRIBE, one per matching subscription in
            /// a PUBLISH sent to a client.
            pub subscription_identifiers: Vec<u32>,
            /// 0x26 User Property: name/value pairs, repeatable, order preserved [MQTT-3.3.2-18].
            pub user_properties: Vec<(ByteString, ByteString)>,
        }

        fn allowed(id: u8) -> Option<u16> {
            match id {
                $($id => Some($allowed),)*
                SUBSCRIPTION_IDENTIFIER => Some(ctx(&[Publish, Subscribe])),
                USER_PROPERTY => Some(EVERYWHERE),
                _ => None,
            }
        }

        impl Properties {
            fn read_one(&mut self, id: u8, r: &mut Reader) -> Result<(), DecodeError> {
                match id {
                    $($id => {
                        if self.$field.is_some() {
                            return Err(DecodeError::DuplicateProperty(id));
                        }
                        self.$field = Some(<$ty as Value>::read(r, id)?);
                    })*
                    SUBSCRIPTION_IDENTIFIER => {
                        let value = r.varint()?;
                        if value == 0 {
                            return Err(DecodeError::InvalidPropertyValue { id, value });
                        }
                        self.subscription_identifiers.push(value);
                    }
                    USER_PROPERTY => {
                        let name = r.string()?;
                        let value = r.string()?;
                        self.user_properties.push((name, value));
                    }
                    _ => return Err(DecodeError::UnknownProperty(id)),
                }
                Ok(())
            }

            /// Bytes of the property list without its length prefix.
            fn body_len(&self) -> usize {
                let mut len = 0;
                $(if let Some(value) = &self.$field {
                    len += 1 + value.wire_len();
                })*
                for id in &self.subscription_identifiers {
                    len += 1 + crate::wire::varint_len(*id as usize);
                }
                for (name, value) in &self.user_properties {
                    len += 1 + 4 + name.len() + value.len();
                }
                len
            }

            fn check_lengths(&self) -> Result<(), EncodeError> {
                $(if let Some(value) = &self.$field {
                    value.check()?;
                })*
                for (name, value) in &self.user_properties {
                    check_field(name.len())?;
                    check_field(value.len())?;
                }
                Ok(())
            }

            fn write_body(&self, dst: &mut BytesMut) {
                $(if let Some(value) = &self.$field {
                    dst.put_u8($id);
                    value.write(dst);
                })*
                for id in &self.subscription_identifiers {
                    dst.put_u8(SUBSCRIPTION_IDENTIFIER);
                    put_varint(dst, *id as usize);
                }
                for (name, value) in &self.user_properties {
                    dst.put_u8(USER_PROPERTY);
                    put_binary(dst, name.as_bytes());
                    put_binary(dst, value.as_bytes());
                }
            }
        }
    };
}

properties! {
    // Declared in the order they are written. Message properties keep their id order; CONNACK's
    // come in Mosquitto's order (Server Keep Alive, Topic Alias Maximum, Assigned Client
    // Identifier, authentication, Retain Available, Maximum Packet Size, Receive Maximum,
    // Maximum QoS), so that a client comparing bytes sees the same CONNACK for the same settings.
    /// 0x01 Payload Format Indicator: `true` means the payload is UTF-8.
    0x01 payload_format_indicator: bool, in MESSAGE;
    /// 0x02 Message Expiry Interval in seconds.
    0x02 message_expiry_interval: u32, in MESSAGE;
    /// 0x03 Content Type (a MIME type, by convention).
    0x03 content_type: ByteString, in MESSAGE;
    /// 0x08 Response Topic for request/response.
    0x08 response_topic: ByteString, in MESSAGE;
    /// 0x09 Correlation Data for request/response.
    0x09 correlation_data: Bytes, in MESSAGE;
    /// 0x11 Session Expiry Interval in seconds; 0xFFFFFFFF never expires.
    0x11 session_expiry_interval: u32, in ctx(&[Connect, ConnAck, Disconnect]);
    /// 0x13 Server Keep Alive, overriding the client's keep alive.
    0x13 server_keep_alive: u16, in ctx(&[ConnAck]);
    /// 0x22 Topic Alias Maximum.
    0x22 topic_alias_maximum: u16, in ctx(&[Connect, ConnAck]);
    /// 0x12 Assigned Client Identifier, when the server chose the id.
    0x12 assigned_client_identifier: ByteString, in ctx(&[ConnAck]);
    /// 0x15 Authentication Method for enhanced authentication.
    0x15 authentication_method: ByteString, in ctx(&[Connect, ConnAck, Auth]);
    /// 0x16 Authentication Data.
    0x16 authentication_data: Bytes, in ctx(&[Connect, ConnAck, Auth]);
    /// 0x17 Request Problem Information: may reason strings be sent.
    0x17 request_problem_information: bool, in ctx(&[Connect]);
    /// 0x18 Will Delay Interval in seconds.
    0x18 will_delay_interval: u32, in ctx(&[Will]);
    /// 0x19 Request Response Information.
    0x19 request_response_information: bool, in ctx(&[Connect]);
    /// 0x25 Retain Available.
    0x25 retain_available: bool, in ctx(&[ConnAck]);
    /// 0x27 Maximum Packet Size the sender accepts (non-zero).
    0x27 maximum_packet_size: u32, in ctx(&[Connect, ConnAck]);
    /// 0x21 Receive Maximum: unacknowledged QoS 1/2 PUBLISHes accepted at once (non-zero).
    0x21 receive_maximum: u16, in ctx(&[Connect, ConnAck]);
    /// 0x24 Maximum QoS the server supports.
    0x24 maximum_qos: QoS, in ctx(&[ConnAck]);
    /// 0x1A Response Information.
    0x1A response_information: ByteString, in ctx(&[ConnAck]);
    /// 0x1C Server Reference, for redirection.
    0x1C server_reference: ByteString, in ctx(&[ConnAck, Disconnect]);
    /// 0x1F Reason String, human-readable.
    0x1F reason_string: ByteString, in REASON_STRING;
    /// 0x23 Topic Alias (non-zero).
    0x23 topic_alias: u16, in ctx(&[Publish]);
    /// 0x28 Wildcard Subscription Available.
    0x28 wildcard_subscription_available: bool, in ctx(&[ConnAck]);
    /// 0x29 Subscription Identifiers Available.
    0x29 subscription_identifiers_available: bool, in ctx(&[ConnAck]);
    /// 0x2A Shared Subscription Available.
    0x2A shared_subscription_available: bool, in ctx(&[ConnAck]);
}

impl Properties {
    /// Whether no property is set.
    pub fn is_empty(&self) -> bool {
        self.body_len() == 0
    }

    /// Reads a property list (length, then properties) valid in `context`.
    pub(crate) fn read(r: &mut Reader, context: Context) -> Result<Properties, DecodeError> {
        let len = r.varint()? as usize;
        let mut r = Reader::new(r.bytes(len)?);
        let mut props = Properties::default();
        while r.remaining() > 0 {
            let id = r.varint()?;
            let id = u8::try_from(id).map_err(|_| DecodeError::UnknownProperty(0xff))?;
            let mask = allowed(id).ok_or(DecodeError::UnknownProperty(id))?;
            if mask & (1 << context as u16) == 0 {
                return Err(DecodeError::PropertyNotAllowed { id, context: context.name() });
            }
            if id == SUBSCRIPTION_IDENTIFIER
                && context == Context::Subscribe
                && !props.subscription_identifiers.is_empty()
            {
                return Err(DecodeError::DuplicateProperty(id));
            }
            props.read_one(id, &mut r)?;
        }
        props.check_values()?;
        Ok(props)
    }

    /// Values the spec forbids even though they fit the type.
    fn check_values(&self) -> Result<(), DecodeError> {
        let zero = |id: u8, value: Option<u32>| match value {
            Some(0) => Err(DecodeError::InvalidPropertyValue { id, value: 0 }),
            _ => Ok(()),
        };
        zero(0x21, self.receive_maximum.map(u32::from))?; // [MQTT-3.1.2-22]
        zero(0x23, self.topic_alias.map(u32::from))?; // [MQTT-3.3.2-8]
        zero(0x27, self.maximum_packet_size)?; // [MQTT-3.1.2-24]
        Ok(())
    }

    /// Encoded size including the variable byte integer length prefix.
    pub(crate) fn encoded_len(&self) -> usize {
        let body = self.body_len();
        crate::wire::varint_len(body) + body
    }

    pub(crate) fn validate_for_encode(&self) -> Result<(), EncodeError> {
        self.check_lengths()?;
        if let Some(id) = self.subscription_identifiers.iter().find(|id| **id > MAX_VARINT) {
            return Err(EncodeError::PacketTooLarge(*id as usize));
        }
        Ok(())
    }

    pub(crate) fn write(&self, dst: &mut BytesMut) {
        put_varint(dst, self.body_len());
        self.write_body(dst);
    }
}
